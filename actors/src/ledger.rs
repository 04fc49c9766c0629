//! The submission ledger: which messages a carrier has already accepted.
//!
//! The path to a carrier is at least once: a crash, a lost acknowledgement
//! or an outbox re-publish can bring a message back after it was sent. The
//! carrier connection asks the ledger as deliveries arrive and records each
//! accepted message with its carrier references, so such a message is not
//! sent again: its `sent` event is published once more (with the recorded
//! references, so receipts still correlate) and it is acknowledged. What
//! remains possible is a crash between the carrier's answer and the record:
//! at most what one bind has answered and not yet settled (its window plus
//! its settling backlog, see `carrier::SETTLING_PER_SLOT`). When the ledger is away,
//! messages are sent (at least once) rather than held.

use std::time::Duration;

/// How long a message is remembered as sent.
pub const REMEMBER: Duration = Duration::from_secs(2 * 24 * 3600);

/// Where sent messages are recorded.
#[async_trait::async_trait]
pub trait SubmissionLedger: Send + Sync + 'static {
    /// For each message, in order: its carrier references when a carrier
    /// already accepted it. One round trip for the lot.
    async fn already_sent(
        &self,
        message_ids: &[String],
    ) -> Result<Vec<Option<Vec<String>>>, String>;
    /// Record that a carrier accepted this message, with its references.
    async fn record_sent(&self, message_id: &str, carrier_refs: &[String]) -> Result<(), String>;
    /// [`Self::record_sent`] for several messages: `(message id, references)`.
    async fn record_sent_many(&self, sent: &[(String, Vec<String>)]) -> Result<(), String> {
        for (id, refs) in sent {
            self.record_sent(id, refs).await?;
        }
        Ok(())
    }
}

/// No ledger: every delivery is submitted (single node tools and tests).
pub struct NoLedger;

#[async_trait::async_trait]
impl SubmissionLedger for NoLedger {
    async fn already_sent(&self, ids: &[String]) -> Result<Vec<Option<Vec<String>>>, String> {
        Ok(vec![None; ids.len()])
    }

    async fn record_sent(&self, _: &str, _: &[String]) -> Result<(), String> {
        Ok(())
    }
}
