//! Applies a plan to a physical model, as the workers would: the oracle of the
//! planner's property tests (applying plan(a, b) to physical(a) yields physical(b)).

use super::{Instruction, Phase, UpgradePlan};
use crate::physical::{Output, PeSpec, PhysicalModel};

/// The physical model after every instruction of `plan`, phase by phase.
pub fn apply(plan: &UpgradePlan, before: &PhysicalModel) -> PhysicalModel {
    let mut m = before.clone();
    for phase in Phase::ALL {
        for (p, i) in plan.instructions() {
            if p != phase {
                continue;
            }
            match i {
                Instruction::StartPe {
                    pe,
                    operator,
                    revision,
                    index,
                    parallelism,
                    key_groups,
                    outputs,
                    ..
                } => {
                    m.pes.insert(
                        pe.clone(),
                        PeSpec {
                            id: pe.clone(),
                            operator: operator.clone(),
                            revision: revision.clone(),
                            index: *index,
                            parallelism: *parallelism,
                            key_groups: *key_groups,
                        },
                    );
                    if !outputs.is_empty() {
                        m.outputs.insert(pe.clone(), outputs.clone());
                    }
                }
                Instruction::OpenChannel { channel } => {
                    m.channels.insert(channel.clone());
                }
                Instruction::SwitchOutput {
                    pe,
                    stream,
                    partitioning,
                    targets,
                } => {
                    let outs = m.outputs.entry(pe.clone()).or_default();
                    outs.retain(|o| &o.stream != stream);
                    if let Some(p) = partitioning {
                        outs.push(Output {
                            stream: stream.clone(),
                            partitioning: p.clone(),
                            targets: targets.clone(),
                        });
                        outs.sort();
                    }
                    if outs.is_empty() {
                        m.outputs.remove(pe);
                    }
                }
                Instruction::Drain { .. } => {}
                Instruction::CloseChannel { channel } => {
                    m.channels.remove(channel);
                }
                Instruction::StopPe { pe } => {
                    m.pes.remove(pe);
                    m.outputs.remove(pe);
                }
            }
        }
    }
    m
}
