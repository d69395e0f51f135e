//! The data plane over real TCP on loopback: links cut mid-stream by a proxy, and
//! hostile bytes at the listener. Every test checks every record: none lost, none
//! delivered twice, in order.

use super::outbound::RemoteSender;
use super::reader::{FrameReader, FrameWriter};
use super::*;
use bytes::BytesMut;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use weir_common::frame::Frame;
use weir_common::record::{BatchBuilder, Value};

fn batch(from: u64, n: u64) -> Batch {
    let mut b = BatchBuilder::default();
    for seq in from..from + n {
        let v = Value::I64(seq as i64);
        b.push(7, seq, 0, b"k", [("n", &v)]).unwrap();
    }
    b.finish()
}

/// A consumer endpoint behind a real data listener.
async fn listener(inputs: Arc<Inputs>) -> (String, watch::Sender<bool>) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap().to_string();
    let (stop, rx) = watch::channel(false);
    tokio::spawn(inbound::serve(l, inputs, Default::default(), rx));
    (addr, stop)
}

/// Reads a channel like a PE would: takes messages, processes (records the seqs),
/// acknowledges. Returns every record seq seen, until End.
fn consume(
    ep: Arc<InputEndpoint>,
    mut rx: mpsc::Receiver<Msg>,
    slow: Option<Duration>,
) -> JoinHandle<Vec<u64>> {
    tokio::spawn(async move {
        let mut seen = Vec::new();
        while let Some(m) = rx.recv().await {
            match m {
                Msg::Data { seq, batch } => {
                    seen.extend(batch.iter().map(|r| r.seq));
                    if let Some(d) = slow {
                        // A deliberately slow consumer (the test's subject, not a wait).
                        tokio::time::sleep(d).await;
                    }
                    ep.mark_processed(seq);
                }
                Msg::Barrier { seq, .. } => ep.mark_processed(seq),
                Msg::End { seq } => {
                    ep.mark_processed(seq);
                    break;
                }
            }
        }
        seen
    })
}

/// A TCP proxy whose connections can be cut, as a network fault would.
struct Proxy {
    addr: String,
    conns: Arc<Mutex<Vec<JoinHandle<()>>>>,
    accepts: Arc<AtomicU64>,
}

impl Proxy {
    async fn start(upstream: String) -> Self {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap().to_string();
        let conns: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let accepts = Arc::new(AtomicU64::new(0));
        let (c, a) = (conns.clone(), accepts.clone());
        tokio::spawn(async move {
            while let Ok((mut down, _)) = l.accept().await {
                a.fetch_add(1, Ordering::SeqCst);
                let upstream = upstream.clone();
                let h = tokio::spawn(async move {
                    if let Ok(mut up) = TcpStream::connect(upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut down, &mut up).await;
                    }
                });
                c.lock().unwrap().push(h);
            }
        });
        Self {
            addr,
            conns,
            accepts,
        }
    }

    /// Drops every live connection (both sockets close).
    fn cut(&self) {
        for h in self.conns.lock().unwrap().drain(..) {
            h.abort();
        }
    }
}

async fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let start = std::time::Instant::now();
    while !f() {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "timed out: {what}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cut_links_reconnect_and_lose_or_repeat_nothing() {
    let inputs = Arc::new(Inputs::default());
    let key = ChannelKey::new("p#0", "c#0");
    let (ep, rx) = inputs.register(key.clone(), None);
    let (addr, _stop) = listener(inputs.clone()).await;
    let proxy = Proxy::start(addr).await;
    let consumer = consume(ep.clone(), rx, None);
    let tx = RemoteSender::new(key, proxy.addr.clone(), Default::default());
    let (batches, per) = (400u64, 50u64);
    for i in 0..batches {
        tx.send(batch(i * per, per)).await;
        if i % 100 == 50 {
            // Cut mid-stream, with frames in flight and unacknowledged.
            proxy.cut();
        }
    }
    tx.end().await;
    tx.wait_finished().await;
    let seen = consumer.await.unwrap();
    assert_eq!(
        seen,
        (0..batches * per).collect::<Vec<_>>(),
        "every record once, in order"
    );
    assert!(
        proxy.accepts.load(Ordering::SeqCst) >= 4,
        "the link was re-established after each cut"
    );
    assert!(tx.stats().connects.load(Ordering::Relaxed) >= 4);
    assert_eq!(tx.pending(), 0);
}

/// A batch larger than a frame may be (a window closing over millions of keys emits
/// one) crosses the link as several frames: the receiver refuses frames over
/// `MAX_FRAME` and resets the link, so sent whole it never arrived.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_larger_than_a_frame_arrives_whole_in_order() {
    let inputs = Arc::new(Inputs::default());
    let key = ChannelKey::new("p#0", "c#0");
    let (ep, rx) = inputs.register(key.clone(), None);
    let (addr, _stop) = listener(inputs.clone()).await;
    let consumer = consume(ep.clone(), rx, None);
    let tx = RemoteSender::new(key, addr, Default::default());
    let pad = Value::Str("x".repeat(100));
    let mut b = BatchBuilder::default();
    let n = 200_000u64;
    for seq in 0..n {
        b.push(7, seq, 0, b"k", [("pad", &pad)]).unwrap();
    }
    let big = b.finish();
    assert!(big.encoded_len() > weir_common::frame::MAX_FRAME);
    // Bounded, so that a link that never gets the batch through fails the test
    // instead of hanging it.
    let sent = async {
        tx.send(big).await;
        tx.send(batch(n, 10)).await;
        tx.end().await;
        tx.wait_finished().await;
        consumer.await.unwrap()
    };
    let seen = tokio::time::timeout(Duration::from_secs(120), sent)
        .await
        .expect("the batch never got through");
    assert_eq!(
        seen,
        (0..n + 10).collect::<Vec<_>>(),
        "every record once, in order"
    );
    assert_eq!(
        tx.stats().connects.load(Ordering::Relaxed),
        1,
        "the link never reset"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_consumer_bounds_what_the_producer_holds() {
    let inputs = Arc::new(Inputs::default());
    let key = ChannelKey::new("p#0", "slow#0");
    let (ep, rx) = inputs.register(key.clone(), None);
    let (addr, _stop) = listener(inputs.clone()).await;
    let consumer = consume(ep.clone(), rx, Some(Duration::from_millis(2)));
    let tx = Arc::new(RemoteSender::new(key, addr, Default::default()));
    let t = tx.clone();
    let producer = tokio::spawn(async move {
        for i in 0..200u64 {
            t.send(batch(i * 10, 10)).await;
        }
        t.end().await;
        t.wait_finished().await;
    });
    let mut max_pending = 0;
    let mut max_queued = 0;
    while !producer.is_finished() {
        max_pending = max_pending.max(tx.pending());
        max_queued = max_queued.max(ep.queued());
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    producer.await.unwrap();
    assert_eq!(consumer.await.unwrap(), (0..2000).collect::<Vec<_>>());
    assert!(
        max_pending <= WINDOW,
        "replay buffer {max_pending} > window"
    );
    assert!(max_queued <= WINDOW, "input queue {max_queued} > window");
    assert!(
        max_pending > 0,
        "the producer was ahead of the slow consumer"
    );
}

/// Sends raw bytes to the listener (then hangs up its sending side when `hang_up`) and
/// returns whether the listener closed the connection.
async fn closed_after(addr: &str, bytes: &[u8], hang_up: bool) -> bool {
    let mut s = TcpStream::connect(addr).await.unwrap();
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    s.write_all(bytes).await.unwrap();
    if hang_up {
        s.shutdown().await.unwrap();
    }
    let mut buf = [0u8; 256];
    // Drain whatever the listener says (a credit and an ack for a good open) until it
    // closes the connection.
    loop {
        match tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue,
            Err(_) => return false,
        }
    }
}

fn encode(frames: &[Frame]) -> Vec<u8> {
    let mut b = BytesMut::new();
    for f in frames {
        f.encode(&mut b);
    }
    b.to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_bytes_reset_the_link_and_lose_nothing() {
    let inputs = Arc::new(Inputs::default());
    let key = ChannelKey::new("p#0", "c#0");
    let (ep, rx) = inputs.register(key.clone(), None);
    let (addr, _stop) = listener(inputs.clone()).await;
    let consumer = consume(ep.clone(), rx, None);
    let open = |from: &str, to: &str| Frame::Open {
        channel: 1,
        from_pe: from.into(),
        to_pe: to.into(),
        resume_after: 0,
    };
    // A length far beyond the limit: refused before any allocation.
    assert!(closed_after(&addr, &[0xff, 0xff, 0xff, 0x7f, 2, 0, 0, 0, 0], false).await);
    // An unknown frame kind.
    assert!(closed_after(&addr, &[5, 0, 0, 0, 99, 1, 0, 0, 0], false).await);
    // A channel no PE here consumes.
    assert!(closed_after(&addr, &encode(&[open("p#0", "nobody#0")]), false).await);
    // A good open, then a frame naming another channel.
    let stray = Frame::Data {
        channel: 9,
        seq: 1,
        batch: batch(0, 1),
    };
    assert!(closed_after(&addr, &encode(&[open("p#0", "c#0"), stray]), false).await);
    // A good open, then a data frame cut off in the middle (peer disconnects).
    let mut partial = encode(&[
        open("p#0", "c#0"),
        Frame::Data {
            channel: 1,
            seq: 1,
            batch: batch(0, 5),
        },
    ]);
    partial.truncate(partial.len() - 7);
    assert!(closed_after(&addr, &partial, true).await);
    // A sequence gap (a fresh endpoint accepts any first sequence: 1, then 3).
    let gap = [
        open("p#0", "c#0"),
        Frame::Data {
            channel: 1,
            seq: 1,
            batch: batch(0, 1),
        },
        Frame::Data {
            channel: 1,
            seq: 3,
            batch: batch(1, 1),
        },
    ];
    assert!(closed_after(&addr, &encode(&gap), false).await);

    // The hostile peer's one accepted record (seq 0, frame 1) is in; a real producer,
    // resuming after it, still delivers everything else exactly once.
    eventually("the stray record processed", || ep.processed() == 1).await;
    let tx = RemoteSender::new(key, addr.clone(), Default::default());
    // The producer starts at frame 1 too: its first frame is a replay the consumer
    // drops, so it sends the same records the hostile peer did first.
    tx.send(batch(0, 1)).await;
    tx.send(batch(1, 99)).await;
    tx.end().await;
    tx.wait_finished().await;
    let seen = consumer.await.unwrap();
    assert_eq!(seen, (0..100).collect::<Vec<_>>());

    // The listener still serves after all of it.
    let mut s = TcpStream::connect(&addr).await.unwrap();
    let (rd, wr) = s.split();
    let mut w = FrameWriter::new(wr);
    w.push(&open("p#0", "c#0")).await.unwrap();
    w.flush().await.unwrap();
    let mut r = FrameReader::new(rd);
    assert!(matches!(r.next().await.unwrap(), Frame::Credit { .. }));
}

/// Security material for data-plane tests: one CA, and a `Security` per principal.
fn secured(
    ca: &weir_security::ca::DevCa,
    who: weir_security::Principal,
) -> weir_security::Security {
    let issued = ca.issue(&who).unwrap();
    let tls = weir_security::tls::Tls::from_pem(
        ca.cert_pem().as_bytes().to_vec(),
        issued.cert_pem.into_bytes(),
        issued.key_pem.into_bytes(),
        std::path::Path::new("test"),
    )
    .unwrap();
    weir_security::Security::Mtls(Arc::new(tls))
}

/// With security on, a channel's link is mutual TLS: the producer holding the
/// certificate of the worker the master named for the channel delivers every record
/// once; the same channel dialled with a tenant's certificate, another CA's worker
/// certificate, another worker of the cluster, or over plain TCP, never gets a credit,
/// so nothing it sends is taken, and the other worker dialling in the middle of the
/// stream does not disturb the real link. A channel with no producer named is refused
/// to every worker.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_links_over_tls_take_only_workers_of_the_cluster() {
    use weir_security::ca::DevCa;
    use weir_security::Principal;
    let ca = DevCa::generate("test").unwrap();
    let other_ca = DevCa::generate("other").unwrap();
    let consumer_side = secured(&ca, Principal::Worker("w2".into()));
    let inputs = Arc::new(Inputs::default());
    let key = ChannelKey::new("p#0", "tls#0");
    let (ep, rx) = inputs.register(key.clone(), Some("w1".into()));
    let unnamed = ChannelKey::new("p#0", "unnamed#0");
    let (unnamed_ep, _unnamed_rx) = inputs.register(unnamed.clone(), None);
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap().to_string();
    let (_stop, stop_rx) = watch::channel(false);
    tokio::spawn(inbound::serve(
        l,
        inputs.clone(),
        Admission::new(&consumer_side).unwrap(),
        stop_rx,
    ));

    // Intruders first, on the very channel the consumer waits on.
    let intruders = [
        (
            "a tenant's certificate",
            secured(&ca, Principal::Tenant("acme".into())),
        ),
        (
            "another CA's worker",
            secured(&other_ca, Principal::Worker("w1".into())),
        ),
        (
            "another worker of the cluster",
            secured(&ca, Principal::Worker("w3".into())),
        ),
        ("plain TCP", weir_security::Security::Off),
    ];
    let unnamed_intruders = [
        (
            "the producer's worker",
            secured(&ca, Principal::Worker("w1".into())),
        ),
        (
            "another worker",
            secured(&ca, Principal::Worker("w3".into())),
        ),
    ];
    let attempts = intruders
        .into_iter()
        .map(|(who, sec)| (who, sec, key.clone(), ep.clone()))
        .chain(
            unnamed_intruders
                .into_iter()
                .map(|(who, sec)| (who, sec, unnamed.clone(), unnamed_ep.clone())),
        );
    for (who, sec, key, ep) in attempts {
        let tx = RemoteSender::new(key.clone(), addr.clone(), Dialer::new(&sec).unwrap());
        tx.send(batch(1000, 5)).await;
        // Several attempts (the sender retries with backoff), none admitted.
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while tx.stats().failures.load(Ordering::Relaxed) < 3 {
            assert!(std::time::Instant::now() < deadline, "{who}: no attempts");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(
            tx.stats().connects.load(Ordering::Relaxed),
            0,
            "{who} opened the channel"
        );
        assert_eq!(ep.stats.connects.load(Ordering::Relaxed), 0, "{who}");
        assert_eq!(ep.queued(), 0, "{who} got a batch queued");
        drop(tx);
    }

    let consumer = consume(ep.clone(), rx, None);
    let producer = secured(&ca, Principal::Worker("w1".into()));
    let tx = RemoteSender::new(key.clone(), addr.clone(), Dialer::new(&producer).unwrap());
    for i in 0..25u64 {
        tx.send(batch(i * 10, 10)).await;
    }
    // Linked and delivering, then the other worker tries to take the channel over.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while ep.stats.connects.load(Ordering::Relaxed) == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the producer never linked"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let w3 = secured(&ca, Principal::Worker("w3".into()));
    let hijack = RemoteSender::new(key, addr, Dialer::new(&w3).unwrap());
    hijack.send(batch(1_000_000, 5)).await;
    while hijack.stats().failures.load(Ordering::Relaxed) < 3 {
        assert!(std::time::Instant::now() < deadline, "no hijack attempts");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(hijack.stats().connects.load(Ordering::Relaxed), 0);
    drop(hijack);
    for i in 25..50u64 {
        tx.send(batch(i * 10, 10)).await;
    }
    tx.end().await;
    tx.wait_finished().await;
    assert_eq!(consumer.await.unwrap(), (0..500).collect::<Vec<_>>());
    assert_eq!(ep.stats.connects.load(Ordering::Relaxed), 1);
}
