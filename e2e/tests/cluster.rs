//! The e2e cluster itself: node, pods, exec, Service DNS and routing,
//! port-forward, TokenReview/SubjectAccessReview, and the Container CRD.
//! Each test has its own namespace, so nextest runs them in parallel.

use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use hatchway_e2e::{
    PortForward, TestNamespace, WORKLOAD_IMAGE, WORKLOAD_PAGE, client_pod_manifest, http_get, kubectl,
    kubectl_fails, kubectl_json, kubectl_stdin, wait_until, web_manifest,
};
use serde_json::{Value, json};

const ROLLOUT: Duration = Duration::from_secs(120);
const POLL: Duration = Duration::from_millis(500);

#[test]
fn node_is_ready() -> Result<()> {
    let nodes = kubectl_json(&["get", "nodes", "-o", "json"])?;
    let items = nodes["items"].as_array().context("no items")?;
    ensure!(items.len() == 1, "expected one node, got {}", items.len());
    let name = items[0]["metadata"]["name"]
        .as_str()
        .context("node name")?
        .to_string();

    let node = wait_until("the node to be Ready", Duration::from_secs(60), POLL, || {
        let node = kubectl_json(&["get", "node", &name, "-o", "json"])?;
        let ready = node["status"]["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|c| c["type"] == "Ready" && c["status"] == "True");
        Ok(ready.then_some(node))
    })?;
    let info = &node["status"]["nodeInfo"];
    let kubelet = info["kubeletVersion"].as_str().unwrap_or_default();
    ensure!(kubelet.starts_with("v1.34."), "kubelet version {kubelet}");
    let runtime = info["containerRuntimeVersion"].as_str().unwrap_or_default();
    ensure!(runtime.starts_with("containerd://"), "runtime {runtime}");
    Ok(())
}

#[test]
fn deployment_runs_and_exec_works() -> Result<()> {
    let ns = TestNamespace::new("deploy")?;
    ns.apply(&web_manifest("web", false))?;
    ns.wait_rollout("web", ROLLOUT)?;

    let pods = kubectl_json(&["-n", &ns.name, "get", "pods", "-l", "app=web", "-o", "json"])?;
    let pod = &pods["items"][0];
    ensure!(
        pod["status"]["phase"] == "Running",
        "pod not Running:\n{}",
        ns.diagnostics()
    );
    ensure!(
        pod["status"]["containerStatuses"][0]["image"]
            .as_str()
            .is_some_and(|i| i.contains("hatchway/workload")),
        "unexpected image: {}",
        pod["status"]["containerStatuses"][0]["image"]
    );

    let out = ns.exec(
        "deploy/web",
        &["sh", "-c", "echo hello from $(hostname) as $(id -u)"],
    )?;
    ensure!(out.trim().starts_with("hello from web-"), "exec printed {out:?}");
    ensure!(out.trim().ends_with("as 0"), "exec printed {out:?}");

    // The command's exit status comes back through exec.
    let err = kubectl_fails(
        &["-n", &ns.name, "exec", "deploy/web", "--", "sh", "-c", "exit 3"],
        None,
    )?;
    ensure!(err.contains("exit code 3"), "exec of `exit 3` said: {err}");
    ns.passed();
    Ok(())
}

#[test]
fn service_is_reachable_by_dns_name_from_another_pod() -> Result<()> {
    let ns = TestNamespace::new("svc")?;
    ns.apply(&format!(
        "{}---\n{}",
        web_manifest("web", true),
        client_pod_manifest("client")
    ))?;
    ns.wait_rollout("web", ROLLOUT)?;
    ns.wait_pod_ready("client", ROLLOUT)?;

    let cluster_ip = ns.kubectl(&["get", "service", "web", "-o", "jsonpath={.spec.clusterIP}"])?;
    ensure!(cluster_ip.starts_with("10.96."), "ClusterIP {cluster_ip:?}");
    let fqdn = format!("web.{}.svc.cluster.local", ns.name);

    // CoreDNS (itself behind the kube-dns ClusterIP) answers with the ClusterIP.
    let lookup = wait_until(
        "the Service's DNS name to resolve",
        Duration::from_secs(60),
        POLL,
        || {
            let out = ns.exec("client", &["nslookup", &fqdn])?;
            Ok(out.contains(cluster_ip.as_str()).then_some(out))
        },
    )
    .map_err(|e| e.context(ns.diagnostics()))?;
    ensure!(
        lookup.contains("10.96.0.10"),
        "not answered by the cluster DNS: {lookup}"
    );

    // pod -> ClusterIP (by name) -> pod on the same bridge. kube-proxy may
    // program the rules a moment after the endpoint turns ready: poll.
    // (busybox wget's own -T option crashes this build; `timeout` bounds it.)
    let url = format!("http://{fqdn}/");
    let body = wait_until(
        "the Service to answer by DNS name",
        Duration::from_secs(60),
        POLL,
        || {
            let out = ns.exec("client", &["timeout", "10", "wget", "-qO-", &url])?;
            Ok(out.contains(WORKLOAD_PAGE).then_some(out))
        },
    )
    .map_err(|e| e.context(ns.diagnostics()))?;
    ensure!(body.contains(WORKLOAD_PAGE));

    // The short name through the pod's DNS search path works too.
    let out = ns.exec("client", &["timeout", "10", "wget", "-qO-", "http://web/"])?;
    ensure!(out.contains(WORKLOAD_PAGE), "http://web/ gave {out:?}");

    // Hairpin: the backing pod reaches itself through its own Service.
    let out = ns.exec("deploy/web", &["timeout", "10", "wget", "-qO-", "http://web/"])?;
    ensure!(
        out.contains(WORKLOAD_PAGE),
        "hairpin through the Service gave {out:?}"
    );
    ns.passed();
    Ok(())
}

#[test]
fn port_forward_reaches_the_http_server() -> Result<()> {
    let ns = TestNamespace::new("pf")?;
    ns.apply(&web_manifest("web", false))?;
    ns.wait_rollout("web", ROLLOUT)?;

    let forward = PortForward::start(&ns.name, "deployment/web", 8080)?;
    let (status, body) = wait_until(
        "a page through kubectl port-forward",
        Duration::from_secs(30),
        POLL,
        || http_get(forward.local_port, "/").map(Some),
    )?;
    ensure!(status == 200, "status {status}, body {body:?}");
    ensure!(body.contains(WORKLOAD_PAGE), "body {body:?}");

    // A second request on a new connection through the same forward.
    let (status, _) = http_get(forward.local_port, "/index.html")?;
    ensure!(status == 200, "second request: status {status}");
    let (status, _) = http_get(forward.local_port, "/no-such-page")?;
    ensure!(status == 404, "missing page: status {status}");
    ns.passed();
    Ok(())
}

/// `kubectl create -f - -o json` of a review object; returns its status.
fn review(object: Value) -> Result<Value> {
    let out = kubectl_stdin(&["create", "-f", "-", "-o", "json"], Some(&object.to_string()))?;
    let value: Value = serde_json::from_str(&out)?;
    Ok(value["status"].clone())
}

fn access_review(user: &str, namespace: &str, verb: &str, resource: &str) -> Result<bool> {
    let status = review(json!({
        "apiVersion": "authorization.k8s.io/v1",
        "kind": "SubjectAccessReview",
        "spec": {
            "user": user,
            "groups": ["system:serviceaccounts", format!("system:serviceaccounts:{namespace}"), "system:authenticated"],
            "resourceAttributes": { "namespace": namespace, "verb": verb, "resource": resource },
        },
    }))?;
    status["allowed"]
        .as_bool()
        .context("SubjectAccessReview status has no `allowed`")
}

#[test]
fn token_review_and_subject_access_review() -> Result<()> {
    let ns = TestNamespace::new("authn")?;
    ns.kubectl(&["create", "serviceaccount", "robot"])?;
    ns.kubectl(&[
        "create",
        "role",
        "pod-reader",
        "--verb=get,list",
        "--resource=pods",
    ])?;
    ns.kubectl(&[
        "create",
        "rolebinding",
        "robot-reads-pods",
        "--role=pod-reader",
        &format!("--serviceaccount={}:robot", ns.name),
    ])?;
    let user = format!("system:serviceaccount:{}:robot", ns.name);

    // TokenReview of a bound ServiceAccount token.
    let token = ns.kubectl(&["create", "token", "robot", "--duration=10m"])?;
    let token = token.trim();
    ensure!(token.split('.').count() == 3, "not a JWT: {token:?}");
    let status = review(json!({
        "apiVersion": "authentication.k8s.io/v1",
        "kind": "TokenReview",
        "spec": { "token": token },
    }))?;
    ensure!(
        status["authenticated"] == true,
        "token not authenticated: {status}"
    );
    ensure!(status["user"]["username"] == user.as_str(), "user: {status}");
    let groups = status["user"]["groups"].to_string();
    ensure!(
        groups.contains(&format!("system:serviceaccounts:{}", ns.name)),
        "groups: {groups}"
    );

    // A forged token is not authenticated (and is not an error).
    let status = review(json!({
        "apiVersion": "authentication.k8s.io/v1",
        "kind": "TokenReview",
        "spec": { "token": format!("{token}x") },
    }))?;
    ensure!(
        status["authenticated"] != true,
        "forged token authenticated: {status}"
    );

    // SubjectAccessReview: allowed by the RoleBinding (the RBAC authorizer
    // sees a new binding a moment later: poll), denied otherwise.
    wait_until(
        "SubjectAccessReview to allow get pods",
        Duration::from_secs(30),
        POLL,
        || Ok(access_review(&user, &ns.name, "get", "pods")?.then_some(())),
    )?;
    ensure!(
        !access_review(&user, &ns.name, "delete", "pods")?,
        "delete pods allowed"
    );
    ensure!(
        !access_review(&user, &ns.name, "get", "secrets")?,
        "get secrets allowed"
    );
    ensure!(
        !access_review(&user, "kube-system", "get", "pods")?,
        "get pods in kube-system allowed"
    );
    ns.passed();
    Ok(())
}

fn container_manifest(name: &str, spec: Value) -> String {
    json!({
        "apiVersion": "hatchway.dev/v1alpha1",
        "kind": "Container",
        "metadata": { "name": name },
        "spec": spec,
    })
    .to_string()
}

#[test]
fn container_crd_applies_validates_and_keeps_spec_immutable() -> Result<()> {
    let crd = hatchway_e2e::repo_dir().join("crds/container.yaml");
    let crd = crd.to_str().context("path")?;
    kubectl(&["apply", "--server-side", "--force-conflicts", "-f", crd])?;
    kubectl(&[
        "wait",
        "--for=condition=Established",
        "crd/containers.hatchway.dev",
        "--timeout=60s",
    ])?;
    let ns = TestNamespace::new("crd")?;

    // A valid Container is stored and read back as written. (Right after the
    // CRD is established, discovery may lag a moment: poll the first apply.)
    let spec = json!({
        "image": WORKLOAD_IMAGE,
        "command": ["sh", "-c", "echo hello"],
        "args": ["one", "two"],
        "publishedPorts": [{ "port": 8080, "label": "Web" }],
    });
    let manifest = container_manifest("valid", spec.clone());
    wait_until(
        "the Container kind to be served",
        Duration::from_secs(30),
        POLL,
        || Ok(Some(ns.apply(&manifest)?)),
    )?;
    let got = kubectl_json(&[
        "-n",
        &ns.name,
        "get",
        "containers.hatchway.dev",
        "valid",
        "-o",
        "json",
    ])?;
    for field in ["image", "command", "args"] {
        ensure!(
            got["spec"][field] == spec[field],
            "spec.{field}: {}",
            got["spec"][field]
        );
    }
    ensure!(
        got["spec"]["publishedPorts"][0]["port"] == 8080,
        "{}",
        got["spec"]
    );
    // The schema's default fills in the access mode.
    ensure!(
        got["spec"]["publishedPorts"][0]["access"] == "private",
        "{}",
        got["spec"]
    );
    // The short name works too.
    ns.kubectl(&["get", "hctr", "valid"])?;

    // Invalid objects are refused by the schema.
    let refused = |name: &str, spec: Value, expect: &str| -> Result<()> {
        let manifest = container_manifest(name, spec);
        let err = kubectl_fails(&["-n", &ns.name, "create", "-f", "-"], Some(&manifest))?;
        if !err.contains(expect) {
            bail!("creating {name} failed, but not with {expect:?}: {err}");
        }
        Ok(())
    };
    refused(
        "empty-command",
        json!({ "image": WORKLOAD_IMAGE, "command": [] }),
        "spec.command",
    )?;
    refused("no-image", json!({ "command": ["true"] }), "spec.image")?;
    refused(
        "bad-port",
        json!({ "image": WORKLOAD_IMAGE, "command": ["true"], "publishedPorts": [{ "port": 70000 }] }),
        "spec.publishedPorts[0].port",
    )?;
    // A fragment or a second leading slash would carry a login link's code
    // away from the router or off the app's host.
    for (name, path) in [
        ("fragment-path", "/lab#x"),
        ("other-host-path", "//evil.example/"),
    ] {
        refused(
            name,
            json!({ "image": WORKLOAD_IMAGE, "command": ["true"],
                    "publishedPorts": [{ "port": 8080, "initialPath": path }] }),
            "spec.publishedPorts[0].initialPath",
        )?;
    }
    let listed = ns.kubectl(&["get", "containers.hatchway.dev", "-o", "name"])?;
    ensure!(
        listed.trim() == "container.hatchway.dev/valid",
        "stored: {listed:?}"
    );

    // The spec is immutable (CEL rule `self == oldSelf`).
    let err = kubectl_fails(
        &[
            "-n",
            &ns.name,
            "patch",
            "containers.hatchway.dev",
            "valid",
            "--type=merge",
            "-p",
            r#"{"spec":{"image":"localhost/other:1"}}"#,
        ],
        None,
    )?;
    ensure!(err.contains("spec is immutable"), "spec update said: {err}");
    // Metadata is not: labels may change.
    ns.kubectl(&["label", "containers.hatchway.dev", "valid", "team=e2e"])?;
    ns.passed();
    Ok(())
}

#[test]
fn helm_installs_a_chart() -> Result<()> {
    let helm = std::env::var("HATCHWAY_HELM").unwrap_or_else(|_| "helm".to_string());
    let run = |args: &[&str]| -> Result<String> {
        let out = std::process::Command::new(&helm)
            .env("KUBECONFIG", hatchway_e2e::kubeconfig())
            .args(args)
            .output()
            .with_context(|| format!("cannot run {helm} (is the e2e cluster's helm on PATH?)"))?;
        ensure!(
            out.status.success(),
            "helm {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    };
    let version = run(&["version", "--short"])?;
    ensure!(version.starts_with("v3."), "helm version {version:?}");

    // A one-template chart, installed and removed for real.
    let ns = TestNamespace::new("helm")?;
    let chart = tempfile::tempdir()?;
    std::fs::create_dir(chart.path().join("templates"))?;
    std::fs::write(
        chart.path().join("Chart.yaml"),
        "apiVersion: v2\nname: e2e-probe\nversion: 0.1.0\nkubeVersion: \">=1.34.0-0\"\n",
    )?;
    std::fs::write(
        chart.path().join("templates/configmap.yaml"),
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ .Release.Name }}-probe\ndata:\n  greeting: {{ .Values.greeting | quote }}\n",
    )?;
    std::fs::write(chart.path().join("values.yaml"), "greeting: hello\n")?;
    let chart_dir = chart.path().to_str().context("path")?;
    run(&[
        "install",
        "probe",
        chart_dir,
        "-n",
        &ns.name,
        "--set",
        "greeting=hi",
        "--wait",
        "--timeout",
        "60s",
    ])?;
    let value = ns.kubectl(&[
        "get",
        "configmap",
        "probe-probe",
        "-o",
        "jsonpath={.data.greeting}",
    ])?;
    ensure!(value == "hi", "ConfigMap greeting {value:?}");
    let list = run(&["list", "-n", &ns.name, "-o", "json"])?;
    let list: Value = serde_json::from_str(&list)?;
    ensure!(list[0]["status"] == "deployed", "helm list: {list}");
    run(&["uninstall", "probe", "-n", &ns.name, "--wait"])?;
    ensure!(
        kubectl_fails(&["-n", &ns.name, "get", "configmap", "probe-probe"], None)?.contains("NotFound"),
        "ConfigMap still there after uninstall"
    );
    ns.passed();
    Ok(())
}
