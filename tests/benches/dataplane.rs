//! Data plane throughput: generator -> map -> filter -> sink.null with ~100-byte
//! records, (a) on one worker (batches handed over by reference), (b) across two
//! workers over a loopback TCP link, against raw loopback TCP bytes/s measured in the
//! same run. Also the process's peak RSS. Run with
//! `cargo bench -p weir-tests --bench dataplane`; figures go to BENCHMARKS.md.

use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use weir_common::keygroup::KeyGroupRange;
use weir_common::spec::{
    CmpOp, FilterParams, GeneratorParams, MapParams, OperatorKind, OperatorSpec, Partitioning,
    Resources,
};
use weir_worker::dataplane::{inbound, Inputs};
use weir_worker::runtime::{OutputConfig, PeConfig, Runtime, Target};

const RECORDS: u64 = 5_000_000;

fn op(name: &str, kind: OperatorKind) -> OperatorSpec {
    OperatorSpec {
        name: name.into(),
        kind,
        parallelism: 1,
        resources: Resources::default(),
    }
}

fn pe(
    name: &str,
    kind: OperatorKind,
    input: Option<&str>,
    output: Option<(&str, Option<String>)>,
) -> PeConfig {
    PeConfig {
        app: "bench".into(),
        version: 1,
        pe: format!("{name}#0"),
        spec: op(name, kind),
        index: 0,
        key_groups: KeyGroupRange::for_pe(0, 1),
        source_ordinal: 1,
        inputs: input.map(|i| vec![format!("{i}#0")]).unwrap_or_default(),
        outputs: output
            .map(|(to, address)| {
                vec![OutputConfig {
                    stream: format!("{name}->{to}"),
                    partitioning: Partitioning::Forward,
                    targets: vec![Target {
                        pe: format!("{to}#0"),
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
        restore_pieces: vec![],
        start_at_barrier: 0,
    }
}

fn kinds() -> [OperatorKind; 4] {
    [
        OperatorKind::Generator(GeneratorParams {
            rate: None,
            count: Some(RECORDS),
            keys: 1000,
            payload_bytes: 40,
            seed: 0,
            wall_clock: false,
        }),
        OperatorKind::Map(MapParams {
            project: vec!["id".into(), "value".into(), "payload".into()],
            ..Default::default()
        }),
        OperatorKind::Filter(FilterParams {
            field: "value".into(),
            op: CmpOp::Lt,
            value: 900.into(),
        }),
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

/// Runs the pipeline; `remote` puts filter and sink on a second worker. Returns
/// (seconds, bytes that crossed the link).
async fn pipeline(remote: bool) -> (f64, u64) {
    let a = Runtime::new(Arc::new(Inputs::default()));
    let b_inputs = Arc::new(Inputs::default());
    let b = Runtime::new(b_inputs.clone());
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let b_addr = l.local_addr().unwrap().to_string();
    let (_stop, stop_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(inbound::serve(l, b_inputs, stop_rx));
    let [g, m, f, s] = kinds();
    let second = if remote { &b } else { &a };
    let link = remote.then(|| b_addr.clone());
    let start = Instant::now();
    second
        .deploy(pe("sink", s, Some("filter"), None))
        .await
        .unwrap();
    second
        .deploy(pe("filter", f, Some("map"), Some(("sink", None))))
        .await
        .unwrap();
    a.deploy(pe("map", m, Some("gen"), Some(("filter", link))))
        .await
        .unwrap();
    a.deploy(pe("gen", g, None, Some(("map", None))))
        .await
        .unwrap();
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

async fn raw_tcp(total: u64) -> f64 {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let reader = tokio::spawn(async move {
        let (mut s, _) = l.accept().await.unwrap();
        let mut buf = vec![0u8; 1 << 20];
        let mut n = 0u64;
        while n < total {
            let r = s.read(&mut buf).await.unwrap();
            if r == 0 {
                break;
            }
            n += r as u64;
        }
    });
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let chunk = vec![7u8; 1 << 20];
    let start = Instant::now();
    let mut sent = 0u64;
    while sent < total {
        s.write_all(&chunk).await.unwrap();
        sent += chunk.len() as u64;
    }
    reader.await.unwrap();
    total as f64 / start.elapsed().as_secs_f64()
}

fn peak_rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let raw = raw_tcp(4 << 30).await;
        println!("raw loopback TCP: {:.0} MB/s", raw / 1e6);
        let (t1, _) = pipeline(false).await;
        println!(
            "(a) one worker:  {RECORDS} records in {t1:.2} s = {:.2} M records/s",
            RECORDS as f64 / t1 / 1e6
        );
        let (t2, bytes) = pipeline(true).await;
        let link = bytes as f64 / t2;
        println!(
            "(b) two workers: {RECORDS} records in {t2:.2} s = {:.2} M records/s; link {:.0} MB/s ({:.0} B/record) = {:.0}% of raw TCP",
            RECORDS as f64 / t2 / 1e6,
            link / 1e6,
            bytes as f64 / RECORDS as f64,
            100.0 * link / raw
        );
        println!("peak RSS of the process (both workers, all runs): {:.0} MB", peak_rss_mb());
    });
}
