//! The reconciler's decisions, pure: from the replicated state (desired) and what
//! workers report (actual) to the actions that close the gap.
//!
//! - **Placement**: every PE of a live app must sit on an alive worker. PEs that do
//!   not (new apps, PEs of a lost worker) are placed by the scheduler around the ones
//!   that do; the app's placement is then rewritten through Raft.
//! - **Deploy**: a placed PE its worker does not report (never deployed, the worker
//!   restarted empty) or reports FAILED is deployed there.
//! - **Stop**: a PE a worker reports that no live app places there (cancelled app, a
//!   PE moved away, an old version) is stopped.

use crate::scheduler::{place, requests_for, GpuSlot, PeRequest, WorkerCapacity};
use crate::state::{AppRecord, ClusterState, WorkerState};
use std::collections::{BTreeMap, BTreeSet};
use weir_common::physical::PeId;
use weir_common::spec::{Scenario, Vendor, SCENARIOS, VENDORS};
use weir_proto::v1 as pb;

/// One PE as a worker reported it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SeenPe {
    /// PE id.
    pub pe: String,
    /// Its app.
    pub app: String,
    /// Its state.
    pub state: pb::PeState,
}

/// What to do.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Actions {
    /// New placements to commit, per app (the whole map of the app).
    pub placements: Vec<(String, BTreeMap<String, String>)>,
    /// Apps that cannot be placed now, and why.
    pub unplaceable: Vec<(String, String)>,
    /// PEs to deploy: (app, PE, worker).
    pub deploys: Vec<(String, String, String)>,
    /// PEs to stop: (worker, PE).
    pub stops: Vec<(String, String)>,
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
    for app in state.apps.values().filter(|a| a.state.is_live()) {
        let spec = &app.current().spec;
        for (pe, w) in &app.placement {
            let op = pe.split_once('@').map_or(pe.as_str(), |(op, _)| op);
            if let Some(o) = spec.operator(op) {
                let u = used.entry(w.as_str()).or_default();
                u.0 += o.resources.cpu;
                u.1 += o.resources.memory_mb;
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
                        memory_free_mb: g.memory_total_mb,
                    })
                    .collect(),
            }
        })
        .collect()
}

fn alive(state: &ClusterState, worker: &str) -> bool {
    state
        .workers
        .get(worker)
        .is_some_and(|w| w.state == WorkerState::Alive)
}

/// A new placement for `app` when some PE lacks an alive worker; `None` when its
/// placement is complete. `Err` says why it cannot be placed.
fn replace(
    state: &ClusterState,
    app: &AppRecord,
    free: &mut [WorkerCapacity],
) -> Result<Option<BTreeMap<String, String>>, String> {
    let requests = requests_for(&app.current().spec);
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
    let placed = place(free, &pending, &kept).map_err(|e| e.to_string())?;
    let mut out: BTreeMap<String, String> = kept
        .into_iter()
        .map(|(pe, w)| (pe.to_string(), w))
        .collect();
    for (pe, a) in placed {
        if let Some(w) = free.iter_mut().find(|w| w.id == a.worker) {
            if let Some(r) = pending.iter().find(|r| r.pe == pe) {
                w.cpu_free -= r.cpu;
                w.memory_free_mb = w.memory_free_mb.saturating_sub(r.memory_mb);
            }
        }
        out.insert(pe.to_string(), a.worker);
    }
    Ok(Some(out))
}

/// Decides what to do (see the module doc). `seen` holds, per alive worker that
/// reported, the PEs it runs.
pub fn reconcile(state: &ClusterState, seen: &BTreeMap<String, Vec<SeenPe>>) -> Actions {
    let mut actions = Actions::default();
    let mut free = capacities(state);
    let mut replaced: BTreeSet<&str> = BTreeSet::new();
    for app in state.apps.values().filter(|a| a.state.is_live()) {
        match replace(state, app, &mut free) {
            Ok(Some(p)) => {
                replaced.insert(&app.name);
                actions.placements.push((app.name.clone(), p));
            }
            Ok(None) => {}
            Err(why) => {
                replaced.insert(&app.name);
                actions.unplaceable.push((app.name.clone(), why));
            }
        }
    }
    // Deploy what is placed (apps being re-placed wait for the new placement).
    for app in state.apps.values().filter(|a| a.state.is_live()) {
        if replaced.contains(app.name.as_str()) {
            continue;
        }
        for (pe, w) in &app.placement {
            let Some(pes) = seen.get(w) else { continue };
            let running = pes
                .iter()
                .any(|s| &s.pe == pe && s.state != pb::PeState::Failed);
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
            let wanted = state
                .apps
                .get(&s.app)
                .filter(|a| a.state.is_live())
                .and_then(|a| a.placement.get(&s.pe))
                .is_some_and(|pw| pw == w);
            if !wanted {
                actions.stops.push((w.clone(), s.pe.clone()));
            }
        }
    }
    actions
}
