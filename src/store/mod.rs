//! Storage: the [`Store`] and its two backends, [`sqlite`] (the embedded default) and
//! [`postgres`] (production, several instances). Both pass the same conformance suite
//! (`tests/store_conformance.rs`).
//!
//! A store is these traits (see docs/architecture.md, "Storage"):
//! - [`Queries`]: single statements (reads, token writes), which each backend answers itself;
//! - [`People`], [`Outbox`], [`Catalog`] and [`Schedules`]: tables whose SQL is the same on both
//!   backends, written once over a backend's pools ([`shared::Pools`]);
//! - [`Changes`]: the writes that carry rules (ingest, transitions, settling due escalations),
//!   written once in [`changes`] for every [`Backend`], over the statements a backend provides
//!   in [`backend`]. The statements whose SQL both backends share (`statements.rs`) and the
//!   decoding of rows into records (`rows.rs`) are written once too.
//!
//! Promises every backend keeps:
//! - Each method that writes commits everything it writes in **one transaction**: the state change,
//!   its side effects (escalations scheduled or cancelled) and its timeline entries (SPEC §6.2).
//! - A transition is a **compare-and-set** on the status it read: of concurrent conflicting actions
//!   exactly one wins, the others get [`StoreError::InvalidTransition`].
//! - Nothing is deleted (SPEC §6.3): there is no method that deletes.

pub mod availability;
pub mod backend;
pub mod batch;
pub mod catalog;
pub mod changes;
pub mod listen;
pub mod postgres;
mod rows;
pub mod schedules;
pub mod shared;
pub mod sqlite;
mod sqlite_direct;
mod statements;
pub mod url;

pub use backend::Backend;
pub use url::DatabaseUrl;

use std::sync::{Arc, LazyLock};
use std::time::Duration;

use async_trait::async_trait;
use uuid::Uuid;

use crate::domain::schedule::{OverrideRecord, RotationRecord, ScheduleRecord};
use crate::domain::{
    Action, ContactMethod, Escalation, EscalationPolicy, Event, Failover, Heartbeat,
    HeartbeatChange, Incident, IncidentStatus, IntegrationKey, InvalidTransition, NewEvent,
    NewToken, Notification, NotificationRule, NotificationStatus, Outcome, Planned, PolicyRecord,
    Service, TimelineEntry, Timestamp, Token, TokenSecret, User,
};

/// What every store operation returns.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// The most incidents one page of `GET /incidents` may hold.
pub const MAX_PAGE_SIZE: u32 = 200;

#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    #[error("not found")]
    NotFound,
    #[error(transparent)]
    InvalidTransition(#[from] InvalidTransition),
    /// The database cannot be reached or is refusing work; retrying later may succeed (HTTP 503).
    #[error("database unavailable: {0}")]
    Unavailable(#[source] Arc<dyn std::error::Error + Send + Sync>),
    /// The transaction lost a conflict with a concurrent one (a deadlock victim, a serialization
    /// failure) and was rolled back whole; running it again will do (HTTP 503 if it still fails).
    #[error("transaction conflict: {0}")]
    Conflict(#[source] Arc<dyn std::error::Error + Send + Sync>),
    /// A row that would repeat a unique value (HTTP 409), with what a person should know.
    #[error("{0}")]
    Duplicate(String),
    /// A change the rules refuse in the state the data is in (HTTP 409), saying why.
    #[error("{0}")]
    Refused(String),
    /// Anything else: a bug or corrupt data. Logged, never shown to clients (HTTP 500).
    #[error("database error: {0}")]
    Internal(#[source] Arc<dyn std::error::Error + Send + Sync>),
}

impl StoreError {
    pub fn internal(error: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        Self::Internal(Arc::from(error.into()))
    }

    /// The database cannot be reached at all (a lost or refused connection, no connection to be
    /// had, a database that is gone), as opposed to reached but busy or refusing this one
    /// statement: what closes the [`availability`] gate.
    pub fn is_unreachable(&self) -> bool {
        let Self::Unavailable(error) = self else {
            return false;
        };
        // The direct SQLite connection's errors (rusqlite) are a busy or full file, never a
        // database out of reach.
        match error.downcast_ref::<sqlx::Error>() {
            Some(sqlx::Error::Database(db)) => {
                db.try_downcast_ref::<sqlx::sqlite::SqliteError>().is_none()
                    && db
                        .code()
                        .is_some_and(|code| postgres::is_unreachable_code(&code))
            }
            Some(_) => true,
            None => false,
        }
    }

    /// A unique-constraint violation said as `message`; any other error as it is.
    fn duplicate(self, message: &str) -> Self {
        match self {
            Self::Duplicate(_) => Self::Duplicate(message.to_owned()),
            other => other,
        }
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
    /// Level 1 of the incident it opened on an auto-escalating service, scheduled in the same
    /// transaction.
    pub scheduled: Option<Scheduled>,
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
    /// The id of the signed link this action came through: it acts once
    /// ([`StoreError::Duplicate`] the second time).
    pub link: Option<String>,
}

#[derive(Debug, Clone, Default)]
pub struct IncidentQuery {
    pub status: Option<IncidentStatus>,
    /// Page size, taken within 1..=[`MAX_PAGE_SIZE`].
    pub limit: u32,
    /// Only incidents older than this one (ids are UUIDv7, so they sort by creation).
    pub before: Option<Uuid>,
    /// Only the incidents of this service.
    pub service: Option<Uuid>,
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

/// The single statements of a store: each backend answers them itself.
#[async_trait]
pub trait Queries: Send + Sync + 'static {
    /// Applies this backend's embedded migrations that have not run yet.
    async fn migrate(&self) -> Result<()>;

    /// Answers when the database can be reached.
    async fn ping(&self) -> Result<()>;

    /// Whether [`Changes::ingest_batch`] blocks its thread while it writes (the embedded
    /// backend's direct connection): the ingest queue then gives its writer a thread of its own.
    fn blocks_while_ingesting(&self) -> bool {
        false
    }

    /// This deployment's id: made once, by the migration that added it, then the same on every
    /// connection and every instance.
    async fn installation_id(&self) -> Result<Uuid>;

    async fn incident(&self, id: Uuid) -> Result<Incident>;

    /// Newest first.
    async fn incidents(&self, query: IncidentQuery) -> Result<Page<Incident>>;

    /// The escalations of an incident by level, then creation; `NotFound` if there is no incident.
    async fn escalations(&self, incident_id: Uuid) -> Result<Vec<Escalation>>;

    /// Oldest first; `NotFound` if there is no incident.
    async fn timeline(&self, incident_id: Uuid) -> Result<Vec<TimelineEntry>>;

    async fn create_token(&self, token: NewToken) -> Result<Token>;

    /// Oldest first, revoked ones included.
    async fn tokens(&self) -> Result<Vec<Token>>;

    /// The token whose secret hashes to `secret_hash`, revoked or not.
    async fn token_by_hash(&self, secret_hash: &str) -> Result<Option<Token>>;

    /// Marks the token revoked (once; revoking again keeps the first time). Refuses to revoke
    /// the last live admin token: nobody could administer the server after it.
    async fn revoke_token(&self, id: Uuid, at: Timestamp) -> Result<Token>;

    /// When the earliest `PENDING` escalation is due.
    async fn next_due(&self) -> Result<Option<Timestamp>>;

    /// How many escalations are `PENDING`, and how many of those are due at `now`.
    async fn backlog(&self, now: Timestamp) -> Result<Backlog>;

    /// `PENDING` escalations ordered by id, after `after`: the Redis index is rebuilt from these.
    async fn pending_page(&self, after: Option<Uuid>, limit: u32) -> Result<Vec<Scheduled>>;
}

/// The writes that carry the domain's rules, written once in [`changes`] for every [`Backend`].
#[async_trait]
pub trait Changes: Send + Sync + 'static {
    /// Stores `event`, opening a new `OPEN` incident, or joining the non-terminal incident that
    /// has the same `dedup_key`.
    async fn ingest(&self, event: NewEvent) -> Result<Ingested>;

    /// Stores several events as `ingest` would, in one transaction (the way to ingest under
    /// load; see [`batch::IngestQueue`]). Results come back in the order of `events`; events
    /// sharing a `dedup_key` apply in that order.
    async fn ingest_batch(&self, events: &[NewEvent]) -> Result<Vec<Ingested>>;

    /// Applies the state machine (SPEC §3) and its side effects.
    async fn transition(&self, request: TransitionRequest) -> Result<TransitionOutcome>;

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
    ) -> Result<Vec<Settled>>;

    /// Applies each attempt's outcome to its notification, if it is still `PENDING` (or it was
    /// `CANCELLED` while its message went out), with a timeline entry for each attempt, in one
    /// transaction. Returns the notifications changed. The incidents are locked first (shared, in
    /// id order), as a transition locks its incident before its notifications: a transition
    /// cancelling these notifications meanwhile waits, or is waited for, but never deadlocks.
    async fn record_attempts(&self, records: &[AttemptRecord]) -> Result<Vec<Notification>>;

    /// Storm protection, one contact method and channel at a time: with their window held against
    /// other dispatchers, decides how `group` (claimed, oldest first) goes out under `limits`
    /// (each `count` messages in any `per`, [`Delivery::plan`]), and reserves room in the window
    /// for what it sends, in one transaction. What is held waits until `opens`. Members cancelled
    /// since they were claimed are left out: they are not sent.
    async fn plan_sends(
        &self,
        group: &[Notification],
        limits: &[(u32, Duration)],
        now: Timestamp,
    ) -> Result<SendPlan>;

    /// Applies a provider's receipt to the notifications its message carried, if they are
    /// `SENT` (or `DELIVERED`, for a later failure): `DELIVERED`; or, undelivered, due again at
    /// once on the next provider (after the backoff once every provider has failed), unless the
    /// incident is no longer `OPEN` or `ESCALATING` or the attempts are spent (`FAILED`). With a timeline entry
    /// for each, in one transaction. Returns the notifications changed.
    async fn record_receipt(&self, receipt: &Receipt) -> Result<Vec<Notification>>;
}

/// A provider's word on a message it accepted (Twilio's status callback).
#[derive(Debug, Clone)]
pub struct Receipt {
    pub provider_message_id: String,
    /// The provider's status word, as it said it (`delivered`, `undelivered`, `no-answer`, …).
    pub status: String,
    /// Reached the phone (`true`), or did not.
    pub delivered: bool,
    /// Why not, as the provider said it (an error code).
    pub error: Option<String>,
    /// The providers of the message's channel, to fail over between.
    pub failover: Failover,
    pub max_attempts: u32,
    pub retry_backoff: Duration,
    pub retry_backoff_cap: Duration,
    pub at: Timestamp,
}

/// How a recipient's due notifications on one channel go out, from [`Changes::plan_sends`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SendPlan {
    /// Each delivery, with its notifications and its message's key ([`Delivery::plan_group`]).
    pub deliveries: Vec<Planned>,
    /// When the window has room again: when what is held becomes due.
    pub opens: Timestamp,
}

/// Users: written once for every backend, in [`shared`].
#[async_trait]
pub trait People: Send + Sync + 'static {
    /// [`StoreError::Duplicate`] if the handle is taken.
    async fn create_user(&self, user: &User) -> Result<User>;

    /// Every user, active or not, by handle.
    async fn users(&self) -> Result<Vec<User>>;

    /// The users with these handles (any that exist, in any order).
    async fn users_by_handle(&self, handles: &[String]) -> Result<Vec<User>>;

    async fn user(&self, id: Uuid) -> Result<User>;

    /// Adds a contact method; [`StoreError::Duplicate`] if the user has it already.
    async fn add_contact_method(&self, method: &ContactMethod) -> Result<ContactMethod>;

    /// A user's enabled contact methods, oldest first.
    async fn contact_methods(&self, user_id: Uuid) -> Result<Vec<ContactMethod>>;

    /// Adds a personal rule; `NotFound` unless its contact method is the user's and enabled.
    async fn add_rule(&self, rule: &NotificationRule) -> Result<NotificationRule>;

    /// A user's enabled personal rules, oldest first.
    async fn rules(&self, user_id: Uuid) -> Result<Vec<NotificationRule>>;

    /// Retires one of the user's contact methods, and the rules through it, at `at`: kept, but
    /// no longer listed or used. `NotFound` unless it is theirs and enabled.
    async fn retire_contact_method(&self, user_id: Uuid, id: Uuid, at: Timestamp) -> Result<()>;

    /// Retires one of the user's rules at `at`. `NotFound` unless it is theirs and enabled.
    async fn retire_rule(&self, user_id: Uuid, id: Uuid, at: Timestamp) -> Result<()>;

    /// Stores `user`'s fields (all but its handle and creation time) over the user with its id
    /// (a changed email or phone replacing the contact methods made from the old one),
    /// if that user is still at `user.version` (a compare-and-set: of two concurrent changes, the
    /// second is not stored over the first). The user as stored, with its version bumped; `None`
    /// if there is no such user or it changed since `user` was read.
    async fn update_user(&self, user: &User) -> Result<Option<User>>;
}

/// Services, escalation policies as data and integration keys: written once for every backend,
/// in [`catalog`].
#[async_trait]
pub trait Catalog: Send + Sync + 'static {
    /// [`StoreError::Duplicate`] if the name is taken.
    async fn create_policy(&self, policy: &PolicyRecord) -> Result<PolicyRecord>;

    /// Stores `policy`'s name, repeat and levels over the policy with its id (incidents already
    /// escalating keep the snapshot they took). `NotFound` if there is none.
    async fn replace_policy(&self, policy: &PolicyRecord) -> Result<PolicyRecord>;

    /// By name.
    async fn policies(&self) -> Result<Vec<PolicyRecord>>;

    async fn policy(&self, id: Uuid) -> Result<PolicyRecord>;

    /// [`StoreError::Duplicate`] if the name is taken; `NotFound` if its policy does not exist.
    async fn create_service(&self, service: &Service) -> Result<Service>;

    /// Stores `service`'s fields over the service with its id; `NotFound` if there is none or
    /// its policy does not exist.
    async fn update_service(&self, service: &Service) -> Result<Service>;

    /// By name.
    async fn services(&self) -> Result<Vec<Service>>;

    async fn service(&self, id: Uuid) -> Result<Service>;

    /// A key for `service_id` whose secret hashes as `secret` does; `NotFound` if there is no
    /// such service.
    async fn create_integration_key(
        &self,
        service_id: Uuid,
        name: &str,
        secret: &TokenSecret,
        at: Timestamp,
    ) -> Result<IntegrationKey>;

    /// The service's keys, revoked ones included, oldest first.
    async fn integration_keys(&self, service_id: Uuid) -> Result<Vec<IntegrationKey>>;

    /// Revokes one of the service's keys (once: revoking again keeps the first time).
    async fn revoke_integration_key(
        &self,
        service_id: Uuid,
        id: Uuid,
        at: Timestamp,
    ) -> Result<IntegrationKey>;

    /// The service whose live (unrevoked) key `secret` is.
    async fn service_by_key(&self, secret: &TokenSecret) -> Result<Option<Service>>;

    /// The live incident (OPEN, ACKNOWLEDGED or ESCALATING) of `service_id` with `dedup_key`.
    async fn live_incident(&self, service_id: Uuid, dedup_key: &str) -> Result<Option<Incident>>;

    /// A heartbeat monitor whose key hashes as `secret` does; `NotFound` if there is no such
    /// service.
    async fn create_heartbeat(
        &self,
        heartbeat: &Heartbeat,
        secret: &TokenSecret,
    ) -> Result<Heartbeat>;

    /// The service's monitors, oldest first, retired ones left out.
    async fn heartbeats(&self, service_id: Uuid) -> Result<Vec<Heartbeat>>;

    /// Makes `change` to the service's monitor `id` ([`Heartbeat::changed`]), its row held
    /// against a concurrent ping; `NotFound` if it is not the service's or is retired.
    async fn change_heartbeat(
        &self,
        service_id: Uuid,
        id: Uuid,
        change: &HeartbeatChange,
    ) -> Result<Heartbeat>;

    /// Retires the service's monitor `id` at `at`: kept, but no longer listed, pinged or
    /// watched. An incident its miss opened stays as it is. `NotFound` if it is not the
    /// service's or is retired already.
    async fn retire_heartbeat(
        &self,
        service_id: Uuid,
        id: Uuid,
        at: Timestamp,
    ) -> Result<Heartbeat>;

    /// Records a ping of the live monitor whose key `secret` is, at `at`, its row held against
    /// a concurrent change: due again an interval later, its miss's incident forgotten. Returns
    /// the monitor as it was before (with the incident to resolve, if any); `None` for an
    /// unknown or retired key.
    async fn ping_heartbeat(
        &self,
        secret: &TokenSecret,
        at: Timestamp,
    ) -> Result<Option<Heartbeat>>;

    /// The live monitors missed at `now` that have opened no incident yet.
    async fn missed_heartbeats(&self, now: Timestamp) -> Result<Vec<Heartbeat>>;

    /// Notes that the monitor's miss, seen at `now`, opened `incident_id`: unless one was noted
    /// already (by another instance), or a ping came in meanwhile (the miss no longer stands).
    /// Whether this one was.
    async fn note_missed(&self, id: Uuid, incident_id: Uuid, now: Timestamp) -> Result<bool>;
}

/// On-call schedules, their rotations and overrides: written once for every backend, in
/// [`schedules`]. Nothing is deleted: rotations and overrides are retired, and only live ones are
/// listed, in the order they were made (the order [`Schedule`] breaks ties by).
///
/// [`Schedule`]: crate::domain::schedule::Schedule
#[async_trait]
pub trait Schedules: Send + Sync + 'static {
    /// [`StoreError::Duplicate`] if the name is taken.
    async fn create_schedule(&self, schedule: &ScheduleRecord) -> Result<ScheduleRecord>;

    /// Stores `schedule`'s name, zone and `updated_at` over the schedule with its id; `NotFound`
    /// if there is none, [`StoreError::Duplicate`] if the name is taken.
    async fn update_schedule(&self, schedule: &ScheduleRecord) -> Result<ScheduleRecord>;

    /// By name.
    async fn schedules(&self) -> Result<Vec<ScheduleRecord>>;

    async fn schedule(&self, id: Uuid) -> Result<ScheduleRecord>;

    /// `NotFound` if its schedule does not exist.
    async fn add_rotation(&self, rotation: &RotationRecord) -> Result<RotationRecord>;

    /// Stores `rotation`'s name, fields and `updated_at` over the live rotation with its id in
    /// its schedule, which keeps its place in the order; `NotFound` if there is none.
    async fn replace_rotation(&self, rotation: &RotationRecord) -> Result<RotationRecord>;

    /// The schedule's live rotations; `NotFound` if there is no schedule.
    async fn rotations(&self, schedule_id: Uuid) -> Result<Vec<RotationRecord>>;

    /// Retires one of the schedule's live rotations at `at`; `NotFound` unless there is one.
    async fn retire_rotation(
        &self,
        schedule_id: Uuid,
        id: Uuid,
        at: Timestamp,
    ) -> Result<RotationRecord>;

    /// `NotFound` if its schedule does not exist.
    async fn add_override(&self, taken: &OverrideRecord) -> Result<OverrideRecord>;

    /// The schedule's live overrides that end after `from` and start before `to` (either bound
    /// left open when `None`); `NotFound` if there is no schedule.
    async fn overrides(
        &self,
        schedule_id: Uuid,
        from: Option<Timestamp>,
        to: Option<Timestamp>,
    ) -> Result<Vec<OverrideRecord>>;

    /// Retires one of the schedule's live overrides at `at`; `NotFound` unless there is one.
    async fn retire_override(
        &self,
        schedule_id: Uuid,
        id: Uuid,
        at: Timestamp,
    ) -> Result<OverrideRecord>;

    /// What answers who is on call within `[from, to)`: the schedule, its live rotations and
    /// its live overrides that overlap the range, read on one connection. `NotFound` if there
    /// is no schedule.
    async fn layers(
        &self,
        schedule_id: Uuid,
        from: Timestamp,
        to: Timestamp,
    ) -> Result<ScheduleLayers>;
}

/// A schedule with the rotations and overrides that apply, from [`Schedules::layers`].
#[derive(Debug, Clone)]
pub struct ScheduleLayers {
    pub schedule: ScheduleRecord,
    pub rotations: Vec<RotationRecord>,
    pub overrides: Vec<OverrideRecord>,
}

/// The notifications outbox: written once for every backend, in [`shared`].
#[async_trait]
pub trait Outbox: Send + Sync + 'static {
    async fn notification(&self, id: Uuid) -> Result<Notification>;

    /// The incidents with these ids (any that exist, in any order): what a batch of
    /// notifications is about, in one statement.
    async fn incidents_by_id(&self, ids: &[Uuid]) -> Result<Vec<Incident>>;

    /// The users with these ids (any that exist, in any order).
    async fn users_by_id(&self, ids: &[Uuid]) -> Result<Vec<User>>;

    /// Oldest first; `NotFound` if there is no incident.
    async fn notifications_of(&self, incident_id: Uuid) -> Result<Vec<Notification>>;

    /// A user's in-app notifications, newest first, only the unread ones if asked.
    async fn inbox(
        &self,
        user_id: Uuid,
        unread_only: bool,
        limit: u32,
    ) -> Result<Vec<Notification>>;

    /// Marks one of `user_id`'s in-app notifications read (once); `NotFound` if it is not theirs.
    async fn mark_read(&self, id: Uuid, user_id: Uuid, at: Timestamp) -> Result<Notification>;

    /// Claims up to `limit` `PENDING` notifications due at `now`, earliest first, each leased
    /// until `now + lease` (its `due_at` moves there, so another dispatcher takes it only once
    /// the lease runs out) and its `attempts` counted. Concurrent claimers take disjoint rows.
    async fn claim_notifications(
        &self,
        now: Timestamp,
        lease: Duration,
        limit: u32,
    ) -> Result<Vec<Notification>>;

    /// The key that signs the links in messages: made once by the migration that added it, then
    /// the same on every instance.
    async fn link_key(&self) -> Result<String>;

    /// When the earliest `PENDING` notification is due (or its lease runs out).
    async fn next_notification_due(&self) -> Result<Option<Timestamp>>;

    /// The notifications carried by the same message as notification `id` (its digest, or it
    /// alone); `NotFound` if there is no such notification.
    async fn message_of(&self, id: Uuid) -> Result<Vec<Notification>>;

    /// The notifications carried by the newest message to `address` (SMS or voice) whose reply
    /// code is `code`: what a reply naming the code acts on.
    async fn replied_to(&self, address: &str, code: &str) -> Result<Vec<Notification>>;
}

/// A whole store: what a backend answers itself, the tables written once for every backend, and
/// the rules written once above them.
pub trait Store: Queries + People + Outbox + Changes + Catalog + Schedules {}

impl<S: Queries + People + Outbox + Changes + Catalog + Schedules> Store for S {}

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
    /// How many notifications executing it left for the dispatcher to send.
    pub to_send: usize,
}

/// What one attempt to deliver a notification came to, for [`Changes::record_attempts`]; or, for
/// one that was not attempted (held by the rate limit, put back for the next round), when it is
/// due again.
#[derive(Debug, Clone)]
pub struct AttemptRecord {
    pub id: Uuid,
    /// The notification's incident: locked (shared) first, in the order transitions lock it.
    pub incident_id: Uuid,
    /// The attempts counted, this one included (a send the rate limit held back is not one).
    pub attempts: i32,
    pub outcome: Outcome,
    /// The idempotency key of the message that carried it.
    pub message_key: String,
    /// Sent in one digest with this many, when it was.
    pub digest_of: Option<usize>,
    /// The code replies to the message name (SMS and voice).
    pub reply_code: Option<String>,
    pub at: Timestamp,
}

impl AttemptRecord {
    /// Whether a message was tried: sent, or failed with an error.
    pub fn attempted(&self) -> bool {
        self.outcome.status != NotificationStatus::Pending || self.outcome.last_error.is_some()
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Backlog {
    pub pending: i64,
    pub overdue: i64,
}

/// Opens the backend that `database_url` names without waiting for the database: a PostgreSQL
/// pool connects on first use (so a server can start while the database is away); a SQLite file
/// is opened now. Does not migrate.
pub async fn open(database_url: &DatabaseUrl) -> Result<Arc<dyn Store>> {
    Ok(match database_url {
        DatabaseUrl::Sqlite(url) => Arc::new(sqlite::SqliteStore::connect(url).await?),
        DatabaseUrl::Postgres(url) => Arc::new(postgres::PostgresStore::connect_lazy(url)?),
    })
}

/// Opens the backend that `database_url` names, connected now. Does not migrate.
pub async fn connect(database_url: &DatabaseUrl) -> Result<Arc<dyn Store>> {
    Ok(match database_url {
        DatabaseUrl::Sqlite(url) => Arc::new(sqlite::SqliteStore::connect(url).await?),
        DatabaseUrl::Postgres(url) => Arc::new(postgres::PostgresStore::connect(url).await?),
    })
}

/// The live statuses as an SQL list, `('OPEN', 'ACKNOWLEDGED', 'ESCALATING')`: the predicate of
/// the partial unique index on `incidents(dedup_scope, dedup_key)` that ingest's upsert names.
static LIVE_STATUSES_SQL: LazyLock<String> = LazyLock::new(|| {
    let quoted: Vec<String> = IncidentStatus::live()
        .map(|status| format!("'{}'", status.as_str()))
        .collect();
    format!("({})", quoted.join(", "))
});

/// What follows the values of a multi-row insert of incidents to join live ones: on either
/// backend, an event whose `dedup_key` a live incident holds adds itself to that incident's count,
/// and every row comes back, opened or joined.
static JOIN_LIVE_INCIDENTS: LazyLock<String> = LazyLock::new(|| {
    format!(
        " on conflict (dedup_scope, dedup_key) where status in {}
          do update set event_count = incidents.event_count + 1, updated_at = excluded.updated_at
          returning *",
        *LIVE_STATUSES_SQL
    )
});

/// How a driver error should be handled.
enum ErrorClass {
    /// Trouble reaching or using the database that may pass: [`StoreError::Unavailable`].
    Transient,
    /// A lost conflict between transactions: [`StoreError::Conflict`].
    Conflict,
    /// A unique constraint refused the row: [`StoreError::Duplicate`].
    Duplicate,
    /// Anything else: [`StoreError::Internal`].
    Internal,
}

/// Classifies a driver error, by the backend's own codes when the database sent one.
fn classify(error: sqlx::Error) -> StoreError {
    use sqlx::Error::*;
    let class = match &error {
        PoolTimedOut | PoolClosed | Io(_) | Tls(_) | WorkerCrashed => ErrorClass::Transient,
        Database(db) => match (
            db.try_downcast_ref::<sqlx::sqlite::SqliteError>(),
            db.code(),
        ) {
            (Some(_), Some(code)) => sqlite::classify_code(&code),
            (None, Some(code)) => postgres::classify_code(&code),
            (_, None) => ErrorClass::Internal,
        },
        _ => ErrorClass::Internal,
    };
    class.store_error(error)
}

impl ErrorClass {
    /// `error` as the [`StoreError`] of this class.
    fn store_error(self, error: impl std::error::Error + Send + Sync + 'static) -> StoreError {
        let error = Arc::new(error);
        match self {
            ErrorClass::Transient => StoreError::Unavailable(error),
            ErrorClass::Conflict => StoreError::Conflict(error),
            ErrorClass::Duplicate => StoreError::Duplicate(error.to_string()),
            ErrorClass::Internal => StoreError::Internal(error),
        }
    }
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

    /// The upsert names the partial unique index by its predicate: both backends' migrations
    /// must declare the index over exactly the live statuses the domain defines.
    #[test]
    fn the_live_dedup_index_covers_the_live_statuses() {
        let predicate = format!("where status in {}", *LIVE_STATUSES_SQL);
        for migration in [
            include_str!("migrations/sqlite/0001_core.sql"),
            include_str!("migrations/postgres/0001_core.sql"),
        ] {
            assert!(migration.contains(&predicate), "{predicate}");
        }
        assert_eq!(*LIVE_STATUSES_SQL, "('OPEN', 'ACKNOWLEDGED', 'ESCALATING')");
    }
}
