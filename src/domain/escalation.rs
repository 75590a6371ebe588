//! One scheduled level of an incident's escalation policy. Never deleted: a level that will not
//! run is marked `CANCELLED`.

use serde::Serialize;
use uuid::Uuid;

use super::{EscalationPolicy, Timestamp};

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

impl Escalation {
    /// The `PENDING` row that schedules `next`, created `at`.
    pub fn pending(next: &NextLevel, at: Timestamp) -> Self {
        Self {
            id: Uuid::now_v7(),
            incident_id: next.incident_id,
            escalation_level: next.level,
            status: EscalationStatus::Pending,
            scheduled_at: next.due,
            executed_at: None,
            cancelled_at: None,
            created_at: at,
        }
    }
}

/// A level to schedule: level 1 when an incident starts escalating, or the level after one that
/// executed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NextLevel {
    pub incident_id: Uuid,
    pub level: i32,
    pub due: Timestamp,
}

impl NextLevel {
    /// Level 1 of `policy` for an incident that starts escalating `at`.
    pub fn first(incident_id: Uuid, policy: &EscalationPolicy, at: Timestamp) -> Self {
        let level = policy.first();
        Self {
            incident_id,
            level: level.level,
            due: at.after(level.delay),
        }
    }

    /// The level of `policy` that follows `executed`, due at `at` itself: `executed` reached
    /// nobody (nobody on call, or outside its window), so waiting gives nobody time to act.
    /// `None` after the last.
    pub fn at_once(
        executed: &Escalation,
        policy: &EscalationPolicy,
        at: Timestamp,
    ) -> Option<Self> {
        Self::after(executed, policy, at).map(|next| Self { due: at, ..next })
    }

    /// The level of `policy` that follows `executed`, which executed `at`; `None` after the last.
    pub fn after(executed: &Escalation, policy: &EscalationPolicy, at: Timestamp) -> Option<Self> {
        policy.after(executed.escalation_level).map(|level| Self {
            incident_id: executed.incident_id,
            // The step of the walk, which a repeating policy numbers on past its last level.
            level: executed.escalation_level + 1,
            due: at.after(level.delay),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn due(level: i32) -> Escalation {
        let next = NextLevel {
            incident_id: Uuid::now_v7(),
            level,
            due: Timestamp::from_millis(1_000),
        };
        Escalation::pending(&next, Timestamp::from_millis(0))
    }

    #[test]
    fn each_level_follows_the_last_executed_and_the_walk_stops_after_the_last() {
        let policy = EscalationPolicy::standard();
        let at = Timestamp::from_millis(0);
        let first = NextLevel::first(Uuid::nil(), &policy, at);
        assert_eq!((first.level, first.due.as_millis()), (1, 300_000));
        let second = NextLevel::after(&due(1), &policy, at).unwrap();
        assert_eq!((second.level, second.due.as_millis()), (2, 900_000));
        assert_eq!(NextLevel::after(&due(3), &policy, at), None);
    }
}
