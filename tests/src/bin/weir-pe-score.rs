//! `weir-pe-score`: an example PE program speaking the framed protocol
//! (docs/pe-protocol.md), packaged as the `weir-pe-score` container images by
//! `deploy/build-pe-images.sh`.
//!
//! For every record it keeps the origin, key, event time and fields, and adds
//! `score` (an integer derived from `id`, or from `value` when there is no `id`) and
//! `model` (which scoring rule answered). The rule is chosen by `WEIR_SCORE_MODEL`
//! (`v1`: `id * 7 mod 1000`; `v2`: `id * 11 mod 1000`), which each image tag sets,
//! so an image upgrade is visible in the output.
//!
//! `WEIR_SCORE_EXIT=N` makes it exit with status N before reading anything (the
//! `broken` tag: an image that fails at start).
//!
//! `WEIR_SCORE_PROBE=HOST:PORT[,HOST:PORT...]` makes it try a TCP connection to each
//! address first (1 s each) and exit with status 7 if any answers: the isolation
//! tests' probe (a container that must not reach the host starts normally).
//!
//! It answers an empty batch with an empty batch (the start-up handshake) and exits
//! at the end of its input.

use std::io::{self, BufWriter, Read, Write};
use std::process::ExitCode;
use weir_common::record::{Batch, BatchBuilder, Value};

/// Largest request frame accepted (the worker's own cap on answers).
const MAX_FRAME: usize = 16 << 20;

fn main() -> ExitCode {
    if let Some(code) = std::env::var("WEIR_SCORE_EXIT")
        .ok()
        .and_then(|c| c.parse::<u8>().ok())
    {
        eprintln!("weir-pe-score: told to exit with status {code}");
        return ExitCode::from(code);
    }
    if let Ok(targets) = std::env::var("WEIR_SCORE_PROBE") {
        for target in targets.split(',') {
            if reachable(target) {
                eprintln!("weir-pe-score: probe {target}: reachable");
                return ExitCode::from(7);
            }
            eprintln!("weir-pe-score: probe {target}: unreachable");
        }
    }
    let model = std::env::var("WEIR_SCORE_MODEL").unwrap_or_else(|_| "v1".into());
    let factor = if model == "v2" { 11 } else { 7 };
    let mut input = io::stdin().lock();
    let mut output = BufWriter::with_capacity(1 << 20, io::stdout().lock());
    match serve(&mut input, &mut output, &model, factor) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("weir-pe-score: {e}");
            ExitCode::from(1)
        }
    }
}

/// Whether a TCP connection to `target` (`HOST:PORT`) opens within a second.
fn reachable(target: &str) -> bool {
    use std::net::ToSocketAddrs;
    let Ok(addrs) = target.to_socket_addrs() else {
        return false;
    };
    addrs.into_iter().any(|a| {
        std::net::TcpStream::connect_timeout(&a, std::time::Duration::from_secs(1)).is_ok()
    })
}

/// Answers frames until the input ends.
fn serve(
    input: &mut impl Read,
    output: &mut impl Write,
    model: &str,
    factor: i64,
) -> io::Result<()> {
    let mut body = Vec::new();
    let mut answer = Vec::new();
    loop {
        let mut prefix = [0u8; 4];
        match input.read_exact(&mut prefix) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(()),
            Err(e) => return Err(e),
        }
        let len = u32::from_le_bytes(prefix) as usize;
        if len > MAX_FRAME {
            return Err(io::Error::other(format!(
                "frame of {len} bytes is too large"
            )));
        }
        body.resize(len, 0);
        input.read_exact(&mut body)?;
        let batch = Batch::from_rows(&body).map_err(io::Error::other)?;
        let scored = score(&batch, model, factor).map_err(io::Error::other)?;
        answer.clear();
        answer.extend_from_slice(&[0; 4]);
        scored.encode_rows(&mut answer);
        let n = u32::try_from(answer.len() - 4).map_err(io::Error::other)?;
        answer[..4].copy_from_slice(&n.to_le_bytes());
        output.write_all(&answer)?;
        output.flush()?;
    }
}

/// Every record of `batch` with `score` and `model` added.
fn score(
    batch: &Batch,
    model: &str,
    factor: i64,
) -> Result<Batch, weir_common::record::BatchError> {
    let mut out = BatchBuilder::default();
    let model = Value::Str(model.to_string());
    for r in batch.iter() {
        let mut fields: Vec<(&str, Value)> = r
            .fields()
            .filter(|(name, _)| *name != "score" && *name != "model")
            .collect();
        let basis = r
            .field("id")
            .or_else(|| r.field("value"))
            .and_then(|v| match v {
                Value::I64(i) => Some(i),
                Value::F64(f) => Some(f as i64),
                _ => None,
            })
            .unwrap_or(0);
        fields.push((
            "score",
            Value::I64(basis.wrapping_mul(factor).rem_euclid(1000)),
        ));
        fields.push(("model", model.clone()));
        out.push(
            r.source,
            r.seq,
            r.event_time_ms,
            r.key,
            fields.iter().map(|(n, v)| (*n, v)),
        )?;
    }
    Ok(out.finish())
}
