//! Online upgrades of a keyed window holding large state, per state size and kind,
//! with pre-copy (the default: successors load the last checkpoint while the old PEs
//! run, follow their changes in rounds, and take only the last delta at the switch)
//! and without it (`MasterConfig::precopy` off: the whole state moves at the switch
//! barrier), the baseline, measured in the same run.
//!
//! One master and two in-process workers on loopback (real gRPC, Raft and TCP). The
//! app: `gen` (2 PEs, 300,000 records/s in all, keys cycling over enough keys for the
//! state size, wall-clock event times) -hash-> `win` (`window.count`, windows of a
//! day, so that none closes during a run: a closing window emits every key at once,
//! which holds the stream for seconds at 1 GB whatever the upgrade does; until
//! 2026-12-07 they were 10 minutes long, and runs that crossed a boundary measured
//! that close) -> `views`; and `gen` -> `sample` (`filter where: id % 300 == 0`) -> `tag`
//! -> `lat` (`sink.tcp` read here). A window that blocks its producers stalls the
//! sample path too, so the gaps at `lat` show the stall. Per case it prints: the
//! longest gap at `lat` during the upgrade next to the steady one, latency p50/p99
//! steady vs during, bytes of state the successors took before the switch (pre-copy
//! and rounds) and at it, total time, and this process's RSS.
//!
//! An upgrade that does not complete (rolled back) is reported with its reason, and the
//! run goes on with the next kind. Between two kinds it waits for two checkpoints after
//! the upgrade, then 3 s, so that the next kind's steady window is steady.
//!
//! `WEIR_BENCH_PROCESSES=1` runs the same through the real processes instead:
//! `weir-master --dev` and two `weir-worker` processes (release builds: `cargo build
//! --release -p weir-master -p weir-worker` first), with the binaries' defaults but
//! for the settings the in-process cluster also changes (worker timeout 1.5 s,
//! checkpoint timeout 60 s, each worker declaring 8 cores and 16 GiB). The in-process
//! master also heartbeats every 100 ms and reconciles every 50 ms, which the binary
//! does not expose (its defaults: 500 and 250 ms; progress is pushed, so they matter
//! less). RSS is then each worker process's, and the worker loss is a `SIGKILL`.
//!
//! With pre-copy it then stops one worker (worker timeout 1.5 s) and reports the time
//! from the loss to the first record generated after it reaching `lat`, and to every PE
//! running again after a committed recovery (which restores the last checkpoint: its
//! whole snapshots and the increments over them).
//!
//! `WEIR_BENCH_STATE_MB` (default `10,100`) picks the sizes (MB of window snapshot in
//! all); `WEIR_BENCH_HANDOFF` (`precopy` or `whole`) runs one hand-off only;
//! `WEIR_BENCH_MEMORY_MB` the window PEs' memory request (default twice the state);
//! with `WEIR_BENCH_LOG` (a log filter) it also lists the gaps at `lat` longer than
//! `WEIR_BENCH_GAP_MS` (default 100), from `t0`, to line up with the log, and the
//! moments all async threads stopped or one stopped parking (`weir_tests::stalls`;
//! through the processes: the moments the sink got nothing for 1.5 s, with what each
//! worker's threads were doing;
//! `WEIR_BENCH_GDB=1` adds every thread's stack, which stops the process for seconds:
//! figures after it are not comparable). Run with `cargo bench -p weir-tests --bench upgrade_state`; figures go to
//! BENCHMARKS.md. Without `--bench` it does nothing.

use std::time::{Duration, Instant};
use weir_master::server::MasterConfig;
use weir_proto::v1 as pb;
use weir_tests::arrivals::{listen, unix_ms, window};
use weir_tests::{app_detail, eventually_within, start_worker, status_mb};

/// A client of the master's API.
type Client = pb::weir_client::WeirClient<tonic::transport::Channel>;

// The allocator the worker binary runs with (worker/src/main.rs): the workers in this
// process are measured as users run them. (Until 2026-12-04 these benches ran on
// glibc's malloc, whose arena locks made frees of a large state stall other PEs.)
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

const RATE: u64 = 300_000;
/// Bytes one key takes in a window snapshot besides the key itself (window bounds,
/// key length, count).
const SLOT_BYTES: u64 = 29;

/// How many keys (`k0`, `k1`, ...: the generator's, unpadded) make `bytes` of window
/// snapshot.
fn keys_for(bytes: u64) -> u64 {
    let (mut keys, mut total) = (0u64, 0u64);
    let mut digits = 1;
    let mut next_width_at = 10;
    loop {
        if keys == next_width_at {
            digits += 1;
            next_width_at *= 10;
        }
        let slot = SLOT_BYTES + 1 + digits;
        // Whole decades at once: the 1 GB case has 27 M keys.
        let n = (next_width_at - keys).min((bytes.saturating_sub(total)) / slot);
        if n == 0 {
            return keys;
        }
        keys += n;
        total += n * slot;
    }
}
const LIMIT: Duration = Duration::from_secs(900);
const STEADY: Duration = Duration::from_secs(3);

fn tuned(cfg: &mut MasterConfig) {
    weir_tests::upgrade_bench_timing(cfg);
    cfg.worker_timeout = Duration::from_millis(1500);
    cfg.checkpoint_timeout = Duration::from_secs(60);
}

fn whole(cfg: &mut MasterConfig) {
    tuned(cfg);
    cfg.precopy = false;
}

/// The app; `memory_mb` per window PE (a successor beside one of its predecessors
/// pre-copies only what fits its request: `request::precopy_fits`).
fn text(keys: u64, win: u32, cpu: f64, memory_mb: u64, sink: &str) -> String {
    format!(
        r#"
name: big
checkpoint_interval_ms: 1000
operators:
  - {{name: gen, kind: source.generator, parallelism: 2, params: {{rate: {RATE}, keys: {keys}, payload_bytes: 0, event_time: wall}}}}
  - {{name: sample, kind: filter, parallelism: 2, params: {{where: "id % 300 == 0"}}}}
  - {{name: tag, kind: map, parallelism: 2, params: {{set: {{t: ts}}}}}}
  - {{name: lat, kind: sink.tcp, params: {{address: "{sink}"}}}}
  - {{name: win, kind: window.count, parallelism: {win}, params: {{size_ms: 86400000}}, resources: {{cpu: {cpu}, memory_mb: {memory_mb}}}}}
  - {{name: views, kind: sink.null}}
streams:
  - {{from: gen, to: sample}}
  - {{from: sample, to: tag}}
  - {{from: tag, to: lat, partitioning: round_robin}}
  - {{from: gen, to: win, partitioning: hash}}
  - {{from: win, to: views, partitioning: round_robin}}
"#
    )
}

/// The workers of the window's PEs, by index (the newest revision's, during an
/// upgrade).
fn window_workers(d: &pb::AppDetail) -> Vec<String> {
    let mut pes: Vec<(&str, u32, &str)> = d
        .pes
        .iter()
        .filter_map(|p| {
            let r = p.pe.as_ref().filter(|r| r.operator == "win")?;
            Some((r.revision.as_str(), r.index, p.worker_id.as_str()))
        })
        .collect();
    pes.sort_unstable();
    // One revision after the upgrade: its PEs in index order.
    pes.into_iter().map(|(_, _, w)| w.to_string()).collect()
}

/// Waits until two checkpoints begun after now have completed, then [`STEADY`]: the
/// next kind's steady window (the [`STEADY`] before it) then follows the new PEs'
/// first increments and the old ones' memory handed back, which are the upgrade's
/// cost and not the steady state's. (Until 2026-12-07 it only waited [`STEADY`]: the
/// replacement after a 1 GB rescale measured a steady p99 of 14-28 ms against 3-4 ms
/// before the rescale, a ratio flattering to it.)
async fn settle(client: &Client) {
    let now = |mut client: Client| async move {
        let ck = client
            .list_checkpoints(pb::ListCheckpointsRequest { app: "big".into() })
            .await
            .ok()?
            .into_inner();
        let done = ck.checkpoints.last().map_or(0, |c| c.checkpoint_id);
        Some((done, ck.in_flight_id.max(done)))
    };
    let (_, begun) =
        eventually_within("the checkpoints are listed", LIMIT, || now(client.clone())).await;
    eventually_within("two checkpoints after the upgrade", LIMIT, || {
        let client = client.clone();
        async move { now(client).await.filter(|(done, _)| *done >= begun + 2) }
    })
    .await;
    tokio::time::sleep(STEADY).await;
}

/// The window's bytes in the newest complete checkpoint: what restoring its pieces
/// loads (whole snapshots and the increments over them). While every record brings a
/// new key, as while the state fills, the increments hold only new slots and this is
/// the state's size.
async fn window_bytes(client: &mut Client) -> Option<u64> {
    let ck = client
        .list_checkpoints(pb::ListCheckpointsRequest { app: "big".into() })
        .await
        .ok()?
        .into_inner();
    let last = ck.checkpoints.last()?;
    Some(
        last.pieces
            .iter()
            .filter(|p| p.pe.starts_with("win@"))
            .map(|p| p.restore_bytes.max(p.size_bytes))
            .sum(),
    )
}

/// Where the master and the two workers run (`WEIR_BENCH_PROCESSES`).
enum Deployment {
    /// In this process: one master and two workers on its runtime.
    InProcess {
        cluster: weir_tests::Cluster,
        workers: Vec<weir_worker::node::Worker>,
    },
    /// `weir-master --dev` and two `weir-worker` processes.
    Processes {
        addr: String,
        master: tokio::process::Child,
        /// `w1`, `w2`.
        workers: Vec<tokio::process::Child>,
        _dir: tempfile::TempDir,
    },
}

impl Deployment {
    async fn start(precopy: bool) -> Self {
        if std::env::var_os("WEIR_BENCH_PROCESSES").is_none() {
            let cluster =
                weir_tests::Cluster::start_tuned(1, if precopy { tuned } else { whole }).await;
            cluster.leader().await;
            let masters: Vec<_> = cluster.addrs.values().copied().collect();
            let workers = vec![
                start_worker("w1", &masters).await,
                start_worker("w2", &masters).await,
            ];
            return Deployment::InProcess { cluster, workers };
        }
        let dir = tempfile::tempdir().expect("a temporary directory");
        let addr = format!("127.0.0.1:{}", weir_tests::free_port());
        // The processes log as `WEIR_BENCH_LOG` says, to this process's stderr.
        let log = std::env::var("WEIR_BENCH_LOG").unwrap_or_else(|_| "error".into());
        let mut master = tokio::process::Command::new(weir_tests::release_binary("weir-master"));
        master
            .args(["--dev", "--insecure", "--listen", &addr, "--data-dir"])
            .arg(dir.path().join("m"))
            .args([
                "--worker-timeout-ms",
                "1500",
                "--checkpoint-timeout-ms",
                "60000",
            ])
            .env("RUST_LOG", &log)
            .kill_on_drop(true);
        if !precopy {
            master.arg("--no-precopy");
        }
        let master = master.spawn().expect("weir-master starts");
        let workers = ["w1", "w2"]
            .iter()
            .map(|w| {
                let port = || format!("127.0.0.1:{}", weir_tests::free_port());
                tokio::process::Command::new(weir_tests::release_binary("weir-worker"))
                    .args(["--id", w, "--master", &addr, "--no-nvml", "--insecure"])
                    .args(["--control-address", &port(), "--data-address", &port()])
                    .args(["--cores", "8", "--memory-mb", "16384", "--data-dir"])
                    .arg(dir.path().join(w))
                    .env("RUST_LOG", &log)
                    .kill_on_drop(true)
                    .spawn()
                    .expect("weir-worker starts")
            })
            .collect();
        Deployment::Processes {
            addr,
            master,
            workers,
            _dir: dir,
        }
    }

    async fn client(&self) -> Client {
        match self {
            Deployment::InProcess { cluster, .. } => cluster.client(1).await,
            Deployment::Processes { addr, .. } => {
                let addr = format!("http://{addr}");
                eventually_within("the master answers", LIMIT, || {
                    let addr = addr.clone();
                    async move { pb::weir_client::WeirClient::connect(addr).await.ok() }
                })
                .await
            }
        }
    }

    /// The RSS to report, MB: this process's, or each worker process's.
    fn rss(&self) -> String {
        match self {
            Deployment::InProcess { .. } => format!("{}", status_mb(None, "VmRSS:") as u64),
            Deployment::Processes { workers, .. } => workers
                .iter()
                .map(|w| format!("{}", status_mb(w.id(), "VmRSS:") as u64))
                .collect::<Vec<_>>()
                .join("+"),
        }
    }

    /// Peak RSS so far, MB, as [`Deployment::rss`].
    fn peak(&self) -> String {
        match self {
            Deployment::InProcess { .. } => format!("{:.0}", status_mb(None, "VmHWM:")),
            Deployment::Processes { workers, .. } => workers
                .iter()
                .map(|w| format!("{:.0}", status_mb(w.id(), "VmHWM:")))
                .collect::<Vec<_>>()
                .join(" and "),
        }
    }

    /// Loses worker `w2`: stopped in process, killed (`SIGKILL`) as a process.
    async fn lose_worker(&mut self) {
        match self {
            Deployment::InProcess { workers, .. } => workers.pop().expect("w2").stop().await,
            Deployment::Processes { workers, .. } => {
                let mut w = workers.pop().expect("w2");
                let _ = w.kill().await;
            }
        }
    }

    async fn stop(self) {
        match self {
            Deployment::InProcess { cluster, workers } => {
                for w in workers {
                    w.stop().await;
                }
                cluster.stop().await;
            }
            Deployment::Processes {
                mut master,
                workers,
                ..
            } => {
                for mut w in workers {
                    let _ = w.kill().await;
                }
                let _ = master.kill().await;
            }
        }
    }
}

async fn case(size_mb: u64, precopy: bool) {
    let mut deployed = Deployment::start(precopy).await;
    let mut client = deployed.client().await;
    weir_tests::workers_alive(&client, 2, LIMIT).await;
    let (sink, arrivals) = listen().await;
    // Through the processes, with the log: what the workers do when the sink is quiet.
    let _quiet = match (std::env::var_os("WEIR_BENCH_LOG"), &deployed) {
        (Some(_), Deployment::Processes { workers, .. }) => {
            let pids = ["w1", "w2"]
                .iter()
                .zip(workers)
                .filter_map(|(n, w)| Some((n.to_string(), w.id()?)))
                .collect();
            Some(weir_tests::stalls::watch_arrivals(arrivals.clone(), pids))
        }
        _ => None,
    };
    let keys = keys_for(size_mb * 1_000_000);
    // What a window PE holds at most: its share of the state in memory, and while it
    // pre-copies, its predecessors' pieces (half the snapshot each, two at most).
    // `WEIR_BENCH_MEMORY_MB` sets it instead (below the state, successors beside a
    // predecessor take the state at the switch).
    let memory_mb = std::env::var("WEIR_BENCH_MEMORY_MB")
        .ok()
        .and_then(|m| m.parse().ok())
        .unwrap_or((2 * size_mb).max(64));
    client
        .submit_app(weir_tests::submit_yaml(text(
            keys, 2, 0.5, memory_mb, &sink,
        )))
        .await
        .unwrap();
    let target = size_mb * 1_000_000 * 95 / 100;
    let filled = Instant::now();
    let bytes = eventually_within("the window state is filled", LIMIT, || {
        let mut client = client.clone();
        async move { window_bytes(&mut client).await.filter(|b| *b >= target) }
    })
    .await;
    eprintln!(
        "{size_mb} MB: {bytes} bytes of window state after {:.0} s",
        filled.elapsed().as_secs_f64()
    );
    tokio::time::sleep(STEADY).await;
    let kinds = [
        (
            "rescale the window 2 -> 3",
            text(keys, 3, 0.5, memory_mb, &sink),
        ),
        (
            "replace the window (new resources)",
            text(keys, 3, 0.25, memory_mb, &sink),
        ),
    ];
    for (name, spec) in kinds {
        let placed_before = app_detail(&mut client, "big")
            .await
            .map(|d| window_workers(&d))
            .unwrap_or_default();
        let steady_from = unix_ms() - STEADY.as_millis() as i64;
        let t0 = unix_ms();
        let started = Instant::now();
        let r = client
            .upgrade_app(weir_tests::upgrade_yaml("big", spec))
            .await
            .unwrap()
            .into_inner();
        let op = weir_tests::operation_ended(&client, "big", &r.operation_id, LIMIT).await;
        let total = started.elapsed().as_millis();
        let t1 = unix_ms();
        if op.phase != pb::UpgradePhase::Done as i32 {
            // Reported and skipped rather than ending the run: the other kinds and the
            // worker loss still measure (a live worker marked lost rolls an upgrade
            // back: BENCHMARKS.md, issue 22).
            println!(
                "{:>6} {:<9} {:<36} did not complete ({:?}): {}",
                format!("{size_mb} MB"),
                if precopy { "pre-copy" } else { "whole" },
                name,
                pb::UpgradePhase::try_from(op.phase).unwrap_or(pb::UpgradePhase::Unspecified),
                op.reason
            );
            tokio::time::sleep(STEADY).await;
            continue;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        if std::env::var_os("WEIR_BENCH_LOG").is_some() {
            // To line the gaps up with the log's times.
            eprintln!(
                "{name}: t0 = {}.{:03} s since the epoch",
                t0 / 1000,
                t0 % 1000
            );
            // Gaps longer than this (`WEIR_BENCH_GAP_MS`, default 100) are listed.
            let gap_ms: i64 = std::env::var("WEIR_BENCH_GAP_MS")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(100);
            let (_, sp99, _, _) = window(&arrivals, steady_from, t0);
            let a = arrivals.lock().unwrap_or_else(|p| p.into_inner());
            let mut last = steady_from;
            for &(t, _) in a.iter().filter(|(t, _)| *t >= steady_from) {
                if t - last > gap_ms {
                    eprintln!(
                        "{name}: no arrival from t0+{} to t0+{} ms",
                        last - t0,
                        t - t0
                    );
                }
                last = t;
            }
            // And the records slower than twice the steady p99, by when they arrived.
            let slow: Vec<String> = a
                .iter()
                .filter(|(t, ts)| *t >= t0 && *t < t1 && t - ts > 2 * sp99)
                .map(|(t, ts)| format!("+{}:{}", t - t0, t - ts))
                .collect();
            eprintln!(
                "{name}: {} records slower than {} ms (at t0+ms:latency ms): {}",
                slow.len(),
                2 * sp99,
                slow.join(" ")
            );
        }
        let (sp50, sp99, sgap, _) = window(&arrivals, steady_from, t0);
        let (up50, up99, ugap, n) = window(&arrivals, t0, t1);
        assert!(n > 0, "{name}: records flowed during the upgrade");
        let d = app_detail(&mut client, "big").await.unwrap();
        let (before, at) = d
            .pes
            .iter()
            .filter(|p| p.pe.as_ref().is_some_and(|p| p.operator == "win"))
            .filter_map(|p| p.stats.as_ref())
            .fold((0, 0), |(b, a), s| {
                (b + s.state_precopied_bytes, a + s.state_barrier_bytes)
            });
        let res = op.result.clone().unwrap_or_default();
        println!(
            "{:>6} {:<9} {:<36} {:>4} {:>4} {:>8} {:>7} {:>9} {:>9} {:>10} {:>10} {:>7} {:>7}",
            format!("{size_mb} MB"),
            if precopy { "pre-copy" } else { "whole" },
            name,
            res.records_lost,
            res.records_duplicated,
            ugap,
            sgap,
            format!("{sp50}/{sp99}"),
            format!("{up50}/{up99}"),
            before / 1_000_000,
            format!("{:.2}", at as f64 / 1e6),
            total,
            deployed.rss(),
        );
        // A replacement keeps each PE's key groups: a successor placed on another
        // worker than its predecessor is a move of a stateful PE.
        let placed = window_workers(&d);
        let moved = if placed.len() == placed_before.len() {
            let n = placed
                .iter()
                .zip(&placed_before)
                .filter(|(a, b)| a != b)
                .count();
            format!(", {n} of {} moved to another worker", placed.len())
        } else {
            String::new()
        };
        println!(
            "{:>6} {name}: window PEs on {placed_before:?} -> {placed:?}{moved}",
            ""
        );
        if !res.successors_behind.is_empty() {
            println!(
                "{:>6} {name}: ready while still behind: {}",
                "",
                res.successors_behind.join("; ")
            );
        }
        settle(&client).await;
    }
    if precopy {
        // Recovery after a worker loss (the same machinery restores whole snapshots):
        // from the loss to the first record generated after it reaching the sink.
        let lost = unix_ms();
        deployed.lose_worker().await;
        let resumed = eventually_within("output resumes after the worker loss", LIMIT, || {
            let a = arrivals.lock().unwrap_or_else(|p| p.into_inner());
            let first = a.iter().find(|(_, ts)| *ts > lost).map(|(t, _)| *t);
            async move { first }
        })
        .await;
        // Recovered: a recovery committed since the loss (one may have happened while
        // the state filled) and every PE running again (its state restored: a PE
        // reports running only after its restore).
        let recovered = eventually_within("the app recovered", LIMIT, || {
            let mut client = client.clone();
            async move {
                let ck = client
                    .list_checkpoints(pb::ListCheckpointsRequest { app: "big".into() })
                    .await
                    .ok()?
                    .into_inner();
                let d = app_detail(&mut client, "big").await?;
                let running = d.pes.iter().all(|p| p.state == pb::PeState::Running as i32);
                let since = ck.recoveries.last().is_some_and(|r| r.at_ms as i64 >= lost);
                (since && running).then(unix_ms)
            }
        })
        .await;
        println!(
            "{:>6} worker loss (timeout 1.5 s): sink output resumed after {} ms, every PE restored and running after {} ms ({} MB of window state)",
            format!("{size_mb} MB"),
            resumed - lost,
            recovered - lost,
            bytes / 1_000_000
        );
    }
    println!("{:>6} peak RSS {} MB", "", deployed.peak());
    deployed.stop().await;
}

async fn run() {
    // The watchdog sees this process's threads: the workers' only when in it.
    if std::env::var_os("WEIR_BENCH_LOG").is_some()
        && std::env::var_os("WEIR_BENCH_PROCESSES").is_none()
    {
        weir_tests::stalls::watch(&tokio::runtime::Handle::current());
    }
    let sizes: Vec<u64> = std::env::var("WEIR_BENCH_STATE_MB")
        .unwrap_or_else(|_| "10,100".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    println!(
        "online upgrades with large window state at {RATE} records/s, 2 workers, release build, {}",
        if std::env::var_os("WEIR_BENCH_PROCESSES").is_some() {
            "weir-master and weir-worker processes (RSS: each worker's)"
        } else {
            "master and workers in this process (RSS: this process's)"
        }
    );
    println!(
        "{:>6} {:<9} {:<36} {:>4} {:>4} {:>8} {:>7} {:>9} {:>9} {:>10} {:>10} {:>7} {:>7}",
        "state",
        "hand-off",
        "kind",
        "lost",
        "dup",
        "stall ms",
        "base ms",
        "p50/p99 st",
        "p50/p99 up",
        "before MB",
        "at MB",
        "total ms",
        "RSS MB"
    );
    // `WEIR_BENCH_HANDOFF=precopy` or `whole`: one hand-off only (default both).
    let handoff = std::env::var("WEIR_BENCH_HANDOFF").unwrap_or_default();
    for size in sizes {
        for precopy in [true, false] {
            if handoff.is_empty() || (handoff == "precopy") == precopy {
                case(size, precopy).await;
            }
        }
    }
}

fn main() {
    weir_tests::bench_main("upgrade_state", run);
}
