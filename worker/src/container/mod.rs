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
//! - `pull`: what to pull and the progress users see (the pull itself is `engine`'s).
//! - `engine`: pull, create, attach, start, stop and remove; orphans; networks (I/O).
//! - `attach`: the attached output split back into stdout and stderr (I/O).

mod attach;
mod config;
mod devices;
mod engine;
mod error;
mod identity;
mod network;
mod pull;

pub use config::{container_config, ContainerConfig, MIN_MEMORY_BYTES, MIN_NANO_CPUS};
pub use devices::{AcceleratorNodes, AllocatedGpu, NVIDIA_VISIBLE_DEVICES};
pub use engine::{ContainerEngine, ContainerLaunch, EngineError};
pub use error::ConfigError;
pub use identity::{
    orphan_filters, orphan_list_options, PeIdentity, APP_ENV, ATTEMPT_ENV, LABEL_APP,
    LABEL_ATTEMPT, LABEL_CLUSTER, LABEL_PE, LABEL_WORKER, TENANT_ENV,
};
pub use network::{tenant_network, tenant_network_name, LABEL_TENANT};
pub use pull::{pull_request, PullProgress};

/// Where a PE's start-up says what it is waiting for (a pull's progress); an empty
/// text clears it.
#[derive(Clone)]
pub struct Progress(std::sync::Arc<dyn Fn(String) + Send + Sync>);

impl Progress {
    /// Progress shown by `show`.
    pub fn new(show: impl Fn(String) + Send + Sync + 'static) -> Self {
        Self(std::sync::Arc::new(show))
    }

    /// Shows `text`.
    pub fn show(&self, text: &str) {
        (self.0)(text.to_string())
    }
}

impl std::fmt::Debug for Progress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Progress")
    }
}

#[cfg(test)]
mod tests;
