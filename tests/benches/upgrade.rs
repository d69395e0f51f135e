//! Online upgrade costs, per upgrade kind, on one master and two in-process workers on
//! loopback (real gRPC, real Raft, real TCP between the workers), with a paced app at
//! 100,000 records/s:
//!
//! - records lost and duplicated (the upgrade's own summary, from `sink.verify`, and the
//!   audit at the end of the run);
//! - the longest stall in sink output: the longest gap between records arriving at a
//!   TCP sink read by this process, during the upgrade, next to the same figure over
//!   the steady seconds before it (the baseline), and the summary's own figure;
//! - end-to-end latency (generator emission, wall clock, to arrival here) p50/p99
//!   steady vs during the upgrade;
//! - the upgrade's total time (accepted -> completed).
//!
//! The last two kinds insert a container PE (`weir-pe-score:v1`) on the latency path,
//! then replace its image by v2 (they need Docker; without it they are skipped, loudly).
//!
//! Speed is only printed. Run with `cargo bench -p weir-tests --bench upgrade`; figures
//! go to BENCHMARKS.md. Without `--bench` (as under `cargo test --all-targets`) it does
//! nothing.

use std::time::{Duration, Instant};
use weir_master::server::MasterConfig;
use weir_proto::v1 as pb;
use weir_tests::arrivals::{listen, unix_ms, window};
use weir_tests::{app_detail, eventually_within, start_worker, Cluster};

// The allocator the worker binary runs with (worker/src/main.rs): the workers in this
// process are measured as users run them. (Until 2026-12-04 these benches ran on
// glibc's malloc, whose arena locks made frees of a large state stall other PEs.)
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

const RATE: u64 = 100_000;
const LIMIT: Duration = Duration::from_secs(120);
/// Steady seconds before each upgrade (the baseline) and after it.
const STEADY: Duration = Duration::from_secs(3);

fn tuned(cfg: &mut MasterConfig) {
    weir_tests::upgrade_bench_timing(cfg);
    cfg.worker_timeout = Duration::from_secs(3);
}

/// One version of the app: the parts the upgrade kinds vary.
#[derive(Clone)]
struct App {
    tag: &'static str,
    win: u32,
    extra_ops: Vec<&'static str>,
    streams: Vec<&'static str>,
    sink: String,
}

impl App {
    fn text(&self) -> String {
        let mut s = format!(
            r#"
name: bench
checkpoint_interval_ms: 1000
operators:
  - {{name: gen, kind: source.generator, parallelism: 2, params: {{rate: {RATE}, keys: 1000, payload_bytes: 40, event_time: wall}}}}
  - {{name: tag, kind: map, parallelism: 2, params: {{set: {{tag: '"{tag}"', t: ts}}}}}}
  - {{name: win, kind: window.count, parallelism: {win}, params: {{size_ms: 1000}}}}
  - {{name: views, kind: sink.null}}
  - {{name: audit, kind: sink.verify}}
  - {{name: lat, kind: sink.tcp, params: {{address: "{sink}"}}}}
"#,
            tag = self.tag,
            win = self.win,
            sink = self.sink,
        );
        for o in &self.extra_ops {
            s.push_str(&format!("  - {o}\n"));
        }
        s.push_str("streams:\n");
        for st in &self.streams {
            s.push_str(&format!("  - {st}\n"));
        }
        s
    }
}

async fn run() {
    let c = Cluster::start_tuned(1, tuned).await;
    c.leader().await;
    let masters: Vec<_> = c.addrs.values().copied().collect();
    let workers = vec![
        start_worker("w1", &masters).await,
        start_worker("w2", &masters).await,
    ];
    let mut client = c.client(1).await;
    eventually_within("workers", LIMIT, || {
        let mut client = client.clone();
        async move {
            let n = client
                .list_workers(pb::ListWorkersRequest {})
                .await
                .ok()?
                .into_inner()
                .workers
                .len();
            (n == 2).then_some(())
        }
    })
    .await;
    let (sink, arrivals) = listen().await;
    let base = App {
        tag: "a",
        win: 2,
        extra_ops: vec![],
        streams: vec![
            "{from: gen, to: tag}",
            "{from: tag, to: audit, partitioning: round_robin}",
            "{from: tag, to: lat, partitioning: round_robin}",
            "{from: gen, to: win, partitioning: hash}",
            "{from: win, to: views, partitioning: round_robin}",
        ],
        sink,
    };
    client
        .submit_app(pb::SubmitAppRequest {
            spec: base.text(),
            format: pb::SpecFormat::Yaml as i32,
            request_id: String::new(),
            signature: None,
        })
        .await
        .unwrap();
    eventually_within("records at the latency sink", LIMIT, || {
        let n = arrivals.lock().unwrap().len();
        async move { (n > 0).then_some(()) }
    })
    .await;
    tokio::time::sleep(STEADY).await;

    // Each kind edits the previous version.
    let mut kinds: Vec<(&str, App)> = Vec::new();
    let mut v = base.clone();
    v.tag = "b";
    kinds.push(("replace an operator (map params)", v.clone()));
    v.extra_ops
        .push("{name: pre, kind: map, parallelism: 2, params: {set: {pre: '1'}}}");
    v.streams[0] = "{from: gen, to: pre}";
    v.streams.push("{from: pre, to: tag}");
    kinds.push(("insert an operator into a stream", v.clone()));
    v.extra_ops.clear();
    v.streams.pop();
    v.streams[0] = "{from: gen, to: tag}";
    kinds.push(("remove an operator", v.clone()));
    v.extra_ops.push("{name: audit2, kind: sink.verify}");
    v.streams
        .push("{from: tag, to: audit2, partitioning: round_robin}");
    kinds.push(("add a branch (second sink)", v.clone()));
    v.extra_ops.clear();
    v.streams.pop();
    kinds.push(("remove a branch", v.clone()));
    v.win = 3;
    kinds.push(("rescale the keyed window 2 -> 3", v.clone()));
    v.streams[0] = "{from: gen, to: tag, partitioning: round_robin}";
    kinds.push(("change partitioning (forward -> round robin)", v.clone()));
    // Container PEs (the example images, built here when Docker answers).
    if weir_tests::containers::docker_or_skip("upgrade bench: container kinds") {
        weir_tests::containers::pe_images(env!("CARGO_BIN_EXE_weir-pe-score"));
        v.extra_ops.push(
            "{name: score, kind: container, parallelism: 2, params: {image: \"weir-pe-score:v1\"}, resources: {cpu: 0.25, memory_mb: 64}}",
        );
        v.streams[2] = "{from: tag, to: score}";
        v.streams
            .push("{from: score, to: lat, partitioning: round_robin}");
        kinds.push(("insert a container PE (weir-pe-score:v1)", v.clone()));
        v.extra_ops[0] =
            "{name: score, kind: container, parallelism: 2, params: {image: \"weir-pe-score:v2\"}, resources: {cpu: 0.25, memory_mb: 64}}";
        kinds.push(("replace the container's image v1 -> v2", v.clone()));
    }

    println!("online upgrades at {RATE} records/s, 2 workers, release build");
    println!(
        "{:<46} {:>5} {:>5} {:>9} {:>9} {:>9} {:>13} {:>13} {:>8}",
        "kind",
        "lost",
        "dup",
        "stall ms",
        "base ms",
        "summ. ms",
        "p50/p99 st.",
        "p50/p99 upg.",
        "total ms"
    );
    for (name, app) in kinds {
        let steady_from = unix_ms() - STEADY.as_millis() as i64;
        let t0 = unix_ms();
        let started = Instant::now();
        let r = client
            .upgrade_app(pb::UpgradeAppRequest {
                app: "bench".into(),
                spec: app.text(),
                format: pb::SpecFormat::Yaml as i32,
                dry_run: false,
                expected_version: 0,
                request_id: String::new(),
                signature: None,
            })
            .await
            .unwrap()
            .into_inner();
        let op = eventually_within("the upgrade ends", LIMIT, || {
            let mut client = client.clone();
            let id = r.operation_id.clone();
            async move {
                let h = client
                    .get_app_history(pb::GetAppHistoryRequest {
                        app: "bench".into(),
                    })
                    .await
                    .ok()?
                    .into_inner();
                h.operations
                    .into_iter()
                    .find(|o| o.operation_id == id && o.finished_at_ms != 0)
            }
        })
        .await;
        let total = started.elapsed().as_millis();
        let t1 = unix_ms();
        assert_eq!(op.phase, pb::UpgradePhase::Done as i32, "{name}: {op:?}");
        // Let records in flight at the end of the upgrade arrive before measuring it.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let (sp50, sp99, sgap, _) = window(&arrivals, steady_from, t0);
        let (up50, up99, ugap, n) = window(&arrivals, t0, t1);
        assert!(n > 0, "{name}: records flowed during the upgrade");
        let res = op.result.unwrap_or_default();
        println!(
            "{:<46} {:>5} {:>5} {:>9} {:>9} {:>9} {:>13} {:>13} {:>8}",
            name,
            res.records_lost,
            res.records_duplicated,
            ugap,
            sgap,
            res.longest_stall_ms,
            format!("{sp50}/{sp99}"),
            format!("{up50}/{up99}"),
            total
        );
        tokio::time::sleep(STEADY).await;
    }
    // The audit over the whole run: nothing missing below what it saw a second ago,
    // nothing twice.
    let d = app_detail(&mut client, "bench").await.unwrap();
    let v: Vec<_> = d
        .pes
        .iter()
        .filter(|p| p.pe.as_ref().unwrap().operator == "audit")
        .filter_map(|p| p.verify)
        .collect();
    let (records, dup, missing) = (
        v.iter().map(|s| s.records).sum::<u64>(),
        v.iter().map(|s| s.duplicates).sum::<u64>(),
        v.iter().map(|s| s.missing_settled).sum::<u64>(),
    );
    println!(
        "audit over the run: {records} records, {dup} duplicated, {missing} missing (settled)"
    );
    assert_eq!((dup, missing), (0, 0));
    for w in workers {
        w.stop().await;
    }
    c.stop().await;
}

fn main() {
    weir_tests::bench_main("upgrade", run);
}
