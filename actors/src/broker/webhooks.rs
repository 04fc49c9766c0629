//! Webhook delivery queues: `<p>.webhooks` (quorum), consumed by the
//! webhook dispatcher, and classic delay queues `<p>.webhooks.delay.<ms>`
//! whose messages wait `<ms>` (`x-message-ttl`) and are then dead-lettered
//! back to `<p>.webhooks` through the default exchange. Publish to either
//! with exchange `""` and the queue's name as routing key.

use lapin::options::{QueueDeclareOptions, QueueDeleteOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::Channel;

use super::{quorum_args, Broker, BrokerError, Topology};

impl Topology {
    /// The queue webhook delivery tasks are consumed from.
    pub fn webhooks_queue(&self) -> String {
        format!("{}.webhooks", self.prefix())
    }

    /// The delay queue that holds a task `delay_ms` before redelivery.
    pub fn webhooks_delay_queue(&self, delay_ms: u64) -> String {
        format!("{}.webhooks.delay.{delay_ms}", self.prefix())
    }

    /// Declare the webhooks queue and one delay queue per distinct delay on
    /// `channel` (idempotent).
    pub async fn declare_webhooks(
        &self,
        channel: &Channel,
        delays_ms: &[u64],
    ) -> Result<(), lapin::Error> {
        let main = self.webhooks_queue();
        let durable = QueueDeclareOptions {
            durable: true,
            ..Default::default()
        };
        channel
            .queue_declare(main.as_str().into(), durable, quorum_args())
            .await?;
        for delay in delays_ms {
            let mut args = FieldTable::default();
            args.insert(
                "x-message-ttl".into(),
                AMQPValue::LongLongInt(*delay as i64),
            );
            args.insert(
                "x-dead-letter-exchange".into(),
                AMQPValue::LongString("".into()),
            );
            args.insert(
                "x-dead-letter-routing-key".into(),
                AMQPValue::LongString(main.as_str().into()),
            );
            channel
                .queue_declare(
                    self.webhooks_delay_queue(*delay).as_str().into(),
                    durable,
                    args,
                )
                .await?;
        }
        Ok(())
    }
}

impl Broker {
    /// Declare the webhooks queue and one delay queue per distinct delay
    /// (idempotent); declared again on every reconnect.
    pub async fn declare_webhooks(&self, delays_ms: &[u64]) -> Result<(), BrokerError> {
        self.declared().webhooks = Some(delays_ms.to_vec());
        let connection = self.inner_connection().await?;
        let channel = connection.create_channel().await?;
        let result = self.topology().declare_webhooks(&channel, delays_ms).await;
        let _ = connection.close(200, "declared".into()).await;
        result.map_err(Into::into)
    }

    /// Delete the webhooks queue and these delay queues (tests, resets).
    pub async fn delete_webhooks(&self, delays_ms: &[u64]) -> Result<(), BrokerError> {
        self.declared().webhooks = None;
        let connection = self.inner_connection().await?;
        let channel = connection.create_channel().await?;
        let mut names = vec![self.topology().webhooks_queue()];
        names.extend(
            delays_ms
                .iter()
                .map(|d| self.topology().webhooks_delay_queue(*d)),
        );
        for name in names {
            channel
                .queue_delete(name.as_str().into(), QueueDeleteOptions::default())
                .await?;
        }
        let _ = connection.close(200, "deleted".into()).await;
        Ok(())
    }
}
