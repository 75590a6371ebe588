//! `Receiver`: a webhook receiver for the tests, on 127.0.0.1:0, that records every post and can
//! fail or stall on purpose.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, Request, Response, StatusCode};
use hmac::{Hmac, Mac};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use klaxon::config::{WebhookConfig, WebhookFormat};
use serde_json::Value;
use sha2::Sha256;
use tokio::net::TcpListener;

/// A receiver refuses a signature further than this from its clock, as a real one would.
const SIGNATURE_TOLERANCE_SECS: i64 = 300;
/// How long a stalling receiver sleeps before answering.
pub const STALL: Duration = Duration::from_secs(30);

/// One post as the receiver got it.
#[derive(Debug, Clone)]
pub struct Post {
    pub received_at: SystemTime,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Post {
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|value| value.to_str().ok())
            .unwrap_or_else(|| panic!("no {name} header"))
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("the body is JSON")
    }
}

#[derive(Default)]
struct ReceiverState {
    posts: Vec<Post>,
    /// The statuses of the next answers, in order; a 200 once they run out.
    failures: VecDeque<StatusCode>,
    stalling: bool,
}

/// A webhook receiver on 127.0.0.1:0. It records every post, refuses (401) one whose signature
/// does not verify under its secret and (400) one without an `Idempotency-Key`, and otherwise
/// answers 200 with an `X-Request-Id`, unless told to fail or to stall.
pub struct Receiver {
    pub url: String,
    secret: Option<&'static str>,
    state: Arc<Mutex<ReceiverState>>,
}

impl Receiver {
    pub async fn start(secret: Option<&'static str>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(Mutex::new(ReceiverState::default()));
        let shared = state.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let state = shared.clone();
                let service = hyper::service::service_fn(move |request| {
                    answer(state.clone(), secret, request)
                });
                tokio::spawn(
                    hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service),
                );
            }
        });
        Self {
            url: format!("http://{addr}/hook"),
            secret,
            state,
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, ReceiverState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Answers `status` to the next `count` posts.
    pub fn fail_next(&self, status: StatusCode, count: usize) {
        self.state()
            .failures
            .extend(std::iter::repeat_n(status, count));
    }

    /// Answers nothing for [`STALL`].
    pub fn stall(&self) {
        self.state().stalling = true;
    }

    pub fn posts(&self) -> Vec<Post> {
        self.state().posts.clone()
    }

    pub fn config(&self, format: WebhookFormat) -> WebhookConfig {
        WebhookConfig {
            url: self.url.clone(),
            format,
            secret: self.secret.map(str::to_owned),
        }
    }
}

async fn answer(
    state: Arc<Mutex<ReceiverState>>,
    secret: Option<&str>,
    request: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    let (parts, body) = request.into_parts();
    let body = axum::body::to_bytes(Body::new(body), usize::MAX)
        .await
        .unwrap_or_default();
    let (number, failure, stalling) = {
        let mut state = state.lock().unwrap_or_else(PoisonError::into_inner);
        state.posts.push(Post {
            received_at: SystemTime::now(),
            headers: parts.headers.clone(),
            body: body.clone(),
        });
        (
            state.posts.len(),
            state.failures.pop_front(),
            state.stalling,
        )
    };
    if stalling {
        tokio::time::sleep(STALL).await;
    }
    let signature = parts
        .headers
        .get("x-klaxon-signature")
        .and_then(|value| value.to_str().ok());
    let status = if let Some(status) = failure {
        status
    } else if secret.is_some_and(|secret| !signature.is_some_and(|s| verifies(secret, s, &body))) {
        StatusCode::UNAUTHORIZED
    } else if !parts.headers.contains_key("idempotency-key") {
        StatusCode::BAD_REQUEST
    } else {
        StatusCode::OK
    };
    let response = Response::builder()
        .status(status)
        .header("x-request-id", format!("receipt-{number}"))
        .body(Body::from(format!("answer {number}: {status}")))
        .expect("a valid response");
    Ok(response)
}

/// Whether `header` is `t=<t>,v1=<hex>` with `hex` the HMAC-SHA256 of `<t>.<body>` under
/// `secret`, and `t` close to now.
pub fn verifies(secret: &str, header: &str, body: &[u8]) -> bool {
    let Some((t, v1)) = header
        .strip_prefix("t=")
        .and_then(|rest| rest.split_once(",v1="))
    else {
        return false;
    };
    let Ok(t_seconds) = t.parse::<i64>() else {
        return false;
    };
    if (chrono::Utc::now().timestamp() - t_seconds).abs() > SIGNATURE_TOLERANCE_SECS {
        return false;
    }
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(format!("{t}.").as_bytes());
    mac.update(body);
    let expected: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect();
    expected == v1
}
