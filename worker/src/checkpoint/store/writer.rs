//! [`Writing`]: one snapshot file written a part at a time, for snapshots that arrive
//! in parts (a replica, chunk by chunk) or are written at a pace (a drained window's
//! whole piece), so that neither is first joined into one buffer nor written in one
//! burst.
//!
//! Why: after an upgrade's switch each drained window's whole piece (50 MB at 100 MB
//! of state, 333-500 MB at 1 GB) was written at once where it was taken, then
//! received whole by a peer, joined into one buffer, checksummed three more times and
//! written at once there. Those bursts (copies and checksums at memory speed, on niced
//! threads beside the stream's) were when the records slower than twice the steady
//! p99 came, in the seconds after the switch (BENCHMARKS.md, issue 22).

use super::{fsync_dir, io_err, StoreError, StoredPiece, HEADER_LEN, MAGIC};
use super::{TMP_COUNTER, TMP_MARKER, VERSION};
use crate::checkpoint::pace::Pacer;
use std::fs;
use std::io::{self, Seek, SeekFrom, Write};
use std::path::PathBuf;
use std::sync::atomic::Ordering;

/// Bytes written per slot of a pacer.
pub const WRITE_STEP: usize = 4 << 20;

/// A snapshot file being written: its parts appended in order, then
/// [`super::SnapshotStore::commit`] writes its header, syncs it (when durable) and
/// renames it into place. Dropped uncommitted, its temporary file is removed.
#[derive(Debug)]
pub struct Writing {
    pub(super) dir: PathBuf,
    pub(super) name: String,
    tmp: PathBuf,
    file: Option<fs::File>,
    len: u64,
    crc: u32,
    pub(super) durable: bool,
    pacer: Option<&'static Pacer>,
}

impl Writing {
    /// Creates the temporary file for snapshot `name` in `dir` (which exists), its
    /// header left blank until the commit. Each part appended waits for its slots of
    /// `pacer` first, when one is given.
    pub(super) fn create(
        dir: PathBuf,
        name: String,
        durable: bool,
        pacer: Option<&'static Pacer>,
    ) -> Result<Self, StoreError> {
        let tmp = dir.join(format!(
            "{name}{TMP_MARKER}{}.{}",
            std::process::id(),
            TMP_COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        let mut file = fs::File::create(&tmp).map_err(io_err(&tmp))?;
        // Dropped from here on, the temporary file goes.
        let blank = [0u8; HEADER_LEN];
        let mut w = Self {
            dir,
            name,
            tmp,
            file: None,
            len: 0,
            crc: 0,
            durable,
            pacer,
        };
        file.write_all(&blank).map_err(io_err(&w.tmp))?;
        w.file = Some(file);
        Ok(w)
    }

    /// Appends the next part of the snapshot.
    pub fn append(&mut self, part: &[u8]) -> Result<(), StoreError> {
        let Some(f) = self.file.as_mut() else {
            return Err(io_err(&self.tmp)(io::Error::other("already failed")));
        };
        for step in part.chunks(WRITE_STEP) {
            if let Some(p) = self.pacer {
                p.turn_blocking(step.len());
            }
            if let Err(e) = f.write_all(step) {
                // What was written of it is unknown: no more parts, no commit.
                self.file = None;
                return Err(io_err(&self.tmp)(e));
            }
        }
        self.crc = crc32c::crc32c_append(self.crc, part);
        self.len += part.len() as u64;
        Ok(())
    }

    /// Bytes appended so far.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether nothing was appended.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Writes the header (refused as [`StoreError::Corrupt`] when `expected_crc32c`
    /// is given and the parts do not match it), syncs when durable and renames the
    /// file to `path`; what was stored.
    pub(super) fn finish(
        mut self,
        expected_crc32c: Option<u32>,
        path: &std::path::Path,
    ) -> Result<StoredPiece, StoreError> {
        if let Some(want) = expected_crc32c.filter(|want| *want != self.crc) {
            return Err(StoreError::Corrupt {
                why: format!(
                    "crc mismatch: expected {want:#010x}, received data has {:#010x}",
                    self.crc
                ),
            });
        }
        let mut f = self
            .file
            .take()
            .ok_or_else(|| io_err(&self.tmp)(io::Error::other("already failed")))?;
        let header = header(self.crc, self.len);
        let written = (|| {
            f.seek(SeekFrom::Start(0))?;
            f.write_all(&header)?;
            if self.durable {
                f.sync_all()?;
            }
            Ok(())
        })();
        written.map_err(io_err(&self.tmp))?;
        drop(f);
        fs::rename(&self.tmp, path).map_err(io_err(path))?;
        // Renamed: nothing left to remove.
        self.tmp = PathBuf::new();
        if self.durable {
            fsync_dir(&self.dir)?;
        }
        Ok(StoredPiece {
            size: self.len,
            crc32c: self.crc,
        })
    }
}

impl Drop for Writing {
    fn drop(&mut self) {
        if !self.tmp.as_os_str().is_empty() {
            let _ = fs::remove_file(&self.tmp);
        }
    }
}

/// The header of a snapshot of `len` bytes with CRC-32C `crc`.
pub(super) fn header(crc: u32, len: u64) -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    h[..8].copy_from_slice(MAGIC);
    h[8..10].copy_from_slice(&VERSION.to_le_bytes());
    h[12..16].copy_from_slice(&crc.to_le_bytes());
    h[16..24].copy_from_slice(&len.to_le_bytes());
    h
}
