//! Fuzzing the spec parser with proptest: arbitrary bytes, mutated real specs and
//! arbitrary JSON documents. The parser must return Ok or problems, never panic, and
//! every problem must carry a path and a rule.

use proptest::prelude::*;
use serde_json::Value;
use weir_common::spec::{parse_app, parse_app_value, SpecFormat};

const EXAMPLES: &[&str] = &[
    include_str!("../../examples/clickstream.yaml"),
    include_str!("../../examples/clickstream-v2.yaml"),
    include_str!("../../examples/log-enrichment.yaml"),
    include_str!("../../examples/log-enrichment-v2.yaml"),
    include_str!("../../examples/fraud-scoring.yaml"),
    include_str!("../../examples/fraud-scoring-v2.yaml"),
];

fn check(text: &str) {
    for format in [SpecFormat::Yaml, SpecFormat::Json] {
        if let Err(problems) = parse_app(text, format) {
            assert!(!problems.0.is_empty());
            for p in &problems.0 {
                assert!(!p.path.is_empty() && !p.rule.is_empty(), "{p:?}");
            }
        }
    }
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        prop_oneof![
            "[a-z._]{0,12}",
            Just("source.generator".to_string()),
            Just("map".to_string()),
            Just("sink.verify".to_string()),
            Just("hash".to_string()),
        ]
        .prop_map(Value::String),
    ];
    let keys = prop_oneof![
        Just("name".to_string()),
        Just("operators".to_string()),
        Just("streams".to_string()),
        Just("kind".to_string()),
        Just("params".to_string()),
        Just("from".to_string()),
        Just("to".to_string()),
        Just("parallelism".to_string()),
        Just("resources".to_string()),
        Just("gpu".to_string()),
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

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        check(&String::from_utf8_lossy(&bytes));
    }

    #[test]
    fn mutated_examples_never_panic(
        which in 0..EXAMPLES.len(),
        cuts in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0u8..3), 1..6),
    ) {
        let mut bytes = EXAMPLES[which].as_bytes().to_vec();
        for (at, byte, how) in cuts {
            if bytes.is_empty() { break; }
            let i = at.index(bytes.len());
            match how {
                0 => bytes[i] = byte,
                1 => { bytes.remove(i); }
                _ => bytes.insert(i, byte),
            }
        }
        check(&String::from_utf8_lossy(&bytes));
    }

    #[test]
    fn arbitrary_documents_never_panic(v in json_value()) {
        let _ = parse_app_value(&v);
        check(&v.to_string());
    }
}

#[test]
fn deep_nesting_is_refused_not_overflowed() {
    let deep = "[".repeat(100_000);
    check(&deep);
    let deep_map = "a: ".repeat(10_000) + "1";
    check(&deep_map);
}

#[test]
fn oversized_specs_are_refused_up_front() {
    let big = " ".repeat(weir_common::spec::MAX_SPEC_BYTES + 1);
    let err = parse_app(&big, SpecFormat::Yaml).unwrap_err();
    assert!(err.0[0].rule.contains("exceeds the limit"), "{err}");
}
