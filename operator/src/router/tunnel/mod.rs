//! The tunnel endpoint and the registry of tunnels this replica holds.
//! (Being built: the registry is empty and the endpoint refuses.)

use hatchway_api::tunnel::EKM_LEN;
use http::{Request, StatusCode};
use hyper::body::Incoming;
use tokio_util::compat::Compat;

use super::Router;
use super::respond::{Body, text};

/// A stream opened on a tunnel: a connection to the sidecar's gateway.
pub type TunnelStream = Compat<yamux::Stream>;

/// Why no stream could be opened.
#[derive(Debug, thiserror::Error)]
pub enum TunnelError {
    /// This replica holds no tunnel for the Container.
    #[error("no tunnel to this container is connected here")]
    NotConnected,
    /// The tunnel failed while opening the stream.
    #[error("the tunnel failed: {0}")]
    Failed(String),
    /// The sidecar did not accept the stream in time.
    #[error("the tunnel did not open a stream in time")]
    Timeout,
}

/// The tunnels this replica holds, by container UID.
pub struct Registry {
    max: usize,
}

impl Registry {
    /// An empty registry holding at most `max` tunnels.
    pub fn new(max: usize) -> Self {
        Self { max }
    }

    /// Whether a tunnel for `uid` is held here.
    pub fn contains(&self, _uid: &str) -> bool {
        false
    }

    /// How many tunnels are held.
    pub fn len(&self) -> usize {
        0
    }

    /// Whether no tunnel is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Opens a stream to the gateway of `uid`.
    pub async fn open_stream(&self, _uid: &str) -> Result<TunnelStream, TunnelError> {
        Err(TunnelError::NotConnected)
    }
}

/// Serves `POST /v1/tunnel` (`Upgrade: hatchway-tunnel`); `ekm` is the
/// keying material exported from this TLS session right after its
/// handshake.
pub async fn accept(
    router: std::sync::Arc<Router>,
    req: Request<Incoming>,
    ekm: Option<[u8; EKM_LEN]>,
) -> http::Response<Body> {
    let _ = (router.tunnels.max, req, ekm);
    text(StatusCode::NOT_IMPLEMENTED, "tunnels are not accepted yet")
}
