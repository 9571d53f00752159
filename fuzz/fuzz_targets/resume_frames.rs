//! The resumable streams' frames (`hatchway_api::resume`): what a peer —
//! the CLI, the sidecar, anyone through the router — sends on a resumed
//! connection.
//!
//! - Decoding arbitrary bytes never panics; a decoded frame re-encodes to
//!   exactly the bytes it took, and any shorter prefix of them is
//!   "incomplete", never another frame.
//! - A receiver fed those frames delivers only the new bytes, in order,
//!   and counts them (an error leaves it unchanged).
//! - Frames built from the input round-trip through encode and decode.
//! - A sender's stream, broken and resumed at the receiver's offset any
//!   number of times, arrives whole.

#![no_main]

use bytes::Bytes;
use hatchway_api::resume::{Frame, FrameRef, HEADER_LEN, MAX_PAYLOAD, Receiver, Sender};
use libfuzzer_sys::arbitrary::{Arbitrary, Unstructured};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    decode_stream(data);
    let mut u = Unstructured::new(data);
    round_trip(&mut u);
    resend(&mut u);
});

/// `data` as a stream of frames, as the pump reads it.
fn decode_stream(data: &[u8]) {
    let mut rest = data;
    let mut receiver = Receiver::default();
    loop {
        let (frame, used) = match FrameRef::decode(rest) {
            Ok(Some(decoded)) => decoded,
            Ok(None) => {
                assert!(
                    rest.len() < HEADER_LEN + MAX_PAYLOAD,
                    "a whole frame was left undecoded"
                );
                return;
            }
            Err(_) => return,
        };
        assert!((HEADER_LEN..=rest.len()).contains(&used));
        let owned = frame.to_frame();
        let mut again = Vec::new();
        owned.encode(&mut again);
        assert_eq!(again, &rest[..used], "a frame re-encodes to other bytes");
        assert_eq!(Frame::decode(rest), Ok(Some((owned, used))));
        for cut in [0, HEADER_LEN - 1, used - 1] {
            if cut < used {
                assert_eq!(FrameRef::decode(&rest[..cut]), Ok(None), "a cut frame decoded");
            }
        }
        let before = receiver.received();
        match receiver.accept_ref(frame) {
            Ok(new) => {
                assert_eq!(receiver.received(), before + new.len() as u64);
                match frame {
                    FrameRef::Data { offset, bytes } => {
                        assert!(bytes.ends_with(new), "delivered bytes the frame did not end with");
                        if !new.is_empty() {
                            assert_eq!(offset + bytes.len() as u64, receiver.received());
                        }
                    }
                    _ => assert!(new.is_empty()),
                }
            }
            Err(_) => assert_eq!(receiver.received(), before, "a refused frame moved the receiver"),
        }
        rest = &rest[used..];
    }
}

/// Frames made from the input decode back to themselves.
fn round_trip(u: &mut Unstructured<'_>) {
    let mut wire = Vec::new();
    let mut frames = Vec::new();
    while !u.is_empty() {
        let Ok(kind) = u.int_in_range(0u8..=2) else { break };
        let Ok(offset) = u64::arbitrary(u) else { break };
        let frame = match kind {
            0 => {
                let len = u.int_in_range(0..=MAX_PAYLOAD.min(u.len())).unwrap_or(0);
                let bytes = u.bytes(len).unwrap_or_default();
                Frame::Data {
                    offset,
                    bytes: Bytes::copy_from_slice(bytes),
                }
            }
            1 => Frame::Ack { offset },
            _ => Frame::End { offset },
        };
        frame.encode(&mut wire);
        frames.push(frame);
    }
    let mut rest = wire.as_slice();
    for frame in frames {
        let (decoded, used) = Frame::decode(rest)
            .expect("an encoded frame decodes")
            .expect("an encoded frame is whole");
        assert_eq!(decoded, frame);
        rest = &rest[used..];
    }
    assert!(rest.is_empty());
}

/// A stream sent in chunks, with acks, breaks and resumes, arrives whole.
fn resend(u: &mut Unstructured<'_>) {
    const LIMIT: usize = 256 * 1024;
    let mut sender = Sender::new(LIMIT);
    let mut receiver = Receiver::default();
    let mut sent = Vec::new();
    let mut arrived = Vec::new();
    let mut in_flight: Vec<Frame> = Vec::new();
    let mut counter = 0u8;
    while !u.is_empty() {
        let Ok(step) = u.int_in_range(0u8..=3) else { break };
        match step {
            // Send a chunk (when it fits in the replay buffer).
            0 => {
                let len = u.int_in_range(0..=3 * MAX_PAYLOAD).unwrap_or(0);
                let chunk: Vec<u8> = (0..len)
                    .map(|_| {
                        counter = counter.wrapping_add(1);
                        counter
                    })
                    .collect();
                if let Ok(frames) = sender.send(Bytes::from(chunk.clone())) {
                    sent.extend_from_slice(&chunk);
                    in_flight.extend(frames);
                }
            }
            // Deliver some of what is in flight.
            1 => {
                let n = u.int_in_range(0..=in_flight.len()).unwrap_or(0);
                for frame in in_flight.drain(..n) {
                    let new = receiver.accept(&frame).expect("frames in order are accepted");
                    arrived.extend_from_slice(new);
                }
            }
            // The receiver acknowledges what it has.
            2 => sender
                .acknowledge(receiver.received())
                .expect("an ack of received bytes is taken"),
            // The connection breaks: what was in flight is lost; resume.
            _ => {
                in_flight = sender
                    .resume_from(receiver.received())
                    .expect("a receiver is never behind the replay buffer");
            }
        }
    }
    for frame in sender.resume_from(receiver.received()).expect("resumable") {
        arrived.extend_from_slice(receiver.accept(&frame).expect("a resend is accepted"));
    }
    assert_eq!(arrived, sent, "the stream did not arrive whole");
}
