//! The embedded backend's hot path: a batch of incidents that nothing can join, stored begin to
//! commit on the calling thread through a connection of its own (rusqlite), with statements
//! prepared once. sqlx's SQLite driver hands every statement to its connection's thread and back;
//! under load each hand-off waits for a turn on a busy machine, and a batch spent more time
//! waiting than writing (docs/PERFORMANCE.md, "Ingest, issue 10 concluded").
//!
//! This connection never writes alone: [`super::sqlite`] holds the single writer's pool
//! connection for the whole batch, so the file still has one writer at a time and no other
//! transaction can start between this one's reads and writes.

use std::path::Path;
use std::sync::Mutex;

use rusqlite::{params, Connection, TransactionBehavior};

use super::backend::Opened;
use super::sqlite::{classify_code, BUSY_TIMEOUT, ENTRY_COLUMNS, EVENT_COLUMNS, INCIDENT_COLUMNS};
use super::{ErrorClass, Result, StoreError};

/// The direct connection. Its mutex is only ever taken while the writer's pool connection is
/// held, so it is never contended.
pub struct Direct {
    connection: Mutex<Connection>,
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
            connection: Mutex::new(connection),
        })
    }

    /// Stores `opened` in one transaction and commits it, blocking this thread until it is on
    /// disk. The caller holds the single writer.
    pub fn store_opened(&self, opened: &Opened) -> Result<()> {
        let mut connection = self
            .connection
            .lock()
            .map_err(|_| StoreError::internal("the direct SQLite connection was poisoned"))?;
        let tx = connection.transaction_with_behavior(TransactionBehavior::Immediate)?;
        {
            let mut incidents = tx.prepare_cached(&insert(INCIDENT_COLUMNS))?;
            let mut events = tx.prepare_cached(&insert(EVENT_COLUMNS))?;
            let mut entries = tx.prepare_cached(&insert(ENTRY_COLUMNS))?;
            for ((incident, event), entry) in opened
                .incidents
                .iter()
                .zip(&opened.events)
                .zip(&opened.entries)
            {
                incidents.execute(params![
                    incident.id.to_string(),
                    incident.title,
                    incident.severity.as_str(),
                    incident.status.as_str(),
                    incident.dedup_key,
                    incident.event_count,
                    incident.created_at.as_millis(),
                    incident.updated_at.as_millis(),
                    incident.service_id.map(|id| id.to_string()),
                    incident.dedup_scope(),
                    Option::<String>::None,
                ])?;
                events.execute(params![
                    event.id.to_string(),
                    event.incident_id.to_string(),
                    event.source,
                    event.summary,
                    event.severity.as_str(),
                    event.dedup_key,
                    event.payload.to_string(),
                    event.received_at.as_millis(),
                ])?;
                entries.execute(params![
                    entry.id.to_string(),
                    entry.incident_id.to_string(),
                    entry.at.as_millis(),
                    entry.kind().as_str(),
                    entry.actor,
                    entry.detail.to_json().to_string(),
                ])?;
            }
        }
        tx.commit()?;
        Ok(())
    }
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

impl From<rusqlite::Error> for StoreError {
    fn from(error: rusqlite::Error) -> Self {
        let class = match &error {
            rusqlite::Error::SqliteFailure(failure, _) => {
                classify_code(&failure.extended_code.to_string())
            }
            _ => ErrorClass::Internal,
        };
        let error = std::sync::Arc::new(error);
        match class {
            ErrorClass::Transient => StoreError::Unavailable(error),
            ErrorClass::Conflict => StoreError::Conflict(error),
            ErrorClass::Duplicate => StoreError::Duplicate(error.to_string()),
            ErrorClass::Internal => StoreError::Internal(error),
        }
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
