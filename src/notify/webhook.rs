//! The webhook channel: posts each message as JSON to a URL named in `[webhooks.<name>]`.
//!
//! The body is Slack's incoming-webhook JSON or Klaxon's own, as the webhook's
//! [`WebhookFormat`] says. Every post carries `Idempotency-Key: <Outgoing::key>`, the same on
//! every attempt, and, when the webhook has a `secret`, `X-Klaxon-Signature: t=<t>,v1=<hex>`:
//! `t` is the Unix time of the attempt in seconds and `hex` the HMAC-SHA256, under the secret, of
//! `<t>.<body>`. A receiver recomputes it, compares in constant time and refuses a `t` far from
//! its own clock, so that a captured post cannot be replayed later (Stripe signs the same way).
//!
//! One post may take [`REQUEST_TIMEOUT`], from connecting to the end of the answer. Redirects are
//! not followed: a 3xx means the configured URL is wrong, and following it would hand the signed
//! body to an address the configuration does not name. A timeout, a failed connection, 408, 429
//! and 5xx are worth another try; any other answer outside 2xx is not.

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use hmac::{Hmac, Mac};
use reqwest::header::CONTENT_TYPE;
use reqwest::{redirect, Client, Response, StatusCode};
use serde::Serialize;
use sha2::Sha256;

use super::{Delivered, Item, Links, Outgoing, Recipient, SendError, Sender};
use crate::config::{WebhookConfig, WebhookFormat};
use crate::domain::Incident;

/// How long one post may take, from connecting to the last byte of the answer.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// The header that carries the message's idempotency key.
const IDEMPOTENCY_KEY_HEADER: &str = "idempotency-key";
/// The header that carries the signature, when the webhook has a secret.
const SIGNATURE_HEADER: &str = "x-klaxon-signature";
/// The answer's header whose value becomes [`Delivered::provider_id`].
const REQUEST_ID_HEADER: &str = "x-request-id";
/// Klaxon's own JSON names what happened in its `event`.
const ESCALATED_EVENT: &str = "incident.escalated";
/// The most characters of a refusing answer's body kept in the error.
pub(super) const MAX_ANSWER_EXCERPT_CHARS: usize = 200;
/// Slack refuses a message of more than 50 blocks: a digest shows this many items and one more
/// section that counts the rest.
const MAX_SLACK_ITEM_SECTIONS: usize = 49;

/// Posts messages to the configured webhooks through one HTTP client.
pub struct WebhookSender {
    client: Client,
    webhooks: BTreeMap<String, WebhookConfig>,
    timeout: Duration,
}

impl WebhookSender {
    /// A sender whose posts may take [`REQUEST_TIMEOUT`].
    pub fn new(webhooks: &BTreeMap<String, WebhookConfig>) -> Result<Self, reqwest::Error> {
        Self::with_timeout(webhooks, REQUEST_TIMEOUT)
    }

    /// A sender whose posts may take `timeout` instead of [`REQUEST_TIMEOUT`].
    pub fn with_timeout(
        webhooks: &BTreeMap<String, WebhookConfig>,
        timeout: Duration,
    ) -> Result<Self, reqwest::Error> {
        let client = Client::builder()
            .timeout(timeout)
            .redirect(redirect::Policy::none())
            .user_agent(concat!("klaxon/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Self {
            client,
            webhooks: webhooks.clone(),
            timeout,
        })
    }

    /// What a post that got no answer means: worth another try, unless the request itself could
    /// not be built (a URL that does not parse, a key that is no header value).
    fn unanswered(&self, name: &str, error: reqwest::Error) -> SendError {
        // The URL can hold the webhook's credential (Slack's does): keep it out of the error.
        let error = error.without_url();
        if error.is_builder() {
            SendError::Fatal(format!(
                "webhook {name}: cannot build the request: {}",
                with_causes(&error)
            ))
        } else if error.is_timeout() {
            SendError::Retryable(format!(
                "webhook {name}: no answer within {:?}",
                self.timeout
            ))
        } else {
            SendError::Retryable(format!("webhook {name}: {}", with_causes(&error)))
        }
    }
}

#[async_trait]
impl Sender for WebhookSender {
    async fn send(&self, message: &Outgoing) -> Result<Delivered, SendError> {
        // A configured webhook, or a person's own (a `webhook` contact method): Klaxon's JSON,
        // unsigned, to the URL they gave.
        let personal;
        let (name, webhook) = match &message.recipient {
            Recipient::Webhook(name) => {
                let webhook = self.webhooks.get(name).ok_or_else(|| {
                    SendError::Fatal(format!("no [webhooks.{name}] is configured"))
                })?;
                (name.as_str(), webhook)
            }
            Recipient::Person(person) => {
                let url = &person.address;
                if !(url.starts_with("https://") || url.starts_with("http://")) {
                    return Err(SendError::Fatal(format!(
                        "{}'s webhook {url:?} is not an http(s) URL",
                        person.handle
                    )));
                }
                personal = WebhookConfig {
                    url: person.address.clone(),
                    format: WebhookFormat::Generic,
                    secret: None,
                };
                (person.handle.as_str(), &personal)
            }
        };
        let body = match webhook.format {
            WebhookFormat::Slack => serde_json::to_vec(&SlackMessage::of(message)),
            WebhookFormat::Generic => serde_json::to_vec(&GenericMessage::of(message)),
        }
        .map_err(|error| SendError::Fatal(format!("webhook {name}: cannot encode: {error}")))?;

        let mut request = self
            .client
            .post(&webhook.url)
            .header(CONTENT_TYPE, "application/json")
            .header(IDEMPOTENCY_KEY_HEADER, &message.key);
        if let Some(secret) = &webhook.secret {
            let now = chrono::Utc::now().timestamp();
            request = request.header(SIGNATURE_HEADER, signature(secret, now, &body));
        }
        let answer = request
            .body(body)
            .send()
            .await
            .map_err(|error| self.unanswered(name, error))?;

        let status = answer.status();
        if status.is_success() {
            let provider_id = answer
                .headers()
                .get(REQUEST_ID_HEADER)
                .and_then(|id| id.to_str().ok())
                .map(str::to_owned);
            return Ok(Delivered {
                provider_id,
                provider: None,
            });
        }
        Err(refusal(name, status, &excerpt(answer).await))
    }
}

/// The `X-Klaxon-Signature` value of `body` posted at `unix_seconds`.
fn signature(secret: &str, unix_seconds: i64, body: &[u8]) -> String {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes keys of any length");
    mac.update(unix_seconds.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("t={unix_seconds},v1={:x}", mac.finalize().into_bytes())
}

/// What an answer outside 2xx means, with its status and the start of its `body`.
fn refusal(name: &str, status: StatusCode, body: &str) -> SendError {
    let body: String = body.trim().chars().take(MAX_ANSWER_EXCERPT_CHARS).collect();
    let answer = if body.is_empty() {
        format!("webhook {name} answered {status}")
    } else {
        format!("webhook {name} answered {status}: {body}")
    };
    if status.is_server_error()
        || status == StatusCode::TOO_MANY_REQUESTS
        || status == StatusCode::REQUEST_TIMEOUT
    {
        SendError::Retryable(answer)
    } else if status.is_redirection() {
        SendError::Fatal(format!(
            "{answer} (redirects are not followed: configure the URL it points to)"
        ))
    } else {
        SendError::Fatal(answer)
    }
}

/// The start of an answer's body: enough bytes for [`MAX_ANSWER_EXCERPT_CHARS`] characters, and
/// no more read. A body cut short leaves what had arrived.
pub(super) async fn excerpt(mut answer: Response) -> String {
    let mut bytes = Vec::new();
    while bytes.len() < MAX_ANSWER_EXCERPT_CHARS * 4 {
        match answer.chunk().await {
            Ok(Some(chunk)) => bytes.extend_from_slice(&chunk),
            Ok(None) | Err(_) => break,
        }
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

/// An error and its causes, `: `-separated (reqwest's own message says only "error sending
/// request").
pub(super) fn with_causes(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(next) = cause {
        text.push_str(": ");
        text.push_str(&next.to_string());
        cause = next.source();
    }
    text
}

/// Klaxon's own JSON: each item with the whole incident, as the API shows it.
#[derive(Serialize)]
struct GenericMessage<'a> {
    event: &'static str,
    idempotency_key: &'a str,
    digest: bool,
    notifications: Vec<GenericNotification<'a>>,
}

#[derive(Serialize)]
struct GenericNotification<'a> {
    escalation_level: i32,
    incident: &'a Incident,
    links: &'a Links,
}

impl<'a> GenericMessage<'a> {
    fn of(message: &'a Outgoing) -> Self {
        Self {
            event: ESCALATED_EVENT,
            idempotency_key: &message.key,
            digest: message.is_digest(),
            notifications: message
                .items
                .iter()
                .map(|item| GenericNotification {
                    escalation_level: item.escalation_level,
                    incident: &item.incident,
                    links: &item.links,
                })
                .collect(),
        }
    }
}

/// Slack's incoming-webhook JSON: `text` for notifications and clients without blocks, and a
/// section per item.
#[derive(Serialize)]
struct SlackMessage {
    text: String,
    blocks: Vec<SlackSection>,
}

#[derive(Serialize)]
struct SlackSection {
    #[serde(rename = "type")]
    kind: &'static str,
    text: SlackText,
}

#[derive(Serialize)]
struct SlackText {
    #[serde(rename = "type")]
    kind: &'static str,
    text: String,
}

impl SlackMessage {
    fn of(message: &Outgoing) -> Self {
        let text = match message.items.as_slice() {
            [item] => format!(
                "{} incident escalated to level {}: {}",
                item.incident.severity.as_str(),
                item.escalation_level,
                slack_escape(&item.incident.title)
            ),
            items => format!(
                "{} incidents escalated, the most severe {}",
                items.len(),
                message.severity().as_str()
            ),
        };
        let mut blocks: Vec<_> = message
            .items
            .iter()
            .take(MAX_SLACK_ITEM_SECTIONS)
            .map(|item| SlackSection::mrkdwn(slack_item(item)))
            .collect();
        let rest = message.items.len().saturating_sub(MAX_SLACK_ITEM_SECTIONS);
        if rest > 0 {
            blocks.push(SlackSection::mrkdwn(format!("…and {rest} more")));
        }
        Self { text, blocks }
    }
}

impl SlackSection {
    fn mrkdwn(text: String) -> Self {
        Self {
            kind: "section",
            text: SlackText {
                kind: "mrkdwn",
                text,
            },
        }
    }
}

/// One item as Slack mrkdwn: severity and level, the title, then the links.
fn slack_item(item: &Item) -> String {
    let links = &item.links;
    format!(
        "*{}* · escalation level {}\n{}\n<{}|Incident> · <{}|Acknowledge> · <{}|Resolve>",
        item.incident.severity.as_str().to_uppercase(),
        item.escalation_level,
        slack_escape(&item.incident.title),
        slack_escape(&links.incident),
        slack_escape(&links.acknowledge),
        slack_escape(&links.resolve),
    )
}

/// Slack reads `&`, `<` and `>` as markup: text shows them only escaped.
fn slack_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signs_the_time_and_the_body() {
        // python3: hmac.new(b"whsec_klaxon_test",
        //     b'1795780800.{"event":"incident.escalated"}', hashlib.sha256).hexdigest()
        assert_eq!(
            signature(
                "whsec_klaxon_test",
                1_795_780_800,
                br#"{"event":"incident.escalated"}"#
            ),
            "t=1795780800,v1=0c38d6985112968260c6a68d0b1e94b0558d402f769fca2bd624f7b443253841"
        );
    }

    #[test]
    fn classes_refusals_by_status() {
        for status in [500, 502, 503, 429, 408] {
            let status = StatusCode::from_u16(status).unwrap();
            assert!(refusal("ops", status, "").is_retryable(), "{status}");
        }
        for status in [400, 401, 403, 404, 410, 422, 301, 302, 307] {
            let status = StatusCode::from_u16(status).unwrap();
            assert!(!refusal("ops", status, "").is_retryable(), "{status}");
        }
    }

    #[test]
    fn a_refusal_says_status_and_the_start_of_the_body() {
        let body = format!("  {}", "é".repeat(500));
        let SendError::Retryable(text) = refusal("ops", StatusCode::BAD_GATEWAY, &body) else {
            panic!("502 is retryable");
        };
        let expected = format!("webhook ops answered 502 Bad Gateway: {}", "é".repeat(200));
        assert_eq!(text, expected);
    }

    #[test]
    fn a_redirect_says_it_is_not_followed() {
        let error = refusal("ops", StatusCode::MOVED_PERMANENTLY, "");
        assert!(error.to_string().contains("redirects are not followed"));
    }

    #[test]
    fn a_long_slack_digest_counts_what_it_leaves_out() {
        let incident = Incident::opened_by(&crate::domain::NewEvent {
            source: "test".into(),
            summary: "Disk full".into(),
            severity: crate::domain::Severity::Warning,
            dedup_key: None,
            payload: serde_json::Value::Null,
            actor: "test".into(),
            received_at: crate::domain::Timestamp::from_millis(0),
            service: None,
        });
        let item = Item {
            incident,
            escalation_level: 1,
            links: Links {
                incident: "https://klaxon.example/i".into(),
                acknowledge: "https://klaxon.example/a".into(),
                resolve: "https://klaxon.example/r".into(),
            },
        };
        let message = Outgoing::new("k".into(), Recipient::Webhook("ops".into()), vec![item; 60]);
        let slack = SlackMessage::of(&message);
        assert_eq!(slack.blocks.len(), 50);
        assert_eq!(slack.blocks[49].text.text, "…and 11 more");
    }

    #[test]
    fn escapes_slack_markup() {
        assert_eq!(slack_escape("a & <b>"), "a &amp; &lt;b&gt;");
    }
}
