//! Services, escalation policies as data and integration keys, on every backend.

use super::*;
use klaxon::domain::{EventService, IncidentStatus, PolicyRecord, Service, TokenSecret};
use klaxon::store::StoreError;

on_every_backend!(
    policies_are_kept_by_name_and_replaced_whole,
    services_name_a_policy_that_exists_and_never_share_a_name,
    integration_keys_find_their_service_until_revoked,
    events_dedup_within_their_service_and_may_escalate_on_arrival,
    a_repeating_policy_walks_its_levels_again_until_acknowledged,
    a_missed_heartbeat_opens_an_incident_unless_a_ping_beat_it,
    a_heartbeat_changed_is_due_by_its_new_interval_and_a_retired_one_is_gone,
);

fn levels(delays: &[u64]) -> Vec<EscalationLevel> {
    delays
        .iter()
        .zip(1..)
        .map(|(delay, level)| EscalationLevel {
            level,
            delay: Duration::from_secs(*delay),
            channels: vec![Channel::InApp],
            targets: Vec::new(),
            webhooks: Vec::new(),
            only_during: None,
        })
        .collect()
}

async fn policies_are_kept_by_name_and_replaced_whole(backend: Backend) {
    let Some(db) = TestDatabase::create(backend).await else {
        return;
    };
    let store = open_store(&db).await;
    let night = PolicyRecord::new("night", 2, levels(&[0, 300]), minute(0)).unwrap();
    let stored = store.create_policy(&night).await.unwrap();
    assert_eq!(stored, night, "read back as given");
    let again = PolicyRecord::new("night", 0, levels(&[60]), minute(0)).unwrap();
    assert!(matches!(
        store.create_policy(&again).await,
        Err(StoreError::Duplicate(_))
    ));
    let day = store
        .create_policy(&PolicyRecord::new("day", 0, levels(&[60]), minute(0)).unwrap())
        .await
        .unwrap();
    let names: Vec<String> = store
        .policies()
        .await
        .unwrap()
        .into_iter()
        .map(|p| p.name)
        .collect();
    assert_eq!(names, ["day", "night"]);

    let mut replaced = PolicyRecord::new("night", 1, levels(&[0, 60, 900]), minute(1)).unwrap();
    replaced.id = night.id;
    replaced.created_at = night.created_at;
    let stored = store.replace_policy(&replaced).await.unwrap();
    assert_eq!(stored.levels.levels().len(), 3);
    assert_eq!((stored.levels.repeat(), stored.updated_at), (1, minute(1)));
    assert_eq!(store.policy(night.id).await.unwrap(), stored);
    let mut clash = replaced.clone();
    clash.id = day.id;
    assert!(matches!(
        store.replace_policy(&clash).await,
        Err(StoreError::Duplicate(_))
    ));
    let mut ghost = replaced;
    ghost.id = Uuid::now_v7();
    ghost.name = "ghost".into();
    assert!(matches!(
        store.replace_policy(&ghost).await,
        Err(StoreError::NotFound)
    ));
}

async fn services_name_a_policy_that_exists_and_never_share_a_name(backend: Backend) {
    let Some(db) = TestDatabase::create(backend).await else {
        return;
    };
    let store = open_store(&db).await;
    let policy = store
        .create_policy(&PolicyRecord::new("p", 0, levels(&[0]), minute(0)).unwrap())
        .await
        .unwrap();
    let payments = Service::new("payments", Some(policy.id), true, minute(0)).unwrap();
    assert_eq!(store.create_service(&payments).await.unwrap(), payments);
    let dangling = Service::new("search", Some(Uuid::now_v7()), true, minute(0)).unwrap();
    assert!(matches!(
        store.create_service(&dangling).await,
        Err(StoreError::NotFound)
    ));
    let twin = Service::new("payments", None, false, minute(0)).unwrap();
    assert!(matches!(
        store.create_service(&twin).await,
        Err(StoreError::Duplicate(_))
    ));
    let search = store
        .create_service(&Service::new("search", None, false, minute(0)).unwrap())
        .await
        .unwrap();
    assert_eq!(
        store.services().await.unwrap(),
        [payments.clone(), search.clone()]
    );

    let mut changed = payments.clone();
    changed.escalation_policy_id = None;
    changed.auto_escalate = false;
    changed.updated_at = minute(1);
    assert_eq!(store.update_service(&changed).await.unwrap(), changed);
    assert_eq!(store.service(payments.id).await.unwrap(), changed);
    changed.escalation_policy_id = Some(Uuid::now_v7());
    assert!(matches!(
        store.update_service(&changed).await,
        Err(StoreError::NotFound)
    ));
}

async fn integration_keys_find_their_service_until_revoked(backend: Backend) {
    let Some(db) = TestDatabase::create(backend).await else {
        return;
    };
    let store = open_store(&db).await;
    let service = store
        .create_service(&Service::new("payments", None, true, minute(0)).unwrap())
        .await
        .unwrap();
    let secret = TokenSecret::generate();
    let key = store
        .create_integration_key(service.id, "prometheus", &secret, minute(0))
        .await
        .unwrap();
    assert_eq!((key.service_id, key.revoked_at), (service.id, None));
    let found = store
        .service_by_key(&TokenSecret::from_presented(secret.expose()))
        .await
        .unwrap();
    assert_eq!(found.map(|s| s.id), Some(service.id));
    assert!(store
        .service_by_key(&TokenSecret::generate())
        .await
        .unwrap()
        .is_none());
    assert!(matches!(
        store
            .create_integration_key(Uuid::now_v7(), "x", &TokenSecret::generate(), minute(0))
            .await,
        Err(StoreError::NotFound)
    ));
    let revoked = store
        .revoke_integration_key(service.id, key.id, minute(1))
        .await
        .unwrap();
    assert_eq!(revoked.revoked_at, Some(minute(1)));
    let again = store
        .revoke_integration_key(service.id, key.id, minute(2))
        .await
        .unwrap();
    assert_eq!(
        again.revoked_at,
        Some(minute(1)),
        "the first revocation is kept"
    );
    assert!(
        store.service_by_key(&secret).await.unwrap().is_none(),
        "revoked: it stops at once"
    );
    assert_eq!(store.integration_keys(service.id).await.unwrap(), [again]);
    assert!(matches!(
        store
            .revoke_integration_key(Uuid::now_v7(), key.id, minute(2))
            .await,
        Err(StoreError::NotFound)
    ));
}

async fn events_dedup_within_their_service_and_may_escalate_on_arrival(backend: Backend) {
    let Some(db) = TestDatabase::create(backend).await else {
        return;
    };
    let store = open_store(&db).await;
    let quiet = store
        .create_service(&Service::new("quiet", None, false, minute(0)).unwrap())
        .await
        .unwrap();
    let loud = store
        .create_service(&Service::new("loud", None, true, minute(0)).unwrap())
        .await
        .unwrap();
    let policy = Arc::new(EscalationPolicy::standard());
    let for_service = |service: &Service, escalate: bool, key: Option<&str>| NewEvent {
        service: Some(EventService {
            id: service.id,
            escalate: escalate.then(|| policy.clone()),
        }),
        ..event(key)
    };
    // One key, three scopes: no service, and each service: three incidents.
    let plain = store.ingest(event(Some("disk"))).await.unwrap();
    let a = store
        .ingest(for_service(&quiet, false, Some("disk")))
        .await
        .unwrap();
    let b = store
        .ingest(for_service(&loud, true, Some("disk")))
        .await
        .unwrap();
    let ids = [plain.incident.id, a.incident.id, b.incident.id];
    assert_eq!(
        ids.iter().collect::<std::collections::HashSet<_>>().len(),
        3
    );
    assert_eq!(a.incident.service_id, Some(quiet.id));
    assert_eq!(
        (a.incident.status, a.scheduled),
        (IncidentStatus::Open, None)
    );
    // The loud service's incident escalates on arrival, level 1 scheduled in the same commit.
    assert_eq!(b.incident.status, IncidentStatus::Escalating);
    let scheduled = b.scheduled.expect("level 1 scheduled");
    let escalations = store.escalations(b.incident.id).await.unwrap();
    assert_eq!(escalations.len(), 1);
    assert_eq!(escalations[0].id, scheduled.id);
    // A second event joins its own service's incident, and does not escalate again.
    let again = store
        .ingest(for_service(&loud, true, Some("disk")))
        .await
        .unwrap();
    assert!(again.deduplicated);
    assert_eq!((again.incident.id, again.scheduled), (b.incident.id, None));
    assert_eq!(store.escalations(b.incident.id).await.unwrap().len(), 1);
    // Keyless events on the loud service escalate too, in a batch.
    let batch = store
        .ingest_batch(&[
            for_service(&loud, true, None),
            for_service(&quiet, false, None),
        ])
        .await
        .unwrap();
    assert_eq!(batch[0].incident.status, IncidentStatus::Escalating);
    assert_eq!(batch[1].incident.status, IncidentStatus::Open);
    // Listing by service.
    let page = store
        .incidents(IncidentQuery {
            service: Some(loud.id),
            ..all(50)
        })
        .await
        .unwrap();
    let mut listed: Vec<Uuid> = page.items.iter().map(|i| i.id).collect();
    listed.sort();
    let mut expected = vec![b.incident.id, batch[0].incident.id];
    expected.sort();
    assert_eq!(listed, expected);
}

async fn a_repeating_policy_walks_its_levels_again_until_acknowledged(backend: Backend) {
    let Some(db) = TestDatabase::create(backend).await else {
        return;
    };
    let store = open_store(&db).await;
    // Two levels a minute apart, walked three times in all.
    let policy = Arc::new(
        EscalationPolicy::new(levels(&[60, 60]))
            .unwrap()
            .with_repeat(2),
    );
    let (incident, _) = escalated(store.as_ref(), minute(0), policy.clone()).await;
    let mut executed = Vec::new();
    for step in 1..=8 {
        for settled in store
            .settle_due(&move || minute(step), 10, None)
            .await
            .unwrap()
        {
            executed.push(settled.escalation.escalation_level);
        }
    }
    assert_eq!(
        executed,
        [1, 2, 3, 4, 5, 6],
        "two levels, three walks, then it stops"
    );
    assert_eq!(store.next_due().await.unwrap(), None);

    // Acknowledged in the second walk: it stops there.
    let (other, _) = escalated(store.as_ref(), minute(10), policy).await;
    let mut steps = Vec::new();
    for step in 11..=13 {
        for settled in store
            .settle_due(&move || minute(step), 10, None)
            .await
            .unwrap()
        {
            steps.push(settled.escalation.escalation_level);
        }
    }
    assert_eq!(steps, [1, 2, 3]);
    store
        .transition(request(other.id, Action::Acknowledge, minute(13)))
        .await
        .unwrap();
    assert!(store
        .settle_due(&|| minute(30), 10, None)
        .await
        .unwrap()
        .iter()
        .all(|s| { s.escalation.status != klaxon::domain::EscalationStatus::Executed }));
    assert_eq!(store.next_due().await.unwrap(), None);
    let _ = incident;
}

/// A service "backups" that does not escalate, with a monitor "nightly" of `interval`.
async fn backups_with_heartbeat(
    store: &Arc<dyn Store>,
    interval: &str,
) -> (Service, klaxon::domain::Heartbeat, TokenSecret) {
    let service = store
        .create_service(&Service::new("backups", None, false, minute(0)).unwrap())
        .await
        .unwrap();
    let secret = TokenSecret::generate();
    let heartbeat =
        klaxon::domain::Heartbeat::new(service.id, "nightly", interval, minute(0)).unwrap();
    store.create_heartbeat(&heartbeat, &secret).await.unwrap();
    (service, heartbeat, secret)
}

async fn a_missed_heartbeat_opens_an_incident_unless_a_ping_beat_it(backend: Backend) {
    use klaxon::engine::heartbeats::HeartbeatWatch;
    use klaxon::engine::Scheduler;

    let Some(db) = TestDatabase::create(backend).await else {
        return;
    };
    let store = open_store(&db).await;
    let (service, _, secret) = backups_with_heartbeat(&store, "1m").await;
    let watch = HeartbeatWatch {
        store: store.clone(),
        scheduler: Scheduler::new(None),
        policy: klaxon::live::Live::new(EscalationPolicy::standard()),
    };
    assert!(
        store
            .missed_heartbeats(minute(10))
            .await
            .unwrap()
            .is_empty(),
        "never pinged"
    );

    // Pinged at minute 0, due at 1; at minute 2 the watch sees the miss, but a ping lands
    // before the incident is noted: the incident is resolved, not left open.
    store
        .ping_heartbeat(&secret, minute(0))
        .await
        .unwrap()
        .unwrap();
    let missed = store.missed_heartbeats(minute(2)).await.unwrap();
    assert_eq!(missed.len(), 1);
    store
        .ping_heartbeat(&secret, minute(2))
        .await
        .unwrap()
        .unwrap();
    watch.missed(&missed[0], minute(2)).await.unwrap();
    let all = store
        .incidents(IncidentQuery {
            service: Some(service.id),
            ..all(10)
        })
        .await
        .unwrap();
    assert_eq!(all.items.len(), 1);
    assert_eq!(
        all.items[0].status,
        IncidentStatus::Resolved,
        "the ping won"
    );
    let now = store.heartbeats(service.id).await.unwrap().remove(0);
    assert_eq!((now.incident_id, now.due_at), (None, Some(minute(3))));

    // Missed for real at minute 5: an incident, noted on the monitor, seen once.
    watch.check(minute(5)).await.unwrap();
    let noted = store.heartbeats(service.id).await.unwrap().remove(0);
    let open = noted.incident_id.expect("the miss is noted");
    assert_eq!(
        store.incident(open).await.unwrap().status,
        IncidentStatus::Open
    );
    watch.check(minute(6)).await.unwrap();
    assert!(store.missed_heartbeats(minute(6)).await.unwrap().is_empty());
    // The next ping resolves nothing by itself here (the API does); it forgets the miss.
    let before = store
        .ping_heartbeat(&secret, minute(7))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(before.incident_id, Some(open));
}

async fn a_heartbeat_changed_is_due_by_its_new_interval_and_a_retired_one_is_gone(
    backend: Backend,
) {
    use klaxon::domain::HeartbeatChange;

    let Some(db) = TestDatabase::create(backend).await else {
        return;
    };
    let store = open_store(&db).await;
    let (service, heartbeat, secret) = backups_with_heartbeat(&store, "10m").await;
    let other = store
        .create_service(&Service::new("reports", None, false, minute(0)).unwrap())
        .await
        .unwrap();
    store.ping_heartbeat(&secret, minute(1)).await.unwrap();
    assert!(store.missed_heartbeats(minute(5)).await.unwrap().is_empty());

    let shorter = HeartbeatChange::new(Some("hourly"), Some("2m")).unwrap();
    let changed = store
        .change_heartbeat(service.id, heartbeat.id, &shorter)
        .await
        .unwrap();
    assert_eq!(changed.name, "hourly");
    assert_eq!(
        changed.due_at,
        Some(minute(3)),
        "the last ping + the new interval"
    );
    let missed = store.missed_heartbeats(minute(5)).await.unwrap();
    assert_eq!(missed.len(), 1);
    assert_eq!(missed[0].interval, std::time::Duration::from_secs(120));
    assert!(matches!(
        store
            .change_heartbeat(other.id, heartbeat.id, &shorter)
            .await,
        Err(StoreError::NotFound)
    ));

    let retired = store
        .retire_heartbeat(service.id, heartbeat.id, minute(6))
        .await
        .unwrap();
    assert_eq!(retired.retired_at, Some(minute(6)));
    assert!(store.heartbeats(service.id).await.unwrap().is_empty());
    assert!(store
        .missed_heartbeats(minute(60))
        .await
        .unwrap()
        .is_empty());
    assert!(store
        .ping_heartbeat(&secret, minute(7))
        .await
        .unwrap()
        .is_none());
    assert!(!store
        .note_missed(heartbeat.id, uuid::Uuid::now_v7(), minute(60))
        .await
        .unwrap());
    assert!(matches!(
        store
            .retire_heartbeat(service.id, heartbeat.id, minute(8))
            .await,
        Err(StoreError::NotFound)
    ));
    assert!(matches!(
        store
            .change_heartbeat(service.id, heartbeat.id, &shorter)
            .await,
        Err(StoreError::NotFound)
    ));
}
