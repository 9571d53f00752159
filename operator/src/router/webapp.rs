//! Web apps on `https://{uid}-{port}.{wildcard domain}/`: HTTP and
//! WebSockets proxied to a port inside the container.
//!
//! A public published port needs no credentials. A private one needs the
//! router's own session ([`session`]): a login link carries a one-time
//! code (`?hatchway_code=…`, minted by `POST …/weblogin?port=N`), which
//! becomes the host-only cookie `__Host-hatchway_session`, and the browser
//! is redirected to the same host without it. Every request is still
//! authorized; cookie-authenticated writes and WebSockets need a
//! same-origin `Origin`. The user's Kubernetes token never becomes a cookie
//! or a URL. The code and cookie never reach the container, the app cannot
//! set cookies for other hosts or named like ours, and the `Authorization`
//! header is the app's business and passes unchanged. Only published ports
//! are reachable; without a session every non-public vhost answers the same
//! 401, whether or not the Container exists.

use std::sync::Arc;

use hatchway_api::crd::{Container, PortAccess};
use hatchway_api::headers;
use hatchway_api::wire;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, header};

use super::access::{authorize, choose_settled};
use super::auth::{self, Permission, User};
use super::reach::{self, GatewayRequest, header_safe, request_id};
use super::respond::{Body, RequestBody, empty_body, full_body, stream_body, text};
use super::select::{Purpose, Route};
use super::{Router, assertion, forward, relay, session};

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
pub fn request_host<B>(req: &Request<B>) -> Option<String> {
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
    let host = request_host(req)?;
    let (uid, port) = hatchway_api::webapp::parse_host(domain, &host)?;
    Some(Vhost { uid, port, host })
}

/// The one answer to a request without a valid session on a vhost that is
/// not public, whether or not the Container exists: no namespace, no name.
fn private_app() -> Response<Body> {
    text(
        StatusCode::UNAUTHORIZED,
        "this web app is private (or does not exist): open it with 'kubectl hatch open NAME PORT'",
    )
}

/// Serves a web-app request for `vhost` (its host already matched).
pub async fn serve(router: Arc<Router>, req: Request<RequestBody>, vhost: Vhost) -> Response<Body> {
    let container = match router.cluster.container_by_uid(&vhost.uid).await {
        Ok(container) => container,
        Err(error) => {
            return text(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("cannot read the container: {error}"),
            );
        }
    };
    if let Some(container) = &container {
        let span = tracing::Span::current();
        span.record(
            "namespace",
            container.metadata.namespace.as_deref().unwrap_or_default(),
        );
        span.record(
            "container",
            container.metadata.name.as_deref().unwrap_or_default(),
        );
    }
    if let Some((code, rest)) = take_param(req.uri().query(), session::PARAM_CODE) {
        return redeem(router, req, &vhost, container, &code, rest).await;
    }
    let Some(container) = container else {
        return private_app();
    };
    let namespace = container.metadata.namespace.clone().unwrap_or_default();
    let name = container.metadata.name.clone().unwrap_or_default();
    let published = container
        .spec
        .published_ports
        .iter()
        .find(|p| p.port == i32::from(vhost.port));
    // Who is calling, signed for the app (none on a public port: nobody
    // was authenticated there).
    let mut identity = None;
    if !published.is_some_and(|p| p.access == PortAccess::Public) {
        let (user, tag) = match session_user(&router, req.headers(), &vhost) {
            Some(found) => found,
            None => {
                router
                    .metrics
                    .auth_failures
                    .with_label_values(&["no_credentials"])
                    .inc();
                return private_app();
            }
        };
        tracing::Span::current().record("user", user.username.as_str());
        if published.is_none() {
            return text(
                StatusCode::NOT_FOUND,
                format!(
                    "port {} is not published: only spec.publishedPorts are reachable as web apps \
                     (use 'kubectl hatch port-forward' for others)",
                    vhost.port
                ),
            );
        }
        let permission = permission_for(req.method(), req.headers());
        if permission == Permission::PROXY_CREATE && !same_origin(req.headers(), &vhost) {
            router
                .metrics
                .auth_failures
                .with_label_values(&["cross_site"])
                .inc();
            return text(
                StatusCode::FORBIDDEN,
                format!(
                    "cross-site request refused: a write or WebSocket with the session cookie needs \
                     Origin https://{} (or Sec-Fetch-Site: same-origin)",
                    vhost.host
                ),
            );
        }
        if let Err(response) = authorize(&router, &user, &namespace, &name, permission).await {
            return response;
        }
        let origin = format!("https://{}", vhost.host);
        let assertion = router.assertions.assertion(
            &user,
            assertion::App {
                origin: &origin,
                container_uid: &vhost.uid,
                namespace: &namespace,
                container: &name,
            },
        );
        identity = Some(Identity {
            assertion,
            username: user.username,
            session: tag,
        });
    }

    let (container, route) = choose_settled(&router, container, req.headers(), Purpose::Proxy).await;
    let route = match route {
        Ok(route) => route,
        Err(refusal) => return refusal.into_response(),
    };
    let kind = if headers::wants_upgrade(req.headers()).is_some() {
        "websocket"
    } else {
        "http"
    };
    let forwarded = matches!(route, Route::Forward(_));
    // A slot of this replica's share of the gateway (the peer that a
    // request is forwarded to takes one of its own).
    let slot = if forwarded {
        None
    } else {
        match router.web_slots.acquire(&vhost.uid).await {
            Ok(slot) => Some(slot),
            Err(busy) => {
                let mut response = text(StatusCode::SERVICE_UNAVAILABLE, format!("{busy}: try again"));
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, http::HeaderValue::from_static("1"));
                return response;
            }
        }
    };
    let sent = reach::send(&router, req, &container, &route, kind, |req| {
        app_request(req, &vhost, identity)
    })
    .await;
    let response = match sent {
        // The peer filtered the app's cookies already.
        Ok(response) if forwarded => response,
        Ok(mut response) => {
            filter_set_cookies(response.headers_mut());
            response
        }
        Err(refusal) => refusal,
    };
    match slot {
        // Held until the answer's body has been sent; an upgrade's `101`
        // has none, and frees it now.
        Some(slot) if response.status() != StatusCode::SWITCHING_PROTOCOLS => {
            use http_body_util::BodyExt as _;
            response.map(|body| {
                body.map_frame(move |frame| {
                    let _slot = &slot;
                    frame
                })
                .boxed_unsync()
            })
        }
        _ => response,
    }
}

/// The user of a valid session cookie for this vhost, and the session's
/// tag for the audit trail.
fn session_user(router: &Router, headers: &HeaderMap, vhost: &Vhost) -> Option<(User, String)> {
    auth::cookie_values(headers, session::COOKIE).find_map(|value| {
        let user = router.sessions.check_session(value, &vhost.host).ok()?;
        Some((user, session::session_tag(value)))
    })
}

/// Whether a request comes from the vhost's own origin: `Origin` is
/// `https://{host}` (any port: a NodePort), or the browser says
/// `Sec-Fetch-Site: same-origin`.
fn same_origin(headers: &HeaderMap, vhost: &Vhost) -> bool {
    if let Some(origin) = headers.get(header::ORIGIN).and_then(|o| o.to_str().ok()) {
        let Some(authority) = origin.strip_prefix("https://") else {
            return false;
        };
        let host = match authority.rsplit_once(':') {
            Some((host, port)) if port.bytes().all(|b| b.is_ascii_digit()) => host,
            _ => authority,
        };
        return host.eq_ignore_ascii_case(&vhost.host);
    }
    headers
        .get("sec-fetch-site")
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"same-origin"))
}

/// GET, HEAD and OPTIONS read; everything else (WebSockets included) writes.
fn permission_for(method: &Method, headers: &HeaderMap) -> Permission {
    let reads = [Method::GET, Method::HEAD, Method::OPTIONS];
    if reads.contains(method) && headers::wants_upgrade(headers).is_none() {
        Permission::PROXY_GET
    } else {
        Permission::PROXY_CREATE
    }
}

/// Splits query parameter `name` out of a query: its value and the query
/// left.
pub fn take_param(query: Option<&str>, name: &str) -> Option<(String, String)> {
    let query = query?;
    let mut value = None;
    let mut rest = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        match pair.split_once('=') {
            Some((key, v)) if key == name => {
                value = percent_encoding::percent_decode_str(v)
                    .decode_utf8()
                    .ok()
                    .map(|t| t.into_owned());
            }
            _ => rest.push(pair),
        }
    }
    Some((value?, rest.join("&")))
}

/// `path` as a redirect target on the same host: one leading slash, no
/// backslash (`//evil.example` and `/\evil.example` would leave the host).
pub fn same_host_path(path: &str) -> String {
    format!("/{}", path.trim_start_matches(['/', '\\']).replace('\\', "%5C"))
}

/// A login link: redeems its code (once, at the replica that minted it)
/// for a session cookie and redirects to the same URL without it. A bad
/// code costs no TokenReview.
async fn redeem(
    router: Arc<Router>,
    req: Request<RequestBody>,
    vhost: &Vhost,
    container: Option<Container>,
    code: &str,
    rest: String,
) -> Response<Body> {
    let refused = |why: session::Invalid| {
        router
            .metrics
            .auth_failures
            .with_label_values(&["bad_code"])
            .inc();
        text(
            StatusCode::UNAUTHORIZED,
            format!(
                "this login link is not valid ({why}): open the app again with 'kubectl hatch open NAME PORT'"
            ),
        )
    };
    let minted_by = match router.sessions.code_replica(code) {
        Ok(replica) => replica,
        Err(why) => return refused(why),
    };
    let req = match forward::to_minting_replica(&router, req, &minted_by, "weblogin").await {
        forward::Minted::Here(req) => req,
        forward::Minted::Forwarded(response) => return response,
        forward::Minted::Gone => {
            return text(
                StatusCode::UNAUTHORIZED,
                "this login link was issued by a router replica that is gone: open the app again with \
                 'kubectl hatch open NAME PORT'",
            );
        }
    };
    let user = match router.sessions.redeem(code, &vhost.host) {
        Ok(redeemed) => redeemed.user,
        Err(why) => return refused(why),
    };
    let Some(container) = container else {
        return private_app();
    };
    let namespace = container.metadata.namespace.clone().unwrap_or_default();
    let name = container.metadata.name.clone().unwrap_or_default();
    // The code was minted after this check; rights may have changed since.
    if let Err(response) = authorize(&router, &user, &namespace, &name, Permission::PROXY_GET).await {
        return response;
    }
    let path = same_host_path(req.uri().path());
    let location = if rest.is_empty() {
        path
    } else {
        format!("{path}?{rest}")
    };
    let cookie = router
        .sessions
        .set_cookie(&router.sessions.mint_session(&user, &vhost.host));
    let mut response = Response::new(empty_body());
    *response.status_mut() = StatusCode::SEE_OTHER;
    let headers = response.headers_mut();
    headers.insert(
        header::LOCATION,
        HeaderValue::from_str(&location).unwrap_or_else(|_| HeaderValue::from_static("/")),
    );
    headers.insert(
        header::SET_COOKIE,
        HeaderValue::from_str(&cookie).expect("a session is base64url, '.' and hex"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    tracing::info!(user = %user.username, host = %vhost.host, "web-app session started");
    response
}

/// `POST …/weblogin?port=N` (after authentication and `get
/// containers/proxy`): a one-time login link to published port N, as JSON
/// `{"url": …, "expiresInSeconds": 60}`.
pub fn login_link(
    router: &Router,
    req: &Request<RequestBody>,
    container: &Container,
    user: &User,
) -> Response<Body> {
    let Some(domain) = router.settings.wildcard_domain.as_deref() else {
        return text(
            StatusCode::NOT_FOUND,
            "web apps are off on this cluster (the router has no wildcard domain)",
        );
    };
    let port = req
        .uri()
        .query()
        .and_then(|q| {
            q.split('&')
                .find_map(|pair| pair.strip_prefix(&format!("{}=", wire::PARAM_PORT)))
        })
        .and_then(|p| p.parse::<u16>().ok())
        .filter(|p| *p > 0);
    let Some(port) = port else {
        return text(
            StatusCode::BAD_REQUEST,
            "a login link needs ?port=N: a published port (1-65535)",
        );
    };
    let namespace = container.metadata.namespace.as_deref().unwrap_or_default();
    let name = container.metadata.name.as_deref().unwrap_or_default();
    let Some(published) = container
        .spec
        .published_ports
        .iter()
        .find(|p| p.port == i32::from(port))
    else {
        return text(
            StatusCode::NOT_FOUND,
            format!("port {port} of container {namespace}/{name} is not published (spec.publishedPorts)"),
        );
    };
    let uid = container.metadata.uid.as_deref().unwrap_or_default();
    let domain_host = domain.rsplit_once(':').map_or(domain, |(host, _)| host);
    let host = format!("{uid}-{port}.{domain_host}").to_ascii_lowercase();
    let code = router.sessions.mint_code(user, &host, &router.settings.self_url);
    // Never a fragment: the code must reach the router.
    let path = published
        .initial_path
        .as_deref()
        .map(|p| p.split('#').next().unwrap_or_default())
        .unwrap_or("/");
    let app = hatchway_api::webapp::url(domain, uid, port, path);
    let separator = if app.contains('?') { '&' } else { '?' };
    let body = wire::WebLogin {
        url: format!("{app}{separator}{}={code}", session::PARAM_CODE),
        expires_in_seconds: session::CODE_LIFETIME.as_secs(),
    };
    let mut response = Response::new(full_body(serde_json::to_string(&body).expect("plain data")));
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// Removes the router's cookies from the `Cookie` headers, keeping the app's.
pub fn strip_our_cookie(headers: &mut HeaderMap) {
    let kept: Vec<String> = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .map(str::trim)
        .filter(|pair| !pair.is_empty())
        .filter(|pair| !session::is_ours(pair.split_once('=').map_or(*pair, |(k, _)| k)))
        .map(str::to_owned)
        .collect();
    headers.remove(header::COOKIE);
    if !kept.is_empty()
        && let Ok(value) = HeaderValue::from_str(&kept.join("; "))
    {
        headers.insert(header::COOKIE, value);
    }
}

/// An app's `Set-Cookie` made safe: host-only (its `Domain` attribute
/// dropped, so app A cannot set cookies for app B) and never one of the
/// router's. `None`: drop the header.
pub fn app_set_cookie(value: &str) -> Option<String> {
    let mut parts = value.split(';');
    let pair = parts.next()?.trim();
    let name = pair.split_once('=').map_or(pair, |(k, _)| k).trim();
    if name.is_empty() || session::is_ours(name) {
        return None;
    }
    let mut kept = vec![pair.to_owned()];
    kept.extend(
        parts
            .map(str::trim)
            .filter(|attr| !attr.is_empty())
            .filter(|attr| {
                let key = attr.split_once('=').map_or(*attr, |(k, _)| k).trim();
                !key.eq_ignore_ascii_case("domain")
            })
            .map(str::to_owned),
    );
    Some(kept.join("; "))
}

/// Rewrites every `Set-Cookie` of an app's answer with [`app_set_cookie`].
pub fn filter_set_cookies(headers: &mut HeaderMap) {
    let values: Vec<String> = headers
        .get_all(header::SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .filter_map(app_set_cookie)
        .collect();
    headers.remove(header::SET_COOKIE);
    for value in values {
        if let Ok(value) = HeaderValue::from_str(&value) {
            headers.append(header::SET_COOKIE, value);
        }
    }
}

/// Who an authenticated web-app request is from.
struct Identity {
    /// The signed assertion the app gets.
    assertion: String,
    /// For the audit trail (the gateway strips it before the app).
    username: String,
    /// The session's tag, for the audit trail.
    session: String,
}

/// The request the app gets: the user's, without hop-by-hop headers, ours
/// or our cookie, naming the port and the host it came for, with the
/// router's `identity` assertion (and never a client's); the user and
/// their session's tag for the gateway's audit trail.
fn app_request(mut req: Request<RequestBody>, vhost: &Vhost, identity: Option<Identity>) -> GatewayRequest {
    let upgrade = headers::wants_upgrade(req.headers()).is_some();
    let client = upgrade.then(|| hyper::upgrade::on(&mut req));
    let id = request_id(req.headers());
    let (mut parts, body) = req.into_parts();
    headers::strip_hop_by_hop(&mut parts.headers, upgrade);
    headers::strip_hatchway_headers(&mut parts.headers);
    strip_our_cookie(&mut parts.headers);
    parts.headers.remove(assertion::HEADER);
    if let Some(identity) = identity {
        if let Ok(value) = HeaderValue::from_str(&identity.assertion) {
            parts.headers.insert(assertion::HEADER, value);
        }
        parts
            .headers
            .insert(wire::REQUEST_USER, header_safe(&identity.username));
        parts
            .headers
            .insert(wire::WEB_SESSION, header_safe(&identity.session));
    }
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
    GatewayRequest {
        request: Request::from_parts(parts, stream_body(body)),
        client,
        framing: relay::ClientStream::Raw,
        author: relay::Author::Workload,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_parameter_is_split_from_the_rest_of_the_query() {
        assert_eq!(
            take_param(Some("a=1&hatchway_code=t%2Bk&b=2"), "hatchway_code"),
            Some(("t+k".to_owned(), "a=1&b=2".to_owned()))
        );
        assert_eq!(
            take_param(Some("hatchway_code=x"), "hatchway_code"),
            Some(("x".to_owned(), String::new()))
        );
        assert_eq!(take_param(Some("a=1"), "hatchway_code"), None);
        assert_eq!(take_param(None, "hatchway_code"), None);
    }

    #[test]
    fn our_cookies_are_removed_and_the_apps_are_kept() {
        let mut h = HeaderMap::new();
        h.append(
            header::COOKIE,
            // The web page's own session too: an app never sees it.
            HeaderValue::from_static(
                "a=1; __Host-hatchway_session=secret; __Host-hatchway_ui=page; hatchway_token=old",
            ),
        );
        h.append(header::COOKIE, HeaderValue::from_static("b=2"));
        strip_our_cookie(&mut h);
        assert_eq!(h.get(header::COOKIE).unwrap(), "a=1; b=2");
        let mut only = HeaderMap::new();
        only.insert(
            header::COOKIE,
            HeaderValue::from_static("__Host-hatchway_session=secret"),
        );
        strip_our_cookie(&mut only);
        assert!(only.get(header::COOKIE).is_none());
    }

    #[test]
    fn apps_set_host_only_cookies_and_never_ours() {
        assert_eq!(
            app_set_cookie("sid=1; Domain=.apps.example; Path=/; HttpOnly").as_deref(),
            Some("sid=1; Path=/; HttpOnly")
        );
        assert_eq!(
            app_set_cookie("x=2; domain = other.example").as_deref(),
            Some("x=2")
        );
        assert_eq!(app_set_cookie("__Host-hatchway_session=forged; Path=/"), None);
        assert_eq!(app_set_cookie("hatchway_token=t"), None);
        assert_eq!(app_set_cookie("=v"), None);
        let mut h = HeaderMap::new();
        h.append(header::SET_COOKIE, HeaderValue::from_static("a=1; Domain=x"));
        h.append(
            header::SET_COOKIE,
            HeaderValue::from_static("__Host-hatchway_session=f"),
        );
        filter_set_cookies(&mut h);
        let left: Vec<_> = h.get_all(header::SET_COOKIE).iter().collect();
        assert_eq!(left, ["a=1"]);
    }

    #[test]
    fn redirects_stay_on_the_same_host() {
        assert_eq!(same_host_path("/tree"), "/tree");
        assert_eq!(same_host_path("//evil.example/x"), "/evil.example/x");
        assert_eq!(same_host_path("/\\evil.example"), "/evil.example");
        assert_eq!(same_host_path("/a\\b"), "/a%5Cb");
        assert_eq!(same_host_path(""), "/");
    }

    #[test]
    fn only_the_apps_own_origin_may_write_with_the_cookie() {
        let vhost = Vhost {
            uid: "abc".into(),
            port: 8080,
            host: "abc-8080.apps.example".into(),
        };
        let with = |k: &'static str, v: &'static str| {
            let mut h = HeaderMap::new();
            h.insert(k, HeaderValue::from_static(v));
            h
        };
        assert!(same_origin(
            &with("origin", "https://abc-8080.apps.example"),
            &vhost
        ));
        assert!(same_origin(
            &with("origin", "https://ABC-8080.apps.example:30443"),
            &vhost
        ));
        assert!(same_origin(&with("sec-fetch-site", "same-origin"), &vhost));
        assert!(!same_origin(
            &with("origin", "https://abc-9090.apps.example"),
            &vhost
        ));
        assert!(!same_origin(
            &with("origin", "http://abc-8080.apps.example"),
            &vhost
        ));
        assert!(!same_origin(&with("origin", "null"), &vhost));
        assert!(!same_origin(&with("sec-fetch-site", "same-site"), &vhost));
        assert!(!same_origin(&HeaderMap::new(), &vhost));
        // An Origin that disagrees wins over Sec-Fetch-Site.
        let mut both = with("origin", "https://evil.example");
        both.insert("sec-fetch-site", HeaderValue::from_static("same-origin"));
        assert!(!same_origin(&both, &vhost));
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

    proptest::proptest! {
        #[test]
        fn redirects_always_stay_on_the_host(path in "\\PC{0,40}") {
            let location = same_host_path(&path);
            proptest::prop_assert!(location.starts_with('/') && !location.starts_with("//"), "{location:?}");
            proptest::prop_assert!(!location.contains('\\'), "{location:?}");
        }

        #[test]
        fn app_cookies_are_host_only_and_never_ours(value in "\\PC{0,80}") {
            if let Some(cookie) = app_set_cookie(&value) {
                let lower = cookie.to_ascii_lowercase();
                proptest::prop_assert!(!lower.split(';').any(|a| a.trim().starts_with("domain")), "{cookie:?}");
                let name = cookie.split(';').next().unwrap().split('=').next().unwrap();
                proptest::prop_assert!(!session::is_ours(name), "{cookie:?}");
            }
        }

        #[test]
        fn query_parameters_split_without_panics(query in "\\PC{0,80}") {
            if let Some((_, rest)) = take_param(Some(&query), "hatchway_code") {
                proptest::prop_assert!(!rest.split('&').any(|p| p.starts_with("hatchway_code=")), "{rest:?}");
            }
        }

        #[test]
        fn origins_match_only_the_apps_own(origin in "\\PC{0,60}") {
            let vhost = Vhost { uid: "abc".into(), port: 8080, host: "abc-8080.apps.example".into() };
            let mut h = HeaderMap::new();
            if let Ok(value) = HeaderValue::from_str(&origin) {
                h.insert(header::ORIGIN, value);
                if same_origin(&h, &vhost) {
                    let lower = origin.to_ascii_lowercase();
                    proptest::prop_assert!(lower.starts_with("https://abc-8080.apps.example"), "{origin:?}");
                }
            }
        }
    }
}
