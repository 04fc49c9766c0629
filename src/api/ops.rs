//! Operations endpoints: `/healthz` (the process is alive), `/readyz` (every
//! dependency answers) and `/metrics` (Prometheus text).

use actix_web::{web, HttpResponse};
use serde_json::json;

use super::AppState;

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/healthz", web::get().to(healthz))
        .route("/readyz", web::get().to(readyz))
        .route("/metrics", web::get().to(metrics));
}

/// The parts of the OpenAPI document (`api::openapi`) for this module.
#[derive(utoipa::OpenApi)]
#[openapi(paths(healthz, readyz, metrics))]
pub struct Api;

/// Liveness: 200 while the process runs.
#[utoipa::path(
    get,
    path = "/healthz",
    tag = "ops",
    responses((status = 200, description = "Alive", body = crate::api::schemas::Health))
)]
async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({"status": "ok"}))
}

/// Readiness: PostgreSQL, RabbitMQ and Redis all answer.
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "ops",
    responses(
        (status = 200, description = "Ready", body = crate::api::schemas::Readiness),
        (status = 503, description = "A dependency does not answer; `failing` names it",
            body = crate::api::schemas::Readiness,
            example = json!({"status": "unavailable", "failing": ["rabbitmq"],
                "checks": {"postgres": "ok", "rabbitmq": "unavailable", "redis": "ok"}})),
    )
)]
async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    let (db, broker, redis) = futures::join!(
        state.store.ping(),
        state.broker.ensure_connected(),
        state.kv.ping()
    );
    let checks = [
        ("postgres", db.err().map(|e| e.to_string())),
        ("rabbitmq", broker.err().map(|e| e.to_string())),
        ("redis", redis.err().map(|e| e.to_string())),
    ];
    let failing: Vec<&str> = checks
        .iter()
        .filter(|(_, e)| e.is_some())
        .map(|(name, _)| *name)
        .collect();
    let detail: serde_json::Map<String, serde_json::Value> = checks
        .iter()
        .map(|(name, e)| {
            let v = match e {
                None => json!("ok"),
                Some(_) => json!("unavailable"),
            };
            (name.to_string(), v)
        })
        .collect();
    if failing.is_empty() {
        HttpResponse::Ok().json(json!({"status": "ready", "checks": detail}))
    } else {
        for (name, e) in &checks {
            if let Some(e) = e {
                tracing::warn!(dependency = name, error = %e, "not ready");
            }
        }
        HttpResponse::ServiceUnavailable().json(json!({
            "status": "unavailable",
            "failing": failing,
            "checks": detail,
        }))
    }
}

/// Prometheus metrics (text exposition format 0.0.4).
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "ops",
    responses((status = 200, description = "`herald_*` metrics (the README lists them)",
        content_type = "text/plain; version=0.0.4", body = String))
)]
async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(state.metrics.render())
}
