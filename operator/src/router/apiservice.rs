//! The aggregated API ([`wire::access_api`]): the user API behind the
//! Kubernetes API server, on a port of its own.
//!
//! The API server authenticates the user however their kubeconfig says
//! (client certificates, OIDC, exec plugins, tokens), checks RBAC on the
//! `access.hatchway.dev` subresource, and proxies the request here over TLS
//! with its front-proxy client certificate, naming the user in
//! `X-Remote-User` / `X-Remote-Group` / `X-Remote-Extra-*`. This port
//! believes those headers only from a caller that
//!
//! - presented a certificate signed by the request-header CA whose common
//!   name is one of the allowed names (both from ConfigMap
//!   `kube-system/extension-apiserver-authentication`, as every aggregated
//!   API server reads them), or
//! - is a peer replica passing such a request on to the replica that holds
//!   a tunnel: it proves the root secret over this very TLS session's
//!   exported keying material and the user it names ([`super::peer`]).
//!
//! Anyone else gets a 401 whatever headers they send. The request then
//! goes through the same checks as the router's own API
//! ([`access::Granted`]: SubjectAccessReview on `hatchway.dev`, the
//! Container, the shell settings), with the user as the API server named
//! them instead of a TokenReview.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{any, get};
use hatchway_api::wire::{self, access_api};
use http::{HeaderMap, HeaderValue, StatusCode, header};
use k8s_openapi::api::core::v1::ConfigMap;
use rustls::RootCertStore;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::ClientCertVerifier;

use super::Router;
use super::access::{self, ProxiedUser};
use super::auth::User;
use super::peer::{PEER_PROOF, peer_user};
use super::respond::full_body;
use super::routes::{self, ConnectionInfo};
use super::user;

/// Where the API server publishes its front-proxy settings.
pub const AUTHENTICATION_CONFIG: (&str, &str) = ("kube-system", "extension-apiserver-authentication");

/// Why the front-proxy settings are unusable.
#[derive(Debug, thiserror::Error)]
pub enum FrontProxyError {
    /// The API server was started without a request-header CA.
    #[error(
        "ConfigMap {}/{} has no requestheader-client-ca-file: the API server runs without \
         --requestheader-client-ca-file, so it cannot proxy to aggregated APIs",
        AUTHENTICATION_CONFIG.0,
        AUTHENTICATION_CONFIG.1
    )]
    NoCa,
    /// A key is malformed.
    #[error("ConfigMap {}/{}, key {key}: {reason}", AUTHENTICATION_CONFIG.0, AUTHENTICATION_CONFIG.1)]
    Bad {
        /// The key.
        key: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// The ConfigMap could not be read.
    #[error("reading ConfigMap kube-system/extension-apiserver-authentication: {0}")]
    Api(#[from] kube::Error),
}

/// How the API server's front proxy authenticates and names users.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FrontProxy {
    /// The CA that signs the front proxy's client certificate (PEM).
    pub client_ca_pem: String,
    /// Common names the client certificate may carry (empty: any).
    pub allowed_names: Vec<String>,
    /// Headers naming the user (the first present wins).
    pub username_headers: Vec<String>,
    /// Headers carrying the user's UID.
    pub uid_headers: Vec<String>,
    /// Headers carrying the user's groups (every value of each).
    pub group_headers: Vec<String>,
    /// Prefixes of headers carrying extra attributes.
    pub extra_prefixes: Vec<String>,
}

impl FrontProxy {
    /// Reads the settings from the ConfigMap's data.
    pub fn from_data(data: &BTreeMap<String, String>) -> Result<Self, FrontProxyError> {
        let list = |key: &'static str| -> Result<Vec<String>, FrontProxyError> {
            match data.get(key).map(|v| v.trim()).filter(|v| !v.is_empty()) {
                None => Ok(Vec::new()),
                Some(json) => serde_json::from_str(json).map_err(|e| FrontProxyError::Bad {
                    key,
                    reason: format!("not a JSON list of strings: {e}"),
                }),
            }
        };
        let client_ca_pem = data
            .get("requestheader-client-ca-file")
            .filter(|pem| pem.contains("-----BEGIN CERTIFICATE"))
            .ok_or(FrontProxyError::NoCa)?
            .clone();
        let username_headers = list("requestheader-username-headers")?;
        if username_headers.is_empty() {
            return Err(FrontProxyError::Bad {
                key: "requestheader-username-headers",
                reason: "missing or empty: nothing would name the user".into(),
            });
        }
        let proxy = Self {
            client_ca_pem,
            allowed_names: list("requestheader-allowed-names")?,
            username_headers,
            uid_headers: list("requestheader-uid-headers")?,
            group_headers: list("requestheader-group-headers")?,
            extra_prefixes: list("requestheader-extra-headers-prefix")?,
        };
        proxy.roots()?;
        Ok(proxy)
    }

    /// Reads the settings from the cluster.
    pub async fn load(client: kube::Client) -> Result<Self, FrontProxyError> {
        let (namespace, name) = AUTHENTICATION_CONFIG;
        let api: kube::Api<ConfigMap> = kube::Api::namespaced(client, namespace);
        let map = api.get(name).await?;
        Self::from_data(&map.data.unwrap_or_default())
    }

    fn roots(&self) -> Result<RootCertStore, FrontProxyError> {
        let bad = |reason: String| FrontProxyError::Bad {
            key: "requestheader-client-ca-file",
            reason,
        };
        let mut roots = RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(self.client_ca_pem.as_bytes()) {
            let cert = cert.map_err(|e| bad(e.to_string()))?;
            roots.add(cert).map_err(|e| bad(e.to_string()))?;
        }
        if roots.is_empty() {
            return Err(bad("no certificate".into()));
        }
        Ok(roots)
    }

    /// Verifies client certificates against the request-header CA; a
    /// client may also connect without one (and is refused per request).
    pub fn verifier(&self) -> Result<Arc<dyn ClientCertVerifier>, FrontProxyError> {
        WebPkiClientVerifier::builder_with_provider(Arc::new(self.roots()?), hatchway_api::tls::provider())
            .allow_unauthenticated()
            .build()
            .map_err(|e| FrontProxyError::Bad {
                key: "requestheader-client-ca-file",
                reason: e.to_string(),
            })
    }

    /// Whether a certificate the TLS layer verified may act as the front
    /// proxy: its common name must be an allowed name (any, when none are
    /// listed).
    pub fn check_caller(&self, cert: &CertificateDer<'_>) -> Result<(), String> {
        if self.allowed_names.is_empty() {
            return Ok(());
        }
        let names = common_names(cert)?;
        if names.iter().any(|cn| self.allowed_names.contains(cn)) {
            Ok(())
        } else {
            Err(format!(
                "the client certificate (common name {names:?}) is signed by the request-header CA but is \
                 not one of the allowed front-proxy names {:?}",
                self.allowed_names
            ))
        }
    }

    /// The user the front proxy names in `headers`.
    pub fn user(&self, headers: &HeaderMap) -> Result<User, String> {
        let first = |names: &[String]| {
            names.iter().find_map(|name| {
                headers
                    .get(name.as_str())
                    .and_then(|v| v.to_str().ok())
                    .map(str::trim)
                    .filter(|v| !v.is_empty())
                    .map(str::to_owned)
            })
        };
        let username = first(&self.username_headers).ok_or_else(|| {
            format!(
                "the front proxy named no user (none of {:?} is set)",
                self.username_headers
            )
        })?;
        let mut groups = Vec::new();
        for name in &self.group_headers {
            for value in headers.get_all(name.as_str()) {
                if let Ok(value) = value.to_str()
                    && !value.trim().is_empty()
                {
                    groups.push(value.trim().to_owned());
                }
            }
        }
        let mut extra: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (name, value) in headers {
            let name = name.as_str();
            let Some(key) = self
                .extra_prefixes
                .iter()
                .find_map(|prefix| strip_prefix_ignore_case(name, prefix))
            else {
                continue;
            };
            let key = percent_encoding::percent_decode_str(key)
                .decode_utf8()
                .map_err(|_| format!("extra header {name:?} is not UTF-8 once decoded"))?
                .to_lowercase();
            if let Ok(value) = value.to_str() {
                extra.entry(key).or_default().push(value.to_owned());
            }
        }
        Ok(User {
            username,
            uid: first(&self.uid_headers).unwrap_or_default(),
            groups,
            extra,
        })
    }
}

fn strip_prefix_ignore_case<'a>(name: &'a str, prefix: &str) -> Option<&'a str> {
    let head = name.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &name[prefix.len()..])
        .filter(|rest| !rest.is_empty())
}

/// The subject common names of a DER certificate.
fn common_names(cert: &CertificateDer<'_>) -> Result<Vec<String>, String> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref())
        .map_err(|e| format!("the client certificate does not parse: {e}"))?;
    Ok(parsed
        .subject()
        .iter_common_name()
        .filter_map(|cn| cn.as_str().ok().map(str::to_owned))
        .collect())
}

/// Who called, and as which user: the front proxy (checked certificate,
/// headers), a peer replica (checked proof), or nobody this port serves.
fn identify(router: &Router, front: &FrontProxy, req: &Request) -> Result<User, String> {
    let info = req.extensions().get::<Arc<ConnectionInfo>>();
    if req.headers().contains_key(PEER_PROOF) {
        return peer_user(
            router.root.expose_bytes(),
            info.and_then(|i| i.ekm.as_ref()),
            req.headers(),
        );
    }
    let cert = info.and_then(|i| i.client_cert.as_ref()).ok_or(
        "this port serves only the Kubernetes API server (the aggregated API access.hatchway.dev): \
         present its front-proxy client certificate, or use the router's own port",
    )?;
    front.check_caller(cert)?;
    front.user(req.headers())
}

/// State of the aggregated port's routes.
#[derive(Clone)]
struct Aggregated {
    router: Arc<Router>,
    front: Arc<FrontProxy>,
}

/// The aggregated port's routes: discovery and the Container subresources,
/// behind the check of who called.
pub fn table(router: Arc<Router>, front: Arc<FrontProxy>) -> axum::Router {
    let container = |segment: &str| {
        format!(
            "{}{{namespace}}/containers/{{name}}/{segment}",
            access_api::PREFIX
        )
    };
    let subresources = axum::Router::new()
        .route(
            &container(access_api::SHELL),
            routes::labelled(wire::ACTION_SSH, any(user::shell)),
        )
        .route(
            &container(access_api::PORTFORWARD),
            routes::labelled(wire::ACTION_PORTFORWARD, any(user::port_forward)),
        )
        .route(
            &container(access_api::LOG),
            routes::labelled(wire::ACTION_LOG, any(user::log)),
        )
        .route(
            &container("log/"),
            routes::labelled(wire::ACTION_LOG, any(user::log)),
        )
        .route(
            &container("log/{*file}"),
            routes::labelled(wire::ACTION_LOG, any(user::log)),
        )
        .route(
            &container(access_api::WEBLOGIN),
            routes::labelled(wire::ACTION_WEBLOGIN, any(user::web_login)),
        )
        .route(
            &container(access_api::SESSIONS),
            routes::labelled(wire::ACTION_SESSIONS, any(user::sessions)),
        )
        .route(
            &format!("{}{{namespace}}/containers/{{name}}", access_api::PREFIX),
            routes::labelled("discovery", any(no_get)),
        )
        .route(
            access_api::DISCOVERY,
            routes::labelled("discovery", get(resource_list)),
        )
        .route(
            &format!("/apis/{}", access_api::GROUP),
            routes::labelled("discovery", get(api_group)),
        )
        .fallback(not_found)
        .with_state(router.clone());
    let state = Aggregated {
        router: router.clone(),
        front,
    };
    subresources
        .layer(middleware::from_fn_with_state(state, authenticate_caller))
        .layer(middleware::from_fn_with_state(router, routes::front_api))
}

/// Refuses every caller but the front proxy and peer replicas; passes the
/// user they name on as [`ProxiedUser`].
async fn authenticate_caller(State(state): State<Aggregated>, mut req: Request, next: Next) -> Response {
    // Never believed from a request, whoever sent it: only set below.
    req.extensions_mut().remove::<ProxiedUser>();
    match identify(&state.router, &state.front, &req) {
        Ok(user) => {
            tracing::Span::current().record("user", user.username.as_str());
            req.extensions_mut().insert(ProxiedUser(user));
            next.run(req).await
        }
        Err(reason) => {
            state
                .router
                .metrics
                .auth_failures
                .with_label_values(&["not_front_proxy"])
                .inc();
            status(StatusCode::UNAUTHORIZED, "Unauthorized", &reason)
        }
    }
}

/// A `metav1.Status` answer, as Kubernetes clients expect from an API.
fn status(code: StatusCode, reason: &str, message: &str) -> Response {
    let body = serde_json::json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code.as_u16(),
    });
    json(code, &body)
}

fn json(code: StatusCode, body: &serde_json::Value) -> Response {
    let mut response = http::Response::new(full_body(body.to_string()));
    *response.status_mut() = code;
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response.map(axum::body::Body::new)
}

/// Discovery carries the router's version in headers: the aggregated API
/// has no `/version` of its own.
fn with_version(mut response: Response) -> Response {
    let version = routes::server_version();
    let headers = response.headers_mut();
    if let Ok(value) = HeaderValue::from_str(&version.version) {
        headers.insert(wire::SERVER_VERSION, value);
    }
    headers.insert(wire::SERVER_PROTOCOL, HeaderValue::from(version.protocol));
    response
}

/// `GET /apis/access.hatchway.dev/v1alpha1`: what `kubectl api-resources`
/// lists. `containers` is there so the group shows at all (kubectl lists
/// no group whose resources are all subresources); the Containers
/// themselves are read from `hatchway.dev`. No categories: `kubectl get
/// hatchway` must list the CRD's Containers, not ask this API.
async fn resource_list() -> Response {
    let resource = |name: &str, verbs: &[&str]| {
        serde_json::json!({
            "name": name,
            "singularName": if name.contains('/') { "" } else { "container" },
            "namespaced": true,
            "kind": "Container",
            "verbs": verbs,
        })
    };
    with_version(json(
        StatusCode::OK,
        &serde_json::json!({
            "kind": "APIResourceList",
            "apiVersion": "v1",
            "groupVersion": access_api::GROUP_VERSION,
            "resources": [
                resource(access_api::RESOURCE, &["get"]),
                resource(&format!("{}/{}", access_api::RESOURCE, access_api::SHELL), &["create", "get"]),
                resource(&format!("{}/{}", access_api::RESOURCE, access_api::PORTFORWARD), &["create", "get"]),
                resource(&format!("{}/{}", access_api::RESOURCE, access_api::LOG), &["get"]),
                resource(&format!("{}/{}", access_api::RESOURCE, access_api::WEBLOGIN), &["create"]),
                resource(&format!("{}/{}", access_api::RESOURCE, access_api::SESSIONS), &["get"]),
            ],
        }),
    ))
}

/// `GET /apis/access.hatchway.dev`.
async fn api_group() -> Response {
    let version = serde_json::json!({
        "groupVersion": access_api::GROUP_VERSION,
        "version": access_api::VERSION,
    });
    json(
        StatusCode::OK,
        &serde_json::json!({
            "kind": "APIGroup",
            "apiVersion": "v1",
            "name": access_api::GROUP,
            "versions": [version],
            "preferredVersion": version,
        }),
    )
}

/// A Container itself is not served here.
async fn no_get(req: Request) -> Response {
    status(
        StatusCode::METHOD_NOT_ALLOWED,
        "MethodNotAllowed",
        &format!(
            "{} {}: access.hatchway.dev serves only the subresources exec, portforward, log, weblogin and sessions; \
             read Containers from hatchway.dev (kubectl get containers.hatchway.dev)",
            req.method(),
            req.uri().path()
        ),
    )
}

async fn not_found(req: Request) -> Response {
    access::no_such_endpoint(req.uri().path()).map(axum::body::Body::new)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn ca_pem() -> String {
        super::super::tls::RouterCa::generate().unwrap().cert_pem
    }

    fn kubeadm_like() -> FrontProxy {
        FrontProxy::from_data(&data(&[
            ("requestheader-client-ca-file", &ca_pem()),
            ("requestheader-allowed-names", r#"["front-proxy-client"]"#),
            ("requestheader-username-headers", r#"["X-Remote-User"]"#),
            ("requestheader-group-headers", r#"["X-Remote-Group"]"#),
            ("requestheader-extra-headers-prefix", r#"["X-Remote-Extra-"]"#),
        ]))
        .unwrap()
    }

    #[test]
    fn the_front_proxys_settings_are_read_as_the_api_server_writes_them() {
        let proxy = kubeadm_like();
        assert_eq!(proxy.allowed_names, ["front-proxy-client"]);
        assert_eq!(proxy.username_headers, ["X-Remote-User"]);
        assert!(proxy.uid_headers.is_empty());
        assert!(proxy.verifier().is_ok());
    }

    #[test]
    fn unusable_settings_are_refused_with_the_key_named() {
        let err = FrontProxy::from_data(&data(&[])).unwrap_err();
        assert!(matches!(err, FrontProxyError::NoCa), "{err}");
        let err = FrontProxy::from_data(&data(&[("requestheader-client-ca-file", &ca_pem())])).unwrap_err();
        assert!(
            err.to_string().contains("requestheader-username-headers"),
            "{err}"
        );
        let err = FrontProxy::from_data(&data(&[
            ("requestheader-client-ca-file", &ca_pem()),
            ("requestheader-username-headers", "X-Remote-User"),
        ]))
        .unwrap_err();
        assert!(err.to_string().contains("not a JSON list"), "{err}");
        let err = FrontProxy::from_data(&data(&[
            (
                "requestheader-client-ca-file",
                "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
            ),
            ("requestheader-username-headers", r#"["X-Remote-User"]"#),
        ]))
        .unwrap_err();
        assert!(err.to_string().contains("requestheader-client-ca-file"), "{err}");
    }

    #[test]
    fn the_user_groups_and_extras_come_from_the_configured_headers() {
        let proxy = kubeadm_like();
        let mut headers = HeaderMap::new();
        headers.insert("x-remote-user", HeaderValue::from_static("alice"));
        headers.append("x-remote-group", HeaderValue::from_static("dev"));
        headers.append("x-remote-group", HeaderValue::from_static("system:authenticated"));
        headers.append(
            "x-remote-extra-authentication.kubernetes.io%2fpod-name",
            HeaderValue::from_static("p1"),
        );
        headers.append("x-remote-extra-scopes", HeaderValue::from_static("a"));
        headers.append("x-remote-extra-scopes", HeaderValue::from_static("b"));
        headers.insert("x-other-user", HeaderValue::from_static("mallory"));
        let user = proxy.user(&headers).unwrap();
        assert_eq!(user.username, "alice");
        assert_eq!(user.groups, ["dev", "system:authenticated"]);
        assert_eq!(
            user.extra,
            BTreeMap::from([
                (
                    "authentication.kubernetes.io/pod-name".to_owned(),
                    vec!["p1".to_owned()]
                ),
                ("scopes".to_owned(), vec!["a".to_owned(), "b".to_owned()]),
            ])
        );
        let err = proxy.user(&HeaderMap::new()).unwrap_err();
        assert!(err.contains("X-Remote-User"), "{err}");
    }

    #[test]
    fn only_allowed_names_act_as_the_front_proxy() {
        let ca = super::super::tls::RouterCa::generate().unwrap();
        let mut proxy = kubeadm_like();
        // The router's issue() names every leaf "hatchway router".
        let issued = super::super::tls::RouterTls::issue(&ca, &["x".to_owned()]).unwrap();
        let cert = CertificateDer::from_pem_slice(issued.cert_chain_pem.as_bytes()).unwrap();
        let err = proxy.check_caller(&cert).unwrap_err();
        assert!(err.contains("front-proxy-client"), "{err}");
        proxy.allowed_names = vec!["hatchway router".into()];
        assert!(proxy.check_caller(&cert).is_ok());
        proxy.allowed_names.clear();
        assert!(proxy.check_caller(&cert).is_ok(), "no list: any name");
    }
}
