//! Notifications end to end: the real server with its dispatcher, a real SMTP server and a real
//! webhook receiver, driven over HTTP only. A level's mail reaches the person with links that act
//! once; a channel that is down is retried until it is back, with nothing lost or sent twice; a
//! webhook's failures are retried or not as their status says; a channel not configured fails
//! its notifications saying so.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use klaxon::config::{EmailConfig, NotificationConfig, SmtpTls, WebhookFormat};
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
        },
        EscalationLevel {
            level: 2,
            delay: Duration::from_secs(3600),
            channels: vec![Channel::Email],
            targets,
            webhooks: Vec::new(),
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
/// before it starts), with alice registered; and an incident escalated under `policy`.
async fn escalated(
    backend: Backend,
    policy: EscalationPolicy,
    tweak: impl FnOnce(&mut klaxon::config::Config),
) -> Option<(TestApp, String, String)> {
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
    let id = app.open_incident(TITLE).await;
    let (status, reply) = app.act(&id, "escalate").await;
    assert_eq!(status, StatusCode::OK, "{reply}");
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
