//! Cross-instance wake-ups on PostgreSQL: every transaction that schedules an escalation sends
//! `NOTIFY klaxon_escalations, '<due ms>'` (delivered on commit); each worker listens and wakes
//! if that is sooner than it planned to look. A lost connection may have lost notifications, so
//! after reconnecting the worker is woken to look at the database itself.

use std::time::Duration;

use sqlx::postgres::PgListener;
use tokio::sync::watch;

use super::backoff::Backoff;
use super::wakeup::Wakeup;
use crate::domain::Timestamp;
use crate::store::postgres::ESCALATION_CHANNEL;

pub async fn listen(database_url: String, wakeup: Wakeup, mut shutdown: watch::Receiver<bool>) {
    let mut backoff = Backoff::default();
    loop {
        let connected = async {
            let mut listener = PgListener::connect(&database_url).await?;
            listener.listen(ESCALATION_CHANNEL).await?;
            Ok::<_, sqlx::Error>(listener)
        };
        let mut listener = tokio::select! {
            result = connected => match result {
                Ok(listener) => listener,
                Err(error) => {
                    let delay = backoff.next_delay();
                    tracing::debug!(%error, ?delay, "cannot listen for escalation wake-ups yet");
                    if sleep_or_shutdown(delay, &mut shutdown).await { return }
                    continue;
                }
            },
            _ = shutdown.changed() => return,
        };
        backoff.reset();
        wakeup.now();
        loop {
            tokio::select! {
                received = listener.try_recv() => match received {
                    Ok(Some(notification)) => {
                        if let Ok(millis) = notification.payload().parse::<i64>() {
                            wakeup.due_at(Timestamp::from_millis(millis));
                        }
                    }
                    // The connection dropped; the next call reconnects. Look at the database
                    // meanwhile: notifications sent in the gap are gone.
                    Ok(None) => wakeup.now(),
                    Err(_) => break,
                },
                _ = shutdown.changed() => return,
            }
        }
    }
}

/// Sleeps for `delay`; `true` if shutdown was requested meanwhile.
async fn sleep_or_shutdown(delay: Duration, shutdown: &mut watch::Receiver<bool>) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(delay) => false,
        _ = shutdown.changed() => true,
    }
}
