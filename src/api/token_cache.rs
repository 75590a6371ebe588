//! Live tokens by the hash of their secret, so that authenticating a request does not cost a
//! database read.
//!
//! A cached token is used only while every revocation is sure to reach this cache: on SQLite
//! always (the one process serving the API on that file revokes through it), on PostgreSQL only
//! while this process listens on the `klaxon_tokens` channel, where every revocation is
//! announced in its own transaction. Whenever that is not so, every request reads the database,
//! as before: a revoked token stops working at once, on every instance.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::RwLock;

use uuid::Uuid;

use crate::domain::Token;
use crate::store::listen::{Announcement, Audience};

/// The cache is emptied when it would grow past this many tokens.
const MAX_CACHED_TOKENS: usize = 10_000;

#[derive(Debug, Default)]
pub struct TokenCache {
    tokens: RwLock<HashMap<String, Token>>,
    trusted: AtomicBool,
    /// Bumped by every eviction: a token read from the database before a revocation was
    /// announced must not be cached after it.
    generation: AtomicU64,
}

impl TokenCache {
    pub fn new(trusted: bool) -> Self {
        Self {
            trusted: AtomicBool::new(trusted),
            ..Self::default()
        }
    }

    /// Read before looking a token up in the database, and handed back to [`TokenCache::insert`].
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::SeqCst)
    }

    /// The live token with this secret hash, if it is cached and the cache can be trusted.
    pub fn get(&self, secret_hash: &str) -> Option<Token> {
        if !self.trusted.load(Ordering::SeqCst) {
            return None;
        }
        self.tokens.read().ok()?.get(secret_hash).cloned()
    }

    /// Remembers a live token read from the database, unless something was evicted since
    /// `generation` was read (that read may predate a revocation).
    pub fn insert(&self, secret_hash: String, token: Token, generation: u64) {
        if token.is_revoked() || !self.trusted.load(Ordering::SeqCst) {
            return;
        }
        if let Ok(mut tokens) = self.tokens.write() {
            if self.generation() != generation {
                return;
            }
            if tokens.len() >= MAX_CACHED_TOKENS {
                tokens.clear();
            }
            tokens.insert(secret_hash, token);
        }
    }

    /// Forgets the token `id`: it has just been revoked, here or on another instance.
    pub fn evict(&self, id: Uuid) {
        if let Ok(mut tokens) = self.tokens.write() {
            self.generation.fetch_add(1, Ordering::SeqCst);
            tokens.retain(|_, token| token.id != id);
        }
    }

    /// Whether revocations are known to reach this cache; when not, it is emptied and bypassed.
    fn set_trusted(&self, trusted: bool) {
        if !trusted {
            if let Ok(mut tokens) = self.tokens.write() {
                self.generation.fetch_add(1, Ordering::SeqCst);
                tokens.clear();
            }
        }
        self.trusted.store(trusted, Ordering::SeqCst);
    }
}

/// What the PostgreSQL listener hears: revocations on other instances, and whether it hears them.
impl Audience for TokenCache {
    fn hear(&self, announcement: Announcement) {
        match announcement {
            Announcement::Connected => self.set_trusted(true),
            Announcement::Disconnected => self.set_trusted(false),
            Announcement::TokenRevoked(id) => self.evict(id),
            Announcement::EscalationDue(_) => {}
        }
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
            user_id: None,
        }
    }

    #[test]
    fn serves_live_tokens_only_while_trusted() {
        let cache = TokenCache::new(true);
        let live = token();
        cache.insert("h".into(), live.clone(), cache.generation());
        assert_eq!(cache.get("h"), Some(live.clone()));
        cache.evict(live.id);
        assert_eq!(cache.get("h"), None);

        let revoked = Token {
            revoked_at: Some(Timestamp::now()),
            ..token()
        };
        cache.insert("r".into(), revoked, cache.generation());
        assert_eq!(cache.get("r"), None, "revoked tokens are never cached");

        cache.insert("h".into(), live.clone(), cache.generation());
        cache.set_trusted(false);
        assert_eq!(cache.get("h"), None);
        cache.insert("h".into(), live.clone(), cache.generation());
        cache.set_trusted(true);
        assert_eq!(
            cache.get("h"),
            None,
            "nothing cached while untrusted survives"
        );
    }

    #[test]
    fn a_read_that_predates_a_revocation_is_not_cached() {
        let cache = TokenCache::new(true);
        let token = token();
        let before_the_read = cache.generation();
        cache.evict(token.id); // the revocation is announced while the read is in flight
        cache.insert("h".into(), token, before_the_read);
        assert_eq!(cache.get("h"), None);
    }
}
