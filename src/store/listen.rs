//! PostgreSQL `LISTEN`: how one instance hears what another committed.
//!
//! Transactions announce changes with `pg_notify`, delivered on commit: a scheduled escalation on
//! [`ESCALATION_CHANNEL`] (payload: its due time in epoch ms), a revoked token on
//! [`TOKEN_CHANNEL`] (payload: its id), a changed service, policy or integration key on
//! [`CATALOG_CHANNEL`]. [`listen`] keeps one connection listening to all three,
//! reconnecting with backoff, and tells every [`Audience`] it is given what it hears, as typed
//! [`Announcement`]s, and when it is connected and when not: notifications sent while it is not
//! connected are lost, so whoever relies on them must look at the database instead.

use std::sync::Arc;

use sqlx::postgres::PgListener;
use tokio::sync::watch;
use uuid::Uuid;

use super::postgres::{CATALOG_CHANNEL, ESCALATION_CHANNEL, TOKEN_CHANNEL};
use crate::backoff::Backoff;
use crate::domain::Timestamp;

/// What the listener hears.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Announcement {
    /// Listening: every announcement committed from now on arrives.
    Connected,
    /// The connection dropped: announcements are lost until the next `Connected`.
    Disconnected,
    /// Escalations were scheduled, the earliest due at this time.
    EscalationDue(Timestamp),
    /// The token with this id was revoked.
    TokenRevoked(Uuid),
    /// A service, escalation policy or integration key changed.
    CatalogChanged,
}

impl Announcement {
    /// What a notification on `channel` announces; `None` if its payload does not parse.
    fn parse(channel: &str, payload: &str) -> Option<Self> {
        match channel {
            ESCALATION_CHANNEL => payload
                .parse()
                .ok()
                .map(|millis| Self::EscalationDue(Timestamp::from_millis(millis))),
            TOKEN_CHANNEL => Uuid::parse_str(payload).ok().map(Self::TokenRevoked),
            CATALOG_CHANNEL => Some(Self::CatalogChanged),
            _ => None,
        }
    }
}

/// Whoever reacts to announcements: the worker's wake-up, the API's token cache.
pub trait Audience: Send + Sync {
    /// Called on the listener's task, so it must not block.
    fn hear(&self, announcement: Announcement);
}

pub async fn listen(
    database_url: String,
    audience: Vec<Arc<dyn Audience>>,
    mut shutdown: watch::Receiver<bool>,
) {
    let tell = |announcement| {
        for member in &audience {
            member.hear(announcement);
        }
    };
    let mut backoff = Backoff::default();
    loop {
        let connected = async {
            let mut listener = PgListener::connect(&database_url).await?;
            listener.eager_reconnect(false);
            listener
                .listen_all([ESCALATION_CHANNEL, TOKEN_CHANNEL, CATALOG_CHANNEL])
                .await?;
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
        tell(Announcement::Connected);
        loop {
            let received = tokio::select! {
                received = listener.try_recv() => received,
                _ = shutdown.changed() => return,
            };
            match received {
                Ok(Some(notification)) => {
                    let (channel, payload) = (notification.channel(), notification.payload());
                    match Announcement::parse(channel, payload) {
                        Some(announcement) => tell(announcement),
                        None => tracing::warn!(
                            channel,
                            payload,
                            "ignored a notification that does not parse"
                        ),
                    }
                }
                // The connection dropped. Reconnect here rather than let the listener do it
                // behind our back: only once `LISTEN` runs again are we connected.
                Ok(None) | Err(_) => {
                    tell(Announcement::Disconnected);
                    break;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_payloads_the_postgresql_store_sends() {
        let id = Uuid::now_v7();
        assert_eq!(
            Announcement::parse(ESCALATION_CHANNEL, "1700000000123"),
            Some(Announcement::EscalationDue(Timestamp::from_millis(
                1_700_000_000_123
            )))
        );
        assert_eq!(
            Announcement::parse(TOKEN_CHANNEL, &id.to_string()),
            Some(Announcement::TokenRevoked(id))
        );
        assert_eq!(
            Announcement::parse(CATALOG_CHANNEL, ""),
            Some(Announcement::CatalogChanged)
        );
        assert_eq!(Announcement::parse(ESCALATION_CHANNEL, "soon"), None);
        assert_eq!(Announcement::parse(TOKEN_CHANNEL, "42"), None);
        assert_eq!(Announcement::parse("elsewhere", "42"), None);
    }
}
