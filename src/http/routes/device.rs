//! Device routes: the caller's own devices.

use axum::{extract::State, response::Response};
use latchkey_actors::{DevicePatch, Error, HashedPin};
use serde::Deserialize;

use super::authentication::{Finished, ResetIssued};
use crate::http::{
    AppState,
    envelope::{ApiError, done, success},
    extract::{Body, Caller, Path, Query, path_uuid},
};

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Patch {
    locked: Option<bool>,
    device_name: Option<String>,
}

pub(crate) async fn patch(
    State(state): State<AppState>,
    Caller(who): Caller,
    Path(device): Path<String>,
    Body(req): Body<Patch>,
) -> Result<Response, ApiError> {
    let device = path_uuid(&device, Error::Forbidden)?;
    let patch = DevicePatch {
        locked: req.locked,
        device_name: req.device_name,
    };
    state.engine.patch_device(&who, device, patch).await?;
    Ok(done())
}

pub(crate) async fn delete(
    State(state): State<AppState>,
    Caller(who): Caller,
    Path(device): Path<String>,
) -> Result<Response, ApiError> {
    let device = path_uuid(&device, Error::Forbidden)?;
    state.engine.delete_device(&who, device).await?;
    Ok(done())
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct KeepQuery {
    auth_key_uuid: Option<String>,
}

pub(crate) async fn delete_auth_keys(
    State(state): State<AppState>,
    Caller(who): Caller,
    Path(device): Path<String>,
    Query(query): Query<KeepQuery>,
) -> Result<Response, ApiError> {
    let device = path_uuid(&device, Error::Forbidden)?;
    let keep = query
        .auth_key_uuid
        .ok_or(Error::MissingField("authKeyUuid"))?;
    let keep = path_uuid(&keep, Error::StaleAuthKey)?;
    state.engine.keep_only_auth_key(&who, device, keep).await?;
    Ok(done())
}

pub(crate) async fn forgot_pin(
    State(state): State<AppState>,
    Caller(who): Caller,
    Path(device): Path<String>,
) -> Result<Response, ApiError> {
    let device = path_uuid(&device, Error::Forbidden)?;
    let (token, email) = state.engine.device_forgot_pin(&who, device).await?;
    Ok(success(ResetIssued {
        reset_pin_token: token,
        user_email: email,
    }))
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ResetPin {
    hashed_pin: String,
    reset_pin_token: String,
}

pub(crate) async fn reset_pin(
    State(state): State<AppState>,
    Caller(who): Caller,
    Path(device): Path<String>,
    Body(req): Body<ResetPin>,
) -> Result<Response, ApiError> {
    let device = path_uuid(&device, Error::Forbidden)?;
    let pin = HashedPin::parse(&req.hashed_pin)?;
    let tokens = state
        .engine
        .device_reset_pin(&who, device, &req.reset_pin_token, pin)
        .await?;
    Ok(success(
        Finished {
            tokens,
            redirect_to: None,
        }
        .body(false),
    ))
}
