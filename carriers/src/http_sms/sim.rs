//! A simulated HTTP SMS carrier: a real HTTP server speaking a simple JSON
//! REST dialect, for tests, demos and load tests (`herald sim http-sms`).
//!
//! Requests enter at `POST /messages` with `{"to","from","text",
//! "client_ref"?, "callback_url"?}` and an optional `Authorization: Bearer`
//! key; an accepted one is answered `200 {"message_id":"hsm_…","status":
//! "accepted"}`. Faults are played as configured ([`Faults`]): 429 with
//! `Retry-After` above the rate cap, 503, an injected error status and code,
//! slow answers. Status callbacks leave as `POST` to the request's
//! `callback_url` (or the configured one) with `{"message_id","status",
//! "error_code","client_ref","timestamp"}`, signed `X-Signature: <hex
//! HMAC-SHA256>` when a secret is set; `status` is `sent` (optional), then
//! `delivered`, `undelivered`, `expired` or `rejected` by the outcome mix.
//! [`carrier_config`] is the [`HttpSmsConfig`] that talks to this simulator.
//! `GET /stats` serves [`SimStats`]; `GET`/`PUT /faults` read and change
//! the faults (see [`control_routes`](crate::http_util::sim::control_routes)).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use actix_web::{web, HttpRequest, HttpResponse};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::{AuthHeader, CallbackMapping, CallbackSignature, HttpSmsConfig};
use crate::connection::ReceiptState;
use crate::http_util::hmac_sha256_hex;
use crate::http_util::sim::{
    has_bearer, phone_digits, with_retry_after, CallbackJob, CallbackQueue, Decision, SimCore,
};
pub use crate::http_util::sim::{Faults, SimHandle as Handle, SimRecord, SimStats};

/// The header carrying the callback signature.
pub const SIGNATURE_HEADER: &str = "X-Signature";

/// Weights of the final outcomes (need not add up to 1).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SmsOutcomes {
    pub delivered: f64,
    pub undelivered: f64,
    pub expired: f64,
    pub rejected: f64,
}

impl Default for SmsOutcomes {
    fn default() -> Self {
        SmsOutcomes {
            delivered: 0.95,
            undelivered: 0.03,
            expired: 0.01,
            rejected: 0.01,
        }
    }
}

/// How the simulated HTTP SMS carrier behaves.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct HttpSmsSimConfig {
    /// Where to listen (`127.0.0.1:0` picks a free port).
    pub bind: SocketAddr,
    /// If set, requests must carry `Authorization: Bearer <api_key>`.
    pub api_key: Option<String>,
    /// Callback URL used when a request names none.
    pub callback_url: Option<String>,
    /// If set, callbacks are signed with it in [`SIGNATURE_HEADER`].
    pub callback_secret: Option<String>,
    /// Send a non-final `sent` callback before the final one.
    pub send_sent_status: bool,
    /// Delay from acceptance to the `sent` callback, ms.
    pub sent_after_ms: u64,
    /// Delay from acceptance to the final callback, ms.
    pub final_after_ms: u64,
    pub outcomes: SmsOutcomes,
    pub faults: Faults,
    /// Seed for repeatable random choices.
    pub seed: Option<u64>,
    /// actix-web worker threads.
    pub workers: usize,
}

impl Default for HttpSmsSimConfig {
    fn default() -> Self {
        HttpSmsSimConfig {
            bind: SocketAddr::from(([127, 0, 0, 1], 0)),
            api_key: None,
            callback_url: None,
            callback_secret: None,
            send_sent_status: true,
            sent_after_ms: 20,
            final_after_ms: 100,
            outcomes: SmsOutcomes::default(),
            faults: Faults::default(),
            seed: None,
            workers: 2,
        }
    }
}

/// The adapter configuration that speaks this simulator's dialect.
/// `base_url` is the simulator's `http://host:port`; `callback_url` is where
/// Herald takes the callbacks.
pub fn carrier_config(
    base_url: &str,
    api_key: Option<&str>,
    callback_url: Option<&str>,
    callback_secret: Option<&str>,
) -> HttpSmsConfig {
    HttpSmsConfig {
        url: format!("{}/messages", base_url.trim_end_matches('/')),
        auth: api_key.map(|k| AuthHeader {
            name: "Authorization".into(),
            value: format!("Bearer {k}"),
        }),
        body_template: json!({
            "to": "{{to}}",
            "from": "{{from}}",
            "text": "{{body}}",
            "client_ref": "{{message_id}}",
            "callback_url": "{{callback_url}}"
        }),
        id_pointer: "/message_id".into(),
        callback_url: callback_url.map(str::to_owned),
        timeout_ms: 10_000,
        callback: CallbackMapping {
            items_pointer: None,
            ref_pointer: "/message_id".into(),
            status_pointer: "/status".into(),
            error_code_pointer: Some("/error_code".into()),
            timestamp_pointer: Some("/timestamp".into()),
            status_map: HashMap::from([
                ("sent".to_string(), ReceiptState::Sent),
                ("delivered".to_string(), ReceiptState::Delivered),
                ("undelivered".to_string(), ReceiptState::Undelivered),
                ("expired".to_string(), ReceiptState::Expired),
                ("rejected".to_string(), ReceiptState::Rejected),
                ("failed".to_string(), ReceiptState::Failed),
            ]),
            signature: callback_secret.map(|s| CallbackSignature {
                header: SIGNATURE_HEADER.into(),
                secret: s.into(),
            }),
        },
    }
}

struct State {
    config: HttpSmsSimConfig,
    queue: CallbackQueue,
}

/// Start the simulator on `config.bind` inside the current tokio runtime.
pub async fn start(config: HttpSmsSimConfig) -> std::io::Result<Handle> {
    let core = Arc::new(SimCore::new(config.faults.clone(), config.seed));
    let (queue, queue_task) = CallbackQueue::start(core.clone());
    let (bind, workers) = (config.bind, config.workers);
    let state = web::Data::new(State { config, queue });
    Handle::serve(bind, workers, 64 * 1024, core, queue_task, move |cfg| {
        cfg.app_data(state.clone())
            .route("/messages", web::post().to(send));
    })
}

/// Run the simulator until Ctrl-C (the `herald sim http-sms` command).
pub async fn run(config: HttpSmsSimConfig) -> std::io::Result<()> {
    let handle = start(config).await?;
    tracing::info!(addr = %handle.addr(), "http sms simulator listening");
    handle.run_until_ctrl_c().await
}

fn error(status: u16, code: &str, message: &str) -> HttpResponse {
    let status = actix_web::http::StatusCode::from_u16(status)
        .unwrap_or(actix_web::http::StatusCode::BAD_REQUEST);
    HttpResponse::build(status).json(json!({"error": {"code": code, "message": message}}))
}

fn reject(core: &SimCore, status: u16, code: &str, message: &str) -> HttpResponse {
    core.count_rejected();
    error(status, code, message)
}

async fn send(
    req: HttpRequest,
    body: web::Bytes,
    state: web::Data<State>,
    core: web::Data<SimCore>,
) -> HttpResponse {
    let config = &state.config;
    if let Some(key) = &config.api_key {
        if !has_bearer(&req, key) {
            return reject(&core, 401, "unauthorized", "bad or missing API key");
        }
    }
    let Ok(request) = serde_json::from_slice::<Value>(&body) else {
        return reject(&core, 400, "invalid_json", "body is not JSON");
    };
    let field = |name: &str| request.get(name).and_then(Value::as_str).unwrap_or("");
    let (to, from, text) = (field("to"), field("from"), field("text"));
    if phone_digits(to).is_none() {
        return reject(&core, 400, "invalid_to", "to is not an E.164 number");
    }
    if from.is_empty() {
        return reject(&core, 400, "invalid_from", "from is missing");
    }
    if text.is_empty() {
        return reject(&core, 400, "invalid_text", "text is missing");
    }

    match core.decide().await {
        Decision::Throttle { retry_after } => {
            return with_retry_after(error(429, "throttled", "rate cap exceeded"), retry_after)
        }
        Decision::ServerError => {
            return error(503, "unavailable", "service temporarily unavailable")
        }
        Decision::InjectedError { status, code } => return error(status, &code, "injected error"),
        Decision::Accept => {}
    }

    let id = format!("hsm_{}", core.random_hex(12));
    core.record(
        &id,
        SimRecord {
            to: to.to_owned(),
            from: from.to_owned(),
            kind: "text".into(),
            request: request.clone(),
            callbacks: Vec::new(),
        },
    );
    let callback_url = request
        .get("callback_url")
        .and_then(Value::as_str)
        .filter(|u| !u.is_empty())
        .map(str::to_owned)
        .or_else(|| config.callback_url.clone());
    if let Some(url) = callback_url {
        let client_ref = field("client_ref").to_owned();
        let o = &config.outcomes;
        let outcome = match core.pick_weighted(&[o.delivered, o.undelivered, o.expired, o.rejected])
        {
            Some(1) => ("undelivered", Some("001")),
            Some(2) => ("expired", Some("002")),
            Some(3) => ("rejected", Some("003")),
            _ => ("delivered", None),
        };
        let now = tokio::time::Instant::now();
        let mut statuses = Vec::new();
        if config.send_sent_status {
            statuses.push(("sent", None, config.sent_after_ms));
        }
        statuses.push((outcome.0, outcome.1, config.final_after_ms));
        for (status, code, after) in statuses {
            let body = json!({
                "message_id": id,
                "status": status,
                "error_code": code,
                "client_ref": client_ref,
                "timestamp": chrono::Utc::now().to_rfc3339(),
            })
            .to_string()
            .into_bytes();
            let headers = config
                .callback_secret
                .as_ref()
                .map(|secret| {
                    vec![(
                        SIGNATURE_HEADER.to_string(),
                        hmac_sha256_hex(secret.as_bytes(), &body),
                    )]
                })
                .unwrap_or_default();
            state.queue.schedule(CallbackJob {
                due: now + Duration::from_millis(after),
                url: url.clone(),
                content_type: "application/json",
                headers,
                body,
                message_id: id.clone(),
                status: status.to_owned(),
            });
        }
    }
    HttpResponse::Ok().json(json!({"message_id": id, "status": "accepted"}))
}
