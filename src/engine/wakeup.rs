//! When the worker should look again. The worker sleeps until the earliest due escalation; a
//! commit that schedules something sooner calls [`Wakeup::due_at`], which wakes it early. When
//! announcements of such commits may have been lost (the PostgreSQL listener lost or regained its
//! connection), [`Wakeup::scan`] wakes it to look at the database itself.
//!
//! The worker arms its wake-up **before** it queries the database and records how long it will
//! sleep only after, so an escalation committed while it was querying cannot slip by: until the
//! worker has chosen its deadline, every `due_at` wakes it.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;

use tokio::sync::futures::Notified;
use tokio::sync::Notify;

use crate::domain::Timestamp;
use crate::store::listen::{Announcement, Audience};

/// "Wake me for anything": the worker is between arming and choosing its deadline.
const AWAKE: i64 = i64::MAX;

#[derive(Clone, Default)]
pub struct Wakeup {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    notify: Notify,
    /// Epoch milliseconds the worker sleeps until; `AWAKE` while it is working.
    sleeping_until: AtomicI64,
    /// The worker's next look must scan the database, not only the Redis index.
    scan_requested: AtomicBool,
}

impl Wakeup {
    /// Something is due at `due`: wake the worker if it would otherwise sleep past it.
    pub fn due_at(&self, due: Timestamp) {
        if due.as_millis() < self.inner.sleeping_until.load(Ordering::SeqCst) {
            self.inner.notify.notify_one();
        }
    }

    /// Wake-ups may have been lost: wake the worker now, and make its next look a scan of the
    /// database, not of the Redis index alone.
    pub fn scan(&self) {
        self.inner.scan_requested.store(true, Ordering::SeqCst);
        self.inner.notify.notify_one();
    }

    /// Whether a scan was asked for since the last call. The worker asks after arming, so a
    /// request made while it looks wakes it for another look.
    pub(super) fn take_scan_request(&self) -> bool {
        self.inner.scan_requested.swap(false, Ordering::SeqCst)
    }

    /// The worker is about to look at the database: from now on every `due_at` wakes it.
    pub(super) fn arm(&self) -> Pin<Box<Notified<'_>>> {
        self.inner.sleeping_until.store(AWAKE, Ordering::SeqCst);
        let mut notified = Box::pin(self.inner.notify.notified());
        notified.as_mut().enable();
        notified
    }

    /// The worker chose to sleep until `deadline`.
    pub(super) fn sleeping_until(&self, deadline: Timestamp) {
        self.inner
            .sleeping_until
            .store(deadline.as_millis(), Ordering::SeqCst);
    }
}

/// What the PostgreSQL listener hears from other instances.
impl Audience for Wakeup {
    fn hear(&self, announcement: Announcement) {
        match announcement {
            Announcement::EscalationDue(due) => self.due_at(due),
            // Announcements sent while not listening are lost: look at the database itself.
            Announcement::Connected | Announcement::Disconnected => self.scan(),
            Announcement::TokenRevoked(_) | Announcement::CatalogChanged => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use futures::FutureExt;

    use super::*;

    #[test]
    fn wakes_for_what_falls_due_before_the_deadline() {
        let wakeup = Wakeup::default();
        let mut woken = wakeup.arm();
        wakeup.sleeping_until(Timestamp::from_millis(2_000));
        wakeup.hear(Announcement::EscalationDue(Timestamp::from_millis(3_000)));
        assert!(
            (&mut woken).now_or_never().is_none(),
            "due after the deadline"
        );
        wakeup.hear(Announcement::EscalationDue(Timestamp::from_millis(1_000)));
        assert!(woken.now_or_never().is_some(), "due before the deadline");
        assert!(!wakeup.take_scan_request(), "the Redis index knows of it");
    }

    #[test]
    fn a_lost_or_regained_connection_wakes_the_worker_to_scan() {
        for announcement in [Announcement::Disconnected, Announcement::Connected] {
            let wakeup = Wakeup::default();
            let woken = wakeup.arm();
            wakeup.sleeping_until(Timestamp::from_millis(i64::MAX - 1));
            assert!(!wakeup.take_scan_request());
            wakeup.hear(announcement);
            assert!(woken.now_or_never().is_some(), "{announcement:?} wakes");
            assert!(
                wakeup.take_scan_request(),
                "{announcement:?} asks for a scan"
            );
            assert!(!wakeup.take_scan_request(), "one scan per request");
        }
    }
}
