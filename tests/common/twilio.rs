//! `FakeTwilio`: a Twilio-compatible REST API for the tests, on 127.0.0.1:0, one per provider
//! account so that one can fail while another works.
//!
//! It takes `POST /2010-04-01/Accounts/{sid}/Messages.json` and `…/Calls.json`, checks each
//! request as Twilio documents it and refuses it with Twilio's error JSON the ways Twilio does
//! (20003 for bad credentials, 20404 for another account, 21211 for a bad `To`, the magic
//! invalid number [`INVALID_NUMBER`] included, 21602/21617 for a missing or too long `Body`,
//! 21205 for a bad `Url`, 21609 for a bad `StatusCallback`). It records every request, accepted
//! or not, and can fail ([`FakeTwilio::fail_next`]) or stall ([`FakeTwilio::stall`]) on purpose.
//!
//! It drives Klaxon as Twilio does: receipts, inbound SMS and answered calls, each signed with
//! `X-Twilio-Signature` by its own implementation of Twilio's algorithm ([`sign`]), not Klaxon's,
//! so that each checks the other.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::body::Body;
use axum::http::{Method, Request, Response};
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use hmac::{Hmac, Mac};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use klaxon::config::TwilioProvider;
use reqwest::Url;
use serde_json::{json, Value};
use sha1::Sha1;
use tokio::net::TcpListener;

/// How long a stalling fake sleeps before answering.
pub const STALL: Duration = Duration::from_secs(30);
/// Twilio's test number that is never a valid `To`.
pub const INVALID_NUMBER: &str = "+15005550001";
/// The version segment of Twilio's paths, and the `ApiVersion` of its requests.
const API_VERSION: &str = "2010-04-01";
/// The longest SMS body Twilio takes.
const MAX_BODY_CHARS: usize = 1600;
/// How long the fake waits for Klaxon's answer to a request it sends.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(10);

/// What a request created, or tried to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resource {
    Message,
    Call,
}

/// One request to the fake's REST API, as it arrived and as it was answered.
#[derive(Debug, Clone)]
pub struct TwilioRequest {
    pub method: String,
    pub path: String,
    /// `None` when the path names no resource.
    pub kind: Option<Resource>,
    pub content_type: Option<String>,
    pub authorization: Option<String>,
    /// The form fields, in the order they came (none unless form-encoded).
    pub fields: Vec<(String, String)>,
    /// The status the fake answered.
    pub status: u16,
    /// The sid of what it created (`SM…`, `CA…`), when it did.
    pub sid: Option<String>,
}

impl TwilioRequest {
    pub fn field(&self, name: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(field, _)| field == name)
            .map(|(_, value)| value.as_str())
    }
}

#[derive(Default)]
struct State {
    requests: Vec<TwilioRequest>,
    /// The statuses of the next answers, in order; the checks decide once they run out.
    failures: VecDeque<u16>,
    stalling: bool,
}

/// How a request the fake sends to Klaxon is signed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Signing {
    Genuine,
    /// Under another auth token.
    Forged,
    Unsigned,
}

/// A Twilio-compatible API for one account on 127.0.0.1:0.
pub struct FakeTwilio {
    /// `http://127.0.0.1:<port>`: a provider's `base_url`.
    pub base_url: String,
    pub account_sid: String,
    pub auth_token: String,
    state: Arc<Mutex<State>>,
    client: reqwest::Client,
}

impl FakeTwilio {
    pub async fn start(account_sid: &str, auth_token: &str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(Mutex::new(State::default()));
        let account = Arc::new((account_sid.to_owned(), auth_token.to_owned()));
        let shared = state.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (state, account) = (shared.clone(), account.clone());
                let service = hyper::service::service_fn(move |request| {
                    answer(state.clone(), account.clone(), request)
                });
                tokio::spawn(
                    hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service),
                );
            }
        });
        Self {
            base_url: format!("http://{addr}"),
            account_sid: account_sid.to_owned(),
            auth_token: auth_token.to_owned(),
            state,
            client: reqwest::Client::builder()
                .timeout(CLIENT_TIMEOUT)
                .redirect(reqwest::redirect::Policy::none())
                .user_agent("TwilioProxy/1.1")
                .build()
                .unwrap(),
        }
    }

    /// The configuration of a provider named `name` that sends from `from` through this account.
    pub fn provider(&self, name: &str, from: &str) -> TwilioProvider {
        TwilioProvider {
            name: name.to_owned(),
            base_url: self.base_url.clone(),
            account_sid: self.account_sid.clone(),
            auth_token: self.auth_token.clone(),
            from: from.to_owned(),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Answers `status` (500, 429, 503 …, with Twilio's error JSON) to the next `times`
    /// requests, whatever they hold.
    pub fn fail_next(&self, status: u16, times: usize) {
        self.state()
            .failures
            .extend(std::iter::repeat_n(status, times));
    }

    /// While `on`, answers each request only after [`STALL`].
    pub fn stall(&self, on: bool) {
        self.state().stalling = on;
    }

    pub fn requests(&self) -> Vec<TwilioRequest> {
        self.state().requests.clone()
    }

    /// The accepted request that created `sid`.
    fn created(&self, sid: &str) -> TwilioRequest {
        self.requests()
            .into_iter()
            .find(|request| request.sid.as_deref() == Some(sid))
            .unwrap_or_else(|| panic!("the fake created no {sid}"))
    }

    /// Posts the receipt of `sid` in `status` (`sent`, `delivered`, `undelivered`, `failed`; for
    /// a call `ringing`, `in-progress`, `completed`, `busy`, `no-answer`, `failed`) to the
    /// `StatusCallback` its request named, as Twilio does. `error_code` only for messages.
    pub async fn send_status(
        &self,
        sid: &str,
        status: &str,
        error_code: Option<&str>,
    ) -> (u16, String) {
        let created = self.created(sid);
        let url = created
            .field("StatusCallback")
            .unwrap_or_else(|| panic!("{sid} was created without a StatusCallback"));
        let mut fields = vec![("AccountSid", self.account_sid.as_str())];
        match created.kind {
            Some(Resource::Message) => fields.extend([
                ("MessageSid", sid),
                ("SmsSid", sid),
                ("MessageStatus", status),
                ("SmsStatus", status),
            ]),
            _ => {
                assert!(error_code.is_none(), "call receipts carry no ErrorCode");
                fields.extend([
                    ("CallSid", sid),
                    ("CallStatus", status),
                    ("Direction", "outbound-api"),
                ]);
            }
        }
        fields.extend([
            ("To", created.field("To").unwrap_or_default()),
            ("From", created.field("From").unwrap_or_default()),
            ("ApiVersion", API_VERSION),
        ]);
        if let Some(code) = error_code {
            fields.push(("ErrorCode", code));
        }
        self.post(url, &fields, Signing::Genuine).await
    }

    /// Posts an SMS from `from` to `to` to `url`, as Twilio posts an inbound message.
    pub async fn inbound_sms(&self, url: &str, from: &str, to: &str, body: &str) -> (u16, String) {
        self.inbound(url, from, to, body, Signing::Genuine).await
    }

    /// [`Self::inbound_sms`] signed under another auth token.
    pub async fn forged_inbound_sms(
        &self,
        url: &str,
        from: &str,
        to: &str,
        body: &str,
    ) -> (u16, String) {
        self.inbound(url, from, to, body, Signing::Forged).await
    }

    /// [`Self::inbound_sms`] without `X-Twilio-Signature`.
    pub async fn unsigned_inbound_sms(
        &self,
        url: &str,
        from: &str,
        to: &str,
        body: &str,
    ) -> (u16, String) {
        self.inbound(url, from, to, body, Signing::Unsigned).await
    }

    async fn inbound(
        &self,
        url: &str,
        from: &str,
        to: &str,
        body: &str,
        signing: Signing,
    ) -> (u16, String) {
        let sid = new_sid("SM");
        let fields = [
            ("ToCountry", "US"),
            ("SmsMessageSid", &sid),
            ("NumMedia", "0"),
            ("SmsSid", &sid),
            ("SmsStatus", "received"),
            ("Body", body),
            ("To", to),
            ("NumSegments", "1"),
            ("MessageSid", &sid),
            ("AccountSid", &self.account_sid),
            ("From", from),
            ("ApiVersion", API_VERSION),
        ];
        self.post(url, &fields, signing).await
    }

    /// Answers the call `sid` and presses `digits`, as Twilio does: posts the call's fields to
    /// the `Url` its request named, requires a 200 TwiML document with a `<Gather action=…>`,
    /// then posts the same fields and `Digits` to that action. Returns the document, then the
    /// status and body of the answer to the key press.
    pub async fn answer_call(&self, sid: &str, digits: &str) -> (String, u16, String) {
        let call = self.created(sid);
        assert_eq!(call.kind, Some(Resource::Call), "{sid} is no call");
        let url = call.field("Url").expect("a call has a Url");
        assert_eq!(
            call.field("Method").unwrap_or("POST"),
            "POST",
            "the fake fetches TwiML with POST only"
        );
        let mut fields = vec![
            ("AccountSid", self.account_sid.as_str()),
            ("CallSid", sid),
            ("From", call.field("From").unwrap_or_default()),
            ("To", call.field("To").unwrap_or_default()),
            ("CallStatus", "in-progress"),
            ("Direction", "outbound-api"),
            ("ApiVersion", API_VERSION),
        ];
        let (status, twiml) = self.post(url, &fields, Signing::Genuine).await;
        assert_eq!(status, 200, "the TwiML of {sid} at {url}: {twiml}");
        assert!(
            twiml.starts_with("<?xml"),
            "the TwiML of {sid} is no XML document: {twiml}"
        );
        let gather = element(&twiml, "Gather")
            .unwrap_or_else(|| panic!("the TwiML of {sid} has no <Gather>: {twiml}"));
        assert_eq!(
            attribute(gather, "method").as_deref().unwrap_or("POST"),
            "POST",
            "the fake posts key presses only"
        );
        let action = attribute(gather, "action")
            .unwrap_or_else(|| panic!("the <Gather> of {sid} has no action: {twiml}"));
        // Twilio resolves a relative action against the document's URL.
        let action = Url::parse(url)
            .and_then(|base| base.join(&action))
            .unwrap_or_else(|error| panic!("the action {action:?} is no URL: {error}"))
            .to_string();
        fields.extend([("Digits", digits), ("FinishedOnKey", "")]);
        let (status, answer) = self.post(&action, &fields, Signing::Genuine).await;
        (twiml, status, answer)
    }

    /// Posts `fields` to `url` as Twilio posts to an application, signed as `signing` says.
    async fn post(&self, url: &str, fields: &[(&str, &str)], signing: Signing) -> (u16, String) {
        let owned: Vec<(String, String)> = fields
            .iter()
            .map(|(name, value)| (name.to_string(), value.to_string()))
            .collect();
        let mut request = self
            .client
            .post(url)
            .header(
                "i-twilio-idempotency-token",
                uuid::Uuid::now_v7().to_string(),
            )
            .form(&owned);
        match signing {
            Signing::Genuine => {
                request = request.header("x-twilio-signature", sign(&self.auth_token, url, &owned))
            }
            Signing::Forged => {
                let forged = format!("{}-forged", self.auth_token);
                request = request.header("x-twilio-signature", sign(&forged, url, &owned))
            }
            Signing::Unsigned => {}
        }
        let answer = request
            .send()
            .await
            .unwrap_or_else(|error| panic!("POST {url}: {error}"));
        let status = answer.status().as_u16();
        (status, answer.text().await.unwrap_or_default())
    }
}

/// Twilio's `X-Twilio-Signature` of a request to `url` with the form `fields`, written here
/// from Twilio's documentation: the URL, then each field's name and value sorted by name,
/// concatenated; HMAC-SHA1 under the auth token; base64.
pub fn sign(auth_token: &str, url: &str, fields: &[(String, String)]) -> String {
    let mut sorted = fields.to_vec();
    sorted.sort();
    let mut data = url.to_owned();
    for (name, value) in sorted {
        data.push_str(&name);
        data.push_str(&value);
    }
    let mut mac = Hmac::<Sha1>::new_from_slice(auth_token.as_bytes()).unwrap();
    mac.update(data.as_bytes());
    BASE64.encode(mac.finalize().into_bytes())
}

/// Why the fake refuses a request: HTTP status, Twilio's error code and message.
struct Refusal {
    status: u16,
    code: Option<u32>,
    message: String,
}

fn refuse(status: u16, code: u32, message: impl Into<String>) -> Refusal {
    Refusal {
        status,
        code: Some(code),
        message: message.into(),
    }
}

/// The error Twilio answers with `status` when it fails of its own accord.
fn failure(status: u16) -> Refusal {
    let known = match status {
        429 => Some((20429, "Too Many Requests")),
        500 => Some((20500, "Internal Server Error")),
        503 => Some((20503, "Service Unavailable")),
        _ => None,
    };
    match known {
        Some((code, message)) => refuse(status, code, message),
        None => Refusal {
            status,
            code: None,
            message: axum::http::StatusCode::from_u16(status)
                .ok()
                .and_then(|status| status.canonical_reason())
                .unwrap_or("Error")
                .to_owned(),
        },
    }
}

async fn answer(
    state: Arc<Mutex<State>>,
    account: Arc<(String, String)>,
    request: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    let (parts, body) = request.into_parts();
    let body = axum::body::to_bytes(Body::new(body), usize::MAX)
        .await
        .unwrap_or_default();
    let header = |name: &str| {
        parts
            .headers
            .get(name)
            .and_then(|value| value.to_str().ok())
            .map(str::to_owned)
    };
    let content_type = header("content-type");
    let authorization = header("authorization");
    let form_encoded = content_type.as_deref().is_some_and(|value| {
        value
            .split(';')
            .next()
            .is_some_and(|mime| mime.trim() == "application/x-www-form-urlencoded")
    });
    let fields: Vec<(String, String)> = if form_encoded {
        form_urlencoded::parse(&body).into_owned().collect()
    } else {
        Vec::new()
    };
    let path = parts.uri.path().to_owned();

    let (forced, stalling) = {
        let mut state = state.lock().unwrap_or_else(PoisonError::into_inner);
        (state.failures.pop_front(), state.stalling)
    };
    if stalling {
        tokio::time::sleep(STALL).await;
    }
    let (sid_of_account, token) = &*account;
    let verdict = match forced {
        Some(status) => Err(failure(status)),
        None => check(
            (sid_of_account, token),
            &parts.method,
            &path,
            authorization.as_deref(),
            &fields,
        ),
    };
    let (status, json, sid) = match verdict {
        Ok(kind) => {
            let sid = new_sid(match kind {
                Resource::Message => "SM",
                Resource::Call => "CA",
            });
            (201, created(sid_of_account, kind, &sid, &fields), Some(sid))
        }
        Err(refusal) => {
            let mut json = json!({
                "message": refusal.message,
                "status": refusal.status,
            });
            if let Some(code) = refusal.code {
                json["code"] = json!(code);
                json["more_info"] = json!(format!("https://www.twilio.com/docs/errors/{code}"));
            }
            (refusal.status, json, None)
        }
    };
    state
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .requests
        .push(TwilioRequest {
            method: parts.method.to_string(),
            kind: route(&path).1,
            path,
            content_type,
            authorization,
            fields,
            status,
            sid,
        });
    let response = Response::builder()
        .status(status)
        .header("content-type", "application/json; charset=utf-8")
        .body(Body::from(json.to_string()))
        .expect("a valid response");
    Ok(response)
}

/// The account and the resource a path names: `/2010-04-01/Accounts/{sid}/Messages.json`.
fn route(path: &str) -> (Option<String>, Option<Resource>) {
    let Some(rest) = path.strip_prefix(&format!("/{API_VERSION}/Accounts/")) else {
        return (None, None);
    };
    let Some((account, resource)) = rest.split_once('/') else {
        return (None, None);
    };
    let kind = match resource {
        "Messages.json" => Some(Resource::Message),
        "Calls.json" => Some(Resource::Call),
        _ => None,
    };
    (Some(account.to_owned()), kind)
}

/// Twilio's checks of a request to the account `(sid, auth token)`, in Twilio's order:
/// credentials, the resource, then the fields.
fn check(
    (account_sid, auth_token): (&str, &str),
    method: &Method,
    path: &str,
    authorization: Option<&str>,
    fields: &[(String, String)],
) -> Result<Resource, Refusal> {
    let credentials = authorization
        .and_then(|value| value.strip_prefix("Basic "))
        .and_then(|encoded| BASE64.decode(encoded.trim()).ok());
    if credentials.as_deref() != Some(format!("{account_sid}:{auth_token}").as_bytes()) {
        return Err(refuse(401, 20003, "Authenticate"));
    }
    let not_found = || {
        refuse(
            404,
            20404,
            format!("The requested resource {path} was not found"),
        )
    };
    let kind = match route(path) {
        (Some(account), Some(kind)) if account == account_sid => kind,
        _ => return Err(not_found()),
    };
    if method != Method::POST {
        return Err(refuse(405, 20004, "Method not allowed"));
    }
    let field = |name: &str| {
        fields
            .iter()
            .find(|(field, _)| field == name)
            .map(|(_, value)| value.as_str())
    };
    let Some(to) = field("To").filter(|to| !to.is_empty()) else {
        return Err(refuse(400, 21604, "A 'To' phone number is required."));
    };
    let Some(from) = field("From").filter(|from| !from.is_empty()) else {
        return Err(refuse(400, 21603, "A 'From' phone number is required."));
    };
    if !is_e164(to) || to == INVALID_NUMBER {
        return Err(refuse(
            400,
            21211,
            format!("The 'To' number {to} is not a valid phone number."),
        ));
    }
    if !is_e164(from) {
        return Err(refuse(
            400,
            21212,
            format!(
                "The 'From' number {from} is not a valid phone number, shortcode, or \
                 alphanumeric sender ID."
            ),
        ));
    }
    match kind {
        Resource::Message => match field("Body") {
            None | Some("") => return Err(refuse(400, 21602, "Message body is required.")),
            Some(body) if body.chars().count() > MAX_BODY_CHARS => {
                return Err(refuse(
                    400,
                    21617,
                    "The concatenated message body exceeds the 1600 character limit.",
                ))
            }
            Some(_) => {}
        },
        Resource::Call => {
            let url = field("Url").unwrap_or_default();
            if !is_absolute_http(url) {
                return Err(refuse(400, 21205, format!("Url is not a valid URL: {url}")));
            }
        }
    }
    if let Some(callback) = field("StatusCallback") {
        if !is_absolute_http(callback) {
            return Err(refuse(
                400,
                21609,
                format!("The StatusCallback URL {callback} is not a valid URL."),
            ));
        }
    }
    Ok(kind)
}

/// The JSON Twilio answers a created message or call with.
fn created(account_sid: &str, kind: Resource, sid: &str, fields: &[(String, String)]) -> Value {
    let field = |name: &str| {
        fields
            .iter()
            .find(|(field, _)| field == name)
            .map(|(_, value)| value.clone())
    };
    let now = chrono::Utc::now().to_rfc2822();
    let (resource, mut json) = match kind {
        Resource::Message => (
            "Messages",
            json!({
                "body": field("Body"),
                "num_media": "0",
                "error_code": null,
                "error_message": null,
                "messaging_service_sid": null,
                "date_sent": null,
            }),
        ),
        Resource::Call => (
            "Calls",
            json!({
                "answered_by": null,
                "duration": null,
                "start_time": null,
                "end_time": null,
                "parent_call_sid": null,
            }),
        ),
    };
    let uri = format!("/{API_VERSION}/Accounts/{account_sid}/{resource}/{sid}.json");
    let common = json!({
        "sid": sid,
        "account_sid": account_sid,
        "api_version": API_VERSION,
        "to": field("To"),
        "from": field("From"),
        "status": "queued",
        "direction": "outbound-api",
        "date_created": now,
        "date_updated": now,
        "price": null,
        "price_unit": "USD",
        "uri": uri,
    });
    if let (Value::Object(json), Value::Object(common)) = (&mut json, common) {
        json.extend(common);
    }
    json
}

/// A sid as Twilio makes them: a two-letter prefix and 32 lowercase hex digits.
fn new_sid(prefix: &str) -> String {
    format!("{prefix}{}", uuid::Uuid::now_v7().simple())
}

/// E.164 as Twilio reads it: `+`, then 1 to 15 digits, the first not 0.
fn is_e164(number: &str) -> bool {
    number.strip_prefix('+').is_some_and(|digits| {
        (1..=15).contains(&digits.len())
            && digits.bytes().all(|digit| digit.is_ascii_digit())
            && !digits.starts_with('0')
    })
}

fn is_absolute_http(url: &str) -> bool {
    Url::parse(url)
        .is_ok_and(|url| matches!(url.scheme(), "http" | "https") && url.host_str().is_some())
}

/// The start tag of the first `<name …>` element of `xml`, without `<` and `>`.
fn element<'a>(xml: &'a str, name: &str) -> Option<&'a str> {
    let start = xml.find(&format!("<{name} "))? + 1;
    let end = start + xml[start..].find('>')?;
    Some(&xml[start..end])
}

/// The unescaped value of the double-quoted attribute `name` of a start tag.
fn attribute(tag: &str, name: &str) -> Option<String> {
    let start = tag.find(&format!(" {name}=\""))? + name.len() + 3;
    let end = start + tag[start..].find('"')?;
    Some(
        tag[start..end]
            .replace("&lt;", "<")
            .replace("&gt;", ">")
            .replace("&quot;", "\"")
            .replace("&apos;", "'")
            .replace("&#39;", "'")
            .replace("&amp;", "&"),
    )
}
