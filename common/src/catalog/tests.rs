use super::*;
use crate::spec::{OperatorKind, PeProtocol, Scenario, SpecFormat};
use crate::Problems;
use std::collections::BTreeMap;

const SCORER: &str = r#"
name: scorer
description: Scores each record
base_image: {scenario: inference, vendor: none, framework: onnx}
command: ["/weir-pe-score", "--threshold", "${threshold}", "--model=${model}"]
env: {MODEL: "${model}", HOME_DIR: "$HOME", LITERAL: "$${model}"}
protocol: framed
resources: {cpu: 0.5, memory_mb: 128}
params:
  threshold: {default: "0.5", description: score above which a record is flagged}
  model:
"#;

fn image(name: &str, image: &str, scenario: &str, vendor: &str, framework: &str) -> BaseImage {
    parse_base_image(&BaseImageFields {
        name,
        image,
        scenario,
        vendor,
        framework,
        description: "",
    })
    .unwrap()
}

fn catalog() -> Catalog {
    let mut c = Catalog::default();
    for b in [
        image("pe-cpu", "weir-pe-score:v1", "inference", "cpu", "onnx"),
        image(
            "pe-cuda",
            "weir-pe-score:cuda",
            "inference",
            "nvidia",
            "onnx",
        ),
        image(
            "train-torch",
            "torch-train:2",
            "training",
            "nvidia",
            "pytorch",
        ),
    ] {
        c.base_images.insert(b.name.clone(), b);
    }
    let t = parse_template(SCORER, SpecFormat::Yaml).unwrap();
    c.templates.insert(t.name.clone(), t);
    c
}

/// An app whose middle operator is `op` (a flow-style YAML mapping).
fn app(op: &str) -> String {
    format!(
        "name: a\noperators:\n  - {{name: gen, kind: source.generator, params: {{count: 1, keys: 1, payload_bytes: 1}}}}\n  - {op}\n  - {{name: out, kind: sink.null}}\nstreams:\n  - {{from: gen, to: score, partitioning: round_robin}}\n  - {{from: score, to: out, partitioning: round_robin}}\n"
    )
}

fn resolve(op: &str) -> Result<Resolved, Problems> {
    parse_app_with(&app(op), SpecFormat::Yaml, Resolve::Catalog(&catalog()))
}

fn refusal(op: &str) -> Vec<String> {
    resolve(op)
        .unwrap_err()
        .0
        .iter()
        .map(ToString::to_string)
        .collect()
}

#[test]
fn substitution_replaces_placeholders_and_keeps_escapes_and_lone_dollars() {
    let v: BTreeMap<String, String> = [("a".into(), "1".into()), ("b_2".into(), "x y".into())]
        .into_iter()
        .collect();
    assert_eq!(substitute("${a}-${b_2}${a}", &v), "1-x y1");
    assert_eq!(substitute("$${a} $HOME $ 5$", &v), "${a} $HOME $ 5$");
    assert_eq!(substitute("${missing}", &v), "${missing}");
    assert_eq!(substitute("", &v), "");
}

#[test]
fn templates_refuse_undeclared_and_malformed_placeholders_at_their_paths() {
    let bad = r#"
name: t
command: ["x", "${nope}", "${unterminated"]
env: {A: "${Bad-Name}"}
params: {p: {default: "1"}}
"#;
    let p: Vec<String> = parse_template(bad, SpecFormat::Yaml)
        .unwrap_err()
        .0
        .iter()
        .map(ToString::to_string)
        .collect();
    assert!(
        p[0].starts_with("command[1]: \"${nope}\" is not a declared parameter"),
        "{p:?}"
    );
    assert!(p[1].starts_with("command[2]: unterminated"), "{p:?}");
    assert!(
        p[2].starts_with("env.A: \"${Bad-Name}\": parameter names"),
        "{p:?}"
    );
    assert_eq!(p.len(), 3, "{p:?}");
}

#[test]
fn templates_refuse_bad_fields_with_their_paths() {
    let bad = r#"
name: Scorer
base_image: {scenario: gaming, vendor: nvidia, framework: "Py Torch"}
protocol: xml
network: host
resources: {cpu: 0}
params: {"Bad": {default: [1]}}
extra: 1
"#;
    let paths: Vec<String> = parse_template(bad, SpecFormat::Yaml)
        .unwrap_err()
        .0
        .into_iter()
        .map(|p| p.path)
        .collect();
    for want in [
        "name",
        "base_image.scenario",
        "base_image.framework",
        "protocol",
        "network",
        "resources.cpu",
        "params.Bad",
        "params.Bad.default",
        "extra",
    ] {
        assert!(paths.iter().any(|p| p == want), "{want} not in {paths:?}");
    }
}

#[test]
fn a_template_written_back_reads_as_the_same_template() {
    let t = parse_template(SCORER, SpecFormat::Yaml).unwrap();
    let yaml = serde_yaml_ng::to_string(&t).unwrap();
    assert_eq!(parse_template(&yaml, SpecFormat::Yaml).unwrap(), t);
}

#[test]
fn base_images_refuse_each_bad_field_by_name() {
    let e = parse_base_image(&BaseImageFields {
        name: "PE",
        image: "Not An Image",
        scenario: "gaming",
        vendor: "ibm",
        framework: "",
        description: &"x".repeat(MAX_DESCRIPTION_BYTES + 1),
    })
    .unwrap_err();
    let paths: Vec<&str> = e.0.iter().map(|p| p.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "name",
            "image",
            "scenario",
            "vendor",
            "framework",
            "description"
        ]
    );
    assert!(e.0[3].rule.contains("none, cpu, nvidia"), "{e}");
    assert_eq!(
        image("x", "a:1", "general", "cpu", "none").vendor,
        ImageVendor::None
    );
}

#[test]
fn a_template_operator_becomes_the_container_its_template_and_base_image_describe() {
    let r = resolve(
        "{name: score, template: scorer, params: {model: m1, threshold: 0.9}, parallelism: 2}",
    )
    .unwrap();
    let op = r.spec.operator("score").unwrap();
    let OperatorKind::Container(c) = &op.kind else {
        panic!("not a container: {op:?}")
    };
    assert_eq!(c.image, "weir-pe-score:v1");
    assert_eq!(
        c.command,
        ["/weir-pe-score", "--threshold", "0.9", "--model=m1"]
    );
    assert_eq!(c.env["MODEL"], "m1");
    assert_eq!(c.env["HOME_DIR"], "$HOME");
    assert_eq!(c.env["LITERAL"], "${model}");
    assert_eq!(c.protocol, PeProtocol::Framed);
    assert!(!c.writable_rootfs);
    assert_eq!(op.parallelism, 2);
    assert_eq!((op.resources.cpu, op.resources.memory_mb), (0.5, 128));
    assert_eq!(
        r.generated["score"],
        Provenance {
            template: "scorer".into(),
            base_image: "pe-cpu".into(),
            image: "weir-pe-score:v1".into(),
        }
    );
    assert_eq!(r.generated.len(), 1);
    assert_eq!(
        r.generated["score"].to_string(),
        "template scorer, base image pe-cpu"
    );
}

#[test]
fn defaults_fill_parameters_left_out_and_the_operator_s_resources_win() {
    let r = resolve("{name: score, template: scorer, params: {model: m}, resources: {cpu: 2}}")
        .unwrap();
    let op = r.spec.operator("score").unwrap();
    let OperatorKind::Container(c) = &op.kind else {
        panic!()
    };
    assert_eq!(c.command[2], "0.5");
    assert_eq!(op.resources.cpu, 2.0);
    assert_eq!(op.resources.memory_mb, crate::spec::DEFAULT_MEMORY_MB);
}

#[test]
fn generation_is_deterministic() {
    let op = "{name: score, template: scorer, params: {model: m}}";
    assert_eq!(resolve(op).unwrap(), resolve(op).unwrap());
}

#[test]
fn an_unknown_template_is_refused_at_its_path() {
    let p = refusal("{name: score, template: scorr, params: {model: m}}");
    assert_eq!(
        p,
        ["operators[1].template: no template \"scorr\" (did you mean \"scorer\"?); see weirctl template list"]
    );
}

#[test]
fn a_missing_required_parameter_is_refused_at_its_path() {
    let p = refusal("{name: score, template: scorer}");
    assert_eq!(
        p,
        ["operators[1].params.model: required by template \"scorer\" (it has no default)"]
    );
}

#[test]
fn an_unknown_parameter_is_refused_at_its_path() {
    let p = refusal("{name: score, template: scorer, params: {model: m, modle: m}}");
    assert_eq!(
        p,
        ["operators[1].params.modle: template \"scorer\" has no parameter \"modle\"; its parameters: model, threshold"]
    );
}

#[test]
fn a_parameter_that_is_not_a_scalar_is_refused() {
    let p = refusal("{name: score, template: scorer, params: {model: [a]}}");
    assert_eq!(p.len(), 1, "{p:?}");
    assert!(
        p[0].starts_with("operators[1].params.model: expected a string"),
        "{p:?}"
    );
}

#[test]
fn no_matching_base_image_is_refused_at_the_template() {
    let mut c = catalog();
    c.base_images.remove("pe-cpu");
    let p = parse_app_with(
        &app("{name: score, template: scorer, params: {model: m}}"),
        SpecFormat::Yaml,
        Resolve::Catalog(&c),
    )
    .unwrap_err();
    assert_eq!(
        p.0[0].to_string(),
        "operators[1].template: template \"scorer\" needs a base image with scenario inference, vendor none, framework onnx; none is registered (see weirctl image list)"
    );
}

#[test]
fn kind_and_template_together_are_refused() {
    let p = refusal("{name: score, kind: map, template: scorer, params: {model: m}}");
    assert_eq!(
        p,
        ["operators[1].kind: give either kind or template, not both"]
    );
}

#[test]
fn template_problems_and_the_rest_of_the_spec_are_reported_together() {
    let text = app("{name: score, template: nope}").replace("to: out", "to: nowhere");
    let p = parse_app_with(&text, SpecFormat::Yaml, Resolve::Catalog(&catalog())).unwrap_err();
    let paths: Vec<&str> = p.0.iter().map(|p| p.path.as_str()).collect();
    assert!(paths.contains(&"operators[1].template"), "{paths:?}");
    assert!(
        paths.iter().any(|p| p.starts_with("streams[1]")),
        "{paths:?}"
    );
}

#[test]
fn base_images_are_chosen_by_scenario_vendor_and_framework() {
    let c = catalog();
    let pick = |s: Selector| c.select(&s).map(|b| b.name.as_str());
    let sel = |scenario, vendor, framework: Option<&str>| Selector {
        scenario,
        vendor,
        framework: framework.map(String::from),
    };
    assert_eq!(
        pick(sel(
            Some(Scenario::Inference),
            Some(ImageVendor::Nvidia),
            Some("onnx")
        )),
        Some("pe-cuda")
    );
    assert_eq!(
        pick(sel(
            Some(Scenario::Training),
            Some(ImageVendor::Nvidia),
            None
        )),
        Some("train-torch")
    );
    assert_eq!(
        pick(sel(Some(Scenario::Training), Some(ImageVendor::None), None)),
        None
    );
    assert_eq!(pick(sel(None, None, Some("pytorch"))), Some("train-torch"));
}

#[test]
fn several_matches_choose_the_first_base_image_by_name() {
    let mut c = catalog();
    // Registered after pe-cpu but sorted before it: the name decides, not the order.
    let b = image("a-cpu", "other:1", "inference", "none", "onnx");
    c.base_images.insert(b.name.clone(), b);
    let r = parse_app_with(
        &app("{name: score, template: scorer, params: {model: m}}"),
        SpecFormat::Yaml,
        Resolve::Catalog(&c),
    )
    .unwrap();
    assert_eq!(r.generated["score"].base_image, "a-cpu");
    assert_eq!(
        c.select(&Selector::default()).map(|b| b.name.as_str()),
        Some("a-cpu")
    );
}

#[test]
fn offline_accepts_the_template_form_and_resolves_nothing() {
    let r = parse_app_with(
        &app("{name: score, template: anything, params: {x: 1}}"),
        SpecFormat::Yaml,
        Resolve::Offline,
    )
    .unwrap();
    assert_eq!(r.generated["score"].template, "anything");
    assert!(r.generated["score"].base_image.is_empty());
    assert_eq!(
        r.generated["score"].to_string(),
        "template anything, resolved at submit"
    );
    let bad = parse_app_with(
        &app("{name: score, template: Bad, params: [1]}"),
        SpecFormat::Yaml,
        Resolve::Offline,
    )
    .unwrap_err();
    let paths: Vec<&str> = bad.0.iter().map(|p| p.path.as_str()).collect();
    assert_eq!(paths, ["operators[1].template", "operators[1].params"]);
}

#[test]
fn specs_without_templates_parse_as_before() {
    let text = app("{name: score, kind: container, params: {image: \"x:1\"}}");
    let r = parse_app_with(
        &text,
        SpecFormat::Yaml,
        Resolve::Catalog(&Catalog::default()),
    )
    .unwrap();
    assert_eq!(
        r.spec,
        crate::spec::parse_app(&text, SpecFormat::Yaml).unwrap()
    );
    assert!(r.generated.is_empty());
}
