//! The router's own web-app credentials (docs/security.md, "Web apps"):
//! never the user's Kubernetes token in a cookie or a URL.
//!
//! - A **login code** is minted for an authenticated user who may `get
//!   containers/proxy` (`POST …/weblogin?port=N`, what `kubectl hatch open`
//!   asks for). It names the user, the one vhost it is for, the replica
//!   that minted it and a random nonce, lives 60 s, and is accepted once:
//!   by the replica that minted it (others forward it there), which
//!   remembers its nonce until it expires.
//! - A **session** is what the code becomes: the cookie
//!   `__Host-hatchway_session` (Secure, HttpOnly, Path=/, no Domain:
//!   host-only), holding the user's identity as TokenReview gave it, bound
//!   to the vhost, expiring (12 h by default). Every request is still
//!   authorized with that identity (SubjectAccessReview, cached).
//!
//! Both are `base64url(JSON) "." hex(HMAC-SHA256(key, base64url(JSON)))`
//! with keys derived from the root secret, so every replica can check
//! what any replica signed, and a bad one costs no API call. MACs are
//! compared in constant time.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hatchway_api::proof::{constant_time_eq, hmac_hex};
use http::{HeaderMap, Response, StatusCode, header};
use serde::{Deserialize, Serialize};

use super::auth::User;
use super::respond::{Body, text};

/// The session cookie's name (the `__Host-` prefix makes browsers refuse
/// it unless Secure, Path=/ and without Domain).
pub const COOKIE: &str = hatchway_api::wire::SESSION_COOKIE;
/// The login code's query parameter.
pub const PARAM_CODE: &str = hatchway_api::wire::PARAM_LOGIN_CODE;
/// How long a login code is good for.
pub const CODE_LIFETIME: Duration = Duration::from_secs(60);
/// Longest signed value accepted (a cookie is at most ~4 KiB anyway).
const MAX_LEN: usize = 8 * 1024;

/// Keys derived from the root secret, one per kind of value.
pub struct Keys {
    session: Vec<u8>,
    code: Vec<u8>,
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Keys(..)")
    }
}

impl Keys {
    /// `HMAC(root, label)` per kind: a session can never pass as a code.
    pub fn derive(root: &[u8]) -> Self {
        Self {
            session: hmac_hex(root, b"hatchway/web-app-session/v1").into_bytes(),
            code: hmac_hex(root, b"hatchway/web-app-login-code/v1").into_bytes(),
        }
    }
}

/// The identity a session or code carries: what SubjectAccessReview needs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Identity {
    #[serde(rename = "n")]
    username: String,
    #[serde(rename = "i", default, skip_serializing_if = "String::is_empty")]
    uid: String,
    #[serde(rename = "g", default, skip_serializing_if = "Vec::is_empty")]
    groups: Vec<String>,
    #[serde(rename = "x", default, skip_serializing_if = "BTreeMap::is_empty")]
    extra: BTreeMap<String, Vec<String>>,
}

impl From<&User> for Identity {
    fn from(user: &User) -> Self {
        Self {
            username: user.username.clone(),
            uid: user.uid.clone(),
            groups: user.groups.clone(),
            extra: user.extra.clone(),
        }
    }
}

impl From<Identity> for User {
    fn from(id: Identity) -> Self {
        Self {
            username: id.username,
            uid: id.uid,
            groups: id.groups,
            extra: id.extra,
        }
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct SessionBody {
    /// The vhost (host only, lowercase).
    h: String,
    /// Expiry, Unix seconds.
    e: u64,
    u: Identity,
}

#[derive(Debug, Serialize, Deserialize)]
struct CodeBody {
    h: String,
    e: u64,
    /// Random, so each code is unique and can be remembered as used.
    n: String,
    /// The replica that minted it: the only one that redeems it.
    r: String,
    u: Identity,
}

/// Why a session or code is not accepted. The message is for the user;
/// it never says more than that.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum Invalid {
    #[error("malformed")]
    Malformed,
    #[error("signature does not match")]
    Signature,
    #[error("issued for another host")]
    OtherHost,
    #[error("expired")]
    Expired,
    #[error("already used")]
    Used,
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn seal<T: Serialize>(key: &[u8], body: &T) -> String {
    let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(body).expect("plain data serializes"));
    let mac = hmac_hex(key, payload.as_bytes());
    format!("{payload}.{mac}")
}

fn open<T: for<'de> Deserialize<'de>>(key: &[u8], value: &str) -> Result<T, Invalid> {
    if value.len() > MAX_LEN {
        return Err(Invalid::Malformed);
    }
    let (payload, mac) = value.rsplit_once('.').ok_or(Invalid::Malformed)?;
    if !constant_time_eq(&hmac_hex(key, payload.as_bytes()), mac) {
        return Err(Invalid::Signature);
    }
    let json = URL_SAFE_NO_PAD.decode(payload).map_err(|_| Invalid::Malformed)?;
    serde_json::from_slice(&json).map_err(|_| Invalid::Malformed)
}

/// Signs and checks sessions and codes; remembers used codes.
#[derive(Debug)]
pub struct Sessions {
    keys: Keys,
    /// How long a session lasts.
    pub lifetime: Duration,
    /// Nonces of codes redeemed here, until they expire.
    used: Mutex<HashMap<String, u64>>,
}

/// A redeemed code: who, and where it may go next.
#[derive(Debug, PartialEq, Eq)]
pub struct Redeemed {
    pub user: User,
}

impl Sessions {
    /// Sessions signed with keys from `root`, lasting `lifetime`.
    pub fn new(root: &[u8], lifetime: Duration) -> Self {
        Self {
            keys: Keys::derive(root),
            lifetime,
            used: Mutex::default(),
        }
    }

    /// A login code for `user` on `host`, redeemable at `replica`.
    pub fn mint_code(&self, user: &User, host: &str, replica: &str) -> String {
        let nonce: [u8; 16] = rand::random();
        seal(
            &self.keys.code,
            &CodeBody {
                h: host.to_owned(),
                e: now() + CODE_LIFETIME.as_secs(),
                n: hex::encode(nonce),
                r: replica.to_owned(),
                u: Identity::from(user),
            },
        )
    }

    /// The replica a code must be redeemed at, if its signature holds.
    pub fn code_replica(&self, code: &str) -> Result<String, Invalid> {
        open::<CodeBody>(&self.keys.code, code).map(|body| body.r)
    }

    /// Redeems `code` for `host` (once).
    pub fn redeem(&self, code: &str, host: &str) -> Result<Redeemed, Invalid> {
        let body: CodeBody = open(&self.keys.code, code)?;
        let now = now();
        if body.h != host {
            return Err(Invalid::OtherHost);
        }
        if body.e <= now {
            return Err(Invalid::Expired);
        }
        let mut used = self.used.lock().expect("not poisoned");
        used.retain(|_, expiry| *expiry > now);
        if used.insert(body.n, body.e).is_some() {
            return Err(Invalid::Used);
        }
        Ok(Redeemed { user: body.u.into() })
    }

    /// A session cookie value for `user` on `host`.
    pub fn mint_session(&self, user: &User, host: &str) -> String {
        seal(
            &self.keys.session,
            &SessionBody {
                h: host.to_owned(),
                e: now() + self.lifetime.as_secs(),
                u: Identity::from(user),
            },
        )
    }

    /// The user of a session cookie value on `host`.
    pub fn check_session(&self, value: &str, host: &str) -> Result<User, Invalid> {
        let body: SessionBody = open(&self.keys.session, value)?;
        if body.h != host {
            return Err(Invalid::OtherHost);
        }
        if body.e <= now() {
            return Err(Invalid::Expired);
        }
        Ok(body.u.into())
    }

    /// The user of a page session the request carries: `Ok(None)` without
    /// one, a refusal when it carries one from another origin.
    #[allow(clippy::result_large_err)] // the refusal, returned once per request
    pub fn page_user(&self, headers: &HeaderMap) -> Result<Option<User>, Response<Body>> {
        let Some(bound) = bound_to(headers) else {
            return Ok(None);
        };
        let Some(user) =
            super::auth::cookie_values(headers, PAGE_COOKIE).find_map(|v| self.check_session(v, &bound).ok())
        else {
            return Ok(None);
        };
        if !same_origin(headers) {
            return Err(text(
                StatusCode::FORBIDDEN,
                "the Hatchway page's session is accepted from its own page only (Origin)",
            ));
        }
        Ok(Some(user))
    }

    /// The `Set-Cookie` value for a session.
    pub fn set_cookie(&self, value: &str) -> String {
        format!(
            "{COOKIE}={value}; Path=/; Secure; HttpOnly; SameSite=Lax; Max-Age={}",
            self.lifetime.as_secs()
        )
    }
}

/// The web page's session cookie (docs/web.md).
pub const PAGE_COOKIE: &str = "__Host-hatchway_ui";

/// What a page session is bound to: the Host it was opened at.
pub fn bound_to(headers: &HeaderMap) -> Option<String> {
    let host = headers.get(header::HOST)?.to_str().ok()?;
    Some(format!("ui:{}", host.to_ascii_lowercase()))
}

/// A session cookie's name in the audit trail: 16 hex digits of its
/// SHA-256, which tell one login from another and open nothing (the pod
/// never sees the cookie).
pub fn session_tag(value: &str) -> String {
    use sha2::Digest as _;
    let digest = sha2::Sha256::digest(value.as_bytes());
    digest[..8].iter().map(|b| format!("{b:02x}")).collect()
}

/// Whether a request comes from the page's own origin.
pub fn same_origin(headers: &HeaderMap) -> bool {
    let Some(host) = headers.get(header::HOST).and_then(|h| h.to_str().ok()) else {
        return false;
    };
    // A browser sends `Origin: null` where the referrer policy hides the
    // origin (a form POST under `no-referrer`): then, as when there is no
    // Origin, the browser's own Sec-Fetch-Site decides.
    match headers.get(header::ORIGIN).map(|o| o.to_str()) {
        Some(Ok(origin)) if origin != "null" => origin
            .strip_prefix("https://")
            .is_some_and(|authority| authority.eq_ignore_ascii_case(host)),
        Some(Err(_)) => false,
        Some(Ok(_)) | None => headers
            .get("sec-fetch-site")
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"same-origin")),
    }
}

/// Whether a cookie name is one of the router's (an app may not set it).
pub fn is_ours(cookie_name: &str) -> bool {
    let name = cookie_name.trim().to_ascii_lowercase();
    name.starts_with("__host-hatchway")
        || name.starts_with("__secure-hatchway")
        || name.starts_with("hatchway_")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alice() -> User {
        User {
            username: "alice".into(),
            uid: "u-1".into(),
            groups: vec!["dev".into()],
            extra: BTreeMap::from([("scopes".into(), vec!["a".into()])]),
        }
    }

    fn sessions() -> Sessions {
        Sessions::new(b"root secret of at least 32 bytes!", Duration::from_secs(3600))
    }

    #[test]
    fn a_session_round_trips_on_its_host_only() {
        let s = sessions();
        let value = s.mint_session(&alice(), "abc-8080.apps.example");
        assert_eq!(s.check_session(&value, "abc-8080.apps.example"), Ok(alice()));
        assert_eq!(
            s.check_session(&value, "abc-9090.apps.example"),
            Err(Invalid::OtherHost)
        );
    }

    #[test]
    fn forged_tampered_and_foreign_values_are_refused() {
        let s = sessions();
        let value = s.mint_session(&alice(), "h");
        let (payload, mac) = value.rsplit_once('.').unwrap();
        // Another identity under the old MAC.
        let mut body: serde_json::Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap();
        body["u"]["n"] = "system:admin".into();
        let forged = format!("{}.{mac}", URL_SAFE_NO_PAD.encode(body.to_string()));
        assert_eq!(s.check_session(&forged, "h"), Err(Invalid::Signature));
        // Signed with another root secret.
        let other = Sessions::new(b"another root secret, 32 bytes ok", Duration::from_secs(60));
        assert_eq!(
            s.check_session(&other.mint_session(&alice(), "h"), "h"),
            Err(Invalid::Signature)
        );
        // A code is not a session, and a session is not a code.
        let code = s.mint_code(&alice(), "h", "https://r1");
        assert_eq!(s.check_session(&code, "h"), Err(Invalid::Signature));
        assert_eq!(s.redeem(&value, "h"), Err(Invalid::Signature));
        for junk in ["", ".", "abc", "a.b.c", &"x".repeat(MAX_LEN + 1)] {
            assert!(s.check_session(junk, "h").is_err(), "{junk:?}");
        }
    }

    #[test]
    fn an_expired_session_is_refused() {
        let s = Sessions::new(b"root secret of at least 32 bytes!", Duration::ZERO);
        let value = s.mint_session(&alice(), "h");
        assert_eq!(s.check_session(&value, "h"), Err(Invalid::Expired));
    }

    #[test]
    fn a_code_is_redeemed_once_on_its_host() {
        let s = sessions();
        let code = s.mint_code(&alice(), "h", "https://r1");
        assert_eq!(s.code_replica(&code), Ok("https://r1".to_owned()));
        assert_eq!(s.redeem(&code, "other"), Err(Invalid::OtherHost));
        assert_eq!(s.redeem(&code, "h"), Ok(Redeemed { user: alice() }));
        assert_eq!(s.redeem(&code, "h"), Err(Invalid::Used));
        let second = s.mint_code(&alice(), "h", "https://r1");
        assert_ne!(second, code);
        assert!(s.redeem(&second, "h").is_ok());
    }

    #[test]
    fn the_cookie_is_host_only_and_ours_is_recognized() {
        let s = sessions();
        let cookie = s.set_cookie("v");
        assert!(cookie.starts_with("__Host-hatchway_session=v; Path=/; Secure; HttpOnly"));
        assert!(!cookie.to_ascii_lowercase().contains("domain"));
        for name in [
            "__Host-hatchway_session",
            "hatchway_token",
            " __host-HATCHWAY_x",
            "__Secure-hatchway",
        ] {
            assert!(is_ours(name), "{name}");
        }
        for name in ["session", "app_hatchway", "__Host-app"] {
            assert!(!is_ours(name), "{name}");
        }
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_cookies_and_codes_are_refused_without_panics(value in "\\PC{0,120}", host in "[a-z0-9.-]{0,30}") {
            let s = sessions();
            proptest::prop_assert!(s.check_session(&value, &host).is_err());
            proptest::prop_assert!(s.redeem(&value, &host).is_err());
            proptest::prop_assert!(s.code_replica(&value).is_err());
        }

        #[test]
        fn a_changed_byte_breaks_a_session(index in 0usize..200, byte in proptest::prelude::any::<u8>()) {
            let s = sessions();
            let value = s.mint_session(&alice(), "h");
            let mut bytes = value.clone().into_bytes();
            let i = index % bytes.len();
            proptest::prop_assume!(bytes[i] != byte);
            bytes[i] = byte;
            if let Ok(changed) = String::from_utf8(bytes) {
                proptest::prop_assert!(s.check_session(&changed, "h").is_err(), "{changed:?}");
            }
        }
    }
}
