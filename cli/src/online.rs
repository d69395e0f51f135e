//! Commands that talk to a cluster.
//!
//! Any master serves any call (followers forward to the leader), so the client only
//! needs one that answers: it tries each `--master` in turn, follows a leader hint,
//! and retries through an election for a bounded time.
//!
//! A master can also fail after it got a call (it died, the connection broke, the
//! call timed out): then nobody knows whether the call was applied. A call that is
//! safe to repeat (a read, or a write carrying a request id the master deduplicates)
//! moves on to the next master; any other fails, naming the master and saying so.

use crate::names::name;
use crate::Output;
use anyhow::{bail, Context};
use serde_json::{json, Value};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Status};
use weir_proto::status::{leader_hint, outcome_unknown_at, validation_problems};
use weir_proto::v1 as pb;
use weir_proto::v1::weir_admin_client::WeirAdminClient;
use weir_proto::v1::weir_client::WeirClient;

/// How long a command keeps retrying through elections and unreachable masters.
const RETRY_FOR: Duration = Duration::from_secs(15);

/// A connection to the cluster.
pub struct Conn {
    masters: Vec<String>,
    output: Output,
    security: weir_security::Security,
    signer: Option<std::sync::Arc<weir_security::sign::Signer>>,
}

fn endpoint(security: &weir_security::Security, addr: &str) -> anyhow::Result<Endpoint> {
    let addr = addr
        .strip_prefix("http://")
        .or_else(|| addr.strip_prefix("https://"))
        .unwrap_or(addr);
    Ok(security
        .endpoint(addr, weir_security::ServerRole::Master)
        .with_context(|| format!("--master: {addr:?} is not an address"))?
        .connect_timeout(Duration::from_secs(2))
        .timeout(Duration::from_secs(30)))
}

/// Whether a failure may go away by asking again (elsewhere, or a bit later).
fn retryable(s: &Status) -> bool {
    s.code() == Code::Unavailable
        || (s.code() == Code::FailedPrecondition && leader_hint(s).is_some())
}

/// Whether a call may be sent again after a master failed in the middle of it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Repeat {
    /// A read, or a write carrying a request id (the master answers a repeat with the
    /// first outcome): sending it again changes nothing more.
    Safe,
    /// A write that a repeat could apply twice (membership changes).
    Unsafe,
}

/// How one attempt at a call failed.
enum Failure {
    /// The master answered this status.
    Answered(Status),
    /// The call never reached the master (no connection).
    NotSent(String),
    /// The call was sent but no answer came back (the master died, the connection
    /// broke, the deadline passed): it may or may not have been applied.
    Lost {
        /// The master that failed: the one asked, or the leader it forwarded to.
        at: String,
        /// What happened, for humans.
        detail: String,
    },
}

/// Tells a master's answer from a failure on the way, for a call sent to `addr`. A
/// status the master sent has no source; one made here from a transport error keeps
/// that error as its source. A master whose forwarded call was lost at the leader
/// says so (see `outcome_unknown`).
fn failure(addr: &str, s: Status) -> Failure {
    if let Some(leader) = outcome_unknown_at(&s) {
        return Failure::Lost {
            at: leader.to_string(),
            detail: format!("forwarded by {addr}: {}", s.message()),
        };
    }
    let Some(source) = std::error::Error::source(&s) else {
        return Failure::Answered(s);
    };
    let mut chain = vec![s.message().to_string()];
    let mut not_sent = false;
    let mut next = Some(source);
    while let Some(e) = next {
        not_sent |= e.is::<tonic::ConnectError>();
        let text = e.to_string();
        if !chain.iter().any(|c| c.contains(&text)) {
            chain.push(text);
        }
        next = e.source();
    }
    let detail = chain.join(": ");
    if not_sent {
        Failure::NotSent(detail)
    } else {
        Failure::Lost {
            at: addr.to_string(),
            detail,
        }
    }
}

/// The error for a call lost at `addr` that is not safe to repeat.
fn lost_error(addr: &str, detail: &str) -> anyhow::Error {
    anyhow::anyhow!(
        "master {addr} failed mid-call ({detail}): the call may or may not have been applied; \
         check the cluster (e.g. `weirctl cluster status`) before repeating it"
    )
}

impl Conn {
    /// A connection that will try `masters` in order, over mutual TLS with
    /// `security`'s certificate (or plain TCP when it is off).
    pub fn new(masters: Vec<String>, output: Output, security: weir_security::Security) -> Self {
        Self {
            masters,
            output,
            security,
            signer: None,
        }
    }

    /// The same, signing every spec it submits or upgrades to with `signer`.
    pub fn with_signer(mut self, signer: Option<weir_security::sign::Signer>) -> Self {
        self.signer = signer.map(std::sync::Arc::new);
        self
    }

    /// The signature of `spec` by this client's key, if it has one.
    pub fn sign(&self, spec: &str) -> Option<pb::SpecSignature> {
        self.signer.as_ref().map(|s| pb::SpecSignature {
            key_id: s.key_id(),
            signature: s.sign(spec).into(),
        })
    }

    /// Runs `call` against the first master that answers, following leader hints and
    /// retrying through elections. A call lost at a master (see [`Repeat`]) moves on
    /// to the next master when `repeat` allows it, and fails otherwise.
    pub async fn call<T, F, Fut>(&self, repeat: Repeat, call: F) -> anyhow::Result<T>
    where
        F: FnMut(Channel) -> Fut,
        Fut: std::future::Future<Output = Result<T, Status>>,
    {
        Ok(self.call_at(repeat, call).await?.1)
    }

    /// [`Conn::call`], also answering which master answered.
    async fn call_at<T, F, Fut>(&self, repeat: Repeat, mut call: F) -> anyhow::Result<(String, T)>
    where
        F: FnMut(Channel) -> Fut,
        Fut: std::future::Future<Output = Result<T, Status>>,
    {
        let start = Instant::now();
        let mut targets = self.masters.clone();
        let mut last_err = String::new();
        loop {
            for addr in targets.clone() {
                let channel = match endpoint(&self.security, &addr)?.connect().await {
                    Ok(c) => c,
                    Err(e) => {
                        last_err = format!("{addr}: {e}");
                        continue;
                    }
                };
                let s = match call(channel).await {
                    Ok(v) => return Ok((addr, v)),
                    Err(s) => s,
                };
                match failure(&addr, s) {
                    Failure::Answered(s) if retryable(&s) => {
                        if let Some(l) = leader_hint(&s).map(str::to_string) {
                            targets.retain(|t| *t != l);
                            targets.insert(0, l);
                        }
                        last_err = format!("{addr}: {}", s.message());
                    }
                    Failure::Answered(s) => return Err(self.refusal(s)),
                    Failure::NotSent(detail) => last_err = format!("{addr}: {detail}"),
                    Failure::Lost { at, detail } if repeat == Repeat::Safe => {
                        eprintln!(
                            "weirctl: master {at} failed mid-call ({detail}); \
                             the call is safe to repeat: trying the next master"
                        );
                        last_err = format!("{at}: {detail}");
                    }
                    Failure::Lost { at, detail } => return Err(lost_error(&at, &detail)),
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

/// A fresh request id for a write: 128 random bits laid out as a version 4 UUID.
/// The bits come from the standard library's randomly keyed hasher (seeded from the
/// OS once per process, then advanced per hasher), fed the time and process id: an id
/// must only be unique, and this needs no random-number crate for one id per command.
pub(crate) fn request_id() -> String {
    use std::hash::{BuildHasher, Hasher};
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let word = |i: u8| {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u128(now);
        h.write_u32(std::process::id());
        h.write_u8(i);
        h.finish()
    };
    let hi = (word(0) & !0xF000) | 0x4000; // version 4
    let lo = (word(1) & !(0xC0 << 56)) | (0x80 << 56); // variant 10
    format!(
        "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
        hi >> 32,
        (hi >> 16) & 0xFFFF,
        hi & 0xFFFF,
        lo >> 48,
        lo & 0xFFFF_FFFF_FFFF
    )
}

fn state_name(s: i32) -> String {
    name::<pb::AppState>(s)
}

/// `weirctl submit`.
pub async fn submit(c: &Conn, file: &str) -> anyhow::Result<()> {
    let (spec, format) = read_spec(file)?;
    // One id for every attempt: a repeat after a lost call answers the first outcome.
    let req = pb::SubmitAppRequest {
        signature: c.sign(&spec),
        spec,
        format,
        request_id: request_id(),
    };
    let r = c
        .call(Repeat::Safe, |ch| {
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
        .call(Repeat::Safe, |ch| {
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
    // A finished app's PEs are gone from the workers: its totals are what is left.
    let finished = if s.finished_at_ms == 0 {
        String::new()
    } else {
        let secs = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64)
            .saturating_sub(s.finished_at_ms)
            / 1000;
        format!("\nfinished {secs} s ago (every source ran out; final counts below)")
    };
    let mut text = format!(
        "app {}  tenant {}  state {}  version {}  PEs {}{unplaced}{finished}\n\nPE                                 WORKER        STATE      IN/s     OUT/s   BACKLOG   RECORDS IN  RECORDS OUT",
        s.name, s.tenant, state_name(s.state), s.version, s.pe_count
    );
    for p in &a.pes {
        let st = p.stats.clone().unwrap_or_default();
        let state = name::<pb::PeState>(p.state);
        text.push_str(&format!(
            "\n{:34} {:13} {:9} {:8.0} {:8.0} {:8} {:>12} {:>12}",
            p.pe.as_ref().map_or("", |r| r.id.as_str()),
            if p.worker_id.is_empty() {
                "-"
            } else {
                &p.worker_id
            },
            state,
            st.rate_in,
            st.rate_out,
            st.backlog,
            st.records_in,
            st.records_out
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
    let generated = a
        .versions
        .iter()
        .find(|v| v.version == s.version)
        .map_or(&[][..], |v| v.generated.as_slice());
    for line in crate::catalog::generated_lines(generated) {
        text.push_str(&format!("\n{line}"));
    }
    text.push_str("\n\nSTREAM                          PARTITIONING   CHANNELS");
    for st in &a.streams {
        text.push_str(&format!(
            "\n{:31} {:14} {}",
            st.name,
            partitioning_name(st),
            st.channels
        ));
    }
    let json = json!({
        "app": s.name, "tenant": s.tenant, "state": state_name(s.state), "version": s.version,
        "unplaced_reason": a.unplaced_reason,
        "finished_at_ms": (s.finished_at_ms != 0).then_some(s.finished_at_ms),
        "pes": a.pes.iter().map(|p| json!({"pe": p.pe.as_ref().map(|r| r.id.clone()), "worker": p.worker_id,
            "state": name::<pb::PeState>(p.state), "message": p.message, "gpus": p.gpu_uuids,
            "records_in": p.stats.as_ref().map_or(0, |s| s.records_in), "records_out": p.stats.as_ref().map_or(0, |s| s.records_out),
            "verify": p.verify.map(|v| json!({"records": v.records, "distinct": v.distinct, "duplicates": v.duplicates,
                "missing_below_max": v.missing_below_max, "expected": v.expected, "inputs_ended": v.inputs_ended}))})).collect::<Vec<_>>(),
        "streams": a.streams.iter().map(|s| json!({"stream": s.name, "partitioning": partitioning_name(s), "channels": s.channels})).collect::<Vec<_>>(),
        "versions": a.versions.iter().map(|v| json!({"version": v.version, "created_at_ms": v.created_at_ms})).collect::<Vec<_>>(),
        "generated": crate::catalog::generated_json(generated),
        "spec": a.spec,
    });
    c.print(text, json);
    Ok(())
}

fn partitioning_name(s: &pb::StreamView) -> String {
    s.partitioning.as_ref().map_or_else(
        || "unknown".into(),
        |p| name::<pb::partitioning::Kind>(p.kind),
    )
}

/// `weirctl list`.
pub async fn list(c: &Conn, tenant: Option<String>) -> anyhow::Result<()> {
    let req = pb::ListAppsRequest {
        tenant: tenant.unwrap_or_default(),
    };
    let r = c
        .call(Repeat::Safe, |ch| {
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
        request_id: request_id(),
    };
    let r = c
        .call(Repeat::Safe, |ch| {
            let req = req.clone();
            async move { WeirClient::new(ch).cancel_app(req).await }
        })
        .await?
        .into_inner();
    let state = state_name(r.state);
    c.print(
        format!("cancelled {app}"),
        json!({"app": app, "state": state}),
    );
    Ok(())
}

/// `weirctl checkpoints APP`.
pub async fn checkpoints(c: &Conn, app: &str) -> anyhow::Result<()> {
    let req = pb::ListCheckpointsRequest { app: app.into() };
    let r = c
        .call(Repeat::Safe, |ch| {
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
            .map(|p| {
                let mut on = match (p.builds_on.first(), p.builds_on.last()) {
                    (Some(first), Some(last)) => format!(" (builds on {first}..={last})"),
                    _ => String::new(),
                };
                if !p.seeded_from.is_empty() {
                    on.push_str(&format!(" (seeded from {})", p.seeded_from.join("+")));
                }
                format!("{}={}B@{}{on}", p.pe, p.size_bytes, p.replicas.join("+"))
            })
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
                "builds_on": p.builds_on, "restore_bytes": p.restore_bytes,
                "seeded_from": p.seeded_from,
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
///
/// A watch is a read served by the leader: when its master fails or stops leading
/// mid-stream, it goes on through the next master, whose stream starts again (from
/// `#1`) with the app's current state.
pub async fn watch(c: &Conn, app: &str) -> anyhow::Result<()> {
    let req = pb::WatchAppRequest { app: app.into() };
    loop {
        let (addr, stream) = c
            .call_at(Repeat::Safe, |ch| {
                let req = req.clone();
                async move { WeirClient::new(ch).watch_app(req).await }
            })
            .await?;
        let mut stream = stream.into_inner();
        loop {
            let ev = match stream.message().await {
                Ok(Some(ev)) => ev,
                Ok(None) => return Ok(()),
                Err(s) => match failure(&addr, s) {
                    Failure::Answered(s) if retryable(&s) => {
                        eprintln!(
                            "weirctl: master {addr} stopped serving the watch ({}); \
                             watching through the leader",
                            s.message()
                        );
                        break;
                    }
                    Failure::Answered(s) => bail!("watch ended: {}", s.message()),
                    Failure::NotSent(detail) | Failure::Lost { detail, .. } => {
                        eprintln!(
                            "weirctl: master {addr} failed mid-watch ({detail}); \
                             watching through the next master"
                        );
                        break;
                    }
                },
            };
            let (text, json) = watch_event(&ev);
            match c.output {
                Output::Text => println!("{text}"),
                Output::Json => println!("{json}"),
            }
        }
    }
}

/// One watch event as a line of text and as JSON, with the same words in both.
fn watch_event(ev: &pb::AppEvent) -> (String, Value) {
    use pb::app_event::Event;
    let seq = ev.seq;
    match &ev.event {
        Some(Event::AppStateChanged(s)) => (
            format!(
                "#{seq} state {} -> {}{}",
                state_name(s.old_state),
                state_name(s.new_state),
                suffix(&s.message)
            ),
            json!({"seq": seq, "event": "app_state_changed", "old_state": state_name(s.old_state),
                "state": state_name(s.new_state), "message": s.message}),
        ),
        Some(Event::PlacementChanged(p)) => (
            format!("#{seq} placement: {} PEs placed", p.placements.len()),
            json!({"seq": seq, "event": "placement_changed", "placement": p.placements.iter().map(|p| (p.pe.clone(), p.worker_id.clone())).collect::<std::collections::BTreeMap<_, _>>()}),
        ),
        Some(Event::UpgradePhaseChanged(u)) => {
            let phase = name::<pb::UpgradePhase>(u.phase);
            (
                format!(
                    "#{seq} upgrade {} phase {phase}{}{}{}",
                    if u.operation_id.is_empty() {
                        "-"
                    } else {
                        &u.operation_id
                    },
                    if u.to_version == 0 {
                        String::new()
                    } else {
                        format!(" (v{} -> v{})", u.from_version, u.to_version)
                    },
                    if u.instructions_total == 0 {
                        String::new()
                    } else {
                        format!(
                            ", {}/{} instructions",
                            u.instructions_done, u.instructions_total
                        )
                    },
                    suffix(&u.reason)
                ),
                json!({"seq": seq, "event": "upgrade_phase_changed", "operation_id": u.operation_id,
                    "phase": phase, "from_version": u.from_version, "to_version": u.to_version,
                    "instructions_done": u.instructions_done, "instructions_total": u.instructions_total,
                    "reason": u.reason}),
            )
        }
        Some(Event::PeStateChanged(p)) => {
            let (old, new) = (
                name::<pb::PeState>(p.old_state),
                name::<pb::PeState>(p.new_state),
            );
            (
                format!(
                    "#{seq} PE {} on {}: {old} -> {new}{}",
                    p.pe,
                    if p.worker_id.is_empty() {
                        "-"
                    } else {
                        &p.worker_id
                    },
                    suffix(&p.message)
                ),
                json!({"seq": seq, "event": "pe_state_changed", "pe": p.pe, "worker": p.worker_id,
                    "old_state": old, "state": new, "message": p.message}),
            )
        }
        Some(Event::Recovery(r)) => (
            format!(
                "#{seq} recovery of {} from checkpoint {}{}: {}",
                r.pe,
                r.checkpoint_id,
                if r.failed_worker_id.is_empty() {
                    String::new()
                } else {
                    format!(" (moved {} -> {})", r.failed_worker_id, r.new_worker_id)
                },
                r.reason
            ),
            json!({"seq": seq, "event": "recovery", "pe": r.pe, "failed_worker": r.failed_worker_id,
                "new_worker": r.new_worker_id, "checkpoint_id": r.checkpoint_id, "reason": r.reason}),
        ),
        Some(Event::CheckpointCompleted(k)) => (
            format!(
                "#{seq} checkpoint {} complete ({} bytes, {} ms)",
                k.checkpoint_id, k.state_bytes, k.duration_ms
            ),
            json!({"seq": seq, "event": "checkpoint_completed", "checkpoint_id": k.checkpoint_id,
                "duration_ms": k.duration_ms, "state_bytes": k.state_bytes}),
        ),
        None => (
            format!("#{seq} (an event this weirctl does not know)"),
            json!({"seq": seq, "event": "unknown"}),
        ),
    }
}

fn suffix(message: &str) -> String {
    if message.is_empty() {
        String::new()
    } else {
        format!(": {message}")
    }
}

/// Every worker the masters know, sorted by id.
pub async fn list_workers(c: &Conn) -> anyhow::Result<pb::ListWorkersResponse> {
    Ok(c.call(Repeat::Safe, |ch| async move {
        WeirClient::new(ch)
            .list_workers(pb::ListWorkersRequest {})
            .await
    })
    .await?
    .into_inner())
}

/// `weirctl workers`.
pub async fn workers(c: &Conn) -> anyhow::Result<()> {
    let r = list_workers(c).await?;
    let mut text = format!(
        "{:16} {:22} {:6} {:>6} {:>9} {:>4}  GPUS",
        "WORKER", "CONTROL", "STATE", "CPUS", "MEM MiB", "PES"
    );
    for w in &r.workers {
        let res = w.resources.clone().unwrap_or_default();
        let state = name::<pb::WorkerState>(w.state);
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
        json!({"worker": w.worker_id, "control_address": w.control_address, "state": name::<pb::WorkerState>(w.state), "pes": w.pe_count,
            "cpu_cores": res.cpu_cores, "memory_mb": res.memory_mb,
            "gpus": res.gpus.iter().map(|g| json!({"uuid": g.uuid, "vendor": g.vendor, "model": g.model,
                "memory_total_mb": g.memory_total_mb, "memory_used_mb": g.memory_used_mb,
                "utilization_percent": g.utilization_percent, "declared": g.declared})).collect::<Vec<_>>()})
    }).collect::<Vec<_>>());
    c.print(text, json);
    Ok(())
}

/// `weirctl cluster status`: as the answering master sees it now, leader or not.
pub async fn cluster_status(c: &Conn) -> anyhow::Result<()> {
    let s = fetch_cluster_status(c).await?;
    print_cluster_status(c, &s);
    Ok(())
}

async fn fetch_cluster_status(c: &Conn) -> anyhow::Result<pb::ClusterStatusResponse> {
    Ok(c.call(Repeat::Safe, |ch| async move {
        WeirClient::new(ch)
            .cluster_status(pb::ClusterStatusRequest {})
            .await
    })
    .await?
    .into_inner())
}

/// The cluster status once the answering master knows a leader, asking again until
/// it does or `limit` passes (a master that just started answers before its first
/// election ends).
pub async fn wait_for_leader(
    c: &Conn,
    limit: Duration,
) -> anyhow::Result<pb::ClusterStatusResponse> {
    let start = Instant::now();
    loop {
        let s = fetch_cluster_status(c).await?;
        if s.leader_id.is_some() && !s.members.is_empty() {
            return Ok(s);
        }
        if start.elapsed() > limit {
            bail!(
                "no leader after {limit:?} (term {}, {} member(s))",
                s.term,
                s.members.len()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Prints a cluster status as `weirctl cluster status` does.
pub fn print_cluster_status(c: &Conn, s: &pb::ClusterStatusResponse) {
    print_members(c, &s.members, Some(s));
}

fn print_members(c: &Conn, members: &[pb::Member], s: Option<&pb::ClusterStatusResponse>) {
    let role = name::<pb::MemberRole>;
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
    // Not safe to repeat: a master that died after it got the call may have added it.
    let r = c
        .call(Repeat::Unsafe, |ch| {
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
        .call(Repeat::Unsafe, |ch| async move {
            WeirAdminClient::new(ch).remove_master(req).await
        })
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
    use super::*;

    #[test]
    fn every_watch_event_names_its_enums_in_text_and_json() {
        use pb::app_event::Event;
        let events = [
            Event::AppStateChanged(pb::AppStateChanged {
                old_state: pb::AppState::Running as i32,
                new_state: pb::AppState::Cancelled as i32,
                message: String::new(),
            }),
            Event::PlacementChanged(pb::PlacementChanged::default()),
            Event::UpgradePhaseChanged(pb::UpgradePhaseChanged {
                operation_id: "7".into(),
                phase: pb::UpgradePhase::RolledBack as i32,
                reason: "worker w1 lost".into(),
                ..Default::default()
            }),
            Event::PeStateChanged(pb::PeStateChanged {
                pe: "gen@1#0".into(),
                worker_id: "w1".into(),
                old_state: pb::PeState::Running as i32,
                new_state: pb::PeState::Stopped as i32,
                message: String::new(),
            }),
            Event::Recovery(pb::Recovery::default()),
            Event::CheckpointCompleted(pb::CheckpointCompleted::default()),
        ];
        let mut texts = vec![];
        for (i, e) in events.into_iter().enumerate() {
            let (text, json) = watch_event(&pb::AppEvent {
                seq: i as u64 + 1,
                event: Some(e),
                ..Default::default()
            });
            for key in ["state", "old_state", "phase", "event"] {
                assert!(!json[key].is_number(), "{json}");
            }
            texts.push(text);
        }
        assert_eq!(texts[0], "#1 state running -> cancelled");
        assert_eq!(texts[2], "#3 upgrade 7 phase rolled_back: worker w1 lost");
        assert_eq!(texts[3], "#4 PE gen@1#0 on w1: running -> stopped");
        let (text, _) = watch_event(&pb::AppEvent {
            seq: 5,
            event: Some(Event::UpgradePhaseChanged(pb::UpgradePhaseChanged {
                operation_id: "7".into(),
                phase: pb::UpgradePhase::Switch as i32,
                from_version: 1,
                to_version: 2,
                instructions_done: 0,
                instructions_total: 9,
                reason: String::new(),
            })),
            ..Default::default()
        });
        assert_eq!(
            text,
            "#5 upgrade 7 phase switch (v1 -> v2), 0/9 instructions"
        );
        let (text, _) = watch_event(&pb::AppEvent {
            seq: 6,
            event: Some(Event::Recovery(pb::Recovery {
                pe: "parse,views".into(),
                failed_worker_id: "w1".into(),
                new_worker_id: "w2,w3".into(),
                checkpoint_id: 4,
                reason: "worker w1 lost".into(),
            })),
            ..Default::default()
        });
        assert_eq!(
            text,
            "#6 recovery of parse,views from checkpoint 4 (moved w1 -> w2,w3): worker w1 lost"
        );
        let (text, _) = watch_event(&pb::AppEvent {
            seq: 7,
            event: Some(Event::CheckpointCompleted(pb::CheckpointCompleted {
                checkpoint_id: 3,
                duration_ms: 41,
                state_bytes: 1200,
            })),
            ..Default::default()
        });
        assert_eq!(text, "#7 checkpoint 3 complete (1200 bytes, 41 ms)");
        let (_, json) = watch_event(&pb::AppEvent {
            seq: 4,
            event: Some(Event::PeStateChanged(pb::PeStateChanged {
                new_state: pb::PeState::Stopped as i32,
                ..Default::default()
            })),
            ..Default::default()
        });
        assert_eq!(json["state"], "stopped");
    }

    #[test]
    fn a_status_from_the_master_is_an_answer_and_a_local_error_is_not() {
        let at = "10.0.0.1:7000";
        assert!(matches!(
            failure(at, Status::unavailable("no leader known")),
            Failure::Answered(_)
        ));
        // What tonic makes of a refused connection: the call never left.
        let refused = Status::from_error(Box::new(tonic::ConnectError(Box::new(
            std::io::Error::from(std::io::ErrorKind::ConnectionRefused),
        ))));
        assert!(matches!(failure(at, refused), Failure::NotSent(_)));
        // Anything else on the way (a connection that broke) may have been applied.
        let broken = Status::from_error(Box::new(std::io::Error::from(
            std::io::ErrorKind::BrokenPipe,
        )));
        let Failure::Lost {
            at: lost_at,
            detail,
        } = failure(at, broken)
        else {
            panic!("a broken connection loses the call")
        };
        assert_eq!(lost_at, at);
        assert!(detail.contains("broken pipe"), "{detail}");
        let e = lost_error(&lost_at, &detail).to_string();
        assert!(
            e.starts_with("master 10.0.0.1:7000 failed mid-call ("),
            "{e}"
        );
        assert!(e.contains("may or may not have been applied"), "{e}");
        // A follower whose forwarded call was lost at the leader: the leader failed.
        let forwarded = weir_proto::status::outcome_unknown("10.0.0.2:7000", "broken pipe");
        let Failure::Lost {
            at: lost_at,
            detail,
        } = failure(at, forwarded)
        else {
            panic!("a call lost at the leader is lost")
        };
        assert_eq!(lost_at, "10.0.0.2:7000");
        assert!(
            detail.starts_with("forwarded by 10.0.0.1:7000: "),
            "{detail}"
        );
    }

    #[test]
    fn request_ids_are_distinct_version_4_uuids() {
        let ids: std::collections::BTreeSet<String> = (0..1000).map(|_| request_id()).collect();
        assert_eq!(ids.len(), 1000);
        for id in &ids {
            let parts: Vec<&str> = id.split('-').collect();
            assert_eq!(
                parts.iter().map(|p| p.len()).collect::<Vec<_>>(),
                [8, 4, 4, 4, 12],
                "{id}"
            );
            assert!(parts[2].starts_with('4'), "{id}");
            assert!(matches!(&parts[3][..1], "8" | "9" | "a" | "b"), "{id}");
        }
    }

    #[test]
    fn utc_formats_known_instants() {
        assert_eq!(super::utc(0), "1970-01-01 00:00:00.000");
        assert_eq!(super::utc(1_700_000_000_123), "2023-11-14 22:13:20.123");
        assert_eq!(super::utc(951_782_400_000), "2000-02-29 00:00:00.000");
    }
}
