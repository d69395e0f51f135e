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
//!
//! **Scanning instead of looking up** ([`Cursor::Scan`]). Looking each listed slot up
//! is a random access into the window's maps, about a microsecond each in a state of
//! hundreds of megabytes on a busy core: an upgrade's successor whose first increment
//! lists ~800 K slots (every change since the switch) took 750-865 ms of its async
//! thread for it, 75% of it in those lookups (BENCHMARKS.md, issue 22). When the list
//! holds a large share of the slots ([`SCAN_SHARE`]), the increment is written by
//! walking the window's maps in order instead, one (window, key group) *unit* at a
//! time, writing every slot whose epoch is in `(after, upto]`; no list is copied at
//! the barrier. The same argument holds with one change: a slot's value at `K` is kept
//! only while its unit is not scanned yet (a scanned unit has written it), and the
//! kept values are written once the walk ends. So a slot of `K` in range is written
//! exactly once: by the walk, with its current value, which is its value at `K` since
//! its epoch has not moved; or, when it changed or closed before the walk reached its
//! unit, from the kept values (the walk then finds its epoch above `upto`, or finds it
//! gone). A unit is scanned within one step, between records. The set of slots
//! written contains the list's (every listed slot has an epoch in range), each
//! written once where the list writes a slot once per snapshot it changed after, so
//! the increment is the list's as a state: the same slots with the same values.

use super::keys::Keys;
use super::state::Entries;
use super::{Acc, Changes, Key, Window};
use crate::ops::codec::Enc;
use std::collections::HashMap;
use weir_common::keygroup::{key_group, KeyGroupRange};

/// Increments listing fewer slots than this are encoded at the barrier, as before:
/// about 15 ms of work, less than the bookkeeping would save.
pub const DEFER_FROM: usize = 32 * 1024;

/// Slots encoded per step.
pub const STEP: usize = 8 * 1024;

/// An increment whose list holds at least a `SCAN_SHARE`th of the window's slots is
/// written by scanning the maps (see the module): a slot visited in order costs a
/// few nanoseconds, a lookup of a listed one about a microsecond at 1 GB.
pub const SCAN_SHARE: usize = 32;

/// Slots a scanning step visits for each slot a looking-up step would encode.
const SCAN_PER_STEP: usize = 16;

/// When increments are encoded after their barrier, and how.
#[derive(Clone, Copy, Debug)]
pub(super) struct Defer {
    /// Increments listing this many slots or more are encoded after their barrier.
    pub(super) from: usize,
    /// See [`SCAN_SHARE`]: 0 never scans, `usize::MAX` always does.
    pub(super) scan_share: usize,
}

impl Default for Defer {
    fn default() -> Self {
        Self {
            from: DEFER_FROM,
            scan_share: SCAN_SHARE,
        }
    }
}

/// How an increment being encoded finds its slots.
#[derive(Clone, Debug)]
enum Cursor {
    /// Looks up the slots listed at the barrier; `next` are written.
    List {
        list: Vec<(i64, i64, Key)>,
        next: usize,
    },
    /// Walks the window's maps: every (window bounds, key group) before `next` is
    /// scanned.
    Scan { next: ((i64, i64), u32) },
}

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
    cursor: Cursor,
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
        if self.covers(epoch) && !self.written(bounds, key) {
            self.kept
                .entry((bounds.0, bounds.1, Key::from(key)))
                .or_insert(acc);
        }
    }

    /// A window closes: keeps the values of its slots that [`Encoding::keep`] keeps.
    pub(super) fn keep_closed(&mut self, bounds: (i64, i64), keys: &Keys) {
        if let Cursor::Scan { next } = self.cursor {
            if bounds < next.0 {
                // Scanned whole: nothing of it is needed.
                return;
            }
        }
        for (key, slot) in keys.iter() {
            self.keep(bounds, key, slot.acc, slot.epoch);
        }
    }

    /// Whether the slot of `key` in `bounds` is written already (scanned).
    fn written(&self, bounds: (i64, i64), key: &[u8]) -> bool {
        match self.cursor {
            Cursor::List { .. } => false,
            Cursor::Scan { next: (at, g) } => bounds < at || (bounds == at && key_group(key) < g),
        }
    }

    /// Whether a slot of `epoch` is one [`Encoding::keep`] keeps.
    pub(super) fn covers(&self, epoch: u64) -> bool {
        epoch > self.after && epoch <= self.upto
    }
}

impl Window {
    /// Starts encoding the increment of checkpoint `id` over the snapshot at `base`
    /// (whose epoch was `base_epoch`), of the slots listed from `from` on (see the
    /// module), by looking them up or by scanning. The caller marks the increment.
    pub(super) fn begin_encoding(
        &mut self,
        id: u64,
        (base, base_epoch): (u64, u64),
        groups: KeyGroupRange,
        from: usize,
        mut head: Enc,
    ) {
        head.u64(base);
        let mut out = self.open_entries(head, groups);
        let list = match &self.changes {
            Changes::Since { dirty, .. } => dirty.get(from..).unwrap_or_default(),
            Changes::Untracked => &[],
        };
        // At most one entry per listed slot.
        out.reserve(list.len());
        let scan = list.len().saturating_mul(self.defer.scan_share) >= self.open_windows();
        let cursor = if scan {
            Cursor::Scan {
                next: ((i64::MIN, i64::MIN), groups.start),
            }
        } else {
            Cursor::List {
                list: list.to_vec(),
                next: 0,
            }
        };
        self.encoding = Some(Box::new(Encoding {
            id,
            base,
            groups,
            out,
            cursor,
            after: base_epoch,
            upto: self.epoch,
            kept: HashMap::default(),
        }));
    }

    /// Whether an increment is being encoded.
    pub fn encoding(&self) -> bool {
        self.encoding.is_some()
    }

    /// Whether the increment being encoded is scanned for (not looked up).
    #[cfg(test)]
    pub(super) fn scanning(&self) -> bool {
        matches!(
            self.encoding.as_deref(),
            Some(Encoding {
                cursor: Cursor::Scan { .. },
                ..
            })
        )
    }

    /// Encodes up to `max` more slots of the increment being encoded (or visits
    /// [`SCAN_PER_STEP`] times as many, scanning); once all are, it is finished
    /// ([`Window::take_finished`]).
    pub fn encode_step(&mut self, max: usize) {
        let Some(job) = self.encoding.as_mut() else {
            return;
        };
        let max = max.max(1);
        let done = match &mut job.cursor {
            Cursor::List { list, next } => {
                let end = list.len().min(next.saturating_add(max));
                for (e, s, key) in &list[*next..end] {
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
                *next = end;
                *next == list.len()
            }
            Cursor::Scan { next } => {
                let (after, upto, groups) = (job.after, job.upto, job.groups);
                let budget = max.saturating_mul(SCAN_PER_STEP);
                let mut visited = 0usize;
                let mut done = true;
                'walk: for (bounds, keys) in self.windows.range(next.0..) {
                    let from = if *bounds == next.0 {
                        next.1
                    } else {
                        groups.start
                    };
                    for g in from..groups.end {
                        for (key, slot) in keys.group(g) {
                            visited += 1;
                            if slot.epoch > after && slot.epoch <= upto {
                                job.out.push(bounds, key, &slot.acc);
                            }
                        }
                        *next = (*bounds, g + 1);
                        if visited >= budget {
                            done = false;
                            break 'walk;
                        }
                    }
                    *next = (*bounds, groups.end);
                }
                if done {
                    // The slots that changed or closed before the walk reached them.
                    for ((e, s, key), acc) in std::mem::take(&mut job.kept) {
                        if groups.contains(key_group(&key)) {
                            job.out.push(&(e, s), &key, &acc);
                        }
                    }
                }
                done
            }
        };
        if done {
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
        self.defer.from = n;
    }

    /// Increments encoded after their barrier whose list holds at least a `share`th of
    /// the slots are scanned for (tests set it from [`SCAN_SHARE`]: 0 never scans,
    /// `usize::MAX` always does).
    #[cfg(test)]
    pub(super) fn scan_share(&mut self, share: usize) {
        self.defer.scan_share = share;
    }
}
