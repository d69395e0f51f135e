//! The scheduler: a pure function from free capacity and pending PEs to placements.
//!
//! Greedy and deterministic. PEs asking for GPUs are placed first (they have the
//! fewest options), then the rest in app order. For each PE the candidate workers are
//! the alive ones with enough free CPU and memory and, for GPU requests, enough
//! matching devices (vendor, pool scenario) each with enough free memory for one slice,
//! and, for container PEs, that hold the PE's image (see [`weir_common::image`] for how
//! references match: `name` means `name:latest`, `sha256:` ids and repo digests match
//! too). Holding the image is a filter, not a score: every candidate holds it, so the
//! order below decides among holders as it does for any PE, and a PE whose image no
//! alive worker holds stays pending with that reason.
//! Among candidates it prefers, in order: a worker already hosting a PE joined to this
//! one by a forward stream (records then move by reference, never over TCP); the
//! worker with the fewest PEs of the same operator (spread, so losing a worker loses
//! the least of any one operator); the most free CPU; the lowest id. GPU slices go to
//! the device with the least free memory that fits (best fit keeps whole devices free
//! for large requests). The executor turns the result into worker instructions.

pub mod gpu;
pub mod objective;
pub mod policy;
pub mod pools;
pub mod preempt;
pub mod queue;
#[cfg(test)]
mod tests;
pub mod usage;

pub use policy::{DevicePolicy, Policy, QueueOrder};

use std::collections::BTreeMap;
use std::sync::Arc;
use weir_common::image::{holds, ImageInfo};
use weir_common::physical::{PeId, PhysicalModel};
use weir_common::spec::{AppSpec, GpuRequest, OperatorKind, Partitioning, Scenario, Vendor};

/// One accelerator as the scheduler sees it.
#[derive(Clone, Debug, PartialEq)]
pub struct GpuSlot {
    /// Device UUID.
    pub uuid: String,
    /// Vendor.
    pub vendor: Vendor,
    /// Free memory, MiB.
    pub memory_free_mb: u64,
    /// Total memory, MiB.
    pub memory_total_mb: u64,
    /// Model name (weights may be set per model).
    pub model: String,
}

/// A worker's free capacity.
#[derive(Clone, Debug, PartialEq)]
pub struct WorkerCapacity {
    /// Worker id.
    pub id: String,
    /// Whether it may receive PEs.
    pub alive: bool,
    /// Free cores.
    pub cpu_free: f64,
    /// Free memory, MiB.
    pub memory_free_mb: u64,
    /// The scenario of the pool it belongs to.
    pub scenario: Scenario,
    /// Its accelerators.
    pub gpus: Vec<GpuSlot>,
    /// The container images it holds (shared with its worker record: not copied per
    /// scheduling round).
    pub images: Arc<Vec<ImageInfo>>,
}

/// A PE waiting for a worker.
#[derive(Clone, Debug, PartialEq)]
pub struct PeRequest {
    /// The PE.
    pub pe: PeId,
    /// Its operator.
    pub operator: String,
    /// Cores.
    pub cpu: f64,
    /// Memory, MiB.
    pub memory_mb: u64,
    /// GPUs, if any.
    pub gpu: Option<GpuRequest>,
    /// PEs joined to it by forward streams: placing them together saves a network hop.
    pub forward_peers: Vec<PeId>,
    /// For container PEs, the image reference: only workers holding it qualify.
    pub image: Option<String>,
}

/// Where one PE goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Assignment {
    /// Worker id.
    pub worker: String,
    /// Device UUIDs, one per GPU slice.
    pub gpus: Vec<String>,
}

/// Why a set of PEs cannot be placed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("cannot place {pe}: {why}")]
pub struct PlacementError {
    /// The first PE that fits nowhere.
    pub pe: PeId,
    /// What no worker offers.
    pub why: String,
}

/// The PE requests of an app: one per PE, with its operator's resources and its
/// forward peers.
pub fn requests_for(app: &AppSpec) -> Vec<PeRequest> {
    let m = PhysicalModel::expand(app);
    let mut peers: BTreeMap<&PeId, Vec<PeId>> = BTreeMap::new();
    for s in app
        .streams
        .iter()
        .filter(|s| s.partitioning == Partitioning::Forward)
    {
        for c in m.channels.iter().filter(|c| c.stream == s.key()) {
            peers.entry(&c.from).or_default().push(c.to.clone());
            peers.entry(&c.to).or_default().push(c.from.clone());
        }
    }
    app.operators
        .iter()
        .flat_map(|op| {
            m.pes_of(&op.name).into_iter().map(|p| PeRequest {
                pe: p.id.clone(),
                operator: op.name.clone(),
                cpu: op.resources.cpu,
                memory_mb: op.resources.memory_mb,
                gpu: op.resources.gpu.clone(),
                forward_peers: peers.get(&p.id).cloned().unwrap_or_default(),
                image: match &op.kind {
                    OperatorKind::Container(c) => Some(c.image.clone()),
                    _ => None,
                },
            })
        })
        .collect()
}

/// Places every PE of `pending`, given the workers' free capacity and where other PEs
/// already run (`placed`, used for locality only; their resources must already be
/// deducted from `workers`). All or nothing: on error nothing is placed.
pub fn place(
    workers: &[WorkerCapacity],
    pending: &[PeRequest],
    placed: &BTreeMap<PeId, String>,
) -> Result<BTreeMap<PeId, Assignment>, PlacementError> {
    let mut free: Vec<WorkerCapacity> = workers.to_vec();
    free.sort_by(|a, b| a.id.cmp(&b.id));
    let mut out: BTreeMap<PeId, Assignment> = BTreeMap::new();
    let mut per_operator: BTreeMap<(&str, usize), usize> = BTreeMap::new();
    for (pe, w) in placed {
        if let Some(i) = free.iter().position(|f| &f.id == w) {
            *per_operator.entry((pe.operator(), i)).or_default() += 1;
        }
    }
    let mut order: Vec<&PeRequest> = pending.iter().collect();
    // Stable: GPU PEs first, then app order.
    order.sort_by_key(|r| r.gpu.is_none());
    for req in order {
        let mut best: Option<(usize, Vec<usize>, Preference)> = None;
        for (i, w) in free.iter().enumerate() {
            let Some(devices) = fits(w, req) else {
                continue;
            };
            let local = req.forward_peers.iter().any(|p| {
                out.get(p).map(|a| &a.worker) == Some(&w.id) || placed.get(p) == Some(&w.id)
            });
            let same_op = per_operator
                .get(&(req.operator.as_str(), i))
                .copied()
                .unwrap_or(0);
            // Lower is better: (not local, same-operator count, less free CPU).
            let key = (!local, same_op, -(w.cpu_free * 1000.0) as i64);
            if best.as_ref().is_none_or(|(_, _, k)| key < *k) {
                best = Some((i, devices, key));
            }
        }
        let Some((i, devices, _)) = best else {
            return Err(PlacementError {
                pe: req.pe.clone(),
                why: shortfall(&free, req),
            });
        };
        let w = &mut free[i];
        w.cpu_free -= req.cpu;
        w.memory_free_mb -= req.memory_mb;
        let mut uuids = Vec::new();
        if let Some(g) = &req.gpu {
            for d in devices {
                w.gpus[d].memory_free_mb -= g.memory_mb;
                uuids.push(w.gpus[d].uuid.clone());
            }
        }
        *per_operator.entry((req.operator.as_str(), i)).or_default() += 1;
        out.insert(
            req.pe.clone(),
            Assignment {
                worker: w.id.clone(),
                gpus: uuids,
            },
        );
    }
    Ok(out)
}

/// How much a worker is preferred for a PE; lower is better: (not next to a forward
/// partner, PEs of the same operator already there, less free CPU in thousandths).
type Preference = (bool, usize, i64);

/// The devices (indexes into `w.gpus`) a PE would use on `w`, if it fits there at all.
fn fits(w: &WorkerCapacity, req: &PeRequest) -> Option<Vec<usize>> {
    // A small epsilon: CPU shares are fractions that sum with rounding error.
    if !w.alive || w.cpu_free + 1e-9 < req.cpu || w.memory_free_mb < req.memory_mb {
        return None;
    }
    if req.image.as_ref().is_some_and(|i| !holds(&w.images, i)) {
        return None;
    }
    let Some(g) = &req.gpu else {
        return Some(Vec::new());
    };
    if w.scenario != g.scenario && g.scenario != Scenario::General {
        return None;
    }
    let mut candidates: Vec<(u64, usize)> = w
        .gpus
        .iter()
        .enumerate()
        .filter(|(_, d)| {
            (g.vendor == Vendor::Any || d.vendor == g.vendor) && d.memory_free_mb >= g.memory_mb
        })
        .map(|(i, d)| (d.memory_free_mb, i))
        .collect();
    if candidates.len() < g.count as usize {
        return None;
    }
    // Best fit: the tightest devices first.
    candidates.sort();
    Some(
        candidates
            .into_iter()
            .take(g.count as usize)
            .map(|(_, i)| i)
            .collect(),
    )
}

/// What the PE needs that no worker has, for the error message.
fn shortfall(free: &[WorkerCapacity], req: &PeRequest) -> String {
    let mut alive: Vec<&WorkerCapacity> = free.iter().filter(|w| w.alive).collect();
    if alive.is_empty() {
        return "no alive worker".into();
    }
    // A container PE: only the workers holding its image count.
    let mut holding = String::new();
    if let Some(image) = &req.image {
        alive.retain(|w| holds(&w.images, image));
        if alive.is_empty() {
            return format!(
                "image {image:?} is on no alive worker (workers run only images their Docker Engine holds; `weirctl images` lists them)"
            );
        }
        holding = format!(" holding image {image:?}");
    }
    let best_cpu = alive.iter().map(|w| w.cpu_free).fold(0.0, f64::max);
    let best_mem = alive.iter().map(|w| w.memory_free_mb).max().unwrap_or(0);
    if let Some(g) = &req.gpu {
        let on = if holding.is_empty() {
            holding
        } else {
            format!(" on a worker{holding}")
        };
        let best_dev = alive
            .iter()
            .flat_map(|w| w.gpus.iter())
            .filter(|d| g.vendor == Vendor::Any || d.vendor == g.vendor)
            .map(|d| d.memory_free_mb)
            .max();
        return format!(
            "needs {} {:?} GPU(s) with {} MiB free each ({:?} pool), {} cores, {} MiB; the largest free matching device{on} has {} MiB, the most free cores {:.2}, memory {} MiB",
            g.count,
            g.vendor,
            g.memory_mb,
            g.scenario,
            req.cpu,
            req.memory_mb,
            best_dev.map_or("none".into(), |m| m.to_string()),
            best_cpu,
            best_mem
        );
    }
    format!(
        "needs {} cores and {} MiB; the most any alive worker{holding} has free is {:.2} cores and {} MiB",
        req.cpu, req.memory_mb, best_cpu, best_mem
    )
}
