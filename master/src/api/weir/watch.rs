//! What a `WatchApp` stream says about one app. [`AppWatch`] is fed the commands the
//! state machine applied, in log order, and answers the events each one means for the
//! app; it does no I/O, so every rule is tested without a cluster and the service only
//! sends what it answers.

use super::super::convert::app_state;
use crate::state::{AppRecord, AppState, ClusterState, Command, Response};
use std::collections::BTreeMap;
use weir_proto::v1 as pb;

/// One event to send, with the app version current when it happened.
#[derive(Debug, PartialEq)]
pub(super) struct Note {
    /// What happened.
    pub event: pb::app_event::Event,
    /// The app version current once it happened.
    pub version: u32,
}

/// What a watcher knows of its app, kept current by the commands it is fed: the
/// version and state an event belongs to change while the stream is open.
#[derive(Debug)]
pub(super) struct AppWatch {
    app: String,
    state: AppState,
    /// The version running now; an upgrade's new version becomes current at its switch.
    version: u32,
    /// The upgrade in progress.
    upgrade: Option<Upgrading>,
    /// The newest upgrade operation of the app known: a repeated `BeginUpgrade` request
    /// is answered with that operation again, and prepares nothing new.
    newest_upgrade: u64,
}

/// An upgrade in progress, as its phase events describe it.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Upgrading {
    id: u64,
    from: u32,
    to: u32,
}

impl AppWatch {
    /// A watch of `rec` as `s` holds it, and the events a stream opens with.
    pub(super) fn open(s: &ClusterState, rec: &AppRecord) -> (Self, Vec<Note>) {
        let upgrade = rec
            .upgrade
            .and_then(|id| s.upgrades.get(&id))
            .map(|u| Upgrading {
                id: u.id,
                from: u.from_version,
                to: u.to_version,
            });
        let newest_upgrade = s
            .upgrades
            .values()
            .filter(|u| u.app == rec.name)
            .map(|u| u.id)
            .max()
            .unwrap_or(0);
        let watch = Self {
            app: rec.name.clone(),
            state: rec.state,
            version: rec.current_version,
            upgrade,
            newest_upgrade,
        };
        let mut opening = vec![watch.note(app_state_event(None, rec.state))];
        if !rec.placement.is_empty() {
            opening.push(watch.note(placement_event(&rec.placement)));
        }
        (watch, opening)
    }

    /// Whether the app reached an end state: nothing more will happen to it.
    pub(super) fn ended(&self) -> bool {
        !self.state.is_live()
    }

    /// The events of `cmd`, applied with answer `response`, for the watched app.
    pub(super) fn on(&mut self, cmd: &Command, response: &Response) -> Vec<Note> {
        let mut out = Vec::new();
        self.step(cmd, response, &mut out);
        out
    }

    fn step(&mut self, cmd: &Command, response: &Response, out: &mut Vec<Note>) {
        // Every command is named here, so that a new one cannot be ignored by accident.
        match cmd {
            // Concurrent writes share an entry: the commands inside that took effect.
            Command::Batch { cmds } => {
                let Response::Batch { results } = response else {
                    return;
                };
                for (cmd, result) in cmds.iter().zip(results) {
                    if self.ended() {
                        return;
                    }
                    if let Ok(response) = result {
                        self.step(cmd, response, out);
                    }
                }
            }
            Command::CancelApp { name, .. } if *name == self.app => {
                self.upgrade = None;
                self.end(AppState::Cancelled, out);
            }
            Command::FinishApp { app, .. } if *app == self.app => {
                self.end(AppState::Finished, out);
            }
            Command::SetPlacement { app, placement, .. } if *app == self.app => {
                if self.state == AppState::Submitted && !placement.is_empty() {
                    self.state = AppState::Running;
                }
                out.push(self.note(placement_event(placement)));
            }
            Command::Recover {
                app,
                operators,
                checkpoint_id,
                placement,
                reason,
                ..
            } if *app == self.app => {
                out.push(self.note(pb::app_event::Event::Recovery(pb::Recovery {
                    pe: operators.join(","),
                    failed_worker_id: String::new(),
                    new_worker_id: String::new(),
                    checkpoint_id: *checkpoint_id,
                    reason: reason.clone(),
                })));
                out.push(self.note(placement_event(placement)));
            }
            Command::Preempt { app, by, .. } if *app == self.app => {
                self.state = AppState::Submitted;
                out.push(self.note(pb::app_event::Event::Recovery(pb::Recovery {
                    pe: String::new(),
                    failed_worker_id: String::new(),
                    new_worker_id: String::new(),
                    checkpoint_id: 0,
                    reason: format!("preempted by {by}: back in the queue, to resume from its latest checkpoint"),
                })));
                out.push(self.note(placement_event(&Default::default())));
            }
            Command::CompleteCheckpoint {
                app, id, pieces, ..
            } if *app == self.app => {
                out.push(self.note(pb::app_event::Event::CheckpointCompleted(
                    pb::CheckpointCompleted {
                        checkpoint_id: *id,
                        duration_ms: 0,
                        state_bytes: pieces.values().map(|p| p.size_bytes).sum(),
                    },
                )));
            }
            Command::BeginUpgrade { spec, .. } if spec.name == self.app => {
                if let Response::UpgradeStarted { id, version } = response {
                    if *id > self.newest_upgrade {
                        self.newest_upgrade = *id;
                        self.upgrade = Some(Upgrading {
                            id: *id,
                            from: self.version,
                            to: *version,
                        });
                        out.push(self.phase(*id, pb::UpgradePhase::Prepare, ""));
                    }
                }
            }
            Command::UpgradeSwitch { app, id, .. } if *app == self.app => {
                out.push(self.phase(*id, pb::UpgradePhase::Switch, ""));
            }
            Command::FinishUpgradeSwitch { app, id, .. } if *app == self.app => {
                if let Some(up) = self.upgrade.filter(|up| up.id == *id) {
                    self.version = up.to;
                }
                out.push(self.phase(*id, pb::UpgradePhase::Cleanup, ""));
            }
            Command::CompleteUpgrade { app, id, .. } if *app == self.app => {
                out.push(self.phase(*id, pb::UpgradePhase::Done, ""));
                self.upgrade = None;
            }
            Command::AbortUpgrade { app, id, reason, .. } if *app == self.app => {
                out.push(self.phase(*id, pb::UpgradePhase::RolledBack, reason));
                self.upgrade = None;
            }
            // Another app's.
            Command::CancelApp { .. }
            | Command::FinishApp { .. }
            | Command::SetPlacement { .. }
            | Command::Recover { .. }
            | Command::Preempt { .. }
            | Command::CompleteCheckpoint { .. }
            | Command::BeginUpgrade { .. }
            | Command::UpgradeSwitch { .. }
            | Command::FinishUpgradeSwitch { .. }
            | Command::CompleteUpgrade { .. }
            | Command::AbortUpgrade { .. }
            // A watched app exists already (names are never reused).
            | Command::SubmitApp { .. }
            // No app event says a checkpoint began or was given up; one that completes
            // does.
            | Command::BeginCheckpoint { .. }
            | Command::AbandonCheckpoint { .. }
            // Workers are not an app's: a lost worker shows as the recovery that moves
            // the app's PEs off it.
            | Command::RegisterWorker { .. }
            | Command::SetWorkerState { .. }
            | Command::SetWorkerImages { .. }
            // The catalog is not an app's.
            | Command::RegisterBaseImage { .. }
            | Command::RemoveBaseImage { .. }
            | Command::AddTemplate { .. }
            | Command::RemoveTemplate { .. }
            | Command::PutTenant { .. }
            | Command::SetQuota { .. } => {}
        }
    }

    fn end(&mut self, state: AppState, out: &mut Vec<Note>) {
        out.push(self.note(app_state_event(Some(self.state), state)));
        self.state = state;
    }

    /// A phase event of operation `id`, with the versions it goes between when the
    /// watch knows them (it does from the upgrade's start, or from the stream's open).
    fn phase(&self, id: u64, phase: pb::UpgradePhase, reason: &str) -> Note {
        let (from, to) = self
            .upgrade
            .filter(|up| up.id == id)
            .map_or((0, 0), |up| (up.from, up.to));
        self.note(pb::app_event::Event::UpgradePhaseChanged(
            pb::UpgradePhaseChanged {
                operation_id: id.to_string(),
                phase: phase as i32,
                from_version: from.into(),
                to_version: to.into(),
                reason: reason.to_string(),
                ..Default::default()
            },
        ))
    }

    fn note(&self, event: pb::app_event::Event) -> Note {
        Note {
            event,
            version: self.version,
        }
    }
}

fn app_state_event(old: Option<AppState>, new: AppState) -> pb::app_event::Event {
    pb::app_event::Event::AppStateChanged(pb::AppStateChanged {
        old_state: old.map_or(pb::AppState::Unspecified, app_state) as i32,
        new_state: app_state(new) as i32,
        message: String::new(),
    })
}

fn placement_event(p: &BTreeMap<String, String>) -> pb::app_event::Event {
    pb::app_event::Event::PlacementChanged(pb::PlacementChanged {
        placements: p
            .iter()
            .map(|(pe, w)| pb::PePlacement {
                pe: pe.clone(),
                worker_id: w.clone(),
                gpu_uuids: vec![],
            })
            .collect(),
    })
}

#[cfg(test)]
#[path = "watch_tests.rs"]
mod tests;
