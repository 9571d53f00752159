//! `hatchway-operator check` (the chart's `helm test` hook) against a real
//! router: a ready router passes; another CA, a path that is not the
//! router's, nothing listening, a URL that is not https and a missing CA
//! file each fail with what was asked and what came back.

use hatchway_operator::check::{CheckArgs, CheckError, readyz, run};
use hatchway_operator::router::tls::RouterTls;
use hatchway_testkit::{MemoryCluster, StaticAuth, TestRouter, pki};
use http::StatusCode;

#[tokio::test]
async fn the_helm_test_check_passes_a_ready_router_and_says_what_else_came_back() {
    let router = TestRouter::start(MemoryCluster::new(), StaticAuth::new()).await;
    let ca = pki().ca_pem;
    let url = format!("https://localhost:{}", router.addr.port());

    let answer = readyz(&url, ca.as_bytes()).await.unwrap();
    assert_eq!(answer, "200 OK ok");
    let answer = readyz(&format!("{url}/"), ca.as_bytes()).await.unwrap();
    assert_eq!(answer, "200 OK ok", "a trailing slash is the same URL");

    // A certificate from another CA: refused in the handshake.
    let other = RouterTls::generate(&["localhost".into()]).unwrap();
    let error = readyz(&url, other.ca_pem.as_bytes()).await.unwrap_err();
    assert!(matches!(error, CheckError::Get { .. }), "{error:?}");
    let message = error.to_string();
    assert!(
        message.starts_with(&format!("GET {url}/readyz: TLS: ")) && message.contains("certificate"),
        "{message}"
    );

    // Not the router's path: the status and body that came back.
    let error = readyz(&format!("{url}/elsewhere"), ca.as_bytes())
        .await
        .unwrap_err();
    match error {
        CheckError::Status { status, ref url, .. } => {
            assert_eq!(status, StatusCode::NOT_FOUND);
            assert!(url.ends_with("/elsewhere/readyz"), "{url}");
        }
        other => panic!("a 404 expected: {other:?}"),
    }

    // Nothing listening.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let error = readyz(&format!("https://localhost:{closed}"), ca.as_bytes())
        .await
        .unwrap_err()
        .to_string();
    assert!(error.contains("connecting: "), "{error}");

    let error = readyz(&format!("http://localhost:{}", router.addr.port()), ca.as_bytes())
        .await
        .unwrap_err();
    assert!(matches!(error, CheckError::BadUrl(_)), "{error:?}");

    // The whole check: a CA file, no discovery, no waiting.
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("ca.crt");
    std::fs::write(&ca_file, &ca).unwrap();
    let args = |url: String, ca: std::path::PathBuf| CheckArgs {
        url,
        ca,
        discovery: String::new(),
        wait_seconds: 0,
    };
    run(&args(url.clone(), ca_file.clone())).await.unwrap();
    let error = run(&args(format!("https://localhost:{closed}"), ca_file))
        .await
        .unwrap_err();
    assert!(error.to_string().contains("connecting: "), "{error}");
    let error = run(&args(url, dir.path().join("missing.crt"))).await.unwrap_err();
    assert!(
        error.to_string().starts_with("reading the CA ") && error.to_string().contains("missing.crt"),
        "{error}"
    );
    std::fs::write(dir.path().join("empty.crt"), "not a certificate").unwrap();
    let error = run(&args(
        format!("https://localhost:{}", router.addr.port()),
        dir.path().join("empty.crt"),
    ))
    .await
    .unwrap_err();
    assert!(matches!(error, CheckError::BadCa { .. }), "{error:?}");
}
