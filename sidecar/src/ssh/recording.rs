//! Terminal sessions recorded as asciicast v2 (docs/sessions.md,
//! "Recorded sessions"): one file per pty, `sessions/<id>.cast` in the
//! sidecar's own audit directory, which no workload path reaches (the
//! workload cannot rewrite or remove what was recorded of it).
//!
//! What is recorded is what the terminal showed: the pty's output and its
//! size changes. Input is not (a password typed at a prompt that does not
//! echo it would be), as Teleport and asciinema do by default.
//!
//! The pumps hand output over a bounded channel, so a disk that cannot keep
//! up slows the process as a slow viewer does, and nothing is dropped. A
//! recording stops at `max_bytes` (a marker says so), so a `cat` of a huge
//! file cannot fill the audit volume.

use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use hatchway_api::pod::log_file;
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;

/// Events in flight to the writer: a slow disk back-pressures the pty.
const QUEUE: usize = 64;

/// Where recordings go and whether to make them.
#[derive(Clone, Debug)]
pub struct Recordings {
    /// `AUDIT_DIR/sessions`.
    pub dir: PathBuf,
    /// Record every pty (the Container's `spec.recordShell`, else the
    /// cluster's default).
    pub enabled: bool,
    /// The most one recording may hold.
    pub max_bytes: u64,
}

/// What a recording's header says about the terminal.
pub struct Header<'a> {
    pub id: &'a str,
    pub user: &'a str,
    pub what: &'a str,
    pub term: &'a str,
    pub cols: u16,
    pub rows: u16,
}

/// The sending end: the pumps' and the resizes' way to the writer.
#[derive(Clone)]
pub struct Recorder {
    tx: mpsc::Sender<Event>,
}

enum Event {
    Output(Bytes),
    Resize(u16, u16),
}

/// Why a recording could not start.
#[derive(Debug, thiserror::Error)]
#[error("starting the recording {path}: {source}")]
pub struct RecordingError {
    path: String,
    source: std::io::Error,
}

impl Recordings {
    /// Recordings under `audit_dir`.
    pub fn new(audit_dir: &Path, enabled: bool, max_bytes: u64) -> Self {
        Self {
            dir: audit_dir.join(log_file::SESSIONS_DIR),
            enabled,
            max_bytes,
        }
    }

    /// Off: nothing is recorded (tests and `spec.recordShell: false`).
    pub fn off() -> Self {
        Self {
            dir: PathBuf::new(),
            enabled: false,
            max_bytes: 0,
        }
    }

    /// Starts recording the terminal `header` describes, or `None` when
    /// recording is off. The file is new (an id is never reused) and not
    /// a symlink.
    pub fn start(&self, header: &Header<'_>) -> Result<Option<Recorder>, RecordingError> {
        if !self.enabled {
            return Ok(None);
        }
        let path = self
            .dir
            .join(format!("{}{}", header.id, log_file::RECORDING_SUFFIX));
        let fail = |source| RecordingError {
            path: path.display().to_string(),
            source,
        };
        std::fs::create_dir_all(&self.dir).map_err(fail)?;
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o640)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&path)
            .map_err(fail)?;
        let line = header_line(header, SystemTime::now());
        file.write_all(line.as_bytes()).map_err(fail)?;
        let (tx, rx) = mpsc::channel(QUEUE);
        let written = line.len() as u64;
        crate::spawn(write(
            tokio::fs::File::from_std(file),
            rx,
            written,
            self.max_bytes,
        ));
        Ok(Some(Recorder { tx }))
    }
}

/// A recording on disk, as `sessions` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recorded {
    pub id: String,
    pub user: String,
    pub what: String,
    pub started: SystemTime,
    pub bytes: u64,
}

/// Recordings `sessions` lists at most (the newest).
pub const LISTED: usize = 200;

impl Recordings {
    /// The recordings on disk, newest first, at most [`LISTED`]. Each
    /// file's header says whose it is; a file without one is skipped.
    pub fn list(&self) -> Vec<Recorded> {
        let Ok(dir) = std::fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        let mut found: Vec<(SystemTime, PathBuf, u64)> = dir
            .filter_map(Result::ok)
            .filter_map(|entry| {
                let meta = entry.metadata().ok()?;
                let name = entry.file_name();
                let name = name.to_str()?;
                (meta.is_file() && name.ends_with(log_file::RECORDING_SUFFIX))
                    .then(|| (meta.modified().unwrap_or(UNIX_EPOCH), entry.path(), meta.len()))
            })
            .collect();
        found.sort_by_key(|entry| std::cmp::Reverse(entry.0));
        found
            .into_iter()
            .take(LISTED)
            .filter_map(|(_, path, bytes)| read_header(&path).map(|r| Recorded { bytes, ..r }))
            .collect()
    }
}

/// A recording's header, read from its first line (at most 4 KiB).
fn read_header(path: &Path) -> Option<Recorded> {
    use std::io::{BufRead as _, Read as _};
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
        .ok()?;
    let mut line = String::new();
    std::io::BufReader::new(file.take(4096))
        .read_line(&mut line)
        .ok()?;
    let header: serde_json::Value = serde_json::from_str(&line).ok()?;
    let text = |key: &str| header["hatchway"][key].as_str().map(str::to_owned);
    Some(Recorded {
        id: text("id")?,
        user: text("user")?,
        what: text("command").unwrap_or_default(),
        started: UNIX_EPOCH + std::time::Duration::from_secs(header["timestamp"].as_u64()?),
        bytes: 0,
    })
}

impl Recorder {
    /// Records output; waits while the writer is behind.
    pub async fn output(&self, chunk: Bytes) {
        let _ = self.tx.send(Event::Output(chunk)).await;
    }

    /// Records a size change (dropped if the writer is far behind: the
    /// next one corrects it).
    pub fn resize(&self, cols: u16, rows: u16) {
        let _ = self.tx.try_send(Event::Resize(cols, rows));
    }
}

/// The asciicast v2 header: one JSON object on the first line.
fn header_line(header: &Header<'_>, now: SystemTime) -> String {
    let timestamp = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let value = serde_json::json!({
        "version": 2,
        "width": header.cols,
        "height": header.rows,
        "timestamp": timestamp,
        "title": format!("{}: {}", header.user, header.what),
        "env": {"TERM": header.term},
        "hatchway": {"id": header.id, "user": header.user, "command": header.what},
    });
    format!("{value}\n")
}

/// One event line: `[seconds, "o"|"r"|"m", "data"]`.
fn event_line(at: f64, code: &str, data: &str) -> String {
    let mut line = serde_json::to_string(&(at, code, data)).unwrap_or_default();
    line.push('\n');
    line
}

/// Writes events until every sender is gone, flushing whenever it has
/// caught up (a replay or a listing sees the session as it goes).
async fn write(file: tokio::fs::File, mut rx: mpsc::Receiver<Event>, mut written: u64, max_bytes: u64) {
    let started = Instant::now();
    let mut out = tokio::io::BufWriter::new(file);
    let mut text = Utf8Carry::default();
    let mut stopped = false;
    while let Some(event) = rx.recv().await {
        if stopped {
            continue;
        }
        let at = (started.elapsed().as_micros() as f64) / 1e6;
        let line = match event {
            Event::Output(chunk) => {
                let decoded = text.decode(&chunk);
                if decoded.is_empty() {
                    continue;
                }
                event_line(at, "o", &decoded)
            }
            Event::Resize(cols, rows) => event_line(at, "r", &format!("{cols}x{rows}")),
        };
        let line = if written + line.len() as u64 > max_bytes {
            stopped = true;
            event_line(
                at,
                "m",
                &format!("hatchway: recording stopped at its limit of {max_bytes} bytes"),
            )
        } else {
            line
        };
        written += line.len() as u64;
        if out.write_all(line.as_bytes()).await.is_err() {
            tracing::warn!("writing a session recording failed; it stops here");
            return;
        }
        if rx.is_empty() && out.flush().await.is_err() {
            return;
        }
    }
    let _ = out.flush().await;
}

/// Pty output as text: a UTF-8 sequence split between two reads is
/// joined, bytes that are not UTF-8 become U+FFFD (asciicast is JSON).
#[derive(Default)]
struct Utf8Carry {
    /// The start of a sequence the last chunk ended in (at most 3 bytes).
    pending: Vec<u8>,
}

impl Utf8Carry {
    fn decode(&mut self, chunk: &[u8]) -> String {
        let mut bytes = std::mem::take(&mut self.pending);
        bytes.extend_from_slice(chunk);
        let mut out = String::with_capacity(bytes.len());
        let mut rest = &bytes[..];
        loop {
            match std::str::from_utf8(rest) {
                Ok(text) => {
                    out.push_str(text);
                    break;
                }
                Err(error) => {
                    let (good, bad) = rest.split_at(error.valid_up_to());
                    out.push_str(std::str::from_utf8(good).unwrap_or_default());
                    match error.error_len() {
                        Some(len) => {
                            out.push(char::REPLACEMENT_CHARACTER);
                            rest = &bad[len..];
                        }
                        None => {
                            self.pending = bad.to_vec();
                            break;
                        }
                    }
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utf8_split_between_reads_is_joined_and_garbage_replaced() {
        let mut carry = Utf8Carry::default();
        let euro = "€".as_bytes();
        assert_eq!(carry.decode(&[b'a', euro[0]]), "a");
        assert_eq!(carry.decode(&euro[1..2]), "");
        assert_eq!(carry.decode(&[euro[2], b'b']), "€b");
        assert_eq!(carry.decode(&[0xff, b'c', 0xc3]), "\u{FFFD}c");
        assert_eq!(carry.decode(&[0xa9]), "é");
    }

    fn header<'a>(id: &'a str) -> Header<'a> {
        Header {
            id,
            user: "alice",
            what: "shell",
            term: "xterm-256color",
            cols: 80,
            rows: 24,
        }
    }

    async fn read_when(path: &Path, done: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let text = std::fs::read_to_string(path).unwrap_or_default();
            if done(&text) || Instant::now() > deadline {
                return text;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    }

    #[tokio::test]
    async fn a_recording_is_asciicast_v2_output_and_resizes_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let recordings = Recordings::new(dir.path(), true, 1 << 20);
        let recorder = recordings.start(&header("00aa")).unwrap().unwrap();
        recorder.output(Bytes::from_static(b"$ echo 42\r\n42\r\n")).await;
        recorder.resize(100, 30);
        recorder.output(Bytes::from_static(b"\x1b[1mbold\x1b[0m")).await;
        drop(recorder);
        let path = dir.path().join("sessions/00aa.cast");
        let text = read_when(&path, |t| t.lines().count() == 4).await;
        let lines: Vec<serde_json::Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        assert_eq!(lines.len(), 4, "{text}");
        assert_eq!(lines[0]["version"], 2);
        assert_eq!(
            (lines[0]["width"].as_u64(), lines[0]["height"].as_u64()),
            (Some(80), Some(24))
        );
        assert_eq!(lines[0]["hatchway"]["user"], "alice");
        assert_eq!(lines[1][1], "o");
        assert_eq!(lines[1][2], "$ echo 42\r\n42\r\n");
        assert_eq!((&lines[2][1], &lines[2][2]), (&"r".into(), &"100x30".into()));
        assert_eq!(lines[3][2], "\u{1b}[1mbold\u{1b}[0m");
        let times: Vec<f64> = lines[1..].iter().map(|l| l[0].as_f64().unwrap()).collect();
        assert!(times.windows(2).all(|w| w[0] <= w[1]), "{times:?}");
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o007, 0, "not world-readable: {mode:o}");
    }

    #[tokio::test]
    async fn a_recording_stops_at_its_limit_with_a_marker() {
        let dir = tempfile::tempdir().unwrap();
        let recordings = Recordings::new(dir.path(), true, 400);
        let recorder = recordings.start(&header("00bb")).unwrap().unwrap();
        for _ in 0..50 {
            recorder.output(Bytes::from(vec![b'x'; 64])).await;
        }
        drop(recorder);
        let path = dir.path().join("sessions/00bb.cast");
        let text = read_when(&path, |t| t.contains("\"m\"")).await;
        let last: serde_json::Value = serde_json::from_str(text.lines().last().unwrap()).unwrap();
        assert_eq!(last[1], "m", "{text}");
        assert!(last[2].as_str().unwrap().contains("limit of 400 bytes"));
        assert!(text.len() < 400 + 200, "{} bytes", text.len());
    }

    #[test]
    fn an_id_is_never_recorded_twice_and_a_planted_symlink_is_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let recordings = Recordings::new(dir.path(), true, 1 << 20);
        std::fs::create_dir_all(&recordings.dir).unwrap();
        let target = dir.path().join("elsewhere");
        std::os::unix::fs::symlink(&target, recordings.dir.join("00cc.cast")).unwrap();
        let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let _guard = runtime.enter();
        let error = recordings.start(&header("00cc")).err().expect("refused");
        assert!(error.to_string().contains("00cc.cast"), "{error}");
        assert!(!target.exists());
        assert!(Recordings::off().start(&header("00dd")).unwrap().is_none());
    }
}
