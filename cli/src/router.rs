//! Talking to the router: one TLS connection (TCP_NODELAY) per use, plain
//! requests (logs) and upgraded ones (`POST` with `Connection: upgrade`:
//! shells, port-forwards), and the router's refusals as errors that carry
//! its own sentence and map to exit codes.

use bytes::Bytes;
use hatchway_api::wire;
use http::{HeaderMap, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::connection::Target;

/// Why the router did not give what was asked.
#[derive(Debug, thiserror::Error)]
pub enum RouterError {
    #[error("cannot connect to the router at {addr}: {source}")]
    Connect { addr: String, source: std::io::Error },
    #[error("invalid TLS name {0:?} for the router")]
    Name(String),
    #[error("TLS to the router failed: {0}")]
    Tls(std::io::Error),
    #[error("HTTP to the router failed: {0}")]
    Http(#[from] hyper::Error),
    #[error("the connection through the router failed: {0}")]
    Relay(std::io::Error),
    #[error("invalid request: {0}")]
    Request(#[from] http::Error),
    /// The router answered with something other than 101.
    #[error("{message}")]
    Refused { status: StatusCode, message: String },
}

impl RouterError {
    /// The process exit code for this failure: 2 for a refusal the user can
    /// fix (4xx), 3 for one on the server side (5xx or unexpected), 1 for
    /// anything before the router answered.
    pub fn exit_code(&self) -> i32 {
        match self {
            RouterError::Refused { status, .. } if status.is_client_error() => 2,
            RouterError::Refused { .. } => 3,
            _ => 1,
        }
    }
}

impl RouterError {
    /// Whether trying again later may succeed: the router could not be
    /// reached (restarting, network blip) or could not serve yet (502 a
    /// peer replica gone, 503 not ready or tunnel down, 504).
    pub fn is_transient(&self) -> bool {
        match self {
            RouterError::Connect { .. } | RouterError::Tls(_) | RouterError::Http(_) => true,
            RouterError::Refused { status, .. } => matches!(status.as_u16(), 502..=504),
            RouterError::Name(_) | RouterError::Relay(_) | RouterError::Request(_) => false,
        }
    }
}

/// The path of `action` on Container `namespace/name` (with query `params`,
/// empty values left out) behind `prefix`, the path of the router's URL.
pub fn container_path(
    prefix: &str,
    namespace: &str,
    name: &str,
    action: &str,
    params: &[(&str, Option<&str>)],
) -> String {
    format!(
        "{prefix}{}",
        wire::container_path(namespace, name, action, params)
    )
}

/// The user agent of every request.
const USER_AGENT: &str = concat!("kubectl-hatch/", env!("CARGO_PKG_VERSION"));

/// Opens a TLS connection to the router; requests go through the returned
/// sender (in order, one at a time) until it reports an error.
pub async fn connect(target: &Target) -> Result<SendRequest<Empty<Bytes>>, RouterError> {
    let server = &target.server;
    let addr = format!("{}:{}", server.host, server.port);
    let tcp = TcpStream::connect((server.host.as_str(), server.port))
        .await
        .map_err(|source| RouterError::Connect {
            addr: addr.clone(),
            source,
        })?;
    tcp.set_nodelay(true)
        .map_err(|source| RouterError::Connect { addr, source })?;
    let name =
        ServerName::try_from(server.host.clone()).map_err(|_| RouterError::Name(server.host.clone()))?;
    let tls = TlsConnector::from(target.tls.clone())
        .connect(name, tcp)
        .await
        .map_err(RouterError::Tls)?;
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await?;
    tokio::spawn(async move {
        let _ = conn.with_upgrades().await;
    });
    Ok(sender)
}

/// A request to the router with the user's token.
pub fn request(target: &Target, method: http::Method, path: &str) -> http::request::Builder {
    Request::builder()
        .method(method)
        .uri(path)
        .header(header::HOST, &target.server.authority)
        .header(header::AUTHORIZATION, format!("Bearer {}", target.token))
        .header(header::USER_AGENT, USER_AGENT)
}

/// The router's refusal in `response` (its plain-text sentence, or the
/// status when it sent none).
pub async fn refusal(response: Response<Incoming>) -> RouterError {
    let status = response.status();
    let body = response
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let text = String::from_utf8_lossy(&body[..body.len().min(64 * 1024)])
        .trim()
        .to_owned();
    let message = if text.is_empty() {
        format!("the router answered {status}")
    } else {
        format!("{text} ({status})")
    };
    RouterError::Refused { status, message }
}

/// An upgraded connection and the headers of the router's `101`.
pub struct Upgrade {
    pub io: TokioIo<Upgraded>,
    pub headers: HeaderMap,
}

/// Sends `POST path` with `Upgrade: protocol` and returns the upgraded
/// stream.
pub async fn upgrade(target: &Target, path: &str, protocol: &str) -> Result<Upgrade, RouterError> {
    let mut sender = connect(target).await?;
    let request = request(target, http::Method::POST, path)
        .header(header::CONNECTION, "upgrade")
        .header(header::UPGRADE, protocol)
        .body(Empty::<Bytes>::new())?;
    let mut response = sender.send_request(request).await?;
    if response.status() != StatusCode::SWITCHING_PROTOCOLS {
        return Err(refusal(response).await);
    }
    let headers = std::mem::take(response.headers_mut());
    Ok(Upgrade {
        io: TokioIo::new(hyper::upgrade::on(response).await?),
        headers,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_go_behind_the_routers_own_path() {
        assert_eq!(
            container_path(
                "/p",
                "ns",
                "a b",
                wire::ACTION_SSH,
                &[(wire::PARAM_LOGIN_USERNAME, Some("root"))]
            ),
            "/p/v1/namespaces/ns/containers/a%20b/ssh?login_username=root"
        );
    }

    #[test]
    fn refusals_map_to_exit_codes() {
        let refused = |status| RouterError::Refused {
            status,
            message: String::new(),
        };
        assert_eq!(refused(StatusCode::FORBIDDEN).exit_code(), 2);
        assert_eq!(refused(StatusCode::SERVICE_UNAVAILABLE).exit_code(), 3);
    }
}
