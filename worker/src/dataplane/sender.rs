//! The producer end of any channel: in memory to a co-located consumer, or over TCP.

use super::outbound::RemoteSender;
use super::{ChannelKey, ChannelStats, InputEndpoint, Inputs, Msg};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use weir_common::record::Batch;

/// Producer end of a channel whose consumer runs on this worker.
#[derive(Debug)]
pub struct LocalSender {
    key: ChannelKey,
    inputs: Arc<Inputs>,
    ep: Option<Arc<InputEndpoint>>,
    next_seq: u64,
    stats: ChannelStats,
}

impl LocalSender {
    /// A channel to `key.to` on this worker.
    pub fn new(key: ChannelKey, inputs: Arc<Inputs>) -> Self {
        let stats = ChannelStats::default();
        stats.connected.store(true, Ordering::Relaxed);
        Self {
            key,
            inputs,
            ep: None,
            next_seq: 1,
            stats,
        }
    }

    async fn put(&mut self, make: impl FnOnce(u64) -> Msg) {
        let seq = self.next_seq;
        let mut msg = make(seq);
        if let Msg::Data { batch, .. } = &msg {
            self.stats.count(seq, Some(batch));
        }
        loop {
            let ep = match &self.ep {
                Some(ep) => ep.clone(),
                None => {
                    let ep = self.inputs.wait_for(&self.key).await;
                    self.ep = Some(ep.clone());
                    ep
                }
            };
            match ep.put_local(msg).await {
                Ok(()) => {
                    self.next_seq += 1;
                    return;
                }
                Err(back) => {
                    // The consumer was stopped (and may be redeployed): find its new
                    // endpoint and hand it the same message. What its old queue held is
                    // recovered by checkpoints.
                    tracing::info!(channel = %self.key, "co-located consumer gone; waiting for it");
                    self.inputs.remove(&ep);
                    self.ep = None;
                    msg = back;
                }
            }
        }
    }
}

/// The producer end of a channel.
#[derive(Debug)]
pub enum ChannelSender {
    /// Consumer on this worker.
    Local(LocalSender),
    /// Consumer on another worker.
    Remote(Arc<RemoteSender>),
}

impl ChannelSender {
    /// The consuming PE.
    pub fn target(&self) -> &str {
        match self {
            ChannelSender::Local(l) => &l.key.to,
            ChannelSender::Remote(r) => r.key().to.as_str(),
        }
    }

    /// Sends a batch, waiting while the consumer has no room.
    pub async fn send(&mut self, batch: Batch) {
        match self {
            ChannelSender::Local(l) => {
                l.put(|seq| Msg::Data {
                    seq,
                    batch: batch.clone(),
                })
                .await
            }
            ChannelSender::Remote(r) => r.send(batch).await,
        }
    }

    /// Sends a barrier.
    pub async fn barrier(&mut self, id: u64) {
        match self {
            ChannelSender::Local(l) => l.put(|seq| Msg::Barrier { seq, id }).await,
            ChannelSender::Remote(r) => r.barrier(id).await,
        }
    }

    /// Ends the channel.
    pub async fn end(&mut self) {
        match self {
            ChannelSender::Local(l) => l.put(|seq| Msg::End { seq }).await,
            ChannelSender::Remote(r) => r.end().await,
        }
    }

    /// Counters.
    pub fn stats(&self) -> &ChannelStats {
        match self {
            ChannelSender::Local(l) => &l.stats,
            ChannelSender::Remote(r) => r.stats(),
        }
    }

    /// Waits until the consumer has everything (remote: the end was acknowledged; in
    /// memory: handed over already).
    pub async fn wait_finished(&self) {
        if let ChannelSender::Remote(r) = self {
            r.wait_finished().await;
        }
    }

    /// Whether the consumer has everything, the end included (in memory: always).
    pub fn finished(&self) -> bool {
        match self {
            ChannelSender::Local(_) => true,
            ChannelSender::Remote(r) => r.finished(),
        }
    }

    /// Frames sent and not acknowledged (always 0 in memory).
    pub fn pending(&self) -> usize {
        match self {
            ChannelSender::Local(_) => 0,
            ChannelSender::Remote(r) => r.pending(),
        }
    }
}
