//! Bad input on the back-end routes: each gets the documented 4xx envelope, never a 5xx,
//! changes nothing, and the server keeps answering.

use std::time::Duration;

use latchkey::BASE;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt as _;
use uuid::Uuid;

use crate::helpers::{Device, TestApp, code, read_until};

/// One bad request and the answer the contract gives it.
struct Attempt {
    what: String,
    method: Method,
    path: &'static str,
    content_type: Option<&'static str>,
    /// Replaces the default `x-api-key` header (None: no API key at all).
    api_key: Option<String>,
    extra_headers: Vec<(&'static str, String)>,
    body: Vec<u8>,
    status: StatusCode,
    code: &'static str,
    /// The message must name this (a field), when given.
    names: Option<&'static str>,
}

impl Attempt {
    fn json(what: &str, path: &'static str, body: &Value, api_key: &str) -> Self {
        Self::raw(what, path, body.to_string().into_bytes(), api_key)
    }

    fn raw(what: &str, path: &'static str, body: Vec<u8>, api_key: &str) -> Self {
        Self {
            what: what.to_owned(),
            method: Method::POST,
            path,
            content_type: Some("application/json"),
            api_key: Some(api_key.to_owned()),
            extra_headers: Vec::new(),
            body,
            status: StatusCode::BAD_REQUEST,
            code: "AN-VALI-1001",
            names: None,
        }
    }

    fn answers(mut self, status: StatusCode, code: &'static str) -> Self {
        self.status = status;
        self.code = code;
        self
    }

    fn naming(mut self, field: &'static str) -> Self {
        self.names = Some(field);
        self
    }

    /// Sends the request; returns what is wrong with the answer, if anything.
    async fn run(&self, app: &TestApp) -> Option<String> {
        let mut req = app
            .client
            .request(
                self.method.clone(),
                format!("{}{BASE}{}", app.base, self.path),
            )
            .body(self.body.clone());
        if let Some(ct) = self.content_type {
            req = req.header("content-type", ct);
        }
        if let Some(key) = &self.api_key {
            req = req.header("x-api-key", key);
        }
        for (k, v) in &self.extra_headers {
            req = req.header(*k, v);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status();
        let text = resp.text().await.unwrap();
        let what = &self.what;
        let Ok(body) = serde_json::from_str::<Value>(&text) else {
            return Some(format!("{what}: answer is not JSON: {status} {text:?}"));
        };
        if !status.is_client_error() {
            return Some(format!("{what}: {status} is not a 4xx: {body}"));
        }
        if (status, code(&body)) != (self.status, self.code) {
            return Some(format!(
                "{what}: expected {} {}, got {status} {body}",
                self.status, self.code
            ));
        }
        if body["responseStatus"]["status"] != "ERROR" {
            return Some(format!("{what}: no ERROR envelope: {body}"));
        }
        let message = body["responseStatus"]["message"].as_str().unwrap_or("");
        match self.names {
            Some(field) if !message.contains(field) => {
                Some(format!("{what}: message {message:?} does not name {field}"))
            }
            _ => None,
        }
    }
}

/// Runs every attempt and fails with the list of wrong answers.
async fn run_all(app: &TestApp, attempts: &[Attempt]) {
    let mut wrong = Vec::new();
    for attempt in attempts {
        wrong.extend(attempt.run(app).await);
    }
    assert!(
        wrong.is_empty(),
        "{} of {} bad requests got a wrong answer:\n{}",
        wrong.len(),
        attempts.len(),
        wrong.join("\n")
    );
}

fn without(body: &Value, field: &str) -> Value {
    let mut body = body.clone();
    body.as_object_mut().unwrap().remove(field);
    body
}

fn with(body: &Value, field: &str, value: Value) -> Value {
    let mut body = body.clone();
    body[field] = value;
    body
}

/// The bad requests every JSON route of the back end must refuse: `good` is a body that
/// would succeed, `required` its required fields with a value of the wrong type for each,
/// `positional` the values of `good` as an array in the contract's field order.
fn common_attempts(
    path: &'static str,
    good: &Value,
    required: &[(&'static str, Value)],
    positional: &Value,
    app: &TestApp,
    other_key: &str,
) -> Vec<Attempt> {
    let key = app.api_key.as_str();
    let good_text = good.to_string();
    let mut out = vec![
        Attempt::raw(
            "malformed JSON",
            path,
            good_text.as_bytes()[..good_text.len() / 2].to_vec(),
            key,
        ),
        Attempt::raw(
            "trailing garbage",
            path,
            format!("{good_text}}}").into_bytes(),
            key,
        ),
        Attempt::raw("not JSON", path, b"username=alice&pin=1234".to_vec(), key),
        Attempt::raw("empty body", path, Vec::new(), key),
        Attempt::raw("whitespace body", path, b"  \n ".to_vec(), key),
        Attempt::raw("a bare string", path, b"\"hello\"".to_vec(), key),
        Attempt::raw("null", path, b"null".to_vec(), key),
        Attempt::raw(
            "invalid UTF-8",
            path,
            [&b"{\"username\": \""[..], &[0xff, 0xfe], &b"\"}"[..]].concat(),
            key,
        ),
        Attempt::raw(
            "deeply nested JSON under the size limit",
            path,
            format!("{}1{}", "{\"a\":".repeat(10_000), "}".repeat(10_000)).into_bytes(),
            key,
        ),
        Attempt::raw(
            "deeply nested arrays under the size limit",
            path,
            format!("{}{}", "[".repeat(30_000), "]".repeat(30_000)).into_bytes(),
            key,
        ),
        Attempt::json(
            "deeply nested JSON inside a known field",
            path,
            &with(
                good,
                "username",
                serde_json::from_str::<Value>(&format!("{}1{}", "[".repeat(100), "]".repeat(100)))
                    .unwrap(),
            ),
            key,
        )
        .answers(StatusCode::BAD_REQUEST, "AN-VALI-1002"),
        Attempt::json("an array body", path, &json!([good]), key),
        Attempt::json(
            "an array of the field values in the contract's order",
            path,
            positional,
            key,
        ),
        Attempt::json(
            "missing applicationUuid (no header either)",
            path,
            &without(good, "applicationUuid"),
            key,
        )
        .naming("applicationUuid"),
        Attempt::json(
            "unknown applicationUuid",
            path,
            &with(good, "applicationUuid", json!(Uuid::new_v4().to_string())),
            key,
        )
        .answers(StatusCode::BAD_REQUEST, "AN-APLI-1005"),
        Attempt::json(
            "malformed applicationUuid",
            path,
            &with(good, "applicationUuid", json!("not-a-uuid")),
            key,
        )
        .answers(StatusCode::BAD_REQUEST, "AN-APLI-1005"),
        Attempt::json(
            "applicationUuid of the wrong type",
            path,
            &with(good, "applicationUuid", json!(42)),
            key,
        )
        .answers(StatusCode::BAD_REQUEST, "AN-VALI-1002")
        .naming("applicationUuid"),
        Attempt::json(
            "null byte in the username",
            path,
            &with(
                good,
                "username",
                json!(format!("{}\u{0}", good["username"].as_str().unwrap())),
            ),
            key,
        )
        .answers(StatusCode::BAD_REQUEST, "AN-VALI-1003"),
    ];

    let mut mismatch = Attempt::json("body and header applicationUuid differ", path, good, key)
        .answers(StatusCode::BAD_REQUEST, "AN-VALI-1006");
    mismatch
        .extra_headers
        .push(("x-application-uuid", Uuid::new_v4().to_string()));
    out.push(mismatch);

    let mut no_key = Attempt::json("missing x-api-key", path, good, key)
        .answers(StatusCode::UNAUTHORIZED, "AN-APLI-1010");
    no_key.api_key = None;
    out.push(no_key);
    for (what, wrong) in [
        ("wrong x-api-key", format!("{key}x")),
        ("empty x-api-key", String::new()),
        ("another application's x-api-key", other_key.to_owned()),
    ] {
        let mut attempt =
            Attempt::json(what, path, good, key).answers(StatusCode::UNAUTHORIZED, "AN-APLI-1010");
        attempt.api_key = Some(wrong);
        out.push(attempt);
    }

    for ct in [
        Some("text/plain"),
        Some("application/x-www-form-urlencoded"),
        None,
    ] {
        let mut attempt = Attempt::json(&format!("Content-Type {ct:?}"), path, good, key)
            .answers(StatusCode::UNSUPPORTED_MEDIA_TYPE, "AN-VALI-1004");
        attempt.content_type = ct;
        out.push(attempt);
    }

    for (field, wrong) in required {
        out.push(
            Attempt::json(
                &format!("missing {field}"),
                path,
                &without(good, field),
                key,
            )
            .naming(field),
        );
        out.push(
            Attempt::json(
                &format!("null {field}"),
                path,
                &with(good, field, Value::Null),
                key,
            )
            .answers(StatusCode::BAD_REQUEST, "AN-VALI-1002")
            .naming(field),
        );
        out.push(
            Attempt::json(
                &format!("{field} of the wrong type"),
                path,
                &with(good, field, wrong.clone()),
                key,
            )
            .answers(StatusCode::BAD_REQUEST, "AN-VALI-1002")
            .naming(field),
        );
    }

    let mut wrong_method = Attempt::json("GET on a POST route", path, good, key)
        .answers(StatusCode::METHOD_NOT_ALLOWED, "AN-HTTP-1005");
    wrong_method.method = Method::GET;
    wrong_method.body = Vec::new();
    out.push(wrong_method);
    let mut wrong_method = Attempt::json("PUT on a POST route", path, good, key)
        .answers(StatusCode::METHOD_NOT_ALLOWED, "AN-HTTP-1005");
    wrong_method.method = Method::PUT;
    out.push(wrong_method);
    out.push(
        Attempt::json("an unknown route", "/self-service/nothing", good, key)
            .answers(StatusCode::NOT_FOUND, "AN-HTTP-1004"),
    );
    out
}

async fn assert_live(app: &TestApp) {
    let resp = app
        .client
        .get(format!("{}/health/live", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
}

#[tokio::test]
async fn bad_activation_requests_get_the_documented_4xx_and_change_nothing() {
    let app = TestApp::spawn().await;
    let (_, other_key) = app.engine().create_app("other").await.unwrap();
    let token = app.sign_up("Target").await;
    let device = Device::new("Target");
    let path = "/authentication/activate/user";
    // Every bad request carries the real activation token: none may use or count it.
    let good = json!({"applicationUuid": app.app, "username": "Target",
                      "activationToken": token, "hashedPin": device.hashed_pin(),
                      "deviceName": "phone"});
    let required = [
        ("username", json!(42)),
        ("activationToken", json!(token.parse::<u64>().unwrap())),
        ("hashedPin", json!([device.hashed_pin()])),
        ("deviceName", json!({"name": "phone"})),
    ];
    let positional = json!([app.app, "Target", token, device.hashed_pin(), "phone"]);
    let mut attempts = common_attempts(path, &good, &required, &positional, &app, &other_key);
    for (what, pin) in [
        (
            "an 88-character hashedPin that is not Base64",
            "!".repeat(88),
        ),
        (
            "an 88-character hashedPin with padding inside",
            format!("{}={}", "A".repeat(43), "A".repeat(44)),
        ),
        (
            "an 88-character URL-safe Base64 hashedPin",
            format!("{}-_==", "A".repeat(84)),
        ),
        ("a short hashedPin", "QUJD".to_owned()),
    ] {
        attempts.push(
            Attempt::json(
                what,
                path,
                &with(&good, "hashedPin", json!(pin)),
                &app.api_key,
            )
            .answers(StatusCode::BAD_REQUEST, "AN-VALI-1002")
            .naming("hashedPin"),
        );
    }
    run_all(&app, &attempts).await;
    assert_live(&app).await;

    // Nothing changed: the activation token still works, exactly once.
    let (status, resp) = app.activate(&device, &token).await;
    assert_eq!(status, StatusCode::OK, "{resp}");
    let (status, resp) = app.activate(&device, &token).await;
    assert_eq!(
        (status, code(&resp)),
        (StatusCode::BAD_REQUEST, "AN-AUTH-1041"),
        "a second use: {resp}"
    );
    assert_live(&app).await;
}

#[tokio::test]
async fn bad_sign_up_requests_get_the_documented_4xx_and_create_nobody() {
    let app = TestApp::spawn().await;
    let (_, other_key) = app.engine().create_app("other").await.unwrap();
    let path = "/self-service/user";
    let good = json!({"applicationUuid": app.app, "username": "Mallory",
                      "email": "mallory@example.test"});
    let required = [("username", json!(["Mallory"])), ("email", json!(7))];
    let positional = json!([app.app, "Mallory", "mallory@example.test", null]);
    let mut attempts = common_attempts(path, &good, &required, &positional, &app, &other_key);
    attempts.push(
        Attempt::json(
            "mobileNumber of the wrong type",
            path,
            &with(&good, "mobileNumber", json!(41_791_234_567_u64)),
            &app.api_key,
        )
        .answers(StatusCode::BAD_REQUEST, "AN-VALI-1002")
        .naming("mobileNumber"),
    );
    run_all(&app, &attempts).await;
    assert_live(&app).await;

    // Nobody was created: the name is still free, and it works end to end.
    let d = app.new_device("Mallory").await;
    let (status, resp) = app.login(&d).await;
    assert_eq!(status, StatusCode::OK, "{resp}");
}

/// Writes `request` on one raw connection and reads the answer's status code and JSON body.
/// The connection is not closed for writing, so a server that waits for the rest of a
/// declared body never answers (and the guard below fails the test).
async fn raw_exchange(app: &TestApp, request: &[u8]) -> (u16, Value) {
    let addr = app.base.trim_start_matches("http://").to_owned();
    let mut stream = tokio::net::TcpStream::connect(&addr).await.unwrap();
    // One write: the server reads what it is sent in one go, so nothing is left unread
    // when it closes the connection (which would reset it).
    stream.write_all(request).await.unwrap();

    // A guard against a hang, not a timing assumption: a right server answers at once.
    let read = read_until(&mut stream, |bytes| complete_answer(bytes).is_some());
    let received = tokio::time::timeout(Duration::from_secs(20), read)
        .await
        .expect("the server did not answer before the body was complete");
    complete_answer(&received).unwrap_or_else(|| {
        panic!(
            "incomplete answer: {:?}",
            String::from_utf8_lossy(&received)
        )
    })
}

/// The status and JSON body once a whole answer (by Content-Length) is in `bytes`.
fn complete_answer(bytes: &[u8]) -> Option<(u16, Value)> {
    let text = std::str::from_utf8(bytes).ok()?;
    let (head, body) = text.split_once("\r\n\r\n")?;
    let status = head.split(' ').nth(1)?.parse().ok()?;
    let length: usize = head
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse().ok())?
        })
        .unwrap_or(0);
    if body.len() < length {
        return None;
    }
    Some((status, serde_json::from_str(&body[..length]).ok()?))
}

#[tokio::test]
async fn a_ten_megabyte_body_is_refused_before_it_is_sent() {
    let app = TestApp::spawn().await;
    let token = app.sign_up("Big").await;
    let head = format!(
        "POST {BASE}/authentication/activate/user HTTP/1.1\r\nHost: latchkey\r\n\
         Content-Type: application/json\r\nx-api-key: {}\r\n\
         Content-Length: 10485760\r\n\r\n{{\"applicationUuid\": \"{}\", \"username\": \"",
        app.api_key, app.app
    );
    let (status, body) = raw_exchange(&app, head.as_bytes()).await;
    assert_eq!(status, 413, "{body}");
    assert_eq!(code(&body), "AN-VALI-1005", "{body}");
    assert_eq!(body["responseStatus"]["status"], "ERROR");

    assert_live(&app).await;
    let (status, resp) = app.activate(&Device::new("Big"), &token).await;
    assert_eq!(status, StatusCode::OK, "{resp}");
}

#[tokio::test]
async fn a_chunked_body_over_the_limit_is_refused() {
    let app = TestApp::spawn().await;
    let mut request = format!(
        "POST {BASE}/self-service/user HTTP/1.1\r\nHost: latchkey\r\n\
         Content-Type: application/json\r\nx-api-key: {}\r\n\
         Transfer-Encoding: chunked\r\n\r\n",
        app.api_key
    )
    .into_bytes();
    // 70 KiB of a JSON string, in 1 KiB chunks, no Content-Length anywhere.
    let mut payload = format!(
        "{{\"applicationUuid\": \"{}\", \"username\": \"Chunky2\", \
         \"email\": \"c@example.test\", \"pad\": \"",
        app.app
    )
    .into_bytes();
    payload.resize(70 * 1024, b'x');
    payload.extend_from_slice(b"\"}");
    for chunk in payload.chunks(1024) {
        request.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        request.extend_from_slice(chunk);
        request.extend_from_slice(b"\r\n");
    }
    request.extend_from_slice(b"0\r\n\r\n");

    let (status, body) = raw_exchange(&app, &request).await;
    assert_eq!(status, 413, "{body}");
    assert_eq!(code(&body), "AN-VALI-1005", "{body}");

    assert_live(&app).await;
    let body = json!({"applicationUuid": app.app, "username": "Chunky2",
                      "email": "c@example.test"});
    let (status, resp) = app.backend("/self-service/user", &body).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "the refused sign-up created nobody: {resp}"
    );
}
