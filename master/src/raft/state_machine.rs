//! The Raft state machine: [`ClusterState`] plus Raft bookkeeping, with snapshots
//! persisted to a file so a restarted master rebuilds its state from the snapshot and
//! the log entries after it.
//!
//! The state itself is not written on every apply: the log holds every committed
//! command (fsynced), the snapshot file holds a prefix, and on start openraft re-applies
//! the committed entries after the snapshot.

use super::*;
use crate::state::{ClusterState, Command, Response};
use openraft::storage::RaftStateMachine;
use openraft::{EntryPayload, OptionalSend, RaftSnapshotBuilder};
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use tokio::sync::{broadcast, Mutex, RwLock};

/// What the state machine holds.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct SmData {
    /// The replicated cluster state.
    pub state: ClusterState,
    /// Last log id applied.
    pub last_applied: Option<LogId>,
    /// Last membership applied.
    pub last_membership: StoredMembership,
}

/// A snapshot as kept in memory and on disk.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct StoredSnapshot {
    meta: SnapshotMeta,
    data: Vec<u8>,
}

/// A command applied successfully, as seen by watchers.
#[derive(Clone, Debug)]
pub struct AppliedEvent {
    /// Log index of the command.
    pub index: u64,
    /// The command.
    pub command: Command,
    /// Its answer.
    pub response: Response,
}

/// The state machine store. Cheap to clone; clones share everything.
#[derive(Clone)]
pub struct StateMachine {
    data: Arc<RwLock<SmData>>,
    snapshot: Arc<RwLock<Option<StoredSnapshot>>>,
    snapshot_path: PathBuf,
    /// Held while a snapshot is written: builds and installs run concurrently, and
    /// neither may replace the file with an older snapshot than the other wrote.
    persisting: Arc<Mutex<()>>,
    events: broadcast::Sender<AppliedEvent>,
}

fn read_err(e: impl std::error::Error + 'static) -> StorageError {
    StorageIOError::read_state_machine(&e).into()
}

fn write_err(e: impl std::error::Error + 'static) -> StorageError {
    StorageIOError::write_state_machine(&e).into()
}

/// Suffix of snapshot temp files: `<file>.<tag>.<pid>.<n>.tmp`.
const TMP_SUFFIX: &str = ".tmp";

/// Makes every temp file name of this process unique.
static TMP_SEQ: AtomicU64 = AtomicU64::new(0);

/// A temp file name next to `path` that no other write uses: the snapshot id (made
/// file-name safe), the process id and a per-process counter. One fixed name let a
/// snapshot build and a snapshot install truncate and rename each other's file.
fn temp_path(path: &Path, tag: &str) -> PathBuf {
    let tag: String = tag
        .chars()
        .take(64)
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let n = TMP_SEQ.fetch_add(1, Ordering::Relaxed);
    let base = path
        .file_name()
        .map_or_else(|| "snapshot".into(), |f| f.to_string_lossy());
    path.with_file_name(format!(
        "{base}.{tag}.{}.{n}{TMP_SUFFIX}",
        std::process::id()
    ))
}

/// Writes `bytes` to `path` atomically and durably: a temp file of its own (see
/// [`temp_path`]), fsync, rename, fsync dir. The temp file is removed on failure.
fn write_durably(path: &Path, tag: &str, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = temp_path(path, tag);
    let written = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

/// Removes temp files interrupted writes left next to `path` (best effort).
fn remove_stale_temps(path: &Path) {
    let (Some(dir), Some(base)) = (path.parent(), path.file_name()) else {
        return;
    };
    let prefix = format!("{}.", base.to_string_lossy());
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with(&prefix) && name.ends_with(TMP_SUFFIX) {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

impl StateMachine {
    /// Opens the state machine in `dir`, loading the last snapshot if there is one.
    pub fn open(dir: &Path) -> Result<Self, StorageError> {
        let snapshot_path = dir.join("snapshot.json");
        // Nothing else writes here before the node starts.
        remove_stale_temps(&snapshot_path);
        let (data, snapshot) = match std::fs::read(&snapshot_path) {
            Ok(bytes) => {
                let snap: StoredSnapshot = serde_json::from_slice(&bytes).map_err(read_err)?;
                let mut data: SmData = serde_json::from_slice(&snap.data).map_err(read_err)?;
                data.last_applied = snap.meta.last_log_id;
                data.last_membership = snap.meta.last_membership.clone();
                (data, Some(snap))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => (SmData::default(), None),
            Err(e) => return Err(read_err(e)),
        };
        let (events, _) = broadcast::channel(1024);
        Ok(Self {
            data: Arc::new(RwLock::new(data)),
            snapshot: Arc::new(RwLock::new(snapshot)),
            snapshot_path,
            persisting: Arc::new(Mutex::new(())),
            events,
        })
    }

    /// A read-only view of the state, for serving reads.
    pub async fn read<T>(&self, f: impl FnOnce(&SmData) -> T) -> T {
        f(&*self.data.read().await)
    }

    /// Applied commands, as they are applied on this master.
    pub fn subscribe(&self) -> broadcast::Receiver<AppliedEvent> {
        self.events.subscribe()
    }

    /// Applies one command and, when it takes effect, tells the watchers.
    fn apply_one(&self, sm: &mut SmData, index: u64, cmd: Command) -> Applied {
        let res = sm.state.apply(&cmd);
        if let Ok(response) = &res {
            let _ = self.events.send(AppliedEvent {
                index,
                command: cmd,
                response: response.clone(),
            });
        }
        res
    }

    /// Writes `snap` to the snapshot file and keeps it as the current snapshot, unless
    /// a newer one was persisted meanwhile (a build that copied the state before an
    /// install replaced it must not overwrite the installed snapshot: the log behind
    /// that one may already be purged).
    async fn persist(&self, snap: StoredSnapshot) -> Result<(), StorageError> {
        let _one_at_a_time = self.persisting.lock().await;
        if let Some(current) = self.snapshot.read().await.as_ref() {
            if current.meta.last_log_id > snap.meta.last_log_id {
                tracing::debug!(
                    kept = %current.meta.snapshot_id,
                    dropped = %snap.meta.snapshot_id,
                    "a newer snapshot was persisted meanwhile; not replacing it"
                );
                return Ok(());
            }
        }
        let bytes = serde_json::to_vec(&snap).map_err(write_err)?;
        let path = self.snapshot_path.clone();
        let tag = snap.meta.snapshot_id.clone();
        tokio::task::spawn_blocking(move || write_durably(&path, &tag, &bytes))
            .await
            .map_err(|e| {
                StorageError::from(StorageIOError::write_state_machine(
                    openraft::AnyError::error(e),
                ))
            })?
            .map_err(write_err)?;
        *self.snapshot.write().await = Some(snap);
        Ok(())
    }
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachine {
    async fn build_snapshot(&mut self) -> Result<Snapshot, StorageError> {
        // A copy taken under the lock (apps are shared records, so it copies no spec),
        // serialised after it is released: applies never wait for the encoding.
        let sm: SmData = self.data.read().await.clone();
        let snapshot_id = match sm.last_applied {
            Some(l) => format!("{}-{}", l.leader_id, l.index),
            None => "empty".to_string(),
        };
        let meta = SnapshotMeta {
            last_log_id: sm.last_applied,
            last_membership: sm.last_membership.clone(),
            snapshot_id,
        };
        let data = tokio::task::spawn_blocking(move || serde_json::to_vec(&sm))
            .await
            .map_err(|e| read_err(std::io::Error::other(e.to_string())))?
            .map_err(read_err)?;
        self.persist(StoredSnapshot {
            meta: meta.clone(),
            data: data.clone(),
        })
        .await?;
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = Self;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), StorageError> {
        let sm = self.data.read().await;
        Ok((sm.last_applied, sm.last_membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Applied>, StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut sm = self.data.write().await;
        let mut out = Vec::new();
        for entry in entries {
            sm.last_applied = Some(entry.log_id);
            // One answer per entry, blank and membership entries included.
            match entry.payload {
                EntryPayload::Blank => out.push(Ok(Response::Done)),
                EntryPayload::Normal(Command::Batch { cmds }) => {
                    let results = cmds
                        .into_iter()
                        .map(|cmd| self.apply_one(&mut sm, entry.log_id.index, cmd))
                        .collect();
                    out.push(Ok(Response::Batch { results }));
                }
                EntryPayload::Normal(cmd) => {
                    out.push(self.apply_one(&mut sm, entry.log_id.index, cmd));
                }
                EntryPayload::Membership(m) => {
                    sm.last_membership = StoredMembership::new(Some(entry.log_id), m);
                    out.push(Ok(Response::Done));
                }
            }
        }
        Ok(out)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError> {
        let data = snapshot.into_inner();
        // Decoding a large state takes a while: off the async threads, as building it is.
        let (data, decoded) = tokio::task::spawn_blocking(move || {
            let sm = serde_json::from_slice::<SmData>(&data);
            (data, sm)
        })
        .await
        .map_err(|e| StorageIOError::read_snapshot(Some(meta.signature()), &e))?;
        let mut new_sm =
            decoded.map_err(|e| StorageIOError::read_snapshot(Some(meta.signature()), &e))?;
        new_sm.last_applied = meta.last_log_id;
        new_sm.last_membership = meta.last_membership.clone();
        self.persist(StoredSnapshot {
            meta: meta.clone(),
            data,
        })
        .await?;
        *self.data.write().await = new_sm;
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot>, StorageError> {
        Ok(self.snapshot.read().await.as_ref().map(|s| Snapshot {
            meta: s.meta.clone(),
            snapshot: Box::new(Cursor::new(s.data.clone())),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn concurrent_writes_never_share_a_temp_file() {
        // Eight writers (as a build and an install can be) replace the same file at
        // once, each with its own content. With one fixed temp name they truncated and
        // renamed each other's file: renames failed (NotFound) or mixed contents won.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("snapshot.json");
        for round in 0..20 {
            let handles: Vec<_> = (0..8u8)
                .map(|w| {
                    let path = path.clone();
                    std::thread::spawn(move || {
                        let bytes = vec![b'a' + w; 256 << 10];
                        write_durably(&path, &format!("1-{round}"), &bytes)
                    })
                })
                .collect();
            for h in handles {
                h.join().unwrap().unwrap();
            }
            let got = std::fs::read(&path).unwrap();
            assert_eq!(got.len(), 256 << 10);
            assert!(
                got.iter().all(|b| *b == got[0]),
                "mixed contents in round {round}"
            );
        }
        // No temp file is left behind.
        let names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, vec!["snapshot.json".to_string()]);
    }

    #[test]
    fn temp_names_are_unique_and_safe() {
        let p = Path::new("/d/snapshot.json");
        let (a, b) = (temp_path(p, "T1-../x/5"), temp_path(p, "T1-../x/5"));
        assert_ne!(a, b);
        assert_eq!(a.parent(), Some(Path::new("/d")));
        let name = a.file_name().unwrap().to_string_lossy().into_owned();
        assert!(name.starts_with("snapshot.json.T1-___x_5."), "{name}");
        assert!(name.ends_with(".tmp"), "{name}");
    }

    #[tokio::test]
    async fn an_older_snapshot_never_replaces_a_newer_one() {
        let dir = tempfile::tempdir().unwrap();
        let sm = StateMachine::open(dir.path()).unwrap();
        let snap = |index: u64| StoredSnapshot {
            meta: SnapshotMeta {
                last_log_id: Some(openraft::LogId::new(
                    openraft::CommittedLeaderId::new(1, 1),
                    index,
                )),
                last_membership: StoredMembership::default(),
                snapshot_id: format!("1-{index}"),
            },
            data: serde_json::to_vec(&SmData::default()).unwrap(),
        };
        // An install at 200 lands first; a build that copied the state at 100 ends after.
        sm.persist(snap(200)).await.unwrap();
        sm.persist(snap(100)).await.unwrap();
        let on_disk: StoredSnapshot =
            serde_json::from_slice(&std::fs::read(dir.path().join("snapshot.json")).unwrap())
                .unwrap();
        assert_eq!(on_disk.meta.snapshot_id, "1-200");
        assert_eq!(
            sm.snapshot.read().await.as_ref().unwrap().meta.snapshot_id,
            "1-200"
        );
        // Stale temp files of an interrupted write are removed on open.
        std::fs::write(dir.path().join("snapshot.json.1-5.77.0.tmp"), b"partial").unwrap();
        drop(sm);
        let _sm = StateMachine::open(dir.path()).unwrap();
        assert!(!dir.path().join("snapshot.json.1-5.77.0.tmp").exists());
    }
}
