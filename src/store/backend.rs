//! What a backend provides to the rules written once in [`super::changes`]: its statements, and
//! nothing else. Each method is one statement (or one round trip) in the backend's own SQL, with
//! its bind and row conversions; how it locks is the backend's idiom, stated on each method.
//!
//! A new table follows the same split: its single-statement reads and writes go in
//! [`Queries`](super::Queries), implemented by each backend; a write that carries a rule gets its
//! statements here and its logic, once, in [`super::changes`].

use std::sync::Arc;

use async_trait::async_trait;
use uuid::Uuid;

use super::shared::OutboxTx;
use super::{Queries, Result};
use crate::domain::{
    Escalation, EscalationPolicy, Event, Incident, IncidentStatus, NewTimelineEntry, Timestamp,
    Transition,
};

/// A backend: the transactions it opens, and the one-round-trip ingest of incidents that nothing
/// can join.
#[async_trait]
pub trait Backend: Queries {
    type Tx: WriteTx + OutboxTx;
    /// What [`Backend::begin_ingest`] opens.
    type IngestTx: IngestTx;

    /// Starts a write transaction.
    async fn begin(&self) -> Result<Self::Tx>;

    /// Starts the transaction a batch of events is ingested in.
    async fn begin_ingest(&self) -> Result<Self::IngestTx>;

    /// Stores incidents that events without a `dedup_key` opened (nothing can conflict, nothing
    /// needs reading back), with their events and timeline entries, committed, in one round trip
    /// to the database.
    async fn store_opened(&self, opened: &Opened) -> Result<()>;
}

/// What every write transaction does: append to the timeline, schedule escalations, commit.
/// Nothing is visible to others until [`AppendTx::commit`]; dropping the transaction rolls it
/// back.
#[async_trait]
pub trait AppendTx: Send {
    /// Appends the entries, in their order.
    async fn append_timeline(&mut self, entries: &[NewTimelineEntry]) -> Result<()>;

    /// Inserts `PENDING` escalations. On PostgreSQL it also notifies the escalation channel of
    /// the earliest due time, delivered to every instance at commit.
    async fn insert_escalations(&mut self, escalations: &[Escalation]) -> Result<()>;

    async fn commit(self) -> Result<()>;
}

/// The transaction a batch of events is ingested in ([`Backend::begin_ingest`]): it adds
/// incidents, joined by `dedup_key` where a live one has it, and events. PostgreSQL's is its usual
/// transaction; SQLite's runs on a connection of its own.
#[async_trait]
pub trait IngestTx: AppendTx {
    /// Inserts incidents (without a `dedup_key`: nothing can conflict).
    async fn insert_incidents(&mut self, incidents: &[Opening]) -> Result<()>;

    /// Inserts incidents, each joining the live incident with its `dedup_key` instead if there is
    /// one (its `event_count` raised, nothing else changed), in the order given, which must not
    /// repeat a key. Returns every row opened or joined, in any order. Concurrent upserts of one
    /// key wait for each other's row lock: they never fail and never open two live incidents.
    async fn upsert_incidents(&mut self, incidents: &[Opening]) -> Result<Vec<Incident>>;

    async fn insert_events(&mut self, events: &[Event]) -> Result<()>;
}

/// The statements of the write transactions of transitions and the escalation engine.
#[async_trait]
pub trait WriteTx: AppendTx {
    /// The incident, held against concurrent transitions until commit (PostgreSQL: `for update`;
    /// SQLite: the single writer already holds every row).
    async fn lock_incident(&mut self, id: Uuid) -> Result<Option<Incident>>;

    /// Applies `change` if the incident is still in `change.transition.from` (the compare-and-set);
    /// the incident as updated, or `None` if its status had changed.
    async fn change_status(&mut self, change: &StatusChange<'_>) -> Result<Option<Incident>>;

    /// Marks every `PENDING` escalation of the incident `CANCELLED` at `at`, and returns them.
    async fn cancel_pending(&mut self, incident_id: Uuid, at: Timestamp)
        -> Result<Vec<Escalation>>;

    /// Claims up to `due.limit` `PENDING` escalations due at `due.now`, earliest first (only those
    /// in `due.only`, when given), and marks each in the same statement by its incident's status:
    /// `EXECUTED` at `due.now` if the incident is `ESCALATING`, otherwise `CANCELLED` (it stopped
    /// escalating after the row was scheduled; transitions cancel pending rows, so this is a
    /// safety net). Everything else executing means is in [`super::changes`]. Rows another transaction
    /// holds are skipped, never waited for (PostgreSQL: `for update … skip locked`, on the
    /// escalation and its incident; SQLite: the statement takes the write lock first).
    async fn claim_due(&mut self, due: &DueQuery<'_>) -> Result<Vec<Claimed>>;

    /// Raises each incident's `escalation_level` to the highest level given for it (never
    /// lowers it), updated `at`.
    async fn raise_levels(&mut self, levels: &[(Uuid, i32)], at: Timestamp) -> Result<()>;
}

/// An incident to insert, with the policy snapshot it escalates under when it opens
/// `ESCALATING` (its service escalates automatically).
#[derive(Debug, Clone)]
pub struct Opening {
    pub incident: Incident,
    pub policy: Option<Arc<EscalationPolicy>>,
}

/// Incidents that events without a `dedup_key` opened, none escalating, with those events and
/// their timeline entries, in one order: for [`Backend::store_opened`].
#[derive(Debug, Clone)]
pub struct Opened {
    pub incidents: Vec<Incident>,
    pub events: Vec<Event>,
    pub entries: Vec<NewTimelineEntry>,
}

/// Which due escalations [`WriteTx::claim_due`] claims.
#[derive(Debug, Clone, Copy)]
pub struct DueQuery<'a> {
    pub now: Timestamp,
    pub limit: u32,
    /// Only these, when given (the ids the Redis index handed out).
    pub only: Option<&'a [Uuid]>,
}

/// The columns a transition sets, for [`WriteTx::change_status`].
#[derive(Debug, Clone, Copy)]
pub struct StatusChange<'a> {
    pub incident_id: Uuid,
    pub transition: Transition,
    pub at: Timestamp,
    /// Kept when the transition resolves.
    pub resolution_note: Option<&'a str>,
    /// The policy snapshot an escalate takes: the walk follows it whatever the configuration
    /// becomes.
    pub policy: Option<&'a EscalationPolicy>,
}

impl StatusChange<'_> {
    /// The `acknowledged_at`, `resolved_at` or `cancelled_at` this change sets, if it is the one
    /// for `status`.
    pub fn stamp(&self, status: IncidentStatus) -> Option<Timestamp> {
        self.transition.stamp(status, self.at)
    }
}

/// A due escalation as [`WriteTx::claim_due`] settled it, with what the rules need to go on.
#[derive(Debug, Clone)]
pub struct Claimed {
    /// Already marked `EXECUTED` or `CANCELLED`.
    pub escalation: Escalation,
    /// The incident's status when it was claimed.
    pub incident_status: IncidentStatus,
    /// The incident's policy snapshot, taken when it started escalating.
    pub policy: Option<EscalationPolicy>,
}
