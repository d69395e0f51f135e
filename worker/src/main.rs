//! `weir-worker`: joins a Weir cluster, runs the PEs the master leader deploys on it,
//! and moves their records.

use anyhow::Context;
use clap::Parser;
use std::collections::BTreeMap;
use std::path::PathBuf;
use weir_worker::agent::AgentConfig;
use weir_worker::checkpoint::store::encode_name;
use weir_worker::node::Worker;
use weir_worker::resources::DeclaredGpu;

// Record batches are allocated by the PE that makes them and freed by the one that
// consumes them, on other threads: glibc's malloc serialises those frees on its arena
// locks (a third of the data plane's context switches), mimalloc does not.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Runs one Weir worker: registers with the masters, heartbeats its resources (CPU,
/// memory, GPUs through NVML or declared) and its PEs, serves the control service the
/// master leader drives, and links to other workers' data planes.
#[derive(Parser, Debug)]
#[command(name = "weir-worker", version, about)]
struct Args {
    /// Unique worker id.
    #[arg(long, env = "WEIR_WORKER_ID")]
    id: String,
    /// Master addresses; any one that answers will do.
    #[arg(
        long = "master",
        env = "WEIR_MASTERS",
        value_delimiter = ',',
        default_value = "127.0.0.1:7000"
    )]
    masters: Vec<String>,
    /// Address of this worker's control service, as the masters should dial it.
    #[arg(long, env = "WEIR_WORKER_CONTROL", default_value = "127.0.0.1:7100")]
    control_address: String,
    /// Address of this worker's data plane, as other workers should dial it.
    #[arg(long, env = "WEIR_WORKER_DATA", default_value = "127.0.0.1:7200")]
    data_address: String,
    /// Address the control service binds, if not `--control-address` (e.g.
    /// `0.0.0.0:7100` in a container that advertises its hostname).
    #[arg(long, env = "WEIR_WORKER_LISTEN_CONTROL")]
    listen_control: Option<String>,
    /// Address the data plane binds, if not `--data-address`.
    #[arg(long, env = "WEIR_WORKER_LISTEN_DATA")]
    listen_data: Option<String>,
    /// Cores to offer (default: all of this machine's).
    #[arg(long, env = "WEIR_WORKER_CORES")]
    cores: Option<f64>,
    /// Memory to offer in MiB (default: all of this machine's).
    #[arg(long, env = "WEIR_WORKER_MEMORY_MB")]
    memory_mb: Option<u64>,
    /// A declared accelerator, `VENDOR:MODEL:MEMORY_MB[:UUID]`; repeat for several.
    #[arg(long = "gpu", env = "WEIR_WORKER_GPUS", value_delimiter = ',')]
    gpus: Vec<DeclaredGpu>,
    /// Do not ask NVML for NVIDIA GPUs.
    #[arg(long)]
    no_nvml: bool,
    /// Report progress (PE states, checkpoint pieces) only with the periodic
    /// heartbeat instead of at once (a baseline for benchmarks).
    #[arg(long, env = "WEIR_HEARTBEAT_ONLY")]
    heartbeat_only: bool,
    /// Keep transparent huge pages for this process's memory. Off by default: a
    /// thread's first touch of a fresh huge page zeroes 2 MiB while the stream waits
    /// (`worker/src/memory.rs`).
    #[arg(long, env = "WEIR_HUGE_PAGES")]
    huge_pages: bool,
    /// A window's checkpoint increment listing at least this many changed slots, or
    /// whole snapshot of at least this many slots, is encoded after its barrier, a
    /// slice at a time between batches, instead of while the stream waits
    /// (docs/ARCHITECTURE.md, "Snapshots encoded after the barrier").
    #[arg(long, env = "WEIR_DEFER_SNAPSHOT_FROM", default_value_t = weir_worker::ops::window::DEFER_FROM)]
    defer_snapshot_from: usize,
    /// A registry (`host[:port]`, as an image reference begins) to pull a container
    /// PE's image from when the local Docker Engine does not hold it; repeat for
    /// several. Placement then counts this worker as able to run that registry's
    /// images (after the workers that hold them).
    #[arg(
        long = "pull-from",
        env = "WEIR_WORKER_PULL_FROM",
        value_delimiter = ','
    )]
    pull_from: Vec<String>,
    /// Pool to join (e.g. `inference`); repeat for several.
    #[arg(long = "pool", env = "WEIR_WORKER_POOLS", value_delimiter = ',')]
    pools: Vec<String>,
    /// A label `KEY=VALUE`; repeat for several (e.g. `scenario=inference`).
    #[arg(long = "label", value_delimiter = ',')]
    labels: Vec<String>,
    /// Cluster id it expects.
    #[arg(long, env = "WEIR_CLUSTER_ID", default_value = "weir")]
    cluster_id: String,
    /// Directory for this worker's files; checkpoint snapshots go under
    /// `DATA_DIR/<worker id>/checkpoints` unless `--checkpoint-dir` says otherwise.
    #[arg(
        long,
        env = "WEIR_WORKER_DATA_DIR",
        default_value = "./weir-worker-data"
    )]
    data_dir: PathBuf,
    /// Directory for checkpoint snapshots (this worker's and replicas of its peers');
    /// default: `DATA_DIR/<worker id>/checkpoints`, kept across restarts.
    #[arg(long, env = "WEIR_CHECKPOINT_DIR")]
    checkpoint_dir: Option<PathBuf>,
    /// The cluster CA certificate (PEM): every peer's certificate must chain to it.
    #[arg(long, env = "WEIR_TLS_CA", requires_all = ["cert", "key"])]
    ca: Option<std::path::PathBuf>,
    /// This worker's certificate (PEM), naming spiffe://weir/worker/<id>
    /// (`weirctl certs init` makes one).
    #[arg(long, env = "WEIR_TLS_CERT", requires_all = ["ca", "key"])]
    cert: Option<std::path::PathBuf>,
    /// This worker's private key (PEM).
    #[arg(long, env = "WEIR_TLS_KEY", requires_all = ["ca", "cert"])]
    key: Option<std::path::PathBuf>,
    /// Plain TCP with nobody authenticated: anyone who reaches the control port can
    /// run programs here. For local experiments only.
    #[arg(long, env = "WEIR_INSECURE", conflicts_with_all = ["ca", "cert", "key"], value_parser = clap::builder::BoolishValueParser::new())]
    insecure: bool,
}

impl Args {
    /// Where checkpoint snapshots live: `--checkpoint-dir`, else a directory under the
    /// data dir named after the worker (encoded, so an id cannot leave the data dir).
    /// Never a temporary directory: snapshots must survive a restart of the worker,
    /// or a restarted worker could restore nothing its peers did not replicate.
    fn checkpoint_dir(&self) -> anyhow::Result<PathBuf> {
        if let Some(d) = &self.checkpoint_dir {
            return Ok(d.clone());
        }
        let id = encode_name(&self.id).map_err(|e| anyhow::anyhow!("--id: {e}"))?;
        Ok(self.data_dir.join(id).join("checkpoints"))
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let a = Args::parse();
    if !a.huge_pages && !weir_worker::memory::no_transparent_huge_pages() {
        tracing::info!("transparent huge pages: as the system sets them");
    }
    let mut labels = BTreeMap::new();
    for l in &a.labels {
        let (k, v) = l
            .split_once('=')
            .with_context(|| format!("--label: {l:?} is not KEY=VALUE"))?;
        labels.insert(k.to_string(), v.to_string());
    }
    let listen_control = a
        .listen_control
        .clone()
        .unwrap_or_else(|| a.control_address.clone());
    let listen_data = a
        .listen_data
        .clone()
        .unwrap_or_else(|| a.data_address.clone());
    let files = match (a.ca.clone(), a.cert.clone(), a.key.clone()) {
        (Some(ca), Some(cert), Some(key)) => Some(weir_security::TlsFiles { ca, cert, key }),
        _ => None,
    };
    let security = weir_security::Security::from_flags(
        files,
        a.insecure,
        &weir_security::Principal::Worker(a.id.clone()),
    )?;
    if !security.is_on() {
        tracing::warn!("{}", weir_security::tls::INSECURE_WARNING);
    }
    let checkpoint_dir = a.checkpoint_dir()?;
    tracing::info!(dir = %checkpoint_dir.display(), "checkpoint snapshots");
    let cfg = AgentConfig {
        worker_id: a.id,
        masters: a.masters,
        control_address: a.control_address,
        data_address: a.data_address,
        labels,
        pools: a.pools,
        cluster_id: a.cluster_id,
        cores: a.cores,
        memory_mb: a.memory_mb,
        declared_gpus: a.gpus,
        discover_nvml: !a.no_nvml,
        push_progress: !a.heartbeat_only,
        defer_snapshot_from: a.defer_snapshot_from,
        pull_from: a.pull_from,
        checkpoint_dir: Some(checkpoint_dir),
        security,
    };
    let worker = Worker::start_with_listen(cfg, &listen_control, &listen_data)
        .await
        .context("cannot listen on the control or data address")?;
    shutdown_signal().await?;
    worker.stop().await;
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

#[cfg(test)]
mod tests {
    use super::*;

    fn args(extra: &[&str]) -> Args {
        let mut argv = vec!["weir-worker"];
        argv.extend_from_slice(extra);
        Args::try_parse_from(argv).unwrap()
    }

    #[test]
    fn checkpoints_persist_under_the_data_dir_by_default() {
        // Today's default was a temporary directory, removed at exit.
        assert_eq!(
            args(&["--id", "w1"]).checkpoint_dir().unwrap(),
            PathBuf::from("./weir-worker-data/w1/checkpoints")
        );
        assert_eq!(
            args(&["--id", "w1", "--data-dir", "/var/lib/weir-worker"])
                .checkpoint_dir()
                .unwrap(),
            PathBuf::from("/var/lib/weir-worker/w1/checkpoints")
        );
        assert_eq!(
            args(&["--id", "w1", "--checkpoint-dir", "/ck"])
                .checkpoint_dir()
                .unwrap(),
            PathBuf::from("/ck")
        );
        // An id cannot point outside the data dir.
        assert_eq!(
            args(&["--id", "../x", "--data-dir", "/d"])
                .checkpoint_dir()
                .unwrap(),
            PathBuf::from("/d/%2E%2E%2Fx/checkpoints")
        );
    }
}
