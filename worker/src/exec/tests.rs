//! Exec PEs against real child processes (`sh`, `python3`).

use super::*;
use std::collections::BTreeMap;
use std::time::Duration;
use weir_common::record::{Batch, BatchBuilder, Value};
use weir_common::spec::{ExecParams, PeProtocol};

type Rec = (u32, u64, i64, Vec<u8>, Vec<(String, Value)>);

fn example(name: &str) -> String {
    format!("{}/../examples/pe/{name}", env!("CARGO_MANIFEST_DIR"))
}

fn params(protocol: PeProtocol, command: &[&str]) -> ExecParams {
    ExecParams {
        command: command.iter().map(|s| s.to_string()).collect(),
        env: BTreeMap::new(),
        protocol,
    }
}

/// Short waits so failing programs do not slow the suite down.
fn quick() -> ExecConfig {
    ExecConfig {
        batch_timeout: Duration::from_secs(20),
        backoff: Duration::from_millis(1),
        max_backoff: Duration::from_millis(5),
        ..ExecConfig::default()
    }
}

fn batch(recs: &[Rec]) -> Batch {
    let mut b = BatchBuilder::default();
    for (source, seq, t, key, fields) in recs {
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
}

fn records(b: &Batch) -> Vec<Rec> {
    b.iter()
        .map(|r| {
            let fields = r.fields().map(|(n, v)| (n.to_string(), v)).collect();
            (r.source, r.seq, r.event_time_ms, r.key.to_vec(), fields)
        })
        .collect()
}

fn rec(source: u32, seq: u64, key: &str, fields: &[(&str, Value)]) -> Rec {
    let fields = fields
        .iter()
        .map(|(n, v)| (n.to_string(), v.clone()))
        .collect();
    (
        source,
        seq,
        1_700_000_000_000 + seq as i64,
        key.into(),
        fields,
    )
}

/// Records with a page, a number and a few other value types.
fn clicks(source: u32, seqs: std::ops::Range<u64>) -> Vec<Rec> {
    seqs.map(|seq| {
        rec(
            source,
            seq,
            &format!("user-{}", seq % 3),
            &[
                ("page", Value::Str(format!("/home/é{seq}"))),
                ("n", Value::I64(seq as i64)),
                ("ratio", Value::F64(seq as f64 + 0.5)),
                ("ok", Value::Bool(seq % 2 == 0)),
                ("none", Value::Null),
            ],
        )
    })
    .collect()
}

async fn start(p: &ExecParams, config: ExecConfig) -> ExecPe {
    ExecPe::start_with("pe-test", p, config).await.unwrap()
}

#[tokio::test]
async fn passthrough_sh_keeps_records_and_identity() {
    let p = params(PeProtocol::Lines, &["sh", &example("passthrough.sh")]);
    let mut pe = start(&p, quick()).await;
    for (source, seqs) in [(1, 0..5), (2, 100..103)] {
        let input = clicks(source, seqs);
        let out = pe.process(&batch(&input)).await.unwrap();
        assert_eq!(records(&out), input);
    }
    assert_eq!(pe.restarts(), 0);
    pe.shutdown().await;
}

#[tokio::test]
async fn upper_py_uppercases_page_and_keeps_identity() {
    let p = params(PeProtocol::Lines, &["python3", &example("upper.py")]);
    let mut pe = start(&p, quick()).await;
    let mut input = clicks(7, 10..14);
    // A record without `page` passes unchanged.
    input.push(rec(7, 14, "k", &[("other", Value::Str("x".into()))]));
    let out = pe.process(&batch(&input)).await.unwrap();
    let expected: Vec<Rec> = input
        .iter()
        .cloned()
        .map(|mut r| {
            for (name, value) in &mut r.4 {
                if let (true, Value::Str(s)) = (name == "page", &*value) {
                    *value = Value::Str(s.to_uppercase());
                }
            }
            r
        })
        .collect();
    assert_eq!(records(&out), expected);
    assert!(records(&out)[0].4[0].1 == Value::Str("/HOME/É10".into()));
    pe.shutdown().await;
}

#[tokio::test]
async fn empty_lines_batch_needs_no_round_trip() {
    let p = params(PeProtocol::Lines, &["sh", &example("passthrough.sh")]);
    let mut pe = start(&p, quick()).await;
    let out = pe.process(&batch(&[])).await.unwrap();
    assert!(out.is_empty());
    pe.shutdown().await;
}

#[tokio::test]
async fn a_script_filters_with_null_and_empty_lines() {
    let script = "import json, sys\n\
                  for line in sys.stdin:\n    \
                      n = json.loads(line)['n']\n    \
                      out = line.strip() if n % 3 == 0 else ('null' if n % 3 == 1 else '')\n    \
                      print(out, flush=True)\n";
    let p = params(PeProtocol::Lines, &["python3", "-c", script]);
    let mut pe = start(&p, quick()).await;
    let input = clicks(3, 0..10);
    let out = pe.process(&batch(&input)).await.unwrap();
    let kept: Vec<Rec> = input.into_iter().filter(|r| r.1 % 3 == 0).collect();
    assert_eq!(records(&out), kept);
    pe.shutdown().await;
}

#[tokio::test]
async fn key_field_replaces_the_key() {
    let script = "import json, sys\n\
                  for line in sys.stdin:\n    \
                      r = json.loads(line)\n    \
                      r['_key'] = r['page'] if r['n'] % 2 == 0 else r['n']\n    \
                      print(json.dumps(r), flush=True)\n";
    let p = params(PeProtocol::Lines, &["python3", "-c", script]);
    let mut pe = start(&p, quick()).await;
    let input = clicks(1, 0..4);
    let out = records(&pe.process(&batch(&input)).await.unwrap());
    assert_eq!(out.len(), 4);
    for (o, i) in out.iter().zip(&input) {
        let expected_key = match &i.4[0].1 {
            Value::Str(page) if i.1 % 2 == 0 => page.clone(),
            _ => i.1.to_string(),
        };
        assert_eq!(o.3, expected_key.as_bytes());
        assert_eq!((o.0, o.1, o.2), (i.0, i.1, i.2));
        // `_key` is consumed, the other fields stay in order.
        assert_eq!(o.4, i.4);
    }
    pe.shutdown().await;
}

#[tokio::test]
async fn framed_echo_round_trips_bytes() {
    let p = params(PeProtocol::Framed, &["python3", &example("framed_echo.py")]);
    let mut pe = start(&p, quick()).await;
    let mut input = clicks(4, 0..50);
    input.push(rec(
        4,
        50,
        "",
        &[("blob", Value::Bytes(vec![0, 255, 10, 13]))],
    ));
    for b in [batch(&input), batch(&[]), batch(&input[..1])] {
        let out = pe.process(&b).await.unwrap();
        assert_eq!(out.to_bytes(), b.to_bytes());
    }
    assert_eq!(pe.restarts(), 0);
    pe.shutdown().await;
}

#[tokio::test]
async fn a_crashed_program_is_restarted_and_its_batch_replayed() {
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("crashed");
    let mut p = params(PeProtocol::Lines, &["python3", &example("crash_once.py")]);
    p.env.insert(
        "CRASH_ONCE_MARKER".into(),
        marker.to_string_lossy().into_owned(),
    );
    p.env.insert("CRASH_ONCE_AFTER".into(), "3".into());
    let mut pe = start(&p, quick()).await;
    // 2 records answered, then 1 of the next 4 before the crash: that batch is
    // replayed whole to the new process and comes back once.
    let mut seen = Vec::new();
    let mut sent = Vec::new();
    for seqs in [0..2, 2..6, 6..9] {
        let input = clicks(9, seqs);
        seen.extend(records(&pe.process(&batch(&input)).await.unwrap()));
        sent.extend(input);
    }
    assert_eq!(seen, sent);
    assert!(marker.exists());
    assert_eq!(pe.restarts(), 1);
    pe.shutdown().await;
}

#[tokio::test]
async fn a_missing_program_is_an_error_naming_it() {
    let p = params(PeProtocol::Lines, &["weir-no-such-program-42", "--flag"]);
    let err = ExecPe::start("pe-x", &p).await.err().unwrap();
    assert!(matches!(err, ExecError::Spawn { .. }), "{err}");
    let msg = err.to_string();
    assert!(msg.contains("weir-no-such-program-42"), "{msg}");
    assert!(msg.contains("pe-x"), "{msg}");

    let empty = params(PeProtocol::Lines, &[]);
    let err = ExecPe::start("pe-x", &empty).await.err().unwrap();
    assert!(matches!(err, ExecError::EmptyCommand { .. }), "{err}");
}

#[tokio::test]
async fn garbage_answers_are_an_error_after_retries() {
    let script = "while IFS= read -r line; do echo 'this is not json'; done";
    let p = params(PeProtocol::Lines, &["sh", "-c", script]);
    let config = ExecConfig {
        max_failures: 3,
        ..quick()
    };
    let mut pe = start(&p, config).await;
    let err = pe.process(&batch(&clicks(1, 0..3))).await.unwrap_err();
    let ExecError::GaveUp {
        attempts, cause, ..
    } = &err
    else {
        panic!("unexpected error {err}");
    };
    assert_eq!(*attempts, 3);
    assert!(
        matches!(**cause, Failure::BadJson { line: 1, .. }),
        "{cause}"
    );
    assert_eq!(pe.restarts(), 2);
    assert!(err.to_string().contains("not JSON"), "{err}");
}

#[tokio::test]
async fn answers_that_are_not_objects_are_refused() {
    let script = "while IFS= read -r line; do echo '[1, 2]'; done";
    let p = params(PeProtocol::Lines, &["sh", "-c", script]);
    let config = ExecConfig {
        max_failures: 1,
        ..quick()
    };
    let mut pe = start(&p, config).await;
    let err = pe.process(&batch(&clicks(1, 0..1))).await.unwrap_err();
    assert!(
        matches!(err.failure(), Some(Failure::NotObject { line: 1 })),
        "{err}"
    );
}

#[tokio::test]
async fn an_exiting_program_reports_its_status_and_last_stderr_line() {
    let script = "read -r line; echo 'first' >&2; echo 'boom: bad input' >&2; exit 7";
    let p = params(PeProtocol::Lines, &["sh", "-c", script]);
    let config = ExecConfig {
        max_failures: 2,
        ..quick()
    };
    let mut pe = start(&p, config).await;
    let err = pe.process(&batch(&clicks(1, 0..3))).await.unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("exit status: 7"), "{msg}");
    assert!(msg.contains("boom: bad input"), "{msg}");
    assert!(msg.contains("failed 2 times"), "{msg}");
    // The next batch gets a fresh program (and fails the same way).
    assert!(pe.process(&batch(&clicks(1, 3..4))).await.is_err());
    assert_eq!(pe.restarts(), 3);
}

#[tokio::test]
async fn extra_answers_are_refused() {
    // Two answers per line, in one write so they arrive together.
    let script = "import sys\n\
                  for line in sys.stdin:\n    \
                      sys.stdout.write(line + line)\n    \
                      sys.stdout.flush()\n";
    let p = params(PeProtocol::Lines, &["python3", "-c", script]);
    let config = ExecConfig {
        max_failures: 1,
        ..quick()
    };
    let mut pe = start(&p, config).await;
    let err = pe.process(&batch(&clicks(1, 0..1))).await.unwrap_err();
    assert!(
        matches!(err.failure(), Some(Failure::Unsolicited(_))),
        "{err}"
    );
}

#[tokio::test]
async fn overlong_answer_lines_are_refused() {
    let p = params(PeProtocol::Lines, &["sh", &example("passthrough.sh")]);
    let config = ExecConfig {
        max_failures: 1,
        max_answer_bytes: 16,
        ..quick()
    };
    let mut pe = start(&p, config).await;
    let err = pe.process(&batch(&clicks(1, 0..1))).await.unwrap_err();
    assert!(
        matches!(
            err.failure(),
            Some(Failure::LineTooLong { line: 1, max: 16 })
        ),
        "{err}"
    );
}

#[tokio::test]
async fn a_silent_program_times_out() {
    let p = params(
        PeProtocol::Lines,
        &["sh", "-c", "while read -r line; do :; done"],
    );
    let config = ExecConfig {
        max_failures: 2,
        batch_timeout: Duration::from_millis(100),
        ..quick()
    };
    let mut pe = start(&p, config).await;
    let err = pe.process(&batch(&clicks(1, 0..2))).await.unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err.failure(), Some(Failure::Timeout(_))), "{msg}");
    assert!(msg.contains("killed by the worker"), "{msg}");
}

/// A framed program that reads a frame and answers with `answer` (Python bytes).
fn framed_liar(answer: &str) -> ExecParams {
    let script = format!(
        "import sys, struct\n\
         i, o = sys.stdin.buffer, sys.stdout.buffer\n\
         while True:\n    \
             h = i.read(4)\n    \
             if len(h) < 4: break\n    \
             i.read(struct.unpack('<I', h)[0])\n    \
             o.write({answer})\n    \
             o.flush()\n"
    );
    params(PeProtocol::Framed, &["python3", "-c", &script])
}

#[tokio::test]
async fn oversized_answer_frames_are_refused() {
    let p = framed_liar("struct.pack('<I', 17 << 20)");
    let config = ExecConfig {
        max_failures: 1,
        ..quick()
    };
    let mut pe = start(&p, config).await;
    let err = pe.process(&batch(&clicks(1, 0..2))).await.unwrap_err();
    assert!(
        matches!(err.failure(), Some(Failure::FrameTooLarge { len, max: MAX_FRAME_BYTES }) if *len == 17 << 20),
        "{err}"
    );
}

#[tokio::test]
async fn answer_frames_that_are_not_batches_are_refused() {
    let p = framed_liar("struct.pack('<I', 6) + b'\\x01\\x00\\x00\\x00ab'");
    let config = ExecConfig {
        max_failures: 2,
        ..quick()
    };
    let mut pe = start(&p, config).await;
    let err = pe.process(&batch(&clicks(1, 0..2))).await.unwrap_err();
    assert!(matches!(err.failure(), Some(Failure::BadBatch(_))), "{err}");
    assert!(err.to_string().contains("not a valid batch"), "{err}");
}

#[tokio::test]
async fn large_batches_flow_both_ways_across_a_crash() {
    // Megabytes each way: more than the pipes hold, so writing and reading must
    // overlap; the crash comes while the worker is still writing (broken pipe).
    let dir = tempfile::tempdir().unwrap();
    let mut p = params(PeProtocol::Lines, &["python3", &example("crash_once.py")]);
    p.env.insert(
        "CRASH_ONCE_MARKER".into(),
        dir.path().join("crashed").to_string_lossy().into_owned(),
    );
    p.env.insert("CRASH_ONCE_AFTER".into(), "10".into());
    let mut pe = start(&p, quick()).await;
    let input = clicks(2, 0..20_000);
    let out = pe.process(&batch(&input)).await.unwrap();
    assert_eq!(records(&out), input);
    assert_eq!(pe.restarts(), 1);
    pe.shutdown().await;
}

#[tokio::test]
async fn the_documented_lines_example_holds() {
    // docs/pe-protocol.md, lines mode worked example.
    let script = "import json, sys\n\
                  for line in sys.stdin:\n    \
                      r = json.loads(line)\n    \
                      if 'page' not in r:\n        \
                          print('null', flush=True)\n        \
                          continue\n    \
                      r['page'] = r['page'].upper()\n    \
                      r['_key'] = r['page']\n    \
                      print(json.dumps(r, separators=(',', ':')), flush=True)\n";
    let p = params(PeProtocol::Lines, &["python3", "-c", script]);
    let mut pe = start(&p, quick()).await;
    let s = |v: &str| Value::Str(v.into());
    let input = vec![
        (
            1,
            41,
            1_700_000_000_000,
            b"u1".to_vec(),
            vec![("page".into(), s("/home")), ("ms".into(), Value::I64(12))],
        ),
        (
            1,
            42,
            1_700_000_000_005,
            b"u2".to_vec(),
            vec![("page".into(), s("/cart")), ("ms".into(), Value::I64(340))],
        ),
        (
            2,
            7,
            1_700_000_000_009,
            b"u1".to_vec(),
            vec![("ms".into(), Value::I64(5))],
        ),
    ];
    let out = pe.process(&batch(&input)).await.unwrap();
    let expected: Vec<Rec> = vec![
        (
            1,
            41,
            1_700_000_000_000,
            b"/HOME".to_vec(),
            vec![("page".into(), s("/HOME")), ("ms".into(), Value::I64(12))],
        ),
        (
            1,
            42,
            1_700_000_000_005,
            b"/CART".to_vec(),
            vec![("page".into(), s("/CART")), ("ms".into(), Value::I64(340))],
        ),
    ];
    assert_eq!(records(&out), expected);
    pe.shutdown().await;
}

#[test]
fn the_documented_frame_example_holds() {
    // docs/pe-protocol.md, framed mode worked example.
    let documented = "2d 00 00 00 01 00 00 00 01 00 00 00 2a 00 00 00 00 00 00 00 \
                      00 68 e5 cf 8b 01 00 00 02 00 75 31 01 00 04 70 61 67 65 \
                      04 05 00 00 00 2f 68 6f 6d 65";
    let documented: Vec<u8> = documented
        .split_whitespace()
        .map(|b| u8::from_str_radix(b, 16).unwrap())
        .collect();
    let b = batch(&[(
        1,
        42,
        1_700_000_000_000,
        b"u1".to_vec(),
        vec![("page".into(), Value::Str("/home".into()))],
    )]);
    let mut frame = Vec::new();
    framed::encode(&b, &mut frame).unwrap();
    assert_eq!(frame, documented);
    let mut empty = Vec::new();
    framed::encode(&batch(&[]), &mut empty).unwrap();
    assert_eq!(empty, [4, 0, 0, 0, 0, 0, 0, 0]);
}

#[tokio::test]
async fn a_program_sees_its_gpus_and_no_others() {
    let script = "import json, os, sys\n\
                  for line in sys.stdin:\n    \
                      print(json.dumps({'gpus': os.environ['WEIR_GPUS'],\n                                        \
                                        'cuda': os.environ['CUDA_VISIBLE_DEVICES']}), flush=True)\n";
    let mut p = params(PeProtocol::Lines, &["python3", "-c", script]);
    // What the spec says loses to what the scheduler allocated.
    p.env
        .insert(CUDA_VISIBLE_DEVICES.into(), "GPU-not-yours".into());
    for (gpus, want) in [
        (
            vec!["GPU-a".to_string(), "GPU-b".to_string()],
            "GPU-a,GPU-b",
        ),
        (vec![], ""),
    ] {
        let mut pe = start(&with_gpus(&p, &gpus), quick()).await;
        let out = pe.process(&batch(&clicks(1, 0..1))).await.unwrap();
        let fields = &records(&out)[0].4;
        let text = |name: &str| {
            fields
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.clone())
        };
        assert_eq!(text("gpus"), Some(Value::Str(want.into())), "{gpus:?}");
        assert_eq!(text("cuda"), Some(Value::Str(want.into())), "{gpus:?}");
        pe.shutdown().await;
    }
}
