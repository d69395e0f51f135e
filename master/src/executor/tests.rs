//! The reconciler's decisions on hand-built states: no network, no Raft.

use super::reconcile::{reconcile, SeenPe};
use super::request::{deploy_pe, moved_channels};
use crate::state::{ClusterState, Command, WorkerRecord, WorkerState};
use std::collections::BTreeMap;
use weir_common::physical::PhysicalModel;
use weir_common::spec::{parse_app, SpecFormat};
use weir_proto::v1 as pb;

const APP: &str = include_str!("../../../examples/clickstream.yaml");

fn worker(id: &str) -> WorkerRecord {
    WorkerRecord {
        id: id.into(),
        control_address: format!("{id}:1"),
        data_address: format!("{id}:2"),
        cpu_cores: 8.0,
        memory_mb: 8192,
        gpus: vec![],
        labels: Default::default(),
        state: WorkerState::Alive,
        incarnation: 0,
        registered_at_ms: 5,
        state_since_ms: 0,
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
    })
    .unwrap();
    s
}

fn seen_all(s: &ClusterState, state: pb::PeState) -> BTreeMap<String, Vec<SeenPe>> {
    let mut seen: BTreeMap<String, Vec<SeenPe>> = BTreeMap::new();
    for w in s.workers.keys() {
        seen.entry(w.clone()).or_default();
    }
    for (pe, w) in &s.apps["clickstream"].placement {
        seen.entry(w.clone()).or_default().push(SeenPe {
            pe: pe.clone(),
            app: "clickstream".into(),
            state,
        });
    }
    seen
}

fn place(s: &mut ClusterState) {
    let a = reconcile(s, &BTreeMap::new());
    assert_eq!(a.placements.len(), 1);
    let (app, placement) = a.placements[0].clone();
    s.apply(&Command::SetPlacement { app, placement }).unwrap();
}

#[test]
fn a_new_app_is_placed_whole_then_deployed_pe_by_pe() {
    let mut s = state(&["w1", "w2"]);
    let a = reconcile(&s, &BTreeMap::new());
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
    let a = reconcile(&s, &empty);
    assert!(a.placements.is_empty());
    assert_eq!(a.deploys.len(), 10);
    for (_, pe, w) in &a.deploys {
        assert_eq!(&s.apps["clickstream"].placement[pe], w);
    }
    // Once they run (or finished), nothing more to do; a failed one is redeployed.
    assert_eq!(
        reconcile(&s, &seen_all(&s, pb::PeState::Running)),
        Default::default()
    );
    assert_eq!(
        reconcile(&s, &seen_all(&s, pb::PeState::Stopped)),
        Default::default()
    );
    assert_eq!(
        reconcile(&s, &seen_all(&s, pb::PeState::Failed))
            .deploys
            .len(),
        10
    );
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
    let a = reconcile(&s, &BTreeMap::new());
    let after = &a.placements[0].1;
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
        assert_eq!(before[&c.from_pe], producer_worker);
        assert_eq!(before[&c.to_pe], lost);
        assert_eq!(after[&c.to_pe], consumer_worker);
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
    });
    assert_eq!(
        reconcile(&s, &seen).stops,
        vec![("w1".to_string(), "ghost@00000000#0".to_string())]
    );
    // Cancelling the app stops all of its PEs.
    s.apply(&Command::CancelApp {
        name: "clickstream".into(),
        at_ms: 10,
    })
    .unwrap();
    assert_eq!(reconcile(&s, &seen).stops.len(), 11);
}

#[test]
fn deploy_commands_name_inputs_outputs_and_addresses() {
    let mut s = state(&["w1", "w2"]);
    place(&mut s);
    let app = &s.apps["clickstream"];
    let model = PhysicalModel::expand(&app.current().spec);
    let views = app
        .placement
        .keys()
        .find(|p| p.starts_with("views@"))
        .unwrap();
    let req = deploy_pe(app, &model, views, &s.workers, pb::CommandHeader::default()).unwrap();
    let start = req.start_pe.unwrap();
    assert_eq!(req.inputs.len(), 2, "both by-page PEs feed each window PE");
    assert!(req.inputs.iter().all(|c| &c.to_pe == views));
    let out = app
        .placement
        .keys()
        .find(|p| p.starts_with("out@"))
        .unwrap();
    assert_eq!(start.outputs[0].targets, vec![out.clone()]);
    assert_eq!(req.pe_addresses[out], format!("{}:2", app.placement[out]));
    // An unplaced consumer: no command (the producer would not know where to send).
    let mut partial = app.clone();
    partial.placement.remove(out);
    assert!(deploy_pe(
        &partial,
        &model,
        views,
        &s.workers,
        pb::CommandHeader::default()
    )
    .is_none());
}
