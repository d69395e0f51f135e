//! Exec PEs: local programs that transform records, speaking the PE protocol on
//! stdin/stdout (docs/pe-protocol.md).
//!
//! - [`ExecPe`]: spawns the program, one request/answer round trip per batch, restarts
//!   it and replays the batch when it fails.
//! - Two protocols ([`PeProtocol`](weir_common::spec::PeProtocol)): `lines` (one JSON
//!   object per record, for scripts; identity is kept by the worker) and `framed` (the
//!   binary batch layout, length-prefixed).
//! - The program's stderr goes to tracing at warn level, line by line, with the PE id.

mod child;
mod error;
mod framed;
mod lines;
mod pe;
mod readline;

pub use child::PE_ID_ENV;
pub use error::{ExecError, Failure};
pub use framed::MAX_FRAME_BYTES;
pub use lines::KEY_FIELD;
pub use pe::{ExecConfig, ExecPe};

#[cfg(test)]
mod tests;
