//! Pools: every worker and every device belongs to the pool of its scenario and
//! vendor (`inference-nvidia`, `training-amd`, `general-cpu`, ...), and each pool
//! reports what it has, what is allocated and what waits for it. Pure: from the state,
//! the free capacity the scheduler computes, and the queue.
//!
//! - A worker's scenario comes from its `scenario` (or `pool`) label, `general` by
//!   default; a device's vendor from NVML or the worker's declared accelerators. A
//!   worker belongs to the pool of its scenario and its first device's vendor (`cpu`
//!   without devices), and its cores and memory count there; a device of another
//!   vendor on the same worker counts in that vendor's pool.
//! - *Pending* PEs are those of queued apps. A PE asking GPUs waits for the first pool
//!   (by name) whose scenario and vendor match its request, or for a pool named after
//!   the request when none exists (so demand with nothing to serve it shows); a PE
//!   without GPUs waits for `general-cpu` when that pool exists, else the first pool.

use super::{GpuSlot, WorkerCapacity};
use crate::state::{ClusterState, WorkerRecord, WorkerState};
use std::collections::BTreeMap;
use weir_common::spec::{AppSpec, Scenario, Vendor, SCENARIOS, VENDORS};

/// One device as a pool shows it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct DeviceView {
    /// UUID.
    pub uuid: String,
    /// Its worker.
    pub worker: String,
    /// Model.
    pub model: String,
    /// Memory, MiB.
    pub memory_total_mb: u64,
    /// Memory allocated, MiB.
    pub memory_used_mb: u64,
    /// Slices allocated on it.
    pub slices: u32,
}

/// One pool's figures.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PoolView {
    /// `{scenario}-{vendor}`.
    pub name: String,
    /// Scenario.
    pub scenario: String,
    /// Vendor, or `cpu`.
    pub vendor: String,
    /// Its workers.
    pub workers: Vec<String>,
    /// Its devices.
    pub devices: Vec<DeviceView>,
    /// Cores, total and allocated.
    pub cpu_total: f64,
    /// Cores allocated.
    pub cpu_used: f64,
    /// Memory, MiB.
    pub memory_total_mb: u64,
    /// Memory allocated, MiB.
    pub memory_used_mb: u64,
    /// PEs placed on its workers.
    pub pes_placed: u64,
    /// PEs of queued apps waiting for it.
    pub pes_pending: u64,
    /// The longest any of those has waited, ms.
    pub longest_wait_ms: u64,
}

impl PoolView {
    /// Device memory, MiB.
    pub fn gpu_memory_total_mb(&self) -> u64 {
        self.devices
            .iter()
            .fold(0u64, |t, d| t.saturating_add(d.memory_total_mb))
    }

    /// Device memory allocated, MiB.
    pub fn gpu_memory_used_mb(&self) -> u64 {
        self.devices
            .iter()
            .fold(0u64, |t, d| t.saturating_add(d.memory_used_mb))
    }

    /// Devices with any allocation.
    pub fn gpus_used(&self) -> u32 {
        self.devices
            .iter()
            .filter(|d| d.slices > 0 || d.memory_used_mb > 0)
            .count() as u32
    }
}

fn name_of<T: PartialEq>(names: &[(&'static str, T)], v: &T) -> &'static str {
    names.iter().find(|(_, x)| x == v).map_or("any", |(n, _)| n)
}

/// The scenario of a worker, from its labels.
pub fn scenario_of(w: &WorkerRecord) -> Scenario {
    w.labels
        .get("scenario")
        .or_else(|| w.labels.get("pool"))
        .and_then(|s| {
            SCENARIOS
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(s))
                .map(|(_, v)| *v)
        })
        .unwrap_or_default()
}

fn pool_name(scenario: &str, vendor: &str) -> String {
    format!("{scenario}-{vendor}")
}

/// The pool `{scenario}-{vendor}` of `out`, created empty if new; answers its name.
fn entry(out: &mut BTreeMap<String, PoolView>, scenario: &str, vendor: &str) -> String {
    let name = pool_name(scenario, vendor);
    out.entry(name.clone()).or_insert_with(|| PoolView {
        name: name.clone(),
        scenario: scenario.to_string(),
        vendor: vendor.to_string(),
        ..PoolView::default()
    });
    name
}

/// Every pool of `state`: `free` is the free capacity the scheduler computes
/// (`capacities`), `queued` the apps waiting with how long they have waited.
pub fn pools(
    state: &ClusterState,
    free: &[WorkerCapacity],
    queued: &[(&AppSpec, u64)],
) -> Vec<PoolView> {
    let free: BTreeMap<&str, &WorkerCapacity> = free.iter().map(|w| (w.id.as_str(), w)).collect();
    let mut slices: BTreeMap<&str, u32> = BTreeMap::new();
    let mut placed: BTreeMap<&str, u64> = BTreeMap::new();
    for app in state.apps.values().filter(|a| a.state().is_live()) {
        for uuid in app.gpus.values().flatten() {
            *slices.entry(uuid.as_str()).or_default() += 1;
        }
        for w in app.placement.values() {
            *placed.entry(w.as_str()).or_default() += 1;
        }
        // An upgrade's new PEs run beside the old ones until the switch (the free
        // capacity deducts them too).
        let Some(up) = app.upgrade.and_then(|id| state.upgrades.get(&id)) else {
            continue;
        };
        for (pe, w) in up
            .placement
            .iter()
            .filter(|(pe, _)| !app.placement.contains_key(*pe))
        {
            *placed.entry(w.as_str()).or_default() += 1;
            for uuid in up.gpus.get(pe).into_iter().flatten() {
                *slices.entry(uuid.as_str()).or_default() += 1;
            }
        }
    }
    let mut out: BTreeMap<String, PoolView> = BTreeMap::new();
    for w in state
        .workers
        .values()
        .filter(|w| w.state == WorkerState::Alive)
    {
        let scenario = name_of(SCENARIOS, &scenario_of(w));
        let vendor = w.gpus.first().map_or("cpu", |g| g.vendor.as_str());
        let home = entry(&mut out, scenario, vendor);
        let cap = free.get(w.id.as_str());
        if let Some(p) = out.get_mut(&home) {
            p.workers.push(w.id.clone());
            // Saturating: the figures come from what workers registered.
            p.cpu_total += w.cpu_cores;
            p.memory_total_mb = p.memory_total_mb.saturating_add(w.memory_mb);
            if let Some(c) = cap {
                p.cpu_used += (w.cpu_cores - c.cpu_free).max(0.0);
                p.memory_used_mb = p
                    .memory_used_mb
                    .saturating_add(w.memory_mb.saturating_sub(c.memory_free_mb));
            }
            p.pes_placed = p
                .pes_placed
                .saturating_add(placed.get(w.id.as_str()).copied().unwrap_or(0));
        }
        for g in &w.gpus {
            let pool = entry(&mut out, scenario, &g.vendor);
            let free_mb = cap
                .and_then(|c| c.gpus.iter().find(|s: &&GpuSlot| s.uuid == g.uuid))
                .map_or(g.memory_total_mb, |s| s.memory_free_mb);
            if let Some(p) = out.get_mut(&pool) {
                if !p.workers.contains(&w.id) {
                    p.workers.push(w.id.clone());
                }
                p.devices.push(DeviceView {
                    uuid: g.uuid.clone(),
                    worker: w.id.clone(),
                    model: g.model.clone(),
                    memory_total_mb: g.memory_total_mb,
                    memory_used_mb: g.memory_total_mb.saturating_sub(free_mb),
                    slices: slices.get(g.uuid.as_str()).copied().unwrap_or(0),
                });
            }
        }
    }
    for (spec, waited) in queued {
        for op in &spec.operators {
            let target = match &op.resources.gpu {
                Some(g) => out
                    .values()
                    .find(|p| {
                        !p.devices.is_empty()
                            && (g.scenario == Scenario::General
                                || p.scenario == name_of(SCENARIOS, &g.scenario))
                            && (g.vendor == Vendor::Any || p.vendor == name_of(VENDORS, &g.vendor))
                    })
                    .map(|p| p.name.clone())
                    .unwrap_or_else(|| {
                        pool_name(name_of(SCENARIOS, &g.scenario), name_of(VENDORS, &g.vendor))
                    }),
                None => {
                    let cpu = pool_name("general", "cpu");
                    if out.contains_key(&cpu) {
                        cpu
                    } else {
                        out.keys().next().cloned().unwrap_or(cpu)
                    }
                }
            };
            let (scenario, vendor) = target.split_once('-').unwrap_or((&target, ""));
            let (scenario, vendor) = (scenario.to_string(), vendor.to_string());
            let p = out.entry(target.clone()).or_insert_with(|| PoolView {
                name: target,
                scenario,
                vendor,
                ..PoolView::default()
            });
            p.pes_pending = p.pes_pending.saturating_add(u64::from(op.parallelism));
            p.longest_wait_ms = p.longest_wait_ms.max(*waited);
        }
    }
    for p in out.values_mut() {
        p.workers.sort();
    }
    out.into_values().collect()
}

#[cfg(test)]
#[path = "pools_tests.rs"]
mod tests;
