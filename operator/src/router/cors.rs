//! CORS for the log tree: browsers read logs with a bearer token from any
//! origin. Ours only: a gateway's CORS headers are removed, so none is
//! ever duplicated.

use hatchway_api::webdav::ALLOW;
use http::{HeaderMap, HeaderValue, Response, StatusCode, header};

use super::respond::{Body, empty_body};

/// Answers a CORS preflight for the log tree.
pub fn preflight() -> Response<Body> {
    let mut response = Response::new(empty_body());
    *response.status_mut() = StatusCode::NO_CONTENT;
    add(response.headers_mut());
    let h = response.headers_mut();
    h.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static(ALLOW),
    );
    h.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static("Authorization, Depth, Range, Content-Type, X-Hatchway-Request-Id"),
    );
    h.insert(header::ACCESS_CONTROL_MAX_AGE, HeaderValue::from_static("86400"));
    response
}

/// Our CORS headers: any origin may read with a bearer token (no cookies
/// are involved, so credentials mode is not allowed).
pub fn add(headers: &mut HeaderMap) {
    headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, HeaderValue::from_static("*"));
    headers.insert(
        header::ACCESS_CONTROL_EXPOSE_HEADERS,
        HeaderValue::from_static("Content-Length, Content-Range, Accept-Ranges, Last-Modified, DAV"),
    );
}
