//! An increment encoded after its barrier, a slice at a time while records arrive and
//! windows close, is byte for byte the increment encoded at the barrier when its
//! listed slots are looked up, and the same slots with the same values when the maps
//! are scanned for them.

use super::encoding::SCAN_SHARE;
use super::test_records::{batch, outputs, ALL};
use super::*;
use proptest::prelude::*;
use std::collections::BTreeMap;
use weir_common::keygroup::{key_group, KeyGroupRange};

/// One checkpoint interval: records in slices, each followed by an encoding step of
/// that many slots (0: none), and whether an upgrade round ships before the barrier.
#[allow(clippy::type_complexity)]
fn steps() -> impl Strategy<Value = Vec<(Vec<(Vec<(u8, i64)>, usize)>, Option<usize>)>> {
    prop::collection::vec(
        (
            prop::collection::vec(
                (
                    prop::collection::vec((0u8..40, 0i64..30), 0..12),
                    prop::sample::select(vec![0usize, 1, 2, 5]),
                ),
                0..6,
            ),
            prop::option::weighted(0.1, 1usize..10),
        ),
        1..12,
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    #[test]
    fn an_increment_encoded_after_its_barrier_is_the_one_at_the_barrier(
        steps in steps(),
        n in 1u32..3,
        hop in any::<bool>(),
        // Listed slots looked up (0), the maps scanned (MAX), or chosen by cost.
        scan in prop::sample::select(vec![0usize, usize::MAX, SCAN_SHARE]),
    ) {
        let make = || {
            let mut w = if hop {
                Window::hopping(WindowKind::Count, 20, 5, 1, 3)
            } else {
                Window::new(WindowKind::Count, 10, 1, 3)
            };
            // Every increment is encoded after its barrier.
            w.defer_from(0);
            w.scan_share(scan);
            w
        };
        for pe in 0..n {
            let groups = KeyGroupRange::for_pe(pe, n);
            let mut w = make();
            // The same PE taking every snapshot at its barrier.
            let mut at_barrier = make();
            at_barrier.defer_from(usize::MAX);
            // Checkpoint -> its increment (or whole snapshot) encoded at the barrier.
            let mut expected = BTreeMap::new();
            let mut got = BTreeMap::new();
            let mut deferred = 0;
            for (s, (slices, round)) in steps.iter().enumerate() {
                let id = s as u64 + 1;
                for (records, step) in slices {
                    // Time moves on, so windows close while an increment is encoded.
                    let records: Vec<(u8, i64)> =
                        records.iter().map(|(k, t)| (*k, t + 8 * s as i64)).collect();
                    let b = batch(&records, pe, n);
                    prop_assert_eq!(outputs(&w.apply(0, &b)), outputs(&at_barrier.apply(0, &b)));
                    if *step > 0 {
                        w.encode_step(*step);
                    }
                    got.extend(w.take_finished().into_iter().map(|(id, b, base)| (id, (b, base))));
                }
                if let Some(max) = round {
                    let _ = w.round(groups, *max);
                    let _ = at_barrier.round(groups, *max);
                }
                // Every checkpoint before this one is known complete.
                let complete = |m: u64| m < id;
                expected.insert(id, at_barrier.checkpoint(id, groups, complete));
                match w.begin_checkpoint(id, groups, complete) {
                    Some(taken) => {
                        got.insert(id, taken);
                    }
                    None => deferred += 1,
                }
                got.extend(w.take_finished().into_iter().map(|(id, b, base)| (id, (b, base))));
            }
            while w.encoding() {
                w.encode_step(3);
            }
            got.extend(w.take_finished().into_iter().map(|(id, b, base)| (id, (b, base))));
            prop_assert_eq!(got.len(), expected.len(), "{} deferred", deferred);
            for (id, (bytes, base)) in &expected {
                let (got_bytes, got_base) = &got[id];
                prop_assert_eq!(got_base, base, "checkpoint {}", id);
                if *base == 0 {
                    // Whole snapshots hold their entries in map order.
                    prop_assert!(w.same_state(got_bytes, bytes), "checkpoint {}", id);
                } else if scan == 0 {
                    // Increments in the order of their list.
                    prop_assert_eq!(got_bytes, bytes, "checkpoint {}", id);
                } else {
                    prop_assert!(w.same_increment(got_bytes, bytes), "checkpoint {}", id);
                }
            }
            // And the state went on the same.
            prop_assert!(w.same_state(&w.snapshot(ALL), &at_barrier.snapshot(ALL)));
            prop_assert_eq!(outputs(&w.flush()), outputs(&at_barrier.flush()));
        }
    }
}

#[test]
fn a_slot_changed_or_closed_after_the_barrier_is_written_as_it_was_there() {
    let groups = ALL;
    let mut w = Window::new(WindowKind::Count, 10, 1, 3);
    w.defer_from(0);
    // Looked up: scanning is `a_scanned_increment_...`.
    w.scan_share(0);
    let rec = |keys: &[(u8, i64)]| batch(keys, 0, 1);
    w.apply(0, &rec(&[(1, 1), (2, 1), (3, 5)]));
    let (_, base) = w.checkpoint(1, groups, |_| false);
    assert_eq!(base, 0, "the first snapshot is whole");
    // Changed since 1: k1, k2 and k3, all in [0, 10).
    w.apply(0, &rec(&[(1, 2), (2, 3), (3, 6)]));
    let mut at_barrier = w.clone();
    at_barrier.defer_from(usize::MAX);
    let expected = at_barrier.checkpoint(2, groups, |m| m == 1);
    assert!(w.begin_checkpoint(2, groups, |m| m == 1).is_none());
    assert!(w.encoding());
    // After the barrier: k3 counts again, then the window [0, 10) closes (watermark
    // 20) with k3 at 3.
    w.apply(0, &rec(&[(3, 7)]));
    let closed = outputs(&w.apply(0, &rec(&[(4, 20)])));
    assert_eq!(closed.len(), 3);
    assert!(
        closed
            .iter()
            .any(|(k, _, c)| k == b"k3" && c.contains("I64(3)")),
        "{closed:?}"
    );
    w.encode_step(1);
    let early = w.take_finished();
    assert!(early.is_empty(), "one slot of three encoded: {early:?}");
    w.encode_step(10);
    let finished = w.take_finished();
    assert_eq!(finished.len(), 1);
    let (id, bytes, base) = &finished[0];
    assert_eq!((*id, *base), (2, 1));
    assert_eq!((bytes.clone(), *base), expected);
    // The increment holds k1 = 2, k2 = 2 and k3 = 2, all closed since.
    let mut restored = Window::new(WindowKind::Count, 10, 1, 3);
    let whole = {
        let mut again = Window::new(WindowKind::Count, 10, 1, 3);
        again.apply(0, &rec(&[(1, 1), (2, 1), (3, 5)]));
        again.snapshot(groups)
    };
    restored
        .restore_chain(&[], &[(1, &whole), (2, bytes)], None)
        .unwrap();
    let out = outputs(&restored.flush());
    let counts: Vec<(Vec<u8>, String)> = out.into_iter().map(|(k, _, c)| (k, c)).collect();
    assert_eq!(counts.len(), 3, "{counts:?}");
    assert!(
        counts.iter().all(|(_, c)| c.contains("I64(2)")),
        "{counts:?}"
    );
}

/// Encodes the snapshot being encoded to its end, `step` slots at a time, and returns
/// it: the one snapshot finished.
fn finish(w: &mut Window, step: usize) -> Finished {
    while w.encoding() {
        w.encode_step(step);
    }
    let mut finished = w.take_finished();
    assert_eq!(finished.len(), 1);
    finished.remove(0)
}

/// Keys `from..to` at event time `t`.
fn keys(from: u8, to: u8, t: i64) -> Batch {
    let records: Vec<(u8, i64)> = (from..to).map(|k| (k, t)).collect();
    batch(&records, 0, 1)
}

#[test]
fn an_increment_listing_a_large_share_of_the_slots_is_scanned_for() {
    let mut w = Window::new(WindowKind::Count, 10, 1, 3);
    w.defer_from(0);
    // A share of 32 (the default, SCAN_SHARE, is larger: keys here are single bytes).
    w.scan_share(32);
    w.apply(0, &keys(0, 200, 1));
    w.checkpoint(1, ALL, |_| false);
    // 5 of 200 slots listed: under a 32nd, looked up.
    w.apply(0, &keys(0, 5, 2));
    assert!(w.begin_checkpoint(2, ALL, |m| m == 1).is_none());
    assert!(w.encoding() && !w.scanning());
    // 7 of 200: at least a 32nd, scanned.
    w.apply(0, &keys(0, 7, 2));
    assert!(w.begin_checkpoint(3, ALL, |m| m == 2).is_none());
    assert!(w.encoding() && w.scanning());
    w.settle();
    assert_eq!(w.take_finished().len(), 2);
}

/// A counting window of `size_ms` whose every increment is encoded after its barrier,
/// by scanning.
fn always_scanning(size_ms: u64) -> Window {
    let mut w = Window::new(WindowKind::Count, size_ms, 1, 3);
    w.defer_from(0);
    w.scan_share(usize::MAX);
    w
}

/// Begins checkpoint 2 of `w`, an increment over 1 scanned after its barrier, and
/// returns the one the barrier would have encoded.
fn begin_scanned_increment(w: &mut Window) -> Vec<u8> {
    let mut at_barrier = w.clone();
    at_barrier.defer_from(usize::MAX);
    let (expected, _) = at_barrier.checkpoint(2, ALL, |m| m == 1);
    assert!(w.begin_checkpoint(2, ALL, |m| m == 1).is_none());
    assert!(w.scanning());
    expected
}

#[test]
fn a_scanned_increment_writes_each_slot_as_it_was_at_the_barrier_once() {
    let mut w = always_scanning(10);
    w.apply(0, &keys(0, 200, 1));
    let (whole, base) = w.checkpoint(1, ALL, |_| false);
    assert_eq!(base, 0);
    // Changed since 1: k0..k149, to 2 each.
    w.apply(0, &keys(0, 150, 2));
    let expected = begin_scanned_increment(&mut w);
    // A first step scans the key groups of a few slots, not all 200.
    w.encode_step(1);
    assert!(w.encoding(), "one step scanned every slot");
    // After the barrier: every slot counts again (in scanned and unscanned key groups
    // alike), then the window [0, 10) closes (watermark 25) with k0..k149 at 3.
    w.apply(0, &keys(0, 200, 3));
    let closed = outputs(&w.apply(0, &keys(0, 1, 25)));
    assert_eq!(closed.len(), 200);
    assert!(closed.iter().all(|(k, _, c)| {
        let n: u8 = String::from_utf8_lossy(&k[1..]).parse().unwrap();
        c.contains(if n < 150 { "I64(3)" } else { "I64(2)" })
    }));
    let (id, bytes, base) = &finish(&mut w, 1);
    assert_eq!((*id, *base), (2, 1));
    assert!(w.same_increment(bytes, &expected));
    // Restored, the chain gives the state at the barrier: k0..k149 at 2, the rest at 1,
    // each written once.
    let mut restored = Window::new(WindowKind::Count, 10, 1, 3);
    restored
        .restore_chain(&[], &[(1, &whole), (2, bytes)], None)
        .unwrap();
    let out = outputs(&restored.flush());
    assert_eq!(out.len(), 200);
    assert!(out.iter().all(|(k, _, c)| {
        let n: u8 = String::from_utf8_lossy(&k[1..]).parse().unwrap();
        c.contains(if n < 150 { "I64(2)" } else { "I64(1)" })
    }));
    let (_, part) = w.read_increment(bytes, None).unwrap();
    assert_eq!(part.entries.len(), 150, "each changed slot written once");
}

#[test]
fn a_scanning_step_writes_about_what_a_looking_up_step_writes() {
    let mut w = always_scanning(1_000);
    w.apply(0, &many(0, 12_000, 1));
    w.checkpoint(1, ALL, |_| false);
    // Every slot changed since 1: the increment writes each one it visits.
    w.apply(0, &many(0, 12_000, 2));
    let expected = begin_scanned_increment(&mut w);
    // Steps of 100: each ends after the key group that reaches 100 slots written (12,000
    // keys in 256 groups, ~47 each), so at least 12,000 / 200 steps; stopping only on
    // slots visited (16 x 100 a step), 8 would do.
    let mut steps = 0;
    while w.encoding() {
        w.encode_step(100);
        steps += 1;
    }
    assert!(steps >= 60, "{steps} steps");
    let (id, bytes, base) = w.take_finished().remove(0);
    assert_eq!((id, base), (2, 1));
    assert!(w.same_increment(&bytes, &expected));
}

/// Keys `key-{from}`..`key-{to}` at event time `t`.
fn many(from: u32, to: u32, t: i64) -> Batch {
    let mut b = BatchBuilder::default();
    for k in from..to {
        b.push(
            9,
            0,
            t,
            format!("key-{k:08}").as_bytes(),
            std::iter::empty(),
        )
        .unwrap();
    }
    b.finish()
}

#[test]
fn a_whole_snapshot_encoded_after_its_barrier_holds_each_slot_as_it_was_there_indexed() {
    use super::state::{INDEXED, INDEX_FROM, KIND_BYTE_AT};
    // Two windows open at once: [0, 1000) and [500, 1500).
    let mut w = Window::hopping(WindowKind::Count, 1_000, 500, 1, 3);
    w.defer_from(0);
    w.apply(0, &many(0, 12_000, 600));
    let mut at_barrier = w.clone();
    at_barrier.defer_from(usize::MAX);
    let (expected, base) = at_barrier.checkpoint(1, ALL, |_| false);
    assert_eq!(base, 0);
    assert!(w.begin_checkpoint(1, ALL, |_| false).is_none());
    assert!(w.encoding() && !w.scanning());
    // A first step writes the first key groups, not all 24,000 slots.
    w.encode_step(100);
    assert!(w.encoding(), "one step wrote the whole state");
    // After the barrier: every slot counts again (in written and unwritten key groups
    // alike), new keys come, then [0, 1000) closes (watermark 1100).
    w.apply(0, &many(0, 12_000, 700));
    w.apply(0, &many(20_000, 20_100, 700));
    let closed = outputs(&w.apply(0, &many(30_000, 30_001, 1_100)));
    assert_eq!(closed.len(), 12_100);
    let (id, bytes, base) = &finish(&mut w, 1_000);
    assert_eq!((*id, *base), (1, 0));
    assert!(bytes.len() > INDEX_FROM, "{} bytes", bytes.len());
    assert_eq!(bytes[KIND_BYTE_AT] & INDEXED, INDEXED, "indexed");
    // Each slot of the barrier once, at its value there; none created since.
    assert_eq!(w.read(bytes, None).unwrap().entries.len(), 24_000);
    assert!(w.same_state(bytes, &expected));
    // Every section holds its own key group's slots (a read checks it) and a filtered
    // read keeps what the full one would.
    for pe in 0..3 {
        let keep = KeyGroupRange::for_pe(pe, 3);
        let mut all = w.read(bytes, None).unwrap();
        all.entries
            .retain(|(_, _, k, _)| keep.contains(key_group(k.as_slice())));
        assert_eq!(w.read(bytes, Some(keep)).unwrap().sorted(), all.sorted());
    }
    // Restored: the state at the barrier, every slot counted once.
    let mut restored = w.cleared();
    restored.restore(bytes).unwrap();
    let out = outputs(&restored.flush());
    assert_eq!(out.len(), 24_000);
    assert!(
        out.iter().all(|(_, _, c)| c.contains("I64(1)")),
        "{:?}",
        &out[..3]
    );
    // And the next checkpoint builds on it.
    let (_, base) = w.checkpoint(2, ALL, |m| m == 1);
    assert_eq!(base, 1);
}
