//! The HTTP API (SPEC §4): axum routers, one file per resource, with authentication in [`auth`],
//! input extraction in [`extract`], the one error type in [`error`] and the OpenAPI document in
//! [`openapi`].

pub mod alertmanager;
pub mod auth;
pub mod cache;
pub mod contacts;
pub mod enqueue;
pub mod error;
pub mod extract;
pub mod health;
pub mod incidents;
pub mod key_limit;
pub mod links;
pub mod messages;
pub mod metrics;
pub mod notifications;
pub mod openapi;
pub mod policies;
pub mod schedules;
pub mod services;
pub mod tokens;
pub mod twilio;
pub mod users;

use std::future::Future;
use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, Request};
use axum::http::header::X_CONTENT_TYPE_OPTIONS;
use axum::http::HeaderValue;
use axum::middleware::{map_request, map_response};
use axum::response::Response;
use axum::routing::{delete, get, patch, post, put};
use axum::Router;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::{DefaultOnResponse, TraceLayer};
use tracing::Level;

use cache::{RouteCache, TokenCache};
pub use error::ApiError;

use crate::domain::EscalationPolicy;
use crate::engine::{Scheduler, WorkerStatus};
use crate::live::Live;
use crate::metrics::Metrics;
use crate::store::batch::IngestQueue;
use uuid::Uuid;

use crate::domain::{Action, NewEvent, Timestamp};
use crate::store::{Ingested, Store, StoreError, TransitionOutcome, TransitionRequest};

/// What every handler can reach. axum clones the state for every request, so it is one shared
/// pointer to the [`AppParts`].
#[derive(Clone)]
pub struct AppState(Arc<AppParts>);

impl AppState {
    pub fn new(parts: AppParts) -> Self {
        Self(Arc::new(parts))
    }
}

impl std::ops::Deref for AppState {
    type Target = AppParts;

    fn deref(&self) -> &AppParts {
        &self.0
    }
}

/// The parts of the [`AppState`].
pub struct AppParts {
    pub store: Arc<dyn Store>,
    /// Messages are stored through this, many to a transaction under load.
    pub ingest: IngestQueue,
    /// The policy an incident snapshots when it starts escalating; SIGHUP replaces it.
    pub policy: Live<EscalationPolicy>,
    /// Told about every commit that schedules or cancels escalations.
    pub scheduler: Scheduler,
    pub metrics: Arc<Metrics>,
    /// This process's worker, for `/health`.
    pub worker: Arc<WorkerStatus>,
    pub tokens: Arc<TokenCache>,
    /// Where integration keys route events.
    pub routes: Arc<RouteCache>,
    /// The providers and channels the integrations and contact-method tests use; SIGHUP
    /// replaces them.
    pub reach: Live<twilio::Reach>,
    /// Events per integration key.
    pub key_limit: Arc<key_limit::KeyLimiter>,
}

impl AppState {
    /// Moves incident `incident_id` by `action` as `actor` now, under the configured policy,
    /// to completion whatever the client does, and tells the scheduler: the one way every handler
    /// transitions an incident (a link, a reply, an integration, a heartbeat, the API).
    pub async fn transition(
        &self,
        incident_id: Uuid,
        action: Action,
        actor: String,
        note: Option<String>,
    ) -> Result<TransitionOutcome, StoreError> {
        self.apply(TransitionRequest {
            incident_id,
            action,
            actor,
            note,
            at: Timestamp::now(),
            policy: self.policy.get(),
            link: None,
        })
        .await
    }

    /// Stores `event` through the ingest queue and tells the scheduler about the level 1 it
    /// scheduled, if the incident it opened escalates on arrival: the one way every handler
    /// ingests.
    pub async fn ingest_event(&self, event: NewEvent) -> Result<Ingested, StoreError> {
        let ingested = self.ingest.ingest(event).await?;
        if let Some(scheduled) = ingested.scheduled {
            self.scheduler.scheduled(&[scheduled]).await;
        }
        Ok(ingested)
    }

    /// Applies `request` to completion and tells the scheduler what it scheduled or cancelled.
    pub async fn apply(&self, request: TransitionRequest) -> Result<TransitionOutcome, StoreError> {
        let (store, scheduler) = (self.store.clone(), self.scheduler.clone());
        to_completion(async move {
            let outcome = store.transition(request).await?;
            scheduler.transitioned(&outcome).await;
            Ok(outcome)
        })
        .await
    }
}

/// Runs a write to completion on a task of its own. When a client disconnects, axum drops the
/// handler's future; a write dropped between `begin` and `commit` would hand its connection back
/// to the pool still inside the transaction (sqlx does so on PostgreSQL), holding its locks.
/// Detached, the write commits (or rolls back) whatever the client does.
pub async fn to_completion<T, E>(
    write: impl Future<Output = Result<T, E>> + Send + 'static,
) -> Result<T, E>
where
    T: Send + 'static,
    E: From<StoreError> + Send + 'static,
{
    tokio::spawn(write)
        .await
        .unwrap_or_else(|join| Err(StoreError::internal(join).into()))
}

/// The longest `x-request-id` a client may choose; a longer one is replaced.
const MAX_REQUEST_ID_CHARS: usize = 128;

const X_REQUEST_ID: &str = "x-request-id";

/// Drops the client's `x-request-id` unless it sent one, short and plain
/// (`[A-Za-z0-9._-]{1,128}`), so that a generated one replaces it: the id is written into every
/// log line of the request, and no client may write text there.
async fn keep_plain_request_id(mut request: Request) -> Request {
    let mut ids = request.headers().get_all(X_REQUEST_ID).iter();
    let plain = match (ids.next(), ids.next()) {
        (Some(id), None) => {
            (1..=MAX_REQUEST_ID_CHARS).contains(&id.len())
                && id
                    .as_bytes()
                    .iter()
                    .all(|&byte| byte.is_ascii_alphanumeric() || b"._-".contains(&byte))
        }
        _ => false,
    };
    if !plain {
        request.headers_mut().remove(X_REQUEST_ID);
    }
    request
}

/// Every answer tells browsers not to guess a content type other than the one it declares.
async fn forbid_sniffing(mut response: Response) -> Response {
    response
        .headers_mut()
        .insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    response
}

/// The whole API, with its middleware: request ids, tracing, body limit, panic safety,
/// `X-Content-Type-Options: nosniff`.
pub fn router(state: AppState, max_body_bytes: usize) -> Router {
    Router::new()
        .route("/health", get(health::health))
        .route("/message", post(messages::submit))
        .route("/v2/enqueue", post(enqueue::enqueue))
        .route("/integrations/alertmanager", post(alertmanager::receive))
        .route("/incidents", get(incidents::list))
        .route("/incidents/{id}", get(incidents::get))
        .route("/incidents/{id}/escalate", post(incidents::escalate))
        .route("/incidents/{id}/acknowledge", post(incidents::acknowledge))
        .route("/incidents/{id}/resolve", post(incidents::resolve))
        .route("/incidents/{id}/cancel", post(incidents::cancel))
        .route("/incidents/{id}/timeline", get(incidents::timeline))
        .route("/incidents/escalations/{id}", get(incidents::escalations))
        .route("/tokens", post(tokens::create).get(tokens::list))
        .route("/tokens/{id}", delete(tokens::revoke))
        .route("/users", post(users::create).get(users::list))
        .route("/users/{id}", get(users::get).patch(users::update))
        .route("/users/{id}/tokens", post(users::create_token))
        .route(
            "/users/{id}/contact-methods",
            post(contacts::add_method).get(contacts::methods),
        )
        .route(
            "/users/{id}/contact-methods/{cm}/test",
            post(contacts::test),
        )
        .route(
            "/users/{id}/notification-rules",
            post(contacts::add_rule).get(contacts::rules),
        )
        .route("/services", post(services::create).get(services::list))
        .route("/services/{id}", get(services::get).patch(services::update))
        .route(
            "/services/{id}/integration-keys",
            post(services::create_key).get(services::keys),
        )
        .route(
            "/services/{id}/integration-keys/{key_id}",
            delete(services::revoke_key),
        )
        .route(
            "/services/{id}/heartbeats",
            post(services::create_heartbeat).get(services::heartbeats),
        )
        .route(
            "/services/{id}/heartbeats/{heartbeat_id}",
            patch(services::change_heartbeat).delete(services::retire_heartbeat),
        )
        .route("/heartbeats/{key}", post(services::ping))
        .route(
            "/escalation-policies",
            post(policies::create).get(policies::list),
        )
        .route(
            "/escalation-policies/{id}",
            get(policies::get).put(policies::replace),
        )
        .route("/schedules", post(schedules::create).get(schedules::list))
        .route(
            "/schedules/{id}",
            get(schedules::get).patch(schedules::update),
        )
        .route(
            "/schedules/{id}/rotations",
            post(schedules::add_rotation).get(schedules::rotations),
        )
        .route(
            "/schedules/{id}/rotations/{rotation_id}",
            put(schedules::replace_rotation).delete(schedules::retire_rotation),
        )
        .route(
            "/schedules/{id}/overrides",
            post(schedules::add_override).get(schedules::overrides),
        )
        .route(
            "/schedules/{id}/overrides/{override_id}",
            delete(schedules::retire_override),
        )
        .route("/schedules/{id}/on-call", get(schedules::on_call))
        .route("/schedules/{id}/shifts", get(schedules::shifts))
        .route("/schedules/{id}/gaps", get(schedules::gaps))
        .route("/schedules/{id}/calendar.ics", get(schedules::calendar))
        .route("/integrations/twilio/sms", post(twilio::inbound_sms))
        .route("/integrations/twilio/status", post(twilio::status))
        .route("/integrations/twilio/voice/test", post(twilio::voice_test))
        .route("/integrations/twilio/voice/{id}", post(twilio::voice))
        .route(
            "/integrations/twilio/voice/{id}/gather",
            post(twilio::gather),
        )
        .route("/me", get(users::me))
        .route("/me/notifications", get(notifications::inbox))
        .route("/notifications/{id}/read", post(notifications::read))
        .route(
            "/incidents/{id}/notifications",
            get(notifications::of_incident),
        )
        .route("/links/{id}/{action}", get(links::confirm).post(links::act))
        .route("/openapi.json", get(openapi::document))
        .route("/metrics", get(metrics::render))
        .fallback(|| async { ApiError::NotFound("no such endpoint".into()) })
        .method_not_allowed_fallback(|| async {
            ApiError::MethodNotAllowed("this endpoint does not accept that method".into())
        })
        .with_state(state)
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .layer(CatchPanicLayer::custom(|_| {
            use axum::response::IntoResponse;
            ApiError::Internal("a handler panicked".into()).into_response()
        }))
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(|request: &Request| {
                    let request_id = request
                        .headers()
                        .get(X_REQUEST_ID)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default();
                    // The path is the client's text: logged quoted and escaped (`?`), so that it
                    // cannot forge the look of a log line.
                    tracing::info_span!(
                        "request",
                        method = %request.method(),
                        path = ?request.uri().path(),
                        request_id = %request_id,
                    )
                })
                .on_request(())
                .on_response(
                    DefaultOnResponse::new()
                        .level(Level::INFO)
                        .latency_unit(tower_http::LatencyUnit::Micros),
                ),
        )
        .layer(PropagateRequestIdLayer::x_request_id())
        .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
        .layer(map_request(keep_plain_request_id))
        .layer(map_response(forbid_sniffing))
}
