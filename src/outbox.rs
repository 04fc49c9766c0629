//! The outbox relay: publishes committed messages to RabbitMQ.
//!
//! Each group-commit batch writes, with its messages, a row of the `outbox`
//! table naming them; the row is deleted once RabbitMQ has confirmed them
//! all. A message is published on one of two paths, both in this one task
//! so they never race inside a node:
//! - fast: right after its batch commits, the ingest collector hands it here
//!   and it is published in the relay's next round (at once when idle;
//!   under load rounds are paced by `herald_actors::pace`, so each carries
//!   many commits and several messages of a shard go to an AMQP message;
//!   confirms awaited); its outbox row is deleted with the others
//!   confirmed in the same 50 ms.
//!   The hand-off is bounded: when this relay is behind, what does not fit
//!   is left to the sweep, so a burst costs no memory;
//! - sweep: every `outbox.sweep_interval_ms`, outbox rows older than
//!   `outbox.grace_ms` (broker was down, or the process stopped between
//!   commit and publish) are claimed with `SKIP LOCKED`, their messages
//!   published, the rows deleted.
//!
//! While RabbitMQ is unreachable the fast path gives up at once (the broker
//! handle backs off) and the sweep keeps trying; when RabbitMQ is back, the
//! sweep publishes each waiting message once.

use std::time::Duration;

use herald_actors::broker::{shard_of, Broker, Outgoing, Topology};
use herald_actors::events;
use herald_actors::pace::{Pace, ROUND_PERIOD};
use tokio::sync::{mpsc, oneshot};

use crate::message::MessageRecord;
use crate::store::Store;
use crate::telemetry;

/// A committed group-commit batch: its outbox row and its new messages.
#[derive(Debug)]
pub struct Committed {
    pub batch: i64,
    pub messages: Vec<MessageRecord>,
}

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
        inbox: mpsc::Receiver<Committed>,
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
    mut inbox: mpsc::Receiver<Committed>,
    mut stop: oneshot::Receiver<()>,
) {
    let mut sweep = tokio::time::interval(config.sweep_interval);
    sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut mark = tokio::time::interval(MARK_EVERY);
    mark.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Outbox rows whose messages RabbitMQ confirmed, not yet deleted.
    let mut confirmed: Vec<i64> = Vec::new();
    let mut pace = Pace::new(ROUND_PERIOD);
    loop {
        tokio::select! {
            batch = inbox.recv() => match batch {
                Some(first) => {
                    // Under load, what commits meanwhile joins this round.
                    pace.round().await;
                    fast_path(&broker, &config, first, &mut inbox, &mut confirmed).await;
                    if confirmed.len() >= MARK_AT_ONCE {
                        mark_published(&store, &mut confirmed).await;
                    }
                }
                None => break,
            },
            _ = mark.tick(), if !confirmed.is_empty() => mark_published(&store, &mut confirmed).await,
            _ = sweep.tick() => {
                // Confirmed rows go first, so the sweep never claims them.
                mark_published(&store, &mut confirmed).await;
                sweep_once(&store, &broker, &config).await;
            }
            _ = &mut stop => {
                // Drain until the ingest collector closes the inbox.
                while let Some(batch) = inbox.recv().await {
                    fast_path(&broker, &config, batch, &mut inbox, &mut confirmed).await;
                }
                break;
            }
        }
    }
    mark_published(&store, &mut confirmed).await;
}

/// Confirmed outbox rows are deleted together, at most this long after
/// their confirm: one statement (and one commit) for every group-commit
/// batch confirmed meanwhile instead of one each. A row left behind by a
/// crash in between is published again by the sweep, and the idempotent
/// steps downstream absorb the repeat.
const MARK_EVERY: Duration = Duration::from_millis(50);

/// Or as soon as this many are waiting.
const MARK_AT_ONCE: usize = 256;

/// Delete the confirmed outbox rows, retrying a few times; what still fails
/// is left to the sweep.
async fn mark_published(store: &Store, confirmed: &mut Vec<i64>) {
    if confirmed.is_empty() {
        return;
    }
    let mut attempt = 0;
    while let Err(e) = store.mark_published(confirmed).await {
        attempt += 1;
        if attempt == MARK_ATTEMPTS {
            tracing::warn!(error = %e, "could not mark messages published");
            break;
        }
        tokio::time::sleep(Duration::from_millis(100 * attempt)).await;
    }
    confirmed.clear();
}

/// Tries at recording a confirmed publish before leaving it to the sweep.
const MARK_ATTEMPTS: u64 = 5;

/// Messages per publish round on the fast path.
const FAST_BATCH: usize = 2000;

async fn fast_path(
    broker: &Broker,
    config: &RelayConfig,
    first: Committed,
    inbox: &mut mpsc::Receiver<Committed>,
    confirmed: &mut Vec<i64>,
) {
    let mut batches = vec![first];
    let mut n = batches[0].messages.len();
    while n < FAST_BATCH {
        match inbox.try_recv() {
            Ok(more) => {
                n += more.messages.len();
                batches.push(more);
            }
            Err(_) => break,
        }
    }
    // What waited here for half the grace is left to the sweep, which takes
    // only rows older than the grace: the two paths never publish one
    // message twice.
    let cutoff = chrono::Utc::now()
        - chrono::Duration::from_std(config.grace / 2).unwrap_or_else(|_| chrono::Duration::zero());
    batches.retain(|b| b.messages.iter().all(|m| m.created_at > cutoff));
    if batches.is_empty() {
        return;
    }
    if !broker.is_available() {
        // Backing off after a failure: leave them to the sweep.
        return;
    }
    let messages: Vec<&MessageRecord> = batches.iter().flat_map(|b| &b.messages).collect();
    let outgoing = to_outgoing(broker.topology(), messages.iter().copied());
    match broker.publish_confirmed(&outgoing).await {
        Ok(()) => {
            confirmed.extend(batches.iter().map(|b| b.batch));
            telemetry::outbox_published("fast", messages.len());
        }
        Err(e) => telemetry::broker_publish_failed(messages.len(), &e),
    }
}

async fn sweep_once(store: &Store, broker: &Broker, config: &RelayConfig) {
    loop {
        let published = store
            .sweep_unpublished(config.grace, config.sweep_batch, async |messages| {
                let outgoing = to_outgoing(broker.topology(), messages.iter());
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

/// Messages of one shard packed into one AMQP message (each is still
/// acknowledged on its own by the ingress consumer).
const INGRESS_PACK: usize = 32;

fn to_outgoing<'a>(
    topology: &Topology,
    messages: impl Iterator<Item = &'a MessageRecord>,
) -> Vec<Outgoing> {
    let exchange = topology.ingress_exchange();
    let each = messages
        .map(|m| {
            let shard = shard_of(m.tenant_id.as_str(), topology.shards());
            events::to_ingress(exchange.clone(), Topology::ingress_key(shard), m.envelope())
        })
        .collect();
    events::pack_all(each, INGRESS_PACK)
}
