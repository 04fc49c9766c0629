//! The dispatcher: event log -> delivery tasks on `<prefix>.webhooks`.
//!
//! Woken by the projector's broadcast (or every `poll_interval`), it runs
//! [`Store::dispatch`] until nothing is left: each round publishes the tasks
//! of one batch with publisher confirms inside the transaction that then
//! advances `webhook_cursor`. See the module docs of `webhooks`.

use std::collections::HashMap;
use std::sync::Arc;

use herald_actors::broker::{Broker, Outgoing};
use tokio::sync::broadcast::error::{RecvError, TryRecvError};
use tokio::sync::{broadcast, watch};

use super::{webhook_id, EndpointId, EventSnapshot, Settings, WebhookTask};
use crate::projector::StatusChange;
use crate::store::webhooks::{DispatchEvent, EndpointTarget};
use crate::store::Store;
use crate::telemetry;

/// One task per target of each event: its callback URL, else its tenant's
/// enabled endpoints that want its status.
pub fn tasks(events: &[DispatchEvent], endpoints: &[EndpointTarget]) -> Vec<WebhookTask> {
    let mut by_tenant: HashMap<&str, Vec<&EndpointTarget>> = HashMap::new();
    for ep in endpoints {
        by_tenant.entry(ep.tenant_id.as_str()).or_default().push(ep);
    }
    let mut out = Vec::new();
    for e in events {
        let task = |endpoint_id: Option<EndpointId>, url: String| WebhookTask::DeliverV1 {
            webhook_id: webhook_id(e.cursor),
            tenant_id: e.tenant_id.clone(),
            message_id: e.message_id.clone(),
            cursor: e.cursor,
            endpoint_id,
            url,
            attempt: 1,
            event: snapshot(e),
        };
        match &e.callback_url {
            Some(url) => out.push(task(None, url.clone())),
            None => out.extend(
                by_tenant
                    .get(e.tenant_id.as_str())
                    .into_iter()
                    .flatten()
                    .filter(|ep| ep.wants(&e.status))
                    .map(|ep| task(Some(ep.id.clone()), ep.url.clone())),
            ),
        }
    }
    out
}

/// The part of a log entry a delivery carries.
pub fn snapshot(e: &DispatchEvent) -> EventSnapshot {
    EventSnapshot {
        seq: e.seq,
        status: e.status.clone(),
        previous_status: e.previous_status.clone(),
        is_final: e.is_final,
        carrier: e.carrier.clone(),
        detail: e.detail.clone(),
        at: e.at,
    }
}

/// Tasks packed into one AMQP message (the deliverer settles each on its
/// own; see `Broker::subscribe`): as many as one endpoint takes in flight
/// and waiting in memory (three times `endpoint_concurrency`), so a pack
/// for one busy endpoint parks none in the delay queue, within these
/// bounds. RabbitMQ's cost is per AMQP message; a crash redelivers a pack
/// whole, and receivers see the repeats under the same `webhook-id`.
pub fn pack_size(endpoint_concurrency: usize) -> usize {
    (endpoint_concurrency * 3).clamp(8, 64)
}

/// Publish tasks to `queue` (default exchange), `pack` to an AMQP message,
/// confirmed.
pub async fn publish(
    broker: &Broker,
    tasks: &[WebhookTask],
    queue: &str,
    pack: usize,
) -> Result<(), String> {
    let each: Vec<Outgoing> = tasks
        .iter()
        .map(|t| Outgoing {
            exchange: String::new(),
            routing_key: queue.to_owned(),
            body: serde_json::to_vec(t).expect("tasks serialize"),
            priority: 0,
        })
        .collect();
    let batch = herald_actors::events::pack_all(each, pack);
    for chunk in batch.chunks(500) {
        broker
            .publish_confirmed(chunk)
            .await
            .map_err(|e| e.to_string())?;
    }
    Ok(())
}

pub async fn run(
    store: Store,
    broker: Broker,
    settings: Arc<Settings>,
    mut changes: broadcast::Receiver<Arc<StatusChange>>,
    mut stop: watch::Receiver<bool>,
) {
    let queue = broker.topology().webhooks_queue();
    let pack = pack_size(settings.endpoint_concurrency);
    loop {
        loop {
            let result = store
                .dispatch(settings.batch, |events, endpoints| {
                    let tasks = tasks(&events, &endpoints);
                    let broker = broker.clone();
                    let queue = queue.clone();
                    async move {
                        publish(&broker, &tasks, &queue, pack).await?;
                        telemetry::webhook_tasks_published(tasks.len());
                        Ok(())
                    }
                })
                .await;
            match result {
                Ok(n) if n as i64 >= settings.batch => continue,
                Ok(_) => break,
                Err(e) => {
                    tracing::warn!(target: "herald::webhooks", error = %e,
                        "webhook dispatch failed; retrying");
                    break;
                }
            }
        }
        tokio::select! {
            _ = stop.changed() => break,
            r = changes.recv() => match r {
                // One round of dispatch reads every change committed so
                // far: wake once per burst, not once per change.
                Ok(_) | Err(RecvError::Lagged(_)) => skip_pending(&mut changes),
                Err(RecvError::Closed) => {
                    // The projector stopped: keep polling the log.
                    tokio::select! {
                        _ = stop.changed() => break,
                        _ = tokio::time::sleep(settings.poll_interval) => {}
                    }
                }
            },
            _ = tokio::time::sleep(settings.poll_interval) => {}
        }
    }
    tracing::info!(target: "herald::webhooks", "webhook dispatcher stopped");
}

/// Drop the changes already waiting (the next round reads them from the log).
fn skip_pending<T: Clone>(changes: &mut broadcast::Receiver<T>) {
    loop {
        match changes.try_recv() {
            Ok(_) | Err(TryRecvError::Lagged(_)) => {}
            Err(TryRecvError::Empty | TryRecvError::Closed) => return,
        }
    }
}
