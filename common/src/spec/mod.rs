//! App specs: the logical model, parsing from YAML/JSON, and validation.

mod capabilities;
pub mod expr;
mod limits;
pub mod model;
mod params;
mod parse;
pub(crate) mod reader;
mod redact;
mod start;
mod validate;

pub use capabilities::{check_capabilities, Capabilities, Cidr};
pub use limits::{dense_spec_yaml, AppLimits, PhysicalSize, DEFAULT_MAX_CHANNELS, DEFAULT_MAX_PES};
pub use model::*;
pub(crate) use params::valid_image_ref;
pub use parse::{parse_app, parse_app_value, SpecFormat, MAX_OPERATORS, MAX_SPEC_BYTES};
pub(crate) use parse::{read_document, resources};
pub(crate) use reader::check_name;
pub use redact::{redact_spec_text, redacted_operator_json, REDACTED};
pub use start::{parse_rfc3339_ms, StartConditions, MAX_AFTER};
