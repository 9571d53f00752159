//! The user API's handlers, each after [`access::Granted`] has checked
//! the request: a shell (`…/ssh`), a port-forward (`…/portforward`), the
//! log tree (`…/log/…`, see [`super::logs`]) and a web-app login link
//! (`…/weblogin`, see [`super::webapp`]).

use std::sync::Arc;

use axum::extract::{Request, State};
use hatchway_api::crd::ContainerStatus;
use hatchway_api::headers;
use hatchway_api::status::MANAGER_SESSION;
use hatchway_api::wire;
use http::{HeaderValue, Response, StatusCode, header};

use super::access::{self, Action, Granted, choose_settled};
use super::reach::{self, GatewayRequest, header_safe, request_id};
use super::relay::{Author, ClientStream};
use super::respond::{Body, RequestBody, empty_body, text};
use super::select::{Purpose, Route};
use super::{Router, logs, webapp};

/// `POST …/ssh` (`Upgrade: hatchway-ssh`): a shell, relayed to the gateway.
pub async fn shell(State(router): State<Arc<Router>>, granted: Granted, req: Request) -> Response<Body> {
    let Granted {
        path,
        user,
        container,
    } = granted;
    let (container, route) = choose_settled(&router, container, req.headers(), Purpose::Shell).await;
    let route = match route {
        Ok(route) => route,
        Err(refusal) => return refusal.into_response(),
    };
    let params = pass_params(
        req.uri().query(),
        &[wire::PARAM_LOGIN_USERNAME, wire::PARAM_DETACH_KEYS],
    );
    let gateway_path = format!("{}?{params}", wire::gateway_path::SSH);
    let mut response = reach::send(&router, req, &container, &route, "shell", |req| {
        upgrade_request(req, gateway_path, wire::UPGRADE_SSH, &user.username)
    })
    .await
    .unwrap_or_else(|refusal| refusal);
    if response.status() != StatusCode::SWITCHING_PROTOCOLS {
        return response;
    }
    // The host key for the CLI's known_hosts: the gateway's own word (it
    // proved itself; right after a sidecar restart the status still holds
    // the old key for a moment), else this replica's status.
    if !response.headers().contains_key(wire::SSH_HOST_KEY)
        && let Some(key) = container
            .status
            .as_ref()
            .and_then(|s| s.gateway.as_ref())
            .and_then(|g| g.host_key.as_deref())
            .and_then(|k| HeaderValue::from_str(k.trim()).ok())
    {
        response.headers_mut().insert(wire::SSH_HOST_KEY, key);
    }
    // A peer that took the shell records the session itself.
    let forwarded = matches!(route, Route::Forward(_));
    if !forwarded
        && !container
            .status
            .as_ref()
            .is_some_and(|s| s.interactive_session_started)
    {
        record_session_started(router, &path.namespace, &path.name);
    }
    response
}

/// `POST …/portforward?port=N` (`Upgrade: hatchway-tcp`): a TCP
/// connection to port N in the container, relayed.
pub async fn port_forward(
    State(router): State<Arc<Router>>,
    granted: Granted,
    req: Request,
) -> Response<Body> {
    let Granted { user, container, .. } = granted;
    let (container, route) = choose_settled(&router, container, req.headers(), Purpose::PortForward).await;
    let route = match route {
        Ok(route) => route,
        Err(refusal) => return refusal.into_response(),
    };
    // Checked here, not by the gateway: a replica the request is forwarded
    // to would refuse it the same way.
    let port = match forward_port(req.uri().query()) {
        Ok(port) => port,
        Err(refusal) => return refusal,
    };
    let path = format!("{}?port={port}", wire::gateway_path::PORTFORWARD);
    // The gateway gets raw TCP, or a UDP flow's datagrams as they came
    // (they are framed end to end); a TCP client that asked for frames
    // (through the API server's proxy) gets them from here.
    let asked = headers::wants_upgrade(req.headers());
    let (protocol, framing, kind) = match asked.as_deref() {
        Some(wire::UPGRADE_UDP) => (wire::UPGRADE_UDP, ClientStream::Raw, "portforward_udp"),
        Some(wire::UPGRADE_TCP_FRAMED) => (wire::UPGRADE_TCP, ClientStream::Framed, "portforward"),
        _ => (wire::UPGRADE_TCP, ClientStream::Raw, "portforward"),
    };
    reach::send(&router, req, &container, &route, kind, |req| {
        let mut request = upgrade_request(req, path, protocol, &user.username);
        request.framing = framing;
        request
    })
    .await
    .unwrap_or_else(|refusal| refusal)
}

/// `…/log`, `…/log/{file}`: the log tree (WebDAV, read-only).
pub async fn log(State(router): State<Arc<Router>>, granted: Granted, req: Request) -> Response<Body> {
    let Granted {
        path,
        user,
        container,
    } = granted;
    let Action::Log(rest) = path.action else {
        return access::no_such_endpoint(req.uri().path());
    };
    logs::serve(router, path.api, req, container, rest, user).await
}

/// `POST …/weblogin?port=N`: a one-time login link to a web app.
pub async fn web_login(State(router): State<Arc<Router>>, granted: Granted, req: Request) -> Response<Body> {
    webapp::login_link(&router, &req, &granted.container, &granted.user)
}

/// `GET …/sessions`: the caller's resumable sessions, from the gateway
/// (which keeps them; the router names the user).
pub async fn sessions(State(router): State<Arc<Router>>, granted: Granted, req: Request) -> Response<Body> {
    let Granted { user, container, .. } = granted;
    let (container, route) = choose_settled(&router, container, req.headers(), Purpose::Shell).await;
    let route = match route {
        Ok(route) => route,
        Err(refusal) => return refusal.into_response(),
    };
    reach::send(&router, req, &container, &route, "sessions", |req| {
        GatewayRequest {
            request: http::Request::get(wire::gateway_path::SESSIONS)
                .header(wire::REQUEST_USER, header_safe(&user.username))
                .header(wire::REQUEST_ID, request_id(req.headers()))
                .body(empty_body())
                .expect("a valid request"),
            client: None,
            framing: ClientStream::Raw,
            author: Author::Gateway,
        }
    })
    .await
    .unwrap_or_else(|refusal| refusal)
}

/// The upgrade request to the gateway for a user's shell or port-forward
/// (their own request's body is not passed on: an upgrade has none).
fn upgrade_request(
    mut req: http::Request<RequestBody>,
    path: String,
    protocol: &'static str,
    username: &str,
) -> GatewayRequest {
    let mut request = http::Request::post(path)
        .header(header::CONNECTION, "upgrade")
        .header(header::UPGRADE, protocol)
        .header(wire::REQUEST_USER, header_safe(username))
        .header(wire::REQUEST_ID, request_id(req.headers()))
        .body(empty_body())
        .expect("a valid request");
    // A resumable session's opening and resumes are between the client
    // and the gateway (docs/sessions.md): passed on as they came.
    for name in wire::resumable::REQUEST_HEADERS {
        if let Some(value) = req.headers().get(name) {
            request.headers_mut().insert(name, value.clone());
        }
    }
    GatewayRequest {
        request,
        client: Some(hyper::upgrade::on(&mut req)),
        framing: ClientStream::Raw,
        author: Author::Gateway,
    }
}

/// The query parameters passed on to the gateway, still encoded.
pub fn pass_params(query: Option<&str>, allowed: &[&str]) -> String {
    query
        .unwrap_or("")
        .split('&')
        .filter(|pair| {
            let key = pair.split_once('=').map_or(*pair, |(k, _)| k);
            allowed.contains(&key)
        })
        .collect::<Vec<_>>()
        .join("&")
}

/// The port of a port-forward, or the refusal.
#[allow(clippy::result_large_err)] // the refusal is the response itself
pub fn forward_port(query: Option<&str>) -> Result<u16, Response<Body>> {
    let value = query
        .unwrap_or("")
        .split('&')
        .find_map(|pair| pair.strip_prefix("port="))
        .ok_or_else(|| text(StatusCode::BAD_REQUEST, "port-forward needs ?port=N (1-65535)"))?;
    value.parse::<u16>().ok().filter(|p| *p > 0).ok_or_else(|| {
        text(
            StatusCode::BAD_REQUEST,
            format!("port {value:?} is not a TCP port (1-65535)"),
        )
    })
}

/// Records `interactiveSessionStarted` in the background (a failure is
/// logged; it does not stop the session).
fn record_session_started(router: Arc<Router>, namespace: &str, name: &str) {
    let (namespace, name) = (namespace.to_owned(), name.to_owned());
    tokio::spawn(async move {
        let result = router
            .cluster
            .apply_status(
                &namespace,
                &name,
                MANAGER_SESSION,
                ContainerStatus::session_started(),
            )
            .await;
        let label = if result.is_ok() { "ok" } else { "error" };
        router.metrics.status_writes.with_label_values(&[label]).inc();
        if let Err(error) = result {
            tracing::warn!(%error, namespace, name, "recording interactiveSessionStarted");
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_known_parameters_pass_to_the_gateway() {
        let q = Some("login_username=al%20ice&evil=1&detach_keys=ctrl-a&login_usernamex=2");
        assert_eq!(
            pass_params(q, &[wire::PARAM_LOGIN_USERNAME, wire::PARAM_DETACH_KEYS]),
            "login_username=al%20ice&detach_keys=ctrl-a"
        );
        assert_eq!(pass_params(None, &[wire::PARAM_LOGIN_USERNAME]), "");
    }

    #[test]
    fn port_forward_ports_are_checked() {
        assert_eq!(forward_port(Some("port=8080")).unwrap(), 8080);
        for bad in [
            None,
            Some("port=0"),
            Some("port=70000"),
            Some("port=x"),
            Some("p=1"),
        ] {
            let response = forward_port(bad).unwrap_err();
            assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{bad:?}");
        }
    }
}
