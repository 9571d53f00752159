//! `ssh -R` (RFC 4254 `tcpip-forward`): a listener in the pod's network
//! namespace whose connections come back to the client as
//! `forwarded-tcpip` channels. A listener there is reachable by whatever
//! shares the pod's network, so it is off unless the Container allows it
//! (`spec.portForward.reverse`), and bounded: loopback only (OpenSSH's
//! `GatewayPorts no`, whatever address is asked), ports from 1024 (or 0:
//! one chosen by the kernel), [`MAX_LISTENERS`] per connection, all closed
//! with the connection.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use russh::server::Handle;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::report::{Reporter, Who};

/// The most listeners one SSH connection may hold.
pub const MAX_LISTENERS: usize = 8;
/// The lowest port a listener may take (0 asks for any free one).
pub const MIN_PORT: u32 = 1024;

/// One connection's listeners, by port; aborted when dropped.
#[derive(Default)]
pub struct Listeners {
    open: HashMap<u16, JoinHandle<()>>,
}

impl Drop for Listeners {
    fn drop(&mut self) {
        for (_, task) in self.open.drain() {
            task.abort();
        }
    }
}

/// What a listener serves: the client's handle and who asked.
pub struct Origin {
    pub handle: Handle,
    pub who: Who,
    pub reporter: Arc<Reporter>,
}

/// The loopback address a request binds: `::1` if it asked for an IPv6
/// loopback, else 127.0.0.1 (never another interface).
fn loopback(address: &str) -> IpAddr {
    match address.trim_matches(|c| c == '[' || c == ']') {
        "::1" | "ip6-localhost" => IpAddr::V6(Ipv6Addr::LOCALHOST),
        _ => IpAddr::V4(Ipv4Addr::LOCALHOST),
    }
}

impl Listeners {
    /// Opens a listener for `address:port` (a 0 port becomes the one
    /// bound), or says why not.
    pub async fn open(
        &mut self,
        allowed: bool,
        address: &str,
        port: &mut u32,
        origin: Origin,
    ) -> Result<(), String> {
        if !allowed {
            return Err(
                "reverse forwarding (ssh -R) is off for this Container (spec.portForward.reverse)".into(),
            );
        }
        if *port != 0 && !(MIN_PORT..=65535).contains(port) {
            return Err(format!("ssh -R port {port}: only ports {MIN_PORT}-65535 (or 0)"));
        }
        if self.open.len() >= MAX_LISTENERS {
            return Err(format!(
                "ssh -R: at most {MAX_LISTENERS} listeners per connection"
            ));
        }
        let bind = SocketAddr::new(loopback(address), *port as u16);
        let listener = TcpListener::bind(bind)
            .await
            .map_err(|e| format!("ssh -R: cannot listen on {bind}: {e}"))?;
        let bound = listener.local_addr().map_err(|e| e.to_string())?.port();
        *port = u32::from(bound);
        origin.reporter.audit(&format!(
            "reverse forward listening on {} port {bound} {}",
            bind.ip(),
            origin.who.audited()
        ));
        let asked = address.to_owned();
        let task = crate::spawn(accept(listener, asked, bound, origin));
        self.open.insert(bound, task);
        Ok(())
    }

    /// Closes the listener on `port`; whether there was one.
    pub fn cancel(&mut self, port: u32) -> bool {
        u16::try_from(port)
            .ok()
            .and_then(|p| self.open.remove(&p))
            .map(|task| task.abort())
            .is_some()
    }
}

/// Each connection to the listener: a `forwarded-tcpip` channel to the
/// client, relayed and recorded as a session.
async fn accept(listener: TcpListener, asked: String, port: u16, origin: Origin) {
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(pair) => pair,
            Err(error) => {
                tracing::debug!(%error, port, "reverse forward accept");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let handle = origin.handle.clone();
        let session = origin
            .reporter
            .session(&origin.who, "reverse-forward", Some(format!("port {port}")));
        let asked = asked.clone();
        crate::spawn(async move {
            let channel = match handle
                .channel_open_forwarded_tcpip(
                    asked,
                    u32::from(port),
                    peer.ip().to_string(),
                    u32::from(peer.port()),
                )
                .await
            {
                Ok(channel) => channel,
                Err(error) => {
                    return tracing::debug!(%error, port, "the client refused a forwarded-tcpip channel");
                }
            };
            crate::relay::relay(
                channel.into_stream(),
                tcp,
                session.bytes_in.clone(),
                session.bytes_out.clone(),
            )
            .await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_address_binds_a_loopback() {
        for (asked, bound) in [
            ("", "127.0.0.1"),
            ("*", "127.0.0.1"),
            ("0.0.0.0", "127.0.0.1"),
            ("10.0.0.5", "127.0.0.1"),
            ("localhost", "127.0.0.1"),
            ("::1", "::1"),
            ("[::1]", "::1"),
        ] {
            assert_eq!(loopback(asked).to_string(), bound, "{asked:?}");
        }
    }
}
