//! The built-in login page's API (`/openid/login/api/...`): no API key, but a live
//! `htOidTxid`; sign-up only where open sign-up is on and something delivers the activation
//! token; every finished login answers `redirectTo` with a code, never a JWT.

use std::time::Duration;

use latchkey::Config;
use latchkey_actors::{
    Channel, DeliverySettings, Error, OidcLogin, Proof, SmtpSettings, SmtpTls, Tokens,
};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::{
    helpers::{Device, code, eventually_within},
    oidc::{Provider, claims_of, encode, query_param},
    receivers::{SmtpSink, free_port},
};

/// A call to the page's API, without an API key.
async fn page(
    op: &Provider,
    name: &str,
    txid: Option<&str>,
    body: Option<&Value>,
) -> (StatusCode, Value) {
    let query = txid
        .map(|t| format!("?{}", encode(&[("htOidTxid", t.to_owned())])))
        .unwrap_or_default();
    let method = if body.is_some() {
        Method::POST
    } else {
        Method::GET
    };
    let path = format!("/openid/login/api/{name}{query}");
    op.app.call(method, &path, body, &[]).await
}

fn login_body(d: &Device) -> Value {
    json!({"username": d.username, "deviceUuid": d.device_uuid, "authKey": d.auth_key,
           "hashedPin": d.hashed_pin()})
}

/// Mail through a relay at `port`; retries every second.
fn smtp(port: u16) -> DeliverySettings {
    DeliverySettings {
        channel: Channel::Smtp,
        smtp: Some(SmtpSettings {
            host: "127.0.0.1".into(),
            port,
            tls: SmtpTls::Plain,
            username: None,
            password: None,
            from: "Latchkey <no-reply@latchkey.test>".into(),
        }),
        max_tries: 1000,
        retry_base_secs: 1,
        retry_cap_secs: 1,
        ..DeliverySettings::default()
    }
}

/// Asserts that no string anywhere in `body` is a JWT.
fn assert_no_jwt(body: &Value) {
    let text = body.to_string();
    assert!(
        !text.contains("eyJ"),
        "the page's API must never answer a JWT: {text}"
    );
}

#[tokio::test]
async fn every_page_call_needs_a_live_htoidtxid() {
    let op = Provider::spawn().await;
    let mut device = op.app.new_device("Txid").await;

    let key_before = device.auth_key.clone();
    let calls: [(&str, Value); 7] = [
        ("login", login_body(&device)),
        (
            "sign-up",
            json!({"username": "new", "email": "new@example.test"}),
        ),
        (
            "activate-user",
            json!({"username": "new", "activationToken": "123456",
                                 "hashedPin": device.hashed_pin(), "deviceName": "d"}),
        ),
        (
            "add-device",
            json!({"username": device.username, "deviceName": "d"}),
        ),
        (
            "activate-device",
            json!({"username": device.username,
                                   "deviceUuid": device.device_uuid,
                                   "activationToken": "123456",
                                   "hashedPin": device.hashed_pin()}),
        ),
        (
            "forgot-pin",
            json!({"username": device.username, "deviceUuid": device.device_uuid}),
        ),
        (
            "reset-pin",
            json!({"username": device.username, "deviceUuid": device.device_uuid,
                             "hashedPin": device.hashed_pin(), "resetPinToken": "123456"}),
        ),
    ];
    let dead = [None, Some("nonsense"), Some(""), Some(&*"x".repeat(200))];
    for txid in dead {
        let mut answers = vec![("context", page(&op, "context", txid, None).await)];
        for (name, call) in &calls {
            answers.push((name, page(&op, name, txid, Some(call)).await));
        }
        for (name, (status, body)) in answers {
            assert_eq!(
                status,
                StatusCode::BAD_REQUEST,
                "{name} with {txid:?}: {body}"
            );
            if txid.is_some() {
                assert_eq!(code(&body), "AN-OIDC-1001", "{name} with {txid:?}: {body}");
            }
        }
    }
    // None of that spent the device's authKey.
    let (status, body) = op.app.login_with(&device, "1234", &key_before).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    device.take(&body);

    // A live one: the context, then one login; after that the request is finished.
    let mut a = op.authz();
    a.extra.push(("login_hint".into(), "Txid".into()));
    let txid = op.begin(&a).await;
    let (status, context) = page(&op, "context", Some(&txid), None).await;
    assert_eq!(status, StatusCode::OK, "{context}");
    assert_eq!(context["applicationUuid"], op.app.app.to_string().as_str());
    assert_eq!(context["clientId"], op.client_id.as_str());
    assert_eq!(context["loginHint"], "Txid");
    assert_eq!(context["openSignup"], false);
    assert_no_jwt(&context);
    let (status, body) = page(&op, "login", Some(&txid), Some(&login_body(&device))).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    device.take(&body);
    for (name, body) in [("context", None), ("login", Some(login_body(&device)))] {
        let (status, answer) = page(&op, name, Some(&txid), body.as_ref()).await;
        assert_eq!(
            (status, code(&answer)),
            (StatusCode::BAD_REQUEST, "AN-OIDC-1001"),
            "{name} on a finished request: {answer}"
        );
    }

    // A request nobody finishes dies after its 30 minutes.
    let txid = op.begin(&op.authz()).await;
    op.app.clock.advance(30 * 60 - 60);
    let (status, body) = page(&op, "context", Some(&txid), None).await;
    assert_eq!(status, StatusCode::OK, "29:00 old: {body}");
    op.app.clock.advance(120);
    let (status, body) = page(&op, "login", Some(&txid), Some(&login_body(&device))).await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::BAD_REQUEST, "AN-OIDC-1001"),
        "31:00 old: {body}"
    );
}

#[tokio::test]
async fn a_page_login_answers_redirect_to_with_code_state_and_iss_and_never_a_jwt() {
    let op = Provider::spawn().await;
    let mut device = op.app.new_device("Page").await;
    let a = op.authz();
    let txid = op.begin(&a).await;

    let (status, body) = page(&op, "login", Some(&txid), Some(&login_body(&device))).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_no_jwt(&body);
    assert_eq!(body["accessToken"]["type"], "OAUTH_CODE", "{body}");
    let redirect_to = body["redirectTo"].as_str().unwrap();
    let url = openidconnect::url::Url::parse(redirect_to).unwrap();
    assert_eq!(
        format!(
            "{}://{}{}",
            url.scheme(),
            url.host_str().unwrap(),
            url.path()
        ),
        crate::oidc::CB
    );
    let names: Vec<String> = url.query_pairs().map(|(k, _)| k.into_owned()).collect();
    assert_eq!(names, ["code", "state", "iss"], "{redirect_to}");
    let code_given = query_param(redirect_to, "code").unwrap();
    assert_eq!(body["accessToken"]["token"], code_given.as_str());
    assert_eq!(query_param(redirect_to, "state"), a.state);
    assert_eq!(query_param(redirect_to, "iss"), Some(op.issuer()));
    device.take(&body);

    let (status, tokens) = op.exchange(&code_given, &a, &op.basic()).await;
    assert_eq!(status, StatusCode::OK, "{tokens}");
    let claims = claims_of(tokens["id_token"].as_str().unwrap());
    assert_eq!(claims["sub"], device.user_uuid.as_str());
    assert_eq!(claims["nonce"].as_str(), a.nonce.as_deref());

    // The new authKey the page got is the one that works now.
    let (status, body) = op.app.login(&device).await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_parallel_logins_with_one_htoidtxid_give_one_code_and_the_loser_keeps_its_authkey() {
    let op = Provider::spawn().await;
    let mut devices = vec![
        op.app.new_device("First").await,
        op.app.new_device("Second").await,
    ];
    for round in 0..5 {
        let txid = op.begin(&op.authz()).await;
        let mut tasks = tokio::task::JoinSet::new();
        for (i, device) in devices.iter().enumerate() {
            let (http, url) = (op.http.clone(), op.app.base.clone());
            let path = format!(
                "{url}{}/openid/login/api/login?{}",
                latchkey::BASE,
                encode(&[("htOidTxid", txid.clone())])
            );
            let body = login_body(device);
            tasks.spawn(async move {
                let resp = http.post(path).json(&body).send().await.unwrap();
                (i, resp.status(), resp.json::<Value>().await.unwrap())
            });
        }
        let answers = tasks.join_all().await;
        let winners: Vec<_> = answers
            .iter()
            .filter(|(_, s, _)| *s == StatusCode::OK)
            .collect();
        assert_eq!(winners.len(), 1, "round {round}: {answers:?}");
        for (i, status, body) in &answers {
            if *status == StatusCode::OK {
                devices[*i].take(body);
            } else {
                assert_eq!(
                    (*status, code(body)),
                    (StatusCode::BAD_REQUEST, "AN-OIDC-1001"),
                    "round {round}: {body}"
                );
            }
        }
        // Both devices log in with the authKey each holds now: the loser's was not spent.
        for device in &mut devices {
            let (status, body) = op.app.login(device).await;
            assert_eq!(
                status,
                StatusCode::OK,
                "round {round}, {}: {body}",
                device.username
            );
            device.take(&body);
        }
    }
}

#[tokio::test]
async fn a_login_whose_hold_ran_out_can_neither_finish_nor_free_the_next_one_s() {
    let op = Provider::spawn().await;
    let device = op.app.new_device("Slow").await;
    let engine = op.app.engine();
    let a = op.authz();
    let txid = op.begin(&a).await;
    let app = engine.oidc_request_app(&txid).await.unwrap();
    let nonce = a.nonce.as_deref();
    let dead = |r: Result<OidcLogin, Error>| matches!(r, Err(Error::OidcRequestDead));

    let slow = engine.oidc_begin(&app, &txid, nonce).await.unwrap();
    assert!(dead(engine.oidc_begin(&app, &txid, nonce).await), "held");
    op.app.clock.advance(31);
    let next = engine.oidc_begin(&app, &txid, nonce).await.unwrap();

    // The slow login finishes late: refused, and its release leaves the next one's hold.
    let tokens = Tokens {
        access_token: String::new(),
        auth_key: String::new(),
        auth_key_uuid: uuid::Uuid::new_v4(),
        device_uuid: device.device_uuid.parse().unwrap(),
        user_uuid: device.user_uuid.parse().unwrap(),
        sid: claims_of(&device.token)["sid"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap(),
    };
    let late = engine
        .oidc_finish(slow, Ok(tokens.clone()), Proof::DevicePin)
        .await;
    assert!(matches!(late, Err(Error::OidcRequestDead)), "{late:?}");
    assert!(
        dead(engine.oidc_begin(&app, &txid, nonce).await),
        "still held"
    );

    let issued = engine
        .oidc_finish(next, Ok(tokens), Proof::DevicePin)
        .await
        .unwrap();
    let code = query_param(&issued.redirect_to, "code").unwrap();
    let (status, body) = op.exchange(&code, &a, &op.basic()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

#[tokio::test]
async fn a_back_end_cannot_finish_another_application_s_sign_in_request() {
    let op = Provider::spawn().await;
    let (other, other_key) = op.app.engine().create_app("other").await.unwrap();
    let txid = op.begin(&op.authz()).await;

    // A user of the other application, logging in through its own back end with our txid.
    let token = {
        let body = json!({"applicationUuid": other.uuid, "username": "Stranger",
                          "email": "stranger@example.test"});
        let headers = [("x-api-key", other_key.as_str())];
        let (status, resp) = op
            .app
            .call(Method::POST, "/self-service/user", Some(&body), &headers)
            .await;
        assert_eq!(status, StatusCode::OK, "{resp}");
        resp["activationToken"].as_str().unwrap().to_owned()
    };
    let mut stranger = Device::new("Stranger");
    let body = json!({"applicationUuid": other.uuid, "username": "Stranger",
                      "activationToken": token, "hashedPin": stranger.hashed_pin(),
                      "deviceName": "d"});
    let headers = [("x-api-key", other_key.as_str())];
    let path = "/authentication/activate/user";
    let (status, resp) = op.app.call(Method::POST, path, Some(&body), &headers).await;
    assert_eq!(status, StatusCode::OK, "{resp}");
    stranger.take(&resp);
    let body = json!({"applicationUuid": other.uuid, "username": "Stranger",
                      "deviceUuid": stranger.device_uuid, "authKey": stranger.auth_key,
                      "hashedPin": stranger.hashed_pin()});
    let path = format!(
        "/authentication/login?{}",
        encode(&[("htOidTxid", txid.clone())])
    );
    let (status, resp) = op
        .app
        .call(Method::POST, &path, Some(&body), &headers)
        .await;
    assert_eq!(
        (status, code(&resp)),
        (StatusCode::BAD_REQUEST, "AN-OIDC-1001"),
        "{resp}"
    );

    // Our own user still can.
    let mut device = op.app.new_device("Local").await;
    let (status, resp) = op.login_oidc(&mut device, &txid, None).await;
    assert_eq!(status, StatusCode::OK, "{resp}");
}

#[tokio::test]
async fn a_wrong_pin_on_the_page_leaves_the_request_open_for_the_right_one() {
    let op = Provider::spawn().await;
    let mut device = op.app.new_device("Fumble").await;
    let txid = op.begin(&op.authz()).await;
    let mut wrong = login_body(&device);
    wrong["hashedPin"] = crate::helpers::hashed_pin(&device.salt, "9999").into();
    let (status, body) = page(&op, "login", Some(&txid), Some(&wrong)).await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::BAD_REQUEST, "AN-AUTH-1006"),
        "{body}"
    );
    assert_no_jwt(&body);

    let (status, body) = page(&op, "login", Some(&txid), Some(&login_body(&device))).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body["redirectTo"].is_string(), "{body}");
    device.take(&body);
}

#[tokio::test]
async fn page_sign_up_is_403_when_open_sign_up_is_off() {
    // Something delivers (a relay that is not there: the message just waits), but open
    // sign-up is off, as it is for applications other than the default one.
    let port = free_port();
    let op = Provider::spawn_with(|c: &mut Config| c.app_defaults.delivery = smtp(port)).await;
    let txid = op.begin(&op.authz()).await;
    let (_, context) = page(&op, "context", Some(&txid), None).await;
    assert_eq!(context["openSignup"], false, "{context}");
    let new = json!({"username": "Newcomer", "email": "newcomer@example.test"});
    let (status, body) = page(&op, "sign-up", Some(&txid), Some(&new)).await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::FORBIDDEN, "AN-OIDC-1003"),
        "{body}"
    );
    assert_no_user(&op, "Newcomer").await;
}

#[tokio::test]
async fn page_sign_up_and_other_mailed_steps_are_403_when_nothing_delivers() {
    // README: without a delivery channel these answer 403 AN-OIDC-1005 (the page can only
    // offer flows whose token reaches the user some other way).
    let op = Provider::spawn_with(|c: &mut Config| c.app_defaults.open_signup = Some(true)).await;
    let device = op.app.new_device("Mailless").await;
    let txid = op.begin(&op.authz()).await;
    let (_, context) = page(&op, "context", Some(&txid), None).await;
    assert_eq!(context["openSignup"], true, "{context}");
    let calls = [
        (
            "sign-up",
            json!({"username": "Newcomer", "email": "newcomer@example.test"}),
        ),
        (
            "add-device",
            json!({"username": device.username, "deviceName": "second"}),
        ),
        (
            "forgot-pin",
            json!({"username": device.username, "deviceUuid": device.device_uuid}),
        ),
    ];
    for (name, body) in calls {
        let (status, answer) = page(&op, name, Some(&txid), Some(&body)).await;
        assert_eq!(
            (status, code(&answer)),
            (StatusCode::FORBIDDEN, "AN-OIDC-1005"),
            "{name}: {answer}"
        );
        assert!(answer.get("activationToken").is_none() && answer.get("resetPinToken").is_none());
    }
    assert_no_user(&op, "Newcomer").await;
}

#[tokio::test]
async fn page_sign_up_then_activation_with_the_mailed_token_ends_in_a_code() {
    let mail = tempfile::tempdir().unwrap();
    let sink = SmtpSink::start(mail.path()).await;
    let op = open_provider_mailing_to(&sink).await;
    let a = op.authz();
    let txid = op.begin(&a).await;

    let new = json!({"username": "Mailed", "email": "mailed@example.test"});
    let (status, body) = page(&op, "sign-up", Some(&txid), Some(&new)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(
        body.get("activationToken").is_none() && body.get("userUuid").is_none(),
        "the token goes by mail only, and nothing says the name was free: {body}"
    );

    let token = mailed_token(&sink, "mailed@example.test").await;
    let mut device = Device::new("Mailed");
    let activate = json!({"username": "Mailed", "activationToken": token,
                          "hashedPin": device.hashed_pin(), "deviceName": "browser"});
    let (status, body) = page(&op, "activate-user", Some(&txid), Some(&activate)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_no_jwt(&body);
    assert_eq!(body["accessToken"]["type"], "OAUTH_CODE", "{body}");
    device.take(&body);
    let redirect_to = body["redirectTo"].as_str().unwrap();
    assert_eq!(query_param(redirect_to, "state"), a.state);

    let code = query_param(redirect_to, "code").unwrap();
    let (status, tokens) = op.exchange(&code, &a, &op.basic()).await;
    assert_eq!(status, StatusCode::OK, "{tokens}");
    let claims = claims_of(tokens["id_token"].as_str().unwrap());
    assert_eq!(claims["sub"], body["userUuid"], "{claims}");
    let amr = claims["amr"].as_array().unwrap();
    assert!(
        amr.iter().any(|m| m == "otp"),
        "an activation proves a delivered token: {claims}"
    );
    let (status, info) = op.userinfo(tokens["access_token"].as_str().unwrap()).await;
    assert_eq!(status, StatusCode::OK, "{info}");
    assert_eq!(info["email"], "mailed@example.test", "{info}");
    assert_eq!(
        info["email_verified"], true,
        "the mailed token proved the address: {info}"
    );

    // The activated device logs in through a second sign-in request with its PIN alone.
    let txid = op.begin(&op.authz()).await;
    let (status, body) = page(&op, "login", Some(&txid), Some(&login_body(&device))).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body["redirectTo"].is_string(), "{body}");
}

#[tokio::test]
async fn page_sign_up_answers_a_taken_username_as_a_free_one_and_tells_its_owner() {
    let mail = tempfile::tempdir().unwrap();
    let sink = SmtpSink::start(mail.path()).await;
    let op = open_provider_mailing_to(&sink).await;
    let owner = json!({"applicationUuid": op.app.app, "username": "Owner",
                       "email": "owner@example.test"});
    let (status, resp) = op.app.backend("/self-service/user", &owner).await;
    assert_eq!(status, StatusCode::OK, "{resp}");
    let owner_token = mailed_token(&sink, "owner@example.test").await;
    let txid = op.begin(&op.authz()).await;

    let free = json!({"username": "Newcomer", "email": "newcomer@example.test"});
    let free = page(&op, "sign-up", Some(&txid), Some(&free)).await;
    let taken = json!({"username": "OWNER", "email": "thief@example.test"});
    let taken = page(&op, "sign-up", Some(&txid), Some(&taken)).await;

    assert_eq!(free.0, StatusCode::OK, "{}", free.1);
    assert_eq!(taken, free, "a taken username answers as a free one");
    let notice = nth_mail_to(&sink, "owner@example.test", 2).await;
    assert!(notice.contains("tried to sign up"), "{notice}");
    let (_, notice_body) = notice.split_once("\r\n\r\n").unwrap();
    assert!(
        !notice_body
            .split(|c: char| !c.is_ascii_digit())
            .any(|run| run.len() >= 6),
        "the notice carries no code: {notice_body}"
    );
    mailed_token(&sink, "newcomer@example.test").await;
    assert!(
        !sink
            .messages()
            .iter()
            .any(|m| m.contains("thief@example.test")),
        "nothing goes to the address the caller typed"
    );

    // The owner's account is as it was: its pending activation still works.
    let device = Device::new("Owner");
    let (status, resp) = op.app.activate(&device, &owner_token).await;
    assert_eq!(status, StatusCode::OK, "{resp}");
}

#[tokio::test]
async fn mailed_token_calls_are_limited_per_username_so_tokens_cannot_be_guessed() {
    let mail = tempfile::tempdir().unwrap();
    let sink = SmtpSink::start(mail.path()).await;
    let port = sink.port;
    let op = Provider::spawn_with(|c: &mut Config| c.app_defaults.delivery = smtp(port)).await;
    for name in ["Rita", "Sam"] {
        let body = json!({"applicationUuid": op.app.app, "username": name,
                          "email": format!("{}@example.test", name.to_lowercase())});
        let (status, resp) = op.app.backend("/self-service/user", &body).await;
        assert_eq!(status, StatusCode::OK, "{resp}");
    }
    let thief = Device::new("Rita");
    let txid = op.begin(&op.authz()).await;

    // An anonymous caller asks for a device (a token is mailed to Rita), then guesses it.
    let add = json!({"username": "Rita", "deviceName": "thief"});
    let (status, body) = page(&op, "add-device", Some(&txid), Some(&add)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let pending = body["deviceUuid"].as_str().unwrap().to_owned();
    for guess in 0..9 {
        let try_it = json!({"username": "Rita", "deviceUuid": pending,
                            "activationToken": format!("{guess:06}"),
                            "hashedPin": thief.hashed_pin()});
        let (status, body) = page(&op, "activate-device", Some(&txid), Some(&try_it)).await;
        assert!(
            status.is_client_error() && status != StatusCode::TOO_MANY_REQUESTS,
            "guess {guess}: {status} {body}"
        );
    }

    // The eleventh call for Rita, in any spelling and of any kind, is refused; Sam's is not.
    let again = json!({"username": "rita", "deviceName": "thief"});
    let (status, body) = page(&op, "add-device", Some(&txid), Some(&again)).await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::TOO_MANY_REQUESTS, "AN-RATE-1001"),
        "{body}"
    );
    let forgot = json!({"username": "Rita", "deviceUuid": pending});
    let (status, _) = page(&op, "forgot-pin", Some(&txid), Some(&forgot)).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    let other = json!({"username": "Sam", "deviceName": "laptop"});
    let (status, body) = page(&op, "add-device", Some(&txid), Some(&other)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

/// Asserts that no user `username` was made: the back end can still sign that name up.
async fn assert_no_user(op: &Provider, username: &str) {
    let body = json!({"applicationUuid": op.app.app, "username": username,
                      "email": "someone@example.test"});
    let (status, resp) = op.app.backend("/self-service/user", &body).await;
    assert_eq!(status, StatusCode::OK, "{username} was taken: {resp}");
}

/// The six-digit token of the newest mail to `to`.
async fn mailed_token(sink: &SmtpSink, to: &str) -> String {
    nth_mail_to(sink, to, 1).await;
    let envelope = format!("X-Envelope-To: {to}");
    let mail = sink
        .messages()
        .into_iter()
        .rfind(|m| m.starts_with(&envelope))
        .unwrap();
    let body = mail
        .split_once("\r\n\r\n")
        .map_or(mail.as_str(), |(_, b)| b);
    body.split(|c: char| !c.is_ascii_digit())
        .find(|run| run.len() == 6)
        .unwrap_or_else(|| panic!("no token in {body}"))
        .to_owned()
}

/// The `n`th mail (from 1) the sink received for `to`, once it has arrived.
async fn nth_mail_to(sink: &SmtpSink, to: &str, n: usize) -> String {
    let envelope = format!("X-Envelope-To: {to}");
    let found = std::cell::RefCell::new(None);
    eventually_within("the mail", Duration::from_secs(20), || {
        let mail = sink
            .messages()
            .into_iter()
            .filter(|m| m.starts_with(&envelope))
            .nth(n - 1);
        let arrived = mail.is_some();
        *found.borrow_mut() = mail;
        async move { arrived }
    })
    .await;
    found.into_inner().unwrap()
}

/// A provider whose default application is open for sign-up and mails its tokens to `sink`.
async fn open_provider_mailing_to(sink: &SmtpSink) -> Provider {
    let port = sink.port;
    Provider::spawn_with(|c: &mut Config| {
        c.app_defaults.open_signup = Some(true);
        c.app_defaults.delivery = smtp(port);
    })
    .await
}
