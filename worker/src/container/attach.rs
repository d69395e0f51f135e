//! A container's attached output, split back into stdout and stderr.
//!
//! Without a terminal the engine multiplexes both streams over one connection in
//! frames, which bollard decodes into [`LogOutput`] items. The PE protocol reads
//! stdout as a byte stream and stderr line by line, exactly as for a local process,
//! so a task copies each frame into one of two in-memory pipes. The pipes are
//! bounded: a program whose answers are not read waits, as it would on a real pipe.

use crate::exec::Output;
use bollard::container::LogOutput;
use bollard::errors::Error as DockerError;
use std::pin::Pin;
use tokio::io::AsyncWriteExt;
use tokio::task::JoinHandle;
use tokio_stream::{Stream, StreamExt};

/// Bytes buffered per stream between the engine's connection and the reader.
const PIPE_BYTES: usize = 256 << 10;

/// The attached output as bollard gives it.
pub(super) type Attached = Pin<Box<dyn Stream<Item = Result<LogOutput, DockerError>> + Send>>;

/// Splits `output` into (stdout, stderr); both end when the container's output ends.
/// The returned task does the copying (abort it to stop early).
pub(super) fn demux(mut output: Attached) -> (Output, Output, JoinHandle<()>) {
    let (mut out_w, out_r) = tokio::io::duplex(PIPE_BYTES);
    let (mut err_w, err_r) = tokio::io::duplex(PIPE_BYTES);
    let task = tokio::spawn(async move {
        // A reader gone (the worker stopped reading) is not a reason to stop reading
        // the other stream.
        let (mut out_open, mut err_open) = (true, true);
        while let Some(item) = output.next().await {
            match item {
                Ok(LogOutput::StdOut { message } | LogOutput::Console { message }) => {
                    if out_open && out_w.write_all(&message).await.is_err() {
                        out_open = false;
                    }
                }
                Ok(LogOutput::StdErr { message }) => {
                    if err_open && err_w.write_all(&message).await.is_err() {
                        err_open = false;
                    }
                }
                Ok(LogOutput::StdIn { .. }) => {}
                Err(e) => {
                    tracing::debug!(error = %e, "container output ended with an error");
                    break;
                }
            }
        }
        // Dropping the writers is the readers' end of input.
    });
    (Box::pin(out_r), Box::pin(err_r), task)
}
