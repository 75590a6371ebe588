//! The API's one error type. Every failure a handler can meet becomes an [`ApiError`], and
//! [`IntoResponse`] turns it into SPEC §4's `{"error": {"code", "message"}}` in this one place.
//! Internal errors are logged (inside the request's span, so with its request id) and never shown.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;

use super::tokens::IssueError;
use crate::domain::{Action, IncidentStatus, InvalidTransition, InvalidUser};
use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    MethodNotAllowed(String),
    #[error(transparent)]
    InvalidTransition(InvalidTransition),
    /// A unique value taken already (a user's handle), or a deactivated user given a token.
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    PayloadTooLarge(String),
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// Over a rate limit (an integration key's).
    #[error("{0}")]
    RateLimited(String),
    /// A provider refused or failed a message sent on request (a contact method's test).
    #[error("{0}")]
    BadGateway(String),
    #[error("the database is unavailable")]
    Unavailable(#[source] StoreError),
    #[error("internal error")]
    Internal(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl ApiError {
    /// Maps a store error, naming what was looked for when it is missing.
    pub fn from_store(error: StoreError, missing: impl FnOnce() -> String) -> Self {
        match error {
            StoreError::NotFound => Self::NotFound(missing()),
            StoreError::InvalidTransition(refused) => Self::InvalidTransition(refused),
            StoreError::Unavailable(_) | StoreError::Conflict(_) => Self::Unavailable(error),
            StoreError::Duplicate(message) | StoreError::Refused(message) => {
                Self::Conflict(message)
            }
            StoreError::Internal(_) => Self::Internal(Box::new(error)),
        }
    }

    fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            Self::BadRequest(_) => (StatusCode::BAD_REQUEST, "bad_request"),
            Self::Unauthorized(_) => (StatusCode::UNAUTHORIZED, "unauthorized"),
            Self::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden"),
            Self::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            Self::MethodNotAllowed(_) => (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"),
            Self::InvalidTransition(_) => (StatusCode::CONFLICT, "invalid_transition"),
            Self::Conflict(_) => (StatusCode::CONFLICT, "conflict"),
            Self::PayloadTooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large"),
            Self::UnsupportedMediaType(_) => {
                (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type")
            }
            Self::BadGateway(_) => (StatusCode::BAD_GATEWAY, "bad_gateway"),
            Self::RateLimited(_) => (StatusCode::TOO_MANY_REQUESTS, "rate_limited"),
            Self::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
            Self::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        }
    }
}

/// Store errors met outside a lookup by id (listing, ingesting) carry no name to report.
impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        Self::from_store(error, || "not found".to_owned())
    }
}

impl From<IssueError> for ApiError {
    fn from(error: IssueError) -> Self {
        match error {
            IssueError::InvalidName(invalid) => {
                Self::BadRequest(format!("invalid `name`: {invalid}"))
            }
            IssueError::Deactivated(_) => Self::Conflict(error.to_string()),
            IssueError::Store(error) => error.into(),
        }
    }
}

impl From<crate::domain::InvalidContact> for ApiError {
    fn from(invalid: crate::domain::InvalidContact) -> Self {
        Self::BadRequest(invalid.to_string())
    }
}

/// The message names the field at fault: "`email` must be an address like …".
impl From<InvalidUser> for ApiError {
    fn from(invalid: InvalidUser) -> Self {
        Self::BadRequest(invalid.to_string())
    }
}

/// What a 503 asks clients to wait before trying again, in seconds: about how often the store
/// probes a database that is away (`store::availability::MAX_PROBE_INTERVAL`).
pub const RETRY_AFTER_SECONDS: &str = "1";

/// The body of every error response.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
    /// With `invalid_transition`: the incident's current status (also inside `error`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<IncidentStatus>,
    /// With `invalid_transition`: the refused action (also inside `error`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub action: Option<Action>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ErrorDetail {
    /// `bad_request`, `unauthorized`, `forbidden`, `not_found`, `invalid_transition`, `conflict`,
    /// `payload_too_large`, `unsupported_media_type`, `rate_limited`, `bad_gateway`, `unavailable`,
    /// `internal`;
    /// below the router (`crate::http`): `request_timeout`, `request_header_fields_too_large`.
    pub code: &'static str,
    /// What went wrong, naming the field at fault.
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<IncidentStatus>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub action: Option<Action>,
}

impl ErrorBody {
    /// An error with no incident status or action attached.
    pub fn new(code: &'static str, message: String) -> Self {
        Self {
            error: ErrorDetail {
                code,
                message,
                status: None,
                action: None,
            },
            status: None,
            action: None,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();
        match &self {
            // An unreachable database is reported once, by the store's gate, not per request.
            Self::Unavailable(error) if error.is_unreachable() => {
                tracing::debug!(%error, "database unreachable")
            }
            Self::Unavailable(error) => tracing::warn!(%error, "database unavailable"),
            Self::Internal(error) => tracing::error!(%error, "internal error"),
            _ => {}
        }
        let refused = match &self {
            Self::InvalidTransition(refused) => Some(*refused),
            _ => None,
        };
        let body = ErrorBody {
            error: ErrorDetail {
                code,
                message: self.to_string(),
                status: refused.map(|r| r.status),
                action: refused.map(|r| r.action),
            },
            status: refused.map(|r| r.status),
            action: refused.map(|r| r.action),
        };
        let mut response = (status, Json(body)).into_response();
        if status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if status == StatusCode::SERVICE_UNAVAILABLE || status == StatusCode::TOO_MANY_REQUESTS {
            response.headers_mut().insert(
                header::RETRY_AFTER,
                HeaderValue::from_static(RETRY_AFTER_SECONDS),
            );
        }
        response
    }
}
