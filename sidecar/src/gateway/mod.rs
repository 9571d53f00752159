//! The gateway: a TLS server with a fresh self-signed certificate that
//! serves the router, directly or through tunnel streams (one code path).
//!
//! Every request must name this gateway's container UID (else 403) and
//! carry `X-Hatchway-Authorization`, the HMAC proof over this gateway's own
//! certificate (else 401, with a reason and nothing else). Accepted
//! requests are answered with `X-Hatchway-Authorization-Response`.
//!
//! Limits: a TLS handshake must finish and request headers must arrive
//! within their timeouts, headers are size-limited, and the number of
//! concurrent connections is capped; a slow or hostile client cannot pin
//! resources. The routes, and the proof check as their layer, are in
//! [`routes`].

/// The route table and the proof layer.
pub mod routes;
mod web_logins;

use std::sync::Arc;
use std::time::Duration;

use hatchway_api::proof::{self, CtrKey};
use hatchway_api::readahead::ReadAhead;
use hatchway_api::wire;
use http::{HeaderMap, HeaderValue, StatusCode};
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt as _;

use crate::metrics::Metrics;
use crate::report::Reporter;
use crate::tls::GatewayCert;
use crate::webdav::LogTree;

/// Resource limits of the gateway.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Concurrent connections (direct and tunnel streams together).
    pub max_connections: usize,
    /// Time allowed for the TLS handshake.
    pub handshake_timeout: Duration,
    /// Time allowed for a request's headers to arrive.
    pub header_timeout: Duration,
    /// Largest request head, in bytes (at least 8192).
    pub max_header_bytes: usize,
    /// Of `max_connections`, the most that web-app requests may hold at
    /// once: the rest stays for shells, logs and port-forwards, so a flood
    /// of slow requests to a public app cannot lock them out.
    pub max_web_requests: usize,
    /// A web-app request body with no bytes for this long is cut off (its
    /// slot freed).
    pub body_idle_timeout: Duration,
    /// How long a connection to a web app is kept idle for the next
    /// request (zero: none is kept).
    pub app_keepalive: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_connections: 512,
            handshake_timeout: Duration::from_secs(10),
            header_timeout: Duration::from_secs(10),
            max_header_bytes: 16 * 1024,
            max_web_requests: 384,
            body_idle_timeout: Duration::from_secs(60),
            app_keepalive: crate::proxy::APP_IDLE,
        }
    }
}

/// What a connection's requests must prove.
#[derive(Clone, Debug)]
pub(crate) enum Proof {
    /// TLS to this gateway's certificate (the direct port, and tunnel
    /// streams of a router that wraps each in TLS): an HMAC over it.
    Certificate,
    /// A tunnel stream without TLS of its own: the proof bound to that
    /// tunnel's TLS session.
    TunnelStream(Arc<str>),
}

/// Everything one gateway needs.
pub struct Gateway {
    /// This pod's container UID: the only one it serves.
    pub uid: String,
    /// The key proofs are made with.
    key: CtrKey,
    /// The certificate presented to the router.
    pub cert: GatewayCert,
    /// The log files WebDAV serves.
    pub tree: LogTree,
    /// Audit trail and reports.
    pub reporter: Arc<Reporter>,
    /// Counters.
    pub metrics: Metrics,
    /// Resource limits.
    pub limits: Limits,
    /// The SSH server for `/ssh`.
    pub ssh: Arc<crate::ssh::SshServer>,
    /// Resumable shells and port-forwards.
    pub resumable: Arc<crate::resumable::Registry>,
    /// Caps concurrent connections.
    connections: Arc<Semaphore>,
    /// Caps web-app requests within them.
    web_requests: Arc<Semaphore>,
    /// Web-app sessions already written to the audit trail.
    web_logins: web_logins::WebLogins,
    /// Connections to web apps kept between requests.
    pub(crate) apps: crate::proxy::AppConnections,
    /// The routes (built once: see [`routes`]).
    table: axum::Router,
}

impl Gateway {
    /// Assembles a gateway.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        uid: String,
        key: CtrKey,
        cert: GatewayCert,
        tree: LogTree,
        reporter: Arc<Reporter>,
        metrics: Metrics,
        limits: Limits,
        ssh: Arc<crate::ssh::SshServer>,
        resumable: Arc<crate::resumable::Registry>,
    ) -> Arc<Self> {
        let connections = Arc::new(Semaphore::new(limits.max_connections));
        let web_requests = Arc::new(Semaphore::new(limits.max_web_requests));
        let apps = crate::proxy::AppConnections::new(limits.app_keepalive, crate::proxy::APP_IDLE_PER_PORT);
        Arc::new(Self {
            uid,
            key,
            cert,
            tree,
            reporter,
            metrics,
            limits,
            ssh,
            resumable,
            connections,
            web_requests,
            web_logins: web_logins::WebLogins::default(),
            apps,
            table: routes::table(),
        })
    }

    /// Accepts direct connections until `shutdown`.
    pub async fn serve(self: Arc<Self>, listener: TcpListener, shutdown: CancellationToken) {
        loop {
            let (stream, peer) = tokio::select! {
                _ = shutdown.cancelled() => return,
                accepted = listener.accept() => match accepted {
                    Ok(pair) => pair,
                    Err(error) => {
                        tracing::warn!(%error, "accepting a gateway connection");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
            };
            let _ = stream.set_nodelay(true);
            let gateway = self.clone();
            tokio::spawn(async move {
                tracing::trace!(%peer, "gateway connection");
                gateway.serve_connection(stream, "direct").await;
            });
        }
    }

    /// Serves one connection (a TCP stream or a tunnel stream): TLS, then
    /// HTTP/1.1 with upgrades, each request proving this gateway's
    /// certificate. Refused at once when at the connection limit.
    pub async fn serve_connection<IO>(self: Arc<Self>, io: IO, source: &'static str)
    where
        IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let Some(permit) = self.admit(source) else { return };
        let acceptor = TlsAcceptor::from(self.cert.server_config.clone());
        let tls =
            match tokio::time::timeout(self.limits.handshake_timeout, acceptor.accept(ReadAhead::new(io)))
                .await
            {
                Ok(Ok(tls)) => tls,
                Ok(Err(error)) => return tracing::debug!(%error, source, "TLS handshake failed"),
                Err(_) => return tracing::debug!(source, "TLS handshake timed out"),
            };
        self.serve_http(tls, source, Proof::Certificate, permit).await;
    }

    /// Serves one stream of a tunnel whose streams carry HTTP without TLS
    /// of their own (the tunnel's TLS covers them; `docs/decisions.md`):
    /// each request must carry `expected`, the stream proof bound to that
    /// tunnel's session ([`hatchway_api::tunnel::stream_proof`]).
    pub async fn serve_tunnel_stream<IO>(self: Arc<Self>, io: IO, expected: Arc<str>)
    where
        IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let Some(permit) = self.admit("tunnel") else {
            return;
        };
        self.serve_http(io, "tunnel", Proof::TunnelStream(expected), permit)
            .await;
    }

    /// A place under the connection limit, counted by `source`; `None`
    /// (counted and logged as a refusal) at the limit.
    fn admit(&self, source: &'static str) -> Option<tokio::sync::OwnedSemaphorePermit> {
        let Ok(permit) = self.connections.clone().try_acquire_owned() else {
            self.metrics.connections_refused.inc();
            tracing::warn!(
                source,
                limit = self.limits.max_connections,
                "connection limit reached; refusing"
            );
            return None;
        };
        self.metrics.connections.with_label_values(&[source]).inc();
        Some(permit)
    }

    async fn serve_http<IO>(
        self: Arc<Self>,
        io: IO,
        source: &'static str,
        proof: Proof,
        _permit: tokio::sync::OwnedSemaphorePermit,
    ) where
        IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let gateway = self.clone();
        let service = service_fn(move |mut req: http::Request<hyper::body::Incoming>| {
            req.extensions_mut().insert(gateway.clone());
            req.extensions_mut().insert(proof.clone());
            gateway.table.clone().oneshot(req)
        });
        let result = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(self.limits.header_timeout)
            .max_buf_size(self.limits.max_header_bytes.max(8192))
            .serve_connection(TokioIo::new(io), service)
            .with_upgrades()
            .await;
        if let Err(error) = result {
            tracing::debug!(%error, source, "gateway connection ended");
        }
    }

    /// The UID and proof checks; returns the response proof.
    fn authorize(
        &self,
        headers: &HeaderMap,
        proof: &Proof,
    ) -> Result<HeaderValue, (StatusCode, &'static str, String)> {
        let uid = headers.get(wire::CONTAINER_UID).and_then(|v| v.to_str().ok());
        match uid {
            None => {
                return Err((
                    StatusCode::FORBIDDEN,
                    "missing_uid",
                    "missing X-Hatchway-Container-Uid".into(),
                ));
            }
            Some(uid) if uid != self.uid => {
                return Err((
                    StatusCode::FORBIDDEN,
                    "wrong_uid",
                    format!("this gateway serves container {}, not {uid}", self.uid),
                ));
            }
            Some(_) => {}
        }
        let Some(presented) = headers.get(wire::AUTHORIZATION).and_then(|v| v.to_str().ok()) else {
            return Err((
                StatusCode::UNAUTHORIZED,
                "missing_proof",
                "missing X-Hatchway-Authorization".into(),
            ));
        };
        match proof {
            Proof::Certificate if !proof::verify_request_auth(&self.key, &self.cert.der, presented) => {
                return Err((
                    StatusCode::UNAUTHORIZED,
                    "wrong_proof",
                    "X-Hatchway-Authorization does not prove this gateway's certificate".into(),
                ));
            }
            Proof::TunnelStream(expected)
                if !hatchway_api::tunnel::verify_stream_proof(expected, presented) =>
            {
                return Err((
                    StatusCode::UNAUTHORIZED,
                    "wrong_proof",
                    "X-Hatchway-Authorization does not prove this tunnel's session".into(),
                ));
            }
            _ => {}
        }
        let answer = proof::respond_auth(&self.key, presented);
        Ok(HeaderValue::from_str(&answer).expect("hex is a valid header value"))
    }
}
