//! The Weir worker.
//!
//! - [`resources`]: cores, memory and accelerators (NVML discovery, declared devices).
//! - [`agent`]: registration with the masters and heartbeats, following the leader.
//! - [`dataplane`]: channels between PEs (in memory, or TCP links with credits,
//!   acknowledgements and replay).
//! - [`ops`]: the built-in operator kernels (pure); [`exec`]: programs as PEs.
//! - [`container`]: container PEs' Docker configuration (pure; not run yet).
//! - [`images`]: the Docker images this worker holds, listed for its reports.
//! - [`runtime`]: the PEs this worker runs, their tasks and output routing.
//! - [`checkpoint`]: checkpoint snapshots on disk, replicated to peer workers.
//! - [`memory`]: how the process asks the kernel for memory (no transparent huge
//!   pages).
//! - [`control`]: the `WorkerControl` service the master leader drives.
//! - [`node`]: all of it started and stopped together.

pub mod agent;
pub mod background;
pub mod checkpoint;
pub mod container;
pub mod control;
pub mod dataplane;
pub mod exec;
pub mod images;
pub mod memory;
pub mod node;
pub mod ops;
pub mod resources;
pub mod runtime;
