//! Why a checkpoint or upgrade command does not fit the state: typed, so callers (and
//! tests) tell one refusal from another by its variant, not its words. The words are
//! the `Display`, unchanged from when these were strings.

use serde::{Deserialize, Serialize};
use weir_common::plan::Phase;

/// A checkpoint or recovery command that does not fit the app's state.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum CheckpointRefusal {
    /// Checkpoint ids only increase.
    #[error("checkpoint {id} of {app}: ids must increase (last begun {last})")]
    IdNotAbove {
        /// App name.
        app: String,
        /// The id asked for.
        id: u64,
        /// The last id begun.
        last: u64,
    },
    /// One checkpoint at a time.
    #[error("checkpoint {in_flight} of {app} is still in flight")]
    InFlight {
        /// App name.
        app: String,
        /// The checkpoint in flight.
        in_flight: u64,
    },
    /// Completing or abandoning a checkpoint that is not the one in flight.
    #[error("checkpoint {id} of {app} is not in flight")]
    NotInFlight {
        /// App name.
        app: String,
        /// The checkpoint named.
        id: u64,
    },
    /// A recovery names an operator the app does not have.
    #[error("recovery of {app}: no operator {operator:?}")]
    NoOperator {
        /// App name.
        app: String,
        /// The operator named.
        operator: String,
    },
    /// A recovery from a checkpoint that is not kept complete.
    #[error("recovery of {app}: checkpoint {checkpoint} is not a kept complete checkpoint")]
    NotKept {
        /// App name.
        app: String,
        /// The checkpoint named.
        checkpoint: u64,
    },
}

/// An upgrade command that does not fit the app's state: another upgrade runs, or the
/// operation is not in the phase the command needs.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum UpgradeRefusal {
    /// One upgrade at a time.
    #[error(
        "app {app:?}: upgrade {id} is still running; wait for it to end (weirctl history {app})"
    )]
    Running {
        /// App name.
        app: String,
        /// The upgrade running.
        id: u64,
    },
    /// An app is upgraded once it runs.
    #[error("app {app:?} is not placed yet; upgrade it once it runs")]
    NotPlaced {
        /// App name.
        app: String,
    },
    /// The operation named is not the app's running one.
    #[error("upgrade {id} of {app:?} is not running")]
    NotRunning {
        /// App name.
        app: String,
        /// The operation named.
        id: u64,
    },
    /// The app names an operation the state does not hold.
    #[error("upgrade {id} is not recorded")]
    NotRecorded {
        /// The operation.
        id: u64,
    },
    /// The operation is in another phase than the command needs.
    #[error("upgrade {id} of {app:?} is in {}, not {}", .is.map_or("no phase", Phase::name), .need.name())]
    WrongPhase {
        /// App name.
        app: String,
        /// The operation.
        id: u64,
        /// Its phase (`None`: it ended).
        is: Option<Phase>,
        /// The phase the command needs.
        need: Phase,
    },
    /// The switch begins with no checkpoint in flight (its barrier is one).
    #[error("upgrade {id} of {app}: checkpoint {checkpoint} is still in flight")]
    CheckpointInFlight {
        /// App name.
        app: String,
        /// The operation.
        id: u64,
        /// The checkpoint in flight.
        checkpoint: u64,
    },
    /// The switch finishes once its checkpoint completed.
    #[error("upgrade {id} of {app}: switch checkpoint {checkpoint} is not complete")]
    SwitchIncomplete {
        /// App name.
        app: String,
        /// The operation.
        id: u64,
        /// The switch barrier's checkpoint.
        checkpoint: u64,
    },
    /// After the switch an upgrade can only complete.
    #[error("upgrade {id} of {app} switched already; it can only complete")]
    Switched {
        /// App name.
        app: String,
        /// The operation.
        id: u64,
    },
    /// A rollback's recovery names an operator the app does not have.
    #[error("abort of upgrade {id} of {app}: no operator {operator:?}")]
    NoOperator {
        /// App name.
        app: String,
        /// The operation.
        id: u64,
        /// The operator named.
        operator: String,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The words clients saw when these were strings.
    #[test]
    fn refusals_read_as_before() {
        let cases: [(Box<dyn std::fmt::Display>, &str); 4] = [
            (
                Box::new(UpgradeRefusal::WrongPhase {
                    app: "a".into(),
                    id: 3,
                    is: None,
                    need: Phase::Switch,
                }),
                r#"upgrade 3 of "a" is in no phase, not switch"#,
            ),
            (
                Box::new(UpgradeRefusal::WrongPhase {
                    app: "a".into(),
                    id: 3,
                    is: Some(Phase::Prepare),
                    need: Phase::Cleanup,
                }),
                r#"upgrade 3 of "a" is in prepare, not cleanup"#,
            ),
            (
                Box::new(UpgradeRefusal::Running {
                    app: "a".into(),
                    id: 2,
                }),
                r#"app "a": upgrade 2 is still running; wait for it to end (weirctl history a)"#,
            ),
            (
                Box::new(CheckpointRefusal::IdNotAbove {
                    app: "a".into(),
                    id: 4,
                    last: 7,
                }),
                "checkpoint 4 of a: ids must increase (last begun 7)",
            ),
        ];
        for (r, want) in cases {
            assert_eq!(r.to_string(), want);
        }
    }
}
