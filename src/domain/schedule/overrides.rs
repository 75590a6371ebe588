//! Overrides: a user on call over an absolute range of instants, in a named user's place (a swap
//! or a cover) or beside whoever is on call.
//!
//! An override's range is a pair of instants, never wall-clock times, so changing a rotation
//! later never moves it. One that replaces a user applies only while the layers put that user on
//! call; where several replace the same user at once, the last in the schedule's list (the most
//! recently made, as the store lists them) wins. Replacements do not chain: an override replacing
//! A's substitute does nothing, since the layers never put the substitute on call.

use chrono::{DateTime, Utc};
use jiff::Timestamp;
use uuid::Uuid;

use super::zone::timestamp;
use super::{invalid, InvalidSchedule};

/// A user on call from `start` to `end` (instants, so a rotation change never moves it). A
/// replacement applies only while the layers put `replaces` on call; of several replacing one
/// user at once, the last in the schedule's list wins; replacements do not chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Override {
    pub id: Uuid,
    /// Who is on call during the override.
    pub user: Uuid,
    /// The user taken off call; `None` adds `user` beside whoever is on call.
    pub replaces: Option<Uuid>,
    pub start: DateTime<Utc>,
    /// After `start`.
    pub end: DateTime<Utc>,
}

impl Override {
    /// Whether the override says something that can be applied.
    pub fn check(&self) -> Result<(), InvalidSchedule> {
        if self.end <= self.start {
            return Err(invalid("end", "must be after start"));
        }
        Ok(())
    }
}

/// An override in the schedule's own instants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Placed {
    user: Uuid,
    replaces: Option<Uuid>,
    pub start: Timestamp,
    pub end: Timestamp,
}

impl From<&Override> for Placed {
    fn from(o: &Override) -> Self {
        Self {
            user: o.user,
            replaces: o.replaces,
            start: timestamp(o.start),
            end: timestamp(o.end),
        }
    }
}

impl Placed {
    fn covers(&self, at: Timestamp) -> bool {
        self.start <= at && at < self.end
    }
}

/// Who is on call at `at` when the layers put `layered` on call: sorted, without duplicates.
pub(super) fn apply(overrides: &[Placed], at: Timestamp, layered: Option<Uuid>) -> Vec<Uuid> {
    let substitute = layered.and_then(|user| {
        overrides
            .iter()
            .rev()
            .find(|o| o.replaces == Some(user) && o.covers(at))
            .map(|o| o.user)
    });
    let mut users: Vec<Uuid> = substitute.or(layered).into_iter().collect();
    users.extend(
        overrides
            .iter()
            .filter(|o| o.replaces.is_none() && o.covers(at))
            .map(|o| o.user),
    );
    users.sort_unstable();
    users.dedup();
    users
}
