//! Delivery: with a channel configured, activation and reset-PIN tokens reach the user by a
//! real SMTP server or a signed webhook and stay out of the HTTP answer; a message queued
//! while the mail server is down survives a restart of Latchkey; a dead mail server does not
//! slow the requests that queue messages.

use std::time::{Duration, Instant};

use hmac::{Hmac, Mac};
use latchkey_actors::{
    Channel, DeliverySettings, SecretText, SmtpSettings, SmtpTls, Template, WebhookSettings,
};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sha2::Sha256;

use crate::{
    helpers::{Device, TestApp, code, eventually, eventually_within},
    receivers::{SmtpSink, WebhookReceiver, free_port},
};

/// Retries every second, and never gives up within a test.
fn fast_retries() -> DeliverySettings {
    DeliverySettings {
        max_tries: 1000,
        retry_base_secs: 1,
        retry_cap_secs: 1,
        ..DeliverySettings::default()
    }
}

fn smtp_delivery(port: u16) -> DeliverySettings {
    let mut delivery = DeliverySettings {
        channel: Channel::Smtp,
        smtp: Some(SmtpSettings {
            host: "127.0.0.1".into(),
            port,
            tls: SmtpTls::Plain,
            username: None,
            password: None,
            from: "Latchkey <no-reply@latchkey.test>".into(),
        }),
        ..fast_retries()
    };
    delivery.templates.reset_pin = Template {
        subject: Some("PIN reset for {app}".into()),
        body: Some("Hi {username}, your reset code is {token}.\n".into()),
    };
    delivery
}

const WEBHOOK_SECRET: &str = "test-webhook-secret";

fn webhook_delivery(url: &str) -> DeliverySettings {
    DeliverySettings {
        channel: Channel::Webhook,
        webhook: Some(WebhookSettings {
            url: url.into(),
            secret: SecretText::new(WEBHOOK_SECRET),
        }),
        ..fast_retries()
    }
}

fn email_of(username: &str) -> String {
    format!("{}@example.test", username.to_lowercase())
}

/// Signs up through the API and checks that the token stayed out of the answer.
async fn sign_up_delivered(app: &TestApp, username: &str) {
    let body = json!({"applicationUuid": app.app, "username": username,
                      "email": email_of(username)});
    let (status, resp) = app.backend("/self-service/user", &body).await;
    assert_eq!(status, StatusCode::OK, "{resp}");
    assert!(
        resp.get("activationToken").is_none(),
        "a delivered token must not be in the answer: {resp}"
    );
}

/// The newest message to `username` whose text contains `marker`, once it has arrived.
async fn mail_to(sink: &SmtpSink, username: &str, marker: &str) -> String {
    let to = format!("X-Envelope-To: {}", email_of(username));
    let found = std::cell::RefCell::new(None);
    eventually_within(
        &format!("a mail to {username} containing {marker:?}"),
        Duration::from_secs(20),
        || {
            let (to, found) = (&to, &found);
            async move {
                let mail = sink
                    .messages()
                    .into_iter()
                    .rev()
                    .find(|m| m.starts_with(to.as_str()) && m.contains(marker));
                let arrived = mail.is_some();
                *found.borrow_mut() = mail;
                arrived
            }
        },
    )
    .await;
    found.into_inner().unwrap()
}

/// The first run of exactly six digits in the body (headers carry dates and ids).
fn code_in(mail: &str) -> String {
    let body = mail.split_once("\r\n\r\n").map_or(mail, |(_, body)| body);
    body.split(|c: char| !c.is_ascii_digit())
        .find(|run| run.len() == 6)
        .unwrap_or_else(|| panic!("no code in the mail body: {body}"))
        .to_owned()
}

/// Signs up `username` and activates a device with the token that arrived by mail.
async fn device_by_mail(app: &TestApp, sink: &SmtpSink, username: &str) -> Device {
    sign_up_delivered(app, username).await;
    let token = code_in(&mail_to(sink, username, "activation code").await);
    let mut device = Device::new(username);
    let (status, resp) = app.activate(&device, &token).await;
    assert_eq!(status, StatusCode::OK, "{resp}");
    device.take(&resp);
    device
}

async fn forgot_pin(app: &TestApp, d: &Device) -> (StatusCode, Value) {
    let body = json!({"applicationUuid": app.app, "username": d.username,
                      "deviceUuid": d.device_uuid});
    app.backend("/authentication/forgot-pin", &body).await
}

async fn reset_pin(app: &TestApp, d: &Device, token: &str) -> (StatusCode, Value) {
    let body = json!({"applicationUuid": app.app, "username": d.username,
                      "deviceUuid": d.device_uuid, "hashedPin": d.hashed_pin(),
                      "resetPinToken": token});
    app.backend("/authentication/reset-pin", &body).await
}

#[tokio::test]
async fn an_activation_token_arrives_by_email_and_works_once() {
    let mails = tempfile::tempdir().unwrap();
    let sink = SmtpSink::start(mails.path()).await;
    let app = TestApp::spawn_with(|c| c.app_defaults.delivery = smtp_delivery(sink.port)).await;

    sign_up_delivered(&app, "Alice").await;
    let mail = mail_to(&sink, "Alice", "activation code").await;
    assert!(
        mail.contains("Subject: Your test activation code"),
        "{mail}"
    );
    assert!(
        mail.contains("From: Latchkey <no-reply@latchkey.test>"),
        "{mail}"
    );
    let token = code_in(&mail);

    let device = Device::new("Alice");
    let (status, resp) = app.activate(&device, &token).await;
    assert_eq!(status, StatusCode::OK, "{resp}");
    let (status, resp) = app.activate(&device, &token).await;
    assert_eq!(
        (status, code(&resp)),
        (StatusCode::BAD_REQUEST, "AN-AUTH-1041"),
        "{resp}"
    );
    eventually("the delivered message leaves the outbox", || {
        let app = &app;
        async move { app.engine().pending_deliveries() == 0 }
    })
    .await;
}

#[tokio::test]
async fn device_and_reset_tokens_arrive_by_email_and_leave_the_answer() {
    let mails = tempfile::tempdir().unwrap();
    let sink = SmtpSink::start(mails.path()).await;
    let app = TestApp::spawn_with(|c| c.app_defaults.delivery = smtp_delivery(sink.port)).await;
    let mut d = device_by_mail(&app, &sink, "Bruno").await;

    let body = json!({"applicationUuid": app.app, "username": "Bruno", "deviceName": "tablet"});
    let (status, resp) = app.backend("/self-service/device", &body).await;
    assert_eq!(status, StatusCode::OK, "{resp}");
    assert!(resp.get("activationToken").is_none(), "{resp}");
    assert_eq!(resp["userEmail"], email_of("Bruno"));
    let token = code_in(&mail_to(&sink, "Bruno", "new device").await);
    let mut tablet = Device::new("Bruno");
    let body = json!({"applicationUuid": app.app, "username": "Bruno",
                      "deviceUuid": resp["deviceUuid"], "activationToken": token,
                      "hashedPin": tablet.hashed_pin()});
    let (status, resp) = app.backend("/authentication/activate/device", &body).await;
    assert_eq!(status, StatusCode::OK, "{resp}");
    tablet.take(&resp);

    // The bearer route delivers the same way, with the application's own template.
    let path = format!("/device/{}/forgot-pin", tablet.device_uuid);
    let (status, resp) = app.bearer(Method::POST, &path, &tablet.token, None).await;
    assert_eq!(status, StatusCode::OK, "{resp}");
    assert!(resp.get("resetPinToken").is_none(), "{resp}");
    let mail = mail_to(&sink, "Bruno", "reset code").await;
    assert!(mail.contains("Subject: PIN reset for test"), "{mail}");
    assert!(mail.contains("Hi Bruno, your reset code is"), "{mail}");
    let path = format!("/device/{}/reset-pin", tablet.device_uuid);
    let body = json!({"hashedPin": tablet.hashed_pin(), "resetPinToken": code_in(&mail)});
    let (status, resp) = app
        .bearer(Method::POST, &path, &tablet.token, Some(&body))
        .await;
    assert_eq!(status, StatusCode::OK, "{resp}");

    d.pin = "4321".into();
    let (status, resp) = forgot_pin(&app, &d).await;
    assert_eq!(status, StatusCode::OK, "{resp}");
    assert_eq!(resp["userEmail"], email_of("Bruno"));
    assert!(resp.get("resetPinToken").is_none(), "{resp}");
}

#[tokio::test]
async fn a_reset_mail_queued_while_smtp_is_down_arrives_after_a_restart() {
    let mails = tempfile::tempdir().unwrap();
    let mut sink = SmtpSink::start(mails.path()).await;
    let port = sink.port;
    let mut app = TestApp::spawn_with(|c| c.app_defaults.delivery = smtp_delivery(port)).await;
    let mut d = device_by_mail(&app, &sink, "Carmen").await;

    sink.stop().await;
    let (status, resp) = forgot_pin(&app, &d).await;
    assert_eq!(status, StatusCode::OK, "{resp}");
    assert!(resp.get("resetPinToken").is_none(), "{resp}");
    assert_eq!(app.engine().pending_deliveries(), 1);

    app.restart().await;
    assert_eq!(
        app.engine().pending_deliveries(),
        1,
        "the restarted server resumed the queued message"
    );
    let sink = SmtpSink::start_on(port, mails.path()).await;

    let mail = mail_to(&sink, "Carmen", "reset code").await;
    d.pin = "2468".into();
    let (status, resp) = reset_pin(&app, &d, &code_in(&mail)).await;
    assert_eq!(status, StatusCode::OK, "{resp}");
    eventually("the outbox is empty", || {
        let app = &app;
        async move { app.engine().pending_deliveries() == 0 }
    })
    .await;
}

#[tokio::test]
async fn with_starttls_required_a_relay_without_it_gets_nothing() {
    let mails = tempfile::tempdir().unwrap();
    let sink = SmtpSink::start(mails.path()).await;
    let app = TestApp::spawn_with(|c| {
        let mut delivery = smtp_delivery(sink.port);
        delivery.max_tries = 2;
        if let Some(smtp) = delivery.smtp.as_mut() {
            smtp.tls = SmtpTls::Starttls;
        }
        c.app_defaults.delivery = delivery;
    })
    .await;

    sign_up_delivered(&app, "Hal").await;
    eventually_within("both tries failed", Duration::from_secs(20), || {
        let app = &app;
        async move { app.engine().pending_deliveries() == 0 }
    })
    .await;
    assert_eq!(sink.count(), 0, "nothing may go out unencrypted");
}

/// Checks a signature header the way a receiver would, with its own HMAC.
fn signature_valid(secret: &str, header: &str, body: &str) -> bool {
    let Some((t, v1)) = header
        .strip_prefix("t=")
        .and_then(|rest| rest.split_once(",v1="))
    else {
        return false;
    };
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(format!("{t}.{body}").as_bytes());
    let expected: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    expected == v1
}

#[tokio::test]
async fn webhook_events_are_signed_retried_and_carry_the_token() {
    // The receiver refuses the first request, so the first event is also a retry.
    let hooks = WebhookReceiver::start(1).await;
    let url = hooks.url.clone();
    let app = TestApp::spawn_with(|c| c.app_defaults.delivery = webhook_delivery(&url)).await;

    sign_up_delivered(&app, "Dora").await;
    eventually_within(
        "the activation event, after one retry",
        Duration::from_secs(20),
        || {
            let hooks = &hooks;
            async move { hooks.hooks().len() >= 2 }
        },
    )
    .await;

    // Every request is signed with the shared secret, and a tampered one would not verify.
    let got = hooks.hooks();
    let now = app.clock.now();
    for hook in &got {
        let header = hook.signature.as_deref().expect("signed");
        assert!(
            signature_valid(WEBHOOK_SECRET, header, &hook.body),
            "{header}"
        );
        assert!(!signature_valid("another-secret", header, &hook.body));
        let tampered = hook.body.replacen("Dora", "Eve", 1);
        assert!(!signature_valid(WEBHOOK_SECRET, header, &tampered));
        let t: u64 = header[2..header.find(',').unwrap()].parse().unwrap();
        assert!(t.abs_diff(now) < 60, "a current timestamp: {header}");
    }
    let events: Vec<Value> = got
        .iter()
        .map(|h| serde_json::from_str(&h.body).unwrap())
        .collect();
    assert_eq!(
        events[0]["id"], events[1]["id"],
        "a retry resends the same event"
    );
    let event = &events[1];
    assert_eq!(event["type"], "activation");
    assert_eq!(event["applicationUuid"], app.app.to_string());
    assert_eq!(event["username"], "Dora");
    assert_eq!(event["email"], email_of("Dora"));
    assert!(
        event["createdAt"].is_u64() && event["userUuid"].is_string(),
        "{event}"
    );

    let mut d = Device::new("Dora");
    let token = event["token"].as_str().unwrap();
    let (status, resp) = app.activate(&d, token).await;
    assert_eq!(status, StatusCode::OK, "{resp}");
    d.take(&resp);

    let (status, resp) = forgot_pin(&app, &d).await;
    assert_eq!(status, StatusCode::OK, "{resp}");
    assert!(resp.get("resetPinToken").is_none(), "{resp}");
    eventually("the reset event", || {
        let hooks = &hooks;
        async move { hooks.hooks().len() >= 3 }
    })
    .await;
    let hook = hooks.hooks().pop().unwrap();
    assert!(signature_valid(
        WEBHOOK_SECRET,
        hook.signature.as_deref().unwrap(),
        &hook.body
    ));
    let event: Value = serde_json::from_str(&hook.body).unwrap();
    assert_eq!(event["type"], "reset_pin");
    assert_eq!(event["userUuid"], d.user_uuid);
    let (status, resp) = reset_pin(&app, &d, event["token"].as_str().unwrap()).await;
    assert_eq!(status, StatusCode::OK, "{resp}");
}

#[tokio::test]
async fn a_message_is_given_up_after_its_tries_and_leaves_the_outbox() {
    let hooks = WebhookReceiver::start(usize::MAX).await;
    let url = hooks.url.clone();
    let app = TestApp::spawn_with(|c| {
        c.app_defaults.delivery = DeliverySettings {
            max_tries: 3,
            ..webhook_delivery(&url)
        };
    })
    .await;

    sign_up_delivered(&app, "Gus").await;
    eventually_within("the message is given up", Duration::from_secs(20), || {
        let app = &app;
        async move { app.engine().pending_deliveries() == 0 }
    })
    .await;
    assert_eq!(hooks.hooks().len(), 3, "exactly max_tries tries");

    let metrics = app
        .client
        .get(format!("{}/metrics", app.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("latchkey_outbox_pending 0"), "{metrics}");
}

/// Accepts connections and never says a word: the slowest possible mail server.
async fn silent_server() -> (u16, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let task = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    (port, task)
}

#[tokio::test]
async fn a_dead_or_silent_mail_server_does_not_slow_sign_up() {
    let (silent, _server) = silent_server().await;
    for (what, port) in [("closed port", free_port()), ("silent server", silent)] {
        let app = TestApp::spawn_with(|c| c.app_defaults.delivery = smtp_delivery(port)).await;
        let started = Instant::now();
        for i in 0..26u8 {
            let one = Instant::now();
            sign_up_delivered(&app, &format!("Waiter{}", char::from(b'a' + i))).await;
            assert!(
                one.elapsed() < Duration::from_secs(2),
                "{what}: sign-up {i} took {:?}",
                one.elapsed()
            );
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{what}: 26 sign-ups took {:?}",
            started.elapsed()
        );
        assert_eq!(
            app.engine().pending_deliveries(),
            26,
            "{what}: every message stays queued"
        );
    }
}

/// Sign-ups through the API, `parallel` at a time.
async fn sign_up_many(app: &TestApp, prefix: &str, count: usize, parallel: usize) {
    let mut running = tokio::task::JoinSet::new();
    for i in 0..count {
        if running.len() >= parallel {
            running.join_next().await.unwrap().unwrap();
        }
        let (client, app_id, key) = (app.client.clone(), app.app, app.api_key.clone());
        let url = format!("{}{}/self-service/user", app.base, latchkey::BASE);
        let name = format!("{prefix}{i}");
        running.spawn(async move {
            let body = json!({"applicationUuid": app_id, "username": name,
                              "email": format!("{name}@example.test")});
            let resp = client
                .post(url)
                .header("x-api-key", key)
                .json(&body)
                .send()
                .await;
            assert_eq!(resp.unwrap().status(), StatusCode::OK);
        });
    }
    while let Some(done) = running.join_next().await {
        done.unwrap();
    }
}

/// Measures how fast the outbox empties into a local SMTP server (aiosmtpd, one Python
/// process): 2,000 activation mails queued while the server is down, then released at once by
/// a restart; and the same number sent while signing up. Prints messages per second.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement: cargo test --test api delivery_rate -- --ignored --nocapture"]
async fn delivery_rate_to_a_local_smtp_server() {
    const N: usize = 2000;
    let mails = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut app = TestApp::spawn_with(|c| {
        let mut delivery = smtp_delivery(port);
        delivery.retry_base_secs = 3600;
        delivery.retry_cap_secs = 3600;
        c.app_defaults.delivery = delivery;
    })
    .await;

    // == Queue N messages that fail once (no server) and then wait an hour.
    let started = Instant::now();
    sign_up_many(&app, "queued", N, 32).await;
    let signing_up = started.elapsed();
    app.stop_server().await;

    // == Start the server, move the clock past the wait, and time the resumed outbox.
    let sink = SmtpSink::start_on(port, mails.path()).await;
    app.clock.advance(3601);
    let started = Instant::now();
    app.restart().await;
    eventually_within("every queued mail", Duration::from_secs(600), || {
        let sink = &sink;
        async move { sink.count() >= N }
    })
    .await;
    let resumed = started.elapsed();
    eventually("the outbox is empty", || {
        let app = &app;
        async move { app.engine().pending_deliveries() == 0 }
    })
    .await;

    // == Sign up N more users while the server runs, and time until the last mail.
    let started = Instant::now();
    sign_up_many(&app, "live", N, 32).await;
    let live_sign_up = started.elapsed();
    eventually_within("every live mail", Duration::from_secs(600), || {
        let sink = &sink;
        async move { sink.count() >= 2 * N }
    })
    .await;
    let live = started.elapsed();

    let rate = |d: Duration| N as f64 / d.as_secs_f64();
    println!(
        "queued {N} sign-ups in {signing_up:.2?} ({:.0}/s, SMTP down)\n\
         resumed outbox: {N} mails delivered in {resumed:.2?} = {:.0} messages/s\n\
         live: {N} sign-ups in {live_sign_up:.2?}, last mail after {live:.2?} = {:.0} messages/s",
        rate(signing_up),
        rate(resumed),
        rate(live),
    );
}

#[tokio::test]
async fn an_otp_arrives_by_email_leaves_the_answer_and_works_once() {
    let mails = tempfile::tempdir().unwrap();
    let sink = SmtpSink::start(mails.path()).await;
    let app = TestApp::spawn_with(|c| c.app_defaults.delivery = smtp_delivery(sink.port)).await;
    device_by_mail(&app, &sink, "Otis").await;

    let body = json!({"applicationUuid": app.app, "username": "Otis", "purpose": "login"});
    let (status, issued) = app.backend("/self-service/otp", &body).await;
    assert_eq!(status, StatusCode::OK, "{issued}");
    assert!(
        issued.get("otp").is_none(),
        "a delivered OTP must not be in the answer: {issued}"
    );
    assert!(issued["otpUuid"].is_string(), "{issued}");

    let otp = code_in(&mail_to(&sink, "Otis", "one-time code").await);
    let check = json!({"applicationUuid": app.app, "username": "Otis", "purpose": "login",
                       "otp": otp});
    let (status, resp) = app.backend("/self-service/otp/validate", &check).await;
    assert_eq!(status, StatusCode::OK, "{resp}");
    let (status, resp) = app.backend("/self-service/otp/validate", &check).await;
    assert_eq!(
        (status, code(&resp)),
        (StatusCode::BAD_REQUEST, "AN-UOTP-1011"),
        "{resp}"
    );
}
