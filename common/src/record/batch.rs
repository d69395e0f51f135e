//! Building and reading batches.

use super::Value;
use bytes::{BufMut, Bytes, BytesMut};

const TAG_NULL: u8 = 0;
const TAG_BOOL: u8 = 1;
const TAG_I64: u8 = 2;
const TAG_F64: u8 = 3;
const TAG_STR: u8 = 4;
const TAG_BYTES: u8 = 5;

/// Why bytes are not a valid batch.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BatchError {
    /// The buffer ends inside a record.
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
    /// Bytes remain after the last record.
    #[error("{0} trailing bytes after the last record")]
    Trailing(usize),
    /// A key, name or value is longer than its length prefix allows.
    #[error("{0} too long for the batch format")]
    TooLong(&'static str),
}

/// An immutable batch of records. Cloning shares the buffer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Batch {
    bytes: Bytes,
    len: u32,
}

impl Batch {
    /// Checks `bytes` end to end and wraps them: afterwards every read succeeds.
    pub fn from_bytes(bytes: Bytes) -> Result<Self, BatchError> {
        let mut c = Cursor::checking(&bytes, 0);
        let len = c.u32()?;
        for _ in 0..len {
            c.record()?;
        }
        if c.at != bytes.len() {
            return Err(BatchError::Trailing(bytes.len() - c.at));
        }
        Ok(Self { bytes, len })
    }

    /// The encoded form (what a frame carries).
    pub fn bytes(&self) -> &Bytes {
        &self.bytes
    }

    /// Number of records.
    pub fn len(&self) -> usize {
        self.len as usize
    }

    /// Whether the batch has no record.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The records, parsed as they are visited.
    pub fn iter(&self) -> impl Iterator<Item = RecordRef<'_>> + '_ {
        let mut c = Cursor::trusting(&self.bytes, 4);
        (0..self.len).map(move |_| {
            c.record()
                .expect("validated in from_bytes or built by BatchBuilder")
        })
    }
}

/// One record of a batch, borrowed from its buffer.
#[derive(Clone, Debug, PartialEq)]
pub struct RecordRef<'a> {
    /// Ordinal of the source PE that emitted it (within its app).
    pub source: u32,
    /// Its sequence number at that source.
    pub seq: u64,
    /// Event time, ms since the epoch.
    pub event_time_ms: i64,
    /// The record key.
    pub key: &'a [u8],
    fields: &'a [u8],
    field_count: u16,
    raw: &'a [u8],
}

/// One field of a record as it is encoded: its name and its value's bytes (type tag
/// and payload), borrowed from the batch. Reading names or copying fields through it
/// allocates nothing; [`RawField::decode`] decodes.
///
/// Only a batch makes one (the value is private), so its bytes are always a valid
/// encoded value: [`BatchBuilder::push_raw_fields`] copies them without checking.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RawField<'a> {
    /// The field's name.
    pub name: &'a str,
    value: &'a [u8],
}

impl<'a> RawField<'a> {
    /// The encoded value: tag byte, then payload.
    pub fn value_bytes(&self) -> &'a [u8] {
        self.value
    }

    /// The value, decoded.
    pub fn decode(&self) -> Value {
        Cursor::trusting(self.value, 0).value().expect("validated")
    }
}

impl<'a> RecordRef<'a> {
    /// The fields, decoded.
    pub fn fields(&self) -> impl Iterator<Item = (&'a str, Value)> + 'a {
        self.raw_fields().map(|f| (f.name, f.decode()))
    }

    /// The fields as they are encoded (nothing decoded, nothing allocated).
    pub fn raw_fields(&self) -> impl Iterator<Item = RawField<'a>> + 'a {
        let mut c = Cursor::trusting(self.fields, 0);
        (0..self.field_count).map(move |_| c.raw_field().expect("validated"))
    }

    /// One field by name; only that one is decoded.
    pub fn field(&self, name: &str) -> Option<Value> {
        self.raw_fields()
            .find(|f| f.name == name)
            .map(|f| f.decode())
    }

    /// The record's encoded bytes, exactly as they sit in the batch.
    pub fn raw(&self) -> &'a [u8] {
        self.raw
    }
}

struct Cursor<'a> {
    b: &'a [u8],
    at: usize,
    /// The bytes are known valid: they belong to a [`Batch`], which is checked end to
    /// end when made from bytes ([`Batch::from_bytes`]) and valid by construction when
    /// built ([`BatchBuilder`] writes `&str`s and values taken from batches). Text is
    /// then not checked for UTF-8 again on every pass: re-checking the names of every
    /// field, on every pass of every operator, was the largest single cost in the data
    /// plane profile. Lengths and tags are still checked, so a broken invariant gives
    /// an error (and a panic at the `expect`), never a read out of bounds.
    trusted: bool,
}

impl<'a> Cursor<'a> {
    /// A cursor that checks everything (bytes from outside).
    fn checking(b: &'a [u8], at: usize) -> Self {
        Self {
            b,
            at,
            trusted: false,
        }
    }

    /// A cursor over bytes of a [`Batch`] (see `trusted`).
    fn trusting(b: &'a [u8], at: usize) -> Self {
        Self {
            b,
            at,
            trusted: true,
        }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], BatchError> {
        let end = self
            .at
            .checked_add(n)
            .filter(|e| *e <= self.b.len())
            .ok_or(BatchError::Truncated(self.at))?;
        let s = &self.b[self.at..end];
        self.at = end;
        Ok(s)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], BatchError> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }

    fn u8(&mut self) -> Result<u8, BatchError> {
        Ok(self.take(1)?[0])
    }

    fn u16(&mut self) -> Result<u16, BatchError> {
        Ok(u16::from_le_bytes(self.array()?))
    }

    fn u32(&mut self) -> Result<u32, BatchError> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    fn u64(&mut self) -> Result<u64, BatchError> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    fn str(&mut self, n: usize) -> Result<&'a str, BatchError> {
        let at = self.at;
        let bytes = self.take(n)?;
        if self.trusted {
            // SAFETY: trusted cursors only read bytes of a `Batch`, whose text was
            // checked as UTF-8 by `Batch::from_bytes` or written from `&str` by
            // `BatchBuilder` (see `Cursor::trusted`); `take` bounded the slice.
            return Ok(unsafe { std::str::from_utf8_unchecked(bytes) });
        }
        std::str::from_utf8(bytes).map_err(|_| BatchError::Utf8(at))
    }

    fn record(&mut self) -> Result<RecordRef<'a>, BatchError> {
        let begin = self.at;
        let source = self.u32()?;
        let seq = self.u64()?;
        let event_time_ms = self.u64()? as i64;
        let key_len = self.u16()? as usize;
        let key = self.take(key_len)?;
        let field_count = self.u16()?;
        let start = self.at;
        for _ in 0..field_count {
            self.raw_field()?;
        }
        Ok(RecordRef {
            source,
            seq,
            event_time_ms,
            key,
            fields: &self.b[start..self.at],
            field_count,
            raw: &self.b[begin..self.at],
        })
    }

    /// Steps over one field, checking it (tag, lengths, UTF-8) without decoding it.
    fn raw_field(&mut self) -> Result<RawField<'a>, BatchError> {
        let n = self.u8()? as usize;
        let name = self.str(n)?;
        let begin = self.at;
        match self.u8()? {
            TAG_NULL => {}
            TAG_BOOL => {
                self.take(1)?;
            }
            TAG_I64 | TAG_F64 => {
                self.take(8)?;
            }
            TAG_STR => {
                let n = self.u32()? as usize;
                self.str(n)?;
            }
            TAG_BYTES => {
                let n = self.u32()? as usize;
                self.take(n)?;
            }
            tag => return Err(BatchError::BadTag { tag, at: begin }),
        }
        Ok(RawField {
            name,
            value: &self.b[begin..self.at],
        })
    }

    /// Decodes one value (tag and payload).
    fn value(&mut self) -> Result<Value, BatchError> {
        let at = self.at;
        Ok(match self.u8()? {
            TAG_NULL => Value::Null,
            TAG_BOOL => Value::Bool(self.u8()? != 0),
            TAG_I64 => Value::I64(self.u64()? as i64),
            TAG_F64 => Value::F64(f64::from_bits(self.u64()?)),
            TAG_STR => {
                let n = self.u32()? as usize;
                Value::Str(self.str(n)?.to_string())
            }
            TAG_BYTES => {
                let n = self.u32()? as usize;
                Value::Bytes(self.take(n)?.to_vec())
            }
            tag => return Err(BatchError::BadTag { tag, at }),
        })
    }
}

/// Builds a batch record by record.
#[derive(Debug)]
pub struct BatchBuilder {
    buf: BytesMut,
    len: u32,
}

impl Default for BatchBuilder {
    fn default() -> Self {
        Self::with_capacity(4096)
    }
}

impl BatchBuilder {
    /// A builder with `bytes` of room before it grows.
    pub fn with_capacity(bytes: usize) -> Self {
        let mut buf = BytesMut::with_capacity(bytes.max(4));
        buf.put_u32_le(0);
        Self { buf, len: 0 }
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
        self.push_with(source, seq, event_time_ms, key, fields, |b, (n, v)| {
            b.put_field(n, v)
        })
    }

    /// Appends one record whose fields are copied as they are encoded, each under the
    /// name given with it (a rename, or its own): a projection or rename decodes
    /// nothing.
    pub fn push_raw_fields<'f>(
        &mut self,
        source: u32,
        seq: u64,
        event_time_ms: i64,
        key: &[u8],
        fields: impl IntoIterator<Item = (&'f str, RawField<'f>)>,
    ) -> Result<(), BatchError> {
        self.push_with(source, seq, event_time_ms, key, fields, |b, (n, raw)| {
            b.put_name(n)?;
            b.buf.put_slice(raw.value);
            Ok(())
        })
    }

    /// The record header, then every field through `put`; all or nothing.
    fn push_with<F>(
        &mut self,
        source: u32,
        seq: u64,
        event_time_ms: i64,
        key: &[u8],
        fields: impl IntoIterator<Item = F>,
        mut put: impl FnMut(&mut Self, F) -> Result<(), BatchError>,
    ) -> Result<(), BatchError> {
        let key_len = u16::try_from(key.len()).map_err(|_| BatchError::TooLong("key"))?;
        let mark = self.buf.len();
        self.buf.put_u32_le(source);
        self.buf.put_u64_le(seq);
        self.buf.put_i64_le(event_time_ms);
        self.buf.put_u16_le(key_len);
        self.buf.put_slice(key);
        let count_at = self.buf.len();
        self.buf.put_u16_le(0);
        let mut count: u16 = 0;
        for f in fields {
            let next = count
                .checked_add(1)
                .ok_or(BatchError::TooLong("field list"));
            if let Err(e) = next.and_then(|c| put(self, f).map(|()| c)) {
                self.buf.truncate(mark);
                return Err(e);
            }
            count += 1;
        }
        self.buf[count_at..count_at + 2].copy_from_slice(&count.to_le_bytes());
        self.len += 1;
        Ok(())
    }

    fn put_name(&mut self, name: &str) -> Result<(), BatchError> {
        let n = u8::try_from(name.len()).map_err(|_| BatchError::TooLong("field name"))?;
        self.buf.put_u8(n);
        self.buf.put_slice(name.as_bytes());
        Ok(())
    }

    fn put_field(&mut self, name: &str, value: &Value) -> Result<(), BatchError> {
        self.put_name(name)?;
        match value {
            Value::Null => self.buf.put_u8(TAG_NULL),
            Value::Bool(b) => {
                self.buf.put_u8(TAG_BOOL);
                self.buf.put_u8(u8::from(*b));
            }
            Value::I64(i) => {
                self.buf.put_u8(TAG_I64);
                self.buf.put_i64_le(*i);
            }
            Value::F64(f) => {
                self.buf.put_u8(TAG_F64);
                self.buf.put_u64_le(f.to_bits());
            }
            Value::Str(s) => {
                self.buf.put_u8(TAG_STR);
                self.buf
                    .put_u32_le(u32::try_from(s.len()).map_err(|_| BatchError::TooLong("string"))?);
                self.buf.put_slice(s.as_bytes());
            }
            Value::Bytes(b) => {
                self.buf.put_u8(TAG_BYTES);
                self.buf
                    .put_u32_le(u32::try_from(b.len()).map_err(|_| BatchError::TooLong("bytes"))?);
                self.buf.put_slice(b);
            }
        }
        Ok(())
    }

    /// Appends a record of another batch as it is, without decoding its fields: the
    /// cheap path for partitioning, which only splits batches.
    pub fn push_raw(&mut self, r: &RecordRef<'_>) {
        self.buf.put_slice(r.raw);
        self.len += 1;
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
        self.buf.len()
    }

    /// The finished batch; the builder starts over empty.
    pub fn finish(&mut self) -> Batch {
        let capacity = self.buf.capacity().max(4);
        let mut buf = std::mem::replace(&mut self.buf, BytesMut::with_capacity(capacity));
        buf[0..4].copy_from_slice(&self.len.to_le_bytes());
        let len = std::mem::take(&mut self.len);
        self.buf.put_u32_le(0);
        Batch {
            bytes: buf.freeze(),
            len,
        }
    }
}
