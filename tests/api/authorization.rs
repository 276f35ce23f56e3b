//! A user may act only on their own user and devices: every attempt on another user's is 403
//! and changes nothing.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::helpers::{TestApp, code};

#[tokio::test]
async fn a_user_may_not_read_or_change_another_users_user_or_devices() {
    let app = TestApp::spawn().await;
    let mut alice = app.new_device("Alice").await;
    let bob = app.new_device("Bob").await;
    let (status, alice_login) = app.login(&alice).await;
    assert_eq!(status, StatusCode::OK, "{alice_login}");
    alice.take(&alice_login);
    let alice_key_record = alice_login["authKeyUuid"].as_str().unwrap().to_owned();

    let user = format!("/user/{}", alice.user_uuid);
    let device = format!("/device/{}", alice.device_uuid);
    let attempts: Vec<(Method, String, Option<Value>)> = vec![
        (Method::GET, user.clone(), None),
        (
            Method::PATCH,
            user.clone(),
            Some(json!({"email": "bob@evil.test", "mobileNumber": "+1 555 0100"})),
        ),
        (Method::DELETE, user.clone(), None),
        (Method::GET, format!("{user}/device"), None),
        (Method::PATCH, device.clone(), Some(json!({"locked": true}))),
        (
            Method::PATCH,
            device.clone(),
            Some(json!({"deviceName": "pwned"})),
        ),
        (Method::DELETE, device.clone(), None),
        (
            Method::DELETE,
            format!("{device}/auth-key?authKeyUuid={alice_key_record}"),
            None,
        ),
        (Method::POST, format!("{device}/forgot-pin"), None),
    ];
    for (method, path, body) in attempts {
        let (status, resp) = app
            .bearer(method.clone(), &path, &bob.token, body.as_ref())
            .await;
        assert_eq!(
            status,
            StatusCode::FORBIDDEN,
            "{method} {path} by another user: {resp}"
        );
        assert_eq!(resp["responseStatus"]["status"], "ERROR", "{method} {path}");
        assert!(!code(&resp).is_empty(), "{method} {path}: {resp}");
    }

    // Alice's user, device and credentials are as they were.
    let (status, me) = app
        .bearer(Method::GET, "/user/current", &alice.token, None)
        .await;
    assert_eq!(status, StatusCode::OK, "{me}");
    assert_eq!(me["email"], "alice@example.test");
    assert!(me["mobileNumber"].is_null(), "{me}");
    assert_eq!(me["locked"], false);
    let (status, devices) = app
        .bearer(Method::GET, &format!("{user}/device"), &alice.token, None)
        .await;
    assert_eq!(status, StatusCode::OK);
    let devices = devices["devices"].as_array().unwrap().clone();
    assert_eq!(devices.len(), 1);
    assert_eq!(devices[0]["deviceName"], "test device");
    assert_eq!(devices[0]["locked"], false);
    let (status, resp) = app.login(&alice).await;
    assert_eq!(status, StatusCode::OK, "{resp}");
    alice.take(&resp);
    let (status, _) = app
        .bearer(Method::GET, "/jwt/validate", &alice.token, None)
        .await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn a_users_own_user_routes_answer_that_user() {
    // The other side of the 403s above: the same routes with the owner's token succeed, so
    // a test that only saw 403s is not passing because the routes are broken.
    let app = TestApp::spawn().await;
    let bob = app.new_device("Bob").await;
    let user = format!("/user/{}", bob.user_uuid);
    let (status, resp) = app.bearer(Method::GET, &user, &bob.token, None).await;
    assert_eq!(status, StatusCode::OK, "{resp}");
    assert_eq!(resp["username"], "Bob");
    let (status, resp) = app
        .bearer(Method::GET, &format!("{user}/device"), &bob.token, None)
        .await;
    assert_eq!(status, StatusCode::OK, "{resp}");
    let path = format!("/device/{}/forgot-pin", bob.device_uuid);
    let (status, resp) = app.bearer(Method::POST, &path, &bob.token, None).await;
    assert_eq!(status, StatusCode::OK, "{resp}");
}
