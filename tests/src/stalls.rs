//! A watchdog for benches: reports when this process's async threads all stop running
//! (a timer task's ticks come late), with what each thread of the process was doing
//! then, as the kernel sees it: its state (`R` running, `S` sleeping, `D` waiting on
//! the disk), its wait channel and its system call. Linux only; elsewhere it reports
//! the lateness alone.
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

/// Starts the watchdog on `runtime` (its ticks) and a thread of its own (the watch).
pub fn watch(runtime: &tokio::runtime::Handle) {
    let beat = Arc::new(AtomicI64::new(unix_ms()));
    let b = beat.clone();
    runtime.spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_millis(10)).await;
            b.store(unix_ms(), Ordering::Relaxed);
        }
    });
    let spawned = std::thread::Builder::new()
        .name("stall-watch".into())
        .spawn(move || {
            let mut reported = 0;
            loop {
                std::thread::sleep(Duration::from_millis(50));
                let last = beat.load(Ordering::Relaxed);
                let late = unix_ms() - last;
                if late > LATE_MS && last != reported {
                    reported = last;
                    eprintln!(
                        "stall-watch: async threads {late} ms late at {}.{:03}; threads: {}",
                        last / 1000,
                        last % 1000,
                        threads()
                    );
                }
            }
        });
    if let Err(e) = spawned {
        eprintln!("stall-watch: not started: {e}");
    }
}

/// Each thread of this process other than sleeping idle ones: `name state wchan
/// syscall`.
fn threads() -> String {
    let Ok(dir) = std::fs::read_dir("/proc/self/task") else {
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
