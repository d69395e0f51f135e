//! From the diff and the two physical models to the phased instructions.

use super::diff::diff;
use super::*;
use crate::fingerprint::FnvBuild;
use crate::physical::{PeSpec, PhysicalModel};
use crate::spec::{AppSpec, OperatorSpec};
use std::collections::{BTreeSet, HashSet};

/// Plans the online upgrade of `old` to `new`. With a placement, instructions are
/// grouped per worker (new PEs must already be placed); without one, per PE.
pub fn plan(old: &AppSpec, new: &AppSpec, placement: Option<&Placement>) -> UpgradePlan {
    let d = diff(old, new);
    // Only the affected subgraph is expanded: PEs of unchanged operators can appear in
    // no instruction (every stream they touch is unchanged), so expanding them would
    // only cost time. This keeps planning proportional to the size of the edit.
    let unchanged: HashSet<&str, FnvBuild> = d
        .operators
        .iter()
        .filter(|o| o.change == OperatorChangeKind::Unchanged)
        .map(|o| o.name.as_str())
        .collect();
    let (pa, pb) = (
        PhysicalModel::expand(&affected(old, &unchanged)),
        PhysicalModel::expand(&affected(new, &unchanged)),
    );

    let started: Vec<&PeSpec> = pb
        .pes
        .values()
        .filter(|p| !pa.pes.contains_key(&p.id))
        .collect();
    let stopped: Vec<&PeSpec> = pa
        .pes
        .values()
        .filter(|p| !pb.pes.contains_key(&p.id))
        .collect();
    let opened: Vec<&Channel> = pb.channels.difference(&pa.channels).collect();
    let closed: Vec<&Channel> = pa.channels.difference(&pb.channels).collect();

    let mut prepare = Vec::new();
    let mut switch = Vec::new();
    let mut cleanup = Vec::new();

    let old_ops: BTreeMap<&str, &OperatorSpec> =
        old.operators.iter().map(|o| (o.name.as_str(), o)).collect();
    let new_ops: BTreeMap<&str, &OperatorSpec> =
        new.operators.iter().map(|o| (o.name.as_str(), o)).collect();
    let mut old_by_op: BTreeMap<&str, Vec<&PeSpec>> = BTreeMap::new();
    for p in pa.pes.values() {
        old_by_op.entry(&*p.operator).or_default().push(p);
    }
    // Old PE -> the new PEs that take over (part of) its state.
    let mut successors: BTreeMap<&PeId, Vec<PeId>> = BTreeMap::new();
    for pe in &started {
        // State carries over when the operator keeps its kind and that kind has state.
        let carries = old_ops
            .get(&*pe.operator)
            .zip(new_ops.get(&*pe.operator))
            .is_some_and(|(a, b)| a.kind.name() == b.kind.name() && b.kind.stateful());
        let state_from: Vec<PeId> = if carries {
            old_by_op
                .get(&*pe.operator)
                .into_iter()
                .flatten()
                .filter(|o| o.key_groups.overlaps(&pe.key_groups))
                .map(|o| o.id.clone())
                .collect()
        } else {
            Vec::new()
        };
        for from in &state_from {
            if let Some((id, _)) = pa.pes.get_key_value(from) {
                successors.entry(id).or_default().push(pe.id.clone());
            }
        }
        prepare.push(Instruction::StartPe {
            pe: pe.id.clone(),
            operator: pe.operator.clone(),
            revision: pe.revision.clone(),
            index: pe.index,
            parallelism: pe.parallelism,
            key_groups: pe.key_groups,
            state_from,
            outputs: pb.outputs.get(&pe.id).cloned().unwrap_or_default(),
        });
    }
    for c in &opened {
        prepare.push(Instruction::OpenChannel {
            channel: (*c).clone(),
        });
    }

    // Surviving producers whose routes differ switch at the barrier. (In the
    // restricted models a producer may have outputs on one side only.)
    let mut rewired = BTreeSet::new();
    let producers: BTreeSet<&PeId> = pa.outputs.keys().chain(pb.outputs.keys()).collect();
    for pe in producers {
        if !pa.pes.contains_key(pe) || !pb.pes.contains_key(pe) {
            continue;
        }
        let outs_a = pa.outputs.get(pe).map(Vec::as_slice).unwrap_or(&[]);
        let outs_b = pb.outputs.get(pe).map(Vec::as_slice).unwrap_or(&[]);
        let streams: BTreeSet<&StreamKey> =
            outs_a.iter().chain(outs_b).map(|o| &o.stream).collect();
        for s in streams {
            let a = outs_a.iter().find(|o| &o.stream == s);
            let b = outs_b.iter().find(|o| &o.stream == s);
            if a != b {
                rewired.insert(pe.clone());
                switch.push(Instruction::SwitchOutput {
                    pe: pe.clone(),
                    stream: s.clone(),
                    partitioning: b.map(|o| o.partitioning.clone()),
                    targets: b.map(|o| o.targets.clone()).unwrap_or_default(),
                });
            }
        }
    }
    for pe in &stopped {
        let mut hand_off_to = successors.remove(&pe.id).unwrap_or_default();
        hand_off_to.sort();
        switch.push(Instruction::Drain {
            pe: pe.id.clone(),
            hand_off_to,
        });
    }

    for c in &closed {
        cleanup.push(Instruction::CloseChannel {
            channel: (*c).clone(),
        });
    }
    for pe in &stopped {
        cleanup.push(Instruction::StopPe { pe: pe.id.clone() });
    }

    let touched: BTreeSet<&PeId> = prepare
        .iter()
        .chain(&switch)
        .chain(&cleanup)
        .flat_map(Instruction::pes)
        .collect();
    let mut untouched_pes: Vec<PeId> = pa
        .pes
        .keys()
        .filter(|p| !touched.contains(p))
        .cloned()
        .collect();
    for op in old
        .operators
        .iter()
        .filter(|o| unchanged.contains(o.name.as_str()))
    {
        let rev = &d.old_revisions[op.name.as_str()];
        untouched_pes.extend((0..op.parallelism).map(|i| PeId::new(&op.name, rev, i)));
    }

    let summary = PlanSummary {
        pes_started: started.len(),
        pes_stopped: stopped.len(),
        pes_rewired: rewired.len(),
        pes_untouched: untouched_pes.len(),
        channels_opened: opened.len(),
        channels_closed: closed.len(),
    };
    let adjusted_streams = d
        .streams
        .iter()
        .filter(|s| s.change != StreamChangeKind::Unchanged)
        .map(|s| s.stream.clone())
        .collect();
    let phases = [
        (Phase::Prepare, prepare),
        (Phase::Switch, switch),
        (Phase::Cleanup, cleanup),
    ]
    .into_iter()
    .map(|(phase, instrs)| PlanPhase {
        phase,
        groups: group(instrs, placement),
    })
    .collect();
    UpgradePlan {
        app: new.name.clone(),
        operators: d.operators,
        streams: d.streams,
        adjusted_streams,
        phases,
        untouched_pes,
        summary,
    }
}

/// The part of `app` made of operators not in `unchanged` and the streams among them.
fn affected(app: &AppSpec, unchanged: &HashSet<&str, FnvBuild>) -> AppSpec {
    let keep = |name: &str| !unchanged.contains(name);
    AppSpec {
        operators: app
            .operators
            .iter()
            .filter(|o| keep(&o.name))
            .cloned()
            .collect(),
        streams: app
            .streams
            .iter()
            .filter(|s| keep(&s.from) && keep(&s.to))
            .cloned()
            .collect(),
        name: app.name.clone(),
        tenant: app.tenant.clone(),
        description: String::new(),
        priority: app.priority,
        checkpoint_interval_ms: app.checkpoint_interval_ms,
        start: app.start.clone(),
    }
}

/// Groups instructions by where they execute, each group in a deterministic order
/// (instruction kind first: starts before channel opens, switches before drains).
fn group(mut instrs: Vec<Instruction>, placement: Option<&Placement>) -> Vec<InstructionGroup> {
    instrs.sort();
    let target = |i: &Instruction| {
        let pe = i.subject();
        match placement.and_then(|p| p.get(pe)) {
            Some(w) => Target::Worker(w.clone()),
            None => Target::Pe(pe.clone()),
        }
    };
    let mut groups: BTreeMap<Target, Vec<Instruction>> = BTreeMap::new();
    for i in instrs {
        groups.entry(target(&i)).or_default().push(i);
    }
    groups
        .into_iter()
        .map(|(target, instructions)| InstructionGroup {
            target,
            instructions,
        })
        .collect()
}
