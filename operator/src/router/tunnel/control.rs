//! The control stream: what the sidecar reports over its tunnel, written
//! into the Container's status (the sidecar has no Kubernetes credentials).
//!
//! Each concern is applied under its own field manager and each apply
//! carries the whole of its concern, because server-side apply removes the
//! fields a manager applied before and omits now. Writes happen beside the
//! reading, latest report first per concern: a slow or failing API delays
//! status, never the tunnel, and a failed write is retried a few times with
//! backoff and never closes the tunnel.

use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder};
use hatchway_api::control::{self as protocol, ControlError, ControlMessage};
use hatchway_api::crd::ContainerStatus;
use hatchway_api::status::{MANAGER_EXIT, MANAGER_PORTS, MANAGER_SESSION, MANAGER_TUNNEL};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::sync::{mpsc, oneshot};
use tokio_util::compat::FuturesAsyncReadCompatExt;
use tokio_util::sync::CancellationToken;

use super::Peer;
use crate::router::Router;

/// The waits between attempts at one status write: 250 ms doubling, four
/// retries, then it is given up (a newer report for the same concern
/// starts again).
const RETRIES: ExponentialBuilder = ExponentialBuilder::new()
    .with_min_delay(Duration::from_millis(250))
    .with_max_delay(Duration::from_secs(2))
    .with_max_times(4);
/// Reports waiting for the writer; when it is this far behind, reading
/// waits (the sidecar's own buffers take the rest).
const UPDATE_QUEUE: usize = 8;

/// Why reading a control message failed.
#[derive(Debug, thiserror::Error)]
enum ReadError {
    /// The stream failed.
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// The bytes are not a control message.
    #[error(transparent)]
    Control(#[from] ControlError),
}

/// A status apply waiting to be written.
#[derive(Debug)]
struct Update {
    manager: &'static str,
    status: ContainerStatus,
    /// The waits left before the next attempts.
    retries: ExponentialBackoff,
    /// Failed attempts so far.
    failures: u32,
}

impl Update {
    /// Boxed: a status is about half a KiB, and tokio's channel allocates
    /// its slots 32 at a time whatever its bound (14 KiB per tunnel, most
    /// of an idle tunnel's memory, before they were boxed).
    fn new(manager: &'static str, status: ContainerStatus) -> Box<Self> {
        Box::new(Self {
            manager,
            status,
            retries: RETRIES.build(),
            failures: 0,
        })
    }
}

/// Reads the control stream once the sidecar opens it (`stream`), until it
/// ends, and writes status. Cancels `close` when the sidecar says it is
/// another container. Once `close` is cancelled (the session is over),
/// queued reports are still written but the tunnel address is not: another
/// replica may hold the sidecar's new tunnel by then.
pub(super) async fn serve(
    router: &Router,
    peer: &Peer,
    stream: oneshot::Receiver<yamux::Stream>,
    close: &CancellationToken,
) {
    // An error: the session ended before the sidecar opened the stream.
    let Ok(stream) = stream.await else { return };
    let (updates, queue) = mpsc::channel(UPDATE_QUEUE);
    tokio::join!(
        read(router, peer, stream.compat(), updates, close),
        write(router, peer, queue, close)
    );
}

/// The type label of a message, for metrics.
fn label(message: &ControlMessage) -> &'static str {
    match message {
        ControlMessage::Hello { .. } => "hello",
        ControlMessage::ListeningPorts { .. } => "listening_ports",
        ControlMessage::SessionStarted { .. } => "session_started",
        ControlMessage::SessionEnded { .. } => "session_ended",
        ControlMessage::WorkloadExited { .. } => "workload_exited",
        ControlMessage::Unknown => "unknown",
    }
}

/// Reads one message; `None` at the end of the stream. No read timeout: the
/// stream is idle for as long as nothing changes. The size limit applies
/// before the body is read.
async fn read_message<R: AsyncRead + Unpin>(stream: &mut R) -> Result<Option<ControlMessage>, ReadError> {
    let mut header = [0u8; protocol::HEADER_BYTES];
    match stream.read_exact(&mut header).await {
        Ok(_) => {}
        Err(error) if error.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(error) => return Err(error.into()),
    }
    let mut body = vec![0; protocol::body_len(header)?];
    stream.read_exact(&mut body).await?;
    Ok(Some(protocol::decode(&body)?))
}

/// The status apply a message asks for, if any. `session_recorded` keeps
/// `interactiveSessionStarted` to one write per tunnel.
fn update_for(router: &Router, message: ControlMessage, session_recorded: &mut bool) -> Option<Box<Update>> {
    match message {
        ControlMessage::Hello {
            certificate_sha256,
            host_key,
            host_key_fingerprint,
            ..
        } => Some(Update::new(
            MANAGER_TUNNEL,
            ContainerStatus::tunnel_connected(
                &router.settings.self_url,
                certificate_sha256,
                host_key_fingerprint,
                host_key,
            ),
        )),
        ControlMessage::ListeningPorts { ports } => {
            Some(Update::new(MANAGER_PORTS, ContainerStatus::listening(&ports)))
        }
        ControlMessage::SessionStarted { .. } if !*session_recorded => {
            *session_recorded = true;
            Some(Update::new(MANAGER_SESSION, ContainerStatus::session_started()))
        }
        ControlMessage::WorkloadExited { exit_code } => {
            Some(Update::new(MANAGER_EXIT, ContainerStatus::exited(exit_code)))
        }
        ControlMessage::SessionStarted { .. }
        | ControlMessage::SessionEnded { .. }
        | ControlMessage::Unknown => None,
    }
}

async fn read<R: AsyncRead + Unpin>(
    router: &Router,
    peer: &Peer,
    mut stream: R,
    updates: mpsc::Sender<Box<Update>>,
    close: &CancellationToken,
) {
    let mut hello = false;
    let mut session_recorded = false;
    loop {
        let message = match read_message(&mut stream).await {
            Ok(Some(message)) => message,
            Ok(None) => return tracing::debug!("the sidecar closed the control stream"),
            Err(ReadError::Io(error)) => return tracing::debug!(%error, "control stream ended"),
            Err(ReadError::Control(error)) => {
                // The framing cannot be trusted past this point. The tunnel
                // still carries streams; reports resume when it reconnects.
                router
                    .metrics
                    .control_messages
                    .with_label_values(&["invalid"])
                    .inc();
                return tracing::warn!(%error, "invalid control message; no more reports are read on this tunnel");
            }
        };
        router
            .metrics
            .control_messages
            .with_label_values(&[label(&message)])
            .inc();
        match &message {
            ControlMessage::Hello { container_uid, .. } if *container_uid != peer.uid => {
                tracing::warn!(
                    hello_uid = container_uid,
                    "the sidecar's hello names another container than its tunnel proved; closing the tunnel"
                );
                return close.cancel();
            }
            ControlMessage::Hello { .. } => hello = true,
            _ if !hello => {
                tracing::warn!(
                    kind = label(&message),
                    "the sidecar's first control message is not a hello; closing the tunnel"
                );
                return close.cancel();
            }
            _ => {}
        }
        if let Some(update) = update_for(router, message, &mut session_recorded)
            && updates.send(update).await.is_err()
        {
            return;
        }
    }
}

/// Queues `update`, replacing a queued one for the same concern (the newer
/// report carries the whole concern).
fn queue(pending: &mut Vec<Update>, update: Box<Update>) {
    match pending.iter_mut().find(|p| p.manager == update.manager) {
        Some(queued) => *queued = *update,
        None => pending.push(*update),
    }
}

async fn write(
    router: &Router,
    peer: &Peer,
    mut updates: mpsc::Receiver<Box<Update>>,
    close: &CancellationToken,
) {
    // At most one per concern, oldest first.
    let mut pending: Vec<Update> = Vec::new();
    let mut reading = true;
    loop {
        if pending.is_empty() {
            // An idle tunnel keeps no queue.
            pending.shrink_to_fit();
            match updates.recv().await {
                Some(update) => queue(&mut pending, update),
                None => return,
            }
        }
        while let Ok(update) = updates.try_recv() {
            queue(&mut pending, update);
        }
        let mut update = pending.remove(0);
        if update.manager == MANAGER_TUNNEL && close.is_cancelled() {
            tracing::debug!("the tunnel closed; not recording it in status");
            continue;
        }
        let result = router
            .cluster
            .apply_status(&peer.namespace, &peer.name, update.manager, update.status.clone())
            .await;
        let label = if result.is_ok() { "ok" } else { "error" };
        router.metrics.status_writes.with_label_values(&[label]).inc();
        let Err(error) = result else {
            tracing::debug!(manager = update.manager, "status written");
            continue;
        };
        let failures = update.failures + 1;
        let Some(delay) = update.retries.next() else {
            tracing::warn!(%error, manager = update.manager, failures, "writing status failed; giving up");
            continue;
        };
        tracing::warn!(%error, manager = update.manager, failures, "writing status failed; retrying");
        queue_unless_newer(&mut pending, Update { failures, ..update });
        // Wait before retrying, taking newer reports meanwhile.
        let mut sleep = std::pin::pin!(tokio::time::sleep(delay));
        loop {
            tokio::select! {
                _ = &mut sleep => break,
                update = updates.recv(), if reading => match update {
                    Some(update) => queue(&mut pending, update),
                    None => reading = false,
                },
            }
        }
        if !reading && pending.is_empty() {
            return;
        }
    }
}

/// Queues a retry unless a newer report for its concern is already queued.
fn queue_unless_newer(pending: &mut Vec<Update>, retry: Update) {
    if !pending.iter().any(|p| p.manager == retry.manager) {
        pending.push(retry);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newer_reports_replace_queued_ones_of_their_concern() {
        let mut pending = Vec::new();
        let ports = |p: u16| ContainerStatus::listening(&[p]);
        queue(&mut pending, Update::new(MANAGER_PORTS, ports(1)));
        queue(
            &mut pending,
            Update::new(MANAGER_EXIT, ContainerStatus::exited(2)),
        );
        queue(&mut pending, Update::new(MANAGER_PORTS, ports(3)));
        let got: Vec<_> = pending.iter().map(|u| (u.manager, u.status.clone())).collect();
        assert_eq!(
            got,
            vec![
                (MANAGER_PORTS, ports(3)),
                (MANAGER_EXIT, ContainerStatus::exited(2))
            ]
        );
        queue_unless_newer(&mut pending, *Update::new(MANAGER_PORTS, ports(0)));
        assert_eq!(pending[0].status, ports(3));
        queue_unless_newer(
            &mut pending,
            *Update::new(MANAGER_SESSION, ContainerStatus::session_started()),
        );
        assert_eq!(pending.len(), 3);
    }

    #[test]
    fn retries_back_off_then_give_up() {
        let delays: Vec<Duration> = RETRIES.build().collect();
        assert_eq!(delays, [250, 500, 1000, 2000].map(Duration::from_millis));
    }

    #[tokio::test]
    async fn messages_are_framed_and_limited() {
        let frame = protocol::encode(&ControlMessage::WorkloadExited { exit_code: 3 }).unwrap();
        let mut reader = frame.as_slice();
        assert_eq!(
            read_message(&mut reader).await.unwrap(),
            Some(ControlMessage::WorkloadExited { exit_code: 3 })
        );
        let oversized = ((protocol::MAX_MESSAGE_BYTES + 1) as u32).to_be_bytes();
        let mut reader = oversized.as_slice();
        assert!(matches!(
            read_message(&mut reader).await,
            Err(ReadError::Control(ControlError::TooLarge(_)))
        ));
        let mut empty: &[u8] = &[];
        assert!(read_message(&mut empty).await.unwrap().is_none());
    }
}
