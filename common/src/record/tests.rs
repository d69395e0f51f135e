use super::*;

fn sample() -> Batch {
    let mut b = BatchBuilder::default();
    for i in 0..100u64 {
        let fields = [
            ("id", Value::I64(i as i64)),
            ("page", Value::Str(format!("/page/{}", i % 7))),
            ("score", Value::F64(i as f64 / 3.0)),
            ("ok", Value::Bool(i % 2 == 0)),
            ("payload", Value::Bytes(vec![b'x'; 100])),
            ("none", Value::Null),
        ];
        b.push(
            3,
            i,
            1_700_000_000_000 + i as i64,
            format!("k{}", i % 10).as_bytes(),
            fields.iter().map(|(n, v)| (*n, v)),
        )
        .unwrap();
    }
    b.finish()
}

#[test]
fn batches_round_trip_every_value_kind() {
    let batch = sample();
    assert_eq!(batch.len(), 100);
    for (i, r) in batch.iter().enumerate() {
        assert_eq!(
            (r.source, r.seq, r.event_time_ms),
            (3, i as u64, 1_700_000_000_000 + i as i64)
        );
        assert_eq!(r.key, format!("k{}", i % 10).as_bytes());
        assert_eq!(r.field("id"), Some(Value::I64(i as i64)));
        assert_eq!(
            r.field("page"),
            Some(Value::Str(format!("/page/{}", i % 7)))
        );
        assert_eq!(r.field("ok"), Some(Value::Bool(i % 2 == 0)));
        assert_eq!(r.field("none"), Some(Value::Null));
        assert_eq!(r.field("missing"), None);
        assert_eq!(r.fields().count(), 6);
    }
    // The encoded bytes alone rebuild the same batch, and encode to the same bytes.
    let bytes = batch.to_bytes();
    assert_eq!(bytes.len(), batch.encoded_len());
    let again = Batch::from_bytes(bytes.clone()).unwrap();
    assert_eq!(again, batch);
    assert_eq!(again.to_bytes(), bytes);
    // So does the row layout that exec PEs speak.
    let mut rows = Vec::new();
    batch.encode_rows(&mut rows);
    assert_eq!(Batch::from_rows(&rows).unwrap(), batch);
}

#[test]
fn raw_fields_print_as_their_decoded_values_do() {
    let mut b = BatchBuilder::default();
    let odd = Value::Bytes(vec![b'a', 0xFF, b'b']);
    b.push(0, 0, 0, b"", [("odd", &odd), ("f", &Value::F64(-0.5))])
        .unwrap();
    let batch = b.finish();
    for r in sample().iter().take(3).chain(batch.iter()) {
        for f in r.raw_fields() {
            assert_eq!(f.to_string(), f.decode().to_string(), "{}", f.name);
        }
    }
}

#[test]
fn new_keys_are_written_and_everything_else_is_shared() {
    let batch = sample();
    let rekeyed = batch
        .with_keys(|row, out| out.extend_from_slice(format!("row-{row}").as_bytes()))
        .unwrap();
    assert_eq!(rekeyed.len(), batch.len());
    for (row, (a, b)) in batch.iter().zip(rekeyed.iter()).enumerate() {
        assert_eq!(b.key, format!("row-{row}").as_bytes());
        assert_eq!(
            (a.source, a.seq, a.event_time_ms),
            (b.source, b.seq, b.event_time_ms)
        );
        assert!(a.raw_fields().eq(b.raw_fields()));
    }
    assert!(std::sync::Arc::ptr_eq(&batch.cols, &rekeyed.cols));
    assert_eq!(Batch::from_bytes(rekeyed.to_bytes()).unwrap(), rekeyed);
    // Empty keys, and a key one byte over the format's limit.
    let empty = batch.with_keys(|_, _| {}).unwrap();
    assert!(empty.iter().all(|r| r.key.is_empty()));
    let long = batch.with_keys(|row, out| {
        if row == 7 {
            out.extend_from_slice(&vec![b'k'; usize::from(u16::MAX) + 1]);
        }
    });
    assert_eq!(long, Err(BatchError::TooLong("key")));
}

#[test]
fn records_with_different_fields_share_a_batch() {
    // Columns: a, b, then c (first seen in the second record); each record reads back
    // only its own fields, in column order.
    let mut b = BatchBuilder::default();
    let (one, two) = (Value::I64(1), Value::Str("two".into()));
    b.push(0, 0, 0, b"", [("a", &one), ("b", &two)]).unwrap();
    b.push(0, 1, 0, b"", [("c", &one)]).unwrap();
    b.push(0, 2, 0, b"", [("b", &one), ("a", &two)]).unwrap();
    b.push(0, 3, 0, b"", [("a", &one), ("a", &two)]).unwrap();
    b.push(0, 4, 0, b"", []).unwrap();
    let batch = Batch::from_bytes(b.finish().to_bytes()).unwrap();
    let fields = |row: usize| -> Vec<(String, Value)> {
        batch
            .record(row)
            .fields()
            .map(|(n, v)| (n.to_string(), v))
            .collect()
    };
    let f = |n: &str, v: &Value| (n.to_string(), v.clone());
    assert_eq!(fields(0), [f("a", &one), f("b", &two)]);
    assert_eq!(fields(1), [f("c", &one)]);
    assert_eq!(fields(2), [f("a", &two), f("b", &one)]);
    // Two fields of one name: both kept, the first found by name.
    assert_eq!(fields(3), [f("a", &one), f("a", &two)]);
    assert_eq!(batch.record(3).field("a"), Some(one.clone()));
    assert_eq!(fields(4), []);
    assert_eq!(batch.record(1).field("a"), None);
    let a = batch.field_reader("a");
    let got: Vec<Option<Value>> = (0..5).map(|r| a.get(r).map(|f| f.decode())).collect();
    assert_eq!(got, [Some(one.clone()), None, Some(two), Some(one), None]);
    // Rows by a test on a field: over two columns named `a`, and over one (`c`).
    let is_text = |f: Option<RawField<'_>>| matches!(f.map(|f| f.decode()), Some(Value::Str(_)));
    assert_eq!(a.rows_where(5, is_text), [2]);
    assert_eq!(a.rows_where(5, |f| f.is_some()), [0, 2, 3]);
    let c = batch.field_reader("c");
    assert!(!c.is_empty() && batch.field_reader("nowhere").is_empty());
    assert_eq!(c.rows_where(5, |f| f.is_some()), [1]);
    assert_eq!(c.rows_where(5, |f| f.is_none()), [0, 2, 3, 4]);
}

#[test]
fn numeric_columns_read_straight_through_only_when_every_record_has_one_type() {
    let build = |values: &[Option<Value>]| {
        let mut b = BatchBuilder::default();
        for (i, v) in values.iter().enumerate() {
            let fields: Vec<(&str, &Value)> = v.iter().map(|v| ("x", v)).collect();
            b.push(0, i as u64, 0, b"", fields).unwrap();
        }
        Batch::from_bytes(b.finish().to_bytes()).unwrap()
    };
    let numbers = |b: &Batch| b.field_reader("x").numbers().map(|n| n.collect::<Vec<_>>());
    let ints = build(&[Some(Value::I64(-3)), Some(Value::I64(7))]);
    assert_eq!(numbers(&ints), Some(vec![-3.0, 7.0]));
    let floats = build(&[Some(Value::F64(0.5)), Some(Value::F64(f64::INFINITY))]);
    assert_eq!(numbers(&floats), Some(vec![0.5, f64::INFINITY]));
    // Mixed types, an absent field, text, two columns of one name, no column: the
    // record-by-record path.
    assert_eq!(
        numbers(&build(&[Some(Value::I64(1)), Some(Value::F64(1.0))])),
        None
    );
    assert_eq!(numbers(&build(&[Some(Value::I64(1)), None])), None);
    assert_eq!(
        numbers(&build(&[Some(Value::Str("12345678".into()))])),
        None
    );
    let mut b = BatchBuilder::default();
    b.push(0, 0, 0, b"", [("x", &Value::I64(1)), ("x", &Value::I64(2))])
        .unwrap();
    assert_eq!(numbers(&b.finish()), None);
    assert_eq!(ints.field_reader("y").numbers().map(|n| n.count()), None);
}

#[test]
fn batches_from_columns_equal_batches_pushed_record_by_record() {
    let sources = [1u32, 1, 2];
    let seqs = [10u64, 11, 12];
    let times = [5i64, -6, 7];
    let keys: [&[u8]; 3] = [b"a", b"", b"ccc"];
    let ints = [1i64, i64::MIN, 3];
    let floats = [0.5f64, -1.0, f64::INFINITY];
    let texts = ["x", "", "zz"];
    let blobs: [&[u8]; 3] = [b"\x00\xff", b"", b"q"];
    let fields = [
        ("i", ColumnValues::I64(&ints)),
        ("f", ColumnValues::F64(&floats)),
        ("s", ColumnValues::Str(&texts)),
        ("b", ColumnValues::Bytes(&blobs)),
        ("same", ColumnValues::SameBytes(b"pay")),
        ("none", ColumnValues::SameBytes(b"")),
    ];
    let cols = Columns {
        sources: &sources,
        seqs: &seqs,
        times: &times,
        keys: &keys,
        fields: &fields,
    };
    let got = Batch::from_columns(&cols).unwrap();
    let mut want = BatchBuilder::default();
    for r in 0..3 {
        let values = [
            ("i", Value::I64(ints[r])),
            ("f", Value::F64(floats[r])),
            ("s", Value::Str(texts[r].into())),
            ("b", Value::Bytes(blobs[r].to_vec())),
            ("same", Value::Bytes(b"pay".to_vec())),
            ("none", Value::Bytes(vec![])),
        ];
        want.push(
            sources[r],
            seqs[r],
            times[r],
            keys[r],
            values.iter().map(|(n, v)| (*n, v)),
        )
        .unwrap();
    }
    let want = want.finish();
    assert_eq!(got, want);
    assert_eq!(got.to_bytes(), want.to_bytes());
    // A column one short, a key too long, a name too long: refused.
    let short = [("i", ColumnValues::I64(&ints[..2]))];
    assert_eq!(
        Batch::from_columns(&Columns {
            fields: &short,
            ..cols
        }),
        Err(BatchError::Shape {
            columns: 3,
            values: 2
        })
    );
    let long_key = vec![0u8; 70_000];
    let long_keys: [&[u8]; 3] = [b"a", &long_key, b"c"];
    assert_eq!(
        Batch::from_columns(&Columns {
            keys: &long_keys,
            ..cols
        }),
        Err(BatchError::TooLong("key"))
    );
    let long_name = "n".repeat(256);
    let named = [(long_name.as_str(), ColumnValues::I64(&ints))];
    assert_eq!(
        Batch::from_columns(&Columns {
            fields: &named,
            ..cols
        }),
        Err(BatchError::TooLong("field name"))
    );
}

#[test]
fn projection_and_gather_keep_records_as_they_are() {
    let batch = sample();
    // Keep `id` as it is, rename `score` to `s`, drop the rest: no buffer copied.
    let p = batch.project(|n| match n {
        "id" => Some(None),
        "score" => Some(Some("s")),
        _ => None,
    });
    assert_eq!(p.len(), batch.len());
    for (a, r) in p.iter().zip(batch.iter()) {
        let want = [
            ("id".to_string(), r.field("id").unwrap()),
            ("s".to_string(), r.field("score").unwrap()),
        ];
        let got: Vec<_> = a.fields().map(|(n, v)| (n.to_string(), v)).collect();
        assert_eq!(got, want);
        assert_eq!((a.source, a.seq, a.key), (r.source, r.seq, r.key));
    }
    assert_eq!(Batch::from_bytes(p.to_bytes()).unwrap(), p);
    // Gather picks records in the order asked, whole.
    let rows = [99u32, 0, 50, 50];
    let g = Batch::from_bytes(batch.gather(&rows).to_bytes()).unwrap();
    let want: Vec<_> = rows.iter().map(|&r| batch.record(r as usize)).collect();
    assert_eq!(g.iter().collect::<Vec<_>>(), want);
    assert!(batch.gather(&[]).is_empty());
}

#[test]
fn gather_copies_short_and_long_runs_of_even_and_uneven_columns() {
    // Keys and `v` of varying widths, `n` an integer in some records and text or
    // absent in others, `w` always eight bytes, `p` always five.
    let mut b = BatchBuilder::default();
    for i in 0..300u64 {
        let v = Value::Str("v".repeat((i % 5) as usize));
        let n = match i % 3 {
            0 => Some(Value::I64(i as i64)),
            1 => Some(Value::Str("x".into())),
            _ => None,
        };
        let w = Value::F64(i as f64);
        let p = Value::Bytes(vec![i as u8; 5]);
        let mut fields = vec![("v", &v), ("w", &w), ("p", &p)];
        fields.extend(n.as_ref().map(|n| ("n", n)));
        b.push(i as u32, i, -(i as i64), format!("k{i}").as_bytes(), fields)
            .unwrap();
    }
    let batch = Batch::from_bytes(b.finish().to_bytes()).unwrap();
    let every_other: Vec<u32> = (0..300).step_by(2).collect();
    let long_runs: Vec<u32> = (0..120).chain(150..300).collect();
    let mixed: Vec<u32> = (0..40).chain([41, 43, 45, 299, 0, 7]).collect();
    for rows in [every_other, long_runs, mixed, vec![5], vec![]] {
        let g = batch.gather(&rows);
        assert_eq!(g.len(), rows.len());
        let want: Vec<_> = rows.iter().map(|&r| batch.record(r as usize)).collect();
        assert_eq!(g.iter().collect::<Vec<_>>(), want, "rows {rows:?}");
        assert_eq!(Batch::from_bytes(g.to_bytes()).unwrap(), g);
    }
}

#[test]
fn the_builder_starts_over_after_finish_and_refuses_oversized_parts() {
    let mut b = BatchBuilder::default();
    b.push(0, 1, 0, b"a", []).unwrap();
    assert_eq!(b.finish().len(), 1);
    assert!(b.is_empty());
    let long_key = vec![0u8; 70_000];
    assert_eq!(
        b.push(0, 1, 0, &long_key, []),
        Err(BatchError::TooLong("key"))
    );
    let long_name = "n".repeat(300);
    let v = Value::Null;
    assert_eq!(
        b.push(0, 1, 0, b"k", [(long_name.as_str(), &v)]),
        Err(BatchError::TooLong("field name"))
    );
    // A refused record leaves nothing behind.
    assert!(b.is_empty());
    let empty = b.finish();
    assert_eq!(empty.encoded_len(), BatchBuilder::default().size());
    assert_eq!(empty, BatchBuilder::default().finish());
}

#[test]
fn malformed_batches_are_errors() {
    let good = sample().to_bytes();
    for cut in [0, 3, 10, good.len() / 2, good.len() - 1] {
        assert!(
            Batch::from_bytes(good.slice(..cut)).is_err(),
            "cut at {cut}"
        );
    }
    let mut extra = good.to_vec();
    extra.push(0);
    assert_eq!(
        Batch::from_bytes(extra.into()),
        Err(BatchError::Trailing(1))
    );
    // A count claiming more records than there are.
    let mut lying = good.to_vec();
    lying[0..4].copy_from_slice(&u32::MAX.to_le_bytes());
    assert!(matches!(
        Batch::from_bytes(lying.into()),
        Err(BatchError::Truncated(_))
    ));
    // One record, one column `v`: where each part sits in the encoded form.
    let mut b = BatchBuilder::default();
    b.push(0, 0, 0, b"k", [("v", &Value::I64(5))]).unwrap();
    let one = b.finish().to_bytes().to_vec();
    let col = 6 + 4 + 8 + 8 + 8 + 1; // header, source, seq, time, key offsets, key
    assert_eq!(&one[col..col + 2], &[1, b'v']);
    let (tag, offsets) = (col + 2, col + 3);
    let mut bad = one.clone();
    bad[tag] = 9;
    assert_eq!(
        Batch::from_bytes(bad.into()),
        Err(BatchError::BadTag { tag: 9, at: tag })
    );
    // An integer tag over a 4-byte value.
    let mut bad = one.clone();
    bad[offsets + 4..offsets + 8].copy_from_slice(&4u32.to_le_bytes());
    let bad = Batch::from_bytes(bad[..bad.len() - 4].to_vec().into());
    assert_eq!(
        bad,
        Err(BatchError::Length {
            tag: 2,
            len: 4,
            at: offsets
        })
    );
    // Offsets that do not start at 0.
    let mut bad = one.clone();
    bad[offsets] = 1;
    assert_eq!(
        Batch::from_bytes(bad.into()),
        Err(BatchError::Offsets(offsets))
    );
    // Key offsets that go back.
    let mut bad = one;
    bad[6 + 20 + 4..6 + 20 + 8].copy_from_slice(&0u32.to_le_bytes());
    bad[6 + 20..6 + 20 + 4].copy_from_slice(&1u32.to_le_bytes());
    assert_eq!(
        Batch::from_bytes(bad.into()),
        Err(BatchError::Offsets(6 + 20))
    );
}

mod fuzz {
    use super::*;
    use crate::frame::{Frame, FrameError, MAX_FRAME};
    use bytes::BytesMut;
    use proptest::prelude::*;

    fn frames() -> impl Strategy<Value = Frame> {
        prop_oneof![
            (
                any::<u32>(),
                "[a-z@#0-9]{0,20}",
                "[a-z@#0-9]{0,20}",
                any::<u64>()
            )
                .prop_map(|(channel, from_pe, to_pe, resume_after)| Frame::Open {
                    channel,
                    from_pe,
                    to_pe,
                    resume_after
                }),
            (
                any::<u32>(),
                any::<u64>(),
                proptest::collection::vec((any::<i64>(), "[a-z]{0,8}"), 0..20)
            )
                .prop_map(|(channel, seq, rs)| {
                    let mut b = BatchBuilder::default();
                    for (i, (n, s)) in rs.iter().enumerate() {
                        let f = [("n", Value::I64(*n)), ("s", Value::Str(s.clone()))];
                        b.push(
                            1,
                            i as u64,
                            *n,
                            s.as_bytes(),
                            f.iter().map(|(k, v)| (*k, v)),
                        )
                        .unwrap();
                    }
                    Frame::Data {
                        channel,
                        seq,
                        batch: b.finish(),
                    }
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

    proptest! {
        #[test]
        fn frames_round_trip_even_when_split_anywhere(fs in proptest::collection::vec(frames(), 1..8), split in any::<prop::sample::Index>()) {
            let mut wire = BytesMut::new();
            for f in &fs {
                f.encode(&mut wire);
            }
            // In pieces (what vectored writers send), the same bytes.
            let mut pieces = BytesMut::new();
            let mut whole = Vec::new();
            for f in &fs {
                f.encode_parts(&mut pieces, |head, b| {
                    whole.extend_from_slice(&head.split());
                    whole.extend_from_slice(b);
                });
            }
            whole.extend_from_slice(&pieces);
            prop_assert_eq!(&whole[..], &wire[..]);
            // Deliver the bytes in two pieces, cut anywhere.
            let cut = split.index(wire.len() + 1);
            let mut buf = BytesMut::from(&wire[..cut]);
            let mut out = Vec::new();
            while let Some(f) = Frame::decode(&mut buf).unwrap() {
                out.push(f);
            }
            buf.extend_from_slice(&wire[cut..]);
            while let Some(f) = Frame::decode(&mut buf).unwrap() {
                out.push(f);
            }
            prop_assert!(buf.is_empty());
            prop_assert_eq!(out, fs);
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let mut buf = BytesMut::from(&bytes[..]);
            while let Ok(Some(_)) = Frame::decode(&mut buf) {}
            let _ = Batch::from_bytes(bytes.into());
        }
    }

    #[test]
    fn bad_lengths_and_kinds_are_errors_not_allocations() {
        let mut buf = BytesMut::from(&u32::MAX.to_le_bytes()[..]);
        assert_eq!(
            Frame::decode(&mut buf),
            Err(FrameError::BadLength(u32::MAX as usize))
        );
        let mut buf = BytesMut::from(&((MAX_FRAME + 1) as u32).to_le_bytes()[..]);
        assert!(matches!(
            Frame::decode(&mut buf),
            Err(FrameError::BadLength(_))
        ));
        let mut buf = BytesMut::from(&[5u8, 0, 0, 0, 99, 0, 0, 0, 0][..]);
        assert_eq!(Frame::decode(&mut buf), Err(FrameError::UnknownKind(99)));
        let mut buf = BytesMut::from(&[6u8, 0, 0, 0, 4, 0, 0, 0, 0, 1][..]);
        assert_eq!(Frame::decode(&mut buf), Err(FrameError::Malformed("ack")));
        // A partial frame is not an error: it waits for the rest.
        let mut buf = BytesMut::from(&[13u8, 0, 0, 0, 4][..]);
        assert_eq!(Frame::decode(&mut buf), Ok(None));
    }
}

#[test]
fn raw_records_split_a_batch_without_changing_them() {
    let batch = sample();
    let (mut even, mut odd) = (BatchBuilder::default(), BatchBuilder::default());
    for r in batch.iter() {
        if r.seq % 2 == 0 {
            even.push_raw(&r)
        } else {
            odd.push_raw(&r)
        }
    }
    let (even, odd) = (even.finish(), odd.finish());
    assert_eq!((even.len(), odd.len()), (50, 50));
    // The split halves are valid batches holding exactly the original records.
    let even = Batch::from_bytes(even.to_bytes()).unwrap();
    let originals: Vec<_> = batch.iter().filter(|r| r.seq % 2 == 0).collect();
    assert_eq!(even.iter().collect::<Vec<_>>(), originals);
    assert!(odd
        .iter()
        .all(|r| r.seq % 2 == 1 && r.fields().count() == 6));
}

#[test]
fn raw_fields_copy_renamed_into_a_valid_batch_and_refuse_what_does_not_fit() {
    let batch = sample();
    let mut b = BatchBuilder::default();
    for r in batch.iter() {
        // Every field renamed with a prefix, copied as encoded.
        let names: Vec<String> = r.raw_fields().map(|f| format!("x_{}", f.name)).collect();
        let fields = r.raw_fields().zip(&names).map(|(f, n)| (n.as_str(), f));
        b.push_raw_fields(r.source, r.seq, r.event_time_ms, r.key, fields)
            .unwrap();
    }
    let out = Batch::from_bytes(b.finish().to_bytes()).unwrap();
    for (a, r) in out.iter().zip(batch.iter()) {
        let renamed: Vec<(String, Value)> =
            r.fields().map(|(n, v)| (format!("x_{n}"), v)).collect();
        let got: Vec<(String, Value)> = a.fields().map(|(n, v)| (n.to_string(), v)).collect();
        assert_eq!(got, renamed);
        assert_eq!((a.source, a.seq, a.key), (r.source, r.seq, r.key));
        // A single field is found and decoded alone.
        let first = r.raw_fields().next().unwrap();
        assert_eq!(a.field(&format!("x_{}", first.name)), Some(first.decode()));
    }
    // A name over 255 bytes: refused, and the builder is as it was.
    let mut b = BatchBuilder::default();
    let r = batch.iter().next().unwrap();
    let long = "n".repeat(300);
    let f = r.raw_fields().next().unwrap();
    let err = b
        .push_raw_fields(r.source, r.seq, 0, r.key, [(long.as_str(), f)])
        .unwrap_err();
    assert_eq!(err, BatchError::TooLong("field name"));
    assert!(b.is_empty());
    assert_eq!(b.size(), BatchBuilder::default().size());
}

#[test]
fn text_that_is_not_utf8_is_refused_in_names_and_in_values() {
    // Names become `str`s and text values are decoded losslessly: `from_bytes` (and
    // `from_rows`) must refuse bad text wherever it sits.
    let mut b = BatchBuilder::default();
    b.push(0, 1, 0, b"k", [("nm", &Value::Str("vv".into()))])
        .unwrap();
    let batch = b.finish();
    let mut rows = Vec::new();
    batch.encode_rows(&mut rows);
    for needle in [&b"nm"[..], &b"vv"[..]] {
        let at = rows.windows(2).position(|w| w == needle).unwrap();
        let mut bad = rows.clone();
        bad[at] = 0xFF;
        assert_eq!(
            Batch::from_rows(&bad),
            Err(BatchError::Utf8(at)),
            "{needle:?}"
        );
    }
    let good = batch.to_bytes().to_vec();
    for needle in [&b"nm"[..], &b"vv"[..]] {
        let at = good.windows(2).position(|w| w == needle).unwrap();
        let mut bad = good.clone();
        bad[at] = 0xFF;
        assert_eq!(
            Batch::from_bytes(bad.into()),
            Err(BatchError::Utf8(at)),
            "{needle:?}"
        );
    }
    assert!(Batch::from_bytes(good.into()).is_ok());
}

#[test]
fn pieces_hold_every_record_in_order_each_within_the_bound() {
    // Records of uneven sizes: a few large among many small.
    let mut b = BatchBuilder::default();
    for i in 0..5_000u64 {
        let size = if i % 997 == 0 {
            3_000
        } else {
            (i % 40) as usize
        };
        let v = Value::Str("v".repeat(size));
        b.push(1, i, i as i64, format!("k{i}").as_bytes(), [("v", &v)])
            .unwrap();
    }
    let batch = b.finish();
    for max in [1usize, 200, 4_096, 20_000, batch.encoded_len() - 1] {
        let pieces = batch.pieces(max);
        assert!(pieces.len() > 1, "max {max}");
        for p in &pieces {
            assert!(
                p.encoded_len() <= max || p.len() == 1,
                "max {max}: {}",
                p.encoded_len()
            );
        }
        let got: Vec<_> = pieces.iter().flat_map(|p| p.iter()).collect();
        assert_eq!(got, batch.iter().collect::<Vec<_>>(), "max {max}");
    }
    // A batch that fits is itself.
    assert_eq!(batch.pieces(batch.encoded_len()).len(), 1);
    assert_eq!(BatchBuilder::default().finish().pieces(1).len(), 1);
}
