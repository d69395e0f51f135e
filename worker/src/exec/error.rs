//! What can go wrong with an exec PE.

use std::io;
use std::time::Duration;
use weir_common::record::BatchError;

/// Why an exec PE could not answer a batch.
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    /// The spec gave no program to run (validation normally refuses this earlier).
    #[error("PE {pe_id}: the exec command is empty")]
    EmptyCommand {
        /// The PE.
        pe_id: String,
    },
    /// The program could not be started (not on PATH, not executable, ...).
    #[error("PE {pe_id}: cannot start `{command}`: {source}")]
    Spawn {
        /// The PE.
        pe_id: String,
        /// The command line, as configured.
        command: String,
        /// What the OS said.
        #[source]
        source: io::Error,
    },
    /// A container could not be created, attached or started.
    #[error("PE {pe_id}: cannot start {what}: {reason}")]
    Launch {
        /// The PE.
        pe_id: String,
        /// What was to run (`container weir-pe-score:v1`).
        what: String,
        /// Why, in the engine's words.
        reason: String,
    },
    /// The program started but did not answer the empty batch every container PE is
    /// sent first (it exited, or speaks another protocol).
    #[error(
        "PE {pe_id}: {command} did not answer the start-up handshake: {cause} ({exit}; \
         last stderr line: {})",
        last_stderr.as_deref().unwrap_or("none")
    )]
    Handshake {
        /// The PE.
        pe_id: String,
        /// What runs.
        command: String,
        /// What went wrong (boxed to keep `Result`s small).
        #[source]
        cause: Box<Failure>,
        /// How it ended.
        exit: String,
        /// The last line it wrote to stderr, if any.
        last_stderr: Option<String>,
    },
    /// An input batch too large for a frame's `u32` length prefix.
    #[error("PE {pe_id}: input batch of {len} bytes does not fit a frame")]
    InputTooLarge {
        /// The PE.
        pe_id: String,
        /// Its size in bytes.
        len: usize,
    },
    /// A record could not be written as JSON (lines mode).
    #[error("PE {pe_id}: cannot encode a record as JSON: {source}")]
    Encode {
        /// The PE.
        pe_id: String,
        /// The encoder's error.
        #[source]
        source: serde_json::Error,
    },
    /// The program failed on the same batch too many times in a row (it was restarted
    /// and the batch replayed after each failure but the last).
    #[error(
        "PE {pe_id}: {command} failed {attempts} times in a row on one batch; \
         last failure: {cause} ({exit}; last stderr line: {})",
        last_stderr.as_deref().unwrap_or("none")
    )]
    GaveUp {
        /// The PE.
        pe_id: String,
        /// The command line.
        command: String,
        /// Attempts made on the batch.
        attempts: u32,
        /// What went wrong the last time (boxed to keep `Result`s small).
        #[source]
        cause: Box<Failure>,
        /// How the last child ended (`exit status: 3`, `signal: 9 (SIGKILL)`, ...).
        exit: String,
        /// The last line the last child wrote to stderr, if any.
        last_stderr: Option<String>,
    },
}

impl ExecError {
    /// The last failure of the program, when the error is that it kept failing.
    pub fn failure(&self) -> Option<&Failure> {
        match self {
            ExecError::GaveUp { cause, .. } => Some(cause),
            _ => None,
        }
    }
}

/// One failed round trip. The child is restarted after any of these: after a protocol
/// violation the stream is out of step and nothing it sends later can be trusted.
#[derive(Debug, thiserror::Error)]
pub enum Failure {
    /// No complete answer within the batch timeout.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// Writing the request failed (usually a broken pipe: the program exited).
    #[error("writing to the program failed: {0}")]
    Write(#[source] io::Error),
    /// Reading the answer failed.
    #[error("reading from the program failed: {0}")]
    Read(#[source] io::Error),
    /// The program closed its stdout before answering in full (it exited or crashed).
    #[error("the program closed its stdout after {got} of {expected} answer lines")]
    MissingLines {
        /// Complete lines received.
        got: usize,
        /// Lines owed (one per input record).
        expected: usize,
    },
    /// The program closed its stdout before sending a whole answer frame.
    #[error("the program closed its stdout before a whole answer frame")]
    MissingFrame,
    /// The program closed its stdout between batches.
    #[error("the program closed its stdout")]
    Closed,
    /// The program wrote bytes no request asked for (more answers than requests).
    #[error("the program wrote {0} bytes that answer no request")]
    Unsolicited(usize),
    /// An answer line is longer than the answer limit.
    #[error("answer line {line} is longer than {max} bytes")]
    LineTooLong {
        /// 1-based line number within the batch.
        line: usize,
        /// The limit.
        max: usize,
    },
    /// An answer line is not JSON.
    #[error("answer line {line} is not JSON: {error}")]
    BadJson {
        /// 1-based line number within the batch.
        line: usize,
        /// The parser's complaint.
        error: String,
    },
    /// An answer line is JSON but neither an object nor `null`.
    #[error("answer line {line} is neither a JSON object nor null")]
    NotObject {
        /// 1-based line number within the batch.
        line: usize,
    },
    /// An answer record cannot be carried by the batch format.
    #[error("answer line {line} cannot be encoded as a record: {error}")]
    BadRecord {
        /// 1-based line number within the batch.
        line: usize,
        /// Why.
        error: BatchError,
    },
    /// An answer frame announces more bytes than allowed.
    #[error("answer frame of {len} bytes is above the {max} byte limit")]
    FrameTooLarge {
        /// Announced length.
        len: u64,
        /// The limit.
        max: usize,
    },
    /// An answer frame does not hold a valid batch.
    #[error("answer frame is not a valid batch: {0}")]
    BadBatch(#[source] BatchError),
}

impl Failure {
    /// Whether the failure suggests the child is exiting on its own, so waiting a
    /// moment yields its real exit status (rather than killing it at once).
    pub(super) fn child_gone(&self) -> bool {
        match self {
            Failure::Write(_)
            | Failure::Read(_)
            | Failure::MissingLines { .. }
            | Failure::MissingFrame
            | Failure::Closed => true,
            Failure::Timeout(_)
            | Failure::Unsolicited(_)
            | Failure::LineTooLong { .. }
            | Failure::BadJson { .. }
            | Failure::NotObject { .. }
            | Failure::BadRecord { .. }
            | Failure::FrameTooLarge { .. }
            | Failure::BadBatch(_) => false,
        }
    }
}
