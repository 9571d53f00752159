//! Tees the command's stdout and stderr to the log directory and to the
//! shim's own stdout and stderr (so `kubectl logs` keeps working).
//!
//! Per stream: a reader thread drains the pipe, writes each chunk straight
//! to the shim's own fd, and *offers* it to a bounded queue; a writer thread
//! turns the queue into lines in `stdout.txt`/`stderr.txt`, rotating at the
//! per-file cap and dropping lines past the total cap. The reader never
//! waits for the disk: when the queue is full the chunk is dropped and
//! counted, and the writer says so in the file once it catches up. (Writing
//! to the shim's own stdout may block, exactly as the command's output
//! would without the shim.)

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tracing::warn;

/// How much output may wait for the disk writer, per stream, before the
/// readers start dropping chunks.
pub(crate) const QUEUE_BUDGET_BYTES: usize = 8 * 1024 * 1024;
/// A "line" longer than this is written out in pieces, so one endless line
/// cannot grow the writer's buffer without bound.
pub(crate) const MAX_LINE_BYTES: usize = 64 * 1024;
/// Read size for the pipes.
const CHUNK_BYTES: usize = 64 * 1024;

/// Size limits for one stream's log file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct LogLimits {
    /// Rotate `NAME` to `NAME.1` before it would grow past this (0: never).
    pub max_file_bytes: u64,
    /// After this many bytes of output in this run, drop lines (0: never).
    pub max_total_bytes: u64,
}

/// The hand-off between a pipe reader and the disk writer: bounded by
/// bytes, never blocking the reader.
#[derive(Debug)]
pub(crate) struct Queue {
    state: Mutex<QueueState>,
    /// Wakes the writer when chunks arrive or the queue closes.
    ready: Condvar,
    budget: usize,
}

#[derive(Debug, Default)]
struct QueueState {
    chunks: VecDeque<Vec<u8>>,
    /// Bytes in `chunks`, checked against the budget.
    bytes: usize,
    /// Bytes refused since the writer last looked.
    dropped: u64,
    /// No more chunks will be accepted; the writer drains and stops.
    closed: bool,
}

/// What the writer gets from [`Queue::take`].
#[derive(Debug, Default)]
pub(crate) struct Batch {
    pub chunks: Vec<Vec<u8>>,
    /// Bytes dropped (queue full) since the previous batch.
    pub dropped: u64,
    /// The queue is closed and this was the last batch.
    pub last: bool,
}

impl Queue {
    pub fn new(budget: usize) -> Self {
        Self {
            state: Mutex::default(),
            ready: Condvar::new(),
            budget,
        }
    }

    /// Queues a copy of `chunk` if it fits the budget; otherwise counts it
    /// as dropped. Returns whether it was queued. Never waits for the writer.
    pub fn offer(&self, chunk: &[u8]) -> bool {
        let mut state = self.lock();
        if state.closed || state.bytes + chunk.len() > self.budget {
            state.dropped += chunk.len() as u64;
            return false;
        }
        state.bytes += chunk.len();
        state.chunks.push_back(chunk.to_vec());
        drop(state);
        self.ready.notify_one();
        true
    }

    /// Stops accepting chunks; the writer drains what is queued and stops.
    pub fn close(&self) {
        self.lock().closed = true;
        self.ready.notify_all();
    }

    /// Waits for something to do and takes everything queued.
    pub fn take(&self) -> Batch {
        let mut state = self.lock();
        while state.chunks.is_empty() && state.dropped == 0 && !state.closed {
            state = self
                .ready
                .wait(state)
                .unwrap_or_else(|poisoned| poisoned.into_inner());
        }
        state.bytes = 0;
        Batch {
            chunks: state.chunks.drain(..).collect(),
            dropped: std::mem::take(&mut state.dropped),
            last: state.closed,
        }
    }

    fn lock(&self) -> MutexGuard<'_, QueueState> {
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// One stream's log file: line splitting, rotation, caps and markers.
#[derive(Debug)]
pub(crate) struct LogFile {
    path: PathBuf,
    /// Where `path` goes on rotation (`NAME.1`; one older file is kept).
    rotated: PathBuf,
    limits: LogLimits,
    /// None after an open failure; reopened on the next write.
    file: Option<BufWriter<File>>,
    /// Size of the current file, for rotation.
    size: u64,
    /// Output bytes written in this run, against the total cap.
    written: u64,
    /// The current line, until its newline arrives.
    partial: Vec<u8>,
    /// Whether the file ends with a newline (markers must start a line).
    at_line_start: bool,
    /// Lines and bytes dropped past the total cap; reported once, at the end.
    capped: Option<(u64, u64)>,
    /// Bytes lost (writer behind, write errors) not yet reported, and why.
    lost: u64,
    lost_reason: String,
}

impl LogFile {
    /// Opens (appends to) `dir/name`.
    pub fn open(dir: &Path, name: &str, limits: LogLimits) -> Self {
        let mut log = Self {
            path: dir.join(name),
            rotated: dir.join(format!("{name}.1")),
            limits,
            file: None,
            size: 0,
            written: 0,
            partial: Vec::new(),
            at_line_start: true,
            capped: None,
            lost: 0,
            lost_reason: String::new(),
        };
        log.reopen(false);
        log
    }

    /// Adds output; complete lines go to the file.
    pub fn write(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            match data.iter().position(|&b| b == b'\n') {
                Some(pos) => {
                    self.partial.extend_from_slice(&data[..=pos]);
                    data = &data[pos + 1..];
                    let line = std::mem::take(&mut self.partial);
                    self.line(&line);
                }
                None => {
                    self.partial.extend_from_slice(data);
                    data = &[];
                }
            }
            while self.partial.len() >= MAX_LINE_BYTES {
                let rest = self.partial.split_off(MAX_LINE_BYTES);
                let piece = std::mem::replace(&mut self.partial, rest);
                self.line(&piece);
            }
        }
    }

    /// Records output that never reached this writer.
    pub fn lost(&mut self, bytes: u64, reason: &str) {
        self.lost += bytes;
        self.lost_reason = reason.to_string();
    }

    /// Pushes buffered lines to the file (the partial line stays buffered).
    pub fn flush(&mut self) {
        if let Some(file) = &mut self.file {
            let pending = file.buffer().len() as u64;
            if let Err(error) = file.flush() {
                let reason = self.write_failed(&error);
                self.lost(pending, &reason);
            }
        }
    }

    /// The output ended: writes the partial line, the markers, and flushes.
    pub fn finish(&mut self) {
        let partial = std::mem::take(&mut self.partial);
        if !partial.is_empty() {
            self.line(&partial);
        }
        self.report_lost();
        if let Some((lines, bytes)) = self.capped.take() {
            let max = self.limits.max_total_bytes;
            // If even this fails there is nowhere left to say so but our log.
            let _ = self.marker(&format!(
                "[hatchway] {lines} lines ({bytes} bytes) dropped: this log reached its limit of {max} bytes"
            ));
        }
        self.flush();
    }

    fn line(&mut self, line: &[u8]) {
        self.report_lost();
        let len = line.len() as u64;
        let max_total = self.limits.max_total_bytes;
        if let Some((lines, bytes)) = &mut self.capped {
            *lines += 1;
            *bytes += len;
            return;
        }
        if max_total > 0 && self.written + len > max_total {
            self.capped = Some((1, len));
            return;
        }
        self.written += len;
        if let Err(reason) = self.append(line) {
            self.lost(len, &reason);
        }
    }

    /// Writes the "dropped here" marker if output was lost since the last
    /// line; if the marker cannot be written either, keeps the count.
    fn report_lost(&mut self) {
        if self.lost > 0 {
            let (bytes, reason) = (
                std::mem::take(&mut self.lost),
                std::mem::take(&mut self.lost_reason),
            );
            if self
                .marker(&format!(
                    "[hatchway] about {bytes} bytes of output dropped here: {reason}"
                ))
                .is_err()
            {
                self.lost += bytes;
                self.lost_reason = reason;
            }
        }
    }

    fn marker(&mut self, text: &str) -> Result<(), String> {
        let mut line = Vec::with_capacity(text.len() + 2);
        if !self.at_line_start {
            line.push(b'\n');
        }
        line.extend_from_slice(text.as_bytes());
        line.push(b'\n');
        self.append(&line)
    }

    /// Writes bytes to the file, rotating first if they would not fit. On
    /// failure, says why (the caller decides what counts as lost).
    fn append(&mut self, bytes: &[u8]) -> Result<(), String> {
        let len = bytes.len() as u64;
        let max_file = self.limits.max_file_bytes;
        if max_file > 0 && self.size > 0 && self.size + len > max_file {
            self.rotate();
        }
        if self.file.is_none() {
            self.reopen(false);
        }
        let Some(file) = &mut self.file else {
            return Err("the log file could not be opened".to_string());
        };
        match file.write_all(bytes) {
            Ok(()) => {
                self.size += len;
                self.at_line_start = bytes.ends_with(b"\n");
                Ok(())
            }
            Err(error) => Err(self.write_failed(&error)),
        }
    }

    /// Drops the file after a write error (BufWriter would otherwise retry
    /// the same buffered bytes forever); it is reopened on the next write.
    fn write_failed(&mut self, error: &std::io::Error) -> String {
        if self.lost == 0 {
            warn!(path = %self.path.display(), %error, "cannot write the log file: dropping output");
        }
        if let Some(file) = self.file.take() {
            // Discard what could not be written instead of flushing it on drop.
            let _ = file.into_parts();
        }
        format!("writing the log file failed ({error})")
    }

    fn rotate(&mut self) {
        if let Some(mut file) = self.file.take() {
            let _ = file.flush();
        }
        if let Err(error) = std::fs::rename(&self.path, &self.rotated)
            && error.kind() != std::io::ErrorKind::NotFound
        {
            warn!(path = %self.path.display(), %error, "cannot rotate the log file: truncating it");
        }
        self.reopen(true);
    }

    fn reopen(&mut self, truncate: bool) {
        let mut options = OpenOptions::new();
        options.create(true);
        if truncate {
            options.write(true).truncate(true);
        } else {
            options.append(true);
        }
        match options.open(&self.path) {
            Ok(file) => {
                self.size = file.metadata().map(|m| m.len()).unwrap_or(0);
                self.at_line_start = true;
                self.file = Some(BufWriter::new(file));
            }
            Err(error) => {
                warn!(path = %self.path.display(), %error, "cannot open the log file");
                self.file = None;
            }
        }
    }
}

/// Drives a [`LogFile`] from a [`Queue`] until the queue closes.
pub(crate) fn run_writer(queue: &Queue, log: &mut LogFile) {
    loop {
        let batch = queue.take();
        for chunk in &batch.chunks {
            log.write(chunk);
        }
        // The drops came after the queued chunks (they were refused because
        // those filled the queue), so the marker goes after them too.
        if batch.dropped > 0 {
            log.lost(batch.dropped, "the log writer fell behind");
        }
        if batch.last {
            log.finish();
            return;
        }
        // Flush whenever the writer has caught up, so readers of the file
        // (the gateway's WebDAV) see output promptly.
        log.flush();
    }
}

/// Copies a pipe to `own` (the shim's stdout or stderr) and offers every
/// chunk to `queue`, until EOF.
pub(crate) fn pump(mut pipe: impl Read, mut own: Option<File>, queue: &Queue) {
    let mut buf = vec![0u8; CHUNK_BYTES];
    loop {
        let n = match pipe.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => n,
            Err(error) if error.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(error) => {
                warn!(%error, "reading the command's output failed");
                return;
            }
        };
        if let Some(out) = &mut own
            && let Err(error) = out.write_all(&buf[..n])
        {
            // Nobody reads the shim's own output any more (e.g. EPIPE):
            // the log file still gets everything.
            warn!(%error, "cannot copy the command's output to the shim's own output");
            own = None;
        }
        queue.offer(&buf[..n]);
    }
}

/// One stream to tee: the pipe, the shim's own fd, the log file name.
pub(crate) struct Stream {
    pub pipe: Box<dyn Read + Send>,
    pub own: Option<File>,
    pub name: &'static str,
}

/// The running tee threads.
#[derive(Debug)]
pub(crate) struct Tee {
    queues: Vec<Arc<Queue>>,
    /// One message per reader at EOF.
    readers_done: mpsc::Receiver<()>,
    /// One message per writer once its file is finished.
    writers_done: mpsc::Receiver<()>,
    streams: usize,
}

impl Tee {
    /// Starts a reader and a writer thread per stream.
    pub fn start(dir: &Path, limits: LogLimits, streams: Vec<Stream>) -> std::io::Result<Self> {
        let (readers_tx, readers_done) = mpsc::channel();
        let (writers_tx, writers_done) = mpsc::channel();
        let mut queues = Vec::new();
        let count = streams.len();
        for Stream { pipe, own, name } in streams {
            let queue = Arc::new(Queue::new(QUEUE_BUDGET_BYTES));
            let mut log = LogFile::open(dir, name, limits);
            let (writer_queue, done) = (Arc::clone(&queue), writers_tx.clone());
            std::thread::Builder::new()
                .name(format!("log-{name}"))
                .spawn(move || {
                    run_writer(&writer_queue, &mut log);
                    let _ = done.send(());
                })?;
            let (reader_queue, done) = (Arc::clone(&queue), readers_tx.clone());
            std::thread::Builder::new()
                .name(format!("pipe-{name}"))
                .spawn(move || {
                    pump(pipe, own, &reader_queue);
                    let _ = done.send(());
                })?;
            queues.push(queue);
        }
        Ok(Self {
            queues,
            readers_done,
            writers_done,
            streams: count,
        })
    }

    /// Waits (up to `grace` each) for the pipes to reach EOF and for the
    /// files to be finished. A background process that inherited the pipes
    /// can keep them open forever: then what was read so far is written
    /// and the rest is left behind. Returns whether everything finished.
    pub fn finish(self, grace: Duration) -> bool {
        let mut complete = true;
        let deadline = Instant::now() + grace;
        for _ in 0..self.streams {
            if self
                .readers_done
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
                .is_err()
            {
                warn!(
                    ?grace,
                    "the command's output pipes are still open (held by a background process?): not waiting for them"
                );
                complete = false;
                break;
            }
        }
        for queue in &self.queues {
            queue.close();
        }
        let deadline = Instant::now() + grace;
        for _ in 0..self.streams {
            if self
                .writers_done
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
                .is_err()
            {
                warn!(?grace, "the log files could not be finished in time (slow disk?)");
                return false;
            }
        }
        complete
    }
}

#[cfg(test)]
mod tests;
