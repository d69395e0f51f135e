//! What PEs need to take part in checkpoints: saving a snapshot (locally, then
//! replicated to peers), loading one at a restore, and learning which checkpoints of
//! their app completed.
//!
//! A PE saves its snapshot when the barrier has arrived on all its inputs, and forwards
//! the barrier as soon as the local copy is durable; replication runs in the background
//! and the piece is reported (to the master, through heartbeats) only once it has its
//! replicas, so a checkpoint is never complete while a single worker loss could lose
//! part of it.

use super::status::PeStatus;
use super::upgrade::Armed;
use crate::background::{Lane, Priority};
use crate::checkpoint::replicate::{fetch_waiting, Replicator};
use crate::checkpoint::store::SnapshotStore;
use bytes::Bytes;
use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Instant;
use tokio::sync::mpsc;
use tokio::sync::watch;
use weir_common::keygroup::KeyGroupRange;
use weir_proto::v1 as pb;

/// Complete checkpoints whose snapshots a worker keeps per app (the master keeps as
/// many; a restore only ever uses one of them).
const KEEP: usize = 3;

/// Drained windows' whole pieces are written to disk at most this fast, over all of
/// them in the process (bytes per second; [`CheckpointEnv::save_at`]): written at once,
/// a 500 MB piece took a core and the memory bus from the stream in the seconds after
/// an upgrade's switch (`store::writer` says more). The rate replicas are pushed at.
static DRAINED_WRITES: crate::checkpoint::pace::Pacer =
    crate::checkpoint::pace::Pacer::new(crate::checkpoint::replicate::PUSH_BYTES_PER_S);

/// A replica push under way; dropped before it is joined, it is aborted.
struct Pushing(tokio::task::JoinHandle<Vec<String>>);

impl Pushing {
    /// The workers that took a replica (none when the push failed).
    async fn join(mut self) -> Vec<String> {
        (&mut self.0).await.unwrap_or_else(|e| {
            tracing::error!(error = %e, "a replica push ended without an answer");
            Vec::new()
        })
    }
}

impl Drop for Pushing {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Per app: the latest complete checkpoint (watched by its PEs) and the last few.
type Completed = HashMap<String, (watch::Sender<u64>, VecDeque<u64>)>;

/// Complete checkpoints remembered per app, to decide what increments build on.
const KNOWN: usize = 16;

/// One state to restore, as stored: `(checkpoint, snapshot)` links, a whole snapshot
/// first, then (a window's incremental piece) each increment up to the checkpoint
/// restored.
pub type StateChain = Vec<(u64, Bytes)>;

/// One piece's state to restore: its chain and, when its first link is an increment
/// over the state its PE took over at an upgrade's switch, the *seed* that link builds
/// on (the predecessors' whole snapshots there, `(checkpoint, snapshot)` each; empty
/// otherwise; `Window::seed`).
#[derive(Clone, Debug, Default)]
pub struct PieceState {
    /// The seed.
    pub seed: StateChain,
    /// The chain.
    pub chain: StateChain,
}

impl PieceState {
    /// Bytes loaded.
    pub fn bytes(&self) -> u64 {
        self.seed
            .iter()
            .chain(&self.chain)
            .map(|(_, b)| b.len() as u64)
            .sum()
    }
}

/// A snapshot loaded for a restore.
#[derive(Debug)]
pub struct Loaded {
    /// The state.
    pub bytes: Bytes,
    /// Where it came from, and every damaged or missing copy skipped, for humans.
    pub note: String,
}

/// Checkpoint services shared by the PEs of one worker.
pub struct CheckpointEnv {
    worker_id: String,
    store: Arc<SnapshotStore>,
    replicator: Arc<Replicator>,
    completed: Mutex<Completed>,
    /// Per app, the complete checkpoints heard of (the last [`KNOWN`]).
    known: Mutex<HashMap<String, BTreeSet<u64>>>,
    /// A window increment listing this many slots or more is encoded after its barrier.
    defer_from: usize,
}

impl CheckpointEnv {
    /// The services of worker `worker_id`.
    pub fn new(worker_id: String, store: Arc<SnapshotStore>, replicator: Arc<Replicator>) -> Self {
        Self {
            worker_id,
            store,
            replicator,
            completed: Mutex::default(),
            known: Mutex::default(),
            defer_from: crate::ops::window::DEFER_FROM,
        }
    }

    /// Window increments listing at least `n` changed slots, and whole window snapshots
    /// of at least `n` slots, are encoded after their barrier (`ops/window/encoding.rs`).
    pub fn with_defer_from(mut self, n: usize) -> Self {
        self.defer_from = n;
        self
    }

    /// See [`CheckpointEnv::with_defer_from`].
    pub fn defer_from(&self) -> usize {
        self.defer_from
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Completed> {
        self.completed.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The complete checkpoints of `app` heard of here (the last few).
    pub fn known_complete(&self, app: &str) -> BTreeSet<u64> {
        let known = self.known.lock().unwrap_or_else(|p| p.into_inner());
        known.get(app).cloned().unwrap_or_default()
    }

    fn learn(&self, r: &pb::HeartbeatResponse) {
        let mut known = self.known.lock().unwrap_or_else(|p| p.into_inner());
        known.retain(|app, _| r.completed_checkpoints.contains_key(app));
        for (app, id) in &r.completed_checkpoints {
            let set = known.entry(app.clone()).or_default();
            set.insert(*id);
            if let Some(kept) = r.kept_checkpoints.get(app) {
                set.extend(&kept.ids);
            }
            while set.len() > KNOWN {
                set.pop_first();
            }
        }
    }

    /// The latest complete checkpoint of `app`, as it changes.
    pub fn completed(&self, app: &str) -> watch::Receiver<u64> {
        self.lock()
            .entry(app.to_string())
            .or_insert_with(|| (watch::channel(0).0, VecDeque::new()))
            .0
            .subscribe()
    }

    /// Takes in what a heartbeat answer says: peers, replication factor, and the latest
    /// complete checkpoint per app (PEs commit output up to it; older snapshots go).
    pub fn on_heartbeat(&self, r: &pb::HeartbeatResponse) {
        self.learn(r);
        self.replicator.set_peers(r.peers.clone());
        if r.checkpoint_replicas > 0 {
            self.replicator.set_replicas(r.checkpoint_replicas);
        }
        let mut gc = Vec::new();
        {
            let mut m = self.lock();
            for (app, id) in &r.completed_checkpoints {
                let (tx, history) = m
                    .entry(app.clone())
                    .or_insert_with(|| (watch::channel(0).0, VecDeque::new()));
                if history.back().is_some_and(|last| last >= id) {
                    continue;
                }
                history.push_back(*id);
                while history.len() > KEEP {
                    history.pop_front();
                }
                tx.send_replace(*id);
                // The master's bound keeps what incremental pieces build on.
                if let Some(oldest) = r.keep_snapshots_from.get(app).or(history.front()) {
                    gc.push((app.clone(), *oldest));
                }
            }
        }
        if !gc.is_empty() {
            let store = self.store.clone();
            tokio::task::spawn_blocking(move || {
                for (app, keep_from) in gc {
                    if let Err(e) = store.gc_app(&app, keep_from) {
                        tracing::warn!(%app, error = %e, "snapshot garbage collection failed");
                    }
                }
            });
        }
    }

    /// Saves the snapshot of `pe` at checkpoint `id` (incremental over its snapshot
    /// at `base`; 0: whole): durable locally before this returns, replicated in the
    /// background; the piece shows in `status` once it has its replicas. An empty
    /// snapshot (a PE without state) stores nothing.
    pub async fn save(
        &self,
        app: &str,
        pe: &str,
        id: u64,
        taken: (Vec<u8>, u64),
        alignment_ms: u64,
        status: &Arc<PeStatus>,
    ) -> Result<(), String> {
        self.save_at(app, pe, id, taken, alignment_ms, status, Priority::Stream)
            .await
    }

    /// [`CheckpointEnv::save`] on a task of its own: the PE forwards its barrier and
    /// goes on while the snapshot is written, and the checkpoint completes once it is
    /// stored and reported, as before. A snapshot that cannot be stored fails the PE,
    /// as at a barrier.
    ///
    /// Why: a store ends with an fsync, and on ext4 a small file's fsync waits for the
    /// journal, behind whatever other data the same commit must write first. On the
    /// dev box an 8-byte file's fsync took up to 350 ms while 1.5 GB were written
    /// beside it (p99 146 ms, 5.5 ms alone), and in the 1 GB upgrade bench a source's
    /// position took up to 64 ms to store while a window's whole snapshot was written:
    /// a source emits nothing meanwhile, so the whole stream waited (BENCHMARKS.md,
    /// 2026-12-06, "Snapshot transfers off the stream's threads"). Nothing needs the
    /// snapshot durable at the barrier: only the checkpoint's completion does, and a
    /// worker that dies first never reports the piece, so the checkpoint never
    /// completes and recovery uses the one before.
    pub fn spawn_save(
        self: &Arc<Self>,
        app: &str,
        pe: &str,
        id: u64,
        taken: (Vec<u8>, u64),
        alignment_ms: u64,
        status: &Arc<PeStatus>,
    ) {
        let (env, app, pe, status) = (
            self.clone(),
            app.to_string(),
            pe.to_string(),
            status.clone(),
        );
        tokio::spawn(async move {
            let (t0, bytes, base) = (Instant::now(), taken.0.len(), taken.1);
            match env.save(&app, &pe, id, taken, alignment_ms, &status).await {
                Ok(()) => {
                    let stored_ms = t0.elapsed().as_millis() as u64;
                    tracing::debug!(%pe, checkpoint = id, base, bytes, stored_ms, "snapshot stored");
                }
                Err(e) => {
                    tracing::error!(%pe, checkpoint = id, error = %e, "checkpoint failed");
                    status.fail(e);
                }
            }
        });
    }

    /// [`CheckpointEnv::save`], writing to disk at `priority`. At
    /// [`Priority::Background`] (a drained window's whole piece, which only the switch
    /// checkpoint's completion waits for) the write is paced ([`DRAINED_WRITES`]), on
    /// a thread of its own ([`Lane::Writes`]), and the replicas are pushed while it is
    /// written, not after: a paced write of a 500 MB piece takes 2 s, and the
    /// checkpoint completes once both are done.
    #[allow(clippy::too_many_arguments)]
    pub async fn save_at(
        &self,
        app: &str,
        pe: &str,
        id: u64,
        (bytes, base): (Vec<u8>, u64),
        alignment_ms: u64,
        status: &Arc<PeStatus>,
        priority: Priority,
    ) -> Result<(), String> {
        if bytes.is_empty() {
            status.add_piece(pb::SnapshotPiece {
                checkpoint_id: id,
                alignment_ms,
                ..Default::default()
            });
            return Ok(());
        }
        let t0 = Instant::now();
        let bytes = Bytes::from(bytes);
        // A drained window's piece is pushed while it is written (paced, the write
        // takes as long as the push); any other after its write, as before, so a
        // checkpoint's piece is not cut into chunks beside its own write.
        let paced = priority == Priority::Background;
        let push = |bytes: Bytes| {
            let (rep, a, p) = (self.replicator.clone(), app.to_string(), pe.to_string());
            Pushing(tokio::spawn(async move {
                rep.replicate(&a, &p, id, bytes, priority).await
            }))
        };
        let early = paced.then(|| push(bytes.clone()));
        let stored = {
            let (s, a, p, b) = (
                self.store.clone(),
                app.to_string(),
                pe.to_string(),
                bytes.clone(),
            );
            // Failed, an early push is aborted (dropped): a replica of a piece never
            // reported is never used, and goes with the checkpoints kept.
            let written = if paced {
                // On a thread of its own: its pacing waits would hold up the encodes
                // and loads queued on the work lane.
                crate::background::run_on(Lane::Writes, move || {
                    s.put_paced(&a, &p, id, &b, &DRAINED_WRITES)
                })
                .await
            } else {
                crate::background::run_at(priority, move || s.put(&a, &p, id, &b)).await
            };
            written.map_err(|e| format!("checkpoint {id}: storing the snapshot failed: {e}"))?
        };
        let push = early.unwrap_or_else(|| push(bytes));
        let (me, st) = (self.worker_id.clone(), status.clone());
        tokio::spawn(async move {
            let mut replicas = vec![me];
            replicas.extend(push.join().await);
            st.add_piece(pb::SnapshotPiece {
                checkpoint_id: id,
                size_bytes: stored.size,
                crc32c: stored.crc32c,
                replicas,
                alignment_ms,
                store_ms: t0.elapsed().as_millis() as u64,
                base_checkpoint_id: base,
            });
        });
        Ok(())
    }

    /// Stores `bytes` under `name` at `id` on this worker only, without waiting for the
    /// disk and without reporting a piece (an upgrade's hand-off rounds and envelope:
    /// if this worker crashes the upgrade rolls back and nobody reads them).
    pub async fn put_local(
        &self,
        app: &str,
        name: &str,
        id: u64,
        bytes: Vec<u8>,
    ) -> Result<(), String> {
        let (s, a, n) = (self.store.clone(), app.to_string(), name.to_string());
        tokio::task::spawn_blocking(move || s.put_volatile(&a, &n, id, &bytes))
            .await
            .map_err(|e| e.to_string())?
            .map(|_| ())
            .map_err(|e| format!("barrier {id}: storing the hand-off failed: {e}"))
    }

    /// Loads another PE's snapshot at `id` (an upgrade's hand-off, or a predecessor's
    /// piece of a checkpoint), from this worker or the given locations, waiting up to
    /// `wait` for it to be taken.
    pub async fn load_piece(
        &self,
        app: &str,
        pe: &str,
        id: u64,
        from: &[pb::SnapshotLocation],
        wait: std::time::Duration,
    ) -> Result<Loaded, String> {
        let deadline = Instant::now() + wait;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let per_call = left.min(std::time::Duration::from_secs(1)).as_millis() as u64;
            match fetch_waiting(
                &self.store,
                &self.worker_id,
                self.replicator.dialer(),
                app,
                pe,
                id,
                from,
                (per_call, Priority::Stream),
            )
            .await
            {
                Ok(f) => {
                    return Ok(Loaded {
                        bytes: f.bytes,
                        note: format!("snapshot {id} (copy on {})", f.from),
                    })
                }
                Err(e) if left.is_zero() => return Err(format!("snapshot {id}: {e}")),
                // Stored here meanwhile wakes it at once (a predecessor on this
                // worker); a copy elsewhere is asked again within 2 ms.
                Err(_) => {
                    let until =
                        tokio::time::Instant::now() + left.min(std::time::Duration::from_millis(2));
                    self.store.stored_until(until).await
                }
            }
        }
    }

    /// Loads the snapshot of `pe` at checkpoint `id` from `from` with the snapshots
    /// it builds on (`chain`, the whole one first; empty for a whole snapshot; and the
    /// `seed` of a successor's first increments). `Ok(None)`: the PE had no state in
    /// that checkpoint.
    pub async fn load_chain(
        &self,
        app: &str,
        pe: &str,
        id: u64,
        from: &[pb::SnapshotLocation],
        (chain, seed): (&[pb::SnapshotLink], &[pb::SnapshotSeed]),
        priority: Priority,
    ) -> Result<Option<(PieceState, String)>, String> {
        let Some(last) = self.load(app, pe, id, from, priority).await? else {
            return Ok(None);
        };
        self.with_base(app, pe, id, last, (chain, seed), priority)
            .await
            .map(Some)
    }

    /// The piece of `pe` at `id`, `last` as loaded, with what it builds on (`chain` and
    /// `seed`, loaded here), and a note on where it all came from.
    pub async fn with_base(
        &self,
        app: &str,
        pe: &str,
        id: u64,
        last: Loaded,
        (chain, seed): (&[pb::SnapshotLink], &[pb::SnapshotSeed]),
        priority: Priority,
    ) -> Result<(PieceState, String), String> {
        let mut links = self.load_links(app, pe, id, chain, priority).await?;
        links.push((id, last.bytes));
        let piece = PieceState {
            seed: self.load_seed(app, id, seed, priority).await?,
            chain: links,
        };
        Ok((piece, chain_note(last.note, chain, seed)))
    }

    /// Loads the seed of the piece at `id` (see [`PieceState`]).
    pub async fn load_seed(
        &self,
        app: &str,
        id: u64,
        seed: &[pb::SnapshotSeed],
        priority: Priority,
    ) -> Result<StateChain, String> {
        let mut out = Vec::with_capacity(seed.len());
        for s in seed {
            let loaded = self
                .load(app, &s.pe, s.checkpoint_id, &s.locations, priority)
                .await?;
            let Some(loaded) = loaded else {
                return Err(format!(
                    "checkpoint {id} builds on {}'s snapshot at checkpoint {}, of which no copy is known",
                    s.pe, s.checkpoint_id
                ));
            };
            out.push((s.checkpoint_id, loaded.bytes));
        }
        Ok(out)
    }

    /// Loads the snapshots the piece of `pe` at `id` builds on (`chain`, the whole
    /// one first).
    pub async fn load_links(
        &self,
        app: &str,
        pe: &str,
        id: u64,
        chain: &[pb::SnapshotLink],
        priority: Priority,
    ) -> Result<StateChain, String> {
        let mut links = Vec::with_capacity(chain.len() + 1);
        for l in chain {
            let loaded = self
                .load(app, pe, l.checkpoint_id, &l.locations, priority)
                .await?;
            let Some(loaded) = loaded else {
                return Err(format!(
                    "checkpoint {id} builds on checkpoint {}, of which no copy is known",
                    l.checkpoint_id
                ));
            };
            links.push((l.checkpoint_id, loaded.bytes));
        }
        Ok(links)
    }

    /// Loads the snapshot of `pe` at checkpoint `id` from this worker or the given
    /// locations, read at `priority` (the background one for a pre-copy: see
    /// [`fetch_waiting`]). `Ok(None)`: the PE had no state in that checkpoint.
    pub async fn load(
        &self,
        app: &str,
        pe: &str,
        id: u64,
        from: &[pb::SnapshotLocation],
        priority: Priority,
    ) -> Result<Option<Loaded>, String> {
        if id == 0 || from.is_empty() {
            return Ok(None);
        }
        match fetch_waiting(
            &self.store,
            &self.worker_id,
            self.replicator.dialer(),
            app,
            pe,
            id,
            from,
            (0, priority),
        )
        .await
        {
            Ok(f) => {
                let mut note = format!("restored from checkpoint {id} (copy on {})", f.from);
                if !f.problems.is_empty() {
                    note.push_str("; skipped: ");
                    note.push_str(&f.problems.join("; "));
                    tracing::warn!(%app, %pe, checkpoint = id, problems = ?f.problems, "damaged snapshot copies skipped");
                }
                Ok(Some(Loaded {
                    bytes: f.bytes,
                    note,
                }))
            }
            Err(e) => Err(format!("checkpoint {id}: {e}")),
        }
    }
}

/// A PE's part in checkpoints: where to save snapshots, what to restore, and (for
/// sources) the barriers the master triggers.
pub struct Ckpt {
    /// App name.
    pub app: String,
    /// PE id.
    pub pe: String,
    /// Snapshot storage and completion notices.
    pub env: Arc<CheckpointEnv>,
    /// The checkpoint to restore, where its snapshot is, and what that builds on.
    pub restore: Option<OwnRestore>,
    /// Snapshots of other PEs merged into the starting state (an upgrade's hand-off);
    /// takes precedence over `restore`.
    pub pieces: Vec<pb::RestorePiece>,
    /// The PE's key groups (a hand-off keeps only these).
    pub key_groups: KeyGroupRange,
    /// A source added by an upgrade waits for this barrier; 0: starts at once.
    pub start_at: u64,
    /// Checkpoint barriers to inject (sources only).
    pub triggers: mpsc::Receiver<u64>,
    /// Upgrade actions armed for a barrier.
    pub armed: Armed,
}

/// `note` on a loaded piece, with the chain and seed it was loaded with.
fn chain_note(note: String, chain: &[pb::SnapshotLink], seed: &[pb::SnapshotSeed]) -> String {
    let note = match chain.first() {
        Some(w) => format!(
            "{note}, and {} snapshot(s) it builds on from checkpoint {}",
            chain.len(),
            w.checkpoint_id
        ),
        None => note,
    };
    match seed.first() {
        Some(s) => format!(
            "{note}, over {} predecessor snapshot(s) of checkpoint {}",
            seed.len(),
            s.checkpoint_id
        ),
        None => note,
    }
}

/// A PE's own piece of a checkpoint to restore.
#[derive(Clone, Debug)]
pub struct OwnRestore {
    /// The checkpoint.
    pub id: u64,
    /// Where the piece is, preferred first.
    pub from: Vec<pb::SnapshotLocation>,
    /// What it builds on when incremental, the whole snapshot first.
    pub chain: Vec<pb::SnapshotLink>,
    /// The seed its chain starts from, if any (see [`PieceState`]).
    pub seed: Vec<pb::SnapshotSeed>,
}
