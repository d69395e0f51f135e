//! The records the state machine keeps.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Arc;
use weir_common::image::ImageInfo;
use weir_common::plan::{Phase, PlanSummary};
use weir_common::spec::AppSpec;

pub use weir_common::physical::{PeId, Placement};

/// PE -> the UUIDs of the GPUs allocated to it, one per requested slice.
pub type Gpus = BTreeMap<PeId, Vec<String>>;

/// New PE -> the old PEs whose state it takes over at an upgrade's switch barrier.
pub type Handoff = BTreeMap<PeId, Vec<PeId>>;

/// Lifecycle of an app.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AppState {
    /// Accepted; PEs are being placed and started.
    Submitted,
    /// Running its current version.
    Running,
    /// An upgrade operation is in progress.
    Upgrading,
    /// Cancelled by a user; kept for history.
    Cancelled,
    /// Failed beyond recovery.
    Failed,
    /// Ran to its end: every source finished and every PE stopped once its inputs
    /// ended. Its resources are freed; what its PEs last reported is kept
    /// ([`AppRecord::finished`]).
    Finished,
}

impl AppState {
    /// Whether the app still runs (or is about to).
    pub fn is_live(self) -> bool {
        matches!(self, Self::Submitted | Self::Running | Self::Upgrading)
    }
}

/// One app and all its versions.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AppRecord {
    /// Unique name.
    pub name: String,
    /// Owning tenant.
    pub tenant: String,
    /// Its lifecycle apart from upgrades: never `Upgrading`, which is derived from
    /// `upgrade` (read [`AppRecord::state`]). Stored as `state`, as before; records
    /// written when `Upgrading` was stored still read right.
    #[serde(rename = "state")]
    pub(crate) lifecycle: AppState,
    /// Version numbers start at 1; `versions[i].version == i + 1`. Shared: a version
    /// never changes once stored, so copying the record (as every change to a record
    /// that a reader still holds does) copies no spec.
    pub versions: Vec<Arc<AppVersion>>,
    /// The version that runs (or ran).
    pub current_version: u32,
    /// When v1 was committed (leader clock, ms since the epoch).
    pub created_at_ms: u64,
    /// When the app was cancelled, if it was.
    pub cancelled_at_ms: Option<u64>,
    /// When the scheduler last placed it whole (from an empty placement); `None` until
    /// it first is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub placed_at_ms: Option<u64>,
    /// When it last entered the queue, if not at submit (`created_at_ms`): a preempted
    /// app queues again from its preemption.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queued_at_ms: Option<u64>,
    /// Where each PE runs (empty until the scheduler places the app).
    pub placement: Placement,
    /// Checkpoints and recoveries.
    #[serde(default)]
    pub checkpoints: AppCheckpoints,
    /// The GPUs allocated to each PE placed with GPUs: device UUIDs, one per requested
    /// slice. Kept in Raft so every leader deducts them from the devices' free memory.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub gpus: Gpus,
    /// The upgrade operation running now, if any (its id in `ClusterState::upgrades`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upgrade: Option<u64>,
    /// When the app finished and what its PEs last reported (set with
    /// [`AppState::Finished`]: the workers forget the PEs once they are stopped).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished: Option<FinishedRecord>,
    /// The request id of the cancel that cancelled the app, if it carried one: a
    /// client repeating that cancel gets its first answer, not a refusal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cancel_request_id: Option<String>,
}

/// An app's end: when, and each PE's final figures.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct FinishedRecord {
    /// When the leader saw every PE stopped (leader clock, ms since the epoch).
    pub at_ms: u64,
    /// PE id -> its final report.
    pub pes: BTreeMap<PeId, FinalPe>,
}

/// One PE's last report before its app finished.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FinalPe {
    /// The worker it ran on.
    pub worker: String,
    /// Records received on all inputs.
    pub records_in: u64,
    /// Records emitted on all outputs.
    pub records_out: u64,
    /// Bytes received.
    pub bytes_in: u64,
    /// Bytes emitted.
    pub bytes_out: u64,
    /// For `sink.verify` PEs: what they saw.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verify: Option<FinalVerify>,
}

/// A `sink.verify` PE's final audit (the fields of `weir.v1.VerifySummary`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FinalVerify {
    /// Records received, duplicates included.
    pub records: u64,
    /// Distinct (source, seq) pairs.
    pub distinct: u64,
    /// Records received more than once.
    pub duplicates: u64,
    /// Records expected, when set.
    pub expected: Option<u64>,
    /// Whether `distinct` reached `expected`.
    pub complete: bool,
    /// Gaps below the highest seq seen.
    pub missing_below_max: u64,
    /// Distinct sources.
    pub sources: u32,
    /// Whether every input ended.
    pub inputs_ended: bool,
    /// Settled gaps (loss).
    pub missing_settled: u64,
}

/// How many complete checkpoints an app keeps (older ones are forgotten and their
/// snapshots garbage-collected by the workers).
pub const KEEP_CHECKPOINTS: usize = 3;

/// How many recoveries an app remembers.
pub const KEEP_RECOVERIES: usize = 16;

/// Checkpointing and recovery bookkeeping of one app.
///
/// A *region* is a connected part of the app's DAG: a failure restarts only the
/// regions it touches. All operators of a region share one recovery *attempt*; workers
/// name every channel by its PEs and that attempt, so PEs of an older attempt can never
/// feed PEs of a newer one.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct AppCheckpoints {
    /// Recovery attempt per operator; absent means 0.
    pub attempts: BTreeMap<String, u64>,
    /// The checkpoint each operator restores from at its current attempt; absent means
    /// empty state.
    pub restore: BTreeMap<String, u64>,
    /// The incarnation of the worker each PE was placed on when it was placed: a
    /// different incarnation now means the worker restarted and the PE lost its state.
    pub incarnations: BTreeMap<PeId, u64>,
    /// The last checkpoint id begun (ids increase, never reused).
    pub last_id: u64,
    /// The checkpoint begun and neither completed nor abandoned.
    pub in_flight: Option<InFlightCheckpoint>,
    /// The last [`KEEP_CHECKPOINTS`] complete checkpoints, oldest first.
    pub complete: Vec<CheckpointRecord>,
    /// The last [`KEEP_RECOVERIES`] recoveries, oldest first.
    pub recoveries: Vec<RecoveryRecord>,
}

impl AppCheckpoints {
    /// The attempt of `op`.
    pub fn attempt(&self, op: &str) -> u64 {
        self.attempts.get(op).copied().unwrap_or(0)
    }

    /// The newest complete checkpoint, if any.
    pub fn latest(&self) -> Option<&CheckpointRecord> {
        self.complete.last()
    }

    /// The oldest checkpoint whose snapshots a restore may still load: the oldest kept
    /// complete checkpoint, or an older one an incremental piece of a kept one builds
    /// on (its chain, or its seed: predecessors' snapshots of an upgrade's switch).
    /// `None` without a complete checkpoint.
    pub fn keep_snapshots_from(&self) -> Option<u64> {
        let oldest = self.complete.first()?.id;
        let links = self
            .complete
            .iter()
            .flat_map(|c| c.pieces.values())
            .filter_map(PieceRecord::oldest_link);
        Some(links.fold(oldest, u64::min))
    }
}

/// A checkpoint that has begun.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InFlightCheckpoint {
    /// Its id.
    pub id: u64,
    /// When it was triggered (leader clock).
    pub started_at_ms: u64,
}

/// A complete checkpoint: every PE of the app snapshotted its state at barrier `id`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckpointRecord {
    /// Its id.
    pub id: u64,
    /// When it was triggered.
    pub started_at_ms: u64,
    /// When its completion was committed.
    pub completed_at_ms: u64,
    /// The longest barrier alignment of any PE, ms.
    pub max_alignment_ms: u64,
    /// The stored snapshot of every PE with state (PEs without state have none).
    pub pieces: BTreeMap<PeId, PieceRecord>,
    /// For an upgrade's switch checkpoint: every new PE whose state is the merge of
    /// old PEs' pieces, with those PEs (a restore to this checkpoint loads them).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub handoff: Handoff,
}

impl CheckpointRecord {
    /// Total state size, bytes.
    pub fn size_bytes(&self) -> u64 {
        self.pieces.values().map(|p| p.size_bytes).sum()
    }

    /// Whether a restore to this checkpoint may find a copy of every snapshot it
    /// loads (each piece, its chain and its seed) on a worker `up` accepts. A
    /// snapshot whose copies were not recorded counts as readable: only copies known
    /// to be all on workers `up` refuses rule it out.
    pub fn readable(&self, up: impl Fn(&str) -> bool) -> bool {
        let has = |replicas: &[String]| replicas.is_empty() || replicas.iter().any(|w| up(w));
        self.pieces.values().all(|p| {
            has(&p.replicas)
                && p.chain.iter().all(|l| has(&l.replicas))
                && p.seed.iter().all(|s| has(&s.link.replicas))
        })
    }
}

/// Where one PE's snapshot of a checkpoint is.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PieceRecord {
    /// Size, bytes.
    pub size_bytes: u64,
    /// CRC-32C of the snapshot.
    pub crc32c: u32,
    /// Workers holding a copy.
    pub replicas: Vec<String>,
    /// For an incremental snapshot (what changed since the PE's previous one): the
    /// snapshots a restore applies it over, the whole one first. Empty: whole.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub chain: Vec<LinkRecord>,
    /// For the increments of a PE that took over state at an upgrade's switch and has
    /// taken no whole snapshot since: its predecessors' whole snapshots of that switch
    /// checkpoint, which a restore merges (keeping the PE's key groups) before `chain`
    /// (the first increment builds on them). Empty otherwise.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub seed: Vec<SeedRecord>,
}

impl PieceRecord {
    /// The piece as a link of a later incremental piece's chain.
    pub fn as_link(&self, checkpoint_id: u64) -> LinkRecord {
        LinkRecord {
            checkpoint_id,
            size_bytes: self.size_bytes,
            crc32c: self.crc32c,
            replicas: self.replicas.clone(),
        }
    }

    /// Bytes a restore of this piece loads: the piece, its chain and its seed.
    pub fn restore_bytes(&self) -> u64 {
        self.size_bytes
            + self.chain.iter().map(|l| l.size_bytes).sum::<u64>()
            + self.seed.iter().map(|s| s.link.size_bytes).sum::<u64>()
    }

    /// The oldest checkpoint whose snapshots a restore of this piece loads, when it
    /// builds on any.
    pub fn oldest_link(&self) -> Option<u64> {
        let seed = self.seed.iter().map(|s| s.link.checkpoint_id);
        seed.chain(self.chain.iter().map(|l| l.checkpoint_id)).min()
    }
}

/// A whole snapshot of an upgrade's predecessor that a successor's increments build
/// on (see [`PieceRecord::seed`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeedRecord {
    /// The predecessor.
    pub pe: PeId,
    /// Its piece of the switch checkpoint.
    pub link: LinkRecord,
}

/// One snapshot an incremental piece builds on: a piece of an earlier checkpoint,
/// which may no longer be among the app's kept complete checkpoints.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkRecord {
    /// The checkpoint it was taken at.
    pub checkpoint_id: u64,
    /// Size, bytes.
    pub size_bytes: u64,
    /// CRC-32C of the snapshot.
    pub crc32c: u32,
    /// Workers holding a copy.
    pub replicas: Vec<String>,
}

/// One recovery of a region.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecoveryRecord {
    /// When (leader clock).
    pub at_ms: u64,
    /// The attempt it started.
    pub attempt: u64,
    /// The checkpoint restored; 0 for empty state.
    pub checkpoint_id: u64,
    /// The operators restarted.
    pub operators: Vec<String>,
    /// Why.
    pub reason: String,
}

impl AppRecord {
    /// Its lifecycle state: `Upgrading` while an upgrade operation runs.
    pub fn state(&self) -> AppState {
        match self.lifecycle {
            s if s.is_live() && self.upgrade.is_some() => AppState::Upgrading,
            // Stored by masters before the state was derived; the upgrade ended.
            AppState::Upgrading => AppState::Running,
            s => s,
        }
    }

    /// When it entered the queue it waits in (or last waited in).
    pub fn queued_at(&self) -> u64 {
        self.queued_at_ms.unwrap_or(self.created_at_ms)
    }

    /// The current version.
    pub fn current(&self) -> &AppVersion {
        &self.versions[self.current_version as usize - 1]
    }

    /// Every operator of the current version connected to one of `ops` by streams
    /// (either direction), sorted: what restarts together from one checkpoint.
    pub fn region(&self, ops: &std::collections::BTreeSet<String>) -> Vec<String> {
        let spec = &self.current().spec;
        let mut region = ops.clone();
        let mut grew = true;
        while grew {
            grew = false;
            for s in &spec.streams {
                let (a, b) = (region.contains(&s.from), region.contains(&s.to));
                if a != b {
                    region.insert(if a { s.to.clone() } else { s.from.clone() });
                    grew = true;
                }
            }
        }
        region.into_iter().collect()
    }
}

/// One version of an app.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AppVersion {
    /// 1-based version number.
    pub version: u32,
    /// The validated model.
    pub spec: AppSpec,
    /// The text the user submitted, verbatim.
    pub spec_text: String,
    /// When it was committed.
    pub submitted_at_ms: u64,
    /// The request id of the submit (version 1) or upgrade that stored it; empty when
    /// the client gave none. A client repeating that request (e.g. after a master
    /// died mid-call) gets this version back instead of a refusal or a second one.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub request_id: String,
    /// Which template and base image generated which operator of `spec` (the
    /// operators an app's spec wrote as `template:`); empty for none.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub generated: weir_common::catalog::Provenances,
    /// The tenant's signature of `spec_text`, checked before it was proposed; `None`
    /// for an unsigned version (allowed only where the tenant's policy allows it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<SpecSignature>,
}

/// A tenant's Ed25519 signature of a spec's text (`weir_security::sign`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpecSignature {
    /// The id of the tenant key that signed.
    pub key_id: String,
    /// The signature.
    pub signature: Vec<u8>,
}

/// A tenant.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TenantRecord {
    /// Name.
    pub name: String,
    /// Live apps of the tenant.
    pub apps: u32,
    /// What an admin registered for it; `None`: never registered (it exists because
    /// one of its apps was submitted with security off, where nothing is required).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<TenantPolicy>,
    /// The most its live apps may hold at once, set by an admin; `None`: no limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quota: Option<Quota>,
}

/// Limits on what one tenant's placed apps hold together. Each absent limit is no
/// limit. An app that alone passes a limit is refused at submit; one that would pass
/// it beside the tenant's running apps waits in the queue until they free enough.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Quota {
    /// Cores.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<f64>,
    /// Memory, MiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_mb: Option<u64>,
    /// GPU slices (each requested slice counts one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpus: Option<u64>,
    /// GPU memory, MiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu_memory_mb: Option<u64>,
    /// PEs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pes: Option<u64>,
}

/// What an admin registered for a tenant: the keys its specs are signed with, whether
/// a signature is required, and what its apps may do.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TenantPolicy {
    /// Ed25519 public keys (32 bytes) by key id.
    pub keys: BTreeMap<String, Vec<u8>>,
    /// Whether submissions and upgrades need a valid signature.
    pub require_signature: bool,
    /// What its apps may do.
    pub capabilities: weir_common::spec::Capabilities,
}

/// A GPU as a worker reports it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GpuRecord {
    /// Device UUID.
    pub uuid: String,
    /// Vendor name.
    pub vendor: String,
    /// Model name.
    pub model: String,
    /// Total memory, MiB.
    pub memory_total_mb: u64,
    /// True if declared in config rather than discovered.
    pub declared: bool,
}

/// Liveness of a worker.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WorkerState {
    /// Heartbeating.
    Alive,
    /// Missed heartbeats past the timeout.
    Lost,
}

/// A registered worker.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WorkerRecord {
    /// Unique id.
    pub id: String,
    /// gRPC address of its control service.
    pub control_address: String,
    /// TCP address of its data plane.
    pub data_address: String,
    /// CPU cores offered.
    pub cpu_cores: f64,
    /// Memory offered, MiB.
    pub memory_mb: u64,
    /// Accelerators.
    pub gpus: Vec<GpuRecord>,
    /// Free-form labels, e.g. pool membership.
    pub labels: BTreeMap<String, String>,
    /// Liveness.
    pub state: WorkerState,
    /// Increases every time the worker process registers anew.
    pub incarnation: u64,
    /// When it (last) registered.
    pub registered_at_ms: u64,
    /// When its liveness last changed.
    pub state_since_ms: u64,
    /// The container images it holds, bounded ([`weir_common::image::bound`]).
    /// Replicated so every leader places container PEs at once, and written only when
    /// the list changes (heartbeats say when it has not). Absent in records written
    /// before images were reported. Shared: the scheduler's view of the worker points
    /// at the same list.
    #[serde(default, skip_serializing_if = "no_images")]
    pub images: Arc<Vec<ImageInfo>>,
    /// Registries it pulls absent images from (`weir-worker --pull-from`, checked by
    /// [`weir_common::image::check_registries`]); absent in records written before.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub registries: Vec<String>,
}

fn no_images(images: &Arc<Vec<ImageInfo>>) -> bool {
    images.is_empty()
}

/// An upgrade operation.
///
/// Stored in Raft snapshots through [`UpgradeRecordWire`], the flat form every master
/// has written so far, so snapshots taken before the lifecycle was typed still load.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(from = "UpgradeRecordWire", into = "UpgradeRecordWire")]
pub struct UpgradeRecord {
    /// Operation id.
    pub id: u64,
    /// App upgraded.
    pub app: String,
    /// Version upgraded from.
    pub from_version: u32,
    /// Version upgraded to.
    pub to_version: u32,
    /// Where it is in its life.
    pub stage: UpgradeStage,
    /// Plan counts.
    pub summary: PlanSummary,
    /// When it started.
    pub started_at_ms: u64,
    /// The switch barrier: a checkpoint id reserved when the upgrade began.
    pub barrier: u64,
    /// Where every PE of the new version runs (kept PEs where they are, new ones
    /// placed when the upgrade began).
    pub placement: Placement,
    /// GPUs allocated to new PEs.
    pub gpus: Gpus,
    /// New PE -> the old PEs whose state it takes over (at the switch barrier).
    pub handoff: Handoff,
}

/// The lifecycle of an upgrade: one phase at a time, then an end.
#[derive(Clone, Debug, PartialEq)]
pub enum UpgradeStage {
    /// Running `phase`, entered at `since_ms`.
    Running {
        /// The phase running now.
        phase: Phase,
        /// When it began.
        since_ms: u64,
    },
    /// Ended at `at_ms`.
    Ended {
        /// Completed or rolled back.
        outcome: UpgradeOutcome,
        /// When.
        at_ms: u64,
        /// The last phase it finished (`Cleanup` once completed; a rollback can come
        /// before any).
        completed: Option<Phase>,
        /// What it cost: measured when it completes.
        result: Option<UpgradeResultRecord>,
    },
}

impl UpgradeRecord {
    /// The phase running now; `None` once it ended.
    pub fn phase(&self) -> Option<Phase> {
        match self.stage {
            UpgradeStage::Running { phase, .. } => Some(phase),
            UpgradeStage::Ended { .. } => None,
        }
    }

    /// How it ended, once it has.
    pub fn outcome(&self) -> Option<&UpgradeOutcome> {
        match &self.stage {
            UpgradeStage::Running { .. } => None,
            UpgradeStage::Ended { outcome, .. } => Some(outcome),
        }
    }

    /// When it ended, once it has.
    pub fn finished_at_ms(&self) -> Option<u64> {
        match self.stage {
            UpgradeStage::Running { .. } => None,
            UpgradeStage::Ended { at_ms, .. } => Some(at_ms),
        }
    }

    /// What it cost, once it completed.
    pub fn result(&self) -> Option<&UpgradeResultRecord> {
        match &self.stage {
            UpgradeStage::Running { .. } => None,
            UpgradeStage::Ended { result, .. } => result.as_ref(),
        }
    }

    /// Moves a running upgrade from its phase to the next, `next`, at `at_ms`.
    pub fn enter(&mut self, next: Phase, at_ms: u64) {
        self.stage = UpgradeStage::Running {
            phase: next,
            since_ms: at_ms,
        };
    }

    /// Ends it at `at_ms`; the last phase it finished is the one before the phase it
    /// was in (all of them once completed).
    pub fn end(
        &mut self,
        outcome: UpgradeOutcome,
        at_ms: u64,
        result: Option<UpgradeResultRecord>,
    ) {
        let completed = match (&outcome, &self.stage) {
            (UpgradeOutcome::Completed, _) => Some(Phase::Cleanup),
            (_, UpgradeStage::Running { phase, .. }) => phase.before(),
            (_, UpgradeStage::Ended { completed, .. }) => *completed,
        };
        self.stage = UpgradeStage::Ended {
            outcome,
            at_ms,
            completed,
            result,
        };
    }
}

/// [`UpgradeRecord`] as it is stored: a lifecycle spread over optional fields, the
/// format of every snapshot written before [`UpgradeStage`]. Written from the typed
/// record (so it holds only legal combinations); read leniently, since older masters
/// wrote records without `phase`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct UpgradeRecordWire {
    id: u64,
    app: String,
    from_version: u32,
    to_version: u32,
    completed_phase: Option<Phase>,
    outcome: Option<UpgradeOutcome>,
    summary: PlanSummary,
    started_at_ms: u64,
    finished_at_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    phase: Option<Phase>,
    #[serde(default)]
    phase_started_at_ms: u64,
    #[serde(default)]
    barrier: u64,
    #[serde(default)]
    placement: Placement,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    gpus: Gpus,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    handoff: Handoff,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    result: Option<UpgradeResultRecord>,
}

impl From<UpgradeRecordWire> for UpgradeRecord {
    fn from(w: UpgradeRecordWire) -> Self {
        let stage = match w.outcome {
            Some(outcome) => UpgradeStage::Ended {
                outcome,
                at_ms: w.finished_at_ms.unwrap_or(w.started_at_ms),
                completed: w.completed_phase,
                result: w.result,
            },
            None => UpgradeStage::Running {
                // Records from before `phase` was stored: the phase after the last
                // one completed.
                phase: w.phase.unwrap_or(match w.completed_phase {
                    None => Phase::Prepare,
                    Some(Phase::Prepare) => Phase::Switch,
                    Some(_) => Phase::Cleanup,
                }),
                since_ms: if w.phase.is_some() {
                    w.phase_started_at_ms
                } else {
                    w.started_at_ms
                },
            },
        };
        UpgradeRecord {
            id: w.id,
            app: w.app,
            from_version: w.from_version,
            to_version: w.to_version,
            stage,
            summary: w.summary,
            started_at_ms: w.started_at_ms,
            barrier: w.barrier,
            placement: w.placement,
            gpus: w.gpus,
            handoff: w.handoff,
        }
    }
}

impl From<UpgradeRecord> for UpgradeRecordWire {
    fn from(u: UpgradeRecord) -> Self {
        let (completed_phase, outcome, finished_at_ms, phase, phase_started_at_ms, result) =
            match u.stage {
                UpgradeStage::Running { phase, since_ms } => {
                    (phase.before(), None, None, Some(phase), since_ms, None)
                }
                UpgradeStage::Ended {
                    outcome,
                    at_ms,
                    completed,
                    result,
                } => (completed, Some(outcome), Some(at_ms), None, at_ms, result),
            };
        UpgradeRecordWire {
            id: u.id,
            app: u.app,
            from_version: u.from_version,
            to_version: u.to_version,
            completed_phase,
            outcome,
            summary: u.summary,
            started_at_ms: u.started_at_ms,
            finished_at_ms,
            phase,
            phase_started_at_ms,
            barrier: u.barrier,
            placement: u.placement,
            gpus: u.gpus,
            handoff: u.handoff,
            result,
        }
    }
}

/// What an upgrade cost, as measured by the workers.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpgradeResultRecord {
    /// PEs started, drained or rewired.
    pub pes_touched: u32,
    /// Records missing at `sink.verify` sinks (gaps below the highest seq seen).
    pub records_lost: u64,
    /// Records seen twice at `sink.verify` sinks.
    pub records_duplicated: u64,
    /// Longest gap between batches at any sink around the switch, ms.
    pub longest_stall_ms: u64,
    /// Bytes of state the successors pre-copied before the switch.
    #[serde(default)]
    pub state_precopied_bytes: u64,
    /// Bytes of state they took at the switch barrier, as reported by the end.
    #[serde(default)]
    pub state_barrier_bytes: u64,
    /// Successors that let the switch begin still behind their predecessors' rounds,
    /// as "PE: why".
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub successors_behind: Vec<String>,
}

/// How an upgrade ended.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "outcome", content = "reason")]
pub enum UpgradeOutcome {
    /// The app runs the new version.
    Completed,
    /// The app runs the old version again; why.
    RolledBack(String),
}
