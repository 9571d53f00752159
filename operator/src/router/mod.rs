//! The router: the user-facing side of every replica (DESIGN.md, "Router").
//!
//! A request arrives at [`server`], which hands it to the route table
//! ([`routes`]): tunnels go to [`tunnel`], web apps to [`webapp`], the user
//! API to [`user`] after [`access`] has authenticated and authorized it
//! ([`auth`]) and looked the Container up ([`cluster`]); [`select`]
//! decides how to reach its gateway, and [`reach`] sends the request there
//! (directly, through a tunnel held here, or by forwarding to the replica
//! that holds it), with the proof exchange of [`upstream`] on every
//! gateway connection.

/// The user-API checks: path, method, authentication, authorization, the
/// Container, the route to its gateway.
pub mod access;
/// The aggregated API: the user API behind the Kubernetes API server.
pub mod apiservice;
/// The signed identity web apps get (`Hatchway-Jwt-Assertion`).
pub mod assertion;
/// Who may do what: TokenReview and SubjectAccessReview, cached.
pub mod auth;
/// What the router reads and writes in the cluster (the `Cluster` trait).
pub mod cluster;
/// CORS for the log tree.
pub mod cors;
/// Forwarding a request to the replica that holds a tunnel.
pub mod forward;
/// A Container's log tree (WebDAV), live or saved.
pub mod logs;
/// `hatchway_router_*`, and the operator's registry.
pub mod metrics;
/// Proofs between replicas passing proxied requests on.
pub mod peer;
/// Gateway connections kept open between requests.
pub mod pool;
/// Sending a request along a chosen route, and passing the answer on.
pub mod reach;
/// Relaying upgraded connections, counted.
pub mod relay;
/// Bodies and refusals.
pub mod respond;
/// The route table and the layers around it.
pub mod routes;
/// Saved logs after the end, streamed from the API server.
pub mod saved;
/// The one decision of how to reach a gateway.
pub mod select;
/// Serving: TLS, HTTP/1.1 and h2, limits, draining.
pub mod server;
/// The router's own web-app sessions and login codes.
pub mod session;
/// The router's settings.
pub mod settings;
/// The web page's terminal: a WebSocket, the router as SSH client.
pub mod terminal;
/// The router's certificate and CA.
pub mod tls;
/// Sidecars' tunnels: the endpoint and the registry.
pub mod tunnel;
/// The web page: its files, login and Container list.
pub mod ui;
/// One gateway connection with the proof exchange.
pub mod upstream;
/// The user API on a Container: shell, port-forward, logs, login links.
pub mod user;
/// Web-app requests in flight per Container, and a queue for the rest.
pub mod web_slots;
/// Web apps on their own hosts.
pub mod webapp;

use std::sync::Arc;

use hatchway_api::proof::RootSecret;
use rustls::ClientConfig;

pub use settings::Settings;

/// Everything a replica's router shares between requests.
pub struct Router {
    /// How it behaves.
    pub settings: Settings,
    /// Containers, status, saved logs, replicas.
    pub cluster: Arc<dyn cluster::Cluster>,
    /// Who may do what.
    pub auth: Arc<dyn auth::Auth>,
    /// The tunnels this replica holds.
    pub tunnels: tunnel::Registry,
    /// Gateway connections kept open between requests.
    pub gateways: pool::GatewayPool,
    /// The spare gateway connections being made (one per gateway at once).
    pub spares: Arc<pool::Spares>,
    /// What `/metrics` reports.
    pub metrics: metrics::Metrics,
    /// Container keys derive from it.
    pub root: RootSecret,
    /// Verifies peer replicas when forwarding.
    pub peer_tls: Arc<ClientConfig>,
    /// Web-app sessions and login codes, signed with keys from `root`.
    pub sessions: session::Sessions,
    /// Web apps' identity assertions, signed with keys from `root`.
    pub assertions: assertion::Signer,
    /// The saved-log reads served at once, and the sizes learnt.
    pub saved_logs: saved::SavedLogReads,
    /// Web-app requests in flight to each Container, and their queue.
    pub web_slots: web_slots::WebSlots,
    /// Cancelled when the replica has drained: the relays it still
    /// carries end then, as they would with the process (resumable
    /// sessions move to another replica).
    pub relays_closing: tokio_util::sync::CancellationToken,
}

impl Router {
    /// A router with these parts.
    pub fn new(
        settings: Settings,
        cluster: Arc<dyn cluster::Cluster>,
        auth: Arc<dyn auth::Auth>,
        root: RootSecret,
        peer_tls: Arc<ClientConfig>,
    ) -> Arc<Self> {
        let tunnels = tunnel::Registry::new(settings.max_tunnels);
        let gateways = pool::GatewayPool::new(settings.gateway_idle, pool::IDLE_PER_GATEWAY);
        let sessions = session::Sessions::new(root.expose_bytes(), settings.web_session_lifetime);
        let saved_logs = saved::SavedLogReads::new(settings.max_saved_log_reads, settings.saved_log_wait);
        let web_slots = web_slots::WebSlots::new(
            settings.max_web_requests_per_container,
            settings.web_queue_timeout,
        );
        Arc::new(Self {
            web_slots,
            assertions: assertion::Signer::new(root.expose_bytes()),
            sessions,
            saved_logs,
            relays_closing: tokio_util::sync::CancellationToken::new(),
            settings,
            cluster,
            auth,
            tunnels,
            gateways,
            spares: Arc::default(),
            metrics: metrics::Metrics::new(),
            root,
            peer_tls,
        })
    }
}
