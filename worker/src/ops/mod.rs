//! The built-in operators as pure kernels over record batches.
//!
//! Each kernel takes batches in and returns batches out, holds its state in plain
//! structures that can be snapshotted (for checkpoints and the upgrade hand-off), and
//! does no I/O; the PE runtime feeds them from channels and forwards what they emit.
//! The exceptions are the edges: [`FileSink`] and [`FileSource`] do blocking file I/O
//! (the decoding they use, [`json_line`] and [`push_line`], is pure).
//! Records are addressed by `(source, seq)`, which every kernel passes through
//! unchanged, so sinks can tell loss and duplication apart from filtering.

mod codec;
pub mod eval;
pub mod generator;
pub mod nexmark;
pub mod sink;
pub mod source;
pub mod transform;
pub mod vector;
pub mod verify;
pub mod window;

pub use generator::Generator;
pub use nexmark::Nexmark;
pub use sink::{json_line, FileSink};
pub use source::{push_line, FileSource, LineError};
pub use transform::{Filter, KeyBy, Map};
pub use verify::{SourceReport, Verify, VerifyReport};
pub use window::{Window, WindowKind};

use weir_common::record::{Batch, BatchBuilder, RecordRef, Value};

/// Why a state snapshot cannot be restored. Restoring checks the whole snapshot before
/// touching any state, so after an error the kernel is exactly as it was.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum StateError {
    /// The bytes end before the snapshot does.
    #[error("state snapshot truncated at byte {0}")]
    Truncated(usize),
    /// The format version is not one this build reads.
    #[error("unsupported state snapshot version {0}")]
    Version(u8),
    /// The snapshot was taken by another kind of kernel.
    #[error("state snapshot is for {found}, not {expected}")]
    WrongKind {
        /// The kind restoring.
        expected: &'static str,
        /// The kind the snapshot names.
        found: String,
    },
    /// The snapshot's configuration differs from the kernel's (e.g. another window size).
    #[error("state snapshot does not match this operator: {0}")]
    Mismatch(String),
    /// A value is out of its range (e.g. an unknown tag).
    #[error("invalid state snapshot at byte {at}: {what}")]
    Invalid {
        /// What is wrong.
        what: &'static str,
        /// Where.
        at: usize,
    },
    /// Bytes remain after the snapshot.
    #[error("{0} trailing bytes after the state snapshot")]
    Trailing(usize),
}

/// A record taken apart, for kernels that rebuild it.
#[derive(Clone, Debug, PartialEq)]
pub struct Owned {
    /// Source ordinal.
    pub source: u32,
    /// Sequence at the source.
    pub seq: u64,
    /// Event time, ms.
    pub event_time_ms: i64,
    /// Key.
    pub key: Vec<u8>,
    /// Fields in order.
    pub fields: Vec<(String, Value)>,
}

impl Owned {
    /// Copies a borrowed record.
    pub fn from_ref(r: &RecordRef<'_>) -> Self {
        Self {
            source: r.source,
            seq: r.seq,
            event_time_ms: r.event_time_ms,
            key: r.key.to_vec(),
            fields: r.fields().map(|(n, v)| (n.to_string(), v)).collect(),
        }
    }

    /// A field by name.
    pub fn get(&self, name: &str) -> Option<&Value> {
        self.fields.iter().find(|(n, _)| n == name).map(|(_, v)| v)
    }

    /// Appends it to a batch under construction (oversized parts are dropped with the
    /// record: a record the format cannot carry is an operator bug, not input).
    pub fn push_to(&self, b: &mut BatchBuilder) {
        let fields = self.fields.iter().map(|(n, v)| (n.as_str(), v));
        if let Err(e) = b.push(self.source, self.seq, self.event_time_ms, &self.key, fields) {
            tracing::error!(error = %e, source = self.source, seq = self.seq, "record dropped: too large for a batch");
        }
    }
}

/// Applies `f` to every record of `batch`, collecting what it keeps into one batch.
pub fn map_batch(batch: &Batch, mut f: impl FnMut(&RecordRef<'_>, &mut BatchBuilder)) -> Batch {
    let mut out = BatchBuilder::with_capacity(batch.encoded_len());
    for r in batch.iter() {
        f(&r, &mut out);
    }
    out.finish()
}
