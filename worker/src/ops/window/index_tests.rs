//! Whole snapshots indexed by key group (`state.rs`): a filtered read keeps exactly
//! what a full read would have kept, and a broken index is an error that changes
//! nothing.

use super::state::{INDEXED, INDEX_FROM, KIND_BYTE_AT as KIND_AT};
use super::test_records::ALL;
use super::*;
use crate::ops::StateError;
use weir_common::keygroup::{key_group, KeyGroupRange};

/// A window holding `keys` keys in one open window, every other one counted twice.
fn window_of(keys: u32, kind: WindowKind) -> Window {
    let mut w = Window::new(kind, 1_000, 1, 3);
    let mut b = BatchBuilder::default();
    for k in 0..keys {
        let key = format!("key-{k:08}");
        for t in [5, 6].into_iter().take(1 + (k % 2) as usize) {
            let v = [("v", Value::I64(i64::from(k)))];
            b.push(9, 0, t, key.as_bytes(), v.iter().map(|(n, v)| (*n, v)))
                .unwrap();
        }
    }
    w.apply(0, &b.finish());
    w
}

/// A large state: indexed.
fn large(kind: WindowKind) -> (Window, Vec<u8>) {
    let w = window_of(20_000, kind);
    let s = w.snapshot(ALL);
    assert!(s.len() > INDEX_FROM, "{} bytes", s.len());
    assert_eq!(s[KIND_AT] & INDEXED, INDEXED);
    (w, s)
}

#[test]
fn a_filtered_read_of_an_indexed_snapshot_keeps_what_a_full_read_would() {
    for kind in [
        WindowKind::Count,
        WindowKind::Sum {
            field: "v".to_string(),
        },
    ] {
        let (w, s) = large(kind);
        let all = w.read(&s, None).unwrap();
        assert_eq!(all.entries.len(), 20_000);
        let ranges = [
            KeyGroupRange::for_pe(0, 3),
            KeyGroupRange::for_pe(1, 3),
            KeyGroupRange::for_pe(2, 3),
            KeyGroupRange { start: 7, end: 8 },
            KeyGroupRange { start: 0, end: 0 },
            ALL,
        ];
        for keep in ranges {
            let mut expect = w.read(&s, None).unwrap();
            expect
                .entries
                .retain(|(_, _, k, _)| keep.contains(key_group(k.as_slice())));
            let got = w.read(&s, Some(keep)).unwrap();
            assert_eq!(keep.start == keep.end, got.entries.is_empty(), "{keep:?}");
            assert_eq!(got.sorted(), expect.sorted(), "{keep:?}");
        }
        // Restored, the kept state is the one a snapshot of those groups holds.
        let keep = KeyGroupRange::for_pe(1, 3);
        let mut a = w.cleared();
        a.restore_groups(&s, Some(keep)).unwrap();
        let mut b = w.cleared();
        b.restore(&w.snapshot(keep)).unwrap();
        assert!(a.same_state(&a.snapshot(keep), &b.snapshot(keep)));
    }
}

#[test]
fn small_snapshots_are_not_indexed_and_read_the_same() {
    let w = window_of(100, WindowKind::Count);
    let s = w.snapshot(ALL);
    assert_eq!(s[KIND_AT] & INDEXED, 0);
    let keep = KeyGroupRange::for_pe(0, 2);
    let got = w.read(&s, Some(keep)).unwrap();
    assert!(!got.entries.is_empty());
    assert!(got
        .entries
        .iter()
        .all(|(_, _, k, _)| keep.contains(key_group(k.as_slice()))));
}

/// Where the index starts in a snapshot of `w` (no floors, one input).
fn index_at(w: &Window, s: &[u8]) -> usize {
    // version, kind, kind byte, size, groups, emitted, closed_upto (opt), inputs
    // (count + progress), floors (count), entry count.
    let closed = if w.closed_upto.is_some() { 9 } else { 1 };
    let progress = match w.inputs[0] {
        Progress::At(_) => 9,
        _ => 1,
    };
    let at = 3 + 8 + 8 + 8 + closed + 8 + progress + 8 + 8;
    assert_eq!(
        s[at - 8..at],
        (w.read(s, None).unwrap().entries.len() as u64).to_le_bytes()
    );
    at
}

#[test]
fn a_broken_index_is_an_error_and_changes_nothing() {
    let (w, s) = large(WindowKind::Count);
    let at = index_at(&w, &s);
    let mut target = window_of(10, WindowKind::Count);
    let before = target.snapshot(ALL);
    let u64_at = |b: &[u8], i: usize| u64::from_le_bytes(b[i..i + 8].try_into().unwrap());
    let set = |b: &mut Vec<u8>, i: usize, v: u64| b[i..i + 8].copy_from_slice(&v.to_le_bytes());
    // Group 0's count one more (the counts no longer add up), its bytes one more or
    // one less (its section ends elsewhere), or its bytes past the end (skipped by a
    // reader keeping other groups).
    let mut broken = vec![];
    let mut b = s.clone();
    set(&mut b, at, u64_at(&s, at) + 1);
    broken.push(b);
    for delta in [1i64, -1] {
        let mut b = s.clone();
        set(
            &mut b,
            at + 8,
            u64_at(&s, at + 8).wrapping_add_signed(delta),
        );
        broken.push(b);
    }
    let mut b = s.clone();
    set(&mut b, at + 8, u64::MAX);
    broken.push(b);
    // Cut short.
    broken.push(s[..s.len() - 1].to_vec());
    broken.push(s[..at + 100].to_vec());
    // Two groups' sections swapped in the index: entries in the wrong section. Only a
    // read of both sections can tell (a filtered read checks what it reads; what it
    // skips is checksummed where it is stored).
    let (g0, g1) = (s[at..at + 16].to_vec(), s[at + 16..at + 32].to_vec());
    assert_ne!(g0, g1);
    let mut swapped = s.clone();
    swapped[at..at + 16].copy_from_slice(&g1);
    swapped[at + 16..at + 32].copy_from_slice(&g0);
    let cases = broken
        .iter()
        .flat_map(|b| [(b, None), (b, Some(KeyGroupRange { start: 1, end: 256 }))])
        .chain([(&swapped, None)]);
    for (i, (b, keep)) in cases.enumerate() {
        let e = target.restore_groups(b, keep);
        assert!(
            matches!(
                e,
                Err(StateError::Invalid { .. } | StateError::Truncated(_))
            ),
            "case {i}, keep {keep:?}: {e:?}"
        );
        assert!(target.same_state(&target.snapshot(ALL), &before));
    }
    // The snapshot itself restores, and merges into the state there (its 10 keys are
    // among the snapshot's).
    target.restore(&s).unwrap();
    assert_eq!(
        target
            .read(&target.snapshot(ALL), None)
            .unwrap()
            .entries
            .len(),
        20_000
    );
}
