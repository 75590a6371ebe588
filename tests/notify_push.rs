//! The push channel against an ntfy server written for these tests: the JSON published, the
//! access token, how each kind of failure is classed, and the Acknowledge button pressed as the
//! ntfy app presses it.

mod common;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{Method, Request, Response, StatusCode, Uri};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use klaxon::config::PushConfig;
use klaxon::domain::{Incident, IncidentStatus, Severity, Timestamp};
use klaxon::notify::ntfy::Ntfy;
use klaxon::notify::{Delivered, Item, Links, Outgoing, Person, Recipient, SendError, Sender};
use serde_json::json;
use tokio::net::TcpListener;

use common::ntfy::{NtfyServer, STALL};

const TOKEN: &str = "tk_klaxontestaccesstoken00001";
const TOPIC: &str = "ada-pager-7f3k";
/// The client timeout of the tests that make the server stall: far below [`STALL`].
const SHORT_TIMEOUT: Duration = Duration::from_millis(300);

fn incident(title: &str, severity: Severity) -> Incident {
    let at = Timestamp::from_millis(1_795_780_800_000);
    Incident {
        id: uuid::Uuid::now_v7(),
        title: title.to_owned(),
        severity,
        status: IncidentStatus::Escalating,
        dedup_key: None,
        event_count: 1,
        escalation_level: 2,
        resolution_note: None,
        created_at: at,
        updated_at: at,
        acknowledged_at: None,
        resolved_at: None,
        cancelled_at: None,
        service_id: None,
    }
}

/// An item whose links are under `base`.
fn item_under(base: &str, incident: Incident) -> Item {
    let id = incident.id;
    Item {
        escalation_level: incident.escalation_level,
        incident,
        links: Links {
            incident: format!("{base}/incidents/{id}"),
            acknowledge: format!("{base}/links/{id}/acknowledge?expires=1795867200&sig=a1"),
            resolve: format!("{base}/links/{id}/resolve?expires=1795867200&sig=r1"),
        },
    }
}

fn item(incident: Incident) -> Item {
    item_under("https://klaxon.example", incident)
}

fn to_topic(topic: &str, items: Vec<Item>) -> Outgoing {
    let person = Person {
        handle: "ada".into(),
        name: "Ada Lovelace".into(),
        address: topic.to_owned(),
    };
    Outgoing::new(
        format!("notification-{}", uuid::Uuid::now_v7()),
        Recipient::Person(person),
        items,
    )
}

fn critical_message() -> Outgoing {
    to_topic(
        TOPIC,
        vec![item(incident(
            "Payment API returns 500",
            Severity::Critical,
        ))],
    )
}

fn ntfy(config: PushConfig, timeout: Duration) -> Ntfy {
    Ntfy::with_timeout(config, timeout).expect("the client builds")
}

fn sender(server: &NtfyServer) -> Ntfy {
    ntfy(server.config(), Duration::from_secs(10))
}

fn retryable(outcome: Result<Delivered, SendError>) -> String {
    match outcome {
        Err(SendError::Retryable(reason)) => reason,
        other => panic!("expected a retryable failure, got {other:?}"),
    }
}

fn fatal(outcome: Result<Delivered, SendError>) -> String {
    match outcome {
        Err(SendError::Fatal(reason)) => reason,
        other => panic!("expected a fatal failure, got {other:?}"),
    }
}

#[tokio::test]
async fn publishes_the_incident_as_ntfy_json() {
    let server = NtfyServer::start(None).await;
    let message = critical_message();

    let delivered = sender(&server).send(&message).await.expect("delivered");

    let [published] = server.messages().try_into().expect("one publish");
    assert_eq!(published.status, StatusCode::OK, "{}", published.answer);
    assert_eq!(
        delivered.provider_id.as_deref(),
        published.answer["id"].as_str()
    );
    assert_eq!(delivered.provider, None);
    assert_eq!(published.method, Method::POST);
    assert_eq!(published.path, "/");
    assert_eq!(published.header("content-type"), Some("application/json"));
    assert_eq!(published.header("authorization"), None);
    let links = &message.items[0].links;
    assert_eq!(
        published.json,
        json!({
            "topic": TOPIC,
            "title": "[CRITICAL] Payment API returns 500",
            "message": "Payment API returns 500\nEscalation level 2",
            "priority": 5,
            "tags": ["rotating_light", "critical"],
            "click": links.incident,
            "actions": [
                {
                    "action": "http",
                    "label": "Acknowledge",
                    "url": links.acknowledge,
                    "method": "POST",
                    "clear": true,
                },
                {
                    "action": "view",
                    "label": "Open incident",
                    "url": links.incident,
                },
            ],
        })
    );
    // As subscribers get it.
    let answer = &published.answer;
    assert_eq!(answer["event"], "message");
    assert_eq!(answer["id"].as_str().map(str::len), Some(12));
    assert_eq!(answer["priority"], 5);
}

#[tokio::test]
async fn each_severity_has_its_priority() {
    let server = NtfyServer::start(None).await;
    let sender = sender(&server);
    let severities = [
        (Severity::Critical, 5),
        (Severity::Error, 4),
        (Severity::Warning, 3),
        (Severity::Info, 2),
    ];
    for (severity, _) in severities {
        let message = to_topic(TOPIC, vec![item(incident("Queue backlog", severity))]);
        sender.send(&message).await.expect("delivered");
    }

    let published = server.messages();
    assert_eq!(published.len(), severities.len());
    for (message, (severity, priority)) in published.iter().zip(severities) {
        assert_eq!(message.json["priority"], priority, "{severity:?}");
        let title = format!("[{}] Queue backlog", severity.as_str().to_uppercase());
        assert_eq!(message.json["title"], title);
    }
}

#[tokio::test]
async fn a_digest_counts_its_incidents_and_lists_each() {
    let server = NtfyServer::start(None).await;
    let items = vec![
        item(incident("Disk full", Severity::Warning)),
        item(incident("Database down", Severity::Critical)),
        item(incident("Queue backlog", Severity::Info)),
    ];
    let message = to_topic(TOPIC, items.clone());

    sender(&server).send(&message).await.expect("delivered");

    let [published] = server.messages().try_into().expect("one publish");
    let json = &published.json;
    assert_eq!(json["title"], "3 incidents (most severe: critical)");
    assert_eq!(
        json["message"],
        "[WARNING] Disk full · level 2\n\
         [CRITICAL] Database down · level 2\n\
         [INFO] Queue backlog · level 2"
    );
    assert_eq!(json["priority"], 5);
    assert_eq!(json["click"], items[0].links.incident.as_str());
    assert_eq!(json["actions"][0]["label"], "Acknowledge first");
    assert_eq!(
        json["actions"][0]["url"],
        items[0].links.acknowledge.as_str()
    );
}

#[tokio::test]
async fn the_access_token_goes_as_a_bearer_and_is_required() {
    let server = NtfyServer::start(Some(TOKEN)).await;

    sender(&server)
        .send(&critical_message())
        .await
        .expect("delivered with the token");
    let without = PushConfig {
        token: None,
        ..server.config()
    };
    let reason = fatal(
        ntfy(without, Duration::from_secs(10))
            .send(&critical_message())
            .await,
    );
    assert_eq!(
        reason,
        r#"ntfy answered 403 Forbidden: {"code":40301,"http":403,"error":"forbidden","link":"https://ntfy.sh/docs/publish/#authentication"}"#
    );
    let wrong = PushConfig {
        token: Some("tk_notthetokenthiserverknows".into()),
        ..server.config()
    };
    let reason = fatal(
        ntfy(wrong, Duration::from_secs(10))
            .send(&critical_message())
            .await,
    );
    assert!(
        reason.starts_with("ntfy answered 401 Unauthorized: "),
        "{reason}"
    );
    assert!(reason.contains(r#""code":40101"#), "{reason}");
    assert!(!reason.contains("tk_"), "{reason}");

    let messages = server.messages();
    let statuses: Vec<_> = messages.iter().map(|m| m.status.as_u16()).collect();
    assert_eq!(statuses, [200, 403, 401]);
    assert_eq!(
        messages[0].header("authorization"),
        Some(format!("Bearer {TOKEN}").as_str())
    );
}

#[tokio::test]
async fn server_errors_and_rate_limits_are_retryable() {
    let server = NtfyServer::start(None).await;
    let sender = sender(&server);
    let message = critical_message();
    server.fail_next(StatusCode::INTERNAL_SERVER_ERROR, 1);
    server.fail_next(StatusCode::TOO_MANY_REQUESTS, 1);

    let reason = retryable(sender.send(&message).await);
    assert_eq!(
        reason,
        r#"ntfy answered 500 Internal Server Error: {"code":50001,"http":500,"error":"internal server error"}"#
    );
    let reason = retryable(sender.send(&message).await);
    assert!(
        reason.starts_with("ntfy answered 429 Too Many Requests: "),
        "{reason}"
    );
    assert!(reason.contains(r#""code":42901"#), "{reason}");
    sender.send(&message).await.expect("the third try delivers");

    let messages = server.messages();
    assert_eq!(messages.len(), 3);
    assert!(messages.iter().all(|m| m.json == messages[0].json));
}

#[tokio::test]
async fn a_malformed_message_and_a_redirect_are_fatal() {
    let server = NtfyServer::start(None).await;
    let sender = sender(&server);
    let not_a_topic = to_topic(
        "ada's pager",
        vec![item(incident("Disk full", Severity::Warning))],
    );

    let reason = fatal(sender.send(&not_a_topic).await);
    assert_eq!(
        reason,
        r#"ntfy answered 400 Bad Request: {"code":40009,"http":400,"error":"invalid request: topic invalid"}"#
    );
    server.fail_next(StatusCode::FOUND, 1);
    let reason = fatal(sender.send(&critical_message()).await);
    assert!(reason.contains("redirects are not followed"), "{reason}");
    assert_eq!(server.messages().len(), 2, "the redirect was not followed");
}

#[tokio::test]
async fn a_server_slower_than_the_timeout_is_retryable() {
    let server = NtfyServer::start(None).await;
    server.stall();
    let sender = ntfy(server.config(), SHORT_TIMEOUT);

    let started = tokio::time::Instant::now();
    let reason = retryable(sender.send(&critical_message()).await);
    assert_eq!(reason, "ntfy: no answer within 300ms");
    assert!(started.elapsed() < STALL / 2);
}

#[tokio::test]
async fn a_refused_connection_is_retryable() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr: SocketAddr = listener.local_addr().unwrap();
    drop(listener);
    let config = PushConfig {
        ntfy_url: format!("http://{addr}"),
        token: Some(TOKEN.into()),
    };

    let reason = retryable(
        ntfy(config, Duration::from_secs(10))
            .send(&critical_message())
            .await,
    );
    assert!(reason.to_lowercase().contains("connect"), "{reason}");
    assert!(!reason.contains(TOKEN), "{reason}");
}

#[tokio::test]
async fn a_webhook_recipient_is_fatal() {
    let server = NtfyServer::start(None).await;
    let mut message = critical_message();
    message.recipient = Recipient::Webhook("ops".into());

    fatal(sender(&server).send(&message).await);
    assert!(server.messages().is_empty());
}

#[tokio::test]
async fn pressing_acknowledge_posts_to_the_signed_link() {
    let klaxon = Recorder::start().await;
    let server = NtfyServer::start(None).await;
    let message = to_topic(
        TOPIC,
        vec![item_under(
            &klaxon.url,
            incident("Payment API returns 500", Severity::Critical),
        )],
    );
    sender(&server).send(&message).await.expect("delivered");

    let (status, body) = server.press(0, "Acknowledge").await;

    assert_eq!((status, body.as_str()), (200, "acknowledged"));
    let [(method, uri, body)] = klaxon.requests().try_into().expect("one request");
    assert_eq!(method, Method::POST);
    assert_eq!(
        format!("{}{uri}", klaxon.url),
        message.items[0].links.acknowledge
    );
    assert!(body.is_empty());
}

/// Stands in for Klaxon's link endpoint: records each request and answers 200 `acknowledged`.
struct Recorder {
    url: String,
    requests: Arc<Mutex<Vec<(Method, Uri, Bytes)>>>,
}

impl Recorder {
    async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let requests = Arc::new(Mutex::new(Vec::new()));
        let shared = requests.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let requests = shared.clone();
                let service = hyper::service::service_fn(move |request: Request<Incoming>| {
                    let requests = requests.clone();
                    async move {
                        let (parts, body) = request.into_parts();
                        let body = axum::body::to_bytes(Body::new(body), usize::MAX)
                            .await
                            .unwrap_or_default();
                        requests
                            .lock()
                            .unwrap_or_else(PoisonError::into_inner)
                            .push((parts.method, parts.uri, body));
                        Ok::<_, Infallible>(Response::new(Body::from("acknowledged")))
                    }
                });
                tokio::spawn(
                    hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service),
                );
            }
        });
        Self { url, requests }
    }

    fn requests(&self) -> Vec<(Method, Uri, Bytes)> {
        self.requests
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

#[tokio::test]
async fn the_server_refuses_what_ntfy_refuses() {
    let server = NtfyServer::start(None).await;
    let client = reqwest::Client::new();
    let view = json!({"action": "view", "label": "Open", "url": "https://klaxon.example/i"});
    let refused = [
        ("/", json!({"message": "no topic"}), 40009),
        ("/", json!({"topic": "a/b"}), 40009),
        ("/", json!({"topic": "t".repeat(65)}), 40009),
        ("/", json!({"topic": TOPIC, "priority": 6}), 40007),
        ("/", json!({"topic": TOPIC, "priority": "5"}), 40017),
        ("/", json!({"topic": TOPIC, "tags": "warning"}), 40017),
        ("/", json!({"topic": TOPIC, "click": "not a url"}), 40017),
        (
            "/",
            json!({"topic": TOPIC, "actions": [view, view, view, view]}),
            40018,
        ),
        (
            "/",
            json!({"topic": TOPIC, "actions": [{"action": "call", "label": "x"}]}),
            40018,
        ),
        (
            "/",
            json!({"topic": TOPIC, "actions": [{"action": "http", "label": "x"}]}),
            40018,
        ),
        (
            "/",
            json!({"topic": TOPIC, "actions": [{"action": "view", "url": "https://k.example"}]}),
            40018,
        ),
        (
            "/",
            json!({"topic": TOPIC, "actions": [{"action": "http", "label": "x",
                "url": "https://k.example", "method": "GET", "body": "b"}]}),
            40018,
        ),
        (&format!("/{TOPIC}"), json!({"topic": TOPIC}), 40401),
    ];
    for (path, body, _) in &refused {
        client
            .post(format!("{}{path}", server.url))
            .json(body)
            .send()
            .await
            .expect("the server answers");
    }
    let accepted = json!({"topic": TOPIC, "actions": [view]});
    client
        .post(format!("{}/", server.url))
        .json(&accepted)
        .send()
        .await
        .expect("the server answers");

    let messages = server.messages();
    for (message, (_, body, code)) in messages.iter().zip(&refused) {
        assert_eq!(message.answer["code"], *code, "{body}: {}", message.answer);
        assert_eq!(u32::from(message.status.as_u16()), code / 100);
    }
    let published = &messages[refused.len()].answer;
    assert_eq!(published["message"], "triggered", "{published}");
    assert_eq!(published["actions"][0]["clear"], false);
}
