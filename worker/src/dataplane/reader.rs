//! Reading frames off a socket: never trusting a length, never allocating what a
//! peer announces before it is checked (`Frame::decode` refuses absurd lengths).

use super::LinkError;
use bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use weir_common::frame::Frame;

/// Room a reader of large frames makes at a time: several frames of 4,096 records.
const READ_AHEAD: usize = 4 << 20;

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
            // Links that carry large frames get room for several; the others (acks,
            // credits) keep a small buffer.
            let rest = frame.saturating_sub(self.buf.len());
            let want = rest.max(64 << 10);
            if self.buf.capacity() - self.buf.len() < want {
                let ahead = if frame > 64 << 10 { READ_AHEAD } else { 0 };
                self.buf.reserve(want.max(ahead));
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

/// Encodes frames and writes them out, many per write. The large buffers of a data
/// frame's batch are not copied: they are queued as they are, between the small
/// pieces (frame headers, column names, small frames), and go out in vectored writes.
pub struct FrameWriter<W> {
    wr: W,
    /// Small pieces not yet queued.
    head: BytesMut,
    queue: Pieces,
}

/// A batch buffer smaller than this is copied with the headers around it: a piece
/// of its own would cost more than the copy.
const COPY_BELOW: usize = 4 << 10;

impl<W: AsyncWrite + Unpin> FrameWriter<W> {
    /// Wraps a writer.
    pub fn new(wr: W) -> Self {
        Self {
            wr,
            head: BytesMut::with_capacity(16 << 10),
            queue: Pieces::default(),
        }
    }

    /// Queues a frame; it is sent by the next [`Self::flush`] (or sooner when 256 KiB
    /// are queued, so one write carries many small frames).
    pub async fn push(&mut self, f: &Frame) -> Result<(), LinkError> {
        let queue = &mut self.queue;
        f.encode_parts(&mut self.head, |head, b| {
            if b.len() < COPY_BELOW {
                head.put_slice(b);
            } else {
                queue.push(head.split().freeze());
                queue.push(b.clone());
            }
        });
        if self.queue.remaining() + self.head.len() >= 256 << 10 {
            self.flush().await?;
        }
        Ok(())
    }

    /// Writes everything queued.
    pub async fn flush(&mut self) -> Result<(), LinkError> {
        self.queue.push(self.head.split().freeze());
        if self.queue.has_remaining() {
            self.wr.write_all_buf(&mut self.queue).await?;
        }
        self.wr.flush().await?;
        Ok(())
    }

    /// Raw bytes, for tests that send garbage.
    pub async fn raw(&mut self, bytes: &[u8]) -> Result<(), LinkError> {
        self.head.put_slice(bytes);
        self.flush().await
    }
}

/// Buffers queued for writing, in order.
#[derive(Default)]
struct Pieces {
    parts: std::collections::VecDeque<Bytes>,
    remaining: usize,
}

impl Pieces {
    fn push(&mut self, b: Bytes) {
        if !b.is_empty() {
            self.remaining += b.len();
            self.parts.push_back(b);
        }
    }
}

impl Buf for Pieces {
    fn remaining(&self) -> usize {
        self.remaining
    }

    fn chunk(&self) -> &[u8] {
        self.parts.front().map_or(&[], |b| &b[..])
    }

    fn chunks_vectored<'a>(&'a self, dst: &mut [std::io::IoSlice<'a>]) -> usize {
        let mut n = 0;
        for (slot, b) in dst.iter_mut().zip(&self.parts) {
            *slot = std::io::IoSlice::new(b);
            n += 1;
        }
        n
    }

    fn advance(&mut self, mut cnt: usize) {
        self.remaining -= cnt;
        while cnt > 0 {
            let Some(front) = self.parts.front_mut() else {
                return;
            };
            if cnt < front.len() {
                front.advance(cnt);
                return;
            }
            cnt -= front.len();
            self.parts.pop_front();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWrite;
    use weir_common::record::{BatchBuilder, Value};

    #[tokio::test]
    async fn frames_written_in_pieces_read_back_whole() {
        // Batches with buffers above and below the copy threshold, between small
        // frames: what the reader sees is exactly what was pushed.
        let mut frames = Vec::new();
        for (i, n) in [3usize, 5_000, 0, 20_000].into_iter().enumerate() {
            let mut b = BatchBuilder::default();
            for r in 0..n {
                let v = Value::Bytes(vec![r as u8; r % 7]);
                b.push(1, r as u64, 0, b"key", [("v", &v)]).unwrap();
            }
            frames.push(Frame::Data {
                channel: 7,
                seq: i as u64 + 1,
                batch: b.finish(),
            });
            frames.push(Frame::Ack {
                channel: 7,
                seq: i as u64,
            });
        }
        // A real socket: it takes vectored writes, which an in-memory pipe does not.
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let a = tokio::net::TcpStream::connect(l.local_addr().unwrap())
            .await
            .unwrap();
        assert!(a.is_write_vectored());
        let (b, _) = l.accept().await.unwrap();
        let sent = frames.clone();
        let writer = tokio::spawn(async move {
            let mut w = FrameWriter::new(a);
            for f in &sent {
                w.push(f).await.unwrap();
            }
            w.flush().await.unwrap();
        });
        let mut r = FrameReader::new(b);
        for want in &frames {
            assert_eq!(&r.next().await.unwrap(), want);
        }
        writer.await.unwrap();
    }
}
