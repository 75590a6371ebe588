//! Escalating incidents walk their levels on time, in order, and stop when acted on.

use std::time::Duration;

use chrono::DateTime;
use futures::future::join_all;
use reqwest::{Method, StatusCode};
use serde_json::Value;

use crate::common::app::TestApp;
use crate::common::{eventually, Backend};
use crate::support::{execute, policy};

/// Long enough that only a wake-up, never the safety-net scan, can explain an execution on time.
const NO_POLLING: Duration = Duration::from_secs(3600);
const DEADLINE: Duration = Duration::from_secs(20);

fn at(value: &Value) -> DateTime<chrono::FixedOffset> {
    DateTime::parse_from_rfc3339(
        value
            .as_str()
            .unwrap_or_else(|| panic!("a timestamp: {value}")),
    )
    .unwrap()
}

fn statuses(escalations: &[Value]) -> Vec<&str> {
    escalations
        .iter()
        .map(|e| e["status"].as_str().unwrap())
        .collect()
}

crate::on_every_backend!(
    levels_run_in_order_on_time_and_stop_after_the_last,
    acting_at_each_stage_stops_the_walk,
    a_due_escalation_of_a_closed_incident_is_cancelled_not_executed,
    metrics_count_executions_and_lag,
    a_changed_policy_applies_only_to_incidents_escalated_later,
);

async fn levels_run_in_order_on_time_and_stop_after_the_last(backend: Backend) {
    let Some(app) = TestApp::spawn_with(backend, |config| {
        config.escalation.policy = policy(&[300, 200, 200]);
        config.escalation.poll_interval = NO_POLLING;
    })
    .await
    else {
        return;
    };
    let id = app.open_incident("walk all levels").await;
    app.act(&id, "escalate").await;
    eventually("three executed levels", DEADLINE, || async {
        statuses(&app.escalations(&id).await) == ["EXECUTED", "EXECUTED", "EXECUTED"]
    })
    .await;

    let escalations = app.escalations(&id).await;
    let delays = [300, 200, 200];
    for (level, escalation) in escalations.iter().enumerate() {
        assert_eq!(escalation["escalation_level"], level + 1);
        let (scheduled, executed) = (
            at(&escalation["scheduled_at"]),
            at(&escalation["executed_at"]),
        );
        assert!(executed >= scheduled, "never early: {escalation}");
        if level > 0 {
            let previous = at(&escalations[level - 1]["executed_at"]);
            assert_eq!(
                (scheduled - previous).num_milliseconds(),
                delays[level],
                "level {} follows the one before",
                level + 1
            );
        }
    }
    let (_, incident) = app.get(&format!("/incidents/{id}")).await;
    assert_eq!(incident["escalation_level"], 3);
    assert_eq!(
        incident["status"], "ESCALATING",
        "the walk ends, the incident stays open for people"
    );

    let kinds = app.timeline_kinds(&id).await;
    assert_eq!(
        kinds.iter().filter(|k| *k == "escalation.executed").count(),
        3,
        "{kinds:?}"
    );
    assert_eq!(
        kinds
            .iter()
            .filter(|k| *k == "escalation.scheduled")
            .count(),
        3,
        "{kinds:?}"
    );
    let (_, health) = app.get("/health").await;
    assert_eq!(
        health["worker"]["pending"], 0,
        "nothing after the last level: {health}"
    );
    app.finish().await;
}

async fn acting_at_each_stage_stops_the_walk(backend: Backend) {
    let Some(server) = TestApp::spawn_with(backend, |config| {
        config.escalation.policy = policy(&[200, 200, 200]);
        config.escalation.poll_interval = Duration::from_millis(100);
    })
    .await
    else {
        return;
    };
    let app = &server;
    let cases = ["acknowledge", "resolve", "cancel"]
        .into_iter()
        .flat_map(|action| (0..3).map(move |stage| (action, stage)));
    join_all(cases.map(|(action, stage)| async move {
        let id = app
            .open_incident(&format!("{action} after {stage} levels"))
            .await;
        app.act(&id, "escalate").await;
        eventually("the stage to be reached", DEADLINE, || async {
            let escalations = app.escalations(&id).await;
            escalations
                .iter()
                .filter(|e| e["status"] == "EXECUTED")
                .count()
                == stage
                && escalations.iter().any(|e| e["status"] == "PENDING")
        })
        .await;
        let (status, body) = app.act(&id, action).await;
        assert_eq!(status, StatusCode::OK, "{action} at stage {stage}: {body}");

        let escalations = app.escalations(&id).await;
        let cancelled = escalations
            .iter()
            .find(|e| e["status"] == "CANCELLED")
            .expect("the pending level was cancelled");
        let would_have_run = at(&cancelled["scheduled_at"]);
        // Wait until the worker has looked again after the cancelled level would have been due.
        eventually(
            "the worker to pass the cancelled level's due time",
            DEADLINE,
            || async {
                let (_, health) = app.get("/health").await;
                health["worker"]["last_tick_at"]
                    .as_str()
                    .is_some_and(|tick| {
                        DateTime::parse_from_rfc3339(tick).unwrap()
                            > would_have_run + chrono::Duration::milliseconds(100)
                    })
            },
        )
        .await;
        // The level pending when we looked may have run before the action landed; what must
        // hold is that nothing ran after it, and that the level pending then was cancelled.
        let acted_at = at(&body["updated_at"]);
        let after = app.escalations(&id).await;
        let executed: Vec<_> = after.iter().filter(|e| e["status"] == "EXECUTED").collect();
        let cancelled = after.iter().filter(|e| e["status"] == "CANCELLED").count();
        let cell = format!("{action} at stage {stage}: {after:?}");
        assert_eq!(
            executed.len() + cancelled,
            after.len(),
            "nothing left pending: {cell}"
        );
        assert!(executed.len() >= stage, "{cell}");
        assert!(
            cancelled == 1 || executed.len() == 3,
            "the pending level was cancelled: {cell}"
        );
        for escalation in executed {
            assert!(
                at(&escalation["executed_at"]) <= acted_at,
                "nothing ran after it: {cell}"
            );
        }
    }))
    .await;
    server.finish().await;
}

async fn a_due_escalation_of_a_closed_incident_is_cancelled_not_executed(backend: Backend) {
    let no_worker = klaxon::server::Roles {
        api: true,
        worker: false,
    };
    let Some(app) = TestApp::spawn_roles(backend, no_worker, |config| {
        config.escalation.policy = policy(&[0, 100]);
    })
    .await
    else {
        return;
    };
    let id = app.open_incident("closed behind the worker's back").await;
    app.act(&id, "escalate").await;
    // Only something outside the state machine can leave a pending escalation on a closed
    // incident (transitions cancel them); the worker must still check before it executes.
    execute(
        &app.db.url,
        &format!("update incidents set status = 'RESOLVED' where id = '{id}'"),
    )
    .await;

    let worker = klaxon::server::start_with(
        &app.config,
        klaxon::server::Roles {
            api: false,
            worker: true,
        },
    )
    .await
    .unwrap();
    eventually("the due escalation to be settled", DEADLINE, || async {
        app.escalations(&id).await[0]["status"] != "PENDING"
    })
    .await;
    worker.stop().await.unwrap();
    let escalations = app.escalations(&id).await;
    assert_eq!(statuses(&escalations), ["CANCELLED"]);
    assert!(escalations[0]["executed_at"].is_null());
    let (_, timeline) = app.get(&format!("/incidents/{id}/timeline")).await;
    let last = timeline["timeline"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .clone();
    assert_eq!(last["kind"], "escalation.cancelled");
    assert_eq!(last["actor"], "system");
    assert_eq!(last["detail"]["reason"], "incident is RESOLVED");
    app.finish().await;
}

async fn metrics_count_executions_and_lag(backend: Backend) {
    let Some(app) = TestApp::spawn_with(backend, |config| {
        config.escalation.policy = policy(&[100, 100]);
    })
    .await
    else {
        return;
    };
    let id = app.open_incident("measured").await;
    app.act(&id, "escalate").await;
    eventually("both levels", DEADLINE, || async {
        statuses(&app.escalations(&id).await) == ["EXECUTED", "EXECUTED"]
    })
    .await;
    let response = app
        .request(
            Method::GET,
            "/metrics",
            Some(crate::common::app::ADMIN_TOKEN),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(response.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain"));
    let text = response.text().await.unwrap();
    for line in [
        "klaxon_escalations_executed_total 2",
        "klaxon_escalations_cancelled_total 0",
        "klaxon_escalations_pending 0",
        "klaxon_escalation_lag_seconds_count 2",
        "klaxon_escalation_lag_seconds_bucket{le=\"+Inf\"} 2",
    ] {
        assert!(text.lines().any(|l| l == line), "{line:?} in\n{text}");
    }
    let (status, _) = TestApp::send(app.request(Method::GET, "/metrics", None)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    app.finish().await;
}

/// An API instance and a worker instance share PostgreSQL: the worker learns of a new
/// escalation through `LISTEN/NOTIFY`, not by polling.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_elsewhere_is_woken_through_postgresql() {
    let api_only = klaxon::server::Roles {
        api: true,
        worker: false,
    };
    let Some(app) = TestApp::spawn_roles(Backend::Postgres, api_only, |config| {
        config.escalation.policy = policy(&[300, 300]);
        config.escalation.poll_interval = NO_POLLING;
    })
    .await
    else {
        return;
    };
    let worker = klaxon::server::start_with(
        &app.config,
        klaxon::server::Roles {
            api: false,
            worker: true,
        },
    )
    .await
    .unwrap();
    let status = worker.worker.clone().unwrap();
    eventually("the worker's first look", DEADLINE, || async {
        status.snapshot().last_tick_at.is_some()
    })
    .await;
    // That look found nothing; from now on only a notification can wake the worker in time.
    let id = app.open_incident("across instances").await;
    app.act(&id, "escalate").await;
    eventually(
        "both levels, executed by the other instance",
        DEADLINE,
        || async { statuses(&app.escalations(&id).await) == ["EXECUTED", "EXECUTED"] },
    )
    .await;
    worker.stop().await.unwrap();
    app.finish().await;
}

async fn a_changed_policy_applies_only_to_incidents_escalated_later(backend: Backend) {
    let Some(mut app) = TestApp::spawn_with(backend, |config| {
        config.escalation.policy = policy(&[500, 300]);
    })
    .await
    else {
        return;
    };
    let before = app
        .open_incident("escalated under the two-level policy")
        .await;
    app.act(&before, "escalate").await;

    app.config.escalation.policy = policy(&[100, 100, 100]);
    app.restart().await;
    let after = app
        .open_incident("escalated under the three-level policy")
        .await;
    app.act(&after, "escalate").await;

    eventually("both walks to finish", DEADLINE, || async {
        statuses(&app.escalations(&before).await) == ["EXECUTED", "EXECUTED"]
            && statuses(&app.escalations(&after).await) == ["EXECUTED", "EXECUTED", "EXECUTED"]
    })
    .await;
    let first = app.escalations(&before).await;
    let gap = at(&first[1]["scheduled_at"]) - at(&first[0]["executed_at"]);
    assert_eq!(
        gap.num_milliseconds(),
        300,
        "level 2 keeps the delay of the policy it started with"
    );
    let (_, health) = app.get("/health").await;
    assert_eq!(
        health["worker"]["pending"], 0,
        "the old incident got no third level"
    );
    app.finish().await;
}
