//! Usernames: matched by NFKC then lower case, stored as first given, and validated.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::helpers::{TestApp, code};

/// A sign-up with a fixed e-mail address, so that only the username varies.
async fn sign_up_as(app: &TestApp, username: &str) -> (StatusCode, Value) {
    let body = json!({"applicationUuid": app.app, "username": username,
                      "email": "someone@example.test"});
    app.backend("/self-service/user", &body).await
}

#[tokio::test]
async fn alice_in_any_case_or_width_is_one_user() {
    let app = TestApp::spawn().await;
    let (status, resp) = sign_up_as(&app, "Alice").await;
    assert_eq!(status, StatusCode::OK, "{resp}");

    for other in [
        "Alice",
        "alice",
        "ALICE",
        "aLiCe",
        "\u{FF21}lice",
        "\u{FF41}LICE",
    ] {
        let (status, resp) = sign_up_as(&app, other).await;
        assert_eq!(
            (status, code(&resp)),
            (StatusCode::BAD_REQUEST, "AN-USER-1001"),
            "second sign-up as {other:?}: {resp}"
        );
    }
}

#[tokio::test]
async fn login_matches_any_casing_and_the_username_is_shown_as_first_given() {
    let app = TestApp::spawn().await;
    let mut d = app.new_device("Alice").await;

    for typed in ["alice", "ALICE", "\u{FF21}LICE"] {
        d.username = typed.to_owned();
        let (status, resp) = app.login(&d).await;
        assert_eq!(status, StatusCode::OK, "login as {typed:?}: {resp}");
        d.take(&resp);
    }

    let (status, me) = app
        .bearer(Method::GET, "/user/current", &d.token, None)
        .await;
    assert_eq!(status, StatusCode::OK, "{me}");
    assert_eq!(me["username"], "Alice");
}

#[tokio::test]
async fn invalid_usernames_are_refused_with_an_vali_1003() {
    let app = TestApp::spawn().await;
    let too_long = "a".repeat(129);
    let invalid = [
        "",
        " alice",
        "alice ",
        "al\u{7}ice",
        "al\nice",
        "al\u{200B}ice",
        too_long.as_str(),
    ];
    for username in invalid {
        let (status, resp) = sign_up_as(&app, username).await;
        assert_eq!(
            (status, code(&resp)),
            (StatusCode::BAD_REQUEST, "AN-VALI-1003"),
            "sign-up as {username:?}: {resp}"
        );
    }

    // None of them created a user: the plain name and a 128-character one are still free.
    for username in ["alice".to_owned(), "a".repeat(128)] {
        let (status, resp) = sign_up_as(&app, &username).await;
        assert_eq!(status, StatusCode::OK, "sign-up as {username:?}: {resp}");
    }
}
