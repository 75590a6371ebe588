//! Bearer-token authentication and role checks.
//!
//! A handler states the role it needs in its signature: `Authorized<Responder>` extracts the
//! caller only if it presents a live token whose role includes responder. The token is looked up
//! by its hash, through a cache that a revocation empties at once on every instance (see
//! [`super::cache`]).
//!
//! A token that acts for a user is worth what the user is now: the user is read from the store on
//! every request, never cached, so that a deactivation or a change of role applies at once on
//! every instance. The caller then acts with the user's handle and current role.

use std::marker::PhantomData;

use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use axum::http::HeaderMap;

use super::{ApiError, AppState};
use crate::domain::{Role, TokenSecret, User};

/// Who is calling.
#[derive(Debug, Clone)]
pub struct Caller {
    /// The actor recorded in the timeline: the user's handle, or the token's name for a token
    /// that acts for no user.
    pub name: String,
    /// The user's current role, or the token's own.
    pub role: Role,
    /// The user the token acts for, as read on this request.
    pub user: Option<User>,
}

impl Caller {
    /// How an error message names the caller.
    fn described(&self) -> String {
        match &self.user {
            Some(user) => format!("user `{}`", user.handle),
            None => format!("token `{}`", self.name),
        }
    }
}

/// The least role a route needs.
pub trait Requirement: Send + Sync {
    const ROLE: Role;
}

/// Read-only access.
pub struct Viewer;
/// Submit messages and act on incidents.
pub struct Responder;
/// Everything, including tokens.
pub struct Admin;

impl Requirement for Viewer {
    const ROLE: Role = Role::Viewer;
}
impl Requirement for Responder {
    const ROLE: Role = Role::Responder;
}
impl Requirement for Admin {
    const ROLE: Role = Role::Admin;
}

/// A caller whose token is valid and whose role includes `R`.
pub struct Authorized<R>(pub Caller, pub PhantomData<R>);

impl<R: Requirement> FromRequestParts<AppState> for Authorized<R> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let caller = authenticate(bearer_secret(&parts.headers)?, state).await?;
        Ok(Self(allowed::<R>(caller)?, PhantomData))
    }
}

/// The query parameter a feed takes its token from.
pub const FEED_TOKEN_PARAMETER: &str = "token";

/// A caller whose role includes `R`, by the `Authorization` header as [`Authorized`] takes it
/// or, without one, by the `token` query parameter: for feeds that calendar clients fetch, which
/// cannot send headers. Requests are logged by path, never with their query, so the token stays
/// out of the logs.
pub struct FeedAuthorized<R>(pub Caller, pub PhantomData<R>);

impl<R: Requirement> FromRequestParts<AppState> for FeedAuthorized<R> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let caller = if parts.headers.contains_key(AUTHORIZATION) {
            authenticate(bearer_secret(&parts.headers)?, state).await?
        } else {
            let query = parts.uri.query().unwrap_or_default();
            let secret = form_urlencoded::parse(query.as_bytes())
                .find(|(name, _)| name == FEED_TOKEN_PARAMETER)
                .map(|(_, secret)| secret.trim().to_owned())
                .filter(|secret| !secret.is_empty())
                .ok_or_else(|| {
                    ApiError::Unauthorized(
                        "missing token: add `?token=<token>` or send `Authorization: Bearer <token>`"
                            .into(),
                    )
                })?;
            authenticate(&secret, state).await?
        };
        Ok(Self(allowed::<R>(caller)?, PhantomData))
    }
}

/// `caller`, if their role includes `R`'s.
fn allowed<R: Requirement>(caller: Caller) -> Result<Caller, ApiError> {
    if !caller.role.allows(R::ROLE) {
        return Err(ApiError::Forbidden(format!(
            "this needs the {} role; {} has the {} role",
            R::ROLE.as_str(),
            caller.described(),
            caller.role.as_str()
        )));
    }
    Ok(caller)
}

/// Who presents the token `presented`.
async fn authenticate(presented: &str, state: &AppState) -> Result<Caller, ApiError> {
    let hash = TokenSecret::from_presented(presented).hash();
    let token = match state.tokens.get(&hash) {
        Some(token) => token,
        None => {
            let generation = state.tokens.generation();
            let token = state
                .store
                .token_by_hash(&hash)
                .await?
                .ok_or_else(|| ApiError::Unauthorized("invalid token".into()))?;
            state.tokens.remember(hash, token.clone(), generation);
            token
        }
    };
    if token.is_revoked() {
        return Err(ApiError::Unauthorized(format!(
            "token `{}` has been revoked",
            token.name
        )));
    }
    let Some(user_id) = token.user_id else {
        return Ok(Caller {
            name: token.name,
            role: token.role,
            user: None,
        });
    };
    let user = state.store.user(user_id).await?;
    if !user.active {
        return Err(ApiError::Unauthorized(format!(
            "user `{}` is deactivated; their tokens no longer work",
            user.handle
        )));
    }
    Ok(Caller {
        name: user.handle.clone(),
        role: user.role,
        user: Some(user),
    })
}

/// The secret of the request's one `Authorization: Bearer <token>` header. The scheme is matched
/// whatever its case (RFC 7235 §2.1). Two headers are refused rather than letting one of them win,
/// since a proxy and the client may each have meant theirs.
fn bearer_secret(headers: &HeaderMap) -> Result<&str, ApiError> {
    let mut values = headers.get_all(AUTHORIZATION).iter();
    let value = values.next().ok_or_else(|| {
        ApiError::Unauthorized("missing token: send `Authorization: Bearer <token>`".into())
    })?;
    if values.next().is_some() {
        return Err(ApiError::BadRequest(
            "send one `Authorization` header; this request has several".into(),
        ));
    }
    value
        .to_str()
        .ok()
        .and_then(|value| value.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, secret)| secret.trim())
        .filter(|secret| !secret.is_empty())
        .ok_or_else(|| {
            ApiError::Unauthorized(
                "malformed `Authorization` header: expected `Bearer <token>`".into(),
            )
        })
}
