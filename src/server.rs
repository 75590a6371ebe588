//! Start-up and shutdown: open and migrate the store, make sure an admin can get in, serve the
//! API until told to stop, then let in-flight requests finish.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::api::{self, AppState};
use crate::config::Config;
use crate::domain::{NewToken, Role, Timestamp, TokenSecret};
use crate::store::{self, Store, StoreError};

/// The name of the admin token made from `admin_token` or generated on first start.
pub const BOOTSTRAP_TOKEN_NAME: &str = "bootstrap-admin";

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot open the database: {0}")]
    Store(#[from] StoreError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// Connects to the configured database and applies pending migrations.
pub async fn open_store(config: &Config) -> Result<Arc<dyn Store>, StoreError> {
    let store = store::connect(&config.database_url).await?;
    store.migrate().await?;
    Ok(store)
}

/// Makes sure an admin can get in. With `admin_token` configured, registers it (once). Without,
/// on a database that has no tokens at all, generates one and returns it so the caller can show it
/// once. A bootstrap token that an admin has revoked stays revoked.
pub async fn bootstrap_admin(
    store: &dyn Store,
    config: &Config,
) -> Result<Option<TokenSecret>, StoreError> {
    let (secret, generated) = match &config.admin_token {
        Some(configured) => (TokenSecret::from_presented(configured.clone()), false),
        None if store.tokens().await?.is_empty() => (TokenSecret::generate(), true),
        None => return Ok(None),
    };
    if store.token_by_hash(&secret.hash()).await?.is_none() {
        store
            .create_token(NewToken {
                name: BOOTSTRAP_TOKEN_NAME.to_owned(),
                role: Role::Admin,
                secret_hash: secret.hash(),
                created_at: Timestamp::now(),
            })
            .await?;
        tracing::info!("bootstrap admin token registered");
    }
    Ok(generated.then_some(secret))
}

/// A server accepting requests in the background.
pub struct Running {
    pub addr: SocketAddr,
    /// The admin secret generated on this start, if one was.
    pub generated_admin_token: Option<TokenSecret>,
    stop: oneshot::Sender<()>,
    task: JoinHandle<std::io::Result<()>>,
}

impl Running {
    /// Stops accepting, lets in-flight requests finish, and returns when the server is down.
    pub async fn stop(self) -> std::io::Result<()> {
        let _ = self.stop.send(());
        self.task
            .await
            .unwrap_or_else(|join| Err(std::io::Error::other(join)))
    }

    /// Runs until `signal` completes, then stops gracefully.
    pub async fn run_until(self, signal: impl Future<Output = ()>) -> std::io::Result<()> {
        signal.await;
        tracing::info!("shutting down");
        self.stop().await
    }
}

/// Opens the store, bootstraps the admin token, binds `config.listen` and serves in the background.
pub async fn start(config: &Config) -> Result<Running, StartError> {
    let store = open_store(config).await?;
    let generated_admin_token = bootstrap_admin(store.as_ref(), config).await?;
    if config.redis_url.is_some() {
        tracing::warn!("redis_url is set, but the Redis accelerator comes with the escalation worker; it is not used yet");
    }
    let state = AppState {
        store,
        policy: Arc::new(config.escalation.policy.clone()),
    };
    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(|source| StartError::Bind {
            addr: config.listen,
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| StartError::Bind {
        addr: config.listen,
        source,
    })?;
    let app = api::router(state, config.max_body_bytes);
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async {
                let _ = stopped.await;
            })
            .await
    });
    tracing::info!(%addr, "listening");
    Ok(Running {
        addr,
        generated_admin_token,
        stop,
        task,
    })
}

/// Completes on Ctrl-C or SIGTERM. The handlers are installed by this call, not when the future
/// is first polled, so a signal sent as soon as the server says it is listening still stops it
/// gracefully.
pub fn shutdown_signal() -> impl Future<Output = ()> {
    #[cfg(unix)]
    let (mut interrupt, mut terminate) = {
        use tokio::signal::unix::{signal, SignalKind};
        (
            signal(SignalKind::interrupt()).ok(),
            signal(SignalKind::terminate()).ok(),
        )
    };
    async move {
        #[cfg(unix)]
        tokio::select! {
            () = received(&mut interrupt) => {},
            () = received(&mut terminate) => {},
        }
        #[cfg(not(unix))]
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// Completes when `signal` arrives; never, if its handler could not be installed.
#[cfg(unix)]
async fn received(signal: &mut Option<tokio::signal::unix::Signal>) {
    match signal {
        Some(signal) => {
            signal.recv().await;
        }
        None => std::future::pending::<()>().await,
    }
}
