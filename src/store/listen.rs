//! PostgreSQL `LISTEN`: how one instance hears what another committed.
//!
//! Transactions announce changes with `pg_notify`, delivered on commit: a scheduled escalation on
//! [`ESCALATION_CHANNEL`](super::postgres::ESCALATION_CHANNEL) (payload: its due time in epoch
//! ms), a revoked token on [`TOKEN_CHANNEL`](super::postgres::TOKEN_CHANNEL) (payload: its id).
//! [`listen`] keeps one connection listening to the channels it is given, reconnecting with
//! backoff, and tells its caller when it is connected and when not: notifications sent while it
//! is not connected are lost, so whoever relies on them must look at the database instead.

use sqlx::postgres::PgListener;
use tokio::sync::watch;

use crate::backoff::Backoff;

/// What to do with a notification's payload on one channel.
pub type Handler = Box<dyn Fn(&str) + Send + Sync>;

/// Called with `true` once listening, `false` when the connection is lost.
pub type OnConnection = Box<dyn Fn(bool) + Send + Sync>;

pub async fn listen(
    database_url: String,
    handlers: Vec<(&'static str, Handler)>,
    on_connection: OnConnection,
    mut shutdown: watch::Receiver<bool>,
) {
    let channels: Vec<&str> = handlers.iter().map(|(channel, _)| *channel).collect();
    let mut backoff = Backoff::default();
    loop {
        let connected = async {
            let mut listener = PgListener::connect(&database_url).await?;
            listener.listen_all(channels.iter().copied()).await?;
            Ok::<_, sqlx::Error>(listener)
        };
        let mut listener = tokio::select! {
            result = connected => match result {
                Ok(listener) => listener,
                Err(error) => {
                    let delay = backoff.next_delay();
                    tracing::debug!(%error, ?delay, "cannot listen for notifications yet");
                    tokio::select! {
                        _ = tokio::time::sleep(delay) => continue,
                        _ = shutdown.changed() => return,
                    }
                }
            },
            _ = shutdown.changed() => return,
        };
        backoff.reset();
        on_connection(true);
        loop {
            tokio::select! {
                received = listener.try_recv() => match received {
                    Ok(Some(notification)) => {
                        if let Some((_, handle)) = handlers.iter().find(|(c, _)| *c == notification.channel()) {
                            handle(notification.payload());
                        }
                    }
                    // The connection dropped. Reconnect here rather than let the listener do it
                    // behind our back: only once `LISTEN` runs again are we connected.
                    Ok(None) | Err(_) => {
                        on_connection(false);
                        break;
                    }
                },
                _ = shutdown.changed() => return,
            }
        }
    }
}
