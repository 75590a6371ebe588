//! Storage: the [`Store`] trait and its two backends, [`sqlite`] (the embedded default) and
//! [`postgres`] (production, several instances). Both pass the same conformance suite
//! (`tests/store_conformance.rs`).
//!
//! Promises every backend keeps:
//! - Each method that writes commits everything it writes in **one transaction**: the state change,
//!   its side effects (escalations scheduled or cancelled) and its timeline entries (SPEC §6.2).
//! - A transition is a **compare-and-set** on the status it read: of concurrent conflicting actions
//!   exactly one wins, the others get [`StoreError::InvalidTransition`].
//! - Nothing is deleted (SPEC §6.3): there is no method that deletes.

pub mod postgres;
pub mod sqlite;

use std::sync::Arc;

use async_trait::async_trait;
use uuid::Uuid;

use crate::domain::{
    Action, Escalation, EscalationPolicy, Event, Incident, IncidentStatus, InvalidTransition,
    NewEvent, NewToken, TimelineEntry, Timestamp, Token,
};

/// The most incidents one page of `GET /incidents` may hold.
pub const MAX_PAGE_SIZE: u32 = 200;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("not found")]
    NotFound,
    #[error(transparent)]
    InvalidTransition(#[from] InvalidTransition),
    /// The database cannot be reached or is refusing work; retrying later may succeed (HTTP 503).
    #[error("database unavailable: {0}")]
    Unavailable(#[source] sqlx::Error),
    /// Anything else: a bug or corrupt data. Logged, never shown to clients (HTTP 500).
    #[error("database error: {0}")]
    Internal(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl StoreError {
    pub fn internal(error: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        Self::Internal(error.into())
    }

    /// A value read back from the database that does not parse: data written by something else.
    fn corrupt(what: &str, value: &str) -> Self {
        Self::internal(format!("stored {what} {value:?} is not valid"))
    }
}

/// What `POST /message` produced.
#[derive(Debug, Clone)]
pub struct Ingested {
    pub event: Event,
    pub incident: Incident,
    /// The event joined an existing incident through its `dedup_key`.
    pub deduplicated: bool,
}

/// A request to move an incident through the state machine.
#[derive(Debug, Clone)]
pub struct TransitionRequest {
    pub incident_id: Uuid,
    pub action: Action,
    pub actor: String,
    pub note: Option<String>,
    pub at: Timestamp,
    /// The policy an `escalate` snapshots onto the incident and schedules level 1 of.
    pub policy: Arc<EscalationPolicy>,
}

#[derive(Debug, Clone, Default)]
pub struct IncidentQuery {
    pub status: Option<IncidentStatus>,
    /// Page size, taken within 1..=[`MAX_PAGE_SIZE`].
    pub limit: u32,
    /// Only incidents older than this one (ids are UUIDv7, so they sort by creation).
    pub before: Option<Uuid>,
}

impl IncidentQuery {
    pub fn page_size(&self) -> u32 {
        self.limit.clamp(1, MAX_PAGE_SIZE)
    }
}

#[derive(Debug, Clone)]
pub struct Page<T> {
    pub items: Vec<T>,
    /// The id to pass as `before` for the next page, if there may be one.
    pub next: Option<Uuid>,
}

#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Applies this backend's embedded migrations that have not run yet.
    async fn migrate(&self) -> Result<(), StoreError>;

    /// Answers when the database can be reached.
    async fn ping(&self) -> Result<(), StoreError>;

    /// Stores `event`, opening a new `OPEN` incident, or joining the non-terminal incident that
    /// has the same `dedup_key`.
    async fn ingest(&self, event: NewEvent) -> Result<Ingested, StoreError>;

    async fn incident(&self, id: Uuid) -> Result<Incident, StoreError>;

    /// Newest first.
    async fn incidents(&self, query: IncidentQuery) -> Result<Page<Incident>, StoreError>;

    /// Applies the state machine (SPEC §3) and its side effects.
    async fn transition(&self, request: TransitionRequest)
        -> Result<TransitionOutcome, StoreError>;

    /// The escalations of an incident by level, then creation; `NotFound` if there is no incident.
    async fn escalations(&self, incident_id: Uuid) -> Result<Vec<Escalation>, StoreError>;

    /// Oldest first; `NotFound` if there is no incident.
    async fn timeline(&self, incident_id: Uuid) -> Result<Vec<TimelineEntry>, StoreError>;

    async fn create_token(&self, token: NewToken) -> Result<Token, StoreError>;

    /// Oldest first, revoked ones included.
    async fn tokens(&self) -> Result<Vec<Token>, StoreError>;

    /// The token whose secret hashes to `secret_hash`, revoked or not.
    async fn token_by_hash(&self, secret_hash: &str) -> Result<Option<Token>, StoreError>;

    /// Marks the token revoked (once; revoking again keeps the first time).
    async fn revoke_token(&self, id: Uuid, at: Timestamp) -> Result<Token, StoreError>;

    /// Claims up to `limit` `PENDING` escalations due at `now` (earliest first; only those in
    /// `only`, when given) and settles each in one transaction: `CANCELLED` if its incident is no
    /// longer `ESCALATING`, otherwise `EXECUTED` at `now`, with the incident's `escalation_level`
    /// raised and the next level of its policy snapshot scheduled at `now` + that level's delay.
    /// Rows another worker holds are skipped, never waited for, so concurrent workers claim
    /// disjoint sets and each escalation is settled once.
    async fn settle_due(
        &self,
        now: Timestamp,
        limit: u32,
        only: Option<&[Uuid]>,
    ) -> Result<Vec<Settled>, StoreError>;

    /// When the earliest `PENDING` escalation is due.
    async fn next_due(&self) -> Result<Option<Timestamp>, StoreError>;

    /// How many escalations are `PENDING`, and how many of those are due at `now`.
    async fn backlog(&self, now: Timestamp) -> Result<Backlog, StoreError>;

    /// `PENDING` escalations ordered by id, after `after`: the Redis index is rebuilt from these.
    async fn pending_page(
        &self,
        after: Option<Uuid>,
        limit: u32,
    ) -> Result<Vec<Scheduled>, StoreError>;
}

/// A transition as committed: the incident, and what it did to escalations.
#[derive(Debug, Clone)]
pub struct TransitionOutcome {
    pub incident: Incident,
    /// The level 1 escalation an `escalate` scheduled.
    pub scheduled: Option<Scheduled>,
    /// The ids of the `PENDING` escalations it cancelled.
    pub cancelled: Vec<Uuid>,
}

/// A `PENDING` escalation and when it is due.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Scheduled {
    pub id: Uuid,
    pub due: Timestamp,
}

/// What the worker did with one due escalation.
#[derive(Debug, Clone)]
pub struct Settled {
    /// The escalation as it now is: `EXECUTED` or `CANCELLED`.
    pub escalation: Escalation,
    /// The next level, scheduled because this one executed; `None` after the last level.
    pub next: Option<Scheduled>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Backlog {
    pub pending: i64,
    pub overdue: i64,
}

/// Opens the backend that `database_url` names. Does not migrate.
pub async fn connect(database_url: &str) -> Result<Arc<dyn Store>, StoreError> {
    if database_url.starts_with("sqlite:") {
        Ok(Arc::new(sqlite::SqliteStore::connect(database_url).await?))
    } else {
        Ok(Arc::new(
            postgres::PostgresStore::connect(database_url).await?,
        ))
    }
}

/// The statuses an incident can be in and still absorb events: the partial unique index on
/// `dedup_key` covers exactly these.
pub(crate) const NON_TERMINAL_SQL: &str = "('OPEN', 'ACKNOWLEDGED', 'ESCALATING')";

/// The detail of an `escalation.executed` timeline entry.
fn executed_detail(escalation: &Escalation) -> serde_json::Value {
    let lag = escalation
        .executed_at
        .map(|at| at.as_millis() - escalation.scheduled_at.as_millis());
    serde_json::json!({
        "escalation_id": escalation.id,
        "escalation_level": escalation.escalation_level,
        "scheduled_at": escalation.scheduled_at,
        "lag_ms": lag,
    })
}

/// The detail of an `escalation.scheduled` timeline entry.
fn scheduled_detail(scheduled: Scheduled, level: i32) -> serde_json::Value {
    serde_json::json!({
        "escalation_id": scheduled.id,
        "escalation_level": level,
        "scheduled_at": scheduled.due,
    })
}

/// The detail of an `escalation.cancelled` timeline entry.
fn cancelled_detail(id: Uuid, level: i32, reason: &str) -> serde_json::Value {
    serde_json::json!({ "escalation_id": id, "escalation_level": level, "reason": reason })
}

/// The level that follows `executed` in `snapshot` (the policy taken when the incident started
/// escalating), scheduled `at` + its delay; `None` after the last level.
fn next_level(
    snapshot: Option<serde_json::Value>,
    executed: i32,
    at: Timestamp,
) -> Result<Option<(i32, Timestamp)>, StoreError> {
    let Some(snapshot) = snapshot else {
        return Err(StoreError::internal(
            "an escalating incident has no policy snapshot",
        ));
    };
    let policy: EscalationPolicy =
        serde_json::from_value(snapshot).map_err(StoreError::internal)?;
    Ok(policy
        .after(executed)
        .map(|level| (level.level, at.after(level.delay))))
}

/// Fetch one more than asked, to know whether a next page exists.
fn into_page(mut items: Vec<Incident>, limit: u32) -> Page<Incident> {
    let limit = limit as usize;
    let next = if items.len() > limit {
        items.truncate(limit);
        items.last().map(|incident| incident.id)
    } else {
        None
    };
    Page { items, next }
}

/// The detail recorded with a transition's timeline entry.
fn transition_detail(request: &TransitionRequest, from: IncidentStatus) -> serde_json::Value {
    let mut detail = serde_json::json!({ "from": from.as_str() });
    if let Some(note) = &request.note {
        let key = if request.action == Action::Resolve {
            "resolution_note"
        } else {
            "note"
        };
        detail[key] = note.clone().into();
    }
    detail
}

/// Classifies a driver error: trouble reaching or using the database that may pass is
/// retryable (503), the rest is internal.
fn classify(error: sqlx::Error) -> StoreError {
    use sqlx::Error::*;
    let unavailable = match &error {
        PoolTimedOut | PoolClosed | Io(_) | Tls(_) | WorkerCrashed => true,
        Database(db) => match (
            db.try_downcast_ref::<sqlx::sqlite::SqliteError>(),
            db.code(),
        ) {
            (Some(_), Some(code)) => is_transient_sqlite(&code),
            (None, Some(code)) => is_transient_postgres(&code),
            (_, None) => false,
        },
        _ => false,
    };
    if unavailable {
        StoreError::Unavailable(error)
    } else {
        StoreError::Internal(Box::new(error))
    }
}

/// SQLite reports extended result codes; their low byte is the primary code: BUSY and LOCKED
/// (after the busy timeout), IOERR, FULL, CANTOPEN.
fn is_transient_sqlite(code: &str) -> bool {
    code.parse::<i32>()
        .is_ok_and(|extended| matches!(extended & 0xff, 5 | 6 | 10 | 13 | 14))
}

/// PostgreSQL SQLSTATEs: class 08 (connection exception), 53 (insufficient resources), 57P0x
/// (shutting down, cannot connect now), 57014 (statement cancelled), 3D000 (database gone),
/// 25006 (read-only: a standby after failover), 40001 and 40P01 (serialization failure, deadlock).
fn is_transient_postgres(code: &str) -> bool {
    code.starts_with("08")
        || code.starts_with("53")
        || code.starts_with("57P")
        || matches!(code, "57014" | "3D000" | "25006" | "40001" | "40P01")
}

impl From<sqlx::Error> for StoreError {
    fn from(error: sqlx::Error) -> Self {
        classify(error)
    }
}

impl From<sqlx::migrate::MigrateError> for StoreError {
    fn from(error: sqlx::migrate::MigrateError) -> Self {
        match error {
            sqlx::migrate::MigrateError::Execute(inner) => classify(inner),
            other => StoreError::internal(other),
        }
    }
}
