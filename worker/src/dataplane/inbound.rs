//! The data listener: accepts links from producers on other workers and feeds their
//! frames into the input endpoints of the PEs here.
//!
//! Handshake: the producer sends `Open` naming the channel's PEs; the listener answers
//! `Credit` (the window) and `Ack` (how far the consumer processed), or closes the
//! connection when no PE here consumes that channel. Then data, barrier and end frames
//! flow in; acknowledgements flow back as the consumer processes. Any frame that is
//! malformed, names another channel, breaks the sequence or exceeds the credit resets
//! the link with a logged reason; the producer reconnects and resends what was not
//! acknowledged, so a reset never loses a record.
//!
//! Over mutual TLS the link is also refused, before it can touch the channel (no new
//! generation, so the real producer's link keeps delivering), unless the peer's
//! certificate names the worker the master placed the channel's producer on: a worker
//! of the cluster cannot open, and so hijack, another worker's channel.

use super::reader::{FrameReader, FrameWriter};
use super::{Admission, ChannelKey, InputEndpoint, Inputs, LinkError, Msg, WINDOW};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use weir_common::frame::Frame;

/// Accepts producer links until `stop` fires.
pub async fn serve(
    listener: TcpListener,
    inputs: Arc<Inputs>,
    admission: Admission,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = stop.wait_for(|s| *s) => return,
        };
        let (sock, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(error = %e, "data listener accept failed");
                continue;
            }
        };
        let inputs = inputs.clone();
        let admission = admission.clone();
        let mut stop = stop.clone();
        tokio::spawn(async move {
            tokio::select! {
                r = admit(sock, &admission, &inputs) => {
                    if let Err(e) = r {
                        match e {
                            LinkError::Closed => tracing::debug!(%peer, "link closed"),
                            e => tracing::warn!(%peer, error = %e, "link reset"),
                        }
                    }
                }
                _ = stop.wait_for(|s| *s) => {}
            }
        });
    }
}

/// Runs one link: over plain TCP, or after a TLS handshake whose client certificate
/// names a worker of the cluster (anyone else is refused before a frame is read).
async fn admit(sock: TcpStream, admission: &Admission, inputs: &Inputs) -> Result<(), LinkError> {
    sock.set_nodelay(true)?;
    let Some(acceptor) = &admission.0 else {
        let (rd, wr) = sock.into_split();
        return link(rd, wr, inputs, None).await;
    };
    let tls = tokio::time::timeout(Duration::from_secs(10), acceptor.accept(sock))
        .await
        .map_err(|_| LinkError::Timeout("TLS handshake"))??;
    let peer = weir_security::tls::peer_principal(tls.get_ref().1.peer_certificates())
        .map_err(|e| LinkError::Protocol(format!("client certificate: {e}")))?;
    if peer.role() != weir_security::Role::Worker {
        return Err(LinkError::Protocol(format!(
            "only workers open data links; the peer is {peer}"
        )));
    }
    let (rd, wr) = tokio::io::split(tls);
    link(rd, wr, inputs, Some(&peer)).await
}

/// Whether `peer` (`None`: plain TCP, no identity) may open the link of `ep`.
fn check_producer(
    ep: &InputEndpoint,
    peer: Option<&weir_security::Principal>,
) -> Result<(), LinkError> {
    let Some(peer) = peer else {
        return Ok(());
    };
    match &ep.producer {
        Some(w) if matches!(peer, weir_security::Principal::Worker(id) if id == w) => Ok(()),
        Some(w) => Err(LinkError::Protocol(format!(
            "{peer} may not open channel {}: its producer is placed on worker {w}",
            ep.key
        ))),
        None => Err(LinkError::Protocol(format!(
            "channel {} has no producer worker named by the master; refused over TLS",
            ep.key
        ))),
    }
}

async fn link<R, W>(
    rd: R,
    wr: W,
    inputs: &Inputs,
    peer: Option<&weir_security::Principal>,
) -> Result<(), LinkError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut rd = FrameReader::new(rd);
    let mut wr = FrameWriter::new(wr);
    let open = tokio::time::timeout(Duration::from_secs(10), rd.next())
        .await
        .map_err(|_| LinkError::Timeout("open"))??;
    let Frame::Open {
        channel,
        from_pe,
        to_pe,
        ..
    } = open
    else {
        return Err(LinkError::Protocol(format!(
            "a link must start with open, got {open:?}"
        )));
    };
    let key = ChannelKey::new(from_pe, to_pe);
    let Some(ep) = inputs.get(&key) else {
        // Not (yet) here: the producer retries, e.g. until the consumer is deployed.
        return Err(LinkError::Protocol(format!("unknown channel {key}")));
    };
    check_producer(&ep, peer)?;
    let generation = ep.new_generation();
    let mut processed = ep.watch_processed();
    let mut acked = *processed.borrow_and_update();
    wr.push(&Frame::Credit {
        channel,
        credits: WINDOW as u32,
    })
    .await?;
    wr.push(&Frame::Ack {
        channel,
        seq: acked,
    })
    .await?;
    wr.flush().await?;
    ep.stats.connected.store(true, Ordering::Relaxed);
    ep.stats.connects.fetch_add(1, Ordering::Relaxed);
    let result = pump(
        &ep,
        generation,
        channel,
        &mut rd,
        &mut wr,
        &mut processed,
        &mut acked,
    )
    .await;
    ep.stats.connected.store(false, Ordering::Relaxed);
    result
}

async fn pump<R: AsyncRead + Unpin, W: AsyncWrite + Unpin>(
    ep: &Arc<InputEndpoint>,
    generation: u64,
    channel: u32,
    rd: &mut FrameReader<R>,
    wr: &mut FrameWriter<W>,
    processed: &mut watch::Receiver<u64>,
    acked: &mut u64,
) -> Result<(), LinkError> {
    loop {
        tokio::select! {
            f = rd.next() => {
                let f = f?;
                if f.channel() != channel {
                    return Err(LinkError::Protocol(format!(
                        "frame for unknown channel {} on the link of {}", f.channel(), ep.key
                    )));
                }
                let msg = match f {
                    Frame::Data { seq, batch, .. } => Msg::Data { seq, batch },
                    Frame::Barrier { seq, barrier_id, .. } => Msg::Barrier { seq, id: barrier_id },
                    Frame::End { seq, .. } => Msg::End { seq },
                    other => return Err(LinkError::Protocol(format!("unexpected {other:?} from a producer"))),
                };
                ep.offer(generation, msg)?;
            }
            changed = processed.changed() => {
                if changed.is_err() {
                    return Err(LinkError::Protocol(format!("{} is gone", ep.key.to)));
                }
                let seq = *processed.borrow_and_update();
                if seq > *acked {
                    *acked = seq;
                    wr.push(&Frame::Ack { channel, seq }).await?;
                    wr.flush().await?;
                }
            }
        }
    }
}
