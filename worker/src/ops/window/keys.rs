//! One window's slots by record key: a hash map per key group.
//!
//! Why not one map: a hash map grows by building a table twice the size and moving
//! every entry into it, all inside the one insert that crosses its capacity. At 1 GB
//! of window state a PE's map doubled at 7.3 M keys: about a second of the PE's async
//! thread (rehashing, copying, faulting in a table of ~1 GB) in which no other PE on
//! that thread ran and its worker sent no heartbeat. In the 1 GB bench the masters
//! marked workers lost each time the two window PEs crossed that size together
//! (BENCHMARKS.md, 2026-12-06). With a map per key group (256), each grows on its own
//! at a 256th of the size.
//!
//! The shard is the key group, so what works by key group needs no hashing of every
//! key: a snapshot is written group by group (`state.rs`), and a successor keeps its
//! groups by dropping the other maps whole ([`Keys::keep_groups`]). A lookup hashes
//! the key twice (the key group's FNV-1a, then the map's foldhash).

use super::{Key, Slot};
use std::collections::HashMap;
use weir_common::keygroup::{key_group, KeyGroupRange};
use weir_common::spec::KEY_GROUPS;

/// One key group's slots.
type Shard = HashMap<Key, Slot, foldhash::fast::RandomState>;

/// A window's slots, by key group, then by key.
#[derive(Clone, Debug, Default)]
pub(super) struct Keys {
    /// Empty until the first insert, then one map per key group (empty maps allocate
    /// nothing).
    shards: Vec<Shard>,
    len: usize,
}

impl Keys {
    fn shard(&self, key: &[u8]) -> Option<&Shard> {
        self.shards.get(key_group(key) as usize)
    }

    fn shard_mut(&mut self, key: &[u8]) -> Option<&mut Shard> {
        self.shards.get_mut(key_group(key) as usize)
    }

    /// Slots held.
    pub(super) fn len(&self) -> usize {
        self.len
    }

    /// Whether no slot is held.
    pub(super) fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The slot of `key`.
    pub(super) fn get(&self, key: &[u8]) -> Option<&Slot> {
        self.shard(key)?.get(key)
    }

    /// The slot of `key`, with the key as held.
    pub(super) fn get_key_value(&self, key: &[u8]) -> Option<(&Key, &Slot)> {
        self.shard(key)?.get_key_value(key)
    }

    /// The slot of `key`, to change.
    pub(super) fn get_mut(&mut self, key: &[u8]) -> Option<&mut Slot> {
        self.shard_mut(key)?.get_mut(key)
    }

    /// Sets the slot of `key`.
    pub(super) fn insert(&mut self, key: Key, slot: Slot) {
        if self.shards.is_empty() {
            self.shards.resize_with(KEY_GROUPS as usize, Shard::default);
        }
        let g = key_group(key.as_slice()) as usize;
        if self.shards[g].insert(key, slot).is_none() {
            self.len += 1;
        }
    }

    /// Keeps only the slots of `groups`.
    pub(super) fn keep_groups(&mut self, groups: KeyGroupRange) {
        self.drop_groups(|g| !groups.contains(g));
    }

    /// Drops the slots of `groups`.
    pub(super) fn remove_groups(&mut self, groups: KeyGroupRange) {
        self.drop_groups(|g| groups.contains(g));
    }

    fn drop_groups(&mut self, drop: impl Fn(u32) -> bool) {
        for (g, shard) in self.shards.iter_mut().enumerate() {
            if drop(g as u32) && !shard.is_empty() {
                self.len -= shard.len();
                *shard = Shard::default();
            }
        }
    }

    /// Every slot, key group by key group.
    pub(super) fn iter(&self) -> impl Iterator<Item = (&Key, &Slot)> {
        self.shards.iter().flatten()
    }

    /// The slots of key group `g`.
    pub(super) fn group(&self, g: u32) -> impl Iterator<Item = (&Key, &Slot)> {
        self.shards.get(g as usize).into_iter().flatten()
    }
}

impl IntoIterator for Keys {
    type Item = (Key, Slot);
    type IntoIter = std::iter::Flatten<std::vec::IntoIter<Shard>>;

    fn into_iter(self) -> Self::IntoIter {
        self.shards.into_iter().flatten()
    }
}

#[cfg(test)]
mod tests {
    use super::super::Acc;
    use super::*;

    fn slot(n: u64) -> Slot {
        Slot {
            acc: Acc::Count(n),
            epoch: 0,
        }
    }

    #[test]
    fn slots_are_found_counted_and_kept_by_key_group() {
        let mut k = Keys::default();
        assert!(k.is_empty() && k.get(b"a").is_none());
        let keys: Vec<String> = (0..2_000).map(|i| format!("key{i}")).collect();
        for (i, key) in keys.iter().enumerate() {
            k.insert(Key::from(key.as_bytes()), slot(i as u64));
        }
        // Setting a slot again does not count it twice.
        k.insert(Key::from(&b"key7"[..]), slot(70));
        assert_eq!(k.len(), 2_000);
        assert_eq!(k.get(b"key7"), Some(&slot(70)));
        k.get_mut(b"key8").unwrap().acc = Acc::Count(80);
        assert_eq!(
            k.get_key_value(b"key8").map(|(k, s)| (k.as_slice(), *s)),
            Some((&b"key8"[..], slot(80)))
        );
        assert!(k.get(b"nokey").is_none());
        // Iterated key group by key group, each slot once.
        let groups: Vec<u32> = k.iter().map(|(key, _)| key_group(key.as_slice())).collect();
        assert_eq!(groups.len(), 2_000);
        assert!(groups.windows(2).all(|w| w[0] <= w[1]));
        let in_7: Vec<_> = k.group(7).map(|(key, _)| key.clone()).collect();
        assert!(!in_7.is_empty());
        assert!(in_7.iter().all(|key| key_group(key.as_slice()) == 7));
        // Kept and removed by key group.
        let mut kept = k.clone();
        let half = KeyGroupRange { start: 0, end: 128 };
        kept.keep_groups(half);
        let mut removed = k.clone();
        removed.remove_groups(half);
        assert_eq!(kept.len() + removed.len(), 2_000);
        assert_eq!(kept.len(), kept.iter().count());
        assert!(kept
            .iter()
            .all(|(key, _)| half.contains(key_group(key.as_slice()))));
        assert!(removed
            .iter()
            .all(|(key, _)| !half.contains(key_group(key.as_slice()))));
        let mut all: Vec<String> = k
            .into_iter()
            .map(|(key, _)| String::from_utf8(key.as_slice().to_vec()).unwrap())
            .collect();
        all.sort();
        let mut want = keys;
        want.sort();
        assert_eq!(all, want);
    }
}
