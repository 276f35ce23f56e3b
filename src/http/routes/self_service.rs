//! Self-service: sign-up and adding a device, called by the customer's back end.

use axum::{extract::State, http::HeaderMap, response::Response};
use latchkey_actors::SignUp;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

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
    Ok(success(Created {
        activation_token: created.token,
        device_uuid: None,
        user_email: None,
    }))
}

/// A sign-up or add-device answer. The token is absent when Latchkey delivered it itself.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Created {
    #[serde(skip_serializing_if = "Option::is_none")]
    activation_token: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    device_uuid: Option<Uuid>,
    #[serde(skip_serializing_if = "Option::is_none")]
    user_email: Option<String>,
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
    Ok(success(Created {
        activation_token: added.token,
        device_uuid: added.device_uuid,
        user_email: Some(added.email),
    }))
}
