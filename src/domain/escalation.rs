//! One scheduled level of an incident's escalation policy. Never deleted: a level that will not
//! run is marked `CANCELLED`.

use serde::Serialize;
use uuid::Uuid;

use super::Timestamp;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "UPPERCASE")]
pub enum EscalationStatus {
    Pending,
    Executed,
    Cancelled,
}

impl EscalationStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "PENDING",
            Self::Executed => "EXECUTED",
            Self::Cancelled => "CANCELLED",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        [Self::Pending, Self::Executed, Self::Cancelled]
            .into_iter()
            .find(|status| status.as_str() == text)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Escalation {
    pub id: Uuid,
    pub incident_id: Uuid,
    pub escalation_level: i32,
    pub status: EscalationStatus,
    pub scheduled_at: Timestamp,
    pub executed_at: Option<Timestamp>,
    pub cancelled_at: Option<Timestamp>,
    pub created_at: Timestamp,
}
