//! One-time PINs: single use, replaced by a newer one, bound to purpose, user and application,
//! dead after their ttl or five wrong tries (however many arrive at once), kept across a
//! restart; the user's own OTP routes; anonymous OTPs by otpUuid.

use std::sync::Arc;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::helpers::{TestApp, code};

const OK: (StatusCode, &str) = (StatusCode::OK, "");
const WRONG: (StatusCode, &str) = (StatusCode::BAD_REQUEST, "AN-UOTP-1010");
const DEAD: (StatusCode, &str) = (StatusCode::BAD_REQUEST, "AN-UOTP-1011");

/// Issues a user's OTP through the self-service route; checks the answer's shape.
async fn issue(app: &TestApp, username: &str, purpose: &str) -> Value {
    let body = json!({"applicationUuid": app.app, "username": username, "purpose": purpose});
    let (status, resp) = app.backend("/self-service/otp", &body).await;
    assert_eq!((status, code(&resp)), OK, "issue {purpose}: {resp}");
    let otp = resp["otp"].as_str().unwrap();
    assert!(
        otp.len() == 6 && otp.bytes().all(|b| b.is_ascii_digit()),
        "{resp}"
    );
    assert!(resp["otpUuid"].as_str().is_some(), "{resp}");
    assert_eq!(resp["ttl"], 300, "{resp}");
    assert_eq!(
        resp["dateExpired"].as_u64().unwrap(),
        resp["dateCreated"].as_u64().unwrap() + 300,
        "{resp}"
    );
    resp
}

fn otp_of(issued: &Value) -> String {
    issued["otp"].as_str().unwrap().to_owned()
}

/// Validates through the self-service route; returns the status and the code.
async fn check(app: &TestApp, username: &str, purpose: &str, otp: &str) -> (StatusCode, String) {
    let body = json!({"applicationUuid": app.app, "username": username, "purpose": purpose,
                      "otp": otp});
    let (status, resp) = app.backend("/self-service/otp/validate", &body).await;
    (status, code(&resp).to_owned())
}

fn is(answer: &(StatusCode, String), want: (StatusCode, &str)) -> bool {
    answer.0 == want.0 && answer.1 == want.1
}

/// A code of the same length that is not `otp`.
fn wrong_code(otp: &str) -> String {
    if otp == "000000" { "111111" } else { "000000" }.to_owned()
}

#[tokio::test]
async fn an_otp_works_once_and_fails_a_second_time() {
    let app = TestApp::spawn().await;
    app.new_device("Otto").await;
    let otp = otp_of(&issue(&app, "Otto", "email_verify").await);

    let first = check(&app, "Otto", "email_verify", &otp).await;
    assert!(is(&first, OK), "{first:?}");
    let second = check(&app, "Otto", "email_verify", &otp).await;
    assert!(is(&second, DEAD), "{second:?}");
}

#[tokio::test]
async fn a_newer_otp_for_the_same_purpose_replaces_the_older_one() {
    let app = TestApp::spawn().await;
    app.new_device("Otto").await;
    let old = otp_of(&issue(&app, "Otto", "login").await);
    let mut new = otp_of(&issue(&app, "Otto", "login").await);
    while new == old {
        new = otp_of(&issue(&app, "Otto", "login").await);
    }

    // The request names user and purpose, not the OTP: the old code is either refused as
    // superseded or checked against the newest as a wrong guess. It never validates.
    let answer = check(&app, "Otto", "login", &old).await;
    assert!(is(&answer, DEAD) || is(&answer, WRONG), "{answer:?}");
    let answer = check(&app, "Otto", "login", &new).await;
    assert!(is(&answer, OK), "the newest OTP: {answer:?}");
}

#[tokio::test]
async fn an_otp_fails_after_its_ttl() {
    let app = TestApp::spawn().await;
    app.new_device("Otto").await;
    let early = otp_of(&issue(&app, "Otto", "early").await);
    let late = otp_of(&issue(&app, "Otto", "late").await);

    app.clock.advance(299);
    let answer = check(&app, "Otto", "early", &early).await;
    assert!(is(&answer, OK), "one second before its ttl: {answer:?}");
    app.clock.advance(2);
    let answer = check(&app, "Otto", "late", &late).await;
    assert!(is(&answer, DEAD), "one second after its ttl: {answer:?}");
}

#[tokio::test]
async fn an_otp_fails_for_another_purpose() {
    let app = TestApp::spawn().await;
    app.new_device("Otto").await;
    let otp = otp_of(&issue(&app, "Otto", "login").await);

    let answer = check(&app, "Otto", "payment", &otp).await;
    assert!(is(&answer, DEAD), "{answer:?}");
    // The other purpose had no OTP to burn: this one is untouched.
    let answer = check(&app, "Otto", "login", &otp).await;
    assert!(is(&answer, OK), "{answer:?}");
}

#[tokio::test]
async fn an_otp_fails_for_another_user() {
    let app = TestApp::spawn().await;
    app.new_device("Otto").await;
    app.new_device("Tess").await;
    let ottos = otp_of(&issue(&app, "Otto", "login").await);

    // Tess has no OTP for the purpose.
    let answer = check(&app, "Tess", "login", &ottos).await;
    assert!(is(&answer, DEAD), "{answer:?}");

    // Tess has one, and Otto's code is just a wrong guess for it.
    let mut tess = otp_of(&issue(&app, "Tess", "login").await);
    while tess == ottos {
        tess = otp_of(&issue(&app, "Tess", "login").await);
    }
    let answer = check(&app, "Tess", "login", &ottos).await;
    assert!(is(&answer, WRONG), "{answer:?}");

    let answer = check(&app, "Otto", "login", &ottos).await;
    assert!(is(&answer, OK), "{answer:?}");
    let answer = check(&app, "Tess", "login", &tess).await;
    assert!(is(&answer, OK), "{answer:?}");
}

#[tokio::test]
async fn five_wrong_tries_end_an_otp_and_then_even_the_right_code_fails() {
    let app = TestApp::spawn().await;
    app.new_device("Otto").await;
    let otp = otp_of(&issue(&app, "Otto", "login").await);
    let wrong = wrong_code(&otp);

    for attempt in 1..=5 {
        let answer = check(&app, "Otto", "login", &wrong).await;
        assert!(is(&answer, WRONG), "try {attempt}: {answer:?}");
    }
    let answer = check(&app, "Otto", "login", &otp).await;
    assert!(
        is(&answer, DEAD),
        "the right code after five wrong: {answer:?}"
    );
}

#[tokio::test]
async fn fifty_parallel_wrong_guesses_evaluate_no_more_than_five() {
    // Room for the whole burst and the check after it: the attempt limit is what is tested
    // here; the default per-target rate limit would answer part of the burst with 429.
    let app = Arc::new(
        TestApp::spawn_with(|c| c.rate_limits.otp_validate = latchkey::config::Rate::new(2.0, 100))
            .await,
    );
    app.new_device("Otto").await;
    let otp = otp_of(&issue(&app, "Otto", "login").await);
    let wrong = wrong_code(&otp);

    let guesses: Vec<_> = (0..50)
        .map(|_| {
            let (app, wrong) = (app.clone(), wrong.clone());
            tokio::spawn(async move { check(&app, "Otto", "login", &wrong).await })
        })
        .collect();
    let mut answers = Vec::new();
    for guess in guesses {
        answers.push(guess.await.unwrap());
    }

    let broken: Vec<_> = answers.iter().filter(|a| a.0.is_server_error()).collect();
    assert!(broken.is_empty(), "5xx answers: {broken:?}");
    let rate_limited = (StatusCode::TOO_MANY_REQUESTS, "AN-RATE-1001");
    let unexpected: Vec<_> = answers
        .iter()
        .filter(|a| !is(a, WRONG) && !is(a, DEAD) && !is(a, rate_limited))
        .collect();
    assert!(unexpected.is_empty(), "unexpected answers: {unexpected:?}");
    let evaluated = answers.iter().filter(|a| is(a, WRONG)).count();
    assert!(evaluated <= 5, "{evaluated} of 50 guesses were evaluated");
    if !answers.iter().any(|a| is(a, rate_limited)) {
        assert_eq!(evaluated, 5, "without rate limits every try is used up");
    }

    let answer = check(&app, "Otto", "login", &otp).await;
    assert!(
        is(&answer, DEAD),
        "the right code after the burst: {answer:?}"
    );
}

#[tokio::test]
async fn a_pending_otp_survives_a_restart_with_its_remaining_time_and_a_used_one_stays_used() {
    let mut app = TestApp::spawn().await;
    let d = app.new_device("Otto").await;
    let used = otp_of(&issue(&app, "Otto", "used").await);
    let answer = check(&app, "Otto", "used", &used).await;
    assert!(is(&answer, OK), "{answer:?}");
    let early = otp_of(&issue(&app, "Otto", "early").await);
    let late_issued = issue(&app, "Otto", "late").await;
    let late = otp_of(&late_issued);

    app.clock.advance(200);
    app.restart().await;

    let answer = check(&app, "Otto", "used", &used).await;
    assert!(
        is(&answer, DEAD),
        "a used OTP after the restart: {answer:?}"
    );
    let path = format!("/user/{}/otp", d.user_uuid);
    let (status, listed) = app.bearer(Method::GET, &path, &d.token, None).await;
    assert_eq!((status, code(&listed)), OK, "{listed}");
    let late_entry = listed["otps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["purpose"] == "late")
        .cloned()
        .unwrap_or_else(|| panic!("the pending OTP is not listed: {listed}"));
    assert_eq!(late_entry["otpUuid"], late_issued["otpUuid"]);
    assert_eq!(late_entry["dateExpired"], late_issued["dateExpired"]);

    let answer = check(&app, "Otto", "early", &early).await;
    assert!(
        is(&answer, OK),
        "a pending OTP after the restart: {answer:?}"
    );
    // 301 seconds after issue: the restart did not give it a fresh ttl.
    app.clock.advance(101);
    let answer = check(&app, "Otto", "late", &late).await;
    assert!(is(&answer, DEAD), "past its original ttl: {answer:?}");
}

#[tokio::test]
async fn wrong_tries_are_counted_across_a_restart() {
    let mut app = TestApp::spawn().await;
    app.new_device("Otto").await;
    let otp = otp_of(&issue(&app, "Otto", "login").await);
    let wrong = wrong_code(&otp);

    for attempt in 1..=3 {
        let answer = check(&app, "Otto", "login", &wrong).await;
        assert!(is(&answer, WRONG), "try {attempt}: {answer:?}");
    }
    app.restart().await;
    for attempt in 4..=5 {
        let answer = check(&app, "Otto", "login", &wrong).await;
        assert!(is(&answer, WRONG), "try {attempt}: {answer:?}");
    }
    let answer = check(&app, "Otto", "login", &otp).await;
    assert!(
        is(&answer, DEAD),
        "the right code after 3 + 2 wrong: {answer:?}"
    );
}

#[tokio::test]
async fn an_anonymous_otp_works_once_by_otp_uuid_for_its_purpose_and_application() {
    let app = TestApp::spawn().await;
    let body = json!({"applicationUuid": app.app, "purpose": "newsletter",
                      "email": "anon@example.test"});
    let (status, issued) = app.backend("/anonymous-otp", &body).await;
    assert_eq!((status, code(&issued)), OK, "{issued}");
    assert_eq!(issued["ttl"], 300, "{issued}");
    let validate = |purpose: &str| {
        json!({"applicationUuid": app.app, "otpUuid": issued["otpUuid"], "purpose": purpose,
               "otp": issued["otp"]})
    };

    let (status, resp) = app
        .backend("/anonymous-otp/validate", &validate("login"))
        .await;
    assert_eq!((status, code(&resp)), DEAD, "wrong purpose: {resp}");
    let unknown = json!({"applicationUuid": app.app, "otpUuid": uuid::Uuid::new_v4(),
                         "purpose": "newsletter", "otp": issued["otp"]});
    let (status, resp) = app.backend("/anonymous-otp/validate", &unknown).await;
    assert_eq!((status, code(&resp)), DEAD, "unknown otpUuid: {resp}");

    let (status, resp) = app
        .backend("/anonymous-otp/validate", &validate("newsletter"))
        .await;
    assert_eq!((status, code(&resp)), OK, "{resp}");
    let (status, resp) = app
        .backend("/anonymous-otp/validate", &validate("newsletter"))
        .await;
    assert_eq!((status, code(&resp)), DEAD, "a second time: {resp}");
}

#[tokio::test]
async fn an_anonymous_otp_of_another_application_fails() {
    let app = TestApp::spawn().await;
    let (other, other_key) = app.engine().create_app("other").await.unwrap();
    let headers = [("x-api-key", other_key.as_str())];
    let other_call = |path: &'static str, body: Value| {
        let app = &app;
        async move { app.call(Method::POST, path, Some(&body), &headers).await }
    };
    let (status, issued) = other_call(
        "/anonymous-otp",
        json!({"applicationUuid": other.uuid, "purpose": "newsletter"}),
    )
    .await;
    assert_eq!((status, code(&issued)), OK, "{issued}");

    let body = json!({"applicationUuid": app.app, "otpUuid": issued["otpUuid"],
                      "purpose": "newsletter", "otp": issued["otp"]});
    let (status, resp) = app.backend("/anonymous-otp/validate", &body).await;
    assert_eq!(
        (status, code(&resp)),
        DEAD,
        "in another application: {resp}"
    );

    let body = json!({"applicationUuid": other.uuid, "otpUuid": issued["otpUuid"],
                      "purpose": "newsletter", "otp": issued["otp"]});
    let (status, resp) = other_call("/anonymous-otp/validate", body).await;
    assert_eq!((status, code(&resp)), OK, "in its own application: {resp}");
}

#[tokio::test]
async fn the_users_otp_list_shows_pending_otps_without_their_codes() {
    let app = TestApp::spawn().await;
    let d = app.new_device("Otto").await;
    let other = app.new_device("Tess").await;
    let login = issue(&app, "Otto", "login").await;
    let payment = issue(&app, "Otto", "payment").await;
    let path = format!("/user/{}/otp", d.user_uuid);

    let (status, listed) = app.bearer(Method::GET, &path, &d.token, None).await;
    assert_eq!((status, code(&listed)), OK, "{listed}");
    let otps = listed["otps"].as_array().unwrap();
    assert_eq!(otps.len(), 2, "{listed}");
    for issued in [&login, &payment] {
        let entry = otps
            .iter()
            .find(|o| o["otpUuid"] == issued["otpUuid"])
            .unwrap_or_else(|| panic!("{issued} not listed: {listed}"));
        assert_eq!(entry["dateCreated"], issued["dateCreated"]);
        assert_eq!(entry["dateExpired"], issued["dateExpired"]);
        assert!(entry.get("otp").is_none(), "a code is listed: {entry}");
    }
    let text = listed.to_string();
    assert!(!text.contains(&otp_of(&login)) && !text.contains(&otp_of(&payment)));

    let answer = check(&app, "Otto", "login", &otp_of(&login)).await;
    assert!(is(&answer, OK), "{answer:?}");
    let (status, listed) = app.bearer(Method::GET, &path, &d.token, None).await;
    assert_eq!((status, code(&listed)), OK, "{listed}");
    assert_eq!(listed["otps"].as_array().unwrap().len(), 1, "{listed}");
    assert_eq!(listed["otps"][0]["purpose"], "payment");

    let (status, resp) = app.bearer(Method::GET, &path, &other.token, None).await;
    assert_eq!(
        (status, code(&resp)),
        (StatusCode::FORBIDDEN, "AN-USER-1000"),
        "another user's list: {resp}"
    );

    // An expired OTP is no longer pending.
    app.clock.advance(301);
    let (status, listed) = app.bearer(Method::GET, &path, &d.token, None).await;
    assert_eq!((status, code(&listed)), OK, "{listed}");
    assert_eq!(listed["otps"], json!([]), "{listed}");
}

#[tokio::test]
async fn a_user_issues_and_validates_their_own_otp_but_not_another_users() {
    let app = TestApp::spawn().await;
    let d = app.new_device("Otto").await;
    let other = app.new_device("Tess").await;
    let issue_path = format!("/user/{}/otp", d.user_uuid);
    let validate_path = format!("/user/{}/otp/validate", d.user_uuid);

    let (status, issued) = app
        .bearer(
            Method::POST,
            &issue_path,
            &d.token,
            Some(&json!({"purpose": "login"})),
        )
        .await;
    assert_eq!((status, code(&issued)), OK, "{issued}");
    let body = json!({"purpose": "login", "otp": issued["otp"]});

    // Tess may neither issue nor validate Otto's OTPs; her tries do not touch his.
    let (status, resp) = app
        .bearer(
            Method::POST,
            &issue_path,
            &other.token,
            Some(&json!({"purpose": "login"})),
        )
        .await;
    assert_eq!(
        (status, code(&resp)),
        (StatusCode::FORBIDDEN, "AN-USER-1000"),
        "{resp}"
    );
    let (status, resp) = app
        .bearer(Method::POST, &validate_path, &other.token, Some(&body))
        .await;
    assert_eq!(
        (status, code(&resp)),
        (StatusCode::FORBIDDEN, "AN-USER-1000"),
        "{resp}"
    );

    let (status, resp) = app
        .bearer(Method::POST, &validate_path, &d.token, Some(&body))
        .await;
    assert_eq!((status, code(&resp)), OK, "{resp}");
    let (status, resp) = app
        .bearer(Method::POST, &validate_path, &d.token, Some(&body))
        .await;
    assert_eq!((status, code(&resp)), DEAD, "a second time: {resp}");
}

#[tokio::test]
async fn otp_validate_accepts_a_username_or_a_user_uuid() {
    let app = TestApp::spawn().await;
    let d = app.new_device("Otto").await;

    let otp = otp_of(&issue(&app, "Otto", "login").await);
    let body = json!({"applicationUuid": app.app, "username": "otto", "purpose": "login",
                      "otp": otp});
    let (status, resp) = app.backend("/otp/validate", &body).await;
    assert_eq!((status, code(&resp)), OK, "by username: {resp}");
    let (status, resp) = app.backend("/otp/validate", &body).await;
    assert_eq!((status, code(&resp)), DEAD, "by username again: {resp}");

    let otp = otp_of(&issue(&app, "Otto", "login").await);
    let body = json!({"applicationUuid": app.app, "userUuid": uuid::Uuid::new_v4(),
                      "purpose": "login", "otp": otp});
    let (status, resp) = app.backend("/otp/validate", &body).await;
    assert_eq!((status, code(&resp)), DEAD, "an unknown userUuid: {resp}");
    let body = json!({"applicationUuid": app.app, "purpose": "login", "otp": otp});
    let (status, resp) = app.backend("/otp/validate", &body).await;
    assert_eq!(
        (status, code(&resp)),
        (StatusCode::BAD_REQUEST, "AN-UOTP-1006"),
        "neither username nor userUuid: {resp}"
    );
    let body = json!({"applicationUuid": app.app, "userUuid": d.user_uuid, "purpose": "login",
                      "otp": otp});
    let (status, resp) = app.backend("/otp/validate", &body).await;
    assert_eq!((status, code(&resp)), OK, "by userUuid: {resp}");
    let (status, resp) = app.backend("/otp/validate", &body).await;
    assert_eq!((status, code(&resp)), DEAD, "by userUuid again: {resp}");
}

#[tokio::test]
async fn an_otp_request_without_a_purpose_is_a_bad_request() {
    let app = TestApp::spawn().await;
    let d = app.new_device("Otto").await;
    let missing = |status: StatusCode, body: &Value| {
        status == StatusCode::BAD_REQUEST && ["AN-UOTP-1006", "AN-VALI-1001"].contains(&code(body))
    };

    let backend_calls = [
        (
            "/self-service/otp",
            json!({"applicationUuid": app.app, "username": "Otto"}),
        ),
        (
            "/self-service/otp/validate",
            json!({"applicationUuid": app.app, "username": "Otto", "otp": "123456"}),
        ),
        ("/anonymous-otp", json!({"applicationUuid": app.app})),
        (
            "/otp/validate",
            json!({"applicationUuid": app.app, "userUuid": d.user_uuid, "otp": "123456"}),
        ),
    ];
    for (path, body) in &backend_calls {
        let (status, resp) = app.backend(path, body).await;
        assert!(missing(status, &resp), "{path}: {status} {resp}");
    }
    let path = format!("/user/{}/otp", d.user_uuid);
    let (status, resp) = app
        .bearer(Method::POST, &path, &d.token, Some(&json!({})))
        .await;
    assert!(missing(status, &resp), "{path}: {status} {resp}");

    // An empty purpose is an incomplete OTP request.
    let body = json!({"applicationUuid": app.app, "username": "Otto", "purpose": ""});
    let (status, resp) = app.backend("/self-service/otp", &body).await;
    assert_eq!(
        (status, code(&resp)),
        (StatusCode::BAD_REQUEST, "AN-UOTP-1006"),
        "{resp}"
    );
    // Nothing was issued by any of them.
    let (status, listed) = app
        .bearer(
            Method::GET,
            &format!("/user/{}/otp", d.user_uuid),
            &d.token,
            None,
        )
        .await;
    assert_eq!((status, code(&listed)), OK, "{listed}");
    assert_eq!(listed["otps"], json!([]), "{listed}");
}
