//! The device and user routes for their owner: rename, lock and unlock, auth-key cleanup, a
//! second device, the device's own PIN reset, user details, and deleting the user.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::helpers::{Device, TestApp, code};

/// Adds and activates another device (PIN "1234") for `first`'s user.
pub(crate) async fn second_device(app: &TestApp, first: &Device) -> Device {
    let body = json!({"applicationUuid": app.app, "username": first.username,
                      "deviceName": "second device"});
    let (status, added) = app.backend("/self-service/device", &body).await;
    assert_eq!(status, StatusCode::OK, "add device: {added}");
    assert_eq!(
        added["userEmail"],
        format!("{}@example.test", first.username.to_lowercase())
    );
    let mut device = Device::new(&first.username);
    device.user_uuid = first.user_uuid.clone();
    let device_uuid = added["deviceUuid"].as_str().unwrap();
    let body = json!({"applicationUuid": app.app, "username": first.username,
                      "deviceUuid": device_uuid,
                      "activationToken": added["activationToken"],
                      "hashedPin": device.hashed_pin()});
    let (status, resp) = app.backend("/authentication/activate/device", &body).await;
    assert_eq!(status, StatusCode::OK, "activate device: {resp}");
    assert_eq!(resp["deviceUuid"], device_uuid);
    device.take(&resp);
    device
}

/// The user's device list, by deviceUuid.
async fn device_entry(app: &TestApp, d: &Device, device_uuid: &str) -> Value {
    let path = format!("/user/{}/device", d.user_uuid);
    let (status, resp) = app.bearer(Method::GET, &path, &d.token, None).await;
    assert_eq!(status, StatusCode::OK, "{resp}");
    resp["devices"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["deviceUuid"] == device_uuid)
        .cloned()
        .unwrap_or_else(|| panic!("device {device_uuid} not listed: {resp}"))
}

async fn patch_device(app: &TestApp, token: &str, device_uuid: &str, body: &Value) {
    let path = format!("/device/{device_uuid}");
    let (status, resp) = app.bearer(Method::PATCH, &path, token, Some(body)).await;
    assert_eq!(status, StatusCode::OK, "PATCH {path} {body}: {resp}");
    assert_eq!(resp["responseStatus"]["status"], "SUCCESS");
}

#[tokio::test]
async fn an_owner_renames_a_device_and_the_list_shows_the_new_name() {
    let app = TestApp::spawn().await;
    let d = app.new_device("Renamer").await;
    assert_eq!(
        device_entry(&app, &d, &d.device_uuid).await["deviceName"],
        "test device"
    );

    patch_device(
        &app,
        &d.token,
        &d.device_uuid,
        &json!({"deviceName": "kitchen tablet"}),
    )
    .await;

    let entry = device_entry(&app, &d, &d.device_uuid).await;
    assert_eq!(entry["deviceName"], "kitchen tablet");
    assert_eq!(entry["locked"], false);
    // A rename is not a lock: the device still logs in.
    let (status, resp) = app.login(&d).await;
    assert_eq!(status, StatusCode::OK, "{resp}");
}

#[tokio::test]
async fn an_owner_locks_a_device_from_another_device_and_unlocks_it_again() {
    let app = TestApp::spawn().await;
    let mut phone = app.new_device("Locker").await;
    let tablet = second_device(&app, &phone).await;

    patch_device(
        &app,
        &tablet.token,
        &phone.device_uuid,
        &json!({"locked": true}),
    )
    .await;
    assert_eq!(
        device_entry(&app, &tablet, &phone.device_uuid).await["locked"],
        true
    );
    assert_eq!(
        device_entry(&app, &tablet, &tablet.device_uuid).await["locked"],
        false
    );
    let (status, resp) = app.login(&phone).await;
    assert_eq!(
        (status, code(&resp)),
        (StatusCode::BAD_REQUEST, "AN-AUTH-1031"),
        "{resp}"
    );

    patch_device(
        &app,
        &tablet.token,
        &phone.device_uuid,
        &json!({"locked": false}),
    )
    .await;
    assert_eq!(
        device_entry(&app, &tablet, &phone.device_uuid).await["locked"],
        false
    );
    let (status, resp) = app.login(&phone).await;
    assert_eq!(status, StatusCode::OK, "{resp}");
    phone.take(&resp);
    let (status, _) = app
        .bearer(Method::GET, "/jwt/validate", &phone.token, None)
        .await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn deleting_other_auth_keys_succeeds_with_the_current_record_and_refuses_an_old_one() {
    let app = TestApp::spawn().await;
    let token = app.sign_up("Keeper").await;
    let mut d = Device::new("Keeper");
    let (status, activated) = app.activate(&d, &token).await;
    assert_eq!(status, StatusCode::OK, "{activated}");
    d.take(&activated);
    let first_record = activated["authKeyUuid"].as_str().unwrap().to_owned();

    let (status, resp) = app.login(&d).await;
    assert_eq!(status, StatusCode::OK, "{resp}");
    d.take(&resp);
    let current_record = resp["authKeyUuid"].as_str().unwrap().to_owned();
    assert_ne!(current_record, first_record);

    let path = |k: &str| format!("/device/{}/auth-key?authKeyUuid={k}", d.device_uuid);
    let (status, resp) = app
        .bearer(Method::DELETE, &path(&first_record), &d.token, None)
        .await;
    assert_eq!(
        (status, code(&resp)),
        (StatusCode::BAD_REQUEST, "AN-HENG-1001"),
        "{resp}"
    );
    let (status, resp) = app
        .bearer(Method::DELETE, &path(&current_record), &d.token, None)
        .await;
    assert_eq!(status, StatusCode::OK, "{resp}");
    assert_eq!(resp["responseStatus"]["status"], "SUCCESS");

    // The current authKey is the one that was kept.
    let (status, resp) = app.login(&d).await;
    assert_eq!(status, StatusCode::OK, "{resp}");
}

#[tokio::test]
async fn a_second_device_added_through_self_service_logs_in_on_its_own() {
    let app = TestApp::spawn().await;
    let first = app.new_device("Twice").await;
    let mut second = second_device(&app, &first).await;
    assert_ne!(second.device_uuid, first.device_uuid);

    let path = format!("/user/{}/device", first.user_uuid);
    let (status, resp) = app.bearer(Method::GET, &path, &first.token, None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(resp["devices"].as_array().unwrap().len(), 2, "{resp}");

    let (status, resp) = app.login(&second).await;
    assert_eq!(status, StatusCode::OK, "{resp}");
    second.take(&resp);
    let (status, me) = app
        .bearer(Method::GET, "/user/current", &second.token, None)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(me["userUuid"], first.user_uuid.as_str());
    // Each device keeps its own authKey: the first still logs in with its own.
    let (status, resp) = app.login(&first).await;
    assert_eq!(status, StatusCode::OK, "{resp}");
}

#[tokio::test]
async fn the_devices_own_pin_reset_replaces_the_pin() {
    let app = TestApp::spawn().await;
    let mut d = app.new_device("Forgetful").await;

    let path = format!("/device/{}/forgot-pin", d.device_uuid);
    let (status, forgot) = app.bearer(Method::POST, &path, &d.token, None).await;
    assert_eq!(status, StatusCode::OK, "{forgot}");
    assert_eq!(forgot["userEmail"], "forgetful@example.test");
    let reset_token = forgot["resetPinToken"].as_str().unwrap().to_owned();

    let old_pin = d.pin.clone();
    d.pin = "9876".into();
    let path = format!("/device/{}/reset-pin", d.device_uuid);
    let body = json!({"hashedPin": d.hashed_pin(), "resetPinToken": reset_token});
    let (status, reset) = app.bearer(Method::POST, &path, &d.token, Some(&body)).await;
    assert_eq!(status, StatusCode::OK, "{reset}");
    assert_eq!(reset["deviceUuid"], d.device_uuid.as_str());
    d.take(&reset);

    let (status, resp) = app.login_with(&d, &old_pin, &d.auth_key).await;
    assert_eq!(
        (status, code(&resp)),
        (StatusCode::BAD_REQUEST, "AN-AUTH-1006"),
        "{resp}"
    );
    let (status, resp) = app.login(&d).await;
    assert_eq!(status, StatusCode::OK, "{resp}");
}

#[tokio::test]
async fn patching_the_user_shows_in_the_current_user() {
    let app = TestApp::spawn().await;
    let d = app.new_device("Patched").await;

    let path = format!("/user/{}", d.user_uuid);
    let body = json!({"email": "new@example.test", "mobileNumber": "+41 79 123 45 67"});
    let (status, resp) = app
        .bearer(Method::PATCH, &path, &d.token, Some(&body))
        .await;
    assert_eq!(status, StatusCode::OK, "{resp}");

    let (status, me) = app
        .bearer(Method::GET, "/user/current", &d.token, None)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(me["email"], "new@example.test");
    assert_eq!(me["mobileNumber"], "+41 79 123 45 67");
    assert_eq!(me["username"], "Patched");
    let (status, by_id) = app.bearer(Method::GET, &path, &d.token, None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(by_id["email"], "new@example.test");
}

#[tokio::test]
async fn a_deleted_users_name_can_be_signed_up_again() {
    let app = TestApp::spawn().await;
    let d = app.new_device("Phoenix").await;

    // While the user exists, the name is taken.
    let body = json!({"applicationUuid": app.app, "username": "phoenix",
                      "email": "phoenix@example.test"});
    let (status, resp) = app.backend("/self-service/user", &body).await;
    assert_eq!(
        (status, code(&resp)),
        (StatusCode::BAD_REQUEST, "AN-USER-1001")
    );

    let path = format!("/user/{}", d.user_uuid);
    let (status, resp) = app.bearer(Method::DELETE, &path, &d.token, None).await;
    assert_eq!(status, StatusCode::OK, "{resp}");
    let (status, resp) = app.login(&d).await;
    assert_eq!(
        (status, code(&resp)),
        (StatusCode::BAD_REQUEST, "AN-HENG-1005"),
        "{resp}"
    );

    let reborn = app.new_device("Phoenix").await;
    assert_ne!(reborn.user_uuid, d.user_uuid);
    let (status, resp) = app.login(&reborn).await;
    assert_eq!(status, StatusCode::OK, "{resp}");
}
