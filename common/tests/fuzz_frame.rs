//! Fuzzing the binary codecs with proptest (docs/security.md#fuzzing): the frames of
//! a worker-to-worker link ([`Frame::decode`]) and the two batch layouts inside them
//! and on a PE's pipes ([`Batch::from_bytes`], [`Batch::from_rows`]). Arbitrary
//! bytes, valid encodings cut short or mutated, absurd length prefixes: each must
//! decode, wait for more bytes, or fail with an error; never panic, and never
//! allocate far beyond the bytes actually received (a counting allocator checks).
//!
//! Cases per property: `PROPTEST_CASES` (default a few seconds' worth in a debug
//! build); `PROPTEST_CASES=200000 cargo test -p weir-common --test fuzz_frame` runs
//! long.

use bytes::{Bytes, BytesMut};
use proptest::prelude::*;
use weir_common::frame::{Frame, FrameError, MAX_FRAME};
use weir_common::record::{Batch, BatchBuilder, Value};

#[path = "support/fuzz.rs"]
mod fuzz;
use fuzz::{cases, largest_allocation, mutate};

#[global_allocator]
static ALLOCATOR: fuzz::Counting = fuzz::Counting;

/// What decoding `input` may allocate at most at once: a small constant plus a few
/// times the input (decoded values are copied out, column tables built), never what
/// a length field announces.
fn allowed(input: usize) -> usize {
    (64 << 10) + 16 * input
}

fn value() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::I64),
        // Finite, so that a decoded batch compares equal to what was encoded.
        (-1e300f64..1e300).prop_map(Value::F64),
        "\\PC{0,12}".prop_map(Value::Str),
        proptest::collection::vec(any::<u8>(), 0..16).prop_map(Value::Bytes),
    ]
}

type Rec = (u32, u64, i64, Vec<u8>, Vec<(String, Value)>);

fn batch() -> impl Strategy<Value = Batch> {
    let field = (
        prop::sample::select(vec!["a", "b", "page", "n", "é"]),
        value(),
    );
    let rec = (
        any::<u32>(),
        any::<u64>(),
        any::<i64>(),
        proptest::collection::vec(any::<u8>(), 0..8),
        proptest::collection::vec(field, 0..4).prop_map(|fields| {
            // One value per name: a record's fields are a map.
            let mut seen = std::collections::BTreeSet::new();
            fields
                .into_iter()
                .filter(|(n, _)| seen.insert(*n))
                .map(|(n, v)| (n.to_string(), v))
                .collect::<Vec<_>>()
        }),
    );
    proptest::collection::vec(rec, 0..6).prop_map(|recs: Vec<Rec>| {
        let mut b = BatchBuilder::default();
        for (source, seq, t, key, fields) in &recs {
            b.push(
                *source,
                *seq,
                *t,
                key,
                fields.iter().map(|(n, v)| (n.as_str(), v)),
            )
            .unwrap();
        }
        b.finish()
    })
}

fn frame() -> impl Strategy<Value = Frame> {
    prop_oneof![
        (any::<u32>(), "\\PC{0,10}", "\\PC{0,10}", any::<u64>()).prop_map(
            |(channel, from_pe, to_pe, resume_after)| Frame::Open {
                channel,
                from_pe,
                to_pe,
                resume_after
            }
        ),
        (any::<u32>(), any::<u64>(), batch()).prop_map(|(channel, seq, batch)| Frame::Data {
            channel,
            seq,
            batch
        }),
        (any::<u32>(), any::<u64>(), any::<u64>()).prop_map(|(channel, seq, barrier_id)| {
            Frame::Barrier {
                channel,
                seq,
                barrier_id,
            }
        }),
        (any::<u32>(), any::<u64>()).prop_map(|(channel, seq)| Frame::Ack { channel, seq }),
        (any::<u32>(), any::<u32>())
            .prop_map(|(channel, credits)| Frame::Credit { channel, credits }),
        (any::<u32>(), any::<u64>()).prop_map(|(channel, seq)| Frame::End { channel, seq }),
    ]
}

/// Reads every record and field of `b`, as a consumer would: a batch that decoded
/// must be readable throughout. Then checks both layouts round-trip.
fn read_all(b: &Batch) {
    let mut fields = 0usize;
    for r in b.iter() {
        for (_, v) in r.fields() {
            let _ = v.as_f64();
            let _ = v.to_json();
            fields += 1;
        }
        let _ = r.raw_fields().count();
    }
    for name in ["a", "page", "n", ""] {
        let reader = b.field_reader(name);
        if let Some(numbers) = reader.numbers() {
            let _ = numbers.count();
        }
    }
    let again = Batch::from_bytes(b.to_bytes()).expect("a decoded batch re-encodes");
    assert_eq!(canonical(&again), canonical(b));
    let mut rows = Vec::new();
    b.encode_rows(&mut rows);
    let again = Batch::from_rows(&rows).expect("rows re-encode");
    assert_eq!(canonical(&again), canonical(b));
    let _ = fields;
}

/// A record's header, then its fields as (name, value in words), sorted.
type Canonical = (u32, u64, i64, Vec<u8>, Vec<(String, String)>);

/// The records of `b` as maps: a record's fields in name order, values in words (so
/// that a NaN decoded from arbitrary bytes equals itself). Field order within a record
/// is the batch's column order, which the row layout does not carry: a columnar
/// batch whose columns are not in first-use order reads back from rows in that order.
fn canonical(b: &Batch) -> Vec<Canonical> {
    b.iter()
        .map(|r| {
            let mut fields: Vec<(String, String)> = r
                .fields()
                .map(|(n, v)| (n.to_string(), format!("{v:?}")))
                .collect();
            fields.sort();
            (r.source, r.seq, r.event_time_ms, r.key.to_vec(), fields)
        })
        .collect()
}

/// Decodes frames off `bytes` until it needs more or fails, as a link reader does.
/// Returns how many frames it read.
fn drain(bytes: &[u8]) -> usize {
    let mut buf = BytesMut::from(bytes);
    let mut frames = 0;
    loop {
        match Frame::decode(&mut buf) {
            Ok(Some(f)) => {
                frames += 1;
                if let Frame::Data { batch, .. } = &f {
                    read_all(batch);
                }
                // What decoded encodes back to itself.
                let mut out = BytesMut::new();
                f.encode(&mut out);
                assert_eq!(Frame::decode(&mut out), Ok(Some(f)));
            }
            Ok(None) | Err(_) => return frames,
        }
    }
}

#[test]
fn absurd_lengths_are_refused_before_the_body_arrives() {
    for len in [0u32, 1, 4, MAX_FRAME as u32 + 1, u32::MAX] {
        let mut buf = BytesMut::from(&len.to_le_bytes()[..]);
        let (r, largest) = largest_allocation(|| Frame::decode(&mut buf));
        assert_eq!(r, Err(FrameError::BadLength(len as usize)));
        assert!(
            largest < 1024,
            "{largest} bytes allocated for a {len} prefix"
        );
    }
    // A plausible length waits for its body without reserving it.
    let mut buf = BytesMut::from(&(MAX_FRAME as u32).to_le_bytes()[..]);
    let (r, largest) = largest_allocation(|| Frame::decode(&mut buf));
    assert_eq!(r, Ok(None));
    assert!(largest < 1024, "{largest}");
}

#[test]
fn columns_out_of_first_use_order_read_back_from_rows_as_the_same_records() {
    // Found by `mutated_batches_never_panic` (100,000 cases): columns [b, a] where
    // record 0 has only `a` read back from the row layout as columns [a, b]. The same
    // records, in another field order: compared as maps.
    // Columnar layout, two records, columns `b` (record 1 only) then `a` (both).
    let mut bytes = Vec::new();
    bytes.extend_from_slice(&2u32.to_le_bytes());
    bytes.extend_from_slice(&2u16.to_le_bytes());
    bytes.extend_from_slice(&[0; 2 * 4 + 2 * 8 + 2 * 8]); // sources, seqs, times
    bytes.extend_from_slice(&[0; 3 * 4]); // empty keys
    let u32s = |v: &[u32]| v.iter().flat_map(|o| o.to_le_bytes()).collect::<Vec<u8>>();
    bytes.extend_from_slice(&[1, b'b', 0xff, 2]);
    bytes.extend_from_slice(&u32s(&[0, 0, 8]));
    bytes.extend_from_slice(&8i64.to_le_bytes());
    bytes.extend_from_slice(&[1, b'a', 2, 2]);
    bytes.extend_from_slice(&u32s(&[0, 8, 16]));
    bytes.extend_from_slice(&7i64.to_le_bytes());
    bytes.extend_from_slice(&9i64.to_le_bytes());
    let b = Batch::from_bytes(Bytes::from(bytes)).unwrap();
    let names: Vec<_> = b.record(1).fields().map(|(n, _)| n).collect();
    assert_eq!(names, ["b", "a"]);
    read_all(&b);
}

#[test]
fn a_batch_header_announcing_many_columns_allocates_nothing_for_them() {
    // Found by `arbitrary_batches_never_panic_nor_overallocate`: six bytes (no records,
    // 65,535 columns) made the decoder reserve a table for every announced column
    // (about 7 MB) before finding there were none.
    let header = [0, 0, 0, 0, 0xff, 0xff, 0, 0, 0, 0];
    let (r, largest) = largest_allocation(|| Batch::from_bytes(Bytes::copy_from_slice(&header)));
    assert!(r.is_err());
    assert!(largest <= allowed(header.len()), "{largest}");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases(4000)))]

    #[test]
    fn arbitrary_bytes_are_frames_or_errors(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let (_, largest) = largest_allocation(|| drain(&bytes));
        prop_assert!(largest <= allowed(bytes.len()), "{} for {} bytes", largest, bytes.len());
    }

    #[test]
    fn frames_round_trip_and_wait_when_cut_short(f in frame()) {
        let mut out = BytesMut::new();
        f.encode(&mut out);
        let whole = out.to_vec();
        // Every strict prefix is a frame under way: wait, no error, nothing consumed.
        for cut in 0..whole.len() {
            let mut part = BytesMut::from(&whole[..cut]);
            prop_assert_eq!(Frame::decode(&mut part), Ok(None));
            prop_assert_eq!(part.len(), cut);
        }
        let mut all = BytesMut::from(&whole[..]);
        prop_assert_eq!(Frame::decode(&mut all), Ok(Some(f)));
        prop_assert!(all.is_empty());
    }

    #[test]
    fn mutated_frames_never_panic(
        fs in proptest::collection::vec(frame(), 1..4),
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>(), any::<u8>()), 1..6),
    ) {
        let mut out = BytesMut::new();
        for f in &fs {
            f.encode(&mut out);
        }
        let mut bytes = out.to_vec();
        mutate(&mut bytes, &edits);
        let (_, largest) = largest_allocation(|| drain(&bytes));
        prop_assert!(largest <= allowed(bytes.len()), "{} for {} bytes", largest, bytes.len());
    }

    #[test]
    fn arbitrary_batches_never_panic_nor_overallocate(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        let (cols, largest) = largest_allocation(|| Batch::from_bytes(Bytes::copy_from_slice(&bytes)).map(|b| read_all(&b)));
        let _ = cols;
        prop_assert!(largest <= allowed(bytes.len()), "{} for {:?}", largest, bytes);
        let (_, largest) = largest_allocation(|| Batch::from_rows(&bytes).map(|b| read_all(&b)));
        prop_assert!(largest <= allowed(bytes.len()), "{} for {:?}", largest, bytes);
    }

    #[test]
    fn mutated_batches_never_panic(
        b in batch(),
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>(), any::<u8>()), 1..6),
    ) {
        let mut bytes = b.to_bytes().to_vec();
        mutate(&mut bytes, &edits);
        let (_, largest) = largest_allocation(|| Batch::from_bytes(Bytes::copy_from_slice(&bytes)).map(|b| read_all(&b)));
        prop_assert!(largest <= allowed(bytes.len()), "{} for {:?}", largest, bytes);
        let mut rows = Vec::new();
        b.encode_rows(&mut rows);
        mutate(&mut rows, &edits);
        let (_, largest) = largest_allocation(|| Batch::from_rows(&rows).map(|b| read_all(&b)));
        prop_assert!(largest <= allowed(rows.len()), "{} for {:?}", largest, rows);
    }
}
