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

/// One Container.
pub async fn get(namespace: &str, name: &str) -> Result<Container, ContainersError> {
    api(namespace)
        .await?
        .get(name)
        .await
        .map_err(|source| ContainersError::Api {
            namespace: namespace.to_owned(),
            source,
        })
}
