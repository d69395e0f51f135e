use super::*;
use crate::runtime::kernel::{Kernel, Programs};
use std::fs;
use std::sync::mpsc;
use std::time::Duration;
use weir_common::record::{BatchBuilder, Value};
use weir_common::spec::{OperatorKind, OperatorSpec, SinkFileParams};

/// How long the blocking test waits for its runtime to finish before calling it stuck.
const STUCK_AFTER: Duration = Duration::from_secs(60);

fn file_spec(path: &Path) -> OperatorSpec {
    OperatorSpec {
        name: "out".into(),
        kind: OperatorKind::SinkFile(SinkFileParams {
            path: path.to_str().unwrap().into(),
        }),
        parallelism: 1,
        resources: Default::default(),
    }
}

/// The visible file is a FIFO: opening it to write (the first thing `start_fresh` does)
/// blocks until a reader opens it, and the reader is opened only once another task ran
/// on the runtime's one thread after the sink's call began. A kernel that made the call
/// on that thread would never let the other task run: the runtime stays stuck and the
/// test fails at its deadline (after unblocking the call so the process can exit).
#[test]
fn a_blocked_file_call_leaves_the_runtime_thread_free() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("out.jsonl");
    let made = std::process::Command::new("mkfifo")
        .arg(&path)
        .status()
        .unwrap();
    assert!(made.success(), "mkfifo");
    let (open_reader, reader_wanted) = mpsc::channel::<()>();
    let fifo = path.clone();
    std::thread::spawn(move || {
        if reader_wanted.recv().is_ok() {
            let _reader = fs::File::open(&fifo);
        }
    });
    let (done, finished) = mpsc::channel();
    let spec = file_spec(&path);
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(async move {
            let mut kernel = Kernel::build("out@1#0", &spec, 0, 1, 0, &[], &Programs::default())
                .await
                .unwrap();
            let (began, has_begun) = tokio::sync::oneshot::channel();
            let call = tokio::spawn(async move {
                began.send(()).unwrap();
                // A FIFO cannot be fsynced: whether this fails does not matter here.
                let _ = kernel
                    .restore(&[], None, crate::background::Priority::Stream)
                    .await;
            });
            // Runs only if the call's task gave the thread back while the call blocks.
            has_begun.await.unwrap();
            open_reader.send(()).unwrap();
            call.await.unwrap();
        });
        done.send(()).unwrap();
    });
    if finished.recv_timeout(STUCK_AFTER).is_err() {
        // The writer waits in open: a reader lets it (and the runtime) go on.
        let _reader = fs::File::open(&path);
        panic!("the sink's file call blocked the runtime's only thread");
    }
}

fn batch(n: usize) -> Batch {
    let mut b = BatchBuilder::default();
    b.push(0, n as u64, 0, b"", [("n", &Value::I64(n as i64))])
        .unwrap();
    b.finish()
}

#[tokio::test]
async fn the_calls_run_the_sinks_protocol() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("out.jsonl");
    let mut s = BlockingFileSink::open(path.to_str().unwrap().into(), 0, 1)
        .await
        .unwrap();
    s.start_fresh().await.unwrap();
    assert_eq!(s.write(&batch(0)).await.unwrap(), 1);
    s.snapshot(1).await.unwrap();
    s.write(&batch(1)).await.unwrap();
    assert_eq!(
        fs::read_to_string(&path).unwrap(),
        "",
        "nothing committed yet"
    );
    s.commit(1).await.unwrap();
    assert_eq!(fs::read_to_string(&path).unwrap().lines().count(), 1);
    s.finish().await.unwrap();
    assert_eq!(fs::read_to_string(&path).unwrap().lines().count(), 2);
}

/// A stopped PE's call that was already under way must not touch a file its successor
/// took over; calls of an instance that has not claimed the file yet take it over.
#[tokio::test]
async fn a_newer_instance_fences_the_older_one_out() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("out.jsonl");
    let name: String = path.to_str().unwrap().into();
    let mut old = BlockingFileSink::open(name.clone(), 0, 1).await.unwrap();
    old.start_fresh().await.unwrap();
    old.write(&batch(0)).await.unwrap();
    let snap = old.snapshot(1).await.unwrap();
    let mut new = BlockingFileSink::open(name.clone(), 0, 1).await.unwrap();
    new.restore(snap.into()).await.unwrap();
    assert!(matches!(
        old.commit(1).await,
        Err(FileCallError::Superseded(_))
    ));
    assert_eq!(fs::read_to_string(&path).unwrap().lines().count(), 1);
    // The newest instance's first call, whatever it is, takes over again.
    let mut newest = BlockingFileSink::open(name, 0, 1).await.unwrap();
    newest.write(&batch(1)).await.unwrap();
    assert!(matches!(
        new.write(&batch(2)).await,
        Err(FileCallError::Superseded(_))
    ));
}
