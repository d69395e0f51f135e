//! Reading frames off a socket: never trusting a length, never allocating what a
//! peer announces before it is checked (`Frame::decode` refuses absurd lengths).

use super::LinkError;
use bytes::{BufMut, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use weir_common::frame::Frame;

/// Room a reader makes at a time: several frames of 1,024 records.
const READ_AHEAD: usize = 1 << 20;

/// Reads whole frames from a byte stream.
pub struct FrameReader<R> {
    rd: R,
    buf: BytesMut,
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    /// Wraps a reader.
    pub fn new(rd: R) -> Self {
        Self {
            rd,
            buf: BytesMut::with_capacity(64 << 10),
        }
    }

    /// The next frame; `Err(Closed)` at a clean end of stream, `Err(Truncated)` when
    /// the peer left in the middle of a frame.
    pub async fn next(&mut self) -> Result<Frame, LinkError> {
        loop {
            if let Some(f) = Frame::decode(&mut self.buf)? {
                return Ok(f);
            }
            // Room for the rest of the frame under way, and for whole frames after it:
            // frames are sliced out of this buffer, not copied, so a frame that does
            // not fit would be copied into a new one when it grows. `decode` above has
            // already refused a length over the limit.
            let frame = if self.buf.len() >= 4 {
                let len = u32::from_le_bytes([self.buf[0], self.buf[1], self.buf[2], self.buf[3]]);
                (len as usize).min(weir_common::frame::MAX_FRAME) + 4
            } else {
                0
            };
            let want = frame.saturating_sub(self.buf.len()).max(64 << 10);
            if self.buf.capacity() - self.buf.len() < want {
                self.buf.reserve(want.max(READ_AHEAD));
            }
            if self.rd.read_buf(&mut self.buf).await? == 0 {
                return Err(if self.buf.is_empty() {
                    LinkError::Closed
                } else {
                    LinkError::Truncated(self.buf.len())
                });
            }
        }
    }
}

/// Encodes frames into a reused buffer and writes them out.
pub struct FrameWriter<W> {
    wr: W,
    buf: BytesMut,
}

impl<W: AsyncWrite + Unpin> FrameWriter<W> {
    /// Wraps a writer.
    pub fn new(wr: W) -> Self {
        Self {
            wr,
            buf: BytesMut::with_capacity(64 << 10),
        }
    }

    /// Queues a frame; it is sent by the next [`Self::flush`] (or sooner when the
    /// buffer grows past 256 KiB, so one write carries many small frames).
    pub async fn push(&mut self, f: &Frame) -> Result<(), LinkError> {
        f.encode(&mut self.buf);
        if self.buf.len() >= 256 << 10 {
            self.flush().await?;
        }
        Ok(())
    }

    /// Writes everything queued.
    pub async fn flush(&mut self) -> Result<(), LinkError> {
        if !self.buf.is_empty() {
            self.wr.write_all(&self.buf).await?;
            self.buf.clear();
        }
        self.wr.flush().await?;
        Ok(())
    }

    /// Raw bytes, for tests that send garbage.
    pub async fn raw(&mut self, bytes: &[u8]) -> Result<(), LinkError> {
        self.buf.put_slice(bytes);
        self.flush().await
    }
}
