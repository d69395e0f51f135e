use super::*;
use crate::executor::reconcile::{capacities, reconcile};
use crate::state::{fixtures, Command, GpuRecord};
use weir_common::physical::PeId;

fn gpu(uuid: &str, mb: u64) -> GpuRecord {
    GpuRecord {
        uuid: uuid.into(),
        vendor: "nvidia".into(),
        model: "test-80g".into(),
        memory_total_mb: mb,
        declared: true,
    }
}

const INFER: &str = r#"
name: infer
operators:
  - {name: src, kind: source.generator, params: {count: 1}, resources: {cpu: 0.5, memory_mb: 100}}
  - {name: model, kind: exec, parallelism: 2, params: {command: [cat]}, resources: {cpu: 1, memory_mb: 1000, gpu: {count: 1, memory_mb: 30000, scenario: inference}}}
  - {name: out, kind: sink.null, resources: {cpu: 0.5, memory_mb: 100}}
streams:
  - {from: src, to: model, partitioning: round_robin}
  - {from: model, to: out, partitioning: round_robin}
"#;

#[test]
fn pools_report_what_placements_use_and_what_waits() {
    let mut s = ClusterState::default();
    let mut g = fixtures::worker("gpu1");
    g.cpu_cores = 16.0;
    g.memory_mb = 64_000;
    g.labels.insert("scenario".into(), "inference".into());
    g.gpus = vec![gpu("GPU-a", 80_000), gpu("GPU-b", 40_000)];
    let mut c = fixtures::worker("cpu1");
    c.cpu_cores = 4.0;
    c.memory_mb = 8_000;
    for w in [g, c] {
        s.apply(&Command::RegisterWorker { worker: w }).unwrap();
    }
    fixtures::submit_text(&mut s, INFER, 0);
    let a = reconcile(&s, &BTreeMap::new(), 1_000);
    let (app, placement) = a.placements[0].clone();
    s.apply(&Command::SetPlacement {
        app: app.clone(),
        placement,
        gpus: a.gpus[&app].clone(),
        at_ms: 1_000,
    })
    .unwrap();
    // A second one cannot fit: 20 GB are left on GPU-a and 40 on GPU-b, room for one
    // more 30 GB slice, and it asks two.
    let second = INFER.replace("name: infer", "name: infer2");
    fixtures::submit_text(&mut s, &second, 2_000);
    let queued_spec = s.apps["infer2"].current().spec.clone();
    let free = capacities(&s);
    let ps = pools(&s, &free, &[(&queued_spec, 5_000)]);
    let names: Vec<&str> = ps.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["general-cpu", "inference-nvidia"]);
    let inf = &ps[1];
    assert_eq!(inf.workers, ["gpu1"]);
    assert_eq!(inf.devices.len(), 2);
    // Two 30,000 MiB slices, both on the 80 GB device (binpack keeps the other whole).
    assert_eq!(inf.gpu_memory_total_mb(), 120_000);
    assert_eq!(inf.gpu_memory_used_mb(), 60_000);
    assert_eq!(inf.gpus_used(), 1);
    let used: Vec<(&str, u32, u64)> = inf
        .devices
        .iter()
        .map(|d| (d.uuid.as_str(), d.slices, d.memory_used_mb))
        .collect();
    assert_eq!(used, [("GPU-a", 2, 60_000), ("GPU-b", 0, 0)]);
    // Every PE the placement put on gpu1 counts, with its cores and memory.
    let on_gpu1: Vec<&PeId> = s.apps["infer"]
        .placement
        .iter()
        .filter(|(_, w)| *w == "gpu1")
        .map(|(pe, _)| pe)
        .collect();
    assert_eq!(inf.pes_placed, on_gpu1.len() as u64);
    let spec = &s.apps["infer"].current().spec;
    let cpu: f64 = on_gpu1
        .iter()
        .map(|pe| spec.operator(PeId::operator_of(pe)).unwrap().resources.cpu)
        .sum();
    assert!(
        (inf.cpu_used - cpu).abs() < 1e-9,
        "{} vs {cpu}",
        inf.cpu_used
    );
    assert_eq!(inf.cpu_total, 16.0);
    let cpu_pool = &ps[0];
    assert_eq!(
        cpu_pool.pes_placed + inf.pes_placed,
        s.apps["infer"].placement.len() as u64
    );
    // The queued app's two GPU PEs wait for inference-nvidia, the other two for cpu.
    assert_eq!(inf.pes_pending, 2);
    assert_eq!(cpu_pool.pes_pending, 2);
    assert_eq!(inf.longest_wait_ms, 5_000);
}

#[test]
fn demand_for_a_pool_nobody_has_shows_as_its_own_row() {
    let mut s = ClusterState::default();
    s.apply(&Command::RegisterWorker {
        worker: fixtures::worker("w1"),
    })
    .unwrap();
    let text = INFER.replace("scenario: inference", "scenario: training, vendor: amd");
    fixtures::submit_text(&mut s, &text, 0);
    let spec = s.apps["infer"].current().spec.clone();
    let ps = pools(&s, &capacities(&s), &[(&spec, 7)]);
    let amd = ps.iter().find(|p| p.name == "training-amd").unwrap();
    assert!(amd.workers.is_empty() && amd.devices.is_empty());
    assert_eq!(amd.pes_pending, 2);
}
