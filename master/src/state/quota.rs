//! Quotas: what apps hold, what tenants hold, and whether a tenant's quota allows
//! more. Pure arithmetic over the replicated state, so every leader reaches the same
//! answer; the state's checks refuse a submit or upgrade with it before anything is
//! proposed, and the scheduler's queue holds an app back with it.
//!
//! - An app's [`Demand`] is what its PEs ask for together (parallelism times each
//!   operator's resources); GPU slices count one each.
//! - A tenant *holds* the demand of its live apps that have been placed (an app waiting
//!   in the queue holds nothing). During an upgrade the app counts the larger of its
//!   old and new versions, per resource: both run side by side until the switch.

use super::{AppRecord, ClusterState, Quota};
use std::collections::BTreeMap;
use weir_common::spec::AppSpec;

/// What an app asks for, or what a tenant holds.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Demand {
    /// Cores.
    pub cpu: f64,
    /// Memory, MiB.
    pub memory_mb: u64,
    /// GPU slices.
    pub gpus: u64,
    /// GPU memory, MiB.
    pub gpu_memory_mb: u64,
    /// PEs.
    pub pes: u64,
}

impl Demand {
    /// What every PE of `spec` asks for together.
    pub fn of_spec(spec: &AppSpec) -> Self {
        let mut d = Self::default();
        for op in &spec.operators {
            let n = u64::from(op.parallelism);
            d.cpu += op.resources.cpu * n as f64;
            d.memory_mb = d
                .memory_mb
                .saturating_add(op.resources.memory_mb.saturating_mul(n));
            d.pes += n;
            if let Some(g) = &op.resources.gpu {
                let slices = u64::from(g.count).saturating_mul(n);
                d.gpus = d.gpus.saturating_add(slices);
                d.gpu_memory_mb = d
                    .gpu_memory_mb
                    .saturating_add(slices.saturating_mul(g.memory_mb));
            }
        }
        d
    }

    /// The sum of both.
    pub fn plus(self, o: Self) -> Self {
        Self {
            cpu: self.cpu + o.cpu,
            memory_mb: self.memory_mb.saturating_add(o.memory_mb),
            gpus: self.gpus.saturating_add(o.gpus),
            gpu_memory_mb: self.gpu_memory_mb.saturating_add(o.gpu_memory_mb),
            pes: self.pes.saturating_add(o.pes),
        }
    }

    /// `self` without `o` (never below zero).
    pub fn minus(self, o: Self) -> Self {
        Self {
            cpu: (self.cpu - o.cpu).max(0.0),
            memory_mb: self.memory_mb.saturating_sub(o.memory_mb),
            gpus: self.gpus.saturating_sub(o.gpus),
            gpu_memory_mb: self.gpu_memory_mb.saturating_sub(o.gpu_memory_mb),
            pes: self.pes.saturating_sub(o.pes),
        }
    }

    /// The larger of both, per resource.
    pub fn max(self, o: Self) -> Self {
        Self {
            cpu: self.cpu.max(o.cpu),
            memory_mb: self.memory_mb.max(o.memory_mb),
            gpus: self.gpus.max(o.gpus),
            gpu_memory_mb: self.gpu_memory_mb.max(o.gpu_memory_mb),
            pes: self.pes.max(o.pes),
        }
    }
}

/// What `app` holds while placed: its current version's demand, or during an upgrade
/// the larger of both versions'.
pub fn held_by(app: &AppRecord) -> Demand {
    let now = Demand::of_spec(&app.current().spec);
    match app.versions.last() {
        Some(v) if app.upgrade.is_some() && v.version != app.current_version => {
            now.max(Demand::of_spec(&v.spec))
        }
        _ => now,
    }
}

/// Whether `app` holds resources: live and placed.
pub fn holds(app: &AppRecord) -> bool {
    app.state.is_live() && !app.placement.is_empty()
}

/// What each tenant's placed live apps hold now.
pub fn held(state: &ClusterState) -> BTreeMap<String, Demand> {
    let mut out: BTreeMap<String, Demand> = BTreeMap::new();
    for app in state.apps.values().filter(|a| holds(a)) {
        let e = out.entry(app.tenant.clone()).or_default();
        *e = e.plus(held_by(app));
    }
    out
}

/// The first limit of `quota` that `held` plus `more` would pass, as a refusal naming
/// the resource; `None` when everything fits.
pub fn over_quota(tenant: &str, quota: &Quota, held: &Demand, more: &Demand) -> Option<String> {
    let after = held.plus(*more);
    let f = |name: &str, unit: &str, limit: String, held: String, more: String| {
        format!(
            "quota.{name}: tenant {tenant:?} may hold {limit}{unit}; it holds {held}{unit} and this needs {more}{unit} more"
        )
    };
    if let Some(q) = quota.cpu {
        if after.cpu > q + 1e-9 {
            return Some(f(
                "cpu",
                " cores",
                fmt_cpu(q),
                fmt_cpu(held.cpu),
                fmt_cpu(more.cpu),
            ));
        }
    }
    let ints = [
        (
            "memory_mb",
            " MiB",
            quota.memory_mb,
            held.memory_mb,
            more.memory_mb,
        ),
        ("gpus", " GPU slices", quota.gpus, held.gpus, more.gpus),
        (
            "gpu_memory_mb",
            " MiB of GPU memory",
            quota.gpu_memory_mb,
            held.gpu_memory_mb,
            more.gpu_memory_mb,
        ),
        ("pes", " PEs", quota.pes, held.pes, more.pes),
    ];
    for (name, unit, limit, h, m) in ints {
        if let Some(l) = limit {
            if h.saturating_add(m) > l {
                return Some(f(name, unit, l.to_string(), h.to_string(), m.to_string()));
            }
        }
    }
    None
}

fn fmt_cpu(c: f64) -> String {
    let s = format!("{c:.3}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}
