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

use super::state::Part;
use super::{Changes, Window};
use crate::ops::codec::{Dec, Enc};
use crate::ops::StateError;
use weir_common::keygroup::{key_group, KeyGroupRange};

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
        let base = match &self.changes {
            Changes::Since {
                marks,
                shipped: false,
                ..
            } if self.chain.has_room() => marks.iter().rev().find(|(m, _)| complete(*m)).copied(),
            _ => None,
        };
        match base {
            Some((base, from)) => {
                let bytes = self.increment(base, from, groups);
                self.chain.links += 1;
                self.chain.increments += bytes.len() as u64;
                self.mark_increment(id, base);
                (bytes, base)
            }
            None => {
                let bytes = self.snapshot(groups);
                self.chain = Chain {
                    whole: bytes.len() as u64,
                    ..Chain::default()
                };
                self.mark(id);
                (bytes, 0)
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
        let entries = dirty[from..].iter().filter_map(|(end, start, key)| {
            let (bounds, keys) = self.windows.get_key_value(&(*end, *start))?;
            let (key, slot) = keys.get_key_value(key)?;
            Some((bounds, key, &slot.acc))
        });
        let mut e = Enc::new(INCREMENT);
        e.u64(base);
        self.encode_after(
            e,
            groups,
            entries.filter(|(_, k, _)| groups.contains(key_group(k))),
        )
    }

    /// Reads an increment: the checkpoint it builds on, and its part.
    fn read_increment(
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
    /// [`Window::restore_groups`] takes it. Keeps only the entries of `keep` (when
    /// given). Every link is checked first: on error nothing changes.
    pub fn restore_chain(
        &mut self,
        links: &[(u64, &[u8])],
        keep: Option<KeyGroupRange>,
    ) -> Result<(), StateError> {
        let Some(((mut at, whole), increments)) = links.split_first() else {
            return Ok(());
        };
        if increments.is_empty() {
            return self.restore_groups(whole, keep);
        }
        let first = self.read(whole, keep)?;
        let groups = first.groups;
        let mut state = self.cleared();
        state.merge_part(first);
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
        if self.fresh && self.windows.is_empty() {
            // The usual case (a PE restoring its own piece, or a first predecessor):
            // the state is this window's as it stands.
            let (late, skipped) = (self.late, self.skipped);
            *self = state;
            self.late = late;
            self.skipped = skipped;
            return Ok(());
        }
        // Merging into a state that has others' already: as a whole snapshot would.
        let whole = state.snapshot(groups);
        self.restore_groups(&whole, None)
    }
}
