//! The compose suite: a whole cluster as containers (`deploy/docker-compose.yml`:
//! 3 masters, 3 workers on a private network), driven from the host through the
//! masters' published ports, with faults injected by `docker kill`,
//! `docker network disconnect` and `docker-compose stop`. Every link is mutual TLS;
//! the harness calls as the cluster admin (`Compose::up` makes the certificates).
//!
//! Every case is `#[ignore]`d, so the fast suite (`cargo test --workspace`) leaves them
//! out; `scripts/test.sh` and `.ci/run` run them, when Docker answers, with
//!
//! ```sh
//! deploy/build-images.sh
//! cargo test -p weir-tests --test compose -- --ignored --test-threads 1
//! ```

use std::time::{Duration, Instant};
use weir_proto::v1 as pb;
use weir_security::{Principal, Security};
use weir_tests::compose::{assert_exact, clickstream, client_with, Compose, MASTERS, WORKERS};
use weir_tests::eventually_within;

/// How long a bounded app may take to finish (a few hundred thousand records through
/// release builds on two shared cores, faults included).
const FINISH: Duration = Duration::from_secs(180);

/// How long the surviving masters may take to agree on a new leader.
const FAILOVER: Duration = Duration::from_secs(15);

/// The cluster's leader, from the masters in `among`.
async fn leader(c: &Compose, among: &[u64]) -> u64 {
    c.leader(among, Duration::from_secs(30)).await
}

fn others(not: u64) -> Vec<u64> {
    MASTERS.iter().copied().filter(|m| *m != not).collect()
}

/// [`upgrade`], which must complete with nothing lost or repeated.
async fn upgraded_exactly(c: &Compose, app: &str, spec: &str, from: u64) {
    let done = upgrade(c, app, spec, from).await;
    assert_eq!(done.phase, pb::UpgradePhase::Done as i32, "{done:?}");
    let r = done.result.expect("a result");
    assert_eq!((r.records_lost, r.records_duplicated), (0, 0), "{r:?}");
    eprintln!(
        "{app}: upgrade under load: {r:?}, {} ms",
        done.finished_at_ms - done.started_at_ms
    );
}

/// Upgrades `app` from version `from` to `spec` through any master that answers and
/// waits for the operation to end.
async fn upgrade(c: &Compose, app: &str, spec: &str, from: u64) -> pb::UpgradeOperation {
    let op = eventually_within("the upgrade accepted", Duration::from_secs(30), || async {
        for id in MASTERS {
            let Some(mut client) = c.client(id).await else {
                continue;
            };
            let req = pb::UpgradeAppRequest {
                app: app.into(),
                spec: spec.to_string(),
                format: pb::SpecFormat::Yaml as i32,
                dry_run: false,
                expected_version: from,
                request_id: String::new(),
                signature: None,
            };
            match client.upgrade_app(req).await {
                Ok(r) => return Some(r.into_inner().operation_id),
                Err(s) if s.code() == tonic::Code::InvalidArgument => {
                    panic!("{app}: the upgrade was refused: {}", s.message())
                }
                Err(_) => {}
            }
        }
        None
    })
    .await;
    eventually_within("the upgrade ends", FINISH, || async {
        for id in MASTERS {
            let Some(mut client) = c.client(id).await else {
                continue;
            };
            let h = client
                .get_app_history(pb::GetAppHistoryRequest { app: app.into() })
                .await
                .ok()?
                .into_inner();
            return h
                .operations
                .into_iter()
                .find(|o| o.operation_id == op && o.finished_at_ms != 0);
        }
        None
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "compose suite: needs Docker and the images (scripts/test.sh runs it)"]
async fn submitted_from_outside_every_record_arrives_once() {
    let c = Compose::up("submit").await;
    let count = 200_000;
    let v = c
        .submit(&MASTERS, &clickstream("clicks", count, 100_000))
        .await;
    assert_eq!(v, 1);
    let sum = c.verified(&MASTERS, "clicks", "audit", FINISH).await;
    assert_exact("clicks", &sum, count);
    let placed = c.placement(&MASTERS, "clicks").await.expect("the app");
    assert!(
        placed.iter().all(|(_, w)| !w.is_empty()),
        "every PE placed: {placed:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "compose suite: needs Docker and the images (scripts/test.sh runs it)"]
async fn killing_the_master_leader_elects_another_and_loses_nothing() {
    let c = Compose::up("leader").await;
    let l = leader(&c, &MASTERS).await;
    // Acknowledged before the kill: a finished app and one still running.
    c.submit(&MASTERS, &clickstream("done-before", 20_000, 100_000))
        .await;
    let count = 300_000;
    c.submit(&MASTERS, &clickstream("running", count, 30_000))
        .await;
    let before = c.apps(&MASTERS).await.expect("apps listed");
    assert_eq!(before, ["done-before", "running"]);
    c.records_flowing(&MASTERS, "running").await;

    let killed_at = Instant::now();
    c.kill(&format!("master{l}"));
    let survivors = others(l);
    let new = c.leader(&survivors, FAILOVER).await;
    let failover = killed_at.elapsed();
    assert_ne!(new, l);
    eprintln!("new leader {new} {failover:?} after killing {l}");

    assert_eq!(c.apps(&survivors).await.expect("apps listed"), before);
    let sum = c.verified(&survivors, "running", "audit", FINISH).await;
    assert_exact("running (leader killed mid-stream)", &sum, count);
    let sum = c.verified(&survivors, "done-before", "audit", FINISH).await;
    assert_exact("done-before", &sum, 20_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "compose suite: needs Docker and the images (scripts/test.sh runs it)"]
async fn killing_a_worker_moves_its_pes_and_the_app_completes_exactly() {
    let c = Compose::up("worker").await;
    let count = 300_000;
    c.submit(&MASTERS, &clickstream("moved", count, 30_000))
        .await;
    // Kill the worker running the first generator PE, once records flow.
    let victim = eventually_within(
        "the app placed and records flowing",
        Duration::from_secs(60),
        || async {
            let d = c.app(&MASTERS, "moved").await?;
            let seen: u64 = d
                .pes
                .iter()
                .filter_map(|p| p.verify.as_ref())
                .map(|v| v.records)
                .sum();
            let w = d
                .pes
                .iter()
                .find(|p| p.pe.as_ref().is_some_and(|r| r.operator == "clicks"))
                .map(|p| p.worker_id.clone())
                .filter(|w| !w.is_empty())?;
            (seen > 0).then_some(w)
        },
    )
    .await;
    let (service, _) = WORKERS
        .iter()
        .find(|(_, id)| *id == victim)
        .expect("a known worker id");
    let on_victim: Vec<String> = c
        .placement(&MASTERS, "moved")
        .await
        .expect("placement")
        .into_iter()
        .filter(|(_, w)| *w == victim)
        .map(|(pe, _)| pe)
        .collect();
    eprintln!("killing {service} ({victim}) running {on_victim:?}");
    c.kill(service);

    eventually_within(
        "the lost worker's PEs placed on the others",
        Duration::from_secs(60),
        || async {
            let placed = c.placement(&MASTERS, "moved").await?;
            placed
                .iter()
                .all(|(_, w)| !w.is_empty() && *w != victim)
                .then_some(())
        },
    )
    .await;
    let sum = c.verified(&MASTERS, "moved", "audit", FINISH).await;
    assert_exact(
        &format!("moved (worker {victim} killed mid-stream, its PEs {on_victim:?})"),
        &sum,
        count,
    );
}

/// The applied index master `service` reports of itself, asked from inside its own
/// container (it may be cut off from the host's published port).
fn applied_inside(c: &Compose, service: &str) -> Option<u64> {
    let o = c.weirctl_in(
        service,
        &["-o", "json", "-m", "127.0.0.1:7000", "cluster", "status"],
    );
    if !o.status.success() {
        return None;
    }
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).ok()?;
    v["applied_index"].as_u64()
}

/// App names as master `service` lists them, asked from inside its container.
fn apps_inside(c: &Compose, service: &str) -> Option<Vec<String>> {
    let o = c.weirctl_in(service, &["-o", "json", "-m", "127.0.0.1:7000", "list"]);
    if !o.status.success() {
        return None;
    }
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).ok()?;
    let mut names: Vec<String> = v
        .as_array()?
        .iter()
        .filter_map(|a| a["app"].as_str().map(str::to_string))
        .collect();
    names.sort();
    Some(names)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "compose suite: needs Docker and the images (scripts/test.sh runs it)"]
async fn an_isolated_master_cannot_commit_and_catches_up_after() {
    let c = Compose::up("partition").await;
    let l = leader(&c, &MASTERS).await;
    c.submit(&MASTERS, &clickstream("before", 10_000, 100_000))
        .await;
    let isolated = format!("master{l}");
    c.disconnect(&isolated);
    let majority = others(l);
    let new = c.leader(&majority, FAILOVER).await;
    assert_ne!(new, l);
    c.submit(&majority, &clickstream("majority", 10_000, 100_000))
        .await;

    // A write through the isolated master: it must not succeed (it cannot reach a
    // quorum, and its followers are gone).
    let spec = std::env::temp_dir().join(format!("{}-isolated.yaml", c.project));
    std::fs::write(&spec, clickstream("isolated", 10_000, 100_000)).expect("spec written");
    let id = c.container(&isolated);
    c.docker_ok(&[
        "cp",
        spec.to_str().expect("a UTF-8 temp path"),
        &format!("{id}:/tmp/isolated.yaml"),
    ]);
    let _ = std::fs::remove_file(&spec);
    let o = c.weirctl_in(
        &isolated,
        &["-m", "127.0.0.1:7000", "submit", "/tmp/isolated.yaml"],
    );
    assert!(
        !o.status.success(),
        "a submit through the isolated master succeeded: {}",
        String::from_utf8_lossy(&o.stdout)
    );
    let cut_off_applied = applied_inside(&c, &isolated).expect("the isolated master answers");

    c.reconnect(&isolated);
    // Caught up: its applied index reaches the leader's.
    eventually_within(
        "the isolated master caught up",
        Duration::from_secs(60),
        || async {
            let lead = c.leader(&majority, Duration::from_secs(30)).await;
            let target = c.status(lead).await?.applied_index;
            let mine = applied_inside(&c, &isolated)?;
            (mine >= target && mine > cut_off_applied).then_some(())
        },
    )
    .await;
    // Never committed on both sides: the majority's write is there, the isolated
    // one's is not, whichever master is asked.
    for m in &majority {
        let apps = eventually_within("apps listed", Duration::from_secs(30), || async {
            c.apps(&[*m]).await
        })
        .await;
        assert_eq!(
            apps,
            ["before", "majority"],
            "apps as master {m} lists them"
        );
    }
    // Asked from inside its container (its published port may not survive the
    // reconnect), the once isolated master answers the same.
    let apps = eventually_within(
        "apps listed by the isolated master",
        Duration::from_secs(30),
        || async { apps_inside(&c, &isolated) },
    )
    .await;
    assert_eq!(
        apps,
        ["before", "majority"],
        "apps as {isolated} lists them"
    );
    let sum = c.verified(&MASTERS, "majority", "audit", FINISH).await;
    assert_exact("majority", &sum, 10_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "compose suite: needs Docker and the images (scripts/test.sh runs it)"]
async fn a_full_stop_and_start_brings_apps_and_versions_back() {
    let c = Compose::up("restart").await;
    let count = 50_000;
    c.submit(&MASTERS, &clickstream("durable", count, 100_000))
        .await;
    let sum = c.verified(&MASTERS, "durable", "audit", FINISH).await;
    assert_exact("durable before the stop", &sum, count);
    let before = c.app(&MASTERS, "durable").await.expect("the app");

    c.compose_ok(&["stop", "-t", "5"]);
    c.compose_ok(&["start"]);
    leader(&c, &MASTERS).await;
    c.wait_workers(WORKERS.len(), Duration::from_secs(60)).await;

    let after = eventually_within("the app back", Duration::from_secs(30), || {
        c.app(&MASTERS, "durable")
    })
    .await;
    assert_eq!(after.spec, before.spec);
    assert_eq!(after.versions, before.versions);
    assert_eq!(
        after.summary.as_ref().map(|s| s.version),
        before.summary.as_ref().map(|s| s.version)
    );
    assert_eq!(c.apps(&MASTERS).await.expect("apps listed"), ["durable"]);
    // It runs again on the restarted workers, and its audit is exact again.
    let sum = c.verified(&MASTERS, "durable", "audit", FINISH).await;
    assert_exact("durable after the restart", &sum, count);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "compose suite: needs Docker and the images (scripts/test.sh runs it)"]
async fn an_online_upgrade_to_v2_under_load_loses_and_repeats_nothing() {
    let c = Compose::up("upgrade").await;
    let count = 400_000;
    let v1 = clickstream("upgraded", count, 30_000);
    c.submit(&MASTERS, &v1).await;
    c.records_flowing(&MASTERS, "upgraded").await;
    // v2: the parser keeps one more field (replaced), the window scales 2 -> 4 (its
    // counts re-split by key group).
    let v2 = v1
        .replace(
            "      project: [id, ts, user, page]",
            "        referrer: concat(\"ref-\", mod(id, 7))\n      project: [id, ts, user, page, referrer]",
        )
        .replace(
            "    kind: window.count\n    parallelism: 2",
            "    kind: window.count\n    parallelism: 4",
        );
    assert_ne!(v1, v2);
    upgraded_exactly(&c, "upgraded", &v2, 1).await;
    let d = c.app(&MASTERS, "upgraded").await.expect("the app");
    assert_eq!(d.summary.expect("summary").version, 2);
    let sum = c.verified(&MASTERS, "upgraded", "audit", FINISH).await;
    assert_exact("upgraded (v1 -> v2 under load)", &sum, count);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "compose suite: needs Docker and the images (scripts/test.sh runs it)"]
async fn a_container_pe_is_upgraded_online_to_a_new_image_inside_the_cluster() {
    let c = Compose::up("container").await;
    let count = 200_000;
    let v1 = format!(
        r#"
name: scored
checkpoint_interval_ms: 1000
operators:
  - {{name: gen, kind: source.generator, parallelism: 2, params: {{count: {count}, rate: 20000, keys: 100, payload_bytes: 32}}}}
  - {{name: score, kind: container, parallelism: 2, params: {{image: "weir-pe-score:v1"}}, resources: {{cpu: 0.25, memory_mb: 64}}}}
  - {{name: audit, kind: sink.verify, params: {{expect: {count}}}}}
streams:
  - {{from: gen, to: score}}
  - {{from: score, to: audit, partitioning: round_robin}}
"#
    );
    c.submit(&MASTERS, &v1).await;
    c.records_flowing(&MASTERS, "scored").await;
    let v2 = v1.replace("weir-pe-score:v1", "weir-pe-score:v2");
    upgraded_exactly(&c, "scored", &v2, 1).await;
    // The workers (containers themselves) run the PEs' containers on the host's
    // engine: once the upgrade is done, only v2 ones are left for the app.
    let images = c.docker_ok(&[
        "ps",
        "--filter",
        "label=weir.app=scored",
        "--format",
        "{{.Image}}",
    ]);
    let images: Vec<&str> = images.lines().collect();
    assert!(
        images.len() == 2 && images.iter().all(|i| *i == "weir-pe-score:v2"),
        "{images:?}"
    );
    let sum = c.verified(&MASTERS, "scored", "audit", FINISH).await;
    assert_exact("scored (container v1 -> v2 under load)", &sum, count);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "compose suite: needs Docker and the images (scripts/test.sh runs it)"]
async fn the_cluster_refuses_callers_without_a_certificate_and_confines_tenants() {
    let c = Compose::up("tls").await;
    // The clickstream's apps belong to tenant `web`.
    c.submit(&MASTERS, &clickstream("guarded", 1_000, 100_000))
        .await;
    for id in MASTERS {
        let addr = c.master_addr(id);
        // Plain TCP, no certificate: nothing answers.
        if let Some(mut plain) = client_with(&Security::Off, &addr).await {
            let r = plain.cluster_status(pb::ClusterStatusRequest {}).await;
            assert!(r.is_err(), "master {id} answered plain TCP: {r:?}");
        }
        // A worker's certificate is not a client of the API.
        let worker = c.security_of(&Principal::Worker("w1".into()));
        let mut w = client_with(&worker, &addr).await.expect("a TLS connection");
        let e = w
            .list_apps(pb::ListAppsRequest::default())
            .await
            .expect_err("a worker listed apps");
        assert_eq!(e.code(), tonic::Code::PermissionDenied, "{e:?}");
    }
    let as_tenant = |t: &str| c.security_of(&Principal::Tenant(t.into()));
    let addr = c.master_addr(1);
    let get = |sec: Security| {
        let addr = addr.clone();
        async move {
            let mut client = client_with(&sec, &addr).await?;
            Some(
                client
                    .get_app(pb::GetAppRequest {
                        app: "guarded".into(),
                    })
                    .await,
            )
        }
    };
    // Its tenant reads it; another tenant is refused it, and does not list it.
    let mine = eventually_within("tenant web reads its app", Duration::from_secs(30), || {
        get(as_tenant("web"))
    })
    .await;
    assert!(mine.is_ok(), "{mine:?}");
    let theirs = eventually_within("tenant default asks", Duration::from_secs(30), || {
        get(as_tenant("default"))
    })
    .await
    .expect_err("tenant default read tenant web's app");
    assert_eq!(theirs.code(), tonic::Code::PermissionDenied, "{theirs:?}");
    let mut other = client_with(&as_tenant("default"), &addr)
        .await
        .expect("a TLS connection");
    let listed = other
        .list_apps(pb::ListAppsRequest::default())
        .await
        .expect("tenant default lists its apps")
        .into_inner()
        .apps;
    assert!(listed.is_empty(), "tenant default sees {listed:?}");
}
