//! Heartbeat monitors: a monitor whose last ping is older than its interval opens an incident
//! on its service (escalating at once if the service does), once; the next ping resolves it
//! (`POST /heartbeats/{key}`). A monitor never pinged never fires.
//!
//! The watch runs beside the escalation worker, on every instance that runs one. Two instances
//! may both see a miss: the incident's dedup key (one per monitor) makes the second join the
//! first's incident, and only one of them notes it on the monitor.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use super::Scheduler;
use crate::backoff::Backoff;
use crate::domain::{Action, EscalationPolicy, Heartbeat, NewEvent, Severity, Timestamp};
use crate::live::Live;
use crate::store::catalog::event_service;
use crate::store::{Store, StoreError, TransitionRequest};

/// How often the watch looks for missed monitors: a miss is noticed within this.
pub const CHECK_INTERVAL: Duration = Duration::from_secs(1);

pub struct HeartbeatWatch {
    pub store: Arc<dyn Store>,
    pub scheduler: Scheduler,
    /// The configured policy, for services without one of their own; SIGHUP replaces it.
    pub policy: Live<EscalationPolicy>,
}

impl HeartbeatWatch {
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        let mut backoff = Backoff::default();
        while !*shutdown.borrow() {
            let wait = match self.check(Timestamp::now()).await {
                Ok(()) => {
                    backoff.reset();
                    CHECK_INTERVAL
                }
                Err(error) => {
                    if !backoff.is_failing() {
                        tracing::warn!(%error, "heartbeat watch cannot reach the database; retrying with backoff");
                    }
                    backoff.next_delay()
                }
            };
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = shutdown.changed() => {}
            }
        }
    }

    /// Opens an incident for each monitor missed at `now`.
    pub async fn check(&self, now: Timestamp) -> Result<(), StoreError> {
        for heartbeat in self.store.missed_heartbeats(now).await? {
            self.missed(&heartbeat, now).await?;
        }
        Ok(())
    }

    /// Opens (or joins) the incident of `heartbeat`, missed at `now`, and notes it on the monitor.
    pub async fn missed(&self, heartbeat: &Heartbeat, now: Timestamp) -> Result<(), StoreError> {
        let service = self.store.service(heartbeat.service_id).await?;
        let since = heartbeat
            .last_ping_at
            .map_or_else(|| "ever".to_owned(), |at| at.to_string());
        let event = NewEvent {
            source: "heartbeat".into(),
            summary: format!(
                "Heartbeat \"{}\" missed: no ping within {} (last ping {since})",
                heartbeat.name,
                humantime::format_duration(heartbeat.interval)
            ),
            severity: Severity::Error,
            dedup_key: Some(heartbeat.dedup_key()),
            payload: serde_json::json!({"heartbeat_id": heartbeat.id, "name": heartbeat.name}),
            actor: format!("heartbeat:{}", heartbeat.name),
            received_at: now,
            service: Some(event_service(self.store.as_ref(), &service, &self.policy.get()).await?),
        };
        let ingested = self.store.ingest(event).await?;
        if let Some(scheduled) = ingested.scheduled {
            self.scheduler.scheduled(&[scheduled]).await;
        }
        let incident = ingested.incident.id;
        if self.store.note_missed(heartbeat.id, incident, now).await? {
            tracing::warn!(heartbeat_id = %heartbeat.id, incident_id = %incident, "heartbeat missed");
            return Ok(());
        }
        // Not noted: another instance noted its own (the same incident, by its dedup key), or a
        // ping came in between the read and the incident. Then the miss no longer stands, and
        // the incident it opened is resolved rather than left to page anyone.
        let pinged = self
            .store
            .heartbeats(heartbeat.service_id)
            .await?
            .into_iter()
            .find(|h| h.id == heartbeat.id)
            .is_some_and(|h| h.incident_id.is_none() && h.due_at.is_some_and(|due| due > now));
        if pinged && !ingested.deduplicated {
            let request = TransitionRequest {
                incident_id: incident,
                action: Action::Resolve,
                actor: format!("heartbeat:{}", heartbeat.name),
                note: Some("the heartbeat was pinged as the miss was seen".into()),
                at: Timestamp::now(),
                policy: self.policy.get(),
                link: None,
            };
            match self.store.transition(request).await {
                Ok(outcome) => self.scheduler.transitioned(&outcome).await,
                Err(StoreError::InvalidTransition(_)) => {}
                Err(error) => return Err(error),
            }
        }
        Ok(())
    }
}
