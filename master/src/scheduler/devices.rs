//! Which devices of one worker a GPU request takes: the only GPU policy of the
//! scheduler, kept apart so another objective can replace it without touching the
//! search over workers.

use weir_common::spec::{GpuRequest, Vendor};

/// One accelerator's free memory as the search tracks it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Device {
    /// Vendor.
    pub vendor: Vendor,
    /// Free memory, MiB.
    pub memory_free_mb: u64,
}

/// Whether `d` can take one slice of `g`.
pub(super) fn matches(d: &Device, g: &GpuRequest) -> bool {
    (g.vendor == Vendor::Any || d.vendor == g.vendor) && d.memory_free_mb >= g.memory_mb
}

/// Whether `devices` can take every slice of `g` (one device per slice). Any choice
/// policy needs at least this, so the search filters workers with it, cheaply, and
/// asks [`choose`] only for the worker it picked.
pub(super) fn enough(devices: &[Device], g: &GpuRequest) -> bool {
    let wanted = g.count as usize;
    wanted == 0
        || devices
            .iter()
            .filter(|d| matches(d, g))
            .take(wanted)
            .count()
            == wanted
}

/// The devices (indexes into `devices`) that take the slices of `g`, one each, or
/// `None` when too few match. Best fit: the devices with the least free memory that
/// fits (ties: the lower index), which keeps whole devices free for large requests.
pub(super) fn choose(devices: &[Device], g: &GpuRequest) -> Option<Vec<usize>> {
    let mut candidates: Vec<(u64, usize)> = devices
        .iter()
        .enumerate()
        .filter(|(_, d)| matches(d, g))
        .map(|(i, d)| (d.memory_free_mb, i))
        .collect();
    if candidates.len() < g.count as usize {
        return None;
    }
    candidates.sort_unstable();
    Some(
        candidates
            .into_iter()
            .take(g.count as usize)
            .map(|(_, i)| i)
            .collect(),
    )
}
