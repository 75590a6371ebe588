//! PagerDuty's Events API v2, compatible: `POST /v2/enqueue`. Monitoring that speaks to
//! PagerDuty speaks to Klaxon by changing one URL: the `routing_key` is a service's integration
//! key, and the answers are PagerDuty's (202 `success`, 400 `invalid event` with its `errors`).
//!
//! - `trigger` opens an incident on the key's service, or joins the live one with the same
//!   `dedup_key` there (dedup is within one service); without a `dedup_key`, one is made and
//!   answered. A trigger after a resolve opens a new incident.
//! - `acknowledge` and `resolve` act on the live incident with that `dedup_key`; with none
//!   (or one already in that state) they change nothing and still answer 202.
//! - A 202 means the event is committed.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use serde_json::{Map, Value};
use uuid::Uuid;

use super::cache::KeyRoute;
use super::extract::{field_with_nul, NUL_REFUSED};
use super::services::{act_on_live, route};
use super::AppState;
use crate::domain::{Action, NewEvent, Severity, Timestamp, TokenSecret};
use crate::store::StoreError;

/// PagerDuty refuses a body over 512 KB.
pub const MAX_EVENT_BYTES: usize = 512 * 1024;
/// PagerDuty's limit on `payload.summary`.
pub const MAX_SUMMARY_CHARS: usize = 1024;
/// PagerDuty's limit on `dedup_key`.
pub const MAX_DEDUP_KEY_CHARS: usize = 255;

/// PagerDuty's answer to an event.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct EnqueueAnswer {
    /// `success`, or `invalid event`.
    pub status: &'static str,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dedup_key: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<String>,
}

fn invalid(errors: Vec<String>) -> Response {
    let answer = EnqueueAnswer {
        status: "invalid event",
        message: "Event object is invalid".into(),
        dedup_key: None,
        errors,
    };
    (StatusCode::BAD_REQUEST, Json(answer)).into_response()
}

fn unavailable(error: StoreError) -> Response {
    tracing::warn!(%error, "an event could not be stored");
    let answer = EnqueueAnswer {
        status: "unavailable",
        message: "Klaxon cannot reach its database; try again".into(),
        dedup_key: None,
        errors: Vec::new(),
    };
    let mut response = (StatusCode::SERVICE_UNAVAILABLE, Json(answer)).into_response();
    response.headers_mut().insert(
        axum::http::header::RETRY_AFTER,
        axum::http::HeaderValue::from_static("1"),
    );
    response
}

/// A checked event.
struct Event {
    action: Action,
    trigger: Option<Trigger>,
    dedup_key: Option<String>,
}

struct Trigger {
    summary: String,
    source: String,
    severity: Severity,
}

/// Reads `body` as PagerDuty does, with every problem it finds.
fn check(body: &Map<String, Value>) -> Result<Event, Vec<String>> {
    let mut errors = Vec::new();
    let text = |name: &str| body.get(name).and_then(Value::as_str);
    let action = match text("event_action") {
        Some("trigger") => Some(Action::Escalate),
        Some("acknowledge") => Some(Action::Acknowledge),
        Some("resolve") => Some(Action::Resolve),
        _ => {
            errors.push(
                "'event_action' is missing or invalid (must be trigger, acknowledge or resolve)"
                    .into(),
            );
            None
        }
    };
    let dedup_key = match body.get("dedup_key") {
        None | Some(Value::Null) => None,
        Some(Value::String(key)) if key.chars().count() > MAX_DEDUP_KEY_CHARS => {
            errors.push(format!(
                "'dedup_key' must be at most {MAX_DEDUP_KEY_CHARS} characters"
            ));
            None
        }
        Some(Value::String(key)) if !key.trim().is_empty() => Some(key.clone()),
        Some(_) => {
            errors.push("'dedup_key' must be a non-blank string".into());
            None
        }
    };
    let mut trigger = None;
    match action {
        Some(Action::Escalate) => match body.get("payload").and_then(Value::as_object) {
            None => errors.push("'payload' is missing or not an object".into()),
            Some(payload) => {
                let field = |name: &str| payload.get(name).and_then(Value::as_str);
                let summary = field("summary").filter(|s| !s.trim().is_empty());
                if summary.is_none() {
                    errors.push("'payload.summary' is missing or blank".into());
                }
                if summary.is_some_and(|s| s.chars().count() > MAX_SUMMARY_CHARS) {
                    errors.push(format!(
                        "'payload.summary' must be at most {MAX_SUMMARY_CHARS} characters"
                    ));
                }
                let source = field("source").filter(|s| !s.trim().is_empty());
                if source.is_none() {
                    errors.push("'payload.source' is missing or blank".into());
                }
                let severity = field("severity").and_then(Severity::parse);
                if severity.is_none() {
                    errors.push(
                        "'payload.severity' is missing or invalid (must be critical, error, warning or info)"
                            .into(),
                    );
                }
                if let (Some(summary), Some(source), Some(severity)) = (summary, source, severity) {
                    trigger = Some(Trigger {
                        summary: summary.to_owned(),
                        source: source.to_owned(),
                        severity,
                    });
                }
            }
        },
        Some(_) if dedup_key.is_none() => {
            errors.push("'dedup_key' is required to acknowledge or resolve".into())
        }
        _ => {}
    }
    match action {
        Some(action) if errors.is_empty() => Ok(Event {
            action,
            trigger,
            dedup_key,
        }),
        _ => Err(errors),
    }
}

/// Send an event, as PagerDuty's Events API v2 takes it
#[utoipa::path(
    post, path = "/v2/enqueue", tag = "integrations",
    request_body(content = Object, description = "PagerDuty's Events API v2 event: routing_key, event_action, dedup_key, payload {summary, source, severity, timestamp, component, group, class, custom_details}, links, images"),
    responses(
        (status = 202, description = "Committed", body = EnqueueAnswer),
        (status = 400, description = "Invalid event, with every problem in `errors`", body = EnqueueAnswer),
        (status = 429, description = "Over the key's rate limit (`[integrations] rate_limit`); retry later", body = EnqueueAnswer),
        (status = 503, description = "The database is unavailable", body = EnqueueAnswer),
    )
)]
pub async fn enqueue(State(state): State<AppState>, body: Bytes) -> Response {
    if body.len() > MAX_EVENT_BYTES {
        return invalid(vec![format!(
            "the event is {} bytes; at most {MAX_EVENT_BYTES} are accepted",
            body.len()
        )]);
    }
    // PostgreSQL's text holds no NUL: refused here, with the field, not failed in the store.
    if let Some(path) = field_with_nul(&body) {
        return invalid(vec![format!("'{path}' {NUL_REFUSED}")]);
    }
    let Ok(Value::Object(mut body)) = serde_json::from_slice::<Value>(&body) else {
        return invalid(vec!["the body is not a JSON object".into()]);
    };
    let routing_key = body
        .remove("routing_key")
        .and_then(|key| key.as_str().map(str::to_owned));
    let Some(routing_key) = routing_key.filter(|key| !key.trim().is_empty()) else {
        return invalid(vec!["'routing_key' is missing or blank".into()]);
    };
    let event = match check(&body) {
        Ok(event) => event,
        Err(errors) => return invalid(errors),
    };
    let secret = TokenSecret::from_presented(routing_key);
    let KeyRoute { service, target } = match route(&state, &secret).await {
        Ok(Some(route)) => route,
        Ok(None) => return invalid(vec!["'routing_key' is not a live integration key".into()]),
        Err(error) => return unavailable(error),
    };
    if let Err(wait) = state.key_limit.allow(&secret.hash()) {
        let answer = EnqueueAnswer {
            status: "throttle event",
            message:
                "Requests for this integration key are arriving too quickly. Please retry later."
                    .into(),
            dedup_key: None,
            errors: Vec::new(),
        };
        let mut response = (StatusCode::TOO_MANY_REQUESTS, Json(answer)).into_response();
        response.headers_mut().insert(
            axum::http::header::RETRY_AFTER,
            axum::http::HeaderValue::from(wait.as_secs().max(1)),
        );
        return response;
    }
    let actor = format!("events-api:{}", service.name);
    let answered_key = match (event.trigger, event.dedup_key) {
        (Some(trigger), dedup_key) => {
            let dedup_key = dedup_key.unwrap_or_else(|| Uuid::new_v4().simple().to_string());
            let new = NewEvent {
                source: trigger.source,
                summary: trigger.summary,
                severity: trigger.severity,
                dedup_key: Some(dedup_key.clone()),
                payload: Value::Object(body),
                actor,
                received_at: Timestamp::now(),
                service: Some(target),
            };
            match state.ingest_event(new).await {
                Ok(ingested) => {
                    tracing::info!(incident_id = %ingested.incident.id, service_id = %service.id, deduplicated = ingested.deduplicated, "event triggered");
                }
                Err(error) => return unavailable(error),
            }
            dedup_key
        }
        (None, Some(dedup_key)) => {
            // Nothing live with that key, or one in that state already: a 202 that changes
            // nothing, as PagerDuty answers.
            let note = "by the Events API";
            let acted = act_on_live(&state, service.id, &dedup_key, event.action, actor, note);
            if let Err(error) = acted.await {
                return unavailable(error);
            }
            dedup_key
        }
        (None, None) => return invalid(vec!["'dedup_key' is required".into()]),
    };
    let answer = EnqueueAnswer {
        status: "success",
        message: "Event processed".into(),
        dedup_key: Some(answered_key),
        errors: Vec::new(),
    };
    (StatusCode::ACCEPTED, Json(answer)).into_response()
}
