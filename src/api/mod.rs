//! The HTTP API (actix-web). The router is assembled from one `routes()` per
//! resource; handlers get the shared [`AppState`]; every error goes through
//! [`error::ApiError`].

pub mod admin;
pub mod auth;
pub mod dashboard;
pub mod docs;
pub mod error;
pub mod middleware;
pub mod openapi;
pub mod ops;
pub mod schemas;
pub mod v1;

use std::sync::Arc;

use actix::Addr;
use actix_web::http::header::CONTENT_TYPE;
use actix_web::{web, HttpRequest, HttpResponse};
use futures::StreamExt;
use herald_actors::broker::Broker;
use herald_actors::root::Root;
use metrics_exporter_prometheus::PrometheusHandle;

use crate::config::Config;
use crate::ingest::Ingest;
use crate::kv::Kv;
use crate::store::Store;
use error::ApiError;

/// What every handler may reach. Shared, read-only; each part is a handle.
pub struct AppState {
    pub config: Arc<Config>,
    pub store: Store,
    pub kv: Kv,
    pub broker: Broker,
    pub ingest: Ingest,
    /// Responses to remember under idempotency keys, written to Redis in
    /// batches off the answer's path.
    pub remember: crate::batch::Batcher<crate::kv::Remember, ()>,
    pub auth: auth::AuthCache,
    pub metrics: PrometheusHandle,
    /// The actor tree of this node, when carriers are configured.
    pub tree: Option<Addr<Root>>,
    /// The carriers and routes in force (replaced by a routing reload);
    /// `POST /v1/callbacks/{carrier}` finds the carrier's secrets and
    /// callback format here. Read through [`AppState::plan`].
    pub plan: std::sync::RwLock<Arc<herald_actors::config::Plan>>,
}

impl AppState {
    /// The carriers and routes in force.
    pub fn plan(&self) -> Arc<herald_actors::config::Plan> {
        self.plan
            .read()
            .map(|p| p.clone())
            .unwrap_or_else(|e| e.into_inner().clone())
    }

    /// Replace the carriers and routes in force (after a reload).
    pub fn set_plan(&self, plan: herald_actors::config::Plan) {
        match self.plan.write() {
            Ok(mut p) => *p = Arc::new(plan),
            Err(e) => *e.into_inner() = Arc::new(plan),
        }
    }
}

/// Every route of the service.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.configure(ops::routes)
        .configure(v1::routes)
        .configure(admin::routes)
        .configure(dashboard::routes)
        .configure(openapi::routes)
        .configure(docs::routes);
}

/// Upgrade a request to a WebSocket; 400 `websocket_required` when it is not
/// an upgrade request.
pub fn upgrade(
    req: &HttpRequest,
    body: web::Payload,
) -> Result<(HttpResponse, actix_ws::Session, actix_ws::MessageStream), ApiError> {
    actix_ws::handle(req, body).map_err(|e| {
        ApiError::bad_request(
            "websocket_required",
            format!("not a WebSocket upgrade: {e}"),
        )
    })
}

/// Answer for paths that match nothing.
pub async fn not_found() -> Result<HttpResponse, ApiError> {
    Err(ApiError::not_found("resource"))
}

/// Answer for known paths asked with the wrong method.
pub async fn method_not_allowed() -> Result<HttpResponse, ApiError> {
    Err(ApiError::method_not_allowed())
}

/// Read a JSON request body of at most `limit` bytes into a `serde_json::Value`.
/// 415 unless `Content-Type: application/json`; 413 past the limit; 400 with
/// line and column when it is not JSON.
pub async fn read_json(
    req: &HttpRequest,
    mut payload: web::Payload,
    limit: usize,
) -> Result<serde_json::Value, ApiError> {
    let content_type = req
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let essence = content_type.split(';').next().unwrap_or("").trim();
    if !essence.eq_ignore_ascii_case("application/json") {
        return Err(ApiError::new(
            actix_web::http::StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "send the body as Content-Type: application/json",
        ));
    }
    let too_large = || {
        ApiError::new(
            actix_web::http::StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("request body exceeds {limit} bytes"),
        )
    };
    if let Some(len) = req
        .headers()
        .get(actix_web::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok())
    {
        if len > limit {
            return Err(too_large());
        }
    }
    let mut body = web::BytesMut::new();
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|e| ApiError::bad_request("invalid_body", e.to_string()))?;
        if body.len() + chunk.len() > limit {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::bad_request(
            "invalid_json",
            "request body is empty",
        ));
    }
    serde_json::from_slice(&body).map_err(|e| {
        ApiError::bad_request(
            "invalid_json",
            format!(
                "malformed JSON at line {} column {}: {}",
                e.line(),
                e.column(),
                strip_position(&e.to_string())
            ),
        )
    })
}

/// serde_json appends " at line L column C"; we say it once ourselves.
fn strip_position(message: &str) -> &str {
    message.split(" at line ").next().unwrap_or(message)
}

/// A number query parameter within `range`, else 400 `invalid_parameter`.
pub fn bounded<T>(
    name: &str,
    value: &str,
    range: std::ops::RangeInclusive<T>,
) -> Result<T, ApiError>
where
    T: std::str::FromStr + PartialOrd + std::fmt::Display,
{
    value
        .parse::<T>()
        .ok()
        .filter(|v| range.contains(v))
        .ok_or_else(|| {
            ApiError::invalid_parameter(
                name,
                format!(
                    "{name} must be between {} and {}",
                    range.start(),
                    range.end()
                ),
            )
        })
}

/// Deserialize a JSON object into the request struct `T`, naming the
/// offending field on error (422): missing, unknown, wrong type or invalid value.
pub fn from_json<T: serde::de::DeserializeOwned>(value: serde_json::Value) -> Result<T, ApiError> {
    if !value.is_object() {
        return Err(ApiError::invalid(
            "invalid_type",
            "body",
            "the request body must be a JSON object",
        ));
    }
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let message = e.inner().to_string();
        let backticked = message
            .split('`')
            .nth(1)
            .map(str::to_owned)
            .unwrap_or_default();
        let (code, field) = if message.starts_with("missing field") {
            ("missing_field", join_path(&path, &backticked))
        } else if message.starts_with("unknown field") {
            // The path already ends at the unknown field.
            let field = if path.is_empty() || path == "." {
                backticked
            } else {
                path.clone()
            };
            ("unknown_field", field)
        } else if message.starts_with("invalid type") {
            ("invalid_type", path.clone())
        } else {
            ("invalid_value", path.clone())
        };
        let field = if field.is_empty() || field == "." {
            "body".to_owned()
        } else {
            field
        };
        ApiError::invalid(code, &field, format!("{field}: {message}"))
    })
}

fn join_path(path: &str, leaf: &str) -> String {
    if path.is_empty() || path == "." {
        leaf.to_owned()
    } else {
        format!("{path}.{leaf}")
    }
}
