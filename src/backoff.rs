//! Capped exponential backoff with equal jitter (a random delay between half and all of the
//! current ceiling), for retrying a database, a connection or a conflicting transaction. Shared by
//! the store, the engine and the listeners, so it sits below all of them.

use std::time::Duration;

use rand::Rng;

/// The first retry waits up to this long.
pub const BASE_DELAY: Duration = Duration::from_millis(100);
/// No retry waits longer than this, so service resumes within this long of the database's return.
pub const MAX_DELAY: Duration = Duration::from_secs(5);

#[derive(Debug, Default)]
pub struct Backoff {
    failures: u32,
}

impl Backoff {
    /// Records a failure and returns how long to wait before the next attempt: a random duration
    /// up to `BASE_DELAY × 2^failures`, capped at `MAX_DELAY` (jitter keeps several workers from
    /// retrying in lockstep).
    pub fn next_delay(&mut self) -> Duration {
        let ceiling = BASE_DELAY
            .saturating_mul(1u32.checked_shl(self.failures).unwrap_or(u32::MAX))
            .min(MAX_DELAY);
        self.failures = self.failures.saturating_add(1);
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
