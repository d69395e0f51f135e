//! From text (YAML or JSON) to a validated [`AppSpec`], or every problem at once.

use super::model::*;
use super::params::parse_kind;
use super::reader::{as_str, check_name, choice, suggest, truncate, type_name, Obj};
use super::validate::{check_graph, DraftOp, DraftStream};
use crate::problem::{Problem, Problems, Sink};
use serde_json::Value;

/// Largest spec accepted, in bytes; bigger input is refused before parsing.
pub const MAX_SPEC_BYTES: usize = 16 << 20;
/// Most operators one app may have.
pub const MAX_OPERATORS: usize = 100_000;

/// The text format of a spec.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SpecFormat {
    /// YAML 1.2 (a superset of JSON, so JSON text parses too).
    Yaml,
    /// JSON.
    Json,
}

impl SpecFormat {
    /// The format a file name implies: `.json` is JSON, anything else YAML.
    pub fn from_path(path: &str) -> Self {
        if path.to_ascii_lowercase().ends_with(".json") {
            Self::Json
        } else {
            Self::Yaml
        }
    }
}

/// Parses and validates a spec. Never panics; on failure returns every problem found.
pub fn parse_app(text: &str, format: SpecFormat) -> Result<AppSpec, Problems> {
    parse_app_value(&read_document(text, format, MAX_SPEC_BYTES)?)
}

/// Reads text of at most `limit` bytes as a document, or the one problem why not.
pub(crate) fn read_document(
    text: &str,
    format: SpecFormat,
    limit: usize,
) -> Result<Value, Problems> {
    if text.len() > limit {
        return Err(Problems(vec![Problem::new(
            "(document)",
            format!("{} bytes exceeds the limit of {limit}", text.len()),
        )]));
    }
    match format {
        SpecFormat::Json => serde_json::from_str(text).map_err(|e| {
            Problems(vec![Problem::new(
                "(document)",
                format!("invalid JSON: {e}"),
            )])
        }),
        SpecFormat::Yaml => serde_yaml_ng::from_str(text).map_err(|e| {
            Problems(vec![Problem::new(
                "(document)",
                format!("invalid YAML: {e}"),
            )])
        }),
    }
}

/// Validates an already-parsed document.
pub fn parse_app_value(value: &Value) -> Result<AppSpec, Problems> {
    let mut sink = Sink::default();
    let Value::Object(_) = value else {
        return Err(Problems(vec![Problem::new(
            "(document)",
            format!(
                "expected a mapping with name, operators and streams, found {}",
                type_name(value)
            ),
        )]));
    };
    let mut root = Obj::new(&mut sink, String::new(), value).expect("checked object above");
    let name = root.req_str(&mut sink, "name");
    if let Some(n) = &name {
        check_name(&mut sink, "name", n, false);
    }
    let tenant = root.opt_str(&mut sink, "tenant");
    if let Some(t) = &tenant {
        check_name(&mut sink, "tenant", t, false);
    }
    let description = root.opt_str(&mut sink, "description").unwrap_or_default();
    let priority = root
        .opt_choice(
            &mut sink,
            "priority",
            &[
                ("low", Priority::Low),
                ("normal", Priority::Normal),
                ("high", Priority::High),
            ],
        )
        .unwrap_or_default();
    let checkpoint_interval_ms = root.opt_u64(&mut sink, "checkpoint_interval_ms");
    let start = root
        .raw("start")
        .map(|v| super::start::start(&mut sink, "start", v, name.as_deref()))
        .unwrap_or_default();
    let ops: Vec<DraftOp> = list(&mut sink, &mut root, "operators")
        .map(|items| {
            items
                .iter()
                .enumerate()
                .map(|(i, v)| operator(&mut sink, i, v))
                .collect()
        })
        .unwrap_or_default();
    let streams: Vec<DraftStream> = list(&mut sink, &mut root, "streams")
        .map(|items| {
            items
                .iter()
                .enumerate()
                .map(|(i, v)| stream(&mut sink, i, v))
                .collect()
        })
        .unwrap_or_default();
    root.finish(&mut sink);
    if ops.len() > MAX_OPERATORS {
        sink.push(
            "operators",
            format!(
                "{} operators exceeds the limit of {MAX_OPERATORS}",
                ops.len()
            ),
        );
    }
    check_graph(&mut sink, &ops, &streams);

    if !sink.problems.is_empty() {
        return Err(Problems(sink.problems));
    }
    // No problems means every draft field was read successfully.
    let operators = ops
        .into_iter()
        .map(|d| d.finish())
        .collect::<Option<Vec<_>>>();
    let streams = streams
        .into_iter()
        .map(|d| d.finish())
        .collect::<Option<Vec<_>>>();
    match (name, operators, streams) {
        (Some(name), Some(operators), Some(streams)) => Ok(AppSpec {
            name,
            tenant: tenant.unwrap_or_else(default_tenant),
            description,
            priority,
            checkpoint_interval_ms,
            start,
            operators,
            streams,
        }),
        _ => Err(Problems(vec![Problem::new(
            "(document)",
            "incomplete spec",
        )])),
    }
}

fn list<'a>(sink: &mut Sink, o: &mut Obj<'a>, key: &'static str) -> Option<&'a Vec<Value>> {
    let v = o.required(sink, key)?;
    match v {
        Value::Array(items) => Some(items),
        other => {
            sink.push(
                o.at(key),
                format!("expected a list, found {}", type_name(other)),
            );
            None
        }
    }
}

fn operator(sink: &mut Sink, i: usize, v: &Value) -> DraftOp {
    let path = format!("operators[{i}]");
    let mut d = DraftOp {
        path: path.clone(),
        ..Default::default()
    };
    let Some(mut o) = Obj::new(sink, path.clone(), v) else {
        return d;
    };
    d.name = o
        .req_str(sink, "name")
        .filter(|n| check_name(sink, &o.at("name"), n, true));
    let kind_name = o
        .required(sink, "kind")
        .and_then(|v| as_str(sink, o.at("kind"), v));
    d.kind_name = kind_name
        .as_deref()
        .and_then(|k| match KIND_NAMES.iter().find(|n| **n == k) {
            Some(n) => Some(*n),
            None => {
                let hint = suggest(k, KIND_NAMES.iter().copied())
                    .map(|s| format!(" (did you mean {s:?}?)"))
                    .unwrap_or_default();
                sink.push(
                    o.at("kind"),
                    format!(
                        "unknown kind {:?}{hint}; known kinds: {}",
                        truncate(k),
                        KIND_NAMES.join(", ")
                    ),
                );
                None
            }
        });
    let params = o.raw("params");
    if let Some(k) = d.kind_name {
        d.kind = parse_kind(sink, k, params, &o.at("params"));
    }
    d.parallelism = match o.opt_u64(sink, "parallelism") {
        None if o.raw("parallelism").is_none() => Some(1),
        Some(p) if (1..=u64::from(KEY_GROUPS)).contains(&p) => Some(p as u32),
        Some(p) => {
            sink.push(
                o.at("parallelism"),
                format!("{p} is outside 1..={KEY_GROUPS}"),
            );
            None
        }
        None => None,
    };
    let gpu_ok = d.kind_name.is_none_or(runs_a_program);
    // Without a valid kind the spec is refused anyway; a program's defaults are the
    // larger.
    let defaults = Resources::for_kind(d.kind_name.unwrap_or("exec"));
    d.resources = match o.raw("resources") {
        None => Some(defaults),
        Some(v) => resources(sink, &o.at("resources"), v, gpu_ok, &defaults),
    };
    o.finish(sink);
    d
}

pub(crate) fn resources(
    sink: &mut Sink,
    path: &str,
    v: &Value,
    gpu_ok: bool,
    defaults: &Resources,
) -> Option<Resources> {
    let mut o = Obj::new(sink, path.to_string(), v)?;
    let before = sink.problems.len();
    let cpu = o.opt_f64(sink, "cpu").unwrap_or(defaults.cpu);
    if !(cpu > 0.0 && cpu <= 1024.0) {
        sink.push(o.at("cpu"), "must be > 0 and <= 1024 cores");
    }
    let memory_mb = o.opt_u64(sink, "memory_mb").unwrap_or(defaults.memory_mb);
    if memory_mb == 0 || memory_mb > 16 << 20 {
        sink.push(o.at("memory_mb"), "must be > 0 and <= 16777216 (16 TiB)");
    }
    let gpu = match o.raw("gpu") {
        None => None,
        Some(_) if !gpu_ok => {
            sink.push(
                o.at("gpu"),
                "only exec and container operators can use GPUs",
            );
            None
        }
        Some(v) => gpu(sink, &o.at("gpu"), v),
    };
    o.finish(sink);
    (sink.problems.len() == before).then_some(Resources {
        cpu,
        memory_mb,
        gpu,
    })
}

fn gpu(sink: &mut Sink, path: &str, v: &Value) -> Option<GpuRequest> {
    let mut o = Obj::new(sink, path.to_string(), v)?;
    let before = sink.problems.len();
    let count = o.opt_u64(sink, "count").unwrap_or(1);
    if !(1..=16).contains(&count) {
        sink.push(o.at("count"), "must be between 1 and 16");
    }
    let memory_mb = o
        .required(sink, "memory_mb")
        .and_then(|v| super::reader::as_u64(sink, o.at("memory_mb"), v));
    match memory_mb {
        Some(0) => sink.push(o.at("memory_mb"), "must be > 0"),
        Some(m) if m > MAX_KNOWN_GPU_MEMORY_MB => sink.push(
            o.at("memory_mb"),
            format!("{m} MiB exceeds any known device (largest: {MAX_KNOWN_GPU_MEMORY_MB} MiB)"),
        ),
        _ => {}
    }
    let vendor = o.opt_choice(sink, "vendor", VENDORS).unwrap_or_default();
    let scenario = o
        .opt_choice(sink, "scenario", SCENARIOS)
        .unwrap_or_default();
    o.finish(sink);
    (sink.problems.len() == before).then(|| GpuRequest {
        count: count as u32,
        memory_mb: memory_mb.unwrap_or(0),
        vendor,
        scenario,
    })
}

fn stream(sink: &mut Sink, i: usize, v: &Value) -> DraftStream {
    let path = format!("streams[{i}]");
    let mut d = DraftStream {
        path: path.clone(),
        ..Default::default()
    };
    let Some(mut o) = Obj::new(sink, path, v) else {
        return d;
    };
    d.from = o.req_nonempty(sink, "from");
    d.to = o.req_nonempty(sink, "to");
    d.partitioning = match o.raw("partitioning") {
        None => Some(Partitioning::Forward),
        Some(v) => partitioning(sink, &o.at("partitioning"), v),
    };
    o.finish(sink);
    d
}

const PARTITIONINGS: &[(&str, u8)] = &[
    ("forward", 0),
    ("round_robin", 1),
    ("hash", 2),
    ("broadcast", 3),
];

/// `forward`, `round_robin`, `hash`, `broadcast`, or `{kind: hash, key: FIELD}`.
fn partitioning(sink: &mut Sink, path: &str, v: &Value) -> Option<Partitioning> {
    let (kind, key) = match v {
        Value::String(s) => (
            choice(sink, path.to_string(), s, PARTITIONINGS)?,
            String::new(),
        ),
        Value::Object(_) => {
            let mut o = Obj::new(sink, path.to_string(), v)?;
            let kind = o
                .req_str(sink, "kind")
                .and_then(|s| choice(sink, o.at("kind"), &s, PARTITIONINGS));
            let key = o.opt_str(sink, "key");
            if kind.is_some_and(|k| k != 2) && key.is_some() {
                sink.push(o.at("key"), "only hash partitioning takes a key");
            }
            if key.as_deref() == Some("") {
                sink.push(
                    o.at("key"),
                    "must not be empty (leave it out to hash the record key)",
                );
            }
            o.finish(sink);
            (kind?, key.unwrap_or_default())
        }
        other => {
            sink.push(
                path,
                format!(
                    "expected a partitioning name or mapping, found {}",
                    type_name(other)
                ),
            );
            return None;
        }
    };
    Some(match kind {
        0 => Partitioning::Forward,
        1 => Partitioning::RoundRobin,
        2 => Partitioning::Hash { key },
        _ => Partitioning::Broadcast,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resources_left_out_default_by_kind() {
        let spec = parse_app(
            r#"
name: r
operators:
  - {name: gen, kind: source.generator, params: {count: 1}}
  - {name: up, kind: map, params: {set: {u: "upper(key)"}}, resources: {cpu: 1}}
  - {name: prog, kind: exec, params: {command: [cat]}}
  - {name: sized, kind: exec, params: {command: [cat]}, resources: {memory_mb: 100}}
  - {name: out, kind: sink.null}
streams:
  - {from: gen, to: up}
  - {from: up, to: prog}
  - {from: prog, to: sized}
  - {from: sized, to: out}
"#,
            SpecFormat::Yaml,
        )
        .unwrap();
        let r = |name: &str| {
            let r = &spec.operator(name).unwrap().resources;
            (r.cpu, r.memory_mb)
        };
        // Built-in kernels share the worker's runtime; programs are processes.
        let builtin = (DEFAULT_BUILTIN_CPU, DEFAULT_BUILTIN_MEMORY_MB);
        assert_eq!(r("gen"), builtin);
        assert_eq!(r("out"), builtin);
        assert_eq!(r("up"), (1.0, DEFAULT_BUILTIN_MEMORY_MB));
        assert_eq!(r("prog"), (DEFAULT_CPU, DEFAULT_MEMORY_MB));
        assert_eq!(r("sized"), (DEFAULT_CPU, 100));
    }
}
