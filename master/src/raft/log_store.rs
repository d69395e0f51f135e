//! The Raft log, vote and commit index in redb: every log and vote write is a redb
//! transaction committed with `Durability::Immediate` (fsync) before openraft hears it
//! is done. The commit index is written without an fsync (see `save_committed`).

use super::*;
use openraft::storage::{LogFlushed, RaftLogStorage};
use openraft::{AnyError, OptionalSend, RaftLogReader};
use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition};
use std::collections::BTreeMap;
use std::fmt::Debug;
use std::ops::RangeBounds;
use std::path::Path;
use std::sync::{Arc, Mutex};

const LOGS: TableDefinition<u64, &[u8]> = TableDefinition::new("raft_logs");
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("raft_meta");
const K_VOTE: &str = "vote";
const K_COMMITTED: &str = "committed";
const K_PURGED: &str = "last_purged";

/// Recent entries kept in memory, so that replicating what was just appended does not
/// read it back from disk and decode it again.
const CACHE_ENTRIES: usize = 8192;

/// An append (and its fsync) at least this long is logged as a warning.
const SLOW_APPEND: std::time::Duration = std::time::Duration::from_millis(500);

/// The most bytes of stored entries one AppendEntries carries (at least one entry,
/// whatever its size). openraft bounds a payload by count alone (`max_payload_entries`)
/// and gives the whole RPC one heartbeat interval; six 700 KiB specs in one request
/// took longer than that to encode, send, decode and fsync on two busy cores, so the
/// request was abandoned and resent forever and the follower never caught up.
pub const APPEND_BYTES: u64 = 512 << 10;

/// The redb-backed log store. Cheap to clone: clones share the database and the cache.
#[derive(Clone)]
pub struct LogStore {
    db: Arc<Database>,
    /// A contiguous suffix of the log (what is on disk is the truth; this is a copy).
    cache: Arc<Mutex<BTreeMap<u64, Entry>>>,
    /// The stored size of every entry in the log, by index.
    sizes: LogSizes,
}

/// The stored size of every entry in the log, by index: bounds AppendEntries by bytes
/// and measures a follower's lag in bytes. A handle of its own, so that reading it
/// (metrics, ClusterStatus) does not keep the log database open after Raft stops.
#[derive(Clone, Default)]
pub struct LogSizes(Arc<Mutex<BTreeMap<u64, u64>>>);

fn io<E: std::error::Error + 'static>(e: E) -> StorageError {
    StorageIOError::write(&e).into()
}

impl LogStore {
    /// Opens (or creates) the log database at `path`.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, redb::Error> {
        let db = Database::create(path)?;
        // Tables must exist before a read transaction can open them.
        let tx = db.begin_write()?;
        {
            tx.open_table(LOGS)?;
            tx.open_table(META)?;
        }
        tx.commit()?;
        let mut sizes = BTreeMap::new();
        {
            let rtx = db.begin_read()?;
            let t = rtx.open_table(LOGS)?;
            for item in t.range::<u64>(..)? {
                let (k, v) = item?;
                sizes.insert(k.value(), v.value().len() as u64);
            }
        }
        Ok(Self {
            db: Arc::new(db),
            cache: Default::default(),
            sizes: LogSizes(Arc::new(Mutex::new(sizes))),
        })
    }

    /// A handle on the entries' sizes.
    pub fn sizes(&self) -> LogSizes {
        self.sizes.clone()
    }
}

impl LogSizes {
    fn lock(&self) -> std::sync::LockResult<std::sync::MutexGuard<'_, BTreeMap<u64, u64>>> {
        self.0.lock()
    }

    /// The end (exclusive) of the longest run of entries from `start` to at most `end`
    /// whose stored sizes add up to at most `budget` bytes; always past `start` when
    /// `start < end`, so one entry larger than the budget still travels alone.
    pub fn bounded_end(&self, start: u64, end: u64, budget: u64) -> u64 {
        let Ok(sizes) = self.lock() else {
            return end;
        };
        let mut total = 0u64;
        for (&i, &size) in sizes.range(start..end) {
            total = total.saturating_add(size);
            if i > start && total > budget {
                return i;
            }
        }
        end
    }

    /// Bytes stored for the entries with index in `(after, upto]`: how far behind a
    /// follower that holds up to `after` is, in bytes.
    pub fn bytes_between(&self, after: u64, upto: u64) -> u64 {
        if upto <= after {
            return 0;
        }
        self.lock()
            .map(|s| s.range(after + 1..=upto).map(|(_, n)| n).sum())
            .unwrap_or(0)
    }
}

impl LogStore {
    /// The entries of `range` if the cache holds all of them.
    fn cached<RB: RangeBounds<u64>>(&self, range: &RB) -> Option<Vec<Entry>> {
        use std::ops::Bound::*;
        let cache = self.cache.lock().ok()?;
        let first = *cache.keys().next()?;
        let last = *cache.keys().next_back()?;
        let start = match range.start_bound() {
            Included(s) => *s,
            Excluded(s) => s + 1,
            Unbounded => return None,
        };
        let end = match range.end_bound() {
            Included(e) => *e,
            Excluded(e) => e.checked_sub(1)?,
            Unbounded => last,
        };
        if start < first || start > end || end > last {
            return None;
        }
        Some(cache.range(start..=end).map(|(_, e)| e.clone()).collect())
    }

    /// Runs blocking redb work (it fsyncs) off the async executor.
    async fn blocking<T, F>(&self, f: F) -> Result<T, StorageError>
    where
        T: Send + 'static,
        F: FnOnce(&Database) -> Result<T, StorageError> + Send + 'static,
    {
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || f(&db))
            .await
            .map_err(|e| StorageError::from(StorageIOError::write(AnyError::error(e))))?
    }

    fn get_meta<T: serde::de::DeserializeOwned>(
        db: &Database,
        key: &str,
    ) -> Result<Option<T>, StorageError> {
        let rtx = db.begin_read().map_err(io)?;
        let t = rtx.open_table(META).map_err(io)?;
        match t.get(key).map_err(io)? {
            None => Ok(None),
            Some(v) => Ok(Some(serde_json::from_slice(v.value()).map_err(io)?)),
        }
    }

    fn put_meta<T: serde::Serialize>(db: &Database, key: &str, v: &T) -> Result<(), StorageError> {
        Self::put_meta_with(db, key, v, Durability::Immediate)
    }

    fn put_meta_with<T: serde::Serialize>(
        db: &Database,
        key: &str,
        v: &T,
        durability: Durability,
    ) -> Result<(), StorageError> {
        let bytes = serde_json::to_vec(v).map_err(io)?;
        let mut tx = db.begin_write().map_err(io)?;
        tx.set_durability(durability).map_err(io)?;
        {
            let mut t = tx.open_table(META).map_err(io)?;
            t.insert(key, bytes.as_slice()).map_err(io)?;
        }
        tx.commit().map_err(io)
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        if let Some(hit) = self.cached(&range) {
            return Ok(hit);
        }
        let start = range.start_bound().cloned();
        let end = range.end_bound().cloned();
        self.blocking(move |db| {
            let rtx = db.begin_read().map_err(io)?;
            let t = rtx.open_table(LOGS).map_err(io)?;
            let mut out = Vec::new();
            for item in t.range::<u64>((start, end)).map_err(io)? {
                let (_k, v) = item.map_err(io)?;
                out.push(serde_json::from_slice::<Entry>(v.value()).map_err(io)?);
            }
            Ok(out)
        })
        .await
    }

    async fn limited_get_log_entries(
        &mut self,
        start: u64,
        end: u64,
    ) -> Result<Vec<Entry>, StorageError> {
        let end = self.sizes.bounded_end(start, end, APPEND_BYTES);
        self.try_get_log_entries(start..end).await
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState, StorageError> {
        self.blocking(|db| {
            let purged: Option<LogId> = Self::get_meta(db, K_PURGED)?;
            let rtx = db.begin_read().map_err(io)?;
            let t = rtx.open_table(LOGS).map_err(io)?;
            let last = match t.last().map_err(io)? {
                Some((_k, v)) => Some(
                    serde_json::from_slice::<Entry>(v.value())
                        .map_err(io)?
                        .log_id,
                ),
                None => purged,
            };
            Ok(LogState {
                last_purged_log_id: purged,
                last_log_id: last,
            })
        })
        .await
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), StorageError> {
        let vote = *vote;
        self.blocking(move |db| Self::put_meta(db, K_VOTE, &vote))
            .await
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, StorageError> {
        self.blocking(|db| Self::get_meta(db, K_VOTE)).await
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        // Not fsynced: openraft calls this before every apply, and the commit index is
        // only a hint for how far to re-apply at start-up (anything lower is safe: the
        // leader tells a restarted node what is committed). It becomes durable with
        // the next fsynced write, which is at most one append away.
        self.blocking(move |db| Self::put_meta_with(db, K_COMMITTED, &committed, Durability::None))
            .await
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        Ok(self
            .blocking(|db| Self::get_meta::<Option<LogId>>(db, K_COMMITTED))
            .await?
            .flatten())
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut rows: Vec<(u64, Vec<u8>)> = Vec::new();
        let mut fresh = Vec::new();
        for e in entries {
            rows.push((e.log_id.index, serde_json::to_vec(&e).map_err(io)?));
            fresh.push(e);
        }
        let lens: Vec<(u64, u64)> = rows.iter().map(|(i, b)| (*i, b.len() as u64)).collect();
        let started = std::time::Instant::now();
        let res = self
            .blocking(move |db| {
                let tx = db.begin_write().map_err(io)?;
                {
                    let mut t = tx.open_table(LOGS).map_err(io)?;
                    for (idx, bytes) in &rows {
                        t.insert(*idx, bytes.as_slice()).map_err(io)?;
                    }
                }
                tx.commit().map_err(io)
            })
            .await;
        let took = started.elapsed();
        if took >= SLOW_APPEND {
            // Every command the masters accept waits on this: a disk that holds an
            // fsync (other writers' data, discards of deleted files) shows up here.
            tracing::warn!(
                entries = lens.len(),
                took_ms = took.as_millis() as u64,
                "raft log append slow: the disk held its fsync"
            );
        }
        if res.is_ok() {
            if let Ok(mut sizes) = self.sizes.lock() {
                sizes.extend(lens);
            }
            if let Ok(mut cache) = self.cache.lock() {
                // Appends are contiguous with what is cached unless the cache is cold.
                if let (Some(first), Some(last)) = (fresh.first(), cache.keys().next_back()) {
                    if first.log_id.index > last + 1 {
                        cache.clear();
                    }
                }
                for e in fresh {
                    cache.insert(e.log_id.index, e);
                }
                while cache.len() > CACHE_ENTRIES {
                    cache.pop_first();
                }
            }
        }
        // Durable only now: tell openraft (or tell it why not).
        match &res {
            Ok(()) => callback.log_io_completed(Ok(())),
            Err(e) => callback.log_io_completed(Err(std::io::Error::other(e.to_string()))),
        }
        res
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        if let Ok(mut cache) = self.cache.lock() {
            cache.retain(|i, _| *i < log_id.index);
        }
        if let Ok(mut sizes) = self.sizes.lock() {
            sizes.retain(|i, _| *i < log_id.index);
        }
        self.blocking(move |db| {
            let tx = db.begin_write().map_err(io)?;
            {
                let mut t = tx.open_table(LOGS).map_err(io)?;
                t.retain_in(log_id.index.., |_, _| false).map_err(io)?;
            }
            tx.commit().map_err(io)
        })
        .await
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        if let Ok(mut cache) = self.cache.lock() {
            cache.retain(|i, _| *i > log_id.index);
        }
        if let Ok(mut sizes) = self.sizes.lock() {
            sizes.retain(|i, _| *i > log_id.index);
        }
        self.blocking(move |db| {
            let tx = db.begin_write().map_err(io)?;
            {
                let mut m = tx.open_table(META).map_err(io)?;
                let bytes = serde_json::to_vec(&log_id).map_err(io)?;
                m.insert(K_PURGED, bytes.as_slice()).map_err(io)?;
                let mut t = tx.open_table(LOGS).map_err(io)?;
                t.retain_in(..=log_id.index, |_, _| false).map_err(io)?;
            }
            tx.commit().map_err(io)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store_with(sizes: &[(u64, u64)]) -> (tempfile::TempDir, LogStore) {
        let dir = tempfile::tempdir().unwrap();
        let s = LogStore::open(dir.path().join("raft.redb")).unwrap();
        s.sizes.lock().unwrap().extend(sizes.iter().copied());
        (dir, s)
    }

    #[test]
    fn append_payloads_are_bounded_by_bytes_but_carry_at_least_one_entry() {
        let (_d, st) = store_with(&[(1, 100), (2, 100), (3, 300), (4, 1000), (5, 10)]);
        let s = st.sizes();
        // Within the budget: everything asked for.
        assert_eq!(s.bounded_end(1, 3, 500), 3);
        // 100 + 100 + 300 = 500 fits exactly; the 1000-byte entry does not.
        assert_eq!(s.bounded_end(1, 6, 500), 4);
        assert_eq!(s.bounded_end(1, 6, 499), 3);
        // One entry larger than the budget still travels, alone.
        assert_eq!(s.bounded_end(4, 6, 500), 5);
        assert_eq!(s.bounded_end(5, 6, 1), 6);
        // Nothing asked, nothing given.
        assert_eq!(s.bounded_end(3, 3, 500), 3);
    }

    #[test]
    fn lag_in_bytes_counts_the_entries_after_the_matched_index() {
        let (_d, st) = store_with(&[(1, 100), (2, 200), (3, 300)]);
        let s = st.sizes();
        assert_eq!(s.bytes_between(0, 3), 600);
        assert_eq!(s.bytes_between(1, 3), 500);
        assert_eq!(s.bytes_between(3, 3), 0);
        assert_eq!(s.bytes_between(3, 1), 0);
    }
}
