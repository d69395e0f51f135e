//! Container PEs: what running a program in a container costs, release build.
//!
//! 1. **Kernel, in-process**: batches of 4,096 records of about 100 bytes (id, value,
//!    a 72-byte payload) through (a) a built-in map computing the same score, (b) an
//!    exec PE running `weir-pe-score`, (c) a container PE running
//!    `weir-pe-score:v1` (the same binary, FROM scratch). Records/s, and each as a
//!    ratio of the built-in map measured in the same run.
//! 2. **Start to ready**: `ExecPe::launch` of a container (create, attach, start, the
//!    handshake's empty batch answered) and of the exec program, 10 times each.
//! 3. **End to end, real processes**: `weir-master --dev` and one `weir-worker` (the
//!    release binaries, as users run them), an app `source.generator` (2 M records of
//!    about 100 bytes) -> score (map | exec | container, parallelism 1) -> sink.null;
//!    wall time from submit to the app finished.
//!
//! The stall of an image upgrade at 100,000 records/s is in the upgrade bench
//! (`--bench upgrade`, the last two kinds). Speed is only printed. Run with
//!
//! ```sh
//! cargo build --release -p weir-master -p weir-worker
//! cargo bench -p weir-tests --bench containers
//! ```

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use weir_common::record::{Batch, BatchBuilder, Value};
use weir_common::spec::Resources;
use weir_common::spec::{ContainerNetwork, ContainerParams, ExecParams, MapParams, PeProtocol};
use weir_proto::v1 as pb;
use weir_tests::containers::{docker_or_skip, pe_images, worker_id, V1};
use weir_worker::container::ContainerEngine;
use weir_worker::exec::{ExecConfig, ExecPe, LocalLaunch};

const PE_BIN: &str = env!("CARGO_BIN_EXE_weir-pe-score");
const BATCH: usize = 4096;
/// Batches per kernel measurement.
const ROUNDS: usize = 400;
/// Records of the end-to-end runs.
const E2E_RECORDS: u64 = 2_000_000;

fn batch(from: u64) -> Batch {
    let mut b = BatchBuilder::default();
    let payload = Value::Bytes(vec![b'x'; 72]);
    for id in from..from + BATCH as u64 {
        let key = (id % 1000).to_string();
        b.push(
            1,
            id,
            id as i64,
            key.as_bytes(),
            [
                ("id", &Value::I64(id as i64)),
                ("value", &Value::I64((id % 997) as i64)),
                ("payload", &payload),
            ],
        )
        .unwrap();
    }
    b.finish()
}

/// Records/s of `map` over [`ROUNDS`] batches (after 10 warm-up batches).
fn map_rate(batches: &[Batch], map: &weir_worker::ops::Map) -> f64 {
    for b in batches.iter().take(10) {
        map.apply(b);
    }
    let start = Instant::now();
    let n: usize = (0..ROUNDS)
        .map(|k| map.apply(&batches[k % batches.len()]).len())
        .sum();
    n as f64 / start.elapsed().as_secs_f64()
}

/// Records/s of program PE `pe` over [`ROUNDS`] batches (after 10 warm-up batches).
async fn pe_rate(batches: &[Batch], pe: &mut ExecPe) -> f64 {
    for b in batches.iter().take(10) {
        pe.process(b).await.unwrap();
    }
    let start = Instant::now();
    let mut n = 0;
    for k in 0..ROUNDS {
        n += pe.process(&batches[k % batches.len()]).await.unwrap().len();
    }
    n as f64 / start.elapsed().as_secs_f64()
}

fn container_params() -> ContainerParams {
    ContainerParams {
        image: V1.into(),
        command: vec![],
        env: BTreeMap::new(),
        protocol: PeProtocol::Framed,
        writable_rootfs: false,
        network: ContainerNetwork::None,
    }
}

fn exec_params() -> ExecParams {
    ExecParams {
        command: vec![PE_BIN.into()],
        env: BTreeMap::new(),
        protocol: PeProtocol::Framed,
    }
}

async fn start_container(engine: &ContainerEngine, k: u64) -> ExecPe {
    let resources = Resources {
        cpu: 1.0,
        memory_mb: 256,
        gpu: None,
    };
    let pe = format!("score@1#{k}");
    let launch = engine.launcher(
        "bench",
        "bench",
        &pe,
        k,
        &container_params(),
        &resources,
        &[],
    );
    ExecPe::launch(&pe, Arc::new(launch), ExecConfig::default())
        .await
        .unwrap()
}

async fn kernels(engine: &ContainerEngine) {
    let batches: Vec<Batch> = (0..16).map(|k| batch(k * BATCH as u64)).collect();
    let bytes = batches[0].encoded_len() as f64 / BATCH as f64;
    println!(
        "kernel, in-process: {BATCH}-record batches of {bytes:.0} bytes/record, {ROUNDS} batches"
    );
    let map = weir_worker::ops::Map::new(&MapParams {
        set: BTreeMap::from([
            ("score".to_string(), "mod(mul(id, 7), 1000)".to_string()),
            ("model".to_string(), "\"v1\"".to_string()),
        ]),
        ..Default::default()
    })
    .unwrap();
    let map_rate = map_rate(&batches, &map);
    let mut exec = ExecPe::launch(
        "score@1#0",
        Arc::new(LocalLaunch::new(exec_params())),
        ExecConfig::default(),
    )
    .await
    .unwrap();
    let exec_rate = pe_rate(&batches, &mut exec).await;
    exec.shutdown().await;
    let mut container = start_container(engine, 100).await;
    let container_rate = pe_rate(&batches, &mut container).await;
    container.shutdown().await;
    println!("{:<40} {:>14} {:>10}", "kernel", "records/s", "vs map");
    for (name, r) in [
        ("built-in map (same score)", map_rate),
        ("exec: weir-pe-score", exec_rate),
        ("container: weir-pe-score:v1", container_rate),
    ] {
        println!("{name:<40} {r:>14.0} {:>9.2}x", r / map_rate);
    }
}

async fn start_times(engine: &ContainerEngine) {
    let mut container = Vec::new();
    let mut exec = Vec::new();
    for k in 0..10 {
        let t = Instant::now();
        let pe = start_container(engine, 200 + k).await;
        container.push(t.elapsed());
        pe.shutdown().await;
        let t = Instant::now();
        let pe = ExecPe::launch(
            "score@1#0",
            Arc::new(LocalLaunch::new(exec_params())),
            ExecConfig::default(),
        )
        .await
        .unwrap();
        exec.push(t.elapsed());
        pe.shutdown().await;
    }
    let show = |mut v: Vec<Duration>| {
        v.sort();
        format!(
            "min {:.1} ms, median {:.1} ms, max {:.1} ms",
            v[0].as_secs_f64() * 1e3,
            v[v.len() / 2].as_secs_f64() * 1e3,
            v[v.len() - 1].as_secs_f64() * 1e3
        )
    };
    println!("start to ready (10 runs each):");
    println!(
        "  container (create, attach, start, handshake): {}",
        show(container)
    );
    println!(
        "  exec (spawn; no handshake):                   {}",
        show(exec)
    );
}

fn e2e_spec(name: &str, score: &str) -> String {
    format!(
        r#"
name: {name}
operators:
  - {{name: gen, kind: source.generator, params: {{count: {E2E_RECORDS}, keys: 1000, payload_bytes: 60}}}}
  - {score}
  - {{name: out, kind: sink.null}}
streams:
  - {{from: gen, to: score}}
  - {{from: score, to: out}}
"#
    )
}

async fn end_to_end() {
    let dir = tempfile::tempdir().unwrap();
    let (mport, cport, dport) = (
        weir_tests::free_port(),
        weir_tests::free_port(),
        weir_tests::free_port(),
    );
    let master_addr = format!("127.0.0.1:{mport}");
    let mut master = tokio::process::Command::new(weir_tests::release_binary("weir-master"))
        .args([
            "--dev",
            "--insecure",
            "--listen",
            &master_addr,
            "--data-dir",
        ])
        .arg(dir.path().join("m"))
        .env("RUST_LOG", "error")
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let wid = worker_id("bench-e2e");
    let mut worker = tokio::process::Command::new(weir_tests::release_binary("weir-worker"))
        .args([
            "--id",
            &wid,
            "--master",
            &master_addr,
            "--control-address",
            &format!("127.0.0.1:{cport}"),
            "--data-address",
            &format!("127.0.0.1:{dport}"),
            "--no-nvml",
        ])
        .env("RUST_LOG", "error")
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let client =
        weir_tests::eventually_within("the master answers", Duration::from_secs(60), || {
            let addr = format!("http://{master_addr}");
            async move {
                let mut c = pb::weir_client::WeirClient::connect(addr).await.ok()?;
                let w = c.list_workers(pb::ListWorkersRequest {}).await.ok()?;
                (w.into_inner().workers.len() == 1).then_some(c)
            }
        })
        .await;
    println!(
        "end to end, weir-master --dev + one weir-worker (release processes): generator \
         ({E2E_RECORDS} records) -> score -> sink.null, submit to finished"
    );
    let cases = [
        (
            "built-in map (same score)",
            "{name: score, kind: map, params: {set: {score: \"mod(mul(id, 7), 1000)\", model: '\"v1\"'}}}".to_string(),
        ),
        (
            "exec: weir-pe-score",
            format!("{{name: score, kind: exec, params: {{command: [\"{PE_BIN}\"], protocol: framed}}}}"),
        ),
        (
            "container: weir-pe-score:v1",
            format!("{{name: score, kind: container, params: {{image: \"{V1}\", protocol: framed}}, resources: {{cpu: 1, memory_mb: 256}}}}"),
        ),
    ];
    println!(
        "{:<40} {:>10} {:>14} {:>10}",
        "score operator", "seconds", "records/s", "vs map"
    );
    let mut base = None;
    for (k, (name, op)) in cases.iter().enumerate() {
        let app = format!("e2e{k}");
        let mut c = client.clone();
        let started = Instant::now();
        c.submit_app(weir_tests::submit_yaml(e2e_spec(&app, op)))
            .await
            .unwrap();
        weir_tests::eventually_within("the app finishes", Duration::from_secs(600), || {
            let mut c = c.clone();
            let app = app.clone();
            async move {
                let d = weir_tests::app_detail(&mut c, &app).await?;
                (d.summary?.state == pb::AppState::Finished as i32).then_some(())
            }
        })
        .await;
        let secs = started.elapsed().as_secs_f64();
        let r = E2E_RECORDS as f64 / secs;
        let base = *base.get_or_insert(r);
        println!("{name:<40} {secs:>10.2} {r:>14.0} {:>9.2}x", r / base);
    }
    let _ = worker.start_kill();
    let _ = worker.wait().await;
    let _ = master.start_kill();
    let _ = master.wait().await;
    weir_tests::containers::remove_all(&wid);
}

async fn run() {
    if !docker_or_skip("containers bench") {
        return;
    }
    pe_images(PE_BIN);
    let engine = ContainerEngine::connect(
        "weir-bench",
        &worker_id("bench"),
        BTreeMap::new(),
        BTreeMap::new(),
    )
    .unwrap();
    kernels(&engine).await;
    start_times(&engine).await;
    end_to_end().await;
    weir_tests::containers::remove_all(&worker_id("bench"));
}

fn main() {
    weir_tests::bench_main("containers", run);
}
