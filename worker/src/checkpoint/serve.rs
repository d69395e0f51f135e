//! The server side of snapshot replication: `StoreSnapshot` (keep a peer's replica)
//! and `FetchStateSnapshot` (stream a stored snapshot to whoever restores the PE).
//!
//! Both treat the network as hostile: names are encoded before they touch the file
//! system, a received stream is stored only once complete and verified (nothing is
//! kept otherwise), and its size is bounded by [`MAX_SNAPSHOT_BYTES`].

use super::store::{encode_name, SnapshotStore, StoreError, Writing};
use super::{chunks, Assembler, MAX_SNAPSHOT_BYTES};
use crate::background::{run_at, run_on, Lane, Priority};
use std::pin::Pin;
use std::sync::Arc;
use tokio_stream::{Stream, StreamExt};
use tonic::Status;
use weir_proto::v1 as pb;

/// Chunks of replicas being received, over all `StoreSnapshot` calls in the process:
/// each chunk (at most [`super::CHUNK_BYTES`]) holds one permit until its call ends,
/// so replicas being received (in memory, or written and not yet stored) never exceed
/// 2 GiB however many peers push at once. A push over the budget is refused
/// (RESOURCE_EXHAUSTED) rather than queued, so a stalled sender cannot block the
/// others; its replicator tries another peer.
pub const INFLIGHT_CHUNKS: usize = 2048;

static INFLIGHT: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(INFLIGHT_CHUNKS);

/// Stored snapshot bytes held in memory to serve `FetchStateSnapshot` calls, over all
/// calls in the process, in MiB: a fetch reads its whole snapshot (up to
/// [`MAX_SNAPSHOT_BYTES`]) before streaming it, so without a budget a handful of
/// concurrent fetches of large snapshots could exhaust the worker's memory. A fetch
/// holds ceil(size / 1 MiB) permits until its response stream ends; one over the
/// budget is refused (RESOURCE_EXHAUSTED) rather than queued, and the restoring PE
/// tries another copy or retries.
pub const FETCH_BUDGET_MIB: usize = 1024;

static FETCH_BUDGET: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(FETCH_BUDGET_MIB);

/// Pre-copy reads (`background` fetches) are served at most this fast, over all such
/// fetches this process serves (bytes per second; with none being served, the first
/// chunk goes at once). Why:
/// a transfer copies every byte several times on both workers (the read chunks into
/// gRPC frames, the socket, the receiver's reassembly and checksum), here on the
/// async threads the PEs run on (the receiver's side runs on a niced runtime of its
/// own since 2026-12-07, `background::transfer`). Unpaced, the three successors of a
/// rescale fetching their predecessors' pieces at once held the sink 25-53 ms at 100
/// MB of state through
/// the real processes (and 247 ms at 1 GB in process), right as the pre-copy began,
/// and those gaps put the p99 latency during the upgrade at 3-4 times steady
/// (BENCHMARKS.md, issue 22). Nothing waits on a pre-copy but the switch, which
/// waits for the successors' loads anyway (longer than their fetches). Fetches the
/// stream waits for (restores at a barrier, recovery) are not paced. A pre-copy fetch
/// is still bounded by the fetch timeout (60 s, `replicate::DEFAULT_TIMEOUT`): its
/// piece is read ([`PRECOPY_READS`]) and then sent at this rate, so one that waits
/// behind more than ~7 GB of others' fails (less where the receiver's niced thread
/// waits for a core), and its successor moves the whole state at the switch instead,
/// slower but exact.
pub const PRECOPY_BYTES_PER_S: f64 = 256e6;

/// Paces pre-copy pieces sent, over all fetches in the process
/// ([`PRECOPY_BYTES_PER_S`]).
static PRECOPY: super::pace::Pacer = super::pace::Pacer::new(PRECOPY_BYTES_PER_S);

/// Paces the reads of stored pieces for a pre-copy, this worker's successors' and
/// those served to others, over the whole process, at the same rate
/// ([`super::SnapshotStore::get_paced`] says why).
static PRECOPY_READS: super::pace::Pacer = super::pace::Pacer::new(PRECOPY_BYTES_PER_S);

/// Reads and checks the stored snapshot of `pe` at `id`: paced ([`PRECOPY_READS`])
/// for a pre-copy, whole for what the stream waits on.
pub(crate) fn read_piece(
    store: &SnapshotStore,
    app: &str,
    pe: &str,
    id: u64,
    precopy: bool,
) -> Result<(bytes::Bytes, u32), StoreError> {
    if precopy {
        store.get_paced(app, pe, id, &PRECOPY_READS)
    } else {
        store.get_shared(app, pe, id)
    }
}

/// The response stream of `FetchStateSnapshot`.
pub type ChunkStream = Pin<Box<dyn Stream<Item = Result<pb::StateChunk, Status>> + Send>>;

/// The status for a store error about one snapshot: NOT_FOUND when absent, DATA_LOSS
/// when corrupt (the caller should try another copy), INVALID_ARGUMENT for a name no
/// file can have, INTERNAL for the file system failing.
pub fn store_status(e: &StoreError, app: &str, pe: &str, id: u64) -> Status {
    let m = format!("snapshot of PE {pe:?} of app {app:?} at checkpoint {id}: {e}");
    match e {
        StoreError::Missing => Status::not_found(m),
        StoreError::Corrupt { .. } => Status::data_loss(m),
        StoreError::InvalidName(_) => Status::invalid_argument(m),
        StoreError::Io { .. } => Status::internal(m),
    }
}

fn check_names(app: &str, pe: &str, pe_field: &str) -> Result<(), Status> {
    encode_name(app).map_err(|e| Status::invalid_argument(format!("app: {e}")))?;
    encode_name(pe).map_err(|e| Status::invalid_argument(format!("{pe_field}: {e}")))?;
    Ok(())
}

/// Receives a replica (`StoreSnapshot`): checks every chunk as it arrives and writes
/// it to a temporary file on a blocking thread (at the replica priority), before the
/// next is taken; the snapshot is stored (renamed into place) only when the last
/// chunk came and the whole CRC-32C matches. INVALID_ARGUMENT for malformed streams
/// (missing fields, gaps, no last chunk), DATA_LOSS for any CRC mismatch,
/// RESOURCE_EXHAUSTED over [`MAX_SNAPSHOT_BYTES`].
///
/// Written as it comes, not joined and written at the end: a sender paces its push
/// (`replicate::PUSH_BYTES_PER_S`), and the writes follow that pace. Joined, a 500 MB
/// piece was copied once more, checksummed three more times and written at once
/// after its last chunk (`store::writer` says what that cost).
pub async fn store_snapshot<S>(
    store: Arc<SnapshotStore>,
    mut stream: S,
) -> Result<pb::StoreSnapshotResponse, Status>
where
    S: Stream<Item = Result<pb::StateChunk, Status>> + Unpin,
{
    let mut a = Assembler::new(MAX_SNAPSHOT_BYTES);
    let mut writing = Unstored(None);
    let mut held: Option<tokio::sync::SemaphorePermit<'static>> = None;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk?;
        let permit = INFLIGHT.try_acquire().map_err(|_| {
            tracing::warn!("refusing a snapshot replica: too many replicas being received");
            Status::resource_exhausted(
                "this worker is receiving too many snapshot replicas at once; try another",
            )
        })?;
        match &mut held {
            Some(h) => h.merge(permit),
            None => held = Some(permit),
        }
        if writing.0.is_none() {
            check_names(&chunk.app, &chunk.from_pe, "from_pe")?;
        }
        let who = (chunk.app.clone(), chunk.from_pe.clone(), chunk.barrier_id);
        let (app, pe, id) = who.clone();
        let data = a.pass(chunk).inspect_err(|e| {
            tracing::warn!(error = %e, received = a.received(), "refusing a snapshot replica");
        })?;
        let (s, w) = (store.clone(), writing.0.take());
        let written = run_at(Priority::Replica, move || {
            let mut w = match w {
                Some(w) => w,
                None => s.begin(&app, &pe, id, true, None)?,
            };
            w.append(&data)?;
            Ok::<_, StoreError>(w)
        })
        .await;
        match written {
            Ok(w) => writing.0 = Some(w),
            Err(e) => {
                let (app, pe, id) = who;
                tracing::error!(%app, %pe, checkpoint = id, error = %e, "cannot store a snapshot replica");
                return Err(store_status(&e, &app, &pe, id));
            }
        }
    }
    let (app, pe, id, crc) = a.passed().inspect_err(|e| {
        tracing::warn!(error = %e, "refusing a snapshot replica");
    })?;
    let Some(w) = writing.0.take() else {
        return Err(Status::invalid_argument("no chunks"));
    };
    let s = store.clone();
    let piece = run_at(Priority::Replica, move || s.commit(w, Some(crc)))
        .await
        .map_err(|e| {
            tracing::error!(%app, %pe, checkpoint = id, error = %e, "cannot store a snapshot replica");
            store_status(&e, &app, &pe, id)
        })?;
    drop(held);
    tracing::debug!(%app, %pe, checkpoint = id, bytes = piece.size, crc = crc, "stored a snapshot replica");
    Ok(pb::StoreSnapshotResponse {
        bytes_stored: piece.size,
    })
}

/// A replica being written and not stored: dropped (the stream refused, failed or
/// cancelled), its temporary file is removed on a blocking thread, not on the async
/// thread the call ran on (unlinking hundreds of megabytes takes a while).
struct Unstored(Option<Writing>);

impl Drop for Unstored {
    fn drop(&mut self) {
        if let Some(w) = self.0.take() {
            match tokio::runtime::Handle::try_current() {
                Ok(rt) => drop(rt.spawn_blocking(move || drop(w))),
                Err(_) => drop(w),
            }
        }
    }
}

/// The longest a fetch waits for a snapshot to appear.
const MAX_WAIT_MS: u64 = 10_000;

/// Serves `FetchStateSnapshot`: the whole stored snapshot (checkpoint 0: the latest
/// stored here) in chunks from `offset`, after verifying the stored copy (DATA_LOSS
/// when corrupt, NOT_FOUND when absent). `key_groups` is not applied: the whole
/// snapshot is sent and the loading PE keeps its key groups.
pub async fn fetch_state_snapshot(
    store: Arc<SnapshotStore>,
    r: pb::FetchStateSnapshotRequest,
) -> Result<ChunkStream, Status> {
    fetch_within(store, r, &FETCH_BUDGET).await
}

/// [`fetch_state_snapshot`] holding its bytes against `budget` (permits of 1 MiB).
pub(crate) async fn fetch_within(
    store: Arc<SnapshotStore>,
    r: pb::FetchStateSnapshotRequest,
    budget: &'static tokio::sync::Semaphore,
) -> Result<ChunkStream, Status> {
    if r.app.is_empty() {
        return Err(Status::invalid_argument("app: required"));
    }
    if r.pe.is_empty() {
        return Err(Status::invalid_argument("pe: required"));
    }
    check_names(&r.app, &r.pe, "pe")?;
    let (app, pe, asked) = (r.app.clone(), r.pe.clone(), r.checkpoint_id);
    if r.wait_ms > 0 && asked != 0 {
        // A successor asks for a hand-off its predecessor may not have taken yet.
        let until = tokio::time::Instant::now()
            + std::time::Duration::from_millis(r.wait_ms.min(MAX_WAIT_MS));
        store.wait_for(&app, &pe, asked, until).await;
    }
    // First which snapshot and how large its file is, so the memory is reserved
    // before anything is read.
    let sized = {
        let (store, app, pe) = (store.clone(), app.clone(), pe.clone());
        tokio::task::spawn_blocking(move || {
            let id = if asked == 0 {
                match store.list(&app, &pe)?.last() {
                    Some(id) => *id,
                    None => return Err(StoreError::Missing),
                }
            } else {
                asked
            };
            let path = store.path(&app, &pe, id)?;
            match std::fs::metadata(&path) {
                Ok(m) => Ok((id, m.len())),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(StoreError::Missing),
                Err(e) => Err(StoreError::Io { path, source: e }),
            }
        })
        .await
        .map_err(|e| Status::internal(format!("reading the snapshot: {e}")))?
    };
    let (id, file_bytes) = sized.map_err(|e| store_status(&e, &r.app, &r.pe, asked))?;
    if file_bytes > MAX_SNAPSHOT_BYTES + super::store::HEADER_LEN as u64 {
        tracing::error!(app = %r.app, pe = %r.pe, checkpoint = id, bytes = file_bytes, "stored snapshot larger than any snapshot may be");
        return Err(Status::data_loss(format!(
            "snapshot of PE {:?} of app {:?} at checkpoint {id}: {file_bytes} bytes stored, more than the {MAX_SNAPSHOT_BYTES} any snapshot may have",
            r.pe, r.app
        )));
    }
    let mib = u32::try_from(file_bytes.div_ceil(1 << 20).max(1)).unwrap_or(u32::MAX);
    let permit = budget.try_acquire_many(mib).map_err(|_| {
        tracing::warn!(app = %r.app, pe = %r.pe, checkpoint = id, bytes = file_bytes, "refusing a snapshot fetch: too many snapshot bytes being served");
        Status::resource_exhausted(format!(
            "this worker is serving too many snapshot bytes at once ({} MiB budget); try another copy or retry",
            FETCH_BUDGET_MIB
        ))
    })?;
    // Read, checked and cut into chunks off the stream's threads: each is a pass over
    // a piece of up to a gigabyte. At the background priority for a pre-copy, which
    // the stream does not wait for, on a thread of its own (`Lane::Serve`): not
    // behind this worker's own successors' loads.
    let read = {
        let (app, from, to, offset) = (r.app.clone(), r.pe.clone(), r.for_pe.clone(), r.offset);
        let background = r.background;
        let read = move || {
            let (data, _) = read_piece(&store, &app, &from, id, background)?;
            let size = data.len();
            let cs = (offset <= size as u64).then(|| chunks(&app, &from, &to, id, &data, offset));
            Ok::<_, StoreError>((size, cs))
        };
        if r.background {
            run_on(Lane::Serve, read).await
        } else {
            run_at(Priority::Stream, read).await
        }
    };
    let (size, cs) = read.map_err(|e| {
        if matches!(e, StoreError::Corrupt { .. } | StoreError::Io { .. }) {
            tracing::error!(app = %r.app, pe = %r.pe, checkpoint = asked, error = %e, "stored snapshot unusable");
        }
        store_status(&e, &r.app, &r.pe, asked)
    })?;
    let Some(cs) = cs else {
        return Err(Status::out_of_range(format!(
            "offset: {} is past the end of the {size}-byte snapshot",
            r.offset
        )));
    };
    tracing::debug!(app = %r.app, pe = %r.pe, checkpoint = id, bytes = size, offset = r.offset, "serving a snapshot");
    // The chunks share `data`: its budget is released when the stream is dropped
    // (sent in full, or the caller went away), not before.
    let chunks = tokio_stream::iter(cs).map(move |c| {
        let _held = &permit;
        Ok(c)
    });
    if r.background {
        Ok(Box::pin(chunks.then(
            |c: Result<pb::StateChunk, Status>| async move {
                if let Ok(c) = &c {
                    PRECOPY.turn(c.data.len()).await;
                }
                c
            },
        )))
    } else {
        Ok(Box::pin(chunks))
    }
}
