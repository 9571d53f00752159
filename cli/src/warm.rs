//! A connection to the router made ahead of need. A port-forward opens a
//! connection to the router for every local connection, and its TCP and
//! TLS handshakes were most of the time from a local connect to the
//! first byte back. With a spare ready, a new local connection takes it at
//! once and the next spare is dialled behind it, off the critical path:
//! a burst of connections (a browser, a database pool, an rsync loop)
//! never waits for a handshake after the first.
//!
//! One spare at most, used once (an upgrade consumes its connection), so
//! nothing is shared between two local connections and the router still
//! sees one TLS connection, one request, one proof per stream. A spare
//! older than [`FRESH_FOR`] is dropped rather than used: the router ends
//! a connection that sends no request within its header timeout (30 s by
//! default). None is dialled while nothing is asked: an idle port-forward
//! keeps at most one idle connection and dials nothing in the background.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Empty;
use hyper::client::conn::http1::SendRequest;

use crate::router::{Target, connect};

/// How long a spare is worth taking: well inside the router's header
/// read timeout.
pub const FRESH_FOR: Duration = Duration::from_secs(15);

type Sender = SendRequest<Empty<Bytes>>;

/// At most one handshaken connection to the router, waiting for a request.
#[derive(Default)]
pub struct Spare {
    ready: Mutex<Option<(Instant, Sender)>>,
    dialing: AtomicBool,
}

impl Spare {
    /// The spare, when there is one still open and fresh.
    pub fn take(&self) -> Option<Sender> {
        let (made, sender) = self.ready.lock().expect("the spare's lock").take()?;
        (made.elapsed() < FRESH_FOR && !sender.is_closed()).then_some(sender)
    }

    /// Dials the next spare in the background unless one is on its way.
    /// A failure is left for the next request to meet and report.
    pub fn refill(self: &Arc<Self>, target: &Target) {
        if self.dialing.swap(true, Ordering::AcqRel) {
            return;
        }
        let spare = self.clone();
        let target = target.clone();
        tokio::spawn(async move {
            if let Ok(sender) = connect(&target).await {
                *spare.ready.lock().expect("the spare's lock") = Some((Instant::now(), sender));
            }
            spare.dialing.store(false, Ordering::Release);
        });
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    use super::*;
    use crate::connection::Server;
    use crate::router::Endpoint;

    /// A TLS server that numbers its connections, answers each request
    /// with a `101` naming the connection, and closes right after the
    /// handshake the connections numbered in `close`.
    async fn router(close: &'static [usize]) -> (Target, Arc<AtomicUsize>) {
        let pki = hatchway_testkit::pki();
        let acceptor = tokio_rustls::TlsAcceptor::from(pki.server_config().unwrap());
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let n = count.fetch_add(1, Ordering::SeqCst) + 1;
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let Ok(mut tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    if close.contains(&n) {
                        let _ = tls.shutdown().await;
                        return;
                    }
                    let mut request = Vec::new();
                    let mut byte = [0u8; 1];
                    while !request.ends_with(b"\r\n\r\n") {
                        if tls.read(&mut byte).await.unwrap_or(0) == 0 {
                            return;
                        }
                        request.push(byte[0]);
                    }
                    let answer = format!(
                        "HTTP/1.1 101 Switching Protocols\r\nconnection: upgrade\r\nupgrade: tcp\r\nx-connection: {n}\r\n\r\n"
                    );
                    let _ = tls.write_all(answer.as_bytes()).await;
                    let _ = tls.flush().await;
                    // Held open like an upgraded stream.
                    let _ = tls.read(&mut byte).await;
                });
            }
        });
        let tls = hatchway_api::tls::client_trusting(pki.ca_pem.as_bytes()).unwrap();
        let target = Target {
            server: Server::parse(&format!("https://127.0.0.1:{port}")).unwrap(),
            tls: Arc::new(tls),
            token: "t".into(),
            spare: None,
        };
        (target, accepted)
    }

    async fn upgrade_on(endpoint: &Endpoint) -> usize {
        let upgrade = endpoint.upgrade("/x", "tcp", &[]).await.unwrap();
        upgrade.headers["x-connection"].to_str().unwrap().parse().unwrap()
    }

    /// Waits (bounded) until the server accepted `n` connections.
    async fn accepted_reaches(accepted: &AtomicUsize, n: usize) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while accepted.load(Ordering::SeqCst) < n {
            assert!(
                Instant::now() < deadline,
                "{} connections, not {n}",
                accepted.load(Ordering::SeqCst)
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    #[tokio::test]
    async fn the_next_upgrade_takes_the_connection_dialled_ahead() {
        let (target, accepted) = router(&[]).await;
        let endpoint = Endpoint::Direct(target).kept_warm();
        assert_eq!(upgrade_on(&endpoint).await, 1);
        // The spare behind it, dialled without a request.
        accepted_reaches(&accepted, 2).await;
        let Endpoint::Direct(target) = &endpoint else {
            unreachable!()
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while target.spare.as_ref().unwrap().ready.lock().unwrap().is_none() {
            assert!(Instant::now() < deadline, "the spare is never ready");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(
            upgrade_on(&endpoint).await,
            2,
            "the spare carried the second upgrade"
        );
        accepted_reaches(&accepted, 3).await;
    }

    #[test]
    fn without_a_spare_every_upgrade_dials_its_own() {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        runtime.block_on(async {
            let (target, accepted) = router(&[]).await;
            let endpoint = Endpoint::Direct(target);
            assert_eq!(upgrade_on(&endpoint).await, 1);
            assert_eq!(upgrade_on(&endpoint).await, 2);
            assert_eq!(accepted.load(Ordering::SeqCst), 2, "nothing dialled ahead");
        });
    }

    /// The router closed the spare (restarted, timed out): the upgrade
    /// still succeeds, on a new connection.
    #[tokio::test]
    async fn a_spare_the_router_closed_is_passed_over() {
        let (target, accepted) = router(&[2]).await;
        let endpoint = Endpoint::Direct(target).kept_warm();
        assert_eq!(upgrade_on(&endpoint).await, 1);
        accepted_reaches(&accepted, 2).await;
        let got = upgrade_on(&endpoint).await;
        assert!(got >= 3, "answered on connection {got}");
    }

    #[test]
    fn a_stale_spare_is_not_taken() {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        runtime.block_on(async {
            let (target, _) = router(&[]).await;
            let sender = connect(&target).await.unwrap();
            let spare = Spare::default();
            let made = Instant::now()
                .checked_sub(FRESH_FOR + Duration::from_secs(1))
                .unwrap();
            *spare.ready.lock().unwrap() = Some((made, sender));
            assert!(spare.take().is_none());
            *spare.ready.lock().unwrap() = Some((Instant::now(), connect(&target).await.unwrap()));
            assert!(spare.take().is_some());
        });
    }
}
