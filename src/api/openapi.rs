//! The OpenAPI 3 document of the whole API, generated from the handlers' annotations.

use axum::Json;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::auth::{Authorized, Viewer};
use super::{
    alertmanager, contacts, enqueue, health, incidents, links, messages, metrics, notifications,
    policies, schedules, services, tokens, twilio, users,
};
use crate::domain::contact::humantime_text;
use crate::domain::service::NAME_PATTERN;

#[derive(OpenApi)]
#[openapi(
    info(title = "Klaxon", description = "Incident management and escalation engine"),
    paths(
        health::health,
        messages::submit,
        enqueue::enqueue,
        alertmanager::receive,
        incidents::list,
        incidents::get,
        incidents::escalate,
        incidents::acknowledge,
        incidents::resolve,
        incidents::cancel,
        incidents::escalations,
        incidents::timeline,
        tokens::create,
        tokens::list,
        tokens::revoke,
        users::create,
        users::list,
        users::get,
        users::update,
        users::create_token,
        users::me,
        contacts::add_method,
        contacts::methods,
        contacts::test,
        contacts::add_rule,
        contacts::rules,
        contacts::retire_method,
        contacts::retire_rule,
        notifications::of_incident,
        notifications::inbox,
        notifications::read,
        services::create,
        services::list,
        services::get,
        services::update,
        services::create_key,
        services::keys,
        services::revoke_key,
        services::create_heartbeat,
        services::heartbeats,
        services::change_heartbeat,
        services::retire_heartbeat,
        services::ping,
        policies::create,
        policies::list,
        policies::get,
        policies::replace,
        schedules::create,
        schedules::list,
        schedules::get,
        schedules::update,
        schedules::add_rotation,
        schedules::rotations,
        schedules::replace_rotation,
        schedules::retire_rotation,
        schedules::add_override,
        schedules::overrides,
        schedules::retire_override,
        schedules::on_call,
        schedules::shifts,
        schedules::gaps,
        schedules::calendar,
        links::confirm,
        links::act,
        twilio::inbound_sms,
        twilio::status,
        twilio::voice,
        twilio::gather,
        twilio::voice_test,
        metrics::render,
        document,
    ),
    components(schemas(crate::api::error::ErrorBody)),
    modifiers(&BearerAuth),
)]
pub struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
        // Feeds that calendar clients fetch take the token in the query (`FeedAuthorized`).
        components.add_security_scheme(
            "token",
            SecurityScheme::ApiKey(ApiKey::Query(ApiKeyValue::new(
                super::auth::FEED_TOKEN_PARAMETER,
            ))),
        );
        for item in openapi.paths.paths.values_mut() {
            let operations = [
                &mut item.get,
                &mut item.post,
                &mut item.patch,
                &mut item.put,
                &mut item.delete,
            ];
            for operation in operations.into_iter().flatten() {
                document_errors(operation);
                name_uniquely(operation);
            }
        }
        for (schema, property, pattern) in PATTERNS {
            if let Some(field) = property_mut(components, schema, property) {
                field.pattern = Some((*pattern).to_owned());
            }
        }
    }
}

/// Fields whose text the API checks by a rule the derived schema cannot state: humantime
/// durations and names. With the rule in the document, clients and fuzzers see what is valid,
/// and answers are checked against it too. utoipa takes only literal patterns, so they are
/// added here, each from the constant beside the code that checks it.
const PATTERNS: [(&str, &str, &str); 17] = [
    ("LevelBody", "delay", humantime_text::PATTERN),
    ("NewRuleRequest", "delay", humantime_text::PATTERN),
    ("NewRuleRequest", "repeat_every", humantime_text::PATTERN),
    ("NotificationRule", "delay", humantime_text::PATTERN),
    ("NotificationRule", "repeat_every", humantime_text::PATTERN),
    ("NewHeartbeatRequest", "interval", humantime_text::PATTERN),
    (
        "HeartbeatChangeRequest",
        "interval",
        humantime_text::PATTERN,
    ),
    ("Heartbeat", "interval", humantime_text::PATTERN),
    ("NewServiceRequest", "name", NAME_PATTERN),
    ("ServicePatch", "name", NAME_PATTERN),
    ("NewKeyRequest", "name", NAME_PATTERN),
    ("NewHeartbeatRequest", "name", NAME_PATTERN),
    ("HeartbeatChangeRequest", "name", NAME_PATTERN),
    ("PolicyRequest", "name", NAME_PATTERN),
    ("ScheduleRequest", "name", NAME_PATTERN),
    ("SchedulePatch", "name", NAME_PATTERN),
    ("RotationRequest", "name", NAME_PATTERN),
];

/// A property of a component schema, if both exist as written.
fn property_mut<'a>(
    components: &'a mut utoipa::openapi::Components,
    schema: &str,
    property: &str,
) -> Option<&'a mut utoipa::openapi::schema::Object> {
    use utoipa::openapi::{schema::Schema, RefOr};
    let RefOr::T(Schema::Object(object)) = components.schemas.get_mut(schema)? else {
        return None;
    };
    match object.properties.get_mut(property)? {
        RefOr::T(Schema::Object(field)) => Some(field),
        _ => None,
    }
}

/// The error answers every operation can give (SPEC §4), added once here rather than on each
/// handler: 400 for bad input or two `Authorization` headers, 401/403 where a token is needed,
/// 413/415 where there is a body, 503 when the database is unreachable, 405 for a method the
/// path does not take (the router answers it for every path).
fn document_errors(operation: &mut utoipa::openapi::path::Operation) {
    use utoipa::openapi::{ContentBuilder, Ref, ResponseBuilder};
    let secured = operation.security.as_ref().is_some_and(|s| !s.is_empty());
    let has_input = operation.request_body.is_some()
        || operation.parameters.as_ref().is_some_and(|p| !p.is_empty());
    let mut codes = vec![
        ("503", "The database is unavailable"),
        ("405", "The path does not take this method"),
    ];
    if secured {
        codes.push(("401", "Missing, invalid or revoked token"));
        codes.push(("403", "The token's role does not allow this"));
    }
    let bad_request = match (has_input, secured) {
        (true, true) => {
            Some("Malformed JSON, an invalid field or id, or two `Authorization` headers")
        }
        (true, false) => Some("Malformed JSON, an invalid field or a malformed id"),
        (false, true) => Some("Two `Authorization` headers"),
        (false, false) => None,
    };
    if let Some(description) = bad_request {
        codes.push(("400", description));
    }
    if operation.request_body.is_some() {
        codes.push(("413", "The body is too large"));
        codes.push(("415", "The body is not JSON"));
    }
    for (code, description) in codes {
        let response = ResponseBuilder::new()
            .description(description)
            .content(
                "application/json",
                ContentBuilder::new()
                    .schema(Some(Ref::from_schema_name("ErrorBody")))
                    .build(),
            )
            .build();
        operation
            .responses
            .responses
            .entry(code.to_owned())
            .or_insert(response.into());
    }
}

/// Prefixes an operation's id (its handler's name, such as `list`) with its tag, so that every
/// id is unique across the document (`incidents_list`, `tokens_list`).
fn name_uniquely(operation: &mut utoipa::openapi::path::Operation) {
    let tag = operation
        .tags
        .as_ref()
        .and_then(|tags| tags.first())
        .cloned();
    if let (Some(tag), Some(id)) = (tag, operation.operation_id.as_mut()) {
        if !id.starts_with(&format!("{tag}_")) {
            *id = format!("{tag}_{id}");
        }
    }
}

/// This OpenAPI document
#[utoipa::path(
    get, path = "/openapi.json", tag = "meta",
    responses((status = 200, description = "This document")),
    security(("bearer" = []))
)]
pub async fn document(_: Authorized<Viewer>) -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::user;

    /// Every operation that needs a token documents the 400 of two `Authorization` headers, and
    /// the answer that shows a secret documents that it must not be stored.
    #[test]
    fn documented_edges_match_the_enforced_ones() {
        let doc = serde_json::to_value(ApiDoc::openapi()).unwrap();
        let operation = |path: &str, method: &str| doc["paths"][path][method].clone();
        let listed = operation("/tokens", "get");
        assert!(listed["responses"]["400"]["description"]
            .as_str()
            .unwrap()
            .contains("Authorization"));
        assert!(operation("/health", "get")["responses"]["400"].is_null());
        for path in ["/tokens", "/users/{id}/tokens"] {
            let created = &operation(path, "post")["responses"]["201"];
            assert!(created["headers"]["Cache-Control"].is_object(), "{created}");
        }
    }

    /// Every operation has a unique id and a summary, and query parameters are in the query.
    #[test]
    fn operations_are_named_summarised_and_their_parameters_placed() {
        let doc = serde_json::to_value(ApiDoc::openapi()).unwrap();
        let mut ids = std::collections::HashSet::new();
        for (path, item) in doc["paths"].as_object().unwrap() {
            for (method, operation) in item.as_object().unwrap() {
                let id = operation["operationId"].as_str().unwrap();
                assert!(ids.insert(id.to_owned()), "{id} twice");
                assert!(
                    operation["summary"].as_str().is_some_and(|s| !s.is_empty()),
                    "{method} {path} has no summary"
                );
                assert!(operation["responses"]["405"].is_object(), "{method} {path}");
                for parameter in operation["parameters"].as_array().into_iter().flatten() {
                    let name = parameter["name"].as_str().unwrap();
                    if parameter["in"] == "path" {
                        assert!(
                            path.contains(&format!("{{{name}}}")),
                            "{method} {path} {name}"
                        );
                    }
                }
            }
        }
        let list = &doc["paths"]["/incidents"]["get"]["parameters"];
        let limit = list
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == "limit")
            .unwrap();
        assert_eq!(limit["in"], "query");
        assert_eq!(limit["required"], false);
        assert_eq!(limit["schema"]["minimum"], 1);
        assert_eq!(limit["schema"]["maximum"], 200);
    }

    /// The document states the limits the handlers enforce.
    #[test]
    fn documented_limits_match_the_enforced_ones() {
        let doc = serde_json::to_value(ApiDoc::openapi()).unwrap();
        let schemas = &doc["components"]["schemas"];
        let max =
            |schema: &str, field: &str| schemas[schema]["properties"][field]["maxLength"].clone();
        assert_eq!(max("MessageRequest", "text"), messages::MAX_TEXT_CHARS);
        assert_eq!(max("MessageRequest", "source"), messages::MAX_LABEL_CHARS);
        assert_eq!(
            max("MessageRequest", "dedup_key"),
            messages::MAX_LABEL_CHARS
        );
        assert_eq!(
            max("CreateTokenRequest", "name"),
            crate::domain::token::MAX_TOKEN_NAME_CHARS
        );
        assert_eq!(
            max("CreateUserTokenRequest", "name"),
            crate::domain::token::MAX_TOKEN_NAME_CHARS
        );
        for schema in ["CreateUserRequest", "UserPatch"] {
            assert_eq!(max(schema, "name"), user::MAX_NAME_CHARS);
            assert_eq!(max(schema, "email"), user::MAX_EMAIL_CHARS);
        }
        assert_eq!(max("CreateUserRequest", "handle"), user::MAX_HANDLE_CHARS);
        assert_eq!(max("NoteRequest", "note"), incidents::MAX_NOTE_CHARS);
        assert_eq!(
            max("ResolveRequest", "resolution_note"),
            incidents::MAX_NOTE_CHARS
        );
    }

    /// Every field of [`PATTERNS`] exists and carries its pattern, and each pattern holds what
    /// the API writes and only what it reads.
    #[test]
    fn documented_patterns_match_what_the_api_reads_and_writes() {
        let doc = serde_json::to_value(ApiDoc::openapi()).unwrap();
        for (schema, property, pattern) in PATTERNS {
            let field = &doc["components"]["schemas"][schema]["properties"][property];
            assert_eq!(field["pattern"], pattern, "{schema}.{property}");
        }

        let duration = regex_lite::Regex::new(humantime_text::PATTERN).unwrap();
        // Up to humantime's years (365.25 days) and beyond.
        for millis in [
            0,
            1,
            100,
            999,
            1_000,
            61_000,
            5_400_000,
            86_400_000,
            90_061_001,
            31_557_600_000,
            94_672_800_000,
        ] {
            let text = humantime_text::format(std::time::Duration::from_millis(millis));
            assert!(
                duration.is_match(&text),
                "{text:?} is written but not documented"
            );
        }
        for text in [
            "0s",
            "300ms",
            "5m",
            "1h 30m",
            "1day",
            "2weeks 3days 4h",
            "1year 2months",
        ] {
            assert!(duration.is_match(text), "{text:?}");
            assert!(
                humantime_text::parse(text).is_ok(),
                "{text:?} is documented but refused"
            );
        }
        for text in ["", "5", "m", "5 m", "1h  30m", "five minutes", "1h30m "] {
            assert!(!duration.is_match(text), "{text:?}");
        }

        let name = regex_lite::Regex::new(NAME_PATTERN).unwrap();
        for text in ["payments", "Payment API (EU) – primary", " padded ", "x"] {
            assert!(name.is_match(text), "{text:?}");
            assert!(
                crate::domain::service::check_name("name", text).is_ok(),
                "{text:?}"
            );
        }
        for text in ["", "   ", "tab\there", "line\nbreak", "\u{85}next"] {
            assert!(!name.is_match(text), "{text:?}");
            assert!(
                crate::domain::service::check_name("name", text).is_err(),
                "{text:?}"
            );
        }
    }
}
