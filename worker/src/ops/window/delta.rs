//! Deltas of window state: what changed since the last snapshot, so an upgrade's
//! successor that pre-copied that snapshot while the old PE kept running takes only
//! the rest at the switch barrier (docs/upgrade-protocol.md, "Pre-copy").
//!
//! Tracking: every snapshot (whole or incremental) starts an epoch ([`Window::mark`]);
//! the first change of a slot in an epoch lists it (its epoch is then the current
//! one), so the list from a snapshot's mark on holds every slot changed since that
//! snapshot. A delta is the snapshot layout (header whole) with only the slots listed
//! since the last snapshot that still exist. Periodic checkpoints store such deltas
//! too, over an earlier snapshot (`incremental.rs`).
//!
//! Rounds ([`Window::round`]): while it waits for the switch, an old PE ships its
//! listed slots a bounded number at a time, with their current values, and unlists them
//! (their epoch becomes [`UNLISTED`], so their next change lists them again). A
//! successor applies the rounds in order over its pre-copy ([`Window::apply_round`]),
//! so at the barrier only the slots changed since the last round remain.
//!
//! Why applying a delta gives exactly the state at the barrier. Let `B` be the state
//! at the last snapshot and `K` the state at the barrier, of the same PE:
//! - a slot of `B` that no record touched since is unchanged in `K`, unless its window
//!   closed: closing drops every window ending at or before the watermark and raises
//!   `closed_upto` to it, and no slot ever exists for a window ending at or before
//!   `closed_upto` (a record for one is late), so the slots of `B` gone from `K` are
//!   exactly those ending at or before `K`'s `closed_upto`;
//! - every slot created or changed since `B` is listed, and the delta carries its value
//!   at `K` (a listed slot whose window closed since is gone from `K`, and from the
//!   delta).
//!
//! So `K` = (`B` without windows ending at or before `K.closed_upto`) overwritten by the
//! delta's slots, with the delta's header. Several predecessors merge as full
//! snapshots do: their parts carry disjoint key groups (a keyed window snapshots its
//! own groups), so each part's closing and overwriting touch only its own keys, and
//! the headers merge by the rule of [`Window::restore`]. The property test in
//! `tests.rs` checks pre-copy + delta against restoring the barrier's full snapshots.

use super::{Changes, Window};
use crate::ops::StateError;
use weir_common::keygroup::{key_group, KeyGroupRange};

/// At most this many changed slots are listed beyond the number of open slots: past
/// that, a delta would be as large as the state, and tracking stops (no delta).
const SLACK: usize = 1 << 16;

/// The epoch of a slot shipped in a round and not changed since: never a current
/// epoch (epochs start at 1 with the first snapshot).
pub(super) const UNLISTED: u64 = 0;

impl Window {
    /// A whole snapshot was taken at checkpoint `id`: changes are tracked from here.
    pub fn mark(&mut self, id: u64) {
        self.settle();
        self.epoch += 1;
        self.changes = Changes::Since {
            marks: vec![(id, 0)],
            dirty: Vec::new(),
            shipped: false,
        };
    }

    /// An increment was taken at checkpoint `id` over the snapshot at `base` (one of
    /// the marks): changes are tracked from here too, and those before `base` are no
    /// longer needed (later increments build on `base` or a later snapshot).
    pub(super) fn mark_increment(&mut self, id: u64, base: u64) {
        self.epoch += 1;
        let Changes::Since { marks, dirty, .. } = &mut self.changes else {
            return;
        };
        if let Some(i) = marks.iter().position(|(m, _)| *m == base) {
            let from = marks[i].1;
            marks.drain(..i);
            dirty.drain(..from);
            for (_, start) in marks.iter_mut() {
                *start -= from;
            }
        }
        marks.push((id, dirty.len()));
    }

    /// Where in the list the changes since the last snapshot begin.
    fn last_start(marks: &[(u64, usize)]) -> usize {
        marks.last().map_or(0, |(_, start)| *start)
    }

    /// The same window with no state (and no tracking).
    pub fn cleared(&self) -> Window {
        let mut w = Window::new(
            self.kind.clone(),
            self.size.unsigned_abs(),
            self.inputs.len(),
            self.out_source,
        );
        w.slide = self.slide;
        w.defer = self.defer;
        w
    }

    /// Stops tracking until the next whole snapshot: no delta until then.
    pub fn forget_changes(&mut self) {
        self.changes = Changes::Untracked;
    }

    /// Lists a slot whose epoch just moved.
    pub(super) fn changed(&mut self, end: i64, start: i64, key: &[u8]) {
        let Changes::Since { dirty, .. } = &mut self.changes else {
            return;
        };
        dirty.push((end, start, super::Key::from(key)));
        let listed = dirty.len();
        // Checked now and then: counting open slots walks the windows, not the keys.
        if listed % SLACK == 0 {
            let bound = self.open_windows() + SLACK;
            if listed > bound {
                self.outgrown(bound);
            }
        }
    }

    /// The list outgrew `bound` (the open slots and the slack). A slot changed in
    /// several epochs is listed once per epoch, and the list keeps the epochs since the
    /// last snapshot known complete (an increment builds on it): with most of a small
    /// state changing every interval, two epochs outgrow the state while each alone
    /// does not. So the earlier epochs go first: the delta since the last snapshot (an
    /// upgrade's rounds and barrier delta) stays, and the next increment builds on that
    /// snapshot once it is complete, or is whole. Only when the last epoch alone
    /// outgrows the bound does tracking stop. (Until 2026-12-06 any outgrowing list
    /// stopped it: at 10 MB of window state, with every key changed each second, half
    /// the bench's upgrades found no delta and moved the whole state at the switch.)
    fn outgrown(&mut self, bound: usize) {
        let Changes::Since { marks, dirty, .. } = &mut self.changes else {
            return;
        };
        let start = Self::last_start(marks);
        if dirty.len() - start > bound {
            tracing::debug!(
                changed = dirty.len() - start,
                "window: too much changed since the last snapshot; no delta until the next"
            );
            self.changes = Changes::Untracked;
            return;
        }
        dirty.drain(..start);
        marks.drain(..marks.len().saturating_sub(1));
        if let Some(last) = marks.last_mut() {
            last.1 = 0;
        }
    }

    /// Slots changed since the last snapshot, listed and not shipped yet.
    pub fn pending(&self) -> usize {
        match &self.changes {
            Changes::Since { marks, dirty, .. } => dirty.len() - Self::last_start(marks),
            Changes::Untracked => 0,
        }
    }

    /// The checkpoint of the last snapshot, which a delta would be against, if any.
    pub fn delta_base(&self) -> Option<u64> {
        match &self.changes {
            Changes::Since { marks, .. } => marks.last().map(|(id, _)| *id),
            Changes::Untracked => None,
        }
    }

    /// The delta of the keys of `groups` since the snapshot at
    /// [`Window::delta_base`], in the snapshot layout; `None` without one.
    pub fn delta(&self, groups: KeyGroupRange) -> Option<Vec<u8>> {
        let Changes::Since { marks, dirty, .. } = &self.changes else {
            return None;
        };
        let since = &dirty[Self::last_start(marks)..];
        Some(self.encode(groups, self.listed(since, groups)))
    }

    /// The slots of `listed` that still exist, of keys in `groups`, as a snapshot
    /// encodes them.
    pub(super) fn listed<'a>(
        &'a self,
        listed: &'a [(i64, i64, super::Key)],
        groups: KeyGroupRange,
    ) -> impl Iterator<Item = (&'a (i64, i64), &'a super::Key, &'a super::Acc)> {
        listed
            .iter()
            .filter_map(|(end, start, key)| {
                let (bounds, keys) = self.windows.get_key_value(&(*end, *start))?;
                let (key, slot) = keys.get_key_value(key.as_slice())?;
                Some((bounds, key, &slot.acc))
            })
            .filter(move |(_, k, _)| groups.contains(key_group(k)))
    }

    /// Ships up to `max` listed slots of `groups` with their current values (the
    /// snapshot layout, header whole) and unlists them; `None` without tracking or with
    /// nothing listed.
    pub fn round(&mut self, groups: KeyGroupRange, max: usize) -> Option<Vec<u8>> {
        self.settle();
        let Changes::Since {
            marks,
            dirty,
            shipped,
        } = &mut self.changes
        else {
            return None;
        };
        let pending = dirty.len() - Self::last_start(marks);
        if pending == 0 {
            return None;
        }
        *shipped = true;
        let take = pending.min(max.max(1));
        let shipped: Vec<(i64, i64, super::Key)> = dirty.split_off(dirty.len() - take);
        let mut entries = Vec::with_capacity(shipped.len());
        for (end, start, key) in shipped {
            let Some(slot) = self
                .windows
                .get_mut(&(end, start))
                .and_then(|keys| keys.get_mut(key.as_slice()))
            else {
                continue;
            };
            slot.epoch = UNLISTED;
            entries.push(((end, start), key, slot.acc));
        }
        Some(
            self.encode(
                groups,
                entries
                    .iter()
                    .filter(|(_, k, _)| groups.contains(key_group(k)))
                    .map(|(b, k, a)| (b, k, a)),
            ),
        )
    }

    /// Applies one predecessor's round (or any delta) over this window's copy of its
    /// keys: its closed windows go, its slots are overwritten. The header is left as
    /// it is: [`Window::apply_deltas`] sets it from the barrier's deltas. Checked
    /// first: on error nothing changes.
    pub fn apply_round(
        &mut self,
        delta: &[u8],
        keep: Option<KeyGroupRange>,
    ) -> Result<(), StateError> {
        let part = self.read(delta, keep)?;
        self.settle();
        self.overwrite(part);
        Ok(())
    }

    /// Forgets progress, lateness bounds and the emitted counter, as if fresh: the
    /// next parts merged set them.
    pub(super) fn reset_header(&mut self) {
        for p in &mut self.inputs {
            *p = Default::default();
        }
        self.closed_upto = None;
        self.floors.clear();
        self.emitted = 0;
        self.fresh = true;
    }

    /// Drops `part`'s closed windows of its own keys and overwrites its slots.
    pub(super) fn overwrite(&mut self, part: super::state::Part) {
        if let Some(upto) = part.closed_upto {
            let closed: Vec<(i64, i64)> = self
                .windows
                .range(..=(upto, i64::MAX))
                .map(|(b, _)| *b)
                .collect();
            for b in closed {
                let Some(keys) = self.windows.get_mut(&b) else {
                    continue;
                };
                keys.remove_groups(part.groups);
                if keys.is_empty() {
                    self.windows.remove(&b);
                }
            }
        }
        let epoch = self.epoch;
        for (end, start, key, acc) in part.entries {
            self.windows
                .entry((end, start))
                .or_default()
                .insert(key, super::Slot { acc, epoch });
        }
    }

    /// Brings a window restored from predecessors' full snapshots at one checkpoint up
    /// to their state at a later barrier, given each one's delta since that checkpoint
    /// (in any order). Keeps only the entries of `keep` (when given). Every delta is
    /// checked first: on error nothing changes.
    pub fn apply_deltas(
        &mut self,
        deltas: &[&[u8]],
        keep: Option<KeyGroupRange>,
    ) -> Result<(), StateError> {
        let parts = deltas
            .iter()
            .map(|d| self.read(d, keep))
            .collect::<Result<Vec<_>, _>>()?;
        self.settle();
        // The header is the barrier's: merged again from the deltas' headers alone.
        self.reset_header();
        for part in parts {
            self.merge_progress(&part);
            self.overwrite(part);
        }
        Ok(())
    }
}
