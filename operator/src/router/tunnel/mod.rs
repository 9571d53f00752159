//! The tunnel endpoint and the registry of tunnels this replica holds
//! (DESIGN.md, "Trust model": sidecar -> router tunnel).
//!
//! A sidecar dials `POST /v1/tunnel` with `Upgrade: hatchway-tunnel`, its
//! container UID and a proof over this TLS session's exported keying
//! material. [`accept`] looks the UID up first (it is public), then checks
//! the proof against the Container's key in constant time, answers 101 and
//! hands the upgraded connection to one task (`session`) that owns the
//! yamux connection: yamux 0.14 has no control handle, so every stream the
//! router opens is asked of that task ([`Registry::open_stream`]). The same
//! task reads the sidecar's reports on the control stream (`control`) and
//! writes them into the Container's status.

mod control;
mod registry;
mod session;

use std::sync::Arc;

use hatchway_api::tunnel::{EKM_LEN, stream_proof, verify_tunnel_proof};
use hatchway_api::{control as protocol, wire};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode, header};
use tokio_util::compat::Compat;
use tracing::Instrument;

pub use registry::{OPEN_TIMEOUT, Opened, Registry};

use super::Router;
use super::respond::{Body, RequestBody, empty_body, text};
use hatchway_api::headers::wants_upgrade;

/// A stream opened on a tunnel: a connection to the sidecar's gateway.
pub type TunnelStream = Compat<yamux::Stream>;

/// Why no stream could be opened.
#[derive(Debug, thiserror::Error)]
pub enum TunnelError {
    /// This replica holds no tunnel for the Container.
    #[error("no tunnel to this container is connected here")]
    NotConnected,
    /// The tunnel failed while opening the stream.
    #[error("the tunnel failed: {0}")]
    Failed(String),
    /// The sidecar did not accept the stream in time.
    #[error("the tunnel did not open a stream in time")]
    Timeout,
}

/// The Container a tunnel was proven for.
#[derive(Clone, Debug)]
struct Peer {
    uid: String,
    namespace: String,
    name: String,
}

/// Serves `POST /v1/tunnel` (`Upgrade: hatchway-tunnel`); `ekm` is the
/// keying material exported from this TLS session right after its
/// handshake.
pub async fn accept(
    router: Arc<Router>,
    mut req: Request<RequestBody>,
    ekm: Option<[u8; EKM_LEN]>,
) -> Response<Body> {
    let refuse = |result: &str, status: StatusCode, message: String| {
        router.metrics.tunnel_attempts.with_label_values(&[result]).inc();
        text(status, message)
    };
    let (uid, proof) = match check_request(req.method(), req.headers()) {
        Ok(parts) => parts,
        Err(message) => return refuse("bad_request", StatusCode::BAD_REQUEST, message),
    };
    let Some(ekm) = ekm else {
        // Without TLS there is no keying material for the proof to cover.
        return refuse(
            "bad_request",
            StatusCode::BAD_REQUEST,
            "tunnels need TLS: the proof covers the TLS session's exported keying material".to_owned(),
        );
    };

    // The UID is public: look it up before any secret is touched, so an
    // unknown UID costs no key derivation and says nothing about keys.
    let container = match router.cluster.container_by_uid(&uid).await {
        Ok(Some(container)) => container,
        Ok(None) => {
            return refuse(
                "unknown_container",
                StatusCode::NOT_FOUND,
                format!("no container has UID {uid}"),
            );
        }
        Err(error) => {
            tracing::warn!(%error, uid, "looking up a tunnel's container");
            return refuse(
                "unavailable",
                StatusCode::SERVICE_UNAVAILABLE,
                format!("cannot look up the container with UID {uid} right now: {error}"),
            );
        }
    };
    let peer = Peer {
        namespace: container.metadata.namespace.clone().unwrap_or_default(),
        name: container.metadata.name.clone().unwrap_or_default(),
        uid,
    };
    let span = tracing::Span::current();
    span.record("namespace", peer.namespace.as_str());
    span.record("container", peer.name.as_str());

    if !verify_tunnel_proof(&router.root.ctr_key(&peer.uid), &ekm, &proof) {
        tracing::warn!(
            uid = peer.uid,
            "tunnel proof failed: the sidecar does not hold this container's key"
        );
        return refuse(
            "bad_proof",
            StatusCode::UNAUTHORIZED,
            format!("tunnel proof failed for container UID {}", peer.uid),
        );
    }
    // Both checked again when the session registers (another tunnel may
    // take the last place meanwhile); these checks spare the upgrade.
    if router.tunnels.is_leaving() {
        return refuse(
            "shutting_down",
            StatusCode::SERVICE_UNAVAILABLE,
            "this router replica is shutting down: try another".to_owned(),
        );
    }
    if !router.tunnels.has_room_for(&peer.uid) {
        return refuse(
            "over_capacity",
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "tunnel capacity reached ({}): try another router replica",
                router.tunnels.max()
            ),
        );
    }

    // A sidecar that asks for it gets streams without TLS of their own
    // (docs/decisions.md): their requests carry a proof bound to this
    // tunnel's session instead of one over the gateway's certificate.
    let plain_streams = wire::asks_plain_tunnel_streams(req.headers());
    let stream_proof =
        plain_streams.then(|| Arc::<str>::from(stream_proof(&router.root.ctr_key(&peer.uid), &ekm)));
    let upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(session::run(router.clone(), upgrade, peer, stream_proof).instrument(span));
    let mut response = Response::new(empty_body());
    if plain_streams {
        response.headers_mut().insert(
            HeaderName::from_static(wire::TUNNEL_STREAMS),
            HeaderValue::from_static(wire::TUNNEL_STREAMS_HTTP),
        );
    }
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    response
        .headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    response
        .headers_mut()
        .insert(header::UPGRADE, HeaderValue::from_static(wire::UPGRADE_TUNNEL));
    response
}

/// The UID and proof of a well-formed tunnel request, or why it is not one.
pub fn check_request(method: &Method, headers: &HeaderMap) -> Result<(String, String), String> {
    let upgrade = wants_upgrade(headers);
    if *method != Method::POST || upgrade.as_deref() != Some(wire::UPGRADE_TUNNEL) {
        return Err(format!(
            "a tunnel needs POST {} over HTTP/1.1 with 'Connection: upgrade' and 'Upgrade: {}' (got {method}{})",
            wire::TUNNEL_PATH,
            wire::UPGRADE_TUNNEL,
            upgrade.map(|u| format!(", Upgrade: {u}")).unwrap_or_default()
        ));
    }
    let header = |name: &str| -> Result<&str, String> {
        let value = headers
            .get(name)
            .ok_or_else(|| format!("the {name} header is missing"))?;
        value
            .to_str()
            .map(str::trim)
            .map_err(|_| format!("the {name} header is not text"))
    };
    let version = header(wire::TUNNEL_VERSION)?;
    if version != protocol::PROTOCOL_VERSION.to_string() {
        return Err(format!(
            "tunnel protocol version {version:?} ({}) is not supported: this router speaks {}",
            wire::TUNNEL_VERSION,
            protocol::PROTOCOL_VERSION
        ));
    }
    let uid = header(wire::CONTAINER_UID)?;
    if !is_uid(uid) {
        return Err(format!(
            "the {} header is not a container UID",
            wire::CONTAINER_UID
        ));
    }
    let proof = header(wire::TUNNEL_PROOF)?;
    if proof.len() != 64 || !proof.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(format!("the {} header is not 64 hex digits", wire::TUNNEL_PROOF));
    }
    Ok((uid.to_owned(), proof.to_owned()))
}

/// Kubernetes UIDs are UUIDs; this accepts anything of that alphabet and a
/// sane length, so lookups and log lines only ever see such text.
fn is_uid(s: &str) -> bool {
    (1..=128).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(*name, HeaderValue::from_str(value).unwrap());
        }
        map
    }

    fn good() -> Vec<(&'static str, String)> {
        vec![
            ("connection", "Upgrade".to_owned()),
            ("upgrade", "hatchway-tunnel".to_owned()),
            (wire::TUNNEL_VERSION, "1".to_owned()),
            (
                wire::CONTAINER_UID,
                "7c1e9a52-5b7e-4f0e-9d3a-2b8f6c4d1e90".to_owned(),
            ),
            (wire::TUNNEL_PROOF, "ab".repeat(32)),
        ]
    }

    /// A change to the well-formed headers: set header `i` to a value, or
    /// remove it.
    enum Change {
        Set(usize, String),
        Remove(usize),
    }

    fn check_with(change: Option<Change>) -> Result<(String, String), String> {
        let mut pairs = good();
        match change {
            Some(Change::Set(i, value)) => pairs[i].1 = value,
            Some(Change::Remove(i)) => drop(pairs.remove(i)),
            None => {}
        }
        let pairs: Vec<(&'static str, &str)> = pairs.iter().map(|(n, v)| (*n, v.as_str())).collect();
        check_request(&Method::POST, &headers(&pairs))
    }

    #[test]
    fn a_well_formed_request_passes() {
        let (uid, proof) = check_with(None).unwrap();
        assert_eq!(uid, "7c1e9a52-5b7e-4f0e-9d3a-2b8f6c4d1e90");
        assert_eq!(proof, "ab".repeat(32));
    }

    #[test]
    fn malformed_requests_are_refused_with_a_reason() {
        let pairs = good();
        let pairs: Vec<(&'static str, &str)> = pairs.iter().map(|(n, v)| (*n, v.as_str())).collect();
        let err = check_request(&Method::GET, &headers(&pairs)).unwrap_err();
        assert!(err.starts_with("a tunnel needs POST /v1/tunnel"), "{err}");
        assert!(err.ends_with("(got GET, Upgrade: hatchway-tunnel)"), "{err}");

        let cases = [
            (Change::Set(1, "websocket".into()), "a tunnel needs POST"),
            (Change::Set(0, "keep-alive".into()), "a tunnel needs POST"),
            (Change::Set(2, "2".into()), "tunnel protocol version \"2\""),
            (
                Change::Remove(2),
                "the x-hatchway-tunnel-version header is missing",
            ),
            (
                Change::Remove(3),
                "the x-hatchway-container-uid header is missing",
            ),
            (
                Change::Set(3, "a/b".into()),
                "the x-hatchway-container-uid header is not a container UID",
            ),
            (Change::Remove(4), "the x-hatchway-tunnel-proof header is missing"),
            (
                Change::Set(4, "ab".repeat(31)),
                "the x-hatchway-tunnel-proof header is not 64 hex digits",
            ),
            (
                Change::Set(4, "zz".repeat(32)),
                "the x-hatchway-tunnel-proof header is not 64 hex digits",
            ),
        ];
        for (change, expected) in cases {
            let err = check_with(Some(change)).unwrap_err();
            assert!(
                err.starts_with(expected),
                "{err:?} should start with {expected:?}"
            );
        }
    }

    #[test]
    fn uids_are_checked_for_shape_only() {
        assert!(is_uid("7c1e9a52-5b7e-4f0e-9d3a-2b8f6c4d1e90"));
        assert!(!is_uid(""));
        assert!(!is_uid(&"a".repeat(129)));
        assert!(!is_uid("a b"));
        assert!(!is_uid("ä"));
    }
}
