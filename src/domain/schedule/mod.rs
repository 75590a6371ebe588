//! On-call schedules: who is on call at an instant, the shifts of a range and the gaps in it,
//! computed in the schedule's own time zone from the tz database. Pure: no clock, no I/O.
//!
//! A schedule is a [`Zone`], [`Rotation`]s (its layers) and [`Override`]s. What it promises:
//! - **Layering.** At an instant the rotation that decides is the first, by priority (higher
//!   first) and then by the order given (earlier first), that applies then (its restrictions
//!   allow) and has begun. Outside its restrictions, or before its first handoff, the next one
//!   down decides; where none does, nobody is on call from the rotations.
//! - **Overrides** then replace the deciding rotation's user, or add users beside them (see
//!   [`Override`]).
//! - **Wall-clock time.** Handoffs and restriction edges keep their wall-clock time across DST
//!   changes; a time in a spring gap happens at the transition, one in an autumn fold at its first
//!   occurrence (see [`Zone`] and [`Rotation`]).
//! - **Agreement.** [`Schedule::on_call`] at any instant names exactly the users whose
//!   [`Schedule::shifts`] contain it; where it names nobody, a [`Schedule::gaps`] range does.
//!   Shifts of one user never overlap; shifts of different users overlap only where an override
//!   adds someone.
//!
//! How schedules are kept (a [`ScheduleRecord`], its [`RotationRecord`]s and [`OverrideRecord`]s,
//! retired rather than deleted) is in `records.rs`; [`ScheduleRecord::schedule`] builds the
//! [`Schedule`] from the live ones.

mod layering;
mod overrides;
mod records;
mod restriction;
mod rotation;
mod zone;

#[cfg(test)]
mod tests;

use chrono::{DateTime, TimeDelta, Utc};
use jiff::Timestamp;
use uuid::Uuid;

pub use overrides::Override;
pub use records::{OverrideRecord, RotationRecord, ScheduleRecord};
pub use restriction::{RestrictionFields, TimeWindow};
pub use rotation::{Rotation, RotationFields, RotationKind, MAX_SHIFT_LENGTH};
pub use zone::Zone;

use overrides::Placed;
use zone::{instant, timestamp};

/// The longest range [`Schedule::shifts`] and [`Schedule::gaps`] answer for, in days: a year,
/// leap or not, which also bounds the work one request can ask for.
pub const MAX_RANGE_DAYS: i64 = 366;

/// A field of a schedule, rotation, restriction or override that is not valid, and why. Reads as
/// a 400's message: "`shift_length` must be from 1 to 1000".
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{field}` {reason}")]
pub struct InvalidSchedule {
    pub field: &'static str,
    pub reason: String,
}

fn invalid(field: &'static str, reason: impl Into<String>) -> InvalidSchedule {
    InvalidSchedule {
        field,
        reason: reason.into(),
    }
}

/// One user on call from `start` to `end`, clipped to the range asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Shift {
    pub user: Uuid,
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
}

impl Shift {
    /// A calendar UID (RFC 5545) for this shift in `schedule`: the schedule, the user and the
    /// start. It stays the same from one feed to the next while the shift does; a shift that an
    /// override or a rotation change cuts differently is a different event. The first shift of a
    /// range is clipped to its start, so a feed should begin its range at a fixed point (such as
    /// the start of the day) rather than at the moment it is asked.
    pub fn uid(&self, schedule: Uuid) -> String {
        format!(
            "{}-{}-{}@klaxon",
            schedule.simple(),
            self.user.simple(),
            self.start.timestamp()
        )
    }
}

/// A range in which nobody is on call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Gap {
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
}

#[derive(Debug, Clone)]
pub struct Schedule {
    zone: Zone,
    /// In the order they decide: priority, highest first, then as given.
    rotations: Vec<Rotation>,
    /// In the order given, which settles competing replacements (the last wins).
    overrides: Vec<Placed>,
}

impl Schedule {
    /// `overrides` in the order they were made.
    pub fn new(
        zone: Zone,
        mut rotations: Vec<Rotation>,
        overrides: &[Override],
    ) -> Result<Self, InvalidSchedule> {
        for o in overrides {
            o.check()?;
        }
        // Stable: equal priorities keep the order given.
        rotations.sort_by_key(|rotation| std::cmp::Reverse(rotation.priority()));
        Ok(Self {
            zone,
            rotations,
            overrides: overrides.iter().map(Placed::from).collect(),
        })
    }

    /// Who is on call at `at`: sorted, without duplicates, empty in a gap.
    pub fn on_call(&self, at: DateTime<Utc>) -> Vec<Uuid> {
        let at = timestamp(at);
        let local = self.zone.local(at);
        let layered = self
            .rotations
            .iter()
            .find_map(|rotation| rotation.on_call(&self.zone, local, at));
        overrides::apply(&self.overrides, at, layered)
    }

    /// The shifts in `[from, to)` with the overrides applied, clipped to it, ordered by start and
    /// then user; a user's back-to-back shifts (from two rotations, or a rotation with one
    /// participant) are one.
    pub fn shifts(
        &self,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Vec<Shift>, InvalidSchedule> {
        let (from, to) = range(from, to)?;
        let mut shifts = Vec::new();
        let mut open: Vec<(Uuid, Timestamp)> = Vec::new();
        for piece in self.pieces(from, to) {
            open.retain(|&(user, start)| {
                let goes_on = piece.users.contains(&user);
                if !goes_on {
                    shifts.push(shift(user, start, piece.start));
                }
                goes_on
            });
            for &user in &piece.users {
                if !open.iter().any(|&(open_user, _)| open_user == user) {
                    open.push((user, piece.start));
                }
            }
        }
        shifts.extend(open.into_iter().map(|(user, start)| shift(user, start, to)));
        shifts.sort_unstable_by_key(|shift| (shift.start, shift.user));
        Ok(shifts)
    }

    /// The ranges within `[from, to)` in which nobody is on call, clipped to it, in order.
    pub fn gaps(
        &self,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Vec<Gap>, InvalidSchedule> {
        let (from, to) = range(from, to)?;
        Ok(self
            .pieces(from, to)
            .into_iter()
            .filter(|piece| piece.users.is_empty())
            .map(|piece| Gap {
                start: instant(piece.start),
                end: instant(piece.end),
            })
            .collect())
    }

    fn pieces(&self, from: Timestamp, to: Timestamp) -> Vec<layering::Piece> {
        layering::pieces(&self.zone, &self.rotations, &self.overrides, from, to)
    }
}

fn shift(user: Uuid, start: Timestamp, end: Timestamp) -> Shift {
    Shift {
        user,
        start: instant(start),
        end: instant(end),
    }
}

/// Whether [`Schedule::shifts`] and [`Schedule::gaps`] answer for `[from, to)`: `to` after
/// `from`, at most [`MAX_RANGE_DAYS`] later. For checking a range before reading a schedule.
pub fn check_range(from: DateTime<Utc>, to: DateTime<Utc>) -> Result<(), InvalidSchedule> {
    range(from, to).map(|_| ())
}

/// `[from, to)` checked: not empty, not longer than [`MAX_RANGE_DAYS`].
fn range(
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Result<(Timestamp, Timestamp), InvalidSchedule> {
    if to <= from {
        return Err(invalid("to", "must be after from"));
    }
    if to - from > TimeDelta::days(MAX_RANGE_DAYS) {
        return Err(invalid(
            "to",
            format!("must be at most {MAX_RANGE_DAYS} days after from"),
        ));
    }
    Ok((timestamp(from), timestamp(to)))
}
