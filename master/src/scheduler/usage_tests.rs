use super::*;
use crate::state::{fixtures, Command, PeId, Quota};
use weir_common::spec::{parse_app, SpecFormat};

fn spec(name: &str, tenant: &str, extra: &str) -> String {
    format!(
        "name: {name}\ntenant: {tenant}\noperators:\n  - {{name: g, kind: source.generator, parallelism: 2, params: {{count: 1}}, resources: {{cpu: 0.5, memory_mb: 100}}}}\n  - {{name: m, kind: exec, params: {{command: [cat]}}, resources: {{cpu: 1, memory_mb: 1000, gpu: {{count: 2, memory_mb: 4000}}}}}}\n  - {{name: s, kind: sink.null, resources: {{cpu: 1, memory_mb: 100}}}}\n{extra}streams:\n  - {{from: g, to: m, partitioning: round_robin}}\n  - {{from: m, to: s}}\n"
    )
}

fn place(s: &mut ClusterState, app: &str, at_ms: u64) {
    s.apply(&Command::SetPlacement {
        app: app.into(),
        placement: [(PeId::from("g@0"), "w1".to_string())].into(),
        gpus: Default::default(),
        at_ms,
    })
    .unwrap();
}

#[test]
fn an_apps_demand_is_parallelism_times_resources() {
    let d = Demand::of_spec(&parse_app(&spec("a", "t", ""), SpecFormat::Yaml).unwrap());
    assert_eq!(
        d,
        Demand {
            cpu: 3.0,
            memory_mb: 1300,
            gpus: 2,
            gpu_memory_mb: 8000,
            pes: 4
        }
    );
}

#[test]
fn a_quota_refusal_names_the_first_limit_passed() {
    let held = Demand {
        cpu: 3.0,
        gpus: 1,
        ..Demand::default()
    };
    let more = Demand {
        cpu: 1.0,
        gpus: 2,
        ..Demand::default()
    };
    let q = Quota {
        cpu: Some(4.0),
        gpus: Some(2),
        ..Quota::default()
    };
    let why = over_quota("web", &q, &held, &more).unwrap();
    assert_eq!(
        why,
        "quota.gpus: tenant \"web\" may hold 2 GPU slices; it holds 1 GPU slices and this needs 2 GPU slices more"
    );
    let cpu = Quota {
        cpu: Some(3.5),
        ..Quota::default()
    };
    assert!(over_quota("web", &cpu, &held, &more)
        .unwrap()
        .starts_with("quota.cpu: tenant \"web\" may hold 3.5 cores; it holds 3 cores"));
    // Exactly at the limit is allowed.
    let exact = Quota {
        cpu: Some(4.0),
        gpus: Some(3),
        pes: Some(0),
        ..Quota::default()
    };
    assert_eq!(over_quota("web", &exact, &held, &more), None);
}

#[test]
fn tenants_hold_only_placed_live_apps() {
    let mut s = ClusterState::default();
    s.apply(&Command::RegisterWorker {
        worker: fixtures::worker("w1"),
    })
    .unwrap();
    fixtures::submit_text(&mut s, &spec("a", "web", ""), 0);
    fixtures::submit_text(&mut s, &spec("b", "web", ""), 0);
    fixtures::submit_text(&mut s, &spec("c", "mobile", ""), 0);
    assert!(held(&s).is_empty(), "nothing placed, nothing held");
    place(&mut s, "a", 10);
    place(&mut s, "c", 10);
    let h = held(&s);
    assert_eq!(h["web"].pes, 4);
    assert_eq!(h["mobile"].gpus, 2);
    s.apply(&Command::CancelApp {
        name: "a".into(),
        at_ms: 20,
        request_id: String::new(),
    })
    .unwrap();
    assert!(!held(&s).contains_key("web"));
}

#[test]
fn shares_average_the_dominant_share_over_the_window() {
    let mut s = ClusterState::default();
    let mut w = fixtures::worker("w1");
    w.cpu_cores = 8.0;
    w.memory_mb = 100_000;
    w.gpus = (0..4)
        .map(|i| crate::state::GpuRecord {
            uuid: format!("GPU-{i}"),
            vendor: "nvidia".into(),
            model: "test".into(),
            memory_total_mb: 16_000,
            declared: true,
        })
        .collect();
    s.apply(&Command::RegisterWorker { worker: w }).unwrap();
    fixtures::submit_text(&mut s, &spec("a", "web", ""), 0);
    // Cores dominate: 3 of 8 (8,000 of 64,000 MiB of GPU memory is less).
    let t = Totals::of(&s);
    let a = Demand::of_spec(&s.apps["a"].current().spec);
    assert_eq!(t.dominant_share(&a), 0.375);
    let window = 1000;
    place(&mut s, "a", 10_000);
    // Placed for half the window: half its share.
    let sh = shares(&s, 10_500, window);
    assert!((sh["web"] - 0.1875).abs() < 1e-9, "{sh:?}");
    let sh = shares(&s, 12_000, window);
    assert!((sh["web"] - 0.375).abs() < 1e-9, "{sh:?}");
    s.apply(&Command::CancelApp {
        name: "a".into(),
        at_ms: 12_250,
        request_id: String::new(),
    })
    .unwrap();
    // Ended a quarter of the window ago: three quarters of its share remain.
    let sh = shares(&s, 12_500, window);
    assert!((sh["web"] - 0.28125).abs() < 1e-9, "{sh:?}");
    assert!(shares(&s, 14_000, window).is_empty(), "out of the window");
}
