//! The RabbitMQ seam. `lapin` appears only here; the rest of Herald sees a
//! [`Broker`] handle that publishes typed batches with publisher confirms and
//! answers whether the broker is reachable.
//!
//! The connection is opened lazily and re-opened on demand: any failed
//! operation drops the connection, and the next operation reconnects (at most
//! once per [`RECONNECT_BACKOFF`], so a dead broker costs callers one fast
//! error rather than one timeout each). The topology is declared, idempotently,
//! on every new connection and consuming channel: the fixed exchanges and
//! queues, and every carrier's and the webhooks' queues declared through
//! this handle, so a queue lost under a running Herald (deleted, or a broker
//! reset) comes back at the next reconnect.
//!
//! Every publish is `mandatory`: a message that no queue would take comes
//! back from the broker, and its batch fails (and is published again later)
//! instead of being confirmed and dropped; the topology is then declared
//! again on the same connection.

mod consumer;
mod topology;
mod webhooks;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::join_all;
use lapin::options::{BasicGetOptions, BasicPublishOptions, ConfirmSelectOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};
use tokio::sync::Mutex;

pub use consumer::Incoming;
pub use topology::Topology;

/// Longest wait for a connection to close.
pub const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

/// Minimum time between two connection attempts after a failure.
pub const RECONNECT_BACKOFF: Duration = Duration::from_millis(1000);

/// Errors of the broker seam.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    #[error("broker unreachable: {0}")]
    Unreachable(String),
    #[error("broker is backing off after a failed connection attempt")]
    BackingOff,
    #[error("broker operation failed: {0}")]
    Operation(#[from] lapin::Error),
    #[error("broker refused the message (nack)")]
    Nacked,
    #[error("no queue takes messages sent to exchange {exchange:?} with key {routing_key:?}")]
    Unroutable {
        exchange: String,
        routing_key: String,
    },
    #[error("broker operation timed out")]
    Timeout,
}

/// Largest AMQP frame Herald asks for (RabbitMQ's default is 128 KiB).
/// lapin keeps 32 frames of buffer each way per connection: at 128 KiB that
/// is ~8 MiB a connection, at 32 KiB a quarter of it. Bodies are mostly far
/// smaller; a larger one (a packed batch of events) is split into frames.
pub const FRAME_MAX: u32 = 32_768;

/// `url` asking for [`FRAME_MAX`], unless it names a `frame_max` itself.
fn with_frame_max(url: &str) -> String {
    if url.contains("frame_max=") {
        return url.to_owned();
    }
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}frame_max={FRAME_MAX}")
}

/// How to reach RabbitMQ and how Herald's names are laid out in it.
#[derive(Debug, Clone)]
pub struct BrokerConfig {
    /// AMQP URL, e.g. `amqp://guest:guest@127.0.0.1:5672/%2f`.
    pub url: String,
    /// Prefix of every exchange and queue name (`herald` gives `herald.ingress`).
    pub prefix: String,
    /// Number of ingress shards (`herald.ingress.0` … `herald.ingress.<n-1>`).
    pub shards: u16,
    /// Timeout of one connection attempt.
    pub timeout: Duration,
    /// Longest wait for the publisher confirms of one batch. Past it the
    /// batch counts as failed and is published again later, so keep it well
    /// above the broker's worst confirm latency under load.
    pub confirm_timeout: Duration,
}

/// One message to publish: exchange-relative routing key and JSON body.
#[derive(Debug, Clone)]
pub struct Outgoing {
    pub exchange: String,
    pub routing_key: String,
    pub body: Vec<u8>,
    pub priority: u8,
}

struct Link {
    connection: Connection,
    publish: Channel,
}

struct Inner {
    config: BrokerConfig,
    topology: Topology,
    link: Mutex<Option<Link>>,
    /// The connection every subscription of this handle consumes on, one
    /// channel each (see `consumer`).
    consuming: Mutex<Option<Connection>>,
    /// Millis since `epoch` of the last failed connection attempt (0: none).
    last_failure_ms: AtomicU64,
    epoch: Instant,
    /// Queues declared through this handle beyond the fixed topology,
    /// declared again with it on every new connection.
    declared: std::sync::Mutex<Declared>,
}

/// The queues a handle declared on demand: each carrier's retry delays, and
/// the webhooks' delay queues (`None`: not declared).
#[derive(Debug, Default, Clone)]
struct Declared {
    carriers: BTreeMap<String, Vec<u64>>,
    webhooks: Option<Vec<u64>>,
}

/// A shared handle on the broker. Cheap to clone.
#[derive(Clone)]
pub struct Broker {
    inner: Arc<Inner>,
}

impl Broker {
    /// A handle; no connection is made until first use.
    pub fn new(mut config: BrokerConfig) -> Self {
        let topology = Topology::new(&config.prefix, config.shards);
        config.url = with_frame_max(&config.url);
        Self {
            inner: Arc::new(Inner {
                config,
                topology,
                link: Mutex::new(None),
                consuming: Mutex::new(None),
                last_failure_ms: AtomicU64::new(0),
                epoch: Instant::now(),
                declared: std::sync::Mutex::new(Declared::default()),
            }),
        }
    }

    pub fn topology(&self) -> &Topology {
        &self.inner.topology
    }

    /// Whether the broker answered the last time we tried (or we are past
    /// the back-off and may try again).
    pub fn is_available(&self) -> bool {
        let last = self.inner.last_failure_ms.load(Ordering::Relaxed);
        last == 0
            || self.since_epoch_ms().saturating_sub(last) >= RECONNECT_BACKOFF.as_millis() as u64
    }

    fn since_epoch_ms(&self) -> u64 {
        (self.inner.epoch.elapsed().as_millis() as u64).max(1)
    }

    /// Connect (or reuse the connection) and make sure the topology exists.
    pub async fn ensure_connected(&self) -> Result<(), BrokerError> {
        self.channel(true).await.map(|_| ())
    }

    /// The publishing channel, connecting first when needed. With `force`,
    /// ignore the back-off.
    async fn channel(&self, force: bool) -> Result<Channel, BrokerError> {
        let mut link = self.inner.link.lock().await;
        if let Some(l) = link.as_ref() {
            if l.connection.status().connected() && l.publish.status().connected() {
                return Ok(l.publish.clone());
            }
            *link = None;
        }
        if !force && !self.is_available() {
            return Err(BrokerError::BackingOff);
        }
        match tokio::time::timeout(self.inner.config.timeout, self.connect()).await {
            Ok(Ok(new)) => {
                let channel = new.publish.clone();
                *link = Some(new);
                self.inner.last_failure_ms.store(0, Ordering::Relaxed);
                tracing::info!(target: "herald::broker", "connected to RabbitMQ");
                Ok(channel)
            }
            Ok(Err(e)) => {
                self.note_failure();
                Err(BrokerError::Unreachable(e.to_string()))
            }
            Err(_) => {
                self.note_failure();
                Err(BrokerError::Unreachable(
                    "connection attempt timed out".into(),
                ))
            }
        }
    }

    fn note_failure(&self) {
        self.inner
            .last_failure_ms
            .store(self.since_epoch_ms(), Ordering::Relaxed);
    }

    async fn connect(&self) -> Result<Link, lapin::Error> {
        let connection =
            Connection::connect(&self.inner.config.url, ConnectionProperties::default()).await?;
        let setup = connection.create_channel().await?;
        self.declare_all(&setup).await?;
        let _ = setup.close(200, "topology declared".into()).await;
        let publish = connection.create_channel().await?;
        publish
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        Ok(Link {
            connection,
            publish,
        })
    }

    /// Drop the connection after a failure so the next call reconnects.
    async fn invalidate(&self) {
        let old = self.inner.link.lock().await.take();
        self.note_failure();
        if let Some(l) = old {
            // Never under the lock, never unbounded: the socket may be dead.
            tokio::spawn(async move {
                let _ = tokio::time::timeout(
                    CLOSE_TIMEOUT,
                    l.connection.close(320, "herald: reconnecting".into()),
                )
                .await;
            });
        }
    }

    /// Publish every message persistently and wait until the broker has
    /// confirmed all of them. `Ok` means every one is durably queued; on
    /// `Err` any subset may have been, so the caller keeps them for a retry
    /// (consumers are idempotent on message ids).
    pub async fn publish_confirmed(&self, batch: &[Outgoing]) -> Result<(), BrokerError> {
        if batch.is_empty() {
            return Ok(());
        }
        let channel = self.channel(false).await?;
        // The confirm timeout, not the connection attempt's: a broker that
        // is slow to confirm (busy CPU, disk) is alive, and dropping its
        // connection on every slow batch would only add reconnects to it.
        let result = tokio::time::timeout(
            self.inner.config.confirm_timeout,
            Self::publish_on(&channel, batch),
        )
        .await
        .unwrap_or(Err(BrokerError::Timeout));
        match &result {
            Ok(()) => {
                for run in batch.chunk_by(|a, b| a.exchange == b.exchange) {
                    crate::telemetry::published(&run[0].exchange, run.len() as u64);
                }
            }
            // The link is fine, a queue is gone: declare it again on this
            // connection, without the reconnect and back-off of a failure
            // that every other publisher would wait out.
            Err(BrokerError::Unroutable { .. }) => self.redeclare().await,
            Err(_) => self.invalidate().await,
        }
        result
    }

    /// Declare the whole topology again on the open connection; when that
    /// fails, drop the connection as after any failure.
    async fn redeclare(&self) {
        let channel = {
            let link = self.inner.link.lock().await;
            match link.as_ref() {
                Some(l) => {
                    tokio::time::timeout(self.inner.config.timeout, l.connection.create_channel())
                        .await
                }
                None => return,
            }
        };
        let declared = match channel {
            Ok(Ok(channel)) => {
                let declared =
                    tokio::time::timeout(self.inner.config.timeout, self.declare_all(&channel))
                        .await;
                let _ = channel.close(200, "topology declared".into()).await;
                matches!(declared, Ok(Ok(())))
            }
            _ => false,
        };
        if !declared {
            self.invalidate().await;
        }
    }

    /// The fixed topology and every queue declared on demand through this
    /// handle, on `channel`.
    async fn declare_all(&self, channel: &Channel) -> Result<(), lapin::Error> {
        let topology = &self.inner.topology;
        topology.declare(channel).await?;
        let declared = self.declared().clone();
        for (carrier, delays_ms) in &declared.carriers {
            topology
                .declare_carrier(channel, carrier, delays_ms)
                .await?;
        }
        if let Some(delays_ms) = &declared.webhooks {
            topology.declare_webhooks(channel, delays_ms).await?;
        }
        Ok(())
    }

    fn declared(&self) -> std::sync::MutexGuard<'_, Declared> {
        self.inner
            .declared
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    async fn publish_on(channel: &Channel, batch: &[Outgoing]) -> Result<(), BrokerError> {
        let mut confirms = Vec::with_capacity(batch.len());
        for m in batch {
            let properties = BasicProperties::default()
                .with_delivery_mode(2)
                .with_content_type("application/json".into())
                .with_priority(m.priority);
            let confirm = channel
                .basic_publish(
                    m.exchange.as_str().into(),
                    m.routing_key.as_str().into(),
                    BasicPublishOptions {
                        mandatory: true,
                        ..Default::default()
                    },
                    &m.body,
                    properties,
                )
                .await?;
            confirms.push(confirm);
        }
        for (m, confirmation) in batch.iter().zip(join_all(confirms).await) {
            let confirmation = confirmation?;
            if confirmation.is_nack() {
                return Err(BrokerError::Nacked);
            }
            if confirmation.take_message().is_some() {
                return Err(BrokerError::Unroutable {
                    exchange: m.exchange.clone(),
                    routing_key: m.routing_key.clone(),
                });
            }
        }
        Ok(())
    }

    /// Number of ready messages in a queue (passive declare).
    pub async fn queue_depth(&self, queue: &str) -> Result<u32, BrokerError> {
        self.channel(true).await?;
        // A channel of its own: a failed passive declare closes the channel
        // it ran on, which must not be the publishing one.
        let channel = {
            let link = self.inner.link.lock().await;
            let Some(l) = link.as_ref() else {
                return Err(BrokerError::Unreachable("not connected".into()));
            };
            tokio::time::timeout(self.inner.config.timeout, l.connection.create_channel())
                .await
                .map_err(|_| BrokerError::Timeout)??
        };
        let q = tokio::time::timeout(
            self.inner.config.timeout,
            channel.queue_declare(
                queue.into(),
                lapin::options::QueueDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
                FieldTable::default(),
            ),
        )
        .await
        .map_err(|_| BrokerError::Timeout)?;
        let _ = channel.close(200, "inspected".into()).await;
        Ok(q?.message_count())
    }

    /// Take (and acknowledge) every message currently in `queue`, returning
    /// the bodies. An operator and test tool, not a consumer for the flow.
    pub async fn drain(&self, queue: &str) -> Result<Vec<Vec<u8>>, BrokerError> {
        let connection = self.inner_connection().await?;
        let channel = connection.create_channel().await?;
        let mut out = Vec::new();
        while let Some(m) = channel
            .basic_get(queue.into(), BasicGetOptions { no_ack: true })
            .await?
        {
            out.push(m.delivery.data.clone());
        }
        let _ = connection.close(200, "drained".into()).await;
        Ok(out)
    }

    /// Delete every exchange and queue of this prefix (tests, and
    /// `herald` tooling that resets an environment).
    pub async fn teardown(&self) -> Result<(), BrokerError> {
        let connection = self.inner_connection().await?;
        let channel = connection.create_channel().await?;
        self.inner.topology.delete(&channel).await?;
        let _ = connection.close(200, "teardown".into()).await;
        Ok(())
    }

    /// Declare a carrier's queue and delay queues (idempotent).
    pub async fn declare_carrier(
        &self,
        carrier: &str,
        delays_ms: &[u64],
    ) -> Result<(), BrokerError> {
        self.declared()
            .carriers
            .insert(carrier.to_owned(), delays_ms.to_vec());
        let connection = self.inner_connection().await?;
        let channel = connection.create_channel().await?;
        let result = self
            .inner
            .topology
            .declare_carrier(&channel, carrier, delays_ms)
            .await;
        let _ = connection.close(200, "declared".into()).await;
        result.map_err(Into::into)
    }

    /// Delete carriers' queues and delay queues (tests, resets).
    pub async fn delete_carriers(&self, carriers: &[(&str, usize)]) -> Result<(), BrokerError> {
        for (carrier, _) in carriers {
            self.declared().carriers.remove(*carrier);
        }
        let connection = self.inner_connection().await?;
        let channel = connection.create_channel().await?;
        for (carrier, tiers) in carriers {
            self.inner
                .topology
                .delete_carrier(&channel, carrier, *tiers)
                .await?;
        }
        let _ = connection.close(200, "deleted".into()).await;
        Ok(())
    }

    async fn inner_connection(&self) -> Result<Connection, BrokerError> {
        tokio::time::timeout(
            self.inner.config.timeout,
            Connection::connect(&self.inner.config.url, ConnectionProperties::default()),
        )
        .await
        .map_err(|_| BrokerError::Unreachable("connection attempt timed out".into()))?
        .map_err(|e| BrokerError::Unreachable(e.to_string()))
    }

    /// Close the connection gracefully (shutdown).
    pub async fn close(&self) {
        let old = self.inner.link.lock().await.take();
        if let Some(l) = old {
            let _ = tokio::time::timeout(
                CLOSE_TIMEOUT,
                l.connection.close(200, "herald shutting down".into()),
            )
            .await;
        }
    }
}

/// Arguments of a quorum queue.
fn quorum_args() -> FieldTable {
    let mut args = FieldTable::default();
    args.insert(
        "x-queue-type".into(),
        AMQPValue::LongString("quorum".into()),
    );
    args
}

/// A stable shard for a tenant: FNV-1a of its id, modulo the shard count.
/// Stable across processes and releases (unlike `DefaultHasher`).
pub fn shard_of(tenant_id: &str, shards: u16) -> u16 {
    let mut hash: u64 = 0xcbf29ce484222325;
    for b in tenant_id.as_bytes() {
        hash ^= u64::from(*b);
        hash = hash.wrapping_mul(0x100000001b3);
    }
    (hash % u64::from(shards.max(1))) as u16
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_ask_for_the_frame_max_unless_they_name_one() {
        assert_eq!(
            with_frame_max("amqp://guest:guest@127.0.0.1:5672/%2f"),
            "amqp://guest:guest@127.0.0.1:5672/%2f?frame_max=32768"
        );
        assert_eq!(
            with_frame_max("amqp://h/%2f?heartbeat=10"),
            "amqp://h/%2f?heartbeat=10&frame_max=32768"
        );
        assert_eq!(
            with_frame_max("amqp://h/%2f?frame_max=8192"),
            "amqp://h/%2f?frame_max=8192"
        );
        assert!(
            "amqp://h/%2f?heartbeat=10&frame_max=32768"
                .parse::<lapin::uri::AMQPUri>()
                .is_ok(),
            "lapin reads it"
        );
    }

    #[test]
    fn shards_are_stable_and_in_range() {
        assert_eq!(shard_of("tnt_a", 16), shard_of("tnt_a", 16));
        for i in 0..1000 {
            assert!(shard_of(&format!("tnt_{i}"), 16) < 16);
        }
        // Spread: 1000 tenants touch every one of 16 shards.
        let used: std::collections::HashSet<u16> = (0..1000)
            .map(|i| shard_of(&format!("tnt_{i}"), 16))
            .collect();
        assert_eq!(used.len(), 16);
    }
}
