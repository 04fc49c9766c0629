//! A simulated WhatsApp Cloud API: a real HTTP server speaking Meta's send
//! API and webhooks, for tests, demos and load tests (`herald sim whatsapp`).
//!
//! Requests enter at `POST /{version}/{phone_number_id}/messages` (or without
//! the version) with `Authorization: Bearer <access_token>` and Meta's text or
//! template body; an accepted one is answered with Meta's
//! `{"messaging_product","contacts":[…],"messages":[{"id":"wamid.…"}]}`.
//! Faults ([`Faults`]): above the rate cap the answer is HTTP 429 with error
//! code 130429 and `Retry-After`; a server error is a bare HTTP 503; an
//! injected error carries the configured status and Meta error code (e.g.
//! `130429`, `131047`, `131026`); with `pair_rate_limit_ms`, a second
//! message to one recipient too soon is refused with 131056.
//!
//! Status webhooks leave as `POST` to the configured webhook URL in Meta's
//! envelope (`entry[].changes[].value.statuses[]`), signed
//! `X-Hub-Signature-256: sha256=<hex HMAC-SHA256(app_secret, body)>`: `sent`,
//! then `delivered` (and `read`) or `failed` with `errors[]`, by the outcome
//! mix and delays. `GET /stats` serves [`SimStats`]; `GET`/`PUT /faults`
//! read and change the faults (see
//! [`control_routes`](crate::http_util::sim::control_routes)).
//! [`carrier_config`] is the [`WhatsappConfig`] that talks to this simulator.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix_web::{web, HttpRequest, HttpResponse};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::webhook::{sign, SIGNATURE_HEADER};
use super::WhatsappConfig;
use crate::http_util::sim::{
    has_bearer, phone_digits, with_retry_after, CallbackJob, CallbackQueue, Decision, SimCore,
};
pub use crate::http_util::sim::{Faults, SimHandle as Handle, SimRecord, SimStats};

/// The Graph API version the simulator pretends to be.
pub const API_VERSION: &str = "v21.0";

/// Weights of the outcomes (need not add up to 1). `read` means delivered
/// and then read.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct WhatsappOutcomes {
    pub delivered: f64,
    pub read: f64,
    pub failed: f64,
}

impl Default for WhatsappOutcomes {
    fn default() -> Self {
        WhatsappOutcomes {
            delivered: 0.3,
            read: 0.65,
            failed: 0.05,
        }
    }
}

/// How the simulated WhatsApp Cloud API behaves.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct WhatsappSimConfig {
    /// Where to listen (`127.0.0.1:0` picks a free port).
    pub bind: SocketAddr,
    /// The bearer token senders must present.
    pub access_token: String,
    /// Signs the webhooks.
    pub app_secret: String,
    /// If set, only this phone number id is accepted.
    pub phone_number_id: Option<String>,
    /// The business number reported in webhook metadata.
    pub display_phone_number: String,
    /// The WhatsApp Business Account id reported in webhooks.
    pub waba_id: String,
    /// Where status webhooks go; none are sent without it.
    pub webhook_url: Option<String>,
    /// Delays from acceptance to each status webhook, ms.
    pub sent_after_ms: u64,
    pub delivered_after_ms: u64,
    pub read_after_ms: u64,
    pub outcomes: WhatsappOutcomes,
    /// Error code in `failed` statuses.
    pub failure_code: i64,
    /// If set, a second message to the same recipient within this many ms
    /// is refused with 131056 (pair rate limit), as Meta does.
    pub pair_rate_limit_ms: Option<u64>,
    pub faults: Faults,
    /// Seed for repeatable random choices.
    pub seed: Option<u64>,
    /// actix-web worker threads.
    pub workers: usize,
}

impl Default for WhatsappSimConfig {
    fn default() -> Self {
        WhatsappSimConfig {
            bind: SocketAddr::from(([127, 0, 0, 1], 0)),
            access_token: "sim-access-token".into(),
            app_secret: "sim-app-secret".into(),
            phone_number_id: None,
            display_phone_number: "15550000000".into(),
            waba_id: "100000000000001".into(),
            webhook_url: None,
            sent_after_ms: 20,
            delivered_after_ms: 80,
            read_after_ms: 200,
            outcomes: WhatsappOutcomes::default(),
            failure_code: 131026,
            pair_rate_limit_ms: None,
            faults: Faults {
                error_code: "131026".into(),
                ..Faults::default()
            },
            seed: None,
            workers: 2,
        }
    }
}

/// The adapter configuration that talks to a simulator at `base_url`
/// (`http://host:port`) with this simulator configuration's secrets.
pub fn carrier_config(base_url: &str, sim: &WhatsappSimConfig) -> WhatsappConfig {
    WhatsappConfig {
        base_url: format!("{}/{API_VERSION}", base_url.trim_end_matches('/')),
        phone_number_id: sim
            .phone_number_id
            .clone()
            .unwrap_or_else(|| "106540352242922".into()),
        access_token: sim.access_token.clone(),
        app_secret: sim.app_secret.clone(),
        verify_token: "sim-verify-token".into(),
        timeout_ms: 10_000,
        throttle_backoff_ms: 1_000,
    }
}

struct State {
    config: WhatsappSimConfig,
    queue: CallbackQueue,
    /// Last accepted send per recipient, for the pair rate limit.
    last_send: Mutex<HashMap<String, Instant>>,
}

/// Recipients remembered for the pair rate limit before old ones are pruned.
const PAIR_MEMORY: usize = 10_000;

impl State {
    /// Whether a send to `wa_id` now breaks the pair rate limit; records the
    /// send when it does not.
    fn pair_limited(&self, wa_id: &str) -> bool {
        let Some(window) = self.config.pair_rate_limit_ms.map(Duration::from_millis) else {
            return false;
        };
        let mut last = self.last_send.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        if last.len() >= PAIR_MEMORY {
            last.retain(|_, at| now.duration_since(*at) < window);
        }
        match last.get(wa_id) {
            Some(at) if now.duration_since(*at) < window => true,
            _ => {
                last.insert(wa_id.to_owned(), now);
                false
            }
        }
    }
}

/// Start the simulator on `config.bind` inside the current tokio runtime.
pub async fn start(config: WhatsappSimConfig) -> std::io::Result<Handle> {
    let core = Arc::new(SimCore::new(config.faults.clone(), config.seed));
    let (queue, queue_task) = CallbackQueue::start(core.clone());
    let (bind, workers) = (config.bind, config.workers);
    let state = web::Data::new(State {
        config,
        queue,
        last_send: Mutex::new(HashMap::new()),
    });
    Handle::serve(bind, workers, 256 * 1024, core, queue_task, move |cfg| {
        cfg.app_data(state.clone())
            .route("/{phone_number_id}/messages", web::post().to(send))
            .route(
                "/{version}/{phone_number_id}/messages",
                web::post().to(send),
            );
    })
}

/// Run the simulator until Ctrl-C (the `herald sim whatsapp` command).
pub async fn run(config: WhatsappSimConfig) -> std::io::Result<()> {
    let handle = start(config).await?;
    tracing::info!(addr = %handle.addr(), "whatsapp simulator listening");
    handle.run_until_ctrl_c().await
}

/// Meta's error envelope.
fn meta_error(status: u16, code: i64, message: &str, details: &str) -> HttpResponse {
    let status = actix_web::http::StatusCode::from_u16(status)
        .unwrap_or(actix_web::http::StatusCode::BAD_REQUEST);
    HttpResponse::build(status).json(json!({
        "error": {
            "message": message,
            "type": "OAuthException",
            "code": code,
            "error_data": {"messaging_product": "whatsapp", "details": details},
            "fbtrace_id": "AsimTrace",
        }
    }))
}

fn reject(core: &SimCore, status: u16, code: i64, message: &str, details: &str) -> HttpResponse {
    core.count_rejected();
    meta_error(status, code, message, details)
}

/// Check a send body; `Err` holds the details of a code-100 refusal.
fn validate(body: &Value) -> Result<(String, &'static str), &'static str> {
    if body.get("messaging_product").and_then(Value::as_str) != Some("whatsapp") {
        return Err("messaging_product must be whatsapp");
    }
    let to = body.get("to").and_then(Value::as_str).unwrap_or("");
    let digits = phone_digits(to).ok_or("to is not a phone number")?;
    match body.get("type").and_then(Value::as_str).unwrap_or("text") {
        "text" => {
            let text = body.pointer("/text/body").and_then(Value::as_str);
            match text {
                Some(t) if !t.is_empty() && t.chars().count() <= 4096 => {
                    Ok((digits.to_owned(), "text"))
                }
                _ => Err("text.body is missing or longer than 4096 characters"),
            }
        }
        "template" => {
            let name = body.pointer("/template/name").and_then(Value::as_str);
            let lang = body
                .pointer("/template/language/code")
                .and_then(Value::as_str);
            match (name, lang) {
                (Some(n), Some(l)) if !n.is_empty() && !l.is_empty() => {
                    Ok((digits.to_owned(), "template"))
                }
                _ => Err("template.name and template.language.code are required"),
            }
        }
        _ => Err("unsupported message type"),
    }
}

async fn send(
    req: HttpRequest,
    body: web::Bytes,
    state: web::Data<State>,
    core: web::Data<SimCore>,
) -> HttpResponse {
    let config = &state.config;
    if !has_bearer(&req, &config.access_token) {
        return reject(&core, 401, 190, "Invalid OAuth access token", "bad token");
    }
    let phone_number_id = req.match_info().get("phone_number_id").unwrap_or("");
    if let Some(expected) = &config.phone_number_id {
        if phone_number_id != expected {
            return reject(
                &core,
                400,
                100,
                "Unsupported post request",
                "object with this id does not exist",
            );
        }
    }
    let Ok(request) = serde_json::from_slice::<Value>(&body) else {
        return reject(&core, 400, 100, "Invalid parameter", "body is not JSON");
    };
    let (wa_id, kind) = match validate(&request) {
        Ok(ok) => ok,
        Err(details) => return reject(&core, 400, 100, "Invalid parameter", details),
    };

    match core.decide().await {
        Decision::Throttle { retry_after } => {
            let answer = meta_error(
                429,
                130429,
                "Rate limit hit",
                "cloud API message throughput has been reached",
            );
            return with_retry_after(answer, retry_after);
        }
        Decision::ServerError => {
            return HttpResponse::ServiceUnavailable()
                .content_type("text/plain")
                .body("Service Unavailable")
        }
        Decision::InjectedError { status, code } => {
            let code = code.trim().parse::<i64>().unwrap_or(131000);
            return meta_error(status, code, "Injected error", "simulated failure");
        }
        Decision::Accept => {}
    }
    if state.pair_limited(&wa_id) {
        core.with_stats(|s| s.throttled += 1);
        return meta_error(
            400,
            131056,
            "(Business Account, Consumer Account) pair rate limit hit",
            "too many messages to this recipient in a short time",
        );
    }

    let wamid = format!("wamid.HBgL{}", core.random_hex(18).to_uppercase());
    core.record(
        &wamid,
        SimRecord {
            to: wa_id.clone(),
            from: phone_number_id.to_owned(),
            kind: kind.into(),
            request: request.clone(),
            callbacks: Vec::new(),
        },
    );
    if let Some(url) = &config.webhook_url {
        schedule_statuses(&state, &core, url, &wamid, &wa_id, phone_number_id);
    }
    let mut answer = json!({
        "messaging_product": "whatsapp",
        "contacts": [{"input": request.get("to").cloned().unwrap_or(Value::Null), "wa_id": wa_id}],
        "messages": [{"id": wamid}],
    });
    if kind == "template" {
        answer["messages"][0]["message_status"] = json!("accepted");
    }
    HttpResponse::Ok().json(answer)
}

fn schedule_statuses(
    state: &State,
    core: &SimCore,
    url: &str,
    wamid: &str,
    wa_id: &str,
    phone_number_id: &str,
) {
    let config = &state.config;
    let o = &config.outcomes;
    let plan: Vec<(&str, u64)> = match core.pick_weighted(&[o.delivered, o.read, o.failed]) {
        Some(1) => vec![
            ("sent", config.sent_after_ms),
            ("delivered", config.delivered_after_ms),
            ("read", config.read_after_ms),
        ],
        Some(2) => vec![("failed", config.delivered_after_ms)],
        _ => vec![
            ("sent", config.sent_after_ms),
            ("delivered", config.delivered_after_ms),
        ],
    };
    let now = tokio::time::Instant::now();
    let base_ts = chrono::Utc::now().timestamp();
    for (status, after) in plan {
        let mut entry = json!({
            "id": wamid,
            "status": status,
            "timestamp": (base_ts + i64::try_from(after / 1000).unwrap_or(0)).to_string(),
            "recipient_id": wa_id,
        });
        if status == "failed" {
            entry["errors"] = json!([{
                "code": config.failure_code,
                "title": "Message undeliverable",
                "message": "Message undeliverable",
                "error_data": {"details": "simulated failure"},
            }]);
        }
        let body = json!({
            "object": "whatsapp_business_account",
            "entry": [{
                "id": config.waba_id,
                "changes": [{
                    "field": "messages",
                    "value": {
                        "messaging_product": "whatsapp",
                        "metadata": {
                            "display_phone_number": config.display_phone_number,
                            "phone_number_id": phone_number_id,
                        },
                        "statuses": [entry],
                    },
                }],
            }],
        })
        .to_string()
        .into_bytes();
        let signature = sign(config.app_secret.as_bytes(), &body);
        state.queue.schedule(CallbackJob {
            due: now + Duration::from_millis(after),
            url: url.to_owned(),
            content_type: "application/json",
            headers: vec![(SIGNATURE_HEADER.to_string(), signature)],
            body,
            message_id: wamid.to_owned(),
            status: status.to_owned(),
        });
    }
}
