//! Self-service: sign-up and adding a device, called by the customer's back end.

use axum::{extract::State, http::HeaderMap, response::Response};
use latchkey_actors::SignUp;
use serde::Deserialize;
use serde_json::json;

use crate::http::{
    AppState,
    envelope::{ApiError, success},
    extract::{ApiKeyGiven, Body, backend_app},
};

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct NewUser {
    application_uuid: Option<String>,
    username: String,
    email: String,
    mobile_number: Option<String>,
}

pub(crate) async fn create_user(
    State(state): State<AppState>,
    _key: ApiKeyGiven,
    headers: HeaderMap,
    Body(req): Body<NewUser>,
) -> Result<Response, ApiError> {
    let app = backend_app(&state, &headers, req.application_uuid.as_deref())?;
    let request = SignUp {
        username: req.username,
        email: req.email,
        mobile_number: req.mobile_number,
    };
    let created = state.engine.sign_up(&app, request).await?;
    Ok(success(json!({"activationToken": created.token})))
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct NewDevice {
    application_uuid: Option<String>,
    username: String,
    device_name: String,
}

pub(crate) async fn create_device(
    State(state): State<AppState>,
    _key: ApiKeyGiven,
    headers: HeaderMap,
    Body(req): Body<NewDevice>,
) -> Result<Response, ApiError> {
    let app = backend_app(&state, &headers, req.application_uuid.as_deref())?;
    let added = state
        .engine
        .add_device(&app, &req.username, &req.device_name)
        .await?;
    Ok(success(json!({
        "activationToken": added.token,
        "deviceUuid": added.device_uuid,
        "userEmail": added.email,
    })))
}
