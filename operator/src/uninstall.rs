//! `uninstall`: what the chart's pre-delete hook runs, so that `helm
//! uninstall` leaves nothing but the CRDs. In order: scale the operator's
//! Deployment to zero and wait for its pods to go (a running reconciler
//! would put finalizers straight back), remove Hatchway's finalizer from
//! every Container (they stay — they are the users' — and can be deleted
//! later; their pods keep running), then delete what the operator created
//! in its namespace: the root secret, the router CA, the Lease and the
//! client ConfigMap, and the `helm test` pod if one ran (Helm leaves hook
//! pods behind).

use std::time::{Duration, Instant};

use hatchway_api::crd::Container;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use kube::core::NamespaceResourceScope;
use kube::{Resource, ResourceExt};
use serde_json::json;

use crate::reconcile::controller::FINALIZER;
use hatchway_api::wire::client_config;

/// Settings of `uninstall` (the Deployment's names, from the same
/// environment variables).
#[derive(Debug, Clone, clap::Args)]
pub struct UninstallArgs {
    /// The operator's Deployment (scaled to zero first).
    #[arg(long, env = "HATCHWAY_DEPLOYMENT_NAME", default_value = "hatchway")]
    pub deployment: String,
    /// The namespace the operator runs in.
    #[arg(long, env = "POD_NAMESPACE", default_value = "hatchway-system")]
    pub namespace: String,
    /// The root secret's Secret.
    #[arg(long, env = "HATCHWAY_ROOT_SECRET_NAME", default_value = "hatchway-root")]
    pub root_secret_name: String,
    /// The router CA's Secret.
    #[arg(long, env = "HATCHWAY_CA_SECRET_NAME", default_value = "hatchway-router-ca")]
    pub ca_secret_name: String,
    /// The leader-election Lease.
    #[arg(long, env = "HATCHWAY_LEASE_NAME", default_value = "hatchway-operator")]
    pub lease_name: String,
    /// The `helm test` pod (kept after it ran, for its logs).
    #[arg(long, env = "HATCHWAY_CHECK_POD", default_value = "hatchway-check")]
    pub check_pod: String,
    /// The namespaces the operator served (comma-separated; empty: all):
    /// only their Containers are released.
    #[arg(long, env = "HATCHWAY_NAMESPACES", value_delimiter = ',', default_value = "")]
    pub namespaces: Vec<String>,
    /// How long to wait for the operator's pods to stop.
    #[arg(long, default_value_t = 90)]
    pub wait_seconds: u64,
}

/// Why uninstalling stopped.
#[derive(Debug, thiserror::Error)]
pub enum UninstallError {
    #[error("{what}: {source}")]
    Api { what: String, source: kube::Error },
    #[error("the operator's pods did not stop within {0:?}")]
    Timeout(Duration),
}

fn api_err(what: impl Into<String>) -> impl FnOnce(kube::Error) -> UninstallError {
    let what = what.into();
    move |source| UninstallError::Api { what, source }
}

/// Runs the steps; each is idempotent (a re-run after a failure is safe).
pub async fn run(client: kube::Client, args: &UninstallArgs) -> Result<(), UninstallError> {
    stop_operator(&client, args).await?;
    let containers: Api<Container> = Api::all(client.clone());
    let list = containers
        .list(&ListParams::default())
        .await
        .map_err(api_err("listing Containers"))?;
    let mut released = 0;
    for container in list.items {
        let served = args.namespaces.iter().all(|n| n.is_empty())
            || container
                .namespace()
                .is_some_and(|ns| args.namespaces.contains(&ns));
        if !served || !container.finalizers().iter().any(|f| f == FINALIZER) {
            continue;
        }
        let remaining: Vec<&String> = container
            .finalizers()
            .iter()
            .filter(|f| *f != FINALIZER)
            .collect();
        let namespace = container.namespace().unwrap_or_default();
        let name = container.name_any();
        // The resourceVersion makes this a compare-and-swap: a concurrent
        // change fails it rather than being overwritten.
        let patch = json!({"metadata": {
            "finalizers": remaining,
            "resourceVersion": container.resource_version(),
        }});
        Api::<Container>::namespaced(client.clone(), &namespace)
            .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .map_err(api_err(format!(
                "removing the finalizer of Container {namespace}/{name}"
            )))?;
        released += 1;
    }
    tracing::info!(released, "finalizers removed");
    let ns = &args.namespace;
    delete::<Secret>(&client, ns, &args.root_secret_name).await?;
    delete::<Secret>(&client, ns, &args.ca_secret_name).await?;
    delete::<Lease>(&client, ns, &args.lease_name).await?;
    delete::<ConfigMap>(&client, ns, client_config::NAME).await?;
    delete::<Pod>(&client, ns, &args.check_pod).await?;
    tracing::info!(namespace = %ns, "uninstalled");
    Ok(())
}

/// Scales the Deployment to zero and waits until it has no pods.
async fn stop_operator(client: &kube::Client, args: &UninstallArgs) -> Result<(), UninstallError> {
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &args.namespace);
    let what = format!("Deployment {}/{}", args.namespace, args.deployment);
    let scale = json!({"spec": {"replicas": 0}});
    match deployments
        .patch_scale(&args.deployment, &PatchParams::default(), &Patch::Merge(&scale))
        .await
    {
        Ok(_) => {}
        Err(kube::Error::Api(status)) if status.is_not_found() => return Ok(()),
        Err(source) => return Err(UninstallError::Api { what, source }),
    }
    let Some(deployment) = deployments
        .get_opt(&args.deployment)
        .await
        .map_err(api_err(what.clone()))?
    else {
        return Ok(());
    };
    // Wait for the pods themselves (a terminating leader still reconciles
    // until it exits; the Deployment's counts leave terminating pods out).
    let selector = deployment
        .spec
        .and_then(|s| s.selector.match_labels)
        .unwrap_or_default()
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",");
    let pods: Api<Pod> = Api::namespaced(client.clone(), &args.namespace);
    let limit = Duration::from_secs(args.wait_seconds);
    let deadline = Instant::now() + limit;
    loop {
        let left = pods
            .list(&ListParams::default().labels(&selector))
            .await
            .map_err(api_err(format!("listing the pods of {what}")))?
            .items
            .len();
        if left == 0 {
            tracing::info!("the operator has stopped");
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(UninstallError::Timeout(limit));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

async fn delete<K>(client: &kube::Client, namespace: &str, name: &str) -> Result<(), UninstallError>
where
    K: Resource<Scope = NamespaceResourceScope> + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
    K::DynamicType: Default,
{
    let api: Api<K> = Api::namespaced(client.clone(), namespace);
    match api.delete(name, &DeleteParams::default()).await {
        Ok(_) => {
            tracing::info!(kind = %K::kind(&K::DynamicType::default()), %namespace, %name, "deleted");
            Ok(())
        }
        Err(kube::Error::Api(status)) if status.is_not_found() => Ok(()),
        Err(source) => Err(UninstallError::Api {
            what: format!("deleting {}/{name}", K::kind(&K::DynamicType::default())),
            source,
        }),
    }
}
