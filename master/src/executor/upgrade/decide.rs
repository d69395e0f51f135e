//! What the orchestrator does next for one running upgrade: pure decisions over the
//! replicated state, the workers' reports, the leader's memory and the time. The runner
//! in `mod.rs` carries them out (commits, worker calls) and is the one place that logs
//! and retries; here nothing waits on a network, so each rule is unit-tested
//! (`decide_tests.rs`).

use crate::state::{AppRecord, ClusterState, UpgradeRecord, UpgradeResultRecord, WorkerState};
use std::collections::{BTreeSet, HashMap};
use weir_common::physical::PeId;
use weir_common::plan::{Instruction, Phase, UpgradePlan};
use weir_common::spec::Role;
use weir_proto::v1 as pb;

/// The PE reports the leader holds, by (worker, PE).
pub type Reports = crate::shared::PeReports;

/// Longest a prepare may take (new PEs starting) before the upgrade rolls back, with
/// nothing to pre-copy ([`prepare_limit_ms`]).
pub const PREPARE_TIMEOUT_MS: u64 = 30_000;
/// Bytes of predecessors' pieces a prepare is given one more second for: new windows
/// pre-copy them (loading, and keeping their own key groups) while the stream runs,
/// about 50-100 MB/s per core on the 2-core dev box.
pub const PRECOPY_BYTES_PER_S: u64 = 50 << 20;
/// How much longer a prepare with something to pre-copy may take for its successors
/// to catch up on the changes made meanwhile: the longest a successor that is gaining
/// on its predecessors catches up after its copy (the worker's
/// `handoff::MAX_GAINING`).
pub const CATCH_UP_MS: u64 = 20_000;
/// Longest the switch checkpoint may take before the upgrade rolls back.
pub const SWITCH_TIMEOUT_MS: u64 = 30_000;
/// How long cleanup waits for passing gaps at the audit sinks to close.
pub const CLEANUP_SETTLE_MS: u64 = 3_000;

/// What this leader remembers of running upgrades between ticks (nothing here is
/// replicated: a new leader starts empty and the decisions tolerate that).
#[derive(Debug, Default)]
pub struct Memory {
    /// Switch barriers this leader triggered: (app, barrier).
    pub switch_triggered: BTreeSet<(String, u64)>,
    /// The fewest records missing at the audit sinks seen during each upgrade's cleanup.
    pub least_missing: HashMap<u64, u64>,
    /// Each running upgrade's plan, by operation: a pure function of the two versions
    /// it joins, so computed once rather than on every tick.
    pub plans: HashMap<u64, std::sync::Arc<UpgradePlan>>,
}

impl Memory {
    /// Forgets what it holds of upgrades that are no longer running.
    pub fn retain_running(&mut self, state: &ClusterState) {
        let running = |id: &u64| state.upgrades.get(id).is_some_and(|u| u.phase().is_some());
        self.switch_triggered.retain(|(app, barrier)| {
            state
                .apps
                .get(app)
                .and_then(|a| a.upgrade)
                .and_then(|id| state.upgrades.get(&id))
                .is_some_and(|u| u.barrier == *barrier)
        });
        self.plans.retain(|id, _| running(id));
        self.least_missing.retain(|id, _| running(id));
    }
}

/// One step of a running upgrade.
#[derive(Clone, Debug, PartialEq)]
pub enum Step {
    /// Roll it back: why, and after the switch began the operators to restart and the
    /// checkpoint to restart them from.
    Abort {
        /// Why, as users read it.
        reason: String,
        /// (operators, checkpoint) when the switch had begun.
        recover: Option<(Vec<String>, u64)>,
    },
    /// Prepare goes on ([`decide_prepare`] says how).
    Prepare,
    /// The switch checkpoint completed: commit the switch.
    FinishSwitch,
    /// The switch barrier has not been triggered by this leader (a new leader, say):
    /// arm the switch again (idempotent) and trigger it.
    TriggerSwitch,
    /// Cleanup is over: commit completion with what the sinks measured.
    Complete(UpgradeResultRecord),
    /// Nothing to do this tick.
    Wait,
}

/// Decides the next step of the running upgrade `up` of `app` (see the module doc of
/// `mod.rs` for the protocol). `rollback` is the reconciler's finding that the old
/// version lost PEs this tick.
#[allow(clippy::too_many_arguments)]
pub fn decide_upgrade(
    state: &ClusterState,
    app: &AppRecord,
    up: &UpgradeRecord,
    p: &UpgradePlan,
    reports: &Reports,
    rollback: Option<&str>,
    now: u64,
    memory: &mut Memory,
) -> Step {
    let crate::state::UpgradeStage::Running { phase, since_ms } = up.stage else {
        return Step::Wait;
    };
    if phase != Phase::Cleanup {
        if let Some(reason) = failure(state, up, p, reports, rollback, phase, since_ms, now) {
            let recover = (phase == Phase::Switch).then(|| {
                let ops = app.region(&touched_ops(p, app));
                let ck = app
                    .checkpoints
                    .complete
                    .iter()
                    .rev()
                    .map(|c| c.id)
                    .find(|id| *id < up.barrier)
                    .unwrap_or(0);
                (ops, ck)
            });
            return Step::Abort { reason, recover };
        }
    }
    match phase {
        Phase::Prepare => Step::Prepare,
        Phase::Switch => {
            if app.checkpoints.complete.iter().any(|c| c.id == up.barrier) {
                Step::FinishSwitch
            } else if memory
                .switch_triggered
                .contains(&(app.name.clone(), up.barrier))
            {
                Step::Wait
            } else {
                Step::TriggerSwitch
            }
        }
        Phase::Cleanup => {
            let lingering = reports.iter().any(|((w, pe), r)| {
                r.app == app.name && alive(state, w) && !app.placement.contains_key(pe)
            });
            let result = measure(app, up, p, reports, now);
            // Records in flight on different channels (round robin) show as passing
            // gaps at the audit: keep the least seen during cleanup, and give the gaps
            // a few seconds to close.
            let least = memory
                .least_missing
                .entry(up.id)
                .or_insert(result.records_lost);
            *least = (*least).min(result.records_lost);
            let settled = *least == 0 || now.saturating_sub(since_ms) > CLEANUP_SETTLE_MS;
            if lingering || !settled {
                return Step::Wait;
            }
            let records_lost = *least;
            memory.least_missing.remove(&up.id);
            Step::Complete(UpgradeResultRecord {
                records_lost,
                ..result
            })
        }
    }
}

fn alive(state: &ClusterState, w: &str) -> bool {
    state
        .workers
        .get(w)
        .is_some_and(|r| r.state == WorkerState::Alive)
}

/// Why the upgrade must roll back before its switch completed, if it must: the
/// reconciler's finding, a new PE's worker lost or the PE failed (new PEs are not in
/// the app's placement yet, so the reconciler does not watch them), or the phase ran
/// out of time.
#[allow(clippy::too_many_arguments)]
fn failure(
    state: &ClusterState,
    up: &UpgradeRecord,
    p: &UpgradePlan,
    reports: &Reports,
    rollback: Option<&str>,
    phase: Phase,
    since_ms: u64,
    now: u64,
) -> Option<String> {
    if let Some(r) = rollback {
        return Some(r.to_string());
    }
    for i in p.instructions().map(|(_, i)| i) {
        let Instruction::StartPe { pe, .. } = i else {
            continue;
        };
        let Some(w) = up.placement.get(pe.as_str()) else {
            continue;
        };
        if !alive(state, w) {
            return Some(format!("worker {w} of new PE {pe} lost"));
        }
        if let Some(r) = reports.get(&(w.clone(), pe.clone())) {
            if r.state == pb::PeState::Failed as i32 {
                return Some(format!("new PE {pe} failed: {}", r.message));
            }
        }
    }
    let limit = if phase == Phase::Prepare {
        state
            .apps
            .get(&up.app)
            .map_or(PREPARE_TIMEOUT_MS, |app| prepare_limit_ms(app, up))
    } else {
        SWITCH_TIMEOUT_MS
    };
    (now.saturating_sub(since_ms) > limit)
        .then(|| format!("{} did not finish within {} s", phase.name(), limit / 1000))
}

/// Longest the prepare of `up` may take: [`PREPARE_TIMEOUT_MS`], and a second more per
/// [`PRECOPY_BYTES_PER_S`] its new PEs may pre-copy (each successor loads each of its
/// predecessors' pieces of the latest complete checkpoint, with what the piece builds
/// on), and [`CATCH_UP_MS`] for the catch-up after a pre-copy. Without the seconds per
/// byte an upgrade of 1 GB of window state on a 2-core machine, right after another
/// (its predecessors' pieces then build on seeds), ran past 30 s and rolled back.
pub fn prepare_limit_ms(app: &AppRecord, up: &UpgradeRecord) -> u64 {
    let bytes = precopy_bytes(app, up);
    let catch_up = if bytes > 0 { CATCH_UP_MS } else { 0 };
    PREPARE_TIMEOUT_MS + bytes / PRECOPY_BYTES_PER_S * 1_000 + catch_up
}

/// About the bytes `up`'s successors pre-copy: each loads each of its predecessors'
/// pieces of the latest complete checkpoint before the switch barrier (the barrier's
/// own, once complete, is not pre-copied), with what the piece builds on.
fn precopy_bytes(app: &AppRecord, up: &UpgradeRecord) -> u64 {
    let mut complete = app.checkpoints.complete.iter().rev();
    let Some(c) = complete.find(|c| c.id < up.barrier) else {
        return 0;
    };
    up.handoff
        .values()
        .flatten()
        .filter_map(|p| c.pieces.get(p))
        .map(|p| p.restore_bytes())
        .sum()
}

/// The operators an upgrade's switch touches in the old version (their PEs drain,
/// switch or gain inputs), for a rollback after the switch began.
fn touched_ops(p: &UpgradePlan, old: &AppRecord) -> BTreeSet<String> {
    let spec = &old.current().spec;
    p.instructions()
        .flat_map(|(_, i)| i.pes())
        .map(|pe| pe.operator().to_string())
        .filter(|op| spec.operator(op).is_some())
        .collect()
}

/// One prepare step.
#[derive(Clone, Debug, PartialEq)]
pub enum Prepare {
    /// A checkpoint is in flight and successors pre-copy from the latest complete
    /// one: start nothing until it ends, so that the old PEs' deltas are against it.
    Hold,
    /// Deploy `start` (new PEs not running yet), then go on as `then` says.
    Go {
        /// New PEs not running their current attempt: (worker, PE, attempt).
        start: Vec<(String, PeId, u64)>,
        /// What follows the deploys.
        then: AfterPrepare,
    },
}

/// What follows this tick's deploys in prepare.
#[derive(Clone, Debug, PartialEq)]
pub enum AfterPrepare {
    /// Something still starts, or a checkpoint is in flight.
    Wait,
    /// An old PE finished (its stream ended): there is nothing left to switch.
    Abort(String),
    /// Every new and old PE runs and no checkpoint is in flight: arm and begin the
    /// switch.
    Switch,
}

/// Decides one prepare step. `attempt(pe)` is the new version's attempt of a new PE
/// and `old_attempt(pe)` the current version's of an old one.
pub fn decide_prepare(
    app: &AppRecord,
    up: &UpgradeRecord,
    p: &UpgradePlan,
    reports: &Reports,
    precopy: bool,
    attempt: impl Fn(&PeId) -> u64,
    old_attempt: impl Fn(&PeId) -> u64,
) -> Prepare {
    if precopy && app.checkpoints.in_flight.is_some() {
        return Prepare::Hold;
    }
    let mut ready = true;
    let mut start = Vec::new();
    for i in p.instructions().map(|(_, i)| i) {
        let Instruction::StartPe { pe, .. } = i else {
            continue;
        };
        let Some(w) = up.placement.get(pe.as_str()) else {
            ready = false;
            continue;
        };
        let a = attempt(pe);
        let report = reports
            .get(&(w.clone(), pe.clone()))
            .filter(|r| r.attempt == a);
        // Running: its kernel (a program, say) started; a PE still starting may yet
        // fail, and the switch must not begin before that is known.
        let running = report.is_some_and(|r| r.state == pb::PeState::Running as i32);
        // Deployed and still starting (a successor pre-copying, for seconds at large
        // state): deploying it again changes nothing. (Until 2026-12-07 it was, every
        // few seconds of a 1 GB pre-copy: "new PE deployed" over and over in the log.)
        let starting = report.is_some_and(|r| r.state == pb::PeState::Starting as i32);
        if !running {
            ready = false;
            if !starting {
                start.push((w.clone(), pe.clone(), a));
            }
        }
    }
    // The switch barrier must reach every old PE: all must run (a finished one, whose
    // inputs ended, would never see it).
    for (pe, w) in &app.placement {
        match reports.get(&(w.clone(), pe.clone())) {
            Some(r) if r.attempt == old_attempt(pe) => {
                if r.state == pb::PeState::Stopped as i32 {
                    let reason = format!(
                        "{pe} finished (its stream ended): there is nothing left to switch"
                    );
                    return Prepare::Go {
                        start,
                        then: AfterPrepare::Abort(reason),
                    };
                }
                if r.state != pb::PeState::Running as i32 {
                    ready = false;
                }
            }
            _ => ready = false,
        }
    }
    let then = if ready && app.checkpoints.in_flight.is_none() {
        AfterPrepare::Switch
    } else {
        AfterPrepare::Wait
    };
    Prepare::Go { start, then }
}

/// What the sinks saw: duplicates and gaps at `sink.verify` sinks, and the longest
/// gap between input batches at any sink over the last seconds (which span the
/// switch, since cleanup follows it within a heartbeat or two).
pub fn measure(
    app: &AppRecord,
    up: &UpgradeRecord,
    p: &UpgradePlan,
    reports: &Reports,
    now_ms: u64,
) -> UpgradeResultRecord {
    let spec = &app.current().spec;
    let mut r = UpgradeResultRecord {
        pes_touched: (p.summary.pes_started + p.summary.pes_stopped + p.summary.pes_rewired) as u32,
        ..Default::default()
    };
    for (pe, w) in &app.placement {
        let Some(rep) = reports.get(&(w.clone(), pe.clone())) else {
            continue;
        };
        let sink = spec
            .operator(pe.operator())
            .is_some_and(|o| o.kind.role() == Role::Sink);
        if !sink {
            continue;
        }
        // A sink the upgrade added saw the stream from the switch on only.
        let added = p
            .instructions()
            .any(|(_, i)| matches!(i, Instruction::StartPe { pe: n, .. } if n == pe));
        if let Some(v) = rep.verify.as_ref().filter(|_| !added) {
            r.records_duplicated += v.duplicates;
            r.records_lost += v.missing_settled;
        }
        if let Some(s) = &rep.stats {
            r.longest_stall_ms = r.longest_stall_ms.max(stall(&s.input_gaps_ms, now_ms, up));
        }
    }
    let t = taken_over(up, reports);
    r.state_precopied_bytes = t.precopied;
    r.state_barrier_bytes = t.at_barrier;
    r.successors_behind = t.behind;
    r
}

/// What `up`'s successors (its new PEs that take over old PEs' state) last reported,
/// from where each is placed, summed.
#[derive(Debug, Default)]
struct TakenOver {
    /// Successors reporting RUNNING (pre-copied, caught up or not).
    ready: u32,
    precopied: u64,
    at_barrier: u64,
    /// "PE: why" for each that let the switch begin still behind.
    behind: Vec<String>,
}

fn taken_over(up: &UpgradeRecord, reports: &Reports) -> TakenOver {
    let mut t = TakenOver::default();
    for pe in up.handoff.keys() {
        let Some(r) = up
            .placement
            .get(pe)
            .and_then(|w| reports.get(&(w.clone(), pe.clone())))
        else {
            continue;
        };
        t.ready += u32::from(r.state == pb::PeState::Running as i32);
        let Some(s) = &r.stats else { continue };
        t.precopied += s.state_precopied_bytes;
        t.at_barrier += s.state_barrier_bytes;
        if !s.handoff_behind.is_empty() {
            t.behind.push(format!("{pe}: {}", s.handoff_behind));
        }
    }
    t
}

/// How far a running upgrade's successors are, from their last reports: for users
/// watching a prepare that pre-copies gigabytes.
pub fn progress(app: &AppRecord, up: &UpgradeRecord, reports: &Reports) -> pb::UpgradeProgress {
    let t = taken_over(up, reports);
    pb::UpgradeProgress {
        successors: up.handoff.len() as u32,
        successors_ready: t.ready,
        state_precopied_bytes: t.precopied,
        state_to_precopy_bytes: precopy_bytes(app, up),
        successors_behind: t.behind,
    }
}

/// The stall an upgrade added at one sink: the longest gap between its input batches in
/// the seconds since the upgrade began, beyond the longest in the seconds before (a
/// window's sink waits a window between batches in steady state too). `gaps` holds one
/// value per second, oldest first, the current second last.
pub fn stall(gaps: &[u64], now_ms: u64, up: &UpgradeRecord) -> u64 {
    let secs = (now_ms.saturating_sub(up.started_at_ms) / 1000 + 1) as usize;
    let split = gaps.len().saturating_sub(secs);
    let during = gaps[split..].iter().copied().max().unwrap_or(0);
    let before = gaps[..split].iter().copied().max().unwrap_or(0);
    during.saturating_sub(before)
}
