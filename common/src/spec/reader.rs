//! A walker over a loosely typed document that records every problem with its path.
//!
//! Reading never stops at the first mistake: a missing or mistyped field is recorded
//! and reading goes on, so one run of `weirctl validate` lists everything to fix.

use crate::problem::Sink;
use serde_json::{Map, Value};
use std::collections::{BTreeMap, BTreeSet};

/// A JSON object being read; remembers which keys were consumed so that the rest
/// can be reported as unknown fields.
pub(crate) struct Obj<'a> {
    pub path: String,
    map: &'a Map<String, Value>,
    seen: BTreeSet<&'a str>,
}

/// The path of `key` inside the object at `path`.
pub(crate) fn join(path: &str, key: &str) -> String {
    // An empty key (YAML `?` or `"": 1`) is named as `""`, so its problem still has a
    // path to show.
    let key = if key.is_empty() { "\"\"" } else { key };
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

/// A human name for a JSON value's type, for "expected X, found Y" messages.
pub(crate) fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a mapping",
    }
}

impl<'a> Obj<'a> {
    /// Reads `v` as an object, or records that it is not one.
    pub fn new(sink: &mut Sink, path: String, v: &'a Value) -> Option<Self> {
        match v {
            Value::Object(map) => Some(Self {
                path,
                map,
                seen: BTreeSet::new(),
            }),
            other => {
                sink.push(
                    path,
                    format!("expected a mapping, found {}", type_name(other)),
                );
                None
            }
        }
    }

    /// The path of a field of this object.
    pub fn at(&self, key: &str) -> String {
        join(&self.path, key)
    }

    /// The raw value of `key`, marking it consumed. Explicit `null` counts as absent.
    pub fn raw(&mut self, key: &'static str) -> Option<&'a Value> {
        let (k, v) = self.map.get_key_value(key)?;
        self.seen.insert(k.as_str());
        (!v.is_null()).then_some(v)
    }

    /// Whether `key` is given (not absent, not `null`); consumes nothing.
    pub fn has(&self, key: &str) -> bool {
        self.map.get(key).is_some_and(|v| !v.is_null())
    }

    /// `key` must be present.
    pub fn required(&mut self, sink: &mut Sink, key: &'static str) -> Option<&'a Value> {
        let v = self.raw(key);
        if v.is_none() {
            sink.push(self.at(key), "required");
        }
        v
    }

    /// An optional string field.
    pub fn opt_str(&mut self, sink: &mut Sink, key: &'static str) -> Option<String> {
        let v = self.raw(key)?;
        as_str(sink, self.at(key), v)
    }

    /// A required string field.
    pub fn req_str(&mut self, sink: &mut Sink, key: &'static str) -> Option<String> {
        let v = self.required(sink, key)?;
        as_str(sink, self.at(key), v)
    }

    /// A required, non-empty string field.
    pub fn req_nonempty(&mut self, sink: &mut Sink, key: &'static str) -> Option<String> {
        let s = self.req_str(sink, key)?;
        if s.trim().is_empty() {
            sink.push(self.at(key), "must not be empty");
            return None;
        }
        Some(s)
    }

    /// An optional unsigned integer field.
    pub fn opt_u64(&mut self, sink: &mut Sink, key: &'static str) -> Option<u64> {
        let v = self.raw(key)?;
        as_u64(sink, self.at(key), v)
    }

    /// An optional boolean field.
    pub fn opt_bool(&mut self, sink: &mut Sink, key: &'static str) -> Option<bool> {
        let v = self.raw(key)?;
        match v {
            Value::Bool(b) => Some(*b),
            other => {
                sink.push(
                    self.at(key),
                    format!("expected a boolean, found {}", type_name(other)),
                );
                None
            }
        }
    }

    /// An optional number field (integer or float).
    pub fn opt_f64(&mut self, sink: &mut Sink, key: &'static str) -> Option<f64> {
        let v = self.raw(key)?;
        match v.as_f64() {
            Some(f) => Some(f),
            None => {
                sink.push(
                    self.at(key),
                    format!("expected a number, found {}", type_name(v)),
                );
                None
            }
        }
    }

    /// An optional list of strings.
    pub fn opt_str_list(&mut self, sink: &mut Sink, key: &'static str) -> Option<Vec<String>> {
        let v = self.raw(key)?;
        let path = self.at(key);
        let Value::Array(items) = v else {
            sink.push(
                path,
                format!("expected a list of strings, found {}", type_name(v)),
            );
            return None;
        };
        let mut out = Vec::with_capacity(items.len());
        let mut ok = true;
        for (i, item) in items.iter().enumerate() {
            match as_str(sink, format!("{path}[{i}]"), item) {
                Some(s) => out.push(s),
                None => ok = false,
            }
        }
        ok.then_some(out)
    }

    /// An optional mapping of string to string (scalars are turned into strings).
    pub fn opt_str_map(
        &mut self,
        sink: &mut Sink,
        key: &'static str,
    ) -> Option<BTreeMap<String, String>> {
        let v = self.raw(key)?;
        let path = self.at(key);
        let Value::Object(m) = v else {
            sink.push(path, format!("expected a mapping, found {}", type_name(v)));
            return None;
        };
        let mut out = BTreeMap::new();
        let mut ok = true;
        for (k, v) in m {
            let s = match v {
                Value::String(s) => s.clone(),
                Value::Number(n) => n.to_string(),
                Value::Bool(b) => b.to_string(),
                other => {
                    sink.push(
                        join(&path, k),
                        format!("expected a string, found {}", type_name(other)),
                    );
                    ok = false;
                    continue;
                }
            };
            out.insert(k.clone(), s);
        }
        ok.then_some(out)
    }

    /// An optional field whose value is one of `choices` (by name).
    pub fn opt_choice<T: Copy>(
        &mut self,
        sink: &mut Sink,
        key: &'static str,
        choices: &[(&str, T)],
    ) -> Option<T> {
        let s = self.opt_str(sink, key)?;
        choice(sink, self.at(key), &s, choices)
    }

    /// Records every key that no reader consumed.
    pub fn finish(self, sink: &mut Sink) {
        for k in self.map.keys() {
            if !self.seen.contains(k.as_str()) {
                sink.push(join(&self.path, k), "unknown field");
            }
        }
    }
}

/// `v` as a string, or a recorded problem.
pub(crate) fn as_str(sink: &mut Sink, path: String, v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        other => {
            sink.push(
                path,
                format!("expected a string, found {}", type_name(other)),
            );
            None
        }
    }
}

/// `v` as an unsigned integer, or a recorded problem.
pub(crate) fn as_u64(sink: &mut Sink, path: String, v: &Value) -> Option<u64> {
    match v {
        Value::Number(n) => match n.as_u64() {
            Some(u) => Some(u),
            None if n.as_i64().is_some() => {
                sink.push(path, "must be >= 0");
                None
            }
            None => {
                sink.push(path, "expected an integer, found a fraction");
                None
            }
        },
        other => {
            sink.push(
                path,
                format!("expected an integer, found {}", type_name(other)),
            );
            None
        }
    }
}

/// `s` looked up among `choices`, or a recorded problem listing them.
pub(crate) fn choice<T: Copy>(
    sink: &mut Sink,
    path: String,
    s: &str,
    choices: &[(&str, T)],
) -> Option<T> {
    if let Some((_, t)) = choices.iter().find(|(n, _)| *n == s) {
        return Some(*t);
    }
    let names: Vec<&str> = choices.iter().map(|(n, _)| *n).collect();
    sink.push(
        path,
        format!("unknown value {s:?}; expected one of {}", names.join(", ")),
    );
    None
}

/// The closest of `candidates` to `word` if it is a plausible typo.
pub(crate) fn suggest<'c>(
    word: &str,
    candidates: impl IntoIterator<Item = &'c str>,
) -> Option<&'c str> {
    if word.len() > 64 {
        return None;
    }
    candidates
        .into_iter()
        .map(|c| (edit_distance(word, c), c))
        .filter(|(d, c)| *d > 0 && *d <= 2.max(c.len() / 4))
        .min()
        .map(|(_, c)| c)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != *cb);
            cur[j + 1] = sub.min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

/// Names of apps and tenants (`allow_underscore` false) and operators (true).
pub(crate) fn check_name(sink: &mut Sink, path: &str, name: &str, allow_underscore: bool) -> bool {
    let ok = (1..=63).contains(&name.len())
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name.chars().all(|c| {
            c.is_ascii_lowercase()
                || c.is_ascii_digit()
                || c == '-'
                || (allow_underscore && c == '_')
        });
    if !ok {
        let pattern = if allow_underscore {
            "[a-z][a-z0-9_-]{0,62}"
        } else {
            "[a-z][a-z0-9-]{0,62}"
        };
        sink.push(path, format!("{:?} must match {pattern}", truncate(name)));
    }
    ok
}

/// `s`, cut to 40 characters for an error message.
pub(crate) fn truncate(s: &str) -> String {
    if s.chars().count() > 40 {
        s.chars().take(40).collect::<String>() + "..."
    } else {
        s.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggests_close_names_only() {
        assert_eq!(suggest("sinkk", ["sink", "source"]), Some("sink"));
        assert_eq!(suggest("zzz", ["sink", "source"]), None);
        assert_eq!(suggest("sink", ["sink"]), None);
    }
}
