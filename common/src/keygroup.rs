//! Key groups: the unit in which keyed state is split across PEs and moved on rescale.
//!
//! A key hashes to one of [`KEY_GROUPS`] groups; PE `i` of `n` owns the contiguous
//! range `[i*G/n, (i+1)*G/n)`. Rescaling from `n` to `m` PEs moves whole groups, so the
//! new owner of a key is known without looking at the data.

use crate::fingerprint::fnv1a64;
use crate::spec::KEY_GROUPS;
use serde::{Deserialize, Serialize};

/// A half-open range of key groups.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct KeyGroupRange {
    /// First group owned.
    pub start: u32,
    /// One past the last group owned.
    pub end: u32,
}

impl KeyGroupRange {
    /// The groups owned by PE `index` of `parallelism`.
    pub fn for_pe(index: u32, parallelism: u32) -> Self {
        // Ceiling division makes `owner` (a floor) agree exactly with the ranges.
        let p = parallelism.max(1);
        let bound = |i: u32| (i * KEY_GROUPS).div_ceil(p);
        Self {
            start: bound(index),
            end: bound(index + 1),
        }
    }

    /// Whether two ranges share a group.
    pub fn overlaps(&self, other: &Self) -> bool {
        self.start < other.end && other.start < self.end
    }

    /// Whether `group` is in the range.
    pub fn contains(&self, group: u32) -> bool {
        (self.start..self.end).contains(&group)
    }

    /// The groups in both ranges (empty, and starting where the later one does, when
    /// they do not overlap).
    pub fn intersect(&self, other: &Self) -> Self {
        let start = self.start.max(other.start);
        Self {
            start,
            end: self.end.min(other.end).max(start),
        }
    }
}

/// The key group of a record key.
pub fn key_group(key: &[u8]) -> u32 {
    (fnv1a64(key) % u64::from(KEY_GROUPS)) as u32
}

/// The PE index (of `parallelism`) owning `key`.
pub fn owner(key: &[u8], parallelism: u32) -> u32 {
    key_group(key) * parallelism.max(1) / KEY_GROUPS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_partition_all_groups() {
        for p in 1..=KEY_GROUPS {
            let mut next = 0;
            for i in 0..p {
                let r = KeyGroupRange::for_pe(i, p);
                assert_eq!(r.start, next);
                assert!(r.end > r.start, "p={p} i={i} owns nothing");
                next = r.end;
            }
            assert_eq!(next, KEY_GROUPS);
        }
    }

    #[test]
    fn owner_agrees_with_ranges() {
        for p in [1, 2, 3, 7, 64, 256] {
            for k in 0..2000u32 {
                let key = format!("k{k}");
                let o = owner(key.as_bytes(), p);
                assert!(KeyGroupRange::for_pe(o, p).contains(key_group(key.as_bytes())));
            }
        }
    }
}
