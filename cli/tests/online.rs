//! weirctl against a real master (in this process, real gRPC, real disk): the online
//! commands as a user runs them.

use serde_json::Value;
use std::collections::BTreeMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, BufReader};
use weir_master::server::{Master, MasterConfig};
use weir_proto::v1 as pb;
use weir_proto::v1::weir_client::WeirClient;

/// How long any condition may take: generous, for two busy cores.
const DEADLINE: Duration = Duration::from_secs(120);

/// Polls `check` until it answers `Some`, or fails the test after [`DEADLINE`].
async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(start.elapsed() < DEADLINE, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `f`, or a failed test when it takes longer than [`DEADLINE`].
async fn within<T>(what: &str, f: impl Future<Output = T>) -> T {
    tokio::time::timeout(DEADLINE, f)
        .await
        .unwrap_or_else(|_| panic!("timed out: {what}"))
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

async fn weirctl(addr: &str, args: &[&str]) -> Output {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_weirctl"));
    cmd.env("WEIR_INSECURE", "1");
    cmd.arg("--master").arg(addr).args(args).current_dir(root());
    cmd.output().await.unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

async fn start_dev_master(dir: &Path) -> Master {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap().to_string();
    let cfg = MasterConfig::new(1, dir.to_path_buf(), BTreeMap::from([(1, addr)]));
    Master::start_on(cfg, l).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submit_get_list_plan_and_cancel_through_weirctl() {
    let dir = tempfile::tempdir().unwrap();
    let master = start_dev_master(dir.path()).await;
    // A dead address first: weirctl moves on to the next master that answers.
    let addr = format!("127.0.0.1:1,{}", master.addr);
    let a = addr.as_str();

    let out = weirctl(a, &["submit", "examples/clickstream.yaml"]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout).trim(),
        "submitted clickstream version 1 (10 PEs)"
    );

    let out = weirctl(a, &["submit", "examples/clickstream.yaml"]).await;
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("AlreadyExists: app \"clickstream\" already exists"));

    let out = weirctl(a, &["submit", "tests/specs/bad/cycle.yaml"]).await;
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("cycle: up -> mid -> up"),
        "{}",
        text(&out.stderr)
    );

    let out = weirctl(a, &["-o", "json", "list"]).await;
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v[0]["app"], "clickstream");
    assert_eq!(v[0]["pes"], 10);

    let out = weirctl(a, &["-o", "json", "get", "clickstream"]).await;
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["pes"].as_array().unwrap().len(), 10);
    assert_eq!(v["streams"].as_array().unwrap().len(), 5);

    let out = weirctl(
        a,
        &[
            "upgrade",
            "clickstream",
            "examples/clickstream-v2.yaml",
            "--dry-run",
        ],
    )
    .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("^ views    rescaled"));

    let out = weirctl(a, &["-o", "json", "cluster", "status"]).await;
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["leader"], 1);
    assert_eq!(v["members"][0]["role"], "leader");

    let out = weirctl(a, &["cancel", "clickstream"]).await;
    assert!(out.status.success());
    let out = weirctl(a, &["get", "nope"]).await;
    assert!(text(&out.stderr).contains("NotFound"));
    let out = weirctl(a, &["-o", "json", "list"]).await;
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v[0]["state"], "cancelled");
    master.stop().await;
}

async fn start_worker(id: &str, master: &str) -> weir_worker::node::Worker {
    let control = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let data = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let cfg = weir_worker::agent::AgentConfig {
        worker_id: id.into(),
        masters: vec![master.to_string()],
        control_address: control.local_addr().unwrap().to_string(),
        data_address: data.local_addr().unwrap().to_string(),
        labels: BTreeMap::new(),
        pools: vec![],
        cluster_id: "weir".into(),
        cores: Some(8.0),
        memory_mb: Some(8192),
        declared_gpus: vec![],
        discover_nvml: false,
        checkpoint_dir: None,
        security: weir_security::Security::Off,
        push_progress: true,
        defer_snapshot_from: weir_worker::ops::window::DEFER_FROM,

        pull_from: Vec::new(),
    };
    weir_worker::node::Worker::start_on(cfg, control, data)
        .await
        .unwrap()
}

fn feed(tag: &str) -> String {
    format!(
        r#"
name: feed
operators:
  - {{name: gen, kind: source.generator, parallelism: 2, params: {{rate: 20000, keys: 10, payload_bytes: 8}}}}
  - {{name: tag, kind: map, parallelism: 2, params: {{set: {{tag: '"{tag}"'}}}}}}
  - {{name: audit, kind: sink.verify}}
streams:
  - {{from: gen, to: tag}}
  - {{from: tag, to: audit, partitioning: round_robin}}
"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upgrade_history_and_rollback_through_weirctl() {
    let dir = tempfile::tempdir().unwrap();
    let master = start_dev_master(dir.path()).await;
    let a = master.addr.to_string();
    let a = a.as_str();
    let workers = [start_worker("w1", a).await, start_worker("w2", a).await];
    let (v1, v2) = (dir.path().join("v1.yaml"), dir.path().join("v2.yaml"));
    std::fs::write(&v1, feed("a")).unwrap();
    std::fs::write(&v2, feed("b")).unwrap();
    let (v1, v2) = (v1.to_str().unwrap(), v2.to_str().unwrap());
    let out = weirctl(a, &["submit", v1]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    // Upgrading needs the app placed and running; weirctl says so until it is.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    let out = loop {
        let out = weirctl(a, &["upgrade", "feed", v2]).await;
        if out.status.success() || std::time::Instant::now() > deadline {
            break out;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    };
    let s = text(&out.stdout);
    assert!(out.status.success(), "{s}{}", text(&out.stderr));
    assert!(s.contains("Phase 2/3 switch"), "the plan first: {s}");
    assert!(s.contains("upgrade 1 of feed: v1 -> v2 done"), "{s}");
    assert!(s.contains("records lost 0, records duplicated 0"), "{s}");
    assert!(!s.contains("state pre-copied"), "no state moved: {s}");
    // The same spec again: nothing to do, refused.
    let out = weirctl(a, &["upgrade", "feed", v2]).await;
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("nothing to upgrade"),
        "{}",
        text(&out.stderr)
    );

    let out = weirctl(a, &["rollback", "feed", "--to", "1"]).await;
    let s = text(&out.stdout);
    assert!(out.status.success(), "{s}{}", text(&out.stderr));
    assert!(s.contains("upgrade 2 of feed: v2 -> v3 done"), "{s}");
    let out = weirctl(a, &["rollback", "feed", "--to", "9"]).await;
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("no version 9"),
        "{}",
        text(&out.stderr)
    );

    let out = weirctl(a, &["-o", "json", "history", "feed"]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let h: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let versions = h["versions"].as_array().unwrap();
    assert_eq!(versions.len(), 3);
    assert_eq!(versions[2]["operation_id"], "2");
    let ops = h["operations"].as_array().unwrap();
    assert_eq!(ops.len(), 2);
    assert!(ops.iter().all(|o| o["outcome"] == "done"), "{ops:?}");
    let out = weirctl(a, &["history", "feed"]).await;
    assert!(text(&out.stdout).contains("2->3"), "{}", text(&out.stdout));
    for w in workers {
        w.stop().await;
    }
    master.stop().await;
}

/// Keys under which weirctl's JSON carries a protocol enum, wherever they appear.
const ENUM_KEYS: &[&str] = &[
    "state",
    "old_state",
    "new_state",
    "role",
    "phase",
    "outcome",
    "partitioning",
    "kind",
    "format",
    "event",
];

/// Fails when an enum field anywhere in `v` is a number instead of a name.
fn assert_enums_named(what: &str, v: &Value) {
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                assert!(
                    !(ENUM_KEYS.contains(&k.as_str()) && x.is_number()),
                    "{what}: \"{k}\": {x} is a number, not the name the text output shows, in\n{v:#}"
                );
                assert_enums_named(what, x);
            }
        }
        Value::Array(a) => a.iter().for_each(|x| assert_enums_named(what, x)),
        _ => {}
    }
}

/// Runs weirctl with `-o json` and checks its answer is JSON whose enums are named.
async fn json_of(addr: &str, args: &[&str]) -> Value {
    let mut all = vec!["-o", "json"];
    all.extend(args);
    let out = weirctl(addr, &all).await;
    assert!(out.status.success(), "{args:?}: {}", text(&out.stderr));
    let v: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{args:?}: {e}: {}", text(&out.stdout)));
    assert_enums_named(&format!("{args:?}"), &v);
    v
}

/// Every PE of `app` reported running, as the master serves it.
async fn all_running(master: &str, app: &str) -> bool {
    let Ok(mut c) = WeirClient::connect(format!("http://{master}")).await else {
        return false;
    };
    let Ok(r) = c.get_app(pb::GetAppRequest { app: app.into() }).await else {
        return false;
    };
    let pes = r.into_inner().app.unwrap_or_default().pes;
    !pes.is_empty() && pes.iter().all(|p| p.state == pb::PeState::Running as i32)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_output_names_every_enum_as_the_text_does() {
    let dir = tempfile::tempdir().unwrap();
    let master = start_dev_master(dir.path()).await;
    let a = master.addr.to_string();
    let a = a.as_str();
    let worker = start_worker("w1", a).await;
    let (v1, v2) = (dir.path().join("v1.yaml"), dir.path().join("v2.yaml"));
    std::fs::write(&v1, feed("a")).unwrap();
    std::fs::write(&v2, feed("b")).unwrap();
    let (v1, v2) = (v1.to_str().unwrap(), v2.to_str().unwrap());

    let v = json_of(a, &["submit", v1]).await;
    assert_eq!(v["state"], "submitted");
    eventually("every PE of feed running", || async {
        all_running(a, "feed").await.then_some(())
    })
    .await;

    // The defect as reported: a PE's state was `"state": 3` where text said `running`.
    let v = json_of(a, &["get", "feed"]).await;
    let pes = v["pes"].as_array().unwrap();
    assert_eq!(pes.len(), 5, "{v:#}");
    let shown = text(&weirctl(a, &["get", "feed"]).await.stdout);
    for p in pes {
        assert_eq!(p["state"], "running", "{p}");
        let id = p["pe"].as_str().unwrap();
        let line = shown.lines().find(|l| l.starts_with(id)).unwrap();
        assert!(line.contains(" running "), "text and JSON differ: {line}");
    }
    assert_eq!(v["state"], "running");
    assert!(v["streams"]
        .as_array()
        .unwrap()
        .iter()
        .any(|s| s["partitioning"] == "round_robin"));

    let v = json_of(a, &["workers"]).await;
    assert_eq!(v[0]["state"], "alive", "{v:#}");
    let v = json_of(a, &["list"]).await;
    assert_eq!(v[0]["state"], "running");
    let v = json_of(a, &["cluster", "status"]).await;
    assert_eq!(v["members"][0]["role"], "leader");
    json_of(a, &["history", "feed"]).await;
    json_of(a, &["checkpoints", "feed"]).await;
    json_of(a, &["upgrade", "feed", v2, "--dry-run"]).await;
    json_of(a, &["plan", v1, v2]).await;
    json_of(a, &["validate", v1]).await;

    // watch prints one JSON document per event, until the app ends.
    let mut watch = tokio::process::Command::new(env!("CARGO_BIN_EXE_weirctl"))
        .env("WEIR_INSECURE", "1")
        .args(["--master", a, "-o", "json", "watch", "feed"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(watch.stdout.take().unwrap()).lines();
    let first = within("watch's first event", lines.next_line())
        .await
        .unwrap()
        .expect("a first event");
    let v = json_of(a, &["cancel", "feed"]).await;
    assert_eq!(v["state"], "cancelled");
    let mut events = vec![first];
    while let Some(l) = within("watch to end", lines.next_line()).await.unwrap() {
        events.push(l);
    }
    assert!(within("watch to exit", watch.wait())
        .await
        .unwrap()
        .success());
    for e in &events {
        let v: Value = serde_json::from_str(e).unwrap();
        assert_enums_named("watch", &v);
    }
    let last: Value = serde_json::from_str(events.last().unwrap()).unwrap();
    assert_eq!(last["state"], "cancelled", "{events:?}");
    worker.stop().await;
    master.stop().await;
}

/// A master on a runtime of its own, so that it can die the way a crashed process
/// does: every task and connection dropped at once, whatever call is in flight, with
/// no goodbye to its clients.
struct Crashable {
    rt: tokio::runtime::Runtime,
    master: Master,
}

impl Crashable {
    /// Starts master `id`: the founding (and only) voter of a new cluster, or one
    /// that joins a cluster later.
    async fn start(id: u64, dir: &Path, founding: bool) -> Self {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        // Bound here, registered with the master's runtime there: a socket belongs to
        // the runtime that registers it.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let peers = if founding {
            BTreeMap::from([(id, listener.local_addr().unwrap().to_string())])
        } else {
            BTreeMap::new()
        };
        let cfg = MasterConfig::new(id, dir.to_path_buf(), peers);
        let master = rt
            .spawn(async move {
                let l = tokio::net::TcpListener::from_std(listener).unwrap();
                Master::start_on(cfg, l).await.unwrap()
            })
            .await
            .unwrap();
        Self { rt, master }
    }

    fn crash(self) {
        self.rt.shutdown_background();
        // Its Raft handle would still try to reach the dropped tasks.
        std::mem::forget(self.master);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_master_dying_mid_call_moves_reads_on_and_names_itself_for_other_writes() {
    let dir = tempfile::tempdir().unwrap();
    let leader = start_dev_master(&dir.path().join("m1")).await;
    let b = leader.addr.to_string();
    let doomed = Crashable::start(2, &dir.path().join("m2"), false).await;
    let a = doomed.master.addr.to_string();
    // weirctl tries the doomed master first.
    let both = format!("{a},{b}");

    let out = weirctl(&b, &["cluster", "add-master", "2", &a, "--learner"]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let spec = dir.path().join("feed.yaml");
    std::fs::write(&spec, feed("a")).unwrap();
    let out = weirctl(&b, &["submit", spec.to_str().unwrap()]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    // A read in flight on the doomed master: a watch (which it relays from the
    // leader), its first event printed.
    let mut watch = tokio::process::Command::new(env!("CARGO_BIN_EXE_weirctl"))
        .env("WEIR_INSECURE", "1")
        .args(["--master", &both, "watch", "feed"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(watch.stdout.take().unwrap()).lines();
    let mut notes = BufReader::new(watch.stderr.take().unwrap()).lines();
    let first = within("the watch through the doomed master", lines.next_line())
        .await
        .unwrap()
        .expect("a first event");
    assert!(
        first.starts_with("#1 state ") && first.ends_with("submitted"),
        "{first}"
    );

    // A write in flight through it that is not safe to repeat: adding master 3 as a
    // voter. 3 never answers, so the leader can never commit the change and the call
    // waits (forwarded by the doomed master to the leader) until something gives.
    let add = tokio::process::Command::new(env!("CARGO_BIN_EXE_weirctl"))
        .env("WEIR_INSECURE", "1")
        .args([
            "--master",
            &both,
            "cluster",
            "add-master",
            "3",
            "127.0.0.1:1",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    eventually("the leader to propose master 3 as a voter", || async {
        let m = leader.node.raft.metrics().borrow().clone();
        m.membership_config
            .membership()
            .voter_ids()
            .any(|v| v == 3)
            .then_some(())
    })
    .await;

    doomed.crash();

    // The write: an error naming the master, saying the outcome is unknown, and no
    // second attempt at the other master.
    let out = within("add-master to fail", add.wait_with_output())
        .await
        .unwrap();
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}{}", text(&out.stdout));
    assert!(
        err.contains(&format!("master {a} failed mid-call")),
        "{err}"
    );
    assert!(err.contains("may or may not have been applied"), "{err}");

    // The read went on through the other master, whose stream starts again at #1
    // (the leader serves it from its applied log: it needs no quorum, which it lost
    // to 3).
    let note = within("the watch's note", notes.next_line())
        .await
        .unwrap()
        .expect("a note on stderr");
    assert!(
        note.contains(&format!("master {a} failed mid-watch")),
        "{note}"
    );
    let again = within("the watch through the other master", lines.next_line())
        .await
        .unwrap()
        .expect("the watch to go on");
    assert!(
        again.starts_with("#1 state ") && again.ends_with("submitted"),
        "{again}"
    );
    watch.start_kill().unwrap();

    // A unary read with the dead master first is answered by the next one.
    let out = weirctl(&both, &["-o", "json", "cluster", "status"]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["leader"], 1);
    leader.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_repeated_with_their_request_id_answer_the_first_outcome() {
    let dir = tempfile::tempdir().unwrap();
    let master = start_dev_master(dir.path()).await;
    let a = master.addr.to_string();
    let a = a.as_str();
    let worker = start_worker("w1", a).await;
    let mut c = WeirClient::connect(format!("http://{a}")).await.unwrap();
    eventually("a leader", || {
        let mut c = c.clone();
        async move {
            let s = c.cluster_status(pb::ClusterStatusRequest {}).await.ok()?;
            s.into_inner().leader_id
        }
    })
    .await;
    let yaml = pb::SpecFormat::Yaml as i32;
    let submit = |spec: String, id: &str| pb::SubmitAppRequest {
        spec,
        format: yaml,
        request_id: id.into(),
        signature: None,
    };

    let first = c.submit_app(submit(feed("a"), "s-1")).await.unwrap();
    let again = c.submit_app(submit(feed("a"), "s-1")).await.unwrap();
    assert_eq!(first.into_inner(), again.into_inner());
    let e = c.submit_app(submit(feed("a"), "s-2")).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::AlreadyExists, "{e:?}");
    let e = c.submit_app(submit(feed("b"), "s-1")).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
    assert!(e.message().starts_with("request_id: \"s-1\""), "{e:?}");
    let e = c
        .submit_app(submit(feed("a"), &"x".repeat(129)))
        .await
        .unwrap_err();
    assert_eq!(e.message(), "request_id: at most 128 bytes (got 129)");

    eventually("every PE of feed running", || async {
        all_running(a, "feed").await.then_some(())
    })
    .await;
    let upgrade = |id: &str| pb::UpgradeAppRequest {
        app: "feed".into(),
        spec: feed("b"),
        format: yaml,
        request_id: id.into(),
        ..Default::default()
    };
    let first = c.upgrade_app(upgrade("u-1")).await.unwrap().into_inner();
    // Repeated while it runs, and once it is done: the same operation, the same plan.
    let again = c.upgrade_app(upgrade("u-1")).await.unwrap().into_inner();
    assert_eq!(again, first);
    let done = eventually("the upgrade to end", || {
        let mut c = c.clone();
        async move {
            let h = c
                .get_app_history(pb::GetAppHistoryRequest { app: "feed".into() })
                .await
                .ok()?
                .into_inner();
            h.operations
                .iter()
                .all(|o| o.finished_at_ms != 0)
                .then_some(h)
        }
    })
    .await;
    assert_eq!(done.operations.len(), 1);
    assert_eq!(done.versions.len(), 2);
    let again = c.upgrade_app(upgrade("u-1")).await.unwrap().into_inner();
    assert_eq!(again, first);
    // A new request with the same spec is refused as before.
    let e = c.upgrade_app(upgrade("u-2")).await.unwrap_err();
    assert!(e.message().contains("nothing to upgrade"), "{e:?}");

    let cancel = |id: &str| pb::CancelAppRequest {
        app: "feed".into(),
        request_id: id.into(),
    };
    let first = c.cancel_app(cancel("c-1")).await.unwrap().into_inner();
    assert_eq!(first.state, pb::AppState::Cancelled as i32);
    let again = c.cancel_app(cancel("c-1")).await.unwrap().into_inner();
    assert_eq!(again, first);
    let e = c.cancel_app(cancel("c-2")).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::FailedPrecondition, "{e:?}");
    worker.stop().await;
    master.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_dying_under_a_forwarded_call_is_named_by_the_follower() {
    let dir = tempfile::tempdir().unwrap();
    let doomed = Crashable::start(1, &dir.path().join("m1"), true).await;
    let leader = doomed.master.addr.to_string();
    let learner = Master::start_on(
        MasterConfig::new(2, dir.path().join("m2"), BTreeMap::new()),
        tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(),
    )
    .await
    .unwrap();
    let via = learner.addr.to_string();
    let out = weirctl(&leader, &["cluster", "add-master", "2", &via, "--learner"]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));

    // Through the learner, which forwards it to the leader: adding master 3 as a voter,
    // a change the leader can never commit (3 never answers), so the call waits there.
    let add = tokio::process::Command::new(env!("CARGO_BIN_EXE_weirctl"))
        .env("WEIR_INSECURE", "1")
        .args([
            "--master",
            &via,
            "cluster",
            "add-master",
            "3",
            "127.0.0.1:1",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    eventually("the leader to propose master 3 as a voter", || async {
        let m = doomed.master.node.raft.metrics().borrow().clone();
        m.membership_config
            .membership()
            .voter_ids()
            .any(|v| v == 3)
            .then_some(())
    })
    .await;

    doomed.crash();

    let out = within("add-master to fail", add.wait_with_output())
        .await
        .unwrap();
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}{}", text(&out.stdout));
    assert!(
        err.contains(&format!(
            "master {leader} failed mid-call (forwarded by {via}"
        )),
        "{err}"
    );
    assert!(err.contains("may or may not have been applied"), "{err}");
    learner.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn template_and_image_commands_generate_and_show_a_container_operator() {
    let dir = tempfile::tempdir().unwrap();
    let master = start_dev_master(dir.path()).await;
    let addr = master.addr.to_string();
    let a = addr.as_str();
    let ok = |out: &Output| {
        assert!(out.status.success(), "{}", text(&out.stderr));
        text(&out.stdout)
    };
    let refused = |out: &Output| {
        assert!(!out.status.success(), "{}", text(&out.stdout));
        text(&out.stderr)
    };

    let register = |vendor: &'static str| {
        [
            "image",
            "register",
            "pe-cpu",
            "--image",
            "weir-pe-score:v1",
            "--scenario",
            "inference",
            "--vendor",
            vendor,
            "--framework",
            "none",
        ]
    };
    let err = refused(&weirctl(a, &register("ibm")).await);
    assert!(err.contains("vendor: unknown value \"ibm\""), "{err}");
    ok(&weirctl(a, &register("cpu")).await);
    let out = ok(&weirctl(a, &["-o", "json", "image", "list"]).await);
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["base_images"][0]["vendor"], "none");

    let out = ok(&weirctl(a, &["template", "add", "examples/templates/scorer.yaml"]).await);
    assert_eq!(
        out.trim(),
        "added template scorer (base image pe-cpu -> weir-pe-score:v1)"
    );
    let out = ok(&weirctl(a, &["template", "list"]).await);
    assert!(out.contains("scorer") && out.contains("model"), "{out}");
    let out = ok(&weirctl(a, &["template", "show", "scorer"]).await);
    assert!(out.contains("# param model: default \"v1\""), "{out}");
    assert!(out.contains("WEIR_SCORE_MODEL: ${model}"), "{out}");

    // Offline, the template form is accepted and left to the master.
    let out = ok(&weirctl(a, &["validate", "examples/templates/app-scores.yaml"]).await);
    assert!(
        out.contains("score: template scorer, resolved at submit"),
        "{out}"
    );

    ok(&weirctl(a, &["submit", "examples/templates/app-scores.yaml"]).await);
    let line = "score: container weir-pe-score:v1 (template scorer, base image pe-cpu)";
    let out = ok(&weirctl(a, &["get", "scores"]).await);
    assert!(out.contains(line), "{out}");
    let out = ok(&weirctl(a, &["history", "scores"]).await);
    assert!(out.contains(&format!("v1  {line}")), "{out}");
    let out = ok(&weirctl(
        a,
        &[
            "upgrade",
            "scores",
            "examples/templates/app-scores.yaml",
            "--dry-run",
        ],
    )
    .await);
    assert!(out.contains(&format!("generated: {line}")), "{out}");

    // Refusals name the field and change nothing.
    let bad = dir.path().join("bad.yaml");
    std::fs::write(
        &bad,
        std::fs::read_to_string(root().join("examples/templates/app-scores.yaml"))
            .unwrap()
            .replace("name: scores", "name: other")
            .replace("{model: v2}", "{model: v2, modle: v3}"),
    )
    .unwrap();
    let err = refused(&weirctl(a, &["submit", bad.to_str().unwrap()]).await);
    assert!(
        err.contains("operators[1].params.modle: template \"scorer\" has no parameter"),
        "{err}"
    );
    let out = ok(&weirctl(a, &["-o", "json", "list"]).await);
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v.as_array().unwrap().len(), 1);
    let err = refused(&weirctl(a, &["image", "remove", "pe-cpu"]).await);
    assert!(err.contains("FailedPrecondition"), "{err}");
    let err = refused(&weirctl(a, &["template", "remove", "scorer"]).await);
    assert!(err.contains("FailedPrecondition"), "{err}");
    let err = refused(&weirctl(a, &["template", "show", "nope"]).await);
    assert!(
        err.contains("NotFound: template \"nope\" not found"),
        "{err}"
    );

    // Once the app is gone, the template and then its base image may go.
    ok(&weirctl(a, &["cancel", "scores"]).await);
    ok(&weirctl(a, &["template", "remove", "scorer"]).await);
    ok(&weirctl(a, &["image", "remove", "pe-cpu"]).await);
    let out = ok(&weirctl(a, &["-o", "json", "template", "list"]).await);
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["templates"], serde_json::json!([]));
    master.stop().await;
}

/// weirctl with TLS material from `dir` as `who` (`admin-ops`, `tenant-web`), and its
/// signing key when given; no `--insecure`.
async fn weirctl_as(
    dir: &Path,
    who: &str,
    sign: Option<&str>,
    addr: &str,
    args: &[&str],
) -> Output {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_weirctl"));
    cmd.env_remove("WEIR_INSECURE")
        .env("WEIR_TLS_CA", dir.join("ca.pem"))
        .env("WEIR_TLS_CERT", dir.join(format!("{who}.pem")))
        .env("WEIR_TLS_KEY", dir.join(format!("{who}.key")));
    if let Some(k) = sign {
        cmd.arg("--sign-key").arg(dir.join(k));
    }
    cmd.arg("--master").arg(addr).args(args).current_dir(root());
    cmd.output().await.unwrap()
}

/// The whole security path through the binary: `certs init` makes the material, a
/// master runs with its certificate, the admin registers a tenant with its signing
/// key, the tenant's unsigned spec is refused and its signed one taken (history shows
/// the key), and a client without TLS gets nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certs_tenants_and_signed_submits_through_weirctl() {
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().join("certs");
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_weirctl"))
        .args(["certs", "init"])
        .arg(&certs)
        .args([
            "--masters",
            "1",
            "--workers",
            "w1",
            "--tenants",
            "web",
            "--admins",
            "ops",
        ])
        .output()
        .await
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap().to_string();
    let mut cfg = MasterConfig::new(
        1,
        dir.path().join("m1"),
        BTreeMap::from([(1, addr.clone())]),
    );
    cfg.node.security =
        weir_security::Security::load(Some(&weir_security::TlsFiles::in_dir(&certs, "master-1")))
            .unwrap();
    let master = Master::start_on(cfg, l).await.unwrap();
    let a = addr.as_str();

    let pubkey = certs.join("tenant-web.sign.pub");
    let out = weirctl_as(
        &certs,
        "admin-ops",
        None,
        a,
        &[
            "tenant",
            "put",
            "web",
            "--public-key",
            pubkey.to_str().unwrap(),
            "--file-root",
            "/tmp",
        ],
    )
    .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    // A tenant may not register itself.
    let out = weirctl_as(
        &certs,
        "tenant-web",
        None,
        a,
        &["tenant", "put", "web", "--unsigned"],
    )
    .await;
    assert!(
        text(&out.stderr).contains("PermissionDenied"),
        "{}",
        text(&out.stderr)
    );

    let out = weirctl_as(
        &certs,
        "tenant-web",
        None,
        a,
        &["submit", "examples/clickstream.yaml"],
    )
    .await;
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr)
            .contains("Unauthenticated: signature: tenant \"web\" must sign its specs"),
        "{}",
        text(&out.stderr)
    );
    let out = weirctl_as(
        &certs,
        "tenant-web",
        Some("tenant-web.sign.key"),
        a,
        &["submit", "examples/clickstream.yaml"],
    )
    .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let key_id = text(
        &weirctl_as(
            &certs,
            "tenant-web",
            None,
            a,
            &["-o", "json", "tenant", "list"],
        )
        .await
        .stdout,
    );
    let v: serde_json::Value = serde_json::from_str(&key_id).unwrap();
    let key_id = v["tenants"][0]["keys"][0].as_str().unwrap().to_string();
    let out = weirctl_as(&certs, "tenant-web", None, a, &["history", "clickstream"]).await;
    assert!(text(&out.stdout).contains(&key_id), "{}", text(&out.stdout));

    // Plain TCP gets nothing from a TLS master.
    let out = weirctl(a, &["list"]).await;
    assert!(!out.status.success(), "{}", text(&out.stdout));
    master.stop().await;
}

/// Quotas, the queue and the pools through weirctl: an app waits with its reason, a
/// quota its app alone passes is refused with the limit named.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quotas_queue_and_pools_through_weirctl() {
    let dir = tempfile::tempdir().unwrap();
    let master = start_dev_master(dir.path()).await;
    let a = master.addr.to_string();
    let a = a.as_str();
    let out = weirctl(
        a,
        &["tenant", "set-quota", "web", "--pes", "20", "--gpus", "2"],
    )
    .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout).trim(), "tenant web: quota gpus 2, pes 20");
    // No worker: clickstream (tenant web, 10 PEs) waits for capacity.
    let out = weirctl(a, &["submit", "examples/clickstream.yaml"]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let v = eventually("clickstream queued", || async {
        let v = json_of(a, &["queue"]).await;
        (v["queue"][0]["app"] == "clickstream").then_some(v)
    })
    .await;
    assert_eq!(v["queue"][0]["wait"], "capacity");
    assert_eq!(v["queue"][0]["tenant"], "web");
    assert_eq!(v["queue"][0]["pes"], 10);
    let out = weirctl(a, &["queue"]).await;
    let shown = text(&out.stdout);
    assert!(
        shown.contains("clickstream") && shown.contains("no alive worker"),
        "{shown}"
    );
    let v = json_of(a, &["pools"]).await;
    assert_eq!(v["pools"][0]["pool"], "general-cpu");
    assert_eq!(v["pools"][0]["pes_pending"], 10);
    // A quota below what the app alone asks: the next such submit is refused.
    let out = weirctl(a, &["tenant", "set-quota", "web", "--pes", "5"]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let spec = std::fs::read_to_string(root().join("examples/clickstream.yaml"))
        .unwrap()
        .replace("name: clickstream", "name: clicks-two");
    let file = dir.path().join("two.yaml");
    std::fs::write(&file, spec).unwrap();
    let out = weirctl(a, &["submit", file.to_str().unwrap()]).await;
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains(
            "ResourceExhausted: quota.pes: tenant \"web\" may hold 5 PEs; it holds 0 PEs and this needs 10 PEs more"
        ),
        "{}",
        text(&out.stderr)
    );
    let v = eventually("clickstream waits for its quota", || async {
        let v = json_of(a, &["queue"]).await;
        (v["queue"][0]["wait"] == "quota").then_some(v)
    })
    .await;
    assert_eq!(v["queue"].as_array().unwrap().len(), 1);
    let v = json_of(a, &["tenant", "list"]).await;
    let web = v["tenants"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["tenant"] == "web")
        .unwrap()
        .clone();
    assert_eq!(web["quota"]["pes"], 5);
    assert_eq!(web["held"]["pes"], 0, "a queued app holds nothing");
    let out = weirctl(a, &["tenant", "set-quota", "web", "--clear"]).await;
    assert_eq!(text(&out.stdout).trim(), "tenant web: quota none");

    // The scheduling policy: the flags until one is kept in Raft; a bad one refused.
    let out = weirctl(a, &["scheduler", "policy"]).await;
    assert_eq!(
        text(&out.stdout),
        "gpu-policy objective, queue fair\n  none kept in Raft: the leader's flags\n"
    );
    let out = weirctl(
        a,
        &[
            "scheduler",
            "set-policy",
            "--gpu-policy",
            "objective-spread",
            "--gpu-weight",
            "model:h100=2",
            "--fifo-queue",
        ],
    )
    .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout).trim(),
        "scheduling policy set: gpu-policy objective-spread, gpu-weight model:h100=2, queue fifo"
    );
    let v = json_of(a, &["scheduler", "policy"]).await;
    assert_eq!(v["replicated"], true);
    assert_eq!(v["policy"]["gpu_policy"], "objective-spread");
    assert_eq!(v["policy"]["gpu_weights"][0], "model:h100=2");
    let out = weirctl(a, &["scheduler", "set-policy", "--gpu-policy", "greedy"]).await;
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("InvalidArgument: policy.gpu_policy \"greedy\": one of"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(
        json_of(a, &["scheduler", "policy"]).await["policy"]["gpu_policy"],
        "objective-spread"
    );
    let out = weirctl(a, &["scheduler", "set-policy", "--clear"]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        json_of(a, &["scheduler", "policy"]).await["replicated"],
        false
    );
    master.stop().await;
}
