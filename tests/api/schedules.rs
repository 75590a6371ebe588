//! On-call schedules over HTTP: the shapes issue 11 names, handoffs across DST, layers with
//! weekday restrictions and the gaps they leave, overrides, who is on call, the calendar feed
//! read by a real iCalendar parser, and the 400s and 404s.

use std::io::Write;
use std::process::{Command, Stdio};

use chrono::{DateTime, Duration, NaiveTime, Utc};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::common::app::{TestApp, ADMIN_TOKEN};
use crate::common::Backend;

crate::on_every_backend!(
    schedules_rotations_and_overrides_take_the_issues_shapes,
    daily_handoffs_keep_their_wall_clock_time_across_dst,
    weekday_layers_leave_gaps_at_night_and_an_override_swaps,
    the_calendar_feed_parses_and_matches_the_shifts,
    bad_ranges_and_unknown_schedules_are_refused,
);

async fn schedule(app: &TestApp, name: &str, zone: &str) -> String {
    let (status, reply) = app
        .post("/schedules", json!({"name": name, "time_zone": zone}))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{reply}");
    reply["id"].as_str().unwrap().to_owned()
}

async fn rotation(app: &TestApp, schedule: &str, body: Value) -> String {
    let (status, reply) = app
        .post(&format!("/schedules/{schedule}/rotations"), body)
        .await;
    assert_eq!(status, StatusCode::CREATED, "{reply}");
    reply["id"].as_str().unwrap().to_owned()
}

async fn send(
    app: &TestApp,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let request = app.request(method, path, Some(ADMIN_TOKEN));
    TestApp::send(match body {
        Some(body) => request.json(&body),
        None => request,
    })
    .await
}

/// `(user, start, end)` of each shift `GET …/shifts` answers for `[from, to)`.
async fn shifts(
    app: &TestApp,
    schedule: &str,
    from: &str,
    to: &str,
) -> Vec<(String, String, String)> {
    let (status, reply) = app
        .get(&format!("/schedules/{schedule}/shifts?from={from}&to={to}"))
        .await;
    assert_eq!(status, StatusCode::OK, "{reply}");
    reply["shifts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["user"].as_str().unwrap().to_owned(),
                s["start"].as_str().unwrap().to_owned(),
                s["end"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

/// The handles on call at `at` (now if `None`), and the `at` answered.
async fn on_call(app: &TestApp, schedule: &str, at: Option<&str>) -> (Vec<String>, String) {
    let query = at.map(|at| format!("?at={at}")).unwrap_or_default();
    let (status, reply) = app
        .get(&format!("/schedules/{schedule}/on-call{query}"))
        .await;
    assert_eq!(status, StatusCode::OK, "{reply}");
    let users = reply["users"].as_array().unwrap();
    for user in users {
        assert!(
            user["id"].is_string() && user["handle"].is_string(),
            "{user}"
        );
    }
    (
        users
            .iter()
            .map(|u| u["handle"].as_str().unwrap().to_owned())
            .collect(),
        reply["at"].as_str().unwrap().to_owned(),
    )
}

fn hours(start: &str, end: &str) -> i64 {
    let parse = |at: &str| at.parse::<DateTime<Utc>>().unwrap();
    (parse(end) - parse(start)).num_hours()
}

async fn schedules_rotations_and_overrides_take_the_issues_shapes(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    for handle in ["asha", "ben", "chen"] {
        app.user(handle, "responder").await;
    }
    let (status, created) = app
        .post(
            "/schedules",
            json!({"name": "primary", "time_zone": "America/New_York"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_eq!(
        (&created["name"], &created["time_zone"]),
        (&json!("primary"), &json!("America/New_York"))
    );
    let id = created["id"].as_str().unwrap().to_owned();
    let (status, _) = app
        .post("/schedules", json!({"name": "primary", "time_zone": "UTC"}))
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "the name is taken");
    let (status, reply) = app
        .post(
            "/schedules",
            json!({"name": "x", "time_zone": "Mars/Olympus"}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(reply["error"]["message"]
        .as_str()
        .unwrap()
        .contains("time_zone"));

    let body = json!({
        "name": "weekdays", "type": "daily", "shift_length": 1,
        "start": "2026-03-06T09:00:00", "participants": ["asha", "ben", "chen", "asha"],
        "priority": 0,
        "restrictions": [{"weekdays": ["mon", "tue", "wed", "thu", "fri"], "start": "09:00", "end": "17:00"}],
    });
    let (status, made) = app
        .post(&format!("/schedules/{id}/rotations"), body.clone())
        .await;
    assert_eq!(status, StatusCode::CREATED, "{made}");
    assert!(made["id"].is_string());
    assert_eq!(made["participants"], json!(["asha", "ben", "chen", "asha"]));
    assert_eq!(
        (&made["type"], &made["restrictions"]),
        (&body["type"], &body["restrictions"])
    );
    let rotation_id = made["id"].as_str().unwrap().to_owned();
    for (change, field) in [
        (json!({"participants": ["asha", "nobody"]}), "nobody"),
        (json!({"participants": []}), "participants"),
        (json!({"shift_length": 0}), "shift_length"),
        (json!({"start": "2026-03-06T09:00:00Z"}), "start"),
        (json!({"type": "monthly"}), "type"),
        (
            json!({"restrictions": [{"weekdays": ["someday"], "start": "09:00", "end": "17:00"}]}),
            "weekdays",
        ),
    ] {
        let mut bad = body.clone();
        bad.as_object_mut()
            .unwrap()
            .extend(change.as_object().unwrap().clone());
        let (status, reply) = app.post(&format!("/schedules/{id}/rotations"), bad).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{change} → {reply}");
        let message = reply["error"]["message"].as_str().unwrap();
        assert!(message.contains(field), "{change} → {message}");
    }

    let mut replaced = body.clone();
    replaced["participants"] = json!(["chen"]);
    replaced["type"] = json!("weekly");
    let path = format!("/schedules/{id}/rotations/{rotation_id}");
    let (status, reply) = send(&app, Method::PUT, &path, Some(replaced)).await;
    assert_eq!(status, StatusCode::OK, "{reply}");
    assert_eq!(
        (&reply["id"], &reply["participants"]),
        (&json!(rotation_id), &json!(["chen"]))
    );
    let (_, listed) = app.get(&format!("/schedules/{id}/rotations")).await;
    assert_eq!(listed["rotations"][0]["type"], "weekly");

    let (status, taken) = app
        .post(
            &format!("/schedules/{id}/overrides"),
            json!({"user": "ben", "replaces": "chen", "start": "2026-03-10T12:00:00Z", "end": "2026-03-10T14:00:00-04:00"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{taken}");
    assert!(taken["id"].is_string());
    assert_eq!(
        (&taken["user"], &taken["replaces"], &taken["end"]),
        (
            &json!("ben"),
            &json!("chen"),
            &json!("2026-03-10T18:00:00.000Z")
        )
    );
    let (status, listed) = app.get(&format!("/schedules/{id}/overrides")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(listed["overrides"].as_array().unwrap().len(), 1);

    let (status, patched) = app
        .patch(
            &format!("/schedules/{id}"),
            json!({"time_zone": "europe/london"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{patched}");
    assert_eq!(
        (&patched["name"], &patched["time_zone"]),
        (&json!("primary"), &json!("Europe/London"))
    );
    let (_, listed) = app.get("/schedules").await;
    assert_eq!(listed["schedules"][0]["id"], id.as_str());

    let (viewer, _) = app.token("reader", "viewer").await;
    let refused = TestApp::send(
        app.request(Method::POST, "/schedules", Some(&viewer))
            .json(&json!({"name": "x", "time_zone": "UTC"})),
    )
    .await;
    assert_eq!(refused.0, StatusCode::FORBIDDEN);
    let read = TestApp::send(app.request(
        Method::GET,
        &format!("/schedules/{id}/rotations"),
        Some(&viewer),
    ))
    .await;
    assert_eq!(read.0, StatusCode::OK);

    let (status, retired) = send(&app, Method::DELETE, &path, None).await;
    assert_eq!(status, StatusCode::OK, "{retired}");
    assert!(retired["retired_at"].is_string());
    let (status, _) = send(&app, Method::DELETE, &path, None).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "retired once");
    let (_, listed) = app.get(&format!("/schedules/{id}/rotations")).await;
    assert_eq!(listed["rotations"], json!([]));
    app.finish().await;
}

async fn daily_handoffs_keep_their_wall_clock_time_across_dst(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    for handle in ["asha", "ben"] {
        app.user(handle, "responder").await;
    }
    let daily = |start: &str| {
        json!({"name": "daily", "type": "daily", "shift_length": 1, "start": start,
               "participants": ["asha", "ben"]})
    };
    let new_york = schedule(&app, "new york", "America/New_York").await;
    rotation(&app, &new_york, daily("2026-03-06T09:00:00")).await;
    let spring = shifts(
        &app,
        &new_york,
        "2026-03-07T14:00:00Z",
        "2026-03-09T13:00:00Z",
    )
    .await;
    assert_eq!(
        spring,
        [
            (
                "ben".into(),
                "2026-03-07T14:00:00.000Z".into(),
                "2026-03-08T13:00:00.000Z".into()
            ),
            (
                "asha".into(),
                "2026-03-08T13:00:00.000Z".into(),
                "2026-03-09T13:00:00.000Z".into()
            ),
        ],
        "09:00 EST, then 09:00 EDT"
    );
    assert_eq!(hours(&spring[0].1, &spring[0].2), 23);
    let autumn = shifts(
        &app,
        &new_york,
        "2026-10-31T13:00:00Z",
        "2026-11-01T14:00:00Z",
    )
    .await;
    assert_eq!(hours(&autumn[0].1, &autumn[0].2), 25, "{autumn:?}");

    let london = schedule(&app, "london", "Europe/London").await;
    rotation(&app, &london, daily("2026-10-01T09:00:00")).await;
    let autumn = shifts(
        &app,
        &london,
        "2026-10-24T08:00:00Z",
        "2026-10-25T09:00:00Z",
    )
    .await;
    assert_eq!(autumn.len(), 1, "{autumn:?}");
    assert_eq!(
        hours(&autumn[0].1, &autumn[0].2),
        25,
        "09:00 BST to 09:00 GMT"
    );
    app.finish().await;
}

async fn weekday_layers_leave_gaps_at_night_and_an_override_swaps(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    for handle in ["asha", "ben", "chen"] {
        app.user(handle, "responder").await;
    }
    let id = schedule(&app, "support", "UTC").await;
    let weekdays = |start: &str, end: &str| json!([{"weekdays": ["mon", "tue", "wed", "thu", "fri"], "start": start, "end": end}]);
    // Office hours on top, a longer weekday layer below, nobody at night or at the weekend.
    rotation(
        &app,
        &id,
        json!({"name": "office", "type": "daily", "shift_length": 1, "start": "2026-03-09T00:00:00",
               "participants": ["asha", "ben"], "priority": 1, "restrictions": weekdays("09:00", "17:00")}),
    )
    .await;
    rotation(
        &app,
        &id,
        json!({"name": "extended", "type": "weekly", "shift_length": 1, "start": "2026-03-09T00:00:00",
               "participants": ["chen"], "restrictions": weekdays("08:00", "20:00")}),
    )
    .await;
    // Monday 9 March 2026.
    let monday = shifts(&app, &id, "2026-03-09T00:00:00Z", "2026-03-10T00:00:00Z").await;
    let users: Vec<&str> = monday.iter().map(|(user, ..)| user.as_str()).collect();
    assert_eq!(users, ["chen", "asha", "chen"], "{monday:?}");
    let (status, gaps) = app
        .get(&format!(
            "/schedules/{id}/gaps?from=2026-03-09T00:00:00Z&to=2026-03-10T00:00:00Z"
        ))
        .await;
    assert_eq!(status, StatusCode::OK, "{gaps}");
    assert_eq!(
        gaps,
        json!({"gaps": [
            {"start": "2026-03-09T00:00:00.000Z", "end": "2026-03-09T08:00:00.000Z"},
            {"start": "2026-03-09T20:00:00.000Z", "end": "2026-03-10T00:00:00.000Z"},
        ]})
    );
    let (status, weekend) = app
        .get(&format!(
            "/schedules/{id}/gaps?from=2026-03-14T00:00:00Z&to=2026-03-16T00:00:00Z"
        ))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        weekend["gaps"].as_array().unwrap().len(),
        1,
        "the whole weekend: {weekend}"
    );

    assert_eq!(
        on_call(&app, &id, Some("2026-03-09T12:30:00Z")).await.0,
        ["asha"]
    );
    assert_eq!(
        on_call(&app, &id, Some("2026-03-10T12:30:00Z")).await.0,
        ["ben"]
    );
    assert!(
        on_call(&app, &id, Some("2026-03-09T22:00:00Z"))
            .await
            .0
            .is_empty(),
        "a gap"
    );
    let (_, at) = on_call(&app, &id, None).await;
    let at: DateTime<Utc> = at.parse().unwrap();
    assert!((Utc::now() - at).num_seconds().abs() < 60, "now: {at}");

    let (status, swap) = app
        .post(
            &format!("/schedules/{id}/overrides"),
            json!({"user": "ben", "replaces": "asha", "start": "2026-03-09T12:00:00Z", "end": "2026-03-09T13:00:00Z"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{swap}");
    assert_eq!(
        on_call(&app, &id, Some("2026-03-09T12:30:00Z")).await.0,
        ["ben"]
    );
    let monday = shifts(&app, &id, "2026-03-09T09:00:00Z", "2026-03-09T17:00:00Z").await;
    assert_eq!(
        monday,
        [
            (
                "asha".into(),
                "2026-03-09T09:00:00.000Z".into(),
                "2026-03-09T12:00:00.000Z".into()
            ),
            (
                "ben".into(),
                "2026-03-09T12:00:00.000Z".into(),
                "2026-03-09T13:00:00.000Z".into()
            ),
            (
                "asha".into(),
                "2026-03-09T13:00:00.000Z".into(),
                "2026-03-09T17:00:00.000Z".into()
            ),
        ]
    );
    let (_, elsewhere) = app
        .get(&format!(
            "/schedules/{id}/overrides?from=2026-03-10T00:00:00Z&to=2026-03-11T00:00:00Z"
        ))
        .await;
    assert_eq!(elsewhere["overrides"], json!([]), "outside the range");
    let swap_id = swap["id"].as_str().unwrap();
    let (status, _) = send(
        &app,
        Method::DELETE,
        &format!("/schedules/{id}/overrides/{swap_id}"),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        on_call(&app, &id, Some("2026-03-09T12:30:00Z")).await.0,
        ["asha"],
        "retired"
    );
    app.finish().await;
}

/// `feed` as `tests/support/ics_parse.py` (PyPI's `icalendar`) reads it.
fn parse_ics(feed: &str) -> Value {
    let probe = Command::new("python3")
        .args(["-c", "import icalendar"])
        .status()
        .expect("run python3");
    assert!(
        probe.success(),
        "the calendar tests need the `icalendar` package: run scripts/test-deps.sh"
    );
    let mut parser = Command::new("python3")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/support/ics_parse.py"
        ))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run ics_parse.py");
    parser
        .stdin
        .take()
        .unwrap()
        .write_all(feed.as_bytes())
        .unwrap();
    let output = parser.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "ics_parse.py: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("one JSON line")
}

async fn the_calendar_feed_parses_and_matches_the_shifts(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    for handle in ["asha", "ben"] {
        app.user(handle, "responder").await;
    }
    // A long name, not all ASCII: its SUMMARY must be folded, on a character boundary.
    let name = "Plateforme de paiement — astreinte principale, équipe Zürich & São Paulo";
    let id = schedule(&app, name, "Europe/Zurich").await;
    rotation(
        &app,
        &id,
        json!({"name": "daily", "type": "daily", "shift_length": 1, "start": "2020-01-01T09:00:00",
               "participants": ["asha", "ben"]}),
    )
    .await;
    let (viewer, _) = app.token("calendar", "viewer").await;
    let path = format!("/schedules/{id}/calendar.ics");
    let fetch = |query: String| {
        let request = app.request(Method::GET, &format!("{path}{query}"), None);
        async move { request.send().await.expect("the server answers") }
    };

    let response = fetch(format!("?token={viewer}")).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert!(response.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/calendar"));
    let feed = response.text().await.unwrap();
    assert!(
        feed.ends_with("\r\n") && !feed.replace("\r\n", "").contains(['\r', '\n']),
        "CRLF only"
    );
    let lines: Vec<&str> = feed.trim_end_matches("\r\n").split("\r\n").collect();
    assert!(
        lines.iter().all(|line| line.len() <= 75),
        "folded at 75 octets"
    );
    assert!(
        lines.iter().any(|line| line.starts_with(' ')),
        "a long line was folded"
    );

    let parsed = parse_ics(&feed);
    // The parser does not know X-WR-CALNAME, so it gives its value as written: escaped as RFC
    // 5545 TEXT, as SUMMARY is (which it does know, and unescapes).
    assert_eq!(
        parsed["name"],
        format!("{} on call", name.replace(',', "\\,"))
    );
    let events = parsed["events"].as_array().unwrap();
    let from = Utc::now().date_naive().and_time(NaiveTime::MIN).and_utc();
    let to = from + Duration::days(60);
    let rfc = |at: DateTime<Utc>| at.format("%Y-%m-%dT%H:%M:%SZ").to_string();
    let expected = shifts(&app, &id, &rfc(from), &rfc(to)).await;
    assert_eq!(events.len(), expected.len());
    assert!(
        (60..=61).contains(&events.len()),
        "a shift a day: {}",
        events.len()
    );
    for (event, (user, start, end)) in events.iter().zip(&expected) {
        let whole = |at: &str| at.replace(".000Z", "Z");
        assert_eq!(
            (&event["start"], &event["end"]),
            (&json!(whole(start)), &json!(whole(end)))
        );
        let summary = event["summary"].as_str().unwrap();
        assert!(
            summary.contains(user.as_str()) && summary.contains(name),
            "{summary}"
        );
    }
    let mut uids: Vec<&str> = events.iter().map(|e| e["uid"].as_str().unwrap()).collect();
    uids.sort_unstable();
    uids.dedup();
    assert_eq!(uids.len(), events.len(), "one UID per shift");
    let again = parse_ics(
        &fetch(format!("?token={viewer}"))
            .await
            .text()
            .await
            .unwrap(),
    );
    assert_eq!(again["events"][0]["uid"], events[0]["uid"], "stable UIDs");

    let ben = parse_ics(
        &fetch(format!("?token={viewer}&user=ben"))
            .await
            .text()
            .await
            .unwrap(),
    );
    let ben = ben["events"].as_array().unwrap();
    assert!(!ben.is_empty());
    assert!(ben
        .iter()
        .all(|e| e["summary"].as_str().unwrap().contains("ben")));
    assert_eq!(
        ben.len(),
        expected.iter().filter(|(user, ..)| user == "ben").count()
    );

    let by_header = TestApp::send(app.request(Method::GET, &path, Some(&viewer))).await;
    assert_eq!(by_header.0, StatusCode::OK, "a bearer token works too");
    for (query, status) in [
        (String::new(), StatusCode::UNAUTHORIZED),
        ("?token=wrong".to_owned(), StatusCode::UNAUTHORIZED),
        (
            format!("?token={viewer}&user=nobody"),
            StatusCode::BAD_REQUEST,
        ),
    ] {
        assert_eq!(fetch(query.clone()).await.status(), status, "{query}");
    }
    app.finish().await;
}

async fn bad_ranges_and_unknown_schedules_are_refused(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    app.user("asha", "responder").await;
    let id = schedule(&app, "primary", "UTC").await;
    for (query, field) in [
        ("shifts?to=2026-03-02T00:00:00Z", "from"),
        ("gaps?from=2026-03-02T00:00:00Z", "to"),
        (
            "shifts?from=2026-03-02T00:00:00Z&to=2026-03-01T00:00:00Z",
            "to",
        ),
        (
            "gaps?from=2026-03-02T00:00:00Z&to=2026-03-02T00:00:00Z",
            "to",
        ),
        (
            "shifts?from=2026-01-01T00:00:00Z&to=2027-01-03T00:00:00Z",
            "366",
        ),
        ("shifts?from=yesterday&to=2026-03-01T00:00:00Z", "from"),
        ("on-call?at=noon", "at"),
    ] {
        let (status, reply) = app.get(&format!("/schedules/{id}/{query}")).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{query} → {reply}");
        let message = reply["error"]["message"].as_str().unwrap();
        assert!(message.contains(field), "{query} → {message}");
    }
    for (body, field) in [
        (
            json!({"user": "asha", "start": "2026-03-02T00:00:00Z", "end": "2026-03-01T00:00:00Z"}),
            "end",
        ),
        (
            json!({"user": "nobody", "start": "2026-03-01T00:00:00Z", "end": "2026-03-02T00:00:00Z"}),
            "user",
        ),
        (
            json!({"user": "asha", "replaces": "asha", "start": "2026-03-01T00:00:00Z", "end": "2026-03-02T00:00:00Z"}),
            "replaces",
        ),
        (
            json!({"user": "asha", "start": "2026-03-01T00:00:00", "end": "2026-03-02T00:00:00Z"}),
            "start",
        ),
    ] {
        let (status, reply) = app
            .post(&format!("/schedules/{id}/overrides"), body.clone())
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body} → {reply}");
        assert!(
            reply["error"]["message"].as_str().unwrap().contains(field),
            "{reply}"
        );
    }
    let ghost = uuid::Uuid::now_v7();
    for path in [
        format!("/schedules/{ghost}"),
        format!("/schedules/{ghost}/rotations"),
        format!("/schedules/{ghost}/overrides"),
        format!("/schedules/{ghost}/on-call"),
        format!("/schedules/{ghost}/shifts?from=2026-03-01T00:00:00Z&to=2026-03-02T00:00:00Z"),
        format!("/schedules/{ghost}/gaps?from=2026-03-01T00:00:00Z&to=2026-03-02T00:00:00Z"),
        format!("/schedules/{ghost}/calendar.ics"),
    ] {
        let (status, reply) = app.get(&path).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path} → {reply}");
    }
    let (status, _) = app
        .post(
            &format!("/schedules/{ghost}/rotations"),
            json!({"name": "r", "type": "daily", "shift_length": 1, "start": "2026-03-01T00:00:00", "participants": ["asha"]}),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = app.get("/schedules/not-a-uuid").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    app.finish().await;
}
