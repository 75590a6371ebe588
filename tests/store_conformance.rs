//! The conformance suite of the `Store` trait: every backend passes the same scenarios. SQLite
//! always runs; PostgreSQL runs when `KLAXON_TEST_DATABASE_URL` is set.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{Backend, TestDatabase};
use futures::StreamExt;
use klaxon::domain::notification::REACHED_NOBODY;
use klaxon::domain::{
    Action, Channel, EscalationLevel, EscalationPolicy, EscalationStatus, EventService, Incident,
    IncidentStatus, InvalidTransition, NewEvent, NewToken, Role, Severity, TimelineEntry,
    TimelineKind, Timestamp, Transition,
};
use klaxon::store::{
    self, Backlog, IncidentQuery, Scheduled, Store, StoreError, TransitionRequest,
};
use serde_json::json;
use sqlx::Connection;
use uuid::Uuid;

use IncidentStatus::{Acknowledged, Cancelled, Escalating, Open, Resolved};

#[path = "store_conformance/catalog.rs"]
mod catalog;
#[path = "store_conformance/outbox.rs"]
mod outbox;
#[path = "store_conformance/reach.rs"]
mod reach;
#[path = "store_conformance/schedules.rs"]
mod schedules;

on_every_backend!(
    migrating_twice_is_a_no_op,
    the_installation_id_outlives_connections,
    a_large_batch_stores_every_event_in_order,
    ingest_opens_an_open_incident,
    dedup_key_joins_a_live_incident,
    dedup_key_never_joins_a_terminal_incident,
    without_dedup_key_every_event_opens_an_incident,
    concurrent_ingests_with_one_dedup_key_open_one_incident,
    ingest_racing_a_resolve_loses_no_event,
    keyless_batches_racing_transitions_all_commit,
    a_failed_batch_leaves_nothing_behind,
    every_cell_of_the_state_table,
    escalate_schedules_the_first_level,
    leaving_escalating_cancels_pending_escalations,
    resolve_keeps_the_resolution_note,
    concurrent_transitions_serialize,
    unknown_ids_are_not_found,
    incidents_are_listed_newest_first_in_pages,
    tokens_are_created_listed_found_and_revoked,
    the_database_refuses_deletes,
    an_unreachable_database_is_unavailable,
    settling_walks_the_levels_of_the_policy,
    escalations_not_yet_due_are_left_pending,
    a_due_escalation_of_an_incident_no_longer_escalating_is_cancelled,
    only_the_given_escalations_are_settled,
    the_earliest_due_are_settled_first_up_to_the_limit,
    pending_escalations_are_counted_and_paged,
    scheduling_notifies_other_instances,
    concurrent_workers_settle_each_escalation_once,
);

/// SPEC §3, cell by cell, actions in `Action::ALL` order: `None` is a 409.
#[rustfmt::skip]
const STATE_TABLE: [(IncidentStatus, [Option<IncidentStatus>; 4]); 5] = [
    (Open,         [Some(Acknowledged), Some(Escalating), Some(Resolved), Some(Cancelled)]),
    (Escalating,   [Some(Acknowledged), None,             Some(Resolved), Some(Cancelled)]),
    (Acknowledged, [None,               None,             Some(Resolved), Some(Cancelled)]),
    (Resolved,     [None,               None,             None,           None]),
    (Cancelled,    [None,               None,             None,           None]),
];

/// How many events or actions the concurrency scenarios fire at once.
const CONCURRENCY: usize = 50;

/// How many escalations fall due at once for the concurrent workers, how many workers share the
/// database, and how many escalations each settles per call.
const DUE_AT_ONCE: usize = 2_000;
const WORKERS: usize = 3;
const WORKER_BATCH: u32 = 100;

async fn open_store(db: &TestDatabase) -> Arc<dyn Store> {
    let store = store::connect(&db.url.parse().unwrap())
        .await
        .expect("connect");
    store.migrate().await.expect("migrate");
    store
}

/// A fixed instant, `minutes` after a base, so that every timestamp the store returns is checkable.
fn minute(minutes: i64) -> Timestamp {
    Timestamp::from_millis(1_795_780_800_123 + minutes * 60_000)
}

fn event(dedup_key: Option<&str>) -> NewEvent {
    NewEvent {
        source: "api".into(),
        summary: "disk full on db-1\nsecond line".into(),
        severity: Severity::Critical,
        dedup_key: dedup_key.map(Into::into),
        payload: json!({ "text": "disk full on db-1\nsecond line" }),
        actor: "ops-bot".into(),
        received_at: minute(0),
        service: None,
    }
}

fn request(incident_id: Uuid, action: Action, at: Timestamp) -> TransitionRequest {
    TransitionRequest {
        incident_id,
        action,
        actor: "alice".into(),
        note: None,
        at,
        policy: Arc::new(EscalationPolicy::standard()),
        link: None,
    }
}

/// A new incident brought into `status` at minute 1.
async fn incident_in(store: &dyn Store, status: IncidentStatus) -> Incident {
    let incident = store.ingest(event(None)).await.expect("ingest").incident;
    let action = match status {
        Open => return incident,
        Escalating => Action::Escalate,
        Acknowledged => Action::Acknowledge,
        Resolved => Action::Resolve,
        Cancelled => Action::Cancel,
    };
    let moved = store
        .transition(request(incident.id, action, minute(1)))
        .await
        .expect("setup")
        .incident;
    assert_eq!(moved.status, status);
    moved
}

/// A policy of as many levels as `delays` (milliseconds), each after the one before.
fn policy(delays: &[u64]) -> Arc<EscalationPolicy> {
    let levels = (1..)
        .zip(delays)
        .map(|(level, &delay)| EscalationLevel {
            level,
            delay: Duration::from_millis(delay),
            channels: vec![Channel::InApp],
            targets: Vec::new(),
            webhooks: Vec::new(),
            only_during: None,
        })
        .collect();
    Arc::new(EscalationPolicy::new(levels).expect("a valid policy"))
}

/// A new incident escalated `at` under `policy`, and its level 1 as scheduled.
async fn escalated(
    store: &dyn Store,
    at: Timestamp,
    policy: Arc<EscalationPolicy>,
) -> (Incident, Scheduled) {
    let incident = store.ingest(event(None)).await.expect("ingest").incident;
    let escalate = TransitionRequest {
        policy,
        link: None,
        ..request(incident.id, Action::Escalate, at)
    };
    let outcome = store.transition(escalate).await.expect("escalate");
    let level_1 = outcome.scheduled.expect("level 1 is scheduled");
    (outcome.incident, level_1)
}

/// Runs `statement` on the test's database directly, behind the store's back.
async fn raw(backend: Backend, url: &str, statement: &str) -> Result<u64, sqlx::Error> {
    let done = match backend {
        Backend::Sqlite => {
            let mut conn = sqlx::SqliteConnection::connect(url).await?;
            sqlx::query(statement)
                .execute(&mut conn)
                .await?
                .rows_affected()
        }
        Backend::Postgres => {
            let mut conn = sqlx::PgConnection::connect(url).await?;
            sqlx::query(statement)
                .execute(&mut conn)
                .await?
                .rows_affected()
        }
    };
    Ok(done)
}

fn kinds(timeline: &[TimelineEntry]) -> Vec<TimelineKind> {
    timeline.iter().map(|entry| entry.kind).collect()
}

fn all(limit: u32) -> IncidentQuery {
    IncidentQuery {
        status: None,
        limit,
        before: None,
        service: None,
    }
}

async fn migrating_twice_is_a_no_op(backend: Backend) {
    let Some(db) = TestDatabase::create(backend).await else {
        return;
    };
    let store = open_store(&db).await;
    let incident = store.ingest(event(None)).await.unwrap().incident;
    store
        .migrate()
        .await
        .expect("a second migrate on the same store");
    let again = open_store(&db).await;
    again.ping().await.unwrap();
    assert_eq!(again.incident(incident.id).await.unwrap(), incident);
}

/// The id the Redis index names its keys after: made once with the database, then the same on
/// every connection and after migrating again; another database has another.
async fn the_installation_id_outlives_connections(backend: Backend) {
    let Some(db) = TestDatabase::create(backend).await else {
        return;
    };
    let store = open_store(&db).await;
    let id = store.installation_id().await.unwrap();
    assert!(!id.is_nil());
    assert_eq!(store.installation_id().await.unwrap(), id);
    drop(store);
    let reopened = open_store(&db).await;
    assert_eq!(reopened.installation_id().await.unwrap(), id);
    let Some(other) = TestDatabase::create(backend).await else {
        return;
    };
    assert_ne!(
        open_store(&other).await.installation_id().await.unwrap(),
        id
    );
}

async fn ingest_opens_an_open_incident(backend: Backend) {
    let Some(db) = TestDatabase::create(backend).await else {
        return;
    };
    let store = open_store(&db).await;
    let ingested = store.ingest(event(Some("db-1/disk"))).await.unwrap();
    let incident = &ingested.incident;
    assert!(!ingested.deduplicated);
    assert_eq!(incident.title, "disk full on db-1");
    assert_eq!(incident.severity, Severity::Critical);
    assert_eq!(incident.status, Open);
    assert_eq!(incident.dedup_key.as_deref(), Some("db-1/disk"));
    assert_eq!(incident.event_count, 1);
    assert_eq!(incident.escalation_level, 0);
    assert_eq!(
        (incident.created_at, incident.updated_at),
        (minute(0), minute(0))
    );
    let unset = (
        incident.acknowledged_at,
        incident.resolved_at,
        incident.cancelled_at,
    );
    assert_eq!(unset, (None, None, None));
    assert_eq!(incident.resolution_note, None);
    assert_eq!(&store.incident(incident.id).await.unwrap(), incident);

    let event = &ingested.event;
    assert_eq!(event.incident_id, incident.id);
    assert_eq!(
        (event.source.as_str(), event.received_at),
        ("api", minute(0))
    );
    assert_eq!(
        event.payload,
        json!({ "text": "disk full on db-1\nsecond line" })
    );

    let timeline = store.timeline(incident.id).await.unwrap();
    assert_eq!(kinds(&timeline), [TimelineKind::IncidentCreated]);
    assert_eq!(
        (timeline[0].actor.as_str(), timeline[0].at),
        ("ops-bot", minute(0))
    );
    assert_eq!(
        timeline[0].detail,
        json!({ "event_id": event.id, "source": "api" })
    );
    assert!(store.escalations(incident.id).await.unwrap().is_empty());
}

async fn dedup_key_joins_a_live_incident(backend: Backend) {
    let Some(db) = TestDatabase::create(backend).await else {
        return;
    };
    let store = open_store(&db).await;
    for status in [Open, Acknowledged, Escalating] {
        let key = format!("key-{status}");
        let first = store.ingest(event(Some(&key))).await.unwrap().incident;
        if status != Open {
            let action = if status == Escalating {
                Action::Escalate
            } else {
                Action::Acknowledge
            };
            store
                .transition(request(first.id, action, minute(1)))
                .await
                .unwrap();
        }
        let later = NewEvent {
            received_at: minute(2),
            ..event(Some(&key))
        };
        let joined = store.ingest(later).await.unwrap();
        assert!(joined.deduplicated, "{status}");
        assert_eq!(joined.incident.id, first.id);
        assert_eq!(joined.event.incident_id, first.id);
        assert_eq!(joined.incident.status, status);
        assert_eq!(joined.incident.event_count, 2);
        assert_eq!(joined.incident.updated_at, minute(2));
        assert_eq!(joined.incident.created_at, minute(0));
        let timeline = store.timeline(first.id).await.unwrap();
        let appended = timeline.last().unwrap();
        assert_eq!(appended.kind, TimelineKind::EventAppended);
        assert_eq!(appended.detail["event_id"], json!(joined.event.id));
        assert_eq!(store.incident(first.id).await.unwrap(), joined.incident);
    }
}

async fn dedup_key_never_joins_a_terminal_incident(backend: Backend) {
    let Some(db) = TestDatabase::create(backend).await else {
        return;
    };
    let store = open_store(&db).await;
    for action in [Action::Resolve, Action::Cancel] {
        let key = format!("key-{action}");
        let first = store.ingest(event(Some(&key))).await.unwrap().incident;
        store
            .transition(request(first.id, action, minute(1)))
            .await
            .unwrap();
        let next = store.ingest(event(Some(&key))).await.unwrap();
        assert!(!next.deduplicated, "{action}");
        assert_ne!(next.incident.id, first.id);
        assert_eq!((next.incident.status, next.incident.event_count), (Open, 1));
        assert_eq!(store.incident(first.id).await.unwrap().event_count, 1);
        let timeline = store.timeline(next.incident.id).await.unwrap();
        assert_eq!(kinds(&timeline), [TimelineKind::IncidentCreated]);
    }
}

async fn without_dedup_key_every_event_opens_an_incident(backend: Backend) {
    let Some(db) = TestDatabase::create(backend).await else {
        return;
    };
    let store = open_store(&db).await;
    let first = store.ingest(event(None)).await.unwrap();
    let second = store.ingest(event(None)).await.unwrap();
    assert!(!first.deduplicated && !second.deduplicated);
    assert_ne!(first.incident.id, second.incident.id);
    assert_eq!(store.incidents(all(10)).await.unwrap().items.len(), 2);
}

/// More events than one statement takes, keyless and keyed mixed, then keyless alone (each
/// backend has a faster path for those): every event is stored, each answer in its place.
async fn a_large_batch_stores_every_event_in_order(backend: Backend) {
    let Some(db) = TestDatabase::create(backend).await else {
        return;
    };
    let store = open_store(&db).await;
    let numbered = |n: usize, key: Option<&str>| NewEvent {
        summary: format!("event {n}"),
        ..event(key)
    };
    let mixed: Vec<_> = (0..600)
        .map(|n| numbered(n, (n % 7 == 0).then_some("shared")))
        .collect();
    let keyless: Vec<_> = (600..1200).map(|n| numbered(n, None)).collect();
    for batch in [mixed, keyless] {
        let ingested = store.ingest_batch(&batch).await.unwrap();
        assert_eq!(ingested.len(), batch.len());
        for (sent, stored) in batch.iter().zip(&ingested) {
            assert_eq!(stored.event.summary, sent.summary, "answers in order");
            assert_eq!(stored.event.incident_id, stored.incident.id);
            let timeline = store.timeline(stored.incident.id).await.unwrap();
            assert!(timeline
                .iter()
                .any(|entry| entry.detail["event_id"] == stored.event.id.to_string()));
        }
    }
    let shared = (0..600).filter(|n| n % 7 == 0).count();
    let mut incidents = 0;
    let mut query = all(200);
    loop {
        let page = store.incidents(query.clone()).await.unwrap();
        incidents += page.items.len();
        match page.next {
            Some(next) => query.before = Some(next),
            None => break,
        }
    }
    assert_eq!(
        incidents,
        (600 - shared + 1) + 600,
        "one per keyless event, one for the key"
    );
    let first_shared = store.ingest(event(Some("shared"))).await.unwrap();
    assert!(first_shared.deduplicated);
    assert_eq!(first_shared.incident.event_count, shared as i64 + 1);
}

async fn concurrent_ingests_with_one_dedup_key_open_one_incident(backend: Backend) {
    let Some(db) = TestDatabase::create(backend).await else {
        return;
    };
    let store = open_store(&db).await;
    let ingests = (0..CONCURRENCY).map(|_| {
        let store = store.clone();
        tokio::spawn(async move { store.ingest(event(Some("storm"))).await })
    });
    let results = futures::future::join_all(ingests).await;
    let ingested: Vec<_> = results
        .into_iter()
        .map(|r| r.unwrap().expect("ingest"))
        .collect();
    assert_eq!(ingested.iter().filter(|i| !i.deduplicated).count(), 1);
    let id = ingested[0].incident.id;
    assert!(ingested
        .iter()
        .all(|i| i.incident.id == id && i.event.incident_id == id));

    let incident = store.incident(id).await.unwrap();
    assert_eq!(incident.event_count, CONCURRENCY as i64);
    assert_eq!(store.incidents(all(10)).await.unwrap().items, [incident]);
    let timeline = kinds(&store.timeline(id).await.unwrap());
    assert_eq!(timeline[0], TimelineKind::IncidentCreated);
    assert_eq!(timeline.len(), CONCURRENCY);
    assert!(timeline[1..]
        .iter()
        .all(|&kind| kind == TimelineKind::EventAppended));
}

async fn ingest_racing_a_resolve_loses_no_event(backend: Backend) {
    let Some(db) = TestDatabase::create(backend).await else {
        return;
    };
    let store = open_store(&db).await;
    let first = store
        .ingest(event(Some("flapping")))
        .await
        .unwrap()
        .incident;
    // The resolve is spawned amid the ingests: 1 + (CONCURRENCY - 1) events in all.
    let tasks = (0..CONCURRENCY).map(|i| {
        let store = store.clone();
        let resolve = request(first.id, Action::Resolve, minute(1));
        tokio::spawn(async move {
            if i == CONCURRENCY / 2 {
                store.transition(resolve).await.map(|_| ())
            } else {
                store.ingest(event(Some("flapping"))).await.map(|_| ())
            }
        })
    });
    for result in futures::future::join_all(tasks).await {
        result.unwrap().expect("ingest or resolve");
    }

    let incidents = store
        .incidents(all(CONCURRENCY as u32))
        .await
        .unwrap()
        .items;
    assert_eq!(store.incident(first.id).await.unwrap().status, Resolved);
    let live = incidents.iter().filter(|i| !i.status.is_terminal()).count();
    assert!(live <= 1, "{live} live incidents share one dedup_key");
    let events: i64 = incidents.iter().map(|i| i.event_count).sum();
    assert_eq!(events, CONCURRENCY as i64);
}

/// Keyless batches (SQLite stores them through a connection of its own) interleaved with
/// escalations, which read the incident and then write: every one of them commits, none is
/// refused for a lock the other path held.
async fn keyless_batches_racing_transitions_all_commit(backend: Backend) {
    let Some(db) = TestDatabase::create(backend).await else {
        return;
    };
    let store = open_store(&db).await;
    let mut opened = Vec::new();
    for _ in 0..CONCURRENCY / 2 {
        opened.push(store.ingest(event(None)).await.unwrap().incident.id);
    }
    let batch = vec![event(None); 4];
    let tasks = opened.iter().map(|&id| {
        let (store, batch) = (store.clone(), batch.clone());
        tokio::spawn(async move {
            let (stored, escalated) = tokio::join!(
                store.ingest_batch(&batch),
                store.transition(request(id, Action::Escalate, minute(1))),
            );
            (stored.map(|stored| stored.len()), escalated.map(|_| ()))
        })
    });
    let mut stored = 0;
    for result in futures::future::join_all(tasks).await {
        let (batch, escalated) = result.unwrap();
        stored += batch.expect("a keyless batch commits");
        escalated.expect("an escalate commits");
    }

    assert_eq!(stored, 4 * CONCURRENCY / 2);
    let incidents = store.incidents(all(200)).await.unwrap().items;
    assert_eq!(incidents.len(), CONCURRENCY / 2 + stored);
    for id in opened {
        assert_eq!(store.incident(id).await.unwrap().status, Escalating);
    }
}

/// A batch that fails part-way (here an event for a service that does not exist) is rolled back
/// whole, on the short path for keyless events and on the general one for keyed events, and the
/// store takes the next batch as usual.
async fn a_failed_batch_leaves_nothing_behind(backend: Backend) {
    let Some(db) = TestDatabase::create(backend).await else {
        return;
    };
    let store = open_store(&db).await;
    let for_no_service = |dedup_key: Option<&str>| NewEvent {
        service: Some(EventService {
            id: Uuid::now_v7(),
            escalate: None,
        }),
        ..event(dedup_key)
    };
    let keyless = [event(None), for_no_service(None)];
    let keyed = [event(Some("disk")), for_no_service(Some("cpu"))];
    for batch in [&keyless, &keyed] {
        let refused = store.ingest_batch(batch).await;
        assert!(refused.is_err(), "{refused:?}");
    }
    assert!(store.incidents(all(10)).await.unwrap().items.is_empty());

    let stored = store
        .ingest_batch(&[event(None), event(Some("disk"))])
        .await
        .expect("the next batch is stored");
    assert_eq!(stored.len(), 2);
    assert_eq!(store.incidents(all(10)).await.unwrap().items.len(), 2);
}

async fn every_cell_of_the_state_table(backend: Backend) {
    let Some(db) = TestDatabase::create(backend).await else {
        return;
    };
    let store = open_store(&db).await;
    for (from, row) in STATE_TABLE {
        for (action, expected) in Action::ALL.into_iter().zip(row) {
            let before = incident_in(store.as_ref(), from).await;
            let at = minute(2);
            let result = store.transition(request(before.id, action, at)).await;
            let stored = store.incident(before.id).await.unwrap();
            let Some(to) = expected else {
                match result {
                    Err(StoreError::InvalidTransition(refused)) => {
                        assert_eq!(
                            refused,
                            InvalidTransition {
                                status: from,
                                action
                            }
                        )
                    }
                    other => panic!("{from} + {action}: expected a refusal, got {other:?}"),
                }
                assert_eq!(stored, before, "{from} + {action} changed the incident");
                continue;
            };
            let outcome = result.unwrap_or_else(|e| panic!("{from} + {action}: {e}"));
            let after = outcome.incident;
            let mut wanted = Incident {
                status: to,
                updated_at: at,
                ..before.clone()
            };
            match to {
                Acknowledged => wanted.acknowledged_at = Some(at),
                Resolved => wanted.resolved_at = Some(at),
                Cancelled => wanted.cancelled_at = Some(at),
                _ => {}
            }
            assert_eq!(after, wanted, "{from} + {action}");
            assert_eq!(stored, after, "{from} + {action}");
            let timeline = store.timeline(before.id).await.unwrap();
            let entry = timeline
                .iter()
                .rev()
                .find(|e| e.kind == TimelineKind::for_transition(action));
            let entry = entry.unwrap_or_else(|| panic!("{from} + {action}: no timeline entry"));
            assert_eq!((entry.at, entry.actor.as_str()), (at, "alice"));
            assert_eq!(entry.detail, json!({ "from": from.as_str() }));
        }
    }
}

async fn escalate_schedules_the_first_level(backend: Backend) {
    let Some(db) = TestDatabase::create(backend).await else {
        return;
    };
    let store = open_store(&db).await;
    let incident = incident_in(store.as_ref(), Open).await;
    let at = minute(1);
    let escalate = TransitionRequest {
        note: Some("paging the team".into()),
        ..request(incident.id, Action::Escalate, at)
    };
    let policy = escalate.policy.clone();
    let outcome = store.transition(escalate).await.unwrap();
    let escalated = outcome.incident;
    assert!(outcome.cancelled.is_empty());
    assert_eq!(
        (escalated.status, escalated.escalation_level),
        (Escalating, 0)
    );
    assert_eq!(escalated.resolution_note, None);

    let escalations = store.escalations(incident.id).await.unwrap();
    let [level_1] = escalations.as_slice() else {
        panic!("{escalations:?}")
    };
    assert_eq!(level_1.incident_id, incident.id);
    assert_eq!(
        (level_1.escalation_level, level_1.status),
        (1, EscalationStatus::Pending)
    );
    assert_eq!(level_1.scheduled_at, at.after(policy.first().delay));
    assert_eq!(level_1.scheduled_at, minute(6));
    assert_eq!(level_1.created_at, at);
    assert_eq!((level_1.executed_at, level_1.cancelled_at), (None, None));
    let scheduled = Scheduled {
        id: level_1.id,
        due: minute(6),
    };
    assert_eq!(outcome.scheduled, Some(scheduled));

    let timeline = store.timeline(incident.id).await.unwrap();
    use TimelineKind::*;
    assert_eq!(
        kinds(&timeline),
        [IncidentCreated, IncidentEscalated, EscalationScheduled]
    );
    assert_eq!(
        timeline[1].detail,
        json!({ "from": "OPEN", "note": "paging the team" })
    );
    assert_eq!((timeline[2].actor.as_str(), timeline[2].at), ("system", at));
    let scheduled = json!({
        "escalation_id": level_1.id,
        "escalation_level": 1,
        "scheduled_at": level_1.scheduled_at,
    });
    assert_eq!(timeline[2].detail, scheduled);
}

async fn leaving_escalating_cancels_pending_escalations(backend: Backend) {
    let Some(db) = TestDatabase::create(backend).await else {
        return;
    };
    let store = open_store(&db).await;
    for action in [Action::Acknowledge, Action::Resolve, Action::Cancel] {
        let incident = incident_in(store.as_ref(), Escalating).await;
        let at = minute(2);
        let outcome = store
            .transition(request(incident.id, action, at))
            .await
            .unwrap();
        assert_eq!(outcome.scheduled, None);

        let escalations = store.escalations(incident.id).await.unwrap();
        let [level_1] = escalations.as_slice() else {
            panic!("{escalations:?}")
        };
        assert_eq!(level_1.status, EscalationStatus::Cancelled, "{action}");
        assert_eq!(outcome.cancelled, [level_1.id]);
        assert_eq!(
            (level_1.cancelled_at, level_1.executed_at),
            (Some(at), None)
        );
        assert_eq!(
            level_1.scheduled_at,
            minute(6),
            "{action} kept the schedule"
        );

        let timeline = store.timeline(incident.id).await.unwrap();
        let [.., transition, cancelled] = timeline.as_slice() else {
            panic!("{timeline:?}")
        };
        assert_eq!(transition.kind, TimelineKind::for_transition(action));
        assert_eq!(cancelled.kind, TimelineKind::EscalationCancelled);
        let detail = json!({
            "escalation_id": level_1.id,
            "escalation_level": 1,
            "reason": action.as_str(),
        });
        assert_eq!((&cancelled.detail, cancelled.at), (&detail, at));
    }
}

async fn resolve_keeps_the_resolution_note(backend: Backend) {
    let Some(db) = TestDatabase::create(backend).await else {
        return;
    };
    let store = open_store(&db).await;
    let incident = incident_in(store.as_ref(), Open).await;
    let acknowledge = TransitionRequest {
        note: Some("looking".into()),
        ..request(incident.id, Action::Acknowledge, minute(1))
    };
    let acknowledged = store.transition(acknowledge).await.unwrap().incident;
    assert_eq!(acknowledged.resolution_note, None, "only resolve sets it");
    let resolve = TransitionRequest {
        note: Some("rebooted db-1".into()),
        ..request(incident.id, Action::Resolve, minute(2))
    };
    let resolved = store.transition(resolve).await.unwrap().incident;
    assert_eq!(resolved.resolution_note.as_deref(), Some("rebooted db-1"));
    assert_eq!(store.incident(incident.id).await.unwrap(), resolved);
    let timeline = store.timeline(incident.id).await.unwrap();
    let details: Vec<_> = timeline[1..].iter().map(|e| &e.detail).collect();
    let wanted = [
        json!({ "from": "OPEN", "note": "looking" }),
        json!({ "from": "ACKNOWLEDGED", "resolution_note": "rebooted db-1" }),
    ];
    assert_eq!(details, wanted.iter().collect::<Vec<_>>());
}

async fn concurrent_transitions_serialize(backend: Backend) {
    let Some(db) = TestDatabase::create(backend).await else {
        return;
    };
    let store = open_store(&db).await;
    let id = incident_in(store.as_ref(), Open).await.id;
    let transitions = (0..CONCURRENCY).map(|i| {
        let store = store.clone();
        let action = Action::ALL[i % Action::ALL.len()];
        tokio::spawn(async move { store.transition(request(id, action, minute(1))).await })
    });
    let mut won = 0;
    for result in futures::future::join_all(transitions).await {
        match result.unwrap() {
            Ok(_) => won += 1,
            Err(StoreError::InvalidTransition(_)) => {}
            Err(other) => panic!("only refusals may fail a transition, got {other}"),
        }
    }

    // Replaying the committed transitions in timeline order must walk the state table from OPEN
    // to the stored status, one step per winner.
    let timeline = store.timeline(id).await.unwrap();
    let mut status = Open;
    let mut steps = 0;
    for entry in &timeline {
        let Some(action) = Action::ALL
            .into_iter()
            .find(|&a| TimelineKind::for_transition(a) == entry.kind)
        else {
            continue;
        };
        assert_eq!(entry.detail["from"], status.as_str());
        status = Transition::plan(status, action)
            .expect("a committed transition is valid")
            .to;
        steps += 1;
    }
    assert_eq!(won, steps);
    let stored = store.incident(id).await.unwrap();
    assert_eq!(stored.status, status);
    assert!(
        status.is_terminal(),
        "a resolve or cancel always wins eventually"
    );
    let escalations = store.escalations(id).await.unwrap();
    assert!(escalations.len() <= 1);
    assert!(escalations
        .iter()
        .all(|e| e.status == EscalationStatus::Cancelled));
}

async fn unknown_ids_are_not_found(backend: Backend) {
    let Some(db) = TestDatabase::create(backend).await else {
        return;
    };
    let store = open_store(&db).await;
    store.ingest(event(None)).await.unwrap();
    let unknown = Uuid::now_v7();
    let not_found = |result: Result<(), StoreError>| matches!(result, Err(StoreError::NotFound));
    assert!(not_found(store.incident(unknown).await.map(drop)));
    assert!(not_found(store.escalations(unknown).await.map(drop)));
    assert!(not_found(store.timeline(unknown).await.map(drop)));
    let acknowledge = request(unknown, Action::Acknowledge, minute(1));
    assert!(not_found(store.transition(acknowledge).await.map(drop)));
    assert!(not_found(
        store.revoke_token(unknown, minute(1)).await.map(drop)
    ));
}

async fn incidents_are_listed_newest_first_in_pages(backend: Backend) {
    let Some(db) = TestDatabase::create(backend).await else {
        return;
    };
    let store = open_store(&db).await;
    let mut ids = Vec::new();
    for i in 0..7 {
        let incident = store.ingest(event(None)).await.unwrap().incident;
        if i % 3 == 0 {
            store
                .transition(request(incident.id, Action::Resolve, minute(1)))
                .await
                .unwrap();
        }
        ids.push(incident.id);
    }
    let newest_first: Vec<_> = ids.iter().rev().copied().collect();
    let resolved: Vec<_> = newest_first.iter().step_by(3).copied().collect();
    let open: Vec<_> = newest_first
        .iter()
        .copied()
        .filter(|id| !resolved.contains(id))
        .collect();

    let whole = store.incidents(all(7)).await.unwrap();
    assert_eq!(
        whole.items.iter().map(|i| i.id).collect::<Vec<_>>(),
        newest_first
    );
    assert_eq!(whole.next, None, "exactly `limit` rows leave no next page");
    for (status, wanted) in [
        (None, &newest_first),
        (Some(Resolved), &resolved),
        (Some(Open), &open),
    ] {
        for limit in [1, 2, 3, 200] {
            let mut seen = Vec::new();
            let mut before = None;
            loop {
                let page = store
                    .incidents(IncidentQuery {
                        status,
                        limit,
                        before,
                        service: None,
                    })
                    .await
                    .unwrap();
                assert!(page.items.len() <= limit as usize);
                assert!(page
                    .items
                    .iter()
                    .all(|i| status.is_none_or(|s| i.status == s)));
                seen.extend(page.items.iter().map(|i| i.id));
                match page.next {
                    Some(next) => {
                        assert_eq!(Some(&next), seen.last(), "next is the last id of the page");
                        before = Some(next);
                    }
                    None => break,
                }
            }
            assert_eq!(&seen, wanted, "status {status:?}, limit {limit}");
        }
    }
}

async fn tokens_are_created_listed_found_and_revoked(backend: Backend) {
    let Some(db) = TestDatabase::create(backend).await else {
        return;
    };
    let store = open_store(&db).await;
    let new = |name: &str, role, hash: &str| NewToken {
        name: name.into(),
        role,
        secret_hash: hash.into(),
        created_at: minute(0),
        user_id: None,
    };
    let admin = store
        .create_token(new("root", Role::Admin, "hash-1"))
        .await
        .unwrap();
    let viewer = store
        .create_token(new("grafana", Role::Viewer, "hash-2"))
        .await
        .unwrap();
    assert_eq!((admin.name.as_str(), admin.role), ("root", Role::Admin));
    assert_eq!((admin.created_at, admin.revoked_at), (minute(0), None));
    assert_eq!(
        store.tokens().await.unwrap(),
        [admin.clone(), viewer.clone()]
    );
    assert_eq!(
        store.token_by_hash("hash-2").await.unwrap(),
        Some(viewer.clone())
    );
    assert_eq!(store.token_by_hash("hash-3").await.unwrap(), None);

    let revoked = store.revoke_token(viewer.id, minute(1)).await.unwrap();
    assert_eq!(revoked.revoked_at, Some(minute(1)));
    let again = store.revoke_token(viewer.id, minute(2)).await.unwrap();
    assert_eq!(
        again.revoked_at,
        Some(minute(1)),
        "the first revocation stands"
    );
    assert_eq!(
        store.token_by_hash("hash-2").await.unwrap(),
        Some(revoked.clone())
    );
    assert_eq!(store.tokens().await.unwrap(), [admin.clone(), revoked]);

    // The last live admin token stays; of two revoked at once, one does.
    assert!(matches!(
        store.revoke_token(admin.id, minute(3)).await,
        Err(StoreError::Refused(_))
    ));
    let second = store
        .create_token(new("second", Role::Admin, "hash-3"))
        .await
        .unwrap();
    let (first, other) = tokio::join!(
        store.revoke_token(admin.id, minute(4)),
        store.revoke_token(second.id, minute(4)),
    );
    let refused = [&first, &other]
        .iter()
        .filter(|outcome| matches!(outcome, Err(StoreError::Refused(_))))
        .count();
    assert_eq!(refused, 1, "{first:?} {other:?}");
    assert_eq!(
        store
            .tokens()
            .await
            .unwrap()
            .iter()
            .filter(|t| t.role == Role::Admin && t.revoked_at.is_none())
            .count(),
        1
    );
}

async fn the_database_refuses_deletes(backend: Backend) {
    let Some(db) = TestDatabase::create(backend).await else {
        return;
    };
    let store = open_store(&db).await;
    // Row triggers fire only for rows that exist: give every table one.
    let incident = incident_in(store.as_ref(), Escalating).await;
    let new_token = NewToken {
        name: "root".into(),
        role: Role::Admin,
        secret_hash: "hash".into(),
        created_at: minute(0),
        user_id: None,
    };
    store.create_token(new_token).await.unwrap();
    let tables = [
        "incidents",
        "events",
        "escalations",
        "timeline",
        "tokens",
        "installation",
    ];
    for table in tables {
        let statement = format!("delete from {table}");
        let refused = raw(backend, &db.url, &statement).await;
        let error = refused.expect_err(&statement);
        assert!(
            error.to_string().contains("never deletes"),
            "{table}: {error}"
        );
    }
    assert_eq!(store.incident(incident.id).await.unwrap(), incident);
    assert_eq!(store.escalations(incident.id).await.unwrap().len(), 1);
    assert_eq!(store.timeline(incident.id).await.unwrap().len(), 3);
    assert_eq!(store.tokens().await.unwrap().len(), 1);
    store.installation_id().await.unwrap();
}

async fn an_unreachable_database_is_unavailable(backend: Backend) {
    let Some(db) = TestDatabase::create(backend).await else {
        return;
    };
    let unreachable = match backend {
        Backend::Sqlite => db.url.replace("klaxon.db", "missing/klaxon.db"),
        Backend::Postgres => "postgres://postgres@127.0.0.1:1/klaxon".to_owned(),
    };
    let started = Instant::now();
    let result = store::connect(&unreachable.parse().unwrap()).await;
    assert!(
        matches!(result, Err(StoreError::Unavailable(_))),
        "{:?}",
        result.err()
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "took {:?}",
        started.elapsed()
    );
}

async fn settling_walks_the_levels_of_the_policy(backend: Backend) {
    let Some(db) = TestDatabase::create(backend).await else {
        return;
    };
    let store = open_store(&db).await;
    let incident = incident_in(store.as_ref(), Escalating).await;
    let policy = EscalationPolicy::standard();
    let mut due = minute(6);
    for level in 1..=3 {
        let now = due.after(Duration::from_secs(60));
        let settled = store.settle_due(&move || now, 10, None).await.unwrap();
        let [settled] = settled.as_slice() else {
            panic!("level {level}: {settled:?}")
        };
        let executed = &settled.escalation;
        assert_eq!(executed.incident_id, incident.id);
        assert_eq!(
            (executed.escalation_level, executed.status),
            (level, EscalationStatus::Executed)
        );
        let times = (
            executed.scheduled_at,
            executed.executed_at,
            executed.cancelled_at,
        );
        assert_eq!(times, (due, Some(now), None), "level {level}");
        let stored = store.incident(incident.id).await.unwrap();
        assert_eq!(
            (stored.status, stored.escalation_level, stored.updated_at),
            (Escalating, level, now)
        );
        let escalations = store.escalations(incident.id).await.unwrap();
        assert_eq!(&escalations[level as usize - 1], executed);

        // Who each level told is written between these entries: not this scenario's subject.
        let timeline = walk_entries(store.timeline(incident.id).await.unwrap());
        let executed_entry = timeline
            .iter()
            .rfind(|e| e.kind == TimelineKind::EscalationExecuted)
            .unwrap();
        // There are no users: the level says on its execution that it reached nobody.
        let detail = json!({
            "escalation_id": executed.id,
            "escalation_level": level,
            "scheduled_at": due,
            "lag_ms": 60_000,
            "reached_nobody": REACHED_NOBODY,
        });
        assert_eq!(executed_entry.detail, detail);
        assert_eq!(
            (executed_entry.actor.as_str(), executed_entry.at),
            ("system", now)
        );

        let Some(following) = policy.after(level) else {
            assert_eq!(settled.next, None, "nothing follows the last level");
            assert_eq!(timeline.last(), Some(executed_entry));
            assert_eq!(escalations.len(), 3);
            assert_eq!(store.next_due().await.unwrap(), None);
            let much_later = now.after(Duration::from_secs(86_400));
            assert!(store
                .settle_due(&move || much_later, 10, None)
                .await
                .unwrap()
                .is_empty());
            break;
        };
        let next = settled.next.expect("the next level is scheduled");
        assert_eq!(next.due, now.after(following.delay));
        let [.., scheduled] = escalations.as_slice() else {
            unreachable!()
        };
        assert_eq!(
            (scheduled.id, scheduled.escalation_level, scheduled.status),
            (next.id, level + 1, EscalationStatus::Pending)
        );
        assert_eq!(
            (scheduled.scheduled_at, scheduled.created_at),
            (next.due, now)
        );
        let [.., before, last] = timeline.as_slice() else {
            panic!("{timeline:?}")
        };
        assert_eq!(before, executed_entry, "executed, then the next scheduled");
        assert_eq!(last.kind, TimelineKind::EscalationScheduled);
        assert_eq!((last.actor.as_str(), last.at), ("system", now));
        let detail = json!({
            "escalation_id": next.id,
            "escalation_level": level + 1,
            "scheduled_at": next.due,
        });
        assert_eq!(last.detail, detail);
        due = next.due;
    }
    use TimelineKind::*;
    let timeline = walk_entries(store.timeline(incident.id).await.unwrap());
    assert_eq!(
        kinds(&timeline),
        [
            IncidentCreated,
            IncidentEscalated,
            EscalationScheduled,
            EscalationExecuted,
            EscalationScheduled,
            EscalationExecuted,
            EscalationScheduled,
            EscalationExecuted,
        ]
    );
}

/// The entries of an incident's walk through its levels, without those saying whom each level
/// told.
fn walk_entries(timeline: Vec<TimelineEntry>) -> Vec<TimelineEntry> {
    timeline
        .into_iter()
        .filter(|entry| {
            let kind = entry.kind.as_str();
            !kind.starts_with("notification.") && kind != "escalation.fell_back_to_admins"
        })
        .collect()
}

async fn escalations_not_yet_due_are_left_pending(backend: Backend) {
    let Some(db) = TestDatabase::create(backend).await else {
        return;
    };
    let store = open_store(&db).await;
    let incident = incident_in(store.as_ref(), Escalating).await;
    let escalations = store.escalations(incident.id).await.unwrap();
    let timeline = store.timeline(incident.id).await.unwrap();
    let just_before = Timestamp::from_millis(minute(6).as_millis() - 1);
    assert!(store
        .settle_due(&move || just_before, 10, None)
        .await
        .unwrap()
        .is_empty());
    assert_eq!(store.incident(incident.id).await.unwrap(), incident);
    assert_eq!(store.escalations(incident.id).await.unwrap(), escalations);
    assert_eq!(store.timeline(incident.id).await.unwrap(), timeline);
    let on_time = store
        .settle_due(&move || minute(6), 10, None)
        .await
        .unwrap();
    assert_eq!(on_time.len(), 1, "due at its scheduled instant");
}

async fn a_due_escalation_of_an_incident_no_longer_escalating_is_cancelled(backend: Backend) {
    let Some(db) = TestDatabase::create(backend).await else {
        return;
    };
    let store = open_store(&db).await;
    for status in [Acknowledged, Resolved, Cancelled] {
        let (incident, level_1) = escalated(store.as_ref(), minute(1), policy(&[0, 0])).await;
        // A transition would cancel the escalation itself: write the status behind its back, as
        // only the worker's re-check can catch.
        let statement = format!(
            "update incidents set status = '{status}' where status = 'ESCALATING'",
            status = status.as_str()
        );
        assert_eq!(raw(backend, &db.url, &statement).await.unwrap(), 1);

        let settled = store
            .settle_due(&move || minute(2), 10, None)
            .await
            .unwrap();
        let [settled] = settled.as_slice() else {
            panic!("{settled:?}")
        };
        let cancelled = &settled.escalation;
        assert_eq!(
            (cancelled.id, cancelled.status),
            (level_1.id, EscalationStatus::Cancelled)
        );
        assert_eq!(
            (cancelled.cancelled_at, cancelled.executed_at),
            (Some(minute(2)), None)
        );
        assert_eq!(settled.next, None);
        let escalations = store.escalations(incident.id).await.unwrap();
        assert_eq!(escalations, std::slice::from_ref(cancelled));
        let stored = store.incident(incident.id).await.unwrap();
        assert_eq!((stored.status, stored.escalation_level), (status, 0));

        let timeline = store.timeline(incident.id).await.unwrap();
        let last = timeline.last().unwrap();
        assert_eq!(last.kind, TimelineKind::EscalationCancelled);
        assert_eq!((last.actor.as_str(), last.at), ("system", minute(2)));
        let reason = format!("incident is {}", status.as_str());
        let detail =
            json!({ "escalation_id": level_1.id, "escalation_level": 1, "reason": reason });
        assert_eq!(last.detail, detail);
    }
}

async fn only_the_given_escalations_are_settled(backend: Backend) {
    let Some(db) = TestDatabase::create(backend).await else {
        return;
    };
    let store = open_store(&db).await;
    let (_, first) = escalated(store.as_ref(), minute(1), policy(&[0])).await;
    let (_, second) = escalated(store.as_ref(), minute(2), policy(&[0])).await;
    let (_, not_due) = escalated(store.as_ref(), minute(1), policy(&[600_000])).await;
    assert!(store
        .settle_due(&move || minute(5), 10, Some(&[]))
        .await
        .unwrap()
        .is_empty());
    let only = [not_due.id, Uuid::now_v7(), second.id];
    let settled = store
        .settle_due(&move || minute(5), 10, Some(&only))
        .await
        .unwrap();
    let ids: Vec<_> = settled.iter().map(|s| s.escalation.id).collect();
    assert_eq!(ids, [second.id], "only the due ones of those given");
    let pending: Vec<_> = store.pending_page(None, 10).await.unwrap();
    assert_eq!(pending, [first, not_due]);
}

async fn the_earliest_due_are_settled_first_up_to_the_limit(backend: Backend) {
    let Some(db) = TestDatabase::create(backend).await else {
        return;
    };
    let store = open_store(&db).await;
    let mut due_order = Vec::new();
    // Scheduled out of due order, so that neither creation nor id order passes for due order.
    for at in [3, 1, 2] {
        let (_, level_1) = escalated(store.as_ref(), minute(at), policy(&[0])).await;
        due_order.push(level_1);
    }
    due_order.sort_by_key(|scheduled| scheduled.due);
    let settle = || async {
        let settled = store.settle_due(&move || minute(5), 2, None).await.unwrap();
        settled
            .iter()
            .map(|s| Scheduled {
                id: s.escalation.id,
                due: s.escalation.scheduled_at,
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(settle().await, due_order[..2]);
    let left = Backlog {
        pending: 1,
        overdue: 1,
    };
    assert_eq!(store.backlog(minute(5)).await.unwrap(), left);
    assert_eq!(settle().await, due_order[2..]);
    assert_eq!(settle().await, []);
}

async fn pending_escalations_are_counted_and_paged(backend: Backend) {
    let Some(db) = TestDatabase::create(backend).await else {
        return;
    };
    let store = open_store(&db).await;
    assert_eq!(store.next_due().await.unwrap(), None);
    assert_eq!(store.backlog(minute(0)).await.unwrap(), Backlog::default());
    assert_eq!(store.pending_page(None, 10).await.unwrap(), []);

    let mut pending = Vec::new();
    for at in [4, 0, 3, 1, 2] {
        let five_minutes = policy(&[300_000]);
        let (_, level_1) = escalated(store.as_ref(), minute(at), five_minutes).await;
        pending.push(level_1);
    }
    assert_eq!(store.next_due().await.unwrap(), Some(minute(5)));
    let counts = |pending, overdue| Backlog { pending, overdue };
    assert_eq!(store.backlog(minute(4)).await.unwrap(), counts(5, 0));
    assert_eq!(store.backlog(minute(7)).await.unwrap(), counts(5, 3));

    pending.sort_by_key(|scheduled| scheduled.id);
    for limit in [1, 2, 5, 10] {
        let mut seen = Vec::new();
        let mut after = None;
        loop {
            let page = store.pending_page(after, limit).await.unwrap();
            assert!(page.len() <= limit as usize);
            let Some(last) = page.last() else {
                break;
            };
            after = Some(last.id);
            seen.extend(page);
        }
        assert_eq!(seen, pending, "limit {limit}");
    }

    let settled = store
        .settle_due(&move || minute(5), 10, None)
        .await
        .unwrap();
    let [executed] = settled.as_slice() else {
        panic!("{settled:?}")
    };
    pending.retain(|scheduled| scheduled.id != executed.escalation.id);
    assert_eq!(store.pending_page(None, 10).await.unwrap(), pending);
    assert_eq!(store.next_due().await.unwrap(), Some(minute(6)));
    assert_eq!(store.backlog(minute(7)).await.unwrap(), counts(4, 2));
}

/// PostgreSQL only: on SQLite, one process owns the file and wakes its own worker in-process.
async fn scheduling_notifies_other_instances(backend: Backend) {
    if backend == Backend::Sqlite {
        return;
    }
    let Some(db) = TestDatabase::create(backend).await else {
        return;
    };
    let store = open_store(&db).await;
    let mut listener = sqlx::postgres::PgListener::connect(&db.url).await.unwrap();
    listener
        .listen(store::postgres::ESCALATION_CHANNEL)
        .await
        .unwrap();
    // Every test database shares the channel: a due time of now tells this test's apart from the
    // fixed instants the other scenarios use.
    let now = Timestamp::now();
    let (_, level_1) = escalated(store.as_ref(), now, policy(&[0, 60_000])).await;
    expect_notification(&mut listener, level_1.due).await;
    let settled = store.settle_due(&move || now, 10, None).await.unwrap();
    let next = settled[0].next.expect("level 2 is scheduled");
    expect_notification(&mut listener, next.due).await;
}

async fn expect_notification(listener: &mut sqlx::postgres::PgListener, due: Timestamp) {
    let wanted = due.as_millis().to_string();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let received = tokio::time::timeout_at(deadline, listener.recv())
            .await
            .unwrap_or_else(|_| panic!("no notification of {wanted}"))
            .unwrap();
        if received.payload() == wanted {
            return;
        }
    }
}

async fn concurrent_workers_settle_each_escalation_once(backend: Backend) {
    let Some(db) = TestDatabase::create(backend).await else {
        return;
    };
    let store = open_store(&db).await;
    let due_now = policy(&[0]);
    let escalations: Vec<(Uuid, Uuid)> = futures::stream::iter(0..DUE_AT_ONCE)
        .map(|_| {
            let (store, due_now) = (store.clone(), due_now.clone());
            async move {
                let (incident, level_1) = escalated(store.as_ref(), minute(1), due_now).await;
                (incident.id, level_1.id)
            }
        })
        .buffer_unordered(CONCURRENCY)
        .collect()
        .await;

    let mut workers = Vec::new();
    for _ in 0..WORKERS {
        let worker = store::connect(&db.url.parse().unwrap())
            .await
            .expect("connect a worker");
        workers.push(tokio::spawn(async move {
            let mut settled = Vec::new();
            loop {
                let batch = worker
                    .settle_due(&move || minute(2), WORKER_BATCH, None)
                    .await;
                let batch = batch.expect("a worker never fails");
                if batch.is_empty() {
                    return settled;
                }
                assert!(batch
                    .iter()
                    .all(|s| s.escalation.status == EscalationStatus::Executed));
                settled.extend(batch.into_iter().map(|s| s.escalation.id));
            }
        }));
    }
    let mut settled: Vec<Uuid> = Vec::new();
    for worker in futures::future::join_all(workers).await {
        settled.extend(worker.unwrap());
    }
    settled.sort();
    let mut wanted: Vec<_> = escalations.iter().map(|&(_, id)| id).collect();
    wanted.sort();
    assert_eq!(settled, wanted, "the workers settled each escalation once");
    assert_eq!(store.backlog(minute(2)).await.unwrap(), Backlog::default());

    for (incident_id, escalation_id) in escalations {
        let stored = store.escalations(incident_id).await.unwrap();
        assert!(matches!(
            stored.as_slice(),
            [e] if e.id == escalation_id && e.status == EscalationStatus::Executed
        ));
        let timeline = store.timeline(incident_id).await.unwrap();
        let executed = timeline
            .iter()
            .filter(|e| e.kind == TimelineKind::EscalationExecuted)
            .filter(|e| e.detail["escalation_id"] == json!(escalation_id))
            .count();
        assert_eq!(executed, 1, "escalation {escalation_id}");
    }
}
