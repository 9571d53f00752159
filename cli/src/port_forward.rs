//! `port-forward NAME [LOCAL:]REMOTE…`: local listeners whose every
//! accepted connection becomes its own `POST …/portforward?port=REMOTE`
//! (`Upgrade: tcp`) through the router, as a resumable session: a router
//! restart or a network blip neither ends the forward, as kubectl's does,
//! nor the connections it holds (they resume, see [`crate::resumable`]);
//! new connections wait and retry (with backoff, and a message when the
//! router goes away and when it is back). A refusal that cannot change
//! (401, 403, 404, 410) ends the forward with code 2.

use std::io::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use backon::{BackoffBuilder, ExponentialBuilder};
use hatchway_api::wire;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

use crate::resumable::{self, Route};
use crate::router::{Endpoint, RouterError};

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
    /// UDP (`PORT/udp`): datagrams, one flow per local client address.
    pub udp: bool,
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
                udp: false,
            }),
            None => {
                let remote = port(s, false)?;
                Ok(Mapping {
                    local: remote,
                    remote,
                    udp: false,
                })
            }
        }
    }
}

/// One argument's mappings: a `[LOCAL:]REMOTE` pair, or a range of them
/// (`8000-8010`, `9000-9010:8000-8010`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mappings(pub Vec<Mapping>);

/// The most ports one range may name.
const MAX_RANGE: u32 = 1000;

impl IntoIterator for Mappings {
    type Item = Mapping;
    type IntoIter = std::vec::IntoIter<Mapping>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.into_iter()
    }
}

impl std::str::FromStr for Mappings {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let (s, udp) = match text.rsplit_once('/') {
            Some((ports, "udp")) => (ports, true),
            Some((ports, "tcp")) => (ports, false),
            Some(_) => return Err(format!("{text:?}: the protocol is /tcp or /udp")),
            None => (text, false),
        };
        let mut mappings = Self::parse_ports(s)?;
        for mapping in &mut mappings.0 {
            mapping.udp = udp;
        }
        Ok(mappings)
    }
}

impl Mappings {
    /// `[LOCAL:]REMOTE` or a range of them, without a protocol.
    fn parse_ports(s: &str) -> Result<Self, String> {
        if !s.contains('-') {
            return Ok(Mappings(vec![s.parse()?]));
        }
        let range = |r: &str| -> Result<(u16, u16), String> {
            let bad = || format!("{s:?}: {r:?} is not a port range FIRST-LAST (1-65535, FIRST <= LAST)");
            let (a, b) = r.split_once('-').ok_or_else(bad)?;
            let (a, b): (u16, u16) = (a.parse().map_err(|_| bad())?, b.parse().map_err(|_| bad())?);
            if a == 0 || a > b {
                return Err(bad());
            }
            if u32::from(b - a) >= MAX_RANGE {
                return Err(format!("{s:?}: a range names at most {MAX_RANGE} ports"));
            }
            Ok((a, b))
        };
        let (local, remote) = match s.split_once(':') {
            Some((local, remote)) => (range(local)?, range(remote)?),
            None => (range(s)?, range(s)?),
        };
        if local.1 - local.0 != remote.1 - remote.0 {
            return Err(format!("{s:?}: the local and remote ranges differ in length"));
        }
        Ok(Mappings(
            (0..=remote.1 - remote.0)
                .map(|i| Mapping {
                    local: local.0 + i,
                    remote: remote.0 + i,
                    udp: false,
                })
                .collect(),
        ))
    }
}

/// `--address` values: IPs, or `localhost` (127.0.0.1 and ::1).
pub fn addresses(values: &[String]) -> anyhow::Result<Vec<IpAddr>> {
    let mut out = Vec::new();
    for value in values {
        match value.trim() {
            "localhost" => out.extend([
                IpAddr::from([127, 0, 0, 1]),
                IpAddr::from(std::net::Ipv6Addr::LOCALHOST),
            ]),
            ip => out.push(
                ip.parse()
                    .map_err(|_| anyhow::anyhow!("--address {ip:?} is not an IP address or localhost"))?,
            ),
        }
    }
    out.dedup();
    Ok(out)
}

/// What to forward where.
pub struct Forward {
    pub namespace: String,
    pub name: String,
    pub addresses: Vec<IpAddr>,
    pub mappings: Vec<Mapping>,
    /// Each connection a resumable session (else plain).
    pub resumable: bool,
}

/// Shared by every connection: whether the router is known to be away
/// (so "reconnecting" and "reconnected" are said once per outage), and the
/// channel a permanent refusal ends the forward through.
struct State {
    endpoint: Endpoint,
    namespace: String,
    name: String,
    resumable: bool,
    router_away: AtomicBool,
    /// Held connections resuming after a break: said once per outage.
    outage: resumable::Outage,
    fatal: mpsc::Sender<RouterError>,
}

/// What `port-forward NAME` without a port says: the ports the Container
/// listens on (published ones marked), and how to forward one.
pub fn offer(container: &hatchway_api::Container) -> String {
    let name = container.metadata.name.as_deref().unwrap_or("NAME");
    let status = container.status.as_ref();
    let mut ports: Vec<(i32, bool)> = status
        .map(|s| {
            s.listening_ports
                .iter()
                .map(|l| (l.port, s.published_ports.iter().any(|p| p.port == l.port)))
                .collect()
        })
        .unwrap_or_default();
    ports.sort_unstable();
    ports.dedup();
    match ports.first() {
        None => format!(
            "{name} has no port listening that Hatchway has seen; name one: kubectl hatch port-forward {name} PORT\n"
        ),
        Some((first, _)) => {
            let listed: Vec<String> = ports
                .iter()
                .map(|(port, published)| {
                    if *published {
                        format!("{port} (published)")
                    } else {
                        port.to_string()
                    }
                })
                .collect();
            format!(
                "{name} listens on {}. Forward one: kubectl hatch port-forward {name} {first}\n",
                listed.join(", ")
            )
        }
    }
}

/// Binds every listener, prints where each forwards, and serves until a
/// permanent refusal (returned) or the process is stopped.
pub async fn run(endpoint: Endpoint, forward: Forward) -> anyhow::Result<RouterError> {
    let (fatal, mut fatal_rx) = mpsc::channel(1);
    let state = Arc::new(State {
        endpoint,
        namespace: forward.namespace,
        name: forward.name,
        resumable: forward.resumable,
        router_away: AtomicBool::new(false),
        outage: resumable::Outage::default(),
        fatal,
    });
    for mapping in &forward.mappings {
        // Every address listens on the same port (the first one's, when
        // any free port was asked for); like kubectl, an IPv6 loopback
        // this machine lacks is skipped when another address listens.
        let mut port = mapping.local;
        let mut listening = 0;
        for address in &forward.addresses {
            let at = SocketAddr::new(*address, port);
            let bound = if mapping.udp {
                tokio::net::UdpSocket::bind(at).await.map(Listener::Udp)
            } else {
                TcpListener::bind(at).await.map(Listener::Tcp)
            };
            let listener = match bound {
                Ok(listener) => listener,
                Err(e) if address.is_ipv6() && address.is_loopback() && forward.addresses.len() > 1 => {
                    eprintln!("kubectl-hatch: not listening on [{address}]:{port}: {e}");
                    continue;
                }
                Err(e) => anyhow::bail!("cannot listen on {address}:{port}: {e}"),
            };
            let local = listener.local_addr()?;
            port = local.port();
            listening += 1;
            // Whoever started us may stop reading (a script that took the
            // first line): forwarding goes on, unlike after println!'s panic.
            let shown = if mapping.udp {
                format!("{}/udp", mapping.remote)
            } else {
                mapping.remote.to_string()
            };
            let _ = writeln!(std::io::stdout(), "Forwarding from {local} -> {shown}");
            match listener {
                Listener::Tcp(listener) => {
                    tokio::spawn(accept(state.clone(), listener, mapping.remote));
                }
                Listener::Udp(socket) => {
                    let path = state.path(mapping.remote);
                    tokio::spawn(crate::udp_forward::serve(
                        state.endpoint.clone(),
                        path,
                        socket,
                        mapping.remote,
                        state.fatal.clone(),
                    ));
                }
            }
        }
        anyhow::ensure!(listening > 0, "no address to listen on for {}", mapping.remote);
    }
    Ok(fatal_rx.recv().await.expect("the state holds a sender"))
}

/// A bound local port.
enum Listener {
    Tcp(TcpListener),
    Udp(tokio::net::UdpSocket),
}

impl Listener {
    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        match self {
            Listener::Tcp(listener) => listener.local_addr(),
            Listener::Udp(socket) => socket.local_addr(),
        }
    }
}

impl State {
    /// The user API path of a port-forward to `remote`.
    fn path(&self, remote: u16) -> String {
        let port = remote.to_string();
        self.endpoint.path(
            &self.namespace,
            &self.name,
            wire::ACTION_PORTFORWARD,
            &[(wire::PARAM_PORT, Some(&port))],
        )
    }
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
/// router is away), then carry it as a resumable session until both sides
/// are done.
async fn serve(state: Arc<State>, mut local: TcpStream, remote: u16) {
    let path = state.path(remote);
    // Through the API server the stream goes in frames: its proxy ends the
    // connection at the first half-close, frames carry one through.
    let framed = matches!(state.endpoint, Endpoint::Aggregated(_));
    let route = Route {
        endpoint: &state.endpoint,
        path,
        protocol: if framed {
            wire::UPGRADE_TCP_FRAMED
        } else {
            wire::UPGRADE_TCP
        },
        framed,
    };
    let deadline = Instant::now() + RETRY_FOR;
    let mut delays = RECONNECT.build();
    let ask: &[_] = if state.resumable {
        &[resumable::request_header()]
    } else {
        &[]
    };
    let upgraded = loop {
        let delay = delays.next().unwrap_or(RETRY_CEILING);
        match state.endpoint.upgrade(&route.path, route.protocol, ask).await {
            Ok(upgraded) => {
                if state.router_away.swap(false, Ordering::SeqCst) {
                    eprintln!("kubectl-hatch: reconnected to the router; forwarding again");
                }
                break upgraded;
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
    if let Err(error) = resumable::carry(&route, upgraded, &mut local, &state.outage).await {
        eprintln!("kubectl-hatch: port {remote}: the connection ended: {error}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_a_port_the_listening_ones_are_offered() {
        use hatchway_api::crd::{ContainerSpec, ContainerStatus, ListeningPort, PublishedPortStatus};
        let mut c = hatchway_api::Container::new("job", ContainerSpec::default());
        assert_eq!(
            offer(&c),
            "job has no port listening that Hatchway has seen; name one: kubectl hatch port-forward job PORT\n"
        );
        let published: PublishedPortStatus = serde_json::from_value(
            serde_json::json!({"port": 8888, "access": "private", "url": "https://x/"}),
        )
        .unwrap();
        c.status = Some(ContainerStatus {
            listening_ports: [9000, 8888, 5432]
                .map(|port| ListeningPort {
                    port,
                    protocol: "TCP".into(),
                })
                .to_vec(),
            published_ports: vec![published],
            ..ContainerStatus::default()
        });
        assert_eq!(
            offer(&c),
            "job listens on 5432, 8888 (published), 9000. Forward one: kubectl hatch port-forward job 5432\n"
        );
    }

    #[test]
    fn ranges_and_addresses_parse() {
        let m: Mappings = "8000-8002".parse().unwrap();
        assert_eq!(
            m.0,
            [8000, 8001, 8002].map(|p| Mapping {
                local: p,
                remote: p,
                udp: false
            })
        );
        let m: Mappings = "9000-9001:8000-8001".parse().unwrap();
        assert_eq!(
            m.0,
            [
                Mapping {
                    local: 9000,
                    remote: 8000,
                    udp: false
                },
                Mapping {
                    local: 9001,
                    remote: 8001,
                    udp: false
                }
            ]
        );
        let single: Mappings = ":80".parse().unwrap();
        assert_eq!(
            single.0,
            [Mapping {
                local: 0,
                remote: 80,
                udp: false
            }]
        );
        let dns: Mappings = "5353/udp".parse().unwrap();
        assert_eq!(
            dns.0,
            [Mapping {
                local: 5353,
                remote: 5353,
                udp: true
            }]
        );
        let range: Mappings = "7000-7001/udp".parse().unwrap();
        assert!(range.0.len() == 2 && range.0.iter().all(|m| m.udp));
        let tcp: Mappings = "80/tcp".parse().unwrap();
        assert!(!tcp.0[0].udp);
        assert!(
            "80/sctp"
                .parse::<Mappings>()
                .unwrap_err()
                .contains("/tcp or /udp")
        );
        for bad in ["8010-8000", "0-5", "1-2000", "9000-9002:8000-8001", "80-x", "-80"] {
            assert!(bad.parse::<Mappings>().is_err(), "{bad}");
        }
        let both = addresses(&["localhost".into()]).unwrap();
        assert_eq!(
            both,
            ["127.0.0.1".parse::<IpAddr>().unwrap(), "::1".parse().unwrap()]
        );
        assert_eq!(
            addresses(&["10.0.0.1".into()]).unwrap(),
            ["10.0.0.1".parse::<IpAddr>().unwrap()]
        );
        assert!(addresses(&["example.com".into()]).is_err());
    }

    #[test]
    fn mappings_parse_like_kubectls() {
        assert_eq!(
            "8080".parse(),
            Ok(Mapping {
                local: 8080,
                remote: 8080,
                udp: false
            })
        );
        assert_eq!(
            "9000:80".parse(),
            Ok(Mapping {
                local: 9000,
                remote: 80,
                udp: false
            })
        );
        assert_eq!(
            ":80".parse(),
            Ok(Mapping {
                local: 0,
                remote: 80,
                udp: false
            })
        );
        assert_eq!(
            "0:80".parse(),
            Ok(Mapping {
                local: 0,
                remote: 80,
                udp: false
            })
        );
        assert!("80:0".parse::<Mapping>().is_err());
        assert!("http".parse::<Mapping>().is_err());
        assert!("1:2:3".parse::<Mapping>().is_err());
        assert!("70000".parse::<Mapping>().is_err());
    }
}
