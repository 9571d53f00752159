//! Copying bytes both ways between two streams with buffers that grow on
//! demand and are let go while a side waits: a held connection that
//! carries a keystroke now and then holds none, not two 64 KiB buffers
//! (the router's memory per open stream was mostly these), while a bulk
//! transfer reaches the full size after a few reads.

use std::future::poll_fn;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Where each direction's buffer starts.
pub const INITIAL: usize = 4 * 1024;
/// As large as a buffer grows: enough for bulk transfers.
pub const MAX: usize = 64 * 1024;

/// A copy buffer that doubles, up to [`MAX`], each time a read fills it.
/// It is allocated when a read needs room and can be released while its
/// stream waits ([`Buffer::release`]), keeping its size for the next read.
#[derive(Debug)]
pub struct Buffer {
    bytes: Box<[u8]>,
    size: usize,
}

impl Default for Buffer {
    fn default() -> Self {
        Self {
            bytes: Box::default(),
            size: INITIAL,
        }
    }
}

impl Buffer {
    /// Room for the next read.
    pub fn room(&mut self) -> &mut [u8] {
        if self.bytes.is_empty() {
            self.bytes = vec![0; self.size].into_boxed_slice();
        }
        &mut self.bytes
    }

    /// The bytes the last read put in the first `len` of [`Buffer::room`].
    pub fn filled(&self, len: usize) -> &[u8] {
        &self.bytes[..len]
    }

    /// After the last read's `len` bytes were written on: a read that
    /// filled the buffer says more is waiting, so the next one gets twice
    /// the room.
    pub fn read_was(&mut self, len: usize) {
        if len == self.size && len < MAX {
            self.size = (len * 2).min(MAX);
            self.bytes = Box::default();
        }
    }

    /// Lets go of the memory while nothing is in it (the stream waits for
    /// bytes); the next read allocates it again at the same size.
    pub fn release(&mut self) {
        self.bytes = Box::default();
    }

    /// The size of the next read's room.
    pub fn capacity(&self) -> usize {
        self.size
    }

    /// The memory held now.
    pub fn held(&self) -> usize {
        self.bytes.len()
    }
}

/// One direction: read into the buffer, write it all on, flush before
/// waiting for more (TLS keeps what it accepted until flushed), shut the
/// writer down at the reader's end of file.
#[derive(Debug, Default)]
struct Direction {
    buffer: Buffer,
    /// Written up to `pos` of the `len` bytes read.
    pos: usize,
    len: usize,
    read_done: bool,
    need_flush: bool,
    shut_down: bool,
    done: bool,
    moved: u64,
}

impl Direction {
    fn poll<R, W>(
        &mut self,
        cx: &mut Context<'_>,
        mut reader: Pin<&mut R>,
        mut writer: Pin<&mut W>,
    ) -> Poll<io::Result<u64>>
    where
        R: AsyncRead + ?Sized,
        W: AsyncWrite + ?Sized,
    {
        loop {
            if self.done {
                return Poll::Ready(Ok(self.moved));
            }
            if self.pos < self.len {
                let written = ready!(
                    writer
                        .as_mut()
                        .poll_write(cx, &self.buffer.filled(self.len)[self.pos..])
                )?;
                if written == 0 {
                    return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
                }
                self.pos += written;
                self.moved += written as u64;
                self.need_flush = true;
                if self.pos == self.len {
                    self.buffer.read_was(self.len);
                }
                continue;
            }
            if self.read_done {
                if self.need_flush {
                    ready!(writer.as_mut().poll_flush(cx))?;
                    self.need_flush = false;
                }
                if !self.shut_down {
                    ready!(writer.as_mut().poll_shutdown(cx))?;
                    self.shut_down = true;
                }
                self.done = true;
                continue;
            }
            let mut room = ReadBuf::new(self.buffer.room());
            match reader.as_mut().poll_read(cx, &mut room) {
                Poll::Ready(Ok(())) => {
                    let len = room.filled().len();
                    (self.pos, self.len) = (0, len);
                    self.read_done = len == 0;
                }
                Poll::Ready(Err(error)) => return Poll::Ready(Err(error)),
                Poll::Pending => {
                    // Nothing is in the buffer: a held connection that
                    // carries a keystroke now and then holds none.
                    self.buffer.release();
                    if self.need_flush {
                        ready!(writer.as_mut().poll_flush(cx))?;
                        self.need_flush = false;
                    }
                    return Poll::Pending;
                }
            }
        }
    }
}

/// Copies `a` -> `b` and `b` -> `a` until both directions have ended
/// (each end of file passed on as a shutdown of the other side's writer).
/// Returns the bytes moved (a to b, b to a). The first error ends both.
pub async fn bidirectional<A, B>(a: &mut A, b: &mut B) -> io::Result<(u64, u64)>
where
    A: AsyncRead + AsyncWrite + Unpin + ?Sized,
    B: AsyncRead + AsyncWrite + Unpin + ?Sized,
{
    let mut a_to_b = Direction::default();
    let mut b_to_a = Direction::default();
    poll_fn(|cx| {
        let forth = a_to_b.poll(cx, Pin::new(&mut *a), Pin::new(&mut *b))?;
        let back = b_to_a.poll(cx, Pin::new(&mut *b), Pin::new(&mut *a))?;
        let forth = ready!(forth);
        let back = ready!(back);
        Poll::Ready(Ok((forth, back)))
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[test]
    fn a_buffer_grows_only_when_reads_fill_it() {
        let mut buffer = Buffer::default();
        assert_eq!(buffer.capacity(), INITIAL);
        buffer.read_was(100);
        assert_eq!(buffer.capacity(), INITIAL, "a short read leaves it");
        let mut sizes = Vec::new();
        for _ in 0..6 {
            let full = buffer.capacity();
            buffer.read_was(full);
            sizes.push(buffer.capacity());
        }
        assert_eq!(sizes, [8192, 16384, 32768, 65536, 65536, 65536]);
    }

    #[test]
    fn a_released_buffer_holds_nothing_and_keeps_its_size() {
        let mut buffer = Buffer::default();
        assert_eq!(buffer.held(), 0, "nothing before the first read");
        assert_eq!(buffer.room().len(), INITIAL);
        buffer.read_was(INITIAL);
        assert_eq!(buffer.room().len(), 2 * INITIAL);
        buffer.release();
        assert_eq!(buffer.held(), 0);
        assert_eq!(buffer.room().len(), 2 * INITIAL, "the grown size is kept");
    }

    /// Both ways at once, more than the largest buffer, each end passed on
    /// as a half-close, the counts right.
    #[tokio::test]
    async fn both_directions_arrive_whole_and_each_end_is_passed_on() {
        let (mut client, mut near) = tokio::io::duplex(7000);
        let (mut far, mut server) = tokio::io::duplex(5000);
        let relay = tokio::spawn(async move { bidirectional(&mut near, &mut far).await });
        let up: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let down: Vec<u8> = (0..200_000u32).map(|i| (i * 13 % 241) as u8).collect();
        let (up2, down2) = (up.clone(), down.clone());
        let client_side = tokio::spawn(async move {
            client.write_all(&up2).await.unwrap();
            client.shutdown().await.unwrap();
            let mut got = Vec::new();
            client.read_to_end(&mut got).await.unwrap();
            got
        });
        let server_side = tokio::spawn(async move {
            let mut got = Vec::new();
            server.read_to_end(&mut got).await.unwrap();
            // The client's end reached the server before it answered.
            server.write_all(&down2).await.unwrap();
            server.shutdown().await.unwrap();
            got
        });
        assert_eq!(server_side.await.unwrap(), up);
        assert_eq!(client_side.await.unwrap(), down);
        assert_eq!(relay.await.unwrap().unwrap(), (300_000, 200_000));
    }

    /// A writer that keeps what it accepts until flushed, as TLS does: the
    /// relay flushes before it waits, so a reply is not left inside.
    #[tokio::test(start_paused = true)]
    async fn what_a_buffering_writer_holds_is_flushed_before_waiting() {
        let (mut client, near) = tokio::io::duplex(1 << 16);
        let (far, mut server) = tokio::io::duplex(1 << 16);
        let mut near = tokio::io::BufWriter::new(near);
        let mut far = far;
        tokio::spawn(async move { bidirectional(&mut far, &mut near).await });
        server.write_all(b"a reply").await.unwrap();
        let mut got = [0u8; 7];
        tokio::time::timeout(std::time::Duration::from_secs(5), client.read_exact(&mut got))
            .await
            .expect("the reply was flushed")
            .unwrap();
        assert_eq!(&got, b"a reply");
    }
}
