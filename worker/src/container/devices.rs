//! A PE's allocated GPUs as Docker sees them: NVIDIA devices through a device request
//! pinned to their UUIDs, other vendors' through the device nodes the worker declares.

use super::ConfigError;
use crate::exec::{CUDA_VISIBLE_DEVICES, GPUS_ENV};
use bollard::models::{DeviceMapping, DeviceRequest};
use std::collections::{BTreeMap, BTreeSet};

/// What the NVIDIA container runtime reads to choose the devices a container gets.
pub const NVIDIA_VISIBLE_DEVICES: &str = "NVIDIA_VISIBLE_DEVICES";

/// One device allocated to the PE, as the worker reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AllocatedGpu {
    /// The device's UUID (NVML's for NVIDIA, the declared one otherwise).
    pub uuid: String,
    /// Its vendor, lower case (`nvidia`, `amd`, ...).
    pub vendor: String,
}

/// The host device nodes of each declared accelerator, by UUID: what a container
/// needs to reach a device of a vendor Docker has no driver for (for an AMD GPU its
/// `/dev/dri/renderD*` node and `/dev/kfd`). Nodes shared by several devices may be
/// listed under each; they are mapped once.
pub type AcceleratorNodes = BTreeMap<String, Vec<String>>;

/// How the container reaches its GPUs.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct GpuAccess {
    /// At most one request, for the NVIDIA devices.
    pub requests: Vec<DeviceRequest>,
    /// The other vendors' device nodes.
    pub devices: Vec<DeviceMapping>,
    /// What the program is told about its devices.
    pub env: BTreeMap<String, String>,
}

/// The access for `gpus` (one entry per allocated slice: a device shared by two
/// slices appears twice), or why a device cannot be given to a container.
pub(crate) fn gpu_access(
    pe: &str,
    gpus: &[AllocatedGpu],
    nodes: &AcceleratorNodes,
) -> Result<GpuAccess, ConfigError> {
    let mut access = GpuAccess::default();
    let mut seen = BTreeSet::new();
    let mut nvidia = Vec::new();
    let mut mapped = BTreeSet::new();
    for gpu in gpus {
        if !seen.insert(gpu.uuid.as_str()) {
            continue;
        }
        if gpu.vendor.eq_ignore_ascii_case("nvidia") {
            nvidia.push(gpu.uuid.clone());
            continue;
        }
        let paths = nodes
            .get(&gpu.uuid)
            .filter(|p| !p.is_empty())
            .ok_or_else(|| ConfigError::NoDeviceNodes {
                pe: pe.to_string(),
                uuid: gpu.uuid.clone(),
                vendor: gpu.vendor.clone(),
            })?;
        for path in paths {
            if !is_device_path(path) {
                return Err(ConfigError::DeviceNode {
                    pe: pe.to_string(),
                    uuid: gpu.uuid.clone(),
                    path: path.clone(),
                });
            }
            if mapped.insert(path.as_str()) {
                access.devices.push(DeviceMapping {
                    path_on_host: Some(path.clone()),
                    path_in_container: Some(path.clone()),
                    cgroup_permissions: Some("rwm".into()),
                });
            }
        }
    }
    // One entry per slice, as exec PEs get it: the same protocol for both.
    let all: Vec<&str> = gpus.iter().map(|g| g.uuid.as_str()).collect();
    access.env.insert(GPUS_ENV.into(), all.join(","));
    if nvidia.is_empty() {
        // CUDA base images set NVIDIA_VISIBLE_DEVICES=all; on an engine whose default
        // runtime is NVIDIA's that would hand the container every GPU on the machine.
        // `void` makes that runtime behave as plain runc.
        access
            .env
            .insert(NVIDIA_VISIBLE_DEVICES.into(), "void".into());
        access
            .env
            .insert(CUDA_VISIBLE_DEVICES.into(), String::new());
    } else {
        let list = nvidia.join(",");
        access
            .env
            .insert(NVIDIA_VISIBLE_DEVICES.into(), list.clone());
        access.env.insert(CUDA_VISIBLE_DEVICES.into(), list);
        access.requests.push(DeviceRequest {
            driver: Some("nvidia".into()),
            // Docker refuses a request with both a count and device ids.
            count: None,
            device_ids: Some(nvidia),
            capabilities: Some(vec![vec!["gpu".into()]]),
            options: None,
        });
    }
    Ok(access)
}

/// A plain absolute path under `/dev/`: a declared node must not map anything else
/// of the host (a typo in the worker's config must not expose a host file).
fn is_device_path(path: &str) -> bool {
    path.strip_prefix("/dev/").is_some_and(|rest| {
        !rest.is_empty()
            && rest
                .split('/')
                .all(|c| !c.is_empty() && c != "." && c != "..")
    })
}

#[cfg(test)]
mod tests {
    use super::is_device_path;

    #[test]
    fn device_paths_stay_under_dev() {
        for ok in ["/dev/kfd", "/dev/dri/renderD128", "/dev/accel/accel0"] {
            assert!(is_device_path(ok), "{ok}");
        }
        for bad in [
            "/dev/",
            "/dev",
            "dev/kfd",
            "/etc/shadow",
            "/dev/../etc/shadow",
            "/dev/dri//card0",
            "/dev/./kfd",
        ] {
            assert!(!is_device_path(bad), "{bad}");
        }
    }
}
