//! Notifications as people see them: an incident's deliveries (every attempt, with its status
//! and last error), a user's in-app inbox, and marking one read.

use axum::extract::State;
use axum::Json;
use serde::{Deserialize, Serialize};

use super::auth::{Authorized, Caller, Viewer};
use super::extract::{IdPath, QueryParams};
use super::{ApiError, AppState};
use crate::domain::{Notification, Timestamp};

/// The most in-app notifications `GET /me/notifications` answers with.
pub const MAX_INBOX: u32 = 200;

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Notifications {
    pub notifications: Vec<Notification>,
}

/// List an incident's notifications
#[utoipa::path(
    get, path = "/incidents/{id}/notifications", tag = "notifications",
    params(("id" = Uuid, Path)),
    responses((status = 200, description = "Oldest first, every channel", body = Notifications), (status = 404)),
    security(("bearer" = []))
)]
pub async fn of_incident(
    State(state): State<AppState>,
    _: Authorized<Viewer>,
    IdPath(id): IdPath,
) -> Result<Json<Notifications>, ApiError> {
    let notifications = state
        .store
        .notifications_of(id)
        .await
        .map_err(|e| ApiError::from_store(e, || format!("no incident has id {id}")))?;
    Ok(Json(Notifications { notifications }))
}

#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct InboxParams {
    /// Only those not read yet.
    unread: Option<bool>,
    /// At most this many, newest first (1–200, default 50).
    #[param(minimum = 1, maximum = 200)]
    limit: Option<u32>,
}

/// List the caller's in-app notifications
#[utoipa::path(
    get, path = "/me/notifications", tag = "notifications",
    params(InboxParams),
    responses(
        (status = 200, description = "The caller's in-app notifications, newest first", body = Notifications),
        (status = 404, description = "The token acts for no user"),
    ),
    security(("bearer" = []))
)]
pub async fn inbox(
    State(state): State<AppState>,
    Authorized(caller, _): Authorized<Viewer>,
    QueryParams(params): QueryParams<InboxParams>,
) -> Result<Json<Notifications>, ApiError> {
    let user_id = user_of(&caller)?;
    let limit = params.limit.unwrap_or(50);
    if !(1..=MAX_INBOX).contains(&limit) {
        return Err(ApiError::BadRequest(format!(
            "`limit` must be 1 to {MAX_INBOX}"
        )));
    }
    let unread = params.unread.unwrap_or(false);
    let notifications = state.store.inbox(user_id, unread, limit).await?;
    Ok(Json(Notifications { notifications }))
}

/// Mark an in-app notification read
#[utoipa::path(
    post, path = "/notifications/{id}/read", tag = "notifications",
    params(("id" = Uuid, Path)),
    responses(
        (status = 200, description = "Marked read (the first time counts)", body = Notification),
        (status = 404, description = "No in-app notification of the caller has this id"),
    ),
    security(("bearer" = []))
)]
pub async fn read(
    State(state): State<AppState>,
    Authorized(caller, _): Authorized<Viewer>,
    IdPath(id): IdPath,
) -> Result<Json<Notification>, ApiError> {
    let user_id = user_of(&caller)?;
    let notification = state
        .store
        .mark_read(id, user_id, Timestamp::now())
        .await
        .map_err(|e| ApiError::from_store(e, || format!("you have no in-app notification {id}")))?;
    Ok(Json(notification))
}

/// The id of the user the caller's token acts for.
fn user_of(caller: &Caller) -> Result<uuid::Uuid, ApiError> {
    caller.user.as_ref().map(|user| user.id).ok_or_else(|| {
        ApiError::NotFound(format!(
            "token `{}` acts for no user: in-app notifications belong to users (POST /users/{{id}}/tokens)",
            caller.name
        ))
    })
}
