//! Records and record batches: the unit the data plane moves.
//!
//! A record carries its origin (`source`, `seq`: which source PE emitted it and its
//! sequence there, the basis of exactly-once), a key, an event time and typed fields.
//! Records travel in [`Batch`]es, stored by column: one array per record header
//! (sources, seqs, event times, keys) and one column per field name, each column a tag
//! per record, an offset table and the payloads. A projection or rename is then a new
//! list of columns over the same buffers, and a filter reads one column to decide.
//! Between co-located PEs a batch is handed over by cloning it (reference counts, no
//! copy); between workers its encoded form goes into a frame ([`crate::frame`]) and is
//! sliced, not copied, on the other side.
//!
//! Encoded layout (little endian; `n` records, offsets are `u32`, `n + 1` of them,
//! starting at 0 and never going back):
//! ```text
//! u32 n | u16 column count
//! u32 × n sources | u64 × n seqs | i64 × n event times | key offsets | key bytes
//! per column:
//!   u8 name_len | name (UTF-8) | u8 × n tags | offsets | payloads
//!     tag 0 null | 1 bool (1 byte) | 2 i64 (8) | 3 f64 (8) | 4 str (UTF-8) | 5 bytes
//!     | 255 absent (the record has no such field; 0 bytes)
//! ```
//! Every length, offset, tag and text is checked when reading ([`Batch::from_bytes`]):
//! a malformed batch is an error, never a panic or an out-of-bounds read. Exec PEs
//! speak the simpler row layout instead ([`Batch::from_rows`], [`Batch::encode_rows`]).

mod batch;
mod builder;
mod columns;
mod gather;
mod rows;
mod typed;
mod value;

pub use batch::{Batch, BatchError, FieldReader, RawField, RecordRef};
pub use builder::BatchBuilder;
pub use columns::{ColumnValues, Columns};
pub use typed::{NewColumn, OutColumn};
pub use value::Value;

#[cfg(test)]
mod tests;
