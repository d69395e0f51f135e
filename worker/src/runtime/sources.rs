//! Line sources: `source.file` and `source.tcp`.

use super::checkpoint::Ckpt;
use super::pe::Flow;
use super::router::Router;
use super::status::{PeRunState, PeStatus};
use super::BATCH_RECORDS;
use crate::ops::source::{push_line, FileSource};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncBufRead, AsyncBufReadExt, BufReader};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use weir_common::record::BatchBuilder;
use weir_common::spec::{SourceFileParams, SourceTcpParams};

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Runs a `source.file` PE. PE `index` of `parallelism` reads the lines that start in
/// its share of the file's bytes ([`FileSource::open_split`]). Its checkpointed state
/// is the number of records it emitted: restored, it skips that many (the file is
/// expected not to change underneath).
#[allow(clippy::too_many_arguments)]
pub async fn run_file(
    pe: String,
    p: SourceFileParams,
    source: u32,
    index: u32,
    parallelism: u32,
    mut router: Router,
    status: Arc<PeStatus>,
    mut ckpt: Ckpt,
) {
    let Ok(mut skip) = ckpt.load_position(&status).await else {
        return;
    };
    if ckpt.wait_for_start(&status).await.is_err() {
        return;
    }
    let mut position = skip;
    status.set(PeRunState::Running);
    let mut f = match FileSource::open_split(&p.path, p.format, source, index, parallelism) {
        Ok(f) => f,
        Err(e) => {
            status.fail(format!("source.file {}: {e}", p.path));
            return;
        }
    };
    loop {
        while let Ok(id) = ckpt.triggers.try_recv() {
            match ckpt
                .source_barrier(&mut router, &status, id, position)
                .await
            {
                Ok(Flow::Continue) => {}
                Ok(Flow::Drained) | Err(_) => return,
            }
        }
        match f.next_batch(BATCH_RECORDS, now_ms()) {
            Ok(Some(b)) if skip >= b.len() as u64 => skip -= b.len() as u64,
            Ok(Some(b)) => {
                let b = if skip > 0 {
                    let rest: Vec<u32> = (skip as u32..b.len() as u32).collect();
                    skip = 0;
                    b.gather(&rest)
                } else {
                    b
                };
                position += b.len() as u64;
                status.gave(&b);
                router.send(b).await;
            }
            Ok(None) => break,
            Err(e) => {
                status.fail(format!("source.file {}: {e}", p.path));
                return;
            }
        }
    }
    if f.bad_lines() > 0 {
        tracing::warn!(%pe, bad_lines = f.bad_lines(), "source.file skipped malformed lines");
    }
    router.end().await;
    status.set(PeRunState::Finished);
}

/// Runs a `source.tcp` PE: accepts any number of clients sending lines. PE `i` of a
/// parallel operator listens on the configured port plus `i`.
///
/// A TCP client cannot be asked to resend, so this source is at-most-once across a
/// failure: lines in flight when its region restarts are lost. At checkpoints it only
/// forwards the barrier.
pub async fn run_tcp(
    pe: String,
    p: SourceTcpParams,
    source: u32,
    index: u32,
    mut router: Router,
    status: Arc<PeStatus>,
    mut ckpt: Ckpt,
) {
    let addr = match p.listen.rsplit_once(':') {
        Some((host, port)) => match port.parse::<u32>() {
            Ok(port) => format!("{host}:{}", port + index),
            Err(_) => p.listen.clone(),
        },
        None => p.listen.clone(),
    };
    let listener = match TcpListener::bind(&addr).await {
        Ok(l) => l,
        Err(e) => {
            status.fail(format!("source.tcp cannot listen on {addr}: {e}"));
            return;
        }
    };
    tracing::info!(%pe, %addr, max_line_bytes = p.max_line_bytes(), "source.tcp listening");
    status.set(PeRunState::Running);
    let (tx, mut rx) = mpsc::channel::<String>(BATCH_RECORDS * 4);
    let accept = serve_clients(
        pe.clone(),
        listener,
        tx,
        p.max_line_bytes(),
        Arc::new(AtomicU64::new(0)),
    );
    tokio::pin!(accept);
    let mut b = BatchBuilder::default();
    let mut seq = 0u64;
    let mut bad = 0u64;
    loop {
        let line = tokio::select! {
            _ = &mut accept => return,
            Some(id) = ckpt.triggers.recv() => {
                if !b.is_empty() {
                    let batch = b.finish();
                    status.gave(&batch);
                    router.send(batch).await;
                }
                match ckpt.source_barrier(&mut router, &status, id, 0).await {
                    Ok(Flow::Continue) => continue,
                    Ok(Flow::Drained) | Err(_) => return,
                }
            }
            l = rx.recv() => l,
            // Idle: ship what has arrived so far.
            _ = tokio::time::sleep(Duration::from_millis(20)), if !b.is_empty() => None,
        };
        if let Some(line) = &line {
            match push_line(&mut b, line, p.format, source, seq, now_ms()) {
                Ok(()) => seq += 1,
                Err(e) => {
                    bad += 1;
                    tracing::debug!(%pe, error = %e, bad, "source.tcp skipped a malformed line");
                }
            }
        }
        if b.len() >= BATCH_RECORDS || (line.is_none() && !b.is_empty()) {
            let batch = b.finish();
            status.gave(&batch);
            router.send(batch).await;
        }
    }
}

/// Why a `source.tcp` client stopped being read.
#[derive(Debug, thiserror::Error)]
pub(crate) enum LineError {
    /// The client sent more than the line limit without a newline.
    #[error("a line exceeds {limit} bytes; the client is disconnected")]
    TooLong {
        /// The limit, bytes.
        limit: usize,
    },
    /// Reading failed (including a line that is not UTF-8).
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// Reads one line of at most `limit` bytes (its `\n` or `\r\n` removed) into a
/// string, reusing `buf`; `Ok(None)` at the end of input (a last line without a
/// newline is still returned). Whatever the peer sends, it holds at most `limit`
/// bytes plus one read buffer: unlike `lines()`, which grows until a newline comes.
pub(crate) async fn read_line_bounded<R: AsyncBufRead + Unpin>(
    r: &mut R,
    buf: &mut Vec<u8>,
    limit: usize,
) -> Result<Option<String>, LineError> {
    buf.clear();
    loop {
        let available = r.fill_buf().await?;
        if available.is_empty() {
            if buf.is_empty() {
                return Ok(None);
            }
            break;
        }
        let (take, newline) = match available.iter().position(|b| *b == b'\n') {
            Some(i) => (i, true),
            None => (available.len(), false),
        };
        // One byte over the limit may be the `\r` of a `\r\n` (not counted): the
        // exact length is checked once the line is complete.
        if buf.len() + take > limit.saturating_add(1) {
            return Err(LineError::TooLong { limit });
        }
        buf.extend_from_slice(&available[..take]);
        r.consume(take + usize::from(newline));
        if newline {
            break;
        }
    }
    if buf.last() == Some(&b'\r') {
        buf.pop();
    }
    if buf.len() > limit {
        return Err(LineError::TooLong { limit });
    }
    String::from_utf8(std::mem::take(buf))
        .map(Some)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e).into())
}

/// Accepts `source.tcp` clients on `listener` for ever, sending each line to `tx`. A
/// client sending a line over `max_line` bytes is disconnected (counted in
/// `oversized`, logged); the others are served on.
pub(crate) async fn serve_clients(
    pe: String,
    listener: TcpListener,
    tx: mpsc::Sender<String>,
    max_line: usize,
    oversized: Arc<AtomicU64>,
) {
    loop {
        let Ok((sock, peer)) = listener.accept().await else {
            continue;
        };
        let (tx, oversized, pe) = (tx.clone(), oversized.clone(), pe.clone());
        tokio::spawn(async move {
            let mut r = BufReader::new(sock);
            let mut buf = Vec::new();
            loop {
                match read_line_bounded(&mut r, &mut buf, max_line).await {
                    Ok(Some(l)) => {
                        if tx.send(l).await.is_err() {
                            return;
                        }
                    }
                    Ok(None) => return,
                    Err(e @ LineError::TooLong { .. }) => {
                        let n = oversized.fetch_add(1, Ordering::Relaxed) + 1;
                        tracing::warn!(%pe, %peer, error = %e, oversized = n, "source.tcp client dropped");
                        return;
                    }
                    Err(e) => {
                        tracing::warn!(%pe, %peer, error = %e, "source.tcp client failed");
                        return;
                    }
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    const DEADLINE: Duration = Duration::from_secs(30);

    #[tokio::test]
    async fn lines_up_to_the_limit_pass_longer_ones_fail() {
        let input = b"abc\r\nfour\n\nxxxxxyyyyy\nlast".to_vec();
        let mut r = BufReader::with_capacity(3, &input[..]);
        let mut buf = Vec::new();
        let mut got = Vec::new();
        loop {
            match read_line_bounded(&mut r, &mut buf, 5).await {
                Ok(Some(l)) => got.push(l),
                Ok(None) => break,
                Err(LineError::TooLong { limit }) => {
                    assert_eq!(limit, 5);
                    break;
                }
                Err(e) => panic!("{e}"),
            }
        }
        assert_eq!(got, vec!["abc", "four", ""]);

        // Exactly the limit (the \r of \r\n not counted), then end without a newline.
        let mut r = BufReader::with_capacity(2, &b"12345\r\n12345"[..]);
        assert_eq!(
            read_line_bounded(&mut r, &mut buf, 5)
                .await
                .unwrap()
                .unwrap(),
            "12345"
        );
        assert_eq!(
            read_line_bounded(&mut r, &mut buf, 5)
                .await
                .unwrap()
                .unwrap(),
            "12345"
        );
        assert!(read_line_bounded(&mut r, &mut buf, 5)
            .await
            .unwrap()
            .is_none());
    }

    #[tokio::test]
    async fn a_huge_line_holds_at_most_the_limit() {
        let ten_mb = vec![b'x'; 10 << 20];
        let mut r = BufReader::new(&ten_mb[..]);
        let mut buf = Vec::new();
        let err = read_line_bounded(&mut r, &mut buf, 1 << 20)
            .await
            .unwrap_err();
        assert!(matches!(err, LineError::TooLong { limit } if limit == 1 << 20));
        // One read buffer past the limit at most, never the 10 MB.
        assert!(buf.capacity() <= 2 << 20, "{}", buf.capacity());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_client_sending_10_mb_without_a_newline_is_dropped_others_served() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, mut rx) = mpsc::channel::<String>(16);
        let oversized = Arc::new(AtomicU64::new(0));
        let server = tokio::spawn(serve_clients(
            "src#0".into(),
            listener,
            tx,
            weir_common::spec::DEFAULT_MAX_LINE_BYTES as usize,
            oversized.clone(),
        ));

        let mut attacker = TcpStream::connect(addr).await.unwrap();
        let (mut rd, mut wr) = attacker.split();
        let attack = async {
            // Fails part way once the source hangs up; either way it ends.
            let _ = wr.write_all(&vec![b'x'; 10 << 20]).await;
        };
        let hung_up = async {
            let mut b = [0u8; 16];
            // The source never writes: the read ends only when it disconnects us.
            // An error (reset) is a disconnect too.
            if let Ok(n) = rd.read(&mut b).await {
                assert_eq!(n, 0);
            }
        };
        tokio::time::timeout(DEADLINE, async { tokio::join!(attack, hung_up) })
            .await
            .expect("the source disconnects a client sending an over-long line");
        assert_eq!(oversized.load(Ordering::Relaxed), 1);
        drop(attacker);

        // The source still serves others.
        let mut ok = TcpStream::connect(addr).await.unwrap();
        ok.write_all(b"{\"a\": 1}\nhello\n").await.unwrap();
        let first = tokio::time::timeout(DEADLINE, rx.recv())
            .await
            .unwrap()
            .unwrap();
        let second = tokio::time::timeout(DEADLINE, rx.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!((first.as_str(), second.as_str()), ("{\"a\": 1}", "hello"));
        assert_eq!(oversized.load(Ordering::Relaxed), 1);
        server.abort();
    }
}
