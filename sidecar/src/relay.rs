//! Copies bytes both ways between two streams, counting as they flow (so
//! an abrupt end still records what moved) and passing each side's end of
//! file on as a half-close.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

async fn copy_counted<R, W>(mut from: R, mut to: W, counter: Arc<AtomicU64>)
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    // Grown on demand: a held connection keeps a few KiB.
    let mut buf = hatchway_api::copy::Buffer::default();
    loop {
        match from.read(buf.room()).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                // Flushed each time: TLS (and `Framed`) may keep the end of
                // what it accepted until written to again, and the other
                // side may be waiting for exactly that end (a reply).
                if to.write_all(buf.filled(n)).await.is_err() || to.flush().await.is_err() {
                    break;
                }
                counter.fetch_add(n as u64, Ordering::Relaxed);
                buf.read_was(n);
            }
        }
    }
    let _ = to.shutdown().await;
}

/// Relays `client` <-> `upstream` until both directions end; `to_upstream`
/// and `from_upstream` count the bytes.
pub async fn relay<A, B>(client: A, upstream: B, to_upstream: Arc<AtomicU64>, from_upstream: Arc<AtomicU64>)
where
    A: AsyncRead + AsyncWrite,
    B: AsyncRead + AsyncWrite,
{
    let (client_rd, client_wr) = tokio::io::split(client);
    let (up_rd, up_wr) = tokio::io::split(upstream);
    tokio::join!(
        copy_counted(client_rd, up_wr, to_upstream),
        copy_counted(up_rd, client_wr, from_upstream)
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A reply relayed into a stream that keeps part of what it accepts
    /// (`Framed` over a full pipe, as rustls over a full socket) reaches
    /// the client whole while the upstream waits for the next request. On
    /// paused time a stuck relay would run into the timeout at once.
    #[tokio::test(start_paused = true)]
    async fn a_reply_is_not_left_in_a_buffering_stream() {
        let (client, client_far) = tokio::io::duplex(4 * 1024);
        let (upstream, mut upstream_far) = tokio::io::duplex(64 * 1024);
        let counters = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        tokio::spawn(relay(
            hatchway_api::frames::Framed::new(client_far),
            upstream,
            counters.0,
            counters.1.clone(),
        ));
        let reply: Vec<u8> = (0..100_000u32).map(|i| (i % 249) as u8).collect();
        // Written while the client reads (more than the pipes and the
        // relay's buffer hold), then held open: no end of file flushes it.
        let written = reply.clone();
        tokio::spawn(async move {
            upstream_far.write_all(&written).await.unwrap();
            std::future::pending::<()>().await;
            drop(upstream_far);
        });
        let mut client = hatchway_api::frames::Framed::new(client);
        let mut got = vec![0u8; reply.len()];
        tokio::time::timeout(std::time::Duration::from_secs(60), client.read_exact(&mut got))
            .await
            .expect("the whole reply arrives while the upstream stays open")
            .unwrap();
        assert_eq!(got, reply);
        assert_eq!(counters.1.load(Ordering::Relaxed), reply.len() as u64);
    }
}
