//! `POST /portforward?port=N` with `Upgrade: hatchway-udp`: one flow of
//! UDP datagrams ([`hatchway_api::datagrams`]) to `127.0.0.1:N` inside the
//! pod, from a socket `connect`ed to it (so only that port's answers come
//! back). The flow ends when the stream does, or after [`IDLE`] without a
//! datagram either way.

use std::sync::Arc;
use std::time::Duration;

use hatchway_api::datagrams;
use http::{Request, Response, StatusCode, header};
use hyper_util::rt::TokioIo;
use tokio::net::UdpSocket;

use crate::body::{Body, RequestBody, empty, text};
use crate::report::{Reporter, Who};

/// A flow with no datagram either way this long ends (the CLI's own idle
/// time is shorter: it opens a new flow for the next datagram).
pub const IDLE: Duration = Duration::from_secs(120);

/// Serves one UDP flow to `port` (already parsed and allowed by the
/// Container's rule: [`crate::portforward::serve`]).
pub async fn serve(
    mut req: Request<RequestBody>,
    port: u16,
    reporter: Arc<Reporter>,
    who: Who,
) -> Response<Body> {
    let socket = match UdpSocket::bind(("127.0.0.1", 0)).await {
        Ok(socket) => socket,
        Err(error) => return text(StatusCode::BAD_GATEWAY, format!("a UDP socket: {error}")),
    };
    if let Err(error) = socket.connect(("127.0.0.1", port)).await {
        return text(StatusCode::BAD_GATEWAY, format!("UDP port {port}: {error}"));
    }
    let on_upgrade = hyper::upgrade::on(&mut req);
    crate::spawn(async move {
        let upgraded = match on_upgrade.await {
            Ok(upgraded) => upgraded,
            Err(error) => return tracing::debug!(%error, port, "UDP port-forward upgrade failed"),
        };
        let session = reporter.session(&who, "portforward-udp", Some(format!("port {port}")));
        relay(TokioIo::new(upgraded), socket, &session, IDLE).await;
    });
    Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(header::CONNECTION, "upgrade")
        .header(header::UPGRADE, hatchway_api::wire::UPGRADE_UDP)
        .body(empty())
        .expect("static response parts are valid")
}

/// Datagrams both ways until the stream ends or `idle` passes quietly.
/// Datagrams waiting on either side go on together: those already read
/// from the stream are sent one after another, those waiting in the socket
/// are framed into one write.
async fn relay<S>(stream: S, socket: UdpSocket, session: &crate::report::Session, idle: Duration)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    use std::sync::atomic::Ordering;
    use tokio::io::AsyncWriteExt;
    let (from_user, mut to_user) = tokio::io::split(stream);
    let mut from_user = datagrams::Reader::new(from_user);
    let mut received = vec![0u8; datagrams::MAX_DATAGRAM];
    let mut batch = Vec::with_capacity(datagrams::BATCH + 2 + datagrams::MAX_DATAGRAM);
    let mut quiet = datagrams::Quiet::new(idle);
    loop {
        tokio::select! {
            datagram = from_user.next() => {
                let mut next = match datagram {
                    Ok(Some(datagram)) => Some(datagram),
                    Ok(None) | Err(_) => return,
                };
                while let Some(datagram) = next {
                    // Nothing listening yet is the app's business: the
                    // datagram is lost, as UDP's are.
                    let _ = socket.send(&datagram).await;
                    session.bytes_in.fetch_add(datagram.len() as u64, Ordering::Relaxed);
                    next = match from_user.buffered() {
                        Ok(next) => next,
                        Err(_) => return,
                    };
                }
                quiet.heard();
            }
            first = socket.recv(&mut received) => {
                let mut got = first;
                loop {
                    match got {
                        Ok(n) => {
                            datagrams::encode(&mut batch, &received[..n]).expect("a UDP datagram fits a frame");
                            session.bytes_out.fetch_add(n as u64, Ordering::Relaxed);
                        }
                        // ICMP port unreachable from an earlier send: go on.
                        Err(error) if error.kind() == std::io::ErrorKind::ConnectionRefused => {}
                        Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => break,
                        Err(_) => return,
                    }
                    if batch.len() >= datagrams::BATCH {
                        break;
                    }
                    got = socket.try_recv(&mut received);
                }
                if !batch.is_empty() {
                    if to_user.write_all(&batch).await.is_err() || to_user.flush().await.is_err() {
                        return;
                    }
                    batch.clear();
                }
                quiet.heard();
            }
            () = quiet.expired() => return,
        }
    }
}
