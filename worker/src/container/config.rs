//! The body of Docker's container-create call for one container PE.

use super::devices::{gpu_access, AcceleratorNodes, AllocatedGpu};
use super::identity::PeIdentity;
use super::network::tenant_network_name;
use super::ConfigError;
use bollard::models::{ContainerCreateBody, HostConfig, HostConfigLogConfig};
use std::collections::HashMap;
use weir_common::spec::{ContainerNetwork, ContainerParams, Resources};

/// The smallest CPU limit Docker accepts (0.01 cores, in billionths). A smaller
/// request is raised to it: the PE gets at most 0.01 cores more than was reserved.
pub const MIN_NANO_CPUS: i64 = 10_000_000;
/// The smallest memory limit Docker accepts (6 MiB). A smaller request is raised to it.
pub const MIN_MEMORY_BYTES: i64 = 6 << 20;

/// A container PE ready to be created: its name and the create call's body.
#[derive(Clone, Debug, PartialEq)]
pub struct ContainerConfig {
    /// The container's name ([`PeIdentity::container_name`]).
    pub name: String,
    /// What to create.
    pub body: ContainerCreateBody,
}

/// The container that runs PE `id` of a `kind: container` operator with `params`,
/// limited to `resources`, given `gpus` (one per allocated slice) and, for devices of
/// vendors other than NVIDIA, the host nodes this worker declares for them (`nodes`).
///
/// Locked down whatever the spec says: never privileged, every capability dropped,
/// no privilege escalation, no host network, no published ports, swap no larger than
/// memory. Records flow over its attached stdin/stdout, as with exec PEs.
pub fn container_config(
    id: &PeIdentity,
    params: &ContainerParams,
    resources: &Resources,
    gpus: &[AllocatedGpu],
    nodes: &AcceleratorNodes,
) -> Result<ContainerConfig, ConfigError> {
    id.check()?;
    let nano_cpus = nano_cpus(&id.pe, resources.cpu)?;
    let memory = memory_bytes(&id.pe, resources.memory_mb)?;
    let requested = resources.gpu.as_ref().map_or(0, |g| g.count);
    if requested as usize != gpus.len() {
        return Err(ConfigError::GpuCount {
            pe: id.pe.clone(),
            requested,
            allocated: gpus.len(),
        });
    }
    let access = gpu_access(&id.pe, gpus, nodes)?;
    let network_mode = match params.network {
        ContainerNetwork::None => "none".to_string(),
        ContainerNetwork::Tenant => tenant_network_name(&id.pe, &id.tenant)?,
    };

    // The spec's variables first: the identity and the allocation win over the same
    // names there, since the scheduler accounted for exactly these devices.
    let mut env = params.env.clone();
    env.extend(id.env());
    env.extend(access.env);

    let read_only = !params.writable_rootfs;
    let host_config = HostConfig {
        nano_cpus: Some(nano_cpus),
        memory: Some(memory),
        // Equal to `memory`: no swap on top of the limit, so the limit is what the PE
        // really has (Docker's default would add as much swap again).
        memory_swap: Some(memory),
        privileged: Some(false),
        cap_drop: Some(vec!["ALL".into()]),
        security_opt: Some(vec!["no-new-privileges".into()]),
        readonly_rootfs: Some(read_only),
        // Many programs need a scratch /tmp even with a read-only root; tmpfs pages
        // count against the container's memory limit.
        tmpfs: read_only.then(|| HashMap::from([("/tmp".into(), "rw,nosuid,nodev".into())])),
        network_mode: Some(network_mode),
        publish_all_ports: Some(false),
        device_requests: (!access.requests.is_empty()).then_some(access.requests),
        devices: (!access.devices.is_empty()).then_some(access.devices),
        // Not auto-removed: the worker reads the exit status of a program that ended
        // (for the PE's failure message), then removes the container itself; what a
        // crashed worker leaves is removed at its next start.
        auto_remove: Some(false),
        // PID 1 ignores SIGTERM without a handler: an init forwards it, so stopping a
        // PE takes no kill timeout, and reaps the program's children.
        init: Some(true),
        // Stdout carries the records: a logging driver would copy every one to disk.
        // Stderr is read through the attach stream and logged by the worker.
        log_config: Some(HostConfigLogConfig {
            typ: Some("none".into()),
            config: None,
        }),
        ..Default::default()
    };

    Ok(ContainerConfig {
        name: id.container_name(),
        body: ContainerCreateBody {
            image: Some(params.image.clone()),
            cmd: (!params.command.is_empty()).then(|| params.command.clone()),
            env: Some(env.into_iter().map(|(k, v)| format!("{k}={v}")).collect()),
            labels: Some(id.labels()),
            attach_stdin: Some(true),
            attach_stdout: Some(true),
            attach_stderr: Some(true),
            open_stdin: Some(true),
            // Stdin closes when the worker's attachment goes (the worker stopped or
            // died): the program sees end of input and exits.
            stdin_once: Some(true),
            // A terminal would rewrite the framed protocol's bytes (and merge stderr).
            tty: Some(false),
            host_config: Some(host_config),
            ..Default::default()
        },
    })
}

/// `cpu` cores in Docker's billionths of a core, at least [`MIN_NANO_CPUS`].
fn nano_cpus(pe: &str, cpu: f64) -> Result<i64, ConfigError> {
    if !cpu.is_finite() || cpu <= 0.0 {
        return Err(ConfigError::Cpu {
            pe: pe.to_string(),
            cpu,
        });
    }
    // Saturating: the spec caps cpu at 1024 cores, far below i64's range.
    Ok(((cpu * 1e9).round() as i64).max(MIN_NANO_CPUS))
}

/// `memory_mb` MiB in bytes, at least [`MIN_MEMORY_BYTES`].
fn memory_bytes(pe: &str, memory_mb: u64) -> Result<i64, ConfigError> {
    memory_mb
        .checked_mul(1 << 20)
        .and_then(|b| i64::try_from(b).ok())
        .filter(|_| memory_mb > 0)
        .map(|b| b.max(MIN_MEMORY_BYTES))
        .ok_or_else(|| ConfigError::Memory {
            pe: pe.to_string(),
            memory_mb,
        })
}
