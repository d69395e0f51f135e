//! A running PE's part in an online upgrade: actions armed for the switch barrier.
//!
//! The master arms PEs before it triggers the switch barrier (which is also a
//! checkpoint): a producer learns its new route for a stream, an old PE that it drains,
//! a consumer that it gains an input. Nothing happens when arming; each PE acts when
//! the barrier reaches it, in order with its records, so every record before the
//! barrier takes the old route and every record after it the new one:
//! - a producer forwards the barrier on every channel (as for any checkpoint), then
//!   ends the channels the new route drops and routes later records by the new route;
//! - a draining PE snapshots at the barrier (its successors fetch that snapshot),
//!   forwards the barrier, ends its outputs and finishes without flushing;
//! - a consumer starts reading a new input only after it aligned the barrier on its
//!   old inputs, so everything the old channels carried (per key: every earlier record)
//!   comes first.
//!
//! Actions armed for a barrier that never comes (the upgrade rolled back before
//! triggering it) are dropped when a later barrier passes.

use super::router::Router;
use super::Senders;
use super::Target;
use crate::dataplane::Input;
use tokio::sync::mpsc;
use weir_common::spec::Partitioning;

/// An action armed for a barrier.
pub enum PeControl {
    /// Route `stream` by `partitioning` over `targets` after `barrier` (no targets:
    /// the stream ends there).
    Switch {
        /// The switch barrier.
        barrier: u64,
        /// `from->to`.
        stream: String,
        /// The new partitioning (`None` with no targets).
        partitioning: Option<Partitioning>,
        /// The new consumers, in index order.
        targets: Vec<Target>,
    },
    /// Drain at `barrier`.
    Drain {
        /// The switch barrier.
        barrier: u64,
    },
    /// Start reading `input` after `barrier`.
    AddInput {
        /// The switch barrier.
        barrier: u64,
        /// The new input (its endpoint is registered already, so its producer can
        /// connect and fill its bounded queue meanwhile).
        input: Input,
    },
}

/// Actions armed and not yet due.
pub struct Armed {
    rx: mpsc::UnboundedReceiver<PeControl>,
    senders: Senders,
    switches: Vec<(u64, String, Option<Partitioning>, Vec<Target>)>,
    drain: Option<u64>,
    inputs: Vec<(u64, Input)>,
}

impl Armed {
    /// Actions arriving on `rx`; new channels are made with `senders`.
    pub fn new(rx: mpsc::UnboundedReceiver<PeControl>, senders: Senders) -> Self {
        Self {
            rx,
            senders,
            switches: Vec::new(),
            drain: None,
            inputs: Vec::new(),
        }
    }

    fn take(&mut self) {
        while let Ok(c) = self.rx.try_recv() {
            match c {
                PeControl::Switch {
                    barrier,
                    stream,
                    partitioning,
                    targets,
                } => {
                    // Repeated arming (a retried command) replaces the earlier one.
                    self.switches
                        .retain(|(b, s, _, _)| !(*b == barrier && *s == stream));
                    self.switches.push((barrier, stream, partitioning, targets));
                }
                PeControl::Drain { barrier } => self.drain = Some(barrier),
                PeControl::AddInput { barrier, input } => {
                    self.inputs
                        .retain(|(b, i)| !(*b == barrier && i.0.key == input.0.key));
                    self.inputs.push((barrier, input));
                }
            }
        }
    }

    /// Forgets the endpoint of an input that ended.
    pub fn retire_input(&self, ep: &std::sync::Arc<crate::dataplane::InputEndpoint>) {
        self.senders.retire_input(ep);
    }

    /// Whether the PE is armed to drain (at a barrier still to come).
    pub fn draining(&mut self) -> bool {
        self.take();
        self.drain.is_some()
    }

    /// Whether the PE drains at barrier `id`.
    pub fn drains_at(&mut self, id: u64) -> bool {
        self.take();
        self.drain == Some(id)
    }

    /// After barrier `id` was forwarded: switches the routes armed for it and returns
    /// the inputs armed for it. Anything armed for an older barrier is dropped.
    pub async fn after_barrier(&mut self, id: u64, router: &mut Router) -> Vec<Input> {
        self.take();
        let switches = std::mem::take(&mut self.switches);
        for (b, stream, partitioning, targets) in switches {
            if b == id {
                router
                    .switch(&stream, partitioning, &targets, &self.senders)
                    .await;
                tracing::info!(%stream, barrier = id, targets = targets.len(), "output switched");
            } else if b > id {
                self.switches.push((b, stream, partitioning, targets));
            }
        }
        if self.drain.is_some_and(|b| b < id) {
            self.drain = None;
        }
        let mut due = Vec::new();
        for (b, input) in std::mem::take(&mut self.inputs) {
            if b == id {
                due.push(input);
            } else if b > id {
                self.inputs.push((b, input));
            }
        }
        due
    }
}
