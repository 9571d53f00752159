//! A byte stream in length-prefixed frames, so a half-close survives a
//! proxy that does not pass one on.
//!
//! The Kubernetes API server's upgrade proxy (the aggregated API's way in)
//! ends the whole connection as soon as either direction ends, so a client
//! that sends its request and then half-closes (`nc`, a checksum server's
//! client) would never read the answer. On that path the CLI and the
//! router speak [`UPGRADE_TCP_FRAMED`](crate::wire::UPGRADE_TCP_FRAMED):
//! each direction is frames of `u32` big-endian length + that many bytes;
//! a frame of length 0 means "this direction has ended". The connection
//! itself closes only when both directions have.

use std::pin::Pin;
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The largest frame accepted (and written): 256 KiB.
pub const MAX_FRAME: usize = 256 * 1024;

/// `inner` read and written as frames; reads and writes look like the
/// plain stream, `shutdown` sends the end frame (the connection stays open
/// for the other direction).
#[derive(Debug)]
pub struct Framed<T> {
    inner: T,
    /// Bytes of the next frame's header read so far.
    header: [u8; 4],
    header_len: usize,
    /// Payload bytes of the current frame still to read.
    remaining: usize,
    /// The peer sent its end frame.
    read_done: bool,
    /// Encoded bytes not yet written to `inner`.
    out: Vec<u8>,
    out_pos: usize,
    /// The end frame is queued.
    write_done: bool,
}

impl<T> Framed<T> {
    /// Frames over `inner`.
    pub fn new(inner: T) -> Self {
        Self {
            inner,
            header: [0; 4],
            header_len: 0,
            remaining: 0,
            read_done: false,
            out: Vec::new(),
            out_pos: 0,
            write_done: false,
        }
    }

    /// The stream underneath.
    pub fn into_inner(self) -> T {
        self.inner
    }
}

impl<T: AsyncWrite + Unpin> Framed<T> {
    /// Writes out what is queued.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        while self.out_pos < self.out.len() {
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &self.out[self.out_pos..]))?;
            if n == 0 {
                return Poll::Ready(Err(std::io::ErrorKind::WriteZero.into()));
            }
            self.out_pos += n;
        }
        self.out.clear();
        self.out_pos = 0;
        Poll::Ready(Ok(()))
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Framed<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        loop {
            if this.read_done || buf.remaining() == 0 {
                return Poll::Ready(Ok(()));
            }
            if this.remaining > 0 {
                let want = this.remaining.min(buf.remaining());
                let mut part = ReadBuf::new(buf.initialize_unfilled_to(want));
                ready!(Pin::new(&mut this.inner).poll_read(cx, &mut part))?;
                let n = part.filled().len();
                if n == 0 {
                    return Poll::Ready(Err(std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        "the stream ended inside a frame",
                    )));
                }
                buf.advance(n);
                this.remaining -= n;
                return Poll::Ready(Ok(()));
            }
            let mut header = ReadBuf::new(&mut this.header[this.header_len..]);
            ready!(Pin::new(&mut this.inner).poll_read(cx, &mut header))?;
            let n = header.filled().len();
            if n == 0 {
                if this.header_len == 0 {
                    // The connection closed without an end frame: an end
                    // all the same (the peer went away).
                    this.read_done = true;
                    return Poll::Ready(Ok(()));
                }
                return Poll::Ready(Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "the stream ended inside a frame header",
                )));
            }
            this.header_len += n;
            if this.header_len < 4 {
                continue;
            }
            this.header_len = 0;
            let len = u32::from_be_bytes(this.header) as usize;
            if len > MAX_FRAME {
                return Poll::Ready(Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("a frame of {len} bytes (at most {MAX_FRAME})"),
                )));
            }
            if len == 0 {
                this.read_done = true;
            }
            this.remaining = len;
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Framed<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = &mut *self;
        if this.write_done {
            return Poll::Ready(Err(std::io::ErrorKind::BrokenPipe.into()));
        }
        ready!(this.poll_drain(cx))?;
        if data.is_empty() {
            return Poll::Ready(Ok(0));
        }
        let n = data.len().min(MAX_FRAME);
        this.out.extend_from_slice(&(n as u32).to_be_bytes());
        this.out.extend_from_slice(&data[..n]);
        // Start sending now; the rest goes with the next write or flush.
        if let Poll::Ready(Err(e)) = this.poll_drain(cx) {
            return Poll::Ready(Err(e));
        }
        Poll::Ready(Ok(n))
    }

    /// The slices go out as one frame (a resumable stream's frame headers
    /// and payloads are separate slices: not a frame, and a record, each).
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let this = &mut *self;
        if this.write_done {
            return Poll::Ready(Err(std::io::ErrorKind::BrokenPipe.into()));
        }
        ready!(this.poll_drain(cx))?;
        let n = bufs.iter().map(|b| b.len()).sum::<usize>().min(MAX_FRAME);
        if n == 0 {
            return Poll::Ready(Ok(0));
        }
        this.out.extend_from_slice(&(n as u32).to_be_bytes());
        let mut left = n;
        for buf in bufs {
            let take = left.min(buf.len());
            this.out.extend_from_slice(&buf[..take]);
            left -= take;
        }
        if let Poll::Ready(Err(e)) = this.poll_drain(cx) {
            return Poll::Ready(Err(e));
        }
        Poll::Ready(Ok(n))
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        ready!(self.poll_drain(cx))?;
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        if !this.write_done {
            ready!(this.poll_drain(cx))?;
            this.out.extend_from_slice(&0u32.to_be_bytes());
            this.write_done = true;
        }
        ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.inner).poll_flush(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn a_vectored_write_is_one_frame() {
        let (a, mut raw) = tokio::io::duplex(1 << 20);
        let mut a = Framed::new(a);
        let bufs = [
            std::io::IoSlice::new(b"head"),
            std::io::IoSlice::new(b"er and body"),
        ];
        assert_eq!(a.write_vectored(&bufs).await.unwrap(), 15);
        a.flush().await.unwrap();
        let mut got = [0u8; 19];
        raw.read_exact(&mut got).await.unwrap();
        assert_eq!(&got[..4], &15u32.to_be_bytes());
        assert_eq!(&got[4..], b"header and body");
    }

    #[tokio::test]
    async fn each_direction_ends_on_its_own_and_bytes_arrive_whole() {
        let (a, b) = tokio::io::duplex(1024);
        let (mut a, mut b) = (Framed::new(a), Framed::new(b));
        let data: Vec<u8> = (0..700_000u32).map(|i| (i % 251) as u8).collect();
        let sent = data.clone();
        let writer = tokio::spawn(async move {
            a.write_all(&sent).await.unwrap();
            a.shutdown().await.unwrap();
            // Its direction ended; the other still flows.
            let mut answer = String::new();
            a.read_to_string(&mut answer).await.unwrap();
            answer
        });
        let mut got = Vec::new();
        b.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, data);
        b.write_all(b"700000 bytes").await.unwrap();
        b.shutdown().await.unwrap();
        assert_eq!(writer.await.unwrap(), "700000 bytes");
    }

    #[tokio::test]
    async fn malformed_streams_are_errors() {
        // A frame larger than allowed.
        let (mut raw, framed) = tokio::io::duplex(64);
        let mut framed = Framed::new(framed);
        raw.write_all(&((MAX_FRAME as u32) + 1).to_be_bytes())
            .await
            .unwrap();
        let err = framed.read(&mut [0u8; 16]).await.unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::InvalidData);
        // The stream ends inside a frame.
        let (mut raw, framed) = tokio::io::duplex(64);
        let mut framed = Framed::new(framed);
        raw.write_all(&10u32.to_be_bytes()).await.unwrap();
        raw.write_all(b"abc").await.unwrap();
        drop(raw);
        let mut out = Vec::new();
        let err = framed.read_to_end(&mut out).await.unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::UnexpectedEof);
        assert_eq!(out, b"abc");
        // A write after the end frame.
        let (_raw, framed) = tokio::io::duplex(64);
        let mut framed = Framed::new(framed);
        framed.shutdown().await.unwrap();
        assert!(framed.write_all(b"x").await.is_err());
    }
}
