//! One tunnel's life after the 101: the yamux session over the upgraded
//! connection, registered by container UID until it ends.
//!
//! yamux 0.14 makes progress only while [`yamux::Connection::poll_next_inbound`]
//! is polled, and has no handle to open streams from elsewhere: so one task
//! owns the connection, polls it all the time, and opens the streams that
//! [`super::Registry::open_stream`] asks for over a channel. The same task
//! reads the control stream ([`super::control`]); an idle tunnel is this one
//! task, the connection's buffers and its registry entry.

use std::future::{Future, poll_fn};
use std::pin::pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::sync::{mpsc, oneshot};
use tokio_util::compat::TokioAsyncReadCompatExt;
use tokio_util::sync::CancellationToken;

use super::registry::{Handle, NotRegistered, OpenRequest, Registered};
use super::{Peer, control};
use crate::router::Router;
use hatchway_api::coalesce::Coalesce;

/// Stream requests waiting for the session's task.
const OPEN_QUEUE: usize = 32;
/// Time a closing session gets to tell the sidecar (yamux GoAway) before
/// the connection is dropped.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a session ended.
#[derive(Debug)]
enum End {
    /// The sidecar closed the connection.
    Closed,
    /// The connection failed.
    Failed(yamux::ConnectionError),
    /// This side closed it: replaced, refused, or shutting down.
    Closing,
}

/// Runs the tunnel upgraded by `upgrade` for `peer` until it ends.
pub(super) async fn run(router: Arc<Router>, upgrade: OnUpgrade, peer: Peer, stream_proof: Option<Arc<str>>) {
    let upgraded = match upgrade.await {
        Ok(upgraded) => upgraded,
        Err(error) => return tracing::debug!(%error, "the tunnel's upgrade failed"),
    };
    let connection = yamux::Connection::new(
        Coalesce::new(TokioIo::new(upgraded)).compat(),
        hatchway_api::tunnel::yamux_config(),
        yamux::Mode::Server,
    );

    let (opener, opens) = mpsc::channel(OPEN_QUEUE);
    let close = CancellationToken::new();
    let handle = Handle {
        opener,
        stream_proof,
        close: close.clone(),
    };
    let metrics = &router.metrics;
    let id = match router.tunnels.register(&peer.uid, handle) {
        Ok((id, how)) => {
            let result = match how {
                Registered::New => {
                    metrics.tunnels_connected.inc();
                    "accepted"
                }
                Registered::Replaced => "replaced",
            };
            metrics.tunnel_attempts.with_label_values(&[result]).inc();
            tracing::info!(
                uid = peer.uid,
                replaced = how == Registered::Replaced,
                "tunnel connected"
            );
            id
        }
        Err(NotRegistered::Full) => {
            // Another tunnel took the last place after the check in
            // `accept`; the sidecar retries, perhaps at another replica.
            metrics
                .tunnel_attempts
                .with_label_values(&["over_capacity"])
                .inc();
            tracing::warn!(
                uid = peer.uid,
                max = router.tunnels.max(),
                "tunnel capacity reached; closing the new tunnel"
            );
            close_gracefully(connection).await;
            return;
        }
        Err(NotRegistered::Leaving) => {
            // The replica began shutting down after the check in `accept`.
            metrics
                .tunnel_attempts
                .with_label_values(&["shutting_down"])
                .inc();
            tracing::info!(uid = peer.uid, "shutting down; closing the new tunnel");
            close_gracefully(connection).await;
            return;
        }
    };

    let (control_tx, control_rx) = oneshot::channel();
    let driven = async {
        let end = drive(connection, opens, control_tx, &close).await;
        // Reports still queued are written; a stale tunnel address is not.
        close.cancel();
        if router.tunnels.unregister(&peer.uid, id) {
            metrics.tunnels_connected.dec();
        }
        match end {
            End::Closed => tracing::info!(uid = peer.uid, "tunnel closed by the sidecar"),
            End::Failed(error) => tracing::info!(uid = peer.uid, %error, "tunnel failed"),
            End::Closing => tracing::info!(uid = peer.uid, "tunnel closed by the router"),
        }
    };
    tokio::join!(driven, control::serve(&router, &peer, control_rx, &close));
}

/// Polls `connection` until it ends or `close` is cancelled, opening the
/// streams asked for on `opens` and handing the first inbound stream (the
/// control stream) to `control`.
async fn drive<T>(
    mut connection: yamux::Connection<T>,
    mut opens: mpsc::Receiver<OpenRequest>,
    control: oneshot::Sender<yamux::Stream>,
    close: &CancellationToken,
) -> End
where
    T: futures::AsyncRead + futures::AsyncWrite + Unpin,
{
    let mut control = Some(control);
    let mut waiting: Option<OpenRequest> = None;
    let mut closing = pin!(close.cancelled());
    let end = poll_fn(|cx| {
        if closing.as_mut().poll(cx).is_ready() {
            return Poll::Ready(End::Closing);
        }
        // Streams asked for. Opening one is local (the sidecar learns of it
        // with its first frame); it waits only when 256 opened streams are
        // not yet acknowledged, and the acknowledgements arrive below.
        loop {
            let request = match waiting.take() {
                Some(request) => request,
                None => match opens.poll_recv(cx) {
                    Poll::Ready(Some(request)) => request,
                    // The registry let go of this session.
                    Poll::Ready(None) => return Poll::Ready(End::Closing),
                    Poll::Pending => break,
                },
            };
            if request.is_closed() {
                continue; // The caller gave up.
            }
            match connection.poll_new_outbound(cx) {
                Poll::Ready(result) => {
                    let _ = request.send(result.map_err(|e| e.to_string()));
                }
                Poll::Pending => {
                    waiting = Some(request);
                    break;
                }
            }
        }
        // Frames in and out; inbound streams.
        loop {
            match connection.poll_next_inbound(cx) {
                Poll::Ready(Some(Ok(stream))) => match control.take() {
                    Some(control) => {
                        let _ = control.send(stream);
                    }
                    // The sidecar opens one stream, the control stream: any
                    // other is refused (dropping it resets it).
                    None => tracing::debug!("the sidecar opened a second stream; refused"),
                },
                Poll::Ready(Some(Err(error))) => return Poll::Ready(End::Failed(error)),
                Poll::Ready(None) => return Poll::Ready(End::Closed),
                Poll::Pending => return Poll::Pending,
            }
        }
    })
    .await;
    if let End::Closing = end {
        close_gracefully(connection).await;
    }
    end
}

/// Tells the sidecar the session is over (yamux GoAway, TLS close_notify),
/// giving up after [`CLOSE_TIMEOUT`] if it does not read.
async fn close_gracefully<T>(mut connection: yamux::Connection<T>)
where
    T: futures::AsyncRead + futures::AsyncWrite + Unpin,
{
    let closing = poll_fn(|cx| connection.poll_close(cx));
    match tokio::time::timeout(CLOSE_TIMEOUT, closing).await {
        Ok(Ok(())) => {}
        Ok(Err(error)) => tracing::debug!(%error, "closing a tunnel"),
        Err(_) => tracing::debug!("the sidecar did not take the tunnel's close in time; dropping it"),
    }
}
