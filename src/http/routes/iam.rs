//! IAM back-office routes: the requestor is checked first, then the call acts on a user or
//! device of the requestor's application.

use std::sync::Arc;

use axum::{extract::State, http::HeaderMap, response::Response};
use latchkey_actors::{
    AdminUserPatch, Application, AuditEvent, AuditKind, DevicePatch, Error, Requestor, UserRef,
};
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
    let checked = state.engine.iam_requestor(&app, token, named).await;
    if let Err(refused) = &checked {
        // A refused requestor has no verified identity: the entry names none.
        let event = AuditEvent::failure(app.uuid, AuditKind::IamCall, refused)
            .field("action", "requestor_check");
        state.engine.audit().record(event);
    }
    Ok((app, checked?))
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

/// Writes the call to the audit log with its requestor, target and outcome.
fn audit<T>(
    state: &AppState,
    app: &Application,
    requestor: &Requestor,
    action: &'static str,
    target: &UserRef,
    result: &Result<T, Error>,
) {
    let user = match target {
        UserRef::Uuid(uuid) => Some(*uuid),
        UserRef::Username(_) => None,
    };
    let event = AuditEvent::of(app.uuid, AuditKind::IamCall, result)
        .requestor(requestor.subject.clone())
        .user(user)
        .field("action", action);
    state.engine.audit().record(event);
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
    let result = state.engine.iam_user(&app, &target).await;
    audit(&state, &app, &who, "get_user", &target, &result);
    Ok(success(result?))
}

pub(crate) async fn patch_user_by_query(
    State(state): State<AppState>,
    _key: ApiKeyGiven,
    headers: HeaderMap,
    Query(query): Query<IamQuery>,
    Body(body): Body<PatchBody>,
) -> Result<Response, ApiError> {
    let target = by_query(&query);
    patch_target(&state, &headers, &query, target, &body).await
}

pub(crate) async fn patch_user(
    State(state): State<AppState>,
    _key: ApiKeyGiven,
    headers: HeaderMap,
    Query(query): Query<IamQuery>,
    Path(user): Path<String>,
    Body(body): Body<PatchBody>,
) -> Result<Response, ApiError> {
    patch_target(&state, &headers, &query, by_path(&user), &body).await
}

/// A user patch, whether the user is named in the query or the path.
async fn patch_target(
    state: &AppState,
    headers: &HeaderMap,
    query: &IamQuery,
    target: Result<UserRef, ApiError>,
    body: &PatchBody,
) -> Result<Response, ApiError> {
    let (app, who) = requestor(state, headers, query, Some(body)).await?;
    let target = target?;
    let result = state
        .engine
        .iam_patch_user(&app, &target, user_patch(body))
        .await;
    audit(state, &app, &who, "patch_user", &target, &result);
    result?;
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
    let result = state.engine.iam_delete_user(&app, &target).await;
    audit(&state, &app, &who, "delete_user", &target, &result);
    result?;
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
    let result = state.engine.iam_devices(&app, &target).await;
    audit(&state, &app, &who, "list_devices", &target, &result);
    Ok(success(json!({"devices": result?})))
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
    let patch = DevicePatch {
        locked: body.locked,
        device_name: body.device_name,
    };
    let result = state
        .engine
        .iam_patch_device(&app, &target, device, patch)
        .await;
    audit(&state, &app, &who, "patch_device", &target, &result);
    result?;
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
    let result = state.engine.iam_delete_device(&app, &target, device).await;
    audit(&state, &app, &who, "delete_device", &target, &result);
    result?;
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
    let result = state
        .engine
        .iam_issue_otp(&app, &target, purpose, body.ttl)
        .await;
    audit(&state, &app, &who, "issue_otp", &target, &result);
    Ok(success(result?))
}
