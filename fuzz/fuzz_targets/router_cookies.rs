//! Cookies and the router's own web-app sessions: the `Cookie` headers a
//! browser (or anyone) sends, the `Set-Cookie` headers a web app answers,
//! the session values and login codes the router signed, and the login
//! link's redirect.
//!
//! - A cookie value found is never more than one pair's value.
//! - A session or login code not minted here is never accepted; one minted
//!   here is accepted on its host only, for its user.
//! - After `strip_our_cookie` no cookie of the router's reaches the app,
//!   and the app's own pass; an app's `Set-Cookie` is never one of the
//!   router's and never carries `Domain`.
//! - The login query parameter is taken out of the query left; the
//!   redirect stays on the same host.
//! - `Origin` checks never panic and accept only the page's own origin.

#![no_main]

use std::time::Duration;

use hatchway_fuzz::Fields;
use hatchway_operator::router::auth::{self, User};
use hatchway_operator::router::{session, webapp};
use http::{HeaderMap, HeaderValue, header};
use libfuzzer_sys::fuzz_target;

// Fields: cookie name, value (also an app's `Set-Cookie`), host, query,
// path, user name, headers.
fuzz_target!(|data: &[u8]| {
    let mut fields = Fields::new(data);
    let name = fields.text();
    let value = fields.text();
    let host = fields.text();
    let query = Some(fields.text()).filter(|q| !q.is_empty());
    let path = fields.text();
    let username = fields.text();
    let mut map = fields.headers();
    if let Ok(cookie) = HeaderValue::from_str(&format!("{name}={value}")) {
        map.append(header::COOKIE, cookie);
    }
    cookies(&map, &name);
    sessions(&map, &value, &host, &username);
    app_cookies(&map, &value);
    redirects(query.as_deref(), &path);
    let _ = session::same_origin(&map);
    let _ = session::bound_to(&map);
});

fn cookies(map: &HeaderMap, name: &str) {
    for value in auth::cookie_values(map, name) {
        assert!(!value.contains(';'), "{value:?} spans pairs");
    }
}

fn sessions(map: &HeaderMap, value: &str, host: &str, username: &str) {
    let sessions = session::Sessions::new(b"fuzz root secret", Duration::from_secs(3600));
    // Nothing from outside verifies (the chance of a forged HMAC is nil).
    assert!(sessions.check_session(value, host).is_err());
    assert!(sessions.code_replica(value).is_err());
    assert!(sessions.redeem(value, host).is_err());
    for presented in auth::cookie_values(map, session::COOKIE) {
        assert!(sessions.check_session(presented, host).is_err());
    }
    assert!(matches!(sessions.page_user(map), Ok(None)));
    // What was minted here opens on its host, for its user.
    let user = User {
        username: username.to_owned(),
        ..User::default()
    };
    let minted = sessions.mint_session(&user, host);
    assert!(HeaderValue::from_str(&sessions.set_cookie(&minted)).is_ok());
    assert_eq!(
        sessions.check_session(&minted, host).map(|u| u.username),
        Ok(username.to_owned())
    );
    let other = format!("{host}.other");
    assert!(sessions.check_session(&minted, &other).is_err());
    let code = sessions.mint_code(&user, host, "https://replica/");
    assert_eq!(sessions.code_replica(&code).as_deref(), Ok("https://replica/"));
    assert!(sessions.redeem(&code, &other).is_err());
    assert_eq!(
        sessions.redeem(&code, host).map(|r| r.user.username),
        Ok(username.to_owned())
    );
    assert!(sessions.redeem(&code, host).is_err(), "a code redeemed twice");
}

fn app_cookies(map: &HeaderMap, set_cookie: &str) {
    let mut stripped = map.clone();
    webapp::strip_our_cookie(&mut stripped);
    let pairs = |map: &HeaderMap| -> Vec<String> {
        map.get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .map(|p| p.trim().to_owned())
            .filter(|p| !p.is_empty())
            .collect()
    };
    let cookie_name = |pair: &str| pair.split_once('=').map_or(pair, |(k, _)| k).to_owned();
    let kept = pairs(&stripped);
    for pair in &kept {
        assert!(!session::is_ours(&cookie_name(pair)), "{pair:?} reached the app");
    }
    let theirs: Vec<String> = pairs(map)
        .into_iter()
        .filter(|p| !session::is_ours(&cookie_name(p)))
        .collect();
    if HeaderValue::from_str(&theirs.join("; ")).is_ok() {
        assert_eq!(kept, theirs, "the app's cookies did not all pass");
    }

    if let Some(rewritten) = webapp::app_set_cookie(set_cookie) {
        check_set_cookie(&rewritten);
    }
    let mut answer = HeaderMap::new();
    for value in map.get_all(header::COOKIE) {
        answer.append(header::SET_COOKIE, value.clone());
    }
    webapp::filter_set_cookies(&mut answer);
    for value in answer.get_all(header::SET_COOKIE) {
        check_set_cookie(value.to_str().expect("written from text"));
    }
}

fn check_set_cookie(value: &str) {
    let mut parts = value.split(';');
    let pair = parts.next().unwrap_or_default().trim();
    let name = pair.split_once('=').map_or(pair, |(k, _)| k).trim();
    assert!(!name.is_empty() && !session::is_ours(name), "{value:?}");
    for attr in parts {
        let key = attr.split_once('=').map_or(attr, |(k, _)| k).trim();
        assert!(!key.eq_ignore_ascii_case("domain"), "{value:?} keeps Domain");
    }
}

fn redirects(query: Option<&str>, path: &str) {
    if let Some((_, rest)) = webapp::take_param(query, session::PARAM_CODE) {
        // (A bare `hatchway_code`, without `=`, carries no code.)
        for (key, _) in rest.split('&').filter_map(|pair| pair.split_once('=')) {
            assert_ne!(key, session::PARAM_CODE, "a code stayed in {rest:?}");
        }
    }
    let location = webapp::same_host_path(path);
    assert!(location.starts_with('/'), "{location:?}");
    assert!(
        !location[1..].starts_with(['/', '\\']),
        "{location:?} leaves the host"
    );
    assert!(!location.contains('\\'), "{location:?}");
}
