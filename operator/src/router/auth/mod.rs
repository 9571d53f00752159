//! Who may do what (DESIGN.md, "Trust model", users -> router).
//!
//! The router takes a token from the request (a bearer token, or an HTTP
//! basic password for WebDAV clients; web apps use the router's own session
//! instead, see `router::session`), asks an [`Auth`] who
//! it belongs to, and asks again whether that user holds the permission the
//! request needs on the Container. The real implementation asks the
//! Kubernetes API (TokenReview, SubjectAccessReview, [`kube`]); tests use a
//! table. [`cache::CachedAuth`] keeps answers briefly with a size bound.

pub mod cache;
pub mod kube;

use std::collections::BTreeMap;
use std::fmt;

use futures::future::BoxFuture;
use http::{HeaderMap, header};

/// An authenticated user, as TokenReview (or the API server's front
/// proxy) reports it.
#[derive(Clone, Debug, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct User {
    /// The user name (`system:serviceaccount:ns:name` for a ServiceAccount).
    pub username: String,
    /// The user's UID, when the authenticator knows one.
    pub uid: String,
    /// Groups the user belongs to.
    pub groups: Vec<String>,
    /// Extra attributes (passed through to SubjectAccessReview unchanged).
    pub extra: BTreeMap<String, Vec<String>>,
}

/// A permission on a Container's subresource: what SubjectAccessReview is
/// asked about. The `Display` form names it the way RBAC rules do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Permission {
    /// The verb (`create`, `get`).
    pub verb: &'static str,
    /// The subresource of `containers.hatchway.dev`.
    pub subresource: &'static str,
}

impl Permission {
    /// Opening a shell (SSH session).
    pub const SHELL: Permission = Permission::new("create", "shell");
    /// Reading logs.
    pub const LOG: Permission = Permission::new("get", "log");
    /// Forwarding a TCP port.
    pub const PORTFORWARD: Permission = Permission::new("create", "portforward");
    /// Reading from a web app (GET, HEAD, OPTIONS).
    pub const PROXY_GET: Permission = Permission::new("get", "proxy");
    /// Writing to a web app (every other method, WebSockets).
    pub const PROXY_CREATE: Permission = Permission::new("create", "proxy");
    /// Listing a namespace's Containers (the web page's list; no
    /// subresource).
    pub const LIST: Permission = Permission::new("list", "");

    const fn new(verb: &'static str, subresource: &'static str) -> Self {
        Self { verb, subresource }
    }
}

impl fmt::Display for Permission {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.subresource {
            "" => write!(f, "{} containers", self.verb),
            subresource => write!(f, "{} containers/{subresource}", self.verb),
        }
    }
}

/// Why authentication or authorization gave no answer.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// The token is not valid (unknown, expired, wrong audience): 401.
    #[error("{0}")]
    Unauthenticated(String),
    /// The Kubernetes API could not be asked: 503, try again.
    #[error("cannot check access right now: {0}")]
    Unavailable(String),
}

/// Authentication and authorization: one small interface so the router's
/// tests run without a cluster.
pub trait Auth: Send + Sync + 'static {
    /// Who owns `token`.
    fn authenticate<'a>(&'a self, token: &'a str) -> BoxFuture<'a, Result<User, AuthError>>;

    /// Whether `user` holds `permission` on Container `namespace/name`.
    fn authorize<'a>(
        &'a self,
        user: &'a User,
        namespace: &'a str,
        name: &'a str,
        permission: Permission,
    ) -> BoxFuture<'a, Result<bool, AuthError>>;
}

/// Where a request's token came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CredentialSource {
    /// `Authorization: Bearer …`.
    Bearer,
    /// `Authorization: Basic …` (the password is the token; the user name
    /// is ignored).
    Basic,
}

/// A token and where it came from. `Debug` never prints the token.
#[derive(Clone, PartialEq, Eq)]
pub struct Credential {
    /// Where it came from.
    pub source: CredentialSource,
    /// The token itself.
    pub token: String,
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credential")
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

/// Why a request's credentials could not be read.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum CredentialError {
    /// An Authorization header in a scheme we do not take, or malformed.
    #[error("{0}")]
    Malformed(&'static str),
}

/// Reads the token from `Authorization` (Bearer or Basic). `None` when the
/// request carries no Authorization header.
pub fn from_authorization(headers: &HeaderMap) -> Result<Option<Credential>, CredentialError> {
    use base64::Engine;
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Ok(None);
    };
    let value = value
        .to_str()
        .map_err(|_| CredentialError::Malformed("the Authorization header is not ASCII"))?
        .trim();
    let (scheme, rest) = value.split_once(' ').unwrap_or((value, ""));
    let rest = rest.trim();
    if scheme.eq_ignore_ascii_case("bearer") {
        if rest.is_empty() {
            return Err(CredentialError::Malformed("the bearer token is empty"));
        }
        return Ok(Some(Credential {
            source: CredentialSource::Bearer,
            token: rest.to_owned(),
        }));
    }
    if scheme.eq_ignore_ascii_case("basic") {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(rest)
            .map_err(|_| CredentialError::Malformed("the basic credentials are not base64"))?;
        let decoded = String::from_utf8(decoded)
            .map_err(|_| CredentialError::Malformed("the basic credentials are not UTF-8"))?;
        let password = decoded
            .split_once(':')
            .map(|(_, password)| password)
            .ok_or(CredentialError::Malformed("the basic credentials have no ':'"))?;
        if password.is_empty() {
            return Err(CredentialError::Malformed(
                "the basic password is empty (it must be the token)",
            ));
        }
        return Ok(Some(Credential {
            source: CredentialSource::Basic,
            token: password.to_owned(),
        }));
    }
    Err(CredentialError::Malformed(
        "the Authorization header must be 'Bearer <token>' or 'Basic <base64 user:token>'",
    ))
}

/// Every value of cookie `name` in the request's `Cookie` headers.
pub fn cookie_values<'a>(headers: &'a HeaderMap, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(move |pair| {
            let (k, v) = pair.trim().split_once('=')?;
            (k.trim() == name).then(|| v.trim().trim_matches('"'))
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (k, v) in pairs {
            map.append(*k, HeaderValue::from_str(v).unwrap());
        }
        map
    }

    #[test]
    fn bearer_and_basic_tokens_are_read() {
        let bearer = from_authorization(&headers(&[("authorization", "Bearer abc.def")])).unwrap();
        assert_eq!(bearer.unwrap().token, "abc.def");
        // "user:tok:en" — the password is everything after the first colon.
        let basic = from_authorization(&headers(&[("authorization", "Basic dXNlcjp0b2s6ZW4=")])).unwrap();
        let basic = basic.unwrap();
        assert_eq!(basic.source, CredentialSource::Basic);
        assert_eq!(basic.token, "tok:en");
        assert_eq!(from_authorization(&HeaderMap::new()).unwrap(), None);
    }

    #[test]
    fn malformed_authorization_is_refused_with_a_reason() {
        for bad in [
            "Bearer ",
            "Basic !!!",
            "Basic dXNlcg==",
            "Basic dXNlcjo=",
            "Digest x",
            "token",
        ] {
            let err = from_authorization(&headers(&[("authorization", bad)])).unwrap_err();
            assert!(!err.to_string().is_empty(), "{bad}");
        }
    }

    #[test]
    fn cookie_values_are_found_among_others() {
        let h = headers(&[("cookie", "a=1; s=v.1; b=2"), ("cookie", "s=\"v2\"")]);
        assert_eq!(cookie_values(&h, "s").collect::<Vec<_>>(), ["v.1", "v2"]);
        assert_eq!(cookie_values(&h, "c").count(), 0);
    }

    proptest::proptest! {
        #[test]
        fn cookie_values_never_span_pairs(header in "[ -~]{0,120}", name in "[a-z_]{1,8}") {
            if let Ok(value) = HeaderValue::from_str(&header) {
                let h = headers(&[("cookie", value.to_str().unwrap())]);
                for v in cookie_values(&h, &name) {
                    proptest::prop_assert!(!v.contains(';'), "{v:?}");
                }
            }
        }

        #[test]
        fn authorization_headers_give_a_token_or_a_reason(header in "[ -~]{0,80}") {
            if let Ok(value) = HeaderValue::from_str(&header) {
                let h = headers(&[("authorization", value.to_str().unwrap())]);
                match from_authorization(&h) {
                    Ok(Some(credential)) => proptest::prop_assert!(!credential.token.is_empty()),
                    Ok(None) => proptest::prop_assert!(false, "a header was there"),
                    Err(error) => proptest::prop_assert!(!error.to_string().is_empty()),
                }
            }
        }
    }
}
