//! Checkpoint coordination, decided: whether an app's in-flight checkpoint completed
//! (every PE reported its piece with enough copies), ran out of time, or whether the
//! next one is due. Pure: the executor passes the state, the reports and the time, and
//! carries the step out (`Executor::checkpoints`); begin, complete and abandon all go
//! through Raft, so a new leader knows what is in flight and a checkpoint is never
//! half-recorded. Tests: `checkpoints_tests.rs`.

use super::upgrade::Reports;
use crate::state::{AppRecord, ClusterState, LinkRecord, PieceRecord, SeedRecord, WorkerState};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;
use weir_common::physical::PeId;
use weir_common::spec::Role;
use weir_proto::v1 as pb;

/// The rules checkpoints follow (from the executor's configuration).
#[derive(Clone, Debug)]
pub struct Rules {
    /// Copies every piece needs (capped by the workers alive when it began).
    pub replicas: usize,
    /// How long after it (re)joined a worker is known to its peers (two heartbeats): a
    /// worker learns of a new peer, to replicate to, from its next heartbeat answer.
    pub known_after_ms: u64,
    /// How long after a checkpoint completes every worker has heard of it (its next
    /// heartbeat answer, one heartbeat, and a margin): the next one begins no sooner
    /// (unless urgent), so PEs know the snapshot their increments may build on
    /// (`worker/src/ops/window/incremental.rs`). Without it, a checkpoint that took
    /// longer than the interval was followed at once by one whose PEs had not heard,
    /// so all wrote whole snapshots, which again took long: at 1 GB of window state
    /// every checkpoint stayed whole.
    pub heard_after_ms: u64,
    /// How long a checkpoint may take before it is abandoned.
    pub timeout_ms: u64,
    /// The interval of apps whose spec sets none.
    pub interval: Duration,
}

/// One app's checkpoint step.
#[derive(Clone, Debug, PartialEq)]
pub enum Step {
    /// Every PE reported its piece: commit the completion.
    Complete {
        /// The checkpoint.
        id: u64,
        /// The longest barrier alignment any PE reported.
        max_alignment_ms: u64,
        /// Where each piece with state is (empty pieces are left out).
        pieces: BTreeMap<PeId, PieceRecord>,
    },
    /// It ran out of time (or the app's checkpoints were turned off): give it up.
    Abandon {
        /// The checkpoint.
        id: u64,
    },
    /// The next checkpoint is due: begin it and trigger it at these workers (those of
    /// the app's sources).
    Begin {
        /// Its id.
        id: u64,
        /// Workers running the app's sources.
        sources: BTreeSet<String>,
    },
    /// Nothing now.
    Wait,
}

/// Copies a piece of a checkpoint begun at `started_at_ms` needs: capped by the
/// workers alive, and known to their peers, when it began. PEs replicate to the peers
/// their worker knows when they snapshot, so a worker that joined since cannot hold a
/// copy yet and must not hold the checkpoint up.
pub fn copies_needed(state: &ClusterState, rules: &Rules, started_at_ms: u64) -> usize {
    let alive = state
        .workers
        .values()
        .filter(|w| {
            w.state == WorkerState::Alive
                && w.state_since_ms.saturating_add(rules.known_after_ms) <= started_at_ms
        })
        .count();
    rules.replicas.min(alive).max(1)
}

/// What an incremental piece of `pe` built on its snapshot at checkpoint `base`
/// builds on (0: a whole piece, nothing): that snapshot's seed and chain, then it. When
/// `pe` took over its state at `base` (an upgrade's switch, recorded in that
/// checkpoint's hand-off), its first increment builds on its predecessors' whole pieces
/// there: they are its seed, its chain is empty. `None` when `base` is neither a kept
/// complete checkpoint holding a piece of `pe` nor one where `pe` took over state.
pub fn chain_of(
    app: &AppRecord,
    pe: &PeId,
    base: u64,
) -> Option<(Vec<SeedRecord>, Vec<LinkRecord>)> {
    if base == 0 {
        return Some(Default::default());
    }
    let c = app.checkpoints.complete.iter().find(|c| c.id == base)?;
    if let Some(piece) = c.pieces.get(pe) {
        let mut chain = piece.chain.clone();
        chain.push(piece.as_link(base));
        return Some((piece.seed.clone(), chain));
    }
    let preds = c.handoff.get(pe)?;
    let seed = preds
        .iter()
        // A predecessor without a piece had no state to hand over.
        .filter_map(|p| Some((p, c.pieces.get(p)?)))
        .map(|(p, piece)| {
            // A drained predecessor's piece of the switch is whole: a seed never
            // builds on anything itself.
            (piece.chain.is_empty() && piece.seed.is_empty()).then(|| SeedRecord {
                pe: p.clone(),
                link: piece.as_link(base),
            })
        })
        .collect::<Option<Vec<_>>>()?;
    Some((seed, Vec::new()))
}

/// How often `app` checkpoints: its own interval, else the master's `default`; zero:
/// never.
pub fn interval_of(app: &AppRecord, default: Duration) -> Duration {
    app.current()
        .spec
        .checkpoint_interval_ms
        .map_or(default, Duration::from_millis)
}

/// Decides `app`'s checkpoint step. `since_triggered` is how long ago this leader last
/// began one of its checkpoints (`None`: never, as far as it knows).
pub fn decide_checkpoint(
    state: &ClusterState,
    app: &AppRecord,
    reports: &Reports,
    rules: &Rules,
    now_ms: u64,
    since_triggered: Option<Duration>,
) -> Step {
    if !app.state().is_live() || app.placement.is_empty() {
        return Step::Wait;
    }
    let spec = &app.current().spec;
    let interval = interval_of(app, rules.interval);
    let ck = &app.checkpoints;
    let report = |pe: &PeId, w: &String| {
        reports
            .get(&(w.clone(), pe.clone()))
            .filter(|r| r.attempt == ck.attempt(pe.operator()))
    };
    let upgrade = app.upgrade.and_then(|id| state.upgrades.get(&id));
    if let Some(f) = &ck.in_flight {
        let need = copies_needed(state, rules, f.started_at_ms);
        let mut pieces = BTreeMap::new();
        let mut max_alignment_ms = 0;
        let mut done = true;
        for (pe, w) in &app.placement {
            let piece =
                report(pe, w).and_then(|r| r.checkpoints.iter().find(|c| c.checkpoint_id == f.id));
            match piece {
                Some(p) if p.size_bytes == 0 => {
                    max_alignment_ms = max_alignment_ms.max(p.alignment_ms);
                }
                Some(p) if p.replicas.len() >= need => {
                    max_alignment_ms = max_alignment_ms.max(p.alignment_ms);
                    let Some((seed, chain)) = chain_of(app, pe, p.base_checkpoint_id) else {
                        // Built on a snapshot no kept checkpoint has (the PE took it
                        // against a checkpoint that was abandoned): this checkpoint can
                        // never be restored. The PE's next snapshot is whole, because
                        // it builds only on its app's latest complete checkpoint.
                        tracing::warn!(app = %app.name, %pe, checkpoint = f.id, base = p.base_checkpoint_id, "incremental snapshot without its base; checkpoint abandoned");
                        return Step::Abandon { id: f.id };
                    };
                    pieces.insert(
                        pe.clone(),
                        PieceRecord {
                            size_bytes: p.size_bytes,
                            crc32c: p.crc32c,
                            replicas: p.replicas.clone(),
                            chain,
                            seed,
                        },
                    );
                }
                _ => {
                    done = false;
                    break;
                }
            }
        }
        if done {
            return Step::Complete {
                id: f.id,
                max_alignment_ms,
                pieces,
            };
        }
        // An upgrade's switch barrier: the upgrade decides when it has taken too long.
        if upgrade.is_some_and(|u| u.barrier == f.id) {
            return Step::Wait;
        }
        if now_ms.saturating_sub(f.started_at_ms) > rules.timeout_ms || interval.is_zero() {
            return Step::Abandon { id: f.id };
        }
        return Step::Wait;
    }
    if interval.is_zero() || upgrade.is_some() || since_triggered.is_some_and(|t| t < interval) {
        return Step::Wait;
    }
    let unheard = ck
        .latest()
        .is_some_and(|c| now_ms.saturating_sub(c.completed_at_ms) < rules.heard_after_ms);
    if since_triggered.is_some() && unheard {
        return Step::Wait;
    }
    let running = app
        .placement
        .iter()
        .all(|(pe, w)| report(pe, w).is_some_and(|r| r.state == pb::PeState::Running as i32));
    if !running {
        return Step::Wait;
    }
    let sources = app
        .placement
        .iter()
        .filter(|(pe, _)| {
            spec.operator(pe.operator())
                .is_some_and(|o| o.kind.role() == Role::Source)
        })
        .map(|(_, w)| w.clone())
        .collect();
    Step::Begin {
        id: ck.last_id + 1,
        sources,
    }
}
