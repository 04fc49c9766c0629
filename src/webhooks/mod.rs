//! Signed webhooks: every status change of a message reaches the tenant's
//! receivers, signed the Standard Webhooks way, retried on a long backoff,
//! every attempt recorded.
//!
//! Crash-safe design (no event is lost between commit and publish):
//!
//! 1. The **dispatcher** ([`dispatcher`]) owns the path from the event log
//!    to RabbitMQ. The log in PostgreSQL is its source of truth; the
//!    projector's in-process broadcast only wakes it early (a poll every
//!    `webhooks.poll_interval_ms` catches what other nodes projected). In one
//!    transaction it locks the single `webhook_cursor` row (`SKIP LOCKED`:
//!    one node dispatches at a time), reads the status events past it,
//!    publishes one [`WebhookTask`] per (event, target) to `<prefix>.webhooks`
//!    with publisher confirms, and only then advances the cursor and commits.
//!    A crash in between re-publishes the same tasks: receivers see the same
//!    `webhook-id` twice, never a missing event.
//! 2. The **deliverer** ([`deliver`]) consumes `<prefix>.webhooks`, signs and
//!    POSTs, records the attempt, and acknowledges the task only after the
//!    attempt is recorded and any retry task is confirmed in a delay queue
//!    (`<prefix>.webhooks.delay.<ms>`, TTL then dead-lettered back).
//!
//! Targets: the message's `callback_url` when it has one (signed with the
//! tenant's callback secret, derived from the server key), otherwise every
//! enabled endpoint of the tenant (each signed with its own secret, sealed
//! at rest with `webhooks.secret_key`). The `queued` entry written by the
//! accept path is not sent; everything the projector logs is.

pub mod deliver;
pub mod dispatcher;
pub mod seal;
pub mod sign;
pub mod target;

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use herald_actors::broker::Broker;
use serde::{Deserialize, Serialize};
use tokio::sync::{broadcast, watch};

use crate::config::WebhooksConfig;
use crate::projector::StatusChange;
use crate::store::Store;
use seal::Sealer;

/// Event type of a status change delivery.
pub const MESSAGE_STATUS: &str = "message.status";
/// Event type of the notice recorded when an endpoint is disabled.
pub const ENDPOINT_DISABLED: &str = "endpoint.disabled";

/// A delivery task on `<prefix>.webhooks` (versioned: a rolling deploy reads
/// yesterday's queue).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum WebhookTask {
    /// Deliver one status event to one target.
    #[serde(rename = "deliver.v1")]
    DeliverV1 {
        /// `webhook-id`: the same for every attempt (and replay) of this event.
        webhook_id: String,
        tenant_id: String,
        message_id: String,
        cursor: i64,
        /// `None`: the message's callback URL.
        endpoint_id: Option<EndpointId>,
        url: String,
        /// 1 for the first attempt.
        attempt: u32,
        event: EventSnapshot,
    },
}

/// The log entry a delivery announces.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventSnapshot {
    pub seq: i32,
    pub status: String,
    pub previous_status: Option<String>,
    #[serde(rename = "final")]
    pub is_final: bool,
    pub carrier: Option<String>,
    pub detail: serde_json::Value,
    pub at: DateTime<Utc>,
}

/// A tenant's webhook endpoint: `whe_` and 32 lowercase hex digits.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct EndpointId(String);

impl EndpointId {
    pub const PREFIX: &'static str = "whe_";

    /// A new, time-ordered id.
    pub fn generate() -> Self {
        Self(format!("{}{}", Self::PREFIX, uuid::Uuid::now_v7().simple()))
    }

    /// Parse an id received from outside.
    pub fn parse(s: &str) -> Option<Self> {
        let rest = s.strip_prefix(Self::PREFIX)?;
        let ok = rest.len() == 32
            && rest
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        ok.then(|| Self(s.to_owned()))
    }

    /// Trust a value read back from Herald's own store or queue.
    pub fn from_trusted(s: String) -> Self {
        Self(s)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for EndpointId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// The `webhook-id` of the log entry at `cursor`.
pub fn webhook_id(cursor: i64) -> String {
    format!("evt_{cursor}")
}

/// Webhook settings, from `[webhooks]`.
#[derive(Debug, Clone)]
pub struct Settings {
    pub allow_private: bool,
    pub retry_delays: Vec<Duration>,
    pub jitter: f64,
    pub timeout: Duration,
    pub endpoint_concurrency: usize,
    pub busy_delay: Duration,
    pub prefetch: u16,
    pub disable_after: Duration,
    pub poll_interval: Duration,
    pub batch: i64,
}

impl From<&WebhooksConfig> for Settings {
    fn from(c: &WebhooksConfig) -> Self {
        Settings {
            allow_private: c.allow_private,
            retry_delays: c
                .retry_delays_ms
                .iter()
                .map(|d| Duration::from_millis(*d))
                .collect(),
            jitter: c.jitter,
            timeout: Duration::from_millis(c.timeout_ms),
            endpoint_concurrency: c.endpoint_concurrency,
            busy_delay: Duration::from_millis(c.busy_delay_ms),
            prefetch: c.prefetch,
            disable_after: Duration::from_secs(c.disable_after_seconds),
            poll_interval: Duration::from_millis(c.poll_interval_ms),
            batch: c.batch,
        }
    }
}

impl Settings {
    /// Jitter steps: a retry waits its delay times one of these.
    fn factors(&self) -> Vec<f64> {
        let j = self.jitter;
        let mut f = vec![1.0 - j, 1.0 - j / 2.0, 1.0, 1.0 + j / 2.0, 1.0 + j];
        f.dedup();
        f
    }

    /// Every delay queue (ms) this configuration uses, ascending.
    pub fn delay_queues_ms(&self) -> Vec<u64> {
        let mut all: Vec<u64> = self
            .retry_delays
            .iter()
            .flat_map(|d| {
                self.factors()
                    .into_iter()
                    .map(move |f| ((d.as_millis() as f64) * f).round().max(1.0) as u64)
            })
            .collect();
        all.push(self.busy_delay.as_millis().max(1) as u64);
        all.sort_unstable();
        all.dedup();
        all
    }

    /// The delay queue for the retry after attempt `attempt` (1-based), with
    /// jitter; `None` when the attempts are used up.
    pub fn retry_delay_ms(&self, attempt: u32) -> Option<u64> {
        let base = self.retry_delays.get(attempt.checked_sub(1)? as usize)?;
        let factors = self.factors();
        let f = factors[rand::random_range(0..factors.len())];
        Some(((base.as_millis() as f64) * f).round().max(1.0) as u64)
    }

    /// The shortest delay queue that waits at least `wanted` (a receiver's
    /// `Retry-After`), or the longest there is.
    pub fn at_least_ms(&self, wanted: Duration) -> u64 {
        let queues = self.delay_queues_ms();
        let wanted = wanted.as_millis() as u64;
        queues
            .iter()
            .copied()
            .find(|q| *q >= wanted)
            .or(queues.last().copied())
            .unwrap_or(1000)
    }
}

/// The running webhook components. [`Webhooks::shutdown`] stops them.
pub struct Webhooks {
    stop: watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Webhooks {
    /// Declare the queues, start the dispatcher (woken by `changes`) and the
    /// deliverer.
    pub async fn start(
        store: Store,
        broker: Broker,
        sealer: Sealer,
        settings: Settings,
        changes: broadcast::Receiver<Arc<StatusChange>>,
    ) -> Webhooks {
        let settings = Arc::new(settings);
        if let Err(e) = broker.declare_webhooks(&settings.delay_queues_ms()).await {
            tracing::warn!(error = %e, "could not declare webhook queues yet; retried by the deliverer");
        }
        let (stop, stop_rx) = watch::channel(false);
        let dispatcher = tokio::spawn(dispatcher::run(
            store.clone(),
            broker.clone(),
            settings.clone(),
            changes,
            stop_rx.clone(),
        ));
        let deliverer = tokio::spawn(deliver::run(store, broker, sealer, settings, stop_rx));
        Webhooks {
            stop,
            tasks: vec![dispatcher, deliverer],
        }
    }

    /// Stop dispatching, let deliveries in flight finish (bounded); tasks
    /// not yet acknowledged go back to the queue.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        for t in self.tasks {
            let _ = t.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> Settings {
        Settings {
            allow_private: true,
            retry_delays: vec![Duration::from_secs(5), Duration::from_secs(300)],
            jitter: 0.2,
            timeout: Duration::from_secs(1),
            endpoint_concurrency: 1,
            busy_delay: Duration::from_secs(1),
            prefetch: 1,
            disable_after: Duration::from_secs(1),
            poll_interval: Duration::from_secs(1),
            batch: 1,
        }
    }

    #[test]
    fn retries_follow_the_schedule_with_jitter() {
        let s = settings();
        for _ in 0..100 {
            let d = s.retry_delay_ms(1).unwrap();
            assert!((4000..=6000).contains(&d), "{d}");
            assert!(s.delay_queues_ms().contains(&d));
            let d = s.retry_delay_ms(2).unwrap();
            assert!((240_000..=360_000).contains(&d), "{d}");
        }
        assert_eq!(s.retry_delay_ms(3), None);
        assert_eq!(s.at_least_ms(Duration::from_secs(2)), 4000);
        assert_eq!(s.at_least_ms(Duration::from_secs(100_000)), 360_000);
    }

    #[test]
    fn tasks_are_tagged_and_versioned() {
        let t = WebhookTask::DeliverV1 {
            webhook_id: webhook_id(7),
            tenant_id: "tnt_a".into(),
            message_id: "msg_a".into(),
            cursor: 7,
            endpoint_id: None,
            url: "http://x".into(),
            attempt: 1,
            event: EventSnapshot {
                seq: 2,
                status: "sent".into(),
                previous_status: Some("queued".into()),
                is_final: false,
                carrier: None,
                detail: serde_json::json!({}),
                at: Utc::now(),
            },
        };
        let v = serde_json::to_value(&t).unwrap();
        assert_eq!(v["type"], "deliver.v1");
        assert_eq!(v["webhook_id"], "evt_7");
        assert_eq!(serde_json::from_value::<WebhookTask>(v).unwrap(), t);
    }
}
