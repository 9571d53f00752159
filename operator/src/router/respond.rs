//! Bodies, and the refusals every handler returns: a status code and a
//! sentence a person understands, as `text/plain`.

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Empty, Full};

/// The error type of the bodies the router streams.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Every body the router sends, to a client or to a gateway: any body,
/// boxed, so a user's streamed request body, a gateway's answer and a
/// router-made text all fit.
pub type Body = UnsyncBoxBody<Bytes, BoxError>;

/// The body of a request as it arrives (hyper's, as the route table hands
/// it on).
pub type RequestBody = axum::body::Body;

/// An empty body.
pub fn empty_body() -> Body {
    Empty::<Bytes>::new()
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// A body of the given bytes.
pub fn full_body(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// A request body passed on as it streams in.
pub fn stream_body(body: RequestBody) -> Body {
    body.map_err(Into::into).boxed_unsync()
}

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
