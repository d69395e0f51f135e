//! Increments encoded while records flow: a large increment is not encoded while the
//! stream waits at its barrier, but a slice at a time between batches, from a copy of
//! the changed slots' values as they were at the barrier (copy on write).
//!
//! Why: encoding an increment looks up every slot changed since its base, about half a
//! microsecond each in a large state. An upgrade's successor whose first increment
//! holds the ~4 s of changes since the switch (a million slots at 1 GB) held its
//! stream 400-600 ms at that barrier (BENCHMARKS.md, issue 22). Flink's heap state
//! backend snapshots asynchronously for the same reason, with copy-on-write maps.
//!
//! The argument. At barrier `K` the window captures the header (progress, lateness
//! bounds, counter: the increment's header is the state's at `K`) and the list of slots
//! changed since the base (`dirty` from the base's mark on), and starts a new epoch.
//! Every slot of that list has an epoch in `(after, upto]` (the base's epoch to `K`'s):
//! a slot is listed when its epoch moves to the current one, and only snapshots move
//! the current epoch, which `K` just did. So after `K`:
//! - a slot's first change after `K` finds its epoch in that range if and only if it
//!   may be in the list, and saves its value at `K` first ([`Encoding::keep`]); later
//!   changes find the new epoch and save nothing;
//! - a window closing after `K` saves the values of its slots in that range likewise;
//! - no other change happens while encoding: everything else that changes slots or
//!   epochs (a round, a restore, a merge, the next snapshot, the end of the stream)
//!   finishes the encoding first ([`Window::settle`]).
//!
//! Each listed slot is then written with its saved value if it has one, else with its
//! current one, which has not changed since `K`; a slot with neither did not exist at
//! `K` (slots are created only by records for open windows and removed only by
//! closing, which saves them). So the bytes are exactly the increment `K`'s barrier
//! would have encoded, only later; the checkpoint completes once they are stored.

use super::state::Entries;
use super::{Acc, Key, Window};
use crate::ops::codec::Enc;
use std::collections::HashMap;
use weir_common::keygroup::{key_group, KeyGroupRange};

/// Increments listing fewer slots than this are encoded at the barrier, as before:
/// about 15 ms of work, less than the bookkeeping would save.
pub const DEFER_FROM: usize = 32 * 1024;

/// Slots encoded per step.
pub const STEP: usize = 8 * 1024;

/// A piece of a checkpoint finished after its barrier: the checkpoint, the bytes and
/// the checkpoint they build on.
pub type Finished = (u64, Vec<u8>, u64);

/// An increment being encoded after its barrier.
#[derive(Clone, Debug)]
pub(super) struct Encoding {
    id: u64,
    base: u64,
    groups: KeyGroupRange,
    out: Entries,
    /// The slots listed at the barrier, and how many are written.
    list: Vec<(i64, i64, Key)>,
    next: usize,
    /// The epochs of listed slots: above `after`, at most `upto`.
    after: u64,
    upto: u64,
    /// Values at the barrier of listed slots changed or closed since.
    kept: HashMap<(i64, i64, Key), Acc, foldhash::fast::RandomState>,
}

impl Encoding {
    /// A slot of epoch `epoch` changes or closes for the first time since the barrier:
    /// keeps its value then if it may be listed.
    pub(super) fn keep(&mut self, bounds: (i64, i64), key: &[u8], acc: Acc, epoch: u64) {
        if self.covers(epoch) {
            self.kept
                .entry((bounds.0, bounds.1, Key::from(key)))
                .or_insert(acc);
        }
    }

    /// Whether a slot of `epoch` is one [`Encoding::keep`] keeps.
    pub(super) fn covers(&self, epoch: u64) -> bool {
        epoch > self.after && epoch <= self.upto
    }
}

impl Window {
    /// Starts encoding the increment of checkpoint `id` over the snapshot at `base`,
    /// of the slots listed in `list` (see the module). The caller marks the increment.
    pub(super) fn begin_encoding(
        &mut self,
        id: u64,
        base: u64,
        base_epoch: u64,
        groups: KeyGroupRange,
        list: Vec<(i64, i64, Key)>,
        mut head: Enc,
    ) {
        head.u64(base);
        let out = self.open_entries(head, groups);
        self.encoding = Some(Box::new(Encoding {
            id,
            base,
            groups,
            out,
            list,
            next: 0,
            after: base_epoch,
            upto: self.epoch,
            kept: HashMap::default(),
        }));
    }

    /// Whether an increment is being encoded.
    pub fn encoding(&self) -> bool {
        self.encoding.is_some()
    }

    /// Encodes up to `max` more slots of the increment being encoded; once all are, it
    /// is finished ([`Window::take_finished`]).
    pub fn encode_step(&mut self, max: usize) {
        let Some(job) = self.encoding.as_mut() else {
            return;
        };
        let end = job.list.len().min(job.next.saturating_add(max.max(1)));
        for (e, s, key) in &job.list[job.next..end] {
            if !job.groups.contains(key_group(key)) {
                continue;
            }
            let bounds = (*e, *s);
            let kept = (!job.kept.is_empty())
                .then(|| job.kept.get(&(*e, *s, key.clone())))
                .flatten();
            let acc = match kept {
                Some(acc) => Some(*acc),
                None => self
                    .windows
                    .get(&bounds)
                    .and_then(|keys| keys.get(key.as_slice()))
                    .map(|slot| slot.acc),
            };
            if let Some(acc) = acc {
                job.out.push(&bounds, key, &acc);
            }
        }
        job.next = end;
        if job.next == job.list.len() {
            if let Some(job) = self.encoding.take() {
                let bytes = job.out.finish();
                self.chain.add_increment(bytes.len() as u64);
                self.finished.push((job.id, bytes, job.base));
            }
        }
    }

    /// Finishes the increment being encoded, if any: before anything but a record or
    /// a close changes the state (see the module).
    pub(super) fn settle(&mut self) {
        while self.encoding.is_some() {
            self.encode_step(usize::MAX);
        }
    }

    /// The increments finished since the last call, oldest first.
    pub fn take_finished(&mut self) -> Vec<Finished> {
        std::mem::take(&mut self.finished)
    }

    /// Holds `finished` for [`Window::take_finished`] (increments another copy of
    /// this window finished: a drained window's, encoded and dropped elsewhere).
    pub fn hand_back(&mut self, finished: Vec<Finished>) {
        self.finished.extend(finished);
    }

    /// Increments listing at least `n` slots are encoded after their barrier (tests
    /// lower it from [`DEFER_FROM`]).
    pub fn defer_from(&mut self, n: usize) {
        self.defer_from = n;
    }
}
