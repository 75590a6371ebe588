//! Races: many requests acting on one incident at once produce exactly one winner per
//! transition, the rest 409, and never a 500.

use std::collections::HashMap;

use futures::future::join_all;
use reqwest::StatusCode;
use serde_json::json;

use crate::common::app::TestApp;
use crate::common::Backend;

/// How many requests race.
const RACERS: usize = 50;

crate::on_every_backend!(
    fifty_identical_actions_have_one_winner,
    fifty_mixed_actions_follow_the_state_machine,
    fifty_messages_with_one_dedup_key_make_one_incident,
    concurrent_messages_with_mixed_keys_group_exactly,
);

async fn fifty_identical_actions_have_one_winner(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    for action in ["acknowledge", "escalate", "resolve", "cancel"] {
        let id = app.open_incident(&format!("race to {action}")).await;
        let outcomes = join_all((0..RACERS).map(|_| app.act(&id, action))).await;
        let mut counts: HashMap<StatusCode, usize> = HashMap::new();
        for (status, _) in &outcomes {
            *counts.entry(*status).or_default() += 1;
        }
        assert_eq!(
            counts.get(&StatusCode::OK),
            Some(&1),
            "{action}: {counts:?}"
        );
        assert_eq!(
            counts.get(&StatusCode::CONFLICT),
            Some(&(RACERS - 1)),
            "{action}: {counts:?}"
        );
        if action == "escalate" {
            assert_eq!(
                app.escalations(&id).await.len(),
                1,
                "exactly one level 1 was scheduled"
            );
        }
    }
    app.finish().await;
}

async fn fifty_mixed_actions_follow_the_state_machine(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let id = app.open_incident("mixed race").await;
    let actions = ["escalate", "acknowledge", "resolve", "cancel"];
    let outcomes = join_all((0..RACERS).map(|n| app.act(&id, actions[n % actions.len()]))).await;
    for (status, body) in &outcomes {
        assert!(
            *status == StatusCode::OK || *status == StatusCode::CONFLICT,
            "only 200 or 409, got {status}: {body}"
        );
    }
    // Replaying the winners in the order they were recorded must be a valid walk of the table,
    // ending in exactly one terminal transition.
    let kinds = app.timeline_kinds(&id).await;
    let transitions: Vec<_> = kinds
        .iter()
        .filter(|k| k.starts_with("incident.") && *k != "incident.created")
        .collect();
    let winners = outcomes
        .iter()
        .filter(|(status, _)| *status == StatusCode::OK)
        .count();
    assert_eq!(
        transitions.len(),
        winners,
        "one timeline entry per winner: {kinds:?}"
    );
    let terminal = transitions
        .iter()
        .filter(|k| ["incident.resolved", "incident.cancelled"].contains(&k.as_str()))
        .count();
    assert_eq!(terminal, 1, "{kinds:?}");
    assert!(
        transitions.len() <= 3,
        "at most escalate → acknowledge → close: {kinds:?}"
    );
    let (_, incident) = app.get(&format!("/incidents/{id}")).await;
    assert!(["RESOLVED", "CANCELLED"].contains(&incident["status"].as_str().unwrap()));
    for escalation in app.escalations(&id).await {
        assert_eq!(
            escalation["status"], "CANCELLED",
            "nothing left pending on a closed incident"
        );
    }
    app.finish().await;
}

async fn fifty_messages_with_one_dedup_key_make_one_incident(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let body = json!({ "text": "cpu hot", "dedup_key": "host-7/cpu" });
    let outcomes = join_all((0..RACERS).map(|_| app.post("/message", body.clone()))).await;
    let created = outcomes
        .iter()
        .filter(|(status, _)| *status == StatusCode::CREATED)
        .count();
    let joined = outcomes
        .iter()
        .filter(|(status, _)| *status == StatusCode::OK)
        .count();
    assert_eq!((created, joined), (1, RACERS - 1), "{outcomes:?}");
    let ids: std::collections::HashSet<_> = outcomes
        .iter()
        .map(|(_, r)| r["incident"]["id"].clone())
        .collect();
    assert_eq!(ids.len(), 1);
    let id = ids.into_iter().next().unwrap();
    let (_, incident) = app
        .get(&format!("/incidents/{}", id.as_str().unwrap()))
        .await;
    assert_eq!(incident["event_count"], RACERS);
    app.finish().await;
}

/// Messages arriving together are stored together (many to a transaction): keys still group
/// exactly, keyless messages still open one incident each, and every answer is its own.
async fn concurrent_messages_with_mixed_keys_group_exactly(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let keys = ["k0", "k1", "k2", "k3", "k4"];
    let bodies: Vec<_> = (0..200)
        .map(|n| match n % 6 {
            5 => json!({ "text": format!("keyless {n}") }),
            k => json!({ "text": format!("keyed {n}"), "dedup_key": keys[k] }),
        })
        .collect();
    let outcomes = join_all(bodies.iter().map(|body| app.post("/message", body.clone()))).await;
    let mut incident_of_key: HashMap<String, serde_json::Value> = HashMap::new();
    let mut keyless_incidents = std::collections::HashSet::new();
    for (body, (status, reply)) in bodies.iter().zip(&outcomes) {
        assert!(status.is_success(), "{status}: {reply}");
        assert_eq!(
            reply["event"]["summary"], body["text"],
            "each answer is its own"
        );
        assert_eq!(reply["event"]["incident_id"], reply["incident"]["id"]);
        match body["dedup_key"].as_str() {
            Some(key) => {
                let incident = incident_of_key
                    .entry(key.to_owned())
                    .or_insert(reply["incident"]["id"].clone());
                assert_eq!(*incident, reply["incident"]["id"], "one incident per key");
            }
            None => {
                assert_eq!(*status, StatusCode::CREATED);
                assert!(
                    keyless_incidents.insert(reply["incident"]["id"].clone()),
                    "a new incident each"
                );
            }
        }
    }
    let created = outcomes
        .iter()
        .filter(|(status, _)| *status == StatusCode::CREATED)
        .count();
    assert_eq!(created, keys.len() + keyless_incidents.len());
    for (key, id) in incident_of_key {
        let expected = bodies
            .iter()
            .filter(|b| b["dedup_key"] == key.as_str())
            .count();
        let (_, incident) = app
            .get(&format!("/incidents/{}", id.as_str().unwrap()))
            .await;
        assert_eq!(incident["event_count"], expected, "{key}");
    }
    app.finish().await;
}
