//! The tunnels this replica holds, by container UID.
//!
//! The registry keeps, per tunnel, only what reaches the task that drives
//! it: a channel for stream requests and a token that closes it. A newer
//! tunnel for the same UID replaces an older one (the sidecar reconnected,
//! perhaps before this side noticed the old connection died), and the older
//! session is closed; a session that ends removes its own entry only, never
//! a newer one.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio_util::compat::FuturesAsyncReadCompatExt;
use tokio_util::sync::CancellationToken;

use super::{TunnelError, TunnelStream};

/// Time allowed for a tunnel to open a stream before
/// [`TunnelError::Timeout`].
pub const OPEN_TIMEOUT: Duration = Duration::from_secs(10);

/// A request for a new stream, answered by the task driving the session.
pub(super) type OpenRequest = oneshot::Sender<Result<yamux::Stream, String>>;

/// How the registry reaches one session's task.
pub(super) struct Handle {
    /// Stream requests.
    pub(super) opener: mpsc::Sender<OpenRequest>,
    /// The proof for the requests of this tunnel's streams when they carry
    /// HTTP without TLS of their own (the sidecar asked for it); `None`:
    /// each stream is TLS to the gateway's certificate.
    pub(super) stream_proof: Option<Arc<str>>,
    /// Cancelled to close the session.
    pub(super) close: CancellationToken,
}

struct Entry {
    id: u64,
    handle: Handle,
}

/// A stream opened to a gateway, and how its requests prove themselves.
pub struct Opened {
    pub stream: TunnelStream,
    /// See [`Handle::stream_proof`].
    pub stream_proof: Option<Arc<str>>,
}

impl std::fmt::Debug for Opened {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The proof is not shown (no proof goes to a log).
        f.debug_struct("Opened")
            .field("stream_proof", &self.stream_proof.as_ref().map(|_| "<redacted>"))
            .finish_non_exhaustive()
    }
}

/// What registering did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Registered {
    /// The first tunnel for this UID.
    New,
    /// An older tunnel for this UID was replaced and is being closed.
    Replaced,
}

/// Why a tunnel was not registered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum NotRegistered {
    /// Every place is taken.
    Full,
    /// This replica is shutting down ([`Registry::leave`]).
    Leaving,
}

/// The tunnels this replica holds, by container UID.
pub struct Registry {
    max: usize,
    entries: Mutex<HashMap<String, Entry>>,
    next_id: AtomicU64,
    leaving: AtomicBool,
}

impl Registry {
    /// An empty registry holding at most `max` tunnels.
    pub fn new(max: usize) -> Self {
        Self {
            max,
            entries: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(1),
            leaving: AtomicBool::new(false),
        }
    }

    fn entries(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        // Nothing panics while holding the lock; a poisoned map is still
        // consistent.
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The most tunnels held at once.
    pub fn max(&self) -> usize {
        self.max
    }

    /// Whether a tunnel for `uid` is held here.
    pub fn contains(&self, uid: &str) -> bool {
        self.entries().contains_key(uid)
    }

    /// How many tunnels are held.
    pub fn len(&self) -> usize {
        self.entries().len()
    }

    /// Whether no tunnel is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether a tunnel for `uid` could be registered now: it replaces one
    /// already held, or there is a free place.
    pub fn has_room_for(&self, uid: &str) -> bool {
        let entries = self.entries();
        entries.contains_key(uid) || entries.len() < self.max
    }

    /// Registers the session behind `handle` for `uid`, closing the one it
    /// replaces. Returns the id [`Registry::unregister`] takes.
    pub(super) fn register(&self, uid: &str, handle: Handle) -> Result<(u64, Registered), NotRegistered> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let mut entries = self.entries();
        // Checked under the lock `leave` takes: no tunnel registers after
        // it closed them all.
        if self.is_leaving() {
            return Err(NotRegistered::Leaving);
        }
        if !entries.contains_key(uid) && entries.len() >= self.max {
            return Err(NotRegistered::Full);
        }
        match entries.insert(uid.to_owned(), Entry { id, handle }) {
            Some(older) => {
                older.handle.close.cancel();
                Ok((id, Registered::Replaced))
            }
            None => Ok((id, Registered::New)),
        }
    }

    /// Removes the session `id` of `uid` if it is still the registered
    /// one (a newer session stays). True when it was removed.
    pub(super) fn unregister(&self, uid: &str, id: u64) -> bool {
        let mut entries = self.entries();
        if entries.get(uid).is_some_and(|e| e.id == id) {
            entries.remove(uid);
            return true;
        }
        false
    }

    /// Closes every tunnel held and takes no more: a replica shutting down
    /// (its sidecars reconnect to another replica). Each session removes
    /// itself as it ends.
    pub fn leave(&self) {
        let entries = self.entries();
        self.leaving.store(true, Ordering::Relaxed);
        for entry in entries.values() {
            entry.handle.close.cancel();
        }
    }

    /// Whether [`Registry::leave`] was called.
    pub fn is_leaving(&self) -> bool {
        self.leaving.load(Ordering::Relaxed)
    }

    /// Opens a stream to the gateway of `uid`, within [`OPEN_TIMEOUT`].
    pub async fn open_stream(&self, uid: &str) -> Result<Opened, TunnelError> {
        self.open_stream_within(uid, OPEN_TIMEOUT).await
    }

    /// [`Registry::open_stream`] with another timeout.
    pub async fn open_stream_within(&self, uid: &str, timeout: Duration) -> Result<Opened, TunnelError> {
        let (opener, stream_proof) = self
            .entries()
            .get(uid)
            .map(|e| (e.handle.opener.clone(), e.handle.stream_proof.clone()))
            .ok_or(TunnelError::NotConnected)?;
        let open = async move {
            let (reply, answer) = oneshot::channel();
            // A closed channel: the session ended after the lookup.
            opener.send(reply).await.map_err(|_| TunnelError::NotConnected)?;
            drop(opener);
            answer
                .await
                .map_err(|_| TunnelError::Failed("the tunnel closed while opening a stream".into()))?
                .map_err(TunnelError::Failed)
        };
        let stream = tokio::time::timeout(timeout, open)
            .await
            .map_err(|_| TunnelError::Timeout)??;
        Ok(Opened {
            stream: stream.compat(),
            stream_proof,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn handle() -> (Handle, mpsc::Receiver<OpenRequest>, CancellationToken) {
        let (opener, requests) = mpsc::channel(1);
        let close = CancellationToken::new();
        (
            Handle {
                opener,
                stream_proof: None,
                close: close.clone(),
            },
            requests,
            close,
        )
    }

    #[test]
    fn a_newer_session_replaces_and_closes_the_older_one() {
        let registry = Registry::new(10);
        let (first, _r1, first_closed) = handle();
        let (second, _r2, second_closed) = handle();
        let (id1, how) = registry.register("u", first).unwrap();
        assert_eq!(how, Registered::New);
        let (id2, how) = registry.register("u", second).unwrap();
        assert_eq!(how, Registered::Replaced);
        assert!(first_closed.is_cancelled() && !second_closed.is_cancelled());
        assert_eq!(registry.len(), 1);
        // The older session ending must not remove the newer one.
        assert!(!registry.unregister("u", id1));
        assert!(registry.contains("u"));
        assert!(registry.unregister("u", id2));
        assert!(registry.is_empty());
    }

    #[test]
    fn the_cap_counts_uids_not_sessions() {
        let registry = Registry::new(1);
        registry.register("a", handle().0).unwrap();
        assert!(registry.has_room_for("a") && !registry.has_room_for("b"));
        assert!(registry.register("b", handle().0).is_err());
        assert!(registry.register("a", handle().0).is_ok());
        assert_eq!(registry.len(), 1);
    }

    #[test]
    fn leaving_closes_every_session_and_takes_no_more() {
        let registry = Registry::new(10);
        let (a, _ra, a_closed) = handle();
        let (b, _rb, b_closed) = handle();
        registry.register("a", a).unwrap();
        registry.register("b", b).unwrap();
        assert!(!registry.is_leaving());
        registry.leave();
        assert!(a_closed.is_cancelled() && b_closed.is_cancelled());
        assert!(registry.is_leaving());
        assert_eq!(
            registry.register("c", handle().0).unwrap_err(),
            NotRegistered::Leaving
        );
    }

    #[tokio::test]
    async fn opening_fails_clearly() {
        let registry = Registry::new(10);
        assert!(matches!(
            registry.open_stream("u").await,
            Err(TunnelError::NotConnected)
        ));

        // A session that never answers: the timeout.
        let (h, mut requests, _) = handle();
        registry.register("u", h).unwrap();
        let pending = tokio::spawn(async move { requests.recv().await });
        let result = registry.open_stream_within("u", Duration::from_millis(50)).await;
        assert!(matches!(result, Err(TunnelError::Timeout)), "{result:?}");
        drop(pending);

        // A session that refuses: its reason.
        let (h, mut requests, _) = handle();
        registry.register("v", h).unwrap();
        tokio::spawn(async move {
            let reply = requests.recv().await.unwrap();
            let _ = reply.send(Err("too many streams".into()));
        });
        let result = registry.open_stream("v").await;
        assert!(
            matches!(&result, Err(TunnelError::Failed(m)) if m == "too many streams"),
            "{result:?}"
        );

        // A session that ended: its channel is closed.
        let (h, requests, _) = handle();
        registry.register("w", h).unwrap();
        drop(requests);
        assert!(matches!(
            registry.open_stream("w").await,
            Err(TunnelError::NotConnected)
        ));
    }
}
