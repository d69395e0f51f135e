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
            signature: None,
        })
        .await
        .unwrap();

    let detail = eventually_within(
        "every record at the sinks",
        Duration::from_secs(300),
        || {
            let mut client = client.clone();
            async move {
                let d = app_detail(&mut client, "million").await?;
                verify_done(&d, "check").map(|v| (d, v))
            }
        },
    )
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

    // Every source ran out and every PE stopped: the app finished, its PEs are gone
    // from the workers, and its final figures are kept (the same exact counts).
    let done = eventually_within("the app to finish", Duration::from_secs(60), || {
        let mut client = client.clone();
        async move {
            let d = app_detail(&mut client, "million").await?;
            let s = d.summary.clone()?;
            (s.state == pb::AppState::Finished as i32).then_some(d)
        }
    })
    .await;
    assert!(done.summary.as_ref().unwrap().finished_at_ms > 0);
    assert!(done
        .pes
        .iter()
        .all(|p| p.state == pb::PeState::Stopped as i32));
    let final_records: u64 = verify_done(&done, "check")
        .unwrap()
        .iter()
        .map(|v| v.records)
        .sum();
    assert_eq!(final_records, expected);
    let gen_out: u64 = done
        .pes
        .iter()
        .filter(|p| p.pe.as_ref().is_some_and(|r| r.operator == "gen"))
        .map(|p| p.stats.as_ref().map_or(0, |s| s.records_out))
        .sum();
    assert_eq!(gen_out, RECORDS, "the generators' final counts");
    weir_tests::eventually("the workers to forget the finished PEs", || {
        let empty = workers.iter().all(|w| w.runtime.report().is_empty());
        async move { empty.then_some(()) }
    })
    .await;
    let listed = client
        .list_apps(pb::ListAppsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .apps;
    assert_eq!(listed[0].state, pb::AppState::Finished as i32);
    for w in workers {
        w.stop().await;
    }
    c.stop().await;
}

async fn cluster_with_workers(n: usize) -> (Cluster, Vec<weir_worker::node::Worker>) {
    let c = Cluster::start_tuned(1, fast).await;
    c.leader().await;
    let masters: Vec<_> = c.addrs.values().copied().collect();
    let mut workers = Vec::new();
    for i in 1..=n {
        workers.push(start_worker(&format!("w{i}"), &masters).await);
    }
    let client = c.client(1).await;
    weir_tests::eventually("workers registered", || {
        let mut client = client.clone();
        async move {
            let ws = client.list_workers(pb::ListWorkersRequest {}).await.ok()?;
            (ws.into_inner().workers.len() == n).then_some(())
        }
    })
    .await;
    (c, workers)
}

async fn submit(c: &Cluster, spec: String) {
    c.client(1)
        .await
        .submit_app(pb::SubmitAppRequest {
            spec,
            format: pb::SpecFormat::Yaml as i32,
            request_id: String::new(),
            signature: None,
        })
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn records_round_trip_through_an_exec_pe() {
    let (c, workers) = cluster_with_workers(2).await;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/pe/upper.py");
    submit(
        &c,
        format!(
            r#"
name: scripted
operators:
  - {{name: gen, kind: source.generator, params: {{count: 20000, keys: 7, payload_bytes: 8}}}}
  - {{name: label, kind: map, params: {{set: {{page: 'concat("/p/", mod(id, 3))'}}}}}}
  - {{name: upper, kind: exec, params: {{command: [python3, "{script}"], protocol: lines}}}}
  - {{name: only-p0, kind: filter, params: {{field: page, op: eq, value: "/P/0"}}}}
  - {{name: check, kind: sink.verify}}
streams:
  - {{from: gen, to: label}}
  - {{from: label, to: upper}}
  - {{from: upper, to: only-p0}}
  - {{from: only-p0, to: check}}
"#
        ),
    )
    .await;
    let client = c.client(1).await;
    let v = eventually_within(
        "records through the script",
        Duration::from_secs(120),
        || {
            let mut client = client.clone();
            async move { verify_done(&app_detail(&mut client, "scripted").await?, "check") }
        },
    )
    .await;
    // upper.py upper-cased `page`: only records with id % 3 == 0 pass the filter on
    // "/P/0", each exactly once, with their origin intact.
    let expected = (0..20000u64).filter(|id| id % 3 == 0).count() as u64;
    assert_eq!(
        (v[0].distinct, v[0].records, v[0].duplicates),
        (expected, expected, 0)
    );
    for w in workers {
        w.stop().await;
    }
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_lost_workers_pes_are_placed_elsewhere_and_the_app_runs_again() {
    let (c, mut workers) = cluster_with_workers(3).await;
    submit(
        &c,
        r#"
name: steady
operators:
  - {name: gen, kind: source.generator, parallelism: 3, params: {rate: 30000, keys: 100, payload_bytes: 16}}
  - {name: work, kind: map, parallelism: 3, params: {set: {b: "mod(id, 7)"}}}
  - {name: check, kind: sink.verify, parallelism: 3}
streams:
  - {from: gen, to: work}
  - {from: work, to: check, partitioning: hash}
"#
        .into(),
    )
    .await;
    let mut client = c.client(1).await;
    let running = |d: &pb::AppDetail| {
        d.pes.len() == 9 && d.pes.iter().all(|p| p.state == pb::PeState::Running as i32)
    };
    let flowing = |d: &pb::AppDetail| {
        d.pes
            .iter()
            .filter(|p| p.verify.is_some())
            .map(|p| p.verify.unwrap().records)
            .sum::<u64>()
    };
    let d = eventually_within("the app running", Duration::from_secs(60), || {
        let mut client = client.clone();
        async move {
            let d = app_detail(&mut client, "steady").await?;
            (running(&d) && flowing(&d) > 0).then_some(d)
        }
    })
    .await;
    // Kill the worker hosting the most PEs (as a crash: no hand-over).
    let mut count = std::collections::BTreeMap::<String, usize>::new();
    for p in &d.pes {
        *count.entry(p.worker_id.clone()).or_default() += 1;
    }
    let victim = count.iter().max_by_key(|(_, n)| **n).unwrap().0.clone();
    workers.remove(workers_index(&victim)).stop().await;

    // Every PE ends up running on a survivor, and records flow again at every sink.
    let before = eventually_within("PEs re-placed and running", Duration::from_secs(60), || {
        let mut client = client.clone();
        let victim = victim.clone();
        async move {
            let d = app_detail(&mut client, "steady").await?;
            (running(&d) && d.pes.iter().all(|p| p.worker_id != victim)).then_some(flowing(&d))
        }
    })
    .await;
    eventually_within(
        "records flowing after recovery",
        Duration::from_secs(60),
        || {
            let mut client = client.clone();
            async move {
                let d = app_detail(&mut client, "steady").await?;
                (flowing(&d) > before + 10_000).then_some(())
            }
        },
    )
    .await;
    client
        .cancel_app(pb::CancelAppRequest {
            app: "steady".into(),
            request_id: String::new(),
        })
        .await
        .unwrap();
    for w in workers {
        w.stop().await;
    }
    c.stop().await;
}

/// `w3` -> 2.
fn workers_index(id: &str) -> usize {
    id[1..].parse::<usize>().unwrap() - 1
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_apps_with_the_same_operators_share_workers_without_mixing() {
    // PE ids are per app: identical operators in two apps have identical PE ids, so the
    // app must be part of every PE's and channel's identity on a worker.
    let (c, workers) = cluster_with_workers(2).await;
    const N: u64 = 100_000;
    for name in ["twin-a", "twin-b"] {
        submit(&c, pipeline_spec(name, N)).await;
    }
    let client = c.client(1).await;
    let expected = (0..N).filter(|id| value_of(*id, 0) < 500).count() as u64;
    for name in ["twin-a", "twin-b"] {
        let summaries = eventually_within(
            "every record at the sinks",
            Duration::from_secs(300),
            || {
                let mut client = client.clone();
                async move {
                    let d = app_detail(&mut client, name).await?;
                    verify_done(&d, "check")
                }
            },
        )
        .await;
        let records: u64 = summaries.iter().map(|s| s.records).sum();
        let distinct: u64 = summaries.iter().map(|s| s.distinct).sum();
        let duplicates: u64 = summaries.iter().map(|s| s.duplicates).sum();
        assert_eq!(
            (records, distinct, duplicates),
            (expected, expected, 0),
            "{name}"
        );
    }
    for w in workers {
        w.stop().await;
    }
    c.stop().await;
}

/// A PE asking for a GPU waits, saying why, while no worker has one; then it lands on
/// the one worker that has GPUs, and its program sees
/// the device it was given and no other (CUDA_VISIBLE_DEVICES): the chain from the
/// scheduler's allocation through DeployPe to the exec environment. The devices are
/// declared here; on a machine with NVIDIA GPUs the same chain was run against NVML
/// (docs/gpus.md).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_gpu_pe_lands_on_the_gpu_worker_and_sees_only_its_device() {
    let (c, mut workers) = cluster_with_workers(1).await;
    let client = c.client(1).await;

    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("squares.jsonl");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/pe/gpu_square.py");
    let count = 2000u64;
    submit(
        &c,
        format!(
            r#"
name: on-gpu
operators:
  - {{name: gen, kind: source.generator, params: {{count: {count}, keys: 5, payload_bytes: 8}}}}
  - name: square
    kind: exec
    params: {{command: [python3, "{script}"], protocol: lines}}
    resources: {{gpu: {{count: 1, memory_mb: 4096}}}}
  - {{name: out, kind: sink.file, params: {{path: "{out}"}}}}
  - {{name: audit, kind: sink.verify}}
streams:
  - {{from: gen, to: square}}
  - {{from: square, to: out}}
  - {{from: square, to: audit}}
"#,
            out = out.display()
        ),
    )
    .await;
    // No worker has a GPU yet: the app waits, and says which PE lacks what.
    let why = eventually_within(
        "the reason it is not placed",
        Duration::from_secs(60),
        || {
            let mut client = client.clone();
            async move {
                let d = app_detail(&mut client, "on-gpu").await?;
                Some(d.unplaced_reason).filter(|w| !w.is_empty())
            }
        },
    )
    .await;
    assert!(why.contains("square@") && why.contains("4096 MiB"), "{why}");
    // Where `square` is placed, as the master tells it: read from the watch, since the
    // app may finish (and free its device) before a poll of GetApp sees it running.
    let mut events = client
        .clone()
        .watch_app(pb::WatchAppRequest {
            app: "on-gpu".into(),
        })
        .await
        .unwrap()
        .into_inner();
    let placed = tokio::spawn(async move {
        loop {
            let ev = events
                .message()
                .await
                .expect("the watch goes on")
                .expect("the app's events until square is placed");
            if let Some(pb::app_event::Event::PlacementChanged(p)) = ev.event {
                if let Some(sq) = p
                    .placements
                    .into_iter()
                    .find(|p| p.pe.starts_with("square@") && !p.worker_id.is_empty())
                {
                    return sq;
                }
            }
        }
    });
    // Two devices arrive; the PE asks for one slice of 4 GiB, so one of them is its own.
    let masters: Vec<_> = c.addrs.values().copied().collect();
    let gpu = weir_tests::start_worker_with("gpu1", &masters, |cfg| {
        cfg.declared_gpus = vec![
            "nvidia:test:16384:GPU-test-a".parse().unwrap(),
            "nvidia:test:16384:GPU-test-b".parse().unwrap(),
        ];
    });
    workers.push(gpu.await);
    let detail = eventually_within(
        "records through the GPU PE",
        Duration::from_secs(120),
        || {
            let mut client = client.clone();
            async move {
                let d = app_detail(&mut client, "on-gpu").await?;
                verify_done(&d, "audit")?;
                Some(d)
            }
        },
    )
    .await;
    let v = verify_done(&detail, "audit").unwrap();
    assert_eq!((v[0].records, v[0].duplicates), (count, 0));
    assert_eq!(detail.unplaced_reason, "", "placed now");
    let square = tokio::time::timeout(Duration::from_secs(60), placed)
        .await
        .expect("square's placement was told")
        .unwrap();
    assert_eq!(square.worker_id, "gpu1", "placed on the worker with GPUs");
    assert_eq!(square.gpu_uuids.len(), 1, "{:?}", square.gpu_uuids);
    let device = &square.gpu_uuids[0];
    assert!(device.starts_with("GPU-test-"), "{device}");

    let text = eventually_within("the squares are visible", Duration::from_secs(60), || {
        let out = out.clone();
        async move {
            let t = std::fs::read_to_string(&out).ok()?;
            (t.lines().count() as u64 == count).then_some(t)
        }
    })
    .await;
    for line in text.lines() {
        let r: serde_json::Value = serde_json::from_str(line).unwrap();
        assert_eq!(
            r["visible"],
            device.as_str(),
            "it sees its device alone: {r}"
        );
        let id = r["id"].as_u64().unwrap();
        let value = value_of(id, 0);
        assert_eq!(r["square"].as_i64(), Some(value * value), "{r}");
    }
    for w in workers {
        w.stop().await;
    }
    c.stop().await;
}

/// A parallel `source.file`: three PEs on two workers split the file by byte range,
/// and every line arrives exactly once (checked by content, not only by count).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_parallel_file_source_reads_every_line_once() {
    let (c, workers) = cluster_with_workers(2).await;
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.txt");
    let out = dir.path().join("out.jsonl");
    let n = 30_000usize;
    let text: String = (0..n)
        .map(|i| format!("row-{i}-{}\n", "z".repeat(i % 17)))
        .collect();
    std::fs::write(&input, &text).unwrap();
    submit(
        &c,
        format!(
            r#"
name: lines
operators:
  - {{name: read, kind: source.file, parallelism: 3, params: {{path: "{input}", format: raw}}}}
  - {{name: out, kind: sink.file, params: {{path: "{out}"}}}}
  - {{name: audit, kind: sink.verify}}
streams:
  - {{from: read, to: out, partitioning: round_robin}}
  - {{from: read, to: audit, partitioning: round_robin}}
"#,
            input = input.display(),
            out = out.display()
        ),
    )
    .await;
    let client = c.client(1).await;
    let detail = eventually_within("every line read", Duration::from_secs(120), || {
        let mut client = client.clone();
        async move {
            let d = app_detail(&mut client, "lines").await?;
            verify_done(&d, "audit")?;
            Some(d)
        }
    })
    .await;
    let v = verify_done(&detail, "audit").unwrap();
    assert_eq!((v[0].records, v[0].duplicates), (n as u64, 0));
    let readers_out = |d: &pb::AppDetail| -> Vec<u64> {
        d.pes
            .iter()
            .filter(|p| p.pe.as_ref().is_some_and(|r| r.operator == "read"))
            .map(|p| p.stats.as_ref().map_or(0, |s| s.records_out))
            .collect()
    };
    // The audit's summary and the readers' counters come in different workers'
    // reports: wait until the readers' last reports are in (every line counted once).
    let readers = eventually_within(
        "the readers' final counters",
        Duration::from_secs(60),
        || {
            let mut client = client.clone();
            async move {
                let r = readers_out(&app_detail(&mut client, "lines").await?);
                (r.iter().sum::<u64>() == n as u64).then_some(r)
            }
        },
    )
    .await;
    assert_eq!(readers.len(), 3);
    assert!(
        readers.iter().all(|r| *r > 0),
        "each PE read its share: {readers:?}"
    );
    let got = eventually_within("the lines are visible", Duration::from_secs(60), || {
        let out = out.clone();
        async move {
            let t = std::fs::read_to_string(&out).ok()?;
            (t.lines().count() == n).then_some(t)
        }
    })
    .await;
    let mut got: Vec<String> = got
        .lines()
        .map(|l| {
            let r: serde_json::Value = serde_json::from_str(l).unwrap();
            r["line"].as_str().unwrap().to_string()
        })
        .collect();
    got.sort();
    let mut want: Vec<String> = text.lines().map(str::to_string).collect();
    want.sort();
    assert_eq!(got, want, "every line exactly once");
    for w in workers {
        w.stop().await;
    }
    c.stop().await;
}
