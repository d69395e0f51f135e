//! The leader's memory of the workers: when each was last heard from and what it last
//! reported running. Soft state, rebuilt from heartbeats after a failover; the
//! executor reads it every tick and is woken when it shows progress.

use crate::scheduler::queue::QueueEntry;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use weir_common::physical::PeId;
use weir_proto::v1 as pb;

/// When each worker was last heard from, and what it last reported running (on the
/// leader; soft state rebuilt from heartbeats after a failover).
#[derive(Clone, Default)]
pub struct Liveness {
    seen: Arc<Mutex<BTreeMap<String, (Instant, u64)>>>,
    reports: Arc<Mutex<BTreeMap<String, WorkerReports>>>,
    /// Apps the executor could not place on its last attempt, and why. Leader memory,
    /// like the reports: it is recomputed every reconcile tick, so it needs no Raft.
    unplaced: Arc<Mutex<BTreeMap<String, String>>>,
    /// The queue after the last reconcile tick, in service order (leader memory, like
    /// `unplaced`: its content is the replicated state, its reasons are recomputed
    /// every tick).
    queue: Arc<Mutex<Arc<Vec<QueueEntry>>>>,
    /// Wakes the executor: a worker reported progress it acts on (a PE's state, a new
    /// checkpoint piece), or a client's change was committed.
    wake: Arc<tokio::sync::Notify>,
    /// PE state changes the workers reported, for `WatchApp` streams.
    changes: Changes,
}

/// The PE state changes the workers reported, as they arrive: a watcher subscribes
/// and filters by app. Lagging subscribers lose changes, not the master's memory.
#[derive(Clone)]
struct Changes(tokio::sync::broadcast::Sender<PeChange>);

impl Default for Changes {
    fn default() -> Self {
        Self(tokio::sync::broadcast::channel(1024).0)
    }
}

/// A PE's state changed, as its worker reported it.
#[derive(Clone, Debug, PartialEq)]
pub struct PeChange {
    /// The PE's app.
    pub app: String,
    /// The PE.
    pub pe: PeId,
    /// The worker that reported it.
    pub worker: String,
    /// Its state in the worker's previous report (`Pending` when it was not in it).
    pub old: pb::PeState,
    /// Its state now.
    pub new: pb::PeState,
    /// The worker's message (the error of a failed PE).
    pub message: String,
}

/// The PE state changes between two reports of `worker`. Without a previous report
/// (the worker's first heartbeat to this leader) there is nothing to compare with, so
/// nothing changed: a new leader does not announce every PE again. A PE absent before
/// was pending; a PE absent now is not reported (the watch tells its end by the
/// placement or the app's state).
pub fn pe_changes(
    worker: &str,
    old: Option<&[pb::PeReport]>,
    new: &[pb::PeReport],
) -> Vec<PeChange> {
    let Some(old) = old else {
        return Vec::new();
    };
    let before: std::collections::HashMap<(&str, &str), i32> = old
        .iter()
        .map(|r| ((r.app.as_str(), r.pe.as_str()), r.state))
        .collect();
    let state = |s: i32| pb::PeState::try_from(s).unwrap_or(pb::PeState::Unspecified);
    new.iter()
        .filter_map(|r| {
            let was = before
                .get(&(r.app.as_str(), r.pe.as_str()))
                .map_or(pb::PeState::Pending, |s| state(*s));
            let now = state(r.state);
            (was != now).then(|| PeChange {
                app: r.app.clone(),
                pe: PeId::from(r.pe.as_str()),
                worker: worker.to_string(),
                old: was,
                new: now,
                message: r.message.clone(),
            })
        })
        .collect()
}

/// Whether a worker's new report shows progress the executor acts on: a PE started,
/// stopped, changed state, attempt or version, or reported a new checkpoint piece.
fn progressed(old: &[pb::PeReport], new: &[pb::PeReport]) -> bool {
    if old.len() != new.len() {
        return true;
    }
    let key = |r: &pb::PeReport| {
        (
            r.app.clone(),
            r.pe.clone(),
            r.state,
            r.attempt,
            r.version,
            r.checkpoints
                .last()
                .map(|c| (c.checkpoint_id, c.replicas.len())),
            r.restore_failed_checkpoint_id,
        )
    };
    let before: std::collections::BTreeSet<_> = old.iter().map(key).collect();
    new.iter().any(|r| !before.contains(&key(r)))
}

/// The last report of each PE, by (worker, PE): a PE that moved may still have a
/// stale report from its old worker.
pub type PeReports = std::collections::HashMap<(String, PeId), pb::PeReport>;

/// The PEs one worker reported in its last heartbeat.
#[derive(Clone, Debug)]
pub struct WorkerReports {
    /// The incarnation that reported them.
    pub incarnation: u64,
    /// When they arrived.
    pub at: Instant,
    /// The PEs.
    pub pes: Vec<pb::PeReport>,
}

impl Liveness {
    /// Records what a worker reports running, and wakes the executor when that shows
    /// progress since the worker's last report.
    pub fn record_reports(&self, id: &str, incarnation: u64, pes: Vec<pb::PeReport>) {
        let Ok(mut m) = self.reports.lock() else {
            return;
        };
        let moved = m.get(id).is_none_or(|old| progressed(&old.pes, &pes));
        // Nobody watches: nothing to tell (the report is still kept to compare with).
        let changes = if self.changes.0.receiver_count() == 0 {
            Vec::new()
        } else {
            pe_changes(id, m.get(id).map(|old| old.pes.as_slice()), &pes)
        };
        m.insert(
            id.to_string(),
            WorkerReports {
                incarnation,
                at: Instant::now(),
                pes,
            },
        );
        drop(m);
        for c in changes {
            // No watcher is no error.
            let _ = self.changes.0.send(c);
        }
        if moved {
            self.wake();
        }
    }

    /// The PE state changes reported from now on.
    pub fn pe_changes(&self) -> tokio::sync::broadcast::Receiver<PeChange> {
        self.changes.0.subscribe()
    }

    /// Wakes the executor now rather than at its next interval.
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// Resolves when something woke the executor.
    pub async fn woken(&self) {
        self.wake.notified().await
    }

    /// Records which apps the last reconcile tick could not place, and why (all of
    /// them: an app missing is placed, or gone). Answers the apps whose reason is new.
    pub fn set_unplaced(&self, apps: BTreeMap<String, String>) -> Vec<(String, String)> {
        let Ok(mut m) = self.unplaced.lock() else {
            return Vec::new();
        };
        let changed = apps
            .iter()
            .filter(|(app, why)| m.get(*app) != Some(*why))
            .map(|(app, why)| (app.clone(), why.clone()))
            .collect();
        *m = apps;
        changed
    }

    /// Records the queue the last reconcile tick left.
    pub fn set_queue(&self, queue: Vec<QueueEntry>) {
        if let Ok(mut q) = self.queue.lock() {
            *q = Arc::new(queue);
        }
    }

    /// The queue the last reconcile tick left, in service order.
    pub fn queue(&self) -> Arc<Vec<QueueEntry>> {
        self.queue.lock().map(|q| q.clone()).unwrap_or_default()
    }

    /// Why `app` could not be placed on the last attempt, if it could not.
    pub fn unplaced(&self, app: &str) -> Option<String> {
        self.unplaced.lock().ok().and_then(|m| m.get(app).cloned())
    }

    /// The last reports of every worker heard from.
    pub fn reports(&self) -> BTreeMap<String, WorkerReports> {
        self.reports.lock().map(|m| m.clone()).unwrap_or_default()
    }

    /// The last report of every PE of `app`, by (worker, PE): a PE that moved may still
    /// have a stale report from its old worker. (PE ids are unique within an app only:
    /// two apps with the same operators have the same PE ids.)
    pub fn pe_reports(&self, app: &str) -> PeReports {
        let mut out = PeReports::new();
        for (w, r) in self.reports() {
            for p in r.pes.into_iter().filter(|p| p.app == app) {
                out.insert((w.clone(), PeId::from(p.pe.as_str())), p);
            }
        }
        out
    }

    /// Records a heartbeat from `id` now.
    pub(crate) fn touch(&self, id: &str) {
        if let Ok(mut m) = self.seen.lock() {
            m.insert(id.to_string(), (Instant::now(), super::now_ms()));
        }
    }

    /// Wall-clock time of the last heartbeat of each worker heard by this master.
    pub fn last_seen_ms(&self) -> BTreeMap<String, u64> {
        self.seen
            .lock()
            .map(|m| m.iter().map(|(k, v)| (k.clone(), v.1)).collect())
            .unwrap_or_default()
    }

    /// How long `id` has been silent, if it was ever heard.
    pub(crate) fn silent_for(&self, id: &str) -> Option<Duration> {
        self.seen.lock().ok()?.get(id).map(|(t, _)| t.elapsed())
    }
}

#[cfg(test)]
mod tests {
    use super::{pe_changes, progressed, PeChange};
    use weir_proto::v1 as pb;

    fn report(pe: &str, state: i32, pieces: &[(u64, usize)]) -> pb::PeReport {
        pb::PeReport {
            pe: pe.into(),
            app: "a".into(),
            state,
            checkpoints: pieces
                .iter()
                .map(|(id, n)| pb::SnapshotPiece {
                    checkpoint_id: *id,
                    replicas: vec!["w".into(); *n],
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn only_reports_the_executor_acts_on_wake_it() {
        let old = vec![report("p", 2, &[(3, 2)]), report("q", 2, &[])];
        // Counters moving is no progress.
        let mut same = old.clone();
        same[0].stats = Some(pb::PeStats {
            records_in: 9,
            ..Default::default()
        });
        assert!(!progressed(&old, &same));
        // A new state, a new piece, a piece's replicas, a PE gone or added are.
        let mut state = old.clone();
        state[1].state = 3;
        assert!(progressed(&old, &state));
        let piece = vec![report("p", 2, &[(3, 2), (4, 1)]), report("q", 2, &[])];
        assert!(progressed(&old, &piece));
        let replicas = vec![report("p", 2, &[(3, 1)]), report("q", 2, &[])];
        assert!(progressed(&old, &replicas));
        assert!(progressed(&old, &old[..1]));
        let mut attempt = old.clone();
        attempt[0].attempt = 1;
        assert!(progressed(&old, &attempt));
    }

    #[test]
    fn a_pe_changes_state_when_its_worker_reports_another_state() {
        let old = vec![report("p", 3, &[]), report("q", 2, &[])];
        // A first report compares with nothing.
        assert!(pe_changes("w1", None, &old).is_empty());
        // Same states, counters moving: nothing.
        assert!(pe_changes("w1", Some(&old), &old).is_empty());
        let mut new = old.clone();
        new[0].state = pb::PeState::Failed as i32;
        new[0].message = "exit 3".into();
        new[1].state = pb::PeState::Running as i32;
        new.push(report("r", pb::PeState::Starting as i32, &[]));
        // Another app's PE of the same id is another PE.
        let mut other = report("p", 3, &[]);
        other.app = "b".into();
        new.push(other);
        let changes = pe_changes("w1", Some(&old), &new);
        let change = |pe: &str, app: &str, old, new, message: &str| PeChange {
            app: app.into(),
            pe: pe.into(),
            worker: "w1".into(),
            old,
            new,
            message: message.into(),
        };
        use pb::PeState::*;
        assert_eq!(
            changes,
            vec![
                change("p", "a", Running, Failed, "exit 3"),
                change("q", "a", Starting, Running, ""),
                change("r", "a", Pending, Starting, ""),
                change("p", "b", Pending, Running, ""),
            ]
        );
    }
}
