//! Lines mode: one JSON object per record out, one JSON object (or a drop) per record
//! back. The answer only carries fields; the origin (source, seq), event time and key
//! come from the input record, so identity survives scripts that know nothing of it.

use super::error::Failure;
use super::readline::{read_line_capped, trim_newline, LineEnd};
use tokio::io::AsyncBufRead;
use weir_common::record::{Batch, BatchBuilder, Value};

/// Output field that, when present, replaces the record's key and is removed.
pub const KEY_FIELD: &str = "_key";

/// Appends the request for `batch` to `out`: the fields of each record as one JSON
/// object (in field order) and a newline.
pub(super) fn encode(batch: &Batch, out: &mut Vec<u8>) -> Result<(), serde_json::Error> {
    for r in batch.iter() {
        out.push(b'{');
        for (i, (name, value)) in r.fields().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            serde_json::to_writer(&mut *out, name)?;
            out.push(b':');
            serde_json::to_writer(&mut *out, &value.to_json())?;
        }
        out.extend_from_slice(b"}\n");
    }
    Ok(())
}

/// Reads one answer line per record of `input` and builds the output batch.
pub(super) async fn read_answer<R: AsyncBufRead + Unpin>(
    r: &mut R,
    input: &Batch,
    max_line: usize,
) -> Result<Batch, Failure> {
    let expected = input.len();
    let mut out = BatchBuilder::with_capacity(input.encoded_len());
    let mut line = Vec::new();
    for (i, rec) in input.iter().enumerate() {
        line.clear();
        match read_line_capped(r, &mut line, max_line)
            .await
            .map_err(Failure::Read)?
        {
            LineEnd::Newline => {}
            // A last line without its newline means the program stopped mid-answer.
            LineEnd::Eof => return Err(Failure::MissingLines { got: i, expected }),
            LineEnd::Cut => {
                return Err(Failure::LineTooLong {
                    line: i + 1,
                    max: max_line,
                })
            }
        }
        let Some(answer) = parse_line(trim_newline(&line), i + 1)? else {
            continue;
        };
        let mut key = None;
        let mut fields = Vec::with_capacity(answer.len());
        for (name, value) in &answer {
            if name == KEY_FIELD {
                key = Some(key_text(value));
            } else {
                fields.push((name.as_str(), Value::from_json(value)));
            }
        }
        let key = key.as_deref().map_or(rec.key, str::as_bytes);
        out.push(
            rec.source,
            rec.seq,
            rec.event_time_ms,
            key,
            fields.iter().map(|(n, v)| (*n, v)),
        )
        .map_err(|error| Failure::BadRecord { line: i + 1, error })?;
    }
    Ok(out.finish())
}

/// One answer line: `Some(fields)` for an object, `None` for a drop (empty or `null`).
fn parse_line(
    line: &[u8],
    number: usize,
) -> Result<Option<serde_json::Map<String, serde_json::Value>>, Failure> {
    if line.trim_ascii().is_empty() {
        return Ok(None);
    }
    match serde_json::from_slice(line) {
        Ok(serde_json::Value::Object(m)) => Ok(Some(m)),
        Ok(serde_json::Value::Null) => Ok(None),
        Ok(_) => Err(Failure::NotObject { line: number }),
        Err(e) => Err(Failure::BadJson {
            line: number,
            error: e.to_string(),
        }),
    }
}

/// The key a `_key` value stands for: its text, as `key_by` renders a field (a string
/// as is, a number as written), with `null` meaning the empty key.
fn key_text(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::Null => String::new(),
        other => Value::from_json(other).to_string(),
    }
}
