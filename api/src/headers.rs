//! What a hop does to HTTP headers, the same in the router and the
//! gateway: hop-by-hop headers never pass (RFC 9110 §7.6.1), `X-Hatchway-*`
//! headers never reach a user or an app, a web app's answer never carries
//! the gateway's `Hatchway-*` answer headers, and an upgrade is recognised
//! only with `Connection: upgrade`.

use http::header::{self, HeaderMap, HeaderName};

/// Hop-by-hop headers a proxy must not pass on (`Upgrade` is handled on
/// its own: kept for a relayed upgrade).
pub const HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
];

/// The prefix of the headers between the router and the gateway.
pub const HATCHWAY_PREFIX: &str = "x-hatchway-";

/// The prefix of the headers the gateway's own answers carry to the user
/// (an SSH host key, a resumable session's id and secret, where logs came
/// from: [`crate::wire`]).
pub const GATEWAY_PREFIX: &str = "hatchway-";

/// Removes hop-by-hop headers, those the `Connection` header names, and
/// `Upgrade` unless `keep_upgrade`.
pub fn strip_hop_by_hop(headers: &mut HeaderMap, keep_upgrade: bool) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
        .filter(|n| !(keep_upgrade && *n == header::UPGRADE))
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
    if !keep_upgrade {
        headers.remove(header::UPGRADE);
    }
}

/// Removes every `X-Hatchway-*` header: those are between the router and
/// the gateway, never from or to a user or an app.
pub fn strip_hatchway_headers(headers: &mut HeaderMap) {
    strip_prefixed(headers, HATCHWAY_PREFIX);
}

/// Removes every `Hatchway-*` header from a web app's answer: those are
/// the gateway's to say (the CLI trusts a shell's `Hatchway-Ssh-Host-Key`),
/// and an app in the workload must not be able to say them.
pub fn strip_gateway_headers(headers: &mut HeaderMap) {
    strip_prefixed(headers, GATEWAY_PREFIX);
}

/// Removes every header whose (lowercase) name starts with `prefix`.
fn strip_prefixed(headers: &mut HeaderMap, prefix: &str) {
    let ours: Vec<HeaderName> = headers
        .keys()
        .filter(|n| n.as_str().starts_with(prefix))
        .cloned()
        .collect();
    for name in ours {
        headers.remove(name);
    }
}

/// The protocol a request asks to upgrade to (lowercase), when it does
/// (HTTP/1.1 `Connection: upgrade` and `Upgrade: PROTOCOL`).
pub fn wants_upgrade(headers: &HeaderMap) -> Option<String> {
    let connection_upgrade = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case("upgrade")));
    let upgrade = headers.get(header::UPGRADE).and_then(|v| v.to_str().ok())?;
    connection_upgrade.then(|| upgrade.trim().to_ascii_lowercase())
}

/// True when the request asks to upgrade to `protocol`.
pub fn upgrade_is(headers: &HeaderMap, protocol: &str) -> bool {
    wants_upgrade(headers).is_some_and(|p| p.eq_ignore_ascii_case(protocol))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn hop_by_hop_and_connection_named_headers_go() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, x-secret, upgrade"),
        );
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        h.insert(header::TE, HeaderValue::from_static("trailers"));
        h.insert("proxy-connection", HeaderValue::from_static("keep-alive"));
        h.insert("x-kept", HeaderValue::from_static("1"));
        let mut kept = h.clone();
        strip_hop_by_hop(&mut h, false);
        assert_eq!(h.len(), 1, "{h:?}");
        assert!(h.contains_key("x-kept"));
        strip_hop_by_hop(&mut kept, true);
        assert!(kept.contains_key(header::UPGRADE) && !kept.contains_key("x-secret"));
    }

    #[test]
    fn hatchway_headers_are_ours_alone() {
        let mut h = HeaderMap::new();
        h.insert("x-hatchway-authorization", HeaderValue::from_static("x"));
        h.insert("x-hatchway-target-port", HeaderValue::from_static("80"));
        h.insert("x-other", HeaderValue::from_static("1"));
        strip_hatchway_headers(&mut h);
        assert_eq!(h.keys().map(|k| k.as_str()).collect::<Vec<_>>(), ["x-other"]);
    }

    #[test]
    fn gateway_answer_headers_are_the_gateway_s_alone() {
        let mut h = HeaderMap::new();
        h.insert(
            crate::wire::SSH_HOST_KEY,
            HeaderValue::from_static("ssh-ed25519 AAAA"),
        );
        h.insert(crate::wire::resumable::SECRET, HeaderValue::from_static("00"));
        h.insert(crate::wire::LOG_SOURCE, HeaderValue::from_static("saved"));
        h.insert("x-hatchway-user", HeaderValue::from_static("root"));
        h.insert("x-app-hatchway-note", HeaderValue::from_static("1"));
        strip_gateway_headers(&mut h);
        let mut left: Vec<_> = h.keys().map(|k| k.as_str()).collect();
        left.sort();
        assert_eq!(left, ["x-app-hatchway-note", "x-hatchway-user"]);
        // Every header a gateway's answer carries to the user is one of them.
        let answers = crate::wire::resumable::RESPONSE_HEADERS.into_iter().chain([
            crate::wire::SSH_HOST_KEY,
            crate::wire::LOG_SOURCE,
            crate::wire::LOG_COMPLETE,
        ]);
        for name in answers {
            assert!(name.starts_with(GATEWAY_PREFIX), "{name}");
        }
    }

    #[test]
    fn upgrades_are_recognised_only_with_connection_upgrade() {
        let mut h = HeaderMap::new();
        h.insert(header::UPGRADE, HeaderValue::from_static("WebSocket"));
        assert_eq!(wants_upgrade(&h), None);
        assert!(!upgrade_is(&h, "websocket"));
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, Upgrade"),
        );
        assert_eq!(wants_upgrade(&h).as_deref(), Some("websocket"));
        assert!(upgrade_is(&h, "websocket") && !upgrade_is(&h, "ssh"));
    }
}
