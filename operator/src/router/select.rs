//! The one function that decides how to reach a Container's gateway (like
//! Arvados' findGateway), from its status and what this replica knows. It
//! does no I/O, so every case is a unit test.
//!
//! Order (DESIGN.md, "Router"): a Container that is not running has no
//! gateway (503 not running yet, 410 ended); a direct `ip:port` address is
//! used first (unless the tunnel is preferred and held here); a tunnel held
//! by this replica is used next — even when status still names another
//! replica or no gateway yet, because a held tunnel is live while status can
//! lag a reconnect; otherwise the request is forwarded to the replica named
//! in status, only if that is a known replica and only once
//! (`X-Hatchway-No-Forward`).

use std::net::SocketAddr;

use hatchway_api::crd::{ContainerStatus, Phase};
use hatchway_api::status::tunnel_replica;
use http::StatusCode;

/// What the user asked the gateway for: it changes only the wording of
/// refusals (and which refusals the caller handles itself, for logs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Purpose {
    /// An SSH session.
    Shell,
    /// The WebDAV log directory.
    Logs,
    /// A raw TCP port-forward.
    PortForward,
    /// A web app on a published port.
    Proxy,
}

impl Purpose {
    /// A label for metrics and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Purpose::Shell => "shell",
            Purpose::Logs => "logs",
            Purpose::PortForward => "portforward",
            Purpose::Proxy => "proxy",
        }
    }
}

/// How to reach the gateway.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Route {
    /// Connect to the sidecar's gateway at this address.
    Direct(SocketAddr),
    /// Open a stream on the tunnel this replica holds for the Container.
    LocalTunnel,
    /// Forward the request to the replica at this base URL (no trailing
    /// slash), which holds the tunnel; it must carry `X-Hatchway-No-Forward`.
    Forward(String),
}

impl Route {
    /// A label for metrics and logs.
    pub fn as_str(&self) -> &'static str {
        match self {
            Route::Direct(_) => "direct",
            Route::LocalTunnel => "local_tunnel",
            Route::Forward(_) => "forward",
        }
    }
}

/// Why no route was found; callers and metrics label outcomes by it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RefusalKind {
    /// No status yet, no phase, or Queued. For logs the caller serves an
    /// empty directory instead of refusing.
    NotRunningYet,
    /// Complete, Failed or Cancelled. For logs the caller serves the saved
    /// logs instead of refusing.
    Ended,
    /// Running, but no gateway address in status (and no tunnel here).
    GatewayNotAvailable,
    /// The address in status is neither `ip:port` nor `tunnel <URL>`.
    MalformedAddress,
    /// The tunnel should be held by this replica and is not.
    TunnelDown,
    /// The tunnel is at another replica but this request was already
    /// forwarded once: forwarding again could loop.
    ForwardLoop,
    /// The tunnel address names a URL that is not one of the router's
    /// replicas: forwarding there could hand a user's request to anyone.
    UnknownReplica,
}

impl RefusalKind {
    /// A label for metrics and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            RefusalKind::NotRunningYet => "not_running_yet",
            RefusalKind::Ended => "ended",
            RefusalKind::GatewayNotAvailable => "gateway_not_available",
            RefusalKind::MalformedAddress => "malformed_address",
            RefusalKind::TunnelDown => "tunnel_down",
            RefusalKind::ForwardLoop => "forward_loop",
            RefusalKind::UnknownReplica => "unknown_replica",
        }
    }
}

/// A refusal: the status code and message a user gets, and its kind.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    /// Which case it is.
    pub kind: RefusalKind,
    /// 503 for everything that may resolve itself, 410 for an ended
    /// Container.
    pub status: StatusCode,
    /// A sentence a person understands.
    pub message: String,
}

impl Refusal {
    fn new(kind: RefusalKind, status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            kind,
            status,
            message: message.into(),
        }
    }

    /// Whether the refusal is a tunnel moving between replicas (status
    /// lagging the move, or naming a replica not known yet), which settles
    /// within about a second.
    pub fn is_moving(&self) -> bool {
        matches!(
            self.kind,
            RefusalKind::TunnelDown | RefusalKind::UnknownReplica | RefusalKind::ForwardLoop
        )
    }

    /// The response a client gets: the status and message, and for a
    /// moving tunnel `Retry-After: 1`, which tells clients (`kubectl
    /// hatch`) that trying again at once is worth it, unlike "not running
    /// yet".
    pub fn into_response(self) -> http::Response<super::respond::Body> {
        let moving = self.is_moving();
        let mut response = super::respond::text(self.status, self.message);
        if moving {
            response
                .headers_mut()
                .insert(http::header::RETRY_AFTER, http::HeaderValue::from_static("1"));
        }
        response
    }
}

/// Base URLs compare without a trailing slash: `https://a:8443/` and
/// `https://a:8443` are the same replica.
fn normalize(url: &str) -> &str {
    url.trim().trim_end_matches('/')
}

/// Decides how to reach the gateway of a Container with `status`.
///
/// - `has_local_tunnel`: this replica holds a tunnel for the Container.
/// - `known_replicas`: base URLs of the router's replicas (from its headless
///   Service endpoints); `self_url` is this replica's own.
/// - `already_forwarded`: the request carries `X-Hatchway-No-Forward`.
/// - `policy`: the settings that prefer a held tunnel to a direct address
///   or forbid direct connections.
pub fn select(
    status: Option<&ContainerStatus>,
    has_local_tunnel: bool,
    known_replicas: &[String],
    self_url: &str,
    already_forwarded: bool,
    policy: Policy,
    purpose: Purpose,
) -> Result<Route, Refusal> {
    use RefusalKind::*;
    let unavailable = StatusCode::SERVICE_UNAVAILABLE;

    let phase = status.and_then(|s| s.phase);
    match phase {
        None | Some(Phase::Queued) => {
            return Err(Refusal::new(
                NotRunningYet,
                unavailable,
                "container is not running yet; try again when it is Running",
            ));
        }
        Some(phase) if phase.is_finished() => {
            let what = match purpose {
                Purpose::Shell => "a shell",
                Purpose::Logs => "live logs",
                Purpose::PortForward => "port-forwarding",
                Purpose::Proxy => "its web apps",
            };
            return Err(Refusal::new(
                Ended,
                StatusCode::GONE,
                format!("container has ended ({phase:?}); {what} is no longer available"),
            ));
        }
        Some(_) => {}
    }

    let gateway = status.and_then(|s| s.gateway.as_ref());
    let address = gateway.map(|g| g.address.trim()).filter(|a| !a.is_empty());
    // `address` may itself name a tunnel (the form DESIGN.md gives); the
    // router records its tunnels in `tunnel`, next to the direct address.
    let (direct, address_tunnel) = match address {
        Some(a) => match tunnel_replica(a) {
            Some(url) => (None, Some(url)),
            None => (Some(a), None),
        },
        None => (None, None),
    };
    let tunnel = gateway
        .and_then(|g| g.tunnel.as_deref())
        .map(|t| tunnel_replica(t).unwrap_or(t.trim()))
        .filter(|t| !t.is_empty())
        .or(address_tunnel);

    if let Some(direct) = direct
        && policy.direct_access
        && !(policy.prefer_tunnel && has_local_tunnel)
    {
        return match direct.parse::<SocketAddr>() {
            Ok(addr) => Ok(Route::Direct(addr)),
            Err(_) => Err(Refusal::new(
                MalformedAddress,
                unavailable,
                format!("gateway address {direct:?} is malformed: expected \"ip:port\" or \"tunnel <URL>\""),
            )),
        };
    }
    // A held tunnel is live even when status names another replica (from
    // before a reconnect) or no tunnel yet (status lags the connection).
    if has_local_tunnel {
        return Ok(Route::LocalTunnel);
    }
    let Some(url) = tunnel else {
        let message = if direct.is_some() {
            "gateway not available: direct connections to pods are disabled on this router and the \
             container's tunnel is not connected"
        } else {
            "gateway not available: the container is running but its gateway has not reported yet"
        };
        return Err(Refusal::new(GatewayNotAvailable, unavailable, message));
    };

    let url = normalize(url);
    if !(url.starts_with("https://") || url.starts_with("http://")) || url.contains(char::is_whitespace) {
        return Err(Refusal::new(
            MalformedAddress,
            unavailable,
            format!("gateway tunnel address {url:?} is malformed: expected \"tunnel https://<replica>\""),
        ));
    }
    if url == normalize(self_url) {
        return Err(Refusal::new(
            TunnelDown,
            unavailable,
            "tunnel is down: the container's gateway tunnel to this router is not connected",
        ));
    }
    if already_forwarded {
        return Err(Refusal::new(
            ForwardLoop,
            unavailable,
            format!(
                "tunnel is down: the request was already forwarded once and {url} does not hold the \
                 tunnel either (not forwarding again, to avoid a loop)"
            ),
        ));
    }
    if !known_replicas.iter().any(|r| normalize(r) == url) {
        return Err(Refusal::new(
            UnknownReplica,
            unavailable,
            format!("tunnel endpoint is not a known replica: {url}"),
        ));
    }
    Ok(Route::Forward(url.to_owned()))
}

/// The router's settings that shape the choice.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Policy {
    /// Use a tunnel held here even when a direct address is known.
    pub prefer_tunnel: bool,
    /// Connect to pods' addresses directly at all (off when the router
    /// cannot reach pods: only tunnels are used).
    pub direct_access: bool,
}

impl Policy {
    /// Direct access allowed; the tunnel preferred or not.
    pub const fn prefer(prefer_tunnel: bool) -> Self {
        Self {
            prefer_tunnel,
            direct_access: true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hatchway_api::crd::GatewayStatus;

    const SELF: &str = "https://10.0.0.1:8443";
    const OTHER: &str = "https://10.0.0.2:8443";

    fn replicas() -> Vec<String> {
        vec![SELF.to_owned(), OTHER.to_owned()]
    }

    fn status(phase: Option<Phase>, address: Option<&str>) -> ContainerStatus {
        ContainerStatus {
            phase,
            gateway: address.map(|a| GatewayStatus {
                address: a.to_owned(),
                ..GatewayStatus::default()
            }),
            ..ContainerStatus::default()
        }
    }

    fn running(address: &str) -> ContainerStatus {
        status(Some(Phase::Running), Some(address))
    }

    /// `select` with the common defaults: no local tunnel, not forwarded,
    /// no tunnel preference, a shell.
    fn pick(status: &ContainerStatus) -> Result<Route, Refusal> {
        select(
            Some(status),
            false,
            &replicas(),
            SELF,
            false,
            Policy::prefer(false),
            Purpose::Shell,
        )
    }

    fn refusal(result: Result<Route, Refusal>) -> Refusal {
        result.expect_err("a refusal")
    }

    #[test]
    fn a_container_without_status_is_not_running_yet() {
        let r = refusal(select(
            None,
            false,
            &replicas(),
            SELF,
            false,
            Policy::prefer(false),
            Purpose::Shell,
        ));
        assert_eq!(r.kind, RefusalKind::NotRunningYet);
        assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(r.message.contains("not running yet"), "{}", r.message);
    }

    #[test]
    fn a_status_without_a_phase_is_not_running_yet() {
        let r = refusal(pick(&status(None, Some("10.1.2.3:9000"))));
        assert_eq!(r.kind, RefusalKind::NotRunningYet);
    }

    #[test]
    fn a_queued_container_is_not_running_yet_even_with_a_local_tunnel() {
        let s = status(Some(Phase::Queued), None);
        for purpose in [
            Purpose::Shell,
            Purpose::Logs,
            Purpose::PortForward,
            Purpose::Proxy,
        ] {
            let r = refusal(select(
                Some(&s),
                true,
                &replicas(),
                SELF,
                false,
                Policy::prefer(false),
                purpose,
            ));
            assert_eq!(r.kind, RefusalKind::NotRunningYet, "{purpose:?}");
            assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
        }
    }

    #[test]
    fn a_finished_container_is_gone_for_every_purpose_and_phase() {
        for phase in [Phase::Complete, Phase::Failed, Phase::Cancelled] {
            for purpose in [
                Purpose::Shell,
                Purpose::Logs,
                Purpose::PortForward,
                Purpose::Proxy,
            ] {
                // Even with a stale gateway address and a tunnel still held.
                let s = status(Some(phase), Some("10.1.2.3:9000"));
                let r = refusal(select(
                    Some(&s),
                    true,
                    &replicas(),
                    SELF,
                    false,
                    Policy::prefer(false),
                    purpose,
                ));
                assert_eq!(r.kind, RefusalKind::Ended, "{phase:?} {purpose:?}");
                assert_eq!(r.status, StatusCode::GONE);
                assert!(r.message.contains("container has ended"), "{}", r.message);
            }
        }
    }

    #[test]
    fn logs_of_an_ended_container_get_a_distinct_kind_so_the_caller_serves_saved_logs() {
        let s = status(Some(Phase::Complete), None);
        let r = refusal(select(
            Some(&s),
            false,
            &[],
            SELF,
            false,
            Policy::prefer(false),
            Purpose::Logs,
        ));
        assert_eq!(r.kind, RefusalKind::Ended);
        assert!(r.message.contains("live logs"), "{}", r.message);
    }

    #[test]
    fn a_running_container_without_a_gateway_is_refused_as_gateway_not_available() {
        for s in [status(Some(Phase::Running), None), running(""), running("   ")] {
            let r = refusal(pick(&s));
            assert_eq!(r.kind, RefusalKind::GatewayNotAvailable);
            assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
            assert!(r.message.contains("gateway not available"), "{}", r.message);
        }
    }

    #[test]
    fn a_running_container_without_a_gateway_in_status_uses_a_tunnel_held_here() {
        let s = status(Some(Phase::Running), None);
        let route = select(
            Some(&s),
            true,
            &replicas(),
            SELF,
            false,
            Policy::prefer(false),
            Purpose::Shell,
        );
        assert_eq!(route, Ok(Route::LocalTunnel));
    }

    #[test]
    fn a_direct_address_is_used_directly() {
        assert_eq!(
            pick(&running("10.1.2.3:9000")),
            Ok(Route::Direct("10.1.2.3:9000".parse().unwrap()))
        );
    }

    #[test]
    fn an_ipv6_direct_address_is_used_directly() {
        assert_eq!(
            pick(&running("[fd00::7]:9000")),
            Ok(Route::Direct("[fd00::7]:9000".parse().unwrap()))
        );
    }

    #[test]
    fn a_direct_address_wins_over_a_local_tunnel_unless_the_tunnel_is_preferred() {
        let s = running("10.1.2.3:9000");
        let direct = select(
            Some(&s),
            true,
            &replicas(),
            SELF,
            false,
            Policy::prefer(false),
            Purpose::Proxy,
        );
        assert_eq!(direct, Ok(Route::Direct("10.1.2.3:9000".parse().unwrap())));
        let tunnel = select(
            Some(&s),
            true,
            &replicas(),
            SELF,
            false,
            Policy::prefer(true),
            Purpose::Proxy,
        );
        assert_eq!(tunnel, Ok(Route::LocalTunnel));
    }

    #[test]
    fn preferring_the_tunnel_without_holding_one_still_goes_direct() {
        let s = running("10.1.2.3:9000");
        let route = select(
            Some(&s),
            false,
            &replicas(),
            SELF,
            false,
            Policy::prefer(true),
            Purpose::Shell,
        );
        assert_eq!(route, Ok(Route::Direct("10.1.2.3:9000".parse().unwrap())));
    }

    #[test]
    fn a_tunnel_to_this_replica_uses_the_local_tunnel_when_held() {
        let s = running(&format!("tunnel {SELF}"));
        let route = select(
            Some(&s),
            true,
            &replicas(),
            SELF,
            false,
            Policy::prefer(false),
            Purpose::Shell,
        );
        assert_eq!(route, Ok(Route::LocalTunnel));
    }

    #[test]
    fn a_tunnel_to_this_replica_that_is_not_held_is_down() {
        let r = refusal(pick(&running(&format!("tunnel {SELF}"))));
        assert_eq!(r.kind, RefusalKind::TunnelDown);
        assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(r.message.contains("tunnel is down"), "{}", r.message);
    }

    #[test]
    fn a_trailing_slash_does_not_make_this_replica_a_stranger() {
        let s = running(&format!("tunnel {SELF}/"));
        let route = select(
            Some(&s),
            true,
            &[],
            SELF,
            false,
            Policy::prefer(false),
            Purpose::Shell,
        );
        assert_eq!(route, Ok(Route::LocalTunnel));
        let r = refusal(select(
            Some(&s),
            false,
            &[],
            &format!("{SELF}/"),
            false,
            Policy::prefer(false),
            Purpose::Shell,
        ));
        assert_eq!(r.kind, RefusalKind::TunnelDown);
    }

    #[test]
    fn a_tunnel_at_another_known_replica_is_forwarded_there() {
        assert_eq!(
            pick(&running(&format!("tunnel {OTHER}"))),
            Ok(Route::Forward(OTHER.to_owned()))
        );
        // Normalized: the forward target has no trailing slash.
        assert_eq!(
            pick(&running(&format!("tunnel {OTHER}/"))),
            Ok(Route::Forward(OTHER.to_owned()))
        );
    }

    /// A moving tunnel's refusal tells clients to try again at once
    /// (`Retry-After`); "not running yet" and an ended Container do not.
    #[test]
    fn only_a_moving_tunnel_says_retry_after() {
        let moving = refusal(select(
            Some(&running(&format!("tunnel {OTHER}"))),
            false,
            &replicas(),
            SELF,
            true,
            Policy::prefer(false),
            Purpose::PortForward,
        ));
        assert!(moving.is_moving());
        let response = moving.into_response();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(response.headers()[http::header::RETRY_AFTER], "1");
        for phase in [None, Some(Phase::Queued), Some(Phase::Complete)] {
            let status = phase.map(|phase| ContainerStatus {
                phase: Some(phase),
                ..Default::default()
            });
            let r = refusal(select(
                status.as_ref(),
                false,
                &replicas(),
                SELF,
                false,
                Policy::prefer(false),
                Purpose::Shell,
            ));
            assert!(!r.is_moving(), "{phase:?}");
            assert!(
                !r.into_response()
                    .headers()
                    .contains_key(http::header::RETRY_AFTER)
            );
        }
    }

    #[test]
    fn a_tunnel_at_another_replica_is_not_forwarded_twice() {
        let s = running(&format!("tunnel {OTHER}"));
        let r = refusal(select(
            Some(&s),
            false,
            &replicas(),
            SELF,
            true,
            Policy::prefer(false),
            Purpose::PortForward,
        ));
        assert_eq!(r.kind, RefusalKind::ForwardLoop);
        assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(r.message.contains("tunnel is down"), "{}", r.message);
        assert!(r.message.contains("already forwarded"), "{}", r.message);
    }

    #[test]
    fn a_tunnel_at_an_unknown_url_is_never_forwarded() {
        let s = running("tunnel https://evil.example:8443");
        let r = refusal(pick(&s));
        assert_eq!(r.kind, RefusalKind::UnknownReplica);
        assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(
            r.message.contains("tunnel endpoint is not a known replica"),
            "{}",
            r.message
        );
        // Not even when no replicas are known at all.
        let r = refusal(select(
            Some(&running(&format!("tunnel {OTHER}"))),
            false,
            &[],
            SELF,
            false,
            Policy::prefer(false),
            Purpose::Shell,
        ));
        assert_eq!(r.kind, RefusalKind::UnknownReplica);
    }

    #[test]
    fn a_tunnel_held_here_wins_over_a_stale_address_naming_another_replica() {
        let s = running(&format!("tunnel {OTHER}"));
        // Even when the request was already forwarded: the tunnel is here.
        let route = select(
            Some(&s),
            true,
            &replicas(),
            SELF,
            true,
            Policy::prefer(false),
            Purpose::Shell,
        );
        assert_eq!(route, Ok(Route::LocalTunnel));
    }

    #[test]
    fn a_malformed_address_is_refused_with_a_clear_message() {
        for bad in [
            "10.1.2.3",
            "not an address",
            "10.1.2.3:99999",
            "tunnel ",
            "tunnel ftp://x",
            "tunnel https://a b",
        ] {
            let r = refusal(pick(&running(bad)));
            assert_eq!(r.kind, RefusalKind::MalformedAddress, "{bad:?}");
            assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
            assert!(r.message.contains("malformed"), "{bad:?}: {}", r.message);
        }
    }

    fn with_tunnel(address: &str, tunnel: &str) -> ContainerStatus {
        let mut s = running(address);
        s.gateway.as_mut().unwrap().tunnel = Some(tunnel.to_owned());
        s
    }

    #[test]
    fn the_tunnel_field_is_used_when_direct_access_is_off() {
        let s = with_tunnel("10.1.2.3:7443", &format!("tunnel {OTHER}"));
        let tunnel_only = Policy {
            prefer_tunnel: false,
            direct_access: false,
        };
        let route = select(
            Some(&s),
            false,
            &replicas(),
            SELF,
            false,
            tunnel_only,
            Purpose::Shell,
        );
        assert_eq!(route, Ok(Route::Forward(OTHER.to_owned())));
        let route = select(
            Some(&s),
            true,
            &replicas(),
            SELF,
            false,
            tunnel_only,
            Purpose::Shell,
        );
        assert_eq!(route, Ok(Route::LocalTunnel));
        // With direct access on, the direct address still comes first.
        assert_eq!(pick(&s), Ok(Route::Direct("10.1.2.3:7443".parse().unwrap())));
    }

    #[test]
    fn a_direct_address_alone_is_not_available_when_direct_access_is_off() {
        let s = running("10.1.2.3:7443");
        let tunnel_only = Policy {
            prefer_tunnel: false,
            direct_access: false,
        };
        let r = refusal(select(
            Some(&s),
            false,
            &replicas(),
            SELF,
            false,
            tunnel_only,
            Purpose::Shell,
        ));
        assert_eq!(r.kind, RefusalKind::GatewayNotAvailable);
        assert!(
            r.message.contains("direct connections to pods are disabled"),
            "{}",
            r.message
        );
    }

    #[test]
    fn a_tunnel_field_naming_this_replica_without_a_tunnel_is_down() {
        let s = with_tunnel("", &format!("tunnel {SELF}/"));
        let r = refusal(pick(&s));
        assert_eq!(r.kind, RefusalKind::TunnelDown);
        assert_eq!(
            r.message,
            "tunnel is down: the container's gateway tunnel to this router is not connected"
        );
    }

    #[test]
    fn labels_are_stable_for_metrics() {
        assert_eq!(Purpose::PortForward.as_str(), "portforward");
        assert_eq!(Route::LocalTunnel.as_str(), "local_tunnel");
        assert_eq!(RefusalKind::UnknownReplica.as_str(), "unknown_replica");
    }
}
