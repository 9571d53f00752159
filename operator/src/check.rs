//! `check`: what the chart's `helm test` hook runs in a pod of the release
//! namespace. It asks the router's Service for `/readyz` over TLS verified
//! against the CA the operator publishes (ConfigMap `hatchway-client`,
//! mounted), and, when the aggregated API is installed, whether the
//! Kubernetes API server's discovery serves it. Each step prints one line;
//! the first failure ends the check with what was asked and what came
//! back.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::BodyExt;
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio::time::Instant;

/// Settings of `check`.
#[derive(Debug, Clone, clap::Args)]
pub struct CheckArgs {
    /// The router's URL, e.g. its Service's
    /// `https://hatchway.hatchway-system.svc:443`.
    #[arg(long)]
    pub url: String,
    /// The CA (PEM) the router's certificate chains to: ConfigMap
    /// `hatchway-client`'s `ca.crt`.
    #[arg(long)]
    pub ca: PathBuf,
    /// A group/version the API server's discovery must serve (the
    /// aggregated API, `access.hatchway.dev/v1alpha1`). Empty: not asked.
    #[arg(long, default_value = "")]
    pub discovery: String,
    /// How long to keep asking while the answer is not yet right (a
    /// replica may still be starting).
    #[arg(long, default_value_t = 60)]
    pub wait_seconds: u64,
}

/// Why the check failed.
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    #[error("reading the CA {path}: {source}")]
    ReadCa { path: PathBuf, source: std::io::Error },
    #[error("the CA (--ca) holds no usable certificate: {reason}")]
    BadCa { reason: String },
    #[error("{0} is not an https:// URL with a host")]
    BadUrl(String),
    #[error("GET {url}: {reason}")]
    Get { url: String, reason: String },
    #[error("GET {url}: {status} {body}")]
    Status {
        url: String,
        status: http::StatusCode,
        body: String,
    },
    #[error("the API server's discovery of {group_version}: {source}")]
    Discovery {
        group_version: String,
        source: kube::Error,
    },
    #[error("the API server's discovery of {0} lists no resources")]
    NoResources(String),
}

/// Runs the check: `/readyz`, then discovery if asked.
pub async fn run(args: &CheckArgs) -> Result<(), CheckError> {
    let ca = std::fs::read(&args.ca).map_err(|source| CheckError::ReadCa {
        path: args.ca.clone(),
        source,
    })?;
    let deadline = Instant::now() + Duration::from_secs(args.wait_seconds);
    let answer = until(deadline, || readyz(&args.url, &ca)).await?;
    println!("ok: {} /readyz answered {answer}", args.url.trim_end_matches('/'));
    if !args.discovery.is_empty() {
        let client = kube::Client::try_default()
            .await
            .map_err(|source| CheckError::Discovery {
                group_version: args.discovery.clone(),
                source,
            })?;
        let resources = until(deadline, || discovery(&client, &args.discovery)).await?;
        println!(
            "ok: the API server serves {} ({})",
            args.discovery,
            resources.join(", ")
        );
    }
    Ok(())
}

/// `step` until it succeeds or `deadline` passes (then its last error).
async fn until<T, F, Fut>(deadline: Instant, mut step: F) -> Result<T, CheckError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, CheckError>>,
{
    loop {
        match step().await {
            Ok(value) => return Ok(value),
            Err(error @ (CheckError::BadCa { .. } | CheckError::BadUrl(_))) => return Err(error),
            Err(error) if Instant::now() >= deadline => return Err(error),
            Err(error) => {
                println!("waiting: {error}");
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
        }
    }
}

/// `GET URL/readyz` over TLS trusting `ca_pem` only: the status line of a
/// 200, or what came back.
pub async fn readyz(url: &str, ca_pem: &[u8]) -> Result<String, CheckError> {
    let target = format!("{}/readyz", url.trim_end_matches('/'));
    let uri: http::Uri = target.parse().map_err(|_| CheckError::BadUrl(url.to_owned()))?;
    let (Some("https"), Some(host)) = (uri.scheme_str(), uri.host()) else {
        return Err(CheckError::BadUrl(url.to_owned()));
    };
    let host = host.trim_start_matches('[').trim_end_matches(']').to_owned();
    let port = uri.port_u16().unwrap_or(443);
    let config = hatchway_api::tls::client_trusting(ca_pem).map_err(|e| CheckError::BadCa {
        reason: e.to_string(),
    })?;
    let get = |reason: String| CheckError::Get {
        url: target.clone(),
        reason,
    };
    let name = ServerName::try_from(host.clone()).map_err(|e| get(e.to_string()))?;
    let exchange = async {
        let tcp = tokio::net::TcpStream::connect((host.as_str(), port))
            .await
            .map_err(|e| get(format!("connecting: {e}")))?;
        let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect(name, tcp)
            .await
            .map_err(|e| get(format!("TLS: {e}")))?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .map_err(|e| get(e.to_string()))?;
        tokio::spawn(connection);
        let request = http::Request::get(uri.path())
            .header(
                http::header::HOST,
                uri.authority().map(|a| a.as_str()).unwrap_or(""),
            )
            .body(http_body_util::Empty::<bytes::Bytes>::new())
            .expect("a valid request");
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| get(e.to_string()))?;
        let status = response.status();
        let body = response
            .into_body()
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        let body: String = String::from_utf8_lossy(&body).trim().chars().take(200).collect();
        if status != http::StatusCode::OK {
            return Err(CheckError::Status {
                url: target.clone(),
                status,
                body,
            });
        }
        Ok(format!("{status} {body}").trim().to_owned())
    };
    tokio::time::timeout(Duration::from_secs(10), exchange)
        .await
        .map_err(|_| get("no answer within 10 s".into()))?
}

/// The resources the API server's discovery lists for `group_version`.
pub async fn discovery(client: &kube::Client, group_version: &str) -> Result<Vec<String>, CheckError> {
    let list = client
        .list_api_group_resources(group_version)
        .await
        .map_err(|source| CheckError::Discovery {
            group_version: group_version.to_owned(),
            source,
        })?;
    let names: Vec<String> = list.resources.into_iter().map(|r| r.name).collect();
    if names.is_empty() {
        return Err(CheckError::NoResources(group_version.to_owned()));
    }
    Ok(names)
}
