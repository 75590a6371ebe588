//! Answers the API would otherwise read from the database on every request, kept by the hash of
//! the secret the request presents: live tokens ([`TokenCache`]) and where an integration key
//! routes events ([`RouteCache`]).
//!
//! An entry is used only while every change that could make it wrong is sure to reach the
//! cache: on SQLite always (the one process serving the API on that file makes every change
//! through it, and evicts as it does), on PostgreSQL only while this process listens on the
//! channels where every such change is announced in its own transaction (`klaxon_tokens`,
//! `klaxon_catalog`). Whenever that is not so, the cache is emptied and bypassed, and every
//! request reads the database: a revoked token or integration key stops working at once, on
//! every instance.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::RwLock;

use crate::domain::{EventService, Service, Token};
use crate::store::listen::{Announcement, Audience};

/// A cache is emptied when it would grow past this many entries.
const MAX_ENTRIES: usize = 10_000;

/// Live tokens by the hash of their secret.
pub type TokenCache = Cache<Token>;

/// Where each live integration key routes events, by the hash of the key.
pub type RouteCache = Cache<KeyRoute>;

/// The service an integration key belongs to, and what its events carry into the store.
#[derive(Debug, Clone)]
pub struct KeyRoute {
    pub service: Service,
    pub target: EventService,
}

#[derive(Debug, Default)]
pub struct Cache<V> {
    entries: RwLock<HashMap<String, V>>,
    trusted: AtomicBool,
    /// Bumped by every eviction: a value read from the database before a change was announced
    /// must not be cached after it.
    generation: AtomicU64,
}

impl<V: Clone> Cache<V> {
    pub fn new(trusted: bool) -> Self {
        Self {
            entries: RwLock::new(HashMap::new()),
            trusted: AtomicBool::new(trusted),
            generation: AtomicU64::new(0),
        }
    }

    /// Read before looking a value up in the database, and handed back to [`Cache::insert`].
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::SeqCst)
    }

    /// The value cached for this secret hash, if there is one and the cache can be trusted.
    pub fn get(&self, secret_hash: &str) -> Option<V> {
        if !self.trusted.load(Ordering::SeqCst) {
            return None;
        }
        self.entries.read().ok()?.get(secret_hash).cloned()
    }

    /// Remembers a value read from the database, unless something was evicted since
    /// `generation` was read (that read may predate the change).
    pub fn insert(&self, secret_hash: String, value: V, generation: u64) {
        if !self.trusted.load(Ordering::SeqCst) {
            return;
        }
        if let Ok(mut entries) = self.entries.write() {
            if self.generation() != generation {
                return;
            }
            if entries.len() >= MAX_ENTRIES {
                entries.clear();
            }
            entries.insert(secret_hash, value);
        }
    }

    /// Forgets every value `stale` picks: it has just changed, here or on another instance.
    pub fn evict(&self, stale: impl Fn(&V) -> bool) {
        if let Ok(mut entries) = self.entries.write() {
            self.generation.fetch_add(1, Ordering::SeqCst);
            entries.retain(|_, value| !stale(value));
        }
    }

    /// Forgets everything.
    pub fn clear(&self) {
        self.evict(|_| true);
    }

    /// Whether changes are known to reach this cache; when not, it is emptied and bypassed.
    fn set_trusted(&self, trusted: bool) {
        if !trusted {
            self.clear();
        }
        self.trusted.store(trusted, Ordering::SeqCst);
    }

    /// What every cache does with the listener's connection coming and going.
    fn hear_connection(&self, announcement: Announcement) {
        match announcement {
            Announcement::Connected => self.set_trusted(true),
            Announcement::Disconnected => self.set_trusted(false),
            _ => {}
        }
    }
}

impl TokenCache {
    /// Remembers a token read from the database, if it is live: a revoked one is refused
    /// whatever the cache holds.
    pub fn remember(&self, secret_hash: String, token: Token, generation: u64) {
        if !token.is_revoked() {
            self.insert(secret_hash, token, generation);
        }
    }
}

/// What the PostgreSQL listener hears: revocations on other instances, and whether it hears them.
impl Audience for TokenCache {
    fn hear(&self, announcement: Announcement) {
        match announcement {
            Announcement::TokenRevoked(id) => self.evict(|token| token.id == id),
            other => self.hear_connection(other),
        }
    }
}

/// What the PostgreSQL listener hears: a service, policy or integration key changed on another
/// instance (they change rarely, so every route is forgotten), and whether it hears them.
impl Audience for RouteCache {
    fn hear(&self, announcement: Announcement) {
        match announcement {
            Announcement::CatalogChanged => self.clear(),
            other => self.hear_connection(other),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use uuid::Uuid;

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
        cache.evict(|t| t.id == live.id);
        assert_eq!(cache.get("h"), None);

        let revoked = Token {
            revoked_at: Some(Timestamp::now()),
            ..token()
        };
        cache.remember("r".into(), revoked, cache.generation());
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
        cache.evict(|t| t.id == token.id); // the revocation is announced while the read is in flight
        cache.insert("h".into(), token, before_the_read);
        assert_eq!(cache.get("h"), None);
    }

    #[test]
    fn routes_are_forgotten_when_the_catalog_changes_or_the_listener_drops() {
        let cache = RouteCache::new(false);
        let service =
            Service::new("checkout", None, true, Timestamp::now()).expect("a valid service");
        let route = KeyRoute {
            target: EventService {
                id: service.id,
                escalate: None,
            },
            service,
        };
        cache.insert("k".into(), route.clone(), cache.generation());
        assert!(
            cache.get("k").is_none(),
            "untrusted until the listener connects"
        );
        cache.hear(Announcement::Connected);
        cache.insert("k".into(), route.clone(), cache.generation());
        assert_eq!(cache.get("k").map(|r| r.service.id), Some(route.service.id));
        cache.hear(Announcement::CatalogChanged);
        assert!(cache.get("k").is_none());
        cache.insert("k".into(), route.clone(), cache.generation());
        cache.hear(Announcement::TokenRevoked(Uuid::now_v7()));
        assert!(
            cache.get("k").is_some(),
            "a token's revocation leaves routes alone"
        );
        cache.hear(Announcement::Disconnected);
        assert!(cache.get("k").is_none());
    }
}
