//! Reading base images and template files, with every problem at its path.
//!
//! What passes here is bounded (names, sizes, counts), so a master may propose it.

use super::generate::placeholders;
use super::model::*;
use super::params::{scalar, valid_param_name};
use super::*;
use crate::problem::{Problems, Sink};
use crate::spec::reader::{choice, join, type_name, Obj};
use crate::spec::{
    check_name, read_document, resources, valid_image_ref, Resources, SpecFormat,
    CONTAINER_NETWORKS, SCENARIOS,
};
use serde_json::Value;
use std::collections::BTreeMap;

/// The fields of a base image as a client gives them (names, not enums).
#[derive(Clone, Debug, Default)]
pub struct BaseImageFields<'a> {
    /// Catalog name.
    pub name: &'a str,
    /// Image reference.
    pub image: &'a str,
    /// `training`, `inference` or `general`.
    pub scenario: &'a str,
    /// `none` (or `cpu`), `nvidia`, `amd`, `ascend`, `intel`.
    pub vendor: &'a str,
    /// Framework name, e.g. `pytorch`, `onnx`, `none`.
    pub framework: &'a str,
    /// Free text.
    pub description: &'a str,
}

/// A base image from a client's fields, or every problem with the field it is in.
pub fn parse_base_image(f: &BaseImageFields<'_>) -> Result<BaseImage, Problems> {
    let mut sink = Sink::default();
    check_name(&mut sink, "name", f.name, false);
    if !valid_image_ref(f.image) {
        sink.push(
            "image",
            format!(
                "{:?} is not an image reference (name[:tag])",
                short(f.image)
            ),
        );
    }
    let scenario = choice(&mut sink, "scenario".into(), f.scenario, SCENARIOS);
    let vendor = choice(&mut sink, "vendor".into(), f.vendor, IMAGE_VENDORS);
    check_framework(&mut sink, "framework", f.framework);
    check_description(&mut sink, "description", f.description);
    match (scenario, vendor) {
        (Some(scenario), Some(vendor)) if sink.problems.is_empty() => Ok(BaseImage {
            name: f.name.to_string(),
            image: f.image.to_string(),
            scenario,
            vendor,
            framework: f.framework.to_string(),
            description: f.description.to_string(),
        }),
        _ => Err(Problems(sink.problems)),
    }
}

/// A template from its file (YAML or JSON), or every problem with its path.
pub fn parse_template(text: &str, format: SpecFormat) -> Result<Template, Problems> {
    let doc = read_document(text, format, MAX_TEMPLATE_BYTES)?;
    // Named like a spec's root (`(document)`): the root's own path is empty, and a
    // problem must say where it is (found by tests/fuzz_spec.rs).
    if !doc.is_object() {
        return Err(Problems(vec![crate::problem::Problem::new(
            "(document)",
            format!("expected a mapping, found {}", type_name(&doc)),
        )]));
    }
    let mut sink = Sink::default();
    let Some(mut o) = Obj::new(&mut sink, String::new(), &doc) else {
        return Err(Problems(sink.problems));
    };
    let name = o.req_str(&mut sink, "name");
    if let Some(n) = &name {
        check_name(&mut sink, "name", n, false);
    }
    let description = o.opt_str(&mut sink, "description").unwrap_or_default();
    check_description(&mut sink, "description", &description);
    let base_image = match o.raw("base_image") {
        Some(v) => selector(&mut sink, v),
        None => Selector::default(),
    };
    let command = o.opt_str_list(&mut sink, "command").unwrap_or_default();
    if command.len() > MAX_ITEMS {
        sink.push("command", format!("at most {MAX_ITEMS} arguments"));
    }
    let env = o.opt_str_map(&mut sink, "env").unwrap_or_default();
    if env.len() > MAX_ITEMS {
        sink.push("env", format!("at most {MAX_ITEMS} variables"));
    }
    let protocol = o
        .opt_choice(
            &mut sink,
            "protocol",
            &[
                ("framed", crate::spec::PeProtocol::Framed),
                ("lines", crate::spec::PeProtocol::Lines),
            ],
        )
        .unwrap_or_default();
    let network = o
        .opt_choice(&mut sink, "network", CONTAINER_NETWORKS)
        .unwrap_or_default();
    let writable_rootfs = o.opt_bool(&mut sink, "writable_rootfs").unwrap_or(false);
    let resources = o
        .raw("resources")
        .and_then(|v| resources(&mut sink, "resources", v, true, &Resources::default()));
    let params = o
        .raw("params")
        .map(|v| params(&mut sink, v))
        .unwrap_or_default();
    o.finish(&mut sink);
    // Every `${name}` must name a declared parameter: a typo would otherwise reach a
    // container as literal text.
    for (i, arg) in command.iter().enumerate() {
        check_refs(&mut sink, &format!("command[{i}]"), arg, &params);
    }
    for (k, v) in &env {
        check_refs(&mut sink, &join("env", k), v, &params);
    }
    match name {
        Some(name) if sink.problems.is_empty() => Ok(Template {
            name,
            description,
            base_image,
            command,
            env,
            protocol,
            network,
            writable_rootfs,
            resources,
            params,
        }),
        _ => Err(Problems(sink.problems)),
    }
}

fn selector(sink: &mut Sink, v: &Value) -> Selector {
    let Some(mut o) = Obj::new(sink, "base_image".into(), v) else {
        return Selector::default();
    };
    let scenario = o.opt_choice(sink, "scenario", SCENARIOS);
    let vendor = o.opt_choice(sink, "vendor", IMAGE_VENDORS);
    let framework = o.opt_str(sink, "framework");
    if let Some(f) = &framework {
        check_framework(sink, "base_image.framework", f);
    }
    o.finish(sink);
    Selector {
        scenario,
        vendor,
        framework,
    }
}

fn params(sink: &mut Sink, v: &Value) -> BTreeMap<String, Param> {
    let Value::Object(m) = v else {
        sink.push(
            "params",
            "expected a mapping of parameter name to {default, description}",
        );
        return BTreeMap::new();
    };
    if m.len() > MAX_PARAMS {
        sink.push("params", format!("at most {MAX_PARAMS} parameters"));
    }
    let mut out = BTreeMap::new();
    for (name, decl) in m {
        let path = join("params", name);
        if !valid_param_name(name) {
            sink.push(&path, "parameter names are [a-z_][a-z0-9_]{0,62}");
        }
        let mut p = Param::default();
        // `name:` alone (null) declares a required parameter with no description.
        if !decl.is_null() {
            let Some(mut o) = Obj::new(sink, path.clone(), decl) else {
                continue;
            };
            p.default = o.raw("default").and_then(|v| {
                let s = scalar(sink, &o.at("default"), v)?;
                (s.len() <= MAX_PARAM_VALUE_BYTES).then_some(s).or_else(|| {
                    sink.push(
                        o.at("default"),
                        format!("at most {MAX_PARAM_VALUE_BYTES} bytes"),
                    );
                    None
                })
            });
            p.description = o.opt_str(sink, "description").unwrap_or_default();
            check_description(sink, &o.at("description"), &p.description);
            o.finish(sink);
        }
        out.insert(name.clone(), p);
    }
    out
}

fn check_refs(sink: &mut Sink, path: &str, text: &str, params: &BTreeMap<String, Param>) {
    match placeholders(text) {
        Err(why) => sink.push(path, why),
        Ok(names) => {
            for n in names {
                if !params.contains_key(n) {
                    sink.push(
                        path,
                        format!(
                            "\"${{{n}}}\" is not a declared parameter (declare it under params)"
                        ),
                    );
                }
            }
        }
    }
}

fn check_framework(sink: &mut Sink, path: &str, f: &str) {
    let ok = (1..=32).contains(&f.len())
        && f.starts_with(|c: char| c.is_ascii_lowercase())
        && f.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-'));
    if !ok {
        sink.push(
            path,
            format!(
                "{:?} must match [a-z][a-z0-9._-]{{0,31}} (e.g. pytorch, onnx, none)",
                short(f)
            ),
        );
    }
}

fn check_description(sink: &mut Sink, path: &str, d: &str) {
    if d.len() > MAX_DESCRIPTION_BYTES {
        sink.push(path, format!("at most {MAX_DESCRIPTION_BYTES} bytes"));
    }
}

fn short(s: &str) -> String {
    if s.chars().count() > 40 {
        s.chars().take(40).collect::<String>() + "..."
    } else {
        s.to_string()
    }
}
