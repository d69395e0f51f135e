//! Pre-copy + delta gives exactly what restoring the barrier's whole snapshots gives
//! (state and every later output), for any split of records around the two points,
//! any rescale, and predecessors whose event time has advanced differently.

use super::test_records::{batch, outputs, ALL};
use super::*;
use crate::ops::StateError;
use proptest::prelude::*;
use weir_common::keygroup::KeyGroupRange;

fn records() -> impl Strategy<Value = Vec<(u8, i64)>> {
    prop::collection::vec((0u8..40, 0i64..60), 0..120)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    #[test]
    fn precopy_and_delta_equal_the_whole_snapshot_at_the_barrier(
        before in records(),
        between in records(),
        after in records(),
        // How far each predecessor's time has gone, so they close windows apart.
        skew in prop::collection::vec(0i64..40, 2),
        old_n in 1u32..3,
        new_n in 1u32..4,
        hop in any::<bool>(),
        // Rounds shipped while the records between arrive: after how many records
        // each, and how many slots at most.
        rounds in prop::collection::vec((1usize..40, 1usize..20), 0..5),
    ) {
        let make = || if hop {
            Window::hopping(WindowKind::Count, 20, 5, 1, 3)
        } else {
            Window::new(WindowKind::Count, 10, 1, 3)
        };
        let shift = |rs: &[(u8, i64)], i: u32, base: i64| -> Vec<(u8, i64)> {
            rs.iter().map(|(k, t)| (*k, base + t + skew[i as usize])).collect()
        };
        let mut old: Vec<Window> = (0..old_n).map(|_| make()).collect();
        let (mut base_snaps, mut deltas, mut whole) = (vec![], vec![], vec![]);
        let mut shipped: Vec<Vec<Vec<u8>>> = vec![];
        for (i, w) in old.iter_mut().enumerate() {
            let i = i as u32;
            let groups = KeyGroupRange::for_pe(i, old_n);
            w.apply(0, &batch(&shift(&before, i, 0), i, old_n));
            base_snaps.push(w.snapshot(groups));
            w.mark(7);
            let mut mine = vec![];
            let mut rest = &shift(&between, i, 50)[..];
            for (after, max) in &rounds {
                let (now, later) = rest.split_at((*after).min(rest.len()));
                w.apply(0, &batch(now, i, old_n));
                mine.extend(w.round(groups, *max));
                rest = later;
            }
            w.apply(0, &batch(rest, i, old_n));
            shipped.push(mine);
            prop_assert_eq!(w.delta_base(), Some(7));
            deltas.push(w.delta(groups).unwrap());
            whole.push(w.snapshot(groups));
        }
        for j in 0..new_n {
            let groups = KeyGroupRange::for_pe(j, new_n);
            let preds: Vec<usize> = (0..old_n)
                .filter(|i| KeyGroupRange::for_pe(*i, old_n).overlaps(&groups))
                .map(|i| i as usize)
                .collect();
            // As the kernel does for a pre-copy: one piece at a time, each taken over.
            let mut copied = make();
            for &i in &preds {
                copied.restore_groups(&base_snaps[i], Some(groups)).unwrap();
                copied.take_over(groups);
            }
            for &i in &preds {
                for r in &shipped[i] {
                    copied.apply_round(r, Some(groups)).unwrap();
                }
            }
            let ds: Vec<&[u8]> = preds.iter().map(|&i| &deltas[i][..]).collect();
            copied.apply_deltas(&ds, Some(groups)).unwrap();
            // As the kernel does: every slot came in through reads keeping `groups`.
            copied.take_over_progress(groups);
            let mut moved = make();
            for &i in &preds {
                moved.restore_groups(&whole[i], Some(groups)).unwrap();
            }
            moved.take_over(groups);
            prop_assert!(copied.same_state(&copied.snapshot(ALL), &moved.snapshot(ALL)));
            // And they go on alike.
            let later = batch(&shift(&after, 0, 120), j, new_n);
            prop_assert_eq!(outputs(&copied.apply(0, &later)), outputs(&moved.apply(0, &later)));
            prop_assert_eq!(outputs(&copied.flush()), outputs(&moved.flush()));
        }
    }
}

#[test]
fn no_delta_before_a_full_snapshot_or_when_most_of_the_state_changed() {
    let mut w = Window::new(WindowKind::Count, 1_000_000, 1, 3);
    assert_eq!(w.delta(ALL), None);
    w.mark(1);
    assert_eq!(w.delta_base(), Some(1));
    // Every record a new key: the list outgrows the open slots by the slack.
    let mut b = BatchBuilder::default();
    for k in 0..(3 * (1 << 16) + 10) {
        b.push(9, 0, 5, format!("k{k}").as_bytes(), std::iter::empty())
            .unwrap();
    }
    w.apply(0, &b.finish());
    assert_eq!(
        w.delta_base(),
        Some(1),
        "as many changes as slots: still tracked"
    );
    assert!(w.delta(ALL).is_some());
}

#[test]
fn a_delta_that_does_not_read_changes_nothing() {
    let mut w = Window::new(WindowKind::Count, 10, 1, 3);
    w.apply(0, &batch(&[(1, 1), (2, 3)], 0, 1));
    let before = w.snapshot(ALL);
    let other = Window::new(WindowKind::Count, 20, 1, 3).snapshot(ALL);
    assert!(matches!(
        w.apply_deltas(&[&before[..], &other[..]], None),
        Err(StateError::Mismatch(_))
    ));
    assert!(w.apply_deltas(&[&before[..5]], None).is_err());
    assert!(w.same_state(&w.snapshot(ALL), &before));
}
