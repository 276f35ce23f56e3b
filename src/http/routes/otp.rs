//! One-time PIN routes: back-end (self-service, anonymous, validate) and the user's own.

use axum::{extract::State, http::HeaderMap, response::Response};
use latchkey_actors::{Error, OtpSubject};
use serde::Deserialize;
use serde_json::json;
use uuid::Uuid;

use crate::http::{
    AppState,
    envelope::{ApiError, done, success},
    extract::{ApiKeyGiven, Body, Caller, Path, backend_app, path_uuid},
    rate_limit::{TargetKind, username_key},
};

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct SelfServiceOtp {
    application_uuid: Option<String>,
    username: String,
    purpose: String,
}

pub(crate) async fn self_service_issue(
    State(state): State<AppState>,
    _key: ApiKeyGiven,
    headers: HeaderMap,
    Body(req): Body<SelfServiceOtp>,
) -> Result<Response, ApiError> {
    let app = backend_app(&state, &headers, req.application_uuid.as_deref())?;
    state.limits.check(
        TargetKind::OtpGenerate,
        app.uuid,
        &username_key(&req.username),
    )?;
    let subject = OtpSubject::Username(req.username);
    Ok(success(
        state
            .engine
            .issue_user_otp(&app, subject, &req.purpose)
            .await?,
    ))
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct SelfServiceValidate {
    application_uuid: Option<String>,
    username: String,
    purpose: String,
    otp: String,
}

pub(crate) async fn self_service_validate(
    State(state): State<AppState>,
    _key: ApiKeyGiven,
    headers: HeaderMap,
    Body(req): Body<SelfServiceValidate>,
) -> Result<Response, ApiError> {
    let app = backend_app(&state, &headers, req.application_uuid.as_deref())?;
    state.limits.check(
        TargetKind::OtpValidate,
        app.uuid,
        &username_key(&req.username),
    )?;
    let subject = OtpSubject::Username(req.username);
    state
        .engine
        .validate_user_otp(&app, subject, &req.purpose, &req.otp)
        .await?;
    Ok(done())
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct AnonymousOtp {
    application_uuid: Option<String>,
    purpose: String,
    email: Option<String>,
    mobile_number: Option<String>,
}

pub(crate) async fn anonymous_issue(
    State(state): State<AppState>,
    _key: ApiKeyGiven,
    headers: HeaderMap,
    Body(req): Body<AnonymousOtp>,
) -> Result<Response, ApiError> {
    let app = backend_app(&state, &headers, req.application_uuid.as_deref())?;
    let target = req
        .email
        .as_deref()
        .or(req.mobile_number.as_deref())
        .unwrap_or("anonymous");
    state
        .limits
        .check(TargetKind::OtpGenerate, app.uuid, &username_key(target))?;
    Ok(success(
        state
            .engine
            .issue_anonymous_otp(&app, &req.purpose, (req.email, req.mobile_number))
            .await?,
    ))
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct AnonymousValidate {
    application_uuid: Option<String>,
    otp_uuid: String,
    purpose: String,
    otp: String,
}

pub(crate) async fn anonymous_validate(
    State(state): State<AppState>,
    _key: ApiKeyGiven,
    headers: HeaderMap,
    Body(req): Body<AnonymousValidate>,
) -> Result<Response, ApiError> {
    let app = backend_app(&state, &headers, req.application_uuid.as_deref())?;
    state
        .limits
        .check(TargetKind::OtpValidate, app.uuid, &req.otp_uuid)?;
    let otp_uuid = Uuid::parse_str(&req.otp_uuid).map_err(|_| Error::OtpDead)?;
    state
        .engine
        .validate_anonymous_otp(&app, otp_uuid, &req.purpose, &req.otp)
        .await?;
    Ok(done())
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Validate {
    application_uuid: Option<String>,
    username: Option<String>,
    user_uuid: Option<String>,
    purpose: String,
    otp: String,
}

pub(crate) async fn validate(
    State(state): State<AppState>,
    _key: ApiKeyGiven,
    headers: HeaderMap,
    Body(req): Body<Validate>,
) -> Result<Response, ApiError> {
    let app = backend_app(&state, &headers, req.application_uuid.as_deref())?;
    let target = req
        .username
        .as_deref()
        .or(req.user_uuid.as_deref())
        .unwrap_or_default();
    state
        .limits
        .check(TargetKind::OtpValidate, app.uuid, &username_key(target))?;
    let subject = match (req.username, req.user_uuid) {
        (Some(name), _) => OtpSubject::Username(name),
        (None, Some(uuid)) => {
            OtpSubject::UserUuid(Uuid::parse_str(&uuid).map_err(|_| Error::OtpDead)?)
        }
        (None, None) => return Err(Error::OtpIncomplete("username or userUuid is required").into()),
    };
    state
        .engine
        .validate_user_otp(&app, subject, &req.purpose, &req.otp)
        .await?;
    Ok(done())
}

pub(crate) async fn own_list(
    State(state): State<AppState>,
    Caller(who): Caller,
    Path(user): Path<String>,
) -> Result<Response, ApiError> {
    let user = path_uuid(&user, Error::UserNotFound)?;
    Ok(success(
        json!({"otps": state.engine.pending_otps(&who, user)?}),
    ))
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct OwnIssue {
    purpose: String,
}

pub(crate) async fn own_issue(
    State(state): State<AppState>,
    Caller(who): Caller,
    Path(user): Path<String>,
    Body(req): Body<OwnIssue>,
) -> Result<Response, ApiError> {
    let user = path_uuid(&user, Error::UserNotFound)?;
    state
        .limits
        .check(TargetKind::OtpGenerate, who.app.uuid, &user.to_string())?;
    Ok(success(
        state.engine.issue_own_otp(&who, user, &req.purpose).await?,
    ))
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct OwnValidate {
    purpose: String,
    otp: String,
}

pub(crate) async fn own_validate(
    State(state): State<AppState>,
    Caller(who): Caller,
    Path(user): Path<String>,
    Body(req): Body<OwnValidate>,
) -> Result<Response, ApiError> {
    let user = path_uuid(&user, Error::UserNotFound)?;
    state
        .limits
        .check(TargetKind::OtpValidate, who.app.uuid, &user.to_string())?;
    state
        .engine
        .validate_own_otp(&who, user, &req.purpose, &req.otp)
        .await?;
    Ok(done())
}
