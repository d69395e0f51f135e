//! `weirctl demo`: Weir end to end in one process, no setup.
//!
//! Starts an embedded master (a one-voter Raft cluster in a temporary data dir, real
//! gRPC on a loopback port) and two workers (real control services, real TCP links
//! between them), then drives them exactly as a user would through the client API:
//! submit the clickstream example, watch its records flow (records/s per operator),
//! upgrade it online to v2 midway (plan, progress per phase, summary), end with the
//! `sink.verify` summary, restart the master from its data dir and show the app
//! survived.

use crate::online::{self, Conn, Repeat};
use crate::Output;
use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};
use weir_master::server::{Master, MasterConfig};
use weir_proto::v1 as pb;
use weir_proto::v1::weir_client::WeirClient;
use weir_security::ca::{file_stem, DevCa};
use weir_security::{Principal, Security, TlsFiles};
use weir_worker::agent::AgentConfig;
use weir_worker::node::Worker;

/// The demo's certificates: a CA of its own and one certificate per node and user,
/// as `weirctl certs init` makes them.
struct Certs(tempfile::TempDir);

impl Certs {
    fn make() -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        DevCa::generate("demo")?.write(
            dir.path(),
            &[
                Principal::Master(1),
                Principal::Worker("w1".into()),
                Principal::Worker("w2".into()),
                Principal::Tenant("web".into()),
                Principal::Tenant("mobile".into()),
                Principal::Admin("admin".into()),
            ],
        )?;
        Ok(Self(dir))
    }

    fn of(&self, who: &Principal) -> anyhow::Result<Security> {
        let files = TlsFiles::in_dir(self.0.path(), &file_stem(who));
        Ok(Security::load(Some(&files))?)
    }
}

async fn start(
    dir: &Path,
    listener: tokio::net::TcpListener,
    security: Security,
) -> anyhow::Result<Master> {
    let addr = listener.local_addr()?.to_string();
    let mut cfg = MasterConfig::new(1, dir.to_path_buf(), BTreeMap::from([(1, addr)]));
    cfg.node.security = security;
    cfg.worker_heartbeat = Duration::from_millis(200);
    Ok(Master::start_on(cfg, listener).await?)
}

async fn start_worker(
    id: &str,
    master: std::net::SocketAddr,
    security: Security,
) -> anyhow::Result<Worker> {
    let control = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let data = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let cfg = AgentConfig {
        worker_id: id.into(),
        masters: vec![master.to_string()],
        control_address: control.local_addr()?.to_string(),
        data_address: data.local_addr()?.to_string(),
        labels: BTreeMap::new(),
        pools: vec![],
        cluster_id: "weir".into(),
        cores: Some(8.0),
        memory_mb: Some(8192),
        declared_gpus: vec![],
        discover_nvml: true,
        checkpoint_dir: None,
        security,
        push_progress: true,
        defer_snapshot_from: weir_worker::ops::window::DEFER_FROM,

        pull_from: Vec::new(),
    };
    Ok(Worker::start_on(cfg, control, data).await?)
}

/// Prints progress once a second until the app finished (or, with `until`, until that
/// fraction of the expected records was verified).
async fn watch_progress(
    conn: &Conn,
    app: &str,
    limit: Duration,
    until: Option<f64>,
) -> anyhow::Result<()> {
    let start = Instant::now();
    loop {
        let detail = conn
            .call(Repeat::Safe, |ch| async move {
                WeirClient::new(ch)
                    .get_app(pb::GetAppRequest { app: app.into() })
                    .await
            })
            .await?
            .into_inner()
            .app
            .unwrap_or_default();
        let mut rates: BTreeMap<String, f64> = BTreeMap::new();
        for p in &detail.pes {
            let op =
                p.pe.as_ref()
                    .map(|r| r.operator.clone())
                    .unwrap_or_default();
            *rates.entry(op).or_default() +=
                p.stats.as_ref().map_or(0.0, |s| s.rate_in.max(s.rate_out));
        }
        let verify: Vec<pb::VerifySummary> = detail.pes.iter().filter_map(|p| p.verify).collect();
        let distinct: u64 = verify.iter().map(|v| v.distinct).sum();
        let expected: u64 = verify.iter().filter_map(|v| v.expected).sum();
        let rates: Vec<String> = rates
            .iter()
            .map(|(op, r)| format!("{op} {:.0}k/s", r / 1000.0))
            .collect();
        println!(
            "  {:>4.1}s  verified {distinct:>9} of {expected}  |  {}",
            start.elapsed().as_secs_f64(),
            rates.join("  ")
        );
        // To the end means finished: every source ran out, every PE drained and stopped,
        // and the master recorded the final counts (so the restart below finds it so).
        let finished = detail
            .summary
            .as_ref()
            .is_some_and(|s| s.state == pb::AppState::Finished as i32);
        if finished {
            println!("  app finished: every source ran out and every PE stopped");
            return Ok(());
        }
        if until.is_some_and(|f| expected > 0 && distinct as f64 >= f * expected as f64) {
            return Ok(());
        }
        if start.elapsed() > limit {
            anyhow::bail!("the app did not finish within {limit:?}");
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

fn step(title: &str) {
    println!("\n=== {title}");
}

/// Runs the demo; `examples` is where the example specs are.
pub fn run(examples: &Path) -> anyhow::Result<bool> {
    // The master's and workers' logs, which run here, on stderr when asked for
    // (`RUST_LOG=info`, as `weir-master` and `weir-worker` read it); else none, so the
    // demo's own lines stay readable.
    match tracing_subscriber::EnvFilter::try_from_default_env() {
        Ok(filter) => {
            let _ = tracing_subscriber::fmt()
                .with_env_filter(filter)
                .with_writer(std::io::stderr)
                .try_init();
        }
        Err(e) if std::env::var_os("RUST_LOG").is_some() => {
            eprintln!("RUST_LOG ignored: {e}");
        }
        Err(_) => {}
    }
    // The workers below run in this process: as `weir-worker` does.
    weir_worker::memory::no_transparent_huge_pages();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async {
        let dir = tempfile::tempdir()?;
        let certs = Certs::make()?;
        step(&format!(
            "weirctl certs init {}: a CA and certificates for master 1, workers w1 and w2, tenants web and mobile, and an admin",
            certs.0.path().display()
        ));
        println!("  every link below is mutual TLS; who calls is read from their certificate");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        step(&format!("starting an embedded master on {addr} (data in {})", dir.path().display()));
        let master_security = certs.of(&Principal::Master(1))?;
        let master = start(dir.path(), listener, master_security.clone()).await?;
        // The admin sees the cluster; the app belongs to tenant web, who drives it.
        let admin = Conn::new(vec![addr.to_string()], Output::Text, certs.of(&Principal::Admin("admin".into()))?);
        let (web_key, _) = weir_security::sign::Signer::generate()?;
        let web_key_id = web_key.key_id();
        let web_public = web_key.public_key().to_vec();
        let unsigned = Conn::new(vec![addr.to_string()], Output::Text, certs.of(&Principal::Tenant("web".into()))?);
        let conn = Conn::new(vec![addr.to_string()], Output::Text, certs.of(&Principal::Tenant("web".into()))?)
            .with_signer(Some(web_key));
        show_cluster(&admin).await?;
        step("starting two workers in this process");
        let workers = [
            start_worker("w1", addr, certs.of(&Principal::Worker("w1".into()))?).await?,
            start_worker("w2", addr, certs.of(&Principal::Worker("w2".into()))?).await?,
        ];
        wait_for_workers(&admin, workers.len()).await?;
        online::workers(&admin).await?;

        let v1 = examples.join("clickstream.yaml");
        let v2 = examples.join("clickstream-v2.yaml");
        step(&format!(
            "weirctl tenant put web --public-key tenant-web.sign.pub --file-root /tmp (as admin): tenant web signs its specs with key {web_key_id}, and its apps may write files under /tmp"
        ));
        let policy = pb::PutTenantRequest {
            tenant: "web".into(),
            policy: Some(pb::TenantPolicy {
                keys: vec![pb::SigningKey {
                    id: web_key_id.clone(),
                    public_key: web_public.into(),
                }],
                require_signature: true,
                capabilities: Some(pb::Capabilities {
                    file_root: "/tmp".into(),
                    ..Default::default()
                }),
            }),
        };
        admin
            .call(Repeat::Safe, |ch| {
                let req = policy.clone();
                async move { WeirClient::new(ch).put_tenant(req).await }
            })
            .await?;
        match online::submit(&unsigned, &v1.to_string_lossy()).await {
            Ok(()) => anyhow::bail!("an unsigned spec of tenant web was accepted"),
            Err(e) => println!("  weirctl submit (unsigned): {e:#}"),
        }
        step("weirctl submit --sign-key tenant-web.sign.key examples/clickstream.yaml");
        online::submit(&conn, &v1.to_string_lossy()).await?;
        step("records flowing: generator -> parse -> key_by -> window.count -> sink, audited by sink.verify");
        // Upgraded after a tenth of the stream: the source is bounded, and an upgrade
        // whose prepare outlasts it rolls back (nothing left to switch). A debug build
        // beside a busy core took 6-8 s to prepare (2026-12-05), longer than the 70%
        // left after the 30% it used to wait for, and 8-10 s on 2026-12-06, longer
        // than the 9 s a 200,000 records/s source had left: the example's source runs
        // at 100,000 records/s since (20 s in all).
        watch_progress(&conn, "clickstream", Duration::from_secs(600), Some(0.1)).await?;
        step("weirctl upgrade clickstream examples/clickstream-v2.yaml (online, records keep flowing)");
        crate::upgrade::upgrade(&conn, "clickstream", &v2.to_string_lossy(), false).await?;
        step("v2 runs: records keep flowing to the end");
        watch_progress(&conn, "clickstream", Duration::from_secs(600), None).await?;
        step("weirctl get clickstream");
        online::get(&conn, "clickstream").await?;
        step("weirctl history clickstream");
        crate::upgrade::history(&conn, "clickstream").await?;
        step("tenant mobile asks for tenant web's app: refused");
        let mobile = Conn::new(vec![addr.to_string()], Output::Text, certs.of(&Principal::Tenant("mobile".into()))?);
        match online::get(&mobile, "clickstream").await {
            Ok(_) => anyhow::bail!("tenant mobile was shown tenant web's app"),
            Err(e) => println!("  weirctl (as tenant mobile) get clickstream: {e:#}"),
        }

        step("restarting the master from its data dir");
        master.stop().await;
        let listener = crate::demo::rebind(addr).await?;
        let master = start(dir.path(), listener, master_security).await?;
        online::list(&conn, None).await?;
        for w in workers {
            w.stop().await;
        }
        master.stop().await;
        println!("\nDone: every record of the app reached its sinks exactly once across two workers, through an online upgrade to v2 midway; the app and its versions were committed through Raft, fsynced, and survived a restart.");
        Ok(true)
    })
}

/// How long the embedded master may take to elect itself: moments normally, far more
/// on a loaded machine, never this long unless something is broken.
const LEADER_WITHIN: Duration = Duration::from_secs(60);

/// Prints the cluster status once the embedded master leads: asked at once it answers
/// before its first election ends (`leader none  term 0`, no members), which is no
/// way to start a demo.
async fn show_cluster(conn: &Conn) -> anyhow::Result<pb::ClusterStatusResponse> {
    let s = online::wait_for_leader(conn, LEADER_WITHIN).await?;
    online::print_cluster_status(conn, &s);
    Ok(s)
}

async fn wait_for_workers(conn: &Conn, n: usize) -> anyhow::Result<()> {
    let start = Instant::now();
    loop {
        let ws = conn
            .call(Repeat::Safe, |ch| async move {
                WeirClient::new(ch)
                    .list_workers(pb::ListWorkersRequest {})
                    .await
            })
            .await?
            .into_inner()
            .workers;
        if ws.len() >= n {
            return Ok(());
        }
        if start.elapsed() > Duration::from_secs(30) {
            anyhow::bail!("workers did not register");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Binds `addr` again once the old server has let go of it.
pub async fn rebind(addr: std::net::SocketAddr) -> anyhow::Result<tokio::net::TcpListener> {
    let start = std::time::Instant::now();
    loop {
        match tokio::net::TcpListener::bind(addr).await {
            Ok(l) => return Ok(l),
            Err(e) if start.elapsed() > std::time::Duration::from_secs(10) => return Err(e.into()),
            Err(_) => tokio::time::sleep(std::time::Duration::from_millis(50)).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The demo's first status shows the embedded master as leader, however soon after
    /// its start it is asked.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_first_status_shows_a_leader_and_its_members() {
        let dir = tempfile::tempdir().unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let master = start(dir.path(), listener, Security::Off).await.unwrap();
        let conn = Conn::new(vec![addr.to_string()], Output::Text, Security::Off);
        let s = show_cluster(&conn).await.unwrap();
        assert_eq!(s.leader_id, Some(1), "{s:?}");
        assert!(s.term >= 1, "{s:?}");
        assert_eq!(s.members.len(), 1, "{s:?}");
        assert_eq!(s.members[0].address, addr.to_string());
        master.stop().await;
    }
}
