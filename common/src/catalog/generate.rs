//! From a spec whose operators may name templates to the concrete spec: each
//! `template: NAME` operator becomes the `kind: container` operator its template and
//! the chosen base image describe. Pure: the catalog is an argument.

use super::model::*;
use super::params::{scalar, valid_param_name};
use super::MAX_PARAM_VALUE_BYTES;
use crate::problem::{Problems, Sink};
use crate::spec::reader::{join, suggest, type_name};
use crate::spec::MAX_SPEC_BYTES;
use crate::spec::{check_name, parse_app_value, read_document, AppSpec, SpecFormat};
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;

/// What `template:` operators are resolved against.
#[derive(Clone, Copy, Debug)]
pub enum Resolve<'a> {
    /// The master's catalog: templates become container operators, or are refused.
    Catalog(&'a Catalog),
    /// No catalog (`weirctl validate`): only the form is checked; each such operator
    /// stands in as a container whose image is resolved at submit.
    Offline,
}

/// A spec with its templates resolved.
#[derive(Clone, Debug, PartialEq)]
pub struct Resolved {
    /// The concrete spec: template operators are `kind: container`.
    pub spec: AppSpec,
    /// Which template and base image generated which operator.
    pub generated: Provenances,
}

/// Parses a spec, resolving `template:` operators through `resolve`, then validates
/// the result as [`crate::spec::parse_app`] does. Every problem is reported at once,
/// with its path (e.g. `operators[2].template: no template "x"`).
pub fn parse_app_with(
    text: &str,
    format: SpecFormat,
    resolve: Resolve<'_>,
) -> Result<Resolved, Problems> {
    let mut doc = read_document(text, format, MAX_SPEC_BYTES)?;
    let mut sink = Sink::default();
    let generated = expand(&mut sink, &mut doc, resolve);
    match parse_app_value(&doc) {
        Ok(spec) if sink.problems.is_empty() => Ok(Resolved { spec, generated }),
        Ok(_) => Err(Problems(sink.problems)),
        Err(more) => {
            sink.problems.extend(more.0);
            Err(Problems(sink.problems))
        }
    }
}

/// Rewrites every template operator of `doc` in place. An operator that cannot be
/// resolved stands in as a placeholder container, so the rest of the spec (the graph
/// above all) is still checked and every problem reported in one go.
fn expand(sink: &mut Sink, doc: &mut Value, resolve: Resolve<'_>) -> Provenances {
    let mut out = Provenances::new();
    let Some(Value::Array(ops)) = doc.get_mut("operators") else {
        return out;
    };
    for (i, op) in ops.iter_mut().enumerate() {
        let Value::Object(o) = op else { continue };
        if !o.contains_key("template") {
            continue;
        }
        let path = format!("operators[{i}]");
        let before = sink.problems.len();
        let template = template_name(sink, &path, o);
        let values = param_values(sink, &path, o);
        let generated = match (resolve, &template, values) {
            (Resolve::Catalog(c), Some(t), Some(values)) => {
                generate(sink, &path, c, t, &values, o.contains_key("resources"))
            }
            _ => None,
        };
        let provenance = match generated {
            Some((kind, resources, p)) if sink.problems.len() == before => {
                o.insert("kind".into(), json!("container"));
                o.insert("params".into(), kind);
                if let Some(r) = resources {
                    o.insert("resources".into(), r);
                }
                p
            }
            _ => {
                let t = template.clone().unwrap_or_else(|| "unknown".into());
                o.insert("kind".into(), json!("container"));
                o.insert(
                    "params".into(),
                    json!({ "image": format!("weir-template/{t}:unresolved") }),
                );
                Provenance {
                    template: t,
                    ..Default::default()
                }
            }
        };
        o.remove("template");
        if let (Some(Value::String(name)), Some(_)) = (o.get("name"), template) {
            out.insert(name.clone(), provenance);
        }
    }
    out
}

fn template_name(sink: &mut Sink, path: &str, o: &Map<String, Value>) -> Option<String> {
    if o.contains_key("kind") {
        sink.push(join(path, "kind"), "give either kind or template, not both");
    }
    let at = join(path, "template");
    match o.get("template") {
        Some(Value::String(t)) => check_name(sink, &at, t, false).then(|| t.clone()),
        Some(other) => {
            sink.push(
                at,
                format!("expected a template name, found {}", type_name(other)),
            );
            None
        }
        None => None,
    }
}

/// The operator's `params:` as text values.
fn param_values(
    sink: &mut Sink,
    path: &str,
    o: &Map<String, Value>,
) -> Option<BTreeMap<String, String>> {
    let at = join(path, "params");
    let m = match o.get("params") {
        None | Some(Value::Null) => return Some(BTreeMap::new()),
        Some(Value::Object(m)) => m,
        Some(other) => {
            sink.push(
                at,
                format!(
                    "expected a mapping of template parameter to value, found {}",
                    type_name(other)
                ),
            );
            return None;
        }
    };
    let before = sink.problems.len();
    let mut out = BTreeMap::new();
    for (k, v) in m {
        let p = join(&at, k);
        if let Some(s) = scalar(sink, &p, v) {
            if s.len() > MAX_PARAM_VALUE_BYTES {
                sink.push(p, format!("at most {MAX_PARAM_VALUE_BYTES} bytes"));
            } else {
                out.insert(k.clone(), s);
            }
        }
    }
    (sink.problems.len() == before).then_some(out)
}

/// The container `params` (and `resources`, when the operator gives none) that
/// template `name` generates with `values`, and where they came from.
fn generate(
    sink: &mut Sink,
    path: &str,
    catalog: &Catalog,
    name: &str,
    values: &BTreeMap<String, String>,
    own_resources: bool,
) -> Option<(Value, Option<Value>, Provenance)> {
    let at = join(path, "template");
    let Some(t) = catalog.templates.get(name) else {
        let hint = suggest(name, catalog.templates.keys().map(String::as_str))
            .map(|s| format!(" (did you mean {s:?}?)"))
            .unwrap_or_default();
        sink.push(
            at,
            format!("no template {name:?}{hint}; see weirctl template list"),
        );
        return None;
    };
    let before = sink.problems.len();
    for k in values.keys().filter(|k| !t.params.contains_key(*k)) {
        let known: Vec<&str> = t.params.keys().map(String::as_str).collect();
        sink.push(
            join(&join(path, "params"), k),
            format!(
                "template {name:?} has no parameter {k:?}; its parameters: {}",
                if known.is_empty() {
                    "none".to_string()
                } else {
                    known.join(", ")
                }
            ),
        );
    }
    let mut merged = BTreeMap::new();
    for (k, p) in &t.params {
        match values.get(k).or(p.default.as_ref()) {
            Some(v) => {
                merged.insert(k.clone(), v.clone());
            }
            None => sink.push(
                join(&join(path, "params"), k),
                format!("required by template {name:?} (it has no default)"),
            ),
        }
    }
    let Some(base) = catalog.select(&t.base_image) else {
        sink.push(
            at,
            format!(
                "template {name:?} needs a base image with {}; none is registered (see weirctl image list)",
                t.base_image
            ),
        );
        return None;
    };
    if sink.problems.len() != before {
        return None;
    }
    let command: Vec<String> = t.command.iter().map(|a| substitute(a, &merged)).collect();
    let env: BTreeMap<&String, String> = t
        .env
        .iter()
        .map(|(k, v)| (k, substitute(v, &merged)))
        .collect();
    let mut params = json!({
        "image": base.image,
        "protocol": t.protocol,
        "network": t.network,
        "writable_rootfs": t.writable_rootfs,
    });
    if !command.is_empty() {
        params["command"] = json!(command);
    }
    if !env.is_empty() {
        params["env"] = json!(env);
    }
    let resources = match (&t.resources, own_resources) {
        (Some(r), false) => serde_json::to_value(r).ok(),
        _ => None,
    };
    Some((
        params,
        resources,
        Provenance {
            template: name.to_string(),
            base_image: base.name.clone(),
            image: base.image.clone(),
        },
    ))
}

/// A piece of a text with placeholders.
enum Piece<'t> {
    Text(&'t str),
    Param(&'t str),
}

/// Splits `text` into literal pieces and `${name}` placeholders; `$${` is a literal
/// `${`. Refuses an unterminated `${` or a placeholder that is not a parameter name.
fn pieces(text: &str) -> Result<Vec<Piece<'_>>, String> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(i) = rest.find('$') {
        out.push(Piece::Text(&rest[..i]));
        let tail = &rest[i..];
        if let Some(after) = tail.strip_prefix("$${") {
            out.push(Piece::Text("${"));
            rest = after;
        } else if let Some(body) = tail.strip_prefix("${") {
            let end = body
                .find('}')
                .ok_or_else(|| "unterminated \"${\" (write $${ for a literal ${)".to_string())?;
            let name = &body[..end];
            if !valid_param_name(name) {
                return Err(format!(
                    "\"${{{name}}}\": parameter names are [a-z_][a-z0-9_]{{0,62}}"
                ));
            }
            out.push(Piece::Param(name));
            rest = &body[end + 1..];
        } else {
            out.push(Piece::Text("$"));
            rest = &tail[1..];
        }
    }
    out.push(Piece::Text(rest));
    Ok(out)
}

/// The parameter names `text` refers to, in order, or why it is malformed.
pub(super) fn placeholders(text: &str) -> Result<Vec<&str>, String> {
    Ok(pieces(text)?
        .into_iter()
        .filter_map(|p| match p {
            Piece::Param(n) => Some(n),
            Piece::Text(_) => None,
        })
        .collect())
}

/// `text` with every `${name}` replaced by `values[name]` and `$${` by `${`. A
/// placeholder without a value (or a malformed text) is left as written: templates
/// are checked when they are added, so neither reaches here from the catalog.
pub fn substitute(text: &str, values: &BTreeMap<String, String>) -> String {
    let Ok(pieces) = pieces(text) else {
        return text.to_string();
    };
    let mut out = String::with_capacity(text.len());
    for p in pieces {
        match p {
            Piece::Text(t) => out.push_str(t),
            Piece::Param(n) => match values.get(n) {
                Some(v) => out.push_str(v),
                None => {
                    out.push_str("${");
                    out.push_str(n);
                    out.push('}');
                }
            },
        }
    }
    out
}
