//! [`CachedAuth`]: keeps another [`Auth`]'s answers for a while, so a user's
//! every request does not cost a TokenReview and a SubjectAccessReview.
//!
//! - Authentication answers are keyed by the SHA-256 of the token: the token
//!   itself is never kept, so a heap dump of the cache holds no credential.
//! - Rejections ([`AuthError::Unauthenticated`]) are kept too, for at most
//!   [`NEGATIVE_TTL`]: someone guessing tokens then costs the API server one
//!   review per distinct guess, not one per request, while a token that just
//!   became valid is not refused for long.
//! - [`AuthError::Unavailable`] is never kept: the next request asks again.
//! - When the API server does not answer, the routers keep serving from
//!   the cache: an answer past its TTL is kept [`Patience::stale_for`]
//!   longer (5 min), and a request that finds one gives the API server
//!   [`Patience::stale_answer_within`] (2 s) to answer afresh before the
//!   old answer is used (counted `stale`). Without any answer to fall back
//!   on, the API server has [`Patience::answer_within`] (10 s), then the
//!   request is refused as unavailable (503) instead of waiting for as long
//!   as the connection to it lasts. Once a review went unanswered, the API
//!   server is taken as silent for [`Patience::silent_for`] (10 s): a
//!   request with an old answer to fall back on uses it at once instead of
//!   waiting 2 s again (a `logs -f` pays the wait once per window, not on
//!   every read and review); any answer ends the window. The price, recorded in
//!   docs/decisions.md: a token revoked or a right removed *while the API
//!   server cannot be reached* keeps working on a replica that had it
//!   cached, for at most 5 minutes; while it answers, for at most the TTL.
//! - Authorization answers are keyed by everything SubjectAccessReview is
//!   asked (user name, UID, groups, extra, namespace, name, permission).
//! - Each cache holds at most `max_entries`; when full, expired entries go
//!   first, then the oldest.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::hash::Hash;
use std::sync::Mutex;
use std::time::Duration;

use futures::future::BoxFuture;
use prometheus::{IntCounterVec, Opts};
use sha2::{Digest, Sha256};
use tokio::time::Instant;

use super::{Auth, AuthError, Permission, User};

/// The longest a rejected token's answer is kept, whatever the TTL.
pub const NEGATIVE_TTL: Duration = Duration::from_secs(5);

/// How long the cache waits for the API server, and how long an old answer
/// may stand in for it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Patience {
    /// How long an answer is kept after its TTL, for when the API server
    /// does not answer.
    pub stale_for: Duration,
    /// How long the API server has to answer when an old answer is there to
    /// fall back on.
    pub stale_answer_within: Duration,
    /// How long it has when there is none (then: unavailable).
    pub answer_within: Duration,
    /// After a review went unanswered, how long old answers are used
    /// without asking (requests with none still ask).
    pub silent_for: Duration,
}

impl Default for Patience {
    fn default() -> Self {
        Self {
            stale_for: Duration::from_secs(300),
            stale_answer_within: Duration::from_secs(2),
            answer_within: Duration::from_secs(10),
            silent_for: Duration::from_secs(10),
        }
    }
}

/// An [`Auth`] that remembers `inner`'s answers for `ttl` (rejections for at
/// most [`NEGATIVE_TTL`]). `Debug` shows sizes only.
pub struct CachedAuth<A: Auth> {
    inner: A,
    ttl: Duration,
    /// `Instant::now` outside tests. Tests turn the clock by hand: the
    /// operator's tokio has no `test-util` (no `time::pause`), and waiting
    /// out real TTLs would make slow, flaky tests.
    clock: Box<dyn Fn() -> Instant + Send + Sync>,
    authn: Mutex<Bounded<[u8; 32], Result<User, String>>>,
    authz: Mutex<Bounded<AuthzKey, bool>>,
    patience: Patience,
    /// Until when the API server is taken as silent (a review went
    /// unanswered): old answers are used without asking.
    silent_until: Mutex<Option<Instant>>,
    /// Lookups by review (`token`, `access`) and result (`hit`, `miss`,
    /// `stale`: an old answer used because the API server did not answer):
    /// [`CachedAuth::lookups`] for the router's registry.
    lookups: IntCounterVec,
}

/// Everything a SubjectAccessReview is asked: two requests that agree on all
/// of it get the same answer.
#[derive(Clone, PartialEq, Eq, Hash)]
struct AuthzKey {
    username: String,
    uid: String,
    groups: Vec<String>,
    extra: BTreeMap<String, Vec<String>>,
    namespace: String,
    name: String,
    permission: Permission,
}

impl<A: Auth> CachedAuth<A> {
    /// Caches `inner`'s answers for `ttl`, at most `max_entries` of each
    /// kind (authentication, authorization). A zero `ttl` or `max_entries`
    /// turns caching off.
    pub fn new(inner: A, ttl: Duration, max_entries: usize) -> Self {
        Self::with_clock(inner, ttl, max_entries, Patience::default(), Instant::now)
    }

    fn with_clock(
        inner: A,
        ttl: Duration,
        max_entries: usize,
        patience: Patience,
        clock: impl Fn() -> Instant + Send + Sync + 'static,
    ) -> Self {
        Self {
            inner,
            ttl,
            patience,
            silent_until: Mutex::new(None),
            clock: Box::new(clock),
            authn: Mutex::new(Bounded::new(max_entries)),
            authz: Mutex::new(Bounded::new(max_entries)),
            lookups: IntCounterVec::new(
                Opts::new(
                    "auth_cache_lookups_total",
                    "Authentication (token) and authorization (access) lookups, by whether the cache held the answer.",
                ),
                &["review", "result"],
            )
            .expect("valid metric"),
        }
    }

    /// The lookup counter, to register (`auth_cache_lookups_total{review,result}`).
    pub fn lookups(&self) -> IntCounterVec {
        self.lookups.clone()
    }

    fn count(&self, review: &str, result: &str) {
        self.lookups.with_label_values(&[review, result]).inc();
    }

    /// `ask`'s answer within the patience the cache has; an
    /// [`AuthError::Unavailable`] when the API server did not answer in
    /// time, or could not. `fallback`: an old answer can stand in — then,
    /// while the API server is taken as silent, it is not asked at all.
    async fn ask<T, F: Future<Output = Result<T, AuthError>>>(
        &self,
        fallback: bool,
        ask: impl FnOnce() -> F,
    ) -> Result<T, AuthError> {
        if fallback && self.silent() {
            return Err(AuthError::Unavailable(
                "the API server did not answer a review moments ago".to_owned(),
            ));
        }
        let within = if fallback {
            self.patience.stale_answer_within
        } else {
            self.patience.answer_within
        };
        let answer = tokio::time::timeout(within, ask()).await.unwrap_or_else(|_| {
            Err(AuthError::Unavailable(format!(
                "the API server did not answer within {within:?}"
            )))
        });
        *lock(&self.silent_until) = match &answer {
            Err(AuthError::Unavailable(_)) => Some((self.clock)() + self.patience.silent_for),
            _ => None,
        };
        answer
    }

    /// Whether a review went unanswered less than `silent_for` ago.
    fn silent(&self) -> bool {
        lock(&self.silent_until).is_some_and(|until| until > (self.clock)())
    }

    /// The wrapped `Auth`.
    pub fn inner(&self) -> &A {
        &self.inner
    }

    /// How many (authentication, authorization) answers are held now,
    /// expired ones included until they are swept.
    pub fn len(&self) -> (usize, usize) {
        (lock(&self.authn).len(), lock(&self.authz).len())
    }

    /// True when no answer is held.
    pub fn is_empty(&self) -> bool {
        self.len() == (0, 0)
    }
}

/// A poisoned lock only means another request panicked mid-update of a
/// cache; the map is still consistent enough to serve (worst case a stale
/// index entry), so keep going rather than fail every later request.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl<A: Auth> fmt::Debug for CachedAuth<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (authn, authz) = self.len();
        f.debug_struct("CachedAuth")
            .field("ttl", &self.ttl)
            .field("authn_entries", &authn)
            .field("authz_entries", &authz)
            .finish_non_exhaustive()
    }
}

impl<A: Auth> Auth for CachedAuth<A> {
    fn authenticate<'a>(&'a self, token: &'a str) -> BoxFuture<'a, Result<User, AuthError>> {
        Box::pin(async move {
            let key: [u8; 32] = Sha256::digest(token.as_bytes()).into();
            let held = lock(&self.authn).get(&key, (self.clock)());
            if let Some((answer, true)) = held {
                self.count("token", "hit");
                return answer.map_err(AuthError::Unauthenticated);
            }
            let answer = self.ask(held.is_some(), || self.inner.authenticate(token)).await;
            let kept = match &answer {
                Ok(user) => Some((Ok(user.clone()), self.ttl)),
                Err(AuthError::Unauthenticated(msg)) => Some((Err(msg.clone()), self.ttl.min(NEGATIVE_TTL))),
                Err(AuthError::Unavailable(why)) => {
                    if let Some((old, _)) = held {
                        self.count("token", "stale");
                        tracing::warn!(%why, "the API server did not answer a TokenReview: the last answer stands");
                        return old.map_err(AuthError::Unauthenticated);
                    }
                    None
                }
            };
            self.count("token", "miss");
            if let Some((value, ttl)) = kept {
                lock(&self.authn).insert(key, value, (self.clock)(), ttl, self.patience.stale_for);
            }
            answer
        })
    }

    fn authorize<'a>(
        &'a self,
        user: &'a User,
        namespace: &'a str,
        name: &'a str,
        permission: Permission,
    ) -> BoxFuture<'a, Result<bool, AuthError>> {
        Box::pin(async move {
            let key = AuthzKey {
                username: user.username.clone(),
                uid: user.uid.clone(),
                groups: user.groups.clone(),
                extra: user.extra.clone(),
                namespace: namespace.to_owned(),
                name: name.to_owned(),
                permission,
            };
            let held = lock(&self.authz).get(&key, (self.clock)());
            if let Some((allowed, true)) = held {
                self.count("access", "hit");
                return Ok(allowed);
            }
            let answer = self
                .ask(held.is_some(), || {
                    self.inner.authorize(user, namespace, name, permission)
                })
                .await;
            let allowed = match (answer, held) {
                (Ok(allowed), _) => allowed,
                (Err(AuthError::Unavailable(why)), Some((old, _))) => {
                    self.count("access", "stale");
                    tracing::warn!(%why, "the API server did not answer a SubjectAccessReview: the last answer stands");
                    return Ok(old);
                }
                (Err(error), None) => {
                    self.count("access", "miss");
                    return Err(error);
                }
                (Err(error), Some(_)) => return Err(error),
            };
            self.count("access", "miss");
            lock(&self.authz).insert(key, allowed, (self.clock)(), self.ttl, self.patience.stale_for);
            Ok(allowed)
        })
    }
}

/// A map with per-entry expiry and a size bound. Two ordered indices make
/// every operation O(log n): sweeping expired entries walks `by_expiry` from
/// its start, evicting the oldest pops `by_age`'s first entry.
struct Bounded<K, V> {
    max: usize,
    entries: HashMap<K, Entry<V>>,
    /// (kept until, sequence) -> nothing: the first to go sort first.
    by_expiry: BTreeMap<(Instant, u64), ()>,
    /// Insertion sequence -> key: the oldest sorts first.
    by_age: BTreeMap<u64, K>,
    next_seq: u64,
}

struct Entry<V> {
    value: V,
    /// A hit until then.
    fresh_until: Instant,
    /// Held until then (for when the API server does not answer).
    keep_until: Instant,
    seq: u64,
}

impl<K: Clone + Eq + Hash, V: Clone> Bounded<K, V> {
    fn new(max: usize) -> Self {
        Self {
            max,
            entries: HashMap::new(),
            by_expiry: BTreeMap::new(),
            by_age: BTreeMap::new(),
            next_seq: 0,
        }
    }

    fn len(&self) -> usize {
        self.entries.len()
    }

    /// The value of `key` and whether it is still fresh (within its TTL);
    /// one past its keeping is removed.
    fn get(&mut self, key: &K, now: Instant) -> Option<(V, bool)> {
        let entry = self.entries.get(key)?;
        if entry.keep_until > now {
            return Some((entry.value.clone(), entry.fresh_until > now));
        }
        self.remove(key);
        None
    }

    /// Keeps `value`: fresh for `ttl`, then held `stale` longer.
    fn insert(&mut self, key: K, value: V, now: Instant, ttl: Duration, stale: Duration) {
        if self.max == 0 || ttl.is_zero() {
            return;
        }
        self.remove(&key);
        if self.entries.len() >= self.max {
            self.sweep(now);
        }
        while self.entries.len() >= self.max {
            let Some((_, oldest)) = self.by_age.first_key_value() else {
                break;
            };
            let oldest = oldest.clone();
            self.remove(&oldest);
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        let fresh_until = now + ttl;
        let keep_until = fresh_until + stale;
        self.by_expiry.insert((keep_until, seq), ());
        self.by_age.insert(seq, key.clone());
        self.entries.insert(
            key,
            Entry {
                value,
                fresh_until,
                keep_until,
                seq,
            },
        );
    }

    /// Drops every entry past its keeping at `now`.
    fn sweep(&mut self, now: Instant) {
        while let Some((&(expires, seq), ())) = self.by_expiry.first_key_value() {
            if expires > now {
                break;
            }
            match self.by_age.get(&seq).cloned() {
                Some(key) => self.remove(&key),
                // Cannot happen (the indices change together), but never
                // loop forever on an orphan.
                None => {
                    self.by_expiry.remove(&(expires, seq));
                }
            }
        }
    }

    fn remove(&mut self, key: &K) {
        if let Some(entry) = self.entries.remove(key) {
            self.by_expiry.remove(&(entry.keep_until, entry.seq));
            self.by_age.remove(&entry.seq);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// An `Auth` that counts its calls: tokens starting with `good` belong
    /// to the user named by the rest, `down` is Unavailable, anything else
    /// is refused; only `alice` may open a shell.
    #[derive(Clone, Default)]
    struct Counting {
        authn_calls: Arc<AtomicUsize>,
        authz_calls: Arc<AtomicUsize>,
        /// Set: every call hangs, as calls to a stopped API server do.
        silent: Arc<std::sync::atomic::AtomicBool>,
    }

    impl Counting {
        fn authn(&self) -> usize {
            self.authn_calls.load(Ordering::SeqCst)
        }
        fn authz(&self) -> usize {
            self.authz_calls.load(Ordering::SeqCst)
        }
    }

    impl Auth for Counting {
        fn authenticate<'a>(&'a self, token: &'a str) -> BoxFuture<'a, Result<User, AuthError>> {
            self.authn_calls.fetch_add(1, Ordering::SeqCst);
            let silent = self.silent.load(Ordering::SeqCst);
            Box::pin(async move {
                if silent {
                    return std::future::pending().await;
                }
                if let Some(name) = token.strip_prefix("good") {
                    Ok(User {
                        username: name.to_owned(),
                        ..User::default()
                    })
                } else if token == "down" {
                    Err(AuthError::Unavailable("no API server".into()))
                } else {
                    Err(AuthError::Unauthenticated("token rejected".into()))
                }
            })
        }

        fn authorize<'a>(
            &'a self,
            user: &'a User,
            _namespace: &'a str,
            _name: &'a str,
            permission: Permission,
        ) -> BoxFuture<'a, Result<bool, AuthError>> {
            self.authz_calls.fetch_add(1, Ordering::SeqCst);
            let silent = self.silent.load(Ordering::SeqCst);
            Box::pin(async move {
                if silent {
                    return std::future::pending().await;
                }
                if user.username == "down" {
                    return Err(AuthError::Unavailable("no API server".into()));
                }
                Ok(user.username == "alice" && permission == Permission::SHELL)
            })
        }
    }

    const TTL: Duration = Duration::from_secs(30);

    /// A clock that moves only when told.
    #[derive(Clone)]
    struct Clock(Arc<Mutex<Instant>>);

    impl Clock {
        fn new() -> Self {
            Self(Arc::new(Mutex::new(Instant::now())))
        }
        fn advance(&self, by: Duration) {
            *lock(&self.0) += by;
        }
    }

    fn cached(inner: &Counting, ttl: Duration, max: usize) -> (CachedAuth<Counting>, Clock) {
        // No stale answers: an expired one is gone (the tests of the TTL).
        let patience = Patience {
            stale_for: Duration::ZERO,
            ..Patience::default()
        };
        cached_with(inner, ttl, max, patience)
    }

    /// `inner` cached with `patience`, on a clock turned by hand.
    fn cached_with(
        inner: &Counting,
        ttl: Duration,
        max: usize,
        patience: Patience,
    ) -> (CachedAuth<Counting>, Clock) {
        let clock = Clock::new();
        let now = clock.clone();
        let auth = CachedAuth::with_clock(inner.clone(), ttl, max, patience, move || *lock(&now.0));
        (auth, clock)
    }

    /// The API server stops answering (hangs, as a stopped or partitioned
    /// one does): an answer past its TTL stands for `stale_for` after a
    /// short wait, counted `stale`; without one the request is refused as
    /// unavailable after its own wait, not held; once the API server
    /// answers again its answers are used.
    #[tokio::test]
    async fn old_answers_stand_while_the_api_server_does_not_answer() {
        let inner = Counting::default();
        let patience = Patience {
            stale_for: Duration::from_secs(300),
            stale_answer_within: Duration::from_millis(20),
            answer_within: Duration::from_millis(40),
            silent_for: Duration::from_secs(10),
        };
        let (auth, clock) = cached_with(&inner, TTL, 100, patience);
        let alice = auth.authenticate("goodalice").await.unwrap();
        assert!(
            auth.authorize(&alice, "ns", "c", Permission::SHELL)
                .await
                .unwrap()
        );
        clock.advance(TTL);
        inner.silent.store(true, Ordering::SeqCst);
        assert_eq!(auth.authenticate("goodalice").await.unwrap().username, "alice");
        assert!(
            auth.authorize(&alice, "ns", "c", Permission::SHELL)
                .await
                .unwrap()
        );
        assert!(
            matches!(
                auth.authorize(&alice, "ns", "c", Permission::LOG).await,
                Err(AuthError::Unavailable(_))
            ),
            "never asked before: unavailable, not allowed"
        );
        let lookups = auth.lookups();
        assert_eq!(lookups.with_label_values(&["token", "stale"]).get(), 1);
        assert_eq!(lookups.with_label_values(&["access", "stale"]).get(), 1);
        // Nothing to fall back on: unavailable, in words.
        match auth.authenticate("goodbob").await {
            Err(AuthError::Unavailable(why)) => assert!(why.contains("did not answer within 40ms"), "{why}"),
            other => panic!("{other:?}"),
        }
        // Past the stale window the old answer is gone too.
        clock.advance(Duration::from_secs(300));
        assert!(matches!(
            auth.authenticate("goodalice").await,
            Err(AuthError::Unavailable(_))
        ));
        // Answering again: asked and kept.
        inner.silent.store(false, Ordering::SeqCst);
        let calls = inner.authn();
        assert_eq!(auth.authenticate("goodalice").await.unwrap().username, "alice");
        assert_eq!(auth.authenticate("goodalice").await.unwrap().username, "alice");
        assert_eq!(inner.authn(), calls + 1, "the fresh answer is kept");
    }

    /// Once a review went unanswered, requests with an old answer use it
    /// without asking (no wait) for `silent_for`; a request with none still
    /// asks; after the window the API server is asked again, and an answer
    /// ends the window at once.
    #[tokio::test]
    async fn after_one_unanswered_review_old_answers_stand_at_once() {
        let inner = Counting::default();
        let patience = Patience {
            stale_for: Duration::from_secs(300),
            // Long enough that a test which waited for it would be slow.
            stale_answer_within: Duration::from_millis(300),
            answer_within: Duration::from_millis(300),
            silent_for: Duration::from_secs(10),
        };
        let (auth, clock) = cached_with(&inner, TTL, 100, patience);
        let alice = auth.authenticate("goodalice").await.unwrap();
        auth.authorize(&alice, "ns", "c", Permission::SHELL)
            .await
            .unwrap();
        clock.advance(TTL);
        inner.silent.store(true, Ordering::SeqCst);
        let asked = (inner.authn(), inner.authz());
        // The first waits and finds no answer...
        let started = std::time::Instant::now();
        assert_eq!(auth.authenticate("goodalice").await.unwrap().username, "alice");
        assert!(started.elapsed() >= Duration::from_millis(300));
        assert_eq!((inner.authn(), inner.authz()), (asked.0 + 1, asked.1));
        // ...the next, within the window, do not ask.
        assert!(
            auth.authorize(&alice, "ns", "c", Permission::SHELL)
                .await
                .unwrap()
        );
        assert_eq!(auth.authenticate("goodalice").await.unwrap().username, "alice");
        assert_eq!(
            (inner.authn(), inner.authz()),
            (asked.0 + 1, asked.1),
            "not asked in the window"
        );
        let lookups = auth.lookups();
        assert_eq!(lookups.with_label_values(&["token", "stale"]).get(), 2);
        assert_eq!(lookups.with_label_values(&["access", "stale"]).get(), 1);
        // Nothing to fall back on: still asked.
        assert!(matches!(
            auth.authorize(&alice, "ns", "c", Permission::LOG).await,
            Err(AuthError::Unavailable(_))
        ));
        assert_eq!(inner.authz(), asked.1 + 1);
        // Past the window: asked again; answering ends the window.
        clock.advance(Duration::from_secs(10));
        inner.silent.store(false, Ordering::SeqCst);
        assert_eq!(auth.authenticate("goodalice").await.unwrap().username, "alice");
        assert_eq!(inner.authn(), asked.0 + 2);
        assert!(
            auth.authorize(&alice, "ns", "c", Permission::SHELL)
                .await
                .unwrap()
        );
        assert_eq!(
            inner.authz(),
            asked.1 + 2,
            "asked: the window ended with the answer"
        );
    }

    fn user(name: &str) -> User {
        User {
            username: name.to_owned(),
            ..User::default()
        }
    }

    #[tokio::test]
    async fn authentication_hits_within_the_ttl_and_asks_again_after() {
        let inner = Counting::default();
        let (auth, clock) = cached(&inner, TTL, 100);
        for _ in 0..3 {
            assert_eq!(auth.authenticate("goodalice").await.unwrap().username, "alice");
        }
        assert_eq!(inner.authn(), 1);
        clock.advance(TTL - Duration::from_secs(1));
        auth.authenticate("goodalice").await.unwrap();
        assert_eq!(inner.authn(), 1);
        clock.advance(Duration::from_secs(1));
        auth.authenticate("goodalice").await.unwrap();
        assert_eq!(inner.authn(), 2, "an expired answer is asked again");
        // Another token is another entry.
        assert_eq!(auth.authenticate("goodbob").await.unwrap().username, "bob");
        assert_eq!(inner.authn(), 3);
        // Counted: 6 lookups, the 3 the API server answered are misses.
        let lookups = auth.lookups();
        assert_eq!(lookups.with_label_values(&["token", "hit"]).get(), 3);
        assert_eq!(lookups.with_label_values(&["token", "miss"]).get(), 3);
        assert_eq!(lookups.with_label_values(&["access", "miss"]).get(), 0);
    }

    #[tokio::test]
    async fn rejections_are_kept_briefly_and_unavailable_never() {
        let inner = Counting::default();
        let (auth, clock) = cached(&inner, TTL, 100);
        for _ in 0..3 {
            let err = auth.authenticate("forged").await.unwrap_err();
            assert!(
                matches!(err, AuthError::Unauthenticated(ref m) if m == "token rejected"),
                "{err:?}"
            );
        }
        assert_eq!(inner.authn(), 1, "a rejection is cached");
        clock.advance(NEGATIVE_TTL);
        auth.authenticate("forged").await.unwrap_err();
        assert_eq!(inner.authn(), 2, "for NEGATIVE_TTL only, not the whole TTL");

        for n in 1..=3 {
            let err = auth.authenticate("down").await.unwrap_err();
            assert!(matches!(err, AuthError::Unavailable(_)), "{err:?}");
            assert_eq!(inner.authn(), 2 + n, "Unavailable is not cached");
        }
        let err = auth.authorize(&user("down"), "ns", "c", Permission::SHELL).await;
        assert!(matches!(err, Err(AuthError::Unavailable(_))));
        auth.authorize(&user("down"), "ns", "c", Permission::SHELL)
            .await
            .unwrap_err();
        assert_eq!(inner.authz(), 2, "Unavailable is not cached");
    }

    #[tokio::test]
    async fn a_short_ttl_bounds_the_negative_ttl_too() {
        let inner = Counting::default();
        let (auth, clock) = cached(&inner, Duration::from_secs(1), 100);
        auth.authenticate("forged").await.unwrap_err();
        clock.advance(Duration::from_secs(1));
        auth.authenticate("forged").await.unwrap_err();
        assert_eq!(inner.authn(), 2);
    }

    #[tokio::test]
    async fn authorization_is_keyed_by_everything_it_asks() {
        let inner = Counting::default();
        let (auth, clock) = cached(&inner, TTL, 100);
        let alice = user("alice");
        assert!(
            auth.authorize(&alice, "ns", "c", Permission::SHELL)
                .await
                .unwrap()
        );
        assert!(
            auth.authorize(&alice, "ns", "c", Permission::SHELL)
                .await
                .unwrap()
        );
        assert_eq!(inner.authz(), 1);
        // Denials are cached like grants.
        assert!(!auth.authorize(&alice, "ns", "c", Permission::LOG).await.unwrap());
        assert!(!auth.authorize(&alice, "ns", "c", Permission::LOG).await.unwrap());
        assert_eq!(inner.authz(), 2);
        // Any difference asks again.
        let mut in_group = alice.clone();
        in_group.groups.push("admins".into());
        let mut with_extra = alice.clone();
        with_extra.extra.insert("scopes".into(), vec!["x".into()]);
        let mut with_uid = alice.clone();
        with_uid.uid = "u-1".into();
        auth.authorize(&in_group, "ns", "c", Permission::SHELL)
            .await
            .unwrap();
        auth.authorize(&with_extra, "ns", "c", Permission::SHELL)
            .await
            .unwrap();
        auth.authorize(&with_uid, "ns", "c", Permission::SHELL)
            .await
            .unwrap();
        auth.authorize(&alice, "other", "c", Permission::SHELL)
            .await
            .unwrap();
        auth.authorize(&alice, "ns", "d", Permission::SHELL)
            .await
            .unwrap();
        auth.authorize(&user("bob"), "ns", "c", Permission::SHELL)
            .await
            .unwrap();
        assert_eq!(inner.authz(), 8);
        clock.advance(TTL);
        auth.authorize(&alice, "ns", "c", Permission::SHELL)
            .await
            .unwrap();
        assert_eq!(inner.authz(), 9, "expired");
    }

    #[tokio::test]
    async fn the_size_bound_holds_and_the_oldest_goes_first() {
        let inner = Counting::default();
        let (auth, clock) = cached(&inner, TTL, 3);
        for name in ["a", "b", "c", "d"] {
            auth.authenticate(&format!("good{name}")).await.unwrap();
            clock.advance(Duration::from_millis(10));
        }
        assert_eq!(auth.len().0, 3);
        assert_eq!(inner.authn(), 4);
        // "a" was the oldest: evicted; "b".."d" are still there.
        for name in ["b", "c", "d"] {
            auth.authenticate(&format!("good{name}")).await.unwrap();
        }
        assert_eq!(inner.authn(), 4);
        auth.authenticate("gooda").await.unwrap();
        assert_eq!(inner.authn(), 5);
        assert_eq!(auth.len().0, 3);
    }

    #[tokio::test]
    async fn when_full_expired_entries_go_before_the_oldest_live_one() {
        let inner = Counting::default();
        let (auth, clock) = cached(&inner, TTL, 3);
        auth.authenticate("goodold").await.unwrap(); // oldest, lives TTL
        clock.advance(Duration::from_millis(10));
        auth.authenticate("bad1").await.unwrap_err(); // lives NEGATIVE_TTL
        auth.authenticate("bad2").await.unwrap_err();
        clock.advance(NEGATIVE_TTL);
        // Full, with two expired rejections: they go, "old" stays.
        auth.authenticate("goodnew").await.unwrap();
        assert_eq!(auth.len().0, 2);
        auth.authenticate("goodold").await.unwrap();
        assert_eq!(inner.authn(), 4, "the oldest live entry was kept");
    }

    #[tokio::test]
    async fn zero_ttl_or_size_turns_caching_off() {
        for (ttl, max) in [(Duration::ZERO, 10), (TTL, 0)] {
            let inner = Counting::default();
            let (auth, _clock) = cached(&inner, ttl, max);
            auth.authenticate("goodalice").await.unwrap();
            auth.authenticate("goodalice").await.unwrap();
            auth.authorize(&user("alice"), "ns", "c", Permission::SHELL)
                .await
                .unwrap();
            auth.authorize(&user("alice"), "ns", "c", Permission::SHELL)
                .await
                .unwrap();
            assert_eq!((inner.authn(), inner.authz()), (2, 2));
            assert!(auth.is_empty());
        }
    }

    #[test]
    fn the_cache_keeps_no_token_and_debug_shows_none() {
        let auth = CachedAuth::new(Counting::default(), TTL, 10);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        rt.block_on(auth.authenticate("goodsecret-token-value")).unwrap();
        let keys: Vec<[u8; 32]> = lock(&auth.authn).entries.keys().copied().collect();
        let expected: [u8; 32] = Sha256::digest(b"goodsecret-token-value").into();
        assert_eq!(keys, vec![expected]);
        let debug = format!("{auth:?}");
        assert!(!debug.contains("secret-token"), "{debug}");
        assert!(debug.contains("authn_entries: 1"), "{debug}");
    }
}
