//! Quotas: what apps hold, what tenants hold, and whether a tenant's quota allows
//! more. Pure arithmetic over the replicated state, so every leader reaches the same
//! answer; the state's checks refuse a submit or upgrade with it before anything is
//! proposed, and the scheduler's queue holds an app back with it.
//!
//! - An app's [`Demand`] is what its PEs ask for together (parallelism times each
//!   operator's resources); GPU slices count one each.
//! - A tenant *holds* the demand of its live apps that have been placed (an app waiting
//!   in the queue holds nothing). During an upgrade the app counts its current
//!   version's PEs and the other version's PEs it does not share: both run side by
//!   side until the switch (the scheduler deducts the same).

use super::{AppRecord, ClusterState, Quota};
use std::collections::{BTreeMap, BTreeSet};
use weir_common::fingerprint::operator_revision;
use weir_common::physical::PeId;
use weir_common::spec::{AppSpec, OperatorSpec};

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
        spec.operators.iter().fold(Self::default(), |d, op| {
            d.plus(Self::of_operator(op, op.parallelism))
        })
    }

    /// What `n` PEs of `op` ask for.
    pub fn of_operator(op: &OperatorSpec, n: u32) -> Self {
        let n = u64::from(n);
        let mut d = Self {
            cpu: op.resources.cpu * n as f64,
            memory_mb: op.resources.memory_mb.saturating_mul(n),
            pes: n,
            ..Self::default()
        };
        if let Some(g) = &op.resources.gpu {
            let slices = u64::from(g.count).saturating_mul(n);
            d.gpus = slices;
            d.gpu_memory_mb = slices.saturating_mul(g.memory_mb);
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

/// What `app` holds while placed: its current version's demand and, during an
/// upgrade, that of the other version's PEs the current one does not have (old and
/// new run side by side until the switch, and the old ones until the cleanup after
/// it): exactly what the scheduler deducts.
pub fn held_by(s: &ClusterState, app: &AppRecord) -> Demand {
    let cur = &app.current().spec;
    let now = Demand::of_spec(cur);
    let Some(up) = app.upgrade.and_then(|id| s.upgrades.get(&id)) else {
        return now;
    };
    let other = if up.to_version == app.current_version {
        up.from_version
    } else {
        up.to_version
    };
    match app.versions.get((other as usize).wrapping_sub(1)) {
        Some(v) => now.plus(extra_pes(cur, &v.spec)),
        None => now,
    }
}

/// What the PEs of `other` that `cur` does not have ask for (a PE is the same when
/// its id is: same operator, same revision, same index).
pub fn extra_pes(cur: &AppSpec, other: &AppSpec) -> Demand {
    let ids = |spec: &AppSpec| -> BTreeSet<PeId> {
        spec.operators
            .iter()
            .flat_map(|op| {
                let rev = operator_revision(op);
                (0..op.parallelism).map(move |i| PeId::new(&op.name, &rev, i))
            })
            .collect()
    };
    let have = ids(cur);
    let mut d = Demand::default();
    for op in &other.operators {
        let rev = operator_revision(op);
        let one = Demand::of_operator(op, 1);
        for i in 0..op.parallelism {
            if !have.contains(&PeId::new(&op.name, &rev, i)) {
                d = d.plus(one);
            }
        }
    }
    d
}

/// Whether `app` holds resources: live and placed.
pub fn holds(app: &AppRecord) -> bool {
    app.state().is_live() && !app.placement.is_empty()
}

/// What each tenant's placed live apps hold now.
pub fn held(state: &ClusterState) -> BTreeMap<String, Demand> {
    let mut out: BTreeMap<String, Demand> = BTreeMap::new();
    for app in state.apps.values().filter(|a| holds(a)) {
        let e = out.entry(app.tenant.clone()).or_default();
        *e = e.plus(held_by(state, app));
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
