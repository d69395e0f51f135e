//! Container PEs against the real Docker Engine of this machine, with the example PE
//! images built FROM scratch from `weir-pe-score` (deploy/build-pe-images.sh).
//!
//! Two levels: the engine alone (a PE's containers started, fed, killed, stopped, and
//! read back with `docker inspect`), then apps through a real master and in-process
//! workers (exact sink counts, a `docker kill` mid-stream, image upgrades under load,
//! a failed start rolled back, a worker killed with SIGKILL leaving nothing behind).
//!
//! Without a Docker Engine each test says so loudly and returns, unless
//! `CI_REQUIRE_DOCKER=1`, where it fails.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use weir_common::record::{Batch, BatchBuilder, Value};
use weir_common::spec::{ContainerNetwork, ContainerParams, PeProtocol, Resources};
use weir_proto::v1 as pb;
use weir_tests::containers::{
    containers_of, docker, docker_or_skip, inspect, pe_images, remove_all, try_inspect, worker_id,
    BROKEN, V1, V2,
};
use weir_tests::registry::{Image, Registry};
use weir_tests::{eventually_within, start_worker_with, Cluster};
use weir_worker::container::ContainerEngine;
use weir_worker::exec::{ExecConfig, ExecPe};

const LIMIT: Duration = Duration::from_secs(240);
const PE_BIN: &str = env!("CARGO_BIN_EXE_weir-pe-score");

/// Skips (loudly) without Docker; builds the images otherwise.
fn ready(test: &str) -> bool {
    if !docker_or_skip(test) {
        return false;
    }
    pe_images(PE_BIN);
    true
}

fn params(image: &str) -> ContainerParams {
    ContainerParams {
        image: image.into(),
        command: vec![],
        env: BTreeMap::new(),
        protocol: PeProtocol::Framed,
        writable_rootfs: false,
        network: ContainerNetwork::None,
    }
}

fn resources() -> Resources {
    Resources {
        cpu: 0.5,
        memory_mb: 64,
        gpu: None,
    }
}

fn quick() -> ExecConfig {
    ExecConfig {
        batch_timeout: Duration::from_secs(60),
        backoff: Duration::from_millis(1),
        max_backoff: Duration::from_millis(5),
        ..ExecConfig::default()
    }
}

fn engine(worker: &str) -> ContainerEngine {
    ContainerEngine::connect("weir-test", worker, BTreeMap::new(), BTreeMap::new()).unwrap()
}

/// Starts PE `pe` of app `app` (tenant `tenant`) in a container of `params`.
async fn start(
    worker: &str,
    tenant: &str,
    pe: &str,
    params: &ContainerParams,
) -> Result<ExecPe, String> {
    let launch = engine(worker).launcher(tenant, "capp", pe, 0, params, &resources(), &[]);
    ExecPe::launch(pe, Arc::new(launch), quick())
        .await
        .map_err(|e| e.to_string())
}

fn ids(from: u64, n: u64) -> Batch {
    let mut b = BatchBuilder::default();
    for id in from..from + n {
        let key = id.to_string();
        b.push(
            1,
            id,
            id as i64,
            key.as_bytes(),
            [("id", &Value::I64(id as i64))],
        )
        .unwrap();
    }
    b.finish()
}

/// Every record scored by rule `factor` (7: v1, 11: v2), origins kept.
fn assert_scored(input: &Batch, output: &Batch, factor: i64, model: &str) {
    assert_eq!(output.len(), input.len());
    for (i, o) in input.iter().zip(output.iter()) {
        assert_eq!((o.source, o.seq, o.key), (i.source, i.seq, i.key));
        let Some(Value::I64(id)) = i.field("id") else {
            panic!("no id")
        };
        assert_eq!(o.field("score"), Some(Value::I64(id * factor % 1000)));
        assert_eq!(o.field("model"), Some(Value::Str(model.into())));
    }
}

/// Removes the worker's containers when the test ends, passed or not.
struct Cleanup(String);

impl Drop for Cleanup {
    fn drop(&mut self) {
        remove_all(&self.0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_container_pe_scores_batches_locked_down_and_is_removed_when_stopped() {
    if !ready("locked_down") {
        return;
    }
    let w = worker_id("locked");
    let _cleanup = Cleanup(w.clone());
    let mut pe = start(&w, "acme", "score@1#0", &params(V1)).await.unwrap();

    let running = containers_of(&w);
    assert_eq!(running.len(), 1, "one container for the PE");
    let c = inspect(&running[0]);
    let h = &c["HostConfig"];
    assert_eq!(h["NanoCpus"], 500_000_000, "cpu 0.5");
    assert_eq!(h["Memory"], 64 << 20, "64 MiB");
    assert_eq!(h["MemorySwap"], 64 << 20, "no swap above the limit");
    assert_eq!(h["ReadonlyRootfs"], true);
    assert_eq!(h["Privileged"], false);
    assert_eq!(h["CapDrop"], serde_json::json!(["ALL"]));
    assert_eq!(h["NetworkMode"], "none");
    assert_eq!(h["PortBindings"].as_object().map_or(0, |m| m.len()), 0);
    assert!(h["SecurityOpt"].to_string().contains("no-new-privileges"));
    let labels = &c["Config"]["Labels"];
    assert_eq!(labels["weir.cluster"], "weir-test");
    assert_eq!(labels["weir.worker"], w.as_str());
    assert_eq!(labels["weir.app"], "capp");
    assert_eq!(labels["weir.pe"], "score@1#0");
    assert_eq!(labels["weir.attempt"], "0");
    assert_eq!(c["State"]["Running"], true);
    let env = c["Config"]["Env"].to_string();
    assert!(env.contains("WEIR_PE_ID=score@1#0") && env.contains("WEIR_TENANT=acme"));

    for k in 0..3 {
        let input = ids(k * 1000, 1000);
        let output = pe.process(&input).await.unwrap();
        assert_scored(&input, &output, 7, "v1");
    }
    assert_eq!(pe.restarts(), 0);
    pe.shutdown().await;
    assert!(containers_of(&w).is_empty(), "the container is removed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_network_pe_joins_its_tenants_internal_network() {
    if !ready("tenant_network") {
        return;
    }
    let w = worker_id("net");
    let _cleanup = Cleanup(w.clone());
    let tenant = format!("ct{}", std::process::id());
    let network = format!("weir-tenant-{tenant}");
    let mut p = params(V1);
    p.network = ContainerNetwork::Tenant;
    let mut pe = start(&w, &tenant, "score@1#0", &p).await.unwrap();
    let c = inspect(&containers_of(&w)[0]);
    assert_eq!(c["HostConfig"]["NetworkMode"], network.as_str());
    let n: serde_json::Value =
        serde_json::from_str(&docker(&["network", "inspect", &network])).unwrap();
    assert_eq!(
        n[0]["Internal"], true,
        "no route out of the tenant's network"
    );
    assert_eq!(n[0]["Labels"]["weir.tenant"], tenant.as_str());
    let input = ids(0, 10);
    assert_scored(&input, &pe.process(&input).await.unwrap(), 7, "v1");
    pe.shutdown().await;
    let _ = docker(&["network", "rm", &network]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_image_that_exits_at_start_fails_the_handshake_with_its_status() {
    if !ready("broken") {
        return;
    }
    let w = worker_id("broken");
    let _cleanup = Cleanup(w.clone());
    let err = start(&w, "acme", "score@1#0", &params(BROKEN))
        .await
        .expect_err("a container that exits at once does not start");
    assert!(err.contains("handshake"), "{err}");
    assert!(err.contains("exit status: 3"), "{err}");
    assert!(err.contains("told to exit with status 3"), "{err}");
    assert!(containers_of(&w).is_empty(), "nothing left behind");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_absent_image_is_refused_naming_it() {
    if !ready("absent") {
        return;
    }
    let w = worker_id("absent");
    let _cleanup = Cleanup(w.clone());
    let err = start(
        &w,
        "acme",
        "score@1#0",
        &params("weir-pe-score:no-such-tag"),
    )
    .await
    .expect_err("no image, no PE");
    assert!(err.contains("weir-pe-score:no-such-tag"), "{err}");
    assert!(err.to_lowercase().contains("no such image"), "{err}");
    assert!(containers_of(&w).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_container_is_replaced_and_its_batch_answered_once() {
    if !ready("killed") {
        return;
    }
    let w = worker_id("killed");
    let _cleanup = Cleanup(w.clone());
    let mut pe = start(&w, "acme", "score@1#0", &params(V1)).await.unwrap();
    let input = ids(0, 100);
    assert_scored(&input, &pe.process(&input).await.unwrap(), 7, "v1");
    let first = containers_of(&w);
    assert_eq!(first.len(), 1);
    docker(&["kill", &first[0]]);
    let input = ids(100, 100);
    let output = pe.process(&input).await.unwrap();
    assert_scored(&input, &output, 7, "v1");
    assert_eq!(pe.restarts(), 1, "one new container");
    let now = containers_of(&w);
    assert_eq!(now.len(), 1, "the killed one is removed: {now:?}");
    assert_ne!(now[0], first[0]);
    pe.shutdown().await;
    assert!(containers_of(&w).is_empty());
}

fn fast(cfg: &mut weir_master::server::MasterConfig) {
    cfg.worker_heartbeat = Duration::from_millis(100);
    cfg.worker_timeout = Duration::from_millis(1500);
    cfg.reconcile_interval = Duration::from_millis(50);
}

fn app_spec(name: &str, records: u64, rate: u64, image: &str) -> String {
    format!(
        r#"
name: {name}
checkpoint_interval_ms: 500
operators:
  - {{name: gen, kind: source.generator, parallelism: 2, params: {{count: {records}, rate: {rate}, keys: 50, payload_bytes: 16}}}}
  - {{name: score, kind: container, parallelism: 2, params: {{image: "{image}"}}, resources: {{cpu: 0.25, memory_mb: 64}}}}
  - {{name: check, kind: sink.verify, params: {{expect: {records}}}}}
streams:
  - {{from: gen, to: score}}
  - {{from: score, to: check, partitioning: round_robin}}
"#
    )
}

struct Rig {
    c: Cluster,
    client: weir_proto::v1::weir_client::WeirClient<tonic::transport::Channel>,
    worker: Option<weir_worker::node::Worker>,
    id: String,
}

impl Rig {
    async fn start(test: &str) -> Self {
        Self::start_pulling(test, &[]).await
    }

    /// A rig whose worker pulls absent images from `registries`.
    async fn start_pulling(test: &str, registries: &[String]) -> Self {
        let c = Cluster::start_tuned(1, fast).await;
        c.leader().await;
        let id = worker_id(test);
        let masters: Vec<_> = c.addrs.values().copied().collect();
        let worker = start_worker_with(&id, &masters, |w| w.pull_from = registries.to_vec()).await;
        let client = c.client(1).await;
        weir_tests::workers_alive(&client, 1, LIMIT).await;
        Self {
            c,
            client,
            worker: Some(worker),
            id,
        }
    }

    async fn submit(&mut self, spec: String) {
        self.client
            .submit_app(weir_tests::submit_yaml(spec))
            .await
            .unwrap();
    }

    async fn detail(&self, app: &str) -> pb::AppDetail {
        weir_tests::app_detail_read(&self.client, app).await
    }

    /// Records the audit has seen so far.
    async fn seen(&self, app: &str) -> u64 {
        weir_tests::audit_records(&self.detail(app).await)
    }

    async fn flowing(&self, app: &str, at_least: u64) {
        eventually_within("records reach the audit", LIMIT, || async {
            (self.seen(app).await >= at_least).then_some(())
        })
        .await;
    }

    /// Waits for every input of `sink.verify` operator `audit` to end and checks it
    /// saw each record once.
    async fn exact(&self, app: &str, audit: &str, records: u64) {
        weir_tests::assert_audit_exact(&self.client, app, audit, records, LIMIT).await;
    }

    async fn upgrade(&mut self, app: &str, spec: String) -> pb::UpgradeOperation {
        let op = self
            .client
            .upgrade_app(weir_tests::upgrade_yaml(app, spec))
            .await
            .unwrap()
            .into_inner()
            .operation_id;
        weir_tests::operation_ended(&self.client, app, &op, LIMIT).await
    }

    async fn stop(mut self) {
        if let Some(w) = self.worker.take() {
            w.stop().await;
        }
        self.c.stop().await;
        remove_all(&self.id);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_container_pe_in_a_running_app_delivers_every_record_once() {
    if !ready("app") {
        return;
    }
    let mut rig = Rig::start("app").await;
    let _cleanup = Cleanup(rig.id.clone());
    let records = 50_000;
    rig.submit(app_spec("capp", records, 100_000, V1)).await;
    rig.exact("capp", "check", records).await;
    let d = rig.detail("capp").await;
    let score: Vec<_> = d
        .pes
        .iter()
        .filter(|p| p.pe.as_ref().is_some_and(|pe| pe.operator == "score"))
        .collect();
    assert_eq!(score.len(), 2);
    let through: u64 = score
        .iter()
        .map(|p| p.stats.as_ref().map_or(0, |s| s.records_out))
        .sum();
    assert_eq!(through, records, "every record went through the containers");
    // Finished: the PEs stop and their containers go.
    eventually_within("the containers are removed", LIMIT, || async {
        containers_of(&rig.id).is_empty().then_some(())
    })
    .await;
    rig.stop().await;
}

/// Removes an image when the test ends, passed or not.
struct RemoveImage(String);

impl Drop for RemoveImage {
    fn drop(&mut self) {
        let _ = std::process::Command::new("docker")
            .args(["rmi", "-f", &self.0])
            .output();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_image_on_a_registry_is_pulled_before_its_pe_counts_as_started() {
    if !ready("pull") {
        return;
    }
    // v1 plus a layer of 3 MB of its own: an image the engine does not hold, served
    // by a registry on loopback that holds that layer back until released.
    let repo = format!("weir-pulled-{}", std::process::id());
    let registry = Registry::serve(&repo, "v1", Image::from_local(V1, 3_000_000)).await;
    let reference = format!("{}/{repo}:v1", registry.host());
    let _image = RemoveImage(reference.clone());
    assert!(
        try_inspect(&reference).is_none(),
        "not held before the test"
    );
    let mut rig = Rig::start_pulling("pull", &[registry.host()]).await;
    let _cleanup = Cleanup(rig.id.clone());
    let workers = rig
        .client
        .list_workers(pb::ListWorkersRequest {})
        .await
        .unwrap()
        .into_inner()
        .workers;
    assert_eq!(
        workers[0]
            .resources
            .clone()
            .unwrap_or_default()
            .pull_registries,
        [registry.host()],
        "the worker says where it pulls from"
    );

    let records = 20_000;
    rig.submit(app_spec("cpull", records, 40_000, &reference))
        .await;
    // Placed although no worker holds the image (this one pulls from its registry),
    // and STARTING, showing the pull, while the layer is held back.
    let pulling = format!("pulling image {reference}");
    eventually_within("both score PEs show the pull", LIMIT, || async {
        let d = rig.detail("cpull").await;
        let score: Vec<&pb::PeView> = d
            .pes
            .iter()
            .filter(|p| p.pe.as_ref().is_some_and(|pe| pe.operator == "score"))
            .collect();
        (score.len() == 2
            && score.iter().all(|p| {
                p.state == pb::PeState::Starting as i32 && p.message.starts_with(&pulling)
            }))
        .then_some(())
    })
    .await;
    assert_eq!(
        rig.seen("cpull").await,
        0,
        "nothing passes a PE still pulling"
    );
    assert!(
        containers_of(&rig.id).is_empty(),
        "no container before the image"
    );

    registry.release();
    rig.exact("cpull", "check", records).await;
    assert!(
        registry.added_layer_served() >= 1,
        "the layer came from the registry"
    );
    assert!(
        try_inspect(&reference).is_some(),
        "the engine holds the pulled image"
    );
    let d = rig.detail("cpull").await;
    assert!(
        d.pes.iter().all(|p| !p.message.starts_with("pulling")),
        "the progress is cleared once pulled: {:?}",
        d.pes
    );
    rig.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pull_the_registry_cannot_serve_fails_with_the_engines_reason() {
    if !ready("pull_fail") {
        return;
    }
    let repo = format!("weir-pull-fail-{}", std::process::id());
    let registry = Registry::serve(&repo, "v1", Image::from_local(V1, 1_000)).await;
    let shown = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let progress = {
        let shown = shown.clone();
        weir_worker::container::Progress::new(move |t| shown.lock().unwrap().push(t))
    };
    let engine = engine(&worker_id("pull_fail")).with_registries(vec![registry.host()]);
    // A tag the registry does not have.
    let absent = format!("{}/{repo}:v2", registry.host());
    let e = engine
        .ensure_image(&absent, Some(&progress))
        .await
        .unwrap_err();
    assert!(e.starts_with(&format!("pull {absent}: ")), "{e}");
    assert!(e.contains("not found") || e.contains("unknown"), "{e}");
    let seen = shown.lock().unwrap().clone();
    assert_eq!(
        seen.first().map(String::as_str),
        Some(&*format!("pulling image {absent}"))
    );
    assert_eq!(
        seen.last().map(String::as_str),
        Some(""),
        "cleared: {seen:?}"
    );
    assert!(try_inspect(&absent).is_none());
    // An image on no registry of the worker's is not pulled (the create call names
    // it when absent), and the registry is not asked.
    let elsewhere = format!("127.0.0.1:1/{repo}:v1");
    engine
        .ensure_image(&elsewhere, Some(&progress))
        .await
        .unwrap();
    assert_eq!(shown.lock().unwrap().len(), seen.len());
    assert_eq!(registry.added_layer_served(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_container_killed_mid_stream_is_recovered_exactly_once() {
    if !ready("kill_app") {
        return;
    }
    let mut rig = Rig::start("kill_app").await;
    let _cleanup = Cleanup(rig.id.clone());
    let records = 200_000;
    rig.submit(app_spec("ckill", records, 40_000, V1)).await;
    rig.flowing("ckill", 20_000).await;
    let victims = containers_of(&rig.id);
    assert_eq!(victims.len(), 2, "two score PEs: {victims:?}");
    docker(&["kill", &victims[0]]);
    rig.exact("ckill", "check", records).await;
    rig.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_image_upgrade_under_load_loses_and_repeats_nothing() {
    if !ready("upgrade") {
        return;
    }
    let mut rig = Rig::start("upgrade").await;
    let _cleanup = Cleanup(rig.id.clone());
    let records = 300_000;
    rig.submit(app_spec("cup", records, 40_000, V1)).await;
    rig.flowing("cup", 20_000).await;
    let before = containers_of(&rig.id);

    let op = rig
        .upgrade("cup", app_spec("cup", records, 40_000, V2))
        .await;
    assert_eq!(op.phase, pb::UpgradePhase::Done as i32, "{op:?}");
    let r = op.result.as_ref().expect("a result");
    assert_eq!((r.records_lost, r.records_duplicated), (0, 0), "{op:?}");
    // The old PEs are stopped when the upgrade is done; their containers are removed
    // as they stop, so one may still be listed (and gone when inspected) for a moment.
    let after = eventually_within("only the two v2 containers remain", LIMIT, || {
        let id = rig.id.clone();
        async move {
            let ids = containers_of(&id);
            let images: Vec<String> = ids
                .iter()
                .filter_map(|c| Some(try_inspect(c)?["Config"]["Image"].as_str()?.to_string()))
                .collect();
            (images.len() == 2 && ids.len() == 2 && images.iter().all(|i| i == V2)).then_some(ids)
        }
    })
    .await;
    assert!(
        after.iter().all(|c| !before.contains(c)),
        "{after:?} {before:?}"
    );
    rig.exact("cup", "check", records).await;
    rig.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_upgrade_to_an_image_that_cannot_start_rolls_back() {
    if !ready("rollback") {
        return;
    }
    let mut rig = Rig::start("rollback").await;
    let _cleanup = Cleanup(rig.id.clone());
    let records = 200_000;
    rig.submit(app_spec("cback", records, 40_000, V1)).await;
    rig.flowing("cback", 10_000).await;

    let op = rig
        .upgrade("cback", app_spec("cback", records, 40_000, BROKEN))
        .await;
    assert_ne!(op.phase, pb::UpgradePhase::Done as i32, "{op:?}");
    let why = format!("{op:?}");
    assert!(
        why.contains("exit status: 3"),
        "the reason is in the history: {why}"
    );
    let d = rig.detail("cback").await;
    assert_eq!(d.summary.as_ref().map(|s| s.version), Some(1), "still v1");
    rig.exact("cback", "check", records).await;
    rig.stop().await;
}

/// The worker half of the SIGKILL test: runs only when the test below starts this
/// test binary again with `WEIR_ORPHAN_MASTER` set, and serves until killed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "started by a_worker_killed_with_sigkill_leaves_no_container_after_restart"]
async fn orphan_worker_process() {
    let (Ok(master), Ok(id)) = (
        std::env::var("WEIR_ORPHAN_MASTER"),
        std::env::var("WEIR_ORPHAN_WORKER"),
    ) else {
        return;
    };
    let master: std::net::SocketAddr = master.parse().unwrap();
    let _worker = start_worker_with(&id, &[master], |_| {}).await;
    std::future::pending::<()>().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_worker_killed_with_sigkill_leaves_no_container_after_restart() {
    if !ready("sigkill") {
        return;
    }
    let c = Cluster::start_tuned(1, fast).await;
    c.leader().await;
    let id = worker_id("sigkill");
    let _cleanup = Cleanup(id.clone());
    let master = c.addrs[&1];
    let mut child = tokio::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "orphan_worker_process",
            "--exact",
            "--ignored",
            "--nocapture",
        ])
        .env("WEIR_ORPHAN_MASTER", master.to_string())
        .env("WEIR_ORPHAN_WORKER", &id)
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let client = c.client(1).await;
    weir_tests::workers_alive(&client, 1, LIMIT).await;
    let mut client2 = client.clone();
    client2
        .submit_app(weir_tests::submit_yaml(app_spec(
            "corphan", 10_000_000, 10_000, V1,
        )))
        .await
        .unwrap();
    eventually_within("both score containers run", LIMIT, || async {
        (containers_of(&id).len() == 2).then_some(())
    })
    .await;

    child.start_kill().unwrap();
    child.wait().await.unwrap();
    // The killed worker removed nothing: its containers are still there.
    assert_eq!(containers_of(&id).len(), 2, "left behind by the kill");

    let masters = [master];
    let again = start_worker_with(&id, &masters, |_| {}).await;
    // Removed before the worker registers again; the master may then place the app's
    // PEs on it anew, in containers of a new attempt.
    let left: Vec<String> = containers_of(&id)
        .into_iter()
        .filter(|c| inspect(c)["Config"]["Labels"]["weir.attempt"] == "0")
        .collect();
    assert!(
        left.is_empty(),
        "the killed run's containers are gone: {left:?}"
    );
    again.stop().await;
    c.stop().await;
}

/// An app whose `score` operator is `score` (a YAML flow mapping), with `extra`
/// operators and the streams `streams`.
fn custom_spec(
    name: &str,
    records: u64,
    score: &str,
    extra: &[String],
    streams: &[&str],
) -> String {
    let mut s = format!(
        r#"
name: {name}
checkpoint_interval_ms: 500
operators:
  - {{name: gen, kind: source.generator, parallelism: 2, params: {{count: {records}, rate: 20000, keys: 50, payload_bytes: 16}}}}
  - {score}
  - {{name: check, kind: sink.verify, params: {{expect: {records}}}}}
"#
    );
    for e in extra {
        s.push_str(&format!("  - {e}\n"));
    }
    s.push_str("streams:\n");
    for st in streams {
        s.push_str(&format!("  - {st}\n"));
    }
    s
}

/// Container operators go through every kind of upgrade while records flow: moved to
/// `exec` and back, rescaled with new env and resources, and a container PE inserted
/// into a stream; each upgrade loses and repeats nothing, and neither does the whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn container_operators_take_every_kind_of_upgrade_under_load() {
    if !ready("kinds") {
        return;
    }
    let mut rig = Rig::start("kinds").await;
    let _cleanup = Cleanup(rig.id.clone());
    // Enough to outlast the three upgrades (about 2 s each here) on a loaded machine.
    let records = 400_000;
    let started = std::time::Instant::now();
    let plain = [
        "{from: gen, to: score, partitioning: hash}",
        "{from: score, to: check, partitioning: round_robin}",
    ];
    let container = format!(
        "{{name: score, kind: container, parallelism: 2, params: {{image: \"{V1}\"}}, resources: {{cpu: 0.25, memory_mb: 64}}}}"
    );
    rig.submit(custom_spec("kinds", records, &container, &[], &plain))
        .await;
    rig.flowing("kinds", 20_000).await;

    let mut versions = vec![];
    // container -> exec: the same program as a local process.
    let exec = format!(
        "{{name: score, kind: exec, parallelism: 2, params: {{command: [\"{PE_BIN}\"], protocol: framed}}}}"
    );
    versions.push(custom_spec("kinds", records, &exec, &[], &plain));
    // exec -> container, rescaled 2 -> 3, with new env and resources.
    let rescaled = format!(
        "{{name: score, kind: container, parallelism: 3, params: {{image: \"{V1}\", env: {{WEIR_SCORE_MODEL: v2}}}}, resources: {{cpu: 0.3, memory_mb: 80}}}}"
    );
    versions.push(custom_spec("kinds", records, &rescaled, &[], &plain));
    // A container PE inserted between score and check.
    let inserted = vec![format!(
        "{{name: tag, kind: container, parallelism: 1, params: {{image: \"{V2}\"}}, resources: {{cpu: 0.25, memory_mb: 64}}}}"
    )];
    let through_tag = [
        "{from: gen, to: score, partitioning: hash}",
        "{from: score, to: tag, partitioning: round_robin}",
        "{from: tag, to: check}",
    ];
    versions.push(custom_spec(
        "kinds",
        records,
        &rescaled,
        &inserted,
        &through_tag,
    ));

    for (i, spec) in versions.into_iter().enumerate() {
        let op = rig.upgrade("kinds", spec).await;
        eprintln!("upgrade {i} done at {:?}", started.elapsed());
        assert_eq!(
            op.phase,
            pb::UpgradePhase::Done as i32,
            "upgrade {i}: {op:?}"
        );
        let r = op.result.as_ref().expect("a result");
        assert_eq!(
            (r.records_lost, r.records_duplicated),
            (0, 0),
            "upgrade {i}: {op:?}"
        );
        let images = || {
            // A container removed between the listing and its inspection is gone.
            let mut images: Vec<(String, u64, i64)> = containers_of(&rig.id)
                .iter()
                .filter_map(|c| {
                    let c = try_inspect(c)?;
                    Some((
                        c["Config"]["Image"].as_str().unwrap_or("").to_string(),
                        c["HostConfig"]["Memory"].as_u64().unwrap_or(0),
                        c["HostConfig"]["NanoCpus"].as_i64().unwrap_or(0),
                    ))
                })
                .collect();
            images.sort();
            images
        };
        let expected: Vec<(String, u64, i64)> = match i {
            0 => vec![],
            1 => vec![(V1.into(), 80 << 20, 300_000_000); 3],
            _ => {
                let mut e = vec![(V1.into(), 80 << 20, 300_000_000); 3];
                e.push((V2.into(), 64 << 20, 250_000_000));
                e
            }
        };
        let mut expected = expected;
        expected.sort();
        // The upgrade completes once no worker reports the drained PEs; their
        // containers are removed right after, through the Docker Engine.
        let deadline = std::time::Instant::now() + LIMIT;
        while images() != expected && std::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(images(), expected, "the containers after upgrade {i}");
    }
    rig.exact("kinds", "check", records).await;
    eprintln!("every record at the sink at {:?}", started.elapsed());
    rig.stop().await;
}

/// An operator generated from the example `scorer` template and a registered base
/// image runs as a container PE on a real worker: every record once, scored by the
/// model the template's parameter chose.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_template_generated_operator_runs_in_its_container() {
    if !ready("template") {
        return;
    }
    let mut rig = Rig::start("template").await;
    let _cleanup = Cleanup(rig.id.clone());
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    rig.client
        .register_base_image(pb::RegisterBaseImageRequest {
            image: Some(pb::BaseImage {
                name: "pe-cpu".into(),
                image: V1.into(),
                scenario: "inference".into(),
                vendor: "none".into(),
                framework: "none".into(),
                description: "the example scorer".into(),
            }),
        })
        .await
        .unwrap();
    rig.client
        .add_template(pb::AddTemplateRequest {
            text: std::fs::read_to_string(root.join("examples/templates/scorer.yaml")).unwrap(),
            format: pb::SpecFormat::Yaml as i32,
        })
        .await
        .unwrap();
    let records = 20_000;
    let spec = std::fs::read_to_string(root.join("examples/templates/app-scores.yaml"))
        .unwrap()
        .replace("count: 1000", &format!("count: {records}"))
        .replace("expect: 1000", &format!("expect: {records}"));
    rig.submit(spec).await;
    // A container may end and be removed between `docker ps` and `docker inspect`
    // (the app can finish quickly): inspect what is still there, and keep the first
    // one of the app seen.
    let c = eventually_within("the template's container runs", LIMIT, || async {
        containers_of(&rig.id)
            .iter()
            .filter_map(|c| try_inspect(c))
            .find(|c| c["Config"]["Labels"]["weir.app"] == "scores")
    })
    .await;
    assert_eq!(c["Config"]["Image"], V1);
    let env = c["Config"]["Env"].to_string();
    assert!(
        env.contains("WEIR_SCORE_MODEL=v2"),
        "the template's parameter: {env}"
    );
    assert_eq!(
        c["HostConfig"]["Memory"],
        64 << 20,
        "the template's resources"
    );
    rig.exact("scores", "out", records).await;
    rig.stop().await;
}

/// With `network: none` (the default) a container reaches none of the host's ports,
/// though a container on Docker's default bridge reaches the same listener (the
/// control: the probe works). The probe is `weir-pe-score` with `WEIR_SCORE_PROBE`: it
/// exits with status 7 when a connection opens, so a container that starts normally
/// reached nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn network_none_keeps_a_container_off_the_hosts_ports() {
    if !ready("isolation") {
        return;
    }
    let w = worker_id("isolation");
    let _cleanup = Cleanup(w.clone());
    // Accepted by the kernel without an accept call: enough for a connect to succeed.
    let listener = std::net::TcpListener::bind("0.0.0.0:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    // The host as containers see it: the default bridge's gateway (docker0).
    let gateway = std::process::Command::new("ip")
        .args(["-4", "-o", "addr", "show", "docker0"])
        .output()
        .ok()
        .and_then(|o| {
            let text = String::from_utf8_lossy(&o.stdout).into_owned();
            let addr = text
                .split_whitespace()
                .skip_while(|t| *t != "inet")
                .nth(1)?;
            Some(addr.split('/').next()?.to_string())
        })
        .unwrap_or_else(|| "172.17.0.1".into());
    let target = format!("{gateway}:{port}");

    let control = std::process::Command::new("docker")
        .args(["run", "--rm", "-i", "--network", "bridge", "-e"])
        .arg(format!("WEIR_SCORE_PROBE={target}"))
        .arg(V1)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert_eq!(
        control.status.code(),
        Some(7),
        "a container on the default bridge reaches {target} (the probe works): {}",
        String::from_utf8_lossy(&control.stderr)
    );

    let mut p = params(V1);
    p.env.insert("WEIR_SCORE_PROBE".into(), target.clone());
    let mut pe = start(&w, "acme", "score@1#0", &p)
        .await
        .unwrap_or_else(|e| panic!("with network none, {target} is out of reach: {e}"));
    let input = ids(0, 10);
    assert_scored(&input, &pe.process(&input).await.unwrap(), 7, "v1");
    pe.shutdown().await;
    drop(listener);
}
