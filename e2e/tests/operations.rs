//! Namespaces that platforms harden, on the real cluster (docs/chart.md,
//! docs/security.md): one release serves a namespace with a ResourceQuota
//! over CPU and memory and no LimitRange, and a namespace labelled Pod
//! Security `restricted`. A Container that sizes its workload runs there
//! with the chart's sidecar resources, or its own; one that does not is
//! told why by the quota. A non-root Container runs in the restricted
//! namespace and serves a shell as its own user; a root one is told what
//! Pod Security refused.

mod common;

use anyhow::{Result, ensure};
use common::release::*;
use hatchway_e2e::{TestNamespace, wait_until};
use serde_json::{Value, json};

/// A Container that runs until deleted, with `spec` merged into its spec.
fn container_with(name: &str, spec: Value) -> String {
    let mut c: Value = serde_json::from_str(&container(name, "exec sleep 3600", json!([]))).expect("JSON");
    for (key, value) in spec.as_object().expect("an object") {
        c["spec"][key] = value.clone();
    }
    c.to_string()
}

/// The resources of `name`'s pod's sidecar.
fn sidecar_resources(users: &TestNamespace, name: &str) -> Result<Value> {
    let pods = users.container_pods(name)?;
    Ok(pods["items"][0]["spec"]["initContainers"][0]["resources"].clone())
}

/// Waits until a condition of Container `name` says `needle`: its pod was
/// refused, and why.
fn wait_refusal(users: &TestNamespace, name: &str, needle: &str) -> Result<String> {
    wait_until(&format!("{name}'s refusal: {needle}"), WAIT, POLL, || {
        let c = get_container(users, name)?;
        let said = c["status"]["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|c| c["message"].as_str())
            .find(|m| m.contains(needle))
            .map(str::to_owned);
        Ok(said)
    })
}

#[test]
fn containers_run_in_quota_and_restricted_namespaces() -> Result<()> {
    let quota = TestNamespace::new("quota")?;
    quota.apply(
        &json!({
            "apiVersion": "v1",
            "kind": "ResourceQuota",
            "metadata": { "name": "compute" },
            "spec": { "hard": {
                "requests.cpu": "2", "requests.memory": "2Gi",
                "limits.cpu": "4", "limits.memory": "4Gi",
            } },
        })
        .to_string(),
    )?;
    let restricted = TestNamespace::new("restricted")?;
    restricted.kubectl(&[
        "label",
        "namespace",
        &restricted.name,
        "pod-security.kubernetes.io/enforce=restricted",
        "pod-security.kubernetes.io/enforce-version=latest",
    ])?;
    let served = format!("watchNamespaces={{{},{}}}", quota.name, restricted.name);
    let release = Release::install("ops", &quota, &["--set", &served])?;

    // The quota: every container must say its CPU and memory.
    let sized = json!({ "resources": {
        "requests": { "cpu": "50m", "memory": "32Mi" },
        "limits": { "cpu": "200m", "memory": "64Mi" },
    } });
    quota.apply(&container_with("sized", sized.clone()))?;
    let mut own = sized.clone();
    own["sidecar"] = json!({ "resources": {
        "requests": { "cpu": "20m", "memory": "40Mi" },
        "limits": { "cpu": "500m", "memory": "128Mi" },
    } });
    quota.apply(&container_with("own-sidecar", own.clone()))?;
    quota.apply(&container_with("unsized", json!({})))?;
    wait_phase(&quota, "sized", "Running")?;
    let chart_default = json!({
        "requests": { "cpu": "10m", "memory": "32Mi" },
        "limits": { "cpu": "1", "memory": "256Mi" },
    });
    let got = sidecar_resources(&quota, "sized")?;
    ensure!(got == chart_default, "the chart's sidecar resources: {got}");
    wait_phase(&quota, "own-sidecar", "Running")?;
    let got = sidecar_resources(&quota, "own-sidecar")?;
    ensure!(
        got == own["sidecar"]["resources"],
        "the Container's own sidecar resources: {got}"
    );
    let why = wait_refusal(&quota, "unsized", "failed quota: compute")?;
    ensure!(
        why.contains("workload"),
        "the quota's refusal names the workload: {why}"
    );
    eprintln!("unsized: {why}");

    // Pod Security `restricted`: a non-root Container runs, and its shell
    // is its own user's.
    let alice = User::new(&restricted, &release, "alice", Some("edit"))?;
    let non_root = json!({ "pod": { "securityContext": {
        "runAsNonRoot": true, "runAsUser": 1000, "runAsGroup": 1000,
    } } });
    restricted.apply(&container_with("non-root", non_root))?;
    restricted.apply(&container_with("root", json!({})))?;
    wait_phase(&restricted, "non-root", "Running")?;
    alice.wait_rights("non-root")?;
    let out = alice.run(&["shell", "non-root", "--", "id -u; id -g; exit 4"])?;
    ensure!(
        out.status.code() == Some(4)
            && stdout(&out).split_whitespace().collect::<Vec<_>>() == ["1000", "1000"],
        "a shell in the restricted namespace: {}",
        show(&out)
    );
    let why = wait_refusal(&restricted, "root", "violates PodSecurity \"restricted:latest\"")?;
    ensure!(
        why.contains("runAsNonRoot"),
        "Pod Security's refusal names runAsNonRoot: {why}"
    );
    eprintln!("root: {why}");

    quota.passed();
    restricted.passed();
    release.ns.passed();
    Ok(())
}
