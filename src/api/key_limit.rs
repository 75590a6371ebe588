//! The per-key rate limit of the integration endpoints (`[integrations] rate_limit`): at most
//! `count` events per integration key in each window of `per`, on this instance; over it, 429,
//! as PagerDuty answers (its clients wait and send again). Counted in memory: several
//! instances each allow the limit.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

use crate::config::RateLimit;

/// Fixed windows per key, forgotten once they are over.
pub struct KeyLimiter {
    limit: RateLimit,
    started: Instant,
    /// Key hash → (window number, events counted in it).
    windows: Mutex<HashMap<String, (u128, u32)>>,
}

impl KeyLimiter {
    pub fn new(limit: RateLimit) -> Self {
        Self {
            limit,
            started: Instant::now(),
            windows: Mutex::new(HashMap::new()),
        }
    }

    /// Counts one event for `key` now; `false` if it is over the limit (and not counted).
    pub fn allow(&self, key: &str) -> bool {
        let window = self.started.elapsed().as_millis() / self.limit.per.as_millis().max(1);
        let mut windows = self
            .windows
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        if windows.len() > 10_000 {
            windows.retain(|_, (seen, _)| *seen == window);
        }
        let entry = windows.entry(key.to_owned()).or_insert((window, 0));
        if entry.0 != window {
            *entry = (window, 0);
        }
        if entry.1 >= self.limit.count {
            return false;
        }
        entry.1 += 1;
        true
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn each_key_gets_its_own_count_per_window() {
        let limiter = KeyLimiter::new(RateLimit {
            count: 2,
            per: Duration::from_secs(3600),
        });
        assert!(limiter.allow("a") && limiter.allow("a"));
        assert!(!limiter.allow("a"), "the third in the window");
        assert!(limiter.allow("b"), "another key");
        let quick = KeyLimiter::new(RateLimit {
            count: 1,
            per: Duration::from_millis(20),
        });
        assert!(quick.allow("a"));
        assert!(!quick.allow("a"));
        std::thread::sleep(Duration::from_millis(25));
        assert!(quick.allow("a"), "a new window");
    }
}
