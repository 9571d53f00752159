//! UDP datagrams over a port-forward's byte stream
//! ([`UPGRADE_UDP`](crate::wire::UPGRADE_UDP)): each datagram is a `u16`
//! big-endian length and that many bytes, in both directions, so datagram
//! boundaries survive the TCP, TLS and tunnel hops. One stream is one flow:
//! the CLI opens one per local client address, the sidecar sends its
//! datagrams from one socket `connect`ed to the port.

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// The largest datagram carried: the largest UDP payload over IPv4.
pub const MAX_DATAGRAM: usize = 65_507;

/// Writes one datagram (longer than [`MAX_DATAGRAM`]: an error, nothing
/// written).
pub async fn write<W: AsyncWrite + Unpin>(out: &mut W, datagram: &[u8]) -> std::io::Result<()> {
    if datagram.len() > MAX_DATAGRAM {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("a datagram of {} bytes is over {MAX_DATAGRAM}", datagram.len()),
        ));
    }
    let mut frame = Vec::with_capacity(2 + datagram.len());
    frame.extend_from_slice(&(datagram.len() as u16).to_be_bytes());
    frame.extend_from_slice(datagram);
    out.write_all(&frame).await?;
    out.flush().await
}

/// Reads the next datagram into `buf` (replacing what was there):
/// `false` when the stream ended cleanly between datagrams.
pub async fn read<R: AsyncRead + Unpin>(input: &mut R, buf: &mut Vec<u8>) -> std::io::Result<bool> {
    let mut header = [0u8; 2];
    match input.read_exact(&mut header[..1]).await {
        Ok(_) => {}
        Err(error) if error.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(false),
        Err(error) => return Err(error),
    }
    input.read_exact(&mut header[1..]).await?;
    let len = usize::from(u16::from_be_bytes(header));
    if len > MAX_DATAGRAM {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("a datagram frame of {len} bytes is over {MAX_DATAGRAM}"),
        ));
    }
    buf.resize(len, 0);
    input.read_exact(buf).await?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn datagrams_keep_their_boundaries_and_sizes() {
        let (mut a, mut b) = tokio::io::duplex(1 << 20);
        let sent: Vec<Vec<u8>> = vec![
            b"one".to_vec(),
            Vec::new(),
            vec![7u8; MAX_DATAGRAM],
            b"last".to_vec(),
        ];
        for d in &sent {
            write(&mut a, d).await.unwrap();
        }
        drop(a);
        let mut buf = Vec::new();
        for d in &sent {
            assert!(read(&mut b, &mut buf).await.unwrap());
            assert_eq!(&buf, d);
        }
        assert!(!read(&mut b, &mut buf).await.unwrap(), "a clean end");
    }

    #[tokio::test]
    async fn oversized_and_cut_datagrams_are_errors() {
        let (mut a, mut b) = tokio::io::duplex(1 << 20);
        let too_big = vec![0u8; MAX_DATAGRAM + 1];
        assert_eq!(
            write(&mut a, &too_big).await.unwrap_err().kind(),
            std::io::ErrorKind::InvalidInput
        );
        // A header that claims more than MAX_DATAGRAM.
        a.write_all(&[0xff, 0xff]).await.unwrap();
        let mut buf = Vec::new();
        assert_eq!(
            read(&mut b, &mut buf).await.unwrap_err().kind(),
            std::io::ErrorKind::InvalidData
        );
        // A datagram cut short by the end of the stream.
        let (mut a, mut b) = tokio::io::duplex(64);
        a.write_all(&[0, 5, b'a', b'b']).await.unwrap();
        drop(a);
        assert_eq!(
            read(&mut b, &mut buf).await.unwrap_err().kind(),
            std::io::ErrorKind::UnexpectedEof
        );
    }
}
