//! Replication and fetch over real gRPC on loopback: `ControlService`s serving
//! `StoreSnapshot` and `FetchStateSnapshot` from their own stores.

use super::replicate::ring;
use super::*;
use crate::background::Priority;
use crate::control::ControlService;
use crate::runtime::Runtime;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_stream::StreamExt;
use tonic::Code;
use weir_proto::v1::worker_control_client::WorkerControlClient;
use weir_proto::v1::worker_control_server::WorkerControlServer;

const APP: &str = "shop";
const PE: &str = "views@3fa1b2c4#0";

/// A worker's control service on a loopback port, with its own store.
struct Peer {
    id: String,
    addr: SocketAddr,
    store: Arc<SnapshotStore>,
    /// Connections accepted so far.
    accepted: Arc<AtomicUsize>,
    task: JoinHandle<()>,
    _dir: tempfile::TempDir,
}

impl Drop for Peer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Peer {
    async fn start(id: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(SnapshotStore::open(dir.path()).unwrap());
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let svc = ControlService::new(
            id.into(),
            "127.0.0.1:1".into(),
            Arc::new(Runtime::default()),
            Arc::default(),
            Arc::default(),
            store.clone(),
        );
        let accepted = Arc::new(AtomicUsize::new(0));
        let counted = accepted.clone();
        let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener).map(move |c| {
            counted.fetch_add(1, Ordering::SeqCst);
            c
        });
        let task = tokio::spawn(async move {
            let _ = tonic::transport::Server::builder()
                .add_service(tonic::service::interceptor::InterceptedService::new(
                    WorkerControlServer::new(svc),
                    weir_security::caller::admit(false, &[], "test"),
                ))
                .serve_with_incoming(incoming)
                .await;
        });
        Self {
            id: id.into(),
            addr,
            store,
            accepted,
            task,
            _dir: dir,
        }
    }

    fn peer(&self) -> pb::PeerWorker {
        pb::PeerWorker {
            worker_id: self.id.clone(),
            control_address: self.addr.to_string(),
        }
    }

    fn location(&self, data: &[u8]) -> pb::SnapshotLocation {
        pb::SnapshotLocation {
            worker_id: self.id.clone(),
            control_address: self.addr.to_string(),
            size_bytes: data.len() as u64,
            crc32c: crc32c::crc32c(data),
        }
    }

    async fn client(&self) -> WorkerControlClient<tonic::transport::Channel> {
        WorkerControlClient::connect(format!("http://{}", self.addr))
            .await
            .unwrap()
    }

    /// Flips one byte of the stored snapshot on disk.
    fn corrupt(&self, id: u64) {
        let path = self.store.path(APP, PE, id).unwrap();
        let mut f = std::fs::read(&path).unwrap();
        let at = f.len() - 1;
        f[at] ^= 0x55;
        std::fs::write(&path, f).unwrap();
    }

    /// Every file under the store's root.
    fn files(&self) -> Vec<std::path::PathBuf> {
        fn walk(d: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
            for e in std::fs::read_dir(d).unwrap().flatten() {
                if e.path().is_dir() {
                    walk(&e.path(), out);
                } else {
                    out.push(e.path());
                }
            }
        }
        let mut out = Vec::new();
        walk(self.store.dir(), &mut out);
        out
    }
}

fn sample(n: usize) -> Bytes {
    (0..n)
        .map(|i| (i * 31 % 253) as u8)
        .collect::<Vec<_>>()
        .into()
}

fn local_store() -> (tempfile::TempDir, Arc<SnapshotStore>) {
    let d = tempfile::tempdir().unwrap();
    let s = Arc::new(SnapshotStore::open(d.path()).unwrap());
    (d, s)
}

/// An address nothing listens on.
async fn dead_address() -> String {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    l.local_addr().unwrap().to_string()
}

#[test]
fn checkpoint_ring_order() {
    let p = |id: &str| pb::PeerWorker {
        worker_id: id.into(),
        control_address: format!("{id}:1"),
    };
    let peers = vec![p("w4"), p("w1"), p("w2"), p("w0"), p("w2")];
    let ids = |v: Vec<pb::PeerWorker>| v.into_iter().map(|p| p.worker_id).collect::<Vec<_>>();
    assert_eq!(ids(ring("w2", &peers)), ["w4", "w0", "w1"]);
    assert_eq!(ids(ring("w3", &peers)), ["w4", "w0", "w1", "w2"]);
    assert_eq!(ids(ring("w9", &peers)), ["w0", "w1", "w2", "w4"]);
    assert!(ring("w0", &[p("w0")]).is_empty());
    let r = Replicator::new("w0");
    assert_eq!(r.replicas(), 2);
    r.set_replicas(0);
    assert_eq!(r.replicas(), 1);
}

#[tokio::test]
async fn a_pre_copy_fetch_reads_at_the_background_priority_and_keeps_its_copy() {
    // A pre-copy's fetch: the serving worker reads at its background priority (the
    // request says so), the copy is kept on the replica thread, and the next read of
    // it, here, is at the background priority too; the bytes are those stored.
    let w1 = Peer::start("w1").await;
    let data = sample(2 * CHUNK_BYTES + 7);
    w1.store.put(APP, PE, 4, &data).unwrap();
    let (_d, store) = local_store();
    let locations = [w1.location(&data)];
    let at = (0, Priority::Background);
    let dialer = dial::Dialer::default();
    let fetch = || replicate::fetch_waiting(&store, "w9", &dialer, APP, PE, 4, &locations, at);
    let got = fetch().await.unwrap();
    assert_eq!((got.bytes, got.from.as_str()), (data.clone(), "w1"));
    kept(&store, 4, &data).await;
    let again = fetch().await.unwrap();
    assert_eq!((again.bytes, again.from.as_str()), (data, "w9"));
}

/// A worker's fetches from one peer reuse its connections: the stream's (a restore, an
/// upgrade's rounds) take `FETCH_CONNECTIONS` in turn, a pre-copy's one more (run on
/// the transfer runtime), so a round costs no connection or TLS handshake; a peer no
/// longer listed loses its channels.
#[tokio::test]
async fn fetches_from_one_peer_reuse_its_connections() {
    use dial::FETCH_CONNECTIONS as N;
    let w1 = Peer::start("w1").await;
    let data = sample(CHUNK_BYTES + 5);
    w1.store.put(APP, PE, 1, &data).unwrap();
    let dialer = dial::Dialer::default();
    let mut dirs = Vec::new();
    let mut fetch = async |times, priority| {
        for _ in 0..times {
            // A store of its own each time: nothing is found locally.
            let (d, store) = local_store();
            dirs.push(d);
            let at = (0, priority);
            let locations = [w1.location(&data)];
            let got = replicate::fetch_waiting(&store, "w9", &dialer, APP, PE, 1, &locations, at)
                .await
                .unwrap();
            assert_eq!((got.bytes, got.from.as_str()), (data.clone(), "w1"));
        }
    };
    let accepted = || w1.accepted.load(Ordering::SeqCst);
    fetch(2 * N, Priority::Stream).await;
    assert_eq!(accepted(), N);
    fetch(3, Priority::Background).await;
    assert_eq!(accepted(), N + 1);
    fetch(2 * N, Priority::Stream).await;
    assert_eq!(accepted(), N + 1);
    assert_eq!(dialer.channels(), N + 1);
    dialer.retain(&[w1.peer()]);
    assert_eq!(dialer.channels(), N + 1);
    dialer.retain(&[]);
    assert_eq!(dialer.channels(), 0);
}

/// Waits until `store` holds `data` as checkpoint `id` of `PE` (a fetched copy is
/// kept locally on a task of its own, which the fetch does not wait for); panics
/// after a minute.
async fn kept(store: &SnapshotStore, id: u64, data: &[u8]) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while store.get(APP, PE, id).ok().as_deref() != Some(data) {
        assert!(
            std::time::Instant::now() < deadline,
            "the fetched copy of {id} was never kept"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn checkpoint_replicate_then_fetch_back() {
    let (w1, w2, w3) = (
        Peer::start("w1").await,
        Peer::start("w2").await,
        Peer::start("w3").await,
    );
    let data = sample(2 * CHUNK_BYTES + CHUNK_BYTES / 2);
    let r = Replicator::new("w2");
    r.set_peers(vec![w1.peer(), w3.peer(), w2.peer()]);
    r.set_replicas(3);
    // The ring after w2 is w3, w1.
    assert_eq!(
        r.replicate(APP, PE, 7, data.clone(), Priority::Stream)
            .await,
        ["w3", "w1"]
    );
    assert_eq!(w3.store.get(APP, PE, 7).unwrap(), data.to_vec());
    assert_eq!(w1.store.get(APP, PE, 7).unwrap(), data.to_vec());
    assert!(!w2.store.has(APP, PE, 7));
    r.set_replicas(2);
    assert_eq!(
        r.replicate(APP, PE, 8, data.clone(), Priority::Stream)
            .await,
        ["w3"]
    );

    // A worker without a copy fetches it back and keeps it.
    let (_d, store) = local_store();
    let locations = [w3.location(&data), w1.location(&data)];
    let got = fetch(&store, "w9", &Default::default(), APP, PE, 7, &locations)
        .await
        .unwrap();
    assert_eq!(got.bytes, data);
    assert_eq!(got.from, "w3");
    assert!(got.problems.is_empty(), "{:?}", got.problems);
    kept(&store, 7, &data).await;
    // Next time the local copy serves.
    let again = fetch(&store, "w9", &Default::default(), APP, PE, 7, &locations)
        .await
        .unwrap();
    assert_eq!(again.from, "w9");
    assert_eq!(again.bytes, data);

    // An empty snapshot replicates and fetches too.
    assert_eq!(
        r.replicate(APP, PE, 9, Bytes::new(), Priority::Stream)
            .await,
        ["w3"]
    );
    let (_d2, other) = local_store();
    let got = fetch(
        &other,
        "w9",
        &Default::default(),
        APP,
        PE,
        9,
        &[w3.location(b"")],
    )
    .await
    .unwrap();
    assert!(got.bytes.is_empty());
}

#[tokio::test]
async fn checkpoint_replicate_skips_a_dead_peer() {
    let w2 = Peer::start("w2").await;
    let r = Replicator::new("w0").with_timeout(std::time::Duration::from_secs(5));
    r.set_peers(vec![
        pb::PeerWorker {
            worker_id: "w1".into(),
            control_address: dead_address().await,
        },
        w2.peer(),
    ]);
    // w1 is next in the ring but down: w2 takes the replica instead.
    assert_eq!(
        r.replicate(APP, PE, 3, sample(1000), Priority::Stream)
            .await,
        ["w2"]
    );
    assert!(w2.store.has(APP, PE, 3));
    // No peers at all: nothing stored, no error.
    r.set_peers(vec![]);
    assert!(r
        .replicate(APP, PE, 4, sample(10), Priority::Stream)
        .await
        .is_empty());
}

#[tokio::test]
async fn checkpoint_fetch_falls_back_past_corrupt_copies() {
    let (w1, w2) = (Peer::start("w1").await, Peer::start("w2").await);
    let data = sample(CHUNK_BYTES + 17);
    let r = Replicator::new("w0");
    r.set_peers(vec![w1.peer(), w2.peer()]);
    r.set_replicas(3);
    // A drained window's piece: pushed from the transfer runtime.
    assert_eq!(
        r.replicate(APP, PE, 5, data.clone(), Priority::Background)
            .await,
        ["w1", "w2"]
    );

    // This worker's own copy is damaged, and so is w1's: w2's serves, and the caller
    // learns about both.
    let (_d, store) = local_store();
    store.put(APP, PE, 5, &data).unwrap();
    let path = store.path(APP, PE, 5).unwrap();
    let mut f = std::fs::read(&path).unwrap();
    f[40] ^= 1;
    std::fs::write(&path, f).unwrap();
    w1.corrupt(5);
    let dead = pb::SnapshotLocation {
        worker_id: "w3".into(),
        control_address: dead_address().await,
        ..w1.location(&data)
    };
    let locations = [
        pb::SnapshotLocation {
            worker_id: "w0".into(),
            control_address: "unused:1".into(),
            ..w1.location(&data)
        },
        dead.clone(),
        w1.location(&data),
        w2.location(&data),
    ];
    let got = fetch(&store, "w0", &Default::default(), APP, PE, 5, &locations)
        .await
        .unwrap();
    assert_eq!(got.from, "w2");
    assert_eq!(got.bytes, data);
    assert_eq!(got.problems.len(), 3, "{:?}", got.problems);
    assert!(got.problems[0].starts_with("local copy on w0: corrupt (crc mismatch"));
    assert!(got.problems[1].starts_with("replica on w3: unreachable"));
    assert!(
        got.problems[2].starts_with("replica on w1: corrupt (")
            && got.problems[2].contains("crc mismatch"),
        "{:?}",
        got.problems
    );
    // The good copy replaced the damaged local one.
    kept(&store, 5, &data).await;

    // A copy that is intact on its worker but not the checkpoint's (another size and
    // CRC recorded) is refused too; with w2 also damaged nothing is left.
    w2.corrupt(5);
    let (_d2, empty) = local_store();
    let wrong = pb::SnapshotLocation {
        crc32c: 1,
        ..w1.location(&data)
    };
    w1.store.put(APP, PE, 5, &data).unwrap();
    let err = fetch(
        &empty,
        "w0",
        &Default::default(),
        APP,
        PE,
        5,
        &[wrong, w2.location(&data), dead],
    )
    .await
    .unwrap_err();
    let FetchError::NoIntactCopy { problems } = err;
    assert_eq!(problems.len(), 3, "{problems:?}");
    assert!(
        problems[0].starts_with("replica on w1: corrupt (crc mismatch"),
        "{problems:?}"
    );
    assert!(
        problems[1].starts_with("replica on w2: corrupt ("),
        "{problems:?}"
    );
    assert!(!empty.has(APP, PE, 5));

    // Nowhere to look at all.
    let err = fetch(&empty, "w0", &Default::default(), APP, PE, 6, &[])
        .await
        .unwrap_err();
    assert!(err.to_string().contains("missing"), "{err}");
}

#[tokio::test]
async fn checkpoint_fetch_state_snapshot_statuses() {
    let w1 = Peer::start("w1").await;
    let data = sample(CHUNK_BYTES * 2 + 1);
    w1.store.put(APP, PE, 3, &data).unwrap();
    w1.store.put(APP, PE, 4, &data[..100]).unwrap();
    let mut c = w1.client().await;
    let req = |id: u64, offset: u64| pb::FetchStateSnapshotRequest {
        app: APP.into(),
        pe: PE.into(),
        checkpoint_id: id,
        key_groups: None,
        offset,
        for_pe: "next".into(),
        wait_ms: 0,
        background: false,
    };
    // Without waiting, a snapshot not stored yet is NOT_FOUND; a hand-off fetch waits
    // for one stored after it asked.
    assert_eq!(
        c.fetch_state_snapshot(pb::FetchStateSnapshotRequest {
            pe: "successor-of".into(),
            ..req(11, 0)
        })
        .await
        .map(|_| ())
        .unwrap_err()
        .code(),
        Code::NotFound
    );
    let store = w1.store.clone();
    let later = tokio::spawn(async move {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        store.put(APP, "successor-of", 11, b"handed over").unwrap();
    });
    let mut chunks = c
        .fetch_state_snapshot(pb::FetchStateSnapshotRequest {
            pe: "successor-of".into(),
            wait_ms: 10_000,
            ..req(11, 0)
        })
        .await
        .unwrap()
        .into_inner();
    let mut got = Vec::new();
    while let Some(chunk) = chunks.message().await.unwrap() {
        got.extend_from_slice(&chunk.data);
    }
    assert_eq!(got, b"handed over");
    later.await.unwrap();
    let collect = |mut s: tonic::Streaming<pb::StateChunk>| async move {
        let mut out = Vec::new();
        while let Some(c) = s.message().await.unwrap() {
            out.push(c);
        }
        out
    };

    let cs = collect(
        c.fetch_state_snapshot(req(3, 0))
            .await
            .unwrap()
            .into_inner(),
    )
    .await;
    assert_eq!(cs.len(), 3);
    let mut a = Assembler::new(MAX_SNAPSHOT_BYTES);
    for ch in cs.clone() {
        assert_eq!(ch.to_pe, "next");
        assert_eq!(ch.total_bytes, data.len() as u64);
        a.push(ch).unwrap();
    }
    assert_eq!(a.finish().unwrap().data, data.to_vec());
    // Resume from an offset.
    let cs = collect(
        c.fetch_state_snapshot(req(3, 2 * CHUNK_BYTES as u64))
            .await
            .unwrap()
            .into_inner(),
    )
    .await;
    assert_eq!(cs.len(), 1);
    assert_eq!(cs[0].data.len(), 1);
    assert!(cs[0].last);
    // Checkpoint 0: the latest stored.
    let cs = collect(
        c.fetch_state_snapshot(req(0, 0))
            .await
            .unwrap()
            .into_inner(),
    )
    .await;
    assert_eq!(cs[0].barrier_id, 4);
    assert_eq!(cs[0].data.len(), 100);

    let code = |r: Result<tonic::Response<_>, tonic::Status>| r.map(|_| ()).unwrap_err().code();
    assert_eq!(
        code(c.fetch_state_snapshot(req(9, 0)).await),
        Code::NotFound
    );
    assert_eq!(
        code(c.fetch_state_snapshot(req(3, data.len() as u64 + 1)).await),
        Code::OutOfRange
    );
    assert_eq!(
        code(
            c.fetch_state_snapshot(pb::FetchStateSnapshotRequest {
                pe: String::new(),
                ..req(3, 0)
            })
            .await
        ),
        Code::InvalidArgument
    );
    assert_eq!(
        code(
            c.fetch_state_snapshot(pb::FetchStateSnapshotRequest {
                app: "../..".into(),
                ..req(3, 0)
            })
            .await
        ),
        Code::NotFound
    );
    w1.corrupt(3);
    assert_eq!(
        code(c.fetch_state_snapshot(req(3, 0)).await),
        Code::DataLoss
    );
}

#[tokio::test]
async fn checkpoint_store_snapshot_refuses_hostile_streams() {
    let w1 = Peer::start("w1").await;
    let mut c = w1.client().await;
    let data = sample(2 * CHUNK_BYTES + 5);
    let good = chunks(APP, PE, "", 11, &data, 0);

    async fn send(
        c: &mut WorkerControlClient<tonic::transport::Channel>,
        cs: Vec<pb::StateChunk>,
    ) -> Result<u64, Code> {
        c.store_snapshot(tokio_stream::iter(cs))
            .await
            .map(|r| r.into_inner().bytes_stored)
            .map_err(|s| s.code())
    }

    let mut gap = good.clone();
    gap.remove(1);
    assert_eq!(send(&mut c, gap).await, Err(Code::InvalidArgument));

    let mut bad_crc = good.clone();
    bad_crc[2].crc32c ^= 0xff;
    assert_eq!(send(&mut c, bad_crc).await, Err(Code::DataLoss));

    let mut flipped = good.clone();
    let mut d = flipped[1].data.to_vec();
    d[0] ^= 1;
    flipped[1].data = d.into();
    assert_eq!(send(&mut c, flipped).await, Err(Code::DataLoss));

    let mut bad_whole = good.clone();
    bad_whole[2].snapshot_crc32c ^= 1;
    assert_eq!(send(&mut c, bad_whole).await, Err(Code::DataLoss));

    let mut oversize = good.clone();
    for ch in &mut oversize {
        ch.total_bytes = MAX_SNAPSHOT_BYTES + 1;
    }
    assert_eq!(send(&mut c, oversize).await, Err(Code::ResourceExhausted));

    let mut unfinished = good.clone();
    unfinished.pop();
    assert_eq!(send(&mut c, unfinished).await, Err(Code::InvalidArgument));

    let mut no_pe = good.clone();
    for ch in &mut no_pe {
        ch.from_pe.clear();
    }
    assert_eq!(send(&mut c, no_pe).await, Err(Code::InvalidArgument));

    let mut no_id = good.clone();
    for ch in &mut no_id {
        ch.barrier_id = 0;
    }
    assert_eq!(send(&mut c, no_id).await, Err(Code::InvalidArgument));

    let long = chunks(&"a".repeat(300), PE, "", 11, &data, 0);
    assert_eq!(send(&mut c, long).await, Err(Code::InvalidArgument));

    assert_eq!(send(&mut c, vec![]).await, Err(Code::InvalidArgument));

    // Nothing was stored by any refused stream.
    assert!(w1.files().is_empty(), "{:?}", w1.files());

    // A good stream is stored, and a hostile name stays inside the store.
    assert_eq!(send(&mut c, good).await, Ok(data.len() as u64));
    assert_eq!(w1.store.get(APP, PE, 11).unwrap(), data.to_vec());
    let sneaky = chunks(
        "../../etc",
        "../passwd",
        "",
        1,
        &Bytes::from_static(b"x"),
        0,
    );
    assert_eq!(send(&mut c, sneaky).await, Ok(1));
    assert!(w1.files().iter().all(|f| f.starts_with(w1.store.dir())));
    assert_eq!(w1.files().len(), 2);
    assert_eq!(w1.store.get("../../etc", "../passwd", 1).unwrap(), b"x");
}

/// An upgrade's hand-off is fetched through a location named before the snapshot was
/// taken, so it records no size or CRC-32C (both 0): the fetched copy is kept locally
/// under the CRC-32C the serving worker sent (verified as it is written and as it is
/// read back), and a damaged copy is still refused, with nothing kept.
#[tokio::test]
async fn checkpoint_a_handed_off_snapshot_is_kept_locally_with_its_crc() {
    let w1 = Peer::start("w1").await;
    let data = sample(CHUNK_BYTES + 99);
    w1.store.put(APP, PE, 12, &data).unwrap();
    let handoff = [pb::SnapshotLocation {
        size_bytes: 0,
        crc32c: 0,
        ..w1.location(&data)
    }];
    let (_d, store) = local_store();
    let got = replicate::fetch_waiting(
        &store,
        "w2",
        &Default::default(),
        APP,
        PE,
        12,
        &handoff,
        (1000, crate::background::Priority::Stream),
    )
    .await
    .unwrap();
    assert_eq!((got.bytes.clone(), got.from.as_str()), (data.clone(), "w1"));
    // Kept (a read checks the stored CRC-32C against the data), and the next fetch
    // needs no transfer.
    kept(&store, 12, &data).await;
    let again = fetch(&store, "w2", &Default::default(), APP, PE, 12, &handoff)
        .await
        .unwrap();
    assert_eq!((again.bytes, again.from.as_str()), (data.clone(), "w2"));

    // A hand-off damaged on the serving worker is refused, and nothing is kept.
    w1.store.put(APP, PE, 13, &data).unwrap();
    w1.corrupt(13);
    let damaged = fetch(&store, "w2", &Default::default(), APP, PE, 13, &handoff)
        .await
        .unwrap_err();
    let FetchError::NoIntactCopy { problems } = damaged;
    assert!(
        problems.len() == 1 && problems[0].starts_with("replica on w1: corrupt ("),
        "{problems:?}"
    );
    assert!(!store.has(APP, PE, 13));
}

#[tokio::test]
async fn checkpoint_fetches_hold_their_bytes_against_a_budget() {
    use tokio_stream::StreamExt;
    let (_d, store) = local_store();
    // 3 MiB of data (plus the header): 4 permits of the 6 MiB budget.
    let data = sample(3 << 20);
    store.put(APP, PE, 7, &data).unwrap();
    let budget: &'static tokio::sync::Semaphore =
        Box::leak(Box::new(tokio::sync::Semaphore::new(6)));
    let req = || pb::FetchStateSnapshotRequest {
        app: APP.into(),
        pe: PE.into(),
        checkpoint_id: 7,
        ..Default::default()
    };
    let first = serve::fetch_within(store.clone(), req(), budget)
        .await
        .unwrap();
    assert_eq!(budget.available_permits(), 2);
    // A second fetch while the first is being served would go over: refused, not
    // read into memory.
    let err = match serve::fetch_within(store.clone(), req(), budget).await {
        Ok(_) => panic!("a second fetch over the budget was served"),
        Err(e) => e,
    };
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
    assert!(err.message().contains("too many snapshot bytes"), "{err:?}");
    // Served in full, the first releases its bytes; the next fetch goes through.
    let chunks: Vec<_> = first.collect().await;
    let got: Vec<u8> = chunks
        .into_iter()
        .flat_map(|c| c.unwrap().data.to_vec())
        .collect();
    assert_eq!(got, data.to_vec());
    assert_eq!(budget.available_permits(), 6);
    let again = serve::fetch_within(store.clone(), req(), budget)
        .await
        .unwrap();
    drop(again); // a caller going away releases them too
    assert_eq!(budget.available_permits(), 6);

    // A stored file larger than any snapshot may be is never read into memory.
    let path = store.path(APP, PE, 8).unwrap();
    let f = std::fs::File::create(&path).unwrap();
    f.set_len(MAX_SNAPSHOT_BYTES + 1024).unwrap();
    let err = match serve::fetch_within(
        store.clone(),
        pb::FetchStateSnapshotRequest {
            checkpoint_id: 8,
            ..req()
        },
        budget,
    )
    .await
    {
        Ok(_) => panic!("an oversized file was served"),
        Err(e) => e,
    };
    assert_eq!(err.code(), Code::DataLoss, "{err:?}");
}

/// A fetch waiting for a hand-off wakes when the file is stored, not at its deadline:
/// in paused time, a wake by the deadline would show as the whole minute passed.
#[tokio::test(start_paused = true)]
async fn a_waiting_fetch_wakes_when_its_file_is_stored_not_at_its_deadline() {
    let (_d, s) = local_store();
    let start = tokio::time::Instant::now();
    let until = start + std::time::Duration::from_secs(60);
    let wait = |id| {
        let s = s.clone();
        tokio::spawn(async move { s.wait_for("app", "pe+handoff", id, until).await })
    };
    let (stored, other) = (wait(7), wait(8));
    // Both are waiting (a current-thread runtime runs them at this yield).
    tokio::task::yield_now().await;
    s.put_volatile("app", "pe+handoff", 7, b"envelope").unwrap();
    assert!(stored.await.unwrap());
    assert_eq!(tokio::time::Instant::now(), start, "woken by the store");
    // Another file stored does not end a wait for this one.
    assert!(!other.await.unwrap());
    assert_eq!(tokio::time::Instant::now(), until);
}
