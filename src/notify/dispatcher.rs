//! The dispatcher: drains the outbox through the channels, on any number of instances.
//!
//! - **Claim, send, record**: it claims due `PENDING` notifications with a lease
//!   (`[notifications] lease`, 60 s by default: their `due_at`
//!   moves to the lease's end, so a crashed dispatcher's rows come back once it runs out), sends
//!   without any transaction open, then records each outcome with its timeline entry in one short
//!   transaction. A crash between sending and recording re-sends once the lease runs out, with
//!   the same idempotency key.
//! - **Never in the engine's way**: it runs as its own task; a slow provider holds up only its
//!   own sends (each bounded by the channel's timeout), never the escalation worker.
//! - **Retries and failover**: a retryable failure goes at once to the channel's next provider
//!   (`[[sms.providers]]`, `[[voice.providers]]`), and only once every provider has failed is it
//!   tried again after a capped, jittered exponential backoff, until `max_attempts`; a fatal one
//!   (or the last) is `FAILED` with its error. The provider that carried each attempt is on the
//!   notification and its timeline entry.
//! - **Storm protection**: per contact method (the address: a phone number, a topic, an email
//!   address; a webhook's name) and channel, at most `count` messages in any window of `per`,
//!   for each of the channel's limits; what is over is held and goes out as one digest when
//!   the window opens. A digest's key is derived from all its members; one that failed and will be retried stays held, so its
//!   members go together again. What fits is decided, and reserved in the window, in one
//!   transaction that holds the recipient's window (`Changes::plan_sends`): instances take
//!   turns, so together they keep to the limit.
//! - **Wake-up**: the worker wakes it when a level leaves something to send; otherwise it sleeps
//!   until the next notification is due, at most [`POLL_INTERVAL`] (what another instance's
//!   worker created is found within that).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{watch, Notify, Semaphore};
use tokio::task::JoinSet;
use uuid::Uuid;

use super::links::LinkSigner;
use super::{Delivered, Item, Outgoing, Person, Recipient, SendError, Sender};
use crate::backoff::Backoff;
use crate::config::{NotificationConfig, RateLimit};
use crate::domain::{
    Attempt, Channel, Delivery, Failover, Incident, Notification, NotificationStatus, Outcome,
    Planned, RetryPolicy, Timestamp, User,
};
use crate::live::Live;
use crate::store::{AttemptRecord, SendPlan, Store, StoreError};

/// Notifications claimed at once.
pub const BATCH_SIZE: u32 = 256;
/// The most mails in flight at once, each on its own SMTP connection: relays limit how many
/// connections a client may hold (Postfix allows 50), and a burst beyond that is refused or left
/// waiting until it times out.
pub const MAX_SMTP_CONNECTIONS: usize = 16;
/// The longest the dispatcher sleeps without looking for due notifications.
pub const POLL_INTERVAL: Duration = Duration::from_secs(1);

/// The channels' senders; a channel without one fails its notifications with the reason.
#[derive(Clone, Default)]
pub struct Channels {
    pub email: Option<Arc<dyn Sender>>,
    pub webhook: Option<Arc<dyn Sender>>,
    pub sms: Option<Arc<dyn Sender>>,
    pub voice: Option<Arc<dyn Sender>>,
    pub push: Option<Arc<dyn Sender>>,
}

/// How many sends of one channel may be in flight at once.
fn in_flight_limit(channel: Channel) -> usize {
    match channel {
        Channel::Email => MAX_SMTP_CONNECTIONS,
        _ => BATCH_SIZE as usize,
    }
}

impl Channels {
    /// The sender of `channel`, or why there is none.
    pub fn sender(&self, channel: Channel) -> Result<&Arc<dyn Sender>, SendError> {
        let missing = |why: &str| SendError::Fatal(why.to_owned());
        match channel {
            Channel::Email => self
                .email
                .as_ref()
                .ok_or_else(|| missing("email is not configured: add an [email] section")),
            Channel::Webhook => self
                .webhook
                .as_ref()
                .ok_or_else(|| missing("no webhook is configured")),
            Channel::Sms => self
                .sms
                .as_ref()
                .ok_or_else(|| missing("no SMS provider is configured: add [[sms.providers]]")),
            Channel::Voice => self
                .voice
                .as_ref()
                .ok_or_else(|| missing("no voice provider is configured: add [[voice.providers]]")),
            Channel::Push => self
                .push
                .as_ref()
                .ok_or_else(|| missing("push is not configured: add a [push] section")),
            Channel::InApp | Channel::Personal => {
                Err(missing("in-app notifications are delivered when stored"))
            }
        }
    }
}

pub struct Dispatcher {
    pub store: Arc<dyn Store>,
    /// Replaced on SIGHUP; a round sends with the channels it started with.
    pub channels: Live<Channels>,
    /// Replaced on SIGHUP; a round plans and retries with the settings it started with.
    pub config: Live<NotificationConfig>,
    pub public_url: String,
    /// Notified when there may be something to send now.
    pub wake: Arc<Notify>,
}

impl Dispatcher {
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        tracing::info!("notification dispatcher started");
        let mut backoff = Backoff::default();
        // The link key, read once: it never changes. The signer is made each round, so that a
        // reloaded `link_expiry` applies to the next links signed.
        let mut link_key = None;
        while !*shutdown.borrow() {
            let woken = self.wake.notified();
            tokio::pin!(woken);
            woken.as_mut().enable();
            match self.round(&mut link_key).await {
                Ok(Round::More) => continue,
                Ok(Round::Idle(next_due)) => {
                    backoff.reset();
                    let wait = next_due
                        .map(|due| due.as_millis() - Timestamp::now().as_millis())
                        .map_or(POLL_INTERVAL, |ms| {
                            Duration::from_millis(ms.max(0) as u64).min(POLL_INTERVAL)
                        });
                    tokio::select! {
                        _ = tokio::time::sleep(wait) => {}
                        _ = woken => {}
                        _ = shutdown.changed() => {}
                    }
                }
                Err(error) => {
                    if !backoff.is_failing() {
                        tracing::warn!(%error, "dispatcher cannot reach the database; retrying with backoff");
                    }
                    tokio::select! {
                        _ = tokio::time::sleep(backoff.next_delay()) => {}
                        _ = shutdown.changed() => {}
                    }
                }
            }
        }
        tracing::info!("notification dispatcher stopped");
    }

    /// Claims one batch, sends it, records it.
    async fn round(&self, link_key: &mut Option<String>) -> Result<Round, StoreError> {
        let now = Timestamp::now();
        // A read first: claiming is a write, and on SQLite an idle dispatcher would otherwise take
        // the one write lock every second for nothing.
        let next_due = self.store.next_notification_due().await?;
        if next_due.is_none_or(|due| due > now) {
            return Ok(Round::Idle(next_due));
        }
        let claimed = self
            .store
            .claim_notifications(now, self.config.get().lease, BATCH_SIZE)
            .await?;
        if claimed.is_empty() {
            return Ok(Round::Idle(self.store.next_notification_due().await?));
        }
        let full = claimed.len() == BATCH_SIZE as usize;
        let key = match link_key {
            Some(key) => key,
            None => link_key.insert(self.store.link_key().await?),
        };
        let signer = LinkSigner::new(key, &self.public_url, self.config.get().link_expiry);
        let records = self.deliver(&claimed, &signer, now).await?;
        for record in &records {
            log_record(record);
        }
        self.store.record_attempts(&records).await?;
        Ok(if full {
            Round::More
        } else {
            Round::Idle(self.store.next_notification_due().await?)
        })
    }

    /// Sends what was claimed, grouped by recipient and channel under their rate limit, at most
    /// so many of a channel at once; what each send (or hold) came to.
    async fn deliver(
        &self,
        claimed: &[Notification],
        signer: &LinkSigner,
        now: Timestamp,
    ) -> Result<Vec<AttemptRecord>, StoreError> {
        let context = self.context(claimed).await?;
        let (channels, config) = (self.channels.get(), self.config.get());
        let mut groups: BTreeMap<(&str, &str), Vec<Notification>> = BTreeMap::new();
        for notification in claimed {
            let key = (notification.channel.as_str(), notification.rate_key());
            groups.entry(key).or_default().push(notification.clone());
        }
        let mut records = Vec::new();
        let mut sends = JoinSet::new();
        let mut permits: HashMap<Channel, Arc<Semaphore>> = HashMap::new();
        let start_by = tokio::time::Instant::now() + config.lease / 2;
        for group in groups.into_values() {
            let channel = group[0].channel;
            let plan = self.plan(&config, &group, now).await?;
            for planned in plan.deliveries {
                let Planned {
                    delivery,
                    members,
                    key,
                } = planned;
                if let Delivery::Hold(_) = delivery {
                    records.extend(members.iter().map(|n| hold(n, plan.opens, now)));
                    continue;
                }
                let message = context.message(&members, key.clone(), signer, now);
                let sender = channels.sender(channel).cloned();
                let providers = sender
                    .as_ref()
                    .map(|sender| sender.providers())
                    .unwrap_or_default();
                let permits = permits
                    .entry(channel)
                    .or_insert_with(|| Arc::new(Semaphore::new(in_flight_limit(channel))))
                    .clone();
                let policy = RetryPolicy {
                    max_attempts: config.max_attempts,
                };
                let config = config.clone();
                sends.spawn(async move {
                    let _permit = permits.acquire_owned().await;
                    // Past half the lease, another dispatcher may soon take these: they wait for
                    // the next round instead of racing it.
                    if tokio::time::Instant::now() >= start_by {
                        let now = Timestamp::now();
                        return members.iter().map(|n| put_back(n, now)).collect();
                    }
                    let result = match (&message, sender) {
                        (Ok(message), Ok(sender)) => sender.send(message).await,
                        (Err(error), _) => Err(error.clone()),
                        (_, Err(error)) => Err(error),
                    };
                    let tried = Tried {
                        key: &key,
                        providers: &providers,
                        reply_code: message.ok().and_then(|m| m.reply_code),
                    };
                    attempted(&members, &result, &tried, policy, &config)
                });
            }
        }
        while let Some(joined) = sends.join_next().await {
            match joined {
                Ok(done) => records.extend(done),
                Err(panic) => {
                    tracing::error!(%panic, "a send panicked; its notifications come back when their lease runs out")
                }
            }
        }
        Ok(records)
    }

    /// How one recipient's due notifications on one channel go out: under the channel's rate
    /// limit, decided and reserved in the store with the recipient's window held against other
    /// dispatchers; each alone where there is none.
    async fn plan(
        &self,
        config: &NotificationConfig,
        group: &[Notification],
        now: Timestamp,
    ) -> Result<SendPlan, StoreError> {
        let limits: Vec<RateLimit> = match group[0].channel {
            Channel::Email => vec![config.email_rate],
            Channel::Webhook => vec![config.webhook_rate],
            Channel::Sms => config.sms_rates.clone(),
            Channel::Voice => config.voice_rates.clone(),
            Channel::Push => vec![config.push_rate],
            Channel::InApp | Channel::Personal => Vec::new(),
        };
        if limits.is_empty() {
            return Ok(SendPlan {
                deliveries: Delivery::plan_group(group, usize::MAX),
                opens: now,
            });
        }
        let limits: Vec<(u32, Duration)> = limits.iter().map(|l| (l.count, l.per)).collect();
        self.store.plan_sends(group, &limits, now).await
    }

    /// The incidents and people the claimed notifications are about.
    async fn context(&self, claimed: &[Notification]) -> Result<Context, StoreError> {
        let mut incident_ids: Vec<Uuid> = claimed.iter().map(|n| n.incident_id).collect();
        incident_ids.sort();
        incident_ids.dedup();
        let mut user_ids: Vec<Uuid> = claimed.iter().filter_map(|n| n.user_id).collect();
        user_ids.sort();
        user_ids.dedup();
        let incidents = self.store.incidents_by_id(&incident_ids).await?;
        let users = self.store.users_by_id(&user_ids).await?;
        Ok(Context {
            incidents: incidents.into_iter().map(|i| (i.id, i)).collect(),
            users: users.into_iter().map(|u| (u.id, u)).collect(),
        })
    }
}

enum Round {
    /// A full batch was claimed: there may be more due now.
    More,
    /// Nothing more is due now; the next is due then, if any.
    Idle(Option<Timestamp>),
}

#[derive(Default)]
struct Context {
    incidents: HashMap<Uuid, Incident>,
    users: HashMap<Uuid, User>,
}

impl Context {
    /// The message carrying `members` (one, or a digest), under its idempotency key.
    fn message(
        &self,
        members: &[Notification],
        key: String,
        signer: &LinkSigner,
        now: Timestamp,
    ) -> Result<Outgoing, SendError> {
        let first = &members[0];
        let recipient = match (first.channel, first.user_id) {
            (Channel::Webhook, None) => Recipient::Webhook(first.recipient.clone()),
            (_, Some(user_id)) => {
                let user = self.users.get(&user_id).ok_or_else(|| {
                    SendError::Fatal(format!("user {} not found", first.recipient))
                })?;
                // A notification made before contact methods carries no address: the user's.
                let address = match (&first.address, first.channel) {
                    (Some(address), _) => address.clone(),
                    (None, Channel::Email) => user.email.clone(),
                    (None, _) => user.phone.clone().ok_or_else(|| {
                        SendError::Fatal(format!("{} has no phone number", user.handle))
                    })?,
                };
                Recipient::Person(Person {
                    handle: user.handle.clone(),
                    name: user.name.clone(),
                    address,
                })
            }
            (_, None) => return Err(SendError::Fatal("the notification names no user".into())),
        };
        let items = members
            .iter()
            .map(|n| {
                let incident = self.incidents.get(&n.incident_id).cloned().ok_or_else(|| {
                    SendError::Fatal(format!("incident {} not found", n.incident_id))
                })?;
                Ok(Item {
                    links: signer.links(n.id, incident.id, now),
                    incident,
                    escalation_level: n.escalation_level,
                })
            })
            .collect::<Result<Vec<_>, SendError>>()?;
        let mut message = Outgoing::new(key, recipient, items);
        message.notification_id = first.id;
        message.provider = usize::try_from(first.provider_index).unwrap_or(0);
        if matches!(first.channel, Channel::Sms | Channel::Voice) {
            message.reply_code = Some(Delivery::reply_code(&message.key));
        }
        if first.channel == Channel::Voice {
            message.twiml_url = Some(signer.voice_url(first.id, now));
        }
        Ok(message)
    }
}

/// What a send was: its message's key and reply code, and the providers its channel fails
/// over between (none where it has one way out).
struct Tried<'a> {
    key: &'a str,
    providers: &'a [String],
    reply_code: Option<String>,
}

/// What one send came to, for each notification it carried: a retryable failure moves to the
/// channel's next provider at once, and waits out the backoff only once every provider failed.
fn attempted(
    members: &[Notification],
    result: &Result<Delivered, SendError>,
    tried: &Tried<'_>,
    policy: RetryPolicy,
    config: &NotificationConfig,
) -> Vec<AttemptRecord> {
    let at = Timestamp::now();
    let digest = members.len() > 1 || members.iter().any(|n| n.held);
    let digest_of = digest.then_some(members.len());
    let failover = Failover {
        providers: tried.providers.len(),
    };
    let index = members[0].provider_index;
    let carrier = tried
        .providers
        .get(usize::try_from(index).unwrap_or(0))
        .cloned();
    // One backoff for the whole message, so that a digest's members come back together.
    let failures = members.iter().map(|n| n.attempts - 1).max().unwrap_or(0);
    let (next, at_once) = failover.next(index);
    let retry_in = if at_once {
        Duration::ZERO
    } else {
        Backoff::after(
            config.retry_backoff,
            config.retry_backoff_cap,
            failover.rounds(failures),
        )
    };
    members
        .iter()
        .map(|n| {
            let attempt = match result {
                Ok(delivered) => Attempt::Sent {
                    provider_id: delivered.provider_id.clone(),
                },
                Err(error) => Attempt::Failed {
                    error: error.to_string(),
                    retryable: error.is_retryable(),
                    retry_in,
                },
            };
            let mut outcome = Outcome::of(&attempt, n.attempts, policy, at);
            // A digest that will be tried again stays one: its members are held, so the next
            // round sends them together again, under the same key.
            outcome.held = digest && outcome.status == NotificationStatus::Pending;
            outcome.provider = match result {
                Ok(delivered) => delivered.provider.clone().or(carrier.clone()),
                Err(_) => carrier.clone(),
            };
            outcome.provider_index = if outcome.status == NotificationStatus::Pending {
                next
            } else {
                index
            };
            AttemptRecord {
                id: n.id,
                incident_id: n.incident_id,
                attempts: n.attempts,
                outcome,
                message_key: tried.key.to_owned(),
                digest_of,
                reply_code: tried.reply_code.clone(),
                at,
            }
        })
        .collect()
}

/// `notification` held back by the rate limit until `opens`: not an attempt.
fn hold(notification: &Notification, opens: Timestamp, now: Timestamp) -> AttemptRecord {
    AttemptRecord {
        id: notification.id,
        incident_id: notification.incident_id,
        attempts: notification.attempts - 1,
        outcome: Outcome {
            provider_index: notification.provider_index,
            ..Outcome::held_until(opens.max(now))
        },
        message_key: notification.id.to_string(),
        digest_of: None,
        reply_code: None,
        at: now,
    }
}

/// `notification` not sent this round (its channel's sends in flight took too long): due again
/// now, as it was, with the attempt not counted.
fn put_back(notification: &Notification, now: Timestamp) -> AttemptRecord {
    let mut outcome = Outcome::held_until(now);
    outcome.held = notification.held;
    outcome.provider_index = notification.provider_index;
    AttemptRecord {
        id: notification.id,
        incident_id: notification.incident_id,
        attempts: notification.attempts - 1,
        outcome,
        message_key: notification
            .message_key
            .clone()
            .unwrap_or_else(|| notification.id.to_string()),
        digest_of: None,
        reply_code: None,
        at: now,
    }
}

fn log_record(record: &AttemptRecord) {
    let outcome = &record.outcome;
    let id = record.id;
    match (&outcome.last_error, outcome.status) {
        (_, NotificationStatus::Sent) => {
            tracing::info!(notification_id = %id, attempt = record.attempts, "notification sent")
        }
        (Some(error), status) => {
            tracing::warn!(notification_id = %id, attempt = record.attempts, status = status.as_str(), %error, "notification not delivered")
        }
        (None, _) if outcome.held => {
            tracing::info!(notification_id = %id, until = %outcome.due_at, "notification held by the rate limit")
        }
        (None, _) => {
            tracing::debug!(notification_id = %id, "notification put back for the next round")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::NotificationStatus::{Failed, Pending, Sent};

    fn pending(attempts: i32) -> Notification {
        let at = Timestamp::from_millis(1_000);
        Notification {
            id: Uuid::now_v7(),
            escalation_id: Uuid::now_v7(),
            incident_id: Uuid::now_v7(),
            escalation_level: 1,
            channel: Channel::Email,
            recipient: "alice".into(),
            user_id: Some(Uuid::now_v7()),
            status: Pending,
            attempts,
            last_error: None,
            provider_id: None,
            provider_message_id: None,
            provider: None,
            provider_index: 0,
            address: Some("alice@example.com".into()),
            contact_method_id: None,
            route: String::new(),
            reply_code: None,
            held: false,
            message_key: None,
            due_at: at,
            created_at: at,
            updated_at: at,
            sent_at: None,
            read_at: None,
        }
    }

    fn attempt(
        members: &[Notification],
        result: Result<Delivered, SendError>,
    ) -> Vec<AttemptRecord> {
        let policy = RetryPolicy { max_attempts: 3 };
        let tried = Tried {
            key: "key",
            providers: &[],
            reply_code: None,
        };
        attempted(
            members,
            &result,
            &tried,
            policy,
            &NotificationConfig::default(),
        )
    }

    #[test]
    fn a_digest_key_names_its_members_whatever_their_order() {
        let (a, b, c) = (pending(1), pending(1), pending(1));
        let key = Delivery::key(&[a.clone(), b.clone()]);
        assert_eq!(key, Delivery::key(&[b.clone(), a.clone()]));
        assert_ne!(key, Delivery::key(&[a.clone(), b, c]));
        assert_eq!(
            Delivery::key(std::slice::from_ref(&a)),
            a.id.to_string(),
            "alone: its id"
        );
        assert!(key.starts_with("digest-"));
    }

    #[test]
    fn a_failed_digest_is_retried_together_and_a_sent_one_is_not_held() {
        let members = [pending(1), pending(2)];
        let retried = attempt(&members, Err(SendError::Retryable("451 later".into())));
        assert!(retried
            .iter()
            .all(|r| r.outcome.status == Pending && r.outcome.held));
        assert_eq!(
            retried[0].outcome.due_at, retried[1].outcome.due_at,
            "one backoff"
        );
        assert!(retried.iter().all(|r| r.digest_of == Some(2)));
        let sent = attempt(&members, Ok(Delivered::default()));
        assert!(sent
            .iter()
            .all(|r| r.outcome.status == Sent && !r.outcome.held));
        let fatal = attempt(&members, Err(SendError::Fatal("550 no such user".into())));
        assert!(fatal
            .iter()
            .all(|r| r.outcome.status == Failed && !r.outcome.held));
    }

    #[test]
    fn a_lone_failure_is_retried_alone() {
        let retried = attempt(&[pending(1)], Err(SendError::Retryable("timeout".into())));
        assert_eq!(retried[0].outcome.status, Pending);
        assert!(!retried[0].outcome.held);
        assert_eq!(retried[0].digest_of, None);
    }

    #[test]
    fn holds_and_put_backs_are_not_attempts() {
        let now = Timestamp::from_millis(5_000);
        let mut held = pending(3);
        held.held = true;
        let back = put_back(&held, now);
        assert_eq!(
            (back.attempts, back.outcome.held, back.outcome.due_at),
            (2, true, now)
        );
        assert!(!back.attempted());
        let limited = hold(&pending(1), Timestamp::from_millis(9_000), now);
        assert_eq!((limited.attempts, limited.outcome.held), (0, true));
        assert!(!limited.attempted());
        let failed = attempt(&[pending(1)], Err(SendError::Retryable("timeout".into())));
        assert!(failed[0].attempted());
    }
}
