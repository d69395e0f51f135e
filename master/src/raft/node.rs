//! One master's Raft node: storage under its data dir, the network, the Raft handle.

use super::log_store::LogStore;
use super::network::{Faults, Network};
use super::state_machine::StateMachine;
use super::*;
use openraft::error::{InitializeError, RaftError};
use openraft::{Config, SnapshotPolicy};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

/// How to start a Raft node.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    /// This master's id (> 0).
    pub id: NodeId,
    /// Where the log (`raft.redb`) and the snapshot (`snapshot.json`) live.
    pub data_dir: PathBuf,
    /// Stamped on every Raft message; masters of another cluster are refused.
    pub cluster_id: String,
    /// Leader heartbeat, ms. Also the deadline of each replication RPC.
    pub heartbeat_ms: u64,
    /// Election timeout range, ms.
    pub election_timeout_ms: (u64, u64),
    /// Take a snapshot (and compact the log) every this many entries.
    pub snapshot_every: u64,
    /// Entries kept in the log below a snapshot, so that a follower a little behind is
    /// sent entries rather than the whole snapshot.
    pub logs_kept_after_snapshot: u64,
    /// Mutual TLS towards the other masters (or off).
    pub security: weir_security::Security,
}

impl NodeConfig {
    /// Defaults tuned for masters on one LAN with fsync on every write: a lost leader
    /// is replaced within about a second.
    pub fn new(id: NodeId, data_dir: PathBuf) -> Self {
        Self {
            id,
            data_dir,
            cluster_id: "weir".into(),
            heartbeat_ms: 100,
            election_timeout_ms: (400, 800),
            snapshot_every: 10_000,
            logs_kept_after_snapshot: 100,
            security: weir_security::Security::Off,
        }
    }

    fn raft_config(&self) -> Result<Config, openraft::ConfigError> {
        Config {
            cluster_name: self.cluster_id.clone(),
            heartbeat_interval: self.heartbeat_ms,
            election_timeout_min: self.election_timeout_ms.0,
            election_timeout_max: self.election_timeout_ms.1,
            install_snapshot_timeout: 2000,
            snapshot_policy: SnapshotPolicy::LogsSinceLast(self.snapshot_every),
            max_in_snapshot_log_to_keep: self.logs_kept_after_snapshot,
            purge_batch_size: 64,
            ..Default::default()
        }
        .validate()
    }
}

/// Why a node could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The configuration is inconsistent.
    #[error("raft config: {0}")]
    Config(#[from] openraft::ConfigError),
    /// The data dir cannot be used.
    #[error("data dir {0}: {1}")]
    Io(PathBuf, std::io::Error),
    /// The log database cannot be opened.
    #[error("log store: {0}")]
    Log(#[from] redb::Error),
    /// The snapshot cannot be read.
    #[error("state machine: {0}")]
    StateMachine(#[from] StorageError),
    /// The TLS configuration was refused.
    #[error("tls: {0}")]
    Tls(String),
    /// openraft refused to start.
    #[error("raft: {0}")]
    Raft(String),
}

/// A running Raft node.
#[derive(Clone)]
pub struct RaftNode {
    /// This master's id.
    pub id: NodeId,
    /// Cluster id.
    pub cluster_id: String,
    /// The Raft handle.
    pub raft: Raft,
    /// The state machine (for reads and watches).
    pub state: StateMachine,
    /// The log entries' sizes (for the followers' lag in bytes).
    pub log_sizes: super::log_store::LogSizes,
    /// Fault injection.
    pub faults: Faults,
    /// Mutual TLS on every link this master serves or dials (or off).
    pub security: weir_security::Security,
}

impl RaftNode {
    /// Opens storage in the data dir and starts Raft.
    pub async fn start(cfg: &NodeConfig) -> Result<Self, StartError> {
        std::fs::create_dir_all(&cfg.data_dir)
            .map_err(|e| StartError::Io(cfg.data_dir.clone(), e))?;
        let config = Arc::new(cfg.raft_config()?);
        let log = LogStore::open(cfg.data_dir.join("raft.redb"))?;
        let state = StateMachine::open(&cfg.data_dir)?;
        let faults = Faults::default();
        let network = Network::new(
            cfg.id,
            cfg.cluster_id.clone(),
            faults.clone(),
            cfg.security.clone(),
        );
        let log_sizes = log.sizes();
        let raft = Raft::new(cfg.id, config, network, log, state.clone())
            .await
            .map_err(|e| StartError::Raft(e.to_string()))?;
        Ok(Self {
            id: cfg.id,
            cluster_id: cfg.cluster_id.clone(),
            raft,
            state,
            log_sizes,
            faults,
            security: cfg.security.clone(),
        })
    }

    /// Forms the cluster with `members` (id -> gRPC address) if this node has never
    /// been part of one; a no-op on a node that has. Every founding member may call it
    /// with the same map.
    pub async fn initialize(&self, members: &BTreeMap<NodeId, String>) -> Result<(), String> {
        let nodes: BTreeMap<NodeId, Node> =
            members.iter().map(|(id, a)| (*id, Node::new(a))).collect();
        match self.raft.initialize(nodes).await {
            Ok(()) | Err(RaftError::APIError(InitializeError::NotAllowed(_))) => Ok(()),
            Err(e) => Err(e.to_string()),
        }
    }

    /// Stops Raft (the storage is closed when the last handle drops).
    pub async fn shutdown(&self) {
        let _ = self.raft.shutdown().await;
    }
}

#[cfg(test)]
mod tests {
    use super::super::log_store::LogStore;
    use super::super::state_machine::StateMachine;
    use super::*;
    use openraft::testing::{StoreBuilder, Suite};

    struct Builder;

    impl StoreBuilder<TypeConfig, LogStore, StateMachine, tempfile::TempDir> for Builder {
        async fn build(&self) -> Result<(tempfile::TempDir, LogStore, StateMachine), StorageError> {
            let dir = tempfile::tempdir().map_err(|e| StorageIOError::write(&e))?;
            let log = LogStore::open(dir.path().join("raft.redb"))
                .map_err(|e| StorageIOError::write(&e))?;
            let sm = StateMachine::open(dir.path())?;
            Ok((dir, log, sm))
        }
    }

    /// openraft's own storage test suite against our log store and state machine.
    /// A plain test: the suite builds its own runtime for every case.
    #[test]
    fn openraft_storage_suite() -> Result<(), StorageError> {
        Suite::test_all(Builder)
    }
}
