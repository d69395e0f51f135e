//! How this worker dials its peers for snapshots: lazily connected channels per peer
//! address and use (one, or [`FETCH_CONNECTIONS`] for the fetches the stream waits
//! for), reused across calls.
//!
//! Why reused: a fetch used to open a connection of its own (a TCP and, with security
//! on, a mutual-TLS handshake) and close it after one call. A successor catching up
//! on a predecessor on another worker fetches a round every few milliseconds; in the
//! demo beside a CPU hog (a debug build) that came to 5-12 rounds a second, fewer
//! than the predecessor shipped (BENCHMARKS.md, issue 22). A channel reconnects by
//! itself once its connection is lost, so a peer restarted at the same address is
//! reached again.
//!
//! Why channels by use: a push of a 333 MB piece, a successor's pre-copy of one and
//! the small rounds it fetches after would share one connection's flow control
//! otherwise; and the channels of what nothing on the stream waits for (a pre-copy's
//! fetches, a drained window's pushes) run their connections on
//! [`crate::background::transfer`]'s niced runtime, off the PEs' async threads, as
//! their calls are. The fetches the stream waits for take [`FETCH_CONNECTIONS`]
//! channels per peer in turn: a peer serves at most 64 calls on one connection, and a
//! successor keeps up to 9 waiting on each predecessor it catches up on.

use crate::background::{Priority, TransferExecutor};
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;
use tonic::transport::{Channel, Endpoint};
use weir_proto::v1 as pb;

/// How long connecting to a peer may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// Channels per peer for the fetches the stream waits for, taken in turn (see the
/// module's doc).
pub const FETCH_CONNECTIONS: usize = 4;

/// While a fetch the stream waits for is under way, its connection is pinged this
/// often, and dropped (the fetch failing, the next one reconnecting) when a ping is
/// not answered within [`PING_TIMEOUT`]. Why: a fresh connection to a peer cut off
/// failed within [`CONNECT_TIMEOUT`]; a reused one would wait for the fetch's own
/// limit (60 s) instead.
const PING_EVERY: Duration = Duration::from_secs(2);

/// See [`PING_EVERY`].
const PING_TIMEOUT: Duration = Duration::from_secs(5);

/// The same for every other channel, as leniently as the peer pings its callers
/// (`node.rs`): a background channel's connection runs on a niced thread, which a busy
/// machine may leave waiting for seconds, and a 0.5 GB fetch cut short for that would
/// start again from nothing; but a peer cut off must not hold every later pre-copy or
/// push to it for its whole limit.
const LENIENT_PING_EVERY: Duration = Duration::from_secs(10);

/// See [`LENIENT_PING_EVERY`].
const LENIENT_PING_TIMEOUT: Duration = Duration::from_secs(20);

/// What a channel carries, and so which one a call takes. At [`Priority::Stream`] the
/// call runs on the caller's runtime; at any other, on the transfer runtime.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Use {
    /// Replicas pushed to the peers in the ring: a checkpoint's piece at
    /// [`Priority::Stream`] (the checkpoint's completion, and so the output an
    /// exactly-once sink commits, waits for it), a drained window's whole piece at
    /// [`Priority::Background`].
    Push(Priority),
    /// Snapshots fetched: a restore or an upgrade's rounds at [`Priority::Stream`], a
    /// pre-copy at [`Priority::Background`].
    Fetch(Priority),
}

impl Use {
    fn background(self) -> bool {
        let (Use::Push(p) | Use::Fetch(p)) = self;
        p != Priority::Stream
    }
}

/// Channels by peer address and slot, each made when first asked for.
#[derive(Debug, Default)]
struct Channels(Mutex<HashMap<(String, usize), Channel>>);

impl Channels {
    fn get(
        &self,
        address: &str,
        slot: usize,
        make: impl FnOnce() -> Result<Channel, String>,
    ) -> Result<Channel, String> {
        let mut channels = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let key = (address.to_string(), slot);
        if let Some(c) = channels.get(&key) {
            return Ok(c.clone());
        }
        let c = make()?;
        channels.insert(key, c.clone());
        Ok(c)
    }

    fn retain(&self, peers: &[pb::PeerWorker]) {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|(addr, _), _| peers.iter().any(|p| p.control_address == *addr));
    }

    fn len(&self) -> usize {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
}

/// This worker's channels to its peers, dialled with its security (TLS when on).
/// `Default`: security off, no channel yet.
#[derive(Debug, Default)]
pub struct Dialer {
    security: weir_security::Security,
    pushes: Channels,
    background_pushes: Channels,
    fetches: Channels,
    /// The next slot of [`Dialer::fetches`] a fetch takes.
    turn: AtomicUsize,
    transfers: Channels,
}

impl Dialer {
    /// A dialer that dials with `security`.
    pub fn new(security: weir_security::Security) -> Self {
        Self {
            security,
            ..Self::default()
        }
    }

    /// A channel to the worker at `address` for `what`, connected on its first call.
    /// `Err`: the address cannot be dialled (says why).
    pub fn channel(&self, address: &str, what: Use) -> Result<Channel, String> {
        let (channels, slot) = match what {
            Use::Push(Priority::Stream) => (&self.pushes, 0),
            Use::Push(_) => (&self.background_pushes, 0),
            Use::Fetch(Priority::Stream) => (
                &self.fetches,
                self.turn.fetch_add(1, Ordering::Relaxed) % FETCH_CONNECTIONS,
            ),
            Use::Fetch(_) => (&self.transfers, 0),
        };
        channels.get(address, slot, || {
            let ep = endpoint(&self.security, address)?;
            let ep = match what {
                Use::Fetch(Priority::Stream) => ep
                    .http2_keep_alive_interval(PING_EVERY)
                    .keep_alive_timeout(PING_TIMEOUT),
                _ => ep
                    .http2_keep_alive_interval(LENIENT_PING_EVERY)
                    .keep_alive_timeout(LENIENT_PING_TIMEOUT),
            };
            let ep = if what.background() {
                ep.executor(TransferExecutor)
            } else {
                ep
            };
            Ok(ep.connect_lazy())
        })
    }

    fn all(&self) -> [&Channels; 4] {
        [
            &self.pushes,
            &self.background_pushes,
            &self.fetches,
            &self.transfers,
        ]
    }

    /// Drops the channels to workers not in `peers` (from heartbeat answers): a
    /// worker gone, or listening elsewhere now.
    pub fn retain(&self, peers: &[pb::PeerWorker]) {
        for c in self.all() {
            c.retain(peers);
        }
    }

    /// How many channels are held, for every use.
    pub fn channels(&self) -> usize {
        self.all().iter().map(|c| c.len()).sum()
    }
}

fn endpoint(security: &weir_security::Security, address: &str) -> Result<Endpoint, String> {
    security
        .endpoint(address, weir_security::ServerRole::Worker)
        .map(|e| {
            e.connect_timeout(CONNECT_TIMEOUT)
                .max_frame_size(super::FRAME_BYTES)
        })
        .map_err(|e| format!("bad address {address:?}: {e}"))
}
