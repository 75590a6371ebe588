//! Services (what alerts are about), escalation policies kept as data, and the integration keys
//! alerts arrive with.

use std::time::Duration;

use serde::Serialize;
use uuid::Uuid;

use super::{EscalationLevel, EscalationPolicy, Timestamp};

/// The longest name of a service, a policy or an integration key.
pub const MAX_NAME_CHARS: usize = 100;
/// The most times a policy may walk its levels again after the last.
pub const MAX_REPEAT: u32 = 20;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid `{field}`: {reason}")]
pub struct InvalidService {
    pub field: &'static str,
    pub reason: String,
}

fn invalid(field: &'static str, reason: impl Into<String>) -> InvalidService {
    InvalidService {
        field,
        reason: reason.into(),
    }
}

/// What [`check_name`] accepts, for the OpenAPI document (beside the length, 1 to
/// [`MAX_NAME_CHARS`]): something other than white space, and no control characters.
pub const NAME_PATTERN: &str =
    r"^[^\x00-\x1f\x7f-\x9f]*[^\s\x00-\x1f\x7f-\x9f][^\x00-\x1f\x7f-\x9f]*$";

/// A name: 1 to [`MAX_NAME_CHARS`] characters, not blank, without control characters.
pub fn check_name(field: &'static str, name: &str) -> Result<String, InvalidService> {
    let chars = name.chars().count();
    if name.trim().is_empty() || chars > MAX_NAME_CHARS || name.chars().any(char::is_control) {
        return Err(invalid(
            field,
            format!(
                "must be 1 to {MAX_NAME_CHARS} characters, not blank, without control characters"
            ),
        ));
    }
    Ok(name.trim().to_owned())
}

/// What alerts are about: they open its incidents, under its policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Service {
    pub id: Uuid,
    pub name: String,
    /// Its policy; without one, the configured policy.
    pub escalation_policy_id: Option<Uuid>,
    /// An incident it opens starts escalating at once.
    pub auto_escalate: bool,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

impl Service {
    pub fn new(
        name: &str,
        escalation_policy_id: Option<Uuid>,
        auto_escalate: bool,
        at: Timestamp,
    ) -> Result<Self, InvalidService> {
        Ok(Self {
            id: Uuid::now_v7(),
            name: check_name("name", name)?,
            escalation_policy_id,
            auto_escalate,
            created_at: at,
            updated_at: at,
        })
    }
}

/// A service's key: alerts that carry it are the service's. The secret is shown once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct IntegrationKey {
    pub id: Uuid,
    pub service_id: Uuid,
    pub name: String,
    pub created_at: Timestamp,
    pub revoked_at: Option<Timestamp>,
}

/// A named escalation policy kept as data: its levels and how many times to walk them again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct PolicyRecord {
    pub id: Uuid,
    pub name: String,
    /// The levels, and how many times they are walked again after the last
    /// ([`EscalationPolicy::repeat`]).
    #[schema(value_type = Vec<Object>)]
    pub levels: EscalationPolicy,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

impl PolicyRecord {
    pub fn new(
        name: &str,
        repeat: u32,
        levels: Vec<EscalationLevel>,
        at: Timestamp,
    ) -> Result<Self, InvalidService> {
        if repeat > MAX_REPEAT {
            return Err(invalid("repeat", format!("must be at most {MAX_REPEAT}")));
        }
        let levels = EscalationPolicy::new(levels)
            .map_err(|e| invalid("levels", e.to_string()))?
            .with_repeat(repeat);
        Ok(Self {
            id: Uuid::now_v7(),
            name: check_name("name", name)?,
            levels,
            created_at: at,
            updated_at: at,
        })
    }
}

/// The shortest interval a heartbeat may have.
pub const MIN_HEARTBEAT_INTERVAL: Duration = Duration::from_secs(1);
/// The longest a heartbeat may have: a year, enough for a yearly job's monitor.
pub const MAX_HEARTBEAT_INTERVAL: Duration = Duration::from_secs(366 * 24 * 60 * 60);

/// A heartbeat monitor of a service: pinged at `POST /heartbeats/{key}`; once a ping is late by
/// more than `interval`, it opens an incident on the service, which the next ping resolves. A
/// monitor never pinged is never due.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Heartbeat {
    pub id: Uuid,
    pub service_id: Uuid,
    pub name: String,
    #[serde(with = "super::contact::humantime_text")]
    #[schema(value_type = String, example = "5m")]
    pub interval: Duration,
    pub created_at: Timestamp,
    pub last_ping_at: Option<Timestamp>,
    /// When it is missed: the last ping + the interval.
    pub due_at: Option<Timestamp>,
    /// The incident its miss opened, until a ping resolves it.
    pub incident_id: Option<Uuid>,
    /// When it was retired: kept, but no longer listed, pinged or watched.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retired_at: Option<Timestamp>,
}

impl Heartbeat {
    pub fn new(
        service_id: Uuid,
        name: &str,
        interval: &str,
        at: Timestamp,
    ) -> Result<Self, InvalidService> {
        Ok(Self {
            id: Uuid::now_v7(),
            service_id,
            name: check_name("name", name)?,
            interval: heartbeat_interval(interval)?,
            created_at: at,
            last_ping_at: None,
            due_at: None,
            incident_id: None,
            retired_at: None,
        })
    }

    /// The monitor with `change` made. One pinged before is due again at its last ping + its
    /// interval: a shorter interval can make it missed at once, a longer one gives a late
    /// monitor more time.
    pub fn changed(self, change: &HeartbeatChange) -> Self {
        let interval = change.interval.unwrap_or(self.interval);
        Self {
            name: change.name.clone().unwrap_or(self.name),
            interval,
            due_at: self.last_ping_at.map(|ping| ping.after(interval)),
            ..self
        }
    }

    /// The dedup key of the incident its misses open: one per monitor.
    pub fn dedup_key(&self) -> String {
        format!("heartbeat:{}", self.id)
    }
}

/// A new name or interval for a heartbeat monitor, checked as at creation.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HeartbeatChange {
    pub name: Option<String>,
    pub interval: Option<Duration>,
}

impl HeartbeatChange {
    pub fn new(name: Option<&str>, interval: Option<&str>) -> Result<Self, InvalidService> {
        Ok(Self {
            name: name.map(|name| check_name("name", name)).transpose()?,
            interval: interval.map(heartbeat_interval).transpose()?,
        })
    }
}

/// A heartbeat's interval from its humantime text: [`MIN_HEARTBEAT_INTERVAL`] to
/// [`MAX_HEARTBEAT_INTERVAL`].
fn heartbeat_interval(text: &str) -> Result<Duration, InvalidService> {
    let interval =
        super::contact::humantime_text::parse(text).map_err(|why| invalid("interval", why))?;
    if interval < MIN_HEARTBEAT_INTERVAL {
        return Err(invalid("interval", "must be at least 1s"));
    }
    if interval > MAX_HEARTBEAT_INTERVAL {
        return Err(invalid("interval", "must be at most 366 days"));
    }
    Ok(interval)
}

/// A level's delay from its humantime text.
pub fn delay(text: &str) -> Result<Duration, InvalidService> {
    super::contact::humantime_text::parse(text).map_err(|why| invalid("delay", why))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Channel;

    #[test]
    fn names_are_checked() {
        assert_eq!(check_name("name", "  payments ").unwrap(), "payments");
        assert!(check_name("name", " ").is_err());
        assert!(check_name("name", "a\u{0}b").is_err());
        assert!(check_name("name", &"x".repeat(101)).is_err());
    }

    #[test]
    fn a_heartbeat_interval_is_one_second_to_366_days() {
        assert!(heartbeat_interval("1s").is_ok());
        assert!(heartbeat_interval("366days").is_ok());
        assert_eq!(heartbeat_interval("999ms").unwrap_err().field, "interval");
        assert_eq!(heartbeat_interval("367days").unwrap_err().field, "interval");
        assert_eq!(
            heartbeat_interval("1000000years").unwrap_err().field,
            "interval"
        );
    }

    #[test]
    fn a_policy_needs_numbered_levels_and_a_bounded_repeat() {
        let level = |n| EscalationLevel {
            level: n,
            delay: Duration::ZERO,
            channels: vec![Channel::InApp],
            targets: Vec::new(),
            webhooks: Vec::new(),
            only_during: None,
        };
        let at = Timestamp::from_millis(0);
        assert!(PolicyRecord::new("p", 2, vec![level(1), level(2)], at).is_ok());
        assert_eq!(
            PolicyRecord::new("p", 0, vec![level(2)], at)
                .unwrap_err()
                .field,
            "levels"
        );
        assert_eq!(
            PolicyRecord::new("p", 0, vec![], at).unwrap_err().field,
            "levels"
        );
        assert_eq!(
            PolicyRecord::new("p", 21, vec![level(1)], at)
                .unwrap_err()
                .field,
            "repeat"
        );
    }
}
