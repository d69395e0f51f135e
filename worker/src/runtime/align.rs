//! Barrier alignment of a PE with several inputs, as a pure state machine (the PE loop
//! in `pe.rs` owns the streams and does the I/O).
//!
//! An input that delivered the barrier being aligned is held back (its later records
//! wait in its queue, so backpressure still works) until every other live input
//! delivered it too or ended; then the PE snapshots and every held input resumes. A
//! newer barrier supersedes an older alignment (that checkpoint was abandoned: its held
//! inputs resume at once); an older barrier, or one already snapshotted, is dropped.
//!
//! What is held is generic (`S`): the PE holds its input streams, the tests hold names.

use std::time::{Duration, Instant};

/// What the PE does with a barrier that arrived on an input.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum OnBarrier<S> {
    /// Drop it: its checkpoint was snapshotted or abandoned.
    Ignore,
    /// Hold the input back (give it to [`Aligner::hold`]), after resuming `release`: the
    /// inputs an abandoned alignment held.
    Hold {
        /// Inputs to resume, with what was held for each.
        release: Vec<(usize, S)>,
    },
}

/// The alignment state of one PE.
#[derive(Debug)]
pub(crate) struct Aligner<S> {
    /// The barrier being aligned; 0 when none.
    id: u64,
    /// When its first input delivered it.
    since: Instant,
    /// The inputs that delivered it, each with what is held for it.
    held: Vec<(usize, S)>,
    /// The last barrier snapshotted.
    done: u64,
}

impl<S> Aligner<S> {
    /// No alignment under way, nothing snapshotted.
    pub(crate) fn new(now: Instant) -> Self {
        Self {
            id: 0,
            since: now,
            held: Vec::new(),
            done: 0,
        }
    }

    /// Barrier `id` arrived on `input` at `now`.
    pub(crate) fn on_barrier(&mut self, input: usize, id: u64, now: Instant) -> OnBarrier<S> {
        if id <= self.done || (self.id != 0 && id < self.id) {
            return OnBarrier::Ignore;
        }
        let mut release = Vec::new();
        if id > self.id {
            release = std::mem::take(&mut self.held);
            self.id = id;
            self.since = now;
        }
        // An input delivers a barrier at most once while held (it is not read); a
        // repeat would otherwise count it twice.
        if let Some(k) = self.held.iter().position(|(i, _)| *i == input) {
            release.push(self.held.swap_remove(k));
        }
        OnBarrier::Hold { release }
    }

    /// Holds `input` back with `what` (after [`OnBarrier::Hold`]).
    pub(crate) fn hold(&mut self, input: usize, what: S) {
        self.held.push((input, what));
    }

    /// The barrier to snapshot now, if every one of the `live` inputs (those not
    /// ended) delivered it.
    pub(crate) fn aligned(&self, live: usize) -> Option<u64> {
        (self.id != 0 && self.held.len() == live).then_some(self.id)
    }

    /// How long the current alignment has taken at `now`.
    pub(crate) fn alignment(&self, now: Instant) -> Duration {
        now.saturating_duration_since(self.since)
    }

    /// The aligned barrier was snapshotted: returns the held inputs, to resume.
    pub(crate) fn complete(&mut self) -> Vec<(usize, S)> {
        self.done = self.id;
        self.id = 0;
        std::mem::take(&mut self.held)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type Held = Vec<(usize, &'static str)>;

    /// Barrier `id` on `input`, which must be held: holds it as `name`; returns what
    /// the barrier released.
    fn barrier(a: &mut Aligner<&'static str>, input: usize, id: u64, name: &'static str) -> Held {
        let OnBarrier::Hold { release } = a.on_barrier(input, id, Instant::now()) else {
            panic!("barrier {id} on {input} ignored");
        };
        a.hold(input, name);
        release
    }

    /// Barrier `id` on `input`, held as `name`, releasing nothing.
    fn hold(a: &mut Aligner<&'static str>, input: usize, id: u64, name: &'static str) {
        assert_eq!(barrier(a, input, id, name), vec![]);
    }

    #[test]
    fn aligns_across_every_live_input_then_resumes_them() {
        let mut a = Aligner::new(Instant::now());
        assert_eq!(a.aligned(3), None);
        hold(&mut a, 0, 1, "a");
        hold(&mut a, 2, 1, "c");
        assert_eq!(a.aligned(3), None, "input 1 has not delivered it");
        hold(&mut a, 1, 1, "b");
        assert_eq!(a.aligned(3), Some(1));
        let mut resumed = a.complete();
        resumed.sort();
        assert_eq!(resumed, vec![(0, "a"), (1, "b"), (2, "c")]);
        assert_eq!(a.aligned(3), None);
        // The same barrier again (e.g. a late copy) is dropped; the next one aligns.
        assert_eq!(a.on_barrier(0, 1, Instant::now()), OnBarrier::Ignore);
        hold(&mut a, 0, 2, "a");
        assert_eq!(a.aligned(1), Some(2));
    }

    #[test]
    fn an_input_ending_mid_alignment_no_longer_counts() {
        let mut a = Aligner::new(Instant::now());
        hold(&mut a, 0, 4, "a");
        assert_eq!(a.aligned(2), None);
        // Input 1 ends before delivering barrier 4: one live input is left, and held.
        assert_eq!(a.aligned(1), Some(4));
        assert_eq!(a.complete(), vec![(0, "a")]);
    }

    #[test]
    fn a_newer_barrier_abandons_the_older_alignment_and_an_older_one_is_dropped() {
        let mut a = Aligner::new(Instant::now());
        hold(&mut a, 0, 5, "a");
        // Input 1 delivers 6: checkpoint 5 was abandoned, input 0 resumes.
        assert_eq!(barrier(&mut a, 1, 6, "b"), vec![(0, "a")]);
        assert_eq!(a.on_barrier(0, 5, Instant::now()), OnBarrier::Ignore);
        assert_eq!(a.aligned(2), None);
        hold(&mut a, 0, 6, "a");
        assert_eq!(a.aligned(2), Some(6));
    }

    #[test]
    fn a_barrier_from_an_input_already_held_is_not_counted_twice() {
        let mut a = Aligner::new(Instant::now());
        hold(&mut a, 0, 7, "a");
        assert_eq!(
            barrier(&mut a, 0, 7, "a"),
            vec![(0, "a")],
            "released, held again"
        );
        assert_eq!(a.aligned(2), None, "input 1 has not delivered barrier 7");
        hold(&mut a, 1, 7, "b");
        assert_eq!(a.aligned(2), Some(7));
    }

    #[test]
    fn the_alignment_time_runs_from_the_first_input() {
        let start = Instant::now();
        let mut a: Aligner<()> = Aligner::new(start);
        let first = start + Duration::from_millis(10);
        let _ = a.on_barrier(0, 1, first);
        a.hold(0, ());
        let _ = a.on_barrier(1, 1, first + Duration::from_millis(5));
        a.hold(1, ());
        assert_eq!(
            a.alignment(first + Duration::from_millis(30)),
            Duration::from_millis(30)
        );
    }
}
