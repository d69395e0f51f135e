//! The upgrade planner: (old model, new model, placement) -> an upgrade plan.
//!
//! Pure and deterministic. The plan says what changed (operators and streams), which
//! streams must be adjusted, and the instructions of the three phases of an online
//! upgrade (brief section 5): *prepare* starts new PEs and opens their channels,
//! *switch* moves every adjusted stream over at a barrier and hands state to the
//! successors, *cleanup* closes old channels and stops drained PEs. PEs of operators
//! whose spec and streams did not change appear in no instruction.

mod apply;
mod build;
mod diff;
mod render;

pub use apply::apply;
pub use build::plan;
pub use render::render_text;

use crate::keygroup::KeyGroupRange;
use crate::physical::{Channel, Output, PeId};
use crate::spec::{Partitioning, StreamKey};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Arc;

pub use crate::physical::Placement;

/// Everything an upgrade from one version to another does.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct UpgradePlan {
    /// The app upgraded.
    pub app: String,
    /// Every operator of either version, by name, with what happens to it.
    pub operators: Vec<OperatorChange>,
    /// Every stream of either version, by key, with what happens to it.
    pub streams: Vec<StreamChange>,
    /// Streams whose routing changes at the switch barrier (all but the unchanged).
    pub adjusted_streams: Vec<StreamKey>,
    /// Prepare, switch and cleanup, in that order (phases with nothing to do are kept).
    pub phases: Vec<PlanPhase>,
    /// PEs that appear in no instruction: they keep running and are never paused.
    pub untouched_pes: Vec<PeId>,
    /// Counts, for the human summary.
    pub summary: PlanSummary,
}

impl UpgradePlan {
    /// True when the plan does nothing (the two versions are the same app).
    pub fn is_empty(&self) -> bool {
        self.phases.iter().all(|p| p.groups.is_empty())
    }

    /// Every instruction, phase by phase.
    pub fn instructions(&self) -> impl Iterator<Item = (Phase, &Instruction)> {
        self.phases.iter().flat_map(|p| {
            p.groups
                .iter()
                .flat_map(move |g| g.instructions.iter().map(move |i| (p.phase, i)))
        })
    }

    /// How many instructions `phase` has.
    pub fn instructions_in(&self, phase: Phase) -> usize {
        self.instructions().filter(|(p, _)| *p == phase).count()
    }
}

/// Counts over a plan.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanSummary {
    /// PEs started in prepare.
    pub pes_started: usize,
    /// PEs drained and stopped.
    pub pes_stopped: usize,
    /// Surviving PEs whose outputs switch.
    pub pes_rewired: usize,
    /// PEs in no instruction.
    pub pes_untouched: usize,
    /// Channels opened.
    pub channels_opened: usize,
    /// Channels closed.
    pub channels_closed: usize,
}

/// What happens to one operator.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OperatorChange {
    /// Operator name.
    pub name: String,
    /// The kind of change.
    pub change: OperatorChangeKind,
    /// Why, for humans: e.g. `params.rate: 100 -> 200`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reasons: Vec<String>,
    /// Parallelism in the old version, if present there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub old_parallelism: Option<u32>,
    /// Parallelism in the new version, if present there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub new_parallelism: Option<u32>,
}

/// Kinds of operator change.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OperatorChangeKind {
    /// Only in the new version: its PEs start in prepare.
    Added,
    /// Only in the old version: its PEs drain and stop.
    Removed,
    /// Kind, params or resources changed (perhaps parallelism too): new PEs replace
    /// the old ones and take over their state.
    Replaced,
    /// Only the parallelism changed: new PEs take over the state by key group.
    Rescaled,
    /// Same PEs, but an input or output stream changes: outputs switch at a barrier.
    Rewired,
    /// Not touched at all.
    Unchanged,
}

/// What happens to one stream.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamChange {
    /// The stream.
    pub stream: StreamKey,
    /// The kind of change.
    pub change: StreamChangeKind,
    /// Partitioning in the old version, if present there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub old: Option<Partitioning>,
    /// Partitioning in the new version, if present there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub new: Option<Partitioning>,
}

/// Kinds of stream change.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StreamChangeKind {
    /// Only in the new version.
    Added,
    /// Only in the old version.
    Removed,
    /// Same endpoints, new partitioning.
    Repartitioned,
    /// Same partitioning, but an endpoint's PEs are replaced or rescaled.
    Rerouted,
    /// Nothing changes.
    Unchanged,
}

/// The phases of an online upgrade, in order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Start new PEs and open their channels; nothing switches yet.
    Prepare,
    /// Barriers on the adjusted streams; state hand-off; routes switch.
    Switch,
    /// Close old channels, stop drained PEs.
    Cleanup,
}

impl Phase {
    /// The three phases in order.
    pub const ALL: [Phase; 3] = [Phase::Prepare, Phase::Switch, Phase::Cleanup];

    /// The phase before this one, if any.
    pub fn before(self) -> Option<Phase> {
        match self {
            Phase::Prepare => None,
            Phase::Switch => Some(Phase::Prepare),
            Phase::Cleanup => Some(Phase::Switch),
        }
    }

    /// Lower-case name.
    pub fn name(self) -> &'static str {
        match self {
            Phase::Prepare => "prepare",
            Phase::Switch => "switch",
            Phase::Cleanup => "cleanup",
        }
    }
}

/// One phase's instructions, grouped by where they execute.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PlanPhase {
    /// Which phase.
    pub phase: Phase,
    /// Groups sorted by target; groups of one phase run concurrently.
    pub groups: Vec<InstructionGroup>,
}

/// Instructions executed at one place, in order.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct InstructionGroup {
    /// A worker when a placement was given, otherwise the PE itself (offline plans).
    pub target: Target,
    /// In execution order.
    pub instructions: Vec<Instruction>,
}

/// Where a group of instructions executes.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Target {
    /// The worker running (or chosen to run) the instruction's PE.
    Worker(String),
    /// The PE itself, when no placement is known.
    Pe(PeId),
}

/// One step of an upgrade. Each names the PE it acts on ([`Instruction::subject`]).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Instruction {
    /// Start a new PE (prepare). It loads the state of `state_from` (handed over at
    /// the switch barrier) before processing, restricted to its key groups.
    StartPe {
        /// New PE.
        pe: PeId,
        /// Its operator.
        operator: Arc<str>,
        /// Its operator revision.
        revision: Arc<str>,
        /// Parallel index.
        index: u32,
        /// Operator parallelism.
        parallelism: u32,
        /// Key groups it owns.
        key_groups: KeyGroupRange,
        /// Predecessor PEs whose state (for these key groups) it takes over.
        state_from: Vec<PeId>,
        /// Its output routes, live from the start.
        outputs: Vec<Output>,
    },
    /// Open a channel (prepare). The consumer accepts it but reads it only after the
    /// old channels from the same stream delivered their barrier (per-key order).
    OpenChannel {
        /// The channel.
        channel: Channel,
    },
    /// A surviving producer injects a barrier into its old channels of `stream` and
    /// routes every later record by the new route (switch). Empty `targets`: the
    /// stream is removed and ends at the barrier.
    SwitchOutput {
        /// Producer PE.
        pe: PeId,
        /// Stream switched.
        stream: StreamKey,
        /// New partitioning, if the stream remains.
        partitioning: Option<Partitioning>,
        /// New consumer PEs.
        targets: Vec<PeId>,
    },
    /// An old PE processes up to the barrier on all inputs, flushes, snapshots its
    /// state, hands it to `hand_off_to` and forwards the barrier (switch).
    Drain {
        /// Old PE.
        pe: PeId,
        /// Successors taking its state (split by key group).
        hand_off_to: Vec<PeId>,
    },
    /// Close a channel that the new version does not have (cleanup).
    CloseChannel {
        /// The channel.
        channel: Channel,
    },
    /// Stop a drained PE (cleanup).
    StopPe {
        /// Old PE.
        pe: PeId,
    },
}

impl Instruction {
    /// The PE the instruction acts on, which decides where it executes.
    pub fn subject(&self) -> &PeId {
        match self {
            Instruction::StartPe { pe, .. }
            | Instruction::SwitchOutput { pe, .. }
            | Instruction::Drain { pe, .. }
            | Instruction::StopPe { pe } => pe,
            // The consumer end accepts a new channel; the producer end lets go of an old one.
            Instruction::OpenChannel { channel } => &channel.to,
            Instruction::CloseChannel { channel } => &channel.from,
        }
    }

    /// Every PE the instruction names.
    pub fn pes(&self) -> Vec<&PeId> {
        match self {
            Instruction::StartPe {
                pe,
                state_from,
                outputs,
                ..
            } => std::iter::once(pe)
                .chain(state_from)
                .chain(outputs.iter().flat_map(|o| &o.targets))
                .collect(),
            Instruction::OpenChannel { channel } | Instruction::CloseChannel { channel } => {
                vec![&channel.from, &channel.to]
            }
            Instruction::SwitchOutput { pe, targets, .. } => {
                std::iter::once(pe).chain(targets).collect()
            }
            Instruction::Drain { pe, hand_off_to } => {
                std::iter::once(pe).chain(hand_off_to).collect()
            }
            Instruction::StopPe { pe } => vec![pe],
        }
    }
}
