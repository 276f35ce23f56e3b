//! The `latchkey` command: `serve`, and administration commands that need the server stopped.

use std::{path::PathBuf, process::ExitCode};

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use latchkey::{Config, Server, config::LogFormat};
use tokio::net::TcpListener;

#[derive(Debug, Parser)]
#[command(
    name = "latchkey",
    version,
    about = "Self-hosted passwordless authentication server"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the server (creates a default application on an empty data directory).
    Serve {
        /// Data directory [default: ./data].
        #[arg(long, env = "LATCHKEY_DATA_DIR")]
        data_dir: Option<PathBuf>,
        /// Address to listen on [default: 127.0.0.1:8080].
        #[arg(long, env = "LATCHKEY_LISTEN")]
        listen: Option<std::net::SocketAddr>,
        /// TOML configuration file.
        #[arg(long, env = "LATCHKEY_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Manage applications (server stopped).
    App {
        #[command(subcommand)]
        command: AppCommand,
    },
    /// Manage users (server stopped).
    User {
        #[command(subcommand)]
        command: UserCommand,
    },
    /// Read the audit log (server stopped).
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// Manage OpenID Connect clients (server stopped).
    Client {
        #[command(subcommand)]
        command: ClientCommand,
    },
    /// Manage signing keys (server stopped).
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
}

#[derive(Debug, Subcommand)]
enum ClientCommand {
    /// Register a client; prints {"clientId", "clientSecret"} as one JSON line (no secret
    /// for a public client).
    Create {
        /// The applicationUuid.
        #[arg(long)]
        app: uuid::Uuid,
        /// An absolute redirect URI, without a fragment (repeat for several).
        #[arg(long = "redirect-uri", required = true)]
        redirect_uris: Vec<String>,
        /// A public client (a browser or mobile app): no secret, PKCE required.
        #[arg(long)]
        public: bool,
        /// Data directory [default: ./data].
        #[arg(long, env = "LATCHKEY_DATA_DIR")]
        data_dir: Option<PathBuf>,
        /// TOML configuration file.
        #[arg(long, env = "LATCHKEY_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Replace a client's redirect URIs (the default client's id is the applicationUuid).
    Update {
        /// The client id.
        #[arg(long = "client")]
        client_id: String,
        /// An absolute redirect URI, without a fragment (repeat for several).
        #[arg(long = "redirect-uri", required = true)]
        redirect_uris: Vec<String>,
        /// Data directory [default: ./data].
        #[arg(long, env = "LATCHKEY_DATA_DIR")]
        data_dir: Option<PathBuf>,
        /// TOML configuration file.
        #[arg(long, env = "LATCHKEY_CONFIG")]
        config: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
enum KeysCommand {
    /// Make new signing keys current; the old ones keep verifying, and stay in the JWKS,
    /// until every token they signed has expired.
    Rotate {
        /// The applicationUuid.
        #[arg(long)]
        app: uuid::Uuid,
        /// Data directory [default: ./data].
        #[arg(long, env = "LATCHKEY_DATA_DIR")]
        data_dir: Option<PathBuf>,
        /// TOML configuration file.
        #[arg(long, env = "LATCHKEY_CONFIG")]
        config: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
enum UserCommand {
    /// Give a user a role, such as iam-admin.
    Grant {
        /// The applicationUuid.
        #[arg(long)]
        app: uuid::Uuid,
        /// The username.
        #[arg(long)]
        username: String,
        /// The role.
        #[arg(long)]
        role: String,
        /// Data directory [default: ./data].
        #[arg(long, env = "LATCHKEY_DATA_DIR")]
        data_dir: Option<PathBuf>,
        /// TOML configuration file.
        #[arg(long, env = "LATCHKEY_CONFIG")]
        config: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
enum AuditCommand {
    /// Print the newest entries, newest last: one line each, or one JSON object per line.
    Tail {
        /// Only this application's entries.
        #[arg(long)]
        app: Option<uuid::Uuid>,
        /// How many entries.
        #[arg(long, default_value_t = 100)]
        limit: usize,
        /// One JSON object per line (the stored fields) instead of text.
        #[arg(long)]
        json: bool,
        /// Data directory [default: ./data].
        #[arg(long, env = "LATCHKEY_DATA_DIR")]
        data_dir: Option<PathBuf>,
        /// TOML configuration file.
        #[arg(long, env = "LATCHKEY_CONFIG")]
        config: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
enum AppCommand {
    /// Create an application; prints {"applicationUuid", "apiKey"} as one JSON line.
    Create {
        /// Display name.
        #[arg(long)]
        name: String,
        /// Data directory [default: ./data].
        #[arg(long, env = "LATCHKEY_DATA_DIR")]
        data_dir: Option<PathBuf>,
        /// TOML configuration file.
        #[arg(long, env = "LATCHKEY_CONFIG")]
        config: Option<PathBuf>,
    },
}

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(err) => {
            eprintln!("latchkey: cannot start the runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("latchkey: {err:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve {
            data_dir,
            listen,
            config,
        } => {
            let mut config = load_config(config.as_deref(), data_dir)?;
            if let Some(listen) = listen {
                config.listen = listen;
            }
            init_logging(config.log_format);
            serve(config).await
        }
        Command::App {
            command:
                AppCommand::Create {
                    name,
                    data_dir,
                    config,
                },
        } => {
            let config = load_config(config.as_deref(), data_dir)?;
            create_app(config, &name).await
        }
        Command::User {
            command:
                UserCommand::Grant {
                    app,
                    username,
                    role,
                    data_dir,
                    config,
                },
        } => {
            let config = load_config(config.as_deref(), data_dir)?;
            grant_role(config, app, &username, &role).await
        }
        Command::Audit {
            command:
                AuditCommand::Tail {
                    app,
                    limit,
                    json,
                    data_dir,
                    config,
                },
        } => {
            let config = load_config(config.as_deref(), data_dir)?;
            audit_tail(&config.data_dir, app, limit, json).await
        }
        Command::Client {
            command:
                ClientCommand::Create {
                    app,
                    redirect_uris,
                    public,
                    data_dir,
                    config,
                },
        } => {
            let server = open_stopped(load_config(config.as_deref(), data_dir)?).await?;
            let created = server
                .engine()
                .create_client(app, redirect_uris, public)
                .await;
            server.engine().shutdown().await?;
            let (client_id, secret) = created?;
            let mut line = serde_json::json!({"clientId": client_id});
            if let (Some(secret), Some(fields)) = (secret, line.as_object_mut()) {
                fields.insert("clientSecret".into(), secret.into());
            }
            println!("{line}");
            Ok(())
        }
        Command::Client {
            command:
                ClientCommand::Update {
                    client_id,
                    redirect_uris,
                    data_dir,
                    config,
                },
        } => {
            let server = open_stopped(load_config(config.as_deref(), data_dir)?).await?;
            let updated = server
                .engine()
                .update_client(&client_id, redirect_uris)
                .await;
            server.engine().shutdown().await?;
            updated?;
            println!("updated the redirect URIs of {client_id}");
            Ok(())
        }
        Command::Keys {
            command:
                KeysCommand::Rotate {
                    app,
                    data_dir,
                    config,
                },
        } => {
            let server = open_stopped(load_config(config.as_deref(), data_dir)?).await?;
            let rotated = server.engine().rotate_keys(app).await;
            server.engine().shutdown().await?;
            let kids = rotated?;
            println!("{}", serde_json::json!({"currentKids": kids}));
            Ok(())
        }
    }
}

fn load_config(
    file: Option<&std::path::Path>,
    data_dir: Option<PathBuf>,
) -> anyhow::Result<Config> {
    let mut config = match file {
        Some(path) => Config::from_file(path)?,
        None => Config::default(),
    };
    if let Some(dir) = data_dir {
        config.data_dir = dir;
    }
    Ok(config)
}

async fn serve(config: Config) -> anyhow::Result<()> {
    // Every connection is a file descriptor; the soft limit (often 1024) would run out long
    // before memory does. The hard limit is what the administrator allows.
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => tracing::debug!(open_file_limit = limit, "open-file limit raised"),
        Err(error) => tracing::warn!(error = %error, "cannot raise the open-file limit"),
    }
    let listen = config.listen;
    let data_dir = config.data_dir.clone();
    let server = Server::build(config)
        .await
        .with_context(|| format!("opening the data directory {}", data_dir.display()))?;

    // Bind first: a start that fails must not use up the default application's one-time key.
    let listener = TcpListener::bind(listen)
        .await
        .with_context(|| format!("binding {listen}"))?;
    if let Some(app) = server.ensure_default_app().await? {
        // Standard output, never the log: the key is shown this once and stored only hashed.
        println!("Created the default application. Its API key is shown only this once:");
        println!(
            "{}",
            serde_json::json!({"applicationUuid": app.application_uuid, "apiKey": app.api_key})
        );
    }

    tracing::info!(addr = %listen, data_dir = %data_dir.display(), "listening");
    server.serve(listener, shutdown_signal()).await?;
    Ok(())
}

async fn create_app(config: Config, name: &str) -> anyhow::Result<()> {
    let data_dir = config.data_dir.clone();
    let server = Server::build(config).await.with_context(|| {
        format!(
            "opening the data directory {} (stop the server first)",
            data_dir.display()
        )
    })?;
    let (app, api_key) = server.engine().create_app(name).await?;
    server.engine().shutdown().await?;
    println!(
        "{}",
        serde_json::json!({"applicationUuid": app.uuid, "apiKey": api_key})
    );
    Ok(())
}

async fn grant_role(
    config: Config,
    app: uuid::Uuid,
    username: &str,
    role: &str,
) -> anyhow::Result<()> {
    let server = open_stopped(config).await?;
    let granted = async {
        let app = server.engine().app(app).context("no such application")?;
        server
            .engine()
            .grant_role(&app, username, role)
            .await
            .context("no such user")
    }
    .await;
    server.engine().shutdown().await?;
    granted?;
    println!("granted {role} to {username}");
    Ok(())
}

/// Opens the data directory for a command that needs the server stopped.
async fn open_stopped(config: Config) -> anyhow::Result<Server> {
    let data_dir = config.data_dir.clone();
    Server::build(config).await.with_context(|| {
        format!(
            "opening the data directory {} (stop the server first)",
            data_dir.display()
        )
    })
}

async fn audit_tail(
    data_dir: &std::path::Path,
    app: Option<uuid::Uuid>,
    limit: usize,
    json: bool,
) -> anyhow::Result<()> {
    anyhow::ensure!(
        data_dir.is_dir(),
        "no data directory at {}",
        data_dir.display()
    );
    let entries = latchkey::audit::tail(data_dir, app, limit)
        .await
        .with_context(|| {
            format!(
                "reading the audit log in {} (stop the server first)",
                data_dir.display()
            )
        })?;
    for entry in &entries {
        if json {
            println!("{}", latchkey::audit::json_line(entry));
        } else {
            println!("{}", latchkey::audit::human_line(entry));
        }
    }
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
    tracing::info!("shutting down: draining requests, then flushing");
}

fn init_logging(format: LogFormat) {
    use std::io::IsTerminal as _;
    // Storage internals speak at info level about routine work; keep them to warnings.
    let filter = tracing_subscriber::EnvFilter::try_from_env("LATCHKEY_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,fjall=warn,lsm_tree=warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Human => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}
