//! Commands that talk to a cluster.
//!
//! Any master serves any call (followers forward to the leader), so the client only
//! needs one that answers: it tries each `--master` in turn, follows a leader hint,
//! and retries through an election for a bounded time.

use crate::Output;
use anyhow::{bail, Context};
use serde_json::{json, Value};
use std::time::{Duration, Instant};
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Status};
use weir_proto::status::{leader_hint, validation_problems};
use weir_proto::v1 as pb;
use weir_proto::v1::weir_admin_client::WeirAdminClient;
use weir_proto::v1::weir_client::WeirClient;

/// How long a command keeps retrying through elections and unreachable masters.
const RETRY_FOR: Duration = Duration::from_secs(15);

/// A connection to the cluster.
pub struct Conn {
    masters: Vec<String>,
    output: Output,
}

fn endpoint(addr: &str) -> anyhow::Result<Endpoint> {
    let url = if addr.contains("://") {
        addr.to_string()
    } else {
        format!("http://{addr}")
    };
    Ok(Endpoint::from_shared(url.clone())
        .with_context(|| format!("--master: {addr:?} is not an address"))?
        .connect_timeout(Duration::from_secs(2))
        .timeout(Duration::from_secs(30)))
}

/// Whether a failure may go away by asking again (elsewhere, or a bit later).
fn retryable(s: &Status) -> bool {
    s.code() == Code::Unavailable
        || (s.code() == Code::FailedPrecondition && leader_hint(s).is_some())
}

impl Conn {
    /// A connection that will try `masters` in order.
    pub fn new(masters: Vec<String>, output: Output) -> Self {
        Self { masters, output }
    }

    /// Runs `call` against the first master that answers, following leader hints and
    /// retrying through elections.
    pub async fn call<T, F, Fut>(&self, mut call: F) -> anyhow::Result<T>
    where
        F: FnMut(Channel) -> Fut,
        Fut: std::future::Future<Output = Result<T, Status>>,
    {
        let start = Instant::now();
        let mut targets = self.masters.clone();
        let mut last_err = String::new();
        loop {
            for addr in targets.clone() {
                let channel = match endpoint(&addr)?.connect().await {
                    Ok(c) => c,
                    Err(e) => {
                        last_err = format!("{addr}: {e}");
                        continue;
                    }
                };
                match call(channel).await {
                    Ok(v) => return Ok(v),
                    Err(s) if retryable(&s) => {
                        if let Some(l) = leader_hint(&s).map(str::to_string) {
                            targets.retain(|t| *t != l);
                            targets.insert(0, l);
                        }
                        last_err = format!("{addr}: {}", s.message());
                    }
                    Err(s) => return Err(self.refusal(s)),
                }
            }
            if start.elapsed() > RETRY_FOR {
                bail!("no master answered within {RETRY_FOR:?}; last error: {last_err}");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    fn refusal(&self, s: Status) -> anyhow::Error {
        if let Some(problems) = validation_problems(&s) {
            let mut msg = format!("{} problem(s) in spec", problems.len());
            for p in problems {
                msg.push_str(&format!("\n  {}: {}", p.path, p.rule));
            }
            return anyhow::anyhow!(msg);
        }
        anyhow::anyhow!("{:?}: {}", s.code(), s.message())
    }

    /// A line for humans only: on stdout in text mode, on stderr with `--output json`.
    pub(crate) fn note(&self, text: String) {
        match self.output {
            Output::Text => println!("{text}"),
            Output::Json => eprintln!("{text}"),
        }
    }

    pub(crate) fn print(&self, text: String, json: Value) {
        match self.output {
            Output::Text => println!("{text}"),
            Output::Json => println!(
                "{}",
                serde_json::to_string_pretty(&json).unwrap_or_default()
            ),
        }
    }
}

pub(crate) fn read_spec(path: &str) -> anyhow::Result<(String, i32)> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {path}"))?;
    let format = if path.to_ascii_lowercase().ends_with(".json") {
        pb::SpecFormat::Json
    } else {
        pb::SpecFormat::Yaml
    };
    Ok((text, format as i32))
}

fn state_name(s: i32) -> String {
    pb::AppState::try_from(s).map_or("unknown".into(), |s| {
        s.as_str_name()
            .trim_start_matches("APP_STATE_")
            .to_lowercase()
    })
}

/// `weirctl submit`.
pub async fn submit(c: &Conn, file: &str) -> anyhow::Result<()> {
    let (spec, format) = read_spec(file)?;
    let req = pb::SubmitAppRequest {
        spec,
        format,
        request_id: String::new(),
    };
    let r = c
        .call(|ch| {
            let req = req.clone();
            async move { WeirClient::new(ch).submit_app(req).await }
        })
        .await?
        .into_inner();
    c.print(
        format!("submitted {} version {} ({} PEs)", r.app, r.version, r.pes.len()),
        json!({"app": r.app, "version": r.version, "state": state_name(r.state), "pes": r.pes.iter().map(|p| &p.id).collect::<Vec<_>>()}),
    );
    Ok(())
}

/// `weirctl get`.
pub async fn get(c: &Conn, app: &str) -> anyhow::Result<()> {
    let req = pb::GetAppRequest { app: app.into() };
    let a = c
        .call(|ch| {
            let req = req.clone();
            async move { WeirClient::new(ch).get_app(req).await }
        })
        .await?
        .into_inner();
    let a = a.app.context("empty answer")?;
    let s = a.summary.clone().unwrap_or_default();
    let unplaced = if a.unplaced_reason.is_empty() {
        String::new()
    } else {
        format!("\nnot placed: {}", a.unplaced_reason)
    };
    let mut text = format!(
        "app {}  tenant {}  state {}  version {}  PEs {}{unplaced}\n\nPE                                 WORKER        STATE      IN/s     OUT/s   BACKLOG",
        s.name, s.tenant, state_name(s.state), s.version, s.pe_count
    );
    for p in &a.pes {
        let st = p.stats.clone().unwrap_or_default();
        let state = pb::PeState::try_from(p.state).map_or("?".into(), |s| {
            s.as_str_name()
                .trim_start_matches("PE_STATE_")
                .to_lowercase()
        });
        text.push_str(&format!(
            "\n{:34} {:13} {:9} {:8.0} {:8.0} {:8}",
            p.pe.as_ref().map_or("", |r| r.id.as_str()),
            if p.worker_id.is_empty() {
                "-"
            } else {
                &p.worker_id
            },
            state,
            st.rate_in,
            st.rate_out,
            st.backlog
        ));
    }
    for p in a.pes.iter().filter(|p| p.verify.is_some()) {
        let v = p.verify.unwrap_or_default();
        text.push_str(&format!(
            "\n{} (sink.verify): {} records, {} distinct, {} duplicated, {} missing{}{}",
            p.pe.as_ref().map_or("", |r| r.id.as_str()),
            v.records,
            v.distinct,
            v.duplicates,
            v.missing_below_max,
            v.expected
                .map_or(String::new(), |e| format!(", {e} expected")),
            if v.inputs_ended { ", inputs ended" } else { "" },
        ));
    }
    for p in a.pes.iter().filter(|p| !p.gpu_uuids.is_empty()) {
        text.push_str(&format!(
            "\n{}: GPU {}",
            p.pe.as_ref().map_or("", |r| r.id.as_str()),
            p.gpu_uuids.join(", ")
        ));
    }
    for p in a.pes.iter().filter(|p| !p.message.is_empty()) {
        text.push_str(&format!(
            "\n{}: {}",
            p.pe.as_ref().map_or("", |r| r.id.as_str()),
            p.message
        ));
    }
    text.push_str("\n\nSTREAM                          PARTITIONING   CHANNELS");
    for st in &a.streams {
        let kind = st.partitioning.as_ref().map_or("?".into(), |p| {
            pb::partitioning::Kind::try_from(p.kind).map_or("?".into(), |k| {
                k.as_str_name().trim_start_matches("KIND_").to_lowercase()
            })
        });
        text.push_str(&format!("\n{:31} {:14} {}", st.name, kind, st.channels));
    }
    let json = json!({
        "app": s.name, "tenant": s.tenant, "state": state_name(s.state), "version": s.version,
        "unplaced_reason": a.unplaced_reason,
        "pes": a.pes.iter().map(|p| json!({"pe": p.pe.as_ref().map(|r| r.id.clone()), "worker": p.worker_id,
            "state": p.state, "message": p.message, "gpus": p.gpu_uuids,
            "records_in": p.stats.as_ref().map_or(0, |s| s.records_in), "records_out": p.stats.as_ref().map_or(0, |s| s.records_out),
            "verify": p.verify.map(|v| json!({"records": v.records, "distinct": v.distinct, "duplicates": v.duplicates,
                "missing_below_max": v.missing_below_max, "expected": v.expected, "inputs_ended": v.inputs_ended}))})).collect::<Vec<_>>(),
        "streams": a.streams.iter().map(|s| json!({"stream": s.name, "channels": s.channels})).collect::<Vec<_>>(),
        "versions": a.versions.iter().map(|v| json!({"version": v.version, "created_at_ms": v.created_at_ms})).collect::<Vec<_>>(),
        "spec": a.spec,
    });
    c.print(text, json);
    Ok(())
}

/// `weirctl list`.
pub async fn list(c: &Conn, tenant: Option<String>) -> anyhow::Result<()> {
    let req = pb::ListAppsRequest {
        tenant: tenant.unwrap_or_default(),
    };
    let r = c
        .call(|ch| {
            let req = req.clone();
            async move { WeirClient::new(ch).list_apps(req).await }
        })
        .await?
        .into_inner();
    let mut text = format!(
        "{:24} {:14} {:10} {:>7} {:>5}",
        "APP", "TENANT", "STATE", "VERSION", "PES"
    );
    for a in &r.apps {
        text.push_str(&format!(
            "\n{:24} {:14} {:10} {:>7} {:>5}",
            a.name,
            a.tenant,
            state_name(a.state),
            a.version,
            a.pe_count
        ));
    }
    let json = json!(r.apps.iter().map(|a| json!({"app": a.name, "tenant": a.tenant, "state": state_name(a.state), "version": a.version, "pes": a.pe_count})).collect::<Vec<_>>());
    c.print(text, json);
    Ok(())
}

/// `weirctl cancel`.
pub async fn cancel(c: &Conn, app: &str) -> anyhow::Result<()> {
    let req = pb::CancelAppRequest {
        app: app.into(),
        request_id: String::new(),
    };
    c.call(|ch| {
        let req = req.clone();
        async move { WeirClient::new(ch).cancel_app(req).await }
    })
    .await?;
    c.print(
        format!("cancelled {app}"),
        json!({"app": app, "state": "cancelled"}),
    );
    Ok(())
}

/// `weirctl checkpoints APP`.
pub async fn checkpoints(c: &Conn, app: &str) -> anyhow::Result<()> {
    let req = pb::ListCheckpointsRequest { app: app.into() };
    let r = c
        .call(|ch| {
            let req = req.clone();
            async move { WeirClient::new(ch).list_checkpoints(req).await }
        })
        .await?
        .into_inner();
    let mut text = String::new();
    if r.checkpoints.is_empty() {
        text.push_str("no complete checkpoint\n");
    } else {
        text.push_str(&format!(
            "{:>6}  {:<24}  {:>10}  {:>8}  {:>9}  pieces\n",
            "ID", "COMPLETED (UTC)", "SIZE", "DURATION", "ALIGNMENT"
        ));
    }
    for ck in &r.checkpoints {
        let pieces: Vec<String> = ck
            .pieces
            .iter()
            .map(|p| format!("{}={}B@{}", p.pe, p.size_bytes, p.replicas.join("+")))
            .collect();
        text.push_str(&format!(
            "{:>6}  {:<24}  {:>10}  {:>6}ms  {:>7}ms  {}\n",
            ck.checkpoint_id,
            utc(ck.completed_at_ms),
            ck.size_bytes,
            ck.completed_at_ms.saturating_sub(ck.started_at_ms),
            ck.max_alignment_ms,
            pieces.join(" ")
        ));
    }
    if r.in_flight_id != 0 {
        text.push_str(&format!("in flight: {}\n", r.in_flight_id));
    }
    for rec in &r.recoveries {
        text.push_str(&format!(
            "recovery at {}: attempt {}, from checkpoint {}, operators {}: {}\n",
            utc(rec.at_ms),
            rec.attempt,
            rec.checkpoint_id,
            rec.operators.join(","),
            rec.reason
        ));
    }
    let json = json!({
        "checkpoints": r.checkpoints.iter().map(|ck| json!({
            "id": ck.checkpoint_id,
            "started_at_ms": ck.started_at_ms,
            "completed_at_ms": ck.completed_at_ms,
            "size_bytes": ck.size_bytes,
            "max_alignment_ms": ck.max_alignment_ms,
            "pieces": ck.pieces.iter().map(|p| json!({
                "pe": p.pe, "size_bytes": p.size_bytes, "crc32c": p.crc32c, "replicas": p.replicas,
            })).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
        "in_flight_id": r.in_flight_id,
        "recoveries": r.recoveries.iter().map(|rec| json!({
            "at_ms": rec.at_ms, "attempt": rec.attempt, "checkpoint_id": rec.checkpoint_id,
            "operators": rec.operators, "reason": rec.reason,
        })).collect::<Vec<_>>(),
    });
    c.print(text.trim_end().to_string(), json);
    Ok(())
}

/// `weirctl watch`: prints events until the app ends or the user stops it.
pub async fn watch(c: &Conn, app: &str) -> anyhow::Result<()> {
    let req = pb::WatchAppRequest { app: app.into() };
    let mut stream = c
        .call(|ch| {
            let req = req.clone();
            async move { WeirClient::new(ch).watch_app(req).await }
        })
        .await?
        .into_inner();
    while let Some(ev) = stream
        .message()
        .await
        .map_err(|s| anyhow::anyhow!("watch ended: {}", s.message()))?
    {
        let (text, json) = match &ev.event {
            Some(pb::app_event::Event::AppStateChanged(s)) => (
                format!(
                    "#{} state {} -> {}",
                    ev.seq,
                    state_name(s.old_state),
                    state_name(s.new_state)
                ),
                json!({"seq": ev.seq, "state": state_name(s.new_state)}),
            ),
            Some(pb::app_event::Event::PlacementChanged(p)) => (
                format!("#{} placement: {} PEs placed", ev.seq, p.placements.len()),
                json!({"seq": ev.seq, "placement": p.placements.iter().map(|p| (p.pe.clone(), p.worker_id.clone())).collect::<std::collections::BTreeMap<_, _>>()}),
            ),
            other => (
                format!("#{} {other:?}", ev.seq),
                json!({"seq": ev.seq, "event": format!("{other:?}")}),
            ),
        };
        match c.output {
            Output::Text => println!("{text}"),
            Output::Json => println!("{json}"),
        }
    }
    Ok(())
}

/// `weirctl workers`.
pub async fn workers(c: &Conn) -> anyhow::Result<()> {
    let r = c
        .call(|ch| async move {
            WeirClient::new(ch)
                .list_workers(pb::ListWorkersRequest {})
                .await
        })
        .await?
        .into_inner();
    let mut text = format!(
        "{:16} {:22} {:6} {:>6} {:>9} {:>4}  GPUS",
        "WORKER", "CONTROL", "STATE", "CPUS", "MEM MiB", "PES"
    );
    for w in &r.workers {
        let res = w.resources.clone().unwrap_or_default();
        let state = pb::WorkerState::try_from(w.state).map_or("?".into(), |s| {
            s.as_str_name()
                .trim_start_matches("WORKER_STATE_")
                .to_lowercase()
        });
        let gpus: Vec<String> = res
            .gpus
            .iter()
            .map(|g| {
                let used = if g.declared {
                    "declared".to_string()
                } else {
                    format!(
                        "{} MiB used, {}% busy",
                        g.memory_used_mb, g.utilization_percent
                    )
                };
                format!(
                    "{} {} {} MiB ({used})",
                    g.vendor, g.model, g.memory_total_mb
                )
            })
            .collect();
        text.push_str(&format!(
            "\n{:16} {:22} {:6} {:>6} {:>9} {:>4}  {}",
            w.worker_id,
            w.control_address,
            state,
            res.cpu_cores,
            res.memory_mb,
            w.pe_count,
            gpus.join(", ")
        ));
    }
    let json = json!(r.workers.iter().map(|w| {
        let res = w.resources.clone().unwrap_or_default();
        json!({"worker": w.worker_id, "control_address": w.control_address, "state": w.state, "pes": w.pe_count,
            "cpu_cores": res.cpu_cores, "memory_mb": res.memory_mb,
            "gpus": res.gpus.iter().map(|g| json!({"uuid": g.uuid, "vendor": g.vendor, "model": g.model,
                "memory_total_mb": g.memory_total_mb, "memory_used_mb": g.memory_used_mb,
                "utilization_percent": g.utilization_percent, "declared": g.declared})).collect::<Vec<_>>()})
    }).collect::<Vec<_>>());
    c.print(text, json);
    Ok(())
}

/// `weirctl cluster status`.
pub async fn cluster_status(c: &Conn) -> anyhow::Result<()> {
    let s = c
        .call(|ch| async move {
            WeirClient::new(ch)
                .cluster_status(pb::ClusterStatusRequest {})
                .await
        })
        .await?
        .into_inner();
    print_members(c, &s.members, Some(&s));
    Ok(())
}

fn print_members(c: &Conn, members: &[pb::Member], s: Option<&pb::ClusterStatusResponse>) {
    let role = |r: i32| {
        pb::MemberRole::try_from(r).map_or("?".into(), |r| {
            r.as_str_name()
                .trim_start_matches("MEMBER_ROLE_")
                .to_lowercase()
        })
    };
    let mut text = String::new();
    if let Some(s) = s {
        text.push_str(&format!(
            "cluster {}  leader {}  term {}  commit {}  applied {}  (answered by master {})\n",
            s.cluster_id,
            s.leader_id.map_or("none".into(), |l| l.to_string()),
            s.term,
            s.commit_index,
            s.applied_index,
            s.answered_by
        ));
    }
    text.push_str(&format!(
        "{:>4} {:24} {:10} {:5} {:>9} {:>11} {:>10}",
        "ID", "ADDRESS", "ROLE", "VOTER", "MATCHED", "LAG", "LAG BYTES"
    ));
    // Lag is the leader's knowledge; `-` when a follower answered on its own.
    let or_dash = |m: &pb::Member, v: u64| m.matched_index.map_or("-".into(), |_| v.to_string());
    for m in members {
        text.push_str(&format!(
            "\n{:>4} {:24} {:10} {:5} {:>9} {:>11} {:>10}",
            m.id,
            m.address,
            role(m.role),
            m.voter,
            m.matched_index.map_or("-".into(), |i| i.to_string()),
            or_dash(m, m.lag_entries),
            or_dash(m, m.lag_bytes),
        ));
    }
    let mut json = json!({"members": members.iter().map(|m| json!({
        "id": m.id, "address": m.address, "role": role(m.role), "voter": m.voter,
        "matched_index": m.matched_index,
        "lag_entries": m.matched_index.map(|_| m.lag_entries),
        "lag_bytes": m.matched_index.map(|_| m.lag_bytes),
    })).collect::<Vec<_>>()});
    if let Some(s) = s {
        json["leader"] = json!(s.leader_id);
        json["term"] = json!(s.term);
        json["commit_index"] = json!(s.commit_index);
        json["applied_index"] = json!(s.applied_index);
        json["cluster_id"] = json!(s.cluster_id);
    }
    c.print(text, json);
}

/// `weirctl cluster add-master`.
pub async fn add_master(c: &Conn, id: u64, address: &str, learner: bool) -> anyhow::Result<()> {
    let req = pb::AddMasterRequest {
        id,
        address: address.into(),
        as_voter: !learner,
    };
    let r = c
        .call(|ch| {
            let req = req.clone();
            async move { WeirAdminClient::new(ch).add_master(req).await }
        })
        .await?
        .into_inner();
    print_members(c, &r.members, None);
    Ok(())
}

/// `weirctl cluster remove-master`.
pub async fn remove_master(c: &Conn, id: u64) -> anyhow::Result<()> {
    let req = pb::RemoveMasterRequest { id };
    let r = c
        .call(|ch| async move { WeirAdminClient::new(ch).remove_master(req).await })
        .await?
        .into_inner();
    print_members(c, &r.members, None);
    Ok(())
}

/// Unix ms as `YYYY-MM-DD HH:MM:SS.mmm` (UTC).
pub(crate) fn utc(ms: u64) -> String {
    let (days, rem) = ((ms / 86_400_000) as i64, ms % 86_400_000);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}.{:03}",
        rem / 3_600_000,
        rem / 60_000 % 60,
        rem / 1000 % 60,
        rem % 1000
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn utc_formats_known_instants() {
        assert_eq!(super::utc(0), "1970-01-01 00:00:00.000");
        assert_eq!(super::utc(1_700_000_000_123), "2023-11-14 22:13:20.123");
        assert_eq!(super::utc(951_782_400_000), "2000-02-29 00:00:00.000");
    }
}
