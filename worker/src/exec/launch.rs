//! Where a PE's program runs. The PE protocol (request/answer over stdin/stdout,
//! stderr to the log, restart and replay on failure) is the same whether the program
//! is a local process or a container: [`ExecPe`](super::ExecPe) drives any [`Launch`],
//! and only starting and stopping an instance differ.
//!
//! - [`LocalLaunch`]: a child process of the worker (`kind: exec`).
//! - `crate::container::ContainerLaunch`: a container on the local Docker Engine
//!   (`kind: container`), its stdio attached through bollard.

use super::error::ExecError;
use std::ffi::{OsStr, OsString};
use std::fmt::Debug;
use std::future::Future;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::pin::Pin;
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::process::{Child, Command};
use weir_common::spec::{ExecParams, PeProtocol, Resources};

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

/// The `PATH` an exec program sees unless its spec's `env` sets one: the standard
/// system directories, so that scripts find `sh`, `cat` or `python3`, without
/// handing the program the worker's own `PATH` (which can name private or per-user
/// directories). The program itself is looked up before it starts ([`LocalLaunch`]).
pub const CHILD_PATH: &str = "/usr/local/bin:/usr/bin:/bin";

/// Most files an exec program may hold open (soft and hard limit): a PE needs its
/// three pipes and a handful of its own files; a leak stops at this bound instead of
/// at the worker's (often much higher) limit.
pub const MAX_OPEN_FILES: u64 = 1024;

/// Resource limits set on an exec program in the child, between `fork` and `exec`
/// (`setrlimit`), so they hold from its first instruction and for everything it
/// starts. Besides these, core dumps are always off (`RLIMIT_CORE` 0): a core holds
/// the records the program was processing and can fill the worker's disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExecLimits {
    /// Largest address space in bytes (`RLIMIT_AS`); `None` keeps the worker's.
    pub address_space: Option<u64>,
    /// Most open files (`RLIMIT_NOFILE`, soft and hard), never above the worker's
    /// own hard limit.
    pub open_files: u64,
}

impl Default for ExecLimits {
    /// No address-space limit, [`MAX_OPEN_FILES`] open files.
    fn default() -> Self {
        Self {
            address_space: None,
            open_files: MAX_OPEN_FILES,
        }
    }
}

impl ExecLimits {
    /// The limits of a PE declaring `resources`: its `memory_mb` as the address
    /// space. Address space is what a process can map, not what it uses, so it is an
    /// upper bound on its memory (a program reserving much more than it touches
    /// needs a larger `memory_mb`). A PE with GPUs gets no address-space limit: GPU
    /// runtimes reserve far more address space than the host memory they use (CUDA
    /// maps tens of GiB at start), and would fail to start under one.
    pub fn for_resources(resources: &Resources) -> Self {
        let address_space = match resources.gpu {
            Some(_) => None,
            None => Some(resources.memory_mb.saturating_mul(1 << 20)),
        };
        Self {
            address_space,
            ..Self::default()
        }
    }

    /// Applies the limits to the calling process. Runs in the forked child before
    /// `exec`, so it only makes system calls (no allocation, no locks).
    fn apply(self) -> std::io::Result<()> {
        set_limit(libc::RLIMIT_CORE, 0)?;
        set_limit(libc::RLIMIT_NOFILE, self.open_files)?;
        if let Some(bytes) = self.address_space {
            set_limit(libc::RLIMIT_AS, bytes)?;
        }
        Ok(())
    }
}

/// The type `getrlimit` takes for a resource (it differs between C libraries).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
type Resource = libc::__rlimit_resource_t;
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
type Resource = libc::c_int;

/// Sets soft and hard limit of `resource` to `value`, or to the current hard limit
/// if that is lower (raising it needs privileges the worker should not need).
fn set_limit(resource: Resource, value: u64) -> std::io::Result<()> {
    let mut current = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `current` is a valid, writable rlimit.
    if unsafe { libc::getrlimit(resource, &mut current) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let value = (value as libc::rlim_t).min(current.rlim_max);
    let limit = libc::rlimit {
        rlim_cur: value,
        rlim_max: value,
    };
    // SAFETY: `limit` is a valid rlimit.
    if unsafe { libc::setrlimit(resource, &limit) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// A program run as a child process of the worker (`kind: exec`), hardened:
///
/// - **Environment**: only the spec's `env`, `WEIR_PE_ID` and, unless the spec sets
///   one, `PATH` = [`CHILD_PATH`]; nothing of the worker's own environment
///   (credentials, tokens) is passed on. A bare program name is looked up on the
///   spec's `PATH` if it sets one, else on the worker's, before the program starts.
/// - **Process group**: the program leads a process group of its own; stopping the
///   instance, a failure and restart, or dropping it (an aborted task) kills the
///   whole group, so what it started in the background goes with it.
/// - **Limits**: [`ExecLimits`], set before the program runs.
#[derive(Clone, Debug)]
pub struct LocalLaunch {
    params: ExecParams,
    limits: ExecLimits,
}

impl LocalLaunch {
    /// Runs `params.command` with the default [`ExecLimits`].
    pub fn new(params: ExecParams) -> Self {
        Self {
            params,
            limits: ExecLimits::default(),
        }
    }

    /// The same, with `limits` instead.
    pub fn with_limits(self, limits: ExecLimits) -> Self {
        Self { limits, ..self }
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
        // Looked up here, not by `exec` in the child: the child's environment has no
        // `PATH` of the worker's to search.
        let search = match params.env.get("PATH") {
            Some(path) => Some(OsString::from(path)),
            None => std::env::var_os("PATH"),
        };
        let path = resolve(program, search.as_deref()).map_err(spawn_error)?;
        let limits = self.limits;
        let mut command = Command::new(&path);
        command
            .arg0(program)
            .args(args)
            .env_clear()
            .env("PATH", CHILD_PATH)
            .envs(&params.env)
            .env(PE_ID_ENV, pe_id)
            .process_group(0)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        // SAFETY: the closure runs in the forked child and only makes system calls
        // (getrlimit/setrlimit), which are async-signal-safe.
        unsafe {
            command.pre_exec(move || limits.apply());
        }
        let mut child = command.spawn().map_err(spawn_error)?;
        let (Some(stdin), Some(stdout), Some(stderr)) =
            (child.stdin.take(), child.stdout.take(), child.stderr.take())
        else {
            // Cannot happen with all three piped; reported rather than unwrapped.
            return Err(spawn_error(std::io::Error::other(
                "a standard stream was not piped",
            )));
        };
        // With `process_group(0)` the group id is the child's pid.
        let group = child.id().and_then(|pid| libc::pid_t::try_from(pid).ok());
        tracing::debug!(pe = %pe_id, pid = ?child.id(), command = ?params.command, "exec PE started");
        Ok(Started {
            stdin: Box::pin(stdin),
            stdout: Box::pin(stdout),
            stderr: Box::pin(stderr),
            instance: Box::new(LocalInstance { child, group }),
        })
    }
}

/// The file `program` names: itself when it contains a `/` (relative to the
/// worker's working directory), else the first executable file of that name in the
/// directories of `search` (a `PATH` value).
fn resolve(program: &str, search: Option<&OsStr>) -> std::io::Result<PathBuf> {
    if program.contains('/') {
        return Ok(PathBuf::from(program));
    }
    if program.is_empty() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::NotFound,
            "the program name is empty",
        ));
    }
    let found = search
        .into_iter()
        .flat_map(std::env::split_paths)
        .find_map(|dir| {
            let candidate = dir.join(program);
            let meta = std::fs::metadata(&candidate).ok()?;
            (meta.is_file() && meta.permissions().mode() & 0o111 != 0).then_some(candidate)
        });
    found.ok_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::NotFound,
            format!("`{program}` is not an executable file on the PATH"),
        )
    })
}

/// A child process leading its own process group. The group is killed when the
/// instance is stopped or dropped, and the child is killed if dropped.
#[derive(Debug)]
struct LocalInstance {
    child: Child,
    /// The process group, until it has been killed.
    group: Option<libc::pid_t>,
}

impl LocalInstance {
    /// Sends SIGKILL to every process left in the group (the program's background
    /// processes, and the program itself if still there). Once is enough: a killed
    /// process starts nothing more.
    ///
    /// A group id is not reused while any process is in the group, so this reaches
    /// only the program's own processes; the one window is a group already empty
    /// whose number is taken by a new group between the program's exit and this call,
    /// which needs the whole pid space to wrap around in between.
    fn kill_group(&mut self) {
        if let Some(group) = self.group.take() {
            // SAFETY: kill has no memory-safety preconditions. ESRCH (nobody left in
            // the group) is the usual answer and is not an error here.
            unsafe {
                libc::kill(-group, libc::SIGKILL);
            }
        }
    }
}

impl Drop for LocalInstance {
    /// An instance dropped without [`Instance::stop`] (its task was aborted, or a
    /// batch future dropped): its group goes now. The child itself is then killed
    /// and reaped by tokio (`kill_on_drop`).
    fn drop(&mut self) {
        self.kill_group();
    }
}

impl Instance for LocalInstance {
    fn stop(mut self: Box<Self>, grace: Duration) -> BoxFuture<'static, String> {
        Box::pin(async move {
            // No grace means kill now: even a zero timeout would let the program run
            // until the next timer tick, enough to exit on its own and hide the kill.
            let exited = if grace.is_zero() {
                None
            } else {
                tokio::time::timeout(grace, self.child.wait()).await.ok()
            };
            let ended = match exited {
                Some(Ok(status)) => status.to_string(),
                Some(Err(e)) => format!("exit status unknown: {e}"),
                None => {
                    // The group first, while the unreaped child still holds its id.
                    self.kill_group();
                    match self.child.kill().await {
                        Ok(()) => "killed by the worker".to_string(),
                        Err(e) => format!("could not be killed: {e}"),
                    }
                }
            };
            // A program that exited may have left processes behind in its group.
            self.kill_group();
            ended
        })
    }
}
