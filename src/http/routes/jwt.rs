//! JWT routes: renew, public key, validate.

use axum::{extract::State, response::Response};
use latchkey_actors::Error;
use serde::Deserialize;
use serde_json::json;

use super::authentication::access_token;
use crate::http::{
    AppState,
    envelope::{ApiError, done, success},
    extract::{Caller, Query, parse_app},
};

pub(crate) async fn renew(
    State(state): State<AppState>,
    Caller(who): Caller,
) -> Result<Response, ApiError> {
    let token = state.engine.renew(&who)?;
    Ok(success(json!({"accessToken": access_token(&token)})))
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct AppQuery {
    application_uuid: Option<String>,
}

pub(crate) async fn public_key(
    State(state): State<AppState>,
    Query(query): Query<AppQuery>,
) -> Result<Response, ApiError> {
    let app = query
        .application_uuid
        .ok_or(Error::MissingField("applicationUuid"))?;
    let info = state.engine.public_key(parse_app(&app)?)?;
    Ok(success(json!({
        "publicKey": info.public_key,
        "algorithm": info.algorithm,
        "kid": info.kid,
        "jwks": info.jwks,
    })))
}

/// The extractor already checked signature, times, audience and revocation.
pub(crate) async fn validate(Caller(_who): Caller) -> Response {
    done()
}
