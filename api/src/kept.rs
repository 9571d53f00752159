//! Idle connections kept between requests, by destination: the router's
//! connections to gateways, the sidecar's to web apps in the pod. A
//! connection goes back once its request is answered and is taken again
//! when its last answer's body has ended; it is dropped after an idle
//! time, when it closes, or when more than a set number wait for the same
//! destination.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Mutex;
use std::time::{Duration, Instant};

struct Idle<C> {
    since: Instant,
    connection: C,
}

/// A connection that can be kept between requests.
pub trait Reusable {
    /// Whether it can take a request now (idle, its last answer ended).
    fn is_ready(&self) -> bool;
    /// Whether it has closed (the peer let it go, or it failed).
    fn is_closed(&self) -> bool;
}

/// Idle connections by where they lead (`K`), each kept for a while.
pub struct Kept<K, C> {
    idle: Mutex<Pooled<K, C>>,
    idle_for: Duration,
    per_key: usize,
}

struct Pooled<K, C> {
    by_key: HashMap<K, Vec<Idle<C>>>,
    swept: Option<Instant>,
}

impl<K: Eq + Hash, C: Reusable> Kept<K, C> {
    /// Keeps at most `per_key` connections per destination, each for
    /// `idle_for` (zero: keep none).
    pub fn new(idle_for: Duration, per_key: usize) -> Self {
        Self {
            idle: Mutex::new(Pooled {
                by_key: HashMap::new(),
                swept: None,
            }),
            idle_for,
            per_key,
        }
    }

    /// An idle connection to `key`, ready for a request: the one used
    /// last (its TCP window and the peer's buffers are warm). Closed and
    /// expired ones are dropped on the way.
    pub fn take(&self, key: &K) -> Option<C> {
        let mut pooled = self.lock();
        let list = pooled.by_key.get_mut(key)?;
        let now = Instant::now();
        list.retain(|idle| self.alive(idle, now));
        let found = list
            .iter()
            .rposition(|idle| idle.connection.is_ready())
            .map(|i| list.remove(i).connection);
        if list.is_empty() {
            pooled.by_key.remove(key);
        }
        found
    }

    /// Keeps `connection` for the next request to `key`. It may still be
    /// carrying its last answer's body: it is taken only once that has
    /// ended (and dropped if that takes longer than the idle time;
    /// dropping a hyper client connection lets the answer finish first).
    pub fn put(&self, key: K, connection: C) {
        if self.per_key == 0 || self.idle_for.is_zero() || connection.is_closed() {
            return;
        }
        let now = Instant::now();
        let mut pooled = self.lock();
        // Destinations not used again would keep their connections until
        // the peer closes them: sweep everything now and then.
        if pooled
            .swept
            .is_none_or(|at| now.duration_since(at) >= self.idle_for)
        {
            pooled.swept = Some(now);
            pooled.by_key.retain(|_, list| {
                list.retain(|idle| self.alive(idle, now));
                !list.is_empty()
            });
        }
        let list = pooled.by_key.entry(key).or_default();
        list.push(Idle {
            since: now,
            connection,
        });
        if list.len() > self.per_key {
            list.remove(0);
        }
    }

    /// Whether a connection to `key` is held and ready now.
    pub fn has_ready(&self, key: &K) -> bool {
        let pooled = self.lock();
        pooled
            .by_key
            .get(key)
            .is_some_and(|list| list.iter().any(|idle| idle.connection.is_ready()))
    }

    /// Connections held and still open, all destinations together.
    pub fn len(&self) -> usize {
        let pooled = self.lock();
        pooled
            .by_key
            .values()
            .flatten()
            .filter(|idle| !idle.connection.is_closed())
            .count()
    }

    /// Whether no connection is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Pooled<K, C>> {
        self.idle.lock().expect("the pool's lock is never poisoned")
    }

    fn alive(&self, idle: &Idle<C>, now: Instant) -> bool {
        !idle.connection.is_closed() && now.duration_since(idle.since) < self.idle_for
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    use super::*;

    /// A connection whose state the test sets.
    #[derive(Clone, Default)]
    struct Fake {
        id: u32,
        busy: Arc<AtomicBool>,
        closed: Arc<AtomicBool>,
    }

    impl Reusable for Fake {
        fn is_ready(&self) -> bool {
            !self.busy.load(Ordering::SeqCst) && !self.is_closed()
        }
        fn is_closed(&self) -> bool {
            self.closed.load(Ordering::SeqCst)
        }
    }

    fn fake(id: u32) -> Fake {
        Fake {
            id,
            ..Fake::default()
        }
    }

    #[test]
    fn the_last_connection_kept_is_taken_first_and_only_for_its_key() {
        let kept = Kept::new(Duration::from_secs(60), 4);
        kept.put("a", fake(1));
        kept.put("a", fake(2));
        kept.put("b", fake(3));
        assert_eq!(kept.len(), 3);
        assert!(kept.has_ready(&"a") && !kept.has_ready(&"c"));
        assert_eq!(kept.take(&"a").map(|c| c.id), Some(2));
        assert_eq!(kept.take(&"a").map(|c| c.id), Some(1));
        assert!(kept.take(&"a").is_none());
        assert_eq!(kept.take(&"b").map(|c| c.id), Some(3));
        assert!(kept.is_empty());
    }

    #[test]
    fn busy_connections_wait_and_closed_ones_are_dropped() {
        let kept = Kept::new(Duration::from_secs(60), 4);
        let busy = fake(1);
        busy.busy.store(true, Ordering::SeqCst);
        let closed = fake(2);
        kept.put("a", busy.clone());
        kept.put("a", closed.clone());
        closed.closed.store(true, Ordering::SeqCst);
        assert_eq!(kept.len(), 1, "the closed one is not counted");
        assert!(kept.take(&"a").is_none(), "the busy one is not handed out");
        assert!(!kept.has_ready(&"a"));
        busy.busy.store(false, Ordering::SeqCst);
        assert_eq!(kept.take(&"a").map(|c| c.id), Some(1));
        // A connection closed before it is put back is not kept.
        kept.put("a", closed);
        assert!(kept.is_empty());
    }

    #[test]
    fn connections_expire_and_the_oldest_go_past_the_limit() {
        let kept = Kept::new(Duration::from_secs(60), 2);
        for id in 1..=3 {
            kept.put("a", fake(id));
        }
        assert_eq!(kept.len(), 2);
        assert_eq!(kept.take(&"a").map(|c| c.id), Some(3));
        assert_eq!(kept.take(&"a").map(|c| c.id), Some(2));
        assert!(kept.take(&"a").is_none(), "the oldest was let go");

        let brief = Kept::new(Duration::from_millis(1), 2);
        brief.put("a", fake(1));
        std::thread::sleep(Duration::from_millis(5));
        assert!(brief.take(&"a").is_none(), "expired");
        // A put sweeps every destination's expired connections.
        brief.put("b", fake(2));
        std::thread::sleep(Duration::from_millis(5));
        brief.put("c", fake(3));
        assert_eq!(brief.len(), 1);

        let none = Kept::new(Duration::ZERO, 2);
        none.put("a", fake(1));
        assert!(none.is_empty(), "an idle time of zero keeps nothing");
    }
}
