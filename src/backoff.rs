//! Capped exponential backoff with equal jitter (a random delay between half and all of the
//! current ceiling), for retrying a database, a connection or a conflicting transaction. Shared by
//! the store, the engine and the listeners, so it sits below all of them.

use std::time::Duration;

use rand::Rng;

/// The first retry waits up to this long.
pub const BASE_DELAY: Duration = Duration::from_millis(100);
/// No retry waits longer than this, so service resumes within this long of the database's return.
pub const MAX_DELAY: Duration = Duration::from_secs(5);

#[derive(Debug)]
pub struct Backoff {
    base: Duration,
    cap: Duration,
    failures: u32,
}

/// From [`BASE_DELAY`] up to [`MAX_DELAY`]: for a database or connection that went away.
impl Default for Backoff {
    fn default() -> Self {
        Self::new(BASE_DELAY, MAX_DELAY)
    }
}

impl Backoff {
    /// The first retry waits up to `base`, each next one up to twice as long, none over `cap`.
    pub fn new(base: Duration, cap: Duration) -> Self {
        Self {
            base,
            cap,
            failures: 0,
        }
    }

    /// Records a failure and returns how long to wait before the next attempt: a random duration
    /// between half and all of `base × 2^failures`, capped at `cap` (jitter keeps several workers
    /// from retrying in lockstep).
    pub fn next_delay(&mut self) -> Duration {
        let delay = Self::after(self.base, self.cap, self.failures);
        self.failures = self.failures.saturating_add(1);
        delay
    }

    /// The delay [`Backoff::next_delay`] draws after `failures` earlier failures: for retries
    /// counted elsewhere (a notification's attempts are counted in the database).
    pub fn after(base: Duration, cap: Duration, failures: u32) -> Duration {
        let ceiling = base
            .saturating_mul(1u32.checked_shl(failures).unwrap_or(u32::MAX))
            .min(cap);
        rand::rng().random_range(ceiling / 2..=ceiling)
    }

    /// Whether the last attempt failed.
    pub fn is_failing(&self) -> bool {
        self.failures > 0
    }

    pub fn reset(&mut self) {
        self.failures = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_then_caps() {
        let mut backoff = Backoff::default();
        let delays: Vec<_> = (0..12).map(|_| backoff.next_delay()).collect();
        assert!(delays[0] <= BASE_DELAY && delays[0] >= BASE_DELAY / 2);
        assert!(delays[3] >= BASE_DELAY * 4, "{delays:?}");
        assert!(delays.iter().all(|d| *d <= MAX_DELAY));
        assert!(delays[11] >= MAX_DELAY / 2);
        assert!(backoff.is_failing());
        backoff.reset();
        assert!(!backoff.is_failing());
        assert!(backoff.next_delay() <= BASE_DELAY);
    }
}
