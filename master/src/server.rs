//! A master process: the Raft node and every service on one gRPC port, plus the
//! Prometheus endpoint and the liveness monitor.

use crate::api::{
    monitor_liveness, ratelimit, AdminService, Liveness, Shared, WeirService, WorkersService,
    MAX_REQUEST_BYTES,
};
use crate::metrics::Metrics;
use crate::raft::node::{NodeConfig, RaftNode, StartError};
use crate::raft::transport::RaftService;
use crate::raft::NodeId;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tonic::transport::server::TcpIncoming;
use weir_proto::v1::master_workers_server::MasterWorkersServer;
use weir_proto::v1::weir_admin_server::WeirAdminServer;
use weir_proto::v1::weir_server::WeirServer;

/// Concurrent calls one connection may have open (a client opening thousands of
/// stalled streams is held to this many).
pub const MAX_STREAMS_PER_CONNECTION: u32 = 256;

/// How to run a master.
#[derive(Clone, Debug)]
pub struct MasterConfig {
    /// Raft node settings (id, data dir, timing).
    pub node: NodeConfig,
    /// The founding members (id -> gRPC address), this master included. Empty: join an
    /// existing cluster later through `AddMaster`.
    pub peers: BTreeMap<NodeId, String>,
    /// Workers are told to heartbeat this often.
    pub worker_heartbeat: Duration,
    /// A worker silent this long is marked lost.
    pub worker_timeout: Duration,
    /// Where to serve Prometheus metrics (`GET /metrics`), if anywhere.
    pub metrics_listen: Option<SocketAddr>,
    /// Deadline of a client request.
    pub request_timeout: Duration,
    /// How often the leader reconciles placements and worker state.
    pub reconcile_interval: Duration,
    /// How often apps are checkpointed unless their spec says otherwise
    /// (`checkpoint_interval_ms`); zero turns default checkpoints off.
    pub checkpoint_interval: Duration,
    /// A checkpoint not complete after this long is abandoned.
    pub checkpoint_timeout: Duration,
    /// Copies of every snapshot, the taking worker's included.
    pub checkpoint_replicas: u32,
    /// Whether upgrades pre-copy window state before the switch (only deltas cross
    /// at the barrier); off: the whole state moves at the barrier (a baseline).
    pub precopy: bool,
    /// Per-app bounds on PEs and channels, checked before a spec reaches Raft.
    pub app_limits: weir_common::spec::AppLimits,
    /// Calls per second each authenticated caller may make on the client API (`None`:
    /// unlimited); see `api::ratelimit`.
    pub client_rate_limit: Option<crate::api::ratelimit::RateLimit>,
    /// How the scheduler chooses devices and orders its queue.
    pub scheduling: crate::scheduler::Policy,
}

impl MasterConfig {
    /// A config with default timing for master `id` with data in `data_dir`.
    pub fn new(id: NodeId, data_dir: PathBuf, peers: BTreeMap<NodeId, String>) -> Self {
        Self {
            node: NodeConfig::new(id, data_dir),
            peers,
            worker_heartbeat: Duration::from_millis(500),
            worker_timeout: Duration::from_secs(3),
            metrics_listen: None,
            request_timeout: Duration::from_secs(30),
            reconcile_interval: Duration::from_millis(250),
            checkpoint_interval: Duration::from_secs(1),
            checkpoint_timeout: Duration::from_secs(10),
            checkpoint_replicas: 2,
            precopy: true,
            app_limits: weir_common::spec::AppLimits::default(),
            client_rate_limit: Some(Default::default()),
            scheduling: crate::scheduler::Policy::default(),
        }
    }
}

/// A running master.
pub struct Master {
    /// The Raft node.
    pub node: RaftNode,
    /// The gRPC address it serves.
    pub addr: SocketAddr,
    /// The metrics address, if serving.
    pub metrics_addr: Option<SocketAddr>,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl Master {
    /// Binds `listen` and starts.
    pub async fn start(cfg: MasterConfig, listen: SocketAddr) -> Result<Self, StartError> {
        let listener = TcpListener::bind(listen)
            .await
            .map_err(|e| StartError::Io(listen.to_string().into(), e))?;
        Self::start_on(cfg, listener).await
    }

    /// Starts on an already bound listener (tests bind port 0 first to learn addresses).
    pub async fn start_on(cfg: MasterConfig, listener: TcpListener) -> Result<Self, StartError> {
        let addr = listener
            .local_addr()
            .map_err(|e| StartError::Io("listener".into(), e))?;
        let node = RaftNode::start(&cfg.node).await?;
        let metrics = Arc::new(Metrics::default());
        let shared = Shared::new(node.clone(), metrics.clone());
        let liveness = Liveness::default();
        let (stop, stop_rx) = watch::channel(false);
        let (health, health_service) = tonic_health::server::health_reporter();
        health.set_serving::<WeirServer<WeirService>>().await;

        let security = cfg.node.security.clone();
        let secure = security.is_on();
        use tonic::service::interceptor::InterceptedService;
        use weir_security::caller::admit;
        use weir_security::Role;
        let router = security
            .server()
            .map_err(|e| StartError::Tls(e.to_string()))?
            .timeout(cfg.request_timeout)
            // Bounds on what one peer can hold open: streams per connection, and
            // keepalives that close connections whose peer went silent.
            .max_concurrent_streams(Some(MAX_STREAMS_PER_CONNECTION))
            .http2_keepalive_interval(Some(Duration::from_secs(10)))
            .http2_keepalive_timeout(Some(Duration::from_secs(20)))
            .add_service(health_service)
            .add_service(InterceptedService::new(
                WeirServer::new(
                    WeirService::new(shared.clone(), liveness.clone())
                        .with_limits(cfg.app_limits)
                        .with_scheduling_flags(cfg.scheduling.clone()),
                )
                .max_decoding_message_size(MAX_REQUEST_BYTES),
                {
                    let mut admit = admit(secure, &[Role::Tenant, Role::Admin], "the client API");
                    let limiter = Arc::new(ratelimit::Limiter::new(cfg.client_rate_limit));
                    move |req| {
                        let req = admit(req)?;
                        ratelimit::check(&limiter, &req)?;
                        Ok(req)
                    }
                },
            ))
            .add_service(InterceptedService::new(
                WeirAdminServer::new(AdminService::new(shared.clone())),
                admit(secure, &[Role::Admin], "membership admin"),
            ))
            .add_service(InterceptedService::new(
                MasterWorkersServer::new(WorkersService::new(
                    shared.clone(),
                    liveness.clone(),
                    cfg.worker_heartbeat,
                    cfg.checkpoint_replicas,
                ))
                .max_decoding_message_size(MAX_REQUEST_BYTES),
                admit(secure, &[Role::Worker], "worker registration"),
            ))
            .add_service(InterceptedService::new(
                RaftService::server(
                    node.raft.clone(),
                    node.id,
                    node.cluster_id.clone(),
                    node.faults.clone(),
                ),
                admit(secure, &[Role::Master], "Raft"),
            ));
        let mut rx = stop_rx.clone();
        let incoming = TcpIncoming::from(listener)
            .with_nodelay(Some(true))
            .with_keepalive(Some(Duration::from_secs(30)));
        let mut tasks = vec![tokio::spawn(async move {
            let shutdown = async move {
                let _ = rx.wait_for(|s| *s).await;
            };
            if let Err(e) = router
                .serve_with_incoming_shutdown(incoming, shutdown)
                .await
            {
                tracing::error!(error = %e, "gRPC server failed");
            }
        })];
        tasks.push(tokio::spawn(crate::executor::run(
            shared.clone(),
            liveness.clone(),
            crate::executor::ExecutorConfig {
                interval: cfg.reconcile_interval,
                checkpoint_interval: cfg.checkpoint_interval,
                checkpoint_timeout: cfg.checkpoint_timeout,
                checkpoint_replicas: cfg.checkpoint_replicas,
                precopy: cfg.precopy,
                worker_heartbeat: cfg.worker_heartbeat,
                policy: cfg.scheduling.clone(),
            },
            stop_rx.clone(),
        )));
        tasks.push(tokio::spawn(monitor_liveness(
            shared.clone(),
            liveness,
            cfg.worker_timeout,
            stop_rx.clone(),
        )));

        let metrics_addr = match cfg.metrics_listen {
            Some(a) => {
                let l = TcpListener::bind(a)
                    .await
                    .map_err(|e| StartError::Io(a.to_string().into(), e))?;
                let bound = l.local_addr().ok();
                let acceptor = security
                    .data_acceptor()
                    .map_err(|e| StartError::Tls(e.to_string()))?;
                tasks.push(tokio::spawn(crate::scrape::serve(
                    l,
                    shared.clone(),
                    acceptor,
                    stop_rx.clone(),
                )));
                bound
            }
            None => None,
        };

        if !cfg.peers.is_empty() {
            if let Err(e) = node.initialize(&cfg.peers).await {
                tracing::warn!(error = %e, "cluster initialisation refused");
            }
        }
        tracing::info!(node = node.id, %addr, "master serving");
        Ok(Self {
            node,
            addr,
            metrics_addr,
            stop,
            tasks,
        })
    }

    /// Stops serving and stops Raft; the data dir keeps everything committed.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        self.node.shutdown().await;
        for t in self.tasks {
            t.abort();
            let _ = t.await;
        }
    }
}
