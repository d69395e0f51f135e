//! A whole worker: control service, data listener, PE runtime and the agent that keeps
//! it registered, started and stopped together.

use crate::agent::{Agent, AgentConfig, AgentHooks, AgentStatus};
use crate::checkpoint::replicate::Replicator;
use crate::checkpoint::SnapshotStore;
use crate::container::ContainerEngine;
use crate::control::ControlService;
use crate::dataplane::{inbound, Inputs};
use crate::runtime::checkpoint::CheckpointEnv;
use crate::runtime::Runtime;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tonic::transport::server::TcpIncoming;
use weir_proto::v1::worker_control_server::WorkerControlServer;

/// Largest control message accepted (a DeployPe carries an operator spec).
pub const MAX_CONTROL_BYTES: usize = 16 << 20;

/// Longest a control call may run (snapshot transfers of large state included).
pub const CONTROL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(300);

/// Calls one connection may have in flight at once (a peer opening thousands of
/// stalled snapshot streams is held to this many).
pub const MAX_CALLS_PER_CONNECTION: usize = 64;

/// A running worker.
pub struct Worker {
    /// Its PEs.
    pub runtime: Arc<Runtime>,
    /// Where its control service listens.
    pub control_addr: SocketAddr,
    /// Where its data plane listens.
    pub data_addr: SocketAddr,
    /// Its checkpoint snapshots (its own and its peers' replicas).
    pub store: Arc<SnapshotStore>,
    agent: Agent,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl Worker {
    /// Starts a worker on already bound listeners (the agent's config names the
    /// addresses the masters and other workers should dial).
    pub async fn start_on(
        cfg: AgentConfig,
        control: TcpListener,
        data: TcpListener,
    ) -> std::io::Result<Self> {
        let control_addr = control.local_addr()?;
        let data_addr = data.local_addr()?;
        let inputs = Arc::new(Inputs::default());
        let store = Arc::new(
            match &cfg.checkpoint_dir {
                Some(dir) => SnapshotStore::open(dir),
                None => SnapshotStore::temporary(),
            }
            .map_err(std::io::Error::other)?,
        );
        let env = Arc::new(
            CheckpointEnv::new(
                cfg.worker_id.clone(),
                store.clone(),
                Arc::new(
                    Replicator::new(cfg.worker_id.clone()).with_security(cfg.security.clone()),
                ),
            )
            .with_defer_from(cfg.defer_snapshot_from),
        );
        let dialer = crate::dataplane::Dialer::new(&cfg.security).map_err(std::io::Error::other)?;
        let admission =
            crate::dataplane::Admission::new(&cfg.security).map_err(std::io::Error::other)?;
        let mut runtime =
            Runtime::with_checkpoints(inputs.clone(), env.clone()).with_dialer(dialer);
        let mut cfg = cfg;
        weir_common::image::check_registries(&cfg.pull_from).map_err(|e| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("--pull-from: {e}"),
            )
        })?;
        for r in &mut cfg.pull_from {
            r.make_ascii_lowercase();
        }
        match container_engine(&cfg).await {
            Some(engine) => {
                runtime = runtime.with_containers(engine.with_registries(cfg.pull_from.clone()));
            }
            None if !cfg.pull_from.is_empty() => {
                tracing::warn!(worker = %cfg.worker_id, registries = ?cfg.pull_from, "no Docker Engine: this worker pulls no images");
                cfg.pull_from.clear();
            }
            None => {}
        }
        let runtime = Arc::new(runtime);
        let hooks = AgentHooks {
            reports: {
                let rt = runtime.clone();
                Arc::new(move || rt.report())
            },
            on_heartbeat: Arc::new(move |r| env.on_heartbeat(r)),
            nudge: runtime.nudge(),
            ..AgentHooks::default()
        };
        let (stop, stop_rx) = watch::channel(false);
        let images = hooks.images.spawn_refresh(
            cfg.worker_id.clone(),
            crate::images::REFRESH,
            stop_rx.clone(),
        );
        let service = ControlService::new(
            cfg.worker_id.clone(),
            cfg.data_address.clone(),
            runtime.clone(),
            hooks.term.clone(),
            hooks.incarnation.clone(),
            store.clone(),
        );
        let mut rx = stop_rx.clone();
        let incoming = TcpIncoming::from(control)
            .with_nodelay(Some(true))
            .with_keepalive(Some(std::time::Duration::from_secs(30)));
        let (health, health_service) = tonic_health::server::health_reporter();
        health
            .set_serving::<WorkerControlServer<ControlService>>()
            .await;
        // Masters send commands; other workers store and fetch snapshot replicas (the
        // service refines which calls each may make).
        let admit = weir_security::caller::admit(
            cfg.security.is_on(),
            &[weir_security::Role::Master, weir_security::Role::Worker],
            "worker control",
        );
        let server = cfg
            .security
            .server()
            .map_err(std::io::Error::other)?
            // Bounds on what one peer can hold open: calls, streams per connection,
            // and keepalives that close connections whose peer went silent.
            .timeout(CONTROL_TIMEOUT)
            .concurrency_limit_per_connection(MAX_CALLS_PER_CONNECTION)
            .max_concurrent_streams(Some(MAX_CALLS_PER_CONNECTION as u32))
            .max_frame_size(crate::checkpoint::FRAME_BYTES)
            .http2_keepalive_interval(Some(std::time::Duration::from_secs(10)))
            .http2_keepalive_timeout(Some(std::time::Duration::from_secs(20)))
            .add_service(health_service)
            .add_service(tonic::service::interceptor::InterceptedService::new(
                WorkerControlServer::new(service).max_decoding_message_size(MAX_CONTROL_BYTES),
                admit,
            ));
        let worker_id = cfg.worker_id.clone();
        let tasks = vec![
            tokio::spawn(async move {
                let shutdown = async move {
                    let _ = rx.wait_for(|s| *s).await;
                };
                if let Err(e) = server
                    .serve_with_incoming_shutdown(incoming, shutdown)
                    .await
                {
                    tracing::error!(worker = %worker_id, error = %e, "control service failed");
                }
            }),
            tokio::spawn(inbound::serve(data, inputs, admission, stop_rx)),
            images,
        ];
        tracing::info!(worker = %cfg.worker_id, %control_addr, %data_addr, "worker serving");
        let agent = Agent::spawn_with(cfg, hooks);
        Ok(Self {
            runtime,
            control_addr,
            data_addr,
            store,
            agent,
            stop,
            tasks,
        })
    }

    /// Binds the addresses in `cfg` and starts.
    pub async fn start(cfg: AgentConfig) -> std::io::Result<Self> {
        let control = cfg.control_address.clone();
        let data = cfg.data_address.clone();
        Self::start_with_listen(cfg, &control, &data).await
    }

    /// Binds `listen_control` and `listen_data` (e.g. `0.0.0.0:7100` in a container)
    /// and starts, advertising the addresses in `cfg` (e.g. the container's hostname)
    /// to the masters and other workers.
    pub async fn start_with_listen(
        cfg: AgentConfig,
        listen_control: &str,
        listen_data: &str,
    ) -> std::io::Result<Self> {
        let control = TcpListener::bind(listen_control).await.map_err(|e| {
            std::io::Error::new(e.kind(), format!("control address {listen_control}: {e}"))
        })?;
        let data = TcpListener::bind(listen_data).await.map_err(|e| {
            std::io::Error::new(e.kind(), format!("data address {listen_data}: {e}"))
        })?;
        Self::start_on(cfg, control, data).await
    }

    /// The agent's view (registered, incarnation, leader).
    pub fn agent_status(&self) -> AgentStatus {
        self.agent.status()
    }

    /// Stops everything: PEs, links, services, heartbeats (as a crash would, for the
    /// rest of the cluster: nothing is handed over).
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        self.runtime.stop_all();
        self.agent.stop().await;
        for t in self.tasks {
            t.abort();
            let _ = t.await;
        }
    }
}

/// The local Docker Engine for container PEs, with what a crashed run of this worker
/// left behind removed; `None` (logged) where no engine answers: container PEs then
/// fail on this worker, saying so.
async fn container_engine(cfg: &AgentConfig) -> Option<ContainerEngine> {
    let offered = crate::resources::snapshot(
        cfg.cores,
        cfg.memory_mb,
        &cfg.declared_gpus,
        cfg.discover_nvml,
    );
    let vendors = offered
        .gpus
        .iter()
        .map(|g| (g.uuid.clone(), g.vendor.clone()))
        .collect();
    let nodes = cfg
        .declared_gpus
        .iter()
        .enumerate()
        .filter(|(_, d)| !d.nodes.is_empty())
        .map(|(i, d)| (crate::resources::declared_uuid(d, i), d.nodes.clone()))
        .collect();
    let engine = match ContainerEngine::connect(&cfg.cluster_id, &cfg.worker_id, vendors, nodes) {
        Ok(engine) => engine,
        Err(e) => {
            tracing::info!(worker = %cfg.worker_id, error = %e, "no container PEs on this worker");
            return None;
        }
    };
    match engine.ping().await {
        Ok(version) => {
            tracing::info!(worker = %cfg.worker_id, docker = %version, "container PEs run on the local Docker Engine")
        }
        Err(e) => {
            tracing::info!(worker = %cfg.worker_id, error = %e, "no container PEs on this worker");
            return None;
        }
    }
    match engine.remove_orphans().await {
        Ok(0) => {}
        Ok(n) => {
            tracing::info!(worker = %cfg.worker_id, removed = n, "containers of an earlier run removed")
        }
        Err(e) => {
            tracing::warn!(worker = %cfg.worker_id, error = %e, "containers of an earlier run not removed")
        }
    }
    Some(engine)
}
