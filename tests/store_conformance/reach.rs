//! Contact methods, personal rules, receipts and replies, on every backend.

use super::*;
use crate::outbox::executed;
use klaxon::domain::{
    ContactMethod, ContactType, Failover, NewContactMethod, NewRule, Notification,
    NotificationRule, NotificationStatus, Outcome, User, UserChange, UserFields,
};
use klaxon::store::{AttemptRecord, Receipt, StoreError};

on_every_backend!(
    a_users_email_and_phone_are_their_first_contact_methods,
    personal_rules_are_planned_at_their_times_and_stop_at_the_acknowledge,
    receipts_deliver_or_fail_over_and_never_resend_a_stopped_page,
    replies_find_the_newest_message_with_their_code,
    a_new_email_or_phone_replaces_its_contact_methods_and_retiring_stops_rules,
);

fn alice() -> User {
    let fields = UserFields {
        handle: "alice".into(),
        name: "Alice".into(),
        email: "alice@example.com".into(),
        phone: Some("+14155550100".into()),
        role: Some(Role::Responder),
        time_zone: None,
    };
    User::new(fields, minute(0)).expect("a valid user")
}

fn level(channels: &[Channel]) -> Arc<EscalationPolicy> {
    let level = EscalationLevel {
        level: 1,
        delay: Duration::from_secs(60),
        channels: channels.to_vec(),
        targets: vec!["alice".into()],
        webhooks: Vec::new(),
        only_during: None,
    };
    Arc::new(EscalationPolicy::new(vec![level]).expect("a valid policy"))
}

async fn method(store: &dyn Store, user: &User, kind: ContactType, address: &str) -> ContactMethod {
    let new = NewContactMethod {
        kind,
        address: address.into(),
    };
    let method = ContactMethod::new(user.id, new, minute(0)).unwrap();
    store.add_contact_method(&method).await.unwrap()
}

async fn a_users_email_and_phone_are_their_first_contact_methods(backend: Backend) {
    let Some(db) = TestDatabase::create(backend).await else {
        return;
    };
    let store = open_store(&db).await;
    let alice = store.create_user(&alice()).await.unwrap();
    let kinds = |methods: Vec<ContactMethod>| -> Vec<(ContactType, String)> {
        methods.into_iter().map(|m| (m.kind, m.address)).collect()
    };
    let phone = "+14155550100".to_owned();
    assert_eq!(
        kinds(store.contact_methods(alice.id).await.unwrap()),
        [
            (ContactType::Email, "alice@example.com".to_owned()),
            (ContactType::Sms, phone.clone()),
            (ContactType::Voice, phone),
        ]
    );
    let push = method(store.as_ref(), &alice, ContactType::Push, "alice-pager").await;
    let again = ContactMethod::new(
        alice.id,
        NewContactMethod {
            kind: ContactType::Push,
            address: "alice-pager".into(),
        },
        minute(0),
    )
    .unwrap();
    let refused = store.add_contact_method(&again).await;
    assert!(
        matches!(refused, Err(StoreError::Duplicate(_))),
        "{refused:?}"
    );

    let mut bob = self::alice();
    bob.id = Uuid::now_v7();
    bob.handle = "bob".into();
    let bob = store.create_user(&bob).await.unwrap();
    let rule = |user: &User, method: &ContactMethod| {
        let new = NewRule {
            contact_method_id: method.id,
            delay: Duration::from_secs(60),
            repeat_every: None,
            max_repeats: None,
        };
        NotificationRule::new(user.id, new, minute(0)).unwrap()
    };
    let theirs = store.add_rule(&rule(&bob, &push)).await;
    assert!(
        matches!(theirs, Err(StoreError::NotFound)),
        "a rule through someone else's method: {theirs:?}"
    );
    let mine = store.add_rule(&rule(&alice, &push)).await.unwrap();
    assert_eq!(
        store.rules(alice.id).await.unwrap(),
        std::slice::from_ref(&mine)
    );
    assert_eq!(mine.delay, Duration::from_secs(60), "read back as given");
    assert!(store.rules(bob.id).await.unwrap().is_empty());
}

async fn personal_rules_are_planned_at_their_times_and_stop_at_the_acknowledge(backend: Backend) {
    let Some(db) = TestDatabase::create(backend).await else {
        return;
    };
    let store = open_store(&db).await;
    let alice = store.create_user(&alice()).await.unwrap();
    let methods = store.contact_methods(alice.id).await.unwrap();
    let of = |kind| methods.iter().find(|m| m.kind == kind).unwrap().clone();
    let push = method(store.as_ref(), &alice, ContactType::Push, "alice-pager").await;
    for (method, delay, every, max) in [
        (push.clone(), 0, None, None),
        (of(ContactType::Sms), 60, None, None),
        (of(ContactType::Voice), 180, Some(300), Some(2)),
    ] {
        let new = NewRule {
            contact_method_id: method.id,
            delay: Duration::from_secs(delay),
            repeat_every: every.map(Duration::from_secs),
            max_repeats: max,
        };
        store
            .add_rule(&NotificationRule::new(alice.id, new, minute(0)).unwrap())
            .await
            .unwrap();
    }
    // Level 1 executes at minute 1.
    let incident = executed(store.as_ref(), level(&[Channel::Personal])).await;
    let planned = store.notifications_of(incident.id).await.unwrap();
    let mut plan: Vec<(Channel, i64)> = planned
        .iter()
        .map(|n| {
            (
                n.channel,
                (n.due_at.as_millis() - minute(1).as_millis()) / 1000,
            )
        })
        .collect();
    plan.sort_by_key(|(_, after)| *after);
    assert_eq!(
        plan,
        [
            (Channel::Push, 0),
            (Channel::Sms, 60),
            (Channel::Voice, 180),
            (Channel::Voice, 480),
            (Channel::Voice, 780)
        ]
    );
    // Running the level's execution again creates nothing more.
    assert!(store
        .settle_due(&|| minute(2), 10, None)
        .await
        .unwrap()
        .is_empty());
    assert_eq!(store.notifications_of(incident.id).await.unwrap().len(), 5);

    // At minute 2 the push and the SMS are due; the acknowledge stops every call.
    let due = store
        .claim_notifications(minute(2), Duration::from_secs(60), 10)
        .await
        .unwrap();
    assert_eq!(due.len(), 2);
    store
        .transition(request(incident.id, Action::Acknowledge, minute(3)))
        .await
        .unwrap();
    let after: Vec<NotificationStatus> = store
        .notifications_of(incident.id)
        .await
        .unwrap()
        .iter()
        .filter(|n| n.channel == Channel::Voice)
        .map(|n| n.status)
        .collect();
    assert_eq!(after, [NotificationStatus::Cancelled; 3]);
}

/// `n` recorded as sent by provider `index` of two, as message `sid`.
async fn sent(store: &dyn Store, n: &Notification, sid: &str, index: i32, at: Timestamp) {
    let mut outcome = Outcome::of(
        &klaxon::domain::Attempt::Sent {
            provider_id: Some(sid.into()),
        },
        n.attempts,
        klaxon::domain::RetryPolicy { max_attempts: 8 },
        at,
    );
    outcome.provider = Some(["primary", "backup"][index as usize].into());
    outcome.provider_index = index;
    let record = AttemptRecord {
        id: n.id,
        incident_id: n.incident_id,
        attempts: n.attempts,
        outcome,
        message_key: n.id.to_string(),
        digest_of: None,
        reply_code: Some("4821".into()),
        at,
    };
    store.record_attempts(&[record]).await.unwrap();
}

fn receipt(sid: &str, delivered: bool, at: Timestamp) -> Receipt {
    Receipt {
        provider_message_id: sid.into(),
        status: if delivered {
            "delivered"
        } else {
            "undelivered"
        }
        .into(),
        delivered,
        error: (!delivered).then(|| "30006".into()),
        failover: Failover { providers: 2 },
        max_attempts: 8,
        retry_backoff: Duration::from_secs(1),
        retry_backoff_cap: Duration::from_secs(60),
        at,
    }
}

async fn claimed_sms(store: &dyn Store, at: Timestamp) -> Notification {
    let mut claimed = store
        .claim_notifications(at, Duration::from_secs(60), 10)
        .await
        .unwrap();
    assert_eq!(claimed.len(), 1);
    claimed.pop().unwrap()
}

async fn receipts_deliver_or_fail_over_and_never_resend_a_stopped_page(backend: Backend) {
    let Some(db) = TestDatabase::create(backend).await else {
        return;
    };
    let store = open_store(&db).await;
    store.create_user(&alice()).await.unwrap();

    // Delivered.
    let first = executed(store.as_ref(), level(&[Channel::Sms])).await;
    let n = claimed_sms(store.as_ref(), minute(1)).await;
    sent(store.as_ref(), &n, "SM1", 0, minute(1)).await;
    let changed = store
        .record_receipt(&receipt("SM1", true, minute(2)))
        .await
        .unwrap();
    assert_eq!(changed[0].status, NotificationStatus::Delivered);
    assert_eq!(changed[0].provider.as_deref(), Some("primary"));
    let again = store
        .record_receipt(&receipt("SM1", true, minute(2)))
        .await
        .unwrap();
    assert!(again.is_empty(), "a repeated receipt changes nothing");
    let kinds: Vec<TimelineKind> = store
        .timeline(first.id)
        .await
        .unwrap()
        .iter()
        .map(|e| e.kind)
        .collect();
    assert!(
        kinds.contains(&TimelineKind::NotificationDelivered),
        "{kinds:?}"
    );
    store
        .transition(request(first.id, Action::Resolve, minute(2)))
        .await
        .unwrap();

    // Undelivered on the primary: due at once on the backup; then on the backup: after the
    // backoff, on the primary again.
    let second = executed(store.as_ref(), level(&[Channel::Sms])).await;
    let n = claimed_sms(store.as_ref(), minute(3)).await;
    sent(store.as_ref(), &n, "SM2", 0, minute(3)).await;
    let failed = store
        .record_receipt(&receipt("SM2", false, minute(4)))
        .await
        .unwrap();
    assert_eq!(
        (
            failed[0].status,
            failed[0].provider_index,
            failed[0].due_at,
            failed[0].sent_at
        ),
        (NotificationStatus::Pending, 1, minute(4), None)
    );
    assert!(failed[0].last_error.as_deref().unwrap().contains("30006"));
    let n = claimed_sms(store.as_ref(), minute(4)).await;
    assert_eq!(n.provider_index, 1, "the retry goes to the backup");
    sent(store.as_ref(), &n, "SM3", 1, minute(4)).await;
    let failed = store
        .record_receipt(&receipt("SM3", false, minute(5)))
        .await
        .unwrap();
    assert_eq!(
        (failed[0].status, failed[0].provider_index),
        (NotificationStatus::Pending, 0)
    );
    assert!(
        failed[0].due_at > minute(5),
        "every provider failed: the backoff applies"
    );

    // Acknowledged meanwhile: an undelivered receipt does not send the page again.
    let n = claimed_sms(store.as_ref(), minute(10)).await;
    sent(store.as_ref(), &n, "SM4", 0, minute(10)).await;
    store
        .transition(request(second.id, Action::Acknowledge, minute(11)))
        .await
        .unwrap();
    let stopped = store
        .record_receipt(&receipt("SM4", false, minute(12)))
        .await
        .unwrap();
    assert_eq!(stopped[0].status, NotificationStatus::Failed);
    assert!(store
        .claim_notifications(minute(30), Duration::from_secs(60), 10)
        .await
        .unwrap()
        .is_empty());
}

async fn replies_find_the_newest_message_with_their_code(backend: Backend) {
    let Some(db) = TestDatabase::create(backend).await else {
        return;
    };
    let store = open_store(&db).await;
    store.create_user(&alice()).await.unwrap();
    let incident = executed(store.as_ref(), level(&[Channel::Sms])).await;
    let n = claimed_sms(store.as_ref(), minute(1)).await;
    sent(store.as_ref(), &n, "SM9", 0, minute(1)).await;
    let found = store.replied_to("+14155550100", "4821").await.unwrap();
    assert_eq!(
        found.iter().map(|n| n.incident_id).collect::<Vec<_>>(),
        [incident.id]
    );
    assert!(store
        .replied_to("+14155550100", "1111")
        .await
        .unwrap()
        .is_empty());
    assert!(
        store
            .replied_to("+14155550199", "4821")
            .await
            .unwrap()
            .is_empty(),
        "another number"
    );
    assert_eq!(store.message_of(n.id).await.unwrap().len(), 1);
    assert!(matches!(
        store.message_of(Uuid::now_v7()).await,
        Err(StoreError::NotFound)
    ));
}

async fn a_new_email_or_phone_replaces_its_contact_methods_and_retiring_stops_rules(
    backend: Backend,
) {
    let Some(db) = TestDatabase::create(backend).await else {
        return;
    };
    let store = open_store(&db).await;
    let alice = store.create_user(&alice()).await.unwrap();
    let methods = store.contact_methods(alice.id).await.unwrap();
    let sms = methods
        .iter()
        .find(|m| m.kind == ContactType::Sms)
        .unwrap()
        .clone();
    let new = NewRule {
        contact_method_id: sms.id,
        delay: Duration::ZERO,
        repeat_every: None,
        max_repeats: None,
    };
    store
        .add_rule(&NotificationRule::new(alice.id, new, minute(0)).unwrap())
        .await
        .unwrap();
    let change = UserChange {
        phone: Some(Some("+14155550111".into())),
        email: Some("alice@new.example.com".into()),
        ..UserChange::default()
    };
    let changed = alice.changed(change, minute(1)).unwrap();
    store.update_user(&changed).await.unwrap().expect("stored");
    let now: Vec<(ContactType, String)> = store
        .contact_methods(alice.id)
        .await
        .unwrap()
        .into_iter()
        .map(|m| (m.kind, m.address))
        .collect();
    let phone = "+14155550111".to_owned();
    assert_eq!(
        now,
        [
            (ContactType::Email, "alice@new.example.com".to_owned()),
            (ContactType::Sms, phone.clone()),
            (ContactType::Voice, phone),
        ],
        "the old ones are retired, the new ones added"
    );
    assert!(
        store.rules(alice.id).await.unwrap().is_empty(),
        "the rule through the old number is retired with it"
    );

    // Retiring by hand: the method and the rules through it.
    let push = method(store.as_ref(), &alice, ContactType::Push, "alice-pager").await;
    let new = NewRule {
        contact_method_id: push.id,
        delay: Duration::ZERO,
        repeat_every: None,
        max_repeats: None,
    };
    let rule = store
        .add_rule(&NotificationRule::new(alice.id, new, minute(0)).unwrap())
        .await
        .unwrap();
    let other = Uuid::now_v7();
    assert!(matches!(
        store.retire_contact_method(other, push.id, minute(2)).await,
        Err(StoreError::NotFound)
    ));
    store
        .retire_contact_method(alice.id, push.id, minute(2))
        .await
        .unwrap();
    assert!(
        matches!(
            store
                .retire_contact_method(alice.id, push.id, minute(2))
                .await,
            Err(StoreError::NotFound)
        ),
        "once"
    );
    assert!(store.rules(alice.id).await.unwrap().is_empty());
    assert!(matches!(
        store.retire_rule(alice.id, rule.id, minute(3)).await,
        Err(StoreError::NotFound)
    ));
    assert!(store
        .contact_methods(alice.id)
        .await
        .unwrap()
        .iter()
        .all(|m| m.id != push.id));
    // Re-adding a retired address brings it back.
    let again = ContactMethod::new(
        alice.id,
        NewContactMethod {
            kind: ContactType::Push,
            address: "alice-pager".into(),
        },
        minute(4),
    )
    .unwrap();
    let back = store.add_contact_method(&again).await.unwrap();
    assert_eq!(back.id, push.id, "the retired one comes back");
    let refused = store.add_contact_method(&again).await;
    assert!(
        matches!(refused, Err(StoreError::Duplicate(_))),
        "{refused:?}"
    );
}
