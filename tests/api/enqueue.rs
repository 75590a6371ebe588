//! `POST /v2/enqueue`, PagerDuty's Events API v2: trigger, dedup within a service, acknowledge
//! and resolve (no-ops answered 202 too), a trigger after a resolve, every 400 PagerDuty gives,
//! and PagerDuty's own Python client (the `pagerduty` package) driving it unchanged.

use std::process::Command;

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::common::app::{TestApp, ADMIN_TOKEN};
use crate::common::Backend;

crate::on_every_backend!(
    triggers_dedup_within_a_service_and_acknowledge_and_resolve_act_on_the_live_incident,
    every_invalid_event_is_a_400_in_pagerdutys_shape,
    pagerdutys_own_client_triggers_acknowledges_and_resolves,
    a_key_over_its_rate_limit_is_answered_429,
    a_used_key_revoked_or_a_service_changed_takes_effect_at_once,
);

/// A service (escalating automatically unless `quiet`) and one live integration key for it.
async fn service_with_key(app: &TestApp, name: &str, quiet: bool) -> (String, String) {
    let (status, service) = app
        .post("/services", json!({"name": name, "auto_escalate": !quiet}))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{service}");
    let id = service["id"].as_str().unwrap().to_owned();
    let (status, key) = app
        .post(
            &format!("/services/{id}/integration-keys"),
            json!({"name": "prometheus"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{key}");
    (id, key["key"].as_str().unwrap().to_owned())
}

/// Revokes the first integration key of `service`.
async fn revoke_first_key(app: &TestApp, service: &str) {
    let (_, keys) = app
        .get(&format!("/services/{service}/integration-keys"))
        .await;
    let key_id = keys["integration_keys"][0]["id"].as_str().unwrap();
    let (status, _) = TestApp::send(app.request(
        Method::DELETE,
        &format!("/services/{service}/integration-keys/{key_id}"),
        Some(ADMIN_TOKEN),
    ))
    .await;
    assert_eq!(status, StatusCode::OK);
}

async fn enqueue(app: &TestApp, body: &Value) -> (StatusCode, Value) {
    TestApp::send(app.request(Method::POST, "/v2/enqueue", None).json(body)).await
}

fn trigger(key: &str, dedup_key: Option<&str>) -> Value {
    let mut event = json!({
        "routing_key": key,
        "event_action": "trigger",
        "payload": {
            "summary": "disk full on db-1",
            "source": "db-1",
            "severity": "critical",
            "component": "postgres",
            "custom_details": {"free": "1%"},
        },
        "links": [{"href": "https://grafana.example.com/d/1", "text": "dashboard"}],
    });
    if let Some(dedup_key) = dedup_key {
        event["dedup_key"] = json!(dedup_key);
    }
    event
}

async fn incidents_of(app: &TestApp, service: &str) -> Vec<Value> {
    let (status, page) = app.get(&format!("/incidents?service={service}")).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    page["incidents"].as_array().unwrap().clone()
}

async fn triggers_dedup_within_a_service_and_acknowledge_and_resolve_act_on_the_live_incident(
    backend: Backend,
) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let (payments, key) = service_with_key(&app, "payments", false).await;
    let (search, other_key) = service_with_key(&app, "search", true).await;

    let (status, answer) = enqueue(&app, &trigger(&key, Some("db-1/disk"))).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{answer}");
    assert_eq!(
        answer,
        json!({"status": "success", "message": "Event processed", "dedup_key": "db-1/disk"})
    );
    let (status, _) = enqueue(&app, &trigger(&key, Some("db-1/disk"))).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let opened = incidents_of(&app, &payments).await;
    assert_eq!(opened.len(), 1, "the second trigger joined the first");
    assert_eq!(opened[0]["event_count"], 2);
    assert_eq!(
        opened[0]["status"], "ESCALATING",
        "the service escalates on arrival"
    );
    assert_eq!(opened[0]["title"], "disk full on db-1");
    // The same key on another service is another incident.
    enqueue(&app, &trigger(&other_key, Some("db-1/disk"))).await;
    let theirs = incidents_of(&app, &search).await;
    assert_eq!(theirs.len(), 1);
    assert_eq!(theirs[0]["status"], "OPEN");
    assert_ne!(theirs[0]["id"], opened[0]["id"]);
    // Without a dedup_key, one is made and answered.
    let (status, answer) = enqueue(&app, &trigger(&key, None)).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let made = answer["dedup_key"].as_str().unwrap().to_owned();
    assert!(!made.is_empty());

    let act = |action: &str, dedup_key: &str| json!({"routing_key": key, "event_action": action, "dedup_key": dedup_key});
    let (status, answer) = enqueue(&app, &act("acknowledge", "db-1/disk")).await;
    assert_eq!(
        (status, answer["dedup_key"].clone()),
        (StatusCode::ACCEPTED, json!("db-1/disk"))
    );
    let id = opened[0]["id"].as_str().unwrap();
    let (_, incident) = app.get(&format!("/incidents/{id}")).await;
    assert_eq!(incident["status"], "ACKNOWLEDGED");
    let (status, _) = enqueue(&app, &act("acknowledge", "db-1/disk")).await;
    assert_eq!(
        status,
        StatusCode::ACCEPTED,
        "acknowledged already: a no-op, still 202"
    );
    let (status, _) = enqueue(&app, &act("resolve", "no-such-key")).await;
    assert_eq!(
        status,
        StatusCode::ACCEPTED,
        "nothing live with that key: a no-op"
    );
    let (status, _) = enqueue(&app, &act("resolve", "db-1/disk")).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let (_, incident) = app.get(&format!("/incidents/{id}")).await;
    assert_eq!(incident["status"], "RESOLVED");
    let kinds = app.timeline_kinds(id).await;
    assert!(kinds.contains(&"incident.resolved".to_owned()), "{kinds:?}");
    // A trigger after the resolve opens a new incident.
    enqueue(&app, &trigger(&key, Some("db-1/disk"))).await;
    let now = incidents_of(&app, &payments).await;
    assert_eq!(
        now.len(),
        3,
        "the resolved one, the keyless one, and a new one"
    );
    app.finish().await;
}

async fn every_invalid_event_is_a_400_in_pagerdutys_shape(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let (service, key) = service_with_key(&app, "payments", false).await;
    let (_, revoked) = app
        .post(
            &format!("/services/{service}/integration-keys"),
            json!({"name": "old"}),
        )
        .await;
    let revoked_key = revoked["key"].as_str().unwrap();
    let (status, _) = TestApp::send(app.request(
        Method::DELETE,
        &format!(
            "/services/{service}/integration-keys/{}",
            revoked["id"].as_str().unwrap()
        ),
        Some(ADMIN_TOKEN),
    ))
    .await;
    assert_eq!(status, StatusCode::OK);

    let mut missing_key = trigger(&key, None);
    missing_key.as_object_mut().unwrap().remove("routing_key");
    let mut bad_action = trigger(&key, None);
    bad_action["event_action"] = json!("explode");
    let mut bad_severity = trigger(&key, None);
    bad_severity["payload"]["severity"] = json!("catastrophic");
    let mut long_summary = trigger(&key, None);
    long_summary["payload"]["summary"] = json!("x".repeat(1025));
    let mut no_source = trigger(&key, None);
    no_source["payload"]
        .as_object_mut()
        .unwrap()
        .remove("source");
    let cases = [
        ("missing routing key", missing_key, "routing_key"),
        ("unknown key", trigger("klx_not_a_key", None), "routing_key"),
        ("revoked key", trigger(revoked_key, None), "routing_key"),
        ("bad action", bad_action, "event_action"),
        ("bad severity", bad_severity, "payload.severity"),
        ("summary over 1024", long_summary, "payload.summary"),
        ("no source", no_source, "payload.source"),
        (
            "acknowledge without a key",
            json!({"routing_key": key, "event_action": "acknowledge"}),
            "dedup_key",
        ),
    ];
    for (case, body, field) in cases {
        let (status, answer) = enqueue(&app, &body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{case}: {answer}");
        assert_eq!(answer["status"], "invalid event", "{case}");
        assert_eq!(answer["message"], "Event object is invalid", "{case}");
        let errors = answer["errors"].as_array().unwrap();
        assert!(
            errors.iter().any(|e| e.as_str().unwrap().contains(field)),
            "{case}: {answer}"
        );
    }
    let malformed = app
        .request(Method::POST, "/v2/enqueue", None)
        .header("content-type", "application/json")
        .body("{\"routing_key\": ")
        .send()
        .await
        .unwrap();
    assert_eq!(malformed.status(), StatusCode::BAD_REQUEST);
    let answer: Value = malformed.json().await.unwrap();
    assert_eq!(answer["status"], "invalid event");
    let mut nul = trigger(&key, None);
    nul["payload"]["summary"] = json!("disk\u{0}full");
    let (status, answer) = enqueue(&app, &nul).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "a NUL: {answer}");
    assert!(
        answer["errors"][0]
            .as_str()
            .unwrap()
            .contains("payload.summary"),
        "{answer}"
    );
    let mut huge = trigger(&key, None);
    huge["payload"]["custom_details"] = json!({"blob": "x".repeat(600 * 1024)});
    let (status, answer) = enqueue(&app, &huge).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
    assert!(
        incidents_of(&app, &service).await.is_empty(),
        "nothing was stored"
    );
    app.finish().await;
}

/// Runs `tests/support/pd_client.py` (PagerDuty's `pagerduty` package) against `app`.
fn pd_client(app: &TestApp, key: &str, args: &[&str]) -> Value {
    let probe = Command::new("python3")
        .args(["-c", "import pagerduty"])
        .status()
        .expect("run python3");
    assert!(
        probe.success(),
        "the Events API tests need the `pagerduty` package: run scripts/test-deps.sh"
    );
    let output = Command::new("python3")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/support/pd_client.py"
        ))
        .args(["--url", &app.base, "--routing-key", key, "--no-retry"])
        .args(args)
        .output()
        .expect("run pd_client.py");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "pd_client.py {args:?}: {stdout} {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_str(stdout.trim()).expect("one JSON line")
}

async fn pagerdutys_own_client_triggers_acknowledges_and_resolves(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let (service, key) = service_with_key(&app, "payments", true).await;
    let (app, key) = tokio::task::spawn_blocking(move || {
        let sent = pd_client(
            &app,
            &key,
            &[
                "trigger",
                "--summary",
                "checkout 500s",
                "--source",
                "web-1",
                "--severity",
                "error",
                "--dedup-key",
                "checkout",
            ],
        );
        assert_eq!(sent["dedup_key"], "checkout");
        let made = pd_client(
            &app,
            &key,
            &["trigger", "--summary", "queue lag", "--source", "q-1"],
        );
        assert!(
            made["dedup_key"].as_str().is_some_and(|k| !k.is_empty()),
            "{made}"
        );
        (app, key)
    })
    .await
    .unwrap();
    let opened = incidents_of(&app, &service).await;
    assert_eq!(opened.len(), 2);
    let (app, key) = tokio::task::spawn_blocking(move || {
        pd_client(
            &app,
            &key,
            &[
                "trigger",
                "--summary",
                "checkout 500s",
                "--source",
                "web-1",
                "--dedup-key",
                "checkout",
            ],
        );
        pd_client(&app, &key, &["acknowledge", "--dedup-key", "checkout"]);
        (app, key)
    })
    .await
    .unwrap();
    let checkout = incidents_of(&app, &service)
        .await
        .into_iter()
        .find(|i| i["dedup_key"] == "checkout")
        .unwrap();
    assert_eq!(
        (checkout["status"].clone(), checkout["event_count"].clone()),
        (json!("ACKNOWLEDGED"), json!(2))
    );
    let app = tokio::task::spawn_blocking(move || {
        pd_client(&app, &key, &["resolve", "--dedup-key", "checkout"]);
        app
    })
    .await
    .unwrap();
    let id = checkout["id"].as_str().unwrap();
    let (_, incident) = app.get(&format!("/incidents/{id}")).await;
    assert_eq!(incident["status"], "RESOLVED");
    app.finish().await;
}

async fn a_key_over_its_rate_limit_is_answered_429(backend: Backend) {
    let Some(app) = TestApp::spawn_with(backend, |config| {
        config.integration_rate = klaxon::config::RateLimit {
            count: 3,
            per: std::time::Duration::from_secs(3600),
        };
    })
    .await
    else {
        return;
    };
    let (_, key) = service_with_key(&app, "payments", true).await;
    let (_, other) = service_with_key(&app, "search", true).await;
    for n in 0..3 {
        let (status, answer) = enqueue(&app, &trigger(&key, Some(&format!("k{n}")))).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{answer}");
    }
    let throttled = app
        .request(Method::POST, "/v2/enqueue", None)
        .json(&trigger(&key, Some("k3")))
        .send()
        .await
        .unwrap();
    assert_eq!(throttled.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(throttled.headers().contains_key("retry-after"));
    let answer: Value = throttled.json().await.unwrap();
    assert_eq!(answer["status"], "throttle event");
    let (status, _) = enqueue(&app, &trigger(&other, Some("k0"))).await;
    assert_eq!(
        status,
        StatusCode::ACCEPTED,
        "another key has its own count"
    );
    app.finish().await;
}

/// Where a key routes is cached after its first use; revoking the key or changing its service
/// is seen by the very next event.
async fn a_used_key_revoked_or_a_service_changed_takes_effect_at_once(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let (service, key) = service_with_key(&app, "cached", false).await;
    let (status, _) = enqueue(&app, &trigger(&key, Some("first"))).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert_eq!(
        incidents_of(&app, &service).await[0]["status"],
        "ESCALATING"
    );

    let (status, body) = app
        .patch(
            &format!("/services/{service}"),
            json!({"auto_escalate": false}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, _) = enqueue(&app, &trigger(&key, Some("second"))).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let second = incidents_of(&app, &service).await;
    let second = second.iter().find(|i| i["dedup_key"] == "second").unwrap();
    assert_eq!(second["status"], "OPEN", "the service no longer escalates");

    revoke_first_key(&app, &service).await;
    let (status, answer) = enqueue(&app, &trigger(&key, Some("third"))).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
    app.finish().await;
}

/// Two instances share PostgreSQL: a key one has cached stops working there as soon as the
/// other revokes it (the change is announced with NOTIFY).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_revoked_on_one_instance_is_refused_by_another_on_postgresql() {
    let Some(first) = TestApp::spawn(Backend::Postgres).await else {
        return;
    };
    let second = klaxon::server::start(&first.config).await.unwrap();
    let second_base = format!("http://{}", second.api_addr.unwrap());
    let (service, key) = service_with_key(&first, "shared", true).await;
    let on_second = |dedup_key: &'static str| {
        first
            .client
            .post(format!("{second_base}/v2/enqueue"))
            .json(&trigger(&key, Some(dedup_key)))
            .send()
    };
    assert_eq!(
        on_second("cached").await.unwrap().status(),
        StatusCode::ACCEPTED,
        "cached on the second instance now"
    );
    revoke_first_key(&first, &service).await;
    crate::common::eventually(
        "the second instance to refuse the key",
        std::time::Duration::from_secs(2),
        || async { on_second("after").await.unwrap().status() == StatusCode::BAD_REQUEST },
    )
    .await;
    second.stop().await.unwrap();
    first.finish().await;
}
