//! Bearer-token authentication and role checks.
//!
//! A handler states the role it needs in its signature: `Authorized<Responder>` extracts the
//! caller only if it presents a live token whose role includes responder. The token is looked up
//! by its hash, through a cache that a revocation empties at once on every instance (see
//! [`super::token_cache`]).

use std::marker::PhantomData;

use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use axum::http::HeaderMap;

use super::{ApiError, AppState};
use crate::domain::{Role, TokenSecret};

/// Who is calling: the token's name is the actor recorded in the timeline.
#[derive(Debug, Clone)]
pub struct Caller {
    pub name: String,
    pub role: Role,
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
        let caller = authenticate(parts, state).await?;
        if !caller.role.allows(R::ROLE) {
            return Err(ApiError::Forbidden(format!(
                "this needs the {} role; token `{}` has the {} role",
                R::ROLE.as_str(),
                caller.name,
                caller.role.as_str()
            )));
        }
        Ok(Self(caller, PhantomData))
    }
}

async fn authenticate(parts: &Parts, state: &AppState) -> Result<Caller, ApiError> {
    let presented = bearer_secret(&parts.headers)?;
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
            state.tokens.insert(hash, token.clone(), generation);
            token
        }
    };
    if token.is_revoked() {
        return Err(ApiError::Unauthorized(format!(
            "token `{}` has been revoked",
            token.name
        )));
    }
    Ok(Caller {
        name: token.name,
        role: token.role,
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
