//! Rules about the DAG as a whole: names, stream endpoints, roles, cycles, partitioning.
//!
//! They run on drafts (what could be read of each operator and stream), so that a
//! mistyped parameter in one operator does not hide a dangling stream in another.

use super::model::*;
use super::reader::suggest;
use crate::problem::Sink;
use std::collections::{BTreeMap, BTreeSet};

/// What could be read of one operator.
#[derive(Debug, Default)]
pub(crate) struct DraftOp {
    pub path: String,
    pub name: Option<String>,
    pub kind_name: Option<&'static str>,
    pub kind: Option<OperatorKind>,
    pub parallelism: Option<u32>,
    pub resources: Option<Resources>,
}

impl DraftOp {
    pub fn finish(self) -> Option<OperatorSpec> {
        Some(OperatorSpec {
            name: self.name?,
            kind: self.kind?,
            parallelism: self.parallelism?,
            resources: self.resources?,
        })
    }

    fn role(&self) -> Option<Role> {
        let k = self.kind_name?;
        Some(if k.starts_with("source.") {
            Role::Source
        } else if k.starts_with("sink.") {
            Role::Sink
        } else {
            Role::Transform
        })
    }

    fn keyed(&self) -> bool {
        self.kind_name.is_some_and(|k| k.starts_with("window."))
    }
}

/// What could be read of one stream.
#[derive(Debug, Default)]
pub(crate) struct DraftStream {
    pub path: String,
    pub from: Option<String>,
    pub to: Option<String>,
    pub partitioning: Option<Partitioning>,
}

impl DraftStream {
    pub fn finish(self) -> Option<StreamSpec> {
        Some(StreamSpec {
            from: self.from?,
            to: self.to?,
            partitioning: self.partitioning?,
        })
    }
}

/// Checks every rule that spans more than one operator or stream.
pub(crate) fn check_graph(sink: &mut Sink, ops: &[DraftOp], streams: &[DraftStream]) {
    let mut by_name: BTreeMap<&str, usize> = BTreeMap::new();
    for (i, op) in ops.iter().enumerate() {
        let Some(name) = op.name.as_deref() else {
            continue;
        };
        if let Some(first) = by_name.get(name) {
            sink.push(
                format!("{}.name", op.path),
                format!("duplicate of operators[{first}] ({name:?})"),
            );
        } else {
            by_name.insert(name, i);
        }
    }

    // Edges between known operators, in file order.
    let mut edges: Vec<(usize, usize, usize)> = Vec::new();
    let mut seen: BTreeMap<(usize, usize), usize> = BTreeMap::new();
    for (si, s) in streams.iter().enumerate() {
        let from = endpoint(
            sink,
            &by_name,
            s.from.as_deref(),
            &format!("{}.from", s.path),
        );
        let to = endpoint(sink, &by_name, s.to.as_deref(), &format!("{}.to", s.path));
        let (Some(f), Some(t)) = (from, to) else {
            continue;
        };
        if f == t {
            sink.push(
                s.path.clone(),
                format!(
                    "operator {:?} cannot feed itself",
                    s.from.as_deref().unwrap_or("")
                ),
            );
            continue;
        }
        if let Some(first) = seen.get(&(f, t)) {
            sink.push(
                s.path.clone(),
                format!(
                    "duplicate of streams[{first}] ({}->{})",
                    name(ops, f),
                    name(ops, t)
                ),
            );
            continue;
        }
        seen.insert((f, t), si);
        if ops[f].role() == Some(Role::Sink) {
            sink.push(
                format!("{}.from", s.path),
                format!("{:?} is a sink and has no output", name(ops, f)),
            );
        }
        if ops[t].role() == Some(Role::Source) {
            sink.push(
                format!("{}.to", s.path),
                format!("{:?} is a source and takes no input", name(ops, t)),
            );
        }
        check_partitioning(sink, s, &ops[f], &ops[t]);
        edges.push((f, t, si));
    }

    let has_in: BTreeSet<usize> = edges.iter().map(|e| e.1).collect();
    let has_out: BTreeSet<usize> = edges.iter().map(|e| e.0).collect();
    for (i, op) in ops.iter().enumerate() {
        let (Some(role), Some(n)) = (op.role(), op.name.as_deref()) else {
            continue;
        };
        if by_name.get(n) != Some(&i) {
            continue; // a duplicate name: already reported, and its streams are ambiguous
        }
        if role != Role::Source && !has_in.contains(&i) {
            sink.push(op.path.clone(), format!("{n:?} has no input stream"));
        }
        if role != Role::Sink && !has_out.contains(&i) {
            sink.push(
                op.path.clone(),
                format!("{n:?} has no output stream; end every branch in a sink"),
            );
        }
    }
    if !ops.is_empty() && ops.iter().all(|o| o.role().is_some()) {
        if !ops.iter().any(|o| o.role() == Some(Role::Source)) {
            sink.push("operators", "needs at least one source (source.*)");
        }
        if !ops.iter().any(|o| o.role() == Some(Role::Sink)) {
            sink.push("operators", "needs at least one sink (sink.*)");
        }
    }
    if ops.is_empty() {
        sink.push("operators", "must list at least one operator");
    }
    for cycle in find_cycles(ops.len(), &edges) {
        let names: Vec<&str> = cycle.iter().map(|i| name(ops, *i)).collect();
        sink.push(
            "cycle",
            format!("{} (streams must form a DAG)", names.join(" -> ")),
        );
    }
}

fn name(ops: &[DraftOp], i: usize) -> &str {
    ops[i].name.as_deref().unwrap_or("?")
}

fn endpoint(
    sink: &mut Sink,
    by_name: &BTreeMap<&str, usize>,
    name: Option<&str>,
    path: &str,
) -> Option<usize> {
    let name = name?;
    if let Some(i) = by_name.get(name) {
        return Some(*i);
    }
    let hint = suggest(name, by_name.keys().copied())
        .map(|s| format!(" (did you mean {s:?}?)"))
        .unwrap_or_default();
    sink.push(path, format!("no operator named {name:?}{hint}"));
    None
}

fn check_partitioning(sink: &mut Sink, s: &DraftStream, from: &DraftOp, to: &DraftOp) {
    let (Some(p), Some(pf), Some(pt)) = (&s.partitioning, from.parallelism, to.parallelism) else {
        return;
    };
    let path = format!("{}.partitioning", s.path);
    if *p == Partitioning::Forward && pf != pt {
        sink.push(
            path.clone(),
            format!(
                "forward needs equal parallelism ({}: {pf}, {}: {pt}); use round_robin or hash",
                from.name.as_deref().unwrap_or("?"),
                to.name.as_deref().unwrap_or("?")
            ),
        );
    }
    let by_record_key = matches!(p, Partitioning::Hash { key } if key.is_empty());
    if to.keyed() && pt > 1 && !by_record_key {
        sink.push(
            path,
            format!(
                "{:?} keeps keyed state over {pt} PEs; its input must be hash-partitioned on the record key (partitioning: hash)",
                to.name.as_deref().unwrap_or("?")
            ),
        );
    }
}

/// Every elementary cycle found by one depth-first search, each reported once as the
/// path from its first node back to it.
fn find_cycles(n: usize, edges: &[(usize, usize, usize)]) -> Vec<Vec<usize>> {
    let mut adj = vec![Vec::new(); n];
    for (f, t, _) in edges {
        adj[*f].push(*t);
    }
    // 0 = unvisited, 1 = on the stack, 2 = done. Iterative to stay safe on huge specs.
    let mut color = vec![0u8; n];
    let mut cycles = Vec::new();
    for start in 0..n {
        if color[start] != 0 {
            continue;
        }
        let mut stack: Vec<(usize, usize)> = vec![(start, 0)];
        color[start] = 1;
        while let Some((node, next)) = stack.last_mut() {
            let node = *node;
            if let Some(&succ) = adj[node].get(*next) {
                *next += 1;
                match color[succ] {
                    0 => {
                        color[succ] = 1;
                        stack.push((succ, 0));
                    }
                    1 => {
                        let pos = stack.iter().position(|(v, _)| *v == succ).unwrap_or(0);
                        let mut cycle: Vec<usize> = stack[pos..].iter().map(|(v, _)| *v).collect();
                        cycle.push(succ);
                        cycles.push(cycle);
                    }
                    _ => {}
                }
            } else {
                color[node] = 2;
                stack.pop();
            }
        }
    }
    cycles
}
