//! Checkpoints and exactly-once recovery from worker loss: one master and in-process
//! workers on loopback, real gRPC and TCP, snapshots on disk and replicated between
//! workers.

use std::time::Duration;
use tonic::transport::Channel;
use weir_proto::v1 as pb;
use weir_proto::v1::weir_client::WeirClient;
use weir_tests::{
    app_detail, eventually_within, start_worker, start_worker_with, verify_done, Cluster,
};
use weir_worker::agent::AgentConfig;
use weir_worker::node::Worker;

const RECORDS: u64 = 300_000;
const KEYS: u64 = 20;
const WINDOW_MS: i64 = 1000;
const LIMIT: Duration = Duration::from_secs(240);

fn fast(cfg: &mut weir_master::server::MasterConfig) {
    cfg.worker_heartbeat = Duration::from_millis(100);
    cfg.worker_timeout = Duration::from_millis(1500);
    cfg.reconcile_interval = Duration::from_millis(100);
}

/// What an app's generator and window do: the expected results follow from it.
#[derive(Clone, Copy)]
struct Shape {
    records: u64,
    rate: u64,
    keys: u64,
    window_ms: i64,
    interval_ms: u64,
}

/// The stream most tests use: windows close every second of event time.
const SHAPE: Shape = Shape {
    records: RECORDS,
    rate: 50_000,
    keys: KEYS,
    window_ms: WINDOW_MS,
    interval_ms: 300,
};

/// One window open all along over many keys, changing between checkpoints: its
/// pieces are increments.
const OPEN_WINDOW: Shape = Shape {
    records: 120_000,
    rate: 10_000,
    keys: 60_000,
    window_ms: 1_000_000_000,
    interval_ms: 2_000,
};

/// A paced generator into a keyed window whose results go to a file, and an audit of
/// every generated record.
fn spec(name: &str, out: &str) -> String {
    spec_shaped(name, out, SHAPE)
}

fn spec_shaped(name: &str, out: &str, s: Shape) -> String {
    let Shape {
        records,
        rate,
        keys,
        window_ms,
        interval_ms,
    } = s;
    format!(
        r#"
name: {name}
checkpoint_interval_ms: {interval_ms}
operators:
  - {{name: gen, kind: source.generator, parallelism: 2, params: {{count: {records}, rate: {rate}, keys: {keys}, payload_bytes: 8}}}}
  - {{name: win, kind: window.count, parallelism: 2, params: {{size_ms: {window_ms}}}}}
  - {{name: out, kind: sink.file, params: {{path: "{out}"}}}}
  - {{name: audit, kind: sink.verify, params: {{expect: {records}}}}}
streams:
  - {{from: gen, to: win, partitioning: hash}}
  - {{from: win, to: out, partitioning: round_robin}}
  - {{from: gen, to: audit, partitioning: round_robin}}
"#
    )
}

async fn submit(client: &mut WeirClient<Channel>, spec: String) {
    client
        .submit_app(pb::SubmitAppRequest {
            spec,
            format: pb::SpecFormat::Yaml as i32,
            request_id: String::new(),
            signature: None,
        })
        .await
        .unwrap();
}

async fn workers_alive(client: &WeirClient<Channel>, n: usize) {
    weir_tests::workers_alive(client, n, LIMIT).await;
}

/// The app's checkpoints. A read is asked again while it is refused: a leader just
/// elected, or one on a loaded machine, may not confirm its leadership at once.
async fn checkpoints(client: &mut WeirClient<Channel>, app: &str) -> pb::ListCheckpointsResponse {
    eventually_within(&format!("the checkpoints of {app} read"), LIMIT, || {
        let mut client = client.clone();
        async move {
            let req = pb::ListCheckpointsRequest { app: app.into() };
            client.list_checkpoints(req).await.ok()
        }
    })
    .await
    .into_inner()
}

/// Waits for a complete checkpoint newer than `after` whose every piece has a copy on
/// `replica`; returns it.
async fn checkpoint_replicated_on(
    client: &WeirClient<Channel>,
    app: &str,
    after: u64,
    replica: &str,
) -> pb::CheckpointInfo {
    eventually_within("a checkpoint replicated", LIMIT, || {
        let mut client = client.clone();
        let (app, replica) = (app.to_string(), replica.to_string());
        async move {
            let r = checkpoints(&mut client, &app).await;
            r.checkpoints.into_iter().rev().find(|c| {
                c.checkpoint_id > after
                    && !c.pieces.is_empty()
                    && c.pieces.iter().all(|p| p.replicas.contains(&replica))
            })
        }
    })
    .await
}

/// Waits for the newest checkpoint of `app` to have just completed (under 500 ms ago,
/// none in flight: the next is an interval away) with every piece copied to w2 and
/// window pieces that `windows` accepts; returns it and the app's kept checkpoints.
async fn just_completed(
    client: &WeirClient<Channel>,
    app: &str,
    windows: fn(&[&pb::CheckpointPieceInfo]) -> bool,
) -> (pb::CheckpointInfo, Vec<pb::CheckpointInfo>) {
    eventually_within("a checkpoint just completed", LIMIT, || {
        let mut client = client.clone();
        let app = app.to_string();
        async move {
            let r = checkpoints(&mut client, &app).await;
            let ck = r.checkpoints.last()?.clone();
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .ok()?
                .as_millis() as u64;
            let wins: Vec<_> = ck
                .pieces
                .iter()
                .filter(|p| p.pe.starts_with("win@"))
                .collect();
            (now.saturating_sub(ck.completed_at_ms) < 500
                && r.in_flight_id == 0
                && windows(&wins)
                && ck
                    .pieces
                    .iter()
                    .all(|p| p.replicas.iter().any(|w| w == "w2")))
            .then_some((ck, r.checkpoints))
        }
    })
    .await
}

/// The audit and the window results once every input ended, checked against what the
/// generator's ids say they must be.
async fn assert_exact(client: &WeirClient<Channel>, app: &str, out: &std::path::Path) {
    assert_exact_shaped(client, app, out, SHAPE).await;
}

async fn assert_exact_shaped(
    client: &WeirClient<Channel>,
    app: &str,
    out: &std::path::Path,
    shape: Shape,
) {
    let summaries = eventually_within("the audit sees every input end", LIMIT, || {
        let mut client = client.clone();
        let app = app.to_string();
        async move {
            let d = app_detail(&mut client, &app).await?;
            verify_done(&d, "audit")
        }
    })
    .await;
    let records: u64 = summaries.iter().map(|s| s.records).sum();
    let distinct: u64 = summaries.iter().map(|s| s.distinct).sum();
    let duplicates: u64 = summaries.iter().map(|s| s.duplicates).sum();
    let missing: u64 = summaries.iter().map(|s| s.missing_below_max).sum();
    assert_eq!(duplicates, 0, "no record twice");
    assert_eq!(missing, 0, "no gap");
    assert_eq!(records, shape.records, "every record exactly once");
    assert_eq!(distinct, shape.records);

    // Window counts from the committed file equal a recomputation from the ids.
    let expected = weir_tests::expected_windows(shape.records, shape.keys, shape.window_ms);
    let text = eventually_within("the window results are visible", LIMIT, || {
        let out = out.to_path_buf();
        let want = expected.len();
        async move {
            let t = std::fs::read_to_string(&out).ok()?;
            (t.lines().count() == want).then_some(t)
        }
    })
    .await;
    weir_tests::assert_windows(&text, &expected);
}

/// Starts w1 alone so it hosts every PE (source, window and sinks), then `extra` more.
async fn app_on_first_worker(
    name: &str,
    out: &std::path::Path,
    extra: usize,
) -> (Cluster, WeirClient<Channel>, Vec<Worker>) {
    app_shaped_on_first_worker(name, out, extra, SHAPE).await
}

async fn app_shaped_on_first_worker(
    name: &str,
    out: &std::path::Path,
    extra: usize,
    shape: Shape,
) -> (Cluster, WeirClient<Channel>, Vec<Worker>) {
    app_tuned_on_first_worker(name, out, extra, shape, |_| {}).await
}

/// [`app_shaped_on_first_worker`] with every worker's config changed by `tune`.
async fn app_tuned_on_first_worker(
    name: &str,
    out: &std::path::Path,
    extra: usize,
    shape: Shape,
    tune: fn(&mut AgentConfig),
) -> (Cluster, WeirClient<Channel>, Vec<Worker>) {
    let c = Cluster::start_tuned(1, fast).await;
    c.leader().await;
    let masters: Vec<_> = c.addrs.values().copied().collect();
    let mut workers = vec![start_worker_with("w1", &masters, tune).await];
    let mut client = c.client(1).await;
    workers_alive(&client, 1).await;
    submit(&mut client, spec_shaped(name, out.to_str().unwrap(), shape)).await;
    eventually_within("every PE on w1", LIMIT, || {
        let mut client = client.clone();
        let name = name.to_string();
        async move {
            let d = app_detail(&mut client, &name).await?;
            (d.pes.len() == 6 && d.pes.iter().all(|p| p.worker_id == "w1")).then_some(())
        }
    })
    .await;
    for i in 0..extra {
        workers.push(start_worker_with(&format!("w{}", i + 2), &masters, tune).await);
    }
    workers_alive(&client, 1 + extra).await;
    (c, client, workers)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn killing_the_worker_of_source_window_and_sinks_loses_and_repeats_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("views.jsonl");
    let (c, mut client, mut workers) = app_on_first_worker("ck1", &out, 2).await;
    let ck = checkpoint_replicated_on(&client, "ck1", 0, "w2").await;
    assert!(ck.size_bytes > 0);
    // Kill the worker running everything mid-stream.
    let audit = weir_tests::app_detail_read(&client, "ck1").await;
    let seen: u64 = audit
        .pes
        .iter()
        .filter_map(|p| p.verify)
        .map(|v| v.records)
        .sum();
    assert!(seen < RECORDS, "killed mid-stream ({seen} seen)");
    workers.remove(0).stop().await;

    assert_exact(&client, "ck1", &out).await;
    let r = checkpoints(&mut client, "ck1").await;
    let rec = r.recoveries.first().expect("a recovery is recorded");
    assert!(rec.reason.contains("worker w1 lost"), "{}", rec.reason);
    assert!(rec.checkpoint_id >= ck.checkpoint_id, "{rec:?}");
    assert_eq!(rec.operators.len(), 4, "the whole region restarts: {rec:?}");
    let d = weir_tests::app_detail_read(&client, "ck1").await;
    assert!(d.pes.iter().all(|p| p.worker_id != "w1"));
    for w in workers {
        w.stop().await;
    }
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_recovery_from_an_incremental_checkpoint_is_exact() {
    recovery_from_increments_is_exact("ck6", |_| {}).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_recovery_from_increments_encoded_after_their_barriers_is_exact() {
    // Every window snapshot, increment or whole, encoded after its barrier, a slice at
    // a time while records flow, and stored after (`ops/window/encoding.rs`): what they
    // hold is the state at their barrier, so the recovery is exact.
    recovery_from_increments_is_exact("ck8", |cfg| cfg.defer_snapshot_from = 1).await;
}

/// One window open all along over many keys, a third of them changing between
/// checkpoints, so its pieces are increments on its earlier snapshots; its worker is
/// lost right after one completes, and the recovery from it is exact.
async fn recovery_from_increments_is_exact(app: &str, tune: fn(&mut AgentConfig)) {
    let shape = OPEN_WINDOW;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("views.jsonl");
    let (c, mut client, mut workers) = app_tuned_on_first_worker(app, &out, 1, shape, tune).await;
    // The newest checkpoint, just completed, with increments (on two snapshots or
    // more where it comes) replicated to w2; w1 dies before the next one (2 s on).
    let (ck, _) = just_completed(&client, app, |windows| {
        windows.len() == 2 && windows.iter().all(|p| !p.builds_on.is_empty())
    })
    .await;
    workers.remove(0).stop().await;
    assert_exact_shaped(&client, app, &out, shape).await;
    let r = checkpoints(&mut client, app).await;
    let rec = r.recoveries.first().expect("a recovery is recorded");
    assert_eq!(rec.checkpoint_id, ck.checkpoint_id, "{rec:?}");
    let win = ck.pieces.iter().find(|p| p.pe.starts_with("win@")).unwrap();
    assert!(win.restore_bytes > win.size_bytes, "{win:?}");
    for w in workers {
        w.stop().await;
    }
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_recovery_from_a_successors_seeded_increments_is_exact() {
    // As above, then the window rescaled 2 -> 3: each successor's first pieces are
    // increments on its predecessors' whole pieces of the switch checkpoint (its
    // seed), not its whole state. The worker of the old PEs dies right after one: the
    // recovery loads the seed, then the increments.
    let shape = Shape {
        records: 240_000,
        ..OPEN_WINDOW
    };
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("views.jsonl");
    let (c, mut client, mut workers) = app_shaped_on_first_worker("ck7", &out, 1, shape).await;
    // Rescaled once the window holds some state (~20,000 keys).
    eventually_within("a checkpoint of the window's state", LIMIT, || {
        let mut client = client.clone();
        async move {
            let r = checkpoints(&mut client, "ck7").await;
            let ck = r.checkpoints.last()?;
            let windows = ck.pieces.iter().filter(|p| p.pe.starts_with("win@"));
            (windows.map(|p| p.size_bytes).sum::<u64>() > 400_000).then_some(())
        }
    })
    .await;
    let spec = spec_shaped("ck7", out.to_str().unwrap(), shape).replace(
        "kind: window.count, parallelism: 2",
        "kind: window.count, parallelism: 3",
    );
    eventually_within("the rescale is taken", LIMIT, || {
        let mut client = client.clone();
        let spec = spec.clone();
        async move {
            let req = pb::UpgradeAppRequest {
                app: "ck7".into(),
                spec,
                format: pb::SpecFormat::Yaml as i32,
                request_id: "ck7-rescale".into(),
                ..Default::default()
            };
            match client.upgrade_app(req).await {
                Ok(r) => Some(r.into_inner()),
                Err(s) if s.code() == tonic::Code::Unavailable => None,
                Err(s) => panic!("upgrade refused: {s:?}"),
            }
        }
    })
    .await;
    let (ck, kept) = just_completed(&client, "ck7", |windows| {
        windows.len() == 3 && windows.iter().all(|p| !p.seeded_from.is_empty())
    })
    .await;
    let on = ck
        .pieces
        .iter()
        .find(|p| p.pe.starts_with("win@"))
        .unwrap()
        .builds_on[0];
    let switch = kept
        .iter()
        .find(|c| c.checkpoint_id == on)
        .expect("the switch is kept");
    workers.remove(0).stop().await;
    assert_exact_shaped(&client, "ck7", &out, shape).await;
    let r = checkpoints(&mut client, "ck7").await;
    let rec = r.recoveries.first().expect("a recovery is recorded");
    assert_eq!(rec.checkpoint_id, ck.checkpoint_id, "{rec:?}");
    // Each successor's seed is its predecessors' whole pieces of the switch.
    for win in ck.pieces.iter().filter(|p| p.pe.starts_with("win@")) {
        assert_eq!(win.builds_on, vec![switch.checkpoint_id], "{win:?}");
        let seed: u64 = switch
            .pieces
            .iter()
            .filter(|p| win.seeded_from.contains(&p.pe))
            .inspect(|p| assert!(p.builds_on.is_empty(), "a whole piece: {p:?}"))
            .map(|p| p.size_bytes)
            .sum();
        assert!(seed > 100_000, "{seed} bytes of seed: {win:?}");
        assert_eq!(win.restore_bytes, win.size_bytes + seed, "{win:?}");
    }
    for w in workers {
        w.stop().await;
    }
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_workers_killed_one_after_the_other_stay_exact() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("views.jsonl");
    let (c, client, mut workers) = app_on_first_worker("ck2", &out, 1).await;
    let masters: Vec<_> = c.addrs.values().copied().collect();
    let first = checkpoint_replicated_on(&client, "ck2", 0, "w2").await;
    workers.remove(0).stop().await; // w1: everything moves to w2
    eventually_within("recovered onto w2", LIMIT, || {
        let mut client = client.clone();
        async move {
            let r = checkpoints(&mut client, "ck2").await;
            let d = app_detail(&mut client, "ck2").await?;
            (!r.recoveries.is_empty() && d.pes.iter().all(|p| p.worker_id == "w2")).then_some(())
        }
    })
    .await;
    workers.push(start_worker("w3", &masters).await);
    // A checkpoint after the recovery, replicated to the newcomer, then w2 goes too.
    let second = checkpoint_replicated_on(&client, "ck2", first.checkpoint_id, "w3").await;
    assert!(second.pieces.iter().all(|p| p.replicas[0] == "w2"));
    workers.remove(0).stop().await; // w2
    assert_exact(&client, "ck2", &out).await;
    let r = checkpoints(&mut client.clone(), "ck2").await;
    assert!(r.recoveries.len() >= 2, "{:?}", r.recoveries);
    assert!(r
        .recoveries
        .iter()
        .any(|x| x.checkpoint_id >= second.checkpoint_id));
    for w in workers {
        w.stop().await;
    }
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_unreadable_checkpoint_falls_back_to_the_previous_one_and_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("views.jsonl");
    let (c, mut client, mut workers) = app_on_first_worker("ck3", &out, 1).await;
    let first = checkpoint_replicated_on(&client, "ck3", 0, "w2").await;
    checkpoint_replicated_on(&client, "ck3", first.checkpoint_id, "w2").await;
    workers.remove(0).stop().await; // w1: its copies are gone; w2 holds the replicas
    let store = workers[0].store.clone(); // w2's
                                          // Damage w2's copy of the newest complete checkpoint until w1 is declared lost (no
                                          // checkpoint completes after that), so recovery cannot use it.
    let damaged = std::sync::Arc::new(std::sync::Mutex::new(std::collections::BTreeSet::new()));
    eventually_within("w1 declared lost", LIMIT, || {
        let mut client = client.clone();
        let (damaged, w2) = (damaged.clone(), store.clone());
        async move {
            let r = checkpoints(&mut client, "ck3").await;
            if let Some(ck) = r.checkpoints.last() {
                if damaged.lock().unwrap().insert(ck.checkpoint_id) {
                    for p in &ck.pieces {
                        let path = w2.path("ck3", &p.pe, ck.checkpoint_id).unwrap();
                        let mut bytes = std::fs::read(&path).unwrap();
                        let last = bytes.len() - 1;
                        bytes[last] ^= 0xff;
                        std::fs::write(&path, bytes).unwrap();
                    }
                }
            }
            (!r.recoveries.is_empty()).then_some(())
        }
    })
    .await;
    assert_exact(&client, "ck3", &out).await;
    let r = checkpoints(&mut client, "ck3").await;
    let fallback = r
        .recoveries
        .iter()
        .find(|x| x.reason.contains("unreadable"))
        .unwrap_or_else(|| panic!("no fallback recorded: {:?}", r.recoveries));
    let damaged = damaged.lock().unwrap().clone();
    assert!(
        !damaged.contains(&fallback.checkpoint_id),
        "{fallback:?} uses a damaged checkpoint ({damaged:?})"
    );
    for w in workers {
        w.stop().await;
    }
    c.stop().await;
}

/// A PE forwards its barrier while its snapshot is written (`CheckpointEnv::spawn_save`):
/// one that then cannot be stored (here: a directory in the way of the source's file)
/// still fails the PE, its checkpoint never completes, and the region recovers from
/// one before, exactly.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_snapshot_that_cannot_be_stored_fails_its_pe_and_never_completes_its_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("views.jsonl");
    // 15 s of stream: the blocked checkpoint comes well before its end.
    let shape = Shape {
        rate: 20_000,
        ..SHAPE
    };
    let (c, mut client, workers) = app_shaped_on_first_worker("ck9", &out, 1, shape).await;
    let first = checkpoint_replicated_on(&client, "ck9", 0, "w2").await;
    let gen = first
        .pieces
        .iter()
        .find(|p| p.pe.starts_with("gen@"))
        .expect("a source piece")
        .pe
        .clone();
    let blocked = first.checkpoint_id + 5;
    let path = workers[0].store.path("ck9", &gen, blocked).unwrap();
    std::fs::create_dir_all(path.join("in-the-way")).unwrap();
    assert_exact_shaped(&client, "ck9", &out, shape).await;
    let r = checkpoints(&mut client, "ck9").await;
    let rec = r
        .recoveries
        .iter()
        .find(|x| x.reason.contains("storing the snapshot failed"))
        .unwrap_or_else(|| panic!("no recovery for the failed store: {:?}", r.recoveries));
    assert!(rec.reason.contains(&gen), "{rec:?}");
    assert!(rec.checkpoint_id < blocked, "{rec:?}");
    assert!(
        r.checkpoints.iter().all(|ck| ck.checkpoint_id != blocked),
        "checkpoint {blocked} completed without its source's piece"
    );
    for w in workers {
        w.stop().await;
    }
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_leader_killed_during_a_checkpoint_never_half_records_it() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("views.jsonl");
    let mut c = Cluster::start_tuned(3, fast).await;
    let leader = c.leader().await;
    let masters: Vec<_> = c.addrs.values().copied().collect();
    let mut workers = Vec::new();
    for id in ["w1", "w2"] {
        workers.push(start_worker(id, &masters).await);
    }
    let mut client = c.client(c.other_than(leader)).await;
    workers_alive(&client, 2).await;
    submit(&mut client, spec("ck4", out.to_str().unwrap())).await;
    let before = eventually_within("two checkpoints, one in flight", LIMIT, || {
        let mut client = client.clone();
        async move {
            let r = checkpoints(&mut client, "ck4").await;
            (r.checkpoints.len() >= 2 && r.in_flight_id != 0).then_some(r)
        }
    })
    .await;
    c.kill(leader).await;
    let new_leader = c.leader().await;
    assert_ne!(new_leader, leader);
    let mut client = c.client(new_leader).await;
    // The checkpoint in flight at the kill is completed or abandoned; a later one
    // completes under the new leader.
    let after = eventually_within("a checkpoint under the new leader", LIMIT, || {
        let mut client = client.clone();
        async move {
            let r = checkpoints(&mut client, "ck4").await;
            r.checkpoints
                .last()
                .is_some_and(|ck| ck.checkpoint_id > before.in_flight_id)
                .then_some(r)
        }
    })
    .await;
    // Every complete checkpoint names the snapshot of every PE with state: the two
    // generators, the two windows and both sinks.
    for ck in &after.checkpoints {
        assert_eq!(
            ck.pieces.len(),
            6,
            "checkpoint {} is whole: {ck:?}",
            ck.checkpoint_id
        );
        assert!(ck
            .pieces
            .iter()
            .all(|p| p.size_bytes > 0 && p.replicas.len() == 2));
    }
    // The other running master answers the same (it forwards to the leader).
    let other = c.other_than(new_leader);
    let theirs = checkpoints(&mut c.client(other).await, "ck4").await;
    assert_eq!(theirs.checkpoints.len(), after.checkpoints.len());
    assert_exact(&client, "ck4", &out).await;
    assert!(checkpoints(&mut client, "ck4").await.recoveries.is_empty());
    for w in workers {
        w.stop().await;
    }
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn only_the_region_of_the_lost_worker_restarts() {
    let c = Cluster::start_tuned(1, fast).await;
    c.leader().await;
    let masters: Vec<_> = c.addrs.values().copied().collect();
    let mut workers = vec![
        start_worker("w1", &masters).await,
        start_worker("w2", &masters).await,
    ];
    let mut client = c.client(1).await;
    workers_alive(&client, 2).await;
    // Two independent branches; each needs 5 of a worker's 8 cores, so they land on
    // different workers.
    let branch = |n: u32| {
        format!(
            r#"
  - {{name: gen{n}, kind: source.generator, resources: {{cpu: 2.5}}, params: {{count: {RECORDS}, rate: 50000, keys: 10, payload_bytes: 8}}}}
  - {{name: audit{n}, kind: sink.verify, resources: {{cpu: 2.5}}, params: {{expect: {RECORDS}}}}}"#
        )
    };
    let spec = format!(
        "name: ck5\ncheckpoint_interval_ms: 300\noperators:{}{}\nstreams:\n  - {{from: gen1, to: audit1}}\n  - {{from: gen2, to: audit2}}\n",
        branch(1),
        branch(2)
    );
    submit(&mut client, spec).await;
    let d = eventually_within("both branches running", LIMIT, || {
        let mut client = client.clone();
        async move {
            let d = app_detail(&mut client, "ck5").await?;
            (d.pes.len() == 4 && d.pes.iter().all(|p| p.state == pb::PeState::Running as i32))
                .then_some(d)
        }
    })
    .await;
    let host = |d: &pb::AppDetail, op: &str| {
        d.pes
            .iter()
            .find(|p| p.pe.as_ref().unwrap().operator == op)
            .unwrap()
            .worker_id
            .clone()
    };
    let (h1, h2) = (host(&d, "gen1"), host(&d, "gen2"));
    assert_ne!(h1, h2, "the branches are on different workers");
    assert_eq!(host(&d, "audit2"), h2);
    workers.push(start_worker("w3", &masters).await);
    workers_alive(&client, 3).await;
    eventually_within("a checkpoint with two copies of every piece", LIMIT, || {
        let mut client = client.clone();
        async move {
            let r = checkpoints(&mut client, "ck5").await;
            r.checkpoints
                .last()
                .filter(|c| c.pieces.len() == 4 && c.pieces.iter().all(|p| p.replicas.len() == 2))
                .map(|_| ())
        }
    })
    .await;
    let victim = workers.iter().position(|w| {
        w.agent_status().registered && {
            w.runtime.report().iter().any(|p| p.pe.starts_with("gen1@"))
        }
    });
    let victim = workers.remove(victim.expect("the worker of gen1"));
    victim.stop().await;
    // Branch 1 recovers; branch 2 was never restarted (still attempt 0, same PEs).
    for op in ["audit1", "audit2"] {
        let vs = eventually_within("both audits complete", LIMIT, || {
            let mut client = client.clone();
            async move {
                let d = app_detail(&mut client, "ck5").await?;
                verify_done(&d, op)
            }
        })
        .await;
        let v = vs[0];
        assert_eq!(
            (v.records, v.distinct, v.duplicates),
            (RECORDS, RECORDS, 0),
            "{op}"
        );
    }
    let r = checkpoints(&mut client, "ck5").await;
    assert_eq!(r.recoveries.len(), 1, "{:?}", r.recoveries);
    assert_eq!(r.recoveries[0].operators, vec!["audit1", "gen1"]);
    // The one recovery named branch 1 only, so branch 2 ran under attempt 0 throughout,
    // where it was placed (its PEs may be stopped already: the app finished).
    let d = weir_tests::app_detail_read(&client, "ck5").await;
    assert_eq!(host(&d, "gen2"), h2, "branch 2 stayed where it was");
    assert_eq!(host(&d, "audit2"), h2, "branch 2 stayed where it was");
    for w in workers {
        w.stop().await;
    }
    c.stop().await;
}
