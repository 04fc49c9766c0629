//! The status projector: turns the events on `<prefix>.events` into the
//! event log (`message_events`) and each message's current status.
//!
//! Data enters as [`EventTask`]s (actors' status events, carriers' receipts)
//! from RabbitMQ. Deliveries are taken in batches (up to
//! `projector.batch_max`, or whatever arrived within `projector.batch_wait_ms`
//! of the first) and each batch is applied in ONE PostgreSQL transaction
//! ([`Store::project`]) with a constant number of set-based statements; the
//! deliveries are acknowledged only after that transaction commits, so a
//! crash means redelivery, and redelivery is harmless (event ids are unique).
//! The decisions themselves (forward-only status, multipart outcome, early
//! receipts) are the pure [`fold`] over [`rules`].
//!
//! Data leaves as rows in PostgreSQL and, after each commit, as one
//! [`StatusChange`] per new log entry on an in-process broadcast channel (in
//! cursor order) for the live stream and webhooks to hang off. A change
//! carries the whole entry (and the message's channel), so a subscriber need
//! not read it back. A slow subscriber lags and must catch up from
//! `GET /v1/events`; the projector never waits for subscribers.
//!
//! A payload that cannot be decoded is sent to `<prefix>.dead` with its
//! reason and acknowledged, so it never blocks the queue. A batch whose data
//! the database refuses (SQLSTATE class 22 or 23) is retried one event at a
//! time and the event it fails on is dead-lettered the same way. On any
//! other failure (database unavailable, lock timeout, schema not migrated)
//! the batch is retried every `projector.retry_backoff_ms`, unacknowledged
//! and in order.
//!
//! Shutdown: [`Projector::shutdown`] lets the batch in flight commit and be
//! acknowledged, then stops consuming; deliveries still in the prefetch
//! buffer are returned to the queue by RabbitMQ when the consumer closes.

pub mod fold;
pub mod rules;

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use herald_actors::broker::{Broker, Incoming};
use herald_actors::events;
use herald_actors::payload::EventTask;
use herald_actors::{MessageId, TenantId};
use serde::{Deserialize, Serialize};
use tokio::sync::{broadcast, mpsc, oneshot};

use crate::config::ProjectorConfig;
use crate::store::events::{refuses_data, strip_nul, Projected};
use crate::store::{Store, StoreError};
use crate::telemetry;

/// One entry appended to the event log, as broadcast in-process after commit
/// (behind an `Arc`: every subscriber shares the one copy).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StatusChange {
    pub tenant_id: TenantId,
    /// The tenant-feed position (`GET /v1/events?after=`).
    pub cursor: i64,
    pub message_id: MessageId,
    pub seq: i32,
    pub status: String,
    pub previous_status: Option<String>,
    #[serde(rename = "final")]
    pub is_final: bool,
    pub carrier: Option<String>,
    pub detail: serde_json::Value,
    pub at: DateTime<Utc>,
    /// The message's channel (`sms`, `whatsapp`, `voice`).
    pub channel: String,
}

impl From<Projected> for StatusChange {
    fn from(Projected { cursor, event }: Projected) -> Self {
        StatusChange {
            tenant_id: TenantId::from_trusted(event.tenant_id),
            cursor,
            message_id: MessageId::from_trusted(event.message_id),
            seq: event.seq,
            status: event.status,
            previous_status: event.previous_status,
            is_final: event.is_final,
            carrier: event.carrier,
            detail: event.detail,
            at: event.at,
            channel: event.channel,
        }
    }
}

/// Projector settings, from `[projector]`.
#[derive(Debug, Clone)]
pub struct Settings {
    pub batch_max: usize,
    pub batch_wait: Duration,
    pub prefetch: u16,
    pub retry_backoff: Duration,
    pub unmatched_after: Duration,
    pub unmatched_check_interval: Duration,
    pub broadcast_capacity: usize,
}

impl From<&ProjectorConfig> for Settings {
    fn from(c: &ProjectorConfig) -> Self {
        Settings {
            batch_max: c.batch_max,
            batch_wait: Duration::from_millis(c.batch_wait_ms),
            prefetch: c.prefetch,
            retry_backoff: Duration::from_millis(c.retry_backoff_ms),
            unmatched_after: Duration::from_secs(c.unmatched_after_seconds),
            unmatched_check_interval: Duration::from_millis(c.unmatched_check_interval_ms),
            broadcast_capacity: c.broadcast_capacity,
        }
    }
}

/// The running projector. [`Projector::shutdown`] drains it.
pub struct Projector {
    stop: oneshot::Sender<()>,
    done: tokio::task::JoinHandle<()>,
    changes: broadcast::Sender<Arc<StatusChange>>,
}

impl Projector {
    /// Start consuming `<prefix>.events`.
    pub fn start(store: Store, broker: Broker, settings: Settings) -> Projector {
        let (changes, _) = broadcast::channel(settings.broadcast_capacity.max(1));
        let (stop, stop_rx) = oneshot::channel();
        let worker = Worker {
            store,
            broker,
            settings,
            changes: changes.clone(),
        };
        let done = tokio::spawn(worker.run(stop_rx));
        Projector {
            stop,
            done,
            changes,
        }
    }

    /// Every log entry the projector appends from now on, in cursor order.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<StatusChange>> {
        self.changes.subscribe()
    }

    /// The broadcast sender, to hand to components that subscribe later.
    pub fn changes(&self) -> broadcast::Sender<Arc<StatusChange>> {
        self.changes.clone()
    }

    /// Commit and acknowledge the batch in flight, then stop.
    pub async fn shutdown(self) {
        let _ = self.stop.send(());
        let _ = self.done.await;
    }
}

/// One element of an AMQP message that is not an event: its JSON and why.
type Poison = (Vec<u8>, String);

/// The events of one AMQP message: one event, or a JSON array of them
/// (`herald_actors::events::pack`), each element decoded on its own so one
/// bad element spoils only itself. `Err`: the body as a whole is no event.
fn decode(body: &[u8]) -> Result<Vec<Result<EventTask, Poison>>, String> {
    let value: serde_json::Value = serde_json::from_slice(body).map_err(|e| e.to_string())?;
    let values = match value {
        serde_json::Value::Array(items) if items.is_empty() => {
            return Err("an empty array of events".into())
        }
        serde_json::Value::Array(items) => items,
        single => vec![single],
    };
    Ok(values
        .into_iter()
        .map(|mut v| {
            scrub(&mut v);
            EventTask::deserialize(&v).map_err(|e| (v.to_string().into_bytes(), e.to_string()))
        })
        .collect())
}

/// Remove NUL characters from every string (PostgreSQL refuses them).
fn scrub(v: &mut serde_json::Value) {
    match v {
        serde_json::Value::String(s) if s.contains('\0') => *s = strip_nul(s),
        serde_json::Value::Array(a) => a.iter_mut().for_each(scrub),
        serde_json::Value::Object(o) => o.values_mut().for_each(scrub),
        _ => {}
    }
}

/// Whether the projector was told to stop while it worked.
enum Stopped {
    Yes,
    No,
}

struct Worker {
    store: Store,
    broker: Broker,
    settings: Settings,
    changes: broadcast::Sender<Arc<StatusChange>>,
}

impl Worker {
    async fn run(self, mut stop: oneshot::Receiver<()>) {
        let queue = self.broker.topology().events_queue();
        let mut inbox = self.broker.subscribe_whole(queue, self.settings.prefetch);
        let mut check = tokio::time::interval(self.settings.unmatched_check_interval);
        check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                biased;
                _ = &mut stop => break,
                first = inbox.recv() => {
                    let Some(first) = first else { break };
                    let batch = self.collect(first, &mut inbox).await;
                    if let Stopped::Yes = self.process(batch, &mut stop).await {
                        break;
                    }
                }
                _ = check.tick() => self.count_unmatched().await,
            }
        }
        tracing::info!(target: "herald::projector", "status projector stopped");
    }

    /// The first delivery and whatever follows within `batch_wait`.
    async fn collect(
        &self,
        first: Incoming,
        inbox: &mut mpsc::Receiver<Incoming>,
    ) -> Vec<Incoming> {
        let mut batch = vec![first];
        let deadline = tokio::time::Instant::now() + self.settings.batch_wait;
        while batch.len() < self.settings.batch_max {
            match inbox.try_recv() {
                Ok(d) => batch.push(d),
                Err(_) => match tokio::time::timeout_at(deadline, inbox.recv()).await {
                    Ok(Some(d)) => batch.push(d),
                    _ => break,
                },
            }
        }
        batch
    }

    async fn count_unmatched(&self) {
        match self
            .store
            .unmatched_receipts(self.settings.unmatched_after)
            .await
        {
            Ok(n) => telemetry::receipts_unmatched(n),
            Err(e) => tracing::debug!(error = %e, "could not count unmatched receipts"),
        }
    }

    async fn process(&self, batch: Vec<Incoming>, stop: &mut oneshot::Receiver<()>) -> Stopped {
        // The decoded events, and each delivery with how many it carried.
        let mut events = Vec::with_capacity(batch.len());
        let mut deliveries = Vec::with_capacity(batch.len());
        for incoming in batch {
            match decode(&incoming.body) {
                Ok(decoded) => {
                    let mut carried = 0;
                    for item in decoded {
                        match item {
                            Ok(event) => {
                                events.push(event);
                                carried += 1;
                            }
                            Err((body, reason)) => {
                                telemetry::projector_malformed(&reason);
                                self.dead_letter(&body, &reason).await;
                            }
                        }
                    }
                    deliveries.push((incoming, carried));
                }
                Err(reason) => {
                    telemetry::projector_malformed(&reason);
                    self.dead_letter(&incoming.body, &reason).await;
                    ack(incoming).await;
                }
            }
        }
        if events.is_empty() {
            ack_all(deliveries.into_iter().map(|(d, _)| d).collect()).await;
            return Stopped::No;
        }
        match self.apply_retrying(&events, stop).await {
            Ok(true) => {
                ack_all(deliveries.into_iter().map(|(d, _)| d).collect()).await;
                Stopped::No
            }
            Ok(false) => self.apply_one_by_one(&events, deliveries, stop).await,
            Err(()) => Stopped::Yes,
        }
    }

    /// Apply `events` in one transaction, retrying while the database is
    /// unavailable. `Ok(true)` committed, `Ok(false)` refused by the
    /// database, `Err` stopped while retrying (nothing acknowledged).
    async fn apply_retrying(
        &self,
        events: &[EventTask],
        stop: &mut oneshot::Receiver<()>,
    ) -> Result<bool, ()> {
        loop {
            match self.apply(events).await {
                Ok(()) => return Ok(true),
                Err(e) if refuses_data(&e) => {
                    telemetry::projector_failed("refused", &e);
                    return Ok(false);
                }
                Err(e) => {
                    telemetry::projector_failed("unavailable", &e);
                    tokio::select! {
                        _ = &mut *stop => return Err(()),
                        _ = tokio::time::sleep(self.settings.retry_backoff) => {}
                    }
                }
            }
        }
    }

    /// A batch the database refused: find the events it refuses by
    /// applying each delivery alone, and the events of a refused delivery
    /// one by one; dead-letter only the refused events, and acknowledge each
    /// delivery once all it carried is committed or dead-lettered.
    async fn apply_one_by_one(
        &self,
        events: &[EventTask],
        deliveries: Vec<(Incoming, usize)>,
        stop: &mut oneshot::Receiver<()>,
    ) -> Stopped {
        let mut start = 0;
        for (incoming, n) in deliveries {
            let carried = &events[start..start + n];
            start += n;
            match self.apply_retrying(carried, stop).await {
                Ok(true) => {}
                Ok(false) => {
                    for event in carried {
                        match self.apply_retrying(std::slice::from_ref(event), stop).await {
                            Ok(true) => {}
                            Ok(false) => {
                                let body = serde_json::to_vec(event).expect("events serialise");
                                self.dead_letter(&body, "refused by the database").await;
                            }
                            Err(()) => return Stopped::Yes,
                        }
                    }
                }
                Err(()) => return Stopped::Yes,
            }
            ack(incoming).await;
        }
        Stopped::No
    }

    async fn apply(&self, events: &[EventTask]) -> Result<(), StoreError> {
        let started = Instant::now();
        let lookup = fold::lookup(events);
        let (projected, report) = self
            .store
            .project(&lookup, |loaded| fold::fold(events, loaded))
            .await?;
        telemetry::projector_batch(events.len(), started.elapsed(), &report);
        // Counted once per (channel, status) of the batch, not per entry.
        let mut logged: Vec<(&str, &str, u64)> = Vec::new();
        for p in &projected {
            let (channel, status) = (p.event.channel.as_str(), p.event.status.as_str());
            match logged
                .iter_mut()
                .find(|(c, s, _)| *c == channel && *s == status)
            {
                Some(entry) => entry.2 += 1,
                None => logged.push((channel, status, 1)),
            }
        }
        for (channel, status, n) in logged {
            telemetry::statuses_logged(channel, status, n);
        }
        for p in projected {
            // No subscriber is fine: the log is the source of truth.
            let _ = self.changes.send(Arc::new(StatusChange::from(p)));
        }
        Ok(())
    }

    /// Publish a poison payload to `<prefix>.dead` with its reason. Best
    /// effort: when RabbitMQ refuses, the reason is still logged and counted.
    async fn dead_letter(&self, body: &[u8], reason: &str) {
        let dead = events::dead(self.broker.topology(), body, reason);
        match self.broker.publish_confirmed(&[dead]).await {
            Ok(()) => telemetry::projector_dead_lettered(),
            Err(e) => tracing::warn!(target: "herald::projector", error = %e, %reason,
                "could not dead-letter an event; dropping it after logging"),
        }
    }
}

/// Acknowledge a committed batch: the acknowledgements go out together, not
/// one round after another.
async fn ack_all(deliveries: Vec<Incoming>) {
    futures::future::join_all(deliveries.into_iter().map(ack)).await;
}

async fn ack(incoming: Incoming) {
    if let Err(e) = incoming.ack().await {
        // The channel is gone: RabbitMQ redelivers, and the event id makes
        // the second application a no-op.
        tracing::debug!(target: "herald::projector", error = %e, "ack failed; will be redelivered");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decode_scrubs_nul_and_refuses_garbage() {
        let body = br#"{"type":"receipt.v1","event_id":"evt_1","carrier":"c\u0000","receipt":{"carrier_ref":"AB","state":"delivered","error_code":null,"done_at":null,"raw":"x\u0000y","final":true},"received_at":"2026-11-23T00:00:00Z"}"#;
        let check = |events: Vec<Result<EventTask, Poison>>| {
            for e in events {
                match e.expect("an event") {
                    EventTask::ReceiptV1(r) => {
                        assert_eq!(r.carrier, "c");
                        assert_eq!(r.receipt.raw, "xy");
                    }
                    other => panic!("{other:?}"),
                }
            }
        };
        check(decode(body).unwrap());
        // Packed: an array of the same, in order.
        let mut packed = b"[".to_vec();
        packed.extend_from_slice(body);
        packed.push(b',');
        packed.extend_from_slice(
            std::str::from_utf8(body)
                .unwrap()
                .replace("evt_1", "evt_2")
                .as_bytes(),
        );
        packed.push(b']');
        let events = decode(&packed).unwrap();
        assert_eq!(events.len(), 2);
        check(events);
        assert!(decode(b"not json").is_err());
        assert!(decode(br#"{"type":"status.v9"}"#).unwrap()[0].is_err());
        assert!(decode(b"[]").is_err());
        let mut one_bad = b"[".to_vec();
        one_bad.extend_from_slice(body);
        one_bad.extend_from_slice(br#",{"type":"status.v9"}]"#);
        let items = decode(&one_bad).unwrap();
        assert!(items[0].is_ok(), "one bad element spoils only itself");
        let (bad, _) = items[1].as_ref().unwrap_err();
        assert_eq!(bad, br#"{"type":"status.v9"}"#);
    }
}
