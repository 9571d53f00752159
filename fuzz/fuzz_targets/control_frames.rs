//! The tunnel's control messages (`hatchway_api::control`): what a sidecar
//! — on a pod the workload shares — tells the router.
//!
//! - A length prefix over the limit is refused before any body is read;
//!   one within it is read as it is.
//! - Decoding arbitrary bytes never panics; a message decoded re-encodes
//!   and decodes to itself.
//! - Messages built from the input round-trip through encode and decode.

#![no_main]

use hatchway_api::control::{self, ControlError, ControlMessage, HEADER_BYTES, MAX_MESSAGE_BYTES};
use libfuzzer_sys::arbitrary::{self, Arbitrary, Unstructured};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Some(header) = data.first_chunk::<HEADER_BYTES>() {
        let announced = u32::from_be_bytes(*header) as usize;
        match control::body_len(*header) {
            Ok(len) => assert!(len == announced && len <= MAX_MESSAGE_BYTES),
            Err(ControlError::TooLarge(len)) => assert!(len == announced && len > MAX_MESSAGE_BYTES),
            Err(other) => panic!("a length prefix refused as {other}"),
        }
    }
    if let Ok(message) = control::decode(data) {
        round_trip(&message);
    }
    if let Ok(message) = Message::arbitrary(&mut Unstructured::new(data)) {
        round_trip(&message.into());
    }
});

/// `message` encoded, its prefix read back, and decoded to itself.
fn round_trip(message: &ControlMessage) {
    let frame = match control::encode(message) {
        Ok(frame) => frame,
        Err(ControlError::TooLarge(_)) => return,
        Err(error) => panic!("{message:?} does not encode: {error}"),
    };
    let (header, body) = frame.split_first_chunk::<HEADER_BYTES>().expect("a prefix");
    assert_eq!(control::body_len(*header).expect("a sane prefix"), body.len());
    let decoded = control::decode(body).expect("an encoded message decodes");
    assert_eq!(&decoded, message);
}

/// A [`ControlMessage`] from fuzz input.
#[derive(Arbitrary, Debug)]
enum Message {
    Hello(String, String, String, String, String),
    ListeningPorts(Vec<u16>),
    SessionStarted(u64, String, String, String, Option<String>),
    SessionEnded(u64, u64, u64, u64),
    WorkloadExited(i32),
    Unknown,
}

impl From<Message> for ControlMessage {
    fn from(message: Message) -> Self {
        match message {
            Message::Hello(
                container_uid,
                certificate_sha256,
                host_key,
                host_key_fingerprint,
                sidecar_version,
            ) => ControlMessage::Hello {
                container_uid,
                certificate_sha256,
                host_key,
                host_key_fingerprint,
                sidecar_version,
            },
            Message::ListeningPorts(ports) => ControlMessage::ListeningPorts { ports },
            Message::SessionStarted(session_id, kind, user, request_id, command) => {
                ControlMessage::SessionStarted {
                    session_id,
                    kind,
                    user,
                    request_id,
                    command,
                }
            }
            Message::SessionEnded(session_id, bytes_in, bytes_out, duration_ms) => {
                ControlMessage::SessionEnded {
                    session_id,
                    bytes_in,
                    bytes_out,
                    duration_ms,
                }
            }
            Message::WorkloadExited(exit_code) => ControlMessage::WorkloadExited { exit_code },
            Message::Unknown => ControlMessage::Unknown,
        }
    }
}
