//! Wire payloads: what crosses RabbitMQ. Every payload is a versioned, tagged
//! serde enum, so a node of a rolling deploy can read yesterday's queue: a new
//! shape gets a new variant (`SubmitV2`), old variants stay readable until no
//! queue can hold them.

use chrono::{DateTime, Utc};
use herald_carriers::{Channel, Content};
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
