//! Escalation through schedules (issue 11, point 7), over HTTP with the server's own worker: a
//! level that names `schedule:<name>` pages whoever is on call when it executes; a level whose
//! schedules have nobody on call moves on to the next level at once, saying so; a level outside
//! its `only_during` window is skipped, saying so, and the next follows at once.

use std::time::Duration;

use chrono::{Timelike, Utc};
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::common::app::TestApp;
use crate::common::{eventually, Backend};

crate::on_every_backend!(
    a_level_pages_whoever_is_on_call_and_moves_on_at_once_when_nobody_is,
    a_level_outside_its_window_is_skipped_and_the_next_follows_at_once,
);

/// A schedule in UTC with one daily rotation of `participants` from `start` (wall-clock).
async fn schedule(app: &TestApp, name: &str, start: &str, participants: &[&str]) {
    let (status, created) = app
        .post("/schedules", json!({"name": name, "time_zone": "UTC"}))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let id = created["id"].as_str().unwrap();
    let (status, rotation) = app
        .post(
            &format!("/schedules/{id}/rotations"),
            json!({"name": "main", "type": "daily", "shift_length": 1, "start": start,
                   "participants": participants}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{rotation}");
}

/// Opens an incident on a new service that escalates at once under a policy of `levels`.
async fn escalate_under(app: &TestApp, name: &str, levels: Value) -> String {
    let (status, policy) = app
        .post(
            "/escalation-policies",
            json!({"name": name, "levels": levels}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{policy}");
    let (status, service) = app
        .post(
            "/services",
            json!({"name": name, "escalation_policy_id": policy["id"]}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{service}");
    let (status, opened) = app
        .post(
            "/message",
            json!({"text": "checkout down", "service_id": service["id"]}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{opened}");
    opened["incident"]["id"].as_str().unwrap().to_owned()
}

/// The statuses of the incident's escalations by level, once `executed` levels have run.
async fn after_executing(app: &TestApp, id: &str, executed: usize) -> Vec<Value> {
    eventually(
        &format!("{executed} levels executed"),
        Duration::from_secs(10),
        || async {
            app.escalations(id)
                .await
                .iter()
                .filter(|e| e["status"] == "EXECUTED")
                .count()
                >= executed
        },
    )
    .await;
    app.escalations(id).await
}

async fn recipients(app: &TestApp, id: &str) -> Vec<String> {
    let (status, reply) = app.get(&format!("/incidents/{id}/notifications")).await;
    assert_eq!(status, StatusCode::OK, "{reply}");
    let mut recipients: Vec<String> = reply["notifications"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["recipient"].as_str().unwrap().to_owned())
        .collect();
    recipients.sort();
    recipients
}

/// What the timeline says of each level's execution that reached nobody.
async fn reached_nobody(app: &TestApp, id: &str) -> Vec<String> {
    let (_, timeline) = app.get(&format!("/incidents/{id}/timeline")).await;
    timeline["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|entry| entry["detail"]["reached_nobody"].as_str())
        .map(str::to_owned)
        .collect()
}

async fn a_level_pages_whoever_is_on_call_and_moves_on_at_once_when_nobody_is(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    app.user("asha", "responder").await;
    app.user("ben", "responder").await;
    schedule(&app, "primary", "2026-01-01T00:00:00", &["asha"]).await;
    schedule(&app, "next-year", "2099-01-01T00:00:00", &["ben"]).await;
    let id = escalate_under(
        &app,
        "through schedules",
        json!([
            {"level": 1, "delay": "0s", "channels": ["in_app"], "targets": ["schedule:next-year"]},
            {"level": 2, "delay": "1h", "channels": ["in_app"], "targets": ["schedule:primary"]},
            {"level": 3, "delay": "1h", "channels": ["in_app"], "targets": ["ben"]},
        ]),
    )
    .await;

    let escalations = after_executing(&app, &id, 2).await;
    let status: Vec<&str> = escalations
        .iter()
        .map(|e| e["status"].as_str().unwrap())
        .collect();
    assert_eq!(
        status,
        ["EXECUTED", "EXECUTED", "PENDING"],
        "level 2 did not wait its hour: {escalations:?}"
    );
    assert_eq!(recipients(&app, &id).await, ["asha"], "on call in primary");
    let said = reached_nobody(&app, &id).await;
    assert_eq!(said.len(), 1, "{said:?}");
    assert!(
        said[0].contains("moving on to the next level at once"),
        "{said:?}"
    );
    let (_, timeline) = app.get(&format!("/incidents/{id}/timeline")).await;
    assert!(
        timeline
            .to_string()
            .contains("nobody active is on call in this schedule"),
        "the empty schedule is named on the timeline"
    );
    app.finish().await;
}

async fn a_level_outside_its_window_is_skipped_and_the_next_follows_at_once(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    app.user("asha", "responder").await;
    app.user("ben", "responder").await;
    // A window that opens two hours from now and closes an hour later, every day: closed now.
    let hour = |ahead: u32| format!("{:02}:00", (Utc::now().hour() + ahead) % 24);
    let every_day = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];
    let window =
        json!({"weekdays": every_day, "start": hour(2), "end": hour(3), "time_zone": "UTC"});

    let (status, refused) = app
        .post(
            "/escalation-policies",
            json!({"name": "never sure", "levels": [
                {"level": 1, "delay": "0s", "channels": ["in_app"], "targets": ["ben"],
                 "only_during": window},
            ]}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{refused}");
    let (status, refused) = app
        .post(
            "/escalation-policies",
            json!({"name": "bad window", "levels": [
                {"level": 1, "delay": "0s", "channels": ["in_app"],
                 "only_during": {"weekdays": ["mon"], "start": "09:00", "end": "17:00",
                                 "time_zone": "Mars/Olympus"}},
            ]}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{refused}");

    let id = escalate_under(
        &app,
        "by night",
        json!([
            {"level": 1, "delay": "0s", "channels": ["in_app"], "targets": ["ben"],
             "only_during": window},
            {"level": 2, "delay": "1h", "channels": ["in_app"], "targets": ["asha"]},
        ]),
    )
    .await;
    after_executing(&app, &id, 2).await;
    assert_eq!(
        recipients(&app, &id).await,
        ["asha"],
        "ben's level was skipped"
    );
    let said = reached_nobody(&app, &id).await;
    assert_eq!(said.len(), 1, "{said:?}");
    assert!(
        said[0].starts_with("outside its window") && said[0].contains("the next level follows"),
        "{said:?}"
    );
    let (_, policies) = app.get("/escalation-policies").await;
    assert!(
        policies.to_string().contains("\"only_during\""),
        "the window is shown: {policies}"
    );
    app.finish().await;
}
