//! The append-only audit trail of an incident.

use serde::Serialize;
use uuid::Uuid;

use super::notification::{Notification, NotificationStatus, Outcome};
use super::{Action, Channel, Escalation, Event, IncidentStatus, Timestamp};

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
    #[serde(rename = "escalation.target_unresolved")]
    TargetUnresolved,
    #[serde(rename = "escalation.fell_back_to_admins")]
    FellBackToAdmins,
    #[serde(rename = "notification.sent")]
    NotificationSent,
    #[serde(rename = "notification.retrying")]
    NotificationRetrying,
    #[serde(rename = "notification.failed")]
    NotificationFailed,
    #[serde(rename = "notification.cancelled")]
    NotificationsCancelled,
    #[serde(rename = "notification.delivered")]
    NotificationDelivered,
    #[serde(rename = "notification.undelivered")]
    NotificationUndelivered,
}

impl TimelineKind {
    const ALL: [Self; 17] = [
        Self::IncidentCreated,
        Self::EventAppended,
        Self::IncidentAcknowledged,
        Self::IncidentEscalated,
        Self::IncidentResolved,
        Self::IncidentCancelled,
        Self::EscalationScheduled,
        Self::EscalationCancelled,
        Self::EscalationExecuted,
        Self::TargetUnresolved,
        Self::FellBackToAdmins,
        Self::NotificationSent,
        Self::NotificationRetrying,
        Self::NotificationFailed,
        Self::NotificationsCancelled,
        Self::NotificationDelivered,
        Self::NotificationUndelivered,
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
            Self::TargetUnresolved => "escalation.target_unresolved",
            Self::FellBackToAdmins => "escalation.fell_back_to_admins",
            Self::NotificationSent => "notification.sent",
            Self::NotificationRetrying => "notification.retrying",
            Self::NotificationFailed => "notification.failed",
            Self::NotificationsCancelled => "notification.cancelled",
            Self::NotificationDelivered => "notification.delivered",
            Self::NotificationUndelivered => "notification.undelivered",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|kind| kind.as_str() == text)
    }

    /// The entry a transition by `action` writes.
    pub fn for_transition(action: Action) -> Self {
        match action {
            Action::Acknowledge => Self::IncidentAcknowledged,
            Action::Escalate => Self::IncidentEscalated,
            Action::Resolve => Self::IncidentResolved,
            Action::Cancel => Self::IncidentCancelled,
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

/// What an entry records, one variant per kind of happening: the kind is derived from it, and it
/// is stored as the entry's JSON `detail` (the variant's fields, untagged).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum TimelineDetail {
    /// An event opened the incident, or joined it through its `dedup_key`.
    Ingested {
        #[serde(skip)]
        deduplicated: bool,
        event_id: Uuid,
        source: String,
    },
    /// A person or integration moved the incident through the state machine.
    Transitioned {
        #[serde(skip)]
        action: Action,
        from: IncidentStatus,
        #[serde(skip_serializing_if = "Option::is_none")]
        note: Option<String>,
        /// A resolve's note is kept on the incident too, under this name.
        #[serde(skip_serializing_if = "Option::is_none")]
        resolution_note: Option<String>,
    },
    EscalationScheduled {
        escalation_id: Uuid,
        escalation_level: i32,
        scheduled_at: Timestamp,
    },
    EscalationExecuted {
        escalation_id: Uuid,
        escalation_level: i32,
        scheduled_at: Timestamp,
        /// How late it ran: executed_at − scheduled_at.
        lag_ms: i64,
        /// Why the level told nobody, when it did: no active user it names, and no active admin.
        #[serde(skip_serializing_if = "Option::is_none")]
        reached_nobody: Option<String>,
    },
    EscalationCancelled {
        escalation_id: Uuid,
        escalation_level: i32,
        reason: String,
    },
    /// A level's target named no active user when the level executed.
    TargetUnresolved {
        escalation_level: i32,
        target: String,
        reason: String,
    },
    /// Nobody a level named could be told, so every active admin was.
    FellBackToAdmins {
        escalation_level: i32,
        admins: Vec<String>,
        reason: String,
    },
    /// One attempt to deliver a notification, and what came of it.
    NotificationAttempted {
        #[serde(skip)]
        status: NotificationStatus,
        notification_id: Uuid,
        channel: Channel,
        recipient: String,
        attempt: i32,
        /// The provider that carried the attempt, where the channel has several.
        #[serde(skip_serializing_if = "Option::is_none")]
        provider: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        provider_id: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        error: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        retry_at: Option<Timestamp>,
        /// Sent in one digest with this many notifications, the rate limit having held them.
        #[serde(skip_serializing_if = "Option::is_none")]
        digest_of: Option<usize>,
    },
    /// The incident stopped escalating before these notifications were sent.
    NotificationsCancelled { count: usize, reason: String },
    /// The provider's receipt for a message: it reached the phone, or it did not (and the
    /// notification fails over to the next provider, or is retried, or has failed).
    NotificationReceipt {
        #[serde(skip)]
        delivered: bool,
        notification_id: Uuid,
        channel: Channel,
        recipient: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        provider: Option<String>,
        provider_message_id: String,
        /// The provider's status word (`delivered`, `undelivered`, `no-answer`, …).
        status: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        error: Option<String>,
        /// What happens next for an undelivered one: `failover`, `retry` or `failed`, or
        /// `stopped` when the incident no longer escalates.
        #[serde(skip_serializing_if = "Option::is_none")]
        then: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        retry_at: Option<Timestamp>,
    },
}

impl TimelineDetail {
    pub fn ingested(event: &Event, deduplicated: bool) -> Self {
        Self::Ingested {
            deduplicated,
            event_id: event.id,
            source: event.source.clone(),
        }
    }

    /// A transition by `action` from `from`, with the caller's note if any.
    pub fn transitioned(action: Action, from: IncidentStatus, note: Option<String>) -> Self {
        let (note, resolution_note) = match action {
            Action::Resolve => (None, note),
            _ => (note, None),
        };
        Self::Transitioned {
            action,
            from,
            note,
            resolution_note,
        }
    }

    pub fn scheduled(escalation: &Escalation) -> Self {
        Self::EscalationScheduled {
            escalation_id: escalation.id,
            escalation_level: escalation.escalation_level,
            scheduled_at: escalation.scheduled_at,
        }
    }

    /// `escalation`, executed at `at`, having told nobody for the reason given, if so.
    pub fn executed(
        escalation: &Escalation,
        at: Timestamp,
        reached_nobody: Option<String>,
    ) -> Self {
        Self::EscalationExecuted {
            escalation_id: escalation.id,
            escalation_level: escalation.escalation_level,
            scheduled_at: escalation.scheduled_at,
            lag_ms: at.as_millis() - escalation.scheduled_at.as_millis(),
            reached_nobody,
        }
    }

    pub fn cancelled(escalation: &Escalation, reason: impl Into<String>) -> Self {
        Self::EscalationCancelled {
            escalation_id: escalation.id,
            escalation_level: escalation.escalation_level,
            reason: reason.into(),
        }
    }

    /// `notification` as sent (by being stored, for in-app), in a digest of `digest_of` if so.
    pub fn notification_sent(notification: &Notification, digest_of: Option<usize>) -> Self {
        Self::NotificationAttempted {
            status: NotificationStatus::Sent,
            notification_id: notification.id,
            channel: notification.channel,
            recipient: notification.recipient.clone(),
            attempt: notification.attempts,
            provider: notification.provider.clone(),
            provider_id: notification.provider_id.clone(),
            error: None,
            retry_at: None,
            digest_of,
        }
    }

    /// What attempt number `attempt` of `notification` came to.
    pub fn attempted(
        notification: &Notification,
        attempt: i32,
        outcome: &Outcome,
        digest_of: Option<usize>,
    ) -> Self {
        Self::NotificationAttempted {
            status: outcome.status,
            notification_id: notification.id,
            channel: notification.channel,
            recipient: notification.recipient.clone(),
            attempt,
            provider: outcome.provider.clone(),
            provider_id: outcome.provider_id.clone(),
            error: outcome.last_error.clone(),
            retry_at: (outcome.status == NotificationStatus::Pending).then_some(outcome.due_at),
            digest_of,
        }
    }

    pub fn kind(&self) -> TimelineKind {
        match self {
            Self::TargetUnresolved { .. } => TimelineKind::TargetUnresolved,
            Self::FellBackToAdmins { .. } => TimelineKind::FellBackToAdmins,
            Self::NotificationAttempted { status, .. } => match status {
                NotificationStatus::Sent | NotificationStatus::Delivered => {
                    TimelineKind::NotificationSent
                }
                NotificationStatus::Pending => TimelineKind::NotificationRetrying,
                NotificationStatus::Failed | NotificationStatus::Cancelled => {
                    TimelineKind::NotificationFailed
                }
            },
            Self::NotificationsCancelled { .. } => TimelineKind::NotificationsCancelled,
            Self::NotificationReceipt {
                delivered: true, ..
            } => TimelineKind::NotificationDelivered,
            Self::NotificationReceipt {
                delivered: false, ..
            } => TimelineKind::NotificationUndelivered,
            Self::Ingested {
                deduplicated: false,
                ..
            } => TimelineKind::IncidentCreated,
            Self::Ingested {
                deduplicated: true, ..
            } => TimelineKind::EventAppended,
            Self::Transitioned { action, .. } => TimelineKind::for_transition(*action),
            Self::EscalationScheduled { .. } => TimelineKind::EscalationScheduled,
            Self::EscalationExecuted { .. } => TimelineKind::EscalationExecuted,
            Self::EscalationCancelled { .. } => TimelineKind::EscalationCancelled,
        }
    }

    /// The JSON stored as the entry's `detail`.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or_default()
    }
}

/// An entry about to be appended.
#[derive(Debug, Clone, PartialEq)]
pub struct NewTimelineEntry {
    pub id: Uuid,
    pub incident_id: Uuid,
    pub at: Timestamp,
    pub actor: Actor,
    pub detail: TimelineDetail,
}

impl NewTimelineEntry {
    pub fn new(incident_id: Uuid, at: Timestamp, actor: &str, detail: TimelineDetail) -> Self {
        Self {
            id: Uuid::now_v7(),
            incident_id,
            at,
            actor: actor.to_owned(),
            detail,
        }
    }

    /// An entry for what Klaxon did by itself.
    pub fn system(incident_id: Uuid, at: Timestamp, detail: TimelineDetail) -> Self {
        Self::new(incident_id, at, SYSTEM_ACTOR, detail)
    }

    pub fn kind(&self) -> TimelineKind {
        self.detail.kind()
    }
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

    #[test]
    fn details_are_stored_as_their_fields() {
        let id = Uuid::nil();
        let at = Timestamp::from_millis(1_000);
        let acknowledged = TimelineDetail::transitioned(
            Action::Acknowledge,
            IncidentStatus::Escalating,
            Some("on it".into()),
        );
        assert_eq!(acknowledged.kind(), TimelineKind::IncidentAcknowledged);
        assert_eq!(
            acknowledged.to_json(),
            serde_json::json!({ "from": "ESCALATING", "note": "on it" })
        );
        let resolved = TimelineDetail::transitioned(
            Action::Resolve,
            IncidentStatus::Open,
            Some("done".into()),
        );
        assert_eq!(
            resolved.to_json(),
            serde_json::json!({ "from": "OPEN", "resolution_note": "done" })
        );
        let escalation = Escalation {
            id,
            incident_id: id,
            escalation_level: 2,
            status: super::super::EscalationStatus::Executed,
            scheduled_at: at,
            executed_at: Some(Timestamp::from_millis(1_004)),
            cancelled_at: None,
            created_at: at,
        };
        let executed = TimelineDetail::executed(&escalation, Timestamp::from_millis(1_004), None);
        assert_eq!(executed.kind(), TimelineKind::EscalationExecuted);
        assert_eq!(
            executed.to_json(),
            serde_json::json!({
                "escalation_id": id, "escalation_level": 2,
                "scheduled_at": "1970-01-01T00:00:01.000Z", "lag_ms": 4
            })
        );
        let cancelled = TimelineDetail::cancelled(&escalation, "acknowledge");
        assert_eq!(
            cancelled.to_json(),
            serde_json::json!({ "escalation_id": id, "escalation_level": 2, "reason": "acknowledge" })
        );
    }
}
