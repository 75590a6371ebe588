//! The append-only audit trail of an incident.

use serde::Serialize;
use uuid::Uuid;

use super::Timestamp;

/// What happened. Stored as its dotted name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub enum TimelineKind {
    #[serde(rename = "incident.created")]
    IncidentCreated,
    #[serde(rename = "event.appended")]
    EventAppended,
    #[serde(rename = "incident.acknowledged")]
    IncidentAcknowledged,
    #[serde(rename = "incident.escalated")]
    IncidentEscalated,
    #[serde(rename = "incident.resolved")]
    IncidentResolved,
    #[serde(rename = "incident.cancelled")]
    IncidentCancelled,
    #[serde(rename = "escalation.scheduled")]
    EscalationScheduled,
    #[serde(rename = "escalation.cancelled")]
    EscalationCancelled,
    #[serde(rename = "escalation.executed")]
    EscalationExecuted,
}

impl TimelineKind {
    const ALL: [Self; 9] = [
        Self::IncidentCreated,
        Self::EventAppended,
        Self::IncidentAcknowledged,
        Self::IncidentEscalated,
        Self::IncidentResolved,
        Self::IncidentCancelled,
        Self::EscalationScheduled,
        Self::EscalationCancelled,
        Self::EscalationExecuted,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::IncidentCreated => "incident.created",
            Self::EventAppended => "event.appended",
            Self::IncidentAcknowledged => "incident.acknowledged",
            Self::IncidentEscalated => "incident.escalated",
            Self::IncidentResolved => "incident.resolved",
            Self::IncidentCancelled => "incident.cancelled",
            Self::EscalationScheduled => "escalation.scheduled",
            Self::EscalationCancelled => "escalation.cancelled",
            Self::EscalationExecuted => "escalation.executed",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|kind| kind.as_str() == text)
    }

    /// The entry a transition to `status` writes.
    pub fn for_transition(action: super::Action) -> Self {
        match action {
            super::Action::Acknowledge => Self::IncidentAcknowledged,
            super::Action::Escalate => Self::IncidentEscalated,
            super::Action::Resolve => Self::IncidentResolved,
            super::Action::Cancel => Self::IncidentCancelled,
        }
    }
}

/// Who did it: a token's name, `system` for the engine, or an integration's name.
pub type Actor = String;

/// The actor of everything Klaxon does by itself.
pub const SYSTEM_ACTOR: &str = "system";

#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct TimelineEntry {
    pub id: Uuid,
    #[serde(skip)]
    pub incident_id: Uuid,
    pub at: Timestamp,
    pub kind: TimelineKind,
    pub actor: Actor,
    #[schema(value_type = Object)]
    pub detail: serde_json::Value,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_round_trip_and_match_their_json_names() {
        for kind in TimelineKind::ALL {
            assert_eq!(TimelineKind::parse(kind.as_str()), Some(kind));
            assert_eq!(serde_json::to_value(kind).unwrap(), kind.as_str());
        }
    }
}
