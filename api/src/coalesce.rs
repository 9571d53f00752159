//! Writing yamux frames to the tunnel's TLS stream in one piece.
//!
//! yamux writes each frame as two writes: its 12-byte header, then its
//! body. Over TLS each write becomes its own record and, with
//! `TCP_NODELAY`, its own segment: a 12-byte record before every 16 KiB of
//! data. [`Coalesce`] holds a short write back and sends it with the next
//! one as a single vectored write (which rustls seals as one record), or on
//! flush. It holds at most [`HELD`] bytes and allocates nothing, so an idle
//! tunnel costs no buffer. Both ends of a tunnel write through it, with
//! data frames sized by [`crate::tunnel::SPLIT_SEND_SIZE`].

use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The longest write held back: a yamux frame header.
pub const HELD: usize = 12;

/// A writer that joins a short write to the write after it.
pub struct Coalesce<T> {
    inner: T,
    held: [u8; HELD],
    len: usize,
}

impl<T> Coalesce<T> {
    /// Wraps `inner`.
    pub fn new(inner: T) -> Self {
        Self {
            inner,
            held: [0; HELD],
            len: 0,
        }
    }
}

impl<T: AsyncWrite + Unpin> Coalesce<T> {
    /// Writes out what is held back, alone.
    fn poll_write_held(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.len > 0 {
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &self.held[..self.len]))?;
            self.consume(n)?;
        }
        Poll::Ready(Ok(()))
    }

    /// Drops the first `n` held bytes, which were written.
    fn consume(&mut self, n: usize) -> io::Result<()> {
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        self.held.copy_within(n..self.len, 0);
        self.len -= n;
        Ok(())
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Coalesce<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Coalesce<T> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        if buf.len() <= HELD - this.len {
            this.held[this.len..this.len + buf.len()].copy_from_slice(buf);
            this.len += buf.len();
            return Poll::Ready(Ok(buf.len()));
        }
        while this.len > 0 {
            let held = this.len;
            let slices = [IoSlice::new(&this.held[..held]), IoSlice::new(buf)];
            let n = ready!(Pin::new(&mut this.inner).poll_write_vectored(cx, &slices))?;
            if n > held {
                this.len = 0;
                return Poll::Ready(Ok(n - held));
            }
            this.consume(n)?;
        }
        Pin::new(&mut this.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_write_held(cx))?;
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_write_held(cx))?;
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    /// Records each write; accepts at most `limit` bytes per write.
    #[derive(Default)]
    struct Recorder {
        writes: Vec<Vec<u8>>,
        limit: usize,
        flushes: usize,
    }

    impl AsyncWrite for Recorder {
        fn poll_write(mut self: Pin<&mut Self>, _: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
            let n = buf.len().min(self.limit);
            self.writes.push(buf[..n].to_vec());
            Poll::Ready(Ok(n))
        }

        fn poll_write_vectored(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            bufs: &[IoSlice<'_>],
        ) -> Poll<io::Result<usize>> {
            let all: Vec<u8> = bufs.iter().flat_map(|b| b.iter().copied()).collect();
            let n = all.len().min(self.limit);
            self.writes.push(all[..n].to_vec());
            Poll::Ready(Ok(n))
        }

        fn is_write_vectored(&self) -> bool {
            true
        }

        fn poll_flush(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            self.flushes += 1;
            Poll::Ready(Ok(()))
        }

        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    fn recorder(limit: usize) -> Coalesce<Recorder> {
        Coalesce::new(Recorder {
            limit,
            ..Recorder::default()
        })
    }

    #[tokio::test]
    async fn a_header_and_its_body_go_out_as_one_write() {
        let mut w = recorder(usize::MAX);
        w.write_all(&[1; 12]).await.unwrap();
        assert!(w.inner.writes.is_empty(), "the header is held back");
        w.write_all(&[2; 100]).await.unwrap();
        assert_eq!(w.inner.writes.len(), 1);
        assert_eq!(w.inner.writes[0], [[1u8; 12].as_slice(), &[2; 100]].concat());
    }

    #[tokio::test]
    async fn a_lone_header_goes_out_on_flush() {
        let mut w = recorder(usize::MAX);
        w.write_all(&[1; 12]).await.unwrap();
        w.flush().await.unwrap();
        assert_eq!(w.inner.writes, vec![vec![1u8; 12]]);
        assert_eq!(w.inner.flushes, 1);
        w.write_all(&[3; 5]).await.unwrap();
        w.shutdown().await.unwrap();
        assert_eq!(w.inner.writes[1], vec![3u8; 5]);
    }

    #[tokio::test]
    async fn short_writes_below_keep_every_byte_in_order() {
        // The inner writer takes 5 bytes at a time: the header goes out in
        // pieces, then the body.
        let mut w = recorder(5);
        w.write_all(&[1; 12]).await.unwrap();
        w.write_all(&(0..40).collect::<Vec<u8>>()).await.unwrap();
        w.flush().await.unwrap();
        let all: Vec<u8> = w.inner.writes.concat();
        assert_eq!(all, [vec![1u8; 12], (0..40).collect()].concat());
        assert!(w.inner.writes.iter().all(|x| x.len() <= 5));
    }
}
