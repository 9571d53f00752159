//! Connecting to a router through a Service or a NodePort, where a replica
//! that just went away can stay in kube-proxy's rules for a moment (about a
//! second: its sync period): a connection routed to it is refused (the
//! replica stopped listening) or never answered (its pod and address are
//! gone, and the kernel would retransmit the SYN for minutes). Each new
//! connection is routed afresh, so the way through is another one:
//!
//! - a refused (or reset, or unreachable) attempt is followed by the next
//!   after a short pause, 25 ms doubling, so the attempts span
//!   kube-proxy's update (refusals only: attempts at 0, 25, 75, 175, 375,
//!   775 and 1575 ms);
//! - an attempt not answered within [`STAGGER`] gets another one beside it
//!   (as RFC 8305's "happy eyeballs" does for addresses), and it keeps
//!   going: a router far away still connects, only later;
//! - the first attempt to connect wins, the others are dropped; after
//!   [`ATTEMPTS`] attempts or [`TIMEOUT`] the last error is returned.
//!
//! The sidecar's tunnel dialer and `kubectl hatch` both connect this way.

use std::future::Future;
use std::io;
use std::time::Duration;

use tokio::net::TcpStream;
use tokio::task::JoinSet;
use tokio::time::Instant;

/// Time allowed for the connection, whatever the attempts.
pub const TIMEOUT: Duration = Duration::from_secs(3);
/// While no attempt has answered, another one starts after this long.
/// Inside a cluster a live replica answers a SYN in well under a
/// millisecond.
pub const STAGGER: Duration = Duration::from_millis(250);
/// The pause after the first refused attempt; it doubles with each.
pub const REFUSED_PAUSE: Duration = Duration::from_millis(25);
/// Most attempts for one connection.
pub const ATTEMPTS: u32 = 8;

/// A TCP connection to `host:port` ([`connect_with`] through the
/// resolver), with `TCP_NODELAY` set.
pub async fn connect(host: &str, port: u16) -> io::Result<TcpStream> {
    let host = host.to_owned();
    let tcp = connect_with(move || TcpStream::connect((host.clone(), port))).await?;
    tcp.set_nodelay(true)?;
    Ok(tcp)
}

/// The first connection made by one of up to [`ATTEMPTS`] calls of
/// `connect`, started as the module says, within [`TIMEOUT`]. A timeout
/// is `ErrorKind::TimedOut`; otherwise the last attempt's error.
pub async fn connect_with<F, C>(mut connect: F) -> io::Result<TcpStream>
where
    F: FnMut() -> C,
    C: Future<Output = io::Result<TcpStream>> + Send + 'static,
{
    let deadline = Instant::now() + TIMEOUT;
    // Dropped on return: the attempts still in flight are aborted.
    let mut attempts = JoinSet::new();
    let mut started = 0;
    let mut failures = 0;
    let mut next = Instant::now();
    let mut last_error = None;
    loop {
        // Nothing in flight and no attempt left (or none that would start
        // in time): the last error now, not at the deadline.
        if attempts.is_empty() && (started == ATTEMPTS || next >= deadline) {
            break;
        }
        tokio::select! {
            Some(joined) = attempts.join_next() => match joined {
                Ok(Ok(tcp)) => return Ok(tcp),
                Ok(Err(error)) => {
                    let pause = REFUSED_PAUSE * 2u32.pow(failures.min(10));
                    failures += 1;
                    // With another attempt still waiting for an answer, the
                    // stagger's next start stands if it is sooner.
                    next = if attempts.is_empty() {
                        Instant::now() + pause
                    } else {
                        next.min(Instant::now() + pause)
                    };
                    last_error = Some(error);
                }
                Err(join) => last_error = Some(io::Error::other(join)),
            },
            _ = tokio::time::sleep_until(next), if started < ATTEMPTS => {
                attempts.spawn(connect());
                started += 1;
                next = Instant::now() + STAGGER;
            }
            _ = tokio::time::sleep_until(deadline) => break,
        }
    }
    Err(match last_error {
        Some(error) if attempts.is_empty() => error,
        _ => io::ErrorKind::TimedOut.into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU32, Ordering};

    /// `connect` that counts its calls and asks `plan` what call `n` does:
    /// `Some(true)` connects to `addr`, `Some(false)` is refused, `None`
    /// is never answered.
    fn planned(
        addr: std::net::SocketAddr,
        calls: Arc<AtomicU32>,
        plan: fn(u32) -> Option<bool>,
    ) -> impl FnMut() -> std::pin::Pin<Box<dyn Future<Output = io::Result<TcpStream>> + Send>> {
        move || {
            let n = calls.fetch_add(1, Ordering::SeqCst);
            Box::pin(async move {
                match plan(n) {
                    // Connected at once (loopback), so paused time never
                    // runs ahead while a real connect is in flight.
                    Some(true) => {
                        let tcp = std::net::TcpStream::connect(addr)?;
                        tcp.set_nonblocking(true)?;
                        TcpStream::from_std(tcp)
                    }
                    Some(false) => Err(io::ErrorKind::ConnectionRefused.into()),
                    None => std::future::pending().await,
                }
            })
        }
    }

    async fn live() -> (tokio::net::TcpListener, std::net::SocketAddr) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        (listener, addr)
    }

    /// A Service still routing to a dead pod: the first attempt is never
    /// answered; the second, started after STAGGER, reaches a live replica
    /// and is taken without waiting for the first.
    #[tokio::test]
    async fn an_unanswered_attempt_does_not_hold_up_the_next() {
        let (_listener, addr) = live().await;
        let calls = Arc::new(AtomicU32::new(0));
        let tcp = connect_with(planned(addr, calls.clone(), |n| (n > 0).then_some(true)))
            .await
            .unwrap();
        assert_eq!(tcp.peer_addr().unwrap(), addr);
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }

    /// A replica that stopped listening: refused twice, then a live one;
    /// the pauses after refusals are short (25, 50 ms), not the stagger.
    #[tokio::test(start_paused = true)]
    async fn refused_attempts_are_followed_after_short_pauses() {
        let (_listener, addr) = live().await;
        let calls = Arc::new(AtomicU32::new(0));
        let started = Instant::now();
        let tcp = connect_with(planned(addr, calls.clone(), |n| Some(n >= 2)))
            .await
            .unwrap();
        assert_eq!(tcp.peer_addr().unwrap(), addr);
        assert_eq!(calls.load(Ordering::SeqCst), 3);
        // Paused time: only the pauses advance the clock.
        let waited = started.elapsed();
        assert!(waited >= REFUSED_PAUSE * 3 && waited < STAGGER, "{waited:?}");
    }

    /// Every attempt refused: the attempts span 1.575 s (kube-proxy's
    /// update), and the last refusal is returned then (the next pause
    /// would pass the deadline).
    #[tokio::test(start_paused = true)]
    async fn all_refused_gives_the_refusal() {
        let calls = Arc::new(AtomicU32::new(0));
        let addr = "127.0.0.1:9".parse().unwrap();
        let started = Instant::now();
        let error = connect_with(planned(addr, calls.clone(), |_| Some(false)))
            .await
            .unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::ConnectionRefused);
        assert_eq!(calls.load(Ordering::SeqCst), 7);
        assert_eq!(started.elapsed(), Duration::from_millis(1575));
    }

    /// Nothing ever answers: TimedOut after TIMEOUT, with the attempts
    /// staggered (not all at once).
    #[tokio::test(start_paused = true)]
    async fn nothing_answering_times_out() {
        let calls = Arc::new(AtomicU32::new(0));
        let addr = "127.0.0.1:9".parse().unwrap();
        let started = Instant::now();
        let error = connect_with(planned(addr, calls.clone(), |_| None))
            .await
            .unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::TimedOut);
        assert_eq!(started.elapsed(), TIMEOUT);
        assert_eq!(calls.load(Ordering::SeqCst), ATTEMPTS);
    }

    /// The real thing: a closed port is refused.
    #[tokio::test]
    async fn a_closed_port_is_refused() {
        let (listener, addr) = live().await;
        drop(listener);
        let error = connect("127.0.0.1", addr.port()).await.unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::ConnectionRefused);
    }
}
