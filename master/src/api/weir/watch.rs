//! What a `WatchApp` stream says about one app. [`AppWatch`] is fed the commands the
//! state machine applied, in log order, and the PE state changes the workers reported
//! to the leader, and answers the events each one means for the app; it does no I/O,
//! so every rule is tested without a cluster and the service only sends what it
//! answers.

use crate::convert::app_state;
use crate::shared::PeChange;
use crate::state::{
    update_gpus, AppRecord, AppState, ClusterState, Command, Gpus, Placement, Response,
};
use std::collections::BTreeSet;
use std::sync::Arc;
use weir_common::plan::{plan, Phase};
use weir_common::spec::AppSpec;
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
    /// Its spec.
    spec: Arc<AppSpec>,
    /// Where its PEs run (for the workers a recovery moves them between).
    placement: Placement,
    /// The GPUs allocated to its PEs (told with each placement).
    gpus: Gpus,
    /// The old version's PEs an upgrade's switch left draining, until it ends: their
    /// last state changes (stopping) are still the app's.
    draining: Placement,
    /// When the checkpoint in flight began (leader clock), for its duration.
    checkpoint_since: Option<u64>,
    /// The upgrade in progress.
    upgrade: Option<Upgrading>,
    /// The newest upgrade operation of the app known: a repeated `BeginUpgrade` request
    /// is answered with that operation again, and prepares nothing new.
    newest_upgrade: u64,
}

/// An upgrade in progress, as its phase events describe it.
#[derive(Clone, Debug, PartialEq)]
struct Upgrading {
    id: u64,
    from: u32,
    to: u32,
    /// The new version's spec and placement, current from the switch on.
    spec: Arc<AppSpec>,
    placement: Placement,
    /// GPUs allocated to its new PEs.
    gpus: Gpus,
    /// Instructions in each phase of its plan (prepare, switch, cleanup).
    instructions: [u32; 3],
}

impl Upgrading {
    fn new(
        id: u64,
        (from, old): (u32, &AppSpec),
        (to, new): (u32, &AppSpec),
        (placement, gpus): (&Placement, &Gpus),
    ) -> Self {
        let p = plan(old, new, None);
        let instructions = Phase::ALL.map(|ph| p.instructions_in(ph) as u32);
        Upgrading {
            id,
            from,
            to,
            spec: Arc::new(new.clone()),
            placement: placement.clone(),
            gpus: gpus.clone(),
            instructions,
        }
    }
}

impl AppWatch {
    /// A watch of `rec` as `s` holds it, and the events a stream opens with.
    pub(super) fn open(s: &ClusterState, rec: &AppRecord) -> (Self, Vec<Note>) {
        let spec_of = |v: u32| rec.versions.get(v as usize - 1).map(|v| &v.spec);
        let upgrade = rec
            .upgrade
            .and_then(|id| s.upgrades.get(&id))
            .and_then(|u| {
                Some(Upgrading::new(
                    u.id,
                    (u.from_version, spec_of(u.from_version)?),
                    (u.to_version, spec_of(u.to_version)?),
                    (&u.placement, &u.gpus),
                ))
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
            state: rec.state(),
            version: rec.current_version,
            spec: Arc::new(rec.current().spec.clone()),
            placement: rec.placement.clone(),
            gpus: rec.gpus.clone(),
            draining: Placement::new(),
            checkpoint_since: rec.checkpoints.in_flight.as_ref().map(|f| f.started_at_ms),
            upgrade,
            newest_upgrade,
        };
        let mut opening = vec![watch.note(app_state_event(None, rec.state()))];
        if !rec.placement.is_empty() {
            opening.push(watch.note(placement_event(&rec.placement, &rec.gpus)));
        }
        (watch, opening)
    }

    /// Whether the app reached an end state: nothing more will happen to it.
    pub(super) fn ended(&self) -> bool {
        !self.state.is_live()
    }

    /// The event of a PE state change a worker reported, when it is a PE of the app on
    /// the worker the watch knows it on: a report from a worker the PE left is stale.
    pub(super) fn on_pe(&self, c: &PeChange) -> Option<Note> {
        if c.app != self.app || self.ended() {
            return None;
        }
        let here = |p: &Placement| p.get(&c.pe).is_some_and(|w| *w == c.worker);
        let known = here(&self.placement)
            || here(&self.draining)
            || self.upgrade.as_ref().is_some_and(|u| here(&u.placement));
        let failed = c.new == pb::PeState::Failed;
        known.then(|| {
            self.note(pb::app_event::Event::PeStateChanged(pb::PeStateChanged {
                pe: c.pe.to_string(),
                worker_id: c.worker.clone(),
                old_state: c.old as i32,
                new_state: c.new as i32,
                message: if failed {
                    c.message.clone()
                } else {
                    String::new()
                },
            }))
        })
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
                self.placement.clear();
                self.draining.clear();
                self.end(AppState::Cancelled, out);
            }
            Command::FinishApp { app, .. } if *app == self.app => {
                self.end(AppState::Finished, out);
            }
            Command::SetPlacement {
                app,
                placement,
                gpus,
                ..
            } if *app == self.app => {
                if self.state == AppState::Submitted && !placement.is_empty() {
                    self.state = AppState::Running;
                }
                update_gpus(&mut self.gpus, &self.placement, placement, gpus);
                self.placement = placement.clone();
                out.push(self.note(placement_event(placement, &self.gpus)));
            }
            Command::Recover {
                app,
                operators,
                checkpoint_id,
                placement,
                reason,
                gpus,
                ..
            } if *app == self.app => {
                let (left, joined) = moved(&self.placement, placement, operators);
                out.push(self.note(pb::app_event::Event::Recovery(pb::Recovery {
                    pe: operators.join(","),
                    failed_worker_id: left,
                    new_worker_id: joined,
                    checkpoint_id: *checkpoint_id,
                    reason: reason.clone(),
                })));
                update_gpus(&mut self.gpus, &self.placement, placement, gpus);
                self.placement = placement.clone();
                self.checkpoint_since = None;
                out.push(self.note(placement_event(placement, &self.gpus)));
            }
            Command::Preempt { app, by, .. } if *app == self.app => {
                self.state = AppState::Submitted;
                self.placement.clear();
                self.gpus.clear();
                self.checkpoint_since = None;
                out.push(self.note(pb::app_event::Event::Recovery(pb::Recovery {
                    pe: String::new(),
                    failed_worker_id: String::new(),
                    new_worker_id: String::new(),
                    checkpoint_id: 0,
                    reason: format!("preempted by {by}: back in the queue, to resume from its latest checkpoint"),
                })));
                out.push(self.note(placement_event(&Default::default(), &self.gpus)));
            }
            Command::BeginCheckpoint { app, at_ms, .. } if *app == self.app => {
                self.checkpoint_since = Some(*at_ms);
            }
            Command::AbandonCheckpoint { app, .. } if *app == self.app => {
                self.checkpoint_since = None;
            }
            Command::CompleteCheckpoint {
                app,
                id,
                pieces,
                at_ms,
                ..
            } if *app == self.app => {
                let since = self.checkpoint_since.take();
                out.push(self.note(pb::app_event::Event::CheckpointCompleted(
                    pb::CheckpointCompleted {
                        checkpoint_id: *id,
                        duration_ms: since.map_or(0, |t| at_ms.saturating_sub(t)),
                        state_bytes: pieces.values().map(|p| p.size_bytes).sum(),
                    },
                )));
            }
            Command::BeginUpgrade {
                spec,
                placement,
                gpus,
                ..
            } if spec.name == self.app => {
                if let Response::UpgradeStarted { id, version } = response {
                    if *id > self.newest_upgrade {
                        self.newest_upgrade = *id;
                        self.upgrade = Some(Upgrading::new(
                            *id,
                            (self.version, &self.spec),
                            (*version, spec),
                            (placement, gpus),
                        ));
                        out.push(self.phase(*id, pb::UpgradePhase::Prepare, ""));
                    }
                }
            }
            Command::UpgradeSwitch { app, id, at_ms } if *app == self.app => {
                // The switch barrier is a checkpoint.
                self.checkpoint_since = Some(*at_ms);
                out.push(self.phase(*id, pb::UpgradePhase::Switch, ""));
            }
            Command::FinishUpgradeSwitch { app, id, .. } if *app == self.app => {
                if let Some(up) = self.upgrade.as_ref().filter(|up| up.id == *id) {
                    self.version = up.to;
                    self.spec = up.spec.clone();
                    let old = std::mem::replace(&mut self.placement, up.placement.clone());
                    update_gpus(&mut self.gpus, &old, &self.placement, &up.gpus);
                    self.draining = old
                        .into_iter()
                        .filter(|(pe, _)| !self.placement.contains_key(pe))
                        .collect();
                }
                out.push(self.phase(*id, pb::UpgradePhase::Cleanup, ""));
            }
            Command::CompleteUpgrade { app, id, .. } if *app == self.app => {
                out.push(self.phase(*id, pb::UpgradePhase::Done, ""));
                self.upgrade = None;
                self.draining.clear();
            }
            Command::AbortUpgrade { app, id, reason, .. } if *app == self.app => {
                out.push(self.phase(*id, pb::UpgradePhase::RolledBack, reason));
                self.upgrade = None;
                self.draining.clear();
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
            | Command::SetQuota { .. }
            | Command::SetSchedulingPolicy { .. } => {}
        }
    }

    fn end(&mut self, state: AppState, out: &mut Vec<Note>) {
        out.push(self.note(app_state_event(Some(self.state), state)));
        self.state = state;
    }

    /// A phase event of operation `id`, with the versions it goes between and the
    /// phase's instruction count when the watch knows them (it does from the upgrade's
    /// start, or from the stream's open). A phase event marks the phase's start: none
    /// of its instructions is done yet; the end (DONE) has all of cleanup's done.
    fn phase(&self, id: u64, phase: pb::UpgradePhase, reason: &str) -> Note {
        let up = self.upgrade.as_ref().filter(|up| up.id == id);
        let (from, to) = up.map_or((0, 0), |up| (up.from, up.to));
        let count = |i: usize| up.map_or(0, |up| up.instructions[i]);
        let (instructions_done, instructions_total) = match phase {
            pb::UpgradePhase::Prepare => (0, count(0)),
            pb::UpgradePhase::Switch => (0, count(1)),
            pb::UpgradePhase::Cleanup => (0, count(2)),
            pb::UpgradePhase::Done => (count(2), count(2)),
            _ => (0, 0),
        };
        self.note(pb::app_event::Event::UpgradePhaseChanged(
            pb::UpgradePhaseChanged {
                operation_id: id.to_string(),
                phase: phase as i32,
                from_version: from.into(),
                to_version: to.into(),
                instructions_done,
                instructions_total,
                reason: reason.to_string(),
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

/// The workers the PEs of `operators` left (they moved off them) and the workers they
/// moved to, each sorted and joined by commas; both empty when every PE restarts where
/// it ran.
fn moved(before: &Placement, after: &Placement, operators: &[String]) -> (String, String) {
    let ops: BTreeSet<&str> = operators.iter().map(String::as_str).collect();
    let mut left = BTreeSet::new();
    let mut joined = BTreeSet::new();
    for (pe, w) in after {
        if !ops.contains(pe.operator()) {
            continue;
        }
        if let Some(old) = before.get(pe).filter(|old| *old != w) {
            left.insert(old.as_str());
            joined.insert(w.as_str());
        }
    }
    let join = |s: BTreeSet<&str>| s.into_iter().collect::<Vec<_>>().join(",");
    (join(left), join(joined))
}

fn placement_event(p: &Placement, gpus: &Gpus) -> pb::app_event::Event {
    pb::app_event::Event::PlacementChanged(pb::PlacementChanged {
        placements: p
            .iter()
            .map(|(pe, w)| pb::PePlacement {
                pe: pe.to_string(),
                worker_id: w.clone(),
                gpu_uuids: gpus.get(pe).cloned().unwrap_or_default(),
            })
            .collect(),
    })
}

#[cfg(test)]
#[path = "watch_tests.rs"]
mod tests;
