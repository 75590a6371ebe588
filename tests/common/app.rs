//! `TestApp`: the real server, in-process, on port 0, over its own database, with typed helpers.
//! Every test that spawns one ends with [`TestApp::finish`], which audits the database.

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use klaxon::config::Config;
use klaxon::server::{self, Roles, Running};

use super::audit::{Audit, Expect};
use super::{Backend, TestDatabase};

/// The bootstrap admin secret every test server starts with.
pub const ADMIN_TOKEN: &str = "test-admin-token-0123456789";

pub struct TestApp {
    pub base: String,
    pub client: reqwest::Client,
    pub config: Config,
    running: Option<Running>,
    roles: Roles,
    pub db: TestDatabase,
    /// Of the database the server uses (which a test may point elsewhere than `db`).
    audit: Audit,
}

impl TestApp {
    /// `None` when the backend is not configured on this machine (the test then returns early).
    pub async fn spawn(backend: Backend) -> Option<Self> {
        Self::spawn_with(backend, |_| {}).await
    }

    pub async fn spawn_with(backend: Backend, tweak: impl FnOnce(&mut Config)) -> Option<Self> {
        Self::spawn_roles(backend, Roles::ALL, tweak).await
    }

    /// A server running only what `roles` asks for (it must include the API).
    pub async fn spawn_roles(
        backend: Backend,
        roles: Roles,
        tweak: impl FnOnce(&mut Config),
    ) -> Option<Self> {
        let db = TestDatabase::create(backend).await?;
        let mut config = Config {
            listen: "127.0.0.1:0".parse().unwrap(),
            database_url: db.url.parse().unwrap(),
            admin_token: Some(ADMIN_TOKEN.to_owned()),
            ..Config::default()
        };
        tweak(&mut config);
        let running = server::start_with(&config, roles)
            .await
            .expect("the server starts");
        Some(Self {
            base: format!("http://{}", running.api_addr.expect("the API is served")),
            client: reqwest::Client::new(),
            audit: Audit::of(config.database_url.as_str()),
            config,
            running: Some(running),
            roles,
            db,
        })
    }

    /// Stops the server gracefully and starts a new one on the same database (and a new port).
    pub async fn restart(&mut self) {
        if let Some(running) = self.running.take() {
            running.stop().await.expect("a clean stop");
        }
        let running = server::start_with(&self.config, self.roles)
            .await
            .expect("the server restarts");
        self.base = format!("http://{}", running.api_addr.expect("the API is served"));
        self.running = Some(running);
    }

    /// A request with `token` as its bearer (none if `None`).
    pub fn request(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
    ) -> reqwest::RequestBuilder {
        let builder = self.client.request(method, format!("{}{path}", self.base));
        match token {
            Some(token) => builder.bearer_auth(token),
            None => builder,
        }
    }

    /// Sends and returns status and JSON body (`Value::Null` if the body is not JSON).
    pub async fn send(builder: reqwest::RequestBuilder) -> (StatusCode, Value) {
        let response = builder.send().await.expect("the server answers");
        let status = response.status();
        let body = response.json().await.unwrap_or(Value::Null);
        (status, body)
    }

    /// The status `GET /health` answers (no token).
    pub async fn health(&self) -> StatusCode {
        Self::send(self.request(Method::GET, "/health", None))
            .await
            .0
    }

    pub async fn get(&self, path: &str) -> (StatusCode, Value) {
        Self::send(self.request(Method::GET, path, Some(ADMIN_TOKEN))).await
    }

    pub async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        Self::send(
            self.request(Method::POST, path, Some(ADMIN_TOKEN))
                .json(&body),
        )
        .await
    }

    pub async fn patch(&self, path: &str, body: Value) -> (StatusCode, Value) {
        Self::send(
            self.request(Method::PATCH, path, Some(ADMIN_TOKEN))
                .json(&body),
        )
        .await
    }

    /// `POST /message`; panics unless it answers 200 or 201.
    pub async fn message(&self, body: Value) -> Value {
        let (status, reply) = self.post("/message", body).await;
        assert!(
            status == StatusCode::CREATED || status == StatusCode::OK,
            "{status}: {reply}"
        );
        reply
    }

    /// Opens a new incident and returns its id.
    pub async fn open_incident(&self, text: &str) -> String {
        let reply = self.message(json!({ "text": text })).await;
        reply["incident"]["id"].as_str().unwrap().to_owned()
    }

    /// `POST /incidents/{id}/{action}` with no body.
    pub async fn act(&self, id: &str, action: &str) -> (StatusCode, Value) {
        Self::send(self.request(
            Method::POST,
            &format!("/incidents/{id}/{action}"),
            Some(ADMIN_TOKEN),
        ))
        .await
    }

    /// Ends the test: audits the database (`common::audit`) while the server still runs, so that
    /// its worker can take what has just fallen due, then stops the server, letting requests in
    /// flight and the worker's batch finish. A server without a worker is held only to "no
    /// escalation executed twice".
    pub async fn finish(mut self) {
        let expect = if self.roles.worker {
            Expect::NothingDue
        } else {
            Expect::WorkMayRemain("this server runs no worker")
        };
        self.audit.run(expect).await;
        if let Some(running) = self.running.take() {
            running.stop().await.expect("a clean stop");
        }
    }

    /// Creates a token with `role` through the API and returns its secret and id.
    pub async fn token(&self, name: &str, role: &str) -> (String, String) {
        let (status, reply) = self
            .post("/tokens", json!({ "name": name, "role": role }))
            .await;
        assert_eq!(status, StatusCode::CREATED, "{reply}");
        (
            reply["token"].as_str().unwrap().to_owned(),
            reply["id"].as_str().unwrap().to_owned(),
        )
    }

    /// Registers a user `handle` with `role` through the API and returns its id.
    pub async fn user(&self, handle: &str, role: &str) -> String {
        let (status, reply) = self
            .post(
                "/users",
                json!({
                    "handle": handle,
                    "name": format!("{handle} (test)"),
                    "email": format!("{handle}@example.com"),
                    "role": role,
                }),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{reply}");
        reply["id"].as_str().unwrap().to_owned()
    }

    /// Issues a token that acts for the user `user_id` and returns its secret.
    pub async fn user_token(&self, user_id: &str) -> String {
        let (status, reply) = self
            .post(
                &format!("/users/{user_id}/tokens"),
                json!({ "name": "laptop" }),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{reply}");
        reply["token"].as_str().unwrap().to_owned()
    }

    pub async fn escalations(&self, id: &str) -> Vec<Value> {
        let (status, reply) = self.get(&format!("/incidents/escalations/{id}")).await;
        assert_eq!(status, StatusCode::OK, "{reply}");
        reply["escalations"].as_array().unwrap().clone()
    }

    pub async fn timeline_kinds(&self, id: &str) -> Vec<String> {
        let (status, reply) = self.get(&format!("/incidents/{id}/timeline")).await;
        assert_eq!(status, StatusCode::OK, "{reply}");
        reply["timeline"]
            .as_array()
            .unwrap()
            .iter()
            .map(|entry| entry["kind"].as_str().unwrap().to_owned())
            .collect()
    }
}
