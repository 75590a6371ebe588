//! Users: registered and changed by admins, never deleted; a user's token acts with the user's
//! handle and current role, and stops working the moment the user is deactivated.

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::common::app::{TestApp, ADMIN_TOKEN};
use crate::common::Backend;

crate::on_every_backend!(
    users_are_registered_listed_read_and_changed,
    each_invalid_field_is_a_400_naming_it,
    a_taken_handle_is_a_409,
    only_admins_register_users,
    a_users_token_acts_with_the_users_handle,
    deactivation_stops_the_users_tokens_at_once,
    a_role_change_applies_at_once_to_the_users_tokens,
    concurrent_changes_to_one_user_are_all_kept,
);

fn alice() -> Value {
    json!({
        "handle": "alice",
        "name": "Alice Liddell",
        "email": "alice@example.com",
        "phone": "+14155550100",
        "time_zone": "Europe/Paris",
    })
}

/// `GET path` with `token`.
async fn get_with(app: &TestApp, path: &str, token: &str) -> (StatusCode, Value) {
    TestApp::send(app.request(Method::GET, path, Some(token))).await
}

fn assert_bad_request(status: StatusCode, body: &Value, mentions: &str) {
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["error"]["code"], "bad_request", "{body}");
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains(mentions), "{message:?} names {mentions:?}");
}

async fn users_are_registered_listed_read_and_changed(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let (status, created) = app.post("/users", alice()).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    for field in ["handle", "name", "email", "phone", "time_zone"] {
        assert_eq!(created[field], alice()[field], "{field}");
    }
    assert_eq!(created["role"], "responder");
    assert_eq!(created["active"], true);
    for field in ["id", "created_at", "updated_at"] {
        assert!(created[field].is_string(), "{field} in {created}");
    }
    let id = created["id"].as_str().unwrap();
    let bob = app.user("bob", "viewer").await;

    let (status, listed) = app.get("/users").await;
    assert_eq!(status, StatusCode::OK);
    let handles: Vec<_> = listed["users"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["handle"].as_str().unwrap())
        .collect();
    assert_eq!(handles, ["alice", "bob"]);
    let (status, read) = app.get(&format!("/users/{id}")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(read, created);
    let (status, body) = app.get(&format!("/users/{}", uuid::Uuid::now_v7())).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    let (status, body) = app.get("/users/not-a-uuid").await;
    assert_bad_request(status, &body, "`id`");

    let path = format!("/users/{id}");
    let change = json!({ "name": "Alice L.", "role": "admin", "time_zone": "UTC" });
    let (status, changed) = app.patch(&path, change).await;
    assert_eq!(status, StatusCode::OK, "{changed}");
    assert_eq!(changed["name"], "Alice L.");
    assert_eq!(changed["role"], "admin");
    assert_eq!(changed["time_zone"], "UTC");
    assert_eq!(
        changed["phone"], "+14155550100",
        "a field not given is kept"
    );
    assert_eq!(changed["created_at"], created["created_at"]);
    let (_, cleared) = app.patch(&path, json!({ "phone": null })).await;
    assert_eq!(cleared["phone"], Value::Null);
    assert_eq!(app.get(&path).await.1, cleared);

    let (status, body) = app.patch(&path, json!({ "handle": "alicia" })).await;
    assert_bad_request(status, &body, "`handle` cannot change");
    let (status, body) = app.patch(&path, json!({ "name": null })).await;
    assert_bad_request(status, &body, "`name`");
    let (status, body) = app.patch(&path, json!({ "nickname": "al" })).await;
    assert_bad_request(status, &body, "nickname");
    let (status, body) = app
        .patch(&format!("/users/{}", uuid::Uuid::now_v7()), json!({}))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");

    // Never deleted.
    let (status, body) =
        TestApp::send(app.request(Method::DELETE, &format!("/users/{bob}"), Some(ADMIN_TOKEN)))
            .await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED, "{body}");
    app.finish().await;
}

async fn each_invalid_field_is_a_400_naming_it(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let with = |field: &str, value: Value| {
        let mut body = alice();
        body[field] = value;
        body
    };
    for (field, value) in [
        ("handle", json!("Alice")),
        ("handle", json!("")),
        ("handle", json!("a".repeat(65))),
        ("name", json!("   ")),
        ("email", json!("alice")),
        ("phone", json!("4155550100")),
        ("role", json!("root")),
        ("time_zone", json!("Europe//Paris")),
    ] {
        let (status, body) = app.post("/users", with(field, value)).await;
        assert_bad_request(status, &body, &format!("`{field}`"));
    }
    let mut without_email = alice();
    without_email.as_object_mut().unwrap().remove("email");
    let (status, body) = app.post("/users", without_email).await;
    assert_bad_request(status, &body, "email");
    let (status, body) = app.post("/users", with("active", json!(false))).await;
    assert_bad_request(status, &body, "active");

    let id = app.user("alice", "responder").await;
    for (field, value) in [
        ("name", json!("")),
        ("email", json!("alice@localhost")),
        ("phone", json!("+0155")),
        ("role", json!("root")),
        ("time_zone", json!("Paris ")),
        ("active", json!("no")),
    ] {
        let (status, body) = app
            .patch(&format!("/users/{id}"), json!({ field: value }))
            .await;
        assert_bad_request(status, &body, &format!("`{field}`"));
    }
    let (_, listed) = app.get("/users").await;
    assert_eq!(listed["users"].as_array().unwrap().len(), 1, "{listed}");
    assert_eq!(listed["users"][0]["email"], "alice@example.com");
    app.finish().await;
}

async fn a_taken_handle_is_a_409(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let (status, _) = app.post("/users", alice()).await;
    assert_eq!(status, StatusCode::CREATED);
    let mut again = alice();
    again["email"] = json!("other@example.com");
    let (status, body) = app.post("/users", again).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["error"]["code"], "conflict");
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("handle"));
    app.finish().await;
}

async fn only_admins_register_users(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let (viewer, _) = app.token("viewer-bot", "viewer").await;
    let (responder, _) = app.token("responder-bot", "responder").await;
    for token in [&viewer, &responder] {
        let (status, body) = TestApp::send(
            app.request(Method::POST, "/users", Some(token))
                .json(&alice()),
        )
        .await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
        assert_eq!(body["error"]["code"], "forbidden");
    }
    let (status, listed) = get_with(&app, "/users", &viewer).await;
    assert_eq!(status, StatusCode::OK, "viewers read users: {listed}");
    assert_eq!(listed["users"], json!([]), "nothing was registered");
    app.finish().await;
}

async fn a_users_token_acts_with_the_users_handle(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let id = app.user("alice", "responder").await;
    let response = app
        .request(
            Method::POST,
            &format!("/users/{id}/tokens"),
            Some(ADMIN_TOKEN),
        )
        .json(&json!({ "name": "alice's laptop" }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    assert_eq!(response.headers()["cache-control"], "no-store");
    let issued: Value = response.json().await.unwrap();
    assert_eq!(issued["user_id"], id.as_str());
    assert_eq!(issued["role"], "responder", "the user's role");
    assert_eq!(issued["name"], "alice's laptop");
    let secret = issued["token"].as_str().unwrap();
    assert!(secret.starts_with("klx_"));

    let (status, me) = get_with(&app, "/me", secret).await;
    assert_eq!(status, StatusCode::OK, "{me}");
    assert_eq!((&me["id"], &me["handle"]), (&json!(id), &json!("alice")));
    let (status, body) = app.get("/me").await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("no user"));

    let incident = app.open_incident("disk full on db-1").await;
    let (status, body) = TestApp::send(app.request(
        Method::POST,
        &format!("/incidents/{incident}/acknowledge"),
        Some(secret),
    ))
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (_, timeline) = app.get(&format!("/incidents/{incident}/timeline")).await;
    let acknowledged = timeline["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .find(|entry| entry["kind"] == "incident.acknowledged")
        .unwrap_or_else(|| panic!("no acknowledgement in {timeline}"));
    assert_eq!(
        acknowledged["actor"], "alice",
        "the handle, not the token's name"
    );

    let (_, tokens) = app.get("/tokens").await;
    let owners: Vec<_> = tokens["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| (t["name"].as_str().unwrap(), t["user_id"].clone()))
        .collect();
    assert_eq!(
        owners,
        [
            ("bootstrap-admin", Value::Null),
            ("alice's laptop", json!(id))
        ]
    );
    let (status, body) = app
        .post(
            &format!("/users/{}/tokens", uuid::Uuid::now_v7()),
            json!({ "name": "x" }),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    let (status, body) = app
        .post(&format!("/users/{id}/tokens"), json!({ "name": " " }))
        .await;
    assert_bad_request(status, &body, "`name`");
    app.finish().await;
}

async fn deactivation_stops_the_users_tokens_at_once(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let id = app.user("alice", "responder").await;
    let secret = app.user_token(&id).await;
    let incident = app.open_incident("queue backlog").await;
    let (status, _) = TestApp::send(app.request(
        Method::POST,
        &format!("/incidents/{incident}/acknowledge"),
        Some(&secret),
    ))
    .await;
    assert_eq!(status, StatusCode::OK);

    let (status, deactivated) = app
        .patch(&format!("/users/{id}"), json!({ "active": false }))
        .await;
    assert_eq!(status, StatusCode::OK, "{deactivated}");
    assert_eq!(deactivated["active"], false);
    let (status, body) = get_with(&app, "/incidents", &secret).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert_eq!(body["error"]["code"], "unauthorized");
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("deactivated"));

    // The user and what they did are kept.
    let (status, kept) = app.get(&format!("/users/{id}")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(kept["active"], false);
    let (_, timeline) = app.get(&format!("/incidents/{incident}/timeline")).await;
    assert!(
        timeline["timeline"]
            .as_array()
            .unwrap()
            .iter()
            .any(|entry| entry["actor"] == "alice"),
        "{timeline}"
    );
    let (status, body) = app
        .post(&format!("/users/{id}/tokens"), json!({ "name": "new" }))
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["error"]["code"], "conflict");

    let (status, _) = app
        .patch(&format!("/users/{id}"), json!({ "active": true }))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        get_with(&app, "/incidents", &secret).await.0,
        StatusCode::OK
    );
    app.finish().await;
}

async fn a_role_change_applies_at_once_to_the_users_tokens(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let id = app.user("alice", "responder").await;
    let secret = app.user_token(&id).await;
    let submit = || {
        TestApp::send(
            app.request(Method::POST, "/message", Some(&secret))
                .json(&json!({ "text": "cpu hot" })),
        )
    };
    assert_eq!(submit().await.0, StatusCode::CREATED);

    let (status, _) = app
        .patch(&format!("/users/{id}"), json!({ "role": "viewer" }))
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = submit().await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("user `alice` has the viewer role"));

    let (status, _) = app
        .patch(&format!("/users/{id}"), json!({ "role": "admin" }))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(get_with(&app, "/tokens", &secret).await.0, StatusCode::OK);
    app.finish().await;
}

/// Two API instances share PostgreSQL: a user deactivated through one is refused by the other on
/// its very next request, though the other has the token cached.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deactivation_reaches_other_instances_at_once_on_postgresql() {
    let Some(first) = TestApp::spawn(Backend::Postgres).await else {
        return;
    };
    let second = klaxon::server::start(&first.config).await.unwrap();
    let second_base = format!("http://{}", second.api_addr.unwrap());
    let id = first.user("alice", "viewer").await;
    let secret = first.user_token(&id).await;
    let on_second = || {
        first
            .client
            .get(format!("{second_base}/incidents"))
            .bearer_auth(&secret)
            .send()
    };
    assert_eq!(on_second().await.unwrap().status(), StatusCode::OK);

    let (status, _) = first
        .patch(&format!("/users/{id}"), json!({ "active": false }))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        on_second().await.unwrap().status(),
        StatusCode::UNAUTHORIZED
    );
    second.stop().await.unwrap();
    first.finish().await;
}

/// Changes of different fields sent at once all land: each is stored over the version it was made
/// from, or read again and applied over the one that won.
async fn concurrent_changes_to_one_user_are_all_kept(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let id = app.user("carol", "responder").await;
    let path = format!("/users/{id}");
    let changes = [
        json!({ "name": "Carol Ann" }),
        json!({ "phone": "+33612345678" }),
        json!({ "time_zone": "Asia/Tokyo" }),
        json!({ "role": "admin" }),
        json!({ "email": "carol@example.org" }),
    ];
    let sent = futures::future::join_all(
        changes
            .iter()
            .map(|change| app.patch(&path, change.clone())),
    );
    for (status, body) in sent.await {
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    let (_, user) = app.get(&path).await;
    assert_eq!(user["name"], "Carol Ann", "{user}");
    assert_eq!(user["phone"], "+33612345678", "{user}");
    assert_eq!(user["time_zone"], "Asia/Tokyo", "{user}");
    assert_eq!(user["role"], "admin", "{user}");
    assert_eq!(user["email"], "carol@example.org", "{user}");
    app.finish().await;
}
