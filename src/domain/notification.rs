//! Notifications: who a level tells, the outbox rows it creates, and what each attempt to
//! deliver one does to it.
//!
//! A level executes in one transaction that also creates its notifications: one per
//! (escalation, recipient, channel, route), which the store's unique constraint makes the only
//! one. The route tells apart what one person gets on one channel: each contact method of the
//! channel's type, each message of each personal rule. In-app notifications are delivered by
//! being stored; the others wait, `PENDING` (a personal rule's until its time), for the
//! dispatcher.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::policy::SCHEDULE_TARGET;
use super::token::hex;
use super::{
    Channel, ContactMethod, ContactType, Escalation, EscalationLevel, NewTimelineEntry,
    NotificationRule, Role, TimelineDetail, Timestamp, User,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "UPPERCASE")]
pub enum NotificationStatus {
    /// Waiting for its first or next attempt (or being sent right now, under a lease).
    Pending,
    /// The provider accepted it.
    Sent,
    /// The provider's receipt says it reached the phone (a text delivered, a call answered).
    Delivered,
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
            Self::Delivered => "DELIVERED",
            Self::Failed => "FAILED",
            Self::Cancelled => "CANCELLED",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        [
            Self::Pending,
            Self::Sent,
            Self::Delivered,
            Self::Failed,
            Self::Cancelled,
        ]
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
    /// The same as `provider_id`: the provider's id for the message (a Twilio `SM…` or `CA…`
    /// sid), by which its receipts find it.
    pub provider_message_id: Option<String>,
    /// The provider that carried the last attempt (`[[sms.providers]]` and `[[voice.providers]]`
    /// name them).
    pub provider: Option<String>,
    /// Which of the channel's providers carries the next attempt, counted from 0.
    #[serde(skip)]
    pub provider_index: i32,
    /// Where it goes: an email address, a phone number, an ntfy topic or a URL (none for in-app
    /// and configured webhooks).
    pub address: Option<String>,
    /// The contact method it goes through.
    pub contact_method_id: Option<Uuid>,
    /// What sets it apart within its escalation, recipient and channel: empty for a level's own
    /// channel, a contact method's id, or `rule:<id>:<n>` for a personal rule's `n`th message.
    pub route: String,
    /// The code a reply to it names (`ACK 4821`).
    #[serde(skip)]
    pub reply_code: Option<String>,
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

impl Notification {
    /// What its channel's rate limits count by: its address (a phone number, a topic, an email
    /// address: one contact method), or, without one, its recipient (a webhook's name).
    pub fn rate_key(&self) -> &str {
        self.address.as_deref().unwrap_or(&self.recipient)
    }
}

/// Who is on call when a level executes, by the name of each schedule its targets name that
/// exists: the users' ids, none in a gap.
pub type OnCall = BTreeMap<String, Vec<Uuid>>;

/// Why a target reached nobody.
pub const NO_SUCH_HANDLE: &str = "no active user has this handle";
pub const NO_SUCH_SCHEDULE: &str = "no schedule has this name";
pub const NOBODY_ON_CALL: &str = "nobody active is on call in this schedule";

/// Who a level reaches, resolved from its targets and the users there are when it executes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Audience<'a> {
    pub people: Vec<&'a User>,
    /// Targets that reached nobody, each with why.
    pub unresolved: Vec<(String, &'static str)>,
    /// Nobody the level named could be told, so every active admin is.
    pub fell_back_to_admins: bool,
    /// Nobody the level named could be told because its schedules have nobody on call, and a
    /// level follows: it moves on to that level at once rather than fall back to the admins.
    pub moves_on: bool,
}

impl<'a> Audience<'a> {
    /// The active users `level` names, by handle or as whoever is `on_call` in a schedule it
    /// names, or, without targets, every active responder and admin. When that is nobody: if
    /// the level names a schedule and `may_move_on` (a level follows), nobody, and the walk
    /// moves on; otherwise every active admin (a page is never lost while there is an admin).
    pub fn of(
        level: &EscalationLevel,
        users: &'a [User],
        on_call: &OnCall,
        may_move_on: bool,
    ) -> Self {
        let mut people: Vec<&User> = Vec::new();
        let mut unresolved = Vec::new();
        if level.targets.is_empty() {
            people = users.iter().filter(|user| user.is_on_duty()).collect();
        }
        for target in &level.targets {
            let found: Vec<&User> = match target.strip_prefix(SCHEDULE_TARGET) {
                Some(name) => {
                    let Some(ids) = on_call.get(name) else {
                        unresolved.push((target.clone(), NO_SUCH_SCHEDULE));
                        continue;
                    };
                    let on_call: Vec<&User> = users
                        .iter()
                        .filter(|user| user.active && ids.contains(&user.id))
                        .collect();
                    if on_call.is_empty() {
                        unresolved.push((target.clone(), NOBODY_ON_CALL));
                    }
                    on_call
                }
                None => {
                    let named = users
                        .iter()
                        .find(|user| user.active && &user.handle == target);
                    if named.is_none() {
                        unresolved.push((target.clone(), NO_SUCH_HANDLE));
                    }
                    named.into_iter().collect()
                }
            };
            for user in found {
                if !people.iter().any(|known| known.id == user.id) {
                    people.push(user);
                }
            }
        }
        let moves_on = people.is_empty() && may_move_on && level.schedules().next().is_some();
        let fell_back_to_admins = people.is_empty() && !moves_on;
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
            moves_on,
        }
    }
}

/// Everyone a level may reach, and how: the users there are, their contact methods and their
/// personal rules, read when the level executes.
#[derive(Debug, Clone, Default)]
pub struct Directory {
    pub users: Vec<User>,
    /// Who is on call in the schedules the executing levels name.
    pub on_call: OnCall,
    /// Enabled contact methods.
    pub methods: Vec<ContactMethod>,
    /// Enabled personal rules, in the order they were made.
    pub rules: Vec<NotificationRule>,
}

impl Directory {
    fn methods_of(&self, user: &User, kind: ContactType) -> impl Iterator<Item = &ContactMethod> {
        let id = user.id;
        self.methods
            .iter()
            .filter(move |m| m.user_id == id && m.kind == kind)
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
    /// Nobody is on call in the schedules the level names: the next level follows at once.
    pub moves_on: bool,
}

/// Why a level told no one and the walk went on at once.
pub const MOVED_ON: &str =
    "nobody is on call in the schedules it names: moving on to the next level at once";

/// Why a level told no one: nobody it names is active, and there is no active admin.
pub const REACHED_NOBODY: &str = "no active user named, no active admin";

/// Where one notification goes, and when.
struct Route<'a> {
    channel: Channel,
    recipient: &'a str,
    user_id: Option<Uuid>,
    method: Option<&'a ContactMethod>,
    route: String,
    due_at: Timestamp,
}

impl LevelNotifications {
    /// The notifications of `escalation`, which executed `level` at `at`, to the people of
    /// `directory` the level names:
    /// - `in_app`: one each, delivered by being stored;
    /// - `email`, `sms`, `voice`, `push`: one for each of their contact methods of that type;
    /// - `personal`: one for each message of each of their rules, due at `at` plus the rule's
    ///   delay (and each repeat); someone without rules is told in-app;
    /// - `webhook`: one for each webhook the level names.
    ///
    /// A level whose schedules have nobody on call, with a level after it (`may_move_on`),
    /// tells nobody and says so: the walk moves on at once ([`LevelNotifications::moves_on`]).
    pub fn plan(
        escalation: &Escalation,
        level: &EscalationLevel,
        directory: &Directory,
        at: Timestamp,
        may_move_on: bool,
    ) -> Self {
        let audience = Audience::of(level, &directory.users, &directory.on_call, may_move_on);
        let mut planned = Self::default();
        let incident_id = escalation.incident_id;
        for (target, reason) in &audience.unresolved {
            planned.unreached(incident_id, escalation.escalation_level, target, reason, at);
        }
        let tells_people = level.channels.iter().any(|c| *c != Channel::Webhook);
        if audience.moves_on {
            planned.moves_on = true;
            if tells_people {
                planned.reached_nobody = Some(MOVED_ON.to_owned());
            }
        } else if tells_people && audience.people.is_empty() {
            planned.reached_nobody = Some(REACHED_NOBODY.to_owned());
        } else if tells_people && audience.fell_back_to_admins {
            planned.entries.push(NewTimelineEntry::system(
                incident_id,
                at,
                TimelineDetail::FellBackToAdmins {
                    escalation_level: escalation.escalation_level,
                    admins: audience.people.iter().map(|u| u.handle.clone()).collect(),
                    reason: "nobody the level names is active: telling every active admin".into(),
                },
            ));
        }
        fn at_once<'r>(
            channel: Channel,
            recipient: &'r str,
            user_id: Option<Uuid>,
            method: Option<&'r ContactMethod>,
            at: Timestamp,
        ) -> Route<'r> {
            Route {
                channel,
                recipient,
                user_id,
                route: method.map(|m| m.id.to_string()).unwrap_or_default(),
                method,
                due_at: at,
            }
        }
        for &channel in &level.channels {
            match channel {
                Channel::Webhook => {
                    for name in &level.webhooks {
                        planned.add(escalation, at_once(channel, name, None, None, at), at);
                    }
                }
                Channel::InApp => {
                    for user in &audience.people {
                        let route = at_once(channel, &user.handle, Some(user.id), None, at);
                        planned.add(escalation, route, at);
                    }
                }
                Channel::Personal => {
                    for user in &audience.people {
                        planned.personal(escalation, level, user, directory, at);
                    }
                }
                Channel::Email | Channel::Sms | Channel::Voice | Channel::Push => {
                    let kind = ContactType::of(channel).expect("a person's channel");
                    for user in &audience.people {
                        let mut methods = directory.methods_of(user, kind).peekable();
                        if methods.peek().is_none() {
                            let reason =
                                format!("{} has no {} contact method", user.handle, kind.as_str());
                            planned.unreached(
                                incident_id,
                                escalation.escalation_level,
                                &user.handle,
                                &reason,
                                at,
                            );
                        }
                        for method in methods {
                            let route =
                                at_once(channel, &user.handle, Some(user.id), Some(method), at);
                            planned.add(escalation, route, at);
                        }
                    }
                }
            }
        }
        planned
    }

    /// `user`'s own rules: each message of each rule, at its time.
    fn personal(
        &mut self,
        escalation: &Escalation,
        level: &EscalationLevel,
        user: &User,
        directory: &Directory,
        at: Timestamp,
    ) {
        let mut told = false;
        for rule in directory.rules.iter().filter(|r| r.user_id == user.id) {
            let Some(method) = directory
                .methods
                .iter()
                .find(|m| m.id == rule.contact_method_id && m.user_id == user.id)
            else {
                continue;
            };
            for (n, after) in rule.occurrences().into_iter().enumerate() {
                let route = Route {
                    channel: method.kind.channel(),
                    recipient: &user.handle,
                    user_id: Some(user.id),
                    method: Some(method),
                    route: format!("rule:{}:{n}", rule.id),
                    due_at: at.after(after),
                };
                self.add(escalation, route, at);
                told = true;
            }
        }
        if !told {
            let reason = format!("{} has no notification rules: told in-app", user.handle);
            self.unreached(
                escalation.incident_id,
                escalation.escalation_level,
                &user.handle,
                &reason,
                at,
            );
            if !level.channels.contains(&Channel::InApp) {
                let route = Route {
                    channel: Channel::InApp,
                    recipient: &user.handle,
                    user_id: Some(user.id),
                    method: None,
                    route: String::new(),
                    due_at: at,
                };
                self.add(escalation, route, at);
            }
        }
    }

    fn unreached(
        &mut self,
        incident_id: Uuid,
        level: i32,
        target: &str,
        reason: &str,
        at: Timestamp,
    ) {
        self.entries.push(NewTimelineEntry::system(
            incident_id,
            at,
            TimelineDetail::TargetUnresolved {
                escalation_level: level,
                target: target.to_owned(),
                reason: reason.to_owned(),
            },
        ));
    }

    fn add(&mut self, escalation: &Escalation, route: Route<'_>, at: Timestamp) {
        let id = Uuid::now_v7();
        let channel = route.channel;
        // In-app is delivered by being stored: it is sent the moment it exists.
        let in_app = channel == Channel::InApp;
        let notification = Notification {
            id,
            escalation_id: escalation.id,
            incident_id: escalation.incident_id,
            escalation_level: escalation.escalation_level,
            channel,
            recipient: route.recipient.to_owned(),
            user_id: route.user_id,
            status: if in_app {
                NotificationStatus::Sent
            } else {
                NotificationStatus::Pending
            },
            attempts: i32::from(in_app),
            last_error: None,
            provider_id: None,
            provider_message_id: None,
            provider: None,
            provider_index: 0,
            address: route.method.map(|m| m.address.clone()),
            contact_method_id: route.method.map(|m| m.id),
            route: route.route,
            reply_code: None,
            held: false,
            message_key: Some(id.to_string()),
            due_at: route.due_at,
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

/// The room a recipient's windows leave now: how many more messages may go (the fewest any
/// limit allows) and, when none may, when the first window opens again. `sent` holds when
/// each message counted went out, oldest first; each limit is `(count, per)`.
pub fn room(sent: &[Timestamp], limits: &[(u32, Duration)], now: Timestamp) -> (usize, Timestamp) {
    let mut slots = usize::MAX;
    let mut opens = now;
    for &(count, per) in limits {
        let since = now.as_millis() - per.as_millis() as i64;
        let within: Vec<&Timestamp> = sent.iter().filter(|t| t.as_millis() > since).collect();
        let count = count as usize;
        slots = slots.min(count.saturating_sub(within.len()));
        if within.len() >= count {
            // The window has room again once enough of its messages have left it.
            opens = opens.max(within[within.len() - count].after(per));
        }
    }
    (slots, opens)
}

/// How an attempt that failed moves between a channel's providers: to the next one at once,
/// and only after the last back to the first, after the backoff.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Failover {
    /// How many providers the channel has (0 or 1: no failover).
    pub providers: usize,
}

impl Failover {
    /// The provider that carries the attempt after a retryable failure on `index`, and whether
    /// it goes at once (another provider remains) or after the backoff (every one has failed).
    pub fn next(self, index: i32) -> (i32, bool) {
        let next = index + 1;
        if (next as usize) < self.providers {
            (next, true)
        } else {
            (0, false)
        }
    }

    /// How many times every provider has failed, given the attempts so far: what the backoff
    /// grows with.
    pub fn rounds(self, failures: i32) -> u32 {
        let per_round = self.providers.max(1) as i32;
        u32::try_from(failures / per_round).unwrap_or(0)
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
    /// The provider that carried the attempt, where the channel has several.
    pub provider: Option<String>,
    /// The provider that carries the next attempt (or carried this one, once sent).
    pub provider_index: i32,
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
            provider: None,
            provider_index: 0,
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
                provider: None,
                provider_index: 0,
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
                    provider: None,
                    provider_index: 0,
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

    /// The code a reply to the message `key` names: four digits drawn from the key, so that a
    /// re-sent message carries the same code, and a digest's code acts on all its incidents.
    pub fn reply_code(key: &str) -> String {
        let digest = Sha256::digest(key.as_bytes());
        let number = u32::from_be_bytes([digest[0], digest[1], digest[2], digest[3]]) % 10_000;
        format!("{number:04}")
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
            only_during: None,
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
        let audience = Audience::of(
            &level(&[Channel::Email], &[], &[]),
            &users,
            &OnCall::new(),
            false,
        );
        assert_eq!(handles(&audience), ["ann", "ben"]);
        assert!(!audience.fell_back_to_admins && audience.unresolved.is_empty());
    }

    #[test]
    fn targets_that_name_nobody_active_fall_back_to_admins() {
        let users = [
            user("ann", Role::Admin, true),
            user("dee", Role::Responder, false),
        ];
        let audience = Audience::of(
            &level(&[Channel::Email], &["dee", "zed"], &[]),
            &users,
            &OnCall::new(),
            false,
        );
        assert_eq!(handles(&audience), ["ann"]);
        assert_eq!(
            audience.unresolved,
            [
                ("dee".to_owned(), NO_SUCH_HANDLE),
                ("zed".to_owned(), NO_SUCH_HANDLE)
            ]
        );
        assert!(audience.fell_back_to_admins);
        let viewers = [user("cy", Role::Viewer, true)];
        let viewer_only = Audience::of(
            &level(&[Channel::Email], &["cy"], &[]),
            &viewers,
            &OnCall::new(),
            false,
        );
        assert_eq!(handles(&viewer_only), ["cy"], "a named viewer is told");
    }

    #[test]
    fn a_schedule_target_is_whoever_is_on_call_and_an_empty_one_moves_on_unless_last() {
        let users = [
            user("ann", Role::Admin, true),
            user("ben", Role::Responder, true),
        ];
        let mut on_call = OnCall::new();
        on_call.insert("primary".into(), vec![users[1].id]);
        on_call.insert("night".into(), Vec::new());
        let paged = Audience::of(
            &level(&[Channel::Sms], &["schedule:primary"], &[]),
            &users,
            &on_call,
            true,
        );
        assert_eq!(handles(&paged), ["ben"]);
        assert!(!paged.moves_on && paged.unresolved.is_empty());

        let nobody = level(&[Channel::Sms], &["schedule:night", "schedule:gone"], &[]);
        let moving = Audience::of(&nobody, &users, &on_call, true);
        assert!(moving.moves_on && moving.people.is_empty() && !moving.fell_back_to_admins);
        assert_eq!(
            moving.unresolved,
            [
                ("schedule:night".to_owned(), NOBODY_ON_CALL),
                ("schedule:gone".to_owned(), NO_SUCH_SCHEDULE)
            ]
        );
        let last = Audience::of(&nobody, &users, &on_call, false);
        assert!(!last.moves_on && last.fell_back_to_admins);
        assert_eq!(
            handles(&last),
            ["ann"],
            "the last level falls back to the admins"
        );
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
        let directory = Directory {
            methods: users.iter().flat_map(ContactMethod::firsts).collect(),
            users: users.to_vec(),
            rules: Vec::new(),
            on_call: OnCall::new(),
        };
        let planned = LevelNotifications::plan(&escalation, &level, &directory, at, false);
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
    fn personal_rules_plan_each_message_at_its_time_and_repeat() {
        use crate::domain::{NewContactMethod, NewRule, NotificationRule};
        let mut ann = user("ann", Role::Responder, true);
        ann.phone = Some("+14155550100".into());
        let ben = user("ben", Role::Responder, true);
        let at = Timestamp::from_millis(10_000);
        let methods = ContactMethod::firsts(&ann);
        let push = ContactMethod::new(
            ann.id,
            NewContactMethod {
                kind: ContactType::Push,
                address: "ann-pager".into(),
            },
            at,
        )
        .unwrap();
        let voice = methods
            .iter()
            .find(|m| m.kind == ContactType::Voice)
            .unwrap()
            .clone();
        let rule = |method: &ContactMethod, delay: u64, every: Option<u64>, max: Option<u32>| {
            let new = NewRule {
                contact_method_id: method.id,
                delay: Duration::from_secs(delay),
                repeat_every: every.map(Duration::from_secs),
                max_repeats: max,
            };
            NotificationRule::new(ann.id, new, at).unwrap()
        };
        let directory = Directory {
            users: vec![ann.clone(), ben.clone()],
            methods: [methods.clone(), vec![push.clone()]].concat(),
            rules: vec![
                rule(&push, 0, None, None),
                rule(&voice, 180, Some(300), Some(2)),
            ],
            on_call: OnCall::new(),
        };
        let escalation = Escalation {
            id: Uuid::now_v7(),
            incident_id: Uuid::now_v7(),
            escalation_level: 1,
            status: EscalationStatus::Executed,
            scheduled_at: at,
            executed_at: Some(at),
            cancelled_at: None,
            created_at: at,
        };
        let level = level(&[Channel::Personal], &["ann", "ben"], &[]);
        let planned = LevelNotifications::plan(&escalation, &level, &directory, at, false);
        let rows: Vec<_> = planned
            .notifications
            .iter()
            .map(|n| {
                (
                    n.recipient.as_str(),
                    n.channel,
                    n.address.clone(),
                    (n.due_at.as_millis() - 10_000) / 1000,
                )
            })
            .collect();
        let phone = Some("+14155550100".to_owned());
        assert_eq!(
            rows,
            [
                ("ann", Channel::Push, Some("ann-pager".to_owned()), 0),
                ("ann", Channel::Voice, phone.clone(), 180),
                ("ann", Channel::Voice, phone.clone(), 480),
                ("ann", Channel::Voice, phone, 780),
                ("ben", Channel::InApp, None, 0),
            ]
        );
        let routes: std::collections::HashSet<_> = planned
            .notifications
            .iter()
            .map(|n| (&n.recipient, n.channel, &n.route))
            .collect();
        assert_eq!(
            routes.len(),
            5,
            "each has its own place under the unique key"
        );
        assert!(
            planned.entries.iter().any(|e| matches!(&e.detail,
                TimelineDetail::TargetUnresolved { target, reason, .. }
                    if target == "ben" && reason.contains("no notification rules"))),
            "ben, without rules, is told in-app and the timeline says so"
        );
    }

    #[test]
    fn a_level_channel_uses_every_contact_method_of_its_type() {
        let mut ann = user("ann", Role::Responder, true);
        ann.phone = Some("+14155550100".into());
        let ben = user("ben", Role::Responder, true);
        let directory = Directory {
            methods: [ContactMethod::firsts(&ann), ContactMethod::firsts(&ben)].concat(),
            users: vec![ann, ben],
            rules: Vec::new(),
            on_call: OnCall::new(),
        };
        let at = Timestamp::from_millis(5);
        let escalation = Escalation {
            id: Uuid::now_v7(),
            incident_id: Uuid::now_v7(),
            escalation_level: 3,
            status: EscalationStatus::Executed,
            scheduled_at: at,
            executed_at: Some(at),
            cancelled_at: None,
            created_at: at,
        };
        let planned = LevelNotifications::plan(
            &escalation,
            &level(&[Channel::Sms], &["ann", "ben"], &[]),
            &directory,
            at,
            false,
        );
        let texts: Vec<_> = planned
            .notifications
            .iter()
            .map(|n| (n.recipient.as_str(), n.address.as_deref()))
            .collect();
        assert_eq!(texts, [("ann", Some("+14155550100"))]);
        assert!(planned.entries.iter().any(|e| matches!(&e.detail,
            TimelineDetail::TargetUnresolved { target, .. } if target == "ben")));
    }

    #[test]
    fn room_is_the_least_any_window_leaves() {
        let at = |s: i64| Timestamp::from_millis(s * 1000);
        let limits = [(1, Duration::from_secs(60)), (5, Duration::from_secs(900))];
        assert_eq!(room(&[], &limits, at(1000)), (1, at(1000)));
        // one a minute: the last went 30 s ago, so room again in 30 s
        assert_eq!(room(&[at(970)], &limits, at(1000)), (0, at(1030)));
        // five in 15 minutes: the oldest of the five leaves the window first
        let five: Vec<_> = [200, 300, 400, 500, 600].into_iter().map(at).collect();
        assert_eq!(room(&five, &limits, at(1000)), (0, at(1100)));
        assert_eq!(room(&five[1..], &limits, at(1000)).0, 1);
    }

    #[test]
    fn failover_moves_on_at_once_and_backs_off_after_the_last_provider() {
        let two = Failover { providers: 2 };
        assert_eq!(two.next(0), (1, true));
        assert_eq!(two.next(1), (0, false));
        assert_eq!(Failover { providers: 0 }.next(0), (0, false));
        assert_eq!((two.rounds(1), two.rounds(2), two.rounds(5)), (0, 1, 2));
    }

    #[test]
    fn reply_codes_are_four_digits_and_stable() {
        let code = Delivery::reply_code("0190b7a1-6f2e-7c3d-9a4b-5e6f7a8b9c0d");
        assert_eq!(code.len(), 4);
        assert!(code.chars().all(|c| c.is_ascii_digit()));
        assert_eq!(
            code,
            Delivery::reply_code("0190b7a1-6f2e-7c3d-9a4b-5e6f7a8b9c0d")
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
