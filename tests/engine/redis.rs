//! The Redis index: kept in step with the database, optional, rebuilt after an outage, and
//! namespaced by deployment. Each test uses a Redis database number of its own, so they can run
//! in parallel.

use std::time::Duration;

use klaxon::config::Config;
use klaxon::store;
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

/// The key of `app`'s index, named as docs/engine.md says:
/// `{redis_prefix}{installation id}:escalations:pending`.
async fn pending_key_of(app: &TestApp) -> String {
    let store = store::connect(&app.config.database_url).await.unwrap();
    let installation = store.installation_id().await.unwrap();
    format!(
        "{}{installation}:escalations:pending",
        app.config.redis_prefix
    )
}

async fn redis_command<T: redis::FromRedisValue>(url: &str, command: &redis::Cmd) -> T {
    let mut connection = redis::Client::open(url)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    command.query_async(&mut connection).await.unwrap()
}

async fn score(url: &str, key: &str, member: &str) -> Option<f64> {
    redis_command(url, redis::cmd("ZSCORE").arg(key).arg(member)).await
}

/// The members of the sorted set `key`, sorted.
async fn members(url: &str, key: &str) -> Vec<String> {
    let mut members: Vec<String> =
        redis_command(url, redis::cmd("ZRANGE").arg(key).arg(0).arg(-1)).await;
    members.sort();
    members
}

async fn redis_health(app: &TestApp) -> String {
    let (_, health) = TestApp::send(app.request(Method::GET, "/health", None)).await;
    health["redis"].as_str().unwrap().to_owned()
}

/// A test server with `tweak` applied, once its Redis index is up.
async fn spawn_with_redis_up(backend: Backend, tweak: impl FnOnce(&mut Config)) -> Option<TestApp> {
    let app = TestApp::spawn_with(backend, tweak).await?;
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
    let Some(app) = spawn_with_redis_up(Backend::Sqlite, |config| {
        config.redis_url = Some(redis_url.clone());
        config.redis_prefix = "klaxon-test:".into();
        config.escalation.policy = policy(&[200, 200, 200]);
        config.escalation.poll_interval = Duration::from_secs(3600);
    })
    .await
    else {
        return;
    };
    let key = pending_key_of(&app).await;
    let id = app.open_incident("via redis").await;
    app.act(&id, "escalate").await;
    let first = app.escalations(&id).await[0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    eventually("level 1 in the index", DEADLINE, || async {
        score(&redis_url, &key, &first).await.is_some()
    })
    .await;
    eventually("three levels", DEADLINE, || async {
        executed_all(&app.escalations(&id).await, 3)
    })
    .await;
    for escalation in app.escalations(&id).await {
        let member = escalation["id"].as_str().unwrap();
        eventually("executed ones to leave the index", DEADLINE, || async {
            score(&redis_url, &key, member).await.is_none()
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
    let Some(app) = spawn_with_redis_up(Backend::Sqlite, |config| {
        config.redis_url = Some(proxied);
        config.escalation.policy = policy(&[3_600_000]);
        config.escalation.poll_interval = Duration::from_millis(200);
    })
    .await
    else {
        return;
    };
    let key = pending_key_of(&app).await;

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
        score(&redis_url, &key, &kept_escalation).await,
        Some(expected_score)
    );
    let resolved = app.open_incident("resolved").await;
    app.act(&resolved, "escalate").await;
    let resolved_escalation = app.escalations(&resolved).await[0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    app.act(&resolved, "resolve").await;
    assert_eq!(score(&redis_url, &key, &resolved_escalation).await, None);

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
        score(&redis_url, &key, &during_escalation).await,
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
        || async { score(&redis_url, &key, &during_escalation).await.is_some() },
    )
    .await;
    assert!(score(&redis_url, &key, &kept_escalation).await.is_some());
    assert_eq!(score(&redis_url, &key, &resolved_escalation).await, None);
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
    let Some(app) = spawn_with_redis_up(Backend::Sqlite, |config| {
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

/// Two deployments, each with its own database, share one Redis and its database number, as in
/// issue 7: each reads and writes only its own key, so neither removes the other's entries, and
/// every escalation of both fires from the index, long before the safety-net scan an hour away
/// would find it. An entry under the key of earlier versions is left alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deployments_sharing_a_redis_keep_to_their_own_keys() {
    const INCIDENTS: usize = 10;
    let Some(redis_url) = redis_database(14).await else {
        return;
    };
    let old_entry = uuid::Uuid::now_v7().to_string();
    redis_command::<()>(
        &redis_url,
        redis::cmd("ZADD")
            .arg("escalations:pending")
            .arg(0)
            .arg(&old_entry),
    )
    .await;
    let mut deployments = Vec::new();
    for _ in 0..2 {
        let Some(app) = spawn_with_redis_up(Backend::Postgres, |config| {
            config.redis_url = Some(redis_url.clone());
            config.escalation.policy = policy(&[200, 200, 3_600_000]);
            config.escalation.poll_interval = Duration::from_secs(3600);
        })
        .await
        else {
            return;
        };
        deployments.push(app);
    }
    let keys = [
        pending_key_of(&deployments[0]).await,
        pending_key_of(&deployments[1]).await,
    ];
    assert_ne!(keys[0], keys[1]);

    // Interleaved, so that each worker, waking for its own, finds the other's due too.
    for n in 0..INCIDENTS {
        for app in &deployments {
            let id = app.open_incident(&format!("shared redis {n}")).await;
            app.act(&id, "escalate").await;
        }
    }
    for app in &deployments {
        eventually(
            "the first two levels of every incident",
            DEADLINE,
            || async { count_status(&app.db.url, "EXECUTED").await == 2 * INCIDENTS as i64 },
        )
        .await;
    }
    for (app, key) in deployments.iter().zip(&keys) {
        let store = store::connect(&app.config.database_url).await.unwrap();
        let pending = store.pending_page(None, 100).await.unwrap();
        assert_eq!(pending.len(), INCIDENTS, "the third levels, an hour away");
        let mut own: Vec<String> = pending.iter().map(|s| s.id.to_string()).collect();
        own.sort();
        eventually(
            "each key to hold its own deployment's pending escalations, and only those",
            DEADLINE,
            || async { members(&redis_url, key).await == own },
        )
        .await;
    }
    assert_eq!(
        score(&redis_url, "escalations:pending", &old_entry).await,
        Some(0.0),
        "the key of earlier versions is neither read nor written"
    );
    for app in deployments {
        app.finish().await;
    }
}
