//! The PE runtime: the table of PEs a worker runs, and deploying and stopping them.
//!
//! Deploying a PE opens its input endpoints first (so producers, wherever they run,
//! can connect at once), builds its output channels (in memory to consumers on this
//! worker, TCP to the others), then spawns its task. Deploy is idempotent: a PE that
//! already runs with the same id is left alone; one that failed is replaced.

mod align;
pub mod checkpoint;
pub mod file_sink;
pub mod handoff;
pub mod kernel;
pub mod pe;
pub mod router;
pub mod sources;
pub mod status;
pub mod upgrade;

use crate::dataplane::outbound::RemoteSender;
use crate::dataplane::sender::{ChannelSender, LocalSender};
use crate::dataplane::{ChannelKey, Inputs};
use checkpoint::CheckpointEnv;
use kernel::Kernel;
use router::{Route, Router};
use status::{PeRunState, PeStatus};
use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Instant;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tracing::Instrument;
use upgrade::PeControl;
use weir_common::keygroup::KeyGroupRange;
use weir_common::spec::{OperatorKind, OperatorSpec, Partitioning};
use weir_proto::v1 as pb;

/// Records per batch a source emits at full speed.
pub const BATCH_RECORDS: usize = 4096;

/// Where an output channel goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    /// Consumer PE id.
    pub pe: String,
    /// Data address of its worker; `None` when it runs on this worker.
    pub address: Option<String>,
    /// Its recovery attempt; `None`: the producer's own.
    pub attempt: Option<u64>,
}

/// One output stream of a PE to deploy.
#[derive(Clone, Debug, PartialEq)]
pub struct OutputConfig {
    /// `from->to`.
    pub stream: String,
    /// How records spread over `targets`.
    pub partitioning: Partitioning,
    /// Consumers in index order.
    pub targets: Vec<Target>,
}

/// Everything needed to start a PE.
#[derive(Clone, Debug)]
pub struct PeConfig {
    /// App name.
    pub app: String,
    /// App version.
    pub version: u64,
    /// The app's tenant.
    pub tenant: String,
    /// PE id.
    pub pe: String,
    /// Its operator.
    pub spec: OperatorSpec,
    /// Parallel index.
    pub index: u32,
    /// Key groups it owns.
    pub key_groups: KeyGroupRange,
    /// The `source` ordinal of records it creates.
    pub source_ordinal: u32,
    /// Producers of its input channels, in a stable order.
    pub inputs: Vec<String>,
    /// Its outputs.
    pub outputs: Vec<OutputConfig>,
    /// The recovery attempt of its region: part of every channel's name, so PEs of
    /// different attempts never exchange records.
    pub attempt: u64,
    /// The checkpoint to restore from, where its snapshot is and what that builds on;
    /// `None` for empty state.
    pub restore: Option<checkpoint::OwnRestore>,
    /// UUIDs of the GPUs allocated to it (one per requested slice); empty without.
    pub gpus: Vec<String>,
    /// Attempts of peers (input producers) that differ from `attempt`.
    pub peer_attempts: std::collections::HashMap<String, u64>,
    /// The worker each input producer is placed on, by producer PE id: over mutual TLS
    /// only that worker may open the channel
    /// ([`crate::dataplane::InputEndpoint::producer`]).
    pub producer_workers: std::collections::HashMap<String, String>,
    /// Snapshots of other PEs to merge into its starting state (an upgrade's hand-off);
    /// takes precedence over `restore`.
    pub restore_pieces: Vec<pb::RestorePiece>,
    /// A source added by an upgrade starts at this barrier; 0: at once.
    pub start_at_barrier: u64,
}

/// Makes the producer ends of a PE's channels: in memory to consumers on this worker,
/// TCP to the others. Shared by deploy and by route switches during an upgrade.
#[derive(Clone)]
pub struct Senders {
    inputs: Arc<Inputs>,
    app: String,
    end: String,
    attempt: u64,
    remotes: Arc<Mutex<Vec<Arc<RemoteSender>>>>,
    dialer: crate::dataplane::Dialer,
}

impl Senders {
    /// The channel from this PE to `t`.
    pub fn key(&self, t: &Target) -> ChannelKey {
        ChannelKey::new(
            self.end.clone(),
            channel_end(&self.app, &t.pe, t.attempt.unwrap_or(self.attempt)),
        )
    }

    /// A new channel to `t`.
    pub fn make(&self, t: &Target) -> ChannelSender {
        let key = self.key(t);
        match &t.address {
            None => ChannelSender::Local(LocalSender::new(key, self.inputs.clone())),
            Some(a) => {
                let r = Arc::new(RemoteSender::new(key, a.clone(), self.dialer.clone()));
                let mut remotes = self.remotes.lock().unwrap_or_else(|p| p.into_inner());
                // Channels an earlier switch ended and whose end was acknowledged are
                // done: forgetting them keeps repeated upgrades from piling them up.
                remotes.retain(|r| !r.finished());
                remotes.push(r.clone());
                ChannelSender::Remote(r)
            }
        }
    }

    /// Forgets an input endpoint whose channel ended (it will never carry more).
    pub fn retire_input(&self, ep: &Arc<crate::dataplane::InputEndpoint>) {
        self.inputs.remove(ep);
    }
}

/// Why an upgrade action could not be armed.
#[derive(Debug, thiserror::Error)]
pub enum ArmError {
    /// No such PE here.
    #[error("PE {0} is not running here")]
    NotHere(String),
    /// The PE is not in a state to take it.
    #[error("PE {pe} is {state:?}; it cannot take the action")]
    NotRunning {
        /// PE id.
        pe: String,
        /// Its state.
        state: PeRunState,
    },
}

/// The name of PE `pe`'s end of channels of `app` under `attempt`. PE ids are unique
/// within an app only (two apps with the same operator have the same PE ids), so the
/// app is part of every channel's name.
pub fn channel_end(app: &str, pe: &str, attempt: u64) -> String {
    format!("{app}/{pe}#{attempt}")
}

/// The PE id in a channel end name.
pub fn pe_of_end(end: &str) -> &str {
    let end = end.split_once('/').map_or(end, |(_, rest)| rest);
    end.rsplit_once('#').map_or(end, |(pe, _)| pe)
}

/// The key of a PE in the runtime's table.
fn entry_key(app: &str, pe: &str) -> String {
    format!("{app}/{pe}")
}

/// Why a deploy was refused.
#[derive(Debug, thiserror::Error)]
pub enum DeployError {
    /// The request is inconsistent.
    #[error("{0}")]
    Invalid(String),
}

struct PeEntry {
    app: String,
    pe: String,
    version: u64,
    attempt: u64,
    gpus: Vec<String>,
    source: bool,
    triggers: mpsc::Sender<u64>,
    control: mpsc::UnboundedSender<PeControl>,
    status: Arc<PeStatus>,
    task: JoinHandle<()>,
    remotes: Arc<Mutex<Vec<Arc<RemoteSender>>>>,
    inputs: Mutex<Vec<Arc<crate::dataplane::InputEndpoint>>>,
    last: Mutex<(Instant, u64, u64)>,
}

/// The PEs of one worker.
pub struct Runtime {
    inputs: Arc<Inputs>,
    pes: Mutex<BTreeMap<String, PeEntry>>,
    ckpt: Arc<CheckpointEnv>,
    containers: Option<crate::container::ContainerEngine>,
    dialer: crate::dataplane::Dialer,
    /// Woken by PE state changes and new checkpoint pieces: progress is pushed to the
    /// masters rather than waiting for the next heartbeat.
    nudge: Arc<tokio::sync::Notify>,
}

impl Default for Runtime {
    fn default() -> Self {
        Self::new(Arc::default())
    }
}

impl Runtime {
    /// A runtime whose consumers' endpoints live in `inputs` (shared with the data
    /// listener), with snapshots in a temporary store and no peers (for tests and
    /// benchmarks).
    pub fn new(inputs: Arc<Inputs>) -> Self {
        let store = crate::checkpoint::store::SnapshotStore::temporary()
            .expect("a temporary snapshot directory");
        let env = CheckpointEnv::new(
            "local".into(),
            Arc::new(store),
            Arc::new(crate::checkpoint::replicate::Replicator::new("local")),
        );
        Self::with_checkpoints(inputs, Arc::new(env))
    }

    /// A runtime saving snapshots through `ckpt`.
    pub fn with_checkpoints(inputs: Arc<Inputs>, ckpt: Arc<CheckpointEnv>) -> Self {
        Self {
            inputs,
            pes: Mutex::default(),
            ckpt,
            containers: None,
            dialer: Default::default(),
            nudge: Arc::default(),
        }
    }

    /// What PEs wake when the masters should hear of their progress at once.
    pub fn nudge(&self) -> Arc<tokio::sync::Notify> {
        self.nudge.clone()
    }

    /// The runtime, running container PEs on `engine`.
    pub fn with_containers(mut self, engine: crate::container::ContainerEngine) -> Self {
        self.containers = Some(engine);
        self
    }

    /// The same, dialling other workers' data ports with `dialer` (TLS when security
    /// is on).
    pub fn with_dialer(mut self, dialer: crate::dataplane::Dialer) -> Self {
        self.dialer = dialer;
        self
    }

    /// Checkpoint services (heartbeat answers feed them).
    pub fn checkpoints(&self) -> &Arc<CheckpointEnv> {
        &self.ckpt
    }

    /// Checkpoint `id` of `app`: every source PE of the app here injects its barrier.
    /// Returns those PEs.
    pub fn trigger(&self, app: &str, id: u64) -> Vec<String> {
        let m = self.lock();
        m.values()
            .filter(|e| e.app == app && e.source)
            .filter(|e| e.status.state() == PeRunState::Running)
            .filter(|e| e.triggers.try_send(id).is_ok())
            .map(|e| e.pe.clone())
            .collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, PeEntry>> {
        self.pes.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Deploys a PE (see the module doc). Returns its state.
    pub async fn deploy(&self, cfg: PeConfig) -> Result<PeRunState, DeployError> {
        let key = entry_key(&cfg.app, &cfg.pe);
        if let Some(e) = self.lock().get(&key) {
            if e.status.state() != PeRunState::Failed && e.attempt >= cfg.attempt {
                return Ok(e.status.state());
            }
        }
        self.stop(&cfg.app, &cfg.pe);
        let pe = cfg.pe.clone();
        let end = channel_end(&cfg.app, &pe, cfg.attempt);
        let peer_attempt = |p: &str| cfg.peer_attempts.get(p).copied().unwrap_or(cfg.attempt);
        let inputs: Vec<_> = cfg
            .inputs
            .iter()
            .map(|from| {
                self.inputs.register(
                    ChannelKey::new(channel_end(&cfg.app, from, peer_attempt(from)), end.clone()),
                    cfg.producer_workers.get(from).cloned(),
                )
            })
            .collect();
        let input_eps = inputs.iter().map(|(ep, _)| ep.clone()).collect();
        let senders = Senders {
            inputs: self.inputs.clone(),
            app: cfg.app.clone(),
            end: end.clone(),
            attempt: cfg.attempt,
            remotes: Arc::default(),
            dialer: self.dialer.clone(),
        };
        let remotes = senders.remotes.clone();
        let mut routes = Vec::new();
        for o in &cfg.outputs {
            let chans = o.targets.iter().map(|t| senders.make(t)).collect();
            routes.push(Route::new(o.stream.clone(), o.partitioning.clone(), chans));
        }
        let router = Router::new(routes);
        let status = Arc::new(PeStatus::with_nudge(self.nudge.clone()));
        let st = status.clone();
        let (triggers, trigger_rx) = mpsc::channel(4);
        let (control, control_rx) = mpsc::unbounded_channel();
        let source = cfg.spec.kind.role() == weir_common::spec::Role::Source;
        let ckpt = checkpoint::Ckpt {
            app: cfg.app.clone(),
            pe: pe.clone(),
            env: self.ckpt.clone(),
            restore: cfg.restore.clone(),
            pieces: cfg.restore_pieces.clone(),
            key_groups: cfg.key_groups,
            start_at: cfg.start_at_barrier,
            triggers: trigger_rx,
            armed: upgrade::Armed::new(control_rx, senders),
        };
        let span = tracing::info_span!("pe", app = %cfg.app, pe = %pe);
        let fut: std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>> =
            match cfg.spec.kind.clone() {
                OperatorKind::Generator(p) => Box::pin(pe::run_generator(
                    p,
                    cfg.source_ordinal,
                    cfg.index,
                    cfg.spec.parallelism,
                    router,
                    st,
                    ckpt,
                )),
                OperatorKind::Nexmark(p) => Box::pin(pe::run_nexmark(
                    p,
                    cfg.source_ordinal,
                    cfg.index,
                    cfg.spec.parallelism,
                    router,
                    st,
                    ckpt,
                )),
                OperatorKind::SourceFile(p) => Box::pin(sources::run_file(
                    pe.clone(),
                    p,
                    cfg.source_ordinal,
                    cfg.index,
                    cfg.spec.parallelism,
                    router,
                    st,
                    ckpt,
                )),
                OperatorKind::SourceTcp(p) => Box::pin(sources::run_tcp(
                    pe.clone(),
                    p,
                    cfg.source_ordinal,
                    cfg.index,
                    router,
                    st,
                    ckpt,
                )),
                _ => {
                    if inputs.is_empty() {
                        return Err(DeployError::Invalid(format!(
                            "{pe}: a {} PE needs inputs",
                            cfg.spec.kind.name()
                        )));
                    }
                    let spec = cfg.spec.clone();
                    let (index, n, ordinal) = (cfg.index, inputs.len(), cfg.source_ordinal);
                    let id = pe.clone();
                    let gpus = cfg.gpus.clone();
                    let programs = kernel::Programs {
                        tenant: cfg.tenant.clone(),
                        app: cfg.app.clone(),
                        attempt: cfg.attempt,
                        containers: self.containers.clone(),
                        status: st.clone(),
                    };
                    Box::pin(async move {
                        match Kernel::build(&id, &spec, index, n, ordinal, &gpus, &programs).await {
                            Ok(k) => pe::run_consumer(id, k, router, inputs, st, ckpt).await,
                            Err(e) => {
                                tracing::error!(pe = %id, error = %e, "PE cannot start");
                                st.fail(e.to_string());
                            }
                        }
                    })
                }
            };
        let task = tokio::spawn(fut.instrument(span));
        let state = status.state();
        self.lock().insert(
            key,
            PeEntry {
                pe: pe.clone(),
                app: cfg.app,
                version: cfg.version,
                attempt: cfg.attempt,
                gpus: cfg.gpus,
                source,
                triggers,
                control,
                status,
                task,
                remotes,
                inputs: Mutex::new(input_eps),
                last: Mutex::new((Instant::now(), 0, 0)),
            },
        );
        tracing::info!(%pe, "PE deployed");
        Ok(state)
    }

    /// Stops PE `pe` of `app` (of every app when `app` is empty): its task ends, its
    /// inputs close, its programs are killed. Returns its final statistics, or `None`
    /// when it was not here.
    pub fn stop(&self, app: &str, pe: &str) -> Option<pb::PeStats> {
        let gone: Vec<PeEntry> = {
            let mut m = self.lock();
            let keys: Vec<String> = m
                .iter()
                .filter(|(_, e)| e.pe == pe && (app.is_empty() || e.app == app))
                .map(|(k, _)| k.clone())
                .collect();
            keys.iter().filter_map(|k| m.remove(k)).collect()
        };
        let mut stats = None;
        for e in gone {
            e.task.abort();
            for ep in e.inputs.lock().unwrap_or_else(|p| p.into_inner()).iter() {
                self.inputs.remove(ep);
            }
            tracing::info!(app = %e.app, %pe, "PE stopped");
            stats = Some(stats_of(&e, false));
        }
        stats
    }

    /// Stops every PE.
    pub fn stop_all(&self) {
        let all: Vec<(String, String)> = self
            .lock()
            .values()
            .map(|e| (e.app.clone(), e.pe.clone()))
            .collect();
        for (app, pe) in all {
            self.stop(&app, &pe);
        }
    }

    /// Points the producer end of `key` (PE ids) of `app` (any app when empty) at a new
    /// address (its consumer moved). Returns whether such a channel exists here.
    pub fn repoint(&self, app: &str, key: &ChannelKey, address: &str) -> bool {
        let m = self.lock();
        let mut found = false;
        for e in m
            .values()
            .filter(|e| e.pe == key.from && (app.is_empty() || e.app == app))
        {
            let remotes = e.remotes.lock().unwrap_or_else(|p| p.into_inner());
            for r in remotes.iter().filter(|r| {
                pe_of_end(&r.key().from) == key.from && pe_of_end(&r.key().to) == key.to
            }) {
                r.set_peer(address.to_string());
                found = true;
            }
        }
        found
    }

    fn arm(&self, app: &str, pe: &str, action: PeControl) -> Result<u64, ArmError> {
        let m = self.lock();
        let e = m
            .get(&entry_key(app, pe))
            .ok_or_else(|| ArmError::NotHere(pe.to_string()))?;
        let state = e.status.state();
        if matches!(state, PeRunState::Failed | PeRunState::Finished) {
            return Err(ArmError::NotRunning {
                pe: pe.to_string(),
                state,
            });
        }
        e.control.send(action).map_err(|_| ArmError::NotRunning {
            pe: pe.to_string(),
            state,
        })?;
        Ok(e.status.records_in.load(Ordering::Relaxed))
    }

    /// Arms producer `pe` of `app` to route `stream` by `partitioning` over `targets`
    /// after barrier `barrier` (see [`upgrade`]). Returns the records it has taken in.
    pub fn switch_output(
        &self,
        app: &str,
        pe: &str,
        barrier: u64,
        stream: String,
        partitioning: Option<Partitioning>,
        targets: Vec<Target>,
    ) -> Result<u64, ArmError> {
        self.arm(
            app,
            pe,
            PeControl::Switch {
                barrier,
                stream,
                partitioning,
                targets,
            },
        )
    }

    /// Arms `pe` of `app` to drain at barrier `barrier`.
    pub fn drain(&self, app: &str, pe: &str, barrier: u64) -> Result<u64, ArmError> {
        self.arm(app, pe, PeControl::Drain { barrier })
    }

    /// Opens a new input of the running consumer `pe` of `app` from `from` (whose
    /// attempt is `from_attempt`); the PE reads it after barrier `barrier`. Returns
    /// false when that input is open already (a repeated command).
    pub fn open_input(
        &self,
        app: &str,
        pe: &str,
        from: &str,
        from_attempt: u64,
        from_worker: Option<String>,
        barrier: u64,
    ) -> Result<bool, ArmError> {
        let attempt = self
            .lock()
            .get(&entry_key(app, pe))
            .map(|e| e.attempt)
            .ok_or_else(|| ArmError::NotHere(pe.to_string()))?;
        let key = ChannelKey::new(
            channel_end(app, from, from_attempt),
            channel_end(app, pe, attempt),
        );
        if self.inputs.get(&key).is_some() {
            return Ok(false);
        }
        let (ep, rx) = self.inputs.register(key, from_worker);
        if let Err(e) = self.arm(
            app,
            pe,
            PeControl::AddInput {
                barrier,
                input: (ep.clone(), rx),
            },
        ) {
            self.inputs.remove(&ep);
            return Err(e);
        }
        if let Some(e) = self.lock().get(&entry_key(app, pe)) {
            e.inputs.lock().unwrap_or_else(|p| p.into_inner()).push(ep);
        }
        Ok(true)
    }

    /// Closes the consumer end of the channel from `from` into `pe` of `app`: its
    /// endpoint goes (after the upgrade that dropped it ended it). Returns whether it
    /// was open.
    pub fn close_input(&self, app: &str, pe: &str, from: &str) -> bool {
        let m = self.lock();
        let Some(e) = m.get(&entry_key(app, pe)) else {
            return false;
        };
        let mut eps = e.inputs.lock().unwrap_or_else(|p| p.into_inner());
        let before = eps.len();
        eps.retain(|ep| {
            let gone = pe_of_end(&ep.key.from) == from;
            if gone {
                self.inputs.remove(ep);
            }
            !gone
        });
        eps.len() != before
    }

    /// Every PE, as the master sees it in reports.
    pub fn report(&self) -> Vec<pb::PeReport> {
        self.lock()
            .values()
            .map(|e| pb::PeReport {
                pe: e.pe.clone(),
                app: e.app.clone(),
                state: e.status.state().to_proto() as i32,
                stats: Some(stats_of(e, true)),
                last_checkpoint_id: 0,
                message: e.status.message(),
                gpu_uuids: e.gpus.clone(),
                verify: e.status.verify(),
                version: e.version,
                attempt: e.attempt,
                checkpoints: e.status.pieces(),
                restore_failed_checkpoint_id: e.status.restore_failed.load(Ordering::Acquire),
            })
            .collect()
    }

    /// Every channel end here.
    pub fn channels(&self) -> Vec<pb::ChannelReport> {
        let m = self.lock();
        let mut out = Vec::new();
        for e in m.values() {
            for ep in e.inputs.lock().unwrap_or_else(|p| p.into_inner()).iter() {
                out.push(pb::ChannelReport {
                    channel: Some(pb::ChannelRef {
                        from_pe: ep.key.from.clone(),
                        to_pe: ep.key.to.clone(),
                        stream: String::new(),
                    }),
                    end: pb::ChannelEnd::Consumer as i32,
                    records: ep.stats.records.load(Ordering::Relaxed),
                    bytes: ep.stats.bytes.load(Ordering::Relaxed),
                    last_seq: ep.stats.last_seq.load(Ordering::Relaxed),
                    pending_batches: ep.queued() as u64,
                    connected: ep.stats.connected.load(Ordering::Relaxed),
                });
            }
            for r in e.remotes.lock().unwrap_or_else(|p| p.into_inner()).iter() {
                let s = r.stats();
                out.push(pb::ChannelReport {
                    channel: Some(pb::ChannelRef {
                        from_pe: r.key().from.clone(),
                        to_pe: r.key().to.clone(),
                        stream: String::new(),
                    }),
                    end: pb::ChannelEnd::Producer as i32,
                    records: s.records.load(Ordering::Relaxed),
                    bytes: s.bytes.load(Ordering::Relaxed),
                    last_seq: s.last_seq.load(Ordering::Relaxed),
                    pending_batches: r.pending() as u64,
                    connected: s.connected.load(Ordering::Relaxed),
                });
            }
        }
        out
    }
}

fn stats_of(e: &PeEntry, with_rates: bool) -> pb::PeStats {
    let s = &e.status;
    let (rin, rout) = (
        s.records_in.load(Ordering::Relaxed),
        s.records_out.load(Ordering::Relaxed),
    );
    let (mut rate_in, mut rate_out) = (0.0, 0.0);
    if with_rates {
        if let Ok(mut last) = e.last.lock() {
            let dt = last.0.elapsed().as_secs_f64();
            if dt > 0.0 {
                rate_in = (rin - last.1) as f64 / dt;
                rate_out = (rout - last.2) as f64 / dt;
            }
            // A window of at least a second keeps rates steady between reports.
            if dt >= 1.0 {
                *last = (Instant::now(), rin, rout);
            }
        }
    }
    let gaps = if with_rates && s.state() == PeRunState::Running {
        s.input_gaps_ms()
    } else {
        Vec::new()
    };
    let backlog = e
        .inputs
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .iter()
        .map(|ep| ep.queued() as u64)
        .sum();
    pb::PeStats {
        records_in: rin,
        records_out: rout,
        rate_in,
        rate_out,
        backlog,
        bytes_in: s.bytes_in.load(Ordering::Relaxed),
        bytes_out: s.bytes_out.load(Ordering::Relaxed),
        max_input_gap_ms: gaps.iter().copied().max().unwrap_or(0),
        input_gaps_ms: gaps,
        state_precopied_bytes: s.precopied_bytes.load(Ordering::Relaxed),
        state_barrier_bytes: s.barrier_bytes.load(Ordering::Relaxed),
        handoff_behind: s.behind.get().map(|w| w.to_string()).unwrap_or_default(),
    }
}
