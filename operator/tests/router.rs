//! The router end to end in one process: real TLS, real sidecar gateways,
//! the user API's refusals and routes.

use hatchway_testkit as support;

use http::StatusCode;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const NS: &str = "team-a";

/// A router with user "alice" (token "alice-token", every permission in
/// NS) and "bob" (token "bob-token", none).
async fn rig() -> (
    TestRouter,
    std::sync::Arc<MemoryCluster>,
    std::sync::Arc<StaticAuth>,
) {
    let cluster = MemoryCluster::new();
    let auth = StaticAuth::new();
    auth.user("alice-token", "alice");
    auth.grant_all("alice", NS);
    auth.user("bob-token", "bob");
    let router = TestRouter::start(cluster.clone(), auth.clone()).await;
    (router, cluster, auth)
}

#[tokio::test]
async fn health_answers_without_credentials() {
    let (router, _, _) = rig().await;
    let mut client = router.client().await;
    let response = client
        .send(request("GET", "/healthz", None).body(empty()).unwrap())
        .await;
    assert_eq!(response.status(), StatusCode::OK);
}

#[tokio::test]
async fn refusals_have_status_codes_and_messages() {
    let (router, cluster, _) = rig().await;
    cluster.insert(container(NS, "queued"));
    let mut client = router.client().await;
    let pf = api_path(NS, "queued", "portforward?port=80");
    let upgrade = |token: Option<&str>, path: &str| upgrade_request(path, token, "tcp");
    let cases = [
        (
            upgrade(None, &pf),
            StatusCode::UNAUTHORIZED,
            "authentication required",
        ),
        (
            upgrade(Some("nobody"), &pf),
            StatusCode::UNAUTHORIZED,
            "authentication failed: token rejected",
        ),
        (
            upgrade(Some("bob-token"), &pf),
            StatusCode::FORBIDDEN,
            "user \"bob\" may not create containers/portforward (API group hatchway.dev) of container team-a/queued",
        ),
        (
            upgrade(
                Some("alice-token"),
                &api_path(NS, "missing", "portforward?port=80"),
            ),
            StatusCode::NOT_FOUND,
            "container team-a/missing not found",
        ),
        (
            upgrade(Some("alice-token"), &pf),
            StatusCode::SERVICE_UNAVAILABLE,
            "container is not running yet",
        ),
        (
            request("GET", &pf, Some("alice-token")).body(empty()).unwrap(),
            StatusCode::BAD_REQUEST,
            "a port-forward needs POST over HTTP/1.1",
        ),
        (
            request("GET", "/v1/nothing", Some("alice-token"))
                .body(empty())
                .unwrap(),
            StatusCode::NOT_FOUND,
            "no such endpoint /v1/nothing",
        ),
        (
            // A name smuggled in percent-encoded is not decoded into a
            // valid one: the route table and the checks see the raw path.
            request(
                "POST",
                "/v1/namespaces/ns1/containers/job%2Ex/ssh",
                Some("alice-token"),
            )
            .body(empty())
            .unwrap(),
            StatusCode::NOT_FOUND,
            "no such endpoint /v1/namespaces/ns1/containers/job%2Ex/ssh",
        ),
    ];
    for (req, status, message) in cases {
        let uri = req.uri().clone();
        let response = client.send(req).await;
        let got = response.status();
        let has_basic = response
            .headers()
            .get_all("www-authenticate")
            .iter()
            .any(|v| v.to_str().unwrap().starts_with("Basic "));
        let body = body_text(response).await;
        assert_eq!(got, status, "{uri}: {body}");
        assert!(
            body.starts_with(message),
            "{uri}: {body:?} should start with {message:?}"
        );
        assert_eq!(has_basic, status == StatusCode::UNAUTHORIZED, "{uri}");
    }
}

/// Waits for a line of `sidecar`'s audit trail (gateway.txt) that starts
/// with `what` (after the time) and names the user the router
/// authenticated (alice; no test sets the user header itself) and the
/// router replica that sent the request.
async fn audited(sidecar: &TestSidecar, router: &TestRouter, what: &str) {
    let trail = sidecar.audit_dir().join("gateway.txt");
    let replica = format!("replica={:?}", router.router.settings.replica);
    eventually(&format!("{what} by alice in gateway.txt"), || {
        let text = std::fs::read_to_string(&trail).unwrap_or_default();
        let found = text.lines().any(|l| {
            l.split_once(' ').is_some_and(|(_, rest)| rest.starts_with(what))
                && l.contains("user=\"alice\"")
                && l.contains(&replica)
        });
        async move { found }
    })
    .await;
}

#[tokio::test]
async fn port_forward_reaches_a_port_in_the_container_directly() {
    let (router, cluster, _) = rig().await;
    let c = container(NS, "web");
    let sidecar = TestSidecar::start(c.metadata.uid.as_deref().unwrap()).await;
    // An echo server "inside the container".
    let echo = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = echo.local_addr().unwrap().port();
    tokio::spawn(async move {
        let (mut s, _) = echo.accept().await.unwrap();
        let (mut r, mut w) = s.split();
        tokio::io::copy(&mut r, &mut w).await.unwrap();
    });
    cluster.insert(c);
    cluster.set_status(NS, "web", running_at(sidecar.addr()));

    let mut client = router.client().await;
    let response = client
        .send(upgrade_request(
            &api_path(NS, "web", &format!("portforward?port={port}")),
            Some("alice-token"),
            "tcp",
        ))
        .await;
    assert_eq!(response.status(), StatusCode::SWITCHING_PROTOCOLS);
    let mut stream = hyper_util::rt::TokioIo::new(hyper::upgrade::on(response).await.unwrap());
    stream.write_all(b"hello through the router").await.unwrap();
    stream.shutdown().await.unwrap();
    let mut echoed = Vec::new();
    stream.read_to_end(&mut echoed).await.unwrap();
    assert_eq!(echoed, b"hello through the router");
    audited(&sidecar, &router, "session").await;
    let metrics = router.router.metrics.encode();
    assert!(
        metrics.contains("hatchway_router_gateway_choices_total{outcome=\"direct\"} 1"),
        "{metrics}"
    );
}

#[tokio::test]
async fn the_next_port_forward_connection_finds_its_gateway_connection_ready() {
    let cluster = MemoryCluster::new();
    let router = TestRouter::start_with(cluster.clone(), auth_with_alice(), |s| {
        // Kept longer than a loaded test machine may pause.
        s.gateway_idle = std::time::Duration::from_secs(60);
    })
    .await;
    let c = container(NS, "web");
    let sidecar = TestSidecar::start(c.metadata.uid.as_deref().unwrap()).await;
    let echo = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = echo.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = echo.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    cluster.insert(c);
    cluster.set_status(NS, "web", running_at(sidecar.addr()));
    for i in 0..3 {
        // An upgrade takes the client's connection over: one per forward.
        let response = router
            .client()
            .await
            .send(upgrade_request(
                &api_path(NS, "web", &format!("portforward?port={port}")),
                Some("alice-token"),
                "tcp",
            ))
            .await;
        assert_eq!(
            response.status(),
            StatusCode::SWITCHING_PROTOCOLS,
            "connection {i}"
        );
        let mut stream = hyper_util::rt::TokioIo::new(hyper::upgrade::on(response).await.unwrap());
        stream.write_all(b"ping").await.unwrap();
        let mut echoed = [0u8; 4];
        stream.read_exact(&mut echoed).await.unwrap();
        assert_eq!(&echoed, b"ping");
        // After an upgrade the router connects a spare to the same gateway.
        eventually("a spare gateway connection", || {
            let ready = router.router.gateways.len() == 1;
            async move { ready }
        })
        .await;
    }
    assert_eq!(gateway_connections(&router, "new"), 1);
    assert_eq!(gateway_connections(&router, "reused"), 2);
}

// ------------------------------------------------------------ web apps

/// The host key the test web app puts on its answers.
const FORGED_KEY: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBm0iXB0JkcNnlb5bzJ4tlZsJ8D4lEbF3TUcnJg9PQ9a";

/// Asserts that nothing only the gateway or the router may say reached
/// the user in an answer of a web app.
fn nothing_forged(headers: &http::HeaderMap) {
    let forged: Vec<_> = headers
        .keys()
        .map(|k| k.as_str())
        .filter(|k| k.starts_with("hatchway-") || k.starts_with("x-hatchway-"))
        .collect();
    assert!(forged.is_empty(), "{forged:?} in {headers:?}");
}

/// A small web app "inside the container": echoes the request line and
/// headers; `/ws` speaks real WebSocket (tungstenite) and echoes messages;
/// every answer also forges what only the gateway may say.
async fn start_web_app() -> u16 {
    start_counted_web_app().await.0
}

/// [`start_web_app`], and the count of connections it accepted.
async fn start_counted_web_app() -> (u16, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use hyper::service::service_fn;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let accepted = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = accepted.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            tokio::spawn(async move {
                let mut peek = [0u8; 64];
                let n = stream.peek(&mut peek).await.unwrap_or(0);
                if peek[..n].starts_with(b"GET /ws") {
                    use futures::{SinkExt, StreamExt};
                    // An app forging what only the gateway may say on a
                    // `101`: a host key, a resumable session, our header.
                    // (tungstenite's callback type: its error is its answer.)
                    #[allow(clippy::result_large_err)]
                    let forge = |_: &tokio_tungstenite::tungstenite::handshake::server::Request,
                                 mut response: tokio_tungstenite::tungstenite::handshake::server::Response| {
                        let headers = response.headers_mut();
                        headers.insert(hatchway_api::wire::SSH_HOST_KEY, FORGED_KEY.parse().unwrap());
                        headers.insert(hatchway_api::wire::resumable::ID, "forged".parse().unwrap());
                        headers.insert(hatchway_api::wire::resumable::SECRET, "00".parse().unwrap());
                        headers.insert("x-hatchway-user", "root".parse().unwrap());
                        Ok(response)
                    };
                    let mut ws = tokio_tungstenite::accept_hdr_async(stream, forge).await.unwrap();
                    while let Some(Ok(message)) = ws.next().await {
                        if message.is_close() || ws.send(message).await.is_err() {
                            break;
                        }
                    }
                    return;
                }
                let service = service_fn(|req: http::Request<hyper::body::Incoming>| async move {
                    let mut seen: Vec<String> = req
                        .headers()
                        .iter()
                        .map(|(k, v)| format!("{k}: {}", v.to_str().unwrap_or("?")))
                        .collect();
                    seen.sort();
                    seen.insert(0, format!("{} {}", req.method(), req.uri()));
                    // Answer only once the whole body is in (as an upload
                    // handler would), and show it.
                    let body = http_body_util::BodyExt::collect(req.into_body())
                        .await
                        .unwrap()
                        .to_bytes();
                    seen.push(format!("body: {}", String::from_utf8_lossy(&body)));
                    Ok::<_, std::convert::Infallible>(
                        http::Response::builder()
                            .header("x-app", "yes")
                            // And what only the gateway may say.
                            .header(hatchway_api::wire::SSH_HOST_KEY, FORGED_KEY)
                            .header(hatchway_api::wire::LOG_SOURCE, "saved")
                            .header("x-hatchway-user", "root")
                            // An app trying to set cookies for every app,
                            // and one named like the router's session.
                            .header("set-cookie", "app_sid=1; Domain=apps.hatchway.test; Path=/")
                            .header("set-cookie", "__Host-hatchway_session=forged; Path=/; Secure")
                            .body(http_body_util::Full::new(bytes::Bytes::from(seen.join("\n"))))
                            .unwrap(),
                    )
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (port, accepted)
}

const DOMAIN: &str = "apps.example.test";

/// A router with web apps on DOMAIN, a running Container whose gateway is
/// a real sidecar, and a web app in it. Returns the vhost name too.
async fn web_rig(
    access: Option<hatchway_api::crd::PortAccess>,
) -> (TestRouter, std::sync::Arc<MemoryCluster>, TestSidecar, String) {
    web_rig_with_auth(access).await.0
}

/// [`web_rig`], and the table of users it authenticates against.
async fn web_rig_with_auth(
    access: Option<hatchway_api::crd::PortAccess>,
) -> (
    (TestRouter, std::sync::Arc<MemoryCluster>, TestSidecar, String),
    std::sync::Arc<StaticAuth>,
) {
    let cluster = MemoryCluster::new();
    let auth = StaticAuth::new();
    auth.user("alice-token", "alice");
    auth.grant_all("alice", NS);
    auth.user("bob-token", "bob");
    let router = TestRouter::start_with(cluster.clone(), auth.clone(), |s| {
        s.wildcard_domain = Some(DOMAIN.into())
    })
    .await;
    let port = start_web_app().await;
    let access = access.unwrap_or(hatchway_api::crd::PortAccess::Private);
    let c = container_with(NS, "notebook", |spec| {
        spec.published_ports =
            vec![serde_json::from_value(serde_json::json!({"port": port, "access": access})).unwrap()];
    });
    let uid = c.metadata.uid.clone().unwrap();
    let sidecar = TestSidecar::start(&uid).await;
    cluster.insert(c);
    cluster.set_status(NS, "notebook", running_at(sidecar.addr()));
    let host = format!("{uid}-{port}.{DOMAIN}");
    ((router, cluster, sidecar, host), auth)
}

fn vhost_get(host: &str, path: &str) -> http::request::Builder {
    http::Request::builder()
        .method("GET")
        .uri(path)
        .header("host", host)
}

/// `POST …/weblogin?port=` as the holder of `token`: the status and body.
async fn weblogin(client: &mut Client, token: Option<&str>, port: &str) -> (StatusCode, String) {
    let mut request = http::Request::builder().method("POST").uri(format!(
        "/v1/namespaces/{NS}/containers/notebook/weblogin?port={port}"
    ));
    if let Some(token) = token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    let response = client.send(request.body(empty()).unwrap()).await;
    let status = response.status();
    (status, body_text(response).await)
}

/// A login link's code, for alice.
async fn alice_code(client: &mut Client, host: &str) -> String {
    let port = host
        .split('.')
        .next()
        .unwrap()
        .rsplit_once('-')
        .unwrap()
        .1
        .to_owned();
    let (status, body) = weblogin(client, Some("alice-token"), &port).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let link: hatchway_api::wire::WebLogin = serde_json::from_str(&body).unwrap();
    assert_eq!(link.expires_in_seconds, 60);
    assert!(
        link.url.starts_with(&format!("https://{host}/?hatchway_code=")),
        "{}",
        link.url
    );
    link.url.rsplit_once("hatchway_code=").unwrap().1.to_owned()
}

/// `GET path` on vhost `host`.
async fn vhost_send(client: &mut Client, host: &str, path: &str) -> http::Response<hyper::body::Incoming> {
    client.send(vhost_get(host, path).body(empty()).unwrap()).await
}

/// Redeems alice's code on `host`: the session cookie's `name=value`.
async fn alice_session(client: &mut Client, host: &str) -> String {
    let code = alice_code(client, host).await;
    let response = vhost_send(client, host, &format!("/?hatchway_code={code}")).await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    let cookie = response.headers()["set-cookie"].to_str().unwrap();
    cookie.split(';').next().unwrap().to_owned()
}

#[tokio::test]
async fn a_private_web_app_takes_a_one_time_code_then_the_routers_own_session() {
    let ((router, _cluster, sidecar, host), auth) = web_rig_with_auth(None).await;
    let mut client = router.client().await;

    // No session: one 401 that names nothing, the same for a UID that does
    // not exist.
    let response = vhost_send(&mut client, &host, "/").await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    let private = body_text(response).await;
    assert!(private.contains("kubectl hatch open NAME PORT"), "{private}");
    assert!(
        !private.contains("notebook") && !private.contains(NS),
        "{private}"
    );
    let unknown = format!("{}-80.{DOMAIN}", uuid());
    let response = vhost_send(&mut client, &unknown, "/").await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(body_text(response).await, private);

    // Minting a link: the user's token, `get containers/proxy`, a
    // published port, POST.
    let port = host
        .split('.')
        .next()
        .unwrap()
        .rsplit_once('-')
        .unwrap()
        .1
        .to_owned();
    assert_eq!(
        weblogin(&mut client, None, &port).await.0,
        StatusCode::UNAUTHORIZED
    );
    let (status, body) = weblogin(&mut client, Some("bob-token"), &port).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(body.contains("may not get containers/proxy"), "{body}");
    let (status, body) = weblogin(&mut client, Some("alice-token"), "1").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(body.contains("port 1 of container"), "{body}");
    assert!(body.contains("is not published"), "{body}");
    assert_eq!(
        weblogin(&mut client, Some("alice-token"), "x").await.0,
        StatusCode::BAD_REQUEST
    );

    // A forged or foreign code: 401, and no TokenReview asked.
    let reviews = auth.authentications.load(std::sync::atomic::Ordering::SeqCst);
    for bad in ["nope", "eyJ4IjoxfQ.00", ""] {
        let response = vhost_send(&mut client, &host, &format!("/?hatchway_code={bad}")).await;
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{bad:?}");
        assert!(body_text(response).await.contains("this login link is not valid"));
    }
    let code = alice_code(&mut client, &host).await;
    let response = vhost_send(&mut client, &unknown, &format!("/?hatchway_code={code}")).await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert!(body_text(response).await.contains("(issued for another host)"));
    assert_eq!(
        auth.authentications.load(std::sync::atomic::Ordering::SeqCst),
        reviews + 1,
        "only minting the link authenticated a token"
    );

    // The code: a session cookie (never the token) and a redirect to the
    // same host without it; `//other.host` stays on this host.
    let response = client
        .send(
            vhost_get(
                &host,
                &format!("//evil.example/tree?a=1&hatchway_code={code}&b=2"),
            )
            .body(empty())
            .unwrap(),
        )
        .await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    assert_eq!(response.headers()["location"], "/evil.example/tree?a=1&b=2");
    let cookie = response.headers()["set-cookie"].to_str().unwrap().to_owned();
    assert!(cookie.starts_with("__Host-hatchway_session="), "{cookie}");
    for attribute in ["HttpOnly", "Secure", "SameSite=Lax", "Path=/"] {
        assert!(cookie.contains(attribute), "{cookie} lacks {attribute}");
    }
    assert!(
        !cookie.contains("Domain") && !cookie.contains("alice-token"),
        "{cookie}"
    );
    // Once only.
    let response = vhost_send(&mut client, &host, &format!("/?hatchway_code={code}")).await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert!(body_text(response).await.contains("(already used)"));

    // The session works; the app sees neither it nor a code, but sees its
    // own cookie and Authorization header unchanged; its Set-Cookie is made
    // host-only and cannot be named like ours.
    let session = cookie.split(';').next().unwrap();
    let response = client
        .send(
            vhost_get(&host, "/tree?a=1&b=2")
                .header("cookie", format!("app=1; {session}"))
                .header("authorization", "Bearer the-apps-own")
                .body(empty())
                .unwrap(),
        )
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["x-app"], "yes");
    nothing_forged(response.headers());
    let set: Vec<_> = response.headers().get_all("set-cookie").iter().collect();
    assert_eq!(set, ["app_sid=1; Path=/"]);
    let seen = body_text(response).await;
    assert!(seen.starts_with("GET /tree?a=1&b=2"), "{seen}");
    assert!(seen.contains("cookie: app=1\n"), "{seen}");
    assert!(seen.contains("authorization: Bearer the-apps-own"), "{seen}");
    assert!(
        !seen.contains("hatchway_session") && !seen.contains("hatchway_code"),
        "{seen}"
    );
    assert!(
        !seen.contains("x-hatchway-"),
        "the gateway strips its headers: {seen}"
    );
    // The login is in the audit trail, once, with who the router
    // authenticated and the session's tag (never the cookie).
    let response = client
        .send(
            vhost_get(&host, "/again")
                .header("cookie", session)
                .body(empty())
                .unwrap(),
        )
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    audited(&sidecar, &router, &format!("web app port {port} login session=")).await;
    let trail = std::fs::read_to_string(sidecar.audit_dir().join("gateway.txt")).unwrap();
    let logins: Vec<&str> = trail.lines().filter(|l| l.contains(" login session=")).collect();
    assert_eq!(logins.len(), 1, "{trail}");
    let value = session.split_once('=').unwrap().1;
    assert!(
        !trail.contains(value),
        "the cookie is in the audit trail: {trail}"
    );
    assert!(logins[0].contains("route=\"GET /tree\""), "{trail}");

    // A session is for its own host only.
    let response = client
        .send(
            vhost_get(&unknown, "/")
                .header("cookie", session)
                .body(empty())
                .unwrap(),
        )
        .await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);

    // Writes with the cookie need the app's own origin.
    let post = |origin: Option<&str>| {
        let mut r = http::Request::builder()
            .method("POST")
            .uri("/form")
            .header("host", &host)
            .header("cookie", session);
        if let Some(origin) = origin {
            r = r.header("origin", origin);
        }
        r.body(http_body_util::Full::new(bytes::Bytes::from_static(b"x=1")))
            .unwrap()
    };
    for origin in [None, Some("https://evil.example"), Some("null")] {
        let response = client.send(post(origin)).await;
        assert_eq!(response.status(), StatusCode::FORBIDDEN, "{origin:?}");
        assert!(body_text(response).await.contains("cross-site request refused"));
    }
    let same = format!("https://{host}");
    let response = client.send(post(Some(&same))).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert!(body_text(response).await.starts_with("POST /form"));
}

#[tokio::test]
async fn a_public_web_app_needs_no_session_and_an_unknown_host_is_the_private_401() {
    let (router, _cluster, _sidecar, host) = web_rig(Some(hatchway_api::crd::PortAccess::Public)).await;
    let mut client = router.client().await;
    let response = vhost_send(&mut client, &host, "/hello").await;
    assert_eq!(response.status(), StatusCode::OK);
    assert!(body_text(response).await.starts_with("GET /hello"));

    let unknown = format!("{}-80.{DOMAIN}", uuid());
    let response = vhost_send(&mut client, &unknown, "/").await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert!(
        body_text(response)
            .await
            .starts_with("this web app is private (or does not exist)")
    );

    // An unpublished port of the same Container: 401 without a session, 404
    // with one.
    let (uid, _) = host.split_once('.').unwrap().0.rsplit_once('-').unwrap();
    let unpublished = format!("{uid}-1.{DOMAIN}");
    let response = vhost_send(&mut client, &unpublished, "/").await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
}

/// A client's forged assertion.
const FORGED: &str = "eyJhbGciOiJub25lIn0.eyJzdWIiOiJhZG1pbiJ9.";

/// `GET /` on `host` with a forged assertion (and `cookie`, if any): the
/// `hatchway-jwt-assertion` values the echo app saw, and all it saw.
async fn assertions_seen(client: &mut Client, host: &str, cookie: Option<&str>) -> (Vec<String>, String) {
    let mut request = vhost_get(host, "/").header("hatchway-jwt-assertion", FORGED);
    if let Some(cookie) = cookie {
        request = request.header("cookie", cookie);
    }
    let response = client.send(request.body(empty()).unwrap()).await;
    assert_eq!(response.status(), StatusCode::OK);
    let seen = body_text(response).await;
    let tokens = seen
        .lines()
        .filter_map(|l| l.strip_prefix("hatchway-jwt-assertion: "))
        .map(str::to_owned)
        .collect();
    (tokens, seen)
}

#[tokio::test]
async fn a_web_app_gets_the_users_signed_identity_and_never_a_forged_one() {
    let (router, _cluster, _sidecar, host) = web_rig(None).await;
    let mut client = router.client().await;
    let session = alice_session(&mut client, &host).await;
    let (tokens, seen) = assertions_seen(&mut client, &host, Some(&session)).await;
    assert_eq!(tokens.len(), 1, "one assertion, the router's: {seen}");
    assert_ne!(tokens[0], FORGED);

    // The public keys, for anyone.
    let response = client
        .send(
            http::Request::builder()
                .uri("/.well-known/jwks.json")
                .body(empty())
                .unwrap(),
        )
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["content-type"], "application/json");
    let jwks = body_text(response).await;

    let origin = format!("https://{host}");
    let claims = pyjwt_verify(&jwks, &tokens[0], &origin).expect("PyJWT verifies the assertion");
    assert_eq!(claims["sub"], "alice");
    assert_eq!(claims["aud"], origin.as_str());
    assert_eq!(claims["namespace"], NS);
    assert_eq!(claims["container"], "notebook");
    assert!(
        host.starts_with(claims["container_uid"].as_str().unwrap()),
        "{claims}"
    );
    let lifetime = claims["exp"].as_u64().unwrap() - claims["iat"].as_u64().unwrap();
    assert!(lifetime <= 300, "{claims}");

    // PyJWT refuses what is not the router's: the forged one, a changed
    // claim, another app's audience.
    assert!(pyjwt_verify(&jwks, FORGED, &origin).is_err());
    let (signed, signature) = tokens[0].rsplit_once('.').unwrap();
    let (header, _) = signed.split_once('.').unwrap();
    let admin = base64::Engine::encode(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD,
        serde_json::to_vec(&serde_json::json!({"sub": "admin", "aud": origin, "iss": "hatchway"})).unwrap(),
    );
    let error = pyjwt_verify(&jwks, &format!("{header}.{admin}.{signature}"), &origin).unwrap_err();
    assert!(error.contains("Signature verification failed"), "{error}");
    let error = pyjwt_verify(&jwks, &tokens[0], "https://another.apps.example.test").unwrap_err();
    assert!(error.contains("Invalid audience"), "{error}");

    // Without a session there is no app and no assertion; on a public
    // port a client's forged one is dropped.
    let (public_router, _c, _s, public_host) = web_rig(Some(hatchway_api::crd::PortAccess::Public)).await;
    let (tokens, seen) = assertions_seen(&mut public_router.client().await, &public_host, None).await;
    assert!(tokens.is_empty(), "{seen}");
}

#[tokio::test]
async fn websockets_work_through_a_web_app() {
    use futures::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let (router, _cluster, _sidecar, host) = web_rig(None).await;
    let session = alice_session(&mut router.client().await, &host).await;
    let (mut ws, response) = router
        .websocket(
            &format!("wss://{host}/ws"),
            &host,
            &session,
            &format!("https://{host}"),
        )
        .await
        .expect("WebSocket handshake");
    assert_eq!(response.status(), StatusCode::SWITCHING_PROTOCOLS);
    nothing_forged(response.headers());
    for i in 0..3 {
        ws.send(Message::text(format!("cell {i}"))).await.unwrap();
        let echoed = ws.next().await.unwrap().unwrap();
        assert_eq!(echoed, Message::text(format!("cell {i}")));
    }
    ws.close(None).await.unwrap();
    eventually("the websocket session to be counted", || {
        let metrics = router.router.metrics.encode();
        async move { metrics.contains("hatchway_router_sessions_total{kind=\"websocket\"} 1") }
    })
    .await;
}

// ------------------------------------------------ kept gateway connections

/// A router serving web apps on DOMAIN that keeps its gateway connections
/// `kept_for` (the tests that count connections keep them longer than a
/// loaded test machine may pause).
async fn apps_router(
    cluster: &std::sync::Arc<MemoryCluster>,
    auth: std::sync::Arc<StaticAuth>,
    kept_for: Option<std::time::Duration>,
) -> TestRouter {
    TestRouter::start_with(cluster.clone(), auth, |s| {
        s.wildcard_domain = Some(DOMAIN.into());
        if let Some(kept_for) = kept_for {
            s.gateway_idle = kept_for;
        }
    })
    .await
}

/// Container `name` in NS publishing web app port `app`, running with a
/// real sidecar (`tweak`ed): the sidecar, and the app's vhost.
async fn app_container(
    cluster: &MemoryCluster,
    name: &str,
    app: u16,
    tweak: impl FnOnce(&mut hatchway_sidecar::args::GatewayArgs),
) -> (TestSidecar, String) {
    let c = container_with(NS, name, |spec| {
        spec.published_ports = vec![serde_json::from_value(serde_json::json!({"port": app})).unwrap()];
    });
    let uid = c.metadata.uid.clone().unwrap();
    let sidecar = TestSidecar::start_with(&uid, tweak).await;
    cluster.insert(c);
    cluster.set_status(NS, name, running_at(sidecar.addr()));
    (sidecar, format!("{uid}-{app}.{DOMAIN}"))
}

/// A web-app session on Container `name`'s `host` for the holder of `token`.
async fn session_as(client: &mut Client, token: &str, name: &str, host: &str) -> String {
    let port = host.split('.').next().unwrap().rsplit_once('-').unwrap().1;
    let response = client
        .send(
            http::Request::builder()
                .method("POST")
                .uri(format!(
                    "/v1/namespaces/{NS}/containers/{name}/weblogin?port={port}"
                ))
                .header("authorization", format!("Bearer {token}"))
                .body(empty())
                .unwrap(),
        )
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    let link: hatchway_api::wire::WebLogin = serde_json::from_str(&body_text(response).await).unwrap();
    let code = link.url.rsplit_once("hatchway_code=").unwrap().1.to_owned();
    let response = vhost_send(client, host, &format!("/?hatchway_code={code}")).await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    let cookie = response.headers()["set-cookie"].to_str().unwrap();
    cookie.split(';').next().unwrap().to_owned()
}

/// `GET /` on `host` with the session `cookie`.
async fn get_with(client: &mut Client, host: &str, cookie: &str) -> http::Response<hyper::body::Incoming> {
    client
        .send(
            vhost_get(host, "/")
                .header("cookie", cookie)
                .body(empty())
                .unwrap(),
        )
        .await
}

/// The `sub` of the identity assertion the app saw in `seen` (the app
/// echoes its request headers; the signature is checked elsewhere).
fn asserted_user(seen: &str) -> String {
    let token = seen
        .lines()
        .find_map(|l| l.strip_prefix("hatchway-jwt-assertion: "))
        .unwrap_or_else(|| panic!("no assertion in {seen}"));
    let payload = token.split('.').nth(1).unwrap();
    let claims: serde_json::Value = serde_json::from_slice(
        &base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, payload).unwrap(),
    )
    .unwrap();
    claims["sub"].as_str().unwrap().to_owned()
}

/// Connections the sidecar's gateway accepted on its direct port.
fn direct_connections(sidecar: &TestSidecar) -> u64 {
    let metrics = &sidecar.running.gateway.metrics;
    metrics.connections.with_label_values(&["direct"]).get()
}

/// `hatchway_router_gateway_connections_total{outcome}`.
fn gateway_connections(router: &TestRouter, outcome: &str) -> u64 {
    let metrics = router.router.metrics.encode();
    let series = format!("hatchway_router_gateway_connections_total{{outcome=\"{outcome}\"}} ");
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(series.as_str()))
        .map_or(0, |v| v.parse().unwrap())
}

#[tokio::test]
async fn users_requests_share_kept_connections_and_each_is_their_own() {
    let cluster = MemoryCluster::new();
    let auth = auth_with_alice();
    auth.user("carol-token", "carol");
    auth.grant_all("carol", NS);
    // Kept longer than a loaded test machine may pause between requests.
    let router = apps_router(&cluster, auth.clone(), Some(std::time::Duration::from_secs(60))).await;
    let (app, app_connections) = start_counted_web_app().await;
    let (sidecar, host) =
        app_container(&cluster, "notebook", app, |args| args.app_keepalive_ms = 60_000).await;
    let mut client = router.client().await;
    let alice = session_as(&mut client, "alice-token", "notebook", &host).await;
    let carol = session_as(&mut client, "carol-token", "notebook", &host).await;
    for (i, (cookie, user)) in [
        (&alice, "alice"),
        (&carol, "carol"),
        (&alice, "alice"),
        (&carol, "carol"),
    ]
    .into_iter()
    .enumerate()
    {
        let response = get_with(&mut client, &host, cookie).await;
        assert_eq!(response.status(), StatusCode::OK, "request {i}");
        let seen = body_text(response).await;
        assert_eq!(asserted_user(&seen), user, "request {i}: {seen}");
    }
    // One connection to the gateway carried all four, one after another.
    assert_eq!(gateway_connections(&router, "new"), 1);
    assert_eq!(gateway_connections(&router, "reused"), 3);
    assert_eq!(direct_connections(&sidecar), 1);
    // And one connection from the gateway to the app.
    assert_eq!(app_connections.load(std::sync::atomic::Ordering::SeqCst), 1);
    // The gateway's audit trail still names each user (their logins).
    let trail = sidecar.audit_dir().join("gateway.txt");
    eventually("both users' logins in gateway.txt", || {
        let text = std::fs::read_to_string(&trail).unwrap_or_default();
        let found = ["alice", "carol"].iter().all(|user| {
            text.lines()
                .any(|l| l.contains("web app port") && l.contains(&format!("user=\"{user}\"")))
        });
        async move { found }
    })
    .await;
}

#[tokio::test]
async fn a_kept_connection_only_ever_carries_requests_for_its_own_gateway() {
    let cluster = MemoryCluster::new();
    let app = start_web_app().await;
    let mut hosts = Vec::new();
    let mut sidecars = Vec::new();
    for name in ["first", "second"] {
        let (sidecar, host) = app_container(&cluster, name, app, |_| {}).await;
        hosts.push((name, host, sidecar.uid.clone()));
        sidecars.push(sidecar);
    }
    let router_with_apps = apps_router(
        &cluster,
        auth_with_alice(),
        Some(std::time::Duration::from_secs(60)),
    )
    .await;
    let mut client = router_with_apps.client().await;
    let mut cookies = Vec::new();
    for (name, host, _) in &hosts {
        cookies.push(session_as(&mut client, "alice-token", name, host).await);
    }
    // Alternating: a request that went on the other Container's kept
    // connection would be refused by that gateway (wrong UID) as a 502.
    for round in 0..3 {
        for ((_, host, uid), cookie) in hosts.iter().zip(&cookies) {
            let response = get_with(&mut client, host, cookie).await;
            assert_eq!(response.status(), StatusCode::OK, "round {round}");
            let seen = body_text(response).await;
            assert!(seen.contains(&format!("host: {uid}-")), "round {round}: {seen}");
        }
    }
    assert_eq!(gateway_connections(&router_with_apps, "new"), 2);
    assert_eq!(gateway_connections(&router_with_apps, "reused"), 4);
    for sidecar in &sidecars {
        assert_eq!(direct_connections(sidecar), 1);
    }
}

/// A [`StaticAuth`] with alice allowed everything in NS.
fn auth_with_alice() -> std::sync::Arc<StaticAuth> {
    let auth = StaticAuth::new();
    auth.user("alice-token", "alice");
    auth.grant_all("alice", NS);
    auth
}

#[tokio::test]
async fn a_kept_connection_the_gateway_closed_is_replaced_without_an_error() {
    let cluster = MemoryCluster::new();
    // Kept longer than the gateway waits for a next request.
    let router = apps_router(
        &cluster,
        auth_with_alice(),
        Some(std::time::Duration::from_secs(60)),
    )
    .await;
    let app = start_web_app().await;
    let (_sidecar, host) =
        app_container(&cluster, "notebook", app, |args| args.header_timeout_ms = 300).await;
    let mut client = router.client().await;
    let cookie = session_as(&mut client, "alice-token", "notebook", &host).await;
    let get = || {
        vhost_get(&host, "/")
            .header("cookie", &cookie)
            .body(empty())
            .unwrap()
    };
    let response = client.send(get()).await;
    assert_eq!(response.status(), StatusCode::OK);
    body_text(response).await;
    assert_eq!(router.router.gateways.len(), 1);
    // The gateway closes the idle connection after its header timeout.
    eventually("the gateway to close the kept connection", || {
        let open = router.router.gateways.len();
        async move { open == 0 }
    })
    .await;
    let response = client.send(get()).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(gateway_connections(&router, "new"), 2);
}

/// A web app that answers the first request of each connection and
/// closes the connection without an answer when the next one arrives, as
/// an app whose keep-alive timeout fires just as a request comes does.
async fn start_abrupt_web_app() -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = stream
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 6\r\n\r\nabrupt")
                    .await;
                // The next request's first bytes, then the close.
                let _ = stream.read(&mut buf).await;
            });
        }
    });
    port
}

#[tokio::test]
async fn a_get_the_app_drops_on_a_kept_connection_goes_again_on_a_new_one() {
    let cluster = MemoryCluster::new();
    let router = apps_router(&cluster, auth_with_alice(), None).await;
    let app = start_abrupt_web_app().await;
    let (_sidecar, host) =
        app_container(&cluster, "notebook", app, |args| args.app_keepalive_ms = 60_000).await;
    let mut client = router.client().await;
    let cookie = session_as(&mut client, "alice-token", "notebook", &host).await;
    // Every second request goes on a kept connection the app closes as
    // it arrives: a GET goes again on a new one.
    for i in 0..6 {
        let response = get_with(&mut client, &host, &cookie).await;
        assert_eq!(response.status(), StatusCode::OK, "request {i}");
        assert_eq!(body_text(response).await, "abrupt", "request {i}");
    }
    // A request with a body may have reached the app: it is not sent
    // twice, the user gets a clear 502.
    let response = get_with(&mut client, &host, &cookie).await;
    assert_eq!(response.status(), StatusCode::OK);
    body_text(response).await;
    let response = client
        .send(
            http::Request::builder()
                .method("POST")
                .uri("/form")
                .header("host", &host)
                .header("cookie", &cookie)
                .header("origin", format!("https://{host}"))
                .body(http_body_util::Full::new(bytes::Bytes::from_static(b"a=1")))
                .unwrap(),
        )
        .await;
    assert_eq!(response.status(), StatusCode::BAD_GATEWAY);
    let message = body_text(response).await;
    assert!(message.contains(&format!("web app on port {app}")), "{message}");
}

// ------------------------------------------------------------ shells

/// A local port that does what `kubectl hatch connect-ssh` will: each
/// connection becomes `POST …/ssh` (Upgrade: ssh) through the router, then
/// raw SSH bytes. The OpenSSH client connects here.
async fn ssh_relay(router: std::net::SocketAddr, path: String, token: &'static str) -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            let path = path.clone();
            tokio::spawn(async move {
                let _ = tcp.set_nodelay(true);
                let mut client = Client::connect(router).await;
                let response = client.send(upgrade_request(&path, Some(token), "ssh")).await;
                if response.status() != StatusCode::SWITCHING_PROTOCOLS {
                    eprintln!("ssh relay: {}", body_text(response).await);
                    return;
                }
                let mut upgraded = hyper_util::rt::TokioIo::new(hyper::upgrade::on(response).await.unwrap());
                let _ = tokio::io::copy_bidirectional(&mut tcp, &mut upgraded).await;
            });
        }
    });
    port
}

fn openssh(port: u16, known_hosts: &std::path::Path, command: &[&str]) -> std::process::Command {
    let mut ssh = hatchway_testkit::openssh("ssh", port, known_hosts);
    ssh.arg("tester@127.0.0.1").args(command);
    ssh
}

/// Right after a sidecar restart the status still holds the last
/// process's host key for a moment: the shell's answer carries the key of
/// the gateway that answered (it proved itself), so the CLI's known_hosts
/// entry matches what ssh will see.
#[tokio::test]
async fn a_shell_answer_carries_the_answering_gateway_s_host_key_not_the_status_s() {
    let (router, cluster, _) = rig().await;
    let c = container(NS, "job");
    let sidecar = TestSidecar::start(c.metadata.uid.as_deref().unwrap())
        .await
        .with_shim()
        .await;
    cluster.insert(c);
    let stale = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBm0iXB0JkcNnlb5bzJ4tlZsJ8D4lEbF3TUcnJg9PQ9a";
    let mut status = running_at(sidecar.addr());
    status.gateway.as_mut().unwrap().host_key = Some(stale.to_owned());
    cluster.set_status(NS, "job", status);
    let mut client = Client::connect(router.addr).await;
    let response = client
        .send(upgrade_request(
            &api_path(NS, "job", "ssh"),
            Some("alice-token"),
            "ssh",
        ))
        .await;
    assert_eq!(response.status(), StatusCode::SWITCHING_PROTOCOLS);
    let key = response.headers()[hatchway_api::wire::SSH_HOST_KEY]
        .to_str()
        .unwrap();
    assert_eq!(key, sidecar.running.gateway.ssh.host_key_openssh());
    assert_ne!(key, stale);
}

#[tokio::test]
async fn the_openssh_client_runs_a_command_through_the_router() {
    let (router, cluster, _) = rig().await;
    let c = container(NS, "job");
    let sidecar = TestSidecar::start(c.metadata.uid.as_deref().unwrap())
        .await
        .with_shim()
        .await;
    cluster.insert(c);
    cluster.set_status(NS, "job", running_at(sidecar.addr()));
    let port = ssh_relay(router.addr, api_path(NS, "job", "ssh"), "alice-token").await;
    let known_hosts = sidecar.dir.path().join("known_hosts");
    let host_key = sidecar.running.gateway.ssh.host_key_openssh();
    hatchway_testkit::write_known_hosts(&known_hosts, port, &host_key).unwrap();

    let output = tokio::task::spawn_blocking(move || {
        openssh(port, &known_hosts, &["echo hello from ssh; exit 7"])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert_eq!(
        output.status.code(),
        Some(7),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&output.stdout).trim(), "hello from ssh");
    audited(&sidecar, &router, "session").await;

    // The router records that the run is no longer pristine.
    eventually("interactiveSessionStarted", || {
        let started = cluster
            .status(NS, "job")
            .is_some_and(|s| s.interactive_session_started);
        async move { started }
    })
    .await;
    let applied = cluster.applied.lock().unwrap().clone();
    assert!(
        applied
            .iter()
            .any(|(_, _, manager, _)| manager == "hatchway-router-session")
    );
}

#[tokio::test]
async fn shells_are_refused_when_off_for_the_cluster_or_the_container_or_ended() {
    let cluster = MemoryCluster::new();
    let auth = StaticAuth::new();
    auth.user("alice-token", "alice");
    auth.grant_all("alice", NS);
    let off = TestRouter::start_with(cluster.clone(), auth.clone(), |s| s.shell_enabled = false).await;
    let on = TestRouter::start(cluster.clone(), auth).await;
    cluster.insert(container_with(NS, "noshell", |spec| spec.shell = false));
    let ended = container(NS, "done");
    cluster.insert(ended);
    cluster.set_status(
        NS,
        "done",
        hatchway_api::crd::ContainerStatus {
            phase: Some(hatchway_api::crd::Phase::Complete),
            ..Default::default()
        },
    );
    let shell = |name: &str| upgrade_request(&api_path(NS, name, "ssh"), Some("alice-token"), "ssh");
    let cases = [
        (
            &off,
            "done",
            StatusCode::FORBIDDEN,
            "shell access is disabled on this cluster",
        ),
        (
            &on,
            "noshell",
            StatusCode::FORBIDDEN,
            "shell access is disabled for container team-a/noshell",
        ),
        (
            &on,
            "done",
            StatusCode::GONE,
            "container has ended (Complete); a shell is no longer available",
        ),
    ];
    for (router, name, status, message) in cases {
        let response = router.client().await.send(shell(name)).await;
        assert_eq!(response.status(), status, "{name}");
        let body = body_text(response).await;
        assert!(body.starts_with(message), "{body}");
    }
}

// ------------------------------------------------------------ logs

fn propfind(path: &str, token: Option<&str>) -> http::Request<http_body_util::Full<bytes::Bytes>> {
    request("PROPFIND", path, token)
        .header("depth", "1")
        .body(empty())
        .unwrap()
}

#[tokio::test]
async fn live_logs_are_read_through_the_gateway_with_the_users_paths() {
    let (router, cluster, _) = rig().await;
    let c = container(NS, "logger");
    let sidecar = TestSidecar::start(c.metadata.uid.as_deref().unwrap()).await;
    std::fs::write(sidecar.log_dir().join("stdout.txt"), "line 1\nline 2\n").unwrap();
    cluster.insert(c);
    cluster.set_status(NS, "logger", running_at(sidecar.addr()));
    let mut client = router.client().await;

    // A client naming someone else and another replica for the audit
    // trail: the router sends its own.
    let mut forged = propfind(&api_path(NS, "logger", "log/"), Some("alice-token"));
    forged
        .headers_mut()
        .insert(hatchway_api::wire::REQUEST_USER, "mallory".parse().unwrap());
    forged.headers_mut().insert(
        hatchway_api::wire::REQUEST_REPLICA,
        "forged-replica".parse().unwrap(),
    );
    let response = client.send(forged).await;
    assert_eq!(response.status(), StatusCode::MULTI_STATUS);
    assert_eq!(response.headers()["access-control-allow-origin"], "*");
    audited(&sidecar, &router, "log read").await;
    let trail = std::fs::read_to_string(sidecar.audit_dir().join("gateway.txt")).unwrap();
    assert!(
        !trail.contains("mallory") && !trail.contains("forged-replica"),
        "{trail}"
    );
    let xml = body_text(response).await;
    assert!(
        xml.contains("<D:href>/v1/namespaces/team-a/containers/logger/log/stdout.txt</D:href>"),
        "{xml}"
    );

    let response = client
        .send(
            request(
                "GET",
                &api_path(NS, "logger", "log/stdout.txt"),
                Some("alice-token"),
            )
            .header("range", "bytes=7-")
            .body(empty())
            .unwrap(),
        )
        .await;
    assert_eq!(response.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(
        response
            .headers()
            .get_all("access-control-allow-origin")
            .iter()
            .count(),
        1
    );
    assert_eq!(body_text(response).await, "line 2\n");

    // WebDAV clients send basic auth with the token as the password.
    use base64::Engine;
    let basic = base64::engine::general_purpose::STANDARD.encode("anyone:alice-token");
    let response = client
        .send(
            http::Request::get(api_path(NS, "logger", "log/stdout.txt"))
                .header("host", "localhost")
                .header("authorization", format!("Basic {basic}"))
                .body(empty())
                .unwrap(),
        )
        .await;
    assert_eq!(response.status(), StatusCode::OK);

    // Read-only; and preflight answered without credentials.
    let response = client
        .send(
            request("PUT", &api_path(NS, "logger", "log/x"), Some("alice-token"))
                .body(empty())
                .unwrap(),
        )
        .await;
    assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
    let response = client
        .send(
            request("OPTIONS", &api_path(NS, "logger", "log/"), None)
                .header("origin", "https://workbench.example")
                .header("access-control-request-method", "PROPFIND")
                .body(empty())
                .unwrap(),
        )
        .await;
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    assert!(
        response.headers()["access-control-allow-methods"]
            .to_str()
            .unwrap()
            .contains("PROPFIND")
    );
}

#[tokio::test]
async fn logs_before_the_start_are_an_empty_directory_and_after_the_end_the_saved_logs() {
    let (router, cluster, _) = rig().await;
    let c = container(NS, "batch");
    let uid = c.metadata.uid.clone().unwrap();
    cluster.insert(c);
    let mut client = router.client().await;
    let response = client
        .send(propfind(&api_path(NS, "batch", "log/"), Some("alice-token")))
        .await;
    assert_eq!(response.status(), StatusCode::MULTI_STATUS);
    let xml = body_text(response).await;
    assert!(
        xml.contains("<D:collection/>") && !xml.contains("getcontentlength"),
        "{xml}"
    );

    cluster.set_saved_logs(
        &uid,
        vec![support::SavedLog {
            name: "stdout.txt".into(),
            content: bytes::Bytes::from_static(b"saved output\n"),
            modified: None,
        }],
    );
    cluster.set_status(
        NS,
        "batch",
        hatchway_api::crd::ContainerStatus {
            phase: Some(hatchway_api::crd::Phase::Failed),
            ..Default::default()
        },
    );
    let response = client
        .send(propfind(&api_path(NS, "batch", "log"), Some("alice-token")))
        .await;
    let xml = body_text(response).await;
    assert!(
        xml.contains("/v1/namespaces/team-a/containers/batch/log/stdout.txt"),
        "{xml}"
    );
    let response = client
        .send(
            request(
                "GET",
                &api_path(NS, "batch", "log/stdout.txt"),
                Some("alice-token"),
            )
            .body(empty())
            .unwrap(),
        )
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(body_text(response).await, "saved output\n");
}

/// The race: status still says Running with a gateway address, but the
/// sidecar is gone because the container just ended. The router reads
/// status again and serves the saved logs instead of an error.
#[tokio::test]
async fn a_gateway_gone_because_the_container_just_ended_falls_back_to_saved_logs() {
    /// A cluster whose cached read lags: `container` still says Running,
    /// `container_fresh` knows it ended.
    struct Lagging(std::sync::Arc<MemoryCluster>, hatchway_api::crd::Container);
    impl hatchway_operator::router::cluster::Cluster for Lagging {
        fn containers(&self, _: &str) -> Vec<hatchway_api::crd::Container> {
            vec![self.1.clone()]
        }
        fn container<'a>(
            &'a self,
            _: &'a str,
            _: &'a str,
        ) -> futures::future::BoxFuture<
            'a,
            Result<Option<hatchway_api::crd::Container>, hatchway_operator::router::cluster::ClusterError>,
        > {
            Box::pin(async move { Ok(Some(self.1.clone())) })
        }
        fn container_fresh<'a>(
            &'a self,
            ns: &'a str,
            name: &'a str,
        ) -> futures::future::BoxFuture<
            'a,
            Result<Option<hatchway_api::crd::Container>, hatchway_operator::router::cluster::ClusterError>,
        > {
            self.0.container(ns, name)
        }
        fn container_by_uid<'a>(
            &'a self,
            uid: &'a str,
        ) -> futures::future::BoxFuture<
            'a,
            Result<Option<hatchway_api::crd::Container>, hatchway_operator::router::cluster::ClusterError>,
        > {
            self.0.container_by_uid(uid)
        }
        fn apply_status<'a>(
            &'a self,
            ns: &'a str,
            name: &'a str,
            manager: &'a str,
            status: hatchway_api::crd::ContainerStatus,
        ) -> futures::future::BoxFuture<'a, Result<(), hatchway_operator::router::cluster::ClusterError>>
        {
            self.0.apply_status(ns, name, manager, status)
        }
        fn saved_logs<'a>(
            &'a self,
            c: &'a hatchway_api::crd::Container,
        ) -> futures::future::BoxFuture<
            'a,
            Result<
                Option<hatchway_operator::router::cluster::SavedLogs>,
                hatchway_operator::router::cluster::ClusterError,
            >,
        > {
            self.0.saved_logs(c)
        }
        fn saved_log_stream<'a>(
            &'a self,
            logs: &'a hatchway_operator::router::cluster::SavedLogs,
            file: &'a str,
            query: hatchway_operator::router::cluster::LogQuery,
        ) -> futures::future::BoxFuture<
            'a,
            Result<
                Option<hatchway_operator::router::cluster::LogStream>,
                hatchway_operator::router::cluster::ClusterError,
            >,
        > {
            self.0.saved_log_stream(logs, file, query)
        }
        fn replicas(&self) -> Vec<String> {
            self.0.replicas()
        }
    }

    let memory = MemoryCluster::new();
    let mut c = container(NS, "racer");
    let uid = c.metadata.uid.clone().unwrap();
    // A port nothing listens on any more: the sidecar has exited.
    let gone = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap();
    c.status = Some(running_at(gone));
    memory.insert(c.clone());
    memory.set_status(
        NS,
        "racer",
        hatchway_api::crd::ContainerStatus {
            phase: Some(hatchway_api::crd::Phase::Complete),
            ..Default::default()
        },
    );
    memory.set_saved_logs(
        &uid,
        vec![support::SavedLog {
            name: "stdout.txt".into(),
            content: bytes::Bytes::from_static(b"the end\n"),
            modified: None,
        }],
    );
    let auth = StaticAuth::new();
    auth.user("alice-token", "alice");
    auth.grant_all("alice", NS);
    let router = TestRouter::start(std::sync::Arc::new(Lagging(memory.clone(), c)), auth).await;
    let response = router
        .client()
        .await
        .send(
            request(
                "GET",
                &api_path(NS, "racer", "log/stdout.txt"),
                Some("alice-token"),
            )
            .body(empty())
            .unwrap(),
        )
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(body_text(response).await, "the end\n");
}

// ------------------------------------------------------------ transport

#[tokio::test]
async fn a_man_in_the_middle_gateway_is_detected_as_502() {
    let (router, cluster, _) = rig().await;
    let c = container(NS, "victim");
    // A "gateway" with its own self-signed certificate and no key: it
    // cannot produce the response proof.
    let impostor = TestSidecar::start(&uuid()).await;
    cluster.insert(c);
    cluster.set_status(NS, "victim", running_at(impostor.addr()));
    let response = router
        .client()
        .await
        .send(
            request("GET", &api_path(NS, "victim", "log/"), Some("alice-token"))
                .body(empty())
                .unwrap(),
        )
        .await;
    assert_eq!(response.status(), StatusCode::BAD_GATEWAY);
    let body = body_text(response).await;
    assert!(body.contains("man-in-the-middle"), "{body}");
}

#[tokio::test]
async fn http2_serves_logs_and_oversized_headers_are_refused() {
    let (router, cluster, _) = rig().await;
    let c = container(NS, "h2");
    cluster.insert(c);
    let mut sender = router.h2_client().await;
    let response = sender
        .send_request(
            http::Request::builder()
                .method("PROPFIND")
                .uri(format!("https://localhost{}", api_path(NS, "h2", "log/")))
                .header("authorization", "Bearer alice-token")
                .body(empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::MULTI_STATUS);
    assert_eq!(response.version(), http::Version::HTTP_2);

    let mut client = router.client().await;
    let huge = "x".repeat(20 * 1024);
    let response = client
        .send(
            request("GET", "/healthz", None)
                .header("x-big", huge)
                .body(empty())
                .unwrap(),
        )
        .await;
    assert_eq!(response.status(), StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
}

#[tokio::test]
async fn a_slow_client_is_cut_off_after_the_header_timeout() {
    let cluster = MemoryCluster::new();
    let router = TestRouter::start_with(cluster, StaticAuth::new(), |s| {
        s.header_read_timeout = std::time::Duration::from_millis(300)
    })
    .await;
    // TCP only, never a TLS hello: dropped after the timeout.
    let mut silent = tokio::net::TcpStream::connect(router.addr).await.unwrap();
    let mut buf = [0u8; 16];
    let n = tokio::time::timeout(std::time::Duration::from_secs(10), silent.read(&mut buf))
        .await
        .expect("the router closes a silent connection")
        .unwrap_or(0);
    assert_eq!(n, 0);

    // TLS done, then half a request head: dropped too (hyper answers 408
    // or just closes; either way the connection ends).
    let tcp = tokio::net::TcpStream::connect(router.addr).await.unwrap();
    let mut tls = tokio_rustls::TlsConnector::from(client_tls(&[b"http/1.1"]))
        .connect(rustls::pki_types::ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .unwrap();
    tls.write_all(b"GET /healthz HTTP/1.1\r\nHost: local")
        .await
        .unwrap();
    let mut rest = Vec::new();
    tokio::time::timeout(std::time::Duration::from_secs(10), tls.read_to_end(&mut rest))
        .await
        .expect("the router ends a connection whose head never completes")
        .ok();
    let text = String::from_utf8_lossy(&rest);
    assert!(text.is_empty() || text.starts_with("HTTP/1.1 408"), "{text}");
}

#[tokio::test]
async fn shutdown_drains_requests_in_flight_and_takes_no_new_ones() {
    let (router, _cluster, _sidecar, host) = web_rig(Some(hatchway_api::crd::PortAccess::Public)).await;
    // A request in flight: an upload whose body is still being sent.
    let (mut body_tx, body) = futures::channel::mpsc::channel::<
        Result<hyper::body::Frame<bytes::Bytes>, std::convert::Infallible>,
    >(1);
    let req = http::Request::builder()
        .method("POST")
        .uri("/upload")
        .header("host", &host)
        .body(http_body_util::StreamBody::new(body))
        .unwrap();
    let (mut sender, conn) = {
        let tcp = tokio::net::TcpStream::connect(router.addr).await.unwrap();
        let tls = tokio_rustls::TlsConnector::from(client_tls(&[b"http/1.1"]))
            .connect(rustls::pki_types::ServerName::try_from("localhost").unwrap(), tcp)
            .await
            .unwrap();
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
            .await
            .unwrap()
    };
    tokio::spawn(conn);
    let in_flight = tokio::spawn(async move { sender.send_request(req).await });
    use futures::SinkExt;
    body_tx
        .send(Ok(hyper::body::Frame::data(bytes::Bytes::from_static(
            b"part 1 ",
        ))))
        .await
        .unwrap();
    // The router has the request once it has chosen its gateway.
    eventually("the router to route the upload", || {
        let metrics = router.router.metrics.encode();
        async move { metrics.contains("gateway_choices_total{outcome=\"direct\"} 1") }
    })
    .await;

    // Drain: the listener closes at once...
    router.shutdown.cancel();
    eventually("the listener to close", || {
        let addr = router.addr;
        async move { tokio::net::TcpStream::connect(addr).await.is_err() }
    })
    .await;
    // ...while the request in flight still completes.
    body_tx
        .send(Ok(hyper::body::Frame::data(bytes::Bytes::from_static(b"part 2"))))
        .await
        .unwrap();
    drop(body_tx);
    let response = in_flight
        .await
        .unwrap()
        .expect("the request in flight is answered");
    assert_eq!(response.status(), StatusCode::OK);
    let seen = body_text(response).await;
    assert!(seen.starts_with("POST /upload"), "{seen}");
    assert!(seen.ends_with("body: part 1 part 2"), "{seen}");
    // With nothing left in flight, the server finishes draining.
    tokio::time::timeout(std::time::Duration::from_secs(10), router.stop())
        .await
        .expect("the drain ends once the last request is answered");
}

#[tokio::test]
async fn one_client_address_cannot_take_every_connection() {
    let router = TestRouter::start_with(MemoryCluster::new(), StaticAuth::new(), |s| {
        s.max_connections_per_client = 2
    })
    .await;
    // Two connections that never finish their handshake hold the
    // address's share...
    let held: Vec<_> = futures::future::join_all((0..2).map(|_| tokio::net::TcpStream::connect(router.addr)))
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    // ...so a third is closed at once, before any TLS.
    eventually("a third connection from the same address to be refused", || {
        let addr = router.addr;
        async move {
            let mut third = tokio::net::TcpStream::connect(addr).await.unwrap();
            let mut buf = [0u8; 1];
            matches!(
                tokio::time::timeout(std::time::Duration::from_secs(2), third.read(&mut buf)).await,
                Ok(Ok(0) | Err(_))
            )
        }
    })
    .await;
    assert!(
        router
            .router
            .metrics
            .encode()
            .contains("hatchway_router_auth_failures_total{reason=\"client_connection_limit\"}")
    );
    // Closing one frees its slot.
    drop(held);
    eventually("the address's connections to be served again", || {
        let addr = router.addr;
        async move {
            let Ok(tcp) = tokio::net::TcpStream::connect(addr).await else {
                return false;
            };
            tokio_rustls::TlsConnector::from(client_tls(&[b"http/1.1"]))
                .connect(rustls::pki_types::ServerName::try_from("localhost").unwrap(), tcp)
                .await
                .is_ok()
        }
    })
    .await;
}

#[tokio::test]
async fn metrics_are_served_on_their_own_port_only() {
    let router = TestRouter::start(MemoryCluster::new(), StaticAuth::new()).await;
    let mut client = router.client().await;
    let response = client
        .send(http::Request::get("/metrics").body(empty()).unwrap())
        .await;
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    assert!(body_text(response).await.contains("served on the metrics port"));
    let mut metrics = Client::connect(router.metrics_addr).await;
    let response = metrics
        .send(http::Request::get("/metrics").body(empty()).unwrap())
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    assert!(
        body_text(response)
            .await
            .contains("hatchway_router_request_duration_seconds_count{route=\"metrics\"} 1")
    );
    // Nothing else is there.
    let response = metrics
        .send(
            http::Request::get("/v1/namespaces/a/containers/b/log")
                .body(empty())
                .unwrap(),
        )
        .await;
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
}

/// A cluster with one Container, "ended" (Complete), whose saved logs are
/// stdout.txt and stderr.txt with `content(name)`; alice may do anything.
fn ended_with_saved_logs(
    content: impl Fn(&str) -> bytes::Bytes,
) -> (std::sync::Arc<MemoryCluster>, std::sync::Arc<StaticAuth>) {
    let cluster = MemoryCluster::new();
    let files = ["stdout.txt", "stderr.txt"].map(|name| (name, content(name)));
    cluster.insert_ended(NS, "ended", &files);
    let auth = StaticAuth::new();
    auth.user("alice-token", "alice");
    auth.grant_all("alice", NS);
    (cluster, auth)
}

#[tokio::test]
async fn saved_logs_are_streamed_one_file_at_a_time_and_a_bounded_number_at_once() {
    use std::sync::atomic::Ordering;
    // Larger than every buffer between the router and a client that does
    // not read: its read stays in progress.
    let big: bytes::Bytes = (0..48 * 1024 * 1024u32)
        .map(|i| b'a' + (i % 26) as u8)
        .collect::<Vec<u8>>()
        .into();
    let (cluster, auth) = ended_with_saved_logs(|_| big.clone());
    let router = TestRouter::start_with(cluster.clone(), auth, |s| {
        s.max_saved_log_reads = 1;
        s.saved_log_wait = std::time::Duration::from_millis(300);
    })
    .await;
    let get = |path: &str, range: Option<&str>| {
        let mut builder = request("GET", &api_path(NS, "ended", path), Some("alice-token"));
        if let Some(range) = range {
            builder = builder.header("range", range);
        }
        builder.body(empty()).unwrap()
    };
    let opened = || cluster.streams.opened.lock().unwrap().clone();
    let mut first = router.client().await;
    let reading = first.send(get("log/stderr.txt", None)).await;
    assert_eq!(reading.status(), StatusCode::OK);
    assert_eq!(reading.headers()["content-length"], big.len().to_string());
    // Only stderr was read: counted once, then opened to be sent.
    assert_eq!(
        opened(),
        [("stderr.txt".to_owned(), None), ("stderr.txt".to_owned(), None)]
    );
    // A second reader while the first is still being sent waits for its
    // turn, then gets 503.
    let response = router.client().await.send(get("log/stdout.txt", None)).await;
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(response.headers()["retry-after"], "2");
    assert!(
        body_text(response)
            .await
            .contains("1 saved-log reads are in progress")
    );
    // Once the first is read (all of it, in order), the next is served.
    assert!(
        body_text(reading).await.as_bytes() == &big[..],
        "the whole file, unchanged"
    );
    eventually("the reader's turn to come back", || {
        let router = &router;
        async move {
            router
                .client()
                .await
                .send(get("log/stdout.txt", Some("bytes=0-0")))
                .await
                .status()
                == StatusCode::PARTIAL_CONTENT
        }
    })
    .await;
    // A range from the middle: the stream is skipped to its start; the
    // size is not counted again.
    let before = opened().len();
    let response = router
        .client()
        .await
        .send(get("log/stdout.txt", Some("bytes=1000000-1000009")))
        .await;
    assert_eq!(response.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(
        response.headers()["content-range"],
        format!("bytes 1000000-1000009/{}", big.len())
    );
    assert_eq!(body_text(response).await.as_bytes(), &big[1_000_000..1_000_010]);
    assert_eq!(opened().len(), before + 1, "one stream, no count");
    // A listing knows both sizes without reading anything again.
    let before = opened().len();
    let response = router.client().await.send(get("log/", None)).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        body_text(response).await,
        format!("stdout.txt\t{0}\nstderr.txt\t{0}\n", big.len())
    );
    assert_eq!(opened().len(), before);
    // Never more than one stream open at once, and none left open.
    assert_eq!(cluster.streams.most_open.load(Ordering::SeqCst), 1);
    eventually("every stream to be closed", || async {
        cluster.streams.open.load(Ordering::SeqCst) == 0
    })
    .await;
}

#[tokio::test]
async fn lines_by_time_are_one_stream_sent_as_it_comes() {
    let (cluster, auth) = ended_with_saved_logs(|name| bytes::Bytes::from(format!("{name} line\n")));
    let router = TestRouter::start(cluster.clone(), auth).await;
    let response = router
        .client()
        .await
        .send(
            request(
                "GET",
                &format!("{}?sinceSeconds=30", api_path(NS, "ended", "log/stdout.txt")),
                Some("alice-token"),
            )
            .header("range", "bytes=0-3")
            .body(empty())
            .unwrap(),
        )
        .await;
    // No count first (it could disagree with what is sent), no range.
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["hatchway-log-source"], "api");
    assert!(response.headers().get("content-length").is_none());
    assert_eq!(body_text(response).await, "stdout.txt line\n");
    assert_eq!(
        *cluster.streams.opened.lock().unwrap(),
        [("stdout.txt".to_owned(), Some(30))]
    );
}

/// A web app that answers every request after `delay` (so requests pile
/// up in flight), and the count of requests it has begun.
async fn start_slow_web_app(
    delay: std::time::Duration,
) -> (u16, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let begun = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = begun.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let counter = counter.clone();
            tokio::spawn(async move {
                let service =
                    hyper::service::service_fn(move |_req: http::Request<hyper::body::Incoming>| {
                        counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        async move {
                            tokio::time::sleep(delay).await;
                            Ok::<_, std::convert::Infallible>(http::Response::new(http_body_util::Full::new(
                                bytes::Bytes::from_static(b"slow page"),
                            )))
                        }
                    });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (port, begun)
}

/// A router with web apps (settings changed by `tweak`) and a running
/// Container whose real sidecar fronts a public [`start_slow_web_app`].
struct SlowAppRig {
    router: TestRouter,
    _sidecar: TestSidecar,
    host: String,
    begun: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

async fn slow_app_rig(
    delay: std::time::Duration,
    tweak: impl FnOnce(&mut hatchway_operator::router::settings::Settings),
) -> SlowAppRig {
    let cluster = MemoryCluster::new();
    let router = TestRouter::start_with(cluster.clone(), StaticAuth::new(), |s| {
        s.wildcard_domain = Some(DOMAIN.into());
        tweak(s);
    })
    .await;
    let (port, begun) = start_slow_web_app(delay).await;
    let c = container_with(NS, "notebook", |spec| {
        spec.published_ports =
            vec![serde_json::from_value(serde_json::json!({"port": port, "access": "public"})).unwrap()];
    });
    let uid = c.metadata.uid.clone().unwrap();
    let sidecar = TestSidecar::start(&uid).await;
    cluster.insert(c);
    cluster.set_status(NS, "notebook", running_at(sidecar.addr()));
    SlowAppRig {
        router,
        _sidecar: sidecar,
        host: format!("{uid}-{port}.{DOMAIN}"),
        begun,
    }
}

/// More requests at once than the gateway gives web apps (384 of its 512
/// connections: the rest stays for shells and logs; 48 of 64 in tests):
/// the router queues them (`web_slots`) instead of passing on the
/// gateway's 503s and refused connections (504 of 600 failed so), and
/// every client gets its page.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_web_requests_over_the_gateways_share_waits_and_all_get_their_page() {
    const CLIENTS: usize = 600;
    // The test gateway gives web apps 48 of its 64 connections.
    let rig = slow_app_rig(std::time::Duration::from_millis(300), |s| {
        s.max_web_requests_per_container = 32;
    })
    .await;
    let host = rig.host.clone();
    let router = &rig.router;
    let mut clients = Vec::new();
    for _ in 0..CLIENTS {
        clients.push(router.client().await);
    }
    let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(CLIENTS));
    let tasks: Vec<_> = clients
        .into_iter()
        .map(|mut client| {
            let (barrier, host) = (barrier.clone(), host.clone());
            tokio::spawn(async move {
                barrier.wait().await;
                let response = vhost_send(&mut client, &host, "/").await;
                let status = response.status();
                (status, body_text(response).await)
            })
        })
        .collect();
    let mut failures = std::collections::BTreeMap::<String, usize>::new();
    for task in tasks {
        let (status, body) = task.await.unwrap();
        if status != StatusCode::OK || body != "slow page" {
            *failures.entry(format!("{status}: {body}")).or_default() += 1;
        }
    }
    assert!(failures.is_empty(), "of {CLIENTS}: {failures:#?}");
}

/// A request that waits longer than the queue allows gets a 503 that says
/// why and when to come back; the one in flight is unharmed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_web_request_that_waits_too_long_is_told_to_try_again() {
    let rig = slow_app_rig(std::time::Duration::from_secs(2), |s| {
        s.max_web_requests_per_container = 1;
        s.web_queue_timeout = std::time::Duration::from_millis(100);
    })
    .await;
    let (host, begun) = (rig.host.clone(), rig.begun.clone());
    let mut first = rig.router.client().await;
    let mut second = rig.router.client().await;
    let in_flight = tokio::spawn({
        let host = host.clone();
        async move {
            let response = vhost_send(&mut first, &host, "/").await;
            (response.status(), body_text(response).await)
        }
    });
    // The second asks once the first holds the only slot (the app has it,
    // for 2 s).
    eventually("the first request at the app", || async {
        begun.load(std::sync::atomic::Ordering::SeqCst) == 1
    })
    .await;
    let response = vhost_send(&mut second, &host, "/").await;
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(response.headers()["retry-after"], "1");
    assert_eq!(
        body_text(response).await,
        "this Container's web apps have 1 requests in flight from this replica and none ended within 100ms: try again\n"
    );
    assert_eq!(in_flight.await.unwrap(), (StatusCode::OK, "slow page".to_owned()));
}
