//! The first scheduler, kept unchanged so the scheduler bench measures the current one
//! against it in the same run, and checks both choose the same placements. It scans
//! every worker for every PE (O(PEs x workers)); not for production use.

use super::{shortfall, Assignment, PeRequest, PlacementError, WorkerCapacity};
use std::collections::BTreeMap;
use weir_common::image::Access;
use weir_common::physical::PeId;
use weir_common::spec::{Scenario, Vendor};

/// [`super::place`] as first written: same contract, same answers, slower.
#[doc(hidden)]
pub fn place_reference(
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
            // Lower is better: (image not held, not local, same-operator count, less
            // free CPU).
            let pulls = req
                .image
                .as_ref()
                .is_some_and(|i| w.access(i) < Access::Held);
            let key = (pulls, !local, same_op, -(w.cpu_free * 1000.0) as i64);
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

/// (image to be pulled, not next to a forward partner, PEs of the same operator
/// already there, less free CPU in thousandths); lower is better.
type Preference = (bool, bool, usize, i64);

/// The devices (indexes into `w.gpus`) a PE would use on `w`, if it fits there at all.
fn fits(w: &WorkerCapacity, req: &PeRequest) -> Option<Vec<usize>> {
    if !w.alive || w.cpu_free + 1e-9 < req.cpu || w.memory_free_mb < req.memory_mb {
        return None;
    }
    if req
        .image
        .as_ref()
        .is_some_and(|i| w.access(i) == Access::None)
    {
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
    candidates.sort();
    Some(
        candidates
            .into_iter()
            .take(g.count as usize)
            .map(|(_, i)| i)
            .collect(),
    )
}
