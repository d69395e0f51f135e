//! What the catalog holds: base images, templates, and where a generated operator
//! came from.

use crate::spec::{ContainerNetwork, PeProtocol, Resources, Scenario};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;

/// The catalog as the master keeps it, by name.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Catalog {
    /// Base images by name.
    #[serde(default)]
    pub base_images: BTreeMap<String, BaseImage>,
    /// Templates by name.
    #[serde(default)]
    pub templates: BTreeMap<String, Template>,
}

impl Catalog {
    /// The base image a template with `select` gets: the first match by name, so the
    /// choice is the same on every master and for every submit while the catalog
    /// stays the same.
    pub fn select(&self, select: &Selector) -> Option<&BaseImage> {
        self.base_images.values().find(|b| select.matches(b))
    }
}

/// A stored image a template builds on: what it is for (scenario), which
/// accelerators it drives (vendor) and which framework it carries.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BaseImage {
    /// Catalog name: `[a-z][a-z0-9-]{0,62}`.
    pub name: String,
    /// The image reference containers of it run (local: no registry).
    pub image: String,
    /// What it is for.
    pub scenario: Scenario,
    /// Which accelerators it drives; [`ImageVendor::None`] for CPU only.
    pub vendor: ImageVendor,
    /// The framework it carries, e.g. `pytorch`, `onnx`, `none`.
    pub framework: String,
    /// Free text for humans.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
}

/// The accelerator vendor a base image is built for.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum ImageVendor {
    /// CPU only.
    #[default]
    None,
    /// NVIDIA.
    Nvidia,
    /// AMD.
    Amd,
    /// Huawei Ascend.
    Ascend,
    /// Intel.
    Intel,
}

/// Names accepted for [`ImageVendor`] (`cpu` is another name for `none`).
pub const IMAGE_VENDORS: &[(&str, ImageVendor)] = &[
    ("none", ImageVendor::None),
    ("cpu", ImageVendor::None),
    ("nvidia", ImageVendor::Nvidia),
    ("amd", ImageVendor::Amd),
    ("ascend", ImageVendor::Ascend),
    ("intel", ImageVendor::Intel),
];

impl fmt::Display for ImageVendor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = IMAGE_VENDORS
            .iter()
            .find(|(_, v)| v == self)
            .map_or("none", |(n, _)| n);
        f.write_str(name)
    }
}

/// The name a scenario is written with.
pub fn scenario_name(s: Scenario) -> &'static str {
    match s {
        Scenario::Training => "training",
        Scenario::Inference => "inference",
        Scenario::General => "general",
    }
}

/// Which base image a template builds on; a field left out matches any.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Selector {
    /// The scenario wanted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scenario: Option<Scenario>,
    /// The vendor wanted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vendor: Option<ImageVendor>,
    /// The framework wanted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub framework: Option<String>,
}

impl Selector {
    /// Whether `b` fits every field given.
    pub fn matches(&self, b: &BaseImage) -> bool {
        self.scenario.is_none_or(|s| s == b.scenario)
            && self.vendor.is_none_or(|v| v == b.vendor)
            && self.framework.as_ref().is_none_or(|f| *f == b.framework)
    }
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scenario = self.scenario.map_or("any", scenario_name);
        let vendor = self.vendor.map_or("any".to_string(), |v| v.to_string());
        let framework = self.framework.as_deref().unwrap_or("any");
        write!(
            f,
            "scenario {scenario}, vendor {vendor}, framework {framework}"
        )
    }
}

/// A parameterised container description. `${name}` in `command` and in `env`
/// values is replaced by the operator's value of parameter `name` (or its default);
/// `$${` writes a literal `${`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Template {
    /// Catalog name: `[a-z][a-z0-9-]{0,62}`.
    pub name: String,
    /// Free text for humans.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    /// Which base image to build on.
    #[serde(default)]
    pub base_image: Selector,
    /// Command overriding the image's entrypoint arguments; empty keeps the image's.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub command: Vec<String>,
    /// Environment variables.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// Record exchange protocol.
    #[serde(default)]
    pub protocol: PeProtocol,
    /// The network containers join.
    #[serde(default, skip_serializing_if = "ContainerNetwork::is_none")]
    pub network: ContainerNetwork,
    /// Whether the root filesystem is writable.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub writable_rootfs: bool,
    /// What each PE needs unless the operator says; absent for a program's defaults.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<Resources>,
    /// Declared parameters by name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub params: BTreeMap<String, Param>,
}

/// One declared template parameter.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Param {
    /// The value used when the operator gives none; absent makes it required.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<String>,
    /// Free text for humans.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
}

/// Which template and base image generated an operator.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Provenance {
    /// The template.
    pub template: String,
    /// The base image chosen; empty when not resolved (offline).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub base_image: String,
    /// The image reference the container runs; empty when not resolved (offline).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub image: String,
}

impl fmt::Display for Provenance {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.base_image.is_empty() {
            write!(f, "template {}, resolved at submit", self.template)
        } else {
            write!(
                f,
                "template {}, base image {}",
                self.template, self.base_image
            )
        }
    }
}

/// Operator name -> where it came from, for the operators a template generated.
pub type Provenances = BTreeMap<String, Provenance>;

/// One line per generated operator, e.g. `score: container weir-pe-score:v1
/// (template scorer, base image pe-cpu)`, in operator order.
pub fn describe(spec: &crate::spec::AppSpec, generated: &Provenances) -> Vec<String> {
    spec.operators
        .iter()
        .filter_map(|o| {
            let p = generated.get(&o.name)?;
            Some(match &o.kind {
                crate::spec::OperatorKind::Container(c) if !p.image.is_empty() => {
                    format!("{}: container {} ({p})", o.name, c.image)
                }
                _ => format!("{}: {p}", o.name),
            })
        })
        .collect()
}
