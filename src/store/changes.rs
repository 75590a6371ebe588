//! The rules of every write, written once for every [`Backend`]: what ingest does (join a live
//! incident by `dedup_key`, or open one), what a transition does (plan from the status read,
//! compare-and-set, cancel pending escalations, write the timeline), and what settling a due
//! escalation does (execute or cancel it, raise the level, schedule the next, stop after the
//! last). The domain decides; this module sequences a backend's statements in one transaction.
//!
//! Locking is the backend's: each statement of [`WriteTx`] states its idiom. Here, the order is
//! fixed: a transition locks its incident before its escalations; ingest takes live incidents'
//! rows in key order within a statement; settling claims escalations with their incidents and
//! never waits for a lock.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use async_trait::async_trait;
use uuid::Uuid;

use super::backend::{
    AppendTx, Claimed, DueQuery, IngestTx, Opened, Opening, StatusChange, WriteTx,
};
use super::shared::OutboxTx;
use super::{
    AttemptRecord, Backend, Changes, Ingested, Receipt, Result, Scheduled, SendPlan, Settled,
    StoreError, TransitionOutcome, TransitionRequest,
};
use crate::backoff::Backoff;
use crate::domain::notification::{room, OnCall};
use crate::domain::{
    Action, Delivery, Directory, Escalation, EscalationLevel, EscalationStatus, Event, Incident,
    IncidentStatus, InvalidTransition, LevelNotifications, NewEvent, NewTimelineEntry, NextLevel,
    Notification, NotificationStatus, OnlyDuring, TimelineDetail, Timestamp, Transition,
};

/// At most this many events go into one multi-row statement.
const MAX_ROWS_PER_STATEMENT: usize = 256;
/// How many times an ingest batch that lost a conflict (a deadlock between two batches that
/// repeat keys across statements) runs before its error is returned.
const CONFLICT_ATTEMPTS: u32 = 5;
/// The first retry of a conflicting batch waits up to this long, doubling each time.
const CONFLICT_BACKOFF: Duration = Duration::from_millis(10);
/// No retry of a conflicting batch waits longer than this.
const CONFLICT_BACKOFF_CAP: Duration = Duration::from_millis(200);

#[async_trait]
impl<B: Backend> Changes for B {
    async fn ingest(&self, event: NewEvent) -> Result<Ingested> {
        let mut ingested = self.ingest_batch(std::slice::from_ref(&event)).await?;
        ingested
            .pop()
            .ok_or_else(|| StoreError::internal("an ingest stored nothing"))
    }

    async fn ingest_batch(&self, events: &[NewEvent]) -> Result<Vec<Ingested>> {
        // Rows are locked in key order within a statement, but a batch that repeats a key spans
        // several statements, and two such batches can deadlock; the victim is rolled back whole
        // and simply runs again.
        let mut backoff = Backoff::new(CONFLICT_BACKOFF, CONFLICT_BACKOFF_CAP);
        let mut attempt = 1;
        loop {
            match ingest_once(self, events).await {
                Err(StoreError::Conflict(_)) if attempt < CONFLICT_ATTEMPTS => {
                    attempt += 1;
                    tokio::time::sleep(backoff.next_delay()).await;
                }
                outcome => return outcome,
            }
        }
    }

    async fn transition(&self, request: TransitionRequest) -> Result<TransitionOutcome> {
        let mut tx = self.begin().await?;
        let id = request.incident_id;
        let current = tx.lock_incident(id).await?.ok_or(StoreError::NotFound)?;
        let transition = Transition::plan(current.status, request.action)?;
        let at = request.at;
        let change = StatusChange {
            incident_id: id,
            transition,
            at,
            resolution_note: request
                .note
                .as_deref()
                .filter(|_| transition.to == IncidentStatus::Resolved),
            policy: transition
                .schedules_first_level
                .then_some(request.policy.as_ref()),
        };
        let incident = tx.change_status(&change).await?.ok_or(InvalidTransition {
            status: current.status,
            action: request.action,
        })?;

        let entry = |detail| NewTimelineEntry::new(id, at, &request.actor, detail);
        let mut entries = vec![entry(TimelineDetail::transitioned(
            request.action,
            transition.from,
            request.note.clone(),
        ))];
        if let Some(link) = &request.link {
            if !tx.use_link(link, id, at).await? {
                return Err(StoreError::Duplicate(
                    "this link has been used already".into(),
                ));
            }
        }
        let mut cancelled = Vec::new();
        if transition.cancels_pending {
            for escalation in tx.cancel_pending(id, at).await? {
                entries.push(entry(TimelineDetail::cancelled(
                    &escalation,
                    request.action.as_str(),
                )));
                cancelled.push(escalation.id);
            }
            let unsent = tx.cancel_notifications(id, at).await?;
            if unsent > 0 {
                entries.push(entry(TimelineDetail::NotificationsCancelled {
                    count: unsent as usize,
                    reason: request.action.as_str().to_owned(),
                }));
            }
        }
        tx.append_timeline(&entries).await?;
        let scheduled = if transition.schedules_first_level {
            let first = NextLevel::first(id, &request.policy, at);
            schedule(&mut tx, &[first], at).await?.pop()
        } else {
            None
        };
        tx.commit().await?;
        Ok(TransitionOutcome {
            incident,
            scheduled,
            cancelled,
        })
    }

    async fn settle_due(
        &self,
        clock: &(dyn Fn() -> Timestamp + Send + Sync),
        limit: u32,
        only: Option<&[Uuid]>,
    ) -> Result<Vec<Settled>> {
        let mut tx = self.begin().await?;
        // Stamped once the transaction holds its connection: the lag includes any wait for it.
        let now = clock();
        let mut claimed = tx.claim_due(&DueQuery { now, limit, only }).await?;
        claimed.sort_by_key(|claim| (claim.escalation.scheduled_at, claim.escalation.id));

        let mut entries = Vec::with_capacity(claimed.len());
        let mut raised = Vec::new();
        let (mut next_levels, mut next_of) = (Vec::new(), Vec::new());
        let mut notifications = Vec::new();
        let mut to_send = vec![0; claimed.len()];
        // Targets resolve when the level executes, against the users there are now and whoever
        // is on call now.
        let executing: Vec<&EscalationLevel> = claimed
            .iter()
            .filter(|claim| claim.escalation.status == EscalationStatus::Executed)
            .filter_map(|claim| {
                claim
                    .policy
                    .as_ref()?
                    .level(claim.escalation.escalation_level)
            })
            .collect();
        let directory = if !executing.is_empty() {
            let mut directory = tx.directory().await?;
            directory.on_call = on_call(&mut tx, &executing, now).await?;
            directory
        } else {
            Directory::default()
        };
        for (position, claim) in claimed.iter().enumerate() {
            let Claimed {
                escalation,
                incident_status,
                policy,
            } = claim;
            let incident_id = escalation.incident_id;
            if escalation.status != EscalationStatus::Executed {
                let reason = format!("incident is {incident_status}");
                let detail = TimelineDetail::cancelled(escalation, reason);
                entries.push(NewTimelineEntry::system(incident_id, now, detail));
                continue;
            }
            raised.push((incident_id, escalation.escalation_level));
            let policy = policy.as_ref().ok_or_else(|| {
                StoreError::internal("an escalating incident has no policy snapshot")
            })?;
            let level = policy.level(escalation.escalation_level);
            let has_next = policy.after(escalation.escalation_level).is_some();
            // A level outside its window is skipped, and the next follows at once.
            let closed = level
                .and_then(|level| level.only_during.as_ref())
                .filter(|window| !window.contains(now));
            if let Some(window) = closed {
                let detail =
                    TimelineDetail::executed(escalation, now, Some(skipped(window, has_next)));
                entries.push(NewTimelineEntry::system(incident_id, now, detail));
                if let Some(next) = NextLevel::at_once(escalation, policy, now) {
                    next_levels.push(next);
                    next_of.push(position);
                }
                continue;
            }
            let planned = level
                .map(|level| LevelNotifications::plan(escalation, level, &directory, now, has_next))
                .unwrap_or_default();
            // Who the level reached follows its execution; that it reached nobody is said on the
            // execution itself.
            let detail = TimelineDetail::executed(escalation, now, planned.reached_nobody);
            entries.push(NewTimelineEntry::system(incident_id, now, detail));
            to_send[position] = planned
                .notifications
                .iter()
                .filter(|n| n.status == NotificationStatus::Pending)
                .count();
            notifications.extend(planned.notifications);
            entries.extend(planned.entries);
            let next = if planned.moves_on {
                NextLevel::at_once(escalation, policy, now)
            } else {
                NextLevel::after(escalation, policy, now)
            };
            if let Some(next) = next {
                next_levels.push(next);
                next_of.push(position);
            }
        }
        if !raised.is_empty() {
            tx.raise_levels(&raised, now).await?;
        }
        if !notifications.is_empty() {
            tx.insert_notifications(&notifications).await?;
        }
        tx.append_timeline(&entries).await?;
        let mut next = vec![None; claimed.len()];
        for (position, scheduled) in next_of
            .into_iter()
            .zip(schedule(&mut tx, &next_levels, now).await?)
        {
            next[position] = Some(scheduled);
        }
        tx.commit().await?;
        Ok(claimed
            .into_iter()
            .zip(next)
            .zip(to_send)
            .map(|((claim, next), to_send)| Settled {
                escalation: claim.escalation,
                next,
                to_send,
            })
            .collect())
    }

    async fn plan_sends(
        &self,
        group: &[Notification],
        limits: &[(u32, Duration)],
        now: Timestamp,
    ) -> Result<SendPlan> {
        let Some(first) = group.first() else {
            return Ok(SendPlan {
                deliveries: Vec::new(),
                opens: now,
            });
        };
        let (channel, recipient) = (first.channel.as_str(), first.rate_key());
        let mut tx = self.begin().await?;
        tx.lock_window(channel, recipient, now).await?;
        // Cancelled since it was claimed (its incident acknowledged meanwhile): not sent.
        let ids: Vec<Uuid> = group.iter().map(|n| n.id).collect();
        let pending: HashSet<Uuid> = tx.still_pending(&ids).await?.into_iter().collect();
        let group: Vec<Notification> = group
            .iter()
            .filter(|n| pending.contains(&n.id))
            .cloned()
            .collect();
        let group = group.as_slice();
        let longest = limits.iter().map(|(_, per)| *per).max().unwrap_or_default();
        let since = Timestamp::from_millis(now.as_millis() - longest.as_millis() as i64);
        let sent = tx.window(channel, recipient, since).await?;
        let (slots, opens) = room(&sent, limits, now);
        let deliveries = Delivery::plan_group(group, slots);
        for planned in deliveries.iter().filter(|planned| !planned.is_held()) {
            let ids: Vec<Uuid> = planned.members.iter().map(|n| n.id).collect();
            tx.reserve(&ids, &planned.key, now).await?;
        }
        tx.commit().await?;
        Ok(SendPlan { deliveries, opens })
    }

    async fn record_receipt(&self, receipt: &Receipt) -> Result<Vec<Notification>> {
        let mut tx = self.begin().await?;
        // A first read, unlocked, only to learn which incidents to lock first.
        let carried = tx.carried_by(&receipt.provider_message_id, false).await?;
        let mut incidents: Vec<Uuid> = carried.iter().map(|n| n.incident_id).collect();
        incidents.sort();
        incidents.dedup();
        let statuses: HashMap<Uuid, IncidentStatus> =
            tx.share_incidents(&incidents).await?.into_iter().collect();
        // Read again under the incidents' locks: a transition may have moved them meanwhile.
        let carried = tx.carried_by(&receipt.provider_message_id, true).await?;
        let digest = carried.len() > 1;
        let mut changed = Vec::new();
        let mut entries = Vec::new();
        for mut n in carried {
            let was_sent = matches!(
                n.status,
                NotificationStatus::Sent | NotificationStatus::Delivered
            );
            if !was_sent || (receipt.delivered && n.status == NotificationStatus::Delivered) {
                continue;
            }
            let escalating = statuses
                .get(&n.incident_id)
                .is_some_and(|s| matches!(s, IncidentStatus::Escalating | IncidentStatus::Open));
            let at = receipt.at;
            let then = if receipt.delivered {
                n.status = NotificationStatus::Delivered;
                None
            } else {
                let error = format!(
                    "{} reported {}{}",
                    n.provider.as_deref().unwrap_or("the provider"),
                    receipt.status,
                    receipt
                        .error
                        .as_deref()
                        .map(|code| format!(" (error {code})"))
                        .unwrap_or_default()
                );
                n.last_error = Some(error);
                let spent = u32::try_from(n.attempts).unwrap_or(u32::MAX) >= receipt.max_attempts;
                if !escalating || spent {
                    n.status = NotificationStatus::Failed;
                    Some(if spent { "failed" } else { "stopped" })
                } else {
                    // Undelivered counts as not sent: the retry is not held by the window.
                    let (next, at_once) = receipt.failover.next(n.provider_index);
                    n.status = NotificationStatus::Pending;
                    n.provider_index = next;
                    n.sent_at = None;
                    n.held = digest;
                    n.due_at = if at_once {
                        at
                    } else {
                        let rounds = receipt.failover.rounds(n.attempts);
                        at.after(Backoff::after(
                            receipt.retry_backoff,
                            receipt.retry_backoff_cap,
                            rounds.saturating_sub(1),
                        ))
                    };
                    Some(if at_once { "failover" } else { "retry" })
                }
            };
            n.updated_at = at;
            tx.apply_receipt(&n).await?;
            entries.push(NewTimelineEntry::system(
                n.incident_id,
                at,
                TimelineDetail::NotificationReceipt {
                    delivered: receipt.delivered,
                    notification_id: n.id,
                    channel: n.channel,
                    recipient: n.recipient.clone(),
                    provider: n.provider.clone(),
                    provider_message_id: receipt.provider_message_id.clone(),
                    status: receipt.status.clone(),
                    error: receipt.error.clone(),
                    then: then.map(str::to_owned),
                    retry_at: (n.status == NotificationStatus::Pending).then_some(n.due_at),
                },
            ));
            changed.push(n);
        }
        tx.append_timeline(&entries).await?;
        tx.commit().await?;
        Ok(changed)
    }

    async fn record_attempts(&self, records: &[AttemptRecord]) -> Result<Vec<Notification>> {
        let mut tx = self.begin().await?;
        let mut incidents: Vec<Uuid> = records.iter().map(|r| r.incident_id).collect();
        incidents.sort();
        incidents.dedup();
        tx.share_incidents(&incidents).await?;
        let mut recorded = Vec::with_capacity(records.len());
        let mut entries = Vec::with_capacity(records.len());
        for record in records {
            let Some(notification) = tx.record_outcome(record).await? else {
                continue;
            };
            // Only an attempt is written down: not a rate-limit hold, nor a send put back.
            if record.attempted() {
                let detail = TimelineDetail::attempted(
                    &notification,
                    record.attempts,
                    &record.outcome,
                    record.digest_of,
                );
                entries.push(NewTimelineEntry::system(
                    notification.incident_id,
                    record.at,
                    detail,
                ));
            }
            recorded.push(notification);
        }
        tx.append_timeline(&entries).await?;
        tx.commit().await?;
        Ok(recorded)
    }
}

/// One attempt at storing `events`, in one transaction.
async fn ingest_once<B: Backend>(backend: &B, events: &[NewEvent]) -> Result<Vec<Ingested>> {
    if events
        .iter()
        .all(|event| event.dedup_key.is_none() && event.escalates().is_none())
    {
        return open_incidents(backend, events).await;
    }
    let mut tx = backend.begin_ingest().await?;
    let mut ingested: Vec<Option<Ingested>> = vec![None; events.len()];
    for group in statement_groups(events, MAX_ROWS_PER_STATEMENT) {
        let proposed = group
            .iter()
            .map(|index| Opening::of(&events[*index]))
            .collect::<Result<Vec<Opening>>>()?;
        let (keyed, keyless): (Vec<Opening>, Vec<Opening>) = proposed
            .iter()
            .cloned()
            .partition(|opening| opening.incident.dedup_key.is_some());
        if !keyless.is_empty() {
            tx.insert_incidents(&keyless).await?;
        }
        let returned = if keyed.is_empty() {
            Vec::new()
        } else {
            tx.upsert_incidents(&keyed).await?
        };
        let joined = joined_incidents(&proposed, returned)?;
        let stored: Vec<Event> = group
            .iter()
            .zip(&joined)
            .map(|(index, (incident, _))| Event::of(&events[*index], incident.id))
            .collect();
        tx.insert_events(&stored).await?;
        let entries: Vec<NewTimelineEntry> = group
            .iter()
            .zip(&stored)
            .zip(&joined)
            .map(|((index, event), (_, deduplicated))| {
                ingest_entry(&events[*index], event, *deduplicated)
            })
            .collect();
        tx.append_timeline(&entries).await?;
        for ((index, event), (incident, deduplicated)) in group.into_iter().zip(stored).zip(joined)
        {
            ingested[index] = Some(Ingested {
                event,
                incident,
                deduplicated,
                scheduled: None,
            });
        }
    }
    let ingested = ingested
        .into_iter()
        .map(|i| i.ok_or_else(|| StoreError::internal("an event was not stored")))
        .collect::<Result<Vec<Ingested>>>()?;
    let ingested = schedule_opened(&mut tx, events, ingested).await?;
    tx.commit().await?;
    Ok(ingested)
}

/// An incident opened on an auto-escalating service was inserted `ESCALATING` with its policy
/// ([`Opening::of`]); here, in the same transaction, it gets the transition's timeline entry and
/// level 1 scheduled, for every such incident of the batch in one statement each. An event that
/// joined a live incident leaves it as it was.
async fn schedule_opened<T: AppendTx>(
    tx: &mut T,
    events: &[NewEvent],
    mut ingested: Vec<Ingested>,
) -> Result<Vec<Ingested>> {
    let mut transitions = Vec::new();
    let mut firsts = Vec::new();
    let mut escalated = Vec::new();
    for (index, (new, ingested)) in events.iter().zip(&ingested).enumerate() {
        let Some(policy) = new.escalates() else {
            continue;
        };
        if ingested.deduplicated {
            continue;
        }
        let detail = TimelineDetail::transitioned(
            Action::Escalate,
            IncidentStatus::Open,
            Some("escalated on arrival: the service escalates automatically".into()),
        );
        let incident_id = ingested.incident.id;
        transitions.push(NewTimelineEntry::new(
            incident_id,
            new.received_at,
            &new.actor,
            detail,
        ));
        firsts.push(NextLevel::first(incident_id, policy, new.received_at));
        escalated.push(index);
    }
    if escalated.is_empty() {
        return Ok(ingested);
    }
    tx.append_timeline(&transitions).await?;
    // One statement schedules them all, stamped with the latest arrival: an instant no earlier
    // than any of the transitions it follows.
    let now = transitions
        .iter()
        .map(|entry| entry.at)
        .max()
        .unwrap_or_else(Timestamp::now);
    let scheduled = schedule(tx, &firsts, now).await?;
    for (index, scheduled) in escalated.into_iter().zip(scheduled) {
        ingested[index].scheduled = Some(scheduled);
    }
    Ok(ingested)
}

impl Opening {
    /// The incident `event` opens, unless it joins a live one: `ESCALATING` at once, with the
    /// policy it walks, when the event's service escalates automatically; `OPEN` otherwise.
    fn of(event: &NewEvent) -> Result<Self> {
        let mut incident = Incident::opened_by(event);
        let policy = event.escalates().cloned();
        if policy.is_some() {
            incident.status = Transition::plan(incident.status, Action::Escalate)?.to;
        }
        Ok(Self { incident, policy })
    }
}

/// Events without a `dedup_key` cannot join anything: each opens an incident, and the backend
/// stores them all in one round trip (the common case under load, measured in
/// docs/PERFORMANCE.md).
async fn open_incidents<B: Backend>(backend: &B, events: &[NewEvent]) -> Result<Vec<Ingested>> {
    let incidents: Vec<Incident> = events.iter().map(Incident::opened_by).collect();
    let stored: Vec<Event> = events
        .iter()
        .zip(&incidents)
        .map(|(event, incident)| Event::of(event, incident.id))
        .collect();
    let entries: Vec<NewTimelineEntry> = events
        .iter()
        .zip(&stored)
        .map(|(new, event)| ingest_entry(new, event, false))
        .collect();
    let opened = Opened {
        incidents,
        events: stored,
        entries,
    };
    backend.store_opened(&opened).await?;
    Ok(opened
        .events
        .into_iter()
        .zip(opened.incidents)
        .map(|(event, incident)| Ingested {
            event,
            incident,
            deduplicated: false,
            scheduled: None,
        })
        .collect())
}

/// Who is on call at `now` in each schedule that `levels` name, by name; a schedule that does not
/// exist is left out (its targets say so on the timeline).
async fn on_call<T: OutboxTx>(
    tx: &mut T,
    levels: &[&EscalationLevel],
    now: Timestamp,
) -> Result<OnCall> {
    let mut names: Vec<&str> = levels.iter().flat_map(|level| level.schedules()).collect();
    names.sort_unstable();
    names.dedup();
    let mut on_call = OnCall::new();
    for layers in tx.schedules_named(&names, now).await? {
        let name = layers.schedule.name.clone();
        match layers
            .schedule
            .schedule(&layers.rotations, &layers.overrides)
        {
            Ok(schedule) => {
                on_call.insert(name, schedule.on_call(now.as_datetime()));
            }
            // Stored records are checked when written; one that no longer reads (its zone gone
            // from the tz database) is said once in the logs, and its targets reach nobody.
            Err(invalid) => {
                tracing::error!(schedule = %name, %invalid, "a schedule cannot be computed");
                on_call.insert(name, Vec::new());
            }
        }
    }
    Ok(on_call)
}

/// What the timeline says of a level skipped outside its window.
fn skipped(window: &OnlyDuring, has_next: bool) -> String {
    let then = if has_next {
        "the next level follows at once"
    } else {
        "it was the last level"
    };
    format!(
        "outside its window ({} {}-{} {}): skipped; {then}",
        window.window.weekdays.join(","),
        window.window.start,
        window.window.end,
        window.time_zone
    )
}

/// The timeline entry of `event`, stored from `new`: by whoever sent it, when it arrived.
fn ingest_entry(new: &NewEvent, event: &Event, deduplicated: bool) -> NewTimelineEntry {
    let detail = TimelineDetail::ingested(event, deduplicated);
    NewTimelineEntry::new(event.incident_id, event.received_at, &new.actor, detail)
}

/// Schedules each level as a `PENDING` escalation with its `escalation.scheduled` entry, and
/// returns them in the order given.
async fn schedule<T: AppendTx>(
    tx: &mut T,
    levels: &[NextLevel],
    now: Timestamp,
) -> Result<Vec<Scheduled>> {
    if levels.is_empty() {
        return Ok(Vec::new());
    }
    let escalations: Vec<Escalation> = levels
        .iter()
        .map(|next| Escalation::pending(next, now))
        .collect();
    tx.insert_escalations(&escalations).await?;
    let entries: Vec<NewTimelineEntry> = escalations
        .iter()
        .map(|e| NewTimelineEntry::system(e.incident_id, now, TimelineDetail::scheduled(e)))
        .collect();
    tx.append_timeline(&entries).await?;
    Ok(escalations
        .iter()
        .map(|e| Scheduled {
            id: e.id,
            due: e.scheduled_at,
        })
        .collect())
}

/// Splits `count` events into the groups one multi-row statement can take: at most `max_rows`
/// each, no `dedup_key` twice in a group (a statement cannot insert and then update one row),
/// keeping the order of events that share a key. Within a group, rows are ordered by key, so
/// concurrent batches lock live incidents in one order and cannot deadlock. Returns indices
/// into `events`.
fn statement_groups(events: &[NewEvent], max_rows: usize) -> Vec<Vec<usize>> {
    type Identity<'e> = (Option<Uuid>, &'e str);
    let mut groups: Vec<(Vec<usize>, HashSet<Identity>)> = Vec::new();
    let mut next_group_of_key: HashMap<Identity, usize> = HashMap::new();
    let mut first_open = 0;
    for (index, event) in events.iter().enumerate() {
        let identity = event.dedup_identity();
        let start = match identity {
            Some(key) => next_group_of_key
                .get(&key)
                .copied()
                .unwrap_or(first_open)
                .max(first_open),
            None => first_open,
        };
        let mut group = start;
        while group < groups.len()
            && (groups[group].0.len() >= max_rows
                || identity.is_some_and(|k| groups[group].1.contains(&k)))
        {
            group += 1;
        }
        if group == groups.len() {
            groups.push((Vec::new(), HashSet::new()));
        }
        groups[group].0.push(index);
        if let Some(key) = identity {
            groups[group].1.insert(key);
            next_group_of_key.insert(key, group + 1);
        }
        while first_open < groups.len() && groups[first_open].0.len() >= max_rows {
            first_open += 1;
        }
    }
    groups
        .into_iter()
        .map(|(mut indices, _)| {
            indices.sort_by(|a, b| {
                events[*a]
                    .dedup_identity()
                    .cmp(&events[*b].dedup_identity())
            });
            indices
        })
        .collect()
}

/// Each `proposed` incident's outcome, in order, given the rows the keyed ones' upsert returned
/// (in any order): a keyless incident was inserted as proposed; a returned row whose id was
/// proposed opened that incident; any other row is the live incident a key joined (`true`).
fn joined_incidents(
    proposed: &[Opening],
    returned: Vec<Incident>,
) -> Result<Vec<(Incident, bool)>> {
    let mut outcomes: Vec<Option<(Incident, bool)>> = proposed
        .iter()
        .map(|opening| {
            let incident = &opening.incident;
            incident
                .dedup_key
                .is_none()
                .then(|| (incident.clone(), false))
        })
        .collect();
    let by_id: HashMap<Uuid, usize> = proposed
        .iter()
        .enumerate()
        .map(|(position, opening)| (opening.incident.id, position))
        .collect();
    let by_key: HashMap<(Option<Uuid>, &str), usize> = proposed
        .iter()
        .enumerate()
        .filter_map(|(position, opening)| {
            let incident = &opening.incident;
            let key = incident.dedup_key.as_deref()?;
            Some(((incident.service_id, key), position))
        })
        .collect();
    for incident in returned {
        let position = match by_id.get(&incident.id) {
            Some(position) => Some((*position, false)),
            None => incident
                .dedup_key
                .as_deref()
                .and_then(|key| by_key.get(&(incident.service_id, key)))
                .map(|position| (*position, true)),
        };
        let Some((position, joined)) = position else {
            return Err(StoreError::internal(
                "an upserted incident matches no event",
            ));
        };
        outcomes[position] = Some((incident, joined));
    }
    outcomes
        .into_iter()
        .map(|o| o.ok_or_else(|| StoreError::internal("an event got no incident")))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Severity;

    fn event(key: Option<&str>) -> NewEvent {
        NewEvent {
            source: "test".into(),
            summary: "x".into(),
            severity: Severity::Error,
            dedup_key: key.map(str::to_owned),
            payload: serde_json::Value::Null,
            actor: "test".into(),
            received_at: Timestamp::from_millis(0),
            service: None,
        }
    }

    #[test]
    fn groups_never_repeat_a_key_and_keep_each_keys_order() {
        let events: Vec<_> = [
            Some("b"),
            Some("a"),
            None,
            Some("b"),
            Some("b"),
            None,
            Some("a"),
        ]
        .into_iter()
        .map(event)
        .collect();
        let groups = statement_groups(&events, 3);
        let mut seen: Vec<usize> = groups.iter().flatten().copied().collect();
        seen.sort();
        assert_eq!(
            seen,
            (0..events.len()).collect::<Vec<_>>(),
            "every event once"
        );
        let position = |index: usize| groups.iter().position(|g| g.contains(&index)).unwrap();
        for group in &groups {
            assert!(group.len() <= 3);
            let keys: Vec<_> = group
                .iter()
                .filter_map(|i| events[*i].dedup_key.as_deref())
                .collect();
            let mut unique = keys.clone();
            unique.dedup();
            assert_eq!(keys, unique, "no key twice in {group:?}");
            let mut sorted = keys.clone();
            sorted.sort();
            assert_eq!(keys, sorted, "rows ordered by key");
        }
        assert!(
            position(0) < position(3) && position(3) < position(4),
            "b's events in order"
        );
        assert!(position(1) < position(6), "a's events in order");
    }
}
