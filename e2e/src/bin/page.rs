//! `page PORT TEXT`: an HTTP/1.1 server answering every request with TEXT
//! and a newline (keep-alive), for `make load`'s web-app case. busybox
//! `httpd` forks per connection and listens with a backlog of 9, so 1000
//! requests at once met SYN retries (1, 3, 7, 15, 31 s…) *in the app*, and
//! the load test measured busybox instead of Hatchway. Requests are read to
//! the end of their head (bodies are not expected: GETs). Built static by
//! `make static` and copied into the image by e2e/images/workload/prepare.
//! Test tooling, not product code.

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let port: u16 = args.next().and_then(|p| p.parse().ok()).unwrap_or(8081);
    let text = format!("{}\n", args.next().unwrap_or_else(|| "page".to_owned()));
    let answer: &'static [u8] = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n{text}",
        text.len()
    )
    .into_bytes()
    .leak();
    let listener = TcpListener::bind(("0.0.0.0", port)).await?;
    loop {
        let (tcp, _) = listener.accept().await?;
        tokio::spawn(async move {
            let _ = serve(tcp, answer).await;
        });
    }
}

/// Answers each request head on `tcp` until the peer closes.
async fn serve(mut tcp: TcpStream, answer: &[u8]) -> std::io::Result<()> {
    let mut pending = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        while let Some(end) = pending.windows(4).position(|w| w == b"\r\n\r\n") {
            pending.drain(..end + 4);
            tcp.write_all(answer).await?;
        }
        if pending.len() > 64 * 1024 {
            return Ok(());
        }
        let n = tcp.read(&mut buf).await?;
        if n == 0 {
            return Ok(());
        }
        pending.extend_from_slice(&buf[..n]);
    }
}
