//! Commands proposed through Raft, the checks that refuse them, and their effects.

use super::*;
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
    },
    /// Cancel a live app.
    CancelApp {
        /// App name.
        name: String,
        /// Leader clock.
        at_ms: u64,
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
    },
    /// Nothing: used to commit a read barrier or a leader's first entry.
    Noop,
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
    /// A placement names a PE the app does not have or a worker that is not alive.
    #[error("placement of {app:?}: {why}")]
    BadPlacement {
        /// App name.
        app: String,
        /// What is wrong.
        why: String,
    },
}

pub(super) fn check(s: &ClusterState, cmd: &Command) -> Result<(), CommandError> {
    match cmd {
        Command::SubmitApp { spec, .. } => {
            if s.apps.contains_key(&spec.name) {
                return Err(CommandError::AppExists(spec.name.clone()));
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
        Command::RegisterWorker { .. } | Command::Noop => {}
        Command::SetWorkerState { id, .. } => {
            if !s.workers.contains_key(id) {
                return Err(CommandError::WorkerNotFound(id.clone()));
            }
        }
        Command::SetPlacement { app, placement } => {
            let rec = s
                .apps
                .get(app)
                .ok_or_else(|| CommandError::AppNotFound(app.clone()))?;
            for (pe, worker) in placement {
                if pe
                    .split_once('@')
                    .map(|(op, _)| op)
                    .and_then(|op| rec.current().spec.operator(op))
                    .is_none()
                {
                    return Err(CommandError::BadPlacement {
                        app: app.clone(),
                        why: format!("no PE {pe:?}"),
                    });
                }
                if s.workers
                    .get(worker)
                    .is_none_or(|w| w.state != WorkerState::Alive)
                {
                    return Err(CommandError::BadPlacement {
                        app: app.clone(),
                        why: format!("worker {worker:?} is not alive"),
                    });
                }
            }
        }
    }
    Ok(())
}

pub(super) fn apply_checked(s: &mut ClusterState, cmd: &Command) -> Response {
    match cmd {
        Command::SubmitApp {
            spec,
            spec_text,
            at_ms,
        } => {
            let tenant = s.tenants.entry(spec.tenant.clone()).or_default();
            tenant.name = spec.tenant.clone();
            tenant.apps += 1;
            s.apps.insert(
                spec.name.clone(),
                AppRecord {
                    name: spec.name.clone(),
                    tenant: spec.tenant.clone(),
                    state: AppState::Submitted,
                    versions: vec![AppVersion {
                        version: 1,
                        spec: spec.clone(),
                        spec_text: spec_text.clone(),
                        submitted_at_ms: *at_ms,
                    }],
                    current_version: 1,
                    created_at_ms: *at_ms,
                    cancelled_at_ms: None,
                    placement: BTreeMap::new(),
                },
            );
            Response::AppVersion {
                app: spec.name.clone(),
                version: 1,
            }
        }
        Command::CancelApp { name, at_ms } => {
            let app = s.apps.get_mut(name).expect("checked");
            app.state = AppState::Cancelled;
            app.cancelled_at_ms = Some(*at_ms);
            app.placement.clear();
            if let Some(t) = s.tenants.get_mut(&app.tenant) {
                t.apps = t.apps.saturating_sub(1);
            }
            Response::Done
        }
        Command::RegisterWorker { worker } => {
            let incarnation = s.workers.get(&worker.id).map_or(0, |w| w.incarnation) + 1;
            let mut w = worker.clone();
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
        Command::SetPlacement { app, placement } => {
            let rec = s.apps.get_mut(app).expect("checked");
            rec.placement = placement.clone();
            if rec.state == AppState::Submitted && !placement.is_empty() {
                rec.state = AppState::Running;
            }
            Response::Done
        }
        Command::Noop => Response::Done,
    }
}
