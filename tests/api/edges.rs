//! The edges of HTTP and of text: NUL characters in any field, the `Authorization` header's
//! scheme and count, client request ids, and the headers every answer or every secret carries.

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::common::app::{TestApp, ADMIN_TOKEN};
use crate::common::Backend;

crate::on_every_backend!(
    a_nul_in_any_text_field_is_400_naming_it,
    the_bearer_scheme_is_matched_whatever_its_case,
    two_authorization_headers_are_400,
    a_client_request_id_is_kept_only_when_plain,
    every_answer_says_nosniff,
    an_answer_with_a_secret_is_not_stored,
);

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

async fn the_bearer_scheme_is_matched_whatever_its_case(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let with = |authorization: String| {
        TestApp::send(
            app.request(Method::GET, "/incidents", None)
                .header("authorization", authorization),
        )
    };
    for scheme in ["Bearer", "bearer", "BEARER", "bEaReR"] {
        let (status, body) = with(format!("{scheme} {ADMIN_TOKEN}")).await;
        assert_eq!(status, StatusCode::OK, "{scheme}: {body}");
    }
    for malformed in [
        format!("Bearer{ADMIN_TOKEN}"),
        format!("Bearers {ADMIN_TOKEN}"),
        format!("Token {ADMIN_TOKEN}"),
    ] {
        let (status, body) = with(malformed.clone()).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{malformed}: {body}");
    }
    app.finish().await;
}

async fn two_authorization_headers_are_400(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let admin = format!("Bearer {ADMIN_TOKEN}");
    for pair in [
        [admin.as_str(), admin.as_str()],
        [admin.as_str(), "Bearer klx_someone-else"],
        ["Bearer klx_someone-else", admin.as_str()],
    ] {
        let request = app
            .request(Method::GET, "/incidents", None)
            .header("authorization", pair[0])
            .header("authorization", pair[1]);
        let (status, body) = TestApp::send(request).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{pair:?}: {body}");
        assert_eq!(body["error"]["code"], "bad_request");
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("Authorization"),
            "{body}"
        );
    }
    app.finish().await;
}

async fn a_client_request_id_is_kept_only_when_plain(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let answered_id = |ids: &[&[u8]]| {
        let mut request = app.request(Method::GET, "/health", None);
        for id in ids {
            request = request.header(
                "x-request-id",
                reqwest::header::HeaderValue::from_bytes(id).unwrap(),
            );
        }
        async move {
            let response = request.send().await.expect("the server answers");
            let ids: Vec<_> = response
                .headers()
                .get_all("x-request-id")
                .iter()
                .map(|id| id.to_str().unwrap().to_owned())
                .collect();
            assert_eq!(ids.len(), 1, "one x-request-id in the answer: {ids:?}");
            ids[0].clone()
        }
    };
    let longest = "a".repeat(128);
    for plain in ["abc-123_X.y", "7", longest.as_str()] {
        assert_eq!(answered_id(&[plain.as_bytes()]).await, plain);
    }
    let too_long = "a".repeat(129);
    for unplain in [
        too_long.as_bytes(),
        b"",
        b"two words",
        b"level=error msg=\"forged\"",
        "caf\u{e9}".as_bytes(),
        b"a/b",
    ] {
        let answered = answered_id(&[unplain]).await;
        assert!(
            uuid::Uuid::parse_str(&answered).is_ok(),
            "{:?} is replaced by a generated id, got {answered:?}",
            String::from_utf8_lossy(unplain)
        );
    }
    let answered = answered_id(&[b"first", b"second"]).await;
    assert!(
        uuid::Uuid::parse_str(&answered).is_ok(),
        "two ids are replaced by one generated id, got {answered:?}"
    );
    app.finish().await;
}

async fn every_answer_says_nosniff(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let id = app.open_incident("sniff").await;
    let requests = [
        app.request(Method::GET, "/health", None),
        app.request(Method::GET, "/metrics", Some(ADMIN_TOKEN)),
        app.request(Method::GET, "/openapi.json", Some(ADMIN_TOKEN)),
        app.request(Method::GET, &format!("/incidents/{id}"), Some(ADMIN_TOKEN)),
        app.request(Method::POST, "/message", Some(ADMIN_TOKEN))
            .json(&json!({ "text": "created" })),
        app.request(Method::POST, "/message", Some(ADMIN_TOKEN))
            .json(&json!({})),
        app.request(Method::GET, "/incidents", None),
        app.request(Method::GET, "/tokens", Some("klx_unknown")),
        app.request(Method::GET, "/nowhere", Some(ADMIN_TOKEN)),
        app.request(Method::PUT, "/message", Some(ADMIN_TOKEN)),
        app.request(
            Method::POST,
            &format!("/incidents/{id}/resolve"),
            Some(ADMIN_TOKEN),
        ),
        app.request(
            Method::POST,
            &format!("/incidents/{id}/resolve"),
            Some(ADMIN_TOKEN),
        ),
    ];
    let mut statuses = Vec::new();
    for request in requests {
        let response = request.send().await.expect("the server answers");
        statuses.push(response.status().as_u16());
        assert_eq!(
            response
                .headers()
                .get("x-content-type-options")
                .map(|v| v.as_bytes()),
            Some(&b"nosniff"[..]),
            "{} {:?}",
            response.status(),
            response.url().path()
        );
    }
    assert_eq!(
        statuses,
        [200, 200, 200, 200, 201, 400, 401, 401, 404, 405, 200, 409]
    );
    app.finish().await;
}

async fn an_answer_with_a_secret_is_not_stored(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let response = app
        .request(Method::POST, "/tokens", Some(ADMIN_TOKEN))
        .json(&json!({ "name": "pager", "role": "responder" }))
        .send()
        .await
        .expect("the server answers");
    assert_eq!(response.status(), StatusCode::CREATED);
    assert_eq!(
        response
            .headers()
            .get("cache-control")
            .map(|v| v.as_bytes()),
        Some(&b"no-store"[..])
    );
    let created: Value = response.json().await.unwrap();
    assert!(created["token"].as_str().unwrap().starts_with("klx_"));
    app.finish().await;
}
