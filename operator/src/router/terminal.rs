//! The web page's terminal (docs/web.md): a WebSocket from the page to
//! `GET …/containers/NAME/terminal?cols=C&rows=R[&resume=ID|&join=ID][&login=U]`,
//! with this router as the SSH client of the Container's gateway — the
//! same SSH server, user and audit trail the CLI gets.
//!
//! It survives a reload and a router restart the way `shell --resume`
//! does (docs/sessions.md): the SSH connection to the gateway is a
//! resumable session; when the page goes (a reload, a closed laptop) or
//! this replica stops, the connection is dropped without an SSH goodbye,
//! so the gateway keeps the pty for its grace time. The page keeps the
//! session id it was sent and comes back with `resume=ID`, through any
//! replica: the new connection takes the pty over (same user only) and
//! shows the last screen. `join=ID` watches a terminal read-only instead.
//!
//! Messages: binary frames are the terminal's bytes both ways; text
//! frames are JSON: from the page `{"resize":[cols,rows]}`, to the page
//! `{"session":"ID"}` once the shell runs, `{"exit":N}` when it ends, and
//! `{"error":"…","gone":bool,"fatal":bool}` before a close (`gone`: the
//! session to resume is no more; `fatal`: do not retry).

use std::sync::Arc;

use axum::extract::{Request, State};
use futures::{SinkExt, StreamExt};
use hatchway_api::crd::Container;
use hatchway_api::resume::{DEFAULT_REPLAY_BYTES, Pumped, Session};
use hatchway_api::wire;
use http::{HeaderMap, HeaderValue, Response, StatusCode, header};
use hyper_util::rt::TokioIo;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::Role;

use super::access::{Granted, choose_settled};
use super::reach::{header_safe, request_id};
use super::respond::{Body, empty_body, text};
use super::select::{Purpose, Route};
use super::{Router, forward, reach};

/// The pipe between the SSH client and the resumable session's pump.
const PIPE: usize = 256 * 1024;
/// Largest message the page may send (keystrokes, a paste).
const MAX_MESSAGE: usize = 1 << 20;

/// What the page asked for.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Params {
    pub cols: u32,
    pub rows: u32,
    pub resume: Option<String>,
    pub join: Option<String>,
    pub login: Option<String>,
}

fn is_id(value: &str) -> bool {
    value.len() == 16 && value.bytes().all(|b| b.is_ascii_hexdigit())
}

pub fn params(query: Option<&str>) -> Result<Params, String> {
    let mut params = Params {
        cols: 80,
        rows: 24,
        ..Params::default()
    };
    for (key, value) in form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
        let size = |v: &str| {
            v.parse::<u32>()
                .ok()
                .filter(|n| (1..=1000).contains(n))
                .ok_or_else(|| format!("{key}={v:?} is not a terminal size (1-1000)"))
        };
        match key.as_ref() {
            "cols" => params.cols = size(&value)?,
            "rows" => params.rows = size(&value)?,
            "resume" | "join" if !is_id(&value) => {
                return Err(format!("{key}={value:?} is not a session id (16 hex digits)"));
            }
            "resume" => params.resume = Some(value.into_owned()),
            "join" => params.join = Some(value.into_owned()),
            "login" if !value.is_empty() => params.login = Some(value.into_owned()),
            _ => {}
        }
    }
    if params.resume.is_some() && params.join.is_some() {
        return Err("a terminal either resumes a session or joins one, not both".into());
    }
    Ok(params)
}

/// Checks the WebSocket handshake; its `Sec-WebSocket-Accept`.
fn websocket_accept(headers: &HeaderMap) -> Result<String, String> {
    let upgrade = headers
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
    let version = headers.get("sec-websocket-version").is_some_and(|v| v == "13");
    match headers.get("sec-websocket-key") {
        Some(key) if upgrade && version => Ok(tokio_tungstenite::tungstenite::handshake::derive_accept_key(
            key.as_bytes(),
        )),
        _ => Err("the terminal is a WebSocket (Upgrade: websocket, Sec-WebSocket-Version: 13)".into()),
    }
}

/// `GET …/terminal` (after authentication and `create containers/shell`).
pub async fn terminal(
    State(router): State<Arc<Router>>,
    granted: Granted,
    mut req: Request,
) -> Response<Body> {
    let accept = match websocket_accept(req.headers()) {
        Ok(accept) => accept,
        Err(message) => return text(StatusCode::BAD_REQUEST, message),
    };
    if req.headers().contains_key(header::ORIGIN) && !super::session::same_origin(req.headers()) {
        return text(
            StatusCode::FORBIDDEN,
            "the terminal is opened from the Hatchway page only (Origin)",
        );
    }
    let params = match params(req.uri().query()) {
        Ok(params) => params,
        Err(message) => return text(StatusCode::BAD_REQUEST, message),
    };
    let Granted { user, container, .. } = granted;
    let (container, route) = choose_settled(&router, container, req.headers(), Purpose::Shell).await;
    let route = match route {
        Ok(Route::Forward(url)) => return forward::forward(router.clone(), req, &url, "terminal").await,
        Ok(route) => route,
        Err(refusal) => return refusal.into_response(),
    };
    let opened = open_ssh(
        &router,
        &container,
        &route,
        &params,
        &user.username,
        req.headers(),
    )
    .await;
    let page = hyper::upgrade::on(&mut req);
    let span = tracing::Span::current();
    tokio::spawn(tracing::Instrument::instrument(
        async move {
            let page = match page.await {
                Ok(upgraded) => {
                    WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None).await
                }
                Err(error) => return tracing::debug!(%error, "the page's upgrade failed"),
            };
            bridge(page, opened, &container, &params).await;
        },
        span,
    ));
    let mut response = Response::new(empty_body());
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let headers = response.headers_mut();
    headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    headers.insert(
        "sec-websocket-accept",
        HeaderValue::from_str(&accept).expect("base64"),
    );
    response
}

/// The gateway's SSH connection, or why there is none (said to the page).
enum Opened {
    Ssh {
        upstream: TokioIo<hyper::upgrade::Upgraded>,
        /// The resumable session's id (`None`: the gateway keeps none).
        session: Option<String>,
    },
    Refused {
        message: String,
        gone: bool,
    },
}

/// Asks the gateway for an SSH connection as `username`: resumable,
/// taking over `resume` or watching `join` if asked.
async fn open_ssh(
    router: &Arc<Router>,
    container: &Container,
    route: &Route,
    params: &Params,
    username: &str,
    headers: &HeaderMap,
) -> Opened {
    let mut path = wire::gateway_path::SSH.to_owned();
    if let Some(login) = &params.login {
        path = format!(
            "{path}?{}={}",
            wire::PARAM_LOGIN_USERNAME,
            percent_encoding::utf8_percent_encode(login, percent_encoding::NON_ALPHANUMERIC)
        );
    }
    let mut request = http::Request::post(path)
        .header(header::CONNECTION, "upgrade")
        .header(header::UPGRADE, wire::UPGRADE_SSH)
        .header(wire::REQUEST_USER, header_safe(username))
        .header(wire::REQUEST_ID, request_id(headers))
        .body(empty_body())
        .expect("a valid request");
    let extra = request.headers_mut();
    if params.join.is_none() {
        extra.insert(wire::resumable::REQUEST, HeaderValue::from_static("1"));
    }
    for (name, value) in [
        (wire::resumable::ATTACH, &params.resume),
        (wire::resumable::WATCH, &params.join),
    ] {
        if let Some(value) = value.as_deref().and_then(|v| HeaderValue::from_str(v).ok()) {
            extra.insert(name, value);
        }
    }
    let mut response = match reach::exchange(router, container, route, request).await {
        Ok(response) => response,
        Err(refusal) => {
            let status = refusal.status();
            let body = http_body_util::BodyExt::collect(refusal.into_body())
                .await
                .map(|b| String::from_utf8_lossy(&b.to_bytes()).trim().to_owned())
                .unwrap_or_default();
            return Opened::Refused {
                message: format!("{}: {body}", status.as_u16()),
                gone: false,
            };
        }
    };
    if response.status() != StatusCode::SWITCHING_PROTOCOLS {
        let status = response.status();
        let body = http_body_util::Limited::new(response.into_body(), 64 * 1024);
        let body = http_body_util::BodyExt::collect(body)
            .await
            .map(|b| String::from_utf8_lossy(&b.to_bytes()).trim().to_owned())
            .unwrap_or_default();
        return Opened::Refused {
            message: format!("{}: {body}", status.as_u16()),
            // The session to resume ended, its grace time passed, or it
            // runs no terminal: the page starts a new one.
            gone: params.resume.is_some()
                && matches!(
                    status,
                    StatusCode::GONE | StatusCode::NOT_FOUND | StatusCode::CONFLICT
                ),
        };
    }
    let session = response
        .headers()
        .get(wire::resumable::ID)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    match hyper::upgrade::on(&mut response).await {
        Ok(upgraded) => Opened::Ssh {
            upstream: TokioIo::new(upgraded),
            session,
        },
        Err(error) => Opened::Refused {
            message: format!("the gateway's upgrade failed: {error}"),
            gone: false,
        },
    }
}

type Page = WebSocketStream<TokioIo<hyper::upgrade::Upgraded>>;

async fn say(page: &mut Page, value: serde_json::Value) -> bool {
    page.send(Message::text(value.to_string())).await.is_ok()
}

/// Accepts only the host key the Container's status reports.
struct HostKey(Option<russh::keys::PublicKey>);

impl russh::client::Handler for HostKey {
    type Error = russh::Error;

    async fn check_server_key(
        &mut self,
        key: &russh::keys::PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        Ok(
            matches!((&self.0, key), (Some(expected), russh::keys::PublicKeyOrCertificate::PublicKey { key, .. }) if key == expected),
        )
    }
}

/// Runs the terminal between the page and the gateway until either ends.
async fn bridge(mut page: Page, opened: Opened, container: &Container, params: &Params) {
    let (upstream, session) = match opened {
        Opened::Ssh { upstream, session } => (upstream, session),
        Opened::Refused { message, gone } => {
            let fatal = !gone;
            say(
                &mut page,
                serde_json::json!({"error": message, "gone": gone, "fatal": fatal}),
            )
            .await;
            let _ = page.close(None).await;
            return;
        }
    };
    let (ssh_io, mut pump_end) = tokio::io::duplex(PIPE);
    // The resumable session's frames between the SSH client and the
    // gateway; aborted (not closed) when the page goes, so the gateway
    // keeps the pty for a resume.
    let resumable = session.is_some();
    let pump = tokio::spawn(async move {
        match resumable {
            true => Session::new(DEFAULT_REPLAY_BYTES)
                .pump(&mut pump_end, upstream)
                .await
                .unwrap_or(Pumped::Broken),
            false => {
                let mut upstream = upstream;
                match tokio::io::copy_bidirectional(&mut pump_end, &mut upstream).await {
                    Ok(_) => Pumped::Done,
                    Err(_) => Pumped::Broken,
                }
            }
        }
    });
    let ended = run_ssh(&mut page, ssh_io, container, params, session.as_deref()).await;
    match ended {
        Ended::PageGone => pump.abort(),
        Ended::Done => {
            let _ = tokio::time::timeout(std::time::Duration::from_secs(5), pump).await;
            let _ = page.close(None).await;
        }
        Ended::Failed(message) => {
            pump.abort();
            say(
                &mut page,
                serde_json::json!({"error": message, "gone": false, "fatal": false}),
            )
            .await;
            let _ = page.close(None).await;
        }
    }
}

enum Ended {
    /// The page closed (a reload): the pty stays for a resume.
    PageGone,
    /// The shell ended (or the watch).
    Done,
    /// The connection to the gateway failed: the page tries again.
    Failed(String),
}

async fn run_ssh(
    page: &mut Page,
    ssh_io: tokio::io::DuplexStream,
    container: &Container,
    params: &Params,
    session: Option<&str>,
) -> Ended {
    let expected = container
        .status
        .as_ref()
        .and_then(|s| s.gateway.as_ref())
        .and_then(|g| g.host_key.as_deref())
        .and_then(|k| russh::keys::PublicKey::from_openssh(k.trim()).ok());
    let config = Arc::new(russh::client::Config {
        window_size: 8 * 1024 * 1024,
        ..Default::default()
    });
    let connected = async {
        let mut handle = russh::client::connect_stream(config, ssh_io, HostKey(expected)).await?;
        // The router authenticated the user; the gateway asks nothing more.
        if !handle.authenticate_none("hatchway").await?.success() {
            return Err(russh::Error::NotAuthenticated);
        }
        let channel = handle.channel_open_session().await?;
        channel
            .request_pty(true, "xterm-256color", params.cols, params.rows, 0, 0, &[])
            .await?;
        channel.request_shell(true).await?;
        Ok::<_, russh::Error>((handle, channel))
    };
    let (_handle, mut channel) =
        match tokio::time::timeout(std::time::Duration::from_secs(30), connected).await {
            Ok(Ok(connected)) => connected,
            Ok(Err(error)) => return Ended::Failed(format!("SSH to the container's gateway: {error}")),
            Err(_) => return Ended::Failed("SSH to the container's gateway timed out".into()),
        };
    if !say(page, serde_json::json!({"session": session.unwrap_or_default()})).await {
        return Ended::PageGone;
    }
    loop {
        tokio::select! {
            message = page.next() => match message {
                Some(Ok(Message::Binary(data))) if data.len() <= MAX_MESSAGE => {
                    if params.join.is_none() && channel.data(&data[..]).await.is_err() {
                        return Ended::Failed("the container's gateway stopped taking input".into());
                    }
                }
                Some(Ok(Message::Text(text))) if text.len() <= MAX_MESSAGE => {
                    if let Some((cols, rows)) = resize(&text) {
                        let _ = channel.window_change(cols, rows, 0, 0).await;
                    }
                }
                Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => {}
                _ => return Ended::PageGone,
            },
            message = channel.wait() => match message {
                Some(russh::ChannelMsg::Data { data }) | Some(russh::ChannelMsg::ExtendedData { data, .. }) => {
                    if page.send(Message::binary(data.to_vec())).await.is_err() {
                        return Ended::PageGone;
                    }
                }
                Some(russh::ChannelMsg::ExitStatus { exit_status }) => {
                    say(page, serde_json::json!({"exit": exit_status})).await;
                }
                Some(russh::ChannelMsg::ExitSignal { signal_name, .. }) => {
                    say(page, serde_json::json!({"exit": format!("signal {signal_name:?}")})).await;
                }
                Some(_) => {}
                None => return Ended::Done,
            },
        }
    }
}

/// `{"resize":[cols,rows]}` → (cols, rows), each 1..=1000.
pub fn resize(text: &str) -> Option<(u32, u32)> {
    let value: serde_json::Value = serde_json::from_str(text).ok()?;
    let size = value.get("resize")?.as_array()?;
    let dimension = |i: usize| {
        size.get(i)?
            .as_u64()
            .filter(|n| (1..=1000).contains(n))
            .map(|n| n as u32)
    };
    Some((dimension(0)?, dimension(1)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pages_parameters_are_checked() {
        let p = params(Some("cols=120&rows=40&resume=0123456789abcdef&login=root")).unwrap();
        assert_eq!(
            p,
            Params {
                cols: 120,
                rows: 40,
                resume: Some("0123456789abcdef".into()),
                join: None,
                login: Some("root".into()),
            }
        );
        assert_eq!(params(None).unwrap().cols, 80);
        for bad in [
            "cols=0",
            "rows=100000",
            "cols=x",
            "resume=latest",
            "join=../x",
            "resume=0123456789abcdef&join=0123456789abcdef",
        ] {
            assert!(params(Some(bad)).is_err(), "{bad}");
        }
    }

    #[test]
    fn resizes_are_two_sane_numbers() {
        assert_eq!(resize(r#"{"resize":[100,30]}"#), Some((100, 30)));
        for bad in [
            r#"{"resize":[0,30]}"#,
            r#"{"resize":[100]}"#,
            r#"{"resize":"100x30"}"#,
            "nope",
        ] {
            assert_eq!(resize(bad), None, "{bad}");
        }
    }

    #[test]
    fn only_a_websocket_handshake_is_accepted() {
        let mut headers = HeaderMap::new();
        assert!(websocket_accept(&headers).is_err());
        headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        headers.insert("sec-websocket-version", HeaderValue::from_static("13"));
        assert!(websocket_accept(&headers).is_err(), "no key");
        headers.insert(
            "sec-websocket-key",
            HeaderValue::from_static("dGhlIHNhbXBsZSBub25jZQ=="),
        );
        // RFC 6455's example.
        assert_eq!(
            websocket_accept(&headers).unwrap(),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }
}
