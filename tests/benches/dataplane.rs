//! Data plane throughput: generator -> map -> filter -> sink.null with ~100-byte
//! records, (a) on one worker (batches handed over by reference), (b) across two
//! workers over a loopback TCP link, against raw loopback TCP bytes/s measured in the
//! same run (before and after (b); the faster of the two); (c) a deliberately slow
//! sink behind an unbounded generator, showing that producers slow down to its pace
//! and memory stays flat; (d) as (b) with the link over mutual TLS (two workers'
//! certificates of one CA), compared with (b) in the same run. Also the process's
//! peak RSS.
//! Run with
//! `cargo bench -p weir-tests --bench dataplane` (`WEIR_BENCH_THREADS=N`: runtime
//! threads, 2 by default; `WEIR_BENCH_PARALLEL=P`: PEs per operator, 1 by default;
//! `WEIR_BENCH_RECORDS=N`: records per run, 20,000,000 by default; `WEIR_BENCH_ONLY=a|b|c|d`:
//! the raw baseline and that part alone, e.g. under a profiler); figures go to BENCHMARKS.md.

use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::AsyncReadExt;
use tokio::net::TcpListener;
use weir_common::keygroup::KeyGroupRange;
use weir_common::spec::{
    CmpOp, Comparison, FilterParams, GeneratorParams, MapParams, OperatorKind, OperatorSpec,
    Partitioning, Resources,
};
use weir_worker::dataplane::{inbound, Admission, Dialer, Inputs};
use weir_worker::runtime::{OutputConfig, PeConfig, Runtime, Target};

// The allocator the worker binary runs with (see worker/src/main.rs): batches are
// allocated on one thread and freed on another, which glibc's malloc serialises.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

const RECORDS: u64 = 20_000_000;

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Records per run (`WEIR_BENCH_RECORDS`).
fn records() -> u64 {
    env("WEIR_BENCH_RECORDS", RECORDS)
}

/// PEs per operator (`WEIR_BENCH_PARALLEL`): that many independent chains, PE `k` of
/// each operator feeding PE `k` of the next (forward), so `k` links in (b).
fn parallel() -> u32 {
    env("WEIR_BENCH_PARALLEL", 1).max(1) as u32
}

fn op(name: &str, kind: OperatorKind, parallelism: u32) -> OperatorSpec {
    OperatorSpec {
        name: name.into(),
        kind,
        parallelism,
        resources: Resources::default(),
    }
}

/// PE `k` of `name` (of `parallelism`), reading PE `k` of `input`, feeding PE `k`.
fn pe_k(
    name: &str,
    kind: OperatorKind,
    input: Option<&str>,
    output: Option<(&str, Option<String>)>,
    k: u32,
    parallelism: u32,
) -> PeConfig {
    PeConfig {
        app: "bench".into(),
        version: 1,
        tenant: "default".into(),
        pe: format!("{name}#{k}"),
        spec: op(name, kind, parallelism),
        index: k,
        key_groups: KeyGroupRange::for_pe(k, parallelism),
        source_ordinal: 1,
        inputs: input.map(|i| vec![format!("{i}#{k}")]).unwrap_or_default(),
        outputs: output
            .map(|(to, address)| {
                vec![OutputConfig {
                    stream: format!("{name}->{to}"),
                    partitioning: Partitioning::Forward,
                    targets: vec![Target {
                        pe: format!("{to}#{k}"),
                        address,
                        attempt: None,
                    }],
                }]
            })
            .unwrap_or_default(),
        attempt: 0,
        restore: None,
        gpus: vec![],
        peer_attempts: Default::default(),
        producer_workers: Default::default(),
        restore_pieces: vec![],
        start_at_barrier: 0,
    }
}

fn pe(
    name: &str,
    kind: OperatorKind,
    input: Option<&str>,
    output: Option<(&str, Option<String>)>,
) -> PeConfig {
    pe_k(name, kind, input, output, 0, 1)
}

fn kinds() -> [OperatorKind; 4] {
    [
        OperatorKind::Generator(GeneratorParams {
            rate: None,
            count: Some(records()),
            keys: 1000,
            payload_bytes: 40,
            seed: 0,
            wall_clock: false,
        }),
        OperatorKind::Map(MapParams {
            project: vec!["id".into(), "value".into(), "payload".into()],
            ..Default::default()
        }),
        OperatorKind::Filter(FilterParams::Compare(Comparison {
            field: "value".into(),
            op: CmpOp::Lt,
            value: 900.into(),
        })),
        OperatorKind::SinkNull,
    ]
}

async fn finished(rts: &[&Runtime]) {
    loop {
        let all = rts.iter().flat_map(|r| r.report()).collect::<Vec<_>>();
        if all
            .iter()
            .all(|p| p.state == weir_proto::v1::PeState::Stopped as i32)
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// Two worker runtimes; the second's data plane listens on loopback at the address
/// returned. The listener stops when the sender is dropped. With `tls`, the link is
/// mutual TLS between two workers' certificates of one CA, as in a secured cluster.
async fn two_workers(tls: bool) -> (Runtime, Runtime, String, tokio::sync::watch::Sender<bool>) {
    let (dialer, admission) = if tls {
        let ca = weir_security::ca::DevCa::generate("bench").unwrap();
        let w1 =
            weir_tests::secure::security_of(&ca, &weir_security::Principal::Worker("w1".into()));
        let w2 =
            weir_tests::secure::security_of(&ca, &weir_security::Principal::Worker("w2".into()));
        (Dialer::new(&w1).unwrap(), Admission::new(&w2).unwrap())
    } else {
        (Dialer::default(), Admission::default())
    };
    let a = Runtime::new(Arc::new(Inputs::default())).with_dialer(dialer);
    let b_inputs = Arc::new(Inputs::default());
    let b = Runtime::new(b_inputs.clone());
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let b_addr = l.local_addr().unwrap().to_string();
    let (stop, stop_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(inbound::serve(l, b_inputs, admission, stop_rx));
    (a, b, b_addr, stop)
}

/// Runs the pipeline; `remote` puts filter and sink on a second worker (over mutual
/// TLS with `tls`). Returns (seconds, bytes that crossed the link).
async fn pipeline(remote: bool, tls: bool) -> (f64, u64) {
    let (a, b, b_addr, _stop) = two_workers(tls).await;
    let second = if remote { &b } else { &a };
    let link = remote.then(|| b_addr.clone());
    let p = parallel();
    let start = Instant::now();
    for k in 0..p {
        let [g, m, f, s] = kinds();
        second
            .deploy(pe_k("sink", s, Some("filter"), None, k, p))
            .await
            .unwrap();
        second
            .deploy(pe_k("filter", f, Some("map"), Some(("sink", None)), k, p))
            .await
            .unwrap();
        a.deploy(pe_k(
            "map",
            m,
            Some("gen"),
            Some(("filter", link.clone())),
            k,
            p,
        ))
        .await
        .unwrap();
        a.deploy(pe_k("gen", g, None, Some(("map", None)), k, p))
            .await
            .unwrap();
    }
    finished(&[&a, &b]).await;
    let secs = start.elapsed().as_secs_f64();
    // Bytes of records sent by remote producer ends (the link), not local channels.
    let bytes = a
        .channels()
        .iter()
        .filter(|c| c.end == weir_proto::v1::ChannelEnd::Producer as i32)
        .map(|c| c.bytes)
        .sum::<u64>();
    (secs, bytes)
}

/// Bytes/s of `conns` loopback TCP connections sending `total` bytes in all.
fn status_mb(field: &str) -> f64 {
    weir_tests::status_mb(None, field)
}

fn peak_rss_mb() -> f64 {
    status_mb("VmHWM:")
}

/// Pace of the slow consumer behind `sink.tcp` in (c).
const SLOW_BYTES_PER_S: u64 = 4 << 20;
/// How long (c) runs.
const SLOW_SECS: u64 = 6;

/// (c): an unbounded generator and map on one worker, filter and `sink.tcp` on a
/// second, the sink writing to a reader that takes `SLOW_BYTES_PER_S`. Returns (records
/// the generator emitted per second, records the reader got per second, RSS after 1 s,
/// the largest RSS seen after that), all in the steady state after the first second.
async fn slow_sink() -> (f64, f64, f64, f64) {
    let sink_l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let sink_addr = sink_l.local_addr().unwrap().to_string();
    let lines = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let counted = lines.clone();
    tokio::spawn(async move {
        let (mut s, _) = sink_l.accept().await.unwrap();
        let mut buf = vec![0u8; 64 << 10];
        let start = Instant::now();
        let mut n = 0u64;
        loop {
            let r = match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(r) => r,
            };
            n += r as u64;
            let lf = buf[..r].iter().filter(|b| **b == b'\n').count() as u64;
            counted.fetch_add(lf, std::sync::atomic::Ordering::Relaxed);
            // Pacing a deliberately slow reader, not synchronisation.
            let due = Duration::from_secs_f64(n as f64 / SLOW_BYTES_PER_S as f64);
            if let Some(wait) = due.checked_sub(start.elapsed()) {
                tokio::time::sleep(wait).await;
            }
        }
    });
    let (a, b, b_addr, _stop) = two_workers(false).await;
    let [g, m, f, _] = kinds();
    let OperatorKind::Generator(mut gp) = g else {
        unreachable!()
    };
    gp.count = None;
    let sink = OperatorKind::SinkTcp(weir_common::spec::SinkTcpParams { address: sink_addr });
    b.deploy(pe("sink", sink, Some("filter"), None))
        .await
        .unwrap();
    b.deploy(pe("filter", f, Some("map"), Some(("sink", None))))
        .await
        .unwrap();
    a.deploy(pe("map", m, Some("gen"), Some(("filter", Some(b_addr)))))
        .await
        .unwrap();
    a.deploy(pe(
        "gen",
        OperatorKind::Generator(gp),
        None,
        Some(("map", None)),
    ))
    .await
    .unwrap();
    let emitted = || {
        a.report()
            .iter()
            .find(|r| r.pe == "gen#0")
            .and_then(|r| r.stats.as_ref().map(|s| s.records_out))
            .unwrap_or(0)
    };
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (gen0, got0, rss0) = (
        emitted(),
        lines.load(std::sync::atomic::Ordering::Relaxed),
        status_mb("VmRSS:"),
    );
    let start = Instant::now();
    let mut max_rss = rss0;
    while start.elapsed() < Duration::from_secs(SLOW_SECS - 1) {
        tokio::time::sleep(Duration::from_millis(250)).await;
        max_rss = max_rss.max(status_mb("VmRSS:"));
    }
    let secs = start.elapsed().as_secs_f64();
    let gen_rate = (emitted() - gen0) as f64 / secs;
    let got_rate = (lines.load(std::sync::atomic::Ordering::Relaxed) - got0) as f64 / secs;
    a.stop_all();
    b.stop_all();
    (gen_rate, got_rate, rss0, max_rss)
}

fn main() {
    // Two runtime threads by default (the dev box has two cores); more on a bigger
    // machine with WEIR_BENCH_THREADS.
    let threads = std::env::var("WEIR_BENCH_THREADS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2);
    println!("runtime threads: {threads}");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let p = parallel();
        let n = records();
        let raw = weir_tests::raw_tcp(4 << 30, 1).await;
        println!("raw loopback TCP: {:.0} MB/s", raw / 1e6);
        // With p chains, (b) has p links: compared with p raw connections as well.
        let raw_p = if p > 1 {
            let r = weir_tests::raw_tcp(4 << 30, p).await;
            println!("raw loopback TCP, {p} connections: {:.0} MB/s", r / 1e6);
            r
        } else {
            raw
        };
        println!("PEs per operator: {p}");
        let only = std::env::var("WEIR_BENCH_ONLY").ok();
        let part = |x: &str| only.as_deref().is_none_or(|o| o == x);
        if part("a") {
            let (t1, _) = pipeline(false, false).await;
            println!(
                "(a) one worker:  {n} records in {t1:.2} s = {:.2} M records/s",
                n as f64 / t1 / 1e6
            );
        }
        let mut plain_b = None;
        if part("b") {
            let (t2, bytes) = pipeline(true, false).await;
            plain_b = Some(t2);
            let link = bytes as f64 / t2;
            // Raw loopback TCP drifts by a third between runs on a small machine: it is
            // measured again right after (b), and (b) is compared with the faster of
            // the two measurements.
            let again = weir_tests::raw_tcp(4 << 30, p).await;
            println!("raw loopback TCP again ({p} connections): {:.0} MB/s", again / 1e6);
            let raw = if p > 1 { raw } else { raw.max(again) };
            let raw_p = raw_p.max(again);
            println!(
            "(b) two workers: {n} records in {t2:.2} s = {:.2} M records/s; link {:.0} MB/s ({:.0} B/record) = {:.0}% of raw TCP ({:.0}% of {p} raw connections; the faster raw figure)",
            n as f64 / t2 / 1e6,
            link / 1e6,
            bytes as f64 / n as f64,
            100.0 * link / raw,
            100.0 * link / raw_p
            );
        }
        if part("d") {
            let (t4, bytes) = pipeline(true, true).await;
            let vs = plain_b.map_or(String::new(), |t2| {
                format!("; {:.0}% of (b) measured in this run", 100.0 * t2 / t4)
            });
            println!(
                "(d) two workers, mutual TLS link: {n} records in {t4:.2} s = {:.2} M records/s; link {:.0} MB/s{vs}",
                n as f64 / t4 / 1e6,
                bytes as f64 / t4 / 1e6,
            );
        }
        if !part("c") {
            return;
        }
        let (gen_rate, got_rate, rss0, max_rss) = slow_sink().await;
        println!(
            "(c) slow sink ({} MB/s reader) across two workers, {SLOW_SECS} s: generator held to {:.0} records/s, the reader got {:.0}/s (filter passes 90%); RSS {rss0:.0} MB after 1 s, at most {max_rss:.0} MB after",
            SLOW_BYTES_PER_S >> 20,
            gen_rate,
            got_rate
        );
        println!("peak RSS of the process (both workers, all runs): {:.0} MB", peak_rss_mb());
    });
}
