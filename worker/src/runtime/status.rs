//! A PE's live status, shared between its task and the worker's reports.

use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::Mutex;
use weir_common::record::Batch;
use weir_proto::v1 as pb;

/// Counters and state of one PE.
#[derive(Debug, Default)]
pub struct PeStatus {
    state: AtomicU8,
    /// Records taken from the inputs.
    pub records_in: AtomicU64,
    /// Records handed to the outputs (consumed, for sinks).
    pub records_out: AtomicU64,
    /// Bytes taken from the inputs.
    pub bytes_in: AtomicU64,
    /// Bytes handed to the outputs.
    pub bytes_out: AtomicU64,
    message: Mutex<String>,
    verify: Mutex<Option<pb::VerifySummary>>,
    pieces: Mutex<std::collections::VecDeque<pb::SnapshotPiece>>,
    /// The checkpoint it could not restore from; 0 for none.
    pub restore_failed: AtomicU64,
    /// State bytes an upgrade's successor pre-copied before the switch.
    pub precopied_bytes: AtomicU64,
    /// State bytes an upgrade's successor took at the switch barrier.
    pub barrier_bytes: AtomicU64,
    /// Why an upgrade's successor let the switch begin still behind its predecessors'
    /// rounds; `None` when it caught up (or is no successor).
    pub behind: std::sync::OnceLock<&'static str>,
    /// Woken when the masters should hear at once (a new state, a new piece).
    nudge: Option<std::sync::Arc<tokio::sync::Notify>>,
    gaps: Mutex<Gaps>,
}

/// Seconds of input-gap history kept.
const GAP_WINDOW_S: u64 = 10;

/// The longest wait between input batches, per second of the recent past.
#[derive(Debug, Default)]
struct Gaps {
    last: Option<std::time::Instant>,
    epoch: Option<std::time::Instant>,
    /// (second since `epoch`, longest gap that ended in it, ms), one slot per second.
    slots: [(u64, u64); GAP_WINDOW_S as usize],
}

impl Gaps {
    fn took(&mut self) {
        let now = std::time::Instant::now();
        let epoch = *self.epoch.get_or_insert(now);
        if let Some(last) = self.last.replace(now) {
            let gap = now.duration_since(last).as_millis() as u64;
            let sec = now.duration_since(epoch).as_secs();
            let slot = &mut self.slots[(sec % GAP_WINDOW_S) as usize];
            if slot.0 != sec {
                *slot = (sec, 0);
            }
            slot.1 = slot.1.max(gap);
        }
    }

    /// Per second of the last [`GAP_WINDOW_S`], oldest first: the longest gap that
    /// ended in it (the current second also counts a wait still going on).
    fn per_second(&self) -> Vec<u64> {
        let (Some(epoch), Some(last)) = (self.epoch, self.last) else {
            return Vec::new();
        };
        let now = std::time::Instant::now();
        let sec = now.duration_since(epoch).as_secs();
        (0..GAP_WINDOW_S)
            .rev()
            .map(|ago| {
                let s = sec.saturating_sub(ago);
                let slot = self.slots[(s % GAP_WINDOW_S) as usize];
                let g = if slot.0 == s { slot.1 } else { 0 };
                if ago == 0 {
                    g.max(now.duration_since(last).as_millis() as u64)
                } else {
                    g
                }
            })
            .collect()
    }
}

/// Snapshot pieces a PE keeps reporting (the master needs the in-flight one; older
/// ones only help humans).
const PIECES_REPORTED: usize = 4;

/// A PE's lifecycle as the worker sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum PeRunState {
    /// Deployed; building its kernel (e.g. spawning a program).
    Starting = 0,
    /// Processing.
    Running = 1,
    /// Done: a bounded source emitted everything, or every input ended.
    Finished = 2,
    /// Stopped by an error (see the message).
    Failed = 3,
}

impl PeRunState {
    /// The protocol's state. A finished PE reports STOPPED: it is not to be restarted.
    pub fn to_proto(self) -> pb::PeState {
        match self {
            PeRunState::Starting => pb::PeState::Starting,
            PeRunState::Running => pb::PeState::Running,
            PeRunState::Finished => pb::PeState::Stopped,
            PeRunState::Failed => pb::PeState::Failed,
        }
    }
}

impl PeStatus {
    /// The current state.
    pub fn state(&self) -> PeRunState {
        match self.state.load(Ordering::Acquire) {
            0 => PeRunState::Starting,
            1 => PeRunState::Running,
            2 => PeRunState::Finished,
            _ => PeRunState::Failed,
        }
    }

    /// Moves to `s`.
    pub fn set(&self, s: PeRunState) {
        if self.state.swap(s as u8, Ordering::AcqRel) != s as u8 {
            self.nudge();
        }
    }

    /// A status whose changes of state and new pieces wake `nudge` (the worker's
    /// heartbeat, so the masters hear of them at once).
    pub fn with_nudge(nudge: std::sync::Arc<tokio::sync::Notify>) -> Self {
        Self {
            nudge: Some(nudge),
            ..Self::default()
        }
    }

    fn nudge(&self) {
        if let Some(n) = &self.nudge {
            n.notify_one();
        }
    }

    /// Fails with a reason.
    pub fn fail(&self, why: String) {
        if let Ok(mut m) = self.message.lock() {
            *m = why;
        }
        self.set(PeRunState::Failed);
    }

    /// The last error, or what the PE's start-up waits for.
    pub fn message(&self) -> String {
        self.message.lock().map(|m| m.clone()).unwrap_or_default()
    }

    /// Counts a batch in.
    pub fn took(&self, b: &Batch) {
        if let Ok(mut g) = self.gaps.lock() {
            g.took();
        }
        self.records_in.fetch_add(b.len() as u64, Ordering::Relaxed);
        self.bytes_in
            .fetch_add(b.encoded_len() as u64, Ordering::Relaxed);
    }

    /// Counts a batch out.
    pub fn gave(&self, b: &Batch) {
        self.records_out
            .fetch_add(b.len() as u64, Ordering::Relaxed);
        self.bytes_out
            .fetch_add(b.encoded_len() as u64, Ordering::Relaxed);
    }

    /// Publishes a `sink.verify` summary.
    pub fn set_verify(&self, v: Option<pb::VerifySummary>) {
        if let Ok(mut m) = self.verify.lock() {
            *m = v;
        }
    }

    /// Records the snapshot of a checkpoint (reported until newer ones push it out).
    pub fn add_piece(&self, p: pb::SnapshotPiece) {
        if let Ok(mut m) = self.pieces.lock() {
            m.push_back(p);
            while m.len() > PIECES_REPORTED {
                m.pop_front();
            }
        }
        self.nudge();
    }

    /// The snapshots to report.
    pub fn pieces(&self) -> Vec<pb::SnapshotPiece> {
        self.pieces
            .lock()
            .map(|m| m.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// Publishes a message without failing (e.g. how a restore went, or what a
    /// start-up waits for, such as an image pull's progress); an empty text clears
    /// it. The masters hear of it at once.
    pub fn note(&self, what: String) {
        if let Ok(mut m) = self.message.lock() {
            *m = what;
        }
        self.nudge();
    }

    /// The longest wait between input batches in each of the last seconds, oldest
    /// first.
    pub fn input_gaps_ms(&self) -> Vec<u64> {
        self.gaps.lock().map(|g| g.per_second()).unwrap_or_default()
    }

    /// The last `sink.verify` summary.
    pub fn verify(&self) -> Option<pb::VerifySummary> {
        self.verify.lock().ok().and_then(|m| *m)
    }
}

/// Why a PE's task stops early. Its status already tells the master: a failure is
/// reported where it happens, with its details, so the task only has to return.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Stopped {
    /// The PE failed; its status holds why.
    #[error("the PE failed")]
    Failed,
    /// A source added by an upgrade lost its checkpoint triggers before its start
    /// barrier came (the PE was stopped).
    #[error("the checkpoint triggers closed before the start barrier")]
    TriggersClosed,
}
