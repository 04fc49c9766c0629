//! The operator's dashboard: `GET /` serves one static page (HTML, CSS and
//! JavaScript checked in under `src/api/dashboard/`, no build step, nothing
//! fetched from elsewhere), which reads the admin API and
//! `GET /v1/admin/stream`.
//!
//! `GET /v1/admin/stream` (WebSocket; admin token as `Authorization: Bearer`
//! or `?access_token=`, none with `admin.open`): every status change of every
//! tenant, cluster-wide (from the stream hub), as `{"type":"event", …}`
//! frames (at most [`EVENTS_PER_TICK`] a second; the rest are only counted),
//! and once a second a `{"type":"tick"}` frame with the counts by status
//! since the last tick and the messages this node accepted so far.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use actix_web::http::header::{CACHE_CONTROL, CONTENT_TYPE};
use actix_web::{web, HttpRequest, HttpResponse};
use actix_ws::{CloseCode, CloseReason, Message, Session};
use futures::StreamExt;
use serde_json::json;
use tokio::sync::broadcast;

use super::error::ApiError;
use super::AppState;
use crate::stream::{Hub, HubItem};

/// Events forwarded to a dashboard per tick; beyond it they are only counted.
pub const EVENTS_PER_TICK: usize = 200;
/// How often counts are sent.
const TICK: Duration = Duration::from_secs(1);

const INDEX: &str = include_str!("dashboard/index.html");
const SCRIPT: &str = include_str!("dashboard/app.js");
const STYLE: &str = include_str!("dashboard/style.css");

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/")
            .route(web::get().to(index))
            .default_service(web::to(super::method_not_allowed)),
    )
    .service(
        web::resource("/dashboard/app.js")
            .route(web::get().to(script))
            .default_service(web::to(super::method_not_allowed)),
    )
    .service(
        web::resource("/dashboard/style.css")
            .route(web::get().to(style))
            .default_service(web::to(super::method_not_allowed)),
    )
    .service(
        web::resource("/v1/admin/stream")
            .route(web::get().to(connect))
            .default_service(web::to(super::method_not_allowed)),
    );
}

/// The parts of this module's own document.
#[derive(utoipa::OpenApi)]
#[openapi(paths(index, script, style, connect))]
pub struct Api;

fn asset(content_type: &'static str, body: &'static str) -> HttpResponse {
    HttpResponse::Ok()
        .insert_header((CONTENT_TYPE, content_type))
        .insert_header((CACHE_CONTROL, "no-cache"))
        .body(body)
}

/// The operator's dashboard (HTML). The page holds no data: it asks for the
/// admin token when the admin API does.
#[utoipa::path(
    get,
    path = "/",
    tag = "dashboard",
    responses((status = 200, description = "The dashboard page", content_type = "text/html", body = String))
)]
async fn index() -> HttpResponse {
    asset("text/html; charset=utf-8", INDEX)
}

/// The dashboard's script.
#[utoipa::path(
    get,
    path = "/dashboard/app.js",
    tag = "dashboard",
    responses((status = 200, description = "JavaScript", content_type = "text/javascript", body = String))
)]
async fn script() -> HttpResponse {
    asset("text/javascript; charset=utf-8", SCRIPT)
}

/// The dashboard's style sheet.
#[utoipa::path(
    get,
    path = "/dashboard/style.css",
    tag = "dashboard",
    responses((status = 200, description = "CSS", content_type = "text/css", body = String))
)]
async fn style() -> HttpResponse {
    asset("text/css; charset=utf-8", STYLE)
}

/// Every tenant's status events and per-second counts, live over WebSocket.
#[utoipa::path(
    get,
    path = "/v1/admin/stream",
    tag = "admin",
    security(("admin_token" = [])),
    params(("access_token" = Option<String>, Query, description = "The admin token, when `Authorization` cannot be set")),
    responses(
        (status = 101, description = "Switching Protocols: text frames are `{\"type\":\"tick\",\"accepted_total\",\"counts\",\"dropped\",\"at\"}` once a second and `{\"type\":\"event\",\"tenant_id\",…StreamEvent}`"),
        (status = 400, description = "`websocket_required`, `unknown_parameter`", body = crate::api::schemas::ErrorBody),
        (status = 401, description = "Wrong admin token", body = crate::api::schemas::ErrorBody),
        (status = 403, description = "`admin_disabled`", body = crate::api::schemas::ErrorBody),
    )
)]
async fn connect(
    req: HttpRequest,
    body: web::Payload,
    state: web::Data<AppState>,
    hub: web::Data<Hub>,
) -> Result<HttpResponse, ApiError> {
    let mut token = None;
    for (name, value) in url::form_urlencoded::parse(req.query_string().as_bytes()) {
        match name.as_ref() {
            "access_token" => token = Some(value.into_owned()),
            other => return Err(ApiError::unknown_parameter(other)),
        }
    }
    match token {
        // Browsers cannot set headers on a WebSocket: the token may come in
        // the query instead.
        Some(t) if req.headers().get("authorization").is_none() => {
            super::admin::authorize_token(&t, &state)?
        }
        _ => super::admin::authorize(&req, &state)?,
    }
    let (response, session, inbound) = crate::api::upgrade(&req, body)?;
    let live = hub.subscribe();
    let stopping = hub.stopping();
    let timeout = Duration::from_millis(state.config.stream.client_timeout_ms);
    actix_web::rt::spawn(run(live, stopping, timeout, session, inbound));
    Ok(response)
}

/// Serve one dashboard until it leaves, falls silent, or Herald stops.
async fn run(
    mut live: broadcast::Receiver<Arc<HubItem>>,
    mut stopping: tokio::sync::watch::Receiver<bool>,
    timeout: Duration,
    mut session: Session,
    mut inbound: actix_ws::MessageStream,
) {
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut counts: BTreeMap<String, u64> = BTreeMap::new();
    let mut forwarded = 0usize;
    let mut heard = tokio::time::Instant::now();
    let reason = loop {
        tokio::select! {
            _ = stopping.changed() => break Some((CloseCode::Away, "server shutting down")),
            _ = tick.tick() => {
                if heard.elapsed() > timeout {
                    break Some((CloseCode::Policy, "no pong within the timeout"));
                }
                let frame = json!({
                    "type": "tick",
                    "at": chrono::Utc::now(),
                    "accepted_total": crate::telemetry::accepted_total(),
                    "counts": std::mem::take(&mut counts),
                    "dropped": forwarded.saturating_sub(EVENTS_PER_TICK),
                });
                forwarded = 0;
                if session.text(frame.to_string()).await.is_err()
                    || session.ping(b"herald").await.is_err()
                {
                    break None;
                }
            }
            item = live.recv() => match item {
                Ok(item) => {
                    let HubItem::Event(e) = item.as_ref() else { continue };
                    *counts.entry(e.status.clone()).or_default() += 1;
                    forwarded += 1;
                    if forwarded <= EVENTS_PER_TICK {
                        let mut frame = serde_json::to_value(e).unwrap_or_default();
                        frame["type"] = json!("event");
                        frame["tenant_id"] = json!(e.tenant_id);
                        if session.text(frame.to_string()).await.is_err() {
                            break None;
                        }
                    }
                }
                // Behind: the counts of this tick are short; carry on.
                Err(broadcast::error::RecvError::Lagged(_)) => continue,
                Err(broadcast::error::RecvError::Closed) => {
                    break Some((CloseCode::Away, "server shutting down"))
                }
            },
            m = inbound.next() => {
                heard = tokio::time::Instant::now();
                match m {
                    None | Some(Err(_)) | Some(Ok(Message::Close(_))) => break None,
                    Some(Ok(Message::Ping(p))) => {
                        if session.pong(&p).await.is_err() {
                            break None;
                        }
                    }
                    Some(Ok(_)) => {}
                }
            }
        }
    };
    if let Some((code, why)) = reason {
        let _ = session
            .close(Some(CloseReason {
                code,
                description: Some(why.into()),
            }))
            .await;
    }
}
