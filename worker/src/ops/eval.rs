//! Evaluating `map` expressions and `filter` comparisons on records, and what a field
//! name in an operator's params stands for.

use weir_common::fingerprint::fnv1a64;
use weir_common::record::{RecordRef, Value};
use weir_common::spec::expr::{Expr, Func};
use weir_common::spec::CmpOp;

/// A part of the record itself that a field name stands for when the record has no
/// field of that name: `key` is the record key (as text) and `ts` its event time (Unix
/// ms). The same everywhere a name is read: map expressions, `filter`, `key_by`,
/// `window.sum` and hash partitioning by a field. The generator documents its key and
/// event time as `key` and `ts` though they are not fields; read as a missing field,
/// `key` would give every record the same empty key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Implicit {
    /// `key`: the record key.
    Key,
    /// `ts`: the event time.
    Ts,
}

impl Implicit {
    /// The part `name` stands for, if it names one.
    pub fn named(name: &str) -> Option<Self> {
        match name {
            "key" => Some(Self::Key),
            "ts" => Some(Self::Ts),
            _ => None,
        }
    }

    /// Its value in `r`.
    pub fn value(self, r: &RecordRef<'_>) -> Value {
        match self {
            Self::Key => Value::Str(String::from_utf8_lossy(r.key).into_owned()),
            Self::Ts => Value::I64(r.event_time_ms),
        }
    }
}

/// What `name` stands for in `r`: its field of that name, else the [`Implicit`] part so
/// named, else nothing.
pub fn lookup(r: &RecordRef<'_>, name: &str) -> Option<Value> {
    r.field(name)
        .or_else(|| Implicit::named(name).map(|i| i.value(r)))
}

/// Evaluates `e` against a record whose fields `get` looks up (`key` is the record key
/// unless a field of that name exists).
pub fn eval(e: &Expr, get: &dyn Fn(&str) -> Option<Value>) -> Value {
    match e {
        Expr::Field(name) => get(name).unwrap_or(Value::Null),
        Expr::Str(s) => Value::Str(s.clone()),
        Expr::Int(i) => Value::I64(*i),
        Expr::Num(n) => number(*n),
        Expr::Bool(b) => Value::Bool(*b),
        Expr::Null => Value::Null,
        Expr::Call(f, args) => {
            let a: Vec<Value> = args.iter().map(|x| eval(x, get)).collect();
            call(*f, &a)
        }
        Expr::Cmp(op, a, b) => Value::Bool(compare_values(&eval(a, get), *op, &eval(b, get))),
        Expr::And(a, b) => Value::Bool(truth(&eval(a, get)) && truth(&eval(b, get))),
        Expr::Or(a, b) => Value::Bool(truth(&eval(a, get)) || truth(&eval(b, get))),
        Expr::Not(a) => Value::Bool(!truth(&eval(a, get))),
    }
}

/// Whether a value counts as true for `and`, `or`, `not` and a filter's `where`: only
/// `true` does (null, numbers and text do not).
pub fn truth(v: &Value) -> bool {
    matches!(v, Value::Bool(true))
}

/// The constant of an `Expr::Num`: an integer when it is one.
pub fn number(n: f64) -> Value {
    if n.fract() == 0.0 && n.abs() < 9.0e15 {
        Value::I64(n as i64)
    } else {
        Value::F64(n)
    }
}

/// Whether `a op b` holds, for two computed values: as [`compare`] does for a field
/// and a constant. A null side equals nothing (only `ne` holds); numbers compare as
/// numbers, and so does a text holding a number against a number; anything else
/// compares as text.
pub fn compare_values(a: &Value, op: CmpOp, b: &Value) -> bool {
    if *a == Value::Null || *b == Value::Null {
        return op == CmpOp::Ne;
    }
    if op == CmpOp::Contains {
        return a.to_string().contains(&b.to_string());
    }
    let is_number = |v: &Value| matches!(v, Value::I64(_) | Value::F64(_));
    let ord = match (a, b) {
        (Value::I64(x), Value::I64(y)) => Some(x.cmp(y)),
        _ => match (a.as_f64(), b.as_f64()) {
            (Some(x), Some(y)) if is_number(a) || is_number(b) => x.partial_cmp(&y),
            _ => Some(a.to_string().cmp(&b.to_string())),
        },
    };
    ord.is_some_and(|ord| holds(ord, op))
}

fn num2(a: &[Value], int: fn(i64, i64) -> Option<i64>, float: fn(f64, f64) -> f64) -> Value {
    match (&a[0], &a[1]) {
        (Value::I64(x), Value::I64(y)) => int(*x, *y).map_or(Value::Null, Value::I64),
        (x, y) => match (x.as_f64(), y.as_f64()) {
            (Some(x), Some(y)) => {
                let r = float(x, y);
                if r.is_finite() {
                    Value::F64(r)
                } else {
                    Value::Null
                }
            }
            _ => Value::Null,
        },
    }
}

/// `f` applied to values (the per-record definition every kernel must agree with).
pub fn call(f: Func, a: &[Value]) -> Value {
    match f {
        Func::Upper => Value::Str(a[0].to_string().to_uppercase()),
        Func::Lower => Value::Str(a[0].to_string().to_lowercase()),
        Func::Len => Value::I64(a[0].to_string().chars().count() as i64),
        Func::Concat => Value::Str(a.iter().map(|v| v.to_string()).collect()),
        Func::Add => num2(a, i64::checked_add, |x, y| x + y),
        Func::Sub => num2(a, i64::checked_sub, |x, y| x - y),
        Func::Mul => num2(a, i64::checked_mul, |x, y| x * y),
        Func::Div => num2(a, i64::checked_div, |x, y| x / y),
        Func::Mod => num2(a, i64::checked_rem_euclid, |x, y| x.rem_euclid(y)),
        Func::Hash => Value::I64(fnv1a64(a[0].to_string().as_bytes()) as i64),
        Func::Substr => {
            let s = a[0].to_string();
            let start = a[1].as_f64().unwrap_or(0.0).max(0.0) as usize;
            let len = a[2].as_f64().unwrap_or(0.0).max(0.0) as usize;
            Value::Str(s.chars().skip(start).take(len).collect())
        }
    }
}

/// Whether `field op value` holds. Numbers compare as numbers, everything else as text;
/// a missing field never matches (except `ne`).
pub fn compare(field: Option<&Value>, op: CmpOp, value: &serde_json::Value) -> bool {
    let Some(field) = field.filter(|f| **f != Value::Null) else {
        return op == CmpOp::Ne;
    };
    if op == CmpOp::Contains {
        return value
            .as_str()
            .is_some_and(|v| field.to_string().contains(v));
    }
    let ord = match (field.as_f64(), value.as_f64()) {
        (Some(a), Some(b)) if !matches!(field, Value::Str(_)) || value.is_number() => {
            a.partial_cmp(&b)
        }
        _ => {
            let v = value
                .as_str()
                .map_or_else(|| value.to_string(), str::to_string);
            Some(field.to_string().cmp(&v))
        }
    };
    ord.is_some_and(|ord| holds(ord, op))
}

/// Whether an ordering satisfies `op` (`contains` is not an ordering: false).
#[inline]
pub fn holds(ord: std::cmp::Ordering, op: CmpOp) -> bool {
    use std::cmp::Ordering::*;
    match op {
        CmpOp::Eq => ord == Equal,
        CmpOp::Ne => ord != Equal,
        CmpOp::Lt => ord == Less,
        CmpOp::Le => ord != Greater,
        CmpOp::Gt => ord == Greater,
        CmpOp::Ge => ord != Less,
        CmpOp::Contains => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use weir_common::spec::expr::parse_expr;

    fn run(src: &str) -> Value {
        let e = parse_expr(src).unwrap();
        eval(&e, &|n| match n {
            "id" => Some(Value::I64(1234)),
            "url" => Some(Value::Str("Home/Page".into())),
            "x" => Some(Value::F64(2.5)),
            _ => None,
        })
    }

    #[test]
    fn expressions_evaluate() {
        assert_eq!(
            run(r#"concat("/page/", mod(id, 50))"#),
            Value::Str("/page/34".into())
        );
        assert_eq!(run("upper(url)"), Value::Str("HOME/PAGE".into()));
        assert_eq!(run("lower(url)"), Value::Str("home/page".into()));
        assert_eq!(run("len(url)"), Value::I64(9));
        assert_eq!(run("add(id, 1)"), Value::I64(1235));
        assert_eq!(run("mul(x, 2)"), Value::F64(5.0));
        assert_eq!(run("div(id, 0)"), Value::Null);
        assert_eq!(run("mod(id, 0)"), Value::Null);
        assert_eq!(run("substr(url, 5, 2)"), Value::Str("Pa".into()));
        assert_eq!(run("missing"), Value::Null);
        assert_eq!(run("hash(url)"), run("hash(url)"));
    }

    #[test]
    fn comparisons() {
        let n = Value::I64(10);
        assert!(compare(Some(&n), CmpOp::Gt, &serde_json::json!(3)));
        assert!(compare(Some(&n), CmpOp::Le, &serde_json::json!(10)));
        assert!(!compare(Some(&n), CmpOp::Lt, &serde_json::json!(10)));
        let s = Value::Str("error".into());
        assert!(compare(Some(&s), CmpOp::Eq, &serde_json::json!("error")));
        assert!(compare(Some(&s), CmpOp::Contains, &serde_json::json!("rr")));
        assert!(compare(Some(&s), CmpOp::Ne, &serde_json::json!("debug")));
        assert!(!compare(None, CmpOp::Eq, &serde_json::json!("x")));
        assert!(compare(None, CmpOp::Ne, &serde_json::json!("x")));
    }
}
