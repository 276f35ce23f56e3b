//! OpenID Connect clients and issuer: client authentication at the token endpoint (Basic with
//! RFC 6749's form-url-encoding, `client_secret_post`, `none` for public clients that must use
//! PKCE, the default client with the API key), and an issuer that comes from configuration
//! only, whatever `Host` or `X-Forwarded-Host` a request carries.

use latchkey::BASE;
use reqwest::StatusCode;
use serde_json::Value;

use crate::oidc::{Auth, CB, PUBLIC_URL, Provider, audiences, claims_of, post_form, query_param};

/// Percent-encodes every byte: what a form-url-encoding client may send for any character.
fn encode_all(s: &str) -> String {
    s.bytes().map(|b| format!("%{b:02X}")).collect()
}

fn basic_raw(id: &str, secret: &str) -> Auth {
    use base64::{Engine as _, engine::general_purpose::STANDARD};
    Auth::Header(format!(
        "Basic {}",
        STANDARD.encode(format!("{id}:{secret}"))
    ))
}

#[tokio::test]
async fn client_secret_basic_form_url_decodes_the_id_and_secret() {
    let op = Provider::spawn().await;
    let mut device = op.app.new_device("Basic").await;
    let ways = [
        ("plain", basic_raw(&op.client_id, &op.secret)),
        (
            "every byte percent-encoded",
            basic_raw(&encode_all(&op.client_id), &encode_all(&op.secret)),
        ),
        (
            "lower-case percent-encoding of the id only",
            basic_raw(&encode_all(&op.client_id).to_lowercase(), &op.secret),
        ),
    ];
    for (what, auth) in ways {
        let a = op.authz();
        let code = op.code(&mut device, &a).await;
        let (status, body) = op.exchange(&code, &a, &auth).await;
        assert_eq!(status, StatusCode::OK, "{what}: {body}");
    }

    // Decoding is not a way around the secret: a `+` is a space, not a plus.
    let a = op.authz();
    let code = op.code(&mut device, &a).await;
    let spaced = format!("{}+", op.secret);
    let (status, body) = op
        .exchange(&code, &a, &basic_raw(&op.client_id, &spaced))
        .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("invalid_client")),
        "{body}"
    );
}

#[tokio::test]
async fn client_secret_post_works_and_a_wrong_secret_is_401_invalid_client() {
    let op = Provider::spawn().await;
    let mut device = op.app.new_device("Post").await;
    let a = op.authz();
    let code = op.code(&mut device, &a).await;
    let post = Auth::Post(op.client_id.clone(), op.secret.clone());
    let (status, body) = op.exchange(&code, &a, &post).await;
    assert_eq!(status, StatusCode::OK, "{body}");

    let wrong = format!("{}x", op.secret);
    for (what, auth) in [
        ("Basic", Auth::Basic(op.client_id.clone(), wrong.clone())),
        ("post", Auth::Post(op.client_id.clone(), wrong.clone())),
        ("no secret", Auth::Public(op.client_id.clone())),
        ("no client authentication at all", Auth::Nothing),
        (
            "an unknown client",
            Auth::Basic(uuid::Uuid::new_v4().to_string(), op.secret.clone()),
        ),
        (
            "an empty secret",
            Auth::Basic(op.client_id.clone(), String::new()),
        ),
        ("not Basic", Auth::Header(format!("Bearer {}", op.secret))),
        (
            "Basic without a colon",
            Auth::Header("Basic bm9jb2xvbg==".into()),
        ),
    ] {
        let code = op.code(&mut device, &a).await;
        let (status, body) = op.exchange(&code, &a, &auth).await;
        assert_eq!(
            (status, body["error"].as_str()),
            (StatusCode::UNAUTHORIZED, Some("invalid_client")),
            "{what}: {body}"
        );
        // A failed client authentication does not burn the code.
        let (status, body) = op.exchange(&code, &a, &op.basic()).await;
        assert_eq!(
            status,
            StatusCode::OK,
            "{what}, then the right secret: {body}"
        );
    }
}

#[tokio::test]
async fn basic_and_client_secret_post_at_once_is_400_invalid_request() {
    let op = Provider::spawn().await;
    let mut device = op.app.new_device("Twice").await;
    let a = op.authz();
    let code = op.code(&mut device, &a).await;
    let both = Auth::BasicAndPost(op.client_id.clone(), op.secret.clone());
    let (status, body) = op.exchange(&code, &a, &both).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_request")),
        "{body}"
    );
    for endpoint in ["introspect", "revoke"] {
        let (status, body) = op.post_form(endpoint, &[("token", "x")], &both).await;
        assert_eq!(
            (status, body["error"].as_str()),
            (StatusCode::BAD_REQUEST, Some("invalid_request")),
            "{endpoint}: {body}"
        );
    }
}

#[tokio::test]
async fn a_public_client_must_use_pkce_and_authenticates_with_none() {
    let op = Provider::spawn().await;
    let mut device = op.app.new_device("Public").await;
    let (public, secret) = op
        .app
        .engine()
        .create_client(op.app.app, vec![CB.into()], true)
        .await
        .unwrap();
    assert_eq!(secret, None, "a public client has no secret");
    let mut a = op.authz();
    a.client_id = public.clone();

    // Without PKCE: sent back to the client with an error, never to the login page.
    let mut no_pkce = a.clone();
    no_pkce.verifier = None;
    let answer = op.authorize(&no_pkce).await;
    assert_eq!(answer.status, StatusCode::FOUND, "{}", answer.body);
    let location = answer.location.unwrap();
    assert!(location.starts_with(&format!("{CB}?")), "{location}");
    assert_eq!(
        query_param(&location, "error").as_deref(),
        Some("invalid_request")
    );
    assert_eq!(query_param(&location, "htOidTxid"), None);

    // With PKCE: the exchange authenticates with the client id alone.
    let code = op.code(&mut device, &a).await;
    let (status, tokens) = op.exchange(&code, &a, &Auth::Public(public.clone())).await;
    assert_eq!(status, StatusCode::OK, "{tokens}");
    assert_eq!(
        audiences(&claims_of(tokens["id_token"].as_str().unwrap())),
        [public.as_str()]
    );
    let (status, body) = op
        .refresh(
            tokens["refresh_token"].as_str().unwrap(),
            &Auth::Public(public.clone()),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "a public client refreshes: {body}");

    // A public client that sends a secret, or leaves out the verifier, gets nothing.
    let code = op.code(&mut device, &a).await;
    for (what, auth) in [
        ("Basic", Auth::Basic(public.clone(), "anything".into())),
        ("post", Auth::Post(public.clone(), "anything".into())),
    ] {
        let (status, body) = op.exchange(&code, &a, &auth).await;
        assert_eq!(
            (status, body["error"].as_str()),
            (StatusCode::UNAUTHORIZED, Some("invalid_client")),
            "{what}: {body}"
        );
    }
    let mut no_verifier = a.clone();
    no_verifier.verifier = None;
    let (status, body) = op
        .exchange(&code, &no_verifier, &Auth::Public(public.clone()))
        .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_grant")),
        "{body}"
    );

    // A confidential client cannot pass itself off as public.
    let code = op.code(&mut device, &op.authz()).await;
    let (status, body) = op
        .exchange(&code, &op.authz(), &Auth::Public(op.client_id.clone()))
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
}

#[tokio::test]
async fn the_default_client_is_the_application_with_its_api_key_as_secret() {
    let op = Provider::spawn().await;
    let mut device = op.app.new_device("Default").await;
    let app_id = op.app.app.to_string();
    op.app
        .engine()
        .update_client(&app_id, vec![CB.into()])
        .await
        .unwrap();
    let mut a = op.authz();
    a.client_id = app_id.clone();
    let code = op.code(&mut device, &a).await;
    let wrong = Auth::Basic(app_id.clone(), op.secret.clone());
    let (status, body) = op.exchange(&code, &a, &wrong).await;
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "another client's secret: {body}"
    );
    let (status, tokens) = op
        .exchange(
            &code,
            &a,
            &Auth::Basic(app_id.clone(), op.app.api_key.clone()),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{tokens}");
    assert_eq!(
        audiences(&claims_of(tokens["id_token"].as_str().unwrap())),
        [app_id.as_str()]
    );

    // The short paths find the application from the client.
    let url = format!("{}{BASE}/openid/introspect", op.app.base);
    let auth = Auth::Basic(app_id, op.app.api_key.clone());
    let token = tokens["access_token"].as_str().unwrap();
    let (status, answer) = post_form(&op.http, &url, &[("token", token)], &auth).await;
    assert_eq!(
        (status, answer["active"].as_bool()),
        (StatusCode::OK, Some(true)),
        "{answer}"
    );
}

#[tokio::test]
async fn one_application_s_tokens_are_nothing_at_another_application_s_issuer() {
    let op = Provider::spawn().await;
    let mut device = op.app.new_device("Local").await;
    let tokens = op.tokens(&mut device, &op.authz()).await;
    let access = tokens["access_token"].as_str().unwrap();
    let (other, _) = op.app.engine().create_app("other").await.unwrap();
    let at_other = |name: &str| format!("{}{BASE}/openid/{}/{name}", op.app.base, other.uuid);

    let resp = op
        .http
        .get(at_other("userinfo"))
        .bearer_auth(access)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    for name in ["introspect", "revoke"] {
        let (status, body) =
            post_form(&op.http, &at_other(name), &[("token", access)], &op.basic()).await;
        assert_eq!(
            (status, body["error"].as_str()),
            (StatusCode::UNAUTHORIZED, Some("invalid_client")),
            "{name}: {body}"
        );
    }
    let refresh = [
        ("grant_type", "refresh_token"),
        ("refresh_token", tokens["refresh_token"].as_str().unwrap()),
    ];
    let (status, body) = post_form(&op.http, &at_other("token"), &refresh, &op.basic()).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    // None of that harmed the tokens at their own issuer.
    assert!(op.active(access).await);
    let (status, info) = op.userinfo(access).await;
    assert_eq!(status, StatusCode::OK, "{info}");
}

#[tokio::test]
async fn a_public_client_cannot_introspect_another_client_s_tokens() {
    // RFC 7662 2.1 and 4: the introspection endpoint MUST require authorization, to stop token
    // scanning. A public client proves nothing (its id is in every browser's address bar), so
    // it must not learn what another client's token is and whom it names.
    let op = Provider::spawn().await;
    let mut device = op.app.new_device("Scanned").await;
    let tokens = op.tokens(&mut device, &op.authz()).await;
    let (public, _) = op
        .app
        .engine()
        .create_client(op.app.app, vec![CB.into()], true)
        .await
        .unwrap();
    for kind in ["access_token", "refresh_token"] {
        let token = tokens[kind].as_str().unwrap();
        let (status, body) = op
            .post_form(
                "introspect",
                &[("token", token)],
                &Auth::Public(public.clone()),
            )
            .await;
        assert!(
            body["active"] != true && body.get("sub").is_none(),
            "a public client introspected the confidential client's {kind}: {status} {body}"
        );
    }
}

// == The issuer

#[tokio::test]
async fn every_token_s_iss_is_the_discovery_issuer_whatever_host_the_request_names() {
    let op = Provider::spawn().await;
    let mut device = op.app.new_device("Hosted").await;
    let issuer = op.issuer();
    let spoofs: [&[(&str, &str)]; 4] = [
        &[],
        &[("host", "evil.test")],
        &[
            ("x-forwarded-host", "evil.test"),
            ("x-forwarded-proto", "http"),
        ],
        &[
            ("host", "evil.test:8443"),
            ("x-forwarded-host", "other.test"),
            ("forwarded", "host=forwarded.test;proto=http"),
        ],
    ];
    for headers in spoofs {
        let what = format!("{headers:?}");
        let with = |mut req: reqwest::RequestBuilder| {
            for (k, v) in headers {
                req = req.header(*k, *v);
            }
            req
        };

        // Discovery names the configured issuer, and every endpoint under it.
        let url = op.endpoint(".well-known/openid-configuration");
        let doc: Value = with(op.http.get(url))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(doc["issuer"], issuer.as_str(), "{what}: {doc}");
        for key in [
            "authorization_endpoint",
            "token_endpoint",
            "jwks_uri",
            "userinfo_endpoint",
            "introspection_endpoint",
            "revocation_endpoint",
        ] {
            let url = doc[key].as_str().unwrap_or_default();
            assert!(
                url.starts_with(&format!("{issuer}/")),
                "{what}: {key} = {url}"
            );
        }

        // Authorize sends the browser to the login page under the public URL.
        let a = op.authz();
        let query = crate::oidc::encode(&[
            ("response_type", "code".into()),
            ("client_id", a.client_id.clone()),
            ("redirect_uri", CB.into()),
            ("scope", "openid".into()),
            ("nonce", a.nonce.clone().unwrap()),
            (
                "code_challenge",
                crate::oidc::challenge(a.verifier.as_deref().unwrap()),
            ),
            ("code_challenge_method", "S256".into()),
        ]);
        let resp = with(op.http.get(format!("{}?{query}", op.endpoint("auth"))))
            .send()
            .await
            .unwrap();
        let location = resp.headers()["location"].to_str().unwrap().to_owned();
        assert!(
            location.starts_with(&format!("{PUBLIC_URL}{BASE}/openid/login?")),
            "{what}: {location}"
        );

        // The tokens of the code exchange and of a refresh, with the same headers.
        let txid = query_param(&location, "htOidTxid").unwrap();
        let (status, resp) = op.login_oidc(&mut device, &txid, a.nonce.as_deref()).await;
        assert_eq!(status, StatusCode::OK, "{resp}");
        let code = resp["accessToken"]["token"].as_str().unwrap();
        let fields = crate::oidc::encode(&[
            ("grant_type", "authorization_code".into()),
            ("code", code.into()),
            ("redirect_uri", CB.into()),
            ("code_verifier", a.verifier.clone().unwrap()),
        ]);
        let token_request = |body: String| {
            with(op.http.post(op.endpoint("token")))
                .header(
                    "authorization",
                    crate::oidc::basic(&op.client_id, &op.secret),
                )
                .header("content-type", "application/x-www-form-urlencoded")
                .body(body)
        };
        let tokens: Value = token_request(fields)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let refresh = crate::oidc::encode(&[
            ("grant_type", "refresh_token".into()),
            (
                "refresh_token",
                tokens["refresh_token"].as_str().unwrap().into(),
            ),
        ]);
        let refreshed: Value = token_request(refresh)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        for (name, set) in [("exchange", &tokens), ("refresh", &refreshed)] {
            for kind in ["id_token", "access_token"] {
                let jwt = set[kind]
                    .as_str()
                    .unwrap_or_else(|| panic!("{what}: {name}: {set}"));
                assert_eq!(
                    claims_of(jwt)["iss"],
                    issuer.as_str(),
                    "{what}: {name} {kind}"
                );
            }
        }

        // Introspection says the same issuer.
        let token = refreshed["access_token"].as_str().unwrap();
        let resp = with(op.http.post(op.endpoint("introspect")))
            .header(
                "authorization",
                crate::oidc::basic(&op.client_id, &op.secret),
            )
            .header("content-type", "application/x-www-form-urlencoded")
            .body(crate::oidc::encode(&[("token", token.into())]))
            .send()
            .await
            .unwrap();
        let answer: Value = resp.json().await.unwrap();
        assert_eq!(answer["iss"], issuer.as_str(), "{what}: {answer}");
    }
}

#[tokio::test]
async fn without_a_public_url_the_issuer_is_the_configured_listen_address() {
    // The test server really listens on another port than `listen` names: the issuer must
    // still be the configured one, not the address the request came to.
    let app = crate::helpers::TestApp::spawn().await;
    let path = format!("/openid/{}/.well-known/openid-configuration", app.app);
    let (status, doc) = app.call(reqwest::Method::GET, &path, None, &[]).await;
    assert_eq!(status, StatusCode::OK, "{doc}");
    let listen = latchkey::Config::for_test("unused").listen;
    assert_eq!(
        doc["issuer"],
        format!("http://{listen}{BASE}/openid/{}", app.app).as_str(),
        "{doc}"
    );
    assert_ne!(
        format!("http://{listen}"),
        app.base,
        "the test needs two addresses"
    );
}
