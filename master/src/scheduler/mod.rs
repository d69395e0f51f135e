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
//!
//! The search is indexed (`index.rs`) so that it does not look at every worker for
//! every PE: a PE's forward peers' workers are checked first, then alive workers are
//! walked from the most free CPU down, stopping at the first one that fits with the
//! operator's lowest count; GPU requests walk only workers with devices. It chooses
//! exactly what the first, exhaustive scheduler chose ([`place_reference`], kept for
//! the bench and a property test). Which devices of the chosen worker a GPU request
//! takes is one function (`devices.rs`), so another objective can replace it.

mod devices;
pub mod gpu;
mod index;
pub mod objective;
pub mod policy;
pub mod pools;
pub mod preempt;
pub mod queue;
mod reference;
#[cfg(test)]
mod tests;
pub mod usage;

pub use policy::{DevicePolicy, Policy, QueueOrder};

#[doc(hidden)]
pub use reference::place_reference;

use index::Index;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use weir_common::fingerprint::operator_revision;
use weir_common::image::{access, Access, ImageInfo};
use weir_common::physical::PeId;
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
    /// The registries it pulls absent images from (`weir-worker --pull-from`).
    pub registries: Vec<String>,
}

impl WorkerCapacity {
    /// How this worker could come to run image `reference`.
    pub fn access(&self, reference: &str) -> Access {
        access(&self.images, &self.registries, reference)
    }
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
    /// The measured rate (records/s) of the stream joining it to each forward peer,
    /// parallel to `forward_peers` ([`weigh`]); empty when nothing was measured (a new
    /// app), and then every peer counts the same.
    pub peer_rates: Vec<f64>,
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
///
/// Built from the operators alone, not from the app's physical model: expanding every
/// channel (parallelism squared per all-to-all stream) cost more than placing the PEs.
/// The PEs and forward channels are the model's (`PhysicalModel::expand`): PE `i` of
/// an operator is `PeId::new(name, revision, i)`, and a forward stream joins PE `i` of
/// its producer to PE `i` of its consumer.
pub fn requests_for(app: &AppSpec) -> Vec<PeRequest> {
    let ids: Vec<Vec<PeId>> = app
        .operators
        .iter()
        .map(|op| {
            let rev = operator_revision(op);
            (0..op.parallelism)
                .map(|i| PeId::new(&op.name, &rev, i))
                .collect()
        })
        .collect();
    let mut position: HashMap<&str, usize> = HashMap::with_capacity(ids.len());
    for (n, op) in app.operators.iter().enumerate() {
        position.insert(op.name.as_str(), n);
    }
    // Per operator, per PE index: its forward peers.
    let mut peers: Vec<Vec<Vec<PeId>>> = ids.iter().map(|l| vec![Vec::new(); l.len()]).collect();
    for s in app
        .streams
        .iter()
        .filter(|s| s.partitioning == Partitioning::Forward)
    {
        let (Some(&from), Some(&to)) = (position.get(s.from.as_str()), position.get(s.to.as_str()))
        else {
            continue;
        };
        for i in 0..ids[from].len().min(ids[to].len()) {
            let (p, c) = (ids[from][i].clone(), ids[to][i].clone());
            peers[from][i].push(c);
            peers[to][i].push(p);
        }
    }
    app.operators
        .iter()
        .zip(ids)
        .zip(peers)
        .flat_map(|((op, ids), peers)| {
            ids.into_iter()
                .zip(peers)
                .map(|(pe, forward_peers)| PeRequest {
                    pe,
                    operator: op.name.clone(),
                    cpu: op.resources.cpu,
                    memory_mb: op.resources.memory_mb,
                    gpu: op.resources.gpu.clone(),
                    forward_peers,
                    peer_rates: Vec::new(),
                    image: match &op.kind {
                        OperatorKind::Container(c) => Some(c.image.clone()),
                        _ => None,
                    },
                })
        })
        .collect()
}

/// Measured rates of one PE, records/s: (in, out).
pub type Rates = (f64, f64);

/// Weighs each request's forward peers by the measured rate of the stream joining
/// them, so that where a PE must choose, it joins the partner of its heaviest stream.
/// `rate` answers a PE's measured (in, out) rates, if it reported any. The rate of
/// the stream from producer `p` to consumer `c` is `c`'s input rate when the
/// consumer's operator has no other input, else `p`'s output rate shared among its
/// operator's outputs. Leaves the requests as they are when nothing was measured.
pub fn weigh(reqs: &mut [PeRequest], app: &AppSpec, rate: impl Fn(&PeId) -> Option<Rates>) {
    let inputs = |op: &str| app.streams.iter().filter(|s| s.to == op).count();
    let outputs = |op: &str| app.streams.iter().filter(|s| s.from == op).count().max(1);
    let stream = |producer: &PeId, consumer: &PeId| -> Option<f64> {
        if inputs(consumer.operator()) == 1 {
            if let Some((r_in, _)) = rate(consumer) {
                return Some(r_in);
            }
        }
        rate(producer).map(|(_, out)| out / outputs(producer.operator()) as f64)
    };
    let mut any = false;
    for r in reqs.iter_mut() {
        let rates: Vec<Option<f64>> = r
            .forward_peers
            .iter()
            .map(|p| {
                let produces = app
                    .streams
                    .iter()
                    .any(|s| s.from == r.operator && s.to == p.operator());
                if produces {
                    stream(&r.pe, p)
                } else {
                    stream(p, &r.pe)
                }
            })
            .collect();
        if rates.iter().any(Option::is_some) {
            any = true;
            // Unmeasured partners count as the slowest measured stream would.
            r.peer_rates = rates.iter().map(|x| x.unwrap_or(0.0).max(0.0)).collect();
        }
    }
    if !any {
        for r in reqs.iter_mut() {
            r.peer_rates.clear();
        }
    }
}

/// Places every PE of `pending`, given the workers' free capacity and where other PEs
/// already run (`placed`, used for locality only; their resources must already be
/// deducted from `workers`). All or nothing: on error nothing is placed.
///
/// Chooses exactly what the first scheduler ([`place_reference`]) did, without looking
/// at every worker for every PE (see the module doc).
pub fn place(
    workers: &[WorkerCapacity],
    pending: &[PeRequest],
    placed: &BTreeMap<PeId, String>,
) -> Result<BTreeMap<PeId, Assignment>, PlacementError> {
    place_pinned(workers, pending, placed, &BTreeMap::new())
}

/// Past this many GPU slices in one call, [`place_with`] leaves the devices to the
/// search (best fit on each PE's preferred worker) rather than the objective.
pub const SEARCH_LIMIT: usize = 1024;

/// [`place`], with the GPU PEs' workers and devices chosen by `devices` first, for all
/// of them at once ([`gpu::pin`]); the other PEs are then placed around them as
/// usual. When the policy finds no placement for every GPU PE, or the other PEs fit
/// nowhere around its pins, the search alone places them all, or reports the first PE
/// that fits nowhere.
pub fn place_with(
    workers: &[WorkerCapacity],
    pending: &[PeRequest],
    placed: &BTreeMap<PeId, String>,
    devices: &DevicePolicy,
) -> Result<BTreeMap<PeId, Assignment>, PlacementError> {
    let gpu: Vec<&PeRequest> = pending.iter().filter(|r| r.gpu.is_some()).collect();
    let slices: usize = gpu
        .iter()
        .filter_map(|r| r.gpu.as_ref())
        .map(|g| g.count as usize)
        .sum();
    // Past SEARCH_LIMIT slices even the quick greedy costs more than the search, whose
    // best fit per PE is the fast heuristic for such rounds.
    let pins = if gpu.is_empty() || slices > SEARCH_LIMIT {
        BTreeMap::new()
    } else {
        gpu::pin(devices, workers, &gpu).unwrap_or_default()
    };
    if pins.is_empty() {
        return place_pinned(workers, pending, placed, &pins);
    }
    // The pins look at the GPU PEs alone: when the others then fit nowhere, the
    // search alone may still place everything.
    place_pinned(workers, pending, placed, &pins)
        .or_else(|_| place_pinned(workers, pending, placed, &BTreeMap::new()))
}

fn place_pinned(
    workers: &[WorkerCapacity],
    pending: &[PeRequest],
    placed: &BTreeMap<PeId, String>,
    pins: &BTreeMap<PeId, gpu::Pin>,
) -> Result<BTreeMap<PeId, Assignment>, PlacementError> {
    let mut index = Index::new(workers, placed);
    let mut out: BTreeMap<PeId, Assignment> = BTreeMap::new();
    let mut order: Vec<&PeRequest> = pending.iter().collect();
    // Stable: GPU PEs first, then app order.
    order.sort_by_key(|r| r.gpu.is_none());
    for req in order {
        let op = index.operator(&req.operator);
        let pinned = pins.get(&req.pe).and_then(|p| {
            let i = index.position(&workers.get(p.worker)?.id)?;
            Some((i, p.devices.clone()))
        });
        let Some((i, devices)) = pinned.or_else(|| index.best(req, op)) else {
            return Err(PlacementError {
                pe: req.pe.clone(),
                why: shortfall(&index.snapshot(), req),
            });
        };
        let (worker, gpus) = index.take(req, op, i, &devices);
        out.insert(req.pe.clone(), Assignment { worker, gpus });
    }
    Ok(out)
}

/// What the PE needs that no worker has, for the error message.
fn shortfall(free: &[WorkerCapacity], req: &PeRequest) -> String {
    let mut alive: Vec<&WorkerCapacity> = free.iter().filter(|w| w.alive).collect();
    if alive.is_empty() {
        return "no alive worker".into();
    }
    // A container PE: only the workers holding its image, or pulling it, count.
    let mut holding = String::new();
    if let Some(image) = &req.image {
        alive.retain(|w| w.access(image) > Access::None);
        if alive.is_empty() {
            return format!(
                "image {image:?} is on no alive worker, and none pulls from its registry (workers run only images their Docker Engine holds or pulls with `--pull-from`; `weirctl images` lists them)"
            );
        }
        holding = format!(" holding or pulling image {image:?}");
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
