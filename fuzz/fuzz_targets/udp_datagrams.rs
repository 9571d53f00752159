//! UDP datagrams over a port-forward's stream (`hatchway_api::datagrams`):
//! the frames a peer sends, read by the CLI and the sidecar.
//!
//! - Reading arbitrary bytes never panics; every datagram read is at most
//!   `MAX_DATAGRAM` bytes, and re-encoding the datagrams read gives back
//!   exactly the bytes they came from (nothing lost, joined or split).
//! - The same bytes delivered in pieces of any sizes (the stream's reads)
//!   give the same datagrams and the same error.
//! - A stream that ends inside a frame is an error, never a short datagram.

#![no_main]

use std::task::{Context, Poll, Waker};

use hatchway_api::datagrams::{self, MAX_DATAGRAM, Reader};
use hatchway_fuzz::Pieces;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // The first byte picks the piece sizes; the rest is the stream.
    let Some((&pieces, stream)) = data.split_first() else {
        return;
    };
    let whole = read_all(stream, usize::MAX);
    let pieced = read_all(stream, usize::from(pieces % 7) + 1);
    assert_eq!(whole, pieced, "the same bytes in pieces read differently");
    let (datagrams, error) = whole;
    let mut again = Vec::new();
    for datagram in &datagrams {
        assert!(datagram.len() <= MAX_DATAGRAM);
        datagrams::encode(&mut again, datagram).expect("a datagram read encodes");
    }
    assert_eq!(
        &stream[..again.len()],
        &again[..],
        "datagrams re-encode to their bytes"
    );
    match error {
        None => assert_eq!(again.len(), stream.len(), "a clean end consumed everything"),
        Some(_) => assert!(again.len() < stream.len(), "an error with nothing left"),
    }
});

/// Every datagram `stream` holds, read `piece` bytes at a time, and the
/// error that ended the reading (none: a clean end between datagrams).
fn read_all(stream: &[u8], piece: usize) -> (Vec<Vec<u8>>, Option<String>) {
    let mut reader = Reader::new(Pieces { rest: stream, piece });
    let mut out = Vec::new();
    let mut cx = Context::from_waker(Waker::noop());
    loop {
        // Reads from a slice never wait: one poll finishes.
        let mut next = Box::pin(reader.next());
        match next.as_mut().poll(&mut cx) {
            Poll::Ready(Ok(Some(datagram))) => out.push(datagram.to_vec()),
            Poll::Ready(Ok(None)) => return (out, None),
            Poll::Ready(Err(error)) => return (out, Some(error.kind().to_string())),
            Poll::Pending => panic!("a read from memory waited"),
        }
    }
}
