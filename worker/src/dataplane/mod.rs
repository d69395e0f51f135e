//! The data plane: channels between PEs.
//!
//! A channel joins one producer PE to one consumer PE. Every channel ends in an
//! [`InputEndpoint`] on the consumer's worker: a bounded queue of [`Msg`]s that the
//! consumer PE reads. How messages reach it depends on where the producer runs:
//! - same worker ([`sender::LocalSender`]): the producer puts batches straight into
//!   the queue; a batch is a shared `Bytes` buffer, so nothing is copied or
//!   serialised, and the queue's bound is the backpressure;
//! - another worker ([`outbound::RemoteSender`] -> [`inbound`]): one TCP connection per
//!   channel carrying length-delimited frames (`weir_common::frame`). The producer
//!   keeps every frame the consumer has not acknowledged as processed in a replay
//!   buffer of at most `window` frames (the credit the consumer granted when the
//!   connection opened; each acknowledgement returns credit). When the connection
//!   breaks, the producer reconnects, the consumer says how far it processed, and the
//!   producer resends the rest; the consumer drops what it had already queued. Nothing
//!   is lost and nothing is delivered twice, and no queue on either side grows beyond
//!   the window.
//!
//! Sequence numbers start at 1 on every channel; 0 means "nothing yet".
//!
//! With security on, every link is mutual TLS ([`Dialer`], [`Admission`]): the
//! consumer's worker accepts only producers presenting a worker certificate of the
//! cluster CA, and for each channel only the worker the master placed its producer on
//! ([`InputEndpoint::producer`]); the producer checks it reached a worker.

pub mod inbound;
pub mod outbound;
pub mod reader;
pub mod sender;

#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::{mpsc, watch, Notify};
use weir_common::record::Batch;

/// Frames a producer may have unacknowledged on one channel, and the size of every
/// input queue. Batches hold at most 1,024 records, so this bounds the memory of one
/// channel to a few MB.
pub const WINDOW: usize = 16;

/// How producers dial consumers' data ports: plain TCP, or TLS as this worker.
#[derive(Clone, Default)]
pub struct Dialer(
    Option<(
        tokio_rustls::TlsConnector,
        tokio_rustls::rustls::pki_types::ServerName<'static>,
    )>,
);

impl Dialer {
    /// The dialer `security` asks for.
    pub fn new(security: &weir_security::Security) -> Result<Self, weir_security::TlsError> {
        Ok(Self(security.data_connector()?))
    }

    pub(crate) fn tls(
        &self,
    ) -> Option<&(
        tokio_rustls::TlsConnector,
        tokio_rustls::rustls::pki_types::ServerName<'static>,
    )> {
        self.0.as_ref()
    }
}

/// How the data port admits producers: anyone over plain TCP, or workers of the
/// cluster over mutual TLS.
#[derive(Clone, Default)]
pub struct Admission(Option<tokio_rustls::TlsAcceptor>);

impl Admission {
    /// The admission `security` asks for.
    pub fn new(security: &weir_security::Security) -> Result<Self, weir_security::TlsError> {
        Ok(Self(security.data_acceptor()?))
    }
}

/// Identifies a channel by its two PEs.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ChannelKey {
    /// Producing PE id.
    pub from: String,
    /// Consuming PE id.
    pub to: String,
}

impl ChannelKey {
    /// The channel from `from` to `to`.
    pub fn new(from: impl Into<String>, to: impl Into<String>) -> Self {
        Self {
            from: from.into(),
            to: to.into(),
        }
    }
}

impl fmt::Display for ChannelKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} -> {}", self.from, self.to)
    }
}

/// What travels on a channel, in order.
#[derive(Clone, Debug, PartialEq)]
pub enum Msg {
    /// A batch of records.
    Data {
        /// Position on the channel.
        seq: u64,
        /// The records.
        batch: Batch,
    },
    /// A barrier (checkpoint or upgrade switch).
    Barrier {
        /// Position on the channel.
        seq: u64,
        /// Which barrier.
        id: u64,
    },
    /// The producer is done: nothing follows.
    End {
        /// Position on the channel.
        seq: u64,
    },
}

impl Msg {
    /// Position on the channel.
    pub fn seq(&self) -> u64 {
        match self {
            Msg::Data { seq, .. } | Msg::Barrier { seq, .. } | Msg::End { seq } => *seq,
        }
    }
}

/// A link broke the protocol or the connection failed; the link is reset.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    /// Socket error.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    /// Bytes that are not a frame.
    #[error("bad frame: {0}")]
    Frame(#[from] weir_common::frame::FrameError),
    /// The peer closed the connection in the middle of a frame.
    #[error("peer disconnected mid-frame ({0} bytes pending)")]
    Truncated(usize),
    /// The peer closed the connection.
    #[error("peer closed the connection")]
    Closed,
    /// A frame that is valid on its own but wrong here.
    #[error("protocol: {0}")]
    Protocol(String),
    /// The peer took too long.
    #[error("timed out: {0}")]
    Timeout(&'static str),
}

/// Counters of one channel end.
#[derive(Debug, Default)]
pub struct ChannelStats {
    /// Records sent or received.
    pub records: AtomicU64,
    /// Bytes of records sent or received.
    pub bytes: AtomicU64,
    /// Highest sequence sent or received.
    pub last_seq: AtomicU64,
    /// Whether a TCP connection is up (always true in memory).
    pub connected: AtomicBool,
    /// Connections made (more than one: the link was re-established).
    pub connects: AtomicU64,
    /// Producer side: connection attempts that failed (peer down, refused, or its
    /// TLS handshake or identity check failed).
    pub failures: AtomicU64,
}

impl ChannelStats {
    pub(crate) fn count(&self, seq: u64, batch: Option<&Batch>) {
        if let Some(b) = batch {
            self.records.fetch_add(b.len() as u64, Ordering::Relaxed);
            self.bytes
                .fetch_add(b.encoded_len() as u64, Ordering::Relaxed);
        }
        self.last_seq.fetch_max(seq, Ordering::Relaxed);
    }
}

/// One input of a PE: its endpoint and the queue it reads. Here, below the runtime, so
/// that the PE loop and the upgrade actions that add inputs share it without importing
/// each other.
pub type Input = (Arc<InputEndpoint>, mpsc::Receiver<Msg>);

/// The consumer end of a channel: the queue its PE reads, and how far it got.
#[derive(Debug)]
pub struct InputEndpoint {
    /// The channel.
    pub key: ChannelKey,
    /// The worker the master placed the channel's producer on: with mutual TLS, the
    /// only worker certificate whose link the data port takes for this channel. `None`
    /// when not named, which only plain TCP (no identities) accepts.
    pub producer: Option<String>,
    tx: mpsc::Sender<Msg>,
    /// Highest sequence put into the queue; `None` until the first message, so a
    /// consumer that restarted accepts a producer's stream where it stands.
    accepted: Mutex<Option<u64>>,
    processed: watch::Sender<u64>,
    /// Bumped by each new connection, so a superseded one stops delivering.
    generation: AtomicU64,
    /// Counters.
    pub stats: ChannelStats,
}

impl InputEndpoint {
    fn new(key: ChannelKey, producer: Option<String>) -> (Arc<Self>, mpsc::Receiver<Msg>) {
        let (tx, rx) = mpsc::channel(WINDOW);
        let ep = Arc::new(Self {
            key,
            producer,
            tx,
            accepted: Mutex::new(None),
            processed: watch::channel(0).0,
            generation: AtomicU64::new(0),
            stats: ChannelStats::default(),
        });
        (ep, rx)
    }

    /// Puts a message from a producer on this worker into the queue, waiting for room.
    /// Fails when the consumer is gone.
    pub(crate) async fn put_local(&self, msg: Msg) -> Result<(), Msg> {
        let seq = msg.seq();
        let batch = match &msg {
            Msg::Data { batch, .. } => Some(batch.clone()),
            _ => None,
        };
        self.tx.send(msg).await.map_err(|e| e.0)?;
        self.stats.count(seq, batch.as_ref());
        Ok(())
    }

    /// Offers a message that arrived on connection `generation`. `Ok(false)`: a replay
    /// of something already queued, dropped. Errors are protocol violations (a gap, a
    /// producer beyond its credit, a superseded connection); the link is reset.
    pub(crate) fn offer(&self, generation: u64, msg: Msg) -> Result<bool, LinkError> {
        let mut accepted = self.accepted.lock().unwrap_or_else(|p| p.into_inner());
        if self.generation.load(Ordering::Acquire) != generation {
            return Err(LinkError::Protocol(
                "superseded by a newer connection".into(),
            ));
        }
        let seq = msg.seq();
        match *accepted {
            Some(a) if seq <= a => return Ok(false),
            Some(a) if seq != a + 1 => {
                return Err(LinkError::Protocol(format!(
                    "sequence gap on {}: expected {}, got {seq}",
                    self.key,
                    a + 1
                )))
            }
            _ => {}
        }
        let batch = match &msg {
            Msg::Data { batch, .. } => Some(batch.clone()),
            _ => None,
        };
        match self.tx.try_send(msg) {
            Ok(()) => {
                *accepted = Some(seq);
                self.stats.count(seq, batch.as_ref());
                Ok(true)
            }
            Err(mpsc::error::TrySendError::Full(_)) => Err(LinkError::Protocol(format!(
                "{} sent beyond its credit of {WINDOW}",
                self.key.from
            ))),
            Err(mpsc::error::TrySendError::Closed(_)) => {
                Err(LinkError::Protocol(format!("{} is gone", self.key.to)))
            }
        }
    }

    /// Starts a new connection generation; older connections stop delivering.
    pub(crate) fn new_generation(&self) -> u64 {
        self.generation.fetch_add(1, Ordering::AcqRel) + 1
    }

    /// The consumer PE processed everything through `seq`.
    pub fn mark_processed(&self, seq: u64) {
        self.processed.send_if_modified(|p| {
            let advance = seq > *p;
            if advance {
                *p = seq;
            }
            advance
        });
    }

    /// Highest sequence processed.
    pub fn processed(&self) -> u64 {
        *self.processed.borrow()
    }

    pub(crate) fn watch_processed(&self) -> watch::Receiver<u64> {
        self.processed.subscribe()
    }

    /// Messages queued and not yet taken by the PE.
    pub fn queued(&self) -> usize {
        WINDOW - self.tx.capacity()
    }
}

/// Every input endpoint on a worker, by channel.
#[derive(Debug, Default)]
pub struct Inputs {
    map: Mutex<HashMap<ChannelKey, Arc<InputEndpoint>>>,
    changed: Notify,
}

impl Inputs {
    /// Creates the endpoint of `key` (replacing any older one), whose producer the
    /// master placed on worker `producer`, and returns the queue its consumer reads.
    pub fn register(
        &self,
        key: ChannelKey,
        producer: Option<String>,
    ) -> (Arc<InputEndpoint>, mpsc::Receiver<Msg>) {
        let (ep, rx) = InputEndpoint::new(key.clone(), producer);
        self.lock().insert(key, ep.clone());
        self.changed.notify_waiters();
        (ep, rx)
    }

    /// Removes the endpoint of `key`, if it is still `ep`.
    pub fn remove(&self, ep: &Arc<InputEndpoint>) {
        let mut m = self.lock();
        if m.get(&ep.key).is_some_and(|e| Arc::ptr_eq(e, ep)) {
            m.remove(&ep.key);
        }
    }

    /// The endpoint of `key`, if its consumer runs here.
    pub fn get(&self, key: &ChannelKey) -> Option<Arc<InputEndpoint>> {
        self.lock().get(key).cloned()
    }

    /// Waits until the endpoint of `key` exists (a co-located consumer may be deployed
    /// after its producer).
    pub async fn wait_for(&self, key: &ChannelKey) -> Arc<InputEndpoint> {
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Some(ep) = self.get(key) {
                return ep;
            }
            notified.await;
        }
    }

    /// Every endpoint.
    pub fn all(&self) -> Vec<Arc<InputEndpoint>> {
        self.lock().values().cloned().collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<ChannelKey, Arc<InputEndpoint>>> {
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }
}
