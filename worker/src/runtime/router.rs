//! Routing a PE's output batches over its output streams by partitioning.
//!
//! Forward and broadcast pass the batch itself on (a shared buffer: co-located
//! consumers get it without a copy); round robin rotates whole batches over the
//! consumers (cheaper than per record, and just as even over time); hash splits a batch
//! by the key group of each record, copying each record's encoded bytes as they are.

use crate::dataplane::sender::ChannelSender;
use weir_common::keygroup::owner;
use weir_common::record::{Batch, BatchBuilder, RecordRef};
use weir_common::spec::Partitioning;

/// One output stream of a PE.
#[derive(Debug)]
pub struct Route {
    /// The stream, `from->to`.
    pub stream: String,
    partitioning: Partitioning,
    senders: Vec<ChannelSender>,
    next: usize,
}

impl Route {
    /// A route over `senders`, in consumer index order.
    pub fn new(stream: String, partitioning: Partitioning, senders: Vec<ChannelSender>) -> Self {
        Self {
            stream,
            partitioning,
            senders,
            next: 0,
        }
    }

    /// The channels of the route.
    pub fn senders(&self) -> &[ChannelSender] {
        &self.senders
    }
}

/// Every output stream of a PE.
#[derive(Debug, Default)]
pub struct Router {
    routes: Vec<Route>,
}

/// The bytes a hash partitioning hashes: a field's text, or the record key.
fn hash_key<'a>(r: &RecordRef<'a>, field: &str, scratch: &'a mut String) -> &'a [u8] {
    if field.is_empty() {
        return r.key;
    }
    *scratch = r.field(field).map(|v| v.to_string()).unwrap_or_default();
    scratch.as_bytes()
}

impl Router {
    /// A router over these routes.
    pub fn new(routes: Vec<Route>) -> Self {
        Self { routes }
    }

    /// The routes.
    pub fn routes(&self) -> &[Route] {
        &self.routes
    }

    /// Whether the PE has any output.
    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }

    /// Sends a batch on every route (waiting for credit where a consumer is slow).
    pub async fn send(&mut self, batch: Batch) {
        if batch.is_empty() {
            return;
        }
        for route in &mut self.routes {
            let n = route.senders.len();
            if n == 0 {
                continue;
            }
            match &route.partitioning {
                Partitioning::Forward => route.senders[0].send(batch.clone()).await,
                Partitioning::Broadcast => {
                    for s in &mut route.senders {
                        s.send(batch.clone()).await;
                    }
                }
                Partitioning::RoundRobin => {
                    let i = route.next % n;
                    route.next = route.next.wrapping_add(1);
                    route.senders[i].send(batch.clone()).await;
                }
                Partitioning::Hash { key } => {
                    if n == 1 {
                        route.senders[0].send(batch.clone()).await;
                        continue;
                    }
                    let mut parts: Vec<BatchBuilder> = (0..n)
                        .map(|_| BatchBuilder::with_capacity(batch.bytes().len() / n + 64))
                        .collect();
                    for r in batch.iter() {
                        let mut scratch = String::new();
                        let k = hash_key(&r, key, &mut scratch);
                        parts[owner(k, n as u32) as usize].push_raw(&r);
                    }
                    for (i, mut p) in parts.into_iter().enumerate() {
                        if !p.is_empty() {
                            route.senders[i].send(p.finish()).await;
                        }
                    }
                }
            }
        }
    }

    /// Sends a barrier on every channel.
    pub async fn barrier(&mut self, id: u64) {
        for route in &mut self.routes {
            for s in &mut route.senders {
                s.barrier(id).await;
            }
        }
    }

    /// Ends every channel and waits until every consumer has processed everything.
    pub async fn end(&mut self) {
        for route in &mut self.routes {
            for s in &mut route.senders {
                s.end().await;
            }
        }
        for route in &self.routes {
            for s in &route.senders {
                s.wait_finished().await;
            }
        }
    }
}
