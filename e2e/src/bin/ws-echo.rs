//! `ws-echo PORT`: a WebSocket echo server for the e2e workload image (the
//! busybox image has none). Every text or binary message comes back as is;
//! built static by `make static` and copied into the image by
//! e2e/images/workload/prepare. Test tooling, not product code.

use futures::{SinkExt, StreamExt};
use tokio::net::TcpListener;

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
