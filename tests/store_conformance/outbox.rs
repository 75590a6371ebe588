//! Users and the notifications outbox, on every backend.

use super::*;
use klaxon::domain::Delivery;
use klaxon::domain::{
    Attempt, NotificationStatus, Outcome, RetryPolicy, User, UserChange, UserFields,
};
use klaxon::store::{AttemptRecord, SendPlan, StoreError};

on_every_backend!(
    users_are_created_listed_changed_and_never_share_a_handle,
    executing_a_level_tells_active_responders_and_admins_once,
    targets_that_name_nobody_are_written_and_fall_back_to_admins,
    claims_are_leased_and_attempts_recorded,
    stopping_an_incident_cancels_its_unsent_notifications,
    the_inbox_holds_a_users_in_app_notifications,
    a_link_acts_once,
    sends_are_planned_and_reserved_within_the_window,
    racing_dispatchers_keep_to_the_window_together,
    recording_an_attempt_never_deadlocks_with_an_acknowledge,
    a_notification_cancelled_after_its_claim_is_not_planned,
);

fn person(handle: &str, role: Role) -> User {
    let fields = UserFields {
        handle: handle.into(),
        name: format!("{handle} person"),
        email: format!("{handle}@example.com"),
        phone: None,
        role: Some(role),
        time_zone: None,
    };
    User::new(fields, minute(0)).expect("a valid user")
}

/// A one-level policy over `channels`, telling `targets`.
fn telling(channels: &[Channel], targets: &[&str]) -> Arc<EscalationPolicy> {
    let level = EscalationLevel {
        level: 1,
        delay: Duration::from_secs(60),
        channels: channels.to_vec(),
        targets: targets.iter().map(|t| t.to_string()).collect(),
        webhooks: Vec::new(),
        only_during: None,
    };
    Arc::new(EscalationPolicy::new(vec![level]).expect("a valid policy"))
}

/// An incident escalated at minute 0 under `policy`, with level 1 executed at minute 1.
pub(crate) async fn executed(store: &dyn Store, policy: Arc<EscalationPolicy>) -> Incident {
    let (incident, _) = escalated(store, minute(0), policy).await;
    let settled = store.settle_due(&|| minute(1), 10, None).await.unwrap();
    assert_eq!(settled.len(), 1);
    incident
}

async fn users_are_created_listed_changed_and_never_share_a_handle(backend: Backend) {
    let Some(db) = TestDatabase::create(backend).await else {
        return;
    };
    let store = open_store(&db).await;
    let given = person("alice", Role::Responder);
    let alice = store.create_user(&given).await.unwrap();
    assert_eq!(alice, given, "read back exactly as given");
    let again = store.create_user(&person("alice", Role::Admin)).await;
    assert!(matches!(again, Err(StoreError::Duplicate(_))), "{again:?}");
    let bob = store
        .create_user(&person("bob", Role::Admin))
        .await
        .unwrap();
    assert_eq!(store.users().await.unwrap(), [alice.clone(), bob.clone()]);
    assert_eq!(store.user(bob.id).await.unwrap(), bob);
    let mut found = store
        .users_by_id(&[bob.id, Uuid::now_v7(), alice.id])
        .await
        .unwrap();
    found.sort_by_key(|user| user.handle.clone());
    assert_eq!(found, [alice.clone(), bob.clone()], "the ones that exist");
    assert!(store.users_by_id(&[]).await.unwrap().is_empty());
    assert!(matches!(
        store.user(Uuid::now_v7()).await,
        Err(StoreError::NotFound)
    ));

    let change = UserChange {
        active: Some(false),
        phone: Some(Some("+33612345678".into())),
        ..UserChange::default()
    };
    let deactivated = alice.changed(change, minute(5)).unwrap();
    let stored = store
        .update_user(&deactivated)
        .await
        .unwrap()
        .expect("stored");
    let expected = User {
        version: 2,
        ..deactivated.clone()
    };
    assert_eq!(stored, expected, "the change, its version bumped");
    assert_eq!(store.user(alice.id).await.unwrap(), expected);
    assert!(!stored.active);

    // A change made from the version before is not stored over the one that won.
    let rename = UserChange {
        name: Some("Alice L.".into()),
        ..UserChange::default()
    };
    let stale = alice.changed(rename, minute(6)).unwrap();
    assert_eq!(store.update_user(&stale).await.unwrap(), None);
    assert_eq!(store.user(alice.id).await.unwrap(), expected);
    let ghost = person("ghost", Role::Viewer);
    assert_eq!(store.update_user(&ghost).await.unwrap(), None);
}

async fn executing_a_level_tells_active_responders_and_admins_once(backend: Backend) {
    let Some(db) = TestDatabase::create(backend).await else {
        return;
    };
    let store = open_store(&db).await;
    let alice = store
        .create_user(&person("alice", Role::Responder))
        .await
        .unwrap();
    let bob = store
        .create_user(&person("bob", Role::Admin))
        .await
        .unwrap();
    store
        .create_user(&person("carol", Role::Viewer))
        .await
        .unwrap();
    let dave = store
        .create_user(&person("dave", Role::Responder))
        .await
        .unwrap();
    let gone = UserChange {
        active: Some(false),
        ..UserChange::default()
    };
    store
        .update_user(&dave.changed(gone, minute(0)).unwrap())
        .await
        .unwrap()
        .expect("stored");

    let policy = telling(&[Channel::InApp, Channel::Email], &[]);
    let incident = executed(store.as_ref(), policy).await;
    let read = store
        .incidents_by_id(&[incident.id, Uuid::now_v7()])
        .await
        .unwrap();
    assert_eq!(read.iter().map(|i| i.id).collect::<Vec<_>>(), [incident.id]);
    let notifications = store.notifications_of(incident.id).await.unwrap();
    let sent: Vec<_> = notifications
        .iter()
        .map(|n| (n.recipient.as_str(), n.channel, n.status, n.user_id))
        .collect();
    use NotificationStatus::{Pending, Sent};
    let mut expected = vec![
        ("alice", Channel::InApp, Sent, Some(alice.id)),
        ("bob", Channel::InApp, Sent, Some(bob.id)),
        ("alice", Channel::Email, Pending, Some(alice.id)),
        ("bob", Channel::Email, Pending, Some(bob.id)),
    ];
    let mut got = sent.clone();
    got.sort_by_key(|(r, c, ..)| (c.as_str(), *r));
    expected.sort_by_key(|(r, c, ..)| (c.as_str(), *r));
    assert_eq!(got, expected, "carol is a viewer, dave is inactive");
    for n in &notifications {
        assert_eq!((n.escalation_level, n.created_at), (1, minute(1)));
        assert_eq!(n.message_key.as_deref(), Some(n.id.to_string().as_str()));
    }
    let timeline = store.timeline(incident.id).await.unwrap();
    let in_app_entries = timeline
        .iter()
        .filter(|e| e.kind == TimelineKind::NotificationSent)
        .count();
    assert_eq!(in_app_entries, 2, "in-app is delivered by being stored");

    // A second notification for one (escalation, recipient, channel) is refused by the database.
    let copy = match backend {
        Backend::Sqlite => "insert into notifications select 'copy-' || id, escalation_id, incident_id, escalation_level, channel, recipient, user_id, status, attempts, last_error, provider_id, held, message_key, due_at, created_at, updated_at, sent_at, read_at, address, contact_method_id, route, provider, provider_index, reply_code from notifications limit 1",
        Backend::Postgres => "insert into notifications select gen_random_uuid(), escalation_id, incident_id, escalation_level, channel, recipient, user_id, status, attempts, last_error, provider_id, held, message_key, due_at, created_at, updated_at, sent_at, read_at, address, contact_method_id, route, provider, provider_index, reply_code from notifications limit 1",
    };
    let refused = raw(backend, &db.url, copy).await.expect_err("a second row");
    assert!(
        refused.to_string().to_lowercase().contains("unique"),
        "{refused}"
    );
}

async fn targets_that_name_nobody_are_written_and_fall_back_to_admins(backend: Backend) {
    let Some(db) = TestDatabase::create(backend).await else {
        return;
    };
    let store = open_store(&db).await;
    store
        .create_user(&person("alice", Role::Responder))
        .await
        .unwrap();
    store
        .create_user(&person("bob", Role::Admin))
        .await
        .unwrap();

    let some = executed(
        store.as_ref(),
        telling(&[Channel::Email], &["alice", "ghost"]),
    )
    .await;
    let told: Vec<_> = store.notifications_of(some.id).await.unwrap();
    assert_eq!(
        told.iter()
            .map(|n| n.recipient.as_str())
            .collect::<Vec<_>>(),
        ["alice"]
    );
    let timeline = store.timeline(some.id).await.unwrap();
    let unresolved = timeline
        .iter()
        .find(|e| e.kind == TimelineKind::TargetUnresolved)
        .expect("the target that names nobody is written down");
    assert_eq!(unresolved.detail["target"], "ghost");

    let none = executed(store.as_ref(), telling(&[Channel::Email], &["ghost"])).await;
    let told: Vec<_> = store.notifications_of(none.id).await.unwrap();
    assert_eq!(
        told.iter()
            .map(|n| n.recipient.as_str())
            .collect::<Vec<_>>(),
        ["bob"]
    );
    let timeline = store.timeline(none.id).await.unwrap();
    let fallback = timeline
        .iter()
        .find(|e| e.kind == TimelineKind::FellBackToAdmins)
        .expect("the fallback is written down");
    assert_eq!(fallback.detail["admins"], json!(["bob"]));
}

fn record(n: &klaxon::domain::Notification, attempt: Attempt, at: Timestamp) -> AttemptRecord {
    let policy = RetryPolicy { max_attempts: 3 };
    AttemptRecord {
        id: n.id,
        incident_id: n.incident_id,
        attempts: n.attempts,
        outcome: Outcome::of(&attempt, n.attempts, policy, at),
        message_key: n.id.to_string(),
        digest_of: None,
        reply_code: None,
        at,
    }
}

fn failed(retryable: bool) -> Attempt {
    Attempt::Failed {
        error: "451 try later".into(),
        retryable,
        retry_in: Duration::from_secs(30),
    }
}

async fn claims_are_leased_and_attempts_recorded(backend: Backend) {
    let Some(db) = TestDatabase::create(backend).await else {
        return;
    };
    let store = open_store(&db).await;
    for handle in ["alice", "bob", "carol"] {
        store
            .create_user(&person(handle, Role::Responder))
            .await
            .unwrap();
    }
    let incident = executed(store.as_ref(), telling(&[Channel::Email], &[])).await;
    let lease = Duration::from_secs(60);
    assert_eq!(
        store.next_notification_due().await.unwrap(),
        Some(minute(1))
    );
    let claimed = store
        .claim_notifications(minute(1), lease, 10)
        .await
        .unwrap();
    assert_eq!(claimed.len(), 3);
    assert!(claimed
        .iter()
        .all(|n| n.attempts == 1 && n.due_at == minute(2)));
    assert!(
        store
            .claim_notifications(minute(1), lease, 10)
            .await
            .unwrap()
            .is_empty(),
        "leased"
    );

    let [sent, retried, fatal] = claimed.as_slice() else {
        unreachable!()
    };
    let delivered = Attempt::Sent {
        provider_id: Some("queued as 42".into()),
    };
    let at = minute(1);
    let records = [
        record(sent, delivered, at),
        record(retried, failed(true), at),
        record(fatal, failed(false), at),
    ];
    let recorded = store.record_attempts(&records).await.unwrap();
    assert_eq!(recorded.len(), 3);
    let now: Vec<_> = store.notifications_of(incident.id).await.unwrap();
    let find = |id| now.iter().find(|n| n.id == id).unwrap();
    assert_eq!(find(sent.id).status, NotificationStatus::Sent);
    assert_eq!(find(sent.id).provider_id.as_deref(), Some("queued as 42"));
    assert_eq!(find(sent.id).sent_at, Some(at));
    assert_eq!(find(retried.id).status, NotificationStatus::Pending);
    assert_eq!(find(retried.id).due_at, at.after(Duration::from_secs(30)));
    assert_eq!(find(fatal.id).status, NotificationStatus::Failed);
    assert_eq!(find(fatal.id).last_error.as_deref(), Some("451 try later"));

    let kinds: Vec<_> = store
        .timeline(incident.id)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.kind.as_str().starts_with("notification."))
        .map(|e| e.kind)
        .collect();
    use TimelineKind::{NotificationFailed, NotificationRetrying, NotificationSent};
    assert_eq!(
        kinds,
        [NotificationSent, NotificationRetrying, NotificationFailed]
    );

    // The retry is taken again once due; its attempts run out at the policy's maximum.
    let later = at.after(Duration::from_secs(30));
    let [again] = store
        .claim_notifications(later, lease, 10)
        .await
        .unwrap()
        .try_into()
        .unwrap();
    assert_eq!((again.id, again.attempts), (retried.id, 2));
    store
        .record_attempts(&[record(&again, failed(true), later)])
        .await
        .unwrap();
    let last = later.after(Duration::from_secs(30));
    let [third] = store
        .claim_notifications(last, lease, 10)
        .await
        .unwrap()
        .try_into()
        .unwrap();
    store
        .record_attempts(&[record(&third, failed(true), last)])
        .await
        .unwrap();
    let spent = store.notifications_of(incident.id).await.unwrap();
    let spent = spent.iter().find(|n| n.id == retried.id).unwrap();
    assert_eq!(
        (spent.status, spent.attempts),
        (NotificationStatus::Failed, 3)
    );
    assert_eq!(store.next_notification_due().await.unwrap(), None);
}

async fn stopping_an_incident_cancels_its_unsent_notifications(backend: Backend) {
    let Some(db) = TestDatabase::create(backend).await else {
        return;
    };
    let store = open_store(&db).await;
    store
        .create_user(&person("alice", Role::Responder))
        .await
        .unwrap();
    store
        .create_user(&person("bob", Role::Responder))
        .await
        .unwrap();
    let policy = telling(&[Channel::InApp, Channel::Email], &[]);
    let incident = executed(store.as_ref(), policy).await;
    let lease = Duration::from_secs(60);
    let claimed = store
        .claim_notifications(minute(1), lease, 1)
        .await
        .unwrap();
    let in_flight = claimed[0].clone();

    store
        .transition(request(incident.id, Action::Acknowledge, minute(2)))
        .await
        .unwrap();
    let after: Vec<_> = store.notifications_of(incident.id).await.unwrap();
    let statuses: Vec<_> = after.iter().map(|n| (n.channel, n.status)).collect();
    assert!(
        statuses.contains(&(Channel::InApp, NotificationStatus::Sent)),
        "kept as sent"
    );
    assert_eq!(
        statuses
            .iter()
            .filter(|(_, s)| *s == NotificationStatus::Cancelled)
            .count(),
        2,
        "{statuses:?}"
    );
    let timeline = store.timeline(incident.id).await.unwrap();
    let cancelled = timeline
        .iter()
        .find(|e| e.kind == TimelineKind::NotificationsCancelled)
        .expect("written down");
    assert_eq!(cancelled.detail["count"], 2);

    // The one in flight when the incident was acknowledged went out all the same.
    let delivered = Attempt::Sent { provider_id: None };
    let recorded = store
        .record_attempts(&[record(&in_flight, delivered, minute(2))])
        .await
        .unwrap();
    assert_eq!(recorded[0].status, NotificationStatus::Sent);
    let other = after
        .iter()
        .find(|n| n.channel == Channel::Email && n.id != in_flight.id)
        .unwrap();
    let ignored = store
        .record_attempts(&[record(other, failed(true), minute(2))])
        .await
        .unwrap();
    assert!(
        ignored.is_empty(),
        "a failure does not revive a cancelled notification"
    );
    assert!(store
        .claim_notifications(minute(9), lease, 10)
        .await
        .unwrap()
        .is_empty());
}

async fn the_inbox_holds_a_users_in_app_notifications(backend: Backend) {
    let Some(db) = TestDatabase::create(backend).await else {
        return;
    };
    let store = open_store(&db).await;
    let alice = store
        .create_user(&person("alice", Role::Responder))
        .await
        .unwrap();
    let bob = store
        .create_user(&person("bob", Role::Responder))
        .await
        .unwrap();
    let policy = telling(&[Channel::InApp, Channel::Email], &["alice"]);
    let first = executed(store.as_ref(), policy.clone()).await;
    let second = executed(store.as_ref(), policy).await;

    let inbox = store.inbox(alice.id, false, 50).await.unwrap();
    let incidents: Vec<_> = inbox.iter().map(|n| n.incident_id).collect();
    assert_eq!(
        incidents,
        [second.id, first.id],
        "newest first, in-app only"
    );
    assert!(store.inbox(bob.id, false, 50).await.unwrap().is_empty());

    let read = store
        .mark_read(inbox[1].id, alice.id, minute(3))
        .await
        .unwrap();
    assert_eq!(read.read_at, Some(minute(3)));
    let again = store
        .mark_read(inbox[1].id, alice.id, minute(4))
        .await
        .unwrap();
    assert_eq!(again.read_at, Some(minute(3)), "the first read stands");
    let unread = store.inbox(alice.id, true, 50).await.unwrap();
    assert_eq!(
        unread.iter().map(|n| n.incident_id).collect::<Vec<_>>(),
        [second.id]
    );
    let not_hers = store.mark_read(inbox[0].id, bob.id, minute(3)).await;
    assert!(matches!(not_hers, Err(StoreError::NotFound)));
}

async fn a_link_acts_once(backend: Backend) {
    let Some(db) = TestDatabase::create(backend).await else {
        return;
    };
    let store = open_store(&db).await;
    let incident = incident_in(store.as_ref(), Escalating).await;
    let through = |action| TransitionRequest {
        link: Some("link-1".into()),
        ..request(incident.id, action, minute(2))
    };
    store
        .transition(through(Action::Acknowledge))
        .await
        .unwrap();
    let again = store.transition(through(Action::Resolve)).await;
    assert!(matches!(again, Err(StoreError::Duplicate(_))), "{again:?}");
    assert_eq!(
        store.incident(incident.id).await.unwrap().status,
        Acknowledged
    );
}

/// `count` incidents escalated for alice by email, their notifications claimed at minute 1.
async fn claimed_for_alice(store: &dyn Store, count: usize) -> Vec<klaxon::domain::Notification> {
    store
        .create_user(&person("alice", Role::Responder))
        .await
        .unwrap();
    for _ in 0..count {
        executed(store, telling(&[Channel::Email], &["alice"])).await;
    }
    let claimed = store
        .claim_notifications(minute(1), Duration::from_secs(60), 100)
        .await
        .unwrap();
    assert_eq!(claimed.len(), count);
    claimed
}

/// Each planned delivery with its message's key.
fn keyed(deliveries: &[klaxon::domain::Planned]) -> Vec<(Delivery, String)> {
    deliveries
        .iter()
        .map(|planned| (planned.delivery.clone(), planned.key.clone()))
        .collect()
}

async fn sends_are_planned_and_reserved_within_the_window(backend: Backend) {
    let Some(db) = TestDatabase::create(backend).await else {
        return;
    };
    let store = open_store(&db).await;
    let claimed = claimed_for_alice(store.as_ref(), 3).await;
    let per = Duration::from_secs(600);
    let SendPlan { deliveries, opens } = store
        .plan_sends(&claimed, &[(2, per)], minute(1))
        .await
        .unwrap();
    let digest_key = Delivery::key(&claimed[1..]);
    assert_eq!(
        keyed(&deliveries),
        [
            (Delivery::Single(0), claimed[0].id.to_string()),
            (Delivery::Digest(vec![1, 2]), digest_key.clone()),
        ]
    );
    assert_eq!(deliveries[1].members, claimed[1..]);
    assert_eq!(opens, minute(1), "nothing was in the window");
    // Reserved: they count in the window from now, under their message's key.
    let stored = store
        .notifications_of(claimed[1].incident_id)
        .await
        .unwrap();
    assert_eq!(stored[0].sent_at, Some(minute(1)));
    assert_eq!(stored[0].message_key.as_deref(), Some(digest_key.as_str()));

    // The window is full: what comes next is held until the oldest message leaves it.
    let later = store
        .plan_sends(&claimed[..1], &[(2, per)], minute(2))
        .await
        .unwrap();
    assert_eq!(
        keyed(&later.deliveries),
        [(Delivery::Hold(vec![0]), Delivery::key(&claimed[..1]))]
    );
    assert_eq!(later.opens, minute(11));
    // A send that failed gives its room back.
    let failure = record(&claimed[0], failed(true), minute(2));
    store.record_attempts(&[failure]).await.unwrap();
    let after = store
        .plan_sends(&claimed[..1], &[(2, per)], minute(3))
        .await
        .unwrap();
    assert_eq!(after.deliveries.len(), 1);
    assert!(
        matches!(after.deliveries[0].delivery, Delivery::Single(0)),
        "{after:?}"
    );
}

/// How many dispatchers plan for one recipient at the same moment.
const RACERS: usize = 24;

/// Dispatchers planning for one recipient at the same moment take turns: with room for one
/// message, exactly one of them sends.
async fn racing_dispatchers_keep_to_the_window_together(backend: Backend) {
    let Some(db) = TestDatabase::create(backend).await else {
        return;
    };
    let store = open_store(&db).await;
    let claimed = claimed_for_alice(store.as_ref(), RACERS).await;
    let per = Duration::from_secs(600);
    let start = Arc::new(tokio::sync::Barrier::new(RACERS));
    let racers = claimed.iter().map(|n| {
        let (store, start) = (store.clone(), start.clone());
        let group = vec![n.clone()];
        tokio::spawn(async move {
            start.wait().await;
            store.plan_sends(&group, &[(1, per)], minute(1)).await
        })
    });
    let mut sent = 0;
    for racer in futures::future::join_all(racers).await {
        let plan = racer.unwrap().unwrap();
        sent += plan
            .deliveries
            .iter()
            .filter(|planned| !planned.is_held())
            .count();
    }
    assert_eq!(
        sent, 1,
        "one message in the window, whichever dispatcher sent it"
    );
}

/// How many incidents race an acknowledge against the recording of their notification's attempt.
const RACES: usize = 40;

/// An acknowledge (incident, then its notifications) and the recording of an attempt (which must
/// take the incident first too) race on the same rows: every one of them commits, none is a
/// deadlock victim (which the API would answer 503).
async fn recording_an_attempt_never_deadlocks_with_an_acknowledge(backend: Backend) {
    let Some(db) = TestDatabase::create(backend).await else {
        return;
    };
    let store = open_store(&db).await;
    let claimed = claimed_for_alice(store.as_ref(), RACES).await;
    let races = claimed.into_iter().map(|n| {
        let store = store.clone();
        tokio::spawn(async move {
            let start = Arc::new(tokio::sync::Barrier::new(2));
            let acknowledge = {
                let (store, start) = (store.clone(), start.clone());
                let request = request(n.incident_id, Action::Acknowledge, minute(2));
                tokio::spawn(async move {
                    start.wait().await;
                    store.transition(request).await.map(|_| ())
                })
            };
            start.wait().await;
            let recorded = store
                .record_attempts(&[record(&n, failed(true), minute(2))])
                .await
                .map(|_| ());
            (recorded, acknowledge.await.unwrap())
        })
    });
    for race in futures::future::join_all(races).await {
        let (recorded, acknowledged) = race.unwrap();
        assert!(recorded.is_ok(), "{recorded:?}");
        assert!(acknowledged.is_ok(), "{acknowledged:?}");
    }
}

/// Claimed, then its incident acknowledged before the dispatcher planned it: it is left out of
/// the plan (not sent), and the other one goes.
async fn a_notification_cancelled_after_its_claim_is_not_planned(backend: Backend) {
    let Some(db) = TestDatabase::create(backend).await else {
        return;
    };
    let store = open_store(&db).await;
    let claimed = claimed_for_alice(store.as_ref(), 2).await;
    store
        .transition(request(
            claimed[0].incident_id,
            Action::Acknowledge,
            minute(2),
        ))
        .await
        .unwrap();
    let plan = store
        .plan_sends(&claimed, &[(10, Duration::from_secs(60))], minute(2))
        .await
        .unwrap();
    let planned: Vec<Uuid> = plan
        .deliveries
        .iter()
        .flat_map(|p| p.members.iter().map(|n| n.id))
        .collect();
    assert_eq!(planned, [claimed[1].id]);
}
