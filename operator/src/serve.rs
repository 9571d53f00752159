//! `hatchway-operator run`: the router wired to the cluster, served until
//! SIGTERM, then drained.

use std::sync::Arc;
use std::time::Duration;

use crate::router::auth::cache::CachedAuth;
use crate::router::auth::kube::KubeAuth;
use crate::router::cluster::kube::{KubeCluster, KubeClusterConfig, ReplicaService};
use crate::router::select::Policy;
use crate::router::tls::{RouterTls, TlsError};
use crate::router::{Router, Settings, server};
use hatchway_api::proof::RootSecret;
use std::sync::atomic::AtomicBool;

use crate::reconcile::controller::{self, ReconcileSettings};
use crate::reconcile::leader::{self, LeaderConfig};
use crate::reconcile::metrics::ReconcileMetrics;
use crate::reconcile::pod::{GatewayPolicy, PodSettings};
use crate::{RunArgs, bootstrap};

/// Why the operator could not run.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// A setting is missing or wrong.
    #[error("{0}")]
    Config(String),
    /// A file could not be read.
    #[error("reading {path}: {source}")]
    Read {
        /// Which file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The TLS material is unusable.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// The root secret or router CA could not be read or created.
    #[error(transparent)]
    Bootstrap(#[from] bootstrap::BootstrapError),
    /// No Kubernetes client could be built.
    #[error("Kubernetes client: {0}")]
    Kube(#[from] kube::Error),
    /// The listener could not be bound.
    #[error("listening on {addr}: {source}")]
    Listen {
        /// Where.
        addr: std::net::SocketAddr,
        /// Why.
        source: std::io::Error,
    },
}

fn read(path: &std::path::Path) -> Result<Vec<u8>, ServeError> {
    std::fs::read(path).map_err(|source| ServeError::Read {
        path: path.display().to_string(),
        source,
    })
}

/// The root secret from `--root-secret-file`: at least 32 bytes
/// (surrounding whitespace ignored).
fn root_secret_from_file(path: &std::path::Path) -> Result<RootSecret, ServeError> {
    let bytes = read(path)?;
    let trimmed = bytes.trim_ascii();
    if trimmed.len() < 32 {
        return Err(ServeError::Config(format!(
            "the root secret in {} has {} bytes; at least 32 are needed",
            path.display(),
            trimmed.len()
        )));
    }
    Ok(RootSecret::new(trimmed.to_vec()))
}

/// The TLS material from `--tls-dir`, or a certificate this replica
/// issues from the router CA (created at first start).
async fn tls(args: &RunArgs, client: &kube::Client) -> Result<RouterTls, ServeError> {
    if let Some(dir) = &args.tls_dir {
        let text = |name: &str| -> Result<String, ServeError> {
            Ok(String::from_utf8_lossy(&read(&dir.join(name))?).into_owned())
        };
        return Ok(RouterTls {
            cert_chain_pem: text("tls.crt")?,
            key_pem: text("tls.key")?,
            ca_pem: text("ca.crt")?,
        });
    }
    let ca = bootstrap::router_ca(client.clone(), &args.pod_namespace, &args.ca_secret_name).await?;
    let mut names = vec![args.peer_server_name.clone(), "localhost".to_owned()];
    names.extend(args.tls_names.iter().filter(|n| !n.is_empty()).cloned());
    names.extend(args.pod_ip.clone());
    Ok(RouterTls::issue(&ca, &names)?)
}

/// The router's settings from the flags.
pub fn settings(args: &RunArgs) -> Result<Settings, ServeError> {
    let self_url = match (&args.self_url, &args.pod_ip) {
        (Some(url), _) => url.trim_end_matches('/').to_owned(),
        (None, Some(ip)) if ip.contains(':') => format!("https://[{ip}]:{}", args.listen.port()),
        (None, Some(ip)) => format!("https://{ip}:{}", args.listen.port()),
        (None, None) => {
            return Err(ServeError::Config(
                "set --self-url (HATCHWAY_SELF_URL) or POD_IP: peers and tunnels need this replica's URL"
                    .into(),
            ));
        }
    };
    let mut settings = Settings::new(self_url);
    if let Some(pod) = &args.pod_name {
        settings.replica = pod.clone();
    }
    let domain = args.wildcard_domain.trim().trim_matches('.').to_ascii_lowercase();
    settings.wildcard_domain = (!domain.is_empty()).then_some(domain);
    settings.shell_enabled = args.shell;
    settings.policy = Policy {
        prefer_tunnel: args.prefer_tunnel,
        direct_access: args.direct_access,
    };
    settings.max_tunnels = args.max_tunnels;
    settings.idle_timeout = Duration::from_secs(args.idle_timeout_seconds.max(1));
    settings.web_session_lifetime = Duration::from_secs(args.web_session_hours.max(1) * 3600);
    settings.max_connections_per_client = args.max_connections_per_client.max(1);
    settings.max_web_requests_per_container = args.max_web_requests_per_container.max(1);
    settings.max_saved_log_reads = args.max_saved_log_reads.max(1);
    settings.peer_server_name = args.peer_server_name.clone();
    settings.auth_cache_ttl = Duration::from_secs(args.auth_cache_seconds);
    settings.aggregated_port = args.aggregated_listen.map(|a| a.port());
    Ok(settings)
}

/// The reconciler's settings from the flags.
/// `k=v` pairs (empty ones left out) as a label map.
fn parse_labels(pairs: &[String]) -> std::collections::BTreeMap<String, String> {
    pairs
        .iter()
        .filter_map(|pair| pair.split_once('='))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect()
}

fn reconcile_settings(args: &RunArgs, router: &Router, tls: &RouterTls) -> ReconcileSettings {
    ReconcileSettings {
        pod: PodSettings {
            sidecar_image: args.sidecar_image.clone(),
            sidecar_pull_policy: args.sidecar_pull_policy.clone(),
            sidecar_resources: args.sidecar_resources.0.clone(),
            priority_class: (!args.sidecar_priority_class.is_empty())
                .then(|| args.sidecar_priority_class.clone()),
            log_format: args.log_format.clone(),
            shell_enabled: args.shell,
            resume_grace_seconds: args.resume_grace_seconds,
            record_shells: args.record_shells,
            port_forward_default: args.port_forward_default,
            gateway_policy: args.network_policy.then(|| GatewayPolicy {
                operator_namespace: args.pod_namespace.clone(),
                operator_labels: parse_labels(&args.operator_pod_labels),
                metrics_namespace_labels: (!args.metrics_namespace_labels.is_empty())
                    .then(|| parse_labels(&args.metrics_namespace_labels)),
            }),
        },
        tunnel_url: (!args.tunnel_url.is_empty()).then(|| args.tunnel_url.clone()),
        router_ca_pem: tls.ca_pem.clone(),
        wildcard_domain: router.settings.wildcard_domain.clone(),
        default_ttl_seconds: (args.default_ttl_seconds > 0).then_some(args.default_ttl_seconds),
        namespaces: args
            .namespaces
            .iter()
            .filter(|n| !n.is_empty())
            .cloned()
            .collect(),
    }
}

/// Runs the router (and, when leading, the reconciler) until SIGTERM or
/// SIGINT.
pub async fn run(args: RunArgs) -> Result<(), ServeError> {
    init_logging(&args.log_format);
    let settings = settings(&args)?;
    let client = kube::Client::try_default().await?;
    let root = match &args.root_secret_file {
        Some(path) => root_secret_from_file(path)?,
        None => bootstrap::root_secret(client.clone(), &args.pod_namespace, &args.root_secret_name).await?,
    };
    let tls = tls(&args, &client).await?;
    if !args.public_url.is_empty() {
        bootstrap::publish_client_config(client.clone(), &args.pod_namespace, &args.public_url, &tls.ca_pem)
            .await?;
    }

    let namespaces: Vec<String> = args
        .namespaces
        .iter()
        .filter(|n| !n.is_empty())
        .cloned()
        .collect();
    let replica_service = (!args.replica_service.is_empty()).then(|| ReplicaService {
        namespace: args.pod_namespace.clone(),
        name: args.replica_service.clone(),
        port_name: args.replica_port_name.clone(),
    });
    let cluster = KubeCluster::start(
        client.clone(),
        KubeClusterConfig {
            namespaces: (!namespaces.is_empty()).then_some(namespaces),
            replica_service,
            split_log_streams: args.split_log_streams,
        },
    );
    let audiences = args
        .token_audiences
        .iter()
        .filter(|a| !a.is_empty())
        .cloned()
        .collect();
    let auth = CachedAuth::new(
        KubeAuth::new(client.clone(), audiences),
        settings.auth_cache_ttl,
        settings.auth_cache_entries,
    );
    let auth_lookups = auth.lookups();
    let router = Router::new(
        settings,
        cluster.clone(),
        Arc::new(auth),
        root.clone(),
        tls.peer_client_config()?,
    );
    router
        .metrics
        .registry
        .register(Box::new(auth_lookups))
        .expect("metric names are unique");
    router.metrics.certificate_expiry.set(tls.not_after()?);
    let shutdown = tokio_util::sync::CancellationToken::new();
    let signal = shutdown.clone();
    let delay = Duration::from_secs(args.shutdown_delay_seconds);
    let leaving = router.clone();
    tokio::spawn(async move {
        hatchway_api::pod::stopped().await;
        // The tunnels move now: this terminating pod has left the replicas
        // Service's endpoints, so its peers would no longer forward to a
        // tunnel held here. New connections keep coming until kube-proxy
        // (and any Ingress) has taken the pod out of its rules: serve them.
        leaving.tunnels.leave();
        tracing::info!(
            ?delay,
            "signal received: tunnels let go; serving on, then draining"
        );
        tokio::time::sleep(delay).await;
        tracing::info!("draining");
        signal.cancel();
    });
    let reconciler = args.reconcile.then(|| {
        let settings = reconcile_settings(&args, &router, &tls);
        let identity = args
            .pod_name
            .clone()
            .unwrap_or_else(|| format!("hatchway-operator-{:08x}", rand::random::<u32>()));
        let config = LeaderConfig::new(&args.pod_namespace, &args.lease_name, identity);
        let client = client.clone();
        let metrics = ReconcileMetrics::new(&router.metrics.operator);
        tokio::spawn(leader::run_when_leader(
            client.clone(),
            config,
            Arc::new(AtomicBool::new(false)),
            shutdown.clone(),
            move |token| {
                let (settings, root, metrics) = (settings.clone(), root.clone(), metrics.clone());
                controller::run(client.clone(), settings, root, metrics, token)
            },
        ))
    });

    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(|source| ServeError::Listen {
            addr: args.listen,
            source,
        })?;
    let metrics_listener = tokio::net::TcpListener::bind(args.metrics_listen)
        .await
        .map_err(|source| ServeError::Listen {
            addr: args.metrics_listen,
            source,
        })?;
    tokio::spawn(server::serve_metrics(
        router.clone(),
        metrics_listener,
        tls.server_config()?,
        shutdown.clone(),
    ));
    tracing::info!(
        listen = %args.listen,
        metrics = %args.metrics_listen,
        self_url = %router.settings.self_url,
        certificate = %tls.fingerprint()?,
        "router serving; waiting for the Container cache"
    );
    // Requests before the cache is filled would wrongly answer 404.
    cluster.wait_until_ready().await;
    tracing::info!("Container cache ready");
    if let Some(addr) = args.aggregated_listen {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| ServeError::Listen { addr, source })?;
        tokio::spawn(serve_aggregated(
            router.clone(),
            client.clone(),
            listener,
            tls.clone(),
            args.apiservice.clone(),
            shutdown.clone(),
        ));
    }

    server::serve(router.clone(), listener, tls.server_config()?, shutdown).await;
    // `serve` let the tunnels go when the drain began; one that connected
    // during the drain ends now rather than with the process.
    router.tunnels.leave();
    if let Some(reconciler) = reconciler {
        // Stops reconciling and releases the Lease, so another replica
        // takes over at once.
        let _ = tokio::time::timeout(Duration::from_secs(10), reconciler).await;
    }
    tracing::info!("drained; exiting");
    Ok(())
}

/// Serves the aggregated API once the API server's front-proxy settings
/// are read (retried until they are: a cluster without them cannot proxy
/// to it anyway, and says so in the log), after pointing the APIService's
/// caBundle at the router CA.
async fn serve_aggregated(
    router: Arc<Router>,
    client: kube::Client,
    listener: tokio::net::TcpListener,
    tls: RouterTls,
    apiservice: String,
    shutdown: tokio_util::sync::CancellationToken,
) {
    use crate::router::apiservice::{self, FrontProxy};
    let mut delay = Duration::from_secs(1);
    let front = loop {
        match FrontProxy::load(client.clone()).await {
            Ok(front) => break front,
            Err(error) => {
                tracing::warn!(%error, "the aggregated API waits for the API server's front-proxy settings");
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(delay) => {}
                }
                delay = (delay * 2).min(Duration::from_secs(60));
            }
        }
    };
    let config = front
        .verifier()
        .map_err(|e| e.to_string())
        .and_then(|verifier| tls.server_config_verifying(verifier).map_err(|e| e.to_string()));
    let config = match config {
        Ok(config) => config,
        Err(error) => return tracing::error!(%error, "the aggregated API cannot be served"),
    };
    if !apiservice.is_empty()
        && let Err(error) = bootstrap::set_apiservice_ca(client, &apiservice, &tls.ca_pem).await
    {
        // The API server then cannot verify this port; users see it in
        // the APIService's Available condition.
        tracing::error!(%error, apiservice, "setting the APIService's caBundle");
    }
    tracing::info!(
        listen = %listener.local_addr().map(|a| a.to_string()).unwrap_or_default(),
        front_proxy_names = ?front.allowed_names,
        "serving the aggregated API"
    );
    let table = apiservice::table(router.clone(), Arc::new(front));
    server::serve_aggregated(router, listener, config, table, shutdown).await;
}

pub fn init_logging(format: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("HATCHWAY_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = if format == "json" {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Args, Command};
    use clap::Parser;

    fn run_args(extra: &[&str]) -> RunArgs {
        let mut argv = vec!["hatchway-operator", "run"];
        argv.extend_from_slice(extra);
        match Args::try_parse_from(argv).unwrap().command {
            Command::Run(run) => *run,
            _ => panic!("not run"),
        }
    }

    #[test]
    fn the_self_url_comes_from_the_pod_ip_or_the_flag() {
        let s = settings(&run_args(&["--pod-ip", "10.1.2.3", "--listen", "0.0.0.0:9443"])).unwrap();
        assert_eq!(s.self_url, "https://10.1.2.3:9443");
        let s = settings(&run_args(&["--pod-ip", "fd00::5"])).unwrap();
        assert_eq!(s.self_url, "https://[fd00::5]:8443");
        let s = settings(&run_args(&[
            "--self-url",
            "https://r.example:1/",
            "--pod-ip",
            "1.1.1.1",
        ]))
        .unwrap();
        assert_eq!(s.self_url, "https://r.example:1");
    }

    #[test]
    fn settings_follow_the_flags() {
        let s = settings(&run_args(&[
            "--pod-ip",
            "10.0.0.1",
            "--wildcard-domain",
            ".Apps.Example.",
            "--direct-access",
            "false",
            "--prefer-tunnel",
            "true",
        ]))
        .unwrap();
        assert_eq!(s.wildcard_domain.as_deref(), Some("apps.example"));
        assert_eq!(
            s.policy,
            Policy {
                prefer_tunnel: true,
                direct_access: false
            }
        );
        let s = settings(&run_args(&["--pod-ip", "10.0.0.1"])).unwrap();
        assert_eq!(s.wildcard_domain, None);
    }

    #[test]
    fn a_missing_self_url_or_short_root_secret_is_a_clear_error() {
        let err = settings(&run_args(&[])).unwrap_err().to_string();
        assert!(err.contains("--self-url"), "{err}");
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("root");
        std::fs::write(&file, "short\n").unwrap();
        let err = root_secret_from_file(&file).unwrap_err().to_string();
        assert!(err.contains("has 5 bytes; at least 32"), "{err}");
        let err = root_secret_from_file(std::path::Path::new("/nonexistent/x"))
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("reading /nonexistent/x"), "{err}");
    }
}
