//! Building batches record by record.

use super::batch::{
    column_size, encoded_size, Column, RawField, RecordRef, ABSENT, TAG_BOOL, TAG_BYTES, TAG_F64,
    TAG_I64, TAG_NULL, TAG_STR,
};
use super::{Batch, BatchError, Value};
use bytes::{BufMut, BytesMut};
use std::sync::Arc;

/// A column being built.
#[derive(Debug)]
struct ColumnBuilder {
    name: Arc<str>,
    tags: BytesMut,
    offsets: BytesMut,
    data: BytesMut,
}

impl ColumnBuilder {
    /// A column that `rows` records before did not have.
    fn new(name: &str, rows: usize, capacity: usize) -> Self {
        let mut tags = BytesMut::with_capacity(capacity.max(rows + 1));
        tags.put_bytes(ABSENT, rows);
        let mut offsets = BytesMut::with_capacity((capacity.max(rows + 1) + 1) * 4);
        for _ in 0..=rows {
            offsets.put_u32_le(0);
        }
        Self {
            name: name.into(),
            tags,
            offsets,
            data: BytesMut::with_capacity(capacity * 8),
        }
    }

    #[inline]
    fn put(&mut self, tag: u8, payload: &[u8]) -> Result<(), BatchError> {
        let end = u32::try_from(self.data.len() + payload.len())
            .map_err(|_| BatchError::TooLong("column"))?;
        self.tags.put_u8(tag);
        self.data.put_slice(payload);
        self.offsets.put_u32_le(end);
        Ok(())
    }

    /// Back to `rows` records.
    fn truncate(&mut self, rows: usize) {
        self.tags.truncate(rows);
        self.offsets.truncate((rows + 1) * 4);
        let end = super::batch::u32_at(&self.offsets, rows) as usize;
        self.data.truncate(end);
    }
}

/// Builds a batch record by record. Fields go into the column of their name (a record
/// with two fields of one name fills two columns); a record without a field the batch
/// has elsewhere is marked absent in that column. A record's fields are read back in
/// column order: the order in which the batch first saw each name.
#[derive(Debug)]
pub struct BatchBuilder {
    len: u32,
    /// Records the buffers are sized for.
    capacity: usize,
    sources: BytesMut,
    seqs: BytesMut,
    times: BytesMut,
    key_offsets: BytesMut,
    keys: BytesMut,
    cols: Vec<ColumnBuilder>,
}

impl Default for BatchBuilder {
    fn default() -> Self {
        Self::with_capacity(4096)
    }
}

impl BatchBuilder {
    /// A builder with about `bytes` of room before it grows.
    pub fn with_capacity(bytes: usize) -> Self {
        Self::for_records((bytes / 64).max(8))
    }

    fn for_records(capacity: usize) -> Self {
        let mut key_offsets = BytesMut::with_capacity((capacity + 1) * 4);
        key_offsets.put_u32_le(0);
        Self {
            len: 0,
            capacity,
            sources: BytesMut::with_capacity(capacity * 4),
            seqs: BytesMut::with_capacity(capacity * 8),
            times: BytesMut::with_capacity(capacity * 8),
            key_offsets,
            keys: BytesMut::with_capacity(capacity * 8),
            cols: Vec::new(),
        }
    }

    /// Appends one record.
    pub fn push<'f>(
        &mut self,
        source: u32,
        seq: u64,
        event_time_ms: i64,
        key: &[u8],
        fields: impl IntoIterator<Item = (&'f str, &'f Value)>,
    ) -> Result<(), BatchError> {
        self.push_with(source, seq, event_time_ms, key, fields, put_value)
    }

    /// Appends one record whose fields are copied as they are encoded, each under the
    /// name given with it (a rename, or its own): decodes nothing.
    pub fn push_raw_fields<'f>(
        &mut self,
        source: u32,
        seq: u64,
        event_time_ms: i64,
        key: &[u8],
        fields: impl IntoIterator<Item = (&'f str, RawField<'f>)>,
    ) -> Result<(), BatchError> {
        self.push_with(source, seq, event_time_ms, key, fields, |c, f| {
            c.put(f.tag, f.payload)
        })
    }

    /// Appends a record of another batch as it is, without decoding its fields.
    pub fn push_raw(&mut self, r: &RecordRef<'_>) {
        // Every part of a record of a batch fits a batch.
        let _ = self.push_raw_fields(
            r.source,
            r.seq,
            r.event_time_ms,
            r.key,
            r.raw_fields().map(|f| (f.name, f)),
        );
    }

    /// The record header, then every field through `put` into the column of its name;
    /// all or nothing.
    fn push_with<'f, F>(
        &mut self,
        source: u32,
        seq: u64,
        event_time_ms: i64,
        key: &[u8],
        fields: impl IntoIterator<Item = (&'f str, F)>,
        mut put: impl FnMut(&mut ColumnBuilder, F) -> Result<(), BatchError>,
    ) -> Result<(), BatchError> {
        if u16::try_from(key.len()).is_err() {
            return Err(BatchError::TooLong("key"));
        }
        let keys_end =
            u32::try_from(self.keys.len() + key.len()).map_err(|_| BatchError::TooLong("keys"))?;
        let row = self.len as usize;
        let had = self.cols.len();
        // Records of a batch mostly have the same fields in the same order: the column
        // after the last one filled is tried first.
        let mut next = 0;
        let mut count = 0usize;
        let mut failed = None;
        for (name, f) in fields {
            count += 1;
            if name.len() > usize::from(u8::MAX) {
                failed = Some(BatchError::TooLong("field name"));
                break;
            }
            if count > usize::from(u16::MAX) {
                failed = Some(BatchError::TooLong("field list"));
                break;
            }
            let open = |c: &ColumnBuilder| c.tags.len() == row && &*c.name == name;
            let at = match self.cols.get(next) {
                Some(c) if open(c) => next,
                _ => match self.cols.iter().position(open) {
                    Some(at) => at,
                    None => {
                        self.cols.push(ColumnBuilder::new(name, row, self.capacity));
                        self.cols.len() - 1
                    }
                },
            };
            next = at + 1;
            if let Err(e) = put(&mut self.cols[at], f) {
                failed = Some(e);
                break;
            }
        }
        if let Some(e) = failed {
            self.cols.truncate(had);
            for c in &mut self.cols {
                c.truncate(row);
            }
            return Err(e);
        }
        for c in &mut self.cols {
            if c.tags.len() == row {
                // Empty: cannot overflow the column.
                let _ = c.put(ABSENT, &[]);
            }
        }
        self.sources.put_u32_le(source);
        self.seqs.put_u64_le(seq);
        self.times.put_i64_le(event_time_ms);
        self.keys.put_slice(key);
        self.key_offsets.put_u32_le(keys_end);
        self.len += 1;
        Ok(())
    }

    /// Records so far.
    pub fn len(&self) -> usize {
        self.len as usize
    }

    /// Whether nothing was pushed.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Encoded size so far, in bytes.
    pub fn size(&self) -> usize {
        let headers = [
            &self.sources,
            &self.seqs,
            &self.times,
            &self.key_offsets,
            &self.keys,
        ];
        encoded_size(
            headers.map(|h| h.len()),
            self.cols
                .iter()
                .map(|c| column_size(&c.name, [&c.tags, &c.offsets, &c.data].map(|b| b.len()))),
        )
    }

    /// The finished batch; the builder starts over empty.
    pub fn finish(&mut self) -> Batch {
        let capacity = self.capacity.max(self.len as usize);
        let done = std::mem::replace(self, Self::for_records(capacity));
        let cols: Vec<Column> = done
            .cols
            .into_iter()
            .map(|c| Column {
                name: c.name,
                tags: c.tags.freeze(),
                offsets: c.offsets.freeze(),
                data: c.data.freeze(),
            })
            .collect();
        Batch {
            len: done.len,
            sources: done.sources.freeze(),
            seqs: done.seqs.freeze(),
            times: done.times.freeze(),
            key_offsets: done.key_offsets.freeze(),
            keys: done.keys.freeze(),
            cols: cols.into(),
        }
    }
}

#[inline]
fn put_value(c: &mut ColumnBuilder, v: &Value) -> Result<(), BatchError> {
    match v {
        Value::Null => c.put(TAG_NULL, &[]),
        Value::Bool(b) => c.put(TAG_BOOL, &[u8::from(*b)]),
        Value::I64(i) => c.put(TAG_I64, &i.to_le_bytes()),
        Value::F64(f) => c.put(TAG_F64, &f.to_bits().to_le_bytes()),
        Value::Str(s) => {
            u32::try_from(s.len()).map_err(|_| BatchError::TooLong("string"))?;
            c.put(TAG_STR, s.as_bytes())
        }
        Value::Bytes(b) => {
            u32::try_from(b.len()).map_err(|_| BatchError::TooLong("bytes"))?;
            c.put(TAG_BYTES, b)
        }
    }
}
