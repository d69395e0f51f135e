//! Preemption: which running apps to stop so that a queued app of the high class fits.
//!
//! The rule is deliberately narrow, so that nobody loses work by surprise: only a
//! `high` app preempts, only `low` apps are preempted, and only apps that run
//! undisturbed (no upgrade in progress). A preempted app is not failed: it goes back
//! to the queue and, placed again, resumes from its latest complete checkpoint under a
//! new attempt, exactly as a recovery does, so nothing is lost or repeated (what it
//! processed after that checkpoint is processed again, and its sinks' exactly-once
//! protocols drop the repeats). It keeps its class, so it can never preempt back:
//! aging raises its rank in the queue, not its class.
//!
//! **Choice of victims.** The most recently placed first (they lose the least work),
//! added one at a time until the high app fits the capacity they would free (placed
//! as the queue places it); then each one not needed after all is spared again. When
//! even all candidates together would not make room, nobody is stopped. The queue
//! asks when it examines the high app, before any entry behind it, and then keeps the
//! room being freed from the entries behind it (`queue::Wait::Preempting`). Pure:
//! from the free capacity and the state.
//!
//! **Checkpoint first.** A victim is not stopped the moment it is chosen: the leader
//! first asks it for a checkpoint (begun at once, whatever its interval) and stops it
//! when that checkpoint is complete, so it resumes from where it was stopped and
//! processes nothing again ([`stop_when`]). A victim whose checkpoints are off, or
//! whose checkpoint does not complete within the checkpoint timeout, is stopped
//! anyway and resumes from its latest complete checkpoint (exactly once still: its
//! sinks drop the repeats).

use super::{place_with, requests_for, DevicePolicy, WorkerCapacity};
use crate::state::{AppRecord, AppState, ClusterState};
use std::collections::BTreeSet;
use weir_common::spec::Priority;

/// A preemption the leader decided and holds until the victim's fresh checkpoint is
/// complete (leader memory: a new leader decides again).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pending {
    /// The app it makes room for.
    pub by: String,
    /// The victim's last checkpoint id begun when it was chosen: a checkpoint after it
    /// is the fresh one.
    pub after_id: u64,
    /// When it was chosen (leader clock).
    pub since_ms: u64,
}

/// When to stop a chosen victim.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stop {
    /// Now: its fresh checkpoint is complete, it takes none, or it took too long.
    Now,
    /// Not yet: its fresh checkpoint is to begin or in flight.
    AfterCheckpoint,
}

/// When to stop `victim`, chosen as `pending` says; `checkpoints_on`: whether it takes
/// checkpoints at all; `limit_ms`: how long to wait for its fresh one.
pub fn stop_when(
    victim: &AppRecord,
    pending: &Pending,
    checkpoints_on: bool,
    now_ms: u64,
    limit_ms: u64,
) -> Stop {
    let fresh = victim
        .checkpoints
        .latest()
        .is_some_and(|c| c.id > pending.after_id);
    if !checkpoints_on || fresh || now_ms.saturating_sub(pending.since_ms) >= limit_ms {
        Stop::Now
    } else {
        Stop::AfterCheckpoint
    }
}

/// Whether `victim` may be preempted for `by`.
pub fn preemptible(victim: &AppRecord, by: &AppRecord) -> bool {
    by.current().spec.priority == Priority::High
        && victim.current().spec.priority == Priority::Low
        && victim.state() == AppState::Running
        && victim.upgrade.is_none()
        && !victim.placement.is_empty()
        && victim.name != by.name
}

/// Adds back to `free` what `app`'s placed PEs hold.
pub fn release(free: &mut [WorkerCapacity], app: &AppRecord) {
    let spec = &app.current().spec;
    for (pe, w) in &app.placement {
        let Some(op) = spec.operator(pe.operator()) else {
            continue;
        };
        let Some(cap) = free.iter_mut().find(|c| &c.id == w) else {
            continue;
        };
        cap.cpu_free += op.resources.cpu;
        cap.memory_free_mb = cap.memory_free_mb.saturating_add(op.resources.memory_mb);
        let per_slice = op.resources.gpu.as_ref().map_or(0, |g| g.memory_mb);
        for uuid in app.gpus.get(pe).into_iter().flatten() {
            if let Some(slot) = cap.gpus.iter_mut().find(|g| &g.uuid == uuid) {
                slot.memory_free_mb = slot.memory_free_mb.saturating_add(per_slice);
            }
        }
    }
}

/// The running apps to preempt so that `app` fits, given the capacity `free` now,
/// placing as the queue does (`devices`); `None` when preempting is not allowed or
/// would not make room. Apps in `busy` (being re-placed or recovered in the same
/// decision) are not candidates.
pub fn victims(
    state: &ClusterState,
    app: &AppRecord,
    free: &[WorkerCapacity],
    devices: &DevicePolicy,
    busy: &BTreeSet<String>,
) -> Option<Vec<String>> {
    if app.current().spec.priority != Priority::High {
        return None;
    }
    let mut candidates: Vec<&AppRecord> = state
        .apps
        .values()
        .map(|a| &**a)
        .filter(|v| preemptible(v, app) && !busy.contains(&v.name))
        .collect();
    if candidates.is_empty() {
        return None;
    }
    candidates.sort_by(|a, b| {
        b.placed_at_ms
            .cmp(&a.placed_at_ms)
            .then(a.name.cmp(&b.name))
    });
    let requests = requests_for(&app.current().spec);
    let fits = |chosen: &[&AppRecord]| {
        let mut f = free.to_vec();
        for v in chosen {
            release(&mut f, v);
        }
        place_with(&f, &requests, &Default::default(), devices).is_ok()
    };
    // Even every candidate together would not make room: do not search.
    if !fits(&candidates) {
        return None;
    }
    let mut chosen: Vec<&AppRecord> = Vec::new();
    for c in candidates {
        chosen.push(c);
        if fits(&chosen) {
            break;
        }
    }
    // Spare whoever is not needed after all (the earliest chosen may be, once later
    // ones freed more).
    let mut i = 0;
    while i < chosen.len() {
        let mut without = chosen.clone();
        without.remove(i);
        if !without.is_empty() && fits(&without) {
            chosen = without;
        } else {
            i += 1;
        }
    }
    Some(chosen.iter().map(|a| a.name.clone()).collect())
}

#[cfg(test)]
#[path = "preempt_tests.rs"]
mod tests;
