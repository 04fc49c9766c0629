//! Wire payloads: what crosses RabbitMQ. Every payload is a versioned, tagged
//! serde enum, so a node of a rolling deploy can read yesterday's queue: a new
//! shape gets a new variant (`SubmitV2`), old variants stay readable until no
//! queue can hold them.

use chrono::{DateTime, Utc};
use herald_carriers::{Channel, Content, Receipt};
use serde::{Deserialize, Serialize};

use crate::ids::{MessageId, TenantId};

/// How urgently a message should go out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Priority {
    #[default]
    Normal,
    High,
}

impl Priority {
    pub fn as_str(self) -> &'static str {
        match self {
            Priority::Normal => "normal",
            Priority::High => "high",
        }
    }
}

/// Everything routing and delivery need to know about one accepted message.
/// The PostgreSQL row stays the source of truth; this is its travelling copy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MessageEnvelope {
    pub id: MessageId,
    pub tenant_id: TenantId,
    pub channel: Channel,
    pub to: String,
    pub from: String,
    pub content: Content,
    pub segments: u32,
    /// `gsm7` or `ucs2` for SMS.
    pub encoding: Option<String>,
    pub priority: Priority,
    pub callback_url: Option<String>,
    /// Past this instant the message is `expired` instead of sent.
    pub expires_at: Option<DateTime<Utc>>,
    /// Not before this instant.
    pub scheduled_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
}

/// A task on `herald.ingress.<shard>`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum IngressTask {
    /// A newly accepted message to route and deliver.
    #[serde(rename = "submit.v1")]
    SubmitV1(MessageEnvelope),
}

impl IngressTask {
    pub fn message_id(&self) -> &MessageId {
        match self {
            IngressTask::SubmitV1(m) => &m.id,
        }
    }
}

/// A message handed to one carrier connection's queue
/// (`herald.carrier.<connection id>`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Delivery {
    pub envelope: MessageEnvelope,
    /// The route that chose this connection.
    pub route: String,
    /// Delivery attempts made so far (0 on the first).
    pub attempt: u32,
    /// Connections this message must not go to again (re-routed away from
    /// an open breaker).
    #[serde(default)]
    pub exclude: Vec<String>,
}

/// A task on a carrier connection's queue.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum CarrierTask {
    #[serde(rename = "deliver.v1")]
    DeliverV1(Delivery),
}

/// A carrier's error, normalised, with its raw code and text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventError {
    /// Herald's code: `no_route`, `throttled`, `temporary`, `permanent`,
    /// `connection_lost`, `expired`, `retries_exhausted`, `channel_not_allowed`.
    pub code: String,
    /// The carrier's raw code, when there is one.
    pub carrier_code: Option<String>,
    pub text: String,
}

/// A status change of one message, produced by an actor.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusEvent {
    /// Unique per event; the projector ignores an id it has seen (redelivery).
    pub event_id: String,
    pub message_id: MessageId,
    pub tenant_id: TenantId,
    /// Herald status: `sending`, `sent`, `failed`, `expired`, …
    pub status: String,
    /// The carrier connection involved.
    pub carrier: Option<String>,
    /// The carrier's references, one per part, when `sent`.
    #[serde(default)]
    pub carrier_refs: Vec<String>,
    pub error: Option<EventError>,
    pub at: DateTime<Utc>,
}

/// A receipt (delivery report, status callback) from a carrier, not yet
/// matched to a message: the projector correlates `carrier` +
/// `receipt.carrier_ref` with the references recorded by `sent` events.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReceiptEvent {
    pub event_id: String,
    /// The carrier connection (or callback endpoint) it came from.
    pub carrier: String,
    pub receipt: Receipt,
    pub received_at: DateTime<Utc>,
}

/// A task on `herald.events`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum EventTask {
    #[serde(rename = "status.v1")]
    StatusV1(StatusEvent),
    #[serde(rename = "receipt.v1")]
    ReceiptV1(ReceiptEvent),
}

/// A new unique event id.
pub fn new_event_id() -> String {
    format!("evt_{}", uuid::Uuid::now_v7().simple())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ingress_task_is_tagged_and_round_trips() {
        let task = IngressTask::SubmitV1(MessageEnvelope {
            id: MessageId::generate(),
            tenant_id: TenantId::generate(),
            channel: Channel::Sms,
            to: "+250788123456".into(),
            from: "HERALD".into(),
            content: Content::Text {
                body: "hello".into(),
            },
            segments: 1,
            encoding: Some("gsm7".into()),
            priority: Priority::Normal,
            callback_url: None,
            expires_at: None,
            scheduled_at: None,
            created_at: Utc::now(),
        });
        let json = serde_json::to_value(&task).unwrap();
        assert_eq!(json["type"], "submit.v1");
        let back: IngressTask = serde_json::from_value(json).unwrap();
        assert_eq!(back, task);
    }
}
