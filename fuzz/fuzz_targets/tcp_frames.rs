//! A port-forward's stream in frames through the API server's proxy
//! (`hatchway_api::frames::Framed`, `Upgrade: hatchway-tcp-frames`): the
//! bytes a peer sends, read by the CLI and the router.
//!
//! - Reading arbitrary bytes never panics, and gives exactly what a plain
//!   reference decoder says: the frames' payloads up to the end frame (or
//!   the end of the stream between frames), then an error for a frame over
//!   `MAX_FRAME` or a stream that ends inside a header or a payload (after
//!   the payload bytes that did arrive).
//! - The same bytes in pieces of any sizes, read into buffers of any
//!   sizes, give the same bytes and the same outcome.
//! - What the writer frames (any chunks, then shutdown) reads back as the
//!   same bytes and a clean end.

#![no_main]

use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use hatchway_api::frames::{Framed, MAX_FRAME};
use hatchway_fuzz::Pieces;
use libfuzzer_sys::fuzz_target;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

fuzz_target!(|data: &[u8]| {
    // Two bytes pick the piece and buffer sizes; the rest is the stream.
    let [pieces, buffer, stream @ ..] = data else {
        return;
    };
    let expected = reference(stream);
    let whole = read_all(stream, usize::MAX, 64 * 1024);
    assert_eq!(whole, expected, "the reader and the reference disagree");
    let pieced = read_all(
        stream,
        usize::from(*pieces % 7) + 1,
        usize::from(*buffer % 13) + 1,
    );
    assert_eq!(pieced, expected, "the same bytes in pieces read differently");

    // The writer: the stream's bytes in chunks, then the end frame.
    let chunk = usize::from(*buffer) * 997 % (2 * MAX_FRAME) + 1;
    let mut framed = Framed::new(Vec::new());
    let mut cx = Context::from_waker(Waker::noop());
    for part in stream.chunks(chunk) {
        let mut rest = part;
        while !rest.is_empty() {
            match Pin::new(&mut framed).poll_write(&mut cx, rest) {
                Poll::Ready(Ok(n)) if n > 0 => rest = &rest[n..],
                other => panic!("writing to memory: {other:?}"),
            }
        }
    }
    match Pin::new(&mut framed).poll_shutdown(&mut cx) {
        Poll::Ready(Ok(())) => {}
        other => panic!("shutting down to memory: {other:?}"),
    }
    let written = framed.into_inner();
    assert_eq!(
        read_all(&written, usize::MAX, 64 * 1024),
        (stream.to_vec(), Outcome::End),
        "what was written does not read back"
    );
});

#[derive(Debug, PartialEq)]
enum Outcome {
    End,
    Error,
}

/// What `stream` says, decoded the plain way.
fn reference(stream: &[u8]) -> (Vec<u8>, Outcome) {
    let mut out = Vec::new();
    let mut rest = stream;
    loop {
        if rest.is_empty() {
            return (out, Outcome::End);
        }
        let Some((header, after)) = rest.split_first_chunk::<4>() else {
            return (out, Outcome::Error);
        };
        let len = u32::from_be_bytes(*header) as usize;
        if len > MAX_FRAME {
            return (out, Outcome::Error);
        }
        if len == 0 {
            return (out, Outcome::End);
        }
        if after.len() < len {
            out.extend_from_slice(after);
            return (out, Outcome::Error);
        }
        out.extend_from_slice(&after[..len]);
        rest = &after[len..];
    }
}

/// Everything a `Framed` reader gives from `stream` handed out `piece`
/// bytes per read, read into buffers of `buffer` bytes.
fn read_all(stream: &[u8], piece: usize, buffer: usize) -> (Vec<u8>, Outcome) {
    let mut framed = Framed::new(Pieces { rest: stream, piece });
    let mut out = Vec::new();
    let mut cx = Context::from_waker(Waker::noop());
    let mut space = vec![0u8; buffer];
    loop {
        let mut buf = ReadBuf::new(&mut space);
        match Pin::new(&mut framed).poll_read(&mut cx, &mut buf) {
            Poll::Ready(Ok(())) if buf.filled().is_empty() => return (out, Outcome::End),
            Poll::Ready(Ok(())) => out.extend_from_slice(buf.filled()),
            Poll::Ready(Err(_)) => return (out, Outcome::Error),
            Poll::Pending => panic!("a read from memory waited"),
        }
    }
}
