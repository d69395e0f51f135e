//! The column-by-column answer is the record-by-record one: random batches (typed,
//! mixed, with nulls, absent fields, numbers at the edges of `i64`, numeric text) and
//! random expressions, evaluated both ways.

use super::*;
use crate::ops::eval::{self, lookup, truth};
use crate::ops::transform::{Filter, Map};
use proptest::prelude::*;
use weir_common::record::BatchBuilder;
use weir_common::spec::expr::parse_expr;
use weir_common::spec::{FilterParams, MapParams, Predicate};

/// How a column of the random batch is filled.
#[derive(Clone, Debug)]
enum Shape {
    Ints(Vec<i64>),
    Floats(Vec<f64>),
    Mixed(Vec<Option<Value>>),
}

fn edge_int() -> impl Strategy<Value = i64> {
    prop_oneof![
        -20i64..20,
        Just(i64::MAX),
        Just(i64::MIN),
        Just(i64::MAX - 1),
        Just(1 << 40),
        any::<i64>(),
    ]
}

fn any_value() -> impl Strategy<Value = Option<Value>> {
    prop_oneof![
        Just(None),
        Just(Some(Value::Null)),
        edge_int().prop_map(|i| Some(Value::I64(i))),
        (-50.0f64..50.0).prop_map(|f| Some(Value::F64(f))),
        Just(Some(Value::F64(f64::NAN))),
        any::<bool>().prop_map(|b| Some(Value::Bool(b))),
        prop_oneof![Just("3"), Just("abc"), Just("-2.5"), Just("")]
            .prop_map(|s| Some(Value::Str(s.into()))),
    ]
}

fn shape(n: usize) -> impl Strategy<Value = Shape> {
    prop_oneof![
        prop::collection::vec(edge_int(), n).prop_map(Shape::Ints),
        prop::collection::vec(-1e3f64..1e3, n).prop_map(Shape::Floats),
        prop::collection::vec(any_value(), n).prop_map(Shape::Mixed),
    ]
}

const NAMES: [&str; 4] = ["a", "b", "c", "ts"];

fn batch() -> impl Strategy<Value = Batch> {
    (0usize..24)
        .prop_flat_map(|n| prop::collection::vec(shape(n), 1..=NAMES.len()))
        .prop_map(|cols| {
            let n = match &cols[0] {
                Shape::Ints(v) => v.len(),
                Shape::Floats(v) => v.len(),
                Shape::Mixed(v) => v.len(),
            };
            let mut b = BatchBuilder::default();
            for row in 0..n {
                let fields: Vec<(&str, Value)> = cols
                    .iter()
                    .zip(NAMES)
                    .filter_map(|(c, name)| {
                        let v = match c {
                            Shape::Ints(v) => Some(Value::I64(v[row])),
                            Shape::Floats(v) => Some(Value::F64(v[row])),
                            Shape::Mixed(v) => v[row].clone(),
                        };
                        v.map(|v| (name, v))
                    })
                    .collect();
                let key = format!("k{}", row % 3);
                b.push(
                    0,
                    row as u64,
                    1_000 + row as i64,
                    key.as_bytes(),
                    fields.iter().map(|(n, v)| (*n, v)),
                )
                .unwrap();
            }
            b.finish()
        })
}

/// Expressions over the batch's names, `key`, a missing name and constants.
fn expr() -> impl Strategy<Value = String> {
    let leaf = prop_oneof![
        prop_oneof![
            Just("a"),
            Just("b"),
            Just("c"),
            Just("ts"),
            Just("key"),
            Just("missing")
        ]
        .prop_map(str::to_string),
        prop_oneof![
            Just("0"),
            Just("1"),
            Just("-3"),
            Just("1000"),
            Just("10"),
            Just("-1"),
            Just("0.5"),
            Just("9223372036854775807"),
            Just("\"3\""),
            Just("true"),
            Just("null"),
            Just("\"k1\"")
        ]
        .prop_map(str::to_string),
    ];
    leaf.prop_recursive(4, 24, 2, |inner| {
        let bin = prop_oneof![
            Just("+"),
            Just("-"),
            Just("*"),
            Just("/"),
            Just("%"),
            Just("=="),
            Just("!="),
            Just("<"),
            Just(">="),
            Just("and"),
            Just("or")
        ];
        prop_oneof![
            (inner.clone(), bin, inner.clone()).prop_map(|(a, op, b)| format!("({a} {op} {b})")),
            inner.clone().prop_map(|a| format!("(not ({a}))")),
            inner.clone().prop_map(|a| format!("-({a})")),
            (inner.clone(), inner.clone()).prop_map(|(a, b)| format!("mod({a}, {b})")),
            inner.clone().prop_map(|a| format!("len({a})")),
            (inner.clone(), inner).prop_map(|(a, b)| format!("concat({a}, {b})")),
        ]
    })
}

/// Equal, with NaN equal to itself (a field may hold one).
fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::F64(x), Value::F64(y)) => x.to_bits() == y.to_bits() || x == y,
        _ => a == b,
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    #[test]
    fn columns_give_what_records_give(batch in batch(), src in expr()) {
        let e = parse_expr(&src).unwrap();
        let v = eval(&e, &batch, &BatchFields(&batch));
        for (row, r) in batch.iter().enumerate() {
            let want = eval::eval(&e, &|f| lookup(&r, f));
            let got = v.get(row);
            prop_assert!(same(&got, &want), "{src} row {row}: columns {got:?}, records {want:?}");
        }
    }

    #[test]
    fn where_keeps_what_records_keep(batch in batch(), src in expr()) {
        let e = parse_expr(&src).unwrap();
        let want: Vec<u64> = batch
            .iter()
            .filter(|r| truth(&eval::eval(&e, &|f| lookup(r, f))))
            .map(|r| r.seq)
            .collect();
        let got: Vec<u64> = select(&e, &batch).iter().map(|&row| row as u64).collect();
        prop_assert_eq!(got, want, "{}", src);
    }

    #[test]
    fn a_map_by_columns_is_the_map_by_records(
        batch in batch(),
        x in expr(),
        y in expr(),
        target in prop_oneof![Just("a"), Just("z"), Just("ts")],
        rename in any::<bool>(),
        project in any::<bool>(),
    ) {
        let p = MapParams {
            project: if project { vec!["b".into(), "z".into(), target.into(), "d".into()] } else { vec![] },
            rename: if rename { [("c".to_string(), "d".to_string())].into() } else { Default::default() },
            set: [(target.to_string(), x.clone()), ("b".to_string(), y.clone())].into(),
        };
        let m = Map::new(&p).unwrap();
        prop_assert_eq!(m.apply(&batch), m.by_records(&batch), "set {} = {}, b = {}", target, x, y);
    }
}

#[test]
fn typed_columns_stay_typed() {
    let mut b = BatchBuilder::default();
    for i in 0..100i64 {
        b.push(
            0,
            i as u64,
            0,
            b"",
            [("id", &Value::I64(i)), ("x", &Value::F64(0.5))],
        )
        .unwrap();
    }
    let batch = b.finish();
    let run = |src: &str| eval(&parse_expr(src).unwrap(), &batch, &BatchFields(&batch));
    assert!(matches!(run("mod(id, 10)"), Vector::I64(_, None)));
    assert!(matches!(run("id * x"), Vector::F64(_, None)));
    assert!(matches!(
        run("id % 10 != 3 and x < 1"),
        Vector::Bool(_, None)
    ));
    // Division by zero is null in exactly those records.
    let Vector::I64(_, Some(nulls)) = run("div(100, id)") else {
        panic!("nulls expected")
    };
    assert_eq!(nulls.iter().filter(|n| **n).count(), 1);
    assert!(nulls[0]);
    // Constants fold once.
    assert_eq!(run("1 + 2 * 3"), Vector::Const(Value::I64(7)));
}

#[test]
fn a_where_filter_keeps_exactly_the_matching_records() {
    let mut b = BatchBuilder::default();
    for i in 0..1000i64 {
        b.push(0, i as u64, 0, b"", [("id", &Value::I64(i))])
            .unwrap();
    }
    let f = Filter::new(&FilterParams::Where(Predicate {
        predicate: "mod(id, 10) != 3 and id >= 100".into(),
    }))
    .unwrap();
    let got: Vec<u64> = f.apply(&b.finish()).iter().map(|r| r.seq).collect();
    let want: Vec<u64> = (100..1000).filter(|i| i % 10 != 3).collect();
    assert_eq!(got, want);
}
