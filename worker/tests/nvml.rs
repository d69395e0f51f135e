//! NVIDIA GPU discovery through NVML, against whatever this machine has.
//!
//! Without NVML (no driver, no GPU: CI and most dev boxes) discovery must report no
//! GPUs and go on; the test says so in one line. With `WEIR_REQUIRE_GPU=1` (set when
//! it runs on a machine with NVIDIA GPUs, see docs/gpus.md) it fails instead, and
//! checks what NVML reports against what a scheduler relies on.

use weir_worker::resources::{nvidia_gpus, snapshot};

#[test]
fn nvml_discovery_reports_every_device_or_none() {
    let gpus = nvidia_gpus();
    let required = std::env::var("WEIR_REQUIRE_GPU").is_ok_and(|v| v == "1");
    if gpus.is_empty() {
        assert!(!required, "WEIR_REQUIRE_GPU=1 but NVML reported no GPU");
        eprintln!("no NVIDIA GPU through NVML here: discovery reported none, as it must");
        return;
    }
    for g in &gpus {
        eprintln!(
            "NVML: {} {} {} MiB total, {} MiB used, {}% busy",
            g.uuid, g.model, g.memory_total_mb, g.memory_used_mb, g.utilization_percent
        );
        assert!(
            g.uuid.starts_with("GPU-") || g.uuid.starts_with("MIG-"),
            "{g:?}"
        );
        assert_eq!(g.vendor, "nvidia");
        assert!(!g.model.is_empty(), "{g:?}");
        assert!(g.memory_total_mb > 0, "{g:?}");
        assert!(g.memory_used_mb <= g.memory_total_mb, "{g:?}");
        assert!(g.utilization_percent <= 100, "{g:?}");
        assert!(!g.declared);
    }
    let mut uuids: Vec<_> = gpus.iter().map(|g| &g.uuid).collect();
    uuids.sort();
    uuids.dedup();
    assert_eq!(uuids.len(), gpus.len(), "every device once");
    // What a worker reports: the discovered devices first, then the declared ones.
    let declared = ["amd:mi300x:196608".parse().unwrap()];
    let r = snapshot(Some(4.0), Some(1024), &declared, true);
    assert_eq!(r.gpus.len(), gpus.len() + 1);
    assert_eq!(
        r.gpus[..gpus.len()]
            .iter()
            .map(|g| &g.uuid)
            .collect::<Vec<_>>(),
        { gpus.iter().map(|g| &g.uuid).collect::<Vec<_>>() }
    );
    assert!(r.gpus[gpus.len()].declared);
}
