//! Router <-> gateway proofs, with the Arvados container gateway's encoding.
//!
//! - `ctr_key = hex(HMAC-SHA256(key = root secret, msg = container UID))`:
//!   the operator derives it and mounts it into the sidecar only.
//! - `request_auth = hex(HMAC-SHA256(key = ASCII of ctr_key, msg = the
//!   gateway's certificate DER))`: the router sends it in
//!   `X-Hatchway-Authorization` after the TLS handshake, proving it knows the
//!   key *and* that it talks to this certificate. A man-in-the-middle with
//!   another certificate would need a different proof, which it cannot make.
//! - `respond_auth = hex(HMAC-SHA256(key = ASCII of ctr_key, msg = ASCII of
//!   request_auth))`: the gateway answers it in
//!   `X-Hatchway-Authorization-Response`, proving it knows the key too.
//!
//! All hex is lowercase. Every check compares in constant time.

use std::fmt;

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

type HmacSha256 = Hmac<Sha256>;

/// A container's key: the lowercase hex of 32 HMAC bytes. It is a secret:
/// its `Debug` form never shows the value.
#[derive(Clone, PartialEq, Eq)]
pub struct CtrKey(String);

impl CtrKey {
    /// Wraps a key read from the mounted Secret. Surrounding whitespace (a
    /// trailing newline in a file) is dropped; anything but 64 lowercase hex
    /// digits is refused.
    pub fn from_hex(hex: &str) -> Result<Self, ProofError> {
        let hex = hex.trim();
        if hex.len() != 64
            || !hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            return Err(ProofError::MalformedKey);
        }
        Ok(Self(hex.to_owned()))
    }

    /// The hex text, exactly as it is keyed into the HMACs and stored in the
    /// per-Container Secret.
    pub fn expose_hex(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for CtrKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("CtrKey(<redacted>)")
    }
}

/// Why a key could not be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ProofError {
    /// The key is not 64 lowercase hex digits.
    #[error("container key must be 64 lowercase hex digits")]
    MalformedKey,
}

/// `hex(HMAC-SHA256(key, msg))`: every proof, and the router's signed
/// web-app sessions and login codes.
pub fn hmac_hex(key: &[u8], msg: &[u8]) -> String {
    let mut mac = HmacSha256::new_from_slice(key).expect("HMAC takes a key of any length");
    mac.update(msg);
    hex::encode(mac.finalize().into_bytes())
}

/// `hex(HMAC-SHA256(root, container_uid))`.
pub fn ctr_key(root_secret: &[u8], container_uid: &str) -> CtrKey {
    CtrKey(hmac_hex(root_secret, container_uid.as_bytes()))
}

/// The operator's root secret, from which every Container key derives.
/// `Debug` never prints it.
#[derive(Clone)]
pub struct RootSecret(std::sync::Arc<[u8]>);

impl RootSecret {
    /// Wraps the secret's bytes.
    pub fn new(bytes: impl Into<std::sync::Arc<[u8]>>) -> Self {
        Self(bytes.into())
    }

    /// The key of the Container with `uid`.
    pub fn ctr_key(&self, uid: &str) -> CtrKey {
        ctr_key(&self.0, uid)
    }

    /// The secret's bytes, to derive other keys from (the router's web
    /// sessions). Never log them.
    pub fn expose_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for RootSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RootSecret(..)")
    }
}

/// `hex(HMAC-SHA256(ctr_key, server certificate DER))`, sent by the router.
pub fn request_auth(key: &CtrKey, server_cert_der: &[u8]) -> String {
    hmac_hex(key.0.as_bytes(), server_cert_der)
}

/// `hex(HMAC-SHA256(ctr_key, request_auth))`, answered by the gateway.
pub fn respond_auth(key: &CtrKey, request_auth: &str) -> String {
    hmac_hex(key.0.as_bytes(), request_auth.as_bytes())
}

/// The gateway's check of a router's `X-Hatchway-Authorization`, over its
/// own certificate. Constant time in the proof's content.
pub fn verify_request_auth(key: &CtrKey, own_cert_der: &[u8], presented: &str) -> bool {
    constant_time_eq(&request_auth(key, own_cert_der), presented)
}

/// The router's check of a gateway's `X-Hatchway-Authorization-Response`.
/// Constant time in the proof's content.
pub fn verify_respond_auth(key: &CtrKey, request_auth: &str, presented: &str) -> bool {
    constant_time_eq(&respond_auth(key, request_auth), presented)
}

/// Compares two proofs without leaking where they differ. Their length is
/// public (always 64 for a well-formed proof), so a length mismatch may
/// return early.
pub fn constant_time_eq(expected: &str, presented: &str) -> bool {
    expected.as_bytes().ct_eq(presented.as_bytes()).into()
}

/// Lowercase hex SHA-256 of a certificate's DER: the fingerprint the sidecar
/// reports and `status.gateway.certificateSha256` holds.
pub fn certificate_sha256(cert_der: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(Sha256::digest(cert_der))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_debug_never_shows_the_secret() {
        let key = ctr_key(b"root", "uid");
        let shown = format!("{key:?}");
        assert!(!shown.contains(key.expose_hex()), "{shown}");
    }

    #[test]
    fn malformed_keys_are_refused() {
        assert_eq!(CtrKey::from_hex("abc"), Err(ProofError::MalformedKey));
        let upper = "A".repeat(64);
        assert_eq!(CtrKey::from_hex(&upper), Err(ProofError::MalformedKey));
        let good = ctr_key(b"root", "uid");
        assert_eq!(CtrKey::from_hex(&format!("{}\n", good.expose_hex())), Ok(good));
    }

    #[test]
    fn a_proof_off_by_one_character_or_length_fails() {
        let key = ctr_key(b"root", "uid");
        let proof = request_auth(&key, b"cert");
        assert!(verify_request_auth(&key, b"cert", &proof));
        let mut flipped = proof.clone().into_bytes();
        flipped[63] = if flipped[63] == b'0' { b'1' } else { b'0' };
        assert!(!verify_request_auth(
            &key,
            b"cert",
            std::str::from_utf8(&flipped).unwrap()
        ));
        assert!(!verify_request_auth(&key, b"cert", &proof[..63]));
        assert!(!verify_request_auth(&key, b"cert", ""));
        assert!(!verify_request_auth(&key, b"other cert", &proof));
    }
}
