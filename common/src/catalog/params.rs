//! Template parameters' names and values, as both the template parser and the
//! generator read them.

use crate::problem::Sink;
use serde_json::Value;

/// A scalar value as text (parameters are text: they land in argv and env).
pub(super) fn scalar(sink: &mut Sink, path: &str, v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        other => {
            sink.push(
                path,
                format!(
                    "expected a string, number or boolean, found {}",
                    crate::spec::reader::type_name(other)
                ),
            );
            None
        }
    }
}

/// Whether `s` may name a template parameter.
pub(super) fn valid_param_name(s: &str) -> bool {
    (1..=63).contains(&s.len())
        && s.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}
