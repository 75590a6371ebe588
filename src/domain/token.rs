//! API tokens and roles. A token's secret is shown once, at creation; only its SHA-256 is stored.

use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::Timestamp;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Everything, including tokens.
    Admin,
    /// Submits messages, acts on incidents, reads.
    Responder,
    /// Reads.
    Viewer,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Admin => "admin",
            Self::Responder => "responder",
            Self::Viewer => "viewer",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        [Self::Admin, Self::Responder, Self::Viewer]
            .into_iter()
            .find(|role| role.as_str() == text)
    }

    /// Whether this role includes everything `required` may do.
    pub fn allows(self, required: Role) -> bool {
        self.rank() >= required.rank()
    }

    fn rank(self) -> u8 {
        match self {
            Self::Viewer => 0,
            Self::Responder => 1,
            Self::Admin => 2,
        }
    }
}

/// The prefix of every secret Klaxon generates, so that leaked tokens are easy to scan for.
pub const SECRET_PREFIX: &str = "klx_";

/// A bearer secret. Deliberately not `Debug` or `Display`, so that it cannot reach a log line.
pub struct TokenSecret(String);

impl TokenSecret {
    /// 256 random bits, hex-encoded behind [`SECRET_PREFIX`].
    pub fn generate() -> Self {
        let mut bytes = [0u8; 32];
        rand::rng().fill_bytes(&mut bytes);
        Self(format!("{SECRET_PREFIX}{}", hex(&bytes)))
    }

    /// A secret chosen by the operator (the bootstrap admin token) or presented by a caller.
    pub fn from_presented(secret: impl Into<String>) -> Self {
        Self(secret.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }

    /// What the store keeps and looks tokens up by: the hex SHA-256 of the secret.
    pub fn hash(&self) -> String {
        hex(&Sha256::digest(self.0.as_bytes()))
    }
}

/// Lowercase hex: token hashes, link signatures, digest keys. Hashing runs on every authenticated
/// request, so no allocation per byte.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut text = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        text.push(DIGITS[usize::from(byte >> 4)] as char);
        text.push(DIGITS[usize::from(byte & 0xf)] as char);
    }
    text
}

/// The longest token name, in characters.
pub const MAX_TOKEN_NAME_CHARS: usize = 100;

/// A token name that is blank or longer than [`MAX_TOKEN_NAME_CHARS`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("must be 1 to {MAX_TOKEN_NAME_CHARS} characters, not blank")]
pub struct InvalidTokenName;

/// `name` trimmed, if it is a valid token name: not blank, at most [`MAX_TOKEN_NAME_CHARS`].
pub fn token_name(name: &str) -> Result<&str, InvalidTokenName> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > MAX_TOKEN_NAME_CHARS {
        return Err(InvalidTokenName);
    }
    Ok(name)
}

#[derive(Debug, Clone)]
pub struct NewToken {
    pub name: String,
    pub role: Role,
    pub secret_hash: String,
    pub created_at: Timestamp,
    /// The user the token acts for, if any.
    pub user_id: Option<Uuid>,
}

impl NewToken {
    /// A token for `secret`, named `name` trimmed. The name is shown as the actor of everything
    /// done with the token, so it must say something and fit on a line.
    pub fn new(
        name: &str,
        role: Role,
        secret: &TokenSecret,
        created_at: Timestamp,
    ) -> Result<Self, InvalidTokenName> {
        Ok(Self {
            name: token_name(name)?.to_owned(),
            role,
            secret_hash: secret.hash(),
            created_at,
            user_id: None,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Token {
    pub id: Uuid,
    pub name: String,
    /// For a user's token, the user's role when it was issued: the token acts with the user's
    /// current role.
    pub role: Role,
    pub created_at: Timestamp,
    pub revoked_at: Option<Timestamp>,
    /// The user the token acts for: its actions are attributed to the user's handle.
    pub user_id: Option<Uuid>,
}

impl Token {
    pub fn is_revoked(&self) -> bool {
        self.revoked_at.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_are_ordered() {
        assert!(Role::Admin.allows(Role::Responder));
        assert!(Role::Responder.allows(Role::Viewer));
        assert!(!Role::Viewer.allows(Role::Responder));
        assert!(!Role::Responder.allows(Role::Admin));
    }

    #[test]
    fn hashes_are_the_hex_sha256() {
        let secret = TokenSecret::from_presented("abc");
        assert_eq!(
            secret.hash(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn names_are_trimmed_and_between_1_and_100_characters() {
        let secret = TokenSecret::generate();
        let named = |name: &str| NewToken::new(name, Role::Viewer, &secret, Timestamp::now());
        assert_eq!(named("  ci \n").unwrap().name, "ci");
        assert_eq!(named(&"é".repeat(100)).unwrap().name.chars().count(), 100);
        assert_eq!(named(&"é".repeat(101)).unwrap_err(), InvalidTokenName);
        assert_eq!(named("").unwrap_err(), InvalidTokenName);
        assert_eq!(named(" \t ").unwrap_err(), InvalidTokenName);
        assert_eq!(named("ci").unwrap().secret_hash, secret.hash());
    }

    #[test]
    fn secrets_are_unique_and_hash_stably() {
        let a = TokenSecret::generate();
        let b = TokenSecret::generate();
        assert_ne!(a.expose(), b.expose());
        assert!(a.expose().starts_with(SECRET_PREFIX));
        assert_eq!(a.hash(), TokenSecret::from_presented(a.expose()).hash());
        assert_eq!(a.hash().len(), 64);
    }
}
