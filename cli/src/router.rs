//! Talking to the Hatchway API, either way ([`Endpoint`]): the router's
//! own URL (one TLS connection, TCP_NODELAY, per use) or the aggregated API
//! through the Kubernetes API server (`kube`'s client, the kubeconfig's
//! credentials). Plain requests (logs) and upgraded ones (`POST` with
//! `Connection: upgrade`: shells, port-forwards); refusals become errors
//! that carry the server's own sentence (the router's text, or a
//! Kubernetes `Status` message) and map to exit codes.

use std::time::Duration;

use bytes::Bytes;
use hatchway_api::readahead::ReadAhead;
use hatchway_api::wire;
use http::{HeaderMap, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http1::SendRequest;
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio_rustls::TlsConnector;

use crate::connection::Server;
use crate::warm::Spare;

/// A router to talk to directly, as whom.
#[derive(Clone)]
pub struct Target {
    pub server: Server,
    pub tls: std::sync::Arc<rustls::ClientConfig>,
    pub token: String,
    /// A connection made ahead of need, for callers that open many
    /// ([`Endpoint::kept_warm`]).
    pub spare: Option<std::sync::Arc<Spare>>,
}

/// The way to the Hatchway API.
#[derive(Clone)]
pub enum Endpoint {
    /// The router's own URL, with a bearer token.
    Direct(Target),
    /// The aggregated API (`access.hatchway.dev`) through the Kubernetes
    /// API server, as the kubeconfig's user.
    Aggregated(kube::Client),
}

/// A response body from either way.
pub type ResponseBody = http_body_util::combinators::UnsyncBoxBody<Bytes, BoxError>;
type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl Endpoint {
    /// The same endpoint, keeping a connection to the router ready for
    /// the next upgrade (see [`crate::warm`]): for callers that open many,
    /// as a port-forward does. Through the API server nothing changes
    /// (`kube`'s client pools its own connections).
    pub fn kept_warm(self) -> Self {
        match self {
            Endpoint::Direct(target) => Endpoint::Direct(Target {
                spare: Some(Default::default()),
                ..target
            }),
            aggregated => aggregated,
        }
    }

    /// The path of `action` (which may go on: `log/stdout.txt`) on
    /// Container `namespace/name`, with query `params`.
    pub fn path(&self, namespace: &str, name: &str, action: &str, params: &[(&str, Option<&str>)]) -> String {
        match self {
            Endpoint::Direct(target) => format!(
                "{}{}",
                target.server.prefix,
                wire::Api::Router.container_path(namespace, name, action, params)
            ),
            Endpoint::Aggregated(_) => wire::Api::Aggregated.container_path(namespace, name, action, params),
        }
    }

    /// Which way, in words (for messages).
    pub fn describe(&self) -> String {
        match self {
            Endpoint::Direct(target) => format!("the router at {}", target.server.url),
            Endpoint::Aggregated(_) => {
                format!("the Kubernetes API server ({})", wire::access_api::GROUP_VERSION)
            }
        }
    }

    /// The server's version: the router's `GET /version`, or the headers
    /// of the aggregated API's discovery.
    pub async fn server_version(&self) -> Result<wire::ServerVersion, RouterError> {
        let path = match self {
            Endpoint::Direct(target) => format!("{}{}", target.server.prefix, wire::VERSION_PATH),
            Endpoint::Aggregated(_) => wire::access_api::DISCOVERY.to_owned(),
        };
        let response = self.session().send(http::Method::GET, &path, &[]).await?;
        if response.status() != StatusCode::OK {
            return Err(refusal(response).await);
        }
        let unreadable = |what: String| RouterError::Refused {
            status: StatusCode::BAD_GATEWAY,
            message: format!("the server's version is unreadable: {what}"),
        };
        match self {
            Endpoint::Aggregated(_) => {
                let header = |name: &str| {
                    response
                        .headers()
                        .get(name)
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_owned)
                        .ok_or_else(|| unreadable(format!("no {name} header")))
                };
                Ok(wire::ServerVersion {
                    version: header(wire::SERVER_VERSION)?,
                    protocol: header(wire::SERVER_PROTOCOL)?
                        .parse()
                        .map_err(|_| unreadable("a protocol that is not a number".into()))?,
                })
            }
            Endpoint::Direct(_) => serde_json::from_slice(&read_all(response.into_body()).await?)
                .map_err(|e| unreadable(e.to_string())),
        }
    }

    /// A session: requests in order, over one connection where it can.
    pub fn session(&self) -> Session<'_> {
        Session {
            endpoint: self,
            sender: None,
        }
    }

    /// Sends `POST path` with `Upgrade: protocol` and the `extra`
    /// headers, and returns the upgraded stream. An answer that takes
    /// longer than [`UPGRADE_TIMEOUT`] is a transient failure: a network
    /// dropping packets, or a replica going away mid-request, would
    /// otherwise hold the caller for as long as TCP keeps retrying.
    pub async fn upgrade(
        &self,
        path: &str,
        protocol: &str,
        extra: &[(&str, String)],
    ) -> Result<Upgrade, RouterError> {
        self.upgrade_within(UPGRADE_TIMEOUT, path, protocol, extra).await
    }

    /// [`Endpoint::upgrade`] giving up after `timeout`.
    async fn upgrade_within(
        &self,
        timeout: Duration,
        path: &str,
        protocol: &str,
        extra: &[(&str, String)],
    ) -> Result<Upgrade, RouterError> {
        // The request's id goes to the router (which keeps it through the
        // gateway's audit trail) and into the timeout's message: a silent
        // request can then be found in the routers' logs.
        let id = format!("{:032x}", rand::random::<u128>());
        let mut extra = extra.to_vec();
        extra.push((wire::REQUEST_ID, id.clone()));
        tokio::time::timeout(timeout, self.upgrade_now(path, protocol, &extra))
            .await
            .unwrap_or_else(|_| {
                Err(RouterError::Connect {
                    addr: self.describe(),
                    source: std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        format!("no answer in {} s (request {id})", timeout.as_secs_f32()),
                    ),
                })
            })
    }

    async fn upgrade_now(
        &self,
        path: &str,
        protocol: &str,
        extra: &[(&str, String)],
    ) -> Result<Upgrade, RouterError> {
        let request = |builder: http::request::Builder| {
            let mut builder = builder
                .header(header::CONNECTION, "upgrade")
                .header(header::UPGRADE, protocol);
            for (name, value) in extra {
                builder = builder.header(*name, value);
            }
            builder
        };
        let mut response = match self {
            Endpoint::Direct(target) => target
                .send_once(|| {
                    Ok(request(direct_request(target, http::Method::POST, path)).body(Empty::new())?)
                })
                .await?
                .map(box_body),
            Endpoint::Aggregated(client) => {
                let request = request(Request::post(path).header(header::USER_AGENT, USER_AGENT))
                    .body(kube::client::Body::empty())?;
                client
                    .send(request)
                    .await
                    .map_err(RouterError::Kube)?
                    .map(box_body)
            }
        };
        if response.status() != StatusCode::SWITCHING_PROTOCOLS {
            return Err(refusal(response).await);
        }
        let headers = std::mem::take(response.headers_mut());
        Ok(Upgrade {
            io: TokioIo::new(hyper::upgrade::on(response).await?),
            headers,
        })
    }
}

impl Target {
    /// Sends the request `make` builds on a connection of its own: the
    /// spare when one is ready (and the next one dialled behind it), else
    /// a new one. A spare the router closed meanwhile (a replica restarted,
    /// its idle timeout) fails before any answer; the request then goes
    /// again on a new connection.
    async fn send_once(
        &self,
        make: impl Fn() -> Result<Request<Empty<Bytes>>, RouterError>,
    ) -> Result<Response<hyper::body::Incoming>, RouterError> {
        if let Some(spare) = &self.spare {
            let taken = spare.take();
            spare.refill(self);
            if let Some(mut sender) = taken
                && let Ok(response) = sender.send_request(make()?).await
            {
                return Ok(response);
            }
        }
        Ok(connect(self).await?.send_request(make()?).await?)
    }
}

/// Requests to an endpoint in order; the direct way keeps its connection
/// between them.
pub struct Session<'a> {
    endpoint: &'a Endpoint,
    sender: Option<SendRequest<Empty<Bytes>>>,
}

impl Session<'_> {
    /// Sends `method path` with `headers`; the answer whatever its status.
    /// An answer whose head takes longer than [`ANSWER_TIMEOUT`] is a
    /// transient failure, and the connection is not used again: a replica
    /// that went away without a word (its pod's address gone) would
    /// otherwise hold a `logs -f` silent for as long as TCP retries.
    pub async fn send(
        &mut self,
        method: http::Method,
        path: &str,
        headers: &[(header::HeaderName, String)],
    ) -> Result<Response<ResponseBody>, RouterError> {
        self.send_within(ANSWER_TIMEOUT, method, path, headers).await
    }

    async fn send_within(
        &mut self,
        timeout: Duration,
        method: http::Method,
        path: &str,
        headers: &[(header::HeaderName, String)],
    ) -> Result<Response<ResponseBody>, RouterError> {
        match tokio::time::timeout(timeout, self.send_now(method, path, headers)).await {
            Ok(answer) => answer,
            Err(_) => {
                self.sender = None;
                Err(RouterError::Connect {
                    addr: self.endpoint.describe(),
                    source: std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        format!("no answer in {} s", timeout.as_secs_f32()),
                    ),
                })
            }
        }
    }

    async fn send_now(
        &mut self,
        method: http::Method,
        path: &str,
        headers: &[(header::HeaderName, String)],
    ) -> Result<Response<ResponseBody>, RouterError> {
        match self.endpoint {
            Endpoint::Direct(target) => {
                let mut sender = match self.sender.take() {
                    Some(sender) if !sender.is_closed() => sender,
                    _ => connect(target).await?,
                };
                let mut request = direct_request(target, method, path);
                for (name, value) in headers {
                    request = request.header(name, value);
                }
                sender.ready().await?;
                let response = sender.send_request(request.body(Empty::new())?).await?;
                self.sender = Some(sender);
                Ok(response.map(box_body))
            }
            Endpoint::Aggregated(client) => {
                let mut request = Request::builder()
                    .method(method)
                    .uri(path)
                    .header(header::USER_AGENT, USER_AGENT);
                for (name, value) in headers {
                    request = request.header(name, value);
                }
                let response = client
                    .send(request.body(kube::client::Body::empty())?)
                    .await
                    .map_err(RouterError::Kube)?;
                Ok(response.map(box_body))
            }
        }
    }
}

fn box_body<B>(body: B) -> ResponseBody
where
    B: hyper::body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    body.map_err(Into::into).boxed_unsync()
}

/// Why the router did not give what was asked.
#[derive(Debug, thiserror::Error)]
pub enum RouterError {
    #[error("cannot connect to the router at {addr}: {source}")]
    Connect { addr: String, source: std::io::Error },
    #[error("invalid TLS name {0:?} for the router")]
    Name(String),
    #[error("TLS to the router failed: {0}")]
    Tls(std::io::Error),
    #[error("HTTP to the router failed: {0}")]
    Http(#[from] hyper::Error),
    #[error("the Kubernetes API: {0}")]
    Kube(kube::Error),
    #[error("reading the answer failed: {0}")]
    Body(Box<dyn std::error::Error + Send + Sync>),
    #[error("the connection through the router failed: {0}")]
    Relay(std::io::Error),
    #[error("invalid request: {0}")]
    Request(#[from] http::Error),
    /// The router answered with something other than 101.
    #[error("{message}")]
    Refused { status: StatusCode, message: String },
    /// A 503 with `Retry-After`: the router expects to serve this in a
    /// moment (a tunnel moving between replicas), unlike a Container that
    /// is not running yet.
    #[error("{message}")]
    Settling { message: String },
}

impl RouterError {
    /// The process exit code for this failure: 2 for a refusal the user can
    /// fix (4xx), 3 for one on the server side (5xx or unexpected), 1 for
    /// anything before the router answered.
    pub fn exit_code(&self) -> i32 {
        match self {
            RouterError::Refused { status, .. } if status.is_client_error() => 2,
            RouterError::Refused { .. } | RouterError::Settling { .. } => 3,
            _ => 1,
        }
    }
}

impl RouterError {
    /// Whether trying again later may succeed: the router could not be
    /// reached (restarting, network blip) or could not serve yet (502 a
    /// peer replica gone, 503 not ready or tunnel down, 504).
    pub fn is_transient(&self) -> bool {
        match self {
            RouterError::Connect { .. } | RouterError::Tls(_) | RouterError::Http(_) => true,
            // The API server unreachable (restarting, a network blip).
            RouterError::Kube(kube::Error::HyperError(_) | kube::Error::Service(_)) => true,
            RouterError::Kube(_) => false,
            RouterError::Body(_) => true,
            RouterError::Refused { status, .. } => matches!(status.as_u16(), 502..=504),
            RouterError::Settling { .. } => true,
            RouterError::Name(_) | RouterError::Relay(_) | RouterError::Request(_) => false,
        }
    }
}

/// How long a plain request's answer (its head) may take: over what the
/// router itself may wait before answering (a saved-log read waits up to
/// 10 s for its turn).
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(15);

/// How long an upgrade's answer may take: well over what the router waits
/// for a moving tunnel (2 s) and the gateway's own set-up.
pub const UPGRADE_TIMEOUT: Duration = Duration::from_secs(20);

/// The user agent of every request.
const USER_AGENT: &str = concat!("kubectl-hatch/", env!("CARGO_PKG_VERSION"));

/// Opens a TLS connection to the router; requests go through the returned
/// sender (in order, one at a time) until it reports an error.
pub async fn connect(target: &Target) -> Result<SendRequest<Empty<Bytes>>, RouterError> {
    let server = &target.server;
    let addr = format!("{}:{}", server.host, server.port);
    // A replica that just went away can stay in the Service's (or the
    // NodePort's) rules for a moment: refused or unanswered attempts give
    // way to new ones, which may reach another replica.
    let tcp = hatchway_api::dial::connect(&server.host, server.port)
        .await
        .map_err(|source| RouterError::Connect { addr, source })?;
    let name =
        ServerName::try_from(server.host.clone()).map_err(|_| RouterError::Name(server.host.clone()))?;
    let tls = TlsConnector::from(target.tls.clone())
        .connect(name, ReadAhead::new(tcp))
        .await
        .map_err(RouterError::Tls)?;
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await?;
    tokio::spawn(async move {
        let _ = conn.with_upgrades().await;
    });
    Ok(sender)
}

/// A request to the router with the user's token.
fn direct_request(target: &Target, method: http::Method, path: &str) -> http::request::Builder {
    Request::builder()
        .method(method)
        .uri(path)
        .header(header::HOST, &target.server.authority)
        .header(header::AUTHORIZATION, format!("Bearer {}", target.token))
        .header(header::USER_AGENT, USER_AGENT)
}

/// The refusal in `response`: the router's plain-text sentence, a
/// Kubernetes `Status` message (the API server's own refusals, e.g. RBAC),
/// or the status when neither came.
pub async fn refusal(response: Response<ResponseBody>) -> RouterError {
    let status = response.status();
    let settling =
        status == StatusCode::SERVICE_UNAVAILABLE && response.headers().contains_key(header::RETRY_AFTER);
    let body = response
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let body = &body[..body.len().min(64 * 1024)];
    let text =
        kubernetes_status_message(body).unwrap_or_else(|| String::from_utf8_lossy(body).trim().to_owned());
    let message = if text.is_empty() {
        format!("the server answered {status}")
    } else {
        format!("{text} ({status})")
    };
    if settling {
        return RouterError::Settling { message };
    }
    RouterError::Refused { status, message }
}

/// A whole response body.
pub async fn read_all(body: ResponseBody) -> Result<Bytes, RouterError> {
    Ok(body.collect().await.map_err(RouterError::Body)?.to_bytes())
}

/// The message of a `metav1.Status` body.
fn kubernetes_status_message(body: &[u8]) -> Option<String> {
    let value: serde_json::Value = serde_json::from_slice(body).ok()?;
    (value.get("kind")?.as_str()? == "Status")
        .then(|| value.get("message")?.as_str().map(str::to_owned))
        .flatten()
        .filter(|m| !m.is_empty())
}

/// An upgraded connection and the headers of the router's `101`.
pub struct Upgrade {
    pub io: TokioIo<Upgraded>,
    pub headers: HeaderMap,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_go_behind_the_routers_own_path() {
        let target = Target {
            server: Server::parse("https://r.example/p").unwrap(),
            tls: std::sync::Arc::new(
                rustls::ClientConfig::builder_with_provider(hatchway_api::tls::provider())
                    .with_safe_default_protocol_versions()
                    .unwrap()
                    .with_root_certificates(rustls::RootCertStore::empty())
                    .with_no_client_auth(),
            ),
            token: String::new(),
            spare: None,
        };
        assert_eq!(
            Endpoint::Direct(target).path(
                "ns",
                "a b",
                wire::ACTION_SSH,
                &[(wire::PARAM_LOGIN_USERNAME, Some("root"))]
            ),
            "/p/v1/namespaces/ns/containers/a%20b/ssh?login_username=root"
        );
    }

    #[test]
    fn kubernetes_status_messages_are_the_refusal() {
        let body = br#"{"kind":"Status","apiVersion":"v1","status":"Failure","message":"containers.access.hatchway.dev \"web\" is forbidden: User \"bob\" cannot create resource \"containers/exec\"","reason":"Forbidden","code":403}"#;
        let message = kubernetes_status_message(body).unwrap();
        assert!(
            message.starts_with("containers.access.hatchway.dev \"web\" is forbidden"),
            "{message}"
        );
        assert_eq!(kubernetes_status_message(b"user x may not create shell"), None);
        assert_eq!(
            kubernetes_status_message(br#"{"kind":"Other","message":"m"}"#),
            None
        );
    }

    #[test]
    fn refusals_map_to_exit_codes() {
        let refused = |status| RouterError::Refused {
            status,
            message: String::new(),
        };
        assert_eq!(refused(StatusCode::FORBIDDEN).exit_code(), 2);
        assert_eq!(refused(StatusCode::SERVICE_UNAVAILABLE).exit_code(), 3);
    }

    /// A TLS server (the test PKI) that reads each request's head on a new
    /// connection, keeps it in the list, and never answers; a target for
    /// it.
    async fn silent_router() -> (Target, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
        use rustls::pki_types::pem::PemObject as _;
        use tokio::io::AsyncReadExt as _;
        let pki = hatchway_testkit::pki();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(pki.server_config().unwrap());
        let heard = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let heads = heard.clone();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let (acceptor, heads) = (acceptor.clone(), heads.clone());
                tokio::spawn(async move {
                    let mut tls = acceptor.accept(tcp).await.unwrap();
                    let mut got = Vec::new();
                    while !got.ends_with(b"\r\n\r\n") {
                        let mut byte = [0u8];
                        if tls.read_exact(&mut byte).await.is_err() {
                            return;
                        }
                        got.push(byte[0]);
                    }
                    heads.lock().unwrap().push(String::from_utf8(got).unwrap());
                    // Silent, the connection open.
                    std::future::pending::<()>().await;
                });
            }
        });
        let mut roots = rustls::RootCertStore::empty();
        for cert in rustls::pki_types::CertificateDer::pem_slice_iter(pki.ca_pem.as_bytes()) {
            roots.add(cert.unwrap()).unwrap();
        }
        let target = Target {
            server: Server::parse(&format!("https://{addr}")).unwrap(),
            tls: std::sync::Arc::new(
                rustls::ClientConfig::builder_with_provider(hatchway_api::tls::provider())
                    .with_safe_default_protocol_versions()
                    .unwrap()
                    .with_root_certificates(roots)
                    .with_no_client_auth(),
            ),
            token: "t".into(),
            spare: None,
        };
        (target, heard)
    }

    /// A router that reads the upgrade and never answers: the CLI gives up
    /// and its message names the request id the router was sent, so the
    /// request can be found in the routers' logs.
    #[tokio::test]
    async fn a_silent_router_is_reported_with_the_request_id() {
        let (target, heard) = silent_router().await;
        let error = Endpoint::Direct(target)
            .upgrade_within(Duration::from_secs(2), "/v1/x", "ssh", &[])
            .await
            .err()
            .expect("no answer is an error");
        let head = heard.lock().unwrap()[0].to_ascii_lowercase();
        let id = head
            .lines()
            .find_map(|line| line.strip_prefix("x-hatchway-request-id: "))
            .expect("the upgrade carries a request id");
        assert_eq!(id.len(), 32, "{head}");
        let message = error.to_string();
        assert!(
            message.contains(&format!("no answer in 2 s (request {id})")),
            "{message}"
        );
        assert!(error.is_transient(), "{error:?}");
    }

    /// A kept connection whose router went silent: the request gives up
    /// (a transient error naming the wait) and the next one goes on a new
    /// connection.
    #[tokio::test]
    async fn a_silent_answer_gives_up_and_the_next_request_connects_anew() {
        let (target, heard) = silent_router().await;
        let endpoint = Endpoint::Direct(target);
        let mut session = endpoint.session();
        for connection in 1..=2 {
            let error = session
                .send_within(Duration::from_millis(300), http::Method::GET, "/v1/x", &[])
                .await
                .expect_err("no answer is an error");
            assert!(error.to_string().contains("no answer in 0.3 s"), "{error}");
            assert!(error.is_transient(), "{error:?}");
            assert_eq!(
                heard.lock().unwrap().len(),
                connection,
                "one connection per request"
            );
        }
    }

    /// A 503 with `Retry-After` (a tunnel moving) is worth trying again at
    /// once; a 503 without it ("not running yet") is a plain refusal. Both
    /// exit 3 and carry the router's sentence.
    #[tokio::test]
    async fn a_503_with_retry_after_is_settling() {
        let response = |retry_after: bool, text: &'static str| {
            let mut builder = Response::builder().status(StatusCode::SERVICE_UNAVAILABLE);
            if retry_after {
                builder = builder.header(header::RETRY_AFTER, "1");
            }
            builder
                .body(box_body(http_body_util::Full::new(Bytes::from_static(
                    text.as_bytes(),
                ))))
                .unwrap()
        };
        let moving = refusal(response(true, "tunnel is down: moving\n")).await;
        assert!(matches!(moving, RouterError::Settling { .. }), "{moving:?}");
        assert_eq!(
            moving.to_string(),
            "tunnel is down: moving (503 Service Unavailable)"
        );
        assert!(moving.is_transient());
        assert_eq!(moving.exit_code(), 3);
        let queued = refusal(response(false, "container ns/job is not running yet")).await;
        assert!(
            matches!(queued, RouterError::Refused { status, .. } if status == StatusCode::SERVICE_UNAVAILABLE),
            "{queued:?}"
        );
        assert_eq!(queued.exit_code(), 3);
    }
}
