//! Restart: stop the server and start it on the same data directory; credentials, revocations,
//! signing keys and pending activation tokens are as they were.

use reqwest::{Method, StatusCode};
use serde_json::Value;

use crate::helpers::{Device, TestApp, code};

fn ttl() -> i64 {
    i64::try_from(latchkey_actors::AppSettings::default().activation_token_ttl_secs).unwrap()
}

async fn public_key(app: &TestApp) -> Value {
    let path = format!("/jwt/public-key?applicationUuid={}", app.app);
    let (status, pk) = app.call(Method::GET, &path, None, &[]).await;
    assert_eq!(status, StatusCode::OK, "{pk}");
    pk
}

#[tokio::test]
async fn the_latest_auth_key_logs_in_after_a_restart() {
    let mut app = TestApp::spawn().await;
    let mut d = app.new_device("Phoenix").await;
    for _ in 0..2 {
        let (status, resp) = app.login(&d).await;
        assert_eq!(status, StatusCode::OK, "{resp}");
        d.take(&resp);
    }
    let before_last = d.auth_key.clone();
    let (status, resp) = app.login(&d).await;
    assert_eq!(status, StatusCode::OK, "{resp}");
    d.take(&resp);

    app.restart().await;

    let (status, resp) = app.login_with(&d, "1234", &before_last).await;
    assert_eq!(
        (status, code(&resp)),
        (StatusCode::BAD_REQUEST, "AN-HENG-1001"),
        "{resp}"
    );
    let (status, resp) = app.login(&d).await;
    assert_eq!(status, StatusCode::OK, "{resp}");
}

#[tokio::test]
async fn a_token_revoked_by_logout_stays_revoked_after_a_restart() {
    let mut app = TestApp::spawn().await;
    let mut gone = app.new_device("Leaver").await;
    let first = gone.token.clone();
    let (status, resp) = app.login(&gone).await;
    assert_eq!(status, StatusCode::OK, "{resp}");
    gone.take(&resp);
    let kept = app.new_device("Stayer").await;

    let (status, resp) = app
        .bearer(Method::DELETE, "/authentication/logout", &gone.token, None)
        .await;
    assert_eq!(status, StatusCode::OK, "{resp}");

    app.restart().await;

    for token in [&gone.token, &first] {
        let (status, resp) = app.bearer(Method::GET, "/jwt/validate", token, None).await;
        assert_eq!(
            (status, code(&resp)),
            (StatusCode::UNAUTHORIZED, "AN-JWTT-1003"),
            "{resp}"
        );
    }
    // A token that was not revoked still validates: the refusal above is the revocation.
    let (status, resp) = app
        .bearer(Method::GET, "/jwt/validate", &kept.token, None)
        .await;
    assert_eq!(status, StatusCode::OK, "{resp}");
}

#[tokio::test]
async fn the_public_key_and_kid_are_unchanged_after_a_restart() {
    let mut app = TestApp::spawn().await;
    let d = app.new_device("Keeper").await;
    let before = public_key(&app).await;
    assert!(before["kid"].as_str().is_some_and(|k| !k.is_empty()));

    app.restart().await;

    let after = public_key(&app).await;
    assert_eq!(after["kid"], before["kid"]);
    assert_eq!(after["publicKey"], before["publicKey"]);
    assert_eq!(after["algorithm"], before["algorithm"]);
    assert_eq!(after["jwks"], before["jwks"]);
    let (status, resp) = app
        .bearer(Method::GET, "/jwt/validate", &d.token, None)
        .await;
    assert_eq!(status, StatusCode::OK, "{resp}");
}

#[tokio::test]
async fn a_pending_activation_token_works_once_after_a_restart_with_its_remaining_time() {
    let mut app = TestApp::spawn().await;
    let early = app.sign_up("Early").await;
    let late = app.sign_up("Late").await;

    app.clock.advance(3600);
    app.restart().await;

    let d = Device::new("Early");
    let (status, resp) = app.activate(&d, &early).await;
    assert_eq!(status, StatusCode::OK, "{resp}");
    let (status, resp) = app.activate(&d, &early).await;
    assert_eq!(
        (status, code(&resp)),
        (StatusCode::BAD_REQUEST, "AN-AUTH-1041"),
        "{resp}"
    );

    // The deadline is the one set at sign-up, not a fresh lifetime from the restart.
    app.clock.advance(ttl() - 3600 + 1);
    let (status, resp) = app.activate(&Device::new("Late"), &late).await;
    assert_eq!(
        (status, code(&resp)),
        (StatusCode::BAD_REQUEST, "AN-AUTH-1041"),
        "{resp}"
    );
}

#[tokio::test]
async fn an_activation_token_whose_lifetime_passed_during_a_restart_is_refused_as_expired() {
    let mut app = TestApp::spawn().await;
    let token = app.sign_up("Sleeper").await;

    app.clock.advance(ttl() + 1);
    app.restart().await;

    let (status, resp) = app.activate(&Device::new("Sleeper"), &token).await;
    assert_eq!(
        (status, code(&resp)),
        (StatusCode::BAD_REQUEST, "AN-AUTH-1041"),
        "{resp}"
    );
}
