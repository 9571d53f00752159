//! The web page in one process: real TLS, a real sidecar with its shim,
//! the router as the SSH client of the page's terminal. What the browser
//! does is done here with its headers (the Chromium run is e2e's).

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use hatchway_operator::router::auth::Permission;
use hatchway_testkit as support;
use http::StatusCode;
use support::*;
use tokio_tungstenite::tungstenite::Message;

const NS: &str = "team-a";
const HOST: &str = "localhost";
const ORIGIN: &str = "https://localhost";

struct Web {
    router: TestRouter,
    cluster: std::sync::Arc<MemoryCluster>,
    auth: std::sync::Arc<StaticAuth>,
    _sidecar: TestSidecar,
}

/// A router and a running Container "job" (a real gateway and shim);
/// alice may list Containers and open shells and logs in NS, bob may only
/// list them.
async fn web() -> Web {
    let cluster = MemoryCluster::new();
    let auth = StaticAuth::new();
    auth.user("alice-token", "alice");
    for permission in [Permission::LIST, Permission::SHELL, Permission::LOG] {
        auth.grant("alice", NS, permission);
    }
    auth.user("bob-token", "bob");
    auth.grant("bob", NS, Permission::LIST);
    let router = TestRouter::start(cluster.clone(), auth.clone()).await;
    let c = container(NS, "job");
    let uid = c.metadata.uid.clone().unwrap();
    // A workload that prints nothing: its own line could land after the
    // log written here (seen: "tick 1\ntick 2\nworkload started\n").
    let sidecar = TestSidecar::start(&uid)
        .await
        .with_shim_running("exec sleep 3600")
        .await;
    std::fs::write(sidecar.log_dir().join("stdout.txt"), "tick 1\ntick 2\n").unwrap();
    cluster.insert(c);
    let mut status = running_at(sidecar.addr());
    status.gateway.as_mut().unwrap().host_key = Some(sidecar.running.gateway.ssh.host_key_openssh());
    cluster.set_status(NS, "job", status);
    Web {
        router,
        cluster,
        auth,
        _sidecar: sidecar,
    }
}

fn request(method: &str, path: &str) -> http::request::Builder {
    http::Request::builder()
        .method(method)
        .uri(path)
        .header("host", HOST)
}

/// Logs in with `token` as the page does (a form POST from its origin):
/// the cookie's `name=value`.
async fn login(client: &mut Client, token: &str) -> String {
    let response = client
        .send(
            request("POST", "/ui/login")
                .header("origin", ORIGIN)
                .header("content-type", "application/x-www-form-urlencoded")
                .body(full(format!("token={token}")))
                .unwrap(),
        )
        .await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    assert_eq!(response.headers()["location"], "/");
    let cookie = response.headers()["set-cookie"].to_str().unwrap().to_owned();
    for attribute in ["Secure", "HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(cookie.contains(attribute), "{cookie}");
    }
    assert!(!cookie.contains(token), "never the token: {cookie}");
    cookie.split(';').next().unwrap().to_owned()
}

/// `GET path` with the page's session, as a same-origin fetch.
async fn page_get(client: &mut Client, cookie: &str, path: &str) -> (StatusCode, String) {
    let response = client
        .send(
            request("GET", path)
                .header("cookie", cookie)
                .header("sec-fetch-site", "same-origin")
                .body(empty())
                .unwrap(),
        )
        .await;
    let status = response.status();
    (status, body_text(response).await)
}

#[tokio::test]
async fn the_page_and_its_pinned_assets_are_served_with_a_strict_policy() {
    let web = web().await;
    let mut client = web.router.client().await;
    let response = client.send(request("GET", "/").body(empty()).unwrap()).await;
    assert_eq!(response.status(), StatusCode::OK);
    let csp = response.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        csp.contains("script-src 'self'") && csp.contains("frame-ancestors 'none'"),
        "{csp}"
    );
    for (name, value) in [
        ("x-frame-options", "DENY"),
        ("x-content-type-options", "nosniff"),
        ("referrer-policy", "same-origin"),
    ] {
        assert_eq!(response.headers()[name], value, "{name}");
    }
    let page = body_text(response).await;
    assert!(page.contains("/ui/xterm.js"), "{page}");
    let response = client
        .send(request("GET", "/ui/xterm.js").body(empty()).unwrap())
        .await;
    assert_eq!(
        response.headers()["content-type"],
        "text/javascript; charset=utf-8"
    );
    let xterm = body_text(response).await;
    assert!(
        xterm.len() > 100_000 && xterm.contains("Terminal"),
        "{} bytes",
        xterm.len()
    );
    let response = client
        .send(request("GET", "/ui/nope.js").body(empty()).unwrap())
        .await;
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    assert_eq!(body_text(response).await, "no such page /ui/nope.js\n");
    let response = client.send(request("POST", "/").body(empty()).unwrap()).await;
    assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
}

#[tokio::test]
async fn a_login_gives_the_page_its_own_session_from_its_own_origin_only() {
    let web = web().await;
    let mut client = web.router.client().await;
    let (status, _) = page_get(&mut client, "", "/ui/api/whoami").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    // Another site's form cannot log anyone in.
    let response = client
        .send(
            request("POST", "/ui/login")
                .header("origin", "https://evil.example.com")
                .header("content-type", "application/x-www-form-urlencoded")
                .body(full("token=alice-token"))
                .unwrap(),
        )
        .await;
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    assert!(response.headers().get("set-cookie").is_none());
    // `Origin: null` (a sandboxed frame, or a referrer policy that hides
    // it): the browser's Sec-Fetch-Site decides.
    for (site, status) in [
        ("cross-site", StatusCode::FORBIDDEN),
        ("same-origin", StatusCode::SEE_OTHER),
    ] {
        let response = client
            .send(
                request("POST", "/ui/login")
                    .header("origin", "null")
                    .header("sec-fetch-site", site)
                    .header("content-type", "application/x-www-form-urlencoded")
                    .body(full("token=alice-token"))
                    .unwrap(),
            )
            .await;
        assert_eq!(response.status(), status, "Origin: null, Sec-Fetch-Site: {site}");
        assert_eq!(
            response.headers().contains_key("set-cookie"),
            status == StatusCode::SEE_OTHER
        );
    }
    // A wrong token: back to the page, which says so.
    let response = client
        .send(
            request("POST", "/ui/login")
                .header("origin", ORIGIN)
                .body(full("token=nope"))
                .unwrap(),
        )
        .await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    let location = response.headers()["location"].to_str().unwrap();
    assert!(
        location.starts_with("/?error=the%20cluster%20did%20not%20accept"),
        "{location}"
    );

    let cookie = login(&mut client, "alice-token").await;
    let (status, body) = page_get(&mut client, &cookie, "/ui/api/whoami").await;
    assert_eq!(
        (status, body.as_str()),
        (StatusCode::OK, r#"{"groups":[],"user":"alice"}"#)
    );
    // The same cookie sent by another site's page is refused.
    let response = client
        .send(
            request("GET", "/ui/api/whoami")
                .header("cookie", &cookie)
                .header("origin", "https://evil.example.com")
                .body(empty())
                .unwrap(),
        )
        .await;
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    let response = client
        .send(
            request(
                "GET",
                &format!("/v1/namespaces/{NS}/containers/job/log/stdout.txt"),
            )
            .header("cookie", &cookie)
            .header("sec-fetch-site", "cross-site")
            .body(empty())
            .unwrap(),
        )
        .await;
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    // From the page, the user API's own endpoints take it: logs.
    let (status, body) = page_get(
        &mut client,
        &cookie,
        &format!("/v1/namespaces/{NS}/containers/job/log/stdout.txt"),
    )
    .await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "tick 1\ntick 2\n"));
    // A session for another host is not this one's.
    let response = client
        .send(
            http::Request::builder()
                .uri("/ui/api/whoami")
                .header("host", "other.example.com")
                .header("cookie", &cookie)
                .header("sec-fetch-site", "same-origin")
                .body(empty())
                .unwrap(),
        )
        .await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    // A forged cookie is nobody.
    let (status, _) = page_get(
        &mut client,
        "__Host-hatchway_ui=eyJuIjoiYWxpY2UifQ.00",
        "/ui/api/whoami",
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn a_one_time_link_logs_the_page_in_once() {
    let web = web().await;
    let mut client = web.router.client().await;
    let response = client
        .send(
            request("POST", "/ui/login-link")
                .header("authorization", "Bearer alice-token")
                .body(empty())
                .unwrap(),
        )
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    let link: hatchway_api::wire::WebLogin = serde_json::from_str(&body_text(response).await).unwrap();
    let path = link
        .url
        .strip_prefix("https://localhost")
        .expect("this host")
        .to_owned();
    assert!(path.starts_with("/ui/login?hatchway_code="), "{path}");
    let response = client.send(request("GET", &path).body(empty()).unwrap()).await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    let cookie = response.headers()["set-cookie"].to_str().unwrap();
    let cookie = cookie.split(';').next().unwrap().to_owned();
    let (status, body) = page_get(&mut client, &cookie, "/ui/api/whoami").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    // Once only.
    let response = client.send(request("GET", &path).body(empty()).unwrap()).await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    assert!(response.headers().get("set-cookie").is_none());
    assert!(
        response.headers()["location"]
            .to_str()
            .unwrap()
            .contains("not%20valid")
    );
    let response = client
        .send(request("POST", "/ui/login-link").body(empty()).unwrap())
        .await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn the_list_shows_what_the_user_may_do_and_nothing_to_those_who_may_not_list() {
    let web = web().await;
    let mut client = web.router.client().await;
    let alice = login(&mut client, "alice-token").await;
    let (status, body) = page_get(&mut client, &alice, &format!("/ui/api/containers?namespace={NS}")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let listed: serde_json::Value = serde_json::from_str(&body).unwrap();
    let job = &listed["containers"][0];
    assert_eq!(job["name"], "job");
    assert_eq!(job["phase"], "Running");
    assert_eq!(
        job["actions"],
        serde_json::json!({"shell": true, "logs": true, "apps": false})
    );
    let bob = login(&mut client, "bob-token").await;
    let (_, body) = page_get(&mut client, &bob, &format!("/ui/api/containers?namespace={NS}")).await;
    let listed: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        listed["containers"][0]["actions"],
        serde_json::json!({"shell": false, "logs": false, "apps": false})
    );
    let (status, body) = page_get(&mut client, &bob, "/ui/api/containers?namespace=other").await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(body.contains("may not list containers"), "{body}");
    let (status, _) = page_get(&mut client, &bob, "/ui/api/containers?namespace=Bad_NS").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

type Ws = tokio_tungstenite::WebSocketStream<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>;

/// Opens the page's terminal WebSocket with `cookie` from `origin`.
async fn open_terminal(
    router: &TestRouter,
    cookie: &str,
    origin: &str,
    query: &str,
) -> Result<Ws, StatusCode> {
    let uri = format!("wss://{HOST}/v1/namespaces/{NS}/containers/job/terminal?{query}");
    match router.websocket(&uri, HOST, cookie, origin).await {
        Ok((ws, _)) => Ok(ws),
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => Err(response.status()),
        Err(error) => panic!("{error}"),
    }
}

/// Reads the terminal until its output holds `needle`: the JSON messages
/// seen and the output.
async fn read_until(ws: &mut Ws, needle: &str) -> (Vec<serde_json::Value>, String) {
    let mut said = Vec::new();
    let mut screen = Vec::new();
    let read = async {
        while let Some(Ok(message)) = ws.next().await {
            match message {
                Message::Binary(data) => screen.extend_from_slice(&data),
                Message::Text(text) => said.push(serde_json::from_str(&text).unwrap()),
                _ => {}
            }
            if String::from_utf8_lossy(&screen).contains(needle) {
                return;
            }
        }
    };
    let found = tokio::time::timeout(Duration::from_secs(20), read).await;
    let screen = String::from_utf8_lossy(&screen).into_owned();
    assert!(found.is_ok(), "no {needle:?} in {screen:?} ({said:?})");
    (said, screen)
}

#[tokio::test]
async fn the_terminal_survives_a_reload_and_refuses_other_origins_and_users() {
    let web = web().await;
    let mut client = web.router.client().await;
    let alice = login(&mut client, "alice-token").await;

    let mut ws = open_terminal(&web.router, &alice, ORIGIN, "cols=100&rows=30")
        .await
        .unwrap();
    ws.send(Message::binary(b"stty size; echo $((6*7))\r".to_vec()))
        .await
        .unwrap();
    let (said, screen) = read_until(&mut ws, "\r\n42\r\n").await;
    assert!(screen.contains("30 100"), "the page's size: {screen:?}");
    let session = said
        .iter()
        .find_map(|m| m["session"].as_str())
        .expect("the session id comes first")
        .to_owned();
    assert_eq!(session.len(), 16, "{said:?}");
    ws.send(Message::binary(
        b"export MARK=kept-$((40+2)); echo marked-$((1+1))\r".to_vec(),
    ))
    .await
    .unwrap();
    read_until(&mut ws, "marked-2").await;
    // A reload: the page goes without a word.
    drop(ws);

    let mut ws = open_terminal(
        &web.router,
        &alice,
        ORIGIN,
        &format!("cols=90&rows=20&resume={session}"),
    )
    .await
    .unwrap();
    // The kept screen first, then the same shell.
    let (said, _) = read_until(&mut ws, "marked-2").await;
    ws.send(Message::binary(b"echo $MARK; stty size\r".to_vec()))
        .await
        .unwrap();
    let (_, screen) = read_until(&mut ws, "20 90").await;
    assert!(screen.contains("kept-42"), "the same shell: {screen:?}");
    let new_session = said.iter().find_map(|m| m["session"].as_str()).unwrap();
    assert_ne!(new_session, session, "a take-over is a new session");
    ws.send(Message::binary(b"exit 3\r".to_vec())).await.unwrap();
    let ended = async {
        while let Some(Ok(message)) = ws.next().await {
            if let Message::Text(text) = message
                && text.contains("exit")
            {
                return text.to_string();
            }
        }
        String::new()
    };
    let ended = tokio::time::timeout(Duration::from_secs(20), ended)
        .await
        .unwrap();
    assert_eq!(ended, r#"{"exit":3}"#);

    // Another site's page cannot open one with alice's cookie.
    let refused = open_terminal(&web.router, &alice, "https://evil.example.com", "").await;
    assert_eq!(refused.err(), Some(StatusCode::FORBIDDEN));
    // bob may not open a shell: refused before any upgrade.
    let bob = login(&mut client, "bob-token").await;
    let refused = open_terminal(&web.router, &bob, ORIGIN, "").await;
    assert_eq!(refused.err(), Some(StatusCode::FORBIDDEN));
    // A session that is gone: the page is told, and starts anew.
    let mut ws = open_terminal(&web.router, &alice, ORIGIN, "resume=0123456789abcdef")
        .await
        .unwrap();
    let message = tokio::time::timeout(Duration::from_secs(20), ws.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let said: serde_json::Value = serde_json::from_str(message.to_text().unwrap()).unwrap();
    assert_eq!(said["gone"], true, "{said}");
    assert!(
        said["error"]
            .as_str()
            .unwrap()
            .starts_with("410: session 0123456789abcdef is not known"),
        "{said}"
    );
}

#[tokio::test]
async fn the_terminal_survives_its_router_replica_ending() {
    let Web {
        router,
        cluster,
        auth,
        _sidecar,
    } = web().await;
    let mut client = router.client().await;
    let alice = login(&mut client, "alice-token").await;
    let mut ws = open_terminal(&router, &alice, ORIGIN, "cols=80&rows=24")
        .await
        .unwrap();
    ws.send(Message::binary(
        b"export MARK=kept-$((40+2)); echo marked-$((1+1))\r".to_vec(),
    ))
    .await
    .unwrap();
    let (said, _) = read_until(&mut ws, "marked-2").await;
    let session = said
        .iter()
        .find_map(|m| m["session"].as_str())
        .unwrap()
        .to_owned();
    // The replica ends (its connection to the gateway with it); the page,
    // reconnecting, reaches another replica with its cookie and the id.
    router.kill().await;
    let other = TestRouter::start(cluster, auth).await;
    let mut ws = open_terminal(
        &other,
        &alice,
        ORIGIN,
        &format!("cols=80&rows=24&resume={session}"),
    )
    .await
    .unwrap();
    read_until(&mut ws, "marked-2").await;
    ws.send(Message::binary(b"echo again-$MARK\r".to_vec()))
        .await
        .unwrap();
    read_until(&mut ws, "again-kept-42").await;
}

#[tokio::test]
async fn the_page_logs_in_over_http2_where_the_host_is_the_authority() {
    // Browsers speak HTTP/2 to the router: no `Host` header, `:authority`.
    let web = web().await;
    let mut sender = web.router.h2_client().await;
    let response = sender
        .send_request(
            http::Request::post("https://localhost/ui/login")
                .header("origin", ORIGIN)
                .body(full("token=alice-token"))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(response.version(), http::Version::HTTP_2);
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    assert_eq!(response.headers()["location"], "/");
    let cookie = response.headers()["set-cookie"].to_str().unwrap();
    let cookie = cookie.split(';').next().unwrap().to_owned();
    let response = sender
        .send_request(
            http::Request::get("https://localhost/ui/api/whoami")
                .header("cookie", &cookie)
                .header("sec-fetch-site", "same-origin")
                .body(empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(body_text(response).await, r#"{"groups":[],"user":"alice"}"#);
}
