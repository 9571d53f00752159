//! Writing yamux frames to the tunnel's TLS stream in batches.
//!
//! yamux writes each frame as two writes (its 12-byte header, then its
//! body) and flushes after every frame; tokio-rustls seals and sends each
//! write at once. Over TLS that made a 12-byte record before every 16 KiB
//! of data, and one `sendmsg` per frame where a plain relay sends 64 KiB
//! per call. [`Coalesce`] gathers writes, up to [`BATCH`] bytes, and hands
//! them to TLS together: a bulk stream goes out as full 16 KiB records
//! (data frames are sized by [`crate::tunnel::SPLIT_SEND_SIZE`]), four to
//! a syscall.
//!
//! Its flush is owed, not done at once: yamux's connection task reads the
//! socket after every flush before it goes to sleep, so the owed flush is
//! paid at that read (or when the batch is full, or at shutdown). Nothing
//! waits behind it, and a burst of frames from many streams leaves in one
//! write. This holds only for a reader and writer driven by one task, as
//! yamux's `Connection` is; do not use it where a flush must reach the
//! wire before the next read.
//!
//! The batch buffer exists only while bytes flow: it is released when
//! nothing waits to be sent and a read would wait, so an idle tunnel holds
//! nothing.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// A yamux frame header's length.
pub const HEADER: usize = 12;

/// The most bytes gathered before they are handed on: four TLS records.
pub const BATCH: usize = 64 * 1024;

/// A writer that gathers writes and pays its flushes at the next read.
pub struct Coalesce<T> {
    inner: T,
    pending: Vec<u8>,
    /// How much of `pending` the inner writer took.
    written: usize,
    flush_owed: bool,
}

impl<T> Coalesce<T> {
    /// Wraps `inner`.
    pub fn new(inner: T) -> Self {
        Self {
            inner,
            pending: Vec::new(),
            written: 0,
            flush_owed: false,
        }
    }

    /// Bytes gathered and not yet handed on (a test's view).
    pub fn pending(&self) -> usize {
        self.pending.len() - self.written
    }
}

impl<T: AsyncWrite + Unpin> Coalesce<T> {
    /// Hands everything gathered to the inner writer.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.written < self.pending.len() {
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &self.pending[self.written..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.written += n;
        }
        self.pending.clear();
        self.written = 0;
        Poll::Ready(Ok(()))
    }

    /// Pays the owed flush: everything gathered goes out.
    fn poll_pay(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_drain(cx))?;
        ready!(Pin::new(&mut self.inner).poll_flush(cx))?;
        self.flush_owed = false;
        Poll::Ready(Ok(()))
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin> AsyncRead for Coalesce<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.flush_owed || !this.pending.is_empty() {
            // Pending: the writer's wakeup is registered, and the read's
            // below; either brings the task back to try again.
            if let Poll::Ready(Err(error)) = this.poll_pay(cx) {
                return Poll::Ready(Err(error));
            }
        }
        let read = Pin::new(&mut this.inner).poll_read(cx, buf);
        if read.is_pending() && this.pending.is_empty() && this.pending.capacity() > 0 {
            // Nothing to send and nothing arriving: the stream idles.
            this.pending = Vec::new();
        }
        read
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Coalesce<T> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        if this.pending.len() + buf.len() > BATCH {
            ready!(this.poll_drain(cx))?;
        }
        if buf.len() >= BATCH {
            return Pin::new(&mut this.inner).poll_write(cx, buf);
        }
        if this.pending.capacity() == 0 {
            this.pending.reserve_exact(BATCH);
        }
        this.pending.extend_from_slice(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.flush_owed = true;
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_pay(cx))?;
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::poll_fn;
    use std::io::IoSlice;
    use tokio::io::AsyncWriteExt;

    /// Records each write and flush; accepts at most `limit` bytes per
    /// write; its reads always wait.
    #[derive(Default)]
    struct Recorder {
        writes: Vec<Vec<u8>>,
        limit: usize,
        flushes: usize,
    }

    impl AsyncRead for Recorder {
        fn poll_read(self: Pin<&mut Self>, _: &mut Context<'_>, _: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
            Poll::Pending
        }
    }

    impl AsyncWrite for Recorder {
        fn poll_write(mut self: Pin<&mut Self>, _: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
            let n = buf.len().min(self.limit);
            self.writes.push(buf[..n].to_vec());
            Poll::Ready(Ok(n))
        }

        fn poll_write_vectored(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
            _: &[IoSlice<'_>],
        ) -> Poll<io::Result<usize>> {
            unreachable!("Coalesce writes one slice")
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

    /// One read attempt, as yamux's connection makes after a flush.
    async fn read_attempt(w: &mut Coalesce<Recorder>) {
        let mut room = [0u8; 16];
        poll_fn(|cx| {
            let mut buf = ReadBuf::new(&mut room);
            assert!(Pin::new(&mut *w).poll_read(cx, &mut buf).is_pending());
            Poll::Ready(())
        })
        .await;
    }

    /// A yamux data frame as it is written: header, then body.
    async fn frame(w: &mut Coalesce<Recorder>, byte: u8) {
        w.write_all(&[byte; HEADER]).await.unwrap();
        w.write_all(&vec![byte; crate::tunnel::SPLIT_SEND_SIZE])
            .await
            .unwrap();
        w.flush().await.unwrap();
    }

    #[tokio::test]
    async fn a_header_and_its_body_go_out_as_one_write_at_the_next_read() {
        let mut w = recorder(usize::MAX);
        w.write_all(&[1; HEADER]).await.unwrap();
        w.write_all(&[2; 100]).await.unwrap();
        w.flush().await.unwrap();
        assert!(w.inner.writes.is_empty(), "the flush is owed, not paid");
        read_attempt(&mut w).await;
        assert_eq!(
            w.inner.writes,
            vec![[[1u8; HEADER].as_slice(), &[2; 100]].concat()]
        );
        assert_eq!(w.inner.flushes, 1);
        read_attempt(&mut w).await;
        assert_eq!(w.inner.flushes, 1, "nothing owed, nothing paid");
    }

    #[tokio::test]
    async fn full_frames_leave_four_to_a_write_as_whole_records() {
        let mut w = recorder(usize::MAX);
        for byte in 1..=9 {
            frame(&mut w, byte).await;
        }
        // Two batches went out when full; the ninth frame waits for a read.
        let sizes: Vec<usize> = w.inner.writes.iter().map(Vec::len).collect();
        assert_eq!(sizes, vec![BATCH, BATCH]);
        assert_eq!(w.pending(), 16 * 1024);
        read_attempt(&mut w).await;
        let sizes: Vec<usize> = w.inner.writes.iter().map(Vec::len).collect();
        assert_eq!(sizes, vec![BATCH, BATCH, 16 * 1024]);
        let all = w.inner.writes.concat();
        for (i, record) in all.chunks(16 * 1024).enumerate() {
            assert!(
                record.iter().all(|&b| b == i as u8 + 1),
                "record {i} holds one frame"
            );
        }
    }

    #[tokio::test]
    async fn short_writes_below_keep_every_byte_in_order() {
        // The inner writer takes 5 bytes at a time.
        let mut w = recorder(5);
        w.write_all(&[1; HEADER]).await.unwrap();
        w.write_all(&(0..40).collect::<Vec<u8>>()).await.unwrap();
        w.flush().await.unwrap();
        read_attempt(&mut w).await;
        let all: Vec<u8> = w.inner.writes.concat();
        assert_eq!(all, [vec![1u8; HEADER], (0..40).collect()].concat());
        assert!(w.inner.writes.iter().all(|x| x.len() <= 5));
    }

    #[tokio::test]
    async fn shutdown_pays_what_is_owed() {
        let mut w = recorder(usize::MAX);
        w.write_all(&[3; 5]).await.unwrap();
        w.flush().await.unwrap();
        w.shutdown().await.unwrap();
        assert_eq!(w.inner.writes, vec![vec![3u8; 5]]);
        assert_eq!(w.inner.flushes, 1);
    }

    #[tokio::test]
    async fn an_idle_stream_holds_no_buffer() {
        let mut w = recorder(usize::MAX);
        frame(&mut w, 1).await;
        assert!(w.pending.capacity() >= BATCH);
        read_attempt(&mut w).await;
        assert_eq!(w.pending.capacity(), 0);
    }

    #[tokio::test]
    async fn a_write_larger_than_a_batch_goes_straight_through() {
        let mut w = recorder(usize::MAX);
        w.write_all(&[1; 7]).await.unwrap();
        w.write_all(&vec![2; BATCH + 1]).await.unwrap();
        let sizes: Vec<usize> = w.inner.writes.iter().map(Vec::len).collect();
        assert_eq!(sizes, vec![7, BATCH + 1]);
    }
}
