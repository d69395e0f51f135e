//! Checkpoint snapshots on the worker: where they are kept and how they are copied.
//!
//! - [`store`]: [`SnapshotStore`], snapshots on local disk, written atomically, with a
//!   CRC-32C checked on every read.
//! - [`serve`]: the `StoreSnapshot` and `FetchStateSnapshot` handlers, which keep a
//!   peer's replica and stream a stored snapshot back.
//! - [`replicate`]: [`Replicator`], pushing a snapshot to the next workers in the
//!   ring so a checkpoint survives the loss of the worker that took it, and [`fetch`],
//!   finding an intact copy to restore from (the local one, else the replicas).
//! - [`pace`]: [`pace::Pacer`], spacing the bytes of pushes and pre-copy reads.
//!
//! Snapshots travel as [`pb::StateChunk`] streams of at most [`CHUNK_BYTES`] per chunk,
//! each with its CRC-32C, the last one with the whole snapshot's; [`Assembler`] checks
//! a received stream, on both sides, before anything is stored or loaded.

pub mod dial;
pub mod pace;
pub mod replicate;
pub mod serve;
pub mod store;

#[cfg(test)]
mod tests;

pub use replicate::{fetch, FetchError, Fetched, Replicator};
pub use store::{SnapshotStore, StoreError, StoredPiece};

use bytes::Bytes;
use weir_proto::v1 as pb;

/// Largest chunk data sent or accepted: well under gRPC's default 4 MiB message limit.
pub const CHUNK_BYTES: usize = 1 << 20;

/// The largest HTTP/2 frame a worker accepts (its control server, and its channels to
/// other workers, which fetch pre-copies and hand-offs from them): snapshot chunks
/// then cross in frames of 256 KiB rather than HTTP/2's default of 16 KiB. Each frame
/// costs a read, a parse and a wake-up on the async threads the PEs run on; a 1 GB
/// replica or pre-copy paced at 256 MB/s made ~16,000 of them a second on each side.
pub const FRAME_BYTES: u32 = 256 << 10;

/// Largest snapshot accepted from the network: bounds the memory one transfer holds.
pub const MAX_SNAPSHOT_BYTES: u64 = 1 << 30;

/// Splits a snapshot into chunks from byte `offset` on (empty past the end): every
/// chunk slices `bytes` without copying, carries its CRC-32C, the total size and, on
/// the last, the whole snapshot's CRC-32C. A zero-byte snapshot is one empty last chunk.
///
/// One pass over the bytes (the whole CRC-32C is combined from the chunks'), and a
/// blocking one for a large snapshot: callers run it off the async threads, which
/// carry the stream (BENCHMARKS.md, 2026-12-06, "Snapshot transfers off the stream's
/// threads").
pub fn chunks(
    app: &str,
    from_pe: &str,
    to_pe: &str,
    checkpoint_id: u64,
    bytes: &Bytes,
    offset: u64,
) -> Vec<pb::StateChunk> {
    let total = bytes.len();
    let start = usize::try_from(offset).unwrap_or(usize::MAX).min(total);
    let mut whole = crc32c::crc32c(&bytes[..start]);
    let mut out = Vec::with_capacity((total - start).div_ceil(CHUNK_BYTES).max(1));
    let mut at = start;
    loop {
        let end = (at + CHUNK_BYTES).min(total);
        let data = bytes.slice(at..end);
        let last = end == total;
        let crc = crc32c::crc32c(&data);
        whole = crc32c::crc32c_combine(whole, crc, data.len());
        out.push(pb::StateChunk {
            app: app.to_string(),
            from_pe: from_pe.to_string(),
            to_pe: to_pe.to_string(),
            barrier_id: checkpoint_id,
            offset: at as u64,
            crc32c: crc,
            data,
            last,
            key_groups: None,
            total_bytes: total as u64,
            snapshot_crc32c: if last { whole } else { 0 },
        });
        if last {
            return out;
        }
        at = end;
    }
}

/// Why a chunk stream was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ChunkError {
    /// Malformed: a missing field, a gap, a chunk after the last, a size that does not
    /// add up (INVALID_ARGUMENT).
    #[error("{0}")]
    Invalid(String),
    /// A CRC-32C mismatch, of one chunk or of the whole snapshot (DATA_LOSS).
    #[error("{0}")]
    DataLoss(String),
    /// Larger than allowed (RESOURCE_EXHAUSTED).
    #[error("{0}")]
    TooLarge(String),
}

impl From<ChunkError> for tonic::Status {
    fn from(e: ChunkError) -> Self {
        match e {
            ChunkError::Invalid(m) => tonic::Status::invalid_argument(m),
            ChunkError::DataLoss(m) => tonic::Status::data_loss(m),
            ChunkError::TooLarge(m) => tonic::Status::resource_exhausted(m),
        }
    }
}

/// A snapshot received and verified.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Assembled {
    /// The app.
    pub app: String,
    /// The checkpointed PE (`from_pe`).
    pub pe: String,
    /// The checkpoint (`barrier_id`).
    pub checkpoint_id: u64,
    /// The snapshot.
    pub data: Vec<u8>,
    /// Its CRC-32C (checked against the last chunk's `snapshot_crc32c`).
    pub crc32c: u32,
}

/// Checks a chunk stream as it arrives (contiguous offsets from 0, one app, PE and
/// checkpoint throughout, per-chunk and whole CRC-32C, bounded size) and collects it.
/// Pure, so both the server (StoreSnapshot) and the client (fetch) use the same rules.
///
/// Each chunk costs one CRC pass over its megabyte, on the async thread that received
/// it; the chunks are kept as they came (no copy, and nothing allocated for a size
/// a lying first chunk announces) and joined once by [`Assembler::finish`], which a
/// caller runs on a blocking thread. Why: appending to one growing buffer copied a
/// 500 MB snapshot three more times as it doubled, on the stream's threads, with a
/// second CRC pass (BENCHMARKS.md, 2026-12-06, "Snapshot transfers off the stream's
/// threads").
#[derive(Debug)]
pub struct Assembler {
    limit: u64,
    first: Option<(String, String, u64, u64)>,
    data: Vec<Bytes>,
    received: u64,
    crc: u32,
    done: bool,
}

impl Assembler {
    /// An assembler accepting at most `limit` bytes (and never more than
    /// [`MAX_SNAPSHOT_BYTES`]).
    pub fn new(limit: u64) -> Self {
        Self {
            limit: limit.min(MAX_SNAPSHOT_BYTES),
            first: None,
            data: Vec::new(),
            received: 0,
            crc: 0,
            done: false,
        }
    }

    /// Bytes received so far.
    pub fn received(&self) -> u64 {
        self.received
    }

    /// Takes the next chunk; an error means the whole stream is refused.
    pub fn push(&mut self, c: pb::StateChunk) -> Result<(), ChunkError> {
        let data = self.pass(c)?;
        self.data.push(data);
        Ok(())
    }

    /// Checks the next chunk as [`Assembler::push`] does, but hands its bytes back
    /// rather than keeping them: for a receiver that writes each chunk as it comes
    /// (then [`Assembler::passed`], not [`Assembler::finish`]).
    pub fn pass(&mut self, c: pb::StateChunk) -> Result<Bytes, ChunkError> {
        let invalid = |m: String| Err(ChunkError::Invalid(m));
        if self.done {
            return invalid("chunk after the last one".into());
        }
        let at = self.received;
        match &self.first {
            None => {
                if c.app.is_empty() {
                    return invalid("app: required".into());
                }
                if c.from_pe.is_empty() {
                    return invalid("from_pe: required".into());
                }
                if c.barrier_id == 0 {
                    return invalid("barrier_id: required (the checkpoint id)".into());
                }
                if c.total_bytes > self.limit {
                    return Err(ChunkError::TooLarge(format!(
                        "total_bytes: {} is over the limit of {} bytes",
                        c.total_bytes, self.limit
                    )));
                }
                self.first = Some((
                    c.app.clone(),
                    c.from_pe.clone(),
                    c.barrier_id,
                    c.total_bytes,
                ));
            }
            Some((app, pe, id, total)) => {
                if c.app != *app || c.from_pe != *pe || c.barrier_id != *id {
                    return invalid(format!(
                        "chunk at offset {}: app, from_pe and barrier_id change within the stream",
                        c.offset
                    ));
                }
                if c.total_bytes != *total {
                    return invalid(format!(
                        "chunk at offset {}: total_bytes changes within the stream",
                        c.offset
                    ));
                }
            }
        }
        if c.offset != at {
            return invalid(format!(
                "offset: chunk at {} where {at} was expected (a gap or overlap)",
                c.offset
            ));
        }
        if c.data.len() > CHUNK_BYTES {
            return invalid(format!(
                "data: {} bytes in one chunk, over {CHUNK_BYTES}",
                c.data.len()
            ));
        }
        let end = at + c.data.len() as u64;
        if end > self.limit {
            return Err(ChunkError::TooLarge(format!(
                "snapshot exceeds the limit of {} bytes",
                self.limit
            )));
        }
        if c.total_bytes != 0 && end > c.total_bytes {
            return invalid(format!(
                "chunk at offset {at}: runs past total_bytes {}",
                c.total_bytes
            ));
        }
        let crc = crc32c::crc32c(&c.data);
        if crc != c.crc32c {
            return Err(ChunkError::DataLoss(format!(
                "chunk at offset {at}: crc mismatch (sent {:#010x}, data has {crc:#010x})",
                c.crc32c
            )));
        }
        self.crc = crc32c::crc32c_combine(self.crc, crc, c.data.len());
        self.received = end;
        if c.last {
            self.done = true;
            if c.total_bytes != 0 && end != c.total_bytes {
                return invalid(format!(
                    "last chunk ends at {end}, short of total_bytes {}",
                    c.total_bytes
                ));
            }
            if self.crc != c.snapshot_crc32c {
                return Err(ChunkError::DataLoss(format!(
                    "snapshot crc mismatch (sent {:#010x}, data has {:#010x})",
                    c.snapshot_crc32c, self.crc
                )));
            }
        }
        Ok(c.data)
    }

    /// The verified snapshot; refused when the last chunk has not arrived. Joins the
    /// chunks: one copy of the snapshot, to run on a blocking thread when it is large.
    pub fn finish(self) -> Result<Assembled, ChunkError> {
        let (app, pe, checkpoint_id, crc32c) = self.passed()?;
        let mut data = Vec::with_capacity(self.received as usize);
        for c in &self.data {
            data.extend_from_slice(c);
        }
        Ok(Assembled {
            app,
            pe,
            checkpoint_id,
            data,
            crc32c,
        })
    }

    /// What the stream was, once its last chunk came: its app, PE, checkpoint and
    /// verified CRC-32C; refused when the last chunk has not arrived.
    pub fn passed(&self) -> Result<(String, String, u64, u32), ChunkError> {
        match &self.first {
            Some((app, pe, checkpoint_id, _)) if self.done => {
                Ok((app.clone(), pe.clone(), *checkpoint_id, self.crc))
            }
            None => Err(ChunkError::Invalid("no chunks".into())),
            Some(_) => Err(ChunkError::Invalid(format!(
                "stream ended after {} bytes, before the last chunk",
                self.received
            ))),
        }
    }
}

#[cfg(test)]
mod unit {
    use super::*;

    fn sample(n: usize) -> Bytes {
        (0..n).map(|i| (i % 251) as u8).collect::<Vec<_>>().into()
    }

    fn assemble(cs: Vec<pb::StateChunk>, limit: u64) -> Result<Assembled, ChunkError> {
        let mut a = Assembler::new(limit);
        for c in cs {
            a.push(c)?;
        }
        a.finish()
    }

    #[test]
    fn checkpoint_chunks_round_trip() {
        for n in [0, 1, CHUNK_BYTES, CHUNK_BYTES + 1, 3 * CHUNK_BYTES - 5] {
            let b = sample(n);
            let cs = chunks("a", "p", "", 4, &b, 0);
            assert_eq!(cs.len(), n.div_ceil(CHUNK_BYTES).max(1), "{n}");
            assert!(cs.iter().all(|c| c.data.len() <= CHUNK_BYTES));
            assert!(cs.last().unwrap().last);
            let got = assemble(cs, MAX_SNAPSHOT_BYTES).unwrap();
            assert_eq!(got.data, b.to_vec());
            assert_eq!((got.app.as_str(), got.pe.as_str()), ("a", "p"));
            assert_eq!(got.checkpoint_id, 4);
            assert_eq!(got.crc32c, crc32c::crc32c(&b));
        }
        // Resuming from an offset starts there and keeps absolute offsets.
        let b = sample(CHUNK_BYTES + 10);
        let cs = chunks("a", "p", "", 4, &b, CHUNK_BYTES as u64);
        assert_eq!(cs.len(), 1);
        assert_eq!(cs[0].offset, CHUNK_BYTES as u64);
        assert_eq!(cs[0].snapshot_crc32c, crc32c::crc32c(&b));
    }

    #[test]
    fn checkpoint_assembler_refuses_bad_streams() {
        let b = sample(2 * CHUNK_BYTES + 3);
        let good = chunks("a", "p", "", 4, &b, 0);

        let mut gap = good.clone();
        gap.remove(1);
        assert!(
            matches!(assemble(gap, u64::MAX), Err(ChunkError::Invalid(m)) if m.contains("gap"))
        );

        let mut bad_crc = good.clone();
        bad_crc[1].crc32c ^= 1;
        assert!(matches!(
            assemble(bad_crc, u64::MAX),
            Err(ChunkError::DataLoss(_))
        ));

        let mut flipped = good.clone();
        let mut d = flipped[0].data.to_vec();
        d[7] ^= 0x80;
        flipped[0].data = d.into();
        assert!(matches!(
            assemble(flipped, u64::MAX),
            Err(ChunkError::DataLoss(_))
        ));

        let mut bad_whole = good.clone();
        bad_whole[2].snapshot_crc32c ^= 1;
        assert!(matches!(
            assemble(bad_whole, u64::MAX),
            Err(ChunkError::DataLoss(m)) if m.contains("snapshot crc")
        ));

        let mut unfinished = good.clone();
        unfinished.pop();
        assert!(matches!(
            assemble(unfinished, u64::MAX),
            Err(ChunkError::Invalid(_))
        ));

        let mut after_last = good.clone();
        after_last.push(good[0].clone());
        assert!(matches!(
            assemble(after_last, u64::MAX),
            Err(ChunkError::Invalid(_))
        ));

        let mut mixed = good.clone();
        mixed[1].from_pe = "q".into();
        assert!(matches!(
            assemble(mixed, u64::MAX),
            Err(ChunkError::Invalid(_))
        ));

        let mut no_app = good.clone();
        no_app[0].app.clear();
        assert!(matches!(
            assemble(no_app, u64::MAX),
            Err(ChunkError::Invalid(_))
        ));

        let mut huge = good.clone();
        huge[0].total_bytes = MAX_SNAPSHOT_BYTES + 1;
        assert!(matches!(
            assemble(huge, u64::MAX),
            Err(ChunkError::TooLarge(_))
        ));

        // Over a limit without announcing it.
        let mut unannounced = good.clone();
        for c in &mut unannounced {
            c.total_bytes = 0;
        }
        assert!(matches!(
            assemble(unannounced, CHUNK_BYTES as u64 + 1),
            Err(ChunkError::TooLarge(_))
        ));

        assert!(matches!(
            assemble(vec![], u64::MAX),
            Err(ChunkError::Invalid(_))
        ));
        assert!(assemble(good, u64::MAX).is_ok());
    }
}
