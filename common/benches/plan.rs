//! Planning an upgrade between two 10,000-operator models (target: < 50 ms).
//!
//! The models are 1,000 ten-operator pipelines (generator -> map -> filter -> key_by ->
//! window.count(4) -> map -> exec -> filter -> map -> sink) with 2 PEs per operator
//! except the windows, i.e. 22,000 PEs and ~26,000 channels. v2 changes the params of
//! every 10th operator's map and rescales every 20th pipeline's window from 4 to 6.

use criterion::{criterion_group, criterion_main, Criterion};
use std::hint::black_box;
use weir_common::physical::PhysicalModel;
use weir_common::plan::plan;
use weir_common::spec::*;

fn pipeline(app: &mut AppSpec, p: usize, v2: bool) {
    let n = |s: &str| format!("p{p}-{s}");
    let map = |expr: String| {
        OperatorKind::Map(MapParams {
            set: [("x".to_string(), expr)].into(),
            ..Default::default()
        })
    };
    let changed = v2 && p.is_multiple_of(10);
    let window_p = if v2 && p.is_multiple_of(20) { 6 } else { 4 };
    let ops = vec![
        (
            n("gen"),
            OperatorKind::Generator(GeneratorParams {
                rate: Some(1000),
                count: None,
                keys: 100,
                payload_bytes: 100,
                seed: p as u64,
                wall_clock: false,
            }),
            2,
        ),
        (
            n("parse"),
            map(if changed {
                "add(id, 2)".into()
            } else {
                "add(id, 1)".into()
            }),
            2,
        ),
        (
            n("keep"),
            OperatorKind::Filter(FilterParams::Compare(Comparison {
                field: "x".into(),
                op: CmpOp::Gt,
                value: 3.into(),
            })),
            2,
        ),
        (
            n("key"),
            OperatorKind::KeyBy(KeyByParams { field: "x".into() }),
            2,
        ),
        (
            n("count"),
            OperatorKind::WindowCount(WindowCountParams { size_ms: 1000 }),
            window_p,
        ),
        (n("fmt"), map("upper(key)".into()), 2),
        (
            n("score"),
            OperatorKind::Exec(ExecParams {
                command: vec!["cat".into()],
                env: Default::default(),
                protocol: PeProtocol::Lines,
            }),
            2,
        ),
        (
            n("hot"),
            OperatorKind::Filter(FilterParams::Compare(Comparison {
                field: "count".into(),
                op: CmpOp::Gt,
                value: 10.into(),
            })),
            2,
        ),
        (n("tag"), map("concat(key, \"-hot\")".into()), 2),
        (n("out"), OperatorKind::SinkNull, 2),
    ];
    let names: Vec<String> = ops.iter().map(|o| o.0.clone()).collect();
    for (name, kind, parallelism) in ops {
        app.operators.push(OperatorSpec {
            name,
            kind,
            parallelism,
            resources: Resources::default(),
        });
    }
    for w in names.windows(2) {
        let partitioning = if w[1].ends_with("-count") || w[0].ends_with("-count") {
            Partitioning::Hash { key: String::new() }
        } else {
            Partitioning::Forward
        };
        app.streams.push(StreamSpec {
            from: w[0].clone(),
            to: w[1].clone(),
            partitioning,
        });
    }
}

fn model(v2: bool) -> AppSpec {
    let mut app = AppSpec {
        name: "big".into(),
        tenant: "default".into(),
        description: String::new(),
        priority: Priority::Normal,
        checkpoint_interval_ms: None,
        start: Default::default(),
        operators: Vec::new(),
        streams: Vec::new(),
    };
    for p in 0..1000 {
        pipeline(&mut app, p, v2);
    }
    app
}

fn bench(c: &mut Criterion) {
    let (a, b) = (model(false), model(true));
    let (pa, pb) = (PhysicalModel::expand(&a), PhysicalModel::expand(&b));
    let p = plan(&a, &b, None);
    eprintln!(
        "models: {} operators, {} -> {} PEs, {} -> {} channels; plan: {} instructions, {} PEs untouched",
        a.operators.len(),
        pa.pes.len(),
        pb.pes.len(),
        pa.channels.len(),
        pb.channels.len(),
        p.instructions().count(),
        p.untouched_pes.len()
    );
    let mut g = c.benchmark_group("plan");
    g.sample_size(20);
    g.bench_function("10k_operators", |bench| {
        bench.iter(|| plan(black_box(&a), black_box(&b), None))
    });
    g.bench_function("10k_operators_identical", |bench| {
        bench.iter(|| plan(black_box(&a), black_box(&a), None))
    });
    g.bench_function("expand_10k_operators", |bench| {
        bench.iter(|| PhysicalModel::expand(black_box(&a)))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
