//! Escalation policies: which level runs how long after the one before, over which channels.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// A way to reach a person (or a webhook). `personal` is a level's way of saying "through each
/// target's own notification rules": it plans notifications on the other channels.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Channel {
    InApp,
    Email,
    Sms,
    Voice,
    Push,
    Webhook,
    Personal,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EscalationLevel {
    pub level: i32,
    /// After the escalate action for level 1; after the previous level executed for the others.
    #[serde(with = "humantime_millis")]
    pub delay: Duration,
    pub channels: Vec<Channel>,
    /// The handles of the users this level tells; none tells every active responder and admin.
    /// Resolved when the level executes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub targets: Vec<String>,
    /// The webhooks (`[webhooks.<name>]`) the `webhook` channel posts to.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub webhooks: Vec<String>,
}

/// The ordered levels of a policy. Invariant (checked by [`EscalationPolicy::new`], which
/// deserializing goes through too): levels are numbered 1, 2, 3, … in order, and there is at least
/// one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "Vec<EscalationLevel>", into = "Vec<EscalationLevel>")]
pub struct EscalationPolicy {
    levels: Vec<EscalationLevel>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    #[error("at least one level is required")]
    Empty,
    #[error(
        "levels must be numbered 1, 2, 3, … in order; found {found} where {expected} was expected"
    )]
    Numbering { expected: i32, found: i32 },
}

impl TryFrom<Vec<EscalationLevel>> for EscalationPolicy {
    type Error = PolicyError;

    fn try_from(levels: Vec<EscalationLevel>) -> Result<Self, Self::Error> {
        Self::new(levels)
    }
}

impl From<EscalationPolicy> for Vec<EscalationLevel> {
    fn from(policy: EscalationPolicy) -> Self {
        policy.levels
    }
}

/// What is wrong with one level, and which of its fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LevelProblem {
    pub field: &'static str,
    pub reason: String,
}

impl EscalationLevel {
    /// Checks what a level says on its own: at least one channel, no blank target, webhooks named
    /// exactly when the webhook channel is, and each of them one that `webhook_exists`.
    pub fn check(&self, webhook_exists: impl Fn(&str) -> bool) -> Result<(), LevelProblem> {
        let problem = |field, reason: String| Err(LevelProblem { field, reason });
        if self.channels.is_empty() {
            return problem("channels", "name at least one channel".into());
        }
        if let Some(blank) = self.targets.iter().find(|handle| handle.trim().is_empty()) {
            return problem("targets", format!("{blank:?} is not a user handle"));
        }
        let posts = self.channels.contains(&Channel::Webhook);
        if posts && self.webhooks.is_empty() {
            return problem(
                "webhooks",
                "the webhook channel needs the names of the webhooks to post to".into(),
            );
        }
        if !posts && !self.webhooks.is_empty() {
            return problem(
                "channels",
                "webhooks are named but the webhook channel is not".into(),
            );
        }
        if let Some(unknown) = self.webhooks.iter().find(|name| !webhook_exists(name)) {
            return problem("webhooks", format!("no [webhooks.{unknown}] is configured"));
        }
        Ok(())
    }
}

impl EscalationPolicy {
    pub fn new(levels: Vec<EscalationLevel>) -> Result<Self, PolicyError> {
        if levels.is_empty() {
            return Err(PolicyError::Empty);
        }
        for (expected, level) in (1..).zip(&levels) {
            if level.level != expected {
                return Err(PolicyError::Numbering {
                    expected,
                    found: level.level,
                });
            }
        }
        Ok(Self { levels })
    }

    /// The prototype's policy: 5 minutes in-app, then 15 minutes email, then 60 minutes SMS.
    pub fn standard() -> Self {
        let level = |level: i32, minutes: u64, channel| EscalationLevel {
            level,
            delay: Duration::from_secs(minutes * 60),
            channels: vec![channel],
            targets: Vec::new(),
            webhooks: Vec::new(),
        };
        Self {
            levels: vec![
                level(1, 5, Channel::InApp),
                level(2, 15, Channel::Email),
                level(3, 60, Channel::Sms),
            ],
        }
    }

    pub fn levels(&self) -> &[EscalationLevel] {
        &self.levels
    }

    /// The level numbered `level` (from 1).
    pub fn level(&self, level: i32) -> Option<&EscalationLevel> {
        usize::try_from(level - 1)
            .ok()
            .and_then(|index| self.levels.get(index))
    }

    pub fn first(&self) -> &EscalationLevel {
        &self.levels[0]
    }

    /// The level that follows `level`, or `None` after the last.
    pub fn after(&self, level: i32) -> Option<&EscalationLevel> {
        usize::try_from(level)
            .ok()
            .and_then(|index| self.levels.get(index))
    }
}

/// Stores delays as whole milliseconds, so that a snapshot reads back exactly.
mod humantime_millis {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(delay: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_u64(u64::try_from(delay.as_millis()).unwrap_or(u64::MAX))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
        u64::deserialize(deserializer).map(Duration::from_millis)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn standard_policy_is_the_prototypes() {
        let policy = EscalationPolicy::standard();
        let delays: Vec<_> = policy.levels().iter().map(|l| l.delay.as_secs()).collect();
        assert_eq!(delays, [300, 900, 3600]);
        assert_eq!(policy.first().level, 1);
        assert_eq!(policy.after(1).map(|l| l.level), Some(2));
        assert_eq!(policy.after(3), None);
    }

    #[test]
    fn levels_must_be_numbered_in_order() {
        let mut levels = EscalationPolicy::standard().levels().to_vec();
        levels.swap(0, 1);
        assert_eq!(
            EscalationPolicy::new(levels),
            Err(PolicyError::Numbering {
                expected: 1,
                found: 2
            })
        );
        assert_eq!(EscalationPolicy::new(vec![]), Err(PolicyError::Empty));
    }

    #[test]
    fn snapshot_round_trips_through_json() {
        let policy = EscalationPolicy::standard();
        let json = serde_json::to_value(&policy).unwrap();
        assert_eq!(json[0]["delay"], 300_000);
        assert_eq!(json[0]["channels"][0], "in_app");
        let back: EscalationPolicy = serde_json::from_value(json).unwrap();
        assert_eq!(back, policy);
    }

    #[test]
    fn deserializing_checks_the_levels() {
        let gap = serde_json::json!([{ "level": 2, "delay": 0, "channels": ["sms"] }]);
        let error = serde_json::from_value::<EscalationPolicy>(gap).unwrap_err();
        assert!(error.to_string().contains("numbered 1, 2, 3"), "{error}");
        assert!(serde_json::from_value::<EscalationPolicy>(serde_json::json!([])).is_err());
    }
}
