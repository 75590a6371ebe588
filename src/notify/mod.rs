//! Telling people: the channels that carry a notification out of Klaxon, and the dispatcher that
//! drains the outbox through them.
//!
//! A channel's [`Sender`] takes one [`Outgoing`] message and either hands it to its provider
//! ([`Delivered`], with the provider's id when it gives one) or says why not, classed
//! ([`SendError::Retryable`] or [`SendError::Fatal`]) so that the dispatcher knows whether to try
//! again. A sender never touches the database and never holds a transaction: the dispatcher claims
//! rows, sends without a transaction, then records the outcome.
//!
//! Every message carries an idempotency key ([`Outgoing::key`]) that stays the same when a send is
//! repeated after a crash, so that receivers can drop the duplicate: the mail's `Message-ID`, the
//! webhook's `Idempotency-Key`.

pub mod dispatcher;
pub mod email;
pub mod links;
pub mod twilio;
pub mod webhook;

use async_trait::async_trait;
use serde::Serialize;
use uuid::Uuid;

pub use dispatcher::{Channels, Dispatcher};

use crate::domain::{Incident, Severity};

/// One message to one recipient over one channel: about one incident, or, when a rate limit held
/// several back, a digest of several ([`Outgoing::items`] longer than one).
#[derive(Debug, Clone)]
pub struct Outgoing {
    /// The idempotency key: the same on every attempt to send this message.
    pub key: String,
    pub recipient: Recipient,
    /// What the message is about, oldest first; never empty.
    pub items: Vec<Item>,
    /// The notification the message is for (a digest's first): callbacks name it.
    pub notification_id: Uuid,
    /// The code a reply names (SMS and voice): "Reply ACK 4821 to acknowledge".
    pub reply_code: Option<String>,
    /// Which of the channel's providers carries this attempt, counted from 0 ([`Sender::providers`]
    /// says how many there are): failover moves to the next one.
    pub provider: usize,
    /// Voice: the signed URL of the call's TwiML document, which Klaxon serves.
    pub twiml_url: Option<String>,
}

impl Outgoing {
    /// A message under `key` with no reply code, through the channel's first provider.
    pub fn new(key: String, recipient: Recipient, items: Vec<Item>) -> Self {
        Self {
            key,
            recipient,
            notification_id: Uuid::nil(),
            items,
            reply_code: None,
            provider: 0,
            twiml_url: None,
        }
    }

    pub fn is_digest(&self) -> bool {
        self.items.len() > 1
    }

    /// The most severe incident of the message decides its urgency.
    pub fn severity(&self) -> Severity {
        self.items
            .iter()
            .map(|item| item.incident.severity)
            .min()
            .unwrap_or_default()
    }
}

/// Who a message goes to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recipient {
    /// A user, through the address the channel uses (email, phone).
    Person(Person),
    /// A webhook named in the configuration (`[webhooks.<name>]`).
    Webhook(String),
}

/// The parts of a user that messages use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Person {
    pub handle: String,
    pub name: String,
    /// Where this message goes on its channel: the contact method's email address, phone number,
    /// ntfy topic or URL.
    pub address: String,
}

/// One incident that a message tells of, at the level that reached the recipient, with the links
/// the recipient can follow.
#[derive(Debug, Clone)]
pub struct Item {
    pub incident: Incident,
    pub escalation_level: i32,
    pub links: Links,
}

/// Absolute URLs under `public_url`. The acknowledge and resolve links are signed for one
/// recipient and one incident: a `GET` shows a confirmation page, a `POST` acts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Links {
    pub incident: String,
    pub acknowledge: String,
    pub resolve: String,
}

/// A message the provider accepted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Delivered {
    /// The provider's id for the message (an SMTP queue id, a Twilio `SM…`/`CA…` sid), when it
    /// gives one.
    pub provider_id: Option<String>,
    /// The name of the provider that carried it, where a channel has several.
    pub provider: Option<String>,
}

/// Why a message was not delivered, classed by whether trying again may help.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// Timeouts, refused connections, an HTTP 5xx or 429, an SMTP 4xx: a provider that said "try
    /// later".
    #[error("{0}")]
    Retryable(String),
    /// An HTTP 4xx, an SMTP 5xx, an invalid address, a channel that is not configured: the same
    /// message will fail the same way.
    #[error("{0}")]
    Fatal(String),
}

impl SendError {
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::Retryable(_))
    }
}

/// A channel's way out: hands one message to its provider.
#[async_trait]
pub trait Sender: Send + Sync + 'static {
    async fn send(&self, message: &Outgoing) -> Result<Delivered, SendError>;

    /// The names of the providers this channel fails over between, in order; empty where the
    /// channel has one way out.
    fn providers(&self) -> Vec<String> {
        Vec::new()
    }
}

/// `text` safe in HTML text and in a quoted attribute: for the bodies of mails and the pages of
/// links, which show incident text (user input).
pub fn escape_html(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => escaped.push_str("&amp;"),
            '<' => escaped.push_str("&lt;"),
            '>' => escaped.push_str("&gt;"),
            '"' => escaped.push_str("&quot;"),
            '\'' => escaped.push_str("&#39;"),
            c => escaped.push(c),
        }
    }
    escaped
}
