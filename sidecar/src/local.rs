//! Connecting to a port inside the pod (`127.0.0.1:N`): for port-forwards,
//! SSH `direct-tcpip` channels and web apps alike.

use std::time::Duration;

use tokio::net::TcpStream;

/// How long to wait for a local port to accept.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Connects to a port inside the pod, with a message a person understands
/// when nothing listens there.
pub async fn connect(port: u16) -> Result<TcpStream, String> {
    match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(("127.0.0.1", port))).await {
        Ok(Ok(stream)) => {
            let _ = stream.set_nodelay(true);
            Ok(stream)
        }
        Ok(Err(error)) => Err(format!(
            "cannot connect to port {port} inside the container: {error}"
        )),
        Err(_) => Err(format!(
            "port {port} inside the container did not accept within {CONNECT_TIMEOUT:?}"
        )),
    }
}
