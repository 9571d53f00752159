//! Test rigs shared by the operator's and the CLI's tests and the
//! benchmark: an in-memory cluster and auth table behind the router's two
//! small interfaces, a router on 127.0.0.1:0 with real TLS, real sidecar
//! gateways (with a real shim process when shells are needed), fake
//! sidecars dialing tunnels by hand, an HTTPS client, the real OpenSSH
//! client set up as strictly as a user's ([`openssh`]), and the one wait
//! with a deadline: [`eventually`] (async) and [`wait_until`] (blocking).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::future::poll_fn;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures::future::BoxFuture;
use hatchway_api::control::{self, ControlMessage};
use hatchway_api::crd::{Container, ContainerSpec, ContainerStatus, GatewayStatus, Phase};
use hatchway_api::proof::CtrKey;
use hatchway_api::proof::RootSecret;
use hatchway_api::tunnel::{EKM_LABEL, EKM_LEN, tunnel_proof};
use hatchway_api::wire;
use hatchway_operator::router::apiservice::FrontProxy;
use hatchway_operator::router::auth::{Auth, AuthError, Permission, User};
use hatchway_operator::router::cluster::{Cluster, ClusterError, LogQuery, LogStream, SavedLogs};
use hatchway_operator::router::tls::RouterTls;
use hatchway_operator::router::{Router, Settings};
use hatchway_sidecar::args::GatewayArgs;
use hatchway_sidecar::start::{Running, start_gateway};
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::process::{Child, Command};
use tokio_rustls::TlsConnector;
use tokio_util::compat::{Compat, FuturesAsyncReadCompatExt, TokioAsyncReadCompatExt};
use tokio_util::sync::CancellationToken;

pub const ROOT: &[u8] = b"router test root secret, 32 byte";

/// Polls `check` every `every` until it returns `Ok(Some(_))` or `timeout`
/// passes; the error then names `what` and the last error seen. The
/// blocking form of [`eventually`], for tests that drive processes (the e2e
/// suite); never a bare sleep.
pub fn wait_until<T>(
    what: &str,
    timeout: Duration,
    every: Duration,
    mut check: impl FnMut() -> anyhow::Result<Option<T>>,
) -> anyhow::Result<T> {
    let deadline = std::time::Instant::now() + timeout;
    let mut last = String::from("condition not met");
    loop {
        match check() {
            Ok(Some(value)) => return Ok(value),
            Ok(None) => {}
            Err(err) => last = format!("{err:#}"),
        }
        if std::time::Instant::now() >= deadline {
            anyhow::bail!("timed out after {timeout:?} waiting for {what}: {last}");
        }
        std::thread::sleep(every);
    }
}

/// Waits until `check` holds, failing after 20 s.
pub async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        if check().await {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

// ---------------------------------------------------------------- cluster

/// One saved log file the [`MemoryCluster`] serves.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SavedLog {
    pub name: String,
    pub content: Bytes,
    pub modified: Option<std::time::SystemTime>,
}

/// What the [`MemoryCluster`]'s saved-log streams have done.
#[derive(Default)]
pub struct StreamCounts {
    /// Every stream opened: (file, since_seconds).
    pub opened: Mutex<Vec<(String, Option<u64>)>>,
    /// Streams open now (not yet dropped).
    pub open: std::sync::atomic::AtomicUsize,
    /// The most open at once.
    pub most_open: std::sync::atomic::AtomicUsize,
}

/// Containers, saved logs and replicas in memory. `apply_status` merges the
/// patch into the status (objects recursively, everything else replaced),
/// which is what server-side apply does for the fields it names, and drops
/// the top-level fields the same manager applied last time and leaves out
/// now (as server-side apply does for fields no other manager owns).
#[derive(Default)]
pub struct MemoryCluster {
    containers: Mutex<BTreeMap<(String, String), Container>>,
    /// Container UID → (how many times set, its files).
    saved: Mutex<HashMap<String, (u64, Vec<SavedLog>)>>,
    replicas: Mutex<Vec<String>>,
    /// Every apply: (namespace, name, field manager, patch).
    pub applied: Mutex<Vec<(String, String, String, serde_json::Value)>>,
    /// When set, every call fails as if the API were down.
    pub down: std::sync::atomic::AtomicBool,
    /// The `since_seconds` of the last saved-log stream opened.
    pub last_since: Mutex<Option<u64>>,
    /// The whole query of the last saved-log stream opened.
    pub last_query: Mutex<LogQuery>,
    /// The saved-log streams.
    pub streams: Arc<StreamCounts>,
}

impl MemoryCluster {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    pub fn insert(&self, container: Container) {
        let key = (
            container.metadata.namespace.clone().unwrap(),
            container.metadata.name.clone().unwrap(),
        );
        self.containers.lock().unwrap().insert(key, container);
    }

    /// Changes a stored Container in place (its spec, as a re-created one
    /// with the same UID would have).
    pub fn update(&self, namespace: &str, name: &str, change: impl FnOnce(&mut Container)) {
        let mut containers = self.containers.lock().unwrap();
        change(
            containers
                .get_mut(&(namespace.to_owned(), name.to_owned()))
                .expect("the container exists"),
        );
    }

    pub fn set_status(&self, namespace: &str, name: &str, status: ContainerStatus) {
        let mut containers = self.containers.lock().unwrap();
        let container = containers
            .get_mut(&(namespace.to_owned(), name.to_owned()))
            .expect("the container exists");
        container.status = Some(status);
    }

    pub fn status(&self, namespace: &str, name: &str) -> Option<ContainerStatus> {
        self.containers
            .lock()
            .unwrap()
            .get(&(namespace.to_owned(), name.to_owned()))
            .and_then(|c| c.status.clone())
    }

    /// A Container `namespace/name` that has ended (Complete) and left the
    /// saved logs `files` (name, content); its UID.
    pub fn insert_ended(&self, namespace: &str, name: &str, files: &[(&str, Bytes)]) -> String {
        let c = container(namespace, name);
        let uid = c.metadata.uid.clone().unwrap();
        self.insert(c);
        self.set_status(
            namespace,
            name,
            ContainerStatus {
                phase: Some(Phase::Complete),
                ..ContainerStatus::default()
            },
        );
        let logs = files
            .iter()
            .map(|(file, content)| SavedLog {
                name: (*file).to_owned(),
                content: content.clone(),
                modified: None,
            })
            .collect();
        self.set_saved_logs(&uid, logs);
        uid
    }

    /// The saved logs of the Container `uid`; each call is a new pod (its
    /// sizes are counted afresh).
    pub fn set_saved_logs(&self, uid: &str, logs: Vec<SavedLog>) {
        let mut saved = self.saved.lock().unwrap();
        let generation = saved.get(uid).map_or(0, |(g, _)| g + 1);
        saved.insert(uid.to_owned(), (generation, logs));
    }

    pub fn set_replicas(&self, replicas: Vec<String>) {
        *self.replicas.lock().unwrap() = replicas;
    }

    fn check_up(&self) -> Result<(), ClusterError> {
        if self.down.load(std::sync::atomic::Ordering::Relaxed) {
            return Err(ClusterError::Api("the test cluster is down".into()));
        }
        Ok(())
    }
}

fn merge(target: &mut serde_json::Value, patch: serde_json::Value) {
    match (target, patch) {
        (serde_json::Value::Object(target), serde_json::Value::Object(patch)) => {
            for (key, value) in patch {
                merge(target.entry(key).or_insert(serde_json::Value::Null), value);
            }
        }
        (target, patch) => *target = patch,
    }
}

impl Cluster for MemoryCluster {
    fn containers(&self, namespace: &str) -> Vec<Container> {
        let mut found: Vec<Container> = self
            .containers
            .lock()
            .unwrap()
            .iter()
            .filter(|((ns, _), _)| ns == namespace)
            .map(|(_, c)| c.clone())
            .collect();
        found.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
        found
    }

    fn container<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
    ) -> BoxFuture<'a, Result<Option<Container>, ClusterError>> {
        Box::pin(async move {
            self.check_up()?;
            Ok(self
                .containers
                .lock()
                .unwrap()
                .get(&(namespace.to_owned(), name.to_owned()))
                .cloned())
        })
    }

    fn container_by_uid<'a>(
        &'a self,
        uid: &'a str,
    ) -> BoxFuture<'a, Result<Option<Container>, ClusterError>> {
        Box::pin(async move {
            self.check_up()?;
            Ok(self
                .containers
                .lock()
                .unwrap()
                .values()
                .find(|c| c.metadata.uid.as_deref() == Some(uid))
                .cloned())
        })
    }

    fn apply_status<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
        field_manager: &'a str,
        status: ContainerStatus,
    ) -> BoxFuture<'a, Result<(), ClusterError>> {
        Box::pin(async move {
            self.check_up()?;
            let status = serde_json::to_value(&status).unwrap();
            let mut applied = self.applied.lock().unwrap();
            let before = applied
                .iter()
                .rev()
                .find(|(ns, n, m, _)| ns == namespace && n == name && m == field_manager)
                .map(|(_, _, _, patch)| patch.clone());
            applied.push((
                namespace.to_owned(),
                name.to_owned(),
                field_manager.to_owned(),
                status.clone(),
            ));
            drop(applied);
            let mut containers = self.containers.lock().unwrap();
            let container = containers
                .get_mut(&(namespace.to_owned(), name.to_owned()))
                .ok_or_else(|| ClusterError::Api(format!("containers {name:?} not found")))?;
            let mut current = serde_json::to_value(container.status.clone().unwrap_or_default()).unwrap();
            if let (Some(serde_json::Value::Object(before)), Some(current)) =
                (before, current.as_object_mut())
            {
                for key in before.keys().filter(|k| status.get(k.as_str()).is_none()) {
                    current.remove(key);
                }
            }
            merge(&mut current, status);
            container.status = Some(
                serde_json::from_value(current)
                    .map_err(|e| ClusterError::Api(format!("invalid status: {e}")))?,
            );
            Ok(())
        })
    }

    fn saved_logs<'a>(
        &'a self,
        container: &'a Container,
    ) -> BoxFuture<'a, Result<Option<SavedLogs>, ClusterError>> {
        Box::pin(async move {
            self.check_up()?;
            let uid = container.metadata.uid.clone().unwrap_or_default();
            let saved = self.saved.lock().unwrap();
            let Some((generation, files)) = saved.get(&uid) else {
                return Ok(None);
            };
            Ok(Some(SavedLogs {
                namespace: container.metadata.namespace.clone().unwrap_or_default(),
                pod: format!("pod-{uid}"),
                pod_uid: format!("{uid}/{generation}"),
                finished: true,
                modified: files.first().and_then(|f| f.modified),
                files: files.iter().map(|f| f.name.clone()).collect(),
            }))
        })
    }

    fn saved_log_stream<'a>(
        &'a self,
        logs: &'a SavedLogs,
        file: &'a str,
        query: LogQuery,
    ) -> BoxFuture<'a, Result<Option<LogStream>, ClusterError>> {
        let since_seconds = query.since_seconds;
        Box::pin(async move {
            use futures::StreamExt;
            use std::sync::atomic::Ordering;
            self.check_up()?;
            // Lines carry no times here: the caller's `since` is recorded
            // for the test to check, the kubelet's filtering is e2e-tested.
            *self.last_since.lock().unwrap() = since_seconds;
            *self.last_query.lock().unwrap() = query;
            let uid = logs.pod.strip_prefix("pod-").unwrap_or_default();
            let content = {
                let saved = self.saved.lock().unwrap();
                let Some(found) = saved
                    .get(uid)
                    .and_then(|(_, files)| files.iter().find(|f| f.name == file))
                else {
                    return Ok(None);
                };
                found.content.clone()
            };
            let counts = self.streams.clone();
            counts
                .opened
                .lock()
                .unwrap()
                .push((file.to_owned(), since_seconds));
            let open = counts.open.fetch_add(1, Ordering::SeqCst) + 1;
            counts.most_open.fetch_max(open, Ordering::SeqCst);
            // Served in 64 KiB pieces, as the API server sends them; the
            // guard counts the stream closed when it is dropped.
            struct Open(Arc<StreamCounts>);
            impl Drop for Open {
                fn drop(&mut self) {
                    self.0.open.fetch_sub(1, Ordering::SeqCst);
                }
            }
            let guard = Open(counts);
            let pieces: Vec<Bytes> = (0..content.len())
                .step_by(64 * 1024)
                .map(|at| content.slice(at..(at + 64 * 1024).min(content.len())))
                .collect();
            let stream = futures::stream::iter(pieces).map(move |piece| {
                let _ = &guard;
                Ok(piece)
            });
            Ok(Some(stream.boxed()))
        })
    }

    fn replicas(&self) -> Vec<String> {
        self.replicas.lock().unwrap().clone()
    }
}

/// A Container `namespace/name` with a fresh UID and a `sleep` command.
pub fn container(namespace: &str, name: &str) -> Container {
    container_with(namespace, name, |_| {})
}

/// Like [`container`], with the spec changed by `tweak`.
pub fn container_with(namespace: &str, name: &str, tweak: impl FnOnce(&mut ContainerSpec)) -> Container {
    let mut spec: ContainerSpec = serde_json::from_value(serde_json::json!({
        "image": "busybox",
        "command": ["sleep", "infinity"],
    }))
    .unwrap();
    tweak(&mut spec);
    let mut container = Container::new(name, spec);
    container.metadata.namespace = Some(namespace.to_owned());
    container.metadata.uid = Some(uuid());
    container
}

/// A random RFC 4122-shaped UID.
pub fn uuid() -> String {
    let v: u128 = rand::random();
    let h = format!("{v:032x}");
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

/// A Running status with a direct gateway address.
pub fn running_at(addr: SocketAddr) -> ContainerStatus {
    ContainerStatus {
        phase: Some(Phase::Running),
        gateway: Some(GatewayStatus {
            address: addr.to_string(),
            ..GatewayStatus::default()
        }),
        ..ContainerStatus::default()
    }
}

// ---------------------------------------------------------------- auth

/// Tokens and grants in a table; counts calls.
#[derive(Default)]
pub struct StaticAuth {
    tokens: Mutex<HashMap<String, User>>,
    /// (username, namespace, permission) granted, on every Container there.
    grants: Mutex<HashSet<(String, String, Permission)>>,
    pub authentications: std::sync::atomic::AtomicUsize,
    /// The user of the latest authorization asked (groups and extras as
    /// they reached it).
    pub last_authorized: Mutex<Option<User>>,
    /// When set, every call fails as if the API were down.
    pub down: std::sync::atomic::AtomicBool,
}

impl StaticAuth {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Adds a user with `token`.
    pub fn user(&self, token: &str, username: &str) {
        self.tokens.lock().unwrap().insert(
            token.to_owned(),
            User {
                username: username.to_owned(),
                ..User::default()
            },
        );
    }

    /// Grants `permission` in `namespace` to `username`.
    pub fn grant(&self, username: &str, namespace: &str, permission: Permission) {
        self.grants
            .lock()
            .unwrap()
            .insert((username.to_owned(), namespace.to_owned(), permission));
    }

    /// Grants every permission in `namespace`.
    pub fn grant_all(&self, username: &str, namespace: &str) {
        for p in [
            Permission::SHELL,
            Permission::LOG,
            Permission::PORTFORWARD,
            Permission::PROXY_GET,
            Permission::PROXY_CREATE,
        ] {
            self.grant(username, namespace, p);
        }
    }
}

impl Auth for StaticAuth {
    fn authenticate<'a>(&'a self, token: &'a str) -> BoxFuture<'a, Result<User, AuthError>> {
        Box::pin(async move {
            self.authentications
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            if self.down.load(std::sync::atomic::Ordering::Relaxed) {
                return Err(AuthError::Unavailable("the test API is down".into()));
            }
            self.tokens
                .lock()
                .unwrap()
                .get(token)
                .cloned()
                .ok_or_else(|| AuthError::Unauthenticated("token rejected by the cluster".into()))
        })
    }

    fn authorize<'a>(
        &'a self,
        user: &'a User,
        namespace: &'a str,
        _name: &'a str,
        permission: Permission,
    ) -> BoxFuture<'a, Result<bool, AuthError>> {
        Box::pin(async move {
            *self.last_authorized.lock().unwrap() = Some(user.clone());
            Ok(self.grants.lock().unwrap().contains(&(
                user.username.clone(),
                namespace.to_owned(),
                permission,
            )))
        })
    }
}

// ---------------------------------------------------------------- router

/// The PKI every test router shares (one CA, one serving certificate for
/// "hatchway-router", "localhost" and 127.0.0.1).
pub fn pki() -> RouterTls {
    PKI.get_or_init(|| {
        RouterTls::generate(&["hatchway-router".into(), "localhost".into(), "127.0.0.1".into()]).unwrap()
    })
    .clone()
}

static PKI: std::sync::OnceLock<RouterTls> = std::sync::OnceLock::new();

/// Makes this process's routers use `tls` (before any is started), as
/// replicas share one CA: a router process restarted by a benchmark keeps
/// its clients' trust.
pub fn use_pki(tls: RouterTls) -> bool {
    PKI.set(tls).is_ok()
}

// ------------------------------------------------ the API server's front proxy

/// The Kubernetes API server's front proxy as tests play it: a
/// request-header CA, client certificates it signs, and the settings
/// ConfigMap `kube-system/extension-apiserver-authentication` would hold
/// (kubeadm's: allowed name `front-proxy-client`, `X-Remote-*` headers).
pub struct FrontProxyPki {
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
    /// The settings the router reads.
    pub settings: FrontProxy,
}

impl FrontProxyPki {
    /// A fresh CA and the settings naming it.
    pub fn new() -> Self {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "front-proxy-ca");
        params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::DigitalSignature,
        ];
        let cert = params.self_signed(&key).unwrap();
        let data: BTreeMap<String, String> = [
            ("requestheader-client-ca-file", cert.pem()),
            ("requestheader-allowed-names", r#"["front-proxy-client"]"#.into()),
            ("requestheader-username-headers", r#"["X-Remote-User"]"#.into()),
            ("requestheader-group-headers", r#"["X-Remote-Group"]"#.into()),
            (
                "requestheader-extra-headers-prefix",
                r#"["X-Remote-Extra-"]"#.into(),
            ),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        Self {
            issuer: rcgen::Issuer::new(params, key),
            settings: FrontProxy::from_data(&data).unwrap(),
        }
    }

    /// A client TLS configuration presenting a certificate with common
    /// name `cn` signed by this CA (`None`: no certificate), trusting the
    /// test router CA.
    pub fn client_tls(&self, cn: Option<&str>) -> Arc<rustls::ClientConfig> {
        let builder = rustls::ClientConfig::builder_with_provider(hatchway_api::tls::provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(router_roots());
        let mut config = match cn {
            None => builder.with_no_client_auth(),
            Some(cn) => {
                let (chain, key) = self.issue(cn);
                builder.with_client_auth_cert(chain, key).unwrap()
            }
        };
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Arc::new(config)
    }

    /// A client certificate with common name `cn` (client auth usage).
    pub fn issue(
        &self,
        cn: &str,
    ) -> (
        Vec<rustls::pki_types::CertificateDer<'static>>,
        rustls::pki_types::PrivateKeyDer<'static>,
    ) {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(rcgen::DnType::CommonName, cn);
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        let der = rustls::pki_types::PrivateKeyDer::try_from(key.serialize_der()).unwrap();
        (vec![cert.der().clone()], der)
    }
}

impl Default for FrontProxyPki {
    fn default() -> Self {
        Self::new()
    }
}

fn router_roots() -> rustls::RootCertStore {
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls::pki_types::CertificateDer::pem_slice_iter(pki().ca_pem.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    roots
}

/// A router serving on 127.0.0.1:0.
pub struct TestRouter {
    pub router: Arc<Router>,
    pub addr: SocketAddr,
    /// Where `/metrics` is served (its own port).
    pub metrics_addr: SocketAddr,
    /// Where the aggregated API is served, when it is.
    pub aggregated_addr: Option<SocketAddr>,
    pub url: String,
    pub shutdown: CancellationToken,
    pub served: Option<tokio::task::JoinHandle<()>>,
}

impl TestRouter {
    pub async fn start(cluster: Arc<dyn Cluster>, auth: Arc<dyn Auth>) -> Self {
        Self::start_with(cluster, auth, |_| {}).await
    }

    pub async fn start_with(
        cluster: Arc<dyn Cluster>,
        auth: Arc<dyn Auth>,
        tweak: impl FnOnce(&mut Settings),
    ) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        Self::start_on(listener, cluster, auth, tweak).await
    }

    /// On a listener the caller bound (to restart a router on its port).
    pub async fn start_on(
        listener: TcpListener,
        cluster: Arc<dyn Cluster>,
        auth: Arc<dyn Auth>,
        tweak: impl FnOnce(&mut Settings),
    ) -> Self {
        let addr = listener.local_addr().unwrap();
        let url = format!("https://{addr}");
        let mut settings = Settings::new(url.clone());
        settings.drain_timeout = Duration::from_secs(2);
        // Refusals of a tunnel that is not there come quickly in tests (a
        // test of the wait sets its own).
        settings.tunnel_grace = Duration::from_millis(300);
        tweak(&mut settings);
        let tls = pki();
        let router = Router::new(
            settings,
            cluster,
            auth,
            RootSecret::new(ROOT.to_vec()),
            tls.peer_client_config().unwrap(),
        );
        let shutdown = CancellationToken::new();
        let metrics = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let metrics_addr = metrics.local_addr().unwrap();
        tokio::spawn(hatchway_operator::router::server::serve_metrics(
            router.clone(),
            metrics,
            tls.server_config().unwrap(),
            shutdown.clone(),
        ));
        let served = tokio::spawn(hatchway_operator::router::server::serve(
            router.clone(),
            listener,
            tls.server_config().unwrap(),
            shutdown.clone(),
        ));
        Self {
            router,
            addr,
            metrics_addr,
            aggregated_addr: None,
            url,
            shutdown,
            served: Some(served),
        }
    }

    /// A router on `ip` (any port) that also serves the aggregated API on
    /// `ip:aggregated_port` (0: any), believing `front`. Replicas share
    /// one aggregated port, so tests of forwarding between them put each
    /// on its own loopback address.
    pub async fn start_aggregated(
        ip: std::net::IpAddr,
        aggregated_port: u16,
        cluster: Arc<dyn Cluster>,
        auth: Arc<dyn Auth>,
        front: &FrontProxy,
        tweak: impl FnOnce(&mut Settings),
    ) -> Self {
        let listener = TcpListener::bind((ip, 0)).await.unwrap();
        let aggregated = TcpListener::bind((ip, aggregated_port)).await.unwrap();
        let aggregated_addr = aggregated.local_addr().unwrap();
        let mut router = Self::start_on(listener, cluster, auth, |settings| {
            settings.aggregated_port = Some(aggregated_addr.port());
            tweak(settings);
        })
        .await;
        let tls = pki().server_config_verifying(front.verifier().unwrap()).unwrap();
        let table =
            hatchway_operator::router::apiservice::table(router.router.clone(), Arc::new(front.clone()));
        tokio::spawn(hatchway_operator::router::server::serve_aggregated(
            router.router.clone(),
            aggregated,
            tls,
            table,
            router.shutdown.clone(),
        ));
        router.aggregated_addr = Some(aggregated_addr);
        router
    }

    /// Kills this router (as [`Self::kill`]) and starts a new one with the
    /// same settings on the same port.
    pub async fn restart(&mut self) {
        let settings = self.router.settings.clone();
        let (cluster, auth) = (self.router.cluster.clone(), self.router.auth.clone());
        self.shutdown.cancel();
        if let Some(served) = self.served.take() {
            let _ = served.await;
        }
        self.router.tunnels.leave();
        let listener = TcpListener::bind(self.addr).await.unwrap();
        *self = Self::start_on(listener, cluster, auth, |s| *s = settings).await;
    }

    /// An HTTPS client connection to this router (HTTP/1.1).
    pub async fn client(&self) -> Client {
        Client::connect(self.addr).await
    }

    /// A WebSocket to `uri` (`wss://HOST/path`) on the router as a browser
    /// opens one: `Host`, `Cookie` and `Origin` given. The handshake's
    /// error is the caller's to check (a refusal is `Error::Http`).
    pub async fn websocket(
        &self,
        uri: &str,
        host: &str,
        cookie: &str,
        origin: &str,
    ) -> Result<
        (
            tokio_tungstenite::WebSocketStream<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>,
            tokio_tungstenite::tungstenite::handshake::client::Response,
        ),
        tokio_tungstenite::tungstenite::Error,
    > {
        let tcp = tokio::net::TcpStream::connect(self.addr)
            .await
            .expect("connect to the router");
        let tls = tokio_rustls::TlsConnector::from(client_tls(&[b"http/1.1"]))
            .connect(
                rustls::pki_types::ServerName::try_from("localhost").expect("a DNS name"),
                tcp,
            )
            .await
            .expect("TLS to the router");
        let request = http::Request::builder()
            .uri(uri)
            .header("host", host)
            .header("cookie", cookie)
            .header("origin", origin)
            .header("connection", "Upgrade")
            .header("upgrade", "websocket")
            .header("sec-websocket-version", "13")
            .header(
                "sec-websocket-key",
                tokio_tungstenite::tungstenite::handshake::client::generate_key(),
            )
            .body(())
            .expect("a valid request");
        tokio_tungstenite::client_async(request, tls).await
    }

    /// An HTTP/2 connection to the router (ALPN `h2`, checked).
    pub async fn h2_client<B>(&self) -> hyper::client::conn::http2::SendRequest<B>
    where
        B: hyper::body::Body + Send + Unpin + 'static,
        B::Data: Send,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let tcp = tokio::net::TcpStream::connect(self.addr)
            .await
            .expect("connect to the router");
        let tls = tokio_rustls::TlsConnector::from(client_tls(&[b"h2"]))
            .connect(
                rustls::pki_types::ServerName::try_from("localhost").expect("a DNS name"),
                tcp,
            )
            .await
            .expect("TLS to the router");
        assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
        let (sender, conn) = hyper::client::conn::http2::handshake(
            hyper_util::rt::TokioExecutor::new(),
            hyper_util::rt::TokioIo::new(tls),
        )
        .await
        .expect("the HTTP/2 handshake");
        tokio::spawn(conn);
        sender
    }

    /// Stops the router and waits for it to drain.
    pub async fn stop(mut self) {
        self.shutdown.cancel();
        if let Some(served) = self.served.take() {
            let _ = served.await;
        }
    }

    /// Stops the router as a replica's exit would: it stops serving, then
    /// closes every tunnel it holds (their sidecars reconnect, and find the
    /// port closed, as they would).
    pub async fn kill(mut self) {
        self.shutdown.cancel();
        if let Some(served) = self.served.take() {
            let _ = served.await;
        }
        self.router.tunnels.leave();
    }
}

impl Drop for TestRouter {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// A client TLS configuration that trusts the test router CA.
pub fn client_tls(alpn: &[&[u8]]) -> Arc<rustls::ClientConfig> {
    trusting(&pki().ca_pem, alpn)
}

/// A client TLS configuration that trusts only `ca_pem` (another
/// process's routers).
pub fn trusting(ca_pem: &str, alpn: &[&[u8]]) -> Arc<rustls::ClientConfig> {
    let mut config = hatchway_api::tls::client_trusting(ca_pem.as_bytes()).expect("the test CA is valid PEM");
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(config)
}

/// A process's resident memory (`VmRSS`).
pub fn rss(pid: u32) -> std::io::Result<u64> {
    status_bytes(pid, "VmRSS")
}

/// The anonymous part of a process's resident memory (`RssAnon`): its
/// heap and stacks, without the pages of its binary and libraries, which
/// are shared and grow as code runs for the first time. Slopes (memory
/// per tunnel, per stream) are taken from this.
pub fn anon_rss(pid: u32) -> std::io::Result<u64> {
    status_bytes(pid, "RssAnon")
}

/// A `kB` field of `/proc/<pid>/status`, in bytes.
fn status_bytes(pid: u32, field: &str) -> std::io::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map(|kb| kb * 1024)
        .ok_or_else(|| std::io::Error::other(format!("no {field} in /proc/{pid}/status")))
}

/// A server that sends every line back as it arrives; returns its port.
pub async fn line_echo_server() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            tokio::spawn(async move {
                let (r, mut w) = socket.split();
                let _ = tokio::io::copy(&mut tokio::io::BufReader::new(r), &mut w).await;
            });
        }
    });
    port
}

/// A server that hashes everything it receives and answers the SHA-256 in
/// hex once the client has finished sending; returns its port.
pub async fn hashing_server() -> u16 {
    use sha2::Digest as _;
    use tokio::io::AsyncReadExt as _;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut hash = sha2::Sha256::new();
                let mut buf = vec![0u8; 256 * 1024];
                loop {
                    match socket.read(&mut buf).await {
                        Ok(0) => break,
                        Ok(n) => hash.update(&buf[..n]),
                        Err(_) => return,
                    }
                }
                let _ = socket.write_all(hex::encode(hash.finalize()).as_bytes()).await;
                let _ = socket.shutdown().await;
            });
        }
    });
    port
}

/// One HTTP/1.1 connection to a router.
pub struct Client {
    pub sender: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
}

impl Client {
    pub async fn connect(addr: SocketAddr) -> Self {
        let tcp = TcpStream::connect(addr).await.unwrap();
        tcp.set_nodelay(true).unwrap();
        let tls = TlsConnector::from(client_tls(&[b"http/1.1"]))
            .connect(ServerName::try_from("localhost").unwrap(), tcp)
            .await
            .expect("TLS to the router");
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .unwrap();
        tokio::spawn(async move {
            let _ = conn.with_upgrades().await;
        });
        Self { sender }
    }

    pub async fn send(&mut self, req: Request<Full<Bytes>>) -> Response<Incoming> {
        self.sender.ready().await.unwrap();
        self.sender.send_request(req).await.unwrap()
    }
}

/// A request builder with `Host: localhost` and, when given, a bearer token.
pub fn request(method: &str, uri: &str, token: Option<&str>) -> http::request::Builder {
    let mut builder = Request::builder()
        .method(method)
        .uri(uri)
        .header("host", "localhost");
    if let Some(token) = token {
        builder = builder.header("authorization", format!("Bearer {token}"));
    }
    builder
}

/// `POST path` asking to upgrade to `protocol` (`ssh`, `tcp`), as the
/// user API's shell and port-forward want it.
pub fn upgrade_request(path: &str, token: Option<&str>, protocol: &str) -> Request<Full<Bytes>> {
    request("POST", path, token)
        .header("connection", "upgrade")
        .header("upgrade", protocol)
        .body(empty())
        .unwrap()
}

pub fn empty() -> Full<Bytes> {
    Full::new(Bytes::new())
}

/// A request body of `bytes`.
pub fn full(bytes: impl Into<Bytes>) -> Full<Bytes> {
    Full::new(bytes.into())
}

pub async fn body_text(response: Response<Incoming>) -> String {
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    String::from_utf8_lossy(&bytes).into_owned()
}

/// The user-API path of `action` on `namespace/name`.
pub fn api_path(namespace: &str, name: &str, action: &str) -> String {
    wire::container_path(namespace, name, action, &[])
}

// ---------------------------------------------------------------- sidecar

/// A real sidecar gateway for `uid` on 127.0.0.1:0 with its own temp
/// directories (and, optionally, a tunnel to a router).
pub struct TestSidecar {
    pub running: Running,
    pub dir: tempfile::TempDir,
    pub uid: String,
    shim: Option<Child>,
}

impl TestSidecar {
    pub async fn start(uid: &str) -> Self {
        Self::start_with(uid, |_| {}).await
    }

    pub async fn start_with(uid: &str, tweak: impl FnOnce(&mut GatewayArgs)) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let key = RootSecret::new(ROOT.to_vec()).ctr_key(uid);
        std::fs::write(dir.path().join("ctr_key"), format!("{}\n", key.expose_hex())).unwrap();
        std::fs::create_dir_all(dir.path().join("log")).unwrap();
        let mut args = GatewayArgs {
            sftp_command: vec![sidecar_binary().display().to_string(), "sftp-server".into()],
            max_connections: 64,
            ..GatewayArgs::local(uid, dir.path())
        };
        tweak(&mut args);
        let running = start_gateway(args).await.expect("the sidecar starts");
        Self {
            running,
            dir,
            uid: uid.to_owned(),
            shim: None,
        }
    }

    /// Starts with a tunnel to `router_url` pinned to the test CA.
    pub async fn start_tunnelled(uid: &str, router_url: &str) -> Self {
        let url = router_url.to_owned();
        Self::start_with(uid, move |args| {
            std::fs::write(&args.router_ca_file, pki().ca_pem).unwrap();
            args.tunnel_url = Some(url);
        })
        .await
    }

    pub fn addr(&self) -> SocketAddr {
        self.running.gateway_addr
    }

    pub fn log_dir(&self) -> PathBuf {
        self.dir.path().join("log")
    }

    /// Where the gateway writes its audit trail.
    pub fn audit_dir(&self) -> PathBuf {
        self.dir.path().join("audit")
    }

    /// Starts a real shim serving the spawn socket (needed for shells).
    pub async fn with_shim(self) -> Self {
        self.with_shim_running("echo workload started; sleep 3600").await
    }

    /// The same, with the workload running `command` (`sh -c`).
    pub async fn with_shim_running(mut self, command: &str) -> Self {
        let socket = hatchway_sidecar::args::local_spawn_socket(self.dir.path());
        // As in a pod: the shim is PID 1 of a PID namespace of its own and
        // serves only peers outside it (the gateway, here in the test's).
        let shim = Command::new("unshare")
            .args(["--pid", "--fork", "--kill-child"])
            .arg(sidecar_binary())
            .arg("shim")
            .arg("--log-dir")
            .arg(self.log_dir())
            .arg("--spawn-socket")
            .arg(&socket)
            // The workload ends with the shim's namespace.
            .args(["--usage-interval", "0", "--", "sh", "-c", command])
            .stdout(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("the shim starts");
        eventually("the shim's spawn socket", || {
            let socket = socket.clone();
            async move {
                use std::os::linux::net::SocketAddrExt;
                let addr = std::os::unix::net::SocketAddr::from_abstract_name(socket.as_bytes()).unwrap();
                std::os::unix::net::UnixStream::connect_addr(&addr).is_ok()
            }
        })
        .await;
        self.shim = Some(shim);
        self
    }
}

impl Drop for TestSidecar {
    fn drop(&mut self) {
        self.running.shutdown.cancel();
        if let Some(shim) = &self.shim
            && let Some(pid) = shim.id()
        {
            // SIGTERM, not SIGKILL: the shim passes it on to its workload.
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), nix::sys::signal::SIGTERM);
        }
    }
}

/// The `hatchway-sidecar` binary of this build (for the shim and the SFTP
/// server), built on first use when the test runner did not build it.
pub fn sidecar_binary() -> PathBuf {
    static BIN: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BIN.get_or_init(|| {
        // Tests run from target/<profile>/deps, binaries (the benchmark)
        // from target/<profile>.
        let exe = std::env::current_exe().unwrap();
        let here = exe.parent().unwrap();
        let bin = [here, here.parent().unwrap()]
            .map(|d| d.join("hatchway-sidecar"))
            .into_iter()
            .find(|b| b.exists())
            .unwrap_or_else(|| here.parent().unwrap().join("hatchway-sidecar"));
        if !bin.exists() {
            let status = std::process::Command::new(env!("CARGO"))
                .args([
                    "build",
                    "--quiet",
                    "-p",
                    "hatchway-sidecar",
                    "--bin",
                    "hatchway-sidecar",
                ])
                .status()
                .expect("cargo runs");
            assert!(status.success(), "building hatchway-sidecar failed");
        }
        assert!(bin.exists(), "{} missing", bin.display());
        bin
    })
    .clone()
}

// ---------------------------------------------------------------- tunnels by hand

/// Dials the router at `addr` over TLS (trusting what `tls` trusts) and
/// sends the request `build` makes from the session's exported keying
/// material.
pub async fn dial_with(
    addr: SocketAddr,
    tls: Arc<rustls::ClientConfig>,
    build: impl FnOnce(&[u8; EKM_LEN]) -> Request<Full<Bytes>>,
) -> Response<Incoming> {
    try_dial_with(addr, tls, build).await.unwrap()
}

/// [`dial_with`] that reports failures instead of panicking.
pub async fn try_dial_with(
    addr: SocketAddr,
    tls: Arc<rustls::ClientConfig>,
    build: impl FnOnce(&[u8; EKM_LEN]) -> Request<Full<Bytes>>,
) -> Result<Response<Incoming>, String> {
    let tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    let tls = TlsConnector::from(tls)
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .map_err(|e| e.to_string())?;
    let ekm = tls
        .get_ref()
        .1
        .export_keying_material([0u8; EKM_LEN], EKM_LABEL, None)
        .map_err(|e| e.to_string())?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(async move {
        let _ = conn.with_upgrades().await;
    });
    sender.send_request(build(&ekm)).await.map_err(|e| e.to_string())
}

/// A well-formed tunnel request for `uid` with `proof`.
pub fn tunnel_request(uid: &str, proof: &str) -> http::request::Builder {
    request("POST", wire::TUNNEL_PATH, None)
        .header("connection", "upgrade")
        .header("upgrade", wire::UPGRADE_TUNNEL)
        .header(wire::TUNNEL_VERSION, "1")
        .header(wire::CONTAINER_UID, uid)
        .header(wire::TUNNEL_PROOF, proof)
}

/// A tunnel client made by hand: it proves `uid` with `key`, opens the
/// control stream and keeps the session going (refusing every stream the
/// router opens) but never reconnects.
pub struct FakeSidecar {
    pub control: Compat<yamux::Stream>,
    /// Ends when the router closes the session.
    pub session: tokio::task::JoinHandle<()>,
}

impl FakeSidecar {
    pub async fn connect(addr: SocketAddr, uid: &str, key: &CtrKey) -> Self {
        Self::connect_with(addr, client_tls(&[b"http/1.1"]), uid, key).await
    }

    /// [`FakeSidecar::connect`] trusting what `tls` trusts.
    pub async fn connect_with(
        addr: SocketAddr,
        tls: Arc<rustls::ClientConfig>,
        uid: &str,
        key: &CtrKey,
    ) -> Self {
        Self::try_connect_with(addr, tls, uid, key).await.unwrap()
    }

    /// [`FakeSidecar::connect_with`] that reports failures instead of
    /// panicking.
    pub async fn try_connect_with(
        addr: SocketAddr,
        tls: Arc<rustls::ClientConfig>,
        uid: &str,
        key: &CtrKey,
    ) -> Result<Self, String> {
        let response = try_dial_with(addr, tls, |ekm| {
            tunnel_request(uid, &tunnel_proof(key, ekm))
                .body(empty())
                .unwrap()
        })
        .await?;
        if response.status() != StatusCode::SWITCHING_PROTOCOLS {
            return Err(format!("the router answered {}", response.status()));
        }
        assert_eq!(response.headers()["upgrade"], wire::UPGRADE_TUNNEL);
        let upgraded = hyper::upgrade::on(response).await.map_err(|e| e.to_string())?;
        let mut connection = yamux::Connection::new(
            TokioIo::new(upgraded).compat(),
            yamux::Config::default(),
            yamux::Mode::Client,
        );
        let control = poll_fn(|cx| connection.poll_new_outbound(cx))
            .await
            .map_err(|e| e.to_string())?;
        let session = tokio::spawn(async move {
            while let Some(Ok(_refused)) = poll_fn(|cx| connection.poll_next_inbound(cx)).await {}
        });
        Ok(Self {
            control: control.compat(),
            session,
        })
    }

    pub async fn send_bytes(&mut self, bytes: &[u8]) {
        self.control.write_all(bytes).await.unwrap();
        self.control.flush().await.unwrap();
    }

    pub async fn send(&mut self, message: &ControlMessage) {
        self.send_bytes(&control::encode(message).unwrap()).await;
    }
}

pub fn fake_hello(uid: &str) -> ControlMessage {
    ControlMessage::Hello {
        container_uid: uid.to_owned(),
        certificate_sha256: "00".repeat(32),
        host_key: "ssh-ed25519 AAAAfake".to_owned(),
        host_key_fingerprint: "SHA256:fake".to_owned(),
        sidecar_version: "test".to_owned(),
    }
}

/// A man in the middle of a gateway connection: it terminates TLS with a
/// certificate of its own and relays the plaintext to the real `gateway`
/// over a second TLS connection. A router must never accept what comes
/// back through it.
pub async fn mitm_relay(gateway: SocketAddr) -> SocketAddr {
    let relay_cert = hatchway_sidecar::tls::GatewayCert::generate("attacker").unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(relay_cert.server_config.clone());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut client) = acceptor.accept(stream).await else {
                    return;
                };
                let connector = TlsConnector::from(Arc::new(hatchway_api::tls::gateway_client_config()));
                let Ok(tcp) = TcpStream::connect(gateway).await else {
                    return;
                };
                let name = ServerName::try_from("gateway").unwrap();
                let Ok(mut upstream) = connector.connect(name, tcp).await else {
                    return;
                };
                let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
            });
        }
    });
    addr
}

/// Options for the real OpenSSH client (`ssh`, `scp`, `sftp`, or
/// `rsync -e`) to 127.0.0.1:`port`, as strict as a user's: the host key
/// must be the one in `known_hosts`, no prompts, no user config.
pub fn openssh_options(port: u16, known_hosts: &std::path::Path) -> Vec<String> {
    [
        "-F".to_owned(),
        "/dev/null".to_owned(),
        "-o".to_owned(),
        format!("Port={port}"),
        "-o".to_owned(),
        format!("UserKnownHostsFile={}", known_hosts.display()),
        "-o".to_owned(),
        "StrictHostKeyChecking=yes".to_owned(),
        "-o".to_owned(),
        "BatchMode=yes".to_owned(),
        "-o".to_owned(),
        "LogLevel=ERROR".to_owned(),
        "-o".to_owned(),
        "ConnectTimeout=20".to_owned(),
    ]
    .into()
}

/// `program` (`ssh`, `scp` or `sftp`) with [`openssh_options`]; the caller
/// adds the destination (`tester@127.0.0.1`) and the rest.
pub fn openssh(program: &str, port: u16, known_hosts: &std::path::Path) -> std::process::Command {
    let mut command = std::process::Command::new(program);
    command.args(openssh_options(port, known_hosts));
    command
}

/// Writes a known_hosts file that trusts `host_key` (OpenSSH format) for
/// 127.0.0.1:`port` only.
pub fn write_known_hosts(path: &std::path::Path, port: u16, host_key: &str) -> std::io::Result<()> {
    std::fs::write(path, format!("[127.0.0.1]:{port} {}\n", host_key.trim()))
}

/// Verifies `token` with PyJWT (an independent JWT library: Debian's
/// `python3-jwt`, hence that interpreter; `hack/deps test` installs it)
/// against the key set `jwks` (JSON), for audience `aud`, as an app behind
/// Hatchway would check `Hatchway-Jwt-Assertion`: the claims, or PyJWT's
/// refusal.
pub fn pyjwt_verify(jwks: &str, token: &str, aud: &str) -> Result<serde_json::Value, String> {
    const SCRIPT: &str = r#"
import json, sys, jwt
jwks, token, aud = json.loads(sys.argv[1]), sys.argv[2], sys.argv[3]
kid = jwt.get_unverified_header(token)["kid"]
key = jwt.PyJWK([k for k in jwks["keys"] if k["kid"] == kid][0]).key
print(json.dumps(jwt.decode(token, key, algorithms=["EdDSA"], audience=aud, issuer="hatchway")))
"#;
    let out = std::process::Command::new("/usr/bin/python3")
        .args(["-c", SCRIPT, jwks, token, aud])
        .output()
        .map_err(|e| format!("cannot run /usr/bin/python3: {e}"))?;
    if out.status.success() {
        serde_json::from_slice(&out.stdout).map_err(|e| format!("PyJWT printed no claims: {e}"))
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn resident_memory_is_read_from_proc_and_anonymous_is_part_of_it() {
        let pid = std::process::id();
        let (all, anon) = (super::rss(pid).unwrap(), super::anon_rss(pid).unwrap());
        assert!(anon > 0 && anon <= all, "RssAnon {anon} of VmRSS {all}");
        assert!(super::rss(u32::MAX).is_err(), "no such process");
    }
}
