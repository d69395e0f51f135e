//! `window.hop`: hopping windows against a recomputation, lateness per window, and
//! snapshots that only a window of the same shape restores.

use super::*;
use crate::ops::generator::BASE_EVENT_TIME_MS;
use crate::ops::{Generator, StateError};
use weir_common::keygroup::KeyGroupRange;
use weir_common::spec::GeneratorParams;

/// (key, start, end) -> count.
type Results = BTreeMap<(String, i64, i64), i64>;

fn collect(out: &mut Results, batch: &Batch) {
    for r in batch.iter() {
        let f: Vec<_> = r.fields().collect();
        let names: Vec<_> = f.iter().map(|(n, _)| *n).collect();
        assert_eq!(names, ["key", "window_start", "window_end", "count"]);
        let (Value::Str(key), Value::I64(start), Value::I64(end), Value::I64(n)) =
            (&f[0].1, &f[1].1, &f[2].1, &f[3].1)
        else {
            panic!("bad output {f:?}");
        };
        assert_eq!(r.key, key.as_bytes());
        assert_eq!(r.event_time_ms, end - 1);
        let prev = out.insert((key.clone(), *start, *end), *n);
        assert!(prev.is_none(), "window emitted twice: {key} {start}");
    }
}

fn generated(count: u64, keys: u64) -> Vec<Batch> {
    let p = GeneratorParams {
        rate: None,
        count: Some(count),
        keys,
        payload_bytes: 0,
        seed: 5,
        wall_clock: false,
    };
    let mut g = Generator::new(p, 0, 0, 1);
    std::iter::from_fn(|| g.next_batch(61)).collect()
}

/// What hopping windows of `size` every `slide` must count, straight from the records:
/// every window start that is a multiple of `slide` in `(t - size, t]`.
fn recompute(batches: &[Batch], size: i64, slide: i64) -> Results {
    let mut out = Results::new();
    for r in batches.iter().flat_map(Batch::iter) {
        let key = String::from_utf8(r.key.to_vec()).unwrap();
        let t = r.event_time_ms;
        let first = (t - size).div_euclid(slide) * slide + slide;
        let mut start = first;
        while start <= t {
            *out.entry((key.clone(), start, start + size)).or_insert(0) += 1;
            start += slide;
        }
    }
    out
}

fn batch_of(records: &[(&str, i64)]) -> Batch {
    let mut b = BatchBuilder::default();
    for (k, t) in records {
        b.push(9, 0, *t, k.as_bytes(), std::iter::empty()).unwrap();
    }
    b.finish()
}

/// Runs `input` through `w` on input 0, then ends it: everything emitted, with seqs.
fn run(w: &mut Window, input: &[Batch]) -> (Results, usize, Vec<u64>) {
    let (mut got, mut seqs, mut before_end) = (Results::new(), Vec::new(), 0);
    for b in input {
        let out = w.apply(0, b);
        before_end += out.len();
        seqs.extend(out.iter().map(|r| r.seq));
        collect(&mut got, &out);
    }
    let out = w.end_input(0);
    seqs.extend(out.iter().map(|r| r.seq));
    collect(&mut got, &out);
    (got, before_end, seqs)
}

#[test]
fn hopping_counts_equal_a_recomputation_and_close_as_time_passes() {
    let input = generated(3_000, 7);
    for (size, slide) in [(100, 20), (100, 100), (90, 30), (7, 1)] {
        let mut w = Window::hopping(WindowKind::Count, size, slide, 1, 3);
        let (got, before_end, seqs) = run(&mut w, &input);
        let want = recompute(&input, size as i64, slide as i64);
        assert_eq!(got, want, "size {size} slide {slide}");
        // Every record is in size / slide windows.
        let per_record = (size / slide) as i64;
        assert_eq!(got.values().sum::<i64>(), 3_000 * per_record);
        assert!(before_end > 0 && before_end < got.len());
        assert_eq!(seqs, (0..got.len() as u64).collect::<Vec<_>>());
        assert_eq!((w.late(), w.open_windows()), (0, 0));
    }
}

#[test]
fn a_slide_equal_to_the_size_is_the_tumbling_window() {
    let input = generated(2_000, 5);
    let mut hop = Window::hopping(WindowKind::Count, 100, 100, 1, 3);
    let mut tumbling = Window::new(WindowKind::Count, 100, 1, 3);
    let half = input.len() / 2;
    for b in &input[..half] {
        assert_eq!(hop.apply(0, b), tumbling.apply(0, b));
    }
    let all = KeyGroupRange { start: 0, end: 256 };
    assert!(hop.same_state(&hop.snapshot(all), &tumbling.snapshot(all)));
    // A slide that does not divide the size (refused by validation) falls back too.
    let odd = Window::hopping(WindowKind::Count, 100, 30, 1, 3);
    assert_eq!(odd.slide, odd.size);
}

#[test]
fn a_late_record_still_counts_in_its_windows_still_open() {
    let mut w = Window::hopping(WindowKind::Count, 30, 10, 1, 0);
    let mut got = Results::new();
    // Watermark 45: windows ending at or before 45 close ([10, 40) and earlier).
    collect(&mut got, &w.apply(0, &batch_of(&[("a", 15), ("a", 45)])));
    assert_eq!(
        got.keys().map(|(_, s, e)| (*s, *e)).collect::<Vec<_>>(),
        [(-10, 20), (0, 30), (10, 40)]
    );
    // t = 25 belongs to [0, 30), [10, 40) (both closed) and [20, 50) (open).
    collect(&mut got, &w.apply(0, &batch_of(&[("a", 25)])));
    assert_eq!(w.late(), 1);
    // t = 5 belongs only to closed windows: late, nothing changes.
    collect(&mut got, &w.apply(0, &batch_of(&[("a", 5)])));
    assert_eq!(w.late(), 2);
    collect(&mut got, &w.end_input(0));
    let count = |s: i64| got[&("a".to_string(), s, s + 30)];
    assert_eq!(
        (count(0), count(10)),
        (1, 1),
        "closed windows never re-emitted"
    );
    assert_eq!((count(20), count(30), count(40)), (2, 1, 1));
}

#[test]
fn snapshots_restore_exactly_and_only_into_the_same_shape() {
    let input = generated(3_000, 11);
    let (first, rest) = input.split_at(input.len() / 3);
    let mut whole = Window::hopping(WindowKind::Count, 100, 25, 1, 4);
    let (want, _, _) = run(&mut whole, &input);

    let mut a = Window::hopping(WindowKind::Count, 100, 25, 1, 4);
    let mut got = Results::new();
    for b in first {
        collect(&mut got, &a.apply(0, b));
    }
    let snap = a.snapshot(KeyGroupRange { start: 0, end: 256 });
    let mut b = Window::hopping(WindowKind::Count, 100, 25, 1, 4);
    b.restore(&snap).unwrap();
    let (after, _, seqs) = run(&mut b, rest);
    got.extend(after);
    assert_eq!(got, want);
    // Output seqs go on from where the snapshot was.
    assert_eq!(seqs.first().copied(), Some(a.emitted));

    for mut other in [
        Window::hopping(WindowKind::Count, 100, 50, 1, 4),
        Window::hopping(WindowKind::Count, 200, 25, 1, 4),
        Window::new(WindowKind::Count, 100, 1, 4),
    ] {
        assert!(matches!(other.restore(&snap), Err(StateError::Mismatch(_))));
        assert_eq!(other.open_windows(), 0);
    }
    for cut in 0..snap.len() {
        let mut c = Window::hopping(WindowKind::Count, 100, 25, 1, 4);
        assert!(c.restore(&snap[..cut]).is_err(), "truncated at {cut}");
    }
}

#[test]
fn extreme_times_do_not_panic() {
    for (size, slide) in [(3, 1), (1000, 10), (u64::MAX - 1, (u64::MAX - 1) / 2)] {
        let mut w = Window::hopping(WindowKind::Count, size, slide, 1, 0);
        let t = [
            ("a", i64::MIN),
            ("a", i64::MAX),
            ("b", -1),
            ("c", BASE_EVENT_TIME_MS),
        ];
        let n = w.apply(0, &batch_of(&t)).len() + w.end_input(0).len() + w.flush().len();
        assert!(n >= 3, "size {size} slide {slide}: {n}");
    }
}
