//! Users (SPEC §4): registered and changed by admins, read by anyone with a token; never deleted,
//! only deactivated. A user's tokens act with the user's handle and current role (see
//! [`super::auth`]), and `GET /me` answers who the caller is.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Json;
use serde::de::IgnoredAny;
use serde::{Deserialize, Deserializer, Serialize};
use uuid::Uuid;

use super::auth::{Admin, Authorized, Viewer};
use super::extract::{IdPath, JsonBody};
use super::tokens::{self, CreatedToken};
use super::{to_completion, ApiError, AppState};
use crate::domain::{InvalidUser, Role, Timestamp, TokenSecret, User, UserChange, UserFields};
use crate::store::StoreError;

fn missing(id: Uuid) -> impl FnOnce() -> String {
    move || format!("user {id} not found")
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateUserRequest {
    /// Unique, and never changed: the timeline names the user by it.
    #[schema(max_length = 64, pattern = "^[a-z0-9][a-z0-9._-]*$")]
    pub handle: String,
    #[schema(max_length = 200)]
    pub name: String,
    #[schema(max_length = 254)]
    pub email: String,
    /// E.164, such as `+14155550100`.
    #[schema(pattern = r"^\+[1-9][0-9]{1,14}$")]
    pub phone: Option<String>,
    /// `responder` if not given.
    pub role: Option<Role>,
    /// An IANA time zone name; `UTC` if not given.
    pub time_zone: Option<String>,
}

/// The body of `PATCH /users/{id}`: the fields given are set, the others kept. The handle cannot
/// change.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UserPatch {
    #[serde(default, deserialize_with = "given")]
    #[schema(value_type = String, max_length = 200)]
    pub name: Option<String>,
    #[serde(default, deserialize_with = "given")]
    #[schema(value_type = String, max_length = 254)]
    pub email: Option<String>,
    /// E.164; `null` clears it.
    #[serde(default, deserialize_with = "given")]
    #[schema(value_type = Option<String>, pattern = r"^\+[1-9][0-9]{1,14}$")]
    pub phone: Option<Option<String>>,
    #[serde(default, deserialize_with = "given")]
    #[schema(value_type = Role)]
    pub role: Option<Role>,
    #[serde(default, deserialize_with = "given")]
    #[schema(value_type = String)]
    pub time_zone: Option<String>,
    /// `false` deactivates the user: their tokens stop working at once, their history stays.
    #[serde(default, deserialize_with = "given")]
    #[schema(value_type = bool)]
    pub active: Option<bool>,
    /// Accepted only to be refused with a message that says why, rather than as an unknown field.
    #[serde(default, deserialize_with = "given")]
    #[schema(ignore)]
    pub handle: Option<IgnoredAny>,
}

/// A field that is present, even as `null`, is `Some` of its value; with `#[serde(default)]` an
/// absent one is `None`. So a patch tells "not given" from "given as `null`", which clears a
/// phone and is refused for the fields that cannot be empty.
fn given<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    T::deserialize(deserializer).map(Some)
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct UserList {
    /// Active or not, by handle.
    pub users: Vec<User>,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateUserTokenRequest {
    /// What the token is for (a laptop, a phone). 1 to 100 characters, not blank.
    #[schema(min_length = 1, max_length = 100)]
    pub name: String,
}

/// Create a user
#[utoipa::path(
    post, path = "/users", tag = "users", request_body = CreateUserRequest,
    responses(
        (status = 201, description = "Active", body = User),
        (status = 409, description = "The handle is taken"),
    ),
    security(("bearer" = []))
)]
pub async fn create(
    State(state): State<AppState>,
    Authorized(caller, _): Authorized<Admin>,
    JsonBody(request): JsonBody<CreateUserRequest>,
) -> Result<(StatusCode, Json<User>), ApiError> {
    let fields = UserFields {
        handle: request.handle,
        name: request.name,
        email: request.email,
        phone: request.phone,
        role: request.role,
        time_zone: request.time_zone,
    };
    let user = User::new(fields, Timestamp::now())?;
    let store = state.store.clone();
    let user = to_completion(async move { store.create_user(&user).await }).await?;
    tracing::info!(user_id = %user.id, handle = %user.handle, by = %caller.name, "user created");
    Ok((StatusCode::CREATED, Json(user)))
}

/// List users
#[utoipa::path(
    get, path = "/users", tag = "users",
    responses((status = 200, body = UserList)),
    security(("bearer" = []))
)]
pub async fn list(
    State(state): State<AppState>,
    _: Authorized<Viewer>,
) -> Result<Json<UserList>, ApiError> {
    Ok(Json(UserList {
        users: state.store.users().await?,
    }))
}

/// Get a user
#[utoipa::path(
    get, path = "/users/{id}", tag = "users", params(("id" = Uuid, Path)),
    responses((status = 200, body = User), (status = 404)),
    security(("bearer" = []))
)]
pub async fn get(
    State(state): State<AppState>,
    _: Authorized<Viewer>,
    IdPath(id): IdPath,
) -> Result<Json<User>, ApiError> {
    let user = state
        .store
        .user(id)
        .await
        .map_err(|e| ApiError::from_store(e, missing(id)))?;
    Ok(Json(user))
}

/// Change a user
#[utoipa::path(
    patch, path = "/users/{id}", tag = "users", params(("id" = Uuid, Path)),
    request_body = UserPatch,
    responses((status = 200, body = User), (status = 404)),
    security(("bearer" = []))
)]
pub async fn update(
    State(state): State<AppState>,
    Authorized(caller, _): Authorized<Admin>,
    IdPath(id): IdPath,
    JsonBody(patch): JsonBody<UserPatch>,
) -> Result<Json<User>, ApiError> {
    if patch.handle.is_some() {
        return Err(ApiError::BadRequest(
            "`handle` cannot change: the timeline names the user by it".into(),
        ));
    }
    let change = UserChange {
        name: patch.name,
        email: patch.email,
        phone: patch.phone,
        role: patch.role,
        time_zone: patch.time_zone,
        active: patch.active,
    };
    let store = state.store.clone();
    // Read, change, store if unchanged since the read; a concurrent change is read again and this
    // one applied over it, so neither is lost.
    let user = to_completion(async move {
        loop {
            let user = store.user(id).await?;
            let changed = user.changed(change.clone(), Timestamp::now())?;
            if let Some(stored) = store.update_user(&changed).await? {
                return Ok(stored);
            }
        }
    })
    .await
    .map_err(|e: UpdateError| match e {
        UpdateError::Store(e) => ApiError::from_store(e, missing(id)),
        UpdateError::Invalid(invalid) => invalid.into(),
    })?;
    tracing::info!(user_id = %id, role = user.role.as_str(), active = user.active, by = %caller.name, "user updated");
    Ok(Json(user))
}

/// Why a user's change was not stored.
#[derive(Debug, thiserror::Error)]
enum UpdateError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Invalid(#[from] InvalidUser),
}

/// Create a token that acts for a user
#[utoipa::path(
    post, path = "/users/{id}/tokens", tag = "users", params(("id" = Uuid, Path)),
    request_body = CreateUserTokenRequest,
    responses(
        (status = 201, description = "A token that acts with the user's handle and current role", body = CreatedToken, headers(
            ("Cache-Control" = String, description = "`no-store`: the answer carries a secret"),
        )),
        (status = 404), (status = 409, description = "The user is deactivated"),
    ),
    security(("bearer" = []))
)]
pub async fn create_token(
    State(state): State<AppState>,
    Authorized(caller, _): Authorized<Admin>,
    IdPath(id): IdPath,
    JsonBody(request): JsonBody<CreateUserTokenRequest>,
) -> Result<impl IntoResponse, ApiError> {
    let user = state
        .store
        .user(id)
        .await
        .map_err(|e| ApiError::from_store(e, missing(id)))?;
    let store = state.store.clone();
    let (token, secret) = to_completion(async move {
        let secret = TokenSecret::generate();
        tokens::issue_for_user(store.as_ref(), &user, &request.name, secret).await
    })
    .await?;
    tracing::info!(token_id = %token.id, user_id = %id, by = %caller.name, "user token created");
    Ok(tokens::created(token, &secret))
}

/// Who the caller is
#[utoipa::path(
    get, path = "/me", tag = "users",
    responses(
        (status = 200, description = "The user the caller's token acts for", body = User),
        (status = 404, description = "The token acts for no user"),
    ),
    security(("bearer" = []))
)]
pub async fn me(Authorized(caller, _): Authorized<Viewer>) -> Result<Json<User>, ApiError> {
    caller.user.map(Json).ok_or_else(|| {
        ApiError::NotFound(format!(
            "token `{}` acts for no user; `/me` answers for a user's token",
            caller.name
        ))
    })
}
