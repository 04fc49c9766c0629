//! The deliverer: consumes `<prefix>.webhooks`, signs and POSTs each task,
//! records the attempt, schedules the retry and keeps endpoints' health.
//!
//! Lifecycle of one task: at most `endpoint_concurrency` deliveries run per
//! endpoint (a slot is held until the receiver's answer, not while the
//! attempt is recorded); a task for a busy endpoint waits here for a slot
//! (each at most `busy_delay`; as many as the endpoint answered in the last
//! `busy_delay`, at least four per slot), else it is parked `busy_delay` in
//! a delay queue (so it holds no prefetch slot and other endpoints keep
//! flowing). Tasks parked meanwhile share AMQP messages.
//! The answer decides the [`Outcome`]; the task is acknowledged only after
//! its attempt row is written and any retry task is confirmed by RabbitMQ.
//! What follows (the endpoint's health, a disabling notice) is best effort:
//! giving the task back then would start a second chain of retries.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::Utc;
use herald_actors::broker::{Broker, Incoming};
use serde_json::json;
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;

use super::dispatcher::publish;
use super::seal::Sealer;
use super::{sign, target, EndpointId, Settings, WebhookTask, ENDPOINT_DISABLED, MESSAGE_STATUS};
use crate::batch::Batcher;
use crate::message::MessageRecord;
use crate::store::webhooks::{AttemptRow, EndpointRow};
use crate::store::Store;
use crate::telemetry;

/// Pause before a task that could not be handled is given back.
const REQUEUE_PAUSE: Duration = Duration::from_millis(500);

/// Longest wait at shutdown for deliveries in flight.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// Most lookups or attempt rows per statement, and statements of one kind
/// running at once.
const STORE_BATCH: usize = 256;
const STORE_CONCURRENCY: usize = 2;

/// What one attempt came to.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// 2xx.
    Succeeded,
    /// 410: the receiver is gone for good; the endpoint is disabled.
    Gone,
    /// Anything else; `retry_after` when the receiver asked for it (429, 503).
    Failed { retry_after: Option<Duration> },
}

/// Classify a receiver's answer.
pub fn classify(status: u16, retry_after: Option<&str>) -> Outcome {
    match status {
        200..=299 => Outcome::Succeeded,
        410 => Outcome::Gone,
        429 | 503 => Outcome::Failed {
            retry_after: retry_after
                .and_then(|v| v.trim().parse::<u64>().ok())
                .map(Duration::from_secs),
        },
        _ => Outcome::Failed { retry_after: None },
    }
}

/// The deliverer's store calls, each grouped across concurrent deliveries
/// (see [`Batcher`]): per attempt one endpoint and one message lookup and
/// one attempt row, but few statements and commits.
/// Rows come back shared: one lookup answers every caller that asked for
/// the same endpoint or message in the batch.
struct Batched {
    endpoints: Batcher<String, Lookup<EndpointRow>>,
    /// By (tenant id, message id).
    messages: Batcher<(String, String), Lookup<MessageRecord>>,
    attempts: Batcher<AttemptRow, Result<(), String>>,
    /// Tasks for a delay queue (a busy endpoint's, a retry), by delay in ms:
    /// paced, so the tasks deferred meanwhile share AMQP messages and one
    /// confirm instead of one each.
    later: Batcher<(u64, WebhookTask), Result<(), String>>,
}

/// A row looked up for a delivery: shared, absent, or the store's error.
type Lookup<T> = Result<Option<Arc<T>>, String>;

impl Batched {
    fn start(store: &Store, broker: &Broker, pack: usize) -> Self {
        let s = store.clone();
        let endpoints = Batcher::start(STORE_BATCH, STORE_CONCURRENCY, move |ids: Vec<String>| {
            let s = s.clone();
            async move {
                match s.endpoints_by_ids(&ids).await {
                    Ok(rows) => {
                        let by_id: HashMap<String, Arc<EndpointRow>> = rows
                            .into_iter()
                            .map(|r| (r.id.as_str().to_owned(), Arc::new(r)))
                            .collect();
                        ids.iter().map(|id| Ok(by_id.get(id).cloned())).collect()
                    }
                    Err(e) => vec![Err(e.to_string()); ids.len()],
                }
            }
        });
        let s = store.clone();
        let messages = Batcher::start(
            STORE_BATCH,
            STORE_CONCURRENCY,
            move |keys: Vec<(String, String)>| {
                let s = s.clone();
                async move {
                    let ids: Vec<String> = keys.iter().map(|(_, id)| id.clone()).collect();
                    match s.messages_by_ids(&ids).await {
                        Ok(rows) => {
                            let by_id: HashMap<String, Arc<MessageRecord>> = rows
                                .into_iter()
                                .map(|m| (m.id.as_str().to_owned(), Arc::new(m)))
                                .collect();
                            keys.iter()
                                .map(|(tenant, id)| {
                                    Ok(by_id
                                        .get(id)
                                        .filter(|m| m.tenant_id.as_str() == tenant)
                                        .cloned())
                                })
                                .collect()
                        }
                        Err(e) => vec![Err(e.to_string()); keys.len()],
                    }
                }
            },
        );
        let s = store.clone();
        // Recorded before the task's acknowledgement, not before anyone's
        // answer: paced, so a statement (and a commit) carries many.
        let attempts = Batcher::start_paced(
            STORE_BATCH,
            STORE_CONCURRENCY,
            Some(herald_actors::pace::ROUND_PERIOD),
            move |rows: Vec<AttemptRow>| {
                let s = s.clone();
                async move {
                    let n = rows.len();
                    let answer = s.record_attempts(rows).await.map_err(|e| e.to_string());
                    vec![answer; n]
                }
            },
        );
        let b = broker.clone();
        let later = Batcher::start_paced(
            STORE_BATCH,
            STORE_CONCURRENCY,
            Some(herald_actors::pace::ROUND_PERIOD),
            move |tasks: Vec<(u64, WebhookTask)>| {
                let b = b.clone();
                async move {
                    let delays: Vec<u64> = tasks.iter().map(|(ms, _)| *ms).collect();
                    let mut by_delay: BTreeMap<u64, Vec<WebhookTask>> = BTreeMap::new();
                    for (ms, task) in tasks {
                        by_delay.entry(ms).or_default().push(task);
                    }
                    let mut outcome: BTreeMap<u64, Result<(), String>> = BTreeMap::new();
                    for (ms, group) in by_delay {
                        let queue = b.topology().webhooks_delay_queue(ms);
                        outcome.insert(ms, publish(&b, &group, &queue, pack).await);
                    }
                    delays.iter().map(|ms| outcome[ms].clone()).collect()
                }
            },
        );
        Self {
            endpoints,
            messages,
            attempts,
            later,
        }
    }

    async fn endpoint(&self, id: &EndpointId) -> Lookup<EndpointRow> {
        self.endpoints
            .call(id.as_str().to_owned())
            .await
            .map_err(|e| e.to_string())?
    }

    async fn message(&self, tenant: &str, id: &str) -> Lookup<MessageRecord> {
        self.messages
            .call((tenant.to_owned(), id.to_owned()))
            .await
            .map_err(|e| e.to_string())?
    }

    async fn record(&self, row: AttemptRow) -> Result<(), String> {
        self.attempts.call(row).await.map_err(|e| e.to_string())?
    }

    async fn later(&self, task: WebhookTask, delay_ms: u64) -> Result<(), String> {
        self.later
            .call((delay_ms, task))
            .await
            .map_err(|e| e.to_string())?
    }
}

/// Deliveries to one endpoint: `slots` run at once; more may wait here for
/// a slot (holding their prefetch slot, so bounded): as many as the
/// endpoint has lately answered in `busy_delay`, and at least
/// [`WAITING_PER_SLOT`] per slot. A burst for a fast receiver waits here;
/// a slow receiver's backlog goes to the delay queue.
struct Gate {
    slots: Arc<Semaphore>,
    waiting: AtomicUsize,
    answers: Mutex<Answers>,
}

/// Answers counted over the current second, and the rate of the last one.
struct Answers {
    since: Instant,
    count: u64,
    per_second: f64,
}

impl Gate {
    fn new(slots: usize) -> Self {
        Self {
            slots: Arc::new(Semaphore::new(slots)),
            waiting: AtomicUsize::new(0),
            answers: Mutex::new(Answers {
                since: Instant::now(),
                count: 0,
                per_second: 0.0,
            }),
        }
    }

    /// Tasks that may wait for a slot.
    fn room(&self, slots: usize, busy_delay: Duration) -> usize {
        let rate = self.answers.lock().expect("answers lock").per_second;
        ((rate * busy_delay.as_secs_f64()) as usize).max(slots * WAITING_PER_SLOT)
    }

    fn answered(&self) {
        let mut a = self.answers.lock().expect("answers lock");
        a.count += 1;
        let elapsed = a.since.elapsed();
        if elapsed >= Duration::from_secs(1) {
            a.per_second = a.count as f64 / elapsed.as_secs_f64();
            a.count = 0;
            a.since = Instant::now();
        }
    }
}

/// A delivery slot of one endpoint; freed (and counted as answered) when
/// dropped.
struct Slot {
    _permit: OwnedSemaphorePermit,
    gate: Arc<Gate>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.gate.answered();
    }
}

/// A task waiting for a slot, counted while it waits.
struct Waiting<'a>(&'a AtomicUsize);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Tasks that may wait in memory for a busy endpoint, per delivery slot, at
/// the least; the rest go to the delay queue (RabbitMQ work, so kept for
/// real backlogs).
const WAITING_PER_SLOT: usize = 4;

struct Deliverer {
    store: Store,
    batched: Batched,
    broker: Broker,
    sealer: Sealer,
    settings: Arc<Settings>,
    http: reqwest::Client,
    /// One gate per endpoint (or callback URL).
    limits: Mutex<HashMap<String, Arc<Gate>>>,
}

pub async fn run(
    store: Store,
    broker: Broker,
    sealer: Sealer,
    settings: Arc<Settings>,
    mut stop: watch::Receiver<bool>,
) {
    let http = reqwest::Client::builder()
        .timeout(settings.timeout)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent("Herald-Webhooks/1")
        .build()
        .expect("HTTP client builds");
    // The queues must exist before consuming (RabbitMQ may have been away at start).
    while let Err(e) = broker.declare_webhooks(&settings.delay_queues_ms()).await {
        tracing::warn!(target: "herald::webhooks", error = %e, "declaring webhook queues");
        tokio::select! {
            _ = stop.changed() => return,
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
    let me = Arc::new(Deliverer {
        batched: Batched::start(
            &store,
            &broker,
            super::dispatcher::pack_size(settings.endpoint_concurrency),
        ),
        store,
        broker: broker.clone(),
        sealer,
        settings: settings.clone(),
        http,
        limits: Mutex::new(HashMap::new()),
    });
    let mut inbox = broker.subscribe(broker.topology().webhooks_queue(), settings.prefetch);
    let mut running = JoinSet::new();
    loop {
        tokio::select! {
            _ = stop.changed() => break,
            Some(_) = running.join_next(), if !running.is_empty() => {}
            incoming = inbox.recv() => {
                let Some(incoming) = incoming else { break };
                let me = me.clone();
                running.spawn(async move { me.handle(incoming).await });
            }
        }
    }
    drop(inbox);
    let _ = tokio::time::timeout(DRAIN_TIMEOUT, async {
        while running.join_next().await.is_some() {}
    })
    .await;
    tracing::info!(target: "herald::webhooks", "webhook deliverer stopped");
}

impl Deliverer {
    /// A delivery slot for `key`: at once when one is free; else, when
    /// few others wait for this endpoint, after waiting up to `busy_delay`
    /// here; else none (the task goes to the delay queue).
    async fn permit(&self, key: &str) -> Option<Slot> {
        let n = self.settings.endpoint_concurrency;
        let gate = {
            let mut limits = self.limits.lock().expect("limits lock");
            if limits.len() > 10_000 {
                // In use: waited for (the gate is held) or delivering (a
                // permit holds `slots`).
                limits.retain(|_, g| Arc::strong_count(g) > 1);
            }
            limits
                .entry(key.to_owned())
                .or_insert_with(|| Arc::new(Gate::new(n)))
                .clone()
        };
        if let Ok(p) = gate.slots.clone().try_acquire_owned() {
            return Some(Slot { _permit: p, gate });
        }
        let room = gate.room(n, self.settings.busy_delay);
        let waiting = Waiting(&gate.waiting);
        if gate.waiting.fetch_add(1, Ordering::Relaxed) >= room {
            return None;
        }
        let permit =
            tokio::time::timeout(self.settings.busy_delay, gate.slots.clone().acquire_owned())
                .await
                .ok()?
                .ok()?;
        drop(waiting);
        Some(Slot {
            _permit: permit,
            gate,
        })
    }

    async fn settle(&self, incoming: Incoming, ok: bool) {
        let r = if ok {
            incoming.ack().await
        } else {
            incoming.requeue().await
        };
        if let Err(e) = r {
            tracing::debug!(target: "herald::webhooks", error = %e, "settling a webhook task");
        }
    }

    async fn later(&self, task: &WebhookTask, delay_ms: u64) -> Result<(), String> {
        self.batched.later(task.clone(), delay_ms).await
    }

    async fn handle(&self, incoming: Incoming) {
        let task: WebhookTask = match serde_json::from_slice(&incoming.body) {
            Ok(t) => t,
            Err(e) => {
                tracing::error!(target: "herald::webhooks", error = %e,
                    "undecodable webhook task dropped");
                telemetry::webhook_attempt("malformed", None);
                self.settle(incoming, true).await;
                return;
            }
        };
        let WebhookTask::DeliverV1 {
            endpoint_id, url, ..
        } = &task;
        let key = endpoint_id
            .as_ref()
            .map_or_else(|| url.clone(), |e| e.as_str().to_owned());
        let Some(permit) = self.permit(&key).await else {
            telemetry::webhook_attempt("deferred", None);
            let ok = self
                .later(&task, self.settings.busy_delay.as_millis() as u64)
                .await
                .is_ok();
            self.settle(incoming, ok).await;
            return;
        };
        let ok = match self.deliver(&task, permit).await {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(target: "herald::webhooks", error = %e,
                    "webhook task will be retried");
                // Do not spin while a dependency is down.
                tokio::time::sleep(REQUEUE_PAUSE).await;
                // Back to the queue alone (the tasks packed with it may be
                // done); when even that fails, the whole delivery goes back.
                let queue = self.broker.topology().webhooks_queue();
                publish(&self.broker, std::slice::from_ref(&task), &queue, 1)
                    .await
                    .is_ok()
            }
        };
        self.settle(incoming, ok).await;
    }

    /// One attempt, holding one of the endpoint's delivery slots until its
    /// answer is in (not while the attempt is recorded). `Err`: nothing
    /// conclusive was recorded; redeliver the task.
    async fn deliver(&self, task: &WebhookTask, slot: Slot) -> Result<(), String> {
        let WebhookTask::DeliverV1 {
            webhook_id,
            tenant_id,
            message_id,
            cursor,
            endpoint_id,
            url,
            attempt,
            event,
        } = task;
        // The signing secret, and whether the endpoint is in a run of
        // failures (a success then ends it).
        let (secret, failing) = match endpoint_id {
            Some(id) => match self.batched.endpoint(id).await? {
                Some(ep) if ep.enabled => (
                    self.sealer
                        .open(&ep.secret_sealed)
                        .map_err(|e| e.to_string())?,
                    ep.failing_since.is_some(),
                ),
                // Deleted or disabled since: nothing to deliver.
                _ => {
                    telemetry::webhook_attempt("skipped", None);
                    return Ok(());
                }
            },
            None => (self.sealer.callback_secret(tenant_id), false),
        };
        let mut row = AttemptRow {
            tenant_id: tenant_id.clone(),
            event_type: MESSAGE_STATUS.into(),
            webhook_id: webhook_id.clone(),
            event_cursor: Some(*cursor),
            message_id: Some(message_id.clone()),
            endpoint_id: endpoint_id.as_ref().map(|e| e.as_str().to_owned()),
            url: url.clone(),
            attempt: *attempt as i32,
            outcome: String::new(),
            status_code: None,
            latency_ms: None,
            error: None,
            next_try_at: None,
            created_at: None,
        };
        if !self.settings.allow_private {
            if let Err(e) = target::check(url, false).await {
                row.outcome = "failed".into();
                row.error = Some(e.to_string());
                telemetry::webhook_attempt("refused", None);
                return self.batched.record(row).await;
            }
        }
        let Some(message) = self.batched.message(tenant_id, message_id).await? else {
            return Ok(());
        };
        let error = event
            .detail
            .get("error")
            .or_else(|| event.detail.get("error_code"))
            .cloned();
        let now = Utc::now();
        let body = json!({
            "type": MESSAGE_STATUS,
            "timestamp": now,
            "data": {
                "id": message_id,
                "cursor": cursor,
                "seq": event.seq,
                "status": event.status,
                "previous_status": event.previous_status,
                "final": event.is_final,
                "at": event.at,
                "channel": message.channel,
                "to": message.to,
                "from": message.from,
                "carrier": event.carrier.clone().or(message.carrier.clone()),
                "error": error,
                "detail": event.detail,
                "metadata": message.metadata,
                "message": crate::api::v1::messages::view(&message),
            }
        })
        .to_string();
        let timestamp = now.timestamp();
        let started = Instant::now();
        let answer = self
            .http
            .post(url)
            .header("content-type", "application/json")
            .header("webhook-id", webhook_id)
            .header("webhook-timestamp", timestamp.to_string())
            .header(
                "webhook-signature",
                sign::signature(&secret, webhook_id, timestamp, body.as_bytes()),
            )
            .body(body)
            .send()
            .await;
        let latency = started.elapsed();
        row.latency_ms = Some(latency.as_millis().min(i32::MAX as u128) as i32);
        let outcome = match answer {
            Ok(r) => {
                row.status_code = Some(i32::from(r.status().as_u16()));
                let retry_after = r
                    .headers()
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned);
                let outcome = classify(r.status().as_u16(), retry_after.as_deref());
                if outcome != Outcome::Succeeded {
                    row.error = Some(format!("HTTP {}", r.status().as_u16()));
                }
                outcome
            }
            Err(e) => {
                row.error = Some(if e.is_timeout() {
                    "timed out".to_owned()
                } else if e.is_connect() {
                    "connection failed".to_owned()
                } else {
                    "request failed".to_owned()
                });
                Outcome::Failed { retry_after: None }
            }
        };
        // Answered: the endpoint's slot is free for the next delivery.
        drop(slot);
        match outcome {
            Outcome::Succeeded => {
                row.outcome = "succeeded".into();
                telemetry::webhook_attempt("succeeded", Some(latency));
                self.batched.record(row).await?;
                if let (Some(id), true) = (endpoint_id, failing) {
                    if let Err(e) = self.store.endpoint_succeeded(id).await {
                        health_not_recorded(id, "succeeded", &e);
                    }
                }
            }
            Outcome::Gone => {
                row.outcome = "failed".into();
                telemetry::webhook_attempt("gone", Some(latency));
                self.batched.record(row).await?;
                if let Some(id) = endpoint_id {
                    self.disable(id, tenant_id, url, "gone").await;
                }
            }
            Outcome::Failed { retry_after } => {
                let next = match retry_after {
                    Some(wait) if self.settings.retry_delay_ms(*attempt).is_some() => {
                        Some(self.settings.at_least_ms(wait))
                    }
                    _ => self.settings.retry_delay_ms(*attempt),
                };
                row.outcome = if next.is_some() { "retrying" } else { "failed" }.into();
                row.next_try_at = next.map(|ms| now + chrono::Duration::milliseconds(ms as i64));
                telemetry::webhook_attempt(&row.outcome, Some(latency));
                self.batched.record(row).await?;
                if let Some(ms) = next {
                    let mut again = task.clone();
                    let WebhookTask::DeliverV1 { attempt, .. } = &mut again;
                    *attempt += 1;
                    self.later(&again, ms).await?;
                }
                if let Some(id) = endpoint_id {
                    match self
                        .store
                        .endpoint_failed(id, self.settings.disable_after)
                        .await
                    {
                        Ok(true) => self.notice(id, tenant_id, url, "failing").await,
                        Ok(false) => {}
                        Err(e) => health_not_recorded(id, "failed", &e),
                    }
                }
            }
        }
        Ok(())
    }

    /// Disable an endpoint for `why` and tell the tenant (once). Best effort.
    async fn disable(&self, id: &EndpointId, tenant: &str, url: &str, why: &str) {
        match self.store.disable_endpoint(id, why).await {
            Ok(true) => self.notice(id, tenant, url, why).await,
            Ok(false) => {}
            Err(e) => health_not_recorded(id, "disable", &e),
        }
    }

    /// Tell the tenant an endpoint was disabled: an `endpoint.disabled`
    /// entry in its attempts (`GET /v1/webhooks/endpoints/{id}`). Best effort.
    async fn notice(&self, id: &EndpointId, tenant: &str, url: &str, why: &str) {
        telemetry::webhook_endpoint_disabled(why);
        let notice = AttemptRow {
            tenant_id: tenant.to_owned(),
            event_type: ENDPOINT_DISABLED.into(),
            webhook_id: format!("whd_{id}"),
            event_cursor: None,
            message_id: None,
            endpoint_id: Some(id.as_str().to_owned()),
            url: url.to_owned(),
            attempt: 0,
            outcome: "notice".into(),
            status_code: None,
            latency_ms: None,
            error: Some(format!("endpoint disabled: {why}")),
            next_try_at: None,
            created_at: None,
        };
        if let Err(e) = self.batched.record(notice).await {
            health_not_recorded(id, "notice", &e);
        }
    }
}

/// An endpoint-health update that did not reach the database. Logged, not
/// retried: the attempt itself is recorded and its retry (if any) scheduled.
fn health_not_recorded(id: &EndpointId, what: &str, e: &dyn std::fmt::Display) {
    tracing::warn!(target: "herald::webhooks", endpoint = %id, what, error = %e,
        "endpoint health not recorded");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_busy_endpoint_may_hold_what_it_answers_in_the_busy_delay() {
        let gate = Gate::new(4);
        let second = Duration::from_secs(1);
        assert_eq!(gate.room(4, second), 16, "at least four per slot");
        {
            let mut a = gate.answers.lock().unwrap();
            a.since = a
                .since
                .checked_sub(Duration::from_secs(2))
                .expect("two seconds after boot");
            a.count = 999;
        }
        gate.answered(); // a window of about 1,000 answers in 2 s closes
        let room = gate.room(4, second);
        assert!((400..=500).contains(&room), "{room}");
        assert_eq!(gate.room(4, Duration::from_millis(10)), 16);
    }

    #[test]
    fn answers_are_classified() {
        assert_eq!(classify(204, None), Outcome::Succeeded);
        assert_eq!(classify(410, None), Outcome::Gone);
        assert_eq!(
            classify(429, Some("7")),
            Outcome::Failed {
                retry_after: Some(Duration::from_secs(7))
            }
        );
        assert_eq!(
            classify(500, Some("7")),
            Outcome::Failed { retry_after: None }
        );
    }
}
