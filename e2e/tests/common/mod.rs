//! Shared by the e2e tests that use the operator's Rust parts in-process:
//! a tokio runtime, a kube client for the e2e cluster, and the CRD.

#![allow(dead_code)]

/// Chromium through the DevTools protocol.
pub mod cdp;
/// A helm release of the chart and its users.
pub mod release;
/// Reports of `make chaos` and `make load`.
pub mod results;

use std::sync::OnceLock;

use anyhow::{Context, Result};
use hatchway_e2e::{TestNamespace, kubectl};
use kube::config::{KubeConfigOptions, Kubeconfig};
use tokio::runtime::Runtime;

/// A runtime the test owns (tests are plain `#[test]`s that also run
/// kubectl and poll on their own thread).
pub fn runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime")
}

/// A client for the e2e cluster, from the same kubeconfig kubectl uses.
pub fn client(rt: &Runtime) -> Result<kube::Client> {
    let kubeconfig = Kubeconfig::read_from(hatchway_e2e::kubeconfig())?;
    // The client spawns its request buffer: build it inside the runtime.
    rt.block_on(async {
        let config = kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await?;
        Ok(kube::Client::try_from(config)?)
    })
}

/// The Container CRD, applied (idempotently: other tests apply it too)
/// and established.
pub fn ensure_crd() -> Result<()> {
    static DONE: OnceLock<()> = OnceLock::new();
    if DONE.get().is_some() {
        return Ok(());
    }
    let crd = hatchway_e2e::repo_dir().join("crds/container.yaml");
    let crd = crd.to_str().context("path")?;
    kubectl(&["apply", "--server-side", "--force-conflicts", "-f", crd])?;
    kubectl(&[
        "wait",
        "--for=condition=Established",
        "crd/containers.hatchway.dev",
        "--timeout=60s",
    ])?;
    let _ = DONE.set(());
    Ok(())
}

/// Gives ServiceAccount `sa` of `ns` a Role `role` (and its binding) with
/// `rules`: each a verb on some `containers/…` subresources of hatchway.dev.
pub fn grant(ns: &TestNamespace, sa: &str, role: &str, rules: &[(&str, &[&str])]) -> Result<()> {
    let rules: String = rules
        .iter()
        .map(|(verb, resources)| {
            format!(
                "- apiGroups: [hatchway.dev]\n  resources: [{}]\n  verbs: [{verb}]\n",
                resources.join(", ")
            )
        })
        .collect();
    ns.apply(&format!(
        r#"apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {{ name: {role} }}
rules:
{rules}---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {{ name: {sa}-{role} }}
roleRef: {{ apiGroup: rbac.authorization.k8s.io, kind: Role, name: {role} }}
subjects:
- {{ kind: ServiceAccount, name: {sa}, namespace: {ns} }}
"#,
        ns = ns.name
    ))?;
    Ok(())
}

/// The `kubectl-hatch` binary of this build (`make e2e` builds it; built
/// here on first use otherwise).
pub fn hatch_binary() -> Result<std::path::PathBuf> {
    let exe = std::env::current_exe()?;
    let bin = exe
        .parent()
        .and_then(|d| d.parent())
        .ok_or_else(|| anyhow::anyhow!("no target directory"))?
        .join("kubectl-hatch");
    if !bin.exists() {
        let status = std::process::Command::new(env!("CARGO"))
            .args([
                "build",
                "--quiet",
                "-p",
                "kubectl-hatch",
                "--bin",
                "kubectl-hatch",
            ])
            .status()?;
        anyhow::ensure!(status.success(), "building kubectl-hatch failed");
    }
    Ok(bin)
}

/// A kubeconfig for a user with `token`: the e2e cluster's server and CA,
/// `namespace` as the context's. Written to `dir/kubeconfig`.
pub fn user_kubeconfig(token: &str, namespace: &str, dir: &std::path::Path) -> Result<std::path::PathBuf> {
    let admin =
        hatchway_e2e::kubectl_json(&["config", "view", "--raw", "--minify", "--flatten", "-o", "json"])?;
    let cluster = admin["clusters"][0]["cluster"].clone();
    anyhow::ensure!(cluster["server"].is_string(), "no cluster in {admin}");
    let config = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "e2e", "cluster": cluster}],
        "users": [{"name": "user", "user": {"token": token}}],
        "contexts": [{"name": "e2e", "context": {"cluster": "e2e", "user": "user", "namespace": namespace}}],
        "current-context": "e2e",
    });
    let path = dir.join("kubeconfig");
    std::fs::write(&path, config.to_string())?;
    Ok(path)
}

/// `program` as a user with only `kubeconfig` runs it: no HATCHWAY_* from
/// the test's environment, kubectl-hatch's cache in `cache_dir`, Hatchway
/// found in `install_namespace`.
pub fn user_command(
    program: impl AsRef<std::ffi::OsStr>,
    kubeconfig: &std::path::Path,
    cache_dir: &std::path::Path,
    install_namespace: &str,
) -> std::process::Command {
    let mut command = std::process::Command::new(program);
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("HATCHWAY_") {
            command.env_remove(&key);
        }
    }
    command
        .env("KUBECONFIG", kubeconfig)
        .env("XDG_CACHE_HOME", cache_dir)
        .env("HATCHWAY_NAMESPACE", install_namespace)
        .stdin(std::process::Stdio::null());
    command
}
