//! Notifications end to end: the real server with its dispatcher, a real SMTP server and a real
//! webhook receiver, driven over HTTP only. A level's mail reaches the person with links that act
//! once; a channel that is down is retried until it is back, with nothing lost or sent twice; a
//! webhook's failures are retried or not as their status says; a channel not configured fails
//! its notifications saying so; what is over a recipient's rate limit goes out in one digest,
//! with nothing dropped.

use std::collections::BTreeSet;
use std::time::{Duration, SystemTime};

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use klaxon::config::{EmailConfig, NotificationConfig, RateLimit, SmtpTls, WebhookFormat};
use klaxon::domain::{Channel, EscalationLevel, EscalationPolicy};

use crate::common::app::TestApp;
use crate::common::smtp::{part, SmtpSink};
use crate::common::webhook::Receiver;
use crate::common::{eventually, free_port, Backend};

crate::on_every_backend!(
    a_mail_carries_links_that_act_once_as_its_recipient,
    mail_waits_for_an_smtp_server_that_is_down_and_goes_once_it_is_back,
    a_webhook_is_retried_after_a_5xx_with_the_same_key_and_not_after_a_4xx,
    email_without_an_email_section_fails_saying_so,
    mails_over_the_rate_limit_go_in_one_digest_and_none_is_dropped,
    webhooks_over_the_rate_limit_go_in_one_digest_and_none_is_dropped,
);

/// How long a test waits for the dispatcher to do something.
const DEADLINE: Duration = Duration::from_secs(15);

/// The incident every scenario escalates.
const TITLE: &str = "Database primary unreachable";

/// Level 1 at once over `channels`, to alice or to `webhooks`; level 2 an hour later by mail.
fn policy(channels: Vec<Channel>, webhooks: &[&str]) -> EscalationPolicy {
    let targets = if webhooks.is_empty() {
        vec!["alice".to_owned()]
    } else {
        Vec::new()
    };
    EscalationPolicy::new(vec![
        EscalationLevel {
            level: 1,
            delay: Duration::ZERO,
            channels,
            targets: targets.clone(),
            webhooks: webhooks.iter().map(|name| name.to_string()).collect(),
            only_during: None,
        },
        EscalationLevel {
            level: 2,
            delay: Duration::from_secs(3600),
            channels: vec![Channel::Email],
            targets,
            webhooks: Vec::new(),
            only_during: None,
        },
    ])
    .expect("a valid policy")
}

/// Retries fast enough for a test, and enough of them to watch a channel come back.
fn quick_retries() -> NotificationConfig {
    NotificationConfig {
        max_attempts: 100,
        retry_backoff: Duration::from_millis(100),
        retry_backoff_cap: Duration::from_millis(200),
        ..NotificationConfig::default()
    }
}

fn email_to(port: u16) -> EmailConfig {
    EmailConfig {
        smtp_host: "127.0.0.1".to_owned(),
        smtp_port: port,
        tls: SmtpTls::None,
        username: None,
        password: None,
        from: "Klaxon <klaxon@example.com>".to_owned(),
    }
}

/// A server whose links point at itself (`public_url` is its own address, so it is chosen
/// before it starts), with alice registered, escalating under `policy`; and alice's id.
async fn spawned(
    backend: Backend,
    policy: EscalationPolicy,
    tweak: impl FnOnce(&mut klaxon::config::Config),
) -> Option<(TestApp, String)> {
    let port = free_port();
    let app = TestApp::spawn_with(backend, |config| {
        config.listen = ([127, 0, 0, 1], port).into();
        config.public_url = format!("http://127.0.0.1:{port}");
        config.escalation.policy = policy;
        config.notifications = quick_retries();
        tweak(config);
    })
    .await?;
    let alice = app.user("alice", "responder").await;
    Some((app, alice))
}

/// Opens an incident titled `title`, escalates it, and returns its id.
async fn escalate(app: &TestApp, title: &str) -> String {
    let id = app.open_incident(title).await;
    let (status, reply) = app.act(&id, "escalate").await;
    assert_eq!(status, StatusCode::OK, "{reply}");
    id
}

/// [`spawned`], and an incident escalated.
async fn escalated(
    backend: Backend,
    policy: EscalationPolicy,
    tweak: impl FnOnce(&mut klaxon::config::Config),
) -> Option<(TestApp, String, String)> {
    let (app, alice) = spawned(backend, policy, tweak).await?;
    let id = escalate(&app, TITLE).await;
    Some((app, id, alice))
}

async fn notifications(app: &TestApp, id: &str) -> Vec<Value> {
    let (status, reply) = app.get(&format!("/incidents/{id}/notifications")).await;
    assert_eq!(status, StatusCode::OK, "{reply}");
    reply["notifications"].as_array().expect("a list").clone()
}

/// The incident's notification on `channel` to `recipient`, once `done` holds of it.
async fn notification_once(
    app: &TestApp,
    id: &str,
    channel: &str,
    recipient: &str,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let until = tokio::time::Instant::now() + DEADLINE;
    loop {
        let all = notifications(app, id).await;
        let found = all
            .iter()
            .find(|n| n["channel"] == channel && n["recipient"] == recipient);
        match found {
            Some(n) if done(n) => return n.clone(),
            _ => assert!(
                tokio::time::Instant::now() < until,
                "timed out waiting for the {channel} notification to {recipient}: {all:?}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The URL on the line `label: <url>` of `text`.
fn link(text: &str, label: &str) -> String {
    let prefix = format!("{label}: ");
    text.lines()
        .find_map(|line| line.strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("no line {prefix:?} in:\n{text}"))
        .to_owned()
}

/// `url` with the last character of its signature changed.
fn tampered(url: &str) -> String {
    let (rest, last) = url.split_at(url.len() - 1);
    format!("{rest}{}", if last == "0" { "1" } else { "0" })
}

/// Status and body of a request to a link, as a browser would make it (no token).
async fn follow(app: &TestApp, method: Method, url: &str) -> (StatusCode, String) {
    let response = app
        .client
        .request(method, url)
        .send()
        .await
        .expect("the server answers");
    let status = response.status();
    let html = response.text().await.expect("a page");
    (status, html)
}

async fn status_of(app: &TestApp, id: &str) -> Value {
    let (status, incident) = app.get(&format!("/incidents/{id}")).await;
    assert_eq!(status, StatusCode::OK, "{incident}");
    incident["status"].clone()
}

async fn a_mail_carries_links_that_act_once_as_its_recipient(backend: Backend) {
    let sink = SmtpSink::start();
    let policy = policy(vec![Channel::InApp, Channel::Email], &[]);
    let Some((app, id, alice)) = escalated(backend, policy, |config| {
        config.email = Some(email_to(sink.port));
    })
    .await
    else {
        return;
    };

    eventually("alice's mail", DEADLINE, || async {
        !sink.mails().is_empty()
    })
    .await;
    let [mail] = sink.mails().try_into().expect("one mail");
    assert_eq!(mail["rcpt_tos"], json!(["alice@example.com"]));
    let subject = mail["subject"].as_str().expect("a subject");
    assert!(subject.contains(TITLE), "{subject}");
    let text = part(&mail, "text/plain");
    let (ack, resolve) = (link(text, "Acknowledge"), link(text, "Resolve"));
    for url in [&ack, &resolve] {
        assert!(url.starts_with(&format!("{}/links/", app.base)), "{url}");
    }

    let (status, page) = follow(&app, Method::GET, &ack).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert!(page.contains("<form method=\"post\">"), "{page}");
    assert_eq!(
        status_of(&app, &id).await,
        "ESCALATING",
        "a GET changes nothing"
    );

    let (status, page) = follow(&app, Method::POST, &ack).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert_eq!(status_of(&app, &id).await, "ACKNOWLEDGED");
    let (_, timeline) = app.get(&format!("/incidents/{id}/timeline")).await;
    let acknowledged = timeline["timeline"]
        .as_array()
        .expect("a timeline")
        .iter()
        .find(|entry| entry["kind"] == "incident.acknowledged")
        .unwrap_or_else(|| panic!("no incident.acknowledged in {timeline}"));
    assert_eq!(acknowledged["actor"], "alice");
    let escalations = app.escalations(&id).await;
    let level_2 = escalations
        .iter()
        .find(|e| e["escalation_level"] == 2)
        .unwrap_or_else(|| panic!("no level 2 in {escalations:?}"));
    assert_eq!(level_2["status"], "CANCELLED");

    let (status, page) = follow(&app, Method::POST, &ack).await;
    assert_eq!(status, StatusCode::CONFLICT, "a link acts once: {page}");
    let (status, page) = follow(&app, Method::POST, &tampered(&resolve)).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{page}");
    let garbled = resolve.replace("expires=", "expires=soon");
    let (status, page) = follow(&app, Method::POST, &garbled).await;
    assert_eq!(
        status,
        StatusCode::FORBIDDEN,
        "a query that does not parse: {page}"
    );
    assert!(page.contains("not valid"), "{page}");
    assert_eq!(status_of(&app, &id).await, "ACKNOWLEDGED");

    let email = notification_once(&app, &id, "email", "alice", |n| n["status"] == "SENT").await;
    assert_eq!(email["attempts"], 1);
    let in_app = notification_once(&app, &id, "in_app", "alice", |n| n["status"] == "SENT").await;

    let token = app.user_token(&alice).await;
    let inbox = |query: &'static str| {
        TestApp::send(app.request(
            Method::GET,
            &format!("/me/notifications{query}"),
            Some(&token),
        ))
    };
    let (status, reply) = inbox("").await;
    assert_eq!(status, StatusCode::OK, "{reply}");
    let ids: Vec<&Value> = reply["notifications"]
        .as_array()
        .expect("a list")
        .iter()
        .map(|n| &n["id"])
        .collect();
    assert_eq!(ids, [&in_app["id"]], "the inbox holds the in-app one only");

    let (status, read) = TestApp::send(app.request(
        Method::POST,
        &format!("/notifications/{}/read", in_app["id"].as_str().unwrap()),
        Some(&token),
    ))
    .await;
    assert_eq!(status, StatusCode::OK, "{read}");
    assert!(read["read_at"].is_string(), "{read}");
    let (status, reply) = inbox("?unread=true").await;
    assert_eq!(status, StatusCode::OK, "{reply}");
    assert_eq!(reply["notifications"], json!([]));

    app.finish().await;
}

async fn mail_waits_for_an_smtp_server_that_is_down_and_goes_once_it_is_back(backend: Backend) {
    let smtp_port = free_port();
    let policy = policy(vec![Channel::InApp, Channel::Email], &[]);
    let Some((app, id, _)) = escalated(backend, policy, |config| {
        config.email = Some(email_to(smtp_port));
    })
    .await
    else {
        return;
    };

    let email = notification_once(&app, &id, "email", "alice", |n| {
        n["attempts"].as_i64() >= Some(2)
    })
    .await;
    assert_eq!(email["status"], "PENDING", "{email}");
    assert!(email["last_error"].is_string(), "{email}");
    assert!(
        app.timeline_kinds(&id)
            .await
            .contains(&"notification.retrying".to_owned()),
        "a retry is on the timeline"
    );

    let sink = SmtpSink::start_on(smtp_port);
    let email = notification_once(&app, &id, "email", "alice", |n| n["status"] == "SENT").await;
    assert!(email["attempts"].as_i64() >= Some(2), "{email}");
    let mails = sink.mails();
    assert_eq!(mails.len(), 1, "sent once: {mails:?}");
    assert_eq!(mails[0]["rcpt_tos"], json!(["alice@example.com"]));
    let statuses: Vec<Value> = notifications(&app, &id)
        .await
        .iter()
        .map(|n| n["status"].clone())
        .collect();
    assert_eq!(statuses, [json!("SENT"), json!("SENT")], "none lost");

    app.finish().await;
}

async fn a_webhook_is_retried_after_a_5xx_with_the_same_key_and_not_after_a_4xx(backend: Backend) {
    let (flaky, strict) = (Receiver::start(None).await, Receiver::start(None).await);
    flaky.fail_next(StatusCode::INTERNAL_SERVER_ERROR, 1);
    strict.fail_next(StatusCode::BAD_REQUEST, 1);
    let policy = policy(vec![Channel::Webhook], &["flaky", "strict"]);
    let Some((app, id, _)) = escalated(backend, policy, |config| {
        for (name, receiver) in [("flaky", &flaky), ("strict", &strict)] {
            config
                .webhooks
                .insert(name.to_owned(), receiver.config(WebhookFormat::Generic));
        }
    })
    .await
    else {
        return;
    };

    let sent = notification_once(&app, &id, "webhook", "flaky", |n| n["status"] == "SENT").await;
    assert_eq!(sent["attempts"], 2, "{sent}");
    let posts = flaky.posts();
    assert_eq!(posts.len(), 2);
    for post in &posts {
        assert_eq!(
            post.header("idempotency-key"),
            sent["message_key"],
            "{sent}"
        );
    }

    let failed =
        notification_once(&app, &id, "webhook", "strict", |n| n["status"] == "FAILED").await;
    assert_eq!(failed["attempts"], 1, "{failed}");
    let error = failed["last_error"].as_str().expect("a last error");
    assert!(error.contains("400"), "{error}");
    assert_eq!(strict.posts().len(), 1, "not retried");

    app.finish().await;
}

async fn email_without_an_email_section_fails_saying_so(backend: Backend) {
    let policy = policy(vec![Channel::Email], &[]);
    let Some((app, id, _)) = escalated(backend, policy, |config| config.email = None).await else {
        return;
    };

    let failed = notification_once(&app, &id, "email", "alice", |n| n["status"] == "FAILED").await;
    let error = failed["last_error"].as_str().expect("a last error");
    assert!(error.contains("email is not configured"), "{error}");

    app.finish().await;
}

/// The storm tests' rate limit: one message per window, a window short enough to watch two.
const STORM_LIMIT: RateLimit = RateLimit {
    count: 1,
    per: Duration::from_secs(3),
};

/// How much closer than the window two messages may arrive: timestamps are kept in
/// milliseconds, and the receiver's clock is read a moment before the server records the send.
const CLOCK_SLACK: Duration = Duration::from_millis(10);

/// The incidents of a storm: the first burst, escalated at once, then the second, escalated
/// once the first message has arrived.
const FIRST_BURST: [&str; 3] = [
    "Disk full on db-1",
    "Replica lag on db-2",
    "Checkout errors above 5%",
];
const SECOND_BURST: [&str; 2] = ["Queue backlog growing", "Certificate expires today"];

async fn mails_over_the_rate_limit_go_in_one_digest_and_none_is_dropped(backend: Backend) {
    storm(backend, Inbox::Mail(SmtpSink::start())).await;
}

async fn webhooks_over_the_rate_limit_go_in_one_digest_and_none_is_dropped(backend: Backend) {
    storm(backend, Inbox::Hook(Receiver::start(None).await)).await;
}

/// Where a storm's messages arrive.
enum Inbox {
    Mail(SmtpSink),
    Hook(Receiver),
}

/// One message as its receiver got it.
struct Received {
    at: SystemTime,
    /// Its idempotency key: the webhook's `Idempotency-Key`, or the mail's `Message-ID`.
    key: String,
    /// The mail's text, or the webhook's JSON.
    body: String,
}

impl Inbox {
    /// The channel and the recipient it receives for.
    fn channel(&self) -> (Channel, &'static str) {
        match self {
            Self::Mail(_) => (Channel::Email, "alice"),
            Self::Hook(_) => (Channel::Webhook, "ops"),
        }
    }

    fn received(&self) -> Vec<Received> {
        match self {
            Self::Mail(sink) => sink
                .mails()
                .iter()
                .map(|mail| Received {
                    at: SystemTime::UNIX_EPOCH
                        + Duration::from_secs_f64(mail["received_at"].as_f64().expect("a time")),
                    key: mail["message_id"]
                        .as_str()
                        .and_then(|id| id.strip_prefix('<')?.strip_suffix("@klaxon>"))
                        .unwrap_or_else(|| panic!("no Message-ID <key@klaxon> in {mail}"))
                        .to_owned(),
                    body: part(mail, "text/plain").to_owned(),
                })
                .collect(),
            Self::Hook(receiver) => receiver
                .posts()
                .iter()
                .map(|post| Received {
                    at: post.received_at,
                    key: post.header("idempotency-key").to_owned(),
                    body: String::from_utf8_lossy(&post.body).into_owned(),
                })
                .collect(),
        }
    }
}

/// Storm protection end to end, with one message allowed per window: a burst of incidents goes
/// out at once (alone or in a digest); what comes while the window is full is held, then goes in
/// one digest when it opens. Every notification is sent, every incident is in exactly one
/// message, and no two messages arrive within one window.
async fn storm(backend: Backend, inbox: Inbox) {
    let (channel, recipient) = inbox.channel();
    let policy = match &inbox {
        Inbox::Mail(_) => policy(vec![channel], &[]),
        Inbox::Hook(_) => policy(vec![channel], &[recipient]),
    };
    let Some((app, _)) = spawned(backend, policy, |config| match &inbox {
        Inbox::Mail(sink) => {
            config.email = Some(email_to(sink.port));
            config.notifications.email_rate = STORM_LIMIT;
        }
        Inbox::Hook(receiver) => {
            let hook = receiver.config(WebhookFormat::Generic);
            config.webhooks.insert(recipient.to_owned(), hook);
            config.notifications.webhook_rate = STORM_LIMIT;
        }
    })
    .await
    else {
        return;
    };
    let channel = channel.as_str();

    let mut incidents = Vec::new();
    for title in FIRST_BURST {
        incidents.push((title, escalate(&app, title).await));
    }
    eventually("the first message", DEADLINE, || async {
        !inbox.received().is_empty()
    })
    .await;
    for title in SECOND_BURST {
        let id = escalate(&app, title).await;
        let held = notification_once(&app, &id, channel, recipient, |n| n["held"] == true).await;
        assert_eq!(held["status"], "PENDING", "{held}");
        incidents.push((title, id));
    }

    let mut sent = Vec::new();
    for (title, id) in &incidents {
        let n = notification_once(&app, id, channel, recipient, |n| n["status"] == "SENT").await;
        sent.push((*title, id.as_str(), n));
    }
    let received = inbox.received();
    assert_eq!(
        received.len(),
        2,
        "the first burst at once, all the rest in one digest"
    );
    for pair in received.windows(2) {
        let gap = pair[1].at.duration_since(pair[0].at).unwrap_or_default();
        assert!(gap + CLOCK_SLACK >= STORM_LIMIT.per, "{gap:?} apart");
    }
    let mut keys: Vec<&str> = received.iter().map(|m| m.key.as_str()).collect();
    keys.sort_unstable();
    let message_keys: BTreeSet<&str> = sent
        .iter()
        .map(|(_, _, n)| n["message_key"].as_str().expect("a message key"))
        .collect();
    assert_eq!(
        keys,
        Vec::from_iter(message_keys),
        "one message per key, none sent twice"
    );

    for (title, id, n) in &sent {
        let key = n["message_key"].as_str().expect("a message key");
        let carried: Vec<&str> = received
            .iter()
            .filter(|m| m.body.contains(title))
            .map(|m| m.key.as_str())
            .collect();
        assert_eq!(carried, [key], "{title} is in one message, its own");
        let members: Vec<&str> = sent
            .iter()
            .filter(|(_, _, other)| other["message_key"] == key)
            .map(|(_, _, other)| other["id"].as_str().expect("an id"))
            .collect();
        let digest_of = if members.len() > 1 {
            assert!(key.starts_with("digest-"), "{key}");
            json!(members.len())
        } else {
            Value::Null
        };
        let (status, timeline) = app.get(&format!("/incidents/{id}/timeline")).await;
        assert_eq!(status, StatusCode::OK, "{timeline}");
        let entry = timeline["timeline"]
            .as_array()
            .expect("a timeline")
            .iter()
            .find(|e| e["kind"] == "notification.sent" && e["detail"]["notification_id"] == n["id"])
            .unwrap_or_else(|| panic!("no notification.sent for {n} in {timeline}"));
        assert_eq!(entry["detail"]["digest_of"], digest_of, "{entry}");
    }

    app.finish().await;
}
