//! App commands: submit, finish, cancel and place. Each command's check, then its
//! effect, which runs only once the check passed.

use super::*;
use std::collections::BTreeSet;

pub(super) fn check_submit(
    s: &ClusterState,
    spec: &AppSpec,
    generated: &weir_common::catalog::Provenances,
) -> Result<(), CommandError> {
    if s.apps.contains_key(&spec.name) {
        return Err(CommandError::AppExists(spec.name.clone()));
    }
    catalog::check_generated(s, generated)?;
    check_after_cycle(s, spec)?;
    let quota = s.tenants.get(&spec.tenant).and_then(|t| t.quota.as_ref());
    if let Some(q) = quota {
        let alone = quota::Demand::of_spec(spec);
        if let Some(why) = quota::over_quota(&spec.tenant, q, &Default::default(), &alone) {
            return Err(CommandError::Quota(format!(
                "{why}: this app alone passes the quota, so it could never start (an admin raises it with `weirctl tenant set-quota`)"
            )));
        }
    }
    Ok(())
}

/// Refuses a spec whose `start.after` waits, directly or through other apps of its
/// tenant, for an app that waits for it: neither would ever start.
fn check_after_cycle(s: &ClusterState, spec: &AppSpec) -> Result<(), CommandError> {
    let mut seen: BTreeSet<&str> = BTreeSet::new();
    // (app, the chain that led to it)
    let mut todo: Vec<(&str, String)> = spec
        .start
        .after
        .iter()
        .map(|a| (a.as_str(), format!("{} -> {a}", spec.name)))
        .collect();
    while let Some((name, chain)) = todo.pop() {
        if name == spec.name {
            return Err(CommandError::Spec(format!(
                "start.after: {chain}: these apps would wait for each other forever"
            )));
        }
        if !seen.insert(name) {
            continue;
        }
        let Some(app) = s.apps.get(name).filter(|a| a.tenant == spec.tenant) else {
            continue;
        };
        if app.placed_at_ms.is_some() || !app.state().is_live() {
            continue;
        }
        for next in &app.current().spec.start.after {
            todo.push((next.as_str(), format!("{chain} -> {next}")));
        }
    }
    Ok(())
}

pub(super) fn apply_submit(
    s: &mut ClusterState,
    spec: &AppSpec,
    spec_text: &str,
    at_ms: u64,
    request_id: &str,
    generated: &weir_common::catalog::Provenances,
    signature: &Option<SpecSignature>,
) -> Response {
    let tenant = s.tenants.entry(spec.tenant.clone()).or_default();
    tenant.name = spec.tenant.clone();
    tenant.apps += 1;
    s.apps.insert(
        spec.name.clone(),
        Arc::new(AppRecord {
            name: spec.name.clone(),
            tenant: spec.tenant.clone(),
            lifecycle: AppState::Submitted,
            versions: vec![Arc::new(AppVersion {
                version: 1,
                spec: spec.clone(),
                spec_text: spec_text.to_string(),
                submitted_at_ms: at_ms,
                request_id: request_id.to_string(),
                generated: generated.clone(),
                signature: signature.clone(),
            })],
            current_version: 1,
            created_at_ms: at_ms,
            cancelled_at_ms: None,
            placed_at_ms: None,
            queued_at_ms: None,
            placement: BTreeMap::new(),
            checkpoints: AppCheckpoints::default(),
            gpus: BTreeMap::new(),
            upgrade: None,
            finished: None,
            cancel_request_id: None,
        }),
    );
    Response::AppVersion {
        app: spec.name.clone(),
        version: 1,
    }
}

pub(super) fn check_finish(s: &ClusterState, name: &str) -> Result<(), CommandError> {
    let app = known_app(s, name)?;
    if app.state() != AppState::Running || app.upgrade.is_some() {
        return Err(wrong_state(
            app,
            "only a running app with no upgrade in progress can finish",
        ));
    }
    Ok(())
}

pub(super) fn apply_finish(
    s: &mut ClusterState,
    app: &str,
    at_ms: u64,
    pes: &BTreeMap<PeId, FinalPe>,
) -> Response {
    let rec = Arc::make_mut(s.apps.get_mut(app).expect("checked"));
    rec.lifecycle = AppState::Finished;
    rec.finished = Some(FinishedRecord {
        at_ms,
        pes: pes.clone(),
    });
    rec.placement.clear();
    rec.gpus.clear();
    if let Some(t) = s.tenants.get_mut(&rec.tenant) {
        t.apps = t.apps.saturating_sub(1);
    }
    Response::Done
}

pub(super) fn check_cancel(s: &ClusterState, name: &str) -> Result<(), CommandError> {
    live(s, name, "only a live app can be cancelled").map(|_| ())
}

pub(super) fn apply_cancel(
    s: &mut ClusterState,
    name: &str,
    at_ms: u64,
    request_id: &str,
) -> Response {
    let app = Arc::make_mut(s.apps.get_mut(name).expect("checked"));
    app.lifecycle = AppState::Cancelled;
    app.cancelled_at_ms = Some(at_ms);
    app.cancel_request_id = (!request_id.is_empty()).then(|| request_id.to_string());
    if let Some(id) = app.upgrade.take() {
        if let Some(up) = s.upgrades.get_mut(&id) {
            up.end(
                UpgradeOutcome::RolledBack("the app was cancelled".into()),
                at_ms,
                None,
            );
        }
    }
    app.placement.clear();
    app.gpus.clear();
    if let Some(t) = s.tenants.get_mut(&app.tenant) {
        t.apps = t.apps.saturating_sub(1);
    }
    Response::Done
}

/// A placement may name only PEs of the app's current version and alive workers (a
/// recovery's placement too).
pub(super) fn check_placement(
    s: &ClusterState,
    app: &str,
    placement: &Placement,
) -> Result<(), CommandError> {
    let rec = known_app(s, app)?;
    let spec = &rec.current().spec;
    // A bare operator name is no PE id.
    let is_pe = |pe: &PeId| pe.as_str().contains('@') && spec.operator(pe.operator()).is_some();
    check_pes_and_workers(s, app, placement, is_pe, "")?;
    // Leaving the queue: the quota must still allow it when this commits (the
    // decision was taken on an earlier state; an upgrade may have grown the tenant
    // since). Refused, the app stays queued.
    let quota = s.tenants.get(&rec.tenant).and_then(|t| t.quota.as_ref());
    if let (Some(q), true) = (quota, rec.placement.is_empty() && !placement.is_empty()) {
        let held = quota::held(s).remove(&rec.tenant).unwrap_or_default();
        if let Some(why) = quota::over_quota(&rec.tenant, q, &held, &quota::Demand::of_spec(spec)) {
            return Err(CommandError::Quota(why));
        }
    }
    Ok(())
}

/// Every PE `placement` names is one `is_pe` knows, on an alive worker; `of` completes
/// the refusal of an unknown PE.
pub(super) fn check_pes_and_workers(
    s: &ClusterState,
    app: &str,
    placement: &Placement,
    is_pe: impl Fn(&PeId) -> bool,
    of: &str,
) -> Result<(), CommandError> {
    for (pe, worker) in placement {
        if !is_pe(pe) {
            return Err(CommandError::BadPlacement {
                app: app.to_string(),
                why: format!("no PE {pe:?}{of}"),
            });
        }
        if s.workers
            .get(worker)
            .is_none_or(|w| w.state != WorkerState::Alive)
        {
            return Err(CommandError::BadPlacement {
                app: app.to_string(),
                why: format!("worker {worker:?} is not alive"),
            });
        }
    }
    Ok(())
}

pub(super) fn apply_set_placement(
    s: &mut ClusterState,
    app: &str,
    placement: &Placement,
    gpus: &Gpus,
    at_ms: u64,
) -> Response {
    let rec = Arc::make_mut(s.apps.get_mut(app).expect("checked"));
    // Entries written before the clock was carried say 0: their app counts as placed
    // when it was submitted (deterministic on every master, and close enough).
    if rec.placement.is_empty() && !placement.is_empty() {
        rec.placed_at_ms = Some(if at_ms == 0 { rec.created_at_ms } else { at_ms });
    }
    let before = std::mem::replace(&mut rec.placement, placement.clone());
    set_gpus(rec, &before, gpus);
    note_incarnations(&s.workers, rec, |pe| before.get(pe) != placement.get(pe));
    if rec.state() == AppState::Submitted && !placement.is_empty() {
        rec.lifecycle = AppState::Running;
    }
    Response::Done
}

/// GPUs of PEs that stayed put are kept; moved or gone PEs release theirs; `new` adds
/// the allocations of PEs placed anew.
pub(super) fn set_gpus(rec: &mut AppRecord, before: &Placement, new: &Gpus) {
    update_gpus(&mut rec.gpus, before, &rec.placement, new);
}

/// The rule of [`set_gpus`] on its own (the watch follows an app's GPUs by it): when
/// the placement goes from `before` to `placement`, `gpus` keeps the allocations of PEs
/// that stayed put and takes `new`'s for PEs placed anew.
pub fn update_gpus(gpus: &mut Gpus, before: &Placement, placement: &Placement, new: &Gpus) {
    gpus.retain(|pe, _| placement.get(pe).is_some() && placement.get(pe) == before.get(pe));
    for (pe, uuids) in new {
        if placement.contains_key(pe) && !uuids.is_empty() {
            gpus.insert(pe.clone(), uuids.clone());
        }
    }
}

/// Records the incarnation of the worker of every PE placed anew or moved.
pub(super) fn note_incarnations(
    workers: &BTreeMap<String, WorkerRecord>,
    rec: &mut AppRecord,
    refresh: impl Fn(&PeId) -> bool,
) {
    let ck = &mut rec.checkpoints;
    ck.incarnations
        .retain(|pe, _| rec.placement.contains_key(pe));
    for (pe, w) in &rec.placement {
        let inc = workers.get(w).map_or(0, |w| w.incarnation);
        if refresh(pe) || !ck.incarnations.contains_key(pe) {
            ck.incarnations.insert(pe.clone(), inc);
        }
    }
}
