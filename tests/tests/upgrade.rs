//! Online upgrades under load: one master and in-process workers on loopback, real
//! gRPC and TCP, records flowing through every upgrade.
//!
//! Every case checks what must hold whatever the upgrade: the audit sink sees every
//! generated record exactly once, the window results written to a file equal a
//! recomputation from the generator's ids (no window lost, split or written twice),
//! and the PEs the plan leaves untouched are the very same PEs before and after (same
//! worker, same attempt, counters that only grew).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;
use tonic::transport::Channel;
use weir_proto::v1 as pb;
use weir_proto::v1::weir_client::WeirClient;
use weir_tests::{app_detail, eventually_within, Cluster};
use weir_worker::node::Worker;

const KEYS: u64 = 20;
const WINDOW_MS: i64 = 1000;
const RATE: u64 = 50_000;
const LIMIT: Duration = Duration::from_secs(240);

fn fast(cfg: &mut weir_master::server::MasterConfig) {
    cfg.worker_heartbeat = Duration::from_millis(100);
    cfg.worker_timeout = Duration::from_millis(1500);
    cfg.reconcile_interval = Duration::from_millis(50);
}

/// The app the upgrades start from, with the parts each case varies.
struct App {
    name: String,
    records: u64,
    out: String,
    /// Extra operator lines.
    ops: Vec<String>,
    /// Stream lines.
    streams: Vec<String>,
    win_parallelism: u32,
    tag_suffix: String,
}

impl App {
    fn new(name: &str, records: u64, out: &std::path::Path) -> Self {
        Self {
            name: name.into(),
            records,
            out: out.to_str().unwrap().into(),
            ops: vec![],
            streams: vec![
                "{from: gen, to: tag}".into(),
                "{from: tag, to: audit, partitioning: round_robin}".into(),
                "{from: gen, to: win, partitioning: hash}".into(),
                "{from: win, to: out, partitioning: round_robin}".into(),
            ],
            win_parallelism: 2,
            tag_suffix: "a".into(),
        }
    }

    fn text(&self) -> String {
        let (name, records, out) = (&self.name, self.records, &self.out);
        let mut s = format!(
            r#"
name: {name}
checkpoint_interval_ms: 500
operators:
  - {{name: gen, kind: source.generator, parallelism: 2, params: {{count: {records}, rate: {RATE}, keys: {KEYS}, payload_bytes: 8}}}}
  - {{name: tag, kind: map, parallelism: 2, params: {{set: {{tag: '"{tag}"'}}}}}}
  - {{name: win, kind: window.count, parallelism: {win}, params: {{size_ms: {WINDOW_MS}}}}}
  - {{name: out, kind: sink.file, params: {{path: "{out}"}}}}
  - {{name: audit, kind: sink.verify, params: {{expect: {records}}}}}
"#,
            tag = self.tag_suffix,
            win = self.win_parallelism,
        );
        for o in &self.ops {
            s.push_str(&format!("  - {o}\n"));
        }
        s.push_str("streams:\n");
        for st in &self.streams {
            s.push_str(&format!("  - {st}\n"));
        }
        s
    }
}

struct Rig {
    c: Cluster,
    client: WeirClient<Channel>,
    workers: Vec<Worker>,
}

impl Rig {
    async fn start(workers: usize) -> Self {
        Self::start_with(1, fast, workers, true).await
    }

    /// `push_progress` off: workers report only on their heartbeat interval.
    async fn start_with(
        masters: u64,
        tune: fn(&mut weir_master::server::MasterConfig),
        workers: usize,
        push_progress: bool,
    ) -> Self {
        let c = Cluster::start_tuned(masters, tune).await;
        c.leader().await;
        let masters: Vec<_> = c.addrs.values().copied().collect();
        let mut ws = Vec::new();
        for i in 0..workers {
            let id = format!("w{}", i + 1);
            ws.push(
                weir_tests::start_worker_with(&id, &masters, |c| c.push_progress = push_progress)
                    .await,
            );
        }
        let client = c.client(1).await;
        weir_tests::workers_alive(&client, workers, LIMIT).await;
        Self {
            c,
            client,
            workers: ws,
        }
    }

    async fn submit(&mut self, app: &App) {
        self.client
            .submit_app(pb::SubmitAppRequest {
                spec: app.text(),
                format: pb::SpecFormat::Yaml as i32,
                request_id: String::new(),
                signature: None,
            })
            .await
            .unwrap();
        // Running, with records at the audit and a checkpoint behind it.
        eventually_within("the app runs", LIMIT, || {
            let mut client = self.client.clone();
            let name = app.name.clone();
            async move {
                let d = app_detail(&mut client, &name).await?;
                let seen: u64 = d
                    .pes
                    .iter()
                    .filter_map(|p| p.verify)
                    .map(|v| v.records)
                    .sum();
                let ck = client
                    .list_checkpoints(pb::ListCheckpointsRequest { app: name })
                    .await
                    .ok()?
                    .into_inner();
                (seen > 0 && !ck.checkpoints.is_empty()).then_some(())
            }
        })
        .await;
    }

    /// The app's detail; a read refused while a loaded leader could not confirm its
    /// leadership is asked again.
    async fn detail(&self, app: &str) -> pb::AppDetail {
        eventually_within("the app's detail", LIMIT, || {
            let mut client = self.client.clone();
            let app = app.to_string();
            async move { app_detail(&mut client, &app).await }
        })
        .await
    }

    async fn audit_seen(&mut self, app: &str) -> u64 {
        weir_tests::audit_records(&self.detail(app).await)
    }

    /// Upgrades `app` to `to` and waits for the operation to end; returns it.
    async fn upgrade(&mut self, app: &App) -> pb::UpgradeOperation {
        let r = upgrade_taken(&self.client, upgrade_req(app.name.clone(), app.text())).await;
        assert!(!r.operation_id.is_empty());
        self.finished(&app.name, &r.operation_id).await
    }

    async fn finished(&mut self, app: &str, op: &str) -> pb::UpgradeOperation {
        weir_tests::operation_ended(&self.client, app, op, LIMIT).await
    }

    async fn pes(&mut self, app: &str) -> BTreeMap<String, pb::PeView> {
        let d = self.detail(app).await;
        d.pes
            .into_iter()
            .map(|p| (p.pe.as_ref().unwrap().id.clone(), p))
            .collect()
    }

    async fn stop(self) {
        for w in self.workers {
            w.stop().await;
        }
        self.c.stop().await;
    }
}

/// Every PE named in `untouched` is still the same PE: same worker, counters that only
/// grew, and no recovery ever restarted anything.
async fn assert_untouched(
    rig: &mut Rig,
    app: &str,
    before: &BTreeMap<String, pb::PeView>,
    untouched: &BTreeSet<String>,
) {
    let after = rig.pes(app).await;
    for pe in untouched {
        let (b, a) = (&before[pe], &after[pe]);
        assert_eq!(b.worker_id, a.worker_id, "{pe} stayed on its worker");
        let (bi, ai) = (
            b.stats.as_ref().map_or(0, |s| s.records_in + s.records_out),
            a.stats.as_ref().map_or(0, |s| s.records_in + s.records_out),
        );
        assert!(ai >= bi, "{pe}: its counters only grew ({bi} -> {ai})");
    }
    let ck = eventually_within("the checkpoint list", LIMIT, || {
        let mut client = rig.client.clone();
        let app = app.to_string();
        async move {
            let r = client.list_checkpoints(pb::ListCheckpointsRequest { app });
            Some(r.await.ok()?.into_inner())
        }
    })
    .await;
    assert!(
        ck.recoveries.is_empty(),
        "nothing was restarted: {:?}",
        ck.recoveries
    );
}

/// The audit and the window results once every input ended, checked against what the
/// generator's ids say they must be.
async fn assert_exact(rig: &Rig, app: &str, records: u64, audit: &str, out: &std::path::Path) {
    weir_tests::assert_audit_exact(&rig.client, app, audit, records, LIMIT).await;

    let expected = weir_tests::expected_windows(records, KEYS, WINDOW_MS);
    let text = eventually_within("the window results are visible", LIMIT, || {
        let out = out.to_path_buf();
        let n = expected.len();
        async move {
            let t = std::fs::read_to_string(&out).ok()?;
            (t.lines().count() >= n).then_some(t)
        }
    })
    .await;
    weir_tests::assert_windows(&text, &expected);
}

/// Sends `req` until a master takes it: UNAVAILABLE (no leader, or the leader could not
/// confirm its leadership in time on a loaded machine) is retried, under one request
/// id, so a repeat answers the operation the first attempt started.
async fn upgrade_taken(
    client: &WeirClient<Channel>,
    mut req: pb::UpgradeAppRequest,
) -> pb::UpgradeAppResponse {
    static CALLS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    req.request_id = format!("test-{}-{}-{n}", req.app, std::process::id());
    eventually_within("the upgrade is taken", LIMIT, || {
        let mut client = client.clone();
        let req = req.clone();
        async move {
            match client.upgrade_app(req).await {
                Ok(r) => Some(r.into_inner()),
                Err(s) if s.code() == tonic::Code::Unavailable => None,
                Err(s) => panic!("upgrade refused: {s:?}"),
            }
        }
    })
    .await
}

fn upgrade_req(app: String, spec: String) -> pb::UpgradeAppRequest {
    pb::UpgradeAppRequest {
        app,
        spec,
        format: pb::SpecFormat::Yaml as i32,
        dry_run: false,
        expected_version: 0,
        request_id: String::new(),
        signature: None,
    }
}

fn done(op: &pb::UpgradeOperation) {
    eprintln!(
        "upgrade {} -> {}: {:?}",
        op.from_version, op.to_version, op.result
    );
    assert_eq!(
        op.phase,
        pb::UpgradePhase::Done as i32,
        "the upgrade completed: {op:?}"
    );
    let r = op.result.as_ref().expect("a result");
    assert_eq!(r.records_duplicated, 0, "{op:?}");
    assert_eq!(r.records_lost, 0, "{op:?}");
}

/// A watch opened before an upgrade names the operation from its prepare event on, the
/// events from the switch on belong to the new version, and the new PE's start is told
/// as the workers report it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_watch_follows_an_upgrade_with_its_operation_and_versions() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("views.jsonl");
    let mut rig = Rig::start(2).await;
    let mut app = App::new("up6", 1_000_000, &out);
    rig.submit(&app).await;
    let mut stream = rig
        .client
        .clone()
        .watch_app(pb::WatchAppRequest { app: "up6".into() })
        .await
        .unwrap()
        .into_inner();
    // Read while the upgrade runs: the stream ends for a client that falls behind.
    let phases = tokio::spawn(async move {
        let mut phases = Vec::new();
        let mut running = BTreeSet::new();
        while phases.last().map(|(_, p, _)| *p) != Some(pb::UpgradePhase::Done) {
            let ev = tokio::time::timeout(LIMIT, stream.message())
                .await
                .expect("an event within the limit")
                .unwrap()
                .expect("the stream goes on");
            match ev.event {
                Some(pb::app_event::Event::UpgradePhaseChanged(p)) => {
                    let phase = pb::UpgradePhase::try_from(p.phase).unwrap();
                    phases.push((p.operation_id, phase, ev.version));
                }
                Some(pb::app_event::Event::PeStateChanged(p)) => {
                    assert!(!p.worker_id.is_empty(), "{p:?}");
                    assert_ne!(p.old_state, p.new_state, "{p:?}");
                    if p.new_state == pb::PeState::Running as i32 {
                        running.insert(p.pe);
                    }
                }
                _ => {}
            }
        }
        (phases, running)
    });
    let v1: BTreeSet<String> = rig.pes("up6").await.into_keys().collect();
    app.tag_suffix = "b".into();
    let op = rig.upgrade(&app).await;
    done(&op);
    let id = op.operation_id.clone();
    let (phases, running) = phases.await.unwrap();
    // The replacement `tag` PEs (parallelism 2) started before the switch: prepare
    // waits for them.
    let new_tag: Vec<&String> = running
        .iter()
        .filter(|pe| pe.starts_with("tag@") && !v1.contains(*pe))
        .collect();
    assert_eq!(new_tag.len(), 2, "PEs told running: {running:?}");
    assert_eq!(
        phases,
        [
            (id.clone(), pb::UpgradePhase::Prepare, 1),
            (id.clone(), pb::UpgradePhase::Switch, 1),
            (id.clone(), pb::UpgradePhase::Cleanup, 2),
            (id, pb::UpgradePhase::Done, 2),
        ],
        "(operation, phase, version) of each phase event"
    );
    rig.stop().await;
}

/// Replace an operator (params), then rescale the keyed window 2 -> 3 -> 1, all while
/// 50,000 records/s flow.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replace_and_rescale_under_load_lose_and_repeat_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("views.jsonl");
    let records = 1_500_000;
    let mut rig = Rig::start(2).await;
    let mut app = App::new("up1", records, &out);
    rig.submit(&app).await;
    let v1_ids: BTreeSet<String> = rig.pes("up1").await.into_keys().collect();

    // Replace `tag` (a map with new params): gen, win, out and audit are untouched.
    let before = rig.pes("up1").await;
    app.tag_suffix = "b".into();
    let op = rig.upgrade(&app).await;
    done(&op);
    let untouched: BTreeSet<String> = before
        .keys()
        .filter(|pe| !pe.starts_with("tag@"))
        .cloned()
        .collect();
    assert_untouched(&mut rig, "up1", &before, &untouched).await;
    assert!(rig.audit_seen("up1").await < records, "upgraded under load");

    // Rescale the keyed window 2 -> 3: its state is re-split by key group.
    app.win_parallelism = 3;
    let before = rig.pes("up1").await;
    let r = upgrade_taken(&rig.client, upgrade_req(app.name.clone(), app.text())).await;
    // While it runs, its progress counts the three new windows as the successors.
    let mut seen: Vec<pb::UpgradeProgress> = Vec::new();
    let deadline = std::time::Instant::now() + LIMIT;
    let op = loop {
        let h = rig
            .client
            .get_app_history(pb::GetAppHistoryRequest { app: "up1".into() })
            .await
            .expect("its history")
            .into_inner();
        let o = h
            .operations
            .into_iter()
            .find(|o| o.operation_id == r.operation_id)
            .expect("the rescale is in the history");
        if o.finished_at_ms != 0 {
            assert!(o.progress.is_none(), "{o:?}");
            break o;
        }
        seen.push(o.progress.clone().expect("progress while it runs"));
        assert!(std::time::Instant::now() < deadline, "the rescale ends");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    done(&op);
    // Read at once after UpgradeApp answered: the rescale cannot have ended by then
    // (its successors must deploy, pre-copy and report over heartbeats first).
    assert!(!seen.is_empty(), "progress seen while the rescale ran");
    for p in &seen {
        assert!(
            p.successors == 3 && p.successors_ready <= 3,
            "{p:?} of {seen:?}"
        );
    }
    let untouched: BTreeSet<String> = before
        .keys()
        .filter(|pe| pe.starts_with("tag@") || pe.starts_with("audit@"))
        .cloned()
        .collect();
    assert_untouched(&mut rig, "up1", &before, &untouched).await;
    assert!(rig.audit_seen("up1").await < records, "upgraded under load");
    let after = rig.pes("up1").await;
    let wins: Vec<_> = after.keys().filter(|p| p.starts_with("win@")).collect();
    assert_eq!(wins.len(), 3, "{wins:?}");
    // The successors pre-copied the old windows' last checkpoint, and took only the
    // deltas since at the switch. The switch checkpoint completes with the old PEs'
    // pieces, so a successor may still be taking its delta when the upgrade is done:
    // its figures are read from a report in which it already takes records (it takes
    // none before its state is whole).
    let wins: BTreeSet<String> = wins.into_iter().cloned().collect();
    let taken = eventually_within("the new window PEs take records", LIMIT, || {
        let mut client = rig.client.clone();
        let wins = wins.clone();
        async move {
            let d = app_detail(&mut client, "up1").await?;
            let stats: Vec<(String, pb::PeStats)> = d
                .pes
                .iter()
                .filter(|p| wins.contains(&p.pe.as_ref().unwrap().id))
                .map(|p| {
                    (
                        p.pe.as_ref().unwrap().id.clone(),
                        p.stats.clone().unwrap_or_default(),
                    )
                })
                .collect();
            (stats.len() == wins.len() && stats.iter().all(|(_, s)| s.records_in > 0))
                .then_some(stats)
        }
    })
    .await;
    for (w, s) in &taken {
        assert!(
            s.state_precopied_bytes > 0 && s.state_barrier_bytes > 0,
            "{w} pre-copied its state: {s:?}"
        );
    }
    // The operation says so too: the successors report their pre-copy before the
    // switch can begin, so its result counts all of it.
    let result = op.result.clone().unwrap_or_default();
    let precopied: u64 = taken.iter().map(|(_, s)| s.state_precopied_bytes).sum();
    assert_eq!(result.state_precopied_bytes, precopied, "{result:?}");
    assert!(
        result.state_barrier_bytes
            <= taken
                .iter()
                .map(|(_, s)| s.state_barrier_bytes)
                .sum::<u64>(),
        "{result:?}"
    );

    // Roll back to version 1's spec (what `weirctl rollback --to 1` sends): the window
    // goes back to 2 PEs and `tag` to its first params, with v1's very PE ids.
    let v1 = App::new("up1", records, &out);
    let before = rig.pes("up1").await;
    done(&rig.upgrade(&v1).await);
    let after = rig.pes("up1").await;
    let first = v1_ids.iter().all(|pe| after.contains_key(pe));
    assert!(first, "v1's PE ids are back: {:?}", after.keys());
    let keep: BTreeSet<String> = before
        .keys()
        .filter(|pe| pe.starts_with("gen@") || pe.starts_with("audit@"))
        .cloned()
        .collect();
    assert_untouched(&mut rig, "up1", &before, &keep).await;
    assert!(
        rig.audit_seen("up1").await < records,
        "rolled back under load"
    );

    assert_exact(&rig, "up1", records, "audit", &out).await;
    rig.stop().await;
}

const PASSTHROUGH: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/pe/passthrough.sh");
const UPPER: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/pe/upper.py");

/// Insert an operator into a stream, replace an exec PE's program, change a stream's
/// partitioning, add a branch (a second sink), remove it, and remove the inserted
/// operator again: six upgrades in a row while records flow.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_rewiring_kind_under_load_loses_and_repeats_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("views.jsonl");
    let records = 1_500_000;
    let mut rig = Rig::start(2).await;
    let mut app = App::new("up2", records, &out);
    rig.submit(&app).await;
    let untouched_ops = |before: &BTreeMap<String, pb::PeView>, ops: &[&str]| -> BTreeSet<String> {
        before
            .keys()
            .filter(|pe| ops.iter().any(|o| pe.starts_with(&format!("{o}@"))))
            .cloned()
            .collect()
    };

    // 1. Insert `ex` (an exec PE) into tag -> audit.
    app.ops.push(format!(
        "{{name: ex, kind: exec, parallelism: 2, params: {{command: [sh, \"{PASSTHROUGH}\"], protocol: lines}}}}"
    ));
    app.streams[1] = "{from: tag, to: ex}".into();
    app.streams
        .push("{from: ex, to: audit, partitioning: round_robin}".into());
    let before = rig.pes("up2").await;
    done(&rig.upgrade(&app).await);
    let keep = untouched_ops(&before, &["gen", "win", "out"]);
    assert_untouched(&mut rig, "up2", &before, &keep).await;
    assert!(rig.audit_seen("up2").await < records, "upgraded under load");

    // 2. Replace the exec PE's program.
    app.ops[0] = format!(
        "{{name: ex, kind: exec, parallelism: 2, params: {{command: [python3, \"{UPPER}\"], protocol: lines}}}}"
    );
    let before = rig.pes("up2").await;
    done(&rig.upgrade(&app).await);
    let keep = untouched_ops(&before, &["gen", "win", "out", "tag"]);
    assert_untouched(&mut rig, "up2", &before, &keep).await;

    // 3. Change a stream's partitioning: gen -> tag from forward to round robin.
    app.streams[0] = "{from: gen, to: tag, partitioning: round_robin}".into();
    let before = rig.pes("up2").await;
    done(&rig.upgrade(&app).await);
    let keep = untouched_ops(&before, &["win", "out", "ex", "audit"]);
    assert_untouched(&mut rig, "up2", &before, &keep).await;

    // 4. Add a branch: a second audit fed by tag.
    app.ops.push("{name: audit2, kind: sink.verify}".into());
    app.streams
        .push("{from: tag, to: audit2, partitioning: round_robin}".into());
    let before = rig.pes("up2").await;
    done(&rig.upgrade(&app).await);
    let keep = untouched_ops(&before, &["gen", "win", "out", "ex", "audit"]);
    assert_untouched(&mut rig, "up2", &before, &keep).await;
    eventually_within("the new branch takes records", LIMIT, || {
        let mut client = rig.client.clone();
        async move {
            let d = app_detail(&mut client, "up2").await?;
            let v = d
                .pes
                .iter()
                .find(|p| p.pe.as_ref().unwrap().id.starts_with("audit2@"))?
                .verify?;
            (v.records > 0 && v.duplicates == 0).then_some(())
        }
    })
    .await;

    // 5. Remove the branch again.
    app.ops.pop();
    app.streams.pop();
    let before = rig.pes("up2").await;
    done(&rig.upgrade(&app).await);
    let keep = untouched_ops(&before, &["gen", "win", "out", "ex", "audit"]);
    assert_untouched(&mut rig, "up2", &before, &keep).await;

    // 6. Remove the exec operator: tag feeds the audit directly again.
    app.ops.clear();
    app.streams.retain(|s| !s.contains("ex"));
    app.streams.insert(
        1,
        "{from: tag, to: audit, partitioning: round_robin}".into(),
    );
    let before = rig.pes("up2").await;
    done(&rig.upgrade(&app).await);
    let keep = untouched_ops(&before, &["gen", "win", "out"]);
    assert_untouched(&mut rig, "up2", &before, &keep).await;
    assert!(
        rig.audit_seen("up2").await < records,
        "every upgrade under load"
    );

    let h = rig
        .client
        .get_app_history(pb::GetAppHistoryRequest { app: "up2".into() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(h.versions.len(), 7);
    assert_eq!(h.operations.len(), 6);
    assert!(h
        .operations
        .iter()
        .all(|o| o.phase == pb::UpgradePhase::Done as i32));
    assert_exact(&rig, "up2", records, "audit", &out).await;
    rig.stop().await;
}

/// Refused up front, the running app untouched: an invalid v2, one asking for
/// resources no worker has, and a second upgrade while one runs. A replacement PE that
/// fails to start rolls the upgrade back with nothing lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn refused_and_failed_upgrades_leave_the_app_as_it_was() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("views.jsonl");
    let records = 600_000;
    let mut rig = Rig::start(2).await;
    let mut app = App::new("up3", records, &out);
    rig.submit(&app).await;
    let before = rig.pes("up3").await;
    let req = |spec: String| upgrade_req("up3".into(), spec);
    let history = |mut c: WeirClient<Channel>| async move {
        c.get_app_history(pb::GetAppHistoryRequest { app: "up3".into() })
            .await
            .unwrap()
            .into_inner()
    };

    // Invalid: a stream to an operator that does not exist.
    let mut bad = App::new("up3", records, &out);
    bad.streams.push("{from: tag, to: nowhere}".into());
    let e = rig.client.upgrade_app(req(bad.text())).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
    assert!(e.message().contains("nowhere"), "{}", e.message());
    // Impossible resources: 1,000 cores per PE.
    let mut big = App::new("up3", records, &out);
    big.ops
        .push("{name: hog, kind: sink.null, resources: {cpu: 1000}}".into());
    big.streams
        .push("{from: tag, to: hog, partitioning: round_robin}".into());
    let e = rig.client.upgrade_app(req(big.text())).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::ResourceExhausted, "{e:?}");
    let h = history(rig.client.clone()).await;
    assert_eq!(h.versions.len(), 1, "nothing stored");
    assert!(h.operations.is_empty());

    // A replacement whose program cannot start, with a rescale of the window whose
    // successors pre-copy its state meanwhile: rolled back.
    app.win_parallelism = 3;
    app.ops.push(
        "{name: ex, kind: exec, params: {command: [/nonexistent/program], protocol: lines}}".into(),
    );
    app.streams[1] = "{from: tag, to: ex, partitioning: round_robin}".into();
    app.streams.push("{from: ex, to: audit}".into());
    let r = rig
        .client
        .upgrade_app(req(app.text()))
        .await
        .unwrap()
        .into_inner();
    // A second upgrade while it runs is refused.
    let e = rig.client.upgrade_app(req(app.text())).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::FailedPrecondition, "{e:?}");
    assert!(e.message().contains("still running"), "{}", e.message());
    let op = rig.finished("up3", &r.operation_id).await;
    assert_eq!(op.phase, pb::UpgradePhase::RolledBack as i32, "{op:?}");
    assert!(op.reason.contains("failed"), "{}", op.reason);
    let all: BTreeSet<String> = before.keys().cloned().collect();
    assert_untouched(&mut rig, "up3", &before, &all).await;
    let d = rig.detail("up3").await;
    assert_eq!(d.summary.unwrap().version, 1, "v1 still runs");
    assert!(
        rig.audit_seen("up3").await < records,
        "rolled back under load"
    );
    assert_exact(&rig, "up3", records, "audit", &out).await;
    rig.stop().await;
}

/// The worker chosen for a replacement PE dies during prepare: the upgrade rolls back
/// and nothing is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn losing_the_worker_of_a_replacement_during_prepare_rolls_back() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("views.jsonl");
    let records = 600_000;
    let mut rig = Rig::start(2).await;
    let mut app = App::new("up4", records, &out);
    rig.submit(&app).await;
    // Only w3 has a GPU, so the replacement (asking for one) lands there.
    let masters: Vec<_> = rig.c.addrs.values().copied().collect();
    let w3 = weir_tests::start_worker_with("w3", &masters, |cfg| {
        cfg.declared_gpus = vec!["nvidia:T4:16000:gpu-w3".parse().unwrap()];
    })
    .await;
    eventually_within("w3 registered", LIMIT, || {
        let mut client = rig.client.clone();
        async move {
            let ws = client.list_workers(pb::ListWorkersRequest {}).await.ok()?;
            (ws.into_inner().workers.len() == 3).then_some(())
        }
    })
    .await;
    let before = rig.pes("up4").await;
    app.ops.push(format!(
        "{{name: ex, kind: exec, params: {{command: [sh, \"{PASSTHROUGH}\"], protocol: lines}}, resources: {{gpu: {{memory_mb: 1000}}}}}}"
    ));
    app.streams[1] = "{from: tag, to: ex, partitioning: round_robin}".into();
    app.streams.push("{from: ex, to: audit}".into());
    let r = upgrade_taken(&rig.client, upgrade_req("up4".into(), app.text())).await;
    w3.stop().await;
    let op = rig.finished("up4", &r.operation_id).await;
    assert_eq!(op.phase, pb::UpgradePhase::RolledBack as i32, "{op:?}");
    assert!(op.reason.contains("w3"), "{}", op.reason);
    let all: BTreeSet<String> = before.keys().cloned().collect();
    assert_untouched(&mut rig, "up4", &before, &all).await;
    assert!(
        rig.audit_seen("up4").await < records,
        "rolled back under load"
    );
    assert_exact(&rig, "up4", records, "audit", &out).await;
    rig.stop().await;
}

/// The worker of an old window PE dies while its successors pre-copy and follow its
/// rounds: the upgrade rolls back (a v1 loss before the switch) or, when the switch
/// was through already, v2 recovers; either way every record counts once and the
/// window results are exact.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn losing_an_old_windows_worker_during_the_pre_copy_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("views.jsonl");
    let records = 600_000;
    let mut rig = Rig::start(3).await;
    let mut app = App::new("up6", records, &out);
    rig.submit(&app).await;
    let before = rig.pes("up6").await;
    let victim = before
        .iter()
        .find(|(pe, _)| pe.starts_with("win@"))
        .map(|(_, v)| v.worker_id.clone())
        .unwrap();
    app.win_parallelism = 3;
    let r = upgrade_taken(&rig.client, upgrade_req("up6".into(), app.text())).await;
    // Workers are started as w1, w2, ... in order.
    let at: usize = victim.trim_start_matches('w').parse::<usize>().unwrap() - 1;
    rig.workers.swap_remove(at).stop().await;
    let op = rig.finished("up6", &r.operation_id).await;
    eprintln!("upgrade with {victim} lost: {:?} {}", op.phase, op.reason);
    assert!(
        op.phase == pb::UpgradePhase::RolledBack as i32
            || op.phase == pb::UpgradePhase::Done as i32,
        "{op:?}"
    );
    assert_exact(&rig, "up6", records, "audit", &out).await;
    rig.stop().await;
}

fn slow_heartbeats(cfg: &mut weir_master::server::MasterConfig) {
    // Pieces of the switch checkpoint reach the leader in heartbeats: slower ones keep
    // the upgrade in its switch phase long enough to kill the leader there.
    cfg.worker_heartbeat = Duration::from_millis(400);
    cfg.worker_timeout = Duration::from_millis(4000);
    cfg.reconcile_interval = Duration::from_millis(50);
}

/// The leader dies while the upgrade is in its switch phase: the new leader finishes
/// it from the phase recorded in Raft, and nothing is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn killing_the_leader_during_the_switch_the_new_leader_finishes_the_upgrade() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("views.jsonl");
    let records = 1_000_000;
    // Progress on heartbeats only, so the switch phase lasts long enough to catch.
    let mut rig = Rig::start_with(3, slow_heartbeats, 2, false).await;
    let leader = rig.c.leader().await;
    rig.client = rig.c.client(leader).await;
    let mut app = App::new("up5", records, &out);
    rig.submit(&app).await;
    let before = rig.pes("up5").await;
    app.win_parallelism = 3;
    let r = upgrade_taken(&rig.client, upgrade_req("up5".into(), app.text())).await;
    // Poll closely for the switch phase, then kill the leader.
    let deadline = std::time::Instant::now() + LIMIT;
    loop {
        // A read the loaded leader could not confirm in time is refused (UNAVAILABLE),
        // not answered stale: ask again.
        let phase = app_detail(&mut rig.client, "up5")
            .await
            .map(|d| d.current_upgrade.map(|u| u.phase));
        if phase == Some(Some(pb::UpgradePhase::Switch as i32)) {
            break;
        }
        assert!(
            phase != Some(None) && std::time::Instant::now() < deadline,
            "the upgrade reached its switch phase ({phase:?})"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    rig.c.kill(leader).await;
    let next = rig.c.leader().await;
    assert_ne!(next, leader);
    rig.client = rig.c.client(next).await;
    let op = rig.finished("up5", &r.operation_id).await;
    done(&op);
    let keep: BTreeSet<String> = before
        .keys()
        .filter(|pe| pe.starts_with("tag@") || pe.starts_with("audit@"))
        .cloned()
        .collect();
    assert_untouched(&mut rig, "up5", &before, &keep).await;
    assert!(rig.audit_seen("up5").await < records, "upgraded under load");
    assert_exact(&rig, "up5", records, "audit", &out).await;
    rig.stop().await;
}
