//! Whole columns in and out of a batch as typed arrays: what vectorised operators read
//! (a column of integers as `i64`s, not as one [`Value`] per record) and write (a
//! computed column next to the batch's other columns, which are shared, not copied).

use super::batch::{Column, ABSENT, TAG_BOOL, TAG_BYTES, TAG_F64, TAG_I64, TAG_NULL, TAG_STR};
use super::columns::even_offsets;
use super::{Batch, BatchError, FieldReader, Value};
use bytes::Bytes;
use std::sync::Arc;

/// A computed column: one value per record of the batch it goes into.
#[derive(Clone, Debug, PartialEq)]
pub enum NewColumn {
    /// Integers; `nulls[i]` marks record `i`'s value null instead.
    I64(Vec<i64>, Option<Vec<bool>>),
    /// Floats, with nulls as for `I64`.
    F64(Vec<f64>, Option<Vec<bool>>),
    /// Booleans, with nulls as for `I64`.
    Bool(Vec<bool>, Option<Vec<bool>>),
    /// Any values (mixed types, text).
    Values(Vec<Value>),
}

impl NewColumn {
    fn len(&self) -> usize {
        match self {
            NewColumn::I64(v, _) => v.len(),
            NewColumn::F64(v, _) => v.len(),
            NewColumn::Bool(v, _) => v.len(),
            NewColumn::Values(v) => v.len(),
        }
    }

    fn nulls(&self) -> Option<&[bool]> {
        match self {
            NewColumn::I64(_, n) | NewColumn::F64(_, n) | NewColumn::Bool(_, n) => n.as_deref(),
            NewColumn::Values(_) => None,
        }
    }
}

/// One column of a batch being rebuilt by [`Batch::with_columns`].
#[derive(Clone, Debug)]
pub enum OutColumn<'a> {
    /// Column `index` of the batch as it is (buffers shared), under `name`.
    Kept {
        /// Position among the batch's columns ([`Batch::column_names`]).
        index: usize,
        /// Its name in the new batch (its own, or a rename).
        name: &'a str,
    },
    /// Computed values.
    New {
        /// The field name.
        name: &'a str,
        /// One value per record.
        values: NewColumn,
    },
}

/// Fixed-width values with their nulls: (tags, offsets, data).
fn fixed<T: Copy, const W: usize>(
    values: &[T],
    nulls: Option<&[bool]>,
    tag: u8,
    bytes: impl Fn(T) -> [u8; W],
) -> Result<(Bytes, Bytes, Bytes), BatchError> {
    let n = values.len();
    let Some(nulls) = nulls.filter(|m| m.iter().any(|&x| x)) else {
        let mut data = vec![0u8; n * W];
        for (slot, v) in data.chunks_exact_mut(W).zip(values) {
            slot.copy_from_slice(&bytes(*v));
        }
        return Ok((vec![tag; n].into(), even_offsets(n, W)?, data.into()));
    };
    let mut tags = Vec::with_capacity(n);
    let mut offsets = Vec::with_capacity((n + 1) * 4);
    let mut data = Vec::with_capacity(n * W);
    offsets.extend_from_slice(&0u32.to_le_bytes());
    for (v, &null) in values.iter().zip(nulls) {
        if null {
            tags.push(TAG_NULL);
        } else {
            tags.push(tag);
            data.extend_from_slice(&bytes(*v));
        }
        let end = u32::try_from(data.len()).map_err(|_| BatchError::TooLong("column"))?;
        offsets.extend_from_slice(&end.to_le_bytes());
    }
    Ok((tags.into(), offsets.into(), data.into()))
}

/// Any values: (tags, offsets, data).
fn values(values: &[Value]) -> Result<(Bytes, Bytes, Bytes), BatchError> {
    let n = values.len();
    let mut tags = Vec::with_capacity(n);
    let mut offsets = Vec::with_capacity((n + 1) * 4);
    let mut data = Vec::with_capacity(n * 8);
    offsets.extend_from_slice(&0u32.to_le_bytes());
    for v in values {
        let tag = match v {
            Value::Null => TAG_NULL,
            Value::Bool(b) => {
                data.push(u8::from(*b));
                TAG_BOOL
            }
            Value::I64(i) => {
                data.extend_from_slice(&i.to_le_bytes());
                TAG_I64
            }
            Value::F64(f) => {
                data.extend_from_slice(&f.to_bits().to_le_bytes());
                TAG_F64
            }
            Value::Str(s) => {
                data.extend_from_slice(s.as_bytes());
                TAG_STR
            }
            Value::Bytes(b) => {
                data.extend_from_slice(b);
                TAG_BYTES
            }
        };
        tags.push(tag);
        let end = u32::try_from(data.len()).map_err(|_| BatchError::TooLong("column"))?;
        offsets.extend_from_slice(&end.to_le_bytes());
    }
    Ok((tags.into(), offsets.into(), data.into()))
}

impl NewColumn {
    /// The encoded column under `name`.
    fn encode(&self, name: &str) -> Result<Column, BatchError> {
        if name.len() > usize::from(u8::MAX) {
            return Err(BatchError::TooLong("field name"));
        }
        let nulls = self.nulls();
        let (tags, offsets, data) = match self {
            NewColumn::I64(v, _) => fixed(v, nulls, TAG_I64, i64::to_le_bytes)?,
            NewColumn::F64(v, _) => fixed(v, nulls, TAG_F64, |f: f64| f.to_bits().to_le_bytes())?,
            NewColumn::Bool(v, _) => fixed(v, nulls, TAG_BOOL, |b: bool| [u8::from(b)])?,
            NewColumn::Values(v) => values(v)?,
        };
        Ok(Column {
            name: name.into(),
            tags,
            offsets,
            data,
        })
    }
}

/// The 8-byte words of a column holding `tag` in every record, if it is one.
fn words<'a>(r: &FieldReader<'a>, tag: u8) -> Option<&'a [[u8; 8]]> {
    let [c] = r.cols() else { return None };
    // A batch's payloads fit their tags, so a column of one 8-byte tag is eight bytes
    // a record; the length check keeps that true for any column given.
    if c.tags.iter().any(|&t| t != tag) || c.data.len() != c.tags.len() * 8 {
        return None;
    }
    let (words, _) = c.data.as_chunks::<8>();
    Some(words)
}

impl<'a> FieldReader<'a> {
    /// Every record's field as an integer, when the field is one column holding an
    /// integer in every record (the usual shape of a numeric field); `None` otherwise.
    pub fn ints(&self) -> Option<Vec<i64>> {
        let w = words(self, TAG_I64)?;
        Some(w.iter().map(|w| i64::from_le_bytes(*w)).collect())
    }

    /// Every record's field as a float, when the field is one column holding a float
    /// in every record; `None` otherwise.
    pub fn floats(&self) -> Option<Vec<f64>> {
        let w = words(self, TAG_F64)?;
        Some(w.iter().map(|w| f64::from_le_bytes(*w)).collect())
    }
}

impl Batch {
    /// The names of the batch's columns, in order (a name may appear twice: a record
    /// with two fields of one name fills two columns).
    pub fn column_names(&self) -> impl Iterator<Item = &str> + '_ {
        self.cols.iter().map(|c| &*c.name)
    }

    /// Whether every record has a value (null included) in column `index`.
    pub fn column_complete(&self, index: usize) -> bool {
        self.cols
            .get(index)
            .is_some_and(|c| !c.tags.contains(&ABSENT))
    }

    /// Every record's event time, in order.
    pub fn event_times(&self) -> Vec<i64> {
        let (words, _) = self.times.as_chunks::<8>();
        words.iter().map(|w| i64::from_le_bytes(*w)).collect()
    }

    /// The same records with these columns, in this order: kept ones share this
    /// batch's buffers, new ones are encoded. Fails when a new column has another
    /// length than the batch, an index is out of range, or a part is too long for the
    /// format.
    pub fn with_columns(&self, out: Vec<OutColumn<'_>>) -> Result<Batch, BatchError> {
        let n = self.len();
        if out.len() > usize::from(u16::MAX) {
            return Err(BatchError::TooLong("field list"));
        }
        let mut cols = Vec::with_capacity(out.len());
        for c in out {
            cols.push(match c {
                OutColumn::Kept { index, name } => {
                    let mut c = self
                        .cols
                        .get(index)
                        .ok_or(BatchError::Shape {
                            columns: self.cols.len(),
                            values: index,
                        })?
                        .clone();
                    if *c.name != *name {
                        if name.len() > usize::from(u8::MAX) {
                            return Err(BatchError::TooLong("field name"));
                        }
                        c.name = Arc::from(name);
                    }
                    c
                }
                OutColumn::New { name, values } => {
                    if values.len() != n || values.nulls().is_some_and(|m| m.len() != n) {
                        return Err(BatchError::Shape {
                            columns: n,
                            values: values.len(),
                        });
                    }
                    values.encode(name)?
                }
            });
        }
        Ok(Batch {
            cols: cols.into(),
            ..self.clone()
        })
    }
}
