//! Expressions evaluated column by column: a `map`'s `set` and a `filter`'s `where`
//! compute one [`Vector`] per expression node for a whole batch, through typed kernels
//! ([`kernels`]), instead of one [`Value`] per record and node.
//!
//! A field of one type in every record (what sources produce: the generator, Nexmark,
//! and every computed column) is read as a typed array straight from the batch's
//! bytes; a field of mixed types, text, or present in only some records is read as
//! values, and any operation on values runs record by record through the same
//! definition ([`crate::ops::eval::call`]). So the answer is always the per-record
//! one ([`crate::ops::eval::eval`]): the tests below compare both on random batches
//! and expressions. Why our own kernels and not Apache Arrow's: docs/ARCHITECTURE.md,
//! "Vectorised expressions".

pub mod kernels;

use super::eval::{number, Implicit};
use weir_common::record::{Batch, FieldReader, NewColumn, Value};
use weir_common::spec::expr::{Expr, Func};

/// One value per record of a batch.
#[derive(Clone, Debug, PartialEq)]
pub enum Vector {
    /// Integers; `nulls[i]` marks record `i` null instead.
    I64(Vec<i64>, Option<Vec<bool>>),
    /// Floats, nulls as for `I64`.
    F64(Vec<f64>, Option<Vec<bool>>),
    /// Booleans, nulls as for `I64`.
    Bool(Vec<bool>, Option<Vec<bool>>),
    /// The same value for every record (a literal, or what literals compute).
    Const(Value),
    /// Any values, record by record.
    Values(Vec<Value>),
}

impl Vector {
    /// Record `i`'s value.
    pub fn get(&self, i: usize) -> Value {
        let null = |n: &Option<Vec<bool>>| n.as_ref().is_some_and(|n| n[i]);
        match self {
            Vector::I64(v, n) if !null(n) => Value::I64(v[i]),
            Vector::F64(v, n) if !null(n) => Value::F64(v[i]),
            Vector::Bool(v, n) if !null(n) => Value::Bool(v[i]),
            Vector::Const(c) => c.clone(),
            Vector::Values(v) => v[i].clone(),
            _ => Value::Null,
        }
    }

    /// The column to write for `n` records.
    pub fn into_column(self, n: usize) -> NewColumn {
        match self {
            Vector::I64(v, nulls) => NewColumn::I64(v, nulls),
            Vector::F64(v, nulls) => NewColumn::F64(v, nulls),
            Vector::Bool(v, nulls) => NewColumn::Bool(v, nulls),
            Vector::Const(Value::I64(i)) => NewColumn::I64(vec![i; n], None),
            Vector::Const(Value::F64(f)) => NewColumn::F64(vec![f; n], None),
            Vector::Const(Value::Bool(b)) => NewColumn::Bool(vec![b; n], None),
            Vector::Const(c) => NewColumn::Values(vec![c; n]),
            Vector::Values(v) => NewColumn::Values(v),
        }
    }
}

/// Where expressions find fields: `None` for a name that no field has (then `key` and
/// `ts` are the record's key and event time, anything else null).
pub trait Fields {
    /// The vector of field `name`, if the records have such a field.
    fn field(&self, name: &str) -> Option<Vector>;
}

/// A field of a batch as a vector: typed when one column holds one numeric type in
/// every record, else record by record (absent values as [`implicit`] gives them).
pub fn read(batch: &Batch, r: &FieldReader<'_>, name: &str) -> Vector {
    if let Some(v) = r.ints() {
        return Vector::I64(v, None);
    }
    if let Some(v) = r.floats() {
        return Vector::F64(v, None);
    }
    let part = Implicit::named(name);
    Vector::Values(
        (0..batch.len())
            .map(|row| match (r.get(row), part) {
                (Some(f), _) => f.decode(),
                (None, Some(p)) => p.value(&batch.record(row)),
                (None, None) => Value::Null,
            })
            .collect(),
    )
}

/// What a name that no field has stands for in every record of `batch`.
pub fn implicit(batch: &Batch, name: &str) -> Vector {
    match Implicit::named(name) {
        Some(Implicit::Ts) => Vector::I64(batch.event_times(), None),
        Some(p) => Vector::Values(batch.iter().map(|r| p.value(&r)).collect()),
        None => Vector::Const(Value::Null),
    }
}

/// The fields of a batch as they are (a filter's view).
pub struct BatchFields<'a>(pub &'a Batch);

impl Fields for BatchFields<'_> {
    fn field(&self, name: &str) -> Option<Vector> {
        let r = self.0.field_reader(name);
        (!r.is_empty()).then(|| read(self.0, &r, name))
    }
}

/// `e` over the `batch`'s records, fields found through `fields`.
pub fn eval(e: &Expr, batch: &Batch, fields: &dyn Fields) -> Vector {
    let n = batch.len();
    match e {
        Expr::Field(name) => fields.field(name).unwrap_or_else(|| implicit(batch, name)),
        Expr::Str(s) => Vector::Const(Value::Str(s.clone())),
        Expr::Int(i) => Vector::Const(Value::I64(*i)),
        Expr::Num(x) => Vector::Const(number(*x)),
        Expr::Bool(b) => Vector::Const(Value::Bool(*b)),
        Expr::Null => Vector::Const(Value::Null),
        Expr::Call(f, args) => {
            let a: Vec<Vector> = args.iter().map(|x| eval(x, batch, fields)).collect();
            call(*f, &a, n)
        }
        Expr::Cmp(op, a, b) => {
            let (a, b) = (eval(a, batch, fields), eval(b, batch, fields));
            match (&a, &b) {
                (Vector::Const(x), Vector::Const(y)) => {
                    Vector::Const(Value::Bool(super::eval::compare_values(x, *op, y)))
                }
                _ => kernels::cmp(*op, &a, &b, n),
            }
        }
        Expr::And(a, b) => {
            kernels::logic(true, &eval(a, batch, fields), &eval(b, batch, fields), n)
        }
        Expr::Or(a, b) => {
            kernels::logic(false, &eval(a, batch, fields), &eval(b, batch, fields), n)
        }
        Expr::Not(a) => kernels::not(&eval(a, batch, fields), n),
    }
}

/// A function over vectors: folded once when every argument is a constant, a typed
/// kernel for arithmetic, else record by record.
fn call(f: Func, a: &[Vector], n: usize) -> Vector {
    if a.iter().all(|v| matches!(v, Vector::Const(_))) {
        let values: Vec<Value> = a.iter().map(|v| v.get(0)).collect();
        return Vector::Const(super::eval::call(f, &values));
    }
    match (f, a) {
        (Func::Add | Func::Sub | Func::Mul | Func::Div | Func::Mod, [x, y]) => {
            kernels::arith(f, x, y, n)
        }
        _ => kernels::rowwise(f, &a.iter().collect::<Vec<_>>(), n),
    }
}

/// The rows of `batch` for which the predicate `e` is true, in order.
pub fn select(e: &Expr, batch: &Batch) -> Vec<u32> {
    let v = eval(e, batch, &BatchFields(batch));
    kernels::truths(&v, batch.len())
        .iter()
        .enumerate()
        .filter(|(_, keep)| **keep)
        .map(|(row, _)| row as u32)
        .collect()
}

#[cfg(test)]
mod tests;
