//! Response bodies and the refusals every handler returns: a status code
//! and a sentence a person understands, as `text/plain`.

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};

pub use super::upstream::{BoxError, UpstreamBody as Body, empty_body, full_body};

/// A plain-text response: `message` and a newline.
pub fn text(status: StatusCode, message: impl Into<String>) -> Response<Body> {
    let mut message = message.into();
    message.push('\n');
    let mut response = Response::new(full_body(Bytes::from(message)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}
