//! `POST /portforward?port=N` with `Upgrade: tcp`: raw TCP to
//! `127.0.0.1:N` inside the pod, half-close respected; or, when asked,
//! a resumable session carrying it.

use std::sync::Arc;

use http::{Request, Response, StatusCode, header};
use hyper_util::rt::TokioIo;

use crate::body::{Body, RequestBody, empty, text};
use crate::report::{Reporter, Who};
use crate::resumable::{self, Kind, Registry};

/// Parses `port=N` from a query string.
pub fn port_param(query: Option<&str>) -> Result<u16, String> {
    let value = query
        .unwrap_or("")
        .split('&')
        .find_map(|kv| kv.strip_prefix("port="))
        .ok_or("missing ?port=N (the port inside the container)")?;
    match value.parse::<u16>() {
        Ok(port) if port > 0 => Ok(port),
        _ => Err(format!("port {value:?} is not a TCP port (1-65535)")),
    }
}

/// The refusal of `port` by the Container's `rule`, written to the audit
/// trail; `None` when it may be forwarded. One check for TCP, UDP and
/// SSH `direct-tcpip`.
pub fn refused(
    rule: &hatchway_api::ports::ForwardRule,
    port: u16,
    reporter: &Reporter,
    who: &Who,
) -> Option<String> {
    let refusal = rule.refusal(port)?;
    reporter.audit(&format!("forward refused ({refusal}) {}", who.audited()));
    Some(refusal)
}

/// Serves one port-forward request.
/// With `Hatchway-Resumable: 1` the connection is a resumable session
/// (see [`crate::resumable`]).
pub async fn serve(
    mut req: Request<RequestBody>,
    reporter: Arc<Reporter>,
    sessions: &Arc<Registry>,
    rule: &hatchway_api::ports::ForwardRule,
    who: Who,
) -> Response<Body> {
    let udp = hatchway_api::headers::upgrade_is(req.headers(), hatchway_api::wire::UPGRADE_UDP);
    if !udp && !hatchway_api::headers::upgrade_is(req.headers(), hatchway_api::wire::UPGRADE_TCP) {
        return text(
            StatusCode::BAD_REQUEST,
            "port-forward needs `Connection: upgrade` and `Upgrade: tcp` (or `hatchway-udp`)",
        );
    }
    let port = match port_param(req.uri().query()) {
        Ok(port) => port,
        Err(message) => return text(StatusCode::BAD_REQUEST, message),
    };
    if let Some(refusal) = refused(rule, port, &reporter, &who) {
        return text(StatusCode::FORBIDDEN, refusal);
    }
    if udp {
        return crate::udp::serve(req, port, reporter, who).await;
    }
    let upstream = match crate::local::connect(port).await {
        Ok(stream) => stream,
        Err(message) => return text(StatusCode::BAD_GATEWAY, message),
    };
    let on_upgrade = hyper::upgrade::on(&mut req);
    let mut response = Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(header::CONNECTION, "upgrade")
        .header(header::UPGRADE, hatchway_api::wire::UPGRADE_TCP)
        .body(empty())
        .unwrap();
    let upstream = if resumable::wanted(req.headers()) {
        match sessions.open(Kind::Portforward, &who, format!("port {port}"), upstream, true) {
            Ok(opened) => {
                opened.add_headers(response.headers_mut());
                crate::spawn(async move {
                    match on_upgrade.await {
                        Ok(upgraded) => opened.attach(TokioIo::new(upgraded)),
                        Err(error) => tracing::debug!(%error, port, "port-forward upgrade failed"),
                    }
                });
                return response;
            }
            Err(upstream) => upstream,
        }
    } else {
        upstream
    };
    crate::spawn(async move {
        let upgraded = match on_upgrade.await {
            Ok(upgraded) => upgraded,
            Err(error) => return tracing::debug!(%error, port, "port-forward upgrade failed"),
        };
        let session = reporter.session(&who, "portforward", Some(format!("port {port}")));
        crate::relay::relay(
            TokioIo::new(upgraded),
            upstream,
            session.bytes_in.clone(),
            session.bytes_out.clone(),
        )
        .await;
    });
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_port_parameter_is_checked() {
        assert_eq!(port_param(Some("port=8080")), Ok(8080));
        assert_eq!(port_param(Some("a=b&port=22")), Ok(22));
        assert!(port_param(None).unwrap_err().contains("missing"));
        assert!(port_param(Some("port=0")).unwrap_err().contains("not a TCP port"));
        assert!(
            port_param(Some("port=70000"))
                .unwrap_err()
                .contains("not a TCP port")
        );
        assert!(port_param(Some("port=x")).is_err());
    }
}
