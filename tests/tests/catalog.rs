//! The job-description catalog on real masters: base images and templates kept in
//! Raft, a template-generated app read back, refusals that change nothing, and the
//! catalog surviving a leader failover and a master restart.

use tonic::Code;
use weir_proto::status::validation_problems;
use weir_proto::v1 as pb;
use weir_tests::{eventually, Cluster};

const SCORER: &str = include_str!("../../examples/templates/scorer.yaml");
const APP: &str = include_str!("../../examples/templates/app-scores.yaml");

fn base_image(name: &str, scenario: &str) -> pb::RegisterBaseImageRequest {
    pb::RegisterBaseImageRequest {
        image: Some(pb::BaseImage {
            name: name.into(),
            image: "weir-pe-score:v1".into(),
            scenario: scenario.into(),
            vendor: "none".into(),
            framework: "none".into(),
            description: "the scorer PE, CPU only".into(),
        }),
    }
}

fn spec(text: &str) -> pb::SubmitAppRequest {
    pb::SubmitAppRequest {
        spec: text.into(),
        format: pb::SpecFormat::Yaml as i32,
        request_id: String::new(),
        signature: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_template_generated_app_and_the_catalog_survive_failover_and_restart() {
    let mut c = Cluster::start(3).await;
    let leader = c.leader().await;
    // Through a follower: catalog calls are forwarded like the rest.
    let mut f = c.client(c.other_than(leader)).await;

    let bad = f
        .register_base_image(base_image("pe-cpu", "gaming"))
        .await
        .unwrap_err();
    assert_eq!(bad.code(), Code::InvalidArgument);
    let problems = validation_problems(&bad).expect("problems");
    assert_eq!(problems[0].path, "scenario");

    // A template with no base image to choose is refused.
    let add = pb::AddTemplateRequest {
        text: SCORER.into(),
        format: pb::SpecFormat::Yaml as i32,
    };
    let e = f.add_template(add.clone()).await.unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");

    f.register_base_image(base_image("pe-cpu", "inference"))
        .await
        .unwrap();
    let t = f
        .add_template(add.clone())
        .await
        .unwrap()
        .into_inner()
        .template
        .unwrap();
    assert_eq!(
        (t.base_image.as_str(), t.image.as_str()),
        ("pe-cpu", "weir-pe-score:v1")
    );
    assert_eq!(
        f.add_template(add).await.unwrap_err().code(),
        Code::AlreadyExists
    );

    // No worker: the app stays unplaced; what is checked is the stored version.
    f.submit_app(spec(APP)).await.unwrap();
    let unknown = APP
        .replace("name: scores", "name: other")
        .replace("template: scorer", "template: nope");
    let e = f.submit_app(spec(&unknown)).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    let problems = validation_problems(&e).expect("problems");
    assert_eq!(problems[0].path, "operators[1].template");
    assert!(
        problems[0].rule.starts_with("no template \"nope\""),
        "{problems:?}"
    );
    let apps = f.list_apps(pb::ListAppsRequest::default()).await.unwrap();
    let names: Vec<String> = apps.into_inner().apps.into_iter().map(|a| a.name).collect();
    assert_eq!(names, ["scores"]);

    // What the catalog and the app need stays.
    let e = f
        .remove_base_image(pb::RemoveBaseImageRequest {
            name: "pe-cpu".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition);
    let e = f
        .remove_template(pb::RemoveTemplateRequest {
            name: "scorer".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition);
    assert!(e.message().contains("live app \"scores\""), "{e:?}");

    // The leader goes; another one knows the catalog and the app's provenance.
    c.kill(leader).await;
    let next = c.leader().await;
    let mut n = c.client(next).await;
    let images = n
        .list_base_images(pb::ListBaseImagesRequest {})
        .await
        .unwrap()
        .into_inner()
        .images;
    assert_eq!(images.len(), 1);
    assert_eq!(images[0].scenario, "inference");
    let t = n
        .get_template(pb::GetTemplateRequest {
            name: "scorer".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .template
        .unwrap();
    assert!(t.params.iter().any(|p| p.name == "model" && !p.required));
    let app = n
        .get_app(pb::GetAppRequest {
            app: "scores".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .app
        .unwrap();
    let g = &app.versions[0].generated;
    assert_eq!(g.len(), 1);
    assert_eq!(
        (
            g[0].operator.as_str(),
            g[0].template.as_str(),
            g[0].base_image.as_str(),
            g[0].image.as_str()
        ),
        ("score", "scorer", "pe-cpu", "weir-pe-score:v1")
    );
    let op: serde_json::Value = serde_json::from_str(&g[0].operator_json).unwrap();
    assert_eq!(op["kind"], "container");
    assert_eq!(op["params"]["image"], "weir-pe-score:v1");
    // Env values may be secrets: the generated operator names its variables only.
    assert_eq!(op["params"]["env"]["WEIR_SCORE_MODEL"], "(set)");
    assert_eq!(op["params"]["env"]["WEIR_PE_LABEL"], "(set)");
    assert_eq!(op["params"]["protocol"], "framed");
    // The submitted text keeps the template form (what a rollback resubmits).
    assert!(app.versions[0].spec.contains("template: scorer"));

    // The old leader restarts from its disk and catches up with the same catalog.
    c.restart(leader).await;
    let m = &c.masters[&leader];
    eventually("the restarted master to hold the catalog", || async {
        m.node
            .state
            .read(|d| {
                (d.state.catalog.templates.contains_key("scorer")
                    && d.state.catalog.base_images.contains_key("pe-cpu"))
                .then_some(())
            })
            .await
    })
    .await;
    c.stop().await;
}
