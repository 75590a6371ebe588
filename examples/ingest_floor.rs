//! The store's own ingest rate, with no HTTP and no load generator: the ceiling that
//! `bench/ingest.py` can reach on this machine, whatever the request path costs.
//!
//! It stores batches of events exactly as the ingest writer does (`Store::ingest_batch`, one
//! transaction and one commit per batch) back to back, on a freshly migrated database, for the
//! two shapes `bench/ingest.py` sends: `/message` without a `dedup_key` (a new incident each) and
//! `/v2/enqueue` with a unique `dedup_key` on a service (the upsert path). Batch sizes 16 and 32
//! are what the writer sees under 32 and 64 closed-loop connections: while one batch commits, the
//! other half of the clients wait for the next. A second table puts the events in flight of 32
//! and 64 connections into one, two or four concurrent writers, each storing its share per
//! batch: no split of a closed loop's events can do better than the best row there. Prints
//! markdown tables.
//!
//! ```sh
//! cargo run --release --example ingest_floor                     # SQLite, in a temporary directory
//! cargo run --release --example ingest_floor -- postgres://postgres@127.0.0.1:5432/test
//! ```
//!
//! A PostgreSQL URL names a database to connect to; a fresh database is created beside it for the
//! run and dropped after. `KLAXON_FLOOR_SECONDS` sets the seconds per row (default 5).

use std::sync::Arc;
use std::time::{Duration, Instant};

use klaxon::domain::{EventService, NewEvent, Service, Severity, Timestamp};
use klaxon::store::{self, DatabaseUrl, Store};
use serde_json::json;
use sqlx::{Connection, Executor, PgConnection};
use uuid::Uuid;

const BATCH_SIZES: [usize; 4] = [1, 16, 32, 64];
/// Events in flight (the connections of `bench/ingest.py`) and the writers they are split over.
const IN_FLIGHT: [usize; 2] = [32, 64];
const WRITERS: [usize; 3] = [1, 2, 4];

#[derive(Clone, Copy)]
enum Shape {
    /// `POST /message` with a unique text and no `dedup_key`.
    Message,
    /// `POST /v2/enqueue`, a trigger with a unique `dedup_key` on a service.
    Enqueue,
}

impl Shape {
    fn name(self) -> &'static str {
        match self {
            Shape::Message => "`/message`",
            Shape::Enqueue => "`/v2/enqueue`",
        }
    }

    fn event(self, service: &EventService, n: u64) -> NewEvent {
        let summary = format!("floor: disk full on host-{n}");
        let (dedup_key, payload, actor, service) = match self {
            Shape::Message => (None, json!({ "text": summary }), "bench", None),
            Shape::Enqueue => {
                let key = format!("floor-{n}");
                let payload = json!({
                    "event_action": "trigger",
                    "dedup_key": key,
                    "payload": { "summary": summary, "source": "host", "severity": "critical" },
                });
                (
                    Some(key),
                    payload,
                    "events-api:bench",
                    Some(service.clone()),
                )
            }
        };
        NewEvent {
            source: "host".into(),
            summary,
            severity: Severity::Critical,
            dedup_key,
            payload,
            actor: actor.into(),
            received_at: Timestamp::now(),
            service,
        }
    }
}

struct Row {
    batches: usize,
    events: usize,
    elapsed: Duration,
    p99: Duration,
}

async fn measure(
    store: &dyn Store,
    shape: Shape,
    service: &EventService,
    size: usize,
    for_: Duration,
    next: &mut u64,
) -> Row {
    let mut times = Vec::new();
    let started = Instant::now();
    while started.elapsed() < for_ {
        let events: Vec<NewEvent> = (0..size)
            .map(|_| {
                *next += 1;
                shape.event(service, *next)
            })
            .collect();
        let batch = Instant::now();
        let stored = store
            .ingest_batch(&events)
            .await
            .expect("the batch is stored");
        times.push(batch.elapsed());
        assert_eq!(stored.len(), size, "every event of the batch is answered");
    }
    let elapsed = started.elapsed();
    let batches = times.len();
    times.sort_unstable();
    let p99 = times[(batches * 99 / 100).min(batches - 1)];
    Row {
        batches,
        events: batches * size,
        elapsed,
        p99,
    }
}

/// `in_flight` events split over `writers` concurrent writers, each storing its share per
/// batch; the events stored per second by all of them.
async fn measure_split(
    store: &Arc<dyn Store>,
    shape: Shape,
    service: &EventService,
    in_flight: usize,
    writers: usize,
    for_: Duration,
    next: &mut u64,
) -> f64 {
    let tasks: Vec<_> = (0..writers)
        .map(|_| {
            let (store, service) = (store.clone(), service.clone());
            // Each writer numbers its events from a range of its own, so keys never collide.
            *next += 1 << 40;
            let mut first = *next;
            tokio::spawn(async move {
                measure(
                    store.as_ref(),
                    shape,
                    &service,
                    in_flight / writers,
                    for_,
                    &mut first,
                )
                .await
            })
        })
        .collect();
    let (mut events, mut elapsed) = (0, Duration::ZERO);
    for task in tasks {
        let row = task.await.expect("a writer finishes");
        events += row.events;
        elapsed = elapsed.max(row.elapsed);
    }
    events as f64 / elapsed.as_secs_f64()
}

/// A fresh PostgreSQL database beside the one `url` names; returns its URL and its name.
async fn fresh_postgres(url: &str) -> (String, String) {
    let name = format!("klaxon_floor_{}", Uuid::now_v7().simple());
    let mut admin = PgConnection::connect(url)
        .await
        .expect("PostgreSQL answers");
    admin
        .execute(format!("create database {name}").as_str())
        .await
        .expect("the floor database is created");
    let (address, query) = url.split_once('?').unwrap_or((url, ""));
    let server = address
        .rsplit_once('/')
        .map_or(address, |(server, _)| server);
    let query = if query.is_empty() {
        String::new()
    } else {
        format!("?{query}")
    };
    (format!("{server}/{name}{query}"), name)
}

async fn drop_postgres(url: &str, name: &str) {
    let mut admin = PgConnection::connect(url)
        .await
        .expect("PostgreSQL answers");
    admin
        .execute(format!("drop database if exists {name} with (force)").as_str())
        .await
        .expect("the floor database is dropped");
}

#[tokio::main]
async fn main() {
    let seconds = std::env::var("KLAXON_FLOOR_SECONDS")
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(5);
    let per_row = Duration::from_secs(seconds);
    let postgres = std::env::args().nth(1);
    let directory = tempfile::tempdir().expect("a temporary directory");
    let (url, backend, fresh) = match &postgres {
        Some(admin) => {
            let (url, name) = fresh_postgres(admin).await;
            (url, "postgres", Some(name))
        }
        None => {
            let path = directory.path().join("floor.db");
            (format!("sqlite://{}", path.display()), "sqlite", None)
        }
    };
    let database_url: DatabaseUrl = url.parse().expect("a database URL");
    let store: Arc<dyn Store> = store::connect(&database_url)
        .await
        .expect("the store opens");
    store.migrate().await.expect("the store migrates");
    let service = Service::new("bench", None, false, Timestamp::now()).expect("a valid service");
    let service = store
        .create_service(&service)
        .await
        .expect("the service is stored");
    let service = EventService {
        id: service.id,
        escalate: None,
    };

    println!("| backend | shape | events per batch | batches | events/s | mean per batch | p99 per batch |");
    println!("|---|---|---:|---:|---:|---:|---:|");
    let mut next = 0;
    for shape in [Shape::Message, Shape::Enqueue] {
        for size in BATCH_SIZES {
            let row = measure(store.as_ref(), shape, &service, size, per_row, &mut next).await;
            let rate = row.events as f64 / row.elapsed.as_secs_f64();
            let mean = row.elapsed.as_secs_f64() * 1e6 / row.batches as f64;
            println!(
                "| {backend} | {} | {size} | {} | {rate:.0} | {mean:.0} µs | {} µs |",
                shape.name(),
                row.batches,
                row.p99.as_micros()
            );
        }
    }
    println!();
    println!("| backend | shape | events in flight | writers × events per batch | events/s |");
    println!("|---|---|---:|---|---:|");
    for shape in [Shape::Message, Shape::Enqueue] {
        for in_flight in IN_FLIGHT {
            for writers in WRITERS {
                let rate = measure_split(
                    &store, shape, &service, in_flight, writers, per_row, &mut next,
                )
                .await;
                println!(
                    "| {backend} | {} | {in_flight} | {writers} × {} | {rate:.0} |",
                    shape.name(),
                    in_flight / writers
                );
            }
        }
    }
    drop(store);
    if let (Some(admin), Some(name)) = (&postgres, &fresh) {
        drop_postgres(admin, name).await;
    }
}
