//! The acknowledge and resolve links in messages (see `notify::links`): a `GET` shows a small
//! confirmation page and changes nothing (mail scanners and chat unfurlers fetch links on their
//! own); a `POST` to the same URL acts, once, as the recipient the message went to. Every answer
//! is a short HTML page a person can read on a phone, failures included.

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use uuid::Uuid;

use super::AppState;
use crate::domain::{Action, Incident, Notification, Timestamp};
use crate::notify::escape_html as escape;
use crate::notify::links::{LinkError, LinkSigner, SignedLink, LINK_ACTIONS};
use crate::store::{StoreError, TransitionRequest};

/// The path of a link.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
pub struct LinkPath {
    /// The notification the link came in.
    id: String,
    /// `acknowledge` or `resolve`.
    action: String,
}

/// The query a link carries.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct LinkQuery {
    /// When it stops working, in Unix seconds.
    expires: Option<i64>,
    /// Its signature.
    sig: Option<String>,
}

/// A page: its status and what it says.
struct Page {
    status: StatusCode,
    title: String,
    body: String,
}

impl Page {
    fn new(status: StatusCode, title: impl Into<String>, body: impl Into<String>) -> Self {
        Self {
            status,
            title: title.into(),
            body: body.into(),
        }
    }

    fn refused(status: StatusCode, why: impl Into<String>) -> Self {
        Self::new(
            status,
            "This link does nothing",
            format!("<p>{}</p>", escape(&why.into())),
        )
    }
}

impl IntoResponse for Page {
    fn into_response(self) -> Response {
        let html = format!(
            "<!doctype html><html><head><meta charset=\"utf-8\">\
             <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
             <meta name=\"robots\" content=\"noindex\"><title>{title} · Klaxon</title></head>\
             <body style=\"font-family: sans-serif; max-width: 36em; margin: 2em auto; padding: 0 1em\">\
             <h1>{title}</h1>{body}</body></html>",
            title = escape(&self.title),
            body = self.body,
        );
        let mut response = (self.status, html).into_response();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/html; charset=utf-8"),
        );
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        headers.insert(
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        );
        response
    }
}

/// `GET /links/{notification_id}/{action}`: says what the link would do; changes nothing.
#[utoipa::path(
    get, path = "/links/{id}/{action}", tag = "links",
    params(LinkPath, LinkQuery),
    responses(
        (status = 200, description = "A confirmation page (HTML); nothing changes", content_type = "text/html"),
        (status = 403, description = "Tampered link (HTML)", content_type = "text/html"),
        (status = 410, description = "Expired link (HTML)", content_type = "text/html"),
        (status = 503, description = "Database unreachable (HTML)", content_type = "text/html"),
    )
)]
pub async fn confirm(
    State(state): State<AppState>,
    Path(LinkPath { id, action }): Path<LinkPath>,
    query: Result<Query<LinkQuery>, QueryRejection>,
) -> Response {
    let (link, notification, incident) = match checked(&state, &id, &action, query).await {
        Ok(found) => found,
        Err(page) => return page.into_response(),
    };
    let verb = action_label(link.action);
    let body = format!(
        "<p><strong>{severity}</strong> · {status}</p><p>{title}</p>\
         <form method=\"post\"><button type=\"submit\" style=\"font-size: 1.2em; padding: .5em 1em\">{verb} as {who}</button></form>\
         <p><small>Nothing happens until you press the button.</small></p>",
        severity = incident.severity.as_str().to_uppercase(),
        status = incident.status,
        title = escape(&incident.title),
        who = escape(&actor_of(&notification)),
    );
    Page::new(StatusCode::OK, format!("{verb} this incident?"), body).into_response()
}

/// `POST /links/{notification_id}/{action}`: acts, once, as the message's recipient.
#[utoipa::path(
    post, path = "/links/{id}/{action}", tag = "links",
    params(LinkPath, LinkQuery),
    responses(
        (status = 200, description = "Done (HTML)", content_type = "text/html"),
        (status = 403, description = "Tampered link (HTML)", content_type = "text/html"),
        (status = 409, description = "Used already, or not allowed in the incident's status (HTML)", content_type = "text/html"),
        (status = 410, description = "Expired link (HTML)", content_type = "text/html"),
        (status = 503, description = "Database unreachable (HTML)", content_type = "text/html"),
    )
)]
pub async fn act(
    State(state): State<AppState>,
    Path(LinkPath { id, action }): Path<LinkPath>,
    query: Result<Query<LinkQuery>, QueryRejection>,
) -> Response {
    let (link, notification, incident) = match checked(&state, &id, &action, query).await {
        Ok(found) => found,
        Err(page) => return page.into_response(),
    };
    let actor = actor_of(&notification);
    let request = TransitionRequest {
        incident_id: incident.id,
        action: link.action,
        actor: actor.clone(),
        note: Some("from a link in a notification".into()),
        at: Timestamp::now(),
        policy: state.policy.get(),
        link: Some(link.id()),
    };
    let outcome = state.apply(request).await;
    match outcome {
        Ok(outcome) => {
            tracing::info!(incident_id = %incident.id, action = %link.action, %actor, "incident transitioned from a link");
            let done = format!(
                "<p>{} is now <strong>{}</strong>, by {}.</p>",
                escape(&incident.title),
                outcome.incident.status,
                escape(&actor)
            );
            Page::new(
                StatusCode::OK,
                format!("{}: done", action_label(link.action)),
                done,
            )
            .into_response()
        }
        Err(StoreError::Duplicate(_)) => Page::refused(
            StatusCode::CONFLICT,
            "This link has been used already: it acts once.",
        )
        .into_response(),
        Err(StoreError::InvalidTransition(refused)) => Page::refused(
            StatusCode::CONFLICT,
            format!(
                "The incident is {} already, so it cannot be {}d now.",
                refused.status, refused.action
            ),
        )
        .into_response(),
        Err(error) => unavailable(error).into_response(),
    }
}

/// The link, its notification and its incident, once its signature and expiry hold.
async fn checked(
    state: &AppState,
    id: &str,
    action: &str,
    query: Result<Query<LinkQuery>, QueryRejection>,
) -> Result<(SignedLink, Notification, Incident), Page> {
    let tampered = || Page::refused(StatusCode::FORBIDDEN, LinkError::Tampered.to_string());
    // A query that does not parse is a link that was changed: the same page as a bad signature.
    let Ok(Query(query)) = query else {
        return Err(tampered());
    };
    let notification_id: Uuid = id.parse().map_err(|_| tampered())?;
    let action = LINK_ACTIONS
        .into_iter()
        .find(|known| known.as_str() == action)
        .ok_or_else(tampered)?;
    let (Some(expires), Some(signature)) = (query.expires, query.sig.clone()) else {
        return Err(tampered());
    };
    let link = SignedLink {
        notification_id,
        action,
        expires,
        signature,
    };
    let key = state.store.link_key().await.map_err(unavailable)?;
    let signer = LinkSigner::new(&key, "", std::time::Duration::ZERO);
    match signer.verify(&link, Timestamp::now()) {
        Ok(()) => {}
        Err(LinkError::Expired) => {
            return Err(Page::refused(
                StatusCode::GONE,
                "This link has expired. Open the incident in Klaxon to act on it.",
            ))
        }
        Err(LinkError::Tampered) => return Err(tampered()),
    }
    let notification =
        state
            .store
            .notification(notification_id)
            .await
            .map_err(|error| match error {
                StoreError::NotFound => tampered(),
                other => unavailable(other),
            })?;
    let incident = state
        .store
        .incident(notification.incident_id)
        .await
        .map_err(unavailable)?;
    Ok((link, notification, incident))
}

/// Who acts through a link: the user the message went to, or the webhook it was posted to.
fn actor_of(notification: &Notification) -> String {
    match notification.user_id {
        Some(_) => notification.recipient.clone(),
        None => format!("webhook:{}", notification.recipient),
    }
}

fn action_label(action: Action) -> &'static str {
    match action {
        Action::Acknowledge => "Acknowledge",
        Action::Resolve => "Resolve",
        Action::Escalate => "Escalate",
        Action::Cancel => "Cancel",
    }
}

fn unavailable(error: StoreError) -> Page {
    tracing::warn!(%error, "a link could not be served");
    Page::refused(
        StatusCode::SERVICE_UNAVAILABLE,
        "Klaxon cannot reach its database right now. Try again in a moment.",
    )
}
