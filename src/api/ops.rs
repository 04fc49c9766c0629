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

async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({"status": "ok"}))
}

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

async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(state.metrics.render())
}
