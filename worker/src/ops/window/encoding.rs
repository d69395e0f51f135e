//! Snapshots encoded while records flow: a large increment, or a large whole snapshot,
//! is not encoded while the stream waits at its barrier, but a slice at a time between
//! batches, from a copy of the changed slots' values as they were at the barrier (copy
//! on write).
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
//!
//! **Whole snapshots** ([`Cursor::Whole`]) are written the same way, as a scan whose
//! epochs are all those up to `upto` (every slot that existed at `K`; slots created
//! after `K` have a later epoch). Why: a periodic whole snapshot (every
//! [`super::incremental::MAX_LINKS`] checkpoints, or when the increments outgrow it) of
//! 50 MB held its stream 311-388 ms, and one coinciding with an upgrade made a 100 MB
//! rescale stall 267 ms (BENCHMARKS.md, issue 22). A whole snapshot is indexed by key
//! group, each group's entries in a section of their own (`state.rs`), so the walk goes
//! key group first, window by window within it, and a group's kept values are written
//! when its walk ends, before its section is closed: by then every unit of the group
//! is written, so no value of that group is kept after. The argument above then holds
//! section by section.

use super::keys::Keys;
use super::state::Entries;
use super::{Acc, Changes, Key, Window};
use crate::ops::codec::Enc;
use std::collections::{BTreeMap, HashMap};
use std::ops::Bound;
use weir_common::keygroup::{key_group, KeyGroupRange};

/// Increments listing fewer slots than this, and whole snapshots of fewer, are encoded
/// at the barrier, as before: about 15 ms of work, less than the bookkeeping would
/// save.
pub const DEFER_FROM: usize = 32 * 1024;

/// Slots encoded per step.
pub const STEP: usize = 8 * 1024;

/// An increment whose list holds at least a `SCAN_SHARE`th of the window's slots is
/// written by scanning the maps (see the module): a slot visited in order costs a
/// few nanoseconds, a lookup of a listed one about a microsecond at 1 GB, so a scan
/// is the cheaper from about a 200th. 32 until 2026-12-06: at 1 GB the periodic
/// increments (~100 K slots of 13 M per PE) were looked up, ~150 ms of each window
/// PE's thread per second in steps of 8 Ki lookups, and the bench's steady state
/// had gaps of 49-121 ms at the sink and a p99 of 28-78 ms; scanned, 18-26 ms and
/// 6-13 ms (BENCHMARKS.md, issue 22).
pub const SCAN_SHARE: usize = 256;

/// Slots a scanning step visits for each slot a looking-up step would encode.
const SCAN_PER_STEP: usize = 16;

/// When increments are encoded after their barrier, and how.
#[derive(Clone, Copy, Debug)]
pub(super) struct Defer {
    /// Increments listing this many slots or more, and whole snapshots of this many or
    /// more, are encoded after their barrier.
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

/// How a snapshot being encoded finds its slots.
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
    /// Walks the window's maps key group first, as a whole snapshot's sections go
    /// ([`Window::begin_whole`]): every key group before `next.0` is scanned, and the
    /// windows of `next.0` up to `next.1` (none when `None`).
    Whole { next: (u32, Option<(i64, i64)>) },
}

/// A piece of a checkpoint finished after its barrier: the checkpoint, the bytes and
/// the checkpoint they build on (0: a whole snapshot).
pub type Finished = (u64, Vec<u8>, u64);

/// Values at the barrier of slots changed or closed since, by key group (a whole
/// snapshot writes a group's when its section ends).
type Kept = BTreeMap<u32, HashMap<(i64, i64, Key), Acc, foldhash::fast::RandomState>>;

/// A snapshot being encoded after its barrier: an increment, or a whole snapshot.
#[derive(Clone, Debug)]
pub(super) struct Encoding {
    id: u64,
    /// The checkpoint it builds on (0: whole).
    base: u64,
    groups: KeyGroupRange,
    out: Entries,
    cursor: Cursor,
    /// The epochs of the slots it writes: from `from` to `upto` (an increment's are
    /// those changed since its base's barrier; a whole snapshot's, all).
    from: u64,
    upto: u64,
    kept: Kept,
}

impl Encoding {
    /// A slot of epoch `epoch` changes or closes for the first time since the barrier:
    /// keeps its value then if it may be written and is not yet.
    pub(super) fn keep(&mut self, bounds: (i64, i64), key: &[u8], acc: Acc, epoch: u64) {
        if !self.covers(epoch) {
            return;
        }
        let g = key_group(key);
        if !self.written(bounds, g) {
            self.kept
                .entry(g)
                .or_default()
                .entry((bounds.0, bounds.1, Key::from(key)))
                .or_insert(acc);
        }
    }

    /// A window closes: keeps the values of its slots that [`Encoding::keep`] keeps.
    pub(super) fn keep_closed(&mut self, bounds: (i64, i64), keys: &Keys) {
        match self.cursor {
            // Scanned whole: nothing of it is needed.
            Cursor::Scan { next } if bounds < next.0 => return,
            Cursor::Whole { next } if next.0 >= self.groups.end => return,
            _ => {}
        }
        for (key, slot) in keys.iter() {
            self.keep(bounds, key, slot.acc, slot.epoch);
        }
    }

    /// Whether the slot in `bounds` of a key in key group `g` is written already
    /// (scanned).
    fn written(&self, bounds: (i64, i64), g: u32) -> bool {
        match self.cursor {
            Cursor::List { .. } => false,
            Cursor::Scan { next: (at, next) } => bounds < at || (bounds == at && g < next),
            Cursor::Whole { next: (next, upto) } => {
                g < next || (g == next && upto.is_some_and(|u| bounds <= u))
            }
        }
    }

    /// Whether a slot of `epoch` is one [`Encoding::keep`] keeps.
    pub(super) fn covers(&self, epoch: u64) -> bool {
        epoch >= self.from && epoch <= self.upto
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
            from: base_epoch.saturating_add(1),
            upto: self.epoch,
            kept: Kept::new(),
        }));
    }

    /// Starts encoding the whole snapshot of `groups` at checkpoint `id`, whose
    /// barrier's epoch was `upto` (see the module): every slot of an epoch up to it,
    /// key group by key group. The caller marked the snapshot (a new epoch).
    pub(super) fn begin_whole(&mut self, id: u64, groups: KeyGroupRange, upto: u64) {
        let mut out = self.open_whole(groups);
        out.reserve(self.open_windows());
        self.encoding = Some(Box::new(Encoding {
            id,
            base: 0,
            groups,
            out,
            cursor: Cursor::Whole {
                next: (groups.start, None),
            },
            from: 0,
            upto,
            kept: Kept::new(),
        }));
    }

    /// Whether a snapshot is being encoded.
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

    /// Encodes up to `max` more slots of the snapshot being encoded (scanning for an
    /// increment: until it has written `max`, or visited [`SCAN_PER_STEP`] times as
    /// many, to the end of a unit); once all are, it is finished
    /// ([`Window::take_finished`]).
    ///
    /// (Until 2026-12-06, night, a scanning step stopped only on slots visited: at 10 MB of
    /// state, where a periodic increment holds about every slot, one step wrote
    /// 16 x 8 Ki slots, the whole PE's state, in 8-10 ms on its async thread, and the
    /// records behind it were the slowest of the upgrade it fell in (BENCHMARKS.md,
    /// "Encoding steps bounded by what they write").)
    pub fn encode_step(&mut self, max: usize) {
        let Some(job) = self.encoding.as_mut() else {
            return;
        };
        let max = max.max(1);
        let (from, upto, groups) = (job.from, job.upto, job.groups);
        let done = match &mut job.cursor {
            Cursor::List { list, next } => {
                let end = list.len().min(next.saturating_add(max));
                for (e, s, key) in &list[*next..end] {
                    let g = key_group(key);
                    if !groups.contains(g) {
                        continue;
                    }
                    let bounds = (*e, *s);
                    let kept = job
                        .kept
                        .get(&g)
                        .and_then(|kept| kept.get(&(*e, *s, key.clone())));
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
                // A step ends after the unit that reaches either budget: slots
                // visited, or slots written (each written one costs what a looked-up
                // one does, so a step writes about what a looking-up step writes).
                let budget = max.saturating_mul(SCAN_PER_STEP);
                let (mut visited, mut written) = (0usize, 0usize);
                let mut done = true;
                'walk: for (bounds, keys) in self.windows.range(next.0..) {
                    let start = if *bounds == next.0 {
                        next.1
                    } else {
                        groups.start
                    };
                    for g in start..groups.end {
                        for (key, slot) in keys.group(g) {
                            visited += 1;
                            if slot.epoch >= from && slot.epoch <= upto {
                                job.out.push(bounds, key, &slot.acc);
                                written += 1;
                            }
                        }
                        *next = (*bounds, g + 1);
                        if visited >= budget || written >= max {
                            done = false;
                            break 'walk;
                        }
                    }
                    *next = (*bounds, groups.end);
                }
                if done {
                    // The slots that changed or closed before the walk reached them.
                    for kept in std::mem::take(&mut job.kept).into_values() {
                        for ((e, s, key), acc) in kept {
                            if groups.contains(key_group(&key)) {
                                job.out.push(&(e, s), &key, &acc);
                            }
                        }
                    }
                }
                done
            }
            Cursor::Whole { next } => {
                // Every slot visited is written: a step visits what a looking-up
                // step writes.
                let mut visited = 0usize;
                'groups: while next.0 < groups.end {
                    let g = next.0;
                    let after = next.1.map_or(Bound::Unbounded, Bound::Excluded);
                    for (bounds, keys) in self.windows.range((after, Bound::Unbounded)) {
                        if visited >= max {
                            break 'groups;
                        }
                        for (key, slot) in keys.group(g) {
                            visited += 1;
                            if slot.epoch <= upto {
                                job.out.push(bounds, key, &slot.acc);
                            }
                        }
                        next.1 = Some(*bounds);
                    }
                    // The group's slots that changed or closed before the walk reached
                    // them, in its section.
                    for ((e, s, key), acc) in job.kept.remove(&g).unwrap_or_default() {
                        job.out.push(&(e, s), &key, &acc);
                    }
                    job.out.end_group(g);
                    *next = (g + 1, None);
                }
                next.0 >= groups.end
            }
        };
        if done {
            if let Some(job) = self.encoding.take() {
                let bytes = job.out.finish();
                if job.base == 0 {
                    self.chain = super::incremental::Chain::whole(bytes.len() as u64);
                } else {
                    self.chain.add_increment(bytes.len() as u64);
                }
                self.finished.push((job.id, bytes, job.base));
            }
        }
    }

    /// Finishes the snapshot being encoded, if any: before anything but a record or
    /// a close changes the state (see the module).
    pub(super) fn settle(&mut self) {
        while self.encoding.is_some() {
            self.encode_step(usize::MAX);
        }
    }

    /// The snapshots finished since the last call, oldest first.
    pub fn take_finished(&mut self) -> Vec<Finished> {
        std::mem::take(&mut self.finished)
    }

    /// Holds `finished` for [`Window::take_finished`] (snapshots another copy of
    /// this window finished: a drained window's, encoded and dropped elsewhere).
    pub fn hand_back(&mut self, finished: Vec<Finished>) {
        self.finished.extend(finished);
    }

    /// Increments listing at least `n` slots, and whole snapshots of at least `n`, are
    /// encoded after their barrier (tests lower it from [`DEFER_FROM`]).
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
