//! The router's gateway connection against a real sidecar gateway, a
//! man-in-the-middle relay and fake gateways, over real sockets and TLS.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use hatchway_api::proof::{self, CtrKey};
use hatchway_api::wire;
use hatchway_operator::router::respond::{Body, empty_body};
use hatchway_operator::router::upstream::{self, GatewayConnection, UpstreamError, connect_tcp};
use hatchway_sidecar::tls::GatewayCert;
use hatchway_testkit::TestSidecar;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

const UID: &str = "7c1e9a52-5b7e-4f0e-9d3a-2b8f6c4d1e90";
/// The key the testkit's sidecars hold for [`UID`].
const ROOT: &[u8] = hatchway_testkit::ROOT;
const LIMIT: Duration = Duration::from_secs(20);

fn key() -> CtrKey {
    proof::ctr_key(ROOT, UID)
}

async fn connect_to(addr: SocketAddr, key: &CtrKey) -> Result<GatewayConnection, UpstreamError> {
    let tcp = connect_tcp(addr, LIMIT).await?;
    upstream::connect(tcp, UID, key).await
}

fn get(path: &str) -> Request<Body> {
    Request::builder()
        .method("GET")
        .uri(path)
        .body(empty_body())
        .unwrap()
}

async fn send(
    conn: &mut GatewayConnection,
    req: Request<Body>,
) -> Result<Response<hyper::body::Incoming>, UpstreamError> {
    tokio::time::timeout(LIMIT, conn.send(req))
        .await
        .expect("an answer in time")
}

async fn body_text(response: Response<hyper::body::Incoming>) -> String {
    let bytes = response.into_body().collect().await.expect("body").to_bytes();
    String::from_utf8_lossy(&bytes).into_owned()
}

#[tokio::test]
async fn a_get_of_ports_succeeds_with_a_verified_response_proof() {
    let gw = TestSidecar::start(UID).await;
    let mut conn = connect_to(gw.addr(), &key()).await.expect("connects");
    assert_eq!(conn.certificate_sha256().len(), 64);
    let response = send(&mut conn, get(wire::gateway_path::PORTS))
        .await
        .expect("a proven answer");
    assert_eq!(response.status(), StatusCode::OK);
    // The hop's proof is checked and then removed.
    assert!(response.headers().get(wire::AUTHORIZATION_RESPONSE).is_none());
    let body = body_text(response).await;
    assert!(body.contains("\"ports\""), "{body}");
    // The connection carries a second request too.
    let again = send(&mut conn, get(wire::gateway_path::PORTS))
        .await
        .expect("a second answer");
    assert_eq!(again.status(), StatusCode::OK);
}

#[tokio::test]
async fn a_request_on_a_connection_the_gateway_closed_comes_back_unsent() {
    // The gateway lets an idle connection go after its header timeout.
    let gw = TestSidecar::start_with(UID, |args| args.header_timeout_ms = 200).await;
    let mut conn = connect_to(gw.addr(), &key()).await.expect("connects");
    let response = send(&mut conn, get(wire::gateway_path::PORTS)).await.unwrap();
    body_text(response).await;
    assert!(conn.is_ready() && !conn.is_closed());
    hatchway_testkit::eventually("the gateway to close the idle connection", || {
        let closed = conn.is_closed();
        async move { closed }
    })
    .await;
    assert!(!conn.is_ready());
    let (error, unsent) = conn
        .try_send(get(wire::gateway_path::PORTS))
        .await
        .expect_err("a closed connection sends nothing");
    assert!(matches!(error, UpstreamError::Request(_)), "{error:?}");
    let unsent = unsent.expect("the request comes back to go on another connection");
    assert_eq!(unsent.uri().path(), wire::gateway_path::PORTS);
    let mut fresh = connect_to(gw.addr(), &key()).await.expect("connects");
    assert_eq!(send(&mut fresh, unsent).await.unwrap().status(), StatusCode::OK);
}

#[tokio::test]
async fn a_wrong_key_is_refused_by_the_gateway_and_maps_to_502() {
    let gw = TestSidecar::start(UID).await;
    let other = proof::ctr_key(ROOT, "0d4f3b21-8c6a-4e1f-a2b7-5e9c0f1d2a33");
    let mut conn = connect_to(gw.addr(), &other).await.expect("TLS still works");
    let err = send(&mut conn, get(wire::gateway_path::PORTS))
        .await
        .expect_err("refused");
    assert!(
        matches!(
            err,
            UpstreamError::GatewayRefused(StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN)
        ),
        "{err:?}"
    );
    let (status, message) = err.status_and_message();
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    assert!(
        message.contains("gateway refused the router's proof"),
        "{message}"
    );
}

#[tokio::test]
async fn a_man_in_the_middle_with_another_certificate_never_gets_a_success() {
    let gw = TestSidecar::start(UID).await;
    let relay = hatchway_testkit::mitm_relay(gw.addr()).await;
    let real = connect_to(gw.addr(), &key()).await.unwrap();
    let mut conn = connect_to(relay, &key()).await.expect("TLS to the relay works");
    assert_ne!(conn.certificate_sha256(), real.certificate_sha256());
    let err = send(&mut conn, get(wire::gateway_path::PORTS))
        .await
        .expect_err("never a success");
    assert!(
        matches!(
            err,
            UpstreamError::ProofFailed { .. } | UpstreamError::GatewayRefused(_)
        ),
        "{err:?}"
    );
    assert_eq!(err.status_and_message().0, StatusCode::BAD_GATEWAY);
}

/// What a fake gateway answers in `X-Hatchway-Authorization-Response`.
#[derive(Clone, Copy)]
enum FakeProof {
    /// No header.
    Missing,
    /// Hex of the right length, made with another key.
    Wrong,
    /// The right one.
    Right,
}

/// A TLS HTTP server with a fresh self-signed certificate that answers 200
/// "hello" with the given proof; it records the headers it received.
async fn start_fake_gateway(mode: FakeProof) -> (SocketAddr, Arc<Mutex<Vec<HeaderMap>>>, Vec<u8>) {
    let cert = GatewayCert::generate("fake").unwrap();
    let cert_der = cert.der.to_vec();
    let acceptor = tokio_rustls::TlsAcceptor::from(cert.server_config.clone());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let seen2 = seen.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            let seen = seen2.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(stream).await else {
                    return;
                };
                let service = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                    let seen = seen.clone();
                    async move {
                        let presented = req
                            .headers()
                            .get(wire::AUTHORIZATION)
                            .map(|v| v.to_str().unwrap().to_owned())
                            .unwrap_or_default();
                        seen.lock().unwrap().push(req.headers().clone());
                        let mut builder = Response::builder().status(StatusCode::OK);
                        match mode {
                            FakeProof::Missing => {}
                            FakeProof::Wrong => {
                                let other = proof::ctr_key(b"another root secret", UID);
                                builder = builder.header(
                                    wire::AUTHORIZATION_RESPONSE,
                                    proof::respond_auth(&other, &presented),
                                );
                            }
                            FakeProof::Right => {
                                builder = builder.header(
                                    wire::AUTHORIZATION_RESPONSE,
                                    proof::respond_auth(&key(), &presented),
                                );
                            }
                        }
                        Ok::<_, std::convert::Infallible>(
                            builder.body(Full::new(Bytes::from_static(b"hello"))).unwrap(),
                        )
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tls), service)
                    .await;
            });
        }
    });
    (addr, seen, cert_der)
}

#[tokio::test]
async fn a_gateway_that_answers_without_a_response_proof_fails_the_proof() {
    let (addr, seen, cert_der) = start_fake_gateway(FakeProof::Missing).await;
    let mut conn = connect_to(addr, &key()).await.unwrap();
    let err = send(&mut conn, get("/ports"))
        .await
        .expect_err("no proof, no answer");
    assert!(matches!(err, UpstreamError::ProofFailed { .. }), "{err:?}");
    let (status, message) = err.status_and_message();
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    assert_eq!(message, "gateway proof failed (man-in-the-middle?)");
    // The request did carry the UID and the proof over the fake's own
    // certificate (the fake just could not answer it).
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].get(wire::CONTAINER_UID).unwrap(), UID);
    assert_eq!(
        seen[0].get(wire::AUTHORIZATION).unwrap().to_str().unwrap(),
        proof::request_auth(&key(), &cert_der)
    );
}

#[tokio::test]
async fn a_gateway_that_answers_a_wrong_response_proof_fails_the_proof() {
    let (addr, _seen, _) = start_fake_gateway(FakeProof::Wrong).await;
    let mut conn = connect_to(addr, &key()).await.unwrap();
    let err = send(&mut conn, get("/ports"))
        .await
        .expect_err("a wrong proof, no answer");
    assert!(
        matches!(
            err,
            UpstreamError::ProofFailed {
                reason: "wrong response proof"
            }
        ),
        "{err:?}"
    );
}

#[tokio::test]
async fn proof_headers_smuggled_in_by_a_user_are_replaced() {
    let (addr, seen, cert_der) = start_fake_gateway(FakeProof::Right).await;
    let mut conn = connect_to(addr, &key()).await.unwrap();
    let req = Request::builder()
        .uri("/ports")
        .header(wire::CONTAINER_UID, "someone-else")
        .header(wire::AUTHORIZATION, "0000")
        .body(empty_body())
        .unwrap();
    let response = send(&mut conn, req).await.expect("the right proof is accepted");
    assert_eq!(body_text(response).await, "hello");
    let seen = seen.lock().unwrap();
    assert_eq!(
        seen[0].get_all(wire::CONTAINER_UID).iter().collect::<Vec<_>>(),
        [UID]
    );
    let auth: Vec<_> = seen[0]
        .get_all(wire::AUTHORIZATION)
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .collect();
    assert_eq!(auth, [proof::request_auth(&key(), &cert_der)]);
}

#[tokio::test]
async fn an_unreachable_address_maps_to_503() {
    // A port that was just free: nothing listens there.
    let addr = {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        listener.local_addr().unwrap()
    };
    let err = connect_tcp(addr, LIMIT).await.expect_err("refused");
    assert!(matches!(err, UpstreamError::Connect { .. }), "{err:?}");
    let (status, message) = err.status_and_message();
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(message.starts_with("gateway unreachable: "), "{message}");
}

#[tokio::test]
async fn a_peer_that_never_speaks_tls_times_out_as_unreachable() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    // Accept and hold the connection open without answering.
    let holder = tokio::spawn(async move {
        let (stream, _) = listener.accept().await.unwrap();
        let mut stream = stream;
        let mut buf = [0u8; 1024];
        while stream.read(&mut buf).await.is_ok_and(|n| n > 0) {}
    });
    let tcp = connect_tcp(addr, LIMIT).await.unwrap();
    let err = upstream::connect_with_timeout(tcp, UID, &key(), Duration::from_millis(300))
        .await
        .expect_err("no TLS answer");
    assert!(matches!(err, UpstreamError::HandshakeTimeout(_)), "{err:?}");
    assert_eq!(err.status_and_message().0, StatusCode::SERVICE_UNAVAILABLE);
    holder.abort();
}

#[tokio::test]
async fn a_peer_that_is_not_tls_fails_the_handshake_as_unreachable() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        let _ = stream.write_all(b"HTTP/1.1 400 Bad Request\r\n\r\n").await;
    });
    let tcp = connect_tcp(addr, LIMIT).await.unwrap();
    let err = upstream::connect(tcp, UID, &key()).await.expect_err("not TLS");
    assert!(matches!(err, UpstreamError::Tls(_)), "{err:?}");
    let (status, message) = err.status_and_message();
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        message.starts_with("gateway unreachable: TLS handshake"),
        "{message}"
    );
}

#[tokio::test]
async fn a_uid_that_is_not_a_header_value_is_refused_before_connecting() {
    let (a, _b) = tokio::io::duplex(64);
    let err = upstream::connect(a, "bad\nuid", &key())
        .await
        .expect_err("refused");
    assert!(matches!(err, UpstreamError::InvalidUid(_)), "{err:?}");
}

/// A TCP echo server on 127.0.0.1.
async fn echo_server() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let (mut rd, mut wr) = s.split();
                let _ = tokio::io::copy(&mut rd, &mut wr).await;
            });
        }
    });
    port
}

#[tokio::test]
async fn a_port_forward_upgrade_through_the_connection_carries_bytes_both_ways() {
    let gw = TestSidecar::start(UID).await;
    let port = echo_server().await;
    let mut conn = connect_to(gw.addr(), &key()).await.unwrap();
    let req = Request::builder()
        .method("POST")
        .uri(format!(
            "{}?{}={port}",
            wire::gateway_path::PORTFORWARD,
            wire::PARAM_PORT
        ))
        .header(http::header::CONNECTION, "upgrade")
        .header(http::header::UPGRADE, wire::UPGRADE_TCP)
        .body(empty_body())
        .unwrap();
    let response = send(&mut conn, req).await.expect("a proven 101");
    assert_eq!(response.status(), StatusCode::SWITCHING_PROTOCOLS);
    let upgraded = tokio::time::timeout(LIMIT, hyper::upgrade::on(response))
        .await
        .unwrap()
        .unwrap();
    let mut stream = TokioIo::new(upgraded);
    let payload: Vec<u8> = (0..256 * 1024).map(|i| (i * 7 % 251) as u8).collect();
    let (mut rd, mut wr) = tokio::io::split(&mut stream);
    let writer = async {
        wr.write_all(&payload).await.unwrap();
        wr.flush().await.unwrap();
    };
    let reader = async {
        let mut back = vec![0u8; payload.len()];
        rd.read_exact(&mut back).await.unwrap();
        back
    };
    let ((), back) = tokio::time::timeout(LIMIT, async { tokio::join!(writer, reader) })
        .await
        .expect("echoed in time");
    assert_eq!(back, payload, "the bytes came back intact");
}
