//! The Weir master: the Raft-replicated control plane.
//!
//! - [`state`]: the replicated state machine (pure).
//!
//! The Raft node, the client API and the worker registry build on it.

pub mod metrics;
pub mod state;
