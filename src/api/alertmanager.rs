//! `POST /integrations/alertmanager`: Alertmanager's webhook (payload version 4), with a
//! service's integration key as the bearer token. One incident per alert group, keyed by the
//! group's `groupKey` (never by the summary text, which would merge distinct alerts): firing
//! alerts open or join it, Alertmanager's re-sends of the group (every `group_interval` and
//! `repeat_interval`) join it, and the group resolving resolves it.

use std::collections::BTreeMap;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::cache::KeyRoute;
use super::extract::{field_with_nul, NUL_REFUSED};
use super::services::{act_on_live, route};
use super::{ApiError, AppState};
use crate::domain::token::hex;
use crate::domain::{Action, NewEvent, Severity, Timestamp, TokenSecret};

/// Alertmanager's webhook payload, version 4: the parts Klaxon reads (the rest is kept whole as
/// the event's payload).
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct Notification {
    pub version: String,
    #[serde(rename = "groupKey")]
    pub group_key: String,
    /// `firing` or `resolved`.
    pub status: String,
    #[serde(default, rename = "groupLabels")]
    pub group_labels: BTreeMap<String, String>,
    #[serde(default, rename = "commonLabels")]
    pub common_labels: BTreeMap<String, String>,
    #[serde(default, rename = "commonAnnotations")]
    pub common_annotations: BTreeMap<String, String>,
    #[serde(default, rename = "externalURL")]
    pub external_url: String,
    #[serde(default)]
    #[schema(value_type = Vec<Object>)]
    pub alerts: Vec<Value>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Received {
    /// `triggered` (opened or joined), `resolved`, or `ignored` (resolved, but nothing was live).
    pub result: &'static str,
    pub incident_id: Option<Uuid>,
}

/// The longest `dedup_key` an incident takes; a longer `groupKey` is keyed by its SHA-256.
const MAX_DEDUP_KEY_CHARS: usize = 255;

/// What a group is keyed by: its `groupKey`, or, if that is too long, a digest of it.
fn dedup_key_of(group_key: &str) -> String {
    if group_key.chars().count() <= MAX_DEDUP_KEY_CHARS {
        group_key.to_owned()
    } else {
        format!("am:{}", hex(&Sha256::digest(group_key.as_bytes())))
    }
}

/// The group's title: its summary annotation, else its description, else its alert name, else
/// its labels.
fn summary_of(notification: &Notification) -> String {
    let first = notification.alerts.first();
    let annotation = |name: &str| {
        notification
            .common_annotations
            .get(name)
            .cloned()
            .or_else(|| {
                first
                    .and_then(|alert| alert["annotations"][name].as_str())
                    .map(str::to_owned)
            })
    };
    annotation("summary")
        .or_else(|| annotation("description"))
        .or_else(|| notification.common_labels.get("alertname").cloned())
        .unwrap_or_else(|| {
            let labels: Vec<String> = notification
                .group_labels
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            format!("Alertmanager group {{{}}}", labels.join(", "))
        })
}

/// The `severity` label, read the way Prometheus rules spell it; `error` when absent or unknown.
fn severity_of(notification: &Notification) -> Severity {
    match notification
        .common_labels
        .get("severity")
        .map(|s| s.to_ascii_lowercase())
        .as_deref()
    {
        Some("critical" | "page" | "emergency") => Severity::Critical,
        Some("warning" | "warn") => Severity::Warning,
        Some("info" | "informational" | "none") => Severity::Info,
        _ => Severity::Error,
    }
}

/// Where the live integration key that is the request's bearer token routes events.
async fn route_of(state: &AppState, headers: &HeaderMap) -> Result<KeyRoute, ApiError> {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token)
        .ok_or_else(|| {
            ApiError::Unauthorized(
                "send the service's integration key as `Authorization: Bearer <key>`".into(),
            )
        })?;
    let secret = TokenSecret::from_presented(token.trim());
    let route = route(state, &secret)
        .await?
        .ok_or_else(|| ApiError::Unauthorized("not a live integration key".into()))?;
    state.key_limit.allow(&secret.hash()).map_err(|_| {
        ApiError::RateLimited(
            "events for this integration key are arriving too quickly; retry later".into(),
        )
    })?;
    Ok(route)
}

/// Receive an Alertmanager webhook notification (payload version 4)
#[utoipa::path(
    post, path = "/integrations/alertmanager", tag = "integrations",
    request_body = Notification,
    responses(
        (status = 200, description = "Committed", body = Received),
        (status = 400, description = "Not Alertmanager's webhook payload version 4"),
        (status = 401, description = "Missing, unknown or revoked integration key"),
        (status = 429, description = "Over the key's rate limit (`[integrations] rate_limit`)"),
    ),
    security(("bearer" = []))
)]
pub async fn receive(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<(StatusCode, Json<Received>), ApiError> {
    let KeyRoute { service, target } = route_of(&state, &headers).await?;
    if let Some(path) = field_with_nul(&body) {
        return Err(ApiError::BadRequest(format!(
            "invalid `{path}`: {NUL_REFUSED}"
        )));
    }
    let payload: Value = serde_json::from_slice(&body)
        .map_err(|error| ApiError::BadRequest(format!("the body is not JSON: {error}")))?;
    let notification: Notification = serde_json::from_value(payload.clone()).map_err(|error| {
        ApiError::BadRequest(format!("not Alertmanager's webhook payload: {error}"))
    })?;
    if notification.version != "4" {
        return Err(ApiError::BadRequest(format!(
            "payload version {:?}; Klaxon reads version \"4\"",
            notification.version
        )));
    }
    let dedup_key = dedup_key_of(&notification.group_key);
    let actor = format!("alertmanager:{}", service.name);
    match notification.status.as_str() {
        "firing" => {
            let event = NewEvent {
                source: if notification.external_url.is_empty() {
                    "alertmanager".into()
                } else {
                    notification.external_url.clone()
                },
                summary: summary_of(&notification),
                severity: severity_of(&notification),
                dedup_key: Some(dedup_key),
                payload,
                actor,
                received_at: Timestamp::now(),
                service: Some(target),
            };
            let ingested = state.ingest_event(event).await?;
            tracing::info!(incident_id = %ingested.incident.id, service_id = %service.id, deduplicated = ingested.deduplicated, "alert group firing");
            Ok((
                StatusCode::OK,
                Json(Received {
                    result: "triggered",
                    incident_id: Some(ingested.incident.id),
                }),
            ))
        }
        "resolved" => {
            let note = "the alert group resolved in Alertmanager";
            let resolved =
                act_on_live(&state, service.id, &dedup_key, Action::Resolve, actor, note).await?;
            let result = if resolved.is_some() {
                "resolved"
            } else {
                "ignored"
            };
            Ok((
                StatusCode::OK,
                Json(Received {
                    result,
                    incident_id: resolved,
                }),
            ))
        }
        other => Err(ApiError::BadRequest(format!(
            "`status` {other:?}; expected \"firing\" or \"resolved\""
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn notification(labels: &[(&str, &str)], annotations: &[(&str, &str)]) -> Notification {
        let map = |pairs: &[(&str, &str)]| {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        Notification {
            version: "4".into(),
            group_key: "{}:{alertname=\"DiskFull\"}".into(),
            status: "firing".into(),
            group_labels: map(&[("alertname", "DiskFull")]),
            common_labels: map(labels),
            common_annotations: map(annotations),
            external_url: String::new(),
            alerts: Vec::new(),
        }
    }

    #[test]
    fn a_group_is_titled_by_its_summary_else_its_name_and_graded_by_its_severity_label() {
        let full = notification(
            &[("alertname", "DiskFull"), ("severity", "critical")],
            &[("summary", "disk full on db-1")],
        );
        assert_eq!(summary_of(&full), "disk full on db-1");
        assert_eq!(severity_of(&full), Severity::Critical);
        let bare = notification(&[("alertname", "DiskFull")], &[]);
        assert_eq!(summary_of(&bare), "DiskFull");
        assert_eq!(severity_of(&bare), Severity::Error);
        let warn = notification(&[("severity", "Warning")], &[]);
        assert_eq!(severity_of(&warn), Severity::Warning);
    }

    #[test]
    fn long_group_keys_are_keyed_by_their_digest() {
        assert_eq!(dedup_key_of("{}:{a=\"b\"}"), "{}:{a=\"b\"}");
        let long = "x".repeat(300);
        let key = dedup_key_of(&long);
        assert!(key.starts_with("am:") && key.len() == 67);
        assert_eq!(key, dedup_key_of(&long));
    }
}
