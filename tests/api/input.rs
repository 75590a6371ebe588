//! Bad input answers 4xx with a message that names what is wrong, never a 500.

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::common::app::{TestApp, ADMIN_TOKEN};
use crate::common::Backend;

/// Sends a raw body to `path` with the given content type.
async fn raw(
    app: &TestApp,
    path: &str,
    content_type: Option<&str>,
    body: impl Into<reqwest::Body>,
) -> (StatusCode, serde_json::Value) {
    let mut request = app
        .request(Method::POST, path, Some(ADMIN_TOKEN))
        .body(body);
    if let Some(content_type) = content_type {
        request = request.header("content-type", content_type);
    }
    TestApp::send(request).await
}

fn assert_error(
    status: StatusCode,
    body: &serde_json::Value,
    expected: StatusCode,
    code: &str,
    mentions: &str,
) {
    assert_eq!(status, expected, "{body}");
    assert_eq!(body["error"]["code"], code, "{body}");
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains(mentions),
        "{message:?} should mention {mentions:?}"
    );
}

crate::on_every_backend!(
    bad_messages_are_refused_clearly,
    bad_ids_and_queries_are_400,
    unknown_routes_and_methods
);

async fn bad_messages_are_refused_clearly(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let json = Some("application/json");
    let cases: Vec<(&str, String, StatusCode, &str, &str)> = vec![
        (
            "malformed JSON",
            "{\"text\": ".into(),
            StatusCode::BAD_REQUEST,
            "bad_request",
            "not valid JSON",
        ),
        (
            "trailing garbage",
            "{\"text\": \"a\"} x".into(),
            StatusCode::BAD_REQUEST,
            "bad_request",
            "not valid JSON",
        ),
        (
            "not an object",
            "[1, 2]".into(),
            StatusCode::BAD_REQUEST,
            "bad_request",
            "invalid",
        ),
        (
            "missing text",
            "{}".into(),
            StatusCode::BAD_REQUEST,
            "bad_request",
            "text",
        ),
        (
            "text is a number",
            "{\"text\": 5}".into(),
            StatusCode::BAD_REQUEST,
            "bad_request",
            "text",
        ),
        (
            "text is null",
            "{\"text\": null}".into(),
            StatusCode::BAD_REQUEST,
            "bad_request",
            "text",
        ),
        (
            "empty text",
            "{\"text\": \"\"}".into(),
            StatusCode::BAD_REQUEST,
            "bad_request",
            "text",
        ),
        (
            "blank text",
            "{\"text\": \"   \\n \"}".into(),
            StatusCode::BAD_REQUEST,
            "bad_request",
            "text",
        ),
        (
            "unknown field",
            "{\"text\": \"a\", \"priority\": 1}".into(),
            StatusCode::BAD_REQUEST,
            "bad_request",
            "priority",
        ),
        (
            "bad severity",
            "{\"text\": \"a\", \"severity\": \"urgent\"}".into(),
            StatusCode::BAD_REQUEST,
            "bad_request",
            "severity",
        ),
        (
            "severity wrong type",
            "{\"text\": \"a\", \"severity\": 3}".into(),
            StatusCode::BAD_REQUEST,
            "bad_request",
            "severity",
        ),
        (
            "blank dedup_key",
            "{\"text\": \"a\", \"dedup_key\": \" \"}".into(),
            StatusCode::BAD_REQUEST,
            "bad_request",
            "dedup_key",
        ),
        (
            "source too long",
            format!("{{\"text\": \"a\", \"source\": \"{}\"}}", "s".repeat(256)),
            StatusCode::BAD_REQUEST,
            "bad_request",
            "source",
        ),
        (
            "text too long",
            json!({ "text": "é".repeat(10_001) }).to_string(),
            StatusCode::BAD_REQUEST,
            "bad_request",
            "10000",
        ),
        (
            "empty body",
            String::new(),
            StatusCode::BAD_REQUEST,
            "bad_request",
            "body",
        ),
    ];
    for (case, body, expected, code, mentions) in cases {
        let (status, reply) = raw(&app, "/message", json, body).await;
        assert_eq!(status, expected, "{case}: {reply}");
        assert_error(status, &reply, expected, code, mentions);
    }

    let (status, reply) = raw(&app, "/message", Some("text/plain"), "{\"text\": \"a\"}").await;
    assert_error(
        status,
        &reply,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
        "application/json",
    );
    let (status, reply) = raw(&app, "/message", None, "{\"text\": \"a\"}").await;
    assert_error(
        status,
        &reply,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
        "Content-Type",
    );

    let oversized = json!({ "text": "x".repeat(1024 * 1024) }).to_string();
    let (status, reply) = raw(&app, "/message", json, oversized).await;
    assert_error(
        status,
        &reply,
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
        "larger",
    );

    // The edges that are allowed.
    let (status, _) = raw(
        &app,
        "/message",
        json,
        json!({ "text": "é".repeat(10_000) }).to_string(),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "exactly 10,000 characters");
    let (status, reply) = raw(
        &app,
        "/message",
        Some("application/json; charset=utf-8"),
        "{\"text\": \"a\", \"severity\": \"critical\"}",
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{reply}");
    assert_eq!(reply["incident"]["severity"], "critical");

    // Action bodies are optional, but when sent they are checked too.
    let id = app.open_incident("needs a note").await;
    let (status, reply) = raw(
        &app,
        &format!("/incidents/{id}/acknowledge"),
        json,
        "{\"nope\": 1}",
    )
    .await;
    assert_error(
        status,
        &reply,
        StatusCode::BAD_REQUEST,
        "bad_request",
        "nope",
    );
    let (status, reply) = raw(
        &app,
        &format!("/incidents/{id}/acknowledge"),
        json,
        "{\"note\": 7}",
    )
    .await;
    assert_error(
        status,
        &reply,
        StatusCode::BAD_REQUEST,
        "bad_request",
        "note",
    );
    let (status, reply) = raw(
        &app,
        &format!("/incidents/{id}/acknowledge"),
        Some("text/plain"),
        "hi",
    )
    .await;
    assert_error(
        status,
        &reply,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
        "JSON",
    );
    let (status, _) = raw(
        &app,
        &format!("/incidents/{id}/acknowledge"),
        json,
        "{\"note\": \"on it\"}",
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let other = app.open_incident("null is no body").await;
    let (status, reply) = raw(&app, &format!("/incidents/{other}/escalate"), json, "null").await;
    assert_eq!(
        status,
        StatusCode::OK,
        "JSON null is the same as no body: {reply}"
    );
    app.finish().await;
}

async fn bad_ids_and_queries_are_400(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    for path in [
        "/incidents/42",
        "/incidents/not-a-uuid/timeline",
        "/incidents/escalations/xyz",
    ] {
        let (status, body) = app.get(path).await;
        assert_error(
            status,
            &body,
            StatusCode::BAD_REQUEST,
            "bad_request",
            "UUID",
        );
    }
    let (status, body) = app.act("1234", "escalate").await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, "bad_request", "id");
    let (status, body) =
        TestApp::send(app.request(Method::DELETE, "/tokens/abc", Some(ADMIN_TOKEN))).await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, "bad_request", "id");

    for (query, mentions) in [
        ("status=SLEEPING", "status"),
        ("limit=0", "limit"),
        ("limit=201", "limit"),
        ("limit=ten", "limit"),
        ("cursor=zzz", "cursor"),
        ("stauts=OPEN", "stauts"),
    ] {
        let (status, body) = app.get(&format!("/incidents?{query}")).await;
        assert_error(
            status,
            &body,
            StatusCode::BAD_REQUEST,
            "bad_request",
            mentions,
        );
    }
    app.finish().await;
}

async fn unknown_routes_and_methods(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let (status, body) = app.get("/nowhere").await;
    assert_error(
        status,
        &body,
        StatusCode::NOT_FOUND,
        "not_found",
        "endpoint",
    );
    let (status, body) =
        TestApp::send(app.request(Method::PUT, "/message", Some(ADMIN_TOKEN))).await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED, "{body}");
    assert_eq!(body["error"]["code"], "method_not_allowed");
    app.finish().await;
}
