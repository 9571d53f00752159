//! Connection settings shared by every command that talks to the router:
//! its URL, the CA that signs its certificate, the user's token and the
//! namespace. Flags first, then environment variables, then the kubeconfig.

use std::path::PathBuf;
use std::sync::Arc;

use rustls::ClientConfig;

use crate::kubeconfig::{Credential, Kubeconfig, KubeconfigError};

/// The flags (and environment variables) every command accepts.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ConnectionArgs {
    /// The Hatchway router's URL, e.g. `https://hatchway.example.com`.
    #[arg(long, env = "HATCHWAY_SERVER", global = true)]
    pub server: Option<String>,

    /// PEM file with the CA certificate(s) that sign the router's
    /// certificate. Required: TLS verification is never skipped.
    #[arg(long, env = "HATCHWAY_CA_FILE", global = true)]
    pub ca_file: Option<PathBuf>,

    /// Bearer token; default: the current kubeconfig user's token.
    #[arg(long, env = "HATCHWAY_TOKEN", global = true, hide_env_values = true)]
    pub token: Option<String>,

    /// Namespace; default: the kubeconfig context's, else `default`.
    #[arg(short = 'n', long, global = true)]
    pub namespace: Option<String>,
}

/// Why the connection settings are incomplete.
#[derive(Debug, thiserror::Error)]
pub enum ConnectionError {
    #[error("no router URL: pass --server or set HATCHWAY_SERVER")]
    NoServer,
    #[error("invalid router URL {0:?}: expected https://HOST[:PORT][/PREFIX]")]
    BadServer(String),
    #[error(
        "no CA to trust for the router: pass --ca-file or set HATCHWAY_CA_FILE \
         (a PEM file; TLS verification is never skipped)"
    )]
    NoCa,
    #[error("cannot read the CA file {path}: {source}")]
    CaRead { path: PathBuf, source: std::io::Error },
    #[error("the CA file {0} holds no usable PEM certificate")]
    CaEmpty(PathBuf),
    #[error("no token: pass --token, set HATCHWAY_TOKEN, or use a kubeconfig user with a token")]
    NoToken,
    #[error(
        "the kubeconfig user authenticates with {0}, which kubectl-hatch cannot use yet: \
         pass --token or set HATCHWAY_TOKEN (e.g. from `kubectl create token`)"
    )]
    UnsupportedCredential(&'static str),
    #[error(transparent)]
    Kubeconfig(#[from] KubeconfigError),
}

/// The router's address, parsed from its URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Server {
    /// The URL as given, without a trailing slash.
    pub url: String,
    /// Host name or IP (without brackets): what TLS verifies.
    pub host: String,
    pub port: u16,
    /// `host[:port]` for the Host header.
    pub authority: String,
    /// A path prefix (no trailing slash), usually empty.
    pub prefix: String,
}

impl Server {
    pub fn parse(url: &str) -> Result<Self, ConnectionError> {
        let bad = || ConnectionError::BadServer(url.to_owned());
        let uri: http::Uri = url.parse().map_err(|_| bad())?;
        if uri.scheme_str() != Some("https") {
            return Err(bad());
        }
        let authority = uri.authority().ok_or_else(bad)?;
        let host = authority.host().trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() || uri.query().is_some() {
            return Err(bad());
        }
        Ok(Self {
            url: url.trim_end_matches('/').to_owned(),
            host: host.to_owned(),
            port: authority.port_u16().unwrap_or(443),
            authority: authority.as_str().to_owned(),
            prefix: uri.path().trim_end_matches('/').to_owned(),
        })
    }
}

impl ConnectionArgs {
    /// The router's URL.
    pub fn server(&self) -> Result<Server, ConnectionError> {
        let url = self
            .server
            .as_deref()
            .filter(|s| !s.is_empty())
            .ok_or(ConnectionError::NoServer)?;
        Server::parse(url)
    }

    /// The CA file, absolute (it is passed on to ssh's ProxyCommand).
    pub fn ca_file(&self) -> Result<PathBuf, ConnectionError> {
        let path = self
            .ca_file
            .clone()
            .filter(|p| !p.as_os_str().is_empty())
            .ok_or(ConnectionError::NoCa)?;
        Ok(std::path::absolute(&path).unwrap_or(path))
    }

    /// A TLS client configuration that trusts only the CA file.
    pub fn tls(&self) -> Result<Arc<ClientConfig>, ConnectionError> {
        let path = self.ca_file()?;
        let pem = std::fs::read(&path).map_err(|source| ConnectionError::CaRead {
            path: path.clone(),
            source,
        })?;
        let mut roots = rustls::RootCertStore::empty();
        for cert in rustls::pki_types::pem::PemObject::pem_slice_iter(&pem).flatten() {
            let _ = roots.add(cert);
        }
        if roots.is_empty() {
            return Err(ConnectionError::CaEmpty(path));
        }
        let mut config = ClientConfig::builder_with_provider(hatchway_api::tls::provider())
            .with_safe_default_protocol_versions()
            .map_err(|_| ConnectionError::CaEmpty(path))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }

    /// The bearer token: flag or environment, else the kubeconfig's.
    pub fn token(&self) -> Result<String, ConnectionError> {
        if let Some(token) = self.token.as_deref().map(str::trim).filter(|t| !t.is_empty()) {
            return Ok(token.to_owned());
        }
        match Kubeconfig::load()?.credential()? {
            Credential::Token(token) if !token.is_empty() => Ok(token),
            Credential::Unsupported(what) => Err(ConnectionError::UnsupportedCredential(what)),
            _ => Err(ConnectionError::NoToken),
        }
    }

    /// The namespace: flag, else the kubeconfig context's, else `default`.
    pub fn namespace(&self) -> Result<String, ConnectionError> {
        if let Some(ns) = self.namespace.as_deref().filter(|n| !n.is_empty()) {
            return Ok(ns.to_owned());
        }
        Ok(Kubeconfig::load()?.namespace().unwrap_or("default").to_owned())
    }

    /// Everything needed to open a request to the router.
    pub fn target(&self) -> Result<Target, ConnectionError> {
        Ok(Target {
            server: self.server()?,
            tls: self.tls()?,
            token: self.token()?,
        })
    }
}

/// A router to talk to, as whom.
#[derive(Clone)]
pub struct Target {
    pub server: Server,
    pub tls: Arc<ClientConfig>,
    pub token: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_urls_parse() {
        let s = Server::parse("https://127.0.0.1:8443/").unwrap();
        assert_eq!(
            (s.host.as_str(), s.port, s.prefix.as_str()),
            ("127.0.0.1", 8443, "")
        );
        assert_eq!(s.authority, "127.0.0.1:8443");
        let s = Server::parse("https://[::1]/hatch").unwrap();
        assert_eq!(
            (s.host.as_str(), s.port, s.prefix.as_str()),
            ("::1", 443, "/hatch")
        );
        assert!(Server::parse("http://example.com").is_err());
        assert!(Server::parse("example.com").is_err());
    }

    #[test]
    fn a_ca_is_required() {
        let args = ConnectionArgs::default();
        assert!(matches!(args.tls(), Err(ConnectionError::NoCa)));
        assert!(args.tls().err().unwrap().to_string().contains("--ca-file"));
    }
}
