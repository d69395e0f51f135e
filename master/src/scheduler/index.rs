//! The workers' free capacity as one placement call tracks it, indexed so that
//! finding the preferred worker for a PE rarely looks at more than a few workers.
//!
//! The preference (see the module doc of [`super`]) is the lowest of (not next to a
//! forward peer, PEs of the same operator on the worker, `-(free cores x 1000)`,
//! worker position by id). Forward peers are few, so their workers are checked
//! directly. Otherwise the alive workers are walked in (free-cores key, position)
//! order, kept in an ordered set updated on every placement; the first fitting worker
//! with a given same-operator count is the best of all workers with that count, so the
//! walk stops at the first fitting worker whose count is the operator's lowest on any
//! worker (0 until the operator is on every worker). GPU requests walk only the
//! workers with devices.

use super::devices::{self, Device};
use super::{PeRequest, WorkerCapacity};
use std::collections::{BTreeSet, HashMap};
use weir_common::image::Access;
use weir_common::physical::PeId;
use weir_common::spec::Scenario;

/// (free-cores key, position): the order of the walk.
type Rank = (i64, usize);

/// The preference's free-cores part, computed exactly as the first scheduler did
/// (thousandths, truncated), so ties break the same way.
fn cpu_key(cpu_free: f64) -> i64 {
    -(cpu_free * 1000.0) as i64
}

/// Free capacity and placements so far, for one call of [`super::place`].
pub(super) struct Index<'a> {
    /// The workers, by id (stable for equal ids); positions index everything below.
    workers: Vec<&'a WorkerCapacity>,
    /// Position of each id (the first, for repeated ids).
    position: HashMap<&'a str, usize>,
    cpu_free: Vec<f64>,
    memory_free_mb: Vec<u64>,
    /// Every worker's devices, one after another; worker `i`'s are
    /// `devices[device_start[i]..device_start[i + 1]]`.
    devices: Vec<Device>,
    device_start: Vec<usize>,
    /// Alive workers, and alive workers with devices, in walk order.
    alive: BTreeSet<Rank>,
    with_gpus: BTreeSet<Rank>,
    /// Operator name -> its number; per operator number, worker -> its PEs there.
    operators: HashMap<&'a str, usize>,
    per_operator: Vec<HashMap<usize, usize>>,
    /// Where PEs already run (`placed`, on listed workers) and where this call put
    /// them.
    placed_at: HashMap<&'a PeId, usize>,
    placed_now: HashMap<&'a PeId, usize>,
    /// Per image reference asked for, how each worker could run it (checked once
    /// each).
    holders: HashMap<&'a str, Vec<Access>>,
}

impl<'a> Index<'a> {
    /// The index of `workers`, with the PEs of `placed` counted on their workers.
    pub(super) fn new(
        workers: &'a [WorkerCapacity],
        placed: impl IntoIterator<Item = (&'a PeId, &'a String)>,
    ) -> Self {
        let mut sorted: Vec<&WorkerCapacity> = workers.iter().collect();
        sorted.sort_by(|a, b| a.id.cmp(&b.id));
        let mut position = HashMap::with_capacity(sorted.len());
        let mut devices = Vec::new();
        let mut device_start = Vec::with_capacity(sorted.len() + 1);
        let (mut alive, mut with_gpus) = (Vec::new(), Vec::new());
        for (i, w) in sorted.iter().enumerate() {
            position.entry(w.id.as_str()).or_insert(i);
            device_start.push(devices.len());
            devices.extend(w.gpus.iter().map(|g| Device {
                vendor: g.vendor,
                memory_free_mb: g.memory_free_mb,
            }));
            if w.alive {
                let rank = (cpu_key(w.cpu_free), i);
                alive.push(rank);
                if !w.gpus.is_empty() {
                    with_gpus.push(rank);
                }
            }
        }
        device_start.push(devices.len());
        let mut index = Index {
            cpu_free: sorted.iter().map(|w| w.cpu_free).collect(),
            memory_free_mb: sorted.iter().map(|w| w.memory_free_mb).collect(),
            workers: sorted,
            position,
            devices,
            device_start,
            // Collected whole: built in bulk, faster than one insert at a time (the
            // reconciler builds an index per app).
            alive: alive.into_iter().collect(),
            with_gpus: with_gpus.into_iter().collect(),
            operators: HashMap::new(),
            per_operator: Vec::new(),
            placed_at: HashMap::new(),
            placed_now: HashMap::new(),
            holders: HashMap::new(),
        };
        for (pe, w) in placed {
            if let Some(&i) = index.position.get(w.as_str()) {
                let op = index.operator(pe.operator());
                *index.per_operator[op].entry(i).or_default() += 1;
                index.placed_at.insert(pe, i);
            }
        }
        index
    }

    /// The position of worker `id`, if listed.
    pub(super) fn position(&self, id: &str) -> Option<usize> {
        self.position.get(id).copied()
    }

    /// The number of operator `name`.
    pub(super) fn operator(&mut self, name: &'a str) -> usize {
        let next = self.per_operator.len();
        let n = *self.operators.entry(name).or_insert(next);
        if n == next {
            self.per_operator.push(HashMap::new());
        }
        n
    }

    /// The preferred worker for `req` (operator number `op`) and the devices it would
    /// take there; `None` when it fits nowhere.
    pub(super) fn best(&mut self, req: &'a PeRequest, op: usize) -> Option<(usize, Vec<usize>)> {
        // A container PE goes to a worker holding its image where one fits, else to
        // one that would pull it.
        let levels: &[Access] = match &req.image {
            Some(image) => {
                self.learn_holders(image);
                &[Access::Held, Access::Pull]
            }
            None => &[Access::Held],
        };
        let i = levels.iter().find_map(|&level| {
            self.best_local(req, op, level)
                .or_else(|| self.best_anywhere(req, op, level))
        })?;
        let devices = match &req.gpu {
            Some(g) => devices::choose(self.devices_of(i), g)?,
            None => Vec::new(),
        };
        Some((i, devices))
    }

    /// The best fitting worker that runs a forward peer of `req`: with measured rates,
    /// the one whose peers there carry the most records/s.
    fn best_local(&self, req: &PeRequest, op: usize, accept: Access) -> Option<usize> {
        if !req.peer_rates.is_empty() {
            return self.heaviest_local(req, op, accept);
        }
        req.forward_peers
            .iter()
            .flat_map(|p| [self.placed_now.get(p), self.placed_at.get(p)])
            .flatten()
            .copied()
            .filter(|&i| self.fits(i, req, accept))
            .min_by_key(|&i| (self.same_operator(op, i), cpu_key(self.cpu_free[i]), i))
    }

    fn heaviest_local(&self, req: &PeRequest, op: usize, accept: Access) -> Option<usize> {
        let mut weight: HashMap<usize, f64> = HashMap::new();
        for (p, rate) in req.forward_peers.iter().zip(&req.peer_rates) {
            if let Some(&i) = self.placed_now.get(p).or_else(|| self.placed_at.get(p)) {
                *weight.entry(i).or_default() += rate;
            }
        }
        weight
            .into_iter()
            .filter(|&(i, _)| self.fits(i, req, accept))
            .min_by(|(a, wa), (b, wb)| {
                wb.total_cmp(wa).then_with(|| {
                    (self.same_operator(op, *a), cpu_key(self.cpu_free[*a]), *a).cmp(&(
                        self.same_operator(op, *b),
                        cpu_key(self.cpu_free[*b]),
                        *b,
                    ))
                })
            })
            .map(|(i, _)| i)
    }

    /// The best fitting worker of all (see the module doc for why the walk may stop
    /// early).
    fn best_anywhere(&self, req: &PeRequest, op: usize, accept: Access) -> Option<usize> {
        let walk = match &req.gpu {
            Some(g) if g.count > 0 => &self.with_gpus,
            _ => &self.alive,
        };
        let floor = self.lowest_same_operator(op);
        let mut best: Option<(usize, usize)> = None;
        for &(_, i) in walk {
            if !self.fits(i, req, accept) {
                continue;
            }
            let same = self.same_operator(op, i);
            if best.is_none_or(|(s, _)| same < s) {
                best = Some((same, i));
                if same <= floor {
                    break;
                }
            }
        }
        best.map(|(_, i)| i)
    }

    /// PEs of operator `op` on worker `i`.
    fn same_operator(&self, op: usize, i: usize) -> usize {
        self.per_operator[op].get(&i).copied().unwrap_or(0)
    }

    /// A lower bound of [`Self::same_operator`] over all workers: no worker can beat it.
    fn lowest_same_operator(&self, op: usize) -> usize {
        let on = &self.per_operator[op];
        if on.len() < self.workers.len() {
            return 0;
        }
        on.values().copied().min().unwrap_or(0)
    }

    fn devices_of(&self, i: usize) -> &[Device] {
        &self.devices[self.device_start[i]..self.device_start[i + 1]]
    }

    /// Whether `req` fits on worker `i` now, where the worker has at least `accept`
    /// access to its image (holders first, then workers that would pull it: see
    /// [`Index::best`]).
    fn fits(&self, i: usize, req: &PeRequest, accept: Access) -> bool {
        let w = self.workers[i];
        // A small epsilon: CPU shares are fractions that sum with rounding error.
        if !w.alive || self.cpu_free[i] + 1e-9 < req.cpu || self.memory_free_mb[i] < req.memory_mb {
            return false;
        }
        if let Some(image) = &req.image {
            if self
                .holders
                .get(image.as_str())
                .is_none_or(|h| h[i] < accept)
            {
                return false;
            }
        }
        let Some(g) = &req.gpu else {
            return true;
        };
        (w.scenario == g.scenario || g.scenario == Scenario::General)
            && devices::enough(self.devices_of(i), g)
    }

    /// Finds, once per call, which workers hold or pull `image` (parsing the
    /// reference and comparing it with every image is too slow to repeat per
    /// candidate).
    fn learn_holders(&mut self, image: &'a str) {
        if !self.holders.contains_key(image) {
            let held = self.workers.iter().map(|w| w.access(image)).collect();
            self.holders.insert(image, held);
        }
    }

    /// Records `req` (operator number `op`) on worker `i` using `devices`; returns
    /// the worker id and the devices' UUIDs.
    pub(super) fn take(
        &mut self,
        req: &'a PeRequest,
        op: usize,
        i: usize,
        devices: &[usize],
    ) -> (String, Vec<String>) {
        let w = self.workers[i];
        let before = (cpu_key(self.cpu_free[i]), i);
        self.cpu_free[i] -= req.cpu;
        self.memory_free_mb[i] = self.memory_free_mb[i].saturating_sub(req.memory_mb);
        let after = (cpu_key(self.cpu_free[i]), i);
        if before != after && self.alive.remove(&before) {
            self.alive.insert(after);
            if self.with_gpus.remove(&before) {
                self.with_gpus.insert(after);
            }
        }
        let mut uuids = Vec::with_capacity(devices.len());
        if let Some(g) = &req.gpu {
            let start = self.device_start[i];
            for &d in devices {
                let free = &mut self.devices[start + d].memory_free_mb;
                *free = free.saturating_sub(g.memory_mb);
                if let Some(slot) = w.gpus.get(d) {
                    uuids.push(slot.uuid.clone());
                }
            }
        }
        *self.per_operator[op].entry(i).or_default() += 1;
        self.placed_now.insert(&req.pe, i);
        (w.id.clone(), uuids)
    }

    /// The workers as they stand now (free capacity after this call's placements),
    /// by id: for explaining a refusal.
    pub(super) fn snapshot(&self) -> Vec<WorkerCapacity> {
        self.workers
            .iter()
            .enumerate()
            .map(|(i, w)| {
                let mut w = (*w).clone();
                w.cpu_free = self.cpu_free[i];
                w.memory_free_mb = self.memory_free_mb[i];
                for (slot, d) in w.gpus.iter_mut().zip(self.devices_of(i)) {
                    slot.memory_free_mb = d.memory_free_mb;
                }
                w
            })
            .collect()
    }
}
