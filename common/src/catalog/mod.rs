//! The job-description catalog: base images and PE templates, and the pure generation
//! of a concrete `kind: container` operator from a template and a base image.
//!
//! The master keeps a [`Catalog`] in Raft; an app spec's operator may say
//! `template: NAME` with `params:` instead of `kind:`, and [`parse_app_with`] turns
//! it into the container operator every other part of the system reads, remembering
//! which template and base image generated it ([`Provenance`]). Everything here is
//! pure: the master feeds it the catalog it read from its state, `weirctl validate`
//! feeds it none ([`Resolve::Offline`]).

mod generate;
mod model;
mod params;
mod parse;
#[cfg(test)]
mod tests;

pub use generate::{parse_app_with, substitute, Resolve, Resolved};
pub use model::*;
pub use parse::{parse_base_image, parse_template, BaseImageFields};

/// Most base images a catalog holds.
pub const MAX_BASE_IMAGES: usize = 1024;
/// Most templates a catalog holds.
pub const MAX_TEMPLATES: usize = 1024;
/// Largest template file accepted, in bytes.
pub const MAX_TEMPLATE_BYTES: usize = 64 << 10;
/// Most parameters one template declares.
pub const MAX_PARAMS: usize = 32;
/// Longest parameter value (and default), in bytes.
pub const MAX_PARAM_VALUE_BYTES: usize = 4096;
/// Longest description, in bytes.
pub const MAX_DESCRIPTION_BYTES: usize = 1024;
/// Most command arguments and most environment variables of a template.
pub const MAX_ITEMS: usize = 64;
