//! `sink.file`: records as JSON lines in a file, made visible exactly once by a
//! two-phase commit tied to checkpoints.
//!
//! # Files
//!
//! Next to the output file `<dir>/<name>` (the *visible* file: the only one readers
//! should look at) the sink keeps a staging directory `<dir>/.<name>.weir/`. Each PE of
//! a sink writes its own file ([`indexed_path`]), so each has its own staging directory
//! and their names never collide. Inside it:
//!
//! - `<token>.staging`: the lines written since the last barrier (the current epoch),
//!   flushed after every batch, not fsynced;
//! - `<token>.<id>.seg`: a *sealed segment*, the epoch that barrier `id` closed:
//!   fsynced and renamed at [`FileSink::snapshot`], not visible yet.
//!
//! `<token>` is unique to each sink instance (process id, clock, counter), so a restarted
//! instance never mistakes the files of another life (or of a not quite dead old
//! instance) for its own, even if checkpoint ids were reused.
//!
//! # Protocol
//!
//! - **Pre-commit** ([`FileSink::snapshot`]`(id)`, when barrier `id` arrives): the epoch
//!   is sealed as segment `id`; the snapshot bytes record the visible length at this
//!   moment and the sealed, not yet committed segments `(id, length)` in order.
//! - **Commit** ([`FileSink::commit`]`(upto)`, once checkpoint `upto` is complete): every
//!   sealed segment with id `<= upto` is appended, in order, to the visible file, which is
//!   fsynced, and only then the segment is deleted. A commit can come late (after later
//!   barriers), more than once, or never (abandoned checkpoint: its segment is committed
//!   with the next completed one, in order).
//! - **Restore** ([`FileSink::restore`], from the last *complete* checkpoint): every
//!   segment the snapshot lists must end up visible exactly once. Starting from the
//!   snapshot's visible length, a listed segment whose file is gone was committed whole
//!   (it is deleted only after an fsynced append), so the committed length just grows by
//!   it; a listed segment still present may have been appended partly or wholly by a
//!   commit that crashed, so the visible file is cut back to the committed length and the
//!   segment appended again (then deleted). Finally the visible file is cut to that length
//!   and every other staging file or segment is deleted: they hold epochs after the
//!   checkpoint, which the sources replay. Everything is checked before anything
//!   changes, so bad snapshot bytes, or files that do not match them, give an error and
//!   touch nothing. Restore is idempotent, so a failure during or after it is handled by
//!   restoring the same bytes again.
//!
//! Why this is exactly-once: the visible file is always a prefix of the committed epochs
//! in order followed, at worst, by part of a segment whose commit crashed; the snapshot
//! of a complete checkpoint pins the length of its committed prefix plus the segments
//! still to add, and restore rebuilds exactly that prefix and drops the rest, which is the
//! output of records after the checkpoint. Cutting back also makes restoring from an
//! older complete checkpoint correct (what later commits added is dropped and replayed),
//! although readers then see the file shrink for a while, so the runtime should restore
//! from the latest complete checkpoint.
//!
//! # Assumptions
//!
//! - The output and staging directories are on a filesystem that every worker which may
//!   run this sink's PE can reach: the same machine, or a shared volume with the usual
//!   POSIX guarantees (rename and fsync are durable; a file seen as deleted stays so).
//!   A restored PE on a worker that cannot see the old files fails its restore with an
//!   error (the visible file is shorter than the checkpoint committed), never duplicates.
//! - Only one instance of a PE writes at a time: the runtime stops (or fences) the old
//!   instance before restoring a new one, since a late commit by a zombie would append
//!   to the visible file.
//! - A snapshot restores into the same PE (same file): rescaling a file sink is not
//!   supported; a snapshot of another file is refused.
//! - With checkpoints off nothing becomes visible until [`FileSink::finish`]; the runtime
//!   may call it whenever output should be published (it keeps working afterwards).
//!   After a failure such a sink starts fresh (empty file), which is exactly-once when
//!   the sources then replay from the beginning.
//!
//! # Call sequence (the runtime)
//!
//! ```text
//! let mut sink = FileSink::open(path, index, parallelism)?;   // touches no output
//! match snapshot_of_last_complete_checkpoint {
//!     Some(bytes) => sink.restore(&bytes)?,                     // before any write
//!     None => sink.start_fresh()?,                              // empties the file
//! }
//! loop {
//!     data batch         => sink.write(&batch)?,
//!     barrier id         => store(id, sink.snapshot(id)?),     // ids increasing
//!     checkpoint id done => sink.commit(id)?,                   // late, repeated: fine
//!     end of stream      => { sink.finish()?; break }
//! }
//! ```
//!
//! If neither `restore` nor `start_fresh` is called, the first other call starts fresh.
//! After an error from any call the sink's files may be half updated: the runtime fails
//! the PE and recovers it like after a crash (a new instance, `restore` or `start_fresh`),
//! rather than calling on.
//! All calls do blocking file I/O: the runtime makes them off the async threads (see
//! `runtime::file_sink`).

use super::codec::{Dec, Enc};
use super::StateError;
use std::ffi::OsString;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};
use weir_common::record::{Batch, RecordRef};

/// The record's fields as one JSON object, in field order, without a newline. The key,
/// event time and origin are not included: a sink writes the fields.
pub fn json_line(r: &RecordRef<'_>) -> String {
    // serde_json is built with `preserve_order`, so the object keeps the field order.
    let map: serde_json::Map<String, serde_json::Value> = r
        .fields()
        .map(|(n, v)| (n.to_string(), v.to_json()))
        .collect();
    serde_json::Value::Object(map).to_string()
}

/// The file PE `index` writes: with several PEs, `.{index}` goes before the extension
/// (`out.jsonl` -> `out.1.jsonl`, `out` -> `out.1`), so they never share a file.
pub fn indexed_path(path: &str, index: u32, parallelism: u32) -> PathBuf {
    let path = Path::new(path);
    if parallelism <= 1 {
        return path.to_path_buf();
    }
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let name = match path.extension() {
        Some(ext) => format!("{stem}.{index}.{}", ext.to_string_lossy()),
        None => format!("{stem}.{index}"),
    };
    path.with_file_name(name)
}

/// Kind byte of `sink.file` snapshots.
const KIND: u8 = b'F';
/// Longest instance token a snapshot may name.
const TOKEN_MAX: usize = 64;
/// The segment id [`FileSink::finish`] seals under: after every checkpoint's.
const FINAL_SEGMENT: u64 = u64::MAX;

/// Why a [`FileSink::restore`] failed. Restore checks everything before it changes
/// anything, so after a `State` or `Inconsistent` error the files are as they were.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// A file operation failed.
    #[error(transparent)]
    Io(#[from] io::Error),
    /// The snapshot bytes are malformed or belong to another sink.
    #[error(transparent)]
    State(#[from] StateError),
    /// The files do not match the snapshot (e.g. lost or shortened), or the call came
    /// at the wrong time: restoring would not give exactly-once output.
    #[error("sink.file {}: {what}", path.display())]
    Inconsistent {
        /// The visible file.
        path: PathBuf,
        /// What does not match.
        what: String,
    },
}

/// A sealed, not yet committed epoch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Segment {
    /// The checkpoint whose barrier sealed it.
    id: u64,
    /// Bytes.
    len: u64,
}

/// A snapshot read back and checked in itself (not yet against the files).
#[derive(Debug)]
struct Snapshot {
    token: String,
    visible_len: u64,
    segments: Vec<Segment>,
}

/// An open `sink.file` output: see the module doc for the protocol and call sequence.
#[derive(Debug)]
pub struct FileSink {
    /// The visible file.
    path: PathBuf,
    /// `<dir>/.<name>.weir`.
    staging_dir: PathBuf,
    /// This instance's part of staging and segment names.
    token: String,
    /// Whether `start_fresh` or `restore` ran (no restore is accepted afterwards).
    started: bool,
    /// The current epoch's file, created by the first line written in the epoch.
    staging: Option<BufWriter<File>>,
    /// Bytes written to `staging`.
    staged: u64,
    /// Sealed segments not committed yet, ids increasing.
    pending: Vec<Segment>,
    /// Bytes of the visible file that commits produced.
    visible_len: u64,
}

impl FileSink {
    /// Prepares the file of PE `index` of `parallelism`: creates its directory and
    /// staging directory. The visible file is neither read nor changed here: the next call
    /// is [`FileSink::restore`] when the PE resumes from a checkpoint, or
    /// [`FileSink::start_fresh`] (also implied by any other call) when it starts empty.
    pub fn open(path: &str, index: u32, parallelism: u32) -> io::Result<Self> {
        let path = indexed_path(path, index, parallelism);
        let name = path.file_name().ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{} does not name a file", path.display()),
            )
        })?;
        let mut dir_name = OsString::from(".");
        dir_name.push(name);
        dir_name.push(".weir");
        let staging_dir = path.with_file_name(dir_name);
        fs::create_dir_all(&staging_dir)?;
        Ok(Self {
            path,
            staging_dir,
            token: instance_token(),
            started: false,
            staging: None,
            staged: 0,
            pending: Vec::new(),
            visible_len: 0,
        })
    }

    /// The visible file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Starts with an empty visible file, for a PE with no complete checkpoint to resume
    /// from: nothing it wrote before was committed, so nothing of it may stay visible.
    /// Leftover staging files and segments are deleted. Only before anything else.
    pub fn start_fresh(&mut self) -> io::Result<()> {
        if self.started {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "sink.file already started",
            ));
        }
        let f = OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(true)
            .open(&self.path)?;
        f.sync_all()?;
        sync_dir(self.output_dir())?;
        self.remove_leftovers()?;
        self.visible_len = 0;
        self.started = true;
        Ok(())
    }

    /// Resumes from the snapshot of the last complete checkpoint, before any other call:
    /// the segments it lists become visible exactly once and whatever was written after
    /// it is dropped (the sources replay it). See the module doc for the algorithm.
    /// Idempotent. On a malformed snapshot, one of another file, or files that do not
    /// match it, returns an error and changes nothing.
    pub fn restore(&mut self, bytes: &[u8]) -> Result<(), SinkError> {
        if self.started {
            return Err(self.inconsistent("restore after the sink started writing".into()));
        }
        let snap = decode(bytes, &self.file_name())?;
        // Plan, reading only: the committed prefix (segments gone), then those to append.
        let have = match fs::metadata(&self.path) {
            Ok(m) => m.len(),
            Err(e) if e.kind() == io::ErrorKind::NotFound => 0,
            Err(e) => return Err(e.into()),
        };
        let mut committed = snap.visible_len;
        let mut first_present = None;
        for (i, s) in snap.segments.iter().enumerate() {
            match fs::metadata(self.segment_path(&snap.token, s.id)) {
                Ok(m) if m.len() != s.len => {
                    return Err(self.inconsistent(format!(
                        "segment {} has {} bytes, the checkpoint sealed {}",
                        s.id,
                        m.len(),
                        s.len
                    )))
                }
                Ok(_) => {
                    first_present.get_or_insert(i);
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    if first_present.is_some() {
                        return Err(self.inconsistent(format!(
                            "segment {} is gone but an earlier one is not",
                            s.id
                        )));
                    }
                    // The decoder checked that the lengths add up without overflow.
                    committed += s.len;
                }
                Err(e) => return Err(e.into()),
            }
        }
        if have < committed {
            return Err(self.inconsistent(format!(
                "the file has {have} bytes, the checkpoint committed {committed}"
            )));
        }
        // Apply.
        let mut visible = OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(false)
            .open(&self.path)?;
        let mut cur = committed;
        for s in &snap.segments[first_present.unwrap_or(snap.segments.len())..] {
            let seg = self.segment_path(&snap.token, s.id);
            append_segment(&mut visible, cur, &seg, s.len)?;
            fs::remove_file(&seg)?;
            cur += s.len;
        }
        visible.set_len(cur)?;
        visible.sync_all()?;
        sync_dir(self.output_dir())?;
        self.remove_leftovers()?;
        self.visible_len = cur;
        self.started = true;
        Ok(())
    }

    /// Appends one line per record to the current epoch's staging file and flushes it
    /// (to the OS; durability comes at the snapshot); returns the lines written. Nothing
    /// becomes visible before the epoch's checkpoint commits.
    pub fn write(&mut self, batch: &Batch) -> io::Result<u64> {
        self.ensure_started()?;
        if batch.is_empty() {
            return Ok(0);
        }
        let out = match &mut self.staging {
            Some(out) => out,
            None => {
                let f = OpenOptions::new()
                    .create(true)
                    .write(true)
                    .truncate(true)
                    .open(self.staging_path())?;
                self.staged = 0;
                self.staging.insert(BufWriter::new(f))
            }
        };
        let mut lines = 0;
        for r in batch.iter() {
            let line = json_line(&r);
            out.write_all(line.as_bytes())?;
            out.write_all(b"\n")?;
            self.staged += line.len() as u64 + 1;
            lines += 1;
        }
        out.flush()?;
        Ok(lines)
    }

    /// Barrier `id` arrived: seals the epoch as segment `id` (fsynced, not visible) and
    /// returns the state to store with checkpoint `id`. Ids must increase, since segments
    /// are committed in id order.
    pub fn snapshot(&mut self, id: u64) -> io::Result<Vec<u8>> {
        self.ensure_started()?;
        if let Some(last) = self.pending.last().filter(|s| s.id >= id) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("checkpoint {id} after checkpoint {}", last.id),
            ));
        }
        self.seal(id)?;
        Ok(self.encode())
    }

    /// Checkpoint `upto` is complete: publishes every sealed segment with id `<= upto`,
    /// in order (those of abandoned checkpoints included). Idempotent; ids already
    /// committed are a no-op.
    pub fn commit(&mut self, upto: u64) -> io::Result<()> {
        self.ensure_started()?;
        if self.pending.first().is_none_or(|s| s.id > upto) {
            return Ok(());
        }
        let mut visible = OpenOptions::new().write(true).open(&self.path)?;
        while let Some(s) = self.pending.first().copied().filter(|s| s.id <= upto) {
            let seg = self.segment_path(&self.token, s.id);
            append_segment(&mut visible, self.visible_len, &seg, s.len)?;
            // Deleted only once the append is durable: restore relies on it.
            fs::remove_file(&seg)?;
            self.visible_len += s.len;
            self.pending.remove(0);
        }
        Ok(())
    }

    /// Publishes everything written so far, checkpointed or not: at the end of the
    /// stream, and whenever output should appear with checkpoints off. Writing may go on
    /// afterwards.
    pub fn finish(&mut self) -> io::Result<()> {
        self.ensure_started()?;
        self.seal(FINAL_SEGMENT)?;
        self.commit(FINAL_SEGMENT)
    }

    fn ensure_started(&mut self) -> io::Result<()> {
        if self.started {
            return Ok(());
        }
        self.start_fresh()
    }

    /// Seals the current epoch, if it has lines, as segment `id`. The state changes only
    /// once the rename is done, so a failed seal leaves the epoch open, not lost.
    fn seal(&mut self, id: u64) -> io::Result<()> {
        let Some(out) = &mut self.staging else {
            return Ok(());
        };
        out.flush()?;
        out.get_ref().sync_data()?;
        fs::rename(self.staging_path(), self.segment_path(&self.token, id))?;
        self.staging = None;
        self.pending.push(Segment {
            id,
            len: self.staged,
        });
        self.staged = 0;
        sync_dir(&self.staging_dir)
    }

    /// Layout after the version byte and kind byte `F`: the file name and the instance
    /// token (length-prefixed), `u64` visible length, `u64` count, per segment `u64 id |
    /// u64 length` (little endian).
    fn encode(&self) -> Vec<u8> {
        let mut e = Enc::new(KIND);
        e.bytes(self.file_name().as_bytes());
        e.bytes(self.token.as_bytes());
        e.u64(self.visible_len);
        e.u64(self.pending.len() as u64);
        for s in &self.pending {
            e.u64(s.id);
            e.u64(s.len);
        }
        e.0
    }

    /// Deletes every staging file and segment in the staging directory (of any instance).
    fn remove_leftovers(&self) -> io::Result<()> {
        for entry in fs::read_dir(&self.staging_dir)? {
            let p = entry?.path();
            let ours = p.extension().is_some_and(|e| e == "seg" || e == "staging");
            if ours && p.is_file() {
                match fs::remove_file(&p) {
                    Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                    _ => {}
                }
            }
        }
        Ok(())
    }

    fn file_name(&self) -> String {
        self.path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    }

    fn output_dir(&self) -> &Path {
        self.path
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."))
    }

    fn staging_path(&self) -> PathBuf {
        self.staging_dir.join(format!("{}.staging", self.token))
    }

    fn segment_path(&self, token: &str, id: u64) -> PathBuf {
        self.staging_dir.join(format!("{token}.{id:020}.seg"))
    }

    fn inconsistent(&self, what: String) -> SinkError {
        SinkError::Inconsistent {
            path: self.path.clone(),
            what,
        }
    }
}

/// Reads and checks a snapshot taken by the sink of file `name`. The token is checked to
/// be one [`instance_token`] makes, so bad bytes cannot name a path outside the staging
/// directory.
fn decode(bytes: &[u8], name: &str) -> Result<Snapshot, StateError> {
    let mut d = Dec::new(bytes, KIND, "a file sink")?;
    let theirs = d.bytes()?;
    if theirs != name.as_bytes() {
        return Err(StateError::Mismatch(format!(
            "snapshot of file {:?}, this sink writes {name:?}",
            String::from_utf8_lossy(theirs)
        )));
    }
    let at = d.at();
    let token = d.bytes()?;
    let token_ok = !token.is_empty()
        && token.len() <= TOKEN_MAX
        && token
            .iter()
            .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(c) || *c == b'-');
    if !token_ok {
        return Err(StateError::Invalid {
            what: "instance token not 1 to 64 of [0-9a-f-]",
            at,
        });
    }
    let token = String::from_utf8_lossy(token).into_owned();
    let visible_len = d.u64()?;
    let n = d.count(16)?;
    let mut segments: Vec<Segment> = Vec::with_capacity(n);
    let mut total = visible_len;
    for _ in 0..n {
        let at = d.at();
        let s = Segment {
            id: d.u64()?,
            len: d.u64()?,
        };
        if segments.last().is_some_and(|l| l.id >= s.id) {
            return Err(StateError::Invalid {
                what: "segment ids not increasing",
                at,
            });
        }
        total = total.checked_add(s.len).ok_or(StateError::Invalid {
            what: "lengths overflow",
            at,
        })?;
        segments.push(s);
    }
    d.finish()?;
    Ok(Snapshot {
        token,
        visible_len,
        segments,
    })
}

/// Makes `visible` hold its first `at` bytes followed by the segment file `seg` (`len`
/// bytes), durably. Cutting back first makes a repeated append (after a crashed or
/// failed one) leave no partial copy behind.
fn append_segment(visible: &mut File, at: u64, seg: &Path, len: u64) -> io::Result<()> {
    let have = visible.metadata()?.len();
    if have < at {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("the file has {have} bytes, {at} were committed: shortened from outside"),
        ));
    }
    if have > at {
        visible.set_len(at)?;
    }
    visible.seek(SeekFrom::Start(at))?;
    let copied = io::copy(&mut File::open(seg)?, visible)?;
    if copied != len {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "segment {} has {copied} bytes, {len} were sealed",
                seg.display()
            ),
        ));
    }
    visible.sync_data()
}

/// Makes renames and creations in `dir` durable (a no-op where directories cannot be
/// synced).
fn sync_dir(dir: &Path) -> io::Result<()> {
    #[cfg(unix)]
    File::open(dir)?.sync_all()?;
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

/// A name part no other sink instance uses: process id, clock and a process-wide
/// counter, in hex.
fn instance_token() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    format!(
        "{:x}-{nanos:x}-{:x}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::io::Write;
    use weir_common::record::{BatchBuilder, Value};

    fn batch() -> Batch {
        let mut b = BatchBuilder::default();
        let fields = [
            ("z", Value::I64(-3)),
            ("a", Value::Str("x\"y\n".into())),
            ("m", Value::F64(1.5)),
            ("n", Value::Null),
            ("b", Value::Bool(true)),
            ("p", Value::Bytes(b"raw".to_vec())),
            ("nan", Value::F64(f64::NAN)),
        ];
        b.push(1, 2, 3, b"key", fields.iter().map(|(n, v)| (*n, v)))
            .unwrap();
        b.push(1, 3, 4, b"key", [("only", &Value::I64(7))]).unwrap();
        b.push(1, 4, 5, b"", []).unwrap();
        b.finish()
    }

    const LINES: [&str; 3] = [
        r#"{"z":-3,"a":"x\"y\n","m":1.5,"n":null,"b":true,"p":"raw","nan":null}"#,
        r#"{"only":7}"#,
        "{}",
    ];

    /// Records per numbered batch.
    const PER: i64 = 3;

    /// Batch `b`: records `{"n":i}` for `i` in `PER * b .. PER * (b + 1)`.
    fn numbered(b: usize) -> Batch {
        let mut out = BatchBuilder::default();
        let first = PER * b as i64;
        for i in first..first + PER {
            out.push(0, i as u64, 0, b"", [("n", &Value::I64(i))])
                .unwrap();
        }
        out.finish()
    }

    /// The lines of batches `range`.
    fn lines_of(range: std::ops::Range<usize>) -> Vec<String> {
        let (a, b) = (PER * range.start as i64, PER * range.end as i64);
        (a..b).map(|i| format!(r#"{{"n":{i}}}"#)).collect()
    }

    fn visible(s: &FileSink) -> Vec<String> {
        read_lines(s.path())
    }

    fn read_lines(p: &Path) -> Vec<String> {
        fs::read_to_string(p)
            .unwrap()
            .lines()
            .map(str::to_string)
            .collect()
    }

    /// Names in the staging directory, sorted.
    fn staged_files(s: &FileSink) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(&s.staging_dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    fn open(dir: &Path) -> FileSink {
        FileSink::open(dir.join("out.jsonl").to_str().unwrap(), 0, 1).unwrap()
    }

    #[test]
    fn json_lines_keep_field_order_and_escape() {
        let lines: Vec<_> = batch().iter().map(|r| json_line(&r)).collect();
        assert_eq!(lines, LINES);
    }

    #[test]
    fn indexed_paths() {
        assert_eq!(
            indexed_path("/tmp/out.jsonl", 1, 2),
            Path::new("/tmp/out.1.jsonl")
        );
        assert_eq!(
            indexed_path("/tmp/out.jsonl", 0, 1),
            Path::new("/tmp/out.jsonl")
        );
        assert_eq!(indexed_path("/tmp/out", 3, 4), Path::new("/tmp/out.3"));
        assert_eq!(
            indexed_path("a.b/out.tar.gz", 0, 2),
            Path::new("a.b/out.tar.0.gz")
        );
        assert_eq!(indexed_path("out.jsonl", 0, 2), Path::new("out.0.jsonl"));
    }

    #[test]
    fn lines_become_visible_only_when_their_checkpoint_commits() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("deep/er/out.jsonl");
        let mut s = FileSink::open(path.to_str().unwrap(), 1, 2).unwrap();
        assert_eq!(s.path(), dir.path().join("deep/er/out.1.jsonl"));
        assert_eq!(s.staging_dir, dir.path().join("deep/er/.out.1.jsonl.weir"));
        assert!(!s.path().exists(), "open touches no output");
        assert_eq!(s.write(&batch()).unwrap(), 3);
        assert_eq!(s.write(&BatchBuilder::default().finish()).unwrap(), 0);
        assert_eq!(fs::read_to_string(s.path()).unwrap(), "", "staged only");
        s.snapshot(1).unwrap();
        s.write(&numbered(0)).unwrap();
        assert_eq!(
            fs::read_to_string(s.path()).unwrap(),
            "",
            "sealed, not committed"
        );
        s.commit(1).unwrap();
        assert_eq!(visible(&s), LINES);
        s.commit(1).unwrap();
        s.commit(0).unwrap();
        assert_eq!(visible(&s), LINES, "commit is idempotent");
        s.snapshot(2).unwrap();
        s.commit(2).unwrap();
        let mut all: Vec<String> = LINES.iter().map(|l| l.to_string()).collect();
        all.extend(lines_of(0..1));
        assert_eq!(visible(&s), all);
        assert!(staged_files(&s).is_empty(), "{:?}", staged_files(&s));
        assert!(!path.exists());
    }

    #[test]
    fn a_late_commit_publishes_only_up_to_its_checkpoint() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = open(dir.path());
        s.write(&numbered(0)).unwrap();
        s.snapshot(1).unwrap();
        s.write(&numbered(1)).unwrap();
        s.snapshot(2).unwrap();
        s.write(&numbered(2)).unwrap();
        s.commit(1).unwrap();
        assert_eq!(visible(&s), lines_of(0..1));
        s.commit(2).unwrap();
        assert_eq!(visible(&s), lines_of(0..2));
        s.finish().unwrap();
        assert_eq!(visible(&s), lines_of(0..3));
    }

    #[test]
    fn an_abandoned_checkpoint_commits_with_the_next_complete_one_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = open(dir.path());
        s.write(&numbered(0)).unwrap();
        let two = s.snapshot(2).unwrap();
        s.write(&numbered(1)).unwrap();
        s.snapshot(3).unwrap();
        s.write(&numbered(2)).unwrap();
        s.commit(3).unwrap();
        assert_eq!(visible(&s), lines_of(0..2));
        // A snapshot taken later still restores: segment 2 is gone because committed.
        drop(s);
        let mut r = open(dir.path());
        r.restore(&two).unwrap();
        assert_eq!(visible(&r), lines_of(0..1), "cut back to checkpoint 2");
    }

    #[test]
    fn checkpoint_ids_must_increase() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = open(dir.path());
        s.write(&numbered(0)).unwrap();
        s.snapshot(5).unwrap();
        s.write(&numbered(1)).unwrap();
        assert!(s.snapshot(5).is_err());
        assert!(s.snapshot(4).is_err());
        s.snapshot(6).unwrap();
        s.commit(6).unwrap();
        assert_eq!(visible(&s), lines_of(0..2));
        // Once committed, an id may come again (e.g. a restarted master): no clash.
        s.write(&numbered(2)).unwrap();
        s.snapshot(6).unwrap();
        s.commit(6).unwrap();
        assert_eq!(visible(&s), lines_of(0..3));
    }

    #[test]
    fn a_fresh_start_empties_the_file_and_drops_leftovers() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.jsonl");
        let mut old = open(dir.path());
        old.write(&numbered(0)).unwrap();
        old.snapshot(1).unwrap();
        old.write(&numbered(1)).unwrap();
        drop(old);
        fs::write(&path, "never committed\n").unwrap();
        let mut s = open(dir.path());
        assert_eq!(fs::read_to_string(&path).unwrap(), "never committed\n");
        assert_eq!(staged_files(&s).len(), 2, "a segment and a staging file");
        s.start_fresh().unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), "");
        assert!(staged_files(&s).is_empty());
        assert!(s.start_fresh().is_err(), "only once");
        assert!(s.restore(&[]).is_err(), "not after starting");
        // Without start_fresh, the first call starts fresh.
        fs::write(&path, "stale\n").unwrap();
        let mut implied = open(dir.path());
        implied.write(&numbered(3)).unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), "");
        implied.finish().unwrap();
        assert_eq!(read_lines(&path), lines_of(3..4));
    }

    #[test]
    fn finish_publishes_without_checkpoints_and_writing_goes_on() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = open(dir.path());
        s.write(&numbered(0)).unwrap();
        s.finish().unwrap();
        assert_eq!(visible(&s), lines_of(0..1));
        s.finish().unwrap();
        s.write(&numbered(1)).unwrap();
        s.snapshot(1).unwrap();
        s.write(&numbered(2)).unwrap();
        s.finish().unwrap();
        assert_eq!(visible(&s), lines_of(0..3));
        assert!(staged_files(&s).is_empty());
    }

    #[test]
    fn the_pes_of_one_sink_use_separate_files_and_staging() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("out.jsonl");
        let mut a = FileSink::open(p.to_str().unwrap(), 0, 2).unwrap();
        let mut b = FileSink::open(p.to_str().unwrap(), 1, 2).unwrap();
        a.write(&numbered(0)).unwrap();
        b.write(&numbered(1)).unwrap();
        let snap_a = a.snapshot(1).unwrap();
        b.snapshot(1).unwrap();
        a.commit(1).unwrap();
        b.commit(1).unwrap();
        assert_eq!(visible(&a), lines_of(0..1));
        assert_eq!(visible(&b), lines_of(1..2));
        assert_ne!(a.staging_dir, b.staging_dir);
        drop(b);
        let mut b = FileSink::open(p.to_str().unwrap(), 1, 2).unwrap();
        assert!(matches!(
            b.restore(&snap_a),
            Err(SinkError::State(StateError::Mismatch(_)))
        ));
        assert_eq!(read_lines(b.path()), lines_of(1..2), "unchanged");
    }

    #[test]
    fn open_fails_cleanly_where_a_file_blocks_the_directory() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("f"), "").unwrap();
        assert!(FileSink::open(dir.path().join("f/out.jsonl").to_str().unwrap(), 0, 1).is_err());
    }

    /// What happens to the sink in the crash simulation.
    #[derive(Clone, Copy, Debug)]
    enum Op {
        Write(usize),
        /// Barrier: snapshot.
        Snap(u64),
        /// The master completes the checkpoint (the runtime may not have called
        /// commit yet).
        Complete(u64),
        Commit(u64),
        Finish,
    }

    use Op::*;

    /// Checkpoint 2 is abandoned, commit 3 comes late (after more data), commit 4 never.
    const SCRIPT: [Op; 20] = [
        Write(0),
        Write(1),
        Snap(1),
        Write(2),
        Complete(1),
        Write(3),
        Commit(1),
        Write(4),
        Snap(2),
        Write(5),
        Snap(3),
        Write(6),
        Complete(3),
        Write(7),
        Commit(3),
        Snap(4),
        Write(8),
        Complete(4),
        Write(9),
        Finish,
    ];
    const BATCHES: usize = 10;

    /// How the first life ends.
    #[derive(Clone, Copy, Debug, PartialEq)]
    enum Crash {
        /// Just stops.
        Plain,
        /// In the middle of committing the first pending segment (part of it appended).
        HalfAppended,
        /// After appending the first pending segment, before deleting it.
        WhollyAppended,
        /// Then the restored instance fails too, after replaying some and sealing an
        /// epoch that never completes; restored again from the same checkpoint.
        Twice,
    }

    /// Runs `SCRIPT[..ops]`, crashes, restores from the last complete checkpoint (or
    /// starts fresh) and replays the batches after it; the file must hold every record
    /// once, in order.
    fn crash_and_recover(ops: usize, crash: Crash) {
        let why = format!("crash after {ops} ops ({:?}), {crash:?}", SCRIPT.get(ops));
        let dir = tempfile::tempdir().unwrap();
        let mut s = open(dir.path());
        s.start_fresh().unwrap();
        let mut snaps: HashMap<u64, (Vec<u8>, usize)> = HashMap::new();
        let mut complete = None;
        let mut written = 0;
        for op in &SCRIPT[..ops] {
            match *op {
                Write(b) => {
                    s.write(&numbered(b)).unwrap();
                    written = b + 1;
                }
                Snap(id) => {
                    snaps.insert(id, (s.snapshot(id).unwrap(), written));
                }
                Complete(id) => complete = Some(id),
                Commit(id) => {
                    s.commit(id).unwrap();
                    assert_eq!(visible(&s), lines_of(0..snaps[&id].1), "{why}");
                }
                Finish => s.finish().unwrap(),
            }
        }
        if crash == Crash::HalfAppended || crash == Crash::WhollyAppended {
            if let Some(first) = s.pending.first() {
                let seg = fs::read(s.segment_path(&s.token, first.id)).unwrap();
                let part = if crash == Crash::HalfAppended {
                    &seg[..seg.len() / 2]
                } else {
                    &seg[..]
                };
                let mut f = OpenOptions::new().append(true).open(s.path()).unwrap();
                f.write_all(part).unwrap();
            }
        }
        drop(s);

        let last = complete.map(|id| snaps[&id].clone());
        let recover = || {
            let mut s = open(dir.path());
            match &last {
                Some((bytes, _)) => s.restore(bytes).unwrap(),
                None => s.start_fresh().unwrap(),
            }
            s
        };
        let from = last.as_ref().map_or(0, |(_, after)| *after);
        let mut s = recover();
        assert_eq!(visible(&s), lines_of(0..from), "{why}: right after restore");
        if crash == Crash::Twice {
            for b in from..(from + BATCHES) / 2 {
                s.write(&numbered(b)).unwrap();
            }
            s.snapshot(100).unwrap();
            s.write(&numbered(BATCHES - 1)).unwrap();
            drop(s);
            s = recover();
            assert_eq!(visible(&s), lines_of(0..from), "{why}: restored again");
        }
        for b in from..BATCHES {
            s.write(&numbered(b)).unwrap();
            if b == from {
                s.snapshot(200).unwrap();
                s.commit(200).unwrap();
            }
        }
        s.finish().unwrap();
        assert_eq!(visible(&s), lines_of(0..BATCHES), "{why}");
        assert!(staged_files(&s).is_empty(), "{why}: {:?}", staged_files(&s));
    }

    #[test]
    fn a_crash_anywhere_then_restore_and_replay_gives_every_record_once() {
        for crash in [
            Crash::Plain,
            Crash::HalfAppended,
            Crash::WhollyAppended,
            Crash::Twice,
        ] {
            for ops in 0..=SCRIPT.len() {
                crash_and_recover(ops, crash);
            }
        }
    }

    #[test]
    fn a_crash_between_two_segments_of_one_commit_is_recovered() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = open(dir.path());
        s.write(&numbered(0)).unwrap();
        s.snapshot(2).unwrap();
        s.write(&numbered(1)).unwrap();
        let three = s.snapshot(3).unwrap();
        s.write(&numbered(2)).unwrap();
        // Checkpoint 3 completes; the commit publishes segment 2, then dies in segment 3.
        s.commit(2).unwrap();
        let seg = fs::read(s.segment_path(&s.token, 3)).unwrap();
        let mut f = OpenOptions::new().append(true).open(s.path()).unwrap();
        f.write_all(&seg[..5]).unwrap();
        drop(s);
        let mut r = open(dir.path());
        r.restore(&three).unwrap();
        assert_eq!(visible(&r), lines_of(0..2));
        // Restore is idempotent.
        drop(r);
        let mut r = open(dir.path());
        r.restore(&three).unwrap();
        r.write(&numbered(2)).unwrap();
        r.finish().unwrap();
        assert_eq!(visible(&r), lines_of(0..3));
    }

    #[test]
    fn bad_snapshots_or_missing_files_are_errors_and_change_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = open(dir.path());
        s.write(&numbered(0)).unwrap();
        s.snapshot(1).unwrap();
        s.commit(1).unwrap();
        s.write(&numbered(1)).unwrap();
        let snap = s.snapshot(2).unwrap();
        s.write(&numbered(2)).unwrap();
        let (token, path) = (s.token.clone(), s.path().to_path_buf());
        let seg2 = s.segment_path(&token, 2);
        drop(s);
        let before = (fs::read(&path).unwrap(), fs::read(&seg2).unwrap());
        let unchanged = |r: &FileSink, what: &str| {
            assert_eq!(fs::read(&path).unwrap(), before.0, "{what}");
            assert_eq!(fs::read(&seg2).unwrap(), before.1, "{what}");
            assert_eq!(staged_files(r).len(), 2, "{what}");
        };

        // Hand-made snapshots: header, name, token, visible length, segments.
        let make = |name: &[u8], token: &[u8], visible: u64, segs: &[(u64, u64)]| {
            let mut e = Enc::new(KIND);
            e.bytes(name);
            e.bytes(token);
            e.u64(visible);
            e.u64(segs.len() as u64);
            for (id, len) in segs {
                e.u64(*id);
                e.u64(*len);
            }
            e.0
        };
        let len1 = lines_of(0..1).concat().len() as u64 + 3;
        let len2 = before.1.len() as u64;
        let tok = token.as_bytes();
        assert_eq!(make(b"out.jsonl", tok, len1, &[(2, len2)]), snap);
        let mut long = snap.clone();
        long.push(0);
        let mut bads: Vec<(String, Vec<u8>)> = vec![
            ("empty".into(), vec![]),
            ("trailing".into(), long),
            ("version".into(), [&[9u8][..], &snap[1..]].concat()),
            ("kind".into(), [&[snap[0], b'V'][..], &snap[2..]].concat()),
            (
                "other file".into(),
                make(b"in.jsonl", tok, len1, &[(2, len2)]),
            ),
            (
                "path token".into(),
                make(b"out.jsonl", b"../../x", len1, &[]),
            ),
            ("empty token".into(), make(b"out.jsonl", b"", len1, &[])),
            ("ids".into(), make(b"out.jsonl", tok, 0, &[(2, 1), (2, 1)])),
            (
                "overflow".into(),
                make(b"out.jsonl", tok, u64::MAX, &[(2, len2)]),
            ),
            ("huge count".into(), {
                let mut b = make(b"out.jsonl", tok, 0, &[]);
                let at = b.len() - 8;
                b[at..].copy_from_slice(&u64::MAX.to_le_bytes());
                b
            }),
            // Well formed, but the files disagree.
            (
                "segment length".into(),
                make(b"out.jsonl", tok, len1, &[(2, len2 + 1)]),
            ),
            (
                "file too short".into(),
                make(b"out.jsonl", tok, len1 + 1, &[]),
            ),
            (
                "lost segment".into(),
                make(b"out.jsonl", tok, len1, &[(1, 9)]),
            ),
            (
                "gone after present".into(),
                make(b"out.jsonl", tok, 0, &[(2, len2), (3, 1)]),
            ),
        ];
        bads.extend((0..snap.len()).map(|cut| (format!("cut at {cut}"), snap[..cut].to_vec())));
        for (what, bytes) in &bads {
            let mut r = open(dir.path());
            let err = r.restore(bytes);
            assert!(err.is_err(), "{what}");
            assert!(!matches!(err, Err(SinkError::Io(_))), "{what}: {err:?}");
            unchanged(&r, what);
        }
        let mut r = open(dir.path());
        r.restore(&snap).unwrap();
        assert_eq!(visible(&r), lines_of(0..2));
    }
}
