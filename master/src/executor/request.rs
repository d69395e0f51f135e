//! Building the commands the executor sends, from the replicated state.

use crate::convert::partitioning;
use crate::state::{
    AppRecord, CheckpointRecord, Gpus, PieceRecord, Placement, WorkerRecord, WorkerState,
};
use std::collections::{BTreeMap, HashMap};
use weir_common::physical::{source_ordinal, PeId, PhysicalModel};
use weir_common::spec::AppSpec;
use weir_proto::v1 as pb;

/// One version of an app as deploys see it: its model, where its PEs run.
pub struct View<'a> {
    /// The app.
    pub app: &'a AppRecord,
    /// The version's model.
    pub spec: &'a AppSpec,
    /// The version number.
    pub version: u32,
    /// PE -> worker.
    pub placement: &'a Placement,
    /// PE -> GPU UUIDs.
    pub gpus: &'a Gpus,
}

impl<'a> View<'a> {
    /// The current version.
    pub fn current(app: &'a AppRecord) -> Self {
        Self {
            app,
            spec: &app.current().spec,
            version: app.current_version,
            placement: &app.placement,
            gpus: &app.gpus,
        }
    }

    /// The recovery attempt of `pe`'s operator.
    pub fn attempt(&self, pe: &PeId) -> u64 {
        self.app.checkpoints.attempt(pe.operator())
    }
}

/// The DeployPe command of `pe`, or `None` when one of its consumers is not placed on
/// a known worker yet (it would not know where to send). It restores from the
/// checkpoint its operator's attempt restores from (through the pieces of its
/// predecessors when that checkpoint was an upgrade's switch).
pub fn deploy_pe(
    v: &View<'_>,
    model: &PhysicalModel,
    pe: &PeId,
    workers: &BTreeMap<String, WorkerRecord>,
    header: pb::CommandHeader,
) -> Option<pb::DeployPeRequest> {
    let p = model.pes.get(pe)?;
    let restore = v
        .app
        .checkpoints
        .restore
        .get(&*p.operator)
        .copied()
        .unwrap_or(0);
    let record = v.app.checkpoints.complete.iter().find(|c| c.id == restore);
    let (restore_checkpoint_id, restore_from, restore_pieces) =
        match record.and_then(|c| c.handoff.get(pe).map(|h| (c, h))) {
            Some((c, preds)) => (
                0,
                vec![],
                preds
                    .iter()
                    .filter_map(|old| {
                        let locations = locations(c, old, workers);
                        (!locations.is_empty()).then(|| pb::RestorePiece {
                            pe: old.to_string(),
                            checkpoint_id: c.id,
                            locations,
                            wait_ms: 0,
                            chain: chain(c, old, workers),
                            seed: seed(c, old, workers),
                            ..Default::default()
                        })
                    })
                    .collect(),
            ),
            None => (
                restore,
                record.map_or_else(Vec::new, |c| locations(c, pe, workers)),
                vec![],
            ),
        };
    let mut req = build(v, model, p, workers, header)?;
    req.restore_checkpoint_id = restore_checkpoint_id;
    req.restore_from = restore_from;
    req.restore_pieces = restore_pieces;
    if let Some(c) = record.filter(|_| req.restore_checkpoint_id > 0) {
        req.restore_chain = chain(c, pe, workers);
        req.restore_seed = seed(c, pe, workers);
    }
    Some(req)
}

/// A DeployPe of `p` in version `v` without any state to restore.
pub fn build(
    v: &View<'_>,
    model: &PhysicalModel,
    p: &weir_common::physical::PeSpec,
    workers: &BTreeMap<String, WorkerRecord>,
    header: pb::CommandHeader,
) -> Option<pb::DeployPeRequest> {
    let pe = p.id.as_str();
    let spec = v.spec.operator(&p.operator)?;
    let outputs = model.outputs.get(&p.id).cloned().unwrap_or_default();
    let own = v.attempt(&p.id);
    let mut peer_attempts = HashMap::new();
    let mut pe_addresses = HashMap::new();
    for o in &outputs {
        for t in &o.targets {
            let w = v.placement.get(t.as_str())?;
            let addr = &workers.get(w)?.data_address;
            pe_addresses.insert(t.to_string(), addr.clone());
            if v.attempt(t) != own {
                peer_attempts.insert(t.to_string(), v.attempt(t));
            }
        }
    }
    let mut producer_workers = HashMap::new();
    let inputs = model
        .inputs_of(&p.id)
        .map(|c| {
            if v.attempt(&c.from) != own {
                peer_attempts.insert(c.from.to_string(), v.attempt(&c.from));
            }
            if let Some(w) = v.placement.get(c.from.as_str()) {
                producer_workers.insert(c.from.to_string(), w.clone());
            }
            pb::ChannelRef {
                from_pe: c.from.to_string(),
                to_pe: c.to.to_string(),
                stream: c.stream.to_string(),
            }
        })
        .collect();
    Some(pb::DeployPeRequest {
        header: Some(header),
        app: v.app.name.clone(),
        tenant: v.app.tenant.clone(),
        version: u64::from(v.version),
        start_pe: Some(pb::StartPe {
            pe: pe.to_string(),
            operator: p.operator.to_string(),
            revision: p.revision.to_string(),
            index: p.index,
            parallelism: p.parallelism,
            spec_json: serde_json::to_string(spec).ok()?,
            state_from: vec![],
            key_groups: Some(pb::KeyGroupRange {
                start: p.key_groups.start,
                end: p.key_groups.end,
            }),
            outputs: outputs
                .iter()
                .map(|o| pb::Output {
                    stream: o.stream.to_string(),
                    partitioning: Some(partitioning(&o.partitioning)),
                    targets: o.targets.iter().map(|t| t.to_string()).collect(),
                })
                .collect(),
        }),
        resources: Some(pb::Resources {
            cpu: spec.resources.cpu,
            memory_mb: spec.resources.memory_mb,
            ..Default::default()
        }),
        gpu_uuids: v.gpus.get(pe).cloned().unwrap_or_default(),
        pe_addresses,
        restore_from_address: String::new(),
        inputs,
        source_ordinal: source_ordinal(&p.operator, p.index),
        attempt: own,
        restore_checkpoint_id: 0,
        restore_from: vec![],
        peer_attempts,
        restore_pieces: vec![],
        start_at_barrier: 0,
        producer_workers,
        restore_chain: vec![],
        restore_seed: vec![],
    })
}

/// The checkpoint an upgrade's successor pre-copies its predecessors' state from: the
/// app's latest complete one, when each of `preds` has a stored piece in it; `None`
/// without one, or while a checkpoint is in flight (the old PEs may yet snapshot past
/// it, and their deltas at the switch would then be against another).
pub fn precopy_base<'a>(app: &'a AppRecord, preds: &[PeId]) -> Option<&'a CheckpointRecord> {
    if app.checkpoints.in_flight.is_some() || preds.is_empty() {
        return None;
    }
    let c = app.checkpoints.complete.iter().max_by_key(|c| c.id)?;
    preds
        .iter()
        .all(|p| c.pieces.get(p).is_some_and(|piece| piece.size_bytes > 0))
        .then_some(c)
}

/// Whether a successor deployed on `worker` may pre-copy its predecessors' pieces of
/// checkpoint `c` without holding a second copy of their state on one worker beyond
/// what it asked for (issue 22: memory stays bounded during a hand-off). Its copy lives
/// beside the predecessors' own state until the switch; where none of them runs on its
/// worker, each worker holds one copy of each key and it may. Where one does, the bytes
/// it would fetch must fit its memory request, `memory_mb`, which the scheduler
/// reserved for it there beside the old PEs: it loads each predecessor's piece whole,
/// one at a time, before keeping its own key groups, so their sum bounds what it
/// holds (as encoded; an incremental piece counts with the snapshots it builds on).
/// Otherwise it takes the state at the
/// switch, as without pre-copy, when the old PEs let theirs go.
pub fn precopy_fits(
    c: &CheckpointRecord,
    preds: &[PeId],
    placement: &Placement,
    worker: &str,
    memory_mb: u64,
) -> bool {
    if !preds
        .iter()
        .any(|p| placement.get(p).is_some_and(|w| w == worker))
    {
        return true;
    }
    let bytes: u64 = preds
        .iter()
        .filter_map(|p| c.pieces.get(p))
        .map(PieceRecord::restore_bytes)
        .sum();
    bytes <= memory_mb.saturating_mul(1 << 20)
}

/// Where the stored copies of `pe`'s piece of checkpoint `c` are, alive workers first.
pub fn locations(
    c: &CheckpointRecord,
    pe: &str,
    workers: &BTreeMap<String, WorkerRecord>,
) -> Vec<pb::SnapshotLocation> {
    let Some(piece) = c.pieces.get(pe) else {
        return vec![];
    };
    ordered(&piece.replicas, piece.size_bytes, piece.crc32c, workers)
}

/// The snapshots `pe`'s piece of `c` builds on when it is incremental, the whole one
/// first, each with its copies as [`locations`] orders them; empty for a whole piece.
pub fn chain(
    c: &CheckpointRecord,
    pe: &str,
    workers: &BTreeMap<String, WorkerRecord>,
) -> Vec<pb::SnapshotLink> {
    let Some(piece) = c.pieces.get(pe) else {
        return vec![];
    };
    piece
        .chain
        .iter()
        .map(|l| pb::SnapshotLink {
            checkpoint_id: l.checkpoint_id,
            locations: ordered(&l.replicas, l.size_bytes, l.crc32c, workers),
        })
        .collect()
}

/// The seed of `pe`'s piece of `c` (its predecessors' whole snapshots of an upgrade's
/// switch, which its first increments build on), each with its copies as
/// [`locations`] orders them; empty for a piece without one.
pub fn seed(
    c: &CheckpointRecord,
    pe: &str,
    workers: &BTreeMap<String, WorkerRecord>,
) -> Vec<pb::SnapshotSeed> {
    let Some(piece) = c.pieces.get(pe) else {
        return vec![];
    };
    piece
        .seed
        .iter()
        .map(|s| pb::SnapshotSeed {
            pe: s.pe.to_string(),
            checkpoint_id: s.link.checkpoint_id,
            locations: ordered(&s.link.replicas, s.link.size_bytes, s.link.crc32c, workers),
        })
        .collect()
}

/// Copies on `replicas`, those on live workers first.
fn ordered(
    replicas: &[String],
    size_bytes: u64,
    crc32c: u32,
    workers: &BTreeMap<String, WorkerRecord>,
) -> Vec<pb::SnapshotLocation> {
    let mut out: Vec<(bool, pb::SnapshotLocation)> = replicas
        .iter()
        .filter_map(|w| {
            let rec = workers.get(w)?;
            Some((
                rec.state != WorkerState::Alive,
                pb::SnapshotLocation {
                    worker_id: w.clone(),
                    control_address: rec.control_address.clone(),
                    size_bytes,
                    crc32c,
                },
            ))
        })
        .collect();
    out.sort_by_key(|(dead, _)| *dead);
    out.into_iter().map(|(_, l)| l).collect()
}

/// The channels whose consumer moved from one worker to another between two
/// placements of an app, with the producer's worker (where the producer end must be
/// repointed) and the consumer's new worker.
pub fn moved_channels(
    model: &PhysicalModel,
    before: &Placement,
    after: &Placement,
) -> Vec<(pb::ChannelRef, String, String)> {
    let mut out = Vec::new();
    for c in &model.channels {
        let (from, to) = (c.from.as_str(), c.to.as_str());
        let (Some(old), Some(new)) = (before.get(to), after.get(to)) else {
            continue;
        };
        let Some(producer_worker) = after.get(from) else {
            continue;
        };
        // Only producers that stayed put run with a stale address; moved ones are
        // deployed afresh with the current addresses.
        if old != new && before.get(from) == Some(producer_worker) {
            out.push((
                pb::ChannelRef {
                    from_pe: from.to_string(),
                    to_pe: to.to_string(),
                    stream: c.stream.to_string(),
                },
                producer_worker.clone(),
                new.clone(),
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn checkpoint(pieces: &[(&PeId, u64)]) -> CheckpointRecord {
        CheckpointRecord {
            id: 7,
            started_at_ms: 0,
            completed_at_ms: 0,
            max_alignment_ms: 0,
            pieces: pieces
                .iter()
                .map(|(pe, size)| {
                    let piece = PieceRecord {
                        size_bytes: *size,
                        crc32c: 1,
                        replicas: vec!["w1".into()],
                        chain: vec![],
                        seed: vec![],
                    };
                    ((*pe).clone(), piece)
                })
                .collect(),
            handoff: Default::default(),
        }
    }

    #[test]
    fn a_precopy_beside_a_predecessor_must_fit_the_successors_memory_request() {
        let (a, b) = (PeId::new("win", "aa", 0), PeId::new("win", "aa", 1));
        const MIB: u64 = 1 << 20;
        let c = checkpoint(&[(&a, 40 * MIB), (&b, 30 * MIB)]);
        let placement: Placement = [(a.clone(), "w1".to_string()), (b.clone(), "w2".into())]
            .into_iter()
            .collect();
        let both = [a.clone(), b.clone()];
        // On a worker none of its predecessors runs on: one copy per worker, any size.
        assert!(precopy_fits(&c, &both, &placement, "w3", 1));
        // Beside one of them: the bytes it fetches (both pieces, 70 MiB) must fit.
        assert!(!precopy_fits(&c, &both, &placement, "w1", 64));
        assert!(precopy_fits(&c, &both, &placement, "w1", 70));
        assert!(precopy_fits(
            &c,
            std::slice::from_ref(&b),
            &placement,
            "w2",
            30
        ));
        assert!(!precopy_fits(&c, &[b], &placement, "w2", 29));
        // A predecessor without a piece fetches nothing.
        let empty = checkpoint(&[]);
        assert!(precopy_fits(&empty, &[a], &placement, "w1", 0));
    }
}
