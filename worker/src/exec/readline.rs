//! Reading newline-terminated lines with a bound on memory.

use tokio::io::{AsyncBufRead, AsyncBufReadExt};

/// How a call to [`read_line_capped`] ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum LineEnd {
    /// A whole line, newline included, is in the buffer.
    Newline,
    /// The stream ended; the buffer holds what came after the last newline (maybe
    /// nothing).
    Eof,
    /// The line was longer than the cap: the buffer holds its first `max` bytes and
    /// the rest was consumed up to the newline (or the end of the stream).
    Cut,
}

/// Appends the next line (up to and including `\n`) to `buf`, keeping at most `max`
/// bytes of it, so that a program printing without newlines cannot exhaust memory.
pub(super) async fn read_line_capped<R: AsyncBufRead + Unpin>(
    r: &mut R,
    buf: &mut Vec<u8>,
    max: usize,
) -> std::io::Result<LineEnd> {
    let start = buf.len();
    let mut cut = false;
    loop {
        let avail = r.fill_buf().await?;
        if avail.is_empty() {
            return Ok(if cut { LineEnd::Cut } else { LineEnd::Eof });
        }
        let (chunk_len, done) = match avail.iter().position(|b| *b == b'\n') {
            Some(i) => (i + 1, true),
            None => (avail.len(), false),
        };
        let room = max.saturating_sub(buf.len() - start);
        if chunk_len > room {
            cut = true;
        }
        buf.extend_from_slice(&avail[..chunk_len.min(room)]);
        r.consume(chunk_len);
        if done {
            return Ok(if cut { LineEnd::Cut } else { LineEnd::Newline });
        }
    }
}

/// The line without its trailing `\n` / `\r\n`.
pub(super) fn trim_newline(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}
