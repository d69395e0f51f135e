use super::*;
use weir_common::record::BatchBuilder;

fn batch(origins: &[(u32, u64)]) -> Batch {
    let mut b = BatchBuilder::default();
    for (source, seq) in origins {
        b.push(*source, *seq, 0, b"k", []).unwrap();
    }
    b.finish()
}

#[test]
fn duplicates_and_gaps_are_exact() {
    let mut v = Verify::new(Some(6));
    v.apply(&batch(&[(0, 0), (0, 1), (0, 2), (0, 2), (3, 4)]));
    v.apply(&batch(&[(0, 5), (0, 5), (0, 9), (0, 5)]));
    let r = v.report();
    assert_eq!(
        r,
        VerifyReport {
            records: 9,
            distinct: 6,
            duplicates: 3,
            expected: Some(6),
            complete: true,
            sources: vec![
                SourceReport {
                    source: 0,
                    distinct: 5,
                    duplicates: 3,
                    max_seq: Some(9),
                    missing_below_max: 5,
                    missing_settled: 0
                },
                SourceReport {
                    source: 3,
                    distinct: 1,
                    duplicates: 0,
                    max_seq: Some(4),
                    missing_below_max: 4,
                    missing_settled: 0
                },
            ],
        }
    );
    let json = serde_json::to_string(&r).unwrap();
    assert_eq!(serde_json::from_str::<VerifyReport>(&json).unwrap(), r);
    assert!(!Verify::new(Some(7)).report().complete && !Verify::new(None).report().complete);
}

#[test]
fn seqs_across_chunks_and_at_the_extremes() {
    let mut v = Verify::new(None);
    let seqs = [
        0,
        CHUNK_BITS - 1,
        CHUNK_BITS,
        3 * CHUNK_BITS + 17,
        u64::MAX,
        u64::MAX,
    ];
    v.apply(&batch(&seqs.map(|s| (1, s))));
    let s = &v.report().sources[0];
    assert_eq!(
        (s.distinct, s.duplicates, s.max_seq),
        (5, 1, Some(u64::MAX))
    );
    assert_eq!(s.missing_below_max, u64::MAX - 4);
    assert!(v.state_bytes() < 5 * 9_000, "one chunk per region touched");
}

#[test]
fn a_million_records_cost_well_under_a_megabyte() {
    let mut v = Verify::new(Some(1_000_000));
    for start in (0..1_000_000u64).step_by(10_000) {
        let origins: Vec<_> = (start..start + 10_000).map(|s| (7, s)).collect();
        v.apply(&batch(&origins));
    }
    let r = v.report();
    assert!(r.complete && r.duplicates == 0 && r.sources[0].missing_below_max == 0);
    assert!(v.state_bytes() < 200_000, "{} bytes", v.state_bytes());
    assert!(v.state_bytes() >= 1_000_000 / 8);
}

#[test]
fn snapshots_merge_into_the_same_report() {
    let stream: Vec<_> = (0..3u32)
        .flat_map(|s| (0..100_000u64).step_by(3).map(move |q| (s, q)))
        .collect();
    let (left, right) = stream.split_at(stream.len() / 2);
    // The halves overlap by 500 records: exactly those become duplicates.
    let right = [&left[left.len() - 500..], right].concat();
    let (mut a, mut b, mut whole) = (
        Verify::new(Some(5)),
        Verify::new(None),
        Verify::new(Some(5)),
    );
    a.apply(&batch(left));
    a.apply(&batch(&left[..10]));
    b.apply(&batch(&right));
    whole.apply(&batch(left));
    whole.apply(&batch(&left[..10]));
    whole.apply(&batch(&right));
    let mut merged = Verify::new(Some(5));
    merged.restore(&a.snapshot()).unwrap();
    merged.restore(&b.snapshot()).unwrap();
    assert_eq!(merged.report(), whole.report());
    assert_eq!(merged.report().duplicates, 510);
}

#[test]
fn malformed_snapshots_are_errors_and_change_nothing() {
    let mut v = Verify::new(None);
    v.apply(&batch(&[(1, 1), (2, 70_000)]));
    let snap = v.snapshot();
    let mut target = Verify::new(None);
    for cut in 0..snap.len() {
        assert!(target.restore(&snap[..cut]).is_err(), "truncated at {cut}");
    }
    for bad in [
        &b"garbage"[..],
        &[1, b'V', 255, 255, 255, 255, 255, 255, 255, 255],
        &[2, b'V', 0, 0, 0, 0, 0, 0, 0, 0],
    ] {
        assert!(target.restore(bad).is_err(), "{bad:?}");
    }
    let mut twice = snap.clone();
    twice.extend_from_slice(&snap[2..]);
    assert!(target.restore(&twice).is_err());
    assert_eq!(target.report().records, 0);
    target.restore(&snap).unwrap();
    assert_eq!(target.report(), v.report());
}

#[test]
fn missing_up_to_a_mark_counts_only_gaps_at_or_below_it() {
    let mut s = Seen::default();
    for seq in (0..10).filter(|q| *q != 3 && *q != 7) {
        s.insert(seq);
    }
    assert_eq!(s.missing_upto(2), 0);
    assert_eq!(s.missing_upto(5), 1);
    assert_eq!(s.missing_upto(9), 2);
    // Across a chunk boundary: everything of chunk 0 but seq 3 and 7, one seq past it.
    for seq in 10..CHUNK_BITS {
        s.insert(seq);
    }
    s.insert(CHUNK_BITS + 1);
    assert_eq!(s.missing_upto(CHUNK_BITS - 1), 2);
    assert_eq!(s.missing_upto(CHUNK_BITS + 1), 3);
    assert_eq!(s.missing_upto(CHUNK_BITS + 64 + 5), 3 + 64 + 4);
}
