//! `tcp-echo PORT`: a TCP echo server for the e2e workload image, for
//! `make load`: busybox `nc -ll -e cat` listens with a backlog of one and
//! forks a `cat` per connection, so 500 connections at once met SYN
//! retries (1, 3, 7… s) and resets *in the app*, not in Hatchway. This one
//! listens with tokio's backlog (1024) and echoes each connection in a
//! task. Built static by `make static` and copied into the image by
//! e2e/images/workload/prepare. Test tooling, not product code.

use tokio::net::TcpListener;

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::io::Result<()> {
    let port: u16 = std::env::args()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(9000);
    let listener = TcpListener::bind(("0.0.0.0", port)).await?;
    loop {
        let (tcp, _) = listener.accept().await?;
        tokio::spawn(async move {
            let (mut read, mut write) = tcp.into_split();
            let _ = tokio::io::copy(&mut read, &mut write).await;
        });
    }
}
