//! Serving: TLS (HTTP/2 and HTTP/1.1 by ALPN), upgrades on HTTP/1.1,
//! limits and timeouts on every read, and a graceful drain.
//!
//! The tunnel proof binds to the TLS session through exported keying
//! material, and hyper owns the stream once it parses requests: so the
//! keying material is exported here, right after the handshake, and handed
//! to every request of the connection in [`ConnectionInfo`]. Requests are
//! then answered by the route table ([`super::routes`]).

use std::sync::Arc;
use std::time::Duration;

use hatchway_api::readahead::ReadAhead;
use hatchway_api::tunnel::{EKM_LABEL, EKM_LEN};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use rustls::ServerConfig;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt as _;

use super::Router;
use super::routes::{self, ConnectionInfo};

/// Open connections per client address, bounded: one address (a
/// misbehaving client, a scanner) cannot take every connection slot.
#[derive(Clone, Debug)]
pub struct PerClient {
    limit: usize,
    open: Arc<std::sync::Mutex<std::collections::HashMap<std::net::IpAddr, usize>>>,
}

/// One connection counted against its address until dropped.
#[derive(Debug)]
pub struct ClientPermit {
    ip: std::net::IpAddr,
    open: Arc<std::sync::Mutex<std::collections::HashMap<std::net::IpAddr, usize>>>,
}

impl PerClient {
    /// At most `limit` open connections per address.
    pub fn new(limit: usize) -> Self {
        Self {
            limit,
            open: Arc::default(),
        }
    }

    /// A permit for one more connection from `ip`, or `None` at the limit.
    pub fn acquire(&self, ip: std::net::IpAddr) -> Option<ClientPermit> {
        let mut open = self.open.lock().expect("not poisoned");
        let count = open.entry(ip).or_insert(0);
        if *count >= self.limit {
            return None;
        }
        *count += 1;
        Some(ClientPermit {
            ip,
            open: Arc::clone(&self.open),
        })
    }
}

impl Drop for ClientPermit {
    fn drop(&mut self) {
        let mut open = self.open.lock().expect("not poisoned");
        if let Some(count) = open.get_mut(&self.ip) {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.ip);
            }
        }
    }
}

/// Accepts connections on `listener` until `shutdown`, then stops accepting,
/// lets its tunnels go, and gives open requests `settings.drain_timeout` to
/// finish. Upgraded connections (shells, port-forwards) are not waited for:
/// they end after the drain, as with the process (resumable ones resume
/// through another replica).
pub async fn serve(
    router: Arc<Router>,
    listener: TcpListener,
    tls: Arc<ServerConfig>,
    shutdown: CancellationToken,
) {
    let tasks = TaskTracker::new();
    let table = routes::table(router.clone());
    accept(&router, listener, tls, table, &shutdown, &tasks).await;
    // The tunnels move now, not after the drain: a replica being deleted
    // leaves its Service's endpoints at once, so its peers no longer know
    // it and would refuse every request for a tunnel it kept draining.
    // Sidecars redial through the Service to a replica that stays.
    router.tunnels.leave();
    drain(&router, tasks).await;
    router.relays_closing.cancel();
}

/// Serves the aggregated API's `table` on `listener` (TLS asking for the
/// front proxy's client certificate) until `shutdown`, then drains as
/// [`serve`] does.
pub async fn serve_aggregated(
    router: Arc<Router>,
    listener: TcpListener,
    tls: Arc<ServerConfig>,
    table: axum::Router,
    shutdown: CancellationToken,
) {
    let tasks = TaskTracker::new();
    accept(&router, listener, tls, table, &shutdown, &tasks).await;
    drain(&router, tasks).await;
}

async fn drain(router: &Router, tasks: TaskTracker) {
    tasks.close();
    let drain = router.settings.drain_timeout;
    if tokio::time::timeout(drain, tasks.wait()).await.is_err() {
        tracing::warn!(
            ?drain,
            "requests still open after the drain timeout; closing them"
        );
    }
}

/// The accept loop: limits, TLS, keying material, HTTP/1.1 and h2 with
/// upgrades, `table` answering every request; returns when `shutdown`
/// fires (connections go on in `tasks`, finishing what is in flight).
async fn accept(
    router: &Arc<Router>,
    listener: TcpListener,
    tls: Arc<ServerConfig>,
    table: axum::Router,
    shutdown: &CancellationToken,
    tasks: &TaskTracker,
) {
    let acceptor = TlsAcceptor::from(tls);
    let permits = Arc::new(Semaphore::new(router.settings.max_connections));
    let per_client = PerClient::new(router.settings.max_connections_per_client);
    loop {
        let (stream, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(error) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(%error, "accepting a connection");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            tracing::warn!(%peer, limit = router.settings.max_connections, "connection limit reached; refusing");
            continue;
        };
        let Some(client_permit) = per_client.acquire(peer.ip()) else {
            router
                .metrics
                .auth_failures
                .with_label_values(&["client_connection_limit"])
                .inc();
            tracing::warn!(
                %peer,
                limit = router.settings.max_connections_per_client,
                "connection limit per client address reached; refusing"
            );
            continue;
        };
        let _ = stream.set_nodelay(true);
        // A tunnel or shell whose peer vanished (node lost, NAT timeout)
        // is found within about a minute instead of never.
        let keepalive = socket2::TcpKeepalive::new()
            .with_time(Duration::from_secs(30))
            .with_interval(Duration::from_secs(10))
            .with_retries(3);
        let _ = socket2::SockRef::from(&stream).set_tcp_keepalive(&keepalive);
        let router = router.clone();
        let table = table.clone();
        let acceptor = acceptor.clone();
        let shutdown = shutdown.clone();
        tasks.spawn(async move {
            let _permits = (permit, client_permit);
            let timeout = router.settings.header_read_timeout;
            let tls = match tokio::time::timeout(timeout, acceptor.accept(ReadAhead::new(stream))).await {
                Ok(Ok(tls)) => tls,
                Ok(Err(error)) => return tracing::debug!(%peer, %error, "TLS handshake failed"),
                Err(_) => return tracing::debug!(%peer, "TLS handshake timed out"),
            };
            let ekm = tls
                .get_ref()
                .1
                .export_keying_material([0u8; EKM_LEN], EKM_LABEL, None)
                .ok();
            let client_cert = tls
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|chain| chain.first())
                .map(|cert| cert.clone().into_owned());
            let info = Arc::new(ConnectionInfo {
                peer,
                ekm,
                client_cert,
            });
            let service = service_fn(move |mut req: http::Request<hyper::body::Incoming>| {
                req.extensions_mut().insert(info.clone());
                table.clone().oneshot(req)
            });
            let mut builder = auto::Builder::new(TokioExecutor::new());
            builder
                .http1()
                .timer(TokioTimer::new())
                .header_read_timeout(timeout)
                .max_buf_size(router.settings.max_header_bytes.max(8192));
            builder
                .http2()
                .timer(TokioTimer::new())
                .max_header_list_size(router.settings.max_header_bytes as u32)
                .keep_alive_interval(Some(Duration::from_secs(30)));
            let connection = builder.serve_connection_with_upgrades(TokioIo::new(tls), service);
            tokio::pin!(connection);
            let result = tokio::select! {
                result = connection.as_mut() => result,
                _ = shutdown.cancelled() => {
                    // Finish the requests in flight, take no new ones.
                    connection.as_mut().graceful_shutdown();
                    connection.await
                }
            };
            if let Err(error) = result {
                tracing::debug!(%peer, %error, "connection ended with an error");
            }
        });
    }
}

/// How many scrapes may be served at once on the metrics port.
const METRICS_CONNECTIONS: usize = 16;

/// Serves `GET /metrics` (and `/healthz`) on its own listener — HTTPS with
/// the router's certificate, HTTP/1.1 — until `shutdown`: the metrics stay
/// off the user-facing listener, so a NetworkPolicy or the Service can keep
/// them to Prometheus.
pub async fn serve_metrics(
    router: Arc<Router>,
    listener: TcpListener,
    tls: Arc<ServerConfig>,
    shutdown: CancellationToken,
) {
    // HTTP/1.1 only: a scraper offered h2 by ALPN would speak it.
    let mut tls = (*tls).clone();
    tls.alpn_protocols = vec![b"http/1.1".to_vec()];
    let acceptor = TlsAcceptor::from(Arc::new(tls));
    let table = routes::metrics_table(router.clone());
    let permits = Arc::new(Semaphore::new(METRICS_CONNECTIONS));
    loop {
        let (stream, peer) = tokio::select! {
            _ = shutdown.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(error) => {
                    tracing::warn!(%error, "accepting a metrics connection");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            continue;
        };
        let router = router.clone();
        let table = table.clone();
        let acceptor = acceptor.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let timeout = router.settings.header_read_timeout;
            let Ok(Ok(tls)) = tokio::time::timeout(timeout, acceptor.accept(ReadAhead::new(stream))).await
            else {
                return tracing::debug!(%peer, "metrics TLS handshake failed or timed out");
            };
            let service =
                service_fn(move |req: http::Request<hyper::body::Incoming>| table.clone().oneshot(req));
            let connection = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(timeout)
                .serve_connection(TokioIo::new(tls), service);
            if let Err(error) = connection.await {
                tracing::debug!(%peer, %error, "metrics connection ended with an error");
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_address_gets_its_own_bounded_share() {
        let limits = PerClient::new(2);
        let a: std::net::IpAddr = "10.0.0.1".parse().unwrap();
        let b: std::net::IpAddr = "10.0.0.2".parse().unwrap();
        let first = limits.acquire(a).unwrap();
        let _second = limits.acquire(a).unwrap();
        assert!(limits.acquire(a).is_none(), "a third from one address");
        assert!(limits.acquire(b).is_some(), "another address is not affected");
        drop(first);
        assert!(limits.acquire(a).is_some(), "a closed connection frees its slot");
        assert_eq!(
            limits.open.lock().unwrap().len(),
            1,
            "b's entry is gone with its permit"
        );
    }
}
