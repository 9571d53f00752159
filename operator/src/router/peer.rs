//! Proofs between replicas: a replica passing a proxied request (the
//! aggregated API's) on to the replica that holds a tunnel names the user
//! the API server authenticated, and proves with a key derived from the
//! root secret, over the TLS session's exported keying material and that
//! user, that a replica sent it. Only replicas hold the root secret; a
//! proof cannot be replayed on another connection or for another user.

use base64::Engine as _;
use hatchway_api::proof::{constant_time_eq, hmac_hex};
use hatchway_api::tunnel::EKM_LEN;
use http::{HeaderMap, HeaderValue};

use super::auth::User;

/// Router -> router (aggregated port): the peer proof, `hex(HMAC(peer key,
/// EKM ‖ PEER_USER value))`.
pub const PEER_PROOF: &str = "x-hatchway-peer-proof";
/// Router -> router (aggregated port): the user the API server named,
/// base64 of its JSON, covered by [`PEER_PROOF`].
pub const PEER_USER: &str = "x-hatchway-peer-user";

/// The key peers prove themselves with: derived from the root secret, so
/// only replicas hold it.
fn peer_key(root: &[u8]) -> String {
    hmac_hex(root, b"hatchway aggregated-api peer forward v1")
}

/// What a replica forwarding a proxied request adds to it: the user and the
/// proof over this connection's keying material.
pub fn peer_headers(root: &[u8], ekm: &[u8; EKM_LEN], user: &User) -> [(&'static str, HeaderValue); 2] {
    let json = serde_json::to_vec(user).expect("a user serializes");
    let encoded = base64::engine::general_purpose::STANDARD.encode(json);
    let mut message = ekm.to_vec();
    message.extend_from_slice(encoded.as_bytes());
    let proof = hmac_hex(peer_key(root).as_bytes(), &message);
    [
        (
            PEER_USER,
            HeaderValue::from_str(&encoded).expect("base64 is a header value"),
        ),
        (
            PEER_PROOF,
            HeaderValue::from_str(&proof).expect("hex is a header value"),
        ),
    ]
}

/// The user a peer replica names, if its proof holds over `ekm`.
pub fn peer_user(root: &[u8], ekm: Option<&[u8; EKM_LEN]>, headers: &HeaderMap) -> Result<User, String> {
    let ekm = ekm.ok_or("no keying material on this connection")?;
    let encoded = headers
        .get(PEER_USER)
        .and_then(|v| v.to_str().ok())
        .ok_or("a peer proof without a user")?;
    let presented = headers
        .get(PEER_PROOF)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let mut message = ekm.to_vec();
    message.extend_from_slice(encoded.as_bytes());
    if !constant_time_eq(&hmac_hex(peer_key(root).as_bytes(), &message), presented) {
        return Err("the peer proof does not verify".into());
    }
    let json = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .map_err(|_| "the peer's user is not base64")?;
    serde_json::from_slice(&json).map_err(|_| "the peer's user is not JSON".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_peer_proof_holds_only_over_its_own_session_and_user() {
        let root = [7u8; 32];
        let ekm = [1u8; EKM_LEN];
        let user = User {
            username: "alice".into(),
            groups: vec!["dev".into()],
            ..User::default()
        };
        let mut headers = HeaderMap::new();
        for (name, value) in peer_headers(&root, &ekm, &user) {
            headers.insert(name, value);
        }
        assert_eq!(peer_user(&root, Some(&ekm), &headers).unwrap(), user);
        assert!(
            peer_user(&root, Some(&[2u8; EKM_LEN]), &headers).is_err(),
            "another session"
        );
        assert!(
            peer_user(&[8u8; 32], Some(&ekm), &headers).is_err(),
            "another root"
        );
        assert!(peer_user(&root, None, &headers).is_err(), "no keying material");
        let mallory = User {
            username: "system:admin".into(),
            ..User::default()
        };
        let forged = base64::engine::general_purpose::STANDARD.encode(serde_json::to_vec(&mallory).unwrap());
        headers.insert(PEER_USER, HeaderValue::from_str(&forged).unwrap());
        assert!(peer_user(&root, Some(&ekm), &headers).is_err(), "another user");
    }
}
