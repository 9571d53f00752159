//! The sidecar's proof on the tunnel it dials to the router.
//!
//! The sidecar verifies the router's certificate against the CA pinned in its
//! Secret, then sends its container UID (public: the router looks it up
//! first, before touching any secret) and
//! `hex(HMAC-SHA256(key = ASCII of ctr_key, msg = EKM))`, where EKM is 32
//! bytes of TLS exported keying material (RFC 5705 / RFC 8446 §7.5) with the
//! label [`EKM_LABEL`] and no context. Both ends of one TLS session derive
//! the same EKM and no other session does, so a captured proof is useless
//! anywhere else; `ctr_key` is per container, so a proof for one container
//! never verifies for another. With no context, the router can export the
//! EKM right after the handshake, before it has read the request.

use crate::proof::{CtrKey, constant_time_eq};
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

/// The exporter label. Changing it is a protocol version change.
pub const EKM_LABEL: &[u8] = b"EXPORTER-hatchway-tunnel-v1";
/// How many bytes of keying material both sides export.
pub const EKM_LEN: usize = 32;
/// Most yamux streams one tunnel carries at once; both ends configure it
/// (a stream over the limit is refused by the side that counts it).
pub const MAX_STREAMS: usize = 1024;

/// The payload of a data frame either end sends: its 12-byte header and
/// this much data make exactly one TLS record (16 KiB of plaintext) once
/// [`crate::coalesce::Coalesce`] joins them, so a frame never spills a few
/// bytes into a record of its own.
pub const SPLIT_SEND_SIZE: usize = 16 * 1024 - crate::coalesce::HEADER;

/// The yamux settings of both ends of a tunnel.
pub fn yamux_config() -> yamux::Config {
    let mut config = yamux::Config::default();
    config.set_max_num_streams(MAX_STREAMS);
    config.set_split_send_size(SPLIT_SEND_SIZE);
    config
}

/// The sidecar's proof for one TLS session, from the keying material it
/// exported with [`EKM_LABEL`] and no context.
pub fn tunnel_proof(key: &CtrKey, ekm: &[u8; EKM_LEN]) -> String {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(key.expose_hex().as_bytes()).expect("HMAC takes a key of any length");
    mac.update(ekm);
    hex::encode(mac.finalize().into_bytes())
}

/// The proof a router sends on each request of a tunnel stream when the
/// streams carry HTTP without TLS of their own (`docs/decisions.md`):
/// `hex(HMAC-SHA256(key = ASCII of ctr_key, msg = STREAM_LABEL || EKM))`
/// with the tunnel session's EKM. The label keeps it apart from the
/// sidecar's [`tunnel_proof`] over the same EKM; the EKM binds it to this
/// tunnel's TLS session, so it proves nothing on another tunnel or on the
/// gateway's direct port.
pub fn stream_proof(key: &CtrKey, ekm: &[u8; EKM_LEN]) -> String {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(key.expose_hex().as_bytes()).expect("HMAC takes a key of any length");
    mac.update(STREAM_LABEL);
    mac.update(ekm);
    hex::encode(mac.finalize().into_bytes())
}

/// Domain separation of [`stream_proof`]. Changing it is a protocol
/// version change.
const STREAM_LABEL: &[u8] = b"hatchway tunnel stream v1\n";

/// The gateway's check of a stream proof. Constant time.
pub fn verify_stream_proof(expected: &str, presented: &str) -> bool {
    constant_time_eq(expected, presented)
}

/// The router's check of a tunnel proof against the keying material it
/// exported from its own end of the same session. Constant time.
pub fn verify_tunnel_proof(key: &CtrKey, ekm: &[u8; EKM_LEN], presented: &str) -> bool {
    constant_time_eq(&tunnel_proof(key, ekm), presented)
}
