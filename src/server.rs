//! Start-up and shutdown: bind the port, open and migrate the store, make sure an admin can get
//! in, serve the API until told to stop, then let in-flight requests finish, for at most
//! [`SHUTDOWN_GRACE`].

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::api::cache::{RouteCache, TokenCache};
use crate::api::key_limit::KeyLimiter;
use crate::api::tokens::{self, IssueError};
use crate::api::twilio::Reach;
use crate::api::{self, AppParts, AppState};
use crate::backoff::Backoff;
use crate::config::{Config, ConfigError, NotificationConfig, Origin, TwilioProvider};
use crate::domain::EscalationPolicy;
use crate::domain::{Role, TokenSecret};
use crate::engine::heartbeats::HeartbeatWatch;
use crate::engine::redis_index::RedisIndex;
use crate::engine::{Scheduler, Worker, WorkerStatus};
use crate::http;
use crate::live::Live;
use crate::metrics::Metrics;
use crate::notify::email::EmailSender;
use crate::notify::ntfy::Ntfy;
use crate::notify::twilio::{Twilio, TwilioKind};
use crate::notify::webhook::WebhookSender;
use crate::notify::{Channels, Dispatcher, Sender};
use crate::startup;
use crate::store::availability::{Gate, Guarded};
use crate::store::batch::IngestQueue;
use crate::store::listen::{self, Audience};
use crate::store::{self, DatabaseUrl, Store, StoreError};

/// The name of the admin token made from `admin_token` or generated on first start.
pub const BOOTSTRAP_TOKEN_NAME: &str = "bootstrap-admin";

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot open the database: {0}")]
    Store(#[from] StoreError),
    #[error("cannot register the admin token: {0}")]
    Bootstrap(#[from] IssueError),
    #[error("invalid redis_url: {0}")]
    Redis(#[source] redis::RedisError),
    #[error("cannot listen on {addr} (set by {from}): {source}")]
    Bind {
        addr: SocketAddr,
        from: Origin,
        source: std::io::Error,
    },
    #[error("cannot start the ingest writer: {0}")]
    IngestWriter(#[source] std::io::Error),
    #[error("cannot set up the {channel} channel: {message}")]
    Channel {
        channel: &'static str,
        message: String,
    },
}

/// The senders of the channels the configuration sets up.
pub fn channels(config: &Config) -> Result<Channels, StartError> {
    let email = match &config.email {
        Some(email) => {
            let sender = EmailSender::new(email).map_err(|error| StartError::Channel {
                channel: "email",
                message: error.to_string(),
            })?;
            Some(Arc::new(sender) as Arc<dyn Sender>)
        }
        None => None,
    };
    // Always: a person's own webhook (a contact method) needs no `[webhooks.<name>]`.
    let webhook = WebhookSender::new(&config.webhooks).map_err(|error| StartError::Channel {
        channel: "webhook",
        message: error.to_string(),
    })?;
    let webhook = Some(Arc::new(webhook) as Arc<dyn Sender>);
    let twilio = |kind, providers: &[TwilioProvider], channel| -> Result<_, StartError> {
        if providers.is_empty() {
            return Ok(None);
        }
        let sender =
            Twilio::new(kind, providers.to_vec(), &config.public_url).map_err(|error| {
                StartError::Channel {
                    channel,
                    message: error.to_string(),
                }
            })?;
        Ok(Some(Arc::new(sender) as Arc<dyn Sender>))
    };
    Ok(Channels {
        email,
        webhook,
        sms: twilio(TwilioKind::Sms, &config.sms, "sms")?,
        voice: twilio(TwilioKind::Voice, &config.voice, "voice")?,
        push: match &config.push {
            Some(push) => {
                let sender = Ntfy::new(push.clone()).map_err(|error| StartError::Channel {
                    channel: "push",
                    message: error.to_string(),
                })?;
                Some(Arc::new(sender) as Arc<dyn Sender>)
            }
            None => None,
        },
    })
}

/// Connects to the configured database and applies pending migrations.
pub async fn open_store(config: &Config) -> Result<Arc<dyn Store>, StoreError> {
    let store = store::connect(&config.database_url).await?;
    store.migrate().await?;
    Ok(store)
}

/// Migrates the database and, for a process that serves the API, makes sure an admin can get in:
/// what start-up needs of the database before it may answer requests.
async fn prepare(
    store: &dyn Store,
    config: &Config,
    roles: Roles,
) -> Result<Option<TokenSecret>, IssueError> {
    store.migrate().await?;
    if roles.api {
        bootstrap_admin(store, config).await
    } else {
        Ok(None)
    }
}

/// Shows an admin secret generated on first start: on standard output, this once.
pub fn show_generated_admin_token(secret: &TokenSecret) {
    println!("Klaxon generated an admin token. It is shown this once; keep it safe:");
    println!("  {}", secret.expose());
}

/// Start-up with the database away: retries [`prepare`] with backoff, logging each attempt,
/// until it succeeds (then shows a generated admin token, if one was, and opens the gate) or the
/// process stops. Until then every request is answered 503 at once.
async fn await_database(
    inner: Arc<dyn Store>,
    gate: Arc<Gate>,
    config: Config,
    roles: Roles,
    mut stopping: watch::Receiver<bool>,
) {
    let mut backoff = Backoff::default();
    for attempt in 2.. {
        let delay = backoff.next_delay();
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = stopping.changed() => return,
        }
        match prepare(inner.as_ref(), &config, roles).await {
            Ok(generated) => {
                if let Some(secret) = &generated {
                    show_generated_admin_token(secret);
                }
                gate.open();
                tracing::info!(attempt, "the database is reachable; start-up complete");
                return;
            }
            Err(error) => {
                tracing::warn!(attempt, %error, "the database is still unreachable; retrying");
            }
        }
    }
}

/// Makes sure an admin can get in. With `admin_token` configured, registers it (once). Without,
/// on a database that has no tokens at all, generates one and returns it so the caller can show it
/// once. A bootstrap token that an admin has revoked stays revoked.
pub async fn bootstrap_admin(
    store: &dyn Store,
    config: &Config,
) -> Result<Option<TokenSecret>, IssueError> {
    let (secret, generated) = match &config.admin_token {
        Some(configured) => (TokenSecret::from_presented(configured.clone()), false),
        None if store.tokens().await?.is_empty() => (TokenSecret::generate(), true),
        None => return Ok(None),
    };
    if store.token_by_hash(&secret.hash()).await?.is_some() {
        return Ok(None);
    }
    let (_, secret) = tokens::issue(store, BOOTSTRAP_TOKEN_NAME, Role::Admin, secret).await?;
    tracing::info!("bootstrap admin token registered");
    Ok(generated.then_some(secret))
}

/// What one process runs: `serve` runs both, `serve --no-worker` the API alone, `worker` the
/// worker alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Roles {
    pub api: bool,
    pub worker: bool,
}

impl Roles {
    pub const ALL: Self = Self {
        api: true,
        worker: true,
    };
}

/// How long stopping waits for requests in flight and the worker's batch in hand. What is still
/// running then is abandoned (an uncommitted batch rolls back), so that SIGTERM stops the process
/// within this (docs/engine.md).
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// A running Klaxon: the API and/or the worker, in the background.
pub struct Running {
    /// Where the API listens, when this process serves it.
    pub api_addr: Option<SocketAddr>,
    /// The admin secret generated on this start, if one was.
    pub generated_admin_token: Option<TokenSecret>,
    /// This process's worker, when it runs one.
    pub worker: Option<Arc<WorkerStatus>>,
    /// Where `/metrics` is served without a token (`metrics_listen`), when it is.
    pub metrics_addr: Option<SocketAddr>,
    /// What a configuration reload replaces.
    pub reloadable: Reloadable,
    shutdown: watch::Sender<bool>,
    /// Each background task, with what it is called in the log.
    tasks: Vec<(&'static str, JoinHandle<std::io::Result<()>>)>,
}

impl Running {
    /// Stops accepting requests and claiming escalations, lets requests in flight and the batch
    /// in hand finish for at most [`SHUTDOWN_GRACE`], abandons what has not, and returns.
    pub async fn stop(self) -> std::io::Result<()> {
        let _ = self.shutdown.send(true);
        let deadline = Instant::now() + SHUTDOWN_GRACE;
        let mut outcome = Ok(());
        for (name, mut task) in self.tasks {
            match tokio::time::timeout_at(deadline, &mut task).await {
                Ok(joined) => {
                    let result = joined.unwrap_or_else(|join| Err(std::io::Error::other(join)));
                    outcome = outcome.and(result);
                }
                Err(_) => {
                    task.abort();
                    tracing::warn!(
                        task = name,
                        grace = ?SHUTDOWN_GRACE,
                        "still busy when the shutdown grace ran out; abandoned"
                    );
                }
            }
        }
        outcome
    }

    /// Runs until `signal` completes, then stops gracefully.
    pub async fn run_until(self, signal: impl Future<Output = ()>) -> std::io::Result<()> {
        signal.await;
        tracing::info!("shutting down");
        self.stop().await
    }
}

/// What a reload (SIGHUP) replaces in a running process: the escalation policy, the channels
/// (email, SMS, voice, push, webhooks, with their providers and credentials), the
/// `[notifications]` settings (rate limits, attempts, backoff, link expiry) and the integration
/// rate limit. Everything else is read once, at start (docs/configuration.md, "Reloading").
#[derive(Clone)]
pub struct Reloadable {
    policy: Live<EscalationPolicy>,
    channels: Live<Channels>,
    notifications: Live<NotificationConfig>,
    reach: Live<Reach>,
    key_limit: Arc<KeyLimiter>,
}

impl Reloadable {
    /// Sets up what `config` says, or changes nothing and says why: the channels are built first,
    /// and only once all of them are is anything replaced.
    pub fn apply(&self, config: &Config) -> Result<(), StartError> {
        let channels = channels(config)?;
        self.policy.set(config.escalation.policy.clone());
        self.notifications.set(config.notifications.clone());
        // `public_url` signs links and names the provider callbacks: it is kept from start-up.
        let public_url = self.reach.get().public_url.clone();
        self.reach.set(reach(config, channels.clone(), public_url));
        self.channels.set(channels);
        self.key_limit.set_limit(config.integration_rate);
        Ok(())
    }
}

fn reach(config: &Config, channels: Channels, public_url: String) -> Reach {
    Reach {
        channels,
        public_url,
        sms: config.sms.clone(),
        voice: config.voice.clone(),
        notifications: config.notifications.clone(),
        webhooks: config.webhooks.keys().cloned().collect(),
    }
}

/// Reloads the configuration with `load` on each SIGHUP, as long as the process runs. The handler
/// is installed by this call, so a SIGHUP sent once the server says it is listening is never the
/// default action's (which ends the process). A configuration that does not load, or whose
/// channels cannot be set up, changes nothing and is logged as an error with every problem.
pub fn reload_on_hangup(
    reloadable: Reloadable,
    load: impl Fn() -> Result<Config, ConfigError> + Send + 'static,
) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut hangup = match signal(SignalKind::hangup()) {
            Ok(hangup) => hangup,
            Err(error) => {
                tracing::warn!(%error, "cannot handle SIGHUP: the configuration cannot be reloaded");
                return;
            }
        };
        tokio::spawn(async move {
            while hangup.recv().await.is_some() {
                let applied = load()
                    .map_err(|error| error.to_string())
                    .and_then(|config| {
                        reloadable
                            .apply(&config)
                            .map_err(|error| error.to_string())?;
                        Ok(config)
                    });
                match applied {
                    Ok(config) => {
                        tracing::info!("SIGHUP: configuration reloaded");
                        startup::log_policy(&config);
                    }
                    Err(problems) => tracing::error!(
                        "SIGHUP: the configuration was not reloaded; the running one stays in force. {problems}"
                    ),
                }
            }
        });
    }
    #[cfg(not(unix))]
    let _ = (reloadable, load);
}

/// `serve`: the API and the worker.
pub async fn start(config: &Config) -> Result<Running, StartError> {
    start_with(config, Roles::ALL).await
}

/// Starts what `roles` asks for in the background: the API on `config.listen`, the escalation
/// worker, and with them the Redis index supervisor (with `redis_url`) and the PostgreSQL
/// listener (on PostgreSQL).
///
/// Everything that can fail comes first, in an order that leaves nothing behind a failure: the
/// port is bound before the database is opened (a port in use leaves the database untouched),
/// and the admin token is bootstrapped last (a token generated is sure to reach the caller, who
/// shows it). Only then does anything start. A database that cannot be reached at start does not
/// fail start-up: the store's gate is held closed (every request answered 503 at once, `/health`
/// included) while a background task retries with backoff, then migrates, bootstraps and opens
/// it.
pub async fn start_with(config: &Config, roles: Roles) -> Result<Running, StartError> {
    let listener = if roles.api {
        Some(bind(config.listen, config.listen_from).await?)
    } else {
        None
    };
    let metrics_listener = match (roles.api, config.metrics_listen) {
        (true, Some(addr)) => Some(bind(addr, config.metrics_listen_from).await?),
        _ => None,
    };
    let channels = channels(config)?;
    let reloadable = Reloadable {
        policy: Live::new(config.escalation.policy.clone()),
        channels: Live::new(channels.clone()),
        notifications: Live::new(config.notifications.clone()),
        reach: Live::new(reach(config, channels, config.public_url.clone())),
        key_limit: Arc::new(KeyLimiter::new(config.integration_rate)),
    };
    // Opened without waiting: a database that is away at start is waited for in the background
    // (`await_database`) while the port answers 503, rather than failing start-up.
    let inner = store::open(&config.database_url).await?;
    let guarded = Guarded::new(inner.clone());
    let gate = guarded.gate();
    let store: Arc<dyn Store> = Arc::new(guarded);
    let redis = match &config.redis_url {
        Some(url) => Some(Arc::new(
            RedisIndex::new(url, &config.redis_prefix, store.clone()).map_err(StartError::Redis)?,
        )),
        None => None,
    };
    let redis_up = match &redis {
        Some(index) => Some(index.answers().await),
        None => None,
    };
    let generated_admin_token = match prepare(inner.as_ref(), config, roles).await {
        Ok(generated) => generated,
        Err(IssueError::Store(error)) if error.is_unreachable() => {
            tracing::warn!(attempt = 1, %error, "the database is unreachable at start; answering 503 and retrying with backoff");
            gate.hold(error);
            None
        }
        Err(error) => return Err(error.into()),
    };

    let (shutdown, stopping) = watch::channel(false);
    let mut tasks = Vec::new();
    if !gate.is_open() {
        let waiting = await_database(inner, gate, config.clone(), roles, stopping.clone());
        tasks.push(("start-up, waiting for the database", background(waiting)));
    }
    if let Some(index) = &redis {
        let supervise = index.clone().supervise(stopping.clone());
        tasks.push(("the Redis index", background(supervise)));
    }
    let scheduler = Scheduler::new(redis);
    let metrics = Arc::new(Metrics::default());
    let worker_status = Arc::new(WorkerStatus::default());
    let sqlite = matches!(config.database_url, DatabaseUrl::Sqlite(_));
    let tokens = Arc::new(TokenCache::new(sqlite));
    let routes = Arc::new(RouteCache::new(sqlite));
    if let DatabaseUrl::Postgres(url) = &config.database_url {
        let mut audience: Vec<Arc<dyn Audience>> = vec![tokens.clone(), routes.clone()];
        if roles.worker {
            audience.push(Arc::new(scheduler.wakeup().clone()));
        }
        let listen = listen::listen(url.clone(), audience, stopping.clone());
        tasks.push(("the PostgreSQL listener", background(listen)));
    }
    if roles.worker {
        let outbox = Arc::new(Notify::new());
        let worker = Worker {
            store: store.clone(),
            scheduler: scheduler.clone(),
            metrics: metrics.clone(),
            status: worker_status.clone(),
            poll_interval: config.escalation.poll_interval,
            outbox: outbox.clone(),
        };
        tasks.push((
            "the escalation worker",
            background(worker.run(stopping.clone())),
        ));
        let watch = HeartbeatWatch {
            store: store.clone(),
            scheduler: scheduler.clone(),
            policy: reloadable.policy.clone(),
        };
        tasks.push((
            "the heartbeat watch",
            background(watch.run(stopping.clone())),
        ));
        let dispatcher = Dispatcher {
            store: store.clone(),
            channels: reloadable.channels.clone(),
            config: reloadable.notifications.clone(),
            public_url: config.public_url.clone(),
            wake: outbox,
        };
        tasks.push((
            "the notification dispatcher",
            background(dispatcher.run(stopping.clone())),
        ));
    }
    let (mut api_addr, mut metrics_addr) = (None, None);
    if let Some((listener, addr)) = listener {
        let state = AppState::new(AppParts {
            ingest: IngestQueue::start(store.clone()).map_err(StartError::IngestWriter)?,
            store,
            policy: reloadable.policy.clone(),
            scheduler,
            metrics,
            worker: worker_status.clone(),
            tokens,
            routes,
            reach: reloadable.reach.clone(),
            key_limit: reloadable.key_limit.clone(),
        });
        if let Some((listener, addr)) = metrics_listener {
            let app = api::metrics::open_router(state.clone());
            let serve = tokio::spawn(http::serve(listener, app, config.http, stopping.clone()));
            tasks.push(("the metrics listener", serve));
            metrics_addr = Some(addr);
        }
        let app = api::router(state, config.max_body_bytes);
        let serve = tokio::spawn(http::serve(listener, app, config.http, stopping.clone()));
        tasks.push(("the API", serve));
        api_addr = Some(addr);
    }
    startup::log_block(
        config,
        startup::Bound {
            api: api_addr,
            metrics: metrics_addr,
        },
        redis_up,
    );
    let worker = roles.worker.then_some(worker_status);
    Ok(Running {
        api_addr,
        metrics_addr,
        reloadable,
        generated_admin_token,
        worker,
        shutdown,
        tasks,
    })
}

/// Binds a port; returns the listener and the address it got (port 0 picks one). `from` is what
/// set the address, for the error.
async fn bind(addr: SocketAddr, from: Origin) -> Result<(TcpListener, SocketAddr), StartError> {
    let bind_error = |source| StartError::Bind { addr, from, source };
    let listener = TcpListener::bind(addr).await.map_err(bind_error)?;
    let bound = listener.local_addr().map_err(bind_error)?;
    Ok((listener, bound))
}

fn background(task: impl Future<Output = ()> + Send + 'static) -> JoinHandle<std::io::Result<()>> {
    tokio::spawn(async move {
        task.await;
        Ok(())
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
