//! `weirctl demo`: Weir end to end in one process, no setup.
//!
//! Starts an embedded master (a one-voter Raft cluster in a temporary data dir, real
//! gRPC on a loopback port), then drives it exactly as a user would through the client
//! API: submit the clickstream example, show it, plan its online upgrade to v2, show
//! the cluster, restart the master from its data dir and show the app survived.
//! Workers and the data plane join this demo when they land.

use crate::online::{self, Conn};
use crate::Output;
use std::collections::BTreeMap;
use std::path::Path;
use weir_master::server::{Master, MasterConfig};

async fn start(dir: &Path, listener: tokio::net::TcpListener) -> anyhow::Result<Master> {
    let addr = listener.local_addr()?.to_string();
    let cfg = MasterConfig::new(1, dir.to_path_buf(), BTreeMap::from([(1, addr)]));
    Ok(Master::start_on(cfg, listener).await?)
}

fn step(title: &str) {
    println!("\n=== {title}");
}

/// Runs the demo; `examples` is where the example specs are.
pub fn run(examples: &Path) -> anyhow::Result<bool> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async {
        let dir = tempfile::tempdir()?;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        step(&format!("starting an embedded master on {addr} (data in {})", dir.path().display()));
        let master = start(dir.path(), listener).await?;
        let conn = Conn::new(vec![addr.to_string()], Output::Text);
        online::cluster_status(&conn).await?;

        let v1 = examples.join("clickstream.yaml");
        let v2 = examples.join("clickstream-v2.yaml");
        step("weirctl submit examples/clickstream.yaml");
        online::submit(&conn, &v1.to_string_lossy()).await?;
        step("weirctl get clickstream");
        online::get(&conn, "clickstream").await?;
        step("weirctl upgrade clickstream examples/clickstream-v2.yaml --dry-run");
        online::upgrade(&conn, "clickstream", &v2.to_string_lossy(), true).await?;

        step("restarting the master from its data dir");
        master.stop().await;
        let listener = crate::demo::rebind(addr).await?;
        let master = start(dir.path(), listener).await?;
        online::list(&conn, None).await?;
        master.stop().await;
        println!("\nDone: the app and its version were committed through Raft, fsynced, and survived a restart.");
        Ok(true)
    })
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
