//! `ssh -A` (OpenSSH's `auth-agent-req@openssh.com`): the session's
//! process finds a socket in `SSH_AUTH_SOCK`, and each connection to it
//! becomes an `auth-agent@openssh.com` channel to the client's agent.
//!
//! Whoever can connect to that socket can ask the client's agent to sign,
//! so it is off unless the Container allows it (`spec.portForward.agent`).
//! The shim makes the socket in a 0700 directory owned by the session's
//! user (sidecar/shim/src/agent.rs) and removes it when the session ends;
//! this side accepts on the listening fd it passed over and relays.

use std::os::fd::OwnedFd;
use std::sync::Arc;

use russh::server::Handle;
use tokio::net::UnixListener;
use tokio::task::JoinHandle;

use crate::report::{Reporter, Who};

/// Relays the agent socket's connections to the client while it runs;
/// aborted when dropped (the process it was made for has ended).
pub struct Relay(JoinHandle<()>);

impl Drop for Relay {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// What the shim made of a session's request for an agent socket: a
/// relay for the socket, or the failure audited (and, on a terminal,
/// shown: a command's stderr stays its own).
pub async fn start(
    agent: Option<hatchway_shim::AgentListener>,
    error: Option<String>,
    job: &super::process::Job,
    channel: &russh::Channel<russh::server::Msg>,
) -> Option<Relay> {
    if let Some(error) = error {
        job.reporter.audit(&format!(
            "agent forwarding failed ({error}) {}",
            job.params.who.audited()
        ));
        if job.pty.is_some() {
            let message = format!("hatchway: agent forwarding failed: {error}\r\n");
            let _ = channel.extended_data(1, message.as_bytes()).await;
        }
    }
    let agent = agent?;
    relay(
        agent.listener,
        agent.path,
        job.handle.clone(),
        job.params.who.clone(),
        job.reporter.clone(),
    )
    .inspect_err(|error| tracing::warn!(%error, "agent socket"))
    .ok()
}

/// Starts relaying connections on `listener` (the shim's agent socket at
/// `path`) to the client behind `handle`.
fn relay(
    listener: OwnedFd,
    path: String,
    handle: Handle,
    who: Who,
    reporter: Arc<Reporter>,
) -> std::io::Result<Relay> {
    let listener = std::os::unix::net::UnixListener::from(listener);
    listener.set_nonblocking(true)?;
    let listener = UnixListener::from_std(listener)?;
    reporter.audit(&format!("agent forwarding at {path} {}", who.audited()));
    Ok(Relay(crate::spawn(accept(listener, handle, who, reporter))))
}

async fn accept(listener: UnixListener, handle: Handle, who: Who, reporter: Arc<Reporter>) {
    loop {
        let (unix, _) = match listener.accept().await {
            Ok(pair) => pair,
            Err(error) => {
                tracing::debug!(%error, "agent socket accept");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        let handle = handle.clone();
        let session = reporter.session(&who, "agent", None);
        crate::spawn(async move {
            let channel = match handle.channel_open_agent().await {
                Ok(channel) => channel,
                Err(error) => {
                    session.set_exit("the client refused the agent channel");
                    return tracing::debug!(%error, "the client refused an auth-agent channel");
                }
            };
            // The client's agent is the user's side; the socket's peer the
            // container's.
            crate::relay::relay(
                channel.into_stream(),
                unix,
                session.bytes_in.clone(),
                session.bytes_out.clone(),
            )
            .await;
        });
    }
}
