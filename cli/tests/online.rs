//! weirctl against a real master (in this process, real gRPC, real disk): the online
//! commands as a user runs them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Output;
use weir_master::server::{Master, MasterConfig};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

async fn weirctl(addr: &str, args: &[&str]) -> Output {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_weirctl"));
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
