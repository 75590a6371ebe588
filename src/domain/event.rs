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
