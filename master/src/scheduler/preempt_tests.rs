use super::*;
use crate::executor::reconcile::{capacities, reconcile};
use crate::state::{fixtures, Command, GpuRecord};

fn app(name: &str, priority: &str, gpu_mb: u64) -> String {
    format!(
        "name: {name}\npriority: {priority}\noperators:\n  - {{name: g, kind: source.generator, params: {{count: 1}}}}\n  - {{name: m, kind: exec, params: {{command: [cat]}}, resources: {{gpu: {{count: 1, memory_mb: {gpu_mb}}}}}}}\n  - {{name: s, kind: sink.null}}\nstreams:\n  - {{from: g, to: m}}\n  - {{from: m, to: s}}\n"
    )
}

/// One worker with one 16,000 MiB device; `running` submitted and placed in order
/// (placed at 1, 2, ...).
fn cluster(running: &[(&str, &str, u64)]) -> ClusterState {
    let mut s = ClusterState::default();
    let mut w = fixtures::worker("w1");
    w.cpu_cores = 64.0;
    w.memory_mb = 64_000;
    w.gpus = vec![GpuRecord {
        uuid: "GPU-0".into(),
        vendor: "nvidia".into(),
        model: "test".into(),
        memory_total_mb: 16_000,
        declared: true,
    }];
    s.apply(&Command::RegisterWorker { worker: w }).unwrap();
    for (i, (name, prio, mb)) in running.iter().enumerate() {
        fixtures::submit_text(&mut s, &app(name, prio, *mb), 0);
        let a = reconcile(&s, &BTreeMap::new(), 10);
        let (n, placement) = a.placements[0].clone();
        s.apply(&Command::SetPlacement {
            gpus: a.gpus[&n].clone(),
            app: n,
            placement,
            at_ms: i as u64 + 1,
        })
        .unwrap();
    }
    s
}

use std::collections::{BTreeMap, BTreeSet};

#[test]
fn a_high_app_preempts_the_fewest_most_recent_low_apps() {
    let mut s = cluster(&[("old", "low", 6_000), ("new", "low", 6_000)]);
    fixtures::submit_text(&mut s, &app("urgent", "high", 8_000), 5);
    let free = capacities(&s);
    // 4,000 MiB free; freeing the newest low app makes 10,000: enough.
    assert_eq!(
        victims(
            &s,
            &s.apps["urgent"],
            &free,
            &DevicePolicy::default(),
            &BTreeSet::new()
        ),
        Some(vec!["new".to_string()])
    );
    fixtures::submit_text(&mut s, &app("normal", "normal", 8_000), 6);
    assert_eq!(
        victims(
            &s,
            &s.apps["normal"],
            &free,
            &DevicePolicy::default(),
            &BTreeSet::new()
        ),
        None,
        "only high preempts"
    );
    fixtures::submit_text(&mut s, &app("huge", "high", 15_000), 7);
    assert_eq!(
        victims(
            &s,
            &s.apps["huge"],
            &free,
            &DevicePolicy::default(),
            &BTreeSet::new()
        )
        .map(|mut v| {
            v.sort();
            v
        }),
        Some(vec!["new".to_string(), "old".to_string()])
    );
    fixtures::submit_text(&mut s, &app("impossible", "high", 17_000), 8);
    assert_eq!(
        victims(
            &s,
            &s.apps["impossible"],
            &free,
            &DevicePolicy::default(),
            &BTreeSet::new()
        ),
        None
    );
}

#[test]
fn normal_apps_are_never_preempted() {
    let mut s = cluster(&[("steady", "normal", 12_000)]);
    fixtures::submit_text(&mut s, &app("urgent", "high", 8_000), 5);
    assert_eq!(
        victims(
            &s,
            &s.apps["urgent"],
            &capacities(&s),
            &DevicePolicy::default(),
            &BTreeSet::new()
        ),
        None
    );
}

#[test]
fn the_reconciler_preempts_and_the_victim_queues_to_resume_from_its_checkpoint() {
    let mut s = cluster(&[("batch", "low", 12_000)]);
    fixtures::submit_text(&mut s, &app("urgent", "high", 8_000), 5);
    let a = reconcile(&s, &BTreeMap::new(), 100);
    assert!(a.placements.is_empty(), "{a:?}");
    assert_eq!(a.preemptions, [("batch".to_string(), "urgent".to_string())]);
    assert_eq!(
        a.queue[0].wait,
        super::super::queue::Wait::Preempting(vec!["batch".into()])
    );
    let attempt = s.apps["batch"].checkpoints.attempt("m");
    s.apply(&Command::Preempt {
        app: "batch".into(),
        by: "urgent".into(),
        at_ms: 100,
    })
    .unwrap();
    let b = &s.apps["batch"];
    assert_eq!(b.state(), AppState::Submitted);
    assert!(b.placement.is_empty() && b.gpus.is_empty());
    assert_eq!(b.checkpoints.attempt("m"), attempt + 1);
    assert_eq!(b.queued_at(), 100);
    // Now urgent fits, and batch waits behind it for the device.
    let a = reconcile(&s, &BTreeMap::new(), 200);
    assert_eq!(a.placements.len(), 1);
    assert_eq!(a.placements[0].0, "urgent");
    assert_eq!(a.queue.len(), 1);
    assert_eq!(a.queue[0].app, "batch");
    assert!(a.preemptions.is_empty(), "a low app never preempts back");
    // A second preemption of a queued app is refused.
    assert!(s
        .apply(&Command::Preempt {
            app: "batch".into(),
            by: "urgent".into(),
            at_ms: 300,
        })
        .is_err());
}

#[test]
fn a_victim_is_stopped_once_its_fresh_checkpoint_is_complete() {
    let mut s = cluster(&[("batch", "low", 12_000)]);
    let chosen = |s: &ClusterState| Pending {
        by: "urgent".into(),
        after_id: s.apps["batch"].checkpoints.last_id,
        since_ms: 1_000,
    };
    let p = chosen(&s);
    let stop =
        |s: &ClusterState, on: bool, now: u64| stop_when(&s.apps["batch"], &p, on, now, 5_000);
    // Checkpoints on: wait for one begun after the choice.
    assert_eq!(stop(&s, true, 1_100), Stop::AfterCheckpoint);
    // Off: nothing to wait for. Too long: stop anyway.
    assert_eq!(stop(&s, false, 1_100), Stop::Now);
    assert_eq!(stop(&s, true, 6_000), Stop::Now);
    let id = p.after_id + 1;
    s.apply(&Command::BeginCheckpoint {
        app: "batch".into(),
        id,
        at_ms: 1_200,
    })
    .unwrap();
    assert_eq!(stop(&s, true, 1_300), Stop::AfterCheckpoint, "in flight");
    // No PE keeps state: nothing stored, an empty set of pieces.
    let pieces = BTreeMap::new();
    s.apply(&Command::CompleteCheckpoint {
        app: "batch".into(),
        id,
        at_ms: 1_400,
        max_alignment_ms: 0,
        pieces,
    })
    .unwrap();
    assert_eq!(
        stop(&s, true, 1_500),
        Stop::Now,
        "the fresh one is complete"
    );
    // A checkpoint complete before the choice is not fresh.
    let later = chosen(&s);
    assert_eq!(
        stop_when(&s.apps["batch"], &later, true, 1_500, 5_000),
        Stop::AfterCheckpoint
    );
}
