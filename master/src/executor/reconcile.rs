//! The reconciler's decisions, pure: from the replicated state (desired) and what
//! workers report (actual) to the actions that close the gap.
//!
//! - **Placement**: every PE of a live app must sit on an alive worker. PEs that do
//!   not (new apps, PEs of a lost worker) are placed by the scheduler around the ones
//!   that do; the app's placement is then rewritten through Raft.
//! - **Recovery**: a PE of a placed app that lost its state (its worker was lost or
//!   restarted, it failed, or it could not load its checkpoint) restarts its whole
//!   region (the connected part of the DAG it belongs to) from the newest complete
//!   checkpoint under a new attempt; lost PEs move to alive workers. PEs outside the
//!   region are not touched.
//! - **Deploy**: a placed PE its worker does not report (not deployed yet) or reports
//!   under an older attempt is deployed there.
//! - **Stop**: a PE a worker reports that no live app places there (cancelled or
//!   finished app, a PE moved away, an old version) is stopped.
//! - **Finish**: a running app whose every placed PE reports stopped (each stops once
//!   its inputs ended: the sources ran out) has finished; it is marked so, which frees
//!   its resources and stops its PEs.

use crate::scheduler::queue::{self, QueueEntry, Wait};
use crate::scheduler::{
    place_with, requests_for, usage, weigh, Assignment, GpuSlot, PeRequest, Rates, WorkerCapacity,
};
use crate::scheduler::{preempt, DevicePolicy, Policy, QueueOrder};
use crate::state::{AppRecord, CheckpointRecord, ClusterState, WorkerState};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use weir_common::physical::PeId;
use weir_common::spec::{Scenario, Vendor, SCENARIOS, VENDORS};
use weir_proto::v1 as pb;

/// One PE as a worker reported it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SeenPe {
    /// PE id.
    pub pe: String,
    /// Its app.
    pub app: String,
    /// Its state.
    pub state: pb::PeState,
    /// The attempt it runs under.
    pub attempt: u64,
    /// The checkpoint it could not restore; 0 for none.
    pub restore_failed: u64,
    /// Its last error.
    pub message: String,
    /// Its measured input rate, records/s.
    pub rate_in: f64,
    /// Its measured output rate, records/s.
    pub rate_out: f64,
}

pub use crate::state::{Gpus, Placement};

/// A region to restart (see the module doc).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecoveryAction {
    /// App name.
    pub app: String,
    /// Every operator of the affected regions, sorted.
    pub operators: Vec<String>,
    /// The checkpoint to restore; 0 for empty state.
    pub checkpoint_id: u64,
    /// The app's whole placement afterwards.
    pub placement: Placement,
    /// Why.
    pub reason: String,
    /// A checkpoint found unreadable, to forget.
    pub drop_checkpoint: Option<u64>,
    /// GPUs of the PEs placed anew.
    pub gpus: Gpus,
}

/// Recoveries of one app closer together than this wait (a PE that fails on every
/// start must not spin); doubled per recovery in the last minute, up to 30 s.
pub const RECOVERY_GAP_MS: u64 = 500;

/// What to do.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Actions {
    /// New placements to commit, per app (the whole map of the app).
    pub placements: Vec<(String, Placement)>,
    /// The GPUs of PEs placed anew, per app (parallel to `placements`).
    pub gpus: BTreeMap<String, Gpus>,
    /// Apps that cannot be placed now, and why.
    pub unplaceable: Vec<(String, String)>,
    /// PEs to deploy: (app, PE, worker).
    pub deploys: Vec<(String, PeId, String)>,
    /// PEs to stop: (worker, app, PE).
    pub stops: Vec<(String, String, String)>,
    /// Regions to restart.
    pub recoveries: Vec<RecoveryAction>,
    /// Apps in an upgrade's prepare or switch whose old version lost PEs, and why:
    /// the upgrade rolls back (which restarts what the switch touched) instead.
    pub aborts: BTreeMap<String, String>,
    /// Running apps that ran to their end.
    pub finished: Vec<String>,
    /// The queue after this decision: apps still waiting, in service order.
    pub queue: Vec<QueueEntry>,
    /// Running apps to preempt: (victim, the queued app it makes room for).
    pub preemptions: Vec<(String, String)>,
}

impl QueueEntry {
    /// A running app some of whose PEs wait for room (they are placed before anything
    /// queued): its PEs without an alive worker count.
    fn running(app: &AppRecord, wait: Wait) -> Self {
        let spec = &app.current().spec;
        Self {
            app: app.name.clone(),
            tenant: app.tenant.clone(),
            priority: spec.priority,
            rank: queue::rank(spec.priority, 0),
            share: 0.0,
            queued_at_ms: app.placed_at_ms.unwrap_or(app.created_at_ms),
            pes: usage::Demand::of_spec(spec).pes,
            wait,
        }
    }
}

fn parse<T: Copy>(names: &[(&str, T)], s: &str) -> Option<T> {
    names
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(s))
        .map(|(_, v)| *v)
}

/// Free capacity of every alive worker, after what live apps already place on it.
pub fn capacities(state: &ClusterState) -> Vec<WorkerCapacity> {
    let mut used: BTreeMap<&str, (f64, u64)> = BTreeMap::new();
    let mut gpu_used: BTreeMap<&str, u64> = BTreeMap::new();
    for app in state.apps.values().filter(|a| a.state().is_live()) {
        let spec = &app.current().spec;
        for (pe, uuids) in &app.gpus {
            let per_slice = spec
                .operator(pe.operator())
                .and_then(|o| o.resources.gpu.as_ref())
                .map_or(0, |g| g.memory_mb);
            for u in uuids {
                *gpu_used.entry(u.as_str()).or_default() += per_slice;
            }
        }
        for (pe, w) in &app.placement {
            let op = pe.operator();
            if let Some(o) = spec.operator(op) {
                let u = used.entry(w.as_str()).or_default();
                u.0 += o.resources.cpu;
                u.1 += o.resources.memory_mb;
            }
        }
        // An upgrade's new PEs run beside the old ones until the switch.
        let next = super::upgrade::active(state, app)
            .and_then(|up| Some((up, &app.versions.get(up.to_version as usize - 1)?.spec)));
        if let Some((up, new)) = next {
            for (pe, w) in up
                .placement
                .iter()
                .filter(|(pe, _)| !app.placement.contains_key(*pe))
            {
                if let Some(o) = new.operator(pe.operator()) {
                    let u = used.entry(w.as_str()).or_default();
                    u.0 += o.resources.cpu;
                    u.1 += o.resources.memory_mb;
                    let per_slice = o.resources.gpu.as_ref().map_or(0, |g| g.memory_mb);
                    for uuid in up.gpus.get(pe).into_iter().flatten() {
                        *gpu_used.entry(uuid.as_str()).or_default() += per_slice;
                    }
                }
            }
        }
    }
    state
        .workers
        .values()
        .map(|w| {
            let (cpu, mem) = used.get(w.id.as_str()).copied().unwrap_or_default();
            let scenario = w
                .labels
                .get("scenario")
                .or_else(|| w.labels.get("pool"))
                .and_then(|s| parse(SCENARIOS, s))
                .unwrap_or(Scenario::General);
            WorkerCapacity {
                id: w.id.clone(),
                alive: w.state == WorkerState::Alive,
                cpu_free: w.cpu_cores - cpu,
                memory_free_mb: w.memory_mb.saturating_sub(mem),
                scenario,
                gpus: w
                    .gpus
                    .iter()
                    .map(|g| GpuSlot {
                        uuid: g.uuid.clone(),
                        vendor: parse(VENDORS, &g.vendor).unwrap_or(Vendor::Any),
                        memory_free_mb: g
                            .memory_total_mb
                            .saturating_sub(gpu_used.get(g.uuid.as_str()).copied().unwrap_or(0)),
                        memory_total_mb: g.memory_total_mb,
                        model: g.model.clone(),
                    })
                    .collect(),
                images: w.images.clone(),
                registries: w.registries.clone(),
            }
        })
        .collect()
}

pub(crate) fn alive(state: &ClusterState, worker: &str) -> bool {
    state
        .workers
        .get(worker)
        .is_some_and(|w| w.state == WorkerState::Alive)
}

/// A new placement for `app` when some PE lacks an alive worker, with the GPUs of the
/// PEs placed anew; `None` when its placement is complete. `Err` says why it cannot be
/// placed.
fn replace(
    state: &ClusterState,
    app: &AppRecord,
    free: &mut [WorkerCapacity],
    devices: &DevicePolicy,
    rates: &MeasuredRates,
) -> Result<Option<(Placement, Gpus)>, String> {
    let spec = &app.current().spec;
    let requests = requests_for(spec);
    let mut kept: BTreeMap<PeId, String> = BTreeMap::new();
    let mut pending: Vec<PeRequest> = Vec::new();
    for r in requests {
        match app.placement.get(r.pe.as_str()) {
            Some(w) if alive(state, w) => {
                kept.insert(r.pe.clone(), w.clone());
            }
            _ => pending.push(r),
        }
    }
    let stale = app.placement.len() != kept.len();
    if pending.is_empty() && !stale {
        return Ok(None);
    }
    weigh(&mut pending, spec, |pe| {
        rates.get(&(app.name.clone(), pe.to_string())).copied()
    });
    let placed = place_with(free, &pending, &kept, devices).map_err(|e| e.to_string())?;
    deduct(free, &pending, &placed);
    Ok(Some(joined(kept, placed)))
}

/// The whole placement: PEs kept where they run and PEs just placed, with the GPUs
/// allocated to the latter.
pub(crate) fn joined(
    kept: BTreeMap<PeId, String>,
    placed: impl IntoIterator<Item = (PeId, Assignment)>,
) -> (Placement, Gpus) {
    let mut out: Placement = kept;
    let mut gpus = Gpus::new();
    for (pe, a) in placed {
        if !a.gpus.is_empty() {
            gpus.insert(pe.clone(), a.gpus);
        }
        out.insert(pe, a.worker);
    }
    (out, gpus)
}

/// Takes what `placed` uses off `free`, so the next app is placed around it. Looked up
/// through maps: an app of 10,000 PEs on 1,000 workers is 10,000 lookups, not 10,000
/// scans of both lists.
fn deduct(free: &mut [WorkerCapacity], pending: &[PeRequest], placed: &BTreeMap<PeId, Assignment>) {
    let mut position: HashMap<&str, usize> = HashMap::with_capacity(free.len());
    for (i, w) in free.iter().enumerate() {
        position.entry(w.id.as_str()).or_insert(i);
    }
    let mut request: HashMap<&PeId, &PeRequest> = HashMap::with_capacity(pending.len());
    for r in pending {
        request.entry(&r.pe).or_insert(r);
    }
    let uses: Vec<(usize, &PeRequest, &[String])> = placed
        .iter()
        .filter_map(|(pe, a)| {
            Some((
                *position.get(a.worker.as_str())?,
                *request.get(pe)?,
                &a.gpus[..],
            ))
        })
        .collect();
    for (i, r, uuids) in uses {
        let w = &mut free[i];
        w.cpu_free -= r.cpu;
        w.memory_free_mb = w.memory_free_mb.saturating_sub(r.memory_mb);
        let per_slice = r.gpu.as_ref().map_or(0, |g| g.memory_mb);
        for u in uuids {
            if let Some(slot) = w.gpus.iter_mut().find(|g| &g.uuid == u) {
                slot.memory_free_mb = slot.memory_free_mb.saturating_sub(per_slice);
            }
        }
    }
}

/// Why PEs of a placed `app` lost their state, with the operators affected and a
/// checkpoint that must not be used; empty when none did.
fn losses(
    state: &ClusterState,
    app: &AppRecord,
    seen: &BTreeMap<String, Vec<SeenPe>>,
) -> (BTreeSet<String>, Vec<String>, Option<u64>) {
    let ck = &app.checkpoints;
    let mut ops = BTreeSet::new();
    let mut why = Vec::new();
    let mut bad = None;
    for (pe, w) in &app.placement {
        let op = pe.operator();
        let attempt = ck.attempt(op);
        match state.workers.get(w) {
            Some(rec) if rec.state == WorkerState::Alive => {
                if ck
                    .incarnations
                    .get(pe)
                    .is_some_and(|i| *i != rec.incarnation)
                {
                    ops.insert(op.to_string());
                    why.push(format!("worker {w} restarted ({pe})"));
                    continue;
                }
            }
            _ => {
                ops.insert(op.to_string());
                why.push(format!("worker {w} lost ({pe})"));
                continue;
            }
        }
        let Some(s) = seen.get(w).and_then(|pes| {
            pes.iter()
                .find(|s| &s.pe == pe && s.app == app.name && s.attempt == attempt)
        }) else {
            continue;
        };
        if s.restore_failed != 0 && ck.restore.get(op) == Some(&s.restore_failed) {
            ops.insert(op.to_string());
            why.push(format!(
                "checkpoint {} unreadable for {pe}: {}",
                s.restore_failed, s.message
            ));
            bad = Some(s.restore_failed);
        } else if s.state == pb::PeState::Failed {
            ops.insert(op.to_string());
            why.push(format!("{pe} failed: {}", s.message));
        }
    }
    // Several PEs of one lost worker say the same thing.
    why.dedup_by(|a, b| a.split(" (").next() == b.split(" (").next());
    (ops, why, bad)
}

/// The checkpoint a recovery of `app` restores: the newest complete one before `bad`
/// (one a PE could not read) whose every snapshot has a copy on a live worker
/// ([`CheckpointRecord::readable`]), with the newer ones it skipped; 0 (empty state)
/// without any. When none is readable it is the newest before `bad` all the same:
/// a lost worker that comes back with its disk makes it readable, and a PE that
/// cannot read it reports so (`bad`), so the next recovery falls back one further
/// (until 2026-12-07 that was the only way: with one copy of each snapshot, a worker
/// loss tried every kept checkpoint in turn, 1, 2 and 4 s apart).
fn recovery_checkpoint(state: &ClusterState, app: &AppRecord, bad: Option<u64>) -> (u64, Vec<u64>) {
    let up = |w: &str| {
        state
            .workers
            .get(w)
            .is_some_and(|r| r.state == WorkerState::Alive)
    };
    let usable: Vec<&CheckpointRecord> = app
        .checkpoints
        .complete
        .iter()
        .rev()
        .filter(|c| bad.is_none_or(|b| c.id < b))
        .collect();
    match usable.iter().position(|c| c.readable(up)) {
        Some(i) => (usable[i].id, usable[..i].iter().map(|c| c.id).collect()),
        None => (usable.first().map_or(0, |c| c.id), Vec::new()),
    }
}

fn recovery_due(app: &AppRecord, now_ms: u64) -> bool {
    let recent = &app.checkpoints.recoveries;
    let Some(last) = recent.last() else {
        return true;
    };
    let in_last_minute = recent
        .iter()
        .filter(|r| now_ms.saturating_sub(r.at_ms) < 60_000)
        .count() as u32;
    let gap = (RECOVERY_GAP_MS << in_last_minute.min(6)).min(30_000);
    now_ms.saturating_sub(last.at_ms) >= gap
}

/// What the previous decision learnt about apps that could not be placed, so that an
/// app that has not changed, facing free capacity that has not changed, is not
/// expanded and tried again on every tick (with thousands of apps waiting for
/// capacity, that work stalled the leader for tens of milliseconds per tick).
///
/// Sound because placement is a pure function of the app and the free capacity, and
/// because holding the app's `Arc` makes any change to the app (applied through
/// `Arc::make_mut`) produce a new `Arc`: pointer equality means the same content.
#[derive(Debug, Default)]
pub struct PlacementMemo {
    /// Free capacity at the start of the previous decision.
    free: Vec<WorkerCapacity>,
    /// Apps refused against exactly that capacity, why, and the last call that
    /// refused them.
    refused: HashMap<String, (Arc<AppRecord>, String, u64)>,
    /// Calls so far.
    calls: u64,
}

impl PlacementMemo {
    /// How many refusals are remembered.
    pub fn len(&self) -> usize {
        self.refused.len()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.refused.is_empty()
    }
}

/// Decides what to do (see the module doc). `seen` holds, per alive worker that
/// reported, the PEs it runs; `now_ms` is the leader's clock.
pub fn reconcile(
    state: &ClusterState,
    seen: &BTreeMap<String, Vec<SeenPe>>,
    now_ms: u64,
) -> Actions {
    reconcile_with(
        state,
        seen,
        now_ms,
        &mut PlacementMemo::default(),
        &Policy::default(),
    )
}

/// [`reconcile`] under `policy`, remembering refused placements in `memo` from one
/// call to the next (the answer is the same as without it).
pub fn reconcile_with(
    state: &ClusterState,
    seen: &BTreeMap<String, Vec<SeenPe>>,
    now_ms: u64,
    memo: &mut PlacementMemo,
    policy: &Policy,
) -> Actions {
    let mut actions = Actions::default();
    let mut round = Round::new(capacities(state), memo, &policy.devices, rates(state, seen));
    let mut replaced: BTreeSet<String> = BTreeSet::new();
    // Placed apps first: a running app's lost PEs come before anything queued.
    for app in state
        .apps
        .values()
        .filter(|a| a.state().is_live() && !a.placement.is_empty())
    {
        let (ops, mut why, bad) = losses(state, app, seen);
        if !ops.is_empty() && super::upgrade::active(state, app).is_some() {
            replaced.insert(app.name.clone());
            actions.aborts.insert(app.name.clone(), why.join("; "));
            continue;
        }
        if !ops.is_empty() {
            replaced.insert(app.name.clone());
            if !recovery_due(app, now_ms) {
                continue;
            }
            let (checkpoint_id, skipped) = recovery_checkpoint(state, app, bad);
            if !skipped.is_empty() {
                let ids: Vec<String> = skipped.iter().map(u64::to_string).collect();
                why.push(format!(
                    "checkpoint{} {} skipped: a snapshot has no copy on a live worker",
                    if ids.len() > 1 { "s" } else { "" },
                    ids.join(", ")
                ));
            }
            round.untouched = false;
            match replace(state, app, &mut round.free, &policy.devices, &round.rates) {
                Ok(p) => {
                    let (placement, gpus) =
                        p.unwrap_or_else(|| (app.placement.clone(), Gpus::new()));
                    actions.recoveries.push(RecoveryAction {
                        app: app.name.clone(),
                        operators: app.region(&ops),
                        checkpoint_id,
                        placement,
                        reason: why.join("; "),
                        drop_checkpoint: bad,
                        gpus,
                    })
                }
                Err(e) => {
                    actions.unplaceable.push((app.name.clone(), e.clone()));
                    actions
                        .queue
                        .push(QueueEntry::running(app, Wait::Capacity(e)));
                }
            }
            continue;
        }
        match round.place(state, app, &mut actions) {
            Ok(false) => {}
            Ok(true) => {
                replaced.insert(app.name.clone());
            }
            Err(e) => {
                replaced.insert(app.name.clone());
                actions
                    .queue
                    .push(QueueEntry::running(app, Wait::Capacity(e)));
            }
        }
    }
    // Then the queue, in its order (see `scheduler::queue`).
    let held = usage::held(state);
    let shares = usage::shares(state, now_ms, usage::SHARE_WINDOW_MS);
    let mut empty: Option<Vec<WorkerCapacity>> = None;
    // At most this many victim searches per decision (each places the app a few
    // times), and one preemption: its effect (capacity freed) is seen by the next.
    let (mut searches, mut preempting) = (0, false);
    let busy: BTreeSet<String> = replaced.clone();
    let served = queue::serve(
        state,
        now_ms,
        policy.queue,
        &held,
        &shares,
        |app| {
            let empty = empty.get_or_insert_with(|| capacities_when_empty(state));
            let reqs = requests_for(&app.current().spec);
            place_with(empty, &reqs, &BTreeMap::new(), &policy.devices).is_ok()
        },
        |app| {
            replaced.insert(app.name.clone());
            let why = match round.place(state, app, &mut actions) {
                Ok(_) => return Ok(()),
                Err(why) => why,
            };
            // A FIFO queue knows no classes: nobody preempts. Victims are chosen
            // against the capacity as it stands when this app is examined, before
            // anything behind it is tried; what they free is kept for it.
            if preempting || policy.queue != QueueOrder::Fair || searches >= MAX_VICTIM_SEARCHES {
                return Err(Wait::Capacity(why));
            }
            if app.current().spec.priority != weir_common::spec::Priority::High {
                return Err(Wait::Capacity(why));
            }
            searches += 1;
            match preempt::victims(state, app, &round.free, &policy.devices, &busy) {
                Some(victims) => {
                    preempting = true;
                    for v in &victims {
                        actions.preemptions.push((v.clone(), app.name.clone()));
                    }
                    Err(Wait::Preempting(victims))
                }
                None => Err(Wait::Capacity(why)),
            }
        },
    );
    // The victims are stopped, not deployed.
    for (victim, _) in &actions.preemptions {
        replaced.insert(victim.clone());
    }
    for (entry, wait) in served {
        let Some(wait) = wait else { continue };
        replaced.insert(entry.app.name.clone());
        if !matches!(wait, Wait::Capacity(_)) {
            actions
                .unplaceable
                .push((entry.app.name.clone(), wait.to_string()));
        }
        actions.queue.push(QueueEntry {
            app: entry.app.name.clone(),
            tenant: entry.app.tenant.clone(),
            priority: entry.app.current().spec.priority,
            rank: entry.rank,
            share: entry.share,
            queued_at_ms: entry.queued_at_ms(),
            pes: entry.demand.pes,
            wait,
        });
    }
    // Forget apps not refused this time (placed, changed, gone).
    let call = round.call;
    round.memo.refused.retain(|_, (_, _, last)| *last == call);
    // Deploy what is placed (apps being re-placed wait for the new placement).
    for app in state.apps.values().filter(|a| a.state().is_live()) {
        if replaced.contains(&app.name) {
            continue;
        }
        if has_finished(state, app, seen) {
            actions.finished.push(app.name.clone());
            continue;
        }
        for (pe, w) in &app.placement {
            let Some(pes) = seen.get(w) else { continue };
            let attempt = app.checkpoints.attempt(pe.operator());
            // PE ids are unique within an app only: another app's PE of the same id
            // is not this one.
            let running = pes.iter().any(|s| {
                &s.pe == pe
                    && s.app == app.name
                    && s.attempt >= attempt
                    && s.state != pb::PeState::Failed
            });
            if !running {
                actions
                    .deploys
                    .push((app.name.clone(), pe.clone(), w.clone()));
            }
        }
    }
    // Stop what no live app places where it runs.
    for (w, pes) in seen {
        if !alive(state, w) {
            continue;
        }
        for s in pes {
            let live = state.apps.get(&s.app).filter(|a| a.state().is_live());
            let wanted = live
                .and_then(|a| a.placement.get(s.pe.as_str()))
                .is_some_and(|pw| pw == w)
                || live
                    .and_then(|a| super::upgrade::active(state, a))
                    .and_then(|u| u.placement.get(s.pe.as_str()))
                    .is_some_and(|pw| pw == w);
            if !wanted {
                actions.stops.push((w.clone(), s.app.clone(), s.pe.clone()));
            }
        }
    }
    actions
}

/// One decision's placements: the free capacity left so far, and the refusals it
/// remembers.
struct Round<'a> {
    free: Vec<WorkerCapacity>,
    memo: &'a mut PlacementMemo,
    devices: &'a DevicePolicy,
    /// What the PEs reported, for locality by the heaviest streams.
    rates: MeasuredRates,
    /// This call's number.
    call: u64,
    /// Nothing placed yet in this call: a refusal is remembered against the capacity
    /// the call started from, so only while this holds; last call's refusals still
    /// hold if it started from the same capacity.
    untouched: bool,
}

impl<'a> Round<'a> {
    fn new(
        free: Vec<WorkerCapacity>,
        memo: &'a mut PlacementMemo,
        devices: &'a DevicePolicy,
        rates: MeasuredRates,
    ) -> Self {
        if memo.free != free {
            memo.refused.clear();
            memo.free = free.clone();
        }
        memo.calls += 1;
        Self {
            free,
            call: memo.calls,
            memo,
            devices,
            rates,
            untouched: true,
        }
    }

    /// Places `app` (PEs without an alive worker) around what runs, pushing the new
    /// placement or the refusal onto `actions`: `Ok(true)` placed, `Ok(false)` nothing
    /// to place, `Err` why it cannot be placed now.
    fn place(
        &mut self,
        state: &ClusterState,
        app: &Arc<AppRecord>,
        actions: &mut Actions,
    ) -> Result<bool, String> {
        if self.untouched {
            if let Some((seen_app, why, last)) = self.memo.refused.get_mut(&app.name) {
                if Arc::ptr_eq(seen_app, app) {
                    *last = self.call;
                    actions.unplaceable.push((app.name.clone(), why.clone()));
                    return Err(why.clone());
                }
            }
        }
        match replace(state, app, &mut self.free, self.devices, &self.rates) {
            Ok(Some((p, gpus))) => {
                if !gpus.is_empty() {
                    actions.gpus.insert(app.name.clone(), gpus);
                }
                actions.placements.push((app.name.clone(), p));
                self.untouched = false;
                Ok(true)
            }
            Ok(None) => Ok(false),
            Err(why) => {
                if self.untouched {
                    self.memo
                        .refused
                        .insert(app.name.clone(), (app.clone(), why.clone(), self.call));
                }
                actions.unplaceable.push((app.name.clone(), why.clone()));
                Err(why)
            }
        }
    }
}

/// Victim searches per decision at most (see `reconcile_with`).
const MAX_VICTIM_SEARCHES: u32 = 2;

/// (app, PE) -> its measured (in, out) rates, records/s.
pub type MeasuredRates = HashMap<(String, String), Rates>;

/// What the PEs placed where they run report, by (app, PE).
fn rates(state: &ClusterState, seen: &BTreeMap<String, Vec<SeenPe>>) -> MeasuredRates {
    let mut out = MeasuredRates::new();
    for (w, pes) in seen {
        for p in pes {
            let here = state
                .apps
                .get(&p.app)
                .and_then(|a| a.placement.get(p.pe.as_str()))
                .is_some_and(|pw| pw == w);
            if here && (p.rate_in > 0.0 || p.rate_out > 0.0) {
                out.insert((p.app.clone(), p.pe.clone()), (p.rate_in, p.rate_out));
            }
        }
    }
    out
}

/// Every worker's capacity as if nothing ran: what an app would need to fit at all.
fn capacities_when_empty(state: &ClusterState) -> Vec<WorkerCapacity> {
    let mut idle = state.clone();
    idle.apps.clear();
    capacities(&idle)
}

/// Whether `app` ran to its end: it runs (no upgrade in progress), and every PE of its
/// placement is reported stopped, under its current attempt, by the worker it is
/// placed on. A PE stops by itself only once all its inputs ended, so this holds only
/// after every source finished and everything downstream drained.
fn has_finished(
    state: &ClusterState,
    app: &AppRecord,
    seen: &BTreeMap<String, Vec<SeenPe>>,
) -> bool {
    use crate::state::AppState;
    if app.state() != AppState::Running
        || app.upgrade.is_some()
        || app.placement.is_empty()
        || super::upgrade::active(state, app).is_some()
    {
        return false;
    }
    app.placement.iter().all(|(pe, w)| {
        let attempt = app.checkpoints.attempt(pe.operator());
        seen.get(w).is_some_and(|pes| {
            pes.iter().any(|s| {
                &s.pe == pe
                    && s.app == app.name
                    && s.attempt == attempt
                    && s.state == pb::PeState::Stopped
            })
        })
    })
}
