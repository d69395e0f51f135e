//! Line sources: `source.file` and `source.tcp`.

use super::pe::{Ckpt, Flow};
use super::router::Router;
use super::status::{PeRunState, PeStatus};
use super::BATCH_RECORDS;
use crate::ops::source::{push_line, FileSource};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};
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
    tracing::info!(%pe, %addr, "source.tcp listening");
    status.set(PeRunState::Running);
    let (tx, mut rx) = mpsc::channel::<String>(BATCH_RECORDS * 4);
    let accept = async move {
        loop {
            let Ok((sock, peer)) = listener.accept().await else {
                continue;
            };
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut lines = BufReader::new(sock).lines();
                loop {
                    match lines.next_line().await {
                        Ok(Some(l)) => {
                            if tx.send(l).await.is_err() {
                                return;
                            }
                        }
                        Ok(None) => return,
                        Err(e) => {
                            tracing::warn!(%peer, error = %e, "source.tcp client failed");
                            return;
                        }
                    }
                }
            });
        }
    };
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
