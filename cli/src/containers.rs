//! Containers read from the Kubernetes API with the kubeconfig's
//! credentials (kube handles exec plugins and the rest here): one, a
//! namespace's or every namespace's, by label selector, and watched.

use futures::{StreamExt as _, TryStreamExt as _};
use hatchway_api::crd::Container;
use kube::api::{Api, ListParams, WatchEvent, WatchParams};

use crate::connection::{ConnectionArgs, ConnectionError};

/// Why the API could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ContainersError {
    #[error(transparent)]
    Client(#[from] ConnectionError),
    #[error("cannot read Containers in {namespace}: {source}")]
    Api { namespace: String, source: kube::Error },
    #[error("watching Containers in {namespace}: {message}")]
    Watch { namespace: String, message: String },
}

/// Which Containers.
#[derive(Debug, Clone, Default)]
pub struct Selection {
    /// The namespace; `None`: every namespace.
    pub namespace: Option<String>,
    /// One Container by name.
    pub name: Option<String>,
    /// A label selector (`-l`).
    pub labels: Option<String>,
}

impl Selection {
    fn describe(&self) -> String {
        self.namespace
            .clone()
            .unwrap_or_else(|| "every namespace".to_owned())
    }

    fn list_params(&self) -> ListParams {
        let mut params = ListParams::default();
        if let Some(labels) = &self.labels {
            params = params.labels(labels);
        }
        if let Some(name) = &self.name {
            params = params.fields(&format!("metadata.name={name}"));
        }
        params
    }
}

async fn api(
    connection: &ConnectionArgs,
    namespace: Option<&str>,
) -> Result<Api<Container>, ContainersError> {
    let client = connection.kube_client().await?;
    Ok(match namespace {
        Some(namespace) => Api::namespaced(client, namespace),
        None => Api::all(client),
    })
}

/// The Containers `selection` names (one by name is an error when absent,
/// as in kubectl).
pub async fn list(
    connection: &ConnectionArgs,
    selection: &Selection,
) -> Result<Vec<Container>, ContainersError> {
    let api = api(connection, selection.namespace.as_deref()).await?;
    let err = |source| ContainersError::Api {
        namespace: selection.describe(),
        source,
    };
    match (&selection.name, &selection.labels) {
        (Some(name), None) => Ok(vec![api.get(name).await.map_err(err)?]),
        _ => Ok(api.list(&selection.list_params()).await.map_err(err)?.items),
    }
}

/// One Container.
pub async fn get(
    connection: &ConnectionArgs,
    namespace: &str,
    name: &str,
) -> Result<Container, ContainersError> {
    let selection = Selection {
        namespace: Some(namespace.to_owned()),
        name: Some(name.to_owned()),
        labels: None,
    };
    let mut items = list(connection, &selection).await?;
    Ok(items.remove(0))
}

/// Calls `changed` with every Container `selection` names as it is added,
/// changed or deleted (`true`: deleted), from now on, until an error.
pub async fn watch(
    connection: &ConnectionArgs,
    selection: &Selection,
    mut changed: impl FnMut(&Container, bool) -> std::io::Result<()>,
) -> Result<(), ContainersError> {
    let api = api(connection, selection.namespace.as_deref()).await?;
    let fail = |message: String| ContainersError::Watch {
        namespace: selection.describe(),
        message,
    };
    let mut params = WatchParams::default();
    if let Some(labels) = &selection.labels {
        params = params.labels(labels);
    }
    if let Some(name) = &selection.name {
        params = params.fields(&format!("metadata.name={name}"));
    }
    let mut version = api
        .list_metadata(&selection.list_params().limit(1))
        .await
        .map_err(|e| fail(e.to_string()))?
        .metadata
        .resource_version
        .unwrap_or_default();
    loop {
        let mut events = api
            .watch(&params, &version)
            .await
            .map_err(|e| fail(e.to_string()))?
            .boxed();
        while let Some(event) = events.try_next().await.map_err(|e| fail(e.to_string()))? {
            let (container, deleted) = match event {
                WatchEvent::Added(c) | WatchEvent::Modified(c) => (c, false),
                WatchEvent::Deleted(c) => (c, true),
                WatchEvent::Bookmark(b) => {
                    version = b.metadata.resource_version;
                    continue;
                }
                WatchEvent::Error(e) => return Err(fail(e.message)),
            };
            version = container.metadata.resource_version.clone().unwrap_or_default();
            changed(&container, deleted).map_err(|e| fail(e.to_string()))?;
        }
        // The API server ends a watch after a while: go on from where it was.
    }
}
