//! `/v1/admin/*`: the operator's API, behind `Authorization: Bearer
//! <admin.token>` (disabled when the token is empty).
//!
//! - `GET /v1/admin/actors`: the live supervision tree (shards, routes,
//!   carrier connections with bound/breaker/rate/in-flight/restarts, and the
//!   HealthMonitor's restart counts).
//! - `POST /v1/admin/actors/{name}/crash`: make an actor panic, to watch
//!   supervision bring it back; only when `admin.chaos = true`.
//! - `POST /v1/admin/routing/reload`: read the carriers and routes files
//!   again and apply them (also done on SIGHUP).
//! - `GET /v1/admin/receipts/unmatched?older_than_seconds=&limit=`: receipts
//!   that matched no message for a long while (also the
//!   `herald_receipts_unmatched` gauge).
//! - `POST /v1/admin/carriers/{id}/pause|resume|drain`: the operator's hold
//!   on a carrier, on this node (see `herald_actors::root::CarrierAction`).
//! - `GET /v1/admin/webhooks`: every tenant's webhook endpoints with their
//!   failures over the last day.
//! - `POST /v1/admin/messages?tenant_id=`: send a test message as a tenant
//!   (the oldest one by default); the body is a `POST /v1/messages` body.
//!
//! With `admin.open = true` (development, loopback only) no token is needed.

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use chrono::SubsecRound;
use herald_actors::root::{CarrierAction, Control, ControlError, CrashActor, Snapshot};
use subtle::ConstantTimeEq;

use super::error::ApiError;
use super::AppState;

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/v1/admin/actors")
            .route(web::get().to(actors))
            .default_service(web::to(super::method_not_allowed)),
    )
    .service(
        web::resource("/v1/admin/actors/{name}/crash")
            .route(web::post().to(crash))
            .default_service(web::to(super::method_not_allowed)),
    )
    .service(
        web::resource("/v1/admin/routing/reload")
            .route(web::post().to(reload))
            .default_service(web::to(super::method_not_allowed)),
    )
    .service(
        web::resource("/v1/admin/receipts/unmatched")
            .route(web::get().to(unmatched))
            .default_service(web::to(super::method_not_allowed)),
    )
    .service(
        web::resource("/v1/admin/carriers/{id}/pause")
            .route(web::post().to(pause))
            .default_service(web::to(super::method_not_allowed)),
    )
    .service(
        web::resource("/v1/admin/carriers/{id}/resume")
            .route(web::post().to(resume))
            .default_service(web::to(super::method_not_allowed)),
    )
    .service(
        web::resource("/v1/admin/carriers/{id}/drain")
            .route(web::post().to(drain))
            .default_service(web::to(super::method_not_allowed)),
    )
    .service(
        web::resource("/v1/admin/webhooks")
            .route(web::get().to(webhooks))
            .default_service(web::to(super::method_not_allowed)),
    )
    .service(
        web::resource("/v1/admin/messages")
            .route(web::post().to(test_message))
            .default_service(web::to(super::method_not_allowed)),
    );
}

/// Pause a carrier on this node: its binds stay up and take nothing from its queue; routes prefer other carriers.
#[utoipa::path(
    post,
    path = "/v1/admin/carriers/{id}/pause",
    tag = "admin",
    security(("admin_token" = [])),
    params(("id" = String, Path, description = "The carrier's id", example = "smsc-kigali")),
    responses(
        (status = 200, description = "Paused", body = crate::api::schemas::CarrierControl),
        (status = 401, description = "Wrong admin token", body = crate::api::schemas::ErrorBody),
        (status = 403, description = "`admin_disabled`", body = crate::api::schemas::ErrorBody),
        (status = 404, description = "`not_found`: no such carrier", body = crate::api::schemas::ErrorBody),
        (status = 503, description = "`actors_unavailable`: no actor tree on this node", body = crate::api::schemas::ErrorBody),
    )
)]
async fn pause(
    req: HttpRequest,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    control(&req, &state, path.into_inner(), CarrierAction::Pause).await
}

/// Resume a paused or draining carrier on this node.
#[utoipa::path(
    post,
    path = "/v1/admin/carriers/{id}/resume",
    tag = "admin",
    security(("admin_token" = [])),
    params(("id" = String, Path, description = "The carrier's id", example = "smsc-kigali")),
    responses(
        (status = 200, description = "Taking work again", body = crate::api::schemas::CarrierControl),
        (status = 401, description = "Wrong admin token", body = crate::api::schemas::ErrorBody),
        (status = 403, description = "`admin_disabled`", body = crate::api::schemas::ErrorBody),
        (status = 404, description = "`not_found`: no such carrier", body = crate::api::schemas::ErrorBody),
        (status = 503, description = "`actors_unavailable`: no actor tree on this node", body = crate::api::schemas::ErrorBody),
    )
)]
async fn resume(
    req: HttpRequest,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    control(&req, &state, path.into_inner(), CarrierAction::Resume).await
}

/// Drain a carrier on this node: pause it and send what waits in its queue through its routes to their other usable carriers.
#[utoipa::path(
    post,
    path = "/v1/admin/carriers/{id}/drain",
    tag = "admin",
    security(("admin_token" = [])),
    params(("id" = String, Path, description = "The carrier's id", example = "smsc-kigali")),
    responses(
        (status = 200, description = "Paused, its queue being re-routed", body = crate::api::schemas::CarrierControl),
        (status = 401, description = "Wrong admin token", body = crate::api::schemas::ErrorBody),
        (status = 403, description = "`admin_disabled`", body = crate::api::schemas::ErrorBody),
        (status = 404, description = "`not_found`: no such carrier", body = crate::api::schemas::ErrorBody),
        (status = 409, description = "`no_alternative`: none of its routes has another usable carrier", body = crate::api::schemas::ErrorBody),
        (status = 503, description = "`actors_unavailable`: no actor tree on this node", body = crate::api::schemas::ErrorBody),
    )
)]
async fn drain(
    req: HttpRequest,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    control(&req, &state, path.into_inner(), CarrierAction::Drain).await
}

async fn control(
    req: &HttpRequest,
    state: &AppState,
    carrier: String,
    action: CarrierAction,
) -> Result<HttpResponse, ApiError> {
    authorize(req, state)?;
    let tree = state.tree.as_ref().ok_or_else(no_tree)?;
    let answer = tree
        .send(Control {
            carrier: carrier.clone(),
            action,
        })
        .await
        .map_err(|_| no_tree())?;
    match answer {
        Ok(()) => Ok(HttpResponse::Ok().json(serde_json::json!({
            "carrier": carrier,
            "paused": action != CarrierAction::Resume,
            "draining": action == CarrierAction::Drain,
        }))),
        Err(ControlError::UnknownCarrier(_)) => Err(ApiError::not_found("carrier")),
        Err(e @ ControlError::NoAlternative(_)) => Err(ApiError::new(
            StatusCode::CONFLICT,
            "no_alternative",
            e.to_string(),
        )),
    }
}

/// Every tenant's webhook endpoints with their failures over the last day.
#[utoipa::path(
    get,
    path = "/v1/admin/webhooks",
    tag = "admin",
    security(("admin_token" = [])),
    responses(
        (status = 200, description = "Most failing first", body = crate::api::schemas::EndpointHealthList),
        (status = 400, description = "`unknown_parameter`", body = crate::api::schemas::ErrorBody),
        (status = 401, description = "Wrong admin token", body = crate::api::schemas::ErrorBody),
        (status = 403, description = "`admin_disabled`", body = crate::api::schemas::ErrorBody),
        (status = 503, description = "PostgreSQL unavailable", body = crate::api::schemas::ErrorBody),
    )
)]
async fn webhooks(req: HttpRequest, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    authorize(&req, &state)?;
    if let Some(name) = url::form_urlencoded::parse(req.query_string().as_bytes())
        .map(|(name, _)| name)
        .next()
    {
        return Err(ApiError::unknown_parameter(&name));
    }
    let data = state.store.endpoint_health(100).await?;
    Ok(HttpResponse::Ok().json(serde_json::json!({ "data": data })))
}

/// Send a test message as a tenant, through the same validation and
/// acceptance as `POST /v1/messages` (no rate limit, no idempotency key).
#[utoipa::path(
    post,
    path = "/v1/admin/messages",
    tag = "admin",
    security(("admin_token" = [])),
    params(("tenant_id" = Option<String>, Query, description = "Send as this tenant (default: the oldest)")),
    request_body(
        content = super::v1::send::SendRequest,
        content_type = "application/json",
        example = json!({"channel": "sms", "to": "+250788123456", "from": "HERALD", "body": "Test from the dashboard"}),
    ),
    responses(
        (status = 202, description = "Accepted and stored", body = crate::api::schemas::Message),
        (status = 400, description = "`invalid_json`, `unknown_parameter`", body = crate::api::schemas::ErrorBody),
        (status = 401, description = "Wrong admin token", body = crate::api::schemas::ErrorBody),
        (status = 403, description = "`admin_disabled`, `channel_not_allowed`", body = crate::api::schemas::ErrorBody),
        (status = 413, description = "`payload_too_large`", body = crate::api::schemas::ErrorBody),
        (status = 415, description = "`unsupported_media_type`", body = crate::api::schemas::ErrorBody),
        (status = 422, description = "Invalid message (`field` names it), or `unknown_tenant`", body = crate::api::schemas::ErrorBody),
        (status = 503, description = "PostgreSQL unavailable", body = crate::api::schemas::ErrorBody),
    )
)]
async fn test_message(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    authorize(&req, &state)?;
    let mut tenant_id = None;
    for (name, value) in url::form_urlencoded::parse(req.query_string().as_bytes()) {
        match name.as_ref() {
            "tenant_id" => tenant_id = Some(value.into_owned()),
            other => return Err(ApiError::unknown_parameter(other)),
        }
    }
    let raw = super::read_json(&req, payload, state.config.http.max_body_bytes).await?;
    let send: super::v1::send::SendRequest = super::from_json(raw)?;
    let tenants = state.store.list_tenants().await?;
    let tenant = match &tenant_id {
        Some(id) => tenants.iter().find(|t| t.id.as_str() == id),
        None => tenants.first(),
    }
    .ok_or_else(|| {
        ApiError::invalid(
            "unknown_tenant",
            "tenant_id",
            "no such tenant (create one with `herald tenant create`)",
        )
    })?;
    let now = chrono::Utc::now().trunc_subsecs(6);
    let message = super::v1::send::validate(send, tenant, &state.config.limits, now)?;
    let channel = message.channel;
    state.ingest.accept(message.clone(), None).await?;
    crate::telemetry::message_accepted(channel.as_str());
    Ok(HttpResponse::Accepted().json(super::v1::messages::view(&message)))
}

/// The parts of the OpenAPI document (`api::openapi`) for this module.
#[derive(utoipa::OpenApi)]
#[openapi(paths(
    actors,
    crash,
    reload,
    unmatched,
    pause,
    resume,
    drain,
    webhooks,
    test_message
))]
pub struct Api;

/// Longest age `older_than_seconds` may ask for (a year).
const MAX_AGE_SECONDS: u64 = 366 * 24 * 3600;

/// Receipts that matched no message for a long while.
#[utoipa::path(
    get,
    path = "/v1/admin/receipts/unmatched",
    tag = "admin",
    security(("admin_token" = [])),
    params(
        ("older_than_seconds" = Option<u64>, Query, maximum = 31_622_400,
            description = "Parked at least this long (default `projector.unmatched_after_seconds`)"),
        ("limit" = Option<i64>, Query, minimum = 1, maximum = 1000, description = "At most this many (default 100)"),
    ),
    responses(
        (status = 200, description = "Oldest first", body = crate::api::schemas::UnmatchedReceipts),
        (status = 400, description = "`invalid_parameter`, `unknown_parameter`", body = crate::api::schemas::ErrorBody),
        (status = 401, description = "Wrong admin token", body = crate::api::schemas::ErrorBody),
        (status = 403, description = "`admin_disabled`", body = crate::api::schemas::ErrorBody),
        (status = 503, description = "PostgreSQL unavailable", body = crate::api::schemas::ErrorBody),
    )
)]
async fn unmatched(req: HttpRequest, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    authorize(&req, &state)?;
    let mut older_than = state.config.projector.unmatched_after_seconds;
    let mut limit: i64 = 100;
    for (name, value) in url::form_urlencoded::parse(req.query_string().as_bytes()) {
        match name.as_ref() {
            // At most a year: the database's interval arithmetic must not
            // overflow on whatever a client sends.
            "older_than_seconds" => {
                older_than = super::bounded("older_than_seconds", &value, 0..=MAX_AGE_SECONDS)?
            }
            "limit" => limit = super::bounded("limit", &value, 1..=1000)?,
            other => return Err(ApiError::unknown_parameter(other)),
        }
    }
    let parked = state
        .store
        .unmatched_receipt_list(std::time::Duration::from_secs(older_than), limit)
        .await?;
    let data: Vec<serde_json::Value> = parked
        .iter()
        .map(|p| {
            serde_json::json!({
                "event_id": p.event_id,
                "carrier": p.carrier,
                "carrier_ref": p.carrier_ref,
                "receipt": p.payload,
                "received_at": p.received_at,
            })
        })
        .collect();
    Ok(HttpResponse::Ok().json(serde_json::json!({ "data": data })))
}

/// Read the carriers and routes files again, apply them to the actor tree
/// and to the API (carrier callbacks).
pub async fn reload_routing(
    state: &AppState,
) -> Result<herald_actors::root::ReloadSummary, String> {
    let tree = state
        .tree
        .as_ref()
        .ok_or_else(|| "the actor tree is not running on this node".to_owned())?;
    let plan = herald_actors::config::Plan::load(
        &state.config.routing.carriers_file,
        &state.config.routing.routes_file,
    )
    .map_err(|e| e.to_string())?;
    let summary = tree
        .send(herald_actors::root::Reload(plan.clone()))
        .await
        .map_err(|_| "the actor tree is not running".to_owned())??;
    state.set_plan(plan);
    Ok(summary)
}

/// Read the carriers and routes files again and apply them (as SIGHUP does).
///
/// Unchanged routes and carriers keep running; new ones start; removed ones
/// retire. A file that does not load is refused and changes nothing.
#[utoipa::path(
    post,
    path = "/v1/admin/routing/reload",
    tag = "admin",
    security(("admin_token" = [])),
    responses(
        (status = 200, description = "Applied", body = crate::api::schemas::ReloadSummary),
        (status = 401, description = "Wrong admin token", body = crate::api::schemas::ErrorBody),
        (status = 403, description = "`admin_disabled`", body = crate::api::schemas::ErrorBody),
        (status = 422, description = "`invalid_routing`: the files do not load", body = crate::api::schemas::ErrorBody),
        (status = 503, description = "`actors_unavailable`: no actor tree on this node", body = crate::api::schemas::ErrorBody),
    )
)]
async fn reload(req: HttpRequest, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    authorize(&req, &state)?;
    state.tree.as_ref().ok_or_else(no_tree)?;
    match reload_routing(&state).await {
        Ok(summary) => Ok(HttpResponse::Ok().json(summary)),
        Err(e) => Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_routing",
            e,
        )),
    }
}

pub(crate) fn authorize(req: &HttpRequest, state: &AppState) -> Result<(), ApiError> {
    let given = req
        .headers()
        .get(actix_web::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    authorize_token(given, state)
}

/// Check an admin token given some other way (a WebSocket's query).
pub(crate) fn authorize_token(given: &str, state: &AppState) -> Result<(), ApiError> {
    if state.config.admin.open {
        return Ok(());
    }
    let token = state.config.admin.token.expose();
    if token.is_empty() {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "admin_disabled",
            "the admin API is disabled (admin.token is empty)",
        ));
    }
    if bool::from(given.as_bytes().ct_eq(token.as_bytes())) {
        Ok(())
    } else {
        Err(ApiError::unauthorized("invalid admin token"))
    }
}

fn no_tree() -> ApiError {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "actors_unavailable",
        "the actor tree is not running on this node",
    )
}

/// The live supervision tree of this node.
#[utoipa::path(
    get,
    path = "/v1/admin/actors",
    tag = "admin",
    security(("admin_token" = [])),
    responses(
        (status = 200, description = "Shards, routes, carrier binds and restarts", body = crate::api::schemas::ActorTree),
        (status = 401, description = "Wrong admin token", body = crate::api::schemas::ErrorBody),
        (status = 403, description = "`admin_disabled`", body = crate::api::schemas::ErrorBody),
        (status = 503, description = "`actors_unavailable`: no actor tree on this node", body = crate::api::schemas::ErrorBody),
    )
)]
async fn actors(req: HttpRequest, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    authorize(&req, &state)?;
    let tree = state.tree.as_ref().ok_or_else(no_tree)?;
    let snapshot = tree.send(Snapshot).await.map_err(|_| no_tree())?;
    Ok(HttpResponse::Ok().json(snapshot))
}

/// Make an actor panic, to watch supervision bring it back.
///
/// Only with `admin.chaos = true`.
#[utoipa::path(
    post,
    path = "/v1/admin/actors/{name}/crash",
    tag = "admin",
    security(("admin_token" = [])),
    params(("name" = String, Path, description = "`carrier:<id>:<bind>` or `route:<id>`", example = "carrier:mtn-rw:0")),
    responses(
        (status = 202, description = "The actor panicked", body = crate::api::schemas::Crashed),
        (status = 401, description = "Wrong admin token", body = crate::api::schemas::ErrorBody),
        (status = 403, description = "`admin_disabled`, `chaos_disabled`", body = crate::api::schemas::ErrorBody),
        (status = 404, description = "No such actor", body = crate::api::schemas::ErrorBody),
        (status = 503, description = "`actors_unavailable`: no actor tree on this node", body = crate::api::schemas::ErrorBody),
    )
)]
async fn crash(
    req: HttpRequest,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    authorize(&req, &state)?;
    if !state.config.admin.chaos {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "chaos_disabled",
            "crashing actors needs admin.chaos = true",
        ));
    }
    let tree = state.tree.as_ref().ok_or_else(no_tree)?;
    let found = tree
        .send(CrashActor(path.into_inner()))
        .await
        .map_err(|_| no_tree())?;
    if found {
        Ok(HttpResponse::Accepted().json(serde_json::json!({"crashed": true})))
    } else {
        Err(ApiError::not_found("actor"))
    }
}
