//! `map`, `filter` and `key_by`.

use super::eval::{compare, eval, holds};
use super::map_batch;
use weir_common::record::{Batch, Value};
use weir_common::spec::expr::{parse_expr, Expr};
use weir_common::spec::{CmpOp, FilterParams, KeyByParams, MapParams};

/// `map`: rename, then compute `set` fields (in name order), then project.
#[derive(Clone, Debug)]
pub struct Map {
    rename: Vec<(String, String)>,
    set: Vec<(String, Expr)>,
    project: Vec<String>,
}

impl Map {
    /// Compiles the params (validated specs always compile).
    pub fn new(p: &MapParams) -> Result<Self, String> {
        let set = p
            .set
            .iter()
            .map(|(f, src)| {
                parse_expr(src)
                    .map(|e| (f.clone(), e))
                    .map_err(|e| format!("set.{f}: {e}"))
            })
            .collect::<Result<_, _>>()?;
        Ok(Self {
            rename: p.rename.clone().into_iter().collect(),
            set,
            project: p.project.clone(),
        })
    }

    /// The name a field has after `rename`.
    fn renamed<'a>(&'a self, n: &'a str) -> &'a str {
        self.rename
            .iter()
            .find(|(from, _)| from == n)
            .map_or(n, |(_, to)| to.as_str())
    }

    /// Transforms a batch.
    pub fn apply(&self, batch: &Batch) -> Batch {
        if self.set.is_empty() {
            // Rename and project only: a new list of columns over the same buffers,
            // nothing copied or decoded (the common shape of a projection in front of
            // a link).
            return batch.project(|name| {
                let to = self
                    .rename
                    .iter()
                    .find(|(from, _)| from == name)
                    .map(|(_, to)| to.as_str());
                let n = to.unwrap_or(name);
                (self.project.is_empty() || self.project.iter().any(|p| p == n)).then_some(to)
            });
        }
        map_batch(batch, |r, out| {
            let mut fields: Vec<(String, Value)> = r
                .fields()
                .map(|(n, v)| (self.renamed(n).to_string(), v))
                .collect();
            for (name, e) in &self.set {
                let snapshot = &fields;
                let v = eval(e, &|f| {
                    snapshot
                        .iter()
                        .find(|(n, _)| n == f)
                        .map(|(_, v)| v.clone())
                        .or_else(|| match f {
                            "key" => Some(Value::Str(String::from_utf8_lossy(r.key).into_owned())),
                            "ts" => Some(Value::I64(r.event_time_ms)),
                            _ => None,
                        })
                });
                match fields.iter_mut().find(|(n, _)| n == name) {
                    Some(slot) => slot.1 = v,
                    None => fields.push((name.clone(), v)),
                }
            }
            if !self.project.is_empty() {
                fields.retain(|(n, _)| self.project.contains(n));
            }
            let fields = fields.iter().map(|(n, v)| (n.as_str(), v));
            if let Err(e) = out.push(r.source, r.seq, r.event_time_ms, r.key, fields) {
                tracing::error!(error = %e, "map output dropped: too large for a batch");
            }
        })
    }
}

/// `filter`.
#[derive(Clone, Debug)]
pub struct Filter {
    p: FilterParams,
    /// The constant, when the test is an ordering against a number: a numeric field
    /// is then compared without going through [`compare`] (same answer, fewer steps).
    number: Option<f64>,
}

impl Filter {
    /// A filter with these params.
    pub fn new(p: &FilterParams) -> Self {
        let number = p
            .value
            .as_f64()
            .filter(|_| p.value.is_number() && p.op != CmpOp::Contains);
        Self {
            p: p.clone(),
            number,
        }
    }

    /// Keeps the records that pass, copying them as they are encoded: only the
    /// tested field is read (its column looked up once per batch) and decoded.
    pub fn apply(&self, batch: &Batch) -> Batch {
        let field = batch.field_reader(&self.p.field);
        let passes = |x: f64, n: f64| x.partial_cmp(&n).is_some_and(|o| holds(o, self.p.op));
        let numbers = self.number.and_then(|n| Some((n, field.numbers()?)));
        let kept = if let Some((n, numbers)) = numbers {
            numbers
                .enumerate()
                .filter(|&(_, x)| passes(x, n))
                .map(|(row, _)| row as u32)
                .collect()
        } else {
            field.rows_where(batch.len(), |f| {
                if let Some((x, n)) = f.and_then(|f| f.number()).zip(self.number) {
                    return passes(x, n);
                }
                compare(f.map(|f| f.decode()).as_ref(), self.p.op, &self.p.value)
            })
        };
        if kept.len() == batch.len() {
            return batch.clone();
        }
        batch.gather(&kept)
    }
}

/// `key_by`.
#[derive(Clone, Debug)]
pub struct KeyBy {
    field: String,
}

impl KeyBy {
    /// Keys by this field.
    pub fn new(p: &KeyByParams) -> Self {
        Self {
            field: p.field.clone(),
        }
    }

    /// Sets each record's key to the field's text (empty when absent).
    pub fn apply(&self, batch: &Batch) -> Batch {
        map_batch(batch, |r, out| {
            let key = r
                .field(&self.field)
                .map(|v| v.to_string())
                .unwrap_or_default();
            let fields: Vec<_> = r.fields().collect();
            let _ = out.push(
                r.source,
                r.seq,
                r.event_time_ms,
                key.as_bytes(),
                fields.iter().map(|(n, v)| (*n, v)),
            );
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::Generator;
    use weir_common::spec::{CmpOp, GeneratorParams};

    fn input() -> Batch {
        let p = GeneratorParams {
            rate: None,
            count: Some(200),
            keys: 5,
            payload_bytes: 8,
            seed: 0,
            wall_clock: false,
        };
        Generator::new(p, 0, 0, 1).next_batch(1000).unwrap()
    }

    #[test]
    fn a_rename_and_projection_copies_fields_as_decoding_would_build_them() {
        let p = MapParams {
            project: vec!["id".into(), "v".into(), "payload".into()],
            rename: [("value".to_string(), "v".to_string())].into(),
            set: Default::default(),
        };
        let input = input();
        let out = Map::new(&p).unwrap().apply(&input);
        // What decoding every field and encoding the kept ones gives, byte for byte.
        let mut want = weir_common::record::BatchBuilder::default();
        for r in input.iter() {
            let fields: Vec<(String, Value)> = r
                .fields()
                .map(|(n, v)| (if n == "value" { "v" } else { n }.to_string(), v))
                .filter(|(n, _)| p.project.contains(n))
                .collect();
            let fields = fields.iter().map(|(n, v)| (n.as_str(), v));
            want.push(r.source, r.seq, r.event_time_ms, r.key, fields)
                .unwrap();
        }
        assert_eq!(out, want.finish());
        let first = out.iter().next().unwrap();
        let names: Vec<&str> = first.raw_fields().map(|f| f.name).collect();
        assert_eq!(names, ["id", "v", "payload"]);
    }

    #[test]
    fn map_renames_computes_and_projects() {
        let p = MapParams {
            project: vec![
                "id".into(),
                "page".into(),
                "v".into(),
                "user".into(),
                "t".into(),
            ],
            rename: [("value".to_string(), "v".to_string())].into(),
            set: [
                (
                    "page".to_string(),
                    r#"concat("/p/", mod(id, 3))"#.to_string(),
                ),
                ("user".to_string(), "key".to_string()),
                ("t".to_string(), "ts".to_string()),
            ]
            .into(),
        };
        let out = Map::new(&p).unwrap().apply(&input());
        assert_eq!(out.len(), 200);
        for r in out.iter() {
            let id = match r.field("id") {
                Some(Value::I64(i)) => i,
                o => panic!("{o:?}"),
            };
            assert_eq!(r.field("page"), Some(Value::Str(format!("/p/{}", id % 3))));
            assert_eq!(r.field("user"), Some(Value::Str(format!("k{}", id % 5))));
            assert_eq!(
                r.field("t"),
                Some(Value::I64(r.event_time_ms)),
                "ts is the event time"
            );
            assert!(
                r.field("v").is_some()
                    && r.field("value").is_none()
                    && r.field("payload").is_none()
            );
            assert_eq!(r.fields().count(), 5);
        }
    }

    #[test]
    fn filter_keeps_exactly_the_matching_records_with_their_origin() {
        let f = Filter::new(&FilterParams {
            field: "value".into(),
            op: CmpOp::Lt,
            value: 500.into(),
        });
        let input = input();
        let expected: Vec<u64> = input
            .iter()
            .filter(|r| matches!(r.field("value"), Some(Value::I64(v)) if v < 500))
            .map(|r| r.seq)
            .collect();
        let out = f.apply(&input);
        assert!(!expected.is_empty() && expected.len() < 200);
        assert_eq!(out.iter().map(|r| r.seq).collect::<Vec<_>>(), expected);
    }

    #[test]
    fn the_numeric_shortcut_answers_as_compare_does() {
        // A field that is an integer, a float, text (numeric or not), null or missing,
        // tested by every operator against numbers and text: the filter (shortcut for
        // numbers) keeps exactly what `compare` on the decoded field says.
        let values = [
            Value::I64(3),
            Value::I64(-7),
            Value::F64(2.5),
            Value::F64(f64::NAN),
            Value::Str("3".into()),
            Value::Str("abc".into()),
            Value::Null,
        ];
        let build = |values: &[Value], other: bool| {
            let mut b = weir_common::record::BatchBuilder::default();
            for (i, v) in values.iter().enumerate() {
                b.push(0, i as u64, 0, b"", [("f", v)]).unwrap();
            }
            if other {
                b.push(0, values.len() as u64, 0, b"", [("other", &Value::I64(3))])
                    .unwrap();
            }
            b.finish()
        };
        // Mixed (record by record), and columns of integers only or floats only (read
        // straight through).
        let ints = [3, -7, 2, 4, i64::MAX].map(Value::I64);
        let floats = [3.0, 2.5, -0.5, f64::NAN, f64::INFINITY].map(Value::F64);
        let batches = [
            build(&values, true),
            build(&ints, false),
            build(&floats, false),
        ];
        let ops = [
            CmpOp::Eq,
            CmpOp::Ne,
            CmpOp::Lt,
            CmpOp::Le,
            CmpOp::Gt,
            CmpOp::Ge,
            CmpOp::Contains,
        ];
        let constants: [serde_json::Value; 4] = [3.into(), 2.5.into(), "3".into(), "b".into()];
        for (batch, op) in batches.iter().flat_map(|b| ops.map(|op| (b, op))) {
            for c in &constants {
                let p = FilterParams {
                    field: "f".into(),
                    op,
                    value: c.clone(),
                };
                let want: Vec<u64> = batch
                    .iter()
                    .filter(|r| compare(r.field("f").as_ref(), op, c))
                    .map(|r| r.seq)
                    .collect();
                let got: Vec<u64> = Filter::new(&p).apply(batch).iter().map(|r| r.seq).collect();
                assert_eq!(got, want, "{op:?} {c}");
            }
        }
    }

    #[test]
    fn key_by_sets_the_key_from_a_field() {
        let out = KeyBy::new(&KeyByParams {
            field: "value".into(),
        })
        .apply(&input());
        for r in out.iter() {
            assert_eq!(r.key, r.field("value").unwrap().to_string().as_bytes());
        }
    }
}
