//! Services, escalation policies as data and integration keys over HTTP: the shapes issue 10
//! names, humantime durations in and out, keys shown once, revocation, and who may do what.

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::common::app::TestApp;
use crate::common::Backend;

crate::on_every_backend!(
    policies_and_services_are_made_read_changed_and_checked,
    integration_keys_are_shown_once_listed_without_secrets_and_revoked,
    a_message_for_an_auto_escalating_service_escalates_on_arrival,
);

async fn policies_and_services_are_made_read_changed_and_checked(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let body = json!({
        "name": "payments on call",
        "repeat": 2,
        "levels": [
            {"level": 1, "delay": "0s", "targets": [], "channels": ["in_app"]},
            {"level": 2, "delay": "1h 30m", "targets": ["alice"], "channels": ["email", "sms"]},
        ],
    });
    let (status, policy) = app.post("/escalation-policies", body.clone()).await;
    assert_eq!(status, StatusCode::CREATED, "{policy}");
    let policy_id = policy["id"].as_str().unwrap().to_owned();
    assert_eq!(policy["repeat"], 2);
    assert_eq!(policy["levels"][1]["delay"], "1h 30m", "shown as written");
    assert_eq!(policy["levels"][1]["targets"], json!(["alice"]));
    let (status, _) = app.post("/escalation-policies", body).await;
    assert_eq!(status, StatusCode::CONFLICT, "the name is taken");
    for (bad, field) in [
        (json!({"name": "x", "levels": []}), "levels"),
        (
            json!({"name": "x", "levels": [{"level": 2, "delay": "1m", "channels": ["in_app"]}]}),
            "levels",
        ),
        (
            json!({"name": "x", "levels": [{"level": 1, "delay": "soon", "channels": ["in_app"]}]}),
            "delay",
        ),
        (
            json!({"name": "x", "levels": [{"level": 1, "delay": "366days", "channels": ["in_app"]}]}),
            "delay",
        ),
        (
            json!({"name": "x", "levels": [{"level": 1, "delay": "1m", "channels": []}]}),
            "channels",
        ),
        (
            json!({"name": "x", "levels": [{"level": 1, "delay": "1m", "channels": ["webhook"], "webhooks": ["nope"]}]}),
            "webhooks",
        ),
        (
            json!({"name": "x", "repeat": 21, "levels": [{"level": 1, "delay": "1m", "channels": ["in_app"]}]}),
            "repeat",
        ),
    ] {
        let (status, reply) = app.post("/escalation-policies", bad.clone()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad} → {reply}");
        assert!(
            reply["error"]["message"].as_str().unwrap().contains(field),
            "{reply}"
        );
    }
    let replaced = json!({
        "name": "payments on call",
        "levels": [{"level": 1, "delay": "5m", "channels": ["personal"], "targets": ["alice"]}],
    });
    let (status, reply) = TestApp::send(
        app.request(
            Method::PUT,
            &format!("/escalation-policies/{policy_id}"),
            Some(crate::common::app::ADMIN_TOKEN),
        )
        .json(&replaced),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{reply}");
    assert_eq!(
        (reply["repeat"].clone(), reply["levels"][0]["delay"].clone()),
        (json!(0), json!("5m"))
    );
    let (status, listed) = app.get("/escalation-policies").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(listed["escalation_policies"].as_array().unwrap().len(), 1);

    let (status, service) = app
        .post(
            "/services",
            json!({"name": "payments", "escalation_policy_id": policy_id}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{service}");
    for field in [
        "id",
        "name",
        "escalation_policy_id",
        "auto_escalate",
        "created_at",
    ] {
        assert!(service.get(field).is_some(), "{field} in {service}");
    }
    assert_eq!(service["auto_escalate"], true, "the default");
    let id = service["id"].as_str().unwrap().to_owned();
    let (status, reply) = app
        .post(
            "/services",
            json!({"name": "search", "escalation_policy_id": uuid::Uuid::now_v7()}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{reply}");
    assert!(reply["error"]["message"]
        .as_str()
        .unwrap()
        .contains("escalation_policy_id"));
    let (status, patched) = app
        .patch(
            &format!("/services/{id}"),
            json!({"auto_escalate": false, "escalation_policy_id": null}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{patched}");
    assert_eq!(
        (
            patched["auto_escalate"].clone(),
            patched["escalation_policy_id"].clone()
        ),
        (json!(false), Value::Null)
    );
    assert_eq!(patched["name"], "payments", "kept");
    let (status, listed) = app.get("/services").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(listed["services"][0]["id"], id.as_str());

    let (viewer, _) = app.token("reader", "viewer").await;
    let refused = TestApp::send(
        app.request(Method::POST, "/services", Some(&viewer))
            .json(&json!({"name": "x"})),
    )
    .await;
    assert_eq!(refused.0, StatusCode::FORBIDDEN);
    let read =
        TestApp::send(app.request(Method::GET, &format!("/services/{id}"), Some(&viewer))).await;
    assert_eq!(read.0, StatusCode::OK);
    app.finish().await;
}

async fn integration_keys_are_shown_once_listed_without_secrets_and_revoked(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let (_, service) = app.post("/services", json!({"name": "payments"})).await;
    let id = service["id"].as_str().unwrap().to_owned();
    let created = app
        .request(
            Method::POST,
            &format!("/services/{id}/integration-keys"),
            Some(crate::common::app::ADMIN_TOKEN),
        )
        .json(&json!({"name": "prometheus"}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), StatusCode::CREATED);
    assert_eq!(created.headers()["cache-control"], "no-store");
    let key: Value = created.json().await.unwrap();
    for field in ["id", "name", "key", "created_at"] {
        assert!(key.get(field).is_some(), "{field} in {key}");
    }
    let secret = key["key"].as_str().unwrap().to_owned();
    let (status, listed) = app.get(&format!("/services/{id}/integration-keys")).await;
    assert_eq!(status, StatusCode::OK);
    let text = listed.to_string();
    assert!(
        !text.contains(&secret),
        "the secret is never shown again: {text}"
    );
    assert_eq!(listed["integration_keys"][0]["name"], "prometheus");
    let key_id = key["id"].as_str().unwrap();
    let (status, revoked) = TestApp::send(app.request(
        Method::DELETE,
        &format!("/services/{id}/integration-keys/{key_id}"),
        Some(crate::common::app::ADMIN_TOKEN),
    ))
    .await;
    assert_eq!(status, StatusCode::OK, "{revoked}");
    assert!(revoked["revoked_at"].is_string());
    let (status, _) = app
        .post(
            &format!("/services/{}/integration-keys", uuid::Uuid::now_v7()),
            json!({"name": "x"}),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    app.finish().await;
}

async fn a_message_for_an_auto_escalating_service_escalates_on_arrival(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let (_, policy) = app
        .post(
            "/escalation-policies",
            json!({"name": "fast", "levels": [{"level": 1, "delay": "0s", "channels": ["in_app"]}]}),
        )
        .await;
    let (_, loud) = app
        .post(
            "/services",
            json!({"name": "loud", "escalation_policy_id": policy["id"]}),
        )
        .await;
    let (_, quiet) = app
        .post(
            "/services",
            json!({"name": "quiet", "auto_escalate": false}),
        )
        .await;
    let message = |service: &Value| json!({"text": "disk full", "dedup_key": "disk", "service_id": service["id"]});
    let (status, opened) = app.post("/message", message(&loud)).await;
    assert_eq!(status, StatusCode::CREATED, "{opened}");
    assert_eq!(opened["incident"]["status"], "ESCALATING");
    assert_eq!(opened["incident"]["service_id"], loud["id"]);
    let id = opened["incident"]["id"].as_str().unwrap().to_owned();
    crate::common::eventually(
        "level 1 executed",
        std::time::Duration::from_secs(10),
        || async {
            app.escalations(&id)
                .await
                .iter()
                .any(|e| e["status"] == "EXECUTED")
        },
    )
    .await;
    // The same key on another service is another incident, which stays OPEN there.
    let (status, other) = app.post("/message", message(&quiet)).await;
    assert_eq!(status, StatusCode::CREATED, "{other}");
    assert_eq!(other["incident"]["status"], "OPEN");
    // Escalated by hand, it walks its service's policy: level 1 at once (the configured
    // policy's is 5 minutes away).
    let (_, quiet_policy) = app
        .post(
            "/escalation-policies",
            json!({"name": "quiet", "levels": [{"level": 1, "delay": "0s", "channels": ["in_app"]}]}),
        )
        .await;
    let (status, _) = app
        .patch(
            &format!("/services/{}", quiet["id"].as_str().unwrap()),
            json!({"escalation_policy_id": quiet_policy["id"]}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let other_id = other["incident"]["id"].as_str().unwrap().to_owned();
    let (status, _) = app.act(&other_id, "escalate").await;
    assert_eq!(status, StatusCode::OK);
    crate::common::eventually(
        "the service policy's level 1",
        std::time::Duration::from_secs(10),
        || async {
            app.escalations(&other_id)
                .await
                .iter()
                .any(|e| e["status"] == "EXECUTED")
        },
    )
    .await;
    let (status, joined) = app.post("/message", message(&loud)).await;
    assert_eq!(status, StatusCode::OK, "{joined}");
    assert_eq!(joined["incident"]["id"], id.as_str());
    let (status, page) = app
        .get(&format!(
            "/incidents?service={}",
            loud["id"].as_str().unwrap()
        ))
        .await;
    assert_eq!(status, StatusCode::OK, "{page}");
    let listed: Vec<&Value> = page["incidents"].as_array().unwrap().iter().collect();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["id"], id.as_str());
    let (status, reply) = app
        .post(
            "/message",
            json!({"text": "x", "service_id": uuid::Uuid::now_v7()}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{reply}");
    let (status, _) = app.get("/incidents?service=nope").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    app.finish().await;
}
