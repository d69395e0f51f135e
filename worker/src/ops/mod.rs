//! The built-in operators as pure kernels over record batches.
//!
//! Each kernel takes batches in and returns batches out, holds its state in plain
//! structures that can be snapshotted (for checkpoints and the upgrade hand-off), and
//! does no I/O; the PE runtime feeds them from channels and forwards what they emit.
//! Records are addressed by `(source, seq)`, which every kernel passes through
//! unchanged, so sinks can tell loss and duplication apart from filtering.

pub mod eval;
pub mod generator;
pub mod transform;
pub mod verify;
pub mod window;

pub use generator::Generator;
pub use transform::{Filter, KeyBy, Map};
pub use verify::{SourceReport, Verify};
pub use window::{Window, WindowKind};

use weir_common::record::{Batch, BatchBuilder, RecordRef, Value};

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
    let mut out = BatchBuilder::with_capacity(batch.bytes().len());
    for r in batch.iter() {
        f(&r, &mut out);
    }
    out.finish()
}
