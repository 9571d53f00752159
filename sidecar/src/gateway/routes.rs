//! The gateway's route table: what the router may ask of this pod, and
//! the layers every request passes through.
//!
//! Every request is proven first ([`front`]: the container UID and the
//! router's proof, then the response proof and the request count); a web
//! app's request (`X-Hatchway-Target-Port`) or a log-tree read the router
//! prefixed (`X-Webdav-Prefix`) is routed by that header whatever its
//! path; anything else by path.
//!
//! The table is built once per gateway and holds no state: each request
//! carries its [`Gateway`] as an extension (a router dials a new gateway
//! connection per request, so nothing may be built per connection).

use std::sync::Arc;

use axum::Extension;
use axum::extract::{FromRequestParts, Request};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use hatchway_api::wire;
use http::request::Parts;
use http::{HeaderMap, HeaderValue, StatusCode, header};

use super::Gateway;
use crate::body::{Body, full, text};
use crate::report::Who;
use crate::resumable::{self, Kind};

/// The gateway's routes; every request must carry an `Arc<Gateway>`
/// extension.
pub fn table() -> axum::Router {
    axum::Router::new()
        .route(wire::gateway_path::SSH, any(shell))
        .route(wire::gateway_path::PORTFORWARD, any(port_forward))
        .route(wire::gateway_path::PORTS, any(ports))
        .route(wire::gateway_path::SESSIONS, any(sessions))
        .route("/log", any(log_tree))
        .route(wire::gateway_path::LOG, any(log_tree))
        .route(&format!("{}{{*file}}", wire::gateway_path::LOG), any(log_tree))
        .fallback(other)
        .layer(middleware::from_fn(front))
}

/// Refuses a request without this container's UID or a valid proof;
/// sends web apps and prefixed log reads on by their header; answers with
/// the response proof. Counts every request by route and status.
async fn front(
    Extension(gateway): Extension<Arc<Gateway>>,
    Extension(proof): Extension<super::Proof>,
    req: Request,
    next: Next,
) -> Response {
    let route = route_name(req.uri().path(), req.headers());
    // Every line logged for the request — and by the tasks it starts —
    // names it by the router's request id (the router logs the same id).
    let span = tracing::info_span!(
        "request",
        route,
        request_id = request_id(req.headers()),
        user = tracing::field::Empty,
    );
    if let Some(user) = req
        .headers()
        .get(wire::REQUEST_USER)
        .and_then(|u| u.to_str().ok())
    {
        span.record("user", user);
    }
    tracing::Instrument::instrument(answer(gateway, proof, req, next, route), span).await
}

/// [`front`] inside the request's span.
async fn answer(
    gateway: Arc<Gateway>,
    proof: super::Proof,
    req: Request,
    next: Next,
    route: &'static str,
) -> Response {
    let started = std::time::Instant::now();
    let response = match gateway.authorize(req.headers(), &proof) {
        Err((status, reason, message)) => {
            gateway.metrics.auth_failures.with_label_values(&[reason]).inc();
            tracing::info!(reason, route, "gateway request refused");
            text(status, message).into_response()
        }
        Ok(answer) => {
            let mut response = by_header(&gateway, req, next).await;
            response
                .headers_mut()
                .insert(wire::AUTHORIZATION_RESPONSE, answer);
            response
        }
    };
    gateway
        .metrics
        .requests
        .with_label_values(&[route, response.status().as_str()])
        .inc();
    tracing::debug!(
        status = response.status().as_u16(),
        elapsed_ms = started.elapsed().as_millis() as u64,
        "request answered"
    );
    response
}

/// The router's `X-Hatchway-Request-Id` when it is a sane one
/// ([`wire::is_sane_request_id`]: it goes into logs), else `-`.
fn request_id(headers: &HeaderMap) -> &str {
    headers
        .get(wire::REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|id| !id.is_empty() && wire::is_sane_request_id(id))
        .unwrap_or("-")
}

/// Web apps and router-prefixed log reads by their header; the rest by path.
async fn by_header(gateway: &Arc<Gateway>, req: Request, next: Next) -> Response {
    if let Some(port) = req.headers().get(wire::TARGET_PORT) {
        let port = port
            .to_str()
            .ok()
            .and_then(|p| p.parse::<u16>().ok())
            .filter(|p| *p > 0);
        return match port {
            Some(port) => web_app(gateway, req, port).await,
            None => text(
                StatusCode::BAD_REQUEST,
                "X-Hatchway-Target-Port is not a TCP port (1-65535)",
            ),
        }
        .into_response();
    }
    if req.headers().contains_key(wire::WEBDAV_PREFIX) {
        return log_tree(Extension(gateway.clone()), req).await.into_response();
    }
    next.run(req).await
}

/// A web-app request, within the share of connections web apps may hold.
async fn web_app(gateway: &Gateway, req: Request, port: u16) -> http::Response<Body> {
    let Ok(slot) = gateway.web_requests.clone().try_acquire_owned() else {
        gateway.metrics.connections_refused.inc();
        return text(
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "this container's web apps already have {} requests in flight, the most the \
                 gateway gives them (shells and logs keep the rest): try again",
                gateway.limits.max_web_requests
            ),
        );
    };
    // A session's first request is its login (web_logins.rs).
    if let Some(tag) = req.headers().get(wire::WEB_SESSION).and_then(|t| t.to_str().ok())
        && gateway.web_logins.first_sight(tag)
    {
        let who = who(req.method(), req.uri(), req.headers());
        gateway.reporter.audit(&format!(
            "web app port {port} login session={tag} {}",
            who.audited()
        ));
    }
    crate::proxy::serve(req, port, slot, &gateway.apps, gateway.limits.body_idle_timeout).await
}

/// `POST /ssh`: an SSH session on the upgraded connection, or the resume
/// of a resumable one.
async fn shell(Extension(gateway): Extension<Arc<Gateway>>, who: Who, req: Request) -> http::Response<Body> {
    if resumable::is_resume(req.headers()) {
        return resume(&gateway, Kind::Shell, who, req).await;
    }
    gateway.ssh.clone().serve(req, who, &gateway.resumable).await
}

/// `POST /portforward?port=N`: a TCP connection to port N, relayed; or
/// the resume of a resumable one.
async fn port_forward(
    Extension(gateway): Extension<Arc<Gateway>>,
    who: Who,
    req: Request,
) -> http::Response<Body> {
    if resumable::is_resume(req.headers()) {
        return resume(&gateway, Kind::Portforward, who, req).await;
    }
    crate::portforward::serve(
        req,
        gateway.reporter.clone(),
        &gateway.resumable,
        &gateway.ssh.forward,
        who,
    )
    .await
}

/// A resume (`Hatchway-Session-Id`, `-Secret`, `-Offset`) on the route of
/// `kind`: `101` with the offset this side received, or the refusal.
async fn resume(gateway: &Gateway, kind: Kind, who: Who, mut req: Request) -> http::Response<Body> {
    let protocol = match kind {
        Kind::Shell => wire::UPGRADE_SSH,
        Kind::Portforward => wire::UPGRADE_TCP,
    };
    if !hatchway_api::headers::upgrade_is(req.headers(), protocol) {
        return text(
            StatusCode::BAD_REQUEST,
            format!("a resume needs `Connection: upgrade` and `Upgrade: {protocol}`"),
        );
    }
    let on_upgrade = hyper::upgrade::on(&mut req);
    match gateway
        .resumable
        .resume(kind, &who, req.headers(), on_upgrade)
        .await
    {
        Ok(offset) => http::Response::builder()
            .status(StatusCode::SWITCHING_PROTOCOLS)
            .header(header::CONNECTION, "upgrade")
            .header(header::UPGRADE, protocol)
            .header(wire::resumable::OFFSET, offset)
            .body(crate::body::empty())
            .unwrap(),
        Err((status, message)) => text(status, message),
    }
}

/// `GET /sessions`: the resumable sessions of the user the router names.
async fn sessions(Extension(gateway): Extension<Arc<Gateway>>, who: Who) -> http::Response<Body> {
    let mut sessions = gateway.resumable.list(Some(&who.user));
    for session in sessions.iter_mut().filter(|s| s.kind == Kind::Shell.as_str()) {
        if let Some(running) = gateway.ssh.terminals.describe(&session.id) {
            session.what = running;
        }
    }
    let terminals = terminals(&gateway).await;
    let body = serde_json::to_string(&wire::SessionList { sessions, terminals }).expect("serializable");
    let mut response = http::Response::new(full(body));
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

/// The running terminals, then the recorded ones that ended.
async fn terminals(gateway: &Gateway) -> Vec<wire::ListedTerminal> {
    let recordings = gateway.ssh.recordings.clone();
    let recorded = tokio::task::spawn_blocking(move || recordings.list())
        .await
        .unwrap_or_default();
    let size = |id: &str| recorded.iter().find(|r| r.id == id).map(|r| r.bytes);
    let mut listed: Vec<wire::ListedTerminal> = gateway
        .ssh
        .terminals
        .live()
        .iter()
        .map(|t| wire::ListedTerminal {
            id: t.id.clone(),
            user: t.user.clone(),
            what: t.what.clone(),
            started: crate::report::rfc3339(t.started),
            live: true,
            recorded: size(&t.id),
        })
        .collect();
    for r in &recorded {
        if !listed.iter().any(|t| t.id == r.id) {
            listed.push(wire::ListedTerminal {
                id: r.id.clone(),
                user: r.user.clone(),
                what: r.what.clone(),
                started: crate::report::rfc3339(r.started),
                live: false,
                recorded: Some(r.bytes),
            });
        }
    }
    listed
}

/// `GET /ports`: the ports listening in the pod.
async fn ports(Extension(gateway): Extension<Arc<Gateway>>) -> http::Response<Body> {
    let ports = gateway.reporter.ports().borrow().clone();
    let body = serde_json::json!({ "ports": ports }).to_string();
    let mut response = http::Response::new(full(body));
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

/// The log tree, read-only WebDAV.
async fn log_tree(Extension(gateway): Extension<Arc<Gateway>>, req: Request) -> http::Response<Body> {
    let who = who(req.method(), req.uri(), req.headers());
    gateway.reporter.audit(&format!("log read {}", who.audited()));
    crate::webdav::serve(&gateway.tree, req.method(), req.uri().path(), req.headers()).await
}

async fn other(req: Request) -> http::Response<Body> {
    text(
        StatusCode::NOT_FOUND,
        format!("no route for {}", req.uri().path()),
    )
}

/// Who the router says asked (informational: the proof shows the router
/// sent it).
impl<S: Sync> FromRequestParts<S> for Who {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(who(&parts.method, &parts.uri, &parts.headers))
    }
}

/// Who the router names on a request, and the route it asks for.
fn who(method: &http::Method, uri: &http::Uri, headers: &HeaderMap) -> Who {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned()
    };
    Who {
        user: header(wire::REQUEST_USER),
        request_id: header(wire::REQUEST_ID),
        replica: header(wire::REQUEST_REPLICA),
        route: format!("{method} {}", uri.path()),
    }
}

/// The route label for metrics (bounded cardinality).
fn route_name(path: &str, headers: &HeaderMap) -> &'static str {
    if headers.contains_key(wire::TARGET_PORT) {
        "proxy"
    } else if headers.contains_key(wire::WEBDAV_PREFIX) || path.starts_with("/log") {
        "log"
    } else {
        match path {
            wire::gateway_path::SSH => "ssh",
            wire::gateway_path::PORTFORWARD => "portforward",
            wire::gateway_path::PORTS => "ports",
            wire::gateway_path::SESSIONS => "sessions",
            _ => "other",
        }
    }
}
