//! Workers report the images their real Docker Engine holds; the masters store them,
//! `ListWorkers` shows them, and placement keeps a container PE whose image no worker
//! holds pending, saying why.
//!
//! Needs Docker (it builds a tiny `FROM scratch` image); without it the test skips
//! loudly, or fails when `CI_REQUIRE_DOCKER=1`.

use std::path::Path;
use std::process::Command;
use weir_proto::v1 as pb;
use weir_tests::containers::docker_or_skip;
use weir_tests::{app_detail, eventually, eventually_within, start_worker, Cluster};

const PROBE: &str = "weir-test-images:probe";
const PROBE2: &str = "weir-test-images:probe2";

fn docker(args: &[&str]) -> String {
    let o = Command::new("docker").args(args).output().unwrap();
    assert!(
        o.status.success(),
        "docker {args:?}: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

/// Removes the test's tags however the test ends.
struct Cleanup;

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = Command::new("docker")
            .args(["rmi", "-f", PROBE, PROBE2])
            .output();
    }
}

/// Builds [`PROBE`] from one small file; answers its id and size.
fn build_probe(dir: &Path) -> (String, u64) {
    // Unique content: a stale image from an earlier run cannot pass for this one.
    let nonce = format!("{:?} {}", std::time::SystemTime::now(), std::process::id());
    std::fs::write(dir.join("probe.txt"), nonce).unwrap();
    std::fs::write(
        dir.join("Dockerfile"),
        "FROM scratch\nCOPY probe.txt /probe.txt\n",
    )
    .unwrap();
    docker(&["build", "-q", "-t", PROBE, dir.to_str().unwrap()]);
    let out = docker(&["image", "inspect", "--format", "{{.Id}} {{.Size}}", PROBE]);
    let (id, size) = out.split_once(' ').unwrap();
    (id.to_string(), size.parse().unwrap())
}

async fn images_of(
    client: &pb::weir_client::WeirClient<tonic::transport::Channel>,
    worker: &str,
) -> Option<Vec<pb::DockerImage>> {
    let ws = client
        .clone()
        .list_workers(pb::ListWorkersRequest {})
        .await
        .ok()?
        .into_inner()
        .workers;
    Some(
        ws.into_iter()
            .find(|w| w.worker_id == worker)?
            .resources?
            .images,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn workers_report_the_images_docker_holds_and_placement_uses_them() {
    if !docker_or_skip("workers_report_the_images_docker_holds_and_placement_uses_them") {
        return;
    }
    let _cleanup = Cleanup;
    let dir = tempfile::tempdir().unwrap();
    let (id, size) = build_probe(dir.path());

    // The worker's own listing, through bollard.
    let listed = weir_worker::images::list_local().await.unwrap();
    let probe = listed
        .iter()
        .find(|i| i.tags.iter().any(|t| t == PROBE))
        .unwrap_or_else(|| panic!("{PROBE} not among the listed images: {listed:?}"));
    assert_eq!((probe.id.as_str(), probe.size_bytes), (id.as_str(), size));

    // Reported to the masters, stored, and shown by ListWorkers.
    let c = Cluster::start(1).await;
    let masters: Vec<_> = c.addrs.values().copied().collect();
    let w = start_worker("w1", &masters).await;
    let client = c.client(c.leader().await).await;
    let shown = eventually("w1 reports the probe image", || async {
        images_of(&client, "w1")
            .await?
            .into_iter()
            .find(|i| i.tags.iter().any(|t| t == PROBE))
    })
    .await;
    assert_eq!((shown.id.as_str(), shown.size_bytes), (id.as_str(), size));

    // A new tag shows up at the next refresh (the heartbeat carries the changed list).
    docker(&["tag", PROBE, PROBE2]);
    eventually_within(
        "w1 reports the new tag",
        weir_worker::images::REFRESH + weir_tests::DEADLINE,
        || async {
            images_of(&client, "w1")
                .await?
                .into_iter()
                .find(|i| i.id == id && i.tags.iter().any(|t| t == PROBE2))
        },
    )
    .await;

    // A container PE whose image no worker holds waits, and says why.
    let spec = "name: absent\noperators:\n  - {name: gen, kind: source.generator, params: {count: 10}}\n  - {name: enrich, kind: container, params: {image: \"weir-test-images:absent\"}}\n  - {name: out, kind: sink.null}\nstreams:\n  - {from: gen, to: enrich}\n  - {from: enrich, to: out}\n";
    client
        .clone()
        .submit_app(pb::SubmitAppRequest {
            spec: spec.into(),
            format: pb::SpecFormat::Yaml as i32,
            request_id: String::new(),
            signature: None,
        })
        .await
        .unwrap();
    let why = eventually("the reason the app is not placed", || async {
        let d = app_detail(&mut client.clone(), "absent").await?;
        Some(d.unplaced_reason).filter(|w| !w.is_empty())
    })
    .await;
    assert!(
        why.contains(r#"image "weir-test-images:absent" is on no alive worker"#),
        "{why}"
    );
    w.stop().await;
    c.stop().await;
}
