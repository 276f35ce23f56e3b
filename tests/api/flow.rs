//! The walkthrough flow end to end: sign-up, activation, rotating logins, user and devices,
//! renew, validate, signature checked outside Latchkey, logout.

use reqwest::{Method, StatusCode};

use crate::helpers::{TestApp, code};

#[tokio::test]
async fn the_walkthrough_flow_holds_end_to_end() {
    let app = TestApp::spawn().await;
    let mut d = app.new_device("Walker").await;
    assert!(!d.user_uuid.is_empty() && !d.token.is_empty());

    // Two logins: each rotates the authKey; the old one is refused without counting.
    let first_key = d.auth_key.clone();
    let (status, resp) = app.login(&d).await;
    assert_eq!(status, StatusCode::OK, "{resp}");
    d.take(&resp);
    assert_ne!(d.auth_key, first_key);
    let (status, resp) = app.login_with(&d, "1234", &first_key).await;
    assert_eq!(
        (status, code(&resp)),
        (StatusCode::BAD_REQUEST, "AN-HENG-1001")
    );
    let (status, resp) = app.login(&d).await;
    assert_eq!(status, StatusCode::OK, "{resp}");
    d.take(&resp);

    // The user and its devices.
    let (status, me) = app
        .bearer(Method::GET, "/user/current", &d.token, None)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(me["username"], "Walker");
    assert_eq!(me["userUuid"], d.user_uuid.as_str());
    assert_eq!(me["responseStatus"]["status"], "SUCCESS");
    let path = format!("/user/{}/device", d.user_uuid);
    let (status, devices) = app.bearer(Method::GET, &path, &d.token, None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(devices["devices"].as_array().unwrap().len(), 1);
    assert_eq!(devices["devices"][0]["deviceUuid"], d.device_uuid.as_str());

    // Renew, then validate the new token.
    let (status, renewed) = app.bearer(Method::GET, "/jwt/renew", &d.token, None).await;
    assert_eq!(status, StatusCode::OK);
    let renewed = renewed["accessToken"]["token"].as_str().unwrap().to_owned();
    assert_ne!(renewed, d.token);
    let (status, _) = app
        .bearer(Method::GET, "/jwt/validate", &renewed, None)
        .await;
    assert_eq!(status, StatusCode::OK);

    // The signature verifies with the published key, by a library that is not Latchkey's.
    let (status, pk) = app
        .call(
            Method::GET,
            &format!("/jwt/public-key?applicationUuid={}", app.app),
            None,
            &[],
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(pk["algorithm"], "ES256");
    let key = jsonwebtoken::DecodingKey::from_ec_pem(pk["publicKey"].as_str().unwrap().as_bytes())
        .unwrap();
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::ES256);
    validation.set_audience(&[app.app.to_string()]);
    let data = jsonwebtoken::decode::<serde_json::Value>(&renewed, &key, &validation).unwrap();
    assert_eq!(data.claims["userUUID"], d.user_uuid.as_str());
    assert_eq!(data.header.kid.as_deref(), pk["kid"].as_str());

    // Logout revokes both tokens of the device session.
    let (status, _) = app
        .bearer(Method::DELETE, "/authentication/logout", &renewed, None)
        .await;
    assert_eq!(status, StatusCode::OK);
    for token in [&renewed, &d.token] {
        let (status, resp) = app.bearer(Method::GET, "/jwt/validate", token, None).await;
        assert_eq!(
            (status, code(&resp)),
            (StatusCode::UNAUTHORIZED, "AN-JWTT-1003")
        );
    }

    // A new login opens a new session whose token validates.
    let (status, resp) = app.login(&d).await;
    assert_eq!(status, StatusCode::OK, "{resp}");
    d.take(&resp);
    let (status, _) = app
        .bearer(Method::GET, "/jwt/validate", &d.token, None)
        .await;
    assert_eq!(status, StatusCode::OK);
}
