//! Crash: the real binary as a child process, killed with SIGKILL in the middle of concurrent
//! logins and restarted on the same data directory. No rotation the client saw acknowledged
//! is lost.

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use latchkey::BASE;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{Device, code};

const BIN: &str = env!("CARGO_BIN_EXE_latchkey");

/// A `latchkey serve` child process; killed (SIGKILL) and reaped on drop, so that a failing
/// test leaves no server behind.
struct ServerProcess {
    child: Child,
    base: String,
    log: PathBuf,
}

impl ServerProcess {
    /// Starts `latchkey serve` on a free port and waits until it answers `/health/live`.
    async fn start(data_dir: &Path, log: PathBuf) -> Self {
        let port = free_port();
        let log_file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap();
        let child = Command::new(BIN)
            .arg("serve")
            .arg("--data-dir")
            .arg(data_dir)
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .env_remove("LATCHKEY_CONFIG")
            .env("LATCHKEY_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .unwrap();
        let mut server = Self {
            child,
            base: format!("http://127.0.0.1:{port}"),
            log,
        };
        server.wait_live().await;
        server
    }

    async fn wait_live(&mut self) {
        let client = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(2))
            .build()
            .unwrap();
        let url = format!("{}/health/live", self.base);
        for _ in 0..1200 {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("the server exited with {status}:\n{}", self.log_text());
            }
            if let Ok(resp) = client.get(&url).send().await
                && resp.status() == StatusCode::OK
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("the server did not come up:\n{}", self.log_text());
    }

    /// SIGKILL: no shutdown, no flush.
    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!("server log:\n{}", self.log_text());
        }
    }
}

fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

/// What the test client knows: the application and a client.
#[derive(Clone)]
struct Remote {
    client: reqwest::Client,
    app: String,
    api_key: String,
}

impl Remote {
    /// A back-end call; `Err` when no answer came (the server died underneath it).
    async fn post(&self, base: &str, path: &str, body: &Value) -> Result<(StatusCode, Value), ()> {
        let resp = self
            .client
            .post(format!("{base}{BASE}{path}"))
            .header("x-api-key", &self.api_key)
            .json(body)
            .send()
            .await
            .map_err(drop)?;
        let status = resp.status();
        let text = resp.text().await.map_err(drop)?;
        Ok((status, serde_json::from_str(&text).unwrap_or(Value::Null)))
    }

    async fn login(&self, base: &str, d: &Device, key: &str) -> Result<(StatusCode, Value), ()> {
        let body = json!({"applicationUuid": self.app, "username": d.username,
                          "deviceUuid": d.device_uuid, "authKey": key,
                          "hashedPin": d.hashed_pin()});
        self.post(base, "/authentication/login", &body).await
    }

    async fn new_device(&self, base: &str, username: &str) -> Device {
        let body = json!({"applicationUuid": self.app, "username": username,
                          "email": format!("{username}@example.test")});
        let (status, resp) = self.post(base, "/self-service/user", &body).await.unwrap();
        assert_eq!(status, StatusCode::OK, "{resp}");
        let mut d = Device::new(username);
        let body = json!({"applicationUuid": self.app, "username": username,
                          "activationToken": resp["activationToken"],
                          "hashedPin": d.hashed_pin(), "deviceName": "crash test"});
        let (status, resp) = self
            .post(base, "/authentication/activate/user", &body)
            .await
            .unwrap();
        assert_eq!(status, StatusCode::OK, "{resp}");
        d.take(&resp);
        d
    }
}

/// A device and every authKey the server acknowledged to it, oldest first.
struct History {
    device: Device,
    acked: Vec<String>,
    /// A login was sent and no answer came back: the server may have rotated or not.
    in_flight: bool,
}

/// Logs in `rounds` times (or until the server stops answering, if `None`), keeping every
/// acknowledged authKey.
async fn login_loop(
    remote: Remote,
    base: String,
    device: Device,
    rounds: Option<usize>,
    acked_total: Arc<AtomicUsize>,
) -> History {
    let mut h = History {
        acked: vec![device.auth_key.clone()],
        device,
        in_flight: false,
    };
    let mut done = 0;
    while rounds.is_none_or(|r| done < r) {
        match remote.login(&base, &h.device, &h.device.auth_key).await {
            Ok((status, resp)) => {
                assert_eq!(status, StatusCode::OK, "{}: {resp}", h.device.username);
                h.device.take(&resp);
                h.acked.push(h.device.auth_key.clone());
                acked_total.fetch_add(1, Ordering::SeqCst);
                done += 1;
            }
            Err(()) => {
                h.in_flight = true;
                break;
            }
        }
    }
    h
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_in_the_middle_of_logins_loses_no_acknowledged_auth_key() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let log = dir.path().join("server.log");

    // `app create` with the server stopped prints exactly one JSON line.
    let out = tokio::process::Command::new(BIN)
        .args(["app", "create", "--name", "x", "--data-dir"])
        .arg(&data_dir)
        .env_remove("LATCHKEY_CONFIG")
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 1, "{stdout}");
    let created: Value = serde_json::from_str(lines[0]).unwrap();
    let remote = Remote {
        client: reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap(),
        app: created["applicationUuid"].as_str().unwrap().to_owned(),
        api_key: created["apiKey"].as_str().unwrap().to_owned(),
    };

    let mut server = ServerProcess::start(&data_dir, log.clone()).await;
    let mut devices = Vec::new();
    for i in 0..16 {
        devices.push(remote.new_device(&server.base, &format!("crash{i}")).await);
    }

    // Half the devices finish a few logins before the kill, so their last answer is surely
    // acknowledged; the other half log in without pause until the server dies under them.
    let acked_total = Arc::new(AtomicUsize::new(0));
    let mut steady = tokio::task::JoinSet::new();
    let mut racing = tokio::task::JoinSet::new();
    for (i, d) in devices.into_iter().enumerate() {
        let (remote, base, total) = (remote.clone(), server.base.clone(), acked_total.clone());
        if i % 2 == 0 {
            steady.spawn(login_loop(remote, base, d, Some(5), total));
        } else {
            racing.spawn(login_loop(remote, base, d, None, total));
        }
    }
    let mut histories = steady.join_all().await;
    assert!(histories.iter().all(|h| !h.in_flight));
    for _ in 0..2000 {
        if acked_total.load(Ordering::SeqCst) >= 40 + 8 * 5 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(acked_total.load(Ordering::SeqCst) >= 40 + 8 * 5);

    server.kill();
    histories.extend(racing.join_all().await);
    assert!(
        histories.iter().any(|h| h.in_flight),
        "the kill was meant to land among logins"
    );

    let server = ServerProcess::start(&data_dir, log).await;
    let mut checked_acked = 0;
    for h in &histories {
        let d = &h.device;
        let last = h.acked.last().unwrap();
        let previous = h.acked.len().checked_sub(2).map(|i| &h.acked[i]);

        // A rotation the client saw acknowledged was never undone: the key before it is
        // stale (if it logged in, the acknowledged rotation was lost).
        if let Some(previous) = previous {
            let (status, resp) = remote.login(&server.base, d, previous).await.unwrap();
            assert_eq!(
                (status, code(&resp)),
                (StatusCode::BAD_REQUEST, "AN-HENG-1001"),
                "{}: an acknowledged rotation was lost: {resp}",
                d.username
            );
        }
        let (status, resp) = remote.login(&server.base, d, last).await.unwrap();
        if h.in_flight {
            // The unanswered login may have rotated the key to one the client never saw.
            assert!(
                status == StatusCode::OK
                    || (status == StatusCode::BAD_REQUEST && code(&resp) == "AN-HENG-1001"),
                "{} (in flight): {status} {resp}",
                d.username
            );
        } else {
            assert_eq!(status, StatusCode::OK, "{}: {resp}", d.username);
            checked_acked += 1;
        }
    }
    assert!(checked_acked >= 8, "only {checked_acked} settled devices");
}
