//! Gateway connections kept open between requests.
//!
//! A web-app request (or a log read, or the first request of a shell)
//! used to pay a TCP connect, a TLS handshake and the proof exchange to
//! the gateway every time: about 0.8 ms of a request's time and most of
//! the router's work for a small page. A connection whose answer has
//! ended goes back here, keyed by the Container and the way it was
//! reached, and the next request to that gateway takes it.
//!
//! What keeps this safe (docs/decisions.md, "Kept
//! connections"):
//! - a pooled connection is one that already proved itself: the gateway
//!   answered with a valid response proof over this connection's TLS
//!   certificate (or tunnel session), and every later answer on it must
//!   carry one again ([`GatewayConnection::send`]);
//! - the key is the Container's UID and the exact route (the gateway's
//!   address, or this replica's tunnel), so a request only ever goes to
//!   the gateway it would have dialled;
//! - users' requests share a connection one after another, never at
//!   once (HTTP/1.1), and each carries its own identity headers, request
//!   id and replica, set by the router: the gateway's audit trail names
//!   the user per request, as before;
//! - upgraded connections (shells, port-forwards, WebSockets) are never
//!   returned: the upgrade owns them.
//!
//! An idle connection is kept for [`IDLE_FOR`], well inside the gateway's
//! header timeout (10 s by default), after which the gateway would close
//! it; a request that finds its connection closed in between goes again
//! on a fresh one (hyper hands back a request it did not write).

use std::net::SocketAddr;
use std::time::Duration;

use hatchway_api::kept::{Kept, Reusable};

use super::select::Route;
use super::upstream::GatewayConnection;

/// How long an idle connection is kept.
pub const IDLE_FOR: Duration = Duration::from_secs(4);

/// Idle connections kept per gateway: as many as requests to one gateway
/// usually overlap (a browser opens six connections per host).
pub const IDLE_PER_GATEWAY: usize = 16;

/// Which gateway a connection leads to, and how.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Key {
    uid: String,
    via: Via,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Via {
    Direct(SocketAddr),
    LocalTunnel,
}

impl Key {
    /// The key of a connection to Container `uid`'s gateway along `route`;
    /// `None` for a route that leads to another replica.
    pub fn new(uid: &str, route: &Route) -> Option<Self> {
        let via = match route {
            Route::Direct(addr) => Via::Direct(*addr),
            Route::LocalTunnel => Via::LocalTunnel,
            Route::Forward(_) => return None,
        };
        Some(Self {
            uid: uid.to_owned(),
            via,
        })
    }

    /// The Container's UID.
    pub fn uid(&self) -> &str {
        &self.uid
    }
}

/// The idle connections of every gateway this replica spoke to lately.
pub type GatewayPool = Kept<Key, GatewayConnection>;

impl Reusable for GatewayConnection {
    fn is_ready(&self) -> bool {
        GatewayConnection::is_ready(self)
    }
    fn is_closed(&self) -> bool {
        GatewayConnection::is_closed(self)
    }
}

/// The spare connections being made, one per gateway at most: a burst of
/// upgrades (500 port-forward connections opened at once) would otherwise
/// each start a spare before any had connected — as many spares as
/// upgrades, over the gateway's connection limit (512), which then
/// refused connections (`make load`: 29 of 500 failed).
#[derive(Debug, Default)]
pub struct Spares {
    pending: std::sync::Mutex<std::collections::HashSet<Key>>,
}

/// A spare being made for a key; the next may start once it is dropped.
#[derive(Debug)]
pub struct SpareClaim {
    spares: std::sync::Arc<Spares>,
    key: Key,
}

impl Spares {
    /// The right to make a spare for `key`, unless one is being made.
    pub fn claim(self: &std::sync::Arc<Self>, key: &Key) -> Option<SpareClaim> {
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        pending.insert(key.clone()).then(|| SpareClaim {
            spares: self.clone(),
            key: key.clone(),
        })
    }
}

impl Drop for SpareClaim {
    fn drop(&mut self) {
        let mut pending = self.spares.pending.lock().unwrap_or_else(|e| e.into_inner());
        pending.remove(&self.key);
    }
}

#[cfg(test)]
mod spare_tests {
    use super::*;

    #[test]
    fn one_spare_at_a_time_per_gateway() {
        let spares = std::sync::Arc::new(Spares::default());
        let a = Key::new("a", &Route::LocalTunnel).unwrap();
        let b = Key::new("b", &Route::LocalTunnel).unwrap();
        let first = spares.claim(&a).expect("the first spare");
        assert!(spares.claim(&a).is_none(), "a second while the first is made");
        let other = spares.claim(&b).expect("another gateway has its own");
        drop(first);
        assert!(spares.claim(&a).is_some(), "the next once the first is done");
        drop(other);
    }
}
