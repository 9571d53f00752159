//! The user API on a Container: `…/ssh`, `…/portforward` and `…/log/…`
//! (DESIGN.md, "Router"). Every request is authenticated, authorized for
//! the Container's subresource, routed by [`super::select`], and refused
//! with a status code and a sentence when it cannot be served.

// A refusal is the response itself, returned once per request: boxing it
// would buy nothing.
#![allow(clippy::result_large_err)]

use std::sync::Arc;
use std::time::Duration;

use hatchway_api::crd::{Container, ContainerStatus};
use hatchway_api::headers;
use hatchway_api::status::MANAGER_SESSION;
use hatchway_api::wire;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, header};
use hyper::body::Incoming;

use super::api::{Action, ContainerPath};
use super::auth::{self, AuthError, Permission, User};
use super::respond::{Body, empty_body, text};
use super::select::{self, Purpose, Refusal, RefusalKind, Route};
use super::{Router, forward, reach, relay};

/// Serves one user-API request.
pub async fn serve(router: Arc<Router>, req: Request<Incoming>, path: ContainerPath) -> Response<Body> {
    let (purpose, permission, kind) = match &path.action {
        Action::Ssh => (Purpose::Shell, Permission::SHELL, "shell"),
        Action::PortForward => (Purpose::PortForward, Permission::PORTFORWARD, "portforward"),
        Action::Log(_) => (Purpose::Logs, Permission::LOG, "logs"),
        Action::WebLogin => (Purpose::Proxy, Permission::PROXY_GET, "weblogin"),
    };
    if let Err(response) = check_method(&req, &path.action) {
        return response;
    }
    if matches!(path.action, Action::Log(_)) && is_cors_preflight(&req) {
        return super::logs::cors_preflight();
    }
    if purpose == Purpose::Shell && !router.settings.shell_enabled {
        return text(
            StatusCode::SERVICE_UNAVAILABLE,
            "shell access is disabled on this cluster (the router's shell setting is off)",
        );
    }
    let token = match auth::from_authorization(req.headers()) {
        Ok(Some(credential)) => credential.token,
        Ok(None) => {
            router
                .metrics
                .auth_failures
                .with_label_values(&["no_credentials"])
                .inc();
            return unauthorized(
                "authentication required: send 'Authorization: Bearer <token>' (or HTTP basic auth with the \
                 token as the password)",
            );
        }
        Err(error) => {
            router
                .metrics
                .auth_failures
                .with_label_values(&["malformed"])
                .inc();
            return unauthorized(&error.to_string());
        }
    };
    let user = match authenticate(&router, &token).await {
        Ok(user) => user,
        Err(response) => return response,
    };
    tracing::Span::current().record("user", user.username.as_str());
    if let Err(response) = authorize(&router, &user, &path.namespace, &path.name, permission).await {
        return response;
    }
    let container = match lookup(&router, &path.namespace, &path.name).await {
        Ok(container) => container,
        Err(response) => return response,
    };
    if purpose == Purpose::Shell && !container.spec.shell {
        return text(
            StatusCode::FORBIDDEN,
            format!(
                "shell access is disabled for container {}/{} (its spec.shell is false)",
                path.namespace, path.name
            ),
        );
    }
    if let Action::Log(rest) = &path.action {
        return super::logs::serve(router, req, container, rest.clone(), user).await;
    }
    if path.action == Action::WebLogin {
        return super::webapp::login_link(&router, &req, &container, &user);
    }

    let (container, route) = choose_settled(&router, container, req.headers(), purpose).await;
    let route = match route {
        Ok(route) => route,
        Err(refusal) => return text(refusal.status, refusal.message),
    };
    let forwarded = matches!(route, Route::Forward(_));
    let mut response = match &route {
        // The peer holding the tunnel records the session itself.
        Route::Forward(url) => forward::forward(router.clone(), req, url, kind).await,
        _ => upgrade_to_gateway(router.clone(), req, &container, &route, &path.action, &user, kind).await,
    };
    // The host key for the CLI's known_hosts, from this replica's status
    // (the same status a peer would read), whichever way the shell went.
    if purpose == Purpose::Shell
        && response.status() == StatusCode::SWITCHING_PROTOCOLS
        && let Some(key) = container
            .status
            .as_ref()
            .and_then(|s| s.gateway.as_ref())
            .and_then(|g| g.host_key.as_deref())
            .and_then(|k| HeaderValue::from_str(k.trim()).ok())
    {
        response.headers_mut().insert(wire::SSH_HOST_KEY, key);
    }
    if purpose == Purpose::Shell
        && !forwarded
        && response.status() == StatusCode::SWITCHING_PROTOCOLS
        && !container
            .status
            .as_ref()
            .is_some_and(|s| s.interactive_session_started)
    {
        record_session_started(router, &path.namespace, &path.name);
    }
    response
}

/// Refuses methods and missing upgrades before anything is looked up.
fn check_method(req: &Request<Incoming>, action: &Action) -> Result<(), Response<Body>> {
    let method = req.method();
    let upgrade = headers::wants_upgrade(req.headers());
    let (protocol, what) = match action {
        Action::WebLogin if method == Method::POST => return Ok(()),
        Action::WebLogin => {
            return Err(text(
                StatusCode::METHOD_NOT_ALLOWED,
                format!("{method} is not allowed: a web-app login link is minted with POST"),
            ));
        }
        Action::Ssh => (wire::UPGRADE_SSH, "a shell"),
        Action::PortForward => (wire::UPGRADE_TCP, "a port-forward"),
        Action::Log(_) => {
            let read_only = [Method::GET, Method::HEAD, Method::OPTIONS];
            if read_only.contains(method) || method.as_str() == "PROPFIND" {
                return Ok(());
            }
            let mut response = text(
                StatusCode::METHOD_NOT_ALLOWED,
                format!("{method} is not allowed: the log tree is read-only"),
            );
            response.headers_mut().insert(
                header::ALLOW,
                HeaderValue::from_static("GET, HEAD, OPTIONS, PROPFIND"),
            );
            return Err(response);
        }
    };
    if *method != Method::POST || upgrade.as_deref() != Some(protocol) {
        return Err(text(
            StatusCode::BAD_REQUEST,
            format!(
                "{what} needs POST over HTTP/1.1 with 'Connection: upgrade' and 'Upgrade: {protocol}' \
                 (got {method}{})",
                upgrade.map(|u| format!(", Upgrade: {u}")).unwrap_or_default()
            ),
        ));
    }
    Ok(())
}

fn is_cors_preflight(req: &Request<Incoming>) -> bool {
    req.method() == Method::OPTIONS && req.headers().contains_key(header::ACCESS_CONTROL_REQUEST_METHOD)
}

/// A 401 that tells WebDAV clients to ask for a password (the token).
pub fn unauthorized(message: &str) -> Response<Body> {
    let mut response = text(StatusCode::UNAUTHORIZED, message);
    let headers = response.headers_mut();
    headers.append(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Basic realm=\"hatchway\", charset=\"UTF-8\""),
    );
    headers.append(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer realm=\"hatchway\""),
    );
    response
}

/// Who owns `token`, or the refusal.
pub async fn authenticate(router: &Router, token: &str) -> Result<User, Response<Body>> {
    match router.auth.authenticate(token).await {
        Ok(user) => Ok(user),
        Err(AuthError::Unauthenticated(reason)) => {
            router
                .metrics
                .auth_failures
                .with_label_values(&["bad_token"])
                .inc();
            Err(unauthorized(&format!("authentication failed: {reason}")))
        }
        Err(error @ AuthError::Unavailable(_)) => {
            router
                .metrics
                .auth_failures
                .with_label_values(&["unavailable"])
                .inc();
            tracing::warn!(%error, "authentication unavailable");
            Err(text(StatusCode::SERVICE_UNAVAILABLE, error.to_string()))
        }
    }
}

/// Whether `user` may `permission` on `namespace/name`, or the refusal (a
/// 403 that names the missing permission).
pub async fn authorize(
    router: &Router,
    user: &User,
    namespace: &str,
    name: &str,
    permission: Permission,
) -> Result<(), Response<Body>> {
    match router.auth.authorize(user, namespace, name, permission).await {
        Ok(true) => Ok(()),
        Ok(false) => {
            router
                .metrics
                .auth_failures
                .with_label_values(&["forbidden"])
                .inc();
            Err(text(
                StatusCode::FORBIDDEN,
                format!(
                    "user {:?} may not {permission} (API group hatchway.dev) of container {namespace}/{name}",
                    user.username
                ),
            ))
        }
        Err(error) => {
            router
                .metrics
                .auth_failures
                .with_label_values(&["unavailable"])
                .inc();
            tracing::warn!(%error, "authorization unavailable");
            Err(text(StatusCode::SERVICE_UNAVAILABLE, error.to_string()))
        }
    }
}

/// The Container, or 404 / 503.
pub async fn lookup(router: &Router, namespace: &str, name: &str) -> Result<Container, Response<Body>> {
    match router.cluster.container(namespace, name).await {
        Ok(Some(container)) => Ok(container),
        Ok(None) => Err(text(
            StatusCode::NOT_FOUND,
            format!("container {namespace}/{name} not found"),
        )),
        Err(error) => {
            tracing::warn!(%error, "reading the container");
            Err(text(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("cannot read container {namespace}/{name} right now: {error}"),
            ))
        }
    }
}

/// [`choose`], waiting up to the tunnel grace while the refusal is one a
/// moving tunnel explains (rolling upgrades, a replica's death): the
/// Container is read again from the cache each time. Returns the Container
/// as last read with the choice.
pub async fn choose_settled(
    router: &Router,
    container: Container,
    headers: &HeaderMap,
    purpose: Purpose,
) -> (Container, Result<Route, Refusal>) {
    let deadline = tokio::time::Instant::now() + router.settings.tunnel_grace;
    let mut container = container;
    loop {
        let choice = choose(router, &container, headers, purpose);
        let moving = matches!(
            &choice,
            Err(r) if matches!(r.kind, RefusalKind::TunnelDown | RefusalKind::UnknownReplica)
        );
        if !moving || tokio::time::Instant::now() >= deadline {
            return (container, choice);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        let namespace = container.metadata.namespace.clone().unwrap_or_default();
        let name = container.metadata.name.clone().unwrap_or_default();
        if let Ok(Some(fresh)) = router.cluster.container(&namespace, &name).await {
            container = fresh;
        }
    }
}

/// Decides the route to `container`'s gateway, counting the outcome.
pub fn choose(
    router: &Router,
    container: &Container,
    headers: &HeaderMap,
    purpose: Purpose,
) -> Result<Route, Refusal> {
    let uid = container.metadata.uid.as_deref().unwrap_or_default();
    let choice = select::select(
        container.status.as_ref(),
        !uid.is_empty() && router.tunnels.contains(uid),
        &router.cluster.replicas(),
        &router.settings.self_url,
        headers.contains_key(wire::NO_FORWARD),
        router.settings.policy,
        purpose,
    );
    let outcome = match &choice {
        Ok(route) => route.as_str(),
        Err(refusal) => refusal.kind.as_str(),
    };
    router.metrics.gateway_choices.with_label_values(&[outcome]).inc();
    tracing::debug!(outcome, purpose = purpose.as_str(), "gateway choice");
    choice
}

/// The query parameters passed on to the gateway, still encoded.
fn pass_params(query: Option<&str>, allowed: &[&str]) -> String {
    query
        .unwrap_or("")
        .split('&')
        .filter(|pair| {
            let key = pair.split_once('=').map_or(*pair, |(k, _)| k);
            allowed.contains(&key)
        })
        .collect::<Vec<_>>()
        .join("&")
}

/// The port of a port-forward, or the refusal.
fn forward_port(query: Option<&str>) -> Result<u16, Response<Body>> {
    let value = query
        .unwrap_or("")
        .split('&')
        .find_map(|pair| pair.strip_prefix("port="))
        .ok_or_else(|| text(StatusCode::BAD_REQUEST, "port-forward needs ?port=N (1-65535)"))?;
    value.parse::<u16>().ok().filter(|p| *p > 0).ok_or_else(|| {
        text(
            StatusCode::BAD_REQUEST,
            format!("port {value:?} is not a TCP port (1-65535)"),
        )
    })
}

/// Opens the gateway connection, sends the upgrade request and relays.
async fn upgrade_to_gateway(
    router: Arc<Router>,
    mut req: Request<Incoming>,
    container: &Container,
    route: &Route,
    action: &Action,
    user: &User,
    kind: &'static str,
) -> Response<Body> {
    let query = req.uri().query();
    let (path, protocol) = match action {
        Action::Ssh => {
            let params = pass_params(query, &[wire::PARAM_LOGIN_USERNAME, wire::PARAM_DETACH_KEYS]);
            (format!("{}?{params}", wire::gateway_path::SSH), wire::UPGRADE_SSH)
        }
        Action::PortForward => match forward_port(query) {
            Ok(port) => (
                format!("{}?port={port}", wire::gateway_path::PORTFORWARD),
                wire::UPGRADE_TCP,
            ),
            Err(response) => return response,
        },
        Action::Log(_) | Action::WebLogin => {
            return text(
                StatusCode::INTERNAL_SERVER_ERROR,
                "logs and login links are not upgrades",
            );
        }
    };
    let request = Request::post(path)
        .header(header::CONNECTION, "upgrade")
        .header(header::UPGRADE, protocol)
        .header(wire::REQUEST_USER, header_safe(&user.username))
        .header(wire::REQUEST_ID, request_id(req.headers()))
        .body(empty_body())
        .expect("a valid request");
    let client = hyper::upgrade::on(&mut req);
    let response = match reach::exchange(&router, container, route, request).await {
        Ok(response) => response,
        Err(refusal) => return refusal,
    };
    // A refusal (e.g. an unknown login user) passes on as the gateway gave it.
    relay::pass_on(router, response, Some(client), kind)
}

/// A header value from arbitrary text (user names are UTF-8; header values
/// are not): non-ASCII is percent-escaped.
pub fn header_safe(s: &str) -> HeaderValue {
    let escaped = percent_encoding::utf8_percent_encode(s, percent_encoding::CONTROLS).to_string();
    HeaderValue::from_str(&escaped).unwrap_or_else(|_| HeaderValue::from_static("?"))
}

/// The request's id: the client's `X-Hatchway-Request-Id` if it sent a
/// sane one, else a fresh one.
pub fn request_id(headers: &HeaderMap) -> HeaderValue {
    headers
        .get(wire::REQUEST_ID)
        .filter(|v| v.len() <= 64 && v.to_str().is_ok_and(|s| s.bytes().all(|b| b.is_ascii_graphic())))
        .cloned()
        .unwrap_or_else(|| {
            let id: u128 = rand::random();
            HeaderValue::from_str(&format!("{id:032x}")).expect("hex is a valid header value")
        })
}

/// Records `interactiveSessionStarted` in the background (a failure is
/// logged; it does not stop the session).
fn record_session_started(router: Arc<Router>, namespace: &str, name: &str) {
    let (namespace, name) = (namespace.to_owned(), name.to_owned());
    tokio::spawn(async move {
        let result = router
            .cluster
            .apply_status(
                &namespace,
                &name,
                MANAGER_SESSION,
                ContainerStatus::session_started(),
            )
            .await;
        let label = if result.is_ok() { "ok" } else { "error" };
        router.metrics.status_writes.with_label_values(&[label]).inc();
        if let Err(error) = result {
            tracing::warn!(%error, namespace, name, "recording interactiveSessionStarted");
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_known_parameters_pass_to_the_gateway() {
        let q = Some("login_username=al%20ice&evil=1&detach_keys=ctrl-a&login_usernamex=2");
        assert_eq!(
            pass_params(q, &[wire::PARAM_LOGIN_USERNAME, wire::PARAM_DETACH_KEYS]),
            "login_username=al%20ice&detach_keys=ctrl-a"
        );
        assert_eq!(pass_params(None, &[wire::PARAM_LOGIN_USERNAME]), "");
    }

    #[test]
    fn port_forward_ports_are_checked() {
        assert_eq!(forward_port(Some("port=8080")).unwrap(), 8080);
        for bad in [
            None,
            Some("port=0"),
            Some("port=70000"),
            Some("port=x"),
            Some("p=1"),
        ] {
            let response = forward_port(bad).unwrap_err();
            assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{bad:?}");
        }
    }

    #[test]
    fn request_ids_are_kept_when_sane_and_made_otherwise() {
        let mut h = HeaderMap::new();
        assert_eq!(request_id(&h).len(), 32);
        h.insert(wire::REQUEST_ID, HeaderValue::from_static("abc-123"));
        assert_eq!(request_id(&h), "abc-123");
        h.insert(wire::REQUEST_ID, HeaderValue::from_static("has space"));
        assert_eq!(request_id(&h).len(), 32);
    }

    #[test]
    fn user_names_become_safe_header_values() {
        assert_eq!(
            header_safe("system:serviceaccount:a:b"),
            "system:serviceaccount:a:b"
        );
        assert_eq!(header_safe("zoë\n"), "zo%C3%AB%0A");
    }
}
