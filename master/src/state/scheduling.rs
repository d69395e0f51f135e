//! The scheduling policy kept in Raft: what `weirctl scheduler set-policy` sets, so
//! that every leader chooses devices and orders the queue the same way (a policy given
//! only by each master's flags changes when leadership moves to a master started with
//! other flags). Stored in the words of the flags; the scheduler parses it
//! (`scheduler::policy::of_record`), and the API refuses a policy it cannot parse
//! before proposing. The state checks only the bounds.

use super::{ClusterState, CommandError, Response};
use serde::{Deserialize, Serialize};

/// Most objective weights a policy may carry.
pub const MAX_POLICY_WEIGHTS: usize = 256;

/// Longest device policy name or weight, in bytes.
pub const MAX_POLICY_TEXT: usize = 300;

/// The replicated scheduling policy, as the master's flags would say it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SchedulingPolicyRecord {
    /// `--gpu-policy`: `objective`, `objective-spread`, `first-fit`, `best-fit`,
    /// `binpack` or `spread`.
    pub gpu_policy: String,
    /// `--gpu-weight`s: `model:NAME=W` or `pool:NAME=W`.
    #[serde(default)]
    pub gpu_weights: Vec<String>,
    /// `--fifo-queue`.
    #[serde(default)]
    pub fifo_queue: bool,
    /// When it was set (leader clock).
    #[serde(default)]
    pub set_at_ms: u64,
}

/// Bounds of a policy to store (its meaning is the scheduler's to check).
pub(super) fn check(policy: Option<&SchedulingPolicyRecord>) -> Result<(), CommandError> {
    let Some(p) = policy else {
        return Ok(());
    };
    let refuse = |why: String| Err(CommandError::Scheduling(why));
    if p.gpu_policy.is_empty() || p.gpu_policy.len() > MAX_POLICY_TEXT {
        return refuse(format!(
            "policy.gpu_policy: 1 to {MAX_POLICY_TEXT} bytes (got {})",
            p.gpu_policy.len()
        ));
    }
    if p.gpu_weights.len() > MAX_POLICY_WEIGHTS {
        return refuse(format!(
            "policy.gpu_weights: at most {MAX_POLICY_WEIGHTS} (got {})",
            p.gpu_weights.len()
        ));
    }
    if let Some(i) = p.gpu_weights.iter().position(|w| w.len() > MAX_POLICY_TEXT) {
        return refuse(format!(
            "policy.gpu_weights[{i}]: at most {MAX_POLICY_TEXT} bytes"
        ));
    }
    Ok(())
}

pub(super) fn apply(s: &mut ClusterState, policy: &Option<SchedulingPolicyRecord>) -> Response {
    s.scheduling = policy.clone();
    Response::Done
}
