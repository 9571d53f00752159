//! What the router reads and writes in the cluster: Containers (by name and
//! by UID), their status, the saved logs of finished ones, and the router's
//! own replicas. One small interface, so the router's tests run without a
//! cluster; [`kube::KubeCluster`] is the real one.

pub mod kube;

use std::time::SystemTime;

use bytes::Bytes;
use futures::future::BoxFuture;
use futures::stream::BoxStream;
use hatchway_api::crd::{Container, ContainerStatus};

/// Why the cluster could not answer.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// The Kubernetes API failed or could not be reached.
    #[error("Kubernetes API: {0}")]
    Api(String),
}

/// The saved logs of a Container's pod: which files there are, under the
/// names the live gateway uses (`stdout.txt`, `stderr.txt`, or the
/// combined `output.txt`), and where they are read from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SavedLogs {
    /// The pod's namespace.
    pub namespace: String,
    /// The pod whose workload container wrote them.
    pub pod: String,
    /// The pod's UID: a finished pod's logs never change, so what is
    /// learnt of them (their sizes) is kept under it.
    pub pod_uid: String,
    /// Whether the workload container has ended (its logs will not grow).
    pub finished: bool,
    /// When they last changed, if known.
    pub modified: Option<SystemTime>,
    /// The file names.
    pub files: Vec<String>,
}

/// The bytes of one log file, in the order written, as they arrive.
pub type LogStream = BoxStream<'static, Result<Bytes, ClusterError>>;

/// What a log read asks of the kubelet's copy rather than the files: the
/// lines of the last seconds, each line's time, the previous run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LogQuery {
    /// Only lines written in the last this many seconds.
    pub since_seconds: Option<u64>,
    /// Each line prefixed with its RFC 3339 time.
    pub timestamps: bool,
    /// The workload's previous run (restarted).
    pub previous: bool,
}

impl LogQuery {
    /// Whether the answer must come from the kubelet (the files carry no
    /// times and only the current run).
    pub fn from_kubelet(&self) -> bool {
        self.since_seconds.is_some() || self.timestamps || self.previous
    }
}

/// The cluster as the router sees it.
pub trait Cluster: Send + Sync + 'static {
    /// The Container `namespace/name`, `None` when there is none.
    fn container<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
    ) -> BoxFuture<'a, Result<Option<Container>, ClusterError>>;

    /// The Container `namespace/name` as the API server has it now, never
    /// from a cache: the router re-reads status with it when a gateway
    /// fails because the Container may just have finished. Implementations
    /// without a cache need not override it.
    fn container_fresh<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
    ) -> BoxFuture<'a, Result<Option<Container>, ClusterError>> {
        self.container(namespace, name)
    }

    /// The Containers of `namespace` the router serves, by name (from the
    /// watchers' stores: the web page's list).
    fn containers(&self, namespace: &str) -> Vec<Container>;

    /// The Container with this UID, `None` when there is none. The UID is
    /// public information: this is the lookup a tunnel makes before any
    /// secret is compared.
    fn container_by_uid<'a>(&'a self, uid: &'a str)
    -> BoxFuture<'a, Result<Option<Container>, ClusterError>>;

    /// Server-side applies `status` (a partial status: one writer's whole
    /// concern, `hatchway_api::status`) to the status subresource of
    /// `namespace/name` with `field_manager`, forcing ownership of the
    /// fields it sets; the fields this manager set before and leaves out
    /// now go away.
    fn apply_status<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
        field_manager: &'a str,
        status: ContainerStatus,
    ) -> BoxFuture<'a, Result<(), ClusterError>>;

    /// The logs the cluster kept of a Container's workload (its pod's, from
    /// the kubelet), `None` when there are none, e.g. the pod is gone or
    /// never started. Nothing is read of the logs themselves.
    fn saved_logs<'a>(
        &'a self,
        container: &'a Container,
    ) -> BoxFuture<'a, Result<Option<SavedLogs>, ClusterError>>;

    /// Opens one of `logs.files` for reading from its start, as `query`
    /// asks (only the last seconds, with times, the previous run: the
    /// kubelet timestamps every line, running or finished). `None` when it
    /// is not there (any more). The stream is read as it is consumed:
    /// nothing is held beyond what is in flight.
    fn saved_log_stream<'a>(
        &'a self,
        logs: &'a SavedLogs,
        file: &'a str,
        query: LogQuery,
    ) -> BoxFuture<'a, Result<Option<LogStream>, ClusterError>>;

    /// The base URLs (`https://ip:port`) of the router's replicas, from its
    /// headless Service's endpoints.
    fn replicas(&self) -> Vec<String>;
}
