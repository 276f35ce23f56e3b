//! User routes: the caller's own user and devices.

use axum::{extract::State, response::Response};
use latchkey_actors::{Error, UserPatch};
use serde::Deserialize;
use serde_json::json;

use crate::http::{
    AppState,
    envelope::{ApiError, done, success},
    extract::{Body, Caller, Path, path_uuid},
};

pub(crate) async fn current(
    State(state): State<AppState>,
    Caller(who): Caller,
) -> Result<Response, ApiError> {
    let view = state.engine.user_view(&who, who.user).await?;
    Ok(success(view))
}

pub(crate) async fn get(
    State(state): State<AppState>,
    Caller(who): Caller,
    Path(user): Path<String>,
) -> Result<Response, ApiError> {
    let user = path_uuid(&user, Error::UserNotFound)?;
    Ok(success(state.engine.user_view(&who, user).await?))
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Patch {
    email: Option<String>,
    mobile_number: Option<String>,
}

pub(crate) async fn patch(
    State(state): State<AppState>,
    Caller(who): Caller,
    Path(user): Path<String>,
    Body(req): Body<Patch>,
) -> Result<Response, ApiError> {
    let user = path_uuid(&user, Error::UserNotFound)?;
    let patch = UserPatch {
        email: req.email,
        mobile_number: req.mobile_number,
    };
    state.engine.patch_user(&who, user, patch).await?;
    Ok(done())
}

pub(crate) async fn delete(
    State(state): State<AppState>,
    Caller(who): Caller,
    Path(user): Path<String>,
) -> Result<Response, ApiError> {
    let user = path_uuid(&user, Error::UserNotFound)?;
    state.engine.delete_user(&who, user).await?;
    Ok(done())
}

pub(crate) async fn devices(
    State(state): State<AppState>,
    Caller(who): Caller,
    Path(user): Path<String>,
) -> Result<Response, ApiError> {
    let user = path_uuid(&user, Error::UserNotFound)?;
    let devices = state.engine.devices(&who, user).await?;
    Ok(success(json!({"devices": devices})))
}
