//! Authentication and roles: missing, wrong, malformed and revoked tokens; each role's reach.

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::common::app::{TestApp, ADMIN_TOKEN};
use crate::common::Backend;

/// Every endpoint that needs a token, with the least role that may call it.
fn protected(id: &str) -> Vec<(Method, String, &'static str)> {
    vec![
        (Method::POST, "/message".into(), "responder"),
        (Method::GET, "/incidents".into(), "viewer"),
        (Method::GET, format!("/incidents/{id}"), "viewer"),
        (Method::GET, format!("/incidents/{id}/timeline"), "viewer"),
        (
            Method::GET,
            format!("/incidents/escalations/{id}"),
            "viewer",
        ),
        (
            Method::POST,
            format!("/incidents/{id}/escalate"),
            "responder",
        ),
        (
            Method::POST,
            format!("/incidents/{id}/acknowledge"),
            "responder",
        ),
        (
            Method::POST,
            format!("/incidents/{id}/resolve"),
            "responder",
        ),
        (Method::POST, format!("/incidents/{id}/cancel"), "responder"),
        (Method::GET, "/tokens".into(), "admin"),
        (Method::POST, "/tokens".into(), "admin"),
        (Method::DELETE, format!("/tokens/{id}"), "admin"),
        (Method::GET, "/users".into(), "viewer"),
        (Method::POST, "/users".into(), "admin"),
        (Method::GET, format!("/users/{id}"), "viewer"),
        (Method::PATCH, format!("/users/{id}"), "admin"),
        (Method::POST, format!("/users/{id}/tokens"), "admin"),
        (Method::GET, "/me".into(), "viewer"),
        (Method::GET, "/openapi.json".into(), "viewer"),
    ]
}

fn rank(role: &str) -> u8 {
    match role {
        "viewer" => 0,
        "responder" => 1,
        _ => 2,
    }
}

crate::on_every_backend!(
    missing_wrong_and_malformed_tokens_are_401,
    each_role_reaches_exactly_what_it_may,
    revocation_takes_effect_at_once,
    token_secrets_are_shown_only_at_creation,
    the_last_admin_token_cannot_be_revoked,
);

async fn the_last_admin_token_cannot_be_revoked(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let (_, tokens) = app.get("/tokens").await;
    let bootstrap = tokens["tokens"][0]["id"].as_str().unwrap().to_owned();
    let revoke = |id: String, secret: &'static str| {
        TestApp::send(app.request(Method::DELETE, &format!("/tokens/{id}"), Some(secret)))
    };
    let (status, body) = revoke(bootstrap.clone(), ADMIN_TOKEN).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("last active admin token"),
        "{body}"
    );
    let (status, _) = app.get("/tokens").await;
    assert_eq!(status, StatusCode::OK, "the token still works");

    app.token("second admin", "admin").await;
    let (status, body) = revoke(bootstrap, ADMIN_TOKEN).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "another admin token is left: {body}"
    );
    let (status, _) = app.get("/tokens").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    app.finish().await;
}

async fn missing_wrong_and_malformed_tokens_are_401(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let id = uuid::Uuid::now_v7().to_string();
    for (method, path, _) in protected(&id) {
        for token in [None, Some("klx_not-a-real-token"), Some("")] {
            let (status, body) = TestApp::send(app.request(method.clone(), &path, token)).await;
            assert_eq!(
                status,
                StatusCode::UNAUTHORIZED,
                "{method} {path} with {token:?}: {body}"
            );
            assert_eq!(body["error"]["code"], "unauthorized");
        }
        let basic = app
            .request(method.clone(), &path, None)
            .header("authorization", "Basic YWRtaW46YWRtaW4=");
        assert_eq!(
            TestApp::send(basic).await.0,
            StatusCode::UNAUTHORIZED,
            "{method} {path} with Basic"
        );
    }
    let (status, _) = TestApp::send(app.request(Method::GET, "/health", None)).await;
    assert_eq!(status, StatusCode::OK, "/health is open");
    app.finish().await;
}

async fn each_role_reaches_exactly_what_it_may(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let (viewer, _) = app.token("viewer-bot", "viewer").await;
    let (responder, _) = app.token("responder-bot", "responder").await;
    let id = uuid::Uuid::now_v7().to_string();
    for (role, token) in [
        ("viewer", viewer.as_str()),
        ("responder", responder.as_str()),
        ("admin", ADMIN_TOKEN),
    ] {
        for (method, path, least) in protected(&id) {
            let (status, body) =
                TestApp::send(app.request(method.clone(), &path, Some(token))).await;
            let cell = format!("{role} → {method} {path}");
            if rank(role) >= rank(least) {
                assert!(
                    status != StatusCode::FORBIDDEN && status != StatusCode::UNAUTHORIZED,
                    "{cell} is allowed, got {status}: {body}"
                );
            } else {
                assert_eq!(status, StatusCode::FORBIDDEN, "{cell}: {body}");
                assert_eq!(body["error"]["code"], "forbidden");
                assert!(
                    body["error"]["message"].as_str().unwrap().contains(least),
                    "{cell}: names the role"
                );
            }
        }
    }
    // A responder does the prototype's flow end to end.
    let send = |method, path: &str, body| {
        TestApp::send(app.request(method, path, Some(&responder)).json(&body))
    };
    let (status, created) =
        send(Method::POST, "/message", json!({ "text": "queue backlog" })).await;
    assert_eq!(status, StatusCode::CREATED);
    let incident = created["incident"]["id"].as_str().unwrap();
    let (status, _) = send(
        Method::POST,
        &format!("/incidents/{incident}/escalate"),
        json!({}),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    app.finish().await;
}

async fn revocation_takes_effect_at_once(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let (secret, id) = app.token("leaky", "responder").await;
    let list = || TestApp::send(app.request(Method::GET, "/incidents", Some(&secret)));
    assert_eq!(list().await.0, StatusCode::OK);

    let (status, revoked) =
        TestApp::send(app.request(Method::DELETE, &format!("/tokens/{id}"), Some(ADMIN_TOKEN)))
            .await;
    assert_eq!(status, StatusCode::OK, "{revoked}");
    assert!(revoked["revoked_at"].is_string());

    let (status, body) = list().await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("revoked"));

    // Kept, marked revoked; revoking again keeps the first time; unknown ids are 404.
    let (_, tokens) = app.get("/tokens").await;
    let kept = tokens["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["id"] == id.as_str())
        .unwrap()
        .clone();
    assert_eq!(kept["revoked_at"], revoked["revoked_at"]);
    let (status, again) =
        TestApp::send(app.request(Method::DELETE, &format!("/tokens/{id}"), Some(ADMIN_TOKEN)))
            .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(again["revoked_at"], revoked["revoked_at"]);
    let unknown = uuid::Uuid::now_v7();
    let (status, _) = TestApp::send(app.request(
        Method::DELETE,
        &format!("/tokens/{unknown}"),
        Some(ADMIN_TOKEN),
    ))
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    app.finish().await;
}

async fn token_secrets_are_shown_only_at_creation(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let (status, created) = app
        .post("/tokens", json!({ "name": "grafana", "role": "viewer" }))
        .await;
    assert_eq!(status, StatusCode::CREATED);
    for field in ["id", "name", "role", "token", "created_at"] {
        assert!(!created[field].is_null(), "{field} in {created}");
    }
    let secret = created["token"].as_str().unwrap();
    assert!(secret.starts_with("klx_"));

    let (_, listed) = app.get("/tokens").await;
    let text = listed.to_string();
    assert!(
        !text.contains(secret) && !text.contains(ADMIN_TOKEN),
        "no secrets in {text}"
    );
    let names: Vec<_> = listed["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["bootstrap-admin", "grafana"]);

    for bad in [
        json!({ "name": "x", "role": "root" }),
        json!({ "name": "", "role": "viewer" }),
        json!({ "role": "viewer" }),
    ] {
        let (status, body) = app.post("/tokens", bad.clone()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}: {body}");
    }
    app.finish().await;
}

/// Two API instances share PostgreSQL: a token cached by one stops working there as soon as the
/// other revokes it (the revocation is announced with NOTIFY).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revocation_reaches_other_instances_on_postgresql() {
    let Some(first) = TestApp::spawn(Backend::Postgres).await else {
        return;
    };
    let second = klaxon::server::start(&first.config).await.unwrap();
    let second_base = format!("http://{}", second.api_addr.unwrap());
    let (secret, id) = first.token("shared", "viewer").await;
    let on_second = || {
        first
            .client
            .get(format!("{second_base}/incidents"))
            .bearer_auth(&secret)
            .send()
    };
    assert_eq!(
        on_second().await.unwrap().status(),
        StatusCode::OK,
        "cached on the second instance now"
    );

    let (status, _) =
        TestApp::send(first.request(Method::DELETE, &format!("/tokens/{id}"), Some(ADMIN_TOKEN)))
            .await;
    assert_eq!(status, StatusCode::OK);
    crate::common::eventually(
        "the second instance to refuse the token",
        std::time::Duration::from_secs(2),
        || async { on_second().await.unwrap().status() == StatusCode::UNAUTHORIZED },
    )
    .await;
    second.stop().await.unwrap();
    first.finish().await;
}
