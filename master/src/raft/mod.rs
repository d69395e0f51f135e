//! Raft, behind one module of ours: openraft 0.9 with a redb log store, a snapshotting
//! state machine over [`crate::state::ClusterState`], and a tonic transport with a
//! fault-injection filter for tests.

// openraft's StorageError is large; returning it by value is openraft's API.
#![allow(clippy::result_large_err)]

pub mod log_store;
pub mod network;
pub mod node;
pub mod state_machine;
pub mod transport;

use crate::state::{Command, CommandError, Response};
use std::io::Cursor;

/// What applying one committed entry answers (blank and membership entries answer `Ok(Done)`).
pub type Applied = Result<Response, CommandError>;

openraft::declare_raft_types!(
    /// Weir's Raft type configuration.
    pub TypeConfig:
        D            = Command,
        R            = Applied,
        NodeId       = u64,
        Node         = openraft::BasicNode,
        Entry        = openraft::Entry<TypeConfig>,
        SnapshotData = Cursor<Vec<u8>>,
        AsyncRuntime = openraft::TokioRuntime,
);

/// A master's Raft id.
pub type NodeId = u64;
/// A master's address book entry (its gRPC address).
pub type Node = openraft::BasicNode;
/// A log id.
pub type LogId = openraft::LogId<NodeId>;
/// A vote.
pub type Vote = openraft::Vote<NodeId>;
/// A log entry.
pub type Entry = openraft::Entry<TypeConfig>;
/// openraft's storage error.
pub type StorageError = openraft::StorageError<NodeId>;
/// openraft's storage I/O error.
pub type StorageIOError = openraft::StorageIOError<NodeId>;
/// Snapshot metadata.
pub type SnapshotMeta = openraft::SnapshotMeta<NodeId, Node>;
/// A snapshot.
pub type Snapshot = openraft::Snapshot<TypeConfig>;
/// The membership as stored.
pub type StoredMembership = openraft::StoredMembership<NodeId, Node>;
/// The log's bounds.
pub type LogState = openraft::storage::LogState<TypeConfig>;
/// The Raft handle.
pub type Raft = openraft::Raft<TypeConfig>;
