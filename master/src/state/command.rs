//! Commands proposed through Raft, the checks that refuse them, and their effects.

use super::catalog;
use super::*;
use std::sync::Arc;
use weir_common::image::{bound, ImageInfo};
use weir_common::physical::PeId;
use weir_common::plan::Phase;
use weir_common::spec::AppSpec;

/// A change to the cluster state, proposed by the leader and applied by every master.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case")]
pub enum Command {
    /// Store v1 of a new app.
    SubmitApp {
        /// The validated model.
        spec: AppSpec,
        /// The submitted text.
        spec_text: String,
        /// Leader clock.
        at_ms: u64,
        /// The client's idempotency key; empty for none. A repeat of an applied
        /// request answers that request's outcome and changes nothing (see
        /// [`ClusterState::repeated`]). Absent in entries written before it existed.
        #[serde(default, skip_serializing_if = "String::is_empty")]
        request_id: String,
        /// Which template and base image generated which operator of `spec`; the
        /// commit is refused if one of them went away since. Absent when none did.
        #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
        generated: weir_common::catalog::Provenances,
    },
    /// A running app ran to its end (every PE of its placement reported stopped after
    /// its inputs ended): it is marked finished and its resources freed.
    FinishApp {
        /// App name.
        app: String,
        /// Leader clock.
        at_ms: u64,
        /// Each PE's final report.
        pes: BTreeMap<String, FinalPe>,
    },
    /// Cancel a live app.
    CancelApp {
        /// App name.
        name: String,
        /// Leader clock.
        at_ms: u64,
        /// The client's idempotency key; empty for none. A repeat of an applied
        /// request answers that request's outcome and changes nothing (see
        /// [`ClusterState::repeated`]). Absent in entries written before it existed.
        #[serde(default, skip_serializing_if = "String::is_empty")]
        request_id: String,
    },
    /// A worker (re-)registers.
    RegisterWorker {
        /// The worker as it describes itself.
        worker: WorkerRecord,
    },
    /// A worker's liveness changed (the leader saw heartbeats stop or resume).
    SetWorkerState {
        /// Worker id.
        id: String,
        /// New state.
        state: WorkerState,
        /// Leader clock.
        at_ms: u64,
    },
    /// The scheduler placed (some of) an app's PEs.
    SetPlacement {
        /// App name.
        app: String,
        /// PE id -> worker id; replaces the previous placement.
        placement: BTreeMap<String, String>,
        /// PE id -> GPU UUIDs for PEs placed anew with GPUs (kept PEs keep theirs).
        #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
        gpus: BTreeMap<String, Vec<String>>,
    },
    /// The leader triggers checkpoint `id` of an app.
    BeginCheckpoint {
        /// App name.
        app: String,
        /// The checkpoint id: above every id begun before.
        id: u64,
        /// Leader clock.
        at_ms: u64,
    },
    /// Every PE of the app reported its snapshot of the in-flight checkpoint `id`.
    CompleteCheckpoint {
        /// App name.
        app: String,
        /// The checkpoint id.
        id: u64,
        /// Leader clock.
        at_ms: u64,
        /// The longest alignment, ms.
        max_alignment_ms: u64,
        /// The snapshot of every PE with state.
        pieces: BTreeMap<String, PieceRecord>,
    },
    /// The in-flight checkpoint `id` will not complete (timeout, recovery, new leader).
    AbandonCheckpoint {
        /// App name.
        app: String,
        /// The checkpoint id.
        id: u64,
    },
    /// Restart the regions holding `operators` from checkpoint `checkpoint_id` (0:
    /// empty state) under a new attempt, with `placement` as the app's placement.
    Recover {
        /// App name.
        app: String,
        /// Every operator of the affected regions.
        operators: Vec<String>,
        /// The checkpoint to restore; 0 for empty state.
        checkpoint_id: u64,
        /// The app's whole placement afterwards (lost PEs moved).
        placement: BTreeMap<String, String>,
        /// Why, for humans.
        reason: String,
        /// Leader clock.
        at_ms: u64,
        /// A complete checkpoint found unreadable: forgotten, so no later recovery
        /// picks it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        drop_checkpoint: Option<u64>,
        /// PE id -> GPU UUIDs for PEs placed anew with GPUs.
        #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
        gpus: BTreeMap<String, Vec<String>>,
    },
    /// Start an online upgrade: store the new version, reserve the switch barrier,
    /// record the new version's placement. The app runs its old version until the
    /// switch completes.
    BeginUpgrade {
        /// The validated new model (same name).
        spec: AppSpec,
        /// The submitted text.
        spec_text: String,
        /// Leader clock.
        at_ms: u64,
        /// Where every PE of the new version runs.
        placement: BTreeMap<String, String>,
        /// GPUs of new PEs.
        #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
        gpus: BTreeMap<String, Vec<String>>,
        /// New PE -> the old PEs whose state it takes over.
        #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
        handoff: BTreeMap<String, Vec<String>>,
        /// Plan counts.
        summary: weir_common::plan::PlanSummary,
        /// The client's idempotency key; empty for none. A repeat of an applied
        /// request answers that request's outcome and changes nothing (see
        /// [`ClusterState::repeated`]). Absent in entries written before it existed.
        #[serde(default, skip_serializing_if = "String::is_empty")]
        request_id: String,
        /// Which template and base image generated which operator of `spec`; the
        /// commit is refused if one of them went away since. Absent when none did.
        #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
        generated: weir_common::catalog::Provenances,
    },
    /// Every new PE runs and every switch action is armed: the switch barrier (a
    /// checkpoint) is begun.
    UpgradeSwitch {
        /// App name.
        app: String,
        /// Operation id.
        id: u64,
        /// Leader clock.
        at_ms: u64,
    },
    /// The switch checkpoint completed: the new version is the current one.
    FinishUpgradeSwitch {
        /// App name.
        app: String,
        /// Operation id.
        id: u64,
        /// Leader clock.
        at_ms: u64,
    },
    /// Every drained PE is gone: the upgrade is done.
    CompleteUpgrade {
        /// App name.
        app: String,
        /// Operation id.
        id: u64,
        /// Leader clock.
        at_ms: u64,
        /// What it cost.
        result: UpgradeResultRecord,
    },
    /// The upgrade failed before its switch completed: the old version stays. When the
    /// switch had begun, `recover` restarts the regions it touched from the newest
    /// complete checkpoint (taken before the switch), which undoes it exactly.
    AbortUpgrade {
        /// App name.
        app: String,
        /// Operation id.
        id: u64,
        /// Leader clock.
        at_ms: u64,
        /// Why.
        reason: String,
        /// Operators to restart and the checkpoint to restore (0: empty state).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        recover: Option<(Vec<String>, u64)>,
    },
    /// Add a base image to the catalog.
    RegisterBaseImage {
        /// The image, validated.
        image: weir_common::catalog::BaseImage,
    },
    /// Remove a base image from the catalog.
    RemoveBaseImage {
        /// Its name.
        name: String,
    },
    /// Add a PE template to the catalog.
    AddTemplate {
        /// The template, validated.
        template: weir_common::catalog::Template,
    },
    /// Remove a PE template from the catalog.
    RemoveTemplate {
        /// Its name.
        name: String,
    },
    /// Several commands proposed together (see `api::propose`): each is checked and
    /// applied on its own, in order, and answered on its own.
    Batch {
        /// The commands, in the order they apply.
        cmds: Vec<Command>,
    },
    /// A worker reported a different set of container images than its record holds.
    SetWorkerImages {
        /// Worker id.
        id: String,
        /// Everything it holds now (bounded again when applied).
        images: Vec<ImageInfo>,
    },
}

impl Command {
    /// Roughly how many bytes the command takes in a log entry: a spec travels as its
    /// text and as the parsed model, each about the text's size; anything else is
    /// small. Used to bound batches (see `api::propose`).
    pub fn weight(&self) -> usize {
        const SMALL: usize = 256;
        match self {
            Command::SubmitApp { spec_text, .. } | Command::BeginUpgrade { spec_text, .. } => {
                SMALL + 3 * spec_text.len()
            }
            Command::AddTemplate { template } => {
                SMALL + serde_json::to_vec(template).map_or(0, |t| t.len())
            }
            Command::Batch { cmds } => cmds.iter().map(Command::weight).sum(),
            Command::SetWorkerImages { images, .. } => SMALL + images_weight(images),
            Command::RegisterWorker { worker } => SMALL + images_weight(&worker.images),
            _ => SMALL,
        }
    }
}

/// Bytes of references in an image list (ids, tags, digests; the rest is small).
fn images_weight(images: &[ImageInfo]) -> usize {
    images
        .iter()
        .map(|i| {
            32 + i.id.len()
                + i.tags
                    .iter()
                    .chain(&i.digests)
                    .map(String::len)
                    .sum::<usize>()
        })
        .sum()
}

/// What a successful command answers.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(tag = "ok", rename_all = "snake_case")]
pub enum Response {
    /// Done; nothing to report.
    #[default]
    Done,
    /// The app version now stored.
    AppVersion {
        /// App name.
        app: String,
        /// Its version.
        version: u32,
    },
    /// An upgrade operation began.
    UpgradeStarted {
        /// Operation id.
        id: u64,
        /// The version it upgrades to.
        version: u32,
    },
    /// The answers of a [`Command::Batch`], one per command, in order.
    Batch {
        /// Each command's own outcome.
        results: Vec<Result<Response, CommandError>>,
    },
}

/// Why a command was refused. Each maps to one gRPC status code.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum CommandError {
    /// An app with that name exists (live or cancelled: names are never reused).
    #[error("app {0:?} already exists")]
    AppExists(String),
    /// No app with that name.
    #[error("app {0:?} not found")]
    AppNotFound(String),
    /// The app is not in a state that allows the command.
    #[error("app {app:?} is {state}: {why}")]
    AppState {
        /// App name.
        app: String,
        /// Its state.
        state: String,
        /// What the command needed.
        why: String,
    },
    /// No worker with that id.
    #[error("worker {0:?} not found")]
    WorkerNotFound(String),
    /// A checkpoint or recovery command that does not fit the app's state.
    #[error("{0}")]
    Checkpoint(String),
    /// An upgrade command that does not fit the app's state (another upgrade runs, or
    /// the operation is not in the phase the command needs).
    #[error("{0}")]
    Upgrade(String),
    /// A request id already used by a different request.
    #[error("request_id: {request_id:?} {why}; a new request needs a new request id")]
    RequestIdReused {
        /// The request id.
        request_id: String,
        /// What the request that used it did.
        why: String,
    },
    /// A catalog command, or a generated spec whose catalog entries went away.
    #[error("{0}")]
    Catalog(super::catalog::CatalogError),
    /// A placement names a PE the app does not have or a worker that is not alive.
    #[error("placement of {app:?}: {why}")]
    BadPlacement {
        /// App name.
        app: String,
        /// What is wrong.
        why: String,
    },
}

/// The answer an applied request got, when `cmd` repeats it (same request id, same
/// app): applying `cmd` must then change nothing and answer that again. A request id
/// that an applied request of the app used with other content is refused.
pub(super) fn repeated(s: &ClusterState, cmd: &Command) -> Result<Option<Response>, CommandError> {
    match cmd {
        Command::SubmitApp {
            spec,
            spec_text,
            request_id,
            ..
        } => match s.version_by_request(&spec.name, request_id, spec_text)? {
            Some(1) => Ok(Some(Response::AppVersion {
                app: spec.name.clone(),
                version: 1,
            })),
            Some(v) => Err(reused(
                request_id,
                format!("started the upgrade of {:?} to version {v}", spec.name),
            )),
            None => Ok(None),
        },
        Command::BeginUpgrade {
            spec,
            spec_text,
            request_id,
            ..
        } => match s.version_by_request(&spec.name, request_id, spec_text)? {
            Some(1) => Err(reused(request_id, format!("submitted app {:?}", spec.name))),
            Some(version) => Ok(Some(Response::UpgradeStarted {
                id: s.upgrade_to(&spec.name, version).map_or(0, |u| u.id),
                version,
            })),
            None => Ok(None),
        },
        Command::CancelApp {
            name, request_id, ..
        } if !request_id.is_empty() => Ok(s
            .apps
            .get(name)
            .filter(|a| a.cancel_request_id.as_deref() == Some(request_id.as_str()))
            .map(|_| Response::Done)),
        _ => Ok(None),
    }
}

fn reused(request_id: &str, why: String) -> CommandError {
    CommandError::RequestIdReused {
        request_id: request_id.to_string(),
        why: format!("already {why}"),
    }
}

pub(super) fn check(s: &ClusterState, cmd: &Command) -> Result<(), CommandError> {
    match cmd {
        Command::SubmitApp {
            spec, generated, ..
        } => {
            if s.apps.contains_key(&spec.name) {
                return Err(CommandError::AppExists(spec.name.clone()));
            }
            catalog::check_generated(s, generated)?;
        }
        Command::RegisterBaseImage { image } => catalog::check_register(s, image)?,
        Command::RemoveBaseImage { name } => catalog::check_remove_image(s, name)?,
        Command::AddTemplate { template } => catalog::check_add_template(s, template)?,
        Command::RemoveTemplate { name } => catalog::check_remove_template(s, name)?,
        Command::FinishApp { app: name, .. } => {
            let app = s
                .apps
                .get(name)
                .ok_or_else(|| CommandError::AppNotFound(name.clone()))?;
            if app.state != AppState::Running || app.upgrade.is_some() {
                return Err(CommandError::AppState {
                    app: name.clone(),
                    state: format!("{:?}", app.state).to_lowercase(),
                    why: "only a running app with no upgrade in progress can finish".into(),
                });
            }
        }
        Command::CancelApp { name, .. } => {
            let app = s
                .apps
                .get(name)
                .ok_or_else(|| CommandError::AppNotFound(name.clone()))?;
            if !app.state.is_live() {
                return Err(CommandError::AppState {
                    app: name.clone(),
                    state: format!("{:?}", app.state).to_lowercase(),
                    why: "only a live app can be cancelled".into(),
                });
            }
        }
        // A batch's commands are checked one by one as they apply.
        Command::RegisterWorker { .. } | Command::Batch { .. } => {}
        Command::SetWorkerState { id, .. } | Command::SetWorkerImages { id, .. } => {
            if !s.workers.contains_key(id) {
                return Err(CommandError::WorkerNotFound(id.clone()));
            }
        }
        Command::SetPlacement { app, placement, .. } => check_placement(s, app, placement)?,
        Command::BeginCheckpoint { app, id, .. } => {
            let ck = &live_app(s, app)?.checkpoints;
            if *id <= ck.last_id {
                return Err(CommandError::Checkpoint(format!(
                    "checkpoint {id} of {app}: ids must increase (last begun {})",
                    ck.last_id
                )));
            }
            if let Some(f) = &ck.in_flight {
                return Err(CommandError::Checkpoint(format!(
                    "checkpoint {} of {app} is still in flight",
                    f.id
                )));
            }
        }
        Command::CompleteCheckpoint { app, id, .. } | Command::AbandonCheckpoint { app, id } => {
            let ck = &live_app(s, app)?.checkpoints;
            if ck.in_flight.as_ref().map(|f| f.id) != Some(*id) {
                return Err(CommandError::Checkpoint(format!(
                    "checkpoint {id} of {app} is not in flight"
                )));
            }
        }
        Command::Recover {
            app,
            operators,
            checkpoint_id,
            placement,
            ..
        } => {
            let rec = live_app(s, app)?;
            if let Some(op) = operators
                .iter()
                .find(|o| rec.current().spec.operator(o).is_none())
            {
                return Err(CommandError::Checkpoint(format!(
                    "recovery of {app}: no operator {op:?}"
                )));
            }
            if *checkpoint_id != 0
                && !rec
                    .checkpoints
                    .complete
                    .iter()
                    .any(|c| c.id == *checkpoint_id)
            {
                return Err(CommandError::Checkpoint(format!(
                    "recovery of {app}: checkpoint {checkpoint_id} is not a kept complete checkpoint"
                )));
            }
            check_placement(s, app, placement)?;
        }
        Command::BeginUpgrade {
            spec,
            placement,
            generated,
            ..
        } => {
            super::upgrade::check_begin(s, spec, placement)?;
            catalog::check_generated(s, generated)?;
        }
        Command::UpgradeSwitch { app, id, .. } => {
            let rec = live_app(s, app)?;
            super::upgrade::check_phase(s, rec, *id, Phase::Prepare)?;
            if let Some(f) = &rec.checkpoints.in_flight {
                return Err(CommandError::Upgrade(format!(
                    "upgrade {id} of {app}: checkpoint {} is still in flight",
                    f.id
                )));
            }
        }
        Command::FinishUpgradeSwitch { app, id, .. } => {
            let rec = live_app(s, app)?;
            let up = super::upgrade::check_phase(s, rec, *id, Phase::Switch)?;
            if !rec.checkpoints.complete.iter().any(|c| c.id == up.barrier) {
                return Err(CommandError::Upgrade(format!(
                    "upgrade {id} of {app}: switch checkpoint {} is not complete",
                    up.barrier
                )));
            }
        }
        Command::CompleteUpgrade { app, id, .. } => {
            let rec = live_app(s, app)?;
            super::upgrade::check_phase(s, rec, *id, Phase::Cleanup)?;
        }
        Command::AbortUpgrade {
            app, id, recover, ..
        } => {
            let rec = live_app(s, app)?;
            let up = super::upgrade::check_active(s, rec, *id)?;
            if up.phase == Some(Phase::Cleanup) {
                return Err(CommandError::Upgrade(format!(
                    "upgrade {id} of {app} switched already; it can only complete"
                )));
            }
            if let Some((ops, _)) = recover {
                if let Some(op) = ops
                    .iter()
                    .find(|o| rec.current().spec.operator(o).is_none())
                {
                    return Err(CommandError::Upgrade(format!(
                        "abort of upgrade {id} of {app}: no operator {op:?}"
                    )));
                }
            }
        }
    }
    Ok(())
}

fn live_app<'a>(s: &'a ClusterState, app: &str) -> Result<&'a AppRecord, CommandError> {
    let rec = s
        .apps
        .get(app)
        .ok_or_else(|| CommandError::AppNotFound(app.to_string()))?;
    if !rec.state.is_live() {
        return Err(CommandError::AppState {
            app: app.to_string(),
            state: format!("{:?}", rec.state).to_lowercase(),
            why: "only a live app has checkpoints and recoveries".into(),
        });
    }
    Ok(rec)
}

fn check_placement(
    s: &ClusterState,
    app: &str,
    placement: &BTreeMap<String, String>,
) -> Result<(), CommandError> {
    {
        {
            let rec = s
                .apps
                .get(app)
                .ok_or_else(|| CommandError::AppNotFound(app.to_string()))?;
            for (pe, worker) in placement {
                // A bare operator name is no PE id.
                if !pe.contains('@') || rec.current().spec.operator(PeId::operator_of(pe)).is_none()
                {
                    return Err(CommandError::BadPlacement {
                        app: app.to_string(),
                        why: format!("no PE {pe:?}"),
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
        }
    }
    Ok(())
}

/// GPUs of PEs that stayed put are kept; moved or gone PEs release theirs; `new` adds
/// the allocations of PEs placed anew.
fn set_gpus(
    rec: &mut AppRecord,
    before: &BTreeMap<String, String>,
    new: &BTreeMap<String, Vec<String>>,
) {
    let placement = &rec.placement;
    rec.gpus
        .retain(|pe, _| placement.get(pe).is_some() && placement.get(pe) == before.get(pe));
    for (pe, uuids) in new {
        if placement.contains_key(pe) && !uuids.is_empty() {
            rec.gpus.insert(pe.clone(), uuids.clone());
        }
    }
}

/// Records the incarnation of the worker of every PE placed anew or moved.
fn note_incarnations(
    workers: &BTreeMap<String, WorkerRecord>,
    rec: &mut AppRecord,
    refresh: impl Fn(&str) -> bool,
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

pub(super) fn apply_checked(s: &mut ClusterState, cmd: &Command) -> Response {
    match cmd {
        Command::SubmitApp {
            spec,
            spec_text,
            at_ms,
            request_id,
            generated,
        } => {
            let tenant = s.tenants.entry(spec.tenant.clone()).or_default();
            tenant.name = spec.tenant.clone();
            tenant.apps += 1;
            s.apps.insert(
                spec.name.clone(),
                std::sync::Arc::new(AppRecord {
                    name: spec.name.clone(),
                    tenant: spec.tenant.clone(),
                    state: AppState::Submitted,
                    versions: vec![std::sync::Arc::new(AppVersion {
                        version: 1,
                        spec: spec.clone(),
                        spec_text: spec_text.clone(),
                        submitted_at_ms: *at_ms,
                        request_id: request_id.clone(),
                        generated: generated.clone(),
                    })],
                    current_version: 1,
                    created_at_ms: *at_ms,
                    cancelled_at_ms: None,
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
        Command::FinishApp { app, at_ms, pes } => {
            let rec = std::sync::Arc::make_mut(s.apps.get_mut(app).expect("checked"));
            rec.state = AppState::Finished;
            rec.finished = Some(FinishedRecord {
                at_ms: *at_ms,
                pes: pes.clone(),
            });
            rec.placement.clear();
            rec.gpus.clear();
            if let Some(t) = s.tenants.get_mut(&rec.tenant) {
                t.apps = t.apps.saturating_sub(1);
            }
            Response::Done
        }
        Command::CancelApp {
            name,
            at_ms,
            request_id,
        } => {
            let app = std::sync::Arc::make_mut(s.apps.get_mut(name).expect("checked"));
            app.state = AppState::Cancelled;
            app.cancelled_at_ms = Some(*at_ms);
            app.cancel_request_id = (!request_id.is_empty()).then(|| request_id.clone());
            if let Some(id) = app.upgrade.take() {
                if let Some(up) = s.upgrades.get_mut(&id) {
                    up.phase = None;
                    up.finished_at_ms = Some(*at_ms);
                    up.outcome = Some(UpgradeOutcome::RolledBack("the app was cancelled".into()));
                }
            }
            app.placement.clear();
            app.gpus.clear();
            if let Some(t) = s.tenants.get_mut(&app.tenant) {
                t.apps = t.apps.saturating_sub(1);
            }
            Response::Done
        }
        Command::RegisterWorker { worker } => {
            let incarnation = s.workers.get(&worker.id).map_or(0, |w| w.incarnation) + 1;
            let mut w = worker.clone();
            w.images = Arc::new(bound(worker.images.to_vec()).images);
            w.incarnation = incarnation;
            w.state = WorkerState::Alive;
            w.state_since_ms = w.registered_at_ms;
            s.workers.insert(w.id.clone(), w);
            Response::Done
        }
        Command::SetWorkerState { id, state, at_ms } => {
            let w = s.workers.get_mut(id).expect("checked");
            if w.state != *state {
                w.state = *state;
                w.state_since_ms = *at_ms;
            }
            Response::Done
        }
        Command::SetPlacement {
            app,
            placement,
            gpus,
        } => {
            let rec = std::sync::Arc::make_mut(s.apps.get_mut(app).expect("checked"));
            let before = std::mem::replace(&mut rec.placement, placement.clone());
            set_gpus(rec, &before, gpus);
            note_incarnations(&s.workers, rec, |pe| before.get(pe) != placement.get(pe));
            if rec.state == AppState::Submitted && !placement.is_empty() {
                rec.state = AppState::Running;
            }
            Response::Done
        }
        Command::BeginCheckpoint { app, id, at_ms } => {
            let ck =
                &mut std::sync::Arc::make_mut(s.apps.get_mut(app).expect("checked")).checkpoints;
            ck.last_id = *id;
            ck.in_flight = Some(InFlightCheckpoint {
                id: *id,
                started_at_ms: *at_ms,
            });
            Response::Done
        }
        Command::CompleteCheckpoint {
            app,
            id,
            at_ms,
            max_alignment_ms,
            pieces,
        } => {
            let ck =
                &mut std::sync::Arc::make_mut(s.apps.get_mut(app).expect("checked")).checkpoints;
            let started = ck.in_flight.take().map_or(*at_ms, |f| f.started_at_ms);
            ck.complete.push(CheckpointRecord {
                id: *id,
                started_at_ms: started,
                completed_at_ms: *at_ms,
                max_alignment_ms: *max_alignment_ms,
                pieces: pieces.clone(),
                handoff: BTreeMap::new(),
            });
            let excess = ck.complete.len().saturating_sub(KEEP_CHECKPOINTS);
            ck.complete.drain(..excess);
            Response::Done
        }
        Command::AbandonCheckpoint { app, .. } => {
            std::sync::Arc::make_mut(s.apps.get_mut(app).expect("checked"))
                .checkpoints
                .in_flight = None;
            Response::Done
        }
        Command::Recover {
            app,
            operators,
            checkpoint_id,
            placement,
            reason,
            at_ms,
            drop_checkpoint,
            gpus,
        } => {
            let rec = std::sync::Arc::make_mut(s.apps.get_mut(app).expect("checked"));
            let before = std::mem::replace(&mut rec.placement, placement.clone());
            set_gpus(rec, &before, gpus);
            let ck = &mut rec.checkpoints;
            if let Some(bad) = drop_checkpoint {
                ck.complete.retain(|c| c.id != *bad);
            }
            let attempt = operators.iter().map(|o| ck.attempt(o)).max().unwrap_or(0) + 1;
            for op in operators {
                ck.attempts.insert(op.clone(), attempt);
                if *checkpoint_id == 0 {
                    ck.restore.remove(op);
                } else {
                    ck.restore.insert(op.clone(), *checkpoint_id);
                }
            }
            // Snapshots of a checkpoint taken before the failure may be missing pieces.
            ck.in_flight = None;
            ck.recoveries.push(RecoveryRecord {
                at_ms: *at_ms,
                attempt,
                checkpoint_id: *checkpoint_id,
                operators: operators.clone(),
                reason: reason.clone(),
            });
            let excess = ck.recoveries.len().saturating_sub(KEEP_RECOVERIES);
            ck.recoveries.drain(..excess);
            let region: std::collections::BTreeSet<&str> =
                operators.iter().map(String::as_str).collect();
            note_incarnations(&s.workers, rec, |pe| region.contains(PeId::operator_of(pe)));
            Response::Done
        }
        Command::BeginUpgrade {
            spec,
            spec_text,
            at_ms,
            placement,
            gpus,
            handoff,
            summary,
            request_id,
            generated,
        } => super::upgrade::apply_begin(
            s,
            super::upgrade::Begin {
                spec,
                spec_text,
                at_ms: *at_ms,
                placement,
                gpus,
                handoff,
                summary,
                request_id,
                generated,
            },
        ),
        Command::UpgradeSwitch { app, id, at_ms } => {
            super::upgrade::apply_switch(s, app, *id, *at_ms)
        }
        Command::FinishUpgradeSwitch { app, id, at_ms } => {
            super::upgrade::apply_finish_switch(s, app, *id, *at_ms)
        }
        Command::CompleteUpgrade {
            app,
            id,
            at_ms,
            result,
        } => super::upgrade::apply_complete(s, app, *id, *at_ms, result),
        Command::AbortUpgrade {
            app,
            id,
            at_ms,
            reason,
            recover,
        } => {
            if let Some((ops, checkpoint_id)) = recover {
                let placement = s.apps[app].placement.clone();
                apply_checked(
                    s,
                    &Command::Recover {
                        app: app.clone(),
                        operators: ops.clone(),
                        checkpoint_id: *checkpoint_id,
                        placement,
                        reason: format!("upgrade {id} rolled back: {reason}"),
                        at_ms: *at_ms,
                        drop_checkpoint: None,
                        gpus: BTreeMap::new(),
                    },
                );
            }
            super::upgrade::apply_abort(s, app, *id, *at_ms, reason)
        }
        Command::RegisterBaseImage { image } => {
            std::sync::Arc::make_mut(&mut s.catalog)
                .base_images
                .insert(image.name.clone(), image.clone());
            Response::Done
        }
        Command::RemoveBaseImage { name } => {
            std::sync::Arc::make_mut(&mut s.catalog)
                .base_images
                .remove(name);
            Response::Done
        }
        Command::AddTemplate { template } => {
            std::sync::Arc::make_mut(&mut s.catalog)
                .templates
                .insert(template.name.clone(), template.clone());
            Response::Done
        }
        Command::RemoveTemplate { name } => {
            std::sync::Arc::make_mut(&mut s.catalog)
                .templates
                .remove(name);
            Response::Done
        }
        Command::Batch { cmds } => Response::Batch {
            results: cmds.iter().map(|c| s.apply(c)).collect(),
        },
        Command::SetWorkerImages { id, images } => {
            let w = s.workers.get_mut(id).expect("checked");
            w.images = Arc::new(bound(images.clone()).images);
            Response::Done
        }
    }
}
