//! Reading batches: the columnar [`Batch`], its records and fields, and checking
//! encoded bytes.

use super::Value;
use bytes::{Buf, BufMut, Bytes, BytesMut};
use std::sync::Arc;

pub(super) const TAG_NULL: u8 = 0;
pub(super) const TAG_BOOL: u8 = 1;
pub(super) const TAG_I64: u8 = 2;
pub(super) const TAG_F64: u8 = 3;
pub(super) const TAG_STR: u8 = 4;
pub(super) const TAG_BYTES: u8 = 5;
/// The record has no field in this column.
pub(super) const ABSENT: u8 = 0xFF;

/// Why bytes are not a valid batch.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BatchError {
    /// The buffer ends inside the batch.
    #[error("batch truncated at byte {0}")]
    Truncated(usize),
    /// A field tag is unknown.
    #[error("unknown field tag {tag} at byte {at}")]
    BadTag {
        /// The tag.
        tag: u8,
        /// Where.
        at: usize,
    },
    /// A field name or string is not UTF-8.
    #[error("invalid UTF-8 at byte {0}")]
    Utf8(usize),
    /// Bytes remain after the batch.
    #[error("{0} trailing bytes after the last record")]
    Trailing(usize),
    /// A key, name or value is longer than its length prefix allows.
    #[error("{0} too long for the batch format")]
    TooLong(&'static str),
    /// A record's values do not match the builder's fixed columns.
    #[error("{values} values for {columns} columns")]
    Shape {
        /// Columns of the builder.
        columns: usize,
        /// Values given.
        values: usize,
    },
    /// An offset table does not start at 0 or goes backwards.
    #[error("offsets out of order at byte {0}")]
    Offsets(usize),
    /// A value's length does not fit its tag (an integer that is not 8 bytes, ...).
    #[error("value of {len} bytes does not fit tag {tag} (offsets at byte {at})")]
    Length {
        /// The tag.
        tag: u8,
        /// The value's length.
        len: usize,
        /// Where its column's offsets start.
        at: usize,
    },
}

/// One column: every record's value of one field name, in record order.
#[derive(Clone, Debug)]
pub(super) struct Column {
    pub(super) name: Arc<str>,
    /// One tag per record ([`ABSENT`] where the record has no such field).
    pub(super) tags: Bytes,
    /// `u32` per record and one more: record `i`'s payload is `data[o[i]..o[i + 1]]`.
    pub(super) offsets: Bytes,
    pub(super) data: Bytes,
}

/// Whether a column whose offsets are already checked holds values of one type that
/// fit it: all bytes (any lengths), or all of one fixed width at every offset. Text
/// and mixed columns are checked value by value instead.
fn uniform(tags: &[u8], offsets: &[u8], data_len: usize) -> bool {
    let Some(&tag) = tags.first() else {
        return true;
    };
    if !tags.iter().all(|&t| t == tag) {
        return false;
    }
    let width = match tag {
        TAG_BYTES => return true,
        ABSENT | TAG_NULL => 0,
        TAG_BOOL => 1,
        TAG_I64 | TAG_F64 => 8,
        _ => return false,
    };
    data_len == tags.len() * width
        && offset_values(offsets)
            .enumerate()
            .all(|(i, o)| o as usize == i * width)
}

/// Size of an encoded column: its name (with its length) and its three parts.
pub(super) fn column_size(name: &str, parts: [usize; 3]) -> usize {
    1 + name.len() + parts.iter().sum::<usize>()
}

/// Size of an encoded batch: count and column count, the five header arrays, then
/// each column's encoded size.
pub(super) fn encoded_size(headers: [usize; 5], cols: impl Iterator<Item = usize>) -> usize {
    6 + headers.iter().sum::<usize>() + cols.sum::<usize>()
}

/// The `u32`s of an offset table, in order.
pub(super) fn offset_values(b: &[u8]) -> impl Iterator<Item = u32> + Clone + '_ {
    b.chunks_exact(4)
        .map(|o| u32::from_le_bytes([o[0], o[1], o[2], o[3]]))
}

#[inline]
pub(super) fn u32_at(b: &[u8], i: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[i * 4..i * 4 + 4]);
    u32::from_le_bytes(a)
}

#[inline]
pub(super) fn u64_at(b: &[u8], i: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[i * 8..i * 8 + 8]);
    u64::from_le_bytes(a)
}

impl Column {
    /// Record `row`'s value: tag and payload.
    fn value(&self, row: usize) -> (u8, &[u8]) {
        let (from, to) = (
            u32_at(&self.offsets, row) as usize,
            u32_at(&self.offsets, row + 1) as usize,
        );
        (self.tags[row], &self.data[from..to])
    }

    fn encoded_len(&self) -> usize {
        column_size(
            &self.name,
            [&self.tags, &self.offsets, &self.data].map(|b| b.len()),
        )
    }
}

/// An immutable batch of records, stored by column: the record headers (source, seq,
/// event time, key) in one array each, then one column per field name. Operators that
/// work on whole columns (a projection, a filter's test) touch only what they need, and
/// cloning shares every buffer. See [`super`] for the encoded layout.
#[derive(Clone, Debug)]
pub struct Batch {
    pub(super) len: u32,
    /// `u32` per record.
    pub(super) sources: Bytes,
    /// `u64` per record.
    pub(super) seqs: Bytes,
    /// `i64` per record.
    pub(super) times: Bytes,
    /// `u32` per record and one more, into `keys`.
    pub(super) key_offsets: Bytes,
    pub(super) keys: Bytes,
    pub(super) cols: Arc<[Column]>,
}

impl PartialEq for Batch {
    /// Same records, in the same order, with the same fields (however stored).
    fn eq(&self, other: &Self) -> bool {
        self.len == other.len && self.iter().eq(other.iter())
    }
}

impl Eq for Batch {}

/// The fewest bytes a column takes in the columnar layout: its name's length and the
/// first of its offsets.
const MIN_COLUMN_BYTES: usize = 1 + 4;

impl Batch {
    /// Checks encoded bytes end to end and wraps them without copying: afterwards every
    /// read succeeds.
    pub fn from_bytes(bytes: Bytes) -> Result<Self, BatchError> {
        let mut c = Checker { b: bytes, at: 0 };
        let len = c.u32()?;
        let n = len as usize;
        let ncols = c.u16()?;
        let sources = c.take_n(n, 4)?;
        let seqs = c.take_n(n, 8)?;
        let times = c.take_n(n, 8)?;
        let (key_offsets, keys) = c.offsets_and_data(n)?;
        // Room for the columns the remaining bytes can hold (each takes at least a
        // name length and one offset), not for as many as the header announces: six
        // bytes announcing 65,535 columns must not reserve a table for all of them.
        let fit = (c.b.len() - c.at) / MIN_COLUMN_BYTES;
        let mut cols = Vec::with_capacity(usize::from(ncols).min(fit));
        for _ in 0..ncols {
            let name_len = c.u8()? as usize;
            let name_at = c.at;
            let name = c.take(name_len)?;
            let name: Arc<str> = std::str::from_utf8(&name)
                .map_err(|_| BatchError::Utf8(name_at))?
                .into();
            let tags = c.take(n)?;
            let offsets_at = c.at;
            let (offsets, data) = c.offsets_and_data(n)?;
            let data_at = c.at - data.len();
            // A column of one type (the usual case) is checked as a whole.
            if uniform(&tags, &offsets, data.len()) {
                cols.push(Column {
                    name,
                    tags,
                    offsets,
                    data,
                });
                continue;
            }
            // Offsets were checked to start at 0 and never go back, and to end at the
            // data's length: every `from..to` below is in bounds.
            let bounds = offset_values(&offsets).map(|o| o as usize);
            let spans = bounds.clone().zip(bounds.skip(1));
            for (row, (&tag, (from, to))) in tags.iter().zip(spans).enumerate() {
                let len = to - from;
                let fits = match tag {
                    ABSENT | TAG_NULL => len == 0,
                    TAG_BOOL => len == 1,
                    TAG_I64 | TAG_F64 => len == 8,
                    TAG_STR => {
                        if std::str::from_utf8(&data[from..to]).is_err() {
                            return Err(BatchError::Utf8(data_at + from));
                        }
                        true
                    }
                    TAG_BYTES => true,
                    tag => {
                        return Err(BatchError::BadTag {
                            tag,
                            at: offsets_at - n + row,
                        })
                    }
                };
                if !fits {
                    return Err(BatchError::Length {
                        tag,
                        len,
                        at: offsets_at,
                    });
                }
            }
            cols.push(Column {
                name,
                tags,
                offsets,
                data,
            });
        }
        if c.at != c.b.len() {
            return Err(BatchError::Trailing(c.b.len() - c.at));
        }
        Ok(Self {
            len,
            sources,
            seqs,
            times,
            key_offsets,
            keys,
            cols: cols.into(),
        })
    }

    /// The record header arrays, in encoded order.
    fn headers(&self) -> [&Bytes; 5] {
        [
            &self.sources,
            &self.seqs,
            &self.times,
            &self.key_offsets,
            &self.keys,
        ]
    }

    /// Size of the encoded form in bytes (what a frame carries).
    pub fn encoded_len(&self) -> usize {
        encoded_size(
            self.headers().map(|h| h.len()),
            self.cols.iter().map(|c| c.encoded_len()),
        )
    }

    /// Appends the encoded form to `out`.
    pub fn encode(&self, out: &mut BytesMut) {
        out.reserve(self.encoded_len());
        self.encode_parts(out, |out, b| out.put_slice(b));
    }

    /// The encoded form in pieces, for writers that send buffers as they are (vectored
    /// writes): the small headers go into `head`, and each of the batch's buffers is
    /// handed to `part` with `head`, in order, to copy or to send after what `head`
    /// holds so far.
    pub fn encode_parts(&self, head: &mut BytesMut, mut part: impl FnMut(&mut BytesMut, &Bytes)) {
        head.put_u32_le(self.len);
        head.put_u16_le(self.cols.len() as u16);
        for s in self.headers() {
            part(head, s);
        }
        for c in self.cols.iter() {
            head.put_u8(c.name.len() as u8);
            head.put_slice(c.name.as_bytes());
            part(head, &c.tags);
            part(head, &c.offsets);
            part(head, &c.data);
        }
    }

    /// The encoded form, in a buffer of its own.
    pub fn to_bytes(&self) -> Bytes {
        let mut out = BytesMut::with_capacity(self.encoded_len());
        self.encode(&mut out);
        out.freeze()
    }

    /// Number of records.
    pub fn len(&self) -> usize {
        self.len as usize
    }

    /// Whether the batch has no record.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Record `row` (below [`Batch::len`]).
    pub fn record(&self, row: usize) -> RecordRef<'_> {
        let (from, to) = (
            u32_at(&self.key_offsets, row) as usize,
            u32_at(&self.key_offsets, row + 1) as usize,
        );
        RecordRef {
            source: u32_at(&self.sources, row),
            seq: u64_at(&self.seqs, row),
            event_time_ms: u64_at(&self.times, row) as i64,
            key: &self.keys[from..to],
            batch: self,
            row,
        }
    }

    /// The records, in order.
    pub fn iter(&self) -> impl Iterator<Item = RecordRef<'_>> + '_ {
        (0..self.len()).map(|row| self.record(row))
    }

    /// Reads one field by name across the batch: the name is looked up once, not per
    /// record.
    pub fn field_reader(&self, name: &str) -> FieldReader<'_> {
        FieldReader {
            cols: self
                .cols
                .iter()
                .filter(|c| &*c.name == name)
                .collect::<Vec<_>>(),
        }
    }

    /// The same records with only the fields `keep` keeps, in their order: `None`
    /// drops a field, `Some(None)` keeps it as it is named, `Some(Some(to))` renames
    /// it. Shares every buffer: nothing is copied.
    pub fn project<'k>(&self, mut keep: impl FnMut(&str) -> Option<Option<&'k str>>) -> Batch {
        let cols: Vec<Column> = self
            .cols
            .iter()
            .filter_map(|c| {
                let to = keep(&c.name)?;
                let mut c = c.clone();
                if let Some(to) = to.filter(|to| *to != &*c.name) {
                    c.name = to.into();
                }
                Some(c)
            })
            .collect();
        Batch {
            cols: cols.into(),
            ..self.clone()
        }
    }

    /// The same records under new keys: `key` appends record `row`'s key to the buffer
    /// it is given. Only the keys are rebuilt; the fields and the other headers share
    /// this batch's buffers. Fails when a key, or all of them together, is too long
    /// for the format.
    pub fn with_keys(
        &self,
        mut key: impl FnMut(usize, &mut BytesMut),
    ) -> Result<Batch, BatchError> {
        let n = self.len();
        let mut keys = BytesMut::with_capacity(self.keys.len());
        let mut key_offsets = BytesMut::with_capacity((n + 1) * 4);
        key_offsets.put_u32_le(0);
        for row in 0..n {
            let from = keys.len();
            key(row, &mut keys);
            if keys.len() - from > usize::from(u16::MAX) {
                return Err(BatchError::TooLong("key"));
            }
            let end = u32::try_from(keys.len()).map_err(|_| BatchError::TooLong("keys"))?;
            key_offsets.put_u32_le(end);
        }
        Ok(Batch {
            key_offsets: key_offsets.freeze(),
            keys: keys.freeze(),
            ..self.clone()
        })
    }
}

/// One field of every record of a batch, looked up by name once
/// ([`Batch::field_reader`]).
#[derive(Debug)]
pub struct FieldReader<'a> {
    cols: Vec<&'a Column>,
}

impl<'a> FieldReader<'a> {
    /// Record `row`'s field (the first of that name it has), if it has one.
    pub fn get(&self, row: usize) -> Option<RawField<'a>> {
        self.cols.iter().find_map(|c| raw_field(c, row))
    }

    /// The columns of this name, in order.
    pub(super) fn cols(&self) -> &[&'a Column] {
        &self.cols
    }

    /// Whether the batch has no column of this name (then no record has the field).
    pub fn is_empty(&self) -> bool {
        self.cols.is_empty()
    }

    /// Every record's field as a number, in order, when the field is one column holding
    /// an integer in every record, or a float in every record (the usual shape of a
    /// numeric field); `None` otherwise. Read straight through, eight bytes a record.
    pub fn numbers(&self) -> Option<impl Iterator<Item = f64> + 'a> {
        let [c] = self.cols.as_slice() else {
            return None;
        };
        let tag = *c.tags.first()?;
        // A batch's payloads fit their tags, so a column of one numeric tag is eight
        // bytes a record; the length check keeps that true for any column given.
        if !matches!(tag, TAG_I64 | TAG_F64)
            || c.data.len() != c.tags.len() * 8
            || c.tags.iter().any(|&t| t != tag)
        {
            return None;
        }
        let c: &'a Column = c;
        let (words, _) = c.data.as_chunks::<8>();
        Some(
            words
                .iter()
                .map(move |w| word_number(tag, u64::from_le_bytes(*w))),
        )
    }

    /// The rows, in order, of the `len` records of the batch whose field `keep`
    /// accepts (given `None` where a record has none). With one column of that name
    /// (the usual case) it is read straight through.
    pub fn rows_where(
        &self,
        len: usize,
        mut keep: impl FnMut(Option<RawField<'a>>) -> bool,
    ) -> Vec<u32> {
        let [c] = self.cols.as_slice() else {
            return (0..len)
                .filter(|&row| keep(self.get(row)))
                .map(|row| row as u32)
                .collect();
        };
        let mut rows = Vec::with_capacity(len);
        let mut from = 0;
        for (row, (&tag, to)) in c
            .tags
            .iter()
            .zip(offset_values(&c.offsets).skip(1))
            .enumerate()
        {
            let to = to as usize;
            let f = (tag != ABSENT).then(|| RawField {
                name: &c.name,
                tag,
                payload: &c.data[from..to],
            });
            if keep(f) {
                rows.push(row as u32);
            }
            from = to;
        }
        rows
    }
}

fn raw_field(c: &Column, row: usize) -> Option<RawField<'_>> {
    let (tag, payload) = c.value(row);
    (tag != ABSENT).then_some(RawField {
        name: &c.name,
        tag,
        payload,
    })
}

/// One record of a batch, borrowed from it.
#[derive(Clone, Debug)]
pub struct RecordRef<'a> {
    /// Ordinal of the source PE that emitted it (within its app).
    pub source: u32,
    /// Its sequence number at that source.
    pub seq: u64,
    /// Event time, ms since the epoch.
    pub event_time_ms: i64,
    /// The record key.
    pub key: &'a [u8],
    batch: &'a Batch,
    row: usize,
}

impl PartialEq for RecordRef<'_> {
    /// Same header and the same fields in the same order.
    fn eq(&self, other: &Self) -> bool {
        (self.source, self.seq, self.event_time_ms, self.key)
            == (other.source, other.seq, other.event_time_ms, other.key)
            && self.raw_fields().eq(other.raw_fields())
    }
}

/// One field of a record as it is encoded: its name, its type tag and its payload,
/// borrowed from the batch. Reading names or copying fields through it allocates
/// nothing; [`RawField::decode`] decodes.
///
/// Only a batch makes one, so its payload always fits its tag:
/// [`super::BatchBuilder::push_raw_fields`] copies it without checking.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RawField<'a> {
    /// The field's name.
    pub name: &'a str,
    pub(super) tag: u8,
    pub(super) payload: &'a [u8],
}

/// The number an 8-byte payload of tag `TAG_I64` or `TAG_F64` holds.
#[inline]
fn word_number(tag: u8, word: u64) -> f64 {
    if tag == TAG_F64 {
        f64::from_bits(word)
    } else {
        word as i64 as f64
    }
}

impl<'a> RawField<'a> {
    /// The payload of an 8-byte value (integer or float) as a word.
    #[inline]
    fn word(&self) -> Option<u64> {
        let mut a = [0u8; 8];
        a.copy_from_slice(self.payload.get(..8)?);
        Some(u64::from_le_bytes(a))
    }

    /// The value as a number, when it is an integer or a float (nothing decoded
    /// otherwise).
    #[inline]
    pub fn number(&self) -> Option<f64> {
        match self.tag {
            TAG_I64 | TAG_F64 => self.word().map(|w| word_number(self.tag, w)),
            _ => None,
        }
    }

    /// The value, decoded. A batch's payloads fit their tags (checked or built so), so
    /// the fallbacks below are never taken.
    pub fn decode(&self) -> Value {
        let p = self.payload;
        match self.tag {
            TAG_BOOL => Value::Bool(p.first().is_some_and(|b| *b != 0)),
            TAG_I64 => Value::I64(self.word().unwrap_or(0) as i64),
            TAG_F64 => Value::F64(f64::from_bits(self.word().unwrap_or(0))),
            // Checked as UTF-8 when the batch was made: lossless.
            TAG_STR => Value::Str(String::from_utf8_lossy(p).into_owned()),
            TAG_BYTES => Value::Bytes(p.to_vec()),
            _ => Value::Null,
        }
    }
}

impl std::fmt::Display for RawField<'_> {
    /// The value's text, as [`Value`]'s `Display` writes it, without decoding text or
    /// bytes into a buffer of their own (a key or a hash input is made of it for every
    /// record).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.tag {
            TAG_STR | TAG_BYTES => f.write_str(&String::from_utf8_lossy(self.payload)),
            // Booleans, numbers and null decode without allocating.
            _ => self.decode().fmt(f),
        }
    }
}

impl<'a> RecordRef<'a> {
    /// The fields, decoded.
    pub fn fields(&self) -> impl Iterator<Item = (&'a str, Value)> + 'a {
        self.raw_fields().map(|f| (f.name, f.decode()))
    }

    /// The fields as they are encoded (nothing decoded, nothing allocated).
    pub fn raw_fields(&self) -> impl Iterator<Item = RawField<'a>> + 'a {
        let row = self.row;
        self.batch
            .cols
            .iter()
            .filter_map(move |c| raw_field(c, row))
    }

    /// One field by name; only that one is decoded.
    pub fn field(&self, name: &str) -> Option<Value> {
        self.raw_fields()
            .find(|f| f.name == name)
            .map(|f| f.decode())
    }
}

/// Takes checked pieces off the front of encoded bytes, sharing the buffer.
struct Checker {
    b: Bytes,
    at: usize,
}

impl Checker {
    fn take(&mut self, n: usize) -> Result<Bytes, BatchError> {
        let end = self
            .at
            .checked_add(n)
            .filter(|e| *e <= self.b.len())
            .ok_or(BatchError::Truncated(self.at))?;
        let s = self.b.slice(self.at..end);
        self.at = end;
        Ok(s)
    }

    /// `n` items of `width` bytes.
    fn take_n(&mut self, n: usize, width: usize) -> Result<Bytes, BatchError> {
        let len = n.checked_mul(width).ok_or(BatchError::Truncated(self.at))?;
        self.take(len)
    }

    fn u8(&mut self) -> Result<u8, BatchError> {
        Ok(self.take(1)?.get_u8())
    }

    fn u16(&mut self) -> Result<u16, BatchError> {
        Ok(self.take(2)?.get_u16_le())
    }

    fn u32(&mut self) -> Result<u32, BatchError> {
        Ok(self.take(4)?.get_u32_le())
    }

    /// An offset table for `n` records (starting at 0, never going back) and the data
    /// it indexes.
    fn offsets_and_data(&mut self, n: usize) -> Result<(Bytes, Bytes), BatchError> {
        let at = self.at;
        let offsets = self.take_n(n + 1, 4)?;
        // Checked without a branch per entry; the position is looked for only on error.
        let (ordered, last) = offset_values(&offsets)
            .fold((offsets[..4] == [0; 4], 0), |(ok, last), o| {
                (ok & (o >= last), o)
            });
        if !ordered {
            let mut prev = 0;
            let bad = offset_values(&offsets)
                .enumerate()
                .position(|(i, o)| {
                    let bad = (i == 0 && o != 0) || o < prev;
                    prev = o;
                    bad
                })
                .unwrap_or(0);
            return Err(BatchError::Offsets(at + 4 * bad));
        }
        let data = self.take(last as usize)?;
        Ok((offsets, data))
    }
}
