//! The test harness: a server on port 0 with a fresh data directory and a movable clock, a
//! real HTTP client, and one helper per common call.

use std::time::Duration;

use base64::{Engine as _, engine::general_purpose::STANDARD};
use latchkey::{BASE, Clock, Config, Engine, Running, Server};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sha2::{Digest, Sha512};
use tempfile::TempDir;
use uuid::Uuid;

/// A running server with one application.
pub(crate) struct TestApp {
    pub(crate) base: String,
    pub(crate) client: reqwest::Client,
    pub(crate) app: Uuid,
    pub(crate) api_key: String,
    pub(crate) clock: Clock,
    pub(crate) dir: TempDir,
    config: Config,
    running: Option<Running>,
}

impl TestApp {
    /// A server with the default settings.
    pub(crate) async fn spawn() -> Self {
        Self::spawn_with(|_| {}).await
    }

    /// A server whose config `tweak` may change first (e.g. `app_defaults`).
    pub(crate) async fn spawn_with(tweak: impl FnOnce(&mut Config)) -> Self {
        init_log();
        let dir = tempfile::tempdir().unwrap();
        let mut config = Config::for_test(dir.path().join("data"));
        tweak(&mut config);
        let clock = Clock::default();
        let server = Server::build_with_clock(config.clone(), clock.clone())
            .await
            .unwrap();
        let (app, api_key) = server.engine().create_app("test").await.unwrap();
        let running = start(server).await;
        let client = reqwest::Client::builder().no_proxy().build().unwrap();
        Self {
            base: format!("http://{}", running.addr()),
            client,
            app: app.uuid,
            api_key,
            clock,
            dir,
            config,
            running: Some(running),
        }
    }

    /// Stops the server gracefully and starts a new one on the same data directory (the
    /// clock keeps its offset).
    pub(crate) async fn restart(&mut self) {
        self.stop_server().await;
        let server = Server::build_with_clock(self.config.clone(), self.clock.clone())
            .await
            .unwrap();
        let running = start(server).await;
        self.base = format!("http://{}", running.addr());
        self.running = Some(running);
    }

    /// Stops the server, keeping the data directory.
    pub(crate) async fn stop_server(&mut self) {
        if let Some(running) = self.running.take() {
            running.stop().await.unwrap();
        }
    }

    /// The engine of the running server.
    pub(crate) fn engine(&self) -> &Engine {
        self.running.as_ref().unwrap().engine()
    }

    /// The data directory.
    pub(crate) fn data_dir(&self) -> std::path::PathBuf {
        self.config.data_dir.clone()
    }

    /// One call under the base path; returns the status and the JSON body (Null if none).
    pub(crate) async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        headers: &[(&str, &str)],
    ) -> (StatusCode, Value) {
        let mut req = self
            .client
            .request(method, format!("{}{BASE}{path}", self.base));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        if let Some(body) = body {
            req = req.json(body);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status();
        let text = resp.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// A back-end call with the API key.
    pub(crate) async fn backend(&self, path: &str, body: &Value) -> (StatusCode, Value) {
        self.call(
            Method::POST,
            path,
            Some(body),
            &[("x-api-key", &self.api_key)],
        )
        .await
    }

    /// A call with a bearer token.
    pub(crate) async fn bearer(
        &self,
        method: Method,
        path: &str,
        token: &str,
        body: Option<&Value>,
    ) -> (StatusCode, Value) {
        let auth = format!("Bearer {token}");
        self.call(method, path, body, &[("authorization", &auth)])
            .await
    }

    /// Signs a user up; returns the activation token.
    pub(crate) async fn sign_up(&self, username: &str) -> String {
        let body = json!({"applicationUuid": self.app, "username": username,
                          "email": format!("{}@example.test", username.to_lowercase())});
        let (status, resp) = self.backend("/self-service/user", &body).await;
        assert_eq!(status, StatusCode::OK, "sign-up of {username}: {resp}");
        resp["activationToken"].as_str().unwrap().to_owned()
    }

    /// Signs up and activates a user with a new device holding PIN "1234".
    pub(crate) async fn new_device(&self, username: &str) -> Device {
        let token = self.sign_up(username).await;
        let mut device = Device::new(username);
        let (status, resp) = self.activate(&device, &token).await;
        assert_eq!(status, StatusCode::OK, "activation of {username}: {resp}");
        device.take(&resp);
        device
    }

    /// Activates `device`'s user with `token`.
    pub(crate) async fn activate(&self, device: &Device, token: &str) -> (StatusCode, Value) {
        let body = json!({"applicationUuid": self.app, "username": device.username,
                          "activationToken": token, "hashedPin": device.hashed_pin(),
                          "deviceName": "test device"});
        self.backend("/authentication/activate/user", &body).await
    }

    /// Logs `device` in with its PIN and current authKey (does not keep the result).
    pub(crate) async fn login(&self, device: &Device) -> (StatusCode, Value) {
        self.login_with(device, &device.pin, &device.auth_key).await
    }

    /// Logs in with a given PIN and authKey.
    pub(crate) async fn login_with(
        &self,
        device: &Device,
        pin: &str,
        auth_key: &str,
    ) -> (StatusCode, Value) {
        let body = json!({"applicationUuid": self.app, "username": device.username,
                          "deviceUuid": device.device_uuid, "authKey": auth_key,
                          "hashedPin": hashed_pin(&device.salt, pin)});
        self.backend("/authentication/login", &body).await
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(running) = self.running.take() {
            // Best effort: a test that panicked still releases its port.
            drop(running);
        }
    }
}

async fn start(server: Server) -> Running {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    server.spawn(listener).unwrap()
}

/// A client device: salt, PIN, and the credentials the server handed it.
#[derive(Debug, Clone)]
pub(crate) struct Device {
    pub(crate) username: String,
    pub(crate) salt: Vec<u8>,
    pub(crate) pin: String,
    pub(crate) device_uuid: String,
    pub(crate) auth_key: String,
    pub(crate) token: String,
    pub(crate) user_uuid: String,
}

impl Device {
    pub(crate) fn new(username: &str) -> Self {
        Self {
            username: username.to_owned(),
            salt: Uuid::new_v4().as_bytes().to_vec(),
            pin: "1234".into(),
            device_uuid: String::new(),
            auth_key: String::new(),
            token: String::new(),
            user_uuid: String::new(),
        }
    }

    pub(crate) fn hashed_pin(&self) -> String {
        hashed_pin(&self.salt, &self.pin)
    }

    /// Keeps what an activation, login or reset answer carries.
    pub(crate) fn take(&mut self, resp: &Value) {
        if let Some(v) = resp["deviceUuid"].as_str() {
            self.device_uuid = v.to_owned();
        }
        if let Some(v) = resp["authKey"].as_str() {
            self.auth_key = v.to_owned();
        }
        if let Some(v) = resp["accessToken"]["token"].as_str() {
            self.token = v.to_owned();
        }
        if let Some(v) = resp["userUuid"].as_str() {
            self.user_uuid = v.to_owned();
        }
    }
}

/// The original clients' PIN hash: Base64 of SHA-512 over the device salt, then the PIN.
pub(crate) fn hashed_pin(salt: &[u8], pin: &str) -> String {
    let mut h = Sha512::new();
    h.update(salt);
    h.update(pin.as_bytes());
    STANDARD.encode(h.finalize())
}

/// The envelope's code.
pub(crate) fn code(body: &Value) -> &str {
    body["responseStatus"]["code"]
        .as_str()
        .unwrap_or("<no envelope>")
}

/// Waits until `check` holds, polling; never a bare sleep.
pub(crate) async fn eventually<F, Fut>(what: &str, check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    eventually_within(what, Duration::from_secs(5), check).await;
}

/// [`eventually`] with a longer budget, for waits that include a retry backoff.
pub(crate) async fn eventually_within<F, Fut>(what: &str, budget: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let polls = budget.as_millis() / 25;
    for _ in 0..polls.max(1) {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("timed out after {budget:?} waiting for: {what}");
}

fn init_log() {
    if std::env::var_os("TEST_LOG").is_some() {
        let _ = tracing_subscriber::fmt().with_test_writer().try_init();
    }
}

/// Reads from `stream` until `done` says what arrived is enough, or the peer closes (or
/// resets) the connection; returns what arrived.
pub(crate) async fn read_until(
    stream: &mut tokio::net::TcpStream,
    done: impl Fn(&[u8]) -> bool,
) -> Vec<u8> {
    use tokio::io::AsyncReadExt;

    let mut received = Vec::new();
    let mut buf = [0u8; 4096];
    while !done(&received) {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => received.extend_from_slice(&buf[..n]),
        }
    }
    received
}
