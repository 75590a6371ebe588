//! `POST /message`: a person's or a system's text becomes an event, which opens an incident or
//! joins the live one with the same `dedup_key`.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Serialize};

use super::auth::{Authorized, Responder};
use super::extract::JsonBody;
use super::{ApiError, AppState};
use uuid::Uuid;

use super::services::event_service;
use crate::domain::{Event, Incident, NewEvent, Severity, Timestamp};
use crate::store::StoreError;

/// The longest message accepted, in characters.
pub const MAX_TEXT_CHARS: usize = 10_000;
/// The longest `source` and `dedup_key`, in characters.
pub const MAX_LABEL_CHARS: usize = 255;
/// The `source` of a message that names none.
pub const DEFAULT_SOURCE: &str = "api";

#[derive(Debug, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MessageRequest {
    /// 1 to 10,000 characters, not blank; its first line becomes the incident's title.
    #[schema(min_length = 1, max_length = 10000)]
    pub text: String,
    #[serde(default)]
    pub severity: Severity,
    /// Where it came from, 1 to 255 characters, not blank; `api` if not given.
    #[schema(min_length = 1, max_length = 255)]
    pub source: Option<String>,
    /// Messages with the same key join one live incident instead of opening new ones. 1 to 255
    /// characters, not blank.
    #[schema(min_length = 1, max_length = 255)]
    pub dedup_key: Option<String>,
    /// The service the message is about: its `dedup_key` is unique within the service, and an
    /// incident it opens starts escalating at once if the service escalates automatically.
    /// Without it, the incident stays `OPEN` until someone escalates it.
    pub service_id: Option<Uuid>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct MessageResponse {
    pub event: Event,
    pub incident: Incident,
    pub deduplicated: bool,
}

/// Submit a message: open an incident or join a live one
#[utoipa::path(
    post, path = "/message", tag = "messages",
    request_body = MessageRequest,
    responses(
        (status = 201, description = "A new incident was opened", body = MessageResponse),
        (status = 200, description = "The event joined the live incident with the same dedup_key", body = MessageResponse),
        (status = 400, description = "Malformed JSON or an invalid field"),
        (status = 401, description = "Missing, invalid or revoked token"),
        (status = 403, description = "The token's role cannot submit messages"),
        (status = 413, description = "The body is too large"),
        (status = 415, description = "The body is not JSON"),
        (status = 503, description = "The database is unavailable"),
    ),
    security(("bearer" = []))
)]
pub async fn submit(
    State(state): State<AppState>,
    Authorized(caller, _): Authorized<Responder>,
    JsonBody(request): JsonBody<MessageRequest>,
) -> Result<(StatusCode, Json<MessageResponse>), ApiError> {
    validate(&request)?;
    let service = match request.service_id {
        Some(id) => {
            let service = state.store.service(id).await.map_err(|e| match e {
                StoreError::NotFound => {
                    ApiError::BadRequest(format!("invalid `service_id`: no service {id}"))
                }
                other => ApiError::from_store(other, String::new),
            })?;
            Some(event_service(&state, &service).await?)
        }
        None => None,
    };
    let payload = serde_json::to_value(&request).map_err(|e| ApiError::Internal(e.into()))?;
    let event = NewEvent {
        source: request.source.unwrap_or_else(|| DEFAULT_SOURCE.to_owned()),
        summary: request.text,
        severity: request.severity,
        dedup_key: request.dedup_key,
        payload,
        actor: caller.name,
        received_at: Timestamp::now(),
        service,
    };
    let ingested = state.ingest_event(event).await?;
    tracing::info!(
        event_id = %ingested.event.id,
        incident_id = %ingested.incident.id,
        deduplicated = ingested.deduplicated,
        "message ingested"
    );
    tracing::debug!(text = %ingested.event.summary, "message text");
    let status = if ingested.deduplicated {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    Ok((
        status,
        Json(MessageResponse {
            event: ingested.event,
            incident: ingested.incident,
            deduplicated: ingested.deduplicated,
        }),
    ))
}

fn validate(request: &MessageRequest) -> Result<(), ApiError> {
    let chars = request.text.chars().count();
    if request.text.trim().is_empty() {
        return Err(ApiError::BadRequest("`text` must not be empty".into()));
    }
    if chars > MAX_TEXT_CHARS {
        return Err(ApiError::BadRequest(format!(
            "`text` has {chars} characters; at most {MAX_TEXT_CHARS} are accepted"
        )));
    }
    for (field, value) in [
        ("source", &request.source),
        ("dedup_key", &request.dedup_key),
    ] {
        if let Some(value) = value {
            if value.trim().is_empty() || value.chars().count() > MAX_LABEL_CHARS {
                return Err(ApiError::BadRequest(format!(
                    "`{field}` must be 1 to {MAX_LABEL_CHARS} characters and not blank"
                )));
            }
        }
    }
    Ok(())
}
