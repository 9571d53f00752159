//! The front door: every request lands in [`handle`], which sends it to the
//! tunnel endpoint, a web-app vhost, the user API, or the health and
//! metrics endpoints, and times it.

use std::sync::Arc;

use hatchway_api::wire;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use hyper::body::Incoming;
use tracing::Instrument;

use super::Router;
use super::respond::{Body, full_body, text};
use super::server::ConnectionInfo;

/// What a user-API path names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContainerPath {
    /// The Container's namespace.
    pub namespace: String,
    /// The Container's name.
    pub name: String,
    /// What is asked of it.
    pub action: Action,
}

/// The user API's actions on a Container.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// `…/ssh`
    Ssh,
    /// `…/portforward`
    PortForward,
    /// `…/log` and `…/log/{file}`: the rest after `log` (`""`, `/`, `/name`).
    Log(String),
    /// `…/weblogin?port=N`: a one-time login link to a private web app.
    WebLogin,
}

/// Parses `/v1/namespaces/{ns}/containers/{name}/{ssh|portforward|log…}`.
/// `None` for any other path.
pub fn parse_path(path: &str) -> Option<ContainerPath> {
    let rest = path.strip_prefix(wire::USER_API_PREFIX)?;
    let mut parts = rest.splitn(4, '/');
    let namespace = parts.next()?;
    if parts.next()? != "containers" {
        return None;
    }
    let name = parts.next()?;
    let tail = parts.next()?;
    if !is_dns_label(namespace) || !is_dns_subdomain(name) {
        return None;
    }
    let action = match tail {
        wire::ACTION_SSH => Action::Ssh,
        wire::ACTION_PORTFORWARD => Action::PortForward,
        wire::ACTION_LOG => Action::Log(String::new()),
        wire::ACTION_WEBLOGIN => Action::WebLogin,
        _ => Action::Log(
            tail.strip_prefix(wire::ACTION_LOG)
                .and_then(|r| r.strip_prefix('/'))
                .map(|r| format!("/{r}"))?,
        ),
    };
    Some(ContainerPath {
        namespace: namespace.to_owned(),
        name: name.to_owned(),
        action,
    })
}

/// The user-visible prefix of a Container's log tree (no trailing slash).
pub fn log_prefix(namespace: &str, name: &str) -> String {
    wire::container_path(namespace, name, wire::ACTION_LOG, &[])
}

fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

fn is_dns_subdomain(s: &str) -> bool {
    s.len() <= 253 && s.split('.').all(is_dns_label)
}

/// What a request is for, decided once per request.
enum Endpoint {
    /// A web app on a vhost.
    WebApp(super::webapp::Vhost),
    /// A sidecar's tunnel.
    Tunnel,
    /// The user API on a Container.
    User(ContainerPath),
    /// `/healthz`, `/readyz`.
    Health,
    /// `/metrics`.
    Metrics,
    /// Anything else.
    Other,
}

impl Endpoint {
    fn of(router: &Router, req: &Request<Incoming>) -> Self {
        if let Some(vhost) = super::webapp::vhost(router, req) {
            return Endpoint::WebApp(vhost);
        }
        let path = req.uri().path();
        if path == wire::TUNNEL_PATH {
            return Endpoint::Tunnel;
        }
        match parse_path(path) {
            Some(container) => Endpoint::User(container),
            None => match path {
                "/healthz" | "/readyz" => Endpoint::Health,
                "/metrics" => Endpoint::Metrics,
                _ => Endpoint::Other,
            },
        }
    }

    /// The route label for metrics and spans (bounded cardinality).
    fn label(&self) -> &'static str {
        match self {
            Endpoint::WebApp(_) => "webapp",
            Endpoint::Tunnel => "tunnel",
            Endpoint::User(p) => match p.action {
                Action::Ssh => wire::ACTION_SSH,
                Action::PortForward => wire::ACTION_PORTFORWARD,
                Action::Log(_) => wire::ACTION_LOG,
                Action::WebLogin => wire::ACTION_WEBLOGIN,
            },
            Endpoint::Health => "health",
            Endpoint::Metrics => "metrics",
            Endpoint::Other => "other",
        }
    }
}

/// Answers one request.
pub async fn handle(
    router: Arc<Router>,
    req: Request<Incoming>,
    conn: Arc<ConnectionInfo>,
) -> Response<Body> {
    let started = std::time::Instant::now();
    let endpoint = Endpoint::of(&router, &req);
    let route = endpoint.label();
    let span = tracing::info_span!(
        "request",
        method = %req.method(),
        route,
        peer = %conn.peer,
        namespace = tracing::field::Empty,
        container = tracing::field::Empty,
        user = tracing::field::Empty,
        status = tracing::field::Empty,
    );
    let response = dispatch(router.clone(), req, conn, endpoint)
        .instrument(span.clone())
        .await;
    span.record("status", response.status().as_u16());
    router
        .metrics
        .request_duration
        .with_label_values(&[route])
        .observe(started.elapsed().as_secs_f64());
    if response.status().is_client_error() || response.status().is_server_error() {
        span.in_scope(|| tracing::info!(status = response.status().as_u16(), "request refused"));
    }
    response
}

async fn dispatch(
    router: Arc<Router>,
    req: Request<Incoming>,
    conn: Arc<ConnectionInfo>,
    endpoint: Endpoint,
) -> Response<Body> {
    match endpoint {
        Endpoint::WebApp(vhost) => super::webapp::serve(router, req, vhost).await,
        Endpoint::Tunnel => super::tunnel::accept(router, req, conn.ekm).await,
        Endpoint::User(path) => {
            let span = tracing::Span::current();
            span.record("namespace", path.namespace.as_str());
            span.record("container", path.name.as_str());
            super::user::serve(router, req, path).await
        }
        Endpoint::Health => text(StatusCode::OK, "ok"),
        Endpoint::Metrics => text(
            StatusCode::NOT_FOUND,
            "/metrics is served on the metrics port (--metrics-listen, 9443), not on the user-facing one",
        ),
        Endpoint::Other => text(
            StatusCode::NOT_FOUND,
            format!(
                "no such endpoint {}: the API is {}{{namespace}}/containers/{{name}}/(ssh|portforward|log/…|weblogin)",
                req.uri().path(),
                wire::USER_API_PREFIX
            ),
        ),
    }
}

/// The metrics port's one endpoint (and a health check): see
/// [`super::server::serve_metrics`].
pub fn metrics_endpoint<B>(router: &Router, req: &Request<B>) -> Response<Body> {
    match (req.method(), req.uri().path()) {
        (&Method::GET, "/metrics") => {
            let mut response = Response::new(full_body(router.metrics.encode()));
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; version=0.0.4"),
            );
            response
        }
        (&Method::GET, "/healthz") => text(StatusCode::OK, "ok"),
        (method, path) => text(
            StatusCode::NOT_FOUND,
            format!("{method} {path}: the metrics port serves GET /metrics only"),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_paths_parse() {
        let p = parse_path("/v1/namespaces/ns1/containers/web-1/ssh").unwrap();
        assert_eq!(
            (p.namespace.as_str(), p.name.as_str(), p.action),
            ("ns1", "web-1", Action::Ssh)
        );
        let p = parse_path("/v1/namespaces/ns1/containers/web-1/portforward").unwrap();
        assert_eq!(p.action, Action::PortForward);
        let p = parse_path("/v1/namespaces/ns1/containers/web-1/weblogin").unwrap();
        assert_eq!(p.action, Action::WebLogin);
        assert_eq!(
            parse_path("/v1/namespaces/a/containers/b/log").unwrap().action,
            Action::Log(String::new())
        );
        assert_eq!(
            parse_path("/v1/namespaces/a/containers/b/log/").unwrap().action,
            Action::Log("/".into())
        );
        assert_eq!(
            parse_path("/v1/namespaces/a/containers/b/log/stdout.txt")
                .unwrap()
                .action,
            Action::Log("/stdout.txt".into())
        );
    }

    #[test]
    fn other_paths_do_not_parse() {
        for bad in [
            "/v1/namespaces/a/containers/b",
            "/v1/namespaces/a/containers/b/exec",
            "/v1/namespaces/a/pods/b/ssh",
            "/v1/namespaces/A/containers/b/ssh",
            "/v1/namespaces/a/containers/b..c/ssh",
            "/v1/namespaces//containers/b/ssh",
            "/v2/namespaces/a/containers/b/ssh",
            "/v1/namespaces/a/containers/b/sshx",
        ] {
            assert_eq!(parse_path(bad), None, "{bad}");
        }
    }

    proptest::proptest! {
        #[test]
        fn user_paths_parse_to_canonical_names_or_nothing(
            path in "/v1/namespaces/\\PC{0,80}|/v1/namespaces/[a-z0-9.-]{0,10}/containers/[a-zA-Z0-9.-]{0,12}/(ssh|portforward|weblogin|log|log/|log/[a-z./%]{0,10}|exec|\\PC{0,6})"
        ) {
            if let Some(p) = parse_path(&path) {
                proptest::prop_assert!(is_dns_label(&p.namespace) && is_dns_subdomain(&p.name), "{p:?}");
                let action = match &p.action {
                    Action::Ssh => "ssh".to_owned(),
                    Action::PortForward => "portforward".to_owned(),
                    Action::WebLogin => "weblogin".to_owned(),
                    Action::Log(rest) if rest.is_empty() => "log".to_owned(),
                    Action::Log(rest) => format!("log{rest}"),
                };
                proptest::prop_assert_eq!(path, format!("/v1/namespaces/{}/containers/{}/{action}", p.namespace, p.name));
            }
        }
    }
}
