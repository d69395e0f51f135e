//! The reconciler's decisions on hand-built states: no network, no Raft.

use super::reconcile::{reconcile, reconcile_with, PlacementMemo, SeenPe};
use super::request::{deploy_pe, moved_channels, View};
use crate::scheduler::Policy;
use crate::state::{ClusterState, Command, WorkerRecord, WorkerState};
use std::collections::BTreeMap;
use weir_common::physical::{PeId, PhysicalModel};
use weir_common::spec::{parse_app, SpecFormat};
use weir_proto::v1 as pb;

const APP: &str = include_str!("../../../examples/clickstream.yaml");

fn worker(id: &str) -> WorkerRecord {
    WorkerRecord {
        control_address: format!("{id}:1"),
        data_address: format!("{id}:2"),
        cpu_cores: 8.0,
        memory_mb: 8192,
        ..crate::state::fixtures::worker(id)
    }
}

fn state(workers: &[&str]) -> ClusterState {
    let mut s = ClusterState::default();
    for w in workers {
        s.apply(&Command::RegisterWorker { worker: worker(w) })
            .unwrap();
    }
    s.apply(&Command::SubmitApp {
        spec: parse_app(APP, SpecFormat::Yaml).unwrap(),
        spec_text: APP.into(),
        at_ms: 1,
        request_id: String::new(),
        generated: Default::default(),
        signature: None,
    })
    .unwrap();
    s
}

const NOW: u64 = 1_000_000;

fn seen_all(s: &ClusterState, state: pb::PeState) -> BTreeMap<String, Vec<SeenPe>> {
    let mut seen: BTreeMap<String, Vec<SeenPe>> = BTreeMap::new();
    for w in s.workers.keys() {
        seen.entry(w.clone()).or_default();
    }
    for (pe, w) in &s.apps["clickstream"].placement {
        seen.entry(w.clone()).or_default().push(SeenPe {
            pe: pe.to_string(),
            app: "clickstream".into(),
            state,
            ..Default::default()
        });
    }
    seen
}

fn place(s: &mut ClusterState) {
    let a = reconcile(s, &BTreeMap::new(), NOW);
    assert_eq!(a.placements.len(), 1);
    let (app, placement) = a.placements[0].clone();
    let gpus = a.gpus.get(&app).cloned().unwrap_or_default();
    s.apply(&Command::SetPlacement {
        app,
        placement,
        gpus,
        at_ms: 0,
    })
    .unwrap();
}

#[test]
fn a_new_app_is_placed_whole_then_deployed_pe_by_pe() {
    let mut s = state(&["w1", "w2"]);
    let a = reconcile(&s, &BTreeMap::new(), NOW);
    let placement = &a.placements[0].1;
    assert_eq!(placement.len(), 10, "every PE of clickstream");
    assert!(
        a.deploys.is_empty(),
        "nothing deploys before the placement is committed"
    );
    place(&mut s);
    // Both workers report, running nothing: every PE is deployed where it is placed.
    let empty: BTreeMap<String, Vec<SeenPe>> =
        [("w1".to_string(), vec![]), ("w2".to_string(), vec![])].into();
    let a = reconcile(&s, &empty, NOW);
    assert!(a.placements.is_empty());
    assert_eq!(a.deploys.len(), 10);
    for (_, pe, w) in &a.deploys {
        assert_eq!(&s.apps["clickstream"].placement[pe], w);
    }
    // Once they run, nothing more to do; once all stopped, the app finished; a failed
    // one restarts its region.
    assert_eq!(
        reconcile(&s, &seen_all(&s, pb::PeState::Running), NOW),
        Default::default()
    );
    assert_eq!(
        reconcile(&s, &seen_all(&s, pb::PeState::Stopped), NOW),
        super::reconcile::Actions {
            finished: vec!["clickstream".into()],
            ..Default::default()
        }
    );
    let a = reconcile(&s, &seen_all(&s, pb::PeState::Failed), NOW);
    assert!(a.deploys.is_empty());
    assert_eq!(a.recoveries.len(), 1);
    let r = &a.recoveries[0];
    assert_eq!(r.operators.len(), 6, "clickstream is one region: {r:?}");
    assert_eq!(r.checkpoint_id, 0, "no checkpoint yet: empty state");
    assert!(r.reason.contains("failed"), "{}", r.reason);
    assert_eq!(
        &r.placement, &s.apps["clickstream"].placement,
        "nobody moves"
    );
    recover(&mut s, r);
    // Every PE still reports attempt 0: each is redeployed under attempt 1.
    let a = reconcile(&s, &seen_all(&s, pb::PeState::Running), NOW + 10_000);
    assert_eq!(a.deploys.len(), 10);
    assert!(a.recoveries.is_empty());
}

fn recover(s: &mut ClusterState, r: &crate::executor::reconcile::RecoveryAction) {
    s.apply(&Command::Recover {
        app: r.app.clone(),
        operators: r.operators.clone(),
        checkpoint_id: r.checkpoint_id,
        placement: r.placement.clone(),
        reason: r.reason.clone(),
        at_ms: NOW,
        drop_checkpoint: r.drop_checkpoint,
        gpus: r.gpus.clone(),
    })
    .unwrap();
}

fn checkpoint(s: &mut ClusterState, id: u64) {
    checkpoint_on(s, id, |w| vec![w.to_string()]);
}

/// A complete checkpoint `id` whose pieces have copies on `replicas(their worker)`.
fn checkpoint_on(s: &mut ClusterState, id: u64, replicas: impl Fn(&str) -> Vec<String>) {
    s.apply(&Command::BeginCheckpoint {
        app: "clickstream".into(),
        id,
        at_ms: id,
    })
    .unwrap();
    let pieces = s.apps["clickstream"]
        .placement
        .iter()
        .map(|(pe, w)| {
            (
                pe.clone(),
                crate::state::PieceRecord {
                    size_bytes: 8,
                    crc32c: 1,
                    replicas: replicas(w),
                    chain: vec![],
                    seed: vec![],
                },
            )
        })
        .collect();
    s.apply(&Command::CompleteCheckpoint {
        app: "clickstream".into(),
        id,
        at_ms: id + 1,
        max_alignment_ms: 0,
        pieces,
    })
    .unwrap();
}

#[test]
fn a_restarted_worker_restarts_the_region_from_the_newest_checkpoint() {
    let mut s = state(&["w1", "w2"]);
    place(&mut s);
    checkpoint(&mut s, 1);
    checkpoint(&mut s, 2);
    let w = s.workers["w1"].clone();
    s.apply(&Command::RegisterWorker { worker: w }).unwrap();
    let a = reconcile(&s, &seen_all(&s, pb::PeState::Running), NOW);
    assert_eq!(a.recoveries.len(), 1, "{a:?}");
    let r = &a.recoveries[0];
    assert_eq!(r.checkpoint_id, 2);
    assert!(r.reason.contains("worker w1 restarted"), "{}", r.reason);
    recover(&mut s, r);
    let app = &s.apps["clickstream"];
    assert!(app.checkpoints.attempts.values().all(|a| *a == 1));
    assert!(app.checkpoints.restore.values().all(|c| *c == 2));
    // Deploys now carry the attempt and where each snapshot is.
    let model = PhysicalModel::expand(&app.current().spec);
    let pe = app.placement.keys().next().unwrap();
    let h = pb::CommandHeader::default();
    let req = deploy_pe(&View::current(app), &model, pe, &s.workers, h).unwrap();
    assert_eq!(req.attempt, 1);
    assert_eq!(req.restore_checkpoint_id, 2);
    assert_eq!(req.restore_from.len(), 1);
    assert_eq!(req.restore_from[0].worker_id, app.placement[pe]);
    // The incarnations were refreshed: no second recovery.
    let mut seen = seen_all(&s, pb::PeState::Running);
    for pes in seen.values_mut() {
        for p in pes {
            p.attempt = 1;
        }
    }
    assert_eq!(reconcile(&s, &seen, NOW + 60_000), Default::default());
}

#[test]
fn a_worker_loss_restores_the_newest_checkpoint_with_a_copy_on_a_live_worker() {
    let both = |_: &str| vec!["w1".to_string(), "w2".to_string()];
    let lose = |s: &mut ClusterState, w: &str| {
        s.apply(&Command::SetWorkerState {
            id: w.into(),
            state: WorkerState::Lost,
            at_ms: NOW,
        })
        .unwrap();
    };
    // Checkpoint 2's pieces were kept only where they were taken (their replicas
    // failed); checkpoint 1's on both workers.
    let mut s = state(&["w1", "w2", "w3"]);
    place(&mut s);
    checkpoint_on(&mut s, 1, both);
    checkpoint(&mut s, 2);
    let on_w1 = s.apps["clickstream"].placement.values().any(|w| w == "w1");
    assert!(on_w1, "the test needs PEs on w1");
    lose(&mut s, "w1");
    let a = reconcile(&s, &seen_all(&s, pb::PeState::Running), NOW);
    let r = &a.recoveries[0];
    assert_eq!(r.checkpoint_id, 1, "{r:?}");
    assert!(
        r.reason
            .contains("checkpoint 2 skipped: a snapshot has no copy on a live worker"),
        "{}",
        r.reason
    );
    assert_eq!(
        r.drop_checkpoint, None,
        "checkpoint 2 may come back with w1"
    );
    // With no checkpoint readable, the newest all the same (w1 may come back with its
    // disk; a PE that cannot read it says so, and the next recovery falls back).
    let mut s = state(&["w1", "w2", "w3"]);
    place(&mut s);
    checkpoint(&mut s, 1);
    checkpoint(&mut s, 2);
    lose(&mut s, "w1");
    let a = reconcile(&s, &seen_all(&s, pb::PeState::Running), NOW);
    let r = &a.recoveries[0];
    assert_eq!(r.checkpoint_id, 2, "{r:?}");
    assert!(!r.reason.contains("skipped"), "{}", r.reason);
    // Copies on a live worker: the newest, nothing skipped.
    let mut s = state(&["w1", "w2", "w3"]);
    place(&mut s);
    checkpoint_on(&mut s, 1, both);
    checkpoint_on(&mut s, 2, both);
    lose(&mut s, "w1");
    let a = reconcile(&s, &seen_all(&s, pb::PeState::Running), NOW);
    let r = &a.recoveries[0];
    assert_eq!(r.checkpoint_id, 2, "{r:?}");
    assert!(!r.reason.contains("skipped"), "{}", r.reason);
}

#[test]
fn an_unreadable_checkpoint_falls_back_to_the_previous_one_and_is_dropped() {
    let mut s = state(&["w1", "w2"]);
    place(&mut s);
    checkpoint(&mut s, 1);
    checkpoint(&mut s, 2);
    let w = s.workers["w2"].clone();
    s.apply(&Command::RegisterWorker { worker: w }).unwrap();
    let a = reconcile(&s, &seen_all(&s, pb::PeState::Running), NOW);
    recover(&mut s, &a.recoveries[0]);
    // One PE cannot read checkpoint 2 anywhere.
    let mut seen = seen_all(&s, pb::PeState::Running);
    for pes in seen.values_mut() {
        for p in pes.iter_mut() {
            p.attempt = 1;
        }
    }
    let victim = seen.get_mut("w1").unwrap().first_mut().unwrap();
    victim.state = pb::PeState::Failed;
    victim.restore_failed = 2;
    victim.message = "checkpoint 2: no intact copy".into();
    // Too soon after the last recovery: it waits.
    assert!(reconcile(&s, &seen, NOW + 100).recoveries.is_empty());
    let a = reconcile(&s, &seen, NOW + 60_000);
    let r = &a.recoveries[0];
    assert_eq!(r.checkpoint_id, 1, "the previous checkpoint");
    assert_eq!(r.drop_checkpoint, Some(2));
    assert!(r.reason.contains("checkpoint 2 unreadable"), "{}", r.reason);
    recover(&mut s, r);
    let ids: Vec<u64> = s.apps["clickstream"]
        .checkpoints
        .complete
        .iter()
        .map(|c| c.id)
        .collect();
    assert_eq!(ids, vec![1]);
}

#[test]
fn a_lost_workers_pes_move_and_the_others_stay() {
    let mut s = state(&["w1", "w2", "w3"]);
    place(&mut s);
    let before = s.apps["clickstream"].placement.clone();
    let lost = before.values().next().unwrap().clone();
    s.apply(&Command::SetWorkerState {
        id: lost.clone(),
        state: WorkerState::Lost,
        at_ms: 9,
    })
    .unwrap();
    let a = reconcile(&s, &BTreeMap::new(), NOW);
    assert!(a.placements.is_empty());
    let after = &a.recoveries[0].placement;
    for (pe, w) in &before {
        if *w == lost {
            assert_ne!(&after[pe], w, "{pe} leaves the lost worker");
        } else {
            assert_eq!(&after[pe], w, "{pe} stays where it runs");
        }
    }
    // Producers that stayed put are repointed at consumers that moved.
    let model = PhysicalModel::expand(&s.apps["clickstream"].current().spec);
    let moved = moved_channels(&model, &before, after);
    assert!(!moved.is_empty());
    for (c, producer_worker, consumer_worker) in moved {
        assert_eq!(before[c.from_pe.as_str()], producer_worker);
        assert_eq!(before[c.to_pe.as_str()], lost);
        assert_eq!(after[c.to_pe.as_str()], consumer_worker);
    }
}

#[test]
fn what_no_app_places_is_stopped() {
    let mut s = state(&["w1"]);
    place(&mut s);
    let mut seen = seen_all(&s, pb::PeState::Running);
    seen.get_mut("w1").unwrap().push(SeenPe {
        pe: "ghost@00000000#0".into(),
        app: "gone".into(),
        state: pb::PeState::Running,
        ..Default::default()
    });
    assert_eq!(
        reconcile(&s, &seen, NOW).stops,
        vec![(
            "w1".to_string(),
            "gone".to_string(),
            "ghost@00000000#0".to_string()
        )]
    );
    // Cancelling the app stops all of its PEs.
    s.apply(&Command::CancelApp {
        name: "clickstream".into(),
        at_ms: 10,
        request_id: String::new(),
    })
    .unwrap();
    assert_eq!(reconcile(&s, &seen, NOW).stops.len(), 11);
}

#[test]
fn deploy_commands_name_inputs_outputs_addresses_and_producers_workers() {
    let mut s = state(&["w1", "w2"]);
    place(&mut s);
    let app = &s.apps["clickstream"];
    let model = PhysicalModel::expand(&app.current().spec);
    let views = app
        .placement
        .keys()
        .find(|p| p.starts_with("views@"))
        .unwrap();
    let req = deploy_pe(
        &View::current(app),
        &model,
        views,
        &s.workers,
        pb::CommandHeader::default(),
    )
    .unwrap();
    let start = req.start_pe.unwrap();
    assert_eq!(req.inputs.len(), 2, "both by-page PEs feed each window PE");
    assert!(req.inputs.iter().all(|c| &c.to_pe == views));
    // Each input names the worker its producer is placed on: the only one whose link
    // the consumer's data port takes for that channel over TLS.
    for c in &req.inputs {
        assert_eq!(
            req.producer_workers[&c.from_pe],
            app.placement[c.from_pe.as_str()],
            "{}",
            c.from_pe
        );
    }
    assert_eq!(req.producer_workers.len(), req.inputs.len());
    let out = app
        .placement
        .keys()
        .find(|p| p.starts_with("out@"))
        .unwrap();
    assert_eq!(start.outputs[0].targets, vec![out.to_string()]);
    assert_eq!(
        req.pe_addresses[out.as_str()],
        format!("{}:2", app.placement[out])
    );
    // An unplaced consumer: no command (the producer would not know where to send).
    let mut partial = (**app).clone();
    partial.placement.remove(out);
    assert!(deploy_pe(
        &View::current(&partial),
        &model,
        views,
        &s.workers,
        pb::CommandHeader::default()
    )
    .is_none());
}

#[test]
fn gpu_allocations_are_kept_and_deducted_across_apps() {
    let mut s = ClusterState::default();
    let mut w = worker("g1");
    w.gpus = vec![crate::state::GpuRecord {
        uuid: "GPU-a".into(),
        vendor: "nvidia".into(),
        model: "h200".into(),
        memory_total_mb: 100_000,
        declared: true,
    }];
    s.apply(&Command::RegisterWorker { worker: w }).unwrap();
    let gpu_app = |name: &str| {
        format!(
            "name: {name}\noperators:\n  - {{name: src, kind: source.tcp, params: {{listen: 127.0.0.1:9}}}}\n  - {{name: infer, kind: exec, params: {{command: [cat]}}, resources: {{gpu: {{count: 1, memory_mb: 60000}}}}}}\n  - {{name: out, kind: sink.null}}\nstreams:\n  - {{from: src, to: infer}}\n  - {{from: infer, to: out}}\n"
        )
    };
    for (i, name) in ["one", "two"].iter().enumerate() {
        let text = gpu_app(name);
        s.apply(&Command::SubmitApp {
            spec: parse_app(&text, SpecFormat::Yaml).unwrap(),
            spec_text: text,
            at_ms: i as u64,
            request_id: String::new(),
            generated: Default::default(),
            signature: None,
        })
        .unwrap();
    }
    // Both apps want 60 GB of the one 100 GB device: only one of them fits.
    let a = reconcile(&s, &BTreeMap::new(), NOW);
    assert_eq!(a.placements.len(), 1, "{a:?}");
    assert_eq!(a.unplaceable.len(), 1, "{a:?}");
    let (app, placement) = a.placements[0].clone();
    let gpus = a.gpus[&app].clone();
    let infer = &placement
        .keys()
        .find(|p| p.starts_with("infer@"))
        .unwrap()
        .clone();
    assert_eq!(gpus[infer], vec!["GPU-a".to_string()]);
    s.apply(&Command::SetPlacement {
        app: app.clone(),
        placement,
        gpus,
        at_ms: 0,
    })
    .unwrap();
    assert_eq!(s.apps[&app].gpus[infer], vec!["GPU-a".to_string()]);
    // Committed, the allocation stays deducted: the other app still does not fit, and
    // the deploy carries the device.
    let a = reconcile(&s, &BTreeMap::new(), NOW);
    assert!(a.placements.is_empty(), "{a:?}");
    assert_eq!(a.unplaceable.len(), 1);
    let rec = &s.apps[&app];
    let model = PhysicalModel::expand(&rec.current().spec);
    let req = deploy_pe(
        &View::current(rec),
        &model,
        infer,
        &s.workers,
        Default::default(),
    )
    .unwrap();
    assert_eq!(req.gpu_uuids, vec!["GPU-a".to_string()]);
    // Cancelling it frees the device for the other app.
    s.apply(&Command::CancelApp {
        name: app.clone(),
        at_ms: 9,
        request_id: String::new(),
    })
    .unwrap();
    let a = reconcile(&s, &BTreeMap::new(), NOW);
    assert_eq!(a.placements.len(), 1, "{a:?}");
    assert_ne!(a.placements[0].0, app);
}

/// During an upgrade: its new PEs are wanted (not stopped as strays) and count against
/// the workers' capacity; a lost worker of the old version aborts the upgrade instead
/// of recovering directly.
#[test]
fn an_upgrades_new_pes_are_wanted_counted_and_a_loss_aborts_it() {
    let mut s = state(&["w1", "w2"]);
    place(&mut s);
    let v2_text = include_str!("../../../examples/clickstream-v2.yaml");
    let v2 = parse_app(v2_text, SpecFormat::Yaml).unwrap();
    let app = s.apps["clickstream"].clone();
    let (placement, gpus) =
        super::upgrade::admit::place_upgrade(&s, &app, &v2).expect("v2 fits beside v1");
    let new: Vec<PeId> = placement
        .keys()
        .filter(|pe| !app.placement.contains_key(*pe))
        .cloned()
        .collect();
    assert!(!new.is_empty());
    let free_before: f64 = super::reconcile::capacities(&s)
        .iter()
        .map(|w| w.cpu_free)
        .sum();
    s.apply(&Command::BeginUpgrade {
        spec: v2.clone(),
        spec_text: v2_text.into(),
        at_ms: 10,
        placement: placement.clone(),
        gpus,
        handoff: BTreeMap::new(),
        summary: Default::default(),
        request_id: String::new(),
        generated: Default::default(),
        signature: None,
    })
    .unwrap();
    let free_after: f64 = super::reconcile::capacities(&s)
        .iter()
        .map(|w| w.cpu_free)
        .sum();
    let per_pe: f64 = new
        .iter()
        .map(|pe| {
            let op = PeId::operator_of(pe);
            v2.operator(op).unwrap().resources.cpu
        })
        .sum();
    assert!((free_before - free_after - per_pe).abs() < 1e-9);
    // The new PEs, running where the upgrade placed them, are not stopped.
    let mut seen = seen_all(&s, pb::PeState::Running);
    for pe in &new {
        seen.get_mut(&placement[pe]).unwrap().push(SeenPe {
            pe: pe.to_string(),
            app: "clickstream".into(),
            state: pb::PeState::Running,
            ..Default::default()
        });
    }
    let a = reconcile(&s, &seen, NOW);
    assert!(a.stops.is_empty(), "{:?}", a.stops);
    assert!(a.aborts.is_empty());
    // w2 is lost: the upgrade rolls back; the reconciler recovers nothing itself.
    s.apply(&Command::SetWorkerState {
        id: "w2".into(),
        state: WorkerState::Lost,
        at_ms: 20,
    })
    .unwrap();
    seen.remove("w2");
    let a = reconcile(&s, &seen, NOW);
    assert!(a.recoveries.is_empty(), "{:?}", a.recoveries);
    assert!(
        a.aborts["clickstream"].contains("worker w2 lost"),
        "{:?}",
        a.aborts
    );
}

/// PE ids are unique within an app only: another app's PE with the same id, running on
/// the same worker, neither stands in for this one nor fails it.
#[test]
fn two_apps_with_the_same_pe_ids_are_reconciled_apart() {
    let mut s = state(&["w1"]);
    let twin = APP.replace("name: clickstream", "name: twin");
    s.apply(&Command::SubmitApp {
        spec: parse_app(&twin, SpecFormat::Yaml).unwrap(),
        spec_text: twin,
        at_ms: 2,
        request_id: String::new(),
        generated: Default::default(),
        signature: None,
    })
    .unwrap();
    let a = reconcile(&s, &BTreeMap::new(), NOW);
    for (app, placement) in a.placements {
        s.apply(&Command::SetPlacement {
            app,
            placement,
            gpus: BTreeMap::new(),
            at_ms: 0,
        })
        .unwrap();
    }
    assert_eq!(
        s.apps["clickstream"].placement.keys().collect::<Vec<_>>(),
        s.apps["twin"].placement.keys().collect::<Vec<_>>()
    );
    // Only clickstream runs; one of its PEs failed.
    let mut seen = seen_all(&s, pb::PeState::Running);
    let failed = seen.get_mut("w1").unwrap().first_mut().unwrap();
    failed.state = pb::PeState::Failed;
    let a = reconcile(&s, &seen, NOW);
    let twin_deploys = a.deploys.iter().filter(|(app, _, _)| app == "twin").count();
    assert_eq!(
        twin_deploys,
        s.apps["twin"].placement.len(),
        "every twin PE is deployed"
    );
    assert!(
        a.recoveries.iter().all(|r| r.app == "clickstream"),
        "clickstream's failure is not twin's: {:?}",
        a.recoveries
    );
    assert_eq!(a.recoveries.len(), 1);
}

#[test]
fn a_refused_placement_is_remembered_until_the_app_or_the_capacity_changes() {
    let mut s = state(&[]);
    let mut memo = PlacementMemo::default();
    let first = reconcile_with(&s, &BTreeMap::new(), NOW, &mut memo, &Policy::default());
    assert_eq!(first.unplaceable.len(), 1, "{first:?}");
    assert_eq!(memo.len(), 1);
    // Same state (a clone shares the app's Arc): answered from the memo, the same.
    let again = reconcile_with(
        &s.clone(),
        &BTreeMap::new(),
        NOW,
        &mut memo,
        &Policy::default(),
    );
    assert_eq!(again, first);
    assert_eq!(memo.len(), 1);
    // Capacity appears: the memo no longer holds and the app is placed.
    s.apply(&Command::RegisterWorker {
        worker: worker("w1"),
    })
    .unwrap();
    let placed = reconcile_with(&s, &BTreeMap::new(), NOW, &mut memo, &Policy::default());
    assert_eq!(placed, reconcile(&s, &BTreeMap::new(), NOW));
    assert_eq!(placed.placements.len(), 1);
    assert!(placed.unplaceable.is_empty());
    assert!(memo.is_empty());
}

#[test]
fn a_changed_app_is_tried_again_even_when_capacity_is_the_same() {
    // A worker with no cores: nothing that asks for a core fits.
    let mut s = state(&[]);
    s.apply(&Command::RegisterWorker {
        worker: WorkerRecord {
            cpu_cores: 0.0,
            ..worker("w1")
        },
    })
    .unwrap();
    let mut memo = PlacementMemo::default();
    let refused = reconcile_with(&s, &BTreeMap::new(), NOW, &mut memo, &Policy::default());
    assert_eq!(refused.unplaceable.len(), 1, "{refused:?}");
    assert_eq!(memo.len(), 1);
    // The app changes as an apply would change it (`Arc::make_mut` while the memo
    // holds the old one): it now asks for no core, and the same worker takes it.
    let rec = std::sync::Arc::make_mut(s.apps.get_mut("clickstream").unwrap());
    let v = rec.current_version as usize - 1;
    for op in &mut std::sync::Arc::make_mut(&mut rec.versions[v])
        .spec
        .operators
    {
        op.resources.cpu = 0.0;
    }
    let after = reconcile_with(&s, &BTreeMap::new(), NOW, &mut memo, &Policy::default());
    assert_eq!(after.placements.len(), 1, "{after:?}");
    assert!(after.unplaceable.is_empty());
    assert!(memo.is_empty());
}

/// An app finishes only when every PE of its placement reports stopped, under its
/// current attempt, from the worker it is placed on; finished, its resources are free
/// and its PEs are stopped wherever they still run.
#[test]
fn an_app_finishes_when_every_placed_pe_stopped_and_frees_its_resources() {
    let mut s = state(&["w1", "w2"]);
    place(&mut s);
    let all_stopped = seen_all(&s, pb::PeState::Stopped);
    // One PE still running: not finished.
    let mut one_running = all_stopped.clone();
    one_running.values_mut().find(|v| !v.is_empty()).unwrap()[0].state = pb::PeState::Running;
    assert!(reconcile(&s, &one_running, NOW).finished.is_empty());
    // One PE not reported at all: not finished (it is deployed).
    let mut one_missing = all_stopped.clone();
    one_missing
        .values_mut()
        .find(|v| !v.is_empty())
        .unwrap()
        .remove(0);
    let a = reconcile(&s, &one_missing, NOW);
    assert!(a.finished.is_empty());
    assert_eq!(a.deploys.len(), 1);
    // Stopped under an older attempt (before a recovery): not finished.
    let mut old_attempt = all_stopped.clone();
    for pes in old_attempt.values_mut() {
        for p in pes {
            p.attempt = 0;
        }
    }
    let mut recovered = s.clone();
    let r = reconcile(&recovered, &seen_all(&recovered, pb::PeState::Failed), NOW);
    recover(&mut recovered, &r.recoveries[0]);
    assert!(reconcile(&recovered, &old_attempt, NOW + 10_000)
        .finished
        .is_empty());

    // All stopped: finished. Applied, the app is no longer live, holds no placement
    // and its PEs are stopped where they still show.
    assert_eq!(
        reconcile(&s, &all_stopped, NOW).finished,
        vec!["clickstream".to_string()]
    );
    let before = super::reconcile::capacities(&s);
    let fin = Command::FinishApp {
        app: "clickstream".into(),
        at_ms: NOW,
        pes: Default::default(),
    };
    s.apply(&fin).unwrap();
    let rec = &s.apps["clickstream"];
    assert_eq!(rec.state(), crate::state::AppState::Finished);
    assert_eq!(rec.finished.as_ref().map(|f| f.at_ms), Some(NOW));
    assert!(rec.placement.is_empty());
    let after = super::reconcile::capacities(&s);
    let cpu = |c: &[crate::scheduler::WorkerCapacity]| c.iter().map(|w| w.cpu_free).sum::<f64>();
    assert!(cpu(&after) > cpu(&before), "{before:?} -> {after:?}");
    let a = reconcile(&s, &all_stopped, NOW);
    assert!(a.finished.is_empty() && a.deploys.is_empty());
    assert_eq!(a.stops.len(), 10, "every PE of the finished app is stopped");
    // Finishing twice, or finishing a cancelled app, is refused and changes nothing.
    let snapshot = s.clone();
    assert!(s.apply(&fin).is_err());
    assert_eq!(s, snapshot);
}

/// A running app whose lost PEs find no room waits at the head of the queue, with the
/// reason, and is not deployed meanwhile.
#[test]
fn a_running_app_whose_lost_pes_find_no_room_heads_the_queue() {
    let mut s = state(&["w1"]);
    place(&mut s);
    s.apply(&Command::SetWorkerState {
        id: "w1".into(),
        state: WorkerState::Lost,
        at_ms: NOW,
    })
    .unwrap();
    let a = reconcile(&s, &BTreeMap::new(), NOW);
    assert!(a.recoveries.is_empty() && a.deploys.is_empty(), "{a:?}");
    assert_eq!(a.queue.len(), 1, "{a:?}");
    assert_eq!(a.queue[0].app, "clickstream");
    assert_eq!(a.queue[0].wait.kind(), "capacity");
    assert!(
        a.queue[0].wait.to_string().contains("no alive worker"),
        "{}",
        a.queue[0].wait
    );
}
