//! What Twilio-compatible providers send to Klaxon: replies to texts, receipts for texts and
//! calls, and a call's document and the digit pressed. Every request must carry a valid
//! `X-Twilio-Signature`, keyed with the auth token of the provider whose `account_sid` is the
//! form's `AccountSid`, over `public_url` + the path (and query) + the form's fields; anything
//! else is answered 403 and changes nothing. A call's document URL is also signed by Klaxon
//! (`notify::links`), so that only the calls Klaxon placed can act.
//!
//! Replies: `ACK <code>` or `RESOLVE <code>` (any case; `ACKALL`/`RESOLVEALL` too) from the
//! number a page went to acts, as the user it was for, on every incident of the message that
//! carried that code.

use std::collections::BTreeSet;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use uuid::Uuid;

use super::{to_completion, AppState};
use crate::config::{NotificationConfig, TwilioProvider};
use crate::domain::{Action, Failover, Incident, Notification, Timestamp};
use crate::notify::links::LinkSigner;
use crate::notify::twilio::{self, twiml};
use crate::notify::{Channels, Item};
use crate::store::{Receipt, StoreError};

/// What the integrations need of the configuration: the providers whose requests they check,
/// the channels a contact method's test goes through, and where Klaxon is reached.
#[derive(Clone, Default)]
pub struct Reach {
    pub channels: Channels,
    pub public_url: String,
    pub sms: Vec<TwilioProvider>,
    pub voice: Vec<TwilioProvider>,
    pub notifications: NotificationConfig,
    /// The names of the configured webhooks (`[webhooks.<name>]`), which levels may name.
    pub webhooks: Vec<String>,
}

/// The fields of the forms providers post, for the API's document: each request carries some
/// of them (and others Klaxon ignores), always `AccountSid`.
#[derive(Debug, utoipa::ToSchema)]
#[allow(dead_code, non_snake_case)]
pub struct ProviderForm {
    AccountSid: String,
    From: Option<String>,
    To: Option<String>,
    /// An inbound text.
    Body: Option<String>,
    MessageSid: Option<String>,
    MessageStatus: Option<String>,
    ErrorCode: Option<String>,
    CallSid: Option<String>,
    CallStatus: Option<String>,
    /// The digits pressed on a call.
    Digits: Option<String>,
}

/// A TwiML answer.
fn xml(status: StatusCode, document: String) -> Response {
    let mut response = (status, document).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/xml; charset=utf-8"),
    );
    response
}

fn forbidden() -> Response {
    (
        StatusCode::FORBIDDEN,
        "invalid or missing X-Twilio-Signature",
    )
        .into_response()
}

fn unavailable(error: StoreError) -> Response {
    tracing::warn!(%error, "a provider's request could not be served");
    let mut response = (StatusCode::SERVICE_UNAVAILABLE, "database unavailable").into_response();
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    response
}

/// A provider's signed form: its fields, once the signature holds.
struct Form(Vec<(String, String)>);

impl Form {
    fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }
}

/// The form of a request from a configured provider, if its signature verifies.
fn signed(state: &AppState, headers: &HeaderMap, uri: &Uri, body: &[u8]) -> Option<Form> {
    let fields: Vec<(String, String)> = form_urlencoded::parse(body).into_owned().collect();
    let form = Form(fields);
    let account = form.get("AccountSid")?;
    let reach = state.reach.get();
    let provider = reach
        .sms
        .iter()
        .chain(&reach.voice)
        .find(|p| p.account_sid == account)?;
    let signature = headers.get("x-twilio-signature")?.to_str().ok()?;
    let path = uri.path_and_query().map_or(uri.path(), |p| p.as_str());
    let url = format!("{}{path}", reach.public_url);
    twilio::verify(&provider.auth_token, &url, &form.0, signature).then_some(form)
}

/// `POST /integrations/twilio/sms`: a text to one of the providers' numbers.
#[utoipa::path(
    post, path = "/integrations/twilio/sms", tag = "integrations",
    request_body(content = ProviderForm, content_type = "application/x-www-form-urlencoded", description = "Twilio's inbound message form (From, To, Body, AccountSid, MessageSid, …)"),
    responses(
        (status = 200, description = "TwiML", content_type = "text/xml"),
        (status = 503, description = "The database is unavailable", content_type = "text/plain"),
        (status = 403, description = "Missing or invalid X-Twilio-Signature, or no provider has the form's AccountSid", content_type = "text/plain"),
    )
)]
pub async fn inbound_sms(
    State(state): State<AppState>,
    headers: HeaderMap,
    uri: Uri,
    body: Bytes,
) -> Response {
    let Some(form) = signed(&state, &headers, &uri, &body) else {
        return forbidden();
    };
    let from = form.get("From").unwrap_or_default().to_owned();
    let text = form.get("Body").unwrap_or_default();
    let Some((action, code)) = parse_reply(text) else {
        let help = "Klaxon: reply ACK <code> to acknowledge, RESOLVE <code> to resolve.";
        return xml(StatusCode::OK, twiml::message(help));
    };
    let pages = match state.store.replied_to(&from, &code).await {
        Ok(pages) => pages,
        Err(error) => return unavailable(error),
    };
    let answer = act_on(&state, &pages, action, "by SMS reply").await;
    tracing::info!(%from, action = %action, pages = pages.len(), "SMS reply");
    match answer {
        Ok(_) if pages.is_empty() => {
            let none = format!("Klaxon: no page with code {code} was sent to this number.");
            xml(StatusCode::OK, twiml::message(&none))
        }
        Ok(text) => xml(StatusCode::OK, twiml::message(&text)),
        Err(error) => unavailable(error),
    }
}

/// `ACK 4821` → (acknowledge, "4821"); any case, `ACKALL`/`RESOLVEALL` and `ACKNOWLEDGE` too.
pub fn parse_reply(text: &str) -> Option<(Action, String)> {
    let mut words = text.split_whitespace();
    let verb = words.next()?.to_ascii_uppercase();
    let code = words.next()?;
    if words.next().is_some() || code.is_empty() || !code.chars().all(|c| c.is_ascii_digit()) {
        return None;
    }
    let action = match verb.as_str() {
        "ACK" | "ACKALL" | "ACKNOWLEDGE" => Action::Acknowledge,
        "RESOLVE" | "RESOLVEALL" => Action::Resolve,
        _ => return None,
    };
    Some((action, code.to_owned()))
}

/// Applies `action` to every incident `pages` are about, as the user they went to; what to tell
/// the user.
async fn act_on(
    state: &AppState,
    pages: &[Notification],
    action: Action,
    note: &str,
) -> Result<String, StoreError> {
    let Some(user_id) = pages.iter().find_map(|n| n.user_id) else {
        return Ok(String::new());
    };
    let user = state.store.user(user_id).await?;
    if !user.active {
        return Ok("Klaxon: this user is deactivated; nothing was changed.".into());
    }
    let incidents: BTreeSet<Uuid> = pages.iter().map(|n| n.incident_id).collect();
    let (mut done, mut already) = (Vec::new(), Vec::new());
    for incident_id in incidents {
        let outcome = state
            .transition(
                incident_id,
                action,
                user.handle.clone(),
                Some(note.to_owned()),
            )
            .await;
        match outcome {
            Ok(outcome) => done.push(outcome.incident),
            Err(StoreError::InvalidTransition(refused)) => already.push(refused.status),
            Err(error) => return Err(error),
        }
    }
    let verb = match action {
        Action::Resolve => "Resolved",
        _ => "Acknowledged",
    };
    let mut text = match done.as_slice() {
        [] => String::from("Klaxon: nothing to do"),
        [one] => format!("Klaxon: {verb} \"{}\"", one.title),
        many => format!("Klaxon: {verb} {} incidents", many.len()),
    };
    if let Some(status) = already.first() {
        text.push_str(&format!(
            "; {} already {}",
            already.len(),
            status.as_str().to_lowercase()
        ));
    }
    text.push('.');
    Ok(text)
}

/// `POST /integrations/twilio/status`: a provider's receipt for a text (`MessageSid`,
/// `MessageStatus`, `ErrorCode`) or a call (`CallSid`, `CallStatus`).
#[utoipa::path(
    post, path = "/integrations/twilio/status", tag = "integrations",
    request_body(content = ProviderForm, content_type = "application/x-www-form-urlencoded", description = "Twilio's status callback form"),
    responses(
        (status = 204, description = "Recorded, or a progress status with nothing to record"),
        (status = 400, description = "Neither MessageSid nor CallSid", content_type = "text/plain"),
        (status = 403, description = "Missing or invalid X-Twilio-Signature, or no provider has the form's AccountSid", content_type = "text/plain"),
        (status = 503, description = "The database is unavailable", content_type = "text/plain"),
    )
)]
pub async fn status(
    State(state): State<AppState>,
    headers: HeaderMap,
    uri: Uri,
    body: Bytes,
) -> Response {
    let Some(form) = signed(&state, &headers, &uri, &body) else {
        return forbidden();
    };
    let reach = state.reach.get();
    let (sid, word, providers) = match (form.get("MessageSid"), form.get("CallSid")) {
        (Some(sid), _) => (sid, form.get("MessageStatus"), reach.sms.len()),
        (None, Some(sid)) => (sid, form.get("CallStatus"), reach.voice.len()),
        (None, None) => {
            return (StatusCode::BAD_REQUEST, "no MessageSid or CallSid").into_response()
        }
    };
    let word = word.unwrap_or_default().to_ascii_lowercase();
    let delivered = match word.as_str() {
        // A call that completed was answered; one nobody took ends as no-answer or busy.
        "delivered" | "completed" => true,
        "failed" | "undelivered" | "no-answer" | "busy" | "canceled" => false,
        // queued, sending, sent, ringing, in-progress…: on the way, nothing to record.
        _ => return StatusCode::NO_CONTENT.into_response(),
    };
    let config = &reach.notifications;
    let receipt = Receipt {
        provider_message_id: sid.to_owned(),
        status: word.clone(),
        delivered,
        error: form
            .get("ErrorCode")
            .filter(|c| !c.is_empty())
            .map(str::to_owned),
        failover: Failover { providers },
        max_attempts: config.max_attempts,
        retry_backoff: config.retry_backoff,
        retry_backoff_cap: config.retry_backoff_cap,
        at: Timestamp::now(),
    };
    let store = state.store.clone();
    match to_completion(async move { store.record_receipt(&receipt).await }).await {
        Ok(changed) => {
            tracing::info!(sid, status = %word, notifications = changed.len(), "provider receipt");
            StatusCode::NO_CONTENT.into_response()
        }
        Err(error) => unavailable(error),
    }
}

/// The query of a call's document URL.
#[derive(Debug, serde::Deserialize)]
pub struct VoiceQuery {
    expires: Option<i64>,
    sig: Option<String>,
}

/// The notifications a call carries, once both signatures hold.
async fn call_of(
    state: &AppState,
    id: &str,
    query: &str,
    headers: &HeaderMap,
    uri: &Uri,
    body: &[u8],
) -> Result<(Form, Vec<Notification>, Vec<Incident>, LinkSigner), Response> {
    let form = signed(state, headers, uri, body).ok_or_else(forbidden)?;
    let id: Uuid = id.parse().map_err(|_| forbidden())?;
    let query: VoiceQuery = serde_urlencoded::from_str(query).map_err(|_| forbidden())?;
    let (Some(expires), Some(sig)) = (query.expires, query.sig) else {
        return Err(forbidden());
    };
    let key = state.store.link_key().await.map_err(unavailable)?;
    let reach = state.reach.get();
    let signer = LinkSigner::new(&key, &reach.public_url, reach.notifications.link_expiry);
    signer
        .verify_voice(id, expires, &sig, Timestamp::now())
        .map_err(|_| forbidden())?;
    let carried = state
        .store
        .message_of(id)
        .await
        .map_err(|error| match error {
            StoreError::NotFound => forbidden(),
            other => unavailable(other),
        })?;
    let ids: Vec<Uuid> = carried.iter().map(|n| n.incident_id).collect();
    let incidents = state
        .store
        .incidents_by_id(&ids)
        .await
        .map_err(unavailable)?;
    Ok((form, carried, incidents, signer))
}

/// `POST /integrations/twilio/voice/{id}`: what a call placed for notification `id` says, and
/// the digits it listens for.
#[utoipa::path(
    post, path = "/integrations/twilio/voice/{id}", tag = "integrations",
    params(("id" = String, Path, description = "The notification the call is for"), ("expires" = i64, Query), ("sig" = String, Query)),
    request_body(content = ProviderForm, content_type = "application/x-www-form-urlencoded", description = "Twilio's call form"),
    responses(
        (status = 200, description = "TwiML", content_type = "text/xml"),
        (status = 503, description = "The database is unavailable", content_type = "text/plain"),
        (status = 403, description = "Missing or invalid X-Twilio-Signature, or no provider has the form's AccountSid", content_type = "text/plain"),
    )
)]
pub async fn voice(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    uri: Uri,
    body: Bytes,
) -> Response {
    let query = uri.query().unwrap_or_default().to_owned();
    let (_, carried, incidents, signer) =
        match call_of(&state, &id, &query, &headers, &uri, &body).await {
            Ok(found) => found,
            Err(refused) => return refused,
        };
    let now = Timestamp::now();
    let items: Vec<Item> = carried
        .iter()
        .filter_map(|n| {
            let incident = incidents.iter().find(|i| i.id == n.incident_id)?.clone();
            Some(Item {
                links: signer.links(n.id, incident.id, now),
                incident,
                escalation_level: n.escalation_level,
            })
        })
        .collect();
    let action = format!(
        "{}/integrations/twilio/voice/{id}/gather?{query}",
        state.reach.get().public_url
    );
    xml(
        StatusCode::OK,
        twiml::call(&twiml::call_intro(&items), &action),
    )
}

/// `POST /integrations/twilio/voice/{id}/gather`: the digit pressed on a call: 1 acknowledges,
/// 2 resolves, as the user called.
#[utoipa::path(
    post, path = "/integrations/twilio/voice/{id}/gather", tag = "integrations",
    params(("id" = String, Path, description = "The notification the call is for"), ("expires" = i64, Query), ("sig" = String, Query)),
    request_body(content = ProviderForm, content_type = "application/x-www-form-urlencoded", description = "Twilio's gather form, with Digits"),
    responses(
        (status = 200, description = "TwiML", content_type = "text/xml"),
        (status = 503, description = "The database is unavailable", content_type = "text/plain"),
        (status = 403, description = "Missing or invalid X-Twilio-Signature, or no provider has the form's AccountSid", content_type = "text/plain"),
    )
)]
pub async fn gather(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    uri: Uri,
    body: Bytes,
) -> Response {
    let query = uri.query().unwrap_or_default().to_owned();
    let (form, carried, _, _) = match call_of(&state, &id, &query, &headers, &uri, &body).await {
        Ok(found) => found,
        Err(refused) => return refused,
    };
    let action = match form.get("Digits") {
        Some("1") => Action::Acknowledge,
        Some("2") => Action::Resolve,
        _ => {
            return xml(
                StatusCode::OK,
                twiml::say(
                    "Klaxon did not understand. Press 1 to acknowledge, 2 to resolve. Goodbye.",
                ),
            )
        }
    };
    match act_on(&state, &carried, action, "by phone").await {
        Ok(text) => {
            tracing::info!(notification = %id, action = %action, "call answered with a digit");
            xml(StatusCode::OK, twiml::say(&format!("{text} Goodbye.")))
        }
        Err(error) => unavailable(error),
    }
}

/// `POST /integrations/twilio/voice/test`: the document of a contact method's test call.
#[utoipa::path(
    post, path = "/integrations/twilio/voice/test", tag = "integrations",
    request_body(content = ProviderForm, content_type = "application/x-www-form-urlencoded", description = "Twilio's call form"),
    responses(
        (status = 200, description = "TwiML", content_type = "text/xml"),
        (status = 403, description = "Missing or invalid X-Twilio-Signature, or no provider has the form's AccountSid", content_type = "text/plain"),
    )
)]
pub async fn voice_test(
    State(state): State<AppState>,
    headers: HeaderMap,
    uri: Uri,
    body: Bytes,
) -> Response {
    if signed(&state, &headers, &uri, &body).is_none() {
        return forbidden();
    }
    xml(
        StatusCode::OK,
        twiml::say("This is a test call from Klaxon. Your voice contact method works. Goodbye."),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_name_an_action_and_a_code_in_any_case() {
        assert_eq!(
            parse_reply("ACK 4821"),
            Some((Action::Acknowledge, "4821".into()))
        );
        assert_eq!(
            parse_reply("  ack   0042 "),
            Some((Action::Acknowledge, "0042".into()))
        );
        assert_eq!(
            parse_reply("Resolve 7"),
            Some((Action::Resolve, "7".into()))
        );
        assert_eq!(
            parse_reply("ACKALL 1234"),
            Some((Action::Acknowledge, "1234".into()))
        );
        assert_eq!(
            parse_reply("resolveall 1234"),
            Some((Action::Resolve, "1234".into()))
        );
        assert_eq!(parse_reply("ACK"), None);
        assert_eq!(parse_reply("ACK 12a4"), None);
        assert_eq!(parse_reply("ACK 1234 please"), None);
        assert_eq!(parse_reply("STOP"), None);
    }
}
