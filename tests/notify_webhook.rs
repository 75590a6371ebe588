//! The webhook channel against a receiver written for these tests: the payloads, the headers and
//! the signature as they arrive, and how each kind of failure is classed.

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use axum::http::StatusCode;
use klaxon::config::{WebhookConfig, WebhookFormat};
use klaxon::domain::{Incident, IncidentStatus, Severity, Timestamp};
use klaxon::notify::webhook::WebhookSender;
use klaxon::notify::{Item, Links, Outgoing, Person, Recipient, SendError, Sender};
use serde_json::{json, Value};
use tokio::net::TcpListener;

use common::webhook::{verifies, Receiver, STALL};

const SECRET: &str = "whsec_receiver_test";
/// The client timeout of the tests that make the receiver stall: far below [`STALL`].
const SHORT_TIMEOUT: Duration = Duration::from_millis(300);

fn incident(title: &str, severity: Severity) -> Incident {
    let at = Timestamp::from_millis(1_795_780_800_000);
    Incident {
        id: uuid::Uuid::now_v7(),
        title: title.to_owned(),
        severity,
        status: IncidentStatus::Escalating,
        dedup_key: Some("db-primary".into()),
        event_count: 3,
        escalation_level: 2,
        resolution_note: None,
        created_at: at,
        updated_at: at.after(Duration::from_millis(1_500)),
        acknowledged_at: None,
        resolved_at: None,
        cancelled_at: None,
        service_id: None,
    }
}

fn item(incident: Incident) -> Item {
    let id = incident.id;
    Item {
        escalation_level: incident.escalation_level,
        incident,
        links: Links {
            incident: format!("https://klaxon.example/incidents/{id}"),
            acknowledge: format!("https://klaxon.example/act/{id}/acknowledge?sig=a&exp=1"),
            resolve: format!("https://klaxon.example/act/{id}/resolve?sig=r&exp=1"),
        },
    }
}

fn message(webhook: &str, items: Vec<Item>) -> Outgoing {
    Outgoing::new(
        format!("notification-{}", uuid::Uuid::now_v7()),
        Recipient::Webhook(webhook.to_owned()),
        items,
    )
}

fn one_item_message(webhook: &str) -> Outgoing {
    message(
        webhook,
        vec![item(incident("Database down", Severity::Critical))],
    )
}

fn sender(webhooks: &[(&str, WebhookConfig)], timeout: Duration) -> WebhookSender {
    let webhooks: BTreeMap<_, _> = webhooks
        .iter()
        .map(|(name, config)| (name.to_string(), config.clone()))
        .collect();
    WebhookSender::with_timeout(&webhooks, timeout).expect("the client builds")
}

/// A sender with the one webhook `ops` pointing at `receiver`.
fn ops_sender(receiver: &Receiver, format: WebhookFormat) -> WebhookSender {
    sender(&[("ops", receiver.config(format))], Duration::from_secs(10))
}

fn retryable(outcome: Result<klaxon::notify::Delivered, SendError>) -> String {
    match outcome {
        Err(SendError::Retryable(reason)) => reason,
        other => panic!("expected a retryable failure, got {other:?}"),
    }
}

fn fatal(outcome: Result<klaxon::notify::Delivered, SendError>) -> String {
    match outcome {
        Err(SendError::Fatal(reason)) => reason,
        other => panic!("expected a fatal failure, got {other:?}"),
    }
}

#[tokio::test]
async fn generic_post_carries_the_incident_signed_and_keyed() {
    let receiver = Receiver::start(Some(SECRET)).await;
    let message = one_item_message("ops");

    let delivered = ops_sender(&receiver, WebhookFormat::Generic)
        .send(&message)
        .await
        .expect("delivered");
    assert_eq!(delivered.provider_id.as_deref(), Some("receipt-1"));

    let [post] = receiver.posts().try_into().expect("one post");
    assert_eq!(post.header("content-type"), "application/json");
    assert_eq!(post.header("idempotency-key"), message.key);
    assert_eq!(
        post.header("user-agent"),
        concat!("klaxon/", env!("CARGO_PKG_VERSION"))
    );
    let signature = post.header("x-klaxon-signature");
    assert!(verifies(SECRET, signature, &post.body));
    let mut tampered = post.body.to_vec();
    tampered[0] = b' ';
    assert!(!verifies(SECRET, signature, &tampered));
    assert!(!verifies("another secret", signature, &post.body));

    let item = &message.items[0];
    assert_eq!(
        post.json(),
        json!({
            "event": "incident.escalated",
            "idempotency_key": message.key,
            "digest": false,
            "notifications": [{
                "escalation_level": 2,
                "incident": serde_json::to_value(&item.incident).unwrap(),
                "links": {
                    "incident": item.links.incident,
                    "acknowledge": item.links.acknowledge,
                    "resolve": item.links.resolve,
                },
            }],
        })
    );
    // The incident as the API shows it.
    let incident = &post.json()["notifications"][0]["incident"];
    assert_eq!(incident["status"], "ESCALATING");
    assert_eq!(incident["severity"], "critical");
    assert_eq!(incident["created_at"], "2026-11-27T12:00:00.000Z");
    assert_eq!(incident["updated_at"], "2026-11-27T12:00:01.500Z");
    assert_eq!(incident["resolved_at"], Value::Null);
}

#[tokio::test]
async fn slack_post_has_a_fallback_text_and_a_section_per_item() {
    let receiver = Receiver::start(None).await;
    let message = message(
        "ops",
        vec![item(incident(
            "Latency > 2s on <api> & workers",
            Severity::Error,
        ))],
    );

    ops_sender(&receiver, WebhookFormat::Slack)
        .send(&message)
        .await
        .expect("delivered");

    let [post] = receiver.posts().try_into().expect("one post");
    assert!(!post.headers.contains_key("x-klaxon-signature"));
    assert_eq!(post.header("idempotency-key"), message.key);
    let links = &message.items[0].links;
    let escaped = |url: &str| url.replace('&', "&amp;");
    assert_eq!(
        post.json(),
        json!({
            "text": "error incident escalated to level 2: \
                     Latency &gt; 2s on &lt;api&gt; &amp; workers",
            "blocks": [{
                "type": "section",
                "text": {
                    "type": "mrkdwn",
                    "text": format!(
                        "*ERROR* · escalation level 2\n\
                         Latency &gt; 2s on &lt;api&gt; &amp; workers\n\
                         <{}|Incident> · <{}|Acknowledge> · <{}|Resolve>",
                        links.incident,
                        escaped(&links.acknowledge),
                        escaped(&links.resolve),
                    ),
                },
            }],
        })
    );
}

#[tokio::test]
async fn a_digest_of_three_items_carries_each_in_order() {
    let receiver = Receiver::start(Some(SECRET)).await;
    let items = vec![
        item(incident("Disk full", Severity::Warning)),
        item(incident("Database down", Severity::Critical)),
        item(incident("Queue backlog", Severity::Info)),
    ];
    let generic = ops_sender(&receiver, WebhookFormat::Generic);
    let slack = ops_sender(&receiver, WebhookFormat::Slack);

    generic
        .send(&message("ops", items.clone()))
        .await
        .expect("generic digest delivered");
    slack
        .send(&message("ops", items.clone()))
        .await
        .expect("slack digest delivered");

    let [generic, slack] = receiver.posts().try_into().expect("two posts");
    let generic = generic.json();
    assert_eq!(generic["digest"], true);
    let ids: Vec<_> = generic["notifications"]
        .as_array()
        .expect("notifications")
        .iter()
        .map(|notification| notification["incident"]["id"].clone())
        .collect();
    let expected: Vec<_> = items.iter().map(|item| json!(item.incident.id)).collect();
    assert_eq!(ids, expected);

    let slack = slack.json();
    assert_eq!(
        slack["text"],
        "3 incidents escalated, the most severe critical"
    );
    let sections: Vec<_> = slack["blocks"]
        .as_array()
        .expect("blocks")
        .iter()
        .map(|block| block["text"]["text"].as_str().expect("mrkdwn").to_owned())
        .collect();
    assert_eq!(sections.len(), 3);
    for (section, item) in sections.iter().zip(&items) {
        assert!(section.contains(&item.incident.title), "{section}");
        assert!(section.contains(&item.links.incident), "{section}");
    }
}

#[tokio::test]
async fn server_errors_and_rate_limits_are_retryable_and_the_retry_keeps_the_key() {
    let receiver = Receiver::start(Some(SECRET)).await;
    let sender = ops_sender(&receiver, WebhookFormat::Generic);
    let message = one_item_message("ops");
    receiver.fail_next(StatusCode::INTERNAL_SERVER_ERROR, 1);
    receiver.fail_next(StatusCode::TOO_MANY_REQUESTS, 1);

    let reason = retryable(sender.send(&message).await);
    assert_eq!(
        reason,
        "webhook ops answered 500 Internal Server Error: answer 1: 500 Internal Server Error"
    );
    let reason = retryable(sender.send(&message).await);
    assert!(reason.contains("429 Too Many Requests"), "{reason}");
    sender.send(&message).await.expect("the third try delivers");

    let posts = receiver.posts();
    assert_eq!(posts.len(), 3);
    for post in &posts {
        assert_eq!(post.header("idempotency-key"), message.key);
        assert_eq!(post.body, posts[0].body);
    }
}

#[tokio::test]
async fn client_errors_and_redirects_are_fatal() {
    let receiver = Receiver::start(None).await;
    let sender = ops_sender(&receiver, WebhookFormat::Generic);
    receiver.fail_next(StatusCode::BAD_REQUEST, 1);
    receiver.fail_next(StatusCode::FOUND, 1);

    let reason = fatal(sender.send(&one_item_message("ops")).await);
    assert!(reason.contains("400 Bad Request"), "{reason}");
    let reason = fatal(sender.send(&one_item_message("ops")).await);
    assert!(reason.contains("redirects are not followed"), "{reason}");
    assert_eq!(receiver.posts().len(), 2, "the redirect was not followed");
}

#[tokio::test]
async fn a_wrong_secret_is_refused_by_the_receiver() {
    let receiver = Receiver::start(Some(SECRET)).await;
    let mut config = receiver.config(WebhookFormat::Generic);
    config.secret = Some("not the receiver's".into());
    let sender = sender(&[("ops", config)], Duration::from_secs(10));

    let reason = fatal(sender.send(&one_item_message("ops")).await);
    assert!(reason.contains("401 Unauthorized"), "{reason}");
}

#[tokio::test]
async fn a_refused_connection_is_retryable() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr: SocketAddr = listener.local_addr().unwrap();
    drop(listener);
    let config = WebhookConfig {
        url: format!("http://{addr}/hook"),
        format: WebhookFormat::Generic,
        secret: None,
    };
    let sender = sender(&[("ops", config)], Duration::from_secs(10));

    let reason = retryable(sender.send(&one_item_message("ops")).await);
    assert!(reason.to_lowercase().contains("connect"), "{reason}");
}

#[tokio::test]
async fn a_receiver_slower_than_the_timeout_is_retryable() {
    let receiver = Receiver::start(None).await;
    receiver.stall();
    let sender = sender(
        &[("ops", receiver.config(WebhookFormat::Generic))],
        SHORT_TIMEOUT,
    );

    let started = tokio::time::Instant::now();
    let reason = retryable(sender.send(&one_item_message("ops")).await);
    assert_eq!(reason, "webhook ops: no answer within 300ms");
    assert!(started.elapsed() < STALL / 2);
}

#[tokio::test]
async fn an_unknown_webhook_or_a_person_without_a_url_is_fatal() {
    let receiver = Receiver::start(None).await;
    let sender = ops_sender(&receiver, WebhookFormat::Generic);

    let reason = fatal(sender.send(&one_item_message("billing")).await);
    assert_eq!(reason, "no [webhooks.billing] is configured");

    let mut to_person = one_item_message("ops");
    to_person.recipient = Recipient::Person(Person {
        handle: "ada".into(),
        name: "Ada".into(),
        address: "ada@example.com".into(),
    });
    fatal(sender.send(&to_person).await);
    assert!(receiver.posts().is_empty());
}

#[tokio::test]
async fn a_persons_own_webhook_gets_the_generic_json_unsigned() {
    let signed = Receiver::start(Some("s3cret")).await;
    let own = Receiver::start(None).await;
    let sender = ops_sender(&signed, WebhookFormat::Slack);
    let mut to_person = one_item_message("ops");
    to_person.recipient = Recipient::Person(Person {
        handle: "ada".into(),
        name: "Ada".into(),
        address: own.url.clone(),
    });
    sender.send(&to_person).await.expect("posted");
    let posts = own.posts();
    assert_eq!(posts.len(), 1);
    assert!(
        posts[0].headers.get("x-klaxon-signature").is_none(),
        "no secret, no signature"
    );
    assert_eq!(posts[0].header("idempotency-key"), to_person.key);
    assert!(
        posts[0].json()["notifications"].is_array(),
        "{}",
        posts[0].json()
    );
    assert!(signed.posts().is_empty());
}
