use super::*;
use std::sync::Arc;
use weir_common::spec::{parse_app, OperatorKind, SpecFormat};

fn worker(id: &str, cpu: f64, mem: u64, gpus: &[(&str, u64)]) -> WorkerCapacity {
    WorkerCapacity {
        id: id.into(),
        alive: true,
        cpu_free: cpu,
        memory_free_mb: mem,
        scenario: Scenario::General,
        gpus: gpus
            .iter()
            .map(|(u, m)| GpuSlot {
                uuid: u.to_string(),
                vendor: Vendor::Nvidia,
                memory_free_mb: *m,
                memory_total_mb: *m,
                model: "test".into(),
            })
            .collect(),
        images: Arc::default(),
        registries: Default::default(),
    }
}

/// `w` holding images with these `repo:tag`s (one image per tag, ids made up).
fn holding(mut w: WorkerCapacity, tags: &[&str]) -> WorkerCapacity {
    w.images = Arc::new(
        tags.iter()
            .enumerate()
            .map(|(i, t)| ImageInfo {
                id: format!("sha256:{i:064x}"),
                tags: vec![t.to_string()],
                ..ImageInfo::default()
            })
            .collect(),
    );
    w
}

fn app(text: &str) -> AppSpec {
    parse_app(text, SpecFormat::Yaml).unwrap()
}

const PIPE: &str = r#"
name: t
operators:
  - {name: gen, kind: source.generator, parallelism: 3, params: {count: 10}}
  - {name: up, kind: map, parallelism: 3, params: {set: {u: "upper(key)"}}}
  - {name: out, kind: sink.null, parallelism: 1}
streams:
  - {from: gen, to: up}
  - {from: up, to: out, partitioning: round_robin}
"#;

#[test]
fn spreads_an_operator_and_keeps_forward_peers_together() {
    let ws = [
        worker("w1", 8.0, 8192, &[]),
        worker("w2", 8.0, 8192, &[]),
        worker("w3", 8.0, 8192, &[]),
    ];
    let reqs = requests_for(&app(PIPE));
    let p = place(&ws, &reqs, &BTreeMap::new()).unwrap();
    assert_eq!(p.len(), 7);
    let on = |pe: &PeRequest| p[&pe.pe].worker.clone();
    let gens: Vec<String> = reqs
        .iter()
        .filter(|r| r.operator == "gen")
        .map(on)
        .collect();
    let mut distinct = gens.clone();
    distinct.sort();
    distinct.dedup();
    assert_eq!(
        distinct.len(),
        3,
        "gen PEs spread over three workers: {gens:?}"
    );
    // up#i sits with gen#i: the forward stream never crosses the network.
    for r in reqs.iter().filter(|r| r.operator == "up") {
        assert_eq!(r.forward_peers.len(), 1);
        assert_eq!(p[&r.pe].worker, p[&r.forward_peers[0]].worker);
    }
}

#[test]
fn gpu_slices_fit_per_device_best_fit() {
    let spec = r#"
name: g
operators:
  - {name: src, kind: source.generator, params: {count: 10}}
  - name: infer
    kind: container
    parallelism: 3
    params: {image: "weir/infer:1"}
    resources: {cpu: 1, memory_mb: 1024, gpu: {count: 1, memory_mb: 10000}}
  - {name: out, kind: sink.null}
streams:
  - {from: src, to: infer, partitioning: round_robin}
  - {from: infer, to: out, partitioning: round_robin}
"#;
    // w1: a 16 GiB and a 24 GiB device; w2: one 12 GiB device.
    let ws = [
        holding(
            worker("w1", 8.0, 8192, &[("A", 16384), ("B", 24576)]),
            &["weir/infer:1"],
        ),
        holding(worker("w2", 8.0, 8192, &[("C", 12288)]), &["weir/infer:1"]),
    ];
    let p = place(&ws, &requests_for(&app(spec)), &BTreeMap::new()).unwrap();
    let mut used: BTreeMap<String, u64> = BTreeMap::new();
    for a in p.values() {
        for u in &a.gpus {
            *used.entry(u.clone()).or_default() += 10000;
        }
    }
    // Three 10,000 MiB slices: each device takes exactly one (none has room for two
    // except B, but spreading the operator puts one on w2 first).
    assert_eq!(used.values().sum::<u64>(), 30000);
    for (u, m) in &used {
        let cap = match u.as_str() {
            "A" => 16384,
            "B" => 24576,
            _ => 12288,
        };
        assert!(*m <= cap, "device {u} over-committed: {m} > {cap}");
    }
    // A fourth slice cannot fit anywhere: refused with the reason, nothing placed.
    let mut reqs = requests_for(&app(spec));
    let mut extra = reqs.iter().find(|r| r.gpu.is_some()).unwrap().clone();
    extra.pe = PeId("infer@x#9".into());
    extra.gpu.as_mut().unwrap().memory_mb = 20000;
    reqs.push(extra);
    let ws = [
        holding(
            worker("w1", 8.0, 8192, &[("A", 16384), ("B", 24576)]),
            &["weir/infer:1"],
        ),
        holding(worker("w2", 8.0, 8192, &[("C", 12288)]), &["weir/infer:1"]),
    ];
    let err = place(&ws, &reqs, &BTreeMap::new()).unwrap_err();
    assert!(err.why.contains("20000 MiB free each"), "{err}");
}

#[test]
fn vendor_and_scenario_must_match() {
    let spec = r#"
name: g
operators:
  - {name: src, kind: source.generator, params: {count: 10}}
  - name: infer
    kind: exec
    params: {command: [cat]}
    resources: {gpu: {memory_mb: 1000, vendor: amd, scenario: inference}}
  - {name: out, kind: sink.null}
streams:
  - {from: src, to: infer}
  - {from: infer, to: out}
"#;
    let nvidia = worker("w1", 8.0, 8192, &[("N", 80000)]);
    let mut amd = worker("w2", 8.0, 8192, &[("R", 8000)]);
    amd.gpus[0].vendor = Vendor::Amd;
    let mut amd_training = amd.clone();
    amd_training.id = "w3".into();
    amd_training.scenario = Scenario::Training;
    amd.scenario = Scenario::Inference;
    let p = place(
        &[nvidia.clone(), amd, amd_training.clone()],
        &requests_for(&app(spec)),
        &BTreeMap::new(),
    )
    .unwrap();
    let infer = p.iter().find(|(pe, _)| pe.operator() == "infer").unwrap().1;
    assert_eq!(infer.worker, "w2");
    assert_eq!(infer.gpus, vec!["R".to_string()]);
    assert!(place(
        &[nvidia, amd_training],
        &requests_for(&app(spec)),
        &BTreeMap::new()
    )
    .is_err());
}

#[test]
fn not_enough_cpu_or_memory_is_refused_naming_the_shortfall() {
    // Seven built-in PEs at 0.05 cores each: 0.35.
    let ws = [worker("w1", 0.3, 8192, &[])];
    let err = place(&ws, &requests_for(&app(PIPE)), &BTreeMap::new()).unwrap_err();
    assert!(err.why.contains("needs 0.05 cores"), "{err}");
    let ws = [worker("w1", 8.0, 400, &[])];
    let err = place(&ws, &requests_for(&app(PIPE)), &BTreeMap::new()).unwrap_err();
    assert!(err.why.contains("64 MiB"), "{err}");
    let mut dead = worker("w1", 64.0, 65536, &[]);
    dead.alive = false;
    let err = place(&[dead], &requests_for(&app(PIPE)), &BTreeMap::new()).unwrap_err();
    assert_eq!(err.why, "no alive worker");
}

#[test]
fn placement_is_deterministic_and_respects_capacity() {
    let ws = [worker("w2", 1.0, 1024, &[]), worker("w1", 1.0, 1024, &[])];
    let reqs = requests_for(&app(PIPE));
    let a = place(&ws, &reqs, &BTreeMap::new()).unwrap();
    let b = place(&ws, &reqs, &BTreeMap::new()).unwrap();
    assert_eq!(a, b);
    for w in ["w1", "w2"] {
        let cpu: f64 = reqs
            .iter()
            .filter(|r| a[&r.pe].worker == w)
            .map(|r| r.cpu)
            .sum();
        assert!(cpu <= 1.0 + 1e-9, "{w} over-committed: {cpu}");
    }
}

#[test]
fn already_placed_peers_attract_their_forward_partners() {
    let ws = [worker("w1", 8.0, 8192, &[]), worker("w2", 8.0, 8192, &[])];
    let reqs = requests_for(&app(PIPE));
    // Suppose gen#0 already runs on w2 (e.g. untouched by an upgrade): up#0 follows it.
    let gen0 = reqs.iter().find(|r| r.operator == "gen").unwrap();
    let up0 = reqs
        .iter()
        .find(|r| r.forward_peers.contains(&gen0.pe) && r.operator == "up")
        .unwrap();
    let placed = BTreeMap::from([(gen0.pe.clone(), "w2".to_string())]);
    let pending: Vec<PeRequest> = reqs.iter().filter(|r| r.pe != gen0.pe).cloned().collect();
    let p = place(&ws, &pending, &placed).unwrap();
    assert_eq!(p[&up0.pe].worker, "w2");
}

/// What a default `weir-worker` offers on a small 2-core machine: its 2 cores and all
/// its memory (2 GiB: the smallest common 2-core cloud machine), with the example PE
/// images built on it (deploy/build-pe-images.sh).
fn two_core_default_worker() -> WorkerCapacity {
    holding(
        worker("w1", 2.0, 2048, &[]),
        &["weir-pe-score:v1", "weir-pe-score:v2"],
    )
}

/// Every example by file name, parsed.
fn examples() -> BTreeMap<String, AppSpec> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
    std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .map(|p| {
            let text = std::fs::read_to_string(&p).unwrap();
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            let spec = parse_app(&text, SpecFormat::Yaml).unwrap_or_else(|e| panic!("{name}: {e}"));
            (name, spec)
        })
        .collect()
}

/// The examples that ask for GPUs, each with the one worker it is checked on: a
/// default worker on a 2-core machine that declares the accelerators it needs (`--gpu`,
/// and `--pool inference` where the spec asks for that pool).
fn gpu_example_worker(name: &str) -> Option<WorkerCapacity> {
    let nvidia =
        |n: usize| -> Vec<(String, u64)> { (0..n).map(|i| (format!("GPU-{i}"), 16384)).collect() };
    let with = |cpu: f64, mem: u64, gpus: Vec<(String, u64)>, scenario| {
        let gpus: Vec<(&str, u64)> = gpus.iter().map(|(u, m)| (u.as_str(), *m)).collect();
        WorkerCapacity {
            scenario,
            ..worker("w1", cpu, mem, &gpus)
        }
    };
    match name {
        "gpu-square.yaml" => Some(with(2.0, 2048, nvidia(1), Scenario::General)),
        // Two inference containers asking for 2 cores and 4 GiB each: sized for a GPU
        // server, not a 2-core machine (and workers do not run containers yet).
        // The worker holds the classifier image (built locally: no registry).
        "log-enrichment.yaml" | "log-enrichment-v2.yaml" => Some(holding(
            with(8.0, 16384, nvidia(2), Scenario::Inference),
            &["weir/log-classifier:1", "weir/log-classifier:2"],
        )),
        _ => None,
    }
}

/// The examples run on one default worker of a 2-core machine: every one that needs
/// no GPU fits it whole through the scheduler, and so does each v2 beside the v1 it
/// upgrades (an upgrade's new PEs run next to the old ones until the switch); the GPU
/// examples fit one worker that declares the accelerators they ask for.
#[test]
fn every_example_fits_one_default_worker_of_a_two_core_machine() {
    let examples = examples();
    assert!(examples.len() >= 7, "{:?}", examples.keys());
    for (name, spec) in &examples {
        let reqs = requests_for(spec);
        let needs_gpu = reqs.iter().any(|r| r.gpu.is_some());
        let w = match gpu_example_worker(name) {
            Some(w) => w,
            None => {
                assert!(!needs_gpu, "{name} asks for a GPU: say where it is checked");
                two_core_default_worker()
            }
        };
        let p = place(std::slice::from_ref(&w), &reqs, &BTreeMap::new())
            .unwrap_or_else(|e| panic!("{name} does not fit: {e}"));
        assert_eq!(p.len(), reqs.len(), "{name}");
        // Nor may it listen where the default master (7000) and worker (7100, 7200)
        // already do on that machine: the PE would fail to bind.
        for op in &spec.operators {
            if let OperatorKind::SourceTcp(t) = &op.kind {
                let port = t.listen.rsplit(':').next().unwrap();
                assert!(
                    !["7000", "7100", "7200"].contains(&port),
                    "{name}: {} listens on {}, a default master or worker port",
                    op.name,
                    t.listen
                );
            }
        }
    }
    // v1 running, then v2's new PEs placed beside it, as the master places an upgrade.
    let mut upgrades = 0;
    for (name, v2) in &examples {
        let Some(v1) = name
            .strip_suffix("-v2.yaml")
            .map(|b| &examples[&format!("{b}.yaml")])
        else {
            continue;
        };
        if gpu_example_worker(name).is_some() {
            continue;
        }
        let mut w = two_core_default_worker();
        let old = requests_for(v1);
        let running = place(std::slice::from_ref(&w), &old, &BTreeMap::new()).unwrap();
        w.cpu_free -= old.iter().map(|r| r.cpu).sum::<f64>();
        w.memory_free_mb -= old.iter().map(|r| r.memory_mb).sum::<u64>();
        let kept: BTreeMap<PeId, String> =
            running.into_iter().map(|(pe, a)| (pe, a.worker)).collect();
        let new: Vec<PeRequest> = requests_for(v2)
            .into_iter()
            .filter(|r| !kept.contains_key(&r.pe))
            .collect();
        assert!(!new.is_empty(), "{name} starts new PEs");
        place(std::slice::from_ref(&w), &new, &kept)
            .unwrap_or_else(|e| panic!("upgrade to {name} does not fit beside v1: {e}"));
        upgrades += 1;
    }
    assert!(
        upgrades >= 2,
        "clickstream and fraud-scoring upgrades checked"
    );
}

const CONTAINER: &str = r#"
name: c
operators:
  - {name: src, kind: source.generator, params: {count: 10}}
  - {name: enrich, kind: container, parallelism: 2, params: {image: "acme/enrich"}}
  - {name: out, kind: sink.null}
streams:
  - {from: src, to: enrich, partitioning: round_robin}
  - {from: enrich, to: out, partitioning: round_robin}
"#;

fn container_pes(p: &BTreeMap<PeId, Assignment>) -> Vec<&str> {
    p.iter()
        .filter(|(pe, _)| pe.operator() == "enrich")
        .map(|(_, a)| a.worker.as_str())
        .collect()
}

#[test]
fn a_container_pe_goes_only_where_its_image_is() {
    let reqs = requests_for(&app(CONTAINER));
    assert_eq!(
        reqs.iter()
            .filter_map(|r| r.image.as_deref())
            .collect::<Vec<_>>(),
        ["acme/enrich", "acme/enrich"]
    );
    // w1 has the most free CPU and would win on score alone; only w2 holds the image
    // (`acme/enrich` means `acme/enrich:latest`).
    let ws = [
        holding(
            worker("w1", 16.0, 8192, &[]),
            &["acme/enrich:2", "other:latest"],
        ),
        holding(worker("w2", 4.0, 8192, &[]), &["acme/enrich:latest"]),
    ];
    let p = place(&ws, &reqs, &BTreeMap::new()).unwrap();
    assert_eq!(container_pes(&p), ["w2", "w2"]);
    // Built-in PEs still go anywhere.
    assert!(p.values().any(|a| a.worker == "w1"));
}

#[test]
fn among_workers_holding_the_image_the_usual_order_decides() {
    let reqs = requests_for(&app(CONTAINER));
    let ws = [
        holding(worker("w1", 8.0, 8192, &[]), &["acme/enrich:latest"]),
        holding(
            worker("w2", 8.0, 8192, &[]),
            &["docker.io/acme/enrich:latest"],
        ),
        worker("w3", 64.0, 65536, &[]),
    ];
    let p = place(&ws, &reqs, &BTreeMap::new()).unwrap();
    let mut on = container_pes(&p);
    on.sort();
    // Spread over both holders, never on w3 however much room it has.
    assert_eq!(on, ["w1", "w2"]);
}

#[test]
fn a_worker_that_would_pull_the_image_takes_the_pe_only_where_no_holder_fits() {
    let reqs = requests_for(&app(
        &CONTAINER.replace("acme/enrich", "reg.local:5000/enrich:1")
    ));
    let pulls = |w: WorkerCapacity| WorkerCapacity {
        registries: vec!["reg.local:5000".into()],
        ..w
    };
    // w1 pulls and has the most room; w2 holds the image: w2 takes both.
    let ws = [
        pulls(worker("w1", 64.0, 65536, &[])),
        holding(worker("w2", 4.0, 8192, &[]), &["reg.local:5000/enrich:1"]),
        worker("w3", 64.0, 65536, &[]),
    ];
    let p = place(&ws, &reqs, &BTreeMap::new()).unwrap();
    assert_eq!(container_pes(&p), ["w2", "w2"]);
    assert_eq!(
        Ok(p),
        reference::place_reference(&ws, &reqs, &BTreeMap::new())
    );
    // The holder has room for one: the other goes to the worker that pulls, never
    // to w3, which neither holds nor pulls.
    let reqs: Vec<PeRequest> = reqs.into_iter().filter(|r| r.image.is_some()).collect();
    let ws = [
        pulls(worker("w1", 64.0, 65536, &[])),
        holding(
            worker("w2", reqs[0].cpu * 1.5, 8192, &[]),
            &["reg.local:5000/enrich:1"],
        ),
        worker("w3", 64.0, 65536, &[]),
    ];
    let p = place(&ws, &reqs, &BTreeMap::new()).unwrap();
    let mut on = container_pes(&p);
    on.sort();
    assert_eq!(on, ["w1", "w2"]);
    // Another registry's image: nobody pulls it.
    let other = requests_for(&app(&CONTAINER.replace("acme/enrich", "reg.other/enrich:1")));
    let err = place(&ws, &other, &BTreeMap::new()).unwrap_err();
    assert!(err.why.contains("none pulls from its registry"), "{err}");
}

#[test]
fn an_image_named_by_id_or_digest_matches_the_held_image() {
    let id = "sha256:00000000000000000000000000000000000000000000000000000000000000ab";
    for reference in [
        id,
        &id[..7 + 12],
        "acme/enrich@sha256:feed",
        "docker.io/library/enrich-base",
    ] {
        let spec = CONTAINER.replace("acme/enrich", reference);
        let mut w = worker("w1", 8.0, 8192, &[]);
        w.images = Arc::new(vec![ImageInfo {
            id: id.into(),
            tags: vec!["enrich-base:latest".into()],
            digests: vec!["acme/enrich@sha256:feed".into()],
            size_bytes: 10,
        }]);
        let p = place(&[w], &requests_for(&app(&spec)), &BTreeMap::new())
            .unwrap_or_else(|e| panic!("{reference}: {e}"));
        assert_eq!(container_pes(&p), ["w1", "w1"], "{reference}");
    }
}

#[test]
fn an_image_no_worker_holds_leaves_the_pe_pending_with_the_reason() {
    let reqs = requests_for(&app(CONTAINER));
    let ws = [
        holding(worker("w1", 8.0, 8192, &[]), &["acme/enrich:1"]),
        worker("w2", 8.0, 8192, &[]),
    ];
    let err = place(&ws, &reqs, &BTreeMap::new()).unwrap_err();
    assert_eq!(err.pe.operator(), "enrich");
    assert!(
        err.why
            .contains(r#"image "acme/enrich" is on no alive worker"#)
            && err.why.contains("weirctl images"),
        "{err}"
    );
    // A holder that is lost does not count.
    let mut lost = holding(worker("w3", 8.0, 8192, &[]), &["acme/enrich:latest"]);
    lost.alive = false;
    let err = place(&[lost], &reqs, &BTreeMap::new()).unwrap_err();
    assert_eq!(err.why, "no alive worker");
    // A holder without room: the shortfall names the holders' capacity, not w2's.
    let ws = [
        holding(worker("w1", 0.01, 8192, &[]), &["acme/enrich:latest"]),
        worker("w2", 64.0, 65536, &[]),
    ];
    let err = place(&ws, &reqs, &BTreeMap::new()).unwrap_err();
    assert!(
        err.why.contains(
            r#"the most any alive worker holding or pulling image "acme/enrich" has free is 0.01 cores"#
        ),
        "{err}"
    );
}

mod props {
    use super::*;
    use proptest::prelude::*;

    fn workers() -> impl Strategy<Value = Vec<WorkerCapacity>> {
        proptest::collection::vec(
            (
                1u32..=16,
                256u64..=8192,
                proptest::collection::vec(1000u64..=40000, 0..=3),
                any::<bool>(),
            ),
            1..=5,
        )
        .prop_map(|ws| {
            ws.into_iter()
                .enumerate()
                .map(|(i, (cpu, mem, gpus, alive))| WorkerCapacity {
                    id: format!("w{i}"),
                    alive: alive || i == 0,
                    cpu_free: f64::from(cpu) / 2.0,
                    memory_free_mb: mem,
                    scenario: Scenario::General,
                    gpus: gpus
                        .into_iter()
                        .enumerate()
                        .map(|(j, m)| GpuSlot {
                            uuid: format!("w{i}-g{j}"),
                            vendor: Vendor::Nvidia,
                            memory_free_mb: m,
                            memory_total_mb: m,
                            model: "test".into(),
                        })
                        .collect(),
                    images: Arc::default(),
                    registries: Default::default(),
                })
                .collect()
        })
    }

    fn requests() -> impl Strategy<Value = Vec<PeRequest>> {
        proptest::collection::vec(
            (
                1u32..=8,
                64u64..=2048,
                proptest::option::of((1u32..=2, 1000u64..=30000)),
            ),
            1..=24,
        )
        .prop_map(|rs| {
            rs.into_iter()
                .enumerate()
                .map(|(i, (cpu, mem, gpu))| PeRequest {
                    pe: PeId(format!("op{}@00000000#{i}", i % 3).into()),
                    operator: format!("op{}", i % 3),
                    cpu: f64::from(cpu) / 4.0,
                    memory_mb: mem,
                    gpu: gpu.map(|(count, memory_mb)| GpuRequest {
                        count,
                        memory_mb,
                        vendor: Vendor::Nvidia,
                        scenario: Scenario::General,
                    }),
                    forward_peers: vec![],
                    peer_rates: vec![],
                    image: None,
                })
                .collect()
        })
    }

    proptest! {
        #[test]
        fn placements_never_exceed_capacity(ws in workers(), reqs in requests()) {
            match place(&ws, &reqs, &BTreeMap::new()) {
                Ok(p) => {
                    prop_assert_eq!(p.len(), reqs.len());
                    for w in &ws {
                        let mine: Vec<&PeRequest> = reqs.iter().filter(|r| p[&r.pe].worker == w.id).collect();
                        prop_assert!(w.alive || mine.is_empty(), "PE placed on a dead worker");
                        let cpu: f64 = mine.iter().map(|r| r.cpu).sum();
                        let mem: u64 = mine.iter().map(|r| r.memory_mb).sum();
                        prop_assert!(cpu <= w.cpu_free + 1e-6, "{} cpu {} > {}", w.id, cpu, w.cpu_free);
                        prop_assert!(mem <= w.memory_free_mb);
                        for d in &w.gpus {
                            let used: u64 = mine
                                .iter()
                                .filter_map(|r| r.gpu.as_ref().map(|g| (g, &p[&r.pe].gpus)))
                                .map(|(g, uuids)| g.memory_mb * uuids.iter().filter(|u| **u == d.uuid).count() as u64)
                                .sum();
                            prop_assert!(used <= d.memory_free_mb, "{} over-committed", d.uuid);
                        }
                    }
                    for r in &reqs {
                        let a = &p[&r.pe];
                        let want = r.gpu.as_ref().map_or(0, |g| g.count as usize);
                        let mut distinct = a.gpus.clone();
                        distinct.sort();
                        distinct.dedup();
                        prop_assert_eq!(distinct.len(), want, "slices of one PE share a device or are missing");
                    }
                }
                Err(e) => prop_assert!(reqs.iter().any(|r| r.pe == e.pe)),
            }
        }
    }
}

/// The indexed search chooses what the first scheduler chose, on inputs that exercise
/// every preference: forward peers (pending and already placed), operator spread, GPU
/// vendors, pools and best fit, images, dead workers, and refusals.
mod same_as_reference {
    use super::*;
    use proptest::prelude::*;

    const VENDORS: [Vendor; 3] = [Vendor::Nvidia, Vendor::Amd, Vendor::Any];
    const POOLS: [Scenario; 3] = [Scenario::Training, Scenario::Inference, Scenario::General];

    type Gpu = (usize, u32, u64);

    fn gpu_request((vendor, count, memory_mb): Gpu, pool: usize) -> GpuRequest {
        GpuRequest {
            count,
            memory_mb,
            vendor: VENDORS[vendor],
            scenario: POOLS[pool],
        }
    }

    fn workers() -> impl Strategy<Value = Vec<WorkerCapacity>> {
        proptest::collection::vec(
            (
                0u32..=64,
                0u64..=16384,
                proptest::collection::vec((0usize..2, 1000u64..=40000), 0..=4),
                0usize..3,
                0u8..10,
                0u8..3,
            ),
            1..=12,
        )
        .prop_map(|ws| {
            ws.into_iter()
                .enumerate()
                .map(|(i, (cpu, mem, gpus, pool, alive, image))| {
                    let w = WorkerCapacity {
                        // Ids out of position order: the search sorts them.
                        id: format!("w{}", (i * 7) % 13),
                        alive: alive > 0,
                        cpu_free: f64::from(cpu) / 4.0,
                        memory_free_mb: mem,
                        scenario: POOLS[pool],
                        gpus: gpus
                            .into_iter()
                            .enumerate()
                            .map(|(j, (vendor, m))| GpuSlot {
                                uuid: format!("w{i}-g{j}"),
                                vendor: VENDORS[vendor],
                                memory_free_mb: m,
                                memory_total_mb: m,
                                model: "test".into(),
                            })
                            .collect(),
                        images: Arc::default(),
                        registries: Default::default(),
                    };
                    // Holds the image, pulls it from Docker Hub, or neither.
                    match image {
                        0 => holding(w, &["acme/enrich:latest"]),
                        1 => WorkerCapacity {
                            registries: vec!["docker.io".into()],
                            ..w
                        },
                        _ => w,
                    }
                })
                .collect()
        })
    }

    /// Requests, and PEs already placed (index of a worker each).
    fn load() -> impl Strategy<Value = (Vec<PeRequest>, Vec<(usize, usize)>)> {
        let request = (
            1u32..=4,
            0u64..=1024,
            proptest::option::weighted(0.15, ((0usize..3, 1u32..=2, 1000u64..=30000), 0usize..3)),
            proptest::collection::vec(0usize..60, 0..=2),
            proptest::bool::weighted(0.1),
        );
        (
            proptest::collection::vec(request, 1..=40),
            proptest::collection::vec((0usize..60, 0usize..12), 0..=10),
        )
            .prop_map(|(rs, placed)| {
                let n = rs.len();
                let reqs = rs
                    .into_iter()
                    .enumerate()
                    .map(|(i, (cpu, mem, gpu, peers, image))| PeRequest {
                        pe: PeId(format!("op{}@00000000#{i}", i % 4).into()),
                        operator: format!("op{}", i % 4),
                        cpu: f64::from(cpu) / 8.0,
                        memory_mb: mem,
                        gpu: gpu.map(|(g, pool)| gpu_request(g, pool)),
                        // Peers among the pending PEs (below n) or the placed ones.
                        forward_peers: peers
                            .into_iter()
                            .map(|p| {
                                if p < n {
                                    PeId(format!("op{}@00000000#{p}", p % 4).into())
                                } else {
                                    PeId(format!("op{}@00000000#x{p}", p % 4).into())
                                }
                            })
                            .collect(),
                        peer_rates: Vec::new(),
                        image: image.then(|| "acme/enrich".to_string()),
                    })
                    .collect();
                (reqs, placed)
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]
        #[test]
        fn place_chooses_what_the_reference_chose(ws in workers(), (reqs, placed) in load()) {
            let placed: BTreeMap<PeId, String> = placed
                .into_iter()
                .map(|(p, w)| {
                    let pe = PeId(format!("op{}@00000000#x{p}", p % 4).into());
                    (pe, ws[w % ws.len()].id.clone())
                })
                .collect();
            prop_assert_eq!(place(&ws, &reqs, &placed), place_reference(&ws, &reqs, &placed));
        }
    }
}

/// `requests_for` as first written, from the full physical model.
fn requests_from_the_model(app: &AppSpec) -> Vec<PeRequest> {
    use weir_common::physical::PhysicalModel;
    let m = PhysicalModel::expand(app);
    let mut peers: BTreeMap<&PeId, Vec<PeId>> = BTreeMap::new();
    for s in app
        .streams
        .iter()
        .filter(|s| s.partitioning == Partitioning::Forward)
    {
        for c in m.channels.iter().filter(|c| c.stream == s.key()) {
            peers.entry(&c.from).or_default().push(c.to.clone());
            peers.entry(&c.to).or_default().push(c.from.clone());
        }
    }
    app.operators
        .iter()
        .flat_map(|op| {
            m.pes_of(&op.name).into_iter().map(|p| PeRequest {
                pe: p.id.clone(),
                operator: op.name.clone(),
                cpu: op.resources.cpu,
                memory_mb: op.resources.memory_mb,
                gpu: op.resources.gpu.clone(),
                forward_peers: peers.get(&p.id).cloned().unwrap_or_default(),
                peer_rates: Vec::new(),
                image: match &op.kind {
                    OperatorKind::Container(c) => Some(c.image.clone()),
                    _ => None,
                },
            })
        })
        .collect()
}

#[test]
fn requests_match_the_physical_model() {
    // Parallelism above 10 too: PE ids sort as text (`#10` < `#2`) in the model.
    let wide = PIPE
        .replace(
            "parallelism: 3, params: {count",
            "parallelism: 12, params: {count",
        )
        .replace("kind: map, parallelism: 3", "kind: map, parallelism: 12");
    let mut specs: Vec<AppSpec> = examples().into_values().collect();
    specs.extend([app(PIPE), app(&wide), app(CONTAINER)]);
    for spec in &specs {
        assert_eq!(
            requests_for(spec),
            requests_from_the_model(spec),
            "{}",
            spec.name
        );
    }
    assert!(requests_for(&app(&wide))
        .iter()
        .any(|r| r.pe.as_str().ends_with("#11") && r.forward_peers.len() == 1));
}

/// With measured rates, a PE joins the partner of its heaviest stream; without, the
/// usual order (most free CPU) decides.
#[test]
fn measured_rates_put_a_pe_beside_its_heaviest_stream() {
    let spec = app(r#"
name: t
operators:
  - {name: a, kind: source.generator, params: {count: 1}}
  - {name: b, kind: source.generator, params: {count: 1}}
  - {name: c, kind: sink.null}
streams:
  - {from: a, to: c}
  - {from: b, to: c}
"#);
    let reqs = requests_for(&spec);
    let id = |op: &str| reqs.iter().find(|r| r.operator == op).unwrap().pe.clone();
    let placed: BTreeMap<PeId, String> = [(id("a"), "w1".into()), (id("b"), "w2".into())].into();
    let ws = [worker("w1", 8.0, 8192, &[]), worker("w2", 4.0, 8192, &[])];
    let mut pending: Vec<PeRequest> = reqs.iter().filter(|r| r.operator == "c").cloned().collect();
    assert_eq!(pending[0].forward_peers.len(), 2);
    let unmeasured = place(&ws, &pending, &placed).unwrap();
    assert_eq!(unmeasured[&id("c")].worker, "w1", "most free CPU");
    weigh(&mut pending, &spec, |pe| match pe.operator() {
        "a" => Some((0.0, 100.0)),
        "b" => Some((0.0, 10_000.0)),
        _ => None,
    });
    assert_eq!(pending[0].peer_rates.len(), 2);
    let measured = place(&ws, &pending, &placed).unwrap();
    assert_eq!(
        measured[&id("c")].worker,
        "w2",
        "beside b, its heaviest input"
    );
}
