//! `weir-master`: one master of a Weir cluster.

use anyhow::{bail, Context};
use clap::Parser;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;
use weir_master::server::{Master, MasterConfig};

/// Runs one Weir master. Three (or five) form a Raft cluster; `--dev` runs a single
/// one-voter master for development.
#[derive(Parser, Debug)]
#[command(name = "weir-master", version, about)]
struct Args {
    /// This master's id (> 0), unique in the cluster.
    #[arg(long, env = "WEIR_MASTER_ID", required_unless_present = "dev")]
    id: Option<u64>,
    /// gRPC address to serve (clients, workers and other masters).
    #[arg(long, env = "WEIR_MASTER_LISTEN", default_value = "127.0.0.1:7000")]
    listen: SocketAddr,
    /// Address other masters and workers use to reach this one, if not `--listen`
    /// (e.g. a container hostname).
    #[arg(long, env = "WEIR_MASTER_ADVERTISE")]
    advertise: Option<String>,
    /// Founding members, `1=host:port,2=host:port,3=host:port`, this master included.
    /// The cluster forms once; on later starts the list is ignored. Leave it out to
    /// start a master that joins an existing cluster through `weirctl cluster add-master`.
    #[arg(long, env = "WEIR_MASTER_PEERS", value_delimiter = ',')]
    peers: Vec<String>,
    /// Where the Raft log and snapshots live.
    #[arg(long, env = "WEIR_MASTER_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Single-voter development master (id 1, data in ./weir-dev-data unless --data-dir).
    #[arg(long)]
    dev: bool,
    /// Serve Prometheus metrics at http://ADDR/metrics.
    #[arg(long, env = "WEIR_MASTER_METRICS_LISTEN")]
    metrics_listen: Option<SocketAddr>,
    /// A worker silent this long (ms) is marked lost.
    #[arg(long, env = "WEIR_WORKER_TIMEOUT_MS", default_value_t = 3000)]
    worker_timeout_ms: u64,
    /// Default checkpoint interval of apps (ms; an app's `checkpoint_interval_ms`
    /// overrides it; 0 turns default checkpoints off).
    #[arg(long, env = "WEIR_CHECKPOINT_INTERVAL_MS", default_value_t = 1000)]
    checkpoint_interval_ms: u64,
    /// A checkpoint not complete this long (ms) after it began is abandoned (the next
    /// one is taken from scratch); large state written and replicated on slow disks
    /// may need longer.
    #[arg(long, env = "WEIR_CHECKPOINT_TIMEOUT_MS", default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..))]
    checkpoint_timeout_ms: u64,
    /// Copies of every checkpoint snapshot, the taking worker's included.
    #[arg(long, env = "WEIR_CHECKPOINT_REPLICAS", default_value_t = 2)]
    checkpoint_replicas: u32,
    /// Upgrades move window state entirely at the switch barrier instead of
    /// pre-copying it and moving only the delta (a baseline for benchmarks).
    #[arg(long, env = "WEIR_NO_PRECOPY")]
    no_precopy: bool,
    /// Which devices GPU slices go to: `objective` (default: the GPU-memory objective
    /// with binpack weights), `objective-spread`, or a baseline rule (`first-fit`,
    /// `best-fit`, `binpack`, `spread`). docs/scheduling.md.
    #[arg(long, env = "WEIR_GPU_POLICY", default_value = "objective")]
    gpu_policy: String,
    /// A weight multiplier of the objective: `model:NAME=W` or `pool:NAME=W` (e.g.
    /// `model:h100-80g=2` keeps H100s for requests only they can serve); repeat.
    #[arg(long = "gpu-weight", env = "WEIR_GPU_WEIGHTS", value_delimiter = ',')]
    gpu_weights: Vec<String>,
    /// Serve the queue in arrival order only (no classes, no fair share): a baseline.
    #[arg(long, env = "WEIR_FIFO_QUEUE")]
    fifo_queue: bool,
    /// Calls per second each authenticated caller (tenant, admin) may make on the
    /// client API, counted where the call arrives; 0: unlimited. Refused calls get
    /// RESOURCE_EXHAUSTED with the time to wait.
    #[arg(long, env = "WEIR_CLIENT_RATE_LIMIT", default_value_t = 200.0)]
    client_rate_limit: f64,
    /// Calls each caller may make at once above the rate (the bucket's size).
    #[arg(long, env = "WEIR_CLIENT_BURST", default_value_t = 400.0)]
    client_burst: f64,
    /// The cluster CA certificate (PEM): every peer's certificate must chain to it.
    #[arg(long, env = "WEIR_TLS_CA", requires_all = ["cert", "key"])]
    ca: Option<PathBuf>,
    /// This master's certificate (PEM), naming spiffe://weir/master/<id>
    /// (`weirctl certs init` makes one).
    #[arg(long, env = "WEIR_TLS_CERT", requires_all = ["ca", "key"])]
    cert: Option<PathBuf>,
    /// This master's private key (PEM).
    #[arg(long, env = "WEIR_TLS_KEY", requires_all = ["ca", "cert"])]
    key: Option<PathBuf>,
    /// Serve plain TCP with nobody authenticated: anyone who reaches a port can run
    /// programs on every worker. For local experiments only.
    #[arg(long, env = "WEIR_INSECURE", conflicts_with_all = ["ca", "cert", "key"], value_parser = clap::builder::BoolishValueParser::new())]
    insecure: bool,
    /// Cluster id; masters and workers of other clusters are refused.
    #[arg(long, env = "WEIR_CLUSTER_ID", default_value = "weir")]
    cluster_id: String,
    /// Most PEs one app may expand to (operators x parallelism, summed); a bigger spec
    /// is refused before it is committed.
    #[arg(long, env = "WEIR_MAX_APP_PES", default_value_t = weir_common::spec::DEFAULT_MAX_PES)]
    max_app_pes: u64,
    /// Most PE-to-PE channels one app may expand to; a bigger spec is refused before
    /// it is committed.
    #[arg(long, env = "WEIR_MAX_APP_CHANNELS", default_value_t = weir_common::spec::DEFAULT_MAX_CHANNELS)]
    max_app_channels: u64,
}

fn parse_peers(peers: &[String]) -> anyhow::Result<BTreeMap<u64, String>> {
    let mut out = BTreeMap::new();
    for p in peers.iter().filter(|p| !p.is_empty()) {
        let (id, addr) = p
            .split_once('=')
            .with_context(|| format!("--peers: {p:?} is not ID=HOST:PORT"))?;
        let id: u64 = id
            .parse()
            .with_context(|| format!("--peers: {id:?} is not a master id"))?;
        if id == 0 || out.insert(id, addr.to_string()).is_some() {
            bail!("--peers: id {id} is zero or listed twice");
        }
    }
    Ok(out)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,openraft=warn".into()),
        )
        .init();
    let args = Args::parse();
    let id = if args.dev {
        args.id.unwrap_or(1)
    } else {
        args.id.context("--id is required")?
    };
    if id == 0 {
        bail!("--id: must be > 0");
    }
    let advertise = args
        .advertise
        .clone()
        .unwrap_or_else(|| args.listen.to_string());
    let mut peers = parse_peers(&args.peers)?;
    if args.dev && peers.is_empty() {
        peers.insert(id, advertise.clone());
    }
    if !peers.is_empty() && peers.get(&id) != Some(&advertise) {
        bail!("--peers must list this master as {id}={advertise}");
    }
    let data_dir = match (&args.data_dir, args.dev) {
        (Some(d), _) => d.clone(),
        (None, true) => PathBuf::from("weir-dev-data"),
        (None, false) => bail!("--data-dir is required (or use --dev)"),
    };
    let files = match (args.ca, args.cert, args.key) {
        (Some(ca), Some(cert), Some(key)) => Some(weir_security::TlsFiles { ca, cert, key }),
        _ => None,
    };
    let security = weir_security::Security::from_flags(
        files,
        args.insecure,
        &weir_security::Principal::Master(id),
    )?;
    if !security.is_on() {
        tracing::warn!("{}", weir_security::tls::INSECURE_WARNING);
    }
    let mut cfg = MasterConfig::new(id, data_dir, peers);
    cfg.node.security = security;
    cfg.node.cluster_id = args.cluster_id;
    cfg.metrics_listen = args.metrics_listen;
    cfg.worker_timeout = Duration::from_millis(args.worker_timeout_ms);
    cfg.checkpoint_interval = Duration::from_millis(args.checkpoint_interval_ms);
    cfg.checkpoint_timeout = Duration::from_millis(args.checkpoint_timeout_ms);
    cfg.checkpoint_replicas = args.checkpoint_replicas.max(1);
    cfg.precopy = !args.no_precopy;
    cfg.scheduling =
        weir_master::scheduler::policy::parse(&args.gpu_policy, &args.gpu_weights, args.fifo_queue)
            .map_err(anyhow::Error::msg)?;
    cfg.client_rate_limit =
        (args.client_rate_limit > 0.0).then_some(weir_master::api::ratelimit::RateLimit {
            per_second: args.client_rate_limit,
            burst: args.client_burst.max(1.0),
        });
    cfg.app_limits = weir_common::spec::AppLimits {
        max_pes: args.max_app_pes,
        max_channels: args.max_app_channels,
    };
    let master = Master::start(cfg, args.listen).await?;
    tracing::info!(node = id, addr = %master.addr, metrics = ?master.metrics_addr, "weir-master up");
    shutdown_signal().await?;
    tracing::info!("shutting down");
    master.stop().await;
    Ok(())
}

/// Waits for Ctrl-C (SIGINT) or, on Unix, SIGTERM (what `docker stop` and most
/// supervisors send; as PID 1 in a container, an unhandled SIGTERM would be ignored).
async fn shutdown_signal() -> std::io::Result<()> {
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            r = tokio::signal::ctrl_c() => r,
            _ = term.recv() => Ok(()),
        }
    }
    #[cfg(not(unix))]
    {
        tokio::signal::ctrl_c().await
    }
}
