//! Containers read from the Kubernetes API with the kubeconfig's
//! credentials (kube handles exec plugins and the rest here).

use hatchway_api::crd::Container;
use kube::api::{Api, ListParams};

use crate::connection::{ConnectionArgs, ConnectionError};

/// Why the API could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ContainersError {
    #[error(transparent)]
    Client(#[from] ConnectionError),
    #[error("cannot read Containers in {namespace}: {source}")]
    Api { namespace: String, source: kube::Error },
}

async fn api(connection: &ConnectionArgs, namespace: &str) -> Result<Api<Container>, ContainersError> {
    Ok(Api::namespaced(connection.kube_client().await?, namespace))
}

/// One Container, or every Container of the namespace.
pub async fn list(
    connection: &ConnectionArgs,
    namespace: &str,
    name: Option<&str>,
) -> Result<Vec<Container>, ContainersError> {
    let api = api(connection, namespace).await?;
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
pub async fn get(
    connection: &ConnectionArgs,
    namespace: &str,
    name: &str,
) -> Result<Container, ContainersError> {
    api(connection, namespace)
        .await?
        .get(name)
        .await
        .map_err(|source| ContainersError::Api {
            namespace: namespace.to_owned(),
            source,
        })
}
