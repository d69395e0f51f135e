//! Test harness: real masters (real Raft over real gRPC, real redb on disk) started
//! in-process on loopback ports, with helpers to kill, restart and partition them.
//! Every wait is a condition polled against a deadline, never a bare sleep.

pub mod arrivals;
pub mod compose;
pub mod containers;
pub mod registry;
pub mod secure;
pub mod stalls;

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tonic::transport::Channel;
use weir_master::server::{Master, MasterConfig};
use weir_proto::v1 as pb;
use weir_proto::v1::weir_client::WeirClient;

/// How long any condition may take before a test fails.
pub const DEADLINE: Duration = Duration::from_secs(20);

/// Polls `check` until it returns `Some`, or panics with `what` after `DEADLINE`.
pub async fn eventually<T, F, Fut>(what: &str, check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    eventually_within(what, DEADLINE, check).await
}

/// A cluster of masters in this process.
pub struct Cluster {
    /// Data dirs live here.
    pub dir: tempfile::TempDir,
    /// Every master's address, running or not.
    pub addrs: BTreeMap<u64, SocketAddr>,
    /// Running masters.
    pub masters: BTreeMap<u64, Master>,
    /// Adjusts each master's config before start.
    pub tune: fn(&mut MasterConfig),
}

fn no_tuning(_: &mut MasterConfig) {}

impl Cluster {
    /// Starts `n` founding masters.
    pub async fn start(n: u64) -> Self {
        Self::start_tuned(n, no_tuning).await
    }

    /// Starts `n` founding masters, each config adjusted by `tune`.
    pub async fn start_tuned(n: u64, tune: fn(&mut MasterConfig)) -> Self {
        init_log();
        let mut listeners = BTreeMap::new();
        for id in 1..=n {
            let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
            listeners.insert(id, l);
        }
        let addrs: BTreeMap<u64, SocketAddr> = listeners
            .iter()
            .map(|(id, l)| (*id, l.local_addr().unwrap()))
            .collect();
        let mut c = Cluster {
            dir: tempfile::tempdir().unwrap(),
            addrs,
            masters: BTreeMap::new(),
            tune,
        };
        for (id, l) in listeners {
            let m = Master::start_on(c.config(id), l).await.unwrap();
            c.masters.insert(id, m);
        }
        c
    }

    /// The data dir of master `id`.
    pub fn data_dir(&self, id: u64) -> PathBuf {
        self.dir.path().join(format!("m{id}"))
    }

    fn config(&self, id: u64) -> MasterConfig {
        let peers = self
            .addrs
            .iter()
            .map(|(i, a)| (*i, a.to_string()))
            .collect();
        let mut cfg = MasterConfig::new(id, self.data_dir(id), peers);
        (self.tune)(&mut cfg);
        cfg
    }

    /// Stops master `id` (its server and Raft), as a crash would, keeping its data dir.
    pub async fn kill(&mut self, id: u64) {
        if let Some(m) = self.masters.remove(&id) {
            m.stop().await;
        }
    }

    /// Starts master `id` again from its data dir, on its old address.
    pub async fn restart(&mut self, id: u64) {
        let addr = self.addrs[&id];
        let listener = eventually("the old port to be free", || async move {
            TcpListener::bind(addr).await.ok()
        })
        .await;
        let m = Master::start_on(self.config(id), listener).await.unwrap();
        self.masters.insert(id, m);
    }

    /// The leader as every running master agrees on it.
    pub async fn leader(&self) -> u64 {
        eventually("a leader all running masters agree on", || async {
            let mut seen = None;
            for m in self.masters.values() {
                let l = m.node.raft.metrics().borrow().current_leader?;
                if !self.masters.contains_key(&l) || seen.is_some_and(|s| s != l) {
                    return None;
                }
                seen = Some(l);
            }
            seen
        })
        .await
    }

    /// A running master other than `not`.
    pub fn other_than(&self, not: u64) -> u64 {
        *self
            .masters
            .keys()
            .find(|id| **id != not)
            .expect("another running master")
    }

    /// A client of master `id`.
    pub async fn client(&self, id: u64) -> WeirClient<Channel> {
        let addr = self.addrs[&id];
        WeirClient::connect(format!("http://{addr}")).await.unwrap()
    }

    /// App names in master `id`'s own applied state (no Raft round trip).
    pub async fn local_apps(&self, id: u64) -> Vec<String> {
        self.masters[&id]
            .node
            .state
            .read(|d| d.state.apps.keys().cloned().collect())
            .await
    }

    /// Master `id`'s last applied log index.
    pub fn applied(&self, id: u64) -> u64 {
        self.masters[&id]
            .node
            .raft
            .metrics()
            .borrow()
            .last_applied
            .map_or(0, |l| l.index)
    }

    /// Stops every master.
    pub async fn stop(mut self) {
        let ids: Vec<u64> = self.masters.keys().copied().collect();
        for id in ids {
            self.kill(id).await;
        }
    }
}

/// Waits up to `limit` for every input of `sink.verify` operator `audit` of `app` to
/// end, then checks it saw each of `records` records exactly once.
pub async fn assert_audit_exact(
    client: &WeirClient<Channel>,
    app: &str,
    audit: &str,
    records: u64,
    limit: Duration,
) {
    let summaries = eventually_within("the audit sees every input end", limit, || {
        let mut client = client.clone();
        let (app, audit) = (app.to_string(), audit.to_string());
        async move { verify_done(&app_detail(&mut client, &app).await?, &audit) }
    })
    .await;
    let sum = |f: fn(&pb::VerifySummary) -> u64| summaries.iter().map(f).sum::<u64>();
    assert_eq!(sum(|s| s.duplicates), 0, "no record twice");
    assert_eq!(sum(|s| s.missing_below_max), 0, "no gap");
    assert_eq!(sum(|s| s.records), records, "every record exactly once");
    assert_eq!(sum(|s| s.distinct), records);
}

/// A benchmark binary's `main`: runs `bench` on a multi-threaded runtime when cargo
/// passes `--bench`, and does nothing otherwise (as under `cargo test --all-targets`).
pub fn bench_main<F: Future<Output = ()>>(name: &str, bench: impl FnOnce() -> F) {
    if !std::env::args().any(|a| a == "--bench") {
        println!("{name}: a benchmark; run it with cargo bench");
        return;
    }
    // `WEIR_BENCH_LOG=FILTER` (e.g. `info`): the in-process masters' and workers' logs
    // on stderr, to see where a figure's time went.
    if let Ok(filter) = std::env::var("WEIR_BENCH_LOG") {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_writer(std::io::stderr)
            .try_init();
    }
    // As `weir-worker` runs (`WEIR_HUGE_PAGES=1` keeps them, as `--huge-pages` does).
    if std::env::var_os("WEIR_HUGE_PAGES").is_none() {
        weir_worker::memory::no_transparent_huge_pages();
    }
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime")
        .block_on(bench());
}

/// A release binary of this workspace (`weir-master`, `weir-worker`) next to the
/// running bench executable; benches run the processes as users do.
pub fn release_binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the running executable");
    let dir = exe
        .parent()
        .and_then(|d| d.parent())
        .expect("target/release/deps");
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is missing: cargo build --release -p weir-master -p weir-worker",
        path.display()
    );
    path
}

/// A free TCP port on 127.0.0.1 (released again; another process could take it).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port on 127.0.0.1")
        .port()
}

/// Records the app's `sink.verify` PEs have seen so far.
pub fn audit_records(d: &pb::AppDetail) -> u64 {
    d.pes
        .iter()
        .filter_map(|p| p.verify)
        .map(|v| v.records)
        .sum()
}

/// A minimal valid spec for an app called `name`.
pub fn spec(name: &str) -> String {
    format!(
        "name: {name}\noperators:\n  - {{name: gen, kind: source.generator, params: {{count: 10}}}}\n  - {{name: out, kind: sink.verify}}\nstreams:\n  - {{from: gen, to: out}}\n"
    )
}

/// A submit request for [`spec`].
pub fn submit(name: &str) -> pb::SubmitAppRequest {
    submit_yaml(spec(name))
}

/// A submit request for the YAML spec `spec`.
pub fn submit_yaml(spec: String) -> pb::SubmitAppRequest {
    pb::SubmitAppRequest {
        spec,
        format: pb::SpecFormat::Yaml as i32,
        request_id: String::new(),
        signature: None,
    }
}

/// An upgrade request of `app` to the YAML spec `spec`, whatever its version.
pub fn upgrade_yaml(app: &str, spec: String) -> pb::UpgradeAppRequest {
    pb::UpgradeAppRequest {
        app: app.into(),
        spec,
        format: pb::SpecFormat::Yaml as i32,
        dry_run: false,
        expected_version: 0,
        request_id: String::new(),
        signature: None,
    }
}

/// Waits up to `limit` for upgrade operation `op` of `app` to end; returns it.
pub async fn operation_ended(
    client: &WeirClient<Channel>,
    app: &str,
    op: &str,
    limit: Duration,
) -> pb::UpgradeOperation {
    eventually_within("the upgrade ends", limit, || {
        let mut client = client.clone();
        let (app, op) = (app.to_string(), op.to_string());
        async move {
            let h = client
                .get_app_history(pb::GetAppHistoryRequest { app })
                .await
                .ok()?
                .into_inner();
            let o = h.operations.into_iter().find(|o| o.operation_id == op)?;
            assert_eq!(
                o.progress.is_some(),
                o.finished_at_ms == 0,
                "an operation shows its progress while it runs, only: {o:?}"
            );
            (o.finished_at_ms != 0).then_some(o)
        }
    })
    .await
}

/// Starts a worker in this process on fresh loopback ports, registered with `masters`.
pub async fn start_worker(id: &str, masters: &[SocketAddr]) -> weir_worker::node::Worker {
    start_worker_with(id, masters, |_| {}).await
}

/// [`start_worker`] with its config changed by `tune` first (declared GPUs, pools).
pub async fn start_worker_with(
    id: &str,
    masters: &[SocketAddr],
    tune: impl FnOnce(&mut weir_worker::agent::AgentConfig),
) -> weir_worker::node::Worker {
    let control = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let data = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mut cfg = worker_config(
        id,
        masters,
        control.local_addr().unwrap(),
        data.local_addr().unwrap(),
    );
    tune(&mut cfg);
    weir_worker::node::Worker::start_on(cfg, control, data)
        .await
        .unwrap()
}

/// The config of an in-process test worker: 8 declared cores, 16 GiB, no NVML.
pub fn worker_config(
    id: &str,
    masters: &[SocketAddr],
    control: SocketAddr,
    data: SocketAddr,
) -> weir_worker::agent::AgentConfig {
    weir_worker::agent::AgentConfig {
        worker_id: id.into(),
        masters: masters.iter().map(|a| a.to_string()).collect(),
        control_address: control.to_string(),
        data_address: data.to_string(),
        labels: BTreeMap::new(),
        pools: vec![],
        cluster_id: "weir".into(),
        cores: Some(8.0),
        memory_mb: Some(16384),
        declared_gpus: vec![],
        discover_nvml: false,
        checkpoint_dir: None,
        security: weir_security::Security::Off,
        push_progress: true,
        defer_snapshot_from: weir_worker::ops::window::DEFER_FROM,

        pull_from: Vec::new(),
    }
}

/// Waits up to `limit` for `check` (for conditions slower than [`DEADLINE`], such as a
/// million records through a debug build).
pub async fn eventually_within<T, F, Fut>(what: &str, limit: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The app as the master shows it (PEs with state, stats and verify summaries).
pub async fn app_detail(client: &mut WeirClient<Channel>, app: &str) -> Option<pb::AppDetail> {
    client
        .get_app(pb::GetAppRequest { app: app.into() })
        .await
        .ok()?
        .into_inner()
        .app
}

/// The app as the master shows it, asked again while the read is refused (a leader
/// just elected, or a loaded one, may not confirm its leadership at once).
pub async fn app_detail_read(client: &WeirClient<Channel>, app: &str) -> pb::AppDetail {
    eventually(&format!("{app} read"), || {
        let mut client = client.clone();
        async move { app_detail(&mut client, app).await }
    })
    .await
}

/// The `sink.verify` summaries of an app's PEs, once every one of them saw all its
/// inputs end.
pub fn verify_done(d: &pb::AppDetail, operator: &str) -> Option<Vec<pb::VerifySummary>> {
    let vs: Vec<pb::VerifySummary> = d
        .pes
        .iter()
        .filter(|p| p.pe.as_ref().is_some_and(|r| r.operator == operator))
        .map(|p| p.verify)
        .collect::<Option<_>>()?;
    (!vs.is_empty() && vs.iter().all(|v| v.inputs_ended)).then_some(vs)
}

/// Logs of the masters and workers a test runs in-process, when `WEIR_TEST_LOG` names
/// a filter (`WEIR_TEST_LOG=info`, `WEIR_TEST_LOG=weir_worker=debug`): a failure that
/// only shows under load can then be read after the fact. Off by default.
pub fn init_log() {
    if let Ok(filter) = std::env::var("WEIR_TEST_LOG") {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_test_writer()
            .try_init();
    }
}

/// Waits up to `limit` until exactly `n` workers are alive.
pub async fn workers_alive(client: &WeirClient<Channel>, n: usize, limit: Duration) {
    eventually_within("workers registered", limit, || {
        let mut client = client.clone();
        async move {
            let ws = client.list_workers(pb::ListWorkersRequest {}).await.ok()?;
            let alive = ws
                .into_inner()
                .workers
                .iter()
                .filter(|w| w.state == pb::WorkerState::Alive as i32)
                .count();
            (alive == n).then_some(())
        }
    })
    .await;
}

/// The window counts a `window.count` of `window_ms` must produce over generator
/// records `0..records` with `keys` keys: (key, window start) -> count.
pub fn expected_windows(records: u64, keys: u64, window_ms: i64) -> BTreeMap<(String, i64), u64> {
    let mut expected = BTreeMap::new();
    for id in 0..records {
        let t = weir_worker::ops::generator::BASE_EVENT_TIME_MS + id as i64;
        let start = t.div_euclid(window_ms) * window_ms;
        *expected
            .entry((format!("k{}", id % keys), start))
            .or_default() += 1;
    }
    expected
}

/// Asserts that the JSON lines a `sink.file` wrote after a window hold exactly
/// `expected`, no window twice.
pub fn assert_windows(text: &str, expected: &BTreeMap<(String, i64), u64>) {
    let mut got: BTreeMap<(String, i64), u64> = BTreeMap::new();
    for line in text.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let key = (
            v["key"].as_str().unwrap().to_string(),
            v["window_start"].as_i64().unwrap(),
        );
        let prev = got.insert(key.clone(), v["count"].as_u64().unwrap());
        assert!(prev.is_none(), "window {key:?} written twice");
    }
    if &got != expected {
        // Tens of thousands of windows: name the first differences, not both maps.
        let wrong: Vec<String> = expected
            .iter()
            .filter(|(k, n)| got.get(*k) != Some(*n))
            .map(|(k, n)| format!("{k:?}: {:?}, expected {n}", got.get(k)))
            .chain(
                got.iter()
                    .filter(|(k, _)| !expected.contains_key(*k))
                    .map(|(k, n)| format!("{k:?}: {n}, expected none")),
            )
            .collect();
        panic!(
            "window counts differ from the recomputation in {} of {} windows, first: {:?}",
            wrong.len(),
            expected.len(),
            &wrong[..wrong.len().min(10)]
        );
    }
}

/// Raw loopback TCP, bytes/s: `total` bytes over `conns` connections at once, 1 MiB
/// writes. The baseline the data-plane benches compare with, measured in their run.
pub async fn raw_tcp(total: u64, conns: u32) -> f64 {
    let start = std::time::Instant::now();
    let each: Vec<_> = (0..conns.max(1))
        .map(|_| tokio::spawn(raw_tcp_one(total / u64::from(conns.max(1)))))
        .collect();
    for t in each {
        t.await.expect("a raw TCP connection");
    }
    total as f64 / start.elapsed().as_secs_f64()
}

async fn raw_tcp_one(total: u64) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a loopback listener");
    let addr = l.local_addr().expect("its address");
    let reader = tokio::spawn(async move {
        let (mut s, _) = l.accept().await.expect("the connection");
        let mut buf = vec![0u8; 1 << 20];
        let mut n = 0u64;
        while n < total {
            let r = s.read(&mut buf).await.expect("a read");
            if r == 0 {
                break;
            }
            n += r as u64;
        }
    });
    let mut s = tokio::net::TcpStream::connect(addr)
        .await
        .expect("a connection");
    let chunk = vec![7u8; 1 << 20];
    let mut sent = 0u64;
    while sent < total {
        s.write_all(&chunk).await.expect("a write");
        sent += chunk.len() as u64;
    }
    reader.await.expect("the reader");
}

/// Master timing for the upgrade benches: 100 ms heartbeats and a 50 ms reconcile
/// loop, so phases are not paced by the defaults.
pub fn upgrade_bench_timing(cfg: &mut MasterConfig) {
    cfg.worker_heartbeat = Duration::from_millis(100);
    cfg.reconcile_interval = Duration::from_millis(50);
}

/// A `/proc/<pid>/status` figure in MB, e.g. `VmHWM:` (peak RSS) or `VmRSS:`; `pid`
/// `None` is this process. 0 when it cannot be read.
pub fn status_mb(pid: Option<u32>, field: &str) -> f64 {
    let path = pid.map_or_else(
        || "/proc/self/status".into(),
        |p| format!("/proc/{p}/status"),
    );
    std::fs::read_to_string(path)
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}
