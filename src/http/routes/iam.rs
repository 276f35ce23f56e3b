//! IAM back-office routes: the requestor is checked first, then the call acts on a user or
//! device of the requestor's application.

use std::sync::Arc;

use axum::{extract::State, http::HeaderMap, response::Response};
use latchkey_actors::{AdminUserPatch, Application, DevicePatch, Error, Requestor, UserRef};
use serde::Deserialize;
use serde_json::json;
use uuid::Uuid;

use crate::http::{
    AppState,
    envelope::{ApiError, done, success},
    extract::{ApiKeyGiven, Body, Path, Query, backend_app, path_uuid},
};

/// Query parameters every IAM route may carry.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct IamQuery {
    username: Option<String>,
    user_uuid: Option<String>,
    requestor_username: Option<String>,
    application_uuid: Option<String>,
}

/// The fields IAM bodies may carry besides their own.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct PatchBody {
    application_uuid: Option<String>,
    requestor_username: Option<String>,
    locked: Option<bool>,
    email: Option<String>,
    mobile_number: Option<String>,
    forbid_adding_devices: Option<bool>,
    device_name: Option<String>,
    purpose: Option<String>,
    ttl: Option<u64>,
}

/// The application and the checked requestor of an IAM call.
async fn requestor(
    state: &AppState,
    headers: &HeaderMap,
    query: &IamQuery,
    body: Option<&PatchBody>,
) -> Result<(Arc<Application>, Requestor), ApiError> {
    let body_app = body.and_then(|b| b.application_uuid.as_deref());
    let app = backend_app(
        state,
        headers,
        body_app.or(query.application_uuid.as_deref()),
    )?;
    let token = headers
        .get("x-requestor-token")
        .and_then(|v| v.to_str().ok())
        .map(str::trim);
    let named = query
        .requestor_username
        .as_deref()
        .or_else(|| body.and_then(|b| b.requestor_username.as_deref()));
    let requestor = state.engine.iam_requestor(&app, token, named).await?;
    Ok((app, requestor))
}

fn by_query(query: &IamQuery) -> Result<UserRef, ApiError> {
    match (&query.username, &query.user_uuid) {
        (Some(name), _) => Ok(UserRef::Username(name.clone())),
        (None, Some(uuid)) => Ok(UserRef::Uuid(path_uuid(uuid, Error::UserNotFound)?)),
        (None, None) => Err(Error::MissingField("username or userUuid").into()),
    }
}

fn by_path(user: &str) -> Result<UserRef, ApiError> {
    Ok(UserRef::Uuid(path_uuid(user, Error::UserNotFound)?))
}

fn audit(requestor: &Requestor, action: &str, target: &UserRef) {
    let target = match target {
        UserRef::Uuid(uuid) => uuid.to_string(),
        UserRef::Username(_) => "by-username".to_owned(),
    };
    tracing::info!(requestor = %requestor.username, action, target = %target, "IAM call");
}

fn user_patch(body: &PatchBody) -> AdminUserPatch {
    AdminUserPatch {
        locked: body.locked,
        email: body.email.clone(),
        mobile_number: body.mobile_number.clone(),
        forbid_adding_devices: body.forbid_adding_devices,
    }
}

pub(crate) async fn get_user(
    State(state): State<AppState>,
    _key: ApiKeyGiven,
    headers: HeaderMap,
    Query(query): Query<IamQuery>,
) -> Result<Response, ApiError> {
    let (app, who) = requestor(&state, &headers, &query, None).await?;
    let target = by_query(&query)?;
    audit(&who, "get_user", &target);
    Ok(success(state.engine.iam_user(&app, &target).await?))
}

pub(crate) async fn patch_user_by_query(
    State(state): State<AppState>,
    _key: ApiKeyGiven,
    headers: HeaderMap,
    Query(query): Query<IamQuery>,
    Body(body): Body<PatchBody>,
) -> Result<Response, ApiError> {
    let (app, who) = requestor(&state, &headers, &query, Some(&body)).await?;
    let target = by_query(&query)?;
    audit(&who, "patch_user", &target);
    state
        .engine
        .iam_patch_user(&app, &target, user_patch(&body))
        .await?;
    Ok(done())
}

pub(crate) async fn patch_user(
    State(state): State<AppState>,
    _key: ApiKeyGiven,
    headers: HeaderMap,
    Query(query): Query<IamQuery>,
    Path(user): Path<String>,
    Body(body): Body<PatchBody>,
) -> Result<Response, ApiError> {
    let (app, who) = requestor(&state, &headers, &query, Some(&body)).await?;
    let target = by_path(&user)?;
    audit(&who, "patch_user", &target);
    state
        .engine
        .iam_patch_user(&app, &target, user_patch(&body))
        .await?;
    Ok(done())
}

pub(crate) async fn delete_user(
    State(state): State<AppState>,
    _key: ApiKeyGiven,
    headers: HeaderMap,
    Query(query): Query<IamQuery>,
    Path(user): Path<String>,
) -> Result<Response, ApiError> {
    let (app, who) = requestor(&state, &headers, &query, None).await?;
    let target = by_path(&user)?;
    audit(&who, "delete_user", &target);
    state.engine.iam_delete_user(&app, &target).await?;
    Ok(done())
}

pub(crate) async fn devices(
    State(state): State<AppState>,
    _key: ApiKeyGiven,
    headers: HeaderMap,
    Query(query): Query<IamQuery>,
    Path(user): Path<String>,
) -> Result<Response, ApiError> {
    let (app, who) = requestor(&state, &headers, &query, None).await?;
    let target = by_path(&user)?;
    audit(&who, "list_devices", &target);
    let devices = state.engine.iam_devices(&app, &target).await?;
    Ok(success(json!({"devices": devices})))
}

pub(crate) async fn patch_device(
    State(state): State<AppState>,
    _key: ApiKeyGiven,
    headers: HeaderMap,
    Query(query): Query<IamQuery>,
    Path((user, device)): Path<(String, String)>,
    Body(body): Body<PatchBody>,
) -> Result<Response, ApiError> {
    let (app, who) = requestor(&state, &headers, &query, Some(&body)).await?;
    let target = by_path(&user)?;
    let device = path_uuid(&device, Error::DeviceNotFound)?;
    audit(&who, "patch_device", &target);
    let patch = DevicePatch {
        locked: body.locked,
        device_name: body.device_name,
    };
    state
        .engine
        .iam_patch_device(&app, &target, device, patch)
        .await?;
    Ok(done())
}

pub(crate) async fn delete_device(
    State(state): State<AppState>,
    _key: ApiKeyGiven,
    headers: HeaderMap,
    Query(query): Query<IamQuery>,
    Path((user, device)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let (app, who) = requestor(&state, &headers, &query, None).await?;
    let target = by_path(&user)?;
    let device: Uuid = path_uuid(&device, Error::DeviceNotFound)?;
    audit(&who, "delete_device", &target);
    state
        .engine
        .iam_delete_device(&app, &target, device)
        .await?;
    Ok(done())
}

pub(crate) async fn issue_otp(
    State(state): State<AppState>,
    _key: ApiKeyGiven,
    headers: HeaderMap,
    Query(query): Query<IamQuery>,
    Path(user): Path<String>,
    Body(body): Body<PatchBody>,
) -> Result<Response, ApiError> {
    let (app, who) = requestor(&state, &headers, &query, Some(&body)).await?;
    let target = by_path(&user)?;
    let purpose = body
        .purpose
        .as_deref()
        .ok_or(Error::OtpIncomplete("purpose is required"))?;
    audit(&who, "issue_otp", &target);
    Ok(success(
        state
            .engine
            .iam_issue_otp(&app, &target, purpose, body.ttl)
            .await?,
    ))
}
