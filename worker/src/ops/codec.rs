//! The little-endian binary encoding of kernel state snapshots.
//!
//! Every snapshot starts with a version byte and a kind byte, so a snapshot handed to the
//! wrong kernel, or written by a future format, is refused instead of misread. Reading
//! checks every length against what is left, so malformed bytes give a [`StateError`],
//! never a panic or a huge allocation.

use super::StateError;

/// The snapshot format version this build writes and reads.
pub const VERSION: u8 = 1;

/// Writes a snapshot.
#[derive(Clone, Debug, Default)]
pub struct Enc(pub Vec<u8>);

impl Enc {
    /// A snapshot of `kind`, header written.
    pub fn new(kind: u8) -> Self {
        Self(vec![VERSION, kind])
    }

    /// One byte.
    pub fn u8(&mut self, v: u8) {
        self.0.push(v);
    }

    /// A `u32`.
    pub fn u32(&mut self, v: u32) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }

    /// A `u64`.
    pub fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }

    /// An `i64`.
    pub fn i64(&mut self, v: i64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }

    /// `None` as a 0 byte, `Some(v)` as a 1 byte and `v`.
    pub fn opt_i64(&mut self, v: Option<i64>) {
        match v {
            None => self.u8(0),
            Some(v) => {
                self.u8(1);
                self.i64(v);
            }
        }
    }

    /// Length-prefixed bytes.
    pub fn bytes(&mut self, b: &[u8]) {
        // Keys come from batches (u16 lengths), so u32 always holds them.
        self.u32(u32::try_from(b.len()).unwrap_or(u32::MAX));
        self.0.extend_from_slice(b);
    }
}

/// Reads a snapshot.
#[derive(Debug)]
pub struct Dec<'a> {
    b: &'a [u8],
    at: usize,
}

impl<'a> Dec<'a> {
    /// Checks the header: version, then that the kind byte is `kind` (`name` for errors).
    pub fn new(b: &'a [u8], kind: u8, name: &'static str) -> Result<Self, StateError> {
        let mut d = Self { b, at: 0 };
        let version = d.u8()?;
        if version != VERSION {
            return Err(StateError::Version(version));
        }
        let found = d.u8()?;
        if found != kind {
            return Err(StateError::WrongKind {
                expected: name,
                found: format!("kind byte {found:#04x}"),
            });
        }
        Ok(d)
    }

    /// Current offset, for error messages.
    pub fn at(&self) -> usize {
        self.at
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], StateError> {
        let end = self
            .at
            .checked_add(n)
            .filter(|e| *e <= self.b.len())
            .ok_or(StateError::Truncated(self.at))?;
        let s = &self.b[self.at..end];
        self.at = end;
        Ok(s)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], StateError> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }

    /// One byte.
    pub fn u8(&mut self) -> Result<u8, StateError> {
        Ok(self.take(1)?[0])
    }

    /// A `u32`.
    pub fn u32(&mut self) -> Result<u32, StateError> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    /// A `u64`.
    pub fn u64(&mut self) -> Result<u64, StateError> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    /// An `i64`.
    pub fn i64(&mut self) -> Result<i64, StateError> {
        Ok(i64::from_le_bytes(self.array()?))
    }

    /// An `f64`.
    pub fn f64(&mut self) -> Result<f64, StateError> {
        Ok(f64::from_bits(self.u64()?))
    }

    /// A 0/1 byte as a bool; anything else is invalid.
    pub fn bool(&mut self) -> Result<bool, StateError> {
        let at = self.at;
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(StateError::Invalid {
                what: "flag not 0 or 1",
                at,
            }),
        }
    }

    /// What [`Enc::opt_i64`] wrote.
    pub fn opt_i64(&mut self) -> Result<Option<i64>, StateError> {
        Ok(if self.bool()? {
            Some(self.i64()?)
        } else {
            None
        })
    }

    /// What [`Enc::bytes`] wrote, borrowed.
    pub fn bytes(&mut self) -> Result<&'a [u8], StateError> {
        let n = self.u32()? as usize;
        self.take(n)
    }

    /// Skips `n` bytes (checked against the bytes left).
    pub fn skip(&mut self, n: u64) -> Result<(), StateError> {
        let n = usize::try_from(n).map_err(|_| StateError::Truncated(self.at))?;
        self.take(n).map(|_| ())
    }

    /// A count of items each at least `min_item` bytes long: checked against the bytes
    /// left, so a corrupt count cannot make the reader reserve a huge vector.
    pub fn count(&mut self, min_item: usize) -> Result<usize, StateError> {
        let at = self.at;
        let n = usize::try_from(self.u64()?).map_err(|_| StateError::Invalid {
            what: "count too large",
            at,
        })?;
        if n.checked_mul(min_item.max(1))
            .is_none_or(|need| need > self.b.len() - self.at)
        {
            return Err(StateError::Truncated(self.b.len()));
        }
        Ok(n)
    }

    /// Fails unless every byte was read.
    pub fn finish(self) -> Result<(), StateError> {
        match self.b.len() - self.at {
            0 => Ok(()),
            n => Err(StateError::Trailing(n)),
        }
    }
}
