//! The log tree of a Container, `…/log/…`, as read-only WebDAV.
//!
//! Running with a gateway: proxied to it (`X-Webdav-Prefix` makes its hrefs
//! the user's paths). Ended: the saved logs (the finished pod's logs
//! streamed from the Kubernetes API under the same file names: see
//! [`super::saved`]). Not started: an
//! empty directory. When the gateway fails, status is read again: if the
//! Container has just ended, the saved logs answer instead of an error.
//! Browsers get CORS headers (ours only: the gateway's are removed, so
//! none is ever duplicated).

use hatchway_api::crd::Container;
use hatchway_api::webdav::Target;
use hatchway_api::wire;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode, Uri, header};
use std::sync::Arc;

use super::access::{choose_settled, log_prefix};
use super::auth::User;
use super::cluster::LogQuery;
use super::reach::{self, GatewayRequest, header_safe, request_id};
use super::respond::{Body, RequestBody, empty_body, text};
use super::select::{Purpose, RefusalKind, Route};
use super::{Router, cors, relay};

/// Request headers a WebDAV read passes on to the gateway.
const PASSED: [HeaderName; 5] = [
    header::RANGE,
    header::IF_MODIFIED_SINCE,
    header::IF_NONE_MATCH,
    header::IF_RANGE,
    header::ACCEPT,
];

/// Serves the log tree of `container` as `api` names it; `rest` follows
/// `…/log`.
pub async fn serve(
    router: Arc<Router>,
    api: wire::Api,
    req: Request<RequestBody>,
    container: Container,
    rest: String,
    user: User,
) -> Response<Body> {
    let (source, mut response) = serve_inner(router, api, req, container, rest, user).await;
    let headers = response.headers_mut();
    if let Some(source) = source {
        headers.insert(wire::LOG_SOURCE, HeaderValue::from_static(source));
    }
    let upstream_cors: Vec<HeaderName> = headers
        .keys()
        .filter(|n| n.as_str().starts_with("access-control-"))
        .cloned()
        .collect();
    for name in upstream_cors {
        headers.remove(name);
    }
    dedupe(headers);
    cors::add(headers);
    response
}

async fn serve_inner(
    router: Arc<Router>,
    api: wire::Api,
    req: Request<RequestBody>,
    container: Container,
    rest: String,
    user: User,
) -> (Option<&'static str>, Response<Body>) {
    let namespace = container.metadata.namespace.clone().unwrap_or_default();
    let name = container.metadata.name.clone().unwrap_or_default();
    let prefix = log_prefix(api, &namespace, &name);
    let target = match Target::parse(&rest) {
        Ok(target) => target,
        Err(message) => return (None, text(StatusCode::NOT_FOUND, message)),
    };
    // What the saved logs read of the request.
    let (method, headers) = (req.method().clone(), req.headers().clone());
    let query = match log_query(req.uri().query()) {
        Ok(query) => query,
        Err(message) => return (None, text(StatusCode::BAD_REQUEST, message)),
    };
    let (container, route) = choose_settled(&router, container, req.headers(), Purpose::Logs).await;
    if let (true, Target::File(_)) = (query.from_kubelet(), &target)
        && !matches!(&route, Err(r) if r.kind == RefusalKind::NotRunningYet)
    {
        // Lines by time, their times, the previous run: only the kubelet
        // knows, so these come from the API whether the Container runs or
        // has ended.
        return (
            Some("api"),
            super::saved::serve(&router, &method, &headers, &container, &prefix, &target, query).await,
        );
    }
    let route = match route {
        Ok(route) => route,
        Err(refusal) if refusal.kind == RefusalKind::NotRunningYet => {
            return (
                Some("none"),
                super::saved::directory(&method, &headers, &prefix, &target, &[]),
            );
        }
        Err(refusal) if refusal.kind == RefusalKind::Ended => {
            return (
                Some("saved"),
                super::saved::serve(
                    &router,
                    &method,
                    &headers,
                    &container,
                    &prefix,
                    &target,
                    LogQuery::default(),
                )
                .await,
            );
        }
        Err(refusal) => return (None, refusal.into_response()),
    };
    let sent = reach::send(&router, req, &container, &route, "logs", |req| {
        webdav_request(req.method(), req.uri(), req.headers(), &prefix, &user)
    })
    .await;
    match sent {
        // The peer names the source itself.
        Ok(response) if matches!(route, Route::Forward(_)) => (None, response),
        Ok(response) => (Some("live"), response),
        Err(failure) => {
            // The race Arvados handles: the gateway went away because the
            // container just ended. Read status again before refusing.
            match router.cluster.container_fresh(&namespace, &name).await {
                Ok(Some(fresh))
                    if fresh
                        .status
                        .as_ref()
                        .and_then(|s| s.phase)
                        .is_some_and(|p| p.is_finished()) =>
                {
                    tracing::info!("gateway gone and the container has ended: serving saved logs");
                    let saved = super::saved::serve(
                        &router,
                        &method,
                        &headers,
                        &fresh,
                        &prefix,
                        &target,
                        LogQuery::default(),
                    )
                    .await;
                    (Some("saved"), saved)
                }
                _ => (None, failure),
            }
        }
    }
}

/// `?sinceSeconds=N` (N ≥ 1), `?timestamps=true`, `?previous=true` of a
/// log file request.
pub fn log_query(query: Option<&str>) -> Result<LogQuery, String> {
    let mut out = LogQuery::default();
    for pair in query.into_iter().flat_map(|q| q.split('&')) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let flag = |name: &str| match value {
            "true" | "1" => Ok(true),
            "false" | "0" => Ok(false),
            _ => Err(format!("{name} {value:?} is not true or false")),
        };
        match key {
            wire::PARAM_SINCE_SECONDS => match value.parse::<u64>() {
                Ok(n) if n > 0 => out.since_seconds = Some(n),
                _ => {
                    return Err(format!(
                        "sinceSeconds {value:?} is not a whole number of seconds above 0"
                    ));
                }
            },
            wire::PARAM_TIMESTAMPS => out.timestamps = flag(key)?,
            wire::PARAM_PREVIOUS => out.previous = flag(key)?,
            _ => {}
        }
    }
    Ok(out)
}

/// The WebDAV read the gateway gets: the user's method, path and the
/// headers a read needs, with the prefix its hrefs use.
fn webdav_request(
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    prefix: &str,
    user: &User,
) -> GatewayRequest {
    let path = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    let mut builder = Request::builder()
        .method(method.clone())
        .uri(path)
        .header(wire::WEBDAV_PREFIX, prefix)
        .header(wire::REQUEST_USER, header_safe(&user.username))
        .header(wire::REQUEST_ID, request_id(headers));
    for name in PASSED
        .iter()
        .chain(std::iter::once(&HeaderName::from_static("depth")))
    {
        if let Some(value) = headers.get(name) {
            builder = builder.header(name, value);
        }
    }
    GatewayRequest {
        request: builder.body(empty_body()).expect("a valid request"),
        client: None,
        framing: relay::ClientStream::Raw,
        author: relay::Author::Gateway,
    }
}

/// Removes repeated identical values of a header (an upstream that sends
/// the same header twice must not make the router do so).
fn dedupe(headers: &mut HeaderMap) {
    let names: Vec<HeaderName> = headers.keys().cloned().collect();
    for name in names {
        let values: Vec<HeaderValue> = headers.get_all(&name).iter().cloned().collect();
        if values.len() < 2 {
            continue;
        }
        let mut unique: Vec<HeaderValue> = Vec::new();
        for value in values {
            if !unique.contains(&value) {
                unique.push(value);
            }
        }
        headers.remove(&name);
        for value in unique {
            headers.append(name.clone(), value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_queries_parse_to_what_the_kubelet_is_asked() {
        let q = |s: &str| log_query(Some(s));
        assert_eq!(log_query(None), Ok(LogQuery::default()));
        assert_eq!(q("a=1"), Ok(LogQuery::default()));
        assert!(!q("a=1").unwrap().from_kubelet());
        assert_eq!(q("a=1&sinceSeconds=600").unwrap().since_seconds, Some(600));
        let both = q("timestamps=true&previous=1").unwrap();
        assert!(both.timestamps && both.previous && both.from_kubelet());
        assert!(q("sinceSeconds=0").is_err());
        assert!(q("sinceSeconds=-5").is_err());
        assert!(q("sinceSeconds=1h").is_err());
        assert!(q("timestamps=yes").unwrap_err().contains("not true or false"));
    }

    #[test]
    fn duplicate_header_values_are_removed() {
        let mut h = HeaderMap::new();
        h.append("x-a", HeaderValue::from_static("1"));
        h.append("x-a", HeaderValue::from_static("1"));
        h.append("x-a", HeaderValue::from_static("2"));
        dedupe(&mut h);
        let values: Vec<_> = h.get_all("x-a").iter().collect();
        assert_eq!(values, ["1", "2"]);
    }
}
