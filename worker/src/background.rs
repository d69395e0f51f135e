//! Work the stream does not wait for, run on threads of their own at a lower CPU
//! priority, so that it takes the cores only when the PEs do not need them.
//!
//! The case it exists for: a window drained at an upgrade's switch has forwarded the
//! barrier and stored its hand-off envelope, and nothing waits on its whole snapshot at
//! that barrier except checkpoint `K`'s completion (recovery and rollback need it).
//! Encoded at the normal priority, two 50 MB snapshots took both cores of the dev box
//! for ~350 ms exactly while the successors were taking over and working through the
//! records queued at the switch (BENCHMARKS.md, issue 22).
//!
//! The priority is a nice value of [`NICE`], not the lowest: on a machine the stream
//! keeps busy, background work must still finish well within the upgrade's checkpoint
//! timeout (30 s). A CFS thread at nice 10 weighs 110 against 1024 for one at nice 0,
//! about a tenth of a core beside one busy PE thread. Jobs run one at a time, in order,
//! on one thread per [`Lane`]: replicas received from other workers have a thread of
//! their own, so they do not queue behind a drained window's encode (writing them on
//! the one thread delayed the switch checkpoint's completion by seconds:
//! BENCHMARKS.md, issue 22), and so have pieces read for other workers' pre-copies
//! ([`Lane::Serve`]) and drained pieces written at a pace ([`Lane::Writes`]). Network
//! transfers nothing on the stream waits for (a successor's pre-copy fetch of a piece
//! of 1 MiB or more) run on a tokio runtime of their own at the same nice value
//! ([`transfer`]). After each job the thread hands what it freed back to the system
//! ([`crate::memory::release_freed`]), so that a stream thread does not. Where a
//! thread cannot be made, the job runs on the blocking pool as before (and a transfer
//! on its caller's runtime): slower for the stream, never lost. On systems without
//! per-thread nice values the threads keep the normal priority.

use std::sync::mpsc;
use std::sync::OnceLock;

/// The nice value of the background threads.
pub const NICE: i32 = 10;

/// Who waits on a piece of blocking work, and so where it runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Priority {
    /// The stream (a PE's barrier, a restore records wait on): a blocking thread at
    /// the normal priority.
    Stream,
    /// Nothing the stream waits on, only an upgrade's or a checkpoint's progress: the
    /// background thread. Two cases:
    /// - a drained window's whole piece: writing 333 MB copies and checksums every
    ///   byte, and the sink of the 1 GB bench stalled 110-425 ms as each was written
    ///   and pushed after an upgrade's switch (BENCHMARKS.md, 2026-12-06);
    /// - a successor's pre-copy, made while its predecessors still carry the stream:
    ///   three successors each loading 0.5-1 GB at the normal priority left the
    ///   stream's threads 40% of a core each on the 2-core box (gaps of 210-275 ms
    ///   at the sink in the middle of the pre-copy).
    Background,
    /// A replica of another worker's piece, received to be joined and written: only
    /// the checkpoint's completion waits on it. At the background priority, on a
    /// thread of its own ([`Lane::Replicas`]). Written at the normal priority, a
    /// drained window's 335 MB replica held the 1 GB bench's sink 173 ms, 2.4 s after
    /// an upgrade's switch (BENCHMARKS.md, 2026-12-06).
    Replica,
}

/// A background thread, one per kind of work.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lane {
    /// Encodes, writes and loads of this worker's own pieces.
    Work,
    /// Replicas received from other workers.
    Replicas,
    /// Pieces read for another worker's successor to pre-copy
    /// ([`crate::checkpoint::serve`]). On [`Lane::Work`] such a read queued behind
    /// this worker's own successors loading their pieces: in a 1 GB rescale the
    /// successor taking half of each predecessor's piece waited 15-17 s for its second
    /// piece while a neighbour loaded (BENCHMARKS.md, issue 22). Both are background
    /// work; neither should wait for the other.
    Serve,
    /// Drained windows' whole pieces written at a pace
    /// ([`crate::runtime::checkpoint::CheckpointEnv::save_at`]): on [`Lane::Work`]
    /// the pacing's waits (2 s per 500 MB) held up the encodes and loads queued
    /// behind them.
    Writes,
}

type Job = Box<dyn FnOnce() + Send>;

fn queue(lane: Lane) -> Option<&'static mpsc::Sender<Job>> {
    static WORK: OnceLock<Option<mpsc::Sender<Job>>> = OnceLock::new();
    static REPLICAS: OnceLock<Option<mpsc::Sender<Job>>> = OnceLock::new();
    static SERVE: OnceLock<Option<mpsc::Sender<Job>>> = OnceLock::new();
    static WRITES: OnceLock<Option<mpsc::Sender<Job>>> = OnceLock::new();
    let (cell, name) = match lane {
        Lane::Work => (&WORK, "weir-background"),
        Lane::Replicas => (&REPLICAS, "weir-replicas"),
        Lane::Serve => (&SERVE, "weir-serve"),
        Lane::Writes => (&WRITES, "weir-writes"),
    };
    cell.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<Job>();
        let spawned = std::thread::Builder::new()
            .name(name.into())
            .spawn(move || {
                lower_priority();
                for job in rx {
                    job();
                    // What the job freed (a drained window's state, a replica's
                    // bytes) goes back to the system here, not in a stream thread.
                    crate::memory::release_freed();
                }
            });
        match spawned {
            Ok(_) => Some(tx),
            Err(e) => {
                tracing::warn!(error = %e, thread = name, "no background thread: its work runs at the normal priority");
                None
            }
        }
    })
    .as_ref()
}

#[cfg(target_os = "linux")]
fn lower_priority() {
    // On Linux the nice value is a thread's own: `who = 0` is the calling thread.
    // SAFETY: setpriority takes plain integers and touches no memory of ours.
    let r = unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, NICE) };
    if r != 0 {
        tracing::warn!(error = %std::io::Error::last_os_error(), "background thread kept the normal priority");
    }
}

#[cfg(not(target_os = "linux"))]
fn lower_priority() {}

/// Runs `f` on the background thread of [`Lane::Work`] and waits for its result (a
/// panic in `f` is resumed here, as it would be inline).
pub async fn run<R: Send + 'static>(f: impl FnOnce() -> R + Send + 'static) -> R {
    run_on(Lane::Work, f).await
}

/// Runs `f` on the background thread of `lane` and waits for its result (a panic in
/// `f` is resumed here).
pub async fn run_on<R: Send + 'static>(lane: Lane, f: impl FnOnce() -> R + Send + 'static) -> R {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let job: Job = Box::new(move || {
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
        let _ = tx.send(r);
    });
    let job = match queue(lane) {
        Some(q) => q.send(job).err().map(|e| e.0),
        None => Some(job),
    };
    if let Some(job) = job {
        // The thread is gone (it cannot be, short of a panic outside a job): run the
        // job on the blocking pool.
        drop(tokio::task::spawn_blocking(job));
    }
    match rx.await {
        Ok(Ok(r)) => r,
        Ok(Err(panic)) => std::panic::resume_unwind(panic),
        // The job was dropped unrun: only if the runtime is shutting down, which drops
        // this task too.
        Err(_) => std::future::pending().await,
    }
}

/// The runtime of [`transfer`]: one worker thread at [`NICE`] (and its blocking
/// threads, also niced), or `None` where it cannot be built.
fn transfers() -> Option<&'static tokio::runtime::Runtime> {
    static RUNTIME: OnceLock<Option<tokio::runtime::Runtime>> = OnceLock::new();
    RUNTIME
        .get_or_init(|| {
            let built = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .thread_name("weir-transfers")
                .on_thread_start(lower_priority)
                .enable_all()
                .build();
            match built {
                Ok(rt) => Some(rt),
                Err(e) => {
                    tracing::warn!(error = %e, "no runtime for background transfers: they run beside the PEs");
                    None
                }
            }
        })
        .as_ref()
}

/// Runs `fut`, a network transfer made at `priority`: here when the stream waits for
/// it ([`Priority::Stream`]), else on the transfer runtime ([`transfer`]).
pub async fn transfer_at<F>(priority: Priority, fut: F) -> F::Output
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    if priority == Priority::Stream {
        fut.await
    } else {
        transfer(fut).await
    }
}

/// Runs `fut`, a network transfer nothing on the stream waits for (a successor's
/// pre-copy fetch), on a runtime of its own whose thread is at the background
/// priority, and waits for its output; dropped, the transfer is aborted. A gRPC
/// transfer decodes HTTP/2 frames and messages and copies every chunk into the piece
/// it assembles on the thread that polls it: on the async threads the PEs run on,
/// the fetches of a 1 GB rescale's pre-copy (0.5 GB each) held the stream's records
/// for their first seconds (BENCHMARKS.md, issue 22). Without that runtime it runs
/// here, as before. Timers `fut` makes are that runtime's when made inside it (in an
/// `async` block): one made by the caller stays on the caller's clock. It runs in the
/// caller's span.
pub async fn transfer<F>(fut: F) -> F::Output
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    let Some(rt) = transfers() else {
        return fut.await;
    };
    /// Aborts the transfer when the caller stops waiting for it.
    struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);
    impl<T> Drop for AbortOnDrop<T> {
        fn drop(&mut self) {
            self.0.abort();
        }
    }
    use tracing::Instrument;
    let mut task = AbortOnDrop(rt.spawn(fut.in_current_span()));
    match (&mut task.0).await {
        Ok(r) => r,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        // Cancelled: only when the runtime shuts down, which it does not before the
        // process ends.
        Err(_) => std::future::pending().await,
    }
}

/// Spawns a gRPC channel's tasks (its connection, TLS and HTTP/2 framing included) on
/// [`transfer`]'s runtime, for a channel whose traffic nothing on the stream waits for
/// (a successor's pre-copy fetches, `checkpoint::dial`). By default a channel spawns
/// them with `tokio::spawn`, on the runtime that made it: the PEs' async threads when
/// made there, though its calls run on [`transfer`]'s. Without that runtime, they are
/// spawned on the caller's.
#[derive(Clone, Copy, Debug, Default)]
pub struct TransferExecutor;

impl<F> hyper::rt::Executor<F> for TransferExecutor
where
    F: std::future::Future<Output = ()> + Send + 'static,
{
    fn execute(&self, fut: F) {
        match transfers() {
            Some(rt) => drop(rt.spawn(fut)),
            None => drop(tokio::spawn(fut)),
        }
    }
}

/// Runs blocking `f` where `priority` says: on the blocking pool, or on a background
/// thread ([`run_on`]). A panic in `f` is resumed here.
pub async fn run_at<R: Send + 'static>(
    priority: Priority,
    f: impl FnOnce() -> R + Send + 'static,
) -> R {
    match priority {
        Priority::Stream => match tokio::task::spawn_blocking(f).await {
            Ok(r) => r,
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            // Cancelled before it ran: only when the runtime shuts down, which drops
            // this task too.
            Err(_) => std::future::pending().await,
        },
        Priority::Background => run(f).await,
        Priority::Replica => run_on(Lane::Replicas, f).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn jobs_run_at_the_lower_priority_and_panics_come_back() {
        let a = run(|| 1 + 1).await;
        assert_eq!(a, 2);
        #[cfg(target_os = "linux")]
        {
            // SAFETY: getpriority takes plain integers.
            let mine = || unsafe { libc::getpriority(libc::PRIO_PROCESS, 0) };
            let before = mine();
            // Lowered to NICE (a test run already niced further stays there).
            assert_eq!(run(mine).await, NICE.max(before));
            // The caller's own thread kept its priority.
            assert_eq!(mine(), before);
        }
        let joined = tokio::spawn(run(|| panic!("boom"))).await;
        assert!(joined.unwrap_err().is_panic());
        // The thread survives a panicking job.
        assert_eq!(run(|| "still here").await, "still here");
        // Replicas have a thread of their own, as low: a job there runs while the
        // work thread is busy.
        let (hold, held) = std::sync::mpsc::channel::<()>();
        let busy = tokio::spawn(run(move || held.recv()));
        let name = || std::thread::current().name().map(String::from);
        let on = run_at(Priority::Replica, name).await;
        assert_eq!(on.as_deref(), Some("weir-replicas"));
        // So have reads served to other workers' pre-copies.
        let on = run_on(Lane::Serve, name).await;
        assert_eq!(on.as_deref(), Some("weir-serve"));
        #[cfg(target_os = "linux")]
        {
            // SAFETY: getpriority takes plain integers.
            let mine = || unsafe { libc::getpriority(libc::PRIO_PROCESS, 0) };
            assert_eq!(run_at(Priority::Replica, mine).await, NICE.max(mine()));
        }
        hold.send(()).unwrap();
        busy.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn a_transfer_channel_spawns_its_tasks_on_the_transfer_runtime() {
        use hyper::rt::Executor;
        let (tx, rx) = tokio::sync::oneshot::channel();
        TransferExecutor.execute(async move {
            let _ = tx.send(std::thread::current().name().map(String::from));
        });
        assert_eq!(rx.await.unwrap().as_deref(), Some("weir-transfers"));
    }

    #[tokio::test]
    async fn transfers_run_on_their_own_niced_runtime_and_stop_when_dropped() {
        let name = || std::thread::current().name().map(String::from);
        let on = transfer(async move { name() }).await;
        assert_eq!(on.as_deref(), Some("weir-transfers"));
        // At the stream's priority a transfer stays on its caller's thread.
        let here = name();
        assert_ne!(here.as_deref(), Some("weir-transfers"));
        assert_eq!(
            transfer_at(Priority::Stream, async move { name() }).await,
            here
        );
        for p in [Priority::Background, Priority::Replica] {
            let on = transfer_at(p, async move { name() }).await;
            assert_eq!(on.as_deref(), Some("weir-transfers"), "{p:?}");
        }
        #[cfg(target_os = "linux")]
        {
            // SAFETY: getpriority takes plain integers.
            let mine = || unsafe { libc::getpriority(libc::PRIO_PROCESS, 0) };
            let before = mine();
            assert_eq!(transfer(async move { mine() }).await, NICE.max(before));
            assert_eq!(mine(), before);
        }
        // Timers and sockets work there.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let connected = transfer(async move {
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
            tokio::net::TcpStream::connect(addr).await.is_ok()
        });
        let (connected, accepted) = tokio::join!(connected, listener.accept());
        assert!(connected && accepted.is_ok());
        // Dropped by its caller once started, the transfer is aborted: what it holds
        // is dropped (were it not, `recv` would wait until its deadline).
        let (tx, mut rx) = tokio::sync::mpsc::channel::<()>(1);
        // Boxed: dropping the box drops the future (a `pin!` would only drop a reference).
        let mut waiting = Box::pin(transfer(async move {
            let _held = tx;
            std::future::pending::<()>().await
        }));
        // Polled once (it spawns the task), then dropped.
        tokio::select! {
            biased;
            _ = &mut waiting => unreachable!("a pending future completed"),
            _ = std::future::ready(()) => {}
        }
        drop(waiting);
        let closed = tokio::time::timeout(std::time::Duration::from_secs(60), rx.recv()).await;
        assert_eq!(closed, Ok(None), "the sender was dropped with the task");
        // A panic comes back to the caller.
        let panicked = tokio::spawn(transfer(async { panic!("boom") })).await;
        assert!(panicked.unwrap_err().is_panic());
    }
}
