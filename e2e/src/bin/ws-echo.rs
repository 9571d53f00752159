//! `ws-echo PORT`: a WebSocket echo server for the e2e workload image (the
//! busybox image has none). Every text or binary message comes back as is;
//! `GET /headers` (no upgrade) answers with the request's head, so a test
//! can see what the app received (the router's identity assertion). Built
//! static by `make static` and copied into the image by
//! e2e/images/workload/prepare. Test tooling, not product code.

use futures::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::io::Result<()> {
    let port: u16 = std::env::args()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(8082);
    let listener = TcpListener::bind(("0.0.0.0", port)).await?;
    loop {
        let (tcp, _) = listener.accept().await?;
        tokio::spawn(async move {
            let mut peek = [0u8; 16];
            let n = tcp.peek(&mut peek).await.unwrap_or(0);
            if peek[..n].starts_with(b"GET /headers") {
                let _ = echo_head(tcp).await;
                return;
            }
            let Ok(mut ws) = tokio_tungstenite::accept_async(tcp).await else {
                return;
            };
            while let Some(Ok(message)) = ws.next().await {
                if (message.is_text() || message.is_binary()) && ws.send(message).await.is_err() {
                    break;
                }
            }
        });
    }
}

/// Answers with the request's head (up to 64 KiB) as a text body.
async fn echo_head(mut tcp: TcpStream) -> std::io::Result<()> {
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 64 * 1024 {
        let n = tcp.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
    }
    let answer = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        head.len()
    );
    tcp.write_all(answer.as_bytes()).await?;
    tcp.write_all(&head).await?;
    tcp.shutdown().await
}
