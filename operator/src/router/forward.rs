//! Forwarding a request to the replica that holds a Container's tunnel.
//!
//! The whole request goes as it came (the user's credentials included: the
//! peer authenticates and authorizes it again, from its cache), with
//! `X-Hatchway-No-Forward` so the peer never forwards it on, over TLS that
//! trusts only the router CA and checks the name the replicas'
//! certificate carries (peers are dialled by IP). Upgrades are relayed.
//! A request the API server proxied (the aggregated API) has no
//! credentials of its own: it goes to the peer's aggregated port with the
//! user the API server named and a proof over the TLS session that a
//! replica sent it ([`peer::peer_headers`]).

use std::sync::Arc;
use std::time::Duration;

use hatchway_api::headers;
use hatchway_api::readahead::ReadAhead;
use http::{HeaderValue, Request, Response, StatusCode, Uri, header};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use hatchway_api::tunnel::{EKM_LABEL, EKM_LEN};

use super::access::ProxiedUser;
use super::relay;
use super::respond::{Body, RequestBody, text};
use super::{Router, peer};

/// Time allowed to connect to a peer and finish TLS.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Time allowed for the peer's response head.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(60);

/// Why a forward failed.
#[derive(Debug, thiserror::Error)]
enum ForwardError {
    #[error("replica URL {0:?} is not https://host:port")]
    BadUrl(String),
    #[error("connecting: {0}")]
    Connect(std::io::Error),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("HTTP: {0}")]
    Http(#[from] hyper::Error),
    #[error("this replica does not know the peers' aggregated port (--aggregated-listen)")]
    NoAggregatedPort,
}

/// Sends `req` to the replica at `peer_url` and relays its answer.
/// Where a one-time login code must be redeemed, from a replica's view:
/// here, at the peer that minted it (only it knows whether the code was
/// used; `req` has been forwarded there and this is its answer), or at a
/// replica that is gone.
pub enum Minted {
    Here(Request<RequestBody>),
    Forwarded(Response<Body>),
    Gone,
}

/// Sends `req` on to `minted_by` unless that is this replica.
pub async fn to_minting_replica(
    router: &Arc<Router>,
    req: Request<RequestBody>,
    minted_by: &str,
    kind: &'static str,
) -> Minted {
    let same = |a: &str, b: &str| a.trim_end_matches('/') == b.trim_end_matches('/');
    if same(minted_by, &router.settings.self_url) {
        return Minted::Here(req);
    }
    let known = router.cluster.replicas().iter().any(|r| same(r, minted_by));
    if known && !req.headers().contains_key(hatchway_api::wire::NO_FORWARD) {
        return Minted::Forwarded(forward(router.clone(), req, minted_by, kind).await);
    }
    Minted::Gone
}

pub async fn forward(
    router: Arc<Router>,
    mut req: Request<RequestBody>,
    peer_url: &str,
    kind: &'static str,
) -> Response<Body> {
    let upgrade = headers::wants_upgrade(req.headers());
    let client_upgrade = upgrade.as_ref().map(|_| hyper::upgrade::on(&mut req));
    match send(&router, req, peer_url, upgrade.is_some()).await {
        Ok(response) => {
            router.metrics.forwards.with_label_values(&["ok"]).inc();
            // The peer unframes a framed stream itself: bytes as they come;
            // and it stripped what a web app may not say.
            relay::pass_on(
                router,
                response,
                client_upgrade,
                relay::ClientStream::Raw,
                relay::Author::Gateway,
                kind,
            )
        }
        Err(error) => {
            router.metrics.forwards.with_label_values(&["error"]).inc();
            tracing::warn!(%error, peer = peer_url, "forwarding to the replica holding the tunnel failed");
            text(
                StatusCode::BAD_GATEWAY,
                format!(
                    "forwarding to the router replica that holds the tunnel ({peer_url}) failed: {error}"
                ),
            )
        }
    }
}

async fn send(
    router: &Router,
    req: Request<RequestBody>,
    peer_url: &str,
    upgrade: bool,
) -> Result<Response<Incoming>, ForwardError> {
    let uri: Uri = peer_url
        .parse()
        .map_err(|_| ForwardError::BadUrl(peer_url.to_owned()))?;
    let authority = uri
        .authority()
        .filter(|_| uri.scheme_str() == Some("https"))
        .ok_or_else(|| ForwardError::BadUrl(peer_url.to_owned()))?
        .clone();
    // A request the API server proxied goes to the peer's aggregated port,
    // with the user it named and the proof that a replica sends it.
    let proxied = req.extensions().get::<ProxiedUser>().map(|p| p.0.clone());
    let port = match (&proxied, router.settings.aggregated_port) {
        (None, _) => authority.port_u16().unwrap_or(443),
        (Some(_), Some(port)) => port,
        (Some(_), None) => return Err(ForwardError::NoAggregatedPort),
    };
    let host = authority.host().trim_start_matches('[').trim_end_matches(']');
    let server_name = ServerName::try_from(router.settings.peer_server_name.clone())
        .map_err(|_| ForwardError::BadUrl(router.settings.peer_server_name.clone()))?;

    let connect = async {
        let tcp = TcpStream::connect((host, port)).await?;
        tcp.set_nodelay(true)?;
        TlsConnector::from(router.peer_tls.clone())
            .connect(server_name, ReadAhead::new(tcp))
            .await
    };
    let tls = tokio::time::timeout(CONNECT_TIMEOUT, connect)
        .await
        .map_err(|_| ForwardError::Timeout(CONNECT_TIMEOUT))?
        .map_err(ForwardError::Connect)?;
    let peer_headers = match &proxied {
        Some(user) => {
            let mut ekm = [0u8; EKM_LEN];
            tls.get_ref()
                .1
                .export_keying_material(&mut ekm, EKM_LABEL, None)
                .map_err(|e| ForwardError::Connect(std::io::Error::other(e)))?;
            Some(peer::peer_headers(router.root.expose_bytes(), &ekm, user))
        }
        None => None,
    };
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await?;
    tokio::spawn(async move {
        if let Err(error) = conn.with_upgrades().await {
            tracing::debug!(%error, "forwarded connection ended");
        }
    });

    let (mut parts, body) = req.into_parts();
    // HTTP/2 requests carry the host in the URI only.
    if !parts.headers.contains_key(header::HOST)
        && let Some(authority) = parts.uri.authority()
        && let Ok(value) = HeaderValue::from_str(authority.as_str())
    {
        parts.headers.insert(header::HOST, value);
    }
    headers::strip_hop_by_hop(&mut parts.headers, upgrade);
    if upgrade {
        parts
            .headers
            .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    }
    parts
        .headers
        .insert(hatchway_api::wire::NO_FORWARD, HeaderValue::from_static("1"));
    for (name, value) in peer_headers.into_iter().flatten() {
        parts.headers.insert(name, value);
    }
    let path = parts.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    parts.uri = path.parse().expect("a path and query re-parse");
    parts.version = http::Version::HTTP_11;
    let request = Request::from_parts(parts, body);
    tokio::time::timeout(RESPONSE_TIMEOUT, sender.send_request(request))
        .await
        .map_err(|_| ForwardError::Timeout(RESPONSE_TIMEOUT))?
        .map_err(ForwardError::Http)
}
