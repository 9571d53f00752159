//! `port-forward NAME [LOCAL:]REMOTE…`: local listeners whose every
//! accepted connection becomes its own `POST …/portforward?port=REMOTE`
//! (`Upgrade: tcp`) through the router. Because each connection is a new
//! request, a router restart or a network blip only delays new connections:
//! they are retried (with backoff, and a message when the router goes away
//! and when it is back) instead of ending the forward, as kubectl's does.
//! A refusal that cannot change (401, 403, 404, 410) ends it with code 2.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use backon::{BackoffBuilder, ExponentialBuilder};
use hatchway_api::wire;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

use hatchway_api::frames::Framed;

use crate::router::{Endpoint, RouterError};

/// Relay buffer per direction: large enough that bulk copies are not
/// bounded by it.
const BUFFER: usize = 256 * 1024;
/// How long one local connection keeps trying to reach the router.
const RETRY_FOR: Duration = Duration::from_secs(60);
/// The longest wait between attempts to reach the router again.
const RETRY_CEILING: Duration = Duration::from_secs(2);
/// The waits between attempts to reach the router again: 100 ms doubling
/// to 2 s.
const RECONNECT: ExponentialBuilder = ExponentialBuilder::new()
    .with_min_delay(Duration::from_millis(100))
    .with_max_delay(RETRY_CEILING)
    .without_max_times();

/// One `[LOCAL:]REMOTE` pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mapping {
    /// 0: any free port.
    pub local: u16,
    pub remote: u16,
}

impl std::str::FromStr for Mapping {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let port = |p: &str, zero_ok: bool| -> Result<u16, String> {
            match p.parse::<u16>() {
                Ok(0) if !zero_ok => Err(format!("{s:?}: the remote port cannot be 0")),
                Ok(n) => Ok(n),
                Err(_) => Err(format!("{s:?} is not [LOCAL:]REMOTE with ports 1-65535")),
            }
        };
        match s.split_once(':') {
            Some((local, remote)) => Ok(Mapping {
                local: if local.is_empty() { 0 } else { port(local, true)? },
                remote: port(remote, false)?,
            }),
            None => {
                let remote = port(s, false)?;
                Ok(Mapping {
                    local: remote,
                    remote,
                })
            }
        }
    }
}

/// What to forward where.
pub struct Forward {
    pub namespace: String,
    pub name: String,
    pub addresses: Vec<IpAddr>,
    pub mappings: Vec<Mapping>,
}

/// Shared by every connection: whether the router is known to be away
/// (so "reconnecting" and "reconnected" are said once per outage), and the
/// channel a permanent refusal ends the forward through.
struct State {
    endpoint: Endpoint,
    namespace: String,
    name: String,
    router_away: AtomicBool,
    fatal: mpsc::Sender<RouterError>,
}

/// Binds every listener, prints where each forwards, and serves until a
/// permanent refusal (returned) or the process is stopped.
pub async fn run(endpoint: Endpoint, forward: Forward) -> anyhow::Result<RouterError> {
    let (fatal, mut fatal_rx) = mpsc::channel(1);
    let state = Arc::new(State {
        endpoint,
        namespace: forward.namespace,
        name: forward.name,
        router_away: AtomicBool::new(false),
        fatal,
    });
    for mapping in &forward.mappings {
        for address in &forward.addresses {
            let listener = TcpListener::bind(SocketAddr::new(*address, mapping.local))
                .await
                .map_err(|e| anyhow::anyhow!("cannot listen on {address}:{}: {e}", mapping.local))?;
            let local = listener.local_addr()?;
            println!("Forwarding from {local} -> {}", mapping.remote);
            tokio::spawn(accept(state.clone(), listener, mapping.remote));
        }
    }
    Ok(fatal_rx.recv().await.expect("the state holds a sender"))
}

async fn accept(state: Arc<State>, listener: TcpListener, remote: u16) {
    loop {
        match listener.accept().await {
            Ok((conn, _)) => {
                let _ = conn.set_nodelay(true);
                tokio::spawn(serve(state.clone(), conn, remote));
            }
            Err(error) => {
                // EMFILE and the like: wait rather than spin.
                eprintln!("kubectl-hatch: accepting a connection failed: {error}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// One local connection: reach the Container's port (retrying while the
/// router is away), then relay until both sides are done.
async fn serve(state: Arc<State>, mut local: TcpStream, remote: u16) {
    let port = remote.to_string();
    let path = state.endpoint.path(
        &state.namespace,
        &state.name,
        wire::ACTION_PORTFORWARD,
        &[(wire::PARAM_PORT, Some(&port))],
    );
    // Through the API server the stream goes in frames: its proxy ends the
    // connection at the first half-close, frames carry one through.
    let framed = matches!(state.endpoint, Endpoint::Aggregated(_));
    let protocol = if framed {
        wire::UPGRADE_TCP_FRAMED
    } else {
        wire::UPGRADE_TCP
    };
    let deadline = Instant::now() + RETRY_FOR;
    let mut delays = RECONNECT.build();
    let mut upstream = loop {
        let delay = delays.next().unwrap_or(RETRY_CEILING);
        match state.endpoint.upgrade(&path, protocol).await {
            Ok(upgraded) => {
                if state.router_away.swap(false, Ordering::SeqCst) {
                    eprintln!("kubectl-hatch: reconnected to the router; forwarding again");
                }
                break upgraded.io;
            }
            Err(error) if error.is_transient() && Instant::now() + delay < deadline => {
                if !state.router_away.swap(true, Ordering::SeqCst) {
                    eprintln!("kubectl-hatch: lost the router ({error}); reconnecting…");
                }
                tokio::time::sleep(delay).await;
            }
            Err(error) if error.exit_code() == 2 => {
                // Will not change by retrying: end the whole forward.
                let _ = state.fatal.try_send(error);
                return;
            }
            Err(error) => {
                eprintln!("kubectl-hatch: port {remote}: {error}");
                return;
            }
        }
    };
    let copied = if framed {
        let mut upstream = Framed::new(upstream);
        tokio::io::copy_bidirectional_with_sizes(&mut local, &mut upstream, BUFFER, BUFFER).await
    } else {
        tokio::io::copy_bidirectional_with_sizes(&mut local, &mut upstream, BUFFER, BUFFER).await
    };
    match copied {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {}
        Err(error) => eprintln!("kubectl-hatch: port {remote}: the connection ended: {error}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mappings_parse_like_kubectls() {
        assert_eq!(
            "8080".parse(),
            Ok(Mapping {
                local: 8080,
                remote: 8080
            })
        );
        assert_eq!(
            "9000:80".parse(),
            Ok(Mapping {
                local: 9000,
                remote: 80
            })
        );
        assert_eq!(":80".parse(), Ok(Mapping { local: 0, remote: 80 }));
        assert_eq!("0:80".parse(), Ok(Mapping { local: 0, remote: 80 }));
        assert!("80:0".parse::<Mapping>().is_err());
        assert!("http".parse::<Mapping>().is_err());
        assert!("1:2:3".parse::<Mapping>().is_err());
        assert!("70000".parse::<Mapping>().is_err());
    }
}
