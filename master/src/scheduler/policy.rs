//! How the scheduler chooses: which devices GPU slices go to, and in which order the
//! queue is served. The default is Weir's (the GPU-memory objective with binpack
//! weights, the fair queue); the others are the baselines the simulator compares it
//! with (`tests/benches/scheduler_sim.rs`), selectable on a master for experiments.

use super::objective::{self, Weights};
use crate::state::scheduling::SchedulingPolicyRecord;

/// The scheduler's policy.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Policy {
    /// Which devices a round's GPU slices go to.
    pub devices: DevicePolicy,
    /// The queue's order.
    pub queue: QueueOrder,
}

/// Which devices a round's GPU slices go to.
#[derive(Clone, Debug, PartialEq)]
pub enum DevicePolicy {
    /// The GPU-memory objective over every GPU PE of the round at once, with these
    /// weights (`objective.rs`): exact for small rounds, the heuristic for large ones.
    Objective(Weights),
    /// Each PE in turn, its slices on the first devices with room (workers by id).
    FirstFit,
    /// Each PE in turn, its slices on the devices with the least free memory that fits
    /// (gpushare's rule).
    BestFit,
    /// Each PE in turn, its slices on the most used devices that fit (HAMi's binpack
    /// score).
    Binpack,
    /// Each PE in turn, its slices on the least used devices (HAMi's spread score).
    Spread,
}

impl Default for DevicePolicy {
    fn default() -> Self {
        Self::Objective(Weights::default())
    }
}

/// The queue's order.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum QueueOrder {
    /// Class with aging, then the tenant's share, then arrival (`queue.rs`).
    #[default]
    Fair,
    /// Arrival only (a plain FIFO, as a Kubernetes scheduling queue without
    /// priorities); start conditions and quotas still hold.
    Fifo,
}

/// The policy named on a master's command line: `objective` (default), `first-fit`,
/// `best-fit`, `binpack` or `spread` for devices; `binpack`/`spread` weights for the
/// objective (`objective-spread`); weights `model:NAME=W` or `pool:NAME=W`.
pub fn parse(devices: &str, weights: &[String], fifo: bool) -> Result<Policy, String> {
    parse_named(devices, weights, fifo, ("--gpu-policy", "--gpu-weight"))
}

/// The policy a replicated record says; refusals name the request's fields.
pub fn of_record(r: &SchedulingPolicyRecord) -> Result<Policy, String> {
    parse_named(
        &r.gpu_policy,
        &r.gpu_weights,
        r.fifo_queue,
        ("policy.gpu_policy", "policy.gpu_weights"),
    )
}

/// The policy the leader uses: the replicated one, else its flags. A record that does
/// not parse (never proposed: the API parses it first) falls back to the flags.
pub fn effective(replicated: Option<&SchedulingPolicyRecord>, flags: &Policy) -> Policy {
    replicated
        .and_then(|r| of_record(r).ok())
        .unwrap_or_else(|| flags.clone())
}

/// `p` in the words of the flags: `(gpu_policy, gpu_weights, fifo_queue)`, which
/// [`parse`] reads back to `p` (weights of the baselines, which ignore them, are
/// dropped).
pub fn describe(p: &Policy) -> (String, Vec<String>, bool) {
    let (name, weights) = match &p.devices {
        DevicePolicy::Objective(w) => {
            let name = match w.policy {
                objective::Policy::Binpack => "objective",
                objective::Policy::Spread => "objective-spread",
            };
            let weights = w
                .models
                .iter()
                .map(|(k, v)| format!("model:{k}={v}"))
                .chain(w.pools.iter().map(|(k, v)| format!("pool:{k}={v}")))
                .collect();
            (name, weights)
        }
        DevicePolicy::FirstFit => ("first-fit", vec![]),
        DevicePolicy::BestFit => ("best-fit", vec![]),
        DevicePolicy::Binpack => ("binpack", vec![]),
        DevicePolicy::Spread => ("spread", vec![]),
    };
    (name.to_string(), weights, p.queue == QueueOrder::Fifo)
}

fn parse_named(
    devices: &str,
    weights: &[String],
    fifo: bool,
    (policy_name, weight_name): (&str, &str),
) -> Result<Policy, String> {
    let mut w = Weights::default();
    for spec in weights {
        let (key, value) = spec.split_once('=').ok_or_else(|| {
            format!("{weight_name} {spec:?}: expected model:NAME=W or pool:NAME=W")
        })?;
        let value: f64 = value
            .parse()
            .ok()
            .filter(|v: &f64| v.is_finite() && *v > 0.0)
            .ok_or_else(|| format!("{weight_name} {spec:?}: the weight must be a number > 0"))?;
        match key.split_once(':') {
            Some(("model", name)) if !name.is_empty() => {
                w.models.insert(name.to_string(), value);
            }
            Some(("pool", name)) if !name.is_empty() => {
                w.pools.insert(name.to_string(), value);
            }
            _ => {
                return Err(format!(
                    "{weight_name} {spec:?}: expected model:NAME=W or pool:NAME=W"
                ))
            }
        }
    }
    let devices = match devices {
        "objective" | "objective-binpack" => DevicePolicy::Objective(w),
        "objective-spread" => DevicePolicy::Objective(Weights {
            policy: objective::Policy::Spread,
            ..w
        }),
        "first-fit" => DevicePolicy::FirstFit,
        "best-fit" => DevicePolicy::BestFit,
        "binpack" => DevicePolicy::Binpack,
        "spread" => DevicePolicy::Spread,
        other => {
            return Err(format!(
                "{policy_name} {other:?}: one of objective, objective-spread, first-fit, best-fit, binpack, spread"
            ))
        }
    };
    Ok(Policy {
        devices,
        queue: if fifo {
            QueueOrder::Fifo
        } else {
            QueueOrder::Fair
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policies_parse_from_flags_and_bad_ones_name_the_flag() {
        let p = parse(
            "objective-spread",
            &["model:h100=2".into(), "pool:training-nvidia=0.5".into()],
            false,
        )
        .unwrap();
        let DevicePolicy::Objective(w) = &p.devices else {
            panic!("{p:?}")
        };
        assert_eq!(w.policy, objective::Policy::Spread);
        assert_eq!(w.base("h100", "training-nvidia"), 1.0);
        assert_eq!(
            parse("best-fit", &[], true).unwrap().queue,
            QueueOrder::Fifo
        );
        assert_eq!(parse("objective", &[], false).unwrap(), Policy::default());
        for (d, w, why) in [
            ("greedy", vec![], "--gpu-policy"),
            ("objective", vec!["h100=2".to_string()], "model:NAME=W"),
            ("objective", vec!["model:h100=-1".to_string()], "> 0"),
            ("objective", vec!["model:h100=NaN".to_string()], "> 0"),
        ] {
            let e = parse(d, &w, false).unwrap_err();
            assert!(e.contains(why), "{e}");
        }
    }

    #[test]
    fn a_policy_reads_back_from_its_description_and_a_record_names_the_fields() {
        for (d, w, fifo) in [
            ("objective", vec![], false),
            (
                "objective-spread",
                vec![
                    "model:h100=2".to_string(),
                    "pool:training-nvidia=0.25".to_string(),
                ],
                true,
            ),
            ("first-fit", vec![], false),
            ("best-fit", vec![], true),
            ("binpack", vec![], false),
            ("spread", vec![], false),
        ] {
            let p = parse(d, &w, fifo).unwrap();
            let (d2, w2, fifo2) = describe(&p);
            assert_eq!((d2.as_str(), &w2, fifo2), (d, &w, fifo));
            assert_eq!(parse(&d2, &w2, fifo2).unwrap(), p);
        }
        let bad = SchedulingPolicyRecord {
            gpu_policy: "objective".into(),
            gpu_weights: vec!["model:h100=0".into()],
            ..Default::default()
        };
        let e = of_record(&bad).unwrap_err();
        assert!(e.starts_with("policy.gpu_weights \"model:h100=0\""), "{e}");
        let e = of_record(&SchedulingPolicyRecord {
            gpu_policy: "greedy".into(),
            ..Default::default()
        })
        .unwrap_err();
        assert!(e.starts_with("policy.gpu_policy \"greedy\""), "{e}");
        // The replicated policy wins over the flags; an unreadable one yields to them.
        let flags = Policy::default();
        let spread = SchedulingPolicyRecord {
            gpu_policy: "spread".into(),
            ..Default::default()
        };
        assert_eq!(
            effective(Some(&spread), &flags).devices,
            DevicePolicy::Spread
        );
        assert_eq!(effective(Some(&bad), &flags), flags);
        assert_eq!(effective(None, &flags), flags);
    }
}
