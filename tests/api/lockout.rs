//! Lockout: wrong PINs lock a device, stale authKeys do not count, the lock ends with its
//! period, PIN reset works while locked, bad reset tokens block the reset, activation tokens
//! die after their wrong tries, and counts hold under concurrency.

use std::sync::Arc;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{Device, TestApp, code, hashed_pin};

const WRONG_PIN: &str = "9999";

/// A code of the same length that is surely not `token`.
fn other_code(token: &str) -> String {
    let n: u64 = token.parse().unwrap();
    let width = token.len();
    let modulus = 10u64.pow(u32::try_from(width).unwrap());
    format!("{:0width$}", (n + 1) % modulus)
}

fn assert_error(status: StatusCode, resp: &Value, expected: &str) {
    assert_eq!(
        (status, code(resp)),
        (StatusCode::BAD_REQUEST, expected),
        "{resp}"
    );
}

async fn forgot_pin(app: &TestApp, d: &Device) -> (StatusCode, Value) {
    let body = json!({"applicationUuid": app.app, "username": d.username,
                      "deviceUuid": d.device_uuid});
    app.backend("/authentication/forgot-pin", &body).await
}

async fn reset_pin(app: &TestApp, d: &Device, pin: &str, token: &str) -> (StatusCode, Value) {
    let body = json!({"applicationUuid": app.app, "username": d.username,
                      "deviceUuid": d.device_uuid, "hashedPin": hashed_pin(&d.salt, pin),
                      "resetPinToken": token});
    app.backend("/authentication/reset-pin", &body).await
}

/// Three wrong PINs: 1006, 1029, 1030.
async fn lock(app: &TestApp, d: &Device) {
    for expected in ["AN-AUTH-1006", "AN-AUTH-1029", "AN-AUTH-1030"] {
        let (status, resp) = app.login_with(d, WRONG_PIN, &d.auth_key).await;
        assert_error(status, &resp, expected);
    }
}

#[tokio::test]
async fn three_wrong_pins_answer_1006_1029_1030_then_1031_even_with_the_right_pin() {
    let app = TestApp::spawn().await;
    let d = app.new_device("Locky").await;

    lock(&app, &d).await;
    let (status, resp) = app.login(&d).await;
    assert_error(status, &resp, "AN-AUTH-1031");
    let (status, resp) = app.login_with(&d, WRONG_PIN, &d.auth_key).await;
    assert_error(status, &resp, "AN-AUTH-1031");
}

#[tokio::test]
async fn a_stale_auth_key_is_refused_and_does_not_count_toward_the_lockout() {
    let app = TestApp::spawn().await;
    let mut d = app.new_device("Stale").await;
    let stale = d.auth_key.clone();
    let (status, resp) = app.login(&d).await;
    assert_eq!(status, StatusCode::OK, "{resp}");
    d.take(&resp);

    // One wrong PIN with the current key counts.
    let (status, resp) = app.login_with(&d, WRONG_PIN, &d.auth_key).await;
    assert_error(status, &resp, "AN-AUTH-1006");

    // Many tries with the stale key, wrong PIN or right, count nothing.
    for pin in [WRONG_PIN, WRONG_PIN, WRONG_PIN, WRONG_PIN, "1234"] {
        let (status, resp) = app.login_with(&d, pin, &stale).await;
        assert_error(status, &resp, "AN-HENG-1001");
    }

    // The next wrong PIN is only the second: one attempt left, not locked.
    let (status, resp) = app.login_with(&d, WRONG_PIN, &d.auth_key).await;
    assert_error(status, &resp, "AN-AUTH-1029");
    let (status, resp) = app.login(&d).await;
    assert_eq!(status, StatusCode::OK, "{resp}");
}

#[tokio::test]
async fn the_lock_ends_after_the_lock_period() {
    let app = TestApp::spawn_with(|config| config.app_defaults.lock_period_secs = 60).await;
    let mut d = app.new_device("Patient").await;
    lock(&app, &d).await;

    app.clock.advance(30);
    let (status, resp) = app.login(&d).await;
    assert_error(status, &resp, "AN-AUTH-1031");

    app.clock.advance(31);
    let (status, resp) = app.login(&d).await;
    assert_eq!(status, StatusCode::OK, "{resp}");
    d.take(&resp);

    // The count starts over after the lock.
    let (status, resp) = app.login_with(&d, WRONG_PIN, &d.auth_key).await;
    assert_error(status, &resp, "AN-AUTH-1006");
}

#[tokio::test]
async fn forgot_pin_and_reset_pin_work_while_the_device_is_locked() {
    let app = TestApp::spawn().await;
    let mut d = app.new_device("Forgetful").await;
    lock(&app, &d).await;

    let (status, resp) = forgot_pin(&app, &d).await;
    assert_eq!(status, StatusCode::OK, "{resp}");
    let token = resp["resetPinToken"].as_str().unwrap().to_owned();

    let (status, resp) = reset_pin(&app, &d, "5678", &token).await;
    assert_eq!(status, StatusCode::OK, "{resp}");
    assert_eq!(resp["deviceUuid"], d.device_uuid.as_str());
    assert!(resp["accessToken"]["token"].is_string(), "{resp}");
    let old_key = d.auth_key.clone();
    d.take(&resp);
    assert_ne!(d.auth_key, old_key);
    d.pin = "5678".into();

    // The new PIN and the new authKey log in; the old PIN no longer does.
    let (status, resp) = app.login(&d).await;
    assert_eq!(status, StatusCode::OK, "{resp}");
    d.take(&resp);
    let (status, resp) = app.login_with(&d, "1234", &d.auth_key).await;
    assert_error(status, &resp, "AN-AUTH-1006");
}

#[tokio::test]
async fn bad_reset_tokens_answer_1022_1022_then_block_forgot_and_reset_for_the_block_period() {
    let app = TestApp::spawn().await;
    let block = i64::try_from(latchkey_actors::AppSettings::default().reset_block_secs).unwrap();
    let mut d = app.new_device("Guesser").await;

    let (status, resp) = forgot_pin(&app, &d).await;
    assert_eq!(status, StatusCode::OK, "{resp}");
    let token = resp["resetPinToken"].as_str().unwrap().to_owned();
    let wrong = other_code(&token);

    for expected in ["AN-AUTH-1022", "AN-AUTH-1022", "AN-AUTH-1025"] {
        let (status, resp) = reset_pin(&app, &d, "5678", &wrong).await;
        assert_error(status, &resp, expected);
    }
    // Blocked: the right token, and a new forgot-pin, are refused too.
    let (status, resp) = reset_pin(&app, &d, "5678", &token).await;
    assert_error(status, &resp, "AN-AUTH-1025");
    let (status, resp) = forgot_pin(&app, &d).await;
    assert_error(status, &resp, "AN-AUTH-1025");

    app.clock.advance(block / 2);
    let (status, resp) = forgot_pin(&app, &d).await;
    assert_error(status, &resp, "AN-AUTH-1025");

    // The login with the old PIN was never affected.
    let (status, resp) = app.login(&d).await;
    assert_eq!(status, StatusCode::OK, "{resp}");
    d.take(&resp);

    app.clock.advance(block / 2 + 1);
    let (status, resp) = forgot_pin(&app, &d).await;
    assert_eq!(status, StatusCode::OK, "{resp}");
    let token = resp["resetPinToken"].as_str().unwrap().to_owned();
    let (status, resp) = reset_pin(&app, &d, "5678", &token).await;
    assert_eq!(status, StatusCode::OK, "{resp}");
}

#[tokio::test]
async fn an_activation_token_dies_after_five_wrong_tries() {
    let app = TestApp::spawn().await;
    let token = app.sign_up("Tries").await;
    let d = Device::new("Tries");
    let wrong = other_code(&token);

    for _ in 0..5 {
        let (status, resp) = app.activate(&d, &wrong).await;
        assert_error(status, &resp, "AN-AUTH-1022");
    }
    let (status, resp) = app.activate(&d, &token).await;
    assert_error(status, &resp, "AN-AUTH-1041");
}

#[tokio::test]
async fn parallel_wrong_pins_lock_the_device_exactly_once() {
    let app = Arc::new(TestApp::spawn().await);
    let d = app.new_device("Swarm").await;

    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..20 {
        let (app, d) = (app.clone(), d.clone());
        tasks.spawn(async move {
            let (status, resp) = app.login_with(&d, WRONG_PIN, &d.auth_key).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{resp}");
            code(&resp).to_owned()
        });
    }
    let mut codes = tasks.join_all().await;
    codes.sort();
    let count = |c: &str| codes.iter().filter(|x| *x == c).count();
    assert_eq!(count("AN-AUTH-1006"), 1, "{codes:?}");
    assert_eq!(count("AN-AUTH-1029"), 1, "{codes:?}");
    assert_eq!(count("AN-AUTH-1030"), 1, "{codes:?}");
    assert_eq!(count("AN-AUTH-1031"), 17, "{codes:?}");

    let (status, resp) = app.login(&d).await;
    assert_error(status, &resp, "AN-AUTH-1031");
}
