//! Test support: the testkit's sidecar for [`UID`], and the router's side of
//! the gateway protocol (TLS to the self-signed certificate, the proof, the
//! response-proof check) over real sockets.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use hatchway_api::proof::{self, CtrKey};
use hatchway_api::wire;
use http::{Request, Response};
use http_body_util::{Empty, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

pub use hatchway_testkit::TestSidecar;

pub const UID: &str = "7c1e9a52-5b7e-4f0e-9d3a-2b8f6c4d1e90";
pub const ROOT: &[u8] = hatchway_testkit::ROOT;

/// The key the testkit's sidecars hold for [`UID`].
pub fn key() -> CtrKey {
    proof::ctr_key(ROOT, UID)
}

/// How the client proves itself.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum ProofMode {
    /// The right proof over the certificate the gateway presented.
    Valid,
    /// A proof made with another container's key.
    WrongKey,
    /// No proof header.
    Missing,
}

/// One TLS connection to a gateway, as the router makes it.
pub struct GatewayConn {
    pub sender: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    pub request_auth: String,
    pub cert_der: Vec<u8>,
}

pub async fn tls_connect<IO>(io: IO) -> (tokio_rustls::client::TlsStream<IO>, Vec<u8>)
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    let connector = TlsConnector::from(Arc::new(hatchway_api::tls::gateway_client_config()));
    let tls = connector
        .connect(ServerName::try_from("gateway").unwrap(), io)
        .await
        .expect("TLS handshake");
    let cert = tls.get_ref().1.peer_certificates().expect("a certificate")[0].to_vec();
    (tls, cert)
}

impl GatewayConn {
    pub async fn connect(addr: SocketAddr) -> Self {
        let tcp = TcpStream::connect(addr).await.unwrap();
        Self::over(tcp).await
    }

    pub async fn over<IO>(io: IO) -> Self
    where
        IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let (tls, cert_der) = tls_connect(io).await;
        let request_auth = proof::request_auth(&key(), &cert_der);
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .unwrap();
        tokio::spawn(async move {
            let _ = conn.with_upgrades().await;
        });
        Self {
            sender,
            request_auth,
            cert_der,
        }
    }

    /// A request with the UID and proof headers set per `mode`.
    pub fn request(&self, method: &str, path: &str, mode: ProofMode) -> http::request::Builder {
        let mut builder = Request::builder()
            .method(method)
            .uri(path)
            .header("host", "gateway");
        builder = builder.header(wire::CONTAINER_UID, UID);
        match mode {
            ProofMode::Valid => builder = builder.header(wire::AUTHORIZATION, &self.request_auth),
            ProofMode::WrongKey => {
                let other = proof::ctr_key(ROOT, "0d4f3b21-8c6a-4e1f-a2b7-5e9c0f1d2a33");
                builder = builder.header(wire::AUTHORIZATION, proof::request_auth(&other, &self.cert_der));
            }
            ProofMode::Missing => {}
        }
        builder
    }

    pub async fn send(&mut self, req: Request<Full<Bytes>>) -> Response<Incoming> {
        tokio::time::timeout(Duration::from_secs(20), self.sender.send_request(req))
            .await
            .expect("gateway answers in time")
            .expect("gateway answers")
    }

    /// `GET /ports` with the proof made per `mode`, the response proof
    /// checked when the request is accepted.
    pub async fn get_ports(&mut self, mode: ProofMode) -> Response<Incoming> {
        let req = self.request("GET", "/ports", mode).body(empty()).unwrap();
        self.send_checked(req).await
    }

    /// Sends and checks the response proof when the request was accepted.
    pub async fn send_checked(&mut self, req: Request<Full<Bytes>>) -> Response<Incoming> {
        let response = self.send(req).await;
        if response.status().as_u16() != 401 && response.status().as_u16() != 403 {
            let answer = response
                .headers()
                .get(wire::AUTHORIZATION_RESPONSE)
                .expect("an accepted request is answered with a response proof")
                .to_str()
                .unwrap();
            assert!(
                proof::verify_respond_auth(&key(), &self.request_auth, answer),
                "the response proof verifies"
            );
        }
        response
    }
}

/// The waits and bodies every in-process test shares (not every test file
/// here uses each).
#[allow(unused_imports)]
pub use hatchway_testkit::{body_text, empty, eventually, hashing_server};

#[allow(unused)]
fn _unused(_: Empty<Bytes>) {}

/// Sends 100 MiB, half-closes, and checks the sink's SHA-256 answer;
/// returns the time it took.
pub async fn push_100_mib<S: AsyncRead + AsyncWrite>(stream: S) -> Duration {
    use sha2::Digest;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (mut rd, mut wr) = tokio::io::split(stream);
    let chunk: Vec<u8> = (0..1024 * 1024).map(|i| (i * 13 % 251) as u8).collect();
    let mut expected = sha2::Sha256::new();
    let started = std::time::Instant::now();
    for _ in 0..100 {
        wr.write_all(&chunk).await.unwrap();
        expected.update(&chunk);
    }
    wr.shutdown().await.unwrap();
    let mut digest = String::new();
    rd.read_to_string(&mut digest).await.unwrap();
    assert_eq!(
        digest,
        hex::encode(expected.finalize()),
        "the bytes arrived intact"
    );
    started.elapsed()
}

/// `POST /portforward?port=N` on `conn`; the upgraded stream.
pub async fn port_forward(mut conn: GatewayConn, port: u16) -> TokioIo<hyper::upgrade::Upgraded> {
    let req = conn
        .request("POST", &format!("/portforward?port={port}"), ProofMode::Valid)
        .header("connection", "upgrade")
        .header("upgrade", "tcp")
        .body(empty())
        .unwrap();
    let response = conn.send_checked(req).await;
    assert_eq!(response.status(), http::StatusCode::SWITCHING_PROTOCOLS);
    TokioIo::new(hyper::upgrade::on(response).await.unwrap())
}
