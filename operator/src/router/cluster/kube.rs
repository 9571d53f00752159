//! [`KubeCluster`]: the real [`Cluster`], on the Kubernetes API.
//!
//! - Containers come from reflector stores kept by watchers (one over all
//!   namespaces, or one per namespace served), with an index by UID kept
//!   from the same watch events, so a tunnel's lookup is O(1). A name not in
//!   the store is read from the API (the store may lag a creation).
//! - Status is written with server-side apply on the status subresource.
//! - Saved logs are the finished pod's `workload` container log, read from
//!   the kubelet through the API server, either as `stdout.txt` and
//!   `stderr.txt` (Kubernetes ≥ 1.32 with the `PodLogsQuerySplitStreams`
//!   feature gate on the API server and the kubelet) or combined as
//!   `output.txt`. They are streamed as the user reads them, never held:
//!   the kubelet serves only a container's current log file (see its
//!   `containerLogMaxSize`), so its size is what a saved log can hold.
//! - Replicas are the ready endpoints of the router's headless Service,
//!   kept by a watcher over its EndpointSlices.
//!
//! Watchers log their errors and retry with kube's default backoff; the
//! tasks stop when the `KubeCluster` is dropped.

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, RwLock};
use std::time::SystemTime;

use bytes::Bytes;
use futures::future::BoxFuture;
use futures::{AsyncBufRead, AsyncBufReadExt, Stream, StreamExt};
use hatchway_api::crd::{Container, ContainerStatus};
use hatchway_api::pod::{WORKLOAD_CONTAINER, log_file};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, LogParams, Patch, PatchParams};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource};
use tokio::task::JoinHandle;

use super::{Cluster, ClusterError, LogQuery, LogStream, SavedLogs};

/// What is known of the cluster's support for split log streams.
const SPLIT_UNKNOWN: u8 = 0;
const SPLIT_SUPPORTED: u8 = 1;
const SPLIT_REFUSED: u8 = 2;

/// The label EndpointSlices carry with the name of their Service.
const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// The router's own headless Service, whose endpoints are its replicas.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReplicaService {
    /// The Service's namespace (the router's own).
    pub namespace: String,
    /// The Service's name.
    pub name: String,
    /// The name of the Service port replicas serve peers on; `""` for a
    /// Service whose only port has no name.
    pub port_name: String,
}

/// What [`KubeCluster::start`] watches and how it reads logs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KubeClusterConfig {
    /// The namespaces whose Containers the router serves; `None`: all.
    /// Containers elsewhere are treated as absent.
    pub namespaces: Option<Vec<String>>,
    /// Where the replicas are listed; `None`: no peers (`replicas()` is
    /// empty).
    pub replica_service: Option<ReplicaService>,
    /// Read saved stdout and stderr apart (needs the
    /// `PodLogsQuerySplitStreams` feature gate on the API server and the
    /// kubelets); otherwise one combined `output.txt`.
    pub split_log_streams: bool,
}

/// The cluster, through the Kubernetes API. Needs RBAC: `get`, `list`,
/// `watch` on `containers.hatchway.dev`; `patch` on
/// `containers.hatchway.dev/status`; `get` on `pods` and `pods/log` (in
/// the served namespaces); `list`, `watch` on
/// `endpointslices.discovery.k8s.io` (in the router's namespace).
pub struct KubeCluster {
    client: Client,
    partitions: Vec<Arc<Partition>>,
    served: Option<BTreeSet<String>>,
    replicas: Arc<RwLock<Vec<String>>>,
    config: KubeClusterConfig,
    tasks: Vec<JoinHandle<()>>,
    /// `SPLIT_*`: learnt from the first pod-log request with `stream=`.
    split: AtomicU8,
}

/// One watcher's share of the Containers: all namespaces, or one.
struct Partition {
    /// `None`: every namespace.
    namespace: Option<String>,
    store: Store<Container>,
    uids: RwLock<UidIndex>,
    /// Turns true once the first list is in the store *and* the index (the
    /// store's own readiness comes a moment before the index has it).
    listed: tokio::sync::watch::Sender<bool>,
}

/// Container UID -> where the store keeps it, maintained from the same
/// watch events as the store (including relists).
#[derive(Default)]
struct UidIndex {
    live: HashMap<String, ObjectRef<Container>>,
    /// Filled between a relist's `Init` and `InitDone`, then swapped in
    /// (the store does the same), so a relist drops deleted objects.
    relisting: Option<HashMap<String, ObjectRef<Container>>>,
}

impl UidIndex {
    fn apply(&mut self, event: &watcher::Event<Container>) {
        match event {
            watcher::Event::Apply(c) => {
                if let Some(uid) = &c.metadata.uid {
                    self.live.insert(uid.clone(), ObjectRef::from_obj(c));
                }
            }
            watcher::Event::Delete(c) => {
                if let Some(uid) = &c.metadata.uid {
                    self.live.remove(uid);
                }
            }
            watcher::Event::Init => self.relisting = Some(HashMap::new()),
            watcher::Event::InitApply(c) => {
                if let (Some(uid), Some(relisting)) = (&c.metadata.uid, &mut self.relisting) {
                    relisting.insert(uid.clone(), ObjectRef::from_obj(c));
                }
            }
            watcher::Event::InitDone => {
                if let Some(relisting) = self.relisting.take() {
                    self.live = relisting;
                }
            }
        }
    }
}

impl Partition {
    fn by_uid(&self, uid: &str) -> Option<Arc<Container>> {
        let key = read(&self.uids).live.get(uid).cloned()?;
        let found = self.store.get(&key)?;
        // The store and the index are updated one after the other: make
        // sure a recreated name is not returned for the old UID.
        (found.metadata.uid.as_deref() == Some(uid)).then_some(found)
    }
}

/// A poisoned lock only means a watcher task panicked mid-update; the data
/// is still the best we have, so keep serving it.
fn read<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(|e| e.into_inner())
}

fn write<T>(lock: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(|e| e.into_inner())
}

impl KubeCluster {
    /// Starts the watchers (on the current tokio runtime) and returns at
    /// once: until the first lists arrive, lookups go to the API (see
    /// [`KubeCluster::wait_until_ready`]).
    pub fn start(client: Client, config: KubeClusterConfig) -> Arc<Self> {
        let mut tasks = Vec::new();
        let namespaces: Vec<Option<String>> = match &config.namespaces {
            None => vec![None],
            Some(list) => {
                let unique: BTreeSet<&String> = list.iter().collect();
                unique.into_iter().map(|ns| Some(ns.clone())).collect()
            }
        };
        let mut partitions = Vec::new();
        for namespace in namespaces {
            let api: Api<Container> = match &namespace {
                None => Api::all(client.clone()),
                Some(ns) => Api::namespaced(client.clone(), ns),
            };
            let (store, writer) = reflector::store();
            let partition = Arc::new(Partition {
                namespace,
                store,
                uids: RwLock::new(UidIndex::default()),
                listed: tokio::sync::watch::Sender::new(false),
            });
            let events = watcher(api, watcher::Config::default())
                .default_backoff()
                .reflect(writer);
            tasks.push(tokio::spawn(watch_containers(Arc::clone(&partition), events)));
            partitions.push(partition);
        }
        let replicas = Arc::new(RwLock::new(Vec::new()));
        if let Some(service) = &config.replica_service {
            tasks.push(tokio::spawn(watch_replicas(
                client.clone(),
                service.clone(),
                Arc::clone(&replicas),
            )));
        }
        Arc::new(Self {
            client,
            partitions,
            served: config.namespaces.as_ref().map(|l| l.iter().cloned().collect()),
            replicas,
            config,
            tasks,
            split: AtomicU8::new(SPLIT_UNKNOWN),
        })
    }

    /// Waits until every Container watcher has listed once (the stores and
    /// the UID index then hold every Container that existed at that point).
    pub async fn wait_until_ready(&self) {
        for p in &self.partitions {
            // The sender lives in the partition: this cannot fail while
            // `self` does.
            let _ = p.listed.subscribe().wait_for(|listed| *listed).await;
        }
    }

    /// True when the router serves Containers in `namespace`.
    fn serves(&self, namespace: &str) -> bool {
        self.served.as_ref().is_none_or(|s| s.contains(namespace))
    }

    fn cached(&self, namespace: &str, name: &str) -> Option<Container> {
        let key = ObjectRef::new(name).within(namespace);
        self.partitions
            .iter()
            .filter(|p| p.namespace.as_deref().is_none_or(|ns| ns == namespace))
            .find_map(|p| p.store.get(&key))
            .map(|c| (*c).clone())
    }

    async fn get(&self, namespace: &str, name: &str) -> Result<Option<Container>, ClusterError> {
        if !self.serves(namespace) {
            return Ok(None);
        }
        let api: Api<Container> = Api::namespaced(self.client.clone(), namespace);
        api.get_opt(name).await.map_err(api_error)
    }

    /// Opens the pod log of the workload container, `stream` `Stdout`,
    /// `Stderr` or the combined log (`None`), at most `limit_bytes`;
    /// `None` if the pod is gone.
    async fn pod_log(
        &self,
        namespace: &str,
        pod: &str,
        stream: Option<&str>,
        query: LogQuery,
        limit_bytes: Option<i64>,
    ) -> Result<Option<impl AsyncBufRead + use<>>, kube::Error> {
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), namespace);
        let params = LogParams {
            container: Some(WORKLOAD_CONTAINER.to_owned()),
            since_seconds: query.since_seconds.map(|s| s.min(i64::MAX as u64) as i64),
            timestamps: query.timestamps,
            previous: query.previous,
            limit_bytes,
            ..LogParams::default()
        };
        let mut request = kube::core::Request::new(pods.resource_url())
            .logs(pod, &params)
            .map_err(kube::Error::BuildRequest)?;
        if let Some(stream) = stream {
            // kube's LogParams has no `stream` (PodLogOptions.stream, 1.32+):
            // add it to the query kube built.
            let uri = format!("{}&stream={stream}", request.uri());
            *request.uri_mut() = uri
                .parse()
                .map_err(|e: http::uri::InvalidUri| kube::Error::HttpError(e.into()))?;
        }
        match self.client.request_stream(request).await {
            Ok(body) => Ok(Some(body)),
            Err(kube::Error::Api(status)) if status.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Whether to list stdout and stderr apart: configured, and not
    /// refused by the cluster (asked once, with a one-byte read of `pod`).
    async fn split_streams(&self, namespace: &str, pod: &str) -> Result<bool, kube::Error> {
        if !self.config.split_log_streams {
            return Ok(false);
        }
        match self.split.load(Ordering::Relaxed) {
            SPLIT_SUPPORTED => return Ok(true),
            SPLIT_REFUSED => return Ok(false),
            _ => {}
        }
        match self
            .pod_log(namespace, pod, Some("Stdout"), LogQuery::default(), Some(1))
            .await
        {
            Ok(_) => {
                self.split.store(SPLIT_SUPPORTED, Ordering::Relaxed);
                Ok(true)
            }
            Err(e) if split_streams_unsupported(&e) => {
                self.refuse_split(&e);
                Ok(false)
            }
            Err(e) => Err(e),
        }
    }

    fn refuse_split(&self, error: &kube::Error) {
        tracing::warn!(%error,
            "split log streams are configured but the cluster refuses them \
             (feature gate PodLogsQuerySplitStreams off on the API server or the kubelet): \
             serving the combined log as output.txt");
        self.split.store(SPLIT_REFUSED, Ordering::Relaxed);
    }
}

/// Chunks of `reader` as they arrive (each a copy of what one read gave:
/// nothing more is buffered than the reader's own buffer).
fn chunks(reader: impl AsyncBufRead + Send + 'static) -> LogStream {
    futures::stream::unfold(Box::pin(reader), |mut reader| async move {
        match reader.fill_buf().await {
            Ok([]) => None,
            Ok(buf) => {
                let chunk = Bytes::copy_from_slice(buf);
                reader.as_mut().consume(chunk.len());
                Some((Ok(chunk), reader))
            }
            Err(e) => Some((
                Err(ClusterError::Api(format!("reading the pod log: {e}"))),
                reader,
            )),
        }
    })
    .boxed()
}

impl Drop for KubeCluster {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

impl fmt::Debug for KubeCluster {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KubeCluster")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// A short message: kube's own `Display` of an API error repeats the whole
/// Status in Debug form.
fn api_error(e: kube::Error) -> ClusterError {
    match e {
        kube::Error::Api(status) => {
            ClusterError::Api(format!("{} ({} {})", status.message, status.code, status.reason))
        }
        other => ClusterError::Api(other.to_string()),
    }
}

/// Feeds a Container watch (already reflected into the partition's store)
/// into the partition's UID index, logging errors; the backoff in the
/// stream paces retries.
async fn watch_containers(
    partition: Arc<Partition>,
    events: impl Stream<Item = Result<watcher::Event<Container>, watcher::Error>>,
) {
    let scope = partition.namespace.as_deref().unwrap_or("(all namespaces)");
    let mut events = std::pin::pin!(events);
    while let Some(event) = events.next().await {
        match event {
            Ok(event) => {
                write(&partition.uids).apply(&event);
                if matches!(event, watcher::Event::InitDone) {
                    partition.listed.send_replace(true);
                }
            }
            Err(error) => {
                tracing::warn!(namespace = scope, %error, "Container watch failed; retrying with backoff");
            }
        }
    }
    tracing::error!(namespace = scope, "Container watch ended");
}

/// Keeps `replicas` equal to the ready endpoints of `service`.
async fn watch_replicas(client: Client, service: ReplicaService, replicas: Arc<RwLock<Vec<String>>>) {
    let api: Api<EndpointSlice> = Api::namespaced(client, &service.namespace);
    let config = watcher::Config::default().labels(&format!("{SERVICE_NAME_LABEL}={}", service.name));
    let mut events = std::pin::pin!(watcher(api, config).default_backoff());
    // Slice name -> its replica URLs.
    let mut slices: HashMap<String, Vec<String>> = HashMap::new();
    let mut relisting: Option<HashMap<String, Vec<String>>> = None;
    while let Some(event) = events.next().await {
        let event = match event {
            Ok(event) => event,
            Err(error) => {
                tracing::warn!(service = %service.name, namespace = %service.namespace, %error,
                    "EndpointSlice watch failed; retrying with backoff");
                continue;
            }
        };
        match event {
            watcher::Event::Apply(slice) => {
                slices.insert(
                    slice.metadata.name.clone().unwrap_or_default(),
                    slice_urls(&slice, &service.port_name),
                );
            }
            watcher::Event::Delete(slice) => {
                slices.remove(slice.metadata.name.as_deref().unwrap_or_default());
            }
            watcher::Event::Init => {
                relisting = Some(HashMap::new());
                continue;
            }
            watcher::Event::InitApply(slice) => {
                if let Some(relisting) = &mut relisting {
                    relisting.insert(
                        slice.metadata.name.clone().unwrap_or_default(),
                        slice_urls(&slice, &service.port_name),
                    );
                }
                continue;
            }
            watcher::Event::InitDone => {
                if let Some(relisting) = relisting.take() {
                    slices = relisting;
                }
            }
        }
        let all: BTreeSet<&String> = slices.values().flatten().collect();
        let all: Vec<String> = all.into_iter().cloned().collect();
        let mut current = write(&replicas);
        if *current != all {
            tracing::info!(replicas = ?all, "router replicas changed");
            *current = all;
        }
    }
    tracing::error!(service = %service.name, "EndpointSlice watch ended");
}

/// The base URLs of a slice's ready endpoints on the port named `port_name`
/// (a `ready` condition that is absent counts as ready, as the API says).
fn slice_urls(slice: &EndpointSlice, port_name: &str) -> Vec<String> {
    let port = slice
        .ports
        .iter()
        .flatten()
        .find(|p| p.name.as_deref().unwrap_or_default() == port_name)
        .and_then(|p| p.port);
    let Some(port) = port else {
        return Vec::new();
    };
    slice
        .endpoints
        .iter()
        .filter(|e| e.conditions.as_ref().and_then(|c| c.ready) != Some(false))
        .flat_map(|e| &e.addresses)
        .map(|address| match address.parse::<IpAddr>() {
            Ok(IpAddr::V6(ip)) => format!("https://[{ip}]:{port}"),
            _ => format!("https://{address}:{port}"),
        })
        .collect()
}

/// True when the API server or the kubelet refused `stream=` because the
/// `PodLogsQuerySplitStreams` feature gate is off there.
fn split_streams_unsupported(err: &kube::Error) -> bool {
    let kube::Error::Api(status) = err else {
        return false;
    };
    // API server: 422 "PodLogOptions ... is invalid: stream: Forbidden: may
    // not be specified". Kubelet (relayed as 400): "unable to return the
    // given log stream ... Please enable PodLogsQuerySplitStreams ...".
    (status.code == 422 && status.message.contains("stream"))
        || status.message.contains("PodLogsQuerySplitStreams")
}

/// The workload container's state in `pod`: (has it ever run, when it
/// finished).
fn workload_state(pod: &Pod) -> (bool, Option<SystemTime>) {
    let Some(state) = pod
        .status
        .iter()
        .flat_map(|s| s.container_statuses.iter().flatten())
        .find(|c| c.name == WORKLOAD_CONTAINER)
    else {
        return (false, None);
    };
    let terminated = state.state.as_ref().and_then(|s| s.terminated.as_ref());
    let running = state.state.as_ref().is_some_and(|s| s.running.is_some());
    let ran =
        running || terminated.is_some() || state.last_state.as_ref().is_some_and(|s| s.terminated.is_some());
    let finished = terminated
        .and_then(|t| t.finished_at.as_ref())
        .map(|t| SystemTime::from(t.0));
    (ran, finished)
}

/// True when `pod` names `container` (by UID) as its owner.
fn owned_by(pod: &Pod, container: &Container) -> bool {
    let Some(uid) = container.metadata.uid.as_deref() else {
        return false;
    };
    pod.metadata.owner_references.iter().flatten().any(|o| {
        o.uid == uid
            && o.kind == <Container as Resource>::kind(&())
            && o.api_version.split('/').next() == Some(hatchway_api::crd::GROUP)
    })
}

/// True for a name the API server could have given a pod (a DNS-1123
/// subdomain). Status is not validated that strictly, and the name goes
/// into request paths: nothing like `../secrets/x` may pass.
fn valid_pod_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        && !name.starts_with(['-', '.'])
        && !name.ends_with(['-', '.'])
}

impl Cluster for KubeCluster {
    fn container<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
    ) -> BoxFuture<'a, Result<Option<Container>, ClusterError>> {
        Box::pin(async move {
            if !self.serves(namespace) {
                return Ok(None);
            }
            match self.cached(namespace, name) {
                Some(c) => Ok(Some(c)),
                None => self.get(namespace, name).await,
            }
        })
    }

    fn container_fresh<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
    ) -> BoxFuture<'a, Result<Option<Container>, ClusterError>> {
        Box::pin(self.get(namespace, name))
    }

    fn containers(&self, namespace: &str) -> Vec<Container> {
        if !self.serves(namespace) {
            return Vec::new();
        }
        let mut found: Vec<Container> = self
            .partitions
            .iter()
            .filter(|p| p.namespace.as_deref().is_none_or(|ns| ns == namespace))
            .flat_map(|p| p.store.state())
            .filter(|c| c.metadata.namespace.as_deref() == Some(namespace))
            .map(|c| (*c).clone())
            .collect();
        found.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
        found.dedup_by(|a, b| a.metadata.name == b.metadata.name);
        found
    }

    fn container_by_uid<'a>(
        &'a self,
        uid: &'a str,
    ) -> BoxFuture<'a, Result<Option<Container>, ClusterError>> {
        Box::pin(async move {
            Ok(self
                .partitions
                .iter()
                .find_map(|p| p.by_uid(uid))
                .map(|c| (*c).clone()))
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
            let api: Api<Container> = Api::namespaced(self.client.clone(), namespace);
            api.patch_status(
                name,
                &PatchParams::apply(field_manager).force(),
                &Patch::Apply(&status.apply_body()),
            )
            .await
            .map_err(api_error)?;
            Ok(())
        })
    }

    fn saved_logs<'a>(
        &'a self,
        container: &'a Container,
    ) -> BoxFuture<'a, Result<Option<SavedLogs>, ClusterError>> {
        Box::pin(async move {
            let Some(namespace) = container.metadata.namespace.as_deref() else {
                return Ok(None);
            };
            let Some(pod_name) = container
                .status
                .as_ref()
                .and_then(|s| s.pod_name.as_deref())
                .filter(|p| !p.is_empty())
            else {
                return Ok(None);
            };
            if !valid_pod_name(pod_name) {
                tracing::warn!(%namespace, container = ?container.metadata.name, pod = %pod_name,
                    "status.podName is not a valid pod name: no saved logs");
                return Ok(None);
            }
            let pods: Api<Pod> = Api::namespaced(self.client.clone(), namespace);
            let Some(pod) = pods.get_opt(pod_name).await.map_err(api_error)? else {
                return Ok(None);
            };
            // Status names the pod, but only the operator should write it;
            // reading the logs of a pod the Container does not own would
            // hand out `pods/log` of any pod in the namespace.
            if !owned_by(&pod, container) {
                tracing::warn!(%namespace, container = ?container.metadata.name, pod = %pod_name,
                    "status.podName names a pod the Container does not own: no saved logs");
                return Ok(None);
            }
            let (ran, modified) = workload_state(&pod);
            if !ran {
                // Never started (e.g. the image could not be pulled): the
                // kubelet would answer 400 "waiting to start".
                return Ok(None);
            }
            let files = if self.split_streams(namespace, pod_name).await.map_err(api_error)? {
                vec![log_file::STDOUT.to_owned(), log_file::STDERR.to_owned()]
            } else {
                // stdout and stderr interleaved: not honestly "stdout".
                vec![log_file::OUTPUT.to_owned()]
            };
            Ok(Some(SavedLogs {
                namespace: namespace.to_owned(),
                pod: pod_name.to_owned(),
                pod_uid: pod.metadata.uid.clone().unwrap_or_default(),
                finished: modified.is_some(),
                modified,
                files,
            }))
        })
    }

    fn saved_log_stream<'a>(
        &'a self,
        logs: &'a SavedLogs,
        file: &'a str,
        query: LogQuery,
    ) -> BoxFuture<'a, Result<Option<LogStream>, ClusterError>> {
        Box::pin(async move {
            if !logs.files.iter().any(|f| f == file) {
                return Ok(None);
            }
            let stream = match file {
                log_file::STDOUT => Some("Stdout"),
                log_file::STDERR => Some("Stderr"),
                _ => None,
            };
            match self
                .pod_log(&logs.namespace, &logs.pod, stream, query, None)
                .await
            {
                Ok(reader) => Ok(reader.map(chunks)),
                Err(e) => {
                    if stream.is_some() && split_streams_unsupported(&e) {
                        // A kubelet without the gate behind an API server
                        // with it: the next listing names output.txt.
                        self.refuse_split(&e);
                    }
                    Err(api_error(e))
                }
            }
        })
    }

    fn replicas(&self) -> Vec<String> {
        read(&self.replicas).clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort};
    use kube::core::{ObjectMeta, Status};

    fn slice(ports: &[(Option<&str>, i32)], endpoints: &[(&str, Option<bool>)]) -> EndpointSlice {
        EndpointSlice {
            address_type: "IPv4".into(),
            metadata: ObjectMeta::default(),
            ports: Some(
                ports
                    .iter()
                    .map(|(name, port)| EndpointPort {
                        name: name.map(String::from),
                        port: Some(*port),
                        ..EndpointPort::default()
                    })
                    .collect(),
            ),
            endpoints: endpoints
                .iter()
                .map(|(address, ready)| Endpoint {
                    addresses: vec![address.to_string()],
                    conditions: Some(EndpointConditions {
                        ready: *ready,
                        ..EndpointConditions::default()
                    }),
                    ..Endpoint::default()
                })
                .collect(),
        }
    }

    #[test]
    fn slice_urls_take_the_named_port_and_ready_endpoints() {
        let s = slice(
            &[(Some("metrics"), 9090), (Some("peer"), 8443)],
            &[
                ("10.0.0.1", Some(true)),
                ("10.0.0.2", Some(false)),
                ("10.0.0.3", None),
                ("fd00::5", Some(true)),
            ],
        );
        assert_eq!(
            slice_urls(&s, "peer"),
            [
                "https://10.0.0.1:8443",
                "https://10.0.0.3:8443",
                "https://[fd00::5]:8443"
            ]
        );
        assert!(slice_urls(&s, "other").is_empty());
        // A Service's only, unnamed port.
        assert_eq!(
            slice_urls(&slice(&[(None, 443)], &[("10.0.0.9", None)]), ""),
            ["https://10.0.0.9:443"]
        );
    }

    fn api_err(code: u16, message: &str) -> kube::Error {
        kube::Error::Api(Status::failure(message, "").with_code(code).boxed())
    }

    #[test]
    fn only_real_pod_names_reach_request_paths() {
        for good in ["job-pod", "a", "web-1.x", "0abc"] {
            assert!(valid_pod_name(good), "{good}");
        }
        for bad in [
            "",
            "../secrets/x",
            "a/b",
            "a?b",
            "-a",
            "a.",
            "Upper",
            &"a".repeat(254),
        ] {
            assert!(!valid_pod_name(bad), "{bad}");
        }
    }

    #[test]
    fn ownership_is_by_uid_kind_and_group() {
        use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
        let mut container = Container::new("job", Default::default());
        container.metadata.uid = Some("u-1".into());
        let pod = |api_version: &str, kind: &str, uid: &str| Pod {
            metadata: ObjectMeta {
                owner_references: Some(vec![OwnerReference {
                    api_version: api_version.into(),
                    kind: kind.into(),
                    name: "job".into(),
                    uid: uid.into(),
                    ..OwnerReference::default()
                }]),
                ..ObjectMeta::default()
            },
            ..Pod::default()
        };
        assert!(owned_by(
            &pod("hatchway.dev/v1alpha1", "Container", "u-1"),
            &container
        ));
        assert!(!owned_by(
            &pod("hatchway.dev/v1alpha1", "Container", "u-2"),
            &container
        ));
        assert!(!owned_by(
            &pod("hatchway.dev.evil/v1", "Container", "u-1"),
            &container
        ));
        assert!(!owned_by(&pod("batch/v1", "Job", "u-1"), &container));
        assert!(!owned_by(&Pod::default(), &container));
    }

    #[test]
    fn refusals_of_split_streams_are_recognised() {
        assert!(split_streams_unsupported(&api_err(
            422,
            r#"PodLogOptions "p" is invalid: stream: Forbidden: may not be specified"#
        )));
        assert!(split_streams_unsupported(&api_err(
            400,
            r#"unable to return the given log stream: "Stdout". Please enable PodLogsQuerySplitStreams feature gate in kubelet"#
        )));
        assert!(!split_streams_unsupported(&api_err(
            400,
            "container workload is terminated"
        )));
        assert!(!split_streams_unsupported(&api_err(403, "forbidden")));
    }

    fn container_event(name: &str, uid: &str) -> Container {
        let mut c = Container::new(name, Default::default());
        c.metadata.namespace = Some("ns".into());
        c.metadata.uid = Some(uid.into());
        c
    }

    #[test]
    fn the_uid_index_follows_events_and_relists() {
        let mut index = UidIndex::default();
        index.apply(&watcher::Event::Apply(container_event("a", "u-a")));
        index.apply(&watcher::Event::Apply(container_event("b", "u-b")));
        assert_eq!(index.live["u-a"], ObjectRef::new("a").within("ns"));
        index.apply(&watcher::Event::Delete(container_event("a", "u-a")));
        assert!(!index.live.contains_key("u-a"));
        // A relist replaces everything once done; until then the old view serves.
        index.apply(&watcher::Event::Init);
        index.apply(&watcher::Event::InitApply(container_event("c", "u-c")));
        assert!(index.live.contains_key("u-b"));
        index.apply(&watcher::Event::InitDone);
        assert_eq!(index.live.keys().collect::<Vec<_>>(), ["u-c"]);
    }
}
