//! The incident and its state machine (SPEC §3).
//!
//! [`Transition::plan`] is the whole table: given the status an incident is in and the action a
//! caller asks for, it says which status follows and which side effects the store must commit in
//! the same transaction, or why the action is refused.

use serde::Serialize;
use uuid::Uuid;

use super::{NewEvent, Severity, Timestamp};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "UPPERCASE")]
pub enum IncidentStatus {
    Open,
    Acknowledged,
    Escalating,
    Resolved,
    Cancelled,
}

impl IncidentStatus {
    pub const ALL: [Self; 5] = [
        Self::Open,
        Self::Acknowledged,
        Self::Escalating,
        Self::Resolved,
        Self::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Open => "OPEN",
            Self::Acknowledged => "ACKNOWLEDGED",
            Self::Escalating => "ESCALATING",
            Self::Resolved => "RESOLVED",
            Self::Cancelled => "CANCELLED",
        }
    }

    /// Parses the stored or queried form; case-insensitive, as people type `?status=open`.
    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|status| status.as_str().eq_ignore_ascii_case(text))
    }

    /// Resolved and cancelled incidents never change again and never absorb new events.
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Resolved | Self::Cancelled)
    }

    /// The statuses in which an incident absorbs events that share its `dedup_key`.
    pub fn live() -> impl Iterator<Item = Self> {
        Self::ALL.into_iter().filter(|status| !status.is_terminal())
    }
}

impl std::fmt::Display for IncidentStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a person (or, later, an integration) asks to do to an incident.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Acknowledge,
    Escalate,
    Resolve,
    Cancel,
}

impl Action {
    pub const ALL: [Self; 4] = [
        Self::Acknowledge,
        Self::Escalate,
        Self::Resolve,
        Self::Cancel,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Acknowledge => "acknowledge",
            Self::Escalate => "escalate",
            Self::Resolve => "resolve",
            Self::Cancel => "cancel",
        }
    }
}

impl std::fmt::Display for Action {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The refusal of an action in the status the incident is in (HTTP 409).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("cannot {action} an incident that is {status}")]
pub struct InvalidTransition {
    pub status: IncidentStatus,
    pub action: Action,
}

/// One allowed cell of the state table, with the side effects it carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transition {
    pub from: IncidentStatus,
    pub to: IncidentStatus,
    pub action: Action,
    /// The first level of the escalation policy must be scheduled.
    pub schedules_first_level: bool,
    /// Every `PENDING` escalation of the incident must be marked `CANCELLED`.
    pub cancels_pending: bool,
}

impl Transition {
    pub fn plan(from: IncidentStatus, action: Action) -> Result<Self, InvalidTransition> {
        use Action::*;
        use IncidentStatus::*;
        let to = match (from, action) {
            (Open, Acknowledge) | (Escalating, Acknowledge) => Acknowledged,
            (Open, Escalate) => Escalating,
            (Open | Escalating | Acknowledged, Resolve) => Resolved,
            (Open | Escalating | Acknowledged, Cancel) => Cancelled,
            (status, action) => return Err(InvalidTransition { status, action }),
        };
        Ok(Self {
            from,
            to,
            action,
            schedules_first_level: to == Escalating,
            cancels_pending: from == Escalating,
        })
    }

    /// `at` if entering `status` is what this transition does (it stamps `acknowledged_at`,
    /// `resolved_at` or `cancelled_at`), otherwise `None`: the stamp already there stays.
    pub fn stamp(&self, status: IncidentStatus, at: Timestamp) -> Option<Timestamp> {
        (self.to == status).then_some(at)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Incident {
    pub id: Uuid,
    pub title: String,
    pub severity: Severity,
    pub status: IncidentStatus,
    pub dedup_key: Option<String>,
    pub event_count: i64,
    /// The highest escalation level executed so far; 0 before the first.
    pub escalation_level: i32,
    pub resolution_note: Option<String>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    pub acknowledged_at: Option<Timestamp>,
    pub resolved_at: Option<Timestamp>,
    pub cancelled_at: Option<Timestamp>,
    /// The service it is about, if it came in through one.
    pub service_id: Option<Uuid>,
}

impl Incident {
    /// What its `dedup_key` is unique within among live incidents: its service (`''` for none).
    pub fn dedup_scope(&self) -> String {
        self.service_id.map(|id| id.to_string()).unwrap_or_default()
    }

    /// The incident `event` opens if it does not join a live one.
    pub fn opened_by(event: &NewEvent) -> Self {
        Self {
            id: Uuid::now_v7(),
            title: title_from_text(&event.summary),
            severity: event.severity,
            status: IncidentStatus::Open,
            dedup_key: event.dedup_key.clone(),
            event_count: 1,
            escalation_level: 0,
            resolution_note: None,
            created_at: event.received_at,
            updated_at: event.received_at,
            acknowledged_at: None,
            resolved_at: None,
            cancelled_at: None,
            service_id: event.service.as_ref().map(|service| service.id),
        }
    }
}

/// The longest title an incident gets from the text that opened it.
pub const MAX_TITLE_CHARS: usize = 200;

/// The title of an incident opened by `text`: its first non-blank line, cut to
/// [`MAX_TITLE_CHARS`] characters.
pub fn title_from_text(text: &str) -> String {
    let line = text
        .lines()
        .map(str::trim)
        .find(|line| !line.is_empty())
        .unwrap_or_default();
    match line.char_indices().nth(MAX_TITLE_CHARS) {
        Some((cut, _)) => format!("{}…", &line[..cut]),
        None => line.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Action::*;
    use IncidentStatus::*;

    /// SPEC §3, cell by cell: `None` is a 409.
    const TABLE: [(IncidentStatus, [Option<IncidentStatus>; 4]); 5] = [
        (
            Open,
            [
                Some(Acknowledged),
                Some(Escalating),
                Some(Resolved),
                Some(Cancelled),
            ],
        ),
        (
            Escalating,
            [Some(Acknowledged), None, Some(Resolved), Some(Cancelled)],
        ),
        (Acknowledged, [None, None, Some(Resolved), Some(Cancelled)]),
        (Resolved, [None, None, None, None]),
        (Cancelled, [None, None, None, None]),
    ];

    #[test]
    fn every_cell_of_the_state_table() {
        for (from, row) in TABLE {
            for (action, expected) in Action::ALL.into_iter().zip(row) {
                let planned = Transition::plan(from, action).map(|t| t.to).ok();
                assert_eq!(planned, expected, "{from} + {action}");
            }
        }
    }

    #[test]
    fn refusal_names_status_and_action() {
        let refused = Transition::plan(Resolved, Escalate).unwrap_err();
        assert_eq!(
            refused,
            InvalidTransition {
                status: Resolved,
                action: Escalate
            }
        );
        assert_eq!(
            refused.to_string(),
            "cannot escalate an incident that is RESOLVED"
        );
    }

    #[test]
    fn side_effects() {
        let escalate = Transition::plan(Open, Escalate).unwrap();
        assert!(escalate.schedules_first_level && !escalate.cancels_pending);
        for action in [Acknowledge, Resolve, Cancel] {
            let t = Transition::plan(Escalating, action).unwrap();
            assert!(t.cancels_pending && !t.schedules_first_level, "{action}");
            let t = Transition::plan(Open, action).unwrap();
            assert!(!t.cancels_pending && !t.schedules_first_level, "{action}");
        }
    }

    #[test]
    fn only_resolved_and_cancelled_are_terminal() {
        let terminal: Vec<_> = IncidentStatus::ALL
            .into_iter()
            .filter(|s| s.is_terminal())
            .collect();
        assert_eq!(terminal, [Resolved, Cancelled]);
    }

    #[test]
    fn live_statuses_are_the_non_terminal_ones() {
        assert_eq!(
            IncidentStatus::live().collect::<Vec<_>>(),
            [Open, Acknowledged, Escalating]
        );
    }

    #[test]
    fn status_parses_case_insensitively() {
        assert_eq!(IncidentStatus::parse("escalating"), Some(Escalating));
        assert_eq!(IncidentStatus::parse("OPEN"), Some(Open));
        assert_eq!(IncidentStatus::parse("closed"), None);
    }

    #[test]
    fn title_is_the_first_line_cut_short() {
        assert_eq!(
            title_from_text("\n  disk full on db-1 \nmore"),
            "disk full on db-1"
        );
        let long = "é".repeat(MAX_TITLE_CHARS + 5);
        let title = title_from_text(&long);
        assert_eq!(title.chars().count(), MAX_TITLE_CHARS + 1);
        assert!(title.ends_with('…'));
    }
}
