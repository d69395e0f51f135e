//! Checkpoint and recovery commands. Each command's check, then its effect.

use super::apps::{check_placement, note_incarnations, set_gpus};
use super::*;

pub(super) fn check_begin(s: &ClusterState, app: &str, id: u64) -> Result<(), CommandError> {
    let ck = &live_app(s, app)?.checkpoints;
    if id <= ck.last_id {
        return Err(CommandError::Checkpoint(CheckpointRefusal::IdNotAbove {
            app: app.to_string(),
            id,
            last: ck.last_id,
        }));
    }
    if let Some(f) = &ck.in_flight {
        return Err(CommandError::Checkpoint(CheckpointRefusal::InFlight {
            app: app.to_string(),
            in_flight: f.id,
        }));
    }
    Ok(())
}

pub(super) fn apply_begin(s: &mut ClusterState, app: &str, id: u64, at_ms: u64) -> Response {
    let ck = &mut Arc::make_mut(s.apps.get_mut(app).expect("checked")).checkpoints;
    ck.last_id = id;
    ck.in_flight = Some(InFlightCheckpoint {
        id,
        started_at_ms: at_ms,
    });
    Response::Done
}

/// Both `CompleteCheckpoint` and `AbandonCheckpoint` need `id` in flight.
pub(super) fn check_in_flight(s: &ClusterState, app: &str, id: u64) -> Result<(), CommandError> {
    let ck = &live_app(s, app)?.checkpoints;
    if ck.in_flight.as_ref().map(|f| f.id) != Some(id) {
        return Err(CommandError::Checkpoint(CheckpointRefusal::NotInFlight {
            app: app.to_string(),
            id,
        }));
    }
    Ok(())
}

pub(super) fn apply_complete(
    s: &mut ClusterState,
    app: &str,
    id: u64,
    at_ms: u64,
    max_alignment_ms: u64,
    pieces: &BTreeMap<PeId, PieceRecord>,
) -> Response {
    let ck = &mut Arc::make_mut(s.apps.get_mut(app).expect("checked")).checkpoints;
    let started = ck.in_flight.take().map_or(at_ms, |f| f.started_at_ms);
    ck.complete.push(CheckpointRecord {
        id,
        started_at_ms: started,
        completed_at_ms: at_ms,
        max_alignment_ms,
        pieces: pieces.clone(),
        handoff: Handoff::new(),
    });
    let excess = ck.complete.len().saturating_sub(KEEP_CHECKPOINTS);
    ck.complete.drain(..excess);
    Response::Done
}

pub(super) fn apply_abandon(s: &mut ClusterState, app: &str) -> Response {
    Arc::make_mut(s.apps.get_mut(app).expect("checked"))
        .checkpoints
        .in_flight = None;
    Response::Done
}

/// What `Recover` carries besides its app (an aborted upgrade's recovery too).
pub(super) struct Recovery<'a> {
    pub operators: &'a [String],
    pub checkpoint_id: u64,
    pub placement: &'a Placement,
    pub reason: &'a str,
    pub at_ms: u64,
    pub drop_checkpoint: Option<u64>,
    pub gpus: &'a Gpus,
}

pub(super) fn check_recover(
    s: &ClusterState,
    app: &str,
    operators: &[String],
    checkpoint_id: u64,
    placement: &Placement,
) -> Result<(), CommandError> {
    let rec = live_app(s, app)?;
    if let Some(op) = operators
        .iter()
        .find(|o| rec.current().spec.operator(o).is_none())
    {
        return Err(CommandError::Checkpoint(CheckpointRefusal::NoOperator {
            app: app.to_string(),
            operator: op.clone(),
        }));
    }
    if checkpoint_id != 0
        && !rec
            .checkpoints
            .complete
            .iter()
            .any(|c| c.id == checkpoint_id)
    {
        return Err(CommandError::Checkpoint(CheckpointRefusal::NotKept {
            app: app.to_string(),
            checkpoint: checkpoint_id,
        }));
    }
    check_placement(s, app, placement)
}

pub(super) fn apply_recover(s: &mut ClusterState, app: &str, r: Recovery<'_>) -> Response {
    let rec = Arc::make_mut(s.apps.get_mut(app).expect("checked"));
    let before = std::mem::replace(&mut rec.placement, r.placement.clone());
    set_gpus(rec, &before, r.gpus);
    let ck = &mut rec.checkpoints;
    if let Some(bad) = r.drop_checkpoint {
        ck.complete.retain(|c| c.id != bad);
    }
    let attempt = r.operators.iter().map(|o| ck.attempt(o)).max().unwrap_or(0) + 1;
    for op in r.operators {
        ck.attempts.insert(op.clone(), attempt);
        if r.checkpoint_id == 0 {
            ck.restore.remove(op);
        } else {
            ck.restore.insert(op.clone(), r.checkpoint_id);
        }
    }
    // Snapshots of a checkpoint taken before the failure may be missing pieces.
    ck.in_flight = None;
    ck.recoveries.push(RecoveryRecord {
        at_ms: r.at_ms,
        attempt,
        checkpoint_id: r.checkpoint_id,
        operators: r.operators.to_vec(),
        reason: r.reason.to_string(),
    });
    let excess = ck.recoveries.len().saturating_sub(KEEP_RECOVERIES);
    ck.recoveries.drain(..excess);
    let region: std::collections::BTreeSet<&str> = r.operators.iter().map(String::as_str).collect();
    note_incarnations(&s.workers, rec, |pe| region.contains(pe.operator()));
    Response::Done
}

/// Only a running app, placed, with no upgrade in progress, can be preempted.
pub(super) fn check_preempt(s: &ClusterState, app: &str) -> Result<(), CommandError> {
    let rec = live(s, app, "only a running app can be preempted")?;
    if rec.state() != AppState::Running || rec.upgrade.is_some() || rec.placement.is_empty() {
        return Err(wrong_state(
            rec,
            "only a running app, placed and not upgrading, can be preempted",
        ));
    }
    Ok(())
}

/// Every operator restarts from the latest complete checkpoint under a new attempt,
/// once placed again; until then the app waits in the queue and holds nothing.
pub(super) fn apply_preempt(s: &mut ClusterState, app: &str, by: &str, at_ms: u64) -> Response {
    let Some(rec) = s.apps.get(app) else {
        return Response::Done;
    };
    let operators: Vec<String> = rec
        .current()
        .spec
        .operators
        .iter()
        .map(|o| o.name.clone())
        .collect();
    let checkpoint_id = rec.checkpoints.latest().map_or(0, |c| c.id);
    let reason = format!("preempted by {by}");
    apply_recover(
        s,
        app,
        Recovery {
            operators: &operators,
            checkpoint_id,
            placement: &BTreeMap::new(),
            reason: &reason,
            at_ms,
            drop_checkpoint: None,
            gpus: &BTreeMap::new(),
        },
    );
    let rec = Arc::make_mut(s.apps.get_mut(app).expect("checked"));
    rec.lifecycle = AppState::Submitted;
    rec.queued_at_ms = Some(at_ms);
    Response::Done
}
