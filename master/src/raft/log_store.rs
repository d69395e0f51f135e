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

/// The redb-backed log store. Cheap to clone: clones share the database and the cache.
#[derive(Clone)]
pub struct LogStore {
    db: Arc<Database>,
    /// A contiguous suffix of the log (what is on disk is the truth; this is a copy).
    cache: Arc<Mutex<BTreeMap<u64, Entry>>>,
}

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
        Ok(Self {
            db: Arc::new(db),
            cache: Default::default(),
        })
    }

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
        let mut rows = Vec::new();
        let mut fresh = Vec::new();
        for e in entries {
            rows.push((e.log_id.index, serde_json::to_vec(&e).map_err(io)?));
            fresh.push(e);
        }
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
        if res.is_ok() {
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
