//! The row layout: records one after another, each with its fields. It is what exec
//! PEs speak in framed mode (docs/pe-protocol.md), simpler for a program to read and
//! write than the columnar layout the data plane carries.
//!
//! ```text
//! u32 record count
//! per record:
//!   u32 source | u64 seq | i64 event_time_ms | u16 key_len | key bytes | u16 field count
//!   per field: u8 name_len | name bytes (UTF-8) | u8 tag | value
//!     tag 0 null | 1 bool (u8) | 2 i64 | 3 f64 | 4 str (u32 len + UTF-8) | 5 bytes (u32 len + bytes)
//! ```

use super::batch::{RawField, TAG_BOOL, TAG_BYTES, TAG_F64, TAG_I64, TAG_NULL, TAG_STR};
use super::{Batch, BatchBuilder, BatchError};

impl Batch {
    /// Reads a batch in the row layout, checking every length, tag and text.
    pub fn from_rows(b: &[u8]) -> Result<Batch, BatchError> {
        let mut c = Cursor { b, at: 0 };
        let len = c.u32()?;
        let mut out = BatchBuilder::with_capacity(b.len());
        let mut fields = Vec::new();
        for _ in 0..len {
            let source = c.u32()?;
            let seq = c.u64()?;
            let event_time_ms = c.u64()? as i64;
            let key_len = c.u16()? as usize;
            let key = c.take(key_len)?;
            let count = c.u16()?;
            fields.clear();
            for _ in 0..count {
                fields.push(c.field()?);
            }
            out.push_raw_fields(
                source,
                seq,
                event_time_ms,
                key,
                fields.iter().map(|f| (f.name, *f)),
            )?;
        }
        if c.at != b.len() {
            return Err(BatchError::Trailing(b.len() - c.at));
        }
        Ok(out.finish())
    }

    /// Appends the batch in the row layout to `out`.
    pub fn encode_rows(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.len.to_le_bytes());
        for r in self.iter() {
            out.extend_from_slice(&r.source.to_le_bytes());
            out.extend_from_slice(&r.seq.to_le_bytes());
            out.extend_from_slice(&r.event_time_ms.to_le_bytes());
            // Keys, names and field counts were bounded when the batch was made.
            out.extend_from_slice(&(r.key.len() as u16).to_le_bytes());
            out.extend_from_slice(r.key);
            let count_at = out.len();
            out.extend_from_slice(&[0, 0]);
            let mut count: u16 = 0;
            for f in r.raw_fields() {
                out.push(f.name.len() as u8);
                out.extend_from_slice(f.name.as_bytes());
                out.push(f.tag);
                if matches!(f.tag, TAG_STR | TAG_BYTES) {
                    out.extend_from_slice(&(f.payload.len() as u32).to_le_bytes());
                }
                out.extend_from_slice(f.payload);
                count = count.wrapping_add(1);
            }
            out[count_at..count_at + 2].copy_from_slice(&count.to_le_bytes());
        }
    }
}

struct Cursor<'a> {
    b: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
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
        std::str::from_utf8(self.take(n)?).map_err(|_| BatchError::Utf8(at))
    }

    /// One field, checked (tag, lengths, UTF-8).
    fn field(&mut self) -> Result<RawField<'a>, BatchError> {
        let n = self.u8()? as usize;
        let name = self.str(n)?;
        let at = self.at;
        let tag = self.u8()?;
        let payload = match tag {
            TAG_NULL => &[][..],
            TAG_BOOL => self.take(1)?,
            TAG_I64 | TAG_F64 => self.take(8)?,
            TAG_STR => {
                let n = self.u32()? as usize;
                self.str(n)?.as_bytes()
            }
            TAG_BYTES => {
                let n = self.u32()? as usize;
                self.take(n)?
            }
            tag => return Err(BatchError::BadTag { tag, at }),
        };
        Ok(RawField { name, tag, payload })
    }
}
