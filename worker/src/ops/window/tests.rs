use super::*;
use crate::ops::generator::BASE_EVENT_TIME_MS;
use crate::ops::{Generator, StateError};
use std::collections::BTreeMap;
use weir_common::keygroup::KeyGroupRange;
use weir_common::spec::GeneratorParams;
use weir_common::spec::KEY_GROUPS;

/// One output record: (key, start, end) -> aggregate.
type Results = BTreeMap<(String, i64, i64), Value>;

fn collect(out: &mut Results, batch: &Batch) {
    for r in batch.iter() {
        let fields: Vec<_> = r.fields().collect();
        let names: Vec<_> = fields.iter().map(|(n, _)| *n).collect();
        assert_eq!(&names[..3], ["key", "window_start", "window_end"]);
        let (Value::Str(key), Value::I64(start), Value::I64(end)) =
            (&fields[0].1, &fields[1].1, &fields[2].1)
        else {
            panic!("bad output {fields:?}");
        };
        assert_eq!(r.key, key.as_bytes());
        assert_eq!(r.event_time_ms, end - 1);
        let prev = out.insert((key.clone(), *start, *end), fields[3].1.clone());
        assert!(prev.is_none(), "window emitted twice: {key} {start}");
    }
}

fn generated(count: u64, keys: u64) -> Vec<Batch> {
    let p = GeneratorParams {
        rate: None,
        count: Some(count),
        keys,
        payload_bytes: 0,
        seed: 3,
        wall_clock: false,
    };
    let mut g = Generator::new(p, 0, 0, 1);
    std::iter::from_fn(|| g.next_batch(97)).collect()
}

/// Recomputes what a window of `size` must produce from the raw records.
fn recompute(batches: &[Batch], size: i64, field: Option<&str>) -> Results {
    let mut out = Results::new();
    for r in batches.iter().flat_map(Batch::iter) {
        let start = r.event_time_ms.div_euclid(size) * size;
        let k = (
            String::from_utf8(r.key.to_vec()).unwrap(),
            start,
            start + size,
        );
        let add = field.map_or(1, |f| match (r.field(f), f) {
            (Some(Value::I64(v)), _) => v,
            // The generator's event time is no field: `ts` stands for it.
            (None, "ts") => r.event_time_ms,
            other => panic!("{other:?}"),
        });
        match out.entry(k).or_insert(Value::I64(0)) {
            Value::I64(n) => *n += add,
            _ => unreachable!(),
        }
    }
    out
}

fn record(b: &mut BatchBuilder, key: &str, t: i64, fields: &[(&str, Value)]) {
    b.push(9, 0, t, key.as_bytes(), fields.iter().map(|(n, v)| (*n, v)))
        .unwrap();
}

fn batch_of(records: &[(&str, i64)]) -> Batch {
    let mut b = BatchBuilder::default();
    for (k, t) in records {
        record(&mut b, k, *t, &[]);
    }
    b.finish()
}

#[test]
fn counts_and_sums_equal_a_recomputation_and_close_as_time_passes() {
    let input = generated(5_000, 7);
    for (kind, field) in [
        (WindowKind::Count, None),
        (
            WindowKind::Sum {
                field: "value".into(),
            },
            Some("value"),
        ),
        (WindowKind::Sum { field: "ts".into() }, Some("ts")),
    ] {
        let mut w = Window::new(kind, 100, 1, 42);
        let (mut got, mut seqs) = (Results::new(), Vec::new());
        let mut before_end = 0;
        for b in &input {
            let out = w.apply(0, b);
            before_end += out.len();
            seqs.extend(out.iter().map(|r| (r.source, r.seq)));
            collect(&mut got, &out);
        }
        let out = w.end_input(0);
        seqs.extend(out.iter().map(|r| (r.source, r.seq)));
        collect(&mut got, &out);
        assert_eq!(got, recompute(&input, 100, field));
        assert!(
            before_end > 0 && before_end < got.len(),
            "windows close as the watermark passes"
        );
        assert_eq!(
            seqs,
            (0..got.len() as u64).map(|s| (42, s)).collect::<Vec<_>>()
        );
        assert_eq!((w.late(), w.skipped(), w.open_windows()), (0, 0, 0));
    }
}

#[test]
fn output_is_ordered_by_window_end_then_key() {
    let mut w = Window::new(WindowKind::Count, 10, 1, 0);
    let out = w.apply(
        0,
        &batch_of(&[("b", 15), ("a", 3), ("c", 1), ("a", 12), ("z", 40)]),
    );
    let order: Vec<_> = out
        .iter()
        .map(|r| (r.event_time_ms, r.key.to_vec()))
        .collect();
    assert_eq!(
        order,
        [
            (9, b"a".to_vec()),
            (9, b"c".to_vec()),
            (19, b"a".to_vec()),
            (19, b"b".to_vec())
        ]
    );
    assert_eq!(
        w.flush().iter().map(|r| r.key.to_vec()).collect::<Vec<_>>(),
        [b"z".to_vec()]
    );
}

#[test]
fn closing_counts_the_slots_the_next_close_emits() {
    let mut w = Window::new(WindowKind::Count, 10, 1, 0);
    assert_eq!(w.closing(), 0, "no watermark yet");
    w.take(
        0,
        &batch_of(&[("a", 3), ("b", 5), ("a", 12), ("c", 14), ("z", 40)]),
    );
    // Watermark 40: [0, 10) holds a and b, [10, 20) a and c; [40, 50) stays open.
    assert_eq!((w.closing(), w.open_windows()), (4, 5));
    assert_eq!(w.close().len(), 4);
    assert_eq!((w.closing(), w.open_windows()), (0, 1));
    w.end(0);
    assert_eq!(w.closing(), 1, "an ended input closes everything");
    assert_eq!(w.close().len(), 1);
}

#[test]
fn two_inputs_hold_windows_until_both_pass() {
    let mut w = Window::new(WindowKind::Count, 100, 2, 0);
    assert!(w.apply(0, &batch_of(&[("k", 10), ("k", 1000)])).is_empty());
    assert_eq!(w.watermark(), None, "input 1 has shown nothing");
    assert!(w.apply(1, &batch_of(&[("k", 20), ("k", 99)])).is_empty());
    assert_eq!(w.watermark(), Some(99));
    let out = w.apply(1, &batch_of(&[("k", 100)]));
    let mut got = Results::new();
    collect(&mut got, &out);
    assert_eq!(got, [(("k".to_string(), 0, 100), Value::I64(3))].into());
    // Input 0 is at 1000, input 1 at 100: ending input 1 releases up to 1000 only.
    let out = w.end_input(1);
    assert_eq!(
        out.iter().map(|r| r.event_time_ms).collect::<Vec<_>>(),
        [199]
    );
    assert_eq!(
        w.open_windows(),
        1,
        "the window of t=1000 waits for input 0"
    );
    assert_eq!(w.end_input(0).len(), 1);
}

#[test]
fn late_records_are_counted_and_do_not_change_results() {
    let mut w = Window::new(WindowKind::Count, 100, 1, 0);
    // Out of order within one batch is fine: closing happens after the batch.
    let first = w.apply(0, &batch_of(&[("k", 250), ("k", 50)]));
    assert_eq!(
        first.iter().map(|r| r.field("count")).collect::<Vec<_>>(),
        [Some(Value::I64(1))]
    );
    assert!(w
        .apply(0, &batch_of(&[("k", 60), ("other", 99), ("k", 260)]))
        .is_empty());
    assert_eq!(w.late(), 2);
    let mut got = Results::new();
    collect(&mut got, &first);
    collect(&mut got, &w.flush());
    assert_eq!(
        got,
        [
            (("k".into(), 0, 100), Value::I64(1)),
            (("k".into(), 200, 300), Value::I64(2))
        ]
        .into()
    );
    assert!(w.apply(0, &batch_of(&[("k", 299)])).is_empty());
    assert_eq!(w.late(), 3, "after a flush its windows are closed too");
}

#[test]
fn sums_stay_integers_until_a_float_and_skip_non_numbers() {
    let mut w = Window::new(WindowKind::Sum { field: "v".into() }, 10, 1, 0);
    let mut b = BatchBuilder::default();
    record(&mut b, "i", 1, &[("v", Value::I64(2))]);
    record(&mut b, "i", 2, &[("v", Value::Str("40".into()))]);
    record(&mut b, "f", 3, &[("v", Value::I64(1))]);
    record(&mut b, "f", 4, &[("v", Value::F64(0.5))]);
    record(&mut b, "i", 5, &[("v", Value::Str("x".into()))]);
    record(&mut b, "i", 6, &[("w", Value::I64(1))]);
    record(&mut b, "i", 7, &[("v", Value::F64(f64::NAN))]);
    record(&mut b, "n", 8, &[("v", Value::Null)]);
    let out = w.apply(0, &b.finish());
    assert!(out.is_empty());
    let out = w.flush();
    let sums: Vec<_> = out
        .iter()
        .map(|r| (r.key.to_vec(), r.field("sum")))
        .collect();
    assert_eq!(
        sums,
        [
            (b"f".to_vec(), Some(Value::F64(1.5))),
            (b"i".to_vec(), Some(Value::I64(42)))
        ]
    );
    assert_eq!(w.skipped(), 4);
}

#[test]
fn extreme_times_and_sizes_do_not_panic() {
    for size in [0, 1, 3, u64::MAX] {
        let mut w = Window::new(WindowKind::Count, size, 0, 0);
        let out = w.apply(0, &batch_of(&[("a", i64::MIN), ("a", i64::MAX), ("b", -1)]));
        let n = out.len()
            + w.apply(7, &batch_of(&[("c", 0)])).len()
            + w.end_input(5).len()
            + w.flush().len();
        assert!((3..=4).contains(&n), "size {size}: {n}");
    }
}

/// A window that has seen `input` on two inputs, the second lagging, some closed.
fn busy(input: &[Batch]) -> (Window, Results) {
    let mut w = Window::new(
        WindowKind::Sum {
            field: "value".into(),
        },
        50,
        2,
        1,
    );
    let mut got = Results::new();
    for b in input {
        collect(&mut got, &w.apply(0, b));
    }
    collect(
        &mut got,
        &w.apply(1, &batch_of(&[("x", BASE_EVENT_TIME_MS + 1_000)])),
    );
    (w, got)
}

#[test]
fn split_snapshots_restored_apart_give_exactly_the_union() {
    let input = generated(3_000, 50);
    let (w, before) = busy(&input);
    assert!(!before.is_empty() && w.open_windows() > 100);
    let mut whole = w.clone();
    let mut expected = Results::new();
    collect(&mut expected, &whole.flush());

    let halves = [KeyGroupRange::for_pe(0, 2), KeyGroupRange::for_pe(1, 2)];
    let mut union = Results::new();
    let mut merged = Window::new(
        WindowKind::Sum {
            field: "value".into(),
        },
        50,
        2,
        1,
    );
    for g in halves {
        let snap = w.snapshot(g);
        let mut fresh = Window::new(
            WindowKind::Sum {
                field: "value".into(),
            },
            50,
            2,
            1,
        );
        fresh.restore(&snap).unwrap();
        assert_eq!(fresh.watermark(), w.watermark());
        assert!(fresh.open_windows() > 0 && fresh.open_windows() < w.open_windows());
        collect(&mut union, &fresh.flush());
        merged.restore(&snap).unwrap();
    }
    assert_eq!(union, expected);
    let mut m = Results::new();
    let out = merged.flush();
    assert_eq!(
        out.iter().map(|r| r.seq).collect::<Vec<_>>(),
        whole_seqs(&w)
    );
    collect(&mut m, &out);
    assert_eq!(m, expected);
}

fn whole_seqs(w: &Window) -> Vec<u64> {
    let mut w = w.clone();
    w.flush().iter().map(|r| r.seq).collect()
}

fn key_in(groups: KeyGroupRange) -> String {
    (0..)
        .map(|i| format!("key{i}"))
        .find(|k| groups.contains(key_group(k.as_bytes())))
        .unwrap()
}

#[test]
fn merged_parts_keep_each_parts_lateness_and_the_slowest_progress() {
    let halves = [KeyGroupRange::for_pe(0, 2), KeyGroupRange::for_pe(1, 2)];
    let (ka, kb) = (key_in(halves[0]), key_in(halves[1]));
    let mut a = Window::new(WindowKind::Count, 100, 1, 0);
    let mut b = Window::new(WindowKind::Count, 100, 1, 0);
    assert_eq!(a.apply(0, &batch_of(&[(&ka, 10), (&ka, 450)])).len(), 1);
    assert!(b.apply(0, &batch_of(&[(&kb, 30), (&kb, 90)])).is_empty());
    let parts = [a.snapshot(halves[0]), b.snapshot(halves[1])];
    // Either order: the bound of `a` travels with its groups whichever comes first.
    for order in [[0, 1], [1, 0]] {
        let mut m = Window::new(WindowKind::Count, 100, 1, 0);
        for i in order {
            m.restore(&parts[i]).unwrap();
        }
        assert_eq!(m.watermark(), Some(90), "progress takes the minimum");
        // `a` emitted [0,100) of ka: the bound it handed over keeps it late, while b's
        // window [0,100) of kb is still open and takes the record.
        let out = m.apply(0, &batch_of(&[(&ka, 40), (&kb, 50), (&kb, 160)]));
        assert_eq!(m.late(), 1, "order {order:?}");
        let mut got = Results::new();
        collect(&mut got, &out);
        assert_eq!(got, [((kb.clone(), 0, 100), Value::I64(3))].into());
        collect(&mut got, &m.flush());
        assert_eq!(got.len(), 3);
        assert_eq!(got[&(ka.clone(), 400, 500)], Value::I64(1));
        assert_eq!(got[&(kb.clone(), 100, 200)], Value::I64(1));
    }
}

#[test]
fn malformed_snapshots_are_errors_and_change_nothing() {
    let (w, _) = busy(&generated(500, 5));
    let snap = w.snapshot(KeyGroupRange { start: 0, end: 256 });
    let mut target = Window::new(
        WindowKind::Sum {
            field: "value".into(),
        },
        50,
        2,
        1,
    );
    for bad in [&b""[..], b"garbage", &[1, b'W', 7], &[9, b'W']] {
        assert!(target.restore(bad).is_err(), "{bad:?}");
    }
    for cut in 0..snap.len() {
        assert!(target.restore(&snap[..cut]).is_err(), "truncated at {cut}");
    }
    let mut long = snap.clone();
    long.push(0);
    assert_eq!(target.restore(&long), Err(StateError::Trailing(1)));
    let mut other_size = Window::new(
        WindowKind::Sum {
            field: "value".into(),
        },
        60,
        2,
        1,
    );
    assert!(matches!(
        other_size.restore(&snap),
        Err(StateError::Mismatch(_))
    ));
    let mut count = Window::new(WindowKind::Count, 50, 2, 1);
    assert!(matches!(count.restore(&snap), Err(StateError::Mismatch(_))));
    assert!(matches!(
        target.restore(&crate::ops::Verify::new(None).snapshot()),
        Err(StateError::WrongKind { .. })
    ));
    assert_eq!((target.open_windows(), target.watermark()), (0, None));
    target.restore(&snap).unwrap();
    assert_eq!(target.open_windows(), w.open_windows());
}

/// An upgrade's rescale 2 -> 3: each new PE merges the snapshots of the old PEs
/// overlapping its key groups and keeps only its own groups; together the new PEs
/// produce exactly what one window over all records produces, each window once.
#[test]
fn a_rescale_hand_off_splits_state_by_key_group_and_stays_exact() {
    let batches = generated(5_000, 40);
    let (first, rest) = batches.split_at(batches.len() / 2);
    let mut old: Vec<Window> = (0..2)
        .map(|_| Window::new(WindowKind::Count, 1000, 1, 9))
        .collect();
    let mut out = Results::new();
    for b in first {
        // Route by key group, as a hash stream to 2 PEs does.
        for (i, w) in old.iter_mut().enumerate() {
            let mut mine = BatchBuilder::default();
            for r in b.iter() {
                if weir_common::keygroup::owner(r.key, 2) as usize == i {
                    mine.push_raw(&r);
                }
            }
            collect(&mut out, &w.apply(0, &mine.finish()));
        }
    }
    let snaps: Vec<Vec<u8>> = old
        .iter()
        .map(|w| {
            w.snapshot(KeyGroupRange {
                start: 0,
                end: KEY_GROUPS,
            })
        })
        .collect();
    let mut new: Vec<Window> = (0..3)
        .map(|i| {
            let groups = KeyGroupRange::for_pe(i, 3);
            let mut w = Window::new(WindowKind::Count, 1000, 2, 10 + i);
            for (j, s) in snaps.iter().enumerate() {
                if KeyGroupRange::for_pe(j as u32, 2).overlaps(&groups) {
                    w.restore(s).unwrap();
                }
            }
            w.take_over(groups);
            w
        })
        .collect();
    // A new PE holds only its own keys, and no input is further than any was.
    for (i, w) in new.iter().enumerate() {
        let groups = KeyGroupRange::for_pe(i as u32, 3);
        assert!(w
            .windows
            .values()
            .flat_map(|keys| keys.iter().map(|(k, _)| k))
            .all(|k| groups.contains(key_group(k))));
        let least = old.iter().filter_map(Window::watermark).min();
        assert!(w.watermark() <= least, "{:?} > {least:?}", w.watermark());
    }
    for b in rest {
        for (i, w) in new.iter_mut().enumerate() {
            let mut mine = BatchBuilder::default();
            for r in b.iter() {
                if weir_common::keygroup::owner(r.key, 3) as usize == i {
                    mine.push_raw(&r);
                }
            }
            let batch = mine.finish();
            // Both inputs of the new PE carry this PE's records.
            collect(&mut out, &w.apply(0, &batch));
            collect(&mut out, &w.apply(1, &BatchBuilder::default().finish()));
        }
    }
    for w in &mut new {
        collect(&mut out, &w.end_input(0));
        collect(&mut out, &w.end_input(1));
        collect(&mut out, &w.flush());
    }
    assert_eq!(out, recompute(&batches, 1000, None));
}

#[test]
fn a_rescale_keeps_windows_a_slower_predecessor_had_open() {
    // Two old PEs whose time went apart: one closed up to 2000, the other only up to
    // 1000. Each snapshots its own key groups (as PEs do), so the successor judges
    // lateness per predecessor: a record after the switch for the slow one's open
    // window [1000, 2000) still counts.
    let (fast_key, slow_key) = (
        key_in(KeyGroupRange::for_pe(0, 2)),
        key_in(KeyGroupRange::for_pe(1, 2)),
    );
    let mut fast = Window::new(WindowKind::Count, 1000, 1, 9);
    let mut slow = Window::new(WindowKind::Count, 1000, 1, 9);
    fast.apply(0, &batch_of(&[(&fast_key, 2100)]));
    slow.apply(0, &batch_of(&[(&slow_key, 1100)]));
    let parts = [
        fast.snapshot(KeyGroupRange::for_pe(0, 2)),
        slow.snapshot(KeyGroupRange::for_pe(1, 2)),
    ];
    let mut new = Window::new(WindowKind::Count, 1000, 1, 9);
    for p in &parts {
        new.restore(p).unwrap();
    }
    new.take_over(KeyGroupRange {
        start: 0,
        end: KEY_GROUPS,
    });
    new.apply(0, &batch_of(&[(&slow_key, 1500)]));
    assert_eq!(
        new.late(),
        0,
        "the slow predecessor's window was still open"
    );
    let mut out = Results::new();
    collect(
        &mut out,
        &new.apply(0, &batch_of(&[(&fast_key, 3500), (&slow_key, 3500)])),
    );
    assert_eq!(out[&(slow_key.clone(), 1000, 2000)], Value::I64(2));
    // A record for a window the fast one had closed stays late.
    new.apply(0, &batch_of(&[(&fast_key, 1500)]));
    assert_eq!(new.late(), 1);
}
