//! The message: Herald's central noun. A [`MessageRecord`] is one row of the
//! `messages` table (and, for a new message, what the accept path is about to
//! write); [`EventRecord`] is one entry of its event log.

use chrono::{DateTime, Utc};
use herald_actors::payload::{MessageEnvelope, Priority};
use herald_actors::{MessageId, TenantId};
use herald_carriers::{Channel, Content};
use serde::Serialize;

/// Where a message stands. Moves forward only (see DESIGN.md, status model).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum MessageStatus {
    Scheduled,
    Queued,
    Sending,
    Sent,
    Delivered,
    Read,
    Undelivered,
    Failed,
    Expired,
    Rejected,
    Canceled,
    Ringing,
    InProgress,
    Completed,
    Busy,
    NoAnswer,
}

impl MessageStatus {
    pub const ALL: [MessageStatus; 16] = [
        MessageStatus::Scheduled,
        MessageStatus::Queued,
        MessageStatus::Sending,
        MessageStatus::Sent,
        MessageStatus::Delivered,
        MessageStatus::Read,
        MessageStatus::Undelivered,
        MessageStatus::Failed,
        MessageStatus::Expired,
        MessageStatus::Rejected,
        MessageStatus::Canceled,
        MessageStatus::Ringing,
        MessageStatus::InProgress,
        MessageStatus::Completed,
        MessageStatus::Busy,
        MessageStatus::NoAnswer,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            MessageStatus::Scheduled => "scheduled",
            MessageStatus::Queued => "queued",
            MessageStatus::Sending => "sending",
            MessageStatus::Sent => "sent",
            MessageStatus::Delivered => "delivered",
            MessageStatus::Read => "read",
            MessageStatus::Undelivered => "undelivered",
            MessageStatus::Failed => "failed",
            MessageStatus::Expired => "expired",
            MessageStatus::Rejected => "rejected",
            MessageStatus::Canceled => "canceled",
            MessageStatus::Ringing => "ringing",
            MessageStatus::InProgress => "in_progress",
            MessageStatus::Completed => "completed",
            MessageStatus::Busy => "busy",
            MessageStatus::NoAnswer => "no_answer",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|st| st.as_str() == s)
    }
}

/// One message as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct MessageRecord {
    pub id: MessageId,
    pub tenant_id: TenantId,
    pub channel: Channel,
    pub to: String,
    pub from: String,
    pub content: Content,
    pub segments: u32,
    /// `gsm7` / `ucs2` for SMS, `None` otherwise.
    pub encoding: Option<String>,
    pub priority: Priority,
    pub status: String,
    pub status_seq: i32,
    pub carrier: Option<String>,
    pub carrier_ref: Option<String>,
    pub callback_url: Option<String>,
    pub validity_seconds: Option<i32>,
    pub expires_at: Option<DateTime<Utc>>,
    pub scheduled_at: Option<DateTime<Utc>>,
    pub metadata: serde_json::Map<String, serde_json::Value>,
    pub idempotency_key: Option<String>,
    /// SHA-256 of the canonical request, to tell an idempotent replay from a
    /// conflicting reuse of the key.
    pub request_hash: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl MessageRecord {
    /// The copy that travels through RabbitMQ.
    pub fn envelope(&self) -> MessageEnvelope {
        MessageEnvelope {
            id: self.id.clone(),
            tenant_id: self.tenant_id.clone(),
            channel: self.channel,
            to: self.to.clone(),
            from: self.from.clone(),
            content: self.content.clone(),
            segments: self.segments,
            encoding: self.encoding.clone(),
            priority: self.priority,
            callback_url: self.callback_url.clone(),
            expires_at: self.expires_at,
            scheduled_at: self.scheduled_at,
            created_at: self.created_at,
        }
    }
}

/// One entry of a message's event log.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EventRecord {
    pub cursor: i64,
    pub seq: i32,
    pub status: String,
    pub previous_status: Option<String>,
    #[serde(rename = "final")]
    pub is_final: bool,
    pub carrier: Option<String>,
    pub detail: serde_json::Value,
    pub at: DateTime<Utc>,
}
