//! The router's reading of a request: which Container and action a path
//! names, which web app a `Host` names, the query parameters of a
//! port-forward, a log file and the web terminal, a tunnel's request
//! headers, `Authorization`, and the request id it passes on.
//!
//! - `parse_path` accepts only `{prefix}{ns}/containers/{name}/{action}`
//!   with a DNS-label namespace and a DNS-subdomain name, and the path is
//!   exactly the one those parts build.
//! - The request's host is lowercase, without a port or trailing dot; a
//!   vhost parsed from it is `{hex uid}-{port}.{domain}` and its URL
//!   parses back to the same Container and port.
//! - Parameters: a port-forward's port is 1-65535; only allowed
//!   parameters pass to the gateway; `sinceSeconds` is above 0; terminal
//!   sizes are 1-1000, a resumed or joined session is 16 hex digits, and
//!   never both.
//! - A tunnel request's UID is of the UID alphabet and its proof 64 hex
//!   digits; a bearer or basic credential is never empty; the request id
//!   passed on is at most 64 printable ASCII characters.

#![no_main]

use hatchway_api::{webapp as apps, wire};
use hatchway_fuzz::Fields;
use hatchway_operator::router::access::{self, Action};
use hatchway_operator::router::{auth, logs, reach, terminal, tunnel, user, webapp};
use http::{HeaderMap, Method, Request};
use libfuzzer_sys::fuzz_target;

// Fields: path, query (absent: none), wildcard domain, `Host`, method,
// headers, a terminal message.
fuzz_target!(|data: &[u8]| {
    let mut fields = Fields::new(data);
    let path = fields.text();
    let query = Some(fields.text()).filter(|q| !q.is_empty());
    let domain = fields.text();
    let host = fields.text();
    let method = fields.text();
    let map = fields.headers();
    let text = fields.text();
    container_path(&path);
    vhost(&domain, &host);
    params(query.as_deref(), &text);
    request_headers(&method, &map);
});

fn container_path(path: &str) {
    let Some(parsed) = access::parse_path(path) else {
        return;
    };
    assert!(access::is_dns_label(&parsed.namespace), "{parsed:?}");
    assert!(
        parsed.name.len() <= 253 && parsed.name.split('.').all(access::is_dns_label),
        "{parsed:?}"
    );
    let api = parsed.api;
    let action = match &parsed.action {
        Action::Ssh => wire::ACTION_SSH.to_owned(),
        Action::PortForward => wire::ACTION_PORTFORWARD.to_owned(),
        Action::WebLogin => wire::ACTION_WEBLOGIN.to_owned(),
        Action::Sessions => wire::ACTION_SESSIONS.to_owned(),
        Action::Terminal => {
            assert_eq!(api, wire::Api::Router, "a terminal through the API server");
            wire::ACTION_TERMINAL.to_owned()
        }
        Action::Log(rest) => {
            assert!(rest.is_empty() || rest.starts_with('/'), "{parsed:?}");
            format!("{}{rest}", wire::ACTION_LOG)
        }
    };
    let (head, tail) = action.split_once('/').unwrap_or((&action, ""));
    let rebuilt = format!(
        "{}{}/containers/{}/{}{}{tail}",
        api.prefix(),
        parsed.namespace,
        parsed.name,
        api.segment(head),
        if action.contains('/') { "/" } else { "" },
    );
    assert_eq!(rebuilt, path, "{parsed:?}");
}

fn vhost(domain: &str, host: &str) {
    let Ok(req) = Request::builder().header(http::header::HOST, host).body(()) else {
        return;
    };
    let Some(host) = webapp::request_host(&req) else {
        return;
    };
    assert_eq!(host, host.to_ascii_lowercase());
    assert!(!host.ends_with('.'), "{host:?}");
    let Some((uid, port)) = apps::parse_host(domain, &host) else {
        return;
    };
    assert!(port > 0);
    assert!(!uid.is_empty() && uid.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-'));
    // One name per web app: the host is the one its URL names.
    let domain_host = domain.rsplit_once(':').map_or(domain, |(h, _)| h);
    assert_eq!(host, format!("{uid}-{port}.{domain_host}"));
    assert_eq!(
        apps::url(domain, &uid, port, "/"),
        format!("https://{uid}-{port}.{domain}/")
    );
}

fn params(query: Option<&str>, text: &str) {
    if let Ok(port) = user::forward_port(query) {
        assert!(port > 0);
    }
    let allowed = [wire::PARAM_LOGIN_USERNAME, wire::PARAM_DETACH_KEYS];
    let passed = user::pass_params(query, &allowed);
    for pair in passed.split('&').filter(|p| !p.is_empty()) {
        let key = pair.split_once('=').map_or(pair, |(k, _)| k);
        assert!(allowed.contains(&key), "{key:?} passed on");
    }
    if let Ok(logs) = logs::log_query(query) {
        assert!(logs.since_seconds.is_none_or(|s| s > 0));
    }
    if let Ok(p) = terminal::params(query) {
        assert!(
            (1..=1000).contains(&p.cols) && (1..=1000).contains(&p.rows),
            "{p:?}"
        );
        assert!(!(p.resume.is_some() && p.join.is_some()), "{p:?}");
        for id in [&p.resume, &p.join].into_iter().flatten() {
            assert!(
                id.len() == 16 && id.bytes().all(|b| b.is_ascii_hexdigit()),
                "{p:?}"
            );
        }
        assert!(p.login.as_ref().is_none_or(|l| !l.is_empty()));
    }
    if let Some((cols, rows)) = terminal::resize(text) {
        assert!((1..=1000).contains(&cols) && (1..=1000).contains(&rows));
    }
}

fn request_headers(method: &str, map: &HeaderMap) {
    let method = Method::from_bytes(method.as_bytes()).unwrap_or(Method::POST);
    if let Ok((uid, proof)) = tunnel::check_request(&method, map) {
        assert!((1..=128).contains(&uid.len()));
        assert!(uid.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'));
        assert!(proof.len() == 64 && proof.bytes().all(|b| b.is_ascii_hexdigit()));
    }
    if let Ok(Some(credential)) = auth::from_authorization(map) {
        assert!(!credential.token.is_empty());
    }
    let id = reach::request_id(map);
    assert!(
        id.len() <= 64 && id.as_bytes().iter().all(u8::is_ascii_graphic),
        "{id:?}"
    );
}
