//! From our types to weir.v1 messages. One direction only: the master answers with
//! these; requests carry specs as text and are parsed by weir-common.

use crate::state::{AppRecord, AppState, FinalPe, FinalVerify, WorkerRecord, WorkerState};
use weir_common::physical::{Channel, Output, PhysicalModel};
use weir_common::plan::{
    self, Instruction, OperatorChangeKind, StreamChangeKind, Target, UpgradePlan,
};
use weir_common::spec::{redact_spec_text, redacted_operator_json, Partitioning};
use weir_proto::v1 as pb;

/// An app state as the protocol names it.
pub fn app_state(s: AppState) -> pb::AppState {
    match s {
        AppState::Submitted => pb::AppState::Submitted,
        AppState::Running => pb::AppState::Running,
        AppState::Upgrading => pb::AppState::Upgrading,
        AppState::Cancelled => pb::AppState::Cancelled,
        AppState::Failed => pb::AppState::Failed,
        AppState::Finished => pb::AppState::Finished,
    }
}

/// A PE's last report, as kept when its app finished.
pub fn final_pe(worker: &str, r: &pb::PeReport) -> FinalPe {
    let stats = r.stats.clone().unwrap_or_default();
    FinalPe {
        worker: worker.to_string(),
        records_in: stats.records_in,
        records_out: stats.records_out,
        bytes_in: stats.bytes_in,
        bytes_out: stats.bytes_out,
        verify: r.verify.map(|v| FinalVerify {
            records: v.records,
            distinct: v.distinct,
            duplicates: v.duplicates,
            expected: v.expected,
            complete: v.complete,
            missing_below_max: v.missing_below_max,
            sources: v.sources,
            inputs_ended: v.inputs_ended,
            missing_settled: v.missing_settled,
        }),
    }
}

/// A finished PE as GetApp shows it: stopped, with its final figures.
fn finished_pe_view(pe: pb::PeRef, f: &FinalPe, gpus: Vec<String>) -> pb::PeView {
    pb::PeView {
        pe: Some(pe),
        worker_id: f.worker.clone(),
        state: pb::PeState::Stopped as i32,
        stats: Some(pb::PeStats {
            records_in: f.records_in,
            records_out: f.records_out,
            bytes_in: f.bytes_in,
            bytes_out: f.bytes_out,
            ..Default::default()
        }),
        message: String::new(),
        verify: f.verify.as_ref().map(|v| pb::VerifySummary {
            records: v.records,
            distinct: v.distinct,
            duplicates: v.duplicates,
            expected: v.expected,
            complete: v.complete,
            missing_below_max: v.missing_below_max,
            sources: v.sources,
            inputs_ended: v.inputs_ended,
            missing_settled: v.missing_settled,
        }),
        gpu_uuids: gpus,
    }
}

/// The one-line view of an app.
pub fn app_summary(a: &AppRecord) -> pb::AppSummary {
    pb::AppSummary {
        name: a.name.clone(),
        tenant: a.tenant.clone(),
        state: app_state(a.state()) as i32,
        version: u64::from(a.current_version),
        pe_count: a
            .current()
            .spec
            .operators
            .iter()
            .map(|o| o.parallelism)
            .sum(),
        created_at_ms: a.created_at_ms,
        finished_at_ms: a.finished.as_ref().map_or(0, |f| f.at_ms),
    }
}

/// The full view of an app: spec, PEs (with placement and what their workers last
/// reported: state, statistics, `sink.verify` summaries), streams, versions.
/// The operators of a version that templates generated, each with its concrete spec.
fn generated_operators(v: &crate::state::AppVersion) -> Vec<pb::GeneratedOperator> {
    v.generated
        .iter()
        .map(|(op, p)| pb::GeneratedOperator {
            operator: op.clone(),
            template: p.template.clone(),
            base_image: p.base_image.clone(),
            image: p.image.clone(),
            operator_json: v
                .spec
                .operator(op)
                .map(redacted_operator_json)
                .unwrap_or_default(),
        })
        .collect()
}

pub fn app_detail(
    a: &AppRecord,
    reports: &crate::shared::PeReports,
    upgrades: &std::collections::BTreeMap<u64, crate::state::UpgradeRecord>,
) -> pb::AppDetail {
    let v = a.current();
    let m = PhysicalModel::expand(&v.spec);
    let up = a.upgrade.and_then(|id| upgrades.get(&id));
    // During an upgrade, the new version's new PEs show too.
    let next = up
        .filter(|u| u.to_version != a.current_version)
        .and_then(|u| a.versions.get(u.to_version as usize - 1))
        .map(|nv| PhysicalModel::expand(&nv.spec));
    let extra: Vec<_> = next
        .iter()
        .flat_map(|n| n.pes.values())
        .filter(|p| !m.pes.contains_key(&p.id))
        .collect();
    let pes = m
        .pes
        .values()
        .chain(extra)
        .map(|p| {
            let pe_ref = pb::PeRef {
                id: p.id.to_string(),
                operator: p.operator.to_string(),
                revision: p.revision.to_string(),
                index: p.index,
            };
            if let Some(f) = a.finished.as_ref().and_then(|f| f.pes.get(p.id.as_str())) {
                return finished_pe_view(pe_ref, f, Vec::new());
            }
            let worker = a
                .placement
                .get(p.id.as_str())
                .or_else(|| up.and_then(|u| u.placement.get(p.id.as_str())))
                .cloned()
                .unwrap_or_default();
            // Only a report from the worker the PE is placed on counts: after a move,
            // the old worker's last word is stale.
            let attempt = a.checkpoints.attempt(&p.operator);
            let report = reports
                .get(&(worker.clone(), p.id.clone()))
                .filter(|r| r.attempt == attempt);
            pb::PeView {
                pe: Some(pe_ref),
                state: report.map_or(pb::PeState::Pending as i32, |r| r.state),
                stats: report.and_then(|r| r.stats.clone()),
                message: report.map(|r| r.message.clone()).unwrap_or_default(),
                verify: report.and_then(|r| r.verify),
                gpu_uuids: a.gpus.get(p.id.as_str()).cloned().unwrap_or_default(),
                worker_id: worker,
            }
        })
        .collect();
    let streams = v
        .spec
        .streams
        .iter()
        .map(|s| pb::StreamView {
            name: s.key().to_string(),
            from_operator: s.from.clone(),
            to_operator: s.to.clone(),
            partitioning: Some(partitioning(&s.partitioning)),
            channels: m.channels.iter().filter(|c| c.stream == s.key()).count() as u32,
        })
        .collect();
    let versions = a
        .versions
        .iter()
        .map(|v| pb::VersionInfo {
            version: u64::from(v.version),
            created_at_ms: v.submitted_at_ms,
            operation_id: upgrades
                .values()
                .find(|u| u.app == a.name && u.to_version == v.version)
                .map(|u| u.id.to_string())
                .unwrap_or_default(),
            operator_count: v.spec.operators.len() as u32,
            pe_count: v.spec.operators.iter().map(|o| o.parallelism).sum(),
            spec: redact_spec_text(&v.spec_text),
            generated: generated_operators(v),
            signed_by_key: v
                .signature
                .as_ref()
                .map(|s| s.key_id.clone())
                .unwrap_or_default(),
        })
        .collect();
    pb::AppDetail {
        summary: Some(app_summary(a)),
        spec: redact_spec_text(&v.spec_text),
        spec_format: pb::SpecFormat::Yaml as i32,
        pes,
        streams,
        versions,
        current_upgrade: up.map(upgrade_operation),
        // Leader memory, not replicated state: GetApp fills it in.
        unplaced_reason: String::new(),
    }
}

/// An upgrade operation as the API shows it, without its progress (leader memory, not
/// replicated state: the API fills it in).
pub fn upgrade_operation(u: &crate::state::UpgradeRecord) -> pb::UpgradeOperation {
    use crate::state::{UpgradeOutcome, UpgradeStage};
    let (phase, reason) = match &u.stage {
        UpgradeStage::Ended { outcome, .. } => match outcome {
            UpgradeOutcome::Completed => (pb::UpgradePhase::Done, String::new()),
            UpgradeOutcome::RolledBack(why) => (pb::UpgradePhase::RolledBack, why.clone()),
        },
        UpgradeStage::Running { phase, .. } => match phase {
            plan::Phase::Prepare => (pb::UpgradePhase::Prepare, String::new()),
            plan::Phase::Switch => (pb::UpgradePhase::Switch, String::new()),
            plan::Phase::Cleanup => (pb::UpgradePhase::Cleanup, String::new()),
        },
    };
    pb::UpgradeOperation {
        operation_id: u.id.to_string(),
        from_version: u64::from(u.from_version),
        to_version: u64::from(u.to_version),
        phase: phase as i32,
        reason,
        started_at_ms: u.started_at_ms,
        finished_at_ms: u.finished_at_ms().unwrap_or(0),
        plan_summary: Some(plan_summary(&u.summary)),
        result: u.result().map(|r| pb::UpgradeResult {
            pes_touched: r.pes_touched,
            records_lost: r.records_lost,
            records_duplicated: r.records_duplicated,
            longest_stall_ms: r.longest_stall_ms,
            state_precopied_bytes: r.state_precopied_bytes,
            state_barrier_bytes: r.state_barrier_bytes,
            successors_behind: r.successors_behind.clone(),
        }),
        progress: None,
    }
}

/// A worker as `ListWorkers` shows it.
pub fn worker_view(w: &WorkerRecord, last_heartbeat_ms: u64, pe_count: u32) -> pb::WorkerView {
    pb::WorkerView {
        worker_id: w.id.clone(),
        control_address: w.control_address.clone(),
        data_address: w.data_address.clone(),
        resources: Some(pb::WorkerResources {
            cpu_cores: w.cpu_cores,
            memory_mb: w.memory_mb,
            gpus: w
                .gpus
                .iter()
                .map(|g| pb::GpuDevice {
                    uuid: g.uuid.clone(),
                    vendor: g.vendor.clone(),
                    model: g.model.clone(),
                    memory_total_mb: g.memory_total_mb,
                    declared: g.declared,
                    ..Default::default()
                })
                .collect(),
            images: w.images.iter().map(pb::DockerImage::from).collect(),
            images_unchanged: false,
            pull_registries: w.registries.clone(),
        }),
        cpu_free: w.cpu_cores,
        memory_free_mb: w.memory_mb,
        labels: w.labels.clone().into_iter().collect(),
        pools: w.labels.get("pool").cloned().into_iter().collect(),
        state: match w.state {
            WorkerState::Alive => pb::WorkerState::Alive,
            WorkerState::Lost => pb::WorkerState::Dead,
        } as i32,
        last_heartbeat_ms,
        pe_count,
        incarnation: w.incarnation,
    }
}

/// A partitioning as the protocol names it.
pub fn partitioning(p: &Partitioning) -> pb::Partitioning {
    use pb::partitioning::Kind;
    let (kind, key_field) = match p {
        Partitioning::Forward => (Kind::Forward, String::new()),
        Partitioning::RoundRobin => (Kind::RoundRobin, String::new()),
        Partitioning::Hash { key } => (Kind::Hash, key.clone()),
        Partitioning::Broadcast => (Kind::Broadcast, String::new()),
    };
    pb::Partitioning {
        kind: kind as i32,
        key_field,
    }
}

fn channel(c: &Channel) -> pb::ChannelRef {
    pb::ChannelRef {
        from_pe: c.from.to_string(),
        to_pe: c.to.to_string(),
        stream: c.stream.to_string(),
    }
}

fn output(o: &Output) -> pb::Output {
    pb::Output {
        stream: o.stream.to_string(),
        partitioning: Some(partitioning(&o.partitioning)),
        targets: o.targets.iter().map(|t| t.to_string()).collect(),
    }
}

fn instruction(i: &Instruction) -> pb::Instruction {
    use pb::instruction::Kind;
    let ids = |v: &[weir_common::physical::PeId]| v.iter().map(|p| p.to_string()).collect();
    let kind = match i {
        Instruction::StartPe {
            pe,
            operator,
            revision,
            index,
            parallelism,
            key_groups,
            state_from,
            outputs,
        } => Kind::StartPe(pb::StartPe {
            pe: pe.to_string(),
            operator: operator.to_string(),
            revision: revision.to_string(),
            index: *index,
            parallelism: *parallelism,
            spec_json: String::new(),
            state_from: ids(state_from),
            key_groups: Some(pb::KeyGroupRange {
                start: key_groups.start,
                end: key_groups.end,
            }),
            outputs: outputs.iter().map(output).collect(),
        }),
        Instruction::OpenChannel { channel: c } => Kind::OpenChannel(pb::OpenChannel {
            channel: Some(channel(c)),
        }),
        Instruction::SwitchOutput {
            pe,
            stream,
            partitioning: p,
            targets,
        } => Kind::SwitchOutput(pb::SwitchOutput {
            pe: pe.to_string(),
            stream: stream.to_string(),
            partitioning: p.as_ref().map(partitioning),
            targets: ids(targets),
        }),
        Instruction::Drain { pe, hand_off_to } => Kind::Drain(pb::Drain {
            pe: pe.to_string(),
            hand_off_to: ids(hand_off_to),
        }),
        Instruction::CloseChannel { channel: c } => Kind::CloseChannel(pb::CloseChannel {
            channel: Some(channel(c)),
        }),
        Instruction::StopPe { pe } => Kind::StopPe(pb::StopPe { pe: pe.to_string() }),
    };
    pb::Instruction { kind: Some(kind) }
}

/// The structured plan.
pub fn upgrade_plan(p: &UpgradePlan, from_version: u32, to_version: u32) -> pb::UpgradePlan {
    pb::UpgradePlan {
        app: p.app.clone(),
        from_version: u64::from(from_version),
        to_version: u64::from(to_version),
        operators: p
            .operators
            .iter()
            .map(|o| pb::OperatorChange {
                name: o.name.clone(),
                kind: match o.change {
                    OperatorChangeKind::Added => pb::OperatorChangeKind::Added,
                    OperatorChangeKind::Removed => pb::OperatorChangeKind::Removed,
                    OperatorChangeKind::Replaced => pb::OperatorChangeKind::Replaced,
                    OperatorChangeKind::Rescaled => pb::OperatorChangeKind::Rescaled,
                    OperatorChangeKind::Rewired => pb::OperatorChangeKind::Rewired,
                    OperatorChangeKind::Unchanged => pb::OperatorChangeKind::Unchanged,
                } as i32,
                reasons: o.reasons.clone(),
                old_parallelism: o.old_parallelism,
                new_parallelism: o.new_parallelism,
            })
            .collect(),
        streams: p
            .streams
            .iter()
            .map(|s| pb::StreamChange {
                stream: s.stream.to_string(),
                kind: match s.change {
                    StreamChangeKind::Added => pb::StreamChangeKind::Added,
                    StreamChangeKind::Removed => pb::StreamChangeKind::Removed,
                    StreamChangeKind::Repartitioned => pb::StreamChangeKind::Repartitioned,
                    StreamChangeKind::Rerouted => pb::StreamChangeKind::Rerouted,
                    StreamChangeKind::Unchanged => pb::StreamChangeKind::Unchanged,
                } as i32,
                old_partitioning: s.old.as_ref().map(partitioning),
                new_partitioning: s.new.as_ref().map(partitioning),
            })
            .collect(),
        adjusted_streams: p.adjusted_streams.iter().map(|s| s.to_string()).collect(),
        phases: p
            .phases
            .iter()
            .map(|ph| pb::PlanPhase {
                phase: match ph.phase {
                    plan::Phase::Prepare => pb::Phase::Prepare,
                    plan::Phase::Switch => pb::Phase::Switch,
                    plan::Phase::Cleanup => pb::Phase::Cleanup,
                } as i32,
                groups: ph
                    .groups
                    .iter()
                    .map(|g| pb::InstructionGroup {
                        target: Some(match &g.target {
                            Target::Worker(w) => pb::instruction_group::Target::WorkerId(w.clone()),
                            Target::Pe(pe) => pb::instruction_group::Target::PeId(pe.to_string()),
                        }),
                        instructions: g.instructions.iter().map(instruction).collect(),
                    })
                    .collect(),
            })
            .collect(),
        untouched_pes: p.untouched_pes.iter().map(|p| p.to_string()).collect(),
        summary: Some(plan_summary(&p.summary)),
    }
}

/// Plan counts as the API shows them.
pub fn plan_summary(s: &weir_common::plan::PlanSummary) -> pb::PlanSummary {
    pb::PlanSummary {
        pes_started: s.pes_started as u32,
        pes_stopped: s.pes_stopped as u32,
        pes_rewired: s.pes_rewired as u32,
        pes_untouched: s.pes_untouched as u32,
        channels_opened: s.channels_opened as u32,
        channels_closed: s.channels_closed as u32,
    }
}

/// An app's checkpoints and recoveries as the API shows them.
pub fn checkpoints(ck: &crate::state::AppCheckpoints) -> pb::ListCheckpointsResponse {
    pb::ListCheckpointsResponse {
        checkpoints: ck
            .complete
            .iter()
            .map(|c| pb::CheckpointInfo {
                checkpoint_id: c.id,
                started_at_ms: c.started_at_ms,
                completed_at_ms: c.completed_at_ms,
                size_bytes: c.size_bytes(),
                max_alignment_ms: c.max_alignment_ms,
                pieces: c
                    .pieces
                    .iter()
                    .map(|(pe, p)| pb::CheckpointPieceInfo {
                        pe: pe.to_string(),
                        size_bytes: p.size_bytes,
                        crc32c: p.crc32c,
                        replicas: p.replicas.clone(),
                        builds_on: p
                            .seed
                            .first()
                            .map(|s| s.link.checkpoint_id)
                            .into_iter()
                            .chain(p.chain.iter().map(|l| l.checkpoint_id))
                            .collect(),
                        seeded_from: p.seed.iter().map(|s| s.pe.to_string()).collect(),
                        restore_bytes: p.restore_bytes(),
                    })
                    .collect(),
            })
            .collect(),
        recoveries: ck
            .recoveries
            .iter()
            .map(|r| pb::RecoveryInfo {
                at_ms: r.at_ms,
                attempt: r.attempt,
                checkpoint_id: r.checkpoint_id,
                operators: r.operators.clone(),
                reason: r.reason.clone(),
            })
            .collect(),
        in_flight_id: ck.in_flight.as_ref().map_or(0, |f| f.id),
    }
}
