//! `/healthz`, `/readyz` and `/metrics` on a separate plain-HTTP port,
//! without authentication (the kubelet's probes and Prometheus use it).
//! `/readyz` also says how to verify this gateway: the certificate and SSH
//! host-key fingerprints are public, and clients check them against what
//! the router writes into the Container's status.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::routing::any;
use hatchway_api::pod::{Readyz, health_path};
use http::{Response, StatusCode, header};
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt as _;

use crate::body::{Body, full, text};
use crate::gateway::Gateway;

/// Serves the health port until `shutdown`.
pub async fn serve(listener: TcpListener, gateway: Arc<Gateway>, shutdown: CancellationToken) {
    let table = axum::Router::new()
        .route(health_path::HEALTHZ, any(|| async { text(StatusCode::OK, "ok") }))
        .route(health_path::READYZ, any(readyz))
        .route(health_path::METRICS, any(metrics))
        .fallback(other)
        .with_state(gateway);
    loop {
        let stream = tokio::select! {
            _ = shutdown.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(_) => continue,
            },
        };
        let table = table.clone();
        tokio::spawn(async move {
            let service =
                service_fn(move |req: http::Request<hyper::body::Incoming>| table.clone().oneshot(req));
            let _ = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(std::time::Duration::from_secs(5))
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

/// How to verify this gateway (public: fingerprints, not keys).
async fn readyz(State(gateway): State<Arc<Gateway>>) -> Response<Body> {
    let body = Readyz {
        status: "ready".to_owned(),
        container_uid: gateway.uid.clone(),
        certificate_sha256: gateway.cert.sha256.clone(),
        host_key: gateway.ssh.host_key_openssh(),
        host_key_fingerprint: gateway.ssh.host_key_fingerprint(),
        listening_ports: Some(gateway.reporter.ports().borrow().clone()),
    };
    let body = serde_json::to_string(&body).expect("a Readyz serializes");
    Response::builder()
        .header(header::CONTENT_TYPE, "application/json")
        .body(full(body))
        .expect("static response parts are valid")
}

async fn metrics(State(gateway): State<Arc<Gateway>>) -> Response<Body> {
    Response::builder()
        .header(header::CONTENT_TYPE, "text/plain; version=0.0.4")
        .body(full(gateway.metrics.encode()))
        .expect("static response parts are valid")
}

async fn other(req: Request) -> Response<Body> {
    text(
        StatusCode::NOT_FOUND,
        format!(
            "no route for {}: try /healthz, /readyz or /metrics",
            req.uri().path()
        ),
    )
}
