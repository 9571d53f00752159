//! The route table: everything the router's user-facing port answers, in
//! one place, and the layers every request passes through.
//!
//! A request first gets its span, metrics and request id, and a request
//! for a web app's host goes to [`super::webapp`] whatever its path (one
//! layer: [`front`]); anything else is routed by path. User-API handlers ([`super::user`]) take
//! [`super::access::Granted`], which authenticates and authorizes first.
//! Connection limits, TLS and header-read timeouts act earlier, on the
//! connection, in the `server` module (which serves this table).

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, any};
use hatchway_api::tunnel::EKM_LEN;
use hatchway_api::wire;
use http::{HeaderValue, Method, StatusCode, header};
use tracing::Instrument;

use super::Router;
use super::access::no_such_endpoint;
use super::reach::request_id as sane_request_id;
use super::respond::{Body, full_body, text};
use super::{assertion, terminal, tunnel, ui, user, webapp};

/// What a request knows about its connection (a request extension).
#[derive(Clone, Debug)]
pub struct ConnectionInfo {
    /// The client's address.
    pub peer: SocketAddr,
    /// Keying material exported from this TLS session (label
    /// [`hatchway_api::tunnel::EKM_LABEL`], no context): what a tunnel's
    /// proof covers.
    pub ekm: Option<[u8; EKM_LEN]>,
    /// The client's certificate, when it presented one the TLS layer
    /// verified (only the aggregated port asks for one).
    pub client_cert: Option<rustls::pki_types::CertificateDer<'static>>,
}

/// The route a response came from, for metrics (bounded cardinality).
#[derive(Clone, Copy, Debug)]
struct RouteLabel(&'static str);

/// The user-facing port's routes.
pub fn table(router: Arc<Router>) -> axum::Router {
    let container = |action: &str| {
        format!(
            "{}{{namespace}}/containers/{{name}}/{action}",
            wire::USER_API_PREFIX
        )
    };
    axum::Router::new()
        .route(wire::TUNNEL_PATH, labelled("tunnel", any(tunnel_endpoint)))
        .route(
            &container(wire::ACTION_SSH),
            labelled(wire::ACTION_SSH, any(user::shell)),
        )
        .route(
            &container(wire::ACTION_PORTFORWARD),
            labelled(wire::ACTION_PORTFORWARD, any(user::port_forward)),
        )
        .route(
            &container(wire::ACTION_LOG),
            labelled(wire::ACTION_LOG, any(user::log)),
        )
        .route(&container("log/"), labelled(wire::ACTION_LOG, any(user::log)))
        .route(
            &container("log/{*file}"),
            labelled(wire::ACTION_LOG, any(user::log)),
        )
        .route(
            &container(wire::ACTION_WEBLOGIN),
            labelled(wire::ACTION_WEBLOGIN, any(user::web_login)),
        )
        .route(
            &container(wire::ACTION_SESSIONS),
            labelled(wire::ACTION_SESSIONS, any(user::sessions)),
        )
        .route(
            &container(wire::ACTION_TERMINAL),
            labelled(wire::ACTION_TERMINAL, any(terminal::terminal)),
        )
        // The web page (docs/web.md).
        .route("/", labelled("ui", any(ui::asset)))
        .route("/ui/{file}", labelled("ui", any(ui::asset)))
        .route(ui::LOGIN_PATH, labelled("ui", any(ui::login)))
        .route(ui::LOGIN_LINK_PATH, labelled("ui", any(ui::login_link)))
        .route("/ui/logout", labelled("ui", any(ui::logout)))
        .route("/ui/api/whoami", labelled("ui", any(ui::whoami)))
        .route("/ui/api/containers", labelled("ui", any(ui::containers)))
        .route("/healthz", labelled("health", any(health)))
        .route("/readyz", labelled("health", any(health)))
        .route(wire::VERSION_PATH, labelled("health", any(version)))
        .route(assertion::JWKS_PATH, labelled("jwks", any(jwks)))
        .route("/metrics", labelled("metrics", any(metrics_elsewhere)))
        .fallback(other)
        .layer(middleware::from_fn_with_state(router.clone(), front))
        .with_state(router)
}

/// The metrics port's routes: `GET /metrics` and `GET /healthz` (served
/// on a listener of its own by the `server` module).
pub fn metrics_table(router: Arc<Router>) -> axum::Router {
    axum::Router::new().fallback(metrics_port).with_state(router)
}

/// Marks the responses of `route` with `label` (and the request's span).
pub(super) fn labelled(label: &'static str, route: MethodRouter<Arc<Router>>) -> MethodRouter<Arc<Router>> {
    route.layer(middleware::from_fn(move |req: Request, next: Next| async move {
        tracing::Span::current().record("route", label);
        let mut response = next.run(req).await;
        response.extensions_mut().insert(RouteLabel(label));
        response
    }))
}

/// The request's span (method, route, peer, request id; handlers add
/// namespace, container and user), its duration in
/// `hatchway_router_request_duration_seconds`, a log line for every
/// refusal; one sane `X-Hatchway-Request-Id` on every request from here on
/// (the client's, or a fresh one), which goes on to the gateway; and web
/// apps' hosts sent to [`webapp`].
async fn front(State(router): State<Arc<Router>>, req: Request, next: Next) -> Response {
    front_of(router, req, next, true).await
}

/// [`front`] without web apps: the aggregated port's layer.
pub(super) async fn front_api(State(router): State<Arc<Router>>, req: Request, next: Next) -> Response {
    front_of(router, req, next, false).await
}

async fn front_of(router: Arc<Router>, mut req: Request, next: Next, web_apps: bool) -> Response {
    let started = std::time::Instant::now();
    let peer = req
        .extensions()
        .get::<Arc<ConnectionInfo>>()
        .map_or(SocketAddr::from(([0, 0, 0, 0], 0)), |c| c.peer);
    let id = sane_request_id(req.headers());
    // HTTP/2 names the host in `:authority` (the URI), HTTP/1.1 in
    // `Host`: from here on every request has `Host`, so the checks that
    // bind to it (the web page's session and origin) see one way.
    if !req.headers().contains_key(header::HOST)
        && let Some(authority) = req
            .uri()
            .authority()
            .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
    {
        req.headers_mut().insert(header::HOST, authority);
    }
    let span = tracing::info_span!(
        "request",
        method = %req.method(),
        route = tracing::field::Empty,
        peer = %peer,
        request_id = id.to_str().unwrap_or_default(),
        namespace = tracing::field::Empty,
        container = tracing::field::Empty,
        user = tracing::field::Empty,
        status = tracing::field::Empty,
    );
    req.headers_mut().insert(wire::REQUEST_ID, id);
    // Received and answered, at debug: a request a client says went
    // unanswered can be found, and where it stopped (`kubectl hatch`
    // names its request id when an answer does not come).
    span.in_scope(|| tracing::debug!(path = req.uri().path(), "request received"));
    let vhost = if web_apps {
        webapp::vhost(&router, &req)
    } else {
        None
    };
    let response = match vhost {
        Some(vhost) => {
            span.record("route", "webapp");
            let mut response = webapp::serve(router.clone(), req, vhost)
                .instrument(span.clone())
                .await
                .into_response();
            response.extensions_mut().insert(RouteLabel("webapp"));
            response
        }
        None => next.run(req).instrument(span.clone()).await,
    };
    let route = response.extensions().get::<RouteLabel>().map_or("other", |l| l.0);
    let status = response.status();
    span.record("route", route);
    span.record("status", status.as_u16());
    router
        .metrics
        .request_duration
        .with_label_values(&[route])
        .observe(started.elapsed().as_secs_f64());
    if status.is_client_error() || status.is_server_error() {
        span.in_scope(|| tracing::info!(status = status.as_u16(), "request refused"));
    } else {
        span.in_scope(|| {
            tracing::debug!(
                status = status.as_u16(),
                seconds = started.elapsed().as_secs_f64(),
                "request answered"
            )
        });
    }
    response
}

/// `POST /v1/tunnel`: a sidecar's tunnel, proven over this connection's
/// keying material.
async fn tunnel_endpoint(State(router): State<Arc<Router>>, req: Request) -> http::Response<Body> {
    let ekm = req.extensions().get::<Arc<ConnectionInfo>>().and_then(|c| c.ekm);
    tunnel::accept(router, req, ekm).await
}

async fn health() -> http::Response<Body> {
    text(StatusCode::OK, "ok")
}

/// `GET /version`: what `kubectl hatch version` compares with its own.
async fn version() -> http::Response<Body> {
    let body = serde_json::to_string(&server_version()).expect("a version serializes");
    let mut response = http::Response::new(full_body(body));
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

/// `GET /.well-known/jwks.json`: the public keys web apps verify
/// `Hatchway-Jwt-Assertion` with (no credentials needed: they are public).
async fn jwks(State(router): State<Arc<Router>>, method: Method) -> http::Response<Body> {
    if method != Method::GET && method != Method::HEAD {
        return text(StatusCode::METHOD_NOT_ALLOWED, "the key set is read with GET");
    }
    let body = serde_json::to_string(&router.assertions.jwks()).expect("a key set serializes");
    let mut response = http::Response::new(full_body(body));
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    // Keys change once a day and the set holds the next one already.
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=3600"),
    );
    response
}

/// This router's version.
pub fn server_version() -> wire::ServerVersion {
    wire::ServerVersion {
        version: env!("CARGO_PKG_VERSION").to_owned(),
        protocol: hatchway_api::control::PROTOCOL_VERSION,
    }
}

async fn metrics_elsewhere() -> http::Response<Body> {
    text(
        StatusCode::NOT_FOUND,
        "/metrics is served on the metrics port (--metrics-listen, 9443), not on the user-facing one",
    )
}

async fn other(req: Request) -> http::Response<Body> {
    no_such_endpoint(req.uri().path())
}

/// The metrics port's one endpoint (and a health check).
async fn metrics_port(State(router): State<Arc<Router>>, req: Request) -> http::Response<Body> {
    match (req.method(), req.uri().path()) {
        (&Method::GET, "/metrics") => {
            let mut response = http::Response::new(full_body(router.metrics.encode()));
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
