//! `source.nexmark` across a worker loss: the sources restart from their checkpointed
//! positions and, with a keyed window and an audit downstream, every bid is counted
//! exactly once. One master and in-process workers on loopback, real gRPC and TCP,
//! snapshots on disk and replicated between workers.

use std::collections::BTreeMap;
use std::time::Duration;
use tonic::transport::Channel;
use weir_common::spec::NexmarkTable;
use weir_proto::v1 as pb;
use weir_proto::v1::weir_client::WeirClient;
use weir_tests::{app_detail, eventually_within, start_worker, verify_done, Cluster};
use weir_worker::ops::nexmark::{events, Channels};

const EVENTS: u64 = 120_000;
const SEED: u64 = 9;
const WINDOW_MS: i64 = 1000;
const LIMIT: Duration = Duration::from_secs(240);

fn fast(cfg: &mut weir_master::server::MasterConfig) {
    cfg.worker_heartbeat = Duration::from_millis(100);
    cfg.worker_timeout = Duration::from_millis(1500);
    cfg.reconcile_interval = Duration::from_millis(100);
}

/// Paced Nexmark bids into bids per auction per second (to a file), and an audit of
/// every bid. At 10,000 events/s of event time, 120,000 events span 12 windows.
fn spec(out: &str) -> String {
    format!(
        r#"
name: nx
checkpoint_interval_ms: 300
operators:
  - {{name: bids, kind: source.nexmark, parallelism: 2, params: {{events: {EVENTS}, seed: {SEED}, rate: 30000}}}}
  - {{name: by-auction, kind: key_by, parallelism: 2, params: {{field: auction}}}}
  - {{name: win, kind: window.count, parallelism: 2, params: {{size_ms: {WINDOW_MS}}}}}
  - {{name: out, kind: sink.file, params: {{path: "{out}"}}}}
  - {{name: audit, kind: sink.verify, params: {{expect: {bids}}}}}
streams:
  - {{from: bids, to: by-auction}}
  - {{from: by-auction, to: win, partitioning: hash}}
  - {{from: win, to: out, partitioning: round_robin}}
  - {{from: bids, to: audit, partitioning: round_robin}}
"#,
        bids = bids().len()
    )
}

/// (auction, event time) of every bid among the events, from the model itself.
fn bids() -> Vec<(i64, i64)> {
    let channels = Channels::new(SEED);
    (0..EVENTS)
        .filter(|n| events::kind_of(*n) == NexmarkTable::Bid)
        .map(|n| {
            let b = events::bid(SEED, n, 10_000, &channels);
            (b.auction, b.date_time)
        })
        .collect()
}

/// A complete checkpoint whose every piece has a copy on `replica`.
async fn checkpoint_replicated_on(client: &WeirClient<Channel>, replica: &str) -> u64 {
    eventually_within("a checkpoint replicated", LIMIT, || {
        let mut client = client.clone();
        let replica = replica.to_string();
        async move {
            let req = pb::ListCheckpointsRequest { app: "nx".into() };
            let r = client.list_checkpoints(req).await.ok()?.into_inner();
            r.checkpoints
                .into_iter()
                .rev()
                .find(|c| {
                    !c.pieces.is_empty() && c.pieces.iter().all(|p| p.replicas.contains(&replica))
                })
                .map(|c| c.checkpoint_id)
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn nexmark_sources_resume_from_their_checkpointed_positions_exactly() {
    weir_tests::init_log();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("counts.jsonl");
    let c = Cluster::start_tuned(1, fast).await;
    c.leader().await;
    let masters: Vec<_> = c.addrs.values().copied().collect();
    // w1 alone, so it hosts every PE; then two more to recover on.
    let mut workers = vec![start_worker("w1", &masters).await];
    let mut client = c.client(1).await;
    weir_tests::workers_alive(&client, 1, LIMIT).await;
    client
        .submit_app(weir_tests::submit_yaml(spec(out.to_str().unwrap())))
        .await
        .unwrap();
    eventually_within("every PE on w1", LIMIT, || {
        let mut client = client.clone();
        async move {
            let d = app_detail(&mut client, "nx").await?;
            (d.pes.len() == 8 && d.pes.iter().all(|p| p.worker_id == "w1")).then_some(())
        }
    })
    .await;
    for id in ["w2", "w3"] {
        workers.push(start_worker(id, &masters).await);
    }
    weir_tests::workers_alive(&client, 3, LIMIT).await;
    checkpoint_replicated_on(&client, "w2").await;
    let d = weir_tests::app_detail_read(&client, "nx").await;
    let seen: u64 = d
        .pes
        .iter()
        .filter_map(|p| p.verify)
        .map(|v| v.records)
        .sum();
    let want = bids();
    assert!(seen < want.len() as u64, "killed mid-stream ({seen} seen)");
    workers.remove(0).stop().await;

    // Every bid exactly once at the audit.
    let summaries = eventually_within("the audit sees every input end", LIMIT, || {
        let mut client = client.clone();
        async move { verify_done(&app_detail(&mut client, "nx").await?, "audit") }
    })
    .await;
    let sum = |f: fn(&pb::VerifySummary) -> u64| summaries.iter().map(f).sum::<u64>();
    assert_eq!(sum(|s| s.duplicates), 0, "no bid twice");
    assert_eq!(sum(|s| s.missing_below_max), 0, "no gap");
    assert_eq!(sum(|s| s.records), want.len() as u64);
    assert_eq!(sum(|s| s.distinct), want.len() as u64);

    // Bids per auction per window from the committed file equal a recomputation.
    let mut expected: BTreeMap<(String, i64), u64> = BTreeMap::new();
    for (auction, t) in &want {
        let start = t.div_euclid(WINDOW_MS) * WINDOW_MS;
        *expected.entry((auction.to_string(), start)).or_default() += 1;
    }
    let text = eventually_within("the window results are visible", LIMIT, || {
        let (out, n) = (out.clone(), expected.len());
        async move {
            let t = std::fs::read_to_string(&out).ok()?;
            (t.lines().count() == n).then_some(t)
        }
    })
    .await;
    weir_tests::assert_windows(&text, &expected);
    let r = client
        .list_checkpoints(pb::ListCheckpointsRequest { app: "nx".into() })
        .await
        .unwrap()
        .into_inner();
    assert!(
        r.recoveries
            .iter()
            .any(|rec| rec.reason.contains("worker w1 lost")),
        "{:?}",
        r.recoveries
    );
    for w in workers {
        w.stop().await;
    }
    c.stop().await;
}
