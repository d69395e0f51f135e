//! Window state snapshots: encoding, and merging on restore.
//!
//! Layout (little endian, after the version byte and kind byte `W`):
//! ```text
//! u8 kind (0 count | 1 sum, then u32 len + field name | 2 hopping count, then
//! i64 slide_ms) | i64 size_ms
//! u32 groups.start | u32 groups.end | u64 emitted | opt closed_upto
//! u64 n, per input: u8 progress (0 unseen | 1 at, then i64 | 2 ended)
//! u64 n, per floor: u32 group | i64 bound
//! u64 n, [index], per (key, window): i64 end | i64 start | u32 len + key | acc
//! acc: u8 0 + u64 count | u8 1 + opt i64 int + u8 all_int + f64 float
//! opt: u8 0 | u8 1 + i64
//! index (when the kind byte has INDEXED set): per group of the range, in order:
//!   u64 entries | u64 bytes; the entries then come group by group, in that order
//! ```
//!
//! Whole snapshots of [`INDEX_FROM`] bytes of entries or more are indexed by key
//! group (smaller ones are written group by group too, without the index);
//! increments, deltas and rounds (which list changed slots in the order they
//! changed) are not. Why the index: a successor of a
//! rescale keeps a share of each predecessor's keys. Without it, every successor
//! decoded every entry of every predecessor's piece (hashing each key to find its
//! group) to keep a third of them: in the 1 GB bench, three successors decoded 3 GB
//! on the 2-core box while the stream ran beside them. With it, a reader skips the
//! sections of the groups it does not keep without reading them. Writing it costs
//! nothing more: a window holds its slots by key group already (`keys.rs`), and the
//! index is filled in as the sections are written.

use super::{Acc, Progress, Slot, Window, WindowKind};
use crate::ops::codec::{Dec, Enc};
use crate::ops::StateError;
use weir_common::keygroup::{key_group, KeyGroupRange};
use weir_common::spec::KEY_GROUPS;

const KIND: u8 = b'W';
/// Set in the window kind byte: the entries are indexed by key group.
pub(super) const INDEXED: u8 = 0x10;
/// Where the window kind byte is (after the format version and the kind `W`).
pub(super) const KIND_BYTE_AT: usize = 2;
/// The fewest bytes of entries a snapshot is indexed from: the index takes 16 bytes
/// a key group (4 KiB for all 256), which would bloat a small state's snapshots (and
/// tip its checkpoints to whole ones sooner: see `incremental`) for nothing.
pub(super) const INDEX_FROM: usize = 256 << 10;
/// The fewest bytes an entry takes: bounds, key length, a count.
const ENTRY_MIN: usize = 8 + 8 + 4 + 9;
const NAME: &str = "a window";

/// A snapshot read back, checked, not yet merged.
#[derive(Debug, PartialEq)]
pub(super) struct Part {
    pub(super) groups: KeyGroupRange,
    emitted: u64,
    pub(super) closed_upto: Option<i64>,
    inputs: Vec<Progress>,
    floors: Vec<(u32, i64)>,
    pub(super) entries: Vec<(i64, i64, super::Key, Acc)>,
}

impl Part {
    /// The same part with its entries in key order: two snapshots of the same state
    /// hold their entries in the order of their maps, which may differ.
    #[cfg(test)]
    pub(super) fn sorted(mut self) -> Self {
        self.entries
            .sort_by(|a, b| (a.0, a.1, &a.2).cmp(&(b.0, b.1, &b.2)));
        self
    }
}

/// A snapshot being written: its header is, its entries follow one by one.
#[derive(Clone, Debug)]
pub(super) struct Entries {
    e: Enc,
    /// Where the entry count goes.
    count_at: usize,
    n: u64,
    /// A whole snapshot's key group index, filled in section by section.
    index: Option<Index>,
}

/// The index of a whole snapshot being written (see the module): its entries come
/// key group by key group, each group's closed by [`Entries::end_group`].
#[derive(Clone, Debug)]
struct Index {
    /// Where the index is, and the first key group it indexes.
    at: usize,
    first: u32,
    width: usize,
    /// Where the open section began: its first byte and the entries before it.
    since: (usize, u64),
}

impl Entries {
    /// Room for `n` more entries of about a short key's size, so the buffer does not
    /// double (copying all it holds) between two steps of an increment encoded after
    /// its barrier.
    pub(super) fn reserve(&mut self, n: usize) {
        self.e.0.reserve(n.saturating_mul(ENTRY_MIN + 16));
    }

    /// One entry.
    pub(super) fn push(&mut self, bounds: &(i64, i64), key: &[u8], acc: &Acc) {
        self.n += 1;
        let at = self.e.0.len();
        self.e.0.resize(at + entry_len(key, acc), 0);
        put_entry(&mut self.e.0[at..], bounds, key, acc);
    }

    /// Closes key group `g`'s section: its entries are those pushed since the last
    /// section closed (none for a snapshot without an index).
    pub(super) fn end_group(&mut self, g: u32) {
        let Some(index) = self.index.as_mut() else {
            return;
        };
        let (len, n) = (self.e.0.len(), self.n);
        let Some(i) = g.checked_sub(index.first).map(|i| i as usize) else {
            return;
        };
        if i >= index.width {
            return;
        }
        let (from, before) = index.since;
        let at = index.at + 16 * i;
        self.e.0[at..at + 8].copy_from_slice(&(n - before).to_le_bytes());
        self.e.0[at + 8..at + 16].copy_from_slice(&((len - from) as u64).to_le_bytes());
        index.since = (len, n);
    }

    /// The snapshot, its entry count filled in; a whole snapshot's index is taken out
    /// when its entries are too few to be worth it ([`INDEX_FROM`]).
    pub(super) fn finish(mut self) -> Vec<u8> {
        let at = self.count_at;
        self.e.0[at..at + 8].copy_from_slice(&self.n.to_le_bytes());
        if let Some(index) = self.index {
            let end = index.at + 16 * index.width;
            if self.e.0.len() - end < INDEX_FROM {
                self.e.0.drain(index.at..end);
                self.e.0[KIND_BYTE_AT] &= !INDEXED;
            }
        }
        self.e.0
    }
}

/// The bytes of one entry.
fn entry_len(key: &[u8], acc: &Acc) -> usize {
    8 + 8
        + 4
        + key.len()
        + match acc {
            Acc::Count(_) => 1 + 8,
            Acc::Sum { int, .. } => 1 + 1 + if int.is_some() { 8 } else { 0 } + 1 + 8,
        }
}

/// Writes one entry at the start of `out` (at least [`entry_len`] bytes); returns
/// the bytes written.
fn put_entry(out: &mut [u8], &(end, start): &(i64, i64), key: &[u8], acc: &Acc) -> usize {
    let mut at = 0;
    let mut put = |b: &[u8]| {
        out[at..at + b.len()].copy_from_slice(b);
        at += b.len();
    };
    put(&end.to_le_bytes());
    put(&start.to_le_bytes());
    // Keys come from batches (u16 lengths), so u32 always holds them.
    put(&u32::try_from(key.len()).unwrap_or(u32::MAX).to_le_bytes());
    put(key);
    match acc {
        Acc::Count(n) => {
            put(&[0]);
            put(&n.to_le_bytes());
        }
        Acc::Sum {
            int,
            float,
            all_int,
        } => {
            put(&[1]);
            match int {
                None => put(&[0]),
                Some(v) => {
                    put(&[1]);
                    put(&v.to_le_bytes());
                }
            }
            put(&[u8::from(*all_int)]);
            put(&float.to_bits().to_le_bytes());
        }
    }
    at
}

impl Window {
    /// Whether snapshots `a` and `b` hold the same state (entries in any order).
    #[cfg(test)]
    pub(super) fn same_state(&self, a: &[u8], b: &[u8]) -> bool {
        match (self.read(a, None), self.read(b, None)) {
            (Ok(a), Ok(b)) => a.sorted() == b.sorted(),
            _ => false,
        }
    }

    /// The state of the keys whose key group is in `groups`, with the per-input
    /// progress, the lateness bounds and the emitted-records counter (which every part
    /// carries whole: see [`Window::restore`]). Written key group by key group, and
    /// indexed by key group when large (see the module).
    pub fn snapshot(&self, groups: KeyGroupRange) -> Vec<u8> {
        let mut out = self.open_whole(groups);
        for g in groups.start..groups.end {
            for (bounds, keys) in &self.windows {
                for (key, slot) in keys.group(g) {
                    out.push(bounds, key, &slot.acc);
                }
            }
            out.end_group(g);
        }
        out.finish()
    }

    /// A whole snapshot of `groups` up to its entries, which follow key group by key
    /// group, each group closed by [`Entries::end_group`]: the index is filled in as
    /// the sections are written (see the module).
    pub(super) fn open_whole(&self, groups: KeyGroupRange) -> Entries {
        let mut e = Enc::new(KIND);
        self.head(&mut e, groups, INDEXED);
        let count_at = e.0.len();
        e.u64(0);
        let at = e.0.len();
        let width = groups.end.saturating_sub(groups.start) as usize;
        e.0.resize(at + 16 * width, 0);
        let since = (e.0.len(), 0);
        Entries {
            e,
            count_at,
            n: 0,
            index: Some(Index {
                at,
                first: groups.start,
                width,
                since,
            }),
        }
    }

    /// The snapshot layout with the given entries (all of them, or a delta's).
    pub(super) fn encode<'a>(
        &self,
        groups: KeyGroupRange,
        entries: impl Iterator<Item = (&'a (i64, i64), &'a super::Key, &'a Acc)>,
    ) -> Vec<u8> {
        self.encode_after(Enc::new(KIND), groups, entries)
    }

    /// [`Window::encode`] after a header of the caller's (an increment's).
    pub(super) fn encode_after<'a>(
        &self,
        e: Enc,
        groups: KeyGroupRange,
        entries: impl Iterator<Item = (&'a (i64, i64), &'a super::Key, &'a Acc)>,
    ) -> Vec<u8> {
        let mut open = self.open_entries(e, groups);
        for (bounds, key, acc) in entries {
            open.push(bounds, key, acc);
        }
        open.finish()
    }

    /// The snapshot layout up to its entries, after a header of the caller's: the
    /// entries follow ([`Entries::push`]).
    pub(super) fn open_entries(&self, mut e: Enc, groups: KeyGroupRange) -> Entries {
        self.head(&mut e, groups, 0);
        // The count goes first: reserve it, fill it in at the end.
        let count_at = e.0.len();
        e.u64(0);
        Entries {
            e,
            count_at,
            n: 0,
            index: None,
        }
    }

    /// The layout up to the entry count; `flags` go in the kind byte ([`INDEXED`]).
    fn head(&self, e: &mut Enc, groups: KeyGroupRange, flags: u8) {
        match &self.kind {
            // A tumbling count is written as before hopping windows existed, and a
            // hopping window whose slide is its size is one.
            WindowKind::Count if self.slide == self.size => e.u8(flags),
            WindowKind::Count => {
                e.u8(2 | flags);
                e.i64(self.slide);
            }
            WindowKind::Sum { field } => {
                e.u8(1 | flags);
                e.bytes(field.as_bytes());
            }
        }
        e.i64(self.size);
        e.u32(groups.start);
        e.u32(groups.end);
        e.u64(self.emitted);
        e.opt_i64(self.closed_upto);
        e.u64(self.inputs.len() as u64);
        for p in &self.inputs {
            match p {
                Progress::Unseen => e.u8(0),
                Progress::At(t) => {
                    e.u8(1);
                    e.i64(*t);
                }
                Progress::Ended => e.u8(2),
            }
        }
        let floors: Vec<_> = self
            .floors
            .iter()
            .filter(|(g, _)| groups.contains(**g))
            .collect();
        e.u64(floors.len() as u64);
        for (g, f) in floors {
            e.u32(*g);
            e.i64(*f);
        }
    }

    /// Merges a snapshot (possibly one of several parts from several predecessors) into
    /// this window. The whole snapshot is checked first: on error nothing changes.
    ///
    /// Merge rule:
    /// - aggregates of the same key and window add up (counts, sums);
    /// - per-input progress: the first restore into a fresh window adopts the part's;
    ///   later ones take the minimum per input (unseen < any time < ended), so no window
    ///   any part still holds open is considered closed;
    /// - lateness: the global bound takes the minimum likewise, but each part's own
    ///   bound is kept for its key groups (and, when this window already ran, its own
    ///   bound for every other group), so a record for a window some predecessor already
    ///   emitted stays late and is never emitted twice;
    /// - the emitted-records counter takes the maximum (output seqs stay unique when
    ///   the parts come from one predecessor; after a merge of several they continue
    ///   from the largest).
    ///
    /// Inputs the part lacks keep this window's progress (unseen when fresh); inputs
    /// only the part has are ignored. The late and skipped counters are per PE and not
    /// part of snapshots.
    pub fn restore(&mut self, bytes: &[u8]) -> Result<(), StateError> {
        self.restore_groups(bytes, None)
    }

    /// [`Window::restore`], keeping only the entries of `keep` (when given): a
    /// successor that takes part of a predecessor's keys never holds the rest.
    pub fn restore_groups(
        &mut self,
        bytes: &[u8],
        keep: Option<KeyGroupRange>,
    ) -> Result<(), StateError> {
        let part = self.read(bytes, keep)?;
        self.settle();
        self.merge_part(part);
        Ok(())
    }

    /// The merge of [`Window::restore`], of a part read and checked.
    pub(super) fn merge_part(&mut self, part: Part) {
        self.merge_progress(&part);
        let epoch = self.epoch;
        for (end, start, key, acc) in part.entries {
            let keys = self.windows.entry((end, start)).or_default();
            match keys.get_mut(&key) {
                Some(s) => s.acc.merge(&acc),
                None => {
                    keys.insert(key, Slot { acc, epoch });
                }
            }
        }
    }

    /// The header half of the merge rule of [`Window::restore`]: progress, lateness
    /// bounds and the emitted-records counter.
    pub(super) fn merge_progress(&mut self, part: &Part) {
        let fresh = std::mem::replace(&mut self.fresh, false);
        if fresh {
            for (i, p) in self.inputs.iter_mut().enumerate() {
                *p = part.inputs.get(i).copied().unwrap_or_default();
            }
            self.closed_upto = part.closed_upto;
        } else {
            for (mine, theirs) in self.inputs.iter_mut().zip(&part.inputs) {
                *mine = (*mine).min(*theirs);
            }
            if part.closed_upto < self.closed_upto {
                // The global bound goes down: keep this window's own for the groups the
                // part does not carry (its own keys, or nobody's).
                if let Some(own) = self.closed_upto {
                    for g in (0..KEY_GROUPS).filter(|g| !part.groups.contains(*g)) {
                        let f = self.floors.entry(g).or_insert(own);
                        *f = (*f).max(own);
                    }
                }
                self.closed_upto = part.closed_upto;
            }
        }
        let part_floors = part
            .closed_upto
            .map(|c| (part.groups.start..part.groups.end).map(move |g| (g, c)));
        for (g, f) in part
            .floors
            .iter()
            .copied()
            .chain(part_floors.into_iter().flatten())
        {
            let slot = self.floors.entry(g).or_insert(f);
            *slot = (*slot).max(f);
        }
        self.emitted = self.emitted.max(part.emitted);
    }

    /// Reads and checks a snapshot; entries outside `keep` (when given) are checked
    /// and dropped.
    pub(super) fn read(
        &self,
        bytes: &[u8],
        keep: Option<KeyGroupRange>,
    ) -> Result<Part, StateError> {
        self.read_after(Dec::new(bytes, KIND, NAME)?, keep)
    }

    /// [`Window::read`] after a header of the caller's (an increment's).
    pub(super) fn read_after(
        &self,
        mut d: Dec<'_>,
        keep: Option<KeyGroupRange>,
    ) -> Result<Part, StateError> {
        let at = d.at();
        let byte = d.u8()?;
        let indexed = byte & INDEXED != 0;
        let (kind, slide) = match byte & !INDEXED {
            0 => (WindowKind::Count, None),
            2 => (WindowKind::Count, Some(d.i64()?)),
            1 => {
                let at = d.at();
                let field = std::str::from_utf8(d.bytes()?).map_err(|_| StateError::Invalid {
                    what: "field name not UTF-8",
                    at,
                })?;
                let kind = WindowKind::Sum {
                    field: field.to_string(),
                };
                (kind, None)
            }
            _ => {
                return Err(StateError::Invalid {
                    what: "unknown window kind",
                    at,
                })
            }
        };
        if kind != self.kind {
            return Err(StateError::Mismatch(format!(
                "snapshot computes {kind:?}, this window {:?}",
                self.kind
            )));
        }
        let size = d.i64()?;
        if size != self.size {
            return Err(StateError::Mismatch(format!(
                "snapshot window size {size} ms, this window {} ms",
                self.size
            )));
        }
        let slide = slide.unwrap_or(size);
        if slide != self.slide {
            return Err(StateError::Mismatch(format!(
                "snapshot window slide {slide} ms, this window {} ms",
                self.slide
            )));
        }
        let at = d.at();
        let groups = KeyGroupRange {
            start: d.u32()?,
            end: d.u32()?,
        };
        if groups.start > groups.end || groups.end > KEY_GROUPS {
            return Err(StateError::Invalid {
                what: "key group range",
                at,
            });
        }
        let emitted = d.u64()?;
        let closed_upto = d.opt_i64()?;
        let n = d.count(1)?;
        let mut inputs = Vec::with_capacity(n);
        for _ in 0..n {
            let at = d.at();
            inputs.push(match d.u8()? {
                0 => Progress::Unseen,
                1 => Progress::At(d.i64()?),
                2 => Progress::Ended,
                _ => {
                    return Err(StateError::Invalid {
                        what: "unknown input progress",
                        at,
                    })
                }
            });
        }
        let n = d.count(12)?;
        let mut floors = Vec::with_capacity(n);
        for _ in 0..n {
            let at = d.at();
            let (g, f) = (d.u32()?, d.i64()?);
            if !groups.contains(g) {
                return Err(StateError::Invalid {
                    what: "lateness bound outside the key groups",
                    at,
                });
            }
            floors.push((g, f));
        }
        let n = d.count(ENTRY_MIN)?;
        let mut entries = Vec::new();
        if indexed {
            // The counts must add up to the total (itself checked against the bytes
            // left), a section read must be as long as indexed, and one skipped must
            // lie within the bytes left (`skip`).
            let at = d.at();
            let mut index = Vec::with_capacity((groups.end - groups.start) as usize);
            let (mut total, mut kept) = (0u64, 0u64);
            for g in groups.start..groups.end {
                let (count, bytes) = (d.u64()?, d.u64()?);
                total = total.saturating_add(count);
                if keep.is_none_or(|k| k.contains(g)) {
                    kept = kept.saturating_add(count);
                }
                index.push((g, count, bytes));
            }
            if total != n as u64 {
                return Err(StateError::Invalid {
                    what: "key group index not adding up to the entry count",
                    at,
                });
            }
            entries.reserve_exact(kept as usize);
            for (g, count, bytes) in index {
                let at = d.at();
                if !keep.is_none_or(|k| k.contains(g)) {
                    d.skip(bytes)?;
                    continue;
                }
                for _ in 0..count {
                    let at = d.at();
                    let (end, start, key, acc) = self.read_entry(&mut d)?;
                    if key_group(key) != g {
                        return Err(StateError::Invalid {
                            what: "key outside its key group's section",
                            at,
                        });
                    }
                    entries.push((end, start, super::Key::from(key), acc));
                }
                if (d.at() - at) as u64 != bytes {
                    return Err(StateError::Invalid {
                        what: "key group section of another length than indexed",
                        at,
                    });
                }
            }
        } else {
            // Kept entries are a share of the part's when filtered: grow as they come.
            entries.reserve(if keep.is_some() { n / 4 } else { n });
            for _ in 0..n {
                let at = d.at();
                let (end, start, key, acc) = self.read_entry(&mut d)?;
                let g = key_group(key);
                if !groups.contains(g) {
                    return Err(StateError::Invalid {
                        what: "key outside the key groups",
                        at,
                    });
                }
                if keep.is_none_or(|k| k.contains(g)) {
                    entries.push((end, start, super::Key::from(key), acc));
                }
            }
        }
        d.finish()?;
        Ok(Part {
            groups,
            emitted,
            closed_upto,
            inputs,
            floors,
            entries,
        })
    }

    /// One entry, checked on its own: window bounds aligned, key length, aggregate of
    /// this window's kind. The key is borrowed (a filtered read allocates only the
    /// keys it keeps).
    fn read_entry<'a>(&self, d: &mut Dec<'a>) -> Result<(i64, i64, &'a [u8], Acc), StateError> {
        let at = d.at();
        let (end, start) = (d.i64()?, d.i64()?);
        let key = d.bytes()?;
        if self.bounds(start) != (start, end) {
            return Err(StateError::Invalid {
                what: "window bounds not aligned to the slide and size",
                at,
            });
        }
        if key.len() > usize::from(u16::MAX) {
            return Err(StateError::Invalid {
                what: "key longer than a record key may be",
                at,
            });
        }
        let at = d.at();
        let acc = match (d.u8()?, &self.kind) {
            (0, WindowKind::Count) => Acc::Count(d.u64()?),
            (1, WindowKind::Sum { .. }) => Acc::Sum {
                int: d.opt_i64()?,
                all_int: d.bool()?,
                float: d.f64()?,
            },
            _ => {
                return Err(StateError::Invalid {
                    what: "aggregate of another kind",
                    at,
                })
            }
        };
        Ok((end, start, key, acc))
    }
}
