use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args as ClapArgs, Parser, Subcommand};

/// Hatchway's operator: the router (in every replica) and, later, the
/// reconciler.
///
/// `run` serves the router: users' shells, logs, port-forwards and web
/// apps, and the sidecars' tunnels. `crd` prints the Container
/// CustomResourceDefinition. Every flag can also be set by the environment
/// variable named in its help.
#[derive(Debug, Parser)]
#[command(name = "hatchway-operator", version)]
pub struct Args {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The operator's commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print the Container CRD as YAML (e.g. `hatchway-operator crd | kubectl apply -f -`).
    Crd,
    /// Serve the router until SIGTERM, then drain.
    Run(Box<RunArgs>),
    /// Stop the operator and remove what it created (finalizers, its
    /// Secrets, Lease and ConfigMap): the chart's pre-delete hook.
    Uninstall(crate::uninstall::UninstallArgs),
    /// Ask the router's Service for `/readyz` (and the API server for the
    /// aggregated API's discovery): the chart's `helm test` hook.
    Check(crate::check::CheckArgs),
}

/// Settings of `run`.
#[derive(Debug, Clone, ClapArgs)]
pub struct RunArgs {
    /// Address the router serves HTTPS on (users, tunnels, peers).
    #[arg(long, env = "HATCHWAY_LISTEN", default_value = "0.0.0.0:8443")]
    pub listen: SocketAddr,

    /// Address `/metrics` is served on (HTTPS, the same certificate): a
    /// port of its own, never the user-facing one.
    #[arg(long, env = "HATCHWAY_METRICS_LISTEN", default_value = "0.0.0.0:9443")]
    pub metrics_listen: SocketAddr,

    /// Address the aggregated API (access.hatchway.dev, proxied by the
    /// Kubernetes API server) is served on: HTTPS with the same
    /// certificate, believing only the API server's front proxy. Unset: not
    /// served.
    #[arg(long, env = "HATCHWAY_AGGREGATED_LISTEN")]
    pub aggregated_listen: Option<SocketAddr>,

    /// The APIService whose caBundle this replica keeps set to the router
    /// CA (so the API server trusts the aggregated port), e.g.
    /// `v1alpha1.access.hatchway.dev`. Empty: left alone.
    #[arg(long, env = "HATCHWAY_APISERVICE", default_value = "")]
    pub apiservice: String,

    /// This replica's internal base URL, recorded as a tunnel's address
    /// and used by peers to forward to it. Default: https://$POD_IP:<listen port>.
    #[arg(long, env = "HATCHWAY_SELF_URL")]
    pub self_url: Option<String>,

    /// The URL users reach the router at (the Service or Ingress). When
    /// set, it is published with the router CA in ConfigMap
    /// `hatchway-client` of the install namespace, where `kubectl hatch`
    /// finds it without `--server`.
    #[arg(long, env = "HATCHWAY_PUBLIC_URL", default_value = "")]
    pub public_url: String,

    /// This pod's IP (from the downward API), for the default self URL.
    #[arg(long, env = "POD_IP")]
    pub pod_ip: Option<String>,

    /// Directory with `tls.crt`, `tls.key` and `ca.crt` (a mounted Secret).
    /// When absent, a CA and certificate are generated at start and their
    /// fingerprint is logged (tunnels then cannot be pinned: development only).
    #[arg(long, env = "HATCHWAY_TLS_DIR")]
    pub tls_dir: Option<PathBuf>,

    /// File holding the root secret every Container key derives from. When
    /// absent, the root secret is read from (or created in) the Secret
    /// `--root-secret-name` through the API.
    #[arg(long, env = "HATCHWAY_ROOT_SECRET_FILE")]
    pub root_secret_file: Option<PathBuf>,

    /// The Secret (in the operator's namespace) holding the root secret.
    #[arg(long, env = "HATCHWAY_ROOT_SECRET_NAME", default_value = "hatchway-root")]
    pub root_secret_name: String,

    /// The Secret (in the operator's namespace) holding the router CA; each
    /// replica issues its serving certificate from it (unless --tls-dir).
    #[arg(long, env = "HATCHWAY_CA_SECRET_NAME", default_value = "hatchway-router-ca")]
    pub ca_secret_name: String,

    /// Extra names in the serving certificate (comma-separated; the
    /// Services' DNS names that sidecars and users dial).
    #[arg(long, env = "HATCHWAY_TLS_NAMES", value_delimiter = ',', default_value = "")]
    pub tls_names: Vec<String>,

    /// Run the reconciler (leader-elected) in this process.
    #[arg(long, env = "HATCHWAY_RECONCILE", default_value_t = true, action = clap::ArgAction::Set)]
    pub reconcile: bool,

    /// The sidecar image put into every Container's pod.
    #[arg(
        long,
        env = "HATCHWAY_SIDECAR_IMAGE",
        default_value = "ghcr.io/hatchway-dev/hatchway-sidecar:latest"
    )]
    pub sidecar_image: String,

    /// Pull policy of the sidecar image.
    #[arg(long, env = "HATCHWAY_SIDECAR_PULL_POLICY", default_value = "IfNotPresent")]
    pub sidecar_pull_policy: String,

    /// Resources of the sidecar container in every Container's pod, as
    /// JSON (`{"requests":{"cpu":"10m"},"limits":{"memory":"256Mi"}}`); a
    /// Container's `spec.sidecar.resources` replaces them. Empty: none.
    #[arg(long, env = "HATCHWAY_SIDECAR_RESOURCES", default_value = "", value_parser = parse_resources)]
    pub sidecar_resources: Resources,

    /// PriorityClass of every Container's pod unless its
    /// `spec.pod.priorityClassName` says. Empty: none.
    #[arg(long, env = "HATCHWAY_SIDECAR_PRIORITY_CLASS", default_value = "")]
    pub sidecar_priority_class: String,

    /// The URL sidecars dial for their tunnel (the router's Service); empty:
    /// no tunnels.
    #[arg(long, env = "HATCHWAY_TUNNEL_URL", default_value = "")]
    pub tunnel_url: String,

    /// `ttlSecondsAfterFinished` for Containers that set none (0: keep).
    #[arg(long, env = "HATCHWAY_DEFAULT_TTL_SECONDS", default_value_t = 0)]
    pub default_ttl_seconds: i64,

    /// The Lease that elects the one reconciling replica.
    #[arg(long, env = "HATCHWAY_LEASE_NAME", default_value = "hatchway-operator")]
    pub lease_name: String,

    /// This replica's name (from the downward API), for the Lease and Events.
    #[arg(long, env = "POD_NAME")]
    pub pod_name: Option<String>,

    /// Namespaces whose Containers are served (comma-separated; empty: all).
    #[arg(long, env = "HATCHWAY_NAMESPACES", value_delimiter = ',', default_value = "")]
    pub namespaces: Vec<String>,

    /// Wildcard domain of web apps (`{uid}-{port}.DOMAIN`); empty: no web apps.
    #[arg(long, env = "HATCHWAY_WILDCARD_DOMAIN", default_value = "")]
    pub wildcard_domain: String,

    /// Allow shells at all (cluster-wide switch; off answers 503).
    #[arg(long, env = "HATCHWAY_SHELL", default_value_t = true, action = clap::ArgAction::Set)]
    pub shell: bool,

    /// Connect to pods' gateway addresses directly (off: tunnels only).
    #[arg(long, env = "HATCHWAY_DIRECT_ACCESS", default_value_t = true, action = clap::ArgAction::Set)]
    pub direct_access: bool,

    /// Use a tunnel held by this replica even when a direct address is known.
    #[arg(long, env = "HATCHWAY_PREFER_TUNNEL", default_value_t = false, action = clap::ArgAction::Set)]
    pub prefer_tunnel: bool,

    /// Most tunnels one replica holds.
    #[arg(long, env = "HATCHWAY_MAX_TUNNELS", default_value_t = 1000)]
    pub max_tunnels: usize,

    /// Seconds a replica keeps serving, and accepting connections, after
    /// SIGTERM before it drains: the Service's and NodePort's rules (and
    /// an Ingress's upstreams) still send it new connections for a moment
    /// after its pod starts terminating, and a replica that stopped
    /// listening refuses them (a browser shows an error page). Like
    /// kube-apiserver's `--shutdown-delay-duration`.
    #[arg(long, env = "HATCHWAY_SHUTDOWN_DELAY_SECONDS", default_value_t = 3)]
    pub shutdown_delay_seconds: u64,

    /// Seconds without traffic after which shells, port-forwards and
    /// WebSockets are closed.
    #[arg(long, env = "HATCHWAY_IDLE_TIMEOUT_SECONDS", default_value_t = 3600)]
    pub idle_timeout_seconds: u64,

    /// Seconds a shell or port-forward whose connection broke stays
    /// resumable in its sidecar, for Containers that do not say
    /// (`spec.resumeGraceSeconds`).
    #[arg(long, env = "HATCHWAY_RESUME_GRACE_SECONDS", default_value_t = 600)]
    pub resume_grace_seconds: u64,

    /// Record every terminal opened in a Container (asciicast v2 in its
    /// sidecar's audit directory), for Containers that do not say
    /// (`spec.recordShell`).
    #[arg(long, env = "HATCHWAY_RECORD_SHELLS", default_value_t = true, action = clap::ArgAction::Set)]
    pub record_shells: bool,

    /// Which ports Containers that do not say (`spec.portForward`) may
    /// forward: `any`, `declared` (only what a Container declares or
    /// publishes) or `published` (only published ports, whatever a
    /// Container declares).
    #[arg(long, env = "HATCHWAY_PORT_FORWARD_DEFAULT", default_value = "any")]
    pub port_forward_default: hatchway_api::ports::ForwardDefault,

    /// Most connections one client address may hold open at once.
    #[arg(long, env = "HATCHWAY_MAX_CONNECTIONS_PER_CLIENT", default_value_t = 1000)]
    pub max_connections_per_client: usize,

    /// Most web-app requests this replica sends one Container's gateway at
    /// once; more wait (up to 30 s). Replicas times this should stay under
    /// the gateway's web-app share (384).
    #[arg(long, env = "HATCHWAY_MAX_WEB_REQUESTS_PER_CONTAINER", default_value_t = 128)]
    pub max_web_requests_per_container: usize,

    /// Give every Container's pod a NetworkPolicy: its gateway port only
    /// from the operator's pods (`--operator-pod-labels` in the operator's
    /// namespace), its health port from them and `--metrics-namespace-labels`.
    #[arg(long, env = "HATCHWAY_NETWORK_POLICY", default_value_t = false, action = clap::ArgAction::Set)]
    pub network_policy: bool,

    /// The operator pods' labels (`k=v`, comma-separated), for the
    /// NetworkPolicy.
    #[arg(
        long,
        env = "HATCHWAY_OPERATOR_POD_LABELS",
        value_delimiter = ',',
        default_value = ""
    )]
    pub operator_pod_labels: Vec<String>,

    /// Labels (`k=v`, comma-separated) of the namespaces Prometheus scrapes
    /// sidecars from; empty: only the operator reaches the health port.
    #[arg(
        long,
        env = "HATCHWAY_METRICS_NAMESPACE_LABELS",
        value_delimiter = ',',
        default_value = ""
    )]
    pub metrics_namespace_labels: Vec<String>,

    /// Most saved-log reads (streams from the Kubernetes API) one replica
    /// serves at once; more wait up to 10 s for a turn, then get 503.
    #[arg(long, env = "HATCHWAY_MAX_SAVED_LOG_READS", default_value_t = 16)]
    pub max_saved_log_reads: usize,

    /// Hours a web-app session (the router's own cookie, after a one-time
    /// login link) lasts.
    #[arg(long, env = "HATCHWAY_WEB_SESSION_HOURS", default_value_t = 12)]
    pub web_session_hours: u64,

    /// The TLS name in the replicas' certificate (peers are dialled by IP).
    #[arg(long, env = "HATCHWAY_PEER_SERVER_NAME", default_value = "hatchway-router")]
    pub peer_server_name: String,

    /// The router's headless Service, whose endpoints are the known replicas.
    #[arg(long, env = "HATCHWAY_REPLICA_SERVICE", default_value = "")]
    pub replica_service: String,

    /// The name of that Service's HTTPS port.
    #[arg(long, env = "HATCHWAY_REPLICA_PORT_NAME", default_value = "https")]
    pub replica_port_name: String,

    /// The namespace the operator runs in (from the downward API).
    #[arg(long, env = "POD_NAMESPACE", default_value = "hatchway-system")]
    pub pod_namespace: String,

    /// Read saved logs as separate stdout/stderr (needs the
    /// PodLogsQuerySplitStreams feature gate); off: one combined file.
    #[arg(long, env = "HATCHWAY_SPLIT_LOG_STREAMS", default_value_t = true, action = clap::ArgAction::Set)]
    pub split_log_streams: bool,

    /// Seconds TokenReview/SubjectAccessReview answers are cached.
    #[arg(long, env = "HATCHWAY_AUTH_CACHE_SECONDS", default_value_t = 10)]
    pub auth_cache_seconds: u64,

    /// Audiences accepted in TokenReview (comma-separated; empty: the API server's).
    #[arg(
        long,
        env = "HATCHWAY_TOKEN_AUDIENCES",
        value_delimiter = ',',
        default_value = ""
    )]
    pub token_audiences: Vec<String>,

    /// Log format: `text` or `json`.
    #[arg(long, env = "HATCHWAY_LOG_FORMAT", default_value = "text", value_parser = ["text", "json"])]
    pub log_format: String,
}

/// Container resources from a flag: `None` when it says nothing.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Resources(pub Option<k8s_openapi::api::core::v1::ResourceRequirements>);

/// `--sidecar-resources`: JSON as in a Pod's container (`""`, `{}` and
/// `null` set none).
fn parse_resources(text: &str) -> Result<Resources, String> {
    let text = text.trim();
    if text.is_empty() || text == "null" {
        return Ok(Resources(None));
    }
    let mut value: serde_json::Value = serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
    // YAML's `cpu: 1` arrives as a number; a quantity is a string.
    for list in ["requests", "limits"] {
        if let Some(map) = value.get_mut(list).and_then(|m| m.as_object_mut()) {
            for quantity in map.values_mut().filter(|q| q.is_number()) {
                *quantity = serde_json::Value::String(quantity.to_string());
            }
        }
    }
    let resources: k8s_openapi::api::core::v1::ResourceRequirements =
        serde_json::from_value(value).map_err(|e| format!("not a container's resources: {e}"))?;
    Ok(Resources((resources != Default::default()).then_some(resources)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sidecar_resources_are_read_as_helm_writes_them() {
        let Resources(Some(r)) =
            parse_resources(r#"{"limits":{"cpu":1,"memory":"256Mi"},"requests":{"cpu":"10m"}}"#).unwrap()
        else {
            panic!("resources expected");
        };
        let limits = r.limits.unwrap();
        assert_eq!(limits["cpu"].0, "1");
        assert_eq!(limits["memory"].0, "256Mi");
        assert_eq!(r.requests.unwrap()["cpu"].0, "10m");
        for none in ["", " ", "null", "{}"] {
            assert_eq!(parse_resources(none).unwrap(), Resources(None), "{none:?}");
        }
        let error = parse_resources("{requests: 1}").unwrap_err();
        assert!(error.starts_with("not JSON"), "{error}");
        let error = parse_resources(r#"{"requests":["1"]}"#).unwrap_err();
        assert!(error.starts_with("not a container's resources"), "{error}");
    }
}
