//! Typed parameters of every operator kind, read with their paths.

use super::expr::parse_expr;
use super::model::*;
use super::reader::{choice, join, Obj};
use crate::problem::Sink;
use serde_json::Value;
use std::net::SocketAddr;

/// Largest generator payload, so one record always fits a frame comfortably.
pub const MAX_PAYLOAD_BYTES: u64 = 1 << 20;

/// Reads the `params` of an operator of kind `kind`. `params` is `None` when absent.
/// Returns `None` if anything is wrong (the problems are in `sink`).
pub(crate) fn parse_kind(
    sink: &mut Sink,
    kind: &str,
    params: Option<&Value>,
    path: &str,
) -> Option<OperatorKind> {
    let empty = Value::Object(Default::default());
    let v = params.unwrap_or(&empty);
    let mut o = Obj::new(sink, path.to_string(), v)?;
    let before = sink.problems.len();
    let kind = match kind {
        "source.generator" => generator(sink, &mut o).map(OperatorKind::Generator),
        "source.nexmark" => nexmark(sink, &mut o).map(OperatorKind::Nexmark),
        "source.tcp" => {
            let listen = addr(sink, &mut o, "listen");
            let format = line_format(sink, &mut o);
            let max_line_bytes = match o.opt_u64(sink, "max_line_bytes") {
                Some(n) if (1..=u64::from(MAX_MAX_LINE_BYTES)).contains(&n) => Some(Some(n as u32)),
                Some(n) => {
                    sink.push(
                        o.at("max_line_bytes"),
                        format!("{n} is outside 1..={MAX_MAX_LINE_BYTES}"),
                    );
                    None
                }
                None => Some(None),
            };
            Some(OperatorKind::SourceTcp(SourceTcpParams {
                listen: listen?,
                format,
                max_line_bytes: max_line_bytes?,
            }))
        }
        "source.file" => {
            let path = o.req_nonempty(sink, "path");
            let format = line_format(sink, &mut o);
            Some(OperatorKind::SourceFile(SourceFileParams {
                path: path?,
                format,
            }))
        }
        "map" => map(sink, &mut o).map(OperatorKind::Map),
        "filter" => filter(sink, &mut o).map(OperatorKind::Filter),
        "key_by" => {
            let field = o.req_nonempty(sink, "field");
            Some(OperatorKind::KeyBy(KeyByParams { field: field? }))
        }
        "window.count" => {
            let size_ms = window_size(sink, &mut o);
            Some(OperatorKind::WindowCount(WindowCountParams {
                size_ms: size_ms?,
            }))
        }
        "window.sum" => {
            let size_ms = window_size(sink, &mut o);
            let field = o.req_nonempty(sink, "field");
            Some(OperatorKind::WindowSum(WindowSumParams {
                size_ms: size_ms?,
                field: field?,
            }))
        }
        "window.hop" => window_hop(sink, &mut o).map(OperatorKind::WindowHop),
        "sink.file" => {
            let path = o.req_nonempty(sink, "path");
            Some(OperatorKind::SinkFile(SinkFileParams { path: path? }))
        }
        "sink.tcp" => {
            let address = addr(sink, &mut o, "address");
            Some(OperatorKind::SinkTcp(SinkTcpParams { address: address? }))
        }
        "sink.null" => Some(OperatorKind::SinkNull),
        "sink.verify" => {
            let expect = o.opt_u64(sink, "expect");
            Some(OperatorKind::SinkVerify(SinkVerifyParams { expect }))
        }
        "exec" => exec(sink, &mut o).map(OperatorKind::Exec),
        "container" => container(sink, &mut o).map(OperatorKind::Container),
        _ => unreachable!("kind names are checked before params"),
    };
    o.finish(sink);
    if sink.problems.len() > before {
        return None;
    }
    kind
}

fn positive(sink: &mut Sink, o: &mut Obj<'_>, key: &'static str) -> Option<Option<u64>> {
    match o.opt_u64(sink, key) {
        Some(0) => {
            sink.push(o.at(key), "must be > 0");
            None
        }
        other => Some(other),
    }
}

fn generator(sink: &mut Sink, o: &mut Obj<'_>) -> Option<GeneratorParams> {
    let rate = positive(sink, o, "rate");
    let count = o.opt_u64(sink, "count");
    let keys = positive(sink, o, "keys");
    let payload = o.opt_u64(sink, "payload_bytes");
    let seed = o.opt_u64(sink, "seed").unwrap_or(0);
    let wall_clock = o
        .opt_choice(sink, "event_time", &[("ids", false), ("wall", true)])
        .unwrap_or(false);
    if let Some(p) = payload.filter(|p| *p > MAX_PAYLOAD_BYTES) {
        sink.push(
            o.at("payload_bytes"),
            format!("{p} exceeds the limit of {MAX_PAYLOAD_BYTES}"),
        );
        return None;
    }
    Some(GeneratorParams {
        rate: rate?,
        count,
        keys: keys?.unwrap_or(1000),
        payload_bytes: payload.unwrap_or(100) as u32,
        seed,
        wall_clock,
    })
}

/// `key`, when given, within `1..=max` (a problem naming the field otherwise).
fn bounded(
    sink: &mut Sink,
    o: &mut Obj<'_>,
    key: &'static str,
    min: u64,
    max: u64,
) -> Option<Option<u64>> {
    match o.opt_u64(sink, key) {
        Some(n) if !(min..=max).contains(&n) => {
            sink.push(o.at(key), format!("{n} is outside {min}..={max}"));
            None
        }
        other => Some(other),
    }
}

fn nexmark(sink: &mut Sink, o: &mut Obj<'_>) -> Option<NexmarkParams> {
    let table = o.opt_choice(
        sink,
        "table",
        &[
            ("bid", NexmarkTable::Bid),
            ("auction", NexmarkTable::Auction),
            ("person", NexmarkTable::Person),
        ],
    );
    let events = bounded(sink, o, "events", 0, MAX_NEXMARK_EVENTS);
    let rate = positive(sink, o, "rate");
    let seed = o.opt_u64(sink, "seed").unwrap_or(0);
    let per_second = bounded(
        sink,
        o,
        "events_per_second",
        1,
        MAX_NEXMARK_EVENTS_PER_SECOND,
    );
    Some(NexmarkParams {
        table: table.unwrap_or_default(),
        events: events?,
        rate: rate?,
        seed,
        events_per_second: per_second?.unwrap_or(DEFAULT_NEXMARK_EVENTS_PER_SECOND),
    })
}

fn line_format(sink: &mut Sink, o: &mut Obj<'_>) -> LineFormat {
    o.opt_choice(
        sink,
        "format",
        &[("json", LineFormat::Json), ("raw", LineFormat::Raw)],
    )
    .unwrap_or_default()
}

fn addr(sink: &mut Sink, o: &mut Obj<'_>, key: &'static str) -> Option<String> {
    let s = o.req_nonempty(sink, key)?;
    if !valid_host_port(&s) {
        sink.push(o.at(key), format!("{s:?} is not host:port"));
        return None;
    }
    Some(s)
}

/// `host:port` with a non-empty host of DNS characters (or an IP) and a port number.
pub(crate) fn valid_host_port(s: &str) -> bool {
    if s.parse::<SocketAddr>().is_ok() {
        return true;
    }
    let Some((host, port)) = s.rsplit_once(':') else {
        return false;
    };
    !host.is_empty()
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'))
        && port.parse::<u16>().is_ok()
}

fn window_size(sink: &mut Sink, o: &mut Obj<'_>) -> Option<u64> {
    let v = o.required(sink, "size_ms")?;
    let n = super::reader::as_u64(sink, o.at("size_ms"), v)?;
    if n == 0 {
        sink.push(o.at("size_ms"), "must be > 0");
        return None;
    }
    // Event times are i64 ms: a longer window could not be placed on them.
    if n > i64::MAX as u64 {
        sink.push(o.at("size_ms"), format!("must be at most {}", i64::MAX));
        return None;
    }
    Some(n)
}

fn window_hop(sink: &mut Sink, o: &mut Obj<'_>) -> Option<WindowHopParams> {
    let size_ms = window_size(sink, o);
    let slide_ms = match o.required(sink, "slide_ms") {
        Some(v) => match super::reader::as_u64(sink, o.at("slide_ms"), v) {
            Some(0) => {
                sink.push(o.at("slide_ms"), "must be > 0");
                None
            }
            other => other,
        },
        None => None,
    };
    let (size_ms, slide_ms) = (size_ms?, slide_ms?);
    if size_ms % slide_ms != 0 {
        sink.push(
            o.at("size_ms"),
            format!("{size_ms} is not a multiple of slide_ms ({slide_ms})"),
        );
        return None;
    }
    if size_ms / slide_ms > MAX_HOP_WINDOWS {
        sink.push(
            o.at("slide_ms"),
            format!(
                "{slide_ms} puts each record in {} windows (size_ms / slide_ms); at most {MAX_HOP_WINDOWS}",
                size_ms / slide_ms
            ),
        );
        return None;
    }
    Some(WindowHopParams { size_ms, slide_ms })
}

fn map(sink: &mut Sink, o: &mut Obj<'_>) -> Option<MapParams> {
    let before = sink.problems.len();
    let project = o.opt_str_list(sink, "project").unwrap_or_default();
    let rename = o.opt_str_map(sink, "rename").unwrap_or_default();
    let set = o.opt_str_map(sink, "set").unwrap_or_default();
    for (field, src) in &set {
        if let Err(e) = parse_expr(src) {
            sink.push(join(&o.at("set"), field), e);
        }
    }
    if project.is_empty() && rename.is_empty() && set.is_empty() && sink.problems.len() == before {
        sink.push(
            o.path.clone(),
            "map needs at least one of project, rename, set",
        );
    }
    (sink.problems.len() == before).then_some(MapParams {
        project,
        rename,
        set,
    })
}

fn filter(sink: &mut Sink, o: &mut Obj<'_>) -> Option<FilterParams> {
    if o.has("where") {
        for other in ["field", "op", "value"] {
            if !o.has(other) {
                continue;
            }
            o.raw(other);
            sink.push(
                o.at(other),
                "a filter has either `where` or `field`, `op` and `value`, not both",
            );
        }
        let src = o.req_nonempty(sink, "where")?;
        return match parse_expr(&src) {
            Ok(e) if e.is_predicate() => Some(FilterParams::Where(Predicate { predicate: src })),
            Ok(_) => {
                sink.push(
                    o.at("where"),
                    "must give true or false: a comparison (==, !=, <, <=, >, >=), or comparisons joined by and, or, not",
                );
                None
            }
            Err(e) => {
                sink.push(o.at("where"), e);
                None
            }
        };
    }
    let field = o.req_nonempty(sink, "field");
    let op = o.required(sink, "op").and_then(|v| match v {
        Value::String(s) => choice(sink, o.at("op"), s, CMP_OPS),
        _ => {
            sink.push(o.at("op"), "expected a string");
            None
        }
    });
    let value = o.required(sink, "value").and_then(|v| match v {
        Value::String(_) | Value::Number(_) | Value::Bool(_) => Some(v.clone()),
        other => {
            sink.push(
                o.at("value"),
                format!(
                    "expected a string, number or boolean, found {}",
                    super::reader::type_name(other)
                ),
            );
            None
        }
    });
    if op == Some(CmpOp::Contains) && !matches!(value, Some(Value::String(_)) | None) {
        sink.push(o.at("value"), "op contains needs a string value");
        return None;
    }
    Some(FilterParams::Compare(Comparison {
        field: field?,
        op: op?,
        value: value?,
    }))
}

fn protocol(sink: &mut Sink, o: &mut Obj<'_>) -> PeProtocol {
    o.opt_choice(
        sink,
        "protocol",
        &[("framed", PeProtocol::Framed), ("lines", PeProtocol::Lines)],
    )
    .unwrap_or_default()
}

fn env(sink: &mut Sink, o: &mut Obj<'_>) -> Option<std::collections::BTreeMap<String, String>> {
    let env = o.opt_str_map(sink, "env").unwrap_or_default();
    let mut ok = true;
    for k in env.keys() {
        let valid = !k.is_empty()
            && !k.starts_with(|c: char| c.is_ascii_digit())
            && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid {
            sink.push(
                join(&o.at("env"), k),
                "environment names are [A-Za-z_][A-Za-z0-9_]*",
            );
            ok = false;
        }
    }
    ok.then_some(env)
}

fn exec(sink: &mut Sink, o: &mut Obj<'_>) -> Option<ExecParams> {
    let command = match o.required(sink, "command") {
        Some(_) => o.opt_str_list(sink, "command"),
        None => None,
    };
    if let Some(c) = &command {
        if c.is_empty() || c[0].trim().is_empty() {
            sink.push(o.at("command"), "must name a program");
        }
    }
    let env = env(sink, o);
    let protocol = protocol(sink, o);
    Some(ExecParams {
        command: command.filter(|c| !c.is_empty())?,
        env: env?,
        protocol,
    })
}

fn container(sink: &mut Sink, o: &mut Obj<'_>) -> Option<ContainerParams> {
    let image = o.req_nonempty(sink, "image");
    if let Some(img) = &image {
        if !valid_image_ref(img) {
            sink.push(
                o.at("image"),
                format!("{img:?} is not an image reference (name[:tag])"),
            );
        }
    }
    let command = o.opt_str_list(sink, "command").unwrap_or_default();
    let env = env(sink, o);
    let protocol = protocol(sink, o);
    // A mistyped value is recorded in `sink`, so `parse_kind` refuses the operator;
    // the defaults here never reach a spec.
    let writable_rootfs = o.opt_bool(sink, "writable_rootfs").unwrap_or(false);
    let network = o
        .opt_choice(sink, "network", CONTAINER_NETWORKS)
        .unwrap_or_default();
    Some(ContainerParams {
        image: image.filter(|i| valid_image_ref(i))?,
        command,
        env: env?,
        protocol,
        writable_rootfs,
        network,
    })
}

/// Docker's reference grammar, loosely: lowercase path components, optional tag or digest.
pub(crate) fn valid_image_ref(s: &str) -> bool {
    let (name, tag) = match s.split_once('@') {
        Some((n, d)) => (n, Some(d)),
        None => match s.rsplit_once(':') {
            Some((n, t)) if !t.contains('/') => (n, Some(t)),
            _ => (s, None),
        },
    };
    let name_ok = !name.is_empty()
        && name.len() <= 255
        && name.split('/').all(|c| {
            !c.is_empty()
                && c.chars().all(|ch| {
                    ch.is_ascii_lowercase()
                        || ch.is_ascii_digit()
                        || matches!(ch, '.' | '_' | '-' | ':')
                })
        });
    let tag_ok = tag.is_none_or(|t| {
        !t.is_empty()
            && t.len() <= 128
            && t.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | ':'))
    });
    name_ok && tag_ok
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_refs() {
        for ok in [
            "weir/infer:1",
            "busybox",
            "localhost:5000/a/b:v2",
            "x@sha256:abc",
        ] {
            assert!(valid_image_ref(ok), "{ok}");
        }
        for bad in ["", "Upper/Case", "a//b", "a:", "with space"] {
            assert!(!valid_image_ref(bad), "{bad}");
        }
    }

    /// A three-operator app whose middle operator is a container with `params`.
    fn container_app(params: &str) -> Result<crate::spec::AppSpec, crate::Problems> {
        crate::spec::parse_app(
            &format!(
                "name: c\noperators:\n\
                 - {{name: gen, kind: source.generator, params: {{count: 1}}}}\n\
                 - {{name: up, kind: container, params: {params}}}\n\
                 - {{name: out, kind: sink.null}}\n\
                 streams:\n- {{from: gen, to: up}}\n- {{from: up, to: out}}\n"
            ),
            crate::spec::SpecFormat::Yaml,
        )
    }

    fn container_params(spec: &crate::spec::AppSpec) -> &ContainerParams {
        match &spec.operator("up").unwrap().kind {
            OperatorKind::Container(p) => p,
            other => panic!("not a container: {other:?}"),
        }
    }

    #[test]
    fn container_params_default_to_a_read_only_rootfs_and_no_network() {
        let spec = container_app("{image: \"weir/m:1\"}").unwrap();
        let p = container_params(&spec);
        assert!(!p.writable_rootfs);
        assert_eq!(p.network, ContainerNetwork::None);
        // Defaults are left out when written: fingerprints (PE ids) of specs written
        // before these fields existed stay the same.
        let written = serde_json::to_value(p).unwrap();
        assert_eq!(
            written,
            serde_json::json!({"image": "weir/m:1", "protocol": "framed"})
        );
    }

    #[test]
    fn container_params_take_a_writable_rootfs_and_the_tenant_network() {
        let spec =
            container_app("{image: \"weir/m:1\", writable_rootfs: true, network: tenant}").unwrap();
        let p = container_params(&spec);
        assert!(p.writable_rootfs);
        assert_eq!(p.network, ContainerNetwork::Tenant);
        let explicit =
            container_app("{image: \"weir/m:1\", writable_rootfs: false, network: none}").unwrap();
        let p = container_params(&explicit);
        assert_eq!(
            (p.writable_rootfs, p.network),
            (false, ContainerNetwork::None)
        );
    }

    #[test]
    fn container_params_refuse_other_networks_and_non_booleans_at_their_paths() {
        let problems =
            container_app("{image: \"weir/m:1\", writable_rootfs: \"yes\", network: host}")
                .unwrap_err()
                .0;
        let found: Vec<(&str, &str)> = problems
            .iter()
            .map(|p| (p.path.as_str(), p.rule.as_str()))
            .collect();
        assert!(
            found.contains(&(
                "operators[1].params.network",
                "unknown value \"host\"; expected one of none, tenant"
            )),
            "{found:?}"
        );
        assert!(
            found.contains(&(
                "operators[1].params.writable_rootfs",
                "expected a boolean, found a string"
            )),
            "{found:?}"
        );
        for bad in ["bridge", "weir-tenant-other", "container:x"] {
            let problems = container_app(&format!("{{image: \"weir/m:1\", network: {bad:?}}}"))
                .unwrap_err()
                .0;
            assert_eq!(problems.len(), 1, "{problems:?}");
            assert_eq!(problems[0].path, "operators[1].params.network");
        }
    }

    /// A two-operator app whose source is `source.nexmark` with `params`.
    fn nexmark_app(params: &str) -> Result<crate::spec::AppSpec, crate::Problems> {
        crate::spec::parse_app(
            &format!(
                "name: n\noperators:\n\
                 - {{name: src, kind: source.nexmark, params: {params}}}\n\
                 - {{name: out, kind: sink.null}}\n\
                 streams:\n- {{from: src, to: out}}\n"
            ),
            crate::spec::SpecFormat::Yaml,
        )
    }

    #[test]
    fn nexmark_params_default_to_unbounded_bids_at_the_reference_rate() {
        let spec = nexmark_app("{}").unwrap();
        let OperatorKind::Nexmark(p) = &spec.operator("src").unwrap().kind else {
            panic!("not nexmark");
        };
        assert_eq!(
            p,
            &NexmarkParams {
                table: NexmarkTable::Bid,
                events: None,
                rate: None,
                seed: 0,
                events_per_second: DEFAULT_NEXMARK_EVENTS_PER_SECOND,
            }
        );
        let spec =
            nexmark_app("{table: person, events: 500, rate: 10, seed: 7, events_per_second: 1000}")
                .unwrap();
        let OperatorKind::Nexmark(p) = &spec.operator("src").unwrap().kind else {
            panic!("not nexmark");
        };
        assert_eq!(
            (p.table, p.events, p.rate, p.seed, p.events_per_second),
            (NexmarkTable::Person, Some(500), Some(10), 7, 1000)
        );
    }

    #[test]
    fn nexmark_params_out_of_bounds_are_refused_at_their_paths() {
        let problems = nexmark_app(
            "{table: bids, rate: 0, events_per_second: 0, events: 4611686018427387905}",
        )
        .unwrap_err()
        .0;
        let found: Vec<(&str, &str)> = problems
            .iter()
            .map(|p| (p.path.as_str(), p.rule.as_str()))
            .collect();
        assert_eq!(found.len(), 4, "{found:?}");
        assert!(
            found.contains(&(
                "operators[0].params.table",
                "unknown value \"bids\"; expected one of bid, auction, person"
            )),
            "{found:?}"
        );
        assert!(found.contains(&("operators[0].params.rate", "must be > 0")));
        assert!(found.contains(&(
            "operators[0].params.events_per_second",
            "0 is outside 1..=1000000000"
        )));
        assert!(found.contains(&(
            "operators[0].params.events",
            "4611686018427387905 is outside 0..=4611686018427387904"
        )));
        let problems = nexmark_app("{events_per_second: 1000000001, what: 1}")
            .unwrap_err()
            .0;
        assert_eq!(problems.len(), 2, "{problems:?}");
    }

    /// A source, a `window.hop` with `params` and a sink.
    fn hop_app(params: &str) -> Result<crate::spec::AppSpec, crate::Problems> {
        crate::spec::parse_app(
            &format!(
                "name: h\noperators:\n\
                 - {{name: src, kind: source.nexmark}}\n\
                 - {{name: hot, kind: window.hop, params: {params}}}\n\
                 - {{name: out, kind: sink.null}}\n\
                 streams:\n- {{from: src, to: hot, partitioning: hash}}\n- {{from: hot, to: out}}\n"
            ),
            crate::spec::SpecFormat::Yaml,
        )
    }

    #[test]
    fn window_hop_takes_a_size_that_is_a_multiple_of_the_slide() {
        let spec = hop_app("{size_ms: 10000, slide_ms: 2000}").unwrap();
        let op = spec.operator("hot").unwrap();
        assert_eq!(
            op.kind,
            OperatorKind::WindowHop(WindowHopParams {
                size_ms: 10_000,
                slide_ms: 2_000
            })
        );
        assert!(op.kind.keyed_state() && op.kind.stateful());
        // A slide equal to the size is a tumbling window.
        hop_app("{size_ms: 500, slide_ms: 500}").unwrap();
    }

    #[test]
    fn window_hop_bounds_are_refused_at_their_paths() {
        let one = |params: &str| {
            let problems = hop_app(params).unwrap_err().0;
            assert_eq!(problems.len(), 1, "{params}: {problems:?}");
            (problems[0].path.clone(), problems[0].rule.clone())
        };
        let at = |f: &str| format!("operators[1].params.{f}");
        assert_eq!(
            one("{size_ms: 10000, slide_ms: 3000}"),
            (
                at("size_ms"),
                "10000 is not a multiple of slide_ms (3000)".into()
            )
        );
        assert_eq!(
            one("{size_ms: 10000, slide_ms: 0}"),
            (at("slide_ms"), "must be > 0".into())
        );
        assert_eq!(
            one("{size_ms: 0, slide_ms: 10}"),
            (at("size_ms"), "must be > 0".into())
        );
        assert_eq!(one("{size_ms: 10000}").0, at("slide_ms"));
        assert_eq!(
            one("{size_ms: 10010, slide_ms: 10}"),
            (
                at("slide_ms"),
                "10 puts each record in 1001 windows (size_ms / slide_ms); at most 1000".into()
            )
        );
        // A slide larger than the size is not a multiple either.
        assert_eq!(one("{size_ms: 10, slide_ms: 20}").0, at("size_ms"));
    }

    #[test]
    fn host_ports() {
        assert!(valid_host_port("127.0.0.1:9000"));
        assert!(valid_host_port("sink-host:80"));
        assert!(valid_host_port("[::1]:80"));
        assert!(!valid_host_port("nohost"));
        assert!(!valid_host_port(":80"));
        assert!(!valid_host_port("h:99999"));
    }
}
