//! Multi-master tests: real Raft over real gRPC on loopback, real redb on disk.

use std::collections::BTreeSet;
use std::time::Duration;
use tonic::Code;
use weir_proto::status::validation_problems;
use weir_proto::v1 as pb;
use weir_tests::{eventually, submit, Cluster};

async fn names(c: &Cluster, via: u64) -> BTreeSet<String> {
    let mut client = c.client(via).await;
    let apps = client
        .list_apps(pb::ListAppsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .apps;
    apps.into_iter().map(|a| a.name).collect()
}

async fn wait_everywhere(c: &Cluster, app: &str) {
    for id in c.masters.keys() {
        eventually(&format!("{app} applied on master {id}"), || async {
            c.local_apps(*id)
                .await
                .iter()
                .any(|a| a == app)
                .then_some(())
        })
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_submit_through_a_follower_is_visible_on_all_three() {
    let c = Cluster::start(3).await;
    let leader = c.leader().await;
    let follower = c.other_than(leader);
    let mut client = c.client(follower).await;
    let r = client
        .submit_app(submit("via-follower"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((r.app.as_str(), r.version), ("via-follower", 1));
    assert_eq!(r.pes.len(), 2);
    wait_everywhere(&c, "via-follower").await;
    // Reads through any master are linearizable: they see the write at once.
    for id in [1, 2, 3] {
        assert!(names(&c, id).await.contains("via-follower"));
    }
    let status = client
        .cluster_status(pb::ClusterStatusRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(status.members.len(), 3);
    assert_eq!(status.leader_id, Some(leader));
    assert!(status.term >= 1 && status.applied_index >= 2);
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn killing_the_leader_or_a_follower_loses_no_acknowledged_submit() {
    let mut c = Cluster::start(3).await;
    let first = c.leader().await;
    let mut acked = BTreeSet::new();
    let mut client = c.client(first).await;
    for i in 0..10 {
        let name = format!("before-{i}");
        client.submit_app(submit(&name)).await.unwrap();
        acked.insert(name);
    }
    c.kill(first).await;
    let second = c.leader().await;
    assert_ne!(second, first);
    let mut client = c.client(c.other_than(first)).await;
    for i in 0..10 {
        let name = format!("after-leader-{i}");
        client.submit_app(submit(&name)).await.unwrap();
        acked.insert(name);
    }
    // The old leader comes back and catches up with everything it missed.
    c.restart(first).await;
    eventually("the restarted master to catch up", || async {
        (c.local_apps(first)
            .await
            .into_iter()
            .collect::<BTreeSet<_>>()
            == acked)
            .then_some(())
    })
    .await;
    // Now a follower goes: the remaining two are still a majority.
    let leader = c.leader().await;
    let follower = c.other_than(leader);
    c.kill(follower).await;
    let mut client = c.client(c.other_than(follower)).await;
    for i in 0..5 {
        let name = format!("after-follower-{i}");
        client.submit_app(submit(&name)).await.unwrap();
        acked.insert(name);
    }
    assert_eq!(names(&c, leader).await, acked);
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_isolated_leader_cannot_commit_and_catches_up_when_healed() {
    let c = Cluster::start(3).await;
    let old = c.leader().await;
    let mut client = c.client(old).await;
    client.submit_app(submit("before-cut")).await.unwrap();
    wait_everywhere(&c, "before-cut").await;

    // Cut the leader off from both followers, in both directions.
    let others: Vec<u64> = c.masters.keys().copied().filter(|id| *id != old).collect();
    c.masters[&old].node.faults.isolate_from(others.clone());
    for id in &others {
        c.masters[id].node.faults.isolate_from([old]);
    }
    let applied_before = c.applied(old);

    // A write sent to the isolated leader cannot commit: it fails or times out.
    let mut req = tonic::Request::new(submit("split-brain"));
    req.set_timeout(Duration::from_secs(2));
    let cut = client.submit_app(req).await;
    assert!(cut.is_err(), "an isolated minority committed a write");

    // The majority elects a new leader and keeps committing.
    let new = eventually("the majority to elect a new leader", || async {
        let l = c.masters[&others[0]]
            .node
            .raft
            .metrics()
            .borrow()
            .current_leader?;
        (l != old && others.contains(&l)).then_some(l)
    })
    .await;
    let mut majority = c.client(new).await;
    majority.submit_app(submit("during-cut")).await.unwrap();
    assert!(!c.local_apps(old).await.contains(&"during-cut".to_string()));
    assert!(
        c.applied(old) <= applied_before + 1,
        "the minority applied new entries"
    );

    // Heal: the old leader steps down, drops its uncommitted entry and catches up.
    for m in c.masters.values() {
        m.node.faults.heal();
    }
    wait_everywhere(&c, "during-cut").await;
    for id in c.masters.keys() {
        let apps = c.local_apps(*id).await;
        assert!(
            !apps.contains(&"split-brain".to_string()),
            "master {id} applied an uncommitted write"
        );
        assert_eq!(
            apps,
            vec!["before-cut".to_string(), "during-cut".to_string()]
        );
    }
    assert_eq!(c.leader().await, new);
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn stopping_all_three_and_restarting_from_disk_keeps_every_app() {
    // Snapshot every 20 entries so the restart goes through snapshot + log replay.
    let mut c = Cluster::start_tuned(3, |cfg| cfg.node.snapshot_every = 20).await;
    let leader = c.leader().await;
    let mut client = c.client(leader).await;
    let mut expected = BTreeSet::new();
    for i in 0..45 {
        let name = format!("app-{i:02}");
        client.submit_app(submit(&name)).await.unwrap();
        expected.insert(name);
    }
    client
        .cancel_app(pb::CancelAppRequest {
            app: "app-07".into(),
            request_id: String::new(),
        })
        .await
        .unwrap();
    let snap = eventually("a snapshot on the leader", || async {
        c.masters[&leader].node.raft.metrics().borrow().snapshot
    })
    .await;
    assert!(snap.index >= 20);
    assert!(c.data_dir(leader).join("snapshot.json").exists());
    for id in [1, 2, 3] {
        c.kill(id).await;
    }
    for id in [1, 2, 3] {
        c.restart(id).await;
    }
    let leader = c.leader().await;
    assert_eq!(names(&c, leader).await, expected);
    let mut client = c.client(leader).await;
    let app = client
        .get_app(pb::GetAppRequest {
            app: "app-07".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .app
        .unwrap();
    assert_eq!(app.summary.unwrap().state, pb::AppState::Cancelled as i32);
    assert_eq!(app.versions.len(), 1);
    assert_eq!(app.spec, weir_tests::spec("app-07"));
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_dev_master_restarts_with_its_apps() {
    let mut c = Cluster::start(1).await;
    c.leader().await;
    let mut client = c.client(1).await;
    client.submit_app(submit("dev-app")).await.unwrap();
    c.kill(1).await;
    c.restart(1).await;
    c.leader().await;
    assert_eq!(names(&c, 1).await, BTreeSet::from(["dev-app".to_string()]));
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_requests_are_refused_and_change_nothing() {
    let c = Cluster::start(3).await;
    let leader = c.leader().await;
    let mut client = c.client(c.other_than(leader)).await;
    client.submit_app(submit("exists")).await.unwrap();
    wait_everywhere(&c, "exists").await;
    let before_apps = names(&c, leader).await;
    let before_applied = c.applied(leader);

    // Invalid spec: every problem, with its path, in the message and the details.
    let bad = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/specs/bad/many-problems.yaml"
    ))
    .unwrap();
    let err = client
        .submit_app(pb::SubmitAppRequest {
            spec: bad,
            format: pb::SpecFormat::Yaml as i32,
            request_id: String::new(),
            signature: None,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    let problems = validation_problems(&err).expect("problems in the status details");
    let paths: BTreeSet<&str> = problems.iter().map(|p| p.path.as_str()).collect();
    for p in [
        "tenant",
        "operators[0].params.rate",
        "operators[1].kind",
        "streams[1].to",
    ] {
        assert!(paths.contains(p), "{p} missing from {paths:?}");
        assert!(err.message().contains(p));
    }

    // Duplicate app.
    let err = client.submit_app(submit("exists")).await.unwrap_err();
    assert_eq!(err.code(), Code::AlreadyExists, "{err:?}");
    // Unknown app, for every call that names one.
    let err = client
        .get_app(pb::GetAppRequest { app: "nope".into() })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    let err = client
        .cancel_app(pb::CancelAppRequest {
            app: "nope".into(),
            request_id: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    let err = client
        .upgrade_app(pb::UpgradeAppRequest {
            app: "nope".into(),
            spec: weir_tests::spec("nope"),
            dry_run: true,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    // An upgrade may not rename the app.
    let err = client
        .upgrade_app(pb::UpgradeAppRequest {
            app: "exists".into(),
            spec: weir_tests::spec("other"),
            dry_run: true,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().starts_with("spec.name:"), "{}", err.message());
    // A caller of another tenant.
    let mut req = tonic::Request::new(pb::GetAppRequest {
        app: "exists".into(),
    });
    req.metadata_mut().insert(
        weir_proto::status::TENANT_METADATA_KEY,
        "someone-else".parse().unwrap(),
    );
    assert_eq!(
        client.get_app(req).await.unwrap_err().code(),
        Code::PermissionDenied
    );
    // Oversized request.
    let huge = pb::SubmitAppRequest {
        spec: "#".repeat(5 << 20),
        format: 0,
        request_id: String::new(),
        signature: None,
    };
    let err = client.submit_app(huge).await.unwrap_err();
    assert!(
        matches!(
            err.code(),
            Code::OutOfRange | Code::ResourceExhausted | Code::InvalidArgument
        ),
        "{err:?}"
    );

    // Nothing changed: no log entry was even proposed.
    assert_eq!(c.applied(leader), before_applied);
    assert_eq!(names(&c, leader).await, before_apps);
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn dry_run_upgrade_returns_the_plan_and_changes_nothing() {
    let c = Cluster::start(1).await;
    c.leader().await;
    let mut client = c.client(1).await;
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/");
    let v1 = std::fs::read_to_string(format!("{root}fraud-scoring.yaml")).unwrap();
    let v2 = std::fs::read_to_string(format!("{root}fraud-scoring-v2.yaml")).unwrap();
    client
        .submit_app(pb::SubmitAppRequest {
            spec: v1.clone(),
            format: 0,
            request_id: String::new(),
            signature: None,
        })
        .await
        .unwrap();
    let applied = c.applied(1);
    let r = client
        .upgrade_app(pb::UpgradeAppRequest {
            app: "fraud-scoring".into(),
            spec: v2.clone(),
            dry_run: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let plan = r.plan.unwrap();
    assert_eq!((plan.from_version, plan.to_version), (1, 2));
    assert_eq!(plan.summary.unwrap().pes_untouched, 2);
    assert!(r.plan_text.contains("+ normalise"));
    let json: serde_json::Value = serde_json::from_str(&r.plan_json).unwrap();
    assert_eq!(json["summary"]["pes_started"], 5);
    assert_eq!(c.applied(1), applied);
    let app = client
        .get_app(pb::GetAppRequest {
            app: "fraud-scoring".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .app
        .unwrap();
    assert_eq!(app.versions.len(), 1);
    // Still v1, as the master shows it: env values (FRAUD_THRESHOLD) redacted.
    assert_eq!(app.spec, weir_common::spec::redact_spec_text(&v1));
    assert!(!app.spec.contains("5000"));
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn workers_register_heartbeat_and_are_marked_lost_when_silent() {
    use weir_proto::v1::master_workers_client::MasterWorkersClient;
    let c = Cluster::start_tuned(3, |cfg| cfg.worker_timeout = Duration::from_millis(800)).await;
    let leader = c.leader().await;
    // Register through a follower: forwarded to the leader.
    let addr = c.addrs[&c.other_than(leader)];
    let mut w = MasterWorkersClient::connect(format!("http://{addr}"))
        .await
        .unwrap();
    let gpu = pb::GpuDevice {
        uuid: "GPU-1".into(),
        vendor: "nvidia".into(),
        model: "test".into(),
        memory_total_mb: 16384,
        declared: true,
        ..Default::default()
    };
    let request = |registry: &str| pb::RegisterWorkerRequest {
        worker_id: "w1".into(),
        control_address: "127.0.0.1:1".into(),
        data_address: "127.0.0.1:2".into(),
        resources: Some(pb::WorkerResources {
            cpu_cores: 8.0,
            memory_mb: 4096,
            gpus: vec![gpu.clone()],
            pull_registries: vec![registry.into()],
            ..Default::default()
        }),
        pools: vec!["inference".into()],
        ..Default::default()
    };
    // A registry that is not host[:port]: refused before Raft, naming the field.
    let bad = w
        .register_worker(request("registry.local/team"))
        .await
        .unwrap_err();
    assert_eq!(bad.code(), tonic::Code::InvalidArgument, "{bad:?}");
    assert!(
        bad.message().starts_with(
            r#"resources.pull_registries: registry "registry.local/team": '/' is not allowed"#
        ),
        "{bad:?}"
    );
    let mut client = c.client(leader).await;
    let listed = client
        .list_workers(pb::ListWorkersRequest {})
        .await
        .unwrap()
        .into_inner()
        .workers;
    assert!(listed.is_empty(), "nothing kept: {listed:?}");
    let reg = w
        .register_worker(request("Registry.Local:5000"))
        .await
        .unwrap()
        .into_inner();
    assert!(reg.accepted);
    assert_eq!(reg.incarnation, 1);
    let state_of = |ws: Vec<pb::WorkerView>| {
        ws.into_iter()
            .find(|w| w.worker_id == "w1")
            .map(|w| w.state)
    };
    let hb = pb::HeartbeatRequest {
        worker_id: "w1".into(),
        incarnation: 1,
        ..Default::default()
    };
    // While it heartbeats it stays alive (well past the timeout).
    let start = std::time::Instant::now();
    while start.elapsed() < Duration::from_millis(1600) {
        assert!(
            !w.heartbeat(hb.clone())
                .await
                .unwrap()
                .into_inner()
                .reregister
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let ws = client
        .list_workers(pb::ListWorkersRequest {})
        .await
        .unwrap()
        .into_inner()
        .workers;
    let pulls: Vec<Vec<String>> = ws
        .iter()
        .map(|w| w.resources.clone().unwrap_or_default().pull_registries)
        .collect();
    assert_eq!(pulls, [["registry.local:5000"]], "kept, in lower case");
    assert_eq!(state_of(ws), Some(pb::WorkerState::Alive as i32));
    let pools = client
        .list_pools(pb::ListPoolsRequest {})
        .await
        .unwrap()
        .into_inner()
        .pools;
    assert_eq!(pools.len(), 1);
    // Keyed by scenario (from the worker's pool) and vendor (from its device).
    assert_eq!(
        (
            pools[0].name.as_str(),
            pools[0].scenario.as_str(),
            pools[0].vendor.as_str(),
            pools[0].gpus_total,
            pools[0].gpu_memory_total_mb,
            pools[0].gpu_memory_free_mb
        ),
        ("inference-nvidia", "inference", "nvidia", 1, 16384, 16384)
    );
    // Silence: marked lost (replicated, so every master agrees).
    eventually("w1 to be marked lost", || {
        let mut client = client.clone();
        async move {
            let ws = client
                .list_workers(pb::ListWorkersRequest {})
                .await
                .ok()?
                .into_inner()
                .workers;
            (state_of(ws) == Some(pb::WorkerState::Dead as i32)).then_some(())
        }
    })
    .await;
    // A heartbeat brings it back; a stale incarnation is told to register again.
    assert!(
        !w.heartbeat(hb.clone())
            .await
            .unwrap()
            .into_inner()
            .reregister
    );
    let ws = client
        .list_workers(pb::ListWorkersRequest {})
        .await
        .unwrap()
        .into_inner()
        .workers;
    assert_eq!(state_of(ws), Some(pb::WorkerState::Alive as i32));
    let stale = pb::HeartbeatRequest {
        incarnation: 0,
        ..hb
    };
    assert!(w.heartbeat(stale).await.unwrap().into_inner().reregister);
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn watch_streams_state_changes_from_any_master() {
    let c = Cluster::start(3).await;
    let leader = c.leader().await;
    let mut client = c.client(leader).await;
    client.submit_app(submit("watched")).await.unwrap();
    wait_everywhere(&c, "watched").await;
    let mut watcher = c.client(c.other_than(leader)).await;
    let mut stream = watcher
        .watch_app(pb::WatchAppRequest {
            app: "watched".into(),
        })
        .await
        .unwrap()
        .into_inner();
    let first = stream.message().await.unwrap().unwrap();
    assert!(
        matches!(first.event, Some(pb::app_event::Event::AppStateChanged(ref s)) if s.new_state == pb::AppState::Submitted as i32)
    );
    client
        .cancel_app(pb::CancelAppRequest {
            app: "watched".into(),
            request_id: String::new(),
        })
        .await
        .unwrap();
    let next = stream.message().await.unwrap().unwrap();
    assert!(
        matches!(next.event, Some(pb::app_event::Event::AppStateChanged(ref s)) if s.new_state == pb::AppState::Cancelled as i32)
    );
    assert!(
        stream.message().await.unwrap().is_none(),
        "the stream ends with the app"
    );
    c.stop().await;
}

/// A follower relays the leader's watch; when the leader dies, the relay ends with a
/// status naming it (the client watches again through the next master), and a new
/// watch through the same follower is served by the new leader.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_relayed_watch_ends_naming_a_dead_leader_and_resumes_at_the_next() {
    let mut c = Cluster::start(3).await;
    let leader = c.leader().await;
    let mut client = c.client(leader).await;
    client.submit_app(submit("relayed")).await.unwrap();
    wait_everywhere(&c, "relayed").await;
    let follower = c.other_than(leader);
    let watcher = c.client(follower).await;
    let mut stream = watcher
        .clone()
        .watch_app(pb::WatchAppRequest {
            app: "relayed".into(),
        })
        .await
        .unwrap()
        .into_inner();
    let first = stream.message().await.unwrap().unwrap();
    assert_eq!(first.seq, 1);
    c.kill(leader).await;
    let end = tokio::time::timeout(Duration::from_secs(60), stream.message())
        .await
        .expect("the relay ends once the leader is gone");
    let status = end.expect_err("the relay ends with an error, not as if the app ended");
    assert!(
        weir_proto::status::outcome_unknown_at(&status).is_some()
            || status.code() == tonic::Code::Unavailable,
        "{status:?}"
    );
    // Through the same follower, once a new leader is elected: from #1 again.
    let again = eventually("a watch through the new leader", || {
        let w = watcher.clone();
        async move {
            let mut w = w;
            let mut s = w
                .watch_app(pb::WatchAppRequest {
                    app: "relayed".into(),
                })
                .await
                .ok()?
                .into_inner();
            s.message().await.ok()?
        }
    })
    .await;
    assert_eq!(again.seq, 1);
    assert!(
        matches!(again.event, Some(pb::app_event::Event::AppStateChanged(ref s)) if s.new_state == pb::AppState::Submitted as i32),
        "{again:?}"
    );
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_fourth_master_joins_catches_up_and_leaves() {
    use weir_proto::v1::weir_admin_client::WeirAdminClient;
    let mut c = Cluster::start(3).await;
    let leader = c.leader().await;
    let mut client = c.client(leader).await;
    for i in 0..5 {
        client
            .submit_app(submit(&format!("pre-{i}")))
            .await
            .unwrap();
    }
    // Master 4 starts with no founding peers and is added through the admin API.
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr4 = l.local_addr().unwrap();
    c.addrs.insert(4, addr4);
    let mut cfg = weir_master::server::MasterConfig::new(4, c.data_dir(4), Default::default());
    (c.tune)(&mut cfg);
    c.masters.insert(
        4,
        weir_master::server::Master::start_on(cfg, l).await.unwrap(),
    );
    let mut admin = WeirAdminClient::connect(format!("http://{}", c.addrs[&c.other_than(leader)]))
        .await
        .unwrap();
    let r = admin
        .add_master(pb::AddMasterRequest {
            id: 4,
            address: addr4.to_string(),
            as_voter: true,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.members.iter().filter(|m| m.voter).count(), 4);
    eventually("master 4 to catch up", || async {
        (c.local_apps(4).await.len() == 5).then_some(())
    })
    .await;
    let r = admin
        .remove_master(pb::RemoveMasterRequest { id: 4 })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.members.len(), 3);
    let err = admin
        .remove_master(pb::RemoveMasterRequest { id: 9 })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    c.kill(4).await;
    client.submit_app(submit("after-removal")).await.unwrap();
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn health_and_prometheus_metrics_are_served() {
    let c = with_metrics(1).await;
    c.leader().await;
    let mut client = c.client(1).await;
    client.submit_app(submit("metered")).await.unwrap();
    let _ = client.submit_app(submit("metered")).await.unwrap_err();

    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", c.addrs[&1]))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
    let r = health
        .check(tonic_health::pb::HealthCheckRequest {
            service: "weir.v1.Weir".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        r.status,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );

    let body = scrape(c.masters[&1].metrics_addr.unwrap()).await;
    assert!(body.starts_with("HTTP/1.1 200 OK"), "{body}");
    assert!(body.contains("weir_raft_is_leader 1"));
    assert!(body.contains("weir_raft_term 1"));
    assert!(body.contains("weir_requests_total{method=\"SubmitApp\",code=\"ok\"} 1"));
    assert!(body.contains("weir_requests_total{method=\"SubmitApp\",code=\"already_exists\"} 1"));
    assert!(body.contains("weir_request_seconds_count{method=\"SubmitApp\"} 2"));
    // Per-app checkpoint gauges (no worker here: nothing checkpointed yet).
    assert!(
        body.contains("weir_checkpoint_last_id{app=\"metered\"} 0"),
        "{body}"
    );
    assert!(body.contains("weir_checkpoint_in_flight{app=\"metered\"} 0"));
    assert!(body.contains("# TYPE weir_checkpoint_last_duration_ms gauge"));
    c.stop().await;
}

async fn scrape(addr: std::net::SocketAddr) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut sock = tokio::net::TcpStream::connect(addr).await.unwrap();
    sock.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut body = String::new();
    sock.read_to_string(&mut body).await.unwrap();
    body
}

/// A cluster of `n` masters, each serving Prometheus metrics on a port of its own.
async fn with_metrics(n: u64) -> Cluster {
    Cluster::start_tuned(n, |cfg| {
        cfg.metrics_listen = Some("127.0.0.1:0".parse().unwrap())
    })
    .await
}

fn metric(body: &str, name: &str) -> u64 {
    body.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("{name} missing in {body}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_submits_share_raft_entries_and_each_gets_its_own_answer() {
    let c = with_metrics(3).await;
    let leader = c.leader().await;
    let follower = c.other_than(leader);
    // 40 names, each submitted twice at once, half through the leader and half
    // through a follower (forwarded): concurrent writes are proposed together.
    let mut tasks = Vec::new();
    for k in 0..80 {
        let via = if k % 2 == 0 { leader } else { follower };
        let mut client = c.client(via).await;
        tasks.push(tokio::spawn(async move {
            let name = format!("race-{}", k / 2);
            (name.clone(), client.submit_app(submit(&name)).await)
        }));
    }
    let mut ok: BTreeSet<String> = BTreeSet::new();
    let mut refused = 0;
    for t in tasks {
        match t.await.unwrap() {
            (name, Ok(r)) => {
                assert_eq!(r.into_inner().version, 1);
                assert!(ok.insert(name), "a name accepted twice");
            }
            (_, Err(s)) => {
                assert_eq!(s.code(), Code::AlreadyExists, "{s:?}");
                refused += 1;
            }
        }
    }
    assert_eq!((ok.len(), refused), (40, 40));
    for id in [1, 2, 3] {
        eventually(&format!("every app on master {id}"), || async {
            let local: BTreeSet<String> = c.local_apps(id).await.into_iter().collect();
            (local == ok).then_some(())
        })
        .await;
    }
    // The leader proposed fewer entries than it carried commands.
    let body = scrape(c.masters[&leader].metrics_addr.unwrap()).await;
    let proposals = metric(&body, "weir_raft_proposals_total");
    let commands = metric(&body, "weir_raft_proposed_commands_total");
    assert!(commands >= 40, "{commands} commands proposed");
    assert!(
        proposals < commands,
        "{proposals} proposals for {commands} commands"
    );
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn large_specs_written_at_once_are_not_batched_past_the_entry_bound() {
    let c = with_metrics(3).await;
    let leader = c.leader().await;
    let before = scrape(c.masters[&leader].metrics_addr.unwrap()).await;
    let (p0, c0) = (
        metric(&before, "weir_raft_proposals_total"),
        metric(&before, "weir_raft_proposed_commands_total"),
    );
    // Each spec carries 700 KiB of comment (weighed as 3x its text): any two together
    // pass the 4 MiB bound on one entry, so each is proposed alone however they arrive.
    let padding = format!("\n# {}\n", "x".repeat(700 << 10));
    let mut tasks = Vec::new();
    for k in 0..6 {
        let mut client = c.client(leader).await;
        let mut req = submit(&format!("big-{k}"));
        req.spec.push_str(&padding);
        tasks.push(tokio::spawn(async move { client.submit_app(req).await }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap().unwrap().into_inner().version, 1);
    }
    let after = scrape(c.masters[&leader].metrics_addr.unwrap()).await;
    let proposals = metric(&after, "weir_raft_proposals_total") - p0;
    let commands = metric(&after, "weir_raft_proposed_commands_total") - c0;
    assert_eq!((proposals, commands), (6, 6));
    for id in [1, 2, 3] {
        eventually(&format!("the big specs on master {id}"), || async {
            let n = c
                .local_apps(id)
                .await
                .iter()
                .filter(|a| a.starts_with("big-"))
                .count();
            (n == 6).then_some(())
        })
        .await;
    }
    c.stop().await;
}

/// Submits `n` apps named `{prefix}-{k}` through master `via`, each spec padded to about
/// `bytes` with a comment, four at a time; returns the names.
async fn write_big_specs(
    c: &Cluster,
    via: u64,
    prefix: &str,
    n: usize,
    bytes: usize,
) -> BTreeSet<String> {
    let padding = format!("\n# {}\n", "x".repeat(bytes));
    let mut names = BTreeSet::new();
    for chunk in (0..n).collect::<Vec<_>>().chunks(4) {
        let mut tasks = Vec::new();
        for k in chunk {
            let name = format!("{prefix}-{k}");
            let mut client = c.client(via).await;
            let mut req = submit(&name);
            req.spec.push_str(&padding);
            tasks.push(tokio::spawn(async move { client.submit_app(req).await }));
            names.insert(name);
        }
        for t in tasks {
            assert_eq!(t.await.unwrap().unwrap().into_inner().version, 1);
        }
    }
    names
}

/// Waits until master `id` has applied every app in `want` (the big-spec cases allow a
/// minute: 50 MB through a debug build on two busy cores).
async fn wait_for_apps(c: &Cluster, id: u64, want: &BTreeSet<String>) {
    weir_tests::eventually_within(
        &format!("{} apps on master {id}", want.len()),
        Duration::from_secs(60),
        || async {
            let have: BTreeSet<String> = c.local_apps(id).await.into_iter().collect();
            want.is_subset(&have).then_some(())
        },
    )
    .await;
}

/// 70 specs of 700 KiB (about 50 MB) written while a follower is down: restarted, it
/// catches up (AppendEntries bounded by bytes; a timed-out one still lands).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_follower_stopped_during_50_mb_of_large_specs_catches_up_after_restart() {
    let mut c = with_metrics(3).await;
    let leader = c.leader().await;
    let follower = c.other_than(leader);
    c.kill(follower).await;
    let names = write_big_specs(&c, leader, "big", 70, 700 << 10).await;
    // The lag is visible, through the other follower too (it asks the leader).
    let other = c
        .masters
        .keys()
        .copied()
        .find(|id| ![leader, follower].contains(id))
        .unwrap();
    let lagging = member(&c, other, follower).await;
    assert!(lagging.lag_entries >= 70, "{lagging:?}");
    assert!(lagging.lag_bytes >= 70 * (700 << 10), "{lagging:?}");
    let body = scrape(c.masters[&leader].metrics_addr.unwrap()).await;
    let lag_bytes = metric(
        &body,
        &format!("weir_raft_member_lag_bytes{{member=\"{follower}\"}}"),
    );
    assert!(lag_bytes >= 70 * (700 << 10), "{lag_bytes}");
    c.restart(follower).await;
    wait_for_apps(&c, follower, &names).await;
    eventually("the follower's lag back to 0", || async {
        (member(&c, leader, follower).await.lag_entries == 0).then_some(())
    })
    .await;
    c.stop().await;
}

/// Member `id` as master `via` reports it in ClusterStatus.
async fn member(c: &Cluster, via: u64, id: u64) -> pb::Member {
    let status = c
        .client(via)
        .await
        .cluster_status(pb::ClusterStatusRequest {})
        .await
        .unwrap()
        .into_inner();
    status.members.into_iter().find(|m| m.id == id).unwrap()
}

/// The same with the follower's links cut rather than the follower stopped.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_follower_cut_off_during_50_mb_of_large_specs_catches_up_when_healed() {
    let c = Cluster::start(3).await;
    let leader = c.leader().await;
    let follower = c.other_than(leader);
    let others: Vec<u64> = c
        .masters
        .keys()
        .copied()
        .filter(|id| *id != follower)
        .collect();
    c.masters[&follower]
        .node
        .faults
        .isolate_from(others.clone());
    for id in &others {
        c.masters[id].node.faults.isolate_from([follower]);
    }
    let names = write_big_specs(&c, leader, "big", 70, 700 << 10).await;
    for m in c.masters.values() {
        m.node.faults.heal();
    }
    wait_for_apps(&c, follower, &names).await;
    c.stop().await;
}

/// Specs near the largest request a master accepts (4 MiB), each its own entry larger
/// than one AppendEntries' byte budget: a restarted follower still catches up.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_follower_catches_up_over_entries_near_the_request_limit() {
    let mut c = Cluster::start(3).await;
    let leader = c.leader().await;
    let follower = c.other_than(leader);
    c.kill(follower).await;
    let names = write_big_specs(&c, leader, "huge", 8, (4 << 20) - (8 << 10)).await;
    c.restart(follower).await;
    wait_for_apps(&c, follower, &names).await;
    c.stop().await;
}

/// A follower behind the leader's compacted log is sent the snapshot (about 50 MB of
/// specs, in chunks) and catches up from it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_follower_behind_the_compacted_log_catches_up_by_snapshot() {
    let mut c = Cluster::start_tuned(3, |cfg| cfg.node.logs_kept_after_snapshot = 0).await;
    let leader = c.leader().await;
    let follower = c.other_than(leader);
    c.kill(follower).await;
    let names = write_big_specs(&c, leader, "big", 70, 700 << 10).await;
    let raft = c.masters[&leader].node.raft.clone();
    raft.trigger().snapshot().await.unwrap();
    // openraft purges once the snapshot of about 50 MB is built (seconds of a debug
    // build on two loaded cores) and no replication stream is reading the entries;
    // the stopped follower's stream is between retries most of the time.
    weir_tests::eventually_within(
        "the leader to purge the entries the follower lacks",
        Duration::from_secs(120),
        || async {
            let purged = raft.metrics().borrow().purged.map_or(0, |l| l.index);
            (purged >= 70).then_some(())
        },
    )
    .await;
    c.restart(follower).await;
    wait_for_apps(&c, follower, &names).await;
    // It took the snapshot: its own log starts past every big spec.
    let purged = c.masters[&follower].node.raft.metrics().borrow().purged;
    assert!(purged.is_some_and(|p| p.index >= 70), "{purged:?}");
    // And the cluster is whole again: one leader, writes commit on all three.
    let leader = c.leader().await;
    c.client(leader)
        .await
        .submit_app(submit("after"))
        .await
        .unwrap();
    wait_for_apps(&c, follower, &["after".to_string()].into()).await;
    c.stop().await;
}
