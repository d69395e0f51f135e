//! The catalog's commands: each refusal leaves the state exactly as it was.

use super::*;
use weir_common::catalog::{
    parse_app_with, parse_base_image, parse_template, BaseImageFields, Resolve,
};
use weir_common::spec::SpecFormat;

const SCORER: &str = include_str!("../../../examples/templates/scorer.yaml");

const APP: &str = "name: scores
operators:
  - {name: gen, kind: source.generator, params: {count: 10, keys: 2, payload_bytes: 8}}
  - {name: score, template: scorer, params: {model: v2}}
  - {name: out, kind: sink.null}
streams:
  - {from: gen, to: score}
  - {from: score, to: out}
";

fn register(name: &str, scenario: &str, vendor: &str, framework: &str) -> Command {
    Command::RegisterBaseImage {
        image: parse_base_image(&BaseImageFields {
            name,
            image: "weir-pe-score:v1",
            scenario,
            vendor,
            framework,
            description: "",
        })
        .unwrap(),
    }
}

fn add_scorer() -> Command {
    Command::AddTemplate {
        template: parse_template(SCORER, SpecFormat::Yaml).unwrap(),
    }
}

/// A state with base image `pe-cpu` and template `scorer`.
fn with_catalog() -> ClusterState {
    let mut s = ClusterState::default();
    s.apply(&register("pe-cpu", "general", "none", "none"))
        .unwrap();
    s.apply(&add_scorer()).unwrap();
    s
}

fn submit(s: &ClusterState) -> Command {
    let r = parse_app_with(APP, SpecFormat::Yaml, Resolve::Catalog(&s.catalog)).unwrap();
    Command::SubmitApp {
        spec: r.spec,
        spec_text: APP.into(),
        at_ms: 10,
        request_id: String::new(),
        generated: r.generated,
        signature: None,
    }
}

/// `cmd` is refused by both `check` and `apply`, which changes nothing.
fn refused(s: &mut ClusterState, cmd: &Command) -> CatalogError {
    let before = s.clone();
    let checked = s.check(cmd).unwrap_err();
    let applied = s.apply(cmd).unwrap_err();
    assert_eq!(checked, applied);
    assert_eq!(*s, before);
    match applied {
        CommandError::Catalog(e) => e,
        other => panic!("not a catalog refusal: {other:?}"),
    }
}

fn code(e: CatalogError) -> tonic::Code {
    crate::shared::command_status(&CommandError::Catalog(e)).code()
}

#[test]
fn a_taken_name_is_refused_already_exists() {
    let mut s = with_catalog();
    let e = refused(&mut s, &register("pe-cpu", "training", "nvidia", "pytorch"));
    assert_eq!(
        e.to_string(),
        "base image \"pe-cpu\" already exists; remove it first to replace it"
    );
    assert_eq!(code(e), tonic::Code::AlreadyExists);
    let e = refused(&mut s, &add_scorer());
    assert_eq!(code(e), tonic::Code::AlreadyExists);
}

#[test]
fn unknown_names_are_refused_not_found() {
    let mut s = with_catalog();
    for cmd in [
        Command::RemoveBaseImage { name: "x".into() },
        Command::RemoveTemplate { name: "x".into() },
    ] {
        assert_eq!(code(refused(&mut s, &cmd)), tonic::Code::NotFound);
    }
}

#[test]
fn a_template_needs_a_base_image_to_choose() {
    let mut s = ClusterState::default();
    let e = refused(&mut s, &add_scorer());
    assert!(
        e.to_string()
            .contains("no base image with scenario any, vendor none, framework any is registered"),
        "{e}"
    );
    assert_eq!(code(e), tonic::Code::FailedPrecondition);
    s.apply(&register("pe-cpu", "general", "cpu", "none"))
        .unwrap();
    s.apply(&add_scorer()).unwrap();
    assert!(s.catalog.templates.contains_key("scorer"));
}

#[test]
fn a_base_image_a_template_still_needs_stays_until_another_matches() {
    let mut s = with_catalog();
    let remove = Command::RemoveBaseImage {
        name: "pe-cpu".into(),
    };
    let e = refused(&mut s, &remove);
    assert!(
        e.to_string()
            .contains("template \"scorer\" would have no base image"),
        "{e}"
    );
    assert_eq!(code(e), tonic::Code::FailedPrecondition);
    // An image the template does not select changes nothing; one it does frees pe-cpu.
    s.apply(&register("gpu", "training", "nvidia", "pytorch"))
        .unwrap();
    refused(&mut s, &remove);
    s.apply(&register("pe-cpu-2", "inference", "none", "onnx"))
        .unwrap();
    s.apply(&remove).unwrap();
    assert!(!s.catalog.base_images.contains_key("pe-cpu"));
}

#[test]
fn a_template_a_live_app_was_generated_from_stays_until_the_app_ends() {
    let mut s = with_catalog();
    s.apply(&submit(&s)).unwrap();
    assert_eq!(
        s.apps["scores"].current().generated["score"].base_image,
        "pe-cpu"
    );
    let remove = Command::RemoveTemplate {
        name: "scorer".into(),
    };
    let e = refused(&mut s, &remove);
    assert!(e.to_string().contains("live app \"scores\""), "{e}");
    assert_eq!(code(e), tonic::Code::FailedPrecondition);
    s.apply(&Command::CancelApp {
        name: "scores".into(),
        at_ms: 20,
        request_id: String::new(),
    })
    .unwrap();
    s.apply(&remove).unwrap();
    // History keeps where the cancelled app's operator came from.
    assert_eq!(
        s.apps["scores"].current().generated["score"].template,
        "scorer"
    );
}

#[test]
fn a_submit_whose_template_went_away_meanwhile_is_refused() {
    let mut s = with_catalog();
    let cmd = submit(&s);
    s.apply(&Command::RemoveTemplate {
        name: "scorer".into(),
    })
    .unwrap();
    let e = refused(&mut s, &cmd);
    assert!(
        e.to_string()
            .contains("template \"scorer\" was removed meanwhile"),
        "{e}"
    );
    assert!(s.apps.is_empty());
}

#[test]
fn an_entry_breaking_its_own_rules_is_refused_invalid_argument() {
    let mut s = with_catalog();
    let Command::RegisterBaseImage { mut image } = register("ok", "general", "none", "none") else {
        unreachable!()
    };
    image.name = "Not A Name".into();
    let e = refused(&mut s, &Command::RegisterBaseImage { image });
    assert!(
        e.to_string().contains("name: \"Not A Name\" must match"),
        "{e}"
    );
    assert_eq!(code(e), tonic::Code::InvalidArgument);
}

#[test]
fn snapshots_and_entries_written_before_the_catalog_still_read() {
    let mut s = with_catalog();
    s.apply(&submit(&s)).unwrap();
    let mut old = serde_json::to_value(&s).unwrap();
    old.as_object_mut().unwrap().remove("catalog");
    let versions = &mut old["apps"]["scores"]["versions"][0];
    versions.as_object_mut().unwrap().remove("generated");
    let back: ClusterState = serde_json::from_value(old).unwrap();
    assert!(back.catalog.templates.is_empty());
    assert!(back.apps["scores"].current().generated.is_empty());
    // And a state with a catalog round-trips.
    let text = serde_json::to_string(&s).unwrap();
    assert_eq!(serde_json::from_str::<ClusterState>(&text).unwrap(), s);
}
