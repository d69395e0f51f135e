//! Tenants' shares of the cluster, for the queue's order (what apps and tenants hold,
//! and quotas, are the state's: [`crate::state::quota`]).
//!
//! - A tenant's *share* over a sliding window is its dominant resource share (DRF: the
//!   largest of its fractions of the cluster's CPU, memory and GPU memory),
//!   averaged over the window: an app that ran for half the window at 40 % counts 20 %.
//!   The queue serves the least-served tenant first.

pub use crate::state::quota::{held, held_by, holds, over_quota, Demand};
use crate::state::{AppRecord, AppState, ClusterState, WorkerState};
use std::collections::BTreeMap;

/// The window tenants' shares are averaged over.
pub const SHARE_WINDOW_MS: u64 = 10 * 60 * 1000;

/// The cluster's capacity: every alive worker's cores, memory and devices.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Totals {
    /// Cores.
    pub cpu: f64,
    /// Memory, MiB.
    pub memory_mb: u64,
    /// Devices.
    pub gpus: u64,
    /// GPU memory, MiB.
    pub gpu_memory_mb: u64,
}

impl Totals {
    /// The capacity of the alive workers of `state`.
    pub fn of(state: &ClusterState) -> Self {
        let mut t = Self::default();
        for w in state
            .workers
            .values()
            .filter(|w| w.state == WorkerState::Alive)
        {
            t.cpu += w.cpu_cores;
            t.memory_mb = t.memory_mb.saturating_add(w.memory_mb);
            t.gpus += w.gpus.len() as u64;
            t.gpu_memory_mb = t
                .gpu_memory_mb
                .saturating_add(w.gpus.iter().map(|g| g.memory_total_mb).sum());
        }
        t
    }

    /// The largest fraction of cores, memory or GPU memory `d` takes (resources the
    /// cluster lacks are left out: they cannot be shared).
    pub fn dominant_share(&self, d: &Demand) -> f64 {
        let frac = |used: f64, total: f64| if total > 0.0 { used / total } else { 0.0 };
        // GPU slices are left out: several slices may share one device, so slices
        // over devices is no share (GPU memory measures what they take).
        [
            frac(d.cpu, self.cpu),
            frac(d.memory_mb as f64, self.memory_mb as f64),
            frac(d.gpu_memory_mb as f64, self.gpu_memory_mb as f64),
        ]
        .into_iter()
        .fold(0.0, f64::max)
    }
}

/// When an app stopped holding resources, if it did.
fn ended_at(app: &AppRecord) -> Option<u64> {
    match app.state() {
        AppState::Cancelled => app.cancelled_at_ms,
        AppState::Finished => app.finished.as_ref().map(|f| f.at_ms),
        // A failed app records no end: it stops counting at once.
        AppState::Failed => app.placed_at_ms,
        // Preempted: back in the queue since then.
        _ if app.placement.is_empty() => app.queued_at_ms,
        _ => None,
    }
}

/// Each tenant's dominant share averaged over the `window_ms` before `now_ms` (see the
/// module doc). Tenants that held nothing in the window are absent (share 0).
pub fn shares(state: &ClusterState, now_ms: u64, window_ms: u64) -> BTreeMap<String, f64> {
    let totals = Totals::of(state);
    let from = now_ms.saturating_sub(window_ms);
    let mut out: BTreeMap<String, f64> = BTreeMap::new();
    if window_ms == 0 {
        return out;
    }
    for app in state.apps.values() {
        let Some(start) = app.placed_at_ms else {
            continue;
        };
        let end = ended_at(app).unwrap_or(now_ms).min(now_ms);
        let overlap = end.saturating_sub(start.max(from));
        if overlap == 0 {
            continue;
        }
        let share = totals.dominant_share(&held_by(state, app)) * overlap as f64 / window_ms as f64;
        *out.entry(app.tenant.clone()).or_default() += share;
    }
    out
}

#[cfg(test)]
#[path = "usage_tests.rs"]
mod tests;
