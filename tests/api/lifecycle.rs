//! The server as a whole: health, restarts, the database going away, the OpenAPI document.

use reqwest::{Method, StatusCode};
use serde_json::json;
use sqlx::Connection;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::common::app::{TestApp, ADMIN_TOKEN};
use crate::common::proxy::{database_addr, via, FlakyProxy};
use crate::common::{eventually, Backend};

crate::on_every_backend!(
    health_reports_each_part,
    restart_keeps_everything,
    openapi_documents_every_endpoint
);

async fn health_reports_each_part(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let health = || async { TestApp::send(app.request(Method::GET, "/health", None)).await };
    eventually(
        "the worker to report in",
        std::time::Duration::from_secs(10),
        || async {
            let (_, health) = health().await;
            health["worker"]["running"] == true && health["worker"]["last_tick_at"].is_string()
        },
    )
    .await;
    let (status, health) = health().await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(health["status"], "ok");
    assert_eq!(health["database"], "ok");
    assert_eq!(health["redis"], "disabled", "no redis_url configured");
    assert_eq!(health["worker"]["pending"], 0);
    assert_eq!(health["worker"]["overdue"], 0);

    let id = app.open_incident("pending one").await;
    app.act(&id, "escalate").await;
    let (_, health) = TestApp::send(app.request(Method::GET, "/health", None)).await;
    assert_eq!(health["worker"]["pending"], 1, "{health}");
    assert_eq!(health["worker"]["overdue"], 0, "level 1 is 5 minutes away");
    app.finish().await;
}

async fn restart_keeps_everything(backend: Backend) {
    let Some(mut app) = TestApp::spawn(backend).await else {
        return;
    };
    let (viewer, _) = app.token("dashboard", "viewer").await;
    let escalated = app.open_incident("escalated before restart").await;
    app.act(&escalated, "escalate").await;
    let joined = app
        .message(json!({ "text": "dup", "dedup_key": "k" }))
        .await;
    app.message(json!({ "text": "dup", "dedup_key": "k" }))
        .await;
    let before = (
        app.get("/incidents?limit=200").await.1,
        app.escalations(&escalated).await,
        app.get(&format!("/incidents/{escalated}/timeline")).await.1,
    );

    app.restart().await;

    let after = (
        app.get("/incidents?limit=200").await.1,
        app.escalations(&escalated).await,
        app.get(&format!("/incidents/{escalated}/timeline")).await.1,
    );
    assert_eq!(before, after);
    let (status, _) = TestApp::send(app.request(Method::GET, "/incidents", Some(&viewer))).await;
    assert_eq!(status, StatusCode::OK, "tokens survive a restart");
    let again = app
        .message(json!({ "text": "dup", "dedup_key": "k" }))
        .await;
    assert_eq!(
        again["incident"]["id"], joined["incident"]["id"],
        "dedup survives a restart"
    );
    assert_eq!(again["incident"]["event_count"], 3);
    app.finish().await;
}

async fn openapi_documents_every_endpoint(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let (status, doc) = app.get("/openapi.json").await;
    assert_eq!(status, StatusCode::OK);
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    let paths = doc["paths"].as_object().unwrap();
    for (path, method) in [
        ("/health", "get"),
        ("/message", "post"),
        ("/incidents", "get"),
        ("/incidents/{id}", "get"),
        ("/incidents/{id}/escalate", "post"),
        ("/incidents/{id}/acknowledge", "post"),
        ("/incidents/{id}/resolve", "post"),
        ("/incidents/{id}/cancel", "post"),
        ("/incidents/{id}/timeline", "get"),
        ("/incidents/escalations/{id}", "get"),
        ("/tokens", "post"),
        ("/tokens", "get"),
        ("/tokens/{id}", "delete"),
        ("/users", "post"),
        ("/users", "get"),
        ("/users/{id}", "get"),
        ("/users/{id}", "patch"),
        ("/users/{id}/tokens", "post"),
        ("/me", "get"),
        ("/me/notifications", "get"),
        ("/notifications/{id}/read", "post"),
        ("/incidents/{id}/notifications", "get"),
        ("/links/{id}/{action}", "get"),
        ("/links/{id}/{action}", "post"),
        ("/openapi.json", "get"),
        ("/metrics", "get"),
    ] {
        assert!(
            paths.get(path).and_then(|p| p.get(method)).is_some(),
            "{method} {path} is documented"
        );
    }
    assert!(doc["components"]["schemas"]["Incident"]["properties"]["escalation_level"].is_object());
    app.finish().await;
}

/// A server whose PostgreSQL database it reaches through a proxy the test cuts and restores (cut
/// from the start with `cut`); `None` when PostgreSQL is not configured.
async fn behind_proxy(cut: bool) -> Option<(FlakyProxy, TestApp)> {
    let db = crate::common::TestDatabase::create(Backend::Postgres).await?;
    let proxy = FlakyProxy::start(database_addr(&db.url)).await;
    if cut {
        proxy.cut();
    }
    let proxied = via(&db.url, proxy.addr);
    let app = TestApp::spawn_with(Backend::Sqlite, |config| {
        config.database_url = proxied.parse().unwrap()
    })
    .await?;
    Some((proxy, app))
}

/// PostgreSQL going away answers 503 (never 500), and service resumes when it returns.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_outage_is_503_and_recovers() {
    let Some((proxy, app)) = behind_proxy(false).await else {
        return;
    };
    let id = app.open_incident("before the outage").await;

    proxy.cut();
    let (status, health) = TestApp::send(app.request(Method::GET, "/health", None)).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{health}");
    assert_eq!(health["status"], "unavailable");
    assert_eq!(health["database"], "down");
    for (status, body) in [
        app.post("/message", json!({ "text": "during the outage" }))
            .await,
        app.act(&id, "acknowledge").await,
        app.get("/incidents").await,
    ] {
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
        assert_eq!(body["error"]["code"], "unavailable");
        assert!(
            !body.to_string().contains("5432"),
            "no internals leak: {body}"
        );
    }

    proxy.restore();
    eventually(
        "health to recover",
        std::time::Duration::from_secs(15),
        || async { app.health().await == StatusCode::OK },
    )
    .await;
    assert_eq!(
        app.act(&id, "acknowledge").await.0,
        StatusCode::OK,
        "nothing was half-applied"
    );
    assert_eq!(
        app.post("/message", json!({ "text": "after" })).await.0,
        StatusCode::CREATED
    );
    app.finish().await;
}

/// While PostgreSQL is away, requests are refused at once with `Retry-After`: the store knows the
/// database is down and does not make each request wait out the pool's acquire timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_outage_is_refused_at_once_with_retry_after() {
    /// Requests sent one after another during the outage.
    const REFUSALS: u32 = 20;
    let Some((proxy, app)) = behind_proxy(false).await else {
        return;
    };
    app.open_incident("before the outage").await;

    proxy.cut();
    assert_eq!(
        app.get("/incidents").await.0,
        StatusCode::SERVICE_UNAVAILABLE,
        "the first request finds the outage"
    );
    let started = std::time::Instant::now();
    for _ in 0..REFUSALS {
        let response = app
            .request(Method::GET, "/incidents", Some(ADMIN_TOKEN))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(response.headers()["retry-after"], "1");
        let body: serde_json::Value = response.json().await.unwrap();
        assert_eq!(body["error"]["code"], "unavailable");
    }
    // Waiting out a 5 s acquire timeout each, as before, they would take 100 s; refused at once,
    // they take milliseconds. The bound is far from both.
    assert!(
        started.elapsed() < std::time::Duration::from_secs(5),
        "{REFUSALS} refusals took {:?}",
        started.elapsed()
    );
    let (status, health) = TestApp::send(app.request(Method::GET, "/health", None)).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{health}");

    proxy.restore();
    eventually(
        "the store to notice the database is back",
        std::time::Duration::from_secs(15),
        || async { app.get("/incidents").await.0 == StatusCode::OK },
    )
    .await;
    assert_eq!(
        app.post("/message", json!({ "text": "after" })).await.0,
        StatusCode::CREATED
    );
    app.finish().await;
}

/// Started while PostgreSQL is away, the server still binds its port, answers 503 (with
/// `Retry-After`) to `/health` and to every request, and becomes healthy once the database comes:
/// it migrates and registers the admin token then.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_started_while_postgres_is_away_waits_for_it() {
    let Some((proxy, app)) = behind_proxy(true).await else {
        return;
    };
    let response = app
        .request(Method::GET, "/health", None)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(response.headers()["retry-after"], "1");
    let health: serde_json::Value = response.json().await.unwrap();
    assert_eq!(health["database"], "down");
    let (status, body) = app.post("/message", json!({ "text": "too early" })).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["error"]["code"], "unavailable");

    proxy.restore();
    eventually(
        "health to turn ok once the database comes",
        std::time::Duration::from_secs(30),
        || async { app.health().await == StatusCode::OK },
    )
    .await;
    assert_eq!(
        app.post("/message", json!({ "text": "now" })).await.0,
        StatusCode::CREATED,
        "migrated, and the admin token registered"
    );
    app.finish().await;
}

/// SQLite held by another process's exclusive lock: writes give up after the busy timeout with 503.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_locked_by_another_process_is_503() {
    let Some(app) = TestApp::spawn(Backend::Sqlite).await else {
        return;
    };
    let mut intruder = sqlx::SqliteConnection::connect(&app.db.url).await.unwrap();
    sqlx::query("begin exclusive")
        .execute(&mut intruder)
        .await
        .unwrap();

    let (status, body) = TestApp::send(
        app.request(Method::POST, "/message", Some(ADMIN_TOKEN))
            .json(&json!({ "text": "blocked" })),
    )
    .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["error"]["code"], "unavailable");

    sqlx::query("rollback")
        .execute(&mut intruder)
        .await
        .unwrap();
    assert_eq!(
        app.post("/message", json!({ "text": "unblocked" })).await.0,
        StatusCode::CREATED
    );
    app.finish().await;
}

/// Stopping lets requests in flight finish, but waits for them only so long
/// (`server::SHUTDOWN_GRACE`): a request whose body never comes does not keep the server up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_returns_though_a_request_never_finishes() {
    /// Fails the test, rather than hang it, should `stop` wait forever.
    const HANG: std::time::Duration = std::time::Duration::from_secs(60);
    let Some(app) = TestApp::spawn(Backend::Sqlite).await else {
        return;
    };
    let addr = app.base.trim_start_matches("http://").to_owned();
    let mut client = tokio::net::TcpStream::connect(&addr).await.unwrap();
    // Ten bytes of body promised, none sent. With `expect: 100-continue` the server answers
    // `100 Continue` once the handler starts reading the body: the request is then in flight.
    let head = format!(
        "POST /message HTTP/1.1\r\nhost: {addr}\r\nauthorization: Bearer {ADMIN_TOKEN}\r\n\
         content-type: application/json\r\ncontent-length: 10\r\nexpect: 100-continue\r\n\r\n"
    );
    client.write_all(head.as_bytes()).await.unwrap();
    let in_flight = async {
        let mut answer = Vec::new();
        while !String::from_utf8_lossy(&answer).contains("100 Continue") {
            let mut chunk = [0; 256];
            let read = client.read(&mut chunk).await.unwrap();
            assert!(read > 0, "closed: {}", String::from_utf8_lossy(&answer));
            answer.extend_from_slice(&chunk[..read]);
        }
    };
    tokio::time::timeout(HANG, in_flight)
        .await
        .expect("the handler reads the body");

    tokio::time::timeout(HANG, app.finish())
        .await
        .expect("stop returns though a request is still in flight");
}
