//! The prototype's 15 scenarios ("Test Results Summary" of its design document), in its order.

use reqwest::StatusCode;
use serde_json::json;

use crate::common::app::TestApp;
use crate::common::Backend;

crate::on_every_backend!(
    the_prototypes_fifteen_scenarios,
    dedup_key_joins_the_live_incident,
    dedup_key_of_a_closed_incident_opens_a_new_one,
    messages_without_dedup_key_always_open_new_incidents,
    escalate_schedules_level_one_after_its_delay,
    listing_pages_newest_first_and_filters_by_status,
    timeline_records_every_step_with_its_actor,
);

async fn the_prototypes_fifteen_scenarios(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };

    // 1. Health check returns 200
    let (status, health) = app.get("/health").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(health["status"], "ok");
    assert_eq!(health["database"], "ok");

    // 2. Create incident (OPEN state)
    let (status, created) = app
        .post("/message", json!({ "text": "EMI payment failed" }))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_eq!(created["incident"]["status"], "OPEN");
    assert_eq!(created["deduplicated"], false);
    let first = created["incident"]["id"].as_str().unwrap().to_owned();

    // 3. Escalate incident (OPEN → ESCALATING)
    let (status, escalated) = app.act(&first, "escalate").await;
    assert_eq!(status, StatusCode::OK, "{escalated}");
    assert_eq!(escalated["status"], "ESCALATING");

    // 4. Create second incident for acknowledge path
    let second = app.open_incident("card declined").await;

    // 5. Acknowledge incident (OPEN → ACKNOWLEDGED)
    let (status, acknowledged) = app.act(&second, "acknowledge").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(acknowledged["status"], "ACKNOWLEDGED");
    assert!(acknowledged["acknowledged_at"].is_string());

    // 6. Resolve from ACKNOWLEDGED (ACKNOWLEDGED → RESOLVED)
    let (status, resolved) = app.act(&second, "resolve").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(resolved["status"], "RESOLVED");

    // 7. Escalation record created in DB
    let escalations = app.escalations(&first).await;
    assert_eq!(escalations.len(), 1);
    assert_eq!(escalations[0]["escalation_level"], 1);
    assert_eq!(escalations[0]["status"], "PENDING");
    assert_eq!(escalations[0]["incident_id"], first.as_str());

    // 8. Resolve incident (ESCALATING → RESOLVED), keeping the note
    let (status, resolved) = app
        .post(
            &format!("/incidents/{first}/resolve"),
            json!({ "resolution_note": "Paid manually" }),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(resolved["status"], "RESOLVED");
    assert_eq!(resolved["resolution_note"], "Paid manually");

    // 9. Pending escalations cancelled on resolve
    let escalations = app.escalations(&first).await;
    assert_eq!(escalations[0]["status"], "CANCELLED");
    assert!(escalations[0]["cancelled_at"].is_string());

    // 10. Invalid transition from RESOLVED rejected
    let (status, refused) = app.act(&first, "escalate").await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(refused["error"]["code"], "invalid_transition");
    assert_eq!(refused["error"]["status"], "RESOLVED");
    assert_eq!(refused["error"]["action"], "escalate");

    // 11. Create third incident for cancellation test
    let third = app.open_incident("refund stuck").await;

    // 12. Escalate third incident
    assert_eq!(app.act(&third, "escalate").await.0, StatusCode::OK);

    // 13. Cancel incident (ESCALATING → CANCELLED)
    let (status, cancelled) = app.act(&third, "cancel").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(cancelled["status"], "CANCELLED");
    assert!(cancelled["cancelled_at"].is_string());

    // 14. Pending escalations cancelled on cancel
    let escalations = app.escalations(&third).await;
    assert_eq!(escalations.len(), 1);
    assert_eq!(escalations[0]["status"], "CANCELLED");

    // 15. Invalid transition ACKNOWLEDGED → ESCALATING rejected
    let fourth = app.open_incident("ledger mismatch").await;
    assert_eq!(app.act(&fourth, "acknowledge").await.0, StatusCode::OK);
    let (status, refused) = app.act(&fourth, "escalate").await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(refused["error"]["status"], "ACKNOWLEDGED");
    app.finish().await;
}

async fn dedup_key_joins_the_live_incident(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let first = app
        .message(json!({ "text": "disk full", "dedup_key": "db-1/disk" }))
        .await;
    let id = first["incident"]["id"].as_str().unwrap();
    assert_eq!(app.act(id, "acknowledge").await.0, StatusCode::OK);

    let (status, second) = app
        .post(
            "/message",
            json!({ "text": "disk still full", "dedup_key": "db-1/disk" }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "a deduplicated message answers 200");
    assert_eq!(second["deduplicated"], true);
    assert_eq!(second["incident"]["id"], id);
    assert_eq!(second["incident"]["event_count"], 2);
    assert_eq!(second["incident"]["status"], "ACKNOWLEDGED");
    assert_eq!(second["event"]["incident_id"], id);
    assert_ne!(second["event"]["id"], first["event"]["id"]);
    assert_eq!(
        app.timeline_kinds(id).await,
        [
            "incident.created",
            "incident.acknowledged",
            "event.appended"
        ]
    );
    app.finish().await;
}

async fn dedup_key_of_a_closed_incident_opens_a_new_one(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    for closing in ["resolve", "cancel"] {
        let key = format!("key-{closing}");
        let first = app
            .message(json!({ "text": "flapping", "dedup_key": key }))
            .await;
        let id = first["incident"]["id"].as_str().unwrap();
        assert_eq!(app.act(id, closing).await.0, StatusCode::OK);
        let (status, again) = app
            .post("/message", json!({ "text": "flapping", "dedup_key": key }))
            .await;
        assert_eq!(status, StatusCode::CREATED);
        assert_eq!(again["deduplicated"], false);
        assert_ne!(again["incident"]["id"], id);
        assert_eq!(again["incident"]["event_count"], 1);
    }
    app.finish().await;
}

async fn messages_without_dedup_key_always_open_new_incidents(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let mut ids = std::collections::HashSet::new();
    for _ in 0..5 {
        let (status, reply) = app.post("/message", json!({ "text": "same text" })).await;
        assert_eq!(status, StatusCode::CREATED);
        ids.insert(reply["incident"]["id"].as_str().unwrap().to_owned());
    }
    assert_eq!(ids.len(), 5);
    app.finish().await;
}

async fn escalate_schedules_level_one_after_its_delay(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let id = app.open_incident("latency spike").await;
    let (_, escalated) = app.act(&id, "escalate").await;
    let escalations = app.escalations(&id).await;
    let scheduled =
        chrono::DateTime::parse_from_rfc3339(escalations[0]["scheduled_at"].as_str().unwrap())
            .unwrap();
    let escalated_at =
        chrono::DateTime::parse_from_rfc3339(escalated["updated_at"].as_str().unwrap()).unwrap();
    assert_eq!(
        (scheduled - escalated_at).num_seconds(),
        5 * 60,
        "level 1 runs 5 minutes after escalate"
    );
    assert_eq!(
        escalated["escalation_level"], 0,
        "no level has executed yet"
    );
    assert!(escalations[0]["executed_at"].is_null());
    app.finish().await;
}

async fn listing_pages_newest_first_and_filters_by_status(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let mut created = Vec::new();
    for n in 0..7 {
        created.push(app.open_incident(&format!("incident {n}")).await);
    }
    assert_eq!(app.act(&created[2], "acknowledge").await.0, StatusCode::OK);

    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(cursor) => format!("/incidents?limit=3&cursor={cursor}"),
            None => "/incidents?limit=3".to_owned(),
        };
        let (status, page) = app.get(&path).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        seen.extend(
            page["incidents"]
                .as_array()
                .unwrap()
                .iter()
                .map(|i| i["id"].as_str().unwrap().to_owned()),
        );
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }
    let newest_first: Vec<_> = created.iter().rev().cloned().collect();
    assert_eq!(seen, newest_first);

    let (_, acknowledged) = app.get("/incidents?status=acknowledged").await;
    let ids: Vec<_> = acknowledged["incidents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["id"].clone())
        .collect();
    assert_eq!(ids, [json!(created[2])]);
    assert!(acknowledged["next_cursor"].is_null());
    app.finish().await;
}

async fn timeline_records_every_step_with_its_actor(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let (responder, _) = app.token("alice", "responder").await;
    let reply = TestApp::send(
        app.request(reqwest::Method::POST, "/message", Some(&responder))
            .json(&json!({ "text": "api down" })),
    )
    .await
    .1;
    let id = reply["incident"]["id"].as_str().unwrap().to_owned();
    let act = |action: &'static str, body: serde_json::Value| {
        let request = app
            .request(
                reqwest::Method::POST,
                &format!("/incidents/{id}/{action}"),
                Some(&responder),
            )
            .json(&body);
        async move { TestApp::send(request).await }
    };
    assert_eq!(
        act("escalate", json!({ "note": "paging the DBA" })).await.0,
        StatusCode::OK
    );
    assert_eq!(act("acknowledge", json!({})).await.0, StatusCode::OK);
    assert_eq!(
        act("resolve", json!({ "resolution_note": "restarted" }))
            .await
            .0,
        StatusCode::OK
    );

    let (_, timeline) = app.get(&format!("/incidents/{id}/timeline")).await;
    let entries = timeline["timeline"].as_array().unwrap();
    let summary: Vec<_> = entries
        .iter()
        .map(|e| (e["kind"].as_str().unwrap(), e["actor"].as_str().unwrap()))
        .collect();
    assert_eq!(
        summary,
        [
            ("incident.created", "alice"),
            ("incident.escalated", "alice"),
            ("escalation.scheduled", "system"),
            ("incident.acknowledged", "alice"),
            ("escalation.cancelled", "alice"),
            ("incident.resolved", "alice"),
        ]
    );
    assert_eq!(entries[1]["detail"]["note"], "paging the DBA");
    assert_eq!(entries[5]["detail"]["resolution_note"], "restarted");
    assert_eq!(entries[2]["detail"]["escalation_level"], 1);
    for entry in entries {
        assert!(
            entry["id"].is_string() && entry["at"].is_string(),
            "{entry}"
        );
    }
    app.finish().await;
}
