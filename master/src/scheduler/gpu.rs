//! Which worker and devices each GPU PE of a round gets, before the rest is placed:
//! by the GPU-memory objective over all of them at once, or by a baseline rule one PE
//! at a time ([`DevicePolicy`]). The answer pins those PEs; `place` then puts the
//! other PEs around them as usual. Pure.
//!
//! Eligibility is the scheduler's usual: an alive worker holding the PE's image (for
//! containers), in a pool of the requested scenario (`general` asks for any), devices
//! of the requested vendor (`any` for all); the slices of one PE on distinct devices of
//! one worker, which must also have the PE's cores and memory free.

use super::objective::{self, Device, Host, Method, Problem, Task};
use super::policy::DevicePolicy;
use super::{PeRequest, Scenario, Vendor, WorkerCapacity};
use std::collections::BTreeMap;
use weir_common::image::Access;
use weir_common::physical::PeId;
use weir_common::spec::{SCENARIOS, VENDORS};

/// Where one GPU PE goes: a worker (index into the workers given) and its devices
/// (indexes into that worker's `gpus`), one per slice.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pin {
    /// Index of the worker.
    pub worker: usize,
    /// Indexes of its devices.
    pub devices: Vec<usize>,
}

fn name_of<T: PartialEq>(names: &[(&'static str, T)], v: &T) -> &'static str {
    names.iter().find(|(_, x)| x == v).map_or("any", |(n, _)| n)
}

/// Whether `w` may host `req` at all (devices aside).
fn host_ok(w: &WorkerCapacity, req: &PeRequest) -> bool {
    let Some(g) = &req.gpu else { return false };
    w.alive
        && (w.scenario == g.scenario || g.scenario == Scenario::General)
        && req
            .image
            .as_ref()
            .is_none_or(|i| w.access(i) > Access::None)
}

/// Whether device `d` of a worker may take a slice of `req` (memory aside).
fn device_ok(vendor: Vendor, req: &PeRequest) -> bool {
    req.gpu
        .as_ref()
        .is_some_and(|g| g.vendor == Vendor::Any || g.vendor == vendor)
}

/// Pins for every GPU PE of `reqs` (others are ignored), or `None` when the policy
/// finds no placement for all of them (the caller then reports the shortfall).
pub fn pin(
    policy: &DevicePolicy,
    workers: &[WorkerCapacity],
    reqs: &[&PeRequest],
) -> Option<BTreeMap<PeId, Pin>> {
    let gpu: Vec<&PeRequest> = reqs.iter().copied().filter(|r| r.gpu.is_some()).collect();
    if gpu.is_empty() {
        return Some(BTreeMap::new());
    }
    match policy {
        DevicePolicy::Objective(w) => by_objective(w, workers, &gpu),
        rule => greedy(rule, workers, &gpu),
    }
}

fn by_objective(
    weights: &objective::Weights,
    workers: &[WorkerCapacity],
    reqs: &[&PeRequest],
) -> Option<BTreeMap<PeId, Pin>> {
    let mut p = Problem::default();
    // Device index in the problem -> (worker, device); each worker's first index.
    let mut back: Vec<(usize, usize)> = Vec::new();
    let mut first: Vec<usize> = Vec::with_capacity(workers.len());
    for (wi, w) in workers.iter().enumerate() {
        first.push(back.len());
        p.hosts.push(Host {
            cpu_free: if w.alive { w.cpu_free } else { 0.0 },
            memory_free_mb: if w.alive { w.memory_free_mb } else { 0 },
        });
        let scenario = name_of(SCENARIOS, &w.scenario);
        for (di, d) in w.gpus.iter().enumerate() {
            let pool = format!("{scenario}-{}", name_of(VENDORS, &d.vendor));
            let used = d.memory_total_mb.saturating_sub(d.memory_free_mb);
            p.devices.push(Device {
                host: wi,
                free_mb: d.memory_free_mb,
                weight: weights.device(&d.model, &pool, d.memory_total_mb, used),
            });
            back.push((wi, di));
        }
    }
    for r in reqs {
        let g = r.gpu.as_ref()?;
        // Workers first (the image check is the costly one), then their devices.
        let mut eligible = Vec::new();
        for (wi, w) in workers.iter().enumerate() {
            if w.gpus.is_empty() || !host_ok(w, r) {
                continue;
            }
            for (di, d) in w.gpus.iter().enumerate() {
                if device_ok(d.vendor, r) && d.memory_free_mb >= g.memory_mb {
                    eligible.push(first[wi] + di);
                }
            }
        }
        p.tasks.push(Task {
            slices: g.count,
            slice_mb: g.memory_mb,
            cpu: r.cpu,
            memory_mb: r.memory_mb,
            eligible,
        });
    }
    let s = objective::solve(&p, Method::Auto)?;
    let mut out = BTreeMap::new();
    for (r, placement) in reqs.iter().zip(s.placements) {
        let devices: Vec<usize> = placement.devices.iter().map(|d| back[*d].1).collect();
        out.insert(
            r.pe.clone(),
            Pin {
                worker: placement.host,
                devices,
            },
        );
    }
    Some(out)
}

/// One PE at a time, in the order given, each on the devices the rule prefers.
fn greedy(
    rule: &DevicePolicy,
    workers: &[WorkerCapacity],
    reqs: &[&PeRequest],
) -> Option<BTreeMap<PeId, Pin>> {
    let mut free: Vec<(f64, u64, Vec<u64>)> = workers
        .iter()
        .map(|w| {
            (
                w.cpu_free,
                w.memory_free_mb,
                w.gpus.iter().map(|g| g.memory_free_mb).collect(),
            )
        })
        .collect();
    let mut out = BTreeMap::new();
    for r in reqs {
        let g = r.gpu.as_ref()?;
        // (score, worker, devices): lower score is better.
        let mut best: Option<(f64, usize, Vec<usize>)> = None;
        for (wi, w) in workers.iter().enumerate() {
            let (cpu, mem, dev) = &free[wi];
            if !host_ok(w, r) || *cpu + 1e-9 < r.cpu || *mem < r.memory_mb {
                continue;
            }
            let mut fit: Vec<(f64, usize)> = w
                .gpus
                .iter()
                .enumerate()
                .filter(|(di, d)| device_ok(d.vendor, r) && dev[*di] >= g.memory_mb)
                .map(|(di, d)| {
                    let total = d.memory_total_mb.max(1) as f64;
                    let used = 1.0 - dev[di] as f64 / total;
                    let score = match rule {
                        DevicePolicy::FirstFit => di as f64,
                        DevicePolicy::BestFit => (dev[di] - g.memory_mb) as f64,
                        DevicePolicy::Binpack => -used,
                        _ => used,
                    };
                    (score, di)
                })
                .collect();
            if fit.len() < g.count as usize {
                continue;
            }
            fit.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
            fit.truncate(g.count as usize);
            let score = match rule {
                // The first worker that fits wins.
                DevicePolicy::FirstFit => wi as f64,
                _ => fit.iter().map(|(s, _)| s).sum(),
            };
            if best.as_ref().is_none_or(|(s, _, _)| score < *s) {
                best = Some((score, wi, fit.into_iter().map(|(_, d)| d).collect()));
            }
            if matches!(rule, DevicePolicy::FirstFit) && best.is_some() {
                break;
            }
        }
        let (_, wi, devices) = best?;
        let f = &mut free[wi];
        f.0 -= r.cpu;
        f.1 -= r.memory_mb;
        for d in &devices {
            f.2[*d] -= g.memory_mb;
        }
        out.insert(
            r.pe.clone(),
            Pin {
                worker: wi,
                devices,
            },
        );
    }
    Some(out)
}

#[cfg(test)]
#[path = "gpu_tests.rs"]
mod tests;
