//! The tunnel dialer against a router endpoint written here (TLS with a
//! certificate from a pinned CA, the tunnel proof over exported keying
//! material, yamux): streams the router opens are served exactly like
//! direct connections; reports arrive on the control stream; the dialer
//! reconnects when the far end drops; one tunnel carries 200 streams.

mod support;

use std::future::poll_fn;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hatchway_api::control::{self, ControlMessage};
use hatchway_api::{proof, tunnel as tproof};
use http::StatusCode;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};
use tokio_util::compat::{FuturesAsyncReadCompatExt, TokioAsyncReadCompatExt};
use tokio_util::sync::CancellationToken;

/// A CA and a server certificate for "localhost" it signed.
struct Pki {
    ca_pem: String,
    server: Arc<rustls::ServerConfig>,
}

fn pki() -> Pki {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key).unwrap();
    let server_key = rcgen::KeyPair::generate().unwrap();
    let server_cert = rcgen::CertificateParams::new(vec!["localhost".to_owned()])
        .unwrap()
        .signed_by(&server_key, &ca)
        .unwrap();
    let mut server = rustls::ServerConfig::builder_with_provider(hatchway_api::tls::provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![CertificateDer::from(server_cert.der().to_vec())],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(server_key.serialize_der())),
        )
        .unwrap();
    server.alpn_protocols = vec![b"http/1.1".to_vec()];
    Pki {
        ca_pem: ca.pem(),
        server: Arc::new(server),
    }
}

/// The router's end of one tunnel.
struct TunnelSide {
    open: mpsc::Sender<oneshot::Sender<yamux::Stream>>,
    reports: mpsc::UnboundedReceiver<ControlMessage>,
    kill: CancellationToken,
    /// The session's keying material (for the stream proof).
    ekm: [u8; tproof::EKM_LEN],
    /// The sidecar asked for streams without TLS of their own.
    asked_plain: bool,
}

impl TunnelSide {
    async fn open_stream(&self) -> yamux::Stream {
        let (tx, rx) = oneshot::channel();
        self.open.send(tx).await.expect("the tunnel is up");
        rx.await.expect("a stream")
    }

    async fn next_report(&mut self) -> ControlMessage {
        tokio::time::timeout(Duration::from_secs(20), self.reports.recv())
            .await
            .expect("a report in time")
            .expect("the control stream is open")
    }
}

struct Router {
    addr: std::net::SocketAddr,
    ca_pem: String,
    tunnels: mpsc::UnboundedReceiver<TunnelSide>,
}

impl Router {
    /// A router of before plain streams: each stream is TLS to the gateway.
    async fn start(refuse_first: usize) -> Self {
        Self::start_with(refuse_first, false).await
    }

    /// `plain`: echoes the sidecar's ask for streams without TLS.
    async fn start_with(refuse_first: usize, plain: bool) -> Self {
        let pki = pki();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, tunnels) = mpsc::unbounded_channel();
        let acceptor = tokio_rustls::TlsAcceptor::from(pki.server);
        tokio::spawn(async move {
            let mut refusals = refuse_first;
            while let Ok((tcp, _)) = listener.accept().await {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    continue;
                };
                let refuse = refusals > 0;
                refusals = refusals.saturating_sub(1);
                if let Some(side) = accept_tunnel(tls, refuse, plain).await {
                    let _ = tx.send(side);
                }
            }
        });
        Router {
            addr,
            ca_pem: pki.ca_pem,
            tunnels,
        }
    }

    async fn next_tunnel(&mut self) -> TunnelSide {
        tokio::time::timeout(Duration::from_secs(30), self.tunnels.recv())
            .await
            .expect("the sidecar dials in time")
            .unwrap()
    }
}

/// Reads the upgrade request, checks the proof, answers 101 and runs yamux.
async fn accept_tunnel(
    mut tls: tokio_rustls::server::TlsStream<TcpStream>,
    refuse: bool,
    plain: bool,
) -> Option<TunnelSide> {
    let ekm = tls
        .get_ref()
        .1
        .export_keying_material([0u8; tproof::EKM_LEN], tproof::EKM_LABEL, None)
        .unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8; 1];
        if tls.read(&mut byte).await.ok()? == 0 || head.len() > 16 * 1024 {
            return None;
        }
        head.push(byte[0]);
    }
    let head = String::from_utf8(head).ok()?;
    let header = |name: &str| {
        head.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim().eq_ignore_ascii_case(name).then(|| v.trim().to_owned())
        })
    };
    assert!(head.starts_with("POST /v1/tunnel HTTP/1.1\r\n"), "{head}");
    assert_eq!(header("upgrade").as_deref(), Some("hatchway-tunnel"));
    let uid = header("x-hatchway-container-uid")?;
    let presented = header("x-hatchway-tunnel-proof")?;
    let key = proof::ctr_key(ROOT, &uid);
    if refuse || !tproof::verify_tunnel_proof(&key, &ekm, &presented) {
        let _ = tls
            .write_all(b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 9\r\n\r\ntry later")
            .await;
        return None;
    }
    let asked_plain = header("x-hatchway-tunnel-streams").as_deref() == Some("http");
    let echo = if plain && asked_plain {
        "x-hatchway-tunnel-streams: http\r\n"
    } else {
        ""
    };
    tls.write_all(
        format!("HTTP/1.1 101 Switching Protocols\r\nconnection: upgrade\r\nupgrade: hatchway-tunnel\r\n{echo}\r\n")
            .as_bytes(),
    )
    .await
    .ok()?;

    let (open, mut open_rx) = mpsc::channel::<oneshot::Sender<yamux::Stream>>(256);
    let (report_tx, reports) = mpsc::unbounded_channel();
    let kill = CancellationToken::new();
    let stop = kill.clone();
    tokio::spawn(async move {
        let mut conn = yamux::Connection::new(tls.compat(), yamux::Config::default(), yamux::Mode::Server);
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                inbound = poll_fn(|cx| conn.poll_next_inbound(cx)) => match inbound {
                    Some(Ok(stream)) => {
                        let tx = report_tx.clone();
                        tokio::spawn(async move {
                            let mut stream = stream.compat();
                            loop {
                                let mut len = [0u8; 4];
                                if stream.read_exact(&mut len).await.is_err() { break }
                                let mut body = vec![0u8; control::body_len(len).unwrap()];
                                if stream.read_exact(&mut body).await.is_err() { break }
                                let _ = tx.send(control::decode(&body).unwrap());
                            }
                        });
                    }
                    _ => break,
                },
                Some(reply) = open_rx.recv() => {
                    if let Ok(stream) = poll_fn(|cx| conn.poll_new_outbound(cx)).await {
                        let _ = reply.send(stream);
                    }
                }
            }
        }
    });
    Some(TunnelSide {
        open,
        reports,
        kill,
        ekm,
        asked_plain,
    })
}

async fn gateway_for(
    router: &Router,
    tweak: impl FnOnce(&mut hatchway_sidecar::args::GatewayArgs),
) -> TestSidecar {
    let url = format!("https://localhost:{}", router.addr.port());
    let ca = router.ca_pem.clone();
    TestSidecar::start_with(UID, move |a| {
        let ca_file = a.log_dir.parent().unwrap().join("router-ca.pem");
        std::fs::write(&ca_file, ca).unwrap();
        a.router_ca_file = ca_file;
        a.tunnel_url = Some(url);
        tweak(a);
    })
    .await
}

#[tokio::test]
async fn streams_through_the_tunnel_are_served_like_direct_connections() {
    let mut router = Router::start(0).await;
    let gw = gateway_for(&router, |_| {}).await;
    let mut tunnel = router.next_tunnel().await;

    let ControlMessage::Hello {
        container_uid,
        certificate_sha256,
        host_key_fingerprint,
        ..
    } = tunnel.next_report().await
    else {
        panic!("the first report is the hello");
    };
    assert_eq!(container_uid, UID);
    assert_eq!(certificate_sha256, gw.running.gateway.cert.sha256);
    assert_eq!(
        host_key_fingerprint,
        gw.running.gateway.ssh.host_key_fingerprint()
    );
    assert!(matches!(
        tunnel.next_report().await,
        ControlMessage::ListeningPorts { .. }
    ));

    let mut conn = GatewayConn::over(tunnel.open_stream().await.compat()).await;
    assert_eq!(
        proof::certificate_sha256(&conn.cert_der),
        certificate_sha256,
        "the same certificate, the same proof"
    );
    let response = conn.get_ports(ProofMode::Valid).await;
    assert_eq!(response.status(), StatusCode::OK);
    // The proof is checked on tunnel streams too.
    let mut bad = GatewayConn::over(tunnel.open_stream().await.compat()).await;
    let response = bad.get_ports(ProofMode::WrongKey).await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
}

/// One request over a tunnel stream carrying HTTP as it is.
async fn get_ports_plain(stream: yamux::Stream, presented: &str) -> http::Response<hyper::body::Incoming> {
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream.compat()))
            .await
            .unwrap();
    tokio::spawn(conn);
    let request = http::Request::get(hatchway_api::wire::gateway_path::PORTS)
        .header(http::header::HOST, "gateway")
        .header(hatchway_api::wire::CONTAINER_UID, UID)
        .header(hatchway_api::wire::AUTHORIZATION, presented)
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .unwrap();
    sender.send_request(request).await.unwrap()
}

#[tokio::test]
async fn a_router_that_agrees_gets_streams_without_tls_whose_proof_is_bound_to_the_tunnel() {
    let mut router = Router::start_with(0, true).await;
    let gw = gateway_for(&router, |_| {}).await;
    let tunnel = router.next_tunnel().await;
    assert!(tunnel.asked_plain, "the sidecar asks for plain streams");
    let key = proof::ctr_key(ROOT, UID);
    let stream_proof = tproof::stream_proof(&key, &tunnel.ekm);

    let response = get_ports_plain(tunnel.open_stream().await, &stream_proof).await;
    assert_eq!(response.status(), StatusCode::OK);
    let answer = response.headers()[hatchway_api::wire::AUTHORIZATION_RESPONSE]
        .to_str()
        .unwrap();
    assert!(
        proof::verify_respond_auth(&key, &stream_proof, answer),
        "the gateway answers with the response proof over the stream proof"
    );

    // The attacks: the direct port's proof (a valid one, over the
    // gateway's certificate), a stream proof of another tunnel session of
    // the same container, and another container's stream proof for this
    // session are all refused.
    let direct = proof::request_auth(&key, &gw.running.gateway.cert.der);
    let other_session = tproof::stream_proof(&key, &[7u8; tproof::EKM_LEN]);
    let other_container = tproof::stream_proof(&proof::ctr_key(ROOT, "another-uid"), &tunnel.ekm);
    for presented in [direct, other_session, other_container] {
        let response = get_ports_plain(tunnel.open_stream().await, &presented).await;
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        assert!(
            !response
                .headers()
                .contains_key(hatchway_api::wire::AUTHORIZATION_RESPONSE)
        );
        let body = http_body_util::BodyExt::collect(response.into_body())
            .await
            .unwrap()
            .to_bytes();
        assert!(
            String::from_utf8_lossy(&body).contains("does not prove this tunnel's session"),
            "{body:?}"
        );
    }

    // The other way: the workload shares the pod's network and can dial
    // the gateway's direct port; a captured stream proof is refused there.
    let mut direct_conn = GatewayConn::connect(gw.addr()).await;
    let request = direct_conn
        .request("GET", "/ports", ProofMode::Missing)
        .header(hatchway_api::wire::AUTHORIZATION, &stream_proof)
        .body(empty())
        .unwrap();
    let response = direct_conn.send(request).await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    let body = body_text(response).await;
    assert!(
        body.contains("does not prove this gateway's certificate"),
        "{body}"
    );
}

#[tokio::test]
async fn reports_reach_the_router_as_things_happen() {
    let mut router = Router::start(0).await;
    let gw = gateway_for(&router, |_| {}).await;
    let mut tunnel = router.next_tunnel().await;
    let _hello = tunnel.next_report().await;

    let app = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = app.local_addr().unwrap().port();
    loop {
        if let ControlMessage::ListeningPorts { ports } = tunnel.next_report().await
            && ports.contains(&port)
        {
            break;
        }
    }
    std::fs::write(gw.log_dir().join("exit-code"), "3\n").unwrap();
    loop {
        if let ControlMessage::WorkloadExited { exit_code } = tunnel.next_report().await {
            assert_eq!(exit_code, 3);
            break;
        }
    }
    drop(app);
}

#[tokio::test]
async fn the_dialer_reconnects_after_refusals_and_after_the_far_end_drops() {
    let mut router = Router::start(2).await;
    let gw = gateway_for(&router, |_| {}).await;
    let first = router.next_tunnel().await;
    assert!(
        gw.running.gateway.metrics.tunnel_failures.get() >= 2,
        "two refusals were counted"
    );
    first.kill.cancel();
    let started = Instant::now();
    let mut second = router.next_tunnel().await;
    println!(
        "tunnel reconnected {:?} after the far end dropped",
        started.elapsed()
    );
    let _hello = second.next_report().await;
    let mut conn = GatewayConn::over(second.open_stream().await.compat()).await;
    let response = conn.get_ports(ProofMode::Valid).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert!(gw.running.gateway.metrics.tunnel_connects.get() >= 2);
}

#[tokio::test]
async fn a_router_certificate_from_another_ca_is_refused() {
    let mut router = Router::start(0).await;
    let impostor_ca = pki().ca_pem;
    let url = format!("https://localhost:{}", router.addr.port());
    let gw = TestSidecar::start_with(UID, move |a| {
        let ca_file = a.log_dir.parent().unwrap().join("router-ca.pem");
        std::fs::write(&ca_file, impostor_ca).unwrap();
        a.router_ca_file = ca_file;
        a.tunnel_url = Some(url);
    })
    .await;
    let metrics = gw.running.gateway.metrics.clone();
    eventually("a failed dial", || {
        let metrics = metrics.clone();
        async move { metrics.tunnel_failures.get() >= 1 }
    })
    .await;
    assert!(router.tunnels.try_recv().is_err(), "no tunnel was established");
    assert_eq!(gw.running.gateway.metrics.tunnel_connected.get(), 0);
}

#[tokio::test]
async fn one_tunnel_carries_200_concurrent_streams() {
    let mut router = Router::start(0).await;
    let _gw = gateway_for(&router, |a| a.max_connections = 1024).await;
    let tunnel = Arc::new(router.next_tunnel().await);
    let mut tasks = Vec::new();
    for _ in 0..200 {
        let tunnel = tunnel.clone();
        tasks.push(tokio::spawn(async move {
            let mut conn = GatewayConn::over(tunnel.open_stream().await.compat()).await;
            conn.get_ports(ProofMode::Valid).await.status()
        }));
    }
    for task in tasks {
        assert_eq!(task.await.unwrap(), StatusCode::OK);
    }
}

#[tokio::test]
async fn port_forward_through_the_tunnel_moves_100_mib() {
    let mut router = Router::start(0).await;
    let gw = gateway_for(&router, |_| {}).await;
    let tunnel = router.next_tunnel().await;
    let port = hashing_server().await;

    let raw = push_100_mib(TcpStream::connect(("127.0.0.1", port)).await.unwrap()).await;

    let direct = push_100_mib(port_forward(GatewayConn::connect(gw.addr()).await, port).await).await;
    let tunneled =
        push_100_mib(port_forward(GatewayConn::over(tunnel.open_stream().await.compat()).await, port).await)
            .await;
    let rate = |d: Duration| 100.0 / d.as_secs_f64();
    println!(
        "100 MiB: raw loopback {:.0} MiB/s, port-forward direct {:.0} MiB/s, through the tunnel {:.0} MiB/s (debug build)",
        rate(raw),
        rate(direct),
        rate(tunneled)
    );
}
