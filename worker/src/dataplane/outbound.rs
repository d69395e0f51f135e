//! The producer end of a channel to another worker: a replay buffer and the TCP
//! connection that drains it, re-established whenever it breaks.
//!
//! `send` appends a frame to the replay buffer, waiting while the buffer holds a full
//! window of unacknowledged frames (that wait is the backpressure a slow consumer
//! exerts). A connection task writes frames in order and reads acknowledgements; an
//! acknowledgement of `seq` means the consumer *processed* everything through `seq`,
//! so those frames leave the buffer. When the connection breaks (reset, peer restart,
//! a protocol error), the task reconnects with backoff, sends `Open` with the last
//! acknowledged sequence, reads the consumer's credit and acknowledgement, and resends
//! every frame after it. Frames the consumer already queued are dropped on its side.

use super::reader::{FrameReader, FrameWriter};
use super::{ChannelKey, ChannelStats, LinkError, WINDOW};
use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpStream;
use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;
use weir_common::frame::Frame;
use weir_common::record::Batch;

/// The most batch bytes one data frame carries. A receiver refuses frames over
/// [`weir_common::frame::MAX_FRAME`] (16 MiB) and resets the link, so a larger batch
/// (a window closing over millions of keys emits them all in one: 1 GB at the 1 GB
/// bench's ten-minute boundary) would never get through; it goes as several frames,
/// each a batch of its consecutive records.
pub const MAX_FRAME_BATCH: usize = 4 << 20;

/// Channel id used on a link: one connection carries one channel.
pub const LINK_CHANNEL: u32 = 1;

#[derive(Debug)]
struct OutState {
    next_seq: u64,
    acked: u64,
    window: u64,
    buf: VecDeque<Frame>,
    /// The End frame was acknowledged: the channel is finished.
    finished: bool,
}

#[derive(Debug)]
struct Shared {
    key: ChannelKey,
    st: Mutex<OutState>,
    /// Wakes the connection task: frames to write.
    more: Notify,
    /// Wakes the producer: room in the window.
    room: Notify,
    stats: Arc<ChannelStats>,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, OutState> {
        self.st.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The producer end of a remote channel.
#[derive(Debug)]
pub struct RemoteSender {
    shared: Arc<Shared>,
    peer: watch::Sender<String>,
    task: JoinHandle<()>,
}

impl Drop for RemoteSender {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn frame_seq(f: &Frame) -> u64 {
    match f {
        Frame::Data { seq, .. } | Frame::Barrier { seq, .. } | Frame::End { seq, .. } => *seq,
        _ => 0,
    }
}

impl RemoteSender {
    /// A channel to `key.to`, running on the worker whose data plane listens at `peer`.
    pub fn new(key: ChannelKey, peer: String, dialer: super::Dialer) -> Self {
        let stats = Arc::new(ChannelStats::default());
        let shared = Arc::new(Shared {
            key,
            st: Mutex::new(OutState {
                next_seq: 1,
                acked: 0,
                window: WINDOW as u64,
                buf: VecDeque::new(),
                finished: false,
            }),
            more: Notify::new(),
            room: Notify::new(),
            stats,
        });
        let (peer, peer_rx) = watch::channel(peer);
        let task = tokio::spawn(run(shared.clone(), peer_rx, dialer));
        Self { shared, peer, task }
    }

    /// Points the channel at another address (its consumer moved); reconnects.
    pub fn set_peer(&self, peer: String) {
        self.peer.send_if_modified(|p| {
            let changed = *p != peer;
            *p = peer;
            changed
        });
    }

    /// The channel.
    pub fn key(&self) -> &ChannelKey {
        &self.shared.key
    }

    /// The current peer address.
    pub fn peer(&self) -> String {
        self.peer.borrow().clone()
    }

    /// Counters.
    pub fn stats(&self) -> &ChannelStats {
        &self.shared.stats
    }

    /// Frames sent and not yet acknowledged.
    pub fn pending(&self) -> usize {
        self.shared.lock().buf.len()
    }

    /// Whether the consumer acknowledged the end of the channel.
    pub fn finished(&self) -> bool {
        self.shared.lock().finished
    }

    /// Waits until the consumer acknowledged the end of the channel.
    pub async fn wait_finished(&self) {
        loop {
            let room = self.shared.room.notified();
            tokio::pin!(room);
            room.as_mut().enable();
            if self.finished() {
                return;
            }
            room.await;
        }
    }

    /// Sends a batch, waiting for credit: as several frames when it is larger than
    /// [`MAX_FRAME_BATCH`].
    pub async fn send(&self, batch: Batch) {
        if batch.encoded_len() <= MAX_FRAME_BATCH {
            return self.send_one(batch).await;
        }
        for piece in batch.pieces(MAX_FRAME_BATCH) {
            self.send_one(piece).await;
        }
    }

    async fn send_one(&self, batch: Batch) {
        let n = batch.len() as u64;
        let bytes = batch.encoded_len() as u64;
        let seq = self
            .push(|seq| Frame::Data {
                channel: LINK_CHANNEL,
                seq,
                batch,
            })
            .await;
        let s = &self.shared.stats;
        s.records.fetch_add(n, Ordering::Relaxed);
        s.bytes.fetch_add(bytes, Ordering::Relaxed);
        s.last_seq.fetch_max(seq, Ordering::Relaxed);
    }

    /// Sends a barrier.
    pub async fn barrier(&self, id: u64) {
        self.push(|seq| Frame::Barrier {
            channel: LINK_CHANNEL,
            seq,
            barrier_id: id,
        })
        .await;
    }

    /// Ends the channel.
    pub async fn end(&self) {
        self.push(|seq| Frame::End {
            channel: LINK_CHANNEL,
            seq,
        })
        .await;
    }

    async fn push(&self, make: impl FnOnce(u64) -> Frame) -> u64 {
        let mut make = Some(make);
        loop {
            let room = self.shared.room.notified();
            tokio::pin!(room);
            room.as_mut().enable();
            {
                let mut st = self.shared.lock();
                if st.next_seq - 1 - st.acked < st.window {
                    let seq = st.next_seq;
                    st.next_seq += 1;
                    if let Some(make) = make.take() {
                        st.buf.push_back(make(seq));
                    }
                    drop(st);
                    self.shared.more.notify_one();
                    return seq;
                }
            }
            room.await;
        }
    }
}

async fn run(shared: Arc<Shared>, mut peer: watch::Receiver<String>, dialer: super::Dialer) {
    let mut backoff = Duration::from_millis(10);
    loop {
        let addr = peer.borrow_and_update().clone();
        let mut progressed = false;
        let outcome = tokio::select! {
            r = connection(&shared, &addr, &dialer, &mut progressed) => r,
            _ = peer.changed() => Err(LinkError::Protocol("the consumer moved".into())),
        };
        shared.stats.connected.store(false, Ordering::Relaxed);
        match outcome {
            Ok(()) => {
                tracing::debug!(channel = %shared.key, "channel finished");
                return;
            }
            Err(e) => {
                shared.stats.failures.fetch_add(1, Ordering::Relaxed);
                if progressed {
                    backoff = Duration::from_millis(10);
                }
                let level_warn = progressed || backoff >= Duration::from_millis(640);
                if level_warn {
                    tracing::warn!(channel = %shared.key, peer = %addr, error = %e, "link down; reconnecting");
                } else {
                    tracing::debug!(channel = %shared.key, peer = %addr, error = %e, "link not up yet");
                }
                // Backoff between attempts, not synchronisation: the peer may be down.
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = peer.changed() => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(1));
            }
        }
    }
}

/// One connection: handshake, then write frames and read acknowledgements until
/// something breaks (`Err`) or the channel's end is acknowledged (`Ok`).
async fn connection(
    shared: &Arc<Shared>,
    addr: &str,
    dialer: &super::Dialer,
    progressed: &mut bool,
) -> Result<(), LinkError> {
    let sock = tokio::time::timeout(Duration::from_secs(2), TcpStream::connect(addr))
        .await
        .map_err(|_| LinkError::Timeout("connect"))??;
    sock.set_nodelay(true)?;
    match dialer.tls() {
        None => {
            let (rd, wr) = sock.into_split();
            exchange(shared, rd, wr, progressed).await
        }
        Some((connector, name)) => {
            let tls = tokio::time::timeout(
                Duration::from_secs(5),
                connector.connect(name.clone(), sock),
            )
            .await
            .map_err(|_| LinkError::Timeout("TLS handshake"))??;
            let (rd, wr) = tokio::io::split(tls);
            exchange(shared, rd, wr, progressed).await
        }
    }
}

/// The link's protocol once connected: handshake, then frames out and
/// acknowledgements in.
async fn exchange<R, W>(
    shared: &Arc<Shared>,
    rd: R,
    wr: W,
    progressed: &mut bool,
) -> Result<(), LinkError>
where
    R: tokio::io::AsyncRead + Unpin,
    W: tokio::io::AsyncWrite + Unpin,
{
    let mut rd = FrameReader::new(rd);
    let mut wr = FrameWriter::new(wr);
    let acked = shared.lock().acked;
    wr.push(&Frame::Open {
        channel: LINK_CHANNEL,
        from_pe: shared.key.from.clone(),
        to_pe: shared.key.to.clone(),
        resume_after: acked,
    })
    .await?;
    wr.flush().await?;
    // The consumer grants its credit, then says how far it processed.
    let credit = tokio::time::timeout(Duration::from_secs(5), rd.next())
        .await
        .map_err(|_| LinkError::Timeout("handshake"))??;
    let Frame::Credit { credits, .. } = credit else {
        return Err(LinkError::Protocol(format!(
            "expected credit, got {credit:?}"
        )));
    };
    {
        let mut st = shared.lock();
        st.window = u64::from(credits).clamp(1, WINDOW as u64);
    }
    handle_ack(shared, rd.next().await?)?;
    shared.stats.connected.store(true, Ordering::Relaxed);
    shared.stats.connects.fetch_add(1, Ordering::Relaxed);
    *progressed = true;
    if shared.lock().finished {
        return Ok(());
    }

    let reader = async {
        loop {
            let f = rd.next().await?;
            if handle_ack(shared, f)? {
                return Ok::<(), LinkError>(());
            }
        }
    };
    let writer = async {
        // Everything after the acknowledged point is (re)sent, in order.
        let mut sent = shared.lock().acked;
        loop {
            let more = shared.more.notified();
            tokio::pin!(more);
            more.as_mut().enable();
            let batch: Vec<Frame> = {
                let st = shared.lock();
                st.buf
                    .iter()
                    .filter(|f| frame_seq(f) > sent)
                    .cloned()
                    .collect()
            };
            if batch.is_empty() {
                wr.flush().await?;
                more.await;
                continue;
            }
            for f in &batch {
                wr.push(f).await?;
                sent = frame_seq(f);
            }
        }
        #[allow(unreachable_code)]
        Ok::<(), LinkError>(())
    };
    tokio::select! {
        r = reader => r,
        r = writer => r,
    }
}

/// Applies an acknowledgement. `Ok(true)`: the end of the channel was acknowledged.
fn handle_ack(shared: &Shared, f: Frame) -> Result<bool, LinkError> {
    let Frame::Ack { seq, .. } = f else {
        return Err(LinkError::Protocol(format!(
            "a consumer sends only acks, got {f:?}"
        )));
    };
    let mut st = shared.lock();
    if seq >= st.next_seq {
        return Err(LinkError::Protocol(format!(
            "ack of {seq}, but only {} sent",
            st.next_seq - 1
        )));
    }
    let advanced = seq > st.acked;
    if advanced {
        st.acked = seq;
        while st.buf.front().is_some_and(|f| frame_seq(f) <= seq) {
            if let Some(Frame::End { .. }) = st.buf.pop_front() {
                st.finished = true;
            }
        }
    }
    let finished = st.finished;
    drop(st);
    if advanced {
        shared.room.notify_one();
    }
    Ok(finished)
}
