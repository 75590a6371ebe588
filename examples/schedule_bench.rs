//! Benchmark of the on-call schedule computation (SPEC §7, "who is on call"): on-call lookups of
//! schedules of 5 layers, and a year of shifts and gaps. Prints a markdown table.
//!
//! `cargo run --release --example schedule_bench`

use std::time::{Duration, Instant};

use chrono::{DateTime, TimeDelta, Utc};
use klaxon::domain::schedule::{
    Override, RestrictionFields, Rotation, RotationFields, RotationKind, Schedule, Zone,
};
use rand::{rngs::StdRng, Rng, SeedableRng};
use uuid::Uuid;

/// On-call lookups timed one by one, for the percentiles.
const LOOKUPS: usize = 100_000;
/// Schedules in the many-schedules run (the "1,000 schedules of 5 layers").
const SCHEDULES: usize = 1_000;
/// Times a year of shifts (and of gaps) is computed; the median is reported.
const YEAR_RUNS: usize = 21;
/// Zones the schedules are spread over: DST north and south, a half-hour change, none.
const ZONES: [&str; 5] = [
    "America/New_York",
    "Europe/London",
    "Australia/Lord_Howe",
    "Australia/Sydney",
    "Asia/Kolkata",
];

fn window(weekdays: &[&str], start: &str, end: &str) -> RestrictionFields {
    RestrictionFields {
        weekdays: weekdays.iter().map(|day| day.to_string()).collect(),
        start: start.into(),
        end: end.into(),
    }
}

fn rotation(
    kind: RotationKind,
    shift_length: i64,
    start: &str,
    participants: &[Uuid],
    priority: i32,
    restrictions: Vec<RestrictionFields>,
) -> Rotation {
    Rotation::new(RotationFields {
        kind,
        shift_length,
        start: start.into(),
        participants: participants.to_vec(),
        priority,
        restrictions,
    })
    .expect("a valid rotation")
}

/// Five layers of mixed kinds, most restricted, and a few overrides.
fn five_layers(zone: &str, seed: u128) -> Schedule {
    let people: Vec<Uuid> = (0..12).map(|n| Uuid::from_u128(seed * 100 + n)).collect();
    let weekdays = ["mon", "tue", "wed", "thu", "fri"];
    let rotations = vec![
        rotation(
            RotationKind::Hourly,
            4,
            "2026-01-01T02:30",
            &people[0..3],
            4,
            vec![window(&["sat", "sun"], "08:00", "20:00")],
        ),
        rotation(
            RotationKind::Daily,
            1,
            "2026-01-01T09:00",
            &people[3..6],
            3,
            vec![window(&weekdays, "09:00", "17:00")],
        ),
        rotation(
            RotationKind::Daily,
            2,
            "2026-01-01T17:00",
            &people[6..8],
            2,
            vec![window(&weekdays, "17:00", "09:00")],
        ),
        rotation(
            RotationKind::Weekly,
            1,
            "2026-01-05T09:00",
            &people[8..10],
            1,
            vec![
                window(&["sat"], "00:00", "24:00"),
                window(&["sun"], "00:00", "24:00"),
            ],
        ),
        rotation(
            RotationKind::Weekly,
            2,
            "2026-01-05T09:00",
            &people[10..12],
            0,
            vec![],
        ),
    ];
    let at = |text: &str| text.parse::<DateTime<Utc>>().expect("an instant");
    let overrides: Vec<Override> = (0..6)
        .map(|n| {
            let start = at("2026-02-01T10:00:00Z") + TimeDelta::days(47 * n);
            Override {
                id: Uuid::from_u128(seed * 100 + 50 + n as u128),
                user: people[(n as usize) % people.len()],
                replaces: (n % 2 == 0).then(|| people[3 + (n as usize) % 3]),
                start,
                end: start + TimeDelta::hours(30),
            }
        })
        .collect();
    Schedule::new(Zone::parse(zone).expect("a zone"), rotations, &overrides).expect("a schedule")
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let rank = ((sorted.len() as f64) * p).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn micros(d: Duration) -> String {
    format!("{:.2} µs", d.as_secs_f64() * 1e6)
}

fn millis(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

/// Times `lookups` on-call questions, one by one: (p50, p99, max).
fn time_lookups(schedules: &[Schedule], rng: &mut StdRng, from: DateTime<Utc>) -> [Duration; 3] {
    let year = TimeDelta::days(365).num_seconds();
    let mut times = Vec::with_capacity(LOOKUPS);
    let mut answered = 0usize;
    for _ in 0..LOOKUPS {
        let schedule = &schedules[rng.random_range(0..schedules.len())];
        let at = from + TimeDelta::seconds(rng.random_range(0..year));
        let started = Instant::now();
        answered += schedule.on_call(at).len();
        times.push(started.elapsed());
    }
    assert!(answered > 0, "nobody was ever on call");
    times.sort_unstable();
    [
        percentile(&times, 0.50),
        percentile(&times, 0.99),
        times[times.len() - 1],
    ]
}

fn median_of(mut run: impl FnMut() -> usize) -> (Duration, usize) {
    let mut times = Vec::with_capacity(YEAR_RUNS);
    let mut count = 0;
    for _ in 0..YEAR_RUNS {
        let started = Instant::now();
        count = run();
        times.push(started.elapsed());
    }
    times.sort_unstable();
    (times[YEAR_RUNS / 2], count)
}

fn main() {
    let mut rng = StdRng::seed_from_u64(11);
    let from: DateTime<Utc> = "2026-01-01T00:00:00Z".parse().expect("an instant");
    let to = from + TimeDelta::days(365);

    let one = [five_layers("America/New_York", 1)];
    let many: Vec<Schedule> = (0..SCHEDULES)
        .map(|n| five_layers(ZONES[n % ZONES.len()], n as u128 + 1))
        .collect();

    let [one_p50, one_p99, one_max] = time_lookups(&one, &mut rng, from);
    let [many_p50, many_p99, many_max] = time_lookups(&many, &mut rng, from);
    let (shifts_time, shifts) = median_of(|| one[0].shifts(from, to).expect("a year").len());
    let (gaps_time, gaps) = median_of(|| one[0].gaps(from, to).expect("a year").len());
    // The most handoffs a year can hold: one an hour, each to someone else.
    let people: Vec<Uuid> = (1..=3).map(Uuid::from_u128).collect();
    let hourly = Schedule::new(
        Zone::parse("America/New_York").expect("a zone"),
        vec![rotation(
            RotationKind::Hourly,
            1,
            "2026-01-01T00:00",
            &people,
            0,
            vec![],
        )],
        &[],
    )
    .expect("a schedule");
    let (hourly_time, hourly_shifts) = median_of(|| hourly.shifts(from, to).expect("a year").len());

    println!("| what | p50 | p99 | max | target |");
    println!("|---|---|---|---|---|");
    println!(
        "| on_call, 1 schedule of 5 layers, {LOOKUPS} random instants in 2026 | {} | {} | {} | p99 ≤ 1 ms |",
        micros(one_p50),
        micros(one_p99),
        micros(one_max)
    );
    println!(
        "| on_call, {SCHEDULES} schedules of 5 layers in {} zones, {LOOKUPS} random (schedule, instant) | {} | {} | {} | p99 ≤ 1 ms |",
        ZONES.len(),
        micros(many_p50),
        micros(many_p99),
        micros(many_max)
    );
    println!();
    println!("| what | median of {YEAR_RUNS} runs | result | target |");
    println!("|---|---|---|---|");
    println!(
        "| shifts of a year (2026, America/New_York, 5 layers, 6 overrides) | {} | {shifts} shifts | ≤ 50 ms |",
        millis(shifts_time)
    );
    println!(
        "| gaps of a year (same schedule) | {} | {gaps} gaps | |",
        millis(gaps_time)
    );
    println!(
        "| shifts of a year, one hourly rotation of 1-hour shifts | {} | {hourly_shifts} shifts | ≤ 50 ms |",
        millis(hourly_time)
    );
}
