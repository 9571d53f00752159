//! A process started for an SSH channel, decoupled from the channel that
//! shows it, so that a later connection of the same user can take a pty
//! over (`kubectl hatch shell NAME --resume`, docs/sessions.md).
//!
//! The process's output is read by pumps that never stop for a missing
//! viewer; they hand each chunk to whichever attachment is current (one at
//! a time) and, for a pty, keep the last [`SCREEN_BYTES`] in a ring that a
//! new attachment sees first: the screen output produced while nobody
//! watched, bounded.
//!
//! A pty also has an id (`sessions NAME` lists it), may be recorded
//! ([`super::recording`]) and may be watched read-only (`shell --join ID`):
//! watchers get the screen, then every chunk, and never reach the input.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, Weak};
use std::time::SystemTime;

use bytes::{Bytes, BytesMut};
use hatchway_shim::{ExitStatus, SpawnControl};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, watch};

use super::recording::Recorder;
use crate::report::Session;

/// The pty output a new attachment is shown first.
pub const SCREEN_BYTES: usize = 64 * 1024;

/// Chunks in flight between the pumps and an attachment: a slow viewer
/// back-pressures the process, as a terminal would.
const QUEUE: usize = 8;

/// Chunks a watcher may fall behind by before it is let go (a watcher
/// never slows the process down).
const WATCHER_QUEUE: usize = 256;

pub type Reader = Box<dyn AsyncRead + Unpin + Send>;
pub type Writer = Box<dyn AsyncWrite + Unpin + Send>;

/// Output for the current attachment.
pub enum Output {
    Stdout(Bytes),
    Stderr(Bytes),
}

/// Who started a process, what it is called, and whether it is recorded.
pub struct Identity {
    /// Unique in the sidecar's life and across its restarts (random):
    /// what `--join ID` names and the recording's file name.
    pub id: String,
    /// What it runs, for `sessions` (`shell`, `exec: CMD`, `sftp`).
    pub what: String,
    /// The user the router authenticated.
    pub user: String,
    pub recorder: Option<Recorder>,
}

/// A running process and its I/O.
pub struct Terminal {
    pub id: String,
    /// What it runs, for `sessions` (`shell`, `exec: CMD`, `sftp`).
    pub what: String,
    pub user: String,
    pub started: SystemTime,
    recorder: Option<Recorder>,
    /// Whether it has a pty (only those can be taken over).
    pub is_pty: bool,
    control: Arc<SpawnControl>,
    stdin: tokio::sync::Mutex<Option<Writer>>,
    shared: Mutex<Shared>,
    /// Bumped at each attachment: the previous one sees it was taken over.
    generation: watch::Sender<u64>,
    /// `Some` once the process ended (`None` inside: its status is unknown).
    exit: watch::Receiver<Option<Option<ExitStatus>>>,
    /// The audit trail's record of the process.
    pub session: Session,
    /// The attachment made before the pumps started, so that no output
    /// comes before there is one to take it; the first `attach` gets it.
    first: Mutex<Option<Attachment>>,
}

struct Shared {
    screen: VecDeque<u8>,
    sink: Option<mpsc::Sender<Output>>,
    /// Read-only viewers (`--join`), given every pty chunk.
    watchers: Vec<mpsc::Sender<Bytes>>,
    /// Output pumps still reading.
    pumps: usize,
}

/// One attachment: its output, the screen to show first, and the
/// generation that stays current until another attachment takes over.
pub struct Attachment {
    pub screen: Vec<u8>,
    pub output: mpsc::Receiver<Output>,
    pub events: Events,
}

/// What an attachment waits for besides its channel, held for its life
/// (not subscribed per wait: the input loop waits on it for every packet).
pub struct Events {
    /// The attachment's generation: a newer one in `taken` took over.
    pub generation: u64,
    pub taken: watch::Receiver<u64>,
    /// `Some` once the process ended (`None` inside: its status is unknown).
    pub exit: watch::Receiver<Option<Option<ExitStatus>>>,
}

impl Terminal {
    /// Starts pumping a spawned process's output (`stderr` for pipes only).
    pub fn start(
        identity: Identity,
        control: SpawnControl,
        stdin: Writer,
        stdout: Reader,
        stderr: Option<Reader>,
        session: Session,
    ) -> Arc<Self> {
        let is_pty = stderr.is_none();
        let control = Arc::new(control);
        let (exit_tx, exit) = watch::channel(None);
        let waiter = control.clone();
        crate::spawn(async move {
            // One wait for the whole session: re-creating it per input
            // packet re-polled the spawn socket and cut uploads to a quarter.
            let status = waiter.wait().await.ok();
            let _ = exit_tx.send(Some(status));
        });
        let Identity {
            id,
            what,
            user,
            recorder,
        } = identity;
        let terminal = Arc::new(Self {
            id,
            what,
            user,
            started: SystemTime::now(),
            recorder,
            is_pty,
            control,
            stdin: tokio::sync::Mutex::new(Some(stdin)),
            shared: Mutex::new(Shared {
                screen: VecDeque::new(),
                sink: None,
                watchers: Vec::new(),
                pumps: 1 + usize::from(stderr.is_some()),
            }),
            generation: watch::channel(0).0,
            exit,
            session,
            first: Mutex::new(None),
        });
        let first = terminal.attach_new();
        *terminal.first.lock().unwrap_or_else(|p| p.into_inner()) = Some(first);
        let generations = terminal.generation.subscribe();
        if let Some(stderr) = stderr {
            let pumped = (Arc::downgrade(&terminal), generations.clone());
            crate::spawn(pump(pumped.0, pumped.1, stderr, Output::Stderr));
        }
        crate::spawn(pump(
            Arc::downgrade(&terminal),
            generations,
            stdout,
            Output::Stdout,
        ));
        terminal
    }

    fn shared(&self) -> std::sync::MutexGuard<'_, Shared> {
        self.shared.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The attachment made at the start if it is still unclaimed, else a
    /// new one that becomes the current one; the previous one is told
    /// through [`Events::taken`].
    pub fn attach(&self) -> Attachment {
        let first = self.first.lock().unwrap_or_else(|p| p.into_inner()).take();
        first.unwrap_or_else(|| self.attach_new())
    }

    fn attach_new(&self) -> Attachment {
        let (tx, output) = mpsc::channel(QUEUE);
        let mut shared = self.shared();
        // Under the same lock the pumps hold while recording a chunk: the
        // screen shown here and the chunks sent to `tx` neither overlap
        // nor leave a gap.
        let screen = shared.screen.iter().copied().collect();
        // With the pumps done, `tx` is dropped: the attachment's output
        // ends after the screen.
        shared.sink = (shared.pumps > 0).then_some(tx);
        drop(shared);
        let mut generation = 0;
        self.generation.send_modify(|g| {
            *g += 1;
            generation = *g;
        });
        Attachment {
            screen,
            output,
            events: Events {
                generation,
                taken: self.generation.subscribe(),
                exit: self.exit.clone(),
            },
        }
    }

    /// A read-only view of a running pty: the screen so far, then every
    /// chunk, until the process ends (the receiver then ends) or the
    /// watcher falls [`WATCHER_QUEUE`] chunks behind (it is let go).
    pub fn watch(&self) -> Option<(Vec<u8>, mpsc::Receiver<Bytes>)> {
        if !self.is_pty || !self.running() {
            return None;
        }
        let (tx, rx) = mpsc::channel(WATCHER_QUEUE);
        let mut shared = self.shared();
        if shared.pumps == 0 {
            return None;
        }
        // Under the pumps' lock: the screen and the chunks neither
        // overlap nor leave a gap.
        let screen = shared.screen.iter().copied().collect();
        shared.watchers.push(tx);
        Some((screen, rx))
    }

    /// Whether the process is still running.
    pub fn running(&self) -> bool {
        self.exit.borrow().is_none()
    }

    /// Writes input to the process; `false` once its input is closed.
    pub async fn write(&self, data: &[u8]) -> bool {
        let mut stdin = self.stdin.lock().await;
        let written = match stdin.as_mut() {
            Some(w) => w.write_all(data).await.is_ok(),
            None => false,
        };
        if !written {
            *stdin = None;
        }
        written
    }

    /// Closes the process's input (end of a pipe session's stdin).
    pub async fn close_input(&self) {
        self.stdin.lock().await.take();
    }

    pub async fn signal(&self, number: i32) {
        let _ = self.control.signal(number).await;
    }

    pub fn resize(&self, cols: u16, rows: u16) {
        let _ = self.control.resize(cols, rows);
        if let Some(recorder) = &self.recorder {
            recorder.resize(cols, rows);
        }
    }
}

/// Reads one output stream until it ends, recording pty output in the
/// screen and handing each chunk to the attachment current at the time.
async fn pump(
    terminal: Weak<Terminal>,
    mut generations: watch::Receiver<u64>,
    mut from: Reader,
    wrap: fn(Bytes) -> Output,
) {
    let mut buf = BytesMut::with_capacity(32 * 1024);
    loop {
        buf.reserve(32 * 1024);
        match from.read_buf(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        let chunk = buf.split().freeze();
        let Some(terminal) = terminal.upgrade() else { break };
        terminal
            .session
            .bytes_out
            .fetch_add(chunk.len() as u64, Ordering::Relaxed);
        let (sink, generation) = {
            let mut shared = terminal.shared();
            if terminal.is_pty {
                record(&mut shared.screen, &chunk);
                // A watcher that cannot take a chunk now is let go: its
                // view would have a hole otherwise.
                shared.watchers.retain(|w| w.try_send(chunk.clone()).is_ok());
            }
            (shared.sink.clone(), *terminal.generation.borrow())
        };
        if let Some(recorder) = &terminal.recorder {
            recorder.output(chunk.clone()).await;
        }
        if let Some(sink) = sink {
            // A viewer that stopped reading (its client is gone) holds the
            // process only until another attachment takes over; the
            // screen gives the new one this chunk.
            tokio::select! {
                _ = sink.send(wrap(chunk)) => {}
                _ = generations.wait_for(|g| *g != generation) => {}
            }
        }
    }
    if let Some(terminal) = terminal.upgrade() {
        let mut shared = terminal.shared();
        shared.pumps -= 1;
        if shared.pumps == 0 {
            shared.sink = None;
            shared.watchers.clear();
        }
    }
}

/// Appends `chunk` to the screen, keeping the last [`SCREEN_BYTES`].
fn record(screen: &mut VecDeque<u8>, chunk: &[u8]) {
    let chunk = &chunk[chunk.len().saturating_sub(SCREEN_BYTES)..];
    let excess = (screen.len() + chunk.len()).saturating_sub(SCREEN_BYTES);
    screen.drain(..excess);
    screen.extend(chunk);
}

/// The terminals of each resumable SSH connection, so that a resume from a
/// new connection finds them (by the old connection's session id).
#[derive(Default)]
pub struct Terminals {
    by_session: Mutex<std::collections::HashMap<String, Vec<Weak<Terminal>>>>,
    /// Every running pty by its id, resumable or not (`--join`, `sessions`).
    live: Mutex<Vec<Weak<Terminal>>>,
}

impl Terminals {
    fn map(&self) -> std::sync::MutexGuard<'_, std::collections::HashMap<String, Vec<Weak<Terminal>>>> {
        self.by_session.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records a running pty, for `--join` and `sessions`.
    pub fn add_live(&self, terminal: &Arc<Terminal>) {
        let mut live = self.live.lock().unwrap_or_else(|p| p.into_inner());
        live.retain(|t| t.upgrade().is_some_and(|t| t.running()));
        live.push(Arc::downgrade(terminal));
    }

    /// The running ptys, oldest first.
    pub fn live(&self) -> Vec<Arc<Terminal>> {
        let mut live = self.live.lock().unwrap_or_else(|p| p.into_inner());
        live.retain(|t| t.upgrade().is_some_and(|t| t.running()));
        live.iter().filter_map(Weak::upgrade).collect()
    }

    /// The running pty `id`.
    pub fn live_pty(&self, id: &str) -> Option<Arc<Terminal>> {
        self.live().into_iter().find(|t| t.id == id)
    }

    /// Records that `terminal` runs in resumable session `session`.
    pub fn add(&self, session: &str, terminal: &Arc<Terminal>) {
        let mut map = self.map();
        let list = map.entry(session.to_owned()).or_default();
        list.retain(|t| t.upgrade().is_some_and(|t| t.running()));
        list.push(Arc::downgrade(terminal));
    }

    /// The oldest running pty of `session`, if any.
    pub fn pty(&self, session: &str) -> Option<Arc<Terminal>> {
        let mut map = self.map();
        let list = map.get_mut(session)?;
        list.retain(|t| t.upgrade().is_some_and(|t| t.running()));
        let found = list.iter().filter_map(Weak::upgrade).find(|t| t.is_pty);
        if list.is_empty() {
            map.remove(session);
        }
        found
    }

    /// What the session runs, for `sessions`: its running processes.
    pub fn describe(&self, session: &str) -> Option<String> {
        let map = self.map();
        let running: Vec<String> = map
            .get(session)?
            .iter()
            .filter_map(Weak::upgrade)
            .filter(|t| t.running())
            .map(|t| t.what.clone())
            .collect();
        (!running.is_empty()).then(|| running.join("; "))
    }

    /// Moves `terminal` from whatever session had it to `session`.
    pub fn moved(&self, terminal: &Arc<Terminal>, session: &str) {
        let mut map = self.map();
        for list in map.values_mut() {
            list.retain(|t| !std::ptr::eq(t.as_ptr(), Arc::as_ptr(terminal)));
        }
        map.retain(|_, list| !list.is_empty());
        drop(map);
        self.add(session, terminal);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_screen_keeps_the_last_bytes() {
        let mut screen = VecDeque::new();
        record(&mut screen, b"abc");
        assert_eq!(screen.iter().copied().collect::<Vec<_>>(), b"abc");
        let big = vec![b'x'; SCREEN_BYTES];
        record(&mut screen, &big);
        assert_eq!(screen.len(), SCREEN_BYTES);
        assert!(screen.iter().all(|&b| b == b'x'));
        record(&mut screen, b"yz");
        assert_eq!(screen.len(), SCREEN_BYTES);
        let tail: Vec<u8> = screen.iter().rev().take(3).rev().copied().collect();
        assert_eq!(tail, b"xyz");
        let mut screen = VecDeque::new();
        let mut huge = vec![b'a'; SCREEN_BYTES + 5];
        huge.extend_from_slice(b"end");
        record(&mut screen, &huge);
        assert_eq!(screen.len(), SCREEN_BYTES);
        assert_eq!(screen.back(), Some(&b'd'));
    }
}
