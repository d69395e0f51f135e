//! Spacing snapshot bytes sent to a rate, so a transfer takes the CPU (copies,
//! checksums, the socket) a little at a time rather than all at once on the threads
//! the PEs run on: replica pushes ([`super::replicate`]) per stream; pre-copy pieces
//! served ([`super::serve`]) over the whole process; and the reads of stored pieces for
//! a pre-copy, here or for another worker ([`super::SnapshotStore::get_paced`]).

use std::sync::Mutex;
use std::time::Duration;
use tokio::time::Instant;

/// Gives each piece of bytes sent its slot at a rate: the first at once, each next one
/// after the slots already given, so several streams sharing one take turns.
#[derive(Debug)]
pub struct Pacer {
    bytes_per_s: f64,
    /// When the next slot starts (`None`: no slot given yet).
    next: Mutex<Option<Instant>>,
}

impl Pacer {
    /// A pacer of `bytes_per_s` (above 0).
    pub const fn new(bytes_per_s: f64) -> Self {
        Self {
            bytes_per_s,
            next: Mutex::new(None),
        }
    }

    /// Waits for the slot of `bytes`. A slot is given when asked for, so a reader that
    /// is slower than the rate reserves nothing ahead (and gets no burst after).
    pub async fn turn(&self, bytes: usize) {
        tokio::time::sleep_until(self.give(bytes)).await;
    }

    /// [`Pacer::turn`] for a blocking thread (a read of a stored piece).
    pub fn turn_blocking(&self, bytes: usize) {
        let wait = self.give(bytes).saturating_duration_since(Instant::now());
        if !wait.is_zero() {
            std::thread::sleep(wait);
        }
    }

    /// Gives `bytes` the next slot; when it starts.
    fn give(&self, bytes: usize) -> Instant {
        let mut next = self.next.lock().unwrap_or_else(|p| p.into_inner());
        let (at, after) = slot(*next, Instant::now(), bytes, self.bytes_per_s);
        *next = Some(after);
        at
    }
}

/// The slot of `bytes` given at `now` after `next`: when it starts, and when the
/// following one may.
fn slot(next: Option<Instant>, now: Instant, bytes: usize, rate: f64) -> (Instant, Instant) {
    let at = next.map_or(now, |n| n.max(now));
    (at, at + Duration::from_secs_f64(bytes as f64 / rate))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn bytes_go_at_the_rate_the_first_at_once_and_streams_take_turns() {
        let p = Pacer::new(1e6);
        let t0 = Instant::now();
        p.turn(500_000).await;
        assert_eq!(t0.elapsed(), Duration::ZERO, "the first at once");
        p.turn(1_000_000).await;
        assert_eq!(t0.elapsed(), Duration::from_millis(500));
        // Two streams at once: the second waits for the first's slot too.
        let (a, b) = tokio::join!(
            async {
                p.turn(1_000_000).await;
                t0.elapsed()
            },
            async {
                p.turn(1_000_000).await;
                t0.elapsed()
            }
        );
        assert_eq!(
            (a, b),
            (Duration::from_millis(1_500), Duration::from_millis(2_500))
        );
        // Idle for a while: no burst owed, the next goes when asked.
        tokio::time::sleep(Duration::from_secs(10)).await;
        let idle = Instant::now();
        p.turn(1_000_000).await;
        assert_eq!(idle.elapsed(), Duration::ZERO);
    }
}
