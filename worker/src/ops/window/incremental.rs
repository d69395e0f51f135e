//! Incremental checkpoints of window state: a periodic checkpoint stores only the slots
//! that changed since the window's previous snapshot (an *increment*), not the whole
//! state, so a window of 1 GB does not hold its stream for the second it takes to
//! encode 500 MB at every checkpoint (docs/ARCHITECTURE.md, "Incremental snapshots").
//!
//! An increment is a delta (`delta.rs`: the snapshot layout, header whole, with only the
//! listed slots that still exist) under its own kind byte and with the checkpoint it
//! builds on, so it can never be restored as a whole snapshot by mistake:
//! ```text
//! u8 version | u8 'w' | u64 base checkpoint | the window layout after its kind byte
//! ```
//! A restore loads a *chain*: the last whole snapshot, then every increment up to the
//! checkpoint restored, in order; each increment is checked to build on the link before
//! it. Applying them in order gives the state at the last one by the argument of
//! `delta.rs`, link by link (each increment lists every slot changed since the link
//! before it, and its header is the state's at its checkpoint).
//!
//! When a snapshot may be incremental ([`Window::checkpoint`]): it builds on the
//! newest of the window's earlier snapshots whose checkpoint the PE knows complete
//! (usually the one before; the one before that when the last completion has not
//! reached the worker yet, which happens when checkpoints take about their interval),
//! so every link of a chain is a complete checkpoint's piece and a checkpoint that was
//! abandoned is never built on; only when no upgrade round unlisted changes since; and
//! while the chain stays short: at most [`MAX_LINKS`] increments, adding up to less than
//! the whole snapshot they build on, so a restore loads at most about twice the state.
//! Otherwise the snapshot is whole and starts a new chain.
//!
//! Seeds ([`Window::seed`]): an upgrade's successor starts with exactly its
//! predecessors' state at the switch checkpoint `K`, whose pieces of `K` are whole
//! snapshots (a drained window's always is). It marks `K` as its base, so its first
//! increments build on those pieces, its *seed*, instead of it writing its whole state
//! at its first checkpoint. A seeded chain restores as the successor took over: the
//! seed merged and cut to the key groups of the increments (their header says which),
//! then the increments, the first checked to build on `K`. The increments' headers set
//! progress and lateness bounds, so those of the seed (which `take_over` adjusted at
//! the switch) do not matter; its slots are the successor's at `K` (the pre-copy
//! argument of `delta.rs`), which is all an increment builds on.

use super::state::Part;
use super::{Changes, Window};
use crate::ops::codec::{Dec, Enc};
use crate::ops::StateError;
use weir_common::keygroup::KeyGroupRange;

/// The kind byte of an increment (a whole window snapshot's is `W`).
const INCREMENT: u8 = b'w';
const NAME: &str = "a window increment";

/// At most this many increments follow a whole snapshot.
pub const MAX_LINKS: u32 = 64;

/// What the window's snapshots wrote since its last whole one.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Chain {
    /// Bytes of the whole snapshot (0: none yet).
    whole: u64,
    /// Increments since.
    links: u32,
    /// Their bytes.
    increments: u64,
}

impl Chain {
    /// Whether one more increment keeps the chain within its bounds.
    fn has_room(&self) -> bool {
        self.whole > 0 && self.links < MAX_LINKS && self.increments < self.whole
    }

    /// A chain starting at a whole snapshot of `bytes`.
    pub(super) fn whole(bytes: u64) -> Self {
        Self {
            whole: bytes,
            ..Self::default()
        }
    }

    /// An increment of `bytes` finished after its barrier (`encoding.rs`).
    pub(super) fn add_increment(&mut self, bytes: u64) {
        self.increments += bytes;
    }
}

impl Window {
    /// The snapshot of `groups` at checkpoint `id`, and the checkpoint it builds on (0:
    /// whole). `complete` says which checkpoints of the app this PE knows complete: an
    /// increment builds on the newest of the window's snapshots taken at one of them.
    /// Changes are tracked from here.
    pub fn checkpoint(
        &mut self,
        id: u64,
        groups: KeyGroupRange,
        complete: impl Fn(u64) -> bool,
    ) -> (Vec<u8>, u64) {
        match self.begin_checkpoint(id, groups, complete) {
            Some(taken) => taken,
            None => {
                self.settle();
                let (_, bytes, base) = self.finished.pop().unwrap_or_default();
                (bytes, base)
            }
        }
    }

    /// [`Window::checkpoint`], except that a snapshot of many slots (an increment
    /// listing them or a whole one holding them: see `encoding.rs`) is encoded after
    /// the barrier, by [`Window::encode_step`]: `None` then, and the bytes come from
    /// [`Window::take_finished`]. A snapshot still being encoded is finished first.
    pub fn begin_checkpoint(
        &mut self,
        id: u64,
        groups: KeyGroupRange,
        complete: impl Fn(u64) -> bool,
    ) -> Option<(Vec<u8>, u64)> {
        self.settle();
        let base = match &self.changes {
            Changes::Since {
                marks,
                shipped: false,
                ..
            } if self.chain.has_room() => marks
                .iter()
                .enumerate()
                .rev()
                .find(|(_, (m, _))| complete(*m))
                .map(|(i, (m, from))| {
                    // Every mark came with one new epoch, and marks are only dropped
                    // from the front: the epoch the `i`th one started.
                    let started = self.epoch - (marks.len() - 1 - i) as u64;
                    (*m, *from, started)
                }),
            _ => None,
        };
        match base {
            Some((base, from, started)) => {
                self.chain.links += 1;
                let listed = match &self.changes {
                    Changes::Since { dirty, .. } => dirty.len() - from,
                    Changes::Untracked => 0,
                };
                if listed >= self.defer.from {
                    self.begin_encoding(id, (base, started - 1), groups, from, Enc::new(INCREMENT));
                    self.mark_increment(id, base);
                    return None;
                }
                let bytes = self.increment(base, from, groups);
                self.chain.add_increment(bytes.len() as u64);
                self.mark_increment(id, base);
                Some((bytes, base))
            }
            None if self.open_windows() >= self.defer.from => {
                // Encoded after the barrier too, key group by key group (`encoding.rs`):
                // a whole snapshot of 50 MB held its stream 300-400 ms.
                let upto = self.epoch;
                self.chain = Chain::default();
                self.mark(id);
                self.begin_whole(id, groups, upto);
                None
            }
            None => {
                let bytes = self.snapshot(groups);
                self.chain = Chain::whole(bytes.len() as u64);
                self.mark(id);
                Some((bytes, 0))
            }
        }
    }

    /// The increment of `groups` since the snapshot at `base`: the slots listed from
    /// `from` on (a slot changed after several snapshots since is listed, and written,
    /// once per snapshot; applying it twice gives the same state).
    fn increment(&self, base: u64, from: usize, groups: KeyGroupRange) -> Vec<u8> {
        let Changes::Since { dirty, .. } = &self.changes else {
            return self.snapshot(groups);
        };
        let mut e = Enc::new(INCREMENT);
        e.u64(base);
        self.encode_after(e, groups, self.listed(&dirty[from..], groups))
    }

    /// Whether increments `a` and `b` build on the same checkpoint and hold the same
    /// header and the same slots with the same values (in any order, a slot written
    /// once or more).
    #[cfg(test)]
    pub(super) fn same_increment(&self, a: &[u8], b: &[u8]) -> bool {
        let read = |bytes| {
            self.read_increment(bytes, None).map(|(base, part)| {
                let mut part = part.sorted();
                part.entries.dedup();
                (base, part)
            })
        };
        matches!((read(a), read(b)), (Ok(a), Ok(b)) if a == b)
    }

    /// Reads an increment: the checkpoint it builds on, and its part.
    pub(super) fn read_increment(
        &self,
        bytes: &[u8],
        keep: Option<KeyGroupRange>,
    ) -> Result<(u64, Part), StateError> {
        let mut d = Dec::new(bytes, INCREMENT, NAME)?;
        let base = d.u64()?;
        Ok((base, self.read_after(d, keep)?))
    }

    /// Merges one state given as a chain (see the module): `links` are `(checkpoint,
    /// snapshot)`, the whole one first; one link is a whole snapshot, as
    /// [`Window::restore_groups`] takes it. With a `seed` (an upgrade successor's
    /// increments before its first whole snapshot: see [`Window::seed`]) every link is
    /// an increment and the first builds on the seed: its predecessors' whole snapshots
    /// at the switch, `(checkpoint, snapshot)` each, merged and cut to the increments'
    /// key groups. Keeps only the entries of `keep` (when given). Every link is checked
    /// first: on error nothing changes.
    pub fn restore_chain(
        &mut self,
        seed: &[(u64, &[u8])],
        links: &[(u64, &[u8])],
        keep: Option<KeyGroupRange>,
    ) -> Result<(), StateError> {
        let (mut state, mut at, groups, increments) = if seed.is_empty() {
            let Some(((at, whole), increments)) = links.split_first() else {
                return Ok(());
            };
            if increments.is_empty() {
                return self.restore_groups(whole, keep);
            }
            let first = self.read(whole, keep)?;
            let groups = first.groups;
            let mut state = self.cleared();
            state.merge_part(first);
            (state, *at, groups, increments)
        } else {
            let (at, groups) = self.seed_of(seed, links)?;
            let cut = keep.map_or(groups, |k| k.intersect(&groups));
            let mut state = self.cleared();
            for (_, whole) in seed {
                state.restore_groups(whole, Some(cut))?;
            }
            (state, at, groups, links)
        };
        for (id, bytes) in increments {
            let (base, part) = state.read_increment(bytes, keep)?;
            if base != at {
                return Err(StateError::Mismatch(format!(
                    "the increment of checkpoint {id} builds on checkpoint {base}, not on {at}"
                )));
            }
            if part.groups != groups {
                return Err(StateError::Mismatch(format!(
                    "the increment of checkpoint {id} holds key groups {:?}, its chain {groups:?}",
                    part.groups
                )));
            }
            state.reset_header();
            state.merge_progress(&part);
            state.overwrite(part);
            at = *id;
        }
        self.settle();
        if self.fresh && self.windows.is_empty() {
            // The usual case (a PE restoring its own piece, or a first predecessor):
            // the state is this window's as it stands.
            let (late, skipped, defer) = (self.late, self.skipped, self.defer);
            let finished = std::mem::take(&mut self.finished);
            *self = state;
            self.late = late;
            self.skipped = skipped;
            self.defer = defer;
            self.finished = finished;
            return Ok(());
        }
        // Merging into a state that has others' already: as a whole snapshot would.
        let whole = state.snapshot(groups);
        self.restore_groups(&whole, None)
    }

    /// The checkpoint of a seed (its snapshots' one) and the key groups of the chain
    /// built on it (its first increment's).
    fn seed_of(
        &self,
        seed: &[(u64, &[u8])],
        links: &[(u64, &[u8])],
    ) -> Result<(u64, KeyGroupRange), StateError> {
        let at = seed[0].0;
        if let Some((other, _)) = seed.iter().find(|(id, _)| *id != at) {
            return Err(StateError::Mismatch(format!(
                "a seed of snapshots at checkpoints {at} and {other}"
            )));
        }
        let Some((id, first)) = links.first() else {
            return Err(StateError::Mismatch(format!(
                "a seed at checkpoint {at} without an increment on it"
            )));
        };
        // Read keeping no entry: the groups are in its header.
        let none = KeyGroupRange { start: 0, end: 0 };
        let (_, part) = self
            .read_increment(first, Some(none))
            .map_err(|e| match e {
                StateError::Mismatch(m) => StateError::Mismatch(format!("checkpoint {id}: {m}")),
                e => e,
            })?;
        Ok((at, part.groups))
    }

    /// Marks the state as its predecessors' at the upgrade switch `at`, whose whole
    /// snapshots are `bytes` in all: a successor that took over its state there builds
    /// its first increments on them (the *seed*) instead of writing its whole state at
    /// its first checkpoint (a second or more at 1 GB). Changes are tracked from here.
    pub fn seed(&mut self, at: u64, bytes: u64) {
        self.mark(at);
        self.chain = Chain::whole(bytes.max(1));
    }
}
