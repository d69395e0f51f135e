//! Per-app bounds on the physical size of a spec: its PEs and channels.
//!
//! A spec of a few kilobytes can describe tens of millions of channels (every hash,
//! round robin or broadcast stream is producer x consumer parallelism), and the
//! masters expand every committed spec into its physical model, on submit and again on
//! every new leader. So the size is computed arithmetically from the logical model,
//! without expanding anything, and checked before a spec is proposed to Raft.

use super::model::{AppSpec, Partitioning};
use crate::problem::{Problem, Problems};

/// Default most PEs per app: 16 operators at the highest parallelism (256), far above
/// any example app, while keeping a master's per-app bookkeeping (placements, PE
/// reports, plans) in the low megabytes.
pub const DEFAULT_MAX_PES: u64 = 4_096;

/// Default most PE-to-PE channels per app: four all-to-all streams between operators
/// of parallelism 256 (65,536 channels each). An expanded channel costs the master
/// roughly 150 bytes (plus its route entry), so one expansion of an app at the bound
/// stays under ~64 MiB, and an upgrade plan holds two.
pub const DEFAULT_MAX_CHANNELS: u64 = 262_144;

/// How large one app may be once expanded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AppLimits {
    /// Most PEs (operators x parallelism, summed).
    pub max_pes: u64,
    /// Most channels (per stream: forward = parallelism, otherwise producer x consumer
    /// parallelism; summed).
    pub max_channels: u64,
}

impl Default for AppLimits {
    fn default() -> Self {
        Self {
            max_pes: DEFAULT_MAX_PES,
            max_channels: DEFAULT_MAX_CHANNELS,
        }
    }
}

/// The number of PEs and channels an app expands to, computed without expanding it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PhysicalSize {
    /// PEs, saturating at `u64::MAX`.
    pub pes: u64,
    /// Channels, saturating at `u64::MAX`.
    pub channels: u64,
}

impl PhysicalSize {
    /// The size of `app`'s physical model (what
    /// [`crate::physical::PhysicalModel::expand`] would build), in O(operators +
    /// streams). Saturating arithmetic: no spec can overflow it.
    pub fn of(app: &AppSpec) -> Self {
        let parallelism: std::collections::HashMap<&str, u64> = app
            .operators
            .iter()
            .map(|o| (o.name.as_str(), u64::from(o.parallelism)))
            .collect();
        let pes = app
            .operators
            .iter()
            .fold(0u64, |n, o| n.saturating_add(u64::from(o.parallelism)));
        let channels = app.streams.iter().fold(0u64, |n, s| {
            let from = parallelism.get(s.from.as_str()).copied().unwrap_or(0);
            let to = parallelism.get(s.to.as_str()).copied().unwrap_or(0);
            let c = match s.partitioning {
                // Producer i feeds consumer i (if there is one).
                Partitioning::Forward => from.min(to),
                _ => from.saturating_mul(to),
            };
            n.saturating_add(c)
        });
        Self { pes, channels }
    }
}

impl AppLimits {
    /// The app's size if it is within the limits, else a problem per limit broken,
    /// naming the field and the rule, e.g. `operators: the app would have 11520 PEs;
    /// at most 4096 per app`.
    pub fn check(&self, app: &AppSpec) -> Result<PhysicalSize, Problems> {
        let size = PhysicalSize::of(app);
        let mut problems = Vec::new();
        if size.pes > self.max_pes {
            problems.push(Problem::new(
                "operators",
                format!(
                    "the app would have {} PEs; at most {} per app",
                    size.pes, self.max_pes
                ),
            ));
        }
        if size.channels > self.max_channels {
            problems.push(Problem::new(
                "streams",
                format!(
                    "the app would have {} channels; at most {} per app",
                    size.channels, self.max_channels
                ),
            ));
        }
        if problems.is_empty() {
            Ok(size)
        } else {
            Err(Problems(problems))
        }
    }
}

/// The spec of the attack these limits stop: `operators` operators of parallelism
/// `parallelism`, one generator, one sink and maps between, joined by a hash stream
/// from every operator to every later one (`operators * (operators - 1) / 2`
/// streams). 45 operators of parallelism 256 are ~50 KB of YAML describing 11,520 PEs
/// and 64,880,640 channels. For tests.
pub fn dense_spec_yaml(name: &str, operators: usize, parallelism: u32) -> String {
    use std::fmt::Write;
    let mut y = format!("name: {name}\noperators:\n");
    for i in 0..operators {
        let kind = if i == 0 {
            "source.generator, params: {count: 1, keys: 1, payload_bytes: 0}"
        } else if i + 1 == operators {
            "sink.null"
        } else {
            "map, params: {project: [key]}"
        };
        let _ = writeln!(
            y,
            "  - {{name: op{i}, parallelism: {parallelism}, kind: {kind}}}"
        );
    }
    y.push_str("streams:\n");
    for i in 0..operators {
        for j in i + 1..operators {
            let _ = writeln!(y, "  - {{from: op{i}, to: op{j}, partitioning: hash}}");
        }
    }
    y
}

#[cfg(test)]
#[path = "limits_tests.rs"]
mod tests;
