//! Authentication: activation, login, logout and PIN reset.

use axum::{extract::State, http::HeaderMap, response::Response};
use latchkey_actors::{HashedPin, LoginRequest, Tokens};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::http::{
    AppState,
    envelope::{ApiError, done, success},
    extract::{ApiKeyGiven, Body, Caller, backend_app},
    rate_limit::TargetKind,
};

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ActivateUser {
    application_uuid: Option<String>,
    username: String,
    activation_token: String,
    hashed_pin: String,
    device_name: String,
}

pub(crate) async fn activate_user(
    State(state): State<AppState>,
    _key: ApiKeyGiven,
    headers: HeaderMap,
    Body(req): Body<ActivateUser>,
) -> Result<Response, ApiError> {
    let app = backend_app(&state, &headers, req.application_uuid.as_deref())?;
    let pin = HashedPin::parse(&req.hashed_pin)?;
    let tokens = state
        .engine
        .activate_user(
            &app,
            &req.username,
            &req.activation_token,
            pin,
            &req.device_name,
        )
        .await?;
    Ok(success(grant(&tokens, true)))
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ActivateDevice {
    application_uuid: Option<String>,
    username: String,
    device_uuid: String,
    activation_token: String,
    hashed_pin: String,
}

pub(crate) async fn activate_device(
    State(state): State<AppState>,
    _key: ApiKeyGiven,
    headers: HeaderMap,
    Body(req): Body<ActivateDevice>,
) -> Result<Response, ApiError> {
    let app = backend_app(&state, &headers, req.application_uuid.as_deref())?;
    let pin = HashedPin::parse(&req.hashed_pin)?;
    let device = device_id(&req.device_uuid)?;
    let tokens = state
        .engine
        .activate_device(&app, &req.username, device, &req.activation_token, pin)
        .await?;
    Ok(success(grant(&tokens, false)))
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Login {
    application_uuid: Option<String>,
    username: String,
    device_uuid: String,
    auth_key: String,
    hashed_pin: Option<String>,
    #[serde(default)]
    pinless_device: bool,
}

pub(crate) async fn login(
    State(state): State<AppState>,
    _key: ApiKeyGiven,
    headers: HeaderMap,
    Body(req): Body<Login>,
) -> Result<Response, ApiError> {
    let app = backend_app(&state, &headers, req.application_uuid.as_deref())?;
    let pin = match (req.hashed_pin, req.pinless_device) {
        (Some(pin), _) => Some(HashedPin::parse(&pin)?),
        (None, true) => None,
        (None, false) => return Err(latchkey_actors::Error::MissingField("hashedPin").into()),
    };
    let device = device_id(&req.device_uuid)?;
    state
        .limits
        .check(TargetKind::Login, app.uuid, &device.to_string())?;
    let request = LoginRequest {
        username: req.username,
        device,
        auth_key: req.auth_key,
        pin,
    };
    let tokens = state.engine.login(&app, request).await?;
    Ok(success(json!({
        "accessToken": access_token(&tokens.access_token),
        "authKey": tokens.auth_key,
        "authKeyUuid": tokens.auth_key_uuid,
    })))
}

pub(crate) async fn logout(
    State(state): State<AppState>,
    Caller(who): Caller,
) -> Result<Response, ApiError> {
    state.engine.logout(&who).await?;
    Ok(done())
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ForgotPin {
    application_uuid: Option<String>,
    username: String,
    device_uuid: String,
}

pub(crate) async fn forgot_pin(
    State(state): State<AppState>,
    _key: ApiKeyGiven,
    headers: HeaderMap,
    Body(req): Body<ForgotPin>,
) -> Result<Response, ApiError> {
    let app = backend_app(&state, &headers, req.application_uuid.as_deref())?;
    let device = device_id(&req.device_uuid)?;
    let (token, email) = state.engine.forgot_pin(&app, &req.username, device).await?;
    Ok(success(ResetIssued {
        reset_pin_token: token,
        user_email: email,
    }))
}

/// A forgot-PIN answer. The token is absent when Latchkey delivered it itself.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ResetIssued {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) reset_pin_token: Option<String>,
    pub(crate) user_email: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ResetPin {
    application_uuid: Option<String>,
    username: String,
    device_uuid: String,
    hashed_pin: String,
    reset_pin_token: String,
}

pub(crate) async fn reset_pin(
    State(state): State<AppState>,
    _key: ApiKeyGiven,
    headers: HeaderMap,
    Body(req): Body<ResetPin>,
) -> Result<Response, ApiError> {
    let app = backend_app(&state, &headers, req.application_uuid.as_deref())?;
    let pin = HashedPin::parse(&req.hashed_pin)?;
    let device = device_id(&req.device_uuid)?;
    let tokens = state
        .engine
        .reset_pin(&app, &req.username, device, &req.reset_pin_token, pin)
        .await?;
    Ok(success(grant(&tokens, false)))
}

/// The fields of an activation or reset answer.
pub(crate) fn grant(tokens: &Tokens, with_user: bool) -> Value {
    let mut body = json!({
        "accessToken": access_token(&tokens.access_token),
        "authKey": tokens.auth_key,
        "authKeyUuid": tokens.auth_key_uuid,
        "deviceUuid": tokens.device_uuid,
    });
    if let (true, Some(fields)) = (with_user, body.as_object_mut()) {
        fields.insert("userUuid".into(), json!(tokens.user_uuid));
    }
    body
}

pub(crate) fn access_token(jwt: &str) -> Value {
    json!({"token": jwt, "type": "JWT"})
}

/// A malformed deviceUuid is a device that does not exist, with the same answer.
fn device_id(raw: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(raw).map_err(|_| latchkey_actors::Error::DeviceNotFound.into())
}
