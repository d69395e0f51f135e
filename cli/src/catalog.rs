//! `weirctl template ...` and `weirctl image ...`: the job-description catalog
//! (base images and PE templates) the masters keep.
//!
//! Catalog writes carry no request id, so a call lost mid-way is not repeated on
//! another master (see [`Repeat::Unsafe`]): a repeat would only be refused as a name
//! taken or unknown, but the user should see what happened first.

use crate::online::{read_spec, Conn, Repeat};
use serde_json::{json, Value};
use weir_proto::v1 as pb;
use weir_proto::v1::weir_client::WeirClient;

/// What `weirctl image register` takes.
#[derive(clap::Args, Debug)]
pub struct Registration {
    /// Catalog name.
    name: String,
    /// The image reference containers run.
    #[arg(long)]
    image: String,
    /// training, inference or general.
    #[arg(long)]
    scenario: String,
    /// none (or cpu), nvidia, amd, ascend, intel.
    #[arg(long)]
    vendor: String,
    /// The framework it carries, e.g. pytorch, onnx, none.
    #[arg(long)]
    framework: String,
    /// Free text.
    #[arg(long, default_value = "")]
    description: String,
}

/// `weirctl image register NAME --image REF --scenario S --vendor V --framework F`.
pub async fn image_register(c: &Conn, r: &Registration) -> anyhow::Result<()> {
    let image = pb::BaseImage {
        name: r.name.clone(),
        image: r.image.clone(),
        scenario: r.scenario.clone(),
        vendor: r.vendor.clone(),
        framework: r.framework.clone(),
        description: r.description.clone(),
    };
    let req = pb::RegisterBaseImageRequest {
        image: Some(image.clone()),
    };
    c.call(Repeat::Unsafe, |ch| {
        let req = req.clone();
        async move { WeirClient::new(ch).register_base_image(req).await }
    })
    .await?;
    c.print(
        format!("registered base image {} -> {}", r.name, r.image),
        image_json(&image),
    );
    Ok(())
}

fn image_json(b: &pb::BaseImage) -> Value {
    json!({"name": b.name, "image": b.image, "scenario": b.scenario, "vendor": b.vendor,
        "framework": b.framework, "description": b.description})
}

/// `weirctl image list`.
pub async fn image_list(c: &Conn) -> anyhow::Result<()> {
    let r = c
        .call(Repeat::Safe, |ch| async move {
            WeirClient::new(ch)
                .list_base_images(pb::ListBaseImagesRequest {})
                .await
        })
        .await?
        .into_inner();
    let mut text = format!(
        "{:<20} {:<32} {:<10} {:<7} {:<12} DESCRIPTION",
        "NAME", "IMAGE", "SCENARIO", "VENDOR", "FRAMEWORK"
    );
    for b in &r.images {
        text.push_str(&format!(
            "\n{:<20} {:<32} {:<10} {:<7} {:<12} {}",
            b.name, b.image, b.scenario, b.vendor, b.framework, b.description
        ));
    }
    c.print(
        text,
        json!({"base_images": r.images.iter().map(image_json).collect::<Vec<_>>()}),
    );
    Ok(())
}

/// `weirctl image remove NAME`.
pub async fn image_remove(c: &Conn, name: &str) -> anyhow::Result<()> {
    let req = pb::RemoveBaseImageRequest { name: name.into() };
    c.call(Repeat::Unsafe, |ch| {
        let req = req.clone();
        async move { WeirClient::new(ch).remove_base_image(req).await }
    })
    .await?;
    c.print(
        format!("removed base image {name}"),
        json!({"removed": name}),
    );
    Ok(())
}

/// `weirctl template add FILE`.
pub async fn template_add(c: &Conn, file: &str) -> anyhow::Result<()> {
    let (text, format) = read_spec(file)?;
    let req = pb::AddTemplateRequest { text, format };
    let r = c
        .call(Repeat::Unsafe, |ch| {
            let req = req.clone();
            async move { WeirClient::new(ch).add_template(req).await }
        })
        .await?
        .into_inner();
    let t = r.template.unwrap_or_default();
    c.print(
        format!(
            "added template {} (base image {} -> {})",
            t.name, t.base_image, t.image
        ),
        template_json(&t),
    );
    Ok(())
}

fn template_json(t: &pb::TemplateInfo) -> Value {
    json!({"name": t.name, "description": t.description, "selects": t.selects,
        "base_image": t.base_image, "image": t.image,
        "params": t.params.iter().map(|p| json!({"name": p.name, "required": p.required,
            "default": (!p.required).then_some(&p.default_value), "description": p.description})).collect::<Vec<_>>(),
        "template": serde_json::from_str::<Value>(&t.template_json).unwrap_or(Value::Null)})
}

/// `weirctl template list`.
pub async fn template_list(c: &Conn) -> anyhow::Result<()> {
    let r = c
        .call(Repeat::Safe, |ch| async move {
            WeirClient::new(ch)
                .list_templates(pb::ListTemplatesRequest {})
                .await
        })
        .await?
        .into_inner();
    let mut text = format!(
        "{:<20} {:<16} {:<32} {:<24} DESCRIPTION",
        "NAME", "BASE IMAGE", "IMAGE", "PARAMS"
    );
    for t in &r.templates {
        let params: Vec<&str> = t.params.iter().map(|p| p.name.as_str()).collect();
        text.push_str(&format!(
            "\n{:<20} {:<16} {:<32} {:<24} {}",
            t.name,
            t.base_image,
            t.image,
            params.join(","),
            t.description
        ));
    }
    c.print(
        text,
        json!({"templates": r.templates.iter().map(template_json).collect::<Vec<_>>()}),
    );
    Ok(())
}

/// `weirctl template show NAME`: the template as a file, and what it chooses now.
pub async fn template_show(c: &Conn, name: &str) -> anyhow::Result<()> {
    let req = pb::GetTemplateRequest { name: name.into() };
    let t = c
        .call(Repeat::Safe, |ch| {
            let req = req.clone();
            async move { WeirClient::new(ch).get_template(req).await }
        })
        .await?
        .into_inner()
        .template
        .unwrap_or_default();
    let body: Value = serde_json::from_str(&t.template_json).unwrap_or(Value::Null);
    let yaml = serde_yaml_ng::to_string(&body).unwrap_or_default();
    let mut text = format!(
        "# selects: {}\n# base image now: {} -> {}\n",
        t.selects, t.base_image, t.image
    );
    for p in &t.params {
        let how = if p.required {
            "required".to_string()
        } else {
            format!("default {:?}", p.default_value)
        };
        text.push_str(&format!("# param {}: {how}\n", p.name));
    }
    text.push_str(&yaml);
    c.print(text.trim_end().to_string(), template_json(&t));
    Ok(())
}

/// `weirctl template remove NAME`.
pub async fn template_remove(c: &Conn, name: &str) -> anyhow::Result<()> {
    let req = pb::RemoveTemplateRequest { name: name.into() };
    c.call(Repeat::Unsafe, |ch| {
        let req = req.clone();
        async move { WeirClient::new(ch).remove_template(req).await }
    })
    .await?;
    c.print(format!("removed template {name}"), json!({"removed": name}));
    Ok(())
}

/// One line per operator a template generated, e.g. `score: container
/// weir-pe-score:v1 (template scorer, base image pe-cpu)`.
pub fn generated_lines(generated: &[pb::GeneratedOperator]) -> Vec<String> {
    generated
        .iter()
        .map(|g| {
            format!(
                "{}: container {} (template {}, base image {})",
                g.operator, g.image, g.template, g.base_image
            )
        })
        .collect()
}

/// The same, for `--output json`.
pub fn generated_json(generated: &[pb::GeneratedOperator]) -> Value {
    json!(generated
        .iter()
        .map(|g| json!({"operator": g.operator, "template": g.template, "base_image": g.base_image,
            "image": g.image, "spec": serde_json::from_str::<Value>(&g.operator_json).unwrap_or(Value::Null)}))
        .collect::<Vec<_>>())
}
