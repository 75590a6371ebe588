//! Heartbeat monitors over HTTP, with the server's own watch: a monitor never pinged never
//! fires; a ping missed by more than its interval opens one incident on its service; the next
//! ping resolves it.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::common::app::TestApp;
use crate::common::{eventually, Backend};

crate::on_every_backend!(
    a_missed_heartbeat_opens_one_incident_and_the_next_ping_resolves_it,
    a_heartbeat_is_changed_and_retired,
);

async fn incidents_of(app: &TestApp, service: &str) -> Vec<Value> {
    let (_, page) = app.get(&format!("/incidents?service={service}")).await;
    page["incidents"].as_array().unwrap().clone()
}

async fn a_missed_heartbeat_opens_one_incident_and_the_next_ping_resolves_it(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let (_, service) = app
        .post(
            "/services",
            json!({"name": "backups", "auto_escalate": false}),
        )
        .await;
    let service = service["id"].as_str().unwrap().to_owned();
    let (status, heartbeat) = app
        .post(
            &format!("/services/{service}/heartbeats"),
            json!({"name": "nightly backup", "interval": "1s"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{heartbeat}");
    for field in ["id", "name", "interval", "key"] {
        assert!(heartbeat.get(field).is_some(), "{field} in {heartbeat}");
    }
    assert_eq!(heartbeat["interval"], "1s");
    let key = heartbeat["key"].as_str().unwrap().to_owned();
    let (_, listed) = app.get(&format!("/services/{service}/heartbeats")).await;
    assert!(!listed.to_string().contains(&key), "the key is shown once");

    // Never pinged: never due.
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    assert!(incidents_of(&app, &service).await.is_empty());

    let ping = || async {
        TestApp::send(app.request(Method::POST, &format!("/heartbeats/{key}"), None)).await
    };
    let (status, pinged) = ping().await;
    assert_eq!(status, StatusCode::OK, "{pinged}");
    assert_eq!(pinged["resolved_incident_id"], Value::Null);
    eventually("the miss's incident", Duration::from_secs(10), || async {
        incidents_of(&app, &service).await.len() == 1
    })
    .await;
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    let opened = incidents_of(&app, &service).await;
    assert_eq!(opened.len(), 1, "one incident however long the miss");
    assert!(
        opened[0]["title"]
            .as_str()
            .unwrap()
            .contains("nightly backup"),
        "{}",
        opened[0]
    );
    assert_eq!(opened[0]["status"], "OPEN");

    let (status, pinged) = ping().await;
    assert_eq!(status, StatusCode::OK, "{pinged}");
    assert_eq!(pinged["resolved_incident_id"], opened[0]["id"]);
    let id = opened[0]["id"].as_str().unwrap();
    let (_, incident) = app.get(&format!("/incidents/{id}")).await;
    assert_eq!(incident["status"], "RESOLVED");

    let (status, _) =
        TestApp::send(app.request(Method::POST, "/heartbeats/klx_not_a_key", None)).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = app
        .post(
            &format!("/services/{service}/heartbeats"),
            json!({"name": "x", "interval": "10ms"}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    app.finish().await;
}

async fn a_heartbeat_is_changed_and_retired(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let (_, service) = app
        .post("/services", json!({"name": "etl", "auto_escalate": false}))
        .await;
    let service = service["id"].as_str().unwrap().to_owned();
    let (_, heartbeat) = app
        .post(
            &format!("/services/{service}/heartbeats"),
            json!({"name": "etl run", "interval": "1h"}),
        )
        .await;
    let (id, key) = (
        heartbeat["id"].as_str().unwrap().to_owned(),
        heartbeat["key"].as_str().unwrap().to_owned(),
    );
    let path = format!("/services/{service}/heartbeats/{id}");
    let ping = || async {
        TestApp::send(app.request(Method::POST, &format!("/heartbeats/{key}"), None)).await
    };
    assert_eq!(ping().await.0, StatusCode::OK);

    for bad in [
        json!({"interval": "10ms"}),
        json!({"interval": "1000000years"}),
        json!({"name": " "}),
        json!({"interval": 5}),
        json!({"colour": "red"}),
    ] {
        let (status, body) = app.patch(&path, bad.clone()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}: {body}");
    }
    let (status, changed) = app
        .patch(&path, json!({"name": "etl, hourly", "interval": "1s"}))
        .await;
    assert_eq!(status, StatusCode::OK, "{changed}");
    assert_eq!(changed["name"], "etl, hourly");
    assert_eq!(changed["interval"], "1s");
    eventually(
        "the miss under the new interval",
        Duration::from_secs(10),
        || async { incidents_of(&app, &service).await.len() == 1 },
    )
    .await;

    let (status, retired) =
        TestApp::send(app.request(Method::DELETE, &path, Some(crate::common::app::ADMIN_TOKEN)))
            .await;
    assert_eq!(status, StatusCode::OK, "{retired}");
    assert!(retired["retired_at"].is_string(), "{retired}");
    let (_, listed) = app.get(&format!("/services/{service}/heartbeats")).await;
    assert_eq!(listed["heartbeats"], json!([]));
    assert_eq!(
        ping().await.0,
        StatusCode::NOT_FOUND,
        "a retired key no longer pings"
    );
    let (status, _) = app.patch(&path, json!({"name": "again"})).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = app
        .patch(
            &format!("/services/{service}/heartbeats/{}", uuid::Uuid::now_v7()),
            json!({"name": "x"}),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    app.finish().await;
}
