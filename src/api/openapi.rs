//! The OpenAPI 3.1 document of every public endpoint, served at
//! `GET /openapi.json` and explored at `GET /docs` (see [`super::docs`]).
//!
//! It is generated from the code: each resource module puts a
//! `#[utoipa::path]` on its handlers and lists them in its `Api` struct
//! beside its `routes()`; [`document`] merges those parts, adds the security
//! schemes and the shared error schema. The answers' shapes are in
//! [`super::schemas`]. `tests/openapi.rs` fails when a route is registered
//! without being documented (or documented without being registered), when
//! the document is not valid OpenAPI 3.1, and when a real answer does not
//! match its documented schema.
//!
//! Documenting a new endpoint:
//! 1. put `#[utoipa::path(method, path = "…", tag = "…", security(…),
//!    params(…), request_body = …, responses(…))]` on its handler, with a
//!    `///` summary (errors: `body = crate::api::schemas::ErrorBody`);
//! 2. add the handler to the `paths(…)` of its module's `Api` struct (a new
//!    module gets its own `Api` and a line in [`document`]);
//! 3. describe a new answer shape in [`super::schemas`] (or derive
//!    `ToSchema` on the request type);
//! 4. run `cargo nextest run -p herald --test openapi`.

use std::sync::LazyLock;

use actix_web::http::header::{CACHE_CONTROL, CONTENT_TYPE};
use actix_web::{web, HttpResponse};
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::OpenApi as Document;
use utoipa::{Modify, OpenApi};

use super::schemas::{ErrorBody, StreamEvent};
use super::{admin, dashboard, docs, ops, v1};

/// The security scheme of tenant API calls (`Authorization: Bearer <api key>`).
pub const TENANT_KEY: &str = "tenant_key";
/// The WebSocket's alternative: `?access_token=<api key>`.
pub const TENANT_KEY_QUERY: &str = "tenant_key_query";
/// The security scheme of `/v1/admin/*` (`Authorization: Bearer <admin.token>`).
pub const ADMIN_TOKEN: &str = "admin_token";

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Herald API",
        description = "Send SMS, WhatsApp messages and voice calls through one API, follow each \
to a final state, and hear about every step by signed webhook and live WebSocket.\n\n\
Every error is JSON: `{\"error\":{\"code\":\"…\",\"message\":\"…\",\"field\":\"…\"}}` \
(schema `ErrorBody`). Every answer carries `x-request-id`.",
        license(name = "Apache-2.0", identifier = "Apache-2.0"),
    ),
    components(schemas(ErrorBody, StreamEvent)),
    modifiers(&SecuritySchemes),
    tags(
        (name = "messages", description = "Send messages and follow them"),
        (name = "events", description = "The tenant's status event log"),
        (name = "stream", description = "Status events live over WebSocket"),
        (name = "webhooks", description = "Webhook endpoints, replays and the callback secret"),
        (name = "callbacks", description = "Receipts from HTTP carriers (no API key: signed by the carrier)"),
        (name = "ops", description = "Health, readiness and Prometheus metrics"),
        (name = "admin", description = "The operator's API (admin token)"),
        (name = "docs", description = "This document and its explorer"),
        (name = "dashboard", description = "The operator's dashboard (served by Herald, no build step)"),
    )
)]
struct Base;

/// Adds the bearer schemes Herald checks.
struct SecuritySchemes;

impl Modify for SecuritySchemes {
    fn modify(&self, openapi: &mut Document) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            TENANT_KEY,
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "A tenant's API key (`herald tenant create` prints it once): \
                         `Authorization: Bearer <api key>`. Missing or wrong: 401 `unauthorized`.",
                    ))
                    .build(),
            ),
        );
        components.add_security_scheme(
            TENANT_KEY_QUERY,
            SecurityScheme::ApiKey(ApiKey::Query(ApiKeyValue::with_description(
                "access_token",
                "The tenant's API key as a query parameter, for WebSocket clients that \
                 cannot set headers (`GET /v1/stream` only).",
            ))),
        );
        components.add_security_scheme(
            ADMIN_TOKEN,
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "The operator's `admin.token`: `Authorization: Bearer <admin token>`. \
                         Wrong: 401; the admin API is off (403 `admin_disabled`) while the \
                         token is empty.",
                    ))
                    .build(),
            ),
        );
    }
}

/// The whole document: every resource's part, merged in the order the
/// router configures them.
pub fn document() -> Document {
    let mut doc = Base::openapi();
    doc.info.version = env!("CARGO_PKG_VERSION").to_owned();
    for part in [
        v1::messages::Api::openapi(),
        v1::events::Api::openapi(),
        v1::stream::Api::openapi(),
        v1::webhooks::Api::openapi(),
        v1::callbacks::Api::openapi(),
        ops::Api::openapi(),
        admin::Api::openapi(),
        dashboard::Api::openapi(),
        Api::openapi(),
        docs::Api::openapi(),
    ] {
        doc.merge(part);
    }
    doc
}

/// The document as served, rendered once.
static JSON: LazyLock<String> = LazyLock::new(|| {
    document()
        .to_pretty_json()
        .expect("the OpenAPI document serialises")
});

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/openapi.json")
            .route(web::get().to(openapi_json))
            .default_service(web::to(super::method_not_allowed)),
    );
}

/// The parts of this module's own document.
#[derive(OpenApi)]
#[openapi(paths(openapi_json))]
pub struct Api;

/// This OpenAPI 3.1 document.
#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = "docs",
    responses((status = 200, description = "The OpenAPI 3.1 document of this API",
        content_type = "application/json", body = serde_json::Value))
)]
async fn openapi_json() -> HttpResponse {
    HttpResponse::Ok()
        .insert_header((CONTENT_TYPE, "application/json"))
        .insert_header((CACHE_CONTROL, "no-cache"))
        .body(JSON.as_str())
}
