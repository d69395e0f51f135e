//! A watchdog for benches: reports when this process's async threads all stop running
//! (a timer task's ticks come late), with what each thread of the process was doing
//! then, as the kernel sees it: its state (`R` running, `S` sleeping, `D` waiting on
//! the disk), its wait channel and its system call. Linux only; elsewhere it reports
//! the lateness alone. It also reports an async thread that has not parked for a
//! while (it ran tasks back to back: one long poll, or a PE that always has input):
//! what waits behind it on that thread is late, while the ticks, run by the other
//! threads, may stay on time.
//!
//! Why: in the 1 GB upgrade bench the master sometimes marked both in-process workers
//! lost at once (no heartbeat for 1.5 s), just as two window PEs stored whole snapshots
//! of 130 MB; the log went quiet meanwhile. Whether the async threads were blocked,
//! and on what, is what this tells.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::arrivals::unix_ms;

/// How late the ticks may come before a stall is reported.
const LATE_MS: i64 = 250;

/// How long an async thread may run without parking before it is reported: the
/// tasks queued behind on that thread wait (tokio steals them only when the other
/// threads run out of work); in the 1 GB bench, heartbeats did.
const BUSY_MS: i64 = 700;

/// Starts the watchdog on `runtime` (its ticks) and a thread of its own (the watch).
/// With `WEIR_BENCH_GDB=1` it also has gdb print every thread's stack (at most three
/// times a run) when an async thread has not parked for [`BUSY_MS`]: what it runs.
pub fn watch(runtime: &tokio::runtime::Handle) {
    let beat = Arc::new(AtomicI64::new(unix_ms()));
    let b = beat.clone();
    runtime.spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_millis(10)).await;
            b.store(unix_ms(), Ordering::Relaxed);
        }
    });
    let metrics = runtime.metrics();
    let gdb = std::env::var("WEIR_BENCH_GDB").is_ok_and(|v| v == "1");
    let spawned = std::thread::Builder::new()
        .name("stall-watch".into())
        .spawn(move || {
            let mut reported = 0;
            let workers = metrics.num_workers();
            // Per async thread: its park count, since when it has not changed, and
            // whether that stretch was reported.
            let mut parks: Vec<(u64, i64, bool)> = (0..workers)
                .map(|i| (metrics.worker_park_count(i), unix_ms(), false))
                .collect();
            let mut dumps = 0;
            loop {
                std::thread::sleep(Duration::from_millis(50));
                let now = unix_ms();
                let last = beat.load(Ordering::Relaxed);
                let late = now - last;
                if late > LATE_MS && last != reported {
                    reported = last;
                    eprintln!(
                        "stall-watch: async threads {late} ms late at {}.{:03}; threads: {}",
                        last / 1000,
                        last % 1000,
                        threads(None)
                    );
                }
                for (i, (count, since, told)) in parks.iter_mut().enumerate() {
                    let c = metrics.worker_park_count(i);
                    if c != *count {
                        *count = c;
                        *since = now;
                        *told = false;
                    } else if now - *since > BUSY_MS && !*told {
                        *told = true;
                        eprintln!(
                            "stall-watch: async thread {i} has not parked for {} ms (since {}.{:03}); threads: {}",
                            now - *since,
                            *since / 1000,
                            *since % 1000,
                            threads(None)
                        );
                        if gdb && dumps < 3 {
                            dumps += 1;
                            eprintln!("stall-watch: stacks:\n{}", stacks(None));
                        }
                    }
                }
            }
        });
    if let Err(e) = spawned {
        eprintln!("stall-watch: not started: {e}");
    }
}

/// Watches a sink's arrivals while the workers run as processes (`pids`), where
/// [`watch`] cannot see their threads: when none has arrived for [`QUIET_MS`], it
/// reports what each worker's threads are doing ([`threads`]) and, with
/// `WEIR_BENCH_GDB=1`, their stacks (at most twice a run; gdb stops the process for
/// seconds meanwhile). Why: through the real processes, the 1 GB upgrade bench saw
/// the sink get nothing for 13 s while one worker answered no control call.
/// It stops when the returned guard is dropped.
pub fn watch_arrivals(arrivals: crate::arrivals::Arrivals, pids: Vec<(String, u32)>) -> Watching {
    let gdb = std::env::var("WEIR_BENCH_GDB").is_ok_and(|v| v == "1");
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stopped = stop.clone();
    let spawned = std::thread::Builder::new()
        .name("quiet-watch".into())
        .spawn(move || {
            let (mut dumps, mut reported_at) = (0, 0);
            while !stopped.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(100));
                let last = {
                    let a = arrivals.lock().unwrap_or_else(|p| p.into_inner());
                    a.last().map(|(t, _)| *t)
                };
                let Some(last) = last else { continue };
                let quiet = unix_ms() - last;
                if quiet < QUIET_MS || reported_at == last {
                    continue;
                }
                reported_at = last;
                for (name, pid) in &pids {
                    eprintln!(
                        "quiet-watch: nothing at the sink for {quiet} ms; {name}'s threads: {}",
                        threads(Some(*pid))
                    );
                }
                if gdb && dumps < 2 {
                    dumps += 1;
                    for (name, pid) in &pids {
                        eprintln!("quiet-watch: {name}'s stacks:\n{}", stacks(Some(*pid)));
                    }
                }
            }
        });
    if let Err(e) = spawned {
        eprintln!("quiet-watch: not started: {e}");
    }
    Watching(stop)
}

/// Stops [`watch_arrivals`] when dropped.
pub struct Watching(Arc<std::sync::atomic::AtomicBool>);

impl Drop for Watching {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// How long a sink may get nothing before [`watch_arrivals`] reports.
const QUIET_MS: i64 = 1500;

/// Every thread's stack, as gdb prints it, of process `pid` (`None`: this one),
/// attached for a moment: the process stops meanwhile.
fn stacks(pid: Option<u32>) -> String {
    let pid = pid.unwrap_or_else(std::process::id);
    let out = std::process::Command::new("gdb")
        .args(["-p", &pid.to_string(), "-batch", "-nx"])
        .args(["-ex", "set pagination off", "-ex", "thread apply all bt 30"])
        .output();
    match out {
        Ok(o) => String::from_utf8_lossy(&o.stdout).into_owned(),
        Err(e) => format!("(no gdb: {e})"),
    }
}

/// Each thread of process `pid` (`None`: this one), `name state wchan syscall`,
/// except sleeping idle ones (async threads are always listed, idle or not).
fn threads(pid: Option<u32>) -> String {
    let task = pid.map_or_else(
        || "/proc/self/task".to_string(),
        |p| format!("/proc/{p}/task"),
    );
    let Ok(dir) = std::fs::read_dir(task) else {
        return "(no /proc)".into();
    };
    let mut out = Vec::new();
    for t in dir.flatten() {
        let p = t.path();
        let read = |f: &str| {
            std::fs::read_to_string(p.join(f))
                .unwrap_or_default()
                .trim()
                .to_string()
        };
        let name = read("comm");
        // The state follows the name in parentheses.
        let stat = read("stat");
        let state = stat
            .rsplit_once(") ")
            .and_then(|(_, rest)| rest.split(' ').next())
            .unwrap_or("?")
            .to_string();
        let wchan = read("wchan");
        let syscall = read("syscall");
        let syscall = syscall.split(' ').next().unwrap_or("");
        let idle = state == "S"
            && (wchan.contains("futex") || wchan.contains("ep_poll") || wchan == "0")
            && !name.starts_with("tokio");
        if !idle {
            out.push(format!("{name}:{state}:{wchan}:{syscall}"));
        }
    }
    out.sort();
    out.join(" ")
}
