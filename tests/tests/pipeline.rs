//! Apps really run across workers: one master and three workers on loopback, real gRPC
//! between them and real TCP links between the workers.

use std::time::Duration;
use weir_proto::v1 as pb;
use weir_tests::{app_detail, eventually_within, start_worker, verify_done, Cluster};
use weir_worker::ops::generator::value_of;

const RECORDS: u64 = 1_000_000;

fn fast(cfg: &mut weir_master::server::MasterConfig) {
    cfg.worker_heartbeat = Duration::from_millis(100);
    cfg.worker_timeout = Duration::from_millis(1500);
    cfg.reconcile_interval = Duration::from_millis(100);
}

fn pipeline_spec(name: &str, count: u64) -> String {
    format!(
        r#"
name: {name}
operators:
  - {{name: gen, kind: source.generator, parallelism: 2, params: {{count: {count}, keys: 1000, payload_bytes: 16}}}}
  - name: enrich
    kind: map
    parallelism: 2
    params: {{set: {{bucket: "mod(id, 10)"}}}}
  - {{name: low, kind: filter, parallelism: 3, params: {{field: value, op: lt, value: 500}}}}
  - {{name: by-bucket, kind: key_by, parallelism: 3, params: {{field: bucket}}}}
  - {{name: check, kind: sink.verify, parallelism: 2}}
streams:
  - {{from: gen, to: enrich}}
  - {{from: enrich, to: low, partitioning: round_robin}}
  - {{from: low, to: by-bucket}}
  - {{from: by-bucket, to: check, partitioning: hash}}
"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_million_records_arrive_exactly_once_across_three_workers() {
    let c = Cluster::start_tuned(1, fast).await;
    c.leader().await;
    let masters: Vec<_> = c.addrs.values().copied().collect();
    let mut workers = Vec::new();
    for id in ["w1", "w2", "w3"] {
        workers.push(start_worker(id, &masters).await);
    }
    let mut client = c.client(1).await;
    weir_tests::eventually("three workers registered", || {
        let mut client = client.clone();
        async move {
            let ws = client.list_workers(pb::ListWorkersRequest {}).await.ok()?;
            (ws.into_inner().workers.len() == 3).then_some(())
        }
    })
    .await;
    client
        .submit_app(pb::SubmitAppRequest {
            spec: pipeline_spec("million", RECORDS),
            format: pb::SpecFormat::Yaml as i32,
            request_id: String::new(),
        })
        .await
        .unwrap();

    let detail = eventually_within("every record at the sinks", Duration::from_secs(300), || {
        let mut client = client.clone();
        async move {
            let d = app_detail(&mut client, "million").await?;
            verify_done(&d, "check").map(|v| (d, v))
        }
    })
    .await;
    let (detail, summaries) = detail;
    let expected = (0..RECORDS).filter(|id| value_of(*id, 0) < 500).count() as u64;
    assert!(expected > 0 && expected < RECORDS);
    let distinct: u64 = summaries.iter().map(|s| s.distinct).sum();
    let records: u64 = summaries.iter().map(|s| s.records).sum();
    let duplicates: u64 = summaries.iter().map(|s| s.duplicates).sum();
    assert_eq!(duplicates, 0, "no record twice");
    assert_eq!(records, expected, "exactly what the filter passes");
    assert_eq!(distinct, expected);

    // The PEs really are spread: at least two workers host PEs of the app.
    let hosts: std::collections::BTreeSet<_> =
        detail.pes.iter().map(|p| p.worker_id.clone()).collect();
    assert!(hosts.len() >= 2, "PEs on {hosts:?}");
    for w in workers {
        w.stop().await;
    }
    c.stop().await;
}
