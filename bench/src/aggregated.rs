//! The aggregated API in the bench: the e2e cluster's real kube-apiserver
//! proxying `kubectl hatch port-forward --api aggregated` to a router in
//! this process. An APIService whose Service's only endpoint is this
//! machine's node IP (the API server runs with aggregator routing, so it
//! dials endpoints), the front proxy's CA read from the cluster as the
//! operator reads it: the same hops as on a cluster, with no pod network.

use std::process::Stdio;

use anyhow::{Context, Result};
use hatchway_api::wire::access_api;
use hatchway_operator::router::apiservice::FrontProxy;
use hatchway_operator::router::auth::Permission;

use crate::rig::{NS, Path, Rig};
use crate::support::{TestRouter, pki};
use crate::tools::{Bg, wait_listening};

/// The namespace of the bench's Service and Endpoints.
pub const NAMESPACE: &str = "hatchway-bench-api";
/// The Service the APIService names.
const SERVICE: &str = "hatchway-bench-api";
/// The name the router's certificate must carry for the API server.
pub const SERVICE_DNS: &str = "hatchway-bench-api.hatchway-bench-api.svc";

/// A router serving the aggregated API to the cluster's API server.
pub struct Aggregated {
    router: TestRouter,
    kubeconfig: std::ffi::OsString,
}

impl Aggregated {
    /// Registers the APIService and serves it; `None` without a cluster,
    /// or when the APIService is someone else's (an installed release).
    pub async fn start(rig: &Rig) -> Result<Option<Self>> {
        // The e2e library's kubectl insists on a cluster: ask it only when
        // there may be one.
        let Some(kubeconfig) = std::env::var_os("KUBECONFIG").filter(|k| std::path::Path::new(k).is_file())
        else {
            return Ok(None);
        };
        let k = hatchway_e2e::kubectl_stdin;
        if k(&["get", "nodes"], None).is_err() {
            return Ok(None);
        }
        if k(&["get", "apiservice", access_api::APISERVICE], None).is_ok() {
            crate::cases::progress(&format!(
                "APIService {} exists (an installed release?): the aggregated path is not measured",
                access_api::APISERVICE
            ));
            return Ok(None);
        }
        let data: serde_json::Value = serde_json::from_str(&k(
            &[
                "-n",
                "kube-system",
                "get",
                "configmap",
                "extension-apiserver-authentication",
                "-o",
                "jsonpath={.data}",
            ],
            None,
        )?)?;
        let data = serde_json::from_value(data)?;
        let front = FrontProxy::from_data(&data)?;
        // The API server names the user it authenticated: let that user
        // do everything in the bench's namespace.
        let user = k(
            &["auth", "whoami", "-o", "jsonpath={.status.userInfo.username}"],
            None,
        )?;
        for permission in [Permission::SHELL, Permission::PORTFORWARD, Permission::LOG] {
            rig.auth.grant(user.trim(), NS, permission);
        }
        let node_ip: std::net::IpAddr = hatchway_e2e::node_ip()?.parse()?;
        let router =
            TestRouter::start_aggregated(node_ip, 0, rig.cluster.clone(), rig.auth.clone(), &front, |_| {})
                .await;
        let port = router.aggregated_addr.context("an aggregated port")?.port();
        let ca = {
            use base64::Engine as _;
            base64::engine::general_purpose::STANDARD.encode(pki().ca_pem)
        };
        let manifests = serde_json::json!({
            "apiVersion": "v1",
            "kind": "List",
            "items": [
                {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}},
                {"apiVersion": "v1", "kind": "Service", "metadata": {"name": SERVICE, "namespace": NAMESPACE},
                 "spec": {"ports": [{"name": "https", "port": 443, "targetPort": port}]}},
                {"apiVersion": "v1", "kind": "Endpoints", "metadata": {"name": SERVICE, "namespace": NAMESPACE},
                 "subsets": [{"addresses": [{"ip": node_ip.to_string()}], "ports": [{"name": "https", "port": port}]}]},
                {"apiVersion": "apiregistration.k8s.io/v1", "kind": "APIService",
                 "metadata": {"name": access_api::APISERVICE},
                 "spec": {"group": access_api::GROUP, "version": access_api::VERSION,
                          "groupPriorityMinimum": 100, "versionPriority": 100, "caBundle": ca,
                          "service": {"name": SERVICE, "namespace": NAMESPACE, "port": 443}}},
            ],
        });
        let aggregated = Self { router, kubeconfig };
        k(&["apply", "-f", "-"], Some(&manifests.to_string()))?;
        k(
            &[
                "wait",
                "--for=condition=Available",
                &format!("apiservice/{}", access_api::APISERVICE),
                "--timeout=60s",
            ],
            None,
        )?;
        Ok(Some(aggregated))
    }

    /// `kubectl hatch port-forward --api aggregated` of `remote` on the
    /// direct path's Container, listening on `listen`.
    pub fn port_forward(&self, rig: &Rig, listen: u16, remote: u16) -> Result<Bg> {
        let mut command = rig.hatch(
            Path::Direct,
            &["port-forward", Path::Direct.name(), &format!("{listen}:{remote}")],
        )?;
        command
            .env_remove("HATCHWAY_SERVER")
            .env_remove("HATCHWAY_TOKEN")
            .env("KUBECONFIG", &self.kubeconfig)
            .env("HATCHWAY_API", "aggregated");
        let bg = Bg::spawn(
            "kubectl hatch port-forward --api aggregated",
            command.stdout(Stdio::null()),
        )?;
        wait_listening(listen, "kubectl hatch port-forward --api aggregated")?;
        Ok(bg)
    }
}

impl Drop for Aggregated {
    fn drop(&mut self) {
        let _ = hatchway_e2e::kubectl(&["delete", "apiservice", access_api::APISERVICE, "--wait=false"]);
        let _ = hatchway_e2e::kubectl(&["delete", "namespace", NAMESPACE, "--wait=false"]);
        self.router.shutdown.cancel();
    }
}
