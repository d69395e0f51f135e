//! Program PEs: programs that transform records, speaking the PE protocol on
//! stdin/stdout (docs/pe-protocol.md), run as local processes (`exec`) or containers
//! (`container`, through [`Launch`]): one implementation of the protocol for both.
//!
//! - [`ExecPe`]: starts the program, one request/answer round trip per batch, restarts
//!   it and replays the batch when it fails.
//! - [`Launch`]: where it runs; [`LocalLaunch`] for a child process.
//! - Two protocols ([`PeProtocol`](weir_common::spec::PeProtocol)): `lines` (one JSON
//!   object per record, for scripts; identity is kept by the worker) and `framed` (the
//!   binary batch layout, length-prefixed).
//! - The program's stderr goes to tracing at warn level, line by line, with the PE id.
//! - It sees the GPUs allocated to it and no others ([`with_gpus`]).
//! - A local program gets a clean environment, a process group of its own (killed
//!   whole when it stops) and resource limits ([`LocalLaunch`], [`ExecLimits`]).

mod child;
mod error;
mod framed;
mod launch;
mod lines;
mod pe;
mod readline;

pub use error::{ExecError, Failure};
pub use framed::MAX_FRAME_BYTES;
pub use launch::{
    BoxFuture, ExecLimits, Instance, Launch, LocalLaunch, Output, Started, Stdin, CHILD_PATH,
    MAX_OPEN_FILES, PE_ID_ENV,
};
pub use lines::KEY_FIELD;
pub use pe::{ExecConfig, ExecPe};

use weir_common::spec::ExecParams;

/// Environment variable listing the UUIDs of the GPUs allocated to the PE.
pub const GPUS_ENV: &str = "WEIR_GPUS";
/// What CUDA reads to choose its devices; set to the allocated ones (UUIDs, which
/// CUDA accepts), empty when the PE has none, so a program never takes a device the
/// scheduler gave to another PE.
pub const CUDA_VISIBLE_DEVICES: &str = "CUDA_VISIBLE_DEVICES";

/// `params` with the environment that shows the program its GPUs and hides the rest.
/// The allocation wins over the same names in the spec's `env`: the scheduler
/// accounted for exactly these devices.
pub fn with_gpus(params: &ExecParams, gpus: &[String]) -> ExecParams {
    let mut p = params.clone();
    let list = gpus.join(",");
    p.env.insert(GPUS_ENV.into(), list.clone());
    p.env.insert(CUDA_VISIBLE_DEVICES.into(), list);
    p
}

#[cfg(test)]
mod fuzz_tests;
#[cfg(test)]
mod hardening_tests;
#[cfg(test)]
mod tests;
