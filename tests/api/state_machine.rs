//! Every cell of SPEC §3's state table, over HTTP, with its side effects on escalations.

use reqwest::StatusCode;

use crate::common::app::TestApp;
use crate::common::Backend;

const ACTIONS: [&str; 4] = ["acknowledge", "escalate", "resolve", "cancel"];

/// (status, [result of acknowledge, escalate, resolve, cancel]); `None` is a 409.
const TABLE: [(&str, [Option<&str>; 4]); 5] = [
    (
        "OPEN",
        [
            Some("ACKNOWLEDGED"),
            Some("ESCALATING"),
            Some("RESOLVED"),
            Some("CANCELLED"),
        ],
    ),
    (
        "ESCALATING",
        [
            Some("ACKNOWLEDGED"),
            None,
            Some("RESOLVED"),
            Some("CANCELLED"),
        ],
    ),
    (
        "ACKNOWLEDGED",
        [None, None, Some("RESOLVED"), Some("CANCELLED")],
    ),
    ("RESOLVED", [None, None, None, None]),
    ("CANCELLED", [None, None, None, None]),
];

/// Opens an incident and drives it into `status`.
async fn incident_in(app: &TestApp, status: &str) -> String {
    let id = app.open_incident(&format!("headed for {status}")).await;
    let path: &[&str] = match status {
        "OPEN" => &[],
        "ESCALATING" => &["escalate"],
        "ACKNOWLEDGED" => &["acknowledge"],
        "RESOLVED" => &["resolve"],
        "CANCELLED" => &["cancel"],
        other => panic!("no path to {other}"),
    };
    for action in path {
        assert_eq!(app.act(&id, action).await.0, StatusCode::OK);
    }
    id
}

crate::on_every_backend!(
    every_cell_of_the_state_table,
    unknown_incident_is_404_for_every_action
);

async fn every_cell_of_the_state_table(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    for (from, row) in TABLE {
        for (action, expected) in ACTIONS.into_iter().zip(row) {
            let id = incident_in(&app, from).await;
            let before = app.escalations(&id).await;
            let (status, body) = app.act(&id, action).await;
            let cell = format!("{from} + {action}");
            match expected {
                Some(to) => {
                    assert_eq!(status, StatusCode::OK, "{cell}: {body}");
                    assert_eq!(body["status"], to, "{cell}");
                    let (_, stored) = app.get(&format!("/incidents/{id}")).await;
                    assert_eq!(stored, body, "{cell}: the answer is what was stored");
                }
                None => {
                    assert_eq!(status, StatusCode::CONFLICT, "{cell}: {body}");
                    assert_eq!(body["error"]["code"], "invalid_transition", "{cell}");
                    assert_eq!(body["error"]["status"], from, "{cell}");
                    assert_eq!(body["error"]["action"], action, "{cell}");
                    let (_, stored) = app.get(&format!("/incidents/{id}")).await;
                    assert_eq!(stored["status"], from, "{cell}: a refusal changes nothing");
                }
            }
            let after = app.escalations(&id).await;
            let statuses: Vec<_> = after
                .iter()
                .map(|e| e["status"].as_str().unwrap())
                .collect();
            match (from, expected) {
                ("OPEN", Some("ESCALATING")) => assert_eq!(statuses, ["PENDING"], "{cell}"),
                ("ESCALATING", Some(_)) => {
                    assert_eq!(statuses, ["CANCELLED"], "{cell}: cancels pending")
                }
                _ => assert_eq!(after, before, "{cell}: escalations untouched"),
            }
        }
    }
    app.finish().await;
}

async fn unknown_incident_is_404_for_every_action(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let id = uuid::Uuid::now_v7();
    for action in ACTIONS {
        let (status, body) = app.act(&id.to_string(), action).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{action}: {body}");
        assert_eq!(body["error"]["code"], "not_found");
        assert!(body["error"]["message"]
            .as_str()
            .unwrap()
            .contains(&id.to_string()));
    }
    for path in [
        format!("/incidents/{id}"),
        format!("/incidents/{id}/timeline"),
        format!("/incidents/escalations/{id}"),
    ] {
        assert_eq!(app.get(&path).await.0, StatusCode::NOT_FOUND, "{path}");
    }
    app.finish().await;
}
