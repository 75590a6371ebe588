//! Live tokens by the hash of their secret, so that authenticating a request does not cost a
//! database read.
//!
//! A cached token is used only while every revocation is sure to reach this cache: on SQLite
//! always (the one process serving the API on that file revokes through it), on PostgreSQL only
//! while this process listens on the `klaxon_tokens` channel, where every revocation is
//! announced in its own transaction. Whenever that is not so, every request reads the database,
//! as before: a revoked token stops working at once, on every instance.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::RwLock;

use uuid::Uuid;

use crate::domain::Token;

/// The cache is emptied when it would grow past this many tokens.
const MAX_CACHED_TOKENS: usize = 10_000;

#[derive(Debug, Default)]
pub struct TokenCache {
    tokens: RwLock<HashMap<String, Token>>,
    trusted: AtomicBool,
}

impl TokenCache {
    pub fn new(trusted: bool) -> Self {
        Self {
            tokens: RwLock::default(),
            trusted: AtomicBool::new(trusted),
        }
    }

    /// The live token with this secret hash, if it is cached and the cache can be trusted.
    pub fn get(&self, secret_hash: &str) -> Option<Token> {
        if !self.trusted.load(Ordering::SeqCst) {
            return None;
        }
        self.tokens.read().ok()?.get(secret_hash).cloned()
    }

    /// Remembers a live token just read from the database.
    pub fn insert(&self, secret_hash: String, token: Token) {
        if token.is_revoked() || !self.trusted.load(Ordering::SeqCst) {
            return;
        }
        if let Ok(mut tokens) = self.tokens.write() {
            if tokens.len() >= MAX_CACHED_TOKENS {
                tokens.clear();
            }
            tokens.insert(secret_hash, token);
        }
    }

    /// Forgets the token `id`: it has just been revoked, here or on another instance.
    pub fn evict(&self, id: Uuid) {
        if let Ok(mut tokens) = self.tokens.write() {
            tokens.retain(|_, token| token.id != id);
        }
    }

    /// Whether revocations are known to reach this cache; when not, it is emptied and bypassed.
    pub fn set_trusted(&self, trusted: bool) {
        if !trusted {
            if let Ok(mut tokens) = self.tokens.write() {
                tokens.clear();
            }
        }
        self.trusted.store(trusted, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Role, Timestamp};

    fn token() -> Token {
        Token {
            id: Uuid::now_v7(),
            name: "ci".into(),
            role: Role::Responder,
            created_at: Timestamp::now(),
            revoked_at: None,
        }
    }

    #[test]
    fn serves_live_tokens_only_while_trusted() {
        let cache = TokenCache::new(true);
        let live = token();
        cache.insert("h".into(), live.clone());
        assert_eq!(cache.get("h"), Some(live.clone()));
        cache.evict(live.id);
        assert_eq!(cache.get("h"), None);

        let revoked = Token {
            revoked_at: Some(Timestamp::now()),
            ..token()
        };
        cache.insert("r".into(), revoked);
        assert_eq!(cache.get("r"), None, "revoked tokens are never cached");

        cache.insert("h".into(), live.clone());
        cache.set_trusted(false);
        assert_eq!(cache.get("h"), None);
        cache.insert("h".into(), live);
        cache.set_trusted(true);
        assert_eq!(
            cache.get("h"),
            None,
            "nothing cached while untrusted survives"
        );
    }
}
