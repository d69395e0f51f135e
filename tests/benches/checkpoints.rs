//! Checkpoint costs, measured on one master and in-process workers on loopback (real
//! gRPC, real Raft, snapshots on disk and replicated between workers):
//!
//! 1. throughput of the same unpaced app with checkpoints every second vs none (the
//!    baseline, measured in the same run, alternating);
//! 2. time from killing the worker that runs every PE of a paced app (100 k records/s)
//!    to its output resuming on the survivors: detection, recovery committed, output;
//! 3. checkpoint duration, size and barrier alignment at ~1 MB and ~100 MB of window
//!    state.
//!
//! Correctness is asserted (exact counts); speed only printed. Run with
//! `cargo bench -p weir-tests --bench checkpoints [-- throughput|recovery|state]`;
//! figures go to BENCHMARKS.md. Without cargo bench's `--bench` argument (as under
//! `cargo test --all-targets`) it does nothing.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tonic::transport::Channel;
use weir_master::server::MasterConfig;
use weir_proto::v1 as pb;
use weir_proto::v1::weir_client::WeirClient;
use weir_tests::{app_detail, eventually_within, start_worker, verify_done, Cluster};
use weir_worker::node::Worker;

// The allocator the worker binary runs with (worker/src/main.rs): the workers in this
// process are measured as users run them. (Until 2026-12-04 these benches ran on
// glibc's malloc, whose arena locks made frees of a large state stall other PEs.)
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

const LIMIT: Duration = Duration::from_secs(300);

/// Records of each throughput run.
const THROUGHPUT_RECORDS: u64 = 40_000_000;
/// Throughput runs per setting (alternating off, on, off, on, ...).
const THROUGHPUT_ROUNDS: usize = 3;

/// The paced app of the recovery run.
const RECOVERY_RATE: u64 = 100_000;
const RECOVERY_RECORDS: u64 = 1_000_000;

/// Window state sizes aimed at, bytes.
const STATE_TARGETS: [u64; 3] = [1 << 20, 10 << 20, 100 << 20];
/// Bytes of one (key, window) entry in a window snapshot besides the key (end, start,
/// key length, tag, count).
const ENTRY_BYTES: u64 = 8 + 8 + 4 + 1 + 8;
/// Checkpoints measured once the state is full, per size.
const STATE_SAMPLES: usize = 5;

fn steady(cfg: &mut MasterConfig) {
    cfg.worker_heartbeat = Duration::from_millis(100);
    cfg.worker_timeout = Duration::from_secs(3);
    cfg.reconcile_interval = Duration::from_millis(100);
}

fn quick_loss(cfg: &mut MasterConfig) {
    cfg.worker_heartbeat = Duration::from_millis(100);
    cfg.worker_timeout = Duration::from_millis(500);
    cfg.reconcile_interval = Duration::from_millis(100);
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

async fn submit(client: &mut WeirClient<Channel>, spec: String) {
    client
        .submit_app(pb::SubmitAppRequest {
            spec,
            format: pb::SpecFormat::Yaml as i32,
            request_id: String::new(),
            signature: None,
        })
        .await
        .unwrap();
}

async fn workers(client: &WeirClient<Channel>) -> Vec<pb::WorkerView> {
    client
        .clone()
        .list_workers(pb::ListWorkersRequest {})
        .await
        .map(|r| r.into_inner().workers)
        .unwrap_or_default()
}

async fn workers_alive(client: &WeirClient<Channel>, n: usize) {
    weir_tests::workers_alive(client, n, LIMIT).await;
}

async fn checkpoints(client: &WeirClient<Channel>, app: &str) -> pb::ListCheckpointsResponse {
    client
        .clone()
        .list_checkpoints(pb::ListCheckpointsRequest { app: app.into() })
        .await
        .unwrap()
        .into_inner()
}

/// The app's PEs as the in-process workers report them right now (no heartbeat delay).
fn local_pes(ws: &[Worker], app: &str) -> Vec<pb::PeReport> {
    ws.iter()
        .flat_map(|w| w.runtime.report())
        .filter(|p| p.app == app)
        .collect()
}

fn of<'a>(pes: &'a [pb::PeReport], op: &str) -> impl Iterator<Item = &'a pb::PeReport> {
    let prefix = format!("{op}@");
    pes.iter().filter(move |p| p.pe.starts_with(&prefix))
}

/// Asserts the audit saw every one of `records` exactly once; returns the summaries'
/// record total.
async fn assert_exact(client: &WeirClient<Channel>, app: &str, records: u64) {
    let s = eventually_within("the audit sees every input end", LIMIT, || {
        let mut client = client.clone();
        async move { verify_done(&app_detail(&mut client, app).await?, "audit") }
    })
    .await;
    let sum = |f: fn(&pb::VerifySummary) -> u64| s.iter().map(f).sum::<u64>();
    assert_eq!(sum(|v| v.duplicates), 0, "{app}: no record twice");
    assert_eq!(sum(|v| v.missing_below_max), 0, "{app}: no gap");
    assert_eq!(sum(|v| v.records), records, "{app}: every record once");
    assert_eq!(sum(|v| v.distinct), records, "{app}: every record once");
}

// ---------------------------------------------------------------------------------
// 1. Throughput with and without checkpoints.

struct Throughput {
    secs: f64,
    checkpoints: u64,
    mean_ck_ms: f64,
    mean_align_ms: f64,
}

async fn throughput_run(name: &str, interval_ms: u64) -> Throughput {
    let c = Cluster::start_tuned(1, steady).await;
    c.leader().await;
    let masters: Vec<_> = c.addrs.values().copied().collect();
    let ws = vec![
        start_worker("w1", &masters).await,
        start_worker("w2", &masters).await,
    ];
    let mut client = c.client(1).await;
    workers_alive(&client, 2).await;
    let n = THROUGHPUT_RECORDS;
    submit(
        &mut client,
        format!(
            r#"
name: {name}
checkpoint_interval_ms: {interval_ms}
operators:
  - {{name: gen, kind: source.generator, parallelism: 2, params: {{count: {n}, keys: 1000, payload_bytes: 16}}}}
  - {{name: win, kind: window.count, parallelism: 2, params: {{size_ms: 100000}}}}
  - {{name: out, kind: sink.null}}
  - {{name: audit, kind: sink.verify, params: {{expect: {n}}}}}
streams:
  - {{from: gen, to: win, partitioning: hash}}
  - {{from: win, to: out, partitioning: round_robin}}
  - {{from: gen, to: audit, partitioning: round_robin}}
"#
        ),
    )
    .await;
    // Timed from the first record at the audit to every PE stopped, from the workers'
    // own reports (polled every 5 ms), so deployment is not part of it.
    let (mut first, mut seen) = (None, std::collections::BTreeMap::new());
    let deadline = Instant::now() + LIMIT;
    let end = loop {
        let pes = local_pes(&ws, name);
        let now = Instant::now();
        if first.is_none() && of(&pes, "audit").any(|p| p.verify.is_some_and(|v| v.records > 0)) {
            first = Some(now);
        }
        let stopped = pes.iter().all(|p| p.state == pb::PeState::Stopped as i32);
        seen.extend(pes.into_iter().map(|p| (p.pe.clone(), p)));
        if first.is_some() && seen.len() == 6 && stopped {
            break (now, seen.into_values().collect::<Vec<_>>());
        }
        assert!(now < deadline, "{name} did not finish");
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    // Each PE's last report: once the app finishes, the workers forget them.
    let (end, pes) = end;
    let secs = (end - first.unwrap()).as_secs_f64();
    assert_exact(&client, name, n).await;
    // Every record counted by a window once; 1,000 keys x one window per 100,000 ids
    // (event time advances 1 ms per id from a multiple of 100 s).
    let records_in = |op| -> u64 {
        of(&pes, op)
            .filter_map(|p| p.stats.clone())
            .map(|s| s.records_in)
            .sum()
    };
    assert_eq!(records_in("win"), n, "{name}: window input");
    assert_eq!(
        records_in("out"),
        1000 * n / 100_000,
        "{name}: window results"
    );
    let r = checkpoints(&client, name).await;
    let kept = &r.checkpoints;
    let mean = |f: fn(&pb::CheckpointInfo) -> u64| {
        kept.iter().map(f).sum::<u64>() as f64 / kept.len().max(1) as f64
    };
    let t = Throughput {
        secs,
        checkpoints: kept.last().map_or(0, |k| k.checkpoint_id),
        mean_ck_ms: mean(|k| k.completed_at_ms - k.started_at_ms),
        mean_align_ms: mean(|k| k.max_alignment_ms),
    };
    if interval_ms == 0 {
        assert_eq!(t.checkpoints, 0, "{name}: checkpoints off");
    }
    for w in ws {
        w.stop().await;
    }
    c.stop().await;
    t
}

async fn throughput() -> (f64, f64) {
    println!("== 1. throughput: gen(2, unpaced) -hash-> window.count(2) -> sink.null, gen -> sink.verify; 1 master, 2 workers");
    println!("   {THROUGHPUT_RECORDS} records per run, timed from the first record at the audit to every PE stopped");
    println!(
        "   {:<12} {:>7} {:>12} {:>12} {:>16} {:>14}",
        "checkpoints", "run", "seconds", "records/s", "ck completed", "mean ck / align"
    );
    let (mut off, mut on) = (Vec::new(), Vec::new());
    for round in 0..THROUGHPUT_ROUNDS {
        for interval in [0, 1000] {
            let name = format!("tp{interval}r{round}");
            let t = throughput_run(&name, interval).await;
            let rate = THROUGHPUT_RECORDS as f64 / t.secs;
            let ck = if interval == 0 {
                "-".to_string()
            } else {
                format!("{:.0} / {:.0} ms", t.mean_ck_ms, t.mean_align_ms)
            };
            println!(
                "   {:<12} {:>7} {:>12.2} {:>12.0} {:>16} {:>14}",
                if interval == 0 { "off" } else { "every 1 s" },
                round + 1,
                t.secs,
                rate,
                t.checkpoints,
                ck
            );
            if interval == 0 { &mut off } else { &mut on }.push(rate);
        }
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (off, on) = (median(&mut off), median(&mut on));
    println!(
        "   median: off {:.2} M records/s, every 1 s {:.2} M records/s: drop {:.1}% (target < 10%)",
        off / 1e6,
        on / 1e6,
        100.0 * (off - on) / off
    );
    (off, on)
}

// ---------------------------------------------------------------------------------
// 2. Recovery from the loss of the worker running everything.

async fn recovery() {
    let app = "rec";
    let n = RECOVERY_RECORDS;
    let rate = RECOVERY_RATE;
    println!();
    println!("== 2. worker loss: gen(2, {rate} records/s) -hash-> window.count(2) -> sink.file, gen -> sink.verify, all on w1; w2, w3 join; checkpoints every 1 s");
    println!("   master: heartbeat 100 ms, worker timeout 500 ms, reconcile 100 ms");
    let c = Cluster::start_tuned(1, quick_loss).await;
    c.leader().await;
    let masters: Vec<_> = c.addrs.values().copied().collect();
    let mut ws = vec![start_worker("w1", &masters).await];
    let mut client = c.client(1).await;
    workers_alive(&client, 1).await;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("windows.jsonl");
    submit(
        &mut client,
        format!(
            r#"
name: {app}
checkpoint_interval_ms: 1000
operators:
  - {{name: gen, kind: source.generator, parallelism: 2, params: {{count: {n}, rate: {rate}, keys: 20, payload_bytes: 8}}}}
  - {{name: win, kind: window.count, parallelism: 2, params: {{size_ms: 1000}}}}
  - {{name: out, kind: sink.file, params: {{path: "{}"}}}}
  - {{name: audit, kind: sink.verify, params: {{expect: {n}}}}}
streams:
  - {{from: gen, to: win, partitioning: hash}}
  - {{from: win, to: out, partitioning: round_robin}}
  - {{from: gen, to: audit, partitioning: round_robin}}
"#,
            out.display()
        ),
    )
    .await;
    eventually_within("every PE on w1", LIMIT, || {
        let mut client = client.clone();
        async move {
            let d = app_detail(&mut client, app).await?;
            (d.pes.len() == 6 && d.pes.iter().all(|p| p.worker_id == "w1")).then_some(())
        }
    })
    .await;
    ws.push(start_worker("w2", &masters).await);
    ws.push(start_worker("w3", &masters).await);
    workers_alive(&client, 3).await;
    // A complete checkpoint with every piece on w1 and a survivor, a couple of
    // seconds into the stream.
    let ck = eventually_within("a replicated checkpoint", LIMIT, || async {
        let r = checkpoints(&client, app).await;
        r.checkpoints.into_iter().rev().find(|c| {
            c.checkpoint_id >= 2
                && !c.pieces.is_empty()
                && c.pieces.iter().all(|p| p.replicas.len() >= 2)
        })
    })
    .await;
    let before: u64 = of(&local_pes(&ws, app), "audit")
        .filter_map(|p| p.verify)
        .map(|v| v.records)
        .sum();
    assert!(before < n, "killed mid-stream");

    let (kill, kill_ms) = (Instant::now(), unix_ms());
    ws.remove(0).stop().await;
    let stopped_in = kill.elapsed();

    // Poll every 10 ms: the master (worker state, recoveries, PE placement and reports,
    // which come with heartbeats) and the survivors' own reports (no delay).
    let (mut dead, mut recovery_seen, mut rec_at, mut placed) = (None, None, None, None);
    let (mut resumed_local, mut resumed_master) = (None, None);
    let mut rec_info = None;
    let deadline = Instant::now() + LIMIT;
    let after_resume = loop {
        let now = kill.elapsed();
        if dead.is_none() {
            let w1 = workers(&client)
                .await
                .into_iter()
                .find(|w| w.worker_id == "w1")
                .map(|w| w.state);
            if w1 == Some(pb::WorkerState::Dead as i32) {
                dead = Some(now);
            }
        }
        if recovery_seen.is_none() {
            let r = checkpoints(&client, app).await;
            if let Some(x) = r.recoveries.first() {
                recovery_seen = Some(now);
                rec_at = Some(Duration::from_millis(x.at_ms.saturating_sub(kill_ms)));
                rec_info = Some(x.clone());
            }
        }
        if resumed_master.is_none() {
            if let Some(d) = app_detail(&mut client, app).await {
                let audit: Vec<_> = d
                    .pes
                    .iter()
                    .filter(|p| p.pe.as_ref().is_some_and(|r| r.operator == "audit"))
                    .collect();
                if placed.is_none() && audit.iter().all(|p| p.worker_id != "w1") {
                    placed = Some(now);
                }
                if audit.iter().all(|p| {
                    p.worker_id != "w1" && p.stats.as_ref().is_some_and(|s| s.records_in > 0)
                }) {
                    resumed_master = Some(now);
                }
            }
        }
        let local = local_pes(&ws, app);
        let audit_in: u64 = of(&local, "audit")
            .filter_map(|p| p.stats.clone())
            .map(|s| s.records_in)
            .sum();
        if resumed_local.is_none() && audit_in > 0 {
            resumed_local = Some((kill.elapsed(), audit_in));
        }
        if let Some((t, r0)) = resumed_local {
            // The output rate over the second after it resumed.
            if kill.elapsed() >= t + Duration::from_secs(1) {
                let dt = (kill.elapsed() - t).as_secs_f64();
                break (audit_in - r0) as f64 / dt;
            }
        }
        assert!(
            Instant::now() < deadline,
            "output never resumed after the kill"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let ms = |d: Option<Duration>| d.map_or("-".into(), |d| format!("{} ms", d.as_millis()));
    let rec = rec_info.expect("a recovery is recorded");
    println!(
        "   checkpoint {} replicated ({} bytes) before the kill; audit had {before} records",
        ck.checkpoint_id, ck.size_bytes
    );
    println!(
        "   recovery: from checkpoint {}, operators {:?}, reason {:?}",
        rec.checkpoint_id, rec.operators, rec.reason
    );
    println!(
        "   {:<58} {:>10}",
        "from the kill (Worker::stop returned)",
        ms(Some(stopped_in))
    );
    println!(
        "   {:<58} {:>10}",
        "w1 dead: loss detected (ListWorkers)",
        ms(dead)
    );
    println!(
        "   {:<58} {:>10}",
        "recovery committed (RecoveryInfo.at_ms, leader clock)",
        ms(rec_at)
    );
    println!(
        "   {:<58} {:>10}",
        "recovery visible in ListCheckpoints",
        ms(recovery_seen)
    );
    println!(
        "   {:<58} {:>10}",
        "audit placed on a survivor (GetApp)",
        ms(placed)
    );
    println!(
        "   {:<58} {:>10}",
        "output resumed: new audit PE took records (worker, no delay)",
        ms(resumed_local.map(|r| r.0))
    );
    println!(
        "   {:<58} {:>10}",
        "output resumed as the master shows it (GetApp, heartbeat)",
        ms(resumed_master)
    );
    println!(
        "   output rate over the first second after resuming: {:.0} records/s (paced at {rate})",
        after_resume
    );
    let resumed = resumed_local.unwrap().0;
    println!(
        "   kill -> output resumed: {:.2} s (target < 2 s)",
        resumed.as_secs_f64()
    );
    assert_exact(&client, app, n).await;
    // Window results committed by sink.file: every record counted once, no window twice.
    let text = eventually_within("the window results are committed", LIMIT, || {
        let out = out.clone();
        async move {
            let t = std::fs::read_to_string(&out).ok()?;
            let total: u64 = t
                .lines()
                .map(|l| {
                    serde_json::from_str::<serde_json::Value>(l).unwrap()["count"]
                        .as_u64()
                        .unwrap()
                })
                .sum();
            (total >= n).then_some(t)
        }
    })
    .await;
    let mut windows = std::collections::BTreeSet::new();
    let mut total = 0;
    for line in text.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let key = (v["key"].to_string(), v["window_start"].as_i64().unwrap());
        assert!(windows.insert(key.clone()), "window {key:?} written twice");
        total += v["count"].as_u64().unwrap();
    }
    assert_eq!(total, n, "window counts add up to the records");
    println!("   exactly once after recovery: audit {n} distinct, 0 duplicates, 0 gaps; {} window results add up to {n}", windows.len());
    for w in ws {
        w.stop().await;
    }
    c.stop().await;
}

// ---------------------------------------------------------------------------------
// 3. Checkpoint duration vs state size.

/// Window snapshot bytes of keys `k0`..`k{keys-1}`, one window each.
fn window_bytes(keys: u64) -> u64 {
    (0..keys)
        .map(|i| ENTRY_BYTES + 2 + u64::from(i.checked_ilog10().unwrap_or(0)))
        .sum()
}

/// The number of keys whose window state is about `target` bytes.
fn keys_for(target: u64) -> u64 {
    let (mut lo, mut hi) = (1, target / ENTRY_BYTES);
    while lo < hi {
        let mid = (lo + hi) / 2;
        if window_bytes(mid) < target {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    lo
}

async fn state_size(target: u64) -> (u64, Vec<pb::CheckpointInfo>) {
    let keys = keys_for(target);
    let app = format!("state{keys}");
    let c = Cluster::start_tuned(1, steady).await;
    c.leader().await;
    let masters: Vec<_> = c.addrs.values().copied().collect();
    let ws = vec![
        start_worker("w1", &masters).await,
        start_worker("w2", &masters).await,
    ];
    let mut client = c.client(1).await;
    workers_alive(&client, 2).await;
    // One window far longer than the run (event time advances 1 ms per record): every
    // key stays open, so the state is `keys` counts once every key was seen, and stays
    // so while the generator runs on. Paced so the window keeps up with the load.
    submit(
        &mut client,
        format!(
            r#"
name: {app}
checkpoint_interval_ms: 1000
operators:
  - {{name: gen, kind: source.generator, parallelism: 2, params: {{rate: 500000, keys: {keys}, payload_bytes: 8}}}}
  - {{name: win, kind: window.count, parallelism: 2, params: {{size_ms: 1000000000000}}}}
  - {{name: out, kind: sink.null}}
streams:
  - {{from: gen, to: win, partitioning: hash}}
  - {{from: win, to: out, partitioning: round_robin}}
"#
        ),
    )
    .await;
    // Pieces are increments over earlier snapshots: the state is what a restore
    // loads (while the state fills every record is a new key, so the increments hold
    // only new slots and this is the state's size).
    let restore = |c: &pb::CheckpointInfo| -> u64 {
        c.pieces
            .iter()
            .map(|p| p.restore_bytes.max(p.size_bytes))
            .sum()
    };
    let full = window_bytes(keys) * 99 / 100;
    let cks = eventually_within("checkpoints of the full state", LIMIT, || {
        let client = client.clone();
        let app = app.clone();
        async move {
            let r = checkpoints(&client, &app).await;
            let big: Vec<_> = r
                .checkpoints
                .into_iter()
                .filter(|c| restore(c) >= full)
                .collect();
            (!big.is_empty()).then_some(big)
        }
    })
    .await;
    // The master keeps the last few; collect every one as it completes.
    let mut all = std::collections::BTreeMap::new();
    for c in cks {
        all.insert(c.checkpoint_id, c);
    }
    let deadline = Instant::now() + LIMIT;
    while all.len() < STATE_SAMPLES {
        for c in checkpoints(&client, &app).await.checkpoints {
            if restore(&c) >= full {
                all.insert(c.checkpoint_id, c);
            }
        }
        assert!(Instant::now() < deadline, "{app}: too few checkpoints");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for w in ws {
        w.stop().await;
    }
    c.stop().await;
    (keys, all.into_values().collect())
}

async fn state_sizes() {
    println!();
    println!("== 3. checkpoint duration vs state size: gen(2, 500 k records/s, unbounded) -hash-> window.count(2, one window open all run) -> sink.null");
    println!("   1 master, 2 workers, 2 copies of every snapshot; heartbeat 100 ms, reconcile 100 ms; {STATE_SAMPLES} checkpoints of the full state each");
    println!("   size: the state (what a restore loads); written: each checkpoint's pieces (increments over earlier snapshots, or whole)");
    println!(
        "   {:>10} {:>12} {:>30} {:>34} {:>34}",
        "keys",
        "size",
        "written MB (min / med / max)",
        "duration ms (min / median / max)",
        "max alignment ms (min / med / max)"
    );
    for target in STATE_TARGETS {
        let (keys, cks) = state_size(target).await;
        let stats = |f: &dyn Fn(&pb::CheckpointInfo) -> u64| {
            let mut v: Vec<u64> = cks.iter().map(f).collect();
            v.sort();
            format!("{} / {} / {}", v[0], v[v.len() / 2], v[v.len() - 1])
        };
        let size = cks
            .iter()
            .map(|c| {
                c.pieces
                    .iter()
                    .map(|p| p.restore_bytes.max(p.size_bytes))
                    .sum::<u64>()
            })
            .min()
            .unwrap();
        println!(
            "   {:>10} {:>9.1} MB {:>30} {:>34} {:>34}",
            keys,
            size as f64 / (1 << 20) as f64,
            stats(&|c| c.size_bytes >> 20),
            stats(&|c| c.completed_at_ms - c.started_at_ms),
            stats(&|c| c.max_alignment_ms),
        );
    }
}

fn peak_rss_mb() -> f64 {
    weir_tests::status_mb(None, "VmHWM:")
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!("checkpoints: a benchmark; run it with cargo bench");
        return;
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let start = Instant::now();
        let only = std::env::args().nth(1).filter(|a| !a.starts_with('-'));
        let run = |part: &str| only.as_deref().is_none_or(|o| o == part);
        if run("throughput") {
            throughput().await;
        }
        if run("recovery") {
            recovery().await;
        }
        if run("state") {
            state_sizes().await;
        }
        println!();
        println!(
            "total {:.0} s; peak RSS of the process {:.0} MB",
            start.elapsed().as_secs_f64(),
            peak_rss_mb()
        );
    });
}
