//! Framed mode: `u32` little-endian length, then the batch in the row layout
//! ([`Batch::encode_rows`]); one answer frame per request frame.

use super::error::Failure;
use tokio::io::{AsyncRead, AsyncReadExt};
use weir_common::record::Batch;

/// Default cap on an answer frame (the length prefix is checked before allocating).
pub const MAX_FRAME_BYTES: usize = 16 << 20;

/// Appends the request frame for `batch` to `out`; `None` when the batch is too large
/// for the length prefix.
pub(super) fn encode(batch: &Batch, out: &mut Vec<u8>) -> Option<()> {
    let at = out.len();
    out.extend_from_slice(&[0; 4]);
    batch.encode_rows(out);
    let len = u32::try_from(out.len() - at - 4).ok();
    let Some(len) = len else {
        out.truncate(at);
        return None;
    };
    out[at..at + 4].copy_from_slice(&len.to_le_bytes());
    Some(())
}

/// Reads one answer frame of at most `max` bytes and checks it is a batch.
pub(super) async fn read_answer<R: AsyncRead + Unpin>(
    r: &mut R,
    max: usize,
) -> Result<Batch, Failure> {
    let mut prefix = [0u8; 4];
    read_exact(r, &mut prefix).await?;
    let len = u32::from_le_bytes(prefix);
    if u64::from(len) > max as u64 {
        return Err(Failure::FrameTooLarge {
            len: u64::from(len),
            max,
        });
    }
    let mut body = vec![0u8; len as usize];
    read_exact(r, &mut body).await?;
    Batch::from_rows(&body).map_err(Failure::BadBatch)
}

async fn read_exact<R: AsyncRead + Unpin>(r: &mut R, buf: &mut [u8]) -> Result<(), Failure> {
    match r.read_exact(buf).await {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Err(Failure::MissingFrame),
        Err(e) => Err(Failure::Read(e)),
    }
}
