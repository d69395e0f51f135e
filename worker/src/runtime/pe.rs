//! The task of one PE: sources emit, transforms and sinks process their inputs.
//!
//! A transform takes a batch from any input, runs its kernel, hands the output to its
//! router (waiting there while a consumer has no credit: backpressure reaches the
//! inputs because the PE stops taking batches), and only then marks the input batch
//! processed, which is what acknowledges it to a remote producer. When every input
//! has ended, the kernel flushes (windows emit what is left), the outputs end, and the
//! PE waits until its consumers processed everything before it reports finished.

use super::kernel::Kernel;
use super::router::Router;
use super::status::{PeRunState, PeStatus};
use super::BATCH_RECORDS;
use crate::dataplane::{InputEndpoint, Msg};
use crate::ops::Generator;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::{StreamExt, StreamMap};
use weir_common::spec::GeneratorParams;

/// One input of a PE: its endpoint and the queue it reads.
pub type Input = (Arc<InputEndpoint>, mpsc::Receiver<Msg>);

/// How often a `sink.verify` republishes its summary while records flow.
const VERIFY_EVERY: Duration = Duration::from_millis(100);

/// Runs a transform or sink until its inputs end (or it is aborted).
pub async fn run_consumer(
    pe: String,
    mut kernel: Kernel,
    mut router: Router,
    inputs: Vec<Input>,
    status: Arc<PeStatus>,
) {
    let eps: Vec<Arc<InputEndpoint>> = inputs.iter().map(|(ep, _)| ep.clone()).collect();
    let mut streams = StreamMap::new();
    for (i, (_, rx)) in inputs.into_iter().enumerate() {
        streams.insert(i, ReceiverStream::new(rx));
    }
    let mut ended = vec![false; eps.len()];
    status.set(PeRunState::Running);
    status.set_verify(kernel.verify_summary(false));
    let mut published = Instant::now();
    while let Some((i, msg)) = streams.next().await {
        match msg {
            Msg::Data { seq, batch } => {
                status.took(&batch);
                match kernel.process(i, &batch).await {
                    Ok(Some(out)) => {
                        status.gave(&out);
                        router.send(out).await;
                    }
                    Ok(None) => {}
                    Err(e) => {
                        tracing::error!(%pe, error = %e, "PE failed");
                        status.fail(e);
                        return;
                    }
                }
                eps[i].mark_processed(seq);
            }
            Msg::Barrier { seq, id } => {
                // Alignment across inputs comes with checkpoints; forwarded in order.
                router.barrier(id).await;
                eps[i].mark_processed(seq);
            }
            Msg::End { seq } => {
                ended[i] = true;
                if let Some(out) = kernel.end_input(i) {
                    status.gave(&out);
                    router.send(out).await;
                }
                eps[i].mark_processed(seq);
                if ended.iter().all(|e| *e) {
                    break;
                }
            }
        }
        if published.elapsed() >= VERIFY_EVERY {
            status.set_verify(kernel.verify_summary(false));
            published = Instant::now();
        }
    }
    if let Some(out) = kernel.finish().await {
        status.gave(&out);
        router.send(out).await;
    }
    status.set_verify(kernel.verify_summary(ended.iter().all(|e| *e)));
    router.end().await;
    status.set(PeRunState::Finished);
    tracing::info!(%pe, "PE finished: every input ended");
}

/// Runs a `source.generator` PE.
pub async fn run_generator(
    pe: String,
    params: GeneratorParams,
    source: u32,
    index: u32,
    parallelism: u32,
    mut router: Router,
    status: Arc<PeStatus>,
) {
    let rate = params
        .rate
        .map(|r| (r as f64 / f64::from(parallelism.max(1))).max(1.0));
    let mut g = Generator::new(params, source, index, parallelism);
    // At low rates, smaller batches keep the output smooth (about 100 batches/s).
    let per_batch = rate.map_or(BATCH_RECORDS, |r| {
        ((r / 100.0) as usize).clamp(1, BATCH_RECORDS)
    });
    status.set(PeRunState::Running);
    let start = Instant::now();
    let mut emitted = 0u64;
    while let Some(b) = g.next_batch(per_batch) {
        status.gave(&b);
        emitted += b.len() as u64;
        router.send(b).await;
        if let Some(r) = rate {
            let due = Duration::from_secs_f64(emitted as f64 / r);
            if let Some(wait) = due.checked_sub(start.elapsed()) {
                // Pacing to the configured rate.
                tokio::time::sleep(wait).await;
            }
        }
    }
    router.end().await;
    status.set(PeRunState::Finished);
    tracing::info!(%pe, records = emitted, "source finished");
}
