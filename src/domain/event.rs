//! One normalized signal. Every message becomes exactly one event; events are never deleted.

use serde::Serialize;
use uuid::Uuid;

use super::{Severity, Timestamp};

/// A signal as it arrives, before the store decides which incident it opens or joins.
#[derive(Debug, Clone)]
pub struct NewEvent {
    pub source: String,
    pub summary: String,
    pub severity: Severity,
    pub dedup_key: Option<String>,
    /// The request body as received, kept for the audit trail.
    pub payload: serde_json::Value,
    /// Who submitted it: a token's name, or an integration.
    pub actor: String,
    pub received_at: Timestamp,
    /// The service it came in for, if any: its `dedup_key` is unique within the service.
    pub service: Option<EventService>,
}

/// The service an event came in for, and what an incident it opens does.
#[derive(Debug, Clone)]
pub struct EventService {
    pub id: Uuid,
    /// The policy an incident it opens starts escalating under at once (the service's
    /// `auto_escalate`); `None` leaves the incident `OPEN`.
    pub escalate: Option<std::sync::Arc<super::EscalationPolicy>>,
}

impl NewEvent {
    /// What it deduplicates by: its service and its `dedup_key`, if it has one.
    pub fn dedup_identity(&self) -> Option<(Option<Uuid>, &str)> {
        let service = self.service.as_ref().map(|service| service.id);
        self.dedup_key.as_deref().map(|key| (service, key))
    }

    /// The policy it starts escalating under if it opens an incident.
    pub fn escalates(&self) -> Option<&std::sync::Arc<super::EscalationPolicy>> {
        self.service
            .as_ref()
            .and_then(|service| service.escalate.as_ref())
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Event {
    pub id: Uuid,
    pub incident_id: Uuid,
    pub source: String,
    pub summary: String,
    pub severity: Severity,
    pub dedup_key: Option<String>,
    #[schema(value_type = Object)]
    pub payload: serde_json::Value,
    pub received_at: Timestamp,
}

impl Event {
    /// `new` as stored, once it is known which incident it opened or joined.
    pub fn of(new: &NewEvent, incident_id: Uuid) -> Self {
        Self {
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
}
