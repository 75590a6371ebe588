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

pub mod batch;
pub mod listen;
pub mod postgres;
pub mod sqlite;
pub mod url;

pub use url::DatabaseUrl;

use std::sync::Arc;

use async_trait::async_trait;
use uuid::Uuid;

use crate::domain::{
    Action, Escalation, EscalationPolicy, Event, Incident, IncidentStatus, InvalidTransition,
    NewEvent, NewToken, TimelineEntry, TimelineKind, Timestamp, Token,
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
    /// The same error for another waiter of a failed batch (driver errors are not `Clone`; the
    /// kind is kept, the source becomes its message).
    pub fn duplicate(&self) -> Self {
        match self {
            Self::NotFound => Self::NotFound,
            Self::InvalidTransition(refused) => Self::InvalidTransition(*refused),
            Self::Unavailable(error) => Self::Unavailable(sqlx::Error::Protocol(error.to_string())),
            Self::Internal(error) => Self::internal(error.to_string()),
        }
    }

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

/// At most this many rows go into one multi-row insert.
const MAX_ROWS_PER_STATEMENT: usize = 256;

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

    /// Stores several events as `ingest` would, in one transaction where the backend can (the
    /// way to ingest under load; see [`batch::IngestQueue`]). Results come back in the order of
    /// `events`; events sharing a `dedup_key` apply in that order. The default stores them one
    /// by one.
    async fn ingest_batch(&self, events: &[NewEvent]) -> Result<Vec<Ingested>, StoreError> {
        let mut ingested = Vec::with_capacity(events.len());
        for event in events {
            ingested.push(self.ingest(event.clone()).await?);
        }
        Ok(ingested)
    }

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

    /// Claims up to `limit` `PENDING` escalations due at `clock()` (earliest first; only those in
    /// `only`, when given) and settles each in one transaction: `CANCELLED` if its incident is no
    /// longer `ESCALATING`, otherwise `EXECUTED` at `clock()`, with the incident's
    /// `escalation_level` raised and the next level of its policy snapshot scheduled at that time
    /// + the level's delay. The clock is read once, when the transaction holds its connection, so
    /// the lag recorded includes any wait for it. Rows another worker holds are skipped, never
    /// waited for, so concurrent workers claim disjoint sets and each escalation is settled once.
    async fn settle_due(
        &self,
        clock: &(dyn Fn() -> Timestamp + Send + Sync),
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

/// A level to schedule: the next one after an execution, or level 1 on escalate.
#[derive(Debug, Clone, Copy)]
struct NextLevel {
    incident_id: Uuid,
    level: i32,
    due: Timestamp,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Backlog {
    pub pending: i64,
    pub overdue: i64,
}

/// Opens the backend that `database_url` names. Does not migrate.
pub async fn connect(database_url: &DatabaseUrl) -> Result<Arc<dyn Store>, StoreError> {
    Ok(match database_url {
        DatabaseUrl::Sqlite(url) => Arc::new(sqlite::SqliteStore::connect(url).await?),
        DatabaseUrl::Postgres(url) => Arc::new(postgres::PostgresStore::connect(url).await?),
    })
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

/// Splits `count` events into the groups one multi-row statement can take: at most `max_rows`
/// each, no `dedup_key` twice in a group (a statement cannot insert and then update one row),
/// keeping the order of events that share a key. Within a group, rows are ordered by key, so
/// concurrent batches lock live incidents in one order and cannot deadlock. Returns indices
/// into `events`.
fn statement_groups(events: &[NewEvent], max_rows: usize) -> Vec<Vec<usize>> {
    let mut groups: Vec<(Vec<usize>, std::collections::HashSet<&str>)> = Vec::new();
    let mut next_group_of_key: std::collections::HashMap<&str, usize> = Default::default();
    let mut first_open = 0;
    for (index, event) in events.iter().enumerate() {
        let start = match event.dedup_key.as_deref() {
            Some(key) => next_group_of_key
                .get(key)
                .copied()
                .unwrap_or(first_open)
                .max(first_open),
            None => first_open,
        };
        let mut group = start;
        while group < groups.len()
            && (groups[group].0.len() >= max_rows
                || event
                    .dedup_key
                    .as_deref()
                    .is_some_and(|k| groups[group].1.contains(k)))
        {
            group += 1;
        }
        if group == groups.len() {
            groups.push((Vec::new(), Default::default()));
        }
        groups[group].0.push(index);
        if let Some(key) = event.dedup_key.as_deref() {
            groups[group].1.insert(key);
            next_group_of_key.insert(key, group + 1);
        }
        while first_open < groups.len() && groups[first_open].0.len() >= max_rows {
            first_open += 1;
        }
    }
    groups
        .into_iter()
        .map(|(mut indices, _)| {
            indices.sort_by(|a, b| events[*a].dedup_key.cmp(&events[*b].dedup_key));
            indices
        })
        .collect()
}

/// The event `new` becomes once it is known which incident it belongs to.
fn new_event(new: &NewEvent, incident_id: Uuid) -> Event {
    Event {
        id: Uuid::now_v7(),
        incident_id,
        source: new.source.clone(),
        summary: new.summary.clone(),
        severity: new.severity,
        dedup_key: new.dedup_key.clone(),
        payload: new.payload.clone(),
        received_at: new.received_at,
    }
}

/// The timeline entry an ingested event writes.
fn ingest_entry(event: &Event, deduplicated: bool) -> (TimelineKind, serde_json::Value) {
    let kind = if deduplicated {
        TimelineKind::EventAppended
    } else {
        TimelineKind::IncidentCreated
    };
    (
        kind,
        serde_json::json!({ "event_id": event.id, "source": event.source }),
    )
}

/// The incident `new` opens if it does not join one.
fn opened_incident(new: &NewEvent) -> Incident {
    Incident {
        id: Uuid::now_v7(),
        title: crate::domain::incident::title_from_text(&new.summary),
        severity: new.severity,
        status: IncidentStatus::Open,
        dedup_key: new.dedup_key.clone(),
        event_count: 1,
        escalation_level: 0,
        resolution_note: None,
        created_at: new.received_at,
        updated_at: new.received_at,
        acknowledged_at: None,
        resolved_at: None,
        cancelled_at: None,
    }
}

/// Each `proposed` incident's outcome, in order, given the rows the keyed ones' upsert returned
/// (in any order): a keyless incident was inserted as proposed; a returned row whose id was
/// proposed opened that incident; any other row is the live incident a key joined (`true`).
fn joined_incidents(
    proposed: &[Incident],
    returned: Vec<Incident>,
) -> Result<Vec<(Incident, bool)>, StoreError> {
    let mut outcomes: Vec<Option<(Incident, bool)>> = proposed
        .iter()
        .map(|incident| {
            incident
                .dedup_key
                .is_none()
                .then(|| (incident.clone(), false))
        })
        .collect();
    for incident in returned {
        let position = match proposed.iter().position(|p| p.id == incident.id) {
            Some(position) => Some((position, false)),
            None => proposed
                .iter()
                .position(|p| p.dedup_key.is_some() && p.dedup_key == incident.dedup_key)
                .map(|position| (position, true)),
        };
        let Some((position, joined)) = position else {
            return Err(StoreError::internal(
                "an upserted incident matches no event",
            ));
        };
        outcomes[position] = Some((incident, joined));
    }
    outcomes
        .into_iter()
        .map(|o| o.ok_or_else(|| StoreError::internal("an event got no incident")))
        .collect()
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Severity;

    fn event(key: Option<&str>) -> NewEvent {
        NewEvent {
            source: "test".into(),
            summary: "x".into(),
            severity: Severity::Error,
            dedup_key: key.map(str::to_owned),
            payload: serde_json::Value::Null,
            actor: "test".into(),
            received_at: Timestamp::from_millis(0),
        }
    }

    #[test]
    fn groups_never_repeat_a_key_and_keep_each_keys_order() {
        let events: Vec<_> = [
            Some("b"),
            Some("a"),
            None,
            Some("b"),
            Some("b"),
            None,
            Some("a"),
        ]
        .into_iter()
        .map(event)
        .collect();
        let groups = statement_groups(&events, 3);
        let mut seen: Vec<usize> = groups.iter().flatten().copied().collect();
        seen.sort();
        assert_eq!(
            seen,
            (0..events.len()).collect::<Vec<_>>(),
            "every event once"
        );
        let position = |index: usize| groups.iter().position(|g| g.contains(&index)).unwrap();
        for group in &groups {
            assert!(group.len() <= 3);
            let keys: Vec<_> = group
                .iter()
                .filter_map(|i| events[*i].dedup_key.as_deref())
                .collect();
            let mut unique = keys.clone();
            unique.dedup();
            assert_eq!(keys, unique, "no key twice in {group:?}");
            let mut sorted = keys.clone();
            sorted.sort();
            assert_eq!(keys, sorted, "rows ordered by key");
        }
        assert!(
            position(0) < position(3) && position(3) < position(4),
            "b's events in order"
        );
        assert!(position(1) < position(6), "a's events in order");
    }
}
