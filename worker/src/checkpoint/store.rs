//! [`SnapshotStore`]: checkpoint snapshots on this worker's disk, one file per
//! (app, PE, checkpoint).
//!
//! Layout: `<root>/<app>/<pe>/<checkpoint id, 20 digits>.snap`, where app and PE names
//! are encoded ([`encode_name`]) so that no name (they come from users and from the
//! network) can escape the root or collide with another. Each file starts with a
//! 24-byte header (magic, format version, CRC-32C, length) so that a flipped bit or a
//! torn write is detected when the snapshot is read, not when a restored PE misbehaves.
//!
//! Writes are atomic: a temporary file in the same directory is written and fsynced,
//! renamed over the final name, and the directory is fsynced; a crash leaves either
//! the old state or the new one (plus, at worst, a temporary file removed at the next
//! [`SnapshotStore::open`]).
//!
//! Every call is blocking file system work: call it from `spawn_blocking`.

use bytes::Bytes;
use std::fs;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

mod writer;
pub use writer::{Writing, WRITE_STEP};

/// First bytes of every snapshot file.
const MAGIC: &[u8; 8] = b"WEIRSNAP";
/// The file format version written.
const VERSION: u16 = 1;
/// Header: magic (8), version (2), reserved (2), CRC-32C (4), length (8), little endian.
pub const HEADER_LEN: usize = 24;

/// Bytes read per slot by [`SnapshotStore::get_paced`].
pub const READ_STEP: usize = 4 << 20;

/// Suffix of complete snapshot files.
const SUFFIX: &str = ".snap";
/// Marker in the names of files being written.
const TMP_MARKER: &str = ".tmp.";
/// Longest encoded name accepted (file names are limited to 255 bytes).
const MAX_ENCODED_NAME: usize = 240;

/// Unique suffixes for temporary files within this process.
static TMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// Why a snapshot could not be stored or read.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// No snapshot stored for that app, PE and checkpoint.
    #[error("snapshot missing")]
    Missing,
    /// A snapshot is stored but fails verification (bad header, wrong length, CRC
    /// mismatch); it must not be loaded.
    #[error("snapshot corrupt: {why}")]
    Corrupt {
        /// What was wrong.
        why: String,
    },
    /// An app or PE name that cannot name a file (empty, or too long once encoded).
    #[error("invalid name: {0}")]
    InvalidName(String),
    /// The file system failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or directory involved.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// What was stored: enough for the master to know which copy is intact.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StoredPiece {
    /// Snapshot size in bytes (without the header).
    pub size: u64,
    /// CRC-32C of the snapshot.
    pub crc32c: u32,
}

/// Snapshots on disk under one root directory.
#[derive(Debug)]
pub struct SnapshotStore {
    root: PathBuf,
    /// Removed with everything in it on drop (a temporary store).
    owned: bool,
    /// Signalled after each file stored, so that what waits for one (a successor's
    /// fetch of its predecessor's hand-off) wakes when it is there rather than at its
    /// next poll ([`Self::wait_for`]).
    stored: tokio::sync::Notify,
}

/// Encodes an app or PE name as one safe file name: ASCII letters, digits, `-` and `_`
/// stay, every other byte becomes `%XX`. The encoding is injective (`%` itself is
/// encoded) and never yields `.`, `..` or a path separator, so no name can traverse
/// out of the store or collide with another name.
pub fn encode_name(name: &str) -> Result<String, StoreError> {
    if name.is_empty() {
        return Err(StoreError::InvalidName("empty".into()));
    }
    let mut out = String::with_capacity(name.len());
    for b in name.bytes() {
        if b.is_ascii_alphanumeric() || b == b'-' || b == b'_' {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    if out.len() > MAX_ENCODED_NAME {
        return Err(StoreError::InvalidName(format!(
            "{} bytes, too long for a file name once encoded",
            name.len()
        )));
    }
    Ok(out)
}

/// What marks a PE name as a series of rounds against one checkpoint (an upgrade's
/// hand-off, `runtime::handoff::round_name`): `<pe>+round<base>`.
pub const ROUND_MARK: &str = "+round";

/// What marks a PE name as a drained PE's hand-off envelope
/// (`runtime::handoff::envelope_name`): `<pe>+handoff`.
pub const HANDOFF_MARK: &str = "+handoff";

/// Whether `name` is an upgrade's hand-off (a round or an envelope), not a PE's
/// snapshot: read once by a successor, probed for until it is there.
pub fn is_handoff(name: &str) -> bool {
    name.ends_with(HANDOFF_MARK) || series_base(name).is_some()
}

/// The base checkpoint of a series of rounds stored under `name`; `None` for a PE's
/// own snapshots (numbered by checkpoint).
pub fn series_base(name: &str) -> Option<u64> {
    let (_, base) = name.rsplit_once(ROUND_MARK)?;
    base.parse().ok()
}

/// The inverse of [`encode_name`]; `None` for anything it cannot have produced.
pub fn decode_name(encoded: &str) -> Option<String> {
    let b = encoded.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = encoded.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// The file name of a checkpoint's snapshot: fixed width, so names sort by id.
fn file_name(id: u64) -> String {
    format!("{id:020}{SUFFIX}")
}

/// The checkpoint id a file name stands for (`None` for temporary and foreign files).
fn parse_file_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(SUFFIX)?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// Checks a snapshot file's header and CRC-32C; returns the CRC-32C.
/// The file at `path`, read [`READ_STEP`] bytes a slot of `pacer` at a time.
fn read_paced(path: &Path, pacer: &super::pace::Pacer) -> io::Result<Vec<u8>> {
    let mut f = fs::File::open(path)?;
    let len = usize::try_from(f.metadata()?.len()).map_err(io::Error::other)?;
    let mut file = Vec::with_capacity(len);
    loop {
        let step = len.saturating_sub(file.len()).clamp(1, READ_STEP);
        pacer.turn_blocking(step);
        if (&mut f).take(step as u64).read_to_end(&mut file)? == 0 {
            return Ok(file);
        }
    }
}

fn check(file: &[u8]) -> Result<u32, StoreError> {
    let corrupt = |why: String| Err(StoreError::Corrupt { why });
    if file.len() < HEADER_LEN {
        return corrupt(format!(
            "truncated: {} bytes, shorter than the header",
            file.len()
        ));
    }
    if &file[..8] != MAGIC {
        return corrupt("bad magic: not a snapshot file".into());
    }
    let version = u16::from_le_bytes([file[8], file[9]]);
    if version != VERSION {
        return corrupt(format!("unknown format version {version}"));
    }
    let crc = u32::from_le_bytes([file[12], file[13], file[14], file[15]]);
    let mut len = [0u8; 8];
    len.copy_from_slice(&file[16..24]);
    let len = u64::from_le_bytes(len);
    let held = (file.len() - HEADER_LEN) as u64;
    if held != len {
        return corrupt(format!(
            "length mismatch: header says {len} bytes, file holds {held}"
        ));
    }
    let actual = crc32c::crc32c(&file[HEADER_LEN..]);
    if actual != crc {
        return corrupt(format!(
            "crc mismatch: header says {crc:#010x}, data has {actual:#010x}"
        ));
    }
    Ok(crc)
}

fn fsync_dir(dir: &Path) -> Result<(), StoreError> {
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err(dir))
}

impl SnapshotStore {
    /// Opens (creating it when needed) the store under `dir`, removing temporary files
    /// a crash left behind.
    pub fn open(dir: impl Into<PathBuf>) -> Result<Self, StoreError> {
        let root = dir.into();
        fs::create_dir_all(&root).map_err(io_err(&root))?;
        let store = Self {
            root,
            owned: false,
            stored: tokio::sync::Notify::new(),
        };
        store.remove_leftovers();
        Ok(store)
    }

    /// A store in a fresh directory under the system's temporary directory, removed
    /// when the store is dropped: for workers started without a checkpoint directory
    /// (tests, demos), whose checkpoints need not outlive them.
    pub fn temporary() -> Result<Self, StoreError> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let n = TMP_COUNTER.fetch_add(1, Ordering::Relaxed);
        let root = std::env::temp_dir().join(format!(
            "weir-checkpoints-{}-{nanos}-{n}",
            std::process::id()
        ));
        fs::create_dir(&root).map_err(io_err(&root))?;
        Ok(Self {
            root,
            owned: true,
            stored: tokio::sync::Notify::new(),
        })
    }

    /// The root directory.
    pub fn dir(&self) -> &Path {
        &self.root
    }

    fn app_dir(&self, app: &str) -> Result<PathBuf, StoreError> {
        Ok(self.root.join(encode_name(app)?))
    }

    fn pe_dir(&self, app: &str, pe: &str) -> Result<PathBuf, StoreError> {
        Ok(self.app_dir(app)?.join(encode_name(pe)?))
    }

    /// The file holding a snapshot (whether or not it exists). Exposed for tests and
    /// tools that inspect the store.
    pub fn path(&self, app: &str, pe: &str, id: u64) -> Result<PathBuf, StoreError> {
        Ok(self.pe_dir(app, pe)?.join(file_name(id)))
    }

    /// Stores the snapshot this worker took of `pe` at checkpoint `id`, replacing any
    /// earlier copy atomically.
    pub fn put(
        &self,
        app: &str,
        pe: &str,
        id: u64,
        data: &[u8],
    ) -> Result<StoredPiece, StoreError> {
        self.write(app, pe, id, data, true, None)
    }

    /// [`SnapshotStore::put`] without waiting for the disk: the file appears whole or
    /// not at all while this machine runs, but a crash may lose it (CRC-checked on
    /// every read, so a damaged one is refused). For an upgrade's hand-off rounds and
    /// envelopes, which nobody reads after a crash of this worker (the upgrade rolls
    /// back).
    pub fn put_volatile(
        &self,
        app: &str,
        pe: &str,
        id: u64,
        data: &[u8],
    ) -> Result<StoredPiece, StoreError> {
        self.write(app, pe, id, data, false, None)
    }

    fn write(
        &self,
        app: &str,
        pe: &str,
        id: u64,
        data: &[u8],
        durable: bool,
        pacer: Option<&'static super::pace::Pacer>,
    ) -> Result<StoredPiece, StoreError> {
        let mut w = self.begin(app, pe, id, durable, pacer)?;
        w.append(data)?;
        self.commit(w, None)
    }

    /// [`SnapshotStore::put`], writing [`writer::WRITE_STEP`] bytes a slot of `pacer`
    /// at a time: for a drained window's whole piece, which only the switch
    /// checkpoint's completion waits for ([`writer`] says why).
    pub fn put_paced(
        &self,
        app: &str,
        pe: &str,
        id: u64,
        data: &[u8],
        pacer: &'static super::pace::Pacer,
    ) -> Result<StoredPiece, StoreError> {
        self.write(app, pe, id, data, true, Some(pacer))
    }

    /// Begins writing the snapshot of `pe` at checkpoint `id` a part at a time, each
    /// part paced by `pacer` when one is given; [`SnapshotStore::commit`] stores it.
    /// `durable`: synced to disk before it shows ([`SnapshotStore::put`]), or not
    /// ([`SnapshotStore::put_volatile`]).
    pub fn begin(
        &self,
        app: &str,
        pe: &str,
        id: u64,
        durable: bool,
        pacer: Option<&'static super::pace::Pacer>,
    ) -> Result<Writing, StoreError> {
        let dir = self.pe_dir(app, pe)?;
        if !dir.is_dir() {
            fs::create_dir_all(&dir).map_err(io_err(&dir))?;
            // Make the new directories themselves durable, unless what goes in them
            // need not be: volatile files have names of their own (a hand-off's
            // `+round`, `+handoff`), never written durably, and a PE stores its
            // envelope at the switch barrier, where two fsyncs behind a busy disk
            // would hold the stream.
            if durable {
                if let Some(app_dir) = dir.parent() {
                    fsync_dir(app_dir)?;
                }
                fsync_dir(&self.root)?;
            }
        }
        Writing::create(dir, file_name(id), durable, pacer)
    }

    /// Stores what `w` wrote, replacing any earlier copy atomically; refused as
    /// [`StoreError::Corrupt`] (nothing stored) when `expected_crc32c` is given and
    /// the bytes do not match it.
    pub fn commit(
        &self,
        w: Writing,
        expected_crc32c: Option<u32>,
    ) -> Result<StoredPiece, StoreError> {
        let path = w.dir.join(&w.name);
        let piece = w.finish(expected_crc32c, &path)?;
        self.stored.notify_waiters();
        Ok(piece)
    }

    /// Stores a replica of another worker's snapshot, received with its CRC-32C:
    /// refused as [`StoreError::Corrupt`] (nothing stored) when the bytes do not match
    /// it, so a copy damaged on the way is never kept as intact.
    pub fn put_replica(
        &self,
        app: &str,
        pe: &str,
        id: u64,
        data: &[u8],
        expected_crc32c: u32,
    ) -> Result<StoredPiece, StoreError> {
        // Checked before anything is written: a damaged copy leaves nothing behind.
        let actual = crc32c::crc32c(data);
        if actual != expected_crc32c {
            return Err(StoreError::Corrupt {
                why: format!(
                    "crc mismatch: expected {expected_crc32c:#010x}, received data has {actual:#010x}"
                ),
            });
        }
        self.put(app, pe, id, data)
    }

    /// [`Self::get_shared`], copied into a buffer of its own.
    pub fn get(&self, app: &str, pe: &str, id: u64) -> Result<Vec<u8>, StoreError> {
        self.get_shared(app, pe, id).map(|(data, _)| data.to_vec())
    }

    /// Reads and verifies a snapshot: [`StoreError::Missing`] when there is none,
    /// [`StoreError::Corrupt`] when the file fails its header, length or CRC check.
    /// The snapshot is a slice of the file read (no copy), with its CRC-32C.
    pub fn get_shared(&self, app: &str, pe: &str, id: u64) -> Result<(Bytes, u32), StoreError> {
        self.get_with(app, pe, id, |path| fs::read(path))
    }

    /// [`Self::get_shared`], reading the file a slot of `pacer` at a time
    /// ([`READ_STEP`] bytes): for a pre-copy, which nothing waits on but the switch. Read
    /// at once, the pieces of a 1 GB rescale or replacement (0.5-1 GB each, read, faulted
    /// into fresh memory and checksummed at ~1 GB/s on the background threads) went
    /// with gaps of 20-80 ms at the sink for the first 1-2 s of every upgrade, though
    /// the threads were niced: they take memory bandwidth and the kernel's page
    /// faults, not only CPU time (BENCHMARKS.md, issue 22).
    pub fn get_paced(
        &self,
        app: &str,
        pe: &str,
        id: u64,
        pacer: &super::pace::Pacer,
    ) -> Result<(Bytes, u32), StoreError> {
        self.get_with(app, pe, id, |path| read_paced(path, pacer))
    }

    /// The snapshot of `pe` at `id`, its file read by `read` and checked.
    fn get_with(
        &self,
        app: &str,
        pe: &str,
        id: u64,
        read: impl FnOnce(&Path) -> io::Result<Vec<u8>>,
    ) -> Result<(Bytes, u32), StoreError> {
        let path = self.path(app, pe, id)?;
        match read(&path) {
            Ok(file) => {
                let crc = check(&file)?;
                Ok((Bytes::from(file).slice(HEADER_LEN..), crc))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Err(StoreError::Missing),
            Err(e) => Err(io_err(&path)(e)),
        }
    }

    /// Whether a snapshot file exists (not whether it is intact: [`Self::get`] checks).
    pub fn has(&self, app: &str, pe: &str, id: u64) -> bool {
        self.path(app, pe, id).is_ok_and(|p| p.is_file())
    }

    /// Waits until the snapshot of `pe` at `id` is stored here, or `until`; whether it
    /// is. Woken by each file stored, not polling: at the switch a successor waits for
    /// its predecessors' envelopes while the stream waits for it, and with polls every
    /// 2 ms on both the serving and the asking side (and the last rounds asked for
    /// after), successors took over 13-21 ms after the switch began on the busy
    /// 2-core box; woken, 2-6 ms after the envelopes are stored (BENCHMARKS.md,
    /// "Rounds small and often").
    pub async fn wait_for(
        &self,
        app: &str,
        pe: &str,
        id: u64,
        until: tokio::time::Instant,
    ) -> bool {
        loop {
            // Registered before looking, so a file stored in between still wakes it.
            let stored = self.stored.notified();
            tokio::pin!(stored);
            stored.as_mut().enable();
            if self.has(app, pe, id) {
                return true;
            }
            if tokio::time::timeout_at(until, stored).await.is_err() {
                return self.has(app, pe, id);
            }
        }
    }

    /// Waits until any file is stored here, or `until`.
    pub async fn stored_until(&self, until: tokio::time::Instant) {
        let _ = tokio::time::timeout_at(until, self.stored.notified()).await;
    }

    /// The checkpoint ids stored for a PE, ascending.
    pub fn list(&self, app: &str, pe: &str) -> Result<Vec<u64>, StoreError> {
        let dir = self.pe_dir(app, pe)?;
        list_dir(&dir)
    }

    /// The PEs of an app with snapshots here (decoded names), sorted.
    pub fn pes(&self, app: &str) -> Result<Vec<String>, StoreError> {
        let dir = self.app_dir(app)?;
        let entries = match fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io_err(&dir)(e)),
        };
        let mut pes: Vec<String> = entries
            .filter_map(|e| e.ok())
            .filter_map(|e| e.file_name().to_str().and_then(decode_name))
            .collect();
        pes.sort();
        Ok(pes)
    }

    /// Deletes a PE's snapshots older than `keep_from_id` (they are superseded by a
    /// complete later checkpoint); returns the ids removed.
    pub fn gc(&self, app: &str, pe: &str, keep_from_id: u64) -> Result<Vec<u64>, StoreError> {
        let dir = self.pe_dir(app, pe)?;
        gc_dir(&dir, keep_from_id)
    }

    /// [`Self::gc`] for every PE of an app; returns how many snapshots were removed.
    /// A series of rounds ([`series_base`]) is numbered 1, 2, ... rather than by
    /// checkpoint: it is kept whole while its base checkpoint is, and removed whole
    /// once the base is superseded.
    pub fn gc_app(&self, app: &str, keep_from_id: u64) -> Result<usize, StoreError> {
        let dir = self.app_dir(app)?;
        let entries = match fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
            Err(e) => return Err(io_err(&dir)(e)),
        };
        let mut removed = 0;
        for e in entries.filter_map(|e| e.ok()) {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                let series = e
                    .file_name()
                    .to_str()
                    .and_then(decode_name)
                    .and_then(|name| series_base(&name));
                let keep_from = match series {
                    Some(base) if base >= keep_from_id => continue,
                    Some(_) => u64::MAX,
                    None => keep_from_id,
                };
                removed += gc_dir(&e.path(), keep_from)?.len();
            }
        }
        Ok(removed)
    }

    /// Deletes every snapshot of an app (the app was removed).
    pub fn remove_app(&self, app: &str) -> Result<(), StoreError> {
        let dir = self.app_dir(app)?;
        match fs::remove_dir_all(&dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_err(&dir)(e)),
        }
    }

    /// Removes temporary files of interrupted writes (best effort).
    fn remove_leftovers(&self) {
        let Ok(apps) = fs::read_dir(&self.root) else {
            return;
        };
        for app in apps.filter_map(|e| e.ok()) {
            let Ok(pes) = fs::read_dir(app.path()) else {
                continue;
            };
            for pe in pes.filter_map(|e| e.ok()) {
                let Ok(files) = fs::read_dir(pe.path()) else {
                    continue;
                };
                for f in files.filter_map(|e| e.ok()) {
                    if f.file_name().to_string_lossy().contains(TMP_MARKER) {
                        tracing::info!(path = %f.path().display(), "removing an interrupted snapshot write");
                        let _ = fs::remove_file(f.path());
                    }
                }
            }
        }
    }
}

fn list_dir(dir: &Path) -> Result<Vec<u64>, StoreError> {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io_err(dir)(e)),
    };
    let mut ids: Vec<u64> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str().and_then(parse_file_name))
        .collect();
    ids.sort_unstable();
    Ok(ids)
}

fn gc_dir(dir: &Path, keep_from_id: u64) -> Result<Vec<u64>, StoreError> {
    let mut removed = Vec::new();
    for id in list_dir(dir)? {
        if id >= keep_from_id {
            break;
        }
        let path = dir.join(file_name(id));
        match fs::remove_file(&path) {
            Ok(()) => removed.push(id),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err(&path)(e)),
        }
    }
    if !removed.is_empty() {
        fsync_dir(dir)?;
    }
    Ok(removed)
}

impl Drop for SnapshotStore {
    fn drop(&mut self) {
        if self.owned {
            if let Err(e) = fs::remove_dir_all(&self.root) {
                tracing::warn!(dir = %self.root.display(), error = %e, "cannot remove the temporary checkpoint store");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, SnapshotStore) {
        let d = tempfile::tempdir().unwrap();
        let s = SnapshotStore::open(d.path().join("ck")).unwrap();
        (d, s)
    }

    #[test]
    fn checkpoint_store_round_trip() {
        let (_d, s) = store();
        let data: Vec<u8> = (0..100_000u32).map(|i| (i * 7) as u8).collect();
        let piece = s.put("app", "views@3fa1b2c4#0", 5, &data).unwrap();
        assert_eq!(piece.size, data.len() as u64);
        assert_eq!(piece.crc32c, crc32c::crc32c(&data));
        assert!(s.has("app", "views@3fa1b2c4#0", 5));
        assert!(!s.has("app", "views@3fa1b2c4#0", 6));
        assert_eq!(s.get("app", "views@3fa1b2c4#0", 5).unwrap(), data);
        let (shared, crc) = s.get_shared("app", "views@3fa1b2c4#0", 5).unwrap();
        assert_eq!((&shared[..], crc), (&data[..], piece.crc32c));
        assert!(matches!(
            s.get("app", "views@3fa1b2c4#0", 6),
            Err(StoreError::Missing)
        ));
        assert!(matches!(
            s.get_shared("app", "views@3fa1b2c4#0", 6),
            Err(StoreError::Missing)
        ));
        // Empty snapshots round trip too; a put replaces.
        s.put("app", "views@3fa1b2c4#0", 5, b"").unwrap();
        assert_eq!(s.get("app", "views@3fa1b2c4#0", 5).unwrap(), b"");
        assert_eq!(s.pes("app").unwrap(), vec!["views@3fa1b2c4#0".to_string()]);
    }

    #[test]
    fn rounds_are_kept_with_their_base_checkpoint_and_removed_with_it() {
        let (_d, s) = store();
        for id in [8, 9, 10] {
            s.put("a", "win@00000000#0", id, b"full").unwrap();
        }
        // Rounds 1..=3 against the full snapshot of checkpoint 9.
        let rounds = format!("win@00000000#0{ROUND_MARK}9");
        assert_eq!(series_base(&rounds), Some(9));
        assert_eq!(series_base("win@00000000#0"), None);
        for n in 1..=3 {
            s.put("a", &rounds, n, b"round").unwrap();
        }
        // Checkpoints before 9 go; the rounds, numbered 1..3, stay with their base.
        assert_eq!(s.gc_app("a", 9).unwrap(), 1);
        assert!((1..=3).all(|n| s.has("a", &rounds, n)));
        assert!(s.has("a", "win@00000000#0", 9));
        // Once the base is superseded, the whole series goes.
        assert_eq!(s.gc_app("a", 10).unwrap(), 4);
        assert!((1..=3).all(|n| !s.has("a", &rounds, n)));
        assert!(s.has("a", "win@00000000#0", 10));
    }

    #[test]
    fn checkpoint_store_detects_a_flipped_byte() {
        let (_d, s) = store();
        s.put("a", "p", 1, b"hello snapshot").unwrap();
        let path = s.path("a", "p", 1).unwrap();
        let mut f = fs::read(&path).unwrap();
        f[HEADER_LEN + 3] ^= 0x10;
        fs::write(&path, &f).unwrap();
        for err in [
            s.get("a", "p", 1).unwrap_err(),
            s.get_shared("a", "p", 1).unwrap_err(),
            s.get_paced("a", "p", 1, &super::super::pace::Pacer::new(1e12))
                .unwrap_err(),
        ] {
            assert!(
                matches!(&err, StoreError::Corrupt { why } if why.contains("crc mismatch")),
                "{err}"
            );
        }
        // A damaged header is caught too.
        f[HEADER_LEN + 3] ^= 0x10;
        f[0] = b'X';
        fs::write(&path, &f).unwrap();
        assert!(matches!(
            s.get("a", "p", 1),
            Err(StoreError::Corrupt { .. })
        ));
    }

    #[test]
    fn a_paced_read_gives_what_a_whole_read_does_a_slot_per_step() {
        use super::super::pace::Pacer;
        let (_d, s) = store();
        // Two whole steps and part of a third.
        let data: Vec<u8> = (0..2 * READ_STEP + 5).map(|i| (i % 251) as u8).collect();
        s.put("a", "p", 1, &data).unwrap();
        let whole = s.get_shared("a", "p", 1).unwrap();
        let fast = s.get_paced("a", "p", 1, &Pacer::new(1e12)).unwrap();
        assert_eq!((&fast.0[..], fast.1), (&whole.0[..], whole.1));
        assert_eq!(&fast.0[..], &data[..]);
        // At 10 steps a second, the second step's slot comes a tenth of a second after
        // the first's, and the third's (the rest) another tenth after: at least 0.2 s.
        let t0 = std::time::Instant::now();
        let slow = s
            .get_paced("a", "p", 1, &Pacer::new(10.0 * READ_STEP as f64))
            .unwrap();
        assert!(t0.elapsed() >= std::time::Duration::from_millis(200));
        assert_eq!(&slow.0[..], &data[..]);
        assert!(matches!(
            s.get_paced("a", "p", 2, &Pacer::new(1e12)),
            Err(StoreError::Missing)
        ));
    }

    #[test]
    fn checkpoint_store_detects_truncation() {
        let (_d, s) = store();
        s.put("a", "p", 1, &[9u8; 4096]).unwrap();
        let path = s.path("a", "p", 1).unwrap();
        let f = fs::read(&path).unwrap();
        fs::write(&path, &f[..f.len() - 1]).unwrap();
        let err = s.get("a", "p", 1).unwrap_err();
        assert!(
            matches!(&err, StoreError::Corrupt { why } if why.contains("length mismatch")),
            "{err}"
        );
        fs::write(&path, &f[..10]).unwrap();
        let err = s.get("a", "p", 1).unwrap_err();
        assert!(
            matches!(&err, StoreError::Corrupt { why } if why.contains("truncated")),
            "{err}"
        );
    }

    #[test]
    fn checkpoint_store_hostile_names_stay_inside() {
        let (d, s) = store();
        let hostile = [
            "..",
            ".",
            "../../etc",
            "/abs/path",
            "a/b",
            "a\\b",
            "nul\0byte",
            "%2E%2E",
            "ünï©ødé",
            "views@3fa1b2c4#0",
        ];
        for (i, name) in hostile.iter().enumerate() {
            s.put(name, name, i as u64 + 1, name.as_bytes()).unwrap();
            assert_eq!(s.get(name, name, i as u64 + 1).unwrap(), name.as_bytes());
            let p = s.path(name, name, i as u64 + 1).unwrap();
            assert!(p.starts_with(s.dir()), "{name:?} -> {}", p.display());
            assert_eq!(
                p.parent().unwrap().parent().unwrap().parent().unwrap(),
                s.dir()
            );
            assert_eq!(decode_name(&encode_name(name).unwrap()).unwrap(), *name);
        }
        // Nothing was written outside the root.
        let outside: Vec<_> = fs::read_dir(d.path()).unwrap().collect();
        assert_eq!(outside.len(), 1);
        // Distinct names stay distinct ("%2E%2E" is not "..").
        assert_eq!(s.get("..", "..", 1).unwrap(), b"..");
        assert_eq!(s.get("%2E%2E", "%2E%2E", 8).unwrap(), b"%2E%2E");
        assert!(matches!(
            s.put("", "p", 1, b"x"),
            Err(StoreError::InvalidName(_))
        ));
        assert!(matches!(
            s.put(&"x".repeat(300), "p", 1, b"x"),
            Err(StoreError::InvalidName(_))
        ));
        assert!(!s.has("", "p", 1));
    }

    #[test]
    fn checkpoint_store_gc_list_and_remove() {
        let (_d, s) = store();
        for id in [3u64, 1, 10, 7] {
            s.put("a", "p", id, &id.to_le_bytes()).unwrap();
            s.put("a", "q", id, &id.to_le_bytes()).unwrap();
        }
        s.put("b", "p", 1, b"other app").unwrap();
        assert_eq!(s.list("a", "p").unwrap(), vec![1, 3, 7, 10]);
        assert_eq!(s.gc("a", "p", 7).unwrap(), vec![1, 3]);
        assert_eq!(s.list("a", "p").unwrap(), vec![7, 10]);
        assert_eq!(s.gc_app("a", 10).unwrap(), 1 + 3);
        assert_eq!(s.list("a", "q").unwrap(), vec![10]);
        assert_eq!(s.list("a", "nope").unwrap(), Vec::<u64>::new());
        s.remove_app("a").unwrap();
        s.remove_app("a").unwrap();
        assert!(s.list("a", "p").unwrap().is_empty());
        assert_eq!(s.get("b", "p", 1).unwrap(), b"other app");
    }

    #[test]
    fn checkpoint_store_replica_checked_and_leftovers_removed() {
        let (_d, s) = store();
        let err = s.put_replica("a", "p", 1, b"data", 1234).unwrap_err();
        assert!(matches!(err, StoreError::Corrupt { .. }));
        assert!(!s.has("a", "p", 1));
        s.put_replica("a", "p", 1, b"data", crc32c::crc32c(b"data"))
            .unwrap();
        let tmp = s
            .path("a", "p", 2)
            .unwrap()
            .with_file_name("00000000000000000002.snap.tmp.1.1");
        fs::write(&tmp, b"partial").unwrap();
        assert_eq!(s.list("a", "p").unwrap(), vec![1]);
        let reopened = SnapshotStore::open(s.dir()).unwrap();
        assert!(!tmp.exists());
        assert_eq!(reopened.get("a", "p", 1).unwrap(), b"data");
    }

    #[test]
    fn a_snapshot_written_in_parts_is_the_one_written_whole_and_nothing_else_is_left() {
        let (_d, s) = store();
        let data: Vec<u8> = (0..3 * WRITE_STEP as u32 / 2).map(|i| i as u8).collect();
        let whole = s.put("a", "whole", 1, &data).unwrap();
        // In uneven parts, one longer than a write step.
        let mut w = s.begin("a", "parts", 1, true, None).unwrap();
        for part in [
            &data[..10],
            &data[10..WRITE_STEP + 11],
            &data[WRITE_STEP + 11..],
        ] {
            w.append(part).unwrap();
        }
        assert_eq!(w.len(), data.len() as u64);
        assert_eq!(s.commit(w, Some(crc32c::crc32c(&data))).unwrap(), whole);
        assert_eq!(s.get("a", "parts", 1).unwrap(), data);
        assert_eq!(
            fs::read(s.path("a", "parts", 1).unwrap()).unwrap(),
            fs::read(s.path("a", "whole", 1).unwrap()).unwrap()
        );
        // Paced: the same bytes.
        static PACER: super::super::pace::Pacer = super::super::pace::Pacer::new(1e12);
        assert_eq!(s.put_paced("a", "paced", 1, &data, &PACER).unwrap(), whole);
        assert_eq!(s.get("a", "paced", 1).unwrap(), data);
        // Refused at the commit, or dropped before it: nothing stored, nothing left.
        let mut w = s.begin("a", "parts", 2, true, None).unwrap();
        w.append(b"data").unwrap();
        let err = s.commit(w, Some(1234)).unwrap_err();
        assert!(matches!(err, StoreError::Corrupt { .. }), "{err}");
        let mut w = s.begin("a", "parts", 3, false, None).unwrap();
        w.append(b"data").unwrap();
        drop(w);
        let left: Vec<_> = fs::read_dir(s.path("a", "parts", 1).unwrap().parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(left.len(), 1, "{left:?}");
        assert_eq!(s.list("a", "parts").unwrap(), vec![1]);
    }

    #[test]
    fn checkpoint_store_temporary_removed_on_drop() {
        let s = SnapshotStore::temporary().unwrap();
        s.put("a", "p", 1, b"x").unwrap();
        let dir = s.dir().to_path_buf();
        assert!(dir.is_dir());
        drop(s);
        assert!(!dir.exists());
    }
}
