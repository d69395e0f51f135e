//! Making a batch from whole columns at once: for sources that produce many records of
//! one shape, column by column instead of record by record.

use super::batch::{Column, TAG_BYTES, TAG_F64, TAG_I64, TAG_STR};
use super::{Batch, BatchError};
use bytes::{BufMut, Bytes, BytesMut};

/// The values of one field for every record of a batch.
#[derive(Clone, Copy, Debug)]
pub enum ColumnValues<'a> {
    /// Integers.
    I64(&'a [i64]),
    /// Floats.
    F64(&'a [f64]),
    /// Text.
    Str(&'a [&'a str]),
    /// Bytes.
    Bytes(&'a [&'a [u8]]),
    /// The same bytes in every record (a constant payload): written with a few large
    /// copies instead of one per record.
    SameBytes(&'a [u8]),
}

impl ColumnValues<'_> {
    /// Values given, `None` for a value that stands for every record.
    fn len(&self) -> Option<usize> {
        Some(match self {
            ColumnValues::I64(v) => v.len(),
            ColumnValues::F64(v) => v.len(),
            ColumnValues::Str(v) => v.len(),
            ColumnValues::Bytes(v) => v.len(),
            ColumnValues::SameBytes(_) => return None,
        })
    }
}

/// A batch's records given by column: one entry per record in each slice.
#[derive(Clone, Copy, Debug)]
pub struct Columns<'a> {
    /// Source ordinals.
    pub sources: &'a [u32],
    /// Sequence numbers at the sources.
    pub seqs: &'a [u64],
    /// Event times, ms.
    pub times: &'a [i64],
    /// Keys.
    pub keys: &'a [&'a [u8]],
    /// The fields, each with a value for every record.
    pub fields: &'a [(&'a str, ColumnValues<'a>)],
}

/// `n` fixed-width values as little-endian bytes.
fn fixed<T: Copy, const W: usize>(values: &[T], bytes: impl Fn(T) -> [u8; W]) -> Bytes {
    let mut out = vec![0u8; values.len() * W];
    for (slot, v) in out.chunks_exact_mut(W).zip(values) {
        slot.copy_from_slice(&bytes(*v));
    }
    out.into()
}

/// Offsets and data of variable-length values.
fn varying<'v>(
    values: impl Iterator<Item = &'v [u8]> + Clone,
    n: usize,
    what: &'static str,
) -> Result<(Bytes, Bytes), BatchError> {
    let total: usize = values.clone().map(<[u8]>::len).sum();
    if u32::try_from(total).is_err() {
        return Err(BatchError::TooLong(what));
    }
    let mut offsets = BytesMut::with_capacity((n + 1) * 4);
    let mut data = BytesMut::with_capacity(total);
    offsets.put_u32_le(0);
    for v in values {
        data.put_slice(v);
        offsets.put_u32_le(data.len() as u32);
    }
    Ok((offsets.freeze(), data.freeze()))
}

/// Offsets of `n` values of `w` bytes each.
pub(super) fn even_offsets(n: usize, w: usize) -> Result<Bytes, BatchError> {
    let w = u32::try_from(w).map_err(|_| BatchError::TooLong("column"))?;
    u32::try_from(n)
        .ok()
        .and_then(|n| n.checked_mul(w))
        .ok_or(BatchError::TooLong("column"))?;
    let mut out = vec![0u8; (n + 1) * 4];
    let mut at = 0u32;
    for slot in out.chunks_exact_mut(4) {
        slot.copy_from_slice(&at.to_le_bytes());
        at = at.wrapping_add(w);
    }
    Ok(out.into())
}

impl Batch {
    /// A batch from whole columns. Every slice must have one entry per record (another
    /// length is refused), and the parts must fit the format as in
    /// [`super::BatchBuilder::push`]; the result is the batch pushing the same records
    /// field by field would build.
    pub fn from_columns(c: &Columns<'_>) -> Result<Batch, BatchError> {
        let n = c.sources.len();
        let lengths = [c.seqs.len(), c.times.len(), c.keys.len()]
            .into_iter()
            .chain(c.fields.iter().filter_map(|(_, v)| v.len()));
        for len in lengths {
            if len != n {
                return Err(BatchError::Shape {
                    columns: n,
                    values: len,
                });
            }
        }
        let len = u32::try_from(n).map_err(|_| BatchError::TooLong("batch"))?;
        if c.keys.iter().any(|k| k.len() > usize::from(u16::MAX)) {
            return Err(BatchError::TooLong("key"));
        }
        if c.fields.len() > usize::from(u16::MAX) {
            return Err(BatchError::TooLong("field list"));
        }
        let (key_offsets, keys) = varying(c.keys.iter().copied(), n, "keys")?;
        let mut cols = Vec::with_capacity(c.fields.len());
        for (name, values) in c.fields {
            if name.len() > usize::from(u8::MAX) {
                return Err(BatchError::TooLong("field name"));
            }
            let (tag, offsets, data) = match values {
                ColumnValues::I64(v) => (TAG_I64, even_offsets(n, 8)?, fixed(v, i64::to_le_bytes)),
                ColumnValues::F64(v) => (
                    TAG_F64,
                    even_offsets(n, 8)?,
                    fixed(v, |f: f64| f.to_bits().to_le_bytes()),
                ),
                ColumnValues::Str(v) => {
                    let (o, d) = varying(v.iter().map(|s| s.as_bytes()), n, "string")?;
                    (TAG_STR, o, d)
                }
                ColumnValues::Bytes(v) => {
                    let (o, d) = varying(v.iter().copied(), n, "bytes")?;
                    (TAG_BYTES, o, d)
                }
                ColumnValues::SameBytes(v) => {
                    let offsets = even_offsets(n, v.len())?;
                    (TAG_BYTES, offsets, Bytes::from(v.repeat(n)))
                }
            };
            cols.push(Column {
                name: (*name).into(),
                tags: vec![tag; n].into(),
                offsets,
                data,
            });
        }
        Ok(Batch {
            len,
            sources: fixed(c.sources, u32::to_le_bytes),
            seqs: fixed(c.seqs, u64::to_le_bytes),
            times: fixed(c.times, i64::to_le_bytes),
            key_offsets,
            keys,
            cols: cols.into(),
        })
    }
}
