//! Knowing that the database is away, so that callers are refused at once (503) instead of each
//! waiting out the pool's acquire timeout, and noticing when it is back.
//!
//! [`Guarded`] wraps a store behind a gate. The first call that finds the database unreachable
//! ([`StoreError::is_unreachable`]: a lost connection, a refused one, a pool that cannot get one;
//! not a busy SQLite file) closes the gate: every call is then refused with that error without
//! touching the pool, and one background task pings the database, with backoff, until it
//! answers and the gate opens again. Start-up can also hold the gate closed ([`Gate::hold`]) while
//! it waits for the database; then it alone opens it ([`Gate::open`]), once the schema is
//! migrated, so that no request meets a database without its tables.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use async_trait::async_trait;
use uuid::Uuid;

use super::{
    AttemptRecord, Backlog, Catalog, Changes, IncidentQuery, Ingested, Outbox, Page, People,
    Queries, Receipt, Result, ScheduleLayers, Scheduled, Schedules, SendPlan, Settled, Store,
    StoreError, TransitionOutcome, TransitionRequest,
};
use crate::backoff::Backoff;
use crate::domain::schedule::{OverrideRecord, RotationRecord, ScheduleRecord};
use crate::domain::{
    ContactMethod, Escalation, Heartbeat, HeartbeatChange, Incident, IntegrationKey, NewEvent,
    NewToken, Notification, NotificationRule, PolicyRecord, Service, TimelineEntry, Timestamp,
    Token, TokenSecret, User,
};

/// The first probe of an unreachable database comes up to this long after the failure.
pub const FIRST_PROBE: Duration = Duration::from_millis(100);
/// Probes come at most this far apart, so service resumes within about this long of the
/// database's return.
pub const MAX_PROBE_INTERVAL: Duration = Duration::from_secs(1);

/// A store behind a gate that closes while the database cannot be reached.
pub struct Guarded {
    inner: Arc<dyn Store>,
    gate: Arc<Gate>,
}

/// Whether calls may go through to the database.
pub struct Gate {
    /// Why the database is away, while it is.
    outage: RwLock<Option<StoreError>>,
    /// Fast path of `outage.is_some()`.
    closed: AtomicBool,
    /// A probe (or start-up) is responsible for opening the gate.
    probing: AtomicBool,
}

impl Guarded {
    /// `inner`, with the gate open.
    pub fn new(inner: Arc<dyn Store>) -> Self {
        let gate = Gate {
            outage: RwLock::new(None),
            closed: AtomicBool::new(false),
            probing: AtomicBool::new(false),
        };
        Self {
            inner,
            gate: Arc::new(gate),
        }
    }

    pub fn gate(&self) -> Arc<Gate> {
        self.gate.clone()
    }

    /// Runs `call` unless the gate is closed, and closes it if `call` finds the database
    /// unreachable.
    async fn call<T>(&self, call: impl Future<Output = Result<T>>) -> Result<T> {
        if let Some(refusal) = self.gate.refusal() {
            return Err(refusal);
        }
        let result = call.await;
        if let Err(error) = &result {
            if error.is_unreachable() {
                self.close(error.clone());
            }
        }
        result
    }

    fn close(&self, why: StoreError) {
        let newly = !self.gate.closed.swap(true, Ordering::SeqCst);
        *self.gate.outage.write().unwrap_or_else(|e| e.into_inner()) = Some(why.clone());
        if newly {
            tracing::warn!(error = %why, "the database is unreachable; refusing requests (503) until it answers");
        }
        if !self.gate.probing.swap(true, Ordering::SeqCst) {
            tokio::spawn(probe(self.inner.clone(), self.gate.clone()));
        }
    }
}

impl Gate {
    /// The error to refuse a call with, while the gate is closed.
    fn refusal(&self) -> Option<StoreError> {
        if !self.closed.load(Ordering::SeqCst) {
            return None;
        }
        self.outage
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Closes the gate because of `why` until [`Gate::open`] is called: no probe opens it. For
    /// start-up, which opens it once the schema is migrated.
    pub fn hold(&self, why: StoreError) {
        self.probing.store(true, Ordering::SeqCst);
        *self.outage.write().unwrap_or_else(|e| e.into_inner()) = Some(why);
        self.closed.store(true, Ordering::SeqCst);
    }

    /// Lets calls through again.
    pub fn open(&self) {
        *self.outage.write().unwrap_or_else(|e| e.into_inner()) = None;
        self.closed.store(false, Ordering::SeqCst);
        self.probing.store(false, Ordering::SeqCst);
    }

    pub fn is_open(&self) -> bool {
        !self.closed.load(Ordering::SeqCst)
    }
}

/// Pings the database until it answers, then opens the gate.
async fn probe(inner: Arc<dyn Store>, gate: Arc<Gate>) {
    let mut backoff = Backoff::new(FIRST_PROBE, MAX_PROBE_INTERVAL);
    loop {
        tokio::time::sleep(backoff.next_delay()).await;
        match inner.ping().await {
            Ok(()) => {
                gate.open();
                tracing::info!("the database answers again; serving requests");
                return;
            }
            Err(error) => {
                tracing::debug!(%error, "the database is still unreachable");
                *gate.outage.write().unwrap_or_else(|e| e.into_inner()) = Some(error);
            }
        }
    }
}

#[async_trait]
impl Queries for Guarded {
    async fn migrate(&self) -> Result<()> {
        self.call(self.inner.migrate()).await
    }

    async fn ping(&self) -> Result<()> {
        self.call(self.inner.ping()).await
    }

    fn blocks_while_ingesting(&self) -> bool {
        self.inner.blocks_while_ingesting()
    }

    async fn incident(&self, id: Uuid) -> Result<Incident> {
        self.call(self.inner.incident(id)).await
    }

    async fn incidents(&self, query: IncidentQuery) -> Result<Page<Incident>> {
        self.call(self.inner.incidents(query)).await
    }

    async fn escalations(&self, incident_id: Uuid) -> Result<Vec<Escalation>> {
        self.call(self.inner.escalations(incident_id)).await
    }

    async fn timeline(&self, incident_id: Uuid) -> Result<Vec<TimelineEntry>> {
        self.call(self.inner.timeline(incident_id)).await
    }

    async fn create_token(&self, token: NewToken) -> Result<Token> {
        self.call(self.inner.create_token(token)).await
    }

    async fn tokens(&self) -> Result<Vec<Token>> {
        self.call(self.inner.tokens()).await
    }

    async fn token_by_hash(&self, secret_hash: &str) -> Result<Option<Token>> {
        self.call(self.inner.token_by_hash(secret_hash)).await
    }

    async fn revoke_token(&self, id: Uuid, at: Timestamp) -> Result<Token> {
        self.call(self.inner.revoke_token(id, at)).await
    }

    async fn next_due(&self) -> Result<Option<Timestamp>> {
        self.call(self.inner.next_due()).await
    }

    async fn backlog(&self, now: Timestamp) -> Result<Backlog> {
        self.call(self.inner.backlog(now)).await
    }

    async fn pending_page(&self, after: Option<Uuid>, limit: u32) -> Result<Vec<Scheduled>> {
        self.call(self.inner.pending_page(after, limit)).await
    }

    async fn installation_id(&self) -> Result<Uuid> {
        self.call(self.inner.installation_id()).await
    }
}

#[async_trait]
impl People for Guarded {
    async fn create_user(&self, user: &User) -> Result<User> {
        self.call(self.inner.create_user(user)).await
    }

    async fn users(&self) -> Result<Vec<User>> {
        self.call(self.inner.users()).await
    }

    async fn users_by_handle(&self, handles: &[String]) -> Result<Vec<User>> {
        self.call(self.inner.users_by_handle(handles)).await
    }

    async fn user(&self, id: Uuid) -> Result<User> {
        self.call(self.inner.user(id)).await
    }

    async fn update_user(&self, user: &User) -> Result<Option<User>> {
        self.call(self.inner.update_user(user)).await
    }

    async fn add_contact_method(&self, method: &ContactMethod) -> Result<ContactMethod> {
        self.call(self.inner.add_contact_method(method)).await
    }

    async fn contact_methods(&self, user_id: Uuid) -> Result<Vec<ContactMethod>> {
        self.call(self.inner.contact_methods(user_id)).await
    }

    async fn add_rule(&self, rule: &NotificationRule) -> Result<NotificationRule> {
        self.call(self.inner.add_rule(rule)).await
    }

    async fn rules(&self, user_id: Uuid) -> Result<Vec<NotificationRule>> {
        self.call(self.inner.rules(user_id)).await
    }

    async fn retire_contact_method(&self, user_id: Uuid, id: Uuid, at: Timestamp) -> Result<()> {
        self.call(self.inner.retire_contact_method(user_id, id, at))
            .await
    }

    async fn retire_rule(&self, user_id: Uuid, id: Uuid, at: Timestamp) -> Result<()> {
        self.call(self.inner.retire_rule(user_id, id, at)).await
    }
}

#[async_trait]
impl Outbox for Guarded {
    async fn incidents_by_id(&self, ids: &[Uuid]) -> Result<Vec<Incident>> {
        self.call(self.inner.incidents_by_id(ids)).await
    }

    async fn users_by_id(&self, ids: &[Uuid]) -> Result<Vec<User>> {
        self.call(self.inner.users_by_id(ids)).await
    }

    async fn notification(&self, id: Uuid) -> Result<Notification> {
        self.call(self.inner.notification(id)).await
    }

    async fn notifications_of(&self, incident_id: Uuid) -> Result<Vec<Notification>> {
        self.call(self.inner.notifications_of(incident_id)).await
    }

    async fn inbox(&self, user_id: Uuid, unread: bool, limit: u32) -> Result<Vec<Notification>> {
        self.call(self.inner.inbox(user_id, unread, limit)).await
    }

    async fn mark_read(&self, id: Uuid, user_id: Uuid, at: Timestamp) -> Result<Notification> {
        self.call(self.inner.mark_read(id, user_id, at)).await
    }

    async fn claim_notifications(
        &self,
        now: Timestamp,
        lease: Duration,
        limit: u32,
    ) -> Result<Vec<Notification>> {
        self.call(self.inner.claim_notifications(now, lease, limit))
            .await
    }

    async fn link_key(&self) -> Result<String> {
        self.call(self.inner.link_key()).await
    }

    async fn next_notification_due(&self) -> Result<Option<Timestamp>> {
        self.call(self.inner.next_notification_due()).await
    }

    async fn message_of(&self, id: Uuid) -> Result<Vec<Notification>> {
        self.call(self.inner.message_of(id)).await
    }

    async fn replied_to(&self, address: &str, code: &str) -> Result<Vec<Notification>> {
        self.call(self.inner.replied_to(address, code)).await
    }
}

#[async_trait]
impl Changes for Guarded {
    async fn record_attempts(&self, records: &[AttemptRecord]) -> Result<Vec<Notification>> {
        self.call(self.inner.record_attempts(records)).await
    }

    async fn plan_sends(
        &self,
        group: &[Notification],
        limits: &[(u32, Duration)],
        now: Timestamp,
    ) -> Result<SendPlan> {
        self.call(self.inner.plan_sends(group, limits, now)).await
    }

    async fn record_receipt(&self, receipt: &Receipt) -> Result<Vec<Notification>> {
        self.call(self.inner.record_receipt(receipt)).await
    }

    async fn ingest(&self, event: NewEvent) -> Result<Ingested> {
        self.call(self.inner.ingest(event)).await
    }

    async fn ingest_batch(&self, events: &[NewEvent]) -> Result<Vec<Ingested>> {
        self.call(self.inner.ingest_batch(events)).await
    }

    async fn transition(&self, request: TransitionRequest) -> Result<TransitionOutcome> {
        self.call(self.inner.transition(request)).await
    }

    async fn settle_due(
        &self,
        clock: &(dyn Fn() -> Timestamp + Send + Sync),
        limit: u32,
        only: Option<&[Uuid]>,
    ) -> Result<Vec<Settled>> {
        self.call(self.inner.settle_due(clock, limit, only)).await
    }
}

#[async_trait]
impl Catalog for Guarded {
    async fn create_policy(&self, policy: &PolicyRecord) -> Result<PolicyRecord> {
        self.call(self.inner.create_policy(policy)).await
    }

    async fn replace_policy(&self, policy: &PolicyRecord) -> Result<PolicyRecord> {
        self.call(self.inner.replace_policy(policy)).await
    }

    async fn policies(&self) -> Result<Vec<PolicyRecord>> {
        self.call(self.inner.policies()).await
    }

    async fn policy(&self, id: Uuid) -> Result<PolicyRecord> {
        self.call(self.inner.policy(id)).await
    }

    async fn create_service(&self, service: &Service) -> Result<Service> {
        self.call(self.inner.create_service(service)).await
    }

    async fn update_service(&self, service: &Service) -> Result<Service> {
        self.call(self.inner.update_service(service)).await
    }

    async fn services(&self) -> Result<Vec<Service>> {
        self.call(self.inner.services()).await
    }

    async fn service(&self, id: Uuid) -> Result<Service> {
        self.call(self.inner.service(id)).await
    }

    async fn create_integration_key(
        &self,
        service_id: Uuid,
        name: &str,
        secret: &TokenSecret,
        at: Timestamp,
    ) -> Result<IntegrationKey> {
        self.call(
            self.inner
                .create_integration_key(service_id, name, secret, at),
        )
        .await
    }

    async fn integration_keys(&self, service_id: Uuid) -> Result<Vec<IntegrationKey>> {
        self.call(self.inner.integration_keys(service_id)).await
    }

    async fn revoke_integration_key(
        &self,
        service_id: Uuid,
        id: Uuid,
        at: Timestamp,
    ) -> Result<IntegrationKey> {
        self.call(self.inner.revoke_integration_key(service_id, id, at))
            .await
    }

    async fn service_by_key(&self, secret: &TokenSecret) -> Result<Option<Service>> {
        self.call(self.inner.service_by_key(secret)).await
    }

    async fn live_incident(&self, service_id: Uuid, dedup_key: &str) -> Result<Option<Incident>> {
        self.call(self.inner.live_incident(service_id, dedup_key))
            .await
    }

    async fn create_heartbeat(
        &self,
        heartbeat: &Heartbeat,
        secret: &TokenSecret,
    ) -> Result<Heartbeat> {
        self.call(self.inner.create_heartbeat(heartbeat, secret))
            .await
    }

    async fn heartbeats(&self, service_id: Uuid) -> Result<Vec<Heartbeat>> {
        self.call(self.inner.heartbeats(service_id)).await
    }

    async fn change_heartbeat(
        &self,
        service_id: Uuid,
        id: Uuid,
        change: &HeartbeatChange,
    ) -> Result<Heartbeat> {
        self.call(self.inner.change_heartbeat(service_id, id, change))
            .await
    }

    async fn retire_heartbeat(
        &self,
        service_id: Uuid,
        id: Uuid,
        at: Timestamp,
    ) -> Result<Heartbeat> {
        self.call(self.inner.retire_heartbeat(service_id, id, at))
            .await
    }

    async fn ping_heartbeat(
        &self,
        secret: &TokenSecret,
        at: Timestamp,
    ) -> Result<Option<Heartbeat>> {
        self.call(self.inner.ping_heartbeat(secret, at)).await
    }

    async fn missed_heartbeats(&self, now: Timestamp) -> Result<Vec<Heartbeat>> {
        self.call(self.inner.missed_heartbeats(now)).await
    }

    async fn note_missed(&self, id: Uuid, incident_id: Uuid, now: Timestamp) -> Result<bool> {
        self.call(self.inner.note_missed(id, incident_id, now))
            .await
    }
}

#[async_trait]
impl Schedules for Guarded {
    async fn create_schedule(&self, schedule: &ScheduleRecord) -> Result<ScheduleRecord> {
        self.call(self.inner.create_schedule(schedule)).await
    }

    async fn update_schedule(&self, schedule: &ScheduleRecord) -> Result<ScheduleRecord> {
        self.call(self.inner.update_schedule(schedule)).await
    }

    async fn schedules(&self) -> Result<Vec<ScheduleRecord>> {
        self.call(self.inner.schedules()).await
    }

    async fn schedule(&self, id: Uuid) -> Result<ScheduleRecord> {
        self.call(self.inner.schedule(id)).await
    }

    async fn add_rotation(&self, rotation: &RotationRecord) -> Result<RotationRecord> {
        self.call(self.inner.add_rotation(rotation)).await
    }

    async fn replace_rotation(&self, rotation: &RotationRecord) -> Result<RotationRecord> {
        self.call(self.inner.replace_rotation(rotation)).await
    }

    async fn rotations(&self, schedule_id: Uuid) -> Result<Vec<RotationRecord>> {
        self.call(self.inner.rotations(schedule_id)).await
    }

    async fn retire_rotation(
        &self,
        schedule_id: Uuid,
        id: Uuid,
        at: Timestamp,
    ) -> Result<RotationRecord> {
        self.call(self.inner.retire_rotation(schedule_id, id, at))
            .await
    }

    async fn add_override(&self, taken: &OverrideRecord) -> Result<OverrideRecord> {
        self.call(self.inner.add_override(taken)).await
    }

    async fn overrides(
        &self,
        schedule_id: Uuid,
        from: Option<Timestamp>,
        to: Option<Timestamp>,
    ) -> Result<Vec<OverrideRecord>> {
        self.call(self.inner.overrides(schedule_id, from, to)).await
    }

    async fn retire_override(
        &self,
        schedule_id: Uuid,
        id: Uuid,
        at: Timestamp,
    ) -> Result<OverrideRecord> {
        self.call(self.inner.retire_override(schedule_id, id, at))
            .await
    }

    async fn layers(
        &self,
        schedule_id: Uuid,
        from: Timestamp,
        to: Timestamp,
    ) -> Result<ScheduleLayers> {
        self.call(self.inner.layers(schedule_id, from, to)).await
    }
}
