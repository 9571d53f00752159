//! Opening a connection to a Container's gateway along a route from
//! [`super::select`]: a TCP connection to its address, or a stream on the
//! tunnel this replica holds; either way TLS and the proof exchange of
//! [`super::upstream`]. (Forwarding to another replica is
//! [`super::forward`].)

use hatchway_api::crd::Container;
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;

use super::Router;
use super::respond::{Body, text};
use super::select::Route;
use super::tunnel::TunnelError;
use super::upstream::{self, GatewayConnection, UpstreamBody, UpstreamError};

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
pub async fn exchange(
    router: &Router,
    container: &Container,
    route: &Route,
    request: Request<UpstreamBody>,
) -> Result<Response<Incoming>, Response<Body>> {
    let refuse = |(status, message): (StatusCode, String)| text(status, message);
    let mut connection = connect(router, container, route)
        .await
        .map_err(|error| refuse(error.status_and_message()))?;
    connection.send(request).await.map_err(|error| {
        router
            .metrics
            .gateway_errors
            .with_label_values(&[error.kind()])
            .inc();
        tracing::warn!(%error, "gateway request failed");
        refuse(error.status_and_message())
    })
}

/// Connects to the gateway of `container` along `route` (direct or local
/// tunnel; `Forward` is not a gateway connection and is refused here).
pub async fn connect(
    router: &Router,
    container: &Container,
    route: &Route,
) -> Result<GatewayConnection, ReachError> {
    let result = connect_inner(router, container, route).await;
    if let Err(error) = &result {
        router
            .metrics
            .gateway_errors
            .with_label_values(&[error.kind()])
            .inc();
        tracing::warn!(%error, route = route.as_str(), "gateway connection failed");
    }
    result
}

async fn connect_inner(
    router: &Router,
    container: &Container,
    route: &Route,
) -> Result<GatewayConnection, ReachError> {
    let uid = container.metadata.uid.as_deref().ok_or(ReachError::NoUid)?;
    let key = router.root.ctr_key(uid);
    match route {
        Route::Direct(addr) => {
            let tcp = upstream::connect_tcp(*addr, upstream::TCP_CONNECT_TIMEOUT).await?;
            Ok(upstream::connect(tcp, uid, &key).await?)
        }
        Route::LocalTunnel => {
            let stream = router.tunnels.open_stream(uid).await?;
            router.metrics.tunnel_streams.inc();
            Ok(upstream::connect(stream, uid, &key).await?)
        }
        Route::Forward(_) => Err(ReachError::NotDirect),
    }
}
