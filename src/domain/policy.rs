//! Escalation policies: which level runs how long after the one before, over which channels.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::schedule::{RestrictionFields, TimeWindow};
use super::Timestamp;

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
    /// Whom this level tells: user handles, and `schedule:<name>` for whoever is on call in
    /// that schedule; none tells every active responder and admin. Resolved when the level
    /// executes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub targets: Vec<String>,
    /// The webhooks (`[webhooks.<name>]`) the `webhook` channel posts to.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub webhooks: Vec<String>,
    /// When the level runs; outside this window it is skipped, with a timeline entry, and the
    /// next level follows at once. Always, when not given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub only_during: Option<OnlyDuring>,
}

/// The prefix of a level's target that names a schedule: `schedule:<name>`.
pub const SCHEDULE_TARGET: &str = "schedule:";

/// A level's time window: weekdays and a daily window, in a time zone, such as Mon–Fri
/// 09:00–17:00 in Europe/Berlin. A window whose end is not after its start crosses midnight.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct OnlyDuring {
    #[serde(flatten)]
    pub window: RestrictionFields,
    /// An IANA time zone name.
    #[schema(example = "Europe/Berlin")]
    pub time_zone: String,
}

impl OnlyDuring {
    /// Whether the window is open at `at`. A window that no longer reads (its zone gone from
    /// the tz database) is taken as open: a level is never skipped for want of knowing.
    pub fn contains(&self, at: Timestamp) -> bool {
        TimeWindow::new(&self.time_zone, &self.window)
            .map(|window| window.contains(at.as_datetime()))
            .unwrap_or(true)
    }
}

impl EscalationLevel {
    /// The schedule names among the level's targets.
    pub fn schedules(&self) -> impl Iterator<Item = &str> {
        self.targets
            .iter()
            .filter_map(|target| target.strip_prefix(SCHEDULE_TARGET))
    }
}

/// The ordered levels of a policy, and how many times to walk them again after the last
/// (`repeat`). Invariant (checked by [`EscalationPolicy::new`], which deserializing goes through
/// too): levels are numbered 1, 2, 3, … in order, and there is at least one.
///
/// A walk is numbered on: with 2 levels and `repeat = 1`, steps 1, 2, 3, 4 are levels 1, 2, 1, 2
/// (an escalation's `escalation_level` is its step, unique per incident).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "PolicyForm", into = "PolicyForm")]
pub struct EscalationPolicy {
    levels: Vec<EscalationLevel>,
    repeat: u32,
}

/// How a policy is stored in an incident's snapshot: its levels alone (as every snapshot taken
/// before `repeat` existed is), or with `repeat` when it repeats.
#[derive(Serialize, Deserialize)]
#[serde(untagged)]
enum PolicyForm {
    Levels(Vec<EscalationLevel>),
    Repeating {
        levels: Vec<EscalationLevel>,
        repeat: u32,
    },
}

impl TryFrom<PolicyForm> for EscalationPolicy {
    type Error = PolicyError;

    fn try_from(form: PolicyForm) -> Result<Self, Self::Error> {
        match form {
            PolicyForm::Levels(levels) => Self::new(levels),
            PolicyForm::Repeating { levels, repeat } => Ok(Self::new(levels)?.with_repeat(repeat)),
        }
    }
}

impl From<EscalationPolicy> for PolicyForm {
    fn from(policy: EscalationPolicy) -> Self {
        match policy.repeat {
            0 => Self::Levels(policy.levels),
            repeat => Self::Repeating {
                levels: policy.levels,
                repeat,
            },
        }
    }
}

/// The longest wait before a level: a year. Anything longer is a typo, and the instants it
/// would give are past what RFC 3339 can write.
pub const MAX_LEVEL_DELAY: Duration = Duration::from_secs(365 * 24 * 60 * 60);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    #[error("at least one level is required")]
    Empty,
    #[error("at least one level must run at any time (have no `only_during`), so that a page always reaches someone")]
    AlwaysWindowed,
    #[error(
        "levels must be numbered 1, 2, 3, … in order; found {found} where {expected} was expected"
    )]
    Numbering { expected: i32, found: i32 },
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
        if self.delay > MAX_LEVEL_DELAY {
            return problem("delay", "must be at most 365 days".into());
        }
        if self.channels.is_empty() {
            return problem("channels", "name at least one channel".into());
        }
        if let Some(blank) = self.targets.iter().find(|handle| handle.trim().is_empty()) {
            return problem("targets", format!("{blank:?} is not a user handle"));
        }
        if let Some(blank) = self.schedules().find(|name| name.trim().is_empty()) {
            return problem(
                "targets",
                format!("{SCHEDULE_TARGET}{blank:?} names no schedule"),
            );
        }
        if let Some(window) = &self.only_during {
            if let Err(invalid) = TimeWindow::new(&window.time_zone, &window.window) {
                return problem("only_during", invalid.to_string());
            }
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
        if levels.iter().all(|level| level.only_during.is_some()) {
            return Err(PolicyError::AlwaysWindowed);
        }
        Ok(Self { levels, repeat: 0 })
    }

    /// The same levels, walked again `repeat` more times after the last.
    pub fn with_repeat(mut self, repeat: u32) -> Self {
        self.repeat = repeat;
        self
    }

    pub fn repeat(&self) -> u32 {
        self.repeat
    }

    /// How many steps a whole walk has: the levels, once and then `repeat` more times.
    pub fn steps(&self) -> i32 {
        let len = i32::try_from(self.levels.len()).unwrap_or(i32::MAX);
        len.saturating_mul(
            i32::try_from(self.repeat)
                .unwrap_or(i32::MAX)
                .saturating_add(1),
        )
    }

    /// The prototype's policy: 5 minutes in-app, then 15 minutes email, then 60 minutes SMS.
    pub fn standard() -> Self {
        let level = |level: i32, minutes: u64, channel| EscalationLevel {
            level,
            delay: Duration::from_secs(minutes * 60),
            channels: vec![channel],
            targets: Vec::new(),
            webhooks: Vec::new(),
            only_during: None,
        };
        Self {
            levels: vec![
                level(1, 5, Channel::InApp),
                level(2, 15, Channel::Email),
                level(3, 60, Channel::Sms),
            ],
            repeat: 0,
        }
    }

    pub fn levels(&self) -> &[EscalationLevel] {
        &self.levels
    }

    /// The level of step `step` of the walk (from 1): levels 1, 2, … then, when the policy
    /// repeats, 1, 2, … again; `None` past the last step.
    pub fn level(&self, step: i32) -> Option<&EscalationLevel> {
        if step < 1 || step > self.steps() {
            return None;
        }
        let index = usize::try_from(step - 1).ok()? % self.levels.len();
        self.levels.get(index)
    }

    pub fn first(&self) -> &EscalationLevel {
        &self.levels[0]
    }

    /// The level that follows `level`, or `None` after the last.
    pub fn after(&self, step: i32) -> Option<&EscalationLevel> {
        self.level(step + 1)
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
    fn a_repeating_policy_walks_its_levels_again_and_reads_back_as_written() {
        let policy = EscalationPolicy::standard().with_repeat(1);
        let walk: Vec<i32> = (1..=7)
            .map_while(|step| policy.level(step).map(|l| l.level))
            .collect();
        assert_eq!(walk, [1, 2, 3, 1, 2, 3]);
        assert_eq!(policy.after(3).map(|l| l.level), Some(1));
        assert_eq!(policy.after(6), None);
        let json = serde_json::to_value(&policy).unwrap();
        assert_eq!(json["repeat"], 1);
        assert_eq!(
            serde_json::from_value::<EscalationPolicy>(json).unwrap(),
            policy
        );
        // A snapshot taken before `repeat` existed is a plain list of levels.
        let plain = serde_json::to_value(EscalationPolicy::standard()).unwrap();
        assert!(plain.is_array());
        assert_eq!(
            serde_json::from_value::<EscalationPolicy>(plain).unwrap(),
            EscalationPolicy::standard()
        );
    }

    #[test]
    fn a_level_waits_at_most_a_year() {
        let mut level = EscalationPolicy::standard().levels()[0].clone();
        level.delay = MAX_LEVEL_DELAY;
        assert_eq!(level.check(|_| true), Ok(()));
        level.delay = MAX_LEVEL_DELAY + Duration::from_millis(1);
        assert_eq!(level.check(|_| true).unwrap_err().field, "delay");
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
