//! The catalog's commands: checks and effects (pure, like the rest of the state).
//!
//! Rules that keep the catalog usable: a template is added only when some base image
//! matches it, a base image is removed only when every template keeps a match, and a
//! template is removed only when no live app's current (or upgrading-to) version was
//! generated from it. A submit or upgrade that a template generated is refused when
//! its template or base image went away between the leader's resolution and the
//! commit.

use super::*;
use std::fmt;
use weir_common::catalog::{
    parse_template, BaseImage, BaseImageFields, Provenances, Template, MAX_BASE_IMAGES,
    MAX_TEMPLATES,
};
use weir_common::spec::SpecFormat;

/// What kind of catalog entry a refusal is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Entry {
    /// A base image.
    BaseImage,
    /// A template.
    Template,
}

impl fmt::Display for Entry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::BaseImage => "base image",
            Self::Template => "template",
        })
    }
}

/// Why a catalog command was refused. Each maps to one gRPC status code (see
/// `api::command_status`).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum CatalogError {
    /// The name is taken (ALREADY_EXISTS): entries are replaced by remove and add.
    #[error("{entry} {name:?} already exists; remove it first to replace it")]
    Exists {
        /// Which kind.
        entry: Entry,
        /// Its name.
        name: String,
    },
    /// No entry with that name (NOT_FOUND).
    #[error("{entry} {name:?} not found")]
    NotFound {
        /// Which kind.
        entry: Entry,
        /// Its name.
        name: String,
    },
    /// The catalog as it stands does not allow the change (FAILED_PRECONDITION).
    #[error("{0}")]
    Precondition(String),
    /// The entry breaks a rule of its own (INVALID_ARGUMENT); the API checks the same
    /// rules before proposing, so this is a second line.
    #[error("{0}")]
    Invalid(String),
}

pub(super) fn check_register(s: &ClusterState, b: &BaseImage) -> Result<(), CatalogError> {
    let vendor = b.vendor.to_string();
    weir_common::catalog::parse_base_image(&BaseImageFields {
        name: &b.name,
        image: &b.image,
        scenario: weir_common::catalog::scenario_name(b.scenario),
        vendor: &vendor,
        framework: &b.framework,
        description: &b.description,
    })
    .map_err(|p| CatalogError::Invalid(p.to_string()))?;
    if s.catalog.base_images.contains_key(&b.name) {
        return Err(CatalogError::Exists {
            entry: Entry::BaseImage,
            name: b.name.clone(),
        });
    }
    if s.catalog.base_images.len() >= MAX_BASE_IMAGES {
        return Err(CatalogError::Precondition(format!(
            "the catalog holds {MAX_BASE_IMAGES} base images, the most it may; remove one first"
        )));
    }
    Ok(())
}

pub(super) fn check_remove_image(s: &ClusterState, name: &str) -> Result<(), CatalogError> {
    if !s.catalog.base_images.contains_key(name) {
        return Err(CatalogError::NotFound {
            entry: Entry::BaseImage,
            name: name.to_string(),
        });
    }
    let mut without = (*s.catalog).clone();
    without.base_images.remove(name);
    if let Some(t) = s
        .catalog
        .templates
        .values()
        .find(|t| without.select(&t.base_image).is_none())
    {
        return Err(CatalogError::Precondition(format!(
            "base image {name:?}: template {:?} would have no base image ({}); remove that template first",
            t.name, t.base_image
        )));
    }
    Ok(())
}

pub(super) fn check_add_template(s: &ClusterState, t: &Template) -> Result<(), CatalogError> {
    // The template must read back as itself: the same rules and bounds as a file.
    let text = serde_json::to_string(t).map_err(|e| CatalogError::Invalid(e.to_string()))?;
    match parse_template(&text, SpecFormat::Json) {
        Ok(back) if back == *t => {}
        Ok(_) => {
            return Err(CatalogError::Invalid(format!(
                "template {:?} does not read back as itself",
                t.name
            )))
        }
        Err(p) => return Err(CatalogError::Invalid(p.to_string())),
    }
    if s.catalog.templates.contains_key(&t.name) {
        return Err(CatalogError::Exists {
            entry: Entry::Template,
            name: t.name.clone(),
        });
    }
    if s.catalog.templates.len() >= MAX_TEMPLATES {
        return Err(CatalogError::Precondition(format!(
            "the catalog holds {MAX_TEMPLATES} templates, the most it may; remove one first"
        )));
    }
    if s.catalog.select(&t.base_image).is_none() {
        return Err(CatalogError::Precondition(format!(
            "template {:?}: base_image: no base image with {} is registered; register one first (weirctl image register)",
            t.name, t.base_image
        )));
    }
    Ok(())
}

pub(super) fn check_remove_template(s: &ClusterState, name: &str) -> Result<(), CatalogError> {
    if !s.catalog.templates.contains_key(name) {
        return Err(CatalogError::NotFound {
            entry: Entry::Template,
            name: name.to_string(),
        });
    }
    if let Some(app) = s.apps.values().find(|a| uses_template(a, name)) {
        return Err(CatalogError::Precondition(format!(
            "template {name:?} generated operators of live app {:?}; cancel the app or upgrade it off the template first",
            app.name
        )));
    }
    Ok(())
}

/// Whether a live app's current version, or the version it is upgrading to, was
/// generated from template `name` (older versions only matter to history).
fn uses_template(a: &AppRecord, name: &str) -> bool {
    a.state().is_live()
        && a.versions
            .iter()
            .filter(|v| v.version >= a.current_version)
            .any(|v| v.generated.values().any(|p| p.template == name))
}

/// The templates and base images a generated spec came from must still be there.
pub(super) fn check_generated(
    s: &ClusterState,
    generated: &Provenances,
) -> Result<(), CatalogError> {
    for (op, p) in generated {
        if !s.catalog.templates.contains_key(&p.template) {
            return Err(CatalogError::Precondition(format!(
                "operator {op:?}: template {:?} was removed meanwhile; submit again",
                p.template
            )));
        }
        if !s.catalog.base_images.contains_key(&p.base_image) {
            return Err(CatalogError::Precondition(format!(
                "operator {op:?}: base image {:?} was removed meanwhile; submit again",
                p.base_image
            )));
        }
    }
    Ok(())
}
