//! The one interface every carrier protocol implements.
//!
//! Data enters as a [`Submission`] (what the tenant asked to send, already
//! validated and counted by Herald) and leaves as [`Submitted`] carrier
//! references or a [`CarrierError`]. Receipts arrive asynchronously on a
//! channel handed out when the connection is opened, as [`Receipt`]s in
//! Herald's status vocabulary.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// The channel a message travels on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Channel {
    Sms,
    Whatsapp,
    Voice,
}

impl Channel {
    pub fn as_str(self) -> &'static str {
        match self {
            Channel::Sms => "sms",
            Channel::Whatsapp => "whatsapp",
            Channel::Voice => "voice",
        }
    }

    /// The channel named `sms`, `whatsapp` or `voice`.
    pub fn parse(name: &str) -> Option<Channel> {
        [Channel::Sms, Channel::Whatsapp, Channel::Voice]
            .into_iter()
            .find(|c| c.as_str() == name)
    }
}

/// What is to be delivered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Content {
    /// Plain text (SMS, WhatsApp text).
    Text { body: String },
    /// A pre-approved WhatsApp template.
    Template {
        name: String,
        language: String,
        params: Vec<String>,
    },
    /// Voice: text to speak.
    Say { text: String },
    /// Voice: an audio file to play.
    Audio { url: String },
}

/// One message handed to a carrier connection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Submission {
    /// Herald's message id (`msg_…`), used as the client reference where the
    /// protocol has one.
    pub message_id: String,
    pub channel: Channel,
    /// Destination, E.164 with the leading `+`.
    pub to: String,
    /// Sender: alphanumeric id, E.164 number or short code.
    pub from: String,
    pub content: Content,
    /// Validity period requested by the tenant, if any.
    pub validity: Option<Duration>,
    /// Whether delivery receipts are requested.
    pub receipts: bool,
}

/// The carrier accepted the submission.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Submitted {
    /// One reference per part (a 3-part SMS has three), in part order.
    pub carrier_refs: Vec<String>,
}

/// A submission the carrier did not accept, normalised. Each variant keeps the
/// carrier's raw code and text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CarrierError {
    /// The carrier asks us to slow down (SMPP ESME_RTHROTTLED, HTTP 429,
    /// WhatsApp 130429/131056).
    #[error("throttled by carrier ({code}): {text}")]
    Throttled {
        retry_after: Option<Duration>,
        code: String,
        text: String,
    },
    /// Worth retrying later (5xx, system errors, timeouts).
    #[error("temporary carrier error ({code}): {text}")]
    Temporary { code: String, text: String },
    /// Retrying will not help (invalid destination, bad content, 4xx).
    #[error("permanent carrier error ({code}): {text}")]
    Permanent { code: String, text: String },
    /// The connection to the carrier is gone; the submission's fate is unknown.
    #[error("connection to carrier lost: {text}")]
    ConnectionLost { text: String },
}

/// A status reported by a carrier, in Herald's vocabulary.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReceiptState {
    Sent,
    Delivered,
    Undelivered,
    Expired,
    Rejected,
    Read,
    Ringing,
    InProgress,
    Completed,
    Busy,
    NoAnswer,
    Failed,
}

impl ReceiptState {
    /// Whether no later state can follow for this message (WhatsApp `read`
    /// may still follow `delivered`, so `delivered` is final only for SMS;
    /// the caller decides per channel where that matters).
    pub fn is_final(self) -> bool {
        !matches!(
            self,
            ReceiptState::Sent | ReceiptState::Ringing | ReceiptState::InProgress
        )
    }
}

/// A delivery receipt or status callback, normalised.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Receipt {
    /// The carrier's reference, normalised (see each protocol's rules).
    pub carrier_ref: String,
    pub state: ReceiptState,
    pub error_code: Option<String>,
    pub done_at: Option<DateTime<Utc>>,
    /// The receipt as the carrier sent it (text or JSON).
    pub raw: String,
    #[serde(rename = "final")]
    pub is_final: bool,
}

/// What a connection reports about itself, so a supervisor can decide.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Health {
    /// Bound (SMPP) or reachable (HTTP).
    pub bound: bool,
    /// Round trip of the last answered request.
    pub last_round_trip: Option<Duration>,
    /// Requests sent but not yet answered.
    pub in_flight: u32,
    /// Errors since the connection opened.
    pub errors: u64,
    /// Consecutive errors since the last success.
    pub consecutive_errors: u32,
}

/// A live connection to one carrier (an SMPP bind, an HTTP client).
#[async_trait::async_trait]
pub trait CarrierConnection: Send + Sync {
    /// Hand one message to the carrier and wait for its answer.
    async fn submit(&self, submission: Submission) -> Result<Submitted, CarrierError>;
    /// The connection's current health.
    fn health(&self) -> Health;
    /// Close gracefully (SMPP unbind), returning once closed.
    async fn close(&self);
}
