//! States and commands the state machine's tests and its watchers' tests start from.

use super::*;
use weir_common::spec::{parse_app, SpecFormat};

pub(crate) const APP: &str = include_str!("../../../examples/clickstream.yaml");

pub(crate) fn submit(at_ms: u64) -> Command {
    Command::SubmitApp {
        spec: parse_app(APP, SpecFormat::Yaml).unwrap(),
        spec_text: APP.into(),
        at_ms,
        request_id: String::new(),
        generated: Default::default(),
        signature: None,
    }
}

/// Submits the app `text` describes (YAML) at `at_ms`; panics if it is refused.
pub(crate) fn submit_text(s: &mut ClusterState, text: &str, at_ms: u64) {
    s.apply(&Command::SubmitApp {
        spec: parse_app(text, SpecFormat::Yaml).unwrap(),
        spec_text: text.into(),
        at_ms,
        request_id: String::new(),
        generated: Default::default(),
        signature: None,
    })
    .unwrap();
}

pub(crate) fn worker(id: &str) -> WorkerRecord {
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
        images: Default::default(),
        registries: Default::default(),
    }
}

pub(crate) const V2: &str = include_str!("../../../examples/clickstream-v2.yaml");

/// Worker w1, and clickstream submitted (not placed yet).
pub(crate) fn submitted() -> ClusterState {
    let mut s = ClusterState::default();
    s.apply(&Command::RegisterWorker {
        worker: worker("w1"),
    })
    .unwrap();
    s.apply(&submit(10)).unwrap();
    s
}

/// A running clickstream placed on w1, and the BeginUpgrade to its v2.
pub(crate) fn upgrading() -> (ClusterState, Command) {
    let mut s = submitted();
    s.apply(&Command::SetPlacement {
        app: "clickstream".into(),
        placement: all_on(APP, "w1"),
        gpus: BTreeMap::new(),
        at_ms: 0,
    })
    .unwrap();
    let begin = Command::BeginUpgrade {
        spec: parse_app(V2, SpecFormat::Yaml).unwrap(),
        spec_text: V2.into(),
        at_ms: 100,
        placement: all_on(V2, "w1"),
        gpus: BTreeMap::new(),
        handoff: BTreeMap::new(),
        summary: Default::default(),
        request_id: String::new(),
        generated: Default::default(),
        signature: None,
    };
    (s, begin)
}

/// Every PE of the app `text` describes, placed on `worker`.
pub(crate) fn all_on(text: &str, worker: &str) -> super::Placement {
    let spec = parse_app(text, SpecFormat::Yaml).unwrap();
    weir_common::physical::PhysicalModel::expand(&spec)
        .pes
        .keys()
        .map(|pe| (pe.clone(), worker.to_string()))
        .collect()
}
