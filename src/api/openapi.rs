//! The OpenAPI 3 document of the whole API, generated from the handlers' annotations.

use axum::Json;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::auth::{Authorized, Viewer};
use super::{health, incidents, messages, metrics, tokens};

#[derive(OpenApi)]
#[openapi(
    info(title = "Klaxon", description = "Incident management and escalation engine"),
    paths(
        health::health,
        messages::submit,
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
    }
}

#[utoipa::path(
    get, path = "/openapi.json", tag = "meta",
    responses((status = 200, description = "This document")),
    security(("bearer" = []))
)]
pub async fn document(_: Authorized<Viewer>) -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}
