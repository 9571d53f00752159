//! Who may do what to which Container, decided before anything is sent:
//! the user-API path, the method, authentication, authorization, the
//! Container itself ([`Granted`], an extractor), and then which way its
//! gateway is reached ([`choose_settled`]).

// A refusal is the response itself, returned once per request: boxing it
// would buy nothing.
#![allow(clippy::result_large_err)]

use std::sync::Arc;
use std::time::Duration;

use axum::extract::FromRequestParts;
use hatchway_api::crd::Container;
use hatchway_api::headers;
use hatchway_api::wire;
use http::request::Parts;
use http::{HeaderMap, HeaderValue, Method, Response, StatusCode, header};

use super::Router;
use super::auth::{self, AuthError, Permission, User};
use super::respond::{Body, text};
use super::select::{self, Purpose, Refusal, RefusalKind, Route};

/// What a user-API path names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContainerPath {
    /// Which way it came: the router's own API or the aggregated one.
    pub api: wire::Api,
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
    /// `…/ssh` (`…/exec` in the aggregated API)
    Ssh,
    /// `…/portforward`
    PortForward,
    /// `…/log` and `…/log/{file}`: the rest after `log` (`""`, `/`, `/name`).
    Log(String),
    /// `…/weblogin?port=N`: a one-time login link to a private web app.
    WebLogin,
    /// `…/sessions`: the caller's resumable sessions (`GET`).
    Sessions,
    /// `…/terminal`: the web page's terminal (a WebSocket; the router's
    /// own API only).
    Terminal,
}

impl Action {
    /// How the gateway is chosen, the permission it needs, and the session
    /// kind for metrics.
    /// Whether the path names the log tree's terminal recordings.
    fn reads_recordings(&self) -> bool {
        use hatchway_api::webdav::Target;
        matches!(self, Action::Log(rest)
            if matches!(Target::parse(rest), Ok(Target::Recordings | Target::Recording(_))))
    }

    fn needs(&self) -> (Purpose, Permission) {
        match self {
            Action::Ssh => (Purpose::Shell, Permission::SHELL),
            Action::PortForward => (Purpose::PortForward, Permission::PORTFORWARD),
            Action::Log(_) => (Purpose::Logs, Permission::LOG),
            Action::WebLogin => (Purpose::Proxy, Permission::PROXY_GET),
            // Only a user who may open a shell has sessions to resume.
            Action::Sessions => (Purpose::Shell, Permission::SHELL),
            Action::Terminal => (Purpose::Shell, Permission::SHELL),
        }
    }
}

/// Parses `/v1/namespaces/{ns}/containers/{name}/{ssh|portforward|log…|weblogin}`
/// or its aggregated twin
/// `/apis/access.hatchway.dev/v1alpha1/namespaces/{ns}/containers/{name}/{exec|portforward|log…|weblogin}`
/// as it came (not percent-decoded). `None` for any other path.
pub fn parse_path(path: &str) -> Option<ContainerPath> {
    let (api, rest) = [wire::Api::Router, wire::Api::Aggregated]
        .into_iter()
        .find_map(|api| path.strip_prefix(api.prefix()).map(|rest| (api, rest)))?;
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
    let (segment, more) = match tail.split_once('/') {
        Some((segment, more)) => (segment, Some(more)),
        None => (tail, None),
    };
    if segment == wire::ACTION_TERMINAL && more.is_none() && api == wire::Api::Router {
        return Some(ContainerPath {
            api,
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            action: Action::Terminal,
        });
    }
    let action = match (api.action(segment)?, more) {
        (wire::ACTION_SSH, None) => Action::Ssh,
        (wire::ACTION_PORTFORWARD, None) => Action::PortForward,
        (wire::ACTION_WEBLOGIN, None) => Action::WebLogin,
        (wire::ACTION_SESSIONS, None) => Action::Sessions,
        (wire::ACTION_LOG, None) => Action::Log(String::new()),
        (wire::ACTION_LOG, Some(more)) => Action::Log(format!("/{more}")),
        _ => return None,
    };
    Some(ContainerPath {
        api,
        namespace: namespace.to_owned(),
        name: name.to_owned(),
        action,
    })
}

/// The user-visible prefix of a Container's log tree (no trailing slash).
pub fn log_prefix(api: wire::Api, namespace: &str, name: &str) -> String {
    api.container_path(namespace, name, wire::ACTION_LOG, &[])
}

pub fn is_dns_label(s: &str) -> bool {
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

/// The 404 for a path the router does not serve.
pub fn no_such_endpoint(path: &str) -> Response<Body> {
    text(
        StatusCode::NOT_FOUND,
        format!(
            "no such endpoint {path}: the API is {}{{namespace}}/containers/{{name}}/(ssh|portforward|log/…|weblogin|sessions)",
            wire::USER_API_PREFIX
        ),
    )
}

/// A user-API request that may go ahead: what it names, who sent it, and
/// the Container as the cache has it.
///
/// Extracting it is the whole check, in this order, each with its own
/// refusal: the path; the method (and the upgrade an upgrade needs); shell
/// access on the cluster; the credentials; authentication; authorization of
/// the Container's subresource; the Container; shell access on it. A CORS
/// preflight of the log tree is answered here too, before credentials
/// (browsers send none with it).
pub struct Granted {
    /// What the path names.
    pub path: ContainerPath,
    /// Who asks.
    pub user: User,
    /// The Container.
    pub container: Container,
}

impl FromRequestParts<Arc<Router>> for Granted {
    /// The refusal (or the preflight's answer), ready to send.
    type Rejection = Response<Body>;

    async fn from_request_parts(parts: &mut Parts, router: &Arc<Router>) -> Result<Self, Self::Rejection> {
        let path = parse_path(parts.uri.path()).ok_or_else(|| no_such_endpoint(parts.uri.path()))?;
        let span = tracing::Span::current();
        span.record("namespace", path.namespace.as_str());
        span.record("container", path.name.as_str());
        check_method(&parts.method, &parts.headers, &path.action)?;
        if matches!(path.action, Action::Log(_)) && is_cors_preflight(&parts.method, &parts.headers) {
            return Err(super::cors::preflight());
        }
        let (purpose, permission) = path.action.needs();
        // 403, not 503: a policy, not an outage (clients retry a 503).
        if purpose == Purpose::Shell && !router.settings.shell_enabled {
            return Err(text(
                StatusCode::FORBIDDEN,
                "shell access is disabled on this cluster (the router's shell setting is off)",
            ));
        }
        let user = match (path.api, parts.extensions.get::<ProxiedUser>()) {
            // Only the aggregated port sets it, after checking the caller.
            (wire::Api::Aggregated, Some(ProxiedUser(user))) => user.clone(),
            // The web page's session, from the page's own origin only;
            // a bearer token otherwise.
            (wire::Api::Router, None) => match router.sessions.page_user(&parts.headers)? {
                Some(user) if auth::from_authorization(&parts.headers).ok().flatten().is_none() => user,
                _ => {
                    let token = credentials(router, &parts.headers)?;
                    authenticate(router, &token).await?
                }
            },
            _ => return Err(no_such_endpoint(parts.uri.path())),
        };
        span.record("user", user.username.as_str());
        authorize(router, &user, &path.namespace, &path.name, permission).await?;
        if path.action.reads_recordings() {
            // A recording shows what a terminal showed: who may read it
            // is who may open (and so watch) one.
            authorize(router, &user, &path.namespace, &path.name, Permission::SHELL).await?;
        }
        let container = lookup(router, &path.namespace, &path.name).await?;
        if purpose == Purpose::Shell && !container.spec.shell {
            return Err(text(
                StatusCode::FORBIDDEN,
                format!(
                    "shell access is disabled for container {}/{} (its spec.shell is false)",
                    path.namespace, path.name
                ),
            ));
        }
        Ok(Granted {
            path,
            user,
            container,
        })
    }
}

/// The user as the Kubernetes API server authenticated them: a request
/// extension that only the aggregated port's front layer sets, after it
/// has checked that the caller is the API server's front proxy (or a peer
/// replica passing such a request on).
#[derive(Clone, Debug)]
pub struct ProxiedUser(pub User);

/// Refuses methods and missing upgrades before anything is looked up.
fn check_method(method: &Method, headers: &HeaderMap, action: &Action) -> Result<(), Response<Body>> {
    let upgrade = headers::wants_upgrade(headers);
    let (protocol, what) = match action {
        Action::WebLogin if method == Method::POST => return Ok(()),
        Action::WebLogin => {
            return Err(text(
                StatusCode::METHOD_NOT_ALLOWED,
                format!("{method} is not allowed: a web-app login link is minted with POST"),
            ));
        }
        Action::Sessions if method == Method::GET => return Ok(()),
        Action::Sessions => {
            return Err(text(
                StatusCode::METHOD_NOT_ALLOWED,
                format!("{method} is not allowed: sessions are listed with GET"),
            ));
        }
        Action::Terminal if method == Method::GET => return Ok(()),
        Action::Terminal => {
            return Err(text(
                StatusCode::METHOD_NOT_ALLOWED,
                format!("{method} is not allowed: the terminal is a WebSocket (GET)"),
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
    // A port-forward may also come in frames (through the API server), or
    // be a UDP flow.
    let framed = matches!(action, Action::PortForward)
        && matches!(
            upgrade.as_deref(),
            Some(wire::UPGRADE_TCP_FRAMED | wire::UPGRADE_UDP)
        );
    if *method != Method::POST || (upgrade.as_deref() != Some(protocol) && !framed) {
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

fn is_cors_preflight(method: &Method, headers: &HeaderMap) -> bool {
    method == Method::OPTIONS && headers.contains_key(header::ACCESS_CONTROL_REQUEST_METHOD)
}

/// The bearer token (or basic-auth password) of a request, or the 401.
fn credentials(router: &Router, headers: &HeaderMap) -> Result<String, Response<Body>> {
    match auth::from_authorization(headers) {
        Ok(Some(credential)) => Ok(credential.token),
        Ok(None) => {
            router
                .metrics
                .auth_failures
                .with_label_values(&["no_credentials"])
                .inc();
            Err(unauthorized(
                "authentication required: send 'Authorization: Bearer <token>' (or HTTP basic auth with the \
                 token as the password)",
            ))
        }
        Err(error) => {
            router
                .metrics
                .auth_failures
                .with_label_values(&["malformed"])
                .inc();
            Err(unauthorized(&error.to_string()))
        }
    }
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
            let what = match name {
                "" => format!("in namespace {namespace}"),
                name => format!("of container {namespace}/{name}"),
            };
            Err(text(
                StatusCode::FORBIDDEN,
                format!(
                    "user {:?} may not {permission} (API group hatchway.dev) {what}",
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
fn choose(
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_paths_parse() {
        let p = parse_path("/v1/namespaces/ns1/containers/web-1/ssh").unwrap();
        assert_eq!(
            (p.api, p.namespace.as_str(), p.name.as_str(), p.action),
            (wire::Api::Router, "ns1", "web-1", Action::Ssh)
        );
        let p =
            parse_path("/apis/access.hatchway.dev/v1alpha1/namespaces/ns1/containers/web-1/exec").unwrap();
        assert_eq!((p.api, p.action), (wire::Api::Aggregated, Action::Ssh));
        let p = parse_path("/apis/access.hatchway.dev/v1alpha1/namespaces/a/containers/b/log/stdout.txt")
            .unwrap();
        assert_eq!(
            (p.api, p.action),
            (wire::Api::Aggregated, Action::Log("/stdout.txt".into()))
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
            "/v1/namespaces/a/containers/b%2Ec/ssh",
            "/v1/namespaces/a/containers/b/ssh/",
            "/v1/namespaces/a/containers/b/portforward/x",
            "/apis/access.hatchway.dev/v1alpha1/namespaces/a/containers/b/ssh",
            "/apis/access.hatchway.dev/v1/namespaces/a/containers/b/exec",
            "/apis/hatchway.dev/v1alpha1/namespaces/a/containers/b/exec",
        ] {
            assert_eq!(parse_path(bad), None, "{bad}");
        }
    }

    proptest::proptest! {
        #[test]
        fn user_paths_parse_to_canonical_names_or_nothing(
            path in "/v1/namespaces/\\PC{0,80}|(/v1|/apis/access.hatchway.dev/v1alpha1)/namespaces/[a-z0-9.-]{0,10}/containers/[a-zA-Z0-9.-]{0,12}/(ssh|exec|portforward|weblogin|sessions|log|log/|log/[a-z./%]{0,10}|\\PC{0,6})"
        ) {
            if let Some(p) = parse_path(&path) {
                proptest::prop_assert!(is_dns_label(&p.namespace) && is_dns_subdomain(&p.name), "{p:?}");
                let action = match &p.action {
                    Action::Ssh => wire::ACTION_SSH.to_owned(),
                    Action::PortForward => "portforward".to_owned(),
                    Action::WebLogin => "weblogin".to_owned(),
                    Action::Sessions => wire::ACTION_SESSIONS.to_owned(),
                    Action::Terminal => wire::ACTION_TERMINAL.to_owned(),
                    Action::Log(rest) if rest.is_empty() => "log".to_owned(),
                    Action::Log(rest) => format!("log{rest}"),
                };
                proptest::prop_assert_eq!(path, p.api.container_path(&p.namespace, &p.name, &action, &[]));
            }
        }
    }
}
