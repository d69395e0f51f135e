//! The Weir worker.
//!
//! - [`resources`]: cores, memory and accelerators (NVML discovery, declared devices).
//! - [`agent`]: registration with the masters and heartbeats, following the leader.
//! - [`exec`]: exec PEs, local programs speaking the PE protocol on stdin/stdout.
//!
//! The PE runtime, the data plane and the control service land next (issue 4); the
//! record and frame formats they use are in `weir_common::{record, frame}`.

pub mod agent;
pub mod exec;
pub mod resources;
