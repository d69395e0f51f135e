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
mod tests {
    use super::*;
    use crate::physical::PhysicalModel;
    use crate::spec::{parse_app, SpecFormat};

    #[test]
    fn size_matches_the_expansion() {
        let app = parse_app(
            r#"
name: t
operators:
  - {name: gen, kind: source.generator, parallelism: 2, params: {count: 10}}
  - {name: up, kind: map, parallelism: 2, params: {set: {u: "upper(key)"}}}
  - {name: count, kind: window.count, parallelism: 3, params: {size_ms: 1000}}
  - {name: all, kind: sink.verify, parallelism: 4}
  - {name: out, kind: sink.verify}
streams:
  - {from: gen, to: up}
  - {from: up, to: count, partitioning: hash}
  - {from: count, to: out, partitioning: round_robin}
  - {from: up, to: all, partitioning: broadcast}
"#,
            SpecFormat::Yaml,
        )
        .unwrap();
        let m = PhysicalModel::expand(&app);
        let size = PhysicalSize::of(&app);
        assert_eq!(size.pes, m.pes.len() as u64);
        assert_eq!(size.channels, m.channels.len() as u64);
        assert_eq!(
            size,
            PhysicalSize {
                pes: 12,
                channels: 2 + 6 + 3 + 8
            }
        );
    }

    #[test]
    fn dense_spec_refused_without_expanding() {
        let text = dense_spec_yaml("dense", 45, 256);
        assert!(text.len() < 64 << 10, "{} bytes", text.len());
        let app = parse_app(&text, SpecFormat::Yaml).unwrap();
        assert_eq!(app.streams.len(), 990);
        let started = std::time::Instant::now();
        let err = AppLimits::default().check(&app).unwrap_err();
        assert_eq!(
            err.0,
            vec![
                Problem::new(
                    "operators",
                    "the app would have 11520 PEs; at most 4096 per app"
                ),
                Problem::new(
                    "streams",
                    "the app would have 64880640 channels; at most 262144 per app"
                ),
            ]
        );
        // Arithmetic only: microseconds (expanding it took the better part of a minute
        // and gigabytes).
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
    }

    #[test]
    fn limits_are_inclusive_and_configurable() {
        let app = parse_app(&dense_spec_yaml("small", 3, 4), SpecFormat::Yaml).unwrap();
        // 3 operators x 4 PEs; 3 hash streams of 4 x 4.
        let exact = AppLimits {
            max_pes: 12,
            max_channels: 48,
        };
        assert_eq!(
            exact.check(&app),
            Ok(PhysicalSize {
                pes: 12,
                channels: 48
            })
        );
        let tight = AppLimits {
            max_pes: 11,
            max_channels: 47,
        };
        let err = tight.check(&app).unwrap_err();
        assert_eq!(err.0.len(), 2);
        assert_eq!(err.0[0].path, "operators");
        assert_eq!(err.0[1].path, "streams");
    }

    #[test]
    fn saturates_instead_of_overflowing() {
        let mut app = parse_app(&dense_spec_yaml("big", 2, 256), SpecFormat::Yaml).unwrap();
        // Not reachable through the parser (parallelism <= 256), but the arithmetic
        // must not wrap whatever the model holds.
        for o in &mut app.operators {
            o.parallelism = u32::MAX;
        }
        let s = PhysicalSize::of(&app);
        assert_eq!(s.pes, 2 * u64::from(u32::MAX));
        assert_eq!(s.channels, u64::from(u32::MAX) * u64::from(u32::MAX));
        let many = app.streams[0].clone();
        app.streams.extend(std::iter::repeat_n(many, 4));
        assert_eq!(PhysicalSize::of(&app).channels, u64::MAX);
    }
}
