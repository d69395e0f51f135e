//! The Weir master: the Raft-replicated control plane.
//!
//! - [`state`]: the replicated state machine (pure).
//! - [`raft`]: openraft behind one module: redb log, snapshots, gRPC transport.
//! - [`api`]: the gRPC services (client API, admin, worker registration).
//! - [`executor`]: the reconciler (pure decisions) and the executor that places PEs
//!   and drives workers.
//! - [`server`]: a master process: every service on one port, metrics, liveness.
//! - [`metrics`]: Prometheus text rendering.

pub mod api;
pub mod convert;
pub mod executor;
pub mod metrics;
pub mod raft;
pub mod scheduler;
pub mod scrape;
pub mod server;
pub mod shared;
pub mod state;
