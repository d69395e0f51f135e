use super::*;
use std::io::Write;

fn one(line: &str, format: LineFormat) -> Result<Batch, LineError> {
    let mut b = BatchBuilder::default();
    push_line(&mut b, line, format, 4, 17, 1_000)?;
    Ok(b.finish())
}

#[test]
fn json_lines_become_records() {
    let b = one(
        r#"{"ts": 5, "key": "u1", "n": 2.5, "tags": [1, 2], "ok": true}"#,
        LineFormat::Json,
    )
    .unwrap();
    let r = b.iter().next().unwrap();
    assert_eq!(
        (r.source, r.seq, r.event_time_ms, r.key),
        (4, 17, 5, &b"u1"[..])
    );
    let fields: Vec<_> = r.fields().collect();
    assert_eq!(
        fields,
        [
            ("ts", Value::I64(5)),
            ("key", Value::Str("u1".into())),
            ("n", Value::F64(2.5)),
            ("tags", Value::Str("[1,2]".into())),
            ("ok", Value::Bool(true)),
        ]
    );
    // A numeric key is keyed by its text; a non-integer ts means "now".
    let r = one(r#"{"key": 12, "ts": "5"}"#, LineFormat::Json).unwrap();
    let r = r.iter().next().unwrap();
    assert_eq!((r.key, r.event_time_ms), (&b"12"[..], 1_000));
    let r = one(r#"{"ts": 1.5}"#, LineFormat::Json).unwrap();
    let r = r.iter().next().unwrap();
    assert_eq!((r.key, r.event_time_ms), (&b""[..], 1_000));
}

#[test]
fn raw_lines_are_kept_verbatim() {
    let b = one(r#"  {"not": parsed} "#, LineFormat::Raw).unwrap();
    let r = b.iter().next().unwrap();
    assert_eq!((r.key, r.event_time_ms), (&b""[..], 1_000));
    assert_eq!(
        r.fields().collect::<Vec<_>>(),
        [("line", Value::Str(r#"  {"not": parsed} "#.into()))]
    );
}

#[test]
fn malformed_lines_say_what_is_wrong() {
    assert!(matches!(
        one("{oops", LineFormat::Json),
        Err(LineError::Json(_))
    ));
    assert!(matches!(one("", LineFormat::Json), Err(LineError::Json(_))));
    assert_eq!(
        one("[1]", LineFormat::Json),
        Err(LineError::NotObject("an array"))
    );
    assert_eq!(
        one("42", LineFormat::Json),
        Err(LineError::NotObject("a number"))
    );
    let long_name = format!(r#"{{"{}": 1}}"#, "n".repeat(300));
    assert!(matches!(
        one(&long_name, LineFormat::Json),
        Err(LineError::Record(_))
    ));
    let long_key = format!(r#"{{"key": "{}"}}"#, "k".repeat(70_000));
    assert!(matches!(
        one(&long_key, LineFormat::Json),
        Err(LineError::Record(_))
    ));
    assert!(LineError::NotObject("null")
        .to_string()
        .contains("JSON object"));
}

fn file(content: &[u8]) -> tempfile::NamedTempFile {
    let mut f = tempfile::NamedTempFile::new().unwrap();
    f.write_all(content).unwrap();
    f
}

fn seqs_and_lines(src: &mut FileSource, max: usize) -> Vec<Vec<(u64, String)>> {
    std::iter::from_fn(|| src.next_batch(max, 0).unwrap())
        .map(|b| {
            b.iter()
                .map(|r| {
                    (
                        r.seq,
                        r.field("line").map(|v| v.to_string()).unwrap_or_default(),
                    )
                })
                .collect()
        })
        .collect()
}

#[test]
fn file_source_reads_batches_and_skips_bad_lines() {
    let content = b"{\"a\":1}\n{bad\n\n{\"a\":2}\r\n   \n[3]\n\xff\xfe\n{\"a\":3}\n{\"a\":4}";
    let f = file(content);
    let mut src = FileSource::open(f.path().to_str().unwrap(), LineFormat::Json, 2).unwrap();
    let mut all = Vec::new();
    let mut sizes = Vec::new();
    while let Some(b) = src.next_batch(3, 99).unwrap() {
        sizes.push(b.len());
        all.extend(
            b.iter()
                .map(|r| (r.source, r.seq, r.event_time_ms, r.field("a"))),
        );
    }
    assert_eq!(sizes, [3, 1]);
    let expected: Vec<_> = (0..4)
        .map(|i| (2, i, 99, Some(Value::I64(i as i64 + 1))))
        .collect();
    assert_eq!(all, expected);
    assert_eq!((src.bad_lines(), src.next_seq), (3, 4));
    assert_eq!(src.next_batch(3, 0).unwrap(), None);

    let mut raw = FileSource::open(f.path().to_str().unwrap(), LineFormat::Raw, 0).unwrap();
    let lines: Vec<_> = seqs_and_lines(&mut raw, 100).concat();
    assert_eq!(
        lines.len(),
        8,
        "raw keeps blank lines; only non-UTF-8 is bad"
    );
    assert_eq!(lines[3], (3, r#"{"a":2}"#.to_string()), "\\r\\n stripped");
    assert_eq!(raw.bad_lines(), 1);
}

#[test]
fn overlong_lines_are_skipped_without_being_kept() {
    let mut content = b"first\n".to_vec();
    content.extend(std::iter::repeat_n(b'x', MAX_LINE_BYTES + 10));
    content.extend_from_slice(b"\nlast\n");
    let f = file(&content);
    let mut src = FileSource::open(f.path().to_str().unwrap(), LineFormat::Raw, 0).unwrap();
    let got = seqs_and_lines(&mut src, 10).concat();
    assert_eq!(got, [(0, "first".to_string()), (1, "last".to_string())]);
    assert_eq!(src.bad_lines(), 1);
}

#[test]
fn resumes_from_a_recorded_seq() {
    let content: String = (0..50)
        .map(|i| {
            if i % 7 == 3 {
                "oops\n".to_string()
            } else {
                format!("{{\"i\":{i}}}\n")
            }
        })
        .collect();
    let f = file(content.as_bytes());
    let path = f.path().to_str().unwrap();
    let mut a = FileSource::open(path, LineFormat::Json, 0).unwrap();
    a.next_batch(20, 0).unwrap().unwrap();
    let checkpoint = a.next_seq;
    let rest_a = a.next_batch(1000, 0).unwrap().unwrap();

    let mut b = FileSource::open(path, LineFormat::Json, 0).unwrap();
    b.skip_to(checkpoint).unwrap();
    assert_eq!(b.next_seq, checkpoint);
    assert_eq!(b.next_batch(1000, 0).unwrap().unwrap(), rest_a);
    // Backwards: reopens and skips again.
    b.skip_to(5).unwrap();
    let again = b.next_batch(1, 0).unwrap().unwrap();
    assert_eq!(again.iter().next().map(|r| r.seq), Some(5));
    // Past the end: stops at the end.
    b.skip_to(10_000).unwrap();
    assert_eq!((b.next_seq, b.bad_lines()), (43, 7));
    assert_eq!(b.next_batch(10, 0).unwrap(), None);
}

#[test]
fn a_missing_file_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    assert!(FileSource::open(
        dir.path().join("nope").to_str().unwrap(),
        LineFormat::Json,
        0
    )
    .is_err());
}

/// Every line's text, in the order the PE read them.
fn lines_of(src: &mut FileSource) -> Vec<String> {
    seqs_and_lines(src, 7)
        .into_iter()
        .flatten()
        .map(|(_, l)| l)
        .collect()
}

#[test]
fn parallel_readers_split_the_file_and_read_every_line_once() {
    // Lines of uneven length (empty ones included), with and without a final newline.
    let lines: Vec<String> = (0..200)
        .map(|i| "x".repeat((i * 37) % 23) + &i.to_string())
        .chain(["".to_string(), "".to_string(), "tail".to_string()])
        .collect();
    for last_newline in [true, false] {
        let mut content = lines.join("\n");
        if last_newline {
            content.push('\n');
        }
        let f = file(content.as_bytes());
        let path = f.path().to_str().unwrap();
        for p in [1u32, 2, 3, 7, 64, 5000] {
            let mut all = Vec::new();
            for i in 0..p {
                let mut src = FileSource::open_split(path, LineFormat::Raw, i, i, p).unwrap();
                all.extend(lines_of(&mut src));
            }
            assert_eq!(all, lines, "{p} readers, final newline {last_newline}");
        }
    }
    // An empty file: nobody reads anything.
    let f = file(b"");
    let path = f.path().to_str().unwrap();
    for i in 0..3 {
        let mut src = FileSource::open_split(path, LineFormat::Raw, 0, i, 3).unwrap();
        assert!(lines_of(&mut src).is_empty());
    }
}

#[test]
fn a_reader_of_a_split_resumes_within_its_own_range() {
    let content: String = (0..100).map(|i| format!("line-{i}\n")).collect();
    let f = file(content.as_bytes());
    let path = f.path().to_str().unwrap();
    let mut a = FileSource::open_split(path, LineFormat::Raw, 1, 1, 3).unwrap();
    let mine = lines_of(&mut a);
    assert!(!mine.is_empty() && mine.len() < 100, "{}", mine.len());
    let mut b = FileSource::open_split(path, LineFormat::Raw, 1, 1, 3).unwrap();
    b.skip_to(5).unwrap();
    assert_eq!(lines_of(&mut b), mine[5..]);
    // Backwards: back to the start of its range, not of the file.
    b.skip_to(2).unwrap();
    assert_eq!(lines_of(&mut b), mine[2..]);
}
