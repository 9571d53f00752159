//! A signed identity for web apps (docs/security.md, "Who is calling"):
//! every authenticated web-app request reaches the app with
//! `Hatchway-Jwt-Assertion`, a JWT the app can verify against the
//! router's public keys at `/.well-known/jwks.json` — as Teleport's
//! `Teleport-Jwt-Assertion` and Cloudflare Access'
//! `Cf-Access-Jwt-Assertion` do.
//!
//! - **Algorithm**: EdDSA (Ed25519), `kid` names the key.
//! - **Keys** derive from the root secret (kept in the operator's Secret)
//!   and the rotation period the time falls in: `seed = HMAC-SHA256(root,
//!   "hatchway/web-app-assertion/v1/" ‖ period)`. Every replica signs with
//!   the same key without sharing state, and keys rotate by themselves.
//!   The key set publishes the previous, current and next period's keys:
//!   an app that cached the set an hour ago, or a replica whose clock is a
//!   little ahead, still verifies (rotation with overlap).
//! - **Claims**: `iss` (`hatchway`), `sub` (the user name TokenReview
//!   gave), `groups`, `aud` (the app's origin, `https://HOST`),
//!   `container_uid`, `namespace`, `container`, `iat`, `nbf`, `exp`
//!   (`iat` + 5 minutes at most).
//! - A client-sent header of that name never reaches an app: the router
//!   drops it on every web-app request, authenticated or public.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use aws_lc_rs::signature::{Ed25519KeyPair, KeyPair as _};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hatchway_api::proof::hmac_hex;
use serde::Serialize;

use super::auth::User;

/// The header an app reads (lowercase, as HTTP/2 and `http` spell it).
pub const HEADER: &str = hatchway_api::wire::JWT_ASSERTION;
/// Where the public keys are.
pub const JWKS_PATH: &str = "/.well-known/jwks.json";
/// How long an assertion is good for.
pub const LIFETIME_SECS: u64 = 300;
/// How long a signing key is used before the next one.
pub const ROTATION_SECS: u64 = 24 * 3600;
/// An assertion is reused while it has at least this long left (signing
/// each request would cost more than the request).
const REUSE_MARGIN_SECS: u64 = 240;
/// Assertions kept for reuse; the cache is emptied when it is full.
const CACHED: usize = 4096;

/// Signs assertions, serves the key set.
pub struct Signer {
    root: Vec<u8>,
    /// The current period's key, once derived.
    key: Mutex<Option<(u64, Arc<Ed25519KeyPair>)>>,
    /// Recent assertions by what they say.
    cache: Mutex<HashMap<CacheKey, (u64, String)>>,
}

/// User name, groups, audience, Container UID: everything an assertion
/// says but its times (the namespace and name go with the UID). A user
/// whose groups changed gets a new one.
type CacheKey = (String, Vec<String>, String, String);

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Signer(..)")
    }
}

/// The Container an app runs in.
#[derive(Debug, Clone, Copy)]
pub struct App<'a> {
    /// `https://HOST`: the app's origin.
    pub origin: &'a str,
    pub container_uid: &'a str,
    pub namespace: &'a str,
    pub container: &'a str,
}

#[derive(Serialize)]
struct Header<'a> {
    alg: &'static str,
    typ: &'static str,
    kid: &'a str,
}

#[derive(Serialize)]
struct Claims<'a> {
    iss: &'static str,
    sub: &'a str,
    groups: &'a [String],
    aud: &'a str,
    container_uid: &'a str,
    namespace: &'a str,
    container: &'a str,
    iat: u64,
    nbf: u64,
    exp: u64,
}

/// One public key of the set (RFC 8037's OKP key).
#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct Jwk {
    pub kty: String,
    pub crv: String,
    pub x: String,
    pub kid: String,
    pub alg: String,
    #[serde(rename = "use")]
    pub use_: String,
}

/// The key set (`/.well-known/jwks.json`).
#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct Jwks {
    pub keys: Vec<Jwk>,
}

fn kid(period: u64) -> String {
    format!("hatchway-{period}")
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl Signer {
    /// A signer whose keys derive from `root`.
    pub fn new(root: &[u8]) -> Self {
        Self {
            root: root.to_vec(),
            key: Mutex::default(),
            cache: Mutex::default(),
        }
    }

    fn derive(&self, period: u64) -> Ed25519KeyPair {
        let label = format!("hatchway/web-app-assertion/v1/{period}");
        let seed = hex::decode(hmac_hex(&self.root, label.as_bytes())).expect("HMAC hex decodes");
        Ed25519KeyPair::from_seed_unchecked(&seed).expect("32 bytes are an Ed25519 seed")
    }

    fn key(&self, period: u64) -> Arc<Ed25519KeyPair> {
        let mut key = self.key.lock().unwrap_or_else(|p| p.into_inner());
        match &*key {
            Some((p, pair)) if *p == period => pair.clone(),
            _ => {
                let pair = Arc::new(self.derive(period));
                *key = Some((period, pair.clone()));
                pair
            }
        }
    }

    /// The assertion for `user` calling `app`, now.
    pub fn assertion(&self, user: &User, app: App<'_>) -> String {
        self.assertion_at(user, app, unix_now())
    }

    /// [`Self::assertion`] at `now` (seconds since the epoch): a cached one
    /// while it has four minutes left, else a new one.
    pub fn assertion_at(&self, user: &User, app: App<'_>, now: u64) -> String {
        let cache_key = (
            user.username.clone(),
            user.groups.clone(),
            app.origin.to_owned(),
            app.container_uid.to_owned(),
        );
        {
            let cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
            if let Some((iat, token)) = cache.get(&cache_key)
                && *iat <= now
                && iat + LIFETIME_SECS >= now + REUSE_MARGIN_SECS
            {
                return token.clone();
            }
        }
        let token = self.sign(user, app, now);
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if cache.len() >= CACHED {
            cache.clear();
        }
        cache.insert(cache_key, (now, token.clone()));
        token
    }

    fn sign(&self, user: &User, app: App<'_>, now: u64) -> String {
        let period = now / ROTATION_SECS;
        let kid = kid(period);
        let header = serde_json::to_vec(&Header {
            alg: "EdDSA",
            typ: "JWT",
            kid: &kid,
        })
        .expect("a header serializes");
        let claims = serde_json::to_vec(&Claims {
            iss: "hatchway",
            sub: &user.username,
            groups: &user.groups,
            aud: app.origin,
            container_uid: app.container_uid,
            namespace: app.namespace,
            container: app.container,
            iat: now,
            nbf: now,
            exp: now + LIFETIME_SECS,
        })
        .expect("claims serialize");
        let signed = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header),
            URL_SAFE_NO_PAD.encode(claims)
        );
        let signature = self.key(period).sign(signed.as_bytes());
        format!("{signed}.{}", URL_SAFE_NO_PAD.encode(signature.as_ref()))
    }

    /// The public keys of the previous, current and next period.
    pub fn jwks(&self) -> Jwks {
        self.jwks_at(unix_now())
    }

    /// [`Self::jwks`] at `now`.
    pub fn jwks_at(&self, now: u64) -> Jwks {
        let period = now / ROTATION_SECS;
        let keys = [period.saturating_sub(1), period, period + 1]
            .into_iter()
            .map(|p| {
                let pair = if p == period {
                    self.key(p)
                } else {
                    Arc::new(self.derive(p))
                };
                Jwk {
                    kty: "OKP".into(),
                    crv: "Ed25519".into(),
                    x: URL_SAFE_NO_PAD.encode(pair.public_key().as_ref()),
                    kid: kid(p),
                    alg: "EdDSA".into(),
                    use_: "sig".into(),
                }
            })
            .collect();
        Jwks { keys }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_lc_rs::signature::{ED25519, UnparsedPublicKey};

    const ROOT: &[u8] = b"root secret of at least 32 bytes!";

    fn alice() -> User {
        User {
            username: "alice".into(),
            groups: vec!["system:authenticated".into(), "data-team".into()],
            ..User::default()
        }
    }

    fn app() -> App<'static> {
        App {
            origin: "https://uid-8888.apps.example.test",
            container_uid: "uid",
            namespace: "ns",
            container: "notebook",
        }
    }

    /// Checks `token` against `jwks` the way an app would: the signature
    /// by the key its `kid` names; returns the claims.
    fn verify(token: &str, jwks: &Jwks) -> serde_json::Value {
        let parts: Vec<&str> = token.split('.').collect();
        assert_eq!(parts.len(), 3, "{token}");
        let header: serde_json::Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[0]).unwrap()).unwrap();
        assert_eq!(header["alg"], "EdDSA");
        let key = jwks
            .keys
            .iter()
            .find(|k| k.kid == header["kid"])
            .unwrap_or_else(|| panic!("no key {} in the set", header["kid"]));
        let public = URL_SAFE_NO_PAD.decode(&key.x).unwrap();
        let signature = URL_SAFE_NO_PAD.decode(parts[2]).unwrap();
        UnparsedPublicKey::new(&ED25519, public)
            .verify(format!("{}.{}", parts[0], parts[1]).as_bytes(), &signature)
            .expect("the signature holds");
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap()
    }

    #[test]
    fn an_assertion_names_the_user_the_app_and_the_container_for_five_minutes() {
        let signer = Signer::new(ROOT);
        let now = 1_800_000_000;
        let token = signer.assertion_at(&alice(), app(), now);
        let claims = verify(&token, &signer.jwks_at(now));
        assert_eq!(claims["sub"], "alice");
        assert_eq!(
            claims["groups"],
            serde_json::json!(["system:authenticated", "data-team"])
        );
        assert_eq!(claims["aud"], "https://uid-8888.apps.example.test");
        assert_eq!(claims["container_uid"], "uid");
        assert_eq!(claims["namespace"], "ns");
        assert_eq!(claims["container"], "notebook");
        assert_eq!(claims["iss"], "hatchway");
        assert_eq!(claims["iat"], now);
        assert_eq!(claims["exp"], now + LIFETIME_SECS);
    }

    #[test]
    fn a_tampered_assertion_or_another_roots_key_does_not_verify() {
        let signer = Signer::new(ROOT);
        let now = 1_800_000_000;
        let token = signer.assertion_at(&alice(), app(), now);
        let (signed, signature) = token.rsplit_once('.').unwrap();
        let (header, claims) = signed.split_once('.').unwrap();
        let forged_claims = URL_SAFE_NO_PAD.encode(
            String::from_utf8(URL_SAFE_NO_PAD.decode(claims).unwrap())
                .unwrap()
                .replace("alice", "admin"),
        );
        let forged = format!("{header}.{forged_claims}.{signature}");
        let jwks = signer.jwks_at(now);
        let verified = std::panic::catch_unwind(|| verify(&forged, &jwks));
        assert!(verified.is_err(), "a changed claim still verified");
        let other = Signer::new(b"another root secret, 32 bytes ok");
        let verified = std::panic::catch_unwind(|| verify(&token, &other.jwks_at(now)));
        assert!(verified.is_err(), "another root's keys verified it");
    }

    #[test]
    fn keys_rotate_with_overlap_and_every_replica_derives_the_same() {
        let now = 1_800_000_000;
        let (a, b) = (Signer::new(ROOT), Signer::new(ROOT));
        assert_eq!(a.jwks_at(now), b.jwks_at(now), "two replicas publish one set");
        let token = a.assertion_at(&alice(), app(), now);
        // A day on, the key it was signed with is still published…
        verify(&token, &b.jwks_at(now + ROTATION_SECS));
        // …and a replica a little ahead signs with a key the set already has.
        let ahead = b.assertion_at(&alice(), app(), now + ROTATION_SECS);
        verify(&ahead, &a.jwks_at(now));
        // Two days on it is gone: keys do rotate.
        let later = a.jwks_at(now + 2 * ROTATION_SECS);
        let kid = serde_json::from_slice::<serde_json::Value>(
            &URL_SAFE_NO_PAD.decode(token.split('.').next().unwrap()).unwrap(),
        )
        .unwrap()["kid"]
            .as_str()
            .unwrap()
            .to_owned();
        assert!(later.keys.iter().all(|k| k.kid != kid));
    }

    #[test]
    fn an_assertion_is_reused_only_while_it_has_time_left() {
        let signer = Signer::new(ROOT);
        let now = 1_800_000_000;
        let first = signer.assertion_at(&alice(), app(), now);
        assert_eq!(signer.assertion_at(&alice(), app(), now + 50), first);
        let fresh = signer.assertion_at(&alice(), app(), now + 61);
        assert_ne!(fresh, first, "one with less than four minutes left is not reused");
        let other = App {
            origin: "https://other.apps.example.test",
            ..app()
        };
        assert_ne!(signer.assertion_at(&alice(), other, now + 61), fresh);
        // Groups are claims: new groups, a new assertion.
        let mut regrouped = alice();
        regrouped.groups.pop();
        assert_ne!(signer.assertion_at(&regrouped, app(), now + 62), fresh);
    }
}
