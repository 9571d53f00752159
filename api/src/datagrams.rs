//! UDP datagrams over a port-forward's byte stream
//! ([`UPGRADE_UDP`](crate::wire::UPGRADE_UDP)): each datagram is a `u16`
//! big-endian length and that many bytes, in both directions, so datagram
//! boundaries survive the TCP, TLS and tunnel hops. One stream is one flow:
//! the CLI opens one per local client address, the sidecar sends its
//! datagrams from one socket `connect`ed to the port.

//!
//! Reading is cancel-safe ([`Reader`]): a relay waits for a datagram from
//! the stream *and* from its socket in one `select!`, and a frame that
//! arrived half when the socket won must not lose its first half.
//! Writing batches: [`encode`] appends frames to one buffer, so the
//! datagrams that are waiting go out in one write (one TLS record) instead
//! of one each.

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// The largest datagram carried: the largest UDP payload over IPv4.
pub const MAX_DATAGRAM: usize = 65_507;

/// How many bytes of frames to gather into one write: the datagrams
/// already waiting, up to this much, go out together.
pub const BATCH: usize = 64 * 1024;

fn too_big(len: usize) -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::InvalidInput,
        format!("a datagram of {len} bytes is over {MAX_DATAGRAM}"),
    )
}

/// Appends one datagram's frame to `out` (longer than [`MAX_DATAGRAM`]:
/// an error, nothing appended).
pub fn encode(out: &mut Vec<u8>, datagram: &[u8]) -> std::io::Result<()> {
    if datagram.len() > MAX_DATAGRAM {
        return Err(too_big(datagram.len()));
    }
    out.extend_from_slice(&(datagram.len() as u16).to_be_bytes());
    out.extend_from_slice(datagram);
    Ok(())
}

/// Writes one datagram (longer than [`MAX_DATAGRAM`]: an error, nothing
/// written).
pub async fn write<W: AsyncWrite + Unpin>(out: &mut W, datagram: &[u8]) -> std::io::Result<()> {
    let mut frame = Vec::with_capacity(2 + datagram.len());
    encode(&mut frame, datagram)?;
    out.write_all(&frame).await?;
    out.flush().await
}

/// Reads datagrams from a stream; what has been read stays in the reader
/// until a whole frame is there, so [`Reader::next`] may be cancelled.
#[derive(Debug)]
pub struct Reader<R> {
    inner: R,
    buf: BytesMut,
}

impl<R: AsyncRead + Unpin> Reader<R> {
    pub fn new(inner: R) -> Self {
        Self {
            inner,
            buf: BytesMut::with_capacity(BATCH),
        }
    }

    /// The next datagram; `None` when the stream ended cleanly between
    /// datagrams. Cancel-safe.
    pub async fn next(&mut self) -> std::io::Result<Option<Bytes>> {
        loop {
            if let Some(datagram) = self.buffered()? {
                return Ok(Some(datagram));
            }
            if self.buf.capacity() - self.buf.len() < 2 + MAX_DATAGRAM {
                self.buf.reserve(BATCH.max(2 + MAX_DATAGRAM));
            }
            if self.inner.read_buf(&mut self.buf).await? == 0 {
                if self.buf.is_empty() {
                    return Ok(None);
                }
                return Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    format!(
                        "the stream ended inside a datagram ({} bytes of it)",
                        self.buf.len()
                    ),
                ));
            }
        }
    }

    /// The next datagram if it has arrived whole already (no read).
    pub fn buffered(&mut self) -> std::io::Result<Option<Bytes>> {
        let Some(header) = self.buf.get(..2) else {
            return Ok(None);
        };
        let len = usize::from(u16::from_be_bytes([header[0], header[1]]));
        if len > MAX_DATAGRAM {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("a datagram frame of {len} bytes is over {MAX_DATAGRAM}"),
            ));
        }
        if self.buf.len() < 2 + len {
            return Ok(None);
        }
        self.buf.advance(2);
        Ok(Some(self.buf.split_to(len).freeze()))
    }
}

/// A flow's idle time: one timer, moved on only when it fires (not one
/// per datagram). [`Quiet::expired`] may be cancelled.
#[derive(Debug)]
pub struct Quiet {
    limit: std::time::Duration,
    last: tokio::time::Instant,
    timer: std::pin::Pin<Box<tokio::time::Sleep>>,
}

impl Quiet {
    pub fn new(limit: std::time::Duration) -> Self {
        Self {
            limit,
            last: tokio::time::Instant::now(),
            timer: Box::pin(tokio::time::sleep(limit)),
        }
    }

    /// A datagram went one way or the other.
    pub fn heard(&mut self) {
        self.last = tokio::time::Instant::now();
    }

    /// Returns once `limit` has passed without [`Quiet::heard`].
    pub async fn expired(&mut self) {
        loop {
            self.timer.as_mut().await;
            if self.last.elapsed() >= self.limit {
                return;
            }
            let due = self.last + self.limit;
            self.timer.as_mut().reset(due);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn datagrams_keep_their_boundaries_and_sizes_and_bad_frames_are_errors() {
        let (mut a, b) = tokio::io::duplex(1 << 20);
        let sent: Vec<Vec<u8>> = vec![
            b"one".to_vec(),
            Vec::new(),
            vec![7u8; MAX_DATAGRAM],
            b"last".to_vec(),
        ];
        // One write per datagram, and a batch of all of them.
        for d in &sent {
            write(&mut a, d).await.unwrap();
        }
        let mut batch = Vec::new();
        for d in &sent {
            encode(&mut batch, d).unwrap();
        }
        a.write_all(&batch).await.unwrap();
        a.write_all(&[0xff, 0xff]).await.unwrap();
        let mut reader = Reader::new(b);
        for d in sent.iter().chain(&sent) {
            assert_eq!(reader.next().await.unwrap().unwrap(), &d[..]);
        }
        // A header that claims more than MAX_DATAGRAM.
        assert_eq!(
            reader.next().await.unwrap_err().kind(),
            std::io::ErrorKind::InvalidData
        );

        let (mut a, b) = tokio::io::duplex(64);
        a.write_all(&[0, 5, b'a', b'b']).await.unwrap();
        drop(a);
        let mut reader = Reader::new(b);
        assert_eq!(
            reader.next().await.unwrap_err().kind(),
            std::io::ErrorKind::UnexpectedEof
        );
        let (a, b) = tokio::io::duplex(64);
        drop(a);
        assert!(Reader::new(b).next().await.unwrap().is_none(), "a clean end");
        let (mut a, _b) = tokio::io::duplex(64);
        assert_eq!(
            write(&mut a, &[0u8; MAX_DATAGRAM + 1]).await.unwrap_err().kind(),
            std::io::ErrorKind::InvalidInput
        );
    }

    /// What a relay does: wait for a datagram from the stream while
    /// something else (its socket, here a timer) wins now and then, in the
    /// middle of frames that arrive in pieces. Nothing may be lost.
    #[tokio::test]
    async fn a_reader_cancelled_mid_frame_loses_nothing() {
        let (mut a, b) = tokio::io::duplex(1 << 16);
        let sent: Vec<Vec<u8>> = (0..50u8).map(|i| vec![i; 100 + usize::from(i) * 37]).collect();
        let writer = {
            let sent = sent.clone();
            tokio::spawn(async move {
                let mut bytes = Vec::new();
                for d in &sent {
                    encode(&mut bytes, d).unwrap();
                }
                // Pieces that split headers and bodies alike.
                for piece in bytes.chunks(7) {
                    a.write_all(piece).await.unwrap();
                    tokio::task::yield_now().await;
                }
            })
        };
        let mut reader = Reader::new(b);
        let mut got = Vec::new();
        let mut other = 0u32;
        while got.len() < sent.len() {
            tokio::select! {
                datagram = reader.next() => got.push(datagram.unwrap().unwrap().to_vec()),
                () = tokio::task::yield_now() => other += 1,
            }
        }
        writer.await.unwrap();
        assert!(other > 0, "the other branch never won: the test proves nothing");
        assert_eq!(got, sent);
    }
}
