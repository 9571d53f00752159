//! The `Container` custom resource (`hatchway.dev/v1alpha1`, namespaced).
//!
//! A `Container` is one run-to-completion workload that people may get into:
//! the operator turns it into a Pod with the Hatchway sidecar, the router
//! serves its shell, logs, ports and web apps, and its status says where its
//! gateway is. The spec cannot change once created (a CEL rule in the CRD
//! refuses it); to run something else, create another `Container`.
//!
//! Field descriptions in the generated CRD come from the doc comments here,
//! so write them for the person running `kubectl explain containers.spec`.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    EnvVar, PodSecurityContext, ResourceRequirements, SecurityContext, Toleration,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, CustomResourceExt, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The API group of every Hatchway resource.
pub const GROUP: &str = "hatchway.dev";
/// The version of the `Container` resource described here.
pub const VERSION: &str = "v1alpha1";

/// What to run, and how people may reach it while it runs.
// clippy reads the repeated `printcolumn(type_ = ...)` keys as duplicated attributes.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[kube(
    group = "hatchway.dev",
    version = "v1alpha1",
    kind = "Container",
    plural = "containers",
    singular = "container",
    shortname = "hctr",
    category = "hatchway",
    doc = "A run-to-completion workload that people may get into: a shell over SSH, its logs, its ports and web apps, through the Hatchway router.",
    namespaced,
    status = "ContainerStatus",
    derive = "PartialEq",
    derive = "Default",
    printcolumn(
        name = "Phase",
        type_ = "string",
        json_path = ".status.phase",
        description = "Where the container is in its life"
    ),
    printcolumn(
        name = "Gateway",
        type_ = "string",
        json_path = ".status.gateway.address",
        description = "Where the router reaches the container's gateway"
    ),
    printcolumn(
        name = "Exit",
        type_ = "integer",
        json_path = ".status.exitCode",
        description = "The workload's exit code",
        priority = 1
    ),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[x_kube(validation = Rule::new("self == oldSelf").message("spec is immutable: delete the Container and create a new one"))]
#[serde(rename_all = "camelCase")]
pub struct ContainerSpec {
    /// The container image to run, e.g. `python:3.13` or a digest reference.
    #[schemars(length(min = 1, max = 1024))]
    pub image: String,

    /// The command to run (the image's entrypoint is not used: the Hatchway
    /// shim runs this command as the container's main process, so it must be
    /// known). At least one element.
    #[schemars(length(min = 1, max = 256), inner(length(max = 4096)))]
    pub command: Vec<String>,

    /// Arguments appended to `command`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 1024), inner(length(max = 32768)))]
    pub args: Vec<String>,

    /// Environment variables of the workload container, as in a Pod.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 256))]
    pub env: Vec<EnvVar>,

    /// The working directory of the command; the image's default when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 4096))]
    pub working_dir: Option<String>,

    /// CPU, memory and other resources of the workload container, as in a Pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,

    /// The workload container's security context, as in a Pod's
    /// container. What it leaves unset gets defaults that meet Pod Security
    /// `restricted` where they cannot break the image: `seccompProfile:
    /// RuntimeDefault` always; and when the workload runs as a non-root
    /// user (`runAsNonRoot`, or a non-zero `runAsUser`, here or in
    /// `pod.securityContext`), `allowPrivilegeEscalation: false` and every
    /// capability dropped. A root workload keeps its capabilities (a root
    /// shell needs them): docs/security.md says which Pod Security level
    /// each feature needs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub security_context: Option<SecurityContext>,

    /// Settings of the Hatchway sidecar in this Container's pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sidecar: Option<SidecarOverrides>,

    /// What happens when the command exits. `Never` (the default): the
    /// Container ends, Complete on exit code 0 and Failed otherwise.
    /// `OnFailure`: a non-zero exit runs the command again in the same pod.
    #[serde(default)]
    pub restart_policy: RestartPolicy,

    /// Pod-level settings passed through to the Pod the operator creates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<PodOverrides>,

    /// Ports inside the container that are published as web apps at
    /// `https://{id}-{port}.{wildcard domain}/`, one entry per port.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64), extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["port"]))]
    pub published_ports: Vec<PublishedPort>,

    /// Which ports `kubectl hatch port-forward` and SSH forwards (`ssh -L`,
    /// `-W`, `-D`) may reach. Unset: the cluster's default (the chart's
    /// `router.portForward`: any port, only declared ones, or only
    /// published ones). Published ports are always forwardable; a cluster
    /// that allows published ports only ignores this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port_forward: Option<PortForward>,

    /// Whether people with the right may open a shell (SSH) in this
    /// container. On by default; a cluster-wide setting can forbid shells
    /// whatever this says.
    #[serde(default = "default_true")]
    pub shell: bool,

    /// Whether every terminal (pty) opened in this container is recorded
    /// (asciicast v2, `sessions/{id}.cast` in its log tree, readable by
    /// those who may open a shell). Unset: the cluster's default (the
    /// chart's `sidecar.recordShells`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub record_shell: Option<bool>,

    /// Seconds a shell or port-forward whose connection broke stays
    /// resumable (its processes and connections kept) while its client
    /// reconnects. Unset: the operator's default (10 minutes unless the
    /// chart says otherwise); 0: a broken connection ends the session.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 86_400))]
    pub resume_grace_seconds: Option<i64>,

    /// Seconds to keep the finished Container (and its pod's saved logs)
    /// before deleting it. Unset: the operator's default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 31_536_000))]
    pub ttl_seconds_after_finished: Option<i64>,
}

fn default_true() -> bool {
    true
}

/// What happens when the command exits.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
pub enum RestartPolicy {
    /// Run once; the Container ends when the command exits.
    #[default]
    Never,
    /// Run again after a non-zero exit, like a Pod's `OnFailure`.
    OnFailure,
}

/// Settings of the Hatchway sidecar in the Container's pod.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SidecarOverrides {
    /// The sidecar container's resources, as in a Pod; they replace the
    /// cluster's default (the chart's `sidecar.resources`) whole. A
    /// namespace whose ResourceQuota covers a resource, and that has no
    /// LimitRange, admits the pod only when every container (the sidecar
    /// too) sets it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
}

/// Pod-level settings of the Pod that runs the Container.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PodOverrides {
    /// The ServiceAccount the Pod runs as. Its token is mounted only when
    /// `automountServiceAccountToken` is true.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub service_account_name: Option<String>,

    /// Mount the ServiceAccount token into the workload container. Off by
    /// default: people who may shell into a container should not inherit
    /// its Kubernetes credentials unless the owner asks for it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub automount_service_account_token: Option<bool>,

    /// Node labels the Pod must be scheduled on, as in a Pod.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = 64))]
    pub node_selector: BTreeMap<String, String>,

    /// Tolerations of the Pod, as in a Pod.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub tolerations: Vec<Toleration>,

    /// The Pod's security context (user, group, fsGroup, seccomp, ...), as in
    /// a Pod. Shells run as this user unless a login user is asked for and
    /// the workload runs as root.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub security_context: Option<PodSecurityContext>,

    /// The Pod's PriorityClass. Unset: the cluster's default for
    /// Containers (the chart's `sidecar.priorityClassName`), else none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 253))]
    pub priority_class_name: Option<String>,
}

/// Which ports may be forwarded.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PortForward {
    /// Ports (`5432`), ranges (`9000-9010`) or `any`; empty: published
    /// ports only.
    #[serde(default)]
    #[schemars(
        length(max = 64),
        inner(length(max = 11), regex(pattern = r"^(any|[0-9]{1,5}(-[0-9]{1,5})?)$"))
    )]
    pub ports: Vec<String>,

    /// Let `ssh -R` listen in the pod (off by default: whatever shares the
    /// pod's network could connect). Loopback only, ports from 1024, 8
    /// listeners per SSH connection.
    #[serde(default)]
    pub reverse: bool,

    /// Let `ssh -A` forward the client's agent: the session gets a socket
    /// in a 0700 directory under /tmp owned by its user (off by default:
    /// that user, or root, in the container can ask the agent to sign
    /// while the session lasts).
    #[serde(default)]
    pub agent: bool,
}

/// A port inside the container published as a web app.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PublishedPort {
    /// The TCP port the app listens on inside the container.
    #[schemars(range(min = 1, max = 65535))]
    pub port: i32,

    /// Who may use it: `private` (the default) needs a token with
    /// `containers/proxy` rights; `public` needs none.
    #[serde(default)]
    pub access: PortAccess,

    /// A short name shown to people, e.g. "Jupyter".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 63))]
    pub label: Option<String>,

    /// The path to open first, e.g. `/lab`. Must start with one `/` and
    /// hold no `#` fragment (a login link's code must reach the router, and
    /// stay on the app's host).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 2048), regex(pattern = r"^/([^/\#][^#]*)?$"))]
    pub initial_path: Option<String>,
}

/// Who may use a published port.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum PortAccess {
    /// Needs an authenticated user allowed `containers/proxy`.
    #[default]
    Private,
    /// Anyone who can reach the router.
    Public,
}

/// What the operator and the router know of the Container. Written only by
/// them, with server-side apply.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ContainerStatus {
    /// Where the Container is in its life: Queued, Running, Complete,
    /// Failed or Cancelled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<Phase>,

    /// The Pod that runs the Container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_name: Option<String>,

    /// How the router reaches the Container's gateway, and how it and
    /// clients verify it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<GatewayStatus>,

    /// TCP ports listening inside the container, as its gateway last saw.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub listening_ports: Vec<ListeningPort>,

    /// The published ports with the URLs where they are served.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub published_ports: Vec<PublishedPortStatus>,

    /// True once anyone opened an interactive session (shell, exec, sftp,
    /// port-forward): the run is no longer pristine.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub interactive_session_started: bool,

    /// When the workload started running.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Time>,

    /// When the workload ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<Time>,

    /// The workload's exit code (128+N when killed by signal N).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,

    /// Conditions, written by the reconciler: `GatewayReady` (the sidecar
    /// answers at `gateway.address`), `Valid` (false when the cluster
    /// refused the pod as written) and `Ready` (both: the Container can be
    /// used; `kubectl wait --for=condition=Ready`). Whether a tunnel is held
    /// is `gateway.tunnel`, written by the router replica that holds it.
    /// A map keyed by `type` (server-side apply merges per condition).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,

    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

/// Where a Container is in its life.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum Phase {
    /// Accepted; its Pod is not running yet.
    Queued,
    /// The workload is running.
    Running,
    /// The workload exited with code 0.
    Complete,
    /// The workload exited with another code, or could not start.
    Failed,
    /// Deleted or stopped before it finished.
    Cancelled,
}

impl Phase {
    /// True for the phases a Container never leaves.
    pub fn is_finished(self) -> bool {
        matches!(self, Phase::Complete | Phase::Failed | Phase::Cancelled)
    }
}

/// How to reach and verify the Container's gateway.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GatewayStatus {
    /// `ip:port` of the sidecar's gateway (written by the reconciler once
    /// the sidecar is ready), or `tunnel <replica URL>` when only a tunnel
    /// reaches it.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub address: String,

    /// `tunnel <replica URL>`: the router replica that holds the sidecar's
    /// tunnel (written by that replica when the tunnel connects). Routers use
    /// it when they cannot, or prefer not to, connect to `address`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tunnel: Option<String>,

    /// Lowercase hex SHA-256 of the gateway's self-signed TLS certificate
    /// (DER), fresh at every sidecar start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate_sha256: Option<String>,

    /// The SSH host key's fingerprint in OpenSSH form (`SHA256:...`), so
    /// clients can check the host key instead of trusting it blindly.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_key_fingerprint: Option<String>,

    /// The SSH host public key in OpenSSH `authorized_keys` form, for a
    /// `known_hosts` entry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_key: Option<String>,
}

/// A TCP port listening inside the container.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ListeningPort {
    /// The port number.
    pub port: i32,
    /// Always `TCP` for now.
    pub protocol: String,
}

/// A published port and where it is served.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PublishedPortStatus {
    /// The port inside the container.
    pub port: i32,
    /// `private` or `public`, as in the spec.
    pub access: PortAccess,
    /// The label from the spec.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    /// The URL that serves it (with the initial path).
    pub url: String,
}

/// The CRD as YAML, exactly as committed in `crds/container.yaml`.
pub fn crd_yaml() -> String {
    let crd = Container::crd();
    let body = serde_norway::to_string(&crd).expect("a CRD always serializes to YAML");
    format!(
        "# Generated by `make crds` (cargo run -p hatchway-api --bin crdgen) from api/src/crd.rs.\n\
         # Do not edit by hand.\n---\n{body}"
    )
}

#[cfg(test)]
mod tests;
