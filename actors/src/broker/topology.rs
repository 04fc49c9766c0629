//! Herald's RabbitMQ topology, declared idempotently on every connection.
//!
//! | exchange | type | routing key | queues |
//! |---|---|---|---|
//! | `<p>.ingress` | direct | `shard.<n>` | `<p>.ingress.<n>` (quorum) |
//! | `<p>.carrier` | direct | `<connection id>` | `<p>.carrier.<id>` (declared by carrier actors) |
//! | `<p>.retry` | direct | `<delay tier>` | `<p>.retry.<tier>` (declared with the retry policy) |
//! | `<p>.events` | direct | `status` | `<p>.events` (quorum) |
//! | `<p>.dead` | fanout | — | `<p>.dead` (quorum) |

use lapin::options::{
    ExchangeDeclareOptions, ExchangeDeleteOptions, QueueBindOptions, QueueDeclareOptions,
    QueueDeleteOptions,
};
use lapin::types::FieldTable;
use lapin::{Channel, ExchangeKind};

use super::quorum_args;

/// Names of Herald's exchanges and queues under one prefix.
#[derive(Debug, Clone)]
pub struct Topology {
    prefix: String,
    shards: u16,
}

impl Topology {
    pub fn new(prefix: &str, shards: u16) -> Self {
        Self {
            prefix: prefix.to_owned(),
            shards: shards.max(1),
        }
    }

    /// The prefix of every name.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    pub fn shards(&self) -> u16 {
        self.shards
    }

    pub fn ingress_exchange(&self) -> String {
        format!("{}.ingress", self.prefix)
    }

    pub fn ingress_queue(&self, shard: u16) -> String {
        format!("{}.ingress.{shard}", self.prefix)
    }

    /// Where a shard's tenants over their share wait (see `tenant`).
    pub fn overflow_queue(&self, shard: u16) -> String {
        format!("{}.ingress.{shard}.overflow", self.prefix)
    }

    /// Delay tiers for scheduled messages, longest last.
    pub const DELAY_TIERS_MS: [u64; 6] = [500, 5_000, 60_000, 600_000, 3_600_000, 21_600_000];

    /// Exchange (fanout) and queue of delay tier `i`: a message waits the
    /// tier's time, then is dead-lettered to the ingress exchange under the
    /// routing key it was published with (its shard).
    pub fn delay_exchange(&self, tier: usize) -> String {
        format!("{}.delay.{tier}", self.prefix)
    }

    /// The longest delay tier not longer than `remaining_ms`, if any.
    pub fn delay_tier(remaining_ms: u64) -> Option<usize> {
        Self::DELAY_TIERS_MS
            .iter()
            .rposition(|t| *t <= remaining_ms)
    }

    pub fn ingress_key(shard: u16) -> String {
        format!("shard.{shard}")
    }

    pub fn carrier_exchange(&self) -> String {
        format!("{}.carrier", self.prefix)
    }

    pub fn retry_exchange(&self) -> String {
        format!("{}.retry", self.prefix)
    }

    pub fn events_exchange(&self) -> String {
        format!("{}.events", self.prefix)
    }

    pub fn events_queue(&self) -> String {
        format!("{}.events", self.prefix)
    }

    pub fn dead_exchange(&self) -> String {
        format!("{}.dead", self.prefix)
    }

    pub fn dead_queue(&self) -> String {
        format!("{}.dead", self.prefix)
    }

    fn exchanges(&self) -> Vec<(String, ExchangeKind)> {
        vec![
            (self.ingress_exchange(), ExchangeKind::Direct),
            (self.carrier_exchange(), ExchangeKind::Direct),
            (self.retry_exchange(), ExchangeKind::Direct),
            (self.events_exchange(), ExchangeKind::Direct),
            (self.dead_exchange(), ExchangeKind::Fanout),
        ]
    }

    /// Queues with the exchange and key they are bound by.
    fn queues(&self) -> Vec<(String, String, String)> {
        let mut queues: Vec<_> = (0..self.shards)
            .map(|n| {
                (
                    self.ingress_queue(n),
                    self.ingress_exchange(),
                    Self::ingress_key(n),
                )
            })
            .collect();
        for n in 0..self.shards {
            // Bound to the dead-letter exchange under a key nothing uses:
            // reached only by name, through the default exchange.
            queues.push((
                self.overflow_queue(n),
                self.ingress_exchange(),
                format!("overflow.{n}"),
            ));
        }
        queues.push((self.events_queue(), self.events_exchange(), "status".into()));
        queues.push((self.dead_queue(), self.dead_exchange(), String::new()));
        queues
    }

    /// Declare every exchange, queue and binding; harmless when they exist.
    pub async fn declare(&self, channel: &Channel) -> Result<(), lapin::Error> {
        self.declare_delays(channel).await?;
        for (name, kind) in self.exchanges() {
            channel
                .exchange_declare(
                    name.as_str().into(),
                    kind,
                    ExchangeDeclareOptions {
                        durable: true,
                        ..Default::default()
                    },
                    FieldTable::default(),
                )
                .await?;
        }
        for (queue, exchange, key) in self.queues() {
            channel
                .queue_declare(
                    queue.as_str().into(),
                    QueueDeclareOptions {
                        durable: true,
                        ..Default::default()
                    },
                    quorum_args(),
                )
                .await?;
            channel
                .queue_bind(
                    queue.as_str().into(),
                    exchange.as_str().into(),
                    key.as_str().into(),
                    QueueBindOptions::default(),
                    FieldTable::default(),
                )
                .await?;
        }
        Ok(())
    }

    /// Declare the delay tiers for scheduled messages.
    pub async fn declare_delays(&self, channel: &Channel) -> Result<(), lapin::Error> {
        for (tier, ttl) in Self::DELAY_TIERS_MS.iter().enumerate() {
            let name = self.delay_exchange(tier);
            channel
                .exchange_declare(
                    name.as_str().into(),
                    ExchangeKind::Fanout,
                    ExchangeDeclareOptions {
                        durable: true,
                        ..Default::default()
                    },
                    FieldTable::default(),
                )
                .await?;
            let mut args = FieldTable::default();
            args.insert(
                "x-message-ttl".into(),
                lapin::types::AMQPValue::LongLongInt(*ttl as i64),
            );
            args.insert(
                "x-dead-letter-exchange".into(),
                lapin::types::AMQPValue::LongString(self.ingress_exchange().as_str().into()),
            );
            channel
                .queue_declare(
                    name.as_str().into(),
                    QueueDeclareOptions {
                        durable: true,
                        ..Default::default()
                    },
                    args,
                )
                .await?;
            channel
                .queue_bind(
                    name.as_str().into(),
                    name.as_str().into(),
                    "".into(),
                    QueueBindOptions::default(),
                    FieldTable::default(),
                )
                .await?;
        }
        Ok(())
    }

    /// Delete everything [`Topology::declare`] made.
    pub async fn delete(&self, channel: &Channel) -> Result<(), lapin::Error> {
        for (queue, _, _) in self.queues() {
            channel
                .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
                .await?;
        }
        for (name, _) in self.exchanges() {
            channel
                .exchange_delete(name.as_str().into(), ExchangeDeleteOptions::default())
                .await?;
        }
        for tier in 0..Self::DELAY_TIERS_MS.len() {
            let name = self.delay_exchange(tier);
            channel
                .queue_delete(name.as_str().into(), QueueDeleteOptions::default())
                .await?;
            channel
                .exchange_delete(name.as_str().into(), ExchangeDeleteOptions::default())
                .await?;
        }
        Ok(())
    }
}

impl Topology {
    pub fn carrier_queue(&self, carrier: &str) -> String {
        format!("{}.carrier.{carrier}", self.prefix)
    }

    pub fn retry_queue(&self, carrier: &str, tier: usize) -> String {
        format!("{}.retry.{carrier}.{tier}", self.prefix)
    }

    /// Routing key on the retry exchange for a carrier's delay tier.
    pub fn retry_key(carrier: &str, tier: usize) -> String {
        format!("{carrier}.{tier}")
    }

    /// Declare a carrier's queue (quorum, bound by its id) and one delay
    /// queue per retry tier: a message published there waits its tier's
    /// delay (`x-message-ttl`), then is dead-lettered back to the carrier's
    /// queue.
    pub async fn declare_carrier(
        &self,
        channel: &Channel,
        carrier: &str,
        delays_ms: &[u64],
    ) -> Result<(), lapin::Error> {
        let queue = self.carrier_queue(carrier);
        channel
            .queue_declare(
                queue.as_str().into(),
                QueueDeclareOptions {
                    durable: true,
                    ..Default::default()
                },
                quorum_args(),
            )
            .await?;
        channel
            .queue_bind(
                queue.as_str().into(),
                self.carrier_exchange().as_str().into(),
                carrier.into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await?;
        for (tier, delay) in delays_ms.iter().enumerate() {
            let retry = self.retry_queue(carrier, tier);
            let mut args = FieldTable::default();
            args.insert(
                "x-message-ttl".into(),
                lapin::types::AMQPValue::LongLongInt(*delay as i64),
            );
            args.insert(
                "x-dead-letter-exchange".into(),
                lapin::types::AMQPValue::LongString(self.carrier_exchange().as_str().into()),
            );
            args.insert(
                "x-dead-letter-routing-key".into(),
                lapin::types::AMQPValue::LongString(carrier.into()),
            );
            channel
                .queue_declare(
                    retry.as_str().into(),
                    QueueDeclareOptions {
                        durable: true,
                        ..Default::default()
                    },
                    args,
                )
                .await?;
            channel
                .queue_bind(
                    retry.as_str().into(),
                    self.retry_exchange().as_str().into(),
                    Self::retry_key(carrier, tier).as_str().into(),
                    QueueBindOptions::default(),
                    FieldTable::default(),
                )
                .await?;
        }
        Ok(())
    }

    /// Delete a carrier's queue and its delay queues.
    pub async fn delete_carrier(
        &self,
        channel: &Channel,
        carrier: &str,
        tiers: usize,
    ) -> Result<(), lapin::Error> {
        channel
            .queue_delete(
                self.carrier_queue(carrier).as_str().into(),
                QueueDeleteOptions::default(),
            )
            .await?;
        for tier in 0..tiers {
            channel
                .queue_delete(
                    self.retry_queue(carrier, tier).as_str().into(),
                    QueueDeleteOptions::default(),
                )
                .await?;
        }
        Ok(())
    }
}
