//! The Nexmark example apps (examples/nexmark: q0, q1, q2, agg) run on the worker's
//! runtime, every PE in this process joined by in-memory channels, and their output is
//! checked against a plain recomputation over the same generated events: exact counts
//! and values.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use weir_common::physical::{source_ordinal, PhysicalModel};
use weir_common::spec::{parse_app, AppSpec, NexmarkTable, OperatorKind, Role, SpecFormat};
use weir_proto::v1 as pb;
use weir_worker::dataplane::Inputs;
use weir_worker::ops::nexmark::{events, Channels};
use weir_worker::runtime::{OutputConfig, PeConfig, Runtime, Target};

/// Events each test app generates: a few windows of event time at the rate below.
const EVENTS: u64 = 30_000;
/// Simulated events per second: 30,000 events span 30 s of event time.
const EVENTS_PER_SECOND: u64 = 1_000;
const SEED: u64 = 1;
/// Deadline for an app to finish.
const LIMIT: Duration = Duration::from_secs(120);

fn example(name: &str) -> AppSpec {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .join("examples/nexmark")
        .join(name);
    let text = std::fs::read_to_string(&path).unwrap();
    parse_app(&text, SpecFormat::Yaml).unwrap_or_else(|p| panic!("{}: {p}", path.display()))
}

/// The example with a smaller input and its file sinks writing under `dir`.
fn scaled(mut app: AppSpec, dir: &Path) -> AppSpec {
    for op in &mut app.operators {
        match &mut op.kind {
            OperatorKind::Nexmark(p) => {
                p.events = Some(EVENTS);
                p.events_per_second = EVENTS_PER_SECOND;
                p.seed = SEED;
            }
            OperatorKind::SinkFile(p) => {
                p.path = dir
                    .join(format!("{}.jsonl", op.name))
                    .to_string_lossy()
                    .into();
            }
            OperatorKind::SinkVerify(p) => p.expect = Some(bids().len() as u64),
            _ => {}
        }
    }
    app
}

/// Deploys every PE of `app` on one runtime (consumers before their producers) and
/// waits until every sink PE finished.
async fn run(app: &AppSpec) -> Runtime {
    let rt = Runtime::new(Arc::new(Inputs::default()));
    let model = PhysicalModel::expand(app);
    let order = |role: Role| match role {
        Role::Sink => 0,
        Role::Transform => 1,
        Role::Source => 2,
    };
    let mut pes: Vec<_> = model.pes.values().collect();
    // Transforms here form a chain in file order: later operators first.
    let position = |name: &str| app.operators.iter().position(|o| o.name == name).unwrap();
    pes.sort_by_key(|p| {
        let spec = app.operator(&p.operator).unwrap();
        (
            order(spec.kind.role()),
            std::cmp::Reverse(position(&p.operator)),
        )
    });
    for p in &pes {
        let spec = app.operator(&p.operator).unwrap().clone();
        let outputs = model
            .outputs
            .get(&p.id)
            .map(|outs| {
                outs.iter()
                    .map(|o| OutputConfig {
                        stream: o.stream.to_string(),
                        partitioning: o.partitioning.clone(),
                        targets: o
                            .targets
                            .iter()
                            .map(|t| Target {
                                pe: t.to_string(),
                                address: None,
                                attempt: None,
                            })
                            .collect(),
                    })
                    .collect()
            })
            .unwrap_or_default();
        let cfg = PeConfig {
            app: app.name.clone(),
            version: 1,
            tenant: app.tenant.clone(),
            pe: p.id.to_string(),
            spec,
            index: p.index,
            key_groups: p.key_groups,
            source_ordinal: source_ordinal(&p.operator, p.index),
            inputs: model.inputs_of(&p.id).map(|c| c.from.to_string()).collect(),
            outputs,
            attempt: 0,
            restore: None,
            gpus: vec![],
            peer_attempts: Default::default(),
            producer_workers: Default::default(),
            restore_pieces: vec![],
            start_at_barrier: 0,
        };
        rt.deploy(cfg).await.unwrap();
    }
    let sinks: Vec<String> = pes
        .iter()
        .filter(|p| app.operator(&p.operator).unwrap().kind.role() == Role::Sink)
        .map(|p| p.id.to_string())
        .collect();
    let deadline = tokio::time::Instant::now() + LIMIT;
    loop {
        let reports = rt.report();
        let stopped = |pe: &String| {
            reports
                .iter()
                .find(|r| &r.pe == pe)
                .is_some_and(|r| r.state == pb::PeState::Stopped as i32)
        };
        if sinks.iter().all(stopped) {
            break;
        }
        if let Some(r) = reports
            .iter()
            .find(|r| r.state == pb::PeState::Failed as i32)
        {
            panic!("{} failed: {:?}", r.pe, r.message);
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} did not finish",
            app.name
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    rt
}

/// The reference: every bid of the first `EVENTS` events, straight from the model.
fn bids() -> Vec<(i64, i64, i64, i64)> {
    let channels = Channels::new(SEED);
    (0..EVENTS)
        .filter(|n| events::kind_of(*n) == NexmarkTable::Bid)
        .map(|n| {
            let b = events::bid(SEED, n, EVENTS_PER_SECOND, &channels);
            (b.auction, b.bidder, b.price, b.date_time)
        })
        .collect()
}

fn lines(path: &PathBuf) -> Vec<serde_json::Map<String, serde_json::Value>> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| match serde_json::from_str(l).unwrap() {
            serde_json::Value::Object(m) => m,
            other => panic!("not an object: {other}"),
        })
        .collect()
}

fn int(m: &serde_json::Map<String, serde_json::Value>, k: &str) -> i64 {
    m.get(k)
        .and_then(serde_json::Value::as_i64)
        .unwrap_or_else(|| panic!("{k} in {m:?}"))
}

/// The (auction, window start) -> count lines of a window sink; each window once,
/// `size` long, starting at a multiple of `slide`.
fn windows(path: &PathBuf, size: i64, slide: i64) -> BTreeMap<(i64, i64), i64> {
    let mut got = BTreeMap::new();
    for m in lines(path) {
        let key: i64 = m["key"].as_str().unwrap().parse().unwrap();
        let start = int(&m, "window_start");
        assert_eq!(int(&m, "window_end"), start + size);
        assert_eq!(start.rem_euclid(slide), 0);
        let fresh = got.insert((key, start), int(&m, "count")).is_none();
        assert!(fresh, "window ({key}, {start}) emitted twice");
    }
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn q0_passes_every_bid_through_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let app = scaled(example("q0.yaml"), dir.path());
    let rt = run(&app).await;
    let want = bids().len() as u64;
    let verify = rt
        .report()
        .into_iter()
        .find_map(|r| r.verify.filter(|_| r.pe.starts_with("audit")))
        .expect("the audit reports");
    assert_eq!(
        (
            verify.records,
            verify.distinct,
            verify.duplicates,
            verify.missing_below_max
        ),
        (want, want, 0, 0)
    );
    assert!(verify.complete);
    // Two source PEs, each its own source ordinal.
    assert_eq!(verify.sources, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn q1_converts_every_price_as_the_reference_does() {
    let dir = tempfile::tempdir().unwrap();
    let app = scaled(example("q1.yaml"), dir.path());
    run(&app).await;
    // Compared as text: JSON numbers read back through serde_json may lose the last
    // bit of a float, while the text of equal floats is equal.
    let mut got: Vec<String> = std::fs::read_to_string(dir.path().join("out.jsonl"))
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    let mut want: Vec<String> = bids()
        .into_iter()
        .map(|(auction, bidder, price, date_time)| {
            let price = price as f64 * 0.908;
            serde_json::json!({"auction": auction, "bidder": bidder, "price": price, "date_time": date_time})
                .to_string()
        })
        .collect();
    got.sort();
    want.sort();
    assert_eq!(got.len(), want.len());
    assert_eq!(got, want);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn q2_selects_exactly_the_bids_the_reference_selects() {
    let dir = tempfile::tempdir().unwrap();
    let app = scaled(example("q2.yaml"), dir.path());
    run(&app).await;
    let mut got: Vec<(i64, i64)> = lines(&dir.path().join("out.jsonl"))
        .iter()
        .map(|m| {
            assert_eq!(m.len(), 2, "only auction and price: {m:?}");
            (int(m, "auction"), int(m, "price"))
        })
        .collect();
    let mut want: Vec<(i64, i64)> = bids()
        .into_iter()
        .filter(|(auction, ..)| auction % 123 == 0)
        .map(|(auction, _, price, _)| (auction, price))
        .collect();
    got.sort_unstable();
    want.sort_unstable();
    assert!(!want.is_empty(), "the input has bids on such auctions");
    assert_eq!(got, want);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agg_counts_bids_per_auction_and_window_as_the_reference_does() {
    let dir = tempfile::tempdir().unwrap();
    let app = scaled(example("agg.yaml"), dir.path());
    run(&app).await;
    // Two window PEs, each with its share of the auctions, into one file.
    let got = windows(&dir.path().join("out.jsonl"), 10_000, 10_000);
    let mut want = BTreeMap::new();
    for (auction, _, _, t) in bids() {
        *want
            .entry((auction, t.div_euclid(10_000) * 10_000))
            .or_insert(0i64) += 1;
    }
    assert!(
        want.len() > 100,
        "a few windows of many auctions: {}",
        want.len()
    );
    assert_eq!(got, want);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn q5_counts_bids_per_auction_in_sliding_windows_as_the_reference_does() {
    let dir = tempfile::tempdir().unwrap();
    let app = scaled(example("q5.yaml"), dir.path());
    run(&app).await;
    let got = windows(&dir.path().join("out.jsonl"), 10_000, 2_000);
    // Each bid counts in the 5 windows starting at a multiple of 2 s in (t - 10 s, t].
    let mut want = BTreeMap::new();
    for (auction, _, _, t) in bids() {
        let latest = t.div_euclid(2_000) * 2_000;
        for k in 0..5 {
            *want.entry((auction, latest - k * 2_000)).or_insert(0i64) += 1;
        }
    }
    assert_eq!(got, want);
}
