//! What a worker offers: cores, memory, and accelerators (discovered through NVML, or
//! declared in its configuration for other vendors and for tests).

use std::sync::OnceLock;
use weir_proto::v1 as pb;

/// An accelerator declared on the command line or in config:
/// `VENDOR:MODEL:MEMORY_MB[:UUID[:NODE+NODE...]]`, e.g. `amd:mi300x:196608`,
/// `nvidia:test:16384:GPU-1` or `amd:mi300x:196608:amd-0:/dev/kfd+/dev/dri/renderD128`
/// (the host device nodes a container PE given this device needs; NVIDIA devices are
/// given through the NVIDIA runtime instead).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeclaredGpu {
    /// Vendor (`nvidia`, `amd`, `ascend`, `intel`, ...).
    pub vendor: String,
    /// Model name.
    pub model: String,
    /// Total memory, MiB.
    pub memory_mb: u64,
    /// Device id; generated from the position when absent.
    pub uuid: Option<String>,
    /// Host device nodes for containers given this device.
    pub nodes: Vec<String>,
}

impl std::str::FromStr for DeclaredGpu {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let parts: Vec<&str> = s.split(':').collect();
        if !(3..=5).contains(&parts.len()) || parts[..3].iter().any(|p| p.is_empty()) {
            return Err(format!(
                "{s:?} is not VENDOR:MODEL:MEMORY_MB[:UUID[:NODE+NODE...]]"
            ));
        }
        let nodes: Vec<String> = parts
            .get(4)
            .map(|n| n.split('+').map(str::to_string).collect())
            .unwrap_or_default();
        if let Some(bad) = nodes.iter().find(|n| !n.starts_with("/dev/")) {
            return Err(format!(
                "{s:?}: device node {bad:?} is not a path under /dev/"
            ));
        }
        let memory_mb = parts[2]
            .parse::<u64>()
            .ok()
            .filter(|m| *m > 0)
            .ok_or_else(|| {
                format!(
                    "{s:?}: memory {:?} is not a positive number of MiB",
                    parts[2]
                )
            })?;
        Ok(Self {
            vendor: parts[0].to_ascii_lowercase(),
            model: parts[1].to_string(),
            memory_mb,
            uuid: parts.get(3).map(|u| u.to_string()),
            nodes,
        })
    }
}

/// NVIDIA GPUs as NVML reports them; empty when NVML cannot be loaded or initialised
/// (no driver, no GPU, a container without the library). The reason is logged once.
pub fn nvidia_gpus() -> Vec<pb::GpuDevice> {
    static NVML: OnceLock<Option<nvml_wrapper::Nvml>> = OnceLock::new();
    let nvml = NVML.get_or_init(|| match nvml_wrapper::Nvml::init() {
        Ok(n) => Some(n),
        Err(e) => {
            tracing::info!(reason = %e, "NVML unavailable: this worker reports no NVIDIA GPUs");
            None
        }
    });
    let Some(nvml) = nvml else { return Vec::new() };
    let count = nvml.device_count().unwrap_or(0);
    (0..count)
        .filter_map(|i| {
            let d = nvml.device_by_index(i).ok()?;
            let mem = d.memory_info().ok()?;
            Some(pb::GpuDevice {
                uuid: d.uuid().unwrap_or_else(|_| format!("nvidia-{i}")),
                vendor: "nvidia".into(),
                model: d.name().unwrap_or_default(),
                memory_total_mb: mem.total >> 20,
                memory_used_mb: mem.used >> 20,
                utilization_percent: d.utilization_rates().map_or(0, |u| u.gpu),
                declared: false,
            })
        })
        .collect()
}

/// Total memory of this machine in MiB, from /proc/meminfo (0 if unreadable).
pub fn memory_mb() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map_or(0, |kb| kb / 1024)
}

/// The UUID a declared device is reported under (its own, or one from its position).
pub fn declared_uuid(d: &DeclaredGpu, position: usize) -> String {
    d.uuid
        .clone()
        .unwrap_or_else(|| format!("declared-{}-{position}", d.vendor))
}

/// Everything the worker offers now: discovered GPUs first, then declared ones.
pub fn snapshot(
    cores: Option<f64>,
    memory: Option<u64>,
    declared: &[DeclaredGpu],
    discover_nvml: bool,
) -> pb::WorkerResources {
    let mut gpus = if discover_nvml {
        nvidia_gpus()
    } else {
        Vec::new()
    };
    for (i, d) in declared.iter().enumerate() {
        gpus.push(pb::GpuDevice {
            uuid: declared_uuid(d, i),
            vendor: d.vendor.clone(),
            model: d.model.clone(),
            memory_total_mb: d.memory_mb,
            declared: true,
            ..Default::default()
        });
    }
    pb::WorkerResources {
        cpu_cores: cores.unwrap_or_else(|| {
            std::thread::available_parallelism().map_or(1.0, |n| n.get() as f64)
        }),
        memory_mb: memory.unwrap_or_else(memory_mb),
        gpus,
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn declared_gpus_parse_or_say_why() {
        let g: DeclaredGpu = "AMD:mi300x:196608".parse().unwrap();
        assert_eq!(
            (g.vendor.as_str(), g.model.as_str(), g.memory_mb, g.uuid),
            ("amd", "mi300x", 196608, None)
        );
        let g: DeclaredGpu = "nvidia:test:16384:GPU-1".parse().unwrap();
        assert_eq!(g.uuid.as_deref(), Some("GPU-1"));
        assert!("nvidia:test"
            .parse::<DeclaredGpu>()
            .unwrap_err()
            .contains("VENDOR:MODEL:MEMORY_MB"));
        assert!("nvidia:test:lots"
            .parse::<DeclaredGpu>()
            .unwrap_err()
            .contains("not a positive number"));
        assert!("nvidia:test:0".parse::<DeclaredGpu>().is_err());
        let g: DeclaredGpu = "amd:mi300x:196608:amd-0:/dev/kfd+/dev/dri/renderD128"
            .parse()
            .unwrap();
        assert_eq!(g.nodes, ["/dev/kfd", "/dev/dri/renderD128"]);
        assert!("amd:x:1:amd-0:/etc/passwd"
            .parse::<DeclaredGpu>()
            .unwrap_err()
            .contains("not a path under /dev/"));
    }

    #[test]
    fn snapshot_reports_machine_and_declared_devices_without_nvml_crashing() {
        // NVML is absent on most test machines: discovery must yield nothing, not fail.
        let discovered = nvidia_gpus();
        let declared = vec![
            "amd:mi300x:196608".parse().unwrap(),
            "nvidia:t4:16384:GPU-X".parse().unwrap(),
        ];
        let r = snapshot(None, None, &declared, true);
        assert!(r.cpu_cores >= 1.0);
        assert!(r.memory_mb > 0);
        assert_eq!(r.gpus.len(), discovered.len() + 2);
        let tail = &r.gpus[discovered.len()..];
        assert_eq!(
            (tail[0].uuid.as_str(), tail[0].declared),
            ("declared-amd-0", true)
        );
        assert_eq!(
            (tail[1].uuid.as_str(), tail[1].memory_total_mb),
            ("GPU-X", 16384)
        );
        let fixed = snapshot(Some(3.5), Some(2048), &[], false);
        assert_eq!(
            (fixed.cpu_cores, fixed.memory_mb, fixed.gpus.len()),
            (3.5, 2048, 0)
        );
    }
}
