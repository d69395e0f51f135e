//! Scheduling through the real master and workers on loopback: tenants with quotas
//! competing for two GPU workers (declared accelerators), the queue's order and
//! reasons as `ListQueue` shows them, the pools' figures, and the final placements.

use std::time::Duration;
use tonic::transport::Channel;
use weir_proto::v1 as pb;
use weir_proto::v1::weir_client::WeirClient;
use weir_tests::{app_detail, eventually_within, Cluster};

fn fast(cfg: &mut weir_master::server::MasterConfig) {
    cfg.worker_heartbeat = Duration::from_millis(100);
    cfg.worker_timeout = Duration::from_millis(1500);
    cfg.reconcile_interval = Duration::from_millis(100);
}

const WAIT: Duration = Duration::from_secs(60);

/// An app of `tenant` whose `infer` PE asks `gpus` slices of 12,000 MiB: one per
/// 16 GiB device at a time. Its generator runs until cancelled.
fn gpu_app(name: &str, tenant: &str, priority: &str, gpus: u32) -> String {
    format!(
        r#"
name: {name}
tenant: {tenant}
priority: {priority}
operators:
  - {{name: gen, kind: source.generator, params: {{rate: 200, keys: 4, payload_bytes: 8}}}}
  - name: infer
    kind: exec
    params: {{command: [cat], protocol: lines}}
    resources: {{cpu: 0.5, memory_mb: 256, gpu: {{count: {gpus}, memory_mb: 12000}}}}
  - {{name: out, kind: sink.null}}
streams:
  - {{from: gen, to: infer}}
  - {{from: infer, to: out}}
"#
    )
}

async fn submit(client: &mut WeirClient<Channel>, spec: String) -> Result<(), tonic::Status> {
    client
        .submit_app(weir_tests::submit_yaml(spec))
        .await
        .map(|_| ())
}

async fn quota(client: &mut WeirClient<Channel>, tenant: &str, gpus: u64) {
    client
        .set_tenant_quota(pb::SetTenantQuotaRequest {
            tenant: tenant.into(),
            quota: Some(pb::Quota {
                gpus: Some(gpus),
                ..Default::default()
            }),
        })
        .await
        .unwrap();
}

/// The worker and device of `app`'s `infer` PE once it is placed.
async fn placed(client: &WeirClient<Channel>, app: &str) -> (String, String) {
    eventually_within(&format!("{app} placed"), WAIT, || {
        let mut client = client.clone();
        async move {
            let d = app_detail(&mut client, app).await?;
            let p = d
                .pes
                .iter()
                .find(|p| p.pe.as_ref().is_some_and(|r| r.operator == "infer"))?;
            let gpu = p.gpu_uuids.first()?.clone();
            (!p.worker_id.is_empty()).then(|| (p.worker_id.clone(), gpu))
        }
    })
    .await
}

/// The queue once it is exactly `want`: (app, wait kind) in order.
async fn queue_is(client: &WeirClient<Channel>, want: &[(&str, &str)]) -> Vec<pb::QueueEntry> {
    let want: Vec<(String, String)> = want
        .iter()
        .map(|(a, w)| (a.to_string(), w.to_string()))
        .collect();
    eventually_within(&format!("the queue to be {want:?}"), WAIT, || {
        let mut client = client.clone();
        let want = want.clone();
        async move {
            let q = client
                .list_queue(pb::ListQueueRequest::default())
                .await
                .ok()?
                .into_inner()
                .entries;
            let got: Vec<(String, String)> =
                q.iter().map(|e| (e.app.clone(), e.wait.clone())).collect();
            (got == want).then_some(q)
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_tenants_with_quotas_share_two_gpu_workers_in_queue_order() {
    let c = Cluster::start_tuned(1, fast).await;
    c.leader().await;
    let masters: Vec<_> = c.addrs.values().copied().collect();
    let mut workers = Vec::new();
    for (id, uuid) in [("gpu1", "GPU-one"), ("gpu2", "GPU-two")] {
        workers.push(
            weir_tests::start_worker_with(id, &masters, |cfg| {
                cfg.declared_gpus = vec![format!("nvidia:test-16g:16384:{uuid}").parse().unwrap()];
            })
            .await,
        );
    }
    let mut client = c.client(1).await;
    weir_tests::workers_alive(&client, 2, WAIT).await;
    quota(&mut client, "web", 1).await;
    quota(&mut client, "mobile", 1).await;

    // An app that alone passes its tenant's quota could never start: refused, and
    // nothing of it is stored.
    let e = submit(&mut client, gpu_app("greedy", "mobile", "normal", 2))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::ResourceExhausted, "{e:?}");
    assert!(
        e.message()
            .starts_with("quota.gpus: tenant \"mobile\" may hold 1 GPU slices"),
        "{}",
        e.message()
    );
    assert!(app_detail(&mut client, "greedy").await.is_none());

    submit(&mut client, gpu_app("web-a", "web", "normal", 1))
        .await
        .unwrap();
    let (wa, ga) = placed(&client, "web-a").await;
    // web holds its one GPU: its next app waits for its quota, not for capacity,
    // however high its class; mobile's app is served meanwhile.
    submit(&mut client, gpu_app("web-b", "web", "high", 1))
        .await
        .unwrap();
    submit(&mut client, gpu_app("mobile-a", "mobile", "normal", 1))
        .await
        .unwrap();
    let (wm, gm) = placed(&client, "mobile-a").await;
    assert_ne!((&wa, &ga), (&wm, &gm), "one app per device");
    let q = queue_is(&client, &[("web-b", "quota")]).await;
    assert!(
        q[0].reason
            .starts_with("quota.gpus: tenant \"web\" may hold 1 GPU slices; it holds 1"),
        "{}",
        q[0].reason
    );
    assert_eq!((q[0].priority.as_str(), q[0].rank), ("high", 2));

    // Another of mobile's waits for its quota too, behind web-b (higher class).
    submit(&mut client, gpu_app("mobile-b", "mobile", "normal", 1))
        .await
        .unwrap();
    queue_is(&client, &[("web-b", "quota"), ("mobile-b", "quota")]).await;

    // With room in its quota, web-b waits for a device: both are taken.
    quota(&mut client, "web", 2).await;
    let q = queue_is(&client, &[("web-b", "capacity"), ("mobile-b", "quota")]).await;
    assert!(q[0].reason.contains("12000 MiB"), "{}", q[0].reason);

    // The pool's figures are the placements': two devices with one 12,000 MiB slice
    // each, the running apps' PEs, and the two waiting apps' PEs pending.
    let pools = client
        .list_pools(pb::ListPoolsRequest {})
        .await
        .unwrap()
        .into_inner()
        .pools;
    assert_eq!(pools.len(), 1, "{pools:?}");
    let p = &pools[0];
    assert_eq!(p.name, "general-nvidia");
    assert_eq!((p.gpus_total, p.gpus_used, p.gpus_free), (2, 2, 0));
    assert_eq!(
        (
            p.gpu_memory_total_mb,
            p.gpu_memory_used_mb,
            p.gpu_memory_free_mb
        ),
        (32_768, 24_000, 8_768)
    );
    assert_eq!(p.pes_placed, 6, "three PEs of web-a and of mobile-a");
    assert_eq!(p.pes_pending, 6, "three of web-b and of mobile-b");
    assert!(
        (p.cpu_used - 2.0 * (0.5 + 2.0 * builtin_cpu())).abs() < 1e-6,
        "{}",
        p.cpu_used
    );

    // mobile-a ends: its device goes to web-b, ahead of mobile-b (now within its
    // quota again, but of a lower class).
    client
        .cancel_app(pb::CancelAppRequest {
            app: "mobile-a".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let (wb, gb) = placed(&client, "web-b").await;
    assert_eq!((&wb, &gb), (&wm, &gm), "web-b took mobile-a's device");
    let q = queue_is(&client, &[("mobile-b", "capacity")]).await;
    assert_eq!(q[0].tenant, "mobile");
    let tenants = client
        .list_tenants(pb::ListTenantsRequest {})
        .await
        .unwrap()
        .into_inner()
        .tenants;
    let web = tenants.iter().find(|t| t.name == "web").unwrap();
    assert_eq!(web.held.as_ref().map(|h| h.gpus), Some(2));
    assert_eq!(web.quota.as_ref().and_then(|q| q.gpus), Some(2));
    for w in workers {
        w.stop().await;
    }
    c.stop().await;
}

/// The cores a built-in operator's PE asks by default.
fn builtin_cpu() -> f64 {
    weir_common::spec::Resources::for_kind("sink.null").cpu
}

/// An app with an exactly-once audit: `count` records at `rate`/s through a GPU PE
/// (`gpu_mb` of one device), checkpointed every `interval_ms` (and once at start).
fn audited_gpu_app(
    name: &str,
    priority: &str,
    count: u64,
    rate: u64,
    gpu_mb: u64,
    interval_ms: u64,
) -> String {
    format!(
        r#"
name: {name}
priority: {priority}
checkpoint_interval_ms: {interval_ms}
operators:
  - {{name: gen, kind: source.generator, params: {{count: {count}, rate: {rate}, keys: 8, payload_bytes: 8}}}}
  - name: infer
    kind: exec
    params: {{command: [cat], protocol: lines}}
    resources: {{cpu: 0.5, memory_mb: 256, gpu: {{count: 1, memory_mb: {gpu_mb}}}}}
  - {{name: audit, kind: sink.verify, params: {{expect: {count}}}}}
streams:
  - {{from: gen, to: infer}}
  - {{from: infer, to: audit}}
"#
    )
}

/// A high app preempts a low one holding the only device: the low app first takes a
/// checkpoint (its interval is ten minutes, so only the one at its start would exist
/// otherwise), stops, waits in the queue while the high one runs to its end, then
/// resumes from that fresh checkpoint; both audits see every record exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_high_app_preempts_a_low_one_which_resumes_from_its_checkpoint_exactly_once() {
    let c = Cluster::start_tuned(1, fast).await;
    c.leader().await;
    let masters: Vec<_> = c.addrs.values().copied().collect();
    let worker = weir_tests::start_worker_with("gpu1", &masters, |cfg| {
        cfg.declared_gpus = vec!["nvidia:test-16g:16384:GPU-only".parse().unwrap()];
    })
    .await;
    let mut client = c.client(1).await;
    weir_tests::workers_alive(&client, 1, WAIT).await;

    let (batch, urgent) = (30_000, 3_000);
    submit(
        &mut client,
        audited_gpu_app("batch", "low", batch, 3_000, 12_000, 600_000),
    )
    .await
    .unwrap();
    placed(&client, "batch").await;
    // It runs and has checkpointed before it is preempted.
    eventually_within("a checkpoint of batch", WAIT, || {
        let mut client = client.clone();
        async move {
            let r = client
                .list_checkpoints(pb::ListCheckpointsRequest {
                    app: "batch".into(),
                })
                .await
                .ok()?
                .into_inner();
            (!r.checkpoints.is_empty()).then_some(())
        }
    })
    .await;
    let asked_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    submit(
        &mut client,
        audited_gpu_app("urgent", "high", urgent, 3_000, 8_000, 300),
    )
    .await
    .unwrap();
    weir_tests::assert_audit_exact(&client, "urgent", "audit", urgent, WAIT).await;
    weir_tests::assert_audit_exact(&client, "batch", "audit", batch, Duration::from_secs(120))
        .await;
    let r = client
        .list_checkpoints(pb::ListCheckpointsRequest {
            app: "batch".into(),
        })
        .await
        .unwrap()
        .into_inner();
    let preempted: Vec<_> = r
        .recoveries
        .iter()
        .filter(|r| r.reason == "preempted by urgent")
        .collect();
    assert_eq!(preempted.len(), 1, "{:?}", r.recoveries);
    // It resumed from the checkpoint taken for the preemption, not the one at start.
    let from = r
        .checkpoints
        .iter()
        .find(|c| c.checkpoint_id == preempted[0].checkpoint_id)
        .unwrap_or_else(|| panic!("{:?}", r.checkpoints));
    assert!(
        from.started_at_ms >= asked_ms,
        "resumed from checkpoint {} begun at {}, before the high app was submitted at {asked_ms}",
        from.checkpoint_id,
        from.started_at_ms
    );
    worker.stop().await;
    c.stop().await;
}

/// An app whose `infer` PE asks one slice of 4,000 MiB: up to four fit one 16 GiB
/// device, so where two go shows the device policy (binpack: together; spread: apart).
fn small_gpu_app(name: &str) -> String {
    gpu_app(name, "web", "normal", 1).replace("memory_mb: 12000", "memory_mb: 4000")
}

async fn policy_of(client: &WeirClient<Channel>) -> pb::GetSchedulingPolicyResponse {
    client
        .clone()
        .get_scheduling_policy(pb::GetSchedulingPolicyRequest {})
        .await
        .unwrap()
        .into_inner()
}

/// The scheduling policy kept in Raft is the one every leader places by: by the
/// masters' flags (the objective with binpack weights) two small slices share a
/// device; an admin keeps `spread` in Raft through a follower (a bad policy is refused
/// first, naming its field, and changes nothing); the leader dies, and the next one,
/// started with the same binpack flags, spreads the next two apps over both devices.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_scheduling_policy_kept_in_raft_outlives_its_leader() {
    let mut c = Cluster::start_tuned(3, fast).await;
    let leader = c.leader().await;
    let masters: Vec<_> = c.addrs.values().copied().collect();
    let worker = weir_tests::start_worker_with("gpus", &masters, |cfg| {
        cfg.declared_gpus = ["GPU-one", "GPU-two"]
            .iter()
            .map(|u| format!("nvidia:test-16g:16384:{u}").parse().unwrap())
            .collect();
    })
    .await;
    let follower = c.other_than(leader);
    let mut client = c.client(follower).await;
    weir_tests::workers_alive(&client, 1, WAIT).await;

    let flags = policy_of(&client).await;
    assert!(!flags.replicated, "{flags:?}");
    assert_eq!(flags.policy.unwrap().gpu_policy, "objective");
    for app in ["a", "b"] {
        submit(&mut client, small_gpu_app(app)).await.unwrap();
    }
    let (a, b) = (placed(&client, "a").await, placed(&client, "b").await);
    assert_eq!(a, b, "binpack by the flags: both slices on one device");

    let bad = client
        .set_scheduling_policy(pb::SetSchedulingPolicyRequest {
            policy: Some(pb::SchedulingPolicy {
                gpu_policy: "objective".into(),
                gpu_weights: vec!["model:test-16g=-1".into()],
                fifo_queue: false,
            }),
        })
        .await
        .unwrap_err();
    assert_eq!(bad.code(), tonic::Code::InvalidArgument, "{bad:?}");
    assert!(
        bad.message()
            .starts_with("policy.gpu_weights \"model:test-16g=-1\""),
        "{}",
        bad.message()
    );
    assert!(!policy_of(&client).await.replicated);

    client
        .set_scheduling_policy(pb::SetSchedulingPolicyRequest {
            policy: Some(pb::SchedulingPolicy {
                gpu_policy: "spread".into(),
                gpu_weights: vec![],
                fifo_queue: false,
            }),
        })
        .await
        .unwrap();
    for id in 1..=3 {
        let p = policy_of(&c.client(id).await).await;
        assert!(p.replicated && p.set_at_ms > 0, "master {id}: {p:?}");
        assert_eq!(p.policy.unwrap().gpu_policy, "spread", "master {id}");
    }
    for app in ["a", "b"] {
        client
            .cancel_app(pb::CancelAppRequest {
                app: app.into(),
                ..Default::default()
            })
            .await
            .unwrap();
    }

    c.kill(leader).await;
    let next = c.leader().await;
    let mut client = c.client(next).await;
    weir_tests::workers_alive(&client, 1, WAIT).await;
    // Both devices empty again, so where c and d go is the policy's choice alone.
    eventually_within("a and b's slices freed", WAIT, || {
        let mut client = client.clone();
        async move {
            let pools = client.list_pools(pb::ListPoolsRequest {}).await.ok()?;
            let used: u64 = pools
                .into_inner()
                .pools
                .iter()
                .map(|p| p.gpu_memory_used_mb)
                .sum();
            (used == 0).then_some(())
        }
    })
    .await;
    for app in ["c", "d"] {
        submit(&mut client, small_gpu_app(app)).await.unwrap();
    }
    let (pc, pd) = (placed(&client, "c").await, placed(&client, "d").await);
    assert_eq!(pc.0, pd.0);
    assert_ne!(pc.1, pd.1, "spread by the policy in Raft: one device each");
    worker.stop().await;
    c.stop().await;
}
