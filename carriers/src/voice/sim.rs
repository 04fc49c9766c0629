//! A simulated voice provider: a real HTTP server in the Twilio-like shape
//! [`super`] speaks, for tests, demos and load tests (`herald sim voice`).
//!
//! Requests enter at `POST /Calls` (also `/{anything}/Calls`), form-encoded
//! with `To`, `From`, `Say` or `Play`, `StatusCallback`, `ClientRef`, and
//! `Authorization: Bearer <auth_token>` when one is configured. An accepted
//! call is answered `201 {"sid":"CA…","status":"queued",…}`; refusals are
//! `{"code":<int>,"message":…,"status":<http>}` (21211 bad `To`, 21212 bad
//! `From`, 21205 bad `Play` URL, 20003 auth). Faults ([`Faults`]): 429 with
//! code 20429 and `Retry-After` above the rate cap, 503, the injected status
//! and code, slow answers.
//!
//! Status callbacks leave form-encoded (`CallSid`, `CallStatus`, `To`,
//! `From`, `ErrorCode`, `CallDuration`, `Timestamp` in RFC 2822) to the
//! call's `StatusCallback` (or the configured default), signed with the hex
//! HMAC-SHA256 of the body in `X-Voice-Signature`: `ringing`, `in-progress`,
//! `completed` for an answered call; `ringing` then `busy` or `no-answer`;
//! or `failed`, by the outcome mix and delays. `GET /stats` serves
//! [`SimStats`]; `GET`/`PUT /faults` read and change the faults (see
//! [`control_routes`](crate::http_util::sim::control_routes)).
//! [`carrier_config`] is the [`VoiceConfig`] for this simulator.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use actix_web::{web, HttpRequest, HttpResponse};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::{sign, AuthHeader, VoiceConfig, SIGNATURE_HEADER};
use crate::http_util::sim::{
    has_bearer, phone_digits, with_retry_after, CallbackJob, CallbackQueue, Decision, SimCore,
};
pub use crate::http_util::sim::{Faults, SimHandle as Handle, SimRecord, SimStats};

/// Weights of the call outcomes (need not add up to 1).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct VoiceOutcomes {
    pub completed: f64,
    pub busy: f64,
    pub no_answer: f64,
    pub failed: f64,
}

impl Default for VoiceOutcomes {
    fn default() -> Self {
        VoiceOutcomes {
            completed: 0.8,
            busy: 0.08,
            no_answer: 0.1,
            failed: 0.02,
        }
    }
}

/// How the simulated voice provider behaves.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct VoiceSimConfig {
    /// Where to listen (`127.0.0.1:0` picks a free port).
    pub bind: SocketAddr,
    /// If set, requests must carry `Authorization: Bearer <auth_token>`.
    pub auth_token: Option<String>,
    /// Signs the status callbacks.
    pub callback_secret: String,
    /// Callback URL for calls that name none.
    pub status_callback_url: Option<String>,
    /// Delays from acceptance to each callback, ms.
    pub ringing_after_ms: u64,
    pub answered_after_ms: u64,
    pub ended_after_ms: u64,
    pub outcomes: VoiceOutcomes,
    /// `ErrorCode` in `failed` callbacks.
    pub failure_code: String,
    pub faults: Faults,
    /// Seed for repeatable random choices.
    pub seed: Option<u64>,
    /// actix-web worker threads.
    pub workers: usize,
}

impl Default for VoiceSimConfig {
    fn default() -> Self {
        VoiceSimConfig {
            bind: SocketAddr::from(([127, 0, 0, 1], 0)),
            auth_token: None,
            callback_secret: "sim-voice-secret".into(),
            status_callback_url: None,
            ringing_after_ms: 20,
            answered_after_ms: 60,
            ended_after_ms: 120,
            outcomes: VoiceOutcomes::default(),
            failure_code: "31005".into(),
            faults: Faults {
                error_code: "21211".into(),
                ..Faults::default()
            },
            seed: None,
            workers: 2,
        }
    }
}

/// The adapter configuration that talks to a simulator at `base_url`
/// (`http://host:port`), asking for callbacks at `status_callback_url`.
pub fn carrier_config(
    base_url: &str,
    sim: &VoiceSimConfig,
    status_callback_url: &str,
) -> VoiceConfig {
    VoiceConfig {
        base_url: base_url.trim_end_matches('/').to_owned(),
        auth: sim.auth_token.as_ref().map(|t| AuthHeader {
            name: "Authorization".into(),
            value: format!("Bearer {t}"),
        }),
        status_callback_url: status_callback_url.to_owned(),
        callback_secret: sim.callback_secret.clone(),
        timeout_ms: 10_000,
    }
}

struct State {
    config: VoiceSimConfig,
    queue: CallbackQueue,
}

/// Start the simulator on `config.bind` inside the current tokio runtime.
pub async fn start(config: VoiceSimConfig) -> std::io::Result<Handle> {
    let core = Arc::new(SimCore::new(config.faults.clone(), config.seed));
    let (queue, queue_task) = CallbackQueue::start(core.clone());
    let (bind, workers) = (config.bind, config.workers);
    let state = web::Data::new(State { config, queue });
    Handle::serve(bind, workers, 64 * 1024, core, queue_task, move |cfg| {
        cfg.app_data(state.clone())
            .route("/Calls", web::post().to(create_call))
            .route("/{prefix:.*}/Calls", web::post().to(create_call));
    })
}

/// Run the simulator until Ctrl-C (the `herald sim voice` command).
pub async fn run(config: VoiceSimConfig) -> std::io::Result<()> {
    let handle = start(config).await?;
    tracing::info!(addr = %handle.addr(), "voice simulator listening");
    handle.run_until_ctrl_c().await
}

fn error(status: u16, code: &str, message: &str) -> HttpResponse {
    let http = actix_web::http::StatusCode::from_u16(status)
        .unwrap_or(actix_web::http::StatusCode::BAD_REQUEST);
    let code: Value = code
        .parse::<i64>()
        .map(Value::from)
        .unwrap_or_else(|_| Value::from(code));
    HttpResponse::build(http).json(json!({"code": code, "message": message, "status": status}))
}

fn reject(core: &SimCore, status: u16, code: &str, message: &str) -> HttpResponse {
    core.count_rejected();
    error(status, code, message)
}

async fn create_call(
    req: HttpRequest,
    body: web::Bytes,
    state: web::Data<State>,
    core: web::Data<SimCore>,
) -> HttpResponse {
    let config = &state.config;
    if let Some(token) = &config.auth_token {
        if !has_bearer(&req, token) {
            return reject(&core, 401, "20003", "Authenticate");
        }
    }
    let form: BTreeMap<String, String> = url::form_urlencoded::parse(&body)
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    let field = |k: &str| form.get(k).map(String::as_str).unwrap_or("");
    let (to, from) = (field("To"), field("From"));
    if !to.starts_with('+') || phone_digits(to).is_none() {
        return reject(&core, 400, "21211", "Invalid 'To' Phone Number");
    }
    if from.is_empty() {
        return reject(&core, 400, "21212", "Invalid 'From' Phone Number");
    }
    let kind = match (field("Say"), field("Play")) {
        (say, "") if !say.is_empty() => "say",
        ("", play) if play.starts_with("http://") || play.starts_with("https://") => "play",
        ("", "") => return reject(&core, 400, "21205", "Say or Play is required"),
        _ => return reject(&core, 400, "21205", "Give exactly one valid Say or Play"),
    };

    match core.decide().await {
        Decision::Throttle { retry_after } => {
            return with_retry_after(error(429, "20429", "Too Many Requests"), retry_after)
        }
        Decision::ServerError => return error(503, "20503", "Service Unavailable"),
        Decision::InjectedError { status, code } => return error(status, &code, "Injected error"),
        Decision::Accept => {}
    }

    let sid = format!("CA{}", core.random_hex(16));
    let request: serde_json::Map<String, Value> = form
        .iter()
        .map(|(k, v)| (k.clone(), Value::String(v.clone())))
        .collect();
    core.record(
        &sid,
        SimRecord {
            to: to.to_owned(),
            from: from.to_owned(),
            kind: kind.into(),
            request: Value::Object(request),
            callbacks: Vec::new(),
        },
    );
    let callback = Some(field("StatusCallback"))
        .filter(|u| !u.is_empty())
        .map(str::to_owned)
        .or_else(|| config.status_callback_url.clone());
    if let Some(url) = callback {
        schedule_statuses(&state, &core, &url, &sid, to, from);
    }
    HttpResponse::Created().json(json!({
        "sid": sid,
        "status": "queued",
        "to": to,
        "from": from,
    }))
}

fn schedule_statuses(state: &State, core: &SimCore, url: &str, sid: &str, to: &str, from: &str) {
    let config = &state.config;
    let o = &config.outcomes;
    let (ring, answer, end) = (
        config.ringing_after_ms,
        config.answered_after_ms,
        config.ended_after_ms,
    );
    let plan: Vec<(&str, u64)> =
        match core.pick_weighted(&[o.completed, o.busy, o.no_answer, o.failed]) {
            Some(1) => vec![("ringing", ring), ("busy", answer)],
            Some(2) => vec![("ringing", ring), ("no-answer", end)],
            Some(3) => vec![("failed", ring)],
            _ => vec![
                ("ringing", ring),
                ("in-progress", answer),
                ("completed", end),
            ],
        };
    let now = tokio::time::Instant::now();
    let started = chrono::Utc::now();
    for (status, after) in plan {
        let at = started + chrono::Duration::milliseconds(i64::try_from(after).unwrap_or(0));
        let mut form = url::form_urlencoded::Serializer::new(String::new());
        form.append_pair("CallSid", sid)
            .append_pair("CallStatus", status)
            .append_pair("To", to)
            .append_pair("From", from)
            .append_pair("Timestamp", &at.to_rfc2822());
        if status == "completed" {
            let secs = end.saturating_sub(answer) / 1000;
            form.append_pair("CallDuration", &secs.to_string());
        }
        if status == "failed" {
            form.append_pair("ErrorCode", &config.failure_code);
        }
        let body = form.finish().into_bytes();
        let signature = sign(config.callback_secret.as_bytes(), &body);
        state.queue.schedule(CallbackJob {
            due: now + Duration::from_millis(after),
            url: url.to_owned(),
            content_type: "application/x-www-form-urlencoded",
            headers: vec![(SIGNATURE_HEADER.to_string(), signature)],
            body,
            message_id: sid.to_owned(),
            status: status.to_owned(),
        });
    }
}
