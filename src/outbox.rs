//! The outbox relay: publishes committed messages to RabbitMQ.
//!
//! The `messages` table is the outbox. A message is published on one of two
//! paths, both in this one task so they never race inside a node:
//! - fast: right after its batch commits, the ingest collector hands it here
//!   and it is published at once (confirms awaited), then marked published.
//!   The hand-off is bounded: when this relay is behind, what does not fit
//!   is left to the sweep, so a burst costs no memory;
//! - sweep: every `outbox.sweep_interval_ms`, rows still unpublished after
//!   `outbox.grace_ms` (broker was down, or the process stopped between
//!   commit and publish) are claimed with `SKIP LOCKED`, published, marked.
//!
//! While RabbitMQ is unreachable the fast path gives up at once (the broker
//! handle backs off) and the sweep keeps trying; when RabbitMQ is back, the
//! sweep publishes each waiting message once.

use std::time::Duration;

use herald_actors::broker::{shard_of, Broker, Outgoing, Topology};
use herald_actors::events;
use tokio::sync::{mpsc, oneshot};

use crate::message::MessageRecord;
use crate::store::Store;
use crate::telemetry;

/// Relay settings.
#[derive(Debug, Clone)]
pub struct RelayConfig {
    pub sweep_interval: Duration,
    pub grace: Duration,
    pub sweep_batch: i64,
}

/// Running relay; [`Relay::shutdown`] publishes what it holds, then stops.
pub struct Relay {
    stop: oneshot::Sender<()>,
    done: tokio::task::JoinHandle<()>,
}

impl Relay {
    pub fn start(
        store: Store,
        broker: Broker,
        config: RelayConfig,
        inbox: mpsc::Receiver<Vec<MessageRecord>>,
    ) -> Relay {
        let (stop, stop_rx) = oneshot::channel();
        let done = tokio::spawn(run(store, broker, config, inbox, stop_rx));
        Relay { stop, done }
    }

    /// Publish what was committed before shutdown, then stop. The inbox must
    /// be closed (the ingest collector stopped) for this to return promptly.
    pub async fn shutdown(self) {
        let _ = self.stop.send(());
        let _ = self.done.await;
    }
}

async fn run(
    store: Store,
    broker: Broker,
    config: RelayConfig,
    mut inbox: mpsc::Receiver<Vec<MessageRecord>>,
    mut stop: oneshot::Receiver<()>,
) {
    let mut sweep = tokio::time::interval(config.sweep_interval);
    sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            batch = inbox.recv() => match batch {
                Some(first) => fast_path(&store, &broker, &config, first, &mut inbox).await,
                None => break,
            },
            _ = sweep.tick() => sweep_once(&store, &broker, &config).await,
            _ = &mut stop => {
                // Drain until the ingest collector closes the inbox.
                while let Some(batch) = inbox.recv().await {
                    fast_path(&store, &broker, &config, batch, &mut inbox).await;
                }
                break;
            }
        }
    }
}

/// Tries at recording a confirmed publish before leaving it to the sweep.
const MARK_ATTEMPTS: u64 = 5;

/// Messages per publish round on the fast path.
const FAST_BATCH: usize = 2000;

async fn fast_path(
    store: &Store,
    broker: &Broker,
    config: &RelayConfig,
    first: Vec<MessageRecord>,
    inbox: &mut mpsc::Receiver<Vec<MessageRecord>>,
) {
    let mut messages = first;
    while messages.len() < FAST_BATCH {
        match inbox.try_recv() {
            Ok(more) => messages.extend(more),
            Err(_) => break,
        }
    }
    // What waited here for half the grace is left to the sweep, which takes
    // only rows older than the grace: the two paths never publish one
    // message twice.
    let cutoff = chrono::Utc::now()
        - chrono::Duration::from_std(config.grace / 2).unwrap_or_else(|_| chrono::Duration::zero());
    messages.retain(|m| m.created_at > cutoff);
    if messages.is_empty() {
        return;
    }
    if !broker.is_available() {
        // Backing off after a failure: leave them to the sweep.
        return;
    }
    let outgoing = to_outgoing(broker.topology(), &messages);
    match broker.publish_confirmed(&outgoing).await {
        Ok(()) => {
            let ids: Vec<&str> = messages.iter().map(|m| m.id.as_str()).collect();
            let mut attempt = 0;
            while let Err(e) = store.mark_published(&ids).await {
                attempt += 1;
                if attempt == MARK_ATTEMPTS {
                    // A later sweep publishes them again: a duplicate that
                    // consumers absorb (they are idempotent on message ids).
                    tracing::warn!(error = %e, "could not mark messages published");
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100 * attempt)).await;
            }
            telemetry::outbox_published("fast", messages.len());
        }
        Err(e) => telemetry::broker_publish_failed(messages.len(), &e),
    }
}

async fn sweep_once(store: &Store, broker: &Broker, config: &RelayConfig) {
    loop {
        let published = store
            .sweep_unpublished(config.grace, config.sweep_batch, async |messages| {
                let outgoing = to_outgoing(broker.topology(), messages);
                match broker.publish_confirmed(&outgoing).await {
                    Ok(()) => true,
                    Err(e) => {
                        telemetry::broker_publish_failed(messages.len(), &e);
                        false
                    }
                }
            })
            .await;
        match published {
            Ok(n) => {
                if n > 0 {
                    telemetry::outbox_published("sweep", n);
                    tracing::info!(messages = n, "outbox sweep published waiting messages");
                }
                if (n as i64) < config.sweep_batch {
                    return;
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "outbox sweep failed");
                return;
            }
        }
    }
}

fn to_outgoing(topology: &Topology, messages: &[MessageRecord]) -> Vec<Outgoing> {
    let exchange = topology.ingress_exchange();
    messages
        .iter()
        .map(|m| {
            let shard = shard_of(m.tenant_id.as_str(), topology.shards());
            events::to_ingress(exchange.clone(), Topology::ingress_key(shard), m.envelope())
        })
        .collect()
}
