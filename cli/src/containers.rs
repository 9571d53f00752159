//! Containers read from the Kubernetes API with the kubeconfig's
//! credentials (kube handles exec plugins and the rest here).

use hatchway_api::crd::Container;
use kube::api::{Api, ListParams};

/// Why the API could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ContainersError {
    #[error("cannot reach the Kubernetes API: {0}")]
    Client(#[source] kube::Error),
    #[error("cannot read Containers in {namespace}: {source}")]
    Api { namespace: String, source: kube::Error },
    #[error("container {namespace}/{name} has no SSH host key in its status yet (is it running?)")]
    NoHostKey { namespace: String, name: String },
}

async fn api(namespace: &str) -> Result<Api<Container>, ContainersError> {
    let client = kube::Client::try_default()
        .await
        .map_err(ContainersError::Client)?;
    Ok(Api::namespaced(client, namespace))
}

/// One Container, or every Container of the namespace.
pub async fn list(namespace: &str, name: Option<&str>) -> Result<Vec<Container>, ContainersError> {
    let api = api(namespace).await?;
    let err = |source| ContainersError::Api {
        namespace: namespace.to_owned(),
        source,
    };
    match name {
        Some(name) => Ok(vec![api.get(name).await.map_err(err)?]),
        None => Ok(api.list(&ListParams::default()).await.map_err(err)?.items),
    }
}

/// The SSH host key the Container's gateway reported.
pub async fn host_key(namespace: &str, name: &str) -> Result<String, ContainersError> {
    let container = api(namespace)
        .await?
        .get(name)
        .await
        .map_err(|source| ContainersError::Api {
            namespace: namespace.to_owned(),
            source,
        })?;
    container
        .status
        .and_then(|s| s.gateway)
        .and_then(|g| g.host_key)
        .filter(|k| !k.trim().is_empty())
        .ok_or_else(|| ContainersError::NoHostKey {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
        })
}
