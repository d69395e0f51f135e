//! How this worker dials its peers for snapshots: one lazily connected channel per
//! peer address and use, reused across calls.
//!
//! Why reused: a fetch used to open a connection of its own (a TCP and, with security
//! on, a mutual-TLS handshake) and close it after one call. A successor catching up
//! on a predecessor on another worker fetches a round every few milliseconds; in the
//! demo beside a CPU hog (a debug build) that came to 5-12 rounds a second, fewer
//! than the predecessor shipped (BENCHMARKS.md, issue 22). A channel reconnects by
//! itself once its connection is lost, so a peer restarted at the same address is
//! reached again.
//!
//! Why one channel per use: a push of a 333 MB piece, a successor's pre-copy of one
//! and the small rounds it fetches after would share one connection's flow control
//! otherwise; and the channels of pushes and pre-copies run their connections on
//! [`crate::background::transfer`]'s niced runtime, off the PEs' async threads, as
//! their calls are.

use crate::background::{Priority, TransferExecutor};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;
use tonic::transport::{Channel, Endpoint};
use weir_proto::v1 as pb;

/// How long connecting to a peer may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// While a fetch the stream waits for is under way, its connection is pinged this
/// often, and dropped (the fetch failing, the next one reconnecting) when a ping is
/// not answered within [`PING_TIMEOUT`]. Why: a fresh connection to a peer cut off
/// failed within [`CONNECT_TIMEOUT`]; a reused one would wait for the fetch's own
/// limit (60 s) instead. Not on a pre-copy's channel: its connection runs on a niced
/// thread, which a busy machine may leave waiting longer than that, and a 0.5 GB
/// fetch cut short for it would start again from nothing.
const PING_EVERY: Duration = Duration::from_secs(2);

/// See [`PING_EVERY`].
const PING_TIMEOUT: Duration = Duration::from_secs(5);

/// What a channel carries, and so which one a call takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Use {
    /// Replicas pushed to the peers in the ring.
    Push,
    /// Snapshots fetched at `priority` (see [`Priority`]): a restore or an upgrade's
    /// rounds at [`Priority::Stream`], on the caller's runtime; a pre-copy at any
    /// other, on the transfer runtime.
    Fetch(Priority),
}

/// One channel per peer address, made when first asked for.
#[derive(Debug, Default)]
struct Channels(Mutex<HashMap<String, Channel>>);

impl Channels {
    fn get(
        &self,
        address: &str,
        make: impl FnOnce() -> Result<Channel, String>,
    ) -> Result<Channel, String> {
        let mut channels = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = channels.get(address) {
            return Ok(c.clone());
        }
        let c = make()?;
        channels.insert(address.to_string(), c.clone());
        Ok(c)
    }

    fn retain(&self, peers: &[pb::PeerWorker]) {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|addr, _| peers.iter().any(|p| p.control_address == *addr));
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
    fetches: Channels,
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

    /// How this worker dials its peers.
    pub fn security(&self) -> &weir_security::Security {
        &self.security
    }

    /// The channel to the worker at `address` for `what`, connected on its first
    /// call. `Err`: the address cannot be dialled (says why).
    pub fn channel(&self, address: &str, what: Use) -> Result<Channel, String> {
        let channels = match what {
            Use::Push => &self.pushes,
            Use::Fetch(Priority::Stream) => &self.fetches,
            Use::Fetch(_) => &self.transfers,
        };
        channels.get(address, || {
            let ep = endpoint(&self.security, address)?;
            let ep = match what {
                Use::Fetch(Priority::Stream) => ep
                    .http2_keep_alive_interval(PING_EVERY)
                    .keep_alive_timeout(PING_TIMEOUT),
                Use::Push | Use::Fetch(_) => ep.executor(TransferExecutor),
            };
            Ok(ep.connect_lazy())
        })
    }

    /// Drops the channels to workers not in `peers` (from heartbeat answers): a
    /// worker gone, or listening elsewhere now.
    pub fn retain(&self, peers: &[pb::PeerWorker]) {
        for c in [&self.pushes, &self.fetches, &self.transfers] {
            c.retain(peers);
        }
    }

    /// How many channels are held, for every use.
    pub fn channels(&self) -> usize {
        [&self.pushes, &self.fetches, &self.transfers]
            .iter()
            .map(|c| c.len())
            .sum()
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
