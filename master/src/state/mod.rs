//! The replicated state machine: everything the masters agree on through Raft.
//!
//! Pure and deterministic: `apply` takes a committed [`Command`] and the time the
//! leader stamped on it, never reads a clock, and either changes the state and answers,
//! or refuses and leaves the state exactly as it was. The leader runs the same checks
//! ([`ClusterState::check`]) before proposing, so a refused request normally never
//! reaches the log at all.

mod catalog;
mod command;
pub mod quota;
mod records;
mod refusal;
pub mod scheduling;

pub use catalog::{CatalogError, Entry};
pub use command::{
    check_live_for_upgrade, check_upgradable, update_gpus, Command, CommandError, Response,
};
pub use records::*;
pub use refusal::{CheckpointRefusal, UpgradeRefusal};

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
    /// Base images and PE templates (absent in snapshots written before it existed).
    /// Shared: every submit reads it to resolve templates outside the state's lock.
    #[serde(default)]
    pub catalog: std::sync::Arc<weir_common::catalog::Catalog>,
    /// The scheduling policy every leader uses; `None`: each leader its flags (absent
    /// in snapshots written before it existed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheduling: Option<scheduling::SchedulingPolicyRecord>,
}

impl ClusterState {
    /// Whether `cmd` would be accepted now; the same rule `apply` enforces. A repeat
    /// of an applied request (see [`ClusterState::repeated`]) is accepted.
    pub fn check(&self, cmd: &Command) -> Result<(), CommandError> {
        if command::repeated(self, cmd)?.is_some() {
            return Ok(());
        }
        command::check(self, cmd)
    }

    /// Applies a committed command. On error the state is unchanged; a repeat of an
    /// applied request changes nothing and answers what the request got.
    pub fn apply(&mut self, cmd: &Command) -> Result<Response, CommandError> {
        if let Some(first) = command::repeated(self, cmd)? {
            return Ok(first);
        }
        command::check(self, cmd)?;
        Ok(command::apply_checked(self, cmd))
    }

    /// The answer `cmd` got the first time, when it repeats a request already applied:
    /// a submit, upgrade or cancel with the request id of one the app already took
    /// (clients repeat a call whose master died before answering). `None` when `cmd`
    /// is new. Refused when the request id was used for different content.
    pub fn repeated(&self, cmd: &Command) -> Result<Option<Response>, CommandError> {
        command::repeated(self, cmd)
    }

    /// The version of `app` that the submit or upgrade with `request_id` stored, if
    /// one did (never for an empty id). Refused when that request carried another
    /// spec than `spec_text`: a request id names one request.
    pub fn version_by_request(
        &self,
        app: &str,
        request_id: &str,
        spec_text: &str,
    ) -> Result<Option<u32>, CommandError> {
        if request_id.is_empty() {
            return Ok(None);
        }
        let Some(v) = self
            .apps
            .get(app)
            .and_then(|a| a.versions.iter().find(|v| v.request_id == request_id))
        else {
            return Ok(None);
        };
        if v.spec_text != spec_text {
            return Err(CommandError::RequestIdReused {
                request_id: request_id.to_string(),
                why: format!(
                    "already stored version {} of {app:?} from a different spec",
                    v.version
                ),
            });
        }
        Ok(Some(v.version))
    }

    /// The upgrade operation of `app` that introduced `version`.
    pub fn upgrade_to(&self, app: &str, version: u32) -> Option<&UpgradeRecord> {
        self.upgrades
            .values()
            .find(|u| u.app == app && u.to_version == version)
    }
}

#[cfg(test)]
mod catalog_tests;
#[cfg(test)]
pub(crate) mod fixtures;
#[cfg(test)]
mod tests;
