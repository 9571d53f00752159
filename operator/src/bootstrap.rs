//! What the operator needs before it serves, created at first start when
//! the chart did not: the root secret (32 random bytes every Container key
//! derives from) and the router CA (sidecars pin it; replicas issue their
//! serving certificates from it). Both live in Secrets in the install
//! namespace that only the operator's ServiceAccount may read. Neither is
//! ever logged.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, Patch, PatchParams, PostParams};

use crate::router::tls::{RouterCa, TlsError};
use hatchway_api::proof::RootSecret;
use hatchway_api::wire::client_config;

/// The key of the root secret in its Secret.
pub const ROOT_KEY: &str = "root-secret";
/// The keys of the CA in its Secret.
pub const CA_CERT_KEY: &str = "ca.crt";
/// The CA's private key.
pub const CA_KEY_KEY: &str = "ca.key";
/// Bytes of a generated root secret.
pub const ROOT_BYTES: usize = 32;

/// Why bootstrapping failed.
#[derive(Debug, thiserror::Error)]
pub enum BootstrapError {
    /// The API refused or could not be reached.
    #[error("{namespace}/{name}: {source}")]
    Api {
        /// Namespace.
        namespace: String,
        /// Name.
        name: String,
        /// Why.
        source: kube::Error,
    },
    /// The Secret exists but lacks a key or holds too little.
    #[error("Secret {namespace}/{name}: {message}")]
    Invalid {
        /// Namespace.
        namespace: String,
        /// Name.
        name: String,
        /// What is wrong.
        message: String,
    },
    /// Generating the CA failed.
    #[error(transparent)]
    Tls(#[from] TlsError),
}

/// Reads Secret `name`, creating it with `make()` when missing. A replica
/// that loses the creation race reads the winner's.
async fn get_or_create(
    api: &Api<Secret>,
    namespace: &str,
    name: &str,
    make: impl FnOnce() -> Result<BTreeMap<String, ByteString>, BootstrapError>,
) -> Result<BTreeMap<String, ByteString>, BootstrapError> {
    let err = |source| BootstrapError::Api {
        namespace: namespace.to_owned(),
        name: name.to_owned(),
        source,
    };
    if let Some(secret) = api.get_opt(name).await.map_err(err)? {
        return Ok(secret.data.unwrap_or_default());
    }
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            namespace: Some(namespace.to_owned()),
            labels: Some(BTreeMap::from([(
                "app.kubernetes.io/managed-by".to_owned(),
                "hatchway-operator".to_owned(),
            )])),
            ..ObjectMeta::default()
        },
        type_: Some("Opaque".to_owned()),
        data: Some(make()?),
        ..Secret::default()
    };
    match api.create(&PostParams::default(), &secret).await {
        Ok(created) => {
            tracing::info!(namespace, name, "created Secret");
            Ok(created.data.unwrap_or_default())
        }
        Err(kube::Error::Api(status)) if status.code == 409 => {
            let secret = api.get(name).await.map_err(err)?;
            Ok(secret.data.unwrap_or_default())
        }
        Err(source) => Err(err(source)),
    }
}

/// The root secret in Secret `namespace/name` (key `root-secret`), created
/// with 32 random bytes when missing.
pub async fn root_secret(
    client: kube::Client,
    namespace: &str,
    name: &str,
) -> Result<RootSecret, BootstrapError> {
    let api: Api<Secret> = Api::namespaced(client, namespace);
    let data = get_or_create(&api, namespace, name, || {
        let bytes: [u8; ROOT_BYTES] = rand::random();
        Ok(BTreeMap::from([(
            ROOT_KEY.to_owned(),
            ByteString(bytes.to_vec()),
        )]))
    })
    .await?;
    let bytes = data.get(ROOT_KEY).map(|b| b.0.clone()).unwrap_or_default();
    if bytes.len() < ROOT_BYTES {
        return Err(BootstrapError::Invalid {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            message: format!(
                "key {ROOT_KEY:?} holds {} bytes; at least {ROOT_BYTES} are needed",
                bytes.len()
            ),
        });
    }
    Ok(RootSecret::new(bytes))
}

/// The router CA in Secret `namespace/name` (keys `ca.crt`, `ca.key`),
/// generated when missing.
pub async fn router_ca(
    client: kube::Client,
    namespace: &str,
    name: &str,
) -> Result<RouterCa, BootstrapError> {
    let api: Api<Secret> = Api::namespaced(client, namespace);
    let data = get_or_create(&api, namespace, name, || {
        let ca = RouterCa::generate()?;
        Ok(BTreeMap::from([
            (CA_CERT_KEY.to_owned(), ByteString(ca.cert_pem.into_bytes())),
            (CA_KEY_KEY.to_owned(), ByteString(ca.key_pem.into_bytes())),
        ]))
    })
    .await?;
    let text = |key: &str| -> Result<String, BootstrapError> {
        data.get(key)
            .map(|b| String::from_utf8_lossy(&b.0).into_owned())
            .filter(|t| t.contains("-----BEGIN"))
            .ok_or_else(|| BootstrapError::Invalid {
                namespace: namespace.to_owned(),
                name: name.to_owned(),
                message: format!("key {key:?} is missing or not PEM"),
            })
    };
    Ok(RouterCa {
        cert_pem: text(CA_CERT_KEY)?,
        key_pem: text(CA_KEY_KEY)?,
    })
}

/// Publishes (server-side apply) ConfigMap `namespace/hatchway-client` with
/// the router's public URL and the CA its certificate chains to, so
/// `kubectl hatch` finds both with the user's own kubeconfig. Every replica
/// writes the same content; the last write wins harmlessly.
pub async fn publish_client_config(
    client: kube::Client,
    namespace: &str,
    server: &str,
    ca_pem: &str,
) -> Result<(), BootstrapError> {
    let api: Api<ConfigMap> = Api::namespaced(client, namespace);
    let config = serde_json::json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": client_config::NAME,
            "labels": {"app.kubernetes.io/managed-by": "hatchway-operator"},
        },
        "data": {client_config::SERVER: server, client_config::CA: ca_pem},
    });
    api.patch(
        client_config::NAME,
        &PatchParams::apply("hatchway-operator").force(),
        &Patch::Apply(&config),
    )
    .await
    .map_err(|source| BootstrapError::Api {
        namespace: namespace.to_owned(),
        name: client_config::NAME.to_owned(),
        source,
    })?;
    tracing::info!(
        namespace,
        name = client_config::NAME,
        server,
        "published the client settings"
    );
    Ok(())
}

/// Sets the caBundle of APIService `name` to the router CA (server-side
/// apply of that one field), so the API server verifies the aggregated
/// port. Every replica writes the same value.
pub async fn set_apiservice_ca(client: kube::Client, name: &str, ca_pem: &str) -> Result<(), BootstrapError> {
    use base64::Engine as _;
    let api: Api<kube::api::DynamicObject> = Api::all_with(
        client,
        &kube::api::ApiResource {
            group: "apiregistration.k8s.io".into(),
            version: "v1".into(),
            api_version: "apiregistration.k8s.io/v1".into(),
            kind: "APIService".into(),
            plural: "apiservices".into(),
        },
    );
    let patch = serde_json::json!({
        "apiVersion": "apiregistration.k8s.io/v1",
        "kind": "APIService",
        "metadata": {"name": name},
        "spec": {"caBundle": base64::engine::general_purpose::STANDARD.encode(ca_pem)},
    });
    api.patch(
        name,
        &PatchParams::apply("hatchway-operator").force(),
        &Patch::Apply(&patch),
    )
    .await
    .map_err(|source| BootstrapError::Api {
        namespace: String::new(),
        name: name.to_owned(),
        source,
    })?;
    tracing::info!(apiservice = name, "the APIService trusts the router CA");
    Ok(())
}
