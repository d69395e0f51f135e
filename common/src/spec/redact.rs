//! Keeping the values of `params.env` out of everything shown to callers and logs.
//!
//! Environment variables are where specs pass credentials to programs (`exec`,
//! `container`). The master keeps them (workers need them to start PEs), but every
//! view of a spec it hands back (`GetApp`, history, plan reasons) shows only whether
//! each variable is set.

use super::model::{ContainerParams, ExecParams, OperatorSpec};
use serde_json::Value;
use std::collections::BTreeMap;
use std::fmt;

/// What a redacted environment value reads as.
pub const REDACTED: &str = "(set)";

/// `env` with every value replaced by [`REDACTED`], for `Debug` output.
pub(crate) fn redacted_env(env: &BTreeMap<String, String>) -> BTreeMap<&str, &'static str> {
    env.keys().map(|k| (k.as_str(), REDACTED)).collect()
}

/// Replaces every value under `params.env` of one operator (as a JSON/YAML mapping)
/// with [`REDACTED`]; true if anything was replaced.
fn redact_operator_value(op: &mut Value) -> bool {
    let Some(Value::Object(env)) = op.get_mut("params").and_then(|p| p.get_mut("env")) else {
        return false;
    };
    let mut any = false;
    for v in env.values_mut() {
        *v = Value::String(REDACTED.to_string());
        any = true;
    }
    any
}

/// An operator as JSON with its `params.env` values redacted.
pub fn redacted_operator_json(op: &OperatorSpec) -> String {
    let Ok(mut v) = serde_json::to_value(op) else {
        return String::new();
    };
    redact_operator_value(&mut v);
    serde_json::to_string(&v).unwrap_or_default()
}

/// A spec's text as submitted, with every `operators[*].params.env` value replaced by
/// [`REDACTED`]. Text without environment values comes back unchanged (comments and
/// layout kept); text with them is re-written as YAML (comments dropped), since no
/// value may survive. Text that cannot be read back is withheld entirely.
pub fn redact_spec_text(text: &str) -> String {
    // YAML is a superset of JSON: a spec submitted as JSON reads back the same way.
    let Ok(mut doc) = serde_yaml_ng::from_str::<Value>(text) else {
        return "# spec withheld: it could not be read to redact its env values\n".to_string();
    };
    let mut any = false;
    if let Some(Value::Array(ops)) = doc.get_mut("operators") {
        for op in ops {
            any |= redact_operator_value(op);
        }
    }
    if !any {
        return text.to_string();
    }
    serde_yaml_ng::to_string(&doc).unwrap_or_else(|_| {
        "# spec withheld: it could not be re-written with its env values redacted\n".to_string()
    })
}

impl fmt::Debug for ExecParams {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ExecParams")
            .field("command", &self.command)
            .field("env", &redacted_env(&self.env))
            .field("protocol", &self.protocol)
            .finish()
    }
}

impl fmt::Debug for ContainerParams {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ContainerParams")
            .field("image", &self.image)
            .field("command", &self.command)
            .field("env", &redacted_env(&self.env))
            .field("protocol", &self.protocol)
            .field("writable_rootfs", &self.writable_rootfs)
            .field("network", &self.network)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::{parse_app, OperatorKind, SpecFormat};

    const SECRET: &str = "hunter2-s3cr3t";

    fn spec_text() -> String {
        format!(
            r#"
# a comment
name: s
operators:
  - {{name: gen, kind: source.generator, params: {{count: 1}}}}
  - {{name: prog, kind: exec, params: {{command: [cat], env: {{TOKEN: "{SECRET}", MODE: plain}}}}}}
  - {{name: out, kind: sink.null}}
streams:
  - {{from: gen, to: prog}}
  - {{from: prog, to: out}}
"#
        )
    }

    #[test]
    fn spec_text_keeps_names_drops_values() {
        let text = spec_text();
        let r = redact_spec_text(&text);
        assert!(!r.contains(SECRET), "{r}");
        assert!(!r.contains("plain"), "{r}");
        // Still a valid spec, with the variables named.
        let app = parse_app(&r, SpecFormat::Yaml).unwrap();
        let OperatorKind::Exec(p) = &app.operator("prog").unwrap().kind else {
            panic!("not exec");
        };
        assert_eq!(p.env["TOKEN"], REDACTED);
        assert_eq!(p.env["MODE"], REDACTED);
    }

    #[test]
    fn text_without_env_is_unchanged() {
        let text = "# keep me\nname: s\noperators: []\nstreams: []\n";
        assert_eq!(redact_spec_text(text), text);
        assert!(redact_spec_text("{ not: [yaml").starts_with("# spec withheld"));
    }

    #[test]
    fn operator_json_and_debug_hide_values() {
        let app = parse_app(&spec_text(), SpecFormat::Yaml).unwrap();
        let op = app.operator("prog").unwrap();
        let j = redacted_operator_json(op);
        assert!(!j.contains(SECRET), "{j}");
        assert!(j.contains("TOKEN"), "{j}");
        let d = format!("{op:?}");
        assert!(!d.contains(SECRET), "{d}");
        assert!(d.contains("TOKEN"), "{d}");
    }
}
