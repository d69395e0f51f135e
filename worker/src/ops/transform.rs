//! `map`, `filter` and `key_by`.

use super::eval::{compare, eval, holds, Implicit};
use super::map_batch;
use super::vector::{self, Vector};
use bytes::BytesMut;
use std::fmt::Write as _;
use weir_common::record::{
    Batch, BatchBuilder, BatchError, FieldReader, OutColumn, RawField, Value,
};
use weir_common::spec::expr::{parse_expr, Expr};
use weir_common::spec::{CmpOp, Comparison, FilterParams, KeyByParams, MapParams};

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
        self.by_columns(batch)
            .unwrap_or_else(|| self.by_records(batch))
    }

    /// The map computed column by column ([`vector`]): the batch's columns kept (under
    /// their new names) and each `set` field computed once for the whole batch. `None`
    /// for the shapes where a record's fields would not come out in the order the
    /// per-record definition gives them (two fields of one name, or a field that some
    /// records have and others do not): [`Map::by_records`] computes those. Sources
    /// and every `map` make batches of neither shape.
    fn by_columns(&self, batch: &Batch) -> Option<Batch> {
        let names: Vec<&str> = batch.column_names().map(|n| self.renamed(n)).collect();
        let unique = !names
            .iter()
            .enumerate()
            .any(|(i, n)| names[..i].contains(n));
        if !unique || !(0..names.len()).all(|i| batch.column_complete(i)) {
            return None;
        }
        let mut env = MapFields {
            batch,
            fields: names
                .iter()
                .enumerate()
                .map(|(i, n)| (*n, Source::Column(i)))
                .collect(),
        };
        for (name, e) in &self.set {
            let v = vector::eval(e, batch, &env);
            match env.fields.iter_mut().find(|(n, _)| n == name) {
                Some((_, slot)) => *slot = Source::Computed(v),
                None => env.fields.push((name, Source::Computed(v))),
            }
        }
        let n = batch.len();
        let out = env
            .fields
            .into_iter()
            .filter(|(name, _)| self.project.is_empty() || self.project.iter().any(|p| p == name))
            .map(|(name, src)| match src {
                Source::Column(index) => OutColumn::Kept { index, name },
                Source::Computed(v) => OutColumn::New {
                    name,
                    values: v.into_column(n),
                },
            })
            .collect();
        batch.with_columns(out).ok()
    }

    /// The map computed record by record: the definition [`Map::by_columns`] follows.
    pub(crate) fn by_records(&self, batch: &Batch) -> Batch {
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
                        .or_else(|| Implicit::named(f).map(|i| i.value(r)))
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

/// Where a field of a `map`'s output comes from.
enum Source {
    /// Column `i` of the input.
    Column(usize),
    /// A `set` expression's values.
    Computed(Vector),
}

/// The fields a `set` expression sees: the input's (renamed) and the `set` fields
/// computed before it.
struct MapFields<'a> {
    batch: &'a Batch,
    fields: Vec<(&'a str, Source)>,
}

impl vector::Fields for MapFields<'_> {
    fn field(&self, name: &str) -> Option<Vector> {
        let (_, src) = self.fields.iter().find(|(n, _)| *n == name)?;
        Some(match src {
            Source::Computed(v) => v.clone(),
            Source::Column(i) => {
                let own = self.batch.column_names().nth(*i).unwrap_or(name);
                let r = self.batch.field_reader(own);
                vector::read(self.batch, &r, name)
            }
        })
    }
}

/// `filter`.
#[derive(Clone, Debug)]
pub enum Filter {
    /// A field against a constant.
    Field(FieldFilter),
    /// A predicate, evaluated column by column.
    Where(Expr),
}

impl Filter {
    /// A filter with these params (validated specs always compile).
    pub fn new(p: &FilterParams) -> Result<Self, String> {
        match p {
            FilterParams::Compare(c) => Ok(Self::Field(FieldFilter::new(c))),
            FilterParams::Where(w) => parse_expr(&w.predicate)
                .map(Self::Where)
                .map_err(|e| format!("where: {e}")),
        }
    }

    /// Keeps the records that pass.
    pub fn apply(&self, batch: &Batch) -> Batch {
        let kept = match self {
            Self::Field(f) => f.rows(batch),
            Self::Where(e) => vector::select(e, batch),
        };
        if kept.len() == batch.len() {
            return batch.clone();
        }
        batch.gather(&kept)
    }
}

/// A `filter` of the form `{field, op, value}`.
#[derive(Clone, Debug)]
pub struct FieldFilter {
    p: Comparison,
    /// The constant, when the test is an ordering against a number: a numeric field
    /// is then compared without going through [`compare`] (same answer, fewer steps).
    number: Option<f64>,
    /// What the field name stands for in a record without such a field.
    implicit: Option<Implicit>,
}

impl FieldFilter {
    /// A filter with these params.
    pub fn new(p: &Comparison) -> Self {
        let number = p
            .value
            .as_f64()
            .filter(|_| p.value.is_number() && p.op != CmpOp::Contains);
        Self {
            p: p.clone(),
            number,
            implicit: Implicit::named(&p.field),
        }
    }

    #[inline]
    fn passes(&self, x: f64, n: f64) -> bool {
        x.partial_cmp(&n).is_some_and(|o| holds(o, self.p.op))
    }

    /// Whether a record whose field is `f` (`None`: it has none) passes.
    #[inline]
    fn test(&self, f: Option<RawField<'_>>) -> bool {
        if let Some((x, n)) = f.and_then(|f| f.number()).zip(self.number) {
            return self.passes(x, n);
        }
        compare(f.map(|f| f.decode()).as_ref(), self.p.op, &self.p.value)
    }

    /// The rows that pass: only the tested field is read (its column looked up once
    /// per batch) and decoded.
    fn rows(&self, batch: &Batch) -> Vec<u32> {
        let field = batch.field_reader(&self.p.field);
        let numbers = self.number.and_then(|n| Some((n, field.numbers()?)));
        if let Some((n, numbers)) = numbers {
            numbers
                .enumerate()
                .filter(|&(_, x)| self.passes(x, n))
                .map(|(row, _)| row as u32)
                .collect()
        } else if let Some(part) = self.implicit {
            self.rows_with(batch, &field, part)
        } else {
            field.rows_where(batch.len(), |f| self.test(f))
        }
    }

    /// The rows that pass when the field is `key` or `ts`: a record's own field of that
    /// name where it has one, else its key or event time (as map expressions see them).
    fn rows_with(&self, batch: &Batch, field: &FieldReader<'_>, part: Implicit) -> Vec<u32> {
        // One text value reused for every record's key: nothing allocated per record.
        let mut key = Value::Str(String::new());
        (0..batch.len())
            .filter(|&row| {
                if let Some(f) = field.get(row) {
                    return self.test(Some(f));
                }
                let r = batch.record(row);
                match part {
                    Implicit::Ts => match self.number {
                        Some(n) => self.passes(r.event_time_ms as f64, n),
                        None => {
                            compare(Some(&Value::I64(r.event_time_ms)), self.p.op, &self.p.value)
                        }
                    },
                    Implicit::Key => {
                        if let Value::Str(text) = &mut key {
                            text.clear();
                            text.push_str(&String::from_utf8_lossy(r.key));
                        }
                        compare(Some(&key), self.p.op, &self.p.value)
                    }
                }
            })
            .map(|row| row as u32)
            .collect()
    }
}

/// `key_by`.
#[derive(Clone, Debug)]
pub struct KeyBy {
    field: String,
    /// What the field name stands for in a record without such a field.
    implicit: Option<Implicit>,
}

impl KeyBy {
    /// Keys by this field.
    pub fn new(p: &KeyByParams) -> Self {
        Self {
            field: p.field.clone(),
            implicit: Implicit::named(&p.field),
        }
    }

    /// Sets each record's key to the field's text: a record without the field keeps
    /// its key for `key`, takes its event time for `ts`, and gets the empty key
    /// otherwise. Only the keys are rebuilt; the fields are shared, not copied.
    pub fn apply(&self, batch: &Batch) -> Batch {
        let field = batch.field_reader(&self.field);
        if field.is_empty() && self.implicit == Some(Implicit::Key) {
            // Keyed by the key it already has.
            return batch.clone();
        }
        let rekeyed = batch.with_keys(|row, out| self.write_key(batch, &field, row, out));
        match rekeyed {
            Ok(b) => b,
            Err(e) => self.dropping_oversized(batch, &field, &e),
        }
    }

    /// Appends record `row`'s new key to `out`.
    fn write_key(&self, batch: &Batch, field: &FieldReader<'_>, row: usize, out: &mut BytesMut) {
        // Writing into a BytesMut cannot fail.
        let _ = match (field.get(row), self.implicit) {
            (Some(f), _) => write!(out, "{f}"),
            (None, Some(Implicit::Key)) => {
                out.extend_from_slice(batch.record(row).key);
                Ok(())
            }
            (None, Some(Implicit::Ts)) => write!(out, "{}", batch.record(row).event_time_ms),
            (None, None) => Ok(()),
        };
    }

    /// The batch rekeyed record by record, without the records whose key does not fit
    /// the format (a field's text over 64 KiB): the rare path after `with_keys` refused.
    #[cold]
    fn dropping_oversized(
        &self,
        batch: &Batch,
        field: &FieldReader<'_>,
        why: &BatchError,
    ) -> Batch {
        let mut out = BatchBuilder::with_capacity(batch.encoded_len());
        let mut key = BytesMut::new();
        let mut dropped = 0usize;
        for row in 0..batch.len() {
            let r = batch.record(row);
            key.clear();
            self.write_key(batch, field, row, &mut key);
            let fields = r.raw_fields().map(|f| (f.name, f));
            if out
                .push_raw_fields(r.source, r.seq, r.event_time_ms, &key, fields)
                .is_err()
            {
                dropped += 1;
            }
        }
        tracing::error!(field = %self.field, dropped, error = %why, "key_by dropped records whose key is too large for a batch");
        out.finish()
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
        let f = Filter::new(&FilterParams::Compare(Comparison {
            field: "value".into(),
            op: CmpOp::Lt,
            value: 500.into(),
        }))
        .unwrap();
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
                let p = FilterParams::Compare(Comparison {
                    field: "f".into(),
                    op,
                    value: c.clone(),
                });
                let want: Vec<u64> = batch
                    .iter()
                    .filter(|r| compare(r.field("f").as_ref(), op, c))
                    .map(|r| r.seq)
                    .collect();
                let got: Vec<u64> = Filter::new(&p)
                    .unwrap()
                    .apply(batch)
                    .iter()
                    .map(|r| r.seq)
                    .collect();
                assert_eq!(got, want, "{op:?} {c}");
            }
        }
    }

    /// What a map expression naming `name` gives for each record: the oracle for how
    /// `filter` and `key_by` read a name.
    fn as_map_sees(batch: &Batch, name: &str) -> Vec<Option<Value>> {
        let p = MapParams {
            project: vec![],
            rename: Default::default(),
            set: [("probe".to_string(), name.to_string())].into(),
        };
        let out = Map::new(&p).unwrap().apply(batch);
        out.iter()
            .map(|r| r.field("probe").filter(|v| *v != Value::Null))
            .collect()
    }

    /// Generator records, then records where some have fields named `key` and `ts`
    /// of their own (those win over the record key and event time).
    fn with_and_without_own_fields() -> Vec<Batch> {
        let mut b = weir_common::record::BatchBuilder::default();
        let (own_key, own_ts) = (Value::Str("mine".into()), Value::I64(5));
        b.push(1, 0, 100, b"k1", [("key", &own_key), ("ts", &own_ts)])
            .unwrap();
        b.push(1, 1, 200, b"k2", []).unwrap();
        b.push(1, 2, 7, b"", [("ts", &Value::Str("late".into()))])
            .unwrap();
        vec![input(), b.finish()]
    }

    #[test]
    fn key_by_reads_key_and_ts_as_map_expressions_do() {
        for batch in with_and_without_own_fields() {
            for name in ["key", "ts", "id", "value", "missing"] {
                let out = KeyBy::new(&KeyByParams { field: name.into() }).apply(&batch);
                let keys: Vec<String> = out
                    .iter()
                    .map(|r| String::from_utf8(r.key.to_vec()).unwrap())
                    .collect();
                let want: Vec<String> = as_map_sees(&batch, name)
                    .into_iter()
                    .map(|v| v.map(|v| v.to_string()).unwrap_or_default())
                    .collect();
                assert_eq!(keys, want, "key_by {name}");
                assert_eq!(out.len(), batch.len());
                for (a, b) in batch.iter().zip(out.iter()) {
                    assert_eq!(
                        (a.source, a.seq, a.event_time_ms),
                        (b.source, b.seq, b.event_time_ms)
                    );
                    assert!(a.raw_fields().eq(b.raw_fields()), "fields kept as they are");
                }
            }
        }
        // The generator's own key, spelled out: `k<id % keys>`; its event time in ms.
        let out = KeyBy::new(&KeyByParams {
            field: "key".into(),
        })
        .apply(&input());
        for r in out.iter() {
            let Some(Value::I64(id)) = r.field("id") else {
                panic!("no id")
            };
            assert_eq!(r.key, format!("k{}", id % 5).as_bytes());
        }
        let out = KeyBy::new(&KeyByParams { field: "ts".into() }).apply(&input());
        assert!(out
            .iter()
            .all(|r| r.key == r.event_time_ms.to_string().as_bytes()));
    }

    #[test]
    fn filter_reads_key_and_ts_as_map_expressions_do() {
        let t0 = crate::ops::generator::BASE_EVENT_TIME_MS;
        let tests: Vec<(&str, CmpOp, serde_json::Value)> = vec![
            ("key", CmpOp::Eq, "k3".into()),
            ("key", CmpOp::Ne, "k3".into()),
            ("key", CmpOp::Contains, "1".into()),
            ("key", CmpOp::Ge, "k2".into()),
            ("ts", CmpOp::Lt, (t0 + 50).into()),
            ("ts", CmpOp::Ge, (t0 + 150).into()),
            ("ts", CmpOp::Eq, 5.into()),
            ("ts", CmpOp::Gt, 150.into()),
            ("ts", CmpOp::Eq, "late".into()),
            ("ts", CmpOp::Contains, "00".into()),
        ];
        for batch in with_and_without_own_fields() {
            for (field, op, value) in &tests {
                let seen = as_map_sees(&batch, field);
                let want: Vec<u64> = batch
                    .iter()
                    .zip(&seen)
                    .filter(|(_, v)| compare(v.as_ref(), *op, value))
                    .map(|(r, _)| r.seq)
                    .collect();
                let p = FilterParams::Compare(Comparison {
                    field: field.to_string(),
                    op: *op,
                    value: value.clone(),
                });
                let got: Vec<u64> = Filter::new(&p)
                    .unwrap()
                    .apply(&batch)
                    .iter()
                    .map(|r| r.seq)
                    .collect();
                assert_eq!(got, want, "{field} {op:?} {value}");
            }
        }
        // On the generator's records: `key` is `k<id % 5>`, `ts` the base plus the id.
        let only = |field: &str, op, value: serde_json::Value| {
            let p = FilterParams::Compare(Comparison {
                field: field.into(),
                op,
                value,
            });
            Filter::new(&p)
                .unwrap()
                .apply(&input())
                .iter()
                .map(|r| r.seq)
                .collect::<Vec<u64>>()
        };
        assert_eq!(
            only("key", CmpOp::Eq, "k3".into()),
            (0..200).filter(|id| id % 5 == 3).collect::<Vec<u64>>()
        );
        assert_eq!(
            only("ts", CmpOp::Lt, (t0 + 50).into()),
            (0..50).collect::<Vec<u64>>()
        );
    }

    #[test]
    fn key_by_drops_only_the_records_whose_key_would_be_too_long() {
        let mut b = weir_common::record::BatchBuilder::default();
        let huge = Value::Str("x".repeat(usize::from(u16::MAX) + 1));
        for (seq, v) in [Value::I64(1), huge, Value::I64(3)].iter().enumerate() {
            b.push(0, seq as u64, 0, b"", [("f", v)]).unwrap();
        }
        let out = KeyBy::new(&KeyByParams { field: "f".into() }).apply(&b.finish());
        let got: Vec<(u64, &[u8])> = out.iter().map(|r| (r.seq, r.key)).collect();
        assert_eq!(got, [(0, &b"1"[..]), (2, &b"3"[..])]);
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
