//! HTTP proxy for web apps: a request with `X-Hatchway-Target-Port` goes to
//! `127.0.0.1:PORT` with `Host` from `X-Hatchway-Request-Host`. Upgrades
//! (WebSockets) pass through; hop-by-hop and `X-Hatchway-*` headers are
//! stripped, and the gateway's `Hatchway-*` answer headers from the app's
//! answers; `X-Forwarded-*` are set.

use std::time::Duration;

use http::{HeaderMap, HeaderValue, Request, Response, StatusCode, header};
use http_body_util::BodyExt;
use hyper_util::rt::TokioIo;

use hatchway_api::kept::{Kept, Reusable};

use crate::body::{Body, RequestBody, text};

/// Drops hop-by-hop headers, those named in `Connection`, and ours.
fn strip(headers: &mut HeaderMap) {
    hatchway_api::headers::strip_hop_by_hop(headers, false);
    hatchway_api::headers::strip_hatchway_headers(headers);
}

/// Drops from an app's answer what only the gateway may say: ours, and
/// the gateway's answer headers (an app's `101` must not hand the user a
/// host key or a session secret). Hop-by-hop headers too, except on a
/// `101`, whose `Connection` and `Upgrade` are the switch itself.
fn strip_answer(headers: &mut HeaderMap, switching: bool) {
    if !switching {
        hatchway_api::headers::strip_hop_by_hop(headers, false);
    }
    hatchway_api::headers::strip_hatchway_headers(headers);
    hatchway_api::headers::strip_gateway_headers(headers);
}

/// How long a connection to a web app is kept idle for the next request
/// by default.
/// Short: apps close idle connections on their own schedule (gunicorn
/// after 2 s, Node after 5 s), and a request written as the app closes is
/// lost to a race no proxy can win, so the connection must be let go well
/// before. Under load (when it matters) connections never wait this long.
pub const APP_IDLE: Duration = Duration::from_secs(1);

/// Idle connections kept per web-app port.
pub const APP_IDLE_PER_PORT: usize = 32;

/// A kept connection to a web app.
pub struct AppConnection(hyper::client::conn::http1::SendRequest<Body>);

impl Reusable for AppConnection {
    fn is_ready(&self) -> bool {
        self.0.is_ready()
    }
    fn is_closed(&self) -> bool {
        self.0.is_closed()
    }
}

/// Connections to the pod's web apps, by port, kept between requests as
/// a reverse proxy's upstream keepalive does: each request still carries
/// its own user's identity assertion, and upgrades (WebSockets) always get
/// a connection of their own.
pub type AppConnections = Kept<u16, AppConnection>;

/// A new HTTP/1.1 connection to the web app on `port`, or the answer
/// that says why there is none.
async fn connect_app(port: u16) -> Result<AppConnection, Response<Body>> {
    let stream = crate::local::connect(port)
        .await
        .map_err(|message| text(StatusCode::BAD_GATEWAY, message))?;
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|error| {
            text(
                StatusCode::BAD_GATEWAY,
                format!("web app on port {port}: {error}"),
            )
        })?;
    crate::spawn(async move {
        if let Err(error) = conn.with_upgrades().await {
            tracing::debug!(%error, port, "web app connection ended");
        }
    });
    Ok(AppConnection(sender))
}

/// What is needed to send a bodiless request again.
struct Resend {
    method: http::Method,
    uri: http::Uri,
    headers: HeaderMap,
}

impl Resend {
    fn request(&self) -> Request<Body> {
        let mut request = Request::new(crate::body::empty());
        *request.method_mut() = self.method.clone();
        *request.uri_mut() = self.uri.clone();
        *request.headers_mut() = self.headers.clone();
        request
    }
}

/// Proxies one request to a web app inside the pod.
/// `slot` is the request's share of the gateway's web-app capacity: held
/// until the answer's body ends or the upgraded connection closes.
pub async fn serve(
    mut req: Request<RequestBody>,
    port: u16,
    slot: tokio::sync::OwnedSemaphorePermit,
    apps: &AppConnections,
    body_idle_timeout: Duration,
) -> Response<Body> {
    let Some(host) = req.headers().get(hatchway_api::wire::REQUEST_HOST).cloned() else {
        return text(
            StatusCode::BAD_GATEWAY,
            "missing X-Hatchway-Request-Host: the router must say which host was asked for",
        );
    };
    let upgrade = req.headers().get(header::UPGRADE).cloned();
    let client_upgrade = upgrade.as_ref().map(|_| hyper::upgrade::on(&mut req));
    let (mut parts, body) = req.into_parts();
    strip(&mut parts.headers);
    let forwarded_proto = HeaderValue::from_static("https");
    parts.headers.insert(header::HOST, host.clone());
    parts.headers.insert("x-forwarded-host", host);
    parts.headers.insert("x-forwarded-proto", forwarded_proto);
    if let Some(upgrade) = &upgrade {
        parts
            .headers
            .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        parts.headers.insert(header::UPGRADE, upgrade.clone());
    }
    // Origin-form URI: the app sees the path and query only.
    parts.uri = parts
        .uri
        .path_and_query()
        .map(|pq| pq.as_str())
        .unwrap_or("/")
        .parse()
        .unwrap_or_default();
    let bodiless = hyper::body::Body::is_end_stream(&body);
    let upstream_req = if bodiless {
        Request::from_parts(parts, crate::body::empty())
    } else {
        Request::from_parts(parts, idle_limited(body, body_idle_timeout))
    };

    // An upgrade gets a connection of its own; other requests take a
    // kept one if there is one.
    let kept = if upgrade.is_none() { apps.take(&port) } else { None };
    let reused = kept.is_some();
    let mut connection = match kept {
        Some(connection) => connection,
        None => match connect_app(port).await {
            Ok(connection) => connection,
            Err(refusal) => return refusal,
        },
    };
    // A bodiless idempotent request on a kept connection can go again if
    // the app closed that connection as it was written.
    let resend = (reused && bodiless && upstream_req.method().is_idempotent()).then(|| Resend {
        method: upstream_req.method().clone(),
        uri: upstream_req.uri().clone(),
        headers: upstream_req.headers().clone(),
    });
    let mut sent = connection.0.try_send_request(upstream_req).await;
    if reused && let Err(error) = &mut sent {
        let again = error
            .take_message()
            .or_else(|| resend.as_ref().map(Resend::request));
        if let Some(again) = again {
            tracing::debug!(port, error = %error.error(), "a kept web app connection closed; connecting again");
            connection = match connect_app(port).await {
                Ok(connection) => connection,
                Err(refusal) => return refusal,
            };
            sent = connection.0.try_send_request(again).await;
        }
    }
    let mut response = match sent {
        Ok(response) => response,
        Err(error) => {
            return text(
                StatusCode::BAD_GATEWAY,
                format!("web app on port {port}: {}", error.into_error()),
            );
        }
    };

    if response.status() == StatusCode::SWITCHING_PROTOCOLS
        && let Some(client_upgrade) = client_upgrade
    {
        let upstream_upgrade = hyper::upgrade::on(&mut response);
        crate::spawn(async move {
            let _slot = slot;
            let (Ok(client), Ok(upstream)) = (client_upgrade.await, upstream_upgrade.await) else {
                return tracing::debug!(port, "web app upgrade failed");
            };
            let _ =
                tokio::io::copy_bidirectional(&mut TokioIo::new(client), &mut TokioIo::new(upstream)).await;
        });
        let (mut parts, _) = response.into_parts();
        strip_answer(&mut parts.headers, true);
        return Response::from_parts(parts, crate::body::empty());
    }
    if upgrade.is_none() {
        // Free for the next request once this answer's body has ended.
        apps.put(port, connection);
    }

    let (mut parts, body) = response.into_parts();
    strip_answer(&mut parts.headers, false);
    // The slot goes with the body: freed when the answer has been sent.
    let body = body.map_err(move |error| {
        let _slot = &slot;
        std::io::Error::other(error)
    });
    Response::from_parts(parts, body.boxed_unsync())
}

/// `body`, cut off with an error when no frame arrives for `idle`: a
/// client that starts a request and stops sending holds nothing for long.
fn idle_limited<B>(body: B, idle: Duration) -> Body
where
    B: hyper::body::Body<Data = bytes::Bytes> + Unpin + Send + 'static,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    let frames = futures::stream::unfold(Some(body), move |body| async move {
        let mut body = body?;
        match tokio::time::timeout(idle, body.frame()).await {
            Ok(Some(Ok(frame))) => Some((Ok(frame), Some(body))),
            Ok(Some(Err(error))) => Some((Err(std::io::Error::other(error)), None)),
            Ok(None) => None,
            Err(_) => Some((
                Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("the request body sent nothing for {idle:?}"),
                )),
                None,
            )),
        }
    });
    http_body_util::StreamBody::new(frames).boxed_unsync()
}

#[cfg(test)]
mod tests {
    use super::idle_limited;
    use http_body_util::BodyExt;
    use std::time::Duration;

    #[tokio::test]
    async fn a_body_that_stalls_is_cut_off_and_one_that_flows_is_not() {
        let (tx, rx) =
            futures::channel::mpsc::channel::<Result<hyper::body::Frame<bytes::Bytes>, std::io::Error>>(4);
        let mut tx = tx;
        use futures::SinkExt;
        tx.send(Ok(hyper::body::Frame::data(bytes::Bytes::from_static(b"first"))))
            .await
            .unwrap();
        let mut body = idle_limited(http_body_util::StreamBody::new(rx), Duration::from_millis(200));
        let first = body.frame().await.unwrap().unwrap();
        assert_eq!(first.into_data().unwrap(), "first");
        // Nothing more, and the sender still open: cut off.
        let stalled = tokio::time::timeout(Duration::from_secs(5), body.frame())
            .await
            .expect("cut off long before 5 s")
            .unwrap()
            .unwrap_err();
        assert_eq!(stalled.kind(), std::io::ErrorKind::TimedOut);
        assert!(body.frame().await.is_none(), "nothing after the cut");
        drop(tx);

        let whole = idle_limited(
            http_body_util::Full::new(bytes::Bytes::from_static(b"all")),
            Duration::from_millis(200),
        );
        assert_eq!(whole.collect().await.unwrap().to_bytes(), "all");
    }
    use super::*;

    #[test]
    fn hop_by_hop_and_our_headers_are_stripped() {
        let mut headers = HeaderMap::new();
        headers.insert("connection", "keep-alive, x-secret".parse().unwrap());
        headers.insert("x-secret", "1".parse().unwrap());
        headers.insert("keep-alive", "timeout=5".parse().unwrap());
        headers.insert("x-hatchway-authorization", "proof".parse().unwrap());
        headers.insert("authorization", "Bearer app-token".parse().unwrap());
        headers.insert("accept", "*/*".parse().unwrap());
        strip(&mut headers);
        let mut left: Vec<_> = headers.keys().map(|k| k.as_str()).collect();
        left.sort();
        assert_eq!(left, vec!["accept", "authorization"]);
    }

    #[test]
    fn an_app_s_answer_cannot_carry_what_only_the_gateway_says() {
        let forged = || {
            let mut headers = HeaderMap::new();
            headers.insert("connection", "upgrade".parse().unwrap());
            headers.insert("upgrade", "websocket".parse().unwrap());
            headers.insert(
                "sec-websocket-accept",
                "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=".parse().unwrap(),
            );
            headers.insert(
                hatchway_api::wire::SSH_HOST_KEY,
                "ssh-ed25519 AAAA".parse().unwrap(),
            );
            headers.insert(hatchway_api::wire::resumable::ID, "stolen".parse().unwrap());
            headers.insert("x-hatchway-user", "root".parse().unwrap());
            headers
        };
        let mut switching = forged();
        strip_answer(&mut switching, true);
        let mut left: Vec<_> = switching.keys().map(|k| k.as_str()).collect();
        left.sort();
        assert_eq!(left, vec!["connection", "sec-websocket-accept", "upgrade"]);
        let mut answer = forged();
        strip_answer(&mut answer, false);
        let left: Vec<_> = answer.keys().map(|k| k.as_str()).collect();
        assert_eq!(left, vec!["sec-websocket-accept"]);
    }
}
