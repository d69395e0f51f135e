//! The upgrade operation's commands. Each command's check, then its effect.
//!
//! An upgrade moves through prepare (new PEs start; the old version runs), switch (the
//! switch barrier, a checkpoint, travels through the app; old PEs drain, producers
//! reroute), and cleanup (the new version is current; drained PEs stop). Each move is
//! a command, so a new leader resumes from the recorded phase.

use super::apps::check_pes_and_workers;
use super::*;
use weir_common::plan::PlanSummary;

/// What `BeginUpgrade` carries.
pub(super) struct Begin<'a> {
    pub spec: &'a AppSpec,
    pub spec_text: &'a str,
    pub at_ms: u64,
    pub placement: &'a Placement,
    pub gpus: &'a Gpus,
    pub handoff: &'a Handoff,
    pub summary: &'a PlanSummary,
    pub request_id: &'a str,
    pub generated: &'a weir_common::catalog::Provenances,
    pub signature: &'a Option<SpecSignature>,
}

/// The app `app`, if it is live (an upgrade, or a repeat of one, may concern it).
pub fn check_live_for_upgrade<'a>(
    s: &'a ClusterState,
    app: &str,
) -> Result<&'a AppRecord, CommandError> {
    live(s, app, "only a live app can be upgraded")
}

/// The app `app`, if an upgrade may begin now: it is live and runs no upgrade. The
/// API asks this before it places the new version, so its refusals are the ones the
/// command itself would answer.
pub fn check_upgradable<'a>(s: &'a ClusterState, app: &str) -> Result<&'a AppRecord, CommandError> {
    let rec = check_live_for_upgrade(s, app)?;
    if let Some(id) = rec.upgrade {
        return Err(CommandError::Upgrade(UpgradeRefusal::Running {
            app: app.to_string(),
            id,
        }));
    }
    Ok(rec)
}

pub(super) fn check_begin(
    s: &ClusterState,
    spec: &AppSpec,
    placement: &Placement,
) -> Result<(), CommandError> {
    let app = &spec.name;
    let rec = check_upgradable(s, app)?;
    if rec.placement.is_empty() {
        return Err(CommandError::Upgrade(UpgradeRefusal::NotPlaced {
            app: app.to_string(),
        }));
    }
    if let Some(q) = s.tenants.get(&rec.tenant).and_then(|t| t.quota.as_ref()) {
        // Old and new versions run side by side until the switch: the tenant holds
        // the current version's PEs and the new version's it does not share.
        let others = quota::held(s)
            .remove(&rec.tenant)
            .unwrap_or_default()
            .minus(quota::held_by(s, rec));
        let cur = &rec.current().spec;
        let both = quota::Demand::of_spec(cur).plus(quota::extra_pes(cur, spec));
        if let Some(why) = quota::over_quota(&rec.tenant, q, &others, &both) {
            return Err(CommandError::Quota(format!(
                "{why} (during the upgrade the app holds its PEs and the new version's it does not share)"
            )));
        }
    }
    check_pes_and_workers(
        s,
        app,
        placement,
        |pe| spec.operator(pe.operator()).is_some(),
        " in the new version",
    )
}

/// The running upgrade `id` of `rec`.
pub(super) fn check_active<'a>(
    s: &'a ClusterState,
    rec: &AppRecord,
    id: u64,
) -> Result<&'a UpgradeRecord, CommandError> {
    if rec.upgrade != Some(id) {
        return Err(CommandError::Upgrade(UpgradeRefusal::NotRunning {
            app: rec.name.clone(),
            id,
        }));
    }
    s.upgrades
        .get(&id)
        .ok_or(CommandError::Upgrade(UpgradeRefusal::NotRecorded { id }))
}

/// The running upgrade `id` of `rec`, which must be in `phase`.
pub(super) fn check_phase<'a>(
    s: &'a ClusterState,
    rec: &AppRecord,
    id: u64,
    phase: Phase,
) -> Result<&'a UpgradeRecord, CommandError> {
    let up = check_active(s, rec, id)?;
    if up.phase() != Some(phase) {
        return Err(CommandError::Upgrade(UpgradeRefusal::WrongPhase {
            app: rec.name.clone(),
            id,
            is: up.phase(),
            need: phase,
        }));
    }
    Ok(up)
}

pub(super) fn apply_begin(s: &mut ClusterState, b: Begin<'_>) -> Response {
    let id = s
        .next_upgrade_id
        .max(s.upgrades.keys().next_back().map_or(0, |k| k + 1))
        .max(1);
    s.next_upgrade_id = id + 1;
    let rec = std::sync::Arc::make_mut(s.apps.get_mut(&b.spec.name).expect("checked"));
    let version = rec.versions.len() as u32 + 1;
    rec.versions.push(std::sync::Arc::new(AppVersion {
        version,
        spec: b.spec.clone(),
        spec_text: b.spec_text.to_string(),
        submitted_at_ms: b.at_ms,
        request_id: b.request_id.to_string(),
        generated: b.generated.clone(),
        signature: b.signature.clone(),
    }));
    // The switch barrier is a checkpoint id nobody else will use.
    let ck = &mut rec.checkpoints;
    ck.last_id += 1;
    let barrier = ck.last_id;
    rec.upgrade = Some(id);
    s.upgrades.insert(
        id,
        UpgradeRecord {
            id,
            app: b.spec.name.clone(),
            from_version: rec.current_version,
            to_version: version,
            stage: UpgradeStage::Running {
                phase: Phase::Prepare,
                since_ms: b.at_ms,
            },
            summary: b.summary.clone(),
            started_at_ms: b.at_ms,
            barrier,
            placement: b.placement.clone(),
            gpus: b.gpus.clone(),
            handoff: b.handoff.clone(),
        },
    );
    Response::UpgradeStarted { id, version }
}

pub(super) fn check_switch(s: &ClusterState, app: &str, id: u64) -> Result<(), CommandError> {
    let rec = live_app(s, app)?;
    check_phase(s, rec, id, Phase::Prepare)?;
    if let Some(f) = &rec.checkpoints.in_flight {
        return Err(CommandError::Upgrade(UpgradeRefusal::CheckpointInFlight {
            app: app.to_string(),
            id,
            checkpoint: f.id,
        }));
    }
    Ok(())
}

pub(super) fn apply_switch(s: &mut ClusterState, app: &str, id: u64, at_ms: u64) -> Response {
    let up = s.upgrades.get_mut(&id).expect("checked");
    up.enter(Phase::Switch, at_ms);
    let barrier = up.barrier;
    let ck = &mut std::sync::Arc::make_mut(s.apps.get_mut(app).expect("checked")).checkpoints;
    ck.in_flight = Some(InFlightCheckpoint {
        id: barrier,
        started_at_ms: at_ms,
    });
    Response::Done
}

pub(super) fn check_finish_switch(
    s: &ClusterState,
    app: &str,
    id: u64,
) -> Result<(), CommandError> {
    let rec = live_app(s, app)?;
    let up = check_phase(s, rec, id, Phase::Switch)?;
    if !rec.checkpoints.complete.iter().any(|c| c.id == up.barrier) {
        return Err(CommandError::Upgrade(UpgradeRefusal::SwitchIncomplete {
            app: app.to_string(),
            id,
            checkpoint: up.barrier,
        }));
    }
    Ok(())
}

pub(super) fn apply_finish_switch(
    s: &mut ClusterState,
    app: &str,
    id: u64,
    at_ms: u64,
) -> Response {
    let up = s.upgrades.get_mut(&id).expect("checked");
    up.enter(Phase::Cleanup, at_ms);
    let (placement, gpus, handoff, barrier, to) = (
        up.placement.clone(),
        up.gpus.clone(),
        up.handoff.clone(),
        up.barrier,
        up.to_version,
    );
    let workers = &s.workers;
    let rec = std::sync::Arc::make_mut(s.apps.get_mut(app).expect("checked"));
    rec.current_version = to;
    let old = std::mem::replace(&mut rec.placement, placement);
    rec.gpus.retain(|pe, _| rec.placement.contains_key(pe));
    for (pe, g) in gpus {
        rec.gpus.insert(pe, g);
    }
    let ops: std::collections::BTreeSet<String> = rec
        .current()
        .spec
        .operators
        .iter()
        .map(|o| o.name.clone())
        .collect();
    let ck = &mut rec.checkpoints;
    // New PEs restore from the switch checkpoint through their predecessors' pieces.
    if let Some(c) = ck.complete.iter_mut().find(|c| c.id == barrier) {
        c.handoff = handoff;
    }
    ck.attempts.retain(|op, _| ops.contains(op));
    ck.restore.retain(|op, _| ops.contains(op));
    for pe in rec.placement.keys() {
        if !old.contains_key(pe) {
            ck.restore.insert(pe.operator().to_string(), barrier);
        }
    }
    ck.incarnations
        .retain(|pe, _| rec.placement.contains_key(pe));
    for (pe, w) in &rec.placement {
        ck.incarnations
            .entry(pe.clone())
            .or_insert_with(|| workers.get(w).map_or(0, |w| w.incarnation));
    }
    Response::Done
}

pub(super) fn check_complete(s: &ClusterState, app: &str, id: u64) -> Result<(), CommandError> {
    check_phase(s, live_app(s, app)?, id, Phase::Cleanup).map(|_| ())
}

pub(super) fn apply_complete(
    s: &mut ClusterState,
    app: &str,
    id: u64,
    at_ms: u64,
    result: &UpgradeResultRecord,
) -> Response {
    let up = s.upgrades.get_mut(&id).expect("checked");
    up.end(UpgradeOutcome::Completed, at_ms, Some(result.clone()));
    let rec = std::sync::Arc::make_mut(s.apps.get_mut(app).expect("checked"));
    rec.upgrade = None;
    rec.lifecycle = AppState::Running;
    Response::Done
}

pub(super) fn check_abort(
    s: &ClusterState,
    app: &str,
    id: u64,
    recover: Option<&(Vec<String>, u64)>,
) -> Result<(), CommandError> {
    let rec = live_app(s, app)?;
    let up = check_active(s, rec, id)?;
    if up.phase() == Some(Phase::Cleanup) {
        return Err(CommandError::Upgrade(UpgradeRefusal::Switched {
            app: app.to_string(),
            id,
        }));
    }
    if let Some((ops, _)) = recover {
        if let Some(op) = ops
            .iter()
            .find(|o| rec.current().spec.operator(o).is_none())
        {
            return Err(CommandError::Upgrade(UpgradeRefusal::NoOperator {
                app: app.to_string(),
                id,
                operator: op.clone(),
            }));
        }
    }
    Ok(())
}

pub(super) fn apply_abort(
    s: &mut ClusterState,
    app: &str,
    id: u64,
    at_ms: u64,
    reason: &str,
) -> Response {
    let up = s.upgrades.get_mut(&id).expect("checked");
    let barrier = up.barrier;
    up.end(UpgradeOutcome::RolledBack(reason.to_string()), at_ms, None);
    let rec = std::sync::Arc::make_mut(s.apps.get_mut(app).expect("checked"));
    rec.upgrade = None;
    rec.lifecycle = AppState::Running;
    // The switch checkpoint will never complete.
    if rec
        .checkpoints
        .in_flight
        .as_ref()
        .is_some_and(|f| f.id == barrier)
    {
        rec.checkpoints.in_flight = None;
    }
    Response::Done
}
