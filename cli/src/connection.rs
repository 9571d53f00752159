//! Connection settings shared by every command: which way to the Hatchway
//! API, and as whom.
//!
//! Two ways ([`Endpoint`]): the aggregated API through the Kubernetes API
//! server (`access.hatchway.dev`, with the kubeconfig exactly as kubectl
//! uses it: client certificates, tokens, exec and auth-provider plugins,
//! all through `kube`), or the router's own URL (`--direct`; a bearer token
//! the router checks with TokenReview). By default the aggregated API when
//! the cluster serves it, else the router's URL; `--server`, `--token` or
//! `--direct` choose the router's URL. The kubeconfig is kubectl's:
//! `--kubeconfig`, else `$KUBECONFIG` (a list, merged), else
//! `~/.kube/config`, narrowed by `--context`, `--cluster`, `--user`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use hatchway_api::wire::{self, client_config};
use kube::config::{KubeConfigOptions, Kubeconfig, KubeconfigError};
use rustls::ClientConfig;
use sha2::Digest as _;

use crate::router::{Endpoint, Target};

/// Which way to the Hatchway API.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum ApiChoice {
    /// The aggregated API when the cluster serves it, else the router's URL.
    #[default]
    Auto,
    /// Through the Kubernetes API server (access.hatchway.dev).
    Aggregated,
    /// The router's own URL.
    Direct,
}

/// The flags (and environment variables) every command accepts.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ConnectionArgs {
    /// Namespace; default: the kubeconfig context's, else `default`.
    #[arg(short = 'n', long, global = true)]
    pub namespace: Option<String>,

    /// The kubeconfig file (default: $KUBECONFIG, else ~/.kube/config).
    #[arg(long, env = "HATCHWAY_KUBECONFIG", global = true)]
    pub kubeconfig: Option<PathBuf>,

    /// The kubeconfig context (default: its current context).
    #[arg(long, env = "HATCHWAY_CONTEXT", global = true)]
    pub context: Option<String>,

    /// The kubeconfig cluster (default: the context's).
    #[arg(long, env = "HATCHWAY_CLUSTER", global = true)]
    pub cluster: Option<String>,

    /// The kubeconfig user (default: the context's).
    #[arg(long, env = "HATCHWAY_KUBE_USER", global = true)]
    pub user: Option<String>,

    /// Which way to the Hatchway API: through the Kubernetes API server
    /// (any kubeconfig), or the router's own URL (faster for bulk, needed
    /// for web apps in browsers).
    #[arg(long, env = "HATCHWAY_API", global = true, value_enum, default_value_t)]
    pub api: ApiChoice,

    /// Use the router's own URL (`--api direct`).
    #[arg(long, global = true)]
    pub direct: bool,

    /// The Hatchway router's URL, e.g. `https://hatchway.example.com`
    /// (implies --direct).
    #[arg(long, env = "HATCHWAY_SERVER", global = true)]
    pub server: Option<String>,

    /// PEM file with the CA certificate(s) that sign the router's
    /// certificate. TLS verification is never skipped.
    #[arg(long, env = "HATCHWAY_CA_FILE", global = true)]
    pub ca_file: Option<PathBuf>,

    /// Bearer token for the router (implies --direct); default: the
    /// kubeconfig user's token (a token, a token file, an exec or
    /// auth-provider plugin).
    #[arg(long, env = "HATCHWAY_TOKEN", global = true, hide_env_values = true)]
    pub token: Option<String>,

    /// Where Hatchway is installed: without --server/--ca-file, both are
    /// read from ConfigMap `hatchway-client` there.
    #[arg(
        long,
        env = "HATCHWAY_NAMESPACE",
        global = true,
        default_value = "hatchway-system"
    )]
    pub hatchway_namespace: String,

    /// Set when the API server was found silent this command (why): the
    /// remembered discovery is used without asking again.
    #[arg(skip)]
    api_silent: Option<String>,
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
    #[error(
        "no token for the router: pass --token, set HATCHWAY_TOKEN, or use a kubeconfig user with a \
         token, token file or plugin{hint}"
    )]
    NoToken { hint: &'static str },
    #[error("the kubeconfig user's credentials: {0}")]
    Credentials(String),
    #[error("the kubeconfig: {0}")]
    Kubeconfig(#[from] KubeconfigError),
    #[error(
        "no kubeconfig (--kubeconfig, $KUBECONFIG, ~/.kube/config) and not in a pod: give one to go \
         through the Kubernetes API server, or the router's URL with --server, --ca-file and --token"
    )]
    NoKubeconfig,
    #[error("cannot reach the Kubernetes API: {0}")]
    Kube(#[source] kube::Error),
    #[error(
        "the aggregated API {group} is not served by this cluster (Hatchway is not installed, or \
         installed with aggregatedApi.enabled=false): use the router's URL (--direct)",
        group = wire::access_api::GROUP_VERSION
    )]
    NotServed,
    #[error(
        "the aggregated API {group} is registered but not answering ({0}): check the \
         operator's pods and `kubectl get apiservice {name}`, or use the router's URL (--direct)",
        group = wire::access_api::GROUP_VERSION,
        name = wire::access_api::APISERVICE
    )]
    Unavailable(String),
    #[error("the Kubernetes API server did not answer: {0}")]
    Silent(String),
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

fn given(value: &Option<String>) -> Option<&str> {
    value.as_deref().map(str::trim).filter(|v| !v.is_empty())
}

impl ConnectionArgs {
    /// Whether the router's own URL was asked for.
    pub fn wants_direct(&self) -> bool {
        self.direct
            || self.api == ApiChoice::Direct
            || (self.api == ApiChoice::Auto
                && (given(&self.server).is_some() || given(&self.token).is_some()))
    }

    /// The kubeconfig as kubectl reads it; `None` when there is none.
    pub fn kubeconfig(&self) -> Result<Option<Kubeconfig>, ConnectionError> {
        let read = match &self.kubeconfig {
            Some(path) => Kubeconfig::read_from(path),
            None => Kubeconfig::read(),
        };
        match read {
            Ok(config) => Ok(Some(config)),
            Err(KubeconfigError::FindPath) => Ok(None),
            Err(KubeconfigError::ReadConfig(e, _)) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    fn options(&self) -> KubeConfigOptions {
        KubeConfigOptions {
            context: given(&self.context).map(str::to_owned),
            cluster: given(&self.cluster).map(str::to_owned),
            user: given(&self.user).map(str::to_owned),
        }
    }

    /// The context in use, from the kubeconfig.
    fn context(&self, config: &Kubeconfig) -> Option<kube::config::Context> {
        let name = given(&self.context)
            .map(str::to_owned)
            .or_else(|| config.current_context.clone())?;
        config
            .contexts
            .iter()
            .find(|c| c.name == name)
            .and_then(|c| c.context.clone())
    }

    /// The name of the context in use (for per-context ssh host names).
    pub fn context_name(&self) -> Result<Option<String>, ConnectionError> {
        if let Some(name) = given(&self.context) {
            return Ok(Some(name.to_owned()));
        }
        Ok(self.kubeconfig()?.and_then(|c| c.current_context))
    }

    /// The namespace: flag, else the kubeconfig context's, else `default`.
    pub fn namespace(&self) -> Result<String, ConnectionError> {
        if let Some(ns) = given(&self.namespace) {
            return Ok(ns.to_owned());
        }
        let from_context = self
            .kubeconfig()?
            .and_then(|config| self.context(&config))
            .and_then(|c| c.namespace)
            .filter(|n| !n.is_empty());
        Ok(from_context.unwrap_or_else(|| "default".to_owned()))
    }

    /// The Kubernetes client configuration: the kubeconfig (narrowed by
    /// the flags), else the in-cluster service account.
    pub async fn kube_config(&self) -> Result<kube::Config, ConnectionError> {
        match self.kubeconfig()? {
            Some(config) => Ok(kube::Config::from_custom_kubeconfig(config, &self.options()).await?),
            None => kube::Config::incluster().map_err(|_| ConnectionError::NoKubeconfig),
        }
    }

    /// A Kubernetes client as the kubeconfig says.
    pub async fn kube_client(&self) -> Result<kube::Client, ConnectionError> {
        kube::Client::try_from(self.kube_config().await?).map_err(ConnectionError::Kube)
    }

    /// The router's URL.
    pub fn server(&self) -> Result<Server, ConnectionError> {
        Server::parse(given(&self.server).ok_or(ConnectionError::NoServer)?)
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

    /// The bearer token for the router: flag or environment, else what the
    /// kubeconfig user sends the API server (a token, a token file, an exec
    /// or auth-provider plugin: `kube` works it out, as for any request).
    pub async fn token(&self) -> Result<String, ConnectionError> {
        if let Some(token) = given(&self.token) {
            return Ok(token.to_owned());
        }
        let Some(kubeconfig) = self.kubeconfig()? else {
            return Err(ConnectionError::NoToken { hint: "" });
        };
        // Only the user matters here: no cluster entry is needed.
        let user_name = given(&self.user)
            .map(str::to_owned)
            .or_else(|| self.context(&kubeconfig).and_then(|c| c.user));
        let auth_info = user_name.and_then(|name| {
            kubeconfig
                .auth_infos
                .iter()
                .find(|a| a.name == name)
                .and_then(|a| a.auth_info.clone())
        });
        let Some(auth_info) = auth_info else {
            return Err(ConnectionError::NoToken { hint: "" });
        };
        let has_certificate =
            auth_info.client_certificate.is_some() || auth_info.client_certificate_data.is_some();
        let mut config = kube::Config::new(http::Uri::from_static("https://kubernetes.invalid"));
        config.auth_info = auth_info;
        match bearer_token(&config).await? {
            Some(token) => Ok(token),
            None if has_certificate => Err(ConnectionError::NoToken {
                hint: ". This user has a client certificate, which only the Kubernetes API server can \
                       check: use the aggregated API (without --direct/--server/--token)",
            }),
            None => Err(ConnectionError::NoToken { hint: "" }),
        }
    }

    /// Fills in the router URL and CA from the install namespace's
    /// `hatchway-client` ConfigMap when either was not given. The CA is
    /// kept in the cache directory (named by its digest), so ssh's
    /// ProxyCommand can be handed a file. What was read is remembered
    /// there too: when the API server does not answer (stopped, cut off)
    /// within [`DISCOVERY_PATIENCE`], the last answer for this API server
    /// and namespace is used, with a note on stderr — the router serves on
    /// without the API server, and so should a new command.
    pub async fn discover(&mut self) -> Result<(), ConnectionError> {
        self.discover_in(&crate::known_hosts::cache_dir(), DISCOVERY_PATIENCE)
            .await
    }

    async fn discover_in(&mut self, cache: &Path, patience: Duration) -> Result<(), ConnectionError> {
        let ca_given = self.ca_file.as_ref().is_some_and(|p| !p.as_os_str().is_empty());
        if given(&self.server).is_some() && ca_given {
            return Ok(());
        }
        let namespace = self.hatchway_namespace.clone();
        let fail = |reason: String| ConnectionError::Discovery {
            namespace: namespace.clone(),
            reason,
        };
        let config = self
            .kube_config()
            .await
            .map_err(|e| fail(format!("cannot reach the Kubernetes API: {e}")))?;
        let memo = Discovered::path(cache, &config.cluster_url.to_string(), &namespace);
        let remembered = Discovered::load(&memo);
        let client = kube::Client::try_from(config)
            .map_err(|e| fail(format!("cannot reach the Kubernetes API: {e}")))?;
        let api: kube::Api<k8s_openapi::api::core::v1::ConfigMap> = kube::Api::namespaced(client, &namespace);
        let read = api.get(client_config::NAME);
        let answer = match (&remembered, &self.api_silent) {
            (Some(_), Some(why)) => Err(why.clone()),
            (Some(_), None) => tokio::time::timeout(patience, read)
                .await
                .map_err(|_| format!("no answer within {patience:?}")),
            (None, _) => Ok(read.await),
        };
        let data = match (answer, remembered) {
            (Ok(Ok(config_map)), _) => {
                let data = config_map.data.unwrap_or_default();
                Discovered::from_data(&data).keep(&memo);
                data
            }
            // The API server answered (not found, forbidden…): that stands.
            (Ok(Err(e @ kube::Error::Api(_))), _) | (Ok(Err(e)), None) => return Err(fail(e.to_string())),
            (Ok(Err(e)), Some(old)) => old.stand_in(&namespace, &e.to_string()),
            (Err(why), Some(old)) => old.stand_in(&namespace, &why),
            (Err(_), None) => unreachable!("no patience without a remembered answer"),
        };
        if given(&self.server).is_none() {
            let server = data.get(client_config::SERVER).filter(|s| !s.is_empty());
            let missing = || fail(format!("it has no {:?}", client_config::SERVER));
            self.server = Some(server.ok_or_else(missing)?.clone());
        }
        if !ca_given {
            let pem = data.get(client_config::CA).filter(|s| s.contains("-----BEGIN"));
            let pem = pem.ok_or_else(|| fail(format!("it has no PEM {:?}", client_config::CA)))?;
            let digest = sha2::Sha256::digest(pem.as_bytes());
            let path = cache.join(format!("router-ca-{}.crt", hex::encode(&digest[..8])));
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

    /// Everything needed to talk to the router directly (discovering it
    /// first when needed).
    pub async fn target(&mut self) -> Result<Target, ConnectionError> {
        self.target_in(&crate::known_hosts::cache_dir(), DISCOVERY_PATIENCE)
            .await
    }

    async fn target_in(&mut self, cache: &Path, patience: Duration) -> Result<Target, ConnectionError> {
        self.discover_in(cache, patience).await?;
        Ok(Target {
            server: self.server()?,
            tls: self.tls()?,
            token: self.token().await?,
            spare: None,
        })
    }

    /// The way to the Hatchway API these settings choose.
    pub async fn endpoint(&mut self) -> Result<Endpoint, ConnectionError> {
        self.endpoint_in(&crate::known_hosts::cache_dir(), DISCOVERY_PATIENCE)
            .await
    }

    async fn endpoint_in(&mut self, cache: &Path, patience: Duration) -> Result<Endpoint, ConnectionError> {
        if self.wants_direct() {
            return self.target_in(cache, patience).await.map(Endpoint::Direct);
        }
        let config = self.kube_config().await?;
        // With the router remembered, a silent API server is not waited
        // for: the router serves on without it.
        let memo = Discovered::path(cache, &config.cluster_url.to_string(), &self.hatchway_namespace);
        let fallback = self.api == ApiChoice::Auto && Discovered::load(&memo).is_some();
        let client = kube::Client::try_from(config).map_err(ConnectionError::Kube)?;
        let served = if fallback {
            tokio::time::timeout(patience, aggregated_api_served(&client))
                .await
                .unwrap_or_else(|_| Err(ConnectionError::Silent(format!("no answer within {patience:?}"))))
        } else {
            aggregated_api_served(&client).await
        };
        let silent = match served {
            Ok(()) => return Ok(Endpoint::Aggregated(client)),
            Err(ConnectionError::NotServed) if self.api == ApiChoice::Auto => None,
            Err(ConnectionError::Silent(why)) if fallback => Some(why),
            Err(ConnectionError::Kube(e)) if fallback => Some(e.to_string()),
            Err(e) => return Err(e),
        };
        self.api_silent = silent;
        self.target_in(cache, patience).await.map(Endpoint::Direct)
    }

    /// The flags naming the kubeconfig file (when given) and `context`
    /// (when there is one): what a ProxyCommand written now keeps using.
    pub fn pinned_kubeconfig(&self, context: Option<&str>) -> Vec<String> {
        let mut args = Vec::new();
        if let Some(path) = &self.kubeconfig {
            let path = std::path::absolute(path).unwrap_or(path.clone());
            args.extend(["--kubeconfig".to_owned(), path.display().to_string()]);
        }
        if let Some(context) = context {
            args.extend(["--context".to_owned(), context.to_owned()]);
        }
        for (flag, value) in [("--cluster", &self.cluster), ("--user", &self.user)] {
            if let Some(value) = given(value) {
                args.extend([flag.to_owned(), value.to_owned()]);
            }
        }
        args
    }

    /// The flags that make a child `kubectl-hatch` (ssh's ProxyCommand)
    /// go the same way as `endpoint` went, without asking again. The
    /// token, if any, is not among them: it travels in the environment.
    pub fn pinned(&self, endpoint: &Endpoint) -> Result<Vec<String>, ConnectionError> {
        let mut args = self.pinned_kubeconfig(given(&self.context));
        match endpoint {
            Endpoint::Aggregated(_) => args.extend(["--api".to_owned(), "aggregated".to_owned()]),
            Endpoint::Direct(target) => args.extend([
                "--api".to_owned(),
                "direct".to_owned(),
                "--server".to_owned(),
                target.server.url.clone(),
                "--ca-file".to_owned(),
                self.ca_file()?.display().to_string(),
            ]),
        }
        Ok(args)
    }
}

/// How long discovery waits for the API server when an earlier answer can
/// stand in for its own.
pub const DISCOVERY_PATIENCE: Duration = Duration::from_secs(5);

/// What the last discovery read from ConfigMap `hatchway-client`, for one
/// API server and install namespace: a JSON file in the cache directory
/// (the user's own, like the CA file and known_hosts beside it).
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct Discovered {
    data: std::collections::BTreeMap<String, String>,
    /// When it was read (seconds since the epoch).
    read_at: i64,
}

impl Discovered {
    fn path(cache: &Path, cluster_url: &str, namespace: &str) -> PathBuf {
        let digest = sha2::Sha256::digest(format!("{cluster_url}\n{namespace}"));
        cache.join(format!("discovered-{}.json", hex::encode(&digest[..8])))
    }

    fn from_data(data: &std::collections::BTreeMap<String, String>) -> Self {
        let keep = [client_config::SERVER, client_config::CA];
        Self {
            data: data
                .iter()
                .filter(|(k, _)| keep.contains(&k.as_str()))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            read_at: jiff::Timestamp::now().as_second(),
        }
    }

    fn load(path: &Path) -> Option<Self> {
        serde_json::from_slice(&std::fs::read(path).ok()?).ok()
    }

    /// Written beside the CA; a failure only costs the fallback.
    fn keep(&self, path: &Path) {
        let write = || -> std::io::Result<()> {
            std::fs::create_dir_all(path.parent().expect("a cache directory"))?;
            let temporary = path.with_extension("json.new");
            std::fs::write(&temporary, serde_json::to_vec(self).expect("serializable"))?;
            std::fs::rename(&temporary, path)
        };
        // Not remembered (a read-only cache): only the fallback is lost.
        let _ = write();
    }

    /// The remembered data, said on stderr (once per command).
    fn stand_in(self, namespace: &str, why: &str) -> std::collections::BTreeMap<String, String> {
        let age = (jiff::Timestamp::now().as_second() - self.read_at).max(0);
        eprintln!(
            "hatchway: the Kubernetes API server did not answer ({why}); using the router URL and CA \
             read from ConfigMap {namespace}/{} {} ago",
            client_config::NAME,
            crate::table::age(jiff::SignedDuration::from_secs(age))
        );
        self.data
    }
}

/// Whether the cluster serves the aggregated API: its discovery answers.
async fn aggregated_api_served(client: &kube::Client) -> Result<(), ConnectionError> {
    let request = http::Request::get(wire::access_api::DISCOVERY)
        .body(Vec::new())
        .expect("a valid request");
    match client.request_text(request).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 404 => Err(ConnectionError::NotServed),
        Err(kube::Error::Api(status)) => Err(ConnectionError::Unavailable(format!(
            "{} {}",
            status.code, status.message
        ))),
        Err(e) => Err(ConnectionError::Kube(e)),
    }
}

/// The bearer token `config`'s user sends, if it sends one: the request
/// `kube` would make, caught before it leaves.
async fn bearer_token(config: &kube::Config) -> Result<Option<String>, ConnectionError> {
    use kube::client::ConfigExt as _;
    use tower::{Layer as _, ServiceExt as _};
    let fail = |e: &dyn std::fmt::Display| ConnectionError::Credentials(e.to_string());
    let Some(layer) = config.auth_layer().map_err(|e| fail(&e))? else {
        return Ok(None);
    };
    let catch = tower::service_fn(|req: http::Request<kube::client::Body>| async move {
        // (tower-http's layer wants an http::Response back.)
        let header = req.headers().get(http::header::AUTHORIZATION).cloned();
        Ok::<_, tower::BoxError>(http::Response::new(header))
    });
    let header = layer
        .layer(catch)
        .oneshot(http::Request::new(kube::client::Body::empty()))
        .await
        .map_err(|e| fail(&e))?
        .into_body();
    Ok(header
        .and_then(|v| v.to_str().ok().map(str::to_owned))
        .and_then(|v| v.strip_prefix("Bearer ").map(|t| t.trim().to_owned()))
        .filter(|t| !t.is_empty()))
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

    #[test]
    fn a_router_url_or_token_chooses_the_direct_way() {
        let mut args = ConnectionArgs::default();
        assert!(!args.wants_direct());
        args.server = Some("https://r".into());
        assert!(args.wants_direct());
        args.api = ApiChoice::Aggregated;
        assert!(!args.wants_direct(), "an explicit --api wins");
        let args = ConnectionArgs {
            token: Some("t".into()),
            ..ConnectionArgs::default()
        };
        assert!(args.wants_direct());
        let args = ConnectionArgs {
            direct: true,
            ..ConnectionArgs::default()
        };
        assert!(args.wants_direct());
    }

    fn kubeconfig_file(dir: &std::path::Path, text: &str) -> PathBuf {
        let path = dir.join("config");
        std::fs::write(&path, text).unwrap();
        path
    }

    const CONFIG: &str = r#"
apiVersion: v1
kind: Config
current-context: dev
clusters:
- name: c
  cluster: {server: "https://127.0.0.1:1"}
contexts:
- name: dev
  context: {cluster: c, user: alice, namespace: team-a}
- name: other
  context: {cluster: c, user: bob}
- name: certs
  context: {cluster: c, user: carol}
users:
- name: alice
  user: {token: alice-token}
- name: bob
  user: {token: bob-token}
- name: carol
  user: {client-certificate-data: "AAAA", client-key-data: "AAAA"}
"#;

    #[tokio::test]
    async fn namespace_and_token_follow_the_context_and_user_flags() {
        let dir = tempfile::tempdir().unwrap();
        let mut args = ConnectionArgs {
            kubeconfig: Some(kubeconfig_file(dir.path(), CONFIG)),
            ..ConnectionArgs::default()
        };
        assert_eq!(args.namespace().unwrap(), "team-a");
        assert_eq!(args.token().await.unwrap(), "alice-token");
        assert_eq!(args.context_name().unwrap().as_deref(), Some("dev"));
        args.context = Some("other".into());
        assert_eq!(args.namespace().unwrap(), "default");
        assert_eq!(args.token().await.unwrap(), "bob-token");
        args.user = Some("alice".into());
        assert_eq!(args.token().await.unwrap(), "alice-token");
        args.context = Some("certs".into());
        args.user = None;
        let err = args.token().await.unwrap_err().to_string();
        assert!(
            err.contains("client certificate") && err.contains("aggregated"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn an_exec_plugin_gives_the_token() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let plugin = dir.path().join("plugin");
        std::fs::write(
            &plugin,
            "#!/bin/sh\necho '{\"apiVersion\":\"client.authentication.k8s.io/v1\",\"kind\":\"ExecCredential\",\
             \"status\":{\"token\":\"from-plugin\"}}'\n",
        )
        .unwrap();
        std::fs::set_permissions(&plugin, std::fs::Permissions::from_mode(0o755)).unwrap();
        let text = format!(
            "apiVersion: v1\nkind: Config\ncurrent-context: c\n\
             contexts: [{{name: c, context: {{cluster: k, user: u}}}}]\n\
             users: [{{name: u, user: {{exec: {{apiVersion: client.authentication.k8s.io/v1, command: {}}}}}}}]\n",
            plugin.display()
        );
        let args = ConnectionArgs {
            kubeconfig: Some(kubeconfig_file(dir.path(), &text)),
            ..ConnectionArgs::default()
        };
        assert_eq!(args.token().await.unwrap(), "from-plugin");
    }

    #[test]
    fn no_kubeconfig_is_no_namespace_not_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let args = ConnectionArgs {
            kubeconfig: Some(dir.path().join("absent")),
            ..ConnectionArgs::default()
        };
        assert_eq!(args.namespace().unwrap(), "default");
        assert!(args.kubeconfig().unwrap().is_none());
    }
}

/// Discovery when the API server goes silent (tests with a hand-made API
/// server: plain HTTP on 127.0.0.1, answering, silent or refusing).
#[cfg(test)]
mod discovery_tests {
    use super::*;
    use std::sync::atomic::{AtomicU8, Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    const ANSWER: u8 = 0;
    const SILENT: u8 = 1;
    const NOT_FOUND: u8 = 2;

    /// An API server whose ConfigMap answer `mode` chooses; its URL.
    async fn api_server(mode: Arc<AtomicU8>) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move {
            while let Ok((mut tcp, _)) = listener.accept().await {
                let mode = mode.clone();
                tokio::spawn(async move {
                    let mut head = Vec::new();
                    let mut buf = [0u8; 4096];
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                        match tcp.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => head.extend_from_slice(&buf[..n]),
                        }
                    }
                    let (status, body) = match mode.load(Ordering::SeqCst) {
                        SILENT => return std::future::pending().await,
                        NOT_FOUND => (
                            "404 Not Found",
                            r#"{"kind":"Status","apiVersion":"v1","status":"Failure","message":"configmaps \"hatchway-client\" not found","reason":"NotFound","code":404}"#.to_owned(),
                        ),
                        _ => (
                            "200 OK",
                            serde_json::json!({
                                "apiVersion": "v1", "kind": "ConfigMap",
                                "metadata": {"name": "hatchway-client", "namespace": "hatchway-system"},
                                "data": {
                                    client_config::SERVER: "https://router.example:8443",
                                    client_config::CA: hatchway_testkit::pki().ca_pem,
                                },
                            })
                            .to_string(),
                        ),
                    };
                    let answer = format!(
                        "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = tcp.write_all(answer.as_bytes()).await;
                });
            }
        });
        url
    }

    fn args(dir: &Path, url: &str) -> ConnectionArgs {
        let config = format!(
            "apiVersion: v1\nkind: Config\ncurrent-context: dev\nclusters:\n- name: c\n  cluster: {{server: \"{url}\"}}\n\
             contexts:\n- name: dev\n  context: {{cluster: c, user: alice}}\nusers:\n- name: alice\n  user: {{token: alice-token}}\n"
        );
        let path = dir.join("config");
        std::fs::write(&path, config).unwrap();
        ConnectionArgs {
            kubeconfig: Some(path),
            hatchway_namespace: "hatchway-system".to_owned(),
            ..ConnectionArgs::default()
        }
    }

    #[tokio::test]
    async fn a_silent_api_server_leaves_the_last_discovery_standing() {
        let dir = tempfile::tempdir().unwrap();
        let cache = dir.path().join("cache");
        let mode = Arc::new(AtomicU8::new(SILENT));
        let url = api_server(mode.clone()).await;
        let patience = Duration::from_millis(300);

        // Silent, nothing remembered: nothing to stand in (the real wait
        // is kube's; cut short here).
        let mut first = args(dir.path(), &url);
        let waited = tokio::time::timeout(Duration::from_secs(1), first.discover_in(&cache, patience)).await;
        assert!(waited.is_err(), "no fallback: discovery waits for the API server");

        // Answering: read and remembered.
        mode.store(ANSWER, Ordering::SeqCst);
        let mut answered = args(dir.path(), &url);
        answered.discover_in(&cache, patience).await.unwrap();
        assert_eq!(answered.server.as_deref(), Some("https://router.example:8443"));
        let ca = answered.ca_file().unwrap();
        assert!(
            std::fs::read_to_string(&ca)
                .unwrap()
                .contains("BEGIN CERTIFICATE")
        );

        // Silent: the remembered answer, after `patience`.
        mode.store(SILENT, Ordering::SeqCst);
        let mut silent = args(dir.path(), &url);
        let started = std::time::Instant::now();
        silent.discover_in(&cache, patience).await.unwrap();
        assert!(started.elapsed() >= patience);
        assert_eq!(silent.server.as_deref(), Some("https://router.example:8443"));
        assert_eq!(silent.ca_file().unwrap(), ca);

        // Found silent earlier in the command: no second wait.
        let mut known = args(dir.path(), &url);
        known.api_silent = Some("no answer within 5s".to_owned());
        let started = std::time::Instant::now();
        known.discover_in(&cache, Duration::from_secs(30)).await.unwrap();
        assert!(started.elapsed() < Duration::from_secs(5));
        assert_eq!(known.server.as_deref(), Some("https://router.example:8443"));

        // Another namespace was never read: nothing stands in for it.
        let mut other = args(dir.path(), &url);
        other.hatchway_namespace = "elsewhere".to_owned();
        let waited = tokio::time::timeout(Duration::from_secs(1), other.discover_in(&cache, patience)).await;
        assert!(waited.is_err(), "nothing remembered for another namespace");

        // `--api auto` (no router URL given): the aggregated API's check
        // gets the same patience, then the remembered router is used
        // directly, without a second wait for the ConfigMap.
        let mut auto = args(dir.path(), &url);
        let started = std::time::Instant::now();
        let endpoint = tokio::time::timeout(Duration::from_secs(5), auto.endpoint_in(&cache, patience)).await;
        match endpoint.expect("not waiting for a silent API server").unwrap() {
            Endpoint::Direct(target) => assert_eq!(target.server.url, "https://router.example:8443"),
            Endpoint::Aggregated(_) => panic!("a silent API server cannot serve the aggregated API"),
        }
        let took = started.elapsed();
        assert!(
            took >= patience && took < 2 * patience + Duration::from_millis(500),
            "{took:?}"
        );

        // The API server answers "not found": that answer stands, not the
        // remembered one (Hatchway was uninstalled).
        mode.store(NOT_FOUND, Ordering::SeqCst);
        let mut gone = args(dir.path(), &url);
        match gone.discover_in(&cache, patience).await {
            Err(ConnectionError::Discovery { reason, .. }) => {
                assert!(reason.contains("not found"), "{reason}")
            }
            other => panic!("{other:?}"),
        }
    }
}
