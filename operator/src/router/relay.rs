//! Relaying an upgraded connection (shell, port-forward, WebSocket,
//! forwarded upgrade) between the client and the gateway: both directions
//! at once, half-closes passed on, bytes counted, idle connections closed.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use hatchway_api::frames::Framed;
use hatchway_api::headers;
use http::{HeaderMap, Response, StatusCode, header};
use http_body_util::BodyExt;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;

use super::Router;
use super::respond::{Body, empty_body};

/// How the client's side of an upgraded connection carries bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ClientStream {
    /// As they are.
    #[default]
    Raw,
    /// In frames ([`hatchway_api::frames`], `Upgrade:
    /// hatchway-tcp-frames`): a half-close through the API server's proxy.
    Framed,
}

/// Who wrote an answer the router passes on: what it may say to the user.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Author {
    /// The gateway (or a peer replica): its `Hatchway-*` answer headers
    /// (an SSH host key, a resumable session's id and secret, where logs
    /// came from) pass on.
    Gateway,
    /// A web app in the workload: the gateway strips what only it may say,
    /// and the router does again — an app's `101` never hands the user a
    /// host key or a session secret.
    Workload,
}

/// The 101 answer to the client, carrying the upstream's upgrade headers,
/// and a task that relays once both sides have upgraded. `kind` labels the
/// session in metrics and logs.
fn switch(
    router: Arc<Router>,
    client: OnUpgrade,
    framing: ClientStream,
    upstream: OnUpgrade,
    upstream_headers: &HeaderMap,
    author: Author,
    kind: &'static str,
) -> Response<Body> {
    let mut response = Response::new(empty_body());
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    *response.headers_mut() = switch_headers(upstream_headers, framing, author);
    let span = tracing::Span::current();
    tokio::spawn(tracing::Instrument::instrument(
        async move {
            let (client, upstream) = match tokio::try_join!(client, upstream) {
                Ok(pair) => pair,
                Err(error) => return tracing::debug!(%error, kind, "upgrade failed"),
            };
            let upstream = TokioIo::new(upstream);
            match framing {
                ClientStream::Raw => relay(&router, TokioIo::new(client), upstream, kind).await,
                ClientStream::Framed => {
                    relay(&router, Framed::new(TokioIo::new(client)), upstream, kind).await
                }
            };
        },
        span,
    ));
    response
}

/// The headers of the `101` to the client: the upgrade's, the gateway's
/// own answer headers when the gateway wrote it, and a WebSocket
/// handshake's.
fn switch_headers(upstream_headers: &HeaderMap, framing: ClientStream, author: Author) -> HeaderMap {
    let mut headers = HeaderMap::new();
    for name in [header::CONNECTION, header::UPGRADE] {
        if let Some(value) = upstream_headers.get(&name) {
            headers.insert(name, value.clone());
        }
    }
    if framing == ClientStream::Framed {
        headers.insert(
            header::UPGRADE,
            http::HeaderValue::from_static(hatchway_api::wire::UPGRADE_TCP_FRAMED),
        );
    }
    // A resumable session's id, secret or offset (docs/sessions.md), and
    // the SSH host key the answering gateway holds (after a sidecar
    // restart it is ahead of the status; docs/decisions.md).
    let passed = hatchway_api::wire::resumable::RESPONSE_HEADERS
        .into_iter()
        .chain([hatchway_api::wire::SSH_HOST_KEY])
        .filter(|_| author == Author::Gateway);
    for name in passed {
        if let Some(value) = upstream_headers.get(name) {
            headers.insert(name, value.clone());
        }
    }
    // WebSocket handshake answers (Sec-WebSocket-Accept, -Protocol, -Extensions).
    for (name, value) in upstream_headers {
        if name.as_str().starts_with("sec-websocket-") {
            headers.append(name.clone(), value.clone());
        }
    }
    headers
}

/// Hands an upstream answer (a gateway's or a peer replica's) to the
/// client: a 101 to an upgrade the client asked for becomes a relay;
/// anything else passes on without hop-by-hop or `X-Hatchway-*` headers
/// (nor `Hatchway-*` ones when the workload wrote it).
pub fn pass_on(
    router: Arc<Router>,
    mut response: Response<hyper::body::Incoming>,
    client: Option<OnUpgrade>,
    framing: ClientStream,
    author: Author,
    kind: &'static str,
) -> Response<Body> {
    if response.status() == StatusCode::SWITCHING_PROTOCOLS
        && let Some(client) = client
    {
        let upstream = hyper::upgrade::on(&mut response);
        return switch(
            router,
            client,
            framing,
            upstream,
            response.headers(),
            author,
            kind,
        );
    }
    let (mut parts, body) = response.into_parts();
    headers::strip_hop_by_hop(&mut parts.headers, false);
    headers::strip_hatchway_headers(&mut parts.headers);
    if author == Author::Workload {
        headers::strip_gateway_headers(&mut parts.headers);
    }
    Response::from_parts(parts, body.map_err(Into::into).boxed_unsync())
}

/// Copies both ways until both sides are done, or neither sent a byte for
/// the idle timeout. Returns (bytes to the gateway, bytes from it).
pub async fn relay<C, U>(router: &Router, client: C, upstream: U, kind: &'static str) -> (u64, u64)
where
    C: AsyncRead + AsyncWrite + Unpin,
    U: AsyncRead + AsyncWrite + Unpin,
{
    let metrics = &router.metrics;
    metrics.sessions.with_label_values(&[kind]).inc();
    let active = metrics.sessions_active.with_label_values(&[kind]);
    active.inc();
    let activity = Arc::new(Activity::new());
    let mut client = Counted::new(client, activity.clone());
    let mut upstream = Counted::new(upstream, activity.clone());
    let idle = router.settings.idle_timeout;
    let started = Instant::now();
    let outcome = tokio::select! {
        result = hatchway_api::copy::bidirectional(&mut client, &mut upstream) => {
            match result {
                Ok(_) => "closed",
                Err(error) => {
                    tracing::debug!(%error, kind, "relay ended with an error");
                    "error"
                }
            }
        }
        _ = activity.idle_for(idle) => "idle",
        _ = router.relays_closing.cancelled() => "replica stopping",
    };
    active.dec();
    let (to_gateway, from_gateway) = (client.read, upstream.read);
    metrics
        .bytes
        .with_label_values(&["to_gateway"])
        .inc_by(to_gateway);
    metrics
        .bytes
        .with_label_values(&["from_gateway"])
        .inc_by(from_gateway);
    tracing::info!(
        kind,
        outcome,
        to_gateway,
        from_gateway,
        seconds = started.elapsed().as_secs_f64(),
        "session ended"
    );
    (to_gateway, from_gateway)
}

/// When a relay last moved a byte, shared by both sides.
struct Activity {
    epoch: Instant,
    last_ms: AtomicU64,
}

impl Activity {
    fn new() -> Self {
        Self {
            epoch: Instant::now(),
            last_ms: AtomicU64::new(0),
        }
    }

    fn touch(&self) {
        let ms = self.epoch.elapsed().as_millis() as u64;
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    /// Completes once nothing moved for `idle`.
    async fn idle_for(&self, idle: Duration) {
        loop {
            let last = self.epoch + Duration::from_millis(self.last_ms.load(Ordering::Relaxed));
            let deadline = last + idle;
            if Instant::now() >= deadline {
                return;
            }
            tokio::time::sleep_until(deadline).await;
        }
    }
}

/// A stream that counts the bytes read from it and notes activity.
struct Counted<S> {
    inner: S,
    read: u64,
    activity: Arc<Activity>,
}

impl<S> Counted<S> {
    fn new(inner: S, activity: Arc<Activity>) -> Self {
        Self {
            inner,
            read: 0,
            activity,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Counted<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let result = Pin::new(&mut self.inner).poll_read(cx, buf);
        let n = (buf.filled().len() - before) as u64;
        if n > 0 {
            self.read += n;
            self.activity.touch();
        }
        result
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Counted<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A `101` that says everything the router might pass on.
    fn upstream_101() -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::CONNECTION, "upgrade".parse().unwrap());
        headers.insert(header::UPGRADE, "websocket".parse().unwrap());
        headers.insert(
            "sec-websocket-accept",
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=".parse().unwrap(),
        );
        headers.insert(
            hatchway_api::wire::SSH_HOST_KEY,
            "ssh-ed25519 AAAA".parse().unwrap(),
        );
        headers.insert(hatchway_api::wire::resumable::ID, "s1".parse().unwrap());
        headers.insert(hatchway_api::wire::resumable::SECRET, "00".parse().unwrap());
        headers.insert("x-hatchway-user", "root".parse().unwrap());
        headers.insert("x-app", "1".parse().unwrap());
        headers
    }

    fn names(headers: &HeaderMap) -> Vec<&str> {
        let mut names: Vec<_> = headers.keys().map(|k| k.as_str()).collect();
        names.sort();
        names
    }

    #[test]
    fn a_gateway_s_101_passes_its_answer_headers_and_nothing_else() {
        let headers = switch_headers(&upstream_101(), ClientStream::Raw, Author::Gateway);
        assert_eq!(
            names(&headers),
            [
                "connection",
                "hatchway-session-id",
                "hatchway-session-secret",
                "hatchway-ssh-host-key",
                "sec-websocket-accept",
                "upgrade"
            ]
        );
    }

    #[test]
    fn a_web_app_s_101_cannot_hand_the_user_a_host_key_or_a_session() {
        let headers = switch_headers(&upstream_101(), ClientStream::Raw, Author::Workload);
        assert_eq!(names(&headers), ["connection", "sec-websocket-accept", "upgrade"]);
    }

    #[test]
    fn a_framed_client_is_told_its_framing() {
        let headers = switch_headers(&upstream_101(), ClientStream::Framed, Author::Gateway);
        assert_eq!(headers[header::UPGRADE], hatchway_api::wire::UPGRADE_TCP_FRAMED);
    }
}
