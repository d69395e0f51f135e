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
