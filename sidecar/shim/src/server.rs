//! The spawn server: the shim's end of the unix socket the gateway uses to
//! start processes inside the workload container (see docs/shim.md for
//! the protocol and for why the socket is safe).

use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::Interest;
use tokio::net::{UnixListener, UnixStream};
use tracing::{Instrument, debug, info_span, warn};

use crate::protocol::{self, ClientMessage, ExitStatus, MAX_REQUEST_BYTES, ServerMessage};
use crate::reaper::Reaper;
use crate::session::{self, Refusal, Workload};
use crate::sys;

/// How long a client may take to send its request after connecting.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Highest signal number accepted from a client (SIGRTMAX on Linux).
const MAX_SIGNAL: i32 = 64;

/// Who may use the socket, and what the sessions run in.
#[derive(Debug, Clone)]
pub(crate) struct Policy {
    pub workload: Workload,
    /// Peers (by SO_PEERCRED uid) allowed besides root and the workload's
    /// own uid: a sidecar running as a third uid.
    pub allowed_uids: Vec<u32>,
    /// Only peers outside the shim's PID namespace: in a pod that does not
    /// share its process namespace, that is the sidecar and never a
    /// workload process (docs/security.md).
    pub peer_outside_pid_namespace: bool,
}

/// Why a peer may not use the socket: the message it gets.
pub(crate) fn refusal(policy: &Policy, uid: u32, pid: Option<i32>) -> Option<String> {
    if policy.peer_outside_pid_namespace && pid != Some(0) {
        // SO_PEERCRED gives 0 for a peer whose pid this namespace cannot
        // name; every process of the workload container has one.
        let pid = pid.map_or_else(|| "unknown".to_owned(), |p| p.to_string());
        return Some(format!(
            "the spawn socket serves only the Hatchway gateway: this peer (pid {pid}, uid {uid}) runs inside the workload container"
        ));
    }
    if uid == 0 || uid == policy.workload.uid || policy.allowed_uids.contains(&uid) {
        None
    } else {
        Some(format!("uid {uid} may not use the spawn socket"))
    }
}

/// Binds the abstract unix socket `name` (no file: nothing in a volume the
/// workload writes can replace or redirect it). A name already taken is
/// an error, never shared.
pub(crate) fn bind(name: &str) -> io::Result<UnixListener> {
    let addr = SocketAddr::from_abstract_name(name.as_bytes())?;
    let listener = std::os::unix::net::UnixListener::bind_addr(&addr)?;
    listener.set_nonblocking(true)?;
    UnixListener::from_std(listener)
}

/// Accepts connections forever, one task per session.
pub(crate) async fn serve(listener: UnixListener, reaper: Arc<Reaper>, policy: Arc<Policy>) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                let (reaper, policy) = (Arc::clone(&reaper), Arc::clone(&policy));
                tokio::spawn(async move {
                    let span = info_span!(
                        "spawn_session",
                        peer_uid = tracing::field::Empty,
                        pid = tracing::field::Empty
                    );
                    handle(stream, reaper, policy).instrument(span).await;
                });
            }
            Err(error) => {
                // EMFILE and friends: back off instead of spinning.
                warn!(%error, "accepting a spawn connection failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

async fn handle(stream: UnixStream, reaper: Arc<Reaper>, policy: Arc<Policy>) {
    let (peer_uid, peer_pid) = match stream.peer_cred() {
        Ok(cred) => (cred.uid(), cred.pid()),
        Err(error) => {
            warn!(%error, "cannot read the spawn client's credentials");
            return;
        }
    };
    tracing::Span::current().record("peer_uid", peer_uid);
    if let Some(message) = refusal(&policy, peer_uid, peer_pid) {
        warn!(peer_pid, "refused a spawn connection: {message}");
        let _ = send(&stream, &ServerMessage::Error { message }, &[]).await;
        return;
    }
    if let Err(error) = session(stream, reaper, policy).await {
        debug!(%error, "spawn connection ended with an error");
    }
}

async fn session(mut stream: UnixStream, reaper: Arc<Reaper>, policy: Arc<Policy>) -> io::Result<()> {
    let request = match tokio::time::timeout(
        REQUEST_TIMEOUT,
        protocol::read_frame(&mut stream, MAX_REQUEST_BYTES),
    )
    .await
    {
        Ok(Ok(Some(body))) => body,
        Ok(Ok(None)) => return Ok(()),
        Ok(Err(error)) => return refuse(&stream, &format!("bad spawn request: {error}")).await,
        Err(_) => return refuse(&stream, "no spawn request within 30 seconds").await,
    };
    let request = match serde_json::from_slice::<ClientMessage>(&request) {
        Ok(ClientMessage::Spawn(request)) => request,
        Ok(other) => return refuse(&stream, &format!("expected a spawn request, got {other:?}")).await,
        Err(error) => return refuse(&stream, &format!("bad spawn request: {error}")).await,
    };

    // Reading /etc files and forking are blocking calls.
    let workload = policy.workload.clone();
    let spawn_reaper = Arc::clone(&reaper);
    let spawned = tokio::task::spawn_blocking(move || {
        let mut prepared = session::prepare(&request, &workload)?;
        let program = prepared.program.clone();
        let result = spawn_reaper.spawn(&mut prepared.command);
        // Closes the child's ends in this process.
        drop(prepared.command);
        let (child, status) = result.map_err(|source| Refusal::Spawn { program, source })?;
        Ok::<_, Refusal>((
            child.id(),
            status,
            prepared.io,
            prepared.agent,
            prepared.agent_error,
        ))
    })
    .await
    .map_err(io::Error::other)?;
    let (pid, mut status, io, agent, agent_error) = match spawned {
        Ok(spawned) => spawned,
        Err(refusal) => return refuse(&stream, &refusal.to_string()).await,
    };
    tracing::Span::current().record("pid", pid);
    debug!("session started");

    let (agent_listener, agent_path, _agent_removal) = match agent {
        Some(agent) => (Some(agent.listener), Some(agent.path), Some(agent.made)),
        None => (None, None, None),
    };
    let mut fds: Vec<BorrowedFd<'_>> = io.fds().into_iter().map(|fd| fd.as_fd()).collect();
    fds.extend(agent_listener.as_ref().map(|fd| fd.as_fd()));
    let message = ServerMessage::Spawned {
        pid,
        io: io.kind(),
        agent: agent_path,
        agent_error,
    };
    let sent = send(&stream, &message, &fds).await;
    // The client has its copies now (or never will): ours must close, or
    // the session would never see EOF on its stdin / hang up. The agent
    // socket's directory stays until this function returns: the session's
    // end.
    drop(fds);
    drop(io);
    drop(agent_listener);
    if let Err(error) = sent {
        hang_up(pid);
        return Err(error);
    }

    let pid = pid as i32;
    loop {
        tokio::select! {
            biased;
            ended = &mut status => {
                let ended = ended.unwrap_or(ExitStatus { code: None, signal: None });
                debug!(?ended, "session ended");
                let message = ServerMessage::Exited { code: ended.code, signal: ended.signal };
                return send(&stream, &message, &[]).await;
            }
            frame = protocol::read_frame(&mut stream, MAX_REQUEST_BYTES) => match frame {
                Ok(Some(body)) => match serde_json::from_slice::<ClientMessage>(&body) {
                    Ok(ClientMessage::Signal { signal }) if (1..=MAX_SIGNAL).contains(&signal) => {
                        if let Err(error) = sys::kill(pid, signal) {
                            debug!(%error, signal, "cannot signal the session");
                        }
                    }
                    other => debug!(?other, "ignored an unexpected message from the spawn client"),
                },
                Ok(None) | Err(_) => {
                    // The client is gone: like a terminal hangup.
                    debug!("spawn client disconnected: hanging up the session");
                    hang_up(pid as u32);
                    return Ok(());
                }
            },
        }
    }
}

/// SIGHUP (then SIGCONT, so stopped jobs see it) to the session's process
/// group, as the kernel does on a terminal hangup.
pub(crate) fn hang_up(pid: u32) {
    let group = -(pid as i32);
    if sys::kill(group, libc::SIGHUP).is_err() {
        let _ = sys::kill(pid as i32, libc::SIGHUP);
    }
    let _ = sys::kill(group, libc::SIGCONT);
}

async fn refuse(stream: &UnixStream, message: &str) -> io::Result<()> {
    debug!(message, "refused a spawn request");
    send(
        stream,
        &ServerMessage::Error {
            message: message.to_string(),
        },
        &[],
    )
    .await
}

/// Sends one frame, with `fds` attached to its first byte.
async fn send(stream: &UnixStream, message: &ServerMessage, fds: &[BorrowedFd<'_>]) -> io::Result<()> {
    let frame = protocol::encode(message);
    let mut sent = 0;
    while sent < frame.len() {
        let attach = if sent == 0 { fds } else { &[] };
        sent += stream
            .async_io(Interest::WRITABLE, || {
                sys::send_with_fds(stream.as_fd(), &frame[sent..], attach)
            })
            .await?;
    }
    Ok(())
}
