//! `POST /integrations/alertmanager` driven by a real Alertmanager (Debian's
//! `prometheus-alertmanager`, installed by scripts/test-deps.sh): an alert posted to Alertmanager
//! opens one incident for its group in Klaxon; another alert of the group joins it; the group
//! resolving resolves it. And the receiver's refusals, over plain HTTP.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::common::app::TestApp;
use crate::common::{eventually, Backend};

crate::on_every_backend!(
    a_real_alertmanager_opens_joins_and_resolves_one_incident_per_group,
    the_receiver_refuses_a_missing_key_and_a_payload_it_cannot_read,
);

const HELPER: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/support/alertmanager.py");
const DEADLINE: Duration = Duration::from_secs(20);

/// A real Alertmanager posting to `webhook` with `key`, stopped when dropped.
struct Alertmanager {
    child: Child,
    url: String,
}

impl Alertmanager {
    fn start(webhook: &str, key: &str) -> Self {
        let mut child = Command::new("python3")
            .args([HELPER, "serve", "--webhook-url", webhook, "--key", key])
            .stdout(Stdio::piped())
            .spawn()
            .expect(
                "run tests/support/alertmanager.py (scripts/test-deps.sh installs Alertmanager)",
            );
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let port = line
            .strip_prefix("ready ")
            .unwrap_or_else(|| {
                panic!("Alertmanager did not start: {line:?}; run scripts/test-deps.sh")
            })
            .trim()
            .to_owned();
        Self {
            child,
            url: format!("http://127.0.0.1:{port}"),
        }
    }

    fn post(&self, command: &str, labels: &[&str], annotations: &[&str]) {
        let mut args = vec![HELPER, command, "--alertmanager", &self.url];
        for label in labels {
            args.extend(["--label", label]);
        }
        for annotation in annotations {
            args.extend(["--annotation", annotation]);
        }
        let status = Command::new("python3").args(&args).status().unwrap();
        assert!(status.success(), "alertmanager.py {command}");
    }
}

impl Drop for Alertmanager {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .arg(self.child.id().to_string())
            .status();
        let _ = self.child.wait();
    }
}

async fn service_with_key(app: &TestApp) -> (String, String) {
    let (_, service) = app
        .post("/services", json!({"name": "db", "auto_escalate": false}))
        .await;
    let id = service["id"].as_str().unwrap().to_owned();
    let (_, key) = app
        .post(
            &format!("/services/{id}/integration-keys"),
            json!({"name": "alertmanager"}),
        )
        .await;
    (id, key["key"].as_str().unwrap().to_owned())
}

async fn incidents_of(app: &TestApp, service: &str) -> Vec<Value> {
    let (_, page) = app.get(&format!("/incidents?service={service}")).await;
    page["incidents"].as_array().unwrap().clone()
}

async fn a_real_alertmanager_opens_joins_and_resolves_one_incident_per_group(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let (service, key) = service_with_key(&app).await;
    let alertmanager =
        Alertmanager::start(&format!("{}/integrations/alertmanager", app.base), &key);
    let db1 = ["alertname=DiskFull", "instance=db-1", "severity=critical"];
    let db2 = ["alertname=DiskFull", "instance=db-2", "severity=critical"];
    let summary = ["summary=disk full"];
    alertmanager.post("fire", &db1, &summary);
    eventually("the group's incident", DEADLINE, || async {
        incidents_of(&app, &service).await.len() == 1
    })
    .await;
    let incident = incidents_of(&app, &service).await.remove(0);
    assert_eq!(incident["title"], "disk full");
    assert_eq!(incident["severity"], "critical");
    assert_eq!(incident["status"], "OPEN");
    // A second alert of the group: Alertmanager sends the group again, which joins it.
    alertmanager.post("fire", &db2, &summary);
    eventually("the group sent again", DEADLINE, || async {
        let all = incidents_of(&app, &service).await;
        all.len() == 1 && all[0]["event_count"].as_i64() >= Some(2)
    })
    .await;
    // The group resolves once both alerts do.
    alertmanager.post("resolve", &db1, &summary);
    alertmanager.post("resolve", &db2, &summary);
    let id = incident["id"].as_str().unwrap().to_owned();
    eventually("the incident resolved", DEADLINE, || async {
        let (_, now) = app.get(&format!("/incidents/{id}")).await;
        now["status"] == "RESOLVED"
    })
    .await;
    assert_eq!(
        incidents_of(&app, &service).await.len(),
        1,
        "never another incident"
    );
    drop(alertmanager);
    app.finish().await;
}

async fn the_receiver_refuses_a_missing_key_and_a_payload_it_cannot_read(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let (_, key) = service_with_key(&app).await;
    let payload = json!({
        "version": "4", "groupKey": "{}:{alertname=\"X\"}", "status": "firing",
        "receiver": "klaxon", "groupLabels": {"alertname": "X"}, "commonLabels": {"alertname": "X"},
        "commonAnnotations": {}, "externalURL": "", "alerts": [],
    });
    let post = |token: Option<String>, body: Value| {
        let mut request = app
            .client
            .post(format!("{}/integrations/alertmanager", app.base))
            .json(&body);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        async move { TestApp::send(request).await }
    };
    assert_eq!(
        post(None, payload.clone()).await.0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        post(Some("klx_unknown".into()), payload.clone()).await.0,
        StatusCode::UNAUTHORIZED
    );
    let mut old = payload.clone();
    old["version"] = json!("3");
    assert_eq!(
        post(Some(key.clone()), old).await.0,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        post(Some(key.clone()), json!({"hello": 1})).await.0,
        StatusCode::BAD_REQUEST
    );
    let mut nul = payload.clone();
    nul["commonAnnotations"] = json!({"summary": "a\u{0}b"});
    assert_eq!(
        post(Some(key.clone()), nul).await.0,
        StatusCode::BAD_REQUEST
    );
    // The scheme is case-insensitive, as everywhere in the API.
    let lowercase = app
        .client
        .post(format!("{}/integrations/alertmanager", app.base))
        .header("authorization", format!("bearer {key}"))
        .json(&payload)
        .send()
        .await
        .unwrap();
    assert_eq!(lowercase.status(), StatusCode::OK);
    let (status, reply) = post(Some(key.clone()), payload.clone()).await;
    assert_eq!(status, StatusCode::OK, "{reply}");
    assert_eq!(reply["result"], "triggered");
    let mut resolved = payload;
    resolved["status"] = json!("resolved");
    let (status, reply) = post(Some(key), resolved).await;
    assert_eq!(
        (status, reply["result"].clone()),
        (StatusCode::OK, json!("resolved"))
    );
    app.finish().await;
}
