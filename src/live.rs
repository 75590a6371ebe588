//! [`Live`]: a value that a configuration reload (SIGHUP) replaces while the process runs.
//!
//! Readers take the current value as an `Arc` and keep it for as long as they need it: a request
//! that took the policy before a reload finishes under that policy, and the next one sees the new
//! one. The lock is held only to clone or replace the `Arc`, never across an `.await`.

use std::sync::{Arc, PoisonError, RwLock};

/// A shared, replaceable value. Clones share it: a reload through one is seen by every clone.
pub struct Live<T>(Arc<RwLock<Arc<T>>>);

impl<T> Clone for Live<T> {
    fn clone(&self) -> Self {
        Self(self.0.clone())
    }
}

impl<T> Live<T> {
    pub fn new(value: T) -> Self {
        Self(Arc::new(RwLock::new(Arc::new(value))))
    }

    /// The value in force now.
    pub fn get(&self) -> Arc<T> {
        // Nothing can panic while holding the lock (a clone or a swap of an `Arc`), so a poisoned
        // lock still holds a whole value.
        self.0
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Puts `value` in force for every reader from now on.
    pub fn set(&self, value: T) {
        *self.0.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reader_keeps_what_it_took_and_the_next_sees_the_new_value() {
        let live = Live::new(1);
        let clone = live.clone();
        let taken = live.get();
        clone.set(2);
        assert_eq!((*taken, *live.get()), (1, 2));
    }
}
