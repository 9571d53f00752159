//! Reading a socket in large gulps for TLS.
//!
//! rustls asks its transport for at most 4 KiB more than it holds (its
//! deframer grows by 4 KiB per read and shrinks back whenever it is
//! empty), so a 16 KiB record took four `recv` calls and a 64 KiB burst
//! sixteen, each with its wakeup of the kernel's TCP receive path.
//! [`ReadAhead`] reads up to [`READ_AHEAD`] bytes per call into a buffer
//! of its own and hands rustls what it asks for from there. A connection
//! starts with [`FIRST_GULP`] and doubles its gulp each time a read fills
//! it: a handshake or a keystroke never takes 64 KiB (a burst of new
//! connections each holding 64 KiB for a moment left the heap fragmented:
//! the router's resident memory per open stream was mostly that).
//!
//! The buffer exists only while bytes flow: it is released when a read
//! would wait and is empty, so an idle connection (a held tunnel, an
//! interactive shell between keystrokes) costs nothing. Bytes are read
//! into its spare capacity, never zeroed first. Writes pass through.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The most one read from the socket takes.
pub const READ_AHEAD: usize = 64 * 1024;
/// What a connection's first read takes.
pub const FIRST_GULP: usize = 8 * 1024;

/// A transport read in gulps of up to [`READ_AHEAD`] bytes.
pub struct ReadAhead<T> {
    inner: T,
    buffered: BytesMut,
    /// What the next read from the socket takes.
    gulp: usize,
}

impl<T> ReadAhead<T> {
    /// Wraps `inner`.
    pub fn new(inner: T) -> Self {
        Self {
            inner,
            buffered: BytesMut::new(),
            gulp: FIRST_GULP,
        }
    }

    /// The transport.
    pub fn get_ref(&self) -> &T {
        &self.inner
    }

    /// Bytes read ahead and not yet handed out (a test's view).
    pub fn buffered(&self) -> usize {
        self.buffered.len()
    }

    /// The capacity held (zero while idle).
    pub fn capacity(&self) -> usize {
        self.buffered.capacity()
    }

    /// What the next read from the socket takes.
    pub fn gulp(&self) -> usize {
        self.gulp
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for ReadAhead<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        dst: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.buffered.is_empty() {
            // A reader asking for as much as the largest gulp reads
            // straight into its own buffer.
            if dst.remaining() >= READ_AHEAD {
                this.buffered = BytesMut::new();
                return Pin::new(&mut this.inner).poll_read(cx, dst);
            }
            // Empty: `reserve` reuses the room it already has.
            this.buffered.reserve(this.gulp);
            match tokio_util::io::poll_read_buf(Pin::new(&mut this.inner), cx, &mut this.buffered) {
                Poll::Pending => {
                    // Nothing held: an idle connection keeps no buffer.
                    this.buffered = BytesMut::new();
                    return Poll::Pending;
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Ready(Ok(0)) => return Poll::Ready(Ok(())),
                Poll::Ready(Ok(n)) if n >= this.gulp => this.gulp = (2 * this.gulp).min(READ_AHEAD),
                Poll::Ready(Ok(_)) => {}
            }
        }
        let n = this.buffered.len().min(dst.remaining());
        dst.put_slice(&this.buffered[..n]);
        this.buffered.advance(n);
        Poll::Ready(Ok(()))
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for ReadAhead<T> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};

    use super::*;

    /// A real socket that counts the reads made of it.
    struct Counted {
        inner: TcpStream,
        reads: Arc<AtomicUsize>,
    }

    impl AsyncRead for Counted {
        fn poll_read(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
            if polled.is_ready() {
                self.reads.fetch_add(1, Ordering::SeqCst);
            }
            polled
        }
    }

    async fn pair() -> (TcpStream, ReadAhead<Counted>, Arc<AtomicUsize>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let writer = TcpStream::connect(listener.local_addr().unwrap()).await.unwrap();
        let (inner, _) = listener.accept().await.unwrap();
        let reads = Arc::new(AtomicUsize::new(0));
        let reader = ReadAhead::new(Counted {
            inner,
            reads: reads.clone(),
        });
        (writer, reader, reads)
    }

    #[tokio::test]
    async fn small_reads_are_served_from_one_large_read_in_order() {
        let (mut writer, mut reader, reads) = pair().await;
        let sent: Vec<u8> = (0..60_000u32).map(|i| (i % 251) as u8).collect();
        writer.write_all(&sent).await.unwrap();
        writer.shutdown().await.unwrap();
        // rustls's way: 4 KiB at a time.
        let mut got = Vec::new();
        let mut piece = [0u8; 4096];
        loop {
            let n = reader.read(&mut piece).await.unwrap();
            if n == 0 {
                break;
            }
            got.extend_from_slice(&piece[..n]);
        }
        assert_eq!(got, sent);
        // 15 pieces of 4 KiB from a few socket reads (however the kernel
        // split them), not one read each.
        let made = reads.load(Ordering::SeqCst);
        assert!(made <= 6, "{made} socket reads for 60,000 bytes");
    }

    #[tokio::test]
    async fn the_gulp_grows_only_when_reads_fill_it() {
        let (mut writer, mut reader, _) = pair().await;
        writer.write_all(b"hello").await.unwrap();
        let mut piece = [0u8; 5];
        reader.read_exact(&mut piece).await.unwrap();
        assert_eq!(reader.gulp(), FIRST_GULP, "a short read leaves it");
        // More than the first gulp waits: the read fills it, the next one
        // takes twice as much.
        writer.write_all(&vec![7u8; 3 * FIRST_GULP]).await.unwrap();
        let mut piece = [0u8; 100];
        reader.read_exact(&mut piece).await.unwrap();
        assert_eq!(reader.buffered(), FIRST_GULP - 100);
        assert_eq!(reader.gulp(), 2 * FIRST_GULP);
    }

    #[tokio::test]
    async fn an_idle_connection_holds_no_buffer() {
        let (mut writer, mut reader, _) = pair().await;
        writer.write_all(b"hello").await.unwrap();
        let mut piece = [0u8; 2];
        reader.read_exact(&mut piece).await.unwrap();
        assert_eq!(reader.buffered(), 3);
        let mut rest = [0u8; 3];
        reader.read_exact(&mut rest).await.unwrap();
        assert_eq!(&rest, b"llo");
        // Nothing more to read: the read waits, and the buffer goes.
        let waited =
            tokio::time::timeout(std::time::Duration::from_millis(50), reader.read(&mut piece)).await;
        assert!(waited.is_err(), "nothing was sent");
        assert_eq!(reader.capacity(), 0);
        writer.write_all(b"!").await.unwrap();
        assert_eq!(reader.read(&mut piece).await.unwrap(), 1);
        assert_eq!(piece[0], b'!');
    }

    #[tokio::test]
    async fn a_reader_asking_for_a_whole_gulp_reads_directly() {
        let (mut writer, mut reader, _) = pair().await;
        writer.write_all(&[7u8; 1000]).await.unwrap();
        let mut large = vec![0u8; READ_AHEAD];
        let n = reader.read(&mut large).await.unwrap();
        assert!(n > 0 && large[..n].iter().all(|b| *b == 7));
        assert_eq!(reader.capacity(), 0, "nothing was copied through the buffer");
    }
}
