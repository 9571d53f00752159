//! What the router reads and writes in the cluster: Containers (by name and
//! by UID), their status, the saved logs of finished ones, and the router's
//! own replicas. One small interface, so the router's tests run without a
//! cluster; [`kube::KubeCluster`] is the real one.

pub mod kube;

use std::time::SystemTime;

use bytes::Bytes;
use futures::future::BoxFuture;
use hatchway_api::crd::Container;

/// Why the cluster could not answer.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// The Kubernetes API failed or could not be reached.
    #[error("Kubernetes API: {0}")]
    Api(String),
}

/// One saved log file of a finished Container, presented under the name the
/// live gateway uses (`stdout.txt`, `stderr.txt`, …).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SavedLog {
    /// The file name.
    pub name: String,
    /// The whole content.
    pub content: Bytes,
    /// When it last changed, if known.
    pub modified: Option<SystemTime>,
}

/// The field manager for status fields the router owns (tunnel address,
/// fingerprints reported over the tunnel, listening ports, session flag,
/// exit code).
pub const ROUTER_FIELD_MANAGER: &str = "hatchway-router";

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

    /// The Container with this UID, `None` when there is none. The UID is
    /// public information: this is the lookup a tunnel makes before any
    /// secret is compared.
    fn container_by_uid<'a>(&'a self, uid: &'a str)
    -> BoxFuture<'a, Result<Option<Container>, ClusterError>>;

    /// Server-side applies `status` (a partial `ContainerStatus` as JSON)
    /// to the status subresource of `namespace/name` with `field_manager`,
    /// forcing ownership of the fields it names.
    fn apply_status<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
        field_manager: &'a str,
        status: serde_json::Value,
    ) -> BoxFuture<'a, Result<(), ClusterError>>;

    /// The logs the cluster kept of a Container's workload (its pod's, from
    /// the kubelet): the saved logs once it has finished; with
    /// `since_seconds`, only what was written in that many last seconds
    /// (running or finished: the kubelet timestamps every line). Empty when
    /// there are none, e.g. the pod is gone.
    fn saved_logs<'a>(
        &'a self,
        container: &'a Container,
        since_seconds: Option<u64>,
    ) -> BoxFuture<'a, Result<Vec<SavedLog>, ClusterError>>;

    /// The base URLs (`https://ip:port`) of the router's replicas, from its
    /// headless Service's endpoints.
    fn replicas(&self) -> Vec<String>;
}
