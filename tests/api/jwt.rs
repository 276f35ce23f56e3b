//! JWT validation refuses every token it should: `alg: none`, other algorithms, foreign or
//! missing keys, other applications, wrong times, missing claims, and revoked sessions. Each
//! refusal is checked on `/jwt/validate` and on a Bearer route.

use aws_lc_rs::{
    rand::SystemRandom,
    rsa::KeySize,
    signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, RSA_PKCS1_SHA256, RsaKeyPair},
};
use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use latchkey_storage::{
    Durability, FjallStore, Record as _, Space, Store as _, records::KeyRecord,
};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::{
    devices::second_device,
    helpers::{Device, TestApp, code},
};

// == Token surgery

fn b64_json(value: &Value) -> String {
    URL_SAFE_NO_PAD.encode(value.to_string())
}

fn segment(token: &str, index: usize) -> Value {
    let part = token.split('.').nth(index).unwrap();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).unwrap()).unwrap()
}

fn header_of(token: &str) -> Value {
    segment(token, 0)
}

fn claims_of(token: &str) -> Value {
    segment(token, 1)
}

/// A compact JWS over `header` and `claims` signed by an ES256 PKCS#8 key.
fn sign_es256(pkcs8: &[u8], header: &Value, claims: &Value) -> String {
    let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8).unwrap();
    let input = format!("{}.{}", b64_json(header), b64_json(claims));
    let sig = pair.sign(&SystemRandom::new(), input.as_bytes()).unwrap();
    format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig.as_ref()))
}

/// Reads the application's current signing key from the data directory, the way someone
/// who stole the directory would (the server is stopped meanwhile and restarted after).
async fn steal_signing_key(app: &mut TestApp) -> KeyRecord {
    app.stop_server().await;
    let store = FjallStore::open(&app.data_dir(), Durability::Sync).unwrap();
    let keys = store
        .scan_prefix(Space::Keys, app.app.as_bytes())
        .unwrap()
        .into_iter()
        .map(|(_, v)| KeyRecord::decode(&v).unwrap())
        .collect::<Vec<_>>();
    drop(store);
    app.restart().await;
    // The access-token key; the application's RS256 key signs ID tokens.
    keys.into_iter()
        .find(|k| k.current && k.alg == "ES256")
        .unwrap()
}

// == Checks

/// Both `/jwt/validate` and `/user/current` refuse `token` with 401 and `expected`.
async fn assert_refused(app: &TestApp, token: &str, expected: &str, what: &str) {
    for path in ["/jwt/validate", "/user/current"] {
        let (status, resp) = app.bearer(Method::GET, path, token, None).await;
        assert_eq!(
            (status, code(&resp)),
            (StatusCode::UNAUTHORIZED, expected),
            "{what} on {path}: {resp}"
        );
        assert_eq!(resp["responseStatus"]["status"], "ERROR", "{what}");
    }
}

async fn assert_accepted(app: &TestApp, token: &str, what: &str) {
    for path in ["/jwt/validate", "/user/current"] {
        let (status, resp) = app.bearer(Method::GET, path, token, None).await;
        assert_eq!(status, StatusCode::OK, "{what} on {path}: {resp}");
    }
}

async fn public_key(app: &TestApp) -> Value {
    let path = format!("/jwt/public-key?applicationUuid={}", app.app);
    let (status, pk) = app.call(Method::GET, &path, None, &[]).await;
    assert_eq!(status, StatusCode::OK, "{pk}");
    pk
}

// == alg and keys

#[tokio::test]
async fn alg_none_is_refused_in_every_spelling() {
    let app = TestApp::spawn().await;
    let d = app.new_device("Nobody").await;
    assert_accepted(&app, &d.token, "the real token").await;
    let real_header = header_of(&d.token);
    let claims = b64_json(&claims_of(&d.token));

    for alg in ["none", "None", "NONE", "nOnE"] {
        let mut header = real_header.clone();
        header["alg"] = json!(alg);
        let forged = format!("{}.{claims}.", b64_json(&header));
        assert_refused(&app, &forged, "AN-JWTT-1001", &format!("alg {alg}")).await;
        // The real signature left on does not help either.
        let real_sig = d.token.rsplit('.').next().unwrap();
        let forged = format!("{}.{claims}.{real_sig}", b64_json(&header));
        assert_refused(
            &app,
            &forged,
            "AN-JWTT-1001",
            &format!("alg {alg} with a signature"),
        )
        .await;
    }
    let bare = json!({"alg": "none", "typ": "JWT"});
    let forged = format!("{}.{claims}.", b64_json(&bare));
    assert_refused(&app, &forged, "AN-JWTT-1001", "alg none without kid").await;
}

#[tokio::test]
async fn a_token_resigned_with_hs256_over_the_public_key_is_refused() {
    let app = TestApp::spawn().await;
    let d = app.new_device("Confused").await;
    let pk = public_key(&app).await;
    let pem = pk["publicKey"].as_str().unwrap();
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
    header.kid = pk["kid"].as_str().map(str::to_owned);
    let claims = claims_of(&d.token);

    for secret in [pem.as_bytes(), pem.trim_end().as_bytes()] {
        let key = jsonwebtoken::EncodingKey::from_secret(secret).unwrap();
        let forged = jsonwebtoken::encode(&header, &claims, &key).unwrap();
        assert_refused(&app, &forged, "AN-JWTT-1001", "HS256 over the PEM").await;
    }
    assert_accepted(&app, &d.token, "the real token").await;
}

#[tokio::test]
async fn a_token_signed_by_a_foreign_key_under_the_real_kid_is_refused() {
    let app = TestApp::spawn().await;
    let d = app.new_device("Impostor").await;
    let header = header_of(&d.token);
    let claims = claims_of(&d.token);
    let rng = SystemRandom::new();

    // Same algorithm, another key.
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
    let forged = sign_es256(pkcs8.as_ref(), &header, &claims);
    assert_refused(&app, &forged, "AN-JWTT-1001", "foreign ES256 key").await;

    // Another algorithm, another key.
    let rsa = RsaKeyPair::generate(KeySize::Rsa2048).unwrap();
    let mut rs_header = header.clone();
    rs_header["alg"] = json!("RS256");
    let input = format!("{}.{}", b64_json(&rs_header), b64_json(&claims));
    let mut sig = vec![0u8; rsa.public_modulus_len()];
    rsa.sign(&RSA_PKCS1_SHA256, &rng, input.as_bytes(), &mut sig)
        .unwrap();
    let forged = format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig));
    assert_refused(&app, &forged, "AN-JWTT-1001", "foreign RS256 key").await;

    assert_accepted(&app, &d.token, "the real token").await;
}

#[tokio::test]
async fn tokens_with_an_unknown_garbage_or_missing_kid_are_refused_even_when_correctly_signed() {
    let mut app = TestApp::spawn().await;
    let d = app.new_device("Kidless").await;
    let key = steal_signing_key(&mut app).await;
    let claims = claims_of(&d.token);

    // The control: the stolen key and these claims make a token the server accepts, so the
    // refusals below are about the kid and nothing else.
    let good = sign_es256(
        &key.pkcs8,
        &json!({"alg": "ES256", "typ": "JWT", "kid": key.kid}),
        &claims,
    );
    assert_accepted(&app, &good, "correctly signed with the real kid").await;

    let headers = [
        (
            "unknown kid",
            json!({"alg": "ES256", "typ": "JWT", "kid": "no-such-kid"}),
        ),
        (
            "kid of another length",
            json!({"alg": "ES256", "typ": "JWT", "kid": format!("{}x", key.kid)}),
        ),
        (
            "empty kid",
            json!({"alg": "ES256", "typ": "JWT", "kid": ""}),
        ),
        (
            "garbage kid",
            json!({"alg": "ES256", "typ": "JWT", "kid": "../../\u{0}'; DROP TABLE keys;--"}),
        ),
        (
            "numeric kid",
            json!({"alg": "ES256", "typ": "JWT", "kid": 42}),
        ),
        (
            "object kid",
            json!({"alg": "ES256", "typ": "JWT", "kid": {"kid": key.kid}}),
        ),
        (
            "huge kid",
            json!({"alg": "ES256", "typ": "JWT", "kid": "k".repeat(4000)}),
        ),
        ("missing kid", json!({"alg": "ES256", "typ": "JWT"})),
    ];
    for (what, header) in headers {
        let forged = sign_es256(&key.pkcs8, &header, &claims);
        assert_refused(&app, &forged, "AN-JWTT-1001", what).await;
    }
}

// == Applications

#[tokio::test]
async fn a_token_of_another_application_is_refused_under_this_applications_header() {
    let app = TestApp::spawn().await;
    let (other, other_key) = app.engine().create_app("other").await.unwrap();
    let other_uuid = other.uuid.to_string();

    // A user of the other application, signed up and activated there.
    let mut d = Device::new("Stranger");
    let body = json!({"applicationUuid": other_uuid, "username": "Stranger",
                      "email": "stranger@example.test"});
    let headers = [("x-api-key", other_key.as_str())];
    let (status, resp) = app
        .call(Method::POST, "/self-service/user", Some(&body), &headers)
        .await;
    assert_eq!(status, StatusCode::OK, "{resp}");
    let body = json!({"applicationUuid": other_uuid, "username": "Stranger",
                      "activationToken": resp["activationToken"],
                      "hashedPin": d.hashed_pin(), "deviceName": "phone"});
    let (status, resp) = app
        .call(
            Method::POST,
            "/authentication/activate/user",
            Some(&body),
            &headers,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{resp}");
    d.take(&resp);

    // Each token's audience is its own application.
    let claims = claims_of(&d.token);
    assert_eq!(claims["aud"], other_uuid.as_str());
    assert_eq!(claims["applicationUUID"], other_uuid.as_str());
    let mine = app.new_device("Local").await;
    assert_eq!(claims_of(&mine.token)["aud"], app.app.to_string());
    assert_ne!(header_of(&mine.token)["kid"], header_of(&d.token)["kid"]);

    // Presented as this application's: refused.
    let auth = format!("Bearer {}", d.token);
    let this_app = app.app.to_string();
    for path in ["/jwt/validate", "/user/current", "/jwt/renew"] {
        let (status, resp) = app
            .call(
                Method::GET,
                path,
                None,
                &[("authorization", &auth), ("x-application-uuid", &this_app)],
            )
            .await;
        assert_eq!(
            (status, code(&resp)),
            (StatusCode::UNAUTHORIZED, "AN-JWTT-1001"),
            "{path}: {resp}"
        );
    }
    // Under its own application it is a good token (so the refusal was about the application).
    let (status, resp) = app
        .call(
            Method::GET,
            "/jwt/validate",
            None,
            &[
                ("authorization", &auth),
                ("x-application-uuid", &other_uuid),
            ],
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{resp}");
    // And this application's token is refused under the other application's header.
    let auth = format!("Bearer {}", mine.token);
    let (status, resp) = app
        .call(
            Method::GET,
            "/jwt/validate",
            None,
            &[
                ("authorization", &auth),
                ("x-application-uuid", &other_uuid),
            ],
        )
        .await;
    assert_eq!(
        (status, code(&resp)),
        (StatusCode::UNAUTHORIZED, "AN-JWTT-1001"),
        "{resp}"
    );
}

// == Times

#[tokio::test]
async fn an_expired_token_is_refused_as_expired() {
    let app = TestApp::spawn().await;
    let d = app.new_device("Late").await;
    assert_accepted(&app, &d.token, "a fresh token").await;

    let claims = claims_of(&d.token);
    let ttl = claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap();
    assert_eq!(ttl, 900, "the default lifetime is 15 minutes");
    app.clock.advance(ttl + 1);
    assert_refused(&app, &d.token, "AN-JWTT-1002", "expired").await;
    let (status, resp) = app.bearer(Method::GET, "/jwt/renew", &d.token, None).await;
    assert_eq!(
        (status, code(&resp)),
        (StatusCode::UNAUTHORIZED, "AN-JWTT-1002"),
        "renew of an expired token: {resp}"
    );
}

#[tokio::test]
async fn a_token_used_before_its_nbf_is_refused() {
    let app = TestApp::spawn().await;
    let d = app.new_device("Early").await;
    let claims = claims_of(&d.token);
    assert!(claims["nbf"].as_u64().is_some(), "{claims}");

    app.clock.advance(-600);
    assert_refused(&app, &d.token, "AN-JWTT-1001", "before nbf").await;

    // Back in its window it is good again: the refusal was about time, not revocation.
    app.clock.advance(600);
    assert_accepted(&app, &d.token, "back in its window").await;
}

#[tokio::test]
async fn correctly_signed_tokens_without_exp_or_with_bad_claims_are_refused() {
    let mut app = TestApp::spawn().await;
    let d = app.new_device("Forever").await;
    let key = steal_signing_key(&mut app).await;
    let header = json!({"alg": "ES256", "typ": "JWT", "kid": key.kid});
    let claims = claims_of(&d.token);

    // The control: the same forging with every claim valid does validate.
    let encoding = jsonwebtoken::EncodingKey::from_ec_der(&key.pkcs8);
    let mut jwt_header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
    jwt_header.kid = Some(key.kid.clone());
    let good = jsonwebtoken::encode(&jwt_header, &claims, &encoding).unwrap();
    assert_accepted(&app, &good, "forged with every claim valid").await;

    let mut no_exp = claims.clone();
    no_exp.as_object_mut().unwrap().remove("exp");
    let forged = jsonwebtoken::encode(&jwt_header, &no_exp, &encoding).unwrap();
    assert_refused(&app, &forged, "AN-JWTT-1001", "no exp").await;

    let variants = [
        ("exp null", "exp", Value::Null),
        ("exp as a string", "exp", json!("99999999999")),
        ("nbf missing", "nbf", Value::Null),
        (
            "aud of another application",
            "aud",
            json!(uuid::Uuid::new_v4().to_string()),
        ),
        ("aud missing", "aud", Value::Null),
        (
            "sid of no session",
            "sid",
            json!(uuid::Uuid::new_v4().to_string()),
        ),
    ];
    for (what, field, value) in variants {
        let mut bad = claims.clone();
        if what.ends_with("missing") {
            bad.as_object_mut().unwrap().remove(field);
        } else {
            bad[field] = value;
        }
        let forged = sign_es256(&key.pkcs8, &header, &bad);
        let expected = if field == "sid" {
            "AN-JWTT-1003"
        } else {
            "AN-JWTT-1001"
        };
        assert_refused(&app, &forged, expected, what).await;
    }
}

// == Revocation

#[tokio::test]
async fn a_logged_out_devices_tokens_are_refused_as_revoked() {
    let app = TestApp::spawn().await;
    let d = app.new_device("Leaver").await;
    let (status, renewed) = app.bearer(Method::GET, "/jwt/renew", &d.token, None).await;
    assert_eq!(status, StatusCode::OK);
    let renewed = renewed["accessToken"]["token"].as_str().unwrap().to_owned();

    let (status, resp) = app
        .bearer(Method::DELETE, "/authentication/logout", &d.token, None)
        .await;
    assert_eq!(status, StatusCode::OK, "{resp}");
    assert_refused(&app, &d.token, "AN-JWTT-1003", "logged out").await;
    assert_refused(&app, &renewed, "AN-JWTT-1003", "renewed, then logged out").await;
    let (status, resp) = app.bearer(Method::GET, "/jwt/renew", &d.token, None).await;
    assert_eq!(
        (status, code(&resp)),
        (StatusCode::UNAUTHORIZED, "AN-JWTT-1003")
    );
}

#[tokio::test]
async fn a_deleted_devices_token_is_refused_as_revoked() {
    let app = TestApp::spawn().await;
    let d = app.new_device("Shredder").await;
    let other = second_device(&app, &d).await;

    let path = format!("/device/{}", d.device_uuid);
    let (status, resp) = app.bearer(Method::DELETE, &path, &d.token, None).await;
    assert_eq!(status, StatusCode::OK, "{resp}");
    assert_refused(&app, &d.token, "AN-JWTT-1003", "deleted device").await;
    // Only that device: the user's other device is untouched.
    assert_accepted(&app, &other.token, "the other device").await;
    let (status, resp) = app.login(&d).await;
    assert_eq!(
        (status, code(&resp)),
        (StatusCode::BAD_REQUEST, "AN-HENG-1005"),
        "{resp}"
    );
}

#[tokio::test]
async fn a_deleted_users_tokens_are_refused_as_revoked() {
    let app = TestApp::spawn().await;
    let d = app.new_device("Vanisher").await;
    let other = second_device(&app, &d).await;

    let path = format!("/user/{}", d.user_uuid);
    let (status, resp) = app.bearer(Method::DELETE, &path, &d.token, None).await;
    assert_eq!(status, StatusCode::OK, "{resp}");
    assert_refused(&app, &d.token, "AN-JWTT-1003", "deleted user").await;
    assert_refused(
        &app,
        &other.token,
        "AN-JWTT-1003",
        "deleted user's other device",
    )
    .await;
}

#[tokio::test]
async fn a_locked_devices_token_stays_revoked_after_the_unlock() {
    let app = TestApp::spawn().await;
    let mut phone = app.new_device("Careful").await;
    let tablet = second_device(&app, &phone).await;
    let old_token = phone.token.clone();

    let path = format!("/device/{}", phone.device_uuid);
    let (status, resp) = app
        .bearer(
            Method::PATCH,
            &path,
            &phone.token,
            Some(&json!({"locked": true})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{resp}");
    assert_refused(&app, &old_token, "AN-JWTT-1003", "locked device").await;
    assert_accepted(&app, &tablet.token, "the user's other device").await;

    // While the user's own lock holds, the device cannot log in either.
    let (status, resp) = app.login(&phone).await;
    assert_eq!(
        (status, code(&resp)),
        (StatusCode::BAD_REQUEST, "AN-AUTH-1031"),
        "login while self-locked: {resp}"
    );

    // The other device lifts the lock; the old token stays revoked, a new login works.
    let (status, resp) = app
        .bearer(
            Method::PATCH,
            &path,
            &tablet.token,
            Some(&json!({"locked": false})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{resp}");
    assert_refused(
        &app,
        &old_token,
        "AN-JWTT-1003",
        "unlocked device's old token",
    )
    .await;
    let (status, resp) = app.login(&phone).await;
    assert_eq!(status, StatusCode::OK, "{resp}");
    phone.take(&resp);
    assert_accepted(&app, &phone.token, "a token from a new login").await;
}

#[tokio::test]
async fn a_pin_reset_of_a_self_locked_device_hands_out_no_dead_token() {
    // A user with one device locks it: its token is revoked and it cannot log in. The PIN
    // reset still runs on a locked device; whatever it answers, a 200 must carry a token
    // that works, and a refusal must be a 4xx with the envelope.
    let app = TestApp::spawn().await;
    let mut d = app.new_device("Solo").await;
    let path = format!("/device/{}", d.device_uuid);
    let (status, resp) = app
        .bearer(
            Method::PATCH,
            &path,
            &d.token,
            Some(&json!({"locked": true})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{resp}");
    let (status, resp) = app.login(&d).await;
    assert_eq!(
        (status, code(&resp)),
        (StatusCode::BAD_REQUEST, "AN-AUTH-1031"),
        "login while self-locked: {resp}"
    );

    let body = json!({"applicationUuid": app.app, "username": "Solo",
                      "deviceUuid": d.device_uuid});
    let (status, forgot) = app.backend("/authentication/forgot-pin", &body).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "forgot/reset still work while locked: {forgot}"
    );
    d.pin = "5555".into();
    let body = json!({"applicationUuid": app.app, "username": "Solo",
                      "deviceUuid": d.device_uuid, "hashedPin": d.hashed_pin(),
                      "resetPinToken": forgot["resetPinToken"]});
    let (status, reset) = app.backend("/authentication/reset-pin", &body).await;
    if status == StatusCode::OK {
        d.take(&reset);
        assert_accepted(&app, &d.token, "the token a PIN reset handed out").await;
        let (status, resp) = app.login(&d).await;
        assert_eq!(status, StatusCode::OK, "login with the new PIN: {resp}");
    } else {
        assert_eq!(status, StatusCode::BAD_REQUEST, "{reset}");
        assert_eq!(reset["responseStatus"]["status"], "ERROR", "{reset}");
    }
}
