//! Commands proposed through Raft, the checks that refuse them, and their effects.
//!
//! This file holds the command type, its answers and refusals, and the two dispatches
//! (`check`, `apply_checked`); each family of commands keeps, for each command, its
//! check next to its effect: [`apps`], [`workers`], [`checkpoints`], [`upgrades`],
//! [`tenants`] (the catalog's are in `state/catalog.rs`).

mod apps;
mod checkpoints;
mod tenants;
mod upgrades;

pub use apps::update_gpus;
pub use upgrades::{check_live_for_upgrade, check_upgradable};
mod workers;

use super::catalog;
use super::*;
use std::sync::Arc;
use weir_common::image::{bound, ImageInfo};
use weir_common::physical::PeId;
use weir_common::plan::Phase;
use weir_common::spec::AppSpec;

/// A change to the cluster state, proposed by the leader and applied by every master.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case")]
pub enum Command {
    /// Store v1 of a new app.
    SubmitApp {
        /// The validated model.
        spec: AppSpec,
        /// The submitted text.
        spec_text: String,
        /// Leader clock.
        at_ms: u64,
        /// The client's idempotency key; empty for none. A repeat of an applied
        /// request answers that request's outcome and changes nothing (see
        /// [`ClusterState::repeated`]). Absent in entries written before it existed.
        #[serde(default, skip_serializing_if = "String::is_empty")]
        request_id: String,
        /// Which template and base image generated which operator of `spec`; the
        /// commit is refused if one of them went away since. Absent when none did.
        #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
        generated: weir_common::catalog::Provenances,
        /// The tenant's signature of `spec_text`, verified before proposing.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        signature: Option<SpecSignature>,
    },
    /// A running app ran to its end (every PE of its placement reported stopped after
    /// its inputs ended): it is marked finished and its resources freed.
    FinishApp {
        /// App name.
        app: String,
        /// Leader clock.
        at_ms: u64,
        /// Each PE's final report.
        pes: BTreeMap<PeId, FinalPe>,
    },
    /// Cancel a live app.
    CancelApp {
        /// App name.
        name: String,
        /// Leader clock.
        at_ms: u64,
        /// The client's idempotency key; empty for none. A repeat of an applied
        /// request answers that request's outcome and changes nothing (see
        /// [`ClusterState::repeated`]). Absent in entries written before it existed.
        #[serde(default, skip_serializing_if = "String::is_empty")]
        request_id: String,
    },
    /// A worker (re-)registers.
    RegisterWorker {
        /// The worker as it describes itself.
        worker: WorkerRecord,
    },
    /// A worker's liveness changed (the leader saw heartbeats stop or resume).
    SetWorkerState {
        /// Worker id.
        id: String,
        /// New state.
        state: WorkerState,
        /// Leader clock.
        at_ms: u64,
    },
    /// The scheduler placed (some of) an app's PEs.
    SetPlacement {
        /// App name.
        app: String,
        /// PE id -> worker id; replaces the previous placement.
        placement: Placement,
        /// PE id -> GPU UUIDs for PEs placed anew with GPUs (kept PEs keep theirs).
        #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
        gpus: Gpus,
        /// Leader clock (0 in entries written before it existed).
        #[serde(default, skip_serializing_if = "is_zero")]
        at_ms: u64,
    },
    /// The leader triggers checkpoint `id` of an app.
    BeginCheckpoint {
        /// App name.
        app: String,
        /// The checkpoint id: above every id begun before.
        id: u64,
        /// Leader clock.
        at_ms: u64,
    },
    /// Every PE of the app reported its snapshot of the in-flight checkpoint `id`.
    CompleteCheckpoint {
        /// App name.
        app: String,
        /// The checkpoint id.
        id: u64,
        /// Leader clock.
        at_ms: u64,
        /// The longest alignment, ms.
        max_alignment_ms: u64,
        /// The snapshot of every PE with state.
        pieces: BTreeMap<PeId, PieceRecord>,
    },
    /// The in-flight checkpoint `id` will not complete (timeout, recovery, new leader).
    AbandonCheckpoint {
        /// App name.
        app: String,
        /// The checkpoint id.
        id: u64,
    },
    /// Restart the regions holding `operators` from checkpoint `checkpoint_id` (0:
    /// empty state) under a new attempt, with `placement` as the app's placement.
    Recover {
        /// App name.
        app: String,
        /// Every operator of the affected regions.
        operators: Vec<String>,
        /// The checkpoint to restore; 0 for empty state.
        checkpoint_id: u64,
        /// The app's whole placement afterwards (lost PEs moved).
        placement: Placement,
        /// Why, for humans.
        reason: String,
        /// Leader clock.
        at_ms: u64,
        /// A complete checkpoint found unreadable: forgotten, so no later recovery
        /// picks it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        drop_checkpoint: Option<u64>,
        /// PE id -> GPU UUIDs for PEs placed anew with GPUs.
        #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
        gpus: Gpus,
    },
    /// Start an online upgrade: store the new version, reserve the switch barrier,
    /// record the new version's placement. The app runs its old version until the
    /// switch completes.
    BeginUpgrade {
        /// The validated new model (same name).
        spec: AppSpec,
        /// The submitted text.
        spec_text: String,
        /// Leader clock.
        at_ms: u64,
        /// Where every PE of the new version runs.
        placement: Placement,
        /// GPUs of new PEs.
        #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
        gpus: Gpus,
        /// New PE -> the old PEs whose state it takes over.
        #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
        handoff: Handoff,
        /// Plan counts.
        summary: weir_common::plan::PlanSummary,
        /// The client's idempotency key; empty for none. A repeat of an applied
        /// request answers that request's outcome and changes nothing (see
        /// [`ClusterState::repeated`]). Absent in entries written before it existed.
        #[serde(default, skip_serializing_if = "String::is_empty")]
        request_id: String,
        /// Which template and base image generated which operator of `spec`; the
        /// commit is refused if one of them went away since. Absent when none did.
        #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
        generated: weir_common::catalog::Provenances,
        /// The tenant's signature of `spec_text`, verified before proposing.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        signature: Option<SpecSignature>,
    },
    /// Every new PE runs and every switch action is armed: the switch barrier (a
    /// checkpoint) is begun.
    UpgradeSwitch {
        /// App name.
        app: String,
        /// Operation id.
        id: u64,
        /// Leader clock.
        at_ms: u64,
    },
    /// The switch checkpoint completed: the new version is the current one.
    FinishUpgradeSwitch {
        /// App name.
        app: String,
        /// Operation id.
        id: u64,
        /// Leader clock.
        at_ms: u64,
    },
    /// Every drained PE is gone: the upgrade is done.
    CompleteUpgrade {
        /// App name.
        app: String,
        /// Operation id.
        id: u64,
        /// Leader clock.
        at_ms: u64,
        /// What it cost.
        result: UpgradeResultRecord,
    },
    /// The upgrade failed before its switch completed: the old version stays. When the
    /// switch had begun, `recover` restarts the regions it touched from the newest
    /// complete checkpoint (taken before the switch), which undoes it exactly.
    AbortUpgrade {
        /// App name.
        app: String,
        /// Operation id.
        id: u64,
        /// Leader clock.
        at_ms: u64,
        /// Why.
        reason: String,
        /// Operators to restart and the checkpoint to restore (0: empty state).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        recover: Option<(Vec<String>, u64)>,
    },
    /// Add a base image to the catalog.
    RegisterBaseImage {
        /// The image, validated.
        image: weir_common::catalog::BaseImage,
    },
    /// Remove a base image from the catalog.
    RemoveBaseImage {
        /// Its name.
        name: String,
    },
    /// Add a PE template to the catalog.
    AddTemplate {
        /// The template, validated.
        template: weir_common::catalog::Template,
    },
    /// Remove a PE template from the catalog.
    RemoveTemplate {
        /// Its name.
        name: String,
    },
    /// Register a tenant, or replace its policy.
    PutTenant {
        /// The tenant.
        name: String,
        /// Its keys, signature rule and capabilities, validated.
        policy: TenantPolicy,
    },
    /// Stop a running app to free its resources for `by`, a queued app of a higher
    /// class: the app goes back to the queue, and when placed again resumes from its
    /// latest complete checkpoint under a new attempt (as a recovery does), so nothing
    /// is lost or repeated.
    Preempt {
        /// App name.
        app: String,
        /// The app it makes room for.
        by: String,
        /// Leader clock.
        at_ms: u64,
    },
    /// Set the scheduling policy every leader uses (`None` clears it: each leader then
    /// uses its own flags).
    SetSchedulingPolicy {
        /// The policy.
        policy: Option<super::scheduling::SchedulingPolicyRecord>,
    },
    /// Set a tenant's quota (`None` lifts it).
    SetQuota {
        /// The tenant.
        tenant: String,
        /// Its limits.
        quota: Option<Quota>,
    },
    /// Several commands proposed together (see `api::propose`): each is checked and
    /// applied on its own, in order, and answered on its own.
    Batch {
        /// The commands, in the order they apply.
        cmds: Vec<Command>,
    },
    /// A worker reported a different set of container images than its record holds.
    SetWorkerImages {
        /// Worker id.
        id: String,
        /// Everything it holds now (bounded again when applied).
        images: Vec<ImageInfo>,
    },
}

impl Command {
    /// Roughly how many bytes the command takes in a log entry: a spec travels as its
    /// text and as the parsed model, each about the text's size; anything else is
    /// small. Used to bound batches (see `api::propose`).
    pub fn weight(&self) -> usize {
        const SMALL: usize = 256;
        match self {
            Command::SubmitApp { spec_text, .. } | Command::BeginUpgrade { spec_text, .. } => {
                SMALL + 3 * spec_text.len()
            }
            Command::AddTemplate { template } => {
                SMALL + serde_json::to_vec(template).map_or(0, |t| t.len())
            }
            Command::Batch { cmds } => cmds.iter().map(Command::weight).sum(),
            Command::SetWorkerImages { images, .. } => SMALL + images_weight(images),
            Command::RegisterWorker { worker } => SMALL + images_weight(&worker.images),
            _ => SMALL,
        }
    }
}

/// Bytes of references in an image list (ids, tags, digests; the rest is small).
fn images_weight(images: &[ImageInfo]) -> usize {
    images
        .iter()
        .map(|i| {
            32 + i.id.len()
                + i.tags
                    .iter()
                    .chain(&i.digests)
                    .map(String::len)
                    .sum::<usize>()
        })
        .sum()
}

/// What a successful command answers.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(tag = "ok", rename_all = "snake_case")]
pub enum Response {
    /// Done; nothing to report.
    #[default]
    Done,
    /// The app version now stored.
    AppVersion {
        /// App name.
        app: String,
        /// Its version.
        version: u32,
    },
    /// An upgrade operation began.
    UpgradeStarted {
        /// Operation id.
        id: u64,
        /// The version it upgrades to.
        version: u32,
    },
    /// The answers of a [`Command::Batch`], one per command, in order.
    Batch {
        /// Each command's own outcome.
        results: Vec<Result<Response, CommandError>>,
    },
}

impl From<catalog::CatalogError> for CommandError {
    fn from(e: catalog::CatalogError) -> Self {
        CommandError::Catalog(e)
    }
}

/// Why a command was refused. Each maps to one gRPC status code.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum CommandError {
    /// An app with that name exists (live or cancelled: names are never reused).
    #[error("app {0:?} already exists")]
    AppExists(String),
    /// No app with that name.
    #[error("app {0:?} not found")]
    AppNotFound(String),
    /// The app is not in a state that allows the command.
    #[error("app {app:?} is {state}: {why}")]
    AppState {
        /// App name.
        app: String,
        /// Its state.
        state: String,
        /// What the command needed.
        why: String,
    },
    /// No worker with that id.
    #[error("worker {0:?} not found")]
    WorkerNotFound(String),
    /// A checkpoint or recovery command that does not fit the app's state.
    #[error("{0}")]
    Checkpoint(CheckpointRefusal),
    /// An upgrade command that does not fit the app's state (another upgrade runs, or
    /// the operation is not in the phase the command needs).
    #[error("{0}")]
    Upgrade(UpgradeRefusal),
    /// A request id already used by a different request.
    #[error("request_id: {request_id:?} {why}; a new request needs a new request id")]
    RequestIdReused {
        /// The request id.
        request_id: String,
        /// What the request that used it did.
        why: String,
    },
    /// A catalog command, or a generated spec whose catalog entries went away.
    #[error("{0}")]
    Catalog(super::catalog::CatalogError),
    /// A tenant policy that breaks a rule.
    #[error("{0}")]
    Tenant(String),
    /// A spec that the state makes invalid (a start condition that could never hold).
    #[error("{0}")]
    Spec(String),
    /// A submit or upgrade its tenant's quota does not allow.
    #[error("{0}")]
    Quota(String),
    /// A scheduling policy out of bounds.
    #[error("{0}")]
    Scheduling(String),
    /// A placement names a PE the app does not have or a worker that is not alive.
    #[error("placement of {app:?}: {why}")]
    BadPlacement {
        /// App name.
        app: String,
        /// What is wrong.
        why: String,
    },
}

/// The answer an applied request got, when `cmd` repeats it (same request id, same
/// app): applying `cmd` must then change nothing and answer that again. A request id
/// that an applied request of the app used with other content is refused.
pub(super) fn repeated(s: &ClusterState, cmd: &Command) -> Result<Option<Response>, CommandError> {
    match cmd {
        Command::SubmitApp {
            spec,
            spec_text,
            request_id,
            ..
        } => match s.version_by_request(&spec.name, request_id, spec_text)? {
            Some(1) => Ok(Some(Response::AppVersion {
                app: spec.name.clone(),
                version: 1,
            })),
            Some(v) => Err(reused(
                request_id,
                format!("started the upgrade of {:?} to version {v}", spec.name),
            )),
            None => Ok(None),
        },
        Command::BeginUpgrade {
            spec,
            spec_text,
            request_id,
            ..
        } => match s.version_by_request(&spec.name, request_id, spec_text)? {
            Some(1) => Err(reused(request_id, format!("submitted app {:?}", spec.name))),
            Some(version) => Ok(Some(Response::UpgradeStarted {
                id: s.upgrade_to(&spec.name, version).map_or(0, |u| u.id),
                version,
            })),
            None => Ok(None),
        },
        Command::CancelApp {
            name, request_id, ..
        } if !request_id.is_empty() => Ok(s
            .apps
            .get(name)
            .filter(|a| a.cancel_request_id.as_deref() == Some(request_id.as_str()))
            .map(|_| Response::Done)),
        _ => Ok(None),
    }
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

fn reused(request_id: &str, why: String) -> CommandError {
    CommandError::RequestIdReused {
        request_id: request_id.to_string(),
        why: format!("already {why}"),
    }
}

pub(super) fn check(s: &ClusterState, cmd: &Command) -> Result<(), CommandError> {
    match cmd {
        Command::SubmitApp {
            spec, generated, ..
        } => apps::check_submit(s, spec, generated),
        Command::FinishApp { app, .. } => apps::check_finish(s, app),
        Command::CancelApp { name, .. } => apps::check_cancel(s, name),
        Command::SetPlacement { app, placement, .. } => apps::check_placement(s, app, placement),
        // A batch's commands are checked one by one as they apply.
        Command::RegisterWorker { .. } | Command::Batch { .. } => Ok(()),
        Command::SetWorkerState { id, .. } | Command::SetWorkerImages { id, .. } => {
            workers::check_known(s, id)
        }
        Command::BeginCheckpoint { app, id, .. } => checkpoints::check_begin(s, app, *id),
        Command::CompleteCheckpoint { app, id, .. } | Command::AbandonCheckpoint { app, id } => {
            checkpoints::check_in_flight(s, app, *id)
        }
        Command::Recover {
            app,
            operators,
            checkpoint_id,
            placement,
            ..
        } => checkpoints::check_recover(s, app, operators, *checkpoint_id, placement),
        Command::BeginUpgrade {
            spec,
            placement,
            generated,
            ..
        } => {
            upgrades::check_begin(s, spec, placement)?;
            catalog::check_generated(s, generated)?;
            Ok(())
        }
        Command::UpgradeSwitch { app, id, .. } => upgrades::check_switch(s, app, *id),
        Command::FinishUpgradeSwitch { app, id, .. } => upgrades::check_finish_switch(s, app, *id),
        Command::CompleteUpgrade { app, id, .. } => upgrades::check_complete(s, app, *id),
        Command::AbortUpgrade {
            app, id, recover, ..
        } => upgrades::check_abort(s, app, *id, recover.as_ref()),
        Command::RegisterBaseImage { image } => Ok(catalog::check_register(s, image)?),
        Command::RemoveBaseImage { name } => Ok(catalog::check_remove_image(s, name)?),
        Command::AddTemplate { template } => Ok(catalog::check_add_template(s, template)?),
        Command::RemoveTemplate { name } => Ok(catalog::check_remove_template(s, name)?),
        Command::PutTenant { name, policy } => tenants::check_put(name, policy),
        Command::SetQuota { tenant, quota } => tenants::check_quota(tenant, quota.as_ref()),
        Command::SetSchedulingPolicy { policy } => super::scheduling::check(policy.as_ref()),
        Command::Preempt { app, .. } => checkpoints::check_preempt(s, app),
    }
}

/// The app `app`, which must be live: checkpoint and recovery commands need one.
fn live_app<'a>(s: &'a ClusterState, app: &str) -> Result<&'a AppRecord, CommandError> {
    live(s, app, "only a live app has checkpoints and recoveries")
}

/// The app `app`, which must be live; `why` says what needed it to be.
fn live<'a>(s: &'a ClusterState, app: &str, why: &str) -> Result<&'a AppRecord, CommandError> {
    let rec = known_app(s, app)?;
    if !rec.state().is_live() {
        return Err(wrong_state(rec, why));
    }
    Ok(rec)
}

/// The app `app`, or the refusal that there is none.
fn known_app<'a>(s: &'a ClusterState, app: &str) -> Result<&'a AppRecord, CommandError> {
    s.apps
        .get(app)
        .map(|a| &**a)
        .ok_or_else(|| CommandError::AppNotFound(app.to_string()))
}

/// The refusal of a command that `rec`'s state does not allow; `why` says what it needed.
fn wrong_state(rec: &AppRecord, why: &str) -> CommandError {
    CommandError::AppState {
        app: rec.name.clone(),
        state: format!("{:?}", rec.state()).to_lowercase(),
        why: why.to_string(),
    }
}

pub(super) fn apply_checked(s: &mut ClusterState, cmd: &Command) -> Response {
    match cmd {
        Command::SubmitApp {
            spec,
            spec_text,
            at_ms,
            request_id,
            generated,
            signature,
        } => apps::apply_submit(s, spec, spec_text, *at_ms, request_id, generated, signature),
        Command::FinishApp { app, at_ms, pes } => apps::apply_finish(s, app, *at_ms, pes),
        Command::CancelApp {
            name,
            at_ms,
            request_id,
        } => apps::apply_cancel(s, name, *at_ms, request_id),
        Command::SetPlacement {
            app,
            placement,
            gpus,
            at_ms,
        } => apps::apply_set_placement(s, app, placement, gpus, *at_ms),
        Command::RegisterWorker { worker } => workers::apply_register(s, worker),
        Command::SetWorkerState { id, state, at_ms } => {
            workers::apply_set_state(s, id, *state, *at_ms)
        }
        Command::SetWorkerImages { id, images } => workers::apply_set_images(s, id, images),
        Command::BeginCheckpoint { app, id, at_ms } => {
            checkpoints::apply_begin(s, app, *id, *at_ms)
        }
        Command::CompleteCheckpoint {
            app,
            id,
            at_ms,
            max_alignment_ms,
            pieces,
        } => checkpoints::apply_complete(s, app, *id, *at_ms, *max_alignment_ms, pieces),
        Command::AbandonCheckpoint { app, .. } => checkpoints::apply_abandon(s, app),
        Command::Recover {
            app,
            operators,
            checkpoint_id,
            placement,
            reason,
            at_ms,
            drop_checkpoint,
            gpus,
        } => checkpoints::apply_recover(
            s,
            app,
            checkpoints::Recovery {
                operators,
                checkpoint_id: *checkpoint_id,
                placement,
                reason,
                at_ms: *at_ms,
                drop_checkpoint: *drop_checkpoint,
                gpus,
            },
        ),
        Command::BeginUpgrade {
            spec,
            spec_text,
            at_ms,
            placement,
            gpus,
            handoff,
            summary,
            request_id,
            generated,
            signature,
        } => upgrades::apply_begin(
            s,
            upgrades::Begin {
                spec,
                spec_text,
                at_ms: *at_ms,
                placement,
                gpus,
                handoff,
                summary,
                request_id,
                generated,
                signature,
            },
        ),
        Command::UpgradeSwitch { app, id, at_ms } => upgrades::apply_switch(s, app, *id, *at_ms),
        Command::FinishUpgradeSwitch { app, id, at_ms } => {
            upgrades::apply_finish_switch(s, app, *id, *at_ms)
        }
        Command::CompleteUpgrade {
            app,
            id,
            at_ms,
            result,
        } => upgrades::apply_complete(s, app, *id, *at_ms, result),
        Command::AbortUpgrade {
            app,
            id,
            at_ms,
            reason,
            recover,
        } => {
            if let Some((ops, checkpoint_id)) = recover {
                let placement = s.apps[app].placement.clone();
                checkpoints::apply_recover(
                    s,
                    app,
                    checkpoints::Recovery {
                        operators: ops,
                        checkpoint_id: *checkpoint_id,
                        placement: &placement,
                        reason: &format!("upgrade {id} rolled back: {reason}"),
                        at_ms: *at_ms,
                        drop_checkpoint: None,
                        gpus: &BTreeMap::new(),
                    },
                );
            }
            upgrades::apply_abort(s, app, *id, *at_ms, reason)
        }
        Command::RegisterBaseImage { image } => {
            Arc::make_mut(&mut s.catalog)
                .base_images
                .insert(image.name.clone(), image.clone());
            Response::Done
        }
        Command::RemoveBaseImage { name } => {
            Arc::make_mut(&mut s.catalog).base_images.remove(name);
            Response::Done
        }
        Command::AddTemplate { template } => {
            Arc::make_mut(&mut s.catalog)
                .templates
                .insert(template.name.clone(), template.clone());
            Response::Done
        }
        Command::RemoveTemplate { name } => {
            Arc::make_mut(&mut s.catalog).templates.remove(name);
            Response::Done
        }
        Command::PutTenant { name, policy } => tenants::apply_put(s, name, policy),
        Command::SetQuota { tenant, quota } => tenants::apply_quota(s, tenant, quota),
        Command::SetSchedulingPolicy { policy } => super::scheduling::apply(s, policy),
        Command::Preempt { app, by, at_ms } => checkpoints::apply_preempt(s, app, by, *at_ms),
        Command::Batch { cmds } => Response::Batch {
            results: cmds.iter().map(|c| s.apply(c)).collect(),
        },
    }
}
