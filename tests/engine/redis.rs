//! The Redis index: kept in step with the database, optional, and rebuilt after an outage.
//! Each test uses a Redis database number of its own, so they can run in parallel.

use std::time::Duration;

use klaxon::config::Config;
use reqwest::Method;

use crate::common::app::TestApp;
use crate::common::proxy::{database_addr, via, FlakyProxy};
use crate::common::{eventually, Backend, TestDatabase};
use crate::support::{count_status, most_executions_of_one, policy, scalar, seed_escalating};

const DEADLINE: Duration = Duration::from_secs(20);

/// `KLAXON_TEST_REDIS_URL` pointed at Redis database `number`, flushed; `None` if unset.
async fn redis_database(number: u8) -> Option<String> {
    let Ok(base) = std::env::var("KLAXON_TEST_REDIS_URL") else {
        eprintln!("skipped: KLAXON_TEST_REDIS_URL is not set");
        return None;
    };
    let (server, _) = base
        .trim_end_matches('/')
        .rsplit_once('/')
        .filter(|(s, _)| s.contains("://"))
        .unwrap_or((base.trim_end_matches('/'), ""));
    let url = format!("{server}/{number}");
    let mut connection = redis::Client::open(url.as_str())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    redis::cmd("FLUSHDB")
        .query_async::<()>(&mut connection)
        .await
        .unwrap();
    Some(url)
}

async fn score(url: &str, member: &str) -> Option<f64> {
    let mut connection = redis::Client::open(url)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    redis::cmd("ZSCORE")
        .arg("escalations:pending")
        .arg(member)
        .query_async(&mut connection)
        .await
        .unwrap()
}

async fn redis_health(app: &TestApp) -> String {
    let (_, health) = TestApp::send(app.request(Method::GET, "/health", None)).await;
    health["redis"].as_str().unwrap().to_owned()
}

/// A test server with `tweak` applied, once its Redis index is up.
async fn spawn_with_redis_up(tweak: impl FnOnce(&mut Config)) -> Option<TestApp> {
    let app = TestApp::spawn_with(Backend::Sqlite, tweak).await?;
    eventually("redis to be up", DEADLINE, || async {
        redis_health(&app).await == "ok"
    })
    .await;
    Some(app)
}

fn executed_all(escalations: &[serde_json::Value], levels: usize) -> bool {
    escalations.len() == levels && escalations.iter().all(|e| e["status"] == "EXECUTED")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_redis_leaves_escalations_to_the_database() {
    let Some(app) = TestApp::spawn_with(Backend::Sqlite, |config| {
        config.redis_url = Some("redis://127.0.0.1:1/0".into());
        config.escalation.policy = policy(&[200, 200]);
    })
    .await
    else {
        return;
    };
    assert_eq!(redis_health(&app).await, "down");
    let id = app.open_incident("no redis").await;
    app.act(&id, "escalate").await;
    eventually("both levels", DEADLINE, || async {
        executed_all(&app.escalations(&id).await, 2)
    })
    .await;
    app.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn escalations_fire_on_time_from_the_redis_index() {
    let Some(redis_url) = redis_database(11).await else {
        return;
    };
    let Some(app) = spawn_with_redis_up(|config| {
        config.redis_url = Some(redis_url.clone());
        config.escalation.policy = policy(&[200, 200, 200]);
        config.escalation.poll_interval = Duration::from_secs(3600);
    })
    .await
    else {
        return;
    };
    let id = app.open_incident("via redis").await;
    app.act(&id, "escalate").await;
    let first = app.escalations(&id).await[0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    eventually("level 1 in the index", DEADLINE, || async {
        score(&redis_url, &first).await.is_some()
    })
    .await;
    eventually("three levels", DEADLINE, || async {
        executed_all(&app.escalations(&id).await, 3)
    })
    .await;
    for escalation in app.escalations(&id).await {
        let member = escalation["id"].as_str().unwrap();
        eventually("executed ones to leave the index", DEADLINE, || async {
            score(&redis_url, member).await.is_none()
        })
        .await;
    }
    app.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_outage_falls_back_and_the_index_is_rebuilt() {
    let Some(redis_url) = redis_database(12).await else {
        return;
    };
    let proxy = FlakyProxy::start(database_addr(&redis_url.replacen(
        "redis://",
        "postgres://",
        1,
    )))
    .await;
    let proxied = via(&redis_url, proxy.addr);
    let Some(app) = spawn_with_redis_up(|config| {
        config.redis_url = Some(proxied);
        config.escalation.policy = policy(&[3_600_000]);
        config.escalation.poll_interval = Duration::from_millis(200);
    })
    .await
    else {
        return;
    };

    // Scheduled → indexed; cancelled → removed.
    let kept = app.open_incident("kept pending").await;
    app.act(&kept, "escalate").await;
    let kept_escalation = app.escalations(&kept).await[0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let expected_score = chrono::DateTime::parse_from_rfc3339(
        app.escalations(&kept).await[0]["scheduled_at"]
            .as_str()
            .unwrap(),
    )
    .unwrap()
    .timestamp_millis() as f64;
    assert_eq!(
        score(&redis_url, &kept_escalation).await,
        Some(expected_score)
    );
    let resolved = app.open_incident("resolved").await;
    app.act(&resolved, "escalate").await;
    let resolved_escalation = app.escalations(&resolved).await[0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    app.act(&resolved, "resolve").await;
    assert_eq!(score(&redis_url, &resolved_escalation).await, None);

    // Redis goes away: health says so, and escalations scheduled meanwhile are not lost.
    proxy.cut();
    let during = app.open_incident("scheduled during the outage").await;
    app.act(&during, "escalate").await;
    eventually("health to report redis down", DEADLINE, || async {
        redis_health(&app).await == "down"
    })
    .await;
    let during_escalation = app.escalations(&during).await[0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        score(&redis_url, &during_escalation).await,
        None,
        "nothing could be written meanwhile"
    );

    // Redis returns: the index is rebuilt from the database.
    proxy.restore();
    eventually("redis to be back", DEADLINE, || async {
        redis_health(&app).await == "ok"
    })
    .await;
    eventually(
        "the index to hold what was scheduled during the outage",
        DEADLINE,
        || async { score(&redis_url, &during_escalation).await.is_some() },
    )
    .await;
    assert!(score(&redis_url, &kept_escalation).await.is_some());
    assert_eq!(score(&redis_url, &resolved_escalation).await, None);
    app.finish().await;
}

/// Announcements sent while the PostgreSQL listener is disconnected are lost, so a worker whose
/// listening connection drops looks at the database at once, though Redis is up and its
/// safety-net scan is an hour away. The escalation here is committed behind the index's back
/// (straight through the store, as if by an instance whose Redis write was lost), so only a scan
/// of the database finds it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_listening_connection_makes_the_worker_scan_the_database() {
    let Some(redis_url) = redis_database(13).await else {
        return;
    };
    let Some(db) = TestDatabase::create(Backend::Postgres).await else {
        return;
    };
    let proxy = FlakyProxy::start(database_addr(&db.url)).await;
    let proxied = via(&db.url, proxy.addr);
    let Some(app) = spawn_with_redis_up(|config| {
        config.database_url = proxied.parse().unwrap();
        config.redis_url = Some(redis_url);
        config.escalation.poll_interval = Duration::from_secs(3600);
    })
    .await
    else {
        return;
    };
    seed_escalating(&db.url, 1, &policy(&[100])).await;
    let overdue =
        "select count(*) from escalations where status = 'PENDING' and scheduled_at < now()";
    eventually("the escalation to fall due", DEADLINE, || async {
        scalar(&db.url, overdue).await == 1
    })
    .await;

    proxy.cut();
    proxy.restore();
    eventually("the escalation to execute", DEADLINE, || async {
        count_status(&db.url, "EXECUTED").await == 1
    })
    .await;
    assert_eq!(most_executions_of_one(&db.url).await, 1);
    app.finish().await;
}
