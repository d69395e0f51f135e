//! Driving an online upgrade on the leader, phase by phase (see
//! `docs/upgrade-protocol.md`).
//!
//! - **prepare**: deploy every new PE of the new version where the upgrade placed it
//!   (successors wait for their predecessors' state, added sources wait for the switch
//!   barrier); once all run and no checkpoint is in flight, *arm* the switch (route
//!   switches on surviving producers, new inputs on surviving consumers, drains on old
//!   PEs), commit `UpgradeSwitch` (which begins the switch checkpoint) and trigger it.
//! - **switch**: when the switch checkpoint completes, commit `FinishUpgradeSwitch`:
//!   the new version is current.
//! - **cleanup**: the reconciler stops the drained PEs; once none is reported, commit
//!   `CompleteUpgrade` with what the sinks measured.
//!
//! A failure before the switch completes (a new PE fails, a worker is lost, a phase
//! times out) commits `AbortUpgrade`: before the switch began the old version never
//! stopped; after, the regions it touched restart from the checkpoint before it.
//! Everything here is recomputed from the replicated state on every tick, so a new
//! leader picks the operation up where the log says it is.

use super::reconcile::region_of;
use super::request::{self, View};
use super::Executor;
use crate::state::{
    AppRecord, ClusterState, Command, UpgradeRecord, UpgradeResultRecord, WorkerState,
};
use std::collections::{BTreeMap, BTreeSet};
use tokio::task::JoinSet;
use weir_common::physical::{PeId, PhysicalModel};
use weir_common::plan::{plan, Instruction, Phase, UpgradePlan};
use weir_common::spec::Role;
use weir_proto::v1 as pb;

/// Longest a prepare may take (new PEs starting) before the upgrade rolls back.
pub const PREPARE_TIMEOUT_MS: u64 = 30_000;
/// Longest the switch checkpoint may take before the upgrade rolls back.
pub const SWITCH_TIMEOUT_MS: u64 = 30_000;
/// How long cleanup waits for passing gaps at the audit sinks to close.
const CLEANUP_SETTLE_MS: u64 = 3_000;
/// How long a successor waits for its predecessor's hand-off snapshot.
const HANDOFF_WAIT_MS: u64 = 120_000;

/// The plan of a running upgrade, from the two versions it joins.
pub fn upgrade_plan(app: &AppRecord, up: &UpgradeRecord) -> Option<UpgradePlan> {
    let old = &app.versions.get(up.from_version as usize - 1)?.spec;
    let new = &app.versions.get(up.to_version as usize - 1)?.spec;
    Some(plan(old, new, None))
}

/// New PE -> the old PEs whose state it takes over. Keyed state is split by key group
/// (every overlapping predecessor); other state (source positions, `sink.verify`,
/// `sink.file`) goes whole from the predecessor of the same index, so it is never
/// taken twice.
pub fn handoff(
    p: &UpgradePlan,
    new_spec: &weir_common::spec::AppSpec,
) -> BTreeMap<String, Vec<String>> {
    let mut out = BTreeMap::new();
    for i in p.instructions().map(|(_, i)| i) {
        let Instruction::StartPe {
            pe,
            operator,
            index,
            state_from,
            ..
        } = i
        else {
            continue;
        };
        let keyed = new_spec
            .operator(operator)
            .is_some_and(|o| o.kind.keyed_state());
        let from: Vec<String> = state_from
            .iter()
            .filter(|o| keyed || o.index() == Some(*index))
            .map(|o| o.to_string())
            .collect();
        if !from.is_empty() {
            out.insert(pe.to_string(), from);
        }
    }
    out
}

/// The operators an upgrade's switch touches in the old version (their PEs drain,
/// switch or gain inputs), for a rollback after the switch began.
fn touched_ops(p: &UpgradePlan, old: &AppRecord) -> BTreeSet<String> {
    let spec = &old.current().spec;
    p.instructions()
        .flat_map(|(_, i)| i.pes())
        .map(|pe| pe.operator().to_string())
        .filter(|op| spec.operator(op).is_some())
        .collect()
}

impl Executor {
    /// Drives every running upgrade one step. `aborts` holds apps whose old version
    /// lost PEs this tick (the reconciler's finding): their upgrade rolls back.
    pub(super) async fn upgrades(
        &mut self,
        state: &ClusterState,
        aborts: &BTreeMap<String, String>,
        calls: &mut JoinSet<()>,
    ) {
        let now = crate::api::now_ms();
        // Only running upgrades' barriers need remembering.
        self.switch_triggered.retain(|(app, barrier)| {
            state
                .apps
                .get(app)
                .and_then(|a| a.upgrade)
                .and_then(|id| state.upgrades.get(&id))
                .is_some_and(|u| u.barrier == *barrier)
        });
        for app in state.apps.values().filter(|a| a.state.is_live()) {
            let Some(up) = app.upgrade.and_then(|id| state.upgrades.get(&id)) else {
                continue;
            };
            let reports = self.liveness.pe_reports(&app.name);
            let Some(p) = upgrade_plan(app, up) else {
                continue;
            };
            let new_spec = &app.versions[up.to_version as usize - 1].spec;
            let phase = up.phase.unwrap_or(Phase::Cleanup);
            let alive = |w: &str| {
                state
                    .workers
                    .get(w)
                    .is_some_and(|r| r.state == WorkerState::Alive)
            };
            // Failures of the new PEs (they are not in the app's placement yet, so the
            // reconciler does not watch them).
            let mut failure = aborts.get(&app.name).cloned();
            if phase != Phase::Cleanup {
                for i in p.instructions().map(|(_, i)| i) {
                    let Instruction::StartPe { pe, .. } = i else {
                        continue;
                    };
                    let Some(w) = up.placement.get(pe.as_str()) else {
                        continue;
                    };
                    if !alive(w) {
                        failure.get_or_insert(format!("worker {w} of new PE {pe} lost"));
                    } else if let Some(r) = reports.get(&(w.clone(), pe.to_string())) {
                        if r.state == pb::PeState::Failed as i32 {
                            failure.get_or_insert(format!("new PE {pe} failed: {}", r.message));
                        }
                    }
                }
                let limit = if phase == Phase::Prepare {
                    PREPARE_TIMEOUT_MS
                } else {
                    SWITCH_TIMEOUT_MS
                };
                if failure.is_none() && now.saturating_sub(up.phase_started_at_ms) > limit {
                    failure = Some(format!(
                        "{} did not finish within {} s",
                        phase.name(),
                        limit / 1000
                    ));
                }
            }
            if let Some(reason) = failure {
                let recover = (phase == Phase::Switch).then(|| {
                    let ops = region_of(app, &touched_ops(&p, app));
                    let ck = app
                        .checkpoints
                        .complete
                        .iter()
                        .rev()
                        .map(|c| c.id)
                        .find(|id| *id < up.barrier)
                        .unwrap_or(0);
                    (ops, ck)
                });
                self.abort(app, up, reason, recover).await;
                continue;
            }
            match phase {
                Phase::Prepare => {
                    self.prepare(state, app, up, &p, new_spec, &reports, calls)
                        .await
                }
                Phase::Switch => {
                    if app.checkpoints.complete.iter().any(|c| c.id == up.barrier) {
                        if let Err(e) = self
                            .shared
                            .write(Command::FinishUpgradeSwitch {
                                app: app.name.clone(),
                                id: up.id,
                                at_ms: now,
                            })
                            .await
                        {
                            tracing::warn!(app = %app.name, error = %e.message(), "switch not committed");
                        } else {
                            tracing::info!(app = %app.name, upgrade = up.id, version = up.to_version, "upgrade switched");
                        }
                    } else if !self
                        .switch_triggered
                        .contains(&(app.name.clone(), up.barrier))
                    {
                        // A new leader: arming is idempotent, and a repeated barrier is
                        // ignored by PEs that passed it.
                        if self.arm(state, app, up, &p, false).await {
                            self.trigger_switch(state, app, up, new_spec, calls);
                        }
                    }
                }
                Phase::Cleanup => {
                    let lingering = reports.iter().any(|((w, pe), r)| {
                        r.app == app.name
                            && alive(w)
                            && !app.placement.contains_key(pe)
                            && state.workers.contains_key(w)
                    });
                    let result = measure(app, up, &p, &reports, now);
                    // Records in flight on different channels (round robin) show as
                    // passing gaps at the audit: keep the least seen during cleanup,
                    // and give the gaps a few seconds to close.
                    let least = self
                        .least_missing
                        .entry(up.id)
                        .or_insert(result.records_lost);
                    *least = (*least).min(result.records_lost);
                    let settled = *least == 0
                        || now.saturating_sub(up.phase_started_at_ms) > CLEANUP_SETTLE_MS;
                    if lingering || !settled {
                        continue;
                    }
                    let result = UpgradeResultRecord {
                        records_lost: *least,
                        ..result
                    };
                    self.least_missing.remove(&up.id);
                    if let Err(e) = self
                        .shared
                        .write(Command::CompleteUpgrade {
                            app: app.name.clone(),
                            id: up.id,
                            at_ms: now,
                            result,
                        })
                        .await
                    {
                        tracing::warn!(app = %app.name, error = %e.message(), "upgrade completion not committed");
                    } else {
                        tracing::info!(app = %app.name, upgrade = up.id, "upgrade complete");
                    }
                }
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn prepare(
        &mut self,
        state: &ClusterState,
        app: &AppRecord,
        up: &UpgradeRecord,
        p: &UpgradePlan,
        new_spec: &weir_common::spec::AppSpec,
        reports: &std::collections::HashMap<(String, String), pb::PeReport>,
        calls: &mut JoinSet<()>,
    ) {
        let model = PhysicalModel::expand(new_spec);
        let view = View {
            app,
            spec: new_spec,
            version: up.to_version,
            placement: &up.placement,
            gpus: &up.gpus,
        };
        // Surviving consumers accept their new inputs first, so the new PEs' links to
        // them come up at once instead of backing off while refused.
        // Successors pre-copy from the latest complete checkpoint: wait until none is in
        // flight, so that the old PEs' deltas (rounds, and at the switch) are against
        // that one.
        if self.cfg.precopy && app.checkpoints.in_flight.is_some() {
            return;
        }
        if !self.arm(state, app, up, p, true).await {
            return;
        }
        let mut ready = true;
        for i in p.instructions().map(|(_, i)| i) {
            let Instruction::StartPe { pe, .. } = i else {
                continue;
            };
            let Some(w) = up.placement.get(pe.as_str()) else {
                ready = false;
                continue;
            };
            let attempt = view.attempt(pe.as_str());
            // Running: its kernel (a program, say) started; a PE still starting may
            // yet fail, and the switch must not begin before that is known.
            let running = reports
                .get(&(w.clone(), pe.to_string()))
                .is_some_and(|r| r.attempt == attempt && r.state == pb::PeState::Running as i32);
            if running {
                continue;
            }
            ready = false;
            if !self.due(w, pe.as_str(), attempt) {
                continue;
            }
            let (Some(spec), Some(wr)) = (model.pes.get(pe), state.workers.get(w)) else {
                continue;
            };
            let header = self.header();
            let Some(mut req) = request::build(&view, &model, spec, &state.workers, header) else {
                continue;
            };
            let preds = up.handoff.get(pe.as_str()).cloned().unwrap_or_default();
            let windows = new_spec
                .operator(&spec.operator)
                .is_some_and(|o| o.kind.keyed_state());
            let precopy = (self.cfg.precopy && windows)
                .then(|| request::precopy_base(app, &preds))
                .flatten();
            req.restore_pieces = preds
                .iter()
                .filter_map(|old| {
                    let ow = app.placement.get(old)?;
                    let orec = state.workers.get(ow)?;
                    let (precopy_checkpoint_id, precopy_locations) = match precopy {
                        Some(c) => (c.id, request::locations(c, old, &state.workers)),
                        None => (0, vec![]),
                    };
                    Some(pb::RestorePiece {
                        pe: old.clone(),
                        checkpoint_id: up.barrier,
                        locations: vec![pb::SnapshotLocation {
                            worker_id: ow.clone(),
                            control_address: orec.control_address.clone(),
                            size_bytes: 0,
                            crc32c: 0,
                        }],
                        wait_ms: HANDOFF_WAIT_MS,
                        precopy_checkpoint_id,
                        precopy_locations,
                    })
                })
                .collect();
            let source = new_spec
                .operator(&spec.operator)
                .is_some_and(|o| o.kind.role() == Role::Source);
            if source && preds.is_empty() {
                req.start_at_barrier = up.barrier;
            }
            let Some(mut c) = self.client(&wr.control_address) else {
                continue;
            };
            let (appn, pe, w) = (app.name.clone(), pe.to_string(), w.clone());
            calls.spawn(async move {
                match c.deploy_pe(req).await {
                    Ok(_) => tracing::info!(app = %appn, %pe, worker = %w, "new PE deployed"),
                    Err(e) => tracing::warn!(app = %appn, %pe, worker = %w, error = %e.message(), "new PE not deployed"),
                }
            });
        }
        // The switch barrier must reach every old PE: all must run (a finished one,
        // whose inputs ended, would never see it).
        let old_view = View::current(app);
        for (pe, w) in &app.placement {
            match reports.get(&(w.clone(), pe.clone())) {
                Some(r) if r.attempt == old_view.attempt(pe) => {
                    if r.state == pb::PeState::Stopped as i32 {
                        let reason = format!(
                            "{pe} finished (its stream ended): there is nothing left to switch"
                        );
                        self.abort(app, up, reason, None).await;
                        return;
                    }
                    if r.state != pb::PeState::Running as i32 {
                        ready = false;
                    }
                }
                _ => ready = false,
            }
        }
        if !ready || app.checkpoints.in_flight.is_some() {
            return;
        }
        if !self.arm(state, app, up, p, false).await {
            return;
        }
        let now = crate::api::now_ms();
        if let Err(e) = self
            .shared
            .write(Command::UpgradeSwitch {
                app: app.name.clone(),
                id: up.id,
                at_ms: now,
            })
            .await
        {
            tracing::warn!(app = %app.name, error = %e.message(), "switch not begun");
            return;
        }
        tracing::info!(app = %app.name, upgrade = up.id, barrier = up.barrier, "upgrade switch begins");
        self.trigger_switch(state, app, up, new_spec, calls);
    }

    /// Rolls the upgrade back (see the module doc).
    async fn abort(
        &mut self,
        app: &AppRecord,
        up: &UpgradeRecord,
        reason: String,
        recover: Option<(Vec<String>, u64)>,
    ) {
        tracing::warn!(app = %app.name, upgrade = up.id, %reason, "upgrade rolls back");
        let cmd = Command::AbortUpgrade {
            app: app.name.clone(),
            id: up.id,
            at_ms: crate::api::now_ms(),
            reason,
            recover,
        };
        if let Err(e) = self.shared.write(cmd).await {
            tracing::warn!(app = %app.name, error = %e.message(), "upgrade rollback not committed");
        }
    }

    /// Arms every switch action (all must be accepted before the barrier is
    /// triggered), or with `only_inputs` the new inputs of surviving consumers. Returns
    /// whether all were.
    async fn arm(
        &mut self,
        state: &ClusterState,
        app: &AppRecord,
        up: &UpgradeRecord,
        p: &UpgradePlan,
        only_inputs: bool,
    ) -> bool {
        let old_view = View::current(app);
        let mut arms: JoinSet<Result<(), String>> = JoinSet::new();
        let addr = |pe: &str| -> Option<String> {
            let w = up.placement.get(pe).or_else(|| app.placement.get(pe))?;
            Some(state.workers.get(w)?.data_address.clone())
        };
        // Old windows are armed to drain from the start when their successors pre-copy:
        // armed, they ship their changes ahead of the switch (docs/upgrade-protocol.md).
        let precopy = self.cfg.precopy;
        let early = |pe: &str| {
            precopy
                && old_view
                    .spec
                    .operator(PeId::operator_of(pe))
                    .is_some_and(|o| o.kind.keyed_state())
        };
        for i in p.instructions().map(|(_, i)| i) {
            let on = match i {
                Instruction::SwitchOutput { pe, .. } if !only_inputs => pe.as_str(),
                Instruction::Drain { pe, .. } if !only_inputs || early(pe.as_str()) => pe.as_str(),
                Instruction::OpenChannel { channel }
                    if app.placement.contains_key(channel.to.as_str()) =>
                {
                    channel.to.as_str()
                }
                _ => continue,
            };
            let Some(w) = app.placement.get(on).and_then(|w| state.workers.get(w)) else {
                return false;
            };
            let header = self.header();
            let Some(mut c) = self.client(&w.control_address) else {
                return false;
            };
            let name = app.name.clone();
            let barrier = up.barrier;
            match i.clone() {
                Instruction::SwitchOutput {
                    pe,
                    stream,
                    partitioning,
                    targets,
                } => {
                    let own = old_view.attempt(pe.as_str());
                    let mut pe_addresses = std::collections::HashMap::new();
                    let mut peer_attempts = std::collections::HashMap::new();
                    for t in &targets {
                        if let Some(a) = addr(t.as_str()) {
                            pe_addresses.insert(t.to_string(), a);
                        }
                        let at = old_view.attempt(t.as_str());
                        if at != own {
                            peer_attempts.insert(t.to_string(), at);
                        }
                    }
                    let req = pb::SwitchOutputRequest {
                        header: Some(header),
                        app: name,
                        switch_output: Some(pb::SwitchOutput {
                            pe: pe.to_string(),
                            stream: stream.to_string(),
                            partitioning: partitioning
                                .as_ref()
                                .map(crate::api::convert::partitioning),
                            targets: targets.iter().map(|t| t.to_string()).collect(),
                        }),
                        barrier_id: barrier,
                        pe_addresses,
                        peer_attempts,
                    };
                    arms.spawn(async move {
                        c.switch_output(req)
                            .await
                            .map(|_| ())
                            .map_err(|e| format!("switch of {pe}: {}", e.message()))
                    });
                }
                Instruction::Drain { pe, hand_off_to } => {
                    let req = pb::DrainRequest {
                        header: Some(header),
                        app: name,
                        drain: Some(pb::Drain {
                            pe: pe.to_string(),
                            hand_off_to: hand_off_to.iter().map(|t| t.to_string()).collect(),
                        }),
                        barrier_id: barrier,
                        targets: vec![],
                    };
                    arms.spawn(async move {
                        c.drain(req)
                            .await
                            .map(|_| ())
                            .map_err(|e| format!("drain of {pe}: {}", e.message()))
                    });
                }
                Instruction::OpenChannel { channel } => {
                    let req = pb::OpenChannelRequest {
                        header: Some(header),
                        app: name,
                        open_channel: Some(pb::OpenChannel {
                            channel: Some(pb::ChannelRef {
                                from_pe: channel.from.to_string(),
                                to_pe: channel.to.to_string(),
                                stream: channel.stream.to_string(),
                            }),
                        }),
                        end: pb::ChannelEnd::Consumer as i32,
                        peer_data_address: String::new(),
                        barrier_id: barrier,
                        peer_attempt: old_view.attempt(channel.from.as_str()),
                    };
                    arms.spawn(async move {
                        c.open_channel(req).await.map(|_| ()).map_err(|e| {
                            format!("input {} of {}: {}", channel.from, channel.to, e.message())
                        })
                    });
                }
                _ => {}
            }
        }
        let mut ok = true;
        while let Some(r) = arms.join_next().await {
            if let Ok(Err(e)) = r {
                tracing::warn!(app = %app.name, error = %e, "switch action not armed; retrying");
                ok = false;
            }
        }
        ok
    }

    /// Triggers the switch barrier at every source of both versions.
    fn trigger_switch(
        &mut self,
        state: &ClusterState,
        app: &AppRecord,
        up: &UpgradeRecord,
        new_spec: &weir_common::spec::AppSpec,
        calls: &mut JoinSet<()>,
    ) {
        self.switch_triggered.insert((app.name.clone(), up.barrier));
        let old_spec = &app.current().spec;
        let is_source = |spec: &weir_common::spec::AppSpec, pe: &str| {
            spec.operator(PeId::operator_of(pe))
                .is_some_and(|o| o.kind.role() == Role::Source)
        };
        let workers: BTreeSet<&String> = app
            .placement
            .iter()
            .filter(|(pe, _)| is_source(old_spec, pe))
            .chain(
                up.placement
                    .iter()
                    .filter(|(pe, _)| is_source(new_spec, pe)),
            )
            .map(|(_, w)| w)
            .collect();
        self.trigger(state, &app.name, workers, up.barrier, calls);
    }
}

/// What the sinks saw: duplicates and gaps at `sink.verify` sinks, and the longest
/// gap between input batches at any sink over the last seconds (which span the
/// switch, since cleanup follows it within a heartbeat or two).
fn measure(
    app: &AppRecord,
    up: &UpgradeRecord,
    p: &UpgradePlan,
    reports: &std::collections::HashMap<(String, String), pb::PeReport>,
    now_ms: u64,
) -> UpgradeResultRecord {
    let spec = &app.current().spec;
    let mut r = UpgradeResultRecord {
        pes_touched: (p.summary.pes_started + p.summary.pes_stopped + p.summary.pes_rewired) as u32,
        ..Default::default()
    };
    for (pe, w) in &app.placement {
        let Some(rep) = reports.get(&(w.clone(), pe.clone())) else {
            continue;
        };
        let sink = spec
            .operator(PeId::operator_of(pe))
            .is_some_and(|o| o.kind.role() == Role::Sink);
        if !sink {
            continue;
        }
        // A sink the upgrade added saw the stream from the switch on only.
        let added = p
            .instructions()
            .any(|(_, i)| matches!(i, Instruction::StartPe { pe: n, .. } if n.as_str() == pe));
        if let Some(v) = rep.verify.as_ref().filter(|_| !added) {
            r.records_duplicated += v.duplicates;
            r.records_lost += v.missing_settled;
        }
        if let Some(s) = &rep.stats {
            r.longest_stall_ms = r.longest_stall_ms.max(stall(&s.input_gaps_ms, now_ms, up));
        }
    }
    r
}

/// The stall an upgrade added at one sink: the longest gap between its input batches in
/// the seconds since the upgrade began, beyond the longest in the seconds before (a
/// window's sink waits a window between batches in steady state too). `gaps` holds one
/// value per second, oldest first, the current second last.
pub fn stall(gaps: &[u64], now_ms: u64, up: &UpgradeRecord) -> u64 {
    let secs = (now_ms.saturating_sub(up.started_at_ms) / 1000 + 1) as usize;
    let split = gaps.len().saturating_sub(secs);
    let during = gaps[split..].iter().copied().max().unwrap_or(0);
    let before = gaps[..split].iter().copied().max().unwrap_or(0);
    during.saturating_sub(before)
}

/// For the reconciler: whether `app` is in an upgrade's prepare or switch (its old
/// version's losses roll the upgrade back instead of recovering it directly), and the
/// upgrade's placement of new PEs (which must not be stopped as strays).
pub fn active<'a>(state: &'a ClusterState, app: &AppRecord) -> Option<&'a UpgradeRecord> {
    let up = state.upgrades.get(&app.upgrade?)?;
    matches!(up.phase, Some(Phase::Prepare) | Some(Phase::Switch)).then_some(up)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn up(started_at_ms: u64) -> UpgradeRecord {
        UpgradeRecord {
            id: 1,
            app: "a".into(),
            from_version: 1,
            to_version: 2,
            completed_phase: None,
            outcome: None,
            summary: Default::default(),
            started_at_ms,
            finished_at_ms: None,
            phase: Some(Phase::Cleanup),
            phase_started_at_ms: started_at_ms,
            barrier: 3,
            placement: BTreeMap::new(),
            gpus: BTreeMap::new(),
            handoff: BTreeMap::new(),
            result: None,
        }
    }

    #[test]
    fn the_stall_is_the_gap_beyond_the_steady_one_since_the_upgrade_began() {
        // Ten seconds of per-second longest gaps; the upgrade began 1.5 s ago (the
        // last two seconds).
        let audit = [12, 13, 12, 11, 14, 12, 12, 13, 85, 12];
        assert_eq!(stall(&audit, 10_500, &up(9_000)), 85 - 14);
        // A window's sink waits a window between batches anyway: nothing added.
        let windowed = [1000; 10];
        assert_eq!(stall(&windowed, 10_500, &up(9_000)), 0);
        // Nothing before the upgrade to compare with: the whole gap counts.
        assert_eq!(stall(&[40, 90], 10_500, &up(0)), 90);
        assert_eq!(stall(&[], 10_500, &up(9_000)), 0);
    }
}
