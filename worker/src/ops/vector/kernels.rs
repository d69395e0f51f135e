//! Typed kernels: one operation over whole columns of numbers, with the semantics of
//! [`call`] and [`compare_values`] record by record (the unit tests hold them to it).
//!
//! Integer arithmetic is checked: overflow and division by zero give null. Float
//! results that are not finite give null. A null input gives a null output
//! (arithmetic) or `false` (comparisons, except `!=`, which holds). Anything that is
//! not numbers on both sides goes through [`rowwise`], the per-record definition.

use super::Vector;
use crate::ops::eval::{call, compare_values, holds, truth};
use weir_common::record::Value;
use weir_common::spec::expr::Func;
use weir_common::spec::CmpOp;

/// A numeric input: a column or one value for every record.
#[derive(Clone, Copy)]
enum Num<'a, T> {
    Col(&'a [T]),
    One(T),
}

/// Both inputs of a numeric kernel, as integers or (one side being a float) floats.
enum Pair<'a> {
    Ints(Num<'a, i64>, Num<'a, i64>),
    Floats(Vec<f64>, Vec<f64>),
}

/// The nulls of a column, if it has any.
fn nulls_of(v: &Vector) -> Option<&[bool]> {
    match v {
        Vector::I64(_, n) | Vector::F64(_, n) | Vector::Bool(_, n) => n.as_deref(),
        _ => None,
    }
}

/// `a` or `b` null, record by record; `None` when neither has nulls.
fn either_null(a: Option<&[bool]>, b: Option<&[bool]>) -> Option<Vec<bool>> {
    match (a, b) {
        (None, None) => None,
        (Some(x), None) | (None, Some(x)) => Some(x.to_vec()),
        (Some(x), Some(y)) => Some(x.iter().zip(y).map(|(p, q)| *p | *q).collect()),
    }
}

/// A vector as floats over `n` records, when it is numeric.
fn floats(v: &Vector, n: usize) -> Option<Vec<f64>> {
    Some(match v {
        Vector::I64(x, _) => x.iter().map(|&i| i as f64).collect(),
        Vector::F64(x, _) => x.clone(),
        Vector::Const(Value::I64(i)) => vec![*i as f64; n],
        Vector::Const(Value::F64(f)) => vec![*f; n],
        _ => return None,
    })
}

fn ints(v: &Vector) -> Option<Num<'_, i64>> {
    match v {
        Vector::I64(x, _) => Some(Num::Col(x)),
        Vector::Const(Value::I64(i)) => Some(Num::One(*i)),
        _ => None,
    }
}

/// How two vectors meet as numbers, if they both are numbers (and not both constants,
/// which [`super::eval`] folds record-free).
fn pair<'a>(a: &'a Vector, b: &'a Vector, n: usize) -> Option<Pair<'a>> {
    if let (Some(x), Some(y)) = (ints(a), ints(b)) {
        return Some(Pair::Ints(x, y));
    }
    Some(Pair::Floats(floats(a, n)?, floats(b, n)?))
}

/// `f` over every record's pair of integers: the value and whether it is null.
/// Branch-free per record (the flag is a value, not a branch), so the loops
/// vectorise: 3-5x the `checked_*` loop with a pushed mask (docs/ARCHITECTURE.md).
fn zip_ints(
    a: Num<'_, i64>,
    b: Num<'_, i64>,
    n: usize,
    f: impl Fn(i64, i64) -> (i64, bool),
) -> (Vec<i64>, Vec<bool>) {
    let (out, null): (Vec<i64>, Vec<bool>) = match (a, b) {
        (Num::Col(x), Num::Col(y)) => x.iter().zip(y).map(|(p, q)| f(*p, *q)).unzip(),
        (Num::Col(x), Num::One(q)) => x.iter().map(|p| f(*p, q)).unzip(),
        (Num::One(p), Num::Col(y)) => y.iter().map(|q| f(p, *q)).unzip(),
        (Num::One(p), Num::One(q)) => (0..n).map(|_| f(p, q)).unzip(),
    };
    (out, null)
}

/// `x mod d` or `x / d` for a column and a constant divisor that can neither be zero
/// nor overflow (`d` not 0 or -1): no nulls, and the common divisors are compiled as
/// constants, which turns the division into a multiplication (2x, measured).
fn by_constant(f: Func, x: &[i64], d: i64) -> Option<Vec<i64>> {
    macro_rules! with_constants {
        ($($k:literal)*) => {
            match (f, d) {
                $((Func::Mod, $k) => Some(x.iter().map(|v| v.rem_euclid($k)).collect()),)*
                $((Func::Div, $k) => Some(x.iter().map(|v| v / $k).collect()),)*
                (Func::Mod, _) => Some(x.iter().map(|v| v.rem_euclid(d)).collect()),
                (Func::Div, _) => Some(x.iter().map(|v| v / d).collect()),
                _ => None,
            }
        };
    }
    if d == 0 || d == -1 {
        return None;
    }
    with_constants!(2 4 8 10 16 100 1000 10000 1000000)
}

/// Checked integer `f` as (value, null), float `g`, as [`call`] defines `Add` ...
/// `Mod`.
#[allow(clippy::type_complexity)]
fn int_and_float(f: Func) -> Option<(fn(i64, i64) -> (i64, bool), fn(f64, f64) -> f64)> {
    Some(match f {
        Func::Add => (i64::overflowing_add, |x, y| x + y),
        Func::Sub => (i64::overflowing_sub, |x, y| x - y),
        Func::Mul => (i64::overflowing_mul, |x, y| x * y),
        Func::Div => (
            |x, y| x.checked_div(y).map_or((0, true), |v| (v, false)),
            |x, y| x / y,
        ),
        Func::Mod => (
            |x, y| x.checked_rem_euclid(y).map_or((0, true), |v| (v, false)),
            |x, y| x.rem_euclid(y),
        ),
        _ => return None,
    })
}

/// Merges computed nulls with the inputs' and drops the mask when nothing is null.
fn mask(computed: Vec<bool>, inputs: Option<Vec<bool>>) -> Option<Vec<bool>> {
    let merged = match inputs {
        Some(mut m) => {
            m.iter_mut().zip(&computed).for_each(|(a, b)| *a |= *b);
            m
        }
        None => computed,
    };
    merged.contains(&true).then_some(merged)
}

/// `f(a, b)` for an arithmetic function over `n` records.
pub fn arith(f: Func, a: &Vector, b: &Vector, n: usize) -> Vector {
    let (Some((int, float)), Some(p)) = (int_and_float(f), pair(a, b, n)) else {
        return rowwise(f, &[a, b], n);
    };
    let inputs = either_null(nulls_of(a), nulls_of(b));
    match p {
        Pair::Ints(Num::Col(x), Num::One(d)) if inputs.is_none() => match by_constant(f, x, d) {
            Some(v) => Vector::I64(v, None),
            None => {
                let (v, null) = zip_ints(Num::Col(x), Num::One(d), n, int);
                Vector::I64(v, mask(null, None))
            }
        },
        Pair::Ints(x, y) => {
            let (v, null) = zip_ints(x, y, n, int);
            Vector::I64(v, mask(null, inputs))
        }
        Pair::Floats(x, y) => {
            let v: Vec<f64> = x.iter().zip(&y).map(|(p, q)| float(*p, *q)).collect();
            let null = v.iter().map(|r| !r.is_finite()).collect();
            Vector::F64(v, mask(null, inputs))
        }
    }
}

/// `a op b` over `n` records: booleans, never null.
pub fn cmp(op: CmpOp, a: &Vector, b: &Vector, n: usize) -> Vector {
    if op == CmpOp::Contains {
        return rowwise_cmp(op, a, b, n);
    }
    let Some(p) = pair(a, b, n) else {
        return rowwise_cmp(op, a, b, n);
    };
    let mut out: Vec<bool> = match p {
        Pair::Ints(x, y) => {
            let test = |p: i64, q: i64| holds(p.cmp(&q), op);
            match (x, y) {
                (Num::Col(x), Num::Col(y)) => x.iter().zip(y).map(|(p, q)| test(*p, *q)).collect(),
                (Num::Col(x), Num::One(q)) => x.iter().map(|p| test(*p, q)).collect(),
                (Num::One(p), Num::Col(y)) => y.iter().map(|q| test(p, *q)).collect(),
                (Num::One(p), Num::One(q)) => vec![test(p, q); n],
            }
        }
        Pair::Floats(x, y) => x
            .iter()
            .zip(&y)
            .map(|(p, q)| p.partial_cmp(q).is_some_and(|o| holds(o, op)))
            .collect(),
    };
    if let Some(null) = either_null(nulls_of(a), nulls_of(b)) {
        let when_null = op == CmpOp::Ne;
        out.iter_mut()
            .zip(&null)
            .filter(|(_, n)| **n)
            .for_each(|(o, _)| *o = when_null);
    }
    Vector::Bool(out, None)
}

/// Every record's truth ([`truth`]): only a non-null `true` counts.
pub fn truths(v: &Vector, n: usize) -> Vec<bool> {
    match v {
        Vector::Bool(b, None) => b.clone(),
        Vector::Bool(b, Some(null)) => b.iter().zip(null).map(|(b, n)| *b && !*n).collect(),
        Vector::Const(c) => vec![truth(c); n],
        Vector::Values(v) => v.iter().map(truth).collect(),
        Vector::I64(..) | Vector::F64(..) => vec![false; n],
    }
}

/// `a and b`, `a or b` (`and` when `all`).
pub fn logic(all: bool, a: &Vector, b: &Vector, n: usize) -> Vector {
    let (mut x, y) = (truths(a, n), truths(b, n));
    if all {
        x.iter_mut().zip(&y).for_each(|(p, q)| *p &= *q);
    } else {
        x.iter_mut().zip(&y).for_each(|(p, q)| *p |= *q);
    }
    Vector::Bool(x, None)
}

/// `not a`.
pub fn not(a: &Vector, n: usize) -> Vector {
    let mut x = truths(a, n);
    x.iter_mut().for_each(|p| *p = !*p);
    Vector::Bool(x, None)
}

/// `f` record by record through [`call`]: text functions and mixed types.
pub fn rowwise(f: Func, args: &[&Vector], n: usize) -> Vector {
    let mut row = Vec::with_capacity(args.len());
    let out = (0..n)
        .map(|i| {
            row.clear();
            row.extend(args.iter().map(|a| a.get(i)));
            call(f, &row)
        })
        .collect();
    Vector::Values(out)
}

fn rowwise_cmp(op: CmpOp, a: &Vector, b: &Vector, n: usize) -> Vector {
    let out = (0..n)
        .map(|i| compare_values(&a.get(i), op, &b.get(i)))
        .collect();
    Vector::Bool(out, None)
}
