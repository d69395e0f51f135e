//! The task of one PE: sources emit, transforms and sinks process their inputs.
//!
//! A transform takes a batch from any input, runs its kernel, hands the output to its
//! router (waiting there while a consumer has no credit: backpressure reaches the
//! inputs because the PE stops taking batches), and only then marks the input batch
//! processed, which is what acknowledges it to a remote producer. When every input
//! has ended, the kernel flushes (windows emit what is left), the outputs end, and the
//! PE waits until its consumers processed everything before it reports finished.

use super::checkpoint::CheckpointEnv;
use super::kernel::Kernel;
use super::router::Router;
use super::status::{PeRunState, PeStatus};
use super::BATCH_RECORDS;
use crate::dataplane::{InputEndpoint, Msg};
use crate::ops::Generator;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::{StreamExt, StreamMap};
use weir_common::spec::GeneratorParams;
use weir_proto::v1 as pb;

/// One input of a PE: its endpoint and the queue it reads.
pub type Input = (Arc<InputEndpoint>, mpsc::Receiver<Msg>);

/// How often a `sink.verify` republishes its summary while records flow.
const VERIFY_EVERY: Duration = Duration::from_millis(100);

/// A PE's part in checkpoints: where to save snapshots, what to restore, and (for
/// sources) the barriers the master triggers.
pub struct Ckpt {
    /// App name.
    pub app: String,
    /// PE id.
    pub pe: String,
    /// Snapshot storage and completion notices.
    pub env: Arc<CheckpointEnv>,
    /// The checkpoint to restore and where its snapshot is.
    pub restore: Option<(u64, Vec<pb::SnapshotLocation>)>,
    /// Checkpoint barriers to inject (sources only).
    pub triggers: mpsc::Receiver<u64>,
}

impl Ckpt {
    /// Loads the state to restore, if any. On failure the PE reports it and fails.
    pub(crate) async fn load(&self, status: &PeStatus) -> Result<Option<bytes::Bytes>, ()> {
        let Some((id, from)) = &self.restore else {
            return Ok(None);
        };
        match self.env.load(&self.app, &self.pe, *id, from).await {
            Ok(Some(l)) => {
                tracing::info!(pe = %self.pe, checkpoint = id, note = %l.note, "state restored");
                status.note(l.note);
                Ok(Some(l.bytes))
            }
            Ok(None) => Ok(None),
            Err(e) => {
                tracing::error!(pe = %self.pe, checkpoint = id, error = %e, "cannot restore");
                status
                    .restore_failed
                    .store(*id, std::sync::atomic::Ordering::Release);
                status.fail(e);
                Err(())
            }
        }
    }

    /// Loads a source's checkpointed position (records emitted; 0 without state). On a
    /// failure the PE reports it and fails.
    pub(crate) async fn load_position(&self, status: &PeStatus) -> Result<u64, ()> {
        let Some(b) = self.load(status).await? else {
            return Ok(0);
        };
        match <[u8; 8]>::try_from(&b[..]) {
            Ok(pos) => Ok(u64::from_le_bytes(pos)),
            Err(_) => {
                status.fail(format!(
                    "restoring state: a source position is 8 bytes, got {}",
                    b.len()
                ));
                Err(())
            }
        }
    }

    /// A source's part in checkpoint `id`: saves its position (nothing when it is 0, so
    /// a restore starts empty) and forwards the barrier after everything emitted
    /// before it. On a failure the PE fails and `Err` says to stop.
    pub(crate) async fn source_barrier(
        &self,
        router: &mut Router,
        status: &Arc<PeStatus>,
        id: u64,
        position: u64,
    ) -> Result<(), ()> {
        let state = if position == 0 {
            Vec::new()
        } else {
            position.to_le_bytes().to_vec()
        };
        if let Err(e) = self
            .env
            .save(&self.app, &self.pe, id, state, 0, status)
            .await
        {
            status.fail(e);
            return Err(());
        }
        router.barrier(id).await;
        Ok(())
    }
}

/// Barrier alignment of a PE with several inputs: an input that delivered the barrier
/// being aligned is held back (its later records wait in its queue) until every other
/// input delivered it too or ended. A newer barrier supersedes an older alignment (the
/// older checkpoint was abandoned); an older one is dropped.
struct Aligner {
    id: u64,
    since: Instant,
    held: Vec<(usize, ReceiverStream<Msg>)>,
    /// The last checkpoint snapshotted.
    done: u64,
}

/// Runs a transform or sink until its inputs end (or it is aborted).
pub async fn run_consumer(
    pe: String,
    mut kernel: Kernel,
    mut router: Router,
    inputs: Vec<Input>,
    status: Arc<PeStatus>,
    ckpt: Ckpt,
) {
    let restored = match ckpt.load(&status).await {
        Ok(b) => b,
        Err(()) => return,
    };
    if let Err(e) = kernel.restore(restored.as_deref()) {
        status.restore_failed.store(
            ckpt.restore.as_ref().map_or(0, |r| r.0),
            std::sync::atomic::Ordering::Release,
        );
        status.fail(format!("restoring state: {e}"));
        return;
    }
    let mut completed = ckpt.env.completed(&ckpt.app);
    let mut watching = true;
    let eps: Vec<Arc<InputEndpoint>> = inputs.iter().map(|(ep, _)| ep.clone()).collect();
    let mut streams = StreamMap::new();
    for (i, (_, rx)) in inputs.into_iter().enumerate() {
        streams.insert(i, ReceiverStream::new(rx));
    }
    let mut ended = vec![false; eps.len()];
    let mut align = Aligner {
        id: 0,
        since: Instant::now(),
        held: Vec::new(),
        done: 0,
    };
    status.set(PeRunState::Running);
    status.set_verify(kernel.verify_summary(false));
    let mut published = Instant::now();
    loop {
        let next = tokio::select! {
            biased;
            c = completed.changed(), if watching => {
                if c.is_err() {
                    watching = false;
                    continue;
                }
                let id = *completed.borrow_and_update();
                if let Err(e) = kernel.checkpoint_complete(id) {
                    tracing::error!(%pe, error = %e, "PE failed");
                    status.fail(e);
                    return;
                }
                continue;
            }
            n = streams.next() => n,
        };
        let Some((i, msg)) = next else { break };
        match msg {
            Msg::Data { seq, batch } => {
                status.took(&batch);
                match kernel.process(i, &batch).await {
                    Ok(Some(out)) => {
                        status.gave(&out);
                        router.send(out).await;
                    }
                    Ok(None) => {}
                    Err(e) => {
                        tracing::error!(%pe, error = %e, "PE failed");
                        status.fail(e);
                        return;
                    }
                }
                eps[i].mark_processed(seq);
            }
            Msg::Barrier { seq, id } => {
                eps[i].mark_processed(seq);
                if id <= align.done || (align.id != 0 && id < align.id) {
                    continue;
                }
                if id > align.id {
                    // A newer checkpoint: release what an abandoned one held.
                    for (k, s) in align.held.drain(..) {
                        streams.insert(k, s);
                    }
                    align.id = id;
                    align.since = Instant::now();
                }
                if let Some(s) = streams.remove(&i) {
                    align.held.push((i, s));
                }
            }
            Msg::End { seq } => {
                ended[i] = true;
                if let Some(out) = kernel.end_input(i) {
                    status.gave(&out);
                    router.send(out).await;
                }
                eps[i].mark_processed(seq);
            }
        }
        let live = ended.iter().filter(|e| !**e).count();
        if align.id != 0 && align.held.len() == live {
            if let Err(e) = snapshot(&pe, &mut kernel, &mut router, &status, &ckpt, &align).await {
                tracing::error!(%pe, error = %e, "checkpoint failed");
                status.fail(e);
                return;
            }
            align.done = align.id;
            align.id = 0;
            for (k, s) in align.held.drain(..) {
                streams.insert(k, s);
            }
        }
        if ended.iter().all(|e| *e) {
            break;
        }
        if published.elapsed() >= VERIFY_EVERY {
            status.set_verify(kernel.verify_summary(false));
            published = Instant::now();
        }
    }
    match kernel.finish().await {
        Ok(Some(out)) => {
            status.gave(&out);
            router.send(out).await;
        }
        Ok(None) => {}
        Err(e) => {
            status.fail(e);
            return;
        }
    }
    status.set_verify(kernel.verify_summary(ended.iter().all(|e| *e)));
    router.end().await;
    status.set(PeRunState::Finished);
    tracing::info!(%pe, "PE finished: every input ended");
}

/// Takes the snapshot of an aligned checkpoint, then forwards its barrier.
async fn snapshot(
    pe: &str,
    kernel: &mut Kernel,
    router: &mut Router,
    status: &Arc<PeStatus>,
    ckpt: &Ckpt,
    align: &Aligner,
) -> Result<(), String> {
    let id = align.id;
    let alignment_ms = align.since.elapsed().as_millis() as u64;
    let bytes = kernel.snapshot(id)?;
    status.set_verify(kernel.verify_summary(false));
    ckpt.env
        .save(&ckpt.app, pe, id, bytes, alignment_ms, status)
        .await?;
    router.barrier(id).await;
    tracing::debug!(%pe, checkpoint = id, alignment_ms, "snapshot taken");
    Ok(())
}

/// Runs a `source.generator` PE. Its state is its position: restored, it goes on
/// from there; at a checkpoint barrier it saves the position and forwards the barrier.
pub async fn run_generator(
    params: GeneratorParams,
    source: u32,
    index: u32,
    parallelism: u32,
    mut router: Router,
    status: Arc<PeStatus>,
    mut ckpt: Ckpt,
) {
    let rate = params
        .rate
        .map(|r| (r as f64 / f64::from(parallelism.max(1))).max(1.0));
    let pe = ckpt.pe.clone();
    let mut g = Generator::new(params, source, index, parallelism);
    match ckpt.load_position(&status).await {
        Ok(pos) => g.next_seq = pos,
        Err(()) => return,
    }
    // At low rates, smaller batches keep the output smooth (about 100 batches/s).
    let per_batch = rate.map_or(BATCH_RECORDS, |r| {
        ((r / 100.0) as usize).clamp(1, BATCH_RECORDS)
    });
    status.set(PeRunState::Running);
    let start = Instant::now();
    let mut emitted = 0u64;
    loop {
        while let Ok(id) = ckpt.triggers.try_recv() {
            if ckpt
                .source_barrier(&mut router, &status, id, g.next_seq)
                .await
                .is_err()
            {
                return;
            }
        }
        let Some(b) = g.next_batch(per_batch) else {
            break;
        };
        status.gave(&b);
        emitted += b.len() as u64;
        router.send(b).await;
        if let Some(r) = rate {
            let due = Duration::from_secs_f64(emitted as f64 / r);
            if let Some(wait) = due.checked_sub(start.elapsed()) {
                // Pacing to the configured rate; a checkpoint trigger cuts the wait.
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    Some(id) = ckpt.triggers.recv() => {
                        if ckpt.source_barrier(&mut router, &status, id, g.next_seq).await.is_err() {
                            return;
                        }
                    }
                }
            }
        }
    }
    router.end().await;
    status.set(PeRunState::Finished);
    tracing::info!(%pe, records = emitted, "source finished");
}
