//! The Pod and Secret a Container becomes (DESIGN.md, "Operator
//! reconciler", "Sidecar", "Trust model"). Pure functions: every choice
//! here is a unit test.
//!
//! Layout of the pod:
//! - the sidecar is a native sidecar (an init container with
//!   `restartPolicy: Always`) with a startup probe on `/readyz`, so the
//!   workload starts only once the gateway is up (and has opened the log
//!   directory);
//! - the workload is untrusted, so each volume it shares goes one way
//!   (docs/security.md): `hatchway-bin` is written by the sidecar (its own
//!   static binary) and read-only in the workload, which runs it as its
//!   shim (`/hatchway/bin/hatchway-sidecar shim -- <command>`);
//!   `hatchway-log` is written by the shim and read-only in the sidecar;
//! - the per-Container Secret (`ctr_key`, router CA, tunnel URL) and the
//!   audit trail are mounted into the sidecar only, under `/run/hatchway`,
//!   no path of which the workload can reach;
//! - the shim's spawn socket is an abstract socket: no file at all;
//! - the workload gets no ServiceAccount token unless the spec asks.

use std::collections::BTreeMap;

use hatchway_api::crd::{Container, RestartPolicy};
use hatchway_api::pod::{
    self, AUDIT_DIR, BIN_DIR, GATEWAY_PORT, HEALTH_PORT, LOG_DIR, SECRET_DIR, SHIM_PATH, SIDECAR_CONTAINER,
    SIDECAR_UID, WORKLOAD_CONTAINER, secret_key,
};
use hatchway_api::ports::{ForwardDefault, ForwardRule};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{
    Capabilities, Container as K8sContainer, ContainerPort, EmptyDirVolumeSource, EnvVar, HTTPGetAction, Pod,
    PodSpec, Probe, ResourceRequirements, SeccompProfile, Secret, SecretVolumeSource, SecurityContext,
    Volume, VolumeMount,
};
use k8s_openapi::api::networking::v1::{
    NetworkPolicy, NetworkPolicyIngressRule, NetworkPolicyPeer, NetworkPolicyPort, NetworkPolicySpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::Resource;

/// Label with the Container's UID (names can exceed a label's 63 bytes).
pub const LABEL_UID: &str = "hatchway.dev/container-uid";
/// Label with the Container's name when it fits in a label value.
pub const LABEL_NAME: &str = "hatchway.dev/container";
/// `app.kubernetes.io/managed-by` value.
pub const MANAGED_BY: &str = "hatchway-operator";

const BIN_VOLUME: &str = "hatchway-bin";
const LOG_VOLUME: &str = "hatchway-log";
const SECRET_VOLUME: &str = "hatchway-secret";
const AUDIT_VOLUME: &str = "hatchway-audit";

/// What the pod builder needs besides the Container.
#[derive(Clone, Debug)]
pub struct PodSettings {
    /// The sidecar image.
    pub sidecar_image: String,
    /// Its pull policy (`IfNotPresent`, `Never` in the e2e cluster).
    pub sidecar_pull_policy: String,
    /// The sidecar container's resources, unless the Container says
    /// otherwise (`spec.sidecar.resources`).
    pub sidecar_resources: Option<ResourceRequirements>,
    /// The pods' PriorityClass, unless the Container says otherwise
    /// (`spec.pod.priorityClassName`).
    pub priority_class: Option<String>,
    /// The sidecar's log format (`text` or `json`): the operator's own.
    pub log_format: String,
    /// Shells allowed cluster-wide (off: the shim serves no spawn socket).
    pub shell_enabled: bool,
    /// Seconds a broken shell or port-forward stays resumable, unless the
    /// Container says otherwise (`spec.resumeGraceSeconds`).
    pub resume_grace_seconds: u64,
    /// Terminals recorded, unless the Container says otherwise
    /// (`spec.recordShell`).
    pub record_shells: bool,
    /// Which ports Containers that do not say may forward.
    pub port_forward_default: ForwardDefault,
    /// A NetworkPolicy per pod that keeps its gateway to the router (none:
    /// the cluster's own policies only).
    pub gateway_policy: Option<GatewayPolicy>,
}

/// Who may reach a pod's gateway and health ports (docs/security.md).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GatewayPolicy {
    /// The operator's namespace...
    pub operator_namespace: String,
    /// ...and its pods' labels: the only peers of the gateway port (the
    /// router) and of the health port (the reconciler reads `/readyz`).
    pub operator_labels: BTreeMap<String, String>,
    /// Labels of the namespaces Prometheus scrapes from, which may also
    /// reach the health port (`/metrics`); `None`: any namespace may.
    pub metrics_namespace_labels: Option<BTreeMap<String, String>>,
}

/// The NetworkPolicy of a Container's pod: its gateway port only from the
/// router's pods, its health port from them and Prometheus, and every other
/// port (the workload's own) as before — a policy that selects a pod denies
/// what it does not allow, so the rest is allowed by range.
pub fn network_policy(container: &Container, policy: &GatewayPolicy) -> Result<NetworkPolicy, PodError> {
    let uid = container.metadata.uid.clone().ok_or(PodError::Missing("uid"))?;
    let tcp = |port: i32, end: Option<i32>| NetworkPolicyPort {
        protocol: Some("TCP".to_owned()),
        port: Some(IntOrString::Int(port)),
        end_port: end,
    };
    let operator = NetworkPolicyPeer {
        namespace_selector: Some(LabelSelector {
            match_labels: Some(BTreeMap::from([(
                "kubernetes.io/metadata.name".to_owned(),
                policy.operator_namespace.clone(),
            )])),
            ..LabelSelector::default()
        }),
        pod_selector: Some(LabelSelector {
            match_labels: Some(policy.operator_labels.clone()),
            ..LabelSelector::default()
        }),
        ..NetworkPolicyPeer::default()
    };
    let health_peers = policy.metrics_namespace_labels.as_ref().map(|labels| {
        vec![
            operator.clone(),
            NetworkPolicyPeer {
                namespace_selector: Some(LabelSelector {
                    match_labels: Some(labels.clone()),
                    ..LabelSelector::default()
                }),
                ..NetworkPolicyPeer::default()
            },
        ]
    });
    let everyone_else = NetworkPolicyIngressRule {
        from: None,
        ports: Some(vec![
            tcp(1, Some(i32::from(GATEWAY_PORT) - 1)),
            tcp(i32::from(HEALTH_PORT) + 1, Some(65535)),
            NetworkPolicyPort {
                protocol: Some("UDP".to_owned()),
                port: Some(IntOrString::Int(1)),
                end_port: Some(65535),
            },
            NetworkPolicyPort {
                protocol: Some("SCTP".to_owned()),
                port: Some(IntOrString::Int(1)),
                end_port: Some(65535),
            },
        ]),
    };
    Ok(NetworkPolicy {
        metadata: ObjectMeta {
            name: Some(child_name(container)?),
            namespace: container.metadata.namespace.clone(),
            labels: Some(labels(container)),
            owner_references: Some(vec![owner(container)?]),
            ..ObjectMeta::default()
        },
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(LabelSelector {
                match_labels: Some(BTreeMap::from([(LABEL_UID.to_owned(), uid)])),
                ..LabelSelector::default()
            }),
            policy_types: Some(vec!["Ingress".to_owned()]),
            ingress: Some(vec![
                NetworkPolicyIngressRule {
                    from: Some(vec![operator]),
                    ports: Some(vec![tcp(GATEWAY_PORT.into(), None)]),
                },
                NetworkPolicyIngressRule {
                    from: health_peers,
                    ports: Some(vec![tcp(HEALTH_PORT.into(), None)]),
                },
                everyone_else,
            ]),
            egress: None,
        }),
    })
}

/// Why a Container cannot become a pod (a condition on it, not a crash).
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum PodError {
    /// The object lacks what the API server always sets.
    #[error("the Container has no {0} (not stored by the API server?)")]
    Missing(&'static str),
}

/// The name of the Container's pod and Secret: its name and the start of
/// its UID, so a re-created Container never meets its predecessor's pod.
pub fn child_name(container: &Container) -> Result<String, PodError> {
    let name = container
        .metadata
        .name
        .as_deref()
        .ok_or(PodError::Missing("name"))?;
    let uid = container
        .metadata
        .uid
        .as_deref()
        .ok_or(PodError::Missing("uid"))?;
    let short: String = uid
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .take(5)
        .collect();
    // Pod names are DNS subdomains of at most 253 bytes.
    let base: String = name.chars().take(253 - 1 - short.len()).collect();
    Ok(format!("{}-{short}", base.trim_end_matches(['-', '.'])))
}

/// Labels every child carries (`kubectl get pods -l hatchway.dev/container=NAME`).
pub fn labels(container: &Container) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::from([
        (
            "app.kubernetes.io/name".to_owned(),
            "hatchway-container".to_owned(),
        ),
        ("app.kubernetes.io/managed-by".to_owned(), MANAGED_BY.to_owned()),
    ]);
    if let Some(uid) = &container.metadata.uid {
        labels.insert(LABEL_UID.to_owned(), uid.clone());
    }
    if let Some(name) = &container.metadata.name
        && name.len() <= 63
    {
        labels.insert(LABEL_NAME.to_owned(), name.clone());
    }
    labels
}

fn owner(container: &Container) -> Result<OwnerReference, PodError> {
    let mut owner = container
        .controller_owner_ref(&())
        .ok_or(PodError::Missing("uid"))?;
    owner.block_owner_deletion = Some(true);
    Ok(owner)
}

/// Whether `meta` (a pod or Secret) is controlled by `container`: the only
/// children the reconciler uses. One that merely has the expected name was
/// made by someone else, and adopting it would let them choose what the
/// Container's status says (docs/security.md).
pub fn is_controlled_by(meta: &ObjectMeta, container: &Container) -> bool {
    let Some(uid) = container.metadata.uid.as_deref() else {
        return false;
    };
    meta.owner_references
        .iter()
        .flatten()
        .any(|o| o.controller == Some(true) && o.uid == uid && o.kind == "Container")
}

/// The per-Container Secret: `ctr_key`, the router CA the tunnel pins, and
/// the router's tunnel URL (absent: no tunnel). Its name is generated by
/// the API server (`<child name>-xxxxx`): nobody can create it beforehand
/// for the pod to mount, and the operator never needs to read a Secret it
/// did not just create (it has no `get` on Secrets).
pub fn secret(
    container: &Container,
    ctr_key_hex: &str,
    router_ca_pem: &str,
    tunnel_url: Option<&str>,
) -> Result<Secret, PodError> {
    let mut data = BTreeMap::from([
        (
            secret_key::CTR_KEY.to_owned(),
            ByteString(ctr_key_hex.as_bytes().to_vec()),
        ),
        (
            secret_key::ROUTER_CA.to_owned(),
            ByteString(router_ca_pem.as_bytes().to_vec()),
        ),
    ]);
    if let Some(url) = tunnel_url {
        data.insert(
            secret_key::TUNNEL_URL.to_owned(),
            ByteString(url.as_bytes().to_vec()),
        );
    }
    Ok(Secret {
        metadata: ObjectMeta {
            generate_name: Some(format!("{}-", child_name(container)?)),
            namespace: container.metadata.namespace.clone(),
            labels: Some(labels(container)),
            owner_references: Some(vec![owner(container)?]),
            ..ObjectMeta::default()
        },
        type_: Some("Opaque".to_owned()),
        data: Some(data),
        ..Secret::default()
    })
}

fn mount(name: &str, path: &str, read_only: bool) -> VolumeMount {
    VolumeMount {
        name: name.to_owned(),
        mount_path: path.to_owned(),
        read_only: read_only.then_some(true),
        ..VolumeMount::default()
    }
}

fn env(name: &str, value: impl Into<String>) -> EnvVar {
    EnvVar {
        name: name.to_owned(),
        value: Some(value.into()),
        ..EnvVar::default()
    }
}

fn ready_probe(period: i32, failures: i32) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(pod::health_path::READYZ.to_owned()),
            port: IntOrString::Int(HEALTH_PORT.into()),
            ..HTTPGetAction::default()
        }),
        period_seconds: Some(period),
        failure_threshold: Some(failures),
        timeout_seconds: Some(2),
        ..Probe::default()
    }
}

/// The ports the Container's gateway lets be forwarded (api/src/ports.rs).
pub fn forward_rule(container: &Container, default: ForwardDefault) -> ForwardRule {
    let published: Vec<u16> = container
        .spec
        .published_ports
        .iter()
        .filter_map(|p| u16::try_from(p.port).ok())
        .collect();
    let declared = container.spec.port_forward.as_ref().map(|f| f.ports.as_slice());
    ForwardRule::decide(declared, &published, default)
}

fn sidecar(container: &Container, settings: &PodSettings) -> Result<K8sContainer, PodError> {
    let uid = container
        .metadata
        .uid
        .as_deref()
        .ok_or(PodError::Missing("uid"))?;
    let forward = forward_rule(container, settings.port_forward_default);
    // `ssh -R` and `ssh -A`: off unless the Container turns them on.
    let allowed = |flag: fn(&hatchway_api::crd::PortForward) -> bool| {
        container.spec.port_forward.as_ref().is_some_and(flag).to_string()
    };
    Ok(K8sContainer {
        name: SIDECAR_CONTAINER.to_owned(),
        image: Some(settings.sidecar_image.clone()),
        image_pull_policy: Some(settings.sidecar_pull_policy.clone()),
        args: Some(vec![pod::GATEWAY_SUBCOMMAND.to_owned()]),
        env: Some(vec![
            env(pod::env::CONTAINER_UID, uid),
            env(pod::env::INSTALL_TO, SHIM_PATH),
            env(
                pod::env::RESUME_GRACE_SECONDS,
                container
                    .spec
                    .resume_grace_seconds
                    .and_then(|s| u64::try_from(s).ok())
                    .unwrap_or(settings.resume_grace_seconds)
                    .to_string(),
            ),
            env(
                pod::env::RECORD_SHELLS,
                container
                    .spec
                    .record_shell
                    .unwrap_or(settings.record_shells)
                    .to_string(),
            ),
            env(pod::env::FORWARD_PORTS, forward.ports.to_string()),
            env(pod::env::FORWARD_RULE, forward.why),
            env(pod::env::REVERSE_FORWARD, allowed(|f| f.reverse)),
            env(pod::env::AGENT_FORWARD, allowed(|f| f.agent)),
            env(pod::env::LOG_FORMAT, settings.log_format.clone()),
        ]),
        resources: container
            .spec
            .sidecar
            .as_ref()
            .and_then(|s| s.resources.clone())
            .or_else(|| settings.sidecar_resources.clone()),
        // A native sidecar: started before the workload, kept running
        // beside it, stopped after it.
        restart_policy: Some("Always".to_owned()),
        ports: Some(vec![
            ContainerPort {
                name: Some("gateway".to_owned()),
                container_port: GATEWAY_PORT.into(),
                ..ContainerPort::default()
            },
            ContainerPort {
                name: Some("metrics".to_owned()),
                container_port: HEALTH_PORT.into(),
                ..ContainerPort::default()
            },
        ]),
        // The workload starts only when the gateway answers.
        startup_probe: Some(ready_probe(1, 120)),
        readiness_probe: Some(ready_probe(5, 3)),
        volume_mounts: Some(vec![
            mount(BIN_VOLUME, BIN_DIR, false),
            mount(LOG_VOLUME, LOG_DIR, true),
            mount(SECRET_VOLUME, SECRET_DIR, true),
            mount(AUDIT_VOLUME, AUDIT_DIR, false),
        ]),
        security_context: Some(SecurityContext {
            run_as_user: Some(SIDECAR_UID.into()),
            run_as_group: Some(SIDECAR_UID.into()),
            run_as_non_root: Some(true),
            allow_privilege_escalation: Some(false),
            read_only_root_filesystem: Some(true),
            capabilities: Some(no_capabilities()),
            seccomp_profile: Some(runtime_default_seccomp()),
            ..SecurityContext::default()
        }),
        ..K8sContainer::default()
    })
}

fn workload(container: &Container, settings: &PodSettings) -> K8sContainer {
    let spec = &container.spec;
    // With shells, the sidecar (its own uid) may use the spawn socket.
    let command = pod::shim_command(
        settings.shell_enabled && spec.shell,
        spec.command.iter().chain(&spec.args).cloned(),
    );
    K8sContainer {
        name: WORKLOAD_CONTAINER.to_owned(),
        image: Some(spec.image.clone()),
        command: Some(command),
        env: (!spec.env.is_empty()).then(|| spec.env.clone()),
        working_dir: spec.working_dir.clone(),
        resources: spec.resources.clone(),
        security_context: Some(workload_security_context(container)),
        // Never the Secret, never the audit log; the shim's binary read-only.
        volume_mounts: Some(vec![
            mount(BIN_VOLUME, BIN_DIR, true),
            mount(LOG_VOLUME, LOG_DIR, false),
        ]),
        ..K8sContainer::default()
    }
}

/// The workload container's security context: the spec's, with what it
/// leaves unset filled so the pod meets Pod Security `restricted` where
/// that cannot break the image (docs/security.md): seccomp RuntimeDefault
/// always; no privilege escalation and no capabilities when it runs as a
/// non-root user. A root workload keeps its capabilities: a root shell
/// (installing packages, changing owners, `login -u`) needs them.
fn workload_security_context(container: &Container) -> SecurityContext {
    let mut context = container.spec.security_context.clone().unwrap_or_default();
    let pod = container
        .spec
        .pod
        .as_ref()
        .and_then(|p| p.security_context.as_ref());
    if context.seccomp_profile.is_none() && pod.is_none_or(|p| p.seccomp_profile.is_none()) {
        context.seccomp_profile = Some(runtime_default_seccomp());
    }
    let non_root = context.run_as_non_root == Some(true)
        || context.run_as_user.is_some_and(|u| u != 0)
        || (context.run_as_user.is_none()
            && pod.is_some_and(|p| p.run_as_non_root == Some(true) || p.run_as_user.is_some_and(|u| u != 0)));
    if non_root && context.privileged != Some(true) {
        context.allow_privilege_escalation.get_or_insert(false);
        context.capabilities.get_or_insert_with(no_capabilities);
    }
    context
}

/// Every capability dropped (Pod Security `restricted`).
fn no_capabilities() -> Capabilities {
    Capabilities {
        drop: Some(vec!["ALL".to_owned()]),
        ..Capabilities::default()
    }
}

/// The container runtime's default seccomp profile (Pod Security
/// `restricted`).
fn runtime_default_seccomp() -> SeccompProfile {
    SeccompProfile {
        type_: "RuntimeDefault".to_owned(),
        ..SeccompProfile::default()
    }
}

/// The Container's pod, mounting the Secret `secret_name` in its sidecar.
pub fn pod(container: &Container, settings: &PodSettings, secret_name: &str) -> Result<Pod, PodError> {
    let name = child_name(container)?;
    let overrides = container.spec.pod.clone().unwrap_or_default();
    let annotations = BTreeMap::from([
        ("prometheus.io/scrape".to_owned(), "true".to_owned()),
        ("prometheus.io/port".to_owned(), HEALTH_PORT.to_string()),
        (
            "prometheus.io/path".to_owned(),
            pod::health_path::METRICS.to_owned(),
        ),
    ]);
    let restart_policy = match container.spec.restart_policy {
        RestartPolicy::Never => "Never",
        RestartPolicy::OnFailure => "OnFailure",
    };
    Ok(Pod {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            namespace: container.metadata.namespace.clone(),
            labels: Some(labels(container)),
            annotations: Some(annotations),
            owner_references: Some(vec![owner(container)?]),
            ..ObjectMeta::default()
        },
        spec: Some(PodSpec {
            init_containers: Some(vec![sidecar(container, settings)?]),
            containers: vec![workload(container, settings)],
            restart_policy: Some(restart_policy.to_owned()),
            automount_service_account_token: Some(overrides.automount_service_account_token.unwrap_or(false)),
            service_account_name: overrides.service_account_name.clone(),
            node_selector: (!overrides.node_selector.is_empty()).then(|| overrides.node_selector.clone()),
            tolerations: (!overrides.tolerations.is_empty()).then(|| overrides.tolerations.clone()),
            security_context: overrides.security_context.clone(),
            priority_class_name: overrides
                .priority_class_name
                .clone()
                .or_else(|| settings.priority_class.clone()),
            // Separate process namespaces: the workload cannot see the
            // sidecar's processes, environment or files.
            share_process_namespace: Some(false),
            enable_service_links: Some(false),
            volumes: Some(vec![
                Volume {
                    name: BIN_VOLUME.to_owned(),
                    empty_dir: Some(EmptyDirVolumeSource::default()),
                    ..Volume::default()
                },
                Volume {
                    name: LOG_VOLUME.to_owned(),
                    empty_dir: Some(EmptyDirVolumeSource::default()),
                    ..Volume::default()
                },
                Volume {
                    name: AUDIT_VOLUME.to_owned(),
                    empty_dir: Some(EmptyDirVolumeSource::default()),
                    ..Volume::default()
                },
                Volume {
                    name: SECRET_VOLUME.to_owned(),
                    secret: Some(SecretVolumeSource {
                        secret_name: Some(secret_name.to_owned()),
                        // Only the sidecar mounts it, and it runs as its own
                        // uid: the files must be readable by others.
                        default_mode: Some(0o444),
                        ..SecretVolumeSource::default()
                    }),
                    ..Volume::default()
                },
            ]),
            ..PodSpec::default()
        }),
        ..Pod::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use hatchway_api::crd::ContainerSpec;

    fn container(tweak: impl FnOnce(&mut ContainerSpec)) -> Container {
        let mut spec: ContainerSpec = serde_json::from_value(serde_json::json!({
            "image": "busybox:1.36",
            "command": ["sh", "-c"],
            "args": ["echo hi; sleep 5"],
            "env": [{"name": "A", "value": "1"}],
        }))
        .unwrap();
        tweak(&mut spec);
        let mut c = Container::new("job-1", spec);
        c.metadata.namespace = Some("team".into());
        c.metadata.uid = Some("0f3a9c2e-1111-2222-3333-444455556666".into());
        c
    }

    fn settings() -> PodSettings {
        PodSettings {
            sidecar_image: "localhost/hatchway/sidecar:e2e".into(),
            sidecar_pull_policy: "Never".into(),
            sidecar_resources: None,
            priority_class: None,
            log_format: "json".into(),
            shell_enabled: true,
            resume_grace_seconds: 600,
            record_shells: true,
            port_forward_default: ForwardDefault::Any,
            gateway_policy: None,
        }
    }

    fn resources(cpu: &str, memory: &str) -> ResourceRequirements {
        serde_json::from_value(serde_json::json!({
            "requests": {"cpu": cpu, "memory": memory},
            "limits": {"cpu": cpu, "memory": memory},
        }))
        .unwrap()
    }

    #[test]
    fn the_sidecar_s_resources_and_the_pod_s_priority_are_the_container_s_else_the_cluster_s() {
        let cluster = PodSettings {
            sidecar_resources: Some(resources("10m", "32Mi")),
            priority_class: Some("batch".into()),
            ..settings()
        };
        let built = |c: &Container, s: &PodSettings| {
            let spec = super::pod(c, s, "job-1-secret").unwrap().spec.unwrap();
            let sidecar = spec.init_containers.unwrap().remove(0);
            (sidecar.resources, spec.priority_class_name, sidecar.env.unwrap())
        };
        let plain = container(|_| {});
        let (r, priority, env) = built(&plain, &cluster);
        assert_eq!(r, Some(resources("10m", "32Mi")));
        assert_eq!(priority.as_deref(), Some("batch"));
        assert!(
            env.iter()
                .any(|e| e.name == pod::env::LOG_FORMAT && e.value.as_deref() == Some("json"))
        );
        let own = container(|spec| {
            spec.sidecar = Some(hatchway_api::crd::SidecarOverrides {
                resources: Some(resources("50m", "64Mi")),
            });
            spec.pod = Some(hatchway_api::crd::PodOverrides {
                priority_class_name: Some("interactive".into()),
                ..Default::default()
            });
        });
        let (r, priority, _) = built(&own, &cluster);
        assert_eq!(
            r,
            Some(resources("50m", "64Mi")),
            "the Container's replace the cluster's whole"
        );
        assert_eq!(priority.as_deref(), Some("interactive"));
        let (r, priority, _) = built(&plain, &settings());
        assert_eq!((r, priority), (None, None));
    }

    /// The checks of Pod Security `restricted` (v1.34) that a Container's
    /// spec can decide, as the API server makes them: what a pod breaks.
    fn restricted_violations(pod: &Pod) -> Vec<String> {
        let spec = pod.spec.as_ref().unwrap();
        let pod_context = spec.security_context.clone().unwrap_or_default();
        let mut broken = Vec::new();
        let containers = spec.init_containers.iter().flatten().chain(&spec.containers);
        for c in containers {
            let context = c.security_context.clone().unwrap_or_default();
            let name = &c.name;
            if context.allow_privilege_escalation != Some(false) {
                broken.push(format!("{name}: allowPrivilegeEscalation != false"));
            }
            let caps = context.capabilities.clone().unwrap_or_default();
            if !caps.drop.unwrap_or_default().iter().any(|d| d == "ALL") {
                broken.push(format!("{name}: capabilities not dropped"));
            }
            if caps
                .add
                .unwrap_or_default()
                .iter()
                .any(|a| a != "NET_BIND_SERVICE")
            {
                broken.push(format!("{name}: capabilities added"));
            }
            if context.run_as_non_root.or(pod_context.run_as_non_root) != Some(true) {
                broken.push(format!("{name}: runAsNonRoot != true"));
            }
            if context.run_as_user.or(pod_context.run_as_user) == Some(0) {
                broken.push(format!("{name}: runAsUser 0"));
            }
            let seccomp = context.seccomp_profile.or(pod_context.seccomp_profile.clone());
            if !seccomp.is_some_and(|s| s.type_ == "RuntimeDefault" || s.type_ == "Localhost") {
                broken.push(format!("{name}: no seccomp profile"));
            }
        }
        broken
    }

    #[test]
    fn a_non_root_container_meets_restricted_and_a_root_one_keeps_its_capabilities() {
        let non_root = container(|spec| {
            spec.pod = Some(
                serde_json::from_value(serde_json::json!({
                    "securityContext": {"runAsNonRoot": true, "runAsUser": 1000}
                }))
                .unwrap(),
            );
        });
        let pod = super::pod(&non_root, &settings(), "s").unwrap();
        assert_eq!(restricted_violations(&pod), Vec::<String>::new());

        // The same user named on the container only.
        let non_root = container(|spec| {
            spec.security_context =
                Some(serde_json::from_value(serde_json::json!({"runAsUser": 1000})).unwrap());
        });
        let workload = super::pod(&non_root, &settings(), "s")
            .unwrap()
            .spec
            .unwrap()
            .containers
            .remove(0);
        let context = workload.security_context.unwrap();
        assert_eq!(context.allow_privilege_escalation, Some(false));
        assert_eq!(context.capabilities.unwrap().drop, Some(vec!["ALL".to_owned()]));

        // What the spec says stands.
        let own =
            container(|spec| {
                spec.pod = Some(serde_json::from_value(serde_json::json!({
                "securityContext": {"runAsNonRoot": true, "runAsUser": 1000,
                                    "seccompProfile": {"type": "Localhost", "localhostProfile": "p.json"}}
            }))
            .unwrap());
                spec.security_context = Some(
                    serde_json::from_value(serde_json::json!({
                        "capabilities": {"drop": ["ALL"], "add": ["NET_BIND_SERVICE"]}
                    }))
                    .unwrap(),
                );
            });
        let pod = super::pod(&own, &settings(), "s").unwrap();
        assert_eq!(restricted_violations(&pod), Vec::<String>::new());
        let workload = pod.spec.unwrap().containers.remove(0);
        let context = workload.security_context.unwrap();
        assert_eq!(context.seccomp_profile, None, "the pod's profile applies");
        assert_eq!(
            context.capabilities.unwrap().add,
            Some(vec!["NET_BIND_SERVICE".to_owned()])
        );

        // Root (or an image's own user, unknown here): capabilities kept,
        // seccomp still RuntimeDefault; restricted refuses it, baseline not.
        let root = container(|_| {});
        let pod = super::pod(&root, &settings(), "s").unwrap();
        let workload = pod.spec.clone().unwrap().containers.remove(0);
        let context = workload.security_context.unwrap();
        assert_eq!(context.capabilities, None);
        assert_eq!(context.allow_privilege_escalation, None);
        assert_eq!(context.seccomp_profile.unwrap().type_, "RuntimeDefault");
        let broken = restricted_violations(&pod);
        assert!(broken.iter().all(|b| b.starts_with("workload:")), "{broken:?}");
        assert!(
            broken.contains(&"workload: runAsNonRoot != true".to_owned()),
            "{broken:?}"
        );
    }

    #[test]
    fn a_containers_resume_grace_time_overrides_the_clusters() {
        let grace = |c: &Container| {
            let pod = super::pod(c, &settings(), "job-1-secret").unwrap();
            let sidecar = pod.spec.unwrap().init_containers.unwrap().remove(0);
            sidecar
                .env
                .unwrap()
                .into_iter()
                .find(|e| e.name == pod::env::RESUME_GRACE_SECONDS)
                .and_then(|e| e.value)
        };
        assert_eq!(grace(&container(|_| {})).as_deref(), Some("600"));
        let own = container(|spec| spec.resume_grace_seconds = Some(30));
        assert_eq!(grace(&own).as_deref(), Some("30"));
    }

    #[test]
    fn a_containers_recording_switch_overrides_the_clusters() {
        let record = |c: &Container, cluster: bool| {
            let settings = PodSettings {
                record_shells: cluster,
                ..settings()
            };
            let pod = super::pod(c, &settings, "job-1-secret").unwrap();
            let sidecar = pod.spec.unwrap().init_containers.unwrap().remove(0);
            sidecar
                .env
                .unwrap()
                .into_iter()
                .find(|e| e.name == pod::env::RECORD_SHELLS)
                .and_then(|e| e.value)
        };
        assert_eq!(record(&container(|_| {}), true).as_deref(), Some("true"));
        assert_eq!(record(&container(|_| {}), false).as_deref(), Some("false"));
        let off = container(|spec| spec.record_shell = Some(false));
        assert_eq!(record(&off, true).as_deref(), Some("false"));
        let on = container(|spec| spec.record_shell = Some(true));
        assert_eq!(record(&on, false).as_deref(), Some("true"));
    }

    #[test]
    fn the_forwarding_rule_is_in_the_sidecars_environment() {
        let forward = |c: &Container, default: ForwardDefault| {
            let settings = PodSettings {
                port_forward_default: default,
                ..settings()
            };
            let pod = super::pod(c, &settings, "job-1-secret").unwrap();
            let env = pod.spec.unwrap().init_containers.unwrap().remove(0).env.unwrap();
            let value = |name: &str| env.iter().find(|e| e.name == name).and_then(|e| e.value.clone());
            (
                value(pod::env::FORWARD_PORTS).unwrap(),
                value(pod::env::FORWARD_RULE).unwrap(),
                value(pod::env::REVERSE_FORWARD).unwrap(),
                value(pod::env::AGENT_FORWARD).unwrap(),
            )
        };
        let (ports, _, reverse, agent) = forward(&container(|_| {}), ForwardDefault::Any);
        assert_eq!(
            (ports.as_str(), reverse.as_str(), agent.as_str()),
            ("any", "false", "false")
        );
        let declared = container(|spec| {
            spec.port_forward = Some(hatchway_api::crd::PortForward {
                ports: vec!["5432".into(), "9000-9010".into()],
                reverse: true,
                agent: true,
            });
        });
        assert_eq!(
            forward(&declared, ForwardDefault::Declared),
            (
                "5432,9000-9010".to_owned(),
                "spec.portForward.ports allows 5432,9000-9010".to_owned(),
                "true".to_owned(),
                "true".to_owned()
            )
        );
        let (ports, why, _, _) = forward(&declared, ForwardDefault::Published);
        assert_eq!(ports, "none");
        assert!(
            why.starts_with("the cluster allows published ports only"),
            "{why}"
        );
    }

    #[test]
    fn the_gateway_port_is_for_the_router_and_the_workloads_ports_for_everyone() {
        let c = container(|_| {});
        let policy = GatewayPolicy {
            operator_namespace: "hatchway-system".into(),
            operator_labels: BTreeMap::from([("app.kubernetes.io/name".into(), "hatchway".into())]),
            metrics_namespace_labels: Some(BTreeMap::from([("monitoring".into(), "true".into())])),
        };
        let np = network_policy(&c, &policy).unwrap();
        assert_eq!(np.metadata.name.as_deref(), Some("job-1-0f3a9"));
        let spec = np.spec.unwrap();
        assert_eq!(
            spec.pod_selector.unwrap().match_labels.unwrap()[LABEL_UID],
            "0f3a9c2e-1111-2222-3333-444455556666"
        );
        let rules = spec.ingress.unwrap();
        let ports = |r: &NetworkPolicyIngressRule| -> Vec<(String, i32, Option<i32>)> {
            r.ports
                .iter()
                .flatten()
                .map(|p| {
                    let port = match p.port {
                        Some(IntOrString::Int(n)) => n,
                        _ => 0,
                    };
                    (p.protocol.clone().unwrap_or_default(), port, p.end_port)
                })
                .collect()
        };
        // 7443 from the operator's pods only.
        assert_eq!(ports(&rules[0]), [("TCP".to_owned(), 7443, None)]);
        let from = rules[0].from.as_ref().unwrap();
        assert_eq!(from.len(), 1);
        assert_eq!(
            from[0]
                .namespace_selector
                .as_ref()
                .unwrap()
                .match_labels
                .as_ref()
                .unwrap()["kubernetes.io/metadata.name"],
            "hatchway-system"
        );
        assert!(from[0].pod_selector.is_some());
        // 7444 from them and Prometheus' namespaces.
        assert_eq!(ports(&rules[1]), [("TCP".to_owned(), 7444, None)]);
        assert_eq!(rules[1].from.as_ref().unwrap().len(), 2);
        // Everything else from anywhere, neither 7443 nor 7444 included.
        assert!(rules[2].from.is_none());
        let rest = ports(&rules[2]);
        assert!(rest.contains(&("TCP".to_owned(), 1, Some(7442))));
        assert!(rest.contains(&("TCP".to_owned(), 7445, Some(65535))));
        assert!(rest.contains(&("UDP".to_owned(), 1, Some(65535))));
        // Without Prometheus' namespaces, the health port is open to all.
        let open = GatewayPolicy {
            metrics_namespace_labels: None,
            ..policy
        };
        let rules = network_policy(&c, &open).unwrap().spec.unwrap().ingress.unwrap();
        assert!(rules[1].from.is_none());
        assert_eq!(rules[0].from.as_ref().unwrap().len(), 1);
        for (protocol, start, end) in rest.iter().filter(|(p, ..)| p == "TCP") {
            let end = end.unwrap_or(*start);
            assert!(
                end < 7443 || *start > 7444,
                "{protocol} {start}-{end} opens the gateway"
            );
        }
    }

    /// (volume, path, read-only) of each mount.
    fn mounts(c: &K8sContainer) -> Vec<(&str, &str, bool)> {
        c.volume_mounts
            .iter()
            .flatten()
            .map(|m| (m.name.as_str(), m.mount_path.as_str(), m.read_only == Some(true)))
            .collect()
    }

    #[test]
    fn the_workload_runs_under_the_shim_and_never_mounts_the_secret() {
        let pod = pod(&container(|_| {}), &settings(), "job-1-0f3a9-abcde").unwrap();
        let spec = pod.spec.unwrap();
        let workload = &spec.containers[0];
        assert_eq!(workload.name, "workload");
        assert_eq!(
            workload.command.as_deref().unwrap(),
            [
                "/hatchway/bin/hatchway-sidecar",
                "shim",
                "--spawn-allowed-uids",
                "65532",
                "--",
                "sh",
                "-c",
                "echo hi; sleep 5"
            ]
        );
        assert_eq!(workload.args, None);
        assert_eq!(
            mounts(workload),
            [
                ("hatchway-bin", "/hatchway/bin", true),
                ("hatchway-log", "/hatchway/log", false)
            ]
        );
        assert_eq!(spec.automount_service_account_token, Some(false));
        assert_eq!(spec.share_process_namespace, Some(false));
        assert_eq!(spec.restart_policy.as_deref(), Some("Never"));
    }

    #[test]
    fn the_sidecar_is_a_native_sidecar_with_the_secret_and_a_startup_probe() {
        let pod = pod(&container(|_| {}), &settings(), "job-1-0f3a9-abcde").unwrap();
        let spec = pod.spec.unwrap();
        let sidecar = &spec.init_containers.as_ref().unwrap()[0];
        assert_eq!(sidecar.restart_policy.as_deref(), Some("Always"));
        assert_eq!(sidecar.image.as_deref(), Some("localhost/hatchway/sidecar:e2e"));
        let probe = sidecar.startup_probe.as_ref().unwrap().http_get.as_ref().unwrap();
        assert_eq!(
            (probe.path.as_deref(), &probe.port),
            (Some("/readyz"), &IntOrString::Int(7444))
        );
        assert_eq!(
            mounts(sidecar),
            [
                ("hatchway-bin", "/hatchway/bin", false),
                ("hatchway-log", "/hatchway/log", true),
                ("hatchway-secret", "/run/hatchway/secret", true),
                ("hatchway-audit", "/run/hatchway/audit", false),
            ]
        );
        let env: Vec<_> = sidecar
            .env
            .iter()
            .flatten()
            .map(|e| (e.name.as_str(), e.value.as_deref()))
            .collect();
        assert!(env.contains(&(
            "HATCHWAY_CONTAINER_UID",
            Some("0f3a9c2e-1111-2222-3333-444455556666")
        )));
        assert!(env.contains(&("HATCHWAY_RESUME_GRACE_SECONDS", Some("600"))));
        let sc = sidecar.security_context.as_ref().unwrap();
        assert_eq!(
            (sc.run_as_non_root, sc.read_only_root_filesystem),
            (Some(true), Some(true))
        );
    }

    #[test]
    fn overrides_and_shell_settings_shape_the_pod() {
        let c = container(|spec| {
            spec.shell = false;
            spec.restart_policy = RestartPolicy::OnFailure;
            spec.pod = Some(
                serde_json::from_value(serde_json::json!({
                    "serviceAccountName": "runner",
                    "automountServiceAccountToken": true,
                    "nodeSelector": {"disk": "ssd"},
                }))
                .unwrap(),
            );
        });
        let spec = pod(&c, &settings(), "job-1-0f3a9-abcde").unwrap().spec.unwrap();
        assert!(
            spec.containers[0]
                .command
                .as_ref()
                .unwrap()
                .contains(&"--spawn-disabled".to_owned())
        );
        assert_eq!(spec.service_account_name.as_deref(), Some("runner"));
        assert_eq!(spec.automount_service_account_token, Some(true));
        assert_eq!(spec.node_selector.unwrap()["disk"], "ssd");
        assert_eq!(spec.restart_policy.as_deref(), Some("OnFailure"));
        let off = PodSettings {
            shell_enabled: false,
            ..settings()
        };
        let spec = pod(&container(|_| {}), &off, "job-1-0f3a9-abcde")
            .unwrap()
            .spec
            .unwrap();
        assert!(
            spec.containers[0]
                .command
                .as_ref()
                .unwrap()
                .contains(&"--spawn-disabled".to_owned())
        );
    }

    #[test]
    fn children_are_owned_labelled_and_named_per_run() {
        let c = container(|_| {});
        let pod = pod(&c, &settings(), "job-1-0f3a9-abcde").unwrap();
        assert_eq!(pod.metadata.name.as_deref(), Some("job-1-0f3a9"));
        let owner = &pod.metadata.owner_references.unwrap()[0];
        assert_eq!((owner.kind.as_str(), owner.controller), ("Container", Some(true)));
        assert_eq!(pod.metadata.labels.unwrap()[LABEL_NAME], "job-1");
        assert_eq!(pod.metadata.annotations.unwrap()["prometheus.io/port"], "7444");
        let secret = secret(&c, "ab".repeat(32).as_str(), "CA", Some("https://router:8443")).unwrap();
        assert_eq!(
            (
                secret.metadata.name.as_deref(),
                secret.metadata.generate_name.as_deref()
            ),
            (None, Some("job-1-0f3a9-"))
        );
        let mounted: Vec<_> = pod
            .spec
            .as_ref()
            .unwrap()
            .volumes
            .iter()
            .flatten()
            .filter_map(|v| v.secret.as_ref()?.secret_name.as_deref())
            .collect();
        assert_eq!(mounted, ["job-1-0f3a9-abcde"]);
        let data = secret.data.unwrap();
        assert_eq!(data["ctr_key"].0, "ab".repeat(32).as_bytes());
        assert_eq!(data["tunnel_url"].0, b"https://router:8443");
        let long = Container::new(&"n".repeat(253), c.spec.clone());
        let mut long = long;
        long.metadata.uid = c.metadata.uid.clone();
        assert!(child_name(&long).unwrap().len() <= 253);
        assert!(!labels(&long).contains_key(LABEL_NAME));
        assert_eq!(
            child_name(&Container::new("x", c.spec.clone())),
            Err(PodError::Missing("uid"))
        );
    }

    #[test]
    fn only_children_the_container_controls_are_its_own() {
        let c = container(|_| {});
        let ours = pod(&c, &settings(), "s").unwrap();
        assert!(is_controlled_by(&ours.metadata, &c));
        // Same name and labels, made by someone else: not adopted.
        let mut foreign = ours.metadata.clone();
        foreign.owner_references = None;
        assert!(!is_controlled_by(&foreign, &c));
        let mut other = ours.metadata.clone();
        other.owner_references.as_mut().unwrap()[0].uid = "another-container".into();
        assert!(!is_controlled_by(&other, &c));
        let mut not_controller = ours.metadata;
        not_controller.owner_references.as_mut().unwrap()[0].controller = Some(false);
        assert!(!is_controlled_by(&not_controller, &c));
    }
}
