//! Records and record batches: the unit the data plane moves.
//!
//! A record carries its origin (`source`, `seq`: which source PE emitted it and its
//! sequence there, the basis of exactly-once), a key, an event time and typed fields.
//! Records travel in [`Batch`]es: one immutable `Bytes` buffer in a compact binary
//! layout, parsed lazily (a reader walks it without allocating per record). Between
//! co-located PEs a batch is handed over by cloning the `Bytes` (a reference count, no
//! copy); between workers the same bytes go into a frame ([`crate::frame`]) as they are.
//!
//! Layout of a batch (little endian):
//! ```text
//! u32 record count
//! per record:
//!   u32 source | u64 seq | i64 event_time_ms | u16 key_len | key bytes | u16 field count
//!   per field: u8 name_len | name bytes (UTF-8) | u8 tag | value
//!     tag 0 null | 1 bool (u8) | 2 i64 | 3 f64 | 4 str (u32 len + UTF-8) | 5 bytes (u32 len + bytes)
//! ```
//! Every length is checked when reading: a malformed batch is an error, never a panic
//! or an out-of-bounds read.

mod batch;
mod value;

pub use batch::{Batch, BatchBuilder, BatchError, RawField, RecordRef};
pub use value::Value;

#[cfg(test)]
mod tests;
