//! Proposal batching: commands written concurrently on the leader share one Raft entry.
//!
//! openraft 0.9 handles each `client_write` on its own: one log append (an fsync on
//! the leader), one replication round (an fsync on each follower) and one apply, with
//! the Raft core waiting on each fsync before it takes the next write. Under many
//! concurrent clients the fsyncs queue up one behind the other. etcd and TiKV batch
//! proposals for the same reason; here a single task takes every command waiting when
//! a slot frees up and proposes them as one [`Command::Batch`], whose entry applies
//! each command on its own (one refused command does not refuse the others) and
//! answers each one separately. A lone command is proposed as itself.
//!
//! At most [`IN_FLIGHT`] proposals are outstanding, so batches grow with the load
//! instead of every command racing into the core alone.

use super::raft_write_status;
use crate::metrics::Metrics;
use crate::raft::Raft;
use crate::state::{Command, CommandError, Response};
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot, Semaphore};
use tonic::Status;

/// Proposals outstanding at once. Two keeps the core busy (one batch replicating
/// while the next is appended) and lets every other waiting command join a batch.
pub const IN_FLIGHT: usize = 2;

/// Most commands in one entry: bounds the delay a batch adds to its first command.
pub const MAX_BATCH: usize = 128;

/// Most bytes (by [`Command::weight`]) in one entry, unless a single command is larger.
/// An entry cannot be split once it is in the log, and Raft messages are capped at
/// 64 MiB (`raft::network::MAX_RAFT_MESSAGE`): a batch of large specs must not come
/// near that.
pub const MAX_BATCH_BYTES: usize = 4 << 20;

type Answer = oneshot::Sender<Result<Result<Response, CommandError>, Status>>;

/// A handle that proposes commands through the batching task. Cheap to clone; the
/// task ends when every handle is dropped.
#[derive(Clone)]
pub struct Proposer {
    tx: mpsc::UnboundedSender<(Command, Answer)>,
}

impl Proposer {
    /// Starts the batching task over `raft` (needs a Tokio runtime).
    pub fn start(raft: Raft, metrics: Arc<Metrics>) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(run(raft, metrics, rx));
        Self { tx }
    }

    /// Proposes `cmd` and waits until it is committed and applied: the outer error is
    /// Raft's (not leader, stopped), the inner one the command's own refusal.
    pub async fn propose(&self, cmd: Command) -> Result<Result<Response, CommandError>, Status> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send((cmd, tx))
            .map_err(|_| Status::unavailable("this master is stopping"))?;
        rx.await
            .map_err(|_| Status::unavailable("this master is stopping"))?
    }
}

async fn run(
    raft: Raft,
    metrics: Arc<Metrics>,
    mut rx: mpsc::UnboundedReceiver<(Command, Answer)>,
) {
    let slots = Arc::new(Semaphore::new(IN_FLIGHT));
    // A command that did not fit the previous batch opens the next one.
    let mut carried: Option<(Command, Answer)> = None;
    loop {
        let first = match carried.take() {
            Some(c) => c,
            None => match rx.recv().await {
                Some(c) => c,
                None => return,
            },
        };
        // Wait for a slot first: whatever arrives meanwhile joins this batch.
        let Ok(permit) = slots.clone().acquire_owned().await else {
            return;
        };
        let mut bytes = first.0.weight();
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            let Ok(next) = rx.try_recv() else { break };
            bytes += next.0.weight();
            if bytes > MAX_BATCH_BYTES {
                carried = Some(next);
                break;
            }
            batch.push(next);
        }
        metrics.proposed(batch.len());
        let raft = raft.clone();
        tokio::spawn(async move {
            propose(&raft, batch).await;
            drop(permit);
        });
    }
}

async fn propose(raft: &Raft, mut batch: Vec<(Command, Answer)>) {
    if batch.len() == 1 {
        let (cmd, answer) = batch.remove(0);
        let res = raft
            .client_write(cmd)
            .await
            .map(|r| r.data)
            .map_err(raft_write_status);
        let _ = answer.send(res);
        return;
    }
    let (cmds, answers): (Vec<Command>, Vec<Answer>) = batch.into_iter().unzip();
    let res = raft.client_write(Command::Batch { cmds }).await;
    match res {
        Ok(r) => match r.data {
            Ok(Response::Batch { results }) if results.len() == answers.len() => {
                for (answer, one) in answers.into_iter().zip(results) {
                    let _ = answer.send(Ok(one));
                }
            }
            // Not reachable with this master's state machine; answered rather than lost.
            other => {
                let status = Status::internal(format!("batch answered {other:?}"));
                for answer in answers {
                    let _ = answer.send(Err(status.clone()));
                }
            }
        },
        Err(e) => {
            let status = raft_write_status(e);
            for answer in answers {
                let _ = answer.send(Err(status.clone()));
            }
        }
    }
}
