//! When a rotation (or an escalation level's `only_during`) applies: on some weekdays, within a
//! daily wall-clock window such as Mon–Fri 09:00–17:00.
//!
//! A window whose end is not after its start crosses midnight and belongs to the weekday it starts
//! on: `fri 22:00–06:00` runs from Friday 22:00 to Saturday 06:00, and covers nothing on Friday
//! before 06:00. An end of `24:00` means the end of the day, so `00:00–24:00` is the whole day.
//! A window's edges are wall-clock times resolved by [`Zone::resolve`]: an edge in the spring gap
//! falls at the transition, one in the autumn fold at its first occurrence, so a window never
//! opens twice in one night.

use chrono::{DateTime, Utc};
use jiff::{
    civil::{self, Weekday},
    SignedDuration, Timestamp,
};

use serde::{Deserialize, Serialize};

use super::zone::{timestamp, Zone};
use super::{invalid, InvalidSchedule};

/// The civil length of a day: the longest a restriction window can be.
const DAY: SignedDuration = SignedDuration::from_hours(24);

/// The end of a window that closes at midnight, as the API writes it.
const END_OF_DAY: &str = "24:00";

/// A restriction as the API and config write it (and the store keeps it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RestrictionFields {
    /// `mon` … `sun` (or `monday` … `sunday`), in any case.
    pub weekdays: Vec<String>,
    /// `HH:MM` (or `HH:MM:SS`), wall-clock time in the zone.
    pub start: String,
    /// `HH:MM`, or `24:00` for the end of the day; not after `start` to cross midnight.
    pub end: String,
}

/// Some weekdays and a daily window, checked by [`Restriction::new`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Restriction {
    /// Bit `n` set: the window opens on the weekday `n` days after Monday.
    weekdays: u8,
    start: civil::Time,
    /// From `start`, in civil time: more than zero, at most a day.
    length: SignedDuration,
}

impl Restriction {
    pub fn new(fields: &RestrictionFields) -> Result<Self, InvalidSchedule> {
        if fields.weekdays.is_empty() {
            return Err(invalid("weekdays", "name at least one weekday"));
        }
        let mut weekdays = 0u8;
        for name in &fields.weekdays {
            let day = parse_weekday(name).ok_or_else(|| {
                invalid(
                    "weekdays",
                    format!("{name:?} is not a weekday; use mon, tue, wed, thu, fri, sat or sun"),
                )
            })?;
            weekdays |= 1 << day.to_monday_zero_offset();
        }
        let start = parse_time("start", &fields.start)?;
        let length = if fields.end.trim() == END_OF_DAY {
            DAY - start.duration_since(civil::Time::midnight())
        } else {
            let end = parse_time("end", &fields.end)?;
            if end == start {
                return Err(invalid(
                    "end",
                    "must differ from start (use 00:00 to 24:00 for a whole day)",
                ));
            }
            let length = end.duration_since(start);
            // An end not after the start is on the next day.
            if length.is_negative() {
                length + DAY
            } else {
                length
            }
        };
        Ok(Self {
            weekdays,
            start,
            length,
        })
    }

    /// Whether the window opened on `date` (if it opens that day) contains `at`.
    fn opened_on_contains(&self, zone: &Zone, date: civil::Date, at: Timestamp) -> bool {
        self.window_opened_on(zone, date)
            .is_some_and(|(start, end)| start <= at && at < end)
    }

    /// Whether `at`, whose wall-clock time is `local`, is inside one of the windows.
    pub(super) fn allows(&self, zone: &Zone, local: civil::DateTime, at: Timestamp) -> bool {
        // The window of the day before may cross midnight into today; around a fold that spans
        // midnight, tomorrow's may already have opened while the clock still reads today.
        let date = local.date();
        self.opened_on_contains(zone, date, at)
            || date
                .yesterday()
                .is_ok_and(|day| self.opened_on_contains(zone, day, at))
            || date
                .tomorrow()
                .is_ok_and(|day| self.opened_on_contains(zone, day, at))
    }

    /// The window opened on `date` as instants, if the restriction opens one that day and it is
    /// not swallowed whole by a gap.
    fn window_opened_on(&self, zone: &Zone, date: civil::Date) -> Option<(Timestamp, Timestamp)> {
        if self.weekdays & (1 << date.weekday().to_monday_zero_offset()) == 0 {
            return None;
        }
        let opens = date.to_datetime(self.start);
        let start = zone.resolve(opens)?;
        let end = zone.resolve(opens.checked_add(self.length).ok()?)?;
        (start < end).then_some((start, end))
    }

    /// The windows that overlap `[from, to)`, in order (they may overlap each other).
    pub(super) fn windows(&self, zone: &Zone, from: Timestamp, to: Timestamp) -> Vec<Window> {
        // A day either side, for the same reasons as in `allows`.
        let (first, last) = (zone.local(from).date(), zone.local(to).date());
        let last = last.tomorrow().unwrap_or(last);
        let mut windows = Vec::new();
        let mut day = first.yesterday().unwrap_or(first);
        while day <= last {
            if let Some((start, end)) = self.window_opened_on(zone, day) {
                if start < to && from < end {
                    windows.push(Window { start, end });
                }
            }
            match day.tomorrow() {
                Ok(next) => day = next,
                Err(_) => break,
            }
        }
        windows
    }
}

/// A range of instants, `[start, end)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Window {
    pub start: Timestamp,
    pub end: Timestamp,
}

/// The union of `windows`, in order and disjoint; touching windows become one.
pub(super) fn union(mut windows: Vec<Window>) -> Vec<Window> {
    windows.sort_by_key(|window| window.start);
    let mut merged: Vec<Window> = Vec::with_capacity(windows.len());
    for window in windows {
        match merged.last_mut() {
            Some(last) if window.start <= last.end => last.end = last.end.max(window.end),
            _ => merged.push(window),
        }
    }
    merged
}

/// An escalation level's `only_during`: a restriction read in a time zone of its own.
#[derive(Debug, Clone)]
pub struct TimeWindow {
    zone: Zone,
    restriction: Restriction,
}

impl TimeWindow {
    pub fn new(time_zone: &str, fields: &RestrictionFields) -> Result<Self, InvalidSchedule> {
        Ok(Self {
            zone: Zone::parse(time_zone)?,
            restriction: Restriction::new(fields)?,
        })
    }

    /// Whether the window is open at `at`.
    pub fn contains(&self, at: DateTime<Utc>) -> bool {
        let at = timestamp(at);
        self.restriction.allows(&self.zone, self.zone.local(at), at)
    }
}

fn parse_weekday(name: &str) -> Option<Weekday> {
    const NAMES: [(&str, &str, Weekday); 7] = [
        ("mon", "monday", Weekday::Monday),
        ("tue", "tuesday", Weekday::Tuesday),
        ("wed", "wednesday", Weekday::Wednesday),
        ("thu", "thursday", Weekday::Thursday),
        ("fri", "friday", Weekday::Friday),
        ("sat", "saturday", Weekday::Saturday),
        ("sun", "sunday", Weekday::Sunday),
    ];
    let name = name.trim();
    NAMES
        .iter()
        .find(|(short, long, _)| {
            name.eq_ignore_ascii_case(short) || name.eq_ignore_ascii_case(long)
        })
        .map(|&(_, _, day)| day)
}

fn parse_time(field: &'static str, text: &str) -> Result<civil::Time, InvalidSchedule> {
    text.trim().parse().map_err(|_| {
        invalid(
            field,
            format!("{text:?} is not a time of day such as 09:00"),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(weekdays: &[&str], start: &str, end: &str) -> RestrictionFields {
        RestrictionFields {
            weekdays: weekdays.iter().map(|day| day.to_string()).collect(),
            start: start.into(),
            end: end.into(),
        }
    }

    fn window(zone: &str, weekdays: &[&str], start: &str, end: &str) -> TimeWindow {
        TimeWindow::new(zone, &fields(weekdays, start, end)).expect("valid window")
    }

    fn at(text: &str) -> DateTime<Utc> {
        text.parse().expect("RFC 3339 instant")
    }

    #[test]
    fn refuses_what_names_no_window() {
        let err = |w: &[&str], s, e| Restriction::new(&fields(w, s, e)).unwrap_err();
        assert_eq!(err(&[], "09:00", "17:00").field, "weekdays");
        let bad_day = err(&["mon", "funday"], "09:00", "17:00");
        assert_eq!(bad_day.field, "weekdays");
        assert!(bad_day.to_string().contains("funday"), "{bad_day}");
        assert_eq!(err(&["mon"], "9 o'clock", "17:00").field, "start");
        assert_eq!(err(&["mon"], "09:00", "25:00").field, "end");
        assert_eq!(err(&["mon"], "09:00", "09:00").field, "end");
        assert_eq!(
            TimeWindow::new("Nowhere/Land", &fields(&["mon"], "09:00", "17:00"))
                .unwrap_err()
                .field,
            "time_zone"
        );
    }

    #[test]
    fn business_hours_in_new_york() {
        let hours = window(
            "America/New_York",
            &["MON", "Tuesday", "wed", "thu", "fri"],
            "09:00",
            "17:00",
        );
        // Friday 2026-03-06, EST (UTC-5).
        assert!(!hours.contains(at("2026-03-06T13:59:59Z")));
        assert!(hours.contains(at("2026-03-06T14:00:00Z")));
        assert!(hours.contains(at("2026-03-06T21:59:59Z")));
        assert!(!hours.contains(at("2026-03-06T22:00:00Z")));
        // Saturday.
        assert!(!hours.contains(at("2026-03-07T15:00:00Z")));
        // Monday after the change, EDT (UTC-4): the window follows the wall clock.
        assert!(!hours.contains(at("2026-03-09T12:59:59Z")));
        assert!(hours.contains(at("2026-03-09T13:00:00Z")));
    }

    #[test]
    fn a_window_across_midnight_belongs_to_the_day_it_opens() {
        let nights = window("UTC", &["fri"], "22:00", "06:00");
        // 2026-03-06 is a Friday.
        assert!(!nights.contains(at("2026-03-06T05:00:00Z")));
        assert!(nights.contains(at("2026-03-06T22:00:00Z")));
        assert!(nights.contains(at("2026-03-07T05:59:59Z")));
        assert!(!nights.contains(at("2026-03-07T06:00:00Z")));
        assert!(!nights.contains(at("2026-03-07T22:00:00Z")));
    }

    #[test]
    fn a_whole_day_ends_at_24_00() {
        let saturday = window("Asia/Kolkata", &["sat"], "00:00", "24:00");
        // Saturday 2026-03-07 00:00 IST is 2026-03-06T18:30Z.
        assert!(!saturday.contains(at("2026-03-06T18:29:59Z")));
        assert!(saturday.contains(at("2026-03-06T18:30:00Z")));
        assert!(saturday.contains(at("2026-03-07T18:29:59Z")));
        assert!(!saturday.contains(at("2026-03-07T18:30:00Z")));
    }

    #[test]
    fn a_window_edge_in_the_fold_is_its_first_occurrence() {
        // Closes at 01:30 on New York's fall-back night: at the first 01:30 (05:30Z), and it does
        // not open again while the clock repeats 01:00–01:30 EST.
        let late = window("America/New_York", &["sat"], "22:00", "01:30");
        assert!(late.contains(at("2026-11-01T05:29:59Z")));
        assert!(!late.contains(at("2026-11-01T05:30:00Z")));
        assert!(!late.contains(at("2026-11-01T06:15:00Z")));
    }

    #[test]
    fn a_window_edge_in_the_gap_is_the_transition() {
        let early = window("America/New_York", &["sun"], "02:30", "08:00");
        assert!(!early.contains(at("2026-03-08T06:59:59Z")));
        assert!(early.contains(at("2026-03-08T07:00:00Z")));
        // Swallowed whole by the gap: no window that night.
        let inside = window("America/New_York", &["sun"], "02:10", "02:50");
        assert!(!inside.contains(at("2026-03-08T07:00:00Z")));
    }

    #[test]
    fn windows_in_a_range_are_clipped_to_those_that_overlap_it() {
        let restriction = Restriction::new(&fields(&["mon", "tue"], "09:00", "17:00")).unwrap();
        let zone = Zone::parse("UTC").unwrap();
        let ts = |text: &str| timestamp(at(text));
        // Monday 2026-03-09 12:00 to Wednesday 12:00.
        let windows = restriction.windows(
            &zone,
            ts("2026-03-09T12:00:00Z"),
            ts("2026-03-11T12:00:00Z"),
        );
        let starts: Vec<String> = windows
            .iter()
            .map(|w| super::super::zone::instant(w.start).to_rfc3339())
            .collect();
        assert_eq!(
            starts,
            ["2026-03-09T09:00:00+00:00", "2026-03-10T09:00:00+00:00"]
        );
    }

    #[test]
    fn union_merges_overlapping_and_touching_windows() {
        let w = |s: i64, e: i64| Window {
            start: Timestamp::from_second(s).unwrap(),
            end: Timestamp::from_second(e).unwrap(),
        };
        assert_eq!(
            union(vec![w(5, 7), w(0, 2), w(2, 3), w(6, 9)]),
            vec![w(0, 3), w(5, 9)]
        );
    }
}
