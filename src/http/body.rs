//! Reading request bodies whole, with a size limit and a deadline, before a request may take
//! one of the in-flight places: a client that announces a body and then stalls (or trickles
//! it) waits outside, where it holds a connection of its own address's cap and nothing else.

use std::time::Duration;

use axum::{
    body::{Body, to_bytes},
    extract::Request,
    http::{HeaderValue, header},
    middleware::Next,
    response::{IntoResponse, Response},
};
use http_body_util::LengthLimitError;

use super::envelope::ApiError;

/// What a body may be.
#[derive(Debug, Clone, Copy)]
pub(crate) struct BodyLimits {
    /// Largest body, in bytes.
    pub(crate) max_bytes: usize,
    /// Time to receive all of it.
    pub(crate) read_timeout: Duration,
}

/// Buffers the body, or answers 413 (declared or found too large), 408 (too slow) or 400 (cut
/// off or badly framed) in the contract's envelope and closes the connection, whose unread
/// rest could not be told from the next request.
pub(crate) async fn read_whole(limits: BodyLimits, request: Request, next: Next) -> Response {
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > limits.max_bytes as u64) {
        return closing(ApiError::too_large());
    }

    let (parts, body) = request.into_parts();
    let read = tokio::time::timeout(limits.read_timeout, to_bytes(body, limits.max_bytes));
    let bytes = match read.await {
        Ok(Ok(bytes)) => bytes,
        Ok(Err(error)) => {
            let too_large = error.into_inner().is::<LengthLimitError>();
            return closing(if too_large {
                ApiError::too_large()
            } else {
                ApiError::malformed("The request body could not be read")
            });
        }
        Err(_) => return closing(ApiError::body_too_slow()),
    };

    next.run(Request::from_parts(parts, Body::from(bytes)))
        .await
}

fn closing(error: ApiError) -> Response {
    let mut response = error.into_response();
    response
        .headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}
