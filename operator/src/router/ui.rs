//! The web page (docs/web.md): `GET /` and its assets, embedded in this
//! binary at build time — our own `web/*.{html,js,css}` and xterm.js,
//! pinned by `web/package-lock.json`: nothing comes from a CDN, so an
//! air-gapped cluster serves the page whole — the login that gives the
//! page a session of the router's own, and the JSON it lists Containers
//! with. The terminal is [`super::terminal`]; logs, sessions and
//! recordings are the user API's own endpoints, called with the session.
//!
//! The session is the cookie `__Host-hatchway_ui` (Secure, HttpOnly,
//! SameSite=Strict, host-only), signed like web-app sessions
//! ([`super::session`]) and bound to `ui:` + the Host the page was opened
//! at; never the Kubernetes token. It comes from a pasted token (checked
//! once with TokenReview, then forgotten) or a one-time code
//! (`kubectl hatch web`). A request that carries it is accepted only from
//! the page's own origin: `Origin` is `https://` + its Host, or, without
//! `Origin` (a same-origin GET), `Sec-Fetch-Site: same-origin`. Another
//! site's page can neither read with it nor open a terminal (a WebSocket
//! always carries `Origin`).

// A refusal is the response itself, returned once per request: boxing it
// would buy nothing.
#![allow(clippy::result_large_err)]

use std::sync::Arc;

use axum::extract::{Request, State};
use hatchway_api::crd::Container;
use hatchway_api::wire;
use http::{HeaderMap, HeaderValue, Method, Response, StatusCode, header};

use super::Router;
use super::access::{authenticate, unauthorized};
use super::auth::{self, Permission, User};
use super::respond::{Body, empty_body, full_body, text};
use super::{forward, session};

pub use super::session::{PAGE_COOKIE as COOKIE, bound_to, same_origin};
/// Where the page logs in (`POST` a token, `GET ?hatchway_code=`).
pub const LOGIN_PATH: &str = "/ui/login";
/// Where the CLI asks for a one-time login link (`POST`, bearer token).
pub const LOGIN_LINK_PATH: &str = wire::PAGE_LOGIN_LINK_PATH;
/// Largest login form accepted (a token is a few KiB at most).
const MAX_FORM: usize = 16 * 1024;

/// One embedded file.
struct Asset {
    path: &'static str,
    content_type: &'static str,
    body: &'static [u8],
}

macro_rules! web {
    ($file:literal) => {
        include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/../web/", $file))
    };
}

const ASSETS: &[Asset] = &[
    Asset {
        path: "/",
        content_type: "text/html; charset=utf-8",
        body: web!("index.html"),
    },
    Asset {
        path: "/ui/app.js",
        content_type: "text/javascript; charset=utf-8",
        body: web!("app.js"),
    },
    Asset {
        path: "/ui/app.css",
        content_type: "text/css; charset=utf-8",
        body: web!("app.css"),
    },
    Asset {
        path: "/ui/xterm.js",
        content_type: "text/javascript; charset=utf-8",
        body: web!("node_modules/@xterm/xterm/lib/xterm.js"),
    },
    Asset {
        path: "/ui/xterm.css",
        content_type: "text/css; charset=utf-8",
        body: web!("node_modules/@xterm/xterm/css/xterm.css"),
    },
    Asset {
        path: "/ui/addon-fit.js",
        content_type: "text/javascript; charset=utf-8",
        body: web!("node_modules/@xterm/addon-fit/lib/addon-fit.js"),
    },
];

/// The page's Content-Security-Policy: its own scripts only, no inline
/// script, no framing (xterm.js sets inline styles).
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
                   connect-src 'self'; img-src 'self' data:; font-src 'self'; form-action 'self'; \
                   frame-ancestors 'none'; base-uri 'none'";

/// `GET /` and `GET /ui/{asset}`.
pub async fn asset(req: Request) -> Response<Body> {
    if !matches!(*req.method(), Method::GET | Method::HEAD) {
        return text(
            StatusCode::METHOD_NOT_ALLOWED,
            format!("{} is not allowed on the web page's files", req.method()),
        );
    }
    let Some(asset) = ASSETS.iter().find(|a| a.path == req.uri().path()) else {
        return text(
            StatusCode::NOT_FOUND,
            format!("no such page {}", req.uri().path()),
        );
    };
    let mut response = Response::new(if req.method() == Method::HEAD {
        empty_body()
    } else {
        full_body(asset.body)
    });
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(asset.content_type));
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(asset.body.len()));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert("content-security-policy", HeaderValue::from_static(CSP));
    headers.insert("x-content-type-options", HeaderValue::from_static("nosniff"));
    // `same-origin`, not `no-referrer`: under `no-referrer` a browser
    // sends `Origin: null` with the login form.
    headers.insert("referrer-policy", HeaderValue::from_static("same-origin"));
    headers.insert("x-frame-options", HeaderValue::from_static("DENY"));
    response
}

fn set_cookie(router: &Router, value: &str) -> HeaderValue {
    let cookie = format!(
        "{COOKIE}={value}; Path=/; Secure; HttpOnly; SameSite=Strict; Max-Age={}",
        router.sessions.lifetime.as_secs()
    );
    HeaderValue::from_str(&cookie).expect("a session is base64url, '.' and hex")
}

/// A `303` to `location`, optionally setting the session cookie.
fn see_other(location: &str, cookie: Option<HeaderValue>) -> Response<Body> {
    let mut response = Response::new(empty_body());
    *response.status_mut() = StatusCode::SEE_OTHER;
    let headers = response.headers_mut();
    headers.insert(
        header::LOCATION,
        HeaderValue::from_str(location).unwrap_or_else(|_| HeaderValue::from_static("/")),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if let Some(cookie) = cookie {
        headers.insert(header::SET_COOKIE, cookie);
    }
    response
}

/// Back to the page with a message it shows under the login form.
fn login_failed(message: &str) -> Response<Body> {
    let query: String = url_encode(message);
    see_other(&format!("/?error={query}"), None)
}

fn url_encode(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}

/// `POST /ui/login` (form `token=…`, from the page only) and `GET
/// /ui/login?hatchway_code=…` (a one-time link): the page's session.
pub async fn login(State(router): State<Arc<Router>>, req: Request) -> Response<Body> {
    let Some(bound) = bound_to(req.headers()) else {
        return text(StatusCode::BAD_REQUEST, "a login needs a Host header");
    };
    match *req.method() {
        Method::POST => {
            if !same_origin(req.headers()) {
                return text(
                    StatusCode::FORBIDDEN,
                    "a login is accepted from the Hatchway page only (Origin)",
                );
            }
            let body = match axum::body::to_bytes(req.into_body(), MAX_FORM).await {
                Ok(body) => body,
                Err(_) => return text(StatusCode::PAYLOAD_TOO_LARGE, "the login form is too large"),
            };
            let token = form_urlencoded::parse(&body)
                .find(|(key, _)| key == "token")
                .map(|(_, value)| value.trim().to_owned())
                .unwrap_or_default();
            if token.is_empty() {
                return login_failed("paste a token to log in");
            }
            match authenticate(&router, &token).await {
                Ok(user) => {
                    tracing::info!(user = %user.username, "web page session started (token)");
                    let value = router.sessions.mint_session(&user, &bound);
                    see_other("/", Some(set_cookie(&router, &value)))
                }
                Err(_) => login_failed("the cluster did not accept that token"),
            }
        }
        Method::GET => {
            let code = req.uri().query().and_then(|q| {
                form_urlencoded::parse(q.as_bytes())
                    .find(|(key, _)| key == session::PARAM_CODE)
                    .map(|(_, value)| value.into_owned())
            });
            let Some(code) = code else {
                return see_other("/", None);
            };
            let minted_by = match router.sessions.code_replica(&code) {
                Ok(replica) => replica,
                Err(why) => {
                    return login_failed(&format!(
                        "this login link is not valid ({why}): run kubectl hatch web again"
                    ));
                }
            };
            match forward::to_minting_replica(&router, req, &minted_by, "uilogin").await {
                forward::Minted::Here(_) => {}
                forward::Minted::Forwarded(response) => return response,
                forward::Minted::Gone => {
                    return login_failed(
                        "this login link was issued by a router replica that is gone: run kubectl hatch web again",
                    );
                }
            }
            match router.sessions.redeem(&code, &bound) {
                Ok(redeemed) => {
                    tracing::info!(user = %redeemed.user.username, "web page session started (link)");
                    let value = router.sessions.mint_session(&redeemed.user, &bound);
                    see_other("/", Some(set_cookie(&router, &value)))
                }
                Err(why) => login_failed(&format!(
                    "this login link is not valid ({why}): run kubectl hatch web again"
                )),
            }
        }
        _ => text(
            StatusCode::METHOD_NOT_ALLOWED,
            "a login is POST (a token) or GET (a link)",
        ),
    }
}

/// `POST /ui/login-link` with a bearer token: a one-time link that logs
/// the page in, for the Host the request came to (`kubectl hatch web`).
pub async fn login_link(State(router): State<Arc<Router>>, req: Request) -> Response<Body> {
    if req.method() != Method::POST {
        return text(
            StatusCode::METHOD_NOT_ALLOWED,
            "a login link is asked for with POST",
        );
    }
    let token = match auth::from_authorization(req.headers()) {
        Ok(Some(credential)) => credential.token,
        _ => return unauthorized("a login link needs 'Authorization: Bearer <token>'"),
    };
    let user = match authenticate(&router, &token).await {
        Ok(user) => user,
        Err(refusal) => return refusal,
    };
    let (Some(bound), Some(host)) = (
        bound_to(req.headers()),
        req.headers().get(header::HOST).and_then(|h| h.to_str().ok()),
    ) else {
        return text(StatusCode::BAD_REQUEST, "a login link needs a Host header");
    };
    let code = router
        .sessions
        .mint_code(&user, &bound, &router.settings.self_url);
    let body = wire::WebLogin {
        url: format!("https://{host}{LOGIN_PATH}?{}={code}", session::PARAM_CODE),
        expires_in_seconds: session::CODE_LIFETIME.as_secs(),
    };
    json(&body)
}

/// `POST /ui/logout`: the session cookie cleared.
pub async fn logout(req: Request) -> Response<Body> {
    if req.method() != Method::POST || !same_origin(req.headers()) {
        return text(StatusCode::FORBIDDEN, "a logout is a POST from the Hatchway page");
    }
    let cleared = format!("{COOKIE}=; Path=/; Secure; HttpOnly; SameSite=Strict; Max-Age=0");
    see_other("/", Some(HeaderValue::from_str(&cleared).expect("plain text")))
}

fn json(value: &impl serde::Serialize) -> Response<Body> {
    let mut response = Response::new(full_body(serde_json::to_vec(value).expect("plain data")));
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// The page session's user, or the 401 the page turns into its login.
fn page_user(router: &Router, headers: &HeaderMap) -> Result<User, Response<Body>> {
    match router.sessions.page_user(headers)? {
        Some(user) => Ok(user),
        None => Err(text(
            StatusCode::UNAUTHORIZED,
            "log in to the Hatchway page first",
        )),
    }
}

/// `GET /ui/api/whoami`.
pub async fn whoami(State(router): State<Arc<Router>>, req: Request) -> Response<Body> {
    match page_user(&router, req.headers()) {
        Ok(user) => json(&serde_json::json!({"user": user.username, "groups": user.groups})),
        Err(refusal) => refusal,
    }
}

/// `GET /ui/api/containers?namespace=NS`: the Containers of NS if the
/// user may list them, each with the actions the user may take (what
/// SubjectAccessReview refuses is left out).
pub async fn containers(State(router): State<Arc<Router>>, req: Request) -> Response<Body> {
    let user = match page_user(&router, req.headers()) {
        Ok(user) => user,
        Err(refusal) => return refusal,
    };
    let namespace = req
        .uri()
        .query()
        .and_then(|q| {
            form_urlencoded::parse(q.as_bytes())
                .find(|(key, _)| key == "namespace")
                .map(|(_, value)| value.into_owned())
        })
        .unwrap_or_default();
    if !super::access::is_dns_label(&namespace) {
        return text(
            StatusCode::BAD_REQUEST,
            format!("{namespace:?} is not a namespace name"),
        );
    }
    if let Err(refusal) = super::access::authorize(&router, &user, &namespace, "", Permission::LIST).await {
        return refusal;
    }
    let mut listed = Vec::new();
    for container in router.cluster.containers(&namespace) {
        listed.push(describe(&router, &user, &namespace, &container).await);
    }
    json(&serde_json::json!({ "namespace": namespace, "containers": listed }))
}

/// One Container as the page lists it.
async fn describe(router: &Router, user: &User, namespace: &str, container: &Container) -> serde_json::Value {
    let name = container.metadata.name.clone().unwrap_or_default();
    let may = |permission| async move {
        router
            .auth
            .authorize(user, namespace, &name_of(container), permission)
            .await
            .unwrap_or(false)
    };
    let shell = container.spec.shell && router.settings.shell_enabled && may(Permission::SHELL).await;
    let logs = may(Permission::LOG).await;
    let apps = may(Permission::PROXY_GET).await;
    let status = container.status.clone().unwrap_or_default();
    let ports: Vec<serde_json::Value> = status
        .published_ports
        .iter()
        .map(|p| {
            let private = matches!(p.access, hatchway_api::crd::PortAccess::Private);
            serde_json::json!({
                "port": p.port,
                "label": p.label,
                // A private app's link is for those who may use it.
                "url": (!private || apps).then(|| p.url.clone()),
            })
        })
        .collect();
    let runs_as_root = container
        .spec
        .pod
        .as_ref()
        .and_then(|p| p.security_context.as_ref())
        .and_then(|s| s.run_as_user)
        .is_none_or(|uid| uid == 0);
    serde_json::json!({
        "name": name,
        "phase": status.phase,
        "created": container.metadata.creation_timestamp.as_ref().map(|t| t.0.to_string()),
        "exitCode": status.exit_code,
        "ports": ports,
        "runsAsRoot": runs_as_root,
        "actions": {"shell": shell, "logs": logs, "apps": apps},
    })
}

fn name_of(container: &Container) -> String {
    container.metadata.name.clone().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            headers.insert(*name, HeaderValue::from_str(value).unwrap());
        }
        headers
    }

    #[test]
    fn only_the_pages_own_origin_is_same_origin() {
        let host = ("host", "hatchway.example.com:30443");
        assert!(same_origin(&headers(&[
            host,
            ("origin", "https://hatchway.example.com:30443")
        ])));
        assert!(same_origin(&headers(&[
            host,
            ("origin", "https://HATCHWAY.example.com:30443")
        ])));
        assert!(same_origin(&headers(&[host, ("sec-fetch-site", "same-origin")])));
        for bad in [
            ("origin", "https://hatchway.example.com"),
            ("origin", "http://hatchway.example.com:30443"),
            ("origin", "https://evil.example.com"),
            ("origin", "null"),
            ("sec-fetch-site", "cross-site"),
            ("sec-fetch-site", "same-site"),
        ] {
            assert!(!same_origin(&headers(&[host, bad])), "{bad:?}");
        }
        assert!(!same_origin(&headers(&[host])), "no word on where it came from");
        assert!(
            !same_origin(&headers(&[
                host,
                ("origin", "https://evil.example.com"),
                ("sec-fetch-site", "same-origin")
            ])),
            "Origin wins"
        );
    }

    #[test]
    fn every_asset_is_embedded_and_the_page_names_only_embedded_ones() {
        let page = std::str::from_utf8(ASSETS[0].body).unwrap();
        for asset in ASSETS {
            assert!(!asset.body.is_empty(), "{} is empty", asset.path);
        }
        let files = page
            .split(['"', '\''])
            .filter(|s| s.starts_with("/ui/") && (s.ends_with(".js") || s.ends_with(".css")));
        for reference in files {
            assert!(
                ASSETS.iter().any(|a| a.path == reference),
                "the page names {reference}, which is not embedded"
            );
        }
        assert!(!page.contains("http://") && !page.contains("https://"), "no CDN");
    }
}
