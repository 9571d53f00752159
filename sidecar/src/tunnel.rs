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
//! backoff.

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

/// Where and how to dial.
#[derive(Clone)]
pub struct TunnelTarget {
    /// `host:port` of the router's tunnel endpoint.
    pub authority: String,
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
        let (host, authority) = match authority.rsplit_once(':') {
            Some((host, port)) if !host.ends_with(']') || host.starts_with('[') => {
                port.parse::<u16>().map_err(|_| bad())?;
                (host, authority.to_owned())
            }
            _ => (authority, format!("{authority}:443")),
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
    /// A socket or TLS error.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// The HTTP exchange failed.
    #[error("tunnel request: {0}")]
    Http(#[from] hyper::Error),
    /// The router refused the tunnel.
    #[error("router refused the tunnel: {0}")]
    Refused(String),
    /// The yamux session failed.
    #[error("tunnel session: {0}")]
    Yamux(#[from] yamux::ConnectionError),
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

/// Keeps a tunnel up until `shutdown`, reconnecting with [`BACKOFF`] while
/// dials fail.
pub async fn run(gateway: Arc<Gateway>, target: TunnelTarget, key: CtrKey, shutdown: CancellationToken) {
    let mut delays = BACKOFF.build();
    loop {
        let mut connected = false;
        let result = tokio::select! {
            _ = shutdown.cancelled() => return,
            result = connect_and_serve(&gateway, &target, &key, &mut connected) => result,
        };
        gateway.metrics.tunnel_connected.set(0);
        match result {
            Ok(()) => tracing::info!(router = %target.authority, "tunnel closed by the router; reconnecting"),
            Err(error) => {
                gateway.metrics.tunnel_failures.inc();
                tracing::warn!(%error, router = %target.authority, "tunnel down; reconnecting");
            }
        }
        // A tunnel that got established resets the backoff: after a router
        // restart the first retry comes within a few hundred milliseconds.
        if connected {
            delays = BACKOFF.build();
        }
        let delay = delays.next().unwrap_or(BACKOFF_CEILING);
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(delay) => {}
        }
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
    let tcp = TcpStream::connect(&target.authority).await?;
    tcp.set_nodelay(true)?;
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
        return Err(TunnelError::Refused(format!("{status}: {body}")));
    }
    // A router that echoes the header sends each stream's HTTP as it is,
    // with the proof bound to this session; an older one wraps each
    // stream in TLS to the gateway's certificate.
    let plain = wire::asks_plain_tunnel_streams(response.headers())
        .then(|| Arc::<str>::from(proof::stream_proof(key, &ekm)));
    Ok((hyper::upgrade::on(response).await?, plain))
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
