//! Routing a PE's output batches over its output streams by partitioning.
//!
//! Forward and broadcast pass the batch itself on (a shared buffer: co-located
//! consumers get it without a copy); round robin rotates whole batches over the
//! consumers (cheaper than per record, and just as even over time); hash splits a batch
//! by the key group of each record, copying each record's encoded bytes as they are
//! (one gather per consumer).

use crate::dataplane::sender::ChannelSender;
use crate::ops::eval::Implicit;
use std::fmt::Write as _;
use weir_common::keygroup::owner;
use weir_common::record::{Batch, RecordRef};
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
    /// Channels an upgrade switched away from: ended, kept until their consumers
    /// acknowledged everything (a remote channel's replay buffer lives with it).
    retired: Vec<ChannelSender>,
}

/// The bytes a hash partitioning hashes: the record key, or a field's text, as
/// `key_by` makes a key of it (`key` and `ts` stand for the record key and event time
/// in a record without such a field). Written into `scratch`: nothing allocated per
/// record.
fn hash_key<'a>(r: &RecordRef<'a>, field: &str, scratch: &'a mut String) -> &'a [u8] {
    if field.is_empty() {
        return r.key;
    }
    scratch.clear();
    // Writing into a String cannot fail.
    let _ = match r.raw_fields().find(|f| f.name == field) {
        Some(f) => write!(scratch, "{f}"),
        None => match Implicit::named(field) {
            Some(Implicit::Key) => return r.key,
            Some(Implicit::Ts) => write!(scratch, "{}", r.event_time_ms),
            None => Ok(()),
        },
    };
    scratch.as_bytes()
}

impl Router {
    /// A router over these routes.
    pub fn new(routes: Vec<Route>) -> Self {
        Self {
            routes,
            retired: Vec::new(),
        }
    }

    /// Routes `stream` by `partitioning` over `targets` from now on (an upgrade's
    /// switch, right after its barrier went out on every channel). Channels to targets
    /// the stream keeps stay as they are (same sequence, same connection); channels to
    /// dropped targets end; new targets get new channels. No partitioning or no
    /// targets: the stream ends here.
    pub async fn switch(
        &mut self,
        stream: &str,
        partitioning: Option<Partitioning>,
        targets: &[super::Target],
        senders: &super::Senders,
    ) {
        let mut old = match self.routes.iter().position(|r| r.stream == stream) {
            Some(i) => self.routes.remove(i).senders,
            None => Vec::new(),
        };
        let mut chans = Vec::with_capacity(targets.len());
        for t in targets {
            let key = senders.key(t);
            match old.iter().position(|s| s.target() == key.to) {
                Some(i) => chans.push(old.remove(i)),
                None => chans.push(senders.make(t)),
            }
        }
        // Channels ended by earlier switches are kept until their consumers have
        // acknowledged the end; those that have are dropped here.
        self.retired.retain(|s| !s.finished());
        for mut s in old {
            s.end().await;
            self.retired.push(s);
        }
        if let Some(p) = partitioning.filter(|_| !chans.is_empty()) {
            self.routes.push(Route::new(stream.to_string(), p, chans));
        }
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
                    let mut parts: Vec<Vec<u32>> = vec![Vec::new(); n];
                    let mut scratch = String::new();
                    for (row, r) in batch.iter().enumerate() {
                        let k = hash_key(&r, key, &mut scratch);
                        parts[owner(k, n as u32) as usize].push(row as u32);
                    }
                    for (i, rows) in parts.iter().enumerate() {
                        if !rows.is_empty() {
                            route.senders[i].send(batch.gather(rows)).await;
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
        for s in &self.retired {
            s.wait_finished().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataplane::{ChannelKey, Inputs, Msg};
    use crate::runtime::{channel_end, Senders, Target};
    use std::sync::Arc;
    use weir_common::record::BatchBuilder;

    fn batch(seq: u64) -> Batch {
        let mut b = BatchBuilder::default();
        b.push(1, seq, 0, b"k", []).unwrap();
        b.finish()
    }

    fn target(pe: &str) -> Target {
        Target {
            pe: pe.into(),
            address: None,
            attempt: None,
        }
    }

    /// A generator's output keyed by `key_by` on each of its fields that varies (`key`
    /// and `ts` are the record key and event time, not fields), then hashed over three
    /// consumers: every consumer gets a share, and the shares add up to every record.
    /// The same for a hash on the field itself instead of `key_by`.
    #[tokio::test]
    async fn every_generator_field_spreads_records_over_hash_consumers() {
        use crate::ops::{Generator, KeyBy};
        use weir_common::spec::{GeneratorParams, KeyByParams};
        const COUNT: u64 = 4000;
        for field in ["id", "key", "ts", "value"] {
            for by_field in [false, true] {
                let inputs = Arc::new(Inputs::default());
                let senders = Senders {
                    inputs: inputs.clone(),
                    app: "a".into(),
                    end: channel_end("a", "k", 0),
                    attempt: 0,
                    remotes: Arc::default(),
                    dialer: Default::default(),
                };
                let consumers = ["w0", "w1", "w2"];
                let mut rx: Vec<_> = consumers
                    .iter()
                    .map(|pe| {
                        let key =
                            ChannelKey::new(channel_end("a", "k", 0), channel_end("a", pe, 0));
                        inputs.register(key, None).1
                    })
                    .collect();
                let chans = consumers
                    .iter()
                    .map(|pe| senders.make(&target(pe)))
                    .collect();
                let key = if by_field {
                    field.into()
                } else {
                    String::new()
                };
                let mut r = Router::new(vec![Route::new(
                    "k->w".into(),
                    Partitioning::Hash { key },
                    chans,
                )]);
                let params = GeneratorParams {
                    rate: None,
                    count: Some(COUNT),
                    keys: 100,
                    payload_bytes: 4,
                    seed: 0,
                    wall_clock: false,
                };
                let mut generator = Generator::new(params, 0, 0, 1);
                let key_by = KeyBy::new(&KeyByParams {
                    field: field.into(),
                });
                // Batches of 1,000: a few per consumer, well within its input queue.
                while let Some(b) = generator.next_batch(1000) {
                    r.send(if by_field { b } else { key_by.apply(&b) }).await;
                }
                let got: Vec<u64> = rx
                    .iter_mut()
                    .map(|rx| {
                        let mut n = 0;
                        while let Ok(m) = rx.try_recv() {
                            if let Msg::Data { batch, .. } = m {
                                n += batch.len() as u64;
                            }
                        }
                        n
                    })
                    .collect();
                let how = if by_field { "hash on" } else { "key_by" };
                assert!(got.iter().all(|n| *n > 0), "{how} {field}: {got:?}");
                assert_eq!(got.iter().sum::<u64>(), COUNT, "{how} {field}: {got:?}");
            }
        }
    }

    #[tokio::test]
    async fn a_switch_keeps_shared_channels_ends_dropped_ones_and_opens_new_ones() {
        let inputs = Arc::new(Inputs::default());
        let senders = Senders {
            inputs: inputs.clone(),
            app: "a".into(),
            end: channel_end("a", "p", 0),
            attempt: 0,
            remotes: Arc::default(),
            dialer: Default::default(),
        };
        let mut rx = std::collections::BTreeMap::new();
        for pe in ["x", "y", "z"] {
            let key = ChannelKey::new(channel_end("a", "p", 0), channel_end("a", pe, 0));
            rx.insert(pe, inputs.register(key, None).1);
        }
        let chans = ["x", "y"]
            .iter()
            .map(|pe| senders.make(&target(pe)))
            .collect();
        let mut r = Router::new(vec![Route::new(
            "p->c".into(),
            Partitioning::Broadcast,
            chans,
        )]);
        r.send(batch(1)).await;
        r.barrier(7).await;
        r.switch(
            "p->c",
            Some(Partitioning::Broadcast),
            &[target("y"), target("z")],
            &senders,
        )
        .await;
        r.send(batch(2)).await;
        let seqs = |m: &Msg| match m {
            Msg::Data { seq, .. } | Msg::Barrier { seq, .. } | Msg::End { seq } => *seq,
        };
        // x: the record and the barrier, then its end; nothing after the switch.
        let x = rx.get_mut("x").unwrap();
        let got: Vec<_> = (0..3).map(|_| x.try_recv().unwrap()).collect();
        assert!(matches!(got[0], Msg::Data { .. }));
        assert!(matches!(got[1], Msg::Barrier { id: 7, .. }));
        assert!(matches!(got[2], Msg::End { .. }));
        assert!(x.try_recv().is_err());
        // y: the same channel goes on, its sequence unbroken.
        let y = rx.get_mut("y").unwrap();
        let got: Vec<u64> = (0..3).map(|_| seqs(&y.try_recv().unwrap())).collect();
        assert_eq!(got, [1, 2, 3]);
        // z: a new channel carrying only what came after the switch.
        let z = rx.get_mut("z").unwrap();
        match z.try_recv().unwrap() {
            Msg::Data { seq: 1, batch } => assert_eq!(batch.iter().next().unwrap().seq, 2),
            other => panic!("{other:?}"),
        }
        assert!(z.try_recv().is_err());
        // No targets: the stream ends.
        r.switch("p->c", None, &[], &senders).await;
        assert!(r.routes().is_empty());
        assert!(matches!(
            rx.get_mut("y").unwrap().try_recv().unwrap(),
            Msg::End { .. }
        ));
    }
}
