//! weir-common: the parts every Weir component shares.
//!
//! - [`spec`]: the logical model of an app, parsed from YAML or JSON and validated with
//!   every problem reported at once, each with its path.
//! - [`physical`]: operators x parallelism -> PEs; streams -> PE-to-PE channels.
//! - [`catalog`]: base images and PE templates, and the generation of a concrete
//!   container operator from them.
//! - [`plan`]: the pure upgrade planner, (old model, new model, placement) -> phases of
//!   instructions.
//! - [`image`]: container images workers hold, and how image references match them.
//! - [`record`], [`frame`]: record batches (one `Bytes` buffer, parsed lazily) and the
//!   frames of a TCP link between workers.
//!
//! Everything here is pure: no I/O, no clocks, no randomness, so it is unit- and
//! property-tested without a network.

pub mod catalog;
pub mod fingerprint;
pub mod frame;
pub mod image;
pub mod keygroup;
pub mod physical;
pub mod plan;
pub mod problem;
pub mod record;
pub mod spec;

pub use problem::{Problem, Problems};
