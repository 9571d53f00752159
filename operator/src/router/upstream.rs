//! One connection from the router to a Container's gateway, with the proof
//! exchange of DESIGN.md's "Trust model".
//!
//! The transport is anything that reads and writes: a TCP stream to
//! `podIP:port` (see [`connect_tcp`]) or a yamux stream of a sidecar tunnel.
//! Over it the router speaks TLS 1.3 to the gateway's self-signed
//! certificate ([`hatchway_api::tls::gateway_client_config`] checks only that
//! the peer holds the certificate's key), then proves it knows the
//! Container's key *for exactly that certificate* with
//! `X-Hatchway-Authorization`. The gateway proves it knows the key too with
//! `X-Hatchway-Authorization-Response`; a response without a valid one is
//! never passed on ([`UpstreamError::ProofFailed`]): that is how a
//! man-in-the-middle presenting another certificate is detected.

use std::net::SocketAddr;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use hatchway_api::proof::{self, CtrKey};
use hatchway_api::readahead::ReadAhead;
use hatchway_api::wire;
use http::header::{HeaderName, HeaderValue};
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use rustls::ClientConfig;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use super::respond::Body;

/// How long the TLS and HTTP/1.1 handshakes may take in [`connect`]: a
/// gateway (or a tunnel stream) that accepts bytes but never answers must not
/// hold a user's request forever.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a TCP connect may take in [`connect_tcp`] callers that have no
/// setting of their own.
pub const TCP_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// How long the gateway may take to answer a request's headers by default
/// (bodies stream afterwards without this limit; upgrades are long-lived).
pub const RESPONSE_HEADER_TIMEOUT: Duration = Duration::from_secs(60);

/// What can go wrong reaching a gateway or exchanging proofs with it.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// The TCP connection could not be made.
    #[error("connecting to {addr}: {source}")]
    Connect {
        /// Where the router tried to connect.
        addr: SocketAddr,
        /// Why it failed.
        source: std::io::Error,
    },
    /// The TCP connection was not made in time.
    #[error("connecting to {addr}: no answer within {after:?}")]
    ConnectTimeout {
        /// Where the router tried to connect.
        addr: SocketAddr,
        /// The limit that passed.
        after: Duration,
    },
    /// The TLS handshake failed (not TLS, a bad signature, a closed stream).
    #[error("TLS handshake: {0}")]
    Tls(#[source] std::io::Error),
    /// The TLS and HTTP handshakes did not finish in time.
    #[error("TLS handshake: no answer within {0:?}")]
    HandshakeTimeout(Duration),
    /// The gateway presented no certificate to prove against.
    #[error("the gateway presented no certificate")]
    NoCertificate,
    /// hyper could not start HTTP/1.1 over the TLS stream.
    #[error("HTTP handshake: {0}")]
    Http(#[source] hyper::Error),
    /// Sending the request or reading the response head failed.
    #[error("gateway connection failed: {0}")]
    Request(#[source] hyper::Error),
    /// The gateway did not answer the request's headers in time.
    #[error("the gateway did not answer within {0:?}")]
    ResponseTimeout(Duration),
    /// The container UID cannot be sent as a header value.
    #[error("container UID {0:?} is not a valid header value")]
    InvalidUid(String),
    /// The gateway's answer carried no valid response proof: whoever
    /// answered does not know the Container's key.
    #[error("gateway proof failed: {reason}")]
    ProofFailed {
        /// Missing or wrong, for logs.
        reason: &'static str,
    },
    /// The gateway refused the router's proof (401/403 without a valid
    /// response proof): the router's key does not match the gateway's, or a
    /// relay with another certificate sits in between.
    #[error("the gateway refused the router's proof ({0})")]
    GatewayRefused(StatusCode),
}

impl UpstreamError {
    /// The status code and message a user gets for this error. None of these
    /// is the user's fault: a refused proof means a key mismatch between
    /// the router and the gateway (or an attacker), so it is a 502, not a
    /// 401/403 the user could fix.
    pub fn status_and_message(&self) -> (StatusCode, String) {
        match self {
            UpstreamError::Connect { .. }
            | UpstreamError::ConnectTimeout { .. }
            | UpstreamError::Tls(_)
            | UpstreamError::HandshakeTimeout(_)
            | UpstreamError::NoCertificate
            | UpstreamError::Http(_) => (
                StatusCode::SERVICE_UNAVAILABLE,
                format!("gateway unreachable: {self}"),
            ),
            UpstreamError::Request(e) => (StatusCode::BAD_GATEWAY, format!("gateway connection failed: {e}")),
            UpstreamError::ResponseTimeout(after) => (
                StatusCode::GATEWAY_TIMEOUT,
                format!("the gateway did not answer within {after:?}"),
            ),
            UpstreamError::InvalidUid(_) => (StatusCode::INTERNAL_SERVER_ERROR, self.to_string()),
            UpstreamError::ProofFailed { .. } => (
                StatusCode::BAD_GATEWAY,
                "gateway proof failed (man-in-the-middle?)".to_owned(),
            ),
            UpstreamError::GatewayRefused(status) => (
                StatusCode::BAD_GATEWAY,
                format!(
                    "gateway refused the router's proof ({status}): the router's key does not match \
                     the gateway's (or a man-in-the-middle is present)"
                ),
            ),
        }
    }

    /// A short label for metrics and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            UpstreamError::Connect { .. } => "connect",
            UpstreamError::ConnectTimeout { .. } => "connect_timeout",
            UpstreamError::Tls(_) => "tls",
            UpstreamError::HandshakeTimeout(_) => "handshake_timeout",
            UpstreamError::NoCertificate => "no_certificate",
            UpstreamError::Http(_) => "http_handshake",
            UpstreamError::Request(_) => "request",
            UpstreamError::ResponseTimeout(_) => "response_timeout",
            UpstreamError::InvalidUid(_) => "invalid_uid",
            UpstreamError::ProofFailed { .. } => "proof_failed",
            UpstreamError::GatewayRefused(_) => "gateway_refused",
        }
    }
}

/// Opens a TCP connection to a gateway's direct address within `timeout`,
/// with TCP_NODELAY: shells and port-forwards send small writes that must
/// not wait for Nagle's algorithm.
pub async fn connect_tcp(addr: SocketAddr, timeout: Duration) -> Result<TcpStream, UpstreamError> {
    let stream = tokio::time::timeout(timeout, TcpStream::connect(addr))
        .await
        .map_err(|_| UpstreamError::ConnectTimeout { addr, after: timeout })?
        .map_err(|source| UpstreamError::Connect { addr, source })?;
    stream
        .set_nodelay(true)
        .map_err(|source| UpstreamError::Connect { addr, source })?;
    Ok(stream)
}

/// The TLS client configuration, built once: every gateway connection uses
/// the same one and rustls configurations are meant to be shared.
static TLS_CONFIG: LazyLock<Arc<ClientConfig>> =
    LazyLock::new(|| Arc::new(hatchway_api::tls::gateway_client_config()));

/// An HTTP/1.1 connection to one gateway, authenticated both ways by the
/// proof exchange. Requests go one at a time (HTTP/1.1); an upgraded
/// response (`hyper::upgrade::on`) takes the connection over.
pub struct GatewayConnection {
    sender: http1::SendRequest<Body>,
    uid: HeaderValue,
    key: CtrKey,
    request_auth: String,
    request_auth_header: HeaderValue,
    certificate_sha256: String,
    response_timeout: Duration,
}

impl std::fmt::Debug for GatewayConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The key stays redacted (CtrKey's Debug); the proof is not shown
        // either, it is only useful to someone holding this TLS peer's key.
        f.debug_struct("GatewayConnection")
            .field("uid", &self.uid)
            .field("certificate_sha256", &self.certificate_sha256)
            .finish_non_exhaustive()
    }
}

/// Connects over `io` (see the module doc) to the gateway of the Container
/// `uid` whose key is `key`, with [`HANDSHAKE_TIMEOUT`].
pub async fn connect<IO>(io: IO, uid: &str, key: &CtrKey) -> Result<GatewayConnection, UpstreamError>
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    connect_with_timeout(io, uid, key, HANDSHAKE_TIMEOUT).await
}

/// [`connect`] with another handshake timeout.
pub async fn connect_with_timeout<IO>(
    io: IO,
    uid: &str,
    key: &CtrKey,
    handshake_timeout: Duration,
) -> Result<GatewayConnection, UpstreamError>
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let uid_header = HeaderValue::from_str(uid).map_err(|_| UpstreamError::InvalidUid(uid.to_owned()))?;
    tokio::time::timeout(handshake_timeout, handshake(io, uid_header, key))
        .await
        .map_err(|_| UpstreamError::HandshakeTimeout(handshake_timeout))?
}

/// Connects over a tunnel stream that carries HTTP without TLS of its own
/// (the tunnel's TLS covers it; `docs/decisions.md`): each request carries
/// `stream_proof`, bound to that tunnel's session, and the answer must
/// carry the response proof over it as on the direct path.
pub async fn connect_in_tunnel<IO>(
    io: IO,
    uid: &str,
    key: &CtrKey,
    stream_proof: &str,
) -> Result<GatewayConnection, UpstreamError>
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let uid = HeaderValue::from_str(uid).map_err(|_| UpstreamError::InvalidUid(uid.to_owned()))?;
    let request_auth_header =
        HeaderValue::from_str(stream_proof).map_err(|_| UpstreamError::ProofFailed {
            reason: "the stream proof is not a header value",
        })?;
    tokio::time::timeout(
        HANDSHAKE_TIMEOUT,
        over_http(
            io,
            uid,
            key,
            stream_proof.to_owned(),
            request_auth_header,
            "tunnel session".to_owned(),
        ),
    )
    .await
    .map_err(|_| UpstreamError::HandshakeTimeout(HANDSHAKE_TIMEOUT))?
}

async fn handshake<IO>(io: IO, uid: HeaderValue, key: &CtrKey) -> Result<GatewayConnection, UpstreamError>
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let connector = TlsConnector::from(TLS_CONFIG.clone());
    // The name is informational: the verifier authenticates the gateway by
    // the proof over its certificate, not by name.
    let name = ServerName::try_from("hatchway-gateway").expect("a valid DNS name");
    let tls = connector
        .connect(name, ReadAhead::new(io))
        .await
        .map_err(UpstreamError::Tls)?;
    let cert_der = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|certs| certs.first())
        .ok_or(UpstreamError::NoCertificate)?
        .to_vec();
    let request_auth = proof::request_auth(key, &cert_der);
    let request_auth_header =
        HeaderValue::from_str(&request_auth).expect("lowercase hex is a valid header value");
    let certificate_sha256 = proof::certificate_sha256(&cert_der);
    over_http(
        tls,
        uid,
        key,
        request_auth,
        request_auth_header,
        certificate_sha256,
    )
    .await
}

/// HTTP/1.1 over `io` (TLS to the gateway, or a tunnel stream), every
/// request sent with `request_auth`.
async fn over_http<IO>(
    io: IO,
    uid: HeaderValue,
    key: &CtrKey,
    request_auth: String,
    request_auth_header: HeaderValue,
    certificate_sha256: String,
) -> Result<GatewayConnection, UpstreamError>
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (sender, conn) = http1::handshake(TokioIo::new(io))
        .await
        .map_err(UpstreamError::Http)?;
    let fingerprint = certificate_sha256.clone();
    tokio::spawn(async move {
        // The connection task ends when the sender is dropped and the last
        // response (or upgrade hand-over) is done; an error here is already
        // reported to whoever awaits the response, so it is only logged.
        if let Err(e) = conn.with_upgrades().await {
            tracing::debug!(gateway_certificate = %fingerprint, error = %e, "gateway connection ended with an error");
        }
    });
    Ok(GatewayConnection {
        sender,
        uid,
        key: key.clone(),
        request_auth,
        request_auth_header,
        certificate_sha256,
        response_timeout: RESPONSE_HEADER_TIMEOUT,
    })
}

impl GatewayConnection {
    /// Sets how long [`GatewayConnection::send`] waits for response headers.
    pub fn with_response_timeout(mut self, timeout: Duration) -> Self {
        self.response_timeout = timeout;
        self
    }

    /// Whether the connection can take a request now: idle, not closed
    /// (the previous response's body has ended).
    pub fn is_ready(&self) -> bool {
        self.sender.is_ready()
    }

    /// Whether the connection has closed (the gateway let it go, or it
    /// failed).
    pub fn is_closed(&self) -> bool {
        self.sender.is_closed()
    }

    /// Lowercase hex SHA-256 of the certificate the gateway presented, to
    /// compare with `status.gateway.certificateSha256` or to log
    /// (`tunnel session` on a tunnel stream without TLS of its own).
    pub fn certificate_sha256(&self) -> &str {
        &self.certificate_sha256
    }

    /// Sends `req` with the UID and proof headers (replacing any the request
    /// carried: a user must not smuggle their own) and returns the response
    /// only if it carries a valid response proof. The proof header is
    /// removed from the returned response: it concerns this hop only.
    pub async fn send(&mut self, req: Request<Body>) -> Result<Response<Incoming>, UpstreamError> {
        self.try_send(req).await.map_err(|(error, _)| error)
    }

    /// [`GatewayConnection::send`], giving the request back with the error
    /// when none of it reached the connection (it had closed: an idle
    /// connection the gateway let go), so that it can go on another.
    pub async fn try_send(
        &mut self,
        mut req: Request<Body>,
    ) -> Result<Response<Incoming>, (UpstreamError, Option<Request<Body>>)> {
        let headers = req.headers_mut();
        headers.insert(HeaderName::from_static(wire::CONTAINER_UID), self.uid.clone());
        headers.insert(
            HeaderName::from_static(wire::AUTHORIZATION),
            self.request_auth_header.clone(),
        );
        headers.remove(wire::AUTHORIZATION_RESPONSE);
        if !headers.contains_key(http::header::HOST) {
            // HTTP/1.1 requires a Host; the gateway does not route by it.
            headers.insert(http::header::HOST, HeaderValue::from_static("gateway"));
        }

        // The previous request may still be in flight (or its connection
        // closed): wait until the connection can take another.
        if let Err(error) = self.sender.ready().await {
            return Err((UpstreamError::Request(error), Some(req)));
        }
        let mut response =
            match tokio::time::timeout(self.response_timeout, self.sender.try_send_request(req)).await {
                Err(_) => return Err((UpstreamError::ResponseTimeout(self.response_timeout), None)),
                Ok(Err(mut error)) => {
                    let unsent = error.take_message();
                    return Err((UpstreamError::Request(error.into_error()), unsent));
                }
                Ok(Ok(response)) => response,
            };

        let verdict = match response.headers().get(wire::AUTHORIZATION_RESPONSE) {
            None => Err("no response proof"),
            Some(value) => match value.to_str() {
                Ok(presented) if proof::verify_respond_auth(&self.key, &self.request_auth, presented) => {
                    Ok(())
                }
                _ => Err("wrong response proof"),
            },
        };
        match verdict {
            Ok(()) => {
                response.headers_mut().remove(wire::AUTHORIZATION_RESPONSE);
                Ok(response)
            }
            Err(reason) => {
                let status = response.status();
                tracing::warn!(
                    gateway_certificate = %self.certificate_sha256,
                    %status,
                    reason,
                    "gateway answer without a valid proof"
                );
                if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
                    Err((UpstreamError::GatewayRefused(status), None))
                } else {
                    Err((UpstreamError::ProofFailed { reason }, None))
                }
            }
        }
    }
}
