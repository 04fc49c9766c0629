//! `/v1/webhooks`: a tenant's webhook endpoints (`POST`/`GET`/`DELETE
//! /v1/webhooks/endpoints`), one endpoint with its recent attempts and
//! notices (`GET /{id}`), re-sending events (`POST /{id}/replay?since=`),
//! and the secret that signs deliveries to messages' `callback_url`.
//!
//! An endpoint's secret (`whsec_…`) is in the creation answer only; it is
//! stored sealed with the server key and never shown again.

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::api::auth::Authenticated;
use crate::api::error::ApiError;
use crate::api::{from_json, read_json, AppState};
use crate::message::MessageStatus;
use crate::store::webhooks::{AttemptRow, DispatchEvent, EndpointRow, EndpointTarget, Since};
use crate::webhooks::seal::{display_secret, new_secret, Sealer};
use crate::webhooks::{dispatcher, target, EndpointId};

/// Longest endpoint description.
pub const MAX_DESCRIPTION: usize = 200;
/// Most endpoints per tenant.
pub const MAX_ENDPOINTS: usize = 20;

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/v1/webhooks/endpoints")
            .route(web::post().to(create))
            .route(web::get().to(list))
            .default_service(web::to(crate::api::method_not_allowed)),
    )
    .service(
        web::resource("/v1/webhooks/endpoints/{id}")
            .route(web::get().to(show))
            .route(web::delete().to(delete))
            .default_service(web::to(crate::api::method_not_allowed)),
    )
    .service(
        web::resource("/v1/webhooks/endpoints/{id}/replay")
            .route(web::post().to(replay))
            .default_service(web::to(crate::api::method_not_allowed)),
    )
    .service(
        web::resource("/v1/webhooks/callback-secret")
            .route(web::get().to(callback_secret))
            .default_service(web::to(crate::api::method_not_allowed)),
    );
}

/// The parts of the OpenAPI document (`api::openapi`) for this module.
#[derive(utoipa::OpenApi)]
#[openapi(paths(create, list, show, delete, replay, callback_secret))]
pub struct Api;

/// A new webhook endpoint.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"url": "https://example.com/herald/webhooks", "description": "orders service", "statuses": ["sent", "delivered", "undelivered", "failed"]}))]
struct CreateEndpoint {
    /// An absolute http(s) URL Herald may reach.
    url: String,
    /// At most 200 characters.
    description: Option<String>,
    /// Only these message statuses are delivered to the endpoint (absent or
    /// null: every status). Each one of Herald's statuses, at least one.
    #[schema(value_type = Option<Vec<MessageStatus>>)]
    statuses: Option<Vec<String>>,
}

/// `statuses` checked: known, not empty, no repeats (sorted).
fn endpoint_statuses(raw: Option<Vec<String>>) -> Result<Option<Vec<String>>, ApiError> {
    let Some(raw) = raw else { return Ok(None) };
    if raw.is_empty() {
        return Err(ApiError::invalid(
            "invalid_value",
            "statuses",
            "statuses lists at least one status (leave it out for every status)",
        ));
    }
    let mut out = Vec::with_capacity(raw.len());
    for (i, s) in raw.into_iter().enumerate() {
        if !MessageStatus::ALL.iter().any(|k| k.as_str() == s) {
            let known: Vec<&str> = MessageStatus::ALL.iter().map(|k| k.as_str()).collect();
            return Err(ApiError::invalid(
                "invalid_value",
                &format!("statuses[{i}]"),
                format!("unknown status {s:?}; one of {}", known.join(", ")),
            ));
        }
        out.push(s);
    }
    out.sort();
    out.dedup();
    Ok(Some(out))
}

fn endpoint_id(raw: &str) -> Result<EndpointId, ApiError> {
    EndpointId::parse(raw).ok_or_else(|| ApiError::not_found("webhook endpoint"))
}

fn sealer(state: &AppState) -> Result<Sealer, ApiError> {
    Sealer::from_config(&state.config.webhooks).map_err(|e| {
        tracing::error!(error = %e, "webhook sealer");
        ApiError::internal()
    })
}

fn endpoint_view(e: &EndpointRow) -> Value {
    json!({
        "id": e.id,
        "url": e.url,
        "description": e.description,
        "enabled": e.enabled,
        "disabled_reason": e.disabled_reason,
        "disabled_at": e.disabled_at,
        "failing_since": e.failing_since,
        "created_at": e.created_at,
        "statuses": e.statuses,
    })
}

/// The JSON shape of one webhook attempt (also on `GET /v1/messages/{id}`).
pub fn attempt_view(a: &AttemptRow) -> Value {
    json!({
        "type": a.event_type,
        "webhook_id": a.webhook_id,
        "cursor": a.event_cursor,
        "message_id": a.message_id,
        "endpoint_id": a.endpoint_id,
        "url": a.url,
        "attempt": a.attempt,
        "outcome": a.outcome,
        "status_code": a.status_code,
        "latency_ms": a.latency_ms,
        "error": a.error,
        "next_try_at": a.next_try_at,
        "at": a.created_at,
    })
}

/// Add a webhook endpoint; its signing secret is in this answer only.
#[utoipa::path(
    post,
    path = "/v1/webhooks/endpoints",
    tag = "webhooks",
    operation_id = "create_webhook_endpoint",
    security(("tenant_key" = [])),
    request_body(content = CreateEndpoint, content_type = "application/json"),
    responses(
        (status = 201, description = "Created", body = crate::api::schemas::WebhookEndpointCreated,
            headers(("Location" = String, description = "`/v1/webhooks/endpoints/{id}`"))),
        (status = 400, description = "`invalid_json`", body = crate::api::schemas::ErrorBody),
        (status = 401, description = "`unauthorized`", body = crate::api::schemas::ErrorBody),
        (status = 413, description = "`payload_too_large`", body = crate::api::schemas::ErrorBody),
        (status = 415, description = "`unsupported_media_type`", body = crate::api::schemas::ErrorBody),
        (status = 422, description = "`invalid_url`, `invalid_value`, `too_many_endpoints`, `missing_field`, `unknown_field`", body = crate::api::schemas::ErrorBody),
        (status = 503, description = "`service_unavailable`", body = crate::api::schemas::ErrorBody),
    )
)]
async fn create(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
    Authenticated(tenant): Authenticated,
) -> Result<HttpResponse, ApiError> {
    let raw = read_json(&req, payload, state.config.http.max_body_bytes).await?;
    let body: CreateEndpoint = from_json(raw)?;
    let statuses = endpoint_statuses(body.statuses)?;
    if body
        .description
        .as_ref()
        .is_some_and(|d| d.chars().count() > MAX_DESCRIPTION)
    {
        return Err(ApiError::invalid(
            "invalid_value",
            "description",
            format!("description is at most {MAX_DESCRIPTION} characters"),
        ));
    }
    let url = target::check(body.url.trim(), state.config.webhooks.allow_private)
        .await
        .map_err(|e| ApiError::invalid("invalid_url", "url", format!("url {e}")))?;
    if state.store.list_endpoints(&tenant.id).await?.len() >= MAX_ENDPOINTS {
        return Err(ApiError::invalid(
            "too_many_endpoints",
            "url",
            format!("a tenant has at most {MAX_ENDPOINTS} webhook endpoints"),
        ));
    }
    let secret = new_secret();
    let sealed = sealer(&state)?.seal(&secret);
    let id = EndpointId::generate();
    let row = state
        .store
        .create_endpoint(
            &tenant.id,
            &id,
            url.as_str(),
            body.description.as_deref(),
            &sealed,
            statuses.as_deref(),
        )
        .await?;
    let mut v = endpoint_view(&row);
    v["secret"] = json!(display_secret(&secret));
    Ok(HttpResponse::Created()
        .insert_header(("location", format!("/v1/webhooks/endpoints/{id}")))
        .json(v))
}

/// The tenant's webhook endpoints.
#[utoipa::path(
    get,
    path = "/v1/webhooks/endpoints",
    tag = "webhooks",
    operation_id = "list_webhook_endpoints",
    security(("tenant_key" = [])),
    responses(
        (status = 200, description = "Every endpoint", body = crate::api::schemas::WebhookEndpointList),
        (status = 401, description = "`unauthorized`", body = crate::api::schemas::ErrorBody),
        (status = 503, description = "`service_unavailable`", body = crate::api::schemas::ErrorBody),
    )
)]
async fn list(
    state: web::Data<AppState>,
    Authenticated(tenant): Authenticated,
) -> Result<HttpResponse, ApiError> {
    let rows = state.store.list_endpoints(&tenant.id).await?;
    Ok(HttpResponse::Ok().json(json!({
        "data": rows.iter().map(endpoint_view).collect::<Vec<_>>(),
    })))
}

/// One endpoint with its recent attempts and notices.
#[utoipa::path(
    get,
    path = "/v1/webhooks/endpoints/{id}",
    tag = "webhooks",
    operation_id = "get_webhook_endpoint",
    security(("tenant_key" = [])),
    params(("id" = String, Path, description = "The endpoint id (`whe_…`)")),
    responses(
        (status = 200, description = "The endpoint", body = crate::api::schemas::WebhookEndpointDetail),
        (status = 401, description = "`unauthorized`", body = crate::api::schemas::ErrorBody),
        (status = 404, description = "`not_found`", body = crate::api::schemas::ErrorBody),
        (status = 503, description = "`service_unavailable`", body = crate::api::schemas::ErrorBody),
    )
)]
async fn show(
    path: web::Path<String>,
    state: web::Data<AppState>,
    Authenticated(tenant): Authenticated,
) -> Result<HttpResponse, ApiError> {
    let row = state
        .store
        .endpoint(&tenant.id, &endpoint_id(&path)?)
        .await?
        .ok_or_else(|| ApiError::not_found("webhook endpoint"))?;
    let attempts = state
        .store
        .endpoint_attempts(&tenant.id, &row.id, 1000)
        .await?;
    let mut v = endpoint_view(&row);
    v["attempts"] = Value::Array(attempts.iter().map(attempt_view).collect());
    Ok(HttpResponse::Ok().json(v))
}

/// Remove an endpoint.
#[utoipa::path(
    delete,
    path = "/v1/webhooks/endpoints/{id}",
    tag = "webhooks",
    operation_id = "delete_webhook_endpoint",
    security(("tenant_key" = [])),
    params(("id" = String, Path, description = "The endpoint id (`whe_…`)")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 401, description = "`unauthorized`", body = crate::api::schemas::ErrorBody),
        (status = 404, description = "`not_found`", body = crate::api::schemas::ErrorBody),
        (status = 503, description = "`service_unavailable`", body = crate::api::schemas::ErrorBody),
    )
)]
async fn delete(
    path: web::Path<String>,
    state: web::Data<AppState>,
    Authenticated(tenant): Authenticated,
) -> Result<HttpResponse, ApiError> {
    if state
        .store
        .delete_endpoint(&tenant.id, &endpoint_id(&path)?)
        .await?
    {
        Ok(HttpResponse::NoContent().finish())
    } else {
        Err(ApiError::not_found("webhook endpoint"))
    }
}

fn parse_since(query: &str) -> Result<Since, ApiError> {
    let mut since = None;
    for (name, value) in url::form_urlencoded::parse(query.as_bytes()) {
        match name.as_ref() {
            "since" => {
                since = Some(if let Ok(cursor) = value.parse::<i64>() {
                    Since::Cursor(cursor.max(0))
                } else {
                    let at = DateTime::parse_from_rfc3339(&value).map_err(|_| {
                        ApiError::invalid_parameter(
                            "since",
                            "since must be an RFC 3339 time or a cursor",
                        )
                    })?;
                    Since::Time(at.with_timezone(&Utc))
                });
            }
            other => return Err(ApiError::unknown_parameter(other)),
        }
    }
    since.ok_or_else(|| ApiError::invalid_parameter("since", "since is required"))
}

/// Deliver again to this endpoint every event since a cursor or a time.
#[utoipa::path(
    post,
    path = "/v1/webhooks/endpoints/{id}/replay",
    tag = "webhooks",
    operation_id = "replay_webhook_endpoint",
    security(("tenant_key" = [])),
    params(
        ("id" = String, Path, description = "The endpoint id (`whe_…`)"),
        ("since" = String, Query, description = "A cursor, or an RFC 3339 time", example = "2026-11-23T00:00:00Z"),
    ),
    responses(
        (status = 202, description = "Deliveries queued", body = crate::api::schemas::ReplayQueued),
        (status = 400, description = "`invalid_parameter` (missing or bad `since`), `unknown_parameter`", body = crate::api::schemas::ErrorBody),
        (status = 401, description = "`unauthorized`", body = crate::api::schemas::ErrorBody),
        (status = 404, description = "`not_found`", body = crate::api::schemas::ErrorBody),
        (status = 409, description = "`endpoint_disabled`", body = crate::api::schemas::ErrorBody),
        (status = 503, description = "`service_unavailable` (PostgreSQL or RabbitMQ)", body = crate::api::schemas::ErrorBody),
    )
)]
async fn replay(
    req: HttpRequest,
    path: web::Path<String>,
    state: web::Data<AppState>,
    Authenticated(tenant): Authenticated,
) -> Result<HttpResponse, ApiError> {
    let since = parse_since(req.query_string())?;
    let row = state
        .store
        .endpoint(&tenant.id, &endpoint_id(&path)?)
        .await?
        .ok_or_else(|| ApiError::not_found("webhook endpoint"))?;
    if !row.enabled {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "endpoint_disabled",
            "this endpoint is disabled; create a new one",
        ));
    }
    let events: Vec<DispatchEvent> = state
        .store
        .replay_events(&tenant.id, since)
        .await?
        .into_iter()
        .map(|mut e| {
            e.callback_url = None;
            e
        })
        .collect();
    let target = EndpointTarget {
        id: row.id.clone(),
        tenant_id: row.tenant_id.clone(),
        url: row.url.clone(),
        statuses: row.statuses.clone(),
    };
    let tasks = dispatcher::tasks(&events, std::slice::from_ref(&target));
    let queue = state.broker.topology().webhooks_queue();
    let pack = dispatcher::pack_size(state.config.webhooks.endpoint_concurrency);
    dispatcher::publish(&state.broker, &tasks, &queue, pack)
        .await
        .map_err(|e| {
            tracing::warn!(error = %e, "replay publish");
            ApiError::unavailable("the message broker")
        })?;
    Ok(HttpResponse::Accepted().json(json!({ "replayed": tasks.len() })))
}

/// The secret that signs deliveries to messages' `callback_url`.
#[utoipa::path(
    get,
    path = "/v1/webhooks/callback-secret",
    tag = "webhooks",
    operation_id = "get_callback_secret",
    security(("tenant_key" = [])),
    responses(
        (status = 200, description = "The tenant's callback secret", body = crate::api::schemas::Secret),
        (status = 401, description = "`unauthorized`", body = crate::api::schemas::ErrorBody),
    )
)]
async fn callback_secret(
    state: web::Data<AppState>,
    Authenticated(tenant): Authenticated,
) -> Result<HttpResponse, ApiError> {
    let secret = sealer(&state)?.callback_secret(tenant.id.as_str());
    Ok(HttpResponse::Ok().json(json!({ "secret": display_secret(&secret) })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_is_a_cursor_or_a_time() {
        assert_eq!(parse_since("since=42").unwrap(), Since::Cursor(42));
        assert!(matches!(
            parse_since("since=2026-11-23T00:00:00Z").unwrap(),
            Since::Time(_)
        ));
        assert_eq!(parse_since("since=soon").unwrap_err().status, 400);
        assert_eq!(parse_since("").unwrap_err().status, 400);
    }
}
