//! Embedding Latchkey in an appliance's own tokio runtime: build the server from a config,
//! serve it on a listener the appliance owns, use it, shut it down gracefully (which drains
//! requests and flushes every write to disk).
//!
//! Run: `cargo run --example embedded`

use anyhow::Context as _;
use latchkey::{BASE, Config, Server};
use tokio::net::TcpListener;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let dir = tempfile::tempdir().context("making a data directory")?;
    let config = Config {
        data_dir: dir.path().join("data"),
        ..Config::default()
    };

    // Build: opens the data directory and starts the actors; nothing listens yet.
    let server = Server::build(config).await?;
    let app = server
        .ensure_default_app()
        .await?
        .context("a fresh directory gets an app")?;

    // Serve on a listener of the appliance's choosing, in the background.
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let running = server.spawn(listener)?;
    println!("serving on {}", running.addr());

    // Use it like any client would.
    let client = reqwest::Client::builder().no_proxy().build()?;
    let answer: serde_json::Value = client
        .post(format!("http://{}{BASE}/self-service/user", running.addr()))
        .header("x-api-key", &app.api_key)
        .json(&serde_json::json!({
            "applicationUuid": app.application_uuid,
            "username": "appliance-user",
            "email": "user@appliance.test",
        }))
        .send()
        .await?
        .json()
        .await?;
    let status = answer
        .pointer("/responseStatus/status")
        .cloned()
        .unwrap_or_default();
    println!("sign-up answered: {status}");

    // Graceful stop: stop accepting, drain, stop the actors, flush, release the directory.
    running.stop().await?;
    println!("stopped cleanly");
    Ok(())
}
