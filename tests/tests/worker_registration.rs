//! Workers join real masters, follow the leader through a failover, and are marked lost
//! when they stop.

use std::time::Duration;
use weir_proto::v1 as pb;
use weir_tests::{eventually, Cluster};
use weir_worker::agent::{Agent, AgentConfig};

fn agent(c: &Cluster, id: &str, masters: Vec<String>) -> Agent {
    let _ = c;
    Agent::spawn(AgentConfig {
        worker_id: id.into(),
        masters,
        control_address: format!("127.0.0.1:1{}", &id[1..]),
        data_address: format!("127.0.0.1:2{}", &id[1..]),
        labels: [("scenario".to_string(), "inference".to_string())].into(),
        pools: vec!["inference".into()],
        cluster_id: "weir".into(),
        cores: Some(4.0),
        memory_mb: Some(8192),
        declared_gpus: vec!["nvidia:test:16384:GPU-A".parse().unwrap()],
        discover_nvml: false,
        checkpoint_dir: None,
        security: weir_security::Security::Off,
        push_progress: true,
        defer_snapshot_from: weir_worker::ops::window::DEFER_FROM,

        pull_from: Vec::new(),
    })
}

async fn worker_state(c: &Cluster, via: u64, id: &str) -> Option<(i32, u64)> {
    let mut client = c.client(via).await;
    let ws = client
        .list_workers(pb::ListWorkersRequest {})
        .await
        .ok()?
        .into_inner()
        .workers;
    ws.into_iter()
        .find(|w| w.worker_id == id)
        .map(|w| (w.state, w.incarnation))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn workers_register_follow_the_leader_and_are_lost_when_stopped() {
    let mut c = Cluster::start_tuned(3, |cfg| {
        cfg.worker_heartbeat = Duration::from_millis(100);
        cfg.worker_timeout = Duration::from_millis(1000);
    })
    .await;
    let leader = c.leader().await;
    // The worker only knows one follower's address.
    let follower = c.other_than(leader);
    let w1 = agent(&c, "w1", vec![c.addrs[&follower].to_string()]);
    let w2 = agent(&c, "w2", c.addrs.values().map(|a| a.to_string()).collect());
    for id in ["w1", "w2"] {
        eventually(&format!("{id} alive"), || async {
            (worker_state(&c, leader, id).await? == (pb::WorkerState::Alive as i32, 1))
                .then_some(())
        })
        .await;
    }
    let mut client = c.client(leader).await;
    let ws = client
        .list_workers(pb::ListWorkersRequest {})
        .await
        .unwrap()
        .into_inner()
        .workers;
    let w = ws.iter().find(|w| w.worker_id == "w1").unwrap();
    let res = w.resources.clone().unwrap();
    assert_eq!(
        (res.cpu_cores, res.memory_mb, res.gpus.len()),
        (4.0, 8192, 1)
    );
    assert_eq!(res.gpus[0].uuid, "GPU-A");
    assert_eq!(w.pools, vec!["inference".to_string()]);

    // Kill the leader. The workers move on (w1's only address may be the dead one's
    // follower, which forwards to the new leader) and stay alive past the timeout.
    c.kill(leader).await;
    let new = c.leader().await;
    let deadline = std::time::Instant::now() + Duration::from_millis(2500);
    while std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    for id in ["w1", "w2"] {
        assert_eq!(
            worker_state(&c, new, id).await,
            Some((pb::WorkerState::Alive as i32, 1)),
            "{id} after failover"
        );
    }
    assert_eq!(
        w1.status().registrations,
        1,
        "a failover is not a reason to register again"
    );

    // A stopped worker is marked lost; the other stays alive.
    w2.stop().await;
    eventually("w2 lost", || async {
        (worker_state(&c, new, "w2").await?.0 == pb::WorkerState::Dead as i32).then_some(())
    })
    .await;
    assert_eq!(
        worker_state(&c, new, "w1").await.map(|s| s.0),
        Some(pb::WorkerState::Alive as i32)
    );
    w1.stop().await;
    c.stop().await;
}
