//! The IAM back office: the requestor check (by RFC 7662 introspection against a real endpoint
//! started here, or by a Latchkey access token with the `iam-admin` role), every IAM route
//! with its effect, and no way for a user to give themselves a role or lift an IAM flag.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use axum::{
    Form, Json, Router,
    extract::State,
    http::{HeaderMap, StatusCode as AxumStatus, header::AUTHORIZATION},
    response::{IntoResponse, Response},
    routing::post,
};
use base64::{Engine as _, engine::general_purpose::STANDARD};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::{
    devices::second_device,
    helpers::{Device, TestApp, code},
};

const OK: (StatusCode, &str) = (StatusCode::OK, "");
const INVALID_JWT: (StatusCode, &str) = (StatusCode::UNAUTHORIZED, "AN-JWTT-1001");
const REVOKED_JWT: (StatusCode, &str) = (StatusCode::UNAUTHORIZED, "AN-JWTT-1003");
const NOT_ALLOWED: (StatusCode, &str) = (StatusCode::FORBIDDEN, "AN-IAM-1001");
const ADMIN_LOCKED: (StatusCode, &str) = (StatusCode::BAD_REQUEST, "AN-AUTH-1040");
const NO_DEVICE: (StatusCode, &str) = (StatusCode::BAD_REQUEST, "AN-HENG-1005");
const NO_USER: (StatusCode, &str) = (StatusCode::BAD_REQUEST, "AN-USER-1000");

// == The introspection endpoint

const CLIENT_ID: &str = "latchkey";
const CLIENT_SECRET: &str = "introspection-secret";

/// A call the endpoint got: the token and the Authorization header.
type Seen = (String, Option<String>);

/// A real RFC 7662 endpoint on a loopback port: answers from a fixed map of tokens (unknown
/// tokens are inactive) to a client with the right Basic credentials, and remembers each call.
#[derive(Clone)]
struct Introspector {
    answers: Arc<HashMap<&'static str, Value>>,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Introspector {
    async fn start(answers: HashMap<&'static str, Value>) -> (Self, String) {
        let me = Self {
            answers: Arc::new(answers),
            seen: Arc::default(),
        };
        let router = Router::new()
            .route("/introspect", post(introspect))
            .with_state(me.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/introspect", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
        (me, url)
    }

    /// The Authorization header the endpoint got with `token`.
    fn authorization_for(&self, token: &str) -> Option<Option<String>> {
        let seen = self.seen.lock().unwrap();
        seen.iter()
            .find(|(t, _)| t == token)
            .map(|(_, a)| a.clone())
    }
}

async fn introspect(
    State(me): State<Introspector>,
    headers: HeaderMap,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let token = form.get("token").cloned().unwrap_or_default();
    let authorization = headers
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    me.seen
        .lock()
        .unwrap()
        .push((token.clone(), authorization.clone()));
    if authorization.as_deref() != Some(basic_credentials().as_str()) {
        let refusal = json!({"error": "invalid_client"});
        return (AxumStatus::UNAUTHORIZED, Json(refusal)).into_response();
    }
    if token == "slow-token" {
        // An endpoint that hangs: Latchkey must give up after its timeout.
        tokio::time::sleep(std::time::Duration::from_secs(10)).await;
    }
    let inactive = json!({"active": false});
    Json(me.answers.get(token.as_str()).unwrap_or(&inactive).clone()).into_response()
}

fn basic_credentials() -> String {
    format!(
        "Basic {}",
        STANDARD.encode(format!("{CLIENT_ID}:{CLIENT_SECRET}"))
    )
}

// == Calls

/// An IAM call by a requestor (token, requestorUsername) with the application's API key.
async fn iam(
    app: &TestApp,
    method: Method,
    path: &str,
    requestor: (Option<&str>, &str),
    body: Option<&Value>,
) -> (StatusCode, Value) {
    let (token, name) = requestor;
    let sep = if path.contains('?') { '&' } else { '?' };
    let path = format!("{path}{sep}requestorUsername={name}");
    let app_id = app.app.to_string();
    let mut headers = vec![
        ("x-api-key", app.api_key.as_str()),
        ("x-application-uuid", app_id.as_str()),
    ];
    if let Some(token) = token {
        headers.push(("x-requestor-token", token));
    }
    app.call(method, &path, body, &headers).await
}

/// An IAM call that must succeed.
async fn iam_ok(
    app: &TestApp,
    method: Method,
    path: &str,
    admin: &Device,
    body: Option<&Value>,
) -> Value {
    let (status, resp) = iam(app, method.clone(), path, as_requestor(admin), body).await;
    assert_eq!((status, code(&resp)), OK, "{method} {path}: {resp}");
    assert_eq!(resp["responseStatus"]["status"], "SUCCESS");
    resp
}

fn as_requestor(d: &Device) -> (Option<&str>, &str) {
    (Some(d.token.as_str()), d.username.as_str())
}

/// The answer of `/jwt/validate` for a token.
async fn validate(app: &TestApp, token: &str) -> (StatusCode, String) {
    let (status, resp) = app.bearer(Method::GET, "/jwt/validate", token, None).await;
    (status, code(&resp).to_owned())
}

async fn login_answer(app: &TestApp, d: &Device) -> (StatusCode, String) {
    let (status, resp) = app.login(d).await;
    (status, code(&resp).to_owned())
}

/// Logs in, keeping the new credentials.
async fn relogin(app: &TestApp, d: &mut Device) {
    let (status, resp) = app.login(d).await;
    assert_eq!((status, code(&resp)), OK, "login of {}: {resp}", d.username);
    d.take(&resp);
}

fn is(answer: &(StatusCode, String), want: (StatusCode, &str)) -> bool {
    answer.0 == want.0 && answer.1 == want.1
}

/// A server with Admin (holding `iam-admin`) and Plain, both activated.
async fn with_admin() -> (TestApp, Device, Device) {
    let app = TestApp::spawn().await;
    let admin = app.new_device("Admin").await;
    let plain = app.new_device("Plain").await;
    let application = app.engine().app(app.app).unwrap();
    app.engine()
        .grant_role(&application, "Admin", "iam-admin")
        .await
        .unwrap();
    (app, admin, plain)
}

/// Signs up and activates a user of another application of the same server.
async fn new_device_in(app: &TestApp, app_uuid: Uuid, api_key: &str, username: &str) -> Device {
    let headers = [("x-api-key", api_key)];
    let body = json!({"applicationUuid": app_uuid, "username": username,
                      "email": format!("{}@example.test", username.to_lowercase())});
    let (status, signed_up) = app
        .call(Method::POST, "/self-service/user", Some(&body), &headers)
        .await;
    assert_eq!(status, StatusCode::OK, "{signed_up}");
    let mut device = Device::new(username);
    let body = json!({"applicationUuid": app_uuid, "username": username,
                      "activationToken": signed_up["activationToken"],
                      "hashedPin": device.hashed_pin(), "deviceName": "test device"});
    let (status, activated) = app
        .call(
            Method::POST,
            "/authentication/activate/user",
            Some(&body),
            &headers,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{activated}");
    device.take(&activated);
    device
}

/// The user as `/user/current` shows it to the user.
async fn current(app: &TestApp, d: &Device) -> Value {
    let (status, me) = app
        .bearer(Method::GET, "/user/current", &d.token, None)
        .await;
    assert_eq!((status, code(&me)), OK, "{me}");
    me
}

// == The requestor check

#[tokio::test]
async fn introspection_refuses_inactive_tokens_tokens_without_the_scope_and_other_users() {
    let answers = HashMap::from([
        (
            "admin-token",
            json!({"active": true, "username": "Admin", "scope": "openid iam-admin"}),
        ),
        (
            "sub-token",
            json!({"active": true, "sub": "Support", "scope": "iam-admin"}),
        ),
        (
            "inactive-token",
            json!({"active": false, "username": "Admin", "scope": "iam-admin"}),
        ),
        (
            "no-scope-token",
            json!({"active": true, "username": "Admin", "scope": "openid profile"}),
        ),
        (
            "near-scope-token",
            json!({"active": true, "username": "Admin", "scope": "iam-administrator"}),
        ),
    ]);
    let (introspector, url) = Introspector::start(answers).await;
    let app = TestApp::spawn_with(|config| {
        let iam = &mut config.app_defaults.iam;
        iam.introspection_url = Some(url);
        iam.introspection_client_id = Some(CLIENT_ID.into());
        iam.introspection_client_secret = Some(CLIENT_SECRET.into());
        iam.introspection_timeout_ms = 300;
    })
    .await;
    let plain = app.new_device("Plain").await;
    let lock_path = format!("/iam/user/{}", plain.user_uuid);
    let lock = json!({"locked": true});

    let refused = [
        ("no requestor token", (None, "Admin"), INVALID_JWT),
        (
            "an inactive token",
            (Some("inactive-token"), "Admin"),
            INVALID_JWT,
        ),
        (
            "a token introspection does not know",
            (Some("unknown-token"), "Admin"),
            INVALID_JWT,
        ),
        (
            "a token without the scope",
            (Some("no-scope-token"), "Admin"),
            NOT_ALLOWED,
        ),
        (
            "a token with a look-alike scope",
            (Some("near-scope-token"), "Admin"),
            NOT_ALLOWED,
        ),
        (
            "a mismatched requestorUsername",
            (Some("admin-token"), "Plain"),
            NOT_ALLOWED,
        ),
        (
            "a requestorUsername that is only the sub of another token",
            (Some("admin-token"), "Support"),
            NOT_ALLOWED,
        ),
    ];
    for (what, requestor, want) in refused {
        let (status, resp) = iam(&app, Method::PATCH, &lock_path, requestor, Some(&lock)).await;
        assert_eq!((status, code(&resp)), want, "{what}: {resp}");
    }
    // None of the refused calls locked Plain.
    let (status, resp) = app.login(&plain).await;
    assert_eq!((status, code(&resp)), OK, "{resp}");

    // Latchkey sent the token to the endpoint, with the configured client credentials.
    assert_eq!(
        introspector.authorization_for("inactive-token"),
        Some(Some(basic_credentials()))
    );

    // A hanging endpoint refuses the call within the timeout; it never lets it through.
    let started = std::time::Instant::now();
    let requestor = (Some("slow-token"), "Admin");
    let (status, resp) = iam(&app, Method::PATCH, &lock_path, requestor, Some(&lock)).await;
    assert_eq!(
        (status, code(&resp)),
        (StatusCode::SERVICE_UNAVAILABLE, "AN-SYST-1001"),
        "{resp}"
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(5));

    // The username is matched like any username; `sub` names the user when `username` is absent.
    let path = "/iam/user?username=plain";
    let (status, user) = iam(
        &app,
        Method::GET,
        path,
        (Some("admin-token"), "ADMIN"),
        None,
    )
    .await;
    assert_eq!((status, code(&user)), OK, "{user}");
    assert_eq!(user["userUuid"], plain.user_uuid.as_str());
    let (status, user) = iam(
        &app,
        Method::GET,
        path,
        (Some("sub-token"), "Support"),
        None,
    )
    .await;
    assert_eq!((status, code(&user)), OK, "{user}");
    assert_eq!(user["username"], "Plain");
}

#[tokio::test]
async fn a_latchkey_token_without_the_role_or_naming_another_user_is_forbidden() {
    let (app, admin, plain) = with_admin().await;
    let lock_path = format!("/iam/user/{}", plain.user_uuid);
    let lock = json!({"locked": true});

    let refused = [
        (
            "a user without iam-admin",
            as_requestor(&plain),
            NOT_ALLOWED,
        ),
        (
            "an admin naming another user",
            (Some(admin.token.as_str()), "Plain"),
            NOT_ALLOWED,
        ),
        (
            "a user without the role naming the admin",
            (Some(plain.token.as_str()), "Admin"),
            NOT_ALLOWED,
        ),
        ("no requestor token", (None, "Admin"), INVALID_JWT),
        (
            "a requestor token that is no JWT",
            (Some("not-a-jwt"), "Admin"),
            INVALID_JWT,
        ),
        (
            "an admin's token with the signature cut off",
            (Some(admin.token.rsplit_once('.').unwrap().0), "Admin"),
            INVALID_JWT,
        ),
    ];
    for (what, requestor, want) in refused {
        let (status, resp) = iam(&app, Method::PATCH, &lock_path, requestor, Some(&lock)).await;
        assert_eq!((status, code(&resp)), want, "{what}: {resp}");
    }
    let (status, resp) = app.login(&plain).await;
    assert_eq!(
        (status, code(&resp)),
        OK,
        "a refused call locked Plain: {resp}"
    );

    // Without requestorUsername the call is incomplete.
    let app_id = app.app.to_string();
    let headers = [
        ("x-api-key", app.api_key.as_str()),
        ("x-application-uuid", app_id.as_str()),
        ("x-requestor-token", admin.token.as_str()),
    ];
    let (status, resp) = app
        .call(Method::PATCH, &lock_path, Some(&lock), &headers)
        .await;
    assert_eq!(
        (status, code(&resp)),
        (StatusCode::BAD_REQUEST, "AN-VALI-1001"),
        "{resp}"
    );

    // The same admin, named rightly, gets through; requestorUsername may sit in the body.
    let path = "/iam/user?username=Plain";
    let user = iam_ok(&app, Method::GET, path, &admin, None).await;
    assert_eq!(user["locked"], false, "{user}");
    let body = json!({"requestorUsername": "Admin", "mobileNumber": "+41 79 555 55 55"});
    let (status, resp) = app
        .call(Method::PATCH, &lock_path, Some(&body), &headers)
        .await;
    assert_eq!((status, code(&resp)), OK, "{resp}");
    let user = iam_ok(&app, Method::GET, path, &admin, None).await;
    assert_eq!(user["mobileNumber"], "+41 79 555 55 55", "{user}");
}

#[tokio::test]
async fn an_expired_requestor_token_is_invalid() {
    let (app, mut admin, plain) = with_admin().await;
    let path = format!("/iam/user/{}/device", plain.user_uuid);
    iam_ok(&app, Method::GET, &path, &admin, None).await;

    // Past the default 15-minute lifetime.
    app.clock.advance(901);
    let (status, resp) = iam(&app, Method::GET, &path, as_requestor(&admin), None).await;
    assert_eq!((status, code(&resp)), INVALID_JWT, "{resp}");

    relogin(&app, &mut admin).await;
    iam_ok(&app, Method::GET, &path, &admin, None).await;
}

#[tokio::test]
async fn a_requestor_token_of_another_application_is_invalid() {
    let (app, admin, plain) = with_admin().await;
    let (other, other_key) = app.engine().create_app("other").await.unwrap();
    // The other application has its own Admin, with the role there.
    let foreign = new_device_in(&app, other.uuid, &other_key, "Admin").await;
    app.engine()
        .grant_role(&other, "Admin", "iam-admin")
        .await
        .unwrap();

    let path = format!("/iam/user/{}", plain.user_uuid);
    let lock = json!({"locked": true});
    let (status, resp) = iam(
        &app,
        Method::PATCH,
        &path,
        as_requestor(&foreign),
        Some(&lock),
    )
    .await;
    assert_eq!((status, code(&resp)), INVALID_JWT, "{resp}");
    let (status, resp) = app.login(&plain).await;
    assert_eq!((status, code(&resp)), OK, "{resp}");

    // In its own application the same token is a valid requestor.
    let other_id = other.uuid.to_string();
    let headers = [
        ("x-api-key", other_key.as_str()),
        ("x-application-uuid", other_id.as_str()),
        ("x-requestor-token", foreign.token.as_str()),
    ];
    let path = "/iam/user?username=Admin&requestorUsername=Admin";
    let (status, user) = app.call(Method::GET, path, None, &headers).await;
    assert_eq!((status, code(&user)), OK, "{user}");
    assert_eq!(user["userUuid"], foreign.user_uuid.as_str());

    // A valid requestor of this application cannot reach the other application's users.
    let path = format!("/iam/user/{}/device", foreign.user_uuid);
    let (status, resp) = iam(&app, Method::GET, &path, as_requestor(&admin), None).await;
    assert_eq!((status, code(&resp)), NO_USER, "{resp}");
}

// == Every route, with its effect

#[tokio::test]
async fn a_requestor_reads_and_edits_a_user_by_username_by_user_uuid_and_by_path() {
    let (app, admin, plain) = with_admin().await;

    let by_name = iam_ok(&app, Method::GET, "/iam/user?username=plain", &admin, None).await;
    assert_eq!(by_name["userUuid"], plain.user_uuid.as_str());
    assert_eq!(by_name["username"], "Plain");
    assert_eq!(by_name["email"], "plain@example.test");
    assert_eq!(by_name["locked"], false);
    assert_eq!(by_name["forbidAddingDevices"], false);
    let path = format!("/iam/user?userUuid={}", plain.user_uuid);
    let by_uuid = iam_ok(&app, Method::GET, &path, &admin, None).await;
    assert_eq!(by_uuid["username"], "Plain");
    let (status, resp) = iam(
        &app,
        Method::GET,
        "/iam/user?username=Nobody",
        as_requestor(&admin),
        None,
    )
    .await;
    assert_eq!((status, code(&resp)), NO_USER, "{resp}");

    let body = json!({"email": "plain.new@example.test", "mobileNumber": "+41 79 000 00 00"});
    iam_ok(
        &app,
        Method::PATCH,
        "/iam/user?username=Plain",
        &admin,
        Some(&body),
    )
    .await;
    let me = current(&app, &plain).await;
    assert_eq!(me["email"], "plain.new@example.test");
    assert_eq!(me["mobileNumber"], "+41 79 000 00 00");

    let path = format!("/iam/user/{}", plain.user_uuid);
    let body = json!({"forbidAddingDevices": true, "email": "plain.third@example.test"});
    iam_ok(&app, Method::PATCH, &path, &admin, Some(&body)).await;
    let me = current(&app, &plain).await;
    assert_eq!(me["forbidAddingDevices"], true);
    assert_eq!(me["email"], "plain.third@example.test");
    let add = json!({"applicationUuid": app.app, "username": "Plain", "deviceName": "tablet"});
    let (status, resp) = app.backend("/self-service/device", &add).await;
    assert_eq!((status, code(&resp)), NO_USER, "adding a device: {resp}");

    let body = json!({"forbidAddingDevices": false});
    iam_ok(&app, Method::PATCH, &path, &admin, Some(&body)).await;
    let (status, resp) = app.backend("/self-service/device", &add).await;
    assert_eq!((status, code(&resp)), OK, "adding a device: {resp}");
}

#[tokio::test]
async fn an_iam_user_lock_stops_logins_and_tokens_at_once_and_the_unlock_keeps_old_tokens_revoked()
{
    let (app, admin, mut plain) = with_admin().await;
    let path = format!("/iam/user/{}", plain.user_uuid);
    let old_token = plain.token.clone();

    iam_ok(
        &app,
        Method::PATCH,
        &path,
        &admin,
        Some(&json!({"locked": true})),
    )
    .await;
    let answer = login_answer(&app, &plain).await;
    assert!(is(&answer, ADMIN_LOCKED), "login: {answer:?}");
    let answer = validate(&app, &old_token).await;
    assert!(is(&answer, REVOKED_JWT), "old token: {answer:?}");
    let user = iam_ok(&app, Method::GET, "/iam/user?username=Plain", &admin, None).await;
    assert_eq!(user["locked"], true);
    // The locked user cannot lift the lock with its old token.
    let (status, resp) = app
        .bearer(
            Method::PATCH,
            &format!("/user/{}", plain.user_uuid),
            &old_token,
            Some(&json!({"locked": false})),
        )
        .await;
    assert_eq!((status, code(&resp)), REVOKED_JWT, "{resp}");

    iam_ok(
        &app,
        Method::PATCH,
        &path,
        &admin,
        Some(&json!({"locked": false})),
    )
    .await;
    relogin(&app, &mut plain).await;
    let answer = validate(&app, &plain.token).await;
    assert!(is(&answer, OK), "new token: {answer:?}");
    let answer = validate(&app, &old_token).await;
    assert!(
        is(&answer, REVOKED_JWT),
        "old token after unlock: {answer:?}"
    );

    // The same through the by-username route.
    let by_name = "/iam/user?username=Plain";
    let body = json!({"locked": true});
    iam_ok(&app, Method::PATCH, by_name, &admin, Some(&body)).await;
    let answer = login_answer(&app, &plain).await;
    assert!(is(&answer, ADMIN_LOCKED), "login: {answer:?}");
    let answer = validate(&app, &plain.token).await;
    assert!(is(&answer, REVOKED_JWT), "token: {answer:?}");
    let body = json!({"locked": false});
    iam_ok(&app, Method::PATCH, by_name, &admin, Some(&body)).await;
    relogin(&app, &mut plain).await;
}

#[tokio::test]
async fn an_iam_locked_user_cannot_get_in_by_activating_a_new_device() {
    let (app, admin, phone) = with_admin().await;
    let user_path = format!("/iam/user/{}", phone.user_uuid);
    let lock = json!({"locked": true});
    iam_ok(&app, Method::PATCH, &user_path, &admin, Some(&lock)).await;

    let body = json!({"applicationUuid": app.app, "username": "Plain", "deviceName": "new"});
    let (status, added) = app.backend("/self-service/device", &body).await;
    assert_eq!((status, code(&added)), OK, "{added}");
    let mut fresh = Device::new("Plain");
    let body = json!({"applicationUuid": app.app, "username": "Plain",
                      "deviceUuid": added["deviceUuid"],
                      "activationToken": added["activationToken"],
                      "hashedPin": fresh.hashed_pin()});
    let (status, resp) = app.backend("/authentication/activate/device", &body).await;
    fresh.take(&resp);
    // Whatever it answered, nothing issued during the lock may work after the unlock.
    let unlock = json!({"locked": false});
    iam_ok(&app, Method::PATCH, &user_path, &admin, Some(&unlock)).await;
    let after_unlock = if fresh.token.is_empty() {
        None
    } else {
        Some(validate(&app, &fresh.token).await)
    };
    assert!(
        (status, code(&resp)) == ADMIN_LOCKED
            && after_unlock.as_ref().is_none_or(|a| is(a, REVOKED_JWT)),
        "Device activation of a locked user answered {status} {:?}; \
         the token it issued, after the unlock: {after_unlock:?}",
        code(&resp)
    );
}

#[tokio::test]
async fn an_iam_locked_user_cannot_activate_their_first_device() {
    let (app, admin, _) = with_admin().await;
    let activation_token = app.sign_up("Fresh").await;
    let user = iam_ok(&app, Method::GET, "/iam/user?username=Fresh", &admin, None).await;
    let user_path = format!("/iam/user/{}", user["userUuid"].as_str().unwrap());
    let lock = json!({"locked": true});
    iam_ok(&app, Method::PATCH, &user_path, &admin, Some(&lock)).await;

    let mut fresh = Device::new("Fresh");
    let (status, resp) = app.activate(&fresh, &activation_token).await;
    fresh.take(&resp);
    let unlock = json!({"locked": false});
    iam_ok(&app, Method::PATCH, &user_path, &admin, Some(&unlock)).await;
    let after_unlock = if fresh.token.is_empty() {
        None
    } else {
        Some(validate(&app, &fresh.token).await)
    };
    assert!(
        (status, code(&resp)) == ADMIN_LOCKED
            && after_unlock.as_ref().is_none_or(|a| is(a, REVOKED_JWT)),
        "Activation of a locked user answered {status} {:?}; \
         the token it issued, after the unlock: {after_unlock:?}",
        code(&resp)
    );
}

#[tokio::test]
async fn an_iam_device_lock_stops_that_device_at_once_and_only_iam_lifts_it() {
    let (app, admin, mut phone) = with_admin().await;
    let mut tablet = second_device(&app, &phone).await;
    let devices_path = format!("/iam/user/{}/device", phone.user_uuid);
    let phone_path = format!("{devices_path}/{}", phone.device_uuid);
    let old_phone_token = phone.token.clone();

    let listed = iam_ok(&app, Method::GET, &devices_path, &admin, None).await;
    assert_eq!(listed["devices"].as_array().unwrap().len(), 2, "{listed}");

    let body = json!({"locked": true, "deviceName": "locked phone"});
    iam_ok(&app, Method::PATCH, &phone_path, &admin, Some(&body)).await;
    let answer = login_answer(&app, &phone).await;
    assert!(is(&answer, ADMIN_LOCKED), "phone login: {answer:?}");
    let answer = validate(&app, &old_phone_token).await;
    assert!(is(&answer, REVOKED_JWT), "phone token: {answer:?}");
    let answer = validate(&app, &tablet.token).await;
    assert!(is(&answer, OK), "the other device's token: {answer:?}");
    relogin(&app, &mut tablet).await;
    let listed = iam_ok(&app, Method::GET, &devices_path, &admin, None).await;
    let entry = listed["devices"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["deviceUuid"] == phone.device_uuid.as_str())
        .cloned()
        .unwrap();
    assert_eq!(entry["locked"], true, "{listed}");
    assert_eq!(entry["deviceName"], "locked phone", "{listed}");

    // The user's own unlock, from the other device, lifts only the user's own lock.
    let (status, resp) = app
        .bearer(
            Method::PATCH,
            &format!("/device/{}", phone.device_uuid),
            &tablet.token,
            Some(&json!({"locked": false})),
        )
        .await;
    assert_eq!((status, code(&resp)), OK, "{resp}");
    let answer = login_answer(&app, &phone).await;
    assert!(
        is(&answer, ADMIN_LOCKED),
        "after the user's unlock: {answer:?}"
    );
    // Nor is a PIN reset a way around it.
    let body = json!({"applicationUuid": app.app, "username": "Plain",
                      "deviceUuid": phone.device_uuid});
    let (status, resp) = app.backend("/authentication/forgot-pin", &body).await;
    assert_eq!((status, code(&resp)), ADMIN_LOCKED, "forgot-pin: {resp}");

    iam_ok(
        &app,
        Method::PATCH,
        &phone_path,
        &admin,
        Some(&json!({"locked": false})),
    )
    .await;
    relogin(&app, &mut phone).await;
    let answer = validate(&app, &old_phone_token).await;
    assert!(
        is(&answer, REVOKED_JWT),
        "old token after unlock: {answer:?}"
    );
    let answer = validate(&app, &phone.token).await;
    assert!(is(&answer, OK), "new token: {answer:?}");
}

#[tokio::test]
async fn an_iam_delete_removes_a_device_and_then_the_user() {
    let (app, admin, phone) = with_admin().await;
    let tablet = second_device(&app, &phone).await;
    let devices_path = format!("/iam/user/{}/device", phone.user_uuid);

    let tablet_path = format!("{devices_path}/{}", tablet.device_uuid);
    iam_ok(&app, Method::DELETE, &tablet_path, &admin, None).await;
    let listed = iam_ok(&app, Method::GET, &devices_path, &admin, None).await;
    let devices = listed["devices"].as_array().unwrap();
    assert_eq!(devices.len(), 1, "{listed}");
    assert_eq!(devices[0]["deviceUuid"], phone.device_uuid.as_str());
    let answer = login_answer(&app, &tablet).await;
    assert!(is(&answer, NO_DEVICE), "deleted device's login: {answer:?}");
    let answer = validate(&app, &tablet.token).await;
    assert!(
        is(&answer, REVOKED_JWT),
        "deleted device's token: {answer:?}"
    );
    let (status, resp) = iam(
        &app,
        Method::DELETE,
        &tablet_path,
        as_requestor(&admin),
        None,
    )
    .await;
    assert_eq!((status, code(&resp)), NO_DEVICE, "a second delete: {resp}");
    let answer = login_answer(&app, &phone).await;
    assert!(is(&answer, OK), "the remaining device: {answer:?}");

    // Another user's device is not reached through this user's path.
    let admins_device = format!("{devices_path}/{}", admin.device_uuid);
    let lock = json!({"locked": true});
    let requestor = as_requestor(&admin);
    let (status, resp) = iam(&app, Method::PATCH, &admins_device, requestor, Some(&lock)).await;
    assert_eq!((status, code(&resp)), NO_DEVICE, "{resp}");
    let (status, resp) = iam(&app, Method::DELETE, &admins_device, requestor, None).await;
    assert_eq!((status, code(&resp)), NO_DEVICE, "{resp}");
    let answer = login_answer(&app, &admin).await;
    assert!(is(&answer, OK), "the admin's own device: {answer:?}");

    let user_path = format!("/iam/user/{}", phone.user_uuid);
    iam_ok(&app, Method::DELETE, &user_path, &admin, None).await;
    let answer = login_answer(&app, &phone).await;
    assert!(is(&answer, NO_DEVICE), "deleted user's login: {answer:?}");
    let answer = validate(&app, &phone.token).await;
    assert!(is(&answer, REVOKED_JWT), "deleted user's token: {answer:?}");
    let (status, resp) = iam(
        &app,
        Method::GET,
        "/iam/user?username=Plain",
        as_requestor(&admin),
        None,
    )
    .await;
    assert_eq!((status, code(&resp)), NO_USER, "{resp}");
    let (status, resp) = iam(&app, Method::DELETE, &user_path, as_requestor(&admin), None).await;
    assert_eq!((status, code(&resp)), NO_USER, "a second delete: {resp}");
}

#[tokio::test]
async fn an_iam_otp_is_returned_with_the_users_contacts_and_validates_once() {
    let (app, admin, plain) = with_admin().await;
    let body = json!({"mobileNumber": "+41 79 111 22 33"});
    let user_path = format!("/iam/user/{}", plain.user_uuid);
    iam_ok(&app, Method::PATCH, &user_path, &admin, Some(&body)).await;
    let otp_path = format!("{user_path}/otp");

    let issued = iam_ok(
        &app,
        Method::POST,
        &otp_path,
        &admin,
        Some(&json!({"purpose": "support"})),
    )
    .await;
    assert!(
        issued["otp"].as_str().is_some_and(|o| o.len() == 6),
        "{issued}"
    );
    assert!(issued["otpUuid"].as_str().is_some(), "{issued}");
    assert_eq!(issued["ttl"], 300, "{issued}");
    assert_eq!(issued["userEmail"], "plain@example.test");
    assert_eq!(issued["mobileNumber"], "+41 79 111 22 33");
    let check = json!({"applicationUuid": app.app, "userUuid": plain.user_uuid,
                       "purpose": "support", "otp": issued["otp"]});
    let (status, resp) = app.backend("/otp/validate", &check).await;
    assert_eq!((status, code(&resp)), OK, "{resp}");
    let (status, resp) = app.backend("/otp/validate", &check).await;
    assert_eq!(
        (status, code(&resp)),
        (StatusCode::BAD_REQUEST, "AN-UOTP-1011"),
        "a second time: {resp}"
    );

    // A ttl of its own.
    let issued = iam_ok(
        &app,
        Method::POST,
        &otp_path,
        &admin,
        Some(&json!({"purpose": "support", "ttl": 60})),
    )
    .await;
    assert_eq!(issued["ttl"], 60, "{issued}");
    assert_eq!(
        issued["dateExpired"].as_u64().unwrap(),
        issued["dateCreated"].as_u64().unwrap() + 60
    );
    app.clock.advance(61);
    let check = json!({"applicationUuid": app.app, "username": "Plain",
                       "purpose": "support", "otp": issued["otp"]});
    let (status, resp) = app.backend("/otp/validate", &check).await;
    assert_eq!(
        (status, code(&resp)),
        (StatusCode::BAD_REQUEST, "AN-UOTP-1011"),
        "past its ttl: {resp}"
    );

    let (status, resp) = iam(
        &app,
        Method::POST,
        &otp_path,
        as_requestor(&admin),
        Some(&json!({})),
    )
    .await;
    assert_eq!(
        (status, code(&resp)),
        (StatusCode::BAD_REQUEST, "AN-UOTP-1006"),
        "without a purpose: {resp}"
    );
}

// == No self-service escalation

/// A user's own PATCH with privileged extra fields: ignored (200) or refused (400).
async fn own_patch(app: &TestApp, token: &str, path: &str, body: &Value) -> bool {
    let (status, resp) = app.bearer(Method::PATCH, path, token, Some(body)).await;
    let ignored = (status, code(&resp)) == OK;
    let refused = status == StatusCode::BAD_REQUEST && code(&resp).starts_with("AN-VALI-");
    assert!(ignored || refused, "PATCH {path} {body}: {status} {resp}");
    ignored
}

#[tokio::test]
async fn a_user_cannot_give_themselves_a_role_or_change_iam_flags_through_their_own_routes() {
    let (app, admin, phone) = with_admin().await;
    let tablet = second_device(&app, &phone).await;
    let user_path = format!("/iam/user/{}", phone.user_uuid);
    let body = json!({"forbidAddingDevices": true});
    iam_ok(&app, Method::PATCH, &user_path, &admin, Some(&body)).await;
    let privileged = |extra: (&str, Value)| {
        let mut body = json!({"roles": ["iam-admin"], "admin": true, "locked": true,
                              "forbidAddingDevices": false, "role": "iam-admin"});
        body[extra.0] = extra.1;
        body
    };
    let unchanged = |me: &Value| {
        assert_eq!(me["roles"], json!([]), "{me}");
        assert_eq!(me["locked"], false, "{me}");
        assert_eq!(me["forbidAddingDevices"], true, "{me}");
    };

    // The user's own PATCH: the email may change, nothing else.
    let body = privileged(("email", json!("phone.new@example.test")));
    let own_user = format!("/user/{}", phone.user_uuid);
    let applied = own_patch(&app, &phone.token, &own_user, &body).await;
    let me = current(&app, &phone).await;
    unchanged(&me);
    if applied {
        assert_eq!(me["email"], "phone.new@example.test", "{me}");
    }

    // The device's own PATCH: the name may change, nothing else.
    let body = privileged(("deviceName", json!("renamed")));
    let own_device = format!("/device/{}", phone.device_uuid);
    let applied = own_patch(&app, &phone.token, &own_device, &body).await;
    if applied {
        // `locked: true` is the device owner's own lock: lift it the owner's way.
        let lift = json!({"locked": false});
        own_patch(&app, &tablet.token, &own_device, &lift).await;
    }
    let me = current(&app, &tablet).await;
    unchanged(&me);

    // No IAM access was gained, and adding a device is still forbidden.
    let path = "/iam/user?username=Admin";
    let (status, resp) = iam(&app, Method::GET, path, as_requestor(&tablet), None).await;
    assert_eq!((status, code(&resp)), NOT_ALLOWED, "{resp}");
    let add = json!({"applicationUuid": app.app, "username": "Plain", "deviceName": "third"});
    let (status, resp) = app.backend("/self-service/device", &add).await;
    assert_eq!((status, code(&resp)), NO_USER, "adding a device: {resp}");

    // An IAM lock of a device is not lifted by any field of the user's own PATCH.
    let phone_path = format!("{user_path}/device/{}", phone.device_uuid);
    iam_ok(
        &app,
        Method::PATCH,
        &phone_path,
        &admin,
        Some(&json!({"locked": true})),
    )
    .await;
    let lift = json!({"locked": false, "adminLocked": false, "admin": true,
                      "roles": ["iam-admin"]});
    own_patch(&app, &tablet.token, &own_device, &lift).await;
    let answer = login_answer(&app, &phone).await;
    assert!(
        is(&answer, ADMIN_LOCKED),
        "after the user's lift: {answer:?}"
    );
    let answer = login_answer(&app, &tablet).await;
    assert!(is(&answer, OK), "the other device: {answer:?}");
}
