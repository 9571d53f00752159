//! Control messages the sidecar sends the router over the tunnel's control
//! stream: what the sidecar has no Kubernetes credentials to write itself.
//!
//! Framing: a 4-byte big-endian length, then that many bytes of JSON
//! `{"v": 1, "type": "...", ...fields}`. The length is checked against
//! [`MAX_MESSAGE_BYTES`] *before* the body is read, so a peer cannot make the
//! other side allocate more. A message of a type this side does not know
//! decodes to [`ControlMessage::Unknown`] (newer sidecars may say more); a
//! message of another protocol version is refused.

use serde::{Deserialize, Serialize};

/// The control protocol version this crate speaks.
pub const PROTOCOL_VERSION: u32 = 1;
/// The largest encoded message body either side accepts.
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024;
/// Bytes of the length prefix.
pub const HEADER_BYTES: usize = 4;

/// One report from the sidecar.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(tag = "type", rename_all = "camelCase")]
pub enum ControlMessage {
    /// First message of every tunnel: how to verify this gateway.
    #[serde(rename_all = "camelCase")]
    Hello {
        /// The sidecar's container UID (the same the tunnel proved).
        container_uid: String,
        /// Lowercase hex SHA-256 of the gateway's TLS certificate DER.
        certificate_sha256: String,
        /// SSH host public key, OpenSSH `authorized_keys` form.
        host_key: String,
        /// SSH host key fingerprint, `SHA256:...`.
        host_key_fingerprint: String,
        /// The sidecar's version, for diagnostics.
        sidecar_version: String,
    },
    /// The TCP ports now listening inside the pod (the whole set, sorted).
    #[serde(rename_all = "camelCase")]
    ListeningPorts {
        /// Port numbers.
        ports: Vec<u16>,
    },
    /// Someone opened an interactive session.
    #[serde(rename_all = "camelCase")]
    SessionStarted {
        /// Unique within this sidecar's life.
        session_id: u64,
        /// `shell`, `exec`, `sftp`, `portforward`, `direct-tcpip`, ...
        kind: String,
        /// Who, as the router authenticated them.
        user: String,
        /// The router request that opened it.
        request_id: String,
        /// The command, for `exec`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        command: Option<String>,
    },
    /// An interactive session ended.
    #[serde(rename_all = "camelCase")]
    SessionEnded {
        /// As in `SessionStarted`.
        session_id: u64,
        /// Bytes from the user to the container.
        bytes_in: u64,
        /// Bytes from the container to the user.
        bytes_out: u64,
        /// How long it lasted.
        duration_ms: u64,
    },
    /// The workload's main process ended.
    #[serde(rename_all = "camelCase")]
    WorkloadExited {
        /// Its exit code, or 128+N when killed by signal N.
        exit_code: i32,
    },
    /// A message type this side does not know; ignore it.
    #[serde(other)]
    Unknown,
}

#[derive(Serialize, Deserialize)]
struct Envelope<M> {
    v: u32,
    #[serde(flatten)]
    message: M,
}

/// Why a control message was refused.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// The length prefix or body exceeds [`MAX_MESSAGE_BYTES`].
    #[error("control message of {0} bytes exceeds the {MAX_MESSAGE_BYTES}-byte limit")]
    TooLarge(usize),
    /// The peer speaks another protocol version.
    #[error("control protocol version {0} is not supported (this side speaks {PROTOCOL_VERSION})")]
    UnsupportedVersion(u32),
    /// The body is not a control message.
    #[error("malformed control message: {0}")]
    Malformed(#[from] serde_json::Error),
}

/// Encodes a message with its length prefix.
pub fn encode(message: &ControlMessage) -> Result<Vec<u8>, ControlError> {
    let body = serde_json::to_vec(&Envelope {
        v: PROTOCOL_VERSION,
        message,
    })?;
    if body.len() > MAX_MESSAGE_BYTES {
        return Err(ControlError::TooLarge(body.len()));
    }
    let mut frame = Vec::with_capacity(HEADER_BYTES + body.len());
    frame.extend_from_slice(&(body.len() as u32).to_be_bytes());
    frame.extend_from_slice(&body);
    Ok(frame)
}

/// Reads a length prefix, refusing one over the limit before any body is
/// read.
pub fn body_len(header: [u8; HEADER_BYTES]) -> Result<usize, ControlError> {
    let len = u32::from_be_bytes(header) as usize;
    if len > MAX_MESSAGE_BYTES {
        return Err(ControlError::TooLarge(len));
    }
    Ok(len)
}

/// Decodes a message body (without its length prefix).
pub fn decode(body: &[u8]) -> Result<ControlMessage, ControlError> {
    if body.len() > MAX_MESSAGE_BYTES {
        return Err(ControlError::TooLarge(body.len()));
    }
    #[derive(Deserialize)]
    struct Version {
        v: u32,
    }
    let Version { v } = serde_json::from_slice(body)?;
    if v != PROTOCOL_VERSION {
        return Err(ControlError::UnsupportedVersion(v));
    }
    let Envelope { message, .. } = serde_json::from_slice::<Envelope<ControlMessage>>(body)?;
    Ok(message)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roundtrip(message: ControlMessage) {
        let frame = encode(&message).unwrap();
        let len = body_len(frame[..4].try_into().unwrap()).unwrap();
        assert_eq!(len, frame.len() - 4);
        assert_eq!(decode(&frame[4..]).unwrap(), message);
    }

    #[test]
    fn every_message_round_trips() {
        roundtrip(ControlMessage::Hello {
            container_uid: "7c1e9a52-5b7e-4f0e-9d3a-2b8f6c4d1e90".into(),
            certificate_sha256: "ab".repeat(32),
            host_key: "ssh-ed25519 AAAA".into(),
            host_key_fingerprint: "SHA256:xyz".into(),
            sidecar_version: "0.1.0".into(),
        });
        roundtrip(ControlMessage::ListeningPorts {
            ports: vec![22, 8080],
        });
        roundtrip(ControlMessage::SessionStarted {
            session_id: 7,
            kind: "exec".into(),
            user: "alice".into(),
            request_id: "r-1".into(),
            command: Some("ls -l".into()),
        });
        roundtrip(ControlMessage::SessionEnded {
            session_id: 7,
            bytes_in: 1,
            bytes_out: 2,
            duration_ms: 3,
        });
        roundtrip(ControlMessage::WorkloadExited { exit_code: 137 });
    }

    #[test]
    fn the_wire_form_is_stable() {
        let frame = encode(&ControlMessage::WorkloadExited { exit_code: 3 }).unwrap();
        assert_eq!(&frame[4..], br#"{"v":1,"type":"workloadExited","exitCode":3}"#);
        assert_eq!(&frame[..4], &(frame.len() as u32 - 4).to_be_bytes());
    }

    #[test]
    fn an_oversized_length_prefix_is_refused_before_reading() {
        let header = ((MAX_MESSAGE_BYTES + 1) as u32).to_be_bytes();
        assert!(matches!(body_len(header), Err(ControlError::TooLarge(n)) if n == MAX_MESSAGE_BYTES + 1));
        assert!(matches!(
            body_len(u32::MAX.to_be_bytes()),
            Err(ControlError::TooLarge(_))
        ));
    }

    #[test]
    fn an_oversized_message_is_refused_both_ways() {
        let huge = ControlMessage::ListeningPorts {
            ports: vec![65535; MAX_MESSAGE_BYTES / 4],
        };
        assert!(matches!(encode(&huge), Err(ControlError::TooLarge(_))));
        let body = vec![b' '; MAX_MESSAGE_BYTES + 1];
        assert!(matches!(decode(&body), Err(ControlError::TooLarge(_))));
    }

    #[test]
    fn another_version_is_refused() {
        let err = decode(br#"{"v":2,"type":"workloadExited","exitCode":3}"#).unwrap_err();
        assert!(matches!(err, ControlError::UnsupportedVersion(2)), "{err}");
        assert!(decode(br#"{"type":"workloadExited","exitCode":3}"#).is_err());
    }

    #[test]
    fn an_unknown_type_decodes_as_unknown() {
        assert_eq!(
            decode(br#"{"v":1,"type":"somethingNew","x":1}"#).unwrap(),
            ControlMessage::Unknown
        );
    }

    #[test]
    fn malformed_bodies_are_refused() {
        assert!(matches!(decode(b"not json"), Err(ControlError::Malformed(_))));
        assert!(matches!(
            decode(br#"{"v":1,"type":"workloadExited"}"#),
            Err(ControlError::Malformed(_))
        ));
    }
}
