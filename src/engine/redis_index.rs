//! The optional Redis index of pending escalations: a sorted set, score = due time in epoch
//! milliseconds, member = escalation id, under the key
//! `{redis_prefix}{installation id}:escalations:pending`.
//!
//! Every key is named after the deployment (the installation id its database keeps, and the
//! configured `redis_prefix`), so deployments that share a Redis never read, and so never remove,
//! each other's entries. An index only ever holds ids of its own database; one that database no
//! longer has pending is stale, and removing it harms nobody.
//!
//! The database stays the source of truth. The index is written after each commit (added when
//! scheduled, removed when executed or cancelled); the worker takes due ids from it and claims
//! them in the database, whose own scan remains the safety net. Entries can therefore be stale
//! (already settled: claiming them finds nothing and they are removed) or missing (a crash
//! between commit and write: the scan finds them). When Redis is unreachable the index is marked
//! down, one warning is logged, nothing waits on it, and the worker runs from the database alone;
//! when Redis answers again the index is rebuilt from the database before it is used.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tokio::sync::watch;
use uuid::Uuid;

use crate::domain::Timestamp;
use crate::store::{Scheduled, Store, StoreError};

/// The deployment's sorted set of pending escalations: `prefix` (the configured `redis_prefix`),
/// then the installation id, then `escalations:pending`.
fn pending_key(prefix: &str, installation: Uuid) -> String {
    format!("{prefix}{installation}:escalations:pending")
}

/// How long one Redis command may take before Redis counts as down.
const RESPONSE_TIMEOUT: Duration = Duration::from_millis(500);
/// How often a down Redis is probed.
const PROBE_INTERVAL: Duration = Duration::from_secs(1);
/// Pending escalations read from the database per step of a rebuild.
const REBUILD_PAGE: u32 = 10_000;

pub struct RedisIndex {
    connection: ConnectionManager,
    store: Arc<dyn Store>,
    prefix: String,
    /// [`pending_key`], known once the first rebuild has read the installation id; always set
    /// while the index is up.
    pending: OnceLock<String>,
    up: AtomicBool,
}

impl RedisIndex {
    /// Prepares the index without connecting: it starts down and [`RedisIndex::supervise`]
    /// brings it up. `prefix` is the configured `redis_prefix`.
    pub fn new(url: &str, prefix: &str, store: Arc<dyn Store>) -> Result<Self, redis::RedisError> {
        let client = redis::Client::open(url)?;
        let config = ConnectionManagerConfig::new()
            .set_response_timeout(Some(RESPONSE_TIMEOUT))
            .set_connection_timeout(Some(RESPONSE_TIMEOUT))
            .set_number_of_retries(1);
        let connection = ConnectionManager::new_lazy_with_config(client, config)?;
        Ok(Self {
            connection,
            store,
            prefix: prefix.to_owned(),
            pending: OnceLock::new(),
            up: AtomicBool::new(false),
        })
    }

    /// Whether Redis answers a `PING` now, within the response timeout: for the start-up block,
    /// while the index itself is still down until [`RedisIndex::supervise`] has rebuilt it.
    pub async fn answers(&self) -> bool {
        let mut connection = self.connection.clone();
        redis::cmd("PING")
            .query_async::<String>(&mut connection)
            .await
            .is_ok()
    }

    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::SeqCst)
    }

    fn mark_down(&self, error: &redis::RedisError) {
        if self.up.swap(false, Ordering::SeqCst) {
            warn_down(error);
        }
    }

    async fn run<T: redis::FromRedisValue>(&self, command: &redis::Cmd) -> Option<T> {
        if !self.is_up() {
            return None;
        }
        let mut connection = self.connection.clone();
        match command.query_async(&mut connection).await {
            Ok(value) => Some(value),
            Err(error) => {
                self.mark_down(&error);
                None
            }
        }
    }

    pub async fn add(&self, scheduled: &[Scheduled]) {
        let Some(key) = self.pending.get() else {
            return;
        };
        if scheduled.is_empty() {
            return;
        }
        let mut command = redis::cmd("ZADD");
        command.arg(key);
        for entry in scheduled {
            command.arg(entry.due.as_millis()).arg(entry.id.to_string());
        }
        self.run::<()>(&command).await;
    }

    pub async fn remove(&self, ids: &[Uuid]) {
        let Some(key) = self.pending.get() else {
            return;
        };
        if ids.is_empty() {
            return;
        }
        let mut command = redis::cmd("ZREM");
        command.arg(key);
        for id in ids {
            command.arg(id.to_string());
        }
        self.run::<()>(&command).await;
    }

    /// Up to `limit` ids due at `now`, earliest first; `None` when the index is down.
    pub async fn due(&self, now: Timestamp, limit: u32) -> Option<Vec<Uuid>> {
        let mut command = redis::cmd("ZRANGEBYSCORE");
        command
            .arg(self.pending.get()?)
            .arg("-inf")
            .arg(now.as_millis())
            .arg("LIMIT")
            .arg(0)
            .arg(limit);
        let members: Vec<String> = self.run(&command).await?;
        Some(
            members
                .iter()
                .filter_map(|m| Uuid::parse_str(m).ok())
                .collect(),
        )
    }

    /// When the earliest indexed escalation is due (`Some(None)`: nothing indexed); `None` when
    /// the index is down.
    pub async fn next_due(&self) -> Option<Option<Timestamp>> {
        let mut command = redis::cmd("ZRANGE");
        command
            .arg(self.pending.get()?)
            .arg(0)
            .arg(0)
            .arg("WITHSCORES");
        let first: Vec<(String, f64)> = self.run(&command).await?;
        Some(
            first
                .first()
                .map(|(_, score)| Timestamp::from_millis(*score as i64)),
        )
    }

    /// Keeps the index honest for as long as the process runs: probes Redis while it is down
    /// and, when it answers, rebuilds the index from the database and marks it up.
    pub async fn supervise(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        // The index starts down without having been up, so no `mark_down` warns of it: the first
        // attempt does, and the probes after it keep quiet, as they do after an outage mid-run.
        let mut first_attempt = true;
        loop {
            if !self.is_up() {
                match self.rebuild().await {
                    Ok((count, last)) => {
                        self.up.store(true, Ordering::SeqCst);
                        // What was scheduled while the rebuild ran was not written to the index
                        // (it was down): add it now that writes go through again.
                        let caught_up = self.catch_up(last).await;
                        tracing::info!(
                            key = self.pending.get().map(String::as_str),
                            pending = count + caught_up,
                            "redis index rebuilt from the database"
                        );
                        first_attempt = false;
                    }
                    // The database is reported by the store; only Redis is this index's to warn
                    // of, once, whenever it is first found down.
                    Err(RebuildError::Store(error)) => {
                        tracing::debug!(%error, "cannot rebuild the redis index yet: the database did not answer");
                    }
                    Err(RebuildError::Redis(error)) if first_attempt => {
                        warn_down(&error);
                        first_attempt = false;
                    }
                    Err(RebuildError::Redis(error)) => {
                        tracing::debug!(%error, "redis still unreachable")
                    }
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(PROBE_INTERVAL) => {}
                _ = shutdown.changed() => return,
            }
        }
    }

    /// Adds the pending escalations with ids after `after` (ids grow with time).
    async fn catch_up(&self, mut after: Option<Uuid>) -> usize {
        let mut count = 0;
        while let Ok(page) = self.store.pending_page(after, REBUILD_PAGE).await {
            let Some(last) = page.last() else { break };
            after = Some(last.id);
            count += page.len();
            self.add(&page).await;
        }
        count
    }

    /// Replaces the index with the database's pending escalations: written under a temporary
    /// key (the live key + `:rebuild:` + a fresh id) and renamed over the live one, so readers
    /// never see it half-built. The first rebuild learns the live key from the installation id.
    /// Returns how many and the last id read.
    async fn rebuild(&self) -> Result<(usize, Option<Uuid>), RebuildError> {
        let mut connection = self.connection.clone();
        redis::cmd("PING")
            .query_async::<()>(&mut connection)
            .await?;
        let pending = match self.pending.get() {
            Some(key) => key,
            None => {
                let installation = self.store.installation_id().await?;
                self.pending
                    .get_or_init(|| pending_key(&self.prefix, installation))
            }
        };
        let staging = format!("{pending}:rebuild:{}", Uuid::now_v7());
        let mut after = None;
        let mut count = 0;
        loop {
            let page = self.store.pending_page(after, REBUILD_PAGE).await?;
            let Some(last) = page.last() else { break };
            after = Some(last.id);
            count += page.len();
            let mut command = redis::cmd("ZADD");
            command.arg(&staging);
            for entry in &page {
                command.arg(entry.due.as_millis()).arg(entry.id.to_string());
            }
            command.query_async::<()>(&mut connection).await?;
        }
        if count == 0 {
            redis::cmd("DEL")
                .arg(pending)
                .query_async::<()>(&mut connection)
                .await?;
        } else {
            redis::cmd("RENAME")
                .arg(&staging)
                .arg(pending)
                .query_async::<()>(&mut connection)
                .await?;
        }
        Ok((count, after))
    }
}

/// Why a rebuild failed: Redis, or the database it reads from.
#[derive(Debug, thiserror::Error)]
enum RebuildError {
    #[error(transparent)]
    Redis(#[from] redis::RedisError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The one warning of an outage, at start or mid-run.
fn warn_down(error: &dyn std::fmt::Display) {
    tracing::warn!(%error, "redis is unreachable; escalations run from the database alone until it returns");
}
