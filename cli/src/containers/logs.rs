//! The container log in docker's json-file format: one JSON object per
//! line, `{"log":"text\n","stream":"stdout","time":"RFC 3339 nanos"}`.

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result};
use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};

/// One logged line.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Entry {
    pub log: String,
    pub stream: String,
    pub time: DateTime<Utc>,
}

/// Appends lines to a log file; shared by the stream pumps.
#[derive(Debug, Clone)]
pub struct LogWriter {
    file: Arc<Mutex<File>>,
}

impl LogWriter {
    /// Opens `path` for appending.
    pub fn open(path: &Path) -> Result<LogWriter> {
        let file = File::options()
            .create(true)
            .append(true)
            .open(path)
            .with_context(|| format!("opening log {}", path.display()))?;
        Ok(LogWriter {
            file: Arc::new(Mutex::new(file)),
        })
    }

    fn line(&self, stream: &str, text: &[u8]) {
        let entry = serde_json::json!({
            "log": String::from_utf8_lossy(text),
            "stream": stream,
            "time": Utc::now().to_rfc3339_opts(SecondsFormat::Nanos, true),
        });
        let mut line = entry.to_string();
        line.push('\n');
        if let Ok(mut file) = self.file.lock() {
            // A full disk must not stop the container's output: drop the line.
            let _ = file.write_all(line.as_bytes());
        }
    }

    /// Copies `from` until end of file into the log as `stream`, and into
    /// `echo` when given (the user's terminal or pipe).
    pub fn pump(&self, stream: &str, mut from: impl Read, mut echo: Option<Box<dyn Write + Send>>) {
        let mut buf = [0u8; 16 * 1024];
        let mut pending: Vec<u8> = Vec::new();
        loop {
            let n = match from.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                // EIO from a pty master once the container closed it.
                Err(_) => break,
            };
            if let Some(out) = echo.as_mut() {
                if out.write_all(&buf[..n]).and_then(|_| out.flush()).is_err() {
                    echo = None;
                }
            }
            pending.extend_from_slice(&buf[..n]);
            while let Some(i) = pending.iter().position(|&b| b == b'\n') {
                let rest = pending.split_off(i + 1);
                self.line(stream, &pending);
                pending = rest;
            }
            // docker splits lines longer than 16 KiB.
            if pending.len() >= 16 * 1024 {
                self.line(stream, &pending);
                pending.clear();
            }
        }
        if !pending.is_empty() {
            self.line(stream, &pending);
        }
    }
}

/// Reads every entry of a log file from byte `offset`; returns them and the
/// offset after the last complete line.
pub fn read_from(path: &Path, offset: u64) -> Result<(Vec<Entry>, u64)> {
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((Vec::new(), offset)),
        Err(e) => return Err(e).context(format!("opening {}", path.display())),
    };
    let mut reader = BufReader::new(file);
    std::io::Seek::seek(&mut reader, std::io::SeekFrom::Start(offset))?;
    let mut entries = Vec::new();
    let mut position = offset;
    let mut line = String::new();
    loop {
        line.clear();
        let n = reader.read_line(&mut line)?;
        if n == 0 || !line.ends_with('\n') {
            break;
        }
        position += n as u64;
        if let Ok(entry) = serde_json::from_str::<Entry>(&line) {
            entries.push(entry);
        }
    }
    Ok((entries, position))
}
