//! Sending a user's request along a route from [`super::select`]: to the
//! replica that holds the tunnel ([`super::forward`]), or to the gateway
//! itself over a TCP connection to its address or a stream on the tunnel
//! this replica holds, either way with TLS and the proof exchange of
//! [`super::upstream`]; the answer goes back through [`super::relay`].

// A refusal is the response itself, returned once per request: boxing it
// would buy nothing.
#![allow(clippy::result_large_err)]

use std::sync::Arc;

use hatchway_api::crd::Container;
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::upgrade::OnUpgrade;

use super::Router;
use super::respond::{Body, RequestBody, text};
use super::select::Route;
use super::tunnel::TunnelError;
use super::upstream::{self, GatewayConnection, UpstreamError};
use super::{forward, pool, relay};

/// A request made for a gateway, and the client's side of the upgrade it
/// asks for (if any).
pub struct GatewayRequest {
    /// What the gateway gets.
    pub request: Request<Body>,
    /// The client's connection once it switches protocols.
    pub client: Option<OnUpgrade>,
    /// How the client's side carries bytes.
    pub framing: relay::ClientStream,
    /// Who writes the answer: the gateway, or a web app behind it.
    pub author: relay::Author,
}

/// Sends `req` along `route` and answers the client: to another replica
/// as it came (it checks and sends it itself), or — made into the
/// gateway's request by `to_gateway` — to the gateway, whose answer passes
/// on (an upgrade becomes a relay, counted as `kind`). `Err` is the refusal
/// when the gateway could not be reached or did not prove itself: the
/// caller may have a better answer (the log tree's saved logs).
pub async fn send(
    router: &Arc<Router>,
    req: Request<RequestBody>,
    container: &Container,
    route: &Route,
    kind: &'static str,
    to_gateway: impl FnOnce(Request<RequestBody>) -> GatewayRequest,
) -> Result<Response<Body>, Response<Body>> {
    if let Route::Forward(url) = route {
        return Ok(forward::forward(router.clone(), req, url, kind).await);
    }
    let GatewayRequest {
        request,
        client,
        framing,
        author,
    } = to_gateway(req);
    let response = exchange(router, container, route, request).await?;
    Ok(relay::pass_on(
        router.clone(),
        response,
        client,
        framing,
        author,
        kind,
    ))
}

/// A header value from arbitrary text (user names are UTF-8; header values
/// are not): non-ASCII is percent-escaped.
pub fn header_safe(s: &str) -> HeaderValue {
    let escaped = percent_encoding::utf8_percent_encode(s, percent_encoding::CONTROLS).to_string();
    HeaderValue::from_str(&escaped).unwrap_or_else(|_| HeaderValue::from_static("?"))
}

/// The request's id: the client's `X-Hatchway-Request-Id` if it sent a
/// sane one, else a fresh one. (The route table's layer puts it on every
/// request, so a request keeps one id from the router to the gateway.)
pub fn request_id(headers: &HeaderMap) -> HeaderValue {
    headers
        .get(hatchway_api::wire::REQUEST_ID)
        .filter(|v| v.to_str().is_ok_and(hatchway_api::wire::is_sane_request_id))
        .cloned()
        .unwrap_or_else(|| {
            let id: u128 = rand::random();
            HeaderValue::from_str(&format!("{id:032x}")).expect("hex is a valid header value")
        })
}

/// Why the gateway could not be reached.
#[derive(Debug, thiserror::Error)]
pub enum ReachError {
    /// Connecting, TLS, or the proof exchange failed.
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
    /// No stream could be opened on the tunnel.
    #[error(transparent)]
    Tunnel(#[from] TunnelError),
    /// The Container has no UID (it cannot have a gateway key).
    #[error("the container has no UID")]
    NoUid,
    /// The route leads to another replica: that is [`super::forward`]'s job.
    #[error("the gateway is reached through another replica")]
    NotDirect,
}

impl ReachError {
    /// The status code and message a user gets.
    pub fn status_and_message(&self) -> (StatusCode, String) {
        match self {
            ReachError::Upstream(e) => e.status_and_message(),
            ReachError::Tunnel(TunnelError::NotConnected) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "tunnel is down: the container's gateway tunnel to this router is not connected".to_owned(),
            ),
            ReachError::Tunnel(e) => (
                StatusCode::SERVICE_UNAVAILABLE,
                format!("gateway unreachable: {e}"),
            ),
            ReachError::NoUid | ReachError::NotDirect => {
                (StatusCode::INTERNAL_SERVER_ERROR, self.to_string())
            }
        }
    }

    /// A label for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            ReachError::Upstream(e) => e.kind(),
            ReachError::Tunnel(TunnelError::NotConnected) => "tunnel_down",
            ReachError::Tunnel(_) => "tunnel_failed",
            ReachError::NoUid => "no_uid",
            ReachError::NotDirect => "not_direct",
        }
    }
}

/// Connects along `route` and sends `request`: the gateway's answer, or the
/// refusal to give the user (failures counted and logged).
pub(super) async fn exchange(
    router: &Arc<Router>,
    container: &Container,
    route: &Route,
    request: Request<Body>,
) -> Result<Response<Incoming>, Response<Body>> {
    let refuse = |(status, message): (StatusCode, String)| text(status, message);
    let mut request = request;
    // Every gateway request names the replica that sent it (the audit
    // trail's "from where").
    request.headers_mut().insert(
        hatchway_api::wire::REQUEST_REPLICA,
        header_safe(&router.settings.replica),
    );
    let key = container
        .metadata
        .uid
        .as_deref()
        .and_then(|uid| pool::Key::new(uid, route));
    let pooled = key.as_ref().and_then(|key| router.gateways.take(key));
    let reused = pooled.is_some();
    let mut connection = match pooled {
        Some(connection) => {
            router
                .metrics
                .gateway_connections
                .with_label_values(&["reused"])
                .inc();
            connection
        }
        None => connect(router, container, route)
            .await
            .map_err(|error| refuse(error.status_and_message()))?,
    };
    let mut sent = connection.try_send(request).await;
    if reused && let Err((error, Some(unsent))) = sent {
        // The kept connection had closed (the gateway let it go as the
        // request left): none of it was written, so it goes on a new one.
        tracing::debug!(%error, "a kept gateway connection had closed; connecting again");
        connection = connect(router, container, route)
            .await
            .map_err(|error| refuse(error.status_and_message()))?;
        sent = connection.try_send(unsent).await;
    }
    match sent {
        Ok(response) => {
            // An upgrade owns the connection from now on; any other
            // answer leaves it free once its body has ended.
            if let Some(key) = key {
                if response.status() != StatusCode::SWITCHING_PROTOCOLS {
                    router.gateways.put(key, connection);
                } else if matches!(route, Route::Direct(_))
                    && !router.gateways.has_ready(&key)
                    && let Some(claim) = router.spares.claim(&key)
                {
                    // An upgrade (a port-forward's connection, a shell)
                    // is often followed by another to the same gateway:
                    // the next one finds its TCP and TLS handshakes done
                    // (two round trips across the cluster network). A
                    // tunnel stream has no handshake to save. One spare
                    // at a time: a burst of upgrades makes one, not one
                    // each.
                    spare(router.clone(), route.clone(), key, claim);
                }
            }
            Ok(response)
        }
        Err((error, _)) => {
            router
                .metrics
                .gateway_errors
                .with_label_values(&[error.kind()])
                .inc();
            tracing::warn!(%error, "gateway request failed");
            Err(refuse(error.status_and_message()))
        }
    }
}

/// Connects a spare to the gateway of `key` in the background and keeps it
/// (for [`super::pool::IDLE_FOR`]). A failure costs nothing: the next
/// request connects as it would have.
fn spare(router: Arc<Router>, route: Route, key: pool::Key, claim: pool::SpareClaim) {
    tokio::spawn(async move {
        let _claim = claim;
        match connect_inner(&router, key.uid(), &route).await {
            Ok(connection) => router.gateways.put(key, connection),
            Err(error) => tracing::debug!(%error, "no spare gateway connection"),
        }
    });
}

/// Connects to the gateway of `container` along `route` (direct or local
/// tunnel; `Forward` is not a gateway connection and is refused here),
/// counted as a new gateway connection or as the failure it was.
async fn connect(
    router: &Router,
    container: &Container,
    route: &Route,
) -> Result<GatewayConnection, ReachError> {
    let result = match container.metadata.uid.as_deref() {
        Some(uid) => connect_inner(router, uid, route).await,
        None => Err(ReachError::NoUid),
    };
    match &result {
        Ok(_) => router
            .metrics
            .gateway_connections
            .with_label_values(&["new"])
            .inc(),
        Err(error) => {
            router
                .metrics
                .gateway_errors
                .with_label_values(&[error.kind()])
                .inc();
            tracing::warn!(%error, route = route.as_str(), "gateway connection failed");
        }
    }
    result
}

async fn connect_inner(router: &Router, uid: &str, route: &Route) -> Result<GatewayConnection, ReachError> {
    let key = router.root.ctr_key(uid);
    match route {
        Route::Direct(addr) => {
            let tcp = upstream::connect_tcp(*addr, upstream::TCP_CONNECT_TIMEOUT).await?;
            Ok(upstream::connect(tcp, uid, &key).await?)
        }
        Route::LocalTunnel => {
            let opened = router.tunnels.open_stream(uid).await?;
            router.metrics.tunnel_streams.inc();
            match opened.stream_proof {
                Some(proof) => Ok(upstream::connect_in_tunnel(opened.stream, uid, &key, &proof).await?),
                None => Ok(upstream::connect(opened.stream, uid, &key).await?),
            }
        }
        Route::Forward(_) => Err(ReachError::NotDirect),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_are_kept_when_sane_and_made_otherwise() {
        let mut h = HeaderMap::new();
        assert_eq!(request_id(&h).len(), 32);
        h.insert(
            hatchway_api::wire::REQUEST_ID,
            HeaderValue::from_static("abc-123"),
        );
        assert_eq!(request_id(&h), "abc-123");
        h.insert(
            hatchway_api::wire::REQUEST_ID,
            HeaderValue::from_static("has space"),
        );
        assert_eq!(request_id(&h).len(), 32);
    }

    #[test]
    fn user_names_become_safe_header_values() {
        assert_eq!(
            header_safe("system:serviceaccount:a:b"),
            "system:serviceaccount:a:b"
        );
        assert_eq!(header_safe("zoë\n"), "zo%C3%AB%0A");
    }
}
