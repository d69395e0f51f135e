//! The worker's link to the masters: register, then heartbeat, following the leader.
//!
//! Any master accepts the calls (followers forward to the leader), so the agent keeps
//! one target and moves to the next address when a call fails, preferring the leader
//! address the masters report. A `reregister` answer (the masters do not know this
//! incarnation, e.g. after a master-side reset) or a refused heartbeat sends it back
//! to registration.

use crate::images::{attach, HeldImages};
use crate::resources::{snapshot, DeclaredGpu};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use weir_proto::v1 as pb;
use weir_proto::v1::master_workers_client::MasterWorkersClient;

/// How the agent describes this worker.
#[derive(Clone, Debug)]
pub struct AgentConfig {
    /// Unique worker id.
    pub worker_id: String,
    /// Master addresses (any subset of the cluster).
    pub masters: Vec<String>,
    /// Where this worker's control service listens.
    pub control_address: String,
    /// Where its data plane listens.
    pub data_address: String,
    /// Labels (e.g. `scenario=inference`).
    pub labels: BTreeMap<String, String>,
    /// Pools it belongs to.
    pub pools: Vec<String>,
    /// Cluster id it expects.
    pub cluster_id: String,
    /// Cores offered (default: the machine's).
    pub cores: Option<f64>,
    /// Memory offered, MiB (default: the machine's).
    pub memory_mb: Option<u64>,
    /// Declared accelerators.
    pub declared_gpus: Vec<DeclaredGpu>,
    /// Whether to ask NVML for NVIDIA GPUs.
    pub discover_nvml: bool,
    /// Where checkpoint snapshots are kept (this worker's and its peers' replicas);
    /// `None`: a fresh temporary directory, removed when the worker stops.
    pub checkpoint_dir: Option<std::path::PathBuf>,
    /// Mutual TLS on every link this worker serves or dials (or off).
    pub security: weir_security::Security,
    /// Whether a heartbeat goes as soon as a PE makes progress the masters act on (a
    /// new state, a checkpoint piece), at most every 10 ms; off: only every heartbeat
    /// interval (a baseline, and what tests that must catch a phase use).
    pub push_progress: bool,
    /// A window's increment listing at least this many changed slots, or whole snapshot
    /// of at least this many slots, is encoded after its barrier
    /// (`ops/window/encoding.rs`; default
    /// [`crate::ops::window::DEFER_FROM`]).
    pub defer_snapshot_from: usize,
    /// Registries (`host[:port]`) this worker pulls a container PE's image from when
    /// its Docker Engine does not hold it (`--pull-from`); reported at registration
    /// only where an engine answers.
    pub pull_from: Vec<String>,
}

/// What the agent knows right now.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AgentStatus {
    /// Registered and heartbeating.
    pub registered: bool,
    /// Incarnation the masters assigned.
    pub incarnation: u64,
    /// Leader address last reported.
    pub leader: String,
    /// Registrations so far (1 normally; more after master-side resets).
    pub registrations: u64,
}

/// What the agent shares with the rest of the worker.
#[derive(Clone)]
pub struct AgentHooks {
    /// The PEs this worker runs, for heartbeats and registration.
    pub reports: Arc<dyn Fn() -> Vec<pb::PeReport> + Send + Sync>,
    /// Highest leader term seen (heartbeat answers raise it; commands check it).
    pub term: Arc<AtomicU64>,
    /// The incarnation the masters assigned.
    pub incarnation: Arc<AtomicU64>,
    /// Called with every heartbeat answer (peers, completed checkpoints).
    pub on_heartbeat: Arc<dyn Fn(&pb::HeartbeatResponse) + Send + Sync>,
    /// The Docker images this worker holds (refreshed elsewhere; empty by default).
    pub images: HeldImages,
    /// Woken when a heartbeat should go at once (PE progress), not at the interval.
    pub nudge: Arc<tokio::sync::Notify>,
}

impl Default for AgentHooks {
    fn default() -> Self {
        Self {
            reports: Arc::new(Vec::new),
            term: Arc::default(),
            incarnation: Arc::default(),
            on_heartbeat: Arc::new(|_| {}),
            images: HeldImages::default(),
            nudge: Arc::default(),
        }
    }
}

/// A running agent.
pub struct Agent {
    status: Arc<Mutex<AgentStatus>>,
    stop: watch::Sender<bool>,
    done: Option<Done>,
}

/// How a stopped agent's end is awaited.
enum Done {
    /// It runs on a thread of its own, which says when it ends.
    Thread(tokio::sync::oneshot::Receiver<()>),
    /// No thread could be made: it runs as a task of the worker's runtime.
    Task(JoinHandle<()>),
}

/// The agent's loop, boxed to be run where [`Agent::spawn_with`] can.
type Loop = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;

impl Agent {
    /// Starts registering and heartbeating in the background.
    pub fn spawn(cfg: AgentConfig) -> Self {
        Self::spawn_with(cfg, AgentHooks::default())
    }

    /// Starts the agent with hooks into the worker's runtime (the caller's).
    ///
    /// The agent runs on a thread of its own, with a runtime of its own (its link to
    /// the masters included), not among the PEs: a worker whose async threads are
    /// busy must still be heard. On the PEs' runtime, a busy window PE delayed
    /// heartbeats by 0.5-2.5 s (the task waited behind it to be polled), and the
    /// masters marked live workers lost (the 1 GB upgrade bench, BENCHMARKS.md,
    /// issue 22). The hooks' own tasks still go to the caller's runtime.
    pub fn spawn_with(cfg: AgentConfig, hooks: AgentHooks) -> Self {
        let status = Arc::new(Mutex::new(AgentStatus::default()));
        let (stop, stop_rx) = watch::channel(false);
        let main = tokio::runtime::Handle::current();
        let job: Loop = Box::pin(run(cfg, hooks, status.clone(), stop_rx, main));
        // The loop is handed to the thread once it exists; if it cannot be made, the
        // loop is still here to run as a task.
        let (hand, take) = std::sync::mpsc::sync_channel::<Loop>(1);
        let (ended, done) = tokio::sync::oneshot::channel();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .thread_name("weir-agent")
            .build();
        let spawned = runtime.map_err(|e| e.to_string()).and_then(|rt| {
            std::thread::Builder::new()
                .name("weir-agent".into())
                .spawn(move || {
                    if let Ok(job) = take.recv() {
                        rt.block_on(job);
                    }
                    let _ = ended.send(());
                })
                .map_err(|e| e.to_string())
        });
        let done = match spawned {
            Ok(_) => {
                // The thread waits for it: the send cannot find the channel full.
                let _ = hand.send(job);
                Done::Thread(done)
            }
            Err(e) => {
                tracing::warn!(error = %e, "no thread for the agent: it heartbeats among the PEs");
                Done::Task(tokio::spawn(job))
            }
        };
        Self {
            status,
            stop,
            done: Some(done),
        }
    }

    /// The agent's current view.
    pub fn status(&self) -> AgentStatus {
        self.status.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// Stops heartbeating (the masters will mark the worker lost after their timeout).
    pub async fn stop(mut self) {
        let _ = self.stop.send(true);
        match self.done.take() {
            Some(Done::Thread(ended)) => {
                let _ = ended.await;
            }
            Some(Done::Task(task)) => {
                let _ = task.await;
            }
            None => {}
        }
    }
}

impl Drop for Agent {
    /// A worker dropped without [`Agent::stop`] stops heartbeating too (its thread
    /// would otherwise outlive it).
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

async fn client(
    security: &weir_security::Security,
    addr: &str,
) -> Option<MasterWorkersClient<tonic::transport::Channel>> {
    let ep = security
        .endpoint(addr, weir_security::ServerRole::Master)
        .ok()?
        .connect_timeout(Duration::from_secs(1))
        .timeout(Duration::from_secs(5));
    Some(MasterWorkersClient::new(ep.connect().await.ok()?))
}

async fn run(
    cfg: AgentConfig,
    hooks: AgentHooks,
    status: Arc<Mutex<AgentStatus>>,
    mut stop: watch::Receiver<bool>,
    main: tokio::runtime::Handle,
) {
    let mut targets = cfg.masters.clone();
    let mut interval = Duration::from_millis(500);
    let mut incarnation = 0;
    let set = |f: &dyn Fn(&mut AgentStatus)| {
        if let Ok(mut s) = status.lock() {
            f(&mut s);
        }
    };
    loop {
        if *stop.borrow() {
            return;
        }
        let target = targets.first().cloned().unwrap_or_default();
        let Some(mut c) = client(&cfg.security, &target).await else {
            targets.rotate_left(1);
            if wait(&mut stop, Duration::from_millis(200)).await {
                return;
            }
            continue;
        };
        let mut resources = snapshot(
            cfg.cores,
            cfg.memory_mb,
            &cfg.declared_gpus,
            cfg.discover_nvml,
        );
        attach(&mut resources, &hooks.images.get(), None);
        resources.pull_registries = cfg.pull_from.clone();
        if incarnation == 0 {
            let req = pb::RegisterWorkerRequest {
                worker_id: cfg.worker_id.clone(),
                control_address: cfg.control_address.clone(),
                data_address: cfg.data_address.clone(),
                resources: Some(resources),
                labels: cfg.labels.clone().into_iter().collect(),
                pools: cfg.pools.clone(),
                pes: (hooks.reports)(),
                cluster_id: cfg.cluster_id.clone(),
                software_version: env!("CARGO_PKG_VERSION").into(),
            };
            match c.register_worker(req).await {
                Ok(r) => {
                    let r = r.into_inner();
                    incarnation = r.incarnation;
                    hooks.incarnation.store(incarnation, Ordering::Relaxed);
                    hooks.term.fetch_max(r.term, Ordering::AcqRel);
                    interval = Duration::from_millis(r.heartbeat_interval_ms.clamp(50, 10_000));
                    prefer(&mut targets, &r.leader_address);
                    tracing::info!(worker = %cfg.worker_id, incarnation, leader = %r.leader_address, "registered");
                    set(&|s| {
                        s.registered = true;
                        s.incarnation = incarnation;
                        s.leader = r.leader_address.clone();
                        s.registrations += 1;
                    });
                }
                Err(e) => {
                    tracing::warn!(worker = %cfg.worker_id, master = %target, error = %e.message(), "registration failed");
                    if let Some(l) = weir_proto::status::leader_hint(&e) {
                        prefer(&mut targets, l);
                    } else {
                        targets.rotate_left(1);
                    }
                    if wait(&mut stop, Duration::from_millis(200)).await {
                        return;
                    }
                    continue;
                }
            }
        }
        // Heartbeat until something goes wrong, then start over (same incarnation
        // unless the masters ask for a new registration). The image list goes in full
        // until a master has answered a heartbeat carrying its current generation.
        let mut images_sent = None;
        let mut last = tokio::time::Instant::now();
        loop {
            let never = tokio::sync::Notify::new();
            let nudge = if cfg.push_progress {
                &hooks.nudge
            } else {
                &never
            };
            // Due at the interval, or at once after a heartbeat that took longer.
            let due = (last + interval).max(tokio::time::Instant::now());
            if wait_or_nudge(&mut stop, last, interval, nudge).await {
                return;
            }
            last = tokio::time::Instant::now();
            if last.saturating_duration_since(due) >= SLOW_HEARTBEAT {
                // Its timer fired late: this thread waited to be run (a machine short
                // of cores), not on the masters.
                tracing::warn!(worker = %cfg.worker_id, late_ms = last.saturating_duration_since(due).as_millis() as u64, "heartbeat loop woke late");
            }
            let mut resources = snapshot(
                cfg.cores,
                cfg.memory_mb,
                &cfg.declared_gpus,
                cfg.discover_nvml,
            );
            let held = hooks.images.get();
            attach(&mut resources, &held, images_sent);
            let req = pb::HeartbeatRequest {
                worker_id: cfg.worker_id.clone(),
                incarnation,
                resources: Some(resources),
                pes: (hooks.reports)(),
            };
            let sent = tokio::time::Instant::now();
            let built = sent - last;
            if built >= SLOW_HEARTBEAT / 2 {
                // The reports read every PE's status: one held long holds this.
                tracing::warn!(worker = %cfg.worker_id, took_ms = built.as_millis() as u64, "heartbeat took long to build");
            }
            let answered = c.heartbeat(req).await;
            let took = sent.elapsed();
            if took >= SLOW_HEARTBEAT {
                // The masters count the time since they last heard from this worker: a
                // slow answer is how a busy master or a held disk makes a live worker
                // look lost.
                tracing::warn!(worker = %cfg.worker_id, master = %target, took_ms = took.as_millis() as u64, ok = answered.is_ok(), "heartbeat answered slowly");
            }
            match answered {
                Ok(r) => {
                    let r = r.into_inner();
                    hooks.term.fetch_max(r.term, Ordering::AcqRel);
                    if r.reregister {
                        tracing::info!(worker = %cfg.worker_id, "masters ask for a new registration");
                        incarnation = 0;
                        set(&|s| s.registered = false);
                        break;
                    }
                    if !r.leader_address.is_empty() {
                        prefer(&mut targets, &r.leader_address);
                        set(&|s| s.leader = r.leader_address.clone());
                    }
                    images_sent = Some(held.generation);
                    {
                        // What the hook starts runs among the PEs, not on this thread.
                        let _on = main.enter();
                        (hooks.on_heartbeat)(&r);
                    }
                }
                Err(e) => {
                    tracing::warn!(worker = %cfg.worker_id, master = %target, error = %e.message(), "heartbeat failed; trying another master");
                    if weir_proto::status::leader_hint(&e).is_none() {
                        targets.rotate_left(1);
                    }
                    break;
                }
            }
        }
    }
}

/// Moves `leader` to the front of the targets (adding it if it is new).
fn prefer(targets: &mut Vec<String>, leader: &str) {
    if leader.is_empty() {
        return;
    }
    targets.retain(|t| t != leader);
    targets.insert(0, leader.to_string());
}

/// A heartbeat answered after at least this long is logged as a warning.
const SLOW_HEARTBEAT: Duration = Duration::from_millis(500);

/// The least time between heartbeats a nudge may bring forward: progress of many PEs
/// at once (a checkpoint's pieces) goes in one heartbeat, not one each.
const NUDGE_GAP: Duration = Duration::from_millis(10);

/// Sleeps until `d` after `last`, or until a nudge (a PE made progress the masters act
/// on) but not before [`NUDGE_GAP`] after `last`; true if the agent was told to stop
/// meanwhile.
async fn wait_or_nudge(
    stop: &mut watch::Receiver<bool>,
    last: tokio::time::Instant,
    d: Duration,
    nudge: &tokio::sync::Notify,
) -> bool {
    let stopped = tokio::select! {
        _ = tokio::time::sleep_until(last + d) => None,
        _ = async {
            nudge.notified().await;
            tokio::time::sleep_until(last + NUDGE_GAP).await;
        } => None,
        r = stop.wait_for(|s| *s) => Some(r.is_ok()),
    };
    stopped.unwrap_or_else(|| *stop.borrow())
}

/// Sleeps `d`; true if the agent was told to stop meanwhile.
async fn wait(stop: &mut watch::Receiver<bool>, d: Duration) -> bool {
    let stopped = tokio::select! {
        _ = tokio::time::sleep(d) => None,
        r = stop.wait_for(|s| *s) => Some(r.is_ok()),
    };
    stopped.unwrap_or_else(|| *stop.borrow())
}
