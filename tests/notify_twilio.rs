//! SMS and voice against a Twilio-compatible API written for these tests: the requests as they
//! arrive, how each kind of failure is classed, the choice of provider, and the signatures of
//! the requests a provider sends back, checked by Klaxon's `verify`.

mod common;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, Response};
use base64::Engine;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use klaxon::config::TwilioProvider;
use klaxon::domain::{Incident, IncidentStatus, Severity, Timestamp};
use klaxon::notify::twilio::{self, twiml, Twilio, TwilioKind};
use klaxon::notify::{Delivered, Item, Links, Outgoing, Person, Recipient, SendError, Sender};
use tokio::net::TcpListener;

use common::twilio::{sign, FakeTwilio, Resource, INVALID_NUMBER, STALL};

const SID_A: &str = "AC0123456789abcdef0123456789abcdef";
const TOKEN_A: &str = "token-of-a";
const SID_B: &str = "ACfedcba9876543210fedcba9876543210";
const TOKEN_B: &str = "token-of-b";
const FROM: &str = "+15005550006";
const TO: &str = "+14155550100";
const PUBLIC_URL: &str = "https://klaxon.example";
/// The client timeout of the tests that make the provider stall: far below [`STALL`].
const SHORT_TIMEOUT: Duration = Duration::from_millis(300);

fn item(title: &str, severity: Severity) -> Item {
    let at = Timestamp::from_millis(1_795_780_800_000);
    let incident = Incident {
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
    };
    let id = incident.id;
    Item {
        incident,
        escalation_level: 1,
        links: Links {
            incident: format!("{PUBLIC_URL}/incidents/{id}"),
            acknowledge: format!("{PUBLIC_URL}/act/{id}/acknowledge?sig=a&exp=1"),
            resolve: format!("{PUBLIC_URL}/act/{id}/resolve?sig=r&exp=1"),
        },
    }
}

/// A message about one critical incident to `to`, with reply code 4821.
fn message_to(to: &str) -> Outgoing {
    let person = Person {
        handle: "ada".into(),
        name: "Ada Lovelace".into(),
        address: to.to_owned(),
    };
    let mut message = Outgoing::new(
        format!("notification-{}", uuid::Uuid::now_v7()),
        Recipient::Person(person),
        vec![item("Payment API returns 500", Severity::Critical)],
    );
    message.reply_code = Some("4821".into());
    message
}

/// A call to `to` whose TwiML is at `twiml_url`.
fn call_to(to: &str, twiml_url: &str) -> Outgoing {
    let mut message = message_to(to);
    message.twiml_url = Some(twiml_url.to_owned());
    message
}

fn sender(kind: TwilioKind, providers: Vec<TwilioProvider>) -> Twilio {
    Twilio::new(kind, providers, PUBLIC_URL).expect("the client builds")
}

fn sorted(fields: &[(String, String)]) -> Vec<(String, String)> {
    let mut fields = fields.to_vec();
    fields.sort();
    fields
}

fn pairs(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(name, value)| (name.to_string(), value.to_string()))
        .collect()
}

fn basic_auth(sid: &str, token: &str) -> String {
    let credentials = base64::engine::general_purpose::STANDARD.encode(format!("{sid}:{token}"));
    format!("Basic {credentials}")
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
async fn an_sms_is_posted_as_twilio_documents_it() {
    let fake = FakeTwilio::start(SID_A, TOKEN_A).await;
    let sender = sender(TwilioKind::Sms, vec![fake.provider("twilio-a", FROM)]);
    let message = message_to(TO);

    let delivered = sender.send(&message).await.expect("delivered");

    let [request] = fake.requests().try_into().expect("one request");
    assert_eq!(request.status, 201);
    assert_eq!(request.method, "POST");
    assert_eq!(
        request.path,
        format!("/2010-04-01/Accounts/{SID_A}/Messages.json")
    );
    assert_eq!(request.kind, Some(Resource::Message));
    assert_eq!(
        request.authorization.as_deref(),
        Some(basic_auth(SID_A, TOKEN_A).as_str())
    );
    assert_eq!(
        request.content_type.as_deref(),
        Some("application/x-www-form-urlencoded")
    );
    let body = twilio::sms_body(&message);
    assert_eq!(
        sorted(&request.fields),
        sorted(&pairs(&[
            ("To", TO),
            ("From", FROM),
            ("Body", &body),
            (
                "StatusCallback",
                "https://klaxon.example/integrations/twilio/status"
            ),
        ]))
    );
    assert_eq!(
        body,
        "[CRITICAL] Payment API returns 500 - Reply ACK 4821 to acknowledge, RESOLVE 4821 to resolve"
    );

    let sid = request.sid.expect("the fake created a message");
    assert!(sid.starts_with("SM") && sid.len() == 34, "{sid}");
    assert_eq!(
        delivered,
        Delivered {
            provider_id: Some(sid),
            provider: Some("twilio-a".into()),
        }
    );
}

#[tokio::test]
async fn a_call_is_placed_with_the_url_of_its_twiml() {
    let fake = FakeTwilio::start(SID_A, TOKEN_A).await;
    let sender = sender(TwilioKind::Voice, vec![fake.provider("twilio-a", FROM)]);
    let twiml_url = "https://klaxon.example/integrations/twilio/voice/n1?exp=1&sig=abc";

    let delivered = sender
        .send(&call_to(TO, twiml_url))
        .await
        .expect("delivered");

    let [request] = fake.requests().try_into().expect("one request");
    assert_eq!(
        request.path,
        format!("/2010-04-01/Accounts/{SID_A}/Calls.json")
    );
    assert_eq!(request.kind, Some(Resource::Call));
    assert_eq!(
        sorted(&request.fields),
        sorted(&pairs(&[
            ("To", TO),
            ("From", FROM),
            ("Url", twiml_url),
            ("Method", "POST"),
            (
                "StatusCallback",
                "https://klaxon.example/integrations/twilio/status"
            ),
            ("StatusCallbackMethod", "POST"),
        ]))
    );
    let sid = request.sid.expect("the fake created a call");
    assert!(sid.starts_with("CA") && sid.len() == 34, "{sid}");
    assert_eq!(delivered.provider_id, Some(sid));
}

#[tokio::test]
async fn a_call_without_a_twiml_url_is_fatal_and_not_sent() {
    let fake = FakeTwilio::start(SID_A, TOKEN_A).await;
    let sender = sender(TwilioKind::Voice, vec![fake.provider("twilio-a", FROM)]);

    let reason = fatal(sender.send(&message_to(TO)).await);
    assert!(reason.contains("TwiML"), "{reason}");
    assert!(fake.requests().is_empty());
}

#[tokio::test]
async fn server_errors_and_rate_limits_are_retryable() {
    let fake = FakeTwilio::start(SID_A, TOKEN_A).await;
    let sender = sender(TwilioKind::Sms, vec![fake.provider("twilio-a", FROM)]);
    fake.fail_next(500, 1);
    fake.fail_next(429, 1);
    fake.fail_next(503, 1);

    let reason = retryable(sender.send(&message_to(TO)).await);
    assert_eq!(
        reason,
        "twilio-a: HTTP 500, Twilio error 20500: Internal Server Error"
    );
    let reason = retryable(sender.send(&message_to(TO)).await);
    assert_eq!(
        reason,
        "twilio-a: HTTP 429, Twilio error 20429: Too Many Requests"
    );
    let reason = retryable(sender.send(&message_to(TO)).await);
    assert!(reason.contains("HTTP 503"), "{reason}");
    sender
        .send(&message_to(TO))
        .await
        .expect("the fourth try delivers");

    let statuses: Vec<_> = fake.requests().iter().map(|r| r.status).collect();
    assert_eq!(statuses, [500, 429, 503, 201]);
}

#[tokio::test]
async fn an_invalid_number_is_fatal_with_twilios_error() {
    let fake = FakeTwilio::start(SID_A, TOKEN_A).await;
    let sms = sender(TwilioKind::Sms, vec![fake.provider("twilio-a", FROM)]);
    let voice = sender(TwilioKind::Voice, vec![fake.provider("twilio-a", FROM)]);

    let reason = fatal(sms.send(&message_to(INVALID_NUMBER)).await);
    assert_eq!(
        reason,
        "twilio-a: HTTP 400, Twilio error 21211: \
         The 'To' number +15005550001 is not a valid phone number."
    );
    let reason = fatal(sms.send(&message_to("0155 5501")).await);
    assert!(reason.contains("Twilio error 21211"), "{reason}");
    let call = call_to(INVALID_NUMBER, "https://klaxon.example/twiml");
    let reason = fatal(voice.send(&call).await);
    assert!(reason.contains("Twilio error 21211"), "{reason}");
    assert!(fake.requests().iter().all(|request| request.status == 400));
}

#[tokio::test]
async fn a_wrong_auth_token_is_fatal_and_not_told() {
    let fake = FakeTwilio::start(SID_A, TOKEN_A).await;
    let mut provider = fake.provider("twilio-a", FROM);
    provider.auth_token = "not-the-token".into();
    let sender = sender(TwilioKind::Sms, vec![provider]);

    let reason = fatal(sender.send(&message_to(TO)).await);
    assert_eq!(
        reason,
        "twilio-a: HTTP 401, Twilio error 20003: Authenticate"
    );
    assert!(!reason.contains("not-the-token") && !reason.contains(TOKEN_A));
}

#[tokio::test]
async fn a_stalled_provider_is_retryable_within_the_timeout() {
    let fake = FakeTwilio::start(SID_A, TOKEN_A).await;
    fake.stall(true);
    let sender = Twilio::with_timeout(
        TwilioKind::Sms,
        vec![fake.provider("twilio-a", FROM)],
        PUBLIC_URL,
        SHORT_TIMEOUT,
    )
    .expect("the client builds");

    let started = tokio::time::Instant::now();
    let reason = retryable(sender.send(&message_to(TO)).await);
    assert_eq!(reason, "twilio-a: no answer within 300ms");
    assert!(started.elapsed() < STALL / 2);
    assert_eq!(twilio::REQUEST_TIMEOUT, Duration::from_secs(10));
}

#[tokio::test]
async fn a_refused_connection_is_retryable() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr: SocketAddr = listener.local_addr().unwrap();
    drop(listener);
    let provider = TwilioProvider {
        name: "twilio-a".into(),
        base_url: format!("http://{addr}"),
        account_sid: SID_A.into(),
        auth_token: TOKEN_A.into(),
        from: FROM.into(),
    };
    let sender = sender(TwilioKind::Sms, vec![provider]);

    let reason = retryable(sender.send(&message_to(TO)).await);
    assert!(reason.starts_with("twilio-a: "), "{reason}");
    assert!(reason.to_lowercase().contains("connect"), "{reason}");
}

#[tokio::test]
async fn the_provider_index_picks_a_provider_round_the_list() {
    let a = FakeTwilio::start(SID_A, TOKEN_A).await;
    let b = FakeTwilio::start(SID_B, TOKEN_B).await;
    let sender = sender(
        TwilioKind::Sms,
        vec![a.provider("twilio-a", FROM), b.provider("twilio-b", FROM)],
    );
    assert_eq!(sender.providers(), ["twilio-a", "twilio-b"]);
    a.fail_next(500, 1);

    let mut message = message_to(TO);
    retryable(sender.send(&message).await);
    message.provider = 1;
    let delivered = sender.send(&message).await.expect("b delivers");
    assert_eq!(delivered.provider.as_deref(), Some("twilio-b"));
    let [request] = b.requests().try_into().expect("one request to b");
    assert_eq!(delivered.provider_id, request.sid);
    assert_eq!(
        request.authorization.as_deref(),
        Some(basic_auth(SID_B, TOKEN_B).as_str())
    );
    message.provider = 2;
    let delivered = sender.send(&message).await.expect("a delivers");
    assert_eq!(delivered.provider.as_deref(), Some("twilio-a"));
    assert_eq!(a.requests().len(), 2);
}

#[tokio::test]
async fn a_webhook_recipient_or_no_provider_is_fatal() {
    let fake = FakeTwilio::start(SID_A, TOKEN_A).await;
    let sender = sender(TwilioKind::Sms, vec![fake.provider("twilio-a", FROM)]);
    let mut message = message_to(TO);
    message.recipient = Recipient::Webhook("ops".into());
    assert_eq!(
        fatal(sender.send(&message).await),
        "SMS goes to people, not to webhooks"
    );
    let unconfigured = self::sender(TwilioKind::Voice, Vec::new());
    assert!(unconfigured.providers().is_empty());
    assert_eq!(
        fatal(
            unconfigured
                .send(&call_to(TO, "https://klaxon.example/t"))
                .await
        ),
        "no voice provider is configured"
    );
    assert!(fake.requests().is_empty());
}

#[tokio::test]
async fn a_public_url_that_is_no_absolute_url_is_refused() {
    let fake = FakeTwilio::start(SID_A, TOKEN_A).await;
    let sender = Twilio::new(
        TwilioKind::Sms,
        vec![fake.provider("twilio-a", FROM)],
        "klaxon.example",
    )
    .expect("the client builds");

    let reason = fatal(sender.send(&message_to(TO)).await);
    assert!(reason.contains("Twilio error 21609"), "{reason}");
}

/// The fake itself refuses what Twilio refuses, so that a sender that passes it would pass
/// Twilio.
#[tokio::test]
async fn the_fake_refuses_what_twilio_refuses() {
    let fake = FakeTwilio::start(SID_A, TOKEN_A).await;
    let client = reqwest::Client::new();
    let messages = format!(
        "{}/2010-04-01/Accounts/{SID_A}/Messages.json",
        fake.base_url
    );
    let calls = format!("{}/2010-04-01/Accounts/{SID_A}/Calls.json", fake.base_url);
    let refusal = |url: String, sid: &'static str, form: Vec<(&'static str, String)>| {
        let request = client.post(url).basic_auth(sid, Some(TOKEN_A)).form(&form);
        async move {
            let answer = request.send().await.expect("the fake answers");
            let status = answer.status().as_u16();
            let json: serde_json::Value = answer.json().await.expect("Twilio's error JSON");
            (status, json["code"].as_u64())
        }
    };
    let form =
        |to: &str, body: String| vec![("To", to.to_owned()), ("From", FROM.into()), ("Body", body)];

    assert_eq!(
        refusal(messages.clone(), SID_B, form(TO, "hi".into())).await,
        (401, Some(20003))
    );
    let other_account = format!(
        "{}/2010-04-01/Accounts/{SID_B}/Messages.json",
        fake.base_url
    );
    assert_eq!(
        refusal(other_account, SID_A, form(TO, "hi".into())).await,
        (404, Some(20404))
    );
    assert_eq!(
        refusal(
            messages.clone(),
            SID_A,
            form("+1 415 555 0100", "hi".into())
        )
        .await,
        (400, Some(21211))
    );
    assert_eq!(
        refusal(messages.clone(), SID_A, form(TO, String::new())).await,
        (400, Some(21602))
    );
    assert_eq!(
        refusal(messages.clone(), SID_A, form(TO, "é".repeat(1601))).await,
        (400, Some(21617))
    );
    let mut callback = form(TO, "hi".into());
    callback.push(("StatusCallback", "/integrations/twilio/status".into()));
    assert_eq!(
        refusal(messages.clone(), SID_A, callback).await,
        (400, Some(21609))
    );
    let call = vec![
        ("To", TO.to_owned()),
        ("From", FROM.into()),
        ("Url", "/twiml".into()),
    ];
    assert_eq!(refusal(calls, SID_A, call).await, (400, Some(21205)));
    let json = client
        .post(&messages)
        .basic_auth(SID_A, Some(TOKEN_A))
        .json(&serde_json::json!({"To": TO, "From": FROM, "Body": "hi"}))
        .send()
        .await
        .unwrap();
    assert_eq!(json.status().as_u16(), 400, "only a form is read");

    assert!(fake.requests().iter().all(|request| request.sid.is_none()));
    assert_eq!(fake.requests().len(), 8);
}

#[test]
fn the_fakes_signature_is_twilios_and_klaxon_verifies_it() {
    // Twilio's documented example: auth token 12345.
    let url = "https://mycompany.com/myapp.php?foo=1&bar=2";
    let params = pairs(&[
        ("CallSid", "CA1234567890ABCDE"),
        ("Caller", "+14158675309"),
        ("Digits", "1234"),
        ("From", "+14158675309"),
        ("To", "+18005551212"),
    ]);
    let header = sign("12345", url, &params);
    assert_eq!(header, "RSOYDt4T1cUTdK1PDd93/VVr8B8=");
    assert!(twilio::verify("12345", url, &params, &header));

    let mut changed = params.clone();
    changed[2].1 = "1".into();
    assert!(!twilio::verify("12345", url, &changed, &header));
    let mut added = params.clone();
    added.push(("Body".into(), String::new()));
    assert!(!twilio::verify("12345", url, &added, &header));
    assert!(!twilio::verify(
        "12345",
        "https://mycompany.com/myapp.php?foo=1&bar=3",
        &params,
        &header
    ));
    assert!(!twilio::verify(
        "12345",
        "http://mycompany.com/myapp.php?foo=1&bar=2",
        &params,
        &header
    ));
}

/// One request the application got from the provider.
#[derive(Debug, Clone)]
struct Received {
    /// The URL as the provider called it, query string included.
    url: String,
    fields: Vec<(String, String)>,
    /// Whether `X-Twilio-Signature` verified under the provider's auth token.
    verified: bool,
}

impl Received {
    fn field(&self, name: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(field, _)| field == name)
            .map(|(_, value)| value.as_str())
    }
}

/// Klaxon's side of the provider's requests, standing in until its routes exist: it checks
/// each signature with [`twilio::verify`] (403 when it fails) and answers with [`twiml`].
struct Application {
    base_url: String,
    received: Arc<Mutex<Vec<Received>>>,
}

impl Application {
    async fn start(auth_token: &'static str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base_url = format!("http://{}", listener.local_addr().unwrap());
        let received = Arc::new(Mutex::new(Vec::new()));
        let (shared, base) = (received.clone(), base_url.clone());
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (received, base) = (shared.clone(), base.clone());
                let service = hyper::service::service_fn(move |request| {
                    respond(received.clone(), base.clone(), auth_token, request)
                });
                tokio::spawn(
                    hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service),
                );
            }
        });
        Self { base_url, received }
    }

    fn received(&self) -> Vec<Received> {
        self.received
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

async fn respond(
    received: Arc<Mutex<Vec<Received>>>,
    base_url: String,
    auth_token: &str,
    request: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    let (parts, body) = request.into_parts();
    let body = axum::body::to_bytes(Body::new(body), usize::MAX)
        .await
        .unwrap_or_default();
    let fields: Vec<(String, String)> = form_urlencoded::parse(&body).into_owned().collect();
    let url = format!("{base_url}{}", parts.uri);
    let verified = parts
        .headers
        .get(twilio::SIGNATURE_HEADER)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|header| twilio::verify(auth_token, &url, &fields, header));
    received
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .push(Received {
            url,
            fields,
            verified,
        });
    let (status, document) = if !verified {
        (403, String::new())
    } else {
        match parts.uri.path() {
            "/integrations/twilio/sms" => (200, twiml::message("Acknowledged & noted.")),
            "/integrations/twilio/voice/n1" => (
                200,
                twiml::call(
                    "This is Klaxon.",
                    &format!("{base_url}/integrations/twilio/gather/n1?exp=1&sig=abc"),
                ),
            ),
            "/integrations/twilio/gather/n1" => (200, twiml::say("Acknowledged. Goodbye.")),
            _ => (200, twiml::empty()),
        }
    };
    let response = Response::builder()
        .status(status)
        .header("content-type", "text/xml")
        .body(Body::from(document))
        .expect("a valid response");
    Ok(response)
}

#[tokio::test]
async fn receipts_are_signed_and_posted_to_the_status_callback() {
    let application = Application::start(TOKEN_A).await;
    let fake = FakeTwilio::start(SID_A, TOKEN_A).await;
    let sms = Twilio::new(
        TwilioKind::Sms,
        vec![fake.provider("twilio-a", FROM)],
        &application.base_url,
    )
    .expect("the client builds");
    let voice = Twilio::new(
        TwilioKind::Voice,
        vec![fake.provider("twilio-a", FROM)],
        &application.base_url,
    )
    .expect("the client builds");
    let message_sid = sms
        .send(&message_to(TO))
        .await
        .unwrap()
        .provider_id
        .unwrap();
    let call = call_to(TO, &format!("{}/twiml", application.base_url));
    let call_sid = voice.send(&call).await.unwrap().provider_id.unwrap();

    assert_eq!(
        fake.send_status(&message_sid, "delivered", None).await.0,
        200
    );
    assert_eq!(
        fake.send_status(&message_sid, "undelivered", Some("30003"))
            .await
            .0,
        200
    );
    assert_eq!(fake.send_status(&call_sid, "no-answer", None).await.0, 200);

    let [delivered, undelivered, no_answer] = application.received().try_into().expect("three");
    let status_url = format!("{}/integrations/twilio/status", application.base_url);
    for receipt in [&delivered, &undelivered, &no_answer] {
        assert_eq!(receipt.url, status_url);
        assert!(receipt.verified, "{receipt:?}");
        assert_eq!(receipt.field("AccountSid"), Some(SID_A));
        assert_eq!(receipt.field("To"), Some(TO));
        assert_eq!(receipt.field("From"), Some(FROM));
        assert_eq!(receipt.field("ApiVersion"), Some("2010-04-01"));
    }
    assert_eq!(delivered.field("MessageSid"), Some(message_sid.as_str()));
    assert_eq!(delivered.field("MessageStatus"), Some("delivered"));
    assert_eq!(delivered.field("ErrorCode"), None);
    assert_eq!(undelivered.field("MessageStatus"), Some("undelivered"));
    assert_eq!(undelivered.field("ErrorCode"), Some("30003"));
    assert_eq!(no_answer.field("CallSid"), Some(call_sid.as_str()));
    assert_eq!(no_answer.field("CallStatus"), Some("no-answer"));
}

#[tokio::test]
async fn an_inbound_sms_is_signed_and_a_forged_or_unsigned_one_is_refused() {
    let application = Application::start(TOKEN_A).await;
    let fake = FakeTwilio::start(SID_A, TOKEN_A).await;
    let url = format!("{}/integrations/twilio/sms", application.base_url);

    let (status, answer) = fake.inbound_sms(&url, TO, FROM, "ack 4821").await;
    assert_eq!(status, 200);
    assert_eq!(
        answer,
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Response>\
         <Message>Acknowledged &amp; noted.</Message></Response>"
    );
    assert_eq!(
        fake.forged_inbound_sms(&url, TO, FROM, "ack 4821").await.0,
        403
    );
    assert_eq!(
        fake.unsigned_inbound_sms(&url, TO, FROM, "ack 4821")
            .await
            .0,
        403
    );

    let [genuine, forged, unsigned] = application.received().try_into().expect("three");
    assert!(genuine.verified && !forged.verified && !unsigned.verified);
    assert_eq!(genuine.field("Body"), Some("ack 4821"));
    assert_eq!(genuine.field("From"), Some(TO));
    assert_eq!(genuine.field("To"), Some(FROM));
    assert_eq!(genuine.field("NumMedia"), Some("0"));
    let sid = genuine.field("MessageSid").expect("a MessageSid");
    assert_eq!(genuine.field("SmsSid"), Some(sid));
}

#[tokio::test]
async fn an_answered_call_fetches_its_twiml_and_posts_the_key_pressed() {
    let application = Application::start(TOKEN_A).await;
    let fake = FakeTwilio::start(SID_A, TOKEN_A).await;
    let voice = Twilio::new(
        TwilioKind::Voice,
        vec![fake.provider("twilio-a", FROM)],
        &application.base_url,
    )
    .expect("the client builds");
    let twiml_url = format!(
        "{}/integrations/twilio/voice/n1?exp=1&sig=abc",
        application.base_url
    );
    let sid = voice
        .send(&call_to(TO, &twiml_url))
        .await
        .unwrap()
        .provider_id
        .unwrap();

    let (document, status, answer) = fake.answer_call(&sid, "1").await;
    assert!(document.contains("<Gather input=\"dtmf\""), "{document}");
    assert_eq!(status, 200);
    assert_eq!(answer, twiml::say("Acknowledged. Goodbye."));

    let [fetch, gather] = application.received().try_into().expect("two requests");
    assert_eq!(fetch.url, twiml_url);
    assert_eq!(
        gather.url,
        format!(
            "{}/integrations/twilio/gather/n1?exp=1&sig=abc",
            application.base_url
        )
    );
    for request in [&fetch, &gather] {
        assert!(request.verified, "{request:?}");
        assert_eq!(request.field("CallSid"), Some(sid.as_str()));
        assert_eq!(request.field("To"), Some(TO));
        assert_eq!(request.field("CallStatus"), Some("in-progress"));
    }
    assert_eq!(fetch.field("Digits"), None);
    assert_eq!(gather.field("Digits"), Some("1"));
}
