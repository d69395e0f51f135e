//! Building batches record by record.

use super::batch::{
    encoded_size, Column, RawField, RecordRef, ABSENT, TAG_BOOL, TAG_BYTES, TAG_F64, TAG_I64,
    TAG_NULL, TAG_STR,
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

    /// A builder for about `records` records that all have the fields `names`, in
    /// this order (a source with a fixed shape): [`BatchBuilder::push_values`] then
    /// fills the columns without looking names up. Names over 255 bytes are refused.
    pub fn with_columns(records: usize, names: &[&str]) -> Result<Self, BatchError> {
        let mut b = Self::for_records(records.max(1));
        for n in names {
            if n.len() > usize::from(u8::MAX) {
                return Err(BatchError::TooLong("field name"));
            }
            b.cols.push(ColumnBuilder::new(n, 0, b.capacity));
        }
        Ok(b)
    }

    /// Appends one record with a value for each column, in column order: for builders
    /// made by [`BatchBuilder::with_columns`] (another count of values is refused).
    pub fn push_values(
        &mut self,
        source: u32,
        seq: u64,
        event_time_ms: i64,
        key: &[u8],
        values: &[&Value],
    ) -> Result<(), BatchError> {
        // Between pushes every column holds a value (or absence) for every record, so
        // the count is the whole check.
        if values.len() != self.cols.len() {
            return Err(BatchError::Shape {
                columns: self.cols.len(),
                values: values.len(),
            });
        }
        let keys_end = self.key_end(key)?;
        let row = self.len as usize;
        for (i, v) in values.iter().enumerate() {
            if let Err(e) = put_value(&mut self.cols[i], v) {
                for c in &mut self.cols[..i] {
                    c.truncate(row);
                }
                return Err(e);
            }
        }
        self.put_header(source, seq, event_time_ms, key, keys_end);
        Ok(())
    }

    /// Where the keys end once `key` is added, if the key fits.
    fn key_end(&self, key: &[u8]) -> Result<u32, BatchError> {
        if u16::try_from(key.len()).is_err() {
            return Err(BatchError::TooLong("key"));
        }
        u32::try_from(self.keys.len() + key.len()).map_err(|_| BatchError::TooLong("keys"))
    }

    fn put_header(&mut self, source: u32, seq: u64, event_time_ms: i64, key: &[u8], keys_end: u32) {
        self.sources.put_u32_le(source);
        self.seqs.put_u64_le(seq);
        self.times.put_i64_le(event_time_ms);
        self.keys.put_slice(key);
        self.key_offsets.put_u32_le(keys_end);
        self.len += 1;
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
        self.push_with(source, seq, event_time_ms, key, fields, |c, (_, v)| {
            put_value(c, v)
        })
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
        self.push_with(source, seq, event_time_ms, key, fields, |c, (_, f)| {
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
    fn push_with<F: Named>(
        &mut self,
        source: u32,
        seq: u64,
        event_time_ms: i64,
        key: &[u8],
        fields: impl IntoIterator<Item = F>,
        put: impl FnMut(&mut ColumnBuilder, F) -> Result<(), BatchError>,
    ) -> Result<(), BatchError> {
        let row = self.len as usize;
        // Records of a batch mostly have the same fields in the same order: the column
        // after the last one filled is tried first.
        let mut next = 0;
        let capacity = self.capacity;
        self.push_fields(
            (source, seq, event_time_ms, key),
            fields,
            |cols, f| {
                let name = f.name();
                let open = |c: &ColumnBuilder| c.tags.len() == row && &*c.name == name;
                let at = match cols.get(next) {
                    Some(c) if open(c) => next,
                    _ => match cols.iter().position(open) {
                        Some(at) => at,
                        None => {
                            // The name's length was checked by `push_fields`.
                            cols.push(ColumnBuilder::new(name, row, capacity));
                            cols.len() - 1
                        }
                    },
                };
                next = at + 1;
                at
            },
            put,
        )
    }

    /// The record header, then every field through `put` into the column `column`
    /// picks (creating it if it must); all or nothing.
    fn push_fields<F: Named>(
        &mut self,
        (source, seq, event_time_ms, key): (u32, u64, i64, &[u8]),
        fields: impl IntoIterator<Item = F>,
        mut column: impl FnMut(&mut Vec<ColumnBuilder>, &F) -> usize,
        mut put: impl FnMut(&mut ColumnBuilder, F) -> Result<(), BatchError>,
    ) -> Result<(), BatchError> {
        let keys_end = self.key_end(key)?;
        let row = self.len as usize;
        let had = self.cols.len();
        let mut count = 0usize;
        let mut failed = None;
        for f in fields {
            if f.name().len() > usize::from(u8::MAX) {
                failed = Some(BatchError::TooLong("field name"));
                break;
            }
            count += 1;
            if count > usize::from(u16::MAX) {
                failed = Some(BatchError::TooLong("field list"));
                break;
            }
            let at = column(&mut self.cols, &f);
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
                c.put(ABSENT, &[])?;
            }
        }
        self.put_header(source, seq, event_time_ms, key, keys_end);
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
                .map(|c| 1 + c.name.len() + c.tags.len() + c.offsets.len() + c.data.len()),
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

/// A field handed to the builder: anything with a name.
trait Named {
    fn name(&self) -> &str;
}

impl Named for (&str, &Value) {
    fn name(&self) -> &str {
        self.0
    }
}

impl Named for (&str, RawField<'_>) {
    fn name(&self) -> &str {
        self.0
    }
}
