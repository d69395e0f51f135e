//! `weirctl pools`, `weirctl queue`, `weirctl tenant set-quota` and `weirctl scheduler
//! policy|set-policy`: what the scheduler has, what waits for it and why, the limits on
//! each tenant, and the policy every leader places by.

use crate::online::{Conn, Repeat};
use serde_json::json;
use weir_proto::v1 as pb;
use weir_proto::v1::weir_client::WeirClient;

/// The scheduling policy to keep in Raft, in the words of the master's flags.
#[derive(clap::Args, Debug)]
pub struct SetPolicy {
    /// Where GPU slices go: objective (default), objective-spread, first-fit,
    /// best-fit, binpack, spread.
    #[arg(long, default_value = "objective")]
    pub gpu_policy: String,
    /// A multiplier of the objective's device weights, `model:NAME=W` or
    /// `pool:NAME=W`; repeatable.
    #[arg(long = "gpu-weight")]
    pub gpu_weights: Vec<String>,
    /// Serve the queue by arrival only.
    #[arg(long)]
    pub fifo_queue: bool,
    /// Clear it: each leader uses its own flags again.
    #[arg(long, conflicts_with_all = ["gpu_policy", "gpu_weights", "fifo_queue"])]
    pub clear: bool,
}

/// `weirctl scheduler set-policy`.
pub async fn set_policy(c: &Conn, p: &SetPolicy) -> anyhow::Result<()> {
    let policy = (!p.clear).then(|| pb::SchedulingPolicy {
        gpu_policy: p.gpu_policy.clone(),
        gpu_weights: p.gpu_weights.clone(),
        fifo_queue: p.fifo_queue,
    });
    let req = pb::SetSchedulingPolicyRequest {
        policy: policy.clone(),
    };
    c.call(Repeat::Safe, |ch| {
        let req = req.clone();
        async move { WeirClient::new(ch).set_scheduling_policy(req).await }
    })
    .await?;
    match &policy {
        Some(p) => c.print(
            format!("scheduling policy set: {}", policy_line(p)),
            json!({"policy": policy_json(p), "replicated": true}),
        ),
        None => c.print(
            "scheduling policy cleared: each leader uses its own flags".to_string(),
            json!({"policy": null, "replicated": false}),
        ),
    }
    Ok(())
}

/// `weirctl scheduler policy`.
pub async fn policy(c: &Conn) -> anyhow::Result<()> {
    let r = c
        .call(Repeat::Safe, |ch| async move {
            WeirClient::new(ch)
                .get_scheduling_policy(pb::GetSchedulingPolicyRequest {})
                .await
        })
        .await?
        .into_inner();
    let p = r.policy.clone().unwrap_or_default();
    let whence = if r.replicated {
        "kept in Raft (every leader uses it)"
    } else {
        "none kept in Raft: the leader's flags"
    };
    c.print(
        format!("{}\n  {whence}", policy_line(&p)),
        json!({"policy": policy_json(&p), "replicated": r.replicated, "set_at_ms": r.set_at_ms}),
    );
    Ok(())
}

fn policy_line(p: &pb::SchedulingPolicy) -> String {
    let mut l = format!("gpu-policy {}", p.gpu_policy);
    for w in &p.gpu_weights {
        l.push_str(&format!(", gpu-weight {w}"));
    }
    l.push_str(if p.fifo_queue {
        ", queue fifo"
    } else {
        ", queue fair"
    });
    l
}

fn policy_json(p: &pb::SchedulingPolicy) -> serde_json::Value {
    json!({"gpu_policy": p.gpu_policy, "gpu_weights": p.gpu_weights, "fifo_queue": p.fifo_queue})
}

/// A tenant's quota, as flags; a limit left out is no limit.
#[derive(clap::Args, Debug)]
pub struct SetQuota {
    /// The tenant.
    pub name: String,
    /// Cores.
    #[arg(long)]
    pub cpu: Option<f64>,
    /// Memory, MiB.
    #[arg(long)]
    pub memory_mb: Option<u64>,
    /// GPU slices.
    #[arg(long)]
    pub gpus: Option<u64>,
    /// GPU memory, MiB.
    #[arg(long)]
    pub gpu_memory_mb: Option<u64>,
    /// PEs.
    #[arg(long)]
    pub pes: Option<u64>,
    /// Lift the quota (no limit at all).
    #[arg(long, conflicts_with_all = ["cpu", "memory_mb", "gpus", "gpu_memory_mb", "pes"])]
    pub clear: bool,
}

/// `weirctl tenant set-quota`.
pub async fn set_quota(c: &Conn, q: &SetQuota) -> anyhow::Result<()> {
    let quota = (!q.clear).then_some(pb::Quota {
        cpu: q.cpu,
        memory_mb: q.memory_mb,
        gpus: q.gpus,
        gpu_memory_mb: q.gpu_memory_mb,
        pes: q.pes,
    });
    let req = pb::SetTenantQuotaRequest {
        tenant: q.name.clone(),
        quota,
    };
    c.call(Repeat::Safe, |ch| {
        let req = req.clone();
        async move { WeirClient::new(ch).set_tenant_quota(req).await }
    })
    .await?;
    let shown = quota.as_ref().map_or("none".to_string(), limits);
    c.print(
        format!("tenant {}: quota {shown}", q.name),
        json!({"tenant": q.name, "quota": quota.as_ref().map(quota_json)}),
    );
    Ok(())
}

/// A quota in one line: `cpu 4, gpus 2` (`unlimited` when no limit is set).
pub fn limits(q: &pb::Quota) -> String {
    let mut l = Vec::new();
    if let Some(c) = q.cpu {
        l.push(format!("cpu {c}"));
    }
    for (name, v) in [
        ("memory_mb", q.memory_mb),
        ("gpus", q.gpus),
        ("gpu_memory_mb", q.gpu_memory_mb),
        ("pes", q.pes),
    ] {
        if let Some(v) = v {
            l.push(format!("{name} {v}"));
        }
    }
    if l.is_empty() {
        "unlimited".into()
    } else {
        l.join(", ")
    }
}

/// A quota as JSON.
pub fn quota_json(q: &pb::Quota) -> serde_json::Value {
    json!({"cpu": q.cpu, "memory_mb": q.memory_mb, "gpus": q.gpus, "gpu_memory_mb": q.gpu_memory_mb, "pes": q.pes})
}

/// What a tenant holds, in one line.
pub fn held(a: &pb::Amounts) -> String {
    format!(
        "cpu {}, memory_mb {}, gpus {}, gpu_memory_mb {}, pes {}",
        a.cpu, a.memory_mb, a.gpus, a.gpu_memory_mb, a.pes
    )
}

fn secs(ms: u64) -> String {
    if ms >= 60_000 {
        format!("{}m{:02}s", ms / 60_000, ms / 1000 % 60)
    } else {
        format!("{:.1}s", ms as f64 / 1000.0)
    }
}

/// `weirctl queue`.
pub async fn queue(c: &Conn, tenant: Option<&str>) -> anyhow::Result<()> {
    let req = pb::ListQueueRequest {
        tenant: tenant.unwrap_or_default().to_string(),
    };
    let r = c
        .call(Repeat::Safe, |ch| {
            let req = req.clone();
            async move { WeirClient::new(ch).list_queue(req).await }
        })
        .await?
        .into_inner();
    let mut text = format!(
        "{:>3} {:<24} {:<12} {:<7} {:>4} {:>6} {:>8} {:>4}  {:<10} REASON",
        "#", "APP", "TENANT", "CLASS", "RANK", "SHARE", "WAITED", "PES", "WAITS FOR"
    );
    for (i, e) in r.entries.iter().enumerate() {
        text.push_str(&format!(
            "\n{:>3} {:<24} {:<12} {:<7} {:>4} {:>6.3} {:>8} {:>4}  {:<10} {}",
            i + 1,
            e.app,
            e.tenant,
            e.priority,
            e.rank,
            e.share,
            secs(e.waited_ms),
            e.pes,
            e.wait,
            e.reason
        ));
    }
    if r.entries.is_empty() {
        text.push_str("\n(empty: every live app is placed)");
    }
    let js: Vec<_> = r
        .entries
        .iter()
        .map(|e| {
            json!({"app": e.app, "tenant": e.tenant, "priority": e.priority, "rank": e.rank,
                "share": e.share, "queued_at_ms": e.queued_at_ms, "waited_ms": e.waited_ms,
                "pes": e.pes, "wait": e.wait, "reason": e.reason})
        })
        .collect();
    c.print(text, json!({ "queue": js }));
    Ok(())
}

/// `weirctl pools`.
pub async fn pools(c: &Conn) -> anyhow::Result<()> {
    let r = c
        .call(Repeat::Safe, |ch| async move {
            WeirClient::new(ch)
                .list_pools(pb::ListPoolsRequest {})
                .await
        })
        .await?
        .into_inner();
    let mut text = format!(
        "{:<20} {:>7} {:>13} {:>17} {:>5} {:>21} {:>6} {:>7} {:>8}",
        "POOL",
        "WORKERS",
        "CPU USED/ALL",
        "MEM MiB USED/ALL",
        "GPUS",
        "GPU MiB USED/ALL",
        "PES",
        "PENDING",
        "WAITED"
    );
    for p in &r.pools {
        text.push_str(&format!(
            "\n{:<20} {:>7} {:>13} {:>17} {:>5} {:>21} {:>6} {:>7} {:>8}",
            p.name,
            p.workers.len(),
            format!("{:.2}/{}", p.cpu_used, p.cpu_total),
            format!("{}/{}", p.memory_used_mb, p.memory_total_mb),
            format!("{}/{}", p.gpus_used, p.gpus_total),
            format!("{}/{}", p.gpu_memory_used_mb, p.gpu_memory_total_mb),
            p.pes_placed,
            p.pes_pending,
            if p.pes_pending == 0 {
                "-".to_string()
            } else {
                secs(p.longest_wait_ms)
            }
        ));
        for d in &p.devices {
            text.push_str(&format!(
                "\n  {:<40} {:<10} {:<16} {:>6}/{} MiB, {} slice(s)",
                d.uuid, d.worker, d.model, d.memory_used_mb, d.memory_total_mb, d.slices
            ));
        }
    }
    let js: Vec<_> = r
        .pools
        .iter()
        .map(|p| {
            json!({"pool": p.name, "scenario": p.scenario, "vendor": p.vendor, "workers": p.workers,
                "cpu_total": p.cpu_total, "cpu_used": p.cpu_used, "cpu_free": p.cpu_free,
                "memory_total_mb": p.memory_total_mb, "memory_used_mb": p.memory_used_mb, "memory_free_mb": p.memory_free_mb,
                "gpus_total": p.gpus_total, "gpus_used": p.gpus_used, "gpus_free": p.gpus_free,
                "gpu_memory_total_mb": p.gpu_memory_total_mb, "gpu_memory_used_mb": p.gpu_memory_used_mb,
                "gpu_memory_free_mb": p.gpu_memory_free_mb, "pes_placed": p.pes_placed,
                "pes_pending": p.pes_pending, "longest_wait_ms": p.longest_wait_ms,
                "devices": p.devices.iter().map(|d| json!({"uuid": d.uuid, "worker": d.worker, "model": d.model,
                    "memory_total_mb": d.memory_total_mb, "memory_used_mb": d.memory_used_mb, "slices": d.slices})).collect::<Vec<_>>()})
        })
        .collect();
    c.print(text, json!({ "pools": js }));
    Ok(())
}
