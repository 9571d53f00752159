//! The spawn protocol spoken on the shim's unix socket (see docs/shim.md).
//!
//! Every message is a frame: a 4-byte big-endian length, then that many
//! bytes of JSON. One connection is one session:
//!
//! ```text
//! client -> shim   {"type":"spawn", argv, command, env, cwd, user, pty}
//! shim -> client   {"type":"spawned","pid":N,"io":"pty"|"pipes",    + fds (SCM_RIGHTS)
//!                   "agent":PATH|null,"agent_error":TEXT|null}
//!              or  {"type":"error","message":"..."}                 then close
//! client -> shim   {"type":"signal","signal":N}                      any number of times
//! shim -> client   {"type":"exited","code":N|null,"signal":N|null}  once, then close
//! ```
//!
//! The client closing its end before `exited` hangs the session up: the
//! shim sends SIGHUP to the session's process group.

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt};

/// Largest request the shim accepts (argv and env can be long, not huge).
pub const MAX_REQUEST_BYTES: usize = 1024 * 1024;
/// Largest message the shim sends (errors and statuses are small).
pub const MAX_RESPONSE_BYTES: usize = 64 * 1024;

/// What to run inside the workload container.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct SpawnRequest {
    /// The program and its arguments, exec'd directly (PATH lookup applies).
    /// With neither `argv` nor `command`, the user's login shell runs as a
    /// login shell.
    pub argv: Option<Vec<String>>,
    /// A command line for the user's shell: runs `<shell> -c <command>`, as
    /// an SSH `exec` request expects. Exclusive with `argv`.
    pub command: Option<String>,
    /// Variables set over the shim's own environment and the defaults
    /// (HOME, USER, LOGNAME, SHELL, TERM, PATH).
    pub env: Vec<(String, String)>,
    /// Working directory; default: the user's home if it exists, else the
    /// workload's working directory.
    pub cwd: Option<String>,
    /// User name or numeric uid to run as; default: the workload's own user.
    pub user: Option<String>,
    /// Allocate a pty (the child's controlling terminal) instead of pipes.
    pub pty: Option<PtyRequest>,
    /// Run one of the shim's own helpers instead of `argv`/`command`: the
    /// shim execs its own binary (`/proc/self/exe`, the file it was started
    /// from, whatever the workload has since done to its path), never a
    /// program found on a path the workload can write.
    pub helper: Option<Helper>,
    /// Make an agent socket for the session (`ssh -A`): a 0700 directory
    /// under `/tmp` owned by the session's user, `SSH_AUTH_SOCK` set to the
    /// socket in it, the listening fd passed back after the I/O fds.
    pub agent: bool,
}

/// A program the shim's own binary provides.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Helper {
    /// `hatchway-sidecar sftp-server`: the SSH `sftp` subsystem.
    SftpServer,
}

impl Helper {
    /// The subcommand of the shim's binary that runs it.
    pub fn subcommand(self) -> &'static str {
        match self {
            Helper::SftpServer => "sftp-server",
        }
    }
}

/// The shim's own executable, as a path that resolves in the spawned
/// child (a fork of the shim) to the file the shim was started from.
pub const OWN_EXECUTABLE: &str = "/proc/self/exe";

/// A pty's initial settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PtyRequest {
    /// The TERM value for the session (e.g. `xterm-256color`).
    pub term: String,
    pub cols: u16,
    pub rows: u16,
}

/// How a spawned process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitStatus {
    /// The exit code, when it exited.
    pub code: Option<i32>,
    /// The signal that killed it, when it was killed.
    pub signal: Option<i32>,
}

impl ExitStatus {
    pub fn exited(code: i32) -> Self {
        Self {
            code: Some(code),
            signal: None,
        }
    }

    pub fn signaled(signal: i32) -> Self {
        Self {
            code: None,
            signal: Some(signal),
        }
    }

    /// The shell convention: the exit code, or 128 + the signal number.
    pub fn exit_code(&self) -> i32 {
        match (self.code, self.signal) {
            (Some(code), _) => code,
            (None, Some(signal)) => 128 + signal,
            (None, None) => 255,
        }
    }
}

/// Which fds come with a `spawned` message, in this order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum IoKind {
    /// One fd: the pty master.
    Pty,
    /// Three fds: stdin (write end), stdout (read end), stderr (read end).
    Pipes,
}

impl IoKind {
    pub fn fd_count(self) -> usize {
        match self {
            IoKind::Pty => 1,
            IoKind::Pipes => 3,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub(crate) enum ClientMessage {
    Spawn(SpawnRequest),
    Signal { signal: i32 },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub(crate) enum ServerMessage {
    Spawned {
        pid: u32,
        io: IoKind,
        /// The agent socket's path, when one was asked for and made: its
        /// listening fd follows the I/O fds.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        agent: Option<String>,
        /// Why the agent socket asked for could not be made (the session
        /// runs without one).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        agent_error: Option<String>,
    },
    Error {
        message: String,
    },
    Exited {
        code: Option<i32>,
        signal: Option<i32>,
    },
}

/// Encodes one message as a frame.
pub(crate) fn encode<T: Serialize>(message: &T) -> Vec<u8> {
    // Serializing these plain structs cannot fail (no maps with non-string
    // keys, no failing Serialize impls).
    let body = serde_json::to_vec(message).expect("protocol messages always serialize");
    let mut frame = Vec::with_capacity(4 + body.len());
    frame.extend_from_slice(&(body.len() as u32).to_be_bytes());
    frame.extend_from_slice(&body);
    frame
}

/// Splits one complete frame off the front of `buf`, if there is one.
/// A frame announcing more than `max` bytes is an error.
pub(crate) fn take_frame(buf: &mut Vec<u8>, max: usize) -> std::io::Result<Option<Vec<u8>>> {
    if buf.len() < 4 {
        return Ok(None);
    }
    let len = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
    if len > max {
        return Err(too_big(len, max));
    }
    if buf.len() < 4 + len {
        return Ok(None);
    }
    let body = buf[4..4 + len].to_vec();
    buf.drain(..4 + len);
    Ok(Some(body))
}

/// Reads one frame from a stream; `None` on a clean EOF between frames.
pub(crate) async fn read_frame<R: AsyncRead + Unpin>(
    reader: &mut R,
    max: usize,
) -> std::io::Result<Option<Vec<u8>>> {
    let mut len = [0u8; 4];
    let mut got = 0;
    while got < 4 {
        let n = reader.read(&mut len[got..]).await?;
        if n == 0 {
            if got == 0 {
                return Ok(None);
            }
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        got += n;
    }
    let len = u32::from_be_bytes(len) as usize;
    if len > max {
        return Err(too_big(len, max));
    }
    let mut body = vec![0u8; len];
    reader.read_exact(&mut body).await?;
    Ok(Some(body))
}

fn too_big(len: usize, max: usize) -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::InvalidData,
        format!("message of {len} bytes is over the {max}-byte limit"),
    )
}

#[cfg(test)]
mod tests;
