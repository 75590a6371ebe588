//! SMS and voice calls through Twilio, or any provider that copies its REST API
//! (`[[sms.providers]]`, `[[voice.providers]]`).
//!
//! A message goes out through the provider that [`Outgoing::provider`] names, counted round the
//! list, so that moving the index on fails over to the next provider. An SMS is `POST
//! {base_url}/2010-04-01/Accounts/{account_sid}/Messages.json` with `To`, `From`, `Body` and
//! `StatusCallback`; a call is `POST …/Calls.json` with `To`, `From`, `Url` (the TwiML document
//! Klaxon serves for the call, fetched with `POST`) and `StatusCallback`. Both authenticate with
//! HTTP basic auth (account sid, auth token) and ask for their receipts at
//! `{public_url}/integrations/twilio/status`.
//!
//! Twilio's REST API takes no idempotency key: a send whose answer was lost (a timeout) and that
//! is tried again can reach the phone twice. For a page, twice is better than not at all.
//!
//! One request may take [`REQUEST_TIMEOUT`], from connecting to the end of the answer. Redirects
//! are not followed: a 3xx means the `base_url` is wrong. A timeout, a failed connection, 408,
//! 429 and 5xx are worth another try; any other refusal is not. Errors name the provider and carry
//! Twilio's error code and message (`twilio-a: HTTP 400, Twilio error 21211: The 'To' number …
//! is not a valid phone number.`), never the auth token.
//!
//! Twilio signs its requests to Klaxon (receipts, inbound SMS, a call's TwiML and its key press)
//! with `X-Twilio-Signature`: [`signature`] computes it and [`verify`] checks it in constant time.
//! [`twiml`] writes the documents those requests are answered with.

use std::time::Duration;

use async_trait::async_trait;
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use hmac::{Hmac, Mac};
use reqwest::{redirect, Client, StatusCode};
use serde_json::Value;
use sha1::Sha1;

use super::webhook::with_causes;
use super::{Delivered, Item, Outgoing, Recipient, SendError, Sender};
use crate::config::TwilioProvider;

/// How long one request to a provider may take, from connecting to the last byte of the answer.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// The version of Twilio's REST API: the first segment of its paths.
pub const API_VERSION: &str = "2010-04-01";
/// Where, under `public_url`, providers post the receipts of messages and calls.
pub const STATUS_CALLBACK_PATH: &str = "/integrations/twilio/status";
/// The header that carries a provider's signature of its request to Klaxon.
pub const SIGNATURE_HEADER: &str = "x-twilio-signature";
/// The most characters an SMS body has: what one segment holds in GSM-7 (characters outside
/// GSM-7, `…` among them, shrink a segment to 70).
pub const MAX_SMS_CHARS: usize = 160;
/// The most characters of a refusal's body kept in the error, when it is not Twilio's error JSON.
const MAX_ANSWER_EXCERPT_CHARS: usize = 200;

/// What a [`Twilio`] sender creates at the provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TwilioKind {
    Sms,
    Voice,
}

impl TwilioKind {
    /// The REST resource a send creates.
    fn resource(self) -> &'static str {
        match self {
            Self::Sms => "Messages",
            Self::Voice => "Calls",
        }
    }

    fn channel(self) -> &'static str {
        match self {
            Self::Sms => "SMS",
            Self::Voice => "voice",
        }
    }
}

/// Sends SMS or places calls through Twilio-compatible providers, over one HTTP client.
pub struct Twilio {
    kind: TwilioKind,
    providers: Vec<TwilioProvider>,
    client: Client,
    /// `{public_url}/integrations/twilio/status`, the `StatusCallback` of every send.
    status_callback: String,
    timeout: Duration,
}

impl Twilio {
    /// A sender whose requests may take [`REQUEST_TIMEOUT`].
    pub fn new(
        kind: TwilioKind,
        providers: Vec<TwilioProvider>,
        public_url: &str,
    ) -> Result<Self, reqwest::Error> {
        Self::with_timeout(kind, providers, public_url, REQUEST_TIMEOUT)
    }

    /// A sender whose requests may take `timeout` instead of [`REQUEST_TIMEOUT`].
    pub fn with_timeout(
        kind: TwilioKind,
        providers: Vec<TwilioProvider>,
        public_url: &str,
        timeout: Duration,
    ) -> Result<Self, reqwest::Error> {
        let client = Client::builder()
            .timeout(timeout)
            .redirect(redirect::Policy::none())
            .user_agent(concat!("klaxon/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Self {
            kind,
            providers,
            client,
            status_callback: format!("{}{STATUS_CALLBACK_PATH}", public_url.trim_end_matches('/')),
            timeout,
        })
    }

    /// The form fields that create `message` for `to` at `provider`.
    fn form(
        &self,
        provider: &TwilioProvider,
        to: &str,
        message: &Outgoing,
    ) -> Result<Vec<(&'static str, String)>, SendError> {
        let mut form = vec![("To", to.to_owned()), ("From", provider.from.clone())];
        match self.kind {
            TwilioKind::Sms => form.push(("Body", sms_body(message))),
            TwilioKind::Voice => {
                let url = message.twiml_url.clone().ok_or_else(|| {
                    SendError::Fatal("a call needs the URL of its TwiML document".into())
                })?;
                form.extend([
                    ("Url", url),
                    ("Method", "POST".into()),
                    ("StatusCallbackMethod", "POST".into()),
                ]);
            }
        }
        form.push(("StatusCallback", self.status_callback.clone()));
        Ok(form)
    }

    /// What a request that got no whole answer means: worth another try, unless the request
    /// itself could not be built (a `base_url` that does not parse).
    fn unanswered(&self, provider: &str, error: reqwest::Error) -> SendError {
        if error.is_builder() {
            SendError::Fatal(format!(
                "{provider}: cannot build the request: {}",
                with_causes(&error)
            ))
        } else if error.is_timeout() {
            SendError::Retryable(format!("{provider}: no answer within {:?}", self.timeout))
        } else {
            SendError::Retryable(format!("{provider}: {}", with_causes(&error)))
        }
    }
}

#[async_trait]
impl Sender for Twilio {
    async fn send(&self, message: &Outgoing) -> Result<Delivered, SendError> {
        let channel = self.kind.channel();
        let Recipient::Person(person) = &message.recipient else {
            return Err(SendError::Fatal(format!(
                "{channel} goes to people, not to webhooks"
            )));
        };
        if self.providers.is_empty() {
            return Err(SendError::Fatal(format!(
                "no {channel} provider is configured"
            )));
        }
        let provider = &self.providers[message.provider % self.providers.len()];
        let form = self.form(provider, &person.address, message)?;
        let url = format!(
            "{}/{API_VERSION}/Accounts/{}/{}.json",
            provider.base_url,
            provider.account_sid,
            self.kind.resource()
        );
        let answer = self
            .client
            .post(url)
            .basic_auth(&provider.account_sid, Some(&provider.auth_token))
            .form(&form)
            .send()
            .await
            .map_err(|error| self.unanswered(&provider.name, error))?;
        let status = answer.status();
        let body = answer
            .bytes()
            .await
            .map_err(|error| self.unanswered(&provider.name, error))?;
        let sid = outcome(&provider.name, status, &body)?;
        Ok(Delivered {
            provider_id: Some(sid),
            provider: Some(provider.name.clone()),
        })
    }

    fn providers(&self) -> Vec<String> {
        self.providers
            .iter()
            .map(|provider| provider.name.clone())
            .collect()
    }
}

/// The sid of what `provider` created, from its answer, or why it refused, classed by `status`.
fn outcome(provider: &str, status: StatusCode, body: &[u8]) -> Result<String, SendError> {
    let json: Option<Value> = serde_json::from_slice(body).ok();
    let field = |name: &str| json.as_ref().and_then(|json| json.get(name));
    let code = status.as_u16();
    if status.is_success() {
        // An answer without a sid is not Twilio's: a `base_url` that points elsewhere would
        // otherwise swallow every page.
        return match field("sid").and_then(Value::as_str) {
            Some(sid) => Ok(sid.to_owned()),
            None => Err(SendError::Fatal(format!(
                "{provider}: HTTP {code} without a sid: is base_url a Twilio-compatible API?"
            ))),
        };
    }
    let twilio_code = field("code").and_then(|code| match code {
        Value::Number(number) => Some(number.to_string()),
        Value::String(text) => Some(text.clone()),
        _ => None,
    });
    let twilio_message = field("message").and_then(Value::as_str);
    let mut text = format!("{provider}: HTTP {code}");
    match (twilio_code, twilio_message) {
        (Some(code), Some(message)) => text += &format!(", Twilio error {code}: {message}"),
        (Some(code), None) => text += &format!(", Twilio error {code}"),
        (None, Some(message)) => text += &format!(": {message}"),
        (None, None) => {
            let body = String::from_utf8_lossy(body);
            let excerpt: String = body.trim().chars().take(MAX_ANSWER_EXCERPT_CHARS).collect();
            if !excerpt.is_empty() {
                text += &format!(": {excerpt}");
            }
        }
    }
    if status.is_server_error()
        || status == StatusCode::TOO_MANY_REQUESTS
        || status == StatusCode::REQUEST_TIMEOUT
    {
        Err(SendError::Retryable(text))
    } else if status.is_redirection() {
        Err(SendError::Fatal(format!(
            "{text} (redirects are not followed: check base_url)"
        )))
    } else {
        Err(SendError::Fatal(text))
    }
}

/// The text of an SMS: severity, the title of the most severe incident and how to reply, in at
/// most [`MAX_SMS_CHARS`] characters. The title is cut to make room; the reply instructions are
/// not (a reply code too long to leave room for them would be, but codes are a few digits).
/// Without a reply code the message says only what happened.
///
/// One incident: `[CRITICAL] Payment API returns 500 - Reply ACK 4821 to acknowledge, RESOLVE
/// 4821 to resolve`. A digest: `[CRITICAL] 3 incidents, incl. Payment API returns 500 - Reply
/// ACK 4821 to acknowledge all, RESOLVE 4821 to resolve all`.
pub fn sms_body(message: &Outgoing) -> String {
    let severity = message.severity().as_str().to_uppercase();
    let digest = message.is_digest();
    let head = if digest {
        format!("[{severity}] {} incidents, incl. ", message.items.len())
    } else {
        format!("[{severity}] ")
    };
    let replies = match &message.reply_code {
        None => String::new(),
        Some(code) if digest => {
            format!(" - Reply ACK {code} to acknowledge all, RESOLVE {code} to resolve all")
        }
        Some(code) => format!(" - Reply ACK {code} to acknowledge, RESOLVE {code} to resolve"),
    };
    let title = headline(&message.items)
        .map(|item| one_line(&item.incident.title))
        .unwrap_or_default();
    let room = MAX_SMS_CHARS.saturating_sub(head.chars().count() + replies.chars().count());
    cut(
        &format!("{head}{}{replies}", cut(&title, room)),
        MAX_SMS_CHARS,
    )
}

/// The item a message leads with: the first of the most severe.
fn headline(items: &[Item]) -> Option<&Item> {
    items.iter().min_by_key(|item| item.incident.severity)
}

/// `text` on one line: control characters and line breaks become spaces (titles are user input).
fn one_line(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_control() || c.is_whitespace() {
                ' '
            } else {
                c
            }
        })
        .collect::<String>()
        .trim()
        .to_owned()
}

/// `text` in at most `max` characters, its end replaced by `…` when cut.
fn cut(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_owned();
    }
    let Some(kept) = max.checked_sub(1) else {
        return String::new();
    };
    let start: String = text.chars().take(kept).collect();
    format!("{}…", start.trim_end())
}

/// The `X-Twilio-Signature` of a request to `url` (with its query string) carrying the form
/// `params`: the base64 HMAC-SHA1, under the provider's auth token, of the URL followed by each
/// parameter's name and value, sorted by name.
pub fn signature(auth_token: &str, url: &str, params: &[(String, String)]) -> String {
    BASE64.encode(signing_mac(auth_token, url, params).finalize().into_bytes())
}

/// Whether `header` is the `X-Twilio-Signature` of the request, compared in constant time.
pub fn verify(auth_token: &str, url: &str, params: &[(String, String)], header: &str) -> bool {
    let Ok(claimed) = BASE64.decode(header.trim()) else {
        return false;
    };
    signing_mac(auth_token, url, params)
        .verify_slice(&claimed)
        .is_ok()
}

fn signing_mac(auth_token: &str, url: &str, params: &[(String, String)]) -> Hmac<Sha1> {
    let mut mac =
        Hmac::<Sha1>::new_from_slice(auth_token.as_bytes()).expect("HMAC takes keys of any length");
    mac.update(url.as_bytes());
    let mut sorted: Vec<_> = params.iter().collect();
    sorted.sort();
    for (name, value) in sorted {
        mac.update(name.as_bytes());
        mac.update(value.as_bytes());
    }
    mac
}

/// TwiML, the XML a provider asks for when a call connects or a key is pressed, and takes as the
/// answer to an inbound SMS. Every function returns a whole document; all text is escaped.
pub mod twiml {
    use super::{headline, one_line, Item};

    /// The key a callee presses to acknowledge.
    pub const ACKNOWLEDGE_DIGIT: &str = "1";
    /// The key a callee presses to resolve.
    pub const RESOLVE_DIGIT: &str = "2";
    /// How long, in seconds, a call waits for a key before it says goodbye.
    const GATHER_TIMEOUT_SECS: u32 = 10;
    const DECLARATION: &str = r#"<?xml version="1.0" encoding="UTF-8"?>"#;

    /// A call: says `intro` and how to answer, and posts the key pressed to `gather_action`.
    pub fn call(intro: &str, gather_action: &str) -> String {
        format!(
            "{DECLARATION}<Response>\
             <Gather input=\"dtmf\" numDigits=\"1\" timeout=\"{GATHER_TIMEOUT_SECS}\" \
             action=\"{}\" method=\"POST\"><Say>{} Press {ACKNOWLEDGE_DIGIT} to acknowledge. \
             Press {RESOLVE_DIGIT} to resolve.</Say></Gather>\
             <Say>We did not get your answer. Goodbye.</Say></Response>",
            escape(gather_action),
            escape(intro),
        )
    }

    /// Says `text`, then hangs up.
    pub fn say(text: &str) -> String {
        format!(
            "{DECLARATION}<Response><Say>{}</Say></Response>",
            escape(text)
        )
    }

    /// Answers an inbound SMS with `text`.
    pub fn message(text: &str) -> String {
        format!(
            "{DECLARATION}<Response><Message>{}</Message></Response>",
            escape(text)
        )
    }

    /// Does nothing: the answer to a request that needs none.
    pub fn empty() -> String {
        format!("{DECLARATION}<Response/>")
    }

    /// What a call about `items` says first: `This is Klaxon. Critical incident: Payment API
    /// returns 500.`, or for several `This is Klaxon. 3 incidents, the most severe critical:
    /// Payment API returns 500.`
    pub fn call_intro(items: &[Item]) -> String {
        let Some(item) = headline(items) else {
            return "This is Klaxon.".into();
        };
        let severity = item.incident.severity.as_str();
        let title = sentence(&item.incident.title);
        match items.len() {
            1 => {
                let (first, rest) = severity.split_at(1);
                let first = first.to_ascii_uppercase();
                format!("This is Klaxon. {first}{rest} incident: {title}")
            }
            count => {
                format!("This is Klaxon. {count} incidents, the most severe {severity}: {title}")
            }
        }
    }

    /// A title said as a sentence: on one line, ending with a full stop.
    fn sentence(title: &str) -> String {
        let title = one_line(title);
        if title.ends_with(['.', '!', '?']) {
            title
        } else {
            format!("{title}.")
        }
    }

    /// `text` safe in XML text and in a double-quoted attribute. XML 1.0 forbids most control
    /// characters outright: they become spaces.
    fn escape(text: &str) -> String {
        let mut escaped = String::with_capacity(text.len());
        for c in text.chars() {
            match c {
                '&' => escaped.push_str("&amp;"),
                '<' => escaped.push_str("&lt;"),
                '>' => escaped.push_str("&gt;"),
                '"' => escaped.push_str("&quot;"),
                '\'' => escaped.push_str("&apos;"),
                c if c.is_control() => escaped.push(' '),
                c => escaped.push(c),
            }
        }
        escaped
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Incident, IncidentStatus, Severity, Timestamp};
    use crate::notify::{Links, Person};

    fn item(title: &str, severity: Severity) -> Item {
        let at = Timestamp::from_millis(1_795_780_800_000);
        Item {
            incident: Incident {
                id: uuid::Uuid::now_v7(),
                title: title.to_owned(),
                severity,
                status: IncidentStatus::Escalating,
                dedup_key: None,
                event_count: 1,
                escalation_level: 1,
                resolution_note: None,
                created_at: at,
                updated_at: at,
                acknowledged_at: None,
                resolved_at: None,
                cancelled_at: None,
                service_id: None,
            },
            escalation_level: 1,
            links: Links {
                incident: "https://klaxon.example/i".into(),
                acknowledge: "https://klaxon.example/a".into(),
                resolve: "https://klaxon.example/r".into(),
            },
        }
    }

    fn sms(items: Vec<Item>, reply_code: Option<&str>) -> Outgoing {
        let person = Person {
            handle: "ada".into(),
            name: "Ada".into(),
            address: "+14155550100".into(),
        };
        let mut message = Outgoing::new("k".into(), Recipient::Person(person), items);
        message.reply_code = reply_code.map(str::to_owned);
        message
    }

    fn params(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(name, value)| (name.to_string(), value.to_string()))
            .collect()
    }

    /// Twilio's own example (twilio.com/docs/usage/security, "Validating Signatures from
    /// Twilio"): auth token `12345`, this URL and these parameters.
    fn documented_example() -> (&'static str, Vec<(String, String)>) {
        (
            "https://mycompany.com/myapp.php?foo=1&bar=2",
            params(&[
                ("CallSid", "CA1234567890ABCDE"),
                ("Caller", "+14158675309"),
                ("Digits", "1234"),
                ("From", "+14158675309"),
                ("To", "+18005551212"),
            ]),
        )
    }

    #[test]
    fn signs_twilios_documented_example() {
        let (url, mut params) = documented_example();
        params.reverse();
        assert_eq!(
            signature("12345", url, &params),
            "RSOYDt4T1cUTdK1PDd93/VVr8B8="
        );
        assert!(verify(
            "12345",
            url,
            &params,
            "RSOYDt4T1cUTdK1PDd93/VVr8B8="
        ));
    }

    #[test]
    fn a_changed_url_field_or_token_does_not_verify() {
        let (url, params) = documented_example();
        let header = "RSOYDt4T1cUTdK1PDd93/VVr8B8=";
        let mut changed = params.clone();
        changed[2].1 = "2".into();
        assert!(!verify("12345", url, &changed, header));
        assert!(!verify(
            "12345",
            "https://mycompany.com/myapp.php?foo=1&bar=3",
            &params,
            header
        ));
        assert!(!verify("54321", url, &params, header));
        assert!(!verify("12345", url, &params, "not base64!"));
        assert!(!verify("12345", url, &params, ""));
    }

    #[test]
    fn signs_parameters_sorted_by_name_then_value() {
        let url = "https://klaxon.example/integrations/twilio/sms";
        let one = params(&[("B", "1"), ("A", "2"), ("A", "1")]);
        let other = params(&[("A", "1"), ("A", "2"), ("B", "1")]);
        assert_eq!(signature("t", url, &one), signature("t", url, &other));
        assert_eq!(
            signature("t", url, &one),
            signature("t", &format!("{url}A1A2B1"), &[])
        );
    }

    #[test]
    fn classes_refusals_by_status() {
        for status in [500, 502, 503, 429, 408] {
            let status = StatusCode::from_u16(status).unwrap();
            let outcome = outcome("twilio-a", status, b"");
            assert!(outcome.unwrap_err().is_retryable(), "{status}");
        }
        for status in [400, 401, 403, 404, 301] {
            let status = StatusCode::from_u16(status).unwrap();
            let outcome = outcome("twilio-a", status, b"");
            assert!(!outcome.unwrap_err().is_retryable(), "{status}");
        }
    }

    #[test]
    fn a_refusal_carries_twilios_code_and_message() {
        let body = br#"{"code": 21211, "message": "The 'To' number +15005550001 is not a valid phone number.", "more_info": "https://www.twilio.com/docs/errors/21211", "status": 400}"#;
        assert_eq!(
            outcome("twilio-a", StatusCode::BAD_REQUEST, body),
            Err(SendError::Fatal(
                "twilio-a: HTTP 400, Twilio error 21211: \
                 The 'To' number +15005550001 is not a valid phone number."
                    .into()
            ))
        );
        assert_eq!(
            outcome(
                "twilio-a",
                StatusCode::BAD_GATEWAY,
                b"  <html>bad gateway</html>\n"
            ),
            Err(SendError::Retryable(
                "twilio-a: HTTP 502: <html>bad gateway</html>".into()
            ))
        );
    }

    #[test]
    fn an_answer_without_a_sid_is_not_delivered() {
        let created = br#"{"sid": "SM0123456789abcdef0123456789abcdef", "status": "queued"}"#;
        assert_eq!(
            outcome("twilio-a", StatusCode::CREATED, created),
            Ok("SM0123456789abcdef0123456789abcdef".into())
        );
        let error = outcome("twilio-a", StatusCode::OK, b"<html>welcome</html>").unwrap_err();
        assert!(!error.is_retryable());
        assert!(error.to_string().contains("without a sid"), "{error}");
    }

    #[test]
    fn an_sms_says_severity_title_and_how_to_reply() {
        let message = sms(
            vec![item("Payment API returns 500", Severity::Critical)],
            Some("4821"),
        );
        assert_eq!(
            sms_body(&message),
            "[CRITICAL] Payment API returns 500 - Reply ACK 4821 to acknowledge, \
             RESOLVE 4821 to resolve"
        );
        let message = sms(vec![item("Disk full", Severity::Warning)], None);
        assert_eq!(sms_body(&message), "[WARNING] Disk full");
    }

    #[test]
    fn a_long_title_is_cut_and_the_reply_instructions_are_not() {
        let replies = " - Reply ACK 4821 to acknowledge, RESOLVE 4821 to resolve";
        for title in ["x".repeat(200), "é".repeat(200), "🚨".repeat(200)] {
            let body = sms_body(&sms(vec![item(&title, Severity::Error)], Some("4821")));
            assert_eq!(body.chars().count(), MAX_SMS_CHARS, "{body}");
            assert!(body.starts_with("[ERROR] "), "{body}");
            assert!(body.ends_with(&format!("…{replies}")), "{body}");
        }
        let fits = "y".repeat(MAX_SMS_CHARS - "[ERROR] ".len() - replies.len());
        let body = sms_body(&sms(vec![item(&fits, Severity::Error)], Some("4821")));
        assert_eq!(body, format!("[ERROR] {fits}{replies}"));
    }

    #[test]
    fn control_characters_in_a_title_become_spaces() {
        let message = sms(vec![item("Disk\tfull\r on\u{7}db1", Severity::Info)], None);
        assert_eq!(sms_body(&message), "[INFO] Disk full  on db1");
    }

    #[test]
    fn a_digest_counts_its_incidents_and_leads_with_the_most_severe() {
        let mut items = vec![
            item("Disk full", Severity::Warning),
            item("Database down", Severity::Critical),
            item("Queue backlog", Severity::Critical),
        ];
        let body = sms_body(&sms(items.clone(), Some("77")));
        assert_eq!(
            body,
            "[CRITICAL] 3 incidents, incl. Database down - Reply ACK 77 to acknowledge all, \
             RESOLVE 77 to resolve all"
        );
        items[1].incident.title = "z".repeat(200);
        let body = sms_body(&sms(items, Some("77")));
        assert_eq!(body.chars().count(), MAX_SMS_CHARS);
        assert!(
            body.contains("zzz… - Reply ACK 77 to acknowledge all"),
            "{body}"
        );
    }

    #[test]
    fn an_sms_never_passes_the_limit() {
        let message = sms(
            vec![item("Disk full", Severity::Warning)],
            Some(&"9".repeat(200)),
        );
        assert_eq!(sms_body(&message).chars().count(), MAX_SMS_CHARS);
    }

    #[test]
    fn twiml_escapes_text_and_attributes() {
        let call = twiml::call(
            "Latency > 2s on <api> & \"workers\"\u{1}",
            "https://klaxon.example/integrations/twilio/gather?n=1&sig=a\"b",
        );
        assert_eq!(
            call,
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Response>\
             <Gather input=\"dtmf\" numDigits=\"1\" timeout=\"10\" \
             action=\"https://klaxon.example/integrations/twilio/gather?n=1&amp;sig=a&quot;b\" \
             method=\"POST\"><Say>Latency &gt; 2s on &lt;api&gt; &amp; &quot;workers&quot;  \
             Press 1 to acknowledge. Press 2 to resolve.</Say></Gather>\
             <Say>We did not get your answer. Goodbye.</Say></Response>"
        );
        assert_eq!(
            twiml::say("Acknowledged: it's <done>."),
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Response>\
             <Say>Acknowledged: it&apos;s &lt;done&gt;.</Say></Response>"
        );
        assert_eq!(
            twiml::message("R&D"),
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Response>\
             <Message>R&amp;D</Message></Response>"
        );
        assert_eq!(
            twiml::empty(),
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Response/>"
        );
    }

    #[test]
    fn a_call_introduces_the_most_severe_incident() {
        let one = [item("Payment API returns 500", Severity::Critical)];
        assert_eq!(
            twiml::call_intro(&one),
            "This is Klaxon. Critical incident: Payment API returns 500."
        );
        let several = [
            item("Disk full", Severity::Warning),
            item("Is the database down?", Severity::Error),
            item("Queue\nbacklog", Severity::Error),
        ];
        assert_eq!(
            twiml::call_intro(&several),
            "This is Klaxon. 3 incidents, the most severe error: Is the database down?"
        );
    }
}
