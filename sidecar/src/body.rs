//! Response bodies and the small helpers every route uses.

use bytes::Bytes;
use http::{Response, StatusCode, header};
use http_body_util::{BodyExt, Empty, Full, combinators::UnsyncBoxBody};

/// Every response body the gateway sends.
pub type Body = UnsyncBoxBody<Bytes, std::io::Error>;

/// The body of a request as it arrives (hyper's, as the route table hands
/// it on).
pub type RequestBody = axum::body::Body;

/// A plain-text response: a status and a message a person understands.
pub fn text(status: StatusCode, message: impl Into<String>) -> Response<Body> {
    let mut message = message.into();
    if !message.ends_with('\n') {
        message.push('\n');
    }
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
        .body(full(message))
        .expect("static response parts are valid")
}

/// A body holding `data`.
pub fn full(data: impl Into<Bytes>) -> Body {
    Full::new(data.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// An empty body.
pub fn empty() -> Body {
    Empty::new().map_err(|never| match never {}).boxed_unsync()
}
