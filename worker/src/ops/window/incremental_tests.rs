//! A chain (whole snapshot, then increments) restores exactly what the whole snapshot
//! at its last checkpoint restores: state and every later output, for any records
//! between checkpoints, checkpoints whose completion is not known yet, upgrade rounds
//! shipped in between, and several predecessors merged.

use super::test_records::{batch, outputs, ALL};
use super::*;
use crate::ops::StateError;
use proptest::prelude::*;
use std::collections::BTreeMap;
use weir_common::keygroup::KeyGroupRange;

/// What a PE stored: per checkpoint, the snapshot and what it builds on.
type Stored = BTreeMap<u64, (Vec<u8>, u64)>;

/// The chain of checkpoint `id`, the whole snapshot first.
fn chain(stored: &Stored, id: u64) -> Vec<(u64, &[u8])> {
    let mut links = vec![];
    let mut at = id;
    loop {
        let (bytes, base) = &stored[&at];
        links.push((at, &bytes[..]));
        if *base == 0 {
            break;
        }
        at = *base;
    }
    links.reverse();
    links
}

/// One step between checkpoints: records, after how many later checkpoints this one's
/// completion reaches the PE (`None`: never, it was abandoned), and whether an upgrade
/// round ships (then rolls back).
#[allow(clippy::type_complexity)]
fn steps() -> impl Strategy<Value = Vec<(Vec<(u8, i64)>, Option<u64>, Option<usize>)>> {
    prop::collection::vec(
        (
            prop::collection::vec((0u8..40, 0i64..30), 0..40),
            prop::option::weighted(0.9, prop::sample::select(vec![1u64, 1, 1, 2, 3])),
            prop::option::weighted(0.15, 1usize..10),
        ),
        1..12,
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn a_chain_restores_exactly_the_whole_snapshot(
        steps in steps(),
        after in prop::collection::vec((0u8..40, 0i64..30), 0..60),
        n in 1u32..3,
        hop in any::<bool>(),
    ) {
        let make = || if hop {
            Window::hopping(WindowKind::Count, 20, 5, 1, 3)
        } else {
            Window::new(WindowKind::Count, 10, 1, 3)
        };
        let mut pes: Vec<Window> = (0..n).map(|_| make()).collect();
        let mut stored: Vec<Stored> = vec![Stored::new(); n as usize];
        // Checkpoint -> the checkpoint from which on the PE knows it complete.
        let mut known_from = BTreeMap::new();
        for (s, (records, lag, round)) in steps.iter().enumerate() {
            let id = s as u64 + 1;
            if let Some(lag) = lag {
                known_from.insert(id, id + lag);
            }
            let complete = |m: u64| known_from.get(&m).is_some_and(|from| *from <= id);
            // Time moves on, so windows close between checkpoints.
            let records: Vec<(u8, i64)> =
                records.iter().map(|(k, t)| (*k, t + 8 * s as i64)).collect();
            let mut wholes = vec![];
            for (i, w) in pes.iter_mut().enumerate() {
                let groups = KeyGroupRange::for_pe(i as u32, n);
                w.apply(0, &batch(&records, i as u32, n));
                if let Some(max) = round {
                    let _ = w.round(groups, *max);
                }
                wholes.push(w.snapshot(groups));
                let (bytes, base) = w.checkpoint(id, groups, complete);
                prop_assert!(base == 0 || complete(base), "builds only on a known complete one");
                stored[i].insert(id, (bytes, base));
            }
            // Each PE alone: its chain at `id` is its whole snapshot at `id`.
            for (i, whole) in wholes.iter().enumerate() {
                let mut from_chain = make();
                from_chain.restore_chain(&[], &chain(&stored[i], id), None).unwrap();
                let mut from_whole = make();
                from_whole.restore(whole).unwrap();
                prop_assert!(from_chain.same_state(&from_chain.snapshot(ALL), &from_whole.snapshot(ALL)));
                let later = batch(&after, i as u32, n);
                let later_t: Vec<(u8, i64)> = after.iter().map(|(k, t)| (*k, t + 8 * id as i64)).collect();
                let later_t = batch(&later_t, i as u32, n);
                prop_assert_eq!(outputs(&from_chain.clone().apply(0, &later)), outputs(&from_whole.clone().apply(0, &later)));
                prop_assert_eq!(outputs(&from_chain.apply(0, &later_t)), outputs(&from_whole.apply(0, &later_t)));
                prop_assert_eq!(outputs(&from_chain.flush()), outputs(&from_whole.flush()));
            }
            // All PEs merged into one (a rescale to 1 after a recovery): chains merge
            // as their whole snapshots do.
            let mut merged_chains = make();
            let mut merged_wholes = make();
            for (i, whole) in wholes.iter().enumerate() {
                merged_chains.restore_chain(&[], &chain(&stored[i], id), Some(ALL)).unwrap();
                merged_wholes.restore_groups(whole, Some(ALL)).unwrap();
            }
            prop_assert!(merged_chains.same_state(&merged_chains.snapshot(ALL), &merged_wholes.snapshot(ALL)));
        }
    }
}

/// One record for each of `n` keys (`key0`, ...) at time 1.
fn many(n: u32) -> Batch {
    let mut b = BatchBuilder::default();
    for k in 0..n {
        b.push(9, 0, 1, format!("key{k}").as_bytes(), std::iter::empty())
            .unwrap();
    }
    b.finish()
}

/// Knows checkpoints up to `n` complete.
fn upto(n: u64) -> impl Fn(u64) -> bool {
    move |m| m <= n
}

#[test]
fn increments_build_on_the_newest_snapshot_known_complete_and_unshipped_changes() {
    let mut w = Window::new(WindowKind::Count, 1_000, 1, 3);
    // Enough state that small increments stay within the chain's bytes.
    w.apply(0, &many(2_000));
    w.apply(0, &batch(&[(1, 1), (2, 2)], 0, 1));
    // No snapshot yet: whole.
    assert_eq!(w.checkpoint(1, ALL, upto(0)).1, 0);
    w.apply(0, &batch(&[(1, 3)], 0, 1));
    // Checkpoint 1 not known complete: whole again.
    let (whole2, base) = w.checkpoint(2, ALL, upto(0));
    assert_eq!(base, 0);
    let mut stored = Stored::new();
    stored.insert(2, (whole2, 0));
    w.apply(0, &batch(&[(3, 4)], 0, 1));
    let (inc, base) = w.checkpoint(3, ALL, upto(2));
    assert_eq!(base, 2);
    stored.insert(3, (inc.clone(), base));
    // An increment is never taken for a whole snapshot.
    let mut other = Window::new(WindowKind::Count, 1_000, 1, 3);
    assert!(matches!(
        other.restore(&inc),
        Err(StateError::WrongKind { .. })
    ));
    // 3's completion has not reached the PE at 4: 4 builds on 2, with every change
    // since 2 (those before 3 too); then 5 on 4.
    w.apply(0, &batch(&[(4, 5), (1, 5)], 0, 1));
    let whole4 = w.snapshot(ALL);
    let (inc4, base) = w.checkpoint(4, ALL, upto(2));
    assert_eq!(base, 2);
    stored.insert(4, (inc4, base));
    w.apply(0, &batch(&[(5, 6)], 0, 1));
    let whole5 = w.snapshot(ALL);
    let (inc5, base) = w.checkpoint(5, ALL, upto(4));
    assert_eq!(base, 4);
    stored.insert(5, (inc5, base));
    for (id, whole) in [(4, whole4), (5, whole5)] {
        let links = chain(&stored, id);
        assert_eq!(links[0].0, 2, "skips 3");
        let mut restored = Window::new(WindowKind::Count, 1_000, 1, 3);
        restored.restore_chain(&[], &links, None).unwrap();
        let mut expect = Window::new(WindowKind::Count, 1_000, 1, 3);
        expect.restore(&whole).unwrap();
        assert!(restored.same_state(&restored.snapshot(ALL), &expect.snapshot(ALL)));
    }
    // A round unlisted changes since 5: the next snapshot is whole.
    w.apply(0, &batch(&[(4, 7), (5, 7)], 0, 1));
    assert!(w.round(ALL, 1).is_some());
    assert_eq!(w.checkpoint(6, ALL, upto(5)).1, 0);
}

#[test]
fn a_chain_that_does_not_link_up_changes_nothing() {
    let mut w = Window::new(WindowKind::Count, 1_000, 1, 3);
    w.apply(0, &batch(&[(1, 1), (2, 2)], 0, 1));
    let (whole, _) = w.checkpoint(1, ALL, upto(0));
    w.apply(0, &batch(&[(1, 3)], 0, 1));
    let (inc2, _) = w.checkpoint(2, ALL, upto(1));
    w.apply(0, &batch(&[(3, 3)], 0, 1));
    let whole3 = w.snapshot(ALL);
    let (inc3, base) = w.checkpoint(3, ALL, upto(2));
    assert_eq!(base, 2);
    let mut target = Window::new(WindowKind::Count, 1_000, 1, 3);
    target.apply(0, &batch(&[(9, 1)], 0, 1));
    let before = target.snapshot(ALL);
    // Increment 2 left out: 3 does not build on 1.
    let skipped = target.restore_chain(&[], &[(1, &whole[..]), (3, &inc3[..])], None);
    assert!(
        matches!(skipped, Err(StateError::Mismatch(m)) if m.contains("builds on checkpoint 2, not on 1"))
    );
    // A damaged increment.
    assert!(target
        .restore_chain(&[], &[(1, &whole[..]), (2, &inc2[..inc2.len() - 1])], None)
        .is_err());
    assert!(target.same_state(&target.snapshot(ALL), &before));
    // Linked up, merged into the window's own state.
    target
        .restore_chain(
            &[],
            &[(1, &whole[..]), (2, &inc2[..]), (3, &inc3[..])],
            None,
        )
        .unwrap();
    let mut expect = Window::new(WindowKind::Count, 1_000, 1, 3);
    expect.apply(0, &batch(&[(9, 1)], 0, 1));
    expect.restore(&whole3).unwrap();
    assert!(target.same_state(&target.snapshot(ALL), &expect.snapshot(ALL)));
}

#[test]
fn chains_stay_short_and_smaller_than_the_state() {
    let mut w = Window::new(WindowKind::Count, 1_000_000, 1, 3);
    w.apply(0, &many(2_000));
    assert_eq!(w.checkpoint(1, ALL, upto(0)).1, 0);
    // One key changes per checkpoint: increments are small, so the links bound them.
    let mut whole_at = vec![];
    for id in 2..(incremental::MAX_LINKS as u64 + 4) {
        w.apply(0, &batch(&[(1, 2)], 0, 1));
        if w.checkpoint(id, ALL, upto(id - 1)).1 == 0 {
            whole_at.push(id);
        }
    }
    assert_eq!(whole_at, vec![incremental::MAX_LINKS as u64 + 2]);
    // Every key changes each time: increments as large as the state soon add up to it.
    let mut w = Window::new(WindowKind::Count, 1_000_000, 1, 3);
    let keys: Vec<(u8, i64)> = (0..200).map(|k| (k as u8, 1)).collect();
    w.apply(0, &batch(&keys, 0, 1));
    w.checkpoint(1, ALL, upto(0));
    let mut bases = vec![];
    for id in 2..6 {
        w.apply(0, &batch(&keys, 0, 1));
        bases.push(w.checkpoint(id, ALL, upto(id - 1)).1);
    }
    assert_eq!(bases, vec![1, 0, 3, 0]);
}

/// The switch checkpoint of the seeded tests.
const K: u64 = 100;

/// The chain of checkpoint `id` of a successor seeded at [`K`], and whether it starts
/// from the seed (its first link an increment on `K`) or from a whole snapshot.
fn seeded_chain(stored: &Stored, id: u64) -> (Vec<(u64, &[u8])>, bool) {
    let mut links = vec![];
    let mut at = id;
    let seeded = loop {
        let (bytes, base) = &stored[&at];
        links.push((at, &bytes[..]));
        match *base {
            0 => break false,
            K => break true,
            b => at = b,
        }
    };
    links.reverse();
    (links, seeded)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    /// An upgrade's successor, seeded at the switch with its predecessors' whole
    /// snapshots: every chain of its (seed, then increments; or whole, then
    /// increments) restores exactly its whole snapshot, state and later outputs.
    #[test]
    fn a_seeded_chain_restores_exactly_the_successors_whole_snapshot(
        before in prop::collection::vec((0u8..40, 0i64..30), 0..40),
        steps in steps(),
        after in prop::collection::vec((0u8..40, 0i64..30), 0..40),
        n in 1u32..3,
        m in 1u32..4,
        hop in any::<bool>(),
        room in any::<bool>(),
        switch_lag in 1u64..3,
    ) {
        let make = || if hop {
            Window::hopping(WindowKind::Count, 20, 5, 1, 3)
        } else {
            Window::new(WindowKind::Count, 10, 1, 3)
        };
        let seed: Vec<(u64, Vec<u8>)> = (0..n)
            .map(|i| {
                let mut w = make();
                w.apply(0, &batch(&before, i, n));
                (K, w.snapshot(KeyGroupRange::for_pe(i, n)))
            })
            .collect();
        let seed: Vec<(u64, &[u8])> = seed.iter().map(|(id, b)| (*id, &b[..])).collect();
        let seed_bytes: u64 = seed.iter().map(|(_, b)| b.len() as u64).sum();
        for j in 0..m {
            let groups = KeyGroupRange::for_pe(j, m);
            let mut w = make();
            for (_, s) in &seed {
                w.restore_groups(s, Some(groups)).unwrap();
            }
            w.take_over(groups);
            // Enough room that increments on the seed go on, or the seed's own size.
            w.seed(K, if room { 1 << 40 } else { seed_bytes });
            let mut stored = Stored::new();
            let mut known_from = BTreeMap::from([(K, K + switch_lag)]);
            for (s, (records, lag, round)) in steps.iter().enumerate() {
                let id = K + 1 + s as u64;
                if let Some(lag) = lag {
                    known_from.insert(id, id + lag);
                }
                let complete = |c: u64| known_from.get(&c).is_some_and(|from| *from <= id);
                let records: Vec<(u8, i64)> =
                    records.iter().map(|(k, t)| (*k, t + 8 * s as i64)).collect();
                w.apply(0, &batch(&records, j, m));
                if let Some(max) = round {
                    let _ = w.round(groups, *max);
                }
                let whole = w.snapshot(groups);
                let (bytes, base) = w.checkpoint(id, groups, complete);
                prop_assert!(base == 0 || complete(base), "builds only on a known complete one");
                stored.insert(id, (bytes, base));
                let (links, seeded) = seeded_chain(&stored, id);
                let mut from_chain = make();
                from_chain
                    .restore_chain(if seeded { &seed } else { &[] }, &links, None)
                    .unwrap();
                let mut from_whole = make();
                from_whole.restore(&whole).unwrap();
                prop_assert!(from_chain.same_state(&from_chain.snapshot(ALL), &from_whole.snapshot(ALL)));
                let later: Vec<(u8, i64)> = after.iter().map(|(k, t)| (*k, t + 8 * id as i64)).collect();
                let later = batch(&later, j, m);
                prop_assert_eq!(outputs(&from_chain.apply(0, &later)), outputs(&from_whole.apply(0, &later)));
                prop_assert_eq!(outputs(&from_chain.flush()), outputs(&from_whole.flush()));
            }
        }
    }
}

#[test]
fn a_successor_builds_its_first_increment_on_its_seed() {
    let mut pred = Window::new(WindowKind::Count, 1_000, 1, 3);
    pred.apply(0, &many(2_000));
    let seed = pred.snapshot(ALL);
    let half = KeyGroupRange::for_pe(0, 2);
    let mut w = Window::new(WindowKind::Count, 1_000, 1, 3);
    w.restore_groups(&seed, Some(half)).unwrap();
    w.take_over(half);
    w.seed(K, seed.len() as u64);
    w.apply(0, &batch(&[(1, 2), (2, 3), (3, 4)], 0, 2));
    // The switch is not known complete yet: whole.
    let (whole, base) = w.clone().checkpoint(K + 1, half, upto(K - 1));
    assert_eq!(base, 0);
    let (inc, base) = w.checkpoint(K + 1, half, upto(K));
    assert_eq!(base, K);
    assert!(inc.len() * 10 < whole.len(), "an increment, not the state");
    let mut restored = Window::new(WindowKind::Count, 1_000, 1, 3);
    restored
        .restore_chain(&[(K, &seed[..])], &[(K + 1, &inc[..])], None)
        .unwrap();
    let mut expect = Window::new(WindowKind::Count, 1_000, 1, 3);
    expect.restore(&whole).unwrap();
    assert!(restored.same_state(&restored.snapshot(ALL), &expect.snapshot(ALL)));
    // A seed of another checkpoint, or no increment on it, changes nothing.
    let mut target = Window::new(WindowKind::Count, 1_000, 1, 3);
    let other = target.restore_chain(&[(K - 1, &seed[..])], &[(K + 1, &inc[..])], None);
    assert!(
        matches!(other, Err(StateError::Mismatch(m)) if m.contains("builds on checkpoint 100, not on 99"))
    );
    assert!(target.restore_chain(&[(K, &seed[..])], &[], None).is_err());
    assert!(target.same_state(
        &target.snapshot(ALL),
        &Window::new(WindowKind::Count, 1_000, 1, 3).snapshot(ALL)
    ));
}

#[test]
fn a_small_state_changed_whole_every_interval_keeps_its_delta_and_its_increments_restore() {
    // 100,000 keys, each changed in every interval: two epochs list 200,000 slots,
    // past the open slots and the slack, while each epoch alone lists 100,000.
    const N: u32 = 100_000;
    let mut w = Window::new(WindowKind::Count, 1_000, 1, 3);
    w.apply(0, &many(N));
    let mut stored = Stored::new();
    let (whole1, base) = w.checkpoint(1, ALL, upto(0));
    assert_eq!(base, 0);
    stored.insert(1, (whole1, 0));
    w.apply(0, &many(N));
    let (inc2, base) = w.checkpoint(2, ALL, upto(1));
    assert_eq!(base, 1);
    stored.insert(2, (inc2, base));
    // 2's completion has not reached the PE: the list holds both epochs, and outgrows.
    w.apply(0, &many(N));
    assert_eq!(
        w.delta_base(),
        Some(2),
        "the delta since 2 is still tracked"
    );
    assert_eq!(w.pending(), N as usize, "every slot listed once since 2");
    let delta = w.delta(ALL).expect("a delta since 2");
    let whole3 = w.snapshot(ALL);
    // What an upgrade's successor does with it: the snapshot at 2 (its chain), then the
    // delta, gives the state now.
    let mut successor = Window::new(WindowKind::Count, 1_000, 1, 3);
    successor
        .restore_chain(&[], &chain(&stored, 2), None)
        .unwrap();
    successor.apply_deltas(&[&delta[..]], Some(ALL)).unwrap();
    successor.take_over_progress(ALL);
    let mut moved = Window::new(WindowKind::Count, 1_000, 1, 3);
    moved.restore_groups(&whole3, Some(ALL)).unwrap();
    moved.take_over(ALL);
    assert!(successor.same_state(&successor.snapshot(ALL), &moved.snapshot(ALL)));
    // The changes before 2 are gone: 3 builds on 2 once it is complete, and
    // restores exactly; had 2 not been complete, 3 would be whole.
    let mut not_known = w.clone();
    assert_eq!(not_known.checkpoint(3, ALL, upto(1)).1, 0);
    let (inc3, base) = w.checkpoint(3, ALL, upto(2));
    assert_eq!(base, 2);
    stored.insert(3, (inc3, base));
    let mut restored = Window::new(WindowKind::Count, 1_000, 1, 3);
    restored
        .restore_chain(&[], &chain(&stored, 3), None)
        .unwrap();
    let mut expect = Window::new(WindowKind::Count, 1_000, 1, 3);
    expect.restore(&whole3).unwrap();
    assert!(restored.same_state(&restored.snapshot(ALL), &expect.snapshot(ALL)));
    // Every key at 3 records.
    let mut counted = Window::new(WindowKind::Count, 1_000, 1, 3);
    for _ in 0..3 {
        counted.apply(0, &many(N));
    }
    let mut recounted = Window::new(WindowKind::Count, 1_000, 1, 3);
    recounted.restore(&counted.snapshot(ALL)).unwrap();
    assert!(restored.same_state(&restored.snapshot(ALL), &recounted.snapshot(ALL)));
}
