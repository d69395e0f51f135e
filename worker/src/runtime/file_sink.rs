//! `sink.file` as the runtime calls it: every call of the [`FileSink`] (writes, fsyncs,
//! renames, truncations: all blocking file I/O) runs on tokio's blocking threads, so a
//! slow disk stalls only the sink's own PE, never the other tasks sharing the runtime's
//! threads (data plane, control service, other PEs).
//!
//! `spawn_blocking` rather than `block_in_place`: `block_in_place` panics on a
//! current-thread runtime (tests and embedded workers run the runtime on one), and
//! while it runs, the other tasks of the calling task (its `select!` branches) stop too.
//!
//! A call on a blocking thread cannot be cancelled: when the runtime aborts a PE's task
//! (to stop or redeploy it), a call already started still finishes. The sink assumes
//! one writer at a time, so such a left-over call must not touch the files once a newer
//! instance of the PE has taken them over. The instances of one file in this process
//! share a fence: an instance's first call makes it the file's owner (that call is
//! `restore` or `start_fresh`, or implies the latter), calls of any other instance are
//! refused from then on, and calls of all instances run one at a time under the fence.
//! The protocol itself (the two-phase commit) is [`FileSink`]'s, unchanged.

use crate::ops::sink::{FileSink, SinkError};
use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex, PoisonError, Weak};
use weir_common::record::Batch;

/// Why a call of a [`BlockingFileSink`] failed.
#[derive(Debug, thiserror::Error)]
pub enum FileCallError {
    /// A file operation failed.
    #[error(transparent)]
    Io(#[from] io::Error),
    /// The sink refused the call (see [`SinkError`]).
    #[error(transparent)]
    Sink(#[from] SinkError),
    /// A newer instance of the PE owns the file: this one is a left-over of a stopped PE.
    #[error("{}: a newer instance of the PE took the file over", .0.display())]
    Superseded(PathBuf),
    /// The blocking thread did not return (the call panicked).
    #[error("the file call did not complete: {0}")]
    Lost(String),
}

/// The owner of one visible file: the id of the instance that took it over last.
#[derive(Debug, Default)]
struct Fence {
    owner: Mutex<u64>,
}

/// The fences of the files open in this process, by visible path.
static FENCES: LazyLock<Mutex<HashMap<PathBuf, Weak<Fence>>>> = LazyLock::new(Default::default);

/// Instance ids; 0 is nobody.
static NEXT_INSTANCE: AtomicU64 = AtomicU64::new(1);

/// The fence of `path`, shared with every other open instance of it.
fn fence_of(path: &Path) -> Arc<Fence> {
    let mut fences = FENCES.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(f) = fences.get(path).and_then(Weak::upgrade) {
        return f;
    }
    fences.retain(|_, f| f.strong_count() > 0);
    let f = Arc::new(Fence::default());
    fences.insert(path.to_path_buf(), Arc::downgrade(&f));
    f
}

/// A [`FileSink`] whose calls run on blocking threads: the same calls, async.
#[derive(Debug)]
pub struct BlockingFileSink {
    sink: Arc<Mutex<FileSink>>,
    fence: Arc<Fence>,
    /// This instance's id.
    id: u64,
    /// Whether this instance made a call (and so owned the file at some point).
    claimed: bool,
}

impl BlockingFileSink {
    /// [`FileSink::open`], on a blocking thread.
    pub async fn open(path: String, index: u32, parallelism: u32) -> Result<Self, FileCallError> {
        let sink = tokio::task::spawn_blocking(move || FileSink::open(&path, index, parallelism))
            .await
            .map_err(|e| FileCallError::Lost(e.to_string()))??;
        Ok(Self {
            fence: fence_of(sink.path()),
            sink: Arc::new(Mutex::new(sink)),
            id: NEXT_INSTANCE.fetch_add(1, Ordering::Relaxed),
            claimed: false,
        })
    }

    /// [`FileSink::start_fresh`].
    pub async fn start_fresh(&mut self) -> Result<(), FileCallError> {
        self.call(FileSink::start_fresh).await
    }

    /// [`FileSink::restore`].
    pub async fn restore(&mut self, bytes: bytes::Bytes) -> Result<(), FileCallError> {
        self.call(move |s| s.restore(&bytes)).await
    }

    /// [`FileSink::write`]; the batch's buffers are shared, not copied.
    pub async fn write(&mut self, batch: &Batch) -> Result<u64, FileCallError> {
        let batch = batch.clone();
        self.call(move |s| s.write(&batch)).await
    }

    /// [`FileSink::snapshot`].
    pub async fn snapshot(&mut self, id: u64) -> Result<Vec<u8>, FileCallError> {
        self.call(move |s| s.snapshot(id)).await
    }

    /// [`FileSink::commit`].
    pub async fn commit(&mut self, upto: u64) -> Result<(), FileCallError> {
        self.call(move |s| s.commit(upto)).await
    }

    /// [`FileSink::finish`].
    pub async fn finish(&mut self) -> Result<(), FileCallError> {
        self.call(FileSink::finish).await
    }

    /// Runs `f` on a blocking thread, under the fence; the first call takes the file over.
    async fn call<T, E>(
        &mut self,
        f: impl FnOnce(&mut FileSink) -> Result<T, E> + Send + 'static,
    ) -> Result<T, FileCallError>
    where
        T: Send + 'static,
        E: Into<FileCallError> + Send + 'static,
    {
        let takes_over = !self.claimed;
        self.claimed = true;
        let (sink, fence, id) = (self.sink.clone(), self.fence.clone(), self.id);
        tokio::task::spawn_blocking(move || {
            let mut owner = fence.owner.lock().unwrap_or_else(PoisonError::into_inner);
            let mut sink = sink.lock().unwrap_or_else(PoisonError::into_inner);
            if takes_over {
                *owner = id;
            } else if *owner != id {
                return Err(FileCallError::Superseded(sink.path().to_path_buf()));
            }
            f(&mut sink).map_err(Into::into)
        })
        .await
        .map_err(|e| FileCallError::Lost(e.to_string()))?
    }
}

#[cfg(test)]
mod tests;
