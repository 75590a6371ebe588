//! The embedded backend's hot path: every ingest batch runs begin to commit on the calling thread
//! through a connection of its own (rusqlite), with each statement prepared once. sqlx's SQLite
//! driver hands every statement to its connection's thread and back; under load each hand-off
//! waits for a turn on a busy machine, and a batch spent more time waiting than writing
//! (docs/PERFORMANCE.md, "SQLite's direct connection").
//!
//! This connection never writes alone: a [`DirectTx`] holds the single writer's pool connection
//! from begin to end, so the file still has one writer at a time, and no other transaction can
//! start between a transition's read and its write. What it runs is [`IngestTx`], whose rules are
//! written once in [`super::changes`].

use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use rusqlite::types::Value;
use rusqlite::{params_from_iter, Connection};
use sqlx::pool::PoolConnection;
use sqlx::Sqlite;
use tokio::runtime::{Handle, RuntimeFlavor};
use tokio::sync::{Mutex, OwnedMutexGuard};
use uuid::Uuid;

use super::backend::{AppendTx, IngestTx, Opened, Opening};
use super::rows::{self, Columns};
use super::sqlite::{classify_code, BUSY_TIMEOUT, ENTRY_COLUMNS, ESCALATION_COLUMNS};
use super::statements::Dialect;
use super::{ErrorClass, Result, StoreError, JOIN_LIVE_INCIDENTS};
use crate::domain::{Escalation, Event, Incident, NewTimelineEntry, Timestamp};

/// The columns of the inserts only this connection writes.
const INCIDENT_COLUMNS: &str = "incidents (id, title, severity, status, dedup_key, event_count, created_at, updated_at, service_id, dedup_scope, escalation_policy)";
const EVENT_COLUMNS: &str =
    "events (id, incident_id, source, summary, severity, dedup_key, payload, received_at)";

/// The direct connection, taken by one transaction at a time.
pub struct Direct {
    connection: Arc<Mutex<Connection>>,
}

impl Direct {
    /// Opens `path` (created and migrated by sqlx first) with the writer's settings: `synchronous
    /// = FULL`, foreign keys on, the same busy timeout. WAL mode is the file's own, set by sqlx.
    pub fn open(path: &Path) -> Result<Self> {
        let connection = Connection::open(path)?;
        connection.pragma_update(None, "synchronous", "FULL")?;
        connection.pragma_update(None, "foreign_keys", "ON")?;
        connection.busy_timeout(BUSY_TIMEOUT)?;
        Ok(Self {
            connection: Arc::new(Mutex::new(connection)),
        })
    }

    /// Begins a transaction that holds `single_writer`, the writer pool's connection, until it
    /// ends: no other write can start meanwhile.
    pub async fn begin(&self, single_writer: PoolConnection<Sqlite>) -> Result<DirectTx> {
        let connection = self.connection.clone().lock_owned().await;
        blocking(|| connection.execute_batch("begin immediate"))?;
        Ok(DirectTx {
            connection,
            open: true,
            _single_writer: single_writer,
        })
    }
}

/// A transaction on the direct connection. Each statement runs on the calling thread and blocks
/// it; dropped before [`IngestTx::commit`], it rolls back.
pub struct DirectTx {
    connection: OwnedMutexGuard<Connection>,
    open: bool,
    /// Released after the rollback of an abandoned transaction, which `Drop` runs first.
    _single_writer: PoolConnection<Sqlite>,
}

impl DirectTx {
    /// Inserts incidents that events without a `dedup_key` opened, none escalating, with those
    /// events and their timeline entries.
    pub fn insert_opened(&mut self, opened: &Opened) -> Result<()> {
        self.insert_each(&insert(INCIDENT_COLUMNS), &opened.incidents, |incident| {
            incident_values(incident, None)
        })?;
        self.insert_each(&insert(EVENT_COLUMNS), &opened.events, event_values)?;
        self.insert_each(&insert(ENTRY_COLUMNS), &opened.entries, entry_values)
    }

    /// Runs the single-row statement `sql` once per row of `rows`, bound by `values`.
    fn insert_each<T, const N: usize>(
        &mut self,
        sql: &str,
        rows: &[T],
        values: fn(&T) -> [Value; N],
    ) -> Result<()> {
        blocking(|| {
            let mut statement = self.connection.prepare_cached(sql)?;
            for row in rows {
                statement.execute(params_from_iter(values(row)))?;
            }
            Ok(())
        })
    }
}

#[async_trait]
impl AppendTx for DirectTx {
    async fn append_timeline(&mut self, entries: &[NewTimelineEntry]) -> Result<()> {
        self.insert_each(&insert(ENTRY_COLUMNS), entries, entry_values)
    }

    async fn insert_escalations(&mut self, escalations: &[Escalation]) -> Result<()> {
        self.insert_each(&insert(ESCALATION_COLUMNS), escalations, escalation_values)
    }

    async fn commit(mut self) -> Result<()> {
        blocking(|| self.connection.execute_batch("commit"))?;
        self.open = false;
        Ok(())
    }
}

#[async_trait]
impl IngestTx for DirectTx {
    async fn insert_incidents(&mut self, incidents: &[Opening]) -> Result<()> {
        let openings = with_policies(incidents)?;
        self.insert_each(
            &insert(INCIDENT_COLUMNS),
            &openings,
            |(incident, policy)| incident_values(incident, policy.clone()),
        )
    }

    async fn upsert_incidents(&mut self, incidents: &[Opening]) -> Result<Vec<Incident>> {
        let openings = with_policies(incidents)?;
        let sql = format!(
            "{}{}",
            insert(INCIDENT_COLUMNS),
            JOIN_LIVE_INCIDENTS.as_str()
        );
        blocking(|| {
            let mut upsert = self.connection.prepare_cached(&sql)?;
            let mut returned = Vec::with_capacity(openings.len());
            for (incident, policy) in &openings {
                let values = incident_values(incident, policy.clone());
                let mut found = upsert.query(params_from_iter(values))?;
                while let Some(row) = found.next()? {
                    returned.push(rows::incident(&DirectRow(row))?);
                }
            }
            Ok(returned)
        })
    }

    async fn insert_events(&mut self, events: &[Event]) -> Result<()> {
        self.insert_each(&insert(EVENT_COLUMNS), events, event_values)
    }
}

impl Drop for DirectTx {
    fn drop(&mut self) {
        if self.open {
            if let Err(error) = blocking(|| self.connection.execute_batch("rollback")) {
                tracing::warn!(%error, "rolling back an abandoned ingest transaction failed");
            }
        }
    }
}

/// Runs `work`, which blocks, on this thread; a worker of a multi-threaded runtime first hands
/// its other tasks on. The ingest queue's own thread runs it as it is.
fn blocking<T>(work: impl FnOnce() -> T) -> T {
    match Handle::try_current().map(|handle| handle.runtime_flavor()) {
        Ok(RuntimeFlavor::MultiThread) => tokio::task::block_in_place(work),
        _ => work(),
    }
}

/// Each incident with its policy snapshot as the column holds it.
fn with_policies(openings: &[Opening]) -> Result<Vec<(&Incident, Option<String>)>> {
    openings
        .iter()
        .map(|opening| {
            let policy = opening.policy.as_deref().map(Sqlite::policy).transpose()?;
            Ok((&opening.incident, policy))
        })
        .collect()
}

fn id(id: Uuid) -> Value {
    Value::Text(id.to_string())
}

fn time(at: Timestamp) -> Value {
    Value::Integer(at.as_millis())
}

fn text(text: &str) -> Value {
    Value::Text(text.to_owned())
}

fn optional(value: Option<Value>) -> Value {
    value.unwrap_or(Value::Null)
}

/// The values of [`INCIDENT_COLUMNS`].
fn incident_values(incident: &Incident, policy: Option<String>) -> [Value; 11] {
    [
        id(incident.id),
        text(&incident.title),
        text(incident.severity.as_str()),
        text(incident.status.as_str()),
        optional(incident.dedup_key.as_deref().map(text)),
        Value::Integer(incident.event_count),
        time(incident.created_at),
        time(incident.updated_at),
        optional(incident.service_id.map(id)),
        Value::Text(incident.dedup_scope()),
        optional(policy.map(Value::Text)),
    ]
}

/// The values of [`EVENT_COLUMNS`].
fn event_values(event: &Event) -> [Value; 8] {
    [
        id(event.id),
        id(event.incident_id),
        text(&event.source),
        text(&event.summary),
        text(event.severity.as_str()),
        optional(event.dedup_key.as_deref().map(text)),
        Value::Text(event.payload.to_string()),
        time(event.received_at),
    ]
}

/// The values of [`ENTRY_COLUMNS`].
fn entry_values(entry: &NewTimelineEntry) -> [Value; 6] {
    [
        id(entry.id),
        id(entry.incident_id),
        time(entry.at),
        text(entry.kind().as_str()),
        text(&entry.actor),
        Value::Text(entry.detail.to_json().to_string()),
    ]
}

/// The values of [`ESCALATION_COLUMNS`].
fn escalation_values(escalation: &Escalation) -> [Value; 6] {
    [
        id(escalation.id),
        id(escalation.incident_id),
        Value::Integer(escalation.escalation_level.into()),
        text(escalation.status.as_str()),
        time(escalation.scheduled_at),
        time(escalation.created_at),
    ]
}

/// `insert into <table> (<columns>) values (?1, …, ?n)` for a `"<table> (<columns>)"`.
fn insert(table_and_columns: &str) -> String {
    let count = table_and_columns.matches(',').count() + 1;
    let placeholders: Vec<String> = (1..=count).map(|i| format!("?{i}")).collect();
    format!(
        "insert into {table_and_columns} values ({})",
        placeholders.join(", ")
    )
}

/// A row the direct connection returned, read as [`rows`] reads every row.
struct DirectRow<'r>(&'r rusqlite::Row<'r>);

impl DirectRow<'_> {
    fn get<T: rusqlite::types::FromSql>(&self, column: &str) -> Result<T> {
        Ok(self.0.get(column)?)
    }
}

impl Columns for DirectRow<'_> {
    fn text(&self, column: &str) -> Result<String> {
        self.get(column)
    }

    fn optional_text(&self, column: &str) -> Result<Option<String>> {
        self.get(column)
    }

    fn int(&self, column: &str) -> Result<i64> {
        self.get(column)
    }

    fn optional_int(&self, column: &str) -> Result<Option<i64>> {
        self.get(column)
    }

    fn small_int(&self, column: &str) -> Result<i32> {
        self.get(column)
    }

    fn flag(&self, column: &str) -> Result<bool> {
        self.get(column)
    }

    fn uuid(&self, column: &str) -> Result<Uuid> {
        self.optional_uuid(column)?
            .ok_or_else(|| StoreError::corrupt(column, "null"))
    }

    fn optional_uuid(&self, column: &str) -> Result<Option<Uuid>> {
        let text: Option<String> = self.get(column)?;
        text.map(|text| Uuid::parse_str(&text).map_err(|_| StoreError::corrupt(column, &text)))
            .transpose()
    }

    fn optional_timestamp(&self, column: &str) -> Result<Option<Timestamp>> {
        let millis: Option<i64> = self.get(column)?;
        Ok(millis.map(Timestamp::from_millis))
    }

    fn optional_json(&self, column: &str) -> Result<Option<serde_json::Value>> {
        let text: Option<String> = self.get(column)?;
        text.map(|text| serde_json::from_str(&text).map_err(|_| StoreError::corrupt(column, &text)))
            .transpose()
    }
}

impl From<rusqlite::Error> for StoreError {
    fn from(error: rusqlite::Error) -> Self {
        let class = match &error {
            rusqlite::Error::SqliteFailure(failure, _) => {
                classify_code(&failure.extended_code.to_string())
            }
            _ => ErrorClass::Internal,
        };
        class.store_error(error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_insert_has_one_placeholder_per_column() {
        assert_eq!(
            insert("t (a, b, c)"),
            "insert into t (a, b, c) values (?1, ?2, ?3)"
        );
    }

    fn failure(extended_code: i32) -> StoreError {
        rusqlite::Error::SqliteFailure(rusqlite::ffi::Error::new(extended_code), None).into()
    }

    /// The direct connection's errors say whether to retry as sqlx's do: a busy file may pass
    /// (and is not an outage), a repeated unique value is a duplicate, the rest is internal.
    #[test]
    fn errors_are_classified_like_the_writers() {
        let busy = failure(rusqlite::ffi::SQLITE_BUSY);
        assert!(matches!(busy, StoreError::Unavailable(_)), "{busy:?}");
        assert!(!busy.is_unreachable());
        let unique = failure(rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE);
        assert!(matches!(unique, StoreError::Duplicate(_)), "{unique:?}");
        let misuse = failure(rusqlite::ffi::SQLITE_MISUSE);
        assert!(matches!(misuse, StoreError::Internal(_)), "{misuse:?}");
    }
}
