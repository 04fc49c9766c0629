//! The wire shapes of Herald's HTTP API, as the OpenAPI document
//! (`GET /openapi.json`, see [`super::openapi`]) describes them.
//!
//! Request bodies take their schema where they are parsed
//! ([`super::v1::send::SendRequest`], the webhook endpoint request); the
//! answers, which handlers build with `json!`, are described here field for
//! field. These types exist for the document only: nothing serialises them (`#[serde]` attributes here only shape the schema).
//! `tests/openapi.rs` checks real answers against these schemas (types,
//! required fields, and no undocumented field), so the two cannot part
//! unnoticed.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use utoipa::ToSchema;

use crate::message::MessageStatus;

/// Every error answer: a stable `code`, a `message` for people, and the
/// `field` (body field, query parameter or header) at fault when there is one.
#[derive(ToSchema)]
#[schema(example = json!({"error": {"code": "invalid_phone_number",
    "message": "to must be an E.164 number such as +250788123456", "field": "to"}}))]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

/// What went wrong.
#[derive(ToSchema)]
pub struct ErrorDetail {
    /// Machine-readable and stable: `invalid_json`, `unauthorized`,
    /// `not_found`, `invalid_phone_number`, `rate_limited`, … (the README
    /// lists every code by status).
    #[schema(example = "invalid_phone_number")]
    pub code: String,
    /// For people; the wording may change.
    pub message: String,
    /// The request field, query parameter or header at fault.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

/// A message channel.
#[derive(ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Channel {
    Sms,
    Whatsapp,
    Voice,
}

/// How urgently a message should go out (`high` is released first).
#[derive(ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Priority {
    Normal,
    High,
}

/// A message as Herald holds it. Exactly one of `body`, `template`, `say`
/// and `audio_url` is present, as it was sent.
#[derive(ToSchema)]
pub struct Message {
    #[schema(example = "msg_01a205dfb1c577468c8617d90243ed2f")]
    pub id: String,
    pub status: MessageStatus,
    pub channel: Channel,
    /// E.164.
    #[schema(example = "+250788123456")]
    pub to: String,
    #[schema(example = "HERALD")]
    pub from: String,
    /// SMS and WhatsApp text.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
    /// WhatsApp template.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub template: Option<super::v1::send::TemplateRequest>,
    /// Voice: text to speak.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub say: Option<String>,
    /// Voice: audio to play.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub audio_url: Option<String>,
    /// SMS parts (1 for WhatsApp and voice).
    pub segments: u32,
    /// SMS: `gsm7` or `ucs2`.
    pub encoding: Option<String>,
    pub priority: Priority,
    pub callback_url: Option<String>,
    pub validity_seconds: Option<i32>,
    pub expires_at: Option<DateTime<Utc>>,
    pub scheduled_at: Option<DateTime<Utc>>,
    pub metadata: BTreeMap<String, String>,
    /// The carrier connection that took it, once routed.
    pub carrier: Option<String>,
    /// The carrier's reference, once submitted.
    pub carrier_ref: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// A message with its status timeline and every webhook attempt about it.
#[derive(ToSchema)]
pub struct MessageDetail {
    #[serde(flatten)]
    pub message: Message,
    /// Oldest first.
    pub events: Vec<StatusEvent>,
    pub webhook_attempts: Vec<WebhookAttempt>,
}

/// One page of `GET /v1/messages`, newest first.
#[derive(ToSchema)]
pub struct MessagePage {
    pub data: Vec<Message>,
    /// Pass as `cursor` for the next page; null on the last page.
    pub next_cursor: Option<String>,
}

/// One entry of a message's status log.
#[derive(ToSchema)]
pub struct StatusEvent {
    /// Position in the tenant's event log (`GET /v1/events?after=`).
    pub cursor: i64,
    /// Position in this message's log, from 1.
    pub seq: i32,
    pub status: MessageStatus,
    pub previous_status: Option<MessageStatus>,
    /// Whether `status` is final.
    #[serde(rename = "final")]
    pub is_final: bool,
    pub carrier: Option<String>,
    /// The carrier's raw code and receipt details; `applied` says whether
    /// the event moved the message.
    pub detail: serde_json::Value,
    pub at: DateTime<Utc>,
}

/// An entry of the tenant's event log (`GET /v1/events`).
#[derive(ToSchema)]
pub struct FeedEvent {
    pub message_id: String,
    #[serde(flatten)]
    pub event: StatusEvent,
}

/// One page of the event log, in cursor order.
#[derive(ToSchema)]
pub struct EventPage {
    pub data: Vec<FeedEvent>,
    /// Pass as `after` for the next page (the `after` given when empty).
    pub next_after: i64,
}

/// A text frame of `GET /v1/stream`: a feed entry plus the message's channel.
#[derive(ToSchema)]
pub struct StreamEvent {
    #[serde(flatten)]
    pub event: FeedEvent,
    pub channel: Channel,
}

/// A tenant's webhook endpoint.
#[derive(ToSchema)]
pub struct WebhookEndpoint {
    #[schema(example = "whe_0192f3a4b5c67d8e9f0a1b2c3d4e5f60")]
    pub id: String,
    pub url: String,
    pub description: Option<String>,
    pub enabled: bool,
    /// `gone` (answered 410) or `failing` (failed for too long).
    pub disabled_reason: Option<String>,
    pub disabled_at: Option<DateTime<Utc>>,
    /// Since when every delivery has failed.
    pub failing_since: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    /// The message statuses delivered to it; null: every status.
    #[schema(example = json!(["delivered", "failed", "sent", "undelivered"]))]
    pub statuses: Option<Vec<String>>,
}

/// A new endpoint and its signing secret, shown this once.
#[derive(ToSchema)]
pub struct WebhookEndpointCreated {
    #[serde(flatten)]
    pub endpoint: WebhookEndpoint,
    #[schema(example = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")]
    pub secret: String,
}

/// An endpoint with its recent attempts and notices, newest first.
#[derive(ToSchema)]
pub struct WebhookEndpointDetail {
    #[serde(flatten)]
    pub endpoint: WebhookEndpoint,
    pub attempts: Vec<WebhookAttempt>,
}

/// The tenant's endpoints.
#[derive(ToSchema)]
pub struct WebhookEndpointList {
    pub data: Vec<WebhookEndpoint>,
}

/// One delivery attempt, or a notice about the endpoint.
#[derive(ToSchema)]
pub struct WebhookAttempt {
    /// `message.status`, or `endpoint.disabled` for a notice.
    #[serde(rename = "type")]
    pub kind: String,
    /// The `webhook-id` header (`evt_<cursor>`), the same on every retry.
    pub webhook_id: String,
    pub cursor: Option<i64>,
    pub message_id: Option<String>,
    pub endpoint_id: Option<String>,
    pub url: String,
    pub attempt: i32,
    /// `succeeded`, `retrying`, `failed` or `notice`.
    pub outcome: String,
    pub status_code: Option<i32>,
    pub latency_ms: Option<i32>,
    pub error: Option<String>,
    pub next_try_at: Option<DateTime<Utc>>,
    pub at: Option<DateTime<Utc>>,
}

/// How many deliveries a replay queued.
#[derive(ToSchema)]
pub struct ReplayQueued {
    pub replayed: u64,
}

/// A signing secret (`whsec_…`).
#[derive(ToSchema)]
pub struct Secret {
    #[schema(example = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")]
    pub secret: String,
}

/// A carrier callback taken.
#[derive(ToSchema)]
pub struct CallbackReceived {
    /// Receipts published (0: nothing Herald tracks, e.g. an incoming message).
    pub received: u64,
}

/// `GET /healthz`.
#[derive(ToSchema)]
pub struct Health {
    #[schema(example = "ok")]
    pub status: String,
}

/// `GET /readyz`: each dependency `ok` or `unavailable`.
#[derive(ToSchema)]
pub struct Readiness {
    /// `ready` or `unavailable`.
    pub status: String,
    /// Present when not ready: `postgres`, `rabbitmq`, `redis`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failing: Option<Vec<String>>,
    #[schema(example = json!({"postgres": "ok", "rabbitmq": "ok", "redis": "ok"}))]
    pub checks: BTreeMap<String, String>,
}

/// The live supervision tree of this node. Carriers and routes appear as
/// they are configured; more fields may be added.
#[derive(ToSchema)]
pub struct ActorTree {
    /// Ingress shards this node consumes.
    pub shards: Vec<u16>,
    /// Route actors running.
    pub routes: Vec<String>,
    /// One entry per carrier bind: `carrier`, `bind`, `bound`, `standby`,
    /// `usable`, `breaker_open`, `rate`, `configured_rate`, `in_flight`,
    /// `pending`, `restarts`, …
    pub carriers: Vec<serde_json::Map<String, serde_json::Value>>,
    /// Restarts made by the health monitor, by actor name.
    pub restarts: BTreeMap<String, u32>,
    /// Messages waiting in each carrier's queue (last reading).
    pub queue_depths: BTreeMap<String, u32>,
    /// Carriers paused by the operator on this node.
    pub paused: Vec<String>,
    /// Paused carriers whose queues are being re-routed.
    pub draining: Vec<String>,
}

/// What a routing reload changed.
#[derive(ToSchema)]
pub struct ReloadSummary {
    pub routes_started: Vec<String>,
    pub routes_retired: Vec<String>,
    pub carriers_started: Vec<String>,
    pub carriers_retired: Vec<String>,
}

/// An actor made to panic.
#[derive(ToSchema)]
pub struct Crashed {
    pub crashed: bool,
}

/// A receipt that matched no message.
#[derive(ToSchema)]
pub struct UnmatchedReceipt {
    pub event_id: String,
    pub carrier: String,
    pub carrier_ref: String,
    /// The receipt as the carrier sent it.
    pub receipt: serde_json::Value,
    pub received_at: DateTime<Utc>,
}

/// Receipts that matched no message for a while, oldest first.
#[derive(ToSchema)]
pub struct UnmatchedReceipts {
    pub data: Vec<UnmatchedReceipt>,
}

/// A carrier's operator state on this node after pause, resume or drain.
#[derive(ToSchema)]
pub struct CarrierControl {
    pub carrier: String,
    /// Taking nothing from its queue.
    pub paused: bool,
    /// Its queue is being re-routed to the route's other carriers.
    pub draining: bool,
}

/// Every tenant's webhook endpoints, most failing first (at most 100).
#[derive(ToSchema)]
pub struct EndpointHealthList {
    pub data: Vec<crate::store::webhooks::EndpointHealth>,
}
