//! Login answers do not tell whether a username exists.

use reqwest::StatusCode;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::helpers::{TestApp, hashed_pin};

async fn login(app: &TestApp, username: &str, device: &str, auth_key: &str) -> (StatusCode, Value) {
    let body = json!({"applicationUuid": app.app, "username": username,
                      "deviceUuid": device, "authKey": auth_key,
                      "hashedPin": hashed_pin(b"salt", "1234")});
    app.backend("/authentication/login", &body).await
}

fn random_auth_key() -> String {
    format!("{}{}", Uuid::new_v4().simple(), Uuid::new_v4().simple())
}

#[tokio::test]
async fn unknown_usernames_and_foreign_devices_get_the_same_login_answer() {
    let app = TestApp::spawn().await;
    let known = app.new_device("Known").await;
    let other = app.new_device("Other").await;
    let random_device = Uuid::new_v4().to_string();

    let (status, unknown) = login(&app, "nobody-here", &random_device, &random_auth_key()).await;
    let answers = [
        (
            "known username, random device",
            login(&app, "Known", &random_device, &random_auth_key()).await,
        ),
        (
            "known username, another user's device",
            login(&app, "Known", &other.device_uuid, &random_auth_key()).await,
        ),
        (
            "known username, another user's device and its real authKey",
            login(&app, "Known", &other.device_uuid, &other.auth_key).await,
        ),
        (
            "username that breaks the username rules",
            login(&app, " bad\u{0}name ", &random_device, &random_auth_key()).await,
        ),
    ];

    assert_eq!(status, StatusCode::BAD_REQUEST, "{unknown}");
    assert_eq!(unknown["responseStatus"]["code"], "AN-HENG-1005");
    assert_eq!(unknown["responseStatus"]["status"], "ERROR");
    for (what, (s, body)) in &answers {
        assert_eq!(*s, status, "{what}: {body}");
        // The whole body, message included, is the same.
        assert_eq!(body, &unknown, "{what}");
    }

    // Nothing was counted against the devices that were named.
    let (status, resp) = app.login(&known).await;
    assert_eq!(status, StatusCode::OK, "{resp}");
    let (status, resp) = app.login(&other).await;
    assert_eq!(status, StatusCode::OK, "{resp}");
}
