//! `weirctl upgrade`, `history` and `rollback`: online upgrades from the command line.
//!
//! An upgrade prints its plan (what changes, what is untouched), then one progress bar
//! per phase as the master drives it, then a summary: PEs started, stopped, rewired and
//! untouched, records lost and duplicated at the audit sinks, and the longest stall in
//! sink output. A rollback is an upgrade back to an earlier version's spec.

use crate::names::name;
use crate::online::{read_spec, request_id, utc, Conn, Repeat};
use anyhow::{bail, Context};
use serde_json::json;
use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};
use weir_proto::v1 as pb;
use weir_proto::v1::weir_client::WeirClient;

/// How long `weirctl upgrade` follows an operation before giving up watching (the
/// upgrade itself goes on in the cluster).
const FOLLOW_FOR: Duration = Duration::from_secs(300);

/// `weirctl upgrade APP FILE [--dry-run]`.
pub async fn upgrade(c: &Conn, app: &str, file: &str, dry_run: bool) -> anyhow::Result<()> {
    let (spec, format) = read_spec(file)?;
    run(c, app, spec, format, dry_run).await
}

/// `weirctl rollback APP --to N`: an online upgrade back to version N's spec.
pub async fn rollback(c: &Conn, app: &str, to: u64) -> anyhow::Result<()> {
    let h = history_of(c, app).await?;
    let v = h
        .versions
        .iter()
        .find(|v| v.version == to)
        .with_context(|| {
            format!(
                "--to: {app} has no version {to} (versions 1..={})",
                h.versions.len()
            )
        })?;
    if v.spec.is_empty() {
        bail!("--to: the master did not return the spec of version {to}");
    }
    if has_redacted_env(&v.spec) {
        // The master shows env values as "(set)", never the values: resubmitting the
        // text it returned would replace every secret with that placeholder.
        bail!(
            "--to: version {to} sets env values the master does not return; roll back with `weirctl upgrade {app} FILE` and the original spec file"
        );
    }
    c.note(format!(
        "rolling {app} back to the spec of version {to} (an online upgrade)"
    ));
    run(c, app, v.spec.clone(), pb::SpecFormat::Yaml as i32, false).await
}

async fn run(c: &Conn, app: &str, spec: String, format: i32, dry_run: bool) -> anyhow::Result<()> {
    // One id for every attempt: a repeat after a lost call answers the operation the
    // first attempt started instead of starting a second one (or being refused).
    let req = pb::UpgradeAppRequest {
        app: app.into(),
        signature: c.sign(&spec),
        spec,
        format,
        dry_run,
        request_id: if dry_run { String::new() } else { request_id() },
        ..Default::default()
    };
    let r = c
        .call(Repeat::Safe, |ch| {
            let req = req.clone();
            async move { WeirClient::new(ch).upgrade_app(req).await }
        })
        .await?
        .into_inner();
    let plan: serde_json::Value = serde_json::from_str(&r.plan_json).unwrap_or_default();
    if dry_run {
        c.print(r.plan_text, plan);
        return Ok(());
    }
    c.note(r.plan_text.trim_end().to_string());
    let op = follow(c, app, &r.operation_id).await?;
    let summary = r.plan.and_then(|p| p.summary).unwrap_or_default();
    let result = op.result.clone().unwrap_or_default();
    let took = op.finished_at_ms.saturating_sub(op.started_at_ms);
    let done = op.phase == pb::UpgradePhase::Done as i32;
    let text = if done {
        format!(
            "upgrade {} of {app}: v{} -> v{} done in {took} ms\n  PEs started {}, stopped {}, rewired {}, untouched {}\n  records lost {}, records duplicated {}, longest stall at the sinks {} ms",
            op.operation_id,
            op.from_version,
            op.to_version,
            summary.pes_started,
            summary.pes_stopped,
            summary.pes_rewired,
            summary.pes_untouched,
            result.records_lost,
            result.records_duplicated,
            result.longest_stall_ms
        ) + &state_moved(&result)
    } else {
        format!(
            "upgrade {} of {app}: v{} -> v{} ROLLED BACK after {took} ms: {}\n  v{} runs as before",
            op.operation_id, op.from_version, op.to_version, op.reason, op.from_version
        )
    };
    c.print(
        text,
        json!({
            "operation_id": op.operation_id,
            "from_version": op.from_version,
            "to_version": op.to_version,
            "outcome": if done { "done" } else { "rolled_back" },
            "reason": op.reason,
            "took_ms": took,
            "pes_started": summary.pes_started,
            "pes_stopped": summary.pes_stopped,
            "pes_rewired": summary.pes_rewired,
            "pes_untouched": summary.pes_untouched,
            "records_lost": result.records_lost,
            "records_duplicated": result.records_duplicated,
            "longest_stall_ms": result.longest_stall_ms,
            "state_precopied_bytes": result.state_precopied_bytes,
            "state_barrier_bytes": result.state_barrier_bytes,
            "successors_behind": result.successors_behind,
            "plan": plan,
        }),
    );
    if !done {
        bail!("the upgrade rolled back: {}", op.reason);
    }
    Ok(())
}

const PHASES: [(pb::UpgradePhase, &str); 3] = [
    (pb::UpgradePhase::Prepare, "prepare"),
    (pb::UpgradePhase::Switch, "switch"),
    (pb::UpgradePhase::Cleanup, "cleanup"),
];

fn rank(phase: i32) -> usize {
    match pb::UpgradePhase::try_from(phase) {
        Ok(pb::UpgradePhase::Prepare) => 0,
        Ok(pb::UpgradePhase::Switch) => 1,
        Ok(pb::UpgradePhase::Cleanup) => 2,
        _ => 3,
    }
}

/// Follows operation `id` until it ends, drawing a bar per phase (on stderr, so
/// `--output json` stays parseable).
async fn follow(c: &Conn, app: &str, id: &str) -> anyhow::Result<pb::UpgradeOperation> {
    let start = Instant::now();
    let mut shown = 0usize; // phases finished and drawn
    let mut since = Instant::now();
    let mut err = std::io::stderr();
    loop {
        let h = history_of(c, app).await?;
        let op = h
            .operations
            .into_iter()
            .find(|o| o.operation_id == id)
            .with_context(|| format!("upgrade {id} of {app} is not in its history"))?;
        let now_rank = rank(op.phase);
        while shown < now_rank.min(3) {
            // On a terminal, the rest of the line drawn within the phase is cleared.
            let clear = if err.is_terminal() { "\x1b[K" } else { "" };
            let _ = writeln!(
                err,
                "\r  {:<8} [{}] {:>6} ms{clear}",
                PHASES[shown].1,
                "#".repeat(30),
                since.elapsed().as_millis()
            );
            since = Instant::now();
            shown += 1;
        }
        if op.finished_at_ms != 0 {
            return Ok(op);
        }
        if shown < 3 && err.is_terminal() {
            // Within a phase: a bar that fills with time (phases take milliseconds to
            // seconds), and in prepare how far the successors' pre-copy is.
            let fill = ((since.elapsed().as_millis() / 50) as usize).min(29);
            let state = if shown == 0 {
                prepare_progress(op.progress.as_ref())
            } else {
                String::new()
            };
            let _ = write!(
                err,
                "\r  {:<8} [{}{}] {:>6} ms{state}\x1b[K",
                PHASES[shown].1,
                "#".repeat(fill),
                ".".repeat(30 - fill),
                since.elapsed().as_millis()
            );
            let _ = err.flush();
        }
        if start.elapsed() > FOLLOW_FOR {
            bail!("upgrade {id} still runs after {FOLLOW_FOR:?}; follow it with `weirctl history {app}`");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// What an upgrade's result says of the state its successors took over: lines to
/// append, empty when no state moved.
fn state_moved(r: &pb::UpgradeResult) -> String {
    let mut text = String::new();
    if r.state_precopied_bytes + r.state_barrier_bytes > 0 {
        text += &format!(
            "\n  state pre-copied {}, moved at the switch {}",
            crate::images::size(r.state_precopied_bytes),
            crate::images::size(r.state_barrier_bytes)
        );
    }
    if !r.successors_behind.is_empty() {
        text += &format!(
            "\n  ready while still behind (what they had not applied moved at the switch): {}",
            r.successors_behind.join("; ")
        );
    }
    text
}

/// How far a prepare's successors are, for the phase bar: empty when nothing
/// stateful moves.
fn prepare_progress(p: Option<&pb::UpgradeProgress>) -> String {
    match p {
        Some(p) if p.successors > 0 => format!(
            "  state pre-copied {} of ~{}, {}/{} successors ready",
            crate::images::size(p.state_precopied_bytes),
            crate::images::size(p.state_to_precopy_bytes),
            p.successors_ready,
            p.successors
        ),
        _ => String::new(),
    }
}

async fn history_of(c: &Conn, app: &str) -> anyhow::Result<pb::GetAppHistoryResponse> {
    let req = pb::GetAppHistoryRequest { app: app.into() };
    Ok(c.call(Repeat::Safe, |ch| {
        let req = req.clone();
        async move { WeirClient::new(ch).get_app_history(req).await }
    })
    .await?
    .into_inner())
}

fn phase_name(p: i32) -> String {
    name::<pb::UpgradePhase>(p)
}

/// `weirctl history APP`: every version and every upgrade operation with its outcome.
pub async fn history(c: &Conn, app: &str) -> anyhow::Result<()> {
    let h = history_of(c, app).await?;
    let mut text = format!(
        "{:>7}  {:<24}  {:>9}  {:>4}  {:<10}  {}\n",
        "VERSION", "CREATED (UTC)", "OPERATORS", "PES", "BY UPGRADE", "SIGNED BY KEY"
    );
    for v in &h.versions {
        text.push_str(&format!(
            "{:>7}  {:<24}  {:>9}  {:>4}  {:<10}  {}\n",
            v.version,
            utc(v.created_at_ms),
            v.operator_count,
            v.pe_count,
            if v.operation_id.is_empty() {
                "-"
            } else {
                &v.operation_id
            },
            if v.signed_by_key.is_empty() {
                "unsigned"
            } else {
                &v.signed_by_key
            }
        ));
    }
    for v in &h.versions {
        for line in crate::catalog::generated_lines(&v.generated) {
            text.push_str(&format!("{:>7}  {line}\n", format!("v{}", v.version)));
        }
    }
    if !h.operations.is_empty() {
        text.push_str(&format!(
            "\n{:>9}  {:<8}  {:<11}  {:<24}  {:>8}  {:>4}  {:>4}  {:>8}  {}\n",
            "UPGRADE",
            "VERSIONS",
            "OUTCOME",
            "STARTED (UTC)",
            "TOOK",
            "LOST",
            "DUP",
            "STALL",
            "REASON"
        ));
    }
    for o in &h.operations {
        let r = o.result.clone().unwrap_or_default();
        let took = if o.finished_at_ms == 0 {
            "-".to_string()
        } else {
            format!("{}ms", o.finished_at_ms.saturating_sub(o.started_at_ms))
        };
        text.push_str(&format!(
            "{:>9}  {:<8}  {:<11}  {:<24}  {:>8}  {:>4}  {:>4}  {:>6}ms  {}\n",
            o.operation_id,
            format!("{}->{}", o.from_version, o.to_version),
            phase_name(o.phase),
            utc(o.started_at_ms),
            took,
            r.records_lost,
            r.records_duplicated,
            r.longest_stall_ms,
            o.reason
        ));
    }
    let json = json!({
        "versions": h.versions.iter().map(|v| json!({
            "version": v.version, "created_at_ms": v.created_at_ms,
            "operators": v.operator_count, "pes": v.pe_count, "operation_id": v.operation_id,
            "generated": crate::catalog::generated_json(&v.generated),
            "signed_by_key": v.signed_by_key,
        })).collect::<Vec<_>>(),
        "operations": h.operations.iter().map(|o| {
            let r = o.result.clone().unwrap_or_default();
            json!({
                "operation_id": o.operation_id, "from_version": o.from_version,
                "to_version": o.to_version, "outcome": phase_name(o.phase), "reason": o.reason,
                "started_at_ms": o.started_at_ms, "finished_at_ms": o.finished_at_ms,
                "records_lost": r.records_lost, "records_duplicated": r.records_duplicated,
                "longest_stall_ms": r.longest_stall_ms,
                "state_precopied_bytes": r.state_precopied_bytes,
                "state_barrier_bytes": r.state_barrier_bytes,
                "successors_behind": r.successors_behind,
            })
        }).collect::<Vec<_>>(),
    });
    c.print(text.trim_end().to_string(), json);
    Ok(())
}

/// Whether a spec as the master returns it has env values it withheld.
fn has_redacted_env(spec: &str) -> bool {
    use weir_common::catalog::{parse_app_with, Resolve};
    use weir_common::spec::{OperatorKind, SpecFormat, REDACTED};
    let Ok(r) = parse_app_with(spec, SpecFormat::Yaml, Resolve::Offline) else {
        return false; // the master's own check reports what is wrong with it
    };
    r.spec.operators.iter().any(|o| match &o.kind {
        OperatorKind::Exec(p) => p.env.values().any(|v| v == REDACTED),
        OperatorKind::Container(p) => p.env.values().any(|v| v == REDACTED),
        _ => false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_state_an_upgrade_moved_is_shown_only_when_some_did() {
        assert_eq!(state_moved(&pb::UpgradeResult::default()), "");
        let r = pb::UpgradeResult {
            state_precopied_bytes: 1_043_000_000,
            state_barrier_bytes: 2_400_000,
            successors_behind: vec!["win@3: out of catch-up time".into()],
            ..Default::default()
        };
        assert_eq!(
            state_moved(&r),
            "\n  state pre-copied 1.0GB, moved at the switch 2.4MB\n  ready while still behind (what they had not applied moved at the switch): win@3: out of catch-up time"
        );
        assert_eq!(prepare_progress(None), "");
        let p = pb::UpgradeProgress {
            successors: 3,
            successors_ready: 1,
            state_precopied_bytes: 412_000_000,
            state_to_precopy_bytes: 1_043_000_000,
            ..Default::default()
        };
        assert_eq!(
            prepare_progress(Some(&p)),
            "  state pre-copied 412.0MB of ~1.0GB, 1/3 successors ready"
        );
    }

    #[test]
    fn a_returned_spec_with_withheld_env_is_not_resubmitted() {
        let spec = |v: &str| {
            format!(
                "name: s\noperators:\n  - {{name: gen, kind: source.generator, params: {{count: 1}}}}\n  - {{name: p, kind: exec, params: {{command: [cat], env: {{T: \"{v}\"}}}}}}\n  - {{name: out, kind: sink.null}}\nstreams:\n  - {{from: gen, to: p}}\n  - {{from: p, to: out}}\n"
            )
        };
        assert!(has_redacted_env(&spec("(set)")));
        assert!(!has_redacted_env(&spec("real")));
    }
}
