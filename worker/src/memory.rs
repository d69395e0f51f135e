//! How a worker process asks the kernel for memory: without transparent huge pages.
//!
//! mimalloc (the worker's allocator, `main.rs`) advises the kernel to back its arenas
//! with 2 MiB transparent huge pages. Where the system's setting is `madvise` (the
//! common default), every first touch of a fresh 2 MiB region then zeroes the whole
//! region in the faulting thread, and may compact memory first to find one. A PE
//! thread that grows a buffer waits through that. Large state makes it frequent: an
//! upgrade's pre-copy and rounds allocate and free hundreds of megabytes while the
//! stream runs, and in the profile of a 10 MB upgrade on the dev box half the samples
//! of the thread loading the pre-copy were `clear_page_erms` under
//! `do_huge_pmd_anonymous_page`. The upgrade bench, eight runs each, with huge pages
//! and without (BENCHMARKS.md, issue 22, 2026-12-06 afternoon): at 10 MB the longest
//! stall fell from 16-68 ms to 14-23 ms and p99 during the upgrade from 9-32 ms to
//! 4-14 ms; at 100 MB steady p99 fell from 7-11 ms to 4-6 ms and the upgrades took
//! 2.0-2.4 s instead of 2.7-3.7 s.
//!
//! The cost is more TLB misses on a very large state's random lookups. At 1 GB the
//! bench's stalls varied as much from run to run as between the two settings (41-124
//! ms without in three runs, 62-154 ms with in two). Redis's latency guide gives the same
//! advice. `weir-worker --huge-pages` keeps them.

// mimalloc's own call (in the static library the `mimalloc` crate links): not in its
// Rust API without the `extended` feature and the crate that brings.
extern crate mimalloc as _;
extern "C" {
    fn mi_collect(force: bool);
}

/// Returns the memory freed so far to the system, on the calling thread. mimalloc
/// hands freed memory back to the system a second after it was freed, and does so in
/// whichever thread next allocates: after an upgrade's switch, a stream thread spent
/// about 35 ms of a 69 ms gap at the sink in `madvise`, giving back the 333 MB a
/// drained window had dropped on the background thread (a profile of the 1 GB bench,
/// 2026-12-06). The background threads call this after each job
/// ([`crate::background`]), so that such memory goes back at their priority. Cheap
/// when nothing is pending.
pub fn release_freed() {
    // SAFETY: mi_collect takes a plain bool and may be called from any thread.
    unsafe { mi_collect(true) }
}

/// Turns transparent huge pages off for this whole process (every thread, mappings
/// made before included: the kernel checks the process's flag at each fault) and
/// reports whether they are off. Call it once, early. A no-op where the call does not
/// exist (other systems, or a kernel without `PR_SET_THP_DISABLE`): the process runs
/// on, with what the system gives it.
pub fn no_transparent_huge_pages() -> bool {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: prctl with plain integer arguments touches no memory of ours.
        let r = unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) };
        if r != 0 {
            tracing::warn!(error = %std::io::Error::last_os_error(), "transparent huge pages stay as the system sets them");
        }
        // SAFETY: as above.
        let got = unsafe { libc::prctl(libc::PR_GET_THP_DISABLE, 0, 0, 0, 0) };
        got == 1
    }
    #[cfg(not(target_os = "linux"))]
    {
        false
    }
}

#[cfg(test)]
mod tests {
    #[cfg(target_os = "linux")]
    #[test]
    fn turns_them_off_for_the_process() {
        assert!(super::no_transparent_huge_pages());
        // SAFETY: prctl with plain integer arguments.
        assert_eq!(
            unsafe { libc::prctl(libc::PR_GET_THP_DISABLE, 0, 0, 0, 0) },
            1
        );
    }
}
