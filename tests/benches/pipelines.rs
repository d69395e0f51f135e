//! Throughput of pipelines that compute, measured the way users run Weir: the release
//! `weir-master` (`--dev`) and one or two `weir-worker` processes on loopback, each
//! app submitted over gRPC and timed from submit to `FINISHED` (every PE stopped).
//! Per run: records/s over the whole run and in steady state (the input rate the
//! worker reports for the counted operator's PEs, median over the run), the
//! workers' CPU time per record (`/proc/<pid>/stat`) and their peak RSS (`VmHWM`).
//! Checkpoints every second, and off (`--checkpoint-interval-ms 0`).
//!
//! Next to them, measured in the same run: the same operators chained in this
//! process on one thread (no data plane, no master: what the operators alone cost),
//! and raw loopback TCP (bytes/s turned into records/s at the pipeline's record size).
//!
//! ```sh
//! cargo build --release -p weir-master -p weir-worker
//! cargo bench -p weir-tests --bench pipelines
//! ```
//! `WEIR_BENCH_RECORDS=N` sets the records per run (20,000,000 by default);
//! `WEIR_BENCH_WORKER=PATH` runs another `weir-worker` build (a baseline);
//! `WEIR_BENCH_REPS=N` the runs per case (3; the median is shown, and the highest
//! RSS); `WEIR_BENCH_ONLY=name,name` runs only those pipelines. Workers report PE
//! stats every 500 ms, so the steady rate needs runs of a few seconds.

use std::time::{Duration, Instant};
use weir_common::record::Batch;
use weir_common::spec::{parse_app, AppSpec, OperatorKind, SpecFormat};
use weir_proto::v1 as pb;
use weir_worker::ops::{Generator, Nexmark};
use weir_worker::runtime::kernel::{Kernel, Programs};

#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

const RECORDS: u64 = 20_000_000;

/// A pipeline: its name, its spec (`RECORDS` and `PAR` replaced; `GEN` or `BIDS` for
/// its source) and the operator whose input counts as done work.
struct Pipeline {
    name: &'static str,
    spec: &'static str,
    sink: &'static str,
}

impl Pipeline {
    /// Records reaching the counted operator: every generated record, or the bids of
    /// that many Nexmark events (events 4..50 of every 50).
    fn counted(&self, records: u64) -> u64 {
        if self.spec.contains("BIDS") {
            records / 50 * 46 + (records % 50).saturating_sub(4)
        } else {
            records
        }
    }
}

/// Nexmark bids of `RECORDS` events (the `table: bid` share of the event sequence).
const BIDS: &str = "{name: bids, kind: source.nexmark, parallelism: PAR, params: {table: bid, events: RECORDS, seed: 1}}";

const GEN: &str = "{name: gen, kind: source.generator, parallelism: PAR, params: {count: RECORDS, keys: 1000, payload_bytes: 84}}";

fn pipelines() -> Vec<Pipeline> {
    vec![
        Pipeline {
            name: "computed",
            spec: "operators:\n  - GEN\n  - {name: m1, kind: map, parallelism: PAR, params: {set: {k: \"mod(id, 1000)\", r: \"mod(id, 10)\"}}}\n  - {name: f, kind: filter, parallelism: PAR, params: {field: r, op: ne, value: 3}}\n  - {name: m2, kind: map, parallelism: PAR, params: {set: {k: \"add(k, 1)\"}, project: [id, k, payload]}}\n  - {name: out, kind: sink.null, parallelism: PAR}\nstreams:\n  - {from: gen, to: m1}\n  - {from: m1, to: f}\n  - {from: f, to: m2}\n  - {from: m2, to: out}\n",
            sink: "out",
        },
        Pipeline {
            name: "one-map",
            spec: "operators:\n  - GEN\n  - {name: m, kind: map, parallelism: PAR, params: {set: {r: \"mod(id, 10)\"}}}\n  - {name: out, kind: sink.null, parallelism: PAR}\nstreams:\n  - {from: gen, to: m}\n  - {from: m, to: out}\n",
            sink: "out",
        },
        Pipeline {
            name: "where",
            spec: "operators:\n  - GEN\n  - {name: f, kind: filter, parallelism: PAR, params: {where: \"mod(id, 10) != 3 and value > 100\"}}\n  - {name: out, kind: sink.null, parallelism: PAR}\nstreams:\n  - {from: gen, to: f}\n  - {from: f, to: out}\n",
            sink: "out",
        },
        Pipeline {
            name: "nexmark-q0",
            spec: "operators:\n  - BIDS\n  - {name: out, kind: sink.null, parallelism: PAR}\nstreams:\n  - {from: bids, to: out}\n",
            sink: "out",
        },
        Pipeline {
            name: "nexmark-q1",
            spec: "operators:\n  - BIDS\n  - {name: euros, kind: map, parallelism: PAR, params: {set: {price: \"price * 0.908\"}, project: [auction, bidder, price, date_time]}}\n  - {name: out, kind: sink.null, parallelism: PAR}\nstreams:\n  - {from: bids, to: euros}\n  - {from: euros, to: out}\n",
            sink: "out",
        },
        Pipeline {
            name: "nexmark-q2",
            spec: "operators:\n  - BIDS\n  - {name: selected, kind: filter, parallelism: PAR, params: {where: \"mod(auction, 123) == 0\"}}\n  - {name: fields, kind: map, parallelism: PAR, params: {project: [auction, price]}}\n  - {name: out, kind: sink.null, parallelism: PAR}\nstreams:\n  - {from: bids, to: selected}\n  - {from: selected, to: fields}\n  - {from: fields, to: out}\n",
            sink: "fields",
        },
        Pipeline {
            name: "nexmark-q5",
            spec: "operators:\n  - BIDS\n  - {name: by-auction, kind: key_by, parallelism: PAR, params: {field: auction}}\n  - {name: hot, kind: window.hop, parallelism: PAR, params: {size_ms: 10000, slide_ms: 2000}}\n  - {name: out, kind: sink.null, parallelism: PAR}\nstreams:\n  - {from: bids, to: by-auction}\n  - {from: by-auction, to: hot, partitioning: hash}\n  - {from: hot, to: out}\n",
            sink: "hot",
        },
        Pipeline {
            name: "nexmark-agg",
            spec: "operators:\n  - BIDS\n  - {name: by-auction, kind: key_by, parallelism: PAR, params: {field: auction}}\n  - {name: counts, kind: window.count, parallelism: PAR, params: {size_ms: 10000}}\n  - {name: out, kind: sink.null, parallelism: PAR}\nstreams:\n  - {from: bids, to: by-auction}\n  - {from: by-auction, to: counts, partitioning: hash}\n  - {from: counts, to: out}\n",
            sink: "counts",
        },
        Pipeline {
            name: "project-filter",
            spec: "operators:\n  - GEN\n  - {name: m, kind: map, parallelism: PAR, params: {project: [id, value, payload]}}\n  - {name: f, kind: filter, parallelism: PAR, params: {field: value, op: gt, value: 100}}\n  - {name: out, kind: sink.null, parallelism: PAR}\nstreams:\n  - {from: gen, to: m}\n  - {from: m, to: f}\n  - {from: f, to: out}\n",
            sink: "out",
        },
    ]
}

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn spec_text(p: &Pipeline, records: u64, par: u32) -> String {
    format!("name: {}\ntenant: bench\n{}", p.name, p.spec)
        .replace("GEN", GEN)
        .replace("BIDS", BIDS)
        .replace("RECORDS", &records.to_string())
        .replace("PAR", &par.to_string())
}

/// The worker binary: this workspace's, or `WEIR_BENCH_WORKER` (another build, e.g.
/// the commit before a change, to measure against in the same session).
fn worker_binary() -> std::path::PathBuf {
    std::env::var_os("WEIR_BENCH_WORKER")
        .map(Into::into)
        .unwrap_or_else(|| weir_tests::release_binary("weir-worker"))
}

/// A process's CPU seconds so far (user + system; clock ticks of 1/100 s).
fn cpu_secs(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces) close with ')'.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // utime and stime are fields 14 and 15 of the whole line: 12 and 13 after ')'.
    (ticks(11) + ticks(12)) / 100.0
}

/// What one run measured.
struct Run {
    total: f64,
    steady: f64,
    cpu_ns: f64,
    rss_mb: f64,
    placement: String,
}

/// One run: fresh processes, one app, timed.
async fn run(p: &Pipeline, records: u64, workers: usize, par: u32, checkpoints: bool) -> Run {
    let dir = tempfile::tempdir().unwrap();
    let master_addr = format!("127.0.0.1:{}", weir_tests::free_port());
    let interval = if checkpoints { "1000" } else { "0" };
    let mut procs = vec![
        tokio::process::Command::new(weir_tests::release_binary("weir-master"))
            .args([
                "--dev",
                "--insecure",
                "--listen",
                &master_addr,
                "--data-dir",
            ])
            .arg(dir.path().join("m"))
            .args(["--checkpoint-interval-ms", interval])
            .env("RUST_LOG", "error")
            .kill_on_drop(true)
            .spawn()
            .unwrap(),
    ];
    let names: Vec<String> = (1..=workers).map(|i| format!("w{i}")).collect();
    for w in &names {
        procs.push(
            tokio::process::Command::new(worker_binary())
                .args([
                    "--id",
                    w,
                    "--master",
                    &master_addr,
                    "--no-nvml",
                    "--insecure",
                ])
                .args([
                    "--control-address",
                    &format!("127.0.0.1:{}", weir_tests::free_port()),
                ])
                .args([
                    "--data-address",
                    &format!("127.0.0.1:{}", weir_tests::free_port()),
                ])
                .arg("--data-dir")
                .arg(dir.path().join(w))
                .env("RUST_LOG", "error")
                .kill_on_drop(true)
                .spawn()
                .unwrap(),
        );
    }
    let worker_pids: Vec<u32> = procs[1..].iter().filter_map(|c| c.id()).collect();
    let client = weir_tests::eventually_within("the workers", Duration::from_secs(60), || {
        let addr = master_addr.clone();
        async move {
            let mut c = pb::weir_client::WeirClient::connect(format!("http://{addr}"))
                .await
                .ok()?;
            let w = c.list_workers(pb::ListWorkersRequest {}).await.ok()?;
            (w.into_inner().workers.len() == workers).then_some(c)
        }
    })
    .await;
    let cpu0: f64 = worker_pids.iter().map(|p| cpu_secs(*p)).sum();
    let mut c = client.clone();
    let started = Instant::now();
    c.submit_app(weir_tests::submit_yaml(spec_text(p, records, par)))
        .await
        .unwrap();
    // The counted operator's input and input rate as the worker reports them (every
    // 500 ms): the median of the rates reported mid-run is the steady rate; where a
    // run is too short for one, the slope between the first reports past 20% and 80%.
    let counted = p.counted(records);
    let (lo, hi) = (counted / 5, counted * 4 / 5);
    let (mut at_lo, mut at_hi) = (None, None);
    let (mut last_seen, mut rates) = (0u64, Vec::new());
    let detail = loop {
        let d = weir_tests::app_detail(&mut c, p.name).await;
        let now = started.elapsed().as_secs_f64();
        if let Some(d) = d {
            let stats: Vec<&pb::PeStats> = d
                .pes
                .iter()
                .filter(|v| v.pe.as_ref().is_some_and(|r| r.operator == p.sink))
                .filter_map(|v| v.stats.as_ref())
                .collect();
            let seen: u64 = stats.iter().map(|s| s.records_in).sum();
            if seen != last_seen && seen > 0 && seen < counted {
                rates.push(stats.iter().map(|s| s.rate_in).sum::<f64>());
            }
            last_seen = seen;
            if at_lo.is_none() && seen >= lo {
                at_lo = Some((now, seen));
            }
            if at_hi.is_none() && seen >= hi {
                at_hi = Some((now, seen));
            }
            if d.summary.as_ref().map(|s| s.state) == Some(pb::AppState::Finished as i32) {
                break d;
            }
        }
        assert!(now < 900.0, "{} did not finish", p.name);
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let secs = started.elapsed().as_secs_f64();
    let cpu: f64 = worker_pids.iter().map(|p| cpu_secs(*p)).sum::<f64>() - cpu0;
    let rss_mb = worker_pids
        .iter()
        .map(|p| weir_tests::status_mb(Some(*p), "VmHWM:"))
        .sum();
    rates.retain(|r| *r > 0.0);
    rates.sort_by(f64::total_cmp);
    let steady = match (rates.get(rates.len() / 2), at_lo, at_hi) {
        (Some(r), ..) => *r,
        (None, Some((t0, n0)), Some((t1, n1))) if t1 > t0 => (n1 - n0) as f64 / (t1 - t0),
        _ => f64::NAN,
    };
    let placement = names
        .iter()
        .map(|w| {
            let n = detail.pes.iter().filter(|v| v.worker_id == *w).count();
            format!("{w}:{n}")
        })
        .collect::<Vec<_>>()
        .join(" ");
    for mut p in procs {
        let _ = p.start_kill();
        let _ = p.wait().await;
    }
    Run {
        total: counted as f64 / secs,
        steady,
        cpu_ns: cpu * 1e9 / counted as f64,
        rss_mb,
        placement,
    }
}

/// The pipeline's operators chained in this process, one thread: records/s and the
/// bytes of one record as the source makes it.
async fn in_process(spec: &AppSpec, records: u64) -> (f64, f64) {
    let ops = &spec.operators;
    let mut kernels = Vec::new();
    for op in &ops[1..] {
        let k = Kernel::build("bench", op, 0, 1, 1, &[], &Programs::default())
            .await
            .unwrap();
        kernels.push(k);
    }
    let mut source: Box<dyn FnMut() -> Option<Batch>> = match &ops[0].kind {
        OperatorKind::Generator(g) => {
            let mut p = g.clone();
            p.count = Some(records);
            let mut gen = Generator::new(p, 0, 0, 1);
            Box::new(move || gen.next_batch(4096))
        }
        OperatorKind::Nexmark(x) => {
            let mut p = x.clone();
            p.events = Some(records);
            let mut gen = Nexmark::new(p, 0, 0, 1);
            Box::new(move || gen.next_batch(4096))
        }
        other => panic!("in-process runs start at a generator, not {}", other.name()),
    };
    let (mut n, mut bytes) = (0u64, 0u64);
    let start = Instant::now();
    while let Some(mut b) = source() {
        n += b.len() as u64;
        bytes += b.encoded_len() as u64;
        for k in &mut kernels {
            match k.process(0, &b).await.unwrap() {
                Some(out) => b = out,
                None => break,
            }
        }
        std::hint::black_box(&b);
    }
    (
        n as f64 / start.elapsed().as_secs_f64(),
        bytes as f64 / n.max(1) as f64,
    )
}

/// The run of median total rate, with the median steady rate and CPU, and the
/// highest RSS of all.
fn median(mut runs: Vec<Run>) -> Run {
    let mid = runs.len() / 2;
    let mut steady: Vec<f64> = runs.iter().map(|r| r.steady).collect();
    let mut cpu: Vec<f64> = runs.iter().map(|r| r.cpu_ns).collect();
    steady.sort_by(f64::total_cmp);
    cpu.sort_by(f64::total_cmp);
    let rss = runs.iter().map(|r| r.rss_mb).fold(0.0, f64::max);
    runs.sort_by(|a, b| a.total.total_cmp(&b.total));
    let mut r = runs.swap_remove(mid);
    r.steady = steady[mid];
    r.cpu_ns = cpu[mid];
    r.rss_mb = rss;
    r
}

fn m(x: f64) -> String {
    format!("{:.2} M", x / 1e6)
}

async fn bench() {
    let records = env("WEIR_BENCH_RECORDS", RECORDS);
    let reps = env("WEIR_BENCH_REPS", 3).max(1);
    let only: Option<Vec<String>> = std::env::var("WEIR_BENCH_ONLY")
        .ok()
        .map(|s| s.split(',').map(str::to_string).collect());
    let tcp = weir_tests::raw_tcp(4 << 30, 1).await;
    println!(
        "raw loopback TCP: {:.2} GB/s; {} records, checkpoints every 1 s unless 'off'",
        tcp / 1e9,
        records
    );
    println!(
        "| pipeline | workers x PEs/op | checkpoints | end to end records/s (steady) | worker CPU ns/record | worker peak RSS MB | in-process 1 thread | raw TCP at this record size | placement |"
    );
    println!("| --- | --- | --- | --- | --- | --- | --- | --- | --- |");
    for p in pipelines() {
        if only
            .as_ref()
            .is_some_and(|o| !o.iter().any(|n| n == p.name))
        {
            continue;
        }
        let spec = parse_app(&spec_text(&p, records, 1), SpecFormat::Yaml).unwrap();
        let (inproc, record_bytes) = in_process(&spec, records).await;
        let tcp_records = tcp / record_bytes;
        let cases: &[(usize, u32, bool)] =
            &[(1, 1, true), (1, 1, false), (1, 2, true), (2, 2, true)];
        for &(workers, par, cp) in cases {
            let mut runs = Vec::new();
            for _ in 0..reps {
                runs.push(run(&p, records, workers, par, cp).await);
            }
            let r = median(runs);
            println!(
                "| {} | {} x {} | {} | {} ({}) | {:.0} | {:.0} | {} | {} | {} |",
                p.name,
                workers,
                par,
                if cp { "1 s" } else { "off" },
                m(r.total),
                m(r.steady),
                r.cpu_ns,
                r.rss_mb,
                m(inproc),
                m(tcp_records),
                r.placement
            );
        }
    }
}

fn main() {
    weir_tests::bench_main("pipelines", bench);
}
