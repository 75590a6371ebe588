//! The webhook channel against a receiver written for these tests: the payloads, the headers and
//! the signature as they arrive, and how each kind of failure is classed.

use std::collections::{BTreeMap, VecDeque};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, Request, Response, StatusCode};
use hmac::{Hmac, Mac};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use klaxon::config::{WebhookConfig, WebhookFormat};
use klaxon::domain::{Incident, IncidentStatus, Severity, Timestamp};
use klaxon::notify::webhook::WebhookSender;
use klaxon::notify::{Item, Links, Outgoing, Person, Recipient, SendError, Sender};
use serde_json::{json, Value};
use sha2::Sha256;
use tokio::net::TcpListener;

const SECRET: &str = "whsec_receiver_test";
/// A receiver refuses a signature further than this from its clock, as a real one would.
const SIGNATURE_TOLERANCE_SECS: i64 = 300;
/// The client timeout of the tests that make the receiver stall.
const SHORT_TIMEOUT: Duration = Duration::from_millis(300);
/// How long a stalling receiver sleeps before answering: far past [`SHORT_TIMEOUT`].
const STALL: Duration = Duration::from_secs(30);

/// One post as the receiver got it.
#[derive(Debug, Clone)]
struct Post {
    headers: HeaderMap,
    body: Bytes,
}

impl Post {
    fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|value| value.to_str().ok())
            .unwrap_or_else(|| panic!("no {name} header"))
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("the body is JSON")
    }
}

#[derive(Default)]
struct ReceiverState {
    posts: Vec<Post>,
    /// The statuses of the next answers, in order; a 200 once they run out.
    failures: VecDeque<StatusCode>,
    stalling: bool,
}

/// A webhook receiver on 127.0.0.1:0. It records every post, refuses (401) one whose signature
/// does not verify under its secret and (400) one without an `Idempotency-Key`, and otherwise
/// answers 200 with an `X-Request-Id`, unless told to fail or to stall.
struct Receiver {
    url: String,
    secret: Option<&'static str>,
    state: Arc<Mutex<ReceiverState>>,
}

impl Receiver {
    async fn start(secret: Option<&'static str>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(Mutex::new(ReceiverState::default()));
        let shared = state.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let state = shared.clone();
                let service = hyper::service::service_fn(move |request| {
                    answer(state.clone(), secret, request)
                });
                tokio::spawn(
                    hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service),
                );
            }
        });
        Self {
            url: format!("http://{addr}/hook"),
            secret,
            state,
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, ReceiverState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Answers `status` to the next `count` posts.
    fn fail_next(&self, status: StatusCode, count: usize) {
        self.state()
            .failures
            .extend(std::iter::repeat_n(status, count));
    }

    /// Answers nothing for [`STALL`].
    fn stall(&self) {
        self.state().stalling = true;
    }

    fn posts(&self) -> Vec<Post> {
        self.state().posts.clone()
    }

    fn config(&self, format: WebhookFormat) -> WebhookConfig {
        WebhookConfig {
            url: self.url.clone(),
            format,
            secret: self.secret.map(str::to_owned),
        }
    }
}

async fn answer(
    state: Arc<Mutex<ReceiverState>>,
    secret: Option<&str>,
    request: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    let (parts, body) = request.into_parts();
    let body = axum::body::to_bytes(Body::new(body), usize::MAX)
        .await
        .unwrap_or_default();
    let (number, failure, stalling) = {
        let mut state = state.lock().unwrap_or_else(PoisonError::into_inner);
        state.posts.push(Post {
            headers: parts.headers.clone(),
            body: body.clone(),
        });
        (
            state.posts.len(),
            state.failures.pop_front(),
            state.stalling,
        )
    };
    if stalling {
        tokio::time::sleep(STALL).await;
    }
    let signature = parts
        .headers
        .get("x-klaxon-signature")
        .and_then(|value| value.to_str().ok());
    let status = if let Some(status) = failure {
        status
    } else if secret.is_some_and(|secret| !signature.is_some_and(|s| verifies(secret, s, &body))) {
        StatusCode::UNAUTHORIZED
    } else if !parts.headers.contains_key("idempotency-key") {
        StatusCode::BAD_REQUEST
    } else {
        StatusCode::OK
    };
    let response = Response::builder()
        .status(status)
        .header("x-request-id", format!("receipt-{number}"))
        .body(Body::from(format!("answer {number}: {status}")))
        .expect("a valid response");
    Ok(response)
}

/// Whether `header` is `t=<t>,v1=<hex>` with `hex` the HMAC-SHA256 of `<t>.<body>` under
/// `secret`, and `t` close to now.
fn verifies(secret: &str, header: &str, body: &[u8]) -> bool {
    let Some((t, v1)) = header
        .strip_prefix("t=")
        .and_then(|rest| rest.split_once(",v1="))
    else {
        return false;
    };
    let Ok(t_seconds) = t.parse::<i64>() else {
        return false;
    };
    if (chrono::Utc::now().timestamp() - t_seconds).abs() > SIGNATURE_TOLERANCE_SECS {
        return false;
    }
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(format!("{t}.").as_bytes());
    mac.update(body);
    let expected: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect();
    expected == v1
}

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
    Outgoing {
        key: format!("notification-{}", uuid::Uuid::now_v7()),
        recipient: Recipient::Webhook(webhook.to_owned()),
        items,
    }
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
async fn an_unknown_webhook_or_a_person_is_fatal() {
    let receiver = Receiver::start(None).await;
    let sender = ops_sender(&receiver, WebhookFormat::Generic);

    let reason = fatal(sender.send(&one_item_message("billing")).await);
    assert_eq!(reason, "no [webhooks.billing] is configured");

    let mut to_person = one_item_message("ops");
    to_person.recipient = Recipient::Person(Person {
        handle: "ada".into(),
        name: "Ada".into(),
        email: "ada@example.com".into(),
        phone: None,
    });
    fatal(sender.send(&to_person).await);
    assert!(receiver.posts().is_empty());
}
