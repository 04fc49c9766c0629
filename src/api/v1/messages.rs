//! `/v1/messages`: send (`POST`), look one up with its timeline (`GET /{id}`),
//! and list with filters and keyset pagination (`GET`).
//!
//! Sending: authenticate, parse and validate (4xx naming the field, nothing
//! stored), then hand the message to group commit, which admits it with its
//! batch (one unit of the tenant's rate, 429; `Idempotency-Key`: Redis first,
//! PostgreSQL's unique index as the backstop) and writes it; answer 202 once
//! it is committed.

use std::time::{Duration, Instant};

use actix_web::http::header::{HeaderName, LOCATION};
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use base64::Engine;
use chrono::{DateTime, SubsecRound, Utc};
use herald_actors::MessageId;
use herald_carriers::{Channel, Content};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use super::send::{validate, SendRequest};
use crate::api::auth::Authenticated;
use crate::api::error::{rate_limit_headers, ApiError};
use crate::api::{bounded, from_json, read_json, AppState};
use crate::ingest::{Admit, Outcome};
use crate::kv::{Admission, Remember, RememberedResponse};
use crate::message::{EventRecord, MessageRecord, MessageStatus};
use crate::store::messages::{Inserted, MessageFilter};
use crate::telemetry;

pub const IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static("idempotency-key");
pub const IDEMPOTENT_REPLAYED: HeaderName = HeaderName::from_static("idempotent-replayed");
/// Longest idempotency key accepted.
pub const MAX_IDEMPOTENCY_KEY: usize = 255;
/// Page size bounds of the listing.
pub const DEFAULT_PAGE: i64 = 20;
pub const MAX_PAGE: i64 = 100;

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/v1/messages")
            .route(web::post().to(create))
            .route(web::get().to(list))
            .default_service(web::to(crate::api::method_not_allowed)),
    )
    .service(
        web::resource("/v1/messages/{id}")
            .route(web::get().to(show))
            .default_service(web::to(crate::api::method_not_allowed)),
    );
}

/// The parts of the OpenAPI document (`api::openapi`) for this module.
#[derive(utoipa::OpenApi)]
#[openapi(paths(create, list, show))]
pub struct Api;

/// The JSON shape of a message.
pub fn view(m: &MessageRecord) -> Value {
    serde_json::to_value(MessageView::of(m)).expect("a message view serialises")
}

/// [`view`] as JSON text, without the intermediate `Value` (the accept
/// path's answer).
pub fn view_string(m: &MessageRecord) -> String {
    serde_json::to_string(&MessageView::of(m)).expect("a message view serialises")
}

/// A message as the API shows it. Fields in alphabetical order, as a JSON
/// object built with `json!` prints them; exactly one of `audio_url`,
/// `body`, `say` and `template` is present.
#[derive(serde::Serialize)]
struct MessageView<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    audio_url: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    body: Option<&'a str>,
    callback_url: &'a Option<String>,
    carrier: &'a Option<String>,
    carrier_ref: &'a Option<String>,
    channel: Channel,
    created_at: DateTime<Utc>,
    encoding: &'a Option<String>,
    expires_at: Option<DateTime<Utc>>,
    from: &'a str,
    id: &'a MessageId,
    metadata: &'a serde_json::Map<String, Value>,
    priority: herald_actors::payload::Priority,
    #[serde(skip_serializing_if = "Option::is_none")]
    say: Option<&'a str>,
    scheduled_at: Option<DateTime<Utc>>,
    segments: u32,
    status: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    template: Option<TemplateView<'a>>,
    to: &'a str,
    updated_at: DateTime<Utc>,
    validity_seconds: Option<i32>,
}

#[derive(serde::Serialize)]
struct TemplateView<'a> {
    language: &'a str,
    name: &'a str,
    params: &'a [String],
}

impl<'a> MessageView<'a> {
    fn of(m: &'a MessageRecord) -> Self {
        let mut v = MessageView {
            audio_url: None,
            body: None,
            callback_url: &m.callback_url,
            carrier: &m.carrier,
            carrier_ref: &m.carrier_ref,
            channel: m.channel,
            created_at: m.created_at,
            encoding: &m.encoding,
            expires_at: m.expires_at,
            from: &m.from,
            id: &m.id,
            metadata: &m.metadata,
            priority: m.priority,
            say: None,
            scheduled_at: m.scheduled_at,
            segments: m.segments,
            status: &m.status,
            template: None,
            to: &m.to,
            updated_at: m.updated_at,
            validity_seconds: m.validity_seconds,
        };
        match &m.content {
            Content::Text { body } => v.body = Some(body),
            Content::Template {
                name,
                language,
                params,
            } => {
                v.template = Some(TemplateView {
                    language,
                    name,
                    params,
                })
            }
            Content::Say { text } => v.say = Some(text),
            Content::Audio { url } => v.audio_url = Some(url),
        }
        v
    }
}

fn event_view(e: &EventRecord) -> Value {
    json!({
        "cursor": e.cursor,
        "seq": e.seq,
        "status": e.status,
        "previous_status": e.previous_status,
        "final": e.is_final,
        "carrier": e.carrier,
        "detail": e.detail,
        "at": e.at,
    })
}

/// SHA-256 of the canonical JSON (object keys sorted), so whitespace and
/// key order do not make a retry look like a different request.
fn request_hash(body: &Value) -> String {
    hex::encode(Sha256::digest(body.to_string().as_bytes()))
}

fn idempotency_key(req: &HttpRequest) -> Result<Option<String>, ApiError> {
    let Some(raw) = req.headers().get(&IDEMPOTENCY_KEY) else {
        return Ok(None);
    };
    let key = raw.to_str().unwrap_or("");
    let ok = !key.is_empty()
        && key.len() <= MAX_IDEMPOTENCY_KEY
        && key.bytes().all(|b| b.is_ascii_graphic());
    if !ok {
        return Err(ApiError::bad_request(
            "invalid_idempotency_key",
            format!("Idempotency-Key must be 1-{MAX_IDEMPOTENCY_KEY} printable ASCII characters"),
        )
        .with_field("Idempotency-Key"));
    }
    Ok(Some(key.to_owned()))
}

fn conflict() -> ApiError {
    ApiError::new(
        StatusCode::CONFLICT,
        "idempotency_conflict",
        "this Idempotency-Key was used with a different request body",
    )
    .with_field("Idempotency-Key")
}

fn replay(status: u16, body: String, location: Option<String>) -> HttpResponse {
    let mut r = HttpResponse::build(StatusCode::from_u16(status).unwrap_or(StatusCode::ACCEPTED));
    r.insert_header((IDEMPOTENT_REPLAYED, "true"));
    if let Some(l) = location {
        r.insert_header((LOCATION, l));
    }
    r.content_type("application/json").body(body)
}

fn location(id: &MessageId) -> String {
    format!("/v1/messages/{id}")
}

/// Send a message.
///
/// Validated, rate-limited, and stored in PostgreSQL before the answer: a
/// 202 means Herald has it. The same `Idempotency-Key` with the same body
/// within 24 h answers the original 202 again (`Idempotent-Replayed: true`)
/// and creates nothing. A refused request stores nothing.
#[utoipa::path(
    post,
    path = "/v1/messages",
    tag = "messages",
    operation_id = "send_message",
    security(("tenant_key" = [])),
    params(
        ("Idempotency-Key" = Option<String>, Header,
            description = "1-255 printable ASCII characters; makes retries safe", example = "order-1234"),
    ),
    request_body(
        content = super::send::SendRequest,
        content_type = "application/json",
        examples(
            ("sms" = (summary = "An SMS", value = json!({
                "channel": "sms", "to": "+250788123456", "from": "HERALD",
                "body": "Muraho! Your code is 4321"}))),
            ("sms_scheduled" = (summary = "A high-priority SMS, scheduled, with metadata", value = json!({
                "channel": "sms", "to": "+256772123456", "from": "KAMPALA",
                "body": "Your parcel arrives today", "priority": "high",
                "scheduled_at": "2026-12-01T08:00:00Z", "validity_seconds": 3600,
                "callback_url": "https://example.com/herald", "metadata": {"order": "1234"}}))),
            ("whatsapp_text" = (summary = "A WhatsApp text", value = json!({
                "channel": "whatsapp", "to": "+250788123456", "from": "+250780000001",
                "body": "Your order has shipped"}))),
            ("whatsapp_template" = (summary = "A WhatsApp template", value = json!({
                "channel": "whatsapp", "to": "+243812345678", "from": "+250780000001",
                "template": {"name": "otp", "language": "fr", "params": ["123456"]}}))),
            ("voice_say" = (summary = "A voice call that speaks", value = json!({
                "channel": "voice", "to": "+250788123456", "from": "+250780000002",
                "say": "Your code is 4 3 2 1"}))),
            ("voice_audio" = (summary = "A voice call that plays audio", value = json!({
                "channel": "voice", "to": "+256772123456", "from": "+250780000002",
                "audio_url": "https://example.com/greeting.mp3"}))),
        )
    ),
    responses(
        (status = 202, description = "Accepted and stored (status `queued`, or `scheduled`)",
            body = crate::api::schemas::Message,
            headers(
                ("Location" = String, description = "`/v1/messages/{id}`"),
                ("RateLimit-Limit" = u32, description = "Messages per second allowed"),
                ("RateLimit-Remaining" = u32, description = "Left in the current burst"),
                ("RateLimit-Reset" = u32, description = "Seconds until the burst is full again"),
                ("Idempotent-Replayed" = String, description = "`true` when this answers an earlier request with the same key"),
            )),
        (status = 400, description = "`invalid_json` (with line and column), `invalid_idempotency_key`", body = crate::api::schemas::ErrorBody),
        (status = 401, description = "`unauthorized`: missing or wrong API key", body = crate::api::schemas::ErrorBody),
        (status = 403, description = "`channel_not_allowed`", body = crate::api::schemas::ErrorBody),
        (status = 409, description = "`idempotency_conflict`: the key was used with another body", body = crate::api::schemas::ErrorBody),
        (status = 413, description = "`payload_too_large`: over `http.max_body_bytes`", body = crate::api::schemas::ErrorBody),
        (status = 415, description = "`unsupported_media_type`: not `application/json`", body = crate::api::schemas::ErrorBody),
        (status = 422, description = "A field is wrong; `field` names it: `missing_field`, `unknown_field`, `invalid_type`, \
`invalid_value`, `invalid_phone_number`, `invalid_sender`, `too_many_segments`, `invalid_url`, `invalid_template`, \
`invalid_schedule`, `invalid_validity`, `invalid_metadata`, `field_not_allowed`, `conflicting_fields`, `empty_field`, \
`body_too_long`, `say_too_long`", body = crate::api::schemas::ErrorBody),
        (status = 429, description = "`rate_limited`", body = crate::api::schemas::ErrorBody, headers(
            ("Retry-After" = u32, description = "Seconds"),
            ("RateLimit-Limit" = u32), ("RateLimit-Remaining" = u32), ("RateLimit-Reset" = u32),
        )),
        (status = 503, description = "`service_unavailable`: PostgreSQL unreachable; nothing stored", body = crate::api::schemas::ErrorBody,
            headers(("Retry-After" = u32, description = "Seconds"))),
    )
)]
async fn create(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
    Authenticated(tenant): Authenticated,
) -> Result<HttpResponse, ApiError> {
    let result = create_inner(req, payload, &state, &tenant).await;
    if let Err(e) = &result {
        telemetry::message_rejected(e.code);
    }
    result
}

async fn create_inner(
    req: HttpRequest,
    payload: web::Payload,
    state: &AppState,
    tenant: &crate::tenant::Tenant,
) -> Result<HttpResponse, ApiError> {
    let key = idempotency_key(&req)?;
    let raw = read_json(&req, payload, state.config.http.max_body_bytes).await?;
    let hash = request_hash(&raw);
    let send: SendRequest = from_json(raw)?;
    // PostgreSQL keeps microseconds: answer with what a later GET shows.
    let now = Utc::now().trunc_subsecs(6);
    let mut message = validate(send, tenant, &state.config.limits, now)?;

    // Admitted with its group commit, in one Redis pipeline for the batch:
    // a replay is answered before the rate limit (retrying is free), a new
    // request takes one from the tenant's budget. Without Redis,
    // PostgreSQL's unique index still finds replays and traffic goes
    // through unthrottled.
    message.idempotency_key = key.clone();
    message.request_hash = Some(hash.clone());
    let channel = message.channel;
    let admit = Admit {
        rate: tenant.rate_limit,
        burst: tenant.rate_limit * state.config.limits.burst_seconds,
    };
    let committing = Instant::now();
    let outcome = state.ingest.accept(message.clone(), Some(admit)).await;
    telemetry::accept_stage("commit", committing.elapsed());
    let (inserted, decision) = match outcome? {
        Outcome::Refused(Admission::Replay(remembered)) if remembered.request_hash == hash => {
            return Ok(replay(remembered.status, remembered.body, None));
        }
        Outcome::Refused(Admission::Replay(_)) => return Err(conflict()),
        Outcome::Refused(Admission::Rate(d)) => return Err(ApiError::rate_limited(&d)),
        Outcome::Written { inserted, rate } => (inserted, rate),
    };
    let (record, replayed) = match inserted {
        Inserted::New => (message, false),
        Inserted::Existing(existing) => {
            if existing.request_hash.as_deref() != Some(hash.as_str()) {
                return Err(conflict());
            }
            (*existing, true)
        }
    };
    let body = view_string(&record);
    if let Some(key) = key {
        // Remembered after the answer, off its path: a replay that comes
        // first is found by PostgreSQL's unique index instead.
        state.remember.offer(Remember {
            tenant: tenant.id.as_str().to_owned(),
            key,
            response: RememberedResponse {
                request_hash: hash,
                status: 202,
                body: body.clone(),
            },
            ttl: Duration::from_secs(state.config.idempotency.ttl_seconds),
        });
    }
    if replayed {
        return Ok(replay(202, body, Some(location(&record.id))));
    }
    telemetry::message_accepted(channel.as_str());
    let mut response = HttpResponse::Accepted();
    response.insert_header((LOCATION, location(&record.id)));
    for (name, value) in decision.iter().flat_map(rate_limit_headers) {
        response.insert_header((name, value));
    }
    Ok(response.content_type("application/json").body(body))
}

/// A message with its status timeline and webhook attempts.
#[utoipa::path(
    get,
    path = "/v1/messages/{id}",
    tag = "messages",
    operation_id = "get_message",
    security(("tenant_key" = [])),
    params(("id" = String, Path, description = "The message id", example = "msg_01a205dfb1c577468c8617d90243ed2f")),
    responses(
        (status = 200, description = "The message", body = crate::api::schemas::MessageDetail),
        (status = 401, description = "`unauthorized`", body = crate::api::schemas::ErrorBody),
        (status = 404, description = "`not_found` (also another tenant's message)", body = crate::api::schemas::ErrorBody),
        (status = 503, description = "`service_unavailable`", body = crate::api::schemas::ErrorBody),
    )
)]
async fn show(
    path: web::Path<String>,
    state: web::Data<AppState>,
    Authenticated(tenant): Authenticated,
) -> Result<HttpResponse, ApiError> {
    let id = MessageId::parse(&path).ok_or_else(|| ApiError::not_found("message"))?;
    let message = state
        .store
        .message(&tenant.id, &id)
        .await?
        .ok_or_else(|| ApiError::not_found("message"))?;
    let events = state.store.message_events(&id).await?;
    let mut v = view(&message);
    v["events"] = Value::Array(events.iter().map(event_view).collect());
    // --- webhook attempts (issue 5) ---
    let attempts = state.store.message_attempts(&tenant.id, &id).await?;
    v["webhook_attempts"] =
        Value::Array(attempts.iter().map(super::webhooks::attempt_view).collect());
    // --- end webhook attempts ---
    Ok(HttpResponse::Ok().json(v))
}

fn parse_filter(query: &str) -> Result<MessageFilter, ApiError> {
    let mut filter = MessageFilter {
        limit: DEFAULT_PAGE,
        ..Default::default()
    };
    for (name, value) in url::form_urlencoded::parse(query.as_bytes()) {
        let bad = |message: String| ApiError::invalid_parameter(&name, message);
        match name.as_ref() {
            "status" => {
                let status = MessageStatus::parse(&value)
                    .ok_or_else(|| bad(format!("unknown status `{value}`")))?;
                filter.status = Some(status.as_str().to_owned());
            }
            "channel" => {
                filter.channel = Some(
                    Channel::parse(&value)
                        .ok_or_else(|| bad(format!("unknown channel `{value}`")))?,
                );
            }
            "to" => filter.to = Some(value.into_owned()),
            "created_after" => {
                let at = DateTime::parse_from_rfc3339(&value)
                    .map_err(|_| bad("created_after must be an RFC 3339 time".into()))?;
                filter.created_after = Some(at.with_timezone(&Utc));
            }
            "limit" => filter.limit = bounded("limit", &value, 1..=MAX_PAGE)?,
            "cursor" => {
                let decoded = base64::engine::general_purpose::URL_SAFE_NO_PAD
                    .decode(value.as_bytes())
                    .ok()
                    .and_then(|b| String::from_utf8(b).ok())
                    .and_then(|s| MessageId::parse(&s))
                    .ok_or_else(|| bad("cursor is not one Herald gave out".into()))?;
                filter.before_id = Some(decoded);
            }
            other => return Err(ApiError::unknown_parameter(other)),
        }
    }
    Ok(filter)
}

/// The tenant's messages, newest first, in keyset pages.
#[utoipa::path(
    get,
    path = "/v1/messages",
    tag = "messages",
    operation_id = "list_messages",
    security(("tenant_key" = [])),
    params(
        ("status" = Option<crate::message::MessageStatus>, Query, description = "Only messages in this status"),
        ("channel" = Option<crate::api::schemas::Channel>, Query, description = "Only this channel"),
        ("to" = Option<String>, Query, description = "Only to this number (E.164)", example = "+250788123456"),
        ("created_after" = Option<chrono::DateTime<chrono::Utc>>, Query, description = "RFC 3339"),
        ("limit" = Option<i64>, Query, minimum = 1, maximum = 100, description = "Page size (default 20)"),
        ("cursor" = Option<String>, Query, description = "The `next_cursor` of the previous page"),
    ),
    responses(
        (status = 200, description = "One page", body = crate::api::schemas::MessagePage),
        (status = 400, description = "`invalid_parameter`, `unknown_parameter`", body = crate::api::schemas::ErrorBody),
        (status = 401, description = "`unauthorized`", body = crate::api::schemas::ErrorBody),
        (status = 503, description = "`service_unavailable`", body = crate::api::schemas::ErrorBody),
    )
)]
async fn list(
    req: HttpRequest,
    state: web::Data<AppState>,
    Authenticated(tenant): Authenticated,
) -> Result<HttpResponse, ApiError> {
    let filter = parse_filter(req.query_string())?;
    let page = state.store.list_messages(&tenant.id, &filter).await?;
    let next_cursor = (page.len() as i64 == filter.limit)
        .then(|| page.last())
        .flatten()
        .map(|m| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(m.id.as_str()));
    Ok(HttpResponse::Ok().json(json!({
        "data": page.iter().map(view).collect::<Vec<_>>(),
        "next_cursor": next_cursor,
    })))
}

#[cfg(test)]
mod tests {
    use super::*;
    use herald_actors::payload::Priority;
    use herald_actors::TenantId;

    fn record(content: Content) -> MessageRecord {
        let at = Utc::now();
        MessageRecord {
            id: MessageId::from_trusted("msg_1".into()),
            tenant_id: TenantId::from_trusted("ten_1".into()),
            channel: Channel::Sms,
            to: "+250788123456".into(),
            from: "HERALD".into(),
            content,
            segments: 1,
            encoding: Some("gsm7".into()),
            priority: Priority::Normal,
            status: "queued".into(),
            status_seq: 1,
            carrier: None,
            carrier_ref: None,
            callback_url: None,
            validity_seconds: Some(60),
            expires_at: None,
            scheduled_at: None,
            metadata: serde_json::Map::new(),
            idempotency_key: None,
            request_hash: None,
            created_at: at,
            updated_at: at,
        }
    }

    #[test]
    fn the_view_has_every_field_and_only_its_content_key() {
        let common = [
            "callback_url",
            "carrier",
            "carrier_ref",
            "channel",
            "created_at",
            "encoding",
            "expires_at",
            "from",
            "id",
            "metadata",
            "priority",
            "scheduled_at",
            "segments",
            "status",
            "to",
            "updated_at",
            "validity_seconds",
        ];
        let cases = [
            (Content::Text { body: "hi".into() }, "body"),
            (Content::Say { text: "hi".into() }, "say"),
            (
                Content::Audio {
                    url: "https://x.test/a.mp3".into(),
                },
                "audio_url",
            ),
            (
                Content::Template {
                    name: "otp".into(),
                    language: "en".into(),
                    params: vec!["1234".into()],
                },
                "template",
            ),
        ];
        for (content, key) in cases {
            let m = record(content);
            let v = view(&m);
            let mut expected: Vec<&str> = common.to_vec();
            expected.push(key);
            expected.sort_unstable();
            let keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
            assert_eq!(keys, expected);
            assert_eq!(view_string(&m), v.to_string(), "the same text either way");
        }
        let t = view(&record(Content::Template {
            name: "otp".into(),
            language: "en".into(),
            params: vec!["1234".into()],
        }));
        assert_eq!(
            t["template"],
            json!({"name": "otp", "language": "en", "params": ["1234"]})
        );
        let m = record(Content::Text { body: "hi".into() });
        assert_eq!(view(&m)["body"], "hi");
        assert_eq!(view(&m)["channel"], "sms");
        assert_eq!(view(&m)["priority"], "normal");
        assert_eq!(view(&m)["encoding"], "gsm7");
        assert_eq!(view(&m)["carrier"], Value::Null);
    }
}
