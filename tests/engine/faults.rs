//! The database going away: the worker backs off, `/health` says 503, nothing is lost.

use std::time::Duration;

use reqwest::{Method, StatusCode};

use crate::common::app::TestApp;
use crate::common::proxy::{database_addr, via, FlakyProxy};
use crate::common::{eventually, Backend, TestDatabase};
use crate::support::{most_executions_of_one, policy};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_outage_delays_escalations_without_losing_them() {
    let Some(db) = TestDatabase::create(Backend::Postgres).await else {
        return;
    };
    let proxy = FlakyProxy::start(database_addr(&db.url)).await;
    let proxied = via(&db.url, proxy.addr);
    let Some(app) = TestApp::spawn_with(Backend::Sqlite, |config| {
        config.database_url = proxied.parse().unwrap();
        config.escalation.policy = policy(&[300, 300]);
    })
    .await
    else {
        return;
    };
    let id = app.open_incident("escalating into an outage").await;
    app.act(&id, "escalate").await;
    let due = app.escalations(&id).await[0]["scheduled_at"]
        .as_str()
        .unwrap()
        .to_owned();
    let due = chrono::DateTime::parse_from_rfc3339(&due).unwrap();
    proxy.cut();
    let (status, _) = TestApp::send(app.request(Method::GET, "/health", None)).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    eventually(
        "level 1 to fall due during the outage",
        Duration::from_secs(10),
        || async { chrono::Utc::now() > due + chrono::Duration::milliseconds(300) },
    )
    .await;
    proxy.restore();
    // The store refuses requests (503) until its probe finds the database back, within a second.
    eventually(
        "the store to find the database back",
        Duration::from_secs(15),
        || async { app.health().await == StatusCode::OK },
    )
    .await;

    eventually(
        "both levels to execute after the outage",
        Duration::from_secs(30),
        || async {
            let escalations = app.escalations(&id).await;
            escalations.len() == 2 && escalations.iter().all(|e| e["status"] == "EXECUTED")
        },
    )
    .await;
    assert_eq!(most_executions_of_one(&db.url).await, 1);
    let (status, _) = TestApp::send(app.request(Method::GET, "/health", None)).await;
    assert_eq!(status, StatusCode::OK);
    app.finish().await;
}
