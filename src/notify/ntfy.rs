//! Push: publishes each message to its recipient's topic on the ntfy server of `[push]`, which
//! pushes it to the phones subscribed to that topic.
//!
//! A message is one publish in ntfy's JSON form (`POST {ntfy_url}/`): the title names the
//! severity and the incident (or counts a digest's incidents), the priority follows the most
//! severe incident (critical 5, error 4, warning 3, info 2), a tap on the notification opens the
//! incident's URL, and an **Acknowledge** button, an ntfy `http` action, makes the phone `POST` the
//! message's signed acknowledge link. The phone sends that request, not the ntfy server: the button
//! works where the phone can reach `public_url`. A digest's buttons act on its first incident.
//!
//! With `[push] token` set, every publish carries `Authorization: Bearer <token>` (an ntfy access
//! token). No error shows the token, even where an answer repeats it.
//!
//! ntfy takes no idempotency key: a publish whose answer was lost (a timeout after ntfy had
//! accepted it) is published again, and the phone shows it twice.
//!
//! One publish may take [`REQUEST_TIMEOUT`]. Redirects are not followed: a 3xx means `ntfy_url` is
//! wrong. A timeout, a failed connection, 408, 429 and 5xx are worth another try; any other answer
//! outside 2xx is not. A refusal's error carries ntfy's own JSON error
//! (`{"code":40301,"http":403,"error":"forbidden",…}`).

use std::time::Duration;

use async_trait::async_trait;
use reqwest::{redirect, Client, StatusCode};
use serde::{Deserialize, Serialize};

use super::webhook::{excerpt, with_causes, MAX_ANSWER_EXCERPT_CHARS};
use super::{Delivered, Item, Outgoing, Recipient, SendError, Sender};
use crate::config::PushConfig;
use crate::domain::Severity;

/// How long one publish may take, from connecting to the last byte of the answer.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// ntfy's default `message-size-limit`: a longer message is turned into an attachment, which a
/// notification does not show.
const MAX_MESSAGE_BYTES: usize = 4096;
/// The most incidents a digest's message lists, one line each; a last line counts the rest.
const MAX_DIGEST_LINES: usize = 10;
/// The room a digest's message keeps for its last line, `…and <n> more`, whatever `n`.
const MORE_LINE_BYTES: usize = 32;

/// Publishes messages to one ntfy server through one HTTP client.
pub struct Ntfy {
    client: Client,
    config: PushConfig,
    timeout: Duration,
}

impl Ntfy {
    /// A sender whose publishes may take [`REQUEST_TIMEOUT`].
    pub fn new(config: PushConfig) -> Result<Self, reqwest::Error> {
        Self::with_timeout(config, REQUEST_TIMEOUT)
    }

    /// A sender whose publishes may take `timeout` instead of [`REQUEST_TIMEOUT`].
    pub fn with_timeout(config: PushConfig, timeout: Duration) -> Result<Self, reqwest::Error> {
        let client = Client::builder()
            .timeout(timeout)
            .redirect(redirect::Policy::none())
            .user_agent(concat!("klaxon/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Self {
            client,
            config,
            timeout,
        })
    }

    /// What a publish that got no answer means: worth another try, unless the request itself
    /// could not be built (a URL that does not parse, a token that is no header value).
    fn unanswered(&self, error: reqwest::Error) -> SendError {
        // The URL may carry credentials (`https://user:password@…`): keep it out of the error.
        let error = error.without_url();
        if error.is_builder() {
            SendError::Fatal(format!(
                "ntfy: cannot build the request: {}",
                self.redacted(&with_causes(&error))
            ))
        } else if error.is_timeout() {
            SendError::Retryable(format!("ntfy: no answer within {:?}", self.timeout))
        } else {
            SendError::Retryable(format!("ntfy: {}", self.redacted(&with_causes(&error))))
        }
    }

    /// What an answer outside 2xx means, with its status and the start of its `body`.
    fn refusal(&self, status: StatusCode, body: &str) -> SendError {
        let body: String = body.trim().chars().take(MAX_ANSWER_EXCERPT_CHARS).collect();
        let answer = if body.is_empty() {
            format!("ntfy answered {status}")
        } else {
            format!("ntfy answered {status}: {}", self.redacted(&body))
        };
        if status.is_server_error()
            || status == StatusCode::TOO_MANY_REQUESTS
            || status == StatusCode::REQUEST_TIMEOUT
        {
            SendError::Retryable(answer)
        } else if status.is_redirection() {
            SendError::Fatal(format!(
                "{answer} (redirects are not followed: set [push] ntfy_url to the URL it points to)"
            ))
        } else {
            SendError::Fatal(answer)
        }
    }

    /// `text` without the access token: a proxy or a wrong URL may answer with the request's
    /// headers.
    fn redacted(&self, text: &str) -> String {
        match &self.config.token {
            Some(token) => text.replace(token.as_str(), "<token>"),
            None => text.to_owned(),
        }
    }
}

#[async_trait]
impl Sender for Ntfy {
    async fn send(&self, message: &Outgoing) -> Result<Delivered, SendError> {
        let Recipient::Person(person) = &message.recipient else {
            return Err(SendError::Fatal(
                "push goes to people's ntfy topics, not to webhooks".into(),
            ));
        };
        let publish = Publish::of(&person.address, message)
            .ok_or_else(|| SendError::Fatal("a message about no incident".into()))?;
        let mut request = self
            .client
            .post(format!("{}/", self.config.ntfy_url))
            .json(&publish);
        if let Some(token) = &self.config.token {
            request = request.bearer_auth(token);
        }
        let answer = request
            .send()
            .await
            .map_err(|error| self.unanswered(error))?;

        let status = answer.status();
        if !status.is_success() {
            return Err(self.refusal(status, &excerpt(answer).await));
        }
        // ntfy answers with the message it published. One whose answer cannot be read was
        // published all the same.
        let provider_id = answer
            .json::<Published>()
            .await
            .ok()
            .map(|published| published.id);
        Ok(Delivered {
            provider_id,
            provider: None,
        })
    }
}

/// A message in ntfy's JSON publishing form.
#[derive(Serialize)]
struct Publish<'a> {
    topic: &'a str,
    title: String,
    message: String,
    priority: u8,
    tags: &'static [&'static str],
    click: &'a str,
    /// ntfy takes at most three.
    actions: [Action<'a>; 2],
}

/// A button on the notification.
#[derive(Serialize)]
#[serde(tag = "action", rename_all = "lowercase")]
enum Action<'a> {
    /// The phone sends the request itself, and clears the notification if it succeeds.
    Http {
        label: &'static str,
        url: &'a str,
        method: &'static str,
        clear: bool,
    },
    /// The phone opens the URL.
    View { label: &'static str, url: &'a str },
}

/// The part of ntfy's answer that Klaxon keeps.
#[derive(Deserialize)]
struct Published {
    id: String,
}

impl<'a> Publish<'a> {
    /// The publish of `message` to `topic`; `None` for a message without items.
    fn of(topic: &'a str, message: &'a Outgoing) -> Option<Self> {
        let first = message.items.first()?;
        let severity = message.severity();
        let (title, body, acknowledge, open) = if message.is_digest() {
            (
                format!(
                    "{} incidents (most severe: {})",
                    message.items.len(),
                    severity.as_str()
                ),
                digest_body(&message.items),
                "Acknowledge first",
                "Open first",
            )
        } else {
            (
                format!("[{}] {}", shout(severity), first.incident.title),
                format!(
                    "{}\nEscalation level {}",
                    first.incident.title, first.escalation_level
                ),
                "Acknowledge",
                "Open incident",
            )
        };
        Some(Self {
            topic,
            title,
            message: body,
            priority: priority(severity),
            tags: tags(severity),
            click: &first.links.incident,
            actions: [
                Action::Http {
                    label: acknowledge,
                    url: &first.links.acknowledge,
                    method: "POST",
                    clear: true,
                },
                Action::View {
                    label: open,
                    url: &first.links.incident,
                },
            ],
        })
    }
}

/// ntfy's priority for a severity: 5 (max) sounds through Do Not Disturb on Android.
fn priority(severity: Severity) -> u8 {
    match severity {
        Severity::Critical => 5,
        Severity::Error => 4,
        Severity::Warning => 3,
        Severity::Info => 2,
    }
}

/// An emoji (ntfy shows a tag that names one as the emoji, before the title) and the severity.
fn tags(severity: Severity) -> &'static [&'static str] {
    match severity {
        Severity::Critical => &["rotating_light", "critical"],
        Severity::Error => &["red_circle", "error"],
        // `warning` is itself ntfy's name for ⚠️.
        Severity::Warning => &["warning"],
        Severity::Info => &["information_source", "info"],
    }
}

fn shout(severity: Severity) -> String {
    severity.as_str().to_uppercase()
}

/// A line per incident, at most [`MAX_DIGEST_LINES`] and within [`MAX_MESSAGE_BYTES`], then one
/// that counts the rest.
fn digest_body(items: &[Item]) -> String {
    let mut lines = Vec::new();
    let mut bytes = 0;
    for item in items.iter().take(MAX_DIGEST_LINES) {
        let line = format!(
            "[{}] {} · level {}",
            shout(item.incident.severity),
            item.incident.title,
            item.escalation_level
        );
        if bytes + line.len() + 1 > MAX_MESSAGE_BYTES - MORE_LINE_BYTES {
            break;
        }
        bytes += line.len() + 1;
        lines.push(line);
    }
    let rest = items.len() - lines.len();
    if rest > 0 {
        lines.push(format!("…and {rest} more"));
    }
    lines.join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Incident, NewEvent, Timestamp};
    use crate::notify::{Links, Person};

    fn item(title: &str, severity: Severity) -> Item {
        let incident = Incident::opened_by(&NewEvent {
            source: "test".into(),
            summary: title.into(),
            severity,
            dedup_key: None,
            payload: serde_json::Value::Null,
            actor: "test".into(),
            received_at: Timestamp::from_millis(0),
            service: None,
        });
        Item {
            incident,
            escalation_level: 1,
            links: Links {
                incident: "https://klaxon.example/i".into(),
                acknowledge: "https://klaxon.example/a".into(),
                resolve: "https://klaxon.example/r".into(),
            },
        }
    }

    fn sender(token: Option<&str>) -> Ntfy {
        Ntfy::new(PushConfig {
            ntfy_url: "https://ntfy.example".into(),
            token: token.map(str::to_owned),
        })
        .expect("the client builds")
    }

    #[test]
    fn priority_and_tags_follow_severity() {
        let expected = [
            (Severity::Critical, 5, &["rotating_light", "critical"][..]),
            (Severity::Error, 4, &["red_circle", "error"][..]),
            (Severity::Warning, 3, &["warning"][..]),
            (Severity::Info, 2, &["information_source", "info"][..]),
        ];
        for (severity, level, emoji_and_name) in expected {
            assert_eq!(priority(severity), level, "{severity:?}");
            assert_eq!(tags(severity), emoji_and_name, "{severity:?}");
        }
    }

    #[test]
    fn a_long_digest_fits_ntfy_message_limit_and_counts_the_rest() {
        let longest = "é".repeat(crate::domain::incident::MAX_TITLE_CHARS);
        let body = digest_body(&vec![item(&longest, Severity::Critical); 60]);
        assert!(body.len() <= MAX_MESSAGE_BYTES, "{} bytes", body.len());
        let lines: Vec<_> = body.lines().collect();
        let shown = lines.len() - 1;
        assert!(shown >= 1);
        assert_eq!(lines[shown], format!("…and {} more", 60 - shown));

        let short = digest_body(&vec![item("Disk full", Severity::Warning); 12]);
        assert_eq!(short.lines().count(), MAX_DIGEST_LINES + 1);
        assert!(short.ends_with("…and 2 more"), "{short}");
    }

    #[test]
    fn classes_refusals_by_status() {
        let ntfy = sender(None);
        for status in [500, 502, 503, 429, 408] {
            let status = StatusCode::from_u16(status).unwrap();
            assert!(ntfy.refusal(status, "").is_retryable(), "{status}");
        }
        for status in [400, 401, 403, 404, 413, 301, 307] {
            let status = StatusCode::from_u16(status).unwrap();
            assert!(!ntfy.refusal(status, "").is_retryable(), "{status}");
        }
        let redirect = ntfy.refusal(StatusCode::FOUND, "");
        assert!(redirect.to_string().contains("redirects are not followed"));
    }

    #[test]
    fn a_refusal_never_repeats_the_token() {
        let ntfy = sender(Some("tk_secret"));
        let echoed = r#"{"headers":{"Authorization":"Bearer tk_secret"}}"#;
        let error = ntfy.refusal(StatusCode::BAD_REQUEST, echoed).to_string();
        assert!(!error.contains("tk_secret"), "{error}");
        assert!(error.contains("Bearer <token>"), "{error}");
    }

    #[test]
    fn a_message_without_items_publishes_nothing() {
        let person = Person {
            handle: "ada".into(),
            name: "Ada".into(),
            address: "ada-pager".into(),
        };
        let empty = Outgoing::new("k".into(), Recipient::Person(person), Vec::new());
        assert!(Publish::of("ada-pager", &empty).is_none());
    }
}
