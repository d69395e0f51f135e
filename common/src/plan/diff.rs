//! The logical diff: what happens to each operator and stream between two versions.

use super::{OperatorChange, OperatorChangeKind, StreamChange, StreamChangeKind};
use crate::fingerprint::operator_revision;
use crate::fingerprint::FnvBuild;
use crate::spec::{AppSpec, OperatorSpec, StreamKey};
use serde_json::Value;
use std::collections::{BTreeSet, HashMap as StdHashMap, HashSet as StdHashSet};

type HashMap<K, V> = StdHashMap<K, V, FnvBuild>;
type HashSet<K> = StdHashSet<K, FnvBuild>;

/// The diff of two versions.
pub(crate) struct LogicalDiff<'a> {
    pub operators: Vec<OperatorChange>,
    pub streams: Vec<StreamChange>,
    /// Revision of every operator of the old version.
    /// Revision of every operator of the old version that keeps its spec.
    pub old_revisions: HashMap<&'a str, String>,
}

/// Diffs `old` and `new` by operator name and stream key.
pub(crate) fn diff<'a>(old: &'a AppSpec, new: &'a AppSpec) -> LogicalDiff<'a> {
    // Hash maps for the lookups (names share long prefixes, so ordered maps spend
    // their time in memcmp); the output is sorted once at the end.
    let old_ops: HashMap<&str, &OperatorSpec> =
        old.operators.iter().map(|o| (o.name.as_str(), o)).collect();
    let new_ops: HashMap<&str, &OperatorSpec> =
        new.operators.iter().map(|o| (o.name.as_str(), o)).collect();
    // The revision is a fingerprint of the spec, so comparing specs decides the same
    // thing without hashing both sides.
    let revised: HashSet<&str> = old_ops
        .iter()
        .filter(|(n, a)| new_ops.get(*n).is_some_and(|b| a != &b))
        .map(|(n, _)| *n)
        .collect();
    let old_revisions: HashMap<&str, String> = old
        .operators
        .iter()
        .filter(|o| new_ops.contains_key(o.name.as_str()) && !revised.contains(o.name.as_str()))
        .map(|o| (o.name.as_str(), operator_revision(o)))
        .collect();

    let old_streams: HashMap<(&str, &str), _> = old
        .streams
        .iter()
        .map(|s| ((s.from.as_str(), s.to.as_str()), &s.partitioning))
        .collect();
    let new_streams: HashMap<(&str, &str), _> = new
        .streams
        .iter()
        .map(|s| ((s.from.as_str(), s.to.as_str()), &s.partitioning))
        .collect();
    let mut keys: Vec<(&str, &str)> = old_streams
        .keys()
        .chain(new_streams.keys())
        .copied()
        .collect::<HashSet<_>>()
        .into_iter()
        .collect();
    keys.sort_unstable();
    let mut streams = Vec::with_capacity(keys.len());
    // Operators whose PE set changes make every stream they touch reroute.
    let pes_change =
        |op: &str| revised.contains(op) || !old_ops.contains_key(op) || !new_ops.contains_key(op);
    for key in keys {
        let (o, n) = (old_streams.get(&key), new_streams.get(&key));
        let change = match (o, n) {
            (None, _) => StreamChangeKind::Added,
            (_, None) => StreamChangeKind::Removed,
            (Some(a), Some(b)) if a != b => StreamChangeKind::Repartitioned,
            _ if pes_change(key.0) || pes_change(key.1) => StreamChangeKind::Rerouted,
            _ => StreamChangeKind::Unchanged,
        };
        streams.push(StreamChange {
            stream: StreamKey {
                from: key.0.into(),
                to: key.1.into(),
            },
            change,
            old: o.map(|p| (*p).clone()),
            new: n.map(|p| (*p).clone()),
        });
    }
    let adjusted: HashSet<&str> = streams
        .iter()
        .filter(|s| s.change != StreamChangeKind::Unchanged)
        .flat_map(|s| [&*s.stream.from, &*s.stream.to])
        .collect();

    let mut names: Vec<&str> = old_ops
        .keys()
        .chain(new_ops.keys())
        .copied()
        .collect::<HashSet<_>>()
        .into_iter()
        .collect();
    names.sort_unstable();
    let operators = names
        .into_iter()
        .map(|name| {
            let (a, b) = (old_ops.get(name), new_ops.get(name));
            let (change, reasons) = match (a, b) {
                (None, Some(b)) => (
                    OperatorChangeKind::Added,
                    vec![format!("kind {}", b.kind.name())],
                ),
                (Some(_), None) => (OperatorChangeKind::Removed, vec![]),
                (Some(a), Some(b)) if revised.contains(name) => classify(a, b),
                _ if adjusted.contains(name) => (OperatorChangeKind::Rewired, vec![]),
                _ => (OperatorChangeKind::Unchanged, vec![]),
            };
            OperatorChange {
                name: name.to_string(),
                change,
                reasons,
                old_parallelism: a.map(|o| o.parallelism),
                new_parallelism: b.map(|o| o.parallelism),
            }
        })
        .collect();
    LogicalDiff {
        operators,
        streams,
        old_revisions,
    }
}

/// Replaced or rescaled, and why, for an operator whose revision changed.
fn classify(a: &OperatorSpec, b: &OperatorSpec) -> (OperatorChangeKind, Vec<String>) {
    let mut reasons = Vec::new();
    if a.kind.name() != b.kind.name() {
        reasons.push(format!(
            "kind {} -> {} (state not carried over)",
            a.kind.name(),
            b.kind.name()
        ));
    } else {
        let pa = serde_json::to_value(&a.kind).unwrap_or(Value::Null);
        let pb = serde_json::to_value(&b.kind).unwrap_or(Value::Null);
        value_diff("params", pa.get("params"), pb.get("params"), &mut reasons);
    }
    let ra = serde_json::to_value(&a.resources).unwrap_or(Value::Null);
    let rb = serde_json::to_value(&b.resources).unwrap_or(Value::Null);
    value_diff("resources", Some(&ra), Some(&rb), &mut reasons);
    let replaced = !reasons.is_empty();
    if a.parallelism != b.parallelism {
        reasons.push(format!(
            "parallelism {} -> {}",
            a.parallelism, b.parallelism
        ));
        if b.kind.keyed_state() {
            reasons.push("keyed state re-split by key group".to_string());
        }
    }
    let kind = if replaced {
        OperatorChangeKind::Replaced
    } else {
        OperatorChangeKind::Rescaled
    };
    (kind, reasons)
}

/// Appends `path: old -> new` for every leaf that differs.
fn value_diff(path: &str, a: Option<&Value>, b: Option<&Value>, out: &mut Vec<String>) {
    match (a, b) {
        (Some(Value::Object(x)), Some(Value::Object(y))) => {
            let keys: BTreeSet<&String> = x.keys().chain(y.keys()).collect();
            for k in keys {
                value_diff(&format!("{path}.{k}"), x.get(k), y.get(k), out);
            }
        }
        (x, y) if x == y => {}
        // Environment values may be secrets: a plan says only that one changed.
        (x, y) if path.starts_with("params.env.") => {
            let shown = |v: Option<&Value>| if v.is_some() { "(set)" } else { "(unset)" };
            out.push(format!(
                "{path}: {} -> {} (value changed)",
                shown(x),
                shown(y)
            ))
        }
        (x, y) => out.push(format!("{path}: {} -> {}", short(x), short(y))),
    }
}

fn short(v: Option<&Value>) -> String {
    let s = v.map_or_else(|| "(none)".to_string(), |v| v.to_string());
    if s.chars().count() > 48 {
        s.chars().take(45).collect::<String>() + "..."
    } else {
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::{parse_app, SpecFormat};

    fn app(token: &str) -> AppSpec {
        parse_app(
            &format!(
                r#"
name: s
operators:
  - {{name: gen, kind: source.generator, params: {{count: 1}}}}
  - {{name: prog, kind: exec, params: {{command: [cat], env: {{TOKEN: "{token}"}}}}}}
  - {{name: out, kind: sink.null}}
streams:
  - {{from: gen, to: prog}}
  - {{from: prog, to: out}}
"#
            ),
            SpecFormat::Yaml,
        )
        .unwrap()
    }

    #[test]
    fn env_changes_name_the_variable_not_the_values() {
        let (old, new) = (app("old-secret-1"), app("new-secret-2"));
        let (_, reasons) = classify(old.operator("prog").unwrap(), new.operator("prog").unwrap());
        assert_eq!(
            reasons,
            vec!["params.env.TOKEN: (set) -> (set) (value changed)".to_string()]
        );
    }
}
