//! The production backend: PostgreSQL, shared by several instances. It holds PostgreSQL's
//! statements, binds and column reads; the rules are in [`super::changes`].
//!
//! Every write runs in one transaction on a pooled connection at `read committed`.
//! - A transition reads the incident with `select … for update`, so concurrent transitions of one
//!   incident queue on its row lock and each plans from the status the previous one committed; the
//!   update keeps the compare-and-set on that status all the same.
//! - Ingest is one `insert … on conflict` against the partial unique index on live `dedup_key`s:
//!   concurrent events with one key either open the incident or wait for its row lock and join it,
//!   never fail and never open two. One that waits on an incident being resolved retries the insert
//!   and opens a new incident.
//! - Claiming due escalations is one statement: a `select … for update of e, i skip locked` that
//!   locks each escalation *and* its incident up front and skips rows another transaction holds,
//!   and the `update` that marks them. It never waits for a lock, so it cannot deadlock with a
//!   transition, and concurrent workers claim disjoint sets: each escalation is settled once. The
//!   rest of a batch is a fixed handful of set-based statements (`unnest` arrays), however many
//!   rows it holds.
//! - A transaction that schedules escalations notifies [`ESCALATION_CHANNEL`] once, with the
//!   earliest due time it scheduled; PostgreSQL delivers it at commit, so a listener that wakes
//!   always finds the rows.
//!
//! A transition takes row locks on the incident first, then on its escalations; the worker takes
//! both at once and never waits for either.

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::postgres::{PgPool, PgPoolOptions, PgRow};
use sqlx::types::Json;
use sqlx::{Postgres, Row};
use uuid::Uuid;

use super::backend::{
    AppendTx, Claimed, DueQuery, IngestTx, Opened, Opening, StatusChange, WriteTx,
};
use super::rows;
use super::shared::{Pools, Tx};
use super::statements::{self, Dialect};
use super::{
    Backend, Backlog, ErrorClass, IncidentQuery, Page, Queries, Result, Scheduled, StoreError,
    JOIN_LIVE_INCIDENTS,
};
use crate::domain::{
    Escalation, EscalationPolicy, Event, Incident, NewTimelineEntry, NewToken, TimelineEntry,
    Timestamp, Token,
};

/// Connections one instance holds at most; several instances share the server's limit.
const MAX_CONNECTIONS: u32 = 16;
/// How long a request waits for a pooled connection (or a new one to open) before the store
/// reports itself unavailable (503): a database that is away is noticed within this.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(1);

/// The channel every transaction that schedules escalations notifies, with the earliest due time
/// it scheduled as epoch milliseconds in text: workers of every instance listen to it.
pub const ESCALATION_CHANNEL: &str = "klaxon_escalations";
/// The channel every token revocation is announced on (payload: the token's id), so that each
/// instance's token cache forgets it at once.
pub const TOKEN_CHANNEL: &str = "klaxon_tokens";
/// The channel every change of a service, policy or integration key is announced on (no
/// payload), so that each instance forgets where integration keys route. Spelled out in
/// [`Dialect::ANNOUNCE_CATALOG_CHANGE`] too.
pub const CATALOG_CHANNEL: &str = "klaxon_catalog";

/// SQLSTATEs of a transaction that lost to a concurrent one and may simply run again.
const SERIALIZATION_FAILURE: &str = "40001";
const DEADLOCK_DETECTED: &str = "40P01";
/// A unique constraint refused the row.
const UNIQUE_VIOLATION: &str = "23505";
/// SQLSTATEs (and classes, by their first two characters) that mean the database is out of
/// reach or refusing work for now.
const CONNECTION_EXCEPTION_CLASS: &str = "08";
const INSUFFICIENT_RESOURCES_CLASS: &str = "53";
/// 57P01..57P05: shutting down, crashed, cannot connect now, idle session timeout.
const OPERATOR_INTERVENTION_PREFIX: &str = "57P";
const QUERY_CANCELED: &str = "57014";
const INVALID_CATALOG_NAME: &str = "3D000";
/// A standby after failover answers writes with this.
const READ_ONLY_SQL_TRANSACTION: &str = "25006";

pub struct PostgresStore {
    pool: PgPool,
}

impl PostgresStore {
    /// A pool connected now: fails if the database cannot be reached.
    pub async fn connect(url: &str) -> Result<Self> {
        let pool = Self::pool_options().connect(url).await?;
        Ok(Self { pool })
    }

    /// A pool that connects on first use: only a malformed URL fails.
    pub fn connect_lazy(url: &str) -> Result<Self> {
        let pool = Self::pool_options().connect_lazy(url)?;
        Ok(Self { pool })
    }

    fn pool_options() -> PgPoolOptions {
        PgPoolOptions::new()
            .max_connections(MAX_CONNECTIONS)
            .acquire_timeout(ACQUIRE_TIMEOUT)
    }
}

impl Dialect for Postgres {
    type Id = Uuid;
    type Time = DateTime<Utc>;
    type Json = Json<EscalationPolicy>;

    fn id(id: Uuid) -> Uuid {
        id
    }

    fn time(at: Timestamp) -> DateTime<Utc> {
        at.as_datetime()
    }

    fn policy(policy: &EscalationPolicy) -> Result<Json<EscalationPolicy>> {
        Ok(Json(policy.clone()))
    }

    /// Concurrent dispatchers take disjoint rows and never wait for each other.
    const SKIP_LOCKED: &'static str = "for update skip locked";
    /// What inserting a timeline entry (its foreign key) takes on the incident anyway.
    const KEY_SHARE: &'static str = "for key share";
    const FOR_UPDATE: &'static str = "for update";
    const ANNOUNCE_CATALOG_CHANGE: Option<&'static str> =
        Some("select pg_notify('klaxon_catalog', '')");

    fn placeholder(n: usize) -> String {
        format!("${n}")
    }

    fn read_id(row: &PgRow, column: &str) -> Result<Uuid> {
        Ok(row.try_get(column)?)
    }

    fn read_optional_id(row: &PgRow, column: &str) -> Result<Option<Uuid>> {
        Ok(row.try_get(column)?)
    }

    fn read_time(row: &PgRow, column: &str) -> Result<Option<Timestamp>> {
        let at: Option<DateTime<Utc>> = row.try_get(column)?;
        Ok(at.map(Timestamp::from_datetime))
    }

    fn read_json(row: &PgRow, column: &str) -> Result<Option<serde_json::Value>> {
        Ok(row.try_get(column)?)
    }
}

/// Classifies a SQLSTATE.
pub(super) fn classify_code(code: &str) -> ErrorClass {
    if matches!(code, SERIALIZATION_FAILURE | DEADLOCK_DETECTED) {
        ErrorClass::Conflict
    } else if is_unreachable_code(code)
        || code.starts_with(INSUFFICIENT_RESOURCES_CLASS)
        || matches!(code, QUERY_CANCELED | READ_ONLY_SQL_TRANSACTION)
    {
        ErrorClass::Transient
    } else if code == UNIQUE_VIOLATION {
        ErrorClass::Duplicate
    } else {
        ErrorClass::Internal
    }
}

/// SQLSTATEs that mean the database cannot be reached at all: the connection failed or was lost,
/// the server is shutting down or refusing connections, the database is gone.
pub(super) fn is_unreachable_code(code: &str) -> bool {
    code.starts_with(CONNECTION_EXCEPTION_CLASS)
        || code.starts_with(OPERATOR_INTERVENTION_PREFIX)
        || code == INVALID_CATALOG_NAME
}

#[async_trait]
impl Queries for PostgresStore {
    async fn migrate(&self) -> Result<()> {
        sqlx::migrate!("src/store/migrations/postgres")
            .run(&self.pool)
            .await?;
        Ok(())
    }

    async fn ping(&self) -> Result<()> {
        sqlx::query("select 1").execute(&self.pool).await?;
        Ok(())
    }

    async fn installation_id(&self) -> Result<Uuid> {
        let row = statements::installation().fetch_one(&self.pool).await?;
        rows::installation_id(&row)
    }

    async fn incident(&self, id: Uuid) -> Result<Incident> {
        let row = statements::incident(id)
            .fetch_optional(&self.pool)
            .await?
            .ok_or(StoreError::NotFound)?;
        rows::incident(&row)
    }

    async fn incidents(&self, query: IncidentQuery) -> Result<Page<Incident>> {
        let found = statements::incidents(&query).fetch_all(&self.pool).await?;
        rows::page(&found, query.page_size())
    }

    async fn escalations(&self, incident_id: Uuid) -> Result<Vec<Escalation>> {
        let statement = statements::escalations_of(incident_id);
        let conn = self.pool.acquire().await?;
        let found = statements::rows_of_incident(conn, incident_id, statement).await?;
        found.iter().map(rows::escalation).collect()
    }

    async fn timeline(&self, incident_id: Uuid) -> Result<Vec<TimelineEntry>> {
        let statement = statements::timeline_of(incident_id);
        let conn = self.pool.acquire().await?;
        let found = statements::rows_of_incident(conn, incident_id, statement).await?;
        found.iter().map(rows::timeline_entry).collect()
    }

    async fn create_token(&self, token: NewToken) -> Result<Token> {
        let row = statements::create_token(&token)
            .fetch_one(&self.pool)
            .await?;
        rows::token(&row)
    }

    async fn tokens(&self) -> Result<Vec<Token>> {
        sqlx::query("select * from tokens order by id")
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(rows::token)
            .collect()
    }

    async fn token_by_hash(&self, secret_hash: &str) -> Result<Option<Token>> {
        let row = statements::token_by_hash(secret_hash)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(rows::token).transpose()
    }

    async fn revoke_token(&self, id: Uuid, at: Timestamp) -> Result<Token> {
        let mut tx = self.pool.begin().await?;
        statements::keep_an_admin::<Postgres>(&mut tx, id).await?;
        // The notification is delivered on commit, to every instance's token cache.
        let row = sqlx::query(
            "with revoked as (
                 update tokens set revoked_at = coalesce(revoked_at, $1) where id = $2 returning *
             )
             select revoked.*, pg_notify($3, revoked.id::text) from revoked",
        )
        .bind(at.as_datetime())
        .bind(id)
        .bind(TOKEN_CHANNEL)
        .fetch_optional(&mut *tx)
        .await?
        .ok_or(StoreError::NotFound)?;
        tx.commit().await?;
        rows::token(&row)
    }

    async fn next_due(&self) -> Result<Option<Timestamp>> {
        let due: Option<DateTime<Utc>> = sqlx::query_scalar(
            "select min(scheduled_at) from escalations where status = 'PENDING'",
        )
        .fetch_one(&self.pool)
        .await?;
        Ok(due.map(Timestamp::from_datetime))
    }

    async fn backlog(&self, now: Timestamp) -> Result<Backlog> {
        let (pending, overdue): (i64, i64) = sqlx::query_as(
            "select count(*), count(*) filter (where scheduled_at <= $1)
             from escalations where status = 'PENDING'",
        )
        .bind(now.as_datetime())
        .fetch_one(&self.pool)
        .await?;
        Ok(Backlog { pending, overdue })
    }

    async fn pending_page(&self, after: Option<Uuid>, limit: u32) -> Result<Vec<Scheduled>> {
        // The nil id sorts before every other, and keeps `id > $1` an index condition.
        let found = sqlx::query(
            "select id, scheduled_at from escalations
             where status = 'PENDING' and id > $1
             order by id limit $2",
        )
        .bind(after.unwrap_or(Uuid::nil()))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        found.iter().map(rows::scheduled).collect()
    }
}

#[async_trait]
impl Backend for PostgresStore {
    type Tx = PgTx;
    type IngestTx = PgTx;

    async fn begin(&self) -> Result<PgTx> {
        Ok(Tx(self.pool.begin().await?))
    }

    async fn begin_ingest(&self) -> Result<PgTx> {
        self.begin().await
    }

    /// One statement (its own transaction) of three inserts in data-modifying CTEs.
    async fn store_opened(&self, opened: &Opened) -> Result<()> {
        let incident_columns = IncidentColumns::of(opened.incidents.iter());
        let event_columns = EventColumns::of(&opened.events);
        let entry_columns = EntryColumns::of(&opened.entries);
        sqlx::query(
            "with opened as (
                 insert into incidents (id, title, severity, status, dedup_key, event_count, created_at, updated_at, service_id, dedup_scope)
                 select * from unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[], $6::bigint[], $7::timestamptz[], $8::timestamptz[], $23::uuid[], $24::text[])
             ), stored as (
                 insert into events (id, incident_id, source, summary, severity, dedup_key, payload, received_at)
                 select * from unnest($9::uuid[], $10::uuid[], $11::text[], $12::text[], $13::text[], $14::text[], $15::jsonb[], $16::timestamptz[])
             )
             insert into timeline (id, incident_id, at, kind, actor, detail)
             select id, incident_id, at, kind, actor, detail
             from unnest($17::uuid[], $18::uuid[], $19::timestamptz[], $20::text[], $21::text[], $22::jsonb[])
                 with ordinality as t (id, incident_id, at, kind, actor, detail, n)
             order by n",
        )
        .bind(incident_columns.id)
        .bind(incident_columns.title)
        .bind(incident_columns.severity)
        .bind(incident_columns.status)
        .bind(incident_columns.dedup_key)
        .bind(incident_columns.event_count)
        .bind(incident_columns.created_at)
        .bind(incident_columns.updated_at)
        .bind(event_columns.id)
        .bind(event_columns.incident_id)
        .bind(event_columns.source)
        .bind(event_columns.summary)
        .bind(event_columns.severity)
        .bind(event_columns.dedup_key)
        .bind(event_columns.payload)
        .bind(event_columns.received_at)
        .bind(entry_columns.id)
        .bind(entry_columns.incident_id)
        .bind(entry_columns.at)
        .bind(entry_columns.kind)
        .bind(entry_columns.actor)
        .bind(entry_columns.detail)
        .bind(incident_columns.service_id)
        .bind(incident_columns.dedup_scope)
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}

/// One pool for reads and writes.
impl Pools for PostgresStore {
    type Db = Postgres;

    fn writer(&self) -> &PgPool {
        &self.pool
    }
}

/// A write transaction on a pooled connection.
pub type PgTx = Tx<Postgres>;

impl PgTx {
    /// Inserts `incidents` in one statement, in their order, followed by `then` (an `on conflict`
    /// clause, or nothing); returns the rows the statement returns.
    async fn insert_incident_rows(
        &mut self,
        incidents: &[Opening],
        then: &str,
    ) -> Result<Vec<PgRow>> {
        let columns = IncidentColumns::of(incidents.iter().map(|opening| &opening.incident));
        let policies: Vec<Option<Json<EscalationPolicy>>> = incidents
            .iter()
            .map(|opening| opening.policy.as_deref().map(|p| Json(p.clone())))
            .collect();
        let statement = format!(
            "insert into incidents (id, title, severity, status, dedup_key, event_count, created_at, updated_at, service_id, dedup_scope, escalation_policy)
             select id, title, severity, status, dedup_key, event_count, created_at, updated_at, service_id, dedup_scope, escalation_policy
             from unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[], $6::bigint[], $7::timestamptz[], $8::timestamptz[], $9::uuid[], $10::text[], $11::jsonb[])
                 with ordinality as t (id, title, severity, status, dedup_key, event_count, created_at, updated_at, service_id, dedup_scope, escalation_policy, n)
             order by n{then}"
        );
        Ok(sqlx::query(&statement)
            .bind(columns.id)
            .bind(columns.title)
            .bind(columns.severity)
            .bind(columns.status)
            .bind(columns.dedup_key)
            .bind(columns.event_count)
            .bind(columns.created_at)
            .bind(columns.updated_at)
            .bind(columns.service_id)
            .bind(columns.dedup_scope)
            .bind(policies)
            .fetch_all(&mut *self.0)
            .await?)
    }
}

#[async_trait]
impl AppendTx for PgTx {
    async fn append_timeline(&mut self, entries: &[NewTimelineEntry]) -> Result<()> {
        if entries.is_empty() {
            return Ok(());
        }
        let columns = EntryColumns::of(entries);
        sqlx::query(
            "insert into timeline (id, incident_id, at, kind, actor, detail)
             select id, incident_id, at, kind, actor, detail
             from unnest($1::uuid[], $2::uuid[], $3::timestamptz[], $4::text[], $5::text[], $6::jsonb[])
                 with ordinality as t (id, incident_id, at, kind, actor, detail, n)
             order by n",
        )
        .bind(columns.id)
        .bind(columns.incident_id)
        .bind(columns.at)
        .bind(columns.kind)
        .bind(columns.actor)
        .bind(columns.detail)
        .execute(&mut *self.0)
        .await?;
        Ok(())
    }

    async fn insert_escalations(&mut self, escalations: &[Escalation]) -> Result<()> {
        let Some(earliest) = escalations.iter().map(|e| e.scheduled_at).min() else {
            return Ok(());
        };
        sqlx::query(
            "with inserted as (
                 insert into escalations (id, incident_id, escalation_level, status, scheduled_at, created_at)
                 select * from unnest($1::uuid[], $2::uuid[], $3::int[], $4::text[], $5::timestamptz[], $6::timestamptz[])
             )
             select pg_notify($7, $8)",
        )
        .bind(escalations.iter().map(|e| e.id).collect::<Vec<_>>())
        .bind(escalations.iter().map(|e| e.incident_id).collect::<Vec<_>>())
        .bind(escalations.iter().map(|e| e.escalation_level).collect::<Vec<_>>())
        .bind(escalations.iter().map(|e| e.status.as_str()).collect::<Vec<_>>())
        .bind(escalations.iter().map(|e| e.scheduled_at.as_datetime()).collect::<Vec<_>>())
        .bind(escalations.iter().map(|e| e.created_at.as_datetime()).collect::<Vec<_>>())
        .bind(ESCALATION_CHANNEL)
        .bind(earliest.as_millis().to_string())
        .execute(&mut *self.0)
        .await?;
        Ok(())
    }

    async fn commit(self) -> Result<()> {
        self.0.commit().await?;
        Ok(())
    }
}

#[async_trait]
impl IngestTx for PgTx {
    async fn insert_incidents(&mut self, incidents: &[Opening]) -> Result<()> {
        self.insert_incident_rows(incidents, "").await?;
        Ok(())
    }

    async fn upsert_incidents(&mut self, incidents: &[Opening]) -> Result<Vec<Incident>> {
        self.insert_incident_rows(incidents, &JOIN_LIVE_INCIDENTS)
            .await?
            .iter()
            .map(rows::incident)
            .collect()
    }

    async fn insert_events(&mut self, events: &[Event]) -> Result<()> {
        let columns = EventColumns::of(events);
        sqlx::query(
            "insert into events (id, incident_id, source, summary, severity, dedup_key, payload, received_at)
             select * from unnest($1::uuid[], $2::uuid[], $3::text[], $4::text[], $5::text[], $6::text[], $7::jsonb[], $8::timestamptz[])",
        )
        .bind(columns.id)
        .bind(columns.incident_id)
        .bind(columns.source)
        .bind(columns.summary)
        .bind(columns.severity)
        .bind(columns.dedup_key)
        .bind(columns.payload)
        .bind(columns.received_at)
        .execute(&mut *self.0)
        .await?;
        Ok(())
    }
}

#[async_trait]
impl WriteTx for PgTx {
    async fn lock_incident(&mut self, id: Uuid) -> Result<Option<Incident>> {
        let row = sqlx::query("select * from incidents where id = $1 for update")
            .bind(id)
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
        // A fixed fragment, not a value: without `only` the condition is left out, so the plan
        // walks the due index instead of testing a null array.
        let only_filter = if due.only.is_some() {
            "and e.id = any($3)"
        } else {
            ""
        };
        // Locking the incident with its escalation, both skip-locked, is what keeps the worker
        // from ever waiting: a row whose incident a transition holds is skipped, not waited for
        // (and the transition cancels it anyway). The update finds the claimed rows by id, an
        // index scan whatever the batch size.
        let statement = format!(
            "with claimed as (
                 select e.id, i.status as incident_status, i.escalation_policy as policy
                 from escalations e join incidents i on i.id = e.incident_id
                 where e.status = 'PENDING' and e.scheduled_at <= $1 {only_filter}
                 order by e.scheduled_at
                 limit $2
                 for update of e, i skip locked
             )
             update escalations e
             set status = case when c.incident_status = 'ESCALATING' then 'EXECUTED' else 'CANCELLED' end,
                 executed_at = case when c.incident_status = 'ESCALATING' then $1 end,
                 cancelled_at = case when c.incident_status = 'ESCALATING' then null else $1 end
             from claimed c
             where e.id = c.id and e.id = any(array(select id from claimed))
             returning e.*, c.incident_status, c.policy"
        );
        let mut query = sqlx::query(&statement)
            .bind(due.now.as_datetime())
            .bind(i64::from(due.limit));
        if let Some(ids) = due.only {
            query = query.bind(ids);
        }
        query
            .fetch_all(&mut *self.0)
            .await?
            .iter()
            .map(rows::claimed)
            .collect()
    }

    async fn raise_levels(&mut self, levels: &[(Uuid, i32)], at: Timestamp) -> Result<()> {
        let (ids, raised): (Vec<Uuid>, Vec<i32>) = levels.iter().copied().unzip();
        sqlx::query(
            "update incidents i
             set escalation_level = greatest(i.escalation_level, r.level), updated_at = $3
             from (select id, max(level) as level
                   from unnest($1::uuid[], $2::int[]) as r (id, level) group by id) r
             where i.id = r.id",
        )
        .bind(ids)
        .bind(raised)
        .bind(at.as_datetime())
        .execute(&mut *self.0)
        .await?;
        Ok(())
    }
}

/// Incidents as one array per column, for `unnest`.
struct IncidentColumns {
    id: Vec<Uuid>,
    title: Vec<String>,
    severity: Vec<&'static str>,
    status: Vec<&'static str>,
    dedup_key: Vec<Option<String>>,
    event_count: Vec<i64>,
    created_at: Vec<DateTime<Utc>>,
    updated_at: Vec<DateTime<Utc>>,
    service_id: Vec<Option<Uuid>>,
    dedup_scope: Vec<String>,
}

impl IncidentColumns {
    fn of<'i>(incidents: impl Iterator<Item = &'i Incident> + Clone) -> Self {
        Self {
            id: incidents.clone().map(|i| i.id).collect(),
            title: incidents.clone().map(|i| i.title.clone()).collect(),
            severity: incidents.clone().map(|i| i.severity.as_str()).collect(),
            status: incidents.clone().map(|i| i.status.as_str()).collect(),
            dedup_key: incidents.clone().map(|i| i.dedup_key.clone()).collect(),
            event_count: incidents.clone().map(|i| i.event_count).collect(),
            created_at: incidents
                .clone()
                .map(|i| i.created_at.as_datetime())
                .collect(),
            updated_at: incidents
                .clone()
                .map(|i| i.updated_at.as_datetime())
                .collect(),
            service_id: incidents.clone().map(|i| i.service_id).collect(),
            dedup_scope: incidents.clone().map(Incident::dedup_scope).collect(),
        }
    }
}

/// Events as one array per column, for `unnest`.
struct EventColumns {
    id: Vec<Uuid>,
    incident_id: Vec<Uuid>,
    source: Vec<String>,
    summary: Vec<String>,
    severity: Vec<&'static str>,
    dedup_key: Vec<Option<String>>,
    payload: Vec<serde_json::Value>,
    received_at: Vec<DateTime<Utc>>,
}

impl EventColumns {
    fn of(events: &[Event]) -> Self {
        Self {
            id: events.iter().map(|e| e.id).collect(),
            incident_id: events.iter().map(|e| e.incident_id).collect(),
            source: events.iter().map(|e| e.source.clone()).collect(),
            summary: events.iter().map(|e| e.summary.clone()).collect(),
            severity: events.iter().map(|e| e.severity.as_str()).collect(),
            dedup_key: events.iter().map(|e| e.dedup_key.clone()).collect(),
            payload: events.iter().map(|e| e.payload.clone()).collect(),
            received_at: events.iter().map(|e| e.received_at.as_datetime()).collect(),
        }
    }
}

/// Timeline entries as one array per column, for `unnest`.
struct EntryColumns {
    id: Vec<Uuid>,
    incident_id: Vec<Uuid>,
    at: Vec<DateTime<Utc>>,
    kind: Vec<&'static str>,
    actor: Vec<String>,
    detail: Vec<serde_json::Value>,
}

impl EntryColumns {
    fn of(entries: &[NewTimelineEntry]) -> Self {
        Self {
            id: entries.iter().map(|e| e.id).collect(),
            incident_id: entries.iter().map(|e| e.incident_id).collect(),
            at: entries.iter().map(|e| e.at.as_datetime()).collect(),
            kind: entries.iter().map(|e| e.kind().as_str()).collect(),
            actor: entries.iter().map(|e| e.actor.clone()).collect(),
            detail: entries.iter().map(|e| e.detail.to_json()).collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlstates_are_classified() {
        let class = |code| match classify_code(code) {
            ErrorClass::Transient => "transient",
            ErrorClass::Conflict => "conflict",
            ErrorClass::Duplicate => "duplicate",
            ErrorClass::Internal => "internal",
        };
        for code in ["40001", "40P01"] {
            assert_eq!(class(code), "conflict", "{code}");
        }
        for code in ["08006", "53300", "57P01", "57014", "3D000", "25006"] {
            assert_eq!(class(code), "transient", "{code}");
        }
        assert_eq!(class("23505"), "duplicate");
        for code in ["23503", "22P02", "42P01"] {
            assert_eq!(class(code), "internal", "{code}");
        }
    }
}
