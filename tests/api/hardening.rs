//! Findings of an adversarial pass, kept fixed: framework rejections carry the envelope, and
//! an unauthenticated back-end call learns nothing about its body.

use reqwest::{Method, StatusCode};

use crate::helpers::{TestApp, code};

#[tokio::test]
async fn repeated_query_parameters_and_bad_path_segments_get_the_envelope() {
    let app = TestApp::spawn().await;
    let path = format!(
        "/jwt/public-key?applicationUuid={0}&applicationUuid={0}",
        app.app
    );
    let (status, body) = app.call(Method::GET, &path, None, &[]).await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::BAD_REQUEST, "AN-VALI-1002"),
        "{body}"
    );

    let d = app.new_device("Pathy").await;
    let (status, body) = app
        .bearer(Method::GET, "/user/%ff%fe", &d.token, None)
        .await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::BAD_REQUEST, "AN-VALI-1002"),
        "{body}"
    );
}

#[tokio::test]
async fn a_call_without_an_api_key_is_refused_before_its_body_is_read() {
    let app = TestApp::spawn().await;
    for raw in ["{}", "{not json", "[1,2]"] {
        let resp = app
            .client
            .post(format!("{}{}/self-service/user", app.base, latchkey::BASE))
            .header("content-type", "application/json")
            .body(raw)
            .send()
            .await
            .unwrap();
        let status = resp.status();
        let body: serde_json::Value = resp.json().await.unwrap();
        assert_eq!(
            (status, code(&body)),
            (StatusCode::UNAUTHORIZED, "AN-APLI-1010"),
            "{raw}"
        );
    }
}

#[tokio::test]
async fn settings_that_cannot_work_are_refused_at_start() {
    for text in [
        "[app_defaults]\ntoken_digits = 13",
        "[app_defaults]\ntoken_attempts = 0",
        "max_in_flight = 0",
        "public_url = \"not a url\"",
    ] {
        assert!(latchkey::Config::from_toml(text).is_err(), "{text}");
    }
    assert!(latchkey::Config::from_toml("[app_defaults]\ntoken_digits = 8").is_ok());
}
