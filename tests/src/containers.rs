//! Harness of the container tests (tests/tests/containers.rs): the example PE images
//! built once per test process from the `weir-pe-score` binary cargo built for the
//! tests, and `docker` commands to look at what the worker created.

use std::path::Path;
use std::process::Command;
use std::sync::Mutex;

/// The image of rule v1.
pub const V1: &str = "weir-pe-score:v1";
/// The image of rule v2.
pub const V2: &str = "weir-pe-score:v2";
/// The image whose program exits with status 3 at start.
pub const BROKEN: &str = "weir-pe-score:broken";

/// Whether the container tests can run: a Docker Engine answers. Without one, a test
/// returns at once after a loud line, unless `CI_REQUIRE_DOCKER=1`, where it fails
/// (as `scripts/test.sh` does for the compose suite).
pub fn docker_or_skip(test: &str) -> bool {
    if crate::compose::docker_available() {
        return true;
    }
    assert!(
        std::env::var("CI_REQUIRE_DOCKER").as_deref() != Ok("1"),
        "{test}: no Docker Engine answers (`docker info` failed) and CI_REQUIRE_DOCKER=1"
    );
    eprintln!("!!!!!!!! {test}: NO DOCKER ENGINE, THIS CONTAINER TEST DID NOT RUN !!!!!!!!");
    false
}

/// Builds `weir-pe-score:{v1,v2,broken}` from `bin` once per process
/// (deploy/build-pe-images.sh).
pub fn pe_images(bin: &str) {
    static BUILT: Mutex<bool> = Mutex::new(false);
    let mut built = BUILT.lock().unwrap_or_else(|p| p.into_inner());
    if *built {
        return;
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/build-pe-images.sh");
    let out = Command::new(&script)
        .env("WEIR_PE_BIN", bin)
        .output()
        .expect("deploy/build-pe-images.sh runs");
    assert!(
        out.status.success(),
        "deploy/build-pe-images.sh failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    *built = true;
}

/// A worker id no other test (or test run on this engine) uses, so orphan clean-up
/// and label filters only ever see this test's containers.
pub fn worker_id(test: &str) -> String {
    format!("ct{}-{test}", std::process::id())
}

/// Runs `docker ARGS` and returns its stdout, panicking with its output on failure.
pub fn docker(args: &[&str]) -> String {
    let o = Command::new("docker")
        .args(args)
        .output()
        .expect("docker runs");
    assert!(
        o.status.success(),
        "docker {args:?}: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Ids of the containers (running or not) labelled with worker `worker`.
pub fn containers_of(worker: &str) -> Vec<String> {
    docker(&[
        "ps",
        "-aq",
        "--no-trunc",
        "--filter",
        &format!("label=weir.worker={worker}"),
    ])
    .lines()
    .map(str::to_string)
    .filter(|l| !l.is_empty())
    .collect()
}

/// `docker inspect` of container `id`, parsed; `None` when it is gone (a container can
/// be removed between listing and inspecting it).
pub fn try_inspect(id: &str) -> Option<serde_json::Value> {
    let o = Command::new("docker")
        .args(["inspect", id])
        .output()
        .expect("docker runs");
    if !o.status.success() {
        return None;
    }
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).ok()?;
    v.get(0).cloned()
}

/// `docker inspect` of container `id`, parsed.
pub fn inspect(id: &str) -> serde_json::Value {
    let text = docker(&["inspect", id]);
    let mut all: serde_json::Value = serde_json::from_str(&text).expect("docker inspect is JSON");
    all[0].take()
}

/// Removes every container of worker `worker` (a test's clean-up, whatever happened).
pub fn remove_all(worker: &str) {
    for id in containers_of(worker) {
        let _ = Command::new("docker").args(["rm", "-f", &id]).output();
    }
}
