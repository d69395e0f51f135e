//! Where a PE's program runs. The PE protocol (request/answer over stdin/stdout,
//! stderr to the log, restart and replay on failure) is the same whether the program
//! is a local process or a container: [`ExecPe`](super::ExecPe) drives any [`Launch`],
//! and only starting and stopping an instance differ.
//!
//! - [`LocalLaunch`]: a child process of the worker (`kind: exec`).
//! - `crate::container::ContainerLaunch`: a container on the local Docker Engine
//!   (`kind: container`), its stdio attached through bollard.

use super::error::ExecError;
use std::fmt::Debug;
use std::future::Future;
use std::pin::Pin;
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::process::{Child, Command};
use weir_common::spec::{ExecParams, PeProtocol};

/// A boxed future, for the object-safe methods below.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The program's standard input, as the worker writes it.
pub type Stdin = Pin<Box<dyn AsyncWrite + Send>>;
/// One of the program's output streams, as the worker reads it.
pub type Output = Pin<Box<dyn AsyncRead + Send>>;

/// Environment variable giving the program its PE id (handy in its own logs).
pub const PE_ID_ENV: &str = "WEIR_PE_ID";

/// Starts instances of one PE's program.
pub trait Launch: Send + Sync + Debug {
    /// Starts instance number `start` (0 for the first, 1 for the first restart, ...).
    fn launch(&self, pe_id: &str, start: u64) -> BoxFuture<'_, Result<Started, ExecError>>;

    /// What runs, in words, for errors and logs (`python3 score.py`,
    /// `container weir-pe-score:v1`).
    fn describe(&self) -> String;

    /// The protocol the program speaks.
    fn protocol(&self) -> PeProtocol;

    /// Whether a started instance must answer an empty batch before it counts as
    /// started (framed protocol only): a container may be "running" long before its
    /// program reads, and an upgrade must not switch to one that never answers.
    fn handshake(&self) -> bool {
        false
    }
}

/// A started instance: its three streams and the handle that stops it.
pub struct Started {
    /// Its stdin.
    pub stdin: Stdin,
    /// Its stdout (answers).
    pub stdout: Output,
    /// Its stderr (diagnostics, forwarded to the log).
    pub stderr: Output,
    /// Stops it.
    pub instance: Box<dyn Instance>,
}

/// One running instance, to stop.
pub trait Instance: Send + Debug {
    /// Waits up to `grace` for the instance to exit on its own (its stdin is already
    /// closed), then kills it; a zero `grace` kills it at once. Returns how it ended,
    /// in words (`exit status: 3`, `killed by the worker`).
    fn stop(self: Box<Self>, grace: Duration) -> BoxFuture<'static, String>;
}

/// A program run as a child process of the worker, with `params.env` added to the
/// worker's environment and `WEIR_PE_ID` set.
#[derive(Clone, Debug)]
pub struct LocalLaunch {
    params: ExecParams,
}

impl LocalLaunch {
    /// Runs `params.command`.
    pub fn new(params: ExecParams) -> Self {
        Self { params }
    }
}

impl Launch for LocalLaunch {
    fn launch(&self, pe_id: &str, _start: u64) -> BoxFuture<'_, Result<Started, ExecError>> {
        let started = self.spawn(pe_id);
        Box::pin(std::future::ready(started))
    }

    fn describe(&self) -> String {
        format!("`{}`", self.params.command.join(" "))
    }

    fn protocol(&self) -> PeProtocol {
        self.params.protocol
    }
}

impl LocalLaunch {
    fn spawn(&self, pe_id: &str) -> Result<Started, ExecError> {
        let params = &self.params;
        let Some((program, args)) = params.command.split_first() else {
            return Err(ExecError::EmptyCommand {
                pe_id: pe_id.to_string(),
            });
        };
        let spawn_error = |source| ExecError::Spawn {
            pe_id: pe_id.to_string(),
            command: params.command.join(" "),
            source,
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
            .map_err(spawn_error)?;
        let (Some(stdin), Some(stdout), Some(stderr)) =
            (child.stdin.take(), child.stdout.take(), child.stderr.take())
        else {
            // Cannot happen with all three piped; reported rather than unwrapped.
            return Err(spawn_error(std::io::Error::other(
                "a standard stream was not piped",
            )));
        };
        tracing::debug!(pe = %pe_id, pid = ?child.id(), command = ?params.command, "exec PE started");
        Ok(Started {
            stdin: Box::pin(stdin),
            stdout: Box::pin(stdout),
            stderr: Box::pin(stderr),
            instance: Box::new(LocalInstance(child)),
        })
    }
}

/// A child process (killed if dropped).
#[derive(Debug)]
struct LocalInstance(Child);

impl Instance for LocalInstance {
    fn stop(self: Box<Self>, grace: Duration) -> BoxFuture<'static, String> {
        let mut child = self.0;
        Box::pin(async move {
            // No grace means kill now: even a zero timeout would let the program run
            // until the next timer tick, enough to exit on its own and hide the kill.
            let exited = if grace.is_zero() {
                None
            } else {
                tokio::time::timeout(grace, child.wait()).await.ok()
            };
            match exited {
                Some(Ok(status)) => status.to_string(),
                Some(Err(e)) => format!("exit status unknown: {e}"),
                None => match child.kill().await {
                    Ok(()) => "killed by the worker".to_string(),
                    Err(e) => format!("could not be killed: {e}"),
                },
            }
        })
    }
}
