//! Proofs and the headers that carry them and sessions
//! (`hatchway_api::{proof, tunnel, headers, wire}`, the sidecar's
//! resumable-session headers): what the router, a gateway or a peer
//! presents.
//!
//! - A container key is accepted exactly when it is 64 lowercase hex
//!   digits (around whitespace).
//! - Every proof check (request, response, tunnel, stream) accepts exactly
//!   the proof the key makes, and the tunnel and stream proofs differ.
//! - `constant_time_eq` is string equality.
//! - After `strip_hop_by_hop` no hop-by-hop header, and none its
//!   `Connection` names, is left (`Upgrade` only when kept); after
//!   `strip_hatchway_headers` no `X-Hatchway-*` header is; an upgrade is
//!   recognised only with `Connection: upgrade`.
//! - The session headers: a resume is a request naming a session id, a
//!   resumable session one asking with exactly `1`.

#![no_main]

use hatchway_api::headers::{self, HATCHWAY_PREFIX, HOP_BY_HOP};
use hatchway_api::proof::{self, CtrKey};
use hatchway_api::{tunnel, wire};
use hatchway_fuzz::Fields;
use hatchway_sidecar::resumable;
use http::{HeaderMap, HeaderName, header};
use libfuzzer_sys::fuzz_target;

// Fields: key, certificate, presented proof, keying material, keep
// `Upgrade` (`1`), headers.
fuzz_target!(|data: &[u8]| {
    let mut fields = Fields::new(data);
    let key = fields.text();
    let cert = fields.bytes();
    let presented = fields.text();
    let mut ekm = [0; tunnel::EKM_LEN];
    let given = fields.bytes();
    ekm[..given.len().min(tunnel::EKM_LEN)].copy_from_slice(&given[..given.len().min(tunnel::EKM_LEN)]);
    let keep_upgrade = fields.flag();
    let map = fields.headers();
    proofs(&key, cert, &presented, &ekm);
    header_rules(map, keep_upgrade);
});

fn proofs(key: &str, cert: &[u8], presented: &str, ekm: &[u8; tunnel::EKM_LEN]) {
    let trimmed = key.trim();
    let well_formed = trimmed.len() == 64 && trimmed.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    match CtrKey::from_hex(key) {
        Ok(k) => {
            assert!(well_formed, "key {key:?} accepted");
            assert_eq!(k.expose_hex(), trimmed);
        }
        Err(_) => assert!(!well_formed, "key {key:?} refused"),
    }
    assert_eq!(proof::constant_time_eq(key, presented), key == presented);

    // Any key: one derived from the input.
    let k = proof::ctr_key(cert, key);
    let request = proof::request_auth(&k, cert);
    assert!(proof::verify_request_auth(&k, cert, &request));
    assert_eq!(
        proof::verify_request_auth(&k, cert, presented),
        presented == request
    );
    let respond = proof::respond_auth(&k, presented);
    assert!(proof::verify_respond_auth(&k, presented, &respond));
    assert_eq!(
        proof::verify_respond_auth(&k, &request, presented),
        presented == proof::respond_auth(&k, &request)
    );
    let tunnel_proof = tunnel::tunnel_proof(&k, ekm);
    let stream_proof = tunnel::stream_proof(&k, ekm);
    assert_ne!(tunnel_proof, stream_proof);
    assert!(tunnel::verify_tunnel_proof(&k, ekm, &tunnel_proof));
    assert_eq!(
        tunnel::verify_tunnel_proof(&k, ekm, presented),
        presented == tunnel_proof
    );
    assert_eq!(
        tunnel::verify_stream_proof(&stream_proof, presented),
        presented == stream_proof
    );
}

fn header_rules(map: HeaderMap, keep_upgrade: bool) {
    let texts = |map: &HeaderMap, name: HeaderName| -> Vec<String> {
        map.get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .map(str::to_owned)
            .collect()
    };
    // Upgrades.
    let connection = texts(&map, header::CONNECTION);
    let says_upgrade = connection
        .iter()
        .any(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case("upgrade")));
    match headers::wants_upgrade(&map) {
        Some(protocol) => {
            assert!(says_upgrade, "an upgrade without Connection: upgrade");
            assert_eq!(protocol, protocol.to_ascii_lowercase());
            assert!(headers::upgrade_is(&map, &protocol));
        }
        None => assert!(!says_upgrade || map.get(header::UPGRADE).and_then(|v| v.to_str().ok()).is_none()),
    }
    assert_eq!(
        wire::asks_plain_tunnel_streams(&map),
        map.get(wire::TUNNEL_STREAMS)
            .is_some_and(|v| v == wire::TUNNEL_STREAMS_HTTP)
    );

    // Session headers (the sidecar's reading of a resume).
    assert_eq!(resumable::is_resume(&map), map.contains_key(wire::resumable::ID));
    assert_eq!(
        resumable::wanted(&map),
        map.get(wire::resumable::REQUEST).is_some_and(|v| v == "1")
    );

    // Hop-by-hop.
    let named: Vec<HeaderName> = connection
        .iter()
        .flat_map(|v| v.split(','))
        .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
        .collect();
    let mut stripped = map.clone();
    headers::strip_hop_by_hop(&mut stripped, keep_upgrade);
    for name in HOP_BY_HOP.iter().chain(&named) {
        if keep_upgrade && *name == header::UPGRADE {
            continue;
        }
        assert!(!stripped.contains_key(name), "{name} passed a hop");
    }
    if keep_upgrade {
        assert_eq!(stripped.get(header::UPGRADE), map.get(header::UPGRADE));
    } else {
        assert!(!stripped.contains_key(header::UPGRADE));
    }
    for (name, value) in &stripped {
        assert!(
            map.get_all(name).iter().any(|v| v == value),
            "a header was made up"
        );
    }

    // X-Hatchway-*.
    let mut stripped = map;
    headers::strip_hatchway_headers(&mut stripped);
    assert!(stripped.keys().all(|n| !n.as_str().starts_with(HATCHWAY_PREFIX)));
}
