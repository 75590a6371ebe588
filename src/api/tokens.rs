//! API tokens (admin only). The secret is returned once, by `POST /tokens` or
//! `POST /users/{id}/tokens`, in an answer marked `Cache-Control: no-store`; only its hash is kept.

use axum::extract::State;
use axum::http::header::CACHE_CONTROL;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Json;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::auth::{Admin, Authorized};
use super::extract::{IdPath, JsonBody};
use super::{to_completion, ApiError, AppState};
use crate::domain::{InvalidTokenName, NewToken, Role, Timestamp, Token, TokenSecret, User};
use crate::store::{Store, StoreError};

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateTokenRequest {
    /// Shown as the actor of everything done with the token. 1 to 100 characters, not blank.
    #[schema(min_length = 1, max_length = 100)]
    pub name: String,
    pub role: Role,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CreatedToken {
    pub id: Uuid,
    pub name: String,
    pub role: Role,
    /// The secret: shown this once, never again.
    pub token: String,
    pub created_at: Timestamp,
    /// The user the token acts for, if any.
    pub user_id: Option<Uuid>,
}

/// The 201 that shows a new token's secret, this once: marked `Cache-Control: no-store`.
pub fn created(token: Token, secret: &TokenSecret) -> impl IntoResponse {
    (
        StatusCode::CREATED,
        [(CACHE_CONTROL, "no-store")],
        Json(CreatedToken {
            id: token.id,
            name: token.name,
            role: token.role,
            token: secret.expose().to_owned(),
            created_at: token.created_at,
            user_id: token.user_id,
        }),
    )
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct TokenList {
    pub tokens: Vec<Token>,
}

#[derive(Debug, thiserror::Error)]
pub enum IssueError {
    #[error("invalid token name: {0}")]
    InvalidName(#[from] InvalidTokenName),
    /// A deactivated user gets no new token.
    #[error("user `{0}` is deactivated")]
    Deactivated(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Stores a token for `secret` and hands the secret back with it, for `POST /tokens`, `klaxon
/// token create` and the first-start bootstrap. This and [`issue_for_user`] are the only ways
/// tokens are made, so that each is held to the same name rule ([`NewToken::new`]).
pub async fn issue(
    store: &dyn Store,
    name: &str,
    role: Role,
    secret: TokenSecret,
) -> Result<(Token, TokenSecret), IssueError> {
    let token = NewToken::new(name, role, &secret, Timestamp::now())?;
    Ok((store.create_token(token).await?, secret))
}

/// Stores a token that acts for `user`, with the user's role, by `POST /users/{id}/tokens` and
/// `klaxon user token`. A deactivated user gets none (and a token of a user deactivated since
/// is refused when presented: see [`super::auth`]).
pub async fn issue_for_user(
    store: &dyn Store,
    user: &User,
    name: &str,
    secret: TokenSecret,
) -> Result<(Token, TokenSecret), IssueError> {
    if !user.active {
        return Err(IssueError::Deactivated(user.handle.clone()));
    }
    let token = NewToken {
        user_id: Some(user.id),
        ..NewToken::new(name, user.role, &secret, Timestamp::now())?
    };
    Ok((store.create_token(token).await?, secret))
}

/// Create an API token
#[utoipa::path(
    post, path = "/tokens", tag = "tokens", request_body = CreateTokenRequest,
    responses(
        (status = 201, body = CreatedToken, headers(
            ("Cache-Control" = String, description = "`no-store`: the answer carries a secret"),
        )),
        (status = 400), (status = 403),
    ),
    security(("bearer" = []))
)]
pub async fn create(
    State(state): State<AppState>,
    Authorized(caller, _): Authorized<Admin>,
    JsonBody(request): JsonBody<CreateTokenRequest>,
) -> Result<impl IntoResponse, ApiError> {
    let store = state.store.clone();
    let (token, secret) = to_completion(async move {
        let secret = TokenSecret::generate();
        issue(store.as_ref(), &request.name, request.role, secret).await
    })
    .await?;
    tracing::info!(token_id = %token.id, role = token.role.as_str(), by = %caller.name, "token created");
    Ok(created(token, &secret))
}

/// List API tokens
#[utoipa::path(
    get, path = "/tokens", tag = "tokens",
    responses((status = 200, description = "Every token, revoked ones included, without secrets", body = TokenList)),
    security(("bearer" = []))
)]
pub async fn list(
    State(state): State<AppState>,
    _: Authorized<Admin>,
) -> Result<Json<TokenList>, ApiError> {
    Ok(Json(TokenList {
        tokens: state.store.tokens().await?,
    }))
}

/// Revoke an API token
#[utoipa::path(
    delete, path = "/tokens/{id}", tag = "tokens", params(("id" = Uuid, Path)),
    responses(
        (status = 200, description = "Revoked (kept, marked revoked); it stops working at once", body = Token),
        (status = 404),
        (status = 409, description = "The last active admin token: create another admin token first"),
    ),
    security(("bearer" = []))
)]
pub async fn revoke(
    State(state): State<AppState>,
    Authorized(caller, _): Authorized<Admin>,
    IdPath(id): IdPath,
) -> Result<Json<Token>, ApiError> {
    let store = state.store.clone();
    let token = to_completion(async move { store.revoke_token(id, Timestamp::now()).await })
        .await
        .map_err(|e| ApiError::from_store(e, || format!("token {id} not found")))?;
    state.tokens.evict(|token| token.id == id);
    tracing::info!(token_id = %id, by = %caller.name, "token revoked");
    Ok(Json(token))
}
