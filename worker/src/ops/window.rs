//! `window.count`, `window.sum` and `window.hop`: keyed windows over event time.
//!
//! Windows start every `slide` ms and last `size` ms (a multiple of `slide`); tumbling
//! windows (`window.count`, `window.sum`) are those with `slide == size`. A record with
//! event time `t` falls in the `size / slide` windows `[s, s + size)` of its key whose
//! start `s` is a multiple of `slide` in `(t - size, t]`: for a tumbling window, the one
//! starting at `floor(t/size)*size`. Each input's watermark is the largest event time seen on it; the PE watermark is
//! the smallest over inputs (an ended input counts as +infinity, one that has shown
//! nothing as -infinity), and after every batch each window ending at or before it is
//! emitted and forgotten. Lateness is judged by the watermark: a record whose window
//! ends at or before the watermark at which this PE last closed windows can only belong
//! to a window already emitted (or one that would be emitted after its time), so it is
//! dropped and counted, never emitted twice. A hopping window judges each of a record's
//! windows on its own: the record still counts in those that are open, and is counted
//! late once if any of its windows had closed.
//!
//! State snapshots are split by key group so rescaling can move groups; the encoding and
//! the merge rule are in [`Window::snapshot`] and [`Window::restore`].

mod delta;
#[cfg(test)]
mod delta_tests;
mod encoding;
#[cfg(test)]
mod encoding_tests;
#[cfg(test)]
mod hop_tests;
mod incremental;
#[cfg(test)]
mod incremental_tests;
#[cfg(test)]
mod index_tests;
mod key;
mod keys;
mod state;
#[cfg(test)]
mod test_records;
#[cfg(test)]
mod tests;

use super::eval::lookup;
pub use encoding::{Finished, DEFER_FROM, STEP as ENCODE_STEP};
use key::Key;
use keys::Keys;
use std::collections::BTreeMap;
use weir_common::keygroup::key_group;
use weir_common::record::{Batch, BatchBuilder, RecordRef, Value};

/// What a window computes per key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WindowKind {
    /// Records per key and window (`window.count`).
    Count,
    /// The sum of a numeric field per key and window (`window.sum`).
    Sum {
        /// The field summed.
        field: String,
    },
}

/// An input's progress. The derived order is the watermark order: nothing seen is
/// -infinity, ended is +infinity.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
enum Progress {
    /// No record seen yet.
    #[default]
    Unseen,
    /// The largest event time seen.
    At(i64),
    /// The input ended.
    Ended,
}

/// The running aggregate of one key in one window.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Acc {
    /// Records counted.
    Count(u64),
    /// A sum kept both exactly (while every value is an integer and it fits) and as a
    /// float, so the output type can be decided when the window closes.
    Sum {
        /// The integer sum; `None` once it overflowed.
        int: Option<i64>,
        /// The sum as a float.
        float: f64,
        /// Whether every summed value was an integer.
        all_int: bool,
    },
}

impl Acc {
    fn merge(&mut self, other: &Acc) {
        match (self, other) {
            (Acc::Count(a), Acc::Count(b)) => *a = a.saturating_add(*b),
            (
                Acc::Sum {
                    int,
                    float,
                    all_int,
                },
                Acc::Sum {
                    int: i2,
                    float: f2,
                    all_int: a2,
                },
            ) => {
                *int = int.zip(*i2).and_then(|(a, b)| a.checked_add(b));
                *float += f2;
                *all_int &= a2;
            }
            // Snapshots are checked against the window's kind before merging.
            _ => {}
        }
    }

    /// The output field's value.
    fn value(&self) -> Value {
        match *self {
            Acc::Count(n) => Value::I64(i64::try_from(n).unwrap_or(i64::MAX)),
            Acc::Sum {
                int: Some(i),
                all_int: true,
                ..
            } => Value::I64(i),
            Acc::Sum { float, .. } => Value::F64(float),
        }
    }
}

/// A number to sum: integers stay exact. Strings holding a number count (JSON sources
/// deliver quoted numbers as strings); anything else, and non-finite floats, is skipped.
fn number(v: Option<Value>) -> Option<Acc> {
    let (int, float) = match v? {
        Value::I64(i) => (Some(i), i as f64),
        Value::F64(f) => (None, f),
        Value::Str(s) => match s.trim().parse::<i64>() {
            Ok(i) => (Some(i), i as f64),
            Err(_) => (None, s.trim().parse::<f64>().ok()?),
        },
        _ => return None,
    };
    float.is_finite().then_some(Acc::Sum {
        int,
        float,
        all_int: int.is_some(),
    })
}

/// The bounds of the latest window of `size` starting every `slide` that holds `t`.
fn latest(t: i64, size: i64, slide: i64) -> (i64, i64) {
    // floor(t / slide) * slide can fall below i64::MIN for t near it: clamp.
    let start = t.div_euclid(slide).checked_mul(slide).unwrap_or(i64::MIN);
    (start, start.saturating_add(size))
}

/// The bounds of every window of `size` starting every `slide` that holds `t`, latest
/// first (`size / slide` of them, fewer near `i64::MIN`).
fn every(t: i64, size: i64, slide: i64) -> impl Iterator<Item = (i64, i64)> {
    let (last, _) = latest(t, size, slide);
    (0..size / slide).map_while(move |k| {
        let start = last.checked_sub(k.checked_mul(slide)?)?;
        Some((start, start.saturating_add(size)))
    })
}

/// One key's aggregate in one window, and the epoch of its last change (what a delta
/// against the last snapshot carries: see [`Changes`]).
#[derive(Clone, Copy, Debug, PartialEq)]
struct Slot {
    acc: Acc,
    epoch: u64,
}

/// Windows keyed by `(end, start)` (in emission order), then by record key in hash
/// maps, one per key group (`keys.rs`): records look their key up without
/// allocating, with two hashes (the key group's, the map's) and one compare instead
/// of a tree's compare per level (the windows were bound by `memcmp` with a tree:
/// BENCHMARKS.md, issue 21). Keys are sorted when a window is emitted, so the
/// output, and the `seq` each result gets, do not depend on the map's order (replay
/// after a recovery must give every result the same `seq`). foldhash is seeded per
/// process: a tenant who chose colliding keys would slow only its own window.
type Windows = BTreeMap<(i64, i64), Keys>;

/// What changed since the last snapshot, so a checkpoint can store only that
/// (`incremental.rs`) and an upgrade's hand-off can send only that (`delta.rs`).
#[derive(Clone, Debug, Default)]
enum Changes {
    /// No full snapshot yet, or too much changed to be worth tracking: no delta.
    #[default]
    Untracked,
    /// The `(end, start, key)` of every slot changed since the snapshot (whole or
    /// incremental) taken at the first of `marks`, in order of change: each slot once
    /// per snapshot after which it changed (it is listed when its epoch first moves).
    /// `marks` are the snapshots since, oldest first, each with where in `dirty` the
    /// changes after it begin. `shipped`: an upgrade's round shipped and unlisted some,
    /// so the list no longer holds every change (the next checkpoint's snapshot is
    /// whole).
    Since {
        marks: Vec<(u64, usize)>,
        dirty: Vec<(i64, i64, Key)>,
        shipped: bool,
    },
}

/// A keyed tumbling event-time window PE.
#[derive(Clone, Debug)]
pub struct Window {
    kind: WindowKind,
    size: i64,
    /// How far apart window starts are; `size` is a multiple of it.
    slide: i64,
    out_source: u32,
    inputs: Vec<Progress>,
    windows: Windows,
    /// The PE watermark at which windows were last closed: windows ending at or before
    /// it are gone, so records for them are late.
    closed_upto: Option<i64>,
    /// Per key group, a lateness bound handed over with that group's state (by a
    /// predecessor that had closed further than this PE's own bound; see `restore`).
    floors: BTreeMap<u32, i64>,
    /// Records emitted so far: the `seq` of the next output.
    emitted: u64,
    /// Advances at every snapshot; a slot whose epoch is older has not changed since.
    epoch: u64,
    changes: Changes,
    /// What the snapshots since the last whole one wrote (see `incremental.rs`).
    chain: incremental::Chain,
    /// An increment being encoded after its barrier (`encoding.rs`).
    encoding: Option<Box<encoding::Encoding>>,
    /// Increments encoded after their barrier, not taken yet.
    finished: Vec<Finished>,
    /// Which increments are encoded after their barrier, and how (`encoding.rs`).
    defer: encoding::Defer,
    /// Nothing processed or restored yet: the first restore adopts the snapshot's
    /// progress instead of merging with this PE's (empty) own.
    fresh: bool,
    late: u64,
    skipped: u64,
}

impl Window {
    /// A window of `size_ms` (at least 1) over `inputs` inputs (at least 1), emitting as
    /// source ordinal `out_source`.
    pub fn new(kind: WindowKind, size_ms: u64, inputs: usize, out_source: u32) -> Self {
        let size = i64::try_from(size_ms.max(1)).unwrap_or(i64::MAX);
        Self {
            kind,
            size,
            slide: size,
            out_source,
            inputs: vec![Progress::Unseen; inputs.max(1)],
            windows: BTreeMap::new(),
            closed_upto: None,
            floors: BTreeMap::new(),
            emitted: 0,
            epoch: 0,
            changes: Changes::Untracked,
            chain: incremental::Chain::default(),
            encoding: None,
            finished: Vec::new(),
            defer: encoding::Defer::default(),
            fresh: true,
            late: 0,
            skipped: 0,
        }
    }

    /// A hopping window: windows of `size_ms` starting every `slide_ms`. A slide of 0,
    /// or one that does not divide the size, falls back to a tumbling window (specs are
    /// validated to exclude both).
    pub fn hopping(
        kind: WindowKind,
        size_ms: u64,
        slide_ms: u64,
        inputs: usize,
        out_source: u32,
    ) -> Self {
        let mut w = Self::new(kind, size_ms, inputs, out_source);
        let slide = i64::try_from(slide_ms).unwrap_or(0);
        if slide > 0 && w.size % slide == 0 {
            w.slide = slide;
        }
        w
    }

    /// Adds a batch that arrived on `input` and returns the windows it closed. Records
    /// on an input index out of range are aggregated but cannot move the watermark.
    pub fn apply(&mut self, input: usize, batch: &Batch) -> Batch {
        self.take(input, batch);
        self.close()
    }

    /// [`Window::apply`] without the closing: adds the batch and moves `input`'s
    /// progress; [`Window::close`] then emits what that closed.
    pub fn take(&mut self, input: usize, batch: &Batch) {
        self.fresh = false;
        let mut max_t = None;
        for r in batch.iter() {
            max_t = max_t.max(Some(r.event_time_ms));
            self.add(&r);
        }
        match (self.inputs.get_mut(input), max_t) {
            (Some(p), Some(t)) => *p = (*p).max(Progress::At(t)),
            (None, _) => tracing::warn!(
                input,
                inputs = self.inputs.len(),
                "window: batch on an unknown input"
            ),
            (Some(_), None) => {}
        }
    }

    /// Marks `input` as ended (its watermark becomes +infinity) and returns the windows
    /// that closes.
    pub fn end_input(&mut self, input: usize) -> Batch {
        self.end(input);
        self.close()
    }

    /// [`Window::end_input`] without the closing.
    pub fn end(&mut self, input: usize) {
        self.fresh = false;
        match self.inputs.get_mut(input) {
            Some(p) => *p = Progress::Ended,
            None => tracing::warn!(
                input,
                inputs = self.inputs.len(),
                "window: end of an unknown input"
            ),
        }
    }

    /// Emits every open window (end of stream). Later records for windows ending at or
    /// before the last one emitted are late.
    pub fn flush(&mut self) -> Batch {
        self.settle();
        self.fresh = false;
        let all = std::mem::take(&mut self.windows);
        if let Some(&(end, _)) = all.keys().next_back() {
            self.closed_upto = self.closed_upto.max(Some(end));
        }
        self.emit(all)
    }

    /// A new input joins: it holds the watermark back until it shows progress.
    pub fn add_input(&mut self) {
        self.inputs.push(Progress::Unseen);
    }

    /// After merging predecessors' snapshots (an upgrade's hand-off): keeps only the
    /// windows of `groups`, and resets every input's progress to the least any input
    /// had made, because this PE's inputs are not its predecessors' (a watermark that
    /// is too low only delays closing; one too high would close windows early).
    pub fn take_over(&mut self, groups: weir_common::keygroup::KeyGroupRange) {
        self.settle();
        for keys in self.windows.values_mut() {
            keys.keep_groups(groups);
        }
        self.windows.retain(|_, keys| !keys.is_empty());
        self.take_over_progress(groups);
    }

    /// [`Window::take_over`] for a window whose every slot came in through a read that
    /// kept only `groups` (a pre-copy brought up to the barrier by deltas): the
    /// lateness bounds and progress only. Checking a million keys' groups again costs
    /// 100-200 ms while the stream waits for this PE.
    pub fn take_over_progress(&mut self, groups: weir_common::keygroup::KeyGroupRange) {
        self.floors.retain(|g, _| groups.contains(*g));
        let least = self.inputs.iter().min().copied().unwrap_or_default();
        for p in &mut self.inputs {
            *p = least;
        }
    }

    /// Records dropped because their window had already closed.
    pub fn late(&self) -> u64 {
        self.late
    }

    /// Records of a `Sum` window whose field was missing or not a number.
    pub fn skipped(&self) -> u64 {
        self.skipped
    }

    /// The PE watermark: `None` while some input has shown nothing, `i64::MAX` once
    /// every input ended.
    pub fn watermark(&self) -> Option<i64> {
        match self.inputs.iter().min().copied().unwrap_or(Progress::Ended) {
            Progress::Unseen => None,
            Progress::At(t) => Some(t),
            Progress::Ended => Some(i64::MAX),
        }
    }

    /// Open (key, window) pairs.
    pub fn open_windows(&self) -> usize {
        self.windows.values().map(Keys::len).sum()
    }

    /// The bounds of the latest window holding time `t` (the only one, when tumbling).
    fn bounds(&self, t: i64) -> (i64, i64) {
        latest(t, self.size, self.slide)
    }

    fn is_late(&self, end: i64, key: &[u8]) -> bool {
        if self.closed_upto.is_some_and(|c| end <= c) {
            return true;
        }
        !self.floors.is_empty() && self.floors.get(&key_group(key)).is_some_and(|f| end <= *f)
    }

    fn add(&mut self, r: &RecordRef<'_>) {
        let (size, slide) = (self.size, self.slide);
        // The latest window closes last: if it is late, all of them are.
        let (_, last_end) = latest(r.event_time_ms, size, slide);
        if self.is_late(last_end, r.key) {
            self.late += 1;
            return;
        }
        let acc = match &self.kind {
            WindowKind::Count => Acc::Count(1),
            WindowKind::Sum { field } => match number(lookup(r, field)) {
                Some(acc) => acc,
                None => {
                    // Nothing to add: the record leaves no trace, not even an empty window.
                    self.skipped += 1;
                    return;
                }
            },
        };
        let mut late = false;
        for (start, end) in every(r.event_time_ms, size, slide) {
            if self.is_late(end, r.key) {
                late = true;
                continue;
            }
            let epoch = self.epoch;
            let keys = self.windows.entry((end, start)).or_default();
            let first = match keys.get_mut(r.key) {
                Some(slot) if slot.epoch == epoch => {
                    slot.acc.merge(&acc);
                    false
                }
                Some(slot) => {
                    if let Some(job) = self.encoding.as_mut() {
                        job.keep((end, start), r.key, slot.acc, slot.epoch);
                    }
                    slot.acc.merge(&acc);
                    slot.epoch = epoch;
                    true
                }
                None => {
                    keys.insert(Key::from(r.key), Slot { acc, epoch });
                    true
                }
            };
            if first {
                self.changed(end, start, r.key);
            }
        }
        self.late += u64::from(late);
    }

    /// Slots [`Window::close`] would emit now: those of the windows ending at or
    /// before the PE watermark.
    pub fn closing(&self) -> usize {
        match self.watermark() {
            None => 0,
            Some(i64::MAX) => self.open_windows(),
            Some(wm) => self
                .windows
                .range(..(wm + 1, i64::MIN))
                .map(|(_, k)| k.len())
                .sum(),
        }
    }

    /// Emits and drops every window ending at or before the PE watermark.
    pub fn close(&mut self) -> Batch {
        let Some(wm) = self.watermark() else {
            return BatchBuilder::with_capacity(4).finish();
        };
        self.closed_upto = self.closed_upto.max(Some(wm));
        let closed = if wm == i64::MAX {
            std::mem::take(&mut self.windows)
        } else {
            let open = self.windows.split_off(&(wm + 1, i64::MIN));
            std::mem::replace(&mut self.windows, open)
        };
        if let Some(job) = self.encoding.as_mut() {
            for (bounds, keys) in &closed {
                job.keep_closed(*bounds, keys);
            }
        }
        self.emit(closed)
    }

    fn emit(&mut self, closed: Windows) -> Batch {
        let name = match self.kind {
            WindowKind::Count => "count",
            WindowKind::Sum { .. } => "sum",
        };
        let mut b = BatchBuilder::with_capacity(closed.values().map(|k| k.len() * 96).sum());
        for ((end, start), keys) in closed {
            // Sized first: collected from the key groups' maps, the vector grew by
            // copying itself (427 MB at once for a window of 9 M keys).
            let mut sorted: Vec<(Key, Slot)> = Vec::with_capacity(keys.len());
            sorted.extend(keys);
            let mut keys = sorted;
            keys.sort_unstable_by(|a, b| a.0.cmp(&b.0));
            for (key, Slot { acc, .. }) in keys {
                let fields = [
                    (
                        "key",
                        Value::Str(String::from_utf8_lossy(&key).into_owned()),
                    ),
                    ("window_start", Value::I64(start)),
                    ("window_end", Value::I64(end)),
                    (name, acc.value()),
                ];
                let fields = fields.iter().map(|(n, v)| (*n, v));
                match b.push(
                    self.out_source,
                    self.emitted,
                    end.saturating_sub(1),
                    &key,
                    fields,
                ) {
                    Ok(()) => self.emitted += 1,
                    // Keys come from batches, so they fit; the key field (u32 length) too.
                    Err(e) => {
                        tracing::error!(error = %e, "window output dropped: too large for a batch")
                    }
                }
            }
        }
        b.finish()
    }
}
