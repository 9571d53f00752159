//! The sidecar's Prometheus metrics (prefix `hatchway_sidecar_`).

use prometheus::{IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry};

/// Every metric the sidecar exports, registered in one registry.
#[derive(Clone)]
pub struct Metrics {
    /// The registry `/metrics` encodes.
    pub registry: Registry,
    /// Gateway connections accepted, by source (`direct`, `tunnel`).
    pub connections: IntCounterVec,
    /// Connections refused because the connection limit was reached.
    pub connections_refused: IntCounter,
    /// Gateway requests answered, by route and status code.
    pub requests: IntCounterVec,
    /// Requests refused by the proof check, by reason.
    pub auth_failures: IntCounterVec,
    /// Interactive sessions open now, by kind.
    pub sessions_active: IntGaugeVec,
    /// Interactive sessions opened, by kind.
    pub sessions: IntCounterVec,
    /// Bytes relayed, by direction (`in`: to the container, `out`: from it).
    pub bytes: IntCounterVec,
    /// 1 while the tunnel to the router is up.
    pub tunnel_connected: IntGauge,
    /// Tunnel (re)connection attempts that failed.
    pub tunnel_failures: IntCounter,
    /// Tunnel sessions established.
    pub tunnel_connects: IntCounter,
    /// Streams the router opened through the tunnel.
    pub tunnel_streams: IntCounter,
    /// TCP ports listening in the pod.
    pub listening_ports: IntGauge,
    /// Resumable sessions' events, by outcome (`opened`, `resumed`,
    /// `ended`, `refused_full`, and refused resumes: `unknown`,
    /// `wrong_secret`, `other_user`, `other_kind`, `unrecoverable`).
    pub resumable: IntCounterVec,
    /// Resumable sessions detached now (no connection carries them).
    pub resumable_detached: IntGauge,
    /// Tasks alive in the sidecar's async runtime, read at each scrape.
    pub tokio_tasks: IntGauge,
}

impl Metrics {
    /// Creates and registers every metric.
    pub fn new() -> Self {
        let registry = Registry::new_custom(Some("hatchway_sidecar".into()), None).expect("valid prefix");
        fn reg<C: prometheus::core::Collector + Clone + 'static>(r: &Registry, c: C) -> C {
            r.register(Box::new(c.clone())).expect("metric names are unique");
            c
        }
        let counter_vec = |name: &str, help: &str, labels: &[&str]| {
            IntCounterVec::new(Opts::new(name, help), labels).unwrap()
        };
        Self {
            connections: reg(
                &registry,
                counter_vec("connections_total", "Gateway connections accepted.", &["source"]),
            ),
            connections_refused: reg(
                &registry,
                IntCounter::new(
                    "connections_refused_total",
                    "Connections refused at the connection limit.",
                )
                .unwrap(),
            ),
            requests: reg(
                &registry,
                counter_vec("requests_total", "Gateway requests answered.", &["route", "code"]),
            ),
            auth_failures: reg(
                &registry,
                counter_vec(
                    "auth_failures_total",
                    "Requests refused by the proof check.",
                    &["reason"],
                ),
            ),
            sessions_active: reg(
                &registry,
                IntGaugeVec::new(
                    Opts::new("sessions_active", "Interactive sessions open now."),
                    &["kind"],
                )
                .unwrap(),
            ),
            sessions: reg(
                &registry,
                counter_vec("sessions_total", "Interactive sessions opened.", &["kind"]),
            ),
            bytes: reg(
                &registry,
                counter_vec("bytes_total", "Bytes relayed.", &["direction"]),
            ),
            tunnel_connected: reg(
                &registry,
                IntGauge::new("tunnel_connected", "1 while the tunnel to the router is up.").unwrap(),
            ),
            tunnel_failures: reg(
                &registry,
                IntCounter::new("tunnel_failures_total", "Failed tunnel connection attempts.").unwrap(),
            ),
            tunnel_connects: reg(
                &registry,
                IntCounter::new("tunnel_connects_total", "Tunnel sessions established.").unwrap(),
            ),
            tunnel_streams: reg(
                &registry,
                IntCounter::new("tunnel_streams_total", "Streams opened through the tunnel.").unwrap(),
            ),
            listening_ports: reg(
                &registry,
                IntGauge::new("listening_ports", "TCP ports listening in the pod.").unwrap(),
            ),
            resumable: reg(
                &registry,
                counter_vec(
                    "resumable_sessions_total",
                    "Resumable sessions' events, by outcome.",
                    &["outcome"],
                ),
            ),
            resumable_detached: reg(
                &registry,
                IntGauge::new(
                    "resumable_sessions_detached",
                    "Resumable sessions waiting for their client to come back.",
                )
                .unwrap(),
            ),
            tokio_tasks: reg(
                &registry,
                IntGauge::new("tokio_tasks", "Tasks alive in the sidecar's async runtime now.").unwrap(),
            ),
            registry,
        }
    }

    /// The Prometheus text form of every metric.
    pub fn encode(&self) -> String {
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            self.tokio_tasks.set(runtime.metrics().num_alive_tasks() as i64);
        }
        let mut out = String::new();
        if let Err(error) = prometheus::TextEncoder::new().encode_utf8(&self.registry.gather(), &mut out) {
            tracing::warn!(%error, "encoding metrics");
        }
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
