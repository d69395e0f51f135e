//! The scheduler at scale: 10,000 PEs placed on 1,000 workers with GPUs.
//!
//! The cluster: 1,000 workers of 8-64 cores and 64-512 GiB, 60% of them with 1-8
//! GPUs of 24, 40 or 80 GiB (70% NVIDIA, 30% AMD), in training, inference and general
//! pools; a fifth hold the container image some apps run. The load: 50 apps of 200 PEs
//! each (source -> parse forward, -> GPU inference round robin, -> enrichment, ->
//! aggregation, -> sink forward); 15% of the PEs ask for 1-2 GPU slices of 4-40 GiB,
//! a tenth of the apps run their enrichment as a container PE.
//!
//! Timed, each over several runs (p50 and max):
//! - `place` with every PE of every app pending at once;
//! - `place_reference` (the first scheduler, O(PEs x workers)) on the same input: the
//!   baseline, which must choose exactly the same placements;
//! - `reconcile` on a `ClusterState` holding the 1,000 workers and the 50 submitted
//!   apps (what the leader's executor runs: it places app after app).
//!
//! Speed is only printed. Run with `cargo bench -p weir-tests --bench scheduler`
//! (`WEIR_BENCH_RUNS=N` for more runs, `WEIR_BENCH_PART=place|reconcile` for one part,
//! `WEIR_BENCH_SHRINK=N` for a fuller cluster); figures go to BENCHMARKS.md. Without `--bench`
//! (as under `cargo test --all-targets`) it does nothing.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use weir_common::image::ImageInfo;
use weir_common::spec::{parse_app, AppSpec, SpecFormat};
use weir_master::executor::reconcile::reconcile;
use weir_master::scheduler::{
    place, place_reference, place_with, requests_for, DevicePolicy, PeRequest, WorkerCapacity,
};
use weir_master::state::{ClusterState, Command, GpuRecord, WorkerRecord, WorkerState};

const WORKERS: usize = 1_000;
const APPS: usize = 50;
/// The image the container apps run; held by every fifth worker.
const IMAGE: &str = "acme/enrich:3";

/// A deterministic generator (64-bit LCG, high bits): the same cluster every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 33
    }

    fn pick<T: Copy>(&mut self, from: &[T]) -> T {
        from[self.next() as usize % from.len()]
    }
}

/// `WEIR_BENCH_SHRINK=N`: workers offer 1/N of their cores and memory (a fuller
/// cluster: the walk passes more workers that no longer fit).
fn shrink() -> f64 {
    std::env::var("WEIR_BENCH_SHRINK")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1.0)
}

fn worker(i: usize, rng: &mut Rng) -> WorkerRecord {
    let cores = rng.pick(&[8.0, 16.0, 32.0, 48.0, 64.0]) / shrink();
    let memory_gib = (rng.pick(&[64.0, 128.0, 256.0, 384.0, 512.0]) / shrink()) as u64;
    let scenario = rng.pick(&["training", "inference", "general"]);
    let gpus = if rng.next() % 10 < 6 {
        let count = rng.pick(&[1usize, 2, 4, 4, 8, 8]);
        let vendor = if rng.next() % 10 < 7 { "nvidia" } else { "amd" };
        let gib = rng.pick(&[24u64, 40, 80]);
        (0..count)
            .map(|d| GpuRecord {
                uuid: format!("GPU-{i:04}-{d}"),
                vendor: vendor.into(),
                model: format!("{vendor}-{gib}g"),
                memory_total_mb: gib * 1024,
                declared: true,
            })
            .collect()
    } else {
        Vec::new()
    };
    let images = if i.is_multiple_of(5) {
        Arc::new(vec![ImageInfo {
            id: format!("sha256:{i:064x}"),
            tags: vec![IMAGE.into()],
            ..ImageInfo::default()
        }])
    } else {
        Arc::default()
    };
    WorkerRecord {
        id: format!("w{i:04}"),
        control_address: "127.0.0.1:1".into(),
        data_address: "127.0.0.1:2".into(),
        cpu_cores: cores,
        memory_mb: memory_gib * 1024,
        gpus,
        labels: BTreeMap::from([("scenario".to_string(), scenario.to_string())]),
        state: WorkerState::Alive,
        incarnation: 0,
        registered_at_ms: 1,
        state_since_ms: 1,
        images,
        registries: Default::default(),
    }
}

/// App `i`: 200 PEs, 30 of them on GPUs. Operator names carry the app's number so
/// that PE ids are unique across apps (the bench places all apps in one call).
fn app(i: usize, rng: &mut Rng) -> AppSpec {
    let vendor = rng.pick(&["nvidia", "nvidia", "amd", "any"]);
    let scenario = rng.pick(&["inference", "training", "general"]);
    let slices = rng.pick(&[1, 1, 1, 2]);
    let slice_mb = rng.pick(&[4u64, 8, 16, 24, 40]) * 1024;
    let enrich = if i % 10 == 3 {
        format!(r#"kind: container, params: {{image: "{IMAGE}"}}"#)
    } else {
        r#"kind: map, params: {set: {e: "upper(key)"}}"#.to_string()
    };
    let text = format!(
        r#"
name: app-{i}
operators:
  - {{name: a{i}-src, kind: source.generator, parallelism: 40, params: {{count: 10}}, resources: {{cpu: 0.5, memory_mb: 512}}}}
  - {{name: a{i}-parse, kind: map, parallelism: 40, params: {{set: {{p: "upper(key)"}}}}, resources: {{cpu: 1, memory_mb: 1024}}}}
  - name: a{i}-infer
    kind: exec
    parallelism: 30
    params: {{command: [cat]}}
    resources: {{cpu: 2, memory_mb: 8192, gpu: {{count: {slices}, memory_mb: {slice_mb}, vendor: {vendor}, scenario: {scenario}}}}}
  - {{name: a{i}-enrich, {enrich}, parallelism: 10, resources: {{cpu: 1, memory_mb: 2048}}}}
  - {{name: a{i}-agg, kind: map, parallelism: 40, params: {{set: {{a: "upper(key)"}}}}, resources: {{cpu: 1, memory_mb: 2048}}}}
  - {{name: a{i}-out, kind: sink.null, parallelism: 40, resources: {{cpu: 0.25, memory_mb: 512}}}}
streams:
  - {{from: a{i}-src, to: a{i}-parse}}
  - {{from: a{i}-parse, to: a{i}-infer, partitioning: round_robin}}
  - {{from: a{i}-infer, to: a{i}-enrich, partitioning: round_robin}}
  - {{from: a{i}-enrich, to: a{i}-agg, partitioning: round_robin}}
  - {{from: a{i}-agg, to: a{i}-out}}
"#
    );
    parse_app(&text, SpecFormat::Yaml).unwrap_or_else(|e| panic!("app {i}: {e}\n{text}"))
}

/// The 1,000 workers registered and the 50 apps submitted (none placed yet).
fn cluster() -> (ClusterState, Vec<AppSpec>) {
    let mut rng = Rng(0x5eed);
    let mut state = ClusterState::default();
    for i in 0..WORKERS {
        let cmd = Command::RegisterWorker {
            worker: worker(i, &mut rng),
        };
        state.apply(&cmd).expect("worker registers");
    }
    let apps: Vec<AppSpec> = (0..APPS).map(|i| app(i, &mut rng)).collect();
    for spec in &apps {
        let cmd = Command::SubmitApp {
            spec: spec.clone(),
            spec_text: String::new(),
            at_ms: 2,
            request_id: String::new(),
            generated: Default::default(),
            signature: None,
        };
        state.apply(&cmd).expect("app submits");
    }
    (state, apps)
}

/// Times `f` `runs` times; sorted durations.
fn time<T>(runs: usize, mut f: impl FnMut() -> T) -> Vec<Duration> {
    let mut out: Vec<Duration> = (0..runs)
        .map(|_| {
            let t = Instant::now();
            std::hint::black_box(f());
            t.elapsed()
        })
        .collect();
    out.sort();
    out
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Prints one line and returns the p50.
fn report(what: &str, pes: usize, times: &[Duration]) -> f64 {
    let p50 = times[times.len() / 2];
    let max = times[times.len() - 1];
    println!(
        "{what:<34} p50 {:>9.2} ms   max {:>9.2} ms   {:>12.0} PEs/s   ({} runs)",
        ms(p50),
        ms(max),
        pes as f64 / p50.as_secs_f64(),
        times.len()
    );
    ms(p50)
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let runs: usize = std::env::var("WEIR_BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10);
    let (state, apps) = cluster();
    let free = weir_master::executor::reconcile::capacities(&state);
    let pending: Vec<PeRequest> = apps.iter().flat_map(requests_for).collect();
    let gpu = pending.iter().filter(|r| r.gpu.is_some()).count();
    let containers = pending.iter().filter(|r| r.image.is_some()).count();
    let gpu_workers = free.iter().filter(|w| !w.gpus.is_empty()).count();
    let devices: usize = free.iter().map(|w| w.gpus.len()).sum();
    let cores: f64 = free.iter().map(|w| w.cpu_free).sum();
    let asked: f64 = pending.iter().map(|r| r.cpu).sum();
    println!(
        "{} workers ({cores:.0} cores, {gpu_workers} with GPUs, {devices} devices), {} apps, {} PEs ({asked:.0} cores, {gpu} on GPUs, {containers} containers)",
        free.len(),
        apps.len(),
        pending.len()
    );
    let part = std::env::var("WEIR_BENCH_PART").unwrap_or_default();
    if part != "reconcile" {
        place_both(&free, &pending, runs);
    }
    if part != "place" {
        reconcile_all(&state, pending.len(), runs);
    }
}

/// Times `place` against `place_reference` with every PE pending at once.
fn place_both(free: &[WorkerCapacity], pending: &[PeRequest], runs: usize) {
    let none = BTreeMap::new();
    let new = place(free, pending, &none).expect("the bench load fits");
    let old = place_reference(free, pending, &none).expect("the bench load fits");
    assert_eq!(new, old, "place and place_reference disagree");
    let spread = new
        .values()
        .map(|a| a.worker.as_str())
        .collect::<std::collections::BTreeSet<_>>()
        .len();
    println!("placements identical to the reference; {spread} workers used");

    let reference = report(
        "place_reference (baseline)",
        pending.len(),
        &time(runs.div_ceil(2).max(3), || {
            place_reference(free, pending, &none)
        }),
    );
    let current = report(
        "place",
        pending.len(),
        &time(runs, || place(free, pending, &none)),
    );
    println!("place vs baseline: {:.1}x faster", reference / current);
    // The default policy: the GPU PEs' devices by the GPU-memory objective (the
    // heuristic at this size), then the search for the rest.
    let objective = DevicePolicy::default();
    place_with(free, pending, &none, &objective).expect("the bench load fits");
    let with = report(
        "place_with (GPU-memory objective)",
        pending.len(),
        &time(runs, || place_with(free, pending, &none, &objective)),
    );
    println!(
        "place_with objective vs baseline: {:.1}x faster",
        reference / with
    );
}

/// Times the reconciler placing the submitted apps one after another.
fn reconcile_all(state: &ClusterState, pes: usize, runs: usize) {
    let actions = reconcile(state, &BTreeMap::new(), 3);
    let placed: usize = actions.placements.iter().map(|(_, p)| p.len()).sum();
    // A shrunk cluster may refuse some apps (placed app by app, later apps find the
    // GPUs they need taken); the default one must hold them all.
    if shrink() == 1.0 {
        assert!(
            actions.unplaceable.is_empty(),
            "unplaceable: {:?}",
            actions.unplaceable
        );
        assert_eq!(placed, pes);
    } else if !actions.unplaceable.is_empty() {
        println!(
            "reconcile: {} apps refused ({placed} of {pes} PEs placed)",
            actions.unplaceable.len()
        );
    }
    report(
        "reconcile (50 apps, one by one)",
        placed,
        &time(runs, || reconcile(state, &BTreeMap::new(), 3)),
    );
}
