//! The replicated state machine: everything the masters agree on through Raft.
//!
//! Pure and deterministic: `apply` takes a committed [`Command`] and the time the
//! leader stamped on it, never reads a clock, and either changes the state and answers,
//! or refuses and leaves the state exactly as it was. The leader runs the same checks
//! ([`ClusterState::check`]) before proposing, so a refused request normally never
//! reaches the log at all.

mod command;
mod records;
mod upgrade;

pub use command::{Command, CommandError, Response};
pub use records::*;

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Everything replicated.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ClusterState {
    /// Apps by name, with every version. Shared records: the executor and snapshots
    /// clone the whole state, which must not mean copying every app's specs (a
    /// command changes its app through `Arc::make_mut`).
    pub apps: BTreeMap<String, std::sync::Arc<AppRecord>>,
    /// Tenants by name (created on first submit).
    pub tenants: BTreeMap<String, TenantRecord>,
    /// Workers by id.
    pub workers: BTreeMap<String, WorkerRecord>,
    /// Upgrade operations by id.
    pub upgrades: BTreeMap<u64, UpgradeRecord>,
    /// Next upgrade operation id.
    pub next_upgrade_id: u64,
}

impl ClusterState {
    /// Whether `cmd` would be accepted now; the same rule `apply` enforces.
    pub fn check(&self, cmd: &Command) -> Result<(), CommandError> {
        command::check(self, cmd)
    }

    /// Applies a committed command. On error the state is unchanged.
    pub fn apply(&mut self, cmd: &Command) -> Result<Response, CommandError> {
        command::check(self, cmd)?;
        Ok(command::apply_checked(self, cmd))
    }
}

#[cfg(test)]
mod tests;
