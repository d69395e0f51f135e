//! Building the commands the executor sends, from the replicated state.

use crate::api::convert::partitioning;
use crate::state::{AppRecord, WorkerRecord, WorkerState};
use std::collections::BTreeMap;
use weir_common::physical::{source_ordinal, PeId, PhysicalModel};
use weir_proto::v1 as pb;

/// The DeployPe command of `pe`, or `None` when one of its consumers is not placed on
/// a known worker yet (it would not know where to send).
pub fn deploy_pe(
    app: &AppRecord,
    model: &PhysicalModel,
    pe: &str,
    workers: &BTreeMap<String, WorkerRecord>,
    header: pb::CommandHeader,
) -> Option<pb::DeployPeRequest> {
    let id = PeId(pe.into());
    let p = model.pes.get(&id)?;
    let spec = app.current().spec.operator(&p.operator)?;
    let outputs = model.outputs.get(&id).cloned().unwrap_or_default();
    let mut pe_addresses = std::collections::HashMap::new();
    for o in &outputs {
        for t in &o.targets {
            let w = app.placement.get(t.as_str())?;
            let addr = &workers.get(w)?.data_address;
            pe_addresses.insert(t.to_string(), addr.clone());
        }
    }
    let inputs = model
        .inputs_of(&id)
        .map(|c| pb::ChannelRef {
            from_pe: c.from.to_string(),
            to_pe: c.to.to_string(),
            stream: c.stream.to_string(),
        })
        .collect();
    let restore = app
        .checkpoints
        .restore
        .get(&*p.operator)
        .copied()
        .unwrap_or(0);
    Some(pb::DeployPeRequest {
        header: Some(header),
        app: app.name.clone(),
        tenant: app.tenant.clone(),
        version: u64::from(app.current_version),
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
        gpu_uuids: app.gpus.get(pe).cloned().unwrap_or_default(),
        pe_addresses,
        restore_from_address: String::new(),
        inputs,
        source_ordinal: source_ordinal(&p.operator, p.index),
        attempt: app.checkpoints.attempt(&p.operator),
        restore_checkpoint_id: restore,
        restore_from: restore_from(app, restore, pe, workers),
    })
}

/// Where the snapshot of `pe` in checkpoint `id` is, alive workers first; empty when
/// `id` is 0 or the PE had no state in it.
fn restore_from(
    app: &AppRecord,
    id: u64,
    pe: &str,
    workers: &BTreeMap<String, WorkerRecord>,
) -> Vec<pb::SnapshotLocation> {
    let Some(piece) = app
        .checkpoints
        .complete
        .iter()
        .find(|c| c.id == id)
        .and_then(|c| c.pieces.get(pe))
    else {
        return vec![];
    };
    let mut out: Vec<(bool, pb::SnapshotLocation)> = piece
        .replicas
        .iter()
        .filter_map(|w| {
            let rec = workers.get(w)?;
            Some((
                rec.state != WorkerState::Alive,
                pb::SnapshotLocation {
                    worker_id: w.clone(),
                    control_address: rec.control_address.clone(),
                    size_bytes: piece.size_bytes,
                    crc32c: piece.crc32c,
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
    before: &BTreeMap<String, String>,
    after: &BTreeMap<String, String>,
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
