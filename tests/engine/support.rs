//! Seeding escalations straight through the store, and reading the database behind a test server.

use std::sync::Arc;
use std::time::Duration;

use klaxon::domain::{
    Action, Channel, EscalationLevel, EscalationPolicy, NewEvent, Severity, Timestamp,
};
use klaxon::store::{self, TransitionRequest};
use sqlx::Connection;
use uuid::Uuid;

/// A policy whose levels follow each other after `delays_ms`.
pub fn policy(delays_ms: &[u64]) -> EscalationPolicy {
    let levels = delays_ms
        .iter()
        .zip(1..)
        .map(|(delay, level)| EscalationLevel {
            level,
            delay: Duration::from_millis(*delay),
            channels: vec![Channel::InApp],
            targets: Vec::new(),
            webhooks: Vec::new(),
            only_during: None,
        })
        .collect();
    EscalationPolicy::new(levels).unwrap()
}

/// Opens `count` incidents and escalates them under `policy`, straight through the store (no
/// worker involved); returns the incident ids.
pub async fn seed_escalating(url: &str, count: usize, policy: &EscalationPolicy) -> Vec<Uuid> {
    let store = store::connect(&url.parse().unwrap()).await.unwrap();
    store.migrate().await.unwrap();
    let policy = Arc::new(policy.clone());
    let mut ids = Vec::with_capacity(count);
    for n in 0..count {
        let ingested = store
            .ingest(NewEvent {
                source: "test".into(),
                summary: format!("seeded {n}"),
                severity: Severity::Error,
                dedup_key: None,
                payload: serde_json::json!({}),
                actor: "seeder".into(),
                received_at: Timestamp::now(),
                service: None,
            })
            .await
            .unwrap();
        store
            .transition(TransitionRequest {
                incident_id: ingested.incident.id,
                action: Action::Escalate,
                actor: "seeder".into(),
                note: None,
                at: Timestamp::now(),
                policy: policy.clone(),
                link: None,
            })
            .await
            .unwrap();
        ids.push(ingested.incident.id);
    }
    ids
}

/// Runs a query returning one integer against the database at `url` (either backend).
pub async fn scalar(url: &str, sql: &str) -> i64 {
    if url.starts_with("sqlite:") {
        let mut conn = sqlx::SqliteConnection::connect(url).await.unwrap();
        sqlx::query_scalar(sql).fetch_one(&mut conn).await.unwrap()
    } else {
        let mut conn = sqlx::PgConnection::connect(url).await.unwrap();
        sqlx::query_scalar(sql).fetch_one(&mut conn).await.unwrap()
    }
}

/// Runs a statement against the database at `url` (either backend).
pub async fn execute(url: &str, sql: &str) {
    if url.starts_with("sqlite:") {
        let mut conn = sqlx::SqliteConnection::connect(url).await.unwrap();
        sqlx::query(sql).execute(&mut conn).await.unwrap();
    } else {
        let mut conn = sqlx::PgConnection::connect(url).await.unwrap();
        sqlx::query(sql).execute(&mut conn).await.unwrap();
    }
}

pub async fn count_status(url: &str, status: &str) -> i64 {
    scalar(
        url,
        &format!("select count(*) from escalations where status = '{status}'"),
    )
    .await
}

/// The largest number of `escalation.executed` entries any one escalation has: 1 when every
/// executed escalation executed exactly once.
pub async fn most_executions_of_one(url: &str) -> i64 {
    let json_field = if url.starts_with("sqlite:") {
        "json_extract(detail, '$.escalation_id')"
    } else {
        "detail->>'escalation_id'"
    };
    scalar(
        url,
        &format!(
            "select coalesce(max(n), 0) from (select count(*) as n from timeline
             where kind = 'escalation.executed' group by {json_field}) as per_escalation"
        ),
    )
    .await
}

pub async fn executed_entries(url: &str) -> i64 {
    scalar(
        url,
        "select count(*) from timeline where kind = 'escalation.executed'",
    )
    .await
}
