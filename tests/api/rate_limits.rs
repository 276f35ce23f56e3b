//! Rate limits over real TCP, with tiny limits: 429 with AN-RATE-1001 and `Retry-After`; per
//! device and per application on back-end routes; per client address on open routes, where
//! `X-Forwarded-For` counts only from a trusted proxy.

use latchkey::{BASE, config::Rate};
use reqwest::{Method, StatusCode};

use crate::helpers::{TestApp, code};

/// Asserts a 429 with the contract envelope and a `Retry-After` of whole seconds.
fn assert_limited(status: StatusCode, retry_after: Option<&str>, body: &serde_json::Value) {
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    assert_eq!(code(body), "AN-RATE-1001");
    assert_eq!(body["responseStatus"]["status"], "ERROR");
    let secs: u64 = retry_after.expect("Retry-After").parse().unwrap();
    assert!((1..=200).contains(&secs), "Retry-After {secs}");
}

/// GET /jwt/public-key with an optional X-Forwarded-For; status, Retry-After, body.
async fn public_key(
    app: &TestApp,
    forwarded: Option<&str>,
) -> (StatusCode, Option<String>, serde_json::Value) {
    let url = format!(
        "{}{BASE}/jwt/public-key?applicationUuid={}",
        app.base, app.app
    );
    let mut req = app.client.get(url);
    if let Some(xff) = forwarded {
        req = req.header("x-forwarded-for", xff);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status();
    let retry = resp
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_owned());
    (status, retry, resp.json().await.unwrap())
}

/// One back-end login call with `pin`; the raw response, for its headers.
async fn login_raw(app: &TestApp, d: &crate::helpers::Device, pin: &str) -> reqwest::Response {
    let body = serde_json::json!({"applicationUuid": app.app, "username": d.username,
        "deviceUuid": d.device_uuid, "authKey": d.auth_key,
        "hashedPin": crate::helpers::hashed_pin(&d.salt, pin)});
    app.client
        .post(format!("{}{BASE}/authentication/login", app.base))
        .header("x-api-key", &app.api_key)
        .json(&body)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn logins_of_one_device_are_limited_apart_from_other_devices() {
    let app = TestApp::spawn_with(|c| c.rate_limits.login_per_device = Rate::new(0.01, 2)).await;
    let mut d = app.new_device("Hasty").await;
    let other = app.new_device("Calm").await;

    for _ in 0..2 {
        let (status, resp) = app.login(&d).await;
        assert_eq!(status, StatusCode::OK, "{resp}");
        d.take(&resp);
    }
    // A wrong PIN, refused before it is evaluated.
    let resp = login_raw(&app, &d, "0000").await;
    let (status, retry) = (resp.status(), resp.headers().get("retry-after").cloned());
    let body = resp.json().await.unwrap();
    assert_limited(status, retry.as_ref().map(|v| v.to_str().unwrap()), &body);

    // The refused wrong PIN was not counted toward the lockout.
    let (_, views) = app
        .bearer(
            Method::GET,
            &format!("/user/{}/device", d.user_uuid),
            &d.token,
            None,
        )
        .await;
    assert_eq!(views["devices"][0]["failedLoginAttempts"], 0);
    let (status, resp) = app.login(&other).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "another device has its own bucket: {resp}"
    );
}

#[tokio::test]
async fn an_application_is_limited_only_by_calls_with_its_key() {
    let app = TestApp::spawn_with(|c| c.rate_limits.per_app = Rate::new(0.01, 4)).await;

    // Calls with a wrong key are refused before they count.
    for _ in 0..6 {
        let body = serde_json::json!({"applicationUuid": app.app, "username": "x",
                                      "email": "x@example.test"});
        let (status, _) = app
            .call(
                Method::POST,
                "/self-service/user",
                Some(&body),
                &[("x-api-key", "wrong")],
            )
            .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }

    let d = app.new_device("Busy").await; // sign-up and activation: two calls
    let (status, resp) = app.login(&d).await;
    assert_eq!(status, StatusCode::OK, "{resp}");
    let sign_up = |name: &str| {
        serde_json::json!({"applicationUuid": app.app, "username": name,
                           "email": "someone@example.test"})
    };
    let (status, resp) = app.backend("/self-service/user", &sign_up("Other")).await;
    assert_eq!(status, StatusCode::OK, "{resp}");
    let (status, resp) = app.backend("/self-service/user", &sign_up("Third")).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{resp}");
    assert_eq!(code(&resp), "AN-RATE-1001");

    // Bearer routes are not back-end calls: the user's token still works.
    let (status, _) = app
        .bearer(Method::GET, "/jwt/validate", &d.token, None)
        .await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn a_forwarded_address_from_an_untrusted_peer_is_ignored() {
    let app = TestApp::spawn_with(|c| c.rate_limits.per_address = Rate::new(0.01, 2)).await;
    let (status, _, _) = public_key(&app, Some("203.0.113.1")).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _, _) = public_key(&app, Some("203.0.113.2")).await;
    assert_eq!(status, StatusCode::OK);

    // A third "client" is the same peer: refused, whatever it claims to be.
    let (status, retry, body) = public_key(&app, Some("203.0.113.3")).await;
    assert_limited(status, retry.as_deref(), &body);
    let (status, _, _) = public_key(&app, None).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
}

#[tokio::test]
async fn a_trusted_proxy_names_the_client_and_each_client_has_its_bucket() {
    let app = TestApp::spawn_with(|c| {
        c.rate_limits.per_address = Rate::new(0.01, 2);
        c.trusted_proxies = vec!["127.0.0.0/8".parse().unwrap()];
    })
    .await;
    for _ in 0..2 {
        let (status, _, _) = public_key(&app, Some("203.0.113.1")).await;
        assert_eq!(status, StatusCode::OK);
    }
    let (status, retry, body) = public_key(&app, Some("203.0.113.1")).await;
    assert_limited(status, retry.as_deref(), &body);

    // Another client behind the same proxy, even one that forged a hop in front.
    let (status, _, _) = public_key(&app, Some("203.0.113.1, 198.51.100.9")).await;
    assert_eq!(status, StatusCode::OK);
    // The proxy's own calls are its own.
    let (status, _, _) = public_key(&app, None).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn the_default_limits_leave_the_attempt_limits_to_end_a_pin() {
    let app = TestApp::spawn().await;
    let d = app.new_device("Guesser").await;
    let mut codes = Vec::new();
    for _ in 0..6 {
        let (_, resp) = app.login_with(&d, "0000", &d.auth_key).await;
        codes.push(code(&resp).to_owned());
    }
    assert_eq!(
        codes,
        [
            "AN-AUTH-1006",
            "AN-AUTH-1029",
            "AN-AUTH-1030",
            "AN-AUTH-1031",
            "AN-AUTH-1031",
            "AN-AUTH-1031"
        ]
    );
}

/// POST /openid/token with an unknown code; status, Retry-After, body.
async fn token_call(app: &TestApp) -> (StatusCode, Option<String>, serde_json::Value) {
    let resp = app
        .client
        .post(format!("{}{BASE}/openid/token", app.base))
        .basic_auth(app.app.to_string(), Some(&app.api_key))
        .form(&[("grant_type", "authorization_code"), ("code", "x.y")])
        .send()
        .await
        .unwrap();
    let status = resp.status();
    let retry = resp
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_owned());
    (status, retry, resp.json().await.unwrap())
}

#[tokio::test]
async fn a_relying_party_s_back_end_has_its_own_per_address_limit() {
    let app = TestApp::spawn_with(|c| {
        c.rate_limits.per_address = Rate::new(0.01, 2);
        c.rate_limits.relying_party_per_address = Rate::new(0.01, 4);
    })
    .await;

    // The browser's limit does not hold back the token endpoint...
    for _ in 0..2 {
        let (status, _, _) = public_key(&app, None).await;
        assert_eq!(status, StatusCode::OK);
    }
    let (status, _, _) = public_key(&app, None).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    for _ in 0..4 {
        let (status, _, body) = token_call(&app).await;
        assert_eq!(
            (status, body["error"].as_str()),
            (StatusCode::BAD_REQUEST, Some("invalid_grant")),
            "{body}"
        );
    }

    // ...which has a limit of its own.
    let (status, retry, body) = token_call(&app).await;
    assert_limited(status, retry.as_deref(), &body);
}
