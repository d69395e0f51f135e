//! Random valid app models for property tests: a genome of operator slots and edges,
//! repaired deterministically into a valid DAG, so that a mutated genome gives a
//! related model whose untouched parts are exactly equal.

#![allow(dead_code)]

use proptest::prelude::*;
use std::collections::{BTreeMap, BTreeSet};
use weir_common::spec::*;

/// Operator slots per model.
pub const SLOTS: usize = 8;

#[derive(Clone, Debug)]
pub struct Slot {
    pub present: bool,
    pub kind: u8,
    pub variant: u8,
    pub parallelism: u32,
    pub cpu: u8,
}

#[derive(Clone, Debug)]
pub struct Genome {
    pub slots: Vec<Slot>,
    pub edges: Vec<(usize, usize, u8)>,
}

fn slot() -> impl Strategy<Value = Slot> {
    (any::<bool>(), 0u8..6, 0u8..3, 1u32..=4, 0u8..2).prop_map(
        |(present, kind, variant, parallelism, cpu)| Slot {
            present,
            kind,
            variant,
            parallelism,
            cpu,
        },
    )
}

pub fn genome() -> impl Strategy<Value = Genome> {
    (
        proptest::collection::vec(slot(), SLOTS),
        proptest::collection::vec((0..SLOTS, 0..SLOTS, 0u8..4), 0..20),
    )
        .prop_map(|(slots, edges)| Genome { slots, edges })
}

/// One random edit of a genome.
#[derive(Clone, Debug)]
pub enum Edit {
    Toggle(usize),
    Variant(usize, u8),
    Kind(usize, u8),
    Parallelism(usize, u32),
    Cpu(usize),
    AddEdge(usize, usize, u8),
    RemoveEdge(usize),
    Partitioning(usize, u8),
}

pub fn edits() -> impl Strategy<Value = Vec<Edit>> {
    let edit = prop_oneof![
        (0..SLOTS).prop_map(Edit::Toggle),
        (0..SLOTS, 0u8..3).prop_map(|(s, v)| Edit::Variant(s, v)),
        (0..SLOTS, 0u8..6).prop_map(|(s, k)| Edit::Kind(s, k)),
        (0..SLOTS, 1u32..=4).prop_map(|(s, p)| Edit::Parallelism(s, p)),
        (0..SLOTS).prop_map(Edit::Cpu),
        (0..SLOTS, 0..SLOTS, 0u8..4).prop_map(|(a, b, p)| Edit::AddEdge(a, b, p)),
        (0usize..20).prop_map(Edit::RemoveEdge),
        (0usize..20, 0u8..4).prop_map(|(e, p)| Edit::Partitioning(e, p)),
    ];
    proptest::collection::vec(edit, 1..4)
}

impl Genome {
    pub fn mutate(&self, edits: &[Edit]) -> Genome {
        let mut g = self.clone();
        for e in edits {
            match *e {
                Edit::Toggle(s) => g.slots[s].present = !g.slots[s].present,
                Edit::Variant(s, v) => g.slots[s].variant = v,
                Edit::Kind(s, k) => g.slots[s].kind = k,
                Edit::Parallelism(s, p) => g.slots[s].parallelism = p,
                Edit::Cpu(s) => g.slots[s].cpu ^= 1,
                Edit::AddEdge(a, b, p) => g.edges.push((a, b, p)),
                Edit::RemoveEdge(i) if !g.edges.is_empty() => {
                    let i = i % g.edges.len();
                    g.edges.remove(i);
                }
                Edit::Partitioning(i, p) if !g.edges.is_empty() => {
                    let i = i % g.edges.len();
                    g.edges[i].2 = p;
                }
                _ => {}
            }
        }
        g
    }

    /// The valid app this genome repairs to.
    pub fn app(&self) -> AppSpec {
        let n = self.slots.len();
        let mut ops: Vec<Option<OperatorSpec>> = self
            .slots
            .iter()
            .enumerate()
            .map(|(i, s)| {
                // The first slot is always a source, the last always a sink.
                let kind = if i == 0 {
                    0
                } else if i == n - 1 {
                    5
                } else {
                    s.kind
                };
                (s.present || i == 0 || i == n - 1).then(|| operator(i, kind, s))
            })
            .collect();
        let role = |o: &Option<OperatorSpec>| o.as_ref().map(|o| o.kind.role());
        let mut edges: BTreeMap<(usize, usize), u8> = BTreeMap::new();
        for &(a, b, p) in &self.edges {
            let (a, b) = (a.min(b), a.max(b));
            if a == b || ops[a].is_none() || ops[b].is_none() {
                continue;
            }
            if role(&ops[a]) == Some(Role::Sink) || role(&ops[b]) == Some(Role::Source) {
                continue;
            }
            edges.entry((a, b)).or_insert(p);
        }
        let has_in: BTreeSet<usize> = edges.keys().map(|e| e.1).collect();
        let has_out: BTreeSet<usize> = edges.keys().map(|e| e.0).collect();
        for (i, op) in ops.iter().enumerate() {
            let Some(r) = role(op) else { continue };
            if r != Role::Source && !has_in.contains(&i) {
                edges.insert((0, i), 1);
            }
            if r != Role::Sink && !has_out.contains(&i) {
                edges.insert((i, n - 1), 1);
            }
        }
        let streams = edges
            .iter()
            .map(|(&(a, b), &p)| {
                let (fa, fb) = (ops[a].as_ref().unwrap(), ops[b].as_ref().unwrap());
                let mut part = match p {
                    0 => Partitioning::Forward,
                    1 => Partitioning::RoundRobin,
                    2 => Partitioning::Hash { key: String::new() },
                    _ => Partitioning::Broadcast,
                };
                if part == Partitioning::Forward && fa.parallelism != fb.parallelism {
                    part = Partitioning::RoundRobin;
                }
                if fb.kind.keyed_state() && fb.parallelism > 1 {
                    part = Partitioning::Hash { key: String::new() };
                }
                StreamSpec {
                    from: fa.name.clone(),
                    to: fb.name.clone(),
                    partitioning: part,
                }
            })
            .collect();
        AppSpec {
            name: "prop".into(),
            tenant: "default".into(),
            description: String::new(),
            priority: Priority::Normal,
            checkpoint_interval_ms: None,
            start: Default::default(),
            operators: ops.iter_mut().filter_map(Option::take).collect(),
            streams,
        }
    }
}

fn operator(i: usize, kind: u8, s: &Slot) -> OperatorSpec {
    let v = s.variant;
    let kind = match kind {
        0 => OperatorKind::Generator(GeneratorParams {
            rate: Some(1000 * (u64::from(v) + 1)),
            count: None,
            keys: 100,
            payload_bytes: 100,
            seed: 0,
            wall_clock: false,
        }),
        1 => OperatorKind::Map(MapParams {
            set: [("x".to_string(), format!("add(id, {v})"))].into(),
            ..Default::default()
        }),
        2 => OperatorKind::Filter(FilterParams::Compare(Comparison {
            field: "id".into(),
            op: CmpOp::Gt,
            value: serde_json::json!(v),
        })),
        3 => OperatorKind::WindowCount(WindowCountParams {
            size_ms: 1000 * (u64::from(v) + 1),
        }),
        4 => OperatorKind::Exec(ExecParams {
            command: vec!["cat".into(), format!("-v{v}")],
            env: Default::default(),
            protocol: PeProtocol::Lines,
        }),
        _ => OperatorKind::SinkVerify(SinkVerifyParams {
            expect: Some(u64::from(v)),
        }),
    };
    OperatorSpec {
        name: format!("op{i}"),
        kind,
        parallelism: s.parallelism,
        resources: Resources {
            cpu: if s.cpu == 0 { 0.25 } else { 0.5 },
            ..Default::default()
        },
    }
}
