//! The router's Kubernetes implementations against the real cluster:
//! `KubeAuth` (TokenReview, SubjectAccessReview) and `CachedAuth` over it,
//! `KubeCluster` (Containers by name and UID, status by server-side apply,
//! saved logs in both modes, replicas from EndpointSlices).
//!
//! Tests are plain `#[test]`s that own a tokio runtime: `KubeCluster`'s
//! watchers run on its worker threads while the test thread runs kubectl
//! and polls with `wait_until` (conditions with deadlines, never bare sleeps).

mod common;

use common::{client, ensure_crd, grant, runtime};

use std::time::{Duration, SystemTime};

use anyhow::{Context, Result, bail, ensure};
use futures::StreamExt;
use hatchway_api::crd::{Container, ContainerStatus, GatewayStatus, Phase};
use hatchway_e2e::{TestNamespace, WORKLOAD_IMAGE, kubectl_json, wait_until};
use hatchway_operator::router::auth::cache::CachedAuth;
use hatchway_operator::router::auth::kube::KubeAuth;
use hatchway_operator::router::auth::{Auth, AuthError, Permission, User};
use hatchway_operator::router::cluster::kube::{KubeCluster, KubeClusterConfig, ReplicaService};
use hatchway_operator::router::cluster::{Cluster, LogQuery, SavedLogs};
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use serde_json::json;
use tokio::runtime::Runtime;

const POLL: Duration = Duration::from_millis(200);
const WAIT: Duration = Duration::from_secs(60);

/// Creates Container `name` in `ns` (polling: right after the CRD is
/// established, discovery may lag) and returns its UID.
fn create_container(ns: &TestNamespace, name: &str) -> Result<String> {
    let manifest = json!({
        "apiVersion": "hatchway.dev/v1alpha1",
        "kind": "Container",
        "metadata": { "name": name },
        "spec": { "image": WORKLOAD_IMAGE, "command": ["sh", "-c", "echo hello"] },
    })
    .to_string();
    wait_until("the Container kind to be served", WAIT, POLL, || {
        Ok(Some(ns.apply(&manifest)?))
    })?;
    let uid = ns.kubectl(&[
        "get",
        "containers.hatchway.dev",
        name,
        "-o",
        "jsonpath={.metadata.uid}",
    ])?;
    ensure!(!uid.is_empty(), "no UID for {name}");
    Ok(uid)
}

fn name_of(c: &Container) -> (&str, &str) {
    (
        c.metadata.namespace.as_deref().unwrap_or_default(),
        c.metadata.name.as_deref().unwrap_or_default(),
    )
}

// --- KubeAuth and CachedAuth -------------------------------------------------

/// A ServiceAccount `shell-user` that may `create containers/shell` (and
/// nothing else on Containers) and one, `nobody`, with no rights.
fn auth_namespace() -> Result<TestNamespace> {
    let ns = TestNamespace::new("rkauth")?;
    ns.kubectl(&["create", "serviceaccount", "shell-user"])?;
    ns.kubectl(&["create", "serviceaccount", "nobody"])?;
    grant(
        &ns,
        "shell-user",
        "container-shell",
        &[("create", &["containers/shell"])],
    )?;
    Ok(ns)
}

fn token(ns: &TestNamespace, sa: &str, audience: Option<&str>) -> Result<String> {
    let mut args = vec!["create", "token", sa, "--duration=10m"];
    let audience_arg;
    if let Some(a) = audience {
        audience_arg = format!("--audience={a}");
        args.push(&audience_arg);
    }
    Ok(ns.kubectl(&args)?.trim().to_owned())
}

/// What one `Auth` says about the test's users, asked the same way for
/// `KubeAuth` and `CachedAuth`.
fn check_auth(
    rt: &Runtime,
    auth: &dyn Auth,
    ns: &TestNamespace,
    shell_token: &str,
    nobody_token: &str,
) -> Result<()> {
    let user = rt.block_on(auth.authenticate(shell_token))?;
    ensure!(
        user.username == format!("system:serviceaccount:{}:shell-user", ns.name),
        "user {user:?}"
    );
    ensure!(!user.uid.is_empty(), "a ServiceAccount token has a UID: {user:?}");
    ensure!(
        user.groups
            .contains(&format!("system:serviceaccounts:{}", ns.name)),
        "groups {:?}",
        user.groups
    );
    // The RBAC authorizer sees a new binding a moment later: poll.
    wait_until("the shell permission to be granted", WAIT, POLL, || {
        Ok(rt
            .block_on(auth.authorize(&user, &ns.name, "web", Permission::SHELL))?
            .then_some(()))
    })?;
    for (namespace, permission) in [
        (ns.name.as_str(), Permission::PORTFORWARD),
        (ns.name.as_str(), Permission::LOG),
        (ns.name.as_str(), Permission::PROXY_GET),
        ("default", Permission::SHELL),
    ] {
        let allowed = rt.block_on(auth.authorize(&user, namespace, "web", permission))?;
        ensure!(!allowed, "{permission} in {namespace} allowed");
    }

    let nobody = rt.block_on(auth.authenticate(nobody_token))?;
    ensure!(nobody.username.ends_with(":nobody"), "{nobody:?}");
    let allowed = rt.block_on(auth.authorize(&nobody, &ns.name, "web", Permission::SHELL))?;
    ensure!(!allowed, "nobody may open a shell");

    for bad in ["garbage", &format!("{shell_token}x")] {
        match rt.block_on(auth.authenticate(bad)) {
            Err(AuthError::Unauthenticated(msg)) => {
                ensure!(msg.starts_with("token rejected by the cluster"), "{msg}");
                ensure!(!msg.contains(shell_token), "the message repeats the token: {msg}");
            }
            other => bail!("a forged token gave {other:?}"),
        }
    }
    Ok(())
}

#[test]
fn kube_auth_reviews_tokens_and_access() -> Result<()> {
    let rt = runtime();
    let client = client(&rt)?;
    let ns = auth_namespace()?;
    let shell_token = token(&ns, "shell-user", None)?;
    let nobody_token = token(&ns, "nobody", None)?;

    let kube_auth = KubeAuth::new(client.clone(), Vec::new());
    check_auth(&rt, &kube_auth, &ns, &shell_token, &nobody_token)?;
    // The same answers through the cache (asked twice: hits too).
    let cached = CachedAuth::new(KubeAuth::new(client, Vec::new()), Duration::from_secs(30), 100);
    check_auth(&rt, &cached, &ns, &shell_token, &nobody_token)?;
    check_auth(&rt, &cached, &ns, &shell_token, &nobody_token)?;
    let (authn, authz) = cached.len();
    ensure!(
        authn == 4 && authz == 6,
        "cached {authn} authentications, {authz} authorizations"
    );
    ns.passed();
    Ok(())
}

#[test]
fn kube_auth_checks_audiences() -> Result<()> {
    let rt = runtime();
    let client = client(&rt)?;
    let ns = TestNamespace::new("rkaud")?;
    ns.kubectl(&["create", "serviceaccount", "robot"])?;
    let ours = token(&ns, "robot", Some("hatchway-e2e"))?;
    let apiservers = token(&ns, "robot", None)?;
    let robot = format!("system:serviceaccount:{}:robot", ns.name);

    let with_audience = KubeAuth::new(client.clone(), vec!["hatchway-e2e".into()]);
    let user = rt.block_on(with_audience.authenticate(&ours))?;
    ensure!(user.username == robot, "{user:?}");
    let err = rt.block_on(with_audience.authenticate(&apiservers)).unwrap_err();
    ensure!(matches!(err, AuthError::Unauthenticated(_)), "{err:?}");

    // Without audiences, only the API server's own tokens pass.
    let plain = KubeAuth::new(client, Vec::new());
    ensure!(rt.block_on(plain.authenticate(&apiservers))?.username == robot);
    let err = rt.block_on(plain.authenticate(&ours)).unwrap_err();
    ensure!(matches!(err, AuthError::Unauthenticated(_)), "{err:?}");
    ns.passed();
    Ok(())
}

#[test]
fn an_unreachable_api_server_is_unavailable_and_not_cached() -> Result<()> {
    let rt = runtime();
    // Nothing listens on port 1.
    let config = kube::Config::new("https://127.0.0.1:1".parse()?);
    let client = rt.block_on(async { kube::Client::try_from(config) })?;
    let auth = CachedAuth::new(KubeAuth::new(client, Vec::new()), Duration::from_secs(30), 100);
    let token = "a-secret-token-value";
    for _ in 0..2 {
        match rt.block_on(auth.authenticate(token)) {
            Err(AuthError::Unavailable(msg)) => ensure!(!msg.contains(token), "{msg}"),
            other => bail!("expected Unavailable, got {other:?}"),
        }
        let user = User {
            username: "alice".into(),
            ..User::default()
        };
        let err = rt.block_on(auth.authorize(&user, "ns", "web", Permission::SHELL));
        ensure!(matches!(err, Err(AuthError::Unavailable(_))), "{err:?}");
    }
    ensure!(auth.is_empty(), "{auth:?}");
    Ok(())
}

// --- KubeCluster: Containers and status -------------------------------------

#[test]
fn kube_cluster_finds_containers_by_name_and_uid() -> Result<()> {
    ensure_crd()?;
    let rt = runtime();
    let client = client(&rt)?;
    let ns = TestNamespace::new("rkfind")?;
    let other = TestNamespace::new("rkfind2")?;
    let uid = create_container(&ns, "web")?;
    let other_uid = create_container(&other, "elsewhere")?;

    let only_ns = rt.block_on(async {
        KubeCluster::start(
            client.clone(),
            KubeClusterConfig {
                namespaces: Some(vec![ns.name.clone()]),
                ..KubeClusterConfig::default()
            },
        )
    });
    // By name: right away (from the API if the store has not listed yet).
    let found = rt
        .block_on(only_ns.container(&ns.name, "web"))?
        .context("web not found")?;
    ensure!(found.metadata.uid.as_deref() == Some(uid.as_str()));
    ensure!(rt.block_on(only_ns.container(&ns.name, "nope"))?.is_none());
    // By UID: once the watcher has it.
    let found = wait_until("the store to know web's UID", WAIT, POLL, || {
        Ok(rt.block_on(only_ns.container_by_uid(&uid))?)
    })?;
    ensure!(
        name_of(&found) == (ns.name.as_str(), "web"),
        "{:?}",
        found.metadata
    );
    ensure!(rt.block_on(only_ns.container_by_uid("no-such-uid"))?.is_none());
    rt.block_on(only_ns.wait_until_ready());
    // Another namespace is not served: not by name, not by UID.
    ensure!(
        rt.block_on(only_ns.container(&other.name, "elsewhere"))?
            .is_none()
    );
    ensure!(
        rt.block_on(only_ns.container_fresh(&other.name, "elsewhere"))?
            .is_none()
    );
    ensure!(rt.block_on(only_ns.container_by_uid(&other_uid))?.is_none());

    // One watcher per namespace, and one over all namespaces, see both;
    // once ready, the first list is in the UID index: no polling needed.
    let two = KubeClusterConfig {
        namespaces: Some(vec![ns.name.clone(), other.name.clone()]),
        ..KubeClusterConfig::default()
    };
    for config in [two, KubeClusterConfig::default()] {
        let cluster = rt.block_on(async { KubeCluster::start(client.clone(), config.clone()) });
        rt.block_on(cluster.wait_until_ready());
        for (uid, ns, name) in [(&uid, &ns.name, "web"), (&other_uid, &other.name, "elsewhere")] {
            let found = rt
                .block_on(cluster.container_by_uid(uid))?
                .with_context(|| format!("{config:?}: {ns}/{name} not in the index once ready"))?;
            ensure!(
                name_of(&found) == (ns.as_str(), name),
                "{config:?}: {:?}",
                found.metadata
            );
            ensure!(rt.block_on(cluster.container(ns, name))?.is_some(), "{config:?}");
        }
    }

    // A deleted Container leaves the store and the UID index.
    ns.kubectl(&["delete", "containers.hatchway.dev", "web", "--wait=true"])?;
    wait_until("web to leave the store", WAIT, POLL, || {
        Ok(rt
            .block_on(only_ns.container_by_uid(&uid))?
            .is_none()
            .then_some(()))
    })?;
    ensure!(rt.block_on(only_ns.container(&ns.name, "web"))?.is_none());
    ns.passed();
    other.passed();
    Ok(())
}

fn status_of(ns: &TestNamespace, name: &str) -> Result<serde_json::Value> {
    let got = kubectl_json(&[
        "-n",
        &ns.name,
        "get",
        "containers.hatchway.dev",
        name,
        "-o",
        "json",
    ])?;
    Ok(got["status"].clone())
}

#[test]
fn kube_cluster_applies_status_with_a_field_manager() -> Result<()> {
    /// This test's own field manager.
    const MANAGER: &str = "hatchway-e2e-router";
    ensure_crd()?;
    let rt = runtime();
    let client = client(&rt)?;
    let ns = TestNamespace::new("rkstatus")?;
    create_container(&ns, "web")?;
    let cluster = rt.block_on(async {
        KubeCluster::start(
            client,
            KubeClusterConfig {
                namespaces: Some(vec![ns.name.clone()]),
                ..KubeClusterConfig::default()
            },
        )
    });
    rt.block_on(cluster.wait_until_ready());

    let tunnel = "tunnel https://10.244.0.99:8443";
    let with_tunnel = |status: ContainerStatus| ContainerStatus {
        gateway: Some(GatewayStatus {
            tunnel: Some(tunnel.to_owned()),
            ..GatewayStatus::default()
        }),
        interactive_session_started: true,
        ..status
    };
    rt.block_on(cluster.apply_status(
        &ns.name,
        "web",
        MANAGER,
        with_tunnel(ContainerStatus::listening(&[8080])),
    ))?;
    let status = status_of(&ns, "web")?;
    ensure!(status["gateway"]["tunnel"] == tunnel, "{status}");
    ensure!(
        status["listeningPorts"] == json!([{ "port": 8080, "protocol": "TCP" }]),
        "{status}"
    );
    ensure!(status["interactiveSessionStarted"] == true, "{status}");
    let meta = kubectl_json(&[
        "-n",
        &ns.name,
        "get",
        "containers.hatchway.dev",
        "web",
        "-o",
        "json",
        "--show-managed-fields",
    ])?;
    let managers = meta["metadata"]["managedFields"]
        .as_array()
        .context("managedFields")?;
    ensure!(
        managers
            .iter()
            .any(|m| m["manager"] == MANAGER && m["operation"] == "Apply" && m["subresource"] == "status"),
        "managers: {managers:?}"
    );

    // container_fresh sees the write at once; the store catches up.
    let fresh = rt
        .block_on(cluster.container_fresh(&ns.name, "web"))?
        .context("fresh")?;
    let fresh_status = fresh.status.context("status")?;
    ensure!(fresh_status.interactive_session_started);
    ensure!(fresh_status.listening_ports.len() == 1);
    wait_until("the store to see the status", WAIT, POLL, || {
        let c = rt.block_on(cluster.container(&ns.name, "web"))?;
        Ok(c.and_then(|c| c.status)
            .filter(|s| s.interactive_session_started)
            .map(|_| ()))
    })?;

    let running = ContainerStatus {
        phase: Some(Phase::Running),
        ..ContainerStatus::default()
    };
    // Another manager's field stays when the router applies again; the
    // router's own fields it no longer names are removed (server-side
    // apply), and forcing takes over a field another manager owns.
    rt.block_on(cluster.apply_status(&ns.name, "web", "hatchway-e2e-other", running.clone()))?;
    rt.block_on(cluster.apply_status(&ns.name, "web", MANAGER, with_tunnel(ContainerStatus::exited(3))))?;
    let status = status_of(&ns, "web")?;
    ensure!(status["phase"] == "Running", "{status}");
    ensure!(status["exitCode"] == 3, "{status}");
    ensure!(status.get("listeningPorts").is_none(), "{status}");
    rt.block_on(cluster.apply_status(
        &ns.name,
        "web",
        MANAGER,
        ContainerStatus {
            phase: Some(Phase::Failed),
            ..ContainerStatus::default()
        },
    ))?;
    ensure!(status_of(&ns, "web")?["phase"] == "Failed");

    // A missing Container is an error, not a silent no-op.
    let err = rt.block_on(cluster.apply_status(&ns.name, "nope", MANAGER, running));
    ensure!(err.is_err(), "apply_status of a missing Container succeeded");
    ns.passed();
    Ok(())
}

// --- KubeCluster: saved logs -------------------------------------------------

/// A finished pod owned by Container `owner` (UID `uid`) whose `workload`
/// container wrote `out` to stdout and `err` to stderr.
fn finished_pod(ns: &TestNamespace, pod: &str, owner: Option<(&str, &str)>) -> Result<()> {
    let owner_refs = match owner {
        Some((name, uid)) => format!(
            "ownerReferences:\n  - {{ apiVersion: hatchway.dev/v1alpha1, kind: Container, name: {name}, uid: {uid} }}"
        ),
        None => String::new(),
    };
    ns.apply(&format!(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: {pod}
  {owner_refs}
spec:
  restartPolicy: Never
  terminationGracePeriodSeconds: 1
  containers:
  - name: workload
    image: {WORKLOAD_IMAGE}
    imagePullPolicy: Never
    command: [sh, -c, "echo out; echo err >&2"]
"#
    ))?;
    wait_until("the pod to finish", WAIT, POLL, || {
        let phase = ns.kubectl(&["get", "pod", pod, "-o", "jsonpath={.status.phase}"])?;
        match phase.as_str() {
            "Succeeded" => Ok(Some(())),
            "Failed" => bail!("pod {pod} failed:\n{}", ns.diagnostics()),
            _ => Ok(None),
        }
    })
}

fn with_pod_name(
    rt: &Runtime,
    cluster: &KubeCluster,
    ns: &TestNamespace,
    pod: Option<&str>,
) -> Result<Container> {
    let status = ContainerStatus {
        pod_name: pod.map(str::to_owned),
        ..ContainerStatus::default()
    };
    rt.block_on(cluster.apply_status(&ns.name, "job", "hatchway-e2e-reconciler", status))?;
    rt.block_on(cluster.container_fresh(&ns.name, "job"))?
        .context("job is gone")
}

/// One saved log file, read to its end through its own stream.
async fn read_file(cluster: &KubeCluster, logs: &SavedLogs, file: &str) -> Result<Vec<u8>> {
    let mut stream = cluster
        .saved_log_stream(logs, file, LogQuery::default())
        .await?
        .with_context(|| format!("{file} cannot be opened"))?;
    let mut content = Vec::new();
    while let Some(chunk) = stream.next().await {
        content.extend_from_slice(&chunk?);
    }
    Ok(content)
}

/// Files' names and contents.
type Files = Vec<(String, String)>;

/// The saved logs of `job` read in full through `cluster`: the listing
/// (empty when there are none) and each file's content.
fn files(rt: &Runtime, cluster: &KubeCluster, job: &Container) -> Result<(Option<SavedLogs>, Files)> {
    rt.block_on(async {
        let Some(logs) = cluster.saved_logs(job).await? else {
            return Ok((None, Vec::new()));
        };
        let mut files = Vec::new();
        for file in &logs.files {
            let content = read_file(cluster, &logs, file).await?;
            files.push((file.clone(), String::from_utf8_lossy(&content).into_owned()));
        }
        Ok((Some(logs), files))
    })
}

#[test]
fn kube_cluster_serves_saved_logs_split_and_combined() -> Result<()> {
    ensure_crd()?;
    let rt = runtime();
    let client = client(&rt)?;
    let ns = TestNamespace::new("rklogs")?;
    let uid = create_container(&ns, "job")?;
    finished_pod(&ns, "job-pod", Some(("job", &uid)))?;
    finished_pod(&ns, "stranger", None)?;
    let start = |split_log_streams| {
        rt.block_on(async {
            KubeCluster::start(
                client.clone(),
                KubeClusterConfig {
                    namespaces: Some(vec![ns.name.clone()]),
                    split_log_streams,
                    ..KubeClusterConfig::default()
                },
            )
        })
    };
    let split = start(true);
    let combined = start(false);

    let pods: Api<Pod> = Api::namespaced(client, &ns.name);
    let pod = rt.block_on(pods.get("job-pod"))?;
    let finished_at = pod
        .status
        .clone()
        .and_then(|s| s.container_statuses)
        .and_then(|c| c.into_iter().find(|c| c.name == "workload"))
        .and_then(|c| c.state?.terminated?.finished_at)
        .context("no finishedAt")?;
    let finished_at = SystemTime::from(finished_at.0);

    let job = with_pod_name(&rt, &split, &ns, Some("job-pod"))?;
    let (logs, got) = files(&rt, &split, &job)?;
    ensure!(
        got == [
            ("stdout.txt".to_owned(), "out\n".to_owned()),
            ("stderr.txt".to_owned(), "err\n".to_owned())
        ],
        "split: {got:?} (is the PodLogsQuerySplitStreams feature gate on? `e2e/cluster status`)",
    );
    let logs = logs.context("no saved logs")?;
    ensure!(logs.modified == Some(finished_at) && logs.finished, "{logs:?}");
    ensure!(
        logs.pod_uid == pod.metadata.uid.clone().unwrap_or_default(),
        "{logs:?}"
    );
    // A file alone is its own stream: stderr without stdout.
    let only = rt.block_on(read_file(&split, &logs, "stderr.txt"))?;
    ensure!(
        only == b"err\n",
        "stderr alone: {:?}",
        String::from_utf8_lossy(&only)
    );
    ensure!(
        rt.block_on(split.saved_log_stream(&logs, "../secrets", LogQuery::default()))?
            .is_none(),
        "only listed files can be opened"
    );

    let (logs, got) = files(&rt, &combined, &job)?;
    ensure!(got.len() == 1 && got[0].0 == "output.txt", "combined: {got:?}");
    // Both lines, in whatever order the runtime interleaved the streams.
    let mut lines: Vec<&str> = got[0].1.lines().collect();
    lines.sort();
    ensure!(lines == ["err", "out"], "combined: {got:?}");
    ensure!(logs.context("no saved logs")?.modified == Some(finished_at));

    // No pod named, a pod that does not exist, a pod the Container does not
    // own: no saved logs, and no error.
    for pod in [None, Some("no-such-pod"), Some("stranger")] {
        let job = with_pod_name(&rt, &split, &ns, pod)?;
        for cluster in [&split, &combined] {
            let (logs, got) = files(&rt, cluster, &job)?;
            ensure!(logs.is_none(), "{pod:?}: {logs:?} {got:?}");
        }
    }
    ns.passed();
    Ok(())
}

// --- KubeCluster: replicas ------------------------------------------------------

#[test]
fn kube_cluster_lists_ready_replicas_of_the_headless_service() -> Result<()> {
    let rt = runtime();
    let client = client(&rt)?;
    let ns = TestNamespace::new("rkreplicas")?;
    let pod = |name: &str, ready: bool| {
        let probe = if ready {
            "httpGet: { path: /, port: 8080 }"
        } else {
            "exec: { command: [\"false\"] }"
        };
        format!(
            r#"apiVersion: v1
kind: Pod
metadata:
  name: {name}
  labels: {{ app: router }}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: router
    image: {WORKLOAD_IMAGE}
    imagePullPolicy: Never
    ports: [{{ containerPort: 8080, name: peer }}]
    readinessProbe:
      {probe}
      periodSeconds: 1
---
"#
        )
    };
    ns.apply(&format!(
        r#"{}{}apiVersion: v1
kind: Service
metadata: {{ name: router }}
spec:
  clusterIP: None
  selector: {{ app: router }}
  ports:
  - {{ name: metrics, port: 9090, targetPort: 9090 }}
  - {{ name: peer, port: 8443, targetPort: peer }}
"#,
        pod("ready", true),
        pod("unready", false)
    ))?;
    let cluster = rt.block_on(async {
        KubeCluster::start(
            client.clone(),
            KubeClusterConfig {
                namespaces: Some(vec![ns.name.clone()]),
                replica_service: Some(ReplicaService {
                    namespace: ns.name.clone(),
                    name: "router".into(),
                    port_name: "peer".into(),
                }),
                split_log_streams: false,
            },
        )
    });
    ns.wait_pod_ready("ready", WAIT)?;
    let ip = ns.kubectl(&["get", "pod", "ready", "-o", "jsonpath={.status.podIP}"])?;
    ensure!(!ip.is_empty(), "no pod IP");
    let expected = vec![format!("https://{ip}:8080")];
    wait_until("the ready replica to be listed", WAIT, POLL, || {
        Ok((cluster.replicas() == expected).then_some(()))
    })
    .with_context(|| format!("replicas {:?}", cluster.replicas()))?;

    // The unready pod is in the slice (ready: false) but not a replica.
    wait_until("both pods in the EndpointSlice", WAIT, POLL, || {
        let slices = kubectl_json(&[
            "-n",
            &ns.name,
            "get",
            "endpointslices",
            "-l",
            "kubernetes.io/service-name=router",
            "-o",
            "json",
        ])?;
        let endpoints: usize = slices["items"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|s| s["endpoints"].as_array().map_or(0, Vec::len))
            .sum();
        Ok((endpoints == 2).then_some(()))
    })?;
    // The watcher has seen that slice version once it lists it too: ask a
    // fresh watcher, which must agree with the first.
    let fresh = rt.block_on(async {
        KubeCluster::start(
            client.clone(),
            KubeClusterConfig {
                replica_service: Some(ReplicaService {
                    namespace: ns.name.clone(),
                    name: "router".into(),
                    port_name: "peer".into(),
                }),
                namespaces: Some(Vec::new()),
                split_log_streams: false,
            },
        )
    });
    wait_until("a fresh watcher to list the replica", WAIT, POLL, || {
        Ok((fresh.replicas() == expected).then_some(()))
    })?;
    ensure!(cluster.replicas() == expected, "{:?}", cluster.replicas());

    // The replica goes away.
    ns.kubectl(&["delete", "pod", "ready", "--wait=false"])?;
    wait_until("the replica list to empty", WAIT, POLL, || {
        Ok(cluster.replicas().is_empty().then_some(()))
    })?;

    // Without a replica Service there are no replicas.
    let none = rt.block_on(async { KubeCluster::start(client, KubeClusterConfig::default()) });
    ensure!(none.replicas().is_empty());
    ns.passed();
    Ok(())
}

// --- The router over HTTPS with the real reviews -----------------------------

/// The router served in-process with `KubeCluster` and `CachedAuth` over
/// `KubeAuth`, asked by curl (an outside client) as three users: one with
/// rights, one without, one with a forged token. Each gets the refusal its
/// case calls for, with the router's message.
#[test]
fn the_router_authenticates_and_authorizes_with_the_real_cluster() -> Result<()> {
    use hatchway_api::proof::RootSecret;
    use hatchway_operator::router::tls::RouterTls;
    use hatchway_operator::router::{Router, Settings, server};

    ensure_crd()?;
    let rt = runtime();
    let client = client(&rt)?;
    let ns = auth_namespace()?;
    create_container(&ns, "queued")?;
    // `shell-user` may also read logs here, to see an allowed request
    // reach routing.
    grant(
        &ns,
        "shell-user",
        "container-log",
        &[("get", &["containers/log"])],
    )?;
    let allowed = token(&ns, "shell-user", None)?;
    let nobody = token(&ns, "nobody", None)?;

    let dir = tempfile::tempdir()?;
    let tls = RouterTls::generate(&["localhost".into()])?;
    let ca = dir.path().join("ca.crt");
    std::fs::write(&ca, &tls.ca_pem)?;
    // The cluster's watchers are spawned on this runtime.
    let _runtime = rt.enter();
    let cluster = KubeCluster::start(
        client.clone(),
        KubeClusterConfig {
            namespaces: Some(vec![ns.name.clone()]),
            replica_service: None,
            split_log_streams: true,
        },
    );
    let auth = CachedAuth::new(KubeAuth::new(client, Vec::new()), Duration::from_secs(10), 100);
    let shutdown = tokio_util::sync::CancellationToken::new();
    let addr = rt.block_on(async {
        cluster.wait_until_ready().await;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let router = Router::new(
            Settings::new(format!("https://{addr}")),
            cluster.clone(),
            std::sync::Arc::new(auth),
            RootSecret::new(vec![7u8; 32]),
            tls.peer_client_config()?,
        );
        tokio::spawn(server::serve(
            router,
            listener,
            tls.server_config()?,
            shutdown.clone(),
        ));
        anyhow::Ok(addr)
    })?;

    let curl = |token: &str, path: &str| -> Result<(u16, String)> {
        let out = std::process::Command::new("curl")
            .args(["-sS", "--max-time", "20", "--cacert"])
            .arg(&ca)
            .args(["--resolve", &format!("localhost:{}:127.0.0.1", addr.port())])
            .args(["-H", &format!("Authorization: Bearer {token}")])
            .args(["-w", "\n%{http_code}"])
            .arg(format!("https://localhost:{}{path}", addr.port()))
            .output()?;
        ensure!(
            out.status.success(),
            "curl: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8(out.stdout)?;
        let (body, code) = text.rsplit_once('\n').context("no status line")?;
        Ok((code.parse()?, body.trim().to_owned()))
    };
    let logs = format!("/v1/namespaces/{}/containers/queued/log/", ns.name);
    let missing = format!("/v1/namespaces/{}/containers/missing/log/", ns.name);

    // Allowed, not running yet: an empty log directory (listing is empty).
    let (code, body) = curl(&allowed, &logs)?;
    ensure!(code == 200 && body.is_empty(), "allowed: {code} {body:?}");
    let (code, body) = curl(&allowed, &missing)?;
    ensure!(
        code == 404 && body.contains("not found"),
        "missing: {code} {body:?}"
    );
    let (code, body) = curl(&nobody, &logs)?;
    ensure!(
        code == 403 && body.contains("may not get containers/log") && body.contains(":nobody"),
        "nobody: {code} {body:?}"
    );
    let (code, body) = curl("forged.token.value", &logs)?;
    ensure!(
        code == 401 && body.starts_with("authentication failed"),
        "forged: {code} {body:?}"
    );
    shutdown.cancel();
    ns.passed();
    Ok(())
}
