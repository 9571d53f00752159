//! Connection settings shared by every command that talks to the router:
//! its URL, the CA that signs its certificate, the user's token and the
//! namespace. Flags first, then environment variables, then the cluster:
//! the router URL and CA from ConfigMap `hatchway-client` in the install
//! namespace (read with the kubeconfig's credentials), the token and
//! namespace from the kubeconfig (a token, a token file or an exec plugin).

use std::path::PathBuf;
use std::sync::Arc;

use hatchway_api::wire::client_config;
use rustls::ClientConfig;
use sha2::Digest as _;

use crate::exec_credential::{self, ExecError};
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

    /// Where Hatchway is installed: without --server/--ca-file, both are
    /// read from ConfigMap `hatchway-client` there.
    #[arg(
        long,
        env = "HATCHWAY_NAMESPACE",
        global = true,
        default_value = "hatchway-system"
    )]
    pub hatchway_namespace: String,
}

/// Why the connection settings are incomplete.
#[derive(Debug, thiserror::Error)]
pub enum ConnectionError {
    #[error("no router URL: pass --server or set HATCHWAY_SERVER")]
    NoServer,
    #[error(
        "no router URL or CA given, and none found in ConfigMap {namespace}/{config} \
         ({reason}): pass --server and --ca-file (or HATCHWAY_SERVER and HATCHWAY_CA_FILE), or \
         --hatchway-namespace where Hatchway is installed",
        config = client_config::NAME
    )]
    Discovery { namespace: String, reason: String },
    #[error("cannot keep the discovered router CA in {path}: {source}")]
    CaWrite { path: PathBuf, source: std::io::Error },
    #[error("invalid router URL {0:?}: expected https://HOST[:PORT][/PREFIX]")]
    BadServer(String),
    #[error(
        "no CA to trust for the router: pass --ca-file or set HATCHWAY_CA_FILE \
         (a PEM file; TLS verification is never skipped)"
    )]
    NoCa,
    #[error("cannot read the CA file {path}: {source}")]
    CaRead { path: PathBuf, source: std::io::Error },
    #[error("the CA file {path} cannot be trusted: {reason}")]
    CaBad {
        path: PathBuf,
        reason: hatchway_api::tls::CaError,
    },
    #[error("no token: pass --token, set HATCHWAY_TOKEN, or use a kubeconfig user with a token")]
    NoToken,
    #[error(
        "the kubeconfig user authenticates with {0}, which kubectl-hatch cannot use: \
         pass --token or set HATCHWAY_TOKEN (e.g. from `kubectl create token`)"
    )]
    UnsupportedCredential(&'static str),
    #[error(transparent)]
    Exec(#[from] ExecError),
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
        let config = hatchway_api::tls::client_trusting(&pem)
            .map_err(|reason| ConnectionError::CaBad { path, reason })?;
        Ok(Arc::new(config))
    }

    /// The bearer token: flag or environment, else the kubeconfig's (its
    /// token, token file or exec plugin).
    pub async fn token(&self) -> Result<String, ConnectionError> {
        if let Some(token) = self.token.as_deref().map(str::trim).filter(|t| !t.is_empty()) {
            return Ok(token.to_owned());
        }
        let config = Kubeconfig::load()?;
        match config.credential()? {
            Credential::Token(token) if !token.is_empty() => Ok(token),
            Credential::Exec(exec) => Ok(exec_credential::token(&exec, config.dir.as_deref()).await?),
            Credential::Unsupported(what) => Err(ConnectionError::UnsupportedCredential(what)),
            _ => Err(ConnectionError::NoToken),
        }
    }

    /// Fills in the router URL and CA from the install namespace's
    /// `hatchway-client` ConfigMap when either was not given. The CA is
    /// kept in the cache directory (named by its digest), so ssh's
    /// ProxyCommand can be handed a file.
    pub async fn discover(&mut self) -> Result<(), ConnectionError> {
        let has = |v: Option<&str>| v.is_some_and(|v| !v.is_empty());
        let ca_given = self.ca_file.as_ref().is_some_and(|p| !p.as_os_str().is_empty());
        if has(self.server.as_deref()) && ca_given {
            return Ok(());
        }
        let namespace = self.hatchway_namespace.clone();
        let fail = |reason: String| ConnectionError::Discovery {
            namespace: namespace.clone(),
            reason,
        };
        let client = kube::Client::try_default()
            .await
            .map_err(|e| fail(format!("cannot reach the Kubernetes API: {e}")))?;
        let api: kube::Api<k8s_openapi::api::core::v1::ConfigMap> = kube::Api::namespaced(client, &namespace);
        let data = api
            .get(client_config::NAME)
            .await
            .map_err(|e| fail(e.to_string()))?
            .data
            .unwrap_or_default();
        if !has(self.server.as_deref()) {
            let server = data.get(client_config::SERVER).filter(|s| !s.is_empty());
            let missing = || fail(format!("it has no {:?}", client_config::SERVER));
            self.server = Some(server.ok_or_else(missing)?.clone());
        }
        if !ca_given {
            let pem = data.get(client_config::CA).filter(|s| s.contains("-----BEGIN"));
            let pem = pem.ok_or_else(|| fail(format!("it has no PEM {:?}", client_config::CA)))?;
            let digest = sha2::Sha256::digest(pem.as_bytes());
            let path =
                crate::known_hosts::cache_dir().join(format!("router-ca-{}.crt", hex::encode(&digest[..8])));
            let write = || -> std::io::Result<()> {
                if std::fs::read_to_string(&path).ok().as_deref() != Some(pem.as_str()) {
                    std::fs::create_dir_all(path.parent().expect("a cache directory"))?;
                    std::fs::write(&path, pem)?;
                }
                Ok(())
            };
            write().map_err(|source| ConnectionError::CaWrite {
                path: path.clone(),
                source,
            })?;
            self.ca_file = Some(path);
        }
        Ok(())
    }

    /// The namespace: flag, else the kubeconfig context's, else `default`.
    pub fn namespace(&self) -> Result<String, ConnectionError> {
        if let Some(ns) = self.namespace.as_deref().filter(|n| !n.is_empty()) {
            return Ok(ns.to_owned());
        }
        Ok(Kubeconfig::load()?.namespace().unwrap_or("default").to_owned())
    }

    /// Everything needed to open a request to the router (discovering the
    /// router first when needed).
    pub async fn target(&mut self) -> Result<Target, ConnectionError> {
        self.discover().await?;
        Ok(Target {
            server: self.server()?,
            tls: self.tls()?,
            token: self.token().await?,
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
