//! The gateway over real sockets and real TLS: proofs on every route,
//! man-in-the-middle detection, limits, WebDAV, the web-app proxy,
//! port-forward, listening ports and the health port.

mod support;

use std::time::{Duration, Instant};

use bytes::Bytes;
use hatchway_api::wire;
use http::StatusCode;
use http_body_util::Full;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A request: method, path, extra headers.
type Route = (&'static str, &'static str, Vec<(&'static str, &'static str)>);

/// One request per route.
fn routes() -> Vec<Route> {
    vec![
        ("GET", "/ports", vec![]),
        ("GET", "/log/", vec![]),
        ("PROPFIND", "/log/", vec![("depth", "1")]),
        ("GET", "/log/stdout.txt", vec![]),
        (
            "POST",
            "/portforward?port=9",
            vec![("connection", "upgrade"), ("upgrade", "tcp")],
        ),
        (
            "POST",
            "/ssh",
            vec![("connection", "upgrade"), ("upgrade", "ssh")],
        ),
        (
            "GET",
            "/",
            vec![(wire::TARGET_PORT, "9"), (wire::REQUEST_HOST, "app.example")],
        ),
    ]
}

#[tokio::test]
async fn every_route_refuses_a_wrong_or_missing_proof_with_401() {
    let gw = TestSidecar::start(UID).await;
    for mode in [ProofMode::WrongKey, ProofMode::Missing] {
        for (method, path, headers) in routes() {
            let mut conn = GatewayConn::connect(gw.addr()).await;
            let mut req = conn.request(method, path, mode);
            for (k, v) in &headers {
                req = req.header(*k, *v);
            }
            let response = conn.send(req.body(empty()).unwrap()).await;
            assert_eq!(
                response.status(),
                StatusCode::UNAUTHORIZED,
                "{method} {path} with {mode:?}"
            );
            assert!(response.headers().get(wire::AUTHORIZATION_RESPONSE).is_none());
            let text = body_text(response).await;
            let want = if mode == ProofMode::Missing {
                "missing X-Hatchway-Authorization"
            } else {
                "does not prove"
            };
            assert!(text.contains(want), "{method} {path}: {text}");
        }
    }
}

#[tokio::test]
async fn a_missing_or_foreign_container_uid_is_refused_with_403() {
    let gw = TestSidecar::start(UID).await;
    let mut conn = GatewayConn::connect(gw.addr()).await;
    let req = http::Request::get("/ports")
        .header(wire::AUTHORIZATION, &conn.request_auth)
        .body(empty())
        .unwrap();
    let response = conn.send(req).await;
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    assert!(
        body_text(response)
            .await
            .contains("missing X-Hatchway-Container-Uid")
    );

    let req = http::Request::get("/ports")
        .header(wire::CONTAINER_UID, "0d4f3b21-8c6a-4e1f-a2b7-5e9c0f1d2a33")
        .header(wire::AUTHORIZATION, &conn.request_auth)
        .body(empty())
        .unwrap();
    let response = conn.send(req).await;
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    assert!(body_text(response).await.contains("not 0d4f3b21"));
}

#[tokio::test]
async fn a_valid_proof_is_answered_with_a_response_proof_on_every_route() {
    let gw = TestSidecar::start(UID).await;
    for (method, path, headers) in routes() {
        let mut conn = GatewayConn::connect(gw.addr()).await;
        let mut req = conn.request(method, path, ProofMode::Valid);
        for (k, v) in &headers {
            req = req.header(*k, *v);
        }
        // send_checked asserts the response proof; the route's own answer
        // (a 502 for port 9, where nothing listens, is fine here) follows.
        let response = conn.send_checked(req.body(empty()).unwrap()).await;
        assert!(
            response.status() != StatusCode::UNAUTHORIZED && response.status() != StatusCode::FORBIDDEN,
            "{method} {path}: {}",
            response.status()
        );
    }
}

#[tokio::test]
async fn a_man_in_the_middle_with_another_certificate_is_detected() {
    let gw = TestSidecar::start(UID).await;
    let relay = hatchway_testkit::mitm_relay(gw.addr()).await;
    let mut conn = GatewayConn::connect(relay).await;
    assert_ne!(conn.cert_der, {
        let (_, real) = tls_connect(TcpStream::connect(gw.addr()).await.unwrap()).await;
        real
    });
    // The caller proves itself over the certificate it saw (the relay's):
    // the real gateway refuses it, and no valid response proof comes back.
    let response = conn.get_ports(ProofMode::Valid).await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    let answer = response.headers().get(wire::AUTHORIZATION_RESPONSE);
    assert!(answer.is_none_or(|a| !hatchway_api::proof::verify_respond_auth(
        &key(),
        &conn.request_auth,
        a.to_str().unwrap()
    )));
}

#[tokio::test]
async fn oversized_headers_are_refused_with_431() {
    let gw = TestSidecar::start(UID).await;
    let mut conn = GatewayConn::connect(gw.addr()).await;
    let big = "x".repeat(64 * 1024);
    let req = conn
        .request("GET", "/ports", ProofMode::Valid)
        .header("x-padding", big)
        .body(empty())
        .unwrap();
    let response = conn.send(req).await;
    assert_eq!(response.status(), StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
}

#[tokio::test]
async fn a_client_that_never_sends_headers_is_disconnected() {
    let gw = TestSidecar::start_with(UID, |a| a.header_timeout_ms = 300).await;
    let tcp = TcpStream::connect(gw.addr()).await.unwrap();
    let (mut tls, _) = tls_connect(tcp).await;
    tls.write_all(b"GET /ports HTTP/1.1\r\n").await.unwrap();
    let started = Instant::now();
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), tls.read_to_end(&mut buf)).await;
    assert!(read.is_ok(), "the gateway closes a slow client's connection");
    assert!(started.elapsed() < Duration::from_secs(5));
    // A silent TCP client that never starts TLS is dropped too.
    let mut silent = TcpStream::connect(gw.addr()).await.unwrap();
    let n = tokio::time::timeout(Duration::from_secs(10), silent.read(&mut [0u8; 16])).await;
    assert!(matches!(n, Ok(Ok(0)) | Ok(Err(_))), "{n:?}");
}

#[tokio::test]
async fn connections_beyond_the_limit_are_refused() {
    let gw = TestSidecar::start_with(UID, |a| a.max_connections = 2).await;
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut conn = GatewayConn::connect(gw.addr()).await;
        let response = conn.get_ports(ProofMode::Valid).await;
        assert_eq!(response.status(), StatusCode::OK);
        held.push(conn);
    }
    let tcp = TcpStream::connect(gw.addr()).await.unwrap();
    let connector =
        tokio_rustls::TlsConnector::from(std::sync::Arc::new(hatchway_api::tls::gateway_client_config()));
    let third = tokio::time::timeout(
        Duration::from_secs(10),
        connector.connect(rustls::pki_types::ServerName::try_from("gateway").unwrap(), tcp),
    )
    .await
    .expect("refused promptly");
    assert!(third.is_err(), "a third connection is refused");
    drop(held);
    // Capacity comes back once the held connections close.
    eventually("a connection slot frees up", || async {
        let tcp = TcpStream::connect(gw.addr()).await.unwrap();
        let connector =
            tokio_rustls::TlsConnector::from(std::sync::Arc::new(hatchway_api::tls::gateway_client_config()));
        connector
            .connect(rustls::pki_types::ServerName::try_from("gateway").unwrap(), tcp)
            .await
            .is_ok()
    })
    .await;
}

#[tokio::test]
async fn webdav_lists_reads_and_ranges_the_logs() {
    let gw = TestSidecar::start(UID).await;
    std::fs::write(gw.log_dir().join("stdout.txt"), "line one\nline two\n").unwrap();
    std::fs::write(gw.log_dir().join("stderr.txt"), "").unwrap();
    std::fs::create_dir(gw.log_dir().join("subdir")).unwrap();
    let mut conn = GatewayConn::connect(gw.addr()).await;

    let req = conn
        .request("PROPFIND", "/log/", ProofMode::Valid)
        .header("depth", "1")
        .body(empty())
        .unwrap();
    let response = conn.send_checked(req).await;
    assert_eq!(response.status(), StatusCode::MULTI_STATUS);
    let xml = body_text(response).await;
    for href in [
        "<D:href>/log/</D:href>",
        "<D:href>/log/stdout.txt</D:href>",
        "<D:href>/log/stderr.txt</D:href>",
        "<D:href>/log/gateway.txt</D:href>",
    ] {
        assert!(xml.contains(href), "{href} in {xml}");
    }
    assert!(
        xml.contains("<D:getcontentlength>18</D:getcontentlength>"),
        "{xml}"
    );
    assert!(!xml.contains("subdir"), "{xml}");

    let req = conn
        .request("PROPFIND", "/log/", ProofMode::Valid)
        .header("depth", "0")
        .body(empty())
        .unwrap();
    let xml = body_text(conn.send_checked(req).await).await;
    assert_eq!(xml.matches("<D:response>").count(), 1, "{xml}");

    let req = conn
        .request("GET", "/log/stdout.txt", ProofMode::Valid)
        .body(empty())
        .unwrap();
    assert_eq!(
        body_text(conn.send_checked(req).await).await,
        "line one\nline two\n"
    );

    let req = conn
        .request("GET", "/log/stdout.txt", ProofMode::Valid)
        .header("range", "bytes=5-7")
        .body(empty())
        .unwrap();
    let response = conn.send_checked(req).await;
    assert_eq!(response.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(response.headers()["content-range"], "bytes 5-7/18");
    assert_eq!(body_text(response).await, "one");

    let req = conn
        .request("GET", "/log/stdout.txt", ProofMode::Valid)
        .header("range", "bytes=18-")
        .body(empty())
        .unwrap();
    let response = conn.send_checked(req).await;
    assert_eq!(response.status(), StatusCode::RANGE_NOT_SATISFIABLE);
    assert_eq!(response.headers()["content-range"], "bytes */18");

    let req = conn
        .request("HEAD", "/log/stdout.txt", ProofMode::Valid)
        .body(empty())
        .unwrap();
    let response = conn.send_checked(req).await;
    assert_eq!(response.headers()["content-length"], "18");
    assert_eq!(body_text(response).await, "");

    let req = conn
        .request("OPTIONS", "/log/", ProofMode::Valid)
        .body(empty())
        .unwrap();
    let response = conn.send_checked(req).await;
    assert_eq!(response.headers()["dav"], "1");
    assert!(response.headers()["allow"].to_str().unwrap().contains("PROPFIND"));

    let req = conn
        .request("PUT", "/log/stdout.txt", ProofMode::Valid)
        .body(Full::new(Bytes::from("x")))
        .unwrap();
    assert_eq!(
        conn.send_checked(req).await.status(),
        StatusCode::METHOD_NOT_ALLOWED
    );
}

/// Once the shim has written the workload's exit code (after the last byte
/// of its logs), every answer for a workload log file — whole, a range,
/// past the end, absent — says the log is complete; before, none does, and
/// the sidecar's own audit file never does.
#[tokio::test]
async fn log_answers_say_complete_once_the_workload_has_ended() {
    let gw = TestSidecar::start(UID).await;
    std::fs::write(gw.log_dir().join("stdout.txt"), "last words\n").unwrap();
    let mut conn = GatewayConn::connect(gw.addr()).await;
    let complete = |response: &http::Response<hyper::body::Incoming>| {
        response
            .headers()
            .get(hatchway_api::wire::LOG_COMPLETE)
            .map(|v| v.to_str().unwrap().to_owned())
    };
    let requests = [
        ("/log/stdout.txt", None, StatusCode::OK),
        ("/log/stdout.txt", Some("bytes=5-"), StatusCode::PARTIAL_CONTENT),
        (
            "/log/stdout.txt",
            Some("bytes=11-"),
            StatusCode::RANGE_NOT_SATISFIABLE,
        ),
        ("/log/stderr.txt", None, StatusCode::NOT_FOUND),
    ];
    for ended in [false, true] {
        if ended {
            std::fs::write(gw.log_dir().join("exit-code"), "0\n").unwrap();
        }
        for (path, range, status) in requests {
            let mut req = conn.request("GET", path, ProofMode::Valid);
            if let Some(range) = range {
                req = req.header("range", range);
            }
            let response = conn.send_checked(req.body(empty()).unwrap()).await;
            assert_eq!(response.status(), status, "{path} {range:?}");
            assert_eq!(
                complete(&response),
                ended.then(|| "true".to_owned()),
                "{path} {range:?} with the workload ended: {ended}"
            );
            let _ = body_text(response).await;
        }
        let response = conn
            .send_checked(
                conn.request("GET", "/log/gateway.txt", ProofMode::Valid)
                    .body(empty())
                    .unwrap(),
            )
            .await;
        assert_eq!(
            complete(&response),
            None,
            "the audit file goes on after the workload"
        );
        let _ = body_text(response).await;
    }
}

#[tokio::test]
async fn webdav_serves_recordings_from_the_audit_directory_never_the_workloads_forgeries() {
    let gw = TestSidecar::start(UID).await;
    let recordings = gw.audit_dir().join("sessions");
    std::fs::create_dir_all(&recordings).unwrap();
    let cast = "{\"version\":2,\"width\":80,\"height\":24}\n[0.1,\"o\",\"hi\"]\n";
    std::fs::write(recordings.join("00000000000000aa.cast"), cast).unwrap();
    // The workload's attacks: a `sessions` of its own in the log
    // directory (a file, then a directory with a forged recording), and
    // a symlink out of the recordings directory.
    std::fs::write(gw.log_dir().join("sessions"), "forged").unwrap();
    std::os::unix::fs::symlink("/etc/passwd", recordings.join("00000000000000bb.cast")).unwrap();
    let mut conn = GatewayConn::connect(gw.addr()).await;
    let mut get = async |method: &str, path: &str, depth: Option<&str>| {
        let mut req = conn.request(method, path, ProofMode::Valid);
        if let Some(depth) = depth {
            req = req.header("depth", depth);
        }
        let response = conn.send_checked(req.body(empty()).unwrap()).await;
        let (status, kind) = (response.status(), response.headers().get("content-type").cloned());
        (status, kind, body_text(response).await)
    };

    let (status, _, root) = get("GET", "/log/", None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(root.lines().any(|l| l == "sessions/\t0"), "{root}");
    assert!(
        !root.lines().any(|l| l.starts_with("sessions\t")),
        "the workload's file: {root}"
    );
    let (status, _, listed) = get("GET", "/log/sessions/", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        listed,
        format!("sessions/00000000000000aa.cast\t{}\n", cast.len())
    );
    let (status, kind, body) = get("GET", "/log/sessions/00000000000000aa.cast", None).await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, cast));
    assert_eq!(kind.unwrap(), "application/x-asciicast");
    let (status, _, body) = get("GET", "/log/sessions/00000000000000bb.cast", None).await;
    assert_eq!(
        status,
        StatusCode::NOT_FOUND,
        "a symlink is never followed: {body}"
    );
    for bad in [
        "/log/sessions/..%2Fgateway.txt",
        "/log/sessions/.x",
        "/log/sessions/a/b",
    ] {
        let (status, _, body) = get("GET", bad, None).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{bad}: {body}");
    }
    let (status, _, xml) = get("PROPFIND", "/log/", Some("1")).await;
    assert_eq!(status, StatusCode::MULTI_STATUS);
    assert!(
        xml.contains("<D:href>/log/sessions/</D:href><D:propstat><D:prop><D:displayname>sessions/</D:displayname><D:resourcetype><D:collection/>"),
        "{xml}"
    );
    let (status, _, xml) = get("PROPFIND", "/log/sessions/", Some("1")).await;
    assert_eq!(status, StatusCode::MULTI_STATUS);
    assert!(
        xml.contains("<D:href>/log/sessions/00000000000000aa.cast</D:href>"),
        "{xml}"
    );
    assert!(!xml.contains("00000000000000bb"), "{xml}");

    // The workload's directory named `sessions` is never read either.
    std::fs::remove_file(gw.log_dir().join("sessions")).unwrap();
    std::fs::create_dir(gw.log_dir().join("sessions")).unwrap();
    std::fs::write(gw.log_dir().join("sessions/00000000000000cc.cast"), "forged").unwrap();
    let (status, _, _) = get("GET", "/log/sessions/00000000000000cc.cast", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn webdav_honours_the_router_prefix() {
    let gw = TestSidecar::start(UID).await;
    std::fs::write(gw.log_dir().join("stdout.txt"), "hi\n").unwrap();
    let mut conn = GatewayConn::connect(gw.addr()).await;
    let prefix = "/v1/namespaces/lab/containers/web-1/log";
    let req = conn
        .request("PROPFIND", &format!("{prefix}/"), ProofMode::Valid)
        .header(wire::WEBDAV_PREFIX, prefix)
        .header("depth", "1")
        .body(empty())
        .unwrap();
    let xml = body_text(conn.send_checked(req).await).await;
    assert!(
        xml.contains(&format!("<D:href>{prefix}/stdout.txt</D:href>")),
        "{xml}"
    );
    let req = conn
        .request("GET", &format!("{prefix}/stdout.txt"), ProofMode::Valid)
        .header(wire::WEBDAV_PREFIX, prefix)
        .body(empty())
        .unwrap();
    assert_eq!(body_text(conn.send_checked(req).await).await, "hi\n");
}

#[tokio::test]
async fn webdav_cannot_leave_the_log_directory() {
    let gw = TestSidecar::start(UID).await;
    // The workload can write the shared log directory: it plants a symlink
    // to the sidecar's key and a FIFO.
    std::os::unix::fs::symlink(gw.dir.path().join("ctr_key"), gw.log_dir().join("key.txt")).unwrap();
    nix::unistd::mkfifo(
        &gw.log_dir().join("fifo.txt"),
        nix::sys::stat::Mode::from_bits_truncate(0o600),
    )
    .unwrap();
    let mut conn = GatewayConn::connect(gw.addr()).await;
    for path in [
        "/log/key.txt",
        "/log/fifo.txt",
        "/log/../ctr_key",
        "/log/%2e%2e/ctr_key",
        "/log/%2e%2e%2fctr_key",
        "/log/..%2fctr_key",
        "/log//etc/passwd",
    ] {
        let req = conn.request("GET", path, ProofMode::Valid).body(empty()).unwrap();
        let response = conn.send_checked(req).await;
        assert_eq!(response.status(), StatusCode::NOT_FOUND, "{path}");
        assert!(!body_text(response).await.contains(key().expose_hex()), "{path}");
    }
    let req = conn
        .request("PROPFIND", "/log/", ProofMode::Valid)
        .header("depth", "1")
        .body(empty())
        .unwrap();
    let xml = body_text(conn.send_checked(req).await).await;
    assert!(!xml.contains("key.txt") && !xml.contains("fifo.txt"), "{xml}");
}

#[tokio::test]
async fn sessions_are_recorded_in_gateway_txt_which_webdav_serves() {
    let gw = TestSidecar::start(UID).await;
    let echo = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = echo.local_addr().unwrap().port();
    tokio::spawn(async move {
        let (mut s, _) = echo.accept().await.unwrap();
        let mut buf = [0u8; 5];
        s.read_exact(&mut buf).await.unwrap();
        s.write_all(&buf).await.unwrap();
    });
    let mut conn = GatewayConn::connect(gw.addr()).await;
    let req = conn
        .request("POST", &format!("/portforward?port={port}"), ProofMode::Valid)
        .header("connection", "upgrade")
        .header("upgrade", "tcp")
        .header(wire::REQUEST_USER, "alice")
        .header(wire::REQUEST_ID, "req-42")
        .body(empty())
        .unwrap();
    let response = conn.send_checked(req).await;
    let mut io = hyper_util::rt::TokioIo::new(hyper::upgrade::on(response).await.unwrap());
    io.write_all(b"hello").await.unwrap();
    let mut back = [0u8; 5];
    io.read_exact(&mut back).await.unwrap();
    drop(io);
    let trail = gw.audit_dir().join("gateway.txt");
    eventually("the session end in gateway.txt", || async {
        std::fs::read_to_string(&trail)
            .unwrap_or_default()
            .contains("ended kind=portforward")
    })
    .await;
    let text = std::fs::read_to_string(&trail).unwrap();
    assert!(
        text.contains(r#"started kind=portforward user="alice" request="req-42""#),
        "{text}"
    );
    assert!(text.contains("bytes_in=5 bytes_out=5"), "{text}");
    let mut conn = GatewayConn::connect(gw.addr()).await;
    let req = conn
        .request("GET", "/log/gateway.txt", ProofMode::Valid)
        .header(wire::REQUEST_USER, "bob")
        .body(empty())
        .unwrap();
    // What was there, then this very read (audited before it is served).
    let served = body_text(conn.send_checked(req).await).await;
    let read = served
        .strip_prefix(text.as_str())
        .unwrap_or_else(|| panic!("{served}"));
    assert!(
        read.ends_with(" log read user=\"bob\" request=\"\" replica=\"\" route=\"GET /log/gateway.txt\"\n"),
        "{served}"
    );
}

#[tokio::test]
async fn port_forward_moves_100_mib_with_half_close() {
    let gw = TestSidecar::start(UID).await;
    let port = hashing_server().await;
    let stream = port_forward(GatewayConn::connect(gw.addr()).await, port).await;
    // The sink answers only after our half-close reaches it.
    let elapsed = push_100_mib(stream).await;
    println!(
        "port-forward direct: 100 MiB in {elapsed:?} = {:.0} MiB/s",
        100.0 / elapsed.as_secs_f64()
    );
}

#[tokio::test]
async fn port_forward_to_a_closed_port_says_so() {
    let gw = TestSidecar::start(UID).await;
    let closed = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut conn = GatewayConn::connect(gw.addr()).await;
    let req = conn
        .request("POST", &format!("/portforward?port={closed}"), ProofMode::Valid)
        .header("connection", "upgrade")
        .header("upgrade", "tcp")
        .body(empty())
        .unwrap();
    let response = conn.send_checked(req).await;
    assert_eq!(response.status(), StatusCode::BAD_GATEWAY);
    assert!(
        body_text(response)
            .await
            .contains(&format!("cannot connect to port {closed}"))
    );
    let req = conn
        .request("POST", "/portforward?port=0", ProofMode::Valid)
        .header("connection", "upgrade")
        .header("upgrade", "tcp")
        .body(empty())
        .unwrap();
    assert_eq!(conn.send_checked(req).await.status(), StatusCode::BAD_REQUEST);
    let req = conn
        .request("POST", "/portforward?port=80", ProofMode::Valid)
        .body(empty())
        .unwrap();
    let response = conn.send_checked(req).await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert!(body_text(response).await.contains("Upgrade: tcp"));
}

/// A gateway whose rule allows only `allowed`, as the operator would
/// write it for `spec.portForward.ports: [allowed]`.
async fn allowing_only(allowed: u16) -> TestSidecar {
    TestSidecar::start_with(UID, |a| {
        a.forward_ports = allowed.to_string().parse().unwrap();
        a.forward_rule = format!("spec.portForward.ports allows {allowed}");
    })
    .await
}

/// alice's `POST /portforward?port=PORT` with `Upgrade: PROTOCOL`.
fn forward_request(conn: &mut GatewayConn, port: u16, protocol: &str) -> http::Request<Full<Bytes>> {
    conn.request("POST", &format!("/portforward?port={port}"), ProofMode::Valid)
        .header("connection", "upgrade")
        .header("upgrade", protocol)
        .header(wire::REQUEST_USER, "alice")
        .body(empty())
        .unwrap()
}

/// A UDP echo server on 127.0.0.1: its port.
async fn udp_echo() -> u16 {
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let port = socket.local_addr().unwrap().port();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 65_536];
        while let Ok((n, from)) = socket.recv_from(&mut buf).await {
            let _ = socket.send_to(&buf[..n], from).await;
        }
    });
    port
}

#[tokio::test]
async fn a_udp_port_forward_carries_datagrams_whole_and_obeys_the_rule() {
    let echo = udp_echo().await;
    let refused = udp_echo().await;
    let gw = allowing_only(echo).await;
    let upgrade = |conn: &mut GatewayConn, port: u16| forward_request(conn, port, wire::UPGRADE_UDP);
    let mut conn = GatewayConn::connect(gw.addr()).await;
    let request = upgrade(&mut conn, refused);
    let response = conn.send_checked(request).await;
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    assert!(
        body_text(response)
            .await
            .starts_with(&format!("port {refused} is not forwardable"))
    );

    let mut conn = GatewayConn::connect(gw.addr()).await;
    let request = upgrade(&mut conn, echo);
    let response = conn.send_checked(request).await;
    assert_eq!(response.status(), StatusCode::SWITCHING_PROTOCOLS);
    assert_eq!(response.headers()["upgrade"], wire::UPGRADE_UDP);
    let stream = hyper_util::rt::TokioIo::new(hyper::upgrade::on(response).await.unwrap());
    let (from_pod, mut to_pod) = tokio::io::split(stream);
    let mut from_pod = hatchway_api::datagrams::Reader::new(from_pod);
    // Boundaries kept: an empty datagram, a small one, a 60 000-byte one.
    let sent: Vec<Vec<u8>> = vec![Vec::new(), b"dig example".to_vec(), vec![9u8; 60_000]];
    for datagram in &sent {
        hatchway_api::datagrams::write(&mut to_pod, datagram)
            .await
            .unwrap();
        let back = tokio::time::timeout(std::time::Duration::from_secs(20), from_pod.next())
            .await
            .expect("the echo in time")
            .unwrap()
            .expect("a datagram, not the end");
        assert_eq!(&back[..], &datagram[..]);
    }
    // A burst, sent in one write as the relays batch them, comes back
    // whole and in order (the echo's socket keeps them: loopback).
    let burst: Vec<Vec<u8>> = (0..40u8).map(|i| vec![i; 1000 + usize::from(i)]).collect();
    let mut batch = Vec::new();
    for datagram in &burst {
        hatchway_api::datagrams::encode(&mut batch, datagram).unwrap();
    }
    to_pod.write_all(&batch).await.unwrap();
    for datagram in &burst {
        let back = tokio::time::timeout(std::time::Duration::from_secs(20), from_pod.next())
            .await
            .expect("the burst's echo in time")
            .unwrap()
            .expect("a datagram, not the end");
        assert_eq!(&back[..], &datagram[..]);
    }
    drop((from_pod, to_pod));
    let trail = gw.audit_dir().join("gateway.txt");
    eventually("the UDP flow's end in gateway.txt", || async {
        std::fs::read_to_string(&trail)
            .unwrap_or_default()
            .contains("ended kind=portforward-udp")
    })
    .await;
    let text = std::fs::read_to_string(&trail).unwrap();
    let bytes: usize = sent.iter().chain(&burst).map(Vec::len).sum();
    assert!(
        text.contains(&format!("bytes_in={bytes} bytes_out={bytes}")),
        "{text}"
    );
}

#[tokio::test]
async fn port_forward_reaches_only_the_ports_the_containers_rule_allows() {
    // Both ports listen: a refusal is the rule's, not a closed port.
    let allowed = hashing_server().await;
    let refused = hashing_server().await;
    let gw = allowing_only(allowed).await;
    let upgrade = |conn: &mut GatewayConn, port: u16| forward_request(conn, port, wire::UPGRADE_TCP);
    let mut conn = GatewayConn::connect(gw.addr()).await;
    let request = upgrade(&mut conn, refused);
    let response = conn.send_checked(request).await;
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    assert_eq!(
        body_text(response).await,
        format!("port {refused} is not forwardable: spec.portForward.ports allows {allowed}\n")
    );
    let mut conn = GatewayConn::connect(gw.addr()).await;
    let request = upgrade(&mut conn, allowed);
    let response = conn.send_checked(request).await;
    assert_eq!(response.status(), StatusCode::SWITCHING_PROTOCOLS);
    let trail = std::fs::read_to_string(gw.audit_dir().join("gateway.txt")).unwrap();
    assert!(
        trail.contains(&format!(
            "forward refused (port {refused} is not forwardable: spec.portForward.ports allows {allowed}) user=\"alice\""
        )),
        "{trail}"
    );
}

/// A small web app: echoes the request's Host and headers, and on
/// `Upgrade: websocket` switches protocols and echoes bytes.
async fn start_web_app() -> u16 {
    use hyper::service::service_fn;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let service = service_fn(|mut req: http::Request<hyper::body::Incoming>| async move {
                    if req.headers().contains_key("upgrade") {
                        let on = hyper::upgrade::on(&mut req);
                        tokio::spawn(async move {
                            let mut io = hyper_util::rt::TokioIo::new(on.await.unwrap());
                            let mut buf = [0u8; 1024];
                            loop {
                                let n = io.read(&mut buf).await.unwrap_or(0);
                                if n == 0 || io.write_all(&buf[..n]).await.is_err() {
                                    break;
                                }
                            }
                        });
                        return Ok::<_, std::convert::Infallible>(
                            http::Response::builder()
                                .status(101)
                                .header("connection", "upgrade")
                                .header("upgrade", "websocket")
                                .body(Full::new(Bytes::new()))
                                .unwrap(),
                        );
                    }
                    let mut seen: Vec<String> = req
                        .headers()
                        .iter()
                        .map(|(k, v)| format!("{k}: {}", v.to_str().unwrap_or("?")))
                        .collect();
                    seen.sort();
                    seen.insert(0, format!("{} {}", req.method(), req.uri()));
                    Ok(http::Response::builder()
                        .header("connection", "keep-alive")
                        .header("x-app", "yes")
                        .body(Full::new(Bytes::from(seen.join("\n"))))
                        .unwrap())
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .with_upgrades()
                    .await;
            });
        }
    });
    port
}

#[tokio::test]
async fn the_proxy_serves_web_apps_with_the_requested_host() {
    let gw = TestSidecar::start(UID).await;
    let port = start_web_app().await;
    let mut conn = GatewayConn::connect(gw.addr()).await;
    let req = conn
        .request("GET", "/lab/tree?x=1", ProofMode::Valid)
        .header(wire::TARGET_PORT, port.to_string())
        .header(wire::REQUEST_HOST, "web-1-8888.apps.example")
        .header("authorization", "Bearer app-token")
        .header("connection", "keep-alive, x-drop-me")
        .header("x-drop-me", "1")
        .body(empty())
        .unwrap();
    let response = conn.send_checked(req).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["x-app"], "yes");
    let seen = body_text(response).await;
    assert!(seen.starts_with("GET /lab/tree?x=1\n"), "{seen}");
    assert!(seen.contains("host: web-1-8888.apps.example"), "{seen}");
    assert!(
        seen.contains("authorization: Bearer app-token"),
        "the app's own Authorization passes: {seen}"
    );
    assert!(seen.contains("x-forwarded-proto: https"), "{seen}");
    assert!(
        !seen.contains("x-hatchway-"),
        "our headers never reach the app: {seen}"
    );
    assert!(!seen.contains("x-drop-me"), "{seen}");

    let req = conn
        .request("GET", "/", ProofMode::Valid)
        .header(wire::TARGET_PORT, port.to_string())
        .body(empty())
        .unwrap();
    let response = conn.send_checked(req).await;
    assert_eq!(response.status(), StatusCode::BAD_GATEWAY);
    assert!(body_text(response).await.contains("X-Hatchway-Request-Host"));
}

#[tokio::test]
async fn the_proxy_carries_websocket_upgrades() {
    let gw = TestSidecar::start(UID).await;
    let port = start_web_app().await;
    let mut conn = GatewayConn::connect(gw.addr()).await;
    let req = conn
        .request("GET", "/ws", ProofMode::Valid)
        .header(wire::TARGET_PORT, port.to_string())
        .header(wire::REQUEST_HOST, "app.example")
        .header("connection", "upgrade")
        .header("upgrade", "websocket")
        .body(empty())
        .unwrap();
    let response = conn.send_checked(req).await;
    assert_eq!(response.status(), StatusCode::SWITCHING_PROTOCOLS);
    let mut io = hyper_util::rt::TokioIo::new(hyper::upgrade::on(response).await.unwrap());
    io.write_all(b"ping over websocket").await.unwrap();
    let mut back = [0u8; 19];
    io.read_exact(&mut back).await.unwrap();
    assert_eq!(&back, b"ping over websocket");
}

#[tokio::test]
async fn listening_ports_are_served() {
    let gw = TestSidecar::start(UID).await;
    let app = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = app.local_addr().unwrap().port();
    let addr = gw.addr();
    eventually("the new listener in /ports", || async move {
        let mut conn = GatewayConn::connect(addr).await;
        let text = body_text(conn.get_ports(ProofMode::Valid).await).await;
        let ports: serde_json::Value = serde_json::from_str(&text).unwrap();
        ports["ports"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p.as_u64() == Some(port as u64))
    })
    .await;
    drop(app);
}

#[tokio::test]
async fn the_health_port_answers_without_auth() {
    let gw = TestSidecar::start(UID).await;
    let health = gw.running.health_addr;
    let get = |path: &'static str| async move {
        let mut s = TcpStream::connect(health).await.unwrap();
        s.write_all(format!("GET {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n").as_bytes())
            .await
            .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        out
    };
    assert!(get("/healthz").await.starts_with("HTTP/1.1 200"));
    let ready = get("/readyz").await;
    let conn = GatewayConn::connect(gw.addr()).await;
    assert!(
        ready.contains(&hatchway_api::proof::certificate_sha256(&conn.cert_der)),
        "{ready}"
    );
    assert!(ready.contains("SHA256:"), "{ready}");
    // A refused request shows up in the metrics.
    let mut bad = GatewayConn::connect(gw.addr()).await;
    bad.get_ports(ProofMode::Missing).await;
    let metrics = get("/metrics").await;
    assert!(
        metrics.contains(r#"hatchway_sidecar_auth_failures_total{reason="missing_proof"} 1"#),
        "{metrics}"
    );
    assert!(get("/nope").await.starts_with("HTTP/1.1 404"));
}

#[tokio::test]
async fn a_missing_key_file_names_the_setting() {
    let dir = tempfile::tempdir().unwrap();
    let args = hatchway_sidecar::args::GatewayArgs {
        key_file: dir.path().join("absent"),
        tunnel_url: Some("https://router:8443".into()),
        ..hatchway_sidecar::args::GatewayArgs::local(UID, dir.path())
    };
    let error = hatchway_sidecar::start::start_gateway(args.clone())
        .await
        .err()
        .expect("refused");
    assert_eq!(error.exit_code(), 64);
    assert!(
        error.to_string().starts_with("HATCHWAY_KEY_FILE: cannot read"),
        "{error}"
    );
    std::fs::write(dir.path().join("absent"), "not hex").unwrap();
    let error = hatchway_sidecar::start::start_gateway(args.clone())
        .await
        .err()
        .expect("refused");
    assert!(error.to_string().contains("64 lowercase hex"), "{error}");
    std::fs::write(dir.path().join("absent"), key().expose_hex()).unwrap();
    let error = hatchway_sidecar::start::start_gateway(args)
        .await
        .err()
        .expect("refused");
    assert!(
        error
            .to_string()
            .starts_with("HATCHWAY_ROUTER_CA_FILE: cannot read"),
        "{error}"
    );
}

/// A local app that accepts connections and never answers.
async fn start_silent_app() -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            held.push(stream);
        }
    });
    port
}

#[tokio::test]
async fn a_flood_of_slow_web_requests_leaves_room_for_logs() {
    // 12 connections: web apps may hold 9 of them.
    let gw = TestSidecar::start_with(UID, |a| a.max_connections = 12).await;
    std::fs::write(gw.log_dir().join("stdout.txt"), "hello\n").unwrap();
    let port = start_silent_app().await;
    let mut flood = Vec::new();
    for _ in 0..9 {
        let mut conn = GatewayConn::connect(gw.addr()).await;
        let req = conn
            .request("GET", "/slow", ProofMode::Valid)
            .header(wire::TARGET_PORT, port.to_string())
            .header(wire::REQUEST_HOST, "app.example")
            .body(empty())
            .unwrap();
        flood.push(tokio::spawn(async move {
            let _ = conn.sender.send_request(req).await;
        }));
    }
    // The web apps' share is used up: the next web request is refused at
    // once, with why...
    eventually("the web-app share to be full", || async {
        let mut conn = GatewayConn::connect(gw.addr()).await;
        let req = conn
            .request("GET", "/", ProofMode::Valid)
            .header(wire::TARGET_PORT, port.to_string())
            .header(wire::REQUEST_HOST, "app.example")
            .body(empty())
            .unwrap();
        let response = conn.send_checked(req).await;
        response.status() == StatusCode::SERVICE_UNAVAILABLE
            && body_text(response)
                .await
                .contains("web apps already have 9 requests in flight")
    })
    .await;
    // ...while logs (and shells, port-forwards) still get through.
    let mut conn = GatewayConn::connect(gw.addr()).await;
    let req = conn
        .request("GET", "/log/stdout.txt", ProofMode::Valid)
        .body(empty())
        .unwrap();
    let response = conn.send_checked(req).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(body_text(response).await, "hello\n");
    for request in flood {
        request.abort();
    }
}

/// Every line the gateway logs for a request names the router's request
/// id, those of the tasks it starts too (the SSH connection's); an id
/// that is not sane is not logged.
#[tokio::test]
async fn every_line_logged_for_a_request_names_its_request_id() {
    use std::sync::{Arc, Mutex};
    #[derive(Clone, Default)]
    struct Lines(Arc<Mutex<Vec<u8>>>);
    impl std::io::Write for Lines {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let lines = Lines::default();
    let writer = lines.clone();
    // (nextest runs each test in a process of its own: this is its only
    // subscriber.)
    tracing_subscriber::fmt()
        .json()
        .with_env_filter("hatchway_sidecar=debug")
        .with_writer(move || writer.clone())
        .init();
    let logged = |id: &str| -> Vec<serde_json::Value> {
        String::from_utf8_lossy(&lines.0.lock().unwrap())
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .filter(|l| l["span"]["request_id"] == id)
            .collect()
    };
    let gw = TestSidecar::start(UID).await;

    let mut conn = GatewayConn::connect(gw.addr()).await;
    let req = conn
        .request("GET", "/ports", ProofMode::WrongKey)
        .header(wire::REQUEST_ID, "r-refused")
        .body(empty())
        .unwrap();
    assert_eq!(conn.send(req).await.status(), StatusCode::UNAUTHORIZED);
    let req = conn
        .request("GET", "/ports", ProofMode::Valid)
        .header(wire::REQUEST_ID, "r-ports")
        .header(wire::REQUEST_USER, "alice")
        .body(empty())
        .unwrap();
    assert_eq!(conn.send_checked(req).await.status(), StatusCode::OK);
    let refused = logged("r-refused");
    assert!(
        refused
            .iter()
            .any(|l| l["fields"]["message"] == "gateway request refused"),
        "{refused:?}"
    );
    let answered = logged("r-ports");
    assert!(
        answered
            .iter()
            .any(|l| l["fields"]["message"] == "request answered"
                && l["fields"]["status"] == 200
                && l["span"]["route"] == "ports"
                && l["span"]["user"] == "alice"),
        "{answered:?}"
    );

    // An SSH connection that is not SSH: its task's words carry the id.
    let mut conn = GatewayConn::connect(gw.addr()).await;
    let req = conn
        .request("POST", "/ssh", ProofMode::Valid)
        .header("connection", "upgrade")
        .header("upgrade", "ssh")
        .header(wire::REQUEST_ID, "r-ssh")
        .body(empty())
        .unwrap();
    let response = conn.send_checked(req).await;
    assert_eq!(response.status(), StatusCode::SWITCHING_PROTOCOLS);
    let mut upgraded = hyper_util::rt::TokioIo::new(hyper::upgrade::on(response).await.unwrap());
    upgraded.write_all(b"not ssh\r\n").await.unwrap();
    upgraded.shutdown().await.unwrap();
    drop(upgraded);
    eventually("the SSH task's line with the request id", || {
        let lines = logged("r-ssh");
        async move {
            lines.iter().any(|l| {
                l["fields"]["message"]
                    .as_str()
                    .is_some_and(|m| m.starts_with("SSH "))
            })
        }
    })
    .await;

    // An id that could forge log lines is not logged as it came.
    let mut conn = GatewayConn::connect(gw.addr()).await;
    let req = conn
        .request("GET", "/ports", ProofMode::Valid)
        .header(wire::REQUEST_ID, "r 1\"x")
        .body(empty())
        .unwrap();
    assert_eq!(conn.send_checked(req).await.status(), StatusCode::OK);
    assert!(
        logged("-")
            .iter()
            .any(|l| l["fields"]["message"] == "request answered"),
        "an insane id is logged as -"
    );
}
