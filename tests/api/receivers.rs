//! Real receivers for delivery tests: an SMTP server (aiosmtpd, run as a child process) that
//! keeps each message as a file, and a webhook receiver (axum) that keeps each request.

use std::{
    path::{Path, PathBuf},
    process::Stdio,
    sync::{Arc, Mutex},
};

use axum::{Router, extract::State, http::HeaderMap, http::StatusCode, routing::post};
use tokio::{
    io::{AsyncBufReadExt, BufReader},
    process::{Child, Command},
};

/// `tests/smtp_sink.py` running on a fixed port; killed when dropped or stopped.
pub(crate) struct SmtpSink {
    pub(crate) port: u16,
    dir: PathBuf,
    child: Option<Child>,
}

impl SmtpSink {
    /// Starts a sink on a free port, writing messages into `dir`.
    pub(crate) async fn start(dir: &Path) -> Self {
        Self::start_on(free_port(), dir).await
    }

    /// Starts a sink on `port` (e.g. again, after [`SmtpSink::stop`]).
    pub(crate) async fn start_on(port: u16, dir: &Path) -> Self {
        require_aiosmtpd().await;
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/smtp_sink.py");
        let mut child = Command::new("python3")
            .arg(script)
            .arg(port.to_string())
            .arg(dir)
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("python3 runs");
        let stdout = child.stdout.take().expect("piped stdout");
        let mut first = String::new();
        BufReader::new(stdout)
            .read_line(&mut first)
            .await
            .expect("the sink says something");
        assert_eq!(
            first.trim(),
            "ready",
            "the SMTP sink did not start on port {port}"
        );
        Self {
            port,
            dir: dir.to_owned(),
            child: Some(child),
        }
    }

    /// Kills the server and waits until it is gone; received messages stay.
    pub(crate) async fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill().await;
        }
    }

    /// Every message received so far, oldest first.
    pub(crate) fn messages(&self) -> Vec<String> {
        self.files()
            .iter()
            .filter_map(|p| std::fs::read_to_string(p).ok())
            .collect()
    }

    /// How many messages were received so far (without reading them).
    pub(crate) fn count(&self) -> usize {
        self.files().len()
    }

    /// The message files, oldest first (they are named by arrival time).
    fn files(&self) -> Vec<PathBuf> {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        let mut names: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "eml"))
            .collect();
        names.sort();
        names
    }
}

async fn require_aiosmtpd() {
    let found = Command::new("python3")
        .args(["-c", "import aiosmtpd"])
        .stderr(Stdio::null())
        .status()
        .await
        .is_ok_and(|s| s.success());
    assert!(
        found,
        "the SMTP delivery tests need the Python package aiosmtpd: \
         run `python3 -m pip install aiosmtpd` (.ci/run does this)"
    );
}

/// A port nothing listens on (right now).
pub(crate) fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

/// One request the webhook receiver got.
#[derive(Debug, Clone)]
pub(crate) struct Hook {
    /// The `X-Latchkey-Signature` header, if any.
    pub(crate) signature: Option<String>,
    /// The raw body.
    pub(crate) body: String,
}

#[derive(Clone, Default)]
struct HookState {
    got: Arc<Mutex<Vec<Hook>>>,
    fail_first: Arc<Mutex<usize>>,
}

/// An HTTP server that records every POST to `/hook`.
pub(crate) struct WebhookReceiver {
    pub(crate) url: String,
    state: HookState,
    task: tokio::task::JoinHandle<()>,
}

impl WebhookReceiver {
    /// Starts a receiver that answers 503 to its first `fail_first` requests, then 200.
    pub(crate) async fn start(fail_first: usize) -> Self {
        let state = HookState::default();
        *state.fail_first.lock().unwrap() = fail_first;
        let app = Router::new()
            .route("/hook", post(record))
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { url, state, task }
    }

    /// Every request so far, in arrival order.
    pub(crate) fn hooks(&self) -> Vec<Hook> {
        self.state.got.lock().unwrap().clone()
    }
}

impl Drop for WebhookReceiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn record(State(state): State<HookState>, headers: HeaderMap, body: String) -> StatusCode {
    let signature = headers
        .get("x-latchkey-signature")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    state.got.lock().unwrap().push(Hook { signature, body });
    let mut fail = state.fail_first.lock().unwrap();
    if *fail > 0 {
        *fail -= 1;
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    }
}
