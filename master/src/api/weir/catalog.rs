//! The catalog RPCs of `weir.v1.Weir`: base images and PE templates. Inputs are
//! checked and bounded here, with the problem's field named, before anything is
//! proposed; the state machine checks the catalog rules again at commit.

use super::*;
use crate::state::{CatalogError, Entry};
use weir_common::catalog::{
    parse_base_image, parse_template, BaseImage, BaseImageFields, Catalog, Template,
};

/// Longest catalog name: the rest of a request naming one is refused unread.
const MAX_NAME_BYTES: usize = 63;

fn check_name_len(name: &str) -> Result<(), Status> {
    if name.len() > MAX_NAME_BYTES {
        return Err(Status::invalid_argument(format!(
            "name: at most {MAX_NAME_BYTES} bytes (got {})",
            name.len()
        )));
    }
    Ok(())
}

fn not_found(entry: Entry, name: &str) -> Status {
    command_status(&CommandError::Catalog(CatalogError::NotFound {
        entry,
        name: name.to_string(),
    }))
}

/// A base image as the API shows it.
fn base_image_view(b: &BaseImage) -> pb::BaseImage {
    pb::BaseImage {
        name: b.name.clone(),
        image: b.image.clone(),
        scenario: weir_common::catalog::scenario_name(b.scenario).to_string(),
        vendor: b.vendor.to_string(),
        framework: b.framework.clone(),
        description: b.description.clone(),
    }
}

/// A template as the API shows it, with the base image it chooses in `catalog`.
fn template_view(t: &Template, catalog: &Catalog) -> pb::TemplateInfo {
    let base = catalog.select(&t.base_image);
    pb::TemplateInfo {
        name: t.name.clone(),
        description: t.description.clone(),
        selects: t.base_image.to_string(),
        base_image: base.map(|b| b.name.clone()).unwrap_or_default(),
        image: base.map(|b| b.image.clone()).unwrap_or_default(),
        params: t
            .params
            .iter()
            .map(|(name, p)| pb::TemplateParam {
                name: name.clone(),
                required: p.default.is_none(),
                default_value: p.default.clone().unwrap_or_default(),
                description: p.description.clone(),
            })
            .collect(),
        template_json: serde_json::to_string(t).unwrap_or_default(),
    }
}

impl WeirService {
    pub(super) async fn catalog_register_base_image(
        &self,
        req: Request<pb::RegisterBaseImageRequest>,
    ) -> Result<Reply<pb::RegisterBaseImageResponse>, Status> {
        at_leader!(self, req, register_base_image);
        authorize(&req, Action::Admin("RegisterBaseImage"))?;
        let b = req.get_ref().image.clone().unwrap_or_default();
        let image = parse_base_image(&BaseImageFields {
            name: &b.name,
            image: &b.image,
            scenario: &b.scenario,
            vendor: &b.vendor,
            framework: &b.framework,
            description: &b.description,
        })
        .map_err(problems_status)?;
        self.propose_once(Command::RegisterBaseImage { image })
            .await?;
        tracing::info!(base_image = %b.name, image = %b.image, "base image registered");
        Ok(Reply::new(pb::RegisterBaseImageResponse {}))
    }

    pub(super) async fn catalog_list_base_images(
        &self,
        req: Request<pb::ListBaseImagesRequest>,
    ) -> Result<Reply<pb::ListBaseImagesResponse>, Status> {
        at_leader!(self, req, list_base_images);
        authorize(&req, Action::ReadCluster)?;
        self.shared.linearizable().await?;
        let images = self
            .read(|s| {
                s.catalog
                    .base_images
                    .values()
                    .map(base_image_view)
                    .collect()
            })
            .await;
        Ok(Reply::new(pb::ListBaseImagesResponse { images }))
    }

    pub(super) async fn catalog_remove_base_image(
        &self,
        req: Request<pb::RemoveBaseImageRequest>,
    ) -> Result<Reply<pb::RemoveBaseImageResponse>, Status> {
        at_leader!(self, req, remove_base_image);
        authorize(&req, Action::Admin("RemoveBaseImage"))?;
        let name = req.get_ref().name.clone();
        check_name_len(&name)?;
        self.propose_once(Command::RemoveBaseImage { name: name.clone() })
            .await?;
        tracing::info!(base_image = %name, "base image removed");
        Ok(Reply::new(pb::RemoveBaseImageResponse {}))
    }

    pub(super) async fn catalog_add_template(
        &self,
        req: Request<pb::AddTemplateRequest>,
    ) -> Result<Reply<pb::AddTemplateResponse>, Status> {
        at_leader!(self, req, add_template);
        authorize(&req, Action::Admin("AddTemplate"))?;
        let r = req.get_ref();
        let template = parse_template(&r.text, spec_format(r.format)?).map_err(problems_status)?;
        let name = template.name.clone();
        self.propose_once(Command::AddTemplate { template }).await?;
        let view = self
            .read(|s| {
                s.catalog
                    .templates
                    .get(&name)
                    .map(|t| template_view(t, &s.catalog))
            })
            .await;
        tracing::info!(template = %name, "template added");
        Ok(Reply::new(pb::AddTemplateResponse { template: view }))
    }

    pub(super) async fn catalog_list_templates(
        &self,
        req: Request<pb::ListTemplatesRequest>,
    ) -> Result<Reply<pb::ListTemplatesResponse>, Status> {
        at_leader!(self, req, list_templates);
        authorize(&req, Action::ReadCluster)?;
        self.shared.linearizable().await?;
        let templates = self
            .read(|s| {
                s.catalog
                    .templates
                    .values()
                    .map(|t| template_view(t, &s.catalog))
                    .collect()
            })
            .await;
        Ok(Reply::new(pb::ListTemplatesResponse { templates }))
    }

    pub(super) async fn catalog_get_template(
        &self,
        req: Request<pb::GetTemplateRequest>,
    ) -> Result<Reply<pb::GetTemplateResponse>, Status> {
        at_leader!(self, req, get_template);
        authorize(&req, Action::ReadCluster)?;
        self.shared.linearizable().await?;
        let name = &req.get_ref().name;
        check_name_len(name)?;
        let template = self
            .read(|s| {
                s.catalog
                    .templates
                    .get(name)
                    .map(|t| template_view(t, &s.catalog))
            })
            .await
            .ok_or_else(|| not_found(Entry::Template, name))?;
        Ok(Reply::new(pb::GetTemplateResponse {
            template: Some(template),
        }))
    }

    pub(super) async fn catalog_remove_template(
        &self,
        req: Request<pb::RemoveTemplateRequest>,
    ) -> Result<Reply<pb::RemoveTemplateResponse>, Status> {
        at_leader!(self, req, remove_template);
        authorize(&req, Action::Admin("RemoveTemplate"))?;
        let name = req.get_ref().name.clone();
        check_name_len(&name)?;
        self.propose_once(Command::RemoveTemplate { name: name.clone() })
            .await?;
        tracing::info!(template = %name, "template removed");
        Ok(Reply::new(pb::RemoveTemplateResponse {}))
    }
}
