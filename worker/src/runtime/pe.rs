//! The task of one PE: sources emit, transforms and sinks process their inputs.
//!
//! A transform takes a batch from any input, runs its kernel, hands the output to its
//! router (waiting there while a consumer has no credit: backpressure reaches the
//! inputs because the PE stops taking batches), and only then marks the input batch
//! processed, which is what acknowledges it to a remote producer. When every input
//! has ended, the kernel flushes (windows emit what is left), the outputs end, and the
//! PE waits until its consumers processed everything before it reports finished.

use super::align::{Aligner, OnBarrier};
use super::checkpoint::{Ckpt, OwnRestore, PieceState};
use super::handoff::{self, Rounds};
use super::kernel::Kernel;
use super::router::Router;
use super::status::{PeRunState, PeStatus, Stopped};
use super::upgrade::Armed;
use super::BATCH_RECORDS;
use crate::background::Priority;
use crate::dataplane::{Input, InputEndpoint, Msg};
use crate::ops::{Generator, Nexmark};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::{StreamExt, StreamMap};
use weir_common::keygroup::KeyGroupRange;
use weir_common::record::Batch;
use weir_common::spec::{GeneratorParams, NexmarkParams};
use weir_proto::v1 as pb;

/// How often a `sink.verify` republishes its summary while records flow.
const VERIFY_EVERY: Duration = Duration::from_millis(100);

/// What a PE does after a barrier.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Flow {
    /// Go on.
    Continue,
    /// It drained at the barrier: its outputs ended; it is finished.
    Drained,
}

/// How long a successor waits for its predecessor's hand-off snapshot.
const HANDOFF_WAIT: Duration = Duration::from_secs(120);

impl Ckpt {
    /// Loads the state to restore: no part (empty state), one (a checkpoint of this
    /// PE) or several (snapshots of predecessors, to merge). On failure the PE reports
    /// it and fails.
    pub(crate) async fn load(&self, status: &PeStatus) -> Result<Vec<PieceState>, Stopped> {
        if !self.pieces.is_empty() {
            // A successor is ready (its kernel runs, its inputs are open) while it
            // waits for its predecessors' state, which only comes at the switch.
            status.set(PeRunState::Running);
            let mut parts = Vec::with_capacity(self.pieces.len());
            let mut notes = Vec::new();
            for p in &self.pieces {
                let wait = Duration::from_millis(p.wait_ms).min(HANDOFF_WAIT);
                match self.load_part(p, wait).await {
                    Ok((part, note)) => {
                        notes.push(format!("{}: {note}", p.pe));
                        parts.push(part);
                    }
                    Err(e) => {
                        tracing::error!(pe = %self.pe, from = %p.pe, barrier = p.checkpoint_id, error = %e, "cannot load a predecessor's state");
                        status
                            .restore_failed
                            .store(p.checkpoint_id, std::sync::atomic::Ordering::Release);
                        status.fail(format!("state of {}: {e}", p.pe));
                        return Err(Stopped::Failed);
                    }
                }
            }
            tracing::info!(pe = %self.pe, pieces = parts.len(), "state taken over");
            status.note(format!("state taken over from {}", notes.join("; ")));
            return Ok(parts);
        }
        Ok(self.load_own(status).await?.into_iter().collect())
    }

    /// Loads a predecessor's piece with what it builds on.
    async fn load_part(
        &self,
        p: &pb::RestorePiece,
        wait: Duration,
    ) -> Result<(PieceState, String), String> {
        let l = self
            .env
            .load_piece(&self.app, &p.pe, p.checkpoint_id, &p.locations, wait)
            .await?;
        self.env
            .with_base(
                &self.app,
                &p.pe,
                p.checkpoint_id,
                l,
                (&p.chain, &p.seed),
                Priority::Stream,
            )
            .await
    }

    /// Whether the state comes from other PEs (to merge and cut to the key groups).
    pub(crate) fn handoff(&self) -> Option<KeyGroupRange> {
        (!self.pieces.is_empty()).then_some(self.key_groups)
    }

    async fn load_own(&self, status: &PeStatus) -> Result<Option<PieceState>, Stopped> {
        let Some(OwnRestore {
            id,
            from,
            chain,
            seed,
        }) = &self.restore
        else {
            return Ok(None);
        };
        match self
            .env
            .load_chain(
                &self.app,
                &self.pe,
                *id,
                from,
                (chain, seed),
                Priority::Stream,
            )
            .await
        {
            Ok(Some((links, note))) => {
                tracing::info!(pe = %self.pe, checkpoint = id, %note, "state restored");
                status.note(note);
                Ok(Some(links))
            }
            Ok(None) => Ok(None),
            Err(e) => {
                tracing::error!(pe = %self.pe, checkpoint = id, error = %e, "cannot restore");
                status
                    .restore_failed
                    .store(*id, std::sync::atomic::Ordering::Release);
                status.fail(e);
                Err(Stopped::Failed)
            }
        }
    }

    /// Loads a source's checkpointed position (records emitted; 0 without state). On a
    /// failure the PE reports it and fails.
    pub(crate) async fn load_position(&self, status: &PeStatus) -> Result<u64, Stopped> {
        let mut position = 0;
        // Several parts (a predecessor per part) continue from the furthest.
        for part in self.load(status).await? {
            // A source's snapshot is always whole: a chain of one.
            let b = match &part.chain[..] {
                [(_, b)] => &b[..],
                _ => &[][..],
            };
            match <[u8; 8]>::try_from(b) {
                Ok(pos) => position = position.max(u64::from_le_bytes(pos)),
                Err(_) => {
                    status.fail(format!(
                        "restoring state: a source position is 8 bytes, got {}",
                        b.len()
                    ));
                    return Err(Stopped::Failed);
                }
            }
        }
        Ok(position)
    }

    /// A source added by an upgrade: waits (running, so triggers reach it) until the
    /// switch barrier is triggered. `Err`: the trigger channel closed.
    pub(crate) async fn wait_for_start(&mut self, status: &PeStatus) -> Result<(), Stopped> {
        if self.start_at == 0 {
            return Ok(());
        }
        status.set(PeRunState::Running);
        while let Some(id) = self.triggers.recv().await {
            if id >= self.start_at {
                tracing::info!(pe = %self.pe, barrier = id, "added source starts");
                return Ok(());
            }
        }
        Err(Stopped::TriggersClosed)
    }

    /// A source's part in checkpoint `id`: saves its position (nothing when it is 0, so
    /// a restore starts empty, unless it drains: its successor waits for a snapshot) and
    /// forwards the barrier after everything emitted before it; then the upgrade
    /// actions armed for `id`. The position is written on a task of its own
    /// ([`super::checkpoint::CheckpointEnv::spawn_save`]), unless the source drains:
    /// then it is durable before its successor takes over. On a failure the PE fails
    /// and `Err` says to stop.
    pub(crate) async fn source_barrier(
        &mut self,
        router: &mut Router,
        status: &Arc<PeStatus>,
        id: u64,
        position: u64,
    ) -> Result<Flow, Stopped> {
        let drains = self.armed.drains_at(id);
        let state = if position == 0 && !drains {
            Vec::new()
        } else {
            position.to_le_bytes().to_vec()
        };
        if drains {
            // Its successor loads this position at the switch.
            if let Err(e) = self
                .env
                .save(&self.app, &self.pe, id, (state, 0), 0, status)
                .await
            {
                status.fail(e);
                return Err(Stopped::Failed);
            }
        } else {
            self.env
                .spawn_save(&self.app, &self.pe, id, (state, 0), 0, status);
        }
        router.barrier(id).await;
        if drains {
            drained(&self.pe, router, status, id).await;
            return Ok(Flow::Drained);
        }
        self.armed.after_barrier(id, router).await;
        Ok(Flow::Continue)
    }
}

/// A PE that drained at barrier `id`: its outputs end once its consumers processed
/// everything, and it finishes without flushing (its state lives on in its successors).
async fn drained(pe: &str, router: &mut Router, status: &PeStatus, id: u64) {
    router.end().await;
    status.note(format!("drained at barrier {id}"));
    status.set(PeRunState::Finished);
    tracing::info!(%pe, barrier = id, "PE drained for an upgrade");
}

/// How long a drained PE waits for the end of its inputs after the switch barrier.
const ENDS_AFTER_DRAIN: Duration = Duration::from_secs(10);

/// Takes the end of every input of a PE that drained at barrier `id`. Each producer
/// ends the channel right after that barrier (it switched its route, or drained
/// too), and processing the end is what acknowledges it: without that, the
/// producer's end of the channel would keep reconnecting to a consumer that is gone,
/// and could attach to a later PE whose channel has the same name (a rollback brings
/// the same PE ids back) and end it early. Bounded: a producer that died ends nothing.
async fn take_ends(
    pe: &str,
    held: Vec<(usize, ReceiverStream<Msg>)>,
    eps: &[Arc<InputEndpoint>],
    armed: &Armed,
    id: u64,
) {
    let deadline = tokio::time::Instant::now() + ENDS_AFTER_DRAIN;
    for (i, mut rx) in held {
        let ep = &eps[i];
        match tokio::time::timeout_at(deadline, rx.next()).await {
            Ok(Some(Msg::End { seq })) => {
                ep.mark_processed(seq);
                armed.retire_input(ep);
            }
            Ok(Some(other)) => tracing::warn!(
                %pe, channel = %ep.key, barrier = id, seq = other.seq(),
                "a message after the drain barrier other than the end; left unacknowledged"
            ),
            Ok(None) => {}
            Err(_) => tracing::warn!(
                %pe, channel = %ep.key, barrier = id,
                "its producer did not end the channel after the drain barrier"
            ),
        }
    }
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
    let mut ckpt = ckpt;
    if handoff::restore(&ckpt, &mut kernel, &status).await.is_err() {
        return;
    }
    let mut rounds = Rounds::new();
    let mut completed = ckpt.env.completed(&ckpt.app);
    let mut watching = true;
    let mut eps: Vec<Arc<InputEndpoint>> = inputs.iter().map(|(ep, _)| ep.clone()).collect();
    let mut streams = StreamMap::new();
    for (i, (_, rx)) in inputs.into_iter().enumerate() {
        streams.insert(i, ReceiverStream::new(rx));
    }
    let mut ended = vec![false; eps.len()];
    // What alignment holds back is the input's stream: its later messages wait in its
    // queue until the stream goes back into `streams`.
    let mut align: Aligner<ReceiverStream<Msg>> = Aligner::new(Instant::now());
    status.set(PeRunState::Running);
    status.set_verify(kernel.verify_summary(false));
    let mut published = Instant::now();
    let mut deferred = Deferred::new();
    loop {
        let next = tokio::select! {
            biased;
            c = completed.changed(), if watching => {
                if c.is_err() {
                    watching = false;
                    continue;
                }
                let id = *completed.borrow_and_update();
                if let Err(e) = kernel.checkpoint_complete(id).await {
                    tracing::error!(%pe, error = %e, "PE failed");
                    status.fail(e.to_string());
                    return;
                }
                continue;
            }
            n = streams.next() => n,
            // Nothing to process: encode a slice of a snapshot taken at a barrier.
            () = std::future::ready(()), if kernel.encoding() => {
                kernel.encode_step();
                save_finished(&pe, &mut kernel, &ckpt, &status, &mut deferred);
                // The step ran on this async thread: let other PEs' tasks run too.
                tokio::task::yield_now().await;
                continue;
            }
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
                        status.fail(e.to_string());
                        return;
                    }
                }
                eps[i].mark_processed(seq);
            }
            Msg::Barrier { seq, id } => {
                eps[i].mark_processed(seq);
                let OnBarrier::Hold { release } = align.on_barrier(i, id, Instant::now()) else {
                    continue;
                };
                for (k, s) in release {
                    streams.insert(k, s);
                }
                if let Some(s) = streams.remove(&i) {
                    align.hold(i, s);
                }
            }
            Msg::End { seq } => {
                ended[i] = true;
                if let Some(out) = kernel.end_input(i).await {
                    status.gave(&out);
                    router.send(out).await;
                }
                eps[i].mark_processed(seq);
                ckpt.armed.retire_input(&eps[i]);
            }
        }
        // Armed to drain: ship the changes since the last checkpoint ahead of the
        // switch, a round at a time, for the successors to follow.
        if rounds.due() && kernel.takes_deltas() && ckpt.armed.draining() {
            if let Err(e) = rounds.ship(&mut kernel, &ckpt).await {
                // Its slots were taken off the list: no delta is whole any more.
                kernel.forget_changes();
                tracing::warn!(%pe, error = %e, "a hand-off round was not stored; the whole state will move");
            }
        }
        if kernel.encoding() {
            kernel.encode_step();
        }
        save_finished(&pe, &mut kernel, &ckpt, &status, &mut deferred);
        let live = ended.iter().filter(|e| !**e).count();
        if let Some(id) = align.aligned(live) {
            let waited = align.alignment(Instant::now());
            let drains = ckpt.armed.drains_at(id);
            let at = Barrier {
                id,
                alignment: waited,
                drains,
                rounds: &rounds,
            };
            let taken = snapshot(&pe, &mut kernel, &mut router, &status, &ckpt, at).await;
            // A snapshot still being encoded was finished first.
            save_finished(&pe, &mut kernel, &ckpt, &status, &mut deferred);
            match taken {
                Ok(Taken::Now) => {}
                Ok(Taken::Later) => deferred.push((id, waited, Instant::now())),
                Err(e) => {
                    tracing::error!(%pe, error = %e, "checkpoint failed");
                    status.fail(e);
                    return;
                }
            }
            if drains {
                let held = align.complete();
                tokio::join!(
                    take_ends(&pe, held, &eps, &ckpt.armed, id),
                    drained(&pe, &mut router, &status, id),
                );
                return;
            }
            for (k, s) in align.complete() {
                streams.insert(k, s);
            }
            // Inputs an upgrade added join now: everything before the barrier on the
            // old inputs has been processed.
            for (ep, rx) in ckpt.armed.after_barrier(id, &mut router).await {
                let k = eps.len();
                tracing::info!(%pe, channel = %ep.key, barrier = id, "new input joins");
                eps.push(ep);
                ended.push(false);
                kernel.add_input();
                streams.insert(k, ReceiverStream::new(rx));
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
    let finished = kernel.finish().await;
    // Flushing finished any snapshot still being encoded.
    save_finished(&pe, &mut kernel, &ckpt, &status, &mut deferred);
    match finished {
        Ok(Some(out)) => {
            status.gave(&out);
            router.send(out).await;
        }
        Ok(None) => {}
        Err(e) => {
            status.fail(e.to_string());
            return;
        }
    }
    status.set_verify(kernel.verify_summary(ended.iter().all(|e| *e)));
    router.end().await;
    status.set(PeRunState::Finished);
    tracing::info!(%pe, "PE finished: every input ended");
}

/// An aligned barrier: its id, how long alignment took, whether the PE drains at it
/// (and then the rounds it shipped before).
struct Barrier<'a> {
    id: u64,
    alignment: Duration,
    drains: bool,
    rounds: &'a Rounds,
}

/// Whether a checkpoint's snapshot was taken at its barrier or is encoded after it.
enum Taken {
    /// Taken, and being stored on a task of its own
    /// ([`super::checkpoint::CheckpointEnv::spawn_save`]); a drained window's is
    /// stored already, at the background priority.
    Now,
    /// Encoded after the barrier; stored by [`save_finished`].
    Later,
}

/// Snapshots encoded after their barrier, not stored yet: the checkpoint, how long its
/// alignment took and when its barrier passed.
type Deferred = Vec<(u64, Duration, Instant)>;

/// Stores the snapshots the kernel finished encoding after their barriers, on tasks of
/// their own ([`super::checkpoint::CheckpointEnv::spawn_save`]).
fn save_finished(
    pe: &str,
    kernel: &mut Kernel,
    ckpt: &Ckpt,
    status: &Arc<PeStatus>,
    deferred: &mut Deferred,
) {
    for (id, bytes, base) in kernel.take_finished() {
        let (alignment, barrier) = match deferred.iter().position(|(d, ..)| *d == id) {
            Some(i) => {
                let (_, a, at) = deferred.swap_remove(i);
                (a, at)
            }
            None => (Duration::ZERO, Instant::now()),
        };
        let encoded_ms = barrier.elapsed().as_millis() as u64;
        tracing::debug!(%pe, checkpoint = id, base, bytes = bytes.len(), encoded_ms, "snapshot encoded after its barrier");
        let alignment_ms = alignment.as_millis() as u64;
        ckpt.env
            .spawn_save(&ckpt.app, pe, id, (bytes, base), alignment_ms, status);
    }
}

/// Takes the snapshot of an aligned checkpoint, then forwards its barrier. A window
/// draining for an upgrade stores its hand-off envelope first and its whole snapshot
/// after forwarding (nothing changes its state after the barrier), so its successors
/// and consumers do not wait for the whole state to be written. A window's large
/// snapshot (increment or whole) is encoded after the barrier is forwarded
/// ([`Taken::Later`]).
async fn snapshot(
    pe: &str,
    kernel: &mut Kernel,
    router: &mut Router,
    status: &Arc<PeStatus>,
    ckpt: &Ckpt,
    at: Barrier<'_>,
) -> Result<Taken, String> {
    let Barrier {
        id,
        alignment,
        drains,
        rounds,
    } = at;
    let alignment_ms = alignment.as_millis() as u64;
    let envelope = drains
        .then(|| kernel.handoff_delta(ckpt.key_groups))
        .flatten()
        .map(|delta| {
            handoff::envelope(delta.as_ref().map(|(base, state)| handoff::Delta {
                base: *base,
                after: rounds.after(*base),
                more: false,
                // Read by nobody (successors judge rounds, not this), and older
                // successors read only the layout without it.
                shipped_ms: None,
                state,
            }))
        });
    let forwarded = envelope.is_some();
    if let Some(e) = envelope {
        handoff::store_envelope(&ckpt.env, &ckpt.app, pe, id, e).await?;
        router.barrier(id).await;
        tracing::debug!(%pe, checkpoint = id, "hand-off envelope stored, barrier forwarded");
    }
    let t0 = Instant::now();
    let taken = if forwarded {
        kernel
            .snapshot_drained(id, ckpt.key_groups)
            .await
            .map(|whole| Some((whole, 0)))
    } else {
        let complete = ckpt.env.known_complete(&ckpt.app);
        let defer_from = ckpt.env.defer_from();
        kernel
            .snapshot(id, ckpt.key_groups, complete, defer_from)
            .await
    }
    .map_err(|e| e.to_string())?;
    let Some(taken) = taken else {
        router.barrier(id).await;
        let took_ms = t0.elapsed().as_millis() as u64;
        tracing::debug!(%pe, checkpoint = id, took_ms, alignment_ms, "snapshot to encode after the barrier");
        return Ok(Taken::Later);
    };
    let (bytes, base, took_ms) = (taken.0.len(), taken.1, t0.elapsed().as_millis() as u64);
    status.set_verify(kernel.verify_summary(false));
    if forwarded {
        // A drained window's whole piece: nothing but the checkpoint's completion
        // waits, and the PE takes no more records.
        ckpt.env
            .save_at(
                &ckpt.app,
                pe,
                id,
                taken,
                alignment_ms,
                status,
                Priority::Background,
            )
            .await?;
    } else {
        ckpt.env
            .spawn_save(&ckpt.app, pe, id, taken, alignment_ms, status);
        router.barrier(id).await;
    }
    tracing::debug!(%pe, checkpoint = id, base, bytes, took_ms, alignment_ms, "snapshot taken");
    Ok(Taken::Now)
}

/// A source whose whole state is its position in its own sequence of records: what
/// [`run_positioned`] drives.
pub(crate) trait Positioned {
    /// The next batch of at most `max` records, or `None` when done.
    fn next_batch(&mut self, max: usize) -> Option<Batch>;
    /// The position of the next record (what a checkpoint saves).
    fn position(&self) -> u64;
    /// Goes on from `position` (a restored checkpoint's).
    fn seek(&mut self, position: u64);
}

impl Positioned for Generator {
    fn next_batch(&mut self, max: usize) -> Option<Batch> {
        Generator::next_batch(self, max)
    }
    fn position(&self) -> u64 {
        self.next_seq
    }
    fn seek(&mut self, position: u64) {
        self.next_seq = position;
    }
}

impl Positioned for Nexmark {
    fn next_batch(&mut self, max: usize) -> Option<Batch> {
        Nexmark::next_batch(self, max)
    }
    fn position(&self) -> u64 {
        self.next_seq
    }
    fn seek(&mut self, position: u64) {
        self.next_seq = position;
    }
}

/// Runs a `source.generator` PE (see [`run_positioned`]).
pub async fn run_generator(
    params: GeneratorParams,
    source: u32,
    index: u32,
    parallelism: u32,
    router: Router,
    status: Arc<PeStatus>,
    ckpt: Ckpt,
) {
    let rate = params.rate;
    let g = Generator::new(params, source, index, parallelism);
    run_positioned(g, rate, parallelism, router, status, ckpt).await;
}

/// Runs a `source.nexmark` PE (see [`run_positioned`]).
pub async fn run_nexmark(
    params: NexmarkParams,
    source: u32,
    index: u32,
    parallelism: u32,
    router: Router,
    status: Arc<PeStatus>,
    ckpt: Ckpt,
) {
    let rate = params.rate;
    let g = Nexmark::new(params, source, index, parallelism);
    run_positioned(g, rate, parallelism, router, status, ckpt).await;
}

/// Runs a source PE whose state is its position: restored, it goes on from there; at a
/// checkpoint barrier it saves the position and forwards the barrier. `rate` is
/// records/s over all `parallelism` PEs of the operator.
pub(crate) async fn run_positioned(
    mut g: impl Positioned,
    rate: Option<u64>,
    parallelism: u32,
    mut router: Router,
    status: Arc<PeStatus>,
    mut ckpt: Ckpt,
) {
    let rate = rate.map(|r| (r as f64 / f64::from(parallelism.max(1))).max(1.0));
    let pe = ckpt.pe.clone();
    match ckpt.load_position(&status).await {
        Ok(pos) => g.seek(pos),
        Err(_) => return,
    }
    if ckpt.wait_for_start(&status).await.is_err() {
        return;
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
            match ckpt
                .source_barrier(&mut router, &status, id, g.position())
                .await
            {
                Ok(Flow::Continue) => {}
                Ok(Flow::Drained) | Err(_) => return,
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
                        match ckpt.source_barrier(&mut router, &status, id, g.position()).await {
                            Ok(Flow::Continue) => {}
                            Ok(Flow::Drained) | Err(_) => return,
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
