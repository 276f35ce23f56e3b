//! The contract's response envelope and the one HTTP error type.

use std::borrow::Cow;

use axum::{
    Json,
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use latchkey_actors::Error;
use serde::Serialize;
use serde_json::{Map, Value, json};
use uuid::Uuid;

/// A success body: the envelope plus the route's fields at the top level.
pub(crate) fn success<T: Serialize>(fields: T) -> Response {
    let mut body = match serde_json::to_value(fields) {
        Ok(Value::Object(map)) => map,
        _ => Map::new(),
    };
    body.insert(
        "responseStatus".into(),
        json!({"status": "SUCCESS", "message": "", "code": ""}),
    );
    (StatusCode::OK, Json(Value::Object(body))).into_response()
}

/// A success body with no fields.
pub(crate) fn done() -> Response {
    success(json!({}))
}

/// An error answer: status, contract code and a message safe to show.
#[derive(Debug)]
pub(crate) struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: Cow<'static, str>,
    /// Our-fault errors, kept for the log layer, never sent.
    cause: Option<String>,
    /// Seconds until a rate-limited caller may try again (`Retry-After`).
    retry_after: Option<u64>,
}

/// Marks a response that carries a server fault, so the log layer can report it once.
#[derive(Debug, Clone)]
pub(crate) struct Fault(pub(crate) String);

impl ApiError {
    pub(crate) fn new(
        status: StatusCode,
        code: &'static str,
        message: impl Into<Cow<'static, str>>,
    ) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            cause: None,
            retry_after: None,
        }
    }

    pub(crate) fn not_found() -> Self {
        Self::new(StatusCode::NOT_FOUND, "AN-HTTP-1004", "No such route")
    }

    pub(crate) fn method_not_allowed() -> Self {
        Self::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "AN-HTTP-1005",
            "Method not allowed on this route",
        )
    }

    pub(crate) fn too_large() -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "AN-VALI-1005",
            "Request body too large",
        )
    }

    /// 408: the body did not arrive in time.
    pub(crate) fn body_too_slow() -> Self {
        Self::new(
            StatusCode::REQUEST_TIMEOUT,
            "AN-HTTP-1008",
            "The request body did not arrive in time",
        )
    }

    pub(crate) fn not_json() -> Self {
        Self::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "AN-VALI-1004",
            "Content-Type must be application/json",
        )
    }

    pub(crate) fn malformed(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "AN-VALI-1001", message)
    }

    pub(crate) fn invalid(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "AN-VALI-1002", message)
    }

    pub(crate) fn app_mismatch() -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "AN-VALI-1006",
            "applicationUuid in the body and x-application-uuid differ",
        )
    }

    /// 429: try again in `wait` (rounded up to whole seconds, at least one).
    pub(crate) fn rate_limited(wait: std::time::Duration) -> Self {
        let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
        Self {
            retry_after: Some(secs.max(1)),
            ..Self::new(
                StatusCode::TOO_MANY_REQUESTS,
                "AN-RATE-1001",
                "Too many requests; try again later",
            )
        }
    }

    pub(crate) fn unavailable() -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "AN-SYST-1001", "Not ready")
    }
}

/// The status each domain error answers with; everything not listed is a 400, as the
/// original clients expect for business-rule failures.
pub(crate) fn status_of(err: &Error) -> StatusCode {
    match err {
        Error::InvalidJwt | Error::ExpiredJwt | Error::RevokedJwt | Error::BadApiKey => {
            StatusCode::UNAUTHORIZED
        }
        Error::Forbidden | Error::IamForbidden | Error::SignUpClosed(_) | Error::NoDelivery => {
            StatusCode::FORBIDDEN
        }
        Error::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        Error::Internal(_) | Error::DataDirLocked => StatusCode::INTERNAL_SERVER_ERROR,
        _ => StatusCode::BAD_REQUEST,
    }
}

impl From<Error> for ApiError {
    fn from(err: Error) -> Self {
        let status = status_of(&err);
        if status == StatusCode::INTERNAL_SERVER_ERROR {
            let mut chain = format!("{err}");
            let mut source = std::error::Error::source(&err);
            while let Some(s) = source {
                chain.push_str(": ");
                chain.push_str(&s.to_string());
                source = s.source();
            }
            return Self {
                status,
                code: err.code(),
                message: "".into(),
                cause: Some(chain),
                retry_after: None,
            };
        }
        Self::new(status, err.code(), err.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (message, fault) = match self.cause {
            Some(cause) => {
                let id = Uuid::new_v4();
                (
                    format!("Internal error; request id {id}"),
                    Some(Fault(format!("{id}: {cause}"))),
                )
            }
            None => (self.message.into_owned(), None),
        };
        let body =
            json!({"responseStatus": {"status": "ERROR", "message": message, "code": self.code}});
        let mut response = (self.status, Json(body)).into_response();
        if self.status == StatusCode::UNAUTHORIZED && self.code.starts_with("AN-JWTT") {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if let Some(secs) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        if let Some(fault) = fault {
            response.extensions_mut().insert(fault);
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_follow_the_contract_table() {
        assert_eq!(status_of(&Error::LoginFailed), StatusCode::BAD_REQUEST);
        assert_eq!(status_of(&Error::UsernameTaken), StatusCode::BAD_REQUEST);
        assert_eq!(status_of(&Error::BadApiKey), StatusCode::UNAUTHORIZED);
        assert_eq!(status_of(&Error::RevokedJwt), StatusCode::UNAUTHORIZED);
        assert_eq!(status_of(&Error::Forbidden), StatusCode::FORBIDDEN);
        assert_eq!(
            status_of(&Error::Internal("x".into())),
            StatusCode::INTERNAL_SERVER_ERROR
        );
    }

    #[test]
    fn a_rate_limited_answer_carries_the_code_and_whole_seconds_to_wait() {
        let wait = std::time::Duration::from_millis(1200);
        let response = ApiError::rate_limited(wait).into_response();
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(response.headers()[header::RETRY_AFTER], "2");
        let instant = ApiError::rate_limited(std::time::Duration::ZERO).into_response();
        assert_eq!(instant.headers()[header::RETRY_AFTER], "1");
    }

    #[test]
    fn internal_errors_do_not_leak_their_cause() {
        let response = ApiError::from(Error::Internal("disk on fire".into())).into_response();
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert!(
            response
                .extensions()
                .get::<Fault>()
                .is_some_and(|f| f.0.contains("disk on fire"))
        );
    }
}
