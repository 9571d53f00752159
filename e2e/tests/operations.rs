//! Namespaces that platforms harden, on the real cluster (docs/chart.md,
//! docs/security.md): one release serves a namespace with a ResourceQuota
//! over CPU and memory and no LimitRange, and a namespace labelled Pod
//! Security `restricted`. A Container that sizes its workload runs there
//! with the chart's sidecar resources, or its own; one that does not is
//! told why by the quota. A non-root Container runs in the restricted
//! namespace and serves a shell as its own user; a root one is told what
//! Pod Security refused. `helm test` passes, and fails when the router's
//! Service has no endpoints. The chart's optional objects (ServiceMonitor,
//! PodMonitor, PrometheusRule, the dashboard, a cert-manager Certificate,
//! a Gateway API TLSRoute) are accepted by the API server with their
//! projects' own CRDs installed.

mod common;

use std::process::Command;

use anyhow::{Context, Result, ensure};
use common::release::*;
use hatchway_e2e::{TestNamespace, kubectl, kubectl_fails, kubectl_stdin, repo_dir, run_within, wait_until};
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

    // `helm test`: the router's /readyz through its Service, with the CA
    // the operator published (no aggregated API in this release).
    let out = release.helm_test()?;
    ensure!(
        out.status.success()
            && stdout(&out).contains("/readyz answered 200 OK")
            && !stdout(&out).contains("API server serves"),
        "helm test: {}",
        show(&out)
    );
    // A check that cannot pass fails `helm test`, with its words: the
    // router's Service without endpoints for a moment.
    let service = release.fullname();
    release.ns.kubectl(&[
        "patch",
        "service",
        &service,
        "--type=merge",
        "-p",
        r#"{"spec":{"selector":{"hatchway.dev/nothing":"x"}}}"#,
    ])?;
    // Until the node's Service rules follow (EndpointSlices, then
    // kube-proxy), a new connection may still reach a replica: wait until
    // one to the Service's address is refused, as the check pod's will be.
    let cluster_ip = release
        .ns
        .kubectl(&["get", "service", &service, "-o", "jsonpath={.spec.clusterIP}"])?;
    let address: std::net::SocketAddr = format!("{}:443", cluster_ip.trim()).parse()?;
    wait_until("the router's Service to refuse connections", WAIT, POLL, || {
        Ok(
            std::net::TcpStream::connect_timeout(&address, std::time::Duration::from_secs(2))
                .is_err()
                .then_some(()),
        )
    })?;
    let out = release.helm_test()?;
    release.ns.kubectl(&[
        "patch",
        "service",
        &service,
        "--type=json",
        "-p",
        r#"[{"op":"remove","path":"/spec/selector/hatchway.dev~1nothing"}]"#,
    ])?;
    ensure!(
        !out.status.success() && stdout(&out).contains("/readyz: connecting: "),
        "helm test with no router behind the Service: {}",
        show(&out)
    );

    optional_objects_pass_their_projects_schemas(&release)?;

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

/// Installs the prometheus-operator, cert-manager and Gateway API CRDs
/// (`e2e/cluster upstream-crds`), upgrades the release with its monitors,
/// alerts and dashboard, and has the API server check a Certificate and a
/// TLSRoute as the chart renders them (a dry run: no cert-manager or
/// Gateway controller runs here) — and refuse a wrong one.
fn optional_objects_pass_their_projects_schemas(release: &Release) -> Result<()> {
    let mut fetch = Command::new(repo_dir().join("e2e/cluster"));
    fetch.arg("upstream-crds");
    let out = run_within(fetch, WAIT)?;
    ensure!(out.status.success(), "e2e/cluster upstream-crds: {}", show(&out));
    for file in stdout(&out).lines() {
        kubectl(&["apply", "--server-side", "--force-conflicts", "-f", file])?;
    }
    for crd in [
        "servicemonitors.monitoring.coreos.com",
        "podmonitors.monitoring.coreos.com",
        "prometheusrules.monitoring.coreos.com",
        "certificates.cert-manager.io",
        "tlsroutes.gateway.networking.k8s.io",
    ] {
        kubectl(&[
            "wait",
            "--for=condition=Established",
            &format!("crd/{crd}"),
            "--timeout=60s",
        ])?;
    }
    release.upgrade(&[
        "--set",
        "metrics.serviceMonitor.enabled=true,metrics.podMonitor.enabled=true",
        "--set",
        "metrics.prometheusRule.enabled=true,metrics.grafanaDashboard.enabled=true",
    ])?;
    let fullname = release.fullname();
    let made = release
        .ns
        .kubectl(&["get", "servicemonitor,podmonitor,prometheusrule", "-o", "name"])?;
    for object in [
        format!("servicemonitor.monitoring.coreos.com/{fullname}"),
        format!("podmonitor.monitoring.coreos.com/{fullname}-sidecars"),
        format!("prometheusrule.monitoring.coreos.com/{fullname}"),
    ] {
        ensure!(made.lines().any(|l| l == object), "{object} not among {made}");
    }
    let rules = release.ns.kubectl(&[
        "get",
        "prometheusrule",
        &fullname,
        "-o",
        "jsonpath={.spec.groups[0].rules[*].alert}",
    ])?;
    ensure!(
        rules.contains("HatchwayNoLeader"),
        "the PrometheusRule's alerts: {rules}"
    );
    let dashboard = release.ns.kubectl(&[
        "get",
        "configmap",
        "-l",
        "grafana_dashboard=1",
        "-o",
        "jsonpath={.items[0].data.hatchway\\.json}",
    ])?;
    let dashboard: Value = serde_json::from_str(&dashboard).context("the dashboard ConfigMap's JSON")?;
    ensure!(
        dashboard["uid"] == "hatchway",
        "the dashboard: {}",
        dashboard["title"]
    );

    // The Certificate and the TLSRoute, as the chart renders them.
    let template = |extra: &[&str]| -> Result<String> {
        let mut args: Vec<String> = [
            "template",
            &release.name,
            &chart_dir().display().to_string(),
            "--namespace",
            &release.ns.name,
            "--kube-version",
            "1.34.0",
            "--set",
            "publicUrl=https://hatchway.example.com,webApps.wildcardDomain=apps.example.com",
            "--set",
            "certManager.enabled=true,certManager.issuerRef.name=platform-ca",
            "--set",
            "gatewayApi.tlsRoute.enabled=true,gatewayApi.tlsRoute.parentRefs[0].name=edge",
            "--show-only",
            "templates/certificate.yaml",
            "--show-only",
            "templates/tlsroute.yaml",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.extend(extra.iter().map(|s| s.to_string()));
        let out = run_within(helm(&args), WAIT)?;
        ensure!(out.status.success(), "helm template: {}", show(&out));
        Ok(stdout(&out))
    };
    let dry_run = ["-n", &release.ns.name, "apply", "--dry-run=server", "-f", "-"];
    let manifest = template(&[])?;
    let applied = kubectl_stdin(&dry_run, Some(&manifest)).with_context(|| manifest.clone())?;
    ensure!(
        applied.contains(&format!(
            "certificate.cert-manager.io/{fullname} created (server dry run)"
        )) && applied.contains(&format!(
            "tlsroute.gateway.networking.k8s.io/{fullname} created (server dry run)"
        )),
        "the Certificate and TLSRoute:\n{manifest}\n{applied}"
    );
    // The same schemas refuse what they should: a TLSRoute to an IP.
    let wrong = template(&["--set", "gatewayApi.tlsRoute.hostnames={10.0.0.1}"])?;
    let refused = kubectl_fails(&dry_run, Some(&wrong))?;
    ensure!(
        refused.contains("hostnames"),
        "a TLSRoute for an IP address: {refused}"
    );
    Ok(())
}
