//! A user's contact methods and personal notification rules: added by the user themself (with
//! their own token) or by an admin, read by anyone with a token; never deleted. A contact
//! method can be tested: `POST /users/{id}/contact-methods/{cm}/test` sends a message through
//! it at once and answers what the provider said.

use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::auth::{Authorized, Caller, Viewer};
use super::extract::{IdPath, JsonBody, PathParams};
use super::{to_completion, ApiError, AppState};
use crate::domain::contact::humantime_text;
use crate::domain::{
    ContactMethod, ContactType, Incident, IncidentStatus, NewContactMethod, NewRule,
    NotificationRule, Role, Severity, Timestamp, User,
};
use crate::notify::{Item, Links, Outgoing, Person, Recipient};

fn missing(id: Uuid) -> impl FnOnce() -> String {
    move || format!("user {id} not found")
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewContactMethodRequest {
    #[serde(rename = "type")]
    pub kind: ContactType,
    /// An email address; a phone number in E.164 for `sms` and `voice`; an ntfy topic for
    /// `push`; an `http(s)` URL for `webhook`.
    #[schema(max_length = 2048)]
    pub address: String,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ContactMethodList {
    /// Oldest first.
    pub contact_methods: Vec<ContactMethod>,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewRuleRequest {
    pub contact_method_id: Uuid,
    /// After the level that names the user executes: `"0s"`, `"1m"`, `"1h 30m"`; at most 24h.
    #[schema(example = "1m")]
    pub delay: String,
    /// Repeat this often until the incident is acknowledged (at least `"100ms"`).
    #[schema(example = "5m")]
    pub repeat_every: Option<String>,
    /// How many repeats at most, 1 to 20 (3 when `repeat_every` is given without it).
    #[schema(minimum = 1, maximum = 20)]
    pub max_repeats: Option<u32>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct RuleList {
    /// Oldest first.
    pub notification_rules: Vec<NotificationRule>,
}

/// What a test message came to.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct TestResult {
    /// `SENT`: the provider accepted it.
    pub status: &'static str,
    pub provider: Option<String>,
    pub provider_message_id: Option<String>,
}

/// The user `id`, if the caller may change their contact methods and rules: an admin, or the
/// user themself.
async fn changeable(state: &AppState, caller: &Caller, id: Uuid) -> Result<User, ApiError> {
    let own = caller.user.as_ref().is_some_and(|user| user.id == id);
    if !own && caller.role != Role::Admin {
        return Err(ApiError::Forbidden(
            "only the user themself or an admin may change a user's contact methods and rules"
                .into(),
        ));
    }
    state
        .store
        .user(id)
        .await
        .map_err(|e| ApiError::from_store(e, missing(id)))
}

fn duration(field: &str, text: &str) -> Result<Duration, ApiError> {
    humantime_text::parse(text)
        .map_err(|why| ApiError::BadRequest(format!("invalid `{field}`: {why}")))
}

/// Add a contact method to a user
#[utoipa::path(
    post, path = "/users/{id}/contact-methods", tag = "users", params(("id" = Uuid, Path)),
    request_body = NewContactMethodRequest,
    responses(
        (status = 201, body = ContactMethod),
        (status = 400), (status = 403), (status = 404),
        (status = 409, description = "The user has this contact method already"),
    ),
    security(("bearer" = []))
)]
pub async fn add_method(
    State(state): State<AppState>,
    Authorized(caller, _): Authorized<Viewer>,
    IdPath(id): IdPath,
    JsonBody(request): JsonBody<NewContactMethodRequest>,
) -> Result<(StatusCode, Json<ContactMethod>), ApiError> {
    let user = changeable(&state, &caller, id).await?;
    let new = NewContactMethod {
        kind: request.kind,
        address: request.address,
    };
    let method = ContactMethod::new(user.id, new, Timestamp::now())?;
    let store = state.store.clone();
    let method = to_completion(async move { store.add_contact_method(&method).await }).await?;
    tracing::info!(user_id = %id, contact_method_id = %method.id, kind = method.kind.as_str(), by = %caller.name, "contact method added");
    Ok((StatusCode::CREATED, Json(method)))
}

/// List a user's contact methods
#[utoipa::path(
    get, path = "/users/{id}/contact-methods", tag = "users", params(("id" = Uuid, Path)),
    responses((status = 200, body = ContactMethodList), (status = 404)),
    security(("bearer" = []))
)]
pub async fn methods(
    State(state): State<AppState>,
    _: Authorized<Viewer>,
    IdPath(id): IdPath,
) -> Result<Json<ContactMethodList>, ApiError> {
    let user = state
        .store
        .user(id)
        .await
        .map_err(|e| ApiError::from_store(e, missing(id)))?;
    Ok(Json(ContactMethodList {
        contact_methods: state.store.contact_methods(user.id).await?,
    }))
}

/// Add a personal notification rule
#[utoipa::path(
    post, path = "/users/{id}/notification-rules", tag = "users", params(("id" = Uuid, Path)),
    request_body = NewRuleRequest,
    responses(
        (status = 201, body = NotificationRule),
        (status = 400), (status = 403),
        (status = 404, description = "No such user, or the contact method is not theirs"),
    ),
    security(("bearer" = []))
)]
pub async fn add_rule(
    State(state): State<AppState>,
    Authorized(caller, _): Authorized<Viewer>,
    IdPath(id): IdPath,
    JsonBody(request): JsonBody<NewRuleRequest>,
) -> Result<(StatusCode, Json<NotificationRule>), ApiError> {
    let user = changeable(&state, &caller, id).await?;
    let new = NewRule {
        contact_method_id: request.contact_method_id,
        delay: duration("delay", &request.delay)?,
        repeat_every: request
            .repeat_every
            .as_deref()
            .map(|every| duration("repeat_every", every))
            .transpose()?,
        max_repeats: request.max_repeats,
    };
    let rule = NotificationRule::new(user.id, new, Timestamp::now())?;
    let store = state.store.clone();
    let method = rule.contact_method_id;
    let rule = to_completion(async move { store.add_rule(&rule).await })
        .await
        .map_err(|e| {
            ApiError::from_store(e, || {
                format!("contact method {method} is not one of this user's")
            })
        })?;
    tracing::info!(user_id = %id, rule_id = %rule.id, by = %caller.name, "notification rule added");
    Ok((StatusCode::CREATED, Json(rule)))
}

/// List a user's notification rules
#[utoipa::path(
    get, path = "/users/{id}/notification-rules", tag = "users", params(("id" = Uuid, Path)),
    responses((status = 200, body = RuleList), (status = 404)),
    security(("bearer" = []))
)]
pub async fn rules(
    State(state): State<AppState>,
    _: Authorized<Viewer>,
    IdPath(id): IdPath,
) -> Result<Json<RuleList>, ApiError> {
    let user = state
        .store
        .user(id)
        .await
        .map_err(|e| ApiError::from_store(e, missing(id)))?;
    Ok(Json(RuleList {
        notification_rules: state.store.rules(user.id).await?,
    }))
}

/// The path of one contact method.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
pub struct MethodPath {
    /// The user.
    id: Uuid,
    /// The contact method.
    cm: Uuid,
}

/// Send a test message to a contact method
#[utoipa::path(
    post, path = "/users/{id}/contact-methods/{cm}/test", tag = "users", params(MethodPath),
    responses(
        (status = 200, description = "The provider accepted the test message", body = TestResult),
        (status = 403), (status = 404),
        (status = 502, description = "The provider refused or failed it, or the channel is not configured"),
    ),
    security(("bearer" = []))
)]
pub async fn test(
    State(state): State<AppState>,
    Authorized(caller, _): Authorized<Viewer>,
    PathParams(MethodPath { id, cm }): PathParams<MethodPath>,
) -> Result<Json<TestResult>, ApiError> {
    let user = changeable(&state, &caller, id).await?;
    let method = state
        .store
        .contact_methods(user.id)
        .await?
        .into_iter()
        .find(|method| method.id == cm)
        .ok_or_else(|| {
            ApiError::NotFound(format!("contact method {cm} not found for this user"))
        })?;
    let message = test_message(&state, &user, &method);
    let sender = state
        .reach
        .get()
        .channels
        .sender(method.kind.channel())
        .map_err(|why| ApiError::BadGateway(why.to_string()))?
        .clone();
    let delivered = sender
        .send(&message)
        .await
        .map_err(|why| ApiError::BadGateway(format!("the test message was not sent: {why}")))?;
    tracing::info!(user_id = %id, contact_method_id = %cm, by = %caller.name, "test message sent");
    Ok(Json(TestResult {
        status: "SENT",
        provider: delivered.provider,
        provider_message_id: delivered.provider_id,
    }))
}

/// A message that says it is a test, to `method`: about no stored incident, with links to the
/// user's page and, for a call, a document that only says it is a test.
fn test_message(state: &AppState, user: &User, method: &ContactMethod) -> Outgoing {
    let now = Timestamp::now();
    let reach = state.reach.get();
    let public_url = &reach.public_url;
    let incident = Incident {
        id: Uuid::now_v7(),
        title: format!("Test message from Klaxon to {}", user.handle),
        severity: Severity::Info,
        status: IncidentStatus::Open,
        dedup_key: None,
        event_count: 0,
        escalation_level: 0,
        resolution_note: None,
        created_at: now,
        updated_at: now,
        acknowledged_at: None,
        resolved_at: None,
        cancelled_at: None,
        service_id: None,
    };
    let page = format!("{public_url}/users/{}", user.id);
    let item = Item {
        incident,
        escalation_level: 0,
        links: Links {
            incident: page.clone(),
            acknowledge: page.clone(),
            resolve: page,
        },
    };
    let recipient = Recipient::Person(Person {
        handle: user.handle.clone(),
        name: user.name.clone(),
        address: method.address.clone(),
    });
    let mut message = Outgoing::new(format!("test-{}", Uuid::now_v7()), recipient, vec![item]);
    if method.kind == ContactType::Voice {
        message.twiml_url = Some(format!("{public_url}/integrations/twilio/voice/test"));
    }
    message
}

/// Retire a contact method
#[utoipa::path(
    delete, path = "/users/{id}/contact-methods/{cm}", tag = "users", params(MethodPath),
    responses(
        (status = 204, description = "Retired: kept, but no longer listed or used, with the rules through it"),
        (status = 403), (status = 404),
    ),
    security(("bearer" = []))
)]
pub async fn retire_method(
    State(state): State<AppState>,
    Authorized(caller, _): Authorized<Viewer>,
    PathParams(MethodPath { id, cm }): PathParams<MethodPath>,
) -> Result<StatusCode, ApiError> {
    let user = changeable(&state, &caller, id).await?;
    let store = state.store.clone();
    to_completion(async move {
        store
            .retire_contact_method(user.id, cm, Timestamp::now())
            .await
    })
    .await
    .map_err(|e| {
        ApiError::from_store(e, || format!("contact method {cm} not found for this user"))
    })?;
    tracing::info!(user_id = %id, contact_method_id = %cm, by = %caller.name, "contact method retired");
    Ok(StatusCode::NO_CONTENT)
}

/// The path of one rule.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
pub struct RulePath {
    /// The user.
    id: Uuid,
    /// The rule.
    rule: Uuid,
}

/// Retire a notification rule
#[utoipa::path(
    delete, path = "/users/{id}/notification-rules/{rule}", tag = "users", params(RulePath),
    responses(
        (status = 204, description = "Retired: kept, but no longer listed or used"),
        (status = 403), (status = 404),
    ),
    security(("bearer" = []))
)]
pub async fn retire_rule(
    State(state): State<AppState>,
    Authorized(caller, _): Authorized<Viewer>,
    PathParams(RulePath { id, rule }): PathParams<RulePath>,
) -> Result<StatusCode, ApiError> {
    let user = changeable(&state, &caller, id).await?;
    let store = state.store.clone();
    to_completion(async move { store.retire_rule(user.id, rule, Timestamp::now()).await })
        .await
        .map_err(|e| {
            ApiError::from_store(e, || {
                format!("notification rule {rule} not found for this user")
            })
        })?;
    tracing::info!(user_id = %id, rule_id = %rule, by = %caller.name, "notification rule retired");
    Ok(StatusCode::NO_CONTENT)
}
