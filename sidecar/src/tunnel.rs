//! The tunnel dialer: the sidecar dials the router so the router can reach
//! the gateway when it cannot reach the pod.
//!
//! TLS to the router's tunnel endpoint, verifying its certificate against
//! the CA pinned in the mounted Secret; `POST /v1/tunnel` with
//! `Upgrade: hatchway-tunnel`, the container UID and the tunnel proof over
//! this TLS session's exported keying material; then one yamux session
//! carries every stream. The sidecar opens one outbound stream, the control
//! stream, for its reports; every stream the router opens is served exactly
//! like a direct connection (TLS with the gateway certificate, the proof on
//! every request). On any failure it reconnects with jittered exponential
//! backoff, except that a connection the network refused, reset or left
//! unanswered is tried again at once a few times first (and each dial
//! makes several attempts, [`hatchway_api::dial`]): behind a Service, each
//! new connection may reach another replica, and the one that failed is
//! usually a replica that just died and that kube-proxy still routes to.

use std::future::poll_fn;
use std::sync::Arc;
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};
use hatchway_api::coalesce::Coalesce;
use hatchway_api::control::{self, ControlMessage};
use hatchway_api::proof::CtrKey;
use hatchway_api::readahead::ReadAhead;
use hatchway_api::{tunnel as proof, wire};
use http::{Request, StatusCode, header};
use http_body_util::Empty;
use hyper_util::rt::TokioIo;
use rustls::ClientConfig;
use rustls::pki_types::ServerName;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_util::compat::{FuturesAsyncReadCompatExt, TokioAsyncReadCompatExt};
use tokio_util::sync::CancellationToken;

use crate::gateway::Gateway;

/// Time allowed to connect, handshake and upgrade.
const DIAL_TIMEOUT: Duration = Duration::from_secs(10);
/// How many failures that may not recur elsewhere
/// ([`TunnelError::may_succeed_elsewhere`]) in a row are retried at once (after
/// [`QUICK_RETRY_DELAY`]) before the backoff applies.
const QUICK_RETRIES: u32 = 4;
/// The pause before a quick retry: enough that a sidecar never spins, short
/// against the time a tunnel takes to move.
const QUICK_RETRY_DELAY: Duration = Duration::from_millis(20);

/// Where and how to dial.
#[derive(Clone)]
pub struct TunnelTarget {
    /// `host:port` of the router's tunnel endpoint.
    pub authority: String,
    /// The host (without brackets) and port of `authority`, for dialling.
    host: String,
    port: u16,
    /// The TLS server name to verify (the URL's host).
    pub server_name: ServerName<'static>,
    /// The path of the endpoint (normally `/v1/tunnel`).
    pub path: String,
    /// Trusts only the pinned router CA.
    pub tls: Arc<ClientConfig>,
}

/// Why a tunnel URL or CA is unusable.
#[derive(Debug, thiserror::Error)]
pub enum TunnelConfigError {
    /// Not `https://host[:port][/path]`.
    #[error("tunnel URL {0:?} is not https://host[:port][/path]")]
    BadUrl(String),
    /// The CA bundle has no usable certificate.
    #[error("router CA: {0}")]
    BadCa(String),
}

impl TunnelTarget {
    /// Parses `https://host[:port][/path]` and a PEM CA bundle.
    pub fn new(url: &str, ca_pem: &[u8]) -> Result<Self, TunnelConfigError> {
        let bad = || TunnelConfigError::BadUrl(url.to_owned());
        let rest = url.trim().strip_prefix("https://").ok_or_else(bad)?;
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, ""),
        };
        if authority.is_empty() {
            return Err(bad());
        }
        let (host, port, authority) = match authority.rsplit_once(':') {
            Some((host, port)) if !host.ends_with(']') || host.starts_with('[') => (
                host,
                port.parse::<u16>().map_err(|_| bad())?,
                authority.to_owned(),
            ),
            _ => (authority, 443, format!("{authority}:443")),
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let server_name = ServerName::try_from(host.to_owned()).map_err(|_| bad())?;
        let path = if path.is_empty() || path == "/" {
            wire::TUNNEL_PATH.to_owned()
        } else {
            path.to_owned()
        };

        let tls = hatchway_api::tls::client_trusting(ca_pem)
            .map_err(|e| TunnelConfigError::BadCa(e.to_string()))?;
        Ok(Self {
            authority,
            host: host.to_owned(),
            port,
            server_name,
            path,
            tls: Arc::new(tls),
        })
    }
}

/// Why one tunnel attempt ended.
#[derive(Debug, thiserror::Error)]
pub enum TunnelError {
    /// Connecting, TLS, or the upgrade took too long.
    #[error("timed out dialing the router")]
    Timeout,
    /// The TCP connection was refused, unreachable or unanswered.
    #[error("cannot connect to the router: {0}")]
    Connect(std::io::Error),
    /// A socket or TLS error.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// The HTTP exchange failed.
    #[error("tunnel request: {0}")]
    Http(#[from] hyper::Error),
    /// The router refused the tunnel: its status and what it said.
    #[error("router refused the tunnel: {0}: {1}")]
    Refused(StatusCode, String),
    /// The yamux session failed.
    #[error("tunnel session: {0}")]
    Yamux(#[from] yamux::ConnectionError),
}

impl TunnelError {
    /// Whether the next connection through the Service, which may reach
    /// another replica, may well succeed: the network refused, reset or
    /// left the connection unanswered, or a replica answered 503 (shutting
    /// down, full). Not a TLS failure or any other refusal.
    fn may_succeed_elsewhere(&self) -> bool {
        use std::io::ErrorKind::*;
        match self {
            TunnelError::Connect(_) => true,
            TunnelError::Refused(status, _) => *status == StatusCode::SERVICE_UNAVAILABLE,
            TunnelError::Io(e) => matches!(
                e.kind(),
                ConnectionRefused | ConnectionReset | ConnectionAborted | BrokenPipe | UnexpectedEof
            ),
            _ => false,
        }
    }
}

/// The longest wait between tunnel attempts (before its random stretch).
pub const BACKOFF_CEILING: Duration = Duration::from_secs(20);
/// The waits between tunnel attempts while dials fail: 200 ms doubling to
/// 20 s, each stretched by up to 100% at random so a router restart is not
/// met by every sidecar at once.
pub const BACKOFF: ExponentialBuilder = ExponentialBuilder::new()
    .with_min_delay(Duration::from_millis(200))
    .with_max_delay(BACKOFF_CEILING)
    .with_jitter()
    .without_max_times();

/// Keeps a tunnel up until `shutdown`, waiting between attempts as
/// [`Redial`] says.
pub async fn run(gateway: Arc<Gateway>, target: TunnelTarget, key: CtrKey, shutdown: CancellationToken) {
    let mut redial = Redial::new();
    loop {
        let mut connected = false;
        let result = tokio::select! {
            _ = shutdown.cancelled() => return,
            result = connect_and_serve(&gateway, &target, &key, &mut connected) => result,
        };
        gateway.metrics.tunnel_connected.set(0);
        let elsewhere = matches!(&result, Err(e) if e.may_succeed_elsewhere());
        match result {
            Ok(()) => tracing::info!(router = %target.authority, "tunnel closed by the router; reconnecting"),
            Err(error) => {
                gateway.metrics.tunnel_failures.inc();
                tracing::warn!(%error, router = %target.authority, "tunnel down; reconnecting");
            }
        }
        let delay = redial.next(connected, elsewhere);
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(delay) => {}
        }
    }
}

/// The wait before the next tunnel attempt.
struct Redial {
    delays: backon::ExponentialBackoff,
    /// Connection-level failures retried at once since the last tunnel.
    quick: u32,
}

impl Redial {
    fn new() -> Self {
        Self {
            delays: BACKOFF.build(),
            quick: 0,
        }
    }

    /// After an attempt that `connected` (a tunnel was up, then ended) or
    /// not, and whose failure `elsewhere` may not meet
    /// ([`TunnelError::may_succeed_elsewhere`]): a tunnel that got
    /// established resets everything (after a router restart the first
    /// retry comes within a few hundred milliseconds); a refused, reset or
    /// unanswered connection, or a 503, is retried at once
    /// [`QUICK_RETRIES`] times; anything else (and what follows the quick
    /// retries) backs off.
    fn next(&mut self, connected: bool, elsewhere: bool) -> Duration {
        if connected {
            *self = Self::new();
        } else if elsewhere && self.quick < QUICK_RETRIES {
            self.quick += 1;
            return QUICK_RETRY_DELAY;
        }
        self.delays.next().unwrap_or(BACKOFF_CEILING)
    }
}

async fn connect_and_serve(
    gateway: &Arc<Gateway>,
    target: &TunnelTarget,
    key: &CtrKey,
    connected: &mut bool,
) -> Result<(), TunnelError> {
    let (upgraded, plain_streams) = tokio::time::timeout(DIAL_TIMEOUT, dial(gateway, target, key))
        .await
        .map_err(|_| TunnelError::Timeout)??;
    *connected = true;
    gateway.metrics.tunnel_connects.inc();
    gateway.metrics.tunnel_connected.set(1);
    tracing::info!(
        router = %target.authority,
        streams = if plain_streams.is_some() { "http" } else { "tls" },
        "tunnel connected"
    );

    // Frames go out whole, as the router's do (one TLS record per frame).
    let mut conn = yamux::Connection::new(
        Coalesce::new(TokioIo::new(upgraded)).compat(),
        hatchway_api::tunnel::yamux_config(),
        yamux::Mode::Client,
    );
    let control = poll_fn(|cx| conn.poll_new_outbound(cx)).await?;
    let reporter = gateway.reporter.clone();
    let hello = hello(gateway);
    let control_task = tokio::spawn(async move {
        if let Err(error) = send_reports(control.compat(), hello, reporter).await {
            tracing::debug!(%error, "tunnel control stream ended");
        }
    });
    let result = loop {
        match poll_fn(|cx| conn.poll_next_inbound(cx)).await {
            Some(Ok(stream)) => {
                gateway.metrics.tunnel_streams.inc();
                let gateway = gateway.clone();
                let stream = ShortReads(stream.compat());
                let plain = plain_streams.clone();
                tokio::spawn(async move {
                    match plain {
                        Some(expected) => gateway.serve_tunnel_stream(stream, expected).await,
                        None => gateway.serve_connection(stream, "tunnel").await,
                    }
                });
            }
            Some(Err(error)) => break Err(error.into()),
            None => break Ok(()),
        }
    };
    control_task.abort();
    result
}

fn hello(gateway: &Gateway) -> ControlMessage {
    ControlMessage::Hello {
        container_uid: gateway.uid.clone(),
        certificate_sha256: gateway.cert.sha256.clone(),
        host_key: gateway.ssh.host_key_openssh(),
        host_key_fingerprint: gateway.ssh.host_key_fingerprint(),
        sidecar_version: env!("CARGO_PKG_VERSION").to_owned(),
    }
}

/// TLS, the proof, and the upgrade.
async fn dial(
    gateway: &Gateway,
    target: &TunnelTarget,
    key: &CtrKey,
) -> Result<(hyper::upgrade::Upgraded, Option<Arc<str>>), TunnelError> {
    let tcp = connect_tcp(&target.host, target.port).await?;
    let tls = TlsConnector::from(target.tls.clone())
        .connect(target.server_name.clone(), ReadAhead::new(tcp))
        .await?;
    let ekm = tls
        .get_ref()
        .1
        .export_keying_material([0u8; proof::EKM_LEN], proof::EKM_LABEL, None)
        .map_err(std::io::Error::other)?;
    let tunnel_proof = proof::tunnel_proof(key, &ekm);

    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await?;
    tokio::spawn(async move {
        if let Err(error) = conn.with_upgrades().await {
            tracing::debug!(%error, "tunnel HTTP connection ended");
        }
    });
    let request = Request::post(&target.path)
        .header(header::HOST, &target.authority)
        .header(header::CONNECTION, "upgrade")
        .header(header::UPGRADE, wire::UPGRADE_TUNNEL)
        .header(wire::CONTAINER_UID, &gateway.uid)
        .header(wire::TUNNEL_PROOF, tunnel_proof)
        .header(wire::TUNNEL_VERSION, control::PROTOCOL_VERSION.to_string())
        .header(wire::TUNNEL_STREAMS, wire::TUNNEL_STREAMS_HTTP)
        .body(Empty::<bytes::Bytes>::new())
        .expect("static request parts are valid");
    let response = sender.send_request(request).await?;
    if response.status() != StatusCode::SWITCHING_PROTOCOLS {
        let status = response.status();
        let body = http_body_util::BodyExt::collect(http_body_util::Limited::new(response.into_body(), 4096))
            .await
            .map(|b| String::from_utf8_lossy(&b.to_bytes()).trim().to_owned())
            .unwrap_or_default();
        return Err(TunnelError::Refused(status, body));
    }
    // A router that echoes the header sends each stream's HTTP as it is,
    // with the proof bound to this session; an older one wraps each
    // stream in TLS to the gateway's certificate.
    let plain = wire::asks_plain_tunnel_streams(response.headers())
        .then(|| Arc::<str>::from(proof::stream_proof(key, &ekm)));
    Ok((hyper::upgrade::on(response).await?, plain))
}

/// The TCP connection to the router ([`hatchway_api::dial`]).
async fn connect_tcp(host: &str, port: u16) -> Result<TcpStream, TunnelError> {
    hatchway_api::dial::connect(host, port)
        .await
        .map_err(TunnelError::Connect)
}

/// Sends the hello, the current state, then every report as it happens.
async fn send_reports<W>(
    mut stream: W,
    hello: ControlMessage,
    reporter: Arc<crate::report::Reporter>,
) -> std::io::Result<()>
where
    W: tokio::io::AsyncWrite + Unpin,
{
    let mut events = reporter.subscribe();
    for message in std::iter::once(hello).chain(reporter.current_state()) {
        write_message(&mut stream, &message).await?;
    }
    loop {
        match events.recv().await {
            Ok(message) => write_message(&mut stream, &message).await?,
            Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                tracing::warn!(
                    missed = n,
                    "tunnel control stream fell behind; resending the current state"
                );
                for message in reporter.current_state() {
                    write_message(&mut stream, &message).await?;
                }
            }
            Err(tokio::sync::broadcast::error::RecvError::Closed) => return Ok(()),
        }
    }
}

async fn write_message<W: tokio::io::AsyncWrite + Unpin>(
    stream: &mut W,
    message: &ControlMessage,
) -> std::io::Result<()> {
    let frame = control::encode(message).map_err(std::io::Error::other)?;
    stream.write_all(&frame).await?;
    stream.flush().await
}

/// Largest read offered to a tunnel stream.
const STREAM_READ: usize = 64 * 1024;

/// A tunnel stream whose reads are offered at most [`STREAM_READ`] bytes.
/// The compat layer zeroes all the room a read offers before yamux copies
/// into it: a resumable session reads into 256 KiB blocks, so every read
/// of a few KiB cleared 256 KiB (CPU per byte, and every page of the block
/// resident for each open stream).
struct ShortReads<S>(S);

impl<S: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for ShortReads<S> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let want = buf.remaining().min(STREAM_READ);
        let mut part = tokio::io::ReadBuf::new(buf.initialize_unfilled_to(want));
        std::task::ready!(std::pin::Pin::new(&mut self.0).poll_read(cx, &mut part))?;
        let n = part.filled().len();
        buf.advance(n);
        std::task::Poll::Ready(Ok(()))
    }
}

impl<S: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for ShortReads<S> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        data: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.0).poll_write(cx, data)
    }

    fn poll_write_vectored(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.0).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.0.is_write_vectored()
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    /// Each read is offered at most STREAM_READ bytes, however much room
    /// the caller has, and the bytes come through whole.
    #[tokio::test]
    async fn reads_are_offered_at_most_stream_read_and_lose_nothing() {
        let (mut far, near) = tokio::io::duplex(1 << 20);
        let sent: Vec<u8> = (0..300_000u32).map(|i| (i % 253) as u8).collect();
        far.write_all(&sent).await.unwrap();
        drop(far);
        let mut reads = ShortReads(near);
        let mut got = Vec::with_capacity(1 << 20);
        loop {
            let before = got.len();
            let n = reads.read_buf(&mut got).await.unwrap();
            assert_eq!(got.len() - before, n);
            assert!(n <= STREAM_READ, "a read of {n}");
            if n == 0 {
                break;
            }
        }
        assert_eq!(got, sent);
    }

    #[test]
    fn backoff_grows_with_jitter_and_is_capped() {
        for _ in 0..100 {
            let delays: Vec<Duration> = BACKOFF.build().take(40).collect();
            let first = delays[0];
            assert!(
                first >= Duration::from_millis(200) && first < Duration::from_millis(400),
                "{first:?}"
            );
            assert!(delays[3] >= Duration::from_millis(1600), "{:?}", delays[3]);
            let late = delays[39];
            assert!(
                late >= Duration::from_secs(20) && late < Duration::from_secs(40),
                "{late:?}"
            );
        }
    }

    /// Refused, reset or unanswered connections are retried at once a few
    /// times, then back off; a router's answer (a TLS failure, a refusal)
    /// backs off at once; a tunnel that was up resets both.
    #[test]
    fn connection_failures_are_retried_at_once_then_back_off() {
        let mut redial = Redial::new();
        for _ in 0..QUICK_RETRIES {
            assert_eq!(redial.next(false, true), QUICK_RETRY_DELAY);
        }
        let first = redial.next(false, true);
        assert!(first >= Duration::from_millis(200), "{first:?}");
        let second = redial.next(false, true);
        assert!(second >= Duration::from_millis(400), "{second:?}");

        let mut redial = Redial::new();
        let refused = redial.next(false, false);
        assert!(refused >= Duration::from_millis(200), "{refused:?}");
        assert_eq!(redial.next(false, true), QUICK_RETRY_DELAY);

        // After a tunnel: the backoff starts over and quick retries are back.
        for _ in 0..10 {
            redial.next(false, false);
        }
        let after = redial.next(true, false);
        assert!(after < Duration::from_millis(400), "{after:?}");
        assert_eq!(redial.next(false, true), QUICK_RETRY_DELAY);
    }

    /// What the network does to a dial: a closed port is refused, and an
    /// address that swallows the SYN (here a listener whose accept queue is
    /// full: Linux drops the SYN) times out after `dial::TIMEOUT`, not
    /// DIAL_TIMEOUT; both may succeed elsewhere, as a replica's 503 (shutting
    /// down) may. A TLS failure or another refusal does not.
    #[tokio::test]
    async fn refused_unanswered_and_shutting_down_may_succeed_elsewhere() {
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let closed_port = closed.local_addr().unwrap().port();
        drop(closed);
        let refused = connect_tcp("127.0.0.1", closed_port).await.unwrap_err();
        assert!(refused.may_succeed_elsewhere(), "{refused}");
        assert!(
            refused.to_string().contains("cannot connect to the router"),
            "{refused}"
        );

        // A backlog of 0 holds one pending connection; the next SYNs are
        // dropped while nothing accepts.
        let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        socket
            .bind(&"127.0.0.1:0".parse::<std::net::SocketAddr>().unwrap().into())
            .unwrap();
        socket.listen(0).unwrap();
        let full = socket.local_addr().unwrap().as_socket().unwrap().port();
        let mut held = Vec::new();
        let started = std::time::Instant::now();
        let unanswered = loop {
            match connect_tcp("127.0.0.1", full).await {
                Ok(tcp) => held.push(tcp),
                Err(error) => break error,
            }
            assert!(held.len() < 16, "the accept queue never filled");
        };
        assert!(
            matches!(&unanswered, TunnelError::Connect(e) if e.kind() == std::io::ErrorKind::TimedOut),
            "{unanswered}"
        );
        assert!(unanswered.may_succeed_elsewhere());
        assert!(started.elapsed() < DIAL_TIMEOUT, "{:?}", started.elapsed());

        let tls = TunnelError::Io(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "bad certificate",
        ));
        assert!(!tls.may_succeed_elsewhere());
        assert!(
            !TunnelError::Refused(StatusCode::UNAUTHORIZED, "tunnel proof failed".into())
                .may_succeed_elsewhere()
        );
        let leaving = TunnelError::Refused(
            StatusCode::SERVICE_UNAVAILABLE,
            "this router replica is shutting down: try another".into(),
        );
        assert!(leaving.may_succeed_elsewhere());
        assert_eq!(
            leaving.to_string(),
            "router refused the tunnel: 503 Service Unavailable: this router replica is shutting down: try another"
        );
    }

    #[test]
    fn tunnel_urls_are_parsed_or_refused() {
        let ca = rcgen::generate_simple_self_signed(vec!["router".into()])
            .unwrap()
            .cert
            .pem();
        let t = TunnelTarget::new("https://router.hatchway.svc:8443", ca.as_bytes()).unwrap();
        assert_eq!(
            (t.authority.as_str(), t.path.as_str()),
            ("router.hatchway.svc:8443", "/v1/tunnel")
        );
        let t = TunnelTarget::new("https://10.0.0.1/custom/tunnel", ca.as_bytes()).unwrap();
        assert_eq!(
            (t.authority.as_str(), t.path.as_str()),
            ("10.0.0.1:443", "/custom/tunnel")
        );
        assert!(matches!(
            TunnelTarget::new("http://router", ca.as_bytes()),
            Err(TunnelConfigError::BadUrl(_))
        ));
        assert!(matches!(
            TunnelTarget::new("https://:99", ca.as_bytes()),
            Err(TunnelConfigError::BadUrl(_))
        ));
        assert!(matches!(
            TunnelTarget::new("https://r:x", ca.as_bytes()),
            Err(TunnelConfigError::BadUrl(_))
        ));
        assert!(matches!(
            TunnelTarget::new("https://r", b"not pem"),
            Err(TunnelConfigError::BadCa(_))
        ));
    }
}
