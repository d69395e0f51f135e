//! One running instance of the program, wherever it runs: its streams, the task
//! forwarding its stderr to tracing, one request/answer round trip, and stopping it.

use super::error::{ExecError, Failure};
use super::launch::{Instance, Launch, Output, Stdin};
use super::readline::{read_line_capped, trim_newline, LineEnd};
use super::{framed, lines};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::Duration;
use tokio::io::{AsyncBufRead, AsyncWriteExt, BufReader};
use tokio::task::JoinHandle;
use tracing::Instrument;
use weir_common::record::Batch;
use weir_common::spec::PeProtocol;

/// Longest stderr line forwarded whole; longer ones are cut.
const MAX_STDERR_LINE: usize = 16 << 10;
/// How long to wait for the stderr forwarder to drain once the child is gone (a
/// grandchild may hold the pipe open; its lines are not worth blocking for).
const STDERR_DRAIN: Duration = Duration::from_secs(1);
/// How long closing the program's stdin may take before it is given up on.
const STDIN_CLOSE: Duration = Duration::from_secs(1);
/// Read buffer for the child's stdout.
const STDOUT_BUFFER: usize = 64 << 10;

/// The last stderr line, shared with the forwarder so failures can quote it.
type LastLine = Arc<Mutex<Option<String>>>;

/// A spawned program.
pub(super) struct Running {
    instance: Box<dyn Instance>,
    stdin: Stdin,
    stdout: BufReader<Output>,
    stderr_task: JoinHandle<()>,
    last_stderr: LastLine,
}

impl std::fmt::Debug for Running {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Running")
            .field("instance", &self.instance)
            .finish_non_exhaustive()
    }
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
    /// Starts instance `start` of the program through `launch`.
    pub(super) async fn spawn(
        pe_id: &str,
        launch: &dyn Launch,
        start: u64,
    ) -> Result<Self, ExecError> {
        let started = launch.launch(pe_id, start).await?;
        let last_stderr = LastLine::default();
        // In the PE's span, so its lines sit with the PE's other events.
        let stderr_task = tokio::spawn(
            forward_stderr(pe_id.to_string(), started.stderr, Arc::clone(&last_stderr))
                .instrument(tracing::Span::current()),
        );
        Ok(Self {
            instance: started.instance,
            stdin: started.stdin,
            stdout: BufReader::with_capacity(STDOUT_BUFFER, started.stdout),
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
            instance,
            mut stdin,
            stdout,
            stderr_task,
            last_stderr,
        } = self;
        // A shutdown, not only a drop: a container's stdin is a socket that must be
        // half-closed for the engine to pass end of input on. Bounded: a program that
        // does not read could keep a flush waiting.
        if !grace.is_zero() {
            let _ = tokio::time::timeout(STDIN_CLOSE, stdin.shutdown()).await;
        }
        drop(stdin);
        // Unread answers must not keep a program blocked on a full pipe.
        drop(stdout);
        let exit = instance.stop(grace).await;
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
async fn forward_stderr(pe_id: String, stderr: Output, last: LastLine) {
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
