//! One running instance of the program: its pipes, the task forwarding its stderr to
//! tracing, one request/answer round trip, and stopping it.

use super::error::{ExecError, Failure};
use super::readline::{read_line_capped, trim_newline, LineEnd};
use super::{framed, lines};
use std::pin::Pin;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::Duration;
use tokio::io::{AsyncBufRead, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStderr, ChildStdin, ChildStdout, Command};
use tokio::task::JoinHandle;
use weir_common::record::Batch;
use weir_common::spec::{ExecParams, PeProtocol};

/// Environment variable giving the program its PE id (handy in its own logs).
pub const PE_ID_ENV: &str = "WEIR_PE_ID";

/// Longest stderr line forwarded whole; longer ones are cut.
const MAX_STDERR_LINE: usize = 16 << 10;
/// How long to wait for the stderr forwarder to drain once the child is gone (a
/// grandchild may hold the pipe open; its lines are not worth blocking for).
const STDERR_DRAIN: Duration = Duration::from_secs(1);
/// Read buffer for the child's stdout.
const STDOUT_BUFFER: usize = 64 << 10;

/// The last stderr line, shared with the forwarder so failures can quote it.
type LastLine = Arc<Mutex<Option<String>>>;

/// A spawned program.
#[derive(Debug)]
pub(super) struct Running {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    stderr_task: JoinHandle<()>,
    last_stderr: LastLine,
}

/// How a program ended.
#[derive(Debug)]
pub(super) struct Ended {
    /// Its exit status in words, or that the worker killed it.
    pub exit: String,
    /// The last line it wrote to stderr.
    pub last_stderr: Option<String>,
}

impl Running {
    /// Starts the program with piped stdio; it is killed if this is dropped.
    pub(super) fn spawn(pe_id: &str, params: &ExecParams) -> Result<Self, ExecError> {
        let Some((program, args)) = params.command.split_first() else {
            return Err(ExecError::EmptyCommand {
                pe_id: pe_id.to_string(),
            });
        };
        let mut child = Command::new(program)
            .args(args)
            .envs(&params.env)
            .env(PE_ID_ENV, pe_id)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|source| ExecError::Spawn {
                pe_id: pe_id.to_string(),
                command: params.command.join(" "),
                source,
            })?;
        let (Some(stdin), Some(stdout), Some(stderr)) =
            (child.stdin.take(), child.stdout.take(), child.stderr.take())
        else {
            // Cannot happen with all three piped; reported rather than unwrapped.
            return Err(ExecError::Spawn {
                pe_id: pe_id.to_string(),
                command: params.command.join(" "),
                source: std::io::Error::other("a standard stream was not piped"),
            });
        };
        let last_stderr = LastLine::default();
        let stderr_task = tokio::spawn(forward_stderr(
            pe_id.to_string(),
            stderr,
            Arc::clone(&last_stderr),
        ));
        tracing::debug!(pe = %pe_id, pid = ?child.id(), command = ?params.command, "exec PE started");
        Ok(Self {
            child,
            stdin,
            stdout: BufReader::with_capacity(STDOUT_BUFFER, stdout),
            stderr_task,
            last_stderr,
        })
    }

    /// Sends `request` (the encoded `input`) and reads the answer. Writing and reading
    /// run together: a program that answers while it reads would otherwise fill its
    /// stdout pipe while the worker is still writing, and both would wait forever.
    pub(super) async fn round_trip(
        &mut self,
        request: &[u8],
        input: &Batch,
        protocol: PeProtocol,
        max_answer: usize,
    ) -> Result<Batch, Failure> {
        self.check_idle().await?;
        let stdin = &mut self.stdin;
        let stdout = &mut self.stdout;
        let write = async move {
            stdin.write_all(request).await.map_err(Failure::Write)?;
            stdin.flush().await.map_err(Failure::Write)
        };
        let read = async move {
            match protocol {
                PeProtocol::Lines => lines::read_answer(stdout, input, max_answer).await,
                PeProtocol::Framed => framed::read_answer(stdout, max_answer).await,
            }
        };
        let ((), answer) = tokio::try_join!(write, read)?;
        // Answer bytes already here beyond the expected answer would be read as the
        // next batch's answer: refuse them now (best effort; later ones are caught by
        // `check_idle`).
        match self.stdout.buffer().len() {
            0 => Ok(answer),
            n => Err(Failure::Unsolicited(n)),
        }
    }

    /// Fails if the program wrote something between batches or closed its stdout.
    /// Looks without waiting.
    async fn check_idle(&mut self) -> Result<(), Failure> {
        let stdout = &mut self.stdout;
        let peek = std::future::poll_fn(|cx| {
            Poll::Ready(match Pin::new(&mut *stdout).poll_fill_buf(cx) {
                Poll::Ready(r) => Some(r.map(<[u8]>::len)),
                Poll::Pending => None,
            })
        })
        .await;
        match peek {
            None => Ok(()),
            Some(Ok(0)) => Err(Failure::Closed),
            Some(Ok(n)) => Err(Failure::Unsolicited(n)),
            Some(Err(e)) => Err(Failure::Read(e)),
        }
    }

    /// Closes its stdin (a well-behaved program exits at end of input), waits up to
    /// `grace` for it to exit, then kills it; a zero `grace` kills it at once.
    pub(super) async fn stop(self, grace: Duration) -> Ended {
        let Running {
            mut child,
            stdin,
            stdout,
            stderr_task,
            last_stderr,
        } = self;
        drop(stdin);
        // Unread answers must not keep a program blocked on a full pipe.
        drop(stdout);
        // No grace means kill now: even a zero timeout would let the program run
        // until the next timer tick, enough to exit on its own and hide the kill.
        let exited = if grace.is_zero() {
            None
        } else {
            tokio::time::timeout(grace, child.wait()).await.ok()
        };
        let exit = match exited {
            Some(Ok(status)) => status.to_string(),
            Some(Err(e)) => format!("exit status unknown: {e}"),
            None => match child.kill().await {
                Ok(()) => "killed by the worker".to_string(),
                Err(e) => format!("could not be killed: {e}"),
            },
        };
        let mut stderr_task = stderr_task;
        if tokio::time::timeout(STDERR_DRAIN, &mut stderr_task)
            .await
            .is_err()
        {
            stderr_task.abort();
        }
        let last_stderr = last_stderr
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .take();
        Ended { exit, last_stderr }
    }
}

/// Forwards the program's stderr to tracing, line by line, remembering the last one.
async fn forward_stderr(pe_id: String, stderr: ChildStderr, last: LastLine) {
    let mut reader = BufReader::new(stderr);
    let mut buf = Vec::new();
    loop {
        buf.clear();
        let end = match read_line_capped(&mut reader, &mut buf, MAX_STDERR_LINE).await {
            Ok(end) => end,
            Err(e) => {
                tracing::debug!(pe = %pe_id, error = %e, "reading the program's stderr failed");
                return;
            }
        };
        if end == LineEnd::Eof && buf.is_empty() {
            return;
        }
        let mut line = String::from_utf8_lossy(trim_newline(&buf)).into_owned();
        if end == LineEnd::Cut {
            line.push_str(" [cut]");
        }
        tracing::warn!(target: "weir_worker::exec::stderr", pe = %pe_id, "{line}");
        *last.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(line);
        if end == LineEnd::Eof {
            return;
        }
    }
}
