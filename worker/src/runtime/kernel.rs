//! What a non-source PE does with each batch: one of the operator kernels.

use super::checkpoint::PieceState;
use super::file_sink::{BlockingFileSink, FileCallError};
use super::status::PeStatus;
use crate::background::Priority;
use crate::container::{ContainerEngine, Progress};
use crate::exec::{ExecConfig, ExecError, ExecLimits, ExecPe, LocalLaunch};
use crate::ops::window::{Finished, ENCODE_STEP};
use crate::ops::{Filter, KeyBy, Map, StateError, Verify, Window, WindowKind};
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use weir_common::keygroup::KeyGroupRange;
use weir_common::record::Batch;
use weir_common::spec::{OperatorKind, OperatorSpec};
use weir_proto::v1 as pb;

/// A transform or sink kernel.
pub enum Kernel {
    /// `map`.
    Map(Map),
    /// `filter`.
    Filter(Filter),
    /// `key_by`.
    KeyBy(KeyBy),
    /// `window.count` / `window.sum`.
    Window(Window),
    /// `exec` or `container`: a program, local or in a container.
    Exec(Box<ExecPe>),
    /// `sink.verify`.
    Verify(Verify),
    /// `sink.file`, its file calls made on blocking threads.
    File(BlockingFileSink),
    /// `sink.tcp` (at-least-once: a reconnect may repeat the lines of one batch).
    Tcp(TcpSink),
    /// `sink.null`.
    Null,
}

/// Why a kernel could not be built or failed; the PE fails with this message.
#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    /// The operator's parameters are not valid (e.g. a `map` expression).
    #[error("{0}")]
    Spec(String),
    /// The operator is a source: it has no kernel.
    #[error("{0} is not a transform or sink")]
    NotAKernel(&'static str),
    /// A container PE on a worker without a Docker Engine.
    #[error("container {image}: this worker has no Docker Engine")]
    NoContainerEngine {
        /// The container's image.
        image: String,
    },
    /// A program (local or in a container) failed to start or to process.
    #[error(transparent)]
    Program(#[from] ExecError),
    /// `sink.file` could not prepare its directories.
    #[error("sink.file {path}: {source}")]
    FileOpen {
        /// The path in the spec.
        path: String,
        /// What failed.
        source: FileCallError,
    },
    /// A `sink.file` write, finish or restore failed.
    #[error("sink.file: {0}")]
    File(FileCallError),
    /// A `sink.file` pre-commit (snapshot at a barrier) failed.
    #[error("sink.file snapshot: {0}")]
    FileSnapshot(FileCallError),
    /// A `sink.file` commit failed.
    #[error("sink.file commit: {0}")]
    FileCommit(FileCallError),
    /// Checkpointed state could not be restored.
    #[error(transparent)]
    State(#[from] StateError),
}

/// What a program PE needs beyond its spec: whose it is (a container's labels, name
/// and network) and the engine its containers run on.
#[derive(Clone, Debug, Default)]
pub struct Programs {
    /// The app's tenant.
    pub tenant: String,
    /// The app.
    pub app: String,
    /// The PE's recovery attempt.
    pub attempt: u64,
    /// The local Docker Engine; `None` where the worker has none.
    pub containers: Option<ContainerEngine>,
    /// The PE's status, where its start-up shows what it waits for (an image pull).
    pub status: Arc<PeStatus>,
}

impl Kernel {
    /// Builds the kernel of a transform or sink operator. `gpus` are the devices the
    /// master allocated to the PE (an exec program is shown those and no others; a
    /// container is given exactly those).
    pub async fn build(
        pe: &str,
        spec: &OperatorSpec,
        index: u32,
        inputs: usize,
        out_source: u32,
        gpus: &[String],
        programs: &Programs,
    ) -> Result<Self, KernelError> {
        Ok(match &spec.kind {
            OperatorKind::Map(p) => Kernel::Map(Map::new(p).map_err(KernelError::Spec)?),
            OperatorKind::Filter(p) => Kernel::Filter(Filter::new(p).map_err(KernelError::Spec)?),
            OperatorKind::KeyBy(p) => Kernel::KeyBy(KeyBy::new(p)),
            OperatorKind::WindowCount(p) => Kernel::Window(Window::new(
                WindowKind::Count,
                p.size_ms,
                inputs,
                out_source,
            )),
            OperatorKind::WindowHop(p) => Kernel::Window(Window::hopping(
                WindowKind::Count,
                p.size_ms,
                p.slide_ms,
                inputs,
                out_source,
            )),
            OperatorKind::WindowSum(p) => Kernel::Window(Window::new(
                WindowKind::Sum {
                    field: p.field.clone(),
                },
                p.size_ms,
                inputs,
                out_source,
            )),
            OperatorKind::Exec(p) => {
                // The declared memory bounds the program (`ExecLimits`).
                let launch = LocalLaunch::new(crate::exec::with_gpus(p, gpus))
                    .with_limits(ExecLimits::for_resources(&spec.resources));
                Kernel::Exec(Box::new(
                    ExecPe::launch(pe, Arc::new(launch), ExecConfig::default()).await?,
                ))
            }
            OperatorKind::SinkVerify(p) => Kernel::Verify(Verify::new(p.expect)),
            OperatorKind::SinkFile(p) => Kernel::File(
                BlockingFileSink::open(p.path.clone(), index, spec.parallelism)
                    .await
                    .map_err(|source| KernelError::FileOpen {
                        path: p.path.clone(),
                        source,
                    })?,
            ),
            OperatorKind::SinkTcp(p) => Kernel::Tcp(TcpSink::new(p.address.clone())),
            OperatorKind::SinkNull => Kernel::Null,
            OperatorKind::Container(p) => {
                let Some(engine) = &programs.containers else {
                    return Err(KernelError::NoContainerEngine {
                        image: p.image.clone(),
                    });
                };
                let launch = engine
                    .launcher(
                        &programs.tenant,
                        &programs.app,
                        pe,
                        programs.attempt,
                        p,
                        &spec.resources,
                        gpus,
                    )
                    .with_progress({
                        let status = programs.status.clone();
                        Progress::new(move |text| status.note(text))
                    });
                Kernel::Exec(Box::new(
                    ExecPe::launch(pe, Arc::new(launch), ExecConfig::default()).await?,
                ))
            }
            other => return Err(KernelError::NotAKernel(other.name())),
        })
    }

    /// Processes one batch from input `input`; returns what to emit.
    pub async fn process(
        &mut self,
        input: usize,
        batch: &Batch,
    ) -> Result<Option<Batch>, KernelError> {
        Ok(match self {
            Kernel::Map(m) => Some(m.apply(batch)),
            Kernel::Filter(f) => Some(f.apply(batch)),
            Kernel::KeyBy(k) => Some(k.apply(batch)),
            Kernel::Window(w) => {
                w.take(input, batch);
                Some(close(w).await)
            }
            Kernel::Exec(e) => Some(e.process(batch).await?),
            Kernel::Verify(v) => {
                v.apply(batch);
                None
            }
            Kernel::File(f) => {
                f.write(batch).await.map_err(KernelError::File)?;
                None
            }
            Kernel::Tcp(t) => {
                t.write(batch).await;
                None
            }
            Kernel::Null => None,
        })
    }

    /// Input `input` ended; returns what that closes.
    pub async fn end_input(&mut self, input: usize) -> Option<Batch> {
        match self {
            Kernel::Window(w) => {
                w.end(input);
                Some(close(w).await)
            }
            _ => None,
        }
    }

    /// Every input ended; returns what is left to emit. A `sink.file` makes all its
    /// output visible.
    pub async fn finish(&mut self) -> Result<Option<Batch>, KernelError> {
        Ok(match self {
            Kernel::Window(w) if w.open_windows() >= CLOSE_OFF_THREAD_FROM => {
                Some(off_thread(w, Priority::Stream, Window::flush).await)
            }
            Kernel::Window(w) => Some(w.flush()),
            Kernel::File(f) => {
                f.finish().await.map_err(KernelError::File)?;
                None
            }
            _ => None,
        })
    }

    /// The state to checkpoint at barrier `id`, and the checkpoint it builds on (0:
    /// whole); empty for kernels without state. A window snapshots the keys of `groups`
    /// (its own: parts of several predecessors then carry disjoint groups), only what
    /// changed since its newest snapshot taken at one of the checkpoints in `complete`
    /// (those of the app this worker knows complete; `ops/window/incremental.rs`), and
    /// tracks changes from here. `None`: a snapshot of `defer_from` slots or more (an
    /// increment listing them, or a whole one holding them) is encoded after the
    /// barrier ([`Kernel::encode_step`], `ops/window/encoding.rs`) and comes from
    /// [`Kernel::take_finished`].
    pub async fn snapshot(
        &mut self,
        id: u64,
        groups: KeyGroupRange,
        complete: BTreeSet<u64>,
        defer_from: usize,
    ) -> Result<Option<(Vec<u8>, u64)>, KernelError> {
        Ok(match self {
            Kernel::Window(w) => {
                w.defer_from(defer_from);
                off_thread(w, Priority::Stream, move |w| {
                    w.begin_checkpoint(id, groups, |m| complete.contains(&m))
                })
                .await
            }
            Kernel::Verify(v) => Some((v.snapshot(), 0)),
            Kernel::File(f) => Some((f.snapshot(id).await.map_err(KernelError::FileSnapshot)?, 0)),
            _ => Some((Vec::new(), 0)),
        })
    }

    /// Whether a snapshot is being encoded after its barrier.
    pub fn encoding(&self) -> bool {
        matches!(self, Kernel::Window(w) if w.encoding())
    }

    /// Encodes a slice of the snapshot being encoded after its barrier: a few
    /// milliseconds, between batches.
    pub fn encode_step(&mut self) {
        if let Kernel::Window(w) = self {
            w.encode_step(ENCODE_STEP);
        }
    }

    /// The snapshots finished after their barriers since the last call.
    pub fn take_finished(&mut self) -> Vec<Finished> {
        match self {
            Kernel::Window(w) => w.take_finished(),
            _ => Vec::new(),
        }
    }

    /// [`Kernel::snapshot`] for a window drained at an upgrade's switch, once it has
    /// forwarded the barrier: nothing waits on this snapshot but the checkpoint's
    /// completion, so a window encodes it at the background priority
    /// ([`crate::background`]) instead of taking cores from its successors, and
    /// drops its state there (it holds none after).
    /// Always whole: its successors restore from it without a chain (and from it,
    /// with its rounds and envelope, at the switch).
    pub async fn snapshot_drained(
        &mut self,
        id: u64,
        groups: KeyGroupRange,
    ) -> Result<Vec<u8>, KernelError> {
        match self {
            Kernel::Window(w) => {
                let mut taken = std::mem::replace(w, w.cleared());
                let (finished, s) = crate::background::run(move || {
                    let s = taken.snapshot(groups);
                    // Finishes an increment still being encoded.
                    taken.mark(id);
                    // The state is dropped here too: freeing a 333 MB window took
                    // the PE's async thread for tens of milliseconds.
                    (taken.take_finished(), s)
                })
                .await;
                w.hand_back(finished);
                Ok(s)
            }
            // No increment: nothing is ever complete after a drained PE's last snapshot.
            _ => Ok(self
                .snapshot(id, groups, BTreeSet::new(), usize::MAX)
                .await?
                .map(|(bytes, _)| bytes)
                .unwrap_or_default()),
        }
    }

    /// For a window draining at an upgrade's switch: the checkpoint its delta is
    /// against and the delta of `groups` since (inner `None`: no delta, its
    /// successors load the whole snapshot); `None` for other kernels, whose successors
    /// never pre-copy.
    pub fn handoff_delta(&self, groups: KeyGroupRange) -> Option<Option<(u64, Vec<u8>)>> {
        let Kernel::Window(w) = self else { return None };
        Some(w.delta_base().zip(w.delta(groups)))
    }

    /// For a window waiting to drain: up to `max` changed slots of `groups` to ship
    /// ahead of the switch, the checkpoint they are against, and whether more changed
    /// slots were left for later rounds.
    pub fn handoff_round(
        &mut self,
        groups: KeyGroupRange,
        max: usize,
    ) -> Option<(u64, Vec<u8>, bool)> {
        let Kernel::Window(w) = self else { return None };
        let base = w.delta_base()?;
        let round = w.round(groups, max)?;
        Some((base, round, w.pending() > 0))
    }

    /// Stops tracking changes until the next full snapshot: a round that could not be
    /// stored leaves no delta to trust (the successors load the whole snapshot).
    pub fn forget_changes(&mut self) {
        if let Kernel::Window(w) = self {
            w.forget_changes();
        }
    }

    /// Applies a predecessor's round over a pre-copied state.
    pub async fn apply_round(
        &mut self,
        delta: Vec<u8>,
        groups: KeyGroupRange,
    ) -> Result<(), KernelError> {
        if let Kernel::Window(w) = self {
            off_thread(w, Priority::Stream, move |w| {
                w.apply_round(&delta, Some(groups))
            })
            .await?;
        }
        Ok(())
    }

    /// Whether the kernel takes an upgrade's state as a pre-copy and deltas.
    pub fn takes_deltas(&self) -> bool {
        matches!(self, Kernel::Window(_))
    }

    /// The state is its predecessors' at the upgrade switch `at` (merged from their
    /// whole snapshots there, `bytes` in all, or brought there by pre-copy and deltas):
    /// a window's first increments build on those snapshots (`Window::seed`).
    pub fn seed(&mut self, at: u64, bytes: u64) {
        if let Kernel::Window(w) = self {
            w.seed(at, bytes);
        }
    }

    /// Forgets all state (a pre-copy that cannot be completed by deltas).
    pub fn clear_state(&mut self) {
        if let Kernel::Window(w) = self {
            *w = w.cleared();
        }
    }

    /// Brings a pre-copied state up to the switch barrier with the predecessors'
    /// deltas, keeping the key groups of `groups`.
    pub async fn apply_deltas(
        &mut self,
        deltas: Vec<Vec<u8>>,
        groups: KeyGroupRange,
    ) -> Result<(), KernelError> {
        if let Kernel::Window(w) = self {
            off_thread(w, Priority::Stream, move |w| {
                let deltas: Vec<&[u8]> = deltas.iter().map(Vec::as_slice).collect();
                w.apply_deltas(&deltas, Some(groups))?;
                // The copy, the rounds and the deltas were all read keeping `groups`.
                w.take_over_progress(groups);
                Ok::<_, StateError>(())
            })
            .await?;
        }
        Ok(())
    }

    /// Loads state before any input: no part starts empty; one part is a checkpoint of
    /// this PE; with `handoff` (an upgrade's successor, or a restore to a checkpoint
    /// taken before one) the parts are predecessors' snapshots, merged, and only the
    /// key groups in `handoff` are kept.
    /// Each part is a [`PieceState`]: a whole snapshot, then (a window's incremental
    /// piece) the increments up to the checkpoint restored, or a seed and increments.
    /// `priority`: where the loading runs ([`Priority`]; a successor's pre-copy of
    /// large pieces, which no record waits on, loads at the background priority).
    pub async fn restore(
        &mut self,
        parts: &[PieceState],
        handoff: Option<KeyGroupRange>,
        priority: Priority,
    ) -> Result<(), KernelError> {
        match self {
            Kernel::Window(w) => {
                let parts = parts.to_vec();
                off_thread(w, priority, move |w| {
                    for part in &parts {
                        let seed: Vec<(u64, &[u8])> =
                            part.seed.iter().map(|(id, b)| (*id, &b[..])).collect();
                        let links: Vec<(u64, &[u8])> =
                            part.chain.iter().map(|(id, b)| (*id, &b[..])).collect();
                        w.restore_chain(&seed, &links, handoff)?;
                    }
                    if let Some(groups) = handoff {
                        w.take_over(groups);
                    }
                    Ok::<_, StateError>(())
                })
                .await?;
            }
            Kernel::Verify(v) => {
                for b in parts.iter().map(whole).collect::<Result<Vec<_>, _>>()? {
                    v.restore(b)?;
                }
            }
            Kernel::File(f) => match parts.first().map(whole).transpose()? {
                Some(b) => f.restore(b.clone()).await.map_err(KernelError::File)?,
                None => f.start_fresh().await.map_err(KernelError::File)?,
            },
            _ => {}
        }
        Ok(())
    }

    /// A new input joins (an upgrade rewired the PE).
    pub fn add_input(&mut self) {
        if let Kernel::Window(w) = self {
            w.add_input();
        }
    }

    /// Checkpoint `id` of the app completed: a `sink.file` makes output up to it
    /// visible.
    pub async fn checkpoint_complete(&mut self, id: u64) -> Result<(), KernelError> {
        match self {
            Kernel::File(f) => f.commit(id).await.map_err(KernelError::FileCommit),
            _ => Ok(()),
        }
    }

    /// What a `sink.verify` has seen.
    pub fn verify_summary(&self, inputs_ended: bool) -> Option<pb::VerifySummary> {
        let Kernel::Verify(v) = self else { return None };
        let r = v.report();
        Some(pb::VerifySummary {
            records: r.records,
            distinct: r.distinct,
            duplicates: r.duplicates,
            expected: r.expected,
            complete: r.complete,
            missing_below_max: r.sources.iter().map(|s| s.missing_below_max).sum(),
            missing_settled: r.sources.iter().map(|s| s.missing_settled).sum(),
            sources: r.sources.len() as u32,
            inputs_ended,
        })
    }
}

/// The one snapshot of a piece of a kernel that only takes whole snapshots.
fn whole(part: &PieceState) -> Result<&bytes::Bytes, StateError> {
    match (&part.seed[..], &part.chain[..]) {
        ([], [(_, b)]) => Ok(b),
        _ => Err(StateError::Mismatch(format!(
            "a chain of {} snapshots (and a seed of {}) for a kernel without increments",
            part.chain.len(),
            part.seed.len()
        ))),
    }
}

/// The slots a window closes at once from which it emits them on a blocking thread
/// ([`off_thread`]). Emitting sorts and encodes every slot of the closed windows: a
/// 10-minute window of 9 M keys closing on an async thread of the 1 GB upgrade bench
/// (weir-worker processes) held both for 13 s, so that its worker answered no
/// control call (the master's timed out) and the PEs sharing those threads stopped;
/// the window's own producers wait either way. 64 Ki slots take a few milliseconds,
/// less than handing the state to another thread is worth.
pub const CLOSE_OFF_THREAD_FROM: usize = 1 << 16;

/// Emits what `w` closes: on a blocking thread from [`CLOSE_OFF_THREAD_FROM`] slots.
async fn close(w: &mut Window) -> Batch {
    if w.closing() >= CLOSE_OFF_THREAD_FROM {
        off_thread(w, Priority::Stream, Window::close).await
    } else {
        w.close()
    }
}

/// Runs `f` on a window on a blocking thread (at `priority`): encoding or loading a
/// large state takes long, and on an async thread it would hold up every other PE
/// scheduled there. The PE itself waits (its state is away meanwhile); the others
/// run on.
async fn off_thread<R: Send + 'static>(
    w: &mut Window,
    priority: Priority,
    f: impl FnOnce(&mut Window) -> R + Send + 'static,
) -> R {
    let mut taken = std::mem::replace(w, w.cleared());
    let (back, r) = crate::background::run_at(priority, move || {
        let r = f(&mut taken);
        (taken, r)
    })
    .await;
    *w = back;
    r
}

/// `sink.tcp`: JSON lines to a TCP endpoint, reconnecting when it fails.
pub struct TcpSink {
    address: String,
    conn: Option<TcpStream>,
}

impl TcpSink {
    fn new(address: String) -> Self {
        Self {
            address,
            conn: None,
        }
    }

    async fn write(&mut self, batch: &Batch) {
        let mut text = String::with_capacity(batch.encoded_len() * 2);
        for r in batch.iter() {
            text.push_str(&crate::ops::sink::json_line(&r));
            text.push('\n');
        }
        let mut backoff = Duration::from_millis(20);
        loop {
            if self.conn.is_none() {
                match TcpStream::connect(&self.address).await {
                    Ok(c) => {
                        // Each batch is one write: Nagle's algorithm would only hold a
                        // batch back until the reader's delayed ACK (40 ms on Linux),
                        // which it did, in bursts, at the upgrade bench's `lat` sink.
                        if let Err(e) = c.set_nodelay(true) {
                            tracing::warn!(address = %self.address, error = %e, "sink.tcp: cannot turn Nagle's algorithm off");
                        }
                        self.conn = Some(c);
                    }
                    Err(e) => {
                        tracing::warn!(address = %self.address, error = %e, "sink.tcp cannot connect; retrying");
                    }
                }
            }
            if let Some(c) = &mut self.conn {
                match c.write_all(text.as_bytes()).await {
                    Ok(()) => return,
                    Err(e) => {
                        tracing::warn!(address = %self.address, error = %e, "sink.tcp write failed; reconnecting");
                        self.conn = None;
                    }
                }
            }
            // Backoff while the endpoint is down (the PE's input backs up meanwhile).
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(1));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn build(spec_json: &str) -> Result<Kernel, KernelError> {
        let spec: OperatorSpec = serde_json::from_str(spec_json).unwrap();
        Kernel::build("op@1#0", &spec, 0, 1, 0, &[], &Programs::default()).await
    }

    #[tokio::test]
    async fn a_tcp_sink_sends_each_batch_at_once() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut sink = TcpSink::new(l.local_addr().unwrap().to_string());
        let mut b = weir_common::record::BatchBuilder::default();
        b.push(0, 0, 1, b"k", std::iter::empty()).unwrap();
        let batch = b.finish();
        sink.write(&batch).await;
        // No batch waits behind the previous one's ACK (Nagle's algorithm).
        assert!(sink.conn.as_ref().unwrap().nodelay().unwrap());
        let (mut peer, _) = l.accept().await.unwrap();
        sink.write(&batch).await;
        let mut got = Vec::new();
        while got.iter().filter(|b| **b == b'\n').count() < 2 {
            let mut buf = [0u8; 256];
            let n = tokio::io::AsyncReadExt::read(&mut peer, &mut buf)
                .await
                .unwrap();
            assert!(n > 0, "the sink closed early");
            got.extend_from_slice(&buf[..n]);
        }
        assert_eq!(got.iter().filter(|b| **b == b'\n').count(), 2);
    }

    /// A window closing many slots emits them on a blocking thread: the same records,
    /// in the same order with the same sequence numbers, as closed in place, and the
    /// window comes back with what was left open.
    #[tokio::test]
    async fn a_large_close_off_the_async_threads_emits_what_an_inline_one_does() {
        let keys = CLOSE_OFF_THREAD_FROM + 10;
        let mut b = weir_common::record::BatchBuilder::default();
        for k in 0..keys {
            b.push(
                0,
                k as u64,
                5,
                format!("k{k}").as_bytes(),
                std::iter::empty(),
            )
            .unwrap();
        }
        // Moves the watermark past the first window; its own stays open.
        b.push(0, keys as u64, 25, b"late-open", std::iter::empty())
            .unwrap();
        let batch = b.finish();
        let mut inline = Window::new(WindowKind::Count, 10, 1, 7);
        let expected = inline.apply(0, &batch);
        let mut w = Window::new(WindowKind::Count, 10, 1, 7);
        w.take(0, &batch);
        assert!(
            w.closing() >= CLOSE_OFF_THREAD_FROM,
            "closed off the async threads"
        );
        let mut kernel = Kernel::Window(Window::new(WindowKind::Count, 10, 1, 7));
        let got = kernel.process(0, &batch).await.unwrap().unwrap();
        let key_seq = |b: &Batch| -> Vec<(Vec<u8>, u64)> {
            b.iter().map(|r| (r.key.to_vec(), r.seq)).collect()
        };
        assert_eq!(got.len(), keys);
        assert_eq!(key_seq(&got), key_seq(&expected));
        let Kernel::Window(w) = &kernel else {
            unreachable!()
        };
        assert_eq!((w.open_windows(), w.closing()), (1, 0));
        // Ending the input closes the rest, in place (one slot).
        assert_eq!(kernel.end_input(0).await.map(|b| b.len()), Some(1));
    }

    #[tokio::test]
    async fn kernels_that_cannot_be_built_say_why_in_a_typed_error() {
        let no_engine = build(r#"{"name":"c","kind":"container","params":{"image":"pe:1"}}"#).await;
        match no_engine {
            Err(e @ KernelError::NoContainerEngine { .. }) => assert_eq!(
                e.to_string(),
                "container pe:1: this worker has no Docker Engine"
            ),
            other => panic!("{:?}", other.err()),
        }
        let source = build(
            r#"{"name":"g","kind":"source.generator","params":{"keys":1,"payload_bytes":0}}"#,
        )
        .await;
        assert!(matches!(
            source,
            Err(KernelError::NotAKernel("source.generator"))
        ));
    }
}
