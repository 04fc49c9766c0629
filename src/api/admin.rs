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

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use herald_actors::root::{CrashActor, Snapshot};
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
    );
}

/// Longest age `older_than_seconds` may ask for (a year).
const MAX_AGE_SECONDS: u64 = 366 * 24 * 3600;

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

fn authorize(req: &HttpRequest, state: &AppState) -> Result<(), ApiError> {
    let token = state.config.admin.token.expose();
    if token.is_empty() {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "admin_disabled",
            "the admin API is disabled (admin.token is empty)",
        ));
    }
    let given = req
        .headers()
        .get(actix_web::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
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

async fn actors(req: HttpRequest, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    authorize(&req, &state)?;
    let tree = state.tree.as_ref().ok_or_else(no_tree)?;
    let snapshot = tree.send(Snapshot).await.map_err(|_| no_tree())?;
    Ok(HttpResponse::Ok().json(snapshot))
}

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
