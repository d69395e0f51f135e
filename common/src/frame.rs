//! The frames of a TCP link between two workers.
//!
//! One link carries many channels. Each frame is length-prefixed and names its
//! channel; data frames carry a batch and the sequence number that acknowledgements
//! and replay refer to. The decoder never trusts a length: an absurd length, an
//! unknown kind or a malformed batch is an error (the link is reset by its owner),
//! never a panic and never an allocation of the announced size.
//!
//! ```text
//! u32 length of the rest | u8 kind | u32 channel | body
//!   1 Open    u64 resume_after | u16 len + from PE | u16 len + to PE
//!   2 Data    u64 seq | batch (see crate::record)
//!   3 Barrier u64 seq | u64 barrier id
//!   4 Ack     u64 seq (processed through seq)
//!   5 Credit  u32 batches the producer may send beyond what it has sent
//!   6 End     u64 seq (no frame follows on this channel)
//! ```

use crate::record::{Batch, BatchError};
use bytes::{Buf, BufMut, Bytes, BytesMut};

/// Largest frame accepted (length prefix excluded).
pub const MAX_FRAME: usize = 16 << 20;

/// One frame.
#[derive(Clone, Debug, PartialEq)]
pub enum Frame {
    /// Producer -> consumer: binds `channel` on this link to a PE pair. On a reconnect
    /// the consumer answers with an `Ack` saying where to resume.
    Open {
        /// Channel id on this link.
        channel: u32,
        /// Producing PE.
        from_pe: String,
        /// Consuming PE.
        to_pe: String,
        /// The producer's last acknowledged sequence (it replays everything after).
        resume_after: u64,
    },
    /// A batch of records.
    Data {
        /// Channel id.
        channel: u32,
        /// Sequence of this frame on the channel.
        seq: u64,
        /// The records.
        batch: Batch,
    },
    /// A barrier (checkpoint or upgrade switch) in the channel's order.
    Barrier {
        /// Channel id.
        channel: u32,
        /// Sequence of this frame on the channel.
        seq: u64,
        /// Which barrier.
        barrier_id: u64,
    },
    /// Consumer -> producer: everything through `seq` is processed; the producer may
    /// drop it from its replay buffer.
    Ack {
        /// Channel id.
        channel: u32,
        /// Highest sequence processed.
        seq: u64,
    },
    /// Consumer -> producer: room for this many more data frames.
    Credit {
        /// Channel id.
        channel: u32,
        /// Additional batches allowed.
        credits: u32,
    },
    /// The channel ends after `seq`.
    End {
        /// Channel id.
        channel: u32,
        /// Last sequence sent.
        seq: u64,
    },
}

/// Why bytes on a link are not a frame.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// The length prefix is zero, too small for a header, or above [`MAX_FRAME`].
    #[error("bad frame length {0} (at most {MAX_FRAME})")]
    BadLength(usize),
    /// The kind byte is unknown.
    #[error("unknown frame kind {0}")]
    UnknownKind(u8),
    /// The body is shorter or longer than its kind requires.
    #[error("malformed {0} frame")]
    Malformed(&'static str),
    /// A PE name is not UTF-8.
    #[error("PE name is not UTF-8")]
    Utf8,
    /// The batch inside a data frame is malformed.
    #[error("bad batch: {0}")]
    Batch(#[from] BatchError),
}

impl Frame {
    /// The channel the frame belongs to.
    pub fn channel(&self) -> u32 {
        match self {
            Frame::Open { channel, .. }
            | Frame::Data { channel, .. }
            | Frame::Barrier { channel, .. }
            | Frame::Ack { channel, .. }
            | Frame::Credit { channel, .. }
            | Frame::End { channel, .. } => *channel,
        }
    }

    /// The encoded frame in pieces (see [`Batch::encode_parts`]): a data frame's
    /// batch buffers are handed to `part`, everything else is written into `head`.
    pub fn encode_parts(&self, head: &mut BytesMut, part: impl FnMut(&mut BytesMut, &Bytes)) {
        match self {
            Frame::Data {
                channel,
                seq,
                batch,
            } => {
                // Kind, channel, seq, then the batch; the decoder caps the whole at
                // MAX_FRAME, and batches are built well below it.
                head.put_u32_le((13 + batch.encoded_len()) as u32);
                head.put_u8(2);
                head.put_u32_le(*channel);
                head.put_u64_le(*seq);
                batch.encode_parts(head, part);
            }
            other => other.encode(head),
        }
    }

    /// Appends the encoded frame to `out`.
    pub fn encode(&self, out: &mut BytesMut) {
        let start = out.len();
        out.put_u32_le(0);
        let (kind, channel) = match self {
            Frame::Open { channel, .. } => (1, channel),
            Frame::Data { channel, .. } => (2, channel),
            Frame::Barrier { channel, .. } => (3, channel),
            Frame::Ack { channel, .. } => (4, channel),
            Frame::Credit { channel, .. } => (5, channel),
            Frame::End { channel, .. } => (6, channel),
        };
        out.put_u8(kind);
        out.put_u32_le(*channel);
        match self {
            Frame::Open {
                from_pe,
                to_pe,
                resume_after,
                ..
            } => {
                out.put_u64_le(*resume_after);
                for s in [from_pe, to_pe] {
                    let b = &s.as_bytes()[..s.len().min(u16::MAX as usize)];
                    out.put_u16_le(b.len() as u16);
                    out.put_slice(b);
                }
            }
            Frame::Data { seq, batch, .. } => {
                out.put_u64_le(*seq);
                batch.encode(out);
            }
            Frame::Barrier {
                seq, barrier_id, ..
            } => {
                out.put_u64_le(*seq);
                out.put_u64_le(*barrier_id);
            }
            Frame::Ack { seq, .. } | Frame::End { seq, .. } => out.put_u64_le(*seq),
            Frame::Credit { credits, .. } => out.put_u32_le(*credits),
        }
        let len = (out.len() - start - 4) as u32;
        out[start..start + 4].copy_from_slice(&len.to_le_bytes());
    }

    /// Takes one frame off the front of `buf` if a whole one is there. `Ok(None)`: wait
    /// for more bytes. An error means the link carries garbage and must be reset.
    pub fn decode(buf: &mut BytesMut) -> Result<Option<Frame>, FrameError> {
        if buf.len() < 4 {
            return Ok(None);
        }
        let len = u32::from_le_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
        if !(5..=MAX_FRAME).contains(&len) {
            return Err(FrameError::BadLength(len));
        }
        if buf.len() < 4 + len {
            return Ok(None);
        }
        buf.advance(4);
        let mut body: Bytes = buf.split_to(len).freeze();
        let kind = body.get_u8();
        let channel = body.get_u32_le();
        let need = |body: &Bytes, n: usize, what| {
            if body.len() == n {
                Ok(())
            } else {
                Err(FrameError::Malformed(what))
            }
        };
        let frame = match kind {
            1 => {
                if body.len() < 8 {
                    return Err(FrameError::Malformed("open"));
                }
                let resume_after = body.get_u64_le();
                let mut names = [String::new(), String::new()];
                for n in &mut names {
                    if body.len() < 2 {
                        return Err(FrameError::Malformed("open"));
                    }
                    let l = body.get_u16_le() as usize;
                    if body.len() < l {
                        return Err(FrameError::Malformed("open"));
                    }
                    *n = String::from_utf8(body.split_to(l).to_vec())
                        .map_err(|_| FrameError::Utf8)?;
                }
                need(&body, 0, "open")?;
                let [from_pe, to_pe] = names;
                Frame::Open {
                    channel,
                    from_pe,
                    to_pe,
                    resume_after,
                }
            }
            2 => {
                if body.len() < 8 {
                    return Err(FrameError::Malformed("data"));
                }
                let seq = body.get_u64_le();
                Frame::Data {
                    channel,
                    seq,
                    batch: Batch::from_bytes(body)?,
                }
            }
            3 => {
                need(&body, 16, "barrier")?;
                Frame::Barrier {
                    channel,
                    seq: body.get_u64_le(),
                    barrier_id: body.get_u64_le(),
                }
            }
            4 => {
                need(&body, 8, "ack")?;
                Frame::Ack {
                    channel,
                    seq: body.get_u64_le(),
                }
            }
            5 => {
                need(&body, 4, "credit")?;
                Frame::Credit {
                    channel,
                    credits: body.get_u32_le(),
                }
            }
            6 => {
                need(&body, 8, "end")?;
                Frame::End {
                    channel,
                    seq: body.get_u64_le(),
                }
            }
            k => return Err(FrameError::UnknownKind(k)),
        };
        Ok(Some(frame))
    }
}
