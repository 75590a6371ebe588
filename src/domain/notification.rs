//! Notifications: who a level tells, the outbox rows it creates, and what each attempt to
//! deliver one does to it.
//!
//! A level executes in one transaction that also creates its notifications: one per
//! (escalation, recipient, channel), which the store's unique constraint makes the only one.
//! In-app notifications are delivered by being stored; the others wait, `PENDING`, for the
//! dispatcher.

use std::time::Duration;

use serde::Serialize;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::token::hex;
use super::{
    Channel, Escalation, EscalationLevel, NewTimelineEntry, Role, TimelineDetail, Timestamp, User,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "UPPERCASE")]
pub enum NotificationStatus {
    /// Waiting for its first or next attempt (or being sent right now, under a lease).
    Pending,
    /// The provider accepted it.
    Sent,
    /// Its attempts ran out, or it failed in a way no retry mends; `last_error` says why.
    Failed,
    /// The incident was acknowledged, resolved or cancelled before it was sent.
    Cancelled,
}

impl NotificationStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "PENDING",
            Self::Sent => "SENT",
            Self::Failed => "FAILED",
            Self::Cancelled => "CANCELLED",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        [Self::Pending, Self::Sent, Self::Failed, Self::Cancelled]
            .into_iter()
            .find(|status| status.as_str() == text)
    }
}

impl Channel {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::InApp => "in_app",
            Self::Email => "email",
            Self::Sms => "sms",
            Self::Voice => "voice",
            Self::Push => "push",
            Self::Webhook => "webhook",
            Self::Personal => "personal",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        [
            Self::InApp,
            Self::Email,
            Self::Sms,
            Self::Voice,
            Self::Push,
            Self::Webhook,
            Self::Personal,
        ]
        .into_iter()
        .find(|channel| channel.as_str() == text)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Notification {
    pub id: Uuid,
    pub escalation_id: Uuid,
    pub incident_id: Uuid,
    pub escalation_level: i32,
    pub channel: Channel,
    /// The user's handle, or the webhook's name.
    pub recipient: String,
    pub user_id: Option<Uuid>,
    pub status: NotificationStatus,
    pub attempts: i32,
    pub last_error: Option<String>,
    /// The provider's id for the message that carried it.
    pub provider_id: Option<String>,
    /// Held back by the recipient's rate limit, to go out in a digest.
    pub held: bool,
    /// The idempotency key of the message that carried it (or will): its own id, or a digest's.
    pub message_key: Option<String>,
    /// When it may next be attempted.
    pub due_at: Timestamp,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    pub sent_at: Option<Timestamp>,
    pub read_at: Option<Timestamp>,
}

/// Who a level reaches, resolved from its targets and the users there are when it executes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Audience<'a> {
    pub people: Vec<&'a User>,
    /// Targets that name no active user.
    pub unresolved: Vec<String>,
    /// Nobody the level named could be told, so every active admin is.
    pub fell_back_to_admins: bool,
}

impl<'a> Audience<'a> {
    /// The active users `level` names, or, without targets, every active responder and admin;
    /// every active admin when that is nobody (a page is never lost while there is an admin).
    pub fn of(level: &EscalationLevel, users: &'a [User]) -> Self {
        let mut people: Vec<&User> = if level.targets.is_empty() {
            users.iter().filter(|user| user.is_on_duty()).collect()
        } else {
            users
                .iter()
                .filter(|user| user.active && level.targets.contains(&user.handle))
                .collect()
        };
        let unresolved = level
            .targets
            .iter()
            .filter(|handle| !people.iter().any(|user| &user.handle == *handle))
            .cloned()
            .collect();
        let fell_back_to_admins = people.is_empty();
        if fell_back_to_admins {
            people = users
                .iter()
                .filter(|user| user.active && user.role == Role::Admin)
                .collect();
        }
        Self {
            people,
            unresolved,
            fell_back_to_admins,
        }
    }
}

/// What executing one level creates: its notifications and the timeline entries that say who it
/// could not reach.
#[derive(Debug, Clone, Default)]
pub struct LevelNotifications {
    pub notifications: Vec<Notification>,
    pub entries: Vec<NewTimelineEntry>,
    /// Why the level told no person although its channels tell people: written on the level's
    /// `escalation.executed` entry.
    pub reached_nobody: Option<String>,
}

/// Why a level told no one: nobody it names is active, and there is no active admin.
pub const REACHED_NOBODY: &str = "no active user named, no active admin";

impl LevelNotifications {
    /// The notifications of `escalation`, which executed `level` at `at`, to `users` (every user
    /// there is; the level picks its own).
    pub fn plan(
        escalation: &Escalation,
        level: &EscalationLevel,
        users: &[User],
        at: Timestamp,
    ) -> Self {
        let audience = Audience::of(level, users);
        let mut planned = Self::default();
        let incident_id = escalation.incident_id;
        for target in &audience.unresolved {
            planned.entries.push(NewTimelineEntry::system(
                incident_id,
                at,
                TimelineDetail::TargetUnresolved {
                    escalation_level: level.level,
                    target: target.clone(),
                    reason: "no active user has this handle".into(),
                },
            ));
        }
        let tells_people = level.channels.iter().any(|c| *c != Channel::Webhook);
        if tells_people && audience.people.is_empty() {
            planned.reached_nobody = Some(REACHED_NOBODY.to_owned());
        } else if tells_people && audience.fell_back_to_admins {
            planned.entries.push(NewTimelineEntry::system(
                incident_id,
                at,
                TimelineDetail::FellBackToAdmins {
                    escalation_level: level.level,
                    admins: audience.people.iter().map(|u| u.handle.clone()).collect(),
                    reason: "nobody the level names is active: telling every active admin".into(),
                },
            ));
        }
        for &channel in &level.channels {
            if channel == Channel::Webhook {
                for name in &level.webhooks {
                    planned.add(escalation, channel, name, None, at);
                }
                continue;
            }
            for user in &audience.people {
                planned.add(escalation, channel, &user.handle, Some(user.id), at);
            }
        }
        planned
    }

    fn add(
        &mut self,
        escalation: &Escalation,
        channel: Channel,
        recipient: &str,
        user_id: Option<Uuid>,
        at: Timestamp,
    ) {
        let id = Uuid::now_v7();
        // In-app is delivered by being stored: it is sent the moment it exists.
        let in_app = channel == Channel::InApp;
        let notification = Notification {
            id,
            escalation_id: escalation.id,
            incident_id: escalation.incident_id,
            escalation_level: escalation.escalation_level,
            channel,
            recipient: recipient.to_owned(),
            user_id,
            status: if in_app {
                NotificationStatus::Sent
            } else {
                NotificationStatus::Pending
            },
            attempts: i32::from(in_app),
            last_error: None,
            provider_id: None,
            held: false,
            message_key: Some(id.to_string()),
            due_at: at,
            created_at: at,
            updated_at: at,
            sent_at: in_app.then_some(at),
            read_at: None,
        };
        if in_app {
            self.entries.push(NewTimelineEntry::system(
                escalation.incident_id,
                at,
                TimelineDetail::notification_sent(&notification, None),
            ));
        }
        self.notifications.push(notification);
    }
}

/// How failed attempts are retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    pub max_attempts: u32,
}

/// What one attempt came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attempt {
    Sent {
        provider_id: Option<String>,
    },
    /// Failed; `retry_in` is the jittered backoff the dispatcher drew for a retry.
    Failed {
        error: String,
        retryable: bool,
        retry_in: Duration,
    },
}

/// What an attempt changes on its notification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub status: NotificationStatus,
    pub due_at: Timestamp,
    pub last_error: Option<String>,
    pub provider_id: Option<String>,
    pub sent_at: Option<Timestamp>,
    /// Held back by the rate limit, for the next digest.
    pub held: bool,
}

impl Outcome {
    /// Held back by the rate limit until `opens`, then sent in a digest.
    pub fn held_until(opens: Timestamp) -> Self {
        Self {
            status: NotificationStatus::Pending,
            due_at: opens,
            last_error: None,
            provider_id: None,
            sent_at: None,
            held: true,
        }
    }

    /// The outcome of attempt number `attempts` (counted from 1) at `at`: sent, retried after its
    /// backoff, or failed for good when the error is fatal or the attempts are spent.
    pub fn of(attempt: &Attempt, attempts: i32, policy: RetryPolicy, at: Timestamp) -> Self {
        match attempt {
            Attempt::Sent { provider_id } => Self {
                status: NotificationStatus::Sent,
                due_at: at,
                last_error: None,
                provider_id: provider_id.clone(),
                sent_at: Some(at),
                held: false,
            },
            Attempt::Failed {
                error,
                retryable,
                retry_in,
            } => {
                let spent = u32::try_from(attempts).unwrap_or(u32::MAX) >= policy.max_attempts;
                let retry = *retryable && !spent;
                Self {
                    status: if retry {
                        NotificationStatus::Pending
                    } else {
                        NotificationStatus::Failed
                    },
                    due_at: if retry { at.after(*retry_in) } else { at },
                    last_error: Some(error.clone()),
                    provider_id: None,
                    sent_at: None,
                    held: false,
                }
            }
        }
    }
}

/// How the notifications due for one recipient on one channel go out, oldest first, given how
/// many more messages the recipient's rate limit allows now (`slots`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivery {
    /// One message for the notification at this index.
    Single(usize),
    /// One digest message for these.
    Digest(Vec<usize>),
    /// Over the limit: held until the window opens, then sent in a digest.
    Hold(Vec<usize>),
}

/// One delivery of a recipient's group, with the notifications it carries (or holds) and the
/// idempotency key of its message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Planned {
    pub delivery: Delivery,
    pub members: Vec<Notification>,
    pub key: String,
}

impl Planned {
    pub fn is_held(&self) -> bool {
        matches!(self.delivery, Delivery::Hold(_))
    }
}

impl Delivery {
    /// [`Delivery::plan`] for `group` (one recipient's due notifications on one channel, oldest
    /// first), each delivery with its notifications and its message's key.
    pub fn plan_group(group: &[Notification], slots: usize) -> Vec<Planned> {
        let held: Vec<bool> = group.iter().map(|n| n.held).collect();
        Self::plan(&held, slots)
            .into_iter()
            .map(|delivery| {
                let members: Vec<Notification> = match &delivery {
                    Self::Single(index) => vec![group[*index].clone()],
                    Self::Digest(all) | Self::Hold(all) => {
                        all.iter().map(|index| group[*index].clone()).collect()
                    }
                };
                Planned {
                    key: Self::key(&members),
                    delivery,
                    members,
                }
            })
            .collect()
    }

    /// The idempotency key of the message carrying `members`: a lone notification's own id; for
    /// a digest (several, or one held back), a key derived from all their ids, the same for the
    /// same set (a re-send after a crash carries it again) and different for any other, so that
    /// a receiver dropping duplicates by key never drops a message it has not seen.
    pub fn key(members: &[Notification]) -> String {
        if let [one] = members {
            if !one.held {
                return one.id.to_string();
            }
        }
        let mut ids: Vec<Uuid> = members.iter().map(|n| n.id).collect();
        ids.sort();
        let mut hasher = Sha256::new();
        for id in &ids {
            hasher.update(id.as_bytes());
        }
        format!("digest-{}", hex(&hasher.finalize()[..16]))
    }

    /// Storm protection: while there is room, each notification goes alone; what does not fit
    /// goes, with everything held before, into one digest that takes the last slot; with no
    /// slot left, everything waits. Nothing is ever dropped.
    pub fn plan(held: &[bool], slots: usize) -> Vec<Self> {
        let all: Vec<usize> = (0..held.len()).collect();
        if all.is_empty() {
            return Vec::new();
        }
        if slots == 0 {
            return vec![Self::Hold(all)];
        }
        let any_held = held.iter().any(|h| *h);
        if !any_held && held.len() <= slots {
            return all.into_iter().map(Self::Single).collect();
        }
        // Held ones are older than any new one: they lead the digest.
        let (waiting, fresh): (Vec<usize>, Vec<usize>) = all.into_iter().partition(|i| held[*i]);
        let singles = (slots - 1).min(fresh.len());
        let mut plan: Vec<Self> = fresh[..singles].iter().copied().map(Self::Single).collect();
        let mut digest = waiting;
        digest.extend_from_slice(&fresh[singles..]);
        match digest.as_slice() {
            [] => {}
            [only] if !held[*only] => plan.push(Self::Single(*only)),
            _ => plan.push(Self::Digest(digest)),
        }
        plan
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{EscalationStatus, Role, UserFields};

    fn user(handle: &str, role: Role, active: bool) -> User {
        let fields = UserFields {
            handle: handle.into(),
            name: handle.into(),
            email: format!("{handle}@example.com"),
            role: Some(role),
            ..UserFields::default()
        };
        let mut user = User::new(fields, Timestamp::from_millis(0)).unwrap();
        user.active = active;
        user
    }

    fn level(channels: &[Channel], targets: &[&str], webhooks: &[&str]) -> EscalationLevel {
        EscalationLevel {
            level: 2,
            delay: Duration::ZERO,
            channels: channels.to_vec(),
            targets: targets.iter().map(|t| t.to_string()).collect(),
            webhooks: webhooks.iter().map(|t| t.to_string()).collect(),
        }
    }

    fn handles(audience: &Audience) -> Vec<String> {
        audience.people.iter().map(|u| u.handle.clone()).collect()
    }

    #[test]
    fn without_targets_every_active_responder_and_admin_is_told() {
        let users = [
            user("ann", Role::Admin, true),
            user("ben", Role::Responder, true),
            user("cy", Role::Viewer, true),
            user("dee", Role::Responder, false),
        ];
        let audience = Audience::of(&level(&[Channel::Email], &[], &[]), &users);
        assert_eq!(handles(&audience), ["ann", "ben"]);
        assert!(!audience.fell_back_to_admins && audience.unresolved.is_empty());
    }

    #[test]
    fn targets_that_name_nobody_active_fall_back_to_admins() {
        let users = [
            user("ann", Role::Admin, true),
            user("dee", Role::Responder, false),
        ];
        let audience = Audience::of(&level(&[Channel::Email], &["dee", "zed"], &[]), &users);
        assert_eq!(handles(&audience), ["ann"]);
        assert_eq!(audience.unresolved, ["dee", "zed"]);
        assert!(audience.fell_back_to_admins);
        let viewers = [user("cy", Role::Viewer, true)];
        let viewer_only = Audience::of(&level(&[Channel::Email], &["cy"], &[]), &viewers);
        assert_eq!(handles(&viewer_only), ["cy"], "a named viewer is told");
    }

    #[test]
    fn a_level_plans_one_notification_per_recipient_and_channel() {
        let users = [
            user("ann", Role::Admin, true),
            user("ben", Role::Responder, true),
        ];
        let escalation = Escalation {
            id: Uuid::now_v7(),
            incident_id: Uuid::now_v7(),
            escalation_level: 2,
            status: EscalationStatus::Executed,
            scheduled_at: Timestamp::from_millis(5),
            executed_at: Some(Timestamp::from_millis(6)),
            cancelled_at: None,
            created_at: Timestamp::from_millis(1),
        };
        let level = level(
            &[Channel::InApp, Channel::Email, Channel::Webhook],
            &["ben"],
            &["ops", "slack"],
        );
        let at = Timestamp::from_millis(6);
        let planned = LevelNotifications::plan(&escalation, &level, &users, at);
        let rows: Vec<_> = planned
            .notifications
            .iter()
            .map(|n| (n.channel, n.recipient.as_str(), n.status))
            .collect();
        use NotificationStatus::{Pending, Sent};
        assert_eq!(
            rows,
            [
                (Channel::InApp, "ben", Sent),
                (Channel::Email, "ben", Pending),
                (Channel::Webhook, "ops", Pending),
                (Channel::Webhook, "slack", Pending),
            ]
        );
        assert_eq!(
            planned.entries.len(),
            1,
            "the in-app delivery is on the timeline"
        );
    }

    #[test]
    fn outcomes_retry_until_the_attempts_are_spent() {
        let policy = RetryPolicy { max_attempts: 3 };
        let at = Timestamp::from_millis(1_000);
        let failed = |retryable| Attempt::Failed {
            error: "boom".into(),
            retryable,
            retry_in: Duration::from_secs(2),
        };
        let retry = Outcome::of(&failed(true), 2, policy, at);
        assert_eq!(
            (retry.status, retry.due_at),
            (NotificationStatus::Pending, Timestamp::from_millis(3_000))
        );
        assert_eq!(
            Outcome::of(&failed(true), 3, policy, at).status,
            NotificationStatus::Failed
        );
        assert_eq!(
            Outcome::of(&failed(false), 1, policy, at).status,
            NotificationStatus::Failed
        );
        let sent = Outcome::of(
            &Attempt::Sent {
                provider_id: Some("x".into()),
            },
            1,
            policy,
            at,
        );
        assert_eq!(
            (sent.status, sent.sent_at),
            (NotificationStatus::Sent, Some(at))
        );
    }

    #[test]
    fn storm_protection_digests_what_is_over_the_limit_and_drops_nothing() {
        use Delivery::*;
        assert_eq!(Delivery::plan(&[false, false], 5), [Single(0), Single(1)]);
        assert_eq!(
            Delivery::plan(&[false; 4], 2),
            [Single(0), Digest(vec![1, 2, 3])]
        );
        assert_eq!(Delivery::plan(&[false; 3], 1), [Digest(vec![0, 1, 2])]);
        assert_eq!(Delivery::plan(&[false; 3], 0), [Hold(vec![0, 1, 2])]);
        assert_eq!(
            Delivery::plan(&[true, true, false], 1),
            [Digest(vec![0, 1, 2])]
        );
        assert_eq!(
            Delivery::plan(&[true, false], 3),
            [Single(1), Digest(vec![0])]
        );
        assert_eq!(Delivery::plan(&[true], 1), [Digest(vec![0])]);
        assert_eq!(Delivery::plan(&[], 1), []);
        for (held, slots) in [(vec![true, false, false, true], 2), (vec![false; 9], 3)] {
            let mut covered: Vec<usize> = Delivery::plan(&held, slots)
                .into_iter()
                .flat_map(|d| match d {
                    Single(i) => vec![i],
                    Digest(v) | Hold(v) => v,
                })
                .collect();
            covered.sort();
            assert_eq!(covered, (0..held.len()).collect::<Vec<_>>(), "each once");
        }
    }
}
