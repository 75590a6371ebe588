//! Schedules across time zones and DST changes. Every expectation is an exact UTC instant worked
//! out from the tz rules by hand, not from the code under test.

use chrono::SecondsFormat;
use rand::{rngs::StdRng, Rng, SeedableRng};

use super::*;

const ASHA: Uuid = Uuid::from_u128(1);
const BEN: Uuid = Uuid::from_u128(2);
const CHEN: Uuid = Uuid::from_u128(3);
const DANA: Uuid = Uuid::from_u128(4);
const EVE: Uuid = Uuid::from_u128(5);

fn name(user: Uuid) -> &'static str {
    match user.as_u128() {
        1 => "asha",
        2 => "ben",
        3 => "chen",
        4 => "dana",
        5 => "eve",
        _ => "?",
    }
}

fn at(text: &str) -> DateTime<Utc> {
    text.parse().expect("an RFC 3339 instant")
}

fn utc(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// `(weekdays, start, end)`.
type Window<'a> = (&'a [&'a str], &'a str, &'a str);

fn rotation(
    kind: RotationKind,
    shift_length: i64,
    start: &str,
    participants: &[Uuid],
    priority: i32,
    restrictions: &[Window],
) -> Rotation {
    Rotation::new(RotationFields {
        kind,
        shift_length,
        start: start.into(),
        participants: participants.to_vec(),
        priority,
        restrictions: restrictions
            .iter()
            .map(|(weekdays, start, end)| RestrictionFields {
                weekdays: weekdays.iter().map(|day| day.to_string()).collect(),
                start: start.to_string(),
                end: end.to_string(),
            })
            .collect(),
    })
    .expect("a valid rotation")
}

fn daily(start: &str, participants: &[Uuid]) -> Rotation {
    rotation(RotationKind::Daily, 1, start, participants, 0, &[])
}

fn schedule(zone: &str, rotations: Vec<Rotation>, overrides: &[Override]) -> Schedule {
    Schedule::new(Zone::parse(zone).expect("a zone"), rotations, overrides).expect("a schedule")
}

fn cover(user: Uuid, replaces: Option<Uuid>, start: &str, end: &str) -> Override {
    Override {
        id: Uuid::from_u128(100 + user.as_u128()),
        user,
        replaces,
        start: at(start),
        end: at(end),
    }
}

/// The shifts of `[from, to)` as `user start end`, in UTC.
fn shifts(schedule: &Schedule, from: &str, to: &str) -> Vec<String> {
    schedule
        .shifts(at(from), at(to))
        .expect("a valid range")
        .iter()
        .map(|s| format!("{} {} {}", name(s.user), utc(s.start), utc(s.end)))
        .collect()
}

fn gaps(schedule: &Schedule, from: &str, to: &str) -> Vec<String> {
    schedule
        .gaps(at(from), at(to))
        .expect("a valid range")
        .iter()
        .map(|g| format!("{} {}", utc(g.start), utc(g.end)))
        .collect()
}

fn on_call(schedule: &Schedule, when: &str) -> Vec<&'static str> {
    schedule.on_call(at(when)).into_iter().map(name).collect()
}

#[test]
fn a_daily_shift_across_new_yorks_spring_change_lasts_23_hours() {
    // 09:00 is 14:00Z in EST and 13:00Z in EDT; the change is on Sunday 2026-03-08.
    let s = schedule(
        "America/New_York",
        vec![daily("2026-03-06T09:00:00", &[ASHA, BEN, CHEN])],
        &[],
    );
    assert_eq!(
        shifts(&s, "2026-03-07T14:00:00Z", "2026-03-10T13:00:00Z"),
        [
            "ben 2026-03-07T14:00:00Z 2026-03-08T13:00:00Z",
            "chen 2026-03-08T13:00:00Z 2026-03-09T13:00:00Z",
            "asha 2026-03-09T13:00:00Z 2026-03-10T13:00:00Z",
        ]
    );
    assert_eq!(on_call(&s, "2026-03-08T12:59:59Z"), ["ben"]);
    assert_eq!(on_call(&s, "2026-03-08T13:00:00Z"), ["chen"]);
}

#[test]
fn a_daily_shift_across_new_yorks_autumn_change_lasts_25_hours() {
    let s = schedule(
        "America/New_York",
        vec![daily("2026-10-30T09:00:00", &[ASHA, BEN])],
        &[],
    );
    assert_eq!(
        shifts(&s, "2026-10-31T13:00:00Z", "2026-11-02T14:00:00Z"),
        [
            "ben 2026-10-31T13:00:00Z 2026-11-01T14:00:00Z",
            "asha 2026-11-01T14:00:00Z 2026-11-02T14:00:00Z",
        ]
    );
}

#[test]
fn a_handoff_in_the_spring_gap_happens_at_the_transition() {
    // 02:30 does not exist on 2026-03-08: the clock jumps from 02:00 EST (07:00Z) to 03:00 EDT.
    let s = schedule(
        "America/New_York",
        vec![daily("2026-03-07T02:30:00", &[ASHA, BEN])],
        &[],
    );
    assert_eq!(
        shifts(&s, "2026-03-07T07:30:00Z", "2026-03-09T06:30:00Z"),
        [
            "asha 2026-03-07T07:30:00Z 2026-03-08T07:00:00Z",
            "ben 2026-03-08T07:00:00Z 2026-03-09T06:30:00Z",
        ]
    );
    assert_eq!(on_call(&s, "2026-03-08T06:59:59Z"), ["asha"]);
    assert_eq!(on_call(&s, "2026-03-08T07:00:00Z"), ["ben"]);
}

#[test]
fn a_handoff_in_the_autumn_fold_takes_the_first_occurrence() {
    // 01:30 happens twice on 2026-11-01: at 05:30Z (EDT) and at 06:30Z (EST).
    let s = schedule(
        "America/New_York",
        vec![daily("2026-10-31T01:30:00", &[ASHA, BEN, CHEN])],
        &[],
    );
    assert_eq!(
        shifts(&s, "2026-10-31T05:30:00Z", "2026-11-02T06:30:00Z"),
        [
            "asha 2026-10-31T05:30:00Z 2026-11-01T05:30:00Z",
            "ben 2026-11-01T05:30:00Z 2026-11-02T06:30:00Z",
        ]
    );
    // The second pass through 01:15 and 01:30 hands nothing off.
    assert_eq!(on_call(&s, "2026-11-01T06:15:00Z"), ["ben"]);
    assert_eq!(on_call(&s, "2026-11-01T06:30:00Z"), ["ben"]);
    assert_eq!(on_call(&s, "2026-11-02T06:30:00Z"), ["chen"]);
}

#[test]
fn hourly_handoffs_stay_on_the_hour_across_the_spring_gap() {
    // 00:00 EST is 05:00Z. 02:00 does not exist: its handoff falls at the transition (07:00Z),
    // where 03:00 EDT's does too, so chen's empty turn is skipped and asha takes 03:00.
    let s = schedule(
        "America/New_York",
        vec![rotation(
            RotationKind::Hourly,
            1,
            "2026-03-08T00:00:00",
            &[ASHA, BEN, CHEN],
            0,
            &[],
        )],
        &[],
    );
    assert_eq!(
        shifts(&s, "2026-03-08T05:00:00Z", "2026-03-08T09:00:00Z"),
        [
            "asha 2026-03-08T05:00:00Z 2026-03-08T06:00:00Z",
            "ben 2026-03-08T06:00:00Z 2026-03-08T07:00:00Z",
            "asha 2026-03-08T07:00:00Z 2026-03-08T08:00:00Z",
            "ben 2026-03-08T08:00:00Z 2026-03-08T09:00:00Z",
        ]
    );
    assert_eq!(on_call(&s, "2026-03-08T07:00:00Z"), ["asha"]);
}

#[test]
fn hourly_handoffs_stay_on_the_hour_across_the_autumn_fold() {
    // 00:00 EDT is 04:00Z; 01:00 first happens at 05:00Z; 02:00 EST is 07:00Z. The 01:00 shift
    // lasts two hours, through the repeated hour.
    let s = schedule(
        "America/New_York",
        vec![rotation(
            RotationKind::Hourly,
            1,
            "2026-11-01T00:00:00",
            &[ASHA, BEN, CHEN],
            0,
            &[],
        )],
        &[],
    );
    assert_eq!(
        shifts(&s, "2026-11-01T04:00:00Z", "2026-11-01T08:00:00Z"),
        [
            "asha 2026-11-01T04:00:00Z 2026-11-01T05:00:00Z",
            "ben 2026-11-01T05:00:00Z 2026-11-01T07:00:00Z",
            "chen 2026-11-01T07:00:00Z 2026-11-01T08:00:00Z",
        ]
    );
}

#[test]
fn shift_lengths_of_several_hours_count_wall_clock_hours() {
    // Every two hours from 00:00: 00:00 (05:00Z), 02:00 (in the gap: 07:00Z), 04:00 EDT (08:00Z).
    let s = schedule(
        "America/New_York",
        vec![rotation(
            RotationKind::Hourly,
            2,
            "2026-03-08T00:00:00",
            &[ASHA, BEN, CHEN],
            0,
            &[],
        )],
        &[],
    );
    assert_eq!(
        shifts(&s, "2026-03-08T05:00:00Z", "2026-03-08T10:00:00Z"),
        [
            "asha 2026-03-08T05:00:00Z 2026-03-08T07:00:00Z",
            "ben 2026-03-08T07:00:00Z 2026-03-08T08:00:00Z",
            "chen 2026-03-08T08:00:00Z 2026-03-08T10:00:00Z",
        ]
    );
    // Three-day shifts from Friday 09:00 EST: the one across the change lasts 71 hours.
    let s = schedule(
        "America/New_York",
        vec![rotation(
            RotationKind::Daily,
            3,
            "2026-03-06T09:00:00",
            &[ASHA, BEN],
            0,
            &[],
        )],
        &[],
    );
    assert_eq!(
        shifts(&s, "2026-03-06T14:00:00Z", "2026-03-12T13:00:00Z"),
        [
            "asha 2026-03-06T14:00:00Z 2026-03-09T13:00:00Z",
            "ben 2026-03-09T13:00:00Z 2026-03-12T13:00:00Z",
        ]
    );
}

#[test]
fn an_instant_on_a_handoff_belongs_to_the_shift_it_begins() {
    let s = schedule("UTC", vec![daily("2026-01-01T00:00:00", &[ASHA, BEN])], &[]);
    assert_eq!(on_call(&s, "2026-01-01T23:59:59.999999999Z"), ["asha"]);
    assert_eq!(on_call(&s, "2026-01-02T00:00:00Z"), ["ben"]);
    // Far from the start, the shift index is still exact (asha has the even days).
    assert_eq!(on_call(&s, "2126-01-01T00:00:00Z"), ["asha"]);
}

#[test]
fn a_weekly_rotation_in_london_keeps_monday_09_00() {
    // 09:00 GMT is 09:00Z and 09:00 BST 08:00Z; the changes are on 2026-03-29 and 2026-10-25.
    let s = schedule(
        "Europe/London",
        vec![rotation(
            RotationKind::Weekly,
            1,
            "2026-03-23T09:00:00",
            &[ASHA, BEN],
            0,
            &[],
        )],
        &[],
    );
    assert_eq!(
        shifts(&s, "2026-03-23T09:00:00Z", "2026-04-06T08:00:00Z"),
        [
            "asha 2026-03-23T09:00:00Z 2026-03-30T08:00:00Z",
            "ben 2026-03-30T08:00:00Z 2026-04-06T08:00:00Z",
        ]
    );
    // 30 weeks in, the handoff of 2026-10-19 (BST) to 2026-10-26 (GMT) lasts 169 hours.
    assert_eq!(
        shifts(&s, "2026-10-19T08:00:00Z", "2026-10-26T09:00:00Z"),
        ["asha 2026-10-19T08:00:00Z 2026-10-26T09:00:00Z"]
    );
}

#[test]
fn london_gap_and_fold_handoffs() {
    // The clock skips 01:00–02:00 on 2026-03-29 (transition 01:00Z) and repeats it on
    // 2026-10-25 (first 01:30 is 00:30Z BST).
    let s = schedule(
        "Europe/London",
        vec![daily("2026-03-28T01:30:00", &[ASHA, BEN])],
        &[],
    );
    assert_eq!(on_call(&s, "2026-03-29T00:59:59Z"), ["asha"]);
    assert_eq!(on_call(&s, "2026-03-29T01:00:00Z"), ["ben"]);
    // 2026-10-25 is 211 days after 2026-03-28: an odd day, ben's.
    assert_eq!(on_call(&s, "2026-10-25T00:29:59Z"), ["asha"]);
    assert_eq!(on_call(&s, "2026-10-25T00:30:00Z"), ["ben"]);
    assert_eq!(on_call(&s, "2026-10-25T01:30:00Z"), ["ben"]);
}

#[test]
fn lord_howe_changes_by_half_an_hour() {
    // UTC+10:30 in winter, UTC+11 in summer; the clock jumps 02:00→02:30 on 2026-10-04 and falls
    // back 02:00→01:30 on 2026-04-05.
    let s = schedule(
        "Australia/Lord_Howe",
        vec![daily("2026-10-03T09:00:00", &[ASHA, BEN])],
        &[],
    );
    assert_eq!(
        shifts(&s, "2026-10-02T22:30:00Z", "2026-10-04T22:00:00Z"),
        [
            "asha 2026-10-02T22:30:00Z 2026-10-03T22:00:00Z",
            "ben 2026-10-03T22:00:00Z 2026-10-04T22:00:00Z",
        ]
    );
    let s = schedule(
        "Australia/Lord_Howe",
        vec![daily("2026-04-04T09:00:00", &[ASHA, BEN])],
        &[],
    );
    assert_eq!(
        shifts(&s, "2026-04-03T22:00:00Z", "2026-04-05T22:30:00Z"),
        [
            "asha 2026-04-03T22:00:00Z 2026-04-04T22:30:00Z",
            "ben 2026-04-04T22:30:00Z 2026-04-05T22:30:00Z",
        ]
    );
    // 02:15 is in the half-hour gap: the transition, 02:00 at +10:30.
    let s = schedule(
        "Australia/Lord_Howe",
        vec![daily("2026-10-03T02:15:00", &[ASHA, BEN])],
        &[],
    );
    assert_eq!(on_call(&s, "2026-10-03T15:29:59Z"), ["asha"]);
    assert_eq!(on_call(&s, "2026-10-03T15:30:00Z"), ["ben"]);
    // 01:45 is in the half-hour fold: its first occurrence, at +11.
    let s = schedule(
        "Australia/Lord_Howe",
        vec![daily("2026-04-04T01:45:00", &[ASHA, BEN])],
        &[],
    );
    assert_eq!(on_call(&s, "2026-04-04T14:44:59Z"), ["asha"]);
    assert_eq!(on_call(&s, "2026-04-04T14:45:00Z"), ["ben"]);
    assert_eq!(on_call(&s, "2026-04-04T15:15:00Z"), ["ben"]);
}

#[test]
fn sydney_springs_forward_in_october_and_falls_back_in_april() {
    // AEST is UTC+10, AEDT UTC+11: 02:00→03:00 on 2026-10-04, 03:00→02:00 on 2026-04-05.
    let s = schedule(
        "Australia/Sydney",
        vec![daily("2026-10-03T09:00:00", &[ASHA, BEN])],
        &[],
    );
    assert_eq!(
        shifts(&s, "2026-10-02T23:00:00Z", "2026-10-04T22:00:00Z"),
        [
            "asha 2026-10-02T23:00:00Z 2026-10-03T22:00:00Z",
            "ben 2026-10-03T22:00:00Z 2026-10-04T22:00:00Z",
        ]
    );
    let s = schedule(
        "Australia/Sydney",
        vec![daily("2026-04-04T02:30:00", &[ASHA, BEN])],
        &[],
    );
    // First 02:30 on 2026-04-05 is AEDT (15:30Z), the next day's AEST (16:30Z): 25 hours.
    assert_eq!(
        shifts(&s, "2026-04-04T15:30:00Z", "2026-04-06T16:30:00Z"),
        [
            "ben 2026-04-04T15:30:00Z 2026-04-05T16:30:00Z",
            "asha 2026-04-05T16:30:00Z 2026-04-06T16:30:00Z",
        ]
    );
    let s = schedule(
        "Australia/Sydney",
        vec![daily("2026-10-03T02:30:00", &[ASHA, BEN])],
        &[],
    );
    // 02:30 on 2026-10-04 does not exist: the transition, 02:00 AEST (16:00Z).
    assert_eq!(on_call(&s, "2026-10-03T15:59:59Z"), ["asha"]);
    assert_eq!(on_call(&s, "2026-10-03T16:00:00Z"), ["ben"]);
}

#[test]
fn kolkata_has_a_half_hour_offset_and_no_dst() {
    let s = schedule(
        "Asia/Kolkata",
        vec![rotation(
            RotationKind::Hourly,
            12,
            "2026-03-01T09:00:00",
            &[ASHA, BEN],
            0,
            &[],
        )],
        &[],
    );
    // 09:00 and 21:00 IST are 03:30Z and 15:30Z, every day of the year.
    assert_eq!(
        shifts(&s, "2026-07-01T03:30:00Z", "2026-07-02T03:30:00Z"),
        [
            "asha 2026-07-01T03:30:00Z 2026-07-01T15:30:00Z",
            "ben 2026-07-01T15:30:00Z 2026-07-02T03:30:00Z",
        ]
    );
}

#[test]
fn before_its_start_a_rotation_has_nobody_and_the_layer_below_decides() {
    let s = schedule(
        "UTC",
        vec![
            rotation(RotationKind::Daily, 1, "2026-05-01T00:00", &[ASHA], 5, &[]),
            daily("2026-01-01T00:00", &[BEN]),
        ],
        &[],
    );
    assert_eq!(on_call(&s, "2026-04-30T23:59:59Z"), ["ben"]);
    assert_eq!(on_call(&s, "2026-05-01T00:00:00Z"), ["asha"]);
    let alone = schedule("UTC", vec![daily("2026-05-01T00:00", &[ASHA])], &[]);
    assert!(alone.on_call(at("2026-04-30T12:00:00Z")).is_empty());
    assert_eq!(
        gaps(&alone, "2026-04-30T00:00:00Z", "2026-05-02T00:00:00Z"),
        ["2026-04-30T00:00:00Z 2026-05-01T00:00:00Z"]
    );
}

#[test]
fn higher_priority_wins_and_equal_priorities_go_by_order_given() {
    let rotations = vec![
        rotation(RotationKind::Daily, 1, "2026-01-01T00:00", &[ASHA], 1, &[]),
        rotation(RotationKind::Daily, 1, "2026-01-01T00:00", &[BEN], 1, &[]),
        rotation(RotationKind::Daily, 1, "2026-01-01T00:00", &[CHEN], 2, &[]),
    ];
    assert_eq!(
        on_call(
            &schedule("UTC", rotations.clone(), &[]),
            "2026-02-01T00:00:00Z"
        ),
        ["chen"]
    );
    let equals = rotations[..2].to_vec();
    assert_eq!(
        on_call(&schedule("UTC", equals, &[]), "2026-02-01T00:00:00Z"),
        ["asha"]
    );
}

#[test]
fn a_business_hours_layer_over_a_round_the_clock_layer() {
    // Weekdays 09:00–17:00 New York time: asha and ben by the day; chen at all other times.
    let s = schedule(
        "America/New_York",
        vec![
            rotation(
                RotationKind::Daily,
                1,
                "2026-03-02T00:00",
                &[ASHA, BEN],
                10,
                &[(&["mon", "tue", "wed", "thu", "fri"], "09:00", "17:00")],
            ),
            rotation(RotationKind::Weekly, 1, "2026-03-02T00:00", &[CHEN], 0, &[]),
        ],
        &[],
    );
    // Friday 2026-03-06 (asha's: 4 days in) to Monday 2026-03-09 (ben's: 7 days in).
    assert_eq!(
        shifts(&s, "2026-03-06T12:00:00Z", "2026-03-09T22:00:00Z"),
        [
            "chen 2026-03-06T12:00:00Z 2026-03-06T14:00:00Z",
            "asha 2026-03-06T14:00:00Z 2026-03-06T22:00:00Z",
            "chen 2026-03-06T22:00:00Z 2026-03-09T13:00:00Z",
            "ben 2026-03-09T13:00:00Z 2026-03-09T21:00:00Z",
            "chen 2026-03-09T21:00:00Z 2026-03-09T22:00:00Z",
        ]
    );
    assert!(gaps(&s, "2026-03-06T12:00:00Z", "2026-03-09T22:00:00Z").is_empty());
}

#[test]
fn nights_and_weekends_left_uncovered_are_gaps() {
    let s = schedule(
        "America/New_York",
        vec![rotation(
            RotationKind::Daily,
            1,
            "2026-03-02T00:00",
            &[ASHA, BEN],
            0,
            &[(&["mon", "tue", "wed", "thu", "fri"], "09:00", "17:00")],
        )],
        &[],
    );
    assert_eq!(
        gaps(&s, "2026-03-06T12:00:00Z", "2026-03-10T12:00:00Z"),
        [
            "2026-03-06T12:00:00Z 2026-03-06T14:00:00Z",
            "2026-03-06T22:00:00Z 2026-03-09T13:00:00Z",
            "2026-03-09T21:00:00Z 2026-03-10T12:00:00Z",
        ]
    );
    assert!(s.on_call(at("2026-03-07T15:00:00Z")).is_empty());
}

#[test]
fn a_night_restriction_crosses_midnight_from_the_day_it_starts() {
    // Fridays and Saturdays 22:00–06:00 UTC: Friday night and Saturday night.
    let s = schedule(
        "UTC",
        vec![rotation(
            RotationKind::Weekly,
            1,
            "2026-03-02T00:00",
            &[DANA],
            0,
            &[(&["fri", "sat"], "22:00", "06:00")],
        )],
        &[],
    );
    assert_eq!(
        shifts(&s, "2026-03-06T00:00:00Z", "2026-03-09T00:00:00Z"),
        [
            "dana 2026-03-06T22:00:00Z 2026-03-07T06:00:00Z",
            "dana 2026-03-07T22:00:00Z 2026-03-08T06:00:00Z",
        ]
    );
}

#[test]
fn overrides_swap_cover_and_add() {
    let base = || daily("2026-03-01T09:00", &[ASHA, BEN]);
    // 2026-03-02 09:00Z to 03-03 09:00Z is ben's.
    let swap = cover(
        CHEN,
        Some(BEN),
        "2026-03-02T09:00:00Z",
        "2026-03-03T09:00:00Z",
    );
    let lunch = cover(
        DANA,
        Some(BEN),
        "2026-03-02T12:00:00Z",
        "2026-03-02T13:00:00Z",
    );
    let shadow = cover(EVE, None, "2026-03-02T20:00:00Z", "2026-03-03T10:00:00Z");
    let s = schedule("UTC", vec![base()], &[swap, lunch, shadow]);
    assert_eq!(
        shifts(&s, "2026-03-02T00:00:00Z", "2026-03-03T12:00:00Z"),
        [
            "asha 2026-03-02T00:00:00Z 2026-03-02T09:00:00Z",
            "chen 2026-03-02T09:00:00Z 2026-03-02T12:00:00Z",
            "dana 2026-03-02T12:00:00Z 2026-03-02T13:00:00Z",
            "chen 2026-03-02T13:00:00Z 2026-03-03T09:00:00Z",
            "eve 2026-03-02T20:00:00Z 2026-03-03T10:00:00Z",
            "asha 2026-03-03T09:00:00Z 2026-03-03T12:00:00Z",
        ]
    );
    assert_eq!(on_call(&s, "2026-03-02T12:30:00Z"), ["dana"]);
    assert_eq!(on_call(&s, "2026-03-03T09:30:00Z"), ["asha", "eve"]);
    // Replacing someone who is not on call changes nothing.
    let idle = cover(
        CHEN,
        Some(DANA),
        "2026-03-02T00:00:00Z",
        "2026-03-04T00:00:00Z",
    );
    let s = schedule("UTC", vec![base()], &[idle]);
    assert_eq!(on_call(&s, "2026-03-02T10:00:00Z"), ["ben"]);
}

#[test]
fn an_override_stays_put_when_the_rotation_changes() {
    let swap = cover(
        CHEN,
        Some(BEN),
        "2026-03-02T09:00:00Z",
        "2026-03-02T21:00:00Z",
    );
    let before = schedule(
        "UTC",
        vec![daily("2026-03-01T09:00", &[ASHA, BEN])],
        std::slice::from_ref(&swap),
    );
    assert_eq!(on_call(&before, "2026-03-02T10:00:00Z"), ["chen"]);
    // The handoff moves to 21:00, so ben is on call from 2026-03-01 21:00 to 03-02 21:00:
    // chen still takes exactly 09:00–21:00 of it, not ben's new shift.
    let after = schedule(
        "UTC",
        vec![daily("2026-03-01T21:00", &[BEN, ASHA])],
        &[swap],
    );
    assert_eq!(
        shifts(&after, "2026-03-02T00:00:00Z", "2026-03-03T00:00:00Z"),
        [
            "ben 2026-03-02T00:00:00Z 2026-03-02T09:00:00Z",
            "chen 2026-03-02T09:00:00Z 2026-03-02T21:00:00Z",
            "asha 2026-03-02T21:00:00Z 2026-03-03T00:00:00Z",
        ]
    );
}

#[test]
fn the_latest_override_for_a_user_wins() {
    let first = cover(
        CHEN,
        Some(ASHA),
        "2026-03-01T00:00:00Z",
        "2026-03-02T00:00:00Z",
    );
    let second = cover(
        DANA,
        Some(ASHA),
        "2026-03-01T06:00:00Z",
        "2026-03-01T12:00:00Z",
    );
    let s = schedule(
        "UTC",
        vec![daily("2026-03-01T00:00", &[ASHA])],
        &[first, second],
    );
    assert_eq!(on_call(&s, "2026-03-01T05:00:00Z"), ["chen"]);
    assert_eq!(on_call(&s, "2026-03-01T06:00:00Z"), ["dana"]);
    assert_eq!(on_call(&s, "2026-03-01T12:00:00Z"), ["chen"]);
}

#[test]
fn back_to_back_shifts_of_one_user_are_one_and_ranges_are_clipped() {
    let s = schedule(
        "UTC",
        vec![
            rotation(
                RotationKind::Daily,
                1,
                "2026-03-01T00:00",
                &[ASHA],
                1,
                &[(&["mon"], "00:00", "24:00")],
            ),
            rotation(
                RotationKind::Hourly,
                1,
                "2026-03-01T00:00",
                &[ASHA, ASHA],
                0,
                &[],
            ),
        ],
        &[],
    );
    assert_eq!(
        shifts(&s, "2026-03-01T10:30:00Z", "2026-03-03T10:30:00Z"),
        ["asha 2026-03-01T10:30:00Z 2026-03-03T10:30:00Z"]
    );
}

#[test]
fn ranges_must_be_forward_and_at_most_a_year() {
    let s = schedule("UTC", vec![daily("2026-03-01T00:00", &[ASHA])], &[]);
    let from = at("2026-03-01T00:00:00Z");
    assert_eq!(s.shifts(from, from).unwrap_err().field, "to");
    assert_eq!(
        s.gaps(from, from - TimeDelta::hours(1)).unwrap_err().field,
        "to"
    );
    assert!(s
        .shifts(from, from + TimeDelta::days(MAX_RANGE_DAYS))
        .is_ok());
    let err = s
        .shifts(from, from + TimeDelta::days(MAX_RANGE_DAYS + 1))
        .unwrap_err();
    assert_eq!(err.to_string(), "`to` must be at most 366 days after from");
}

#[test]
fn overrides_that_end_before_they_start_are_refused() {
    let backwards = cover(ASHA, None, "2026-03-02T00:00:00Z", "2026-03-01T00:00:00Z");
    let empty = cover(ASHA, None, "2026-03-01T00:00:00Z", "2026-03-01T00:00:00Z");
    for o in [backwards, empty] {
        let err = Schedule::new(Zone::parse("UTC").unwrap(), vec![], &[o]).unwrap_err();
        assert_eq!(err.to_string(), "`end` must be after start");
    }
}

#[test]
fn a_shifts_uid_names_the_schedule_the_user_and_the_start() {
    let shift = Shift {
        user: ASHA,
        start: at("2026-03-08T07:00:00Z"),
        end: at("2026-03-09T06:30:00Z"),
    };
    let schedule_id = Uuid::from_u128(0xabc);
    assert_eq!(
        shift.uid(schedule_id),
        "00000000000000000000000000000abc-00000000000000000000000000000001-1772953200@klaxon"
    );
}

/// Over a year of a five-layer schedule in several zones, at random instants: `on_call` names
/// exactly the users whose shifts contain the instant, a user's shifts never overlap, and the
/// shifts and gaps together tile the range.
#[test]
fn shifts_gaps_and_on_call_agree_everywhere() {
    let mut rng = StdRng::seed_from_u64(11);
    for zone in [
        "America/New_York",
        "Europe/London",
        "Australia/Lord_Howe",
        "Asia/Kolkata",
    ] {
        let s = schedule(
            zone,
            vec![
                rotation(
                    RotationKind::Hourly,
                    5,
                    "2026-01-01T02:30",
                    &[ASHA, BEN],
                    3,
                    &[(&["sat", "sun"], "01:30", "02:45")],
                ),
                rotation(
                    RotationKind::Daily,
                    2,
                    "2026-01-01T01:30",
                    &[BEN, CHEN, BEN],
                    2,
                    &[(&["mon", "tue", "wed"], "22:00", "02:15")],
                ),
                rotation(
                    RotationKind::Weekly,
                    1,
                    "2026-01-05T09:00",
                    &[CHEN, DANA],
                    1,
                    &[(&["mon", "tue", "wed", "thu", "fri"], "09:00", "17:00")],
                ),
                rotation(
                    RotationKind::Hourly,
                    1,
                    "2026-01-01T00:00",
                    &[DANA, EVE, ASHA],
                    0,
                    &[(&["thu", "fri"], "00:00", "24:00")],
                ),
                rotation(
                    RotationKind::Daily,
                    1,
                    "2026-06-01T02:00",
                    &[EVE],
                    0,
                    &[(&["sun"], "02:00", "03:00")],
                ),
            ],
            &[
                cover(
                    ASHA,
                    Some(BEN),
                    "2026-03-07T00:00:00Z",
                    "2026-03-09T00:00:00Z",
                ),
                cover(EVE, None, "2026-10-31T20:00:00Z", "2026-11-02T08:00:00Z"),
                cover(
                    DANA,
                    Some(CHEN),
                    "2026-04-01T00:00:00Z",
                    "2026-04-08T00:00:00Z",
                ),
            ],
        );
        let (from, to) = (at("2026-01-01T00:00:00Z"), at("2027-01-01T00:00:00Z"));
        let shifts = s.shifts(from, to).unwrap();
        let gaps = s.gaps(from, to).unwrap();

        for user in [ASHA, BEN, CHEN, DANA, EVE] {
            let mine: Vec<&Shift> = shifts.iter().filter(|s| s.user == user).collect();
            for pair in mine.windows(2) {
                assert!(
                    pair[0].end < pair[1].start,
                    "{zone}: {pair:?} overlap or touch"
                );
            }
        }
        // Every edge of a shift or gap is covered on its far side by something else, or is
        // the range's end: the covered time and the gaps leave no hole.
        let mut covered: Vec<(DateTime<Utc>, DateTime<Utc>)> =
            shifts.iter().map(|s| (s.start, s.end)).collect();
        covered.extend(gaps.iter().map(|g| (g.start, g.end)));
        covered.sort();
        let mut reach = from;
        for (start, end) in covered {
            assert!(start <= reach, "{zone}: hole from {reach} to {start}");
            reach = reach.max(end);
        }
        assert_eq!(reach, to, "{zone}");

        for _ in 0..2_000 {
            let when = from + TimeDelta::seconds(rng.random_range(0..(to - from).num_seconds()));
            let expected: Vec<Uuid> = {
                let mut users: Vec<Uuid> = shifts
                    .iter()
                    .filter(|s| s.start <= when && when < s.end)
                    .map(|s| s.user)
                    .collect();
                users.sort();
                users
            };
            assert_eq!(s.on_call(when), expected, "{zone} at {when}");
            let in_gap = gaps.iter().any(|g| g.start <= when && when < g.end);
            assert_eq!(in_gap, expected.is_empty(), "{zone} at {when}");
        }
    }
}
