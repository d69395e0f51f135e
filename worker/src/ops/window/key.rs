//! A record key as a window holds it: inline up to [`INLINE`] bytes, on the heap
//! beyond.
//!
//! Why: a window holds one slot per key and window, and with `Vec<u8>` keys every slot
//! was its own heap allocation. At 100 MB of state that is 1.35 M allocations per PE:
//! restoring a snapshot made them one by one, snapshots chased a pointer per key, and
//! dropping a drained window freed them one by one (on glibc's malloc, which the
//! in-process benches then used, 200-400 ms of `free` and `malloc_consolidate` while
//! the other PEs' allocations waited on the same arenas: BENCHMARKS.md, issue 22).
//! Most keys (ids, short names) fit inline, and the type is no larger than a `Vec`.

use std::borrow::Borrow;
use std::hash::{Hash, Hasher};

/// Longest key held inline.
pub const INLINE: usize = 22;

/// A window slot's key. Hashes, compares and orders as the byte slice it holds, so a
/// map of `Key`s is looked up with a plain `&[u8]`.
#[derive(Clone)]
pub enum Key {
    /// Up to [`INLINE`] bytes.
    Inline { len: u8, bytes: [u8; INLINE] },
    /// Longer keys.
    Heap(Box<[u8]>),
}

impl Key {
    /// The key's bytes.
    pub fn as_slice(&self) -> &[u8] {
        match self {
            Key::Inline { len, bytes } => &bytes[..usize::from(*len)],
            Key::Heap(b) => b,
        }
    }
}

impl From<&[u8]> for Key {
    fn from(b: &[u8]) -> Self {
        if b.len() <= INLINE {
            let mut bytes = [0u8; INLINE];
            bytes[..b.len()].copy_from_slice(b);
            // Fits: at most INLINE (22) bytes.
            Key::Inline {
                len: b.len() as u8,
                bytes,
            }
        } else {
            Key::Heap(b.into())
        }
    }
}

impl std::ops::Deref for Key {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        self.as_slice()
    }
}

impl Borrow<[u8]> for Key {
    fn borrow(&self) -> &[u8] {
        self.as_slice()
    }
}

impl Hash for Key {
    fn hash<H: Hasher>(&self, state: &mut H) {
        // Exactly as `[u8]` hashes, which `Borrow<[u8]>` requires.
        self.as_slice().hash(state);
    }
}

impl PartialEq for Key {
    fn eq(&self, other: &Self) -> bool {
        self.as_slice() == other.as_slice()
    }
}

impl Eq for Key {}

impl PartialOrd for Key {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Key {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.as_slice().cmp(other.as_slice())
    }
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.as_slice().fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashMap;

    #[test]
    fn no_larger_than_a_vec() {
        assert_eq!(std::mem::size_of::<Key>(), std::mem::size_of::<Vec<u8>>());
    }

    proptest! {
        #[test]
        fn a_key_is_its_bytes_inline_or_not(
            a in proptest::collection::vec(any::<u8>(), 0..40),
            b in proptest::collection::vec(any::<u8>(), 0..40),
        ) {
            let (ka, kb) = (Key::from(&a[..]), Key::from(&b[..]));
            prop_assert_eq!(ka.as_slice(), &a[..]);
            prop_assert_eq!(matches!(ka, Key::Inline { .. }), a.len() <= INLINE);
            prop_assert_eq!(ka == kb, a == b);
            prop_assert_eq!(ka.cmp(&kb), a.cmp(&b));
            // Found by its bytes in a map, whichever way it is held.
            let mut m: HashMap<Key, u32, foldhash::fast::RandomState> = HashMap::default();
            m.insert(ka.clone(), 1);
            prop_assert_eq!(m.get(&a[..]), Some(&1));
            prop_assert_eq!(m.contains_key(&b[..]), a == b);
        }
    }
}
