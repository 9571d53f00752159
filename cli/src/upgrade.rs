//! One upgraded request to the router: TLS (with TCP_NODELAY), `POST` with
//! `Connection: upgrade`, and either the raw stream after `101` or the
//! router's refusal.

use bytes::Bytes;
use http::{Request, StatusCode, header};
use http_body_util::{BodyExt, Empty};
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::connection::Target;

/// Characters escaped in path segments and query values.
const ESCAPE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// Why no upgraded stream.
#[derive(Debug, thiserror::Error)]
pub enum UpgradeError {
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

impl UpgradeError {
    /// The process exit code for this failure: 2 for a refusal the user can
    /// fix (4xx), 3 for one on the server side (5xx or unexpected), 1 for
    /// anything before the router answered.
    pub fn exit_code(&self) -> i32 {
        match self {
            UpgradeError::Refused { status, .. } if status.is_client_error() => 2,
            UpgradeError::Refused { .. } => 3,
            _ => 1,
        }
    }
}

/// The path of `action` on Container `namespace/name`, with query `params`
/// (empty values left out).
pub fn container_path(
    prefix: &str,
    namespace: &str,
    name: &str,
    action: &str,
    params: &[(&str, Option<&str>)],
) -> String {
    let mut path = format!(
        "{prefix}/v1/namespaces/{}/containers/{}/{action}",
        utf8_percent_encode(namespace, ESCAPE),
        utf8_percent_encode(name, ESCAPE)
    );
    let mut sep = '?';
    for (key, value) in params {
        if let Some(value) = value.filter(|v| !v.is_empty()) {
            path.push(sep);
            path.push_str(key);
            path.push('=');
            path.push_str(&utf8_percent_encode(value, ESCAPE).to_string());
            sep = '&';
        }
    }
    path
}

/// Sends `POST path` with `Upgrade: protocol` and returns the upgraded
/// stream.
pub async fn upgrade(target: &Target, path: &str, protocol: &str) -> Result<TokioIo<Upgraded>, UpgradeError> {
    let server = &target.server;
    let addr = format!("{}:{}", server.host, server.port);
    let tcp = TcpStream::connect((server.host.as_str(), server.port))
        .await
        .map_err(|source| UpgradeError::Connect {
            addr: addr.clone(),
            source,
        })?;
    tcp.set_nodelay(true)
        .map_err(|source| UpgradeError::Connect { addr, source })?;
    let name =
        ServerName::try_from(server.host.clone()).map_err(|_| UpgradeError::Name(server.host.clone()))?;
    let tls = TlsConnector::from(target.tls.clone())
        .connect(name, tcp)
        .await
        .map_err(UpgradeError::Tls)?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await?;
    tokio::spawn(async move {
        let _ = conn.with_upgrades().await;
    });
    let request = Request::post(path)
        .header(header::HOST, &server.authority)
        .header(header::CONNECTION, "upgrade")
        .header(header::UPGRADE, protocol)
        .header(header::AUTHORIZATION, format!("Bearer {}", target.token))
        .header(
            header::USER_AGENT,
            concat!("kubectl-hatch/", env!("CARGO_PKG_VERSION")),
        )
        .body(Empty::<Bytes>::new())?;
    let response = sender.send_request(request).await?;
    let status = response.status();
    if status != StatusCode::SWITCHING_PROTOCOLS {
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
        return Err(UpgradeError::Refused { status, message });
    }
    Ok(TokioIo::new(hyper::upgrade::on(response).await?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_escape_names_and_skip_empty_params() {
        assert_eq!(
            container_path("", "team-a", "web.1", "ssh", &[("login_username", None)]),
            "/v1/namespaces/team-a/containers/web.1/ssh"
        );
        assert_eq!(
            container_path(
                "/p",
                "ns",
                "a b",
                "ssh",
                &[
                    ("login_username", Some("root")),
                    ("detach_keys", Some("ctrl-p,ctrl-q"))
                ]
            ),
            "/p/v1/namespaces/ns/containers/a%20b/ssh?login_username=root&detach_keys=ctrl-p%2Cctrl-q"
        );
    }

    #[test]
    fn refusals_map_to_exit_codes() {
        let refused = |status| UpgradeError::Refused {
            status,
            message: String::new(),
        };
        assert_eq!(refused(StatusCode::FORBIDDEN).exit_code(), 2);
        assert_eq!(refused(StatusCode::SERVICE_UNAVAILABLE).exit_code(), 3);
    }
}
