//! No secret reaches the log: the real binary runs at `trace` level (once with human lines,
//! once with JSON lines), a full flow goes through it over HTTP, and its standard error is
//! searched for every PIN hash, authKey, activation and reset token, JWT (and its signature),
//! API key and e-mail address the flow used.

use std::{
    path::Path,
    process::{Child, Command, Stdio},
    time::Duration,
};

use latchkey::BASE;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::helpers::{Device, hashed_pin};

const BIN: &str = env!("CARGO_BIN_EXE_latchkey");

/// The flow's secrets, by what they are (the name is printed, never the value).
#[derive(Default)]
struct Secrets(Vec<(&'static str, String)>);

impl Secrets {
    fn add(&mut self, what: &'static str, value: &str) {
        assert!(!value.is_empty(), "{what} is empty");
        self.0.push((what, value.to_owned()));
    }

    fn add_jwt(&mut self, jwt: &str) {
        self.add("JWT", jwt);
        let signature = jwt.rsplit('.').next().unwrap();
        self.add("JWT signature", signature);
    }
}

/// A `latchkey serve` child whose standard error goes to a file; killed on drop.
struct Served {
    child: Child,
    base: String,
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Served {
    async fn start(data_dir: &Path, config: &Path, log: &Path) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new(BIN)
            .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
            .arg("--data-dir")
            .arg(data_dir)
            .arg("--config")
            .arg(config)
            .env("LATCHKEY_LOG", "trace")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(log).unwrap())
            .spawn()
            .unwrap();
        let served = Self {
            child,
            base: format!("http://127.0.0.1:{port}"),
        };
        let client = reqwest::Client::builder().no_proxy().build().unwrap();
        crate::helpers::eventually("the server answers", || {
            let url = format!("{}/health/live", served.base);
            let client = client.clone();
            async move { client.get(url).send().await.is_ok() }
        })
        .await;
        served
    }

    /// SIGTERM, so that shutdown logs too; SIGKILL on drop if it hangs.
    async fn stop(mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        for _ in 0..400 {
            if self.child.try_wait().unwrap().is_some() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
}

/// The test's side of the wire: one application's API key and a client.
struct Caller {
    client: reqwest::Client,
    base: String,
    app: String,
    api_key: String,
}

impl Caller {
    async fn send(&self, method: Method, path: &str, body: Option<Value>, auth: &str) -> Value {
        let mut req = self
            .client
            .request(method, format!("{}{BASE}{path}", self.base));
        req = if auth.is_empty() {
            req.header("x-api-key", &self.api_key)
        } else {
            req.header("authorization", format!("Bearer {auth}"))
        };
        if let Some(body) = body {
            req = req.json(&body);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status();
        let body: Value = resp.json().await.unwrap_or(Value::Null);
        assert!(
            status.is_success() || status == StatusCode::BAD_REQUEST,
            "{path}: {status} {body}"
        );
        body
    }

    async fn post(&self, path: &str, body: Value) -> Value {
        self.send(Method::POST, path, Some(body), "").await
    }
}

/// Runs the flow against a server that logs in `format`; returns the log and the secrets.
async fn flow_with_log(format: &str) -> (String, Secrets) {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let config = dir.path().join("latchkey.toml");
    // Twelve-digit tokens: a six-digit one could match a timestamp's microseconds by chance.
    std::fs::write(
        &config,
        format!("log_format = \"{format}\"\n[app_defaults]\ntoken_digits = 12\notp_digits = 12\n"),
    )
    .unwrap();
    let log = dir.path().join("server.log");

    let out = Command::new(BIN)
        .args(["app", "create", "--name", "logs", "--data-dir"])
        .arg(&data_dir)
        .env_remove("LATCHKEY_CONFIG")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let created: Value = serde_json::from_slice(&out.stdout).unwrap();
    let mut secrets = Secrets::default();
    let api_key = created["apiKey"].as_str().unwrap().to_owned();
    secrets.add("API key", &api_key);

    let server = Served::start(&data_dir, &config, &log).await;
    let c = Caller {
        client: reqwest::Client::builder().no_proxy().build().unwrap(),
        base: server.base.clone(),
        app: created["applicationUuid"].as_str().unwrap().to_owned(),
        api_key,
    };
    run_flow(&c, &mut secrets).await;
    server.stop().await;

    (std::fs::read_to_string(&log).unwrap(), secrets)
}

/// Sign-up, activation, logins, a wrong PIN, a second device, forgot and reset PIN, renew,
/// reads, logout: every secret it sees goes into `secrets`.
async fn run_flow(c: &Caller, secrets: &mut Secrets) {
    let email = "leaky.larry@example.test";
    secrets.add("e-mail address", email);
    let mut d = Device::new("Larry");

    // == Sign-up and activation
    let body = json!({"applicationUuid": c.app, "username": "Larry", "email": email});
    let resp = c.post("/self-service/user", body).await;
    let token = resp["activationToken"].as_str().unwrap().to_owned();
    secrets.add("activation token", &token);
    secrets.add("hashed PIN", &d.hashed_pin());
    let body = json!({"applicationUuid": c.app, "username": "Larry", "activationToken": token,
                      "hashedPin": d.hashed_pin(), "deviceName": "phone"});
    let resp = c.post("/authentication/activate/user", body).await;
    d.take(&resp);
    secrets.add("authKey", &d.auth_key);
    secrets.add_jwt(&d.token);

    // == Logins, then a wrong PIN
    for _ in 0..2 {
        let body = json!({"applicationUuid": c.app, "username": "Larry",
                          "deviceUuid": d.device_uuid, "authKey": d.auth_key,
                          "hashedPin": d.hashed_pin()});
        let resp = c.post("/authentication/login", body).await;
        d.take(&resp);
        secrets.add("authKey", &d.auth_key);
        secrets.add_jwt(&d.token);
    }
    let wrong = hashed_pin(&d.salt, "0000");
    secrets.add("wrong hashed PIN", &wrong);
    let body = json!({"applicationUuid": c.app, "username": "Larry", "deviceUuid": d.device_uuid,
                      "authKey": d.auth_key, "hashedPin": wrong});
    let resp = c.post("/authentication/login", body).await;
    assert_eq!(resp["responseStatus"]["code"], "AN-AUTH-1006");

    // == A second device
    let body = json!({"applicationUuid": c.app, "username": "Larry", "deviceName": "tablet"});
    let resp = c.post("/self-service/device", body).await;
    let token = resp["activationToken"].as_str().unwrap().to_owned();
    secrets.add("device activation token", &token);
    let mut tablet = Device::new("Larry");
    let body = json!({"applicationUuid": c.app, "username": "Larry",
                      "deviceUuid": resp["deviceUuid"], "activationToken": token,
                      "hashedPin": tablet.hashed_pin()});
    secrets.add("hashed PIN", &tablet.hashed_pin());
    let resp = c.post("/authentication/activate/device", body).await;
    tablet.take(&resp);
    secrets.add("authKey", &tablet.auth_key);
    secrets.add_jwt(&tablet.token);

    // == Forgot and reset PIN
    let body = json!({"applicationUuid": c.app, "username": "Larry", "deviceUuid": d.device_uuid});
    let resp = c.post("/authentication/forgot-pin", body).await;
    let reset = resp["resetPinToken"].as_str().unwrap().to_owned();
    secrets.add("reset token", &reset);
    d.pin = "8642".into();
    secrets.add("new hashed PIN", &d.hashed_pin());
    let body = json!({"applicationUuid": c.app, "username": "Larry", "deviceUuid": d.device_uuid,
                      "hashedPin": d.hashed_pin(), "resetPinToken": reset});
    let resp = c.post("/authentication/reset-pin", body).await;
    d.take(&resp);
    secrets.add("authKey", &d.auth_key);
    secrets.add_jwt(&d.token);

    // == A one-time PIN: a wrong try, then the right one
    let body = json!({"applicationUuid": c.app, "username": "Larry", "purpose": "login"});
    let resp = c.post("/self-service/otp", body).await;
    let otp = resp["otp"].as_str().unwrap().to_owned();
    secrets.add("OTP", &otp);
    let wrong_otp = if otp == "111111111111" {
        "222222222222"
    } else {
        "111111111111"
    };
    secrets.add("wrong OTP", wrong_otp);
    for guess in [wrong_otp, otp.as_str()] {
        let body = json!({"applicationUuid": c.app, "username": "Larry", "purpose": "login",
                          "otp": guess});
        c.post("/self-service/otp/validate", body).await;
    }

    // == Bearer routes, then logout
    let resp = c.send(Method::GET, "/jwt/renew", None, &d.token).await;
    let renewed = resp["accessToken"]["token"].as_str().unwrap().to_owned();
    secrets.add_jwt(&renewed);
    c.send(Method::GET, "/jwt/validate", None, &renewed).await;
    c.send(Method::GET, "/user/current", None, &renewed).await;
    let devices = format!("/user/{}/device", d.user_uuid);
    c.send(Method::GET, &devices, None, &renewed).await;
    c.send(Method::DELETE, "/authentication/logout", None, &renewed)
        .await;
    let resp = c
        .send(Method::GET, "/jwt/validate", None, &tablet.token)
        .await;
    assert_eq!(resp["responseStatus"]["status"], "SUCCESS");
}

fn assert_no_secret(log: &str, secrets: &Secrets) {
    let leaked: Vec<&str> = secrets
        .0
        .iter()
        .filter(|(_, value)| log.contains(value.as_str()))
        .map(|(what, _)| *what)
        .collect();
    assert!(leaked.is_empty(), "secrets in the log: {leaked:?}");
}

#[tokio::test]
async fn trace_logs_in_human_format_hold_no_secret() {
    let (log, secrets) = flow_with_log("human").await;
    assert!(
        log.contains("TRACE"),
        "the server did not log at trace level:\n{log}"
    );
    assert!(
        log.lines().count() > 50,
        "too little logged to prove anything:\n{log}"
    );
    assert_no_secret(&log, &secrets);
}

#[tokio::test]
async fn trace_logs_in_json_format_hold_no_secret() {
    let (log, secrets) = flow_with_log("json").await;
    let first: Value = serde_json::from_str(log.lines().next().unwrap()).unwrap();
    assert!(first.get("level").is_some(), "not JSON lines: {first}");
    assert!(
        log.contains("\"TRACE\""),
        "the server did not log at trace level"
    );
    assert_no_secret(&log, &secrets);
}
