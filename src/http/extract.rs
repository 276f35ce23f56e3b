//! Extractors: a JSON body with the contract's error codes, the back-end caller's
//! application, and the bearer token's principal.

use std::sync::Arc;

use axum::{
    body::Bytes,
    extract::{FromRequest, FromRequestParts, Request},
    http::{HeaderMap, header, request::Parts},
};
use latchkey_actors::{Application, Error, Principal};
use serde::de::DeserializeOwned;
use uuid::Uuid;

use super::{AppState, envelope::ApiError};

/// A JSON body, refused with the contract's codes: 415 if not JSON, 413 if too large,
/// AN-VALI-1001 when malformed or a field is missing, AN-VALI-1002 for a wrong type.
#[derive(Debug)]
pub(crate) struct Body<T>(pub(crate) T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for Body<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let is_json = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .is_some_and(|mime| {
                let mime = mime.trim();
                mime.eq_ignore_ascii_case("application/json")
                    || (mime.starts_with("application/") && mime.ends_with("+json"))
            });
        if !is_json {
            return Err(ApiError::not_json());
        }

        let bytes = Bytes::from_request(req, state).await.map_err(|rejection| {
            if rejection.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::too_large()
            } else {
                ApiError::malformed("The request body could not be read")
            }
        })?;
        parse(&bytes).map(Body)
    }
}

/// Parses a body, naming the offending field without echoing its value.
pub(crate) fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    // serde would read a JSON array as a struct's fields in order; the contract wants objects.
    match bytes.iter().find(|b| !b.is_ascii_whitespace()) {
        None => return Err(ApiError::malformed("The request body is empty")),
        Some(b'{') => {}
        Some(_) => {
            return Err(ApiError::malformed(
                "The request body must be a JSON object",
            ));
        }
    }
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let parsed: Result<T, _> = serde_path_to_error::deserialize(&mut de);
    let value = match parsed {
        Ok(value) => value,
        Err(err) => return Err(describe(&err)),
    };
    de.end()
        .map_err(|_| ApiError::malformed("Malformed JSON: trailing characters"))?;
    Ok(value)
}

fn describe(err: &serde_path_to_error::Error<serde_json::Error>) -> ApiError {
    let inner = err.inner();
    let path = err.path().to_string();
    match inner.classify() {
        serde_json::error::Category::Data => {
            let text = inner.to_string();
            if let Some(rest) = text.strip_prefix("missing field `") {
                let field = rest.split('`').next().unwrap_or_default();
                let field = if path == "." {
                    field.to_owned()
                } else {
                    format!("{path}.{field}")
                };
                return ApiError::malformed(format!("Missing field: {field}"));
            }
            if path == "." {
                return ApiError::malformed("The request body must be a JSON object");
            }
            ApiError::invalid(format!("Invalid {path}: wrong type or format"))
        }
        _ => ApiError::malformed("Malformed JSON"),
    }
}

/// The application of a back-end call, with its API key checked and the call counted against
/// the application's rate limit.
pub(crate) fn backend_app(
    state: &AppState,
    headers: &HeaderMap,
    body_app: Option<&str>,
) -> Result<Arc<Application>, ApiError> {
    let header_app = headers
        .get("x-application-uuid")
        .map(|v| v.to_str().unwrap_or("?").trim());
    let uuid = match (body_app, header_app) {
        (Some(body), Some(header)) if body.trim() != header => return Err(ApiError::app_mismatch()),
        (Some(given), _) | (None, Some(given)) => parse_app(given)?,
        (None, None) => return Err(Error::MissingField("applicationUuid").into()),
    };
    let app = state.engine.app(uuid)?;
    let key = headers.get("x-api-key").and_then(|v| v.to_str().ok());
    state.engine.check_api_key(&app, key)?;
    // Counted only once the key is right, so that no one else can spend an application's budget.
    state.limits.check_app(app.uuid)?;
    Ok(app)
}

pub(crate) fn parse_app(raw: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(raw.trim()).map_err(|_| Error::UnknownApp.into())
}

/// The token of an `Authorization: Bearer` header (the scheme in any case, RFC 7235), when
/// there is one of a sane size.
pub(crate) fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    let sane = !token.is_empty() && token.len() <= 8192;
    (scheme.eq_ignore_ascii_case("bearer") && sane).then_some(token)
}

/// The caller behind a valid, unrevoked bearer token.
#[derive(Debug)]
pub(crate) struct Caller(pub(crate) Principal);

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let token = bearer_token(&parts.headers).ok_or(Error::InvalidJwt)?;
        let app_header = match parts.headers.get("x-application-uuid") {
            Some(v) => Some(
                v.to_str()
                    .ok()
                    .and_then(|s| Uuid::parse_str(s.trim()).ok())
                    .ok_or(Error::InvalidJwt)?,
            ),
            None => None,
        };
        Ok(Caller(state.engine.authenticate(token, app_header).await?))
    }
}

/// A UUID path segment; `code` is what a malformed one answers with.
pub(crate) fn path_uuid(raw: &str, err: Error) -> Result<Uuid, ApiError> {
    Uuid::parse_str(raw).map_err(|_| err.into())
}

/// Query parameters, refused with the envelope (AN-VALI-1002) rather than axum's plain text.
#[derive(Debug)]
pub(crate) struct Query<T>(pub(crate) T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for Query<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|q| Query(q.0))
            .map_err(|_| {
                ApiError::invalid("Invalid query string: a parameter is repeated or malformed")
            })
    }
}

/// Path parameters, refused with the envelope (AN-VALI-1002) rather than axum's plain text.
#[derive(Debug)]
pub(crate) struct Path<T>(pub(crate) T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for Path<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|p| Path(p.0))
            .map_err(|_| ApiError::invalid("Invalid path: a segment is malformed"))
    }
}

/// Refuses a back-end call without an API key before its body is read: an unauthenticated
/// caller learns nothing about the body it sent.
#[derive(Debug)]
pub(crate) struct ApiKeyGiven;

impl<S: Send + Sync> FromRequestParts<S> for ApiKeyGiven {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, ApiError> {
        match parts.headers.get("x-api-key") {
            Some(key) if !key.is_empty() => Ok(ApiKeyGiven),
            _ => Err(Error::BadApiKey.into()),
        }
    }
}
