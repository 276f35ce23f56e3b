//! A relying party's grant lasts no longer than the device session the user signed in with:
//! logging out, locking or removing the device, or locking the user ends it (refresh token,
//! access tokens, userinfo); signing in again on the same device does not.

use latchkey_actors::{AdminUserPatch, UserRef};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::{devices::second_device, helpers::Device, oidc::Provider};

#[derive(Debug, Clone, Copy)]
enum End {
    Logout,
    LockDevice,
    DeleteDevice,
    LockUser,
    NewPin,
}

#[tokio::test]
async fn ending_the_device_session_ends_the_relying_party_s_grant() {
    for how in [
        End::Logout,
        End::LockDevice,
        End::DeleteDevice,
        End::LockUser,
        End::NewPin,
    ] {
        let op = Provider::spawn().await;
        let mut phone = op.app.new_device("Ada").await;
        let phone_jwt = phone.token.clone();
        let tokens = op.tokens(&mut phone, &op.authz()).await;
        let (access, refresh) = token_pair(&tokens);
        assert!(op.active(access).await, "{how:?}: live before");

        end_session(&op, &phone, &phone_jwt, how).await;

        assert!(!op.active(access).await, "{how:?}: access token");
        assert!(!op.active(refresh).await, "{how:?}: refresh token");
        let (status, _) = op.userinfo(access).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{how:?}: userinfo");
        let (status, body) = op.refresh(refresh, &op.basic()).await;
        assert_eq!(
            (status, body["error"].as_str()),
            (StatusCode::BAD_REQUEST, Some("invalid_grant")),
            "{how:?}: refresh: {body}"
        );
    }
}

#[tokio::test]
async fn the_device_s_other_session_ending_leaves_this_device_s_grant() {
    let op = Provider::spawn().await;
    let mut phone = op.app.new_device("Grace").await;
    let tablet = second_device(&op.app, &phone).await;
    let tokens = op.tokens(&mut phone, &op.authz()).await;
    let (access, refresh) = token_pair(&tokens);

    let (status, body) = op
        .app
        .bearer(
            Method::DELETE,
            "/authentication/logout",
            &tablet.token,
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");

    assert!(op.active(access).await);
    let (status, body) = op.refresh(refresh, &op.basic()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

#[tokio::test]
async fn signing_in_again_on_the_same_device_keeps_the_first_grant() {
    let op = Provider::spawn().await;
    let mut phone = op.app.new_device("Hopper").await;
    let first = op.tokens(&mut phone, &op.authz()).await;
    let _second = op.tokens(&mut phone, &op.authz()).await;
    let (status, body) = op.app.login(&phone).await;
    assert_eq!(status, StatusCode::OK, "a plain login too: {body}");
    phone.take(&body);

    let (access, refresh) = token_pair(&first);
    assert!(op.active(access).await);
    let (status, body) = op.refresh(refresh, &op.basic()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

async fn end_session(op: &Provider, phone: &Device, phone_jwt: &str, how: End) {
    let app = &op.app;
    let device_path = format!("/device/{}", phone.device_uuid);
    let (status, body) = match how {
        End::Logout => {
            app.bearer(Method::DELETE, "/authentication/logout", phone_jwt, None)
                .await
        }
        End::LockDevice => {
            let tablet = second_device(app, phone).await;
            let lock = json!({"locked": true});
            app.bearer(Method::PATCH, &device_path, &tablet.token, Some(&lock))
                .await
        }
        End::DeleteDevice => {
            let tablet = second_device(app, phone).await;
            app.bearer(Method::DELETE, &device_path, &tablet.token, None)
                .await
        }
        End::LockUser => {
            let engine = app.engine();
            let application = engine.app(app.app).unwrap();
            let user = UserRef::Uuid(phone.user_uuid.parse().unwrap());
            let lock = AdminUserPatch {
                locked: Some(true),
                ..AdminUserPatch::default()
            };
            engine
                .iam_patch_user(&application, &user, lock)
                .await
                .unwrap();
            (StatusCode::OK, Value::Null)
        }
        End::NewPin => {
            let body = json!({"applicationUuid": app.app, "username": phone.username,
                              "deviceUuid": phone.device_uuid});
            let (status, forgot) = app.backend("/authentication/forgot-pin", &body).await;
            assert_eq!(status, StatusCode::OK, "{forgot}");
            let mut renewed = Device::new(&phone.username);
            renewed.pin = "9876".into();
            let body = json!({"applicationUuid": app.app, "username": phone.username,
                              "deviceUuid": phone.device_uuid,
                              "resetPinToken": forgot["resetPinToken"],
                              "hashedPin": renewed.hashed_pin()});
            app.backend("/authentication/reset-pin", &body).await
        }
    };
    assert!(status.is_success(), "{how:?}: {body}");
}

fn token_pair(tokens: &Value) -> (&str, &str) {
    (
        tokens["access_token"].as_str().unwrap(),
        tokens["refresh_token"].as_str().unwrap(),
    )
}
