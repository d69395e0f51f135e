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

pub mod admit;
mod decide;
#[cfg(test)]
mod decide_tests;

use decide::{decide_prepare, decide_upgrade, AfterPrepare, Prepare, Step};
pub use decide::{progress, Memory, Reports};

use super::request::{self, View};
use super::Executor;
use crate::state::{AppRecord, ClusterState, Command, UpgradeRecord};
use std::collections::{BTreeMap, BTreeSet};
use tokio::task::JoinSet;
use weir_common::physical::{PeId, PhysicalModel};
use weir_common::plan::{plan, Instruction, Phase, UpgradePlan};
use weir_common::spec::Role;
use weir_proto::v1 as pb;

/// How long a successor waits for its predecessor's hand-off snapshot.
const HANDOFF_WAIT_MS: u64 = 120_000;

/// The plan of a running upgrade, from the two versions it joins.
pub fn upgrade_plan(app: &AppRecord, up: &UpgradeRecord) -> Option<UpgradePlan> {
    let old = &app.versions.get(up.from_version as usize - 1)?.spec;
    let new = &app.versions.get(up.to_version as usize - 1)?.spec;
    Some(plan(old, new, None))
}

impl Executor {
    /// Drives every running upgrade one step: [`decide_upgrade`] says which, this
    /// carries it out. `aborts` holds apps whose old version lost PEs this tick (the
    /// reconciler's finding): their upgrade rolls back.
    pub(super) async fn upgrades(
        &mut self,
        state: &ClusterState,
        aborts: &BTreeMap<String, String>,
        calls: &mut JoinSet<()>,
    ) {
        let now = crate::shared::now_ms();
        self.upgrade_memory.retain_running(state);
        for app in state.apps.values().filter(|a| a.state().is_live()) {
            let Some(up) = app.upgrade.and_then(|id| state.upgrades.get(&id)) else {
                continue;
            };
            let reports = self.liveness.pe_reports(&app.name);
            let p = match self.upgrade_memory.plans.get(&up.id) {
                Some(p) => p.clone(),
                None => {
                    let Some(p) = upgrade_plan(app, up) else {
                        continue;
                    };
                    let p = std::sync::Arc::new(p);
                    self.upgrade_memory.plans.insert(up.id, p.clone());
                    p
                }
            };
            let new_spec = &app.versions[up.to_version as usize - 1].spec;
            let rollback = aborts.get(&app.name).map(String::as_str);
            let step = decide_upgrade(
                state,
                app,
                up,
                &p,
                &reports,
                rollback,
                now,
                &mut self.upgrade_memory,
            );
            match step {
                Step::Wait => {}
                Step::Abort { reason, recover } => self.abort(app, up, reason, recover).await,
                Step::Prepare => {
                    self.prepare(state, app, up, &p, new_spec, &reports, calls)
                        .await
                }
                Step::FinishSwitch => {
                    let cmd = Command::FinishUpgradeSwitch {
                        app: app.name.clone(),
                        id: up.id,
                        at_ms: now,
                    };
                    if self.commit(&app.name, cmd, "switch").await {
                        tracing::info!(app = %app.name, upgrade = up.id, version = up.to_version, "upgrade switched");
                    }
                }
                Step::TriggerSwitch => {
                    // A new leader: arming is idempotent, and a repeated barrier is
                    // ignored by PEs that passed it.
                    if self.arm(state, app, up, &p, false).await {
                        self.trigger_switch(state, app, up, new_spec, calls);
                    }
                }
                Step::Complete(result) => {
                    let cmd = Command::CompleteUpgrade {
                        app: app.name.clone(),
                        id: up.id,
                        at_ms: now,
                        result,
                    };
                    if self.commit(&app.name, cmd, "upgrade completion").await {
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
        reports: &decide::Reports,
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
        let old_view = View::current(app);
        let step = decide_prepare(
            app,
            up,
            p,
            reports,
            self.cfg.precopy,
            |pe| view.attempt(pe),
            |pe| old_view.attempt(pe),
        );
        let Prepare::Go { start, then } = step else {
            return;
        };
        // Surviving consumers accept their new inputs first, so the new PEs' links to
        // them come up at once instead of backing off while refused.
        if !self.arm(state, app, up, p, true).await {
            return;
        }
        for (w, pe, attempt) in &start {
            let (w, pe, attempt) = (w, pe, *attempt);
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
            let preds = up.handoff.get(pe).cloned().unwrap_or_default();
            let op = new_spec.operator(&spec.operator);
            let windows = op.is_some_and(|o| o.kind.keyed_state());
            let memory_mb = op.map_or(0, |o| o.resources.memory_mb);
            let precopy = (self.cfg.precopy && windows)
                .then(|| request::precopy_base(app, &preds))
                .flatten()
                .filter(|c| {
                    let fits =
                        request::precopy_fits(c, &preds, &app.placement, w, memory_mb);
                    if !fits {
                        tracing::info!(app = %app.name, %pe, worker = %w, memory_mb, "no pre-copy: beside a predecessor, its copy would not fit its memory request; its state moves at the switch");
                    }
                    fits
                });
            req.restore_pieces = preds
                .iter()
                .filter_map(|old| {
                    let ow = app.placement.get(old)?;
                    let orec = state.workers.get(ow)?;
                    let (precopy_checkpoint_id, precopy_locations, precopy_chain, precopy_seed) =
                        match precopy {
                            Some(c) => (
                                c.id,
                                request::locations(c, old, &state.workers),
                                request::chain(c, old, &state.workers),
                                request::seed(c, old, &state.workers),
                            ),
                            None => (0, vec![], vec![], vec![]),
                        };
                    Some(pb::RestorePiece {
                        pe: old.to_string(),
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
                        chain: vec![],
                        precopy_chain,
                        seed: vec![],
                        precopy_seed,
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
        match then {
            AfterPrepare::Wait => return,
            AfterPrepare::Abort(reason) => {
                self.abort(app, up, reason, None).await;
                return;
            }
            AfterPrepare::Switch => {}
        }
        if !self.arm(state, app, up, p, false).await {
            return;
        }
        let cmd = Command::UpgradeSwitch {
            app: app.name.clone(),
            id: up.id,
            at_ms: crate::shared::now_ms(),
        };
        if !self.commit(&app.name, cmd, "switch begin").await {
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
            at_ms: crate::shared::now_ms(),
            reason,
            recover,
        };
        self.commit(&app.name, cmd, "upgrade rollback").await;
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
        let worker_of = |pe: &str| -> Option<String> {
            up.placement
                .get(pe)
                .or_else(|| app.placement.get(pe))
                .cloned()
        };
        let addr = |pe: &str| -> Option<String> {
            Some(state.workers.get(&worker_of(pe)?)?.data_address.clone())
        };
        // Old windows are armed to drain from the start when their successors pre-copy:
        // armed, they ship their changes ahead of the switch (docs/upgrade-protocol.md).
        let precopy = self.cfg.precopy;
        let early = |pe: &PeId| {
            precopy
                && old_view
                    .spec
                    .operator(pe.operator())
                    .is_some_and(|o| o.kind.keyed_state())
        };
        for i in p.instructions().map(|(_, i)| i) {
            let on = match i {
                Instruction::SwitchOutput { pe, .. } if !only_inputs => pe.as_str(),
                Instruction::Drain { pe, .. } if !only_inputs || early(pe) => pe.as_str(),
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
                    let own = old_view.attempt(&pe);
                    let mut pe_addresses = std::collections::HashMap::new();
                    let mut peer_attempts = std::collections::HashMap::new();
                    for t in &targets {
                        if let Some(a) = addr(t.as_str()) {
                            pe_addresses.insert(t.to_string(), a);
                        }
                        let at = old_view.attempt(t);
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
                            partitioning: partitioning.as_ref().map(crate::convert::partitioning),
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
                        peer_attempt: old_view.attempt(&channel.from),
                        peer_worker_id: worker_of(channel.from.as_str()).unwrap_or_default(),
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
        self.upgrade_memory
            .switch_triggered
            .insert((app.name.clone(), up.barrier));
        let old_spec = &app.current().spec;
        let is_source = |spec: &weir_common::spec::AppSpec, pe: &PeId| {
            spec.operator(pe.operator())
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

/// For the reconciler: whether `app` is in an upgrade's prepare or switch (its old
/// version's losses roll the upgrade back instead of recovering it directly), and the
/// upgrade's placement of new PEs (which must not be stopped as strays).
pub fn active<'a>(state: &'a ClusterState, app: &AppRecord) -> Option<&'a UpgradeRecord> {
    let up = state.upgrades.get(&app.upgrade?)?;
    matches!(up.phase(), Some(Phase::Prepare) | Some(Phase::Switch)).then_some(up)
}
