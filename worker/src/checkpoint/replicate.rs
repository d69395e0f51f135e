//! The client side of snapshot replication.
//!
//! [`Replicator`] pushes each snapshot this worker takes to the next workers in a ring
//! ordered by worker id, so that the copies of different workers' snapshots spread
//! evenly and losing one worker loses no checkpoint. [`fetch`] finds an intact copy to
//! restore a PE from: this worker's own if it has a good one, else each location the
//! master named, in order, checking every byte against the CRC-32C recorded with the
//! checkpoint.

use super::dial::{Dialer, Use};
use super::store::{SnapshotStore, StoreError};
use super::{chunks, Assembler, ChunkError, MAX_SNAPSHOT_BYTES};
use crate::background::Priority;
use bytes::Bytes;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::task::JoinSet;
use weir_proto::v1 as pb;
use weir_proto::v1::worker_control_client::WorkerControlClient;

/// What a copy that is not there is called in problems and logs.
const MISSING: &str = "missing";

/// Copies of each snapshot to keep unless the master says otherwise (the local one
/// included): one replica on another worker.
pub const DEFAULT_REPLICAS: u32 = 2;

/// How long one push or one fetch of a snapshot may take (a gigabyte over a slow link
/// fits; a hung peer does not hold a checkpoint forever).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

/// A replica is pushed at most this fast (bytes per second). Why: pushing copies every
/// byte several times on both workers (gRPC framing, the socket, reassembly, the
/// store), then on the async threads the PEs run on (a drained window's piece now on
/// the transfer runtime, whose one thread is niced: [`Replicator::replicate`]). After
/// an upgrade's switch the drained windows' whole pieces (333 MB each at 1 GB of
/// state) were pushed at once, and the sink of the 1 GB bench stalled 170-425 ms as
/// each was written and pushed (BENCHMARKS.md, 2026-12-06; which of the two costs
/// more was not separated). Paced, a push takes its CPU a little at a time; pieces of
/// a megabyte (one chunk) go at once, and a 6 MB increment takes 20 ms longer to
/// replicate.
pub const PUSH_BYTES_PER_S: f64 = 256e6;

/// `cs` as a stream that yields its chunks at most `rate` bytes per second (the first
/// at once).
fn paced(
    cs: Vec<pb::StateChunk>,
    rate: f64,
) -> tokio_stream::wrappers::ReceiverStream<pb::StateChunk> {
    let (tx, rx) = tokio::sync::mpsc::channel(2);
    tokio::spawn(async move {
        let pacer = super::pace::Pacer::new(rate);
        for c in cs {
            pacer.turn(c.data.len()).await;
            if tx.send(c).await.is_err() {
                // The call ended (failed or timed out): nobody reads on.
                break;
            }
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
}

/// Pushes this worker's snapshots to its peers. Cheap to share (`Arc`); peers and the
/// replica count change with every heartbeat answer.
#[derive(Debug)]
pub struct Replicator {
    self_id: String,
    peers: Mutex<Vec<pb::PeerWorker>>,
    replicas: AtomicU32,
    timeout: Duration,
    /// The channels to the peers, pushes' and fetches' alike.
    dialer: Dialer,
}

/// The other workers in ring order after `self_id`: sorted by id, starting with the
/// first id above `self_id` and wrapping around; `self_id`, duplicates and peers
/// without an address are left out. Pure, so placement is easy to reason about.
pub fn ring(self_id: &str, peers: &[pb::PeerWorker]) -> Vec<pb::PeerWorker> {
    let mut sorted: Vec<pb::PeerWorker> = peers
        .iter()
        .filter(|p| p.worker_id != self_id && !p.control_address.is_empty())
        .cloned()
        .collect();
    sorted.sort_by(|a, b| a.worker_id.cmp(&b.worker_id));
    sorted.dedup_by(|a, b| a.worker_id == b.worker_id);
    let split = sorted.partition_point(|p| p.worker_id.as_str() < self_id);
    sorted.rotate_left(split);
    sorted
}

impl Replicator {
    /// A replicator for worker `self_id`, with no peers yet and [`DEFAULT_REPLICAS`].
    pub fn new(self_id: impl Into<String>) -> Self {
        Self {
            self_id: self_id.into(),
            peers: Mutex::default(),
            replicas: AtomicU32::new(DEFAULT_REPLICAS),
            timeout: DEFAULT_TIMEOUT,
            dialer: Dialer::default(),
        }
    }

    /// The same, dialling peers with `security` (TLS when on).
    pub fn with_security(mut self, security: weir_security::Security) -> Self {
        self.dialer = Dialer::new(security);
        self
    }

    /// How this worker dials its peers, and its channels to them (fetches take them
    /// too: [`fetch_waiting`]).
    pub fn dialer(&self) -> &Dialer {
        &self.dialer
    }

    /// The same with another limit on each push.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The workers to replicate to (from heartbeat answers). Channels to workers no
    /// longer listed are dropped.
    pub fn set_peers(&self, peers: Vec<pb::PeerWorker>) {
        self.dialer.retain(&peers);
        *self.peers.lock().unwrap_or_else(|p| p.into_inner()) = peers;
    }

    /// Copies of each snapshot to keep, the local one included (from heartbeat
    /// answers; 0 is read as 1, no replica).
    pub fn set_replicas(&self, n: u32) {
        self.replicas.store(n.max(1), Ordering::Relaxed);
    }

    /// Copies of each snapshot to keep, the local one included.
    pub fn replicas(&self) -> u32 {
        self.replicas.load(Ordering::Relaxed)
    }

    /// The peers in ring order after this worker (see [`ring`]).
    pub fn ring(&self) -> Vec<pb::PeerWorker> {
        ring(
            &self.self_id,
            &self.peers.lock().unwrap_or_else(|p| p.into_inner()),
        )
    }

    /// Pushes a snapshot to `replicas - 1` peers, the next ones in the ring; a peer
    /// that fails (logged) is replaced by the one after it while peers remain.
    /// Returns the ids of the workers that stored it, in ring order; fewer than asked
    /// (even none) is not an error: the checkpoint is then less protected, and the
    /// master sees it in the replica list. At [`Priority::Stream`] (a checkpoint's
    /// piece: the checkpoint's completion, and so what exactly-once sinks commit,
    /// waits for it) the pushes run here; at any other (a drained window's whole
    /// piece, pushed after an upgrade's switch, 0.5 GB each at 1 GB of state, which
    /// only the switch checkpoint's completion waits for) on the transfer runtime, as
    /// their channel's connection does.
    pub async fn replicate(
        &self,
        app: &str,
        pe: &str,
        id: u64,
        bytes: Bytes,
        priority: Priority,
    ) -> Vec<String> {
        let ring = self.ring();
        let mut need = self.replicas().saturating_sub(1) as usize;
        if need > 0 && ring.is_empty() {
            tracing::warn!(%app, %pe, checkpoint = id, "no peer worker to replicate the snapshot to");
        }
        let mut stored = Vec::new();
        let mut next = 0;
        // Built once, on a blocking thread (a pass over the whole snapshot): the chunks
        // slice `bytes`, so every push shares them.
        let cs = if need > 0 && !ring.is_empty() {
            let (a, p) = (app.to_string(), pe.to_string());
            match tokio::task::spawn_blocking(move || chunks(&a, &p, "", id, &bytes, 0)).await {
                Ok(cs) => cs,
                Err(e) => {
                    tracing::warn!(%app, %pe, checkpoint = id, error = %e, "cannot cut the snapshot into chunks");
                    return Vec::new();
                }
            }
        } else {
            Vec::new()
        };
        while need > 0 && next < ring.len() {
            let wave = &ring[next..(next + need).min(ring.len())];
            next += wave.len();
            let mut set = JoinSet::new();
            for (i, peer) in wave.iter().enumerate() {
                let channel = match self
                    .dialer
                    .channel(&peer.control_address, Use::Push(priority))
                {
                    Ok(c) => c,
                    Err(e) => {
                        tracing::warn!(%app, %pe, checkpoint = id, peer = %peer.worker_id, error = %e, "cannot replicate the snapshot");
                        continue;
                    }
                };
                let cs = cs.clone();
                let timeout = self.timeout;
                let call = async move {
                    let mut client = WorkerControlClient::new(channel);
                    let call = client.store_snapshot(paced(cs, PUSH_BYTES_PER_S));
                    tokio::time::timeout(timeout, call).await
                };
                set.spawn(async move { (i, crate::background::transfer_at(priority, call).await) });
            }
            let mut ok = Vec::new();
            while let Some(joined) = set.join_next().await {
                let Ok((i, outcome)) = joined else { continue };
                let peer = &wave[i];
                match outcome {
                    Ok(Ok(_)) => ok.push(i),
                    Ok(Err(status)) => {
                        tracing::warn!(%app, %pe, checkpoint = id, peer = %peer.worker_id, code = ?status.code(), error = %status.message(), "peer refused the snapshot replica");
                    }
                    Err(_) => {
                        tracing::warn!(%app, %pe, checkpoint = id, peer = %peer.worker_id, timeout_s = self.timeout.as_secs_f64(), "snapshot replication timed out");
                    }
                }
            }
            ok.sort_unstable();
            need -= ok.len();
            stored.extend(ok.into_iter().map(|i| wave[i].worker_id.clone()));
        }
        if need > 0 && !ring.is_empty() {
            tracing::warn!(%app, %pe, checkpoint = id, missing = need, stored = ?stored, "snapshot has fewer replicas than asked");
        }
        stored
    }
}

/// A snapshot found for a restore.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fetched {
    /// The snapshot.
    pub bytes: Bytes,
    /// The worker whose copy it is (this worker's id for the local copy).
    pub from: String,
    /// Copies tried before and skipped, each with why (e.g. "replica on w1: corrupt
    /// (...)"), so the caller can tell the operator which copies are damaged.
    pub problems: Vec<String>,
}

/// Why no snapshot could be fetched.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FetchError {
    /// Every copy is missing, damaged or unreachable.
    #[error("no intact copy of the snapshot: {}", .problems.join("; "))]
    NoIntactCopy {
        /// Each copy tried and why it was skipped.
        problems: Vec<String>,
    },
}

fn describe_store_error(e: &StoreError) -> String {
    match e {
        StoreError::Missing => MISSING.into(),
        StoreError::Corrupt { why } => format!("corrupt ({why})"),
        other => format!("unreadable ({other})"),
    }
}

fn matches_location(size: u64, crc: u32, l: &pb::SnapshotLocation) -> bool {
    // Size and CRC 0: a hand-off location, known before the snapshot is taken.
    (l.size_bytes == 0 && l.crc32c == 0) || (l.size_bytes == size && l.crc32c == crc)
}

/// Finds an intact copy of the snapshot of `pe` at checkpoint `id`: this worker's own
/// when it is intact and matches the size and CRC-32C the locations record, else the
/// first location (other than this worker) whose copy arrives complete, with every
/// chunk's and the whole CRC-32C right and the recorded size and CRC-32C. A copy
/// fetched from elsewhere is also stored locally (best effort, on a task of its own),
/// so a PE restarted here again needs no transfer.
pub async fn fetch(
    store: &Arc<SnapshotStore>,
    self_id: &str,
    dialer: &Dialer,
    app: &str,
    pe: &str,
    id: u64,
    locations: &[pb::SnapshotLocation],
) -> Result<Fetched, FetchError> {
    fetch_waiting(
        store,
        self_id,
        dialer,
        app,
        pe,
        id,
        locations,
        (0, Priority::Stream),
    )
    .await
}

/// [`fetch`], where every other location may wait up to `wait_ms` for the snapshot to
/// be stored (a successor fetching the hand-off of a predecessor still draining), and
/// the copies are read at `priority`: [`Priority::Stream`] when the stream waits for
/// them (a restore), else at the background priority here and at the serving worker
/// (a pre-copy: reading 50 MB pieces at the normal priority held the 100 MB bench's
/// sink ~90 ms as a rescale's pre-copy began; BENCHMARKS.md, issue 22).
#[allow(clippy::too_many_arguments)]
pub async fn fetch_waiting(
    store: &Arc<SnapshotStore>,
    self_id: &str,
    dialer: &Dialer,
    app: &str,
    pe: &str,
    id: u64,
    locations: &[pb::SnapshotLocation],
    (wait_ms, priority): (u64, Priority),
) -> Result<Fetched, FetchError> {
    let mut problems = Vec::new();
    // Read and checked off the stream's threads: a pass over up to a gigabyte.
    let local = {
        let (s, a, p) = (store.clone(), app.to_string(), pe.to_string());
        let precopy = priority != Priority::Stream;
        crate::background::run_at(priority, move || {
            super::serve::read_piece(&s, &a, &p, id, precopy)
        })
        .await
    };
    let listed_here = locations.iter().any(|l| l.worker_id == self_id);
    match local {
        Ok((data, crc)) => {
            let size = data.len() as u64;
            if locations.is_empty() || locations.iter().any(|l| matches_location(size, crc, l)) {
                return Ok(Fetched {
                    bytes: data,
                    from: self_id.to_string(),
                    problems,
                });
            }
            problems.push(format!(
                "local copy on {self_id}: does not match the checkpoint (size {size}, crc {crc:#010x})"
            ));
        }
        Err(StoreError::Missing) if !listed_here => {}
        Err(e) => problems.push(format!(
            "local copy on {self_id}: {}",
            describe_store_error(&e)
        )),
    }
    // An upgrade's rounds and envelopes are read once by one successor and probed for
    // until they are there: not kept here (each would be written and fsynced, hundreds
    // per upgrade, for nothing), and neither a missing one nor a fetch worth more than
    // a debug line.
    let handoff = super::store::is_handoff(pe);
    for l in locations.iter().filter(|l| l.worker_id != self_id) {
        let what = format!("replica on {}", l.worker_id);
        match fetch_from(dialer, l, (app, pe, id), (wait_ms, priority)).await {
            Ok((data, _)) if handoff => {
                tracing::debug!(%app, %pe, id, from = %l.worker_id, bytes = data.len(), "fetched a hand-off");
                return Ok(Fetched {
                    bytes: data,
                    from: l.worker_id.clone(),
                    problems,
                });
            }
            Ok((data, crc)) => {
                tracing::info!(%app, %pe, checkpoint = id, from = %l.worker_id, bytes = data.len(), skipped = ?problems, "fetched a checkpoint snapshot");
                let (s, a, p, d) = (store.clone(), app.to_string(), pe.to_string(), data.clone());
                // The CRC-32C the serving worker sent, not the location's: a hand-off
                // location is known before its snapshot is taken and records none (0).
                // The copy is checked against it before it is written, and on every
                // read after. Not waited for: the restore or pre-copy that fetched it
                // goes on meanwhile (writing and syncing a 333 MB piece took a second
                // and more while the disk was busy).
                let keep = move || {
                    if let Err(e) = s.put_replica(&a, &p, id, &d, crc) {
                        tracing::warn!(app = %a, pe = %p, checkpoint = id, error = %e, "cannot keep the fetched snapshot locally");
                    }
                };
                if priority == Priority::Stream {
                    tokio::task::spawn_blocking(keep);
                } else {
                    // As a replica is written: nothing waits for it.
                    tokio::spawn(crate::background::run_at(Priority::Replica, keep));
                }
                return Ok(Fetched {
                    bytes: data,
                    from: l.worker_id.clone(),
                    problems,
                });
            }
            // Waiting for a hand-off's snapshot that is not written yet is expected
            // (successors ask again until it is): not worth a warning each time.
            Err(why) if (wait_ms > 0 || handoff) && why == MISSING => {
                tracing::debug!(%app, %pe, checkpoint = id, from = %l.worker_id, "not there yet");
                problems.push(format!("{what}: {why}"));
            }
            Err(why) => {
                tracing::warn!(%app, %pe, checkpoint = id, from = %l.worker_id, address = %l.control_address, problem = %why, "skipping a snapshot copy");
                problems.push(format!("{what}: {why}"));
            }
        }
    }
    if problems.is_empty() {
        problems.push(format!(
            "local copy on {self_id}: missing, and no other location is known"
        ));
    }
    Err(FetchError::NoIntactCopy { problems })
}

/// Fetches one location's copy and checks it: the snapshot and its CRC-32C as the
/// serving worker sent it (equal to the location's when that records one); `Err` says
/// why it is not usable.
async fn fetch_from(
    dialer: &Dialer,
    l: &pb::SnapshotLocation,
    (app, pe, id): (&str, &str, u64),
    (wait_ms, priority): (u64, Priority),
) -> Result<(Bytes, u32), String> {
    if l.control_address.is_empty() {
        return Err("no control address".into());
    }
    let limit = if l.size_bytes == 0 {
        MAX_SNAPSHOT_BYTES
    } else {
        l.size_bytes
    };
    let req = pb::FetchStateSnapshotRequest {
        app: app.to_string(),
        pe: pe.to_string(),
        checkpoint_id: id,
        key_groups: None,
        offset: 0,
        for_pe: pe.to_string(),
        wait_ms,
        background: priority != Priority::Stream,
    };
    // Reused: a connection (and a TLS handshake) per fetch held a successor's
    // rounds from another worker to 5-12 a second in the demo beside a CPU hog.
    let channel = dialer.channel(&l.control_address, Use::Fetch(priority))?;
    let transfer = async move {
        let stream = WorkerControlClient::new(channel)
            .fetch_state_snapshot(req)
            .await
            .map_err(describe_status)?
            .into_inner();
        receive(Box::pin(stream), limit, priority).await
    };
    // The timeout made where the transfer runs: on its runtime's clock.
    let transfer = async move { tokio::time::timeout(DEFAULT_TIMEOUT, transfer).await };
    // A pre-copy's fetch off the PEs' async threads; a restore's, which the stream
    // waits for, beside them.
    let got = crate::background::transfer_at(priority, transfer).await;
    let got = got.map_err(|_| format!("timed out after {}s", DEFAULT_TIMEOUT.as_secs()))??;
    if got.app != app || got.pe != pe || got.checkpoint_id != id {
        return Err(format!(
            "sent another snapshot (app {:?}, PE {:?}, checkpoint {})",
            got.app, got.pe, got.checkpoint_id
        ));
    }
    let size = got.data.len() as u64;
    if !matches_location(size, got.crc32c, l) {
        return Err(format!(
            "corrupt (crc mismatch: size {size}, crc {:#010x}; the checkpoint has size {}, crc {:#010x})",
            got.crc32c, l.size_bytes, l.crc32c
        ));
    }
    Ok((got.data.into(), got.crc32c))
}

fn describe_status(s: tonic::Status) -> String {
    match s.code() {
        tonic::Code::NotFound => MISSING.into(),
        // A channel that cannot connect says so on the call.
        tonic::Code::Unavailable => format!("unreachable ({})", s.message()),
        tonic::Code::DataLoss => format!("corrupt ({})", s.message()),
        code => format!("failed ({code:?}: {})", s.message()),
    }
}

/// Reads a chunk stream through an [`Assembler`].
async fn receive<S>(
    mut stream: S,
    limit: u64,
    priority: Priority,
) -> Result<super::Assembled, String>
where
    S: tokio_stream::Stream<Item = Result<pb::StateChunk, tonic::Status>> + Unpin,
{
    use tokio_stream::StreamExt;
    let mut a = Assembler::new(limit);
    while let Some(c) = stream.next().await {
        a.push(c.map_err(describe_status)?)
            .map_err(describe_chunk_error)?;
    }
    // Joined and checked off the stream's threads (a whole piece is hundreds of
    // megabytes), at the fetch's priority.
    crate::background::run_at(priority, move || a.finish())
        .await
        .map_err(describe_chunk_error)
}

fn describe_chunk_error(e: ChunkError) -> String {
    match e {
        ChunkError::DataLoss(m) => format!("corrupt in transfer ({m})"),
        ChunkError::Invalid(m) => format!("bad transfer ({m})"),
        ChunkError::TooLarge(m) => format!("larger than the checkpoint ({m})"),
    }
}
