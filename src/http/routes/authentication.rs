//! Authentication: activation, login, logout and PIN reset.

use std::future::Future;

use axum::{extract::State, http::HeaderMap, response::Response};
use latchkey_actors::{Application, HashedPin, LoginRequest, Proof, Tokens};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::http::{
    AppState,
    envelope::{ApiError, done, success},
    extract::{ApiKeyGiven, Body, Caller, Query, backend_app},
    rate_limit::TargetKind,
};

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ActivateUser {
    #[serde(default)]
    application_uuid: Option<String>,
    pub(crate) username: String,
    activation_token: String,
    hashed_pin: String,
    device_name: String,
}

pub(crate) async fn activate_user(
    State(state): State<AppState>,
    _key: ApiKeyGiven,
    Query(mode): Query<OidcMode>,
    headers: HeaderMap,
    Body(req): Body<ActivateUser>,
) -> Result<Response, ApiError> {
    let app = backend_app(&state, &headers, req.application_uuid.as_deref())?;
    let done = activate_user_with(&state, &app, &mode, req).await?;
    Ok(success(done.body(true)))
}

/// Activation of a new user's first device, in either mode.
pub(crate) async fn activate_user_with(
    state: &AppState,
    app: &Application,
    mode: &OidcMode,
    req: ActivateUser,
) -> Result<Finished, ApiError> {
    let pin = HashedPin::parse(&req.hashed_pin)?;
    let login = state.engine.activate_user(
        app,
        &req.username,
        &req.activation_token,
        pin,
        &req.device_name,
    );
    finish(state, app, mode, Proof::DeliveredToken, login).await
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ActivateDevice {
    #[serde(default)]
    application_uuid: Option<String>,
    pub(crate) username: String,
    device_uuid: String,
    activation_token: String,
    hashed_pin: String,
}

pub(crate) async fn activate_device(
    State(state): State<AppState>,
    _key: ApiKeyGiven,
    Query(mode): Query<OidcMode>,
    headers: HeaderMap,
    Body(req): Body<ActivateDevice>,
) -> Result<Response, ApiError> {
    let app = backend_app(&state, &headers, req.application_uuid.as_deref())?;
    let done = activate_device_with(&state, &app, &mode, req).await?;
    Ok(success(done.body(false)))
}

/// Activation of an added device, in either mode.
pub(crate) async fn activate_device_with(
    state: &AppState,
    app: &Application,
    mode: &OidcMode,
    req: ActivateDevice,
) -> Result<Finished, ApiError> {
    let pin = HashedPin::parse(&req.hashed_pin)?;
    let device = device_id(&req.device_uuid)?;
    let login =
        state
            .engine
            .activate_device(app, &req.username, device, &req.activation_token, pin);
    finish(state, app, mode, Proof::DeliveredToken, login).await
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Login {
    #[serde(default)]
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
    Query(mode): Query<OidcMode>,
    headers: HeaderMap,
    Body(req): Body<Login>,
) -> Result<Response, ApiError> {
    let app = backend_app(&state, &headers, req.application_uuid.as_deref())?;
    let done = login_with(&state, &app, &mode, req).await?;
    let mut body = json!({
        "accessToken": done.access_token(),
        "authKey": done.tokens.auth_key,
        "authKeyUuid": done.tokens.auth_key_uuid,
    });
    if let (Some(to), Some(fields)) = (&done.redirect_to, body.as_object_mut()) {
        fields.insert("redirectTo".into(), json!(to));
    }
    Ok(success(body))
}

/// A device login, in either mode.
pub(crate) async fn login_with(
    state: &AppState,
    app: &Application,
    mode: &OidcMode,
    req: Login,
) -> Result<Finished, ApiError> {
    let pin = match (req.hashed_pin, req.pinless_device) {
        (Some(pin), _) => Some(HashedPin::parse(&pin)?),
        (None, true) => None,
        (None, false) => return Err(latchkey_actors::Error::MissingField("hashedPin").into()),
    };
    let device = device_id(&req.device_uuid)?;
    state
        .limits
        .check(TargetKind::Login, app.uuid, &device.to_string())?;
    let proof = if pin.is_some() {
        Proof::DevicePin
    } else {
        Proof::Device
    };
    let request = LoginRequest {
        username: req.username,
        device,
        auth_key: req.auth_key,
        pin,
    };
    finish(state, app, mode, proof, state.engine.login(app, request)).await
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
    #[serde(default)]
    application_uuid: Option<String>,
    pub(crate) username: String,
    pub(crate) device_uuid: String,
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
    #[serde(default)]
    application_uuid: Option<String>,
    pub(crate) username: String,
    device_uuid: String,
    hashed_pin: String,
    reset_pin_token: String,
}

pub(crate) async fn reset_pin(
    State(state): State<AppState>,
    _key: ApiKeyGiven,
    Query(mode): Query<OidcMode>,
    headers: HeaderMap,
    Body(req): Body<ResetPin>,
) -> Result<Response, ApiError> {
    let app = backend_app(&state, &headers, req.application_uuid.as_deref())?;
    let done = reset_pin_with(&state, &app, &mode, req).await?;
    Ok(success(done.body(false)))
}

/// A PIN reset with a delivered token, in either mode.
pub(crate) async fn reset_pin_with(
    state: &AppState,
    app: &Application,
    mode: &OidcMode,
    req: ResetPin,
) -> Result<Finished, ApiError> {
    let pin = HashedPin::parse(&req.hashed_pin)?;
    let device = device_id(&req.device_uuid)?;
    let login = state
        .engine
        .reset_pin(app, &req.username, device, &req.reset_pin_token, pin);
    finish(state, app, mode, Proof::DeliveredToken, login).await
}

/// The OIDC mode's query parameters: with an `htOidTxid`, a successful login answers with
/// an authorization code (`OAUTH_CODE`) for that sign-in request instead of a JWT.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct OidcMode {
    pub(crate) nonce: Option<String>,
    #[serde(rename = "htOidTxid")]
    pub(crate) ht_oid_txid: Option<String>,
}

/// A finished activation, login or reset.
#[derive(Debug)]
pub(crate) struct Finished {
    pub(crate) tokens: Tokens,
    /// In OIDC mode: where to send the browser (`redirect_uri?code=…&state=…`).
    pub(crate) redirect_to: Option<String>,
}

impl Finished {
    pub(crate) fn access_token(&self) -> Value {
        let kind = if self.redirect_to.is_some() {
            "OAUTH_CODE"
        } else {
            "JWT"
        };
        json!({"token": self.tokens.access_token, "type": kind})
    }

    /// The fields of an activation or reset answer.
    pub(crate) fn body(&self, with_user: bool) -> Value {
        let tokens = &self.tokens;
        let mut body = json!({
            "accessToken": self.access_token(),
            "authKey": tokens.auth_key,
            "authKeyUuid": tokens.auth_key_uuid,
            "deviceUuid": tokens.device_uuid,
        });
        if let Some(fields) = body.as_object_mut() {
            if with_user {
                fields.insert("userUuid".into(), json!(tokens.user_uuid));
            }
            // OIDC mode: where the page sends the browser (`redirect_uri?code&state&iss`).
            if let Some(to) = &self.redirect_to {
                fields.insert("redirectTo".into(), json!(to));
            }
        }
        body
    }
}

/// Runs a login in the mode the query asks for. In OIDC mode the sign-in request is held
/// before the login runs, so that a dead `htOidTxid` costs the device nothing (its authKey
/// is not rotated for an answer the caller could not use).
async fn finish(
    state: &AppState,
    app: &Application,
    mode: &OidcMode,
    proof: Proof,
    login: impl Future<Output = latchkey_actors::Result<Tokens>>,
) -> Result<Finished, ApiError> {
    let Some(txid) = &mode.ht_oid_txid else {
        return Ok(Finished {
            tokens: login.await?,
            redirect_to: None,
        });
    };
    let held = state
        .engine
        .oidc_begin(app, txid, mode.nonce.as_deref())
        .await?;
    let issued = state.engine.oidc_finish(held, login.await, proof).await?;
    Ok(Finished {
        tokens: issued.tokens,
        redirect_to: Some(issued.redirect_to),
    })
}

pub(crate) fn access_token(jwt: &str) -> Value {
    json!({"token": jwt, "type": "JWT"})
}

/// A malformed deviceUuid is a device that does not exist, with the same answer.
fn device_id(raw: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(raw).map_err(|_| latchkey_actors::Error::DeviceNotFound.into())
}
