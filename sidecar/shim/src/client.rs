//! The gateway's side of the spawn socket: ask the shim to start a process
//! inside the workload container and get its pty or pipes back.

use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::SocketAddr;
use std::time::Duration;

use tokio::io::Interest;
use tokio::net::UnixStream;
use tokio::sync::Mutex;

use crate::protocol::{
    self, ClientMessage, ExitStatus, IoKind, MAX_RESPONSE_BYTES, ServerMessage, SpawnRequest,
};
use crate::sys;

/// How long the shim may take to answer a spawn request.
pub const RESPONSE_TIMEOUT: Duration = Duration::from_secs(30);

/// Why a spawn (or a later call on it) failed.
#[derive(Debug, thiserror::Error)]
pub enum SpawnError {
    /// The socket is missing or refuses connections: is the shim running?
    #[error("cannot connect to the workload shim at @{name}: {source}")]
    Connect {
        name: String,
        #[source]
        source: io::Error,
    },
    /// The shim said no; the message says why (unknown user, not root,
    /// missing program...) and is fit to show the user.
    #[error("{0}")]
    Refused(String),
    /// The shim's answer made no sense.
    #[error("spawn protocol error: {0}")]
    Protocol(String),
    #[error("the workload shim did not answer within {0:?}")]
    Timeout(Duration),
    #[error("spawn connection failed: {0}")]
    Io(#[from] io::Error),
    /// `resize` on a session that has pipes, not a pty.
    #[error("the session has no pty")]
    NoPty,
}

/// The parent's ends of the spawned process's I/O. Turn each into an async
/// stream with [`FdStream::new`](crate::FdStream::new).
#[derive(Debug)]
pub enum SpawnedIo {
    /// The pty master: read the session's output, write its input.
    Pty { master: OwnedFd },
    /// stdin (write end), stdout and stderr (read ends).
    Pipes {
        stdin: OwnedFd,
        stdout: OwnedFd,
        stderr: OwnedFd,
    },
}

/// A process running inside the workload container. Destructure it to move
/// `io` into readers/writers and keep `control` to signal, resize and wait;
/// dropping `control` before the process ends hangs the session up (SIGHUP).
#[derive(Debug)]
pub struct Spawned {
    /// Its pid in the workload container's pid namespace.
    pub pid: u32,
    pub io: SpawnedIo,
    pub control: SpawnControl,
    /// The agent socket asked for with [`SpawnRequest::agent`], if made.
    pub agent: Option<AgentListener>,
    /// Why the agent socket asked for was not made (the process runs
    /// without one).
    pub agent_error: Option<String>,
}

/// The listening agent socket of an `ssh -A` session: accept on it and
/// relay each connection to the client's agent. The shim removes the
/// socket's file when the session ends.
#[derive(Debug)]
pub struct AgentListener {
    pub listener: OwnedFd,
    /// The socket's path inside the workload container (`SSH_AUTH_SOCK`).
    pub path: String,
}

/// The control half of a session: signal, resize, wait. Methods take
/// `&self`, so it can be shared (e.g. in an `Arc`) between the task that
/// waits and the one that forwards signals and window changes.
#[derive(Debug)]
pub struct SpawnControl {
    stream: UnixStream,
    reader: Mutex<Reader>,
    /// Serializes frames written by concurrent `signal` calls.
    writer: Mutex<()>,
    /// A duplicate of the pty master, for TIOCSWINSZ.
    pty: Option<OwnedFd>,
}

#[derive(Debug, Default)]
struct Reader {
    buf: Vec<u8>,
    fds: Vec<OwnedFd>,
    eof: bool,
    /// Kept so `wait` can be called again after the process ended.
    status: Option<ExitStatus>,
}

/// Connects to the shim's abstract socket `name`.
pub fn connect(name: &str) -> io::Result<UnixStream> {
    let addr = SocketAddr::from_abstract_name(name.as_bytes())?;
    let stream = std::os::unix::net::UnixStream::connect_addr(&addr)?;
    stream.set_nonblocking(true)?;
    UnixStream::from_std(stream)
}

/// Asks the shim listening on the abstract socket `socket` to run `req`.
pub async fn spawn(socket: &str, req: &SpawnRequest) -> Result<Spawned, SpawnError> {
    let stream = connect(socket).map_err(|source| SpawnError::Connect {
        name: socket.to_owned(),
        source,
    })?;
    let control = SpawnControl {
        stream,
        reader: Mutex::default(),
        writer: Mutex::default(),
        pty: None,
    };
    // A shim that refuses the connection outright (peer check) answers and
    // closes before reading the request, so sending may fail (EPIPE): its
    // answer is still there to read, and says more than the send error.
    let sent = control.send(&ClientMessage::Spawn(req.clone())).await;

    let mut reader = control.reader.lock().await;
    let answer = tokio::time::timeout(RESPONSE_TIMEOUT, read_message(&control.stream, &mut reader))
        .await
        .map_err(|_| SpawnError::Timeout(RESPONSE_TIMEOUT));
    let answer = match (answer, sent) {
        (Ok(Ok(Some(ServerMessage::Error { message }))), _) => return Err(SpawnError::Refused(message)),
        (_, Err(error)) => return Err(error),
        (answer, Ok(())) => answer??,
    };
    let (pid, kind, agent_path, agent_error) = match answer {
        Some(ServerMessage::Spawned {
            pid,
            io,
            agent,
            agent_error,
        }) => (pid, io, agent, agent_error),
        Some(ServerMessage::Error { message }) => return Err(SpawnError::Refused(message)),
        Some(other) => return Err(SpawnError::Protocol(format!("expected spawned, got {other:?}"))),
        None => {
            return Err(SpawnError::Protocol(
                "the shim closed the connection without answering".into(),
            ));
        }
    };
    let fds = std::mem::take(&mut reader.fds);
    drop(reader);
    let expected = kind.fd_count() + usize::from(agent_path.is_some());
    if fds.len() != expected {
        return Err(SpawnError::Protocol(format!(
            "expected {expected} fds, got {}",
            fds.len()
        )));
    }
    let mut fds = fds.into_iter();
    let mut next = || fds.next().expect("the count was checked");
    let (io, pty) = match kind {
        IoKind::Pty => {
            let master = next();
            let dup = master.try_clone()?;
            (SpawnedIo::Pty { master }, Some(dup))
        }
        IoKind::Pipes => (
            SpawnedIo::Pipes {
                stdin: next(),
                stdout: next(),
                stderr: next(),
            },
            None,
        ),
    };
    let agent = agent_path.map(|path| AgentListener {
        listener: next(),
        path,
    });
    Ok(Spawned {
        pid,
        io,
        control: SpawnControl { pty, ..control },
        agent,
        agent_error,
    })
}

impl SpawnControl {
    /// Sends signal `sig` to the process (the gateway cannot: the pod does
    /// not share its process namespace).
    pub async fn signal(&self, sig: i32) -> Result<(), SpawnError> {
        self.send(&ClientMessage::Signal { signal: sig }).await
    }

    /// Waits for the process to end.
    pub async fn wait(&self) -> Result<ExitStatus, SpawnError> {
        let mut reader = self.reader.lock().await;
        loop {
            if let Some(status) = reader.status {
                return Ok(status);
            }
            match read_message(&self.stream, &mut reader).await? {
                Some(ServerMessage::Exited { code, signal }) => {
                    reader.status = Some(ExitStatus { code, signal })
                }
                Some(other) => return Err(SpawnError::Protocol(format!("expected exited, got {other:?}"))),
                None => {
                    return Err(SpawnError::Protocol(
                        "the shim closed the connection before the process ended".into(),
                    ));
                }
            }
        }
    }

    /// Sets the pty's window size; the process gets SIGWINCH.
    pub fn resize(&self, cols: u16, rows: u16) -> Result<(), SpawnError> {
        let pty = self.pty.as_ref().ok_or(SpawnError::NoPty)?;
        sys::set_window_size(pty.as_fd(), cols, rows)?;
        Ok(())
    }

    async fn send(&self, message: &ClientMessage) -> Result<(), SpawnError> {
        let frame = protocol::encode(message);
        let _writing = self.writer.lock().await;
        let mut sent = 0;
        while sent < frame.len() {
            sent += self
                .stream
                .async_io(Interest::WRITABLE, || self.stream.try_write(&frame[sent..]))
                .await?;
        }
        Ok(())
    }
}

impl Spawned {
    /// See [`SpawnControl::signal`].
    pub async fn signal(&self, sig: i32) -> Result<(), SpawnError> {
        self.control.signal(sig).await
    }

    /// See [`SpawnControl::wait`].
    pub async fn wait(&self) -> Result<ExitStatus, SpawnError> {
        self.control.wait().await
    }

    /// See [`SpawnControl::resize`].
    pub fn resize(&self, cols: u16, rows: u16) -> Result<(), SpawnError> {
        self.control.resize(cols, rows)
    }
}

/// Reads the next message, collecting any fds that come with the bytes.
async fn read_message(stream: &UnixStream, reader: &mut Reader) -> Result<Option<ServerMessage>, SpawnError> {
    loop {
        if let Some(body) = protocol::take_frame(&mut reader.buf, MAX_RESPONSE_BYTES)? {
            let message = serde_json::from_slice(&body).map_err(|e| SpawnError::Protocol(e.to_string()))?;
            return Ok(Some(message));
        }
        if reader.eof {
            if reader.buf.is_empty() {
                return Ok(None);
            }
            return Err(SpawnError::Protocol(
                "the connection ended inside a message".into(),
            ));
        }
        let mut chunk = [0u8; 4096];
        let (n, fds) = stream
            .async_io(Interest::READABLE, || {
                sys::recv_with_fds(stream.as_fd(), &mut chunk)
            })
            .await?;
        reader.fds.extend(fds);
        if n == 0 {
            reader.eof = true;
        }
        reader.buf.extend_from_slice(&chunk[..n]);
    }
}
