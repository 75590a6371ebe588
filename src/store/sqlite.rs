//! The embedded backend: one SQLite file in WAL mode. It holds SQLite's statements, binds and
//! column reads; the rules are in [`super::changes`].
//!
//! Writes go through a pool of exactly **one** connection, so write transactions are serialized
//! in-process and never fail with `SQLITE_BUSY` on a read-to-write lock upgrade; reads use their
//! own pool and, thanks to WAL, never wait for a writer. With one writer the status a transition
//! reads cannot change before its compare-and-set, which is kept all the same as the guard the
//! SPEC asks for. `synchronous = FULL`: a `201` means the event is on disk.
//!
//! Ingest batches run on a second connection, [`super::sqlite_direct`], which writes only while
//! holding the writer pool's one connection.

use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow,
    SqliteSynchronous,
};
use sqlx::{QueryBuilder, Row, Sqlite};
use uuid::Uuid;

use super::backend::{AppendTx, Claimed, DueQuery, Opened, StatusChange, WriteTx};
use super::rows;
use super::shared::{Pools, Tx};
use super::sqlite_direct::{Direct, DirectTx};
use super::statements::{self, Dialect};
use super::{
    Backend, Backlog, ErrorClass, IncidentQuery, Page, Queries, Result, Scheduled, StoreError,
};
use crate::domain::{
    Escalation, EscalationPolicy, Incident, NewTimelineEntry, NewToken, TimelineEntry, Timestamp,
    Token,
};

/// How long a statement waits for a lock held by another process before giving up (503).
pub(super) const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a request waits for a pooled connection before the store reports itself unavailable.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(10);
/// Concurrent readers.
const READ_CONNECTIONS: u32 = 8;
/// At most this many rows go into one multi-row insert: with the widest rows (6 parameters),
/// far below SQLite's limit of 32,766 bound parameters.
const ROWS_PER_INSERT: usize = 256;

/// SQLite's primary result codes (the low byte of an extended code) that mean the database is
/// busy or out of reach for now, not that the statement is wrong.
const SQLITE_BUSY: i32 = 5;
const SQLITE_LOCKED: i32 = 6;
const SQLITE_IOERR: i32 = 10;
const SQLITE_FULL: i32 = 13;
const SQLITE_CANTOPEN: i32 = 14;
/// The extended code of a unique constraint's refusal.
const SQLITE_CONSTRAINT_UNIQUE: &str = "2067";

/// The columns of the inserts that both the multi-row statements here and the direct
/// connection's prepared ones ([`super::sqlite_direct`]) write.
pub(super) const ENTRY_COLUMNS: &str = "timeline (id, incident_id, at, kind, actor, detail)";
pub(super) const ESCALATION_COLUMNS: &str =
    "escalations (id, incident_id, escalation_level, status, scheduled_at, created_at)";

pub struct SqliteStore {
    writer: SqlitePool,
    reader: SqlitePool,
    /// The hot path's own connection, used only while `writer`'s connection is held.
    direct: Direct,
}

impl SqliteStore {
    pub async fn connect(url: &str) -> Result<Self> {
        let options = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            .busy_timeout(BUSY_TIMEOUT);
        // A connection to a local file cannot be lost, so it is not pinged before each use.
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .test_before_acquire(false)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_with(options.clone())
            .await?;
        let reader = SqlitePoolOptions::new()
            .max_connections(READ_CONNECTIONS)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_with(options.clone().read_only(true))
            .await?;
        let direct = Direct::open(options.get_filename())?;
        Ok(Self {
            writer,
            reader,
            direct,
        })
    }
}

impl Dialect for Sqlite {
    /// Hyphenated text.
    type Id = String;
    /// Integer milliseconds since the epoch.
    type Time = i64;
    /// Text.
    type Json = String;

    fn id(id: Uuid) -> String {
        id.to_string()
    }

    fn time(at: Timestamp) -> i64 {
        at.as_millis()
    }

    fn policy(policy: &EscalationPolicy) -> Result<String> {
        serde_json::to_string(policy).map_err(StoreError::internal)
    }

    /// The single writer runs one statement at a time.
    const SKIP_LOCKED: &'static str = "";
    const KEY_SHARE: &'static str = "";
    const FOR_UPDATE: &'static str = "";
    const ANNOUNCE_CATALOG_CHANGE: Option<&'static str> = None;

    fn placeholder(_: usize) -> String {
        "?".to_owned()
    }

    fn read_id(row: &SqliteRow, column: &str) -> Result<Uuid> {
        let text: String = row.try_get(column)?;
        Uuid::parse_str(&text).map_err(|_| StoreError::corrupt(column, &text))
    }

    fn read_optional_id(row: &SqliteRow, column: &str) -> Result<Option<Uuid>> {
        let text: Option<String> = row.try_get(column)?;
        text.map(|text| Uuid::parse_str(&text).map_err(|_| StoreError::corrupt(column, &text)))
            .transpose()
    }

    fn read_time(row: &SqliteRow, column: &str) -> Result<Option<Timestamp>> {
        let millis: Option<i64> = row.try_get(column)?;
        Ok(millis.map(Timestamp::from_millis))
    }

    fn read_json(row: &SqliteRow, column: &str) -> Result<Option<serde_json::Value>> {
        let text: Option<String> = row.try_get(column)?;
        text.map(|text| serde_json::from_str(&text).map_err(|_| StoreError::corrupt(column, &text)))
            .transpose()
    }
}

/// Classifies the code of an error SQLite returned: busy, locked (after the busy timeout), I/O
/// trouble, a full disk and a file that cannot be opened may pass.
pub(super) fn classify_code(code: &str) -> ErrorClass {
    let primary = code.parse::<i32>().map(|extended| extended & 0xff);
    match primary {
        Ok(SQLITE_BUSY | SQLITE_LOCKED | SQLITE_IOERR | SQLITE_FULL | SQLITE_CANTOPEN) => {
            ErrorClass::Transient
        }
        _ if code == SQLITE_CONSTRAINT_UNIQUE => ErrorClass::Duplicate,
        _ => ErrorClass::Internal,
    }
}

#[async_trait]
impl Queries for SqliteStore {
    async fn migrate(&self) -> Result<()> {
        sqlx::migrate!("src/store/migrations/sqlite")
            .run(&self.writer)
            .await?;
        Ok(())
    }

    async fn ping(&self) -> Result<()> {
        sqlx::query("select 1").execute(&self.reader).await?;
        Ok(())
    }

    fn blocks_while_ingesting(&self) -> bool {
        true
    }

    async fn installation_id(&self) -> Result<Uuid> {
        let row = statements::installation().fetch_one(&self.reader).await?;
        rows::installation_id(&row)
    }

    async fn incident(&self, id: Uuid) -> Result<Incident> {
        let row = statements::incident(id)
            .fetch_optional(&self.reader)
            .await?
            .ok_or(StoreError::NotFound)?;
        rows::incident(&row)
    }

    async fn incidents(&self, query: IncidentQuery) -> Result<Page<Incident>> {
        let found = statements::incidents(&query)
            .fetch_all(&self.reader)
            .await?;
        rows::page(&found, query.page_size())
    }

    async fn escalations(&self, incident_id: Uuid) -> Result<Vec<Escalation>> {
        let statement = statements::escalations_of(incident_id);
        let conn = self.reader.acquire().await?;
        let found = statements::rows_of_incident(conn, incident_id, statement).await?;
        found.iter().map(rows::escalation).collect()
    }

    async fn timeline(&self, incident_id: Uuid) -> Result<Vec<TimelineEntry>> {
        let statement = statements::timeline_of(incident_id);
        let conn = self.reader.acquire().await?;
        let found = statements::rows_of_incident(conn, incident_id, statement).await?;
        found.iter().map(rows::timeline_entry).collect()
    }

    async fn create_token(&self, token: NewToken) -> Result<Token> {
        let row = statements::create_token(&token)
            .fetch_one(&self.writer)
            .await?;
        rows::token(&row)
    }

    async fn tokens(&self) -> Result<Vec<Token>> {
        sqlx::query("select * from tokens order by id")
            .fetch_all(&self.reader)
            .await?
            .iter()
            .map(rows::token)
            .collect()
    }

    async fn token_by_hash(&self, secret_hash: &str) -> Result<Option<Token>> {
        let row = statements::token_by_hash(secret_hash)
            .fetch_optional(&self.reader)
            .await?;
        row.as_ref().map(rows::token).transpose()
    }

    async fn revoke_token(&self, id: Uuid, at: Timestamp) -> Result<Token> {
        let mut tx = self.writer.begin().await?;
        statements::keep_an_admin::<Sqlite>(&mut tx, id).await?;
        let row = sqlx::query(
            "update tokens set revoked_at = coalesce(revoked_at, $1) where id = $2 returning *",
        )
        .bind(at.as_millis())
        .bind(id.to_string())
        .fetch_optional(&mut *tx)
        .await?
        .ok_or(StoreError::NotFound)?;
        tx.commit().await?;
        rows::token(&row)
    }

    async fn next_due(&self) -> Result<Option<Timestamp>> {
        let due: Option<i64> = sqlx::query_scalar(
            "select min(scheduled_at) from escalations where status = 'PENDING'",
        )
        .fetch_one(&self.reader)
        .await?;
        Ok(due.map(Timestamp::from_millis))
    }

    async fn backlog(&self, now: Timestamp) -> Result<Backlog> {
        let (pending, overdue): (i64, i64) = sqlx::query_as(
            "select count(*), coalesce(sum(scheduled_at <= $1), 0)
             from escalations where status = 'PENDING'",
        )
        .bind(now.as_millis())
        .fetch_one(&self.reader)
        .await?;
        Ok(Backlog { pending, overdue })
    }

    async fn pending_page(&self, after: Option<Uuid>, limit: u32) -> Result<Vec<Scheduled>> {
        let found = sqlx::query(
            // The planner would take the status index and sort; this one is already in order.
            "select id, scheduled_at from escalations indexed by escalations_pending_id
             where status = 'PENDING' and ($1 is null or id > $1)
             order by id limit $2",
        )
        .bind(after.map(|id| id.to_string()))
        .bind(i64::from(limit))
        .fetch_all(&self.reader)
        .await?;
        found.iter().map(rows::scheduled).collect()
    }
}

#[async_trait]
impl Backend for SqliteStore {
    type Tx = SqliteTx;
    /// On the direct connection ([`super::sqlite_direct`]).
    type IngestTx = DirectTx;

    async fn begin(&self) -> Result<SqliteTx> {
        Ok(Tx(self.writer.begin().await?))
    }

    /// Holds the single writer, then begins on the direct connection.
    async fn begin_ingest(&self) -> Result<DirectTx> {
        let single_writer = self.writer.acquire().await?;
        self.direct.begin(single_writer).await
    }

    /// The three inserts of each event run on the direct connection, prepared once: no
    /// statement is handed to another thread.
    async fn store_opened(&self, opened: &Opened) -> Result<()> {
        let mut tx = self.begin_ingest().await?;
        tx.insert_opened(opened)?;
        tx.commit().await
    }
}

/// Reads from the read-only pool, writes through the single writer.
impl Pools for SqliteStore {
    type Db = Sqlite;

    fn reader(&self) -> &SqlitePool {
        &self.reader
    }

    fn writer(&self) -> &SqlitePool {
        &self.writer
    }
}

/// A write transaction on the single writer connection.
pub type SqliteTx = Tx<Sqlite>;

impl SqliteTx {
    /// Runs `push` on each slice of at most [`ROWS_PER_INSERT`] `rows`, one statement each.
    async fn insert_in_chunks<T>(
        &mut self,
        rows: &[T],
        push: fn(&mut QueryBuilder<'_, Sqlite>, &[T]),
    ) -> Result<()> {
        for chunk in rows.chunks(ROWS_PER_INSERT) {
            let mut insert = QueryBuilder::<Sqlite>::new("");
            push(&mut insert, chunk);
            insert.build().execute(&mut *self.0).await?;
        }
        Ok(())
    }
}

#[async_trait]
impl AppendTx for SqliteTx {
    async fn append_timeline(&mut self, entries: &[NewTimelineEntry]) -> Result<()> {
        self.insert_in_chunks(entries, push_entries).await
    }

    async fn insert_escalations(&mut self, escalations: &[Escalation]) -> Result<()> {
        self.insert_in_chunks(escalations, push_escalations).await
    }

    async fn commit(self) -> Result<()> {
        self.0.commit().await?;
        Ok(())
    }
}

#[async_trait]
impl WriteTx for SqliteTx {
    async fn lock_incident(&mut self, id: Uuid) -> Result<Option<Incident>> {
        // The single writer already holds every row: a plain read is the lock.
        let row = statements::incident(id)
            .fetch_optional(&mut *self.0)
            .await?;
        row.as_ref().map(rows::incident).transpose()
    }

    async fn change_status(&mut self, change: &StatusChange<'_>) -> Result<Option<Incident>> {
        let row = statements::change_status(change)?
            .fetch_optional(&mut *self.0)
            .await?;
        row.as_ref().map(rows::incident).transpose()
    }

    async fn cancel_pending(&mut self, incident: Uuid, at: Timestamp) -> Result<Vec<Escalation>> {
        let statement = statements::cancel_pending(incident, at);
        let found = statement.fetch_all(&mut *self.0).await?;
        found.iter().map(rows::escalation).collect()
    }

    async fn claim_due(&mut self, due: &DueQuery<'_>) -> Result<Vec<Claimed>> {
        let only = due
            .only
            .map(|ids| serde_json::to_string(&ids.iter().map(Uuid::to_string).collect::<Vec<_>>()))
            .transpose()
            .map_err(StoreError::internal)?;
        // Writing first takes SQLite's write lock at once, so another process sharing the file
        // cannot settle the same rows between this read and its update.
        let claimed = sqlx::query(
            "update escalations
             set status = case when (select status from incidents where id = escalations.incident_id) = 'ESCALATING'
                              then 'EXECUTED' else 'CANCELLED' end,
                 executed_at = case when (select status from incidents where id = escalations.incident_id) = 'ESCALATING'
                                    then $1 end,
                 cancelled_at = case when (select status from incidents where id = escalations.incident_id) = 'ESCALATING'
                                     then null else $1 end
             where id in (
                 select id from escalations
                 where status = 'PENDING' and scheduled_at <= $1
                   and ($3 is null or id in (select value from json_each($3)))
                 order by scheduled_at limit $2)
             returning *,
                 (select status from incidents where id = escalations.incident_id) as incident_status,
                 (select escalation_policy from incidents where id = escalations.incident_id) as policy",
        )
        .bind(due.now.as_millis())
        .bind(i64::from(due.limit))
        .bind(only)
        .fetch_all(&mut *self.0)
        .await?;
        claimed.iter().map(rows::claimed).collect()
    }

    async fn raise_levels(&mut self, levels: &[(Uuid, i32)], at: Timestamp) -> Result<()> {
        let raised: Vec<(String, i32)> = levels
            .iter()
            .map(|(id, level)| (id.to_string(), *level))
            .collect();
        sqlx::query(
            "update incidents set escalation_level = max(incidents.escalation_level, raised.level),
                 updated_at = $1
             from (select json_extract(value, '$[0]') as id, max(json_extract(value, '$[1]')) as level
                   from json_each($2) group by 1) as raised
             where incidents.id = raised.id",
        )
        .bind(at.as_millis())
        .bind(serde_json::to_string(&raised).map_err(StoreError::internal)?)
        .execute(&mut *self.0)
        .await?;
        Ok(())
    }
}

/// Appends `insert into timeline … values …` for `entries` to `query`.
fn push_entries(query: &mut QueryBuilder<'_, Sqlite>, entries: &[NewTimelineEntry]) {
    query.push(format_args!("insert into {ENTRY_COLUMNS} "));
    query.push_values(entries, |mut row, entry| {
        row.push_bind(entry.id.to_string())
            .push_bind(entry.incident_id.to_string())
            .push_bind(entry.at.as_millis())
            .push_bind(entry.kind().as_str())
            .push_bind(entry.actor.clone())
            .push_bind(entry.detail.to_json().to_string());
    });
}

/// Appends `insert into escalations … values …` for `escalations` to `query`.
fn push_escalations(query: &mut QueryBuilder<'_, Sqlite>, escalations: &[Escalation]) {
    query.push(format_args!("insert into {ESCALATION_COLUMNS} "));
    query.push_values(escalations, |mut row, escalation| {
        row.push_bind(escalation.id.to_string())
            .push_bind(escalation.incident_id.to_string())
            .push_bind(escalation.escalation_level)
            .push_bind(escalation.status.as_str())
            .push_bind(escalation.scheduled_at.as_millis())
            .push_bind(escalation.created_at.as_millis());
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn result_codes_are_classified_by_their_primary_code() {
        let transient = |code| matches!(classify_code(code), ErrorClass::Transient);
        // SQLITE_BUSY, SQLITE_BUSY_SNAPSHOT (517), SQLITE_LOCKED, SQLITE_IOERR_WRITE (778),
        // SQLITE_FULL, SQLITE_CANTOPEN.
        for code in ["5", "517", "6", "778", "13", "14"] {
            assert!(transient(code), "{code}");
        }
        // SQLITE_CONSTRAINT_UNIQUE (2067), SQLITE_ERROR, not a number.
        for code in ["2067", "1", "x"] {
            assert!(!transient(code), "{code}");
        }
    }
}
