//! The built-in login page and the routes it talks to.
//!
//! A page in a browser cannot hold the application's API key, so these routes take none:
//! instead each call names a live sign-in request (`htOidTxid`), which fixes the application,
//! and they are limited per client address, and those that send or redeem a mailed token also
//! per username (`login_page_per_user`). Tokens the back-end routes would return
//! (activation, reset) are never returned here: they reach the user by the application's
//! delivery channel, which is what proves the e-mail address.

use axum::{
    extract::State,
    http::{HeaderValue, header},
    response::{IntoResponse, Response},
};
use latchkey_actors::{Application, Channel, Error, SignUp};
use serde::Deserialize;
use serde_json::json;

use super::authentication::{
    ActivateDevice, ActivateUser, Finished, ForgotPin, Login, OidcMode, ResetPin,
    activate_device_with, activate_user_with, login_with, reset_pin_with,
};
use crate::http::{
    AppState,
    envelope::{ApiError, done, success},
    extract::{Body, Query},
    rate_limit::{TargetKind, username_key},
};

const INDEX: &str = include_str!("../login/index.html");
const SCRIPT: &str = include_str!("../login/login.js");
const STYLE: &str = include_str!("../login/login.css");

/// The page itself; it reads its parameters from its own URL.
pub(crate) async fn page() -> Response {
    asset(INDEX, "text/html; charset=utf-8")
}

pub(crate) async fn script() -> Response {
    asset(SCRIPT, "text/javascript; charset=utf-8")
}

pub(crate) async fn style() -> Response {
    asset(STYLE, "text/css; charset=utf-8")
}

fn asset(body: &'static str, kind: &'static str) -> Response {
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(kind));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; \
             img-src 'self' data:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    response
}

/// What the page knows about its sign-in request.
pub(crate) async fn context(
    State(state): State<AppState>,
    Query(mode): Query<OidcMode>,
) -> Result<Response, ApiError> {
    let txid = mode.ht_oid_txid.ok_or(Error::MissingField("htOidTxid"))?;
    let found = state.engine.oidc_login_context(&txid).await?;
    Ok(success(json!({
        "applicationUuid": found.app.uuid,
        "applicationName": found.app.name,
        "clientId": found.client_id,
        "loginHint": found.login_hint,
        "openSignup": found.app.open_signup,
    })))
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct NewUser {
    username: String,
    email: String,
}

pub(crate) async fn sign_up(
    State(state): State<AppState>,
    Query(mode): Query<OidcMode>,
    Body(req): Body<NewUser>,
) -> Result<Response, ApiError> {
    let app = request_app(&state, &mode).await?;
    per_user(&state, &app, &req.username)?;
    if !app.open_signup {
        return Err(Error::SignUpClosed("Sign-up is not open for this application").into());
    }
    delivers(&app)?;
    let request = SignUp {
        username: req.username,
        email: req.email,
        mobile_number: None,
    };
    // The same answer whether or not the username is taken: this route is open to anyone.
    state.engine.sign_up_quietly(&app, request).await?;
    Ok(success(json!({})))
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct NewDevice {
    username: String,
    device_name: String,
}

pub(crate) async fn add_device(
    State(state): State<AppState>,
    Query(mode): Query<OidcMode>,
    Body(req): Body<NewDevice>,
) -> Result<Response, ApiError> {
    let app = request_app(&state, &mode).await?;
    per_user(&state, &app, &req.username)?;
    delivers(&app)?;
    let added = state
        .engine
        .add_device(&app, &req.username, &req.device_name)
        .await;
    let device = match added {
        Ok(added) => added.device_uuid,
        // An unauthenticated caller must not learn which usernames exist: an unknown user
        // (or one who may not add devices) gets the same answer, and no e-mail is sent.
        Err(Error::UserNotFound | Error::AddingDevicesForbidden) => Some(uuid::Uuid::new_v4()),
        Err(other) => return Err(other.into()),
    };
    Ok(success(json!({"deviceUuid": device})))
}

pub(crate) async fn forgot_pin(
    State(state): State<AppState>,
    Query(mode): Query<OidcMode>,
    Body(req): Body<ForgotPin>,
) -> Result<Response, ApiError> {
    let app = request_app(&state, &mode).await?;
    per_user(&state, &app, &req.username)?;
    delivers(&app)?;
    let device = uuid::Uuid::parse_str(&req.device_uuid).map_err(|_| Error::DeviceNotFound)?;
    state.engine.forgot_pin(&app, &req.username, device).await?;
    Ok(done())
}

pub(crate) async fn activate_user(
    State(state): State<AppState>,
    Query(mode): Query<OidcMode>,
    Body(req): Body<ActivateUser>,
) -> Result<Response, ApiError> {
    let app = request_app(&state, &mode).await?;
    per_user(&state, &app, &req.username)?;
    let finished = activate_user_with(&state, &app, &mode, req).await?;
    Ok(answer(&finished, true))
}

pub(crate) async fn activate_device(
    State(state): State<AppState>,
    Query(mode): Query<OidcMode>,
    Body(req): Body<ActivateDevice>,
) -> Result<Response, ApiError> {
    let app = request_app(&state, &mode).await?;
    per_user(&state, &app, &req.username)?;
    let finished = activate_device_with(&state, &app, &mode, req).await?;
    Ok(answer(&finished, false))
}

pub(crate) async fn login(
    State(state): State<AppState>,
    Query(mode): Query<OidcMode>,
    Body(req): Body<Login>,
) -> Result<Response, ApiError> {
    let app = request_app(&state, &mode).await?;
    let finished = login_with(&state, &app, &mode, req).await?;
    Ok(answer(&finished, false))
}

pub(crate) async fn reset_pin(
    State(state): State<AppState>,
    Query(mode): Query<OidcMode>,
    Body(req): Body<ResetPin>,
) -> Result<Response, ApiError> {
    let app = request_app(&state, &mode).await?;
    per_user(&state, &app, &req.username)?;
    let finished = reset_pin_with(&state, &app, &mode, req).await?;
    Ok(answer(&finished, false))
}

/// The application of the sign-in request the call names; every page call needs one.
async fn request_app(
    state: &AppState,
    mode: &OidcMode,
) -> Result<std::sync::Arc<Application>, ApiError> {
    let txid = mode
        .ht_oid_txid
        .as_deref()
        .ok_or(Error::MissingField("htOidTxid"))?;
    Ok(state.engine.oidc_request_app(txid).await?)
}

/// Counts a call that sends or redeems a mailed token against its username. The page has
/// no API key, so this is what stops a caller from asking for fresh six-digit tokens (each
/// with its own attempts) until one guess lands; a PIN login is limited per device instead.
fn per_user(state: &AppState, app: &Application, username: &str) -> Result<(), ApiError> {
    state
        .limits
        .check(TargetKind::LoginPage, app.uuid, &username_key(username))
}

/// The page can only offer flows whose token reaches the user some other way.
fn delivers(app: &Application) -> Result<(), ApiError> {
    if app.settings.delivery.channel == Channel::None {
        return Err(Error::NoDelivery.into());
    }
    Ok(())
}

fn answer(finished: &Finished, with_user: bool) -> Response {
    success(finished.body(with_user))
}
