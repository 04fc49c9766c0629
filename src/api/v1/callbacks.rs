//! `/v1/callbacks/{carrier_id}`: receipts from HTTP carriers (HTTP SMS,
//! WhatsApp Cloud API, voice), the counterpart of an SMPP bind's `deliver_sm`.
//!
//! Data enters as a carrier's raw request: the carrier is found in the
//! [`Plan`](herald_actors::config::Plan) loaded at start (unknown: 404; SMPP
//! carriers take no HTTP callbacks: 404), the body is read up to
//! `http.max_body_bytes`, its signature is checked in constant time with the
//! carrier's secret (bad or missing: 401 `invalid_signature`, nothing
//! published), and it is parsed by the carrier's protocol module in
//! `herald_carriers` (malformed: 400 with a code). Data leaves as one
//! `EventTask::ReceiptV1` per receipt on `<prefix>.events`, all of one callback
//! in one confirmed publish, and the status projector correlates each by
//! (carrier id, carrier reference) as it does SMPP receipts.
//!
//! The carrier is answered 200 only after RabbitMQ confirmed; if RabbitMQ is
//! down it gets 503 with `Retry-After` and retries, so a receipt is never
//! acknowledged and lost. A retried callback publishes the same event ids
//! (derived from the carrier, the reference, the state and the raw receipt),
//! so the projector logs it once.
//!
//! | kind | signature | body |
//! |---|---|---|
//! | `whatsapp` | `X-Hub-Signature-256: sha256=<hex>` with `app_secret` | Meta's `entry[].changes[].value.statuses[]` |
//! | `http_sms` | the `[callback.signature]` header and secret, if configured | the carrier's JSON, read by its `CallbackMapping` |
//! | `voice` | `X-Voice-Signature: <hex>` with `callback_secret` | form-encoded or JSON `CallSid`, `CallStatus`, … |
//!
//! `GET` answers Meta's subscription handshake for WhatsApp carriers
//! (`hub.mode=subscribe&hub.verify_token=…&hub.challenge=…`): the challenge
//! as `text/plain` when the token matches the carrier's `verify_token`, 403
//! otherwise.

use actix_web::http::header::CONTENT_LENGTH;
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use futures::StreamExt;
use herald_actors::broker::{BrokerError, Outgoing};
use herald_actors::config::{CarrierKind, CarrierSpec};
use herald_actors::events;
use herald_carriers::http_util::SignatureError;
use herald_carriers::{http_sms, voice, whatsapp, Receipt};
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::api::error::ApiError;
use crate::api::AppState;
use crate::telemetry;

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/v1/callbacks/{carrier_id}")
            .route(web::post().to(receive))
            .route(web::get().to(handshake))
            .default_service(web::to(crate::api::method_not_allowed)),
    );
}

/// The parts of the OpenAPI document (`api::openapi`) for this module.
#[derive(utoipa::OpenApi)]
#[openapi(paths(receive, handshake))]
pub struct Api;

/// How one callback ended; the `outcome` label of `herald_callbacks_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Receipts published and confirmed.
    Accepted,
    /// Verified and readable, but nothing Herald tracks (e.g. an incoming
    /// WhatsApp message, an unmapped status word).
    Ignored,
    InvalidSignature,
    Malformed,
    /// RabbitMQ did not confirm; the carrier was told to retry.
    Unavailable,
    /// Unknown carrier, or one that takes no callbacks (or not this method).
    Unsupported,
    /// Subscription handshake answered with the challenge.
    Verified,
    /// Subscription handshake refused.
    Refused,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Accepted => "accepted",
            Outcome::Ignored => "ignored",
            Outcome::InvalidSignature => "invalid_signature",
            Outcome::Malformed => "malformed",
            Outcome::Unavailable => "unavailable",
            Outcome::Unsupported => "unsupported",
            Outcome::Verified => "verified",
            Outcome::Refused => "refused",
        }
    }
}

/// Why a callback was refused.
#[derive(Debug, thiserror::Error)]
pub enum CallbackError {
    #[error("carrier not found")]
    UnknownCarrier,
    #[error("carrier `{0}` takes no HTTP callbacks")]
    NoCallbacks(String),
    #[error("carrier `{0}` has no subscription handshake")]
    NoHandshake(String),
    #[error("signature refused: {0}")]
    Signature(SignatureError),
    #[error("{message}")]
    Malformed {
        code: &'static str,
        field: Option<String>,
        message: String,
    },
    #[error("{0}")]
    TooLarge(usize),
    #[error("subscription handshake refused: {0}")]
    Handshake(whatsapp::HandshakeError),
    #[error("publish failed: {0}")]
    Broker(BrokerError),
}

impl CallbackError {
    fn outcome(&self) -> Outcome {
        match self {
            CallbackError::UnknownCarrier
            | CallbackError::NoCallbacks(_)
            | CallbackError::NoHandshake(_) => Outcome::Unsupported,
            CallbackError::Signature(_) => Outcome::InvalidSignature,
            CallbackError::Malformed { .. } | CallbackError::TooLarge(_) => Outcome::Malformed,
            CallbackError::Handshake(_) => Outcome::Refused,
            CallbackError::Broker(_) => Outcome::Unavailable,
        }
    }

    fn malformed(code: &'static str, message: impl Into<String>) -> Self {
        CallbackError::Malformed {
            code,
            field: None,
            message: message.into(),
        }
    }

    fn missing(field: &str, message: impl Into<String>) -> Self {
        CallbackError::Malformed {
            code: "missing_field",
            field: Some(field.to_owned()),
            message: message.into(),
        }
    }
}

impl From<CallbackError> for ApiError {
    fn from(e: CallbackError) -> Self {
        match e {
            CallbackError::UnknownCarrier => ApiError::not_found("carrier"),
            CallbackError::NoCallbacks(_) => {
                ApiError::new(StatusCode::NOT_FOUND, "not_found", e.to_string())
            }
            CallbackError::NoHandshake(_) => ApiError::method_not_allowed(),
            CallbackError::Signature(reason) => ApiError::new(
                StatusCode::UNAUTHORIZED,
                "invalid_signature",
                format!("callback signature refused: {reason}"),
            ),
            CallbackError::Malformed {
                code,
                field,
                message,
            } => {
                let mut a = ApiError::bad_request(code, message);
                a.field = field;
                a
            }
            CallbackError::TooLarge(limit) => ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                format!("request body exceeds {limit} bytes"),
            ),
            CallbackError::Handshake(whatsapp::HandshakeError::TokenMismatch) => ApiError::new(
                StatusCode::FORBIDDEN,
                "invalid_verify_token",
                "hub.verify_token does not match",
            ),
            CallbackError::Handshake(whatsapp::HandshakeError::NotSubscribe) => {
                ApiError::bad_request("invalid_parameter", "hub.mode must be subscribe")
                    .with_field("hub.mode")
            }
            CallbackError::Handshake(whatsapp::HandshakeError::MissingChallenge) => {
                ApiError::bad_request("missing_parameter", "hub.challenge is missing")
                    .with_field("hub.challenge")
            }
            CallbackError::Broker(reason) => {
                tracing::warn!(%reason, "callback receipts not published; the carrier will retry");
                ApiError::unavailable("the message broker")
            }
        }
    }
}

/// Count the callback under its carrier (only configured ids become labels;
/// `outcome` is used when `result` is a success).
fn record<T>(carrier: &str, result: &Result<T, CallbackError>, outcome: Outcome, receipts: usize) {
    let label = match result {
        Err(CallbackError::UnknownCarrier) => "unknown",
        _ => carrier,
    };
    let outcome = result
        .as_ref()
        .err()
        .map_or(outcome, CallbackError::outcome);
    telemetry::callback(label, outcome, receipts);
}

fn carrier(state: &AppState, id: &str) -> Result<CarrierSpec, CallbackError> {
    state
        .plan()
        .carrier(id)
        .cloned()
        .ok_or(CallbackError::UnknownCarrier)
}

/// `POST /v1/callbacks/{carrier_id}`.
/// A carrier's receipts (HTTP SMS, WhatsApp Cloud API, voice).
///
/// No API key: verified with the carrier's own secret, in constant time.
/// WhatsApp: `X-Hub-Signature-256: sha256=<hex HMAC-SHA256 of the body>`
/// with `app_secret`; HTTP SMS: the configured header and secret, if any;
/// voice: `X-Voice-Signature: <hex>` with `callback_secret`. Answered 200
/// only once RabbitMQ confirmed the receipts.
#[utoipa::path(
    post,
    path = "/v1/callbacks/{carrier_id}",
    tag = "callbacks",
    operation_id = "carrier_callback",
    params(
        ("carrier_id" = String, Path, description = "The carrier's `id` in the carriers file", example = "whatsapp-cloud"),
        ("X-Hub-Signature-256" = Option<String>, Header, description = "WhatsApp carriers"),
        ("X-Voice-Signature" = Option<String>, Header, description = "Voice carriers"),
    ),
    request_body(description = "The carrier's own format: Meta's webhook JSON, the HTTP SMS carrier's JSON \
(read by its `callback` mapping), or voice form-encoded / JSON `CallSid`, `CallStatus`, `ErrorCode`, `Timestamp`",
        content(
            ("application/json", example = json!({"object": "whatsapp_business_account", "entry": [{"changes": [{"value": {"statuses": [
                {"id": "wamid.HBgM", "status": "delivered", "timestamp": "1763859000", "recipient_id": "250788123456"}]}}]}]})),
            ("application/x-www-form-urlencoded"),
        )),
    responses(
        (status = 200, description = "Receipts published", body = crate::api::schemas::CallbackReceived),
        (status = 400, description = "`invalid_json`, `missing_field`, …: a body Herald cannot read", body = crate::api::schemas::ErrorBody),
        (status = 401, description = "`invalid_signature`: nothing recorded", body = crate::api::schemas::ErrorBody),
        (status = 404, description = "`not_found`: unknown carrier, or an SMPP one", body = crate::api::schemas::ErrorBody),
        (status = 413, description = "`payload_too_large`", body = crate::api::schemas::ErrorBody),
        (status = 503, description = "`service_unavailable`: RabbitMQ away; retry", body = crate::api::schemas::ErrorBody,
            headers(("Retry-After" = u32, description = "Seconds"))),
    )
)]
async fn receive(
    req: HttpRequest,
    path: web::Path<String>,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let carrier_id = path.into_inner();
    let result = receive_inner(&req, &carrier_id, payload, &state).await;
    let (outcome, n) = match &result {
        Ok(0) => (Outcome::Ignored, 0),
        Ok(n) => (Outcome::Accepted, *n),
        Err(e) => (e.outcome(), 0),
    };
    record(&carrier_id, &result, outcome, n);
    let received = result?;
    Ok(HttpResponse::Ok().json(json!({ "received": received })))
}

async fn receive_inner(
    req: &HttpRequest,
    carrier_id: &str,
    payload: web::Payload,
    state: &AppState,
) -> Result<usize, CallbackError> {
    let spec = carrier(state, carrier_id)?;
    let body = read_body(req, payload, state.config.http.max_body_bytes).await?;
    let receipts = verify_and_parse(&spec, req, &body)?;
    if receipts.is_empty() {
        return Ok(0);
    }
    let topology = state.broker.topology();
    let batch: Vec<Outgoing> = receipts
        .into_iter()
        .map(|r| {
            let id = receipt_event_id(&spec.id, &r);
            events::receipt_with_id(topology, &spec.id, r, id)
        })
        .collect();
    state
        .broker
        .publish_confirmed(&batch)
        .await
        .map_err(CallbackError::Broker)?;
    Ok(batch.len())
}

/// `GET /v1/callbacks/{carrier_id}`: WhatsApp's subscription handshake.
/// Meta's subscription handshake for a WhatsApp carrier.
#[utoipa::path(
    get,
    path = "/v1/callbacks/{carrier_id}",
    tag = "callbacks",
    operation_id = "carrier_callback_handshake",
    params(
        ("carrier_id" = String, Path, description = "The carrier's `id` in the carriers file"),
        ("hub.mode" = String, Query, description = "`subscribe`"),
        ("hub.verify_token" = String, Query, description = "Must be the carrier's `verify_token`"),
        ("hub.challenge" = String, Query, description = "Echoed back when the token matches"),
    ),
    responses(
        (status = 200, description = "The challenge", content_type = "text/plain", body = String),
        (status = 400, description = "`invalid_parameter`, `missing_parameter`", body = crate::api::schemas::ErrorBody),
        (status = 403, description = "`invalid_verify_token`", body = crate::api::schemas::ErrorBody),
        (status = 404, description = "`not_found`: unknown carrier, or an SMPP one", body = crate::api::schemas::ErrorBody),
        (status = 405, description = "`method_not_allowed`: the carrier has no handshake", body = crate::api::schemas::ErrorBody),
    )
)]
async fn handshake(
    req: HttpRequest,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let carrier_id = path.into_inner();
    let result = carrier(&state, &carrier_id).and_then(|spec| match (spec.kind, &spec.whatsapp) {
        (CarrierKind::Whatsapp, Some(w)) => {
            whatsapp::verify_subscription_query(req.query_string(), &w.verify_token)
                .map_err(CallbackError::Handshake)
        }
        (CarrierKind::Smpp, _) => Err(CallbackError::NoCallbacks(spec.id.clone())),
        _ => Err(CallbackError::NoHandshake(spec.id.clone())),
    });
    record(&carrier_id, &result, Outcome::Verified, 0);
    let challenge = result?;
    Ok(HttpResponse::Ok()
        .content_type("text/plain; charset=utf-8")
        .insert_header(("X-Content-Type-Options", "nosniff"))
        .body(challenge))
}

/// Check the signature, then read the receipts, as the carrier's kind says.
fn verify_and_parse(
    spec: &CarrierSpec,
    req: &HttpRequest,
    body: &[u8],
) -> Result<Vec<Receipt>, CallbackError> {
    let header = |name: &str| -> Result<Option<&str>, CallbackError> {
        match req.headers().get(name) {
            None => Ok(None),
            Some(v) => v
                .to_str()
                .map(Some)
                .map_err(|_| CallbackError::Signature(SignatureError::Malformed)),
        }
    };
    match (spec.kind, &spec.whatsapp, &spec.http_sms, &spec.voice) {
        (CarrierKind::Whatsapp, Some(w), _, _) => {
            require_secret(&spec.id, &w.app_secret)?;
            whatsapp::verify_signature(
                w.app_secret.as_bytes(),
                body,
                header(whatsapp::SIGNATURE_HEADER)?,
            )
            .map_err(CallbackError::Signature)?;
            whatsapp::parse_statuses(body).map_err(|e| match e {
                whatsapp::WebhookError::Json(m) => {
                    CallbackError::malformed("invalid_json", format!("body is not JSON: {m}"))
                }
                whatsapp::WebhookError::NoEntries => {
                    CallbackError::missing("entry", "webhook body has no entry array")
                }
                whatsapp::WebhookError::Signature(s) => CallbackError::Signature(s),
            })
        }
        (CarrierKind::HttpSms, _, Some(h), _) => {
            let mapping = &h.callback;
            if let Some(sig) = &mapping.signature {
                require_secret(&spec.id, &sig.secret)?;
                mapping
                    .verify(body, header(&sig.header)?)
                    .map_err(CallbackError::Signature)?;
            }
            http_sms::parse_callback(mapping, body).map_err(|e| match e {
                http_sms::CallbackError::Json(m) => {
                    CallbackError::malformed("invalid_json", format!("body is not JSON: {m}"))
                }
                http_sms::CallbackError::NoItems(p) => {
                    CallbackError::missing(&p, format!("callback has no array at {p}"))
                }
                http_sms::CallbackError::MissingRef(p) => {
                    CallbackError::missing(&p, format!("a status has no carrier reference at {p}"))
                }
                http_sms::CallbackError::MissingStatus(p) => {
                    CallbackError::missing(&p, format!("a status has no status at {p}"))
                }
                http_sms::CallbackError::Signature(s) => CallbackError::Signature(s),
            })
        }
        (CarrierKind::Voice, _, _, Some(v)) => {
            require_secret(&spec.id, &v.callback_secret)?;
            voice::verify_signature(
                v.callback_secret.as_bytes(),
                body,
                header(voice::SIGNATURE_HEADER)?,
            )
            .map_err(CallbackError::Signature)?;
            match voice::parse_status_callback(body) {
                Ok(receipt) => Ok(vec![receipt]),
                // A call status Herald does not know is not the carrier's
                // mistake to retry: answered, counted as ignored.
                Err(voice::CallbackError::UnknownStatus(s)) => {
                    tracing::info!(carrier = %spec.id, status = %s, "voice callback: unknown call status skipped");
                    Ok(vec![])
                }
                Err(voice::CallbackError::Json(m)) => Err(CallbackError::malformed(
                    "invalid_json",
                    format!("body is not JSON: {m}"),
                )),
                Err(voice::CallbackError::MissingCallSid) => {
                    Err(CallbackError::missing("CallSid", "callback has no CallSid"))
                }
                Err(voice::CallbackError::MissingStatus) => Err(CallbackError::missing(
                    "CallStatus",
                    "callback has no CallStatus",
                )),
                Err(voice::CallbackError::Signature(s)) => Err(CallbackError::Signature(s)),
            }
        }
        _ => Err(CallbackError::NoCallbacks(spec.id.clone())),
    }
}

/// An empty secret would make any HMAC "valid" for anyone who guesses it is
/// empty: refuse every callback and say why in the log.
fn require_secret(carrier: &str, secret: &str) -> Result<(), CallbackError> {
    if secret.is_empty() {
        tracing::error!(
            carrier,
            "carrier callback secret is empty; every callback is refused"
        );
        return Err(CallbackError::Signature(SignatureError::Mismatch));
    }
    Ok(())
}

/// The request body, at most `limit` bytes.
async fn read_body(
    req: &HttpRequest,
    mut payload: web::Payload,
    limit: usize,
) -> Result<web::Bytes, CallbackError> {
    let declared = req
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|len| len > limit) {
        return Err(CallbackError::TooLarge(limit));
    }
    let mut body = web::BytesMut::new();
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|e| CallbackError::malformed("invalid_body", e.to_string()))?;
        if body.len() + chunk.len() > limit {
            return Err(CallbackError::TooLarge(limit));
        }
        body.extend_from_slice(&chunk);
    }
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(CallbackError::malformed(
            "empty_body",
            "request body is empty",
        ));
    }
    Ok(body.freeze())
}

/// The event id of a receipt: the same for the same receipt from the same
/// carrier, so a callback the carrier retries (our 200 lost, or a 503 after
/// part of the batch was confirmed) is recognised by the projector.
fn receipt_event_id(carrier: &str, r: &Receipt) -> String {
    let mut h = Sha256::new();
    for part in [
        carrier.as_bytes(),
        r.carrier_ref.as_bytes(),
        format!("{:?}", r.state).as_bytes(),
        r.raw.as_bytes(),
    ] {
        h.update((part.len() as u64).to_be_bytes());
        h.update(part);
    }
    format!("evt_cb_{}", &hex::encode(h.finalize())[..32])
}

#[cfg(test)]
mod tests {
    use super::*;
    use herald_carriers::ReceiptState;

    fn receipt(raw: &str) -> Receipt {
        Receipt {
            carrier_ref: "wamid.A".into(),
            state: ReceiptState::Delivered,
            error_code: None,
            done_at: None,
            raw: raw.into(),
            is_final: true,
        }
    }

    #[test]
    fn event_ids_follow_the_receipt_not_the_time() {
        let a = receipt_event_id("wa", &receipt("{\"status\":\"delivered\"}"));
        assert_eq!(
            a,
            receipt_event_id("wa", &receipt("{\"status\":\"delivered\"}"))
        );
        assert!(a.starts_with("evt_cb_") && a.len() == 7 + 32);
        assert_ne!(
            a,
            receipt_event_id("wa2", &receipt("{\"status\":\"delivered\"}"))
        );
        assert_ne!(
            a,
            receipt_event_id("wa", &receipt("{\"status\":\"delivered\",\"t\":1}"))
        );
        let mut read = receipt("{\"status\":\"delivered\"}");
        read.state = ReceiptState::Read;
        assert_ne!(a, receipt_event_id("wa", &read));
    }

    #[test]
    fn refusals_map_to_4xx_with_codes() {
        let e: ApiError = CallbackError::Signature(SignatureError::Missing).into();
        assert_eq!((e.status.as_u16(), e.code), (401, "invalid_signature"));
        let e: ApiError = CallbackError::missing("CallSid", "x").into();
        assert_eq!((e.status.as_u16(), e.code), (400, "missing_field"));
        assert_eq!(e.field.as_deref(), Some("CallSid"));
        let e: ApiError = CallbackError::Handshake(whatsapp::HandshakeError::TokenMismatch).into();
        assert_eq!(e.status.as_u16(), 403);
        let e: ApiError = CallbackError::UnknownCarrier.into();
        assert_eq!(e.status.as_u16(), 404);
        let e: ApiError = CallbackError::Broker(BrokerError::Timeout).into();
        assert_eq!(e.status.as_u16(), 503);
        assert!(e
            .headers
            .iter()
            .any(|(n, _)| n == actix_web::http::header::RETRY_AFTER));
    }
}
