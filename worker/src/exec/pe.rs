//! The exec PE: a program fed one batch at a time, restarted when it fails.

use super::child::Running;
use super::error::{ExecError, Failure};
use super::launch::{Launch, LocalLaunch};
use super::{framed, lines};
use std::sync::Arc;
use std::time::Duration;
use weir_common::record::Batch;
use weir_common::spec::{ExecParams, PeProtocol};

/// Tuning of an exec PE. The defaults suit production; tests shorten the waits.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExecConfig {
    /// Longest a round trip may take before it counts as a failure.
    pub batch_timeout: Duration,
    /// Failures in a row on one batch before [`ExecPe::process`] gives up (at least 1).
    pub max_failures: u32,
    /// Wait before the first restart; doubled after each further failure.
    pub backoff: Duration,
    /// Cap on the wait between restarts.
    pub max_backoff: Duration,
    /// Largest answer frame (framed) or answer line (lines), in bytes.
    pub max_answer_bytes: usize,
    /// How long a program that closed its pipes gets to exit before it is killed (so
    /// its real exit status can be reported).
    pub exit_grace: Duration,
    /// How long [`ExecPe::shutdown`] waits for the program to exit after closing its
    /// stdin.
    pub shutdown_grace: Duration,
}

impl Default for ExecConfig {
    fn default() -> Self {
        Self {
            batch_timeout: Duration::from_secs(30),
            max_failures: 5,
            backoff: Duration::from_millis(50),
            max_backoff: Duration::from_secs(2),
            max_answer_bytes: framed::MAX_FRAME_BYTES,
            exit_grace: Duration::from_secs(1),
            shutdown_grace: Duration::from_secs(5),
        }
    }
}

/// A program transforming record batches over stdin/stdout (docs/pe-protocol.md),
/// run as a local process or a container ([`Launch`]).
///
/// Each [`process`](Self::process) call is one request and exactly one answer. If the
/// program crashes, breaks the protocol or times out, it is restarted and the same
/// batch is sent again, so the caller sees one answer per batch whatever happened to
/// the program in between.
#[derive(Debug)]
pub struct ExecPe {
    pe_id: String,
    launch: Arc<dyn Launch>,
    protocol: PeProtocol,
    config: ExecConfig,
    command: String,
    /// `None` after a failure until the next spawn.
    child: Option<Running>,
    restarts: u64,
}

impl ExecPe {
    /// Spawns the program with the default [`ExecConfig`].
    pub async fn start(pe_id: &str, params: &ExecParams) -> Result<Self, ExecError> {
        Self::start_with(pe_id, params, ExecConfig::default()).await
    }

    /// Spawns the program as a local process ([`LocalLaunch`], default limits): its
    /// environment is `params.env` and `WEIR_PE_ID`, not the worker's. Fails when it
    /// cannot be started, naming the command.
    pub async fn start_with(
        pe_id: &str,
        params: &ExecParams,
        config: ExecConfig,
    ) -> Result<Self, ExecError> {
        Self::launch(pe_id, Arc::new(LocalLaunch::new(params.clone())), config).await
    }

    /// Starts the program through `launch`. Where the launch asks for a handshake,
    /// the program has answered an empty batch when this returns; a program that does
    /// not is stopped and the error says why.
    pub async fn launch(
        pe_id: &str,
        launch: Arc<dyn Launch>,
        config: ExecConfig,
    ) -> Result<Self, ExecError> {
        let mut child = Running::spawn(pe_id, launch.as_ref(), 0).await?;
        let protocol = launch.protocol();
        let command = launch.describe();
        if launch.handshake() && protocol == PeProtocol::Framed {
            let empty = weir_common::record::BatchBuilder::default().finish();
            let mut request = Vec::with_capacity(4);
            framed::encode(&empty, &mut request);
            let round_trip = child.round_trip(&request, &empty, protocol, config.max_answer_bytes);
            let answer = tokio::time::timeout(config.batch_timeout, round_trip)
                .await
                .unwrap_or(Err(Failure::Timeout(config.batch_timeout)));
            if let Err(cause) = answer {
                let ended = child.stop(config.exit_grace).await;
                return Err(ExecError::Handshake {
                    pe_id: pe_id.to_string(),
                    command,
                    cause: Box::new(cause),
                    exit: ended.exit,
                    last_stderr: ended.last_stderr,
                });
            }
        }
        Ok(Self {
            pe_id: pe_id.to_string(),
            launch,
            protocol,
            command,
            config,
            child: Some(child),
            restarts: 0,
        })
    }

    /// The PE id.
    pub fn pe_id(&self) -> &str {
        &self.pe_id
    }

    /// The protocol the program speaks.
    pub fn protocol(&self) -> PeProtocol {
        self.protocol
    }

    /// Times the program was started again after a failure.
    pub fn restarts(&self) -> u64 {
        self.restarts
    }

    /// Sends `batch` to the program and returns its answer.
    ///
    /// On a failure (exit, broken pipe, protocol violation, timeout) the program is
    /// restarted after a short backoff and the batch replayed; after
    /// [`ExecConfig::max_failures`] failures in a row the error says why. The next call
    /// then starts a fresh program. In lines mode an empty batch is answered at once.
    pub async fn process(&mut self, batch: &Batch) -> Result<Batch, ExecError> {
        let protocol = self.protocol;
        if protocol == PeProtocol::Lines && batch.is_empty() {
            return Ok(batch.clone());
        }
        let request = self.encode(batch)?;
        let max_failures = self.config.max_failures.max(1);
        let mut failures = 0;
        loop {
            // Taken out while in use: if this future is dropped mid-batch, the child
            // goes with it (kill on drop) and the next call starts clean.
            let mut running = match self.child.take() {
                Some(running) => running,
                None => {
                    let running =
                        Running::spawn(&self.pe_id, self.launch.as_ref(), self.restarts + 1)
                            .await?;
                    self.restarts += 1;
                    tracing::info!(
                        pe = %self.pe_id,
                        restarts = self.restarts,
                        replay = failures > 0,
                        records = batch.len(),
                        program = %self.command,
                        "exec PE restarted"
                    );
                    running
                }
            };
            let timeout = self.config.batch_timeout;
            let round_trip =
                running.round_trip(&request, batch, protocol, self.config.max_answer_bytes);
            let result = tokio::time::timeout(timeout, round_trip)
                .await
                .unwrap_or(Err(Failure::Timeout(timeout)));
            let cause = match result {
                Ok(answer) => {
                    self.child = Some(running);
                    return Ok(answer);
                }
                Err(cause) => cause,
            };
            failures += 1;
            // A program that broke the protocol or hangs is killed at once; one that
            // closed its pipes is probably exiting, and its exit status is worth a wait.
            let grace = if cause.child_gone() {
                self.config.exit_grace
            } else {
                Duration::ZERO
            };
            let ended = running.stop(grace).await;
            tracing::warn!(
                pe = %self.pe_id,
                failures,
                cause = %cause,
                exit = %ended.exit,
                last_stderr = ended.last_stderr.as_deref().unwrap_or(""),
                "exec PE failed on a batch"
            );
            if failures >= max_failures {
                return Err(ExecError::GaveUp {
                    pe_id: self.pe_id.clone(),
                    command: self.command.clone(),
                    attempts: failures,
                    cause: Box::new(cause),
                    exit: ended.exit,
                    last_stderr: ended.last_stderr,
                });
            }
            tokio::time::sleep(self.backoff(failures)).await;
        }
    }

    /// Closes the program's stdin, waits up to [`ExecConfig::shutdown_grace`] for it
    /// to exit, then kills it.
    pub async fn shutdown(mut self) {
        if let Some(running) = self.child.take() {
            let ended = running.stop(self.config.shutdown_grace).await;
            tracing::debug!(pe = %self.pe_id, exit = %ended.exit, "exec PE stopped");
        }
    }

    /// The request bytes for `batch`, written to the program in one go.
    fn encode(&self, batch: &Batch) -> Result<Vec<u8>, ExecError> {
        let mut out = Vec::with_capacity(batch.encoded_len() * 2 + 4);
        match self.protocol {
            PeProtocol::Lines => {
                lines::encode(batch, &mut out).map_err(|source| ExecError::Encode {
                    pe_id: self.pe_id.clone(),
                    source,
                })?
            }
            PeProtocol::Framed => {
                framed::encode(batch, &mut out).ok_or_else(|| ExecError::InputTooLarge {
                    pe_id: self.pe_id.clone(),
                    len: batch.encoded_len(),
                })?
            }
        }
        Ok(out)
    }

    /// Wait before the restart following the `failures`-th failure in a row.
    fn backoff(&self, failures: u32) -> Duration {
        let doublings = failures.saturating_sub(1).min(16);
        self.config
            .backoff
            .saturating_mul(1 << doublings)
            .min(self.config.max_backoff)
    }
}
