//! The edges of text: NUL characters in any field.

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::common::app::TestApp;
use crate::common::Backend;

crate::on_every_backend!(a_nul_in_any_text_field_is_400_naming_it);

/// Asserts a 400 `bad_request` whose message names `field` and says why.
fn assert_nul_refused(what: &str, status: StatusCode, body: &Value, field: &str) {
    assert_eq!(status, StatusCode::BAD_REQUEST, "{what}: {body}");
    assert_eq!(body["error"]["code"], "bad_request", "{what}: {body}");
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains(&format!("`{field}`")) && message.contains("NUL"),
        "{what}: {message:?} should name `{field}` and the NUL"
    );
}

/// On PostgreSQL a NUL reaching the database is a 500 (`text` and `jsonb` cannot hold one); on
/// SQLite it would be stored. Both refuse it with a 400 that names the field, and store nothing.
async fn a_nul_in_any_text_field_is_400_naming_it(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let id = app.open_incident("stays open").await;

    for (field, body) in [
        ("text", json!({ "text": "disk\u{0}full" })),
        ("text", json!({ "text": "\u{0}" })),
        ("source", json!({ "text": "a", "source": "cron\u{0}" })),
        ("dedup_key", json!({ "text": "a", "dedup_key": "\u{0}key" })),
    ] {
        let (status, reply) = app.post("/message", body.clone()).await;
        assert_nul_refused(&format!("POST /message {body}"), status, &reply, field);
    }
    for (action, field) in [
        ("escalate", "note"),
        ("acknowledge", "note"),
        ("cancel", "note"),
        ("resolve", "resolution_note"),
        ("resolve", "note"),
    ] {
        let path = format!("/incidents/{id}/{action}");
        let (status, reply) = app.post(&path, json!({ field: "on\u{0}it" })).await;
        assert_nul_refused(&format!("POST {path} {field}"), status, &reply, field);
    }
    let (status, reply) = app
        .post("/tokens", json!({ "name": "ci\u{0}bot", "role": "viewer" }))
        .await;
    assert_nul_refused("POST /tokens", status, &reply, "name");
    let (status, reply) = app
        .post("/message", json!({ "text": "a", "te\u{0}xt": "b" }))
        .await;
    assert_nul_refused("a NUL in a field's name", status, &reply, "te\\0xt");

    for (query, field) in [
        ("status=OPEN%00", "status"),
        ("cursor=%00", "cursor"),
        ("limit=5&st%00atus=OPEN", "st\\0atus"),
    ] {
        let (status, reply) = app.get(&format!("/incidents?{query}")).await;
        assert_nul_refused(&format!("GET /incidents?{query}"), status, &reply, field);
    }
    let (status, reply) = app.get("/incidents/%00").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{reply}");
    assert!(reply["error"]["message"].as_str().unwrap().contains("`id`"));

    // Nothing was stored: one incident, still open with its one entry, and no new token.
    let (_, page) = app.get("/incidents").await;
    assert_eq!(page["incidents"].as_array().unwrap().len(), 1, "{page}");
    assert_eq!(page["incidents"][0]["status"], "OPEN");
    assert_eq!(app.timeline_kinds(&id).await, ["incident.created"]);
    let (_, tokens) = app.get("/tokens").await;
    assert_eq!(tokens["tokens"].as_array().unwrap().len(), 1, "{tokens}");

    // A backslash followed by `u0000` is text like any other.
    let reply = app.message(json!({ "text": "C:\\u0000" })).await;
    assert_eq!(reply["event"]["summary"], "C:\\u0000");
    app.finish().await;
}
