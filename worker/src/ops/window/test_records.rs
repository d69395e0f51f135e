//! Records and outputs the window's property tests share.

use super::*;
use weir_common::keygroup::{owner, KeyGroupRange};
use weir_common::spec::KEY_GROUPS;

pub(super) const ALL: KeyGroupRange = KeyGroupRange {
    start: 0,
    end: KEY_GROUPS,
};

/// (key number, event time) per record; each predecessor gets its own keys by key
/// group, as a hash stream routes them.
pub(super) fn batch(records: &[(u8, i64)], pe: u32, parallelism: u32) -> Batch {
    let mut b = BatchBuilder::default();
    for (k, t) in records {
        let key = format!("k{k}");
        if owner(key.as_bytes(), parallelism) == pe {
            b.push(9, 0, *t, key.as_bytes(), std::iter::empty())
                .unwrap();
        }
    }
    b.finish()
}

/// Each output record: key, event time and aggregate.
pub(super) fn outputs(b: &Batch) -> Vec<(Vec<u8>, i64, String)> {
    b.iter()
        .map(|r| {
            (
                r.key.to_vec(),
                r.event_time_ms,
                format!("{:?}", r.fields().last()),
            )
        })
        .collect()
}
