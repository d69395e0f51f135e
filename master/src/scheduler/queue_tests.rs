use super::*;
use crate::state::{fixtures, Command, PeId, Quota};

fn text(name: &str, tenant: &str, extra: &str) -> String {
    format!(
        "name: {name}\ntenant: {tenant}\n{extra}operators:\n  - {{name: g, kind: source.generator, params: {{count: 1}}, resources: {{cpu: 1, memory_mb: 100}}}}\n  - {{name: s, kind: sink.null, resources: {{cpu: 1, memory_mb: 100}}}}\nstreams:\n  - {{from: g, to: s}}\n"
    )
}

fn cluster() -> ClusterState {
    let mut s = ClusterState::default();
    let mut w = fixtures::worker("w1");
    w.cpu_cores = 100.0;
    w.memory_mb = 100_000;
    s.apply(&Command::RegisterWorker { worker: w }).unwrap();
    s
}

fn submit(s: &mut ClusterState, name: &str, tenant: &str, extra: &str, at_ms: u64) {
    fixtures::submit_text(s, &text(name, tenant, extra), at_ms);
}

/// Serves the queue with room for `room` apps; answers the examination order and
/// each entry's wait kind ("placed" for none).
fn run(s: &ClusterState, now: u64, room: usize) -> Vec<(String, &'static str)> {
    let mut left = room;
    serve(
        s,
        now,
        QueueOrder::Fair,
        &usage::held(s),
        &usage::shares(s, now, usage::SHARE_WINDOW_MS),
        |_| true,
        |_| {
            if left == 0 {
                return Err(Wait::Capacity("no room".into()));
            }
            left -= 1;
            Ok(())
        },
    )
    .into_iter()
    .map(|(e, w)| (e.app.name.clone(), w.as_ref().map_or("placed", Wait::kind)))
    .collect()
}

fn names(order: &[(String, &'static str)]) -> Vec<String> {
    order.iter().map(|(n, _)| n.clone()).collect()
}

use super::super::usage;

#[test]
fn higher_classes_first_then_arrival() {
    let mut s = cluster();
    submit(&mut s, "a-low", "t", "priority: low\n", 1);
    submit(&mut s, "b-normal", "t", "", 2);
    submit(&mut s, "c-high", "t", "priority: high\n", 3);
    submit(&mut s, "d-normal", "t", "", 0);
    let order = run(&s, 10, 10);
    assert_eq!(names(&order), ["c-high", "d-normal", "b-normal", "a-low"]);
    assert!(order.iter().all(|(_, w)| *w == "placed"));
}

#[test]
fn tenants_are_served_in_turn_by_share() {
    let mut s = cluster();
    for i in 0..3 {
        submit(&mut s, &format!("web-{i}"), "web", "", i);
    }
    for i in 0..3 {
        submit(&mut s, &format!("mob-{i}"), "mobile", "", 10 + i);
    }
    // Equal shares: web's older app first, then mobile's (web now holds more), ...
    let order = run(&s, 100, 10);
    assert_eq!(
        names(&order),
        ["web-0", "mob-0", "web-1", "mob-1", "web-2", "mob-2"]
    );
}

#[test]
fn the_least_served_tenant_goes_first() {
    let mut s = cluster();
    submit(&mut s, "old", "web", "", 0);
    s.apply(&Command::SetPlacement {
        app: "old".into(),
        placement: [(PeId::from("g@0"), "w1".to_string())].into(),
        gpus: Default::default(),
        at_ms: 1,
    })
    .unwrap();
    submit(&mut s, "web-new", "web", "", 1);
    submit(&mut s, "mob-new", "mobile", "", 2);
    // web holds 2 % of the cluster's cores all window long; mobile nothing.
    let order = run(&s, usage::SHARE_WINDOW_MS + 100, 10);
    assert_eq!(names(&order), ["mob-new", "web-new"]);
}

#[test]
fn aging_lifts_a_low_app_to_the_high_class() {
    let mut s = cluster();
    submit(&mut s, "low", "t", "priority: low\n", 0);
    submit(&mut s, "high", "t", "priority: high\n", 2 * AGING_MS - 1);
    // Just before two aging steps the high app still goes first; then arrival decides.
    assert_eq!(names(&run(&s, 2 * AGING_MS - 1, 10)), ["high", "low"]);
    assert_eq!(names(&run(&s, 2 * AGING_MS, 10)), ["low", "high"]);
    assert_eq!(rank(Priority::Low, 100 * AGING_MS), rank(Priority::High, 0));
}

#[test]
fn start_conditions_hold_an_app_back() {
    let mut s = cluster();
    submit(&mut s, "later", "t", "start: {not_before: 5000}\n", 0);
    submit(&mut s, "model", "t", "start: {after: [store]}\n", 0);
    let order = run(&s, 100, 10);
    assert_eq!(
        order,
        [
            ("later".to_string(), "not_before"),
            ("model".to_string(), "after")
        ]
    );
    assert_eq!(
        gate(&s, &s.apps["model"], 100).unwrap().to_string(),
        "start.after: app \"store\" does not exist (yet)"
    );
    submit(&mut s, "store", "t", "", 1);
    assert_eq!(
        gate(&s, &s.apps["model"], 100).unwrap().to_string(),
        "start.after: app \"store\" has not started"
    );
    s.apply(&Command::SetPlacement {
        app: "store".into(),
        placement: [(PeId::from("g@0"), "w1".to_string())].into(),
        gpus: Default::default(),
        at_ms: 200,
    })
    .unwrap();
    let order = run(&s, 5000, 10);
    assert_eq!(
        order,
        [
            ("later".to_string(), "placed"),
            ("model".to_string(), "placed")
        ]
    );
}

#[test]
fn a_quota_holds_back_only_its_tenant() {
    let mut s = cluster();
    s.apply(&Command::SetQuota {
        tenant: "web".into(),
        quota: Some(Quota {
            pes: Some(3),
            ..Quota::default()
        }),
    })
    .unwrap();
    submit(&mut s, "web-0", "web", "", 0);
    submit(&mut s, "web-1", "web", "", 1);
    submit(&mut s, "mob-0", "mobile", "", 2);
    // Two PEs each: web-0 fits the quota of 3, web-1 not beside it.
    let order = run(&s, 10, 10);
    assert_eq!(
        order,
        [
            ("web-0".to_string(), "placed"),
            ("mob-0".to_string(), "placed"),
            ("web-1".to_string(), "quota")
        ]
    );
}

#[test]
fn small_apps_backfill_until_a_large_one_starves() {
    let mut s = cluster();
    submit(&mut s, "big", "t", "priority: high\n", 0);
    submit(&mut s, "small", "u", "", 1);
    // `big` never fits now; `small` does: backfilled.
    let serve_with = |s: &ClusterState, now: u64| {
        serve(
            s,
            now,
            QueueOrder::Fair,
            &usage::held(s),
            &BTreeMap::new(),
            |_| true,
            |a| {
                if a.name == "big" {
                    Err(Wait::Capacity("no room for big".into()))
                } else {
                    Ok(())
                }
            },
        )
        .into_iter()
        .map(|(e, w)| (e.app.name.clone(), w))
        .collect::<Vec<_>>()
    };
    let early = serve_with(&s, 10);
    assert_eq!(early[0].1, Some(Wait::Capacity("no room for big".into())));
    assert_eq!(early[1], ("small".to_string(), None));
    let late = serve_with(&s, STARVING_MS);
    assert_eq!(
        late[1],
        ("small".to_string(), Some(Wait::Behind("big".into())))
    );
}

fn gpu_text(name: &str, vendor: &str) -> String {
    format!(
        "name: {name}\noperators:\n  - {{name: g, kind: source.generator, params: {{count: 1}}}}\n  - {{name: m, kind: exec, params: {{command: [cat]}}, resources: {{gpu: {{count: 1, memory_mb: 1000, vendor: {vendor}}}}}}}\n  - {{name: s, kind: sink.null}}\nstreams:\n  - {{from: g, to: m}}\n  - {{from: m, to: s}}\n"
    )
}

#[test]
fn a_starving_gpu_app_lets_only_apps_of_other_gpu_vendors_pass() {
    let mut s = cluster();
    fixtures::submit_text(&mut s, &gpu_text("big", "nvidia"), 0);
    fixtures::submit_text(&mut s, &gpu_text("amd-app", "amd"), 1);
    fixtures::submit_text(&mut s, &gpu_text("nv-app", "nvidia"), 2);
    fixtures::submit_text(&mut s, &gpu_text("any-app", "any"), 3);
    fixtures::submit_text(&mut s, &text("cpu-app", "default", ""), 4);
    let order: Vec<(String, Option<Wait>)> = serve(
        &s,
        STARVING_MS,
        QueueOrder::Fair,
        &usage::held(&s),
        &BTreeMap::new(),
        |_| true,
        |a| {
            if a.name == "big" {
                Err(Wait::Capacity("no room for big".into()))
            } else {
                Ok(())
            }
        },
    )
    .into_iter()
    .map(|(e, w)| (e.app.name.clone(), w))
    .collect();
    let behind = Some(Wait::Behind("big".into()));
    assert_eq!(
        order,
        [
            (
                "big".to_string(),
                Some(Wait::Capacity("no room for big".into()))
            ),
            ("amd-app".to_string(), None),
            ("nv-app".to_string(), behind.clone()),
            ("any-app".to_string(), behind.clone()),
            ("cpu-app".to_string(), behind),
        ]
    );
}

#[test]
fn after_names_only_the_tenants_own_apps_and_refuses_a_cycle() {
    let mut s = cluster();
    submit(&mut s, "store", "other", "", 0);
    s.apply(&Command::SetPlacement {
        app: "store".into(),
        placement: [(PeId::from("g@0"), "w1".to_string())].into(),
        gpus: Default::default(),
        at_ms: 5,
    })
    .unwrap();
    submit(&mut s, "model", "t", "start: {after: [store]}\n", 1);
    // Another tenant's app is not there for it, running or not.
    assert_eq!(
        gate(&s, &s.apps["model"], 10).unwrap().to_string(),
        "start.after: app \"store\" does not exist (yet)"
    );
    submit(&mut s, "a", "t", "start: {after: [b]}\n", 2);
    let t = text("b", "t", "start: {after: [a]}\n");
    let e = s
        .apply(&Command::SubmitApp {
            spec: weir_common::spec::parse_app(&t, weir_common::spec::SpecFormat::Yaml).unwrap(),
            spec_text: t,
            at_ms: 3,
            request_id: String::new(),
            generated: Default::default(),
            signature: None,
        })
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "start.after: b -> a -> b: these apps would wait for each other forever"
    );
}

#[test]
fn what_a_preempting_app_frees_is_kept_from_the_entries_behind_it() {
    let mut s = cluster();
    submit(&mut s, "urgent", "t", "priority: high\n", 0);
    submit(&mut s, "small", "u", "", 1);
    let order: Vec<(String, Option<Wait>)> = serve(
        &s,
        10,
        QueueOrder::Fair,
        &usage::held(&s),
        &BTreeMap::new(),
        |_| true,
        |a| {
            if a.name == "urgent" {
                Err(Wait::Preempting(vec!["batch".into()]))
            } else {
                Ok(())
            }
        },
    )
    .into_iter()
    .map(|(e, w)| (e.app.name.clone(), w))
    .collect();
    assert_eq!(
        order[1],
        ("small".to_string(), Some(Wait::Behind("urgent".into())))
    );
}
