//! The notification pipeline under faults. Through the real binary: a dispatcher killed
//! (`kill -9`) with posts in flight loses nothing and creates nothing twice; three instances on one
//! PostgreSQL send every notification once. Through the API: an incident acknowledged while its
//! webhook is down stops what was not sent.
//!
//! Each test posts to a webhook receiver of its own ([`Receiver`]) that records every post's
//! `Idempotency-Key` and the notification and incident each item is about.

mod common;
#[path = "engine/support.rs"]
#[allow(dead_code)] // this crate uses a subset of the engine tests' helpers
mod support;

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use klaxon::config::{WebhookConfig, WebhookFormat};
use klaxon::domain::{
    Channel, EscalationLevel, EscalationPolicy, Notification, NotificationStatus,
};
use klaxon::notify::dispatcher;
use klaxon::store;
use reqwest::StatusCode;
use serde_json::Value;
use tokio::net::TcpListener;
use uuid::Uuid;

use common::app::TestApp;
use common::audit::{Audit, Expect};
use common::{eventually, Backend, TestDatabase};
use support::{most_executions_of_one, scalar, seed_escalating};

/// The webhook every test's policy names.
const HOOK: &str = "hook";
/// How long a test may wait for the pipeline to settle.
const DEADLINE: Duration = Duration::from_secs(60);
/// How long the slow receiver holds each post before answering, so that sends are in flight.
const SLOW_ANSWER: Duration = Duration::from_millis(300);

/// One post as the receiver got it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Post {
    key: String,
    digest: bool,
    /// Per item: the notification its links act on, and its incident.
    items: Vec<(Uuid, Uuid)>,
}

impl Post {
    fn of(key: String, body: &Value) -> Self {
        let items = body["notifications"]
            .as_array()
            .expect("a generic body lists its notifications")
            .iter()
            .map(|item| {
                // `…/links/{notification id}/acknowledge?…`
                let link = item["links"]["acknowledge"].as_str().expect("a link");
                let after = link.split("/links/").nth(1).expect("a link path");
                let notification = after.split('/').next().expect("an id").parse();
                let incident = item["incident"]["id"].as_str().expect("an incident id");
                (
                    notification.expect("a notification id"),
                    incident.parse().expect("an incident id"),
                )
            })
            .collect();
        Self {
            key,
            digest: body["digest"].as_bool().expect("digest is a boolean"),
            items,
        }
    }
}

/// A webhook receiver on 127.0.0.1: records every post, and answers 200 after `delay`.
struct Receiver {
    addr: SocketAddr,
    posts: Arc<Mutex<Vec<Post>>>,
}

impl Receiver {
    async fn start(delay: Duration) -> Self {
        Self::start_on("127.0.0.1:0".parse().unwrap(), delay).await
    }

    async fn start_on(addr: SocketAddr, delay: Duration) -> Self {
        let listener = TcpListener::bind(addr).await.expect("bind the receiver");
        let addr = listener.local_addr().unwrap();
        let posts = Arc::new(Mutex::new(Vec::new()));
        let shared = posts.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let posts = shared.clone();
                let service = hyper::service::service_fn(move |request| {
                    answer(posts.clone(), delay, request)
                });
                tokio::spawn(
                    hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service),
                );
            }
        });
        Self { addr, posts }
    }

    fn url(&self) -> String {
        format!("http://{}/", self.addr)
    }

    fn posts(&self) -> Vec<Post> {
        self.posts
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

async fn answer(
    posts: Arc<Mutex<Vec<Post>>>,
    delay: Duration,
    request: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    let key = request
        .headers()
        .get("idempotency-key")
        .and_then(|value| value.to_str().ok())
        .expect("every post has an Idempotency-Key")
        .to_owned();
    let body = axum::body::to_bytes(Body::new(request.into_body()), usize::MAX)
        .await
        .expect("the whole body arrives");
    let body: Value = serde_json::from_slice(&body).expect("the body is JSON");
    posts
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .push(Post::of(key, &body));
    tokio::time::sleep(delay).await;
    Ok(Response::new(Body::from("ok")))
}

/// One level, due at once, that posts to [`HOOK`].
fn webhook_policy() -> EscalationPolicy {
    EscalationPolicy::new(vec![EscalationLevel {
        level: 1,
        delay: Duration::ZERO,
        channels: vec![Channel::Webhook],
        targets: Vec::new(),
        webhooks: vec![HOOK.to_owned()],
        only_during: None,
    }])
    .unwrap()
}

/// A `klaxon worker` process over `url`, posting to `hook_url`; killed (SIGKILL) when dropped.
struct Worker(Child);

impl Worker {
    fn start(dir: &Path, url: &str, hook_url: &str, lease: &str) -> Self {
        let config = dir.join("klaxon.toml");
        // The rate limit is far above what a test sends, so storm protection holds nothing.
        let text = format!(
            r#"database_url = "{url}"

[notifications]
lease = "{lease}"
retry_backoff = "100ms"

[notifications.rate_limits]
webhook = {{ count = 100000, per = "1m" }}

[webhooks.{HOOK}]
url = "{hook_url}"
format = "generic"
secret = "whsec_faults"
"#
        );
        std::fs::write(&config, text).expect("write the config file");
        let child = Command::new(env!("CARGO_BIN_EXE_klaxon"))
            .arg("--config")
            .arg(&config)
            .arg("worker")
            .current_dir(dir)
            .env_remove("KLAXON_CONFIG")
            .env_remove("KLAXON_DATABASE_URL")
            .env_remove("KLAXON_REDIS_URL")
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start `klaxon worker`");
        Self(child)
    }

    fn kill_9(mut self) {
        self.0.kill().expect("SIGKILL the worker");
        self.0.wait().expect("reap the worker");
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Every notification of `incidents`, read through the store.
async fn notifications(url: &str, incidents: &[Uuid]) -> Vec<Notification> {
    let store = store::connect(&url.parse().unwrap()).await.unwrap();
    let mut all = Vec::new();
    for id in incidents {
        all.extend(store.notifications_of(*id).await.unwrap());
    }
    all
}

async fn count_sent(url: &str) -> i64 {
    scalar(
        url,
        "select count(*) from notifications where status = 'SENT'",
    )
    .await
}

/// The posts by idempotency key, after checking that each is a single message about one
/// notification and that a key always carries the same notification.
fn by_key(posts: &[Post]) -> BTreeMap<String, Vec<Post>> {
    let mut keys: BTreeMap<String, Vec<Post>> = BTreeMap::new();
    for post in posts {
        assert!(!post.digest, "nothing was over the rate limit: {post:?}");
        assert_eq!(post.items.len(), 1, "{post:?}");
        keys.entry(post.key.clone()).or_default().push(post.clone());
    }
    for (key, sent) in &keys {
        assert!(
            sent.iter().all(|post| post == &sent[0]),
            "a key sent again carries the same notification: {sent:?}"
        );
        assert_eq!(
            key,
            &sent[0].items[0].0.to_string(),
            "a single message is keyed by its notification"
        );
    }
    keys
}

crate::on_every_backend!(
    kill_9_mid_send_loses_no_notification_and_creates_none_twice,
    acknowledging_while_a_webhook_is_down_stops_what_was_not_sent
);

async fn kill_9_mid_send_loses_no_notification_and_creates_none_twice(backend: Backend) {
    let Some(db) = TestDatabase::create(backend).await else {
        return;
    };
    let audit = Audit::of(&db.url);
    let dir = tempfile::tempdir().unwrap();
    let receiver = Receiver::start(SLOW_ANSWER).await;
    // More than one dispatcher batch (`BATCH_SIZE`), so that one can be recorded while the next is
    // in flight.
    let count = 2 * dispatcher::BATCH_SIZE as usize - 100;
    let incidents = seed_escalating(&db.url, count, &webhook_policy()).await;

    let first = Worker::start(dir.path(), &db.url, &receiver.url(), "2s");
    // A dispatcher posts a batch, waits for every answer, records them, then claims the next:
    // killed while a later batch is in flight, some notifications are recorded sent, some are
    // posted and unrecorded, and some may not be claimed yet (unless one batch took them all).
    eventually("a batch in flight after one recorded", DEADLINE, || async {
        let sent = count_sent(&db.url).await as usize;
        let posted = receiver.posts().len();
        posted > sent && (sent > 0 || posted == count)
    })
    .await;
    first.kill_9();
    let received_at_kill = receiver.posts().len();
    let sent_at_kill: Vec<Uuid> = notifications(&db.url, &incidents)
        .await
        .into_iter()
        .filter(|n| n.status == NotificationStatus::Sent)
        .map(|n| n.id)
        .collect();

    let _second = Worker::start(dir.path(), &db.url, &receiver.url(), "2s");
    eventually("every notification to be sent", DEADLINE, || async {
        count_sent(&db.url).await == count as i64
    })
    .await;

    assert_eq!(
        scalar(&db.url, "select count(*) from notifications").await,
        count as i64,
        "one notification per escalation, recipient and channel"
    );
    assert_eq!(most_executions_of_one(&db.url).await, 1, "no level twice");
    let keys = by_key(&receiver.posts());
    let stored = notifications(&db.url, &incidents).await;
    assert_eq!(stored.len(), count);
    for notification in &stored {
        assert_eq!(notification.status, NotificationStatus::Sent);
        let key = notification.id.to_string();
        let sent = keys
            .get(&key)
            .unwrap_or_else(|| panic!("notification {key} never reached the receiver"));
        assert_eq!(sent[0].items[0].1, notification.incident_id);
        assert_eq!(notification.message_key.as_deref(), Some(key.as_str()));
    }
    assert_eq!(keys.len(), count, "nothing posted but the notifications");
    for id in &sent_at_kill {
        assert_eq!(
            keys[&id.to_string()].len(),
            1,
            "recorded sent, never sent again"
        );
    }
    let again = keys.values().filter(|sent| sent.len() > 1).count();
    eprintln!(
        "at the kill: {received_at_kill} posts received, {} recorded sent; \
         {again} sent again after the restart, with the same key",
        sent_at_kill.len()
    );
    audit.run(Expect::NothingDue).await;
}

/// Three instances on one PostgreSQL, hundreds of notifications due at once: each sent once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_instances_on_one_postgresql_send_every_notification_once() {
    let Some(db) = TestDatabase::create(Backend::Postgres).await else {
        return;
    };
    let audit = Audit::of(&db.url);
    let receiver = Receiver::start(Duration::ZERO).await;
    let count = 600;
    let incidents = seed_escalating(&db.url, count, &webhook_policy()).await;

    // A lease far longer than any send here: a re-send would then be a second claim, not a lease
    // that ran out on a slow machine.
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let _workers: Vec<Worker> = dirs
        .iter()
        .map(|dir| Worker::start(dir.path(), &db.url, &receiver.url(), "60s"))
        .collect();
    eventually("every notification to be sent", DEADLINE, || async {
        count_sent(&db.url).await == count as i64
    })
    .await;

    let posts = receiver.posts();
    let keys = by_key(&posts);
    assert_eq!(posts.len(), count, "one post per notification");
    assert_eq!(keys.len(), count);
    let stored = notifications(&db.url, &incidents).await;
    assert_eq!(stored.len(), count);
    for notification in &stored {
        assert_eq!(keys[&notification.id.to_string()].len(), 1);
    }
    assert_eq!(most_executions_of_one(&db.url).await, 1);
    audit.run(Expect::NothingDue).await;
}

async fn acknowledging_while_a_webhook_is_down_stops_what_was_not_sent(backend: Backend) {
    // An address nothing listens on until the receiver takes it, at the end.
    let down = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let Some(app) = TestApp::spawn_with(backend, |config| {
        config.escalation.policy = webhook_policy();
        config.webhooks = BTreeMap::from([(
            HOOK.to_owned(),
            WebhookConfig {
                url: format!("http://{down}/"),
                format: WebhookFormat::Generic,
                secret: None,
            },
        )]);
        config.notifications.retry_backoff = Duration::from_millis(100);
        config.notifications.retry_backoff_cap = Duration::from_millis(500);
        config.notifications.max_attempts = 1_000;
    })
    .await
    else {
        return;
    };
    let stopped = app.open_incident("payments failing").await;
    let (status, reply) = app.act(&stopped, "escalate").await;
    assert_eq!(status, StatusCode::OK, "{reply}");
    let notifications_of = |id: String| {
        let app = &app;
        async move {
            let (status, reply) = app.get(&format!("/incidents/{id}/notifications")).await;
            assert_eq!(status, StatusCode::OK, "{reply}");
            reply["notifications"].as_array().unwrap().clone()
        }
    };
    eventually("the webhook to be retried", DEADLINE, || async {
        let found = notifications_of(stopped.clone()).await;
        found.len() == 1
            && found[0]["status"] == "PENDING"
            && found[0]["attempts"].as_i64() >= Some(2)
    })
    .await;

    let (status, reply) = app.act(&stopped, "acknowledge").await;
    assert_eq!(status, StatusCode::OK, "{reply}");
    let found = notifications_of(stopped.clone()).await;
    let notification = &found[0];
    assert_eq!(notification["status"], "CANCELLED", "{notification}");
    assert!(
        notification["attempts"].as_i64() >= Some(2),
        "{notification}"
    );
    assert!(
        notification["last_error"]
            .as_str()
            .is_some_and(|error| error.contains("webhook hook")),
        "{notification}"
    );
    let kinds = app.timeline_kinds(&stopped).await;
    assert!(
        kinds.iter().any(|k| k == "notification.retrying"),
        "{kinds:?}"
    );
    assert_eq!(
        kinds
            .iter()
            .filter(|k| *k == "notification.cancelled")
            .count(),
        1,
        "{kinds:?}"
    );

    // The receiver comes up; a second incident's notification reaching it shows that the
    // dispatcher has looked since, and the first was not among what it sent.
    let receiver = Receiver::start_on(down, Duration::ZERO).await;
    let later = app.open_incident("payments still failing").await;
    let (status, reply) = app.act(&later, "escalate").await;
    assert_eq!(status, StatusCode::OK, "{reply}");
    eventually("the later incident's post", DEADLINE, || async {
        let found = notifications_of(later.clone()).await;
        found.first().is_some_and(|n| n["status"] == "SENT")
    })
    .await;
    let later: Uuid = later.parse().unwrap();
    let stopped: Uuid = stopped.parse().unwrap();
    let posts = receiver.posts();
    assert!(posts.iter().any(|post| post.items[0].1 == later));
    assert!(
        posts.iter().all(|post| post.items[0].1 != stopped),
        "the cancelled notification was sent: {posts:?}"
    );
    let found = notifications_of(stopped.to_string()).await;
    assert_eq!(found[0]["status"], "CANCELLED");
    app.finish().await;
}
