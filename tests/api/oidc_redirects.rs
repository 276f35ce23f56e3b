//! OpenID Connect redirect URIs, `state` and `nonce`: a redirect URI that differs from a
//! registered one in any way is refused with a page and no redirect; clients cannot register
//! a URI that could not be matched exactly; `state` and `nonce` come back byte for byte, and
//! oversized ones are refused without a redirect.

use latchkey::BASE;
use reqwest::StatusCode;
use serde_json::json;

use crate::oidc::{Answer, Authz, CB, PUBLIC_URL, Provider, claims_of, query_param};

/// Asserts that authorize refused with its error page and redirected nowhere.
fn assert_refused_without_redirect(answer: &Answer, what: &str) {
    assert_eq!(
        answer.status,
        StatusCode::BAD_REQUEST,
        "{what}: {:?} {}",
        answer.location,
        answer.body
    );
    assert_eq!(answer.location, None, "{what}: a refusal must not redirect");
    assert!(
        !answer.body.contains("href") && !answer.body.contains("http-equiv"),
        "{what}: the error page must link nowhere: {}",
        answer.body
    );
}

#[tokio::test]
async fn a_redirect_uri_that_differs_from_the_registered_one_in_any_way_is_refused() {
    let op = Provider::spawn().await;
    let near_misses = [
        "https://rp.example/cb/",
        "https://rp.example/cb?x=1",
        "https://rp.example/cb?",
        "https://rp.example/cb#",
        "https://rp.example/cb#frag",
        "https://RP.example/cb",
        "https://rp.EXAMPLE/cb",
        "HTTPS://rp.example/cb",
        "https://rp.example/CB",
        "https://rp.example/x/../cb",
        "https://rp.example/./cb",
        "https://rp.example/%2e%2e/cb",
        "https://rp.example/cb/..",
        "https://rp.example//cb",
        "https://rp.example/c%62",
        "https://rp.example:443/cb",
        "https://rp.example./cb",
        "https://rp.example.evil.test/cb",
        "https://rp-example.test/cb",
        "https://rp.examp1e/cb",
        "https://xn--rp-example.test/cb",
        "https://rp.example@evil.test/cb",
        "https://evil.test@rp.example/cb",
        "https://user:pass@rp.example/cb",
        "https://evil.test\\@rp.example/cb",
        "https://evil.test/cb?https://rp.example/cb",
        "http://rp.example/cb",
        "//rp.example/cb",
        "/cb",
        " https://rp.example/cb",
        "https://rp.example/cb ",
        "https://rp.example/cb%00",
        "",
    ];
    for uri in near_misses {
        let mut a = op.authz();
        a.redirect_uri = Some(uri.into());
        let answer = op.authorize(&a).await;
        assert_refused_without_redirect(&answer, &format!("redirect_uri {uri:?}"));
    }
    // The short path, where the application follows from the client, refuses alike.
    let mut a = op.authz();
    a.redirect_uri = Some("https://rp.example/cb/".into());
    let short = format!("{}{BASE}/openid/auth", op.app.base);
    let answer = op.authorize_at(&short, &a).await;
    assert_refused_without_redirect(&answer, "the short path");

    // The registered URI itself passes, to the login page (not to the client).
    let answer = op.authorize(&op.authz()).await;
    assert_eq!(answer.status, StatusCode::FOUND, "{}", answer.body);
    let location = answer.location.unwrap();
    assert!(location.starts_with(&format!("{PUBLIC_URL}{BASE}/openid/login?")));
}

#[tokio::test]
async fn a_bad_redirect_uri_wins_over_every_other_error_so_nothing_is_sent_there() {
    // Errors after the redirect URI check go back to the client; before it, nowhere. An
    // attacker's URI together with another mistake must still get the page.
    let op = Provider::spawn().await;
    let evil = "https://evil.test/cb";
    let mut cases: Vec<(&str, Authz)> = Vec::new();
    let mut a = op.authz();
    a.extra.push(("response_type".into(), "token".into()));
    cases.push(("a repeated response_type", a));
    let mut a = op.authz();
    a.scope = "profile".into();
    cases.push(("no openid scope", a));
    let mut a = op.authz();
    a.extra
        .push(("code_challenge_method".into(), "plain".into()));
    cases.push(("plain PKCE", a));
    let mut a = op.authz();
    a.extra.push(("prompt".into(), "none".into()));
    cases.push(("prompt=none", a));
    for (what, mut a) in cases {
        a.redirect_uri = Some(evil.into());
        let answer = op.authorize(&a).await;
        assert_refused_without_redirect(&answer, what);
    }

    // With the registered URI such mistakes go back to the client, with the state and the
    // issuer (RFC 9207), and never to the login page.
    let mut no_openid = op.authz();
    no_openid.scope = "profile".into();
    let mut plain = op.authz();
    plain.verifier = None;
    plain
        .extra
        .push(("code_challenge".into(), crate::oidc::verifier()));
    plain
        .extra
        .push(("code_challenge_method".into(), "plain".into()));
    let mut no_method = op.authz();
    no_method.verifier = None;
    no_method
        .extra
        .push(("code_challenge".into(), crate::oidc::verifier()));
    let mut fragment_mode = op.authz();
    fragment_mode
        .extra
        .push(("response_mode".into(), "fragment".into()));
    for (what, a, error) in [
        ("no openid scope", no_openid, "invalid_scope"),
        ("plain PKCE", plain, "invalid_request"),
        ("a challenge without a method", no_method, "invalid_request"),
        ("response_mode=fragment", fragment_mode, "invalid_request"),
    ] {
        let answer = op.authorize(&a).await;
        assert_eq!(answer.status, StatusCode::FOUND, "{what}: {}", answer.body);
        let location = answer.location.unwrap();
        assert!(
            location.starts_with(&format!("{CB}?")),
            "{what}: {location}"
        );
        assert_eq!(
            query_param(&location, "error").as_deref(),
            Some(error),
            "{what}"
        );
        assert_eq!(query_param(&location, "state"), a.state, "{what}");
        assert_eq!(query_param(&location, "iss"), Some(op.issuer()), "{what}");
        assert_eq!(query_param(&location, "code"), None, "{what}");
    }
}

#[tokio::test]
async fn an_unknown_client_or_one_with_no_redirect_uri_is_refused_without_a_redirect() {
    let op = Provider::spawn().await;
    let cases = [
        ("an unknown client", uuid::Uuid::new_v4().to_string()),
        ("the client id in upper case", op.client_id.to_uppercase()),
        ("no client id", String::new()),
        // The default client (id = applicationUuid) has no redirect URI until one is set.
        ("the default client", op.app.app.to_string()),
    ];
    for (what, client_id) in cases {
        let mut a = op.authz();
        a.client_id = client_id;
        let answer = op.authorize(&a).await;
        assert_refused_without_redirect(&answer, what);
    }
    // A client of another application, at this application's issuer.
    let (other_app, _) = op.app.engine().create_app("other").await.unwrap();
    let (other, _) = op
        .app
        .engine()
        .create_client(other_app.uuid, vec![CB.into()], false)
        .await
        .unwrap();
    let mut a = op.authz();
    a.client_id = other;
    let answer = op.authorize(&a).await;
    assert_refused_without_redirect(&answer, "a client of another application");
}

#[tokio::test]
async fn redirect_uri_may_be_left_out_only_when_exactly_one_is_registered() {
    let op = Provider::spawn().await;
    let mut device = op.app.new_device("Solo").await;

    // One registered URI: authorize without redirect_uri uses it, and so may the exchange.
    let mut a = op.authz();
    a.redirect_uri = None;
    let code = op.code(&mut device, &a).await;
    let (status, tokens) = op.exchange(&code, &a, &op.basic()).await;
    assert_eq!(status, StatusCode::OK, "{tokens}");

    // Several registered URIs: authorize without redirect_uri is refused, with no redirect.
    let second = "https://rp.example/other";
    let (two, secret) = op
        .app
        .engine()
        .create_client(op.app.app, vec![CB.into(), second.into()], false)
        .await
        .unwrap();
    let mut a = op.authz();
    a.client_id = two.clone();
    a.redirect_uri = None;
    let answer = op.authorize(&a).await;
    assert_refused_without_redirect(&answer, "no redirect_uri with two registered");

    // Each of the two, named, works.
    for uri in [CB, second] {
        let mut a = op.authz();
        a.client_id = two.clone();
        a.redirect_uri = Some(uri.into());
        let code = op.code(&mut device, &a).await;
        let auth = crate::oidc::Auth::Basic(two.clone(), secret.clone().unwrap());
        let (status, tokens) = op.exchange(&code, &a, &auth).await;
        assert_eq!(status, StatusCode::OK, "{uri}: {tokens}");
    }
}

#[tokio::test]
async fn a_registered_query_is_kept_and_the_code_and_state_are_added_to_it() {
    let op = Provider::spawn().await;
    let mut device = op.app.new_device("Tenant").await;
    let with_query = "https://rp.example/cb?tenant=a&x=%2F";
    op.app
        .engine()
        .update_client(&op.client_id, vec![with_query.into()])
        .await
        .unwrap();
    for near in [
        "https://rp.example/cb?tenant=b&x=%2F",
        "https://rp.example/cb?x=%2F&tenant=a",
        "https://rp.example/cb?tenant=a&x=/",
        "https://rp.example/cb",
    ] {
        let mut a = op.authz();
        a.redirect_uri = Some(near.into());
        assert_refused_without_redirect(&op.authorize(&a).await, near);
    }

    let mut a = op.authz();
    a.redirect_uri = Some(with_query.into());
    let txid = op.begin(&a).await;
    let body = json!({"username": device.username, "deviceUuid": device.device_uuid,
                      "authKey": device.auth_key, "hashedPin": device.hashed_pin()});
    let (status, resp) = page_login(&op, &txid, a.nonce.as_deref(), &body).await;
    assert_eq!(status, StatusCode::OK, "{resp}");
    device.take(&resp);
    let redirect_to = resp["redirectTo"].as_str().unwrap();
    assert!(
        redirect_to.starts_with(&format!("{with_query}&code=")),
        "{redirect_to}"
    );
    let code = query_param(redirect_to, "code").unwrap();
    let (status, tokens) = op.exchange(&code, &a, &op.basic()).await;
    assert_eq!(status, StatusCode::OK, "{tokens}");
}

#[tokio::test]
async fn clients_cannot_register_a_redirect_uri_that_cannot_be_matched_exactly() {
    let op = Provider::spawn().await;
    let engine = op.app.engine();
    for bad in [
        "https://rp.example/cb#frag",
        "https://rp.example/cb#",
        "/cb",
        "cb",
        "rp.example/cb",
        "//rp.example/cb",
        "",
        "https://user@rp.example/cb",
        "https://RP.example/cb",
        "https://rp.example/a/../cb",
        "javascript:alert(1)",
    ] {
        let created = engine
            .create_client(op.app.app, vec![bad.into()], false)
            .await;
        assert!(created.is_err(), "create_client accepted {bad:?}");
        let created = engine
            .create_client(op.app.app, vec![bad.into()], true)
            .await;
        assert!(created.is_err(), "create_client (public) accepted {bad:?}");
        let updated = engine.update_client(&op.client_id, vec![bad.into()]).await;
        assert!(updated.is_err(), "update_client accepted {bad:?}");
        // One bad URI among good ones spoils the whole registration.
        let mixed = engine
            .create_client(op.app.app, vec![CB.into(), bad.into()], false)
            .await;
        assert!(
            mixed.is_err(),
            "create_client accepted {bad:?} beside a good one"
        );
    }
    // The refused updates left the client's URI as it was.
    let answer = op.authorize(&op.authz()).await;
    assert_eq!(answer.status, StatusCode::FOUND, "{}", answer.body);
}

/// Runs the `latchkey` binary; returns whether it succeeded, its last JSON line (or all of
/// stdout) and stderr.
pub(crate) fn latchkey(args: &[&str]) -> (bool, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_latchkey"))
        .args(args)
        .env_remove("LATCHKEY_CONFIG")
        .env_remove("LATCHKEY_DATA_DIR")
        .output()
        .unwrap();
    // The answer is the last JSON line (logs may come before it).
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let line = stdout
        .lines()
        .rfind(|l| l.starts_with('{'))
        .map(str::to_owned);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    (out.status.success(), line.unwrap_or(stdout), stderr)
}

#[tokio::test]
async fn the_cli_refuses_a_fragment_or_a_relative_redirect_uri_and_prints_a_client_otherwise() {
    let mut op = Provider::spawn().await;
    op.app.stop_server().await;
    let data = op.app.data_dir();
    let data = data.to_str().unwrap();
    let app = op.app.app.to_string();
    let create = |args: &[&str]| {
        let mut all = vec!["client", "create", "--app", &app, "--data-dir", data];
        all.extend_from_slice(args);
        latchkey(&all)
    };

    for bad in ["https://rp.example/cb#frag", "/cb", "rp.example/cb"] {
        let (ok, stdout, stderr) = create(&["--redirect-uri", bad]);
        assert!(
            !ok,
            "`client create --redirect-uri {bad}` succeeded: {stdout}"
        );
        assert!(!stdout.contains("clientId"), "{stdout}");
        // Refused for the URI, not for some other reason (a locked data directory, say).
        assert!(stderr.contains("redirect_uri"), "{bad}: {stderr}");
        let update = ["client", "update", "--client", &app, "--redirect-uri", bad];
        let (ok, stdout, stderr) = latchkey(&[&update[..], &["--data-dir", data]].concat());
        assert!(
            !ok && stderr.contains("redirect_uri"),
            "update to {bad}: {stdout} {stderr}"
        );
    }
    let (ok, stdout, stderr) = create(&["--redirect-uri", CB]);
    assert!(ok, "{stdout} {stderr}");
    let line: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert!(
        line["clientId"].is_string() && line["clientSecret"].is_string(),
        "{line}"
    );
    let (ok, stdout, stderr) = create(&["--redirect-uri", CB, "--public"]);
    assert!(ok, "{stdout} {stderr}");
    let public: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert!(public["clientId"].is_string(), "{public}");
    assert_eq!(
        public.get("clientSecret"),
        None,
        "a public client has no secret: {public}"
    );
    // The default client (id = applicationUuid) gets its redirect URI by `client update`.
    let update = ["client", "update", "--client", &app, "--redirect-uri", CB];
    let (ok, stdout, stderr) = latchkey(&[&update[..], &["--data-dir", data]].concat());
    assert!(ok, "{stdout} {stderr}");

    // The server started again knows what the CLI did.
    op.app.restart().await;
    for client in [
        line["clientId"].as_str().unwrap(),
        public["clientId"].as_str().unwrap(),
        &app,
    ] {
        let mut a = op.authz();
        a.client_id = client.to_owned();
        op.begin(&a).await;
    }
}

// == state and nonce

/// Every byte a client may put in `state` or `nonce` that needs care in a URL or a form.
const AWKWARD: &str = "a+b/c=d~e f&g=h%20i?j#k;l\"m'n<o>p\\q ü€😀 ";

#[tokio::test]
async fn state_and_nonce_come_back_byte_for_byte() {
    let op = Provider::spawn().await;
    let mut device = op.app.new_device("Bytes").await;
    let mut a = op.authz();
    a.state = Some(format!("state {AWKWARD}"));
    a.nonce = Some(format!("nonce {AWKWARD}"));

    // The login page gets both unchanged.
    let answer = op.authorize(&a).await;
    assert_eq!(answer.status, StatusCode::FOUND, "{}", answer.body);
    let location = answer.location.unwrap();
    assert_eq!(query_param(&location, "state"), a.state, "{location}");
    assert_eq!(query_param(&location, "nonce"), a.nonce, "{location}");

    // The back end's login in OIDC mode (it passes the nonce on), then the ID token's nonce.
    let txid = query_param(&location, "htOidTxid").unwrap();
    let (status, resp) = op.login_oidc(&mut device, &txid, a.nonce.as_deref()).await;
    assert_eq!(status, StatusCode::OK, "{resp}");
    // The back-end route answers the code (today without redirectTo: the back end builds
    // the redirect with the state the login page URL gave it); a redirectTo, if any, must
    // carry the state unchanged.
    if let Some(redirect_to) = resp.get("redirectTo").and_then(|r| r.as_str()) {
        assert_eq!(query_param(redirect_to, "state"), a.state, "{redirect_to}");
    }
    let code = resp["accessToken"]["token"].as_str().unwrap();
    let (status, tokens) = op.exchange(code, &a, &op.basic()).await;
    assert_eq!(status, StatusCode::OK, "{tokens}");
    let claims = claims_of(tokens["id_token"].as_str().unwrap());
    assert_eq!(claims["nonce"].as_str(), a.nonce.as_deref(), "{claims}");

    // The login-page route answers redirectTo with the state unchanged.
    let txid = op.begin(&a).await;
    let body = json!({"username": device.username, "deviceUuid": device.device_uuid,
                      "authKey": device.auth_key, "hashedPin": device.hashed_pin()});
    let (status, resp) = page_login(&op, &txid, a.nonce.as_deref(), &body).await;
    assert_eq!(status, StatusCode::OK, "{resp}");
    let redirect_to = resp["redirectTo"].as_str().unwrap();
    assert!(redirect_to.starts_with(&format!("{CB}?")), "{redirect_to}");
    assert_eq!(query_param(redirect_to, "state"), a.state, "{redirect_to}");
    let code = query_param(redirect_to, "code").unwrap();
    let (status, tokens) = op.exchange(&code, &a, &op.basic()).await;
    assert_eq!(status, StatusCode::OK, "{tokens}");
    let claims = claims_of(tokens["id_token"].as_str().unwrap());
    assert_eq!(claims["nonce"].as_str(), a.nonce.as_deref(), "{claims}");
}

/// A login through the login page's own route.
pub(crate) async fn page_login(
    op: &Provider,
    txid: &str,
    nonce: Option<&str>,
    body: &serde_json::Value,
) -> (StatusCode, serde_json::Value) {
    let mut query = vec![("htOidTxid", txid.to_owned())];
    if let Some(nonce) = nonce {
        query.push(("nonce", nonce.to_owned()));
    }
    let path = format!("/openid/login/api/login?{}", crate::oidc::encode(&query));
    op.app
        .call(reqwest::Method::POST, &path, Some(body), &[])
        .await
}

#[tokio::test]
async fn a_flow_without_a_nonce_gets_an_id_token_without_one() {
    let op = Provider::spawn().await;
    let mut device = op.app.new_device("NoNonce").await;
    let mut a = op.authz();
    a.nonce = None;
    let answer = op.authorize(&a).await;
    let location = answer.location.unwrap();
    assert_eq!(query_param(&location, "nonce"), None, "{location}");

    let tokens = op.tokens(&mut device, &a).await;
    let claims = claims_of(tokens["id_token"].as_str().unwrap());
    assert!(claims.get("nonce").is_none(), "{claims}");
    assert_eq!(claims["sub"], device.user_uuid.as_str(), "{claims}");
}

#[tokio::test]
async fn a_login_with_another_nonce_than_the_request_s_is_refused_and_costs_nothing() {
    let op = Provider::spawn().await;
    let mut device = op.app.new_device("Nonce").await;
    let a = op.authz();
    let txid = op.begin(&a).await;
    let key_before = device.auth_key.clone();
    let (status, resp) = op.login_oidc(&mut device, &txid, Some("another")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{resp}");
    assert_eq!(crate::helpers::code(&resp), "AN-OIDC-1002", "{resp}");
    assert_eq!(device.auth_key, key_before);

    // The request is still good with the right nonce, and the authKey was not spent.
    let (status, resp) = op.login_oidc(&mut device, &txid, a.nonce.as_deref()).await;
    assert_eq!(status, StatusCode::OK, "{resp}");
}

#[tokio::test]
async fn state_nonce_or_login_hint_over_1024_bytes_get_a_clean_400_without_redirect() {
    let op = Provider::spawn().await;
    // 1024 bytes pass; 1025 do not. Bytes, not characters: 'é' is two.
    let fits = "s".repeat(1024);
    let fits_wide = "é".repeat(512);
    let over = "s".repeat(1025);
    let over_wide = "é".repeat(513);
    for (name, value, ok) in [
        ("state", &fits, true),
        ("state", &fits_wide, true),
        ("state", &over, false),
        ("state", &over_wide, false),
        ("nonce", &fits, true),
        ("nonce", &over, false),
        ("nonce", &over_wide, false),
        ("login_hint", &fits, true),
        ("login_hint", &over, false),
        ("state", &"s".repeat(8_000), false),
    ] {
        let mut a = op.authz();
        match name {
            "state" => a.state = Some(value.clone()),
            "nonce" => a.nonce = Some(value.clone()),
            _ => a.extra.push((name.into(), value.clone())),
        }
        let answer = op.authorize(&a).await;
        let what = format!("{name} of {} bytes", value.len());
        if ok {
            assert_eq!(answer.status, StatusCode::FOUND, "{what}: {}", answer.body);
            let location = answer.location.unwrap();
            assert_eq!(query_param(&location, name).as_ref(), Some(value), "{what}");
        } else {
            assert_refused_without_redirect(&answer, &what);
        }
    }
}
