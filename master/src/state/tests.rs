use super::*;
use weir_common::spec::{parse_app, SpecFormat};

const APP: &str = include_str!("../../../examples/clickstream.yaml");

fn submit(at_ms: u64) -> Command {
    Command::SubmitApp {
        spec: parse_app(APP, SpecFormat::Yaml).unwrap(),
        spec_text: APP.into(),
        at_ms,
    }
}

fn worker(id: &str) -> WorkerRecord {
    WorkerRecord {
        id: id.into(),
        control_address: "127.0.0.1:1".into(),
        data_address: "127.0.0.1:2".into(),
        cpu_cores: 2.0,
        memory_mb: 1024,
        gpus: vec![],
        labels: Default::default(),
        state: WorkerState::Alive,
        incarnation: 0,
        registered_at_ms: 5,
        state_since_ms: 0,
    }
}

#[test]
fn submit_stores_v1_and_refuses_a_duplicate_without_change() {
    let mut s = ClusterState::default();
    assert_eq!(
        s.apply(&submit(10)).unwrap(),
        Response::AppVersion {
            app: "clickstream".into(),
            version: 1
        }
    );
    let app = &s.apps["clickstream"];
    assert_eq!(
        (app.current_version, app.versions.len(), app.created_at_ms),
        (1, 1, 10)
    );
    assert_eq!(s.tenants["web"].apps, 1);
    let before = s.clone();
    assert_eq!(
        s.apply(&submit(20)),
        Err(CommandError::AppExists("clickstream".into()))
    );
    assert_eq!(s, before);
}

#[test]
fn cancel_needs_a_live_app() {
    let mut s = ClusterState::default();
    let cancel = Command::CancelApp {
        name: "clickstream".into(),
        at_ms: 30,
    };
    assert_eq!(
        s.apply(&cancel),
        Err(CommandError::AppNotFound("clickstream".into()))
    );
    s.apply(&submit(10)).unwrap();
    s.apply(&cancel).unwrap();
    assert_eq!(s.apps["clickstream"].state, AppState::Cancelled);
    assert_eq!(s.tenants["web"].apps, 0);
    let before = s.clone();
    assert!(matches!(
        s.apply(&cancel),
        Err(CommandError::AppState { .. })
    ));
    assert_eq!(s, before);
}

#[test]
fn workers_register_with_rising_incarnations_and_change_state() {
    let mut s = ClusterState::default();
    s.apply(&Command::RegisterWorker {
        worker: worker("w1"),
    })
    .unwrap();
    s.apply(&Command::RegisterWorker {
        worker: worker("w1"),
    })
    .unwrap();
    assert_eq!(s.workers["w1"].incarnation, 2);
    s.apply(&Command::SetWorkerState {
        id: "w1".into(),
        state: WorkerState::Lost,
        at_ms: 99,
    })
    .unwrap();
    assert_eq!(
        (s.workers["w1"].state, s.workers["w1"].state_since_ms),
        (WorkerState::Lost, 99)
    );
    let unknown = Command::SetWorkerState {
        id: "nope".into(),
        state: WorkerState::Lost,
        at_ms: 1,
    };
    assert_eq!(
        s.apply(&unknown),
        Err(CommandError::WorkerNotFound("nope".into()))
    );
}

#[test]
fn placement_must_name_real_pes_and_alive_workers() {
    let mut s = ClusterState::default();
    s.apply(&submit(10)).unwrap();
    s.apply(&Command::RegisterWorker {
        worker: worker("w1"),
    })
    .unwrap();
    let place = |pe: &str, w: &str| Command::SetPlacement {
        app: "clickstream".into(),
        placement: [(pe.to_string(), w.to_string())].into(),
        gpus: Default::default(),
    };
    let before = s.clone();
    assert!(matches!(
        s.apply(&place("ghost@00000000#0", "w1")),
        Err(CommandError::BadPlacement { .. })
    ));
    assert!(matches!(
        s.apply(&place("parse@00000000#0", "w9")),
        Err(CommandError::BadPlacement { .. })
    ));
    assert_eq!(s, before);
    s.apply(&place("parse@00000000#0", "w1")).unwrap();
    assert_eq!(s.apps["clickstream"].state, AppState::Running);
}

#[test]
fn state_round_trips_through_json_for_snapshots() {
    let mut s = ClusterState::default();
    s.apply(&submit(10)).unwrap();
    s.apply(&Command::RegisterWorker {
        worker: worker("w1"),
    })
    .unwrap();
    let bytes = serde_json::to_vec(&s).unwrap();
    let back: ClusterState = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(back, s);
}
