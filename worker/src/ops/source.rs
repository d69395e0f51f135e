//! `source.file` and `source.tcp`: decoding lines into records, and reading a file.
//!
//! A source's records are numbered `seq = 0, 1, 2, ...` in the order they are decoded;
//! lines that do not decode are counted and skipped without taking a number, so the
//! seqs a verify sink sees are gapless and a restart resumes by skipping `seq` records.

#[cfg(test)]
mod tests;

use std::fs::File;
use std::io::{self, BufRead, BufReader, Seek, SeekFrom};
use std::path::PathBuf;
use weir_common::record::{Batch, BatchBuilder, BatchError, Value};
use weir_common::spec::LineFormat;

/// Lines longer than this are skipped as malformed instead of buffered whole.
pub const MAX_LINE_BYTES: usize = 8 << 20;

/// Why a line is not a record.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LineError {
    /// Not valid JSON.
    #[error("not JSON: {0}")]
    Json(String),
    /// Valid JSON, but not an object.
    #[error("expected a JSON object, got {0}")]
    NotObject(&'static str),
    /// A field name, key or value does not fit the record format.
    #[error("record does not fit: {0}")]
    Record(#[from] BatchError),
    /// The line is not UTF-8.
    #[error("line is not UTF-8")]
    NotUtf8,
    /// The line exceeds [`MAX_LINE_BYTES`].
    #[error("line of {0} bytes or more exceeds the limit")]
    TooLong(usize),
}

fn json_kind(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

/// Decodes `line` (without its line ending) into one record of `b` with origin
/// `(source, seq)`. Json: the object's entries become fields in order; the key is the
/// text of field `key` (as `key_by` would make it) or empty; the event time is field
/// `ts` when it is an integer, else `now_ms`. Raw: one field `line`. On error `b` is
/// unchanged.
pub fn push_line(
    b: &mut BatchBuilder,
    line: &str,
    format: LineFormat,
    source: u32,
    seq: u64,
    now_ms: i64,
) -> Result<(), LineError> {
    match format {
        LineFormat::Raw => {
            let v = Value::Str(line.to_string());
            b.push(source, seq, now_ms, b"", [("line", &v)])?;
        }
        LineFormat::Json => {
            let json: serde_json::Value =
                serde_json::from_str(line).map_err(|e| LineError::Json(e.to_string()))?;
            let serde_json::Value::Object(map) = json else {
                return Err(LineError::NotObject(json_kind(&json)));
            };
            let fields: Vec<(&str, Value)> = map
                .iter()
                .map(|(k, v)| (k.as_str(), Value::from_json(v)))
                .collect();
            let get = |name: &str| fields.iter().find(|(n, _)| *n == name).map(|(_, v)| v);
            let key = get("key").map(Value::to_string).unwrap_or_default();
            let t = match get("ts") {
                Some(Value::I64(t)) => *t,
                _ => now_ms,
            };
            b.push(
                source,
                seq,
                t,
                key.as_bytes(),
                fields.iter().map(|(n, v)| (*n, v)),
            )?;
        }
    }
    Ok(())
}

/// Reads a file of lines into batches (`source.file`). Blocking I/O.
///
/// A parallel `source.file` splits the file into equal byte ranges, one per PE; a PE
/// reads the lines that *start* in its range (the one straddling its start belongs to
/// the PE before it), so every line is read by exactly one PE, whatever the split.
#[derive(Debug)]
pub struct FileSource {
    path: PathBuf,
    reader: BufReader<File>,
    format: LineFormat,
    source: u32,
    /// The seq the next record gets: records produced so far. Checkpoints record it;
    /// move it with [`FileSource::skip_to`], which moves the file position with it.
    pub next_seq: u64,
    bad_lines: u64,
    line: Vec<u8>,
    /// This PE's byte range: lines starting at or after `start` and before `end`.
    start: u64,
    end: u64,
    /// File position of the next byte `read_line` looks at.
    offset: u64,
}

impl FileSource {
    /// Opens `path`, decoding lines as `format`, emitting as source ordinal `source`.
    pub fn open(path: &str, format: LineFormat, source: u32) -> io::Result<Self> {
        Self::open_split(path, format, source, 0, 1)
    }

    /// Opens PE `index`'s part of `path` when `parallelism` PEs read it.
    pub fn open_split(
        path: &str,
        format: LineFormat,
        source: u32,
        index: u32,
        parallelism: u32,
    ) -> io::Result<Self> {
        let path = PathBuf::from(path);
        let file = File::open(&path)?;
        let size = file.metadata()?.len();
        let (index, parallelism) = (u64::from(index), u64::from(parallelism.max(1)));
        let start = size * index / parallelism;
        // The last range runs to the end, wherever that is when it gets there.
        let end = if index + 1 >= parallelism {
            u64::MAX
        } else {
            size * (index + 1) / parallelism
        };
        let mut src = Self {
            path,
            reader: BufReader::new(file),
            format,
            source,
            next_seq: 0,
            bad_lines: 0,
            line: Vec::new(),
            start,
            end,
            offset: 0,
        };
        src.rewind()?;
        Ok(src)
    }

    /// Back to the first line of this PE's range.
    fn rewind(&mut self) -> io::Result<()> {
        let mut file = File::open(&self.path)?;
        self.next_seq = 0;
        self.bad_lines = 0;
        if self.start == 0 {
            self.reader = BufReader::new(file);
            self.offset = 0;
            return Ok(());
        }
        // From the byte before the range: the rest of that line (just its `\n` when a
        // line starts exactly at `start`) belongs to the PE before.
        file.seek(SeekFrom::Start(self.start - 1))?;
        self.reader = BufReader::new(file);
        self.offset = self.start - 1;
        let end = std::mem::replace(&mut self.end, u64::MAX);
        let skipped = self.read_line();
        self.end = end;
        skipped.map(|_| ())
    }

    /// Lines skipped as malformed so far (each also logged at debug level).
    pub fn bad_lines(&self) -> u64 {
        self.bad_lines
    }

    /// The next batch of at most `max` (at least 1) records, `None` at end of file.
    /// Lines in JSON format that are blank are ignored (neither records nor bad).
    pub fn next_batch(&mut self, max: usize, now_ms: i64) -> io::Result<Option<Batch>> {
        let mut b = BatchBuilder::default();
        while b.len() < max.max(1) && self.decode_next(&mut b, now_ms)? {}
        Ok((!b.is_empty()).then(|| b.finish()))
    }

    /// Positions the source so the next record has seq `seq` (a restart resuming from
    /// a checkpoint): decodes and drops records up to it, from the start of the file
    /// if it is behind. Stops early at end of file (`next_seq` then tells where).
    pub fn skip_to(&mut self, seq: u64) -> io::Result<()> {
        if seq < self.next_seq {
            self.rewind()?;
        }
        let mut scratch = BatchBuilder::with_capacity(4096);
        while self.next_seq < seq && self.decode_next(&mut scratch, 0)? {
            if scratch.size() > 1 << 20 {
                scratch.finish();
            }
        }
        Ok(())
    }

    /// Reads lines until one becomes a record in `b` (true) or the file ends (false).
    fn decode_next(&mut self, b: &mut BatchBuilder, now_ms: i64) -> io::Result<bool> {
        loop {
            let Some(result) = self.read_line()? else {
                return Ok(false);
            };
            let decoded = result.and_then(|()| {
                let line = std::str::from_utf8(&self.line).map_err(|_| LineError::NotUtf8)?;
                if self.format == LineFormat::Json && line.trim().is_empty() {
                    return Ok(false);
                }
                push_line(b, line, self.format, self.source, self.next_seq, now_ms).map(|()| true)
            });
            match decoded {
                Ok(false) => {}
                Ok(true) => {
                    self.next_seq += 1;
                    return Ok(true);
                }
                Err(e) => {
                    self.bad_lines += 1;
                    tracing::debug!(path = %self.path.display(), error = %e, "source.file: line skipped");
                }
            }
        }
    }

    /// Reads the next line into `self.line` without its `\n` or `\r\n`. `None` at end of
    /// file; `Some(Err)` for a line over the limit (read past, not kept).
    fn read_line(&mut self) -> io::Result<Option<Result<(), LineError>>> {
        self.line.clear();
        if self.offset >= self.end {
            // The next line starts in the next PE's range.
            return Ok(None);
        }
        let mut len = 0usize;
        let mut any = false;
        loop {
            let buf = match self.reader.fill_buf() {
                Ok(buf) => buf,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            if buf.is_empty() {
                break;
            }
            any = true;
            let (part, done) = match buf.iter().position(|c| *c == b'\n') {
                Some(i) => (&buf[..i], true),
                None => (buf, false),
            };
            len = len.saturating_add(part.len());
            if len <= MAX_LINE_BYTES {
                self.line.extend_from_slice(part);
            }
            let used = part.len() + usize::from(done);
            self.reader.consume(used);
            self.offset += used as u64;
            if done {
                break;
            }
        }
        if !any {
            return Ok(None);
        }
        if len > MAX_LINE_BYTES {
            self.line.clear();
            return Ok(Some(Err(LineError::TooLong(MAX_LINE_BYTES + 1))));
        }
        if self.line.last() == Some(&b'\r') {
            self.line.pop();
        }
        Ok(Some(Ok(())))
    }
}
