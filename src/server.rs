//! The embeddable server: build it from a config, serve on a listener the caller owns, shut
//! it down gracefully. `main` and the integration tests use exactly this.

use std::{
    future::Future,
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use latchkey_actors::{Clock, Engine};
use tokio::{net::TcpListener, sync::oneshot, task::JoinHandle};
use uuid::Uuid;

use crate::{
    config::{Config, ConfigError},
    connections::{self, ConnectionLimits},
    http::{self, AppState, BodyLimits, Limits, rate_limit::Limiters},
};

/// A failure to start or stop the server.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServerError {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The engine failed (storage, a held data directory, ...).
    #[error(transparent)]
    Engine(#[from] latchkey_actors::Error),
    /// The listener failed.
    #[error("serving HTTP failed")]
    Io(#[from] std::io::Error),
}

/// The default application's credentials, created on a fresh data directory.
#[derive(Debug, Clone)]
pub struct NewApplication {
    /// applicationUuid.
    pub application_uuid: Uuid,
    /// The API key, shown only now.
    pub api_key: String,
}

/// A built server: its engine is open, nothing is listening yet.
#[derive(Debug)]
pub struct Server {
    engine: Engine,
    config: Config,
    ready: Arc<AtomicBool>,
    limits: Arc<Limiters>,
}

impl Server {
    /// Opens the data directory and starts the actors.
    ///
    /// # Errors
    ///
    /// [`ServerError`] for a bad config or a data directory that cannot be opened.
    pub async fn build(config: Config) -> Result<Self, ServerError> {
        Self::build_with_clock(config, Clock::default()).await
    }

    /// As [`Server::build`], with a clock the caller can move (tests).
    ///
    /// # Errors
    ///
    /// As [`Server::build`].
    pub async fn build_with_clock(config: Config, clock: Clock) -> Result<Self, ServerError> {
        let limits = Limiters::new(&config.rate_limits, config.trusted_proxies.clone())?;
        let engine = Engine::open(config.engine_options(clock)?).await?;
        for app in config.apps.keys().filter(|app| engine.app(**app).is_err()) {
            tracing::warn!(
                app_id = %app,
                "the config's [apps] section names no application of this data directory: \
                 its settings apply to nothing"
            );
        }
        Ok(Self {
            engine,
            config,
            ready: Arc::new(AtomicBool::new(true)),
            limits: Arc::new(limits),
        })
    }

    /// The domain engine (for embedding code and tests).
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Creates the default application if the data directory has none.
    ///
    /// # Errors
    ///
    /// Storage errors.
    pub async fn ensure_default_app(&self) -> Result<Option<NewApplication>, ServerError> {
        if self.engine.app_count() > 0 {
            return Ok(None);
        }
        // The default application lets its built-in login page sign users up, so that a fresh
        // server works end to end with nothing configured but a delivery channel.
        let (app, api_key) = self.engine.create_app_with("default", true).await?;
        Ok(Some(NewApplication {
            application_uuid: app.uuid,
            api_key,
        }))
    }

    /// Serves on `listener` until `shutdown` resolves, then drains in-flight requests, stops
    /// the actors and makes every write durable.
    ///
    /// # Errors
    ///
    /// [`ServerError`] if serving or the final flush fails.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), ServerError> {
        let state = AppState {
            engine: self.engine.clone(),
            ready: self.ready.clone(),
            limits: self.limits.clone(),
        };
        let limits = Limits {
            body: BodyLimits {
                max_bytes: self.config.max_body_bytes,
                read_timeout: Duration::from_secs(self.config.body_read_timeout_secs),
            },
            max_in_flight: self.config.max_in_flight,
        };
        let connection_limits = ConnectionLimits {
            header_read_timeout: Duration::from_secs(self.config.header_read_timeout_secs),
            per_address: self.config.max_connections_per_address,
            total: connections::fit_to_file_limit(self.config.max_connections),
        };
        let ready = self.ready.clone();
        let app = http::router(state, limits);
        let sweep_every = Duration::from_secs(self.config.rate_limits.sweep_secs.max(1));
        let sweeper = tokio::spawn(http::rate_limit::sweep(self.limits.clone(), sweep_every));

        let signalled = Arc::new(tokio::sync::Notify::new());
        let notify = signalled.clone();
        let graceful = connections::serve(
            listener,
            app,
            connection_limits,
            self.limits.clone(),
            async move {
                shutdown.await;
                ready.store(false, Ordering::Release);
                notify.notify_one();
            },
        );
        // A client that stalls mid-request must not hold the shutdown forever.
        // Limitation: connections still open at the deadline are left to the runtime; the
        // engine stops under them, so they can only get errors.
        let grace = Duration::from_secs(self.config.shutdown_grace_secs);
        let deadline = async move {
            signalled.notified().await;
            tokio::time::sleep(grace).await;
            tracing::warn!(
                grace_secs = grace.as_secs(),
                "requests still open at the deadline"
            );
        };
        tokio::select! {
            () = graceful => {}
            () = deadline => {}
        }

        sweeper.abort();
        self.ready.store(false, Ordering::Release);
        self.engine.shutdown().await?;
        tracing::info!("stopped; every acknowledged write is on disk");
        Ok(())
    }

    /// Serves in a background task; the handle stops it.
    pub fn spawn(self, listener: TcpListener) -> Result<Running, ServerError> {
        let addr = listener.local_addr()?;
        let engine = self.engine.clone();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(self.serve(listener, async move {
            let _ = stopped.await;
        }));
        Ok(Running {
            addr,
            engine,
            stop: Some(stop),
            task,
        })
    }
}

/// A server serving in the background.
#[derive(Debug)]
pub struct Running {
    addr: SocketAddr,
    engine: Engine,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<(), ServerError>>,
}

impl Running {
    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Its engine.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Stops it gracefully and waits until the data directory is released.
    ///
    /// # Errors
    ///
    /// What [`Server::serve`] returned.
    pub async fn stop(mut self) -> Result<(), ServerError> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let result = (&mut self.task)
            .await
            .map_err(|e| ServerError::Io(std::io::Error::other(e)))?;
        drop(self.engine);
        result
    }
}
