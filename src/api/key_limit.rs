//! The per-key rate limit of the integration endpoints (`[integrations] rate_limit`): at most
//! `count` events per integration key in each window of `per`, on this instance; over it, 429,
//! as PagerDuty answers (its clients wait and send again). Counted in memory, for live keys
//! only: several instances each allow the limit.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant};

use crate::config::RateLimit;

/// Past this many keys, the windows that are over are forgotten. Only live keys are counted, so
/// the map holds about as many entries as there are integration keys.
const MAX_KEYS: usize = 10_000;

/// Fixed windows per key.
pub struct KeyLimiter {
    /// Replaced on SIGHUP; counts go on in the windows of the new limit.
    limit: RwLock<RateLimit>,
    started: Instant,
    /// Key hash → (window number, events counted in it).
    windows: Mutex<HashMap<String, (u128, u32)>>,
}

impl KeyLimiter {
    pub fn new(limit: RateLimit) -> Self {
        Self {
            limit: RwLock::new(limit),
            started: Instant::now(),
            windows: Mutex::new(HashMap::new()),
        }
    }

    /// Puts `limit` in force from the next event on.
    pub fn set_limit(&self, limit: RateLimit) {
        *self.limit.write().unwrap_or_else(PoisonError::into_inner) = limit;
    }

    /// Counts one event for `key` (a live key's hash) now; over the limit, it is not counted,
    /// and the answer is how long until the window opens again.
    pub fn allow(&self, key: &str) -> Result<(), Duration> {
        let limit = *self.limit.read().unwrap_or_else(PoisonError::into_inner);
        let per = limit.per.as_millis().max(1);
        let elapsed = self.started.elapsed().as_millis();
        let window = elapsed / per;
        let mut windows = self
            .windows
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        if windows.len() > MAX_KEYS {
            windows.retain(|_, (seen, _)| *seen == window);
        }
        let entry = windows.entry(key.to_owned()).or_insert((window, 0));
        if entry.0 != window {
            *entry = (window, 0);
        }
        if entry.1 >= limit.count {
            let left = per - elapsed % per;
            return Err(Duration::from_millis(
                u64::try_from(left).unwrap_or(u64::MAX),
            ));
        }
        entry.1 += 1;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_key_gets_its_own_count_per_window() {
        let limiter = KeyLimiter::new(RateLimit {
            count: 2,
            per: Duration::from_secs(3600),
        });
        assert!(limiter.allow("a").is_ok() && limiter.allow("a").is_ok());
        let wait = limiter.allow("a").expect_err("the third in the window");
        assert!(wait <= Duration::from_secs(3600) && wait > Duration::from_secs(3500));
        assert!(limiter.allow("b").is_ok(), "another key");
        let quick = KeyLimiter::new(RateLimit {
            count: 1,
            per: Duration::from_millis(20),
        });
        assert!(quick.allow("a").is_ok());
        assert!(quick.allow("a").is_err());
        std::thread::sleep(Duration::from_millis(25));
        assert!(quick.allow("a").is_ok(), "a new window");
    }

    #[test]
    fn a_reloaded_limit_applies_to_the_next_event() {
        let limiter = KeyLimiter::new(RateLimit::per_minutes(1, 60));
        assert!(limiter.allow("a").is_ok());
        assert!(limiter.allow("a").is_err());
        limiter.set_limit(RateLimit::per_minutes(3, 60));
        assert!(
            limiter.allow("a").is_ok(),
            "the count so far stands under the new limit"
        );
        assert!(limiter.allow("a").is_ok());
        assert!(limiter.allow("a").is_err());
    }
}
