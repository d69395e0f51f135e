//! The executor: on the leader, turns the reconciler's decisions into Raft commands
//! (placements) and worker commands (deploy, stop, repoint), every `interval`.
//!
//! Everything it keeps in memory is a cache it can lose: a new leader rebuilds it from
//! the replicated state and the workers' next heartbeats, and commands are idempotent,
//! so repeating one after a failover is harmless.

mod checkpoints;
#[cfg(test)]
mod checkpoints_tests;
pub mod reconcile;
mod repoint;
pub mod request;
pub mod upgrade;

#[cfg(test)]
mod tests;

use crate::shared::{Liveness, Shared};
use crate::state::{AppRecord, ClusterState, Command, WorkerState};
use reconcile::{reconcile_with, PlacementMemo, SeenPe};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tonic::transport::Channel;
use weir_common::physical::PhysicalModel;
use weir_proto::v1 as pb;
use weir_proto::v1::worker_control_client::WorkerControlClient;

/// A command to the same PE is not repeated sooner than this unless its worker
/// reported on it meanwhile (deploys take a heartbeat to show up in reports).
const RETRY_AFTER: Duration = Duration::from_secs(3);

/// Timing and checkpoint settings of the executor.
#[derive(Clone, Debug)]
pub struct ExecutorConfig {
    /// How often it reconciles.
    pub interval: Duration,
    /// Default checkpoint interval (apps may override; zero: off).
    pub checkpoint_interval: Duration,
    /// A checkpoint not complete after this long is abandoned.
    pub checkpoint_timeout: Duration,
    /// Copies every snapshot needs (capped by the number of alive workers).
    pub checkpoint_replicas: u32,
    /// Whether upgrades pre-copy window state (docs/upgrade-protocol.md).
    pub precopy: bool,
    /// How often workers heartbeat: a worker learns of a new peer (to replicate
    /// snapshots to) from its next heartbeat answer.
    pub worker_heartbeat: Duration,
    /// How the scheduler chooses devices and orders its queue.
    pub policy: crate::scheduler::Policy,
}

struct Executor {
    cfg: ExecutorConfig,
    shared: Shared,
    liveness: Liveness,
    clients: HashMap<String, WorkerControlClient<Channel>>,
    recent: HashMap<(String, String), Instant>,
    /// Placements as of the previous tick (`None`: not leading, nothing known).
    /// Held as the apps' `Arc`s: an unchanged app is the same `Arc` (changes go
    /// through `Arc::make_mut`), so most are compared without looking inside.
    placements: Option<BTreeMap<String, Arc<AppRecord>>>,
    counter: u64,
    /// When each app's last checkpoint was triggered by this leader.
    triggered: HashMap<String, Instant>,
    /// What this leader remembers of running upgrades.
    upgrade_memory: upgrade::Memory,
    /// Refused placements, so unchanged apps are not tried again on every tick.
    memo: PlacementMemo,
    /// Victims chosen and not stopped yet: each checkpoints first.
    preempting: BTreeMap<String, crate::scheduler::preempt::Pending>,
}

/// Runs the executor until `stop` fires. It acts only while this master leads.
/// The pause before a tick that follows one which committed something (so a tick
/// that commits every time cannot spin).
const SELF_WAKE_GAP: Duration = Duration::from_millis(5);

pub async fn run(
    shared: Shared,
    liveness: Liveness,
    cfg: ExecutorConfig,
    mut stop: watch::Receiver<bool>,
) {
    let interval = cfg.interval;
    let mut ex = Executor {
        cfg,
        triggered: HashMap::new(),
        upgrade_memory: upgrade::Memory::default(),
        shared,
        liveness,
        clients: HashMap::new(),
        recent: HashMap::new(),
        placements: None,
        counter: 0,
        memo: PlacementMemo::default(),
        preempting: BTreeMap::new(),
    };
    let liveness = ex.liveness.clone();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            // Progress is pushed: a report that moved something, or a client's change,
            // is acted on at once.
            _ = liveness.woken() => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        let leading = ex
            .shared
            .leader()
            .is_some_and(|(id, _)| id == ex.shared.id());
        if !leading {
            ex.placements = None;
            ex.preempting.clear();
            ex.recent.clear();
            continue;
        }
        let applied = |s: &Shared| {
            s.node
                .raft
                .metrics()
                .borrow()
                .last_applied
                .map_or(0, |l| l.index)
        };
        let before = applied(&ex.shared);
        ex.tick().await;
        // What this tick committed (a phase of an upgrade, a checkpoint) may let the next
        // step go at once: tick again soon instead of after the interval.
        if applied(&ex.shared) != before {
            tokio::time::sleep(SELF_WAKE_GAP).await;
            liveness.wake();
        }
    }
}

impl Executor {
    fn header(&mut self) -> pb::CommandHeader {
        self.counter += 1;
        let term = self.shared.node.raft.metrics().borrow().current_term;
        pb::CommandHeader {
            command_id: format!("m{}-t{term}-{}", self.shared.id(), self.counter),
            term,
            leader_id: self.shared.id(),
        }
    }

    fn client(&mut self, addr: &str) -> Option<WorkerControlClient<Channel>> {
        if let Some(c) = self.clients.get(addr) {
            return Some(c.clone());
        }
        let ep = self
            .shared
            .node
            .security
            .endpoint(addr, weir_security::ServerRole::Worker)
            .ok()?
            .connect_timeout(Duration::from_secs(1))
            .timeout(Duration::from_secs(10));
        let c = WorkerControlClient::new(ep.connect_lazy());
        self.clients.insert(addr.to_string(), c.clone());
        Some(c)
    }

    fn due(&mut self, worker: &str, pe: &str, attempt: u64) -> bool {
        let key = (worker.to_string(), format!("{pe}#{attempt}"));
        if self
            .recent
            .get(&key)
            .is_some_and(|t| t.elapsed() < RETRY_AFTER)
        {
            return false;
        }
        self.recent.insert(key, Instant::now());
        true
    }

    async fn tick(&mut self) {
        let state: ClusterState = self.shared.node.state.read(|d| d.state.clone()).await;
        let mut calls: JoinSet<()> = JoinSet::new();
        self.repoint_moved(&state, &mut calls);

        let reports = self.liveness.reports();
        let seen: BTreeMap<String, Vec<SeenPe>> = reports
            .into_iter()
            .filter(|(w, r)| {
                state.workers.get(w).is_some_and(|rec| {
                    rec.state == WorkerState::Alive && rec.incarnation == r.incarnation
                })
            })
            .map(|(w, r)| {
                let pes = r
                    .pes
                    .into_iter()
                    .map(|p| SeenPe {
                        rate_in: p.stats.as_ref().map_or(0.0, |s| s.rate_in),
                        rate_out: p.stats.as_ref().map_or(0.0, |s| s.rate_out),
                        state: pb::PeState::try_from(p.state).unwrap_or(pb::PeState::Unspecified),
                        pe: p.pe,
                        app: p.app,
                        attempt: p.attempt,
                        restore_failed: p.restore_failed_checkpoint_id,
                        message: p.message,
                    })
                    .collect();
                (w, pes)
            })
            .collect();
        // The decision is pure but walks every app: off the async threads, so that a
        // large cluster's tick does not hold client requests back.
        let mut memo = std::mem::take(&mut self.memo);
        // The replicated policy, so every leader decides alike; the flags without one.
        let policy =
            crate::scheduler::policy::effective(state.scheduling.as_ref(), &self.cfg.policy);
        let now = crate::shared::now_ms();
        let decided = tokio::task::spawn_blocking(move || {
            let actions = reconcile_with(&state, &seen, now, &mut memo, &policy);
            (state, actions, memo)
        })
        .await;
        let (state, actions, memo) = match decided {
            Ok(d) => d,
            Err(e) => {
                tracing::error!(error = %e, "reconcile failed");
                return;
            }
        };
        self.memo = memo;
        self.upgrades(&state, &actions.aborts, &mut calls).await;
        for r in actions.recoveries {
            tracing::warn!(app = %r.app, operators = ?r.operators, checkpoint = r.checkpoint_id, reason = %r.reason, "recovering region");
            let cmd = Command::Recover {
                app: r.app.clone(),
                operators: r.operators,
                checkpoint_id: r.checkpoint_id,
                placement: r.placement,
                reason: r.reason,
                at_ms: crate::shared::now_ms(),
                drop_checkpoint: r.drop_checkpoint,
                gpus: r.gpus,
            };
            self.commit(&r.app, cmd, "recovery").await;
        }
        self.choose_victims(&state, &actions.preemptions);
        self.checkpoints(&state, &mut calls).await;
        for app in actions.finished {
            self.finish(&state, &app).await;
        }

        self.liveness.set_queue(actions.queue);
        self.preempt(&state).await;
        let unplaced: BTreeMap<String, String> = actions.unplaceable.into_iter().collect();
        // Logged when the reason changes, not on every tick.
        for (app, why) in self.liveness.set_unplaced(unplaced) {
            tracing::warn!(%app, reason = %why, "app cannot be placed now");
        }
        for (app, placement) in actions.placements {
            tracing::info!(%app, pes = placement.len(), "placing app");
            let cmd = Command::SetPlacement {
                app: app.clone(),
                placement,
                gpus: actions.gpus.get(&app).cloned().unwrap_or_default(),
                at_ms: crate::shared::now_ms(),
            };
            self.commit(&app, cmd, "placement").await;
        }

        let mut models: HashMap<String, PhysicalModel> = HashMap::new();
        for (app, pe, worker) in actions.deploys {
            let (Some(rec), Some(w)) = (state.apps.get(&app), state.workers.get(&worker)) else {
                continue;
            };
            let attempt = rec.checkpoints.attempt(pe.operator());
            if !self.due(&worker, &pe, attempt) {
                continue;
            }
            let model = models
                .entry(app.clone())
                .or_insert_with(|| PhysicalModel::expand(&rec.current().spec));
            let header = self.header();
            let Some(req) = request::deploy_pe(
                &request::View::current(rec),
                model,
                &pe,
                &state.workers,
                header,
            ) else {
                continue;
            };
            let Some(mut c) = self.client(&w.control_address) else {
                continue;
            };
            calls.spawn(async move {
                match c.deploy_pe(req).await {
                    Ok(_) => tracing::info!(%app, %pe, %worker, "PE deployed"),
                    Err(e) => {
                        tracing::warn!(%app, %pe, %worker, error = %e.message(), "deploy failed")
                    }
                }
            });
        }
        for (worker, app, pe) in actions.stops {
            if !self.due(&worker, &format!("{app}/{pe}"), u64::MAX) {
                continue;
            }
            let Some(w) = state.workers.get(&worker) else {
                continue;
            };
            let header = self.header();
            let Some(mut c) = self.client(&w.control_address) else {
                continue;
            };
            calls.spawn(async move {
                let req = pb::StopPeRequest {
                    header: Some(header),
                    app,
                    stop_pe: Some(pb::StopPe { pe: pe.clone() }),
                };
                match c.stop_pe(req).await {
                    Ok(_) => tracing::info!(%pe, %worker, "PE stopped"),
                    Err(e) => tracing::warn!(%pe, %worker, error = %e.message(), "stop failed"),
                }
            });
        }
        // Bounded: every call has a deadline; the next tick starts when they are done.
        while calls.join_next().await.is_some() {}
    }

    /// Marks `app` finished, keeping what each of its PEs last reported (their workers
    /// forget them once they are stopped).
    async fn finish(&mut self, state: &ClusterState, app: &str) {
        let Some(rec) = state.apps.get(app) else {
            return;
        };
        let reports = self.liveness.pe_reports(app);
        let pes = rec
            .placement
            .iter()
            .filter_map(|(pe, w)| {
                let r = reports.get(&(w.clone(), pe.clone()))?;
                Some((pe.clone(), crate::convert::final_pe(w, r)))
            })
            .collect();
        let cmd = Command::FinishApp {
            app: app.to_string(),
            at_ms: crate::shared::now_ms(),
            pes,
        };
        if self.commit(app, cmd, "finish").await {
            tracing::info!(%app, "app finished: every source ran out and every PE stopped");
        }
    }

    /// Checkpoint coordination: carries out [`checkpoints::decide_checkpoint`] for
    /// every app (complete or abandon the checkpoint in flight, or begin the next).
    async fn checkpoints(&mut self, state: &ClusterState, calls: &mut JoinSet<()>) {
        let rules = checkpoints::Rules {
            replicas: self.cfg.checkpoint_replicas as usize,
            known_after_ms: 2 * self.cfg.worker_heartbeat.as_millis() as u64,
            heard_after_ms: self.cfg.worker_heartbeat.as_millis() as u64 + 50,
            timeout_ms: self.cfg.checkpoint_timeout.as_millis() as u64,
            interval: self.cfg.checkpoint_interval,
        };
        let now = crate::shared::now_ms();
        for app in state.apps.values() {
            let reports = self.liveness.pe_reports(&app.name);
            // A chosen victim checkpoints at once (`preempt::stop_when`).
            let urgent = self
                .preempting
                .get(&app.name)
                .is_some_and(|p| app.checkpoints.last_id <= p.after_id);
            let since = self
                .triggered
                .get(&app.name)
                .map(Instant::elapsed)
                .filter(|_| !urgent);
            let step = checkpoints::decide_checkpoint(state, app, &reports, &rules, now, since);
            let name = app.name.clone();
            match step {
                checkpoints::Step::Wait => {}
                checkpoints::Step::Complete {
                    id,
                    max_alignment_ms,
                    pieces,
                } => {
                    let cmd = Command::CompleteCheckpoint {
                        app: name,
                        id,
                        at_ms: now,
                        max_alignment_ms,
                        pieces,
                    };
                    if self.commit(&app.name, cmd, "checkpoint completion").await {
                        tracing::info!(app = %app.name, checkpoint = id, "checkpoint complete");
                    }
                }
                checkpoints::Step::Abandon { id } => {
                    tracing::warn!(app = %app.name, checkpoint = id, "checkpoint abandoned: not complete in time");
                    let cmd = Command::AbandonCheckpoint { app: name, id };
                    self.commit(&app.name, cmd, "checkpoint abandon").await;
                }
                checkpoints::Step::Begin { id, sources } => {
                    let cmd = Command::BeginCheckpoint {
                        app: name,
                        id,
                        at_ms: now,
                    };
                    if !self.commit(&app.name, cmd, "checkpoint begin").await {
                        continue;
                    }
                    self.triggered.insert(app.name.clone(), Instant::now());
                    self.trigger(state, &app.name, &sources, id, calls);
                }
            }
        }
    }

    /// Commits `cmd`; logs a refusal as `what` not committed. Returns whether it was.
    async fn commit(&self, app: &str, cmd: Command, what: &str) -> bool {
        match self.shared.write(cmd).await {
            Ok(_) => true,
            Err(e) => {
                tracing::warn!(%app, error = %e.message(), "{what} not committed");
                false
            }
        }
    }

    /// Sends TriggerCheckpoint `id` of `app` to `workers` (those of its sources).
    fn trigger<'a>(
        &mut self,
        state: &ClusterState,
        app: &str,
        workers: impl IntoIterator<Item = &'a String>,
        id: u64,
        calls: &mut JoinSet<()>,
    ) {
        for w in workers {
            let Some(addr) = state.workers.get(w).map(|r| r.control_address.clone()) else {
                continue;
            };
            let header = self.header();
            let Some(mut c) = self.client(&addr) else {
                continue;
            };
            let req = pb::TriggerCheckpointRequest {
                header: Some(header),
                app: app.to_string(),
                checkpoint_id: id,
            };
            let (app, w) = (app.to_string(), w.clone());
            calls.spawn(async move {
                if let Err(e) = c.trigger_checkpoint(req).await {
                    tracing::warn!(%app, worker = %w, checkpoint = id, error = %e.message(), "trigger failed");
                }
            });
        }
    }

    /// Remembers the victims the reconciler chose this tick (victim -> the app it makes
    /// room for); forgets those it no longer chooses (room was found otherwise).
    fn choose_victims(&mut self, state: &ClusterState, chosen: &[(String, String)]) {
        let now = crate::shared::now_ms();
        self.preempting
            .retain(|v, _| chosen.iter().any(|(c, _)| c == v));
        for (victim, by) in chosen {
            let Some(app) = state.apps.get(victim) else {
                continue;
            };
            self.preempting.entry(victim.clone()).or_insert_with(|| {
                crate::scheduler::preempt::Pending {
                    by: by.clone(),
                    after_id: app.checkpoints.last_id,
                    since_ms: now,
                }
            });
        }
    }

    /// Stops each chosen victim whose fresh checkpoint is complete (or that takes
    /// none, or waited too long): it queues again and resumes from that checkpoint.
    async fn preempt(&mut self, state: &ClusterState) {
        use crate::scheduler::preempt::{stop_when, Stop};
        let now = crate::shared::now_ms();
        let limit = self.cfg.checkpoint_timeout.as_millis() as u64;
        let mut stop = Vec::new();
        for (victim, p) in &self.preempting {
            let Some(app) = state.apps.get(victim) else {
                continue;
            };
            let on = !checkpoints::interval_of(app, self.cfg.checkpoint_interval).is_zero();
            if stop_when(app, p, on, now, limit) == Stop::Now {
                stop.push((victim.clone(), p.by.clone()));
            }
        }
        for (app, by) in stop {
            self.preempting.remove(&app);
            tracing::warn!(%app, %by, "preempting app");
            let cmd = Command::Preempt {
                app: app.clone(),
                by,
                at_ms: now,
            };
            self.commit(&app, cmd, "preemption").await;
        }
    }

    /// Producers that stayed put while their consumer moved get the new address
    /// ([`repoint::decide_repoints`]).
    fn repoint_moved(&mut self, state: &ClusterState, calls: &mut JoinSet<()>) {
        let Some(before) = self.placements.replace(repoint::live_apps(state)) else {
            return;
        };
        for r in repoint::decide_repoints(state, &before) {
            let Some(w) = state.workers.get(&r.producer_worker) else {
                continue;
            };
            let header = self.header();
            let Some(mut c) = self.client(&w.control_address) else {
                continue;
            };
            let req = pb::OpenChannelRequest {
                header: Some(header),
                app: r.app,
                open_channel: Some(pb::OpenChannel {
                    channel: Some(r.channel),
                }),
                end: pb::ChannelEnd::Producer as i32,
                peer_data_address: r.consumer_address,
                barrier_id: 0,
                peer_attempt: 0,
                peer_worker_id: String::new(),
            };
            calls.spawn(async move {
                if let Err(e) = c.open_channel(req).await {
                    tracing::debug!(error = %e.message(), "repoint skipped");
                }
            });
        }
    }
}
