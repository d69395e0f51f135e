//! Fuzzing the spec parser and validator with proptest (docs/security.md#fuzzing):
//! arbitrary bytes, byte- and line-level mutations of every spec and template in the
//! repository, and arbitrary JSON documents, through everything that reads a spec or a
//! template from a request (`parse_app`, `parse_app_with` against a catalog and
//! offline, `parse_template`). Each must return Ok or problems, never panic, every
//! problem must carry a path and a rule, and no input this small may take long.
//!
//! Cases per property: `PROPTEST_CASES` (default a few seconds' worth in a debug
//! build); `PROPTEST_CASES=200000 cargo test -p weir-common --test fuzz_spec` runs long.

use proptest::prelude::*;
use serde_json::Value;
use std::path::Path;
use std::sync::OnceLock;
use std::time::{Duration, Instant};
use weir_common::catalog::{
    parse_app_with, parse_base_image, parse_template, BaseImageFields, Catalog, Resolve,
};
use weir_common::spec::{parse_app, parse_app_value, SpecFormat};

#[path = "support/fuzz.rs"]
mod fuzz;
use fuzz::cases;

/// Longest any one input may take through every parser (debug build, busy machine):
/// far above the milliseconds they take, far below a blow-up.
const SLOW: Duration = Duration::from_secs(5);

/// YAML's structure characters, where a random byte rarely lands.
const STRUCTURE: &[u8] = b":-[]{}&*!|>#,?\n \"'";

/// Every spec and template in the repository: the seeds that mutations start from.
fn seeds() -> &'static [String] {
    static SEEDS: OnceLock<Vec<String>> = OnceLock::new();
    SEEDS.get_or_init(|| {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let mut out = Vec::new();
        for dir in ["examples", "examples/templates", "tests/specs/bad"] {
            let Ok(entries) = std::fs::read_dir(root.join(dir)) else {
                continue;
            };
            let mut paths: Vec<_> = entries.flatten().map(|e| e.path()).collect();
            paths.sort();
            for p in paths {
                if p.extension().is_some_and(|e| e == "yaml") {
                    out.push(std::fs::read_to_string(&p).unwrap());
                }
            }
        }
        assert!(out.len() > 10, "seeds not found under {}", root.display());
        out
    })
}

/// A catalog with the example template and a base image it selects.
fn catalog() -> &'static Catalog {
    static CATALOG: OnceLock<Catalog> = OnceLock::new();
    CATALOG.get_or_init(|| {
        let mut c = Catalog::default();
        let base = parse_base_image(&BaseImageFields {
            name: "pe-cpu",
            image: "weir-pe-score:v1",
            scenario: "inference",
            vendor: "none",
            framework: "none",
            description: "",
        })
        .unwrap();
        c.base_images.insert(base.name.clone(), base);
        let text = include_str!("../../examples/templates/scorer.yaml");
        let t = parse_template(text, SpecFormat::Yaml).unwrap();
        c.templates.insert(t.name.clone(), t);
        c
    })
}

fn check_problems(problems: &weir_common::Problems) {
    assert!(!problems.0.is_empty());
    for p in &problems.0 {
        assert!(!p.path.is_empty() && !p.rule.is_empty(), "{p:?}");
    }
}

/// Runs `text` through every reader of specs and templates, in both formats.
fn check(text: &str) {
    check_within(text, SLOW);
}

/// [`check`], for inputs far larger than the fuzzers', with their own time bound.
fn check_within(text: &str, slow: Duration) {
    let started = Instant::now();
    for format in [SpecFormat::Yaml, SpecFormat::Json] {
        if let Err(problems) = parse_app(text, format) {
            check_problems(&problems);
        }
        for resolve in [Resolve::Catalog(catalog()), Resolve::Offline] {
            if let Err(problems) = parse_app_with(text, format, resolve) {
                check_problems(&problems);
            }
        }
        if let Err(problems) = parse_template(text, format) {
            check_problems(&problems);
        }
    }
    let took = started.elapsed();
    let head: String = text.chars().take(200).collect();
    assert!(
        took < slow,
        "{took:?} for {} bytes: {head:?}...",
        text.len()
    );
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>()
            .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        prop_oneof![
            "[a-z._]{0,12}",
            Just("source.generator".to_string()),
            Just("map".to_string()),
            Just("exec".to_string()),
            Just("container".to_string()),
            Just("sink.verify".to_string()),
            Just("hash".to_string()),
            Just("scorer".to_string()),
            Just("${model}".to_string()),
        ]
        .prop_map(Value::String),
    ];
    let keys = prop_oneof![
        Just("name".to_string()),
        Just("operators".to_string()),
        Just("streams".to_string()),
        Just("kind".to_string()),
        Just("template".to_string()),
        Just("params".to_string()),
        Just("from".to_string()),
        Just("to".to_string()),
        Just("parallelism".to_string()),
        Just("resources".to_string()),
        Just("memory_mb".to_string()),
        Just("gpu".to_string()),
        Just("env".to_string()),
        Just("command".to_string()),
        Just("partitioning".to_string()),
        "[a-z]{1,6}",
    ];
    leaf.prop_recursive(5, 64, 8, move |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            proptest::collection::vec((keys.clone(), inner), 0..6)
                .prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    })
}

/// Replaces the `n`-th node of `doc` (depth first, wrapping around) with `with`.
fn replace_node(doc: &mut Value, n: usize, with: Value) {
    fn count(v: &Value) -> usize {
        1 + match v {
            Value::Array(a) => a.iter().map(count).sum(),
            Value::Object(o) => o.values().map(count).sum(),
            _ => 0,
        }
    }
    fn walk(v: &mut Value, n: &mut usize, with: &mut Option<Value>) {
        if *n == 0 {
            if let Some(w) = with.take() {
                *v = w;
            }
            return;
        }
        *n -= 1;
        match v {
            Value::Array(a) => a.iter_mut().for_each(|c| walk(c, n, with)),
            Value::Object(o) => o.values_mut().for_each(|c| walk(c, n, with)),
            _ => {}
        }
    }
    let mut n = n % count(doc);
    walk(doc, &mut n, &mut Some(with));
}

#[test]
fn an_empty_key_is_named_in_its_problem() {
    // Found by `arbitrary_bytes_never_panic`: YAML `?` is a mapping with an empty key.
    check("?");
    let problems = parse_app("?", SpecFormat::Yaml).unwrap_err();
    assert!(
        problems
            .0
            .iter()
            .any(|p| p.path == "\"\"" && p.rule == "unknown field"),
        "{problems:?}"
    );
    let problems = parse_app(r#"{"": 1}"#, SpecFormat::Json).unwrap_err();
    assert!(problems.0.iter().any(|p| p.path == "\"\""), "{problems:?}");
}

#[test]
fn every_seed_reads_without_panic() {
    for seed in seeds() {
        check(seed);
    }
}

#[test]
fn deep_nesting_is_refused_not_overflowed() {
    // Linear work, but 100 KB through eight parsers in a debug build: a bound that
    // only catches a blow-up.
    let slow = SLOW * 12;
    let deep = "[".repeat(100_000);
    check_within(&deep, slow);
    let deep_map = "a: ".repeat(10_000) + "1";
    check_within(&deep_map, slow);
    let deep_flow = "{a: ".repeat(10_000);
    check_within(&deep_flow, slow);
}

#[test]
fn oversized_specs_are_refused_up_front() {
    let big = " ".repeat(weir_common::spec::MAX_SPEC_BYTES + 1);
    let err = parse_app(&big, SpecFormat::Yaml).unwrap_err();
    assert!(err.0[0].rule.contains("exceeds the limit"), "{err}");
}

#[test]
fn yaml_alias_bombs_are_refused_quickly() {
    // "Billion laughs": nine levels of nine aliases each expand to 9^9 nodes if
    // followed. A small document must not turn into that much work or memory.
    let mut text = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x]\n");
    for i in 1..10 {
        let p = i - 1;
        text.push_str(&format!(
            "a{i}: &a{i} [*a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}]\n"
        ));
    }
    text.push_str("name: *a9\n");
    check(&text);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases(1000)))]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        check(&String::from_utf8_lossy(&bytes));
    }

    #[test]
    fn mutated_seeds_never_panic(
        which in any::<prop::sample::Index>(),
        cuts in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0u8..4), 1..8),
    ) {
        let mut bytes = which.get(seeds()).as_bytes().to_vec();
        for (at, byte, how) in cuts {
            if bytes.is_empty() { break; }
            let i = at.index(bytes.len());
            match how {
                0 => bytes[i] = byte,
                1 => { bytes.remove(i); }
                2 => bytes.insert(i, byte),
                _ => bytes.insert(i, STRUCTURE[usize::from(byte) % STRUCTURE.len()]),
            }
        }
        check(&String::from_utf8_lossy(&bytes));
    }

    #[test]
    fn seeds_with_lines_moved_never_panic(
        which in any::<prop::sample::Index>(),
        moves in proptest::collection::vec((any::<prop::sample::Index>(), any::<prop::sample::Index>(), 0u8..3), 1..6),
    ) {
        let mut lines: Vec<String> = which.get(seeds()).lines().map(str::to_string).collect();
        for (a, b, how) in moves {
            if lines.is_empty() { break; }
            let (i, j) = (a.index(lines.len()), b.index(lines.len()));
            match how {
                0 => { let l = lines[i].clone(); lines.insert(j, l); }
                1 => { lines.remove(i); }
                _ => lines.swap(i, j),
            }
        }
        check(&lines.join("\n"));
    }

    #[test]
    fn seeds_with_a_node_replaced_never_panic(
        which in any::<prop::sample::Index>(),
        at in any::<usize>(),
        with in json_value(),
    ) {
        let seed = which.get(seeds());
        let Ok(mut doc) = serde_yaml_ng::from_str::<Value>(seed) else {
            return Ok(());
        };
        replace_node(&mut doc, at, with);
        let _ = parse_app_value(&doc);
        check(&doc.to_string());
    }

    #[test]
    fn arbitrary_documents_never_panic(v in json_value()) {
        let _ = parse_app_value(&v);
        check(&v.to_string());
    }
}

#[test]
fn a_template_that_is_not_a_mapping_is_refused_at_the_document() {
    // Found by `every_seed_reads_without_panic`: the problem had an empty path.
    for text in ["- a list", "3", "\"text\""] {
        let problems = parse_template(text, SpecFormat::Yaml).unwrap_err();
        assert_eq!(problems.0.len(), 1, "{problems:?}");
        assert_eq!(problems.0[0].path, "(document)", "{problems:?}");
    }
}
