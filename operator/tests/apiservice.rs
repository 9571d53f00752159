//! The aggregated API's port with real TLS: the API server's front proxy
//! (a client certificate from the request-header CA with an allowed name)
//! reaches Containers as the user it names, through the same checks as the
//! router's own API; every other caller is refused whatever headers it
//! sends; a replica passes a proxied request on to the one holding the
//! tunnel with a proof, not the front proxy's certificate.

use hatchway_testkit as support;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use bytes::Bytes;
use hatchway_api::crd::{ContainerStatus, Phase};
use hatchway_api::wire::{self, access_api};
use hatchway_operator::router::Settings;
use hatchway_operator::router::auth::Permission;
use hatchway_operator::router::peer::{PEER_PROOF, PEER_USER};
use hatchway_operator::router::select::Policy;
use http::{Request, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

const NS: &str = "team-g";
const LOCALHOST: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

/// A cluster where "alice" may do everything in [`NS`] and "bob" nothing.
fn world() -> (Arc<MemoryCluster>, Arc<StaticAuth>) {
    let auth = StaticAuth::new();
    auth.user("alice-token", "alice");
    auth.grant_all("alice", NS);
    (MemoryCluster::new(), auth)
}

/// A router serving the aggregated API, a front proxy, and Container
/// "job" running at a real gateway.
struct Rig {
    router: TestRouter,
    auth: Arc<StaticAuth>,
    front: FrontProxyPki,
    sidecar: TestSidecar,
}

async fn rig() -> Rig {
    let (cluster, auth) = world();
    let front = FrontProxyPki::new();
    let router = TestRouter::start_aggregated(
        LOCALHOST,
        0,
        cluster.clone(),
        auth.clone(),
        &front.settings,
        |_| {},
    )
    .await;
    let c = container(NS, "job");
    let uid = c.metadata.uid.clone().unwrap();
    cluster.insert(c);
    let sidecar = TestSidecar::start(&uid).await;
    cluster.set_status(NS, "job", running_at(sidecar.addr()));
    Rig {
        router,
        auth,
        front,
        sidecar,
    }
}

/// One HTTP/1.1 connection to `addr` with `tls`, or the TLS error.
async fn connect(
    addr: SocketAddr,
    tls: Arc<rustls::ClientConfig>,
) -> std::io::Result<hyper::client::conn::http1::SendRequest<Full<Bytes>>> {
    let tcp = TcpStream::connect(addr).await?;
    let mut tls = TlsConnector::from(tls)
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await?;
    // A refused client certificate shows on the first read (TLS 1.3).
    tls.write_all(b"").await?;
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .map_err(std::io::Error::other)?;
    tokio::spawn(async move {
        let _ = conn.with_upgrades().await;
    });
    Ok(sender)
}

/// A request as the front proxy sends it: the user in `X-Remote-User`,
/// groups in `X-Remote-Group`.
fn proxied(method: &str, path: &str, user: Option<&str>) -> http::request::Builder {
    let mut builder = Request::builder()
        .method(method)
        .uri(path)
        .header("host", "hatchway-api.hatchway-system.svc:443");
    if let Some(user) = user {
        builder = builder
            .header("x-remote-user", user)
            .header("x-remote-group", "system:authenticated")
            .header("x-remote-extra-scopes", "all");
    }
    builder
}

fn upgrade(builder: http::request::Builder, protocol: &str) -> Request<Full<Bytes>> {
    builder
        .header("connection", "upgrade")
        .header("upgrade", protocol)
        .body(empty())
        .unwrap()
}

fn path(name: &str, action: &str, params: &[(&str, Option<&str>)]) -> String {
    wire::Api::Aggregated.container_path(NS, name, action, params)
}

async fn send(
    sender: &mut hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    request: Request<Full<Bytes>>,
) -> http::Response<Incoming> {
    sender.ready().await.unwrap();
    sender.send_request(request).await.unwrap()
}

/// Sends 1 MiB through an upgraded port-forward to [`hashing_server`] and
/// checks the hash it answers.
async fn hash_through(response: http::Response<Incoming>) {
    let status = response.status();
    if status != StatusCode::SWITCHING_PROTOCOLS {
        panic!("port-forward refused: {status}: {}", body_text(response).await);
    }
    let mut io = TokioIo::new(hyper::upgrade::on(response).await.unwrap());
    let data: Vec<u8> = (0..1 << 20).map(|i| (i % 251) as u8).collect();
    io.write_all(&data).await.unwrap();
    io.shutdown().await.unwrap();
    let mut answer = String::new();
    io.read_to_string(&mut answer).await.unwrap();
    use sha2::Digest as _;
    assert_eq!(answer, hex::encode(sha2::Sha256::digest(&data)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_front_proxy_reaches_containers_as_the_user_it_names() {
    let Rig {
        router,
        auth,
        front,
        sidecar,
    } = rig().await;
    let addr = router.aggregated_addr.unwrap();
    let mut api = connect(addr, front.client_tls(Some("front-proxy-client")))
        .await
        .unwrap();

    // Discovery, as the aggregator and `kubectl api-resources` read it.
    let response = send(
        &mut api,
        proxied("GET", access_api::DISCOVERY, Some("system:kube-aggregator"))
            .body(empty())
            .unwrap(),
    )
    .await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.headers()[wire::SERVER_VERSION],
        env!("CARGO_PKG_VERSION")
    );
    assert_eq!(response.headers()[wire::SERVER_PROTOCOL], "1");
    let list: serde_json::Value = serde_json::from_str(&body_text(response).await).unwrap();
    assert_eq!(list["groupVersion"], access_api::GROUP_VERSION);
    let names: Vec<&str> = list["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "containers",
            "containers/exec",
            "containers/portforward",
            "containers/log",
            "containers/weblogin",
            "containers/sessions"
        ]
    );

    // Alice's resumable sessions: none yet, as JSON.
    let mut sessions_conn = connect(addr, front.client_tls(Some("front-proxy-client")))
        .await
        .unwrap();
    let response = send(
        &mut sessions_conn,
        proxied("GET", &path("job", wire::ACTION_SESSIONS, &[]), Some("alice"))
            .body(Full::new(Bytes::new()))
            .unwrap(),
    )
    .await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(body_text(response).await, r#"{"sessions":[]}"#);

    // A port-forward as alice: bytes both ways.
    let port = hashing_server().await.to_string();
    let pf = path(
        "job",
        wire::ACTION_PORTFORWARD,
        &[(wire::PARAM_PORT, Some(&port))],
    );
    let mut pf_conn = connect(addr, front.client_tls(Some("front-proxy-client")))
        .await
        .unwrap();
    hash_through(
        send(
            &mut pf_conn,
            upgrade(proxied("POST", &pf, Some("alice")), wire::UPGRADE_TCP),
        )
        .await,
    )
    .await;

    // The same in frames (as the CLI asks through the API server, whose
    // proxy would end the connection at a raw half-close): the end frame
    // is the half-close, the answer still comes.
    let mut framed_conn = connect(addr, front.client_tls(Some("front-proxy-client")))
        .await
        .unwrap();
    let response = send(
        &mut framed_conn,
        upgrade(proxied("POST", &pf, Some("alice")), wire::UPGRADE_TCP_FRAMED),
    )
    .await;
    assert_eq!(response.status(), StatusCode::SWITCHING_PROTOCOLS);
    assert_eq!(response.headers()["upgrade"], wire::UPGRADE_TCP_FRAMED);
    let io = TokioIo::new(hyper::upgrade::on(response).await.unwrap());
    let mut io = hatchway_api::frames::Framed::new(io);
    io.write_all(b"hash me").await.unwrap();
    io.shutdown().await.unwrap();
    let mut answer = String::new();
    io.read_to_string(&mut answer).await.unwrap();
    use sha2::Digest as _;
    assert_eq!(answer, hex::encode(sha2::Sha256::digest(b"hash me")));

    // The shell (`exec`): the gateway's SSH server greets, and the 101
    // carries no host key yet (status has none) but is a 101.
    let mut shell_conn = connect(addr, front.client_tls(Some("front-proxy-client")))
        .await
        .unwrap();
    let response = send(
        &mut shell_conn,
        upgrade(
            proxied("POST", &path("job", wire::ACTION_SSH, &[]), Some("alice")),
            wire::UPGRADE_SSH,
        ),
    )
    .await;
    assert_eq!(
        response.status(),
        StatusCode::SWITCHING_PROTOCOLS,
        "{}",
        body_text(response).await
    );
    let mut io = TokioIo::new(hyper::upgrade::on(response).await.unwrap());
    let mut banner = [0u8; 8];
    io.read_exact(&mut banner).await.unwrap();
    assert_eq!(&banner, b"SSH-2.0-");

    // The log tree, with hrefs under the aggregated path.
    std::fs::write(sidecar.log_dir().join("stdout.txt"), "line one\n").unwrap();
    let response = send(
        &mut api,
        proxied("GET", &path("job", "log/stdout.txt", &[]), Some("alice"))
            .body(empty())
            .unwrap(),
    )
    .await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(body_text(response).await, "line one\n");
    let response = send(
        &mut api,
        proxied("PROPFIND", &path("job", "log/", &[]), Some("alice"))
            .header("depth", "1")
            .body(empty())
            .unwrap(),
    )
    .await;
    assert_eq!(response.status().as_u16(), 207);
    let listing = body_text(response).await;
    assert!(
        listing.contains(&format!(
            "{}{NS}/containers/job/log/stdout.txt",
            access_api::PREFIX
        )),
        "{listing}"
    );

    // The user reached SubjectAccessReview as the API server named them,
    // and no token was reviewed.
    let asked = auth.last_authorized.lock().unwrap().clone().unwrap();
    assert_eq!(asked.username, "alice");
    assert_eq!(asked.groups, ["system:authenticated"]);
    assert_eq!(
        asked.extra.get("scopes").map(Vec::as_slice),
        Some(&["all".to_owned()][..])
    );
    assert_eq!(auth.authentications.load(std::sync::atomic::Ordering::Relaxed), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callers_that_are_not_the_front_proxy_are_refused_whatever_they_claim() {
    let Rig {
        router,
        front,
        sidecar: _sidecar,
        ..
    } = rig().await;
    let addr = router.aggregated_addr.unwrap();
    let pf = path("job", wire::ACTION_PORTFORWARD, &[(wire::PARAM_PORT, Some("80"))]);

    // (client certificate's name, request, status, words of the refusal)
    type Case<'a> = (Option<&'a str>, Request<Full<Bytes>>, StatusCode, &'a str);
    let cases: Vec<Case<'_>> = vec![
        // No certificate: forged headers are not believed.
        (
            None,
            upgrade(proxied("POST", &pf, Some("alice")), wire::UPGRADE_TCP),
            StatusCode::UNAUTHORIZED,
            "this port serves only the Kubernetes API server",
        ),
        // The right CA, a name that is not allowed.
        (
            Some("mallory"),
            upgrade(proxied("POST", &pf, Some("alice")), wire::UPGRADE_TCP),
            StatusCode::UNAUTHORIZED,
            "is not one of the allowed front-proxy names",
        ),
        // No certificate, a made-up peer proof.
        (
            None,
            upgrade(
                proxied("POST", &pf, None)
                    .header(PEER_USER, "eyJ1c2VybmFtZSI6ImFsaWNlIn0=")
                    .header(PEER_PROOF, "00".repeat(32)),
                wire::UPGRADE_TCP,
            ),
            StatusCode::UNAUTHORIZED,
            "the peer proof does not verify",
        ),
        // The front proxy, naming nobody.
        (
            Some("front-proxy-client"),
            upgrade(proxied("POST", &pf, None), wire::UPGRADE_TCP),
            StatusCode::UNAUTHORIZED,
            "the front proxy named no user",
        ),
        // The front proxy, naming a user without the right: SAR says no.
        (
            Some("front-proxy-client"),
            upgrade(proxied("POST", &pf, Some("bob")), wire::UPGRADE_TCP),
            StatusCode::FORBIDDEN,
            "user \"bob\" may not create containers/portforward (API group hatchway.dev) of container team-g/job",
        ),
        // The router's own path names are not served here.
        (
            Some("front-proxy-client"),
            upgrade(
                proxied("POST", &api_path(NS, "job", "portforward?port=80"), Some("alice")),
                wire::UPGRADE_TCP,
            ),
            StatusCode::NOT_FOUND,
            "no such endpoint /v1/namespaces/team-g/containers/job/portforward",
        ),
        // `ssh` is the router's name; here the shell is `exec`.
        (
            Some("front-proxy-client"),
            upgrade(
                proxied(
                    "POST",
                    &format!("{}{NS}/containers/job/ssh", access_api::PREFIX),
                    Some("alice"),
                ),
                wire::UPGRADE_SSH,
            ),
            StatusCode::NOT_FOUND,
            "no such endpoint",
        ),
        // A Container itself is read from hatchway.dev.
        (
            Some("front-proxy-client"),
            proxied(
                "GET",
                &format!("{}{NS}/containers/job", access_api::PREFIX),
                Some("alice"),
            )
            .body(empty())
            .unwrap(),
            StatusCode::METHOD_NOT_ALLOWED,
            "read Containers from hatchway.dev",
        ),
    ];
    for (cn, request, status, message) in cases {
        let mut sender = connect(addr, front.client_tls(cn)).await.unwrap();
        let what = format!("{cn:?} {} {}", request.method(), request.uri());
        let response = send(&mut sender, request).await;
        assert_eq!(response.status(), status, "{what}");
        let body = body_text(response).await;
        assert!(body.contains(message), "{what}: {body}");
    }
    assert!(
        router
            .router
            .metrics
            .auth_failures
            .with_label_values(&["not_front_proxy"])
            .get()
            >= 3,
        "refusals are counted"
    );

    // A certificate from another CA does not even finish the handshake.
    let other = FrontProxyPki::new();
    let refused = async {
        let mut sender = connect(addr, other.client_tls(Some("front-proxy-client"))).await?;
        sender.ready().await.map_err(std::io::Error::other)?;
        sender
            .send_request(upgrade(proxied("POST", &pf, Some("alice")), wire::UPGRADE_TCP))
            .await
            .map_err(std::io::Error::other)
    }
    .await;
    assert!(refused.is_err(), "a foreign CA's certificate was accepted");

    // The router's own port ignores X-Remote-* entirely.
    let mut client = router.client().await;
    let response = client
        .send(upgrade(
            proxied("POST", &api_path(NS, "job", "portforward?port=80"), Some("alice")),
            wire::UPGRADE_TCP,
        ))
        .await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert!(body_text(response).await.contains("authentication required"));
    let response = client
        .send(upgrade(proxied("POST", &pf, Some("alice")), wire::UPGRADE_TCP))
        .await;
    assert_eq!(
        response.status(),
        StatusCode::NOT_FOUND,
        "the aggregated paths are not on the router's port"
    );
}

/// Routers that reach pods only through tunnels.
fn tunnels_only(settings: &mut Settings) {
    settings.policy = Policy {
        prefer_tunnel: false,
        direct_access: false,
    };
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxied_request_is_passed_on_to_the_replica_holding_the_tunnel() {
    let (cluster, auth) = world();
    auth.grant("carol", NS, Permission::PORTFORWARD);
    let front = FrontProxyPki::new();
    // Replicas share the aggregated port: each on its own loopback address.
    let a = TestRouter::start_aggregated(
        LOCALHOST,
        0,
        cluster.clone(),
        auth.clone(),
        &front.settings,
        tunnels_only,
    )
    .await;
    let port = a.aggregated_addr.unwrap().port();
    let b = TestRouter::start_aggregated(
        "127.0.0.2".parse().unwrap(),
        port,
        cluster.clone(),
        auth.clone(),
        &front.settings,
        tunnels_only,
    )
    .await;
    cluster.set_replicas(vec![a.url.clone(), b.url.clone()]);
    let c = container(NS, "shared");
    let uid = c.metadata.uid.clone().unwrap();
    cluster.insert(c);
    cluster.set_status(
        NS,
        "shared",
        ContainerStatus {
            phase: Some(Phase::Running),
            ..ContainerStatus::default()
        },
    );
    let _sidecar = TestSidecar::start_tunnelled(&uid, &a.url).await;
    let held_by_a = format!("tunnel {}", a.url);
    eventually("status to name replica A", || async {
        cluster
            .status(NS, "shared")
            .and_then(|s| s.gateway)
            .and_then(|g| g.tunnel)
            .as_deref()
            == Some(held_by_a.as_str())
    })
    .await;

    // The front proxy reaches B; B passes it to A with its proof; A
    // authorizes carol again and relays.
    let target = hashing_server().await.to_string();
    let pf = path(
        "shared",
        wire::ACTION_PORTFORWARD,
        &[(wire::PARAM_PORT, Some(&target))],
    );
    let mut sender = connect(
        b.aggregated_addr.unwrap(),
        front.client_tls(Some("front-proxy-client")),
    )
    .await
    .unwrap();
    hash_through(
        send(
            &mut sender,
            upgrade(proxied("POST", &pf, Some("carol")), wire::UPGRADE_TCP),
        )
        .await,
    )
    .await;
    let forwards =
        |r: &TestRouter, result: &str| r.router.metrics.forwards.with_label_values(&[result]).get();
    assert_eq!(forwards(&b, "ok"), 1);
    assert_eq!(a.router.metrics.tunnel_streams.get(), 1);

    // A user B refuses is never passed on.
    let mut sender = connect(
        b.aggregated_addr.unwrap(),
        front.client_tls(Some("front-proxy-client")),
    )
    .await
    .unwrap();
    let response = send(
        &mut sender,
        upgrade(proxied("POST", &pf, Some("bob")), wire::UPGRADE_TCP),
    )
    .await;
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    assert_eq!(forwards(&b, "ok"), 1);
}
