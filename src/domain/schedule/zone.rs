//! A schedule's time zone, and the one rule by which a wall-clock time becomes an instant.
//!
//! Every handoff and every restriction edge goes through [`Zone::resolve`], so they all agree on
//! what a skipped or repeated wall-clock time means:
//! - a time the clock skips (the spring gap) happens at the first instant after the gap, which is
//!   the transition itself: 02:30 on New York's spring-forward day is 03:00 EDT (07:00Z). This is
//!   not jiff's "compatible" choice, which would move it by the gap's length to 03:30 EDT;
//! - a time the clock repeats (the autumn fold) takes its first occurrence.
//!
//! Instants cross the module's boundary as `chrono::DateTime<Utc>`, the type the store and the API
//! already carry; inside they are jiff `Timestamp`s, so the arithmetic never mixes two libraries.

use chrono::{DateTime, Utc};
use jiff::{
    civil,
    tz::{AmbiguousOffset, TimeZone},
    Timestamp,
};

use super::{invalid, InvalidSchedule};

/// An IANA time zone found in the tz database: the system's copy (`TZDIR` or
/// `/usr/share/zoneinfo`) when there is one, else the copy built into the binary. A wall-clock
/// time in it becomes an instant by one rule: in a spring gap, the transition; in an autumn fold,
/// the first occurrence.
#[derive(Debug, Clone)]
pub struct Zone {
    name: String,
    tz: TimeZone,
}

impl Zone {
    /// The zone named `name` (such as `Europe/Paris`), or why it is not one.
    pub fn parse(name: &str) -> Result<Self, InvalidSchedule> {
        let tz = TimeZone::get(name).map_err(|_| {
            invalid(
                "time_zone",
                format!("{name:?} is not a time zone of the tz database; use an IANA name such as Europe/Paris"),
            )
        })?;
        // The database's spelling, so that `europe/paris` is stored as `Europe/Paris`.
        let name = tz.iana_name().unwrap_or(name).to_owned();
        Ok(Self { name, tz })
    }

    /// The zone's IANA name as the tz database spells it.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The wall-clock time at `at` in this zone.
    pub(super) fn local(&self, at: Timestamp) -> civil::DateTime {
        self.tz.to_datetime(at)
    }

    /// The instant at which the wall clock of this zone reads `local`, by the gap and fold rules
    /// of the module doc. `None` only past the end of the representable range.
    pub(super) fn resolve(&self, local: civil::DateTime) -> Option<Timestamp> {
        match self.tz.to_ambiguous_timestamp(local).offset() {
            AmbiguousOffset::Unambiguous { offset } => offset.to_timestamp(local).ok(),
            AmbiguousOffset::Fold { before, .. } => before.to_timestamp(local).ok(),
            AmbiguousOffset::Gap { before, after } => {
                // Read with the offset after the gap, `local` is an instant just before the
                // transition; the next transition from there is the first instant after the gap.
                let before_the_jump = after.to_timestamp(local).ok()?;
                self.tz
                    .following(before_the_jump)
                    .next()
                    .map(|transition| transition.timestamp())
                    .or_else(|| before.to_timestamp(local).ok())
            }
        }
    }
}

/// `at` as a jiff instant, saturating at jiff's range (years -9999 to 9999).
pub(super) fn timestamp(at: DateTime<Utc>) -> Timestamp {
    let nanos = i32::try_from(at.timestamp_subsec_nanos()).unwrap_or(0);
    Timestamp::new(at.timestamp(), nanos).unwrap_or(if at.timestamp() < 0 {
        Timestamp::MIN
    } else {
        Timestamp::MAX
    })
}

/// `at` as the chrono instant the rest of Klaxon carries (whose range contains jiff's).
pub(super) fn instant(at: Timestamp) -> DateTime<Utc> {
    // jiff counts the nanoseconds of an instant before the epoch negatively; chrono does not.
    let (mut secs, mut nanos) = (at.as_second(), at.subsec_nanosecond());
    if nanos < 0 {
        secs -= 1;
        nanos += 1_000_000_000;
    }
    let nanos = u32::try_from(nanos).unwrap_or(0);
    DateTime::from_timestamp(secs, nanos).unwrap_or(DateTime::<Utc>::MAX_UTC)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolve(zone: &str, local: &str) -> String {
        let zone = Zone::parse(zone).expect("zone");
        let local: civil::DateTime = local.parse().expect("civil datetime");
        instant(zone.resolve(local).expect("in range")).to_rfc3339()
    }

    #[test]
    fn unknown_zones_are_refused_by_name() {
        let err = Zone::parse("Mars/Olympus_Mons").unwrap_err();
        assert_eq!(err.field, "time_zone");
        assert!(err.to_string().contains("Mars/Olympus_Mons"), "{err}");
        assert!(Zone::parse("").is_err());
        assert!(Zone::parse("../../etc/passwd").is_err());
    }

    #[test]
    fn names_take_the_databases_spelling() {
        assert_eq!(Zone::parse("europe/paris").unwrap().name(), "Europe/Paris");
    }

    #[test]
    fn a_time_in_the_spring_gap_is_the_transition_not_compatible() {
        // jiff's `compatible` would answer 07:30Z (03:30 EDT).
        assert_eq!(
            resolve("America/New_York", "2026-03-08T02:30"),
            "2026-03-08T07:00:00+00:00"
        );
        assert_eq!(
            resolve("Europe/London", "2026-03-29T01:30"),
            "2026-03-29T01:00:00+00:00"
        );
        // Lord Howe skips 02:00–02:30 only.
        assert_eq!(
            resolve("Australia/Lord_Howe", "2026-10-04T02:15"),
            "2026-10-03T15:30:00+00:00"
        );
    }

    #[test]
    fn a_time_in_the_autumn_fold_is_its_first_occurrence() {
        assert_eq!(
            resolve("America/New_York", "2026-11-01T01:30"),
            "2026-11-01T05:30:00+00:00"
        );
        assert_eq!(
            resolve("Europe/London", "2026-10-25T01:30"),
            "2026-10-25T00:30:00+00:00"
        );
        assert_eq!(
            resolve("Australia/Lord_Howe", "2026-04-05T01:45"),
            "2026-04-04T14:45:00+00:00"
        );
    }

    #[test]
    fn instants_convert_both_ways_before_and_after_the_epoch() {
        for text in [
            "1969-12-31T23:59:59.250+00:00",
            "2026-03-08T07:00:00.5+00:00",
        ] {
            let at: DateTime<Utc> = text.parse().unwrap();
            assert_eq!(instant(timestamp(at)), at);
        }
        assert_eq!(timestamp(DateTime::<Utc>::MAX_UTC), Timestamp::MAX);
        assert_eq!(timestamp(DateTime::<Utc>::MIN_UTC), Timestamp::MIN);
    }
}
