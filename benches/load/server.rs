//! The server under test: finding the binary, starting it on a fresh data dir, reading its
//! memory and CPU from `/proc`, and stopping it.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde::Deserialize;
use tempfile::TempDir;
use tokio::process::{Child, Command};

use crate::now;

/// Clock ticks per second in `/proc/<pid>/stat`; 100 on every mainstream Linux build.
const TICKS_PER_SECOND: f64 = 100.0;

/// What `latchkey app create` prints.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct App {
    pub(crate) application_uuid: String,
    pub(crate) api_key: String,
}

/// Where requests go and with which application; shared by every worker.
#[derive(Debug)]
pub(crate) struct Target {
    pub(crate) url: String,
    pub(crate) app: App,
}

/// One `latchkey serve` child on a fresh data dir. Dropping it kills the child and removes the
/// dir, so that an error anywhere in the driver leaves no server or data behind.
pub(crate) struct Server {
    child: Child,
    pub(crate) pid: u32,
    pub(crate) target: Arc<Target>,
    dir: TempDir,
}

impl Server {
    /// Starts the server with `config`, the text of its config file, if any.
    pub(crate) async fn start(bin: &Path, config: Option<&str>) -> Result<Self> {
        let dir = TempDir::with_prefix("lk-bench-").context("creating the data dir")?;
        let data = dir.path().join("data");
        let app = create_app(bin, &data).await?;
        let listen = free_listen_addr()?;

        let mut command = Command::new(bin);
        command
            .arg("serve")
            .arg("--data-dir")
            .arg(&data)
            .arg("--listen")
            .arg(&listen);
        if let Some(text) = config {
            let config = dir.path().join("latchkey.toml");
            std::fs::write(&config, text).context("writing the config file")?;
            command.arg("--config").arg(config);
        }
        let log =
            std::fs::File::create(dir.path().join("server.log")).context("creating server.log")?;
        let child = command
            .stdin(Stdio::null())
            .stdout(log.try_clone().context("sharing server.log")?)
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let pid = child.id().context("the server exited at once")?;

        let target = Arc::new(Target {
            url: format!("http://{listen}"),
            app,
        });
        let mut server = Server {
            child,
            pid,
            target,
            dir,
        };
        server.wait_live().await?;
        Ok(server)
    }

    async fn wait_live(&mut self) -> Result<()> {
        let client = http_client()?;
        let url = format!("{}/health/live", self.target.url);
        let deadline = now() + Duration::from_secs(30);
        while now() < deadline {
            if let Some(status) = self.child.try_wait().context("polling the server")? {
                bail!("server exited with {status} at start:\n{}", self.log_tail());
            }
            let live = client.get(&url).send().await;
            if live.is_ok_and(|response| response.status() == reqwest::StatusCode::OK) {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        bail!(
            "server did not answer /health/live with 200 within 30 s:\n{}",
            self.log_tail()
        )
    }

    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        let last = lines.iter().skip(lines.len().saturating_sub(8));
        last.fold(String::new(), |mut tail, line| {
            let _ = writeln!(tail, "  | {line}");
            tail
        })
    }

    /// Peak (VmHWM) and current (VmRSS) resident memory, for a report line.
    pub(crate) fn memory(&self) -> String {
        match memory(self.pid) {
            Some((peak, current)) => format!("peak {peak:.1} MiB, current {current:.1} MiB"),
            None => "n/a".to_owned(),
        }
    }

    /// SIGTERM, as an operator would, so that a server that ignores it or exits badly shows.
    pub(crate) async fn stop(mut self, keep: bool) -> Result<()> {
        let asked = now();
        let pid = self.pid.to_string();
        let mut kill = Command::new("kill");
        kill.args(["-TERM", pid.as_str()])
            .status()
            .await
            .context("running kill -TERM")?;
        let waited = tokio::time::timeout(Duration::from_secs(20), self.child.wait()).await;
        match waited {
            Ok(status) => report_exit(status.context("waiting for the server")?, asked),
            Err(_) => {
                println!("server still running 20 s after SIGTERM: killed");
                self.child.kill().await.context("killing the server")?;
            }
        }

        if keep {
            println!("kept {}", self.dir.keep().display());
        }
        Ok(())
    }
}

fn report_exit(status: ExitStatus, asked: Instant) {
    let took = asked.elapsed().as_secs_f64();
    let clean = if status.success() {
        ""
    } else {
        " (expected a clean exit 0)"
    };
    println!("server stopped on SIGTERM in {took:.2} s: {status}{clean}");
}

/// `--bin` or `LK_BIN`, else the binary cargo built along with this bench, else target/release.
pub(crate) fn server_binary(flag: Option<&Path>) -> Result<PathBuf> {
    let built_with_bench = option_env!("CARGO_BIN_EXE_latchkey").map(PathBuf::from);
    let target_dir = std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from);
    let target_dir =
        target_dir.unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"));
    let path = match (flag, built_with_bench) {
        (Some(path), _) => path.to_path_buf(),
        (None, Some(path)) if path.is_file() => path,
        (None, _) => target_dir.join("release").join("latchkey"),
    };
    if !path.is_file() {
        bail!(
            "no server binary at {}: run `cargo build --release` first",
            path.display()
        );
    }
    Ok(path)
}

async fn create_app(bin: &Path, data: &Path) -> Result<App> {
    let output = Command::new(bin)
        .args(["app", "create", "--name", "bench", "--data-dir"])
        .arg(data)
        .output()
        .await
        .with_context(|| format!("running {} app create", bin.display()))?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    if !output.status.success() {
        bail!(
            "`latchkey app create` failed with {}: {}",
            output.status,
            stderr.trim()
        );
    }

    let stdout = String::from_utf8_lossy(&output.stdout);
    let lines: Vec<&str> = stdout
        .lines()
        .filter(|line| !line.trim().is_empty())
        .collect();
    if lines.len() != 1 {
        println!(
            "note: `app create` printed {} lines on stdout, not exactly one",
            lines.len()
        );
    }
    let json = lines
        .iter()
        .rev()
        .find(|line| line.trim_start().starts_with('{'));
    let json = json.context("`latchkey app create` printed no JSON line")?;
    serde_json::from_str(json).context("parsing the JSON line of `latchkey app create`")
}

fn free_listen_addr() -> Result<String> {
    let probe = std::net::TcpListener::bind("127.0.0.1:0").context("finding a free port")?;
    Ok(probe
        .local_addr()
        .context("reading the free port")?
        .to_string())
}

/// One keep-alive HTTP/1.1 connection per client: each worker owns one, as a connection would.
pub(crate) fn http_client() -> Result<reqwest::Client> {
    reqwest::Client::builder()
        .no_proxy()
        .http1_only()
        .tcp_nodelay(true)
        .pool_max_idle_per_host(1)
        .timeout(Duration::from_secs(30))
        .build()
        .context("building the HTTP client")
}

/// User plus system CPU seconds of a process (`self` or a pid), from `/proc/<pid>/stat`.
pub(crate) fn cpu_seconds(pid: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the parenthesised command name start at field 3; utime and stime are 14, 15.
    let mut fields = stat.rsplit_once(')')?.1.split_whitespace().skip(11);
    let user: f64 = fields.next()?.parse().ok()?;
    let system: f64 = fields.next()?.parse().ok()?;
    Some((user + system) / TICKS_PER_SECOND)
}

/// Peak (VmHWM) and current (VmRSS) resident memory of a process, in MiB.
pub(crate) fn memory(pid: u32) -> Option<(f64, f64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| -> Option<f64> {
        let line = status.lines().find(|line| line.starts_with(name))?;
        let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kib / 1024.0)
    };
    Some((field("VmHWM:")?, field("VmRSS:")?))
}
