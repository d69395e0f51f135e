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
    if let Some(cycle) = find_cycle(ops.len(), &edges) {
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

/// One cycle of the graph, if it has any, as the path from its first node back to it.
///
/// An iterative colouring depth-first search: O(operators + streams) time and memory
/// whatever the shape. It stops at the first back edge, because one cycle is enough
/// to refuse a spec and copying the DFS stack at every back edge let a spec of many
/// back edges on a long chain take quadratic time and memory inside a request.
fn find_cycle(n: usize, edges: &[(usize, usize, usize)]) -> Option<Vec<usize>> {
    let mut adj = vec![Vec::new(); n];
    for (f, t, _) in edges {
        adj[*f].push(*t);
    }
    // 0 = unvisited, 1 = on the stack, 2 = done. Iterative to stay safe on huge specs.
    let mut color = vec![0u8; n];
    for start in 0..n {
        if color[start] != 0 {
            continue;
        }
        let mut stack: Vec<(usize, usize)> = vec![(start, 0)];
        color[start] = 1;
        while let Some((node, next)) = stack.last_mut() {
            let node = *node;
            let Some(&succ) = adj[node].get(*next) else {
                color[node] = 2;
                stack.pop();
                continue;
            };
            *next += 1;
            match color[succ] {
                0 => {
                    color[succ] = 1;
                    stack.push((succ, 0));
                }
                1 => {
                    // `succ` is on the stack (colour 1): the path from it to the top,
                    // closed by this edge, is a cycle. Built once, then we stop.
                    let pos = stack.iter().position(|(v, _)| *v == succ).unwrap_or(0);
                    let mut cycle: Vec<usize> = stack[pos..].iter().map(|(v, _)| *v).collect();
                    cycle.push(succ);
                    return Some(cycle);
                }
                _ => {}
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Whether the graph has a cycle, by Kahn's algorithm (an independent oracle).
    fn kahn_has_cycle(n: usize, edges: &[(usize, usize, usize)]) -> bool {
        let mut indeg = vec![0usize; n];
        let mut adj = vec![Vec::new(); n];
        for (f, t, _) in edges {
            adj[*f].push(*t);
            indeg[*t] += 1;
        }
        let mut ready: Vec<usize> = (0..n).filter(|i| indeg[*i] == 0).collect();
        let mut seen = 0;
        while let Some(v) = ready.pop() {
            seen += 1;
            for &t in &adj[v] {
                indeg[t] -= 1;
                if indeg[t] == 0 {
                    ready.push(t);
                }
            }
        }
        seen < n
    }

    /// A reported cycle is a real closed walk over edges of the graph.
    fn assert_is_cycle(cycle: &[usize], edges: &[(usize, usize, usize)]) {
        assert!(cycle.len() >= 2, "{cycle:?}");
        assert_eq!(cycle.first(), cycle.last(), "{cycle:?}");
        let set: BTreeSet<(usize, usize)> = edges.iter().map(|(f, t, _)| (*f, *t)).collect();
        for w in cycle.windows(2) {
            assert!(set.contains(&(w[0], w[1])), "{w:?} is not an edge");
        }
    }

    #[test]
    fn long_chain_with_many_back_edges_is_linear() {
        // 100,000 operators in a chain, every one of them also feeding the first: the
        // old search copied the (up to 100,000 deep) stack at each of the 100,000 back
        // edges, 10^10 steps and as many words of memory.
        let n = 100_000;
        let mut edges: Vec<(usize, usize, usize)> = (0..n - 1).map(|i| (i, i + 1, i)).collect();
        edges.extend((1..n).map(|i| (i, 0, n + i)));
        let started = std::time::Instant::now();
        let cycle = find_cycle(n, &edges).expect("a cycle");
        assert_is_cycle(&cycle, &edges);
        // A generous bound for a debug build on a loaded machine; the search itself
        // takes milliseconds.
        assert!(started.elapsed() < std::time::Duration::from_secs(20));

        // The same chain without the back edges: a DAG.
        edges.truncate(n - 1);
        assert_eq!(find_cycle(n, &edges), None);
    }

    #[test]
    fn one_cycle_reported_per_spec() {
        let mut sink = Sink::default();
        let op = |i: usize, name: &str, kind: &'static str| DraftOp {
            path: format!("operators[{i}]"),
            name: Some(name.to_string()),
            kind_name: Some(kind),
            parallelism: Some(1),
            ..Default::default()
        };
        let ops = vec![
            op(0, "gen", "source.generator"),
            op(1, "a", "map"),
            op(2, "b", "map"),
            op(3, "c", "map"),
            op(4, "out", "sink.null"),
        ];
        let st = |i: usize, f: &str, t: &str| DraftStream {
            path: format!("streams[{i}]"),
            from: Some(f.to_string()),
            to: Some(t.to_string()),
            partitioning: Some(Partitioning::Forward),
        };
        let streams = vec![
            st(0, "gen", "a"),
            st(1, "a", "b"),
            st(2, "b", "a"),
            st(3, "b", "c"),
            st(4, "c", "a"),
            st(5, "c", "out"),
        ];
        check_graph(&mut sink, &ops, &streams);
        let cycles: Vec<String> = sink
            .problems
            .iter()
            .filter(|p| p.path == "cycle")
            .map(|p| p.rule.clone())
            .collect();
        assert_eq!(
            cycles,
            vec!["a -> b -> a (streams must form a DAG)".to_string()]
        );
    }

    proptest! {
        #[test]
        fn finds_a_cycle_exactly_when_there_is_one(
            n in 1usize..30,
            raw in proptest::collection::vec((0usize..30, 0usize..30), 0..80),
        ) {
            let edges: Vec<(usize, usize, usize)> = raw
                .into_iter()
                .filter(|(f, t)| f < &n && t < &n && f != t)
                .enumerate()
                .map(|(i, (f, t))| (f, t, i))
                .collect();
            let found = find_cycle(n, &edges);
            prop_assert_eq!(found.is_some(), kahn_has_cycle(n, &edges));
            if let Some(c) = found {
                assert_is_cycle(&c, &edges);
            }
        }
    }
}
