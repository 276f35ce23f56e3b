//! A browser application may call the provider from the origin of a registered redirect URI,
//! and read discovery and the JWKS from anywhere; other origins get no CORS permission.

use reqwest::{Method, StatusCode, header::HeaderMap};

use crate::oidc::Provider;

/// The origin of [`crate::oidc::CB`].
const RP_ORIGIN: &str = "https://rp.example";

#[tokio::test]
async fn a_registered_origin_may_exchange_a_code_from_the_browser() {
    let op = Provider::spawn().await;

    let preflight = preflight(&op, "token", RP_ORIGIN).await;
    assert!(preflight.0.is_success(), "{:?}", preflight.0);
    assert_eq!(allowed_origin(&preflight.1), Some(RP_ORIGIN));
    let headers = lower(&preflight.1, "access-control-allow-headers");
    assert!(
        headers.contains("authorization") && headers.contains("content-type"),
        "{headers}"
    );
    assert!(
        preflight
            .1
            .get("access-control-allow-credentials")
            .is_none()
    );

    let mut device = op.app.new_device("Browser").await;
    let a = op.authz();
    let code = op.code(&mut device, &a).await;
    let verifier = a.verifier.clone().unwrap();
    let response = op
        .http
        .post(op.endpoint("token"))
        .header("origin", RP_ORIGIN)
        .basic_auth(&op.client_id, Some(&op.secret))
        .form(&[
            ("grant_type", "authorization_code"),
            ("code", code.as_str()),
            ("redirect_uri", a.redirect_uri.as_deref().unwrap()),
            ("code_verifier", verifier.as_str()),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(allowed_origin(response.headers()), Some(RP_ORIGIN));
}

#[tokio::test]
async fn a_rate_limited_answer_is_readable_by_the_page_that_got_it() {
    let op = Provider::spawn_with(|c| {
        c.rate_limits.relying_party_per_address = latchkey::config::Rate::new(0.01, 1);
    })
    .await;

    let mut last = None;
    for _ in 0..3 {
        let response = op
            .http
            .get(op.endpoint("userinfo"))
            .header("origin", RP_ORIGIN)
            .bearer_auth("not-a-token")
            .send()
            .await
            .unwrap();
        last = Some(response);
    }
    let response = last.unwrap();

    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(allowed_origin(response.headers()), Some(RP_ORIGIN));
    let exposed = lower(response.headers(), "access-control-expose-headers");
    assert!(
        exposed.contains("retry-after") && exposed.contains("www-authenticate"),
        "{exposed}"
    );
}

#[tokio::test]
async fn another_origin_gets_no_permission() {
    let op = Provider::spawn().await;

    for endpoint in ["token", "userinfo", "revoke"] {
        for origin in [
            "https://evil.example",
            "https://rp.example.evil.test",
            "null",
        ] {
            let (status, headers) = preflight(&op, endpoint, origin).await;
            assert!(
                status.is_success(),
                "answered by CORS, not refused by routing"
            );
            assert_eq!(allowed_origin(&headers), None, "{endpoint} from {origin}");
        }
    }
}

#[tokio::test]
async fn discovery_and_the_jwks_are_readable_from_any_origin() {
    let op = Provider::spawn().await;

    for endpoint in [".well-known/openid-configuration", "jwks"] {
        let response = op
            .http
            .get(op.endpoint(endpoint))
            .header("origin", "https://anyone.example")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{endpoint}");
        assert_eq!(allowed_origin(response.headers()), Some("*"), "{endpoint}");
    }
}

/// A browser's preflight for a POST with an Authorization header.
async fn preflight(op: &Provider, endpoint: &str, origin: &str) -> (StatusCode, HeaderMap) {
    let response = op
        .http
        .request(Method::OPTIONS, op.endpoint(endpoint))
        .header("origin", origin)
        .header("access-control-request-method", "POST")
        .header(
            "access-control-request-headers",
            "authorization, content-type",
        )
        .send()
        .await
        .unwrap();
    (response.status(), response.headers().clone())
}

fn allowed_origin(headers: &HeaderMap) -> Option<&str> {
    headers
        .get("access-control-allow-origin")
        .map(|v| v.to_str().unwrap())
}

/// A header's value in lower case (header lists are case-insensitive).
fn lower(headers: &HeaderMap, name: &str) -> String {
    headers[name].to_str().unwrap().to_ascii_lowercase()
}
