//! Copies bytes both ways between two streams, counting as they flow (so
//! an abrupt end still records what moved) and passing each side's end of
//! file on as a half-close.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Buffer per direction: large enough for bulk transfers.
const BUF: usize = 64 * 1024;

async fn copy_counted<R, W>(mut from: R, mut to: W, counter: Arc<AtomicU64>)
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut buf = vec![0u8; BUF];
    loop {
        match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if to.write_all(&buf[..n]).await.is_err() {
                    break;
                }
                counter.fetch_add(n as u64, Ordering::Relaxed);
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
