//! Container PEs: what a `kind: container` operator's PE becomes on the local Docker
//! Engine (docs/containers.md).
//!
//! The pure part decides, from the spec's params, the PE's resources and GPUs and its
//! identity, the body of Docker's container-create call ([`container_config`]), its
//! tenant network ([`tenant_network`]) and the filter that finds this worker's orphans
//! ([`orphan_filters`]). The engine part ([`ContainerEngine`]) carries those out
//! through bollard; the PE protocol over the container's stdio is the exec PE's own
//! ([`crate::exec::ExecPe`] driving a [`ContainerLaunch`]).
//!
//! - `config`: limits, lockdown, stdio, the whole create body.
//! - `devices`: allocated GPUs as a device request (NVIDIA) or device nodes (others).
//! - `identity`: labels, container name, identity environment, orphan filter.
//! - `network`: the per-tenant network.
//! - `engine`: create, attach, start, stop and remove; orphans; networks (I/O).
//! - `attach`: the attached output split back into stdout and stderr (I/O).

mod attach;
mod config;
mod devices;
mod engine;
mod error;
mod identity;
mod network;

pub use config::{container_config, ContainerConfig, MIN_MEMORY_BYTES, MIN_NANO_CPUS};
pub use devices::{AcceleratorNodes, AllocatedGpu, NVIDIA_VISIBLE_DEVICES};
pub use engine::{ContainerEngine, ContainerLaunch, EngineError};
pub use error::ConfigError;
pub use identity::{
    orphan_filters, orphan_list_options, PeIdentity, APP_ENV, ATTEMPT_ENV, LABEL_APP,
    LABEL_ATTEMPT, LABEL_CLUSTER, LABEL_PE, LABEL_WORKER, TENANT_ENV,
};
pub use network::{tenant_network, tenant_network_name, LABEL_TENANT};

#[cfg(test)]
mod tests;
