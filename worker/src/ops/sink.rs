//! `sink.file`: records as JSON lines in a file.
//!
//! For now lines are appended and flushed at the end of every batch, which is
//! at-least-once: after a failure the lines of a replayed batch appear again. Making
//! them visible only at checkpoints (two-phase commit: write to a pending part, publish
//! it when the checkpoint completes, truncate uncommitted bytes on restore) is a later
//! issue; this type is the part that stays: naming the file and writing the lines.

use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use weir_common::record::{Batch, RecordRef};

/// The record's fields as one JSON object, in field order, without a newline. The key,
/// event time and origin are not included: a sink writes the fields.
pub fn json_line(r: &RecordRef<'_>) -> String {
    // serde_json is built with `preserve_order`, so the object keeps the field order.
    let map: serde_json::Map<String, serde_json::Value> = r
        .fields()
        .map(|(n, v)| (n.to_string(), v.to_json()))
        .collect();
    serde_json::Value::Object(map).to_string()
}

/// The file PE `index` writes: with several PEs, `.{index}` goes before the extension
/// (`out.jsonl` -> `out.1.jsonl`, `out` -> `out.1`), so they never share a file.
pub fn indexed_path(path: &str, index: u32, parallelism: u32) -> PathBuf {
    let path = Path::new(path);
    if parallelism <= 1 {
        return path.to_path_buf();
    }
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let name = match path.extension() {
        Some(ext) => format!("{stem}.{index}.{}", ext.to_string_lossy()),
        None => format!("{stem}.{index}"),
    };
    path.with_file_name(name)
}

/// An open `sink.file` output. Blocking I/O: the runtime calls it off the async threads.
#[derive(Debug)]
pub struct FileSink {
    path: PathBuf,
    out: BufWriter<File>,
}

impl FileSink {
    /// Opens (creating it and its parent directories) the file of PE `index` of
    /// `parallelism` for appending.
    pub fn open(path: &str, index: u32, parallelism: u32) -> io::Result<Self> {
        let path = indexed_path(path, index, parallelism);
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        let file = OpenOptions::new().create(true).append(true).open(&path)?;
        Ok(Self {
            path,
            out: BufWriter::new(file),
        })
    }

    /// The file written.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends one line per record and flushes; returns the lines written.
    pub fn write(&mut self, batch: &Batch) -> io::Result<u64> {
        let mut lines = 0;
        for r in batch.iter() {
            self.out.write_all(json_line(&r).as_bytes())?;
            self.out.write_all(b"\n")?;
            lines += 1;
        }
        self.out.flush()?;
        Ok(lines)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use weir_common::record::{BatchBuilder, Value};

    fn batch() -> Batch {
        let mut b = BatchBuilder::default();
        let fields = [
            ("z", Value::I64(-3)),
            ("a", Value::Str("x\"y\n".into())),
            ("m", Value::F64(1.5)),
            ("n", Value::Null),
            ("b", Value::Bool(true)),
            ("p", Value::Bytes(b"raw".to_vec())),
            ("nan", Value::F64(f64::NAN)),
        ];
        b.push(1, 2, 3, b"key", fields.iter().map(|(n, v)| (*n, v)))
            .unwrap();
        b.push(1, 3, 4, b"key", [("only", &Value::I64(7))]).unwrap();
        b.push(1, 4, 5, b"", []).unwrap();
        b.finish()
    }

    const LINES: [&str; 3] = [
        r#"{"z":-3,"a":"x\"y\n","m":1.5,"n":null,"b":true,"p":"raw","nan":null}"#,
        r#"{"only":7}"#,
        "{}",
    ];

    #[test]
    fn json_lines_keep_field_order_and_escape() {
        let lines: Vec<_> = batch().iter().map(|r| json_line(&r)).collect();
        assert_eq!(lines, LINES);
    }

    #[test]
    fn indexed_paths() {
        assert_eq!(
            indexed_path("/tmp/out.jsonl", 1, 2),
            Path::new("/tmp/out.1.jsonl")
        );
        assert_eq!(
            indexed_path("/tmp/out.jsonl", 0, 1),
            Path::new("/tmp/out.jsonl")
        );
        assert_eq!(indexed_path("/tmp/out", 3, 4), Path::new("/tmp/out.3"));
        assert_eq!(
            indexed_path("a.b/out.tar.gz", 0, 2),
            Path::new("a.b/out.tar.0.gz")
        );
        assert_eq!(indexed_path("out.jsonl", 0, 2), Path::new("out.0.jsonl"));
    }

    #[test]
    fn writes_and_appends_lines_creating_directories() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("deep/er/out.jsonl");
        let mut s = FileSink::open(path.to_str().unwrap(), 1, 2).unwrap();
        assert_eq!(s.path(), dir.path().join("deep/er/out.1.jsonl"));
        assert_eq!(s.write(&batch()).unwrap(), 3);
        // Flushed at the end of the call: visible before the sink is dropped.
        assert_eq!(
            std::fs::read_to_string(s.path()).unwrap(),
            LINES.join("\n") + "\n"
        );
        drop(s);
        let mut again = FileSink::open(path.to_str().unwrap(), 1, 2).unwrap();
        assert_eq!(again.write(&BatchBuilder::default().finish()).unwrap(), 0);
        assert_eq!(again.write(&batch()).unwrap(), 3);
        let text = std::fs::read_to_string(again.path()).unwrap();
        assert_eq!(text.lines().count(), 6, "appended, not truncated");
        assert!(!path.exists());
    }

    #[test]
    fn open_fails_cleanly_where_a_file_blocks_the_directory() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("f"), "").unwrap();
        assert!(FileSink::open(dir.path().join("f/out.jsonl").to_str().unwrap(), 0, 1).is_err());
    }
}
