//! An upgrade's switch at a barrier, on two runtimes joined by real TCP: a producer
//! moves its stream from one consumer to another, and back to a consumer with the
//! first one's very id (what a rollback does). The end of every channel the switch
//! dropped must be acknowledged by the drained consumer: a producer end left
//! unacknowledged keeps reconnecting and, once a PE with the same id is back, could
//! attach to it and end its input early.

use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use weir_common::keygroup::KeyGroupRange;
use weir_common::spec::{
    GeneratorParams, OperatorKind, OperatorSpec, Partitioning, Resources, SinkVerifyParams,
};
use weir_proto::v1 as pb;
use weir_worker::dataplane::{inbound, Inputs};
use weir_worker::runtime::{OutputConfig, PeConfig, Runtime, Target};

const APP: &str = "t";
const RECORDS: u64 = 100_000;
const STREAM: &str = "gen->sink";
/// Deadline for each condition waited on.
const LIMIT: Duration = Duration::from_secs(60);

fn config(pe: &str, kind: OperatorKind, inputs: &[&str], outputs: Vec<OutputConfig>) -> PeConfig {
    PeConfig {
        app: APP.into(),
        version: 1,
        tenant: "default".into(),
        pe: pe.into(),
        spec: OperatorSpec {
            name: pe.split('#').next().unwrap_or(pe).into(),
            kind,
            parallelism: 1,
            resources: Resources::default(),
        },
        index: 0,
        key_groups: KeyGroupRange::for_pe(0, 1),
        source_ordinal: 7,
        inputs: inputs.iter().map(|s| s.to_string()).collect(),
        outputs,
        attempt: 0,
        restore: None,
        gpus: vec![],
        peer_attempts: Default::default(),
        producer_workers: Default::default(),
        restore_pieces: vec![],
        start_at_barrier: 0,
    }
}

fn sink(pe: &str) -> PeConfig {
    let verify = OperatorKind::SinkVerify(SinkVerifyParams { expect: None });
    config(pe, verify, &["gen#0"], vec![])
}

fn to(pe: &str, address: &str) -> Vec<Target> {
    vec![Target {
        pe: pe.into(),
        address: Some(address.into()),
        attempt: None,
    }]
}

async fn eventually<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = tokio::time::Instant::now() + LIMIT;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn report(rt: &Runtime, pe: &str) -> Option<pb::PeReport> {
    rt.report().into_iter().find(|r| r.pe == pe)
}

fn finished(rt: &Runtime, pe: &str) -> Option<pb::VerifySummary> {
    report(rt, pe)
        .filter(|r| r.state == pb::PeState::Stopped as i32)
        .and_then(|r| r.verify)
}

/// The producer end from `gen` to `pe` on `rt`, when every frame of it (its end
/// included) has been acknowledged.
fn acknowledged(rt: &Runtime, pe: &str) -> Option<()> {
    let chans = rt.channels();
    let ends: Vec<_> = chans
        .iter()
        .filter(|c| c.end == pb::ChannelEnd::Producer as i32)
        .filter(|c| c.channel.as_ref().is_some_and(|r| r.to_pe.contains(pe)))
        .collect();
    (!ends.is_empty() && ends.iter().all(|c| c.pending_batches == 0)).then_some(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_switched_away_consumer_acknowledges_its_end_and_a_rollback_loses_nothing() {
    let a = Runtime::new(Arc::new(Inputs::default()));
    let b_inputs = Arc::new(Inputs::default());
    let b = Runtime::new(b_inputs.clone());
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap().to_string();
    let (_stop, stop_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(inbound::serve(l, b_inputs, Default::default(), stop_rx));

    // gen (worker a) -> first (worker b), over TCP; `second` waits for its turn.
    b.deploy(sink("first#0")).await.unwrap();
    b.deploy(sink("second#0")).await.unwrap();
    let gen = OperatorKind::Generator(GeneratorParams {
        rate: Some(10_000),
        count: Some(RECORDS),
        keys: 10,
        payload_bytes: 8,
        seed: 0,
        wall_clock: false,
    });
    let out = vec![OutputConfig {
        stream: STREAM.into(),
        partitioning: Partitioning::Forward,
        targets: to("first#0", &addr),
    }];
    a.deploy(config("gen#0", gen, &[], out)).await.unwrap();
    eventually("records reach the first sink", || {
        let s = report(&b, "first#0")?.stats?;
        (s.records_in > 0).then_some(())
    })
    .await;

    // Upgrade: at barrier 1 the stream moves to `second`, and `first` drains.
    let forward = Some(Partitioning::Forward);
    a.switch_output(
        APP,
        "gen#0",
        1,
        STREAM.into(),
        forward.clone(),
        to("second#0", &addr),
    )
    .unwrap();
    b.drain(APP, "first#0", 1).unwrap();
    assert_eq!(a.trigger(APP, 1), vec!["gen#0".to_string()]);
    let first = eventually("the first sink drains", || finished(&b, "first#0")).await;
    eventually("the end of the dropped channel is acknowledged", || {
        acknowledged(&a, "first#0")
    })
    .await;
    b.stop(APP, "first#0");

    // Rollback: a PE with the first one's id comes back and the stream returns to it.
    b.deploy(sink("first#0")).await.unwrap();
    a.switch_output(
        APP,
        "gen#0",
        2,
        STREAM.into(),
        forward,
        to("first#0", &addr),
    )
    .unwrap();
    b.drain(APP, "second#0", 2).unwrap();
    assert_eq!(
        a.trigger(APP, 2),
        vec!["gen#0".to_string()],
        "gen still runs"
    );
    let second = eventually("the second sink drains", || finished(&b, "second#0")).await;
    let back = eventually("the stream ends at the first sink's successor", || {
        finished(&b, "first#0").filter(|v| v.inputs_ended)
    })
    .await;
    eventually("every producer end is acknowledged", || {
        acknowledged(&a, "second#0")?;
        acknowledged(&a, "first#0")
    })
    .await;

    let all = [&first, &second, &back];
    for v in all {
        assert_eq!(v.duplicates, 0, "{v:?}");
    }
    assert!(first.records > 0 && second.records > 0 && back.records > 0);
    let total: u64 = all.iter().map(|v| v.records).sum();
    assert_eq!(total, RECORDS, "every record exactly once: {all:?}");
    a.stop_all();
    b.stop_all();
}
