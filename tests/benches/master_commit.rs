//! Master benchmark: submits against 3 masters (real Raft, real gRPC on loopback,
//! fsync on every log write), and leader failover time.
//!
//! Prints throughput, p50/p99 commit latency (client-observed SubmitApp round trip),
//! failover times, and a baseline measured in the same run: one fsynced redb commit
//! on the same disk, the floor under any durable commit.
//!
//! `cargo bench -p weir-tests --bench master_commit` (env: WEIR_BENCH_SUBMITS,
//! WEIR_BENCH_CLIENTS).

use std::time::{Duration, Instant};
use weir_proto::v1 as pb;
use weir_tests::{submit, Cluster};

fn pct(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn fsync_baseline(dir: &std::path::Path) -> Vec<Duration> {
    let db = redb::Database::create(dir.join("baseline.redb")).unwrap();
    let table: redb::TableDefinition<u64, &[u8]> = redb::TableDefinition::new("t");
    let mut out = Vec::new();
    for i in 0..200u64 {
        let start = Instant::now();
        let tx = db.begin_write().unwrap();
        {
            let mut t = tx.open_table(table).unwrap();
            t.insert(i, [7u8; 512].as_slice()).unwrap();
        }
        tx.commit().unwrap();
        out.push(start.elapsed());
    }
    out.sort();
    out
}

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let total = env("WEIR_BENCH_SUBMITS", 4000);
    let clients = env("WEIR_BENCH_CLIENTS", 32);
    let mut c = Cluster::start(3).await;
    let baseline = fsync_baseline(c.dir.path());
    let leader = c.leader().await;

    // Throughput and latency: `clients` concurrent submitters against the leader.
    let per = total / clients;
    let start = Instant::now();
    let mut tasks = Vec::new();
    for k in 0..clients {
        let mut client = c.client(leader).await;
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::with_capacity(per);
            for i in 0..per {
                let t = Instant::now();
                client
                    .submit_app(submit(&format!("b-{k}-{i}")))
                    .await
                    .expect("submit");
                lat.push(t.elapsed());
            }
            lat
        }));
    }
    let mut lat = Vec::new();
    for t in tasks {
        lat.extend(t.await.unwrap());
    }
    let elapsed = start.elapsed();
    lat.sort();
    let n = lat.len();

    // Through a follower (one forwarding hop), sequential, for latency only.
    let mut via = c.client(c.other_than(leader)).await;
    let mut fwd = Vec::new();
    for i in 0..200 {
        let t = Instant::now();
        via.submit_app(submit(&format!("f-{i}")))
            .await
            .expect("submit via follower");
        fwd.push(t.elapsed());
    }
    fwd.sort();

    // Failover: kill the leader, time until a write succeeds through a survivor.
    let mut failovers = Vec::new();
    for round in 0..3 {
        let old = c.leader().await;
        let survivor = c.other_than(old);
        let mut client = c.client(survivor).await;
        let t = Instant::now();
        c.kill(old).await;
        let mut i = 0;
        loop {
            let mut req = tonic::Request::new(submit(&format!("fo-{round}-{i}")));
            req.set_timeout(Duration::from_millis(500));
            if client.submit_app(req).await.is_ok() {
                break;
            }
            i += 1;
            assert!(
                t.elapsed() < Duration::from_secs(30),
                "no new leader within 30 s"
            );
        }
        failovers.push(t.elapsed());
        c.restart(old).await;
        // Let the restarted master catch up before the next round.
        let apps = c
            .client(survivor)
            .await
            .list_apps(pb::ListAppsRequest::default())
            .await
            .unwrap()
            .into_inner()
            .apps
            .len();
        weir_tests::eventually("catch-up", || async {
            (c.local_apps(old).await.len() == apps).then_some(())
        })
        .await;
    }

    println!("master commit benchmark: 3 masters on loopback, fsync on every log write");
    println!(
        "baseline: one fsynced redb commit: p50 {:.2} ms, p99 {:.2} ms",
        ms(pct(&baseline, 0.5)),
        ms(pct(&baseline, 0.99))
    );
    println!(
        "submits to the leader: {n} with {clients} clients in {:.2} s = {:.0} submits/s",
        elapsed.as_secs_f64(),
        n as f64 / elapsed.as_secs_f64()
    );
    println!(
        "commit latency: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms (p50 = {:.1}x one local fsync)",
        ms(pct(&lat, 0.5)),
        ms(pct(&lat, 0.99)),
        ms(lat[n - 1]),
        pct(&lat, 0.5).as_secs_f64() / pct(&baseline, 0.5).as_secs_f64()
    );
    println!(
        "through a follower (sequential): p50 {:.2} ms, p99 {:.2} ms",
        ms(pct(&fwd, 0.5)),
        ms(pct(&fwd, 0.99))
    );
    let fo: Vec<String> = failovers
        .iter()
        .map(|d| format!("{:.0} ms", ms(*d)))
        .collect();
    println!(
        "leader failover (kill -> first successful write): {}",
        fo.join(", ")
    );
    c.stop().await;
}
