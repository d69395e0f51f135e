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
use std::sync::Arc;
use tokio::sync::{broadcast, RwLock};

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
    events: broadcast::Sender<AppliedEvent>,
}

fn read_err(e: impl std::error::Error + 'static) -> StorageError {
    StorageIOError::read_state_machine(&e).into()
}

fn write_err(e: impl std::error::Error + 'static) -> StorageError {
    StorageIOError::write_state_machine(&e).into()
}

/// Writes `bytes` to `path` atomically and durably: temp file, fsync, rename, fsync dir.
fn write_durably(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

impl StateMachine {
    /// Opens the state machine in `dir`, loading the last snapshot if there is one.
    pub fn open(dir: &Path) -> Result<Self, StorageError> {
        let snapshot_path = dir.join("snapshot.json");
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

    async fn persist(&self, snap: StoredSnapshot) -> Result<(), StorageError> {
        let bytes = serde_json::to_vec(&snap).map_err(write_err)?;
        let path = self.snapshot_path.clone();
        tokio::task::spawn_blocking(move || write_durably(&path, &bytes))
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
