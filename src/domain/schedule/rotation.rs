//! A rotation: its participants take turns in shifts of whole hours, days or weeks, handing off
//! at the same wall-clock time.
//!
//! Handoff `k` is at the wall-clock time `start + k × shift_length` (civil arithmetic, in which
//! every day has 24 hours), made an instant by [`Zone::resolve`]. So a daily shift across the
//! spring change lasts 23 hours and one across the autumn change 25, and hourly handoffs stay on
//! the wall clock's hours. Shift `k` runs from handoff `k` to handoff `k + 1` and belongs to
//! `participants[k mod n]`. Before handoff 0 the rotation has nobody on call.
//!
//! Two handoffs can fall on one instant: on New York's spring-forward night an hourly handoff at
//! 02:00 (which does not exist) falls at the transition, as does the one at 03:00. The shift
//! between them is empty and never reported; that participant's turn is skipped, not postponed,
//! and the participant of the later handoff is on call from that instant.
//!
//! Finding the shift at an instant is O(1): the wall-clock time elapsed since `start` gives the
//! index, which a DST change can leave one off, so the resolved handoffs around it settle it.

use jiff::{civil, SignedDuration, Timestamp};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::restriction::{union, Restriction, RestrictionFields, Window};
use super::zone::Zone;
use super::{invalid, InvalidSchedule};

/// The longest shift, in units of the rotation's kind (1,000 weeks is about 19 years).
pub const MAX_SHIFT_LENGTH: i64 = 1_000;

/// What a rotation's `shift_length` counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RotationKind {
    Hourly,
    Daily,
    /// Seven days.
    Weekly,
}

impl RotationKind {
    /// As the API and the store write it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Hourly => "hourly",
            Self::Daily => "daily",
            Self::Weekly => "weekly",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        [Self::Hourly, Self::Daily, Self::Weekly]
            .into_iter()
            .find(|kind| kind.as_str() == text)
    }

    fn hours(self) -> i64 {
        match self {
            Self::Hourly => 1,
            Self::Daily => 24,
            Self::Weekly => 7 * 24,
        }
    }
}

/// A rotation as the API writes it, checked by [`Rotation::new`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RotationFields {
    pub kind: RotationKind,
    /// In units of `kind`: at least 1, at most [`MAX_SHIFT_LENGTH`].
    pub shift_length: i64,
    /// The first handoff as wall-clock time in the schedule's zone, without an offset:
    /// `2026-03-06T09:00:00`.
    pub start: String,
    /// In turn order; a user may appear more than once.
    pub participants: Vec<Uuid>,
    /// Higher wins where rotations overlap.
    pub priority: i32,
    /// The rotation applies where any of them allows; with none, always.
    pub restrictions: Vec<RestrictionFields>,
}

/// Participants taking turns, checked by [`Rotation::new`]. Handoff `k` is at wall-clock time
/// `start + k × shift_length` in the schedule's zone; shift `k` is `participants[k mod n]`'s;
/// before handoff 0 nobody is on call; a turn between two handoffs that fall on one instant is
/// skipped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rotation {
    start: civil::DateTime,
    /// `shift_length` units of the kind, in civil time.
    period: SignedDuration,
    participants: Vec<Uuid>,
    priority: i32,
    restrictions: Vec<Restriction>,
}

/// Part of one shift in which its rotation applies: `user` from `start` to `end`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Segment {
    pub start: Timestamp,
    pub end: Timestamp,
    pub user: Uuid,
}

impl Rotation {
    pub fn new(fields: RotationFields) -> Result<Self, InvalidSchedule> {
        if !(1..=MAX_SHIFT_LENGTH).contains(&fields.shift_length) {
            return Err(invalid(
                "shift_length",
                format!("must be from 1 to {MAX_SHIFT_LENGTH}"),
            ));
        }
        if fields.participants.is_empty() {
            return Err(invalid("participants", "name at least one participant"));
        }
        let restrictions = fields
            .restrictions
            .iter()
            .map(Restriction::new)
            .collect::<Result<_, _>>()?;
        Ok(Self {
            start: parse_wall_clock(&fields.start)?,
            period: SignedDuration::from_hours(fields.kind.hours() * fields.shift_length),
            participants: fields.participants,
            priority: fields.priority,
            restrictions,
        })
    }

    pub(super) fn priority(&self) -> i32 {
        self.priority
    }

    /// The instant of handoff `k`, or `None` past the representable range.
    fn handoff(&self, zone: &Zone, k: i64) -> Option<Timestamp> {
        let elapsed = self.period.as_secs().checked_mul(k)?;
        let local = self
            .start
            .checked_add(SignedDuration::from_secs(elapsed))
            .ok()?;
        zone.resolve(local)
    }

    /// The index of the shift under way at `at` (whose wall-clock time is `local`): the last
    /// handoff at or before it. `None` before the first handoff.
    fn shift_at(&self, zone: &Zone, local: civil::DateTime, at: Timestamp) -> Option<i64> {
        let elapsed = local.duration_since(self.start).as_secs();
        let mut k = elapsed.div_euclid(self.period.as_secs()).max(0);
        while self.handoff(zone, k).is_none_or(|handoff| handoff > at) {
            if k == 0 {
                return None;
            }
            k -= 1;
        }
        while self
            .handoff(zone, k + 1)
            .is_some_and(|handoff| handoff <= at)
        {
            k += 1;
        }
        Some(k)
    }

    fn participant(&self, k: i64) -> Option<Uuid> {
        let turns = i64::try_from(self.participants.len()).ok()?;
        let turn = usize::try_from(k.checked_rem_euclid(turns)?).ok()?;
        self.participants.get(turn).copied()
    }

    /// Who this rotation puts on call at `at`, if it applies then.
    pub(super) fn on_call(
        &self,
        zone: &Zone,
        local: civil::DateTime,
        at: Timestamp,
    ) -> Option<Uuid> {
        let applies = self.restrictions.is_empty()
            || self
                .restrictions
                .iter()
                .any(|restriction| restriction.allows(zone, local, at));
        if !applies {
            return None;
        }
        self.participant(self.shift_at(zone, local, at)?)
    }

    /// Where this rotation applies within `[from, to)`, and who is on call there: in order,
    /// disjoint, none empty.
    pub(super) fn segments(&self, zone: &Zone, from: Timestamp, to: Timestamp) -> Vec<Segment> {
        let shifts = self.shifts(zone, from, to);
        if self.restrictions.is_empty() {
            return shifts;
        }
        let windows = union(
            self.restrictions
                .iter()
                .flat_map(|restriction| restriction.windows(zone, from, to))
                .collect(),
        );
        intersect(&shifts, &windows)
    }

    /// The shifts within `[from, to)`, clipped to it, ignoring restrictions.
    fn shifts(&self, zone: &Zone, from: Timestamp, to: Timestamp) -> Vec<Segment> {
        let mut k = self.shift_at(zone, zone.local(from), from).unwrap_or(0);
        let mut shifts = Vec::new();
        let Some(mut handoff) = self.handoff(zone, k) else {
            return shifts;
        };
        while handoff < to {
            let next = self.handoff(zone, k + 1);
            let end = next.unwrap_or(Timestamp::MAX).min(to);
            let start = handoff.max(from);
            if let (true, Some(user)) = (start < end, self.participant(k)) {
                shifts.push(Segment { start, end, user });
            }
            match next {
                Some(next) => handoff = next,
                None => break,
            }
            k += 1;
        }
        shifts
    }
}

/// The parts of `segments` inside `windows`; both in order and disjoint.
fn intersect(segments: &[Segment], windows: &[Window]) -> Vec<Segment> {
    let mut inside = Vec::new();
    let (mut s, mut w) = (0, 0);
    while let (Some(segment), Some(window)) = (segments.get(s), windows.get(w)) {
        let start = segment.start.max(window.start);
        let end = segment.end.min(window.end);
        if start < end {
            inside.push(Segment {
                start,
                end,
                user: segment.user,
            });
        }
        // Whichever ends first can overlap nothing further.
        if segment.end <= window.end {
            s += 1;
        } else {
            w += 1;
        }
    }
    inside
}

/// A wall-clock date and time with no offset: an offset or `Z` would pin an instant, which is
/// not what a rotation's start means (its handoffs follow the zone's clock).
fn parse_wall_clock(text: &str) -> Result<civil::DateTime, InvalidSchedule> {
    let problem = || {
        invalid(
            "start",
            format!("{text:?} must be a wall-clock date and time without an offset, such as 2026-03-06T09:00:00"),
        )
    };
    let text = text.trim();
    let time_part = text
        .split_once(['T', 't', ' '])
        .map_or("", |(_, time)| time);
    if time_part.contains(['+', '-', 'Z', 'z', '[']) {
        return Err(problem());
    }
    text.parse().map_err(|_| problem())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(kind: RotationKind, length: i64, start: &str, people: &[Uuid]) -> RotationFields {
        RotationFields {
            kind,
            shift_length: length,
            start: start.into(),
            participants: people.to_vec(),
            priority: 0,
            restrictions: Vec::new(),
        }
    }

    #[test]
    fn refuses_shift_lengths_out_of_range_and_no_participants() {
        let someone = [Uuid::from_u128(1)];
        for length in [0, -1, MAX_SHIFT_LENGTH + 1] {
            let err = Rotation::new(fields(
                RotationKind::Daily,
                length,
                "2026-03-06T09:00",
                &someone,
            ))
            .unwrap_err();
            assert_eq!(err.field, "shift_length", "{length}");
        }
        assert!(Rotation::new(fields(
            RotationKind::Weekly,
            MAX_SHIFT_LENGTH,
            "2026-03-06T09:00",
            &someone
        ))
        .is_ok());
        let err =
            Rotation::new(fields(RotationKind::Daily, 1, "2026-03-06T09:00", &[])).unwrap_err();
        assert_eq!(err.field, "participants");
    }

    #[test]
    fn the_start_is_wall_clock_time_without_an_offset() {
        let someone = [Uuid::from_u128(1)];
        for start in [
            "2026-03-06T09:00:00",
            "2026-03-06T09:00",
            "2026-03-06 09:00:00",
        ] {
            assert!(
                Rotation::new(fields(RotationKind::Daily, 1, start, &someone)).is_ok(),
                "{start}"
            );
        }
        for start in [
            "2026-03-06T09:00:00Z",
            "2026-03-06T09:00:00+01:00",
            "2026-03-06T09:00:00-05:00",
            "2026-03-06T09:00:00[Europe/Paris]",
            "yesterday",
            "",
        ] {
            let err = Rotation::new(fields(RotationKind::Daily, 1, start, &someone)).unwrap_err();
            assert_eq!(err.field, "start", "{start}");
        }
    }

    #[test]
    fn intersect_keeps_only_the_overlap() {
        let ts = |s: i64| Timestamp::from_second(s).unwrap();
        let (a, b) = (Uuid::from_u128(1), Uuid::from_u128(2));
        let segment = |s, e, user| Segment {
            start: ts(s),
            end: ts(e),
            user,
        };
        let window = |s, e| Window {
            start: ts(s),
            end: ts(e),
        };
        assert_eq!(
            intersect(
                &[segment(0, 10, a), segment(10, 20, b)],
                &[window(5, 12), window(15, 16), window(30, 40)]
            ),
            vec![segment(5, 10, a), segment(10, 12, b), segment(15, 16, b)]
        );
    }
}
