//! Web apps on `https://{uid}-{port}.{wildcard domain}/`: HTTP and
//! WebSockets proxied to a port inside the container.
//!
//! A public published port needs no credentials. Any other port is
//! private: a link carrying `?hatchway_token=…` is checked once, the token
//! is put in a host-only HttpOnly Secure SameSite cookie, and the browser
//! is redirected to the same URL without it; later requests authenticate
//! with the cookie. The token and the cookie never reach the container; the
//! `Authorization` header is the app's business and passes unchanged.

use std::sync::Arc;

use hatchway_api::crd::{Container, PortAccess};
use hatchway_api::wire;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::BodyExt;
use hyper::body::Incoming;

use super::auth::{self, Permission};
use super::respond::{Body, empty_body, text};
use super::select::{Purpose, Route};
use super::user::{authenticate, authorize, choose_settled, header_safe, request_id};
use super::{Router, forward, reach, relay};

/// A vhost's Container UID and port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Vhost {
    /// The Container's UID.
    pub uid: String,
    /// The port inside the container.
    pub port: u16,
    /// The request's host (no port), as the browser sent it.
    pub host: String,
}

/// The request's host, from `Host` (HTTP/1.1) or the URI (HTTP/2),
/// lowercased, without a port.
fn request_host<B>(req: &Request<B>) -> Option<String> {
    let raw = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| req.uri().authority().map(|a| a.as_str()))?;
    let host = match raw.rsplit_once(':') {
        Some((host, port)) if !host.ends_with(']') && port.bytes().all(|b| b.is_ascii_digit()) => host,
        _ => raw,
    };
    Some(host.trim_end_matches('.').to_ascii_lowercase())
}

/// The vhost a request is for, if its host is `{uid}-{port}.{domain}`.
pub fn vhost<B>(router: &Router, req: &Request<B>) -> Option<Vhost> {
    // The domain may carry the port users reach the router on (a NodePort:
    // `apps.example:30443`); the Host header's port is not compared.
    let domain = router.settings.wildcard_domain.as_deref()?;
    let domain = domain.rsplit_once(':').map_or(domain, |(host, _)| host);
    let host = request_host(req)?;
    let label = host.strip_suffix(domain)?.strip_suffix('.')?;
    if label.contains('.') {
        return None;
    }
    let (uid, port) = label.rsplit_once('-')?;
    let port = port.parse::<u16>().ok().filter(|p| *p > 0)?;
    if uid.is_empty() || !uid.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-') {
        return None;
    }
    Some(Vhost {
        uid: uid.to_owned(),
        port,
        host,
    })
}

/// The URL of a web app.
pub fn url(domain: &str, uid: &str, port: u16, path: &str) -> String {
    let path = if path.starts_with('/') {
        path.to_owned()
    } else {
        format!("/{path}")
    };
    format!("https://{uid}-{port}.{domain}{path}")
}

/// Serves a web-app request for `vhost` (its host already matched).
pub async fn serve(router: Arc<Router>, req: Request<Incoming>, vhost: Vhost) -> Response<Body> {
    let container = match router.cluster.container_by_uid(&vhost.uid).await {
        Ok(Some(container)) => container,
        Ok(None) => {
            return text(
                StatusCode::NOT_FOUND,
                format!("no container has the id {} (it may have been deleted)", vhost.uid),
            );
        }
        Err(error) => {
            return text(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("cannot read the container: {error}"),
            );
        }
    };
    let namespace = container.metadata.namespace.clone().unwrap_or_default();
    let name = container.metadata.name.clone().unwrap_or_default();
    let span = tracing::Span::current();
    span.record("namespace", namespace.as_str());
    span.record("container", name.as_str());

    if let Some((token, rest)) = take_token(req.uri().query()) {
        return token_to_cookie(&router, &req, &vhost, &namespace, &name, &token, rest).await;
    }
    let public = container
        .spec
        .published_ports
        .iter()
        .any(|p| p.port == i32::from(vhost.port) && p.access == PortAccess::Public);
    if !public {
        let Some(credential) = auth::from_cookie(req.headers()) else {
            router
                .metrics
                .auth_failures
                .with_label_values(&["no_credentials"])
                .inc();
            return text(
                StatusCode::UNAUTHORIZED,
                format!(
                    "port {} of container {namespace}/{name} is private: open it with \
                     'kubectl hatch open {name} {} -n {namespace}'",
                    vhost.port, vhost.port
                ),
            );
        };
        let user = match authenticate(&router, &credential.token).await {
            Ok(user) => user,
            Err(response) => return response,
        };
        tracing::Span::current().record("user", user.username.as_str());
        let permission = permission_for(req.method(), req.headers());
        if let Err(response) = authorize(&router, &user, &namespace, &name, permission).await {
            return response;
        }
    }

    let (container, route) = choose_settled(&router, container, req.headers(), Purpose::Proxy).await;
    let route = match route {
        Ok(route) => route,
        Err(refusal) => return text(refusal.status, refusal.message),
    };
    let kind = if relay::wants_upgrade(req.headers()).is_some() {
        "websocket"
    } else {
        "http"
    };
    if let Route::Forward(url) = &route {
        return forward::forward(router.clone(), req, url, kind).await;
    }
    proxy(router, req, &container, &route, &vhost, kind).await
}

/// GET, HEAD and OPTIONS read; everything else (WebSockets included) writes.
fn permission_for(method: &Method, headers: &HeaderMap) -> Permission {
    let reads = [Method::GET, Method::HEAD, Method::OPTIONS];
    if reads.contains(method) && relay::wants_upgrade(headers).is_none() {
        Permission::PROXY_GET
    } else {
        Permission::PROXY_CREATE
    }
}

/// Splits `hatchway_token` out of a query: the token and the query left.
fn take_token(query: Option<&str>) -> Option<(String, String)> {
    let query = query?;
    let mut token = None;
    let mut rest = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        match pair.split_once('=') {
            Some((key, value)) if key == wire::PARAM_TOKEN => {
                token = percent_encoding::percent_decode_str(value)
                    .decode_utf8()
                    .ok()
                    .map(|t| t.into_owned());
            }
            _ => rest.push(pair),
        }
    }
    Some((token?, rest.join("&")))
}

/// Checks a link's token, sets the cookie and redirects without the token.
async fn token_to_cookie(
    router: &Router,
    req: &Request<Incoming>,
    vhost: &Vhost,
    namespace: &str,
    name: &str,
    token: &str,
    rest: String,
) -> Response<Body> {
    let user = match authenticate(router, token).await {
        Ok(user) => user,
        Err(response) => return response,
    };
    if let Err(response) = authorize(router, &user, namespace, name, Permission::PROXY_GET).await {
        return response;
    }
    let path = req.uri().path();
    let location = if rest.is_empty() {
        path.to_owned()
    } else {
        format!("{path}?{rest}")
    };
    let cookie = format!(
        "{}={}; Path=/; Secure; HttpOnly; SameSite=Lax",
        wire::COOKIE_TOKEN,
        percent_encoding::utf8_percent_encode(token, auth::COOKIE_UNSAFE)
    );
    let mut response = Response::new(empty_body());
    *response.status_mut() = StatusCode::SEE_OTHER;
    let headers = response.headers_mut();
    headers.insert(
        header::LOCATION,
        HeaderValue::from_str(&location).unwrap_or_else(|_| HeaderValue::from_static("/")),
    );
    match HeaderValue::from_str(&cookie) {
        Ok(value) => {
            headers.insert(header::SET_COOKIE, value);
        }
        Err(_) => return text(StatusCode::BAD_REQUEST, "the token is not a valid cookie value"),
    }
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    tracing::info!(user = %user.username, host = %vhost.host, "web-app cookie set");
    response
}

/// Removes our cookie from the `Cookie` headers, keeping the app's.
fn strip_our_cookie(headers: &mut HeaderMap) {
    let kept: Vec<String> = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .map(str::trim)
        .filter(|pair| !pair.is_empty())
        .filter(|pair| pair.split_once('=').map_or(*pair, |(k, _)| k).trim() != wire::COOKIE_TOKEN)
        .map(str::to_owned)
        .collect();
    headers.remove(header::COOKIE);
    if !kept.is_empty()
        && let Ok(value) = HeaderValue::from_str(&kept.join("; "))
    {
        headers.insert(header::COOKIE, value);
    }
}

async fn proxy(
    router: Arc<Router>,
    mut req: Request<Incoming>,
    container: &Container,
    route: &Route,
    vhost: &Vhost,
    kind: &'static str,
) -> Response<Body> {
    let upgrade = relay::wants_upgrade(req.headers()).is_some();
    let client = upgrade.then(|| hyper::upgrade::on(&mut req));
    let id = request_id(req.headers());
    let (mut parts, body) = req.into_parts();
    relay::strip_hop_by_hop(&mut parts.headers, upgrade);
    relay::strip_hatchway_headers(&mut parts.headers);
    strip_our_cookie(&mut parts.headers);
    if upgrade {
        parts
            .headers
            .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    }
    parts
        .headers
        .insert(wire::TARGET_PORT, HeaderValue::from(vhost.port));
    parts.headers.insert(wire::REQUEST_HOST, header_safe(&vhost.host));
    parts.headers.insert(wire::REQUEST_ID, id);
    if !parts.headers.contains_key(header::HOST)
        && let Ok(host) = HeaderValue::from_str(&vhost.host)
    {
        parts.headers.insert(header::HOST, host);
    }
    let path = parts.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    parts.uri = path.parse().expect("a path and query re-parse");
    parts.version = http::Version::HTTP_11;
    let request = Request::from_parts(parts, body.map_err(Into::into).boxed());
    let response = match reach::exchange(&router, container, route, request).await {
        Ok(response) => response,
        Err(refusal) => return refusal,
    };
    relay::pass_on(router, response, client, kind)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_token_is_split_from_the_rest_of_the_query() {
        assert_eq!(
            take_token(Some("a=1&hatchway_token=t%2Bk&b=2")),
            Some(("t+k".to_owned(), "a=1&b=2".to_owned()))
        );
        assert_eq!(
            take_token(Some("hatchway_token=x")),
            Some(("x".to_owned(), String::new()))
        );
        assert_eq!(take_token(Some("a=1")), None);
        assert_eq!(take_token(None), None);
    }

    #[test]
    fn our_cookie_is_removed_and_the_apps_are_kept() {
        let mut h = HeaderMap::new();
        h.append(
            header::COOKIE,
            HeaderValue::from_static("a=1; hatchway_token=secret"),
        );
        h.append(header::COOKIE, HeaderValue::from_static("b=2"));
        strip_our_cookie(&mut h);
        assert_eq!(h.get(header::COOKIE).unwrap(), "a=1; b=2");
        let mut only = HeaderMap::new();
        only.insert(header::COOKIE, HeaderValue::from_static("hatchway_token=secret"));
        strip_our_cookie(&mut only);
        assert!(only.get(header::COOKIE).is_none());
    }

    #[test]
    fn writes_and_websockets_need_create() {
        let mut h = HeaderMap::new();
        assert_eq!(permission_for(&Method::GET, &h), Permission::PROXY_GET);
        assert_eq!(permission_for(&Method::POST, &h), Permission::PROXY_CREATE);
        h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        assert_eq!(permission_for(&Method::GET, &h), Permission::PROXY_CREATE);
    }
}
