//! The router's settings (flags and environment variables live in
//! `crate::args`; this is what the router itself needs).

use std::time::Duration;

use super::select::Policy;

/// How the router behaves.
#[derive(Clone, Debug)]
pub struct Settings {
    /// This replica's internal base URL (`https://<pod IP>:<port>`): what
    /// it records as a tunnel's address and what peers forward to.
    pub self_url: String,
    /// This replica's name in the gateways' audit trail: its pod name
    /// (`self_url` when none is known).
    pub replica: String,
    /// The wildcard domain of web-app vhosts (`{uid}-{port}.{domain}`);
    /// `None` turns web apps off.
    pub wildcard_domain: Option<String>,
    /// Cluster-wide: whether anyone may open a shell at all.
    pub shell_enabled: bool,
    /// Whether direct connections are allowed and tunnels preferred.
    pub policy: Policy,
    /// Most tunnels this replica holds.
    pub max_tunnels: usize,
    /// Upgraded connections (shell, port-forward, WebSocket) with no bytes
    /// in either direction for this long are closed.
    pub idle_timeout: Duration,
    /// The TLS server name the replicas' certificate carries: peers verify
    /// it when forwarding, whatever IP they dial.
    pub peer_server_name: String,
    /// How long TokenReview and SubjectAccessReview answers are kept.
    pub auth_cache_ttl: Duration,
    /// How many answers are kept at most.
    pub auth_cache_entries: usize,
    /// Time allowed for a client's TLS handshake and request head.
    pub header_read_timeout: Duration,
    /// Largest request head accepted (HTTP/1.1; 431 above it).
    pub max_header_bytes: usize,
    /// Most client connections served at once.
    pub max_connections: usize,
    /// Most connections served at once from one client address (behind a
    /// proxy that does not keep the client's address, the proxy's).
    pub max_connections_per_client: usize,
    /// Most web-app requests this replica has in flight to one Container
    /// (the rest wait: [`super::web_slots`]).
    pub max_web_requests_per_container: usize,
    /// How long a web-app request waits for one of those before a 503.
    pub web_queue_timeout: Duration,
    /// Time a draining replica gives open requests on shutdown.
    pub drain_timeout: Duration,
    /// How long a request waits for a tunnel that is moving (status names
    /// a replica that is not known yet or gone, or a tunnel this replica
    /// should hold and does not) before it is refused: a rolling upgrade or
    /// a replica's death moves a tunnel in under a second (the sidecar
    /// retries a refused or unanswered connection at once, so kube-proxy
    /// still routing to the dead pod costs a retry, not a backoff), and
    /// the other replicas learn of the new replica from their
    /// EndpointSlice cache a moment later.
    pub tunnel_grace: Duration,
    /// Most saved-log reads (streams from the Kubernetes API) served at
    /// once by this replica.
    pub max_saved_log_reads: usize,
    /// How long a saved-log read waits for a turn before it is refused.
    pub saved_log_wait: Duration,
    /// How long a web-app session (the router's own cookie, minted from a
    /// one-time login code) lasts.
    pub web_session_lifetime: Duration,
    /// The port every replica serves the aggregated API on (peers forward
    /// proxied requests there); `None` when it is not served.
    pub aggregated_port: Option<u16>,
    /// How long an idle gateway connection is kept for the next request
    /// (zero: none is kept). Must stay below the gateways' header timeout
    /// (10 s by default), after which they close it.
    pub gateway_idle: std::time::Duration,
}

impl Settings {
    /// Settings for a replica at `self_url` with every other value at its
    /// default.
    pub fn new(self_url: impl Into<String>) -> Self {
        let self_url = self_url.into();
        Self {
            replica: self_url.clone(),
            self_url,
            wildcard_domain: None,
            shell_enabled: true,
            policy: Policy::prefer(false),
            max_tunnels: 1000,
            idle_timeout: Duration::from_secs(3600),
            peer_server_name: "hatchway-router".to_owned(),
            auth_cache_ttl: Duration::from_secs(10),
            auth_cache_entries: 10_000,
            header_read_timeout: Duration::from_secs(30),
            max_header_bytes: 16 * 1024,
            max_connections: 10_000,
            max_connections_per_client: 1_000,
            max_web_requests_per_container: 128,
            web_queue_timeout: Duration::from_secs(30),
            drain_timeout: Duration::from_secs(30),
            tunnel_grace: Duration::from_secs(2),
            web_session_lifetime: Duration::from_secs(12 * 3600),
            max_saved_log_reads: 16,
            saved_log_wait: Duration::from_secs(10),
            aggregated_port: None,
            gateway_idle: super::pool::IDLE_FOR,
        }
    }
}
