//! `NtfyServer`: an ntfy-compatible server for the tests, on 127.0.0.1:0, that takes messages
//! published as JSON and checks them as ntfy documents that form (docs.ntfy.sh, "Publish as
//! JSON", "Action buttons"), refusing with ntfy's own statuses and error JSON. It can fail or stall
//! on purpose, and can press a published message's buttons as the ntfy app would.
//!
//! It is stricter than ntfy where ntfy would accept a mistake silently: a JSON body posted to a
//! topic's URL (ntfy publishes it as plain text) is refused here, and so is a `click` that is no
//! URL.

use std::collections::{BTreeMap, VecDeque};
use std::convert::Infallible;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::Body;
use axum::http::header::{AUTHORIZATION, CONTENT_TYPE};
use axum::http::{HeaderMap, Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use klaxon::config::PushConfig;
use rand::distr::{Alphanumeric, SampleString};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio::net::TcpListener;

/// How long a stalling server sleeps before answering.
pub const STALL: Duration = Duration::from_secs(30);
/// ntfy's limit on a message's buttons.
const MAX_ACTIONS: usize = 3;
/// The longest topic name ntfy takes.
const MAX_TOPIC_CHARS: usize = 64;
/// How long ntfy keeps a message by default (`cache-duration`), which its answer's `expires` says.
const CACHE_SECS: u64 = 12 * 3600;
/// ntfy's message ids are this many random letters and digits.
const MESSAGE_ID_CHARS: usize = 12;
/// And its action ids this many.
const ACTION_ID_CHARS: usize = 10;

/// One request as the server got it, and what it answered.
#[derive(Debug, Clone)]
pub struct Message {
    pub method: Method,
    pub path: String,
    pub headers: HeaderMap,
    /// The body as JSON; `Null` when it is not JSON.
    pub json: Value,
    pub status: StatusCode,
    /// The published message (as subscribers get it) or ntfy's error JSON.
    pub answer: Value,
}

impl Message {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|value| value.to_str().ok())
    }
}

/// A message as ntfy reads a JSON publish: a field of the wrong type makes the whole body
/// unreadable (40017), as Go's decoder does; fields it does not know are ignored.
#[derive(Deserialize)]
struct JsonMessage {
    topic: Option<String>,
    title: Option<String>,
    message: Option<String>,
    priority: Option<i64>,
    tags: Option<Vec<String>>,
    click: Option<String>,
    actions: Option<Vec<JsonAction>>,
}

#[derive(Deserialize)]
struct JsonAction {
    action: Option<String>,
    label: Option<String>,
    url: Option<String>,
    method: Option<String>,
    headers: Option<BTreeMap<String, String>>,
    body: Option<String>,
    clear: Option<bool>,
}

/// ntfy's refusal, which it writes as `{"code", "http", "error", "link"?}`, in that order.
#[derive(Serialize)]
struct Refusal {
    code: u32,
    http: u16,
    error: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    link: Option<&'static str>,
}

impl Refusal {
    /// ntfy's codes start with the HTTP status.
    fn new(code: u32, error: &str, link: Option<&'static str>) -> Self {
        Self {
            code,
            http: (code / 100) as u16,
            error: error.to_owned(),
            link,
        }
    }

    /// ntfy words a refusal's detail after its general message, comma-separated.
    fn because(mut self, detail: &str) -> Self {
        self.error = format!("{}, {detail}", self.error);
        self
    }

    fn not_json() -> Self {
        Self::new(
            40017,
            "invalid request: request body must be message JSON",
            Some("https://ntfy.sh/docs/publish/#publish-as-json"),
        )
    }

    fn topic_invalid() -> Self {
        Self::new(40009, "invalid request: topic invalid", None)
    }

    fn priority_invalid() -> Self {
        Self::new(
            40007,
            "invalid priority parameter",
            Some("https://ntfy.sh/docs/publish/#message-priority"),
        )
    }

    fn actions_invalid(detail: &str) -> Self {
        Self::new(
            40018,
            "invalid request: actions invalid",
            Some("https://ntfy.sh/docs/publish/#action-buttons"),
        )
        .because(detail)
    }

    fn unauthorized() -> Self {
        Self::new(
            40101,
            "unauthorized",
            Some("https://ntfy.sh/docs/publish/#authentication"),
        )
    }

    fn forbidden() -> Self {
        Self::new(
            40301,
            "forbidden",
            Some("https://ntfy.sh/docs/publish/#authentication"),
        )
    }

    fn not_found() -> Self {
        Self::new(40401, "page not found", None)
    }

    /// What ntfy answers with `status`: its own error where it has one for it.
    fn of_status(status: StatusCode) -> Self {
        match status.as_u16() {
            401 => Self::unauthorized(),
            403 => Self::forbidden(),
            404 => Self::not_found(),
            429 => Self::new(
                42901,
                "limit reached: too many requests, please be nice",
                Some("https://ntfy.sh/docs/publish/#limitations"),
            ),
            500 => Self::new(50001, "internal server error", None),
            other => Self::new(
                u32::from(other) * 100 + 1,
                &status.canonical_reason().unwrap_or("error").to_lowercase(),
                None,
            ),
        }
    }
}

#[derive(Default)]
struct ServerState {
    messages: Vec<Message>,
    /// The statuses of the next answers, in order; ntfy's checks once they run out.
    failures: VecDeque<StatusCode>,
    stalling: bool,
}

/// An ntfy server on 127.0.0.1:0. With an access token, it refuses a publish without
/// `Authorization: Bearer <token>`: 401 (40101) for a token it does not know, 403 (40301) for no
/// token, as ntfy does for a topic anonymous users may not write to.
pub struct NtfyServer {
    /// The base URL, without a trailing `/`.
    pub url: String,
    token: Option<&'static str>,
    state: Arc<Mutex<ServerState>>,
    /// The phone's HTTP client, for [`NtfyServer::press`].
    phone: reqwest::Client,
}

impl NtfyServer {
    pub async fn start(token: Option<&'static str>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(Mutex::new(ServerState::default()));
        let shared = state.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let state = shared.clone();
                let service = hyper::service::service_fn(move |request| {
                    answer(state.clone(), token, request)
                });
                tokio::spawn(
                    hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service),
                );
            }
        });
        Self {
            url: format!("http://{addr}"),
            token,
            state,
            phone: reqwest::Client::new(),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, ServerState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Answers `status`, with ntfy's error JSON, to the next `times` requests.
    pub fn fail_next(&self, status: StatusCode, times: usize) {
        self.state()
            .failures
            .extend(std::iter::repeat_n(status, times));
    }

    /// Answers nothing for [`STALL`].
    pub fn stall(&self) {
        self.state().stalling = true;
    }

    /// Every request, in order, refused ones included.
    pub fn messages(&self) -> Vec<Message> {
        self.state().messages.clone()
    }

    /// A `[push]` for this server, with its token.
    pub fn config(&self) -> PushConfig {
        PushConfig {
            ntfy_url: self.url.clone(),
            token: self.token.map(str::to_owned),
        }
    }

    /// Presses the button labelled `label` of the `index`th message, as the ntfy app does for an
    /// `http` action: the action's `method` (POST unless it names one), `headers` and `body` (empty
    /// unless it has one), to its `url`. The status and body of the answer.
    pub async fn press(&self, index: usize, label: &str) -> (u16, String) {
        let messages = self.messages();
        let message = messages
            .get(index)
            .unwrap_or_else(|| panic!("no message {index}"));
        let action = message.answer["actions"]
            .as_array()
            .unwrap_or_else(|| panic!("message {index} has no buttons: {}", message.answer))
            .iter()
            .find(|action| action["label"] == label)
            .unwrap_or_else(|| panic!("message {index} has no button {label:?}"));
        assert_eq!(
            action["action"], "http",
            "only an http button sends a request"
        );
        let method = action["method"].as_str().unwrap_or("POST");
        let method = Method::from_bytes(method.as_bytes()).expect("ntfy checked the method");
        let url = action["url"].as_str().expect("ntfy checked the url");
        let mut request = self.phone.request(method, url);
        if let Some(headers) = action["headers"].as_object() {
            for (name, value) in headers {
                request = request.header(name, value.as_str().unwrap_or_default());
            }
        }
        let body = action["body"].as_str().unwrap_or_default().to_owned();
        let answer = request
            .body(body)
            .send()
            .await
            .expect("the button's URL answers");
        let status = answer.status().as_u16();
        (status, answer.text().await.unwrap_or_default())
    }
}

async fn answer(
    state: Arc<Mutex<ServerState>>,
    token: Option<&str>,
    request: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    let (parts, body) = request.into_parts();
    let body = axum::body::to_bytes(Body::new(body), usize::MAX)
        .await
        .unwrap_or_default();
    let json = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let (failure, stalling) = {
        let mut state = state.lock().unwrap_or_else(PoisonError::into_inner);
        (state.failures.pop_front(), state.stalling)
    };
    if stalling {
        tokio::time::sleep(STALL).await;
    }
    let outcome = match failure {
        Some(status) => Err(Refusal::of_status(status)),
        None => publish(
            &parts.method,
            parts.uri.path(),
            &parts.headers,
            &body,
            token,
        ),
    };
    let (status, text) = match outcome {
        Ok(published) => (StatusCode::OK, published.to_string()),
        Err(refusal) => (
            StatusCode::from_u16(refusal.http).expect("ntfy refuses with HTTP statuses"),
            serde_json::to_string(&refusal).expect("a refusal is JSON"),
        ),
    };
    let answer = serde_json::from_str(&text).expect("the answer is JSON");
    state
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .messages
        .push(Message {
            method: parts.method,
            path: parts.uri.path().to_owned(),
            headers: parts.headers,
            json,
            status,
            answer,
        });
    let response = Response::builder()
        .status(status)
        .header(CONTENT_TYPE, "application/json")
        .body(Body::from(format!("{text}\n")))
        .expect("a valid response");
    Ok(response)
}

/// ntfy's checks of a JSON publish, in its order: the token, the body, the topic, the right to
/// write to it, then the fields. The message as subscribers get it.
fn publish(
    method: &Method,
    path: &str,
    headers: &HeaderMap,
    body: &[u8],
    token: Option<&str>,
) -> Result<Value, Refusal> {
    if !(method == Method::POST || method == Method::PUT) || path != "/" {
        return Err(Refusal::not_found());
    }
    let authorization = headers
        .get(AUTHORIZATION)
        .map(|value| value.to_str().unwrap_or_default());
    if let (Some(token), Some(authorization)) = (token, authorization) {
        if authorization != format!("Bearer {token}") {
            return Err(Refusal::unauthorized());
        }
    }
    let message: JsonMessage = serde_json::from_slice(body)
        .map_err(|error| Refusal::not_json().because(&error.to_string()))?;
    let topic = message.topic.unwrap_or_default();
    if !is_topic(&topic) {
        return Err(Refusal::topic_invalid());
    }
    if token.is_some() && authorization.is_none() {
        return Err(Refusal::forbidden());
    }
    if message.priority.is_some_and(|p| !(1..=5).contains(&p)) {
        return Err(Refusal::priority_invalid());
    }
    if message
        .click
        .as_deref()
        .is_some_and(|click| reqwest::Url::parse(click).is_err())
    {
        return Err(Refusal::not_json().because("click is not a URL"));
    }
    let actions = message.actions.unwrap_or_default();
    if actions.len() > MAX_ACTIONS {
        return Err(Refusal::actions_invalid(&format!(
            "only {MAX_ACTIONS} actions allowed"
        )));
    }
    let actions = actions
        .into_iter()
        .map(checked_action)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|detail| Refusal::actions_invalid(&detail))?;

    let time = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_secs();
    let mut published = json!({
        "id": random_id(MESSAGE_ID_CHARS),
        "time": time,
        "expires": time + CACHE_SECS,
        "event": "message",
        "topic": topic,
        "message": message.message.filter(|m| !m.is_empty()).unwrap_or_else(|| "triggered".into()),
    });
    if let Some(title) = message.title {
        published["title"] = json!(title);
    }
    if let Some(priority) = message.priority {
        published["priority"] = json!(priority);
    }
    if let Some(tags) = message.tags {
        published["tags"] = json!(tags);
    }
    if let Some(click) = message.click {
        published["click"] = json!(click);
    }
    if !actions.is_empty() {
        published["actions"] = json!(actions);
    }
    Ok(published)
}

/// ntfy's topic names: 1 to 64 letters, digits, `-` and `_`.
fn is_topic(topic: &str) -> bool {
    (1..=MAX_TOPIC_CHARS).contains(&topic.len())
        && topic
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

/// One button as ntfy checks it, and as subscribers get it (with an id, the type in lowercase and
/// the method in uppercase); otherwise why not.
fn checked_action(action: JsonAction) -> Result<Value, String> {
    let kind = action.action.unwrap_or_default().to_lowercase();
    if !["view", "broadcast", "http"].contains(&kind.as_str()) {
        return Err(format!("action '{kind}' unknown"));
    }
    let label = action.label.unwrap_or_default();
    if label.is_empty() {
        return Err("parameter 'label' is required".into());
    }
    let url = action.url.unwrap_or_default();
    if kind != "broadcast" {
        if url.is_empty() {
            return Err(format!("parameter 'url' is required for action '{kind}'"));
        }
        reqwest::Url::parse(&url).map_err(|error| format!("url '{url}': {error}"))?;
    }
    let method = action.method.map(|m| m.to_uppercase());
    if let Some(method) = &method {
        Method::from_bytes(method.as_bytes())
            .map_err(|_| format!("method '{method}' is no HTTP method"))?;
        if (method == "GET" || method == "HEAD")
            && action.body.as_deref().is_some_and(|b| !b.is_empty())
        {
            return Err(format!(
                "parameter 'body' cannot be set if method is {method}"
            ));
        }
    }
    let mut checked = json!({
        "id": random_id(ACTION_ID_CHARS),
        "action": kind,
        "label": label,
        "clear": action.clear.unwrap_or(false),
    });
    if !url.is_empty() {
        checked["url"] = json!(url);
    }
    if let Some(method) = method {
        checked["method"] = json!(method);
    }
    if let Some(headers) = action.headers {
        checked["headers"] = json!(headers);
    }
    if let Some(body) = action.body {
        checked["body"] = json!(body);
    }
    Ok(checked)
}

fn random_id(chars: usize) -> String {
    Alphanumeric.sample_string(&mut rand::rng(), chars)
}
