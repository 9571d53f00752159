//! The router's Prometheus metrics (prefix `hatchway_router_`), and the
//! operator's registry for the rest of the process (`hatchway_*`: build
//! info, process metrics, the reconciler's).

use prometheus::{
    HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
};

/// The reasons `auth_failures_total` counts (docs/router.md).
pub const AUTH_FAILURE_REASONS: [&str; 9] = [
    "no_credentials",
    "malformed",
    "bad_token",
    "bad_code",
    "cross_site",
    "forbidden",
    "unavailable",
    "client_connection_limit",
    "not_front_proxy",
];

/// Every metric the router exports, registered in one registry.
#[derive(Clone)]
pub struct Metrics {
    /// The router's registry (every name prefixed `hatchway_router_`).
    pub registry: Registry,
    /// The process's other metrics, unprefixed: `hatchway_build_info`,
    /// `process_*`, and what the reconciler registers. `/metrics` encodes
    /// both registries.
    pub operator: Registry,
    /// `hatchway_tokio_tasks`: tasks alive in the process's runtime, read
    /// at each scrape (a leak of connections or sessions shows here first).
    pub tokio_tasks: IntGauge,
    /// Unix time the serving certificate's validity ends (an alert says
    /// when it nears: a replica issues its own at start; a given one,
    /// `tls.secretName`, is read at start).
    pub certificate_expiry: IntGauge,
    /// Sidecar tunnels held by this replica now.
    pub tunnels_connected: IntGauge,
    /// Tunnel attempts, by result (`accepted`, `replaced`, `bad_request`,
    /// `unknown_container`, `bad_proof`, `over_capacity`, `shutting_down`, `unavailable`).
    pub tunnel_attempts: IntCounterVec,
    /// Streams opened on tunnels.
    pub tunnel_streams: IntCounter,
    /// Control messages received from sidecars, by type.
    pub control_messages: IntCounterVec,
    /// Sessions open now, by kind (`shell`, `portforward`, `websocket`, `logs`, `http`).
    pub sessions_active: IntGaugeVec,
    /// Sessions opened, by kind.
    pub sessions: IntCounterVec,
    /// Bytes relayed through upgraded connections, by direction
    /// (`to_gateway`, `from_gateway`).
    pub bytes: IntCounterVec,
    /// Requests refused for authentication or authorization, by reason.
    pub auth_failures: IntCounterVec,
    /// Gateway selections, by outcome (a route or a refusal kind).
    pub gateway_choices: IntCounterVec,
    /// Requests forwarded to another replica, by result.
    pub forwards: IntCounterVec,
    /// Gateway connections that failed, by kind (`proof_failed`, `connect`, …).
    pub gateway_errors: IntCounterVec,
    /// Gateway connections a request went on: `new` (connected for it)
    /// or `reused` (kept from an earlier request).
    pub gateway_connections: IntCounterVec,
    /// Status writes, by result.
    pub status_writes: IntCounterVec,
    /// Request durations until the response head, by route.
    pub request_duration: HistogramVec,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Creates and registers every metric.
    pub fn new() -> Self {
        let registry = Registry::new_custom(Some("hatchway_router".into()), None).expect("valid prefix");
        fn reg<C: prometheus::core::Collector + Clone + 'static>(r: &Registry, c: C) -> C {
            r.register(Box::new(c.clone())).expect("metric names are unique");
            c
        }
        let counter_vec = |name: &str, help: &str, labels: &[&str]| {
            reg(
                &registry,
                IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric"),
            )
        };
        let operator = Registry::new();
        let build_info = IntGaugeVec::new(
            Opts::new("hatchway_build_info", "Always 1: the operator's version."),
            &["version"],
        )
        .expect("valid metric");
        build_info.with_label_values(&[env!("CARGO_PKG_VERSION")]).set(1);
        reg(&operator, build_info);
        operator
            .register(Box::new(
                prometheus::process_collector::ProcessCollector::for_self(),
            ))
            .expect("metric names are unique");
        let tokio_tasks = reg(
            &operator,
            IntGauge::new(
                "hatchway_tokio_tasks",
                "Tasks alive in the process's async runtime now.",
            )
            .expect("valid metric"),
        );
        let metrics = Self {
            operator,
            tokio_tasks,
            certificate_expiry: reg(
                &registry,
                IntGauge::new(
                    "certificate_expiry_timestamp_seconds",
                    "Unix time the serving certificate's validity ends.",
                )
                .expect("valid metric"),
            ),
            tunnels_connected: reg(
                &registry,
                IntGauge::new("tunnels_connected", "Sidecar tunnels held by this replica now.")
                    .expect("valid metric"),
            ),
            tunnel_attempts: counter_vec(
                "tunnel_attempts_total",
                "Tunnel attempts, by result.",
                &["result"],
            ),
            tunnel_streams: reg(
                &registry,
                IntCounter::new("tunnel_streams_opened_total", "Streams opened on tunnels.")
                    .expect("valid metric"),
            ),
            control_messages: counter_vec(
                "control_messages_total",
                "Control messages received from sidecars, by type.",
                &["type"],
            ),
            sessions_active: reg(
                &registry,
                IntGaugeVec::new(
                    Opts::new("sessions_active", "Sessions open now, by kind."),
                    &["kind"],
                )
                .expect("valid metric"),
            ),
            sessions: counter_vec("sessions_total", "Sessions opened, by kind.", &["kind"]),
            bytes: counter_vec(
                "bytes_total",
                "Bytes relayed through upgraded connections, by direction.",
                &["direction"],
            ),
            auth_failures: counter_vec(
                "auth_failures_total",
                "Requests refused for authentication or authorization, by reason.",
                &["reason"],
            ),
            gateway_choices: counter_vec(
                "gateway_choices_total",
                "Gateway selections, by outcome (a route or a refusal kind).",
                &["outcome"],
            ),
            forwards: counter_vec(
                "forwards_total",
                "Requests forwarded to another replica, by result.",
                &["result"],
            ),
            gateway_errors: counter_vec(
                "gateway_errors_total",
                "Gateway connections that failed, by kind.",
                &["kind"],
            ),
            gateway_connections: counter_vec(
                "gateway_connections_total",
                "Gateway connections requests went on, new or reused (kept open between requests).",
                &["outcome"],
            ),
            status_writes: counter_vec(
                "status_writes_total",
                "Container status writes, by result.",
                &["result"],
            ),
            request_duration: reg(
                &registry,
                HistogramVec::new(
                    HistogramOpts::new(
                        "request_duration_seconds",
                        "Time from a request's arrival to its response head, by route.",
                    )
                    .buckets(vec![
                        0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
                    ]),
                    &["route"],
                )
                .expect("valid metric"),
            ),
            registry,
        };
        // The refusals and failures dashboards and alerts watch, at zero
        // from the start: a rate() of a series that does not exist yet
        // shows nothing rather than 0, and misses the first increment.
        for reason in AUTH_FAILURE_REASONS {
            metrics.auth_failures.with_label_values(&[reason]);
        }
        for kind in [
            "connect",
            "tls",
            "proof_failed",
            "response_timeout",
            "tunnel_down",
        ] {
            metrics.gateway_errors.with_label_values(&[kind]);
        }
        metrics
    }

    /// The Prometheus text exposition of every metric.
    pub fn encode(&self) -> String {
        use prometheus::Encoder;
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            self.tokio_tasks.set(runtime.metrics().num_alive_tasks() as i64);
        }
        let mut out = Vec::new();
        prometheus::TextEncoder::new()
            .encode(
                &[self.registry.gather(), self.operator.gather()].concat(),
                &mut out,
            )
            .expect("text encoding cannot fail");
        String::from_utf8(out).expect("the text format is UTF-8")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The runtime's live tasks are read when `/metrics` is encoded: ten
    /// parked tasks show, and are gone from the next scrape once ended.
    #[tokio::test]
    async fn tokio_tasks_are_counted_at_each_scrape() {
        let metrics = Metrics::new();
        let tasks = |text: &str| -> i64 {
            text.lines()
                .find_map(|l| l.strip_prefix("hatchway_tokio_tasks "))
                .expect("the gauge is exported")
                .parse()
                .unwrap()
        };
        let before = tasks(&metrics.encode());
        let stop = tokio_util::sync::CancellationToken::new();
        let parked: Vec<_> = (0..10)
            .map(|_| {
                let stop = stop.clone();
                tokio::spawn(async move { stop.cancelled().await })
            })
            .collect();
        assert_eq!(tasks(&metrics.encode()), before + 10);
        stop.cancel();
        for task in parked {
            task.await.unwrap();
        }
        assert_eq!(tasks(&metrics.encode()), before);
    }
}
